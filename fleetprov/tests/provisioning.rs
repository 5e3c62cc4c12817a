//! The library against the emulator over real mutual TLS on loopback.

use fleetprov_testkit::env as common;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use common::{cert_der, make_csr, params, start_proxy, start_relay, wait_until, Env};
use fleetprov::client::{Client, Credentials, MqttVersion, Pem, PrivateKey};
use fleetprov::log::Level;
use fleetprov::protocol::RegisterThingRequest;
use fleetprov::ErrorKind;
use fleetprov_emulator::cert::certificate_id;
use fleetprov_emulator::Fault;

const VERSIONS: [MqttVersion; 2] = [MqttVersion::V5, MqttVersion::V311];

fn register_req(token: &str, serial: &str) -> RegisterThingRequest {
    RegisterThingRequest {
        certificate_ownership_token: token.to_owned(),
        parameters: params(serial),
    }
}

/// The whole keys flow, then a reconnect with the issued identity that publishes and gets
/// its PUBACK.
async fn keys_flow(version: MqttVersion) {
    let env = Env::start().await;
    let client = Client::connect(env.claim_opts(version)).await.unwrap();
    assert!(client.is_connected());
    assert!(client.client_id().starts_with("test-"));

    let created = client.create_keys_and_certificate().await.unwrap();
    assert_eq!(created.certificate_id.len(), 64);
    assert_eq!(
        created.certificate_id,
        certificate_id(&cert_der(&created.certificate_pem))
    );
    assert!(created
        .private_key
        .starts_with("-----BEGIN RSA PRIVATE KEY-----"));
    assert!(!created.certificate_ownership_token.is_empty());

    let thing = client
        .register_thing(
            "FleetTemplate",
            &register_req(&created.certificate_ownership_token, "1"),
        )
        .await
        .unwrap();
    assert_eq!(thing.thing_name, "ThingPrefix_1");
    assert_eq!(
        thing
            .device_configuration
            .get("LocationUrl")
            .map(String::as_str),
        Some("https://example.aws")
    );
    assert_eq!(
        thing
            .device_configuration
            .get("FallbackUrl")
            .map(String::as_str),
        Some("https://www.example.com/test-site")
    );
    let registered = env.emu.service().registry().thing("ThingPrefix_1").unwrap();
    assert!(format!("{registered:?}").contains(&created.certificate_id));
    client.disconnect().await;
    assert!(!client.is_connected());

    // The new identity: certificate from the reply, key from the reply, both in memory.
    let mut opts = env.claim_opts(version);
    opts.credentials = Some(Credentials::pem(
        Pem::memory(&created.certificate_pem),
        Pem::memory(created.private_key.as_bytes()),
    ));
    opts.client_id = Some("ThingPrefix_1".into());
    let device = Client::connect(opts).await.unwrap();
    device
        .publish("devices/ThingPrefix_1/hello", b"{\"hello\":1}")
        .await
        .unwrap();
    device.disconnect().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_flow_and_reconnect_mqtt5() {
    keys_flow(MqttVersion::V5).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_flow_and_reconnect_mqtt311() {
    keys_flow(MqttVersion::V311).await;
}

async fn csr_flow(version: MqttVersion) {
    let env = Env::start().await;
    let client = Client::connect(env.claim_opts(version)).await.unwrap();
    let csr = make_csr("device-7");
    let created = client.create_certificate_from_csr(&csr.pem).await.unwrap();
    let der = cert_der(&created.certificate_pem);
    assert_eq!(created.certificate_id, certificate_id(&der));
    // The certificate carries the CSR's public key.
    let spki = csr.key.public_key_der();
    assert!(der.windows(spki.len()).any(|w| w == spki.as_slice()));

    let thing = client
        .register_thing(
            "FleetTemplate",
            &register_req(&created.certificate_ownership_token, "7"),
        )
        .await
        .unwrap();
    assert_eq!(thing.thing_name, "ThingPrefix_7");
    client.disconnect().await;

    let mut opts = env.claim_opts(version);
    opts.credentials = Some(Credentials::pem(
        Pem::memory(&created.certificate_pem),
        Pem::memory(csr.key.serialize_pem()),
    ));
    let device = Client::connect(opts).await.unwrap();
    device.publish("devices/7/hello", b"hi").await.unwrap();
    device.disconnect().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn csr_flow_and_reconnect_mqtt5() {
    csr_flow(MqttVersion::V5).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn csr_flow_and_reconnect_mqtt311() {
    csr_flow(MqttVersion::V311).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn rejections_carry_aws_fields() {
    // Names a template the emulator does not serve: its 404 must come from the service.
    let env = Env::start_any_template().await;
    for version in VERSIONS {
        let client = Client::connect(env.claim_opts(version)).await.unwrap();
        let e = client
            .register_thing("FleetTemplate", &register_req("not-a-token", "1"))
            .await
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::Rejected, "{e}");
        let r = e.rejection.as_ref().unwrap();
        assert_eq!(r.status_code, 400);
        assert_eq!(r.error_code, "InvalidCertificateOwnershipToken");
        assert!(!r.error_message.is_empty());

        let e = client
            .register_thing("NoSuchTemplate", &register_req("x", "1"))
            .await
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::Rejected, "{e}");
        let r = e.rejection.unwrap();
        assert_eq!(
            (r.status_code, r.error_code.as_str()),
            (404, "ResourceNotFound")
        );

        let e = client
            .create_certificate_from_csr("-----BEGIN CERTIFICATE REQUEST-----\nnope\n")
            .await
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::Rejected, "{e}");
        assert_eq!(e.rejection.unwrap().status_code, 400);
        // A rejection leaves the connection usable.
        assert!(client.is_connected());
        client.create_keys_and_certificate().await.unwrap();
        client.disconnect().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn silent_service_times_out_and_connection_survives() {
    let env = Env::start().await;
    for version in VERSIONS {
        env.emu.set_fault(Fault::Silent);
        let mut opts = env.claim_opts(version);
        // Also the limit for the call that must succeed below: with the other tests making
        // keys in parallel on a small machine, an answer can take well over a second.
        let timeout = Duration::from_secs(3);
        opts.operation_timeout = timeout;
        let client = Client::connect(opts).await.unwrap();
        let started = Instant::now();
        let e = client.create_keys_and_certificate().await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Timeout, "{e}");
        assert!(e.message.contains("the reply"), "{e}");
        let waited = started.elapsed();
        assert!(waited >= timeout && waited < timeout + Duration::from_secs(5));
        assert!(client.is_connected());
        // With the service back, the next call subscribes again and succeeds.
        env.emu.set_fault(Fault::None);
        client.create_keys_and_certificate().await.unwrap();
        client.disconnect().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_suback_times_out() {
    let env = Env::start().await;
    env.emu.set_fault(Fault::NoSuback);
    let mut opts = env.claim_opts(MqttVersion::V5);
    opts.operation_timeout = Duration::from_millis(400);
    let client = Client::connect(opts).await.unwrap();
    let e = client.create_keys_and_certificate().await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Timeout, "{e}");
    assert!(e.message.contains("SUBACK"), "{e}");
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_connack_times_out() {
    let env = Env::start().await;
    env.emu.set_fault(Fault::NoConnack);
    for version in VERSIONS {
        let mut opts = env.claim_opts(version);
        opts.connect_timeout = Duration::from_millis(500);
        let e = Client::connect(opts).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Timeout, "{e}");
        assert!(e.message.contains("CONNACK"), "{e}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn disconnect_mid_operation_fails_pending_and_later_ops() {
    let env = Env::start().await;
    for version in VERSIONS {
        env.emu.set_fault(Fault::DisconnectOnRequest);
        let client = Client::connect(env.claim_opts(version)).await.unwrap();
        // A second operation of another kind waits on the same connection.
        let other = client.clone();
        let waiting = tokio::spawn(async move {
            other
                .register_thing("FleetTemplate", &register_req("t", "1"))
                .await
        });
        let e = client.create_keys_and_certificate().await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Disconnected, "{e}");
        assert_eq!(
            waiting.await.unwrap().unwrap_err().kind,
            ErrorKind::Disconnected
        );
        assert!(!client.is_connected());
        // Never reconnects on its own: later operations fail at once.
        env.emu.set_fault(Fault::None);
        let started = Instant::now();
        let e = client.create_keys_and_certificate().await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Disconnected, "{e}");
        assert!(started.elapsed() < Duration::from_secs(1));
    }
}

/// `closed()` stays pending while the session is up and resolves, for every waiter, with the
/// same error the interrupted operation got; later calls resolve at once.
#[tokio::test(flavor = "multi_thread")]
async fn closed_reports_a_lost_connection() {
    let env = Env::start().await;
    for version in VERSIONS {
        env.emu.set_fault(Fault::None);
        let client = Client::connect(env.claim_opts(version)).await.unwrap();
        // A full round trip first: the session is certainly up, and `closed()` is not ready.
        client.create_keys_and_certificate().await.unwrap();
        assert!(
            tokio::time::timeout(Duration::ZERO, client.closed())
                .await
                .is_err(),
            "closed() resolved while connected"
        );
        let watcher = {
            let client = client.clone();
            tokio::spawn(async move { client.closed().await })
        };
        env.emu.set_fault(Fault::DisconnectOnRequest);
        let op = client.create_keys_and_certificate().await.unwrap_err();
        assert_eq!(op.kind, ErrorKind::Disconnected, "{op}");
        let seen = tokio::time::timeout(Duration::from_secs(10), watcher)
            .await
            .expect("closed() never resolved")
            .unwrap();
        assert_eq!(seen.kind, ErrorKind::Disconnected, "{seen}");
        // The operation's message wraps the reason the session ended.
        assert!(op.message.contains(&seen.message), "{op} / {seen}");
        let again = tokio::time::timeout(Duration::ZERO, client.closed())
            .await
            .expect("closed() must resolve at once after the end");
        assert_eq!(again.message, seen.message);
    }
}

/// The broker going away with nothing pending is noticed and reported too.
#[tokio::test(flavor = "multi_thread")]
async fn closed_reports_the_broker_stopping() {
    for version in VERSIONS {
        let env = Env::start().await;
        let client = Client::connect(env.claim_opts(version)).await.unwrap();
        let watcher = {
            let client = client.clone();
            tokio::spawn(async move { client.closed().await })
        };
        env.emu.stop().await;
        let e = tokio::time::timeout(Duration::from_secs(10), watcher)
            .await
            .expect("closed() never resolved after the broker stopped")
            .unwrap();
        assert_eq!(e.kind, ErrorKind::Disconnected, "{e}");
        assert!(!client.is_connected());
    }
}

/// A requested disconnect resolves `closed()` with `Cancelled`, not as a loss.
#[tokio::test(flavor = "multi_thread")]
async fn closed_after_disconnect_says_cancelled() {
    let env = Env::start().await;
    let client = Client::connect(env.claim_opts(MqttVersion::V5))
        .await
        .unwrap();
    let watcher = {
        let client = client.clone();
        tokio::spawn(async move { client.closed().await })
    };
    client.disconnect().await;
    let e = tokio::time::timeout(Duration::from_secs(10), watcher)
        .await
        .expect("closed() never resolved after disconnect()")
        .unwrap();
    assert_eq!(e.kind, ErrorKind::Cancelled, "{e}");
}

#[tokio::test(flavor = "multi_thread")]
async fn refused_subscription_is_reported() {
    let env = Env::start().await;
    env.emu.set_fault(Fault::RefuseSubscribe);
    for version in VERSIONS {
        let client = Client::connect(env.claim_opts(version)).await.unwrap();
        let e = client.create_keys_and_certificate().await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::SubscribeRefused, "{e}");
        assert!(
            e.message.contains("$aws/certificates/create/json/accepted"),
            "{e}"
        );
        client.disconnect().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn twenty_queued_operations_are_never_mixed_up() {
    let env = Env::start().await;
    let client = Client::connect(env.claim_opts(MqttVersion::V5))
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for i in 0..20 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let csr = make_csr(&format!("device-{i}"));
            let created = client.create_certificate_from_csr(&csr.pem).await.unwrap();
            let der = cert_der(&created.certificate_pem);
            let spki = csr.key.public_key_der();
            // Each reply is for this task's own CSR.
            assert!(der.windows(spki.len()).any(|w| w == spki.as_slice()));
            let thing = client
                .register_thing(
                    "FleetTemplate",
                    &register_req(&created.certificate_ownership_token, &i.to_string()),
                )
                .await
                .unwrap();
            assert_eq!(thing.thing_name, format!("ThingPrefix_{i}"));
            created.certificate_id
        }));
    }
    let mut ids = std::collections::HashSet::new();
    for t in tasks {
        ids.insert(t.await.unwrap());
    }
    assert_eq!(ids.len(), 20);

    // The same for the keys flow, all at once.
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let c = client.create_keys_and_certificate().await.unwrap();
            assert_eq!(
                c.certificate_id,
                certificate_id(&cert_der(&c.certificate_pem))
            );
            c.certificate_id
        }));
    }
    let mut ids = std::collections::HashSet::new();
    for t in tasks {
        ids.insert(t.await.unwrap());
    }
    assert_eq!(ids.len(), 20);
    client.disconnect().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn template_injection_is_refused_before_any_io() {
    let env = Env::start().await;
    // Any provisioning request would make the emulator drop the connection.
    env.emu.set_fault(Fault::DisconnectOnRequest);
    let client = Client::connect(env.claim_opts(MqttVersion::V5))
        .await
        .unwrap();
    for name in [
        "a/b",
        "+",
        "#",
        "",
        "FleetTemplate/provision/json/#",
        &"x".repeat(37),
    ] {
        let e = client
            .register_thing(name, &register_req("t", "1"))
            .await
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidArgument, "{name:?}: {e}");
    }
    let e = client.publish("devices/+/x", b"").await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::InvalidArgument);
    assert!(client.is_connected());
    client.disconnect().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_failures_are_distinguishable() {
    let env = Env::start().await;

    // A CA that did not sign the server certificate.
    let other_ca = {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.self_signed(&key).unwrap().pem()
    };
    let mut opts = env.claim_opts(MqttVersion::V5);
    opts.ca = Some(Pem::memory(other_ca));
    let e = Client::connect(opts).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Tls, "{e}");
    assert!(e.message.contains("trusted CA"), "{e}");

    // A name the server certificate does not carry, reached through a CONNECT proxy.
    let proxy = start_proxy(env.emu.port()).await;
    let mut opts = env.claim_opts(MqttVersion::V5);
    opts.endpoint = "wrong-name.example".into();
    opts.proxy = Some(("127.0.0.1".into(), proxy.port));
    let e = Client::connect(opts).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Tls, "{e}");
    assert!(e.message.contains("not valid for the name"), "{e}");
    assert!(proxy.requests.lock().unwrap()[0].starts_with("CONNECT wrong-name.example:"));

    // A key that is not the certificate's: refused before connecting.
    let mut opts = env.claim_opts(MqttVersion::V5);
    opts.credentials.as_mut().unwrap().key = PrivateKey::Pem(Pem::memory(
        rcgen::KeyPair::generate().unwrap().serialize_pem(),
    ));
    let e = Client::connect(opts).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Tls, "{e}");
    assert!(e.message.contains("does not match"), "{e}");

    // Missing files.
    for which in ["ca", "cert", "key"] {
        let mut opts = env.claim_opts(MqttVersion::V5);
        let missing = Pem::file(env.dir.path().join("missing.pem"));
        let credentials = opts.credentials.as_mut().unwrap();
        match which {
            "ca" => opts.ca = Some(missing),
            "cert" => credentials.cert = missing,
            _ => credentials.key = PrivateKey::Pem(missing),
        }
        let e = Client::connect(opts).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Io, "{which}: {e}");
        assert!(e.message.contains("missing.pem"), "{e}");
    }

    // A client certificate from a CA the broker does not know: the server's alert is reported.
    let (foreign_cert, foreign_key) = {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = p.self_signed(&ca_key).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["device".to_owned()])
            .unwrap()
            .signed_by(&key, &ca, &ca_key)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    };
    for version in VERSIONS {
        let mut opts = env.claim_opts(version);
        opts.credentials = Some(Credentials::pem(
            Pem::memory(&foreign_cert),
            Pem::memory(&foreign_key),
        ));
        let e = Client::connect(opts).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Tls, "{e}");
        assert!(
            e.message.contains("did not accept the client certificate"),
            "{e}"
        );
    }

    // A certificate file that is not PEM.
    let mut opts = env.claim_opts(MqttVersion::V5);
    opts.credentials.as_mut().unwrap().cert = Pem::memory("just text");
    assert_eq!(
        Client::connect(opts).await.unwrap_err().kind,
        ErrorKind::Tls
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn expired_client_certificate_is_reported_as_such() {
    let env = Env::start().await;
    let ca = env.emu.service().ca();
    let now = SystemTime::now();
    let day = Duration::from_secs(86_400);
    // Registered claims from the broker's CA: only the dates differ.
    let claim = |name: &str, from: SystemTime, to: SystemTime| {
        let issued = ca.issue_claim_between(name, from, to).unwrap();
        env.emu
            .service()
            .registry()
            .add_claim(&issued.certificate_id);
        let mut opts = env.claim_opts(MqttVersion::V5);
        opts.credentials = Some(Credentials::pem(
            Pem::memory(&issued.certificate_pem),
            Pem::memory(issued.private_key_pem.unwrap()),
        ));
        opts
    };
    let current = claim("current", now - day, now + day);
    Client::connect(current).await.unwrap().disconnect().await;
    for version in VERSIONS {
        let mut opts = claim("expired", now - 2 * day, now - day);
        opts.mqtt_version = version;
        let e = Client::connect(opts).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Tls, "{e}");
        assert!(
            e.message.contains("did not accept the client certificate")
                && e.message.contains("expired"),
            "{e}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn proxy_connect_works() {
    let env = Env::start().await;
    let proxy = start_proxy(env.emu.port()).await;
    let mut opts = env.claim_opts(MqttVersion::V311);
    opts.proxy = Some(("127.0.0.1".into(), proxy.port));
    let client = Client::connect(opts).await.unwrap();
    client.create_keys_and_certificate().await.unwrap();
    assert_eq!(
        proxy.requests.lock().unwrap()[0],
        format!("CONNECT localhost:{} HTTP/1.1", env.emu.port())
    );
    client.disconnect().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_replies_are_reported_without_crashing() {
    let env = Env::start().await;
    for version in VERSIONS {
        // Not JSON.
        env.emu
            .set_fault(Fault::ReplyAccepted(b"certainly not json".to_vec()));
        let client = Client::connect(env.claim_opts(version)).await.unwrap();
        let e = client.create_keys_and_certificate().await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::BadReply, "{e}");
        // JSON of the wrong shape.
        env.emu
            .set_fault(Fault::ReplyAccepted(br#"{"thingName":5}"#.to_vec()));
        let e = client
            .register_thing("FleetTemplate", &register_req("t", "1"))
            .await
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::BadReply, "{e}");
        assert!(client.is_connected());
        client.disconnect().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn one_mebibyte_reply_is_refused() {
    let env = Env::start().await;
    env.emu
        .set_fault(Fault::ReplyAccepted(vec![b'x'; 1024 * 1024]));
    // MQTT 3.1.1: the packet arrives; its length alone ends the connection, nothing is allocated.
    let client = Client::connect(env.claim_opts(MqttVersion::V311))
        .await
        .unwrap();
    let e = client.create_keys_and_certificate().await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::BadReply, "{e}");
    assert!(e.message.contains("limit"), "{e}");
    assert!(!client.is_connected());

    // MQTT 5: the client announced its maximum packet size, so the broker drops the reply.
    create_keys_times_out_still_connected(&env).await;
}

/// Over MQTT 5 with a 500 ms operation timeout, CreateKeysAndCertificate gets no usable reply:
/// it times out, and the connection stays up.
async fn create_keys_times_out_still_connected(env: &Env) {
    let mut opts = env.claim_opts(MqttVersion::V5);
    opts.operation_timeout = Duration::from_millis(500);
    let client = Client::connect(opts).await.unwrap();
    let e = client.create_keys_and_certificate().await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Timeout, "{e}");
    assert!(client.is_connected());
    client.disconnect().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn reply_on_an_unexpected_topic_is_ignored() {
    let env = Env::start().await;
    env.emu.set_fault(Fault::ReplyOnWrongTopic);
    create_keys_times_out_still_connected(&env).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn disconnect_cancels_pending_operations() {
    // Names a template the emulator does not serve: its 404 must come from the service.
    let env = Env::start_any_template().await;
    env.emu.set_fault(Fault::Silent);
    // The library's debug log says when the request goes out; a template name no other test
    // uses picks this test's request out of the process-wide log.
    let published = Arc::new(tokio::sync::Notify::new());
    let signal = published.clone();
    fleetprov::log::set_max_level(Level::Debug);
    fleetprov::log::set_logger(Some(Box::new(move |_, msg| {
        if msg.contains("PUBLISH $aws/provisioning-templates/CancelProbe/") {
            signal.notify_one();
        }
    })));
    let client = Client::connect(env.claim_opts(MqttVersion::V5))
        .await
        .unwrap();
    let pending = {
        let client = client.clone();
        tokio::spawn(async move {
            client
                .register_thing("CancelProbe", &register_req("t", "1"))
                .await
        })
    };
    tokio::time::timeout(Duration::from_secs(10), published.notified())
        .await
        .expect("the request was never published");
    fleetprov::log::set_logger(None);
    client.disconnect().await;
    let e = pending.await.unwrap().unwrap_err();
    assert_eq!(e.kind, ErrorKind::Cancelled, "{e}");
    assert!(!client.is_connected());
    let e = client.create_keys_and_certificate().await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Disconnected);
}

#[tokio::test(flavor = "multi_thread")]
async fn refused_connection_for_unregistered_certificate() {
    let env = Env::start().await;
    let client = Client::connect(env.claim_opts(MqttVersion::V5))
        .await
        .unwrap();
    let created = client.create_keys_and_certificate().await.unwrap();
    client.disconnect().await;
    // Never registered, so never activated: the broker refuses it.
    for version in VERSIONS {
        let mut opts = env.claim_opts(version);
        opts.credentials = Some(Credentials::pem(
            Pem::memory(&created.certificate_pem),
            Pem::memory(created.private_key.as_bytes()),
        ));
        let e = Client::connect(opts).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::ConnectionRefused, "{e}");
    }
}

/// How the first operation gives up in `late_reply_is_not_taken_by_the_next_operation`.
#[derive(Debug, Clone, Copy)]
enum GiveUp {
    /// The operation timeout fires.
    Timeout,
    /// The caller drops the future.
    Dropped,
}

/// A request is abandoned after the service has answered it but before the answer arrives;
/// the next request of the same kind must still get its own answer. A relay holds back what
/// the broker sends so the late answer is on its way, ahead of anything sent later, while
/// the second request starts.
async fn late_reply_is_not_taken_by_the_next_operation(version: MqttVersion, how: GiveUp) {
    let env = Env::start().await;
    let relay = start_relay(env.emu.port()).await;
    let mut opts = env.claim_opts(version);
    opts.port = relay.port;
    opts.operation_timeout = match how {
        GiveUp::Timeout => Duration::from_secs(3),
        GiveUp::Dropped => Duration::from_secs(20),
    };
    let client = Client::connect(opts).await.unwrap();
    // The reply subscriptions are in place from here on.
    client
        .create_certificate_from_csr(&make_csr("warm-up").pem)
        .await
        .unwrap();

    relay.hold();
    let first = {
        let client = client.clone();
        let csr = make_csr("first").pem;
        tokio::spawn(async move { client.create_certificate_from_csr(&csr).await })
    };
    // A certificate reply is far larger than a PUBACK: once this much is held, the service
    // has answered the first request.
    wait_until(
        "the first answer to reach the relay",
        Duration::from_secs(10),
        || relay.held() > 500,
    )
    .await;
    assert!(
        !first.is_finished(),
        "{version:?} {how:?}: answered through a hold"
    );
    match how {
        GiveUp::Timeout => {
            let e = first.await.unwrap().unwrap_err();
            assert_eq!(e.kind, ErrorKind::Timeout, "{e}");
        }
        GiveUp::Dropped => {
            first.abort();
            assert!(first.await.unwrap_err().is_cancelled());
        }
    }

    let sent_before = relay.sent_by_client();
    let csr = make_csr("second");
    let second = {
        let client = client.clone();
        let pem = csr.pem.clone();
        tokio::spawn(async move { client.create_certificate_from_csr(&pem).await })
    };
    // The client has acted on the second request (sent it, or the subscription change that
    // must come first) before the late answer is let through.
    wait_until("the client to send", Duration::from_secs(10), || {
        relay.sent_by_client() > sent_before
    })
    .await;
    relay.release();
    let created = second.await.unwrap().unwrap();
    let der = cert_der(&created.certificate_pem);
    let spki = csr.key.public_key_der();
    assert!(
        der.windows(spki.len()).any(|w| w == spki.as_slice()),
        "{version:?} {how:?}: the second request got the first one's certificate"
    );
    // The kind still works normally afterwards.
    let third = make_csr("third");
    let created = client
        .create_certificate_from_csr(&third.pem)
        .await
        .unwrap();
    let spki = third.key.public_key_der();
    assert!(cert_der(&created.certificate_pem)
        .windows(spki.len())
        .any(|w| w == spki.as_slice()));
    client.disconnect().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn late_reply_after_a_timeout_is_not_taken_by_the_next_operation() {
    for version in VERSIONS {
        late_reply_is_not_taken_by_the_next_operation(version, GiveUp::Timeout).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn late_reply_after_a_dropped_call_is_not_taken_by_the_next_operation() {
    for version in VERSIONS {
        late_reply_is_not_taken_by_the_next_operation(version, GiveUp::Dropped).await;
    }
}
