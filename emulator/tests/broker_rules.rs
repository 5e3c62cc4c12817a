//! MQTT 5 rules the broker keeps and AWS's limits: client ids of at most 128 bytes, no retained
//! messages (announced as Retain Available 0), sessions that end with the connection (Session
//! Expiry 0 in CONNACK).

use fleetprov_testkit::emulator_clients as common;

use common::*;
use rumqttc::v5::mqttbytes::v5 as p5;
use rumqttc::v5::mqttbytes::QoS as QoS5;

/// An MQTT 3.1.1 CONNECT (clean session, keep-alive 30).
fn connect_v4(client_id: &str) -> Vec<u8> {
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 30];
    body.extend_from_slice(&(client_id.len() as u16).to_be_bytes());
    body.extend_from_slice(client_id.as_bytes());
    let mut packet = vec![0x10];
    let mut len = body.len();
    loop {
        let byte = (len % 128) as u8;
        len /= 128;
        packet.push(if len > 0 { byte | 0x80 } else { byte });
        if len == 0 {
            break;
        }
    }
    packet.extend_from_slice(&body);
    packet
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_ids_longer_than_128_bytes_are_refused() {
    let env = Env::start().await;
    let ok = format!("test-{}", "a".repeat(123));
    let long = format!("test-{}", "a".repeat(124));
    assert_eq!((ok.len(), long.len()), (128, 129));

    let mut raw = Raw::connect(env.port(), env.tls(&env.claim()))
        .await
        .unwrap();
    raw.send(&connect_v5(&ok, 30)).await;
    match raw.read_v5().await {
        Some(p5::Packet::ConnAck(ack)) => assert_eq!(ack.code, p5::ConnectReturnCode::Success),
        other => panic!("expected CONNACK, got {other:?}"),
    }
    for id in [long, format!("test-{}", "b".repeat(1019))] {
        let mut raw = Raw::connect(env.port(), env.tls(&env.claim()))
            .await
            .unwrap();
        raw.send(&connect_v5(&id, 30)).await;
        match raw.read_v5().await {
            Some(p5::Packet::ConnAck(ack)) => {
                assert_eq!(ack.code, p5::ConnectReturnCode::ClientIdentifierNotValid)
            }
            other => panic!("expected CONNACK, got {other:?}"),
        }
        assert!(raw.read_v5().await.is_none());
        // MQTT 3.1.1: CONNACK 2, identifier rejected.
        let mut raw = Raw::connect(env.port(), env.tls(&env.claim()))
            .await
            .unwrap();
        raw.send(&connect_v4(&id)).await;
        assert_eq!(raw.drain().await, vec![0x20, 2, 0, 2]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connack_announces_no_retain_and_no_session_kept() {
    let env = Env::start().await;
    let mut raw = Raw::connect(env.port(), env.tls(&env.claim()))
        .await
        .unwrap();
    raw.send(&connect_v5("test-props", 30)).await;
    let Some(p5::Packet::ConnAck(ack)) = raw.read_v5().await else {
        panic!("no CONNACK")
    };
    let props = ack.properties.expect("CONNACK properties");
    assert_eq!(props.retain_available, Some(0));
    assert_eq!(props.session_expiry_interval, Some(0));
    assert!(!ack.session_present);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retained_publish_ends_the_connection() {
    let env = Env::start().await;
    // The seed template's policy allows every topic, so only the retain flag is refused.
    let (device, _) = provision(&env, "31").await;
    let mut c = V5::connect(env.port(), env.tls(&device), "ThingPrefix_31").await;
    assert_eq!(
        c.publish("devices/31/plain", "x").await.reason,
        p5::PubAckReason::Success
    );
    c.client
        .publish("devices/31/kept", QoS5::AtLeastOnce, true, "x")
        .await
        .unwrap();
    c.expect_disconnect(p5::DisconnectReasonCode::RetainNotSupported)
        .await;

    let mut c = V4::connect(env.port(), env.tls(&device), "ThingPrefix_31").await;
    c.client
        .publish("devices/31/kept", rumqttc::QoS::AtLeastOnce, true, "x")
        .await
        .unwrap();
    loop {
        match c.next().await {
            Ok(rumqttc::Packet::PubAck(_)) => panic!("a retained publish was acknowledged"),
            Ok(_) => continue,
            Err(_) => break,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_properties_are_relayed_to_mqtt5_subscribers() {
    let env = Env::start().await;
    let (device, _) = provision(&env, "41").await;
    let mut sub = V5::connect(env.port(), env.tls(&device), "ThingPrefix_41-sub").await;
    assert_eq!(
        sub.subscribe(&["rr/#"]).await,
        vec![p5::SubscribeReasonCode::Success(QoS5::AtLeastOnce)]
    );
    let mut publisher = V5::connect(env.port(), env.tls(&device), "ThingPrefix_41-pub").await;
    let sent = p5::PublishProperties {
        payload_format_indicator: Some(1),
        message_expiry_interval: Some(300),
        response_topic: Some("rr/replies".into()),
        correlation_data: Some(bytes::Bytes::from_static(b"\x00\x01req-7")),
        user_properties: vec![
            ("trace".into(), "abc".into()),
            ("trace".into(), "def".into()),
        ],
        content_type: Some("application/json".into()),
        ..p5::PublishProperties::default()
    };
    publisher
        .client
        .publish_with_properties("rr/requests", QoS5::AtLeastOnce, false, "{}", sent.clone())
        .await
        .unwrap();
    // Drive the publisher until its PUBACK: by then the message is queued for the subscriber.
    loop {
        if let p5::Packet::PubAck(ack) = publisher.next().await.unwrap() {
            assert_eq!(ack.reason, p5::PubAckReason::Success);
            break;
        }
    }
    let got = loop {
        if let p5::Packet::Publish(p) = sub.next().await.unwrap() {
            break p;
        }
    };
    assert_eq!(&got.topic[..], b"rr/requests");
    assert_eq!(got.properties, Some(sent));
}

/// A raw MQTT 5 CONNECT announcing `receive_max`.
fn connect_v5_receive_max(client_id: &str, receive_max: u16) -> Vec<u8> {
    let mut props = p5::ConnectProperties::new();
    props.receive_maximum = Some(receive_max);
    let connect = p5::Connect {
        keep_alive: 30,
        client_id: client_id.to_owned(),
        clean_start: true,
        properties: Some(props),
    };
    let mut out = bytes::BytesMut::new();
    p5::Packet::Connect(connect, None, None)
        .write(&mut out, None)
        .unwrap();
    out.to_vec()
}

fn puback_v5(pkid: u16) -> Vec<u8> {
    let mut out = bytes::BytesMut::new();
    p5::Packet::PubAck(p5::PubAck::new(pkid, None))
        .write(&mut out, None)
        .unwrap();
    out.to_vec()
}

/// The next PUBLISH (its packet id and payload); fails on anything else but a PINGRESP.
async fn next_publish(raw: &mut Raw) -> (u16, Vec<u8>) {
    match raw.read_v5().await {
        Some(p5::Packet::Publish(p)) => (p.pkid, p.payload.to_vec()),
        other => panic!("expected PUBLISH, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_respect_the_receivers_receive_maximum() {
    let env = Env::start().await;
    let (device, _) = provision(&env, "51").await;
    let mut raw = Raw::connect(env.port(), env.tls(&device)).await.unwrap();
    raw.send(&connect_v5_receive_max("ThingPrefix_51-slow", 2))
        .await;
    assert!(matches!(raw.read_v5().await, Some(p5::Packet::ConnAck(_))));
    raw.send(&subscribe_v5("rm/#", 1)).await;
    assert!(matches!(raw.read_v5().await, Some(p5::Packet::SubAck(_))));

    let mut publisher = V5::connect(env.port(), env.tls(&device), "ThingPrefix_51-pub").await;
    for i in 1..=6 {
        let ack = publisher.publish("rm/x", i.to_string()).await;
        assert_eq!(ack.reason, p5::PubAckReason::Success);
    }
    // All six are queued for the receiver; only two may be unacknowledged at once.
    let first = next_publish(&mut raw).await;
    let second = next_publish(&mut raw).await;
    assert_eq!(
        (first.1.as_slice(), second.1.as_slice()),
        (&b"1"[..], &b"2"[..])
    );
    for _ in 0..3 {
        raw.send(&[0xC0, 0]).await;
        match raw.read_v5().await {
            Some(p5::Packet::PingResp(_)) => {}
            other => panic!("a third delivery before any PUBACK: {other:?}"),
        }
    }
    // Each PUBACK lets exactly one more through, in order.
    raw.send(&puback_v5(first.0)).await;
    let third = next_publish(&mut raw).await;
    assert_eq!(third.1, b"3");
    assert_ne!(
        third.0, second.0,
        "packet id of an unacknowledged delivery reused"
    );
    raw.send(&[0xC0, 0]).await;
    assert!(matches!(raw.read_v5().await, Some(p5::Packet::PingResp(_))));
    for (pkid, want) in [(second.0, b"4"), (third.0, b"5")] {
        raw.send(&puback_v5(pkid)).await;
        assert_eq!(next_publish(&mut raw).await.1, want);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_subscription_members_take_turns() {
    let env = Env::start().await;
    let (device, _) = provision(&env, "61").await;
    let mut a = V5::connect(env.port(), env.tls(&device), "ThingPrefix_61-a").await;
    let mut b = V5::connect(env.port(), env.tls(&device), "ThingPrefix_61-b").await;
    let mut plain = V5::connect(env.port(), env.tls(&device), "ThingPrefix_61-plain").await;
    for c in [&mut a, &mut b] {
        assert_eq!(
            c.subscribe(&["$share/workers/jobs/#"]).await,
            vec![p5::SubscribeReasonCode::Success(QoS5::AtLeastOnce)]
        );
    }
    assert_eq!(
        plain.subscribe(&["jobs/#"]).await,
        vec![p5::SubscribeReasonCode::Success(QoS5::AtLeastOnce)]
    );
    let mut publisher = V5::connect(env.port(), env.tls(&device), "ThingPrefix_61-pub").await;
    for i in 1..=4 {
        let ack = publisher.publish(&format!("jobs/{i}"), "x").await;
        assert_eq!(ack.reason, p5::PubAckReason::Success);
    }
    // The group gets each message once, its two members alternating; an ordinary subscriber
    // gets them all.
    let mut got = Vec::new();
    for c in [&mut a, &mut b] {
        for _ in 0..2 {
            got.push(c.recv().await.topic);
        }
    }
    got.sort();
    assert_eq!(got, ["jobs/1", "jobs/2", "jobs/3", "jobs/4"]);
    for i in 1..=4 {
        assert_eq!(plain.recv().await.topic, format!("jobs/{i}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_subscription_needs_subscribe_on_its_share_filter() {
    // The claim policy names only the provisioning topics: a shared subscription to a reply
    // topic is a different topic filter, and refused.
    let env = Env::start().await;
    let mut c = env.claim_v5("test-share").await;
    let shared = format!("$share/g/{CREATE}/accepted");
    assert_eq!(
        c.subscribe(&[&shared]).await,
        vec![p5::SubscribeReasonCode::NotAuthorized]
    );
    // A malformed share filter is invalid before any policy is asked.
    let mut raw = Raw::connected_v5(env.port(), env.tls(&env.claim()), "test-share-raw", 30).await;
    for (i, bad) in ["$share//jobs", "$share/g+/jobs", "$share/g"]
        .into_iter()
        .enumerate()
    {
        raw.send(&subscribe_v5(bad, i as u16 + 1)).await;
        match raw.read_v5().await {
            Some(p5::Packet::SubAck(ack)) => assert_eq!(
                ack.return_codes,
                vec![p5::SubscribeReasonCode::TopicFilterInvalid],
                "{bad}"
            ),
            other => panic!("{bad}: expected SUBACK, got {other:?}"),
        }
    }
}
