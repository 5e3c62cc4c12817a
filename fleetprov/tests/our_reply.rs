//! Our reply only (issue 20, item 5): a CreateCertificateFromCsr reply whose certificate does
//! not carry the CSR's public key is another device's, passed over, over real TLS: a scripted
//! broker that delivers another device's reply first, and the emulator's responder behind
//! mosquitto, which delivers every reply to every subscriber.

use std::time::{Duration, Instant};

use fleetprov::client::{Client, Credentials, MqttVersion, Pem};
use fleetprov::protocol::TemplateName;
use fleetprov::provision::{provision, ProvisionOptions};
use fleetprov::ErrorKind;
use fleetprov_emulator::ca::Ca;
use fleetprov_emulator::responder::{Responder, ResponderConfig};
use fleetprov_testkit::env::{make_csr, params};
use fleetprov_testkit::hostile::{bounded, connack_ok, puback, publish0, Broker, In};

const VERSIONS: [MqttVersion; 2] = [MqttVersion::V5, MqttVersion::V311];

/// A certificate for `key` (self-signed: the client checks whose key it carries, not who
/// signed it), as an accepted CreateCertificateFromCsr reply with `id`.
fn accepted_for(key: &rcgen::KeyPair, id: &str) -> Vec<u8> {
    let cert = rcgen::CertificateParams::new(vec!["device".into()])
        .unwrap()
        .self_signed(key)
        .unwrap();
    serde_json::to_vec(&serde_json::json!({
        "certificateId": id,
        "certificatePem": cert.pem(),
        "certificateOwnershipToken": format!("token-{id}"),
    }))
    .unwrap()
}

/// Up to the request, then `replies` on the accepted topic in one write, then the PUBACK;
/// then keeps the connection (answering pings) until the client leaves.
async fn answer_with(replies: Vec<Vec<u8>>, version: MqttVersion) -> Broker<String> {
    Broker::start(move |mut c| async move {
        let v5 = version == MqttVersion::V5;
        c.accept_connect(&connack_ok(v5)).await?;
        c.grant_subscribe().await?;
        let (topic, pkid, _) = c.expect_publish().await?;
        let accepted = format!("{topic}/accepted");
        let mut burst = Vec::new();
        for r in &replies {
            burst.extend(publish0(v5, &accepted, r));
        }
        c.send(&burst).await?;
        c.send(&puback(v5, pkid, None)).await?;
        loop {
            match c.recv().await? {
                None => return Ok(topic),
                Some(r) if matches!(r.packet, In::PingReq) => {}
                Some(_) => {}
            }
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_devices_reply_first_then_ours() {
    bounded(async {
        for version in VERSIONS {
            let csr = make_csr("our-device");
            let theirs = rcgen::KeyPair::generate().unwrap();
            let (their_id, our_id) = ("aa".repeat(32), "bb".repeat(32));
            // Back to back in one write: ours must not be lost while the other is judged.
            let b = answer_with(
                vec![
                    accepted_for(&theirs, &their_id),
                    accepted_for(&csr.key, &our_id),
                ],
                version,
            )
            .await;
            let client = Client::connect(b.opts(version)).await.unwrap();
            let created = client.create_certificate_from_csr(&csr.pem).await.unwrap();
            assert_eq!(created.certificate_id, our_id, "{version:?}");
            assert_eq!(
                created.certificate_ownership_token,
                format!("token-{our_id}")
            );
            assert!(client.is_connected());
            client.disconnect().await;
            assert_eq!(b.join().await, "$aws/certificates/create-from-csr/json");
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_others_replies_end_the_wait_with_bad_reply() {
    bounded(async {
        let csr = make_csr("our-device");
        let (one, two) = (
            rcgen::KeyPair::generate().unwrap(),
            rcgen::KeyPair::generate().unwrap(),
        );
        let (id1, id2) = ("cc".repeat(32), "dd".repeat(32));
        let b = answer_with(
            vec![accepted_for(&one, &id1), accepted_for(&two, &id2)],
            MqttVersion::V5,
        )
        .await;
        let mut opts = b.opts(MqttVersion::V5);
        opts.operation_timeout = Duration::from_secs(2);
        let client = Client::connect(opts).await.unwrap();
        let started = Instant::now();
        let e = client
            .create_certificate_from_csr(&csr.pem)
            .await
            .unwrap_err();
        // It waited for its own answer until the operation timeout, then said why it had none.
        assert!(started.elapsed() >= Duration::from_secs(2), "{e}");
        assert_eq!(e.kind, ErrorKind::BadReply, "{e}");
        for what in [
            id1.as_str(),
            id2.as_str(),
            "another key",
            "2 accepted replies",
        ] {
            assert!(e.message.contains(what), "{what:?} not in: {e}");
        }
        client.disconnect().await;
        b.join().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_with_an_unreadable_certificate_is_a_bad_reply() {
    bounded(async {
        let csr = make_csr("our-device");
        let garbage = br#"{"certificateId":"eeee","certificatePem":"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n","certificateOwnershipToken":"t"}"#.to_vec();
        let b = answer_with(vec![garbage], MqttVersion::V5).await;
        let client = Client::connect(b.opts(MqttVersion::V5)).await.unwrap();
        let e = client
            .create_certificate_from_csr(&csr.pem)
            .await
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::BadReply, "{e}");
        assert!(e.message.contains("eeee") && e.message.contains("cannot be read"), "{e}");
        client.disconnect().await;
        b.join().await;
    })
    .await;
}

/// Four devices provisioning at once through the emulator's responder on mosquitto, which
/// delivers each CreateCertificateFromCsr reply to all four: each ends with a certificate for
/// its own key, one the responder issued, and none with another's.
#[test]
fn four_devices_through_the_responder_on_mosquitto_keep_their_own_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let (claim_cert, claim_key) = Ca::load_or_create(&state).unwrap().claim_paths();
    let mosquitto = fleetprov_testkit::mosquitto::start(&state, dir.path());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(bounded(async {
        let responder = Responder::start(ResponderConfig {
            host: "localhost".into(),
            port: mosquitto.port,
            ca: state.join("ca.pem"),
            cert: claim_cert.clone(),
            key: claim_key.clone(),
            state_dir: state.clone(),
            templates: Vec::new(),
            client_id: "responder".into(),
        })
        .await
        .unwrap();
        let mut runs = Vec::new();
        for n in 0..4 {
            let mut claim = fleetprov::client::ClientOptions::new("localhost");
            claim.port = mosquitto.port;
            claim.ca = Some(Pem::file(state.join("ca.pem")));
            claim.credentials = Some(Credentials::pem(
                Pem::file(&claim_cert),
                Pem::file(&claim_key),
            ));
            claim.client_id = Some(format!("claim-{n}"));
            claim.operation_timeout = Duration::from_secs(20);
            let mut o = ProvisionOptions::new(
                claim,
                TemplateName::new("FleetTemplate").unwrap(),
                dir.path().join(format!("device-{n}")),
            );
            o.parameters = params(&n.to_string());
            // Each its own client id for the proof connection: the thing name comes from a
            // RegisterThing reply, which mosquitto also hands to every device.
            o.device_client_id = Some(format!("device-{n}"));
            runs.push(tokio::spawn(provision(o)));
        }
        let mut ids = Vec::new();
        for (n, run) in runs.into_iter().enumerate() {
            let p = run
                .await
                .unwrap()
                .unwrap_or_else(|e| panic!("device {n}: {e}"));
            // Its stored certificate and key belong together: the client refuses a pair
            // that does not before connecting, and the responder's mosquitto accepts it.
            let mut o = fleetprov::client::ClientOptions::new("localhost");
            o.port = mosquitto.port;
            o.ca = Some(Pem::file(state.join("ca.pem")));
            o.credentials = Some(Credentials::pem(
                Pem::file(&p.files.certificate),
                Pem::file(&p.files.private_key),
            ));
            o.client_id = Some(format!("check-{n}"));
            Client::connect(o)
                .await
                .unwrap_or_else(|e| panic!("device {n}'s identity: {e}"))
                .disconnect()
                .await;
            let status = responder
                .service()
                .registry()
                .cert_status(&p.certificate_id);
            assert!(status.is_some(), "device {n}: certificate not issued here");
            ids.push(p.certificate_id);
        }
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 4, "two devices hold the same certificate");
        responder.stop().await;
    }));
}
