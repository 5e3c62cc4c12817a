//! The endpoint over real mutual TLS: provisioning flows, AWS's delivery rules, the claim policy,
//! identity checks, protocol edge cases, misbehaving connections, fault injection, and shutdown.

use fleetprov_testkit::emulator_clients as common;

use std::time::Duration;

use common::*;
use fleetprov_emulator::{ca::Ca, Emulator, EmulatorConfig, Fault};
use rumqttc::v5::mqttbytes::v5 as p5;
use rumqttc::v5::mqttbytes::QoS as QoS5;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use sha2::{Digest, Sha256};

fn hex_sha256(der: &[u8]) -> String {
    Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_template_flow_over_mqtt5() {
    let env = Env::start().await;
    let (_, registered) = provision(&env, "1").await;
    assert_eq!(registered["thingName"], "ThingPrefix_1");
    assert_eq!(
        registered["deviceConfiguration"],
        serde_json::json!({
            "FallbackUrl": "https://www.example.com/test-site",
            "LocationUrl": "https://example.aws"
        })
    );
    let things = env.emu.service().registry().things();
    assert!(things.iter().any(|t| t.name == "ThingPrefix_1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_template_flow_over_mqtt311() {
    let env = Env::start().await;
    let mut c = V4::connect(env.port(), env.tls(&env.claim()), "test-v4-device").await;
    let created = c.request(CREATE, "").await;
    assert_eq!(created.topic, format!("{CREATE}/accepted"));
    let created = created.json();
    assert!(created["privateKey"]
        .as_str()
        .unwrap()
        .starts_with("-----BEGIN RSA PRIVATE KEY-----"));
    let body = serde_json::json!({
        "certificateOwnershipToken": created["certificateOwnershipToken"],
        "parameters": {"SerialNumber": "2", "DeviceLocation": "Seattle"}
    });
    let registered = c.request(REGISTER, &body.to_string()).await;
    assert_eq!(registered.topic, format!("{REGISTER}/accepted"));
    assert_eq!(registered.json()["thingName"], "ThingPrefix_2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csr_flow_and_certificate_id() {
    let env = Env::start().await;
    let (key, csr) = new_csr();
    let mut c = env.claim_v5("test-csr-device").await;
    let body = serde_json::json!({ "certificateSigningRequest": csr });
    let created = c.request(CREATE_CSR, &body.to_string()).await;
    assert_eq!(created.topic, format!("{CREATE_CSR}/accepted"));
    let created = created.json();
    assert!(created.get("privateKey").is_none());
    let der =
        CertificateDer::from_pem_slice(created["certificatePem"].as_str().unwrap().as_bytes())
            .unwrap();
    assert_eq!(created["certificateId"], hex_sha256(&der));

    // The new certificate, with the device's own key, works once registered.
    let body = serde_json::json!({
        "certificateOwnershipToken": created["certificateOwnershipToken"],
        "parameters": {"SerialNumber": "csr", "DeviceLocation": "Seattle"}
    });
    let registered = c.request(REGISTER, &body.to_string()).await;
    assert_eq!(registered.json()["thingName"], "ThingPrefix_csr");
    let device = Identity {
        cert_pem: created["certificatePem"].as_str().unwrap().to_owned(),
        key_pem: key.serialize_pem(),
    };
    V5::connect(env.port(), env.tls(&device), "csr-device-2").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_goes_only_to_the_connection_that_asked() {
    let env = Env::start().await;
    let mut a = env.claim_v5("test-twin-a").await;
    let mut b = env.claim_v5("test-twin-b").await;
    let accepted = format!("{CREATE}/accepted");
    let rejected = format!("{CREATE}/rejected");
    // Both subscribe to the same reply topics before anyone asks.
    a.subscribe(&[&accepted, &rejected]).await;
    b.subscribe(&[&accepted, &rejected]).await;

    a.publish(CREATE, "{}").await;
    let reply_a = a.recv().await.json();
    // Had a's reply been relayed to b, it would be queued ahead of the answer to b's request.
    b.publish(CREATE, "{}").await;
    let reply_b = b.recv().await.json();
    assert_ne!(reply_a["certificateId"], reply_b["certificateId"]);
    // The same the other way round.
    a.publish(CREATE, "{}").await;
    let again = a.recv().await.json();
    assert_ne!(again["certificateId"], reply_b["certificateId"]);
    assert_ne!(again["certificateId"], reply_a["certificateId"]);
    assert!(a.inbox.is_empty() && b.inbox.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claim_policy_over_mqtt5_uses_reason_codes() {
    let env = Env::start().await;
    let mut c = env.claim_v5("test-claim-v5").await;
    let accepted = format!("{CREATE}/accepted");
    let codes = c
        .subscribe(&[
            "plain/topic",
            &accepted,
            "$aws/certificates/create/json/+",
            "#",
        ])
        .await;
    assert_eq!(
        codes,
        vec![
            p5::SubscribeReasonCode::NotAuthorized,
            p5::SubscribeReasonCode::Success(QoS5::AtLeastOnce),
            p5::SubscribeReasonCode::NotAuthorized,
            p5::SubscribeReasonCode::NotAuthorized,
        ]
    );
    let ack = c.publish("plain/topic", "x").await;
    assert_eq!(ack.reason, p5::PubAckReason::NotAuthorized);
    let ack = c.publish("$aws/things/t/shadow/update", "{}").await;
    assert_eq!(ack.reason, p5::PubAckReason::NotAuthorized);
    // Still connected and still allowed to provision.
    c.expect_create_accepted().await;
    // A refused QoS 0 publish cannot be acknowledged: the connection is closed instead.
    c.send("plain/topic", QoS5::AtMostOnce, "x").await;
    c.expect_disconnect(p5::DisconnectReasonCode::NotAuthorized)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claim_policy_over_mqtt311_closes_the_connection() {
    let env = Env::start().await;
    let mut c = V4::connect(env.port(), env.tls(&env.claim()), "test-claim-v4").await;
    let accepted = format!("{CREATE}/accepted");
    let codes = c.subscribe(&["plain/topic", &accepted]).await;
    assert_eq!(
        codes,
        vec![
            rumqttc::SubscribeReasonCode::Failure,
            rumqttc::SubscribeReasonCode::Success(rumqttc::QoS::AtLeastOnce),
        ]
    );
    c.send("plain/topic", rumqttc::QoS::AtLeastOnce, "x").await;
    loop {
        match c.next().await {
            Ok(rumqttc::Packet::PubAck(_)) => panic!("a refused publish was acknowledged"),
            Ok(_) => continue,
            Err(_) => break,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registered_device_reconnects_with_its_certificate_and_talks_to_others() {
    let env = Env::start().await;
    let (first, _) = provision(&env, "10").await;
    let (second, _) = provision(&env, "11").await;
    let mut a = V5::connect(env.port(), env.tls(&first), "ThingPrefix_10").await;
    let mut b = V4::connect(env.port(), env.tls(&second), "ThingPrefix_11").await;
    assert_eq!(
        a.subscribe(&["devices/+/status"]).await,
        vec![p5::SubscribeReasonCode::Success(QoS5::AtLeastOnce)]
    );
    b.subscribe(&["devices/#"]).await;
    b.publish("devices/11/status", "online").await;
    let got = a.recv().await;
    assert_eq!(
        (got.topic.as_str(), got.payload.as_slice()),
        ("devices/11/status", &b"online"[..])
    );
    let own = b.recv().await;
    assert_eq!(own.topic, "devices/11/status");
    // A device may provision too (its policy allows everything), and gets the reply itself.
    a.expect_create_accepted().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_issued_but_unregistered_certificate_is_refused_at_connack() {
    let env = Env::start().await;
    let mut c = env.claim_v5("test-issuer").await;
    let created = c.request(CREATE, "{}").await.json();
    let pending = Identity {
        cert_pem: created["certificatePem"].as_str().unwrap().to_owned(),
        key_pem: created["privateKey"].as_str().unwrap().to_owned(),
    };
    match V5::try_connect(V5::options(env.port(), env.tls(&pending), "pending-5")).await {
        Err(rumqttc::v5::ConnectionError::ConnectionRefused(code)) => {
            assert_eq!(code, p5::ConnectReturnCode::NotAuthorized)
        }
        other => panic!("expected CONNACK not authorized, got {:?}", other.err()),
    }
    match V4::try_connect(V4::options(env.port(), env.tls(&pending), "pending-4")).await {
        Err(rumqttc::ConnectionError::ConnectionRefused(code)) => {
            assert_eq!(code, rumqttc::ConnectReturnCode::NotAuthorized)
        }
        other => panic!("expected CONNACK 5, got {:?}", other.err()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_from_another_ca_or_expired_fail_in_tls() {
    let env = Env::start().await;
    let other_dir = tempfile::tempdir().unwrap();
    let other = Ca::load_or_create(other_dir.path()).unwrap();
    let (cert, key) = other.claim_paths();
    let foreign = Identity::from_files(&cert, &key);
    let result = V5::try_connect(V5::options(env.port(), env.tls(&foreign), "foreign")).await;
    // Refused by a TLS alert (the handshake itself), not by CONNACK.
    let err = format!("{:?}", result.err());
    assert!(err.contains("AlertReceived"), "{err}");

    // A claim of our own CA that has expired.
    let issued = env
        .emu
        .service()
        .ca()
        .issue_claim("short", Duration::from_secs(1))
        .unwrap();
    env.emu
        .service()
        .registry()
        .add_claim(&issued.certificate_id);
    let short = Identity {
        cert_pem: issued.certificate_pem.clone(),
        key_pem: issued.private_key_pem.clone().unwrap(),
    };
    // Validity has one-second resolution: wait until it has certainly passed.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let result = V5::try_connect(V5::options(env.port(), env.tls(&short), "expired")).await;
    let err = format!("{:?}", result.err());
    assert!(err.contains("AlertReceived(CertificateExpired)"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misbehaving_connections_do_not_disturb_others() {
    let env = Env::start().await;
    let claim = env.claim();
    let mut good = env.claim_v5("test-good").await;

    // Half-open: TCP only, and TLS without a single MQTT byte. Both stay open meanwhile.
    let _tcp_only = tokio::net::TcpStream::connect(("127.0.0.1", env.port()))
        .await
        .unwrap();
    let _silent = Raw::connect(env.port(), env.tls(&claim)).await.unwrap();

    // Not MQTT at all: closed without an answer.
    let mut garbage = Raw::connect(env.port(), env.tls(&claim)).await.unwrap();
    garbage.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(garbage.drain().await.is_empty());

    // Garbage after a valid CONNECT: DISCONNECT "malformed packet".
    let mut bad = Raw::connect(env.port(), env.tls(&claim)).await.unwrap();
    bad.send(&connect_v5("test-bad", 30)).await;
    assert!(matches!(bad.read_v5().await, Some(p5::Packet::ConnAck(_))));
    bad.send(&[0x00, 0x01, 0xff]).await;
    match bad.read_v5().await {
        Some(p5::Packet::Disconnect(d)) => {
            assert_eq!(d.reason_code, p5::DisconnectReasonCode::MalformedPacket)
        }
        other => panic!("expected DISCONNECT, got {other:?}"),
    }

    // A PUBLISH announcing 1 MiB: refused from its header, before the body is sent.
    let mut huge = Raw::connect(env.port(), env.tls(&claim)).await.unwrap();
    huge.send(&connect_v5("test-huge", 30)).await;
    assert!(matches!(huge.read_v5().await, Some(p5::Packet::ConnAck(_))));
    huge.send(&[0x32, 0x80, 0x80, 0x40]).await;
    match huge.read_v5().await {
        Some(p5::Packet::Disconnect(d)) => {
            assert_eq!(d.reason_code, p5::DisconnectReasonCode::PacketTooLarge)
        }
        other => panic!("expected DISCONNECT, got {other:?}"),
    }

    // Through all of it the good connection keeps working.
    good.expect_create_accepted().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_is_dropped_without_slowing_the_publisher() {
    let env = Env::start().await;
    let (device, _) = provision(&env, "20").await;
    let mut deaf = Raw::connect(env.port(), env.tls(&device)).await.unwrap();
    deaf.send(&connect_v5("test-deaf", 0)).await;
    assert!(matches!(deaf.read_v5().await, Some(p5::Packet::ConnAck(_))));
    deaf.send(&subscribe_v5("flood/#", 1)).await;
    assert!(matches!(deaf.read_v5().await, Some(p5::Packet::SubAck(_))));

    let mut publisher = V5::connect(env.port(), env.tls(&device), "publisher").await;
    let chunk = vec![b'x'; 64 * 1024];
    // 32 MiB: more than the deaf client's queue and socket buffers can hold.
    for _ in 0..512 {
        let ack = publisher.publish("flood/data", chunk.clone()).await;
        assert_eq!(ack.reason, p5::PubAckReason::Success);
    }
    // The deaf connection was closed: reading what is buffered reaches the end.
    deaf.drain().await;
}

/// How many client connections this process can hold open next to the server's end of each.
fn connection_budget(wanted: usize) -> usize {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let soft = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or(1024);
    wanted.min(soft.saturating_sub(200) / 2)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_connections() {
    let env = Env::start().await;
    let tls = env.tls(&env.claim());
    let n = connection_budget(1000);
    assert!(n >= 400, "file descriptor limit too low for this test: {n}");
    let started = std::time::Instant::now();
    let connecting: Vec<_> = (0..n)
        .map(|i| {
            let (port, tls) = (env.port(), tls.clone());
            tokio::spawn(async move { V5::connect(port, tls, &format!("test-many-{i}")).await })
        })
        .collect();
    let mut conns = Vec::new();
    for c in connecting {
        conns.push(c.await.unwrap());
    }
    eprintln!("{n} connections in {:?}", started.elapsed());
    // A hundred of them ask at once (CSR requests that are rejected: no key generation).
    let asking: Vec<_> = conns
        .drain(..100)
        .map(|mut c| {
            tokio::spawn(async move {
                let body = r#"{"certificateSigningRequest":"not a CSR"}"#;
                c.request(CREATE_CSR, body).await.topic
            })
        })
        .collect();
    for a in asking {
        assert_eq!(a.await.unwrap(), format!("{CREATE_CSR}/rejected"));
    }
    let mut extra = V5::connect(env.port(), tls, "test-many-extra").await;
    extra.expect_create_accepted().await;
    eprintln!("done in {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payload_limit_is_128_kib() {
    let env = Env::start().await;
    let mut c = env.claim_v5("test-limit").await;
    // Exactly MAX_PAYLOAD (128 KiB) is accepted and answered (whitespace around {} is valid JSON).
    let mut body = vec![b' '; fleetprov_emulator::MAX_PAYLOAD - 2];
    body.extend_from_slice(b"{}");
    let reply = c.request(CREATE, std::str::from_utf8(&body).unwrap()).await;
    assert_eq!(reply.topic, format!("{CREATE}/accepted"));
    // One byte more is within the Maximum Packet Size CONNACK announced, so it is a refused
    // message, not a protocol error: PUBACK "quota exceeded" at QoS 1, and the connection stays.
    body.insert(0, b' ');
    let ack = c.publish(CREATE, body.clone()).await;
    assert_eq!(ack.reason, p5::PubAckReason::QuotaExceeded);
    c.expect_create_accepted().await;
    // At QoS 0 there is no PUBACK to carry it: DISCONNECT "quota exceeded".
    c.send(CREATE, QoS5::AtMostOnce, body).await;
    c.expect_disconnect(p5::DisconnectReasonCode::QuotaExceeded)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_expires_after_one_and_a_half_periods() {
    let env = Env::start().await;
    let mut raw = Raw::connected_v5(env.port(), env.tls(&env.claim()), "test-sleepy", 1).await;
    let started = std::time::Instant::now();
    match raw.read_v5().await {
        Some(p5::Packet::Disconnect(d)) => {
            assert_eq!(d.reason_code, p5::DisconnectReasonCode::KeepAliveTimeout)
        }
        other => panic!("expected DISCONNECT, got {other:?}"),
    }
    assert!(started.elapsed() >= Duration::from_millis(1400));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_byte_mqtt5_disconnect_is_a_normal_disconnect() {
    let env = Env::start().await;
    let mut raw = Raw::connected_v5(
        env.port(),
        env.tls(&env.claim()),
        "test-short-disconnect",
        30,
    )
    .await;
    raw.send(&[0xE0, 0x00]).await;
    // No DISCONNECT "malformed packet" back: the server just closes.
    assert!(raw.drain().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsupported_protocol_level_gets_connack_1() {
    let env = Env::start().await;
    let mut raw = Raw::connect(env.port(), env.tls(&env.claim()))
        .await
        .unwrap();
    // MQTT 3.1 ("MQIsdp", level 3).
    let mut connect = vec![0x10, 0];
    connect.extend_from_slice(&[
        0, 6, b'M', b'Q', b'I', b's', b'd', b'p', 3, 0x02, 0, 30, 0, 1, b'x',
    ]);
    connect[1] = (connect.len() - 2) as u8;
    raw.send(&connect).await;
    assert_eq!(raw.drain().await, vec![0x20, 0x02, 0x00, 0x01]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alpn_x_amzn_mqtt_ca_is_accepted() {
    let env = Env::start().await;
    let tls = client_tls_alpn(
        &env.emu.ca_path(),
        &env.claim(),
        vec![b"x-amzn-mqtt-ca".to_vec()],
    );
    let raw = Raw::connect(env.port(), tls.clone()).await.unwrap();
    assert_eq!(
        raw.stream.get_ref().1.alpn_protocol(),
        Some(&b"x-amzn-mqtt-ca"[..])
    );
    let mut c = V5::connect(env.port(), tls, "test-alpn").await;
    c.expect_create_accepted().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_can_be_injected_at_run_time() {
    let env = Env::start().await;
    let claim = env.claim();
    let accepted = format!("{CREATE}/accepted");
    let rejected = format!("{CREATE}/rejected");

    env.emu.set_fault(Fault::RefuseSubscribe);
    let mut c = env.claim_v5("test-faults").await;
    assert_eq!(
        c.subscribe(&[&accepted]).await,
        vec![p5::SubscribeReasonCode::NotAuthorized]
    );

    env.emu
        .set_fault(Fault::ReplyAccepted(b"not json".to_vec()));
    let reply = c.request(CREATE, "{}").await;
    assert_eq!(
        (reply.topic.as_str(), reply.payload.as_slice()),
        (accepted.as_str(), &b"not json"[..])
    );

    env.emu.set_fault(Fault::ReplyOnWrongTopic);
    let reply = c.request(CREATE, "{}").await;
    assert_eq!(reply.topic, format!("{CREATE}/unexpected"));
    assert!(reply.json()["certificateId"].is_string());

    // NoSuback: the PINGRESP sent after the SUBSCRIBE arrives, the SUBACK never does.
    env.emu.set_fault(Fault::NoSuback);
    let mut raw = Raw::connected_v5(env.port(), env.tls(&claim), "test-no-suback", 30).await;
    let sub = subscribe_v5(&rejected, 1);
    raw.send(&sub).await;
    raw.send(&[0xC0, 0x00]).await;
    assert!(matches!(raw.read_v5().await, Some(p5::Packet::PingResp(_))));

    env.emu.set_fault(Fault::DisconnectOnRequest);
    c.send(CREATE, QoS5::AtLeastOnce, "{}").await;
    loop {
        match c.next().await {
            Ok(p5::Packet::PubAck(_)) => panic!("the request was acknowledged"),
            Ok(_) => continue,
            Err(rumqttc::v5::ConnectionError::MqttState(
                rumqttc::v5::StateError::ServerDisconnect { .. },
            )) => panic!("expected an abrupt close, got DISCONNECT"),
            Err(_) => break,
        }
    }

    env.emu.set_fault(Fault::NoConnack);
    let mut raw = Raw::connect(env.port(), env.tls(&claim)).await.unwrap();
    raw.send(&connect_v5("test-no-connack", 30)).await;
    let mut byte = [0u8; 1];
    let nothing = tokio::time::timeout(
        Duration::from_millis(300),
        tokio::io::AsyncReadExt::read(&mut raw.stream, &mut byte),
    )
    .await;
    assert!(
        nothing.is_err(),
        "the server answered a CONNECT despite NoConnack"
    );

    env.emu.set_fault(Fault::None);
    let mut c = env.claim_v5("test-after-faults").await;
    c.expect_create_accepted().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_fault_acknowledges_but_never_answers() {
    let env = Env::start().await;
    env.emu.set_fault(Fault::Silent);
    let mut c = env.claim_v5("test-silent").await;
    let accepted = format!("{CREATE}/accepted");
    let rejected = format!("{CREATE}/rejected");
    c.subscribe(&[&accepted, &rejected]).await;
    assert_eq!(
        c.publish(CREATE, "{}").await.reason,
        p5::PubAckReason::Success
    );
    // No request reached the service: the registry holds no new certificate.
    let before = env.emu.service().registry().things().len();
    let waited = tokio::time::timeout(Duration::from_millis(500), c.recv()).await;
    assert!(waited.is_err(), "a reply arrived despite Silent");
    assert_eq!(env.emu.service().registry().things().len(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_connection_with_the_same_client_id_takes_over() {
    let env = Env::start().await;
    let mut first = env.claim_v5("test-same-id").await;
    let mut second = env.claim_v5("test-same-id").await;
    first
        .expect_disconnect(p5::DisconnectReasonCode::SessionTakenOver)
        .await;
    second.expect_create_accepted().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_disconnects_clients_and_closes_the_port() {
    let env = Env::start().await;
    let port = env.port();
    let mut c = V5::connect(port, env.tls(&env.claim()), "test-until-stop").await;
    let stopping = tokio::spawn(async move {
        env.emu.stop().await;
        env.dir
    });
    c.expect_disconnect(p5::DisconnectReasonCode::ServerShuttingDown)
        .await;
    let _dir = within("stop", stopping).await.unwrap();
    assert!(tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err());
}

#[test]
fn start_blocking_serves_until_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let handle = Emulator::start_blocking(EmulatorConfig::new(dir.path())).unwrap();
    let port = handle.port();
    assert!(handle.ca_path().is_file());
    assert!(handle.claim_cert_path().is_file());
    assert!(handle.claim_key_path().is_file());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let claim = Identity::from_files(&handle.claim_cert_path(), &handle.claim_key_path());
    let tls = client_tls(&handle.ca_path(), &claim);
    rt.block_on(async {
        let mut c = V5::connect(port, tls, "test-blocking").await;
        c.expect_create_accepted().await;
    });
    drop(handle);
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
}

#[test]
fn start_fails_cleanly_on_a_bad_template() {
    let dir = tempfile::tempdir().unwrap();
    let template = dir.path().join("bad.json");
    std::fs::write(&template, "{ not json").unwrap();
    let mut cfg = EmulatorConfig::new(dir.path().join("state"));
    cfg.templates = vec![("Bad".into(), template)];
    let err = Emulator::start_blocking(cfg).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
}
