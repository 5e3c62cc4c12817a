//! MQTT 5 rules the broker keeps and AWS's limits: client ids of at most 128 bytes, no retained
//! messages (announced as Retain Available 0), sessions that end with the connection (Session
//! Expiry 0 in CONNACK).

mod common;

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
