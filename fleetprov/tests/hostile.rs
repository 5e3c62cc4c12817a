//! The client against a broker that misbehaves on purpose, over real TLS on loopback.
//!
//! Each case scripts the server side (`testkit/src/hostile.rs`): it reads what the client
//! sends and answers with raw bytes. The session's protocol rules (each broker fault, its
//! error kind and words) are table-driven unit tests of the session's state machine
//! (`src/client/session/state_tests.rs`); what stays here is what only a socket shows: a reply
//! and the end of the connection in one TLS record or one read, bytes trickling one record at
//! a time, what goes out with the close, the driver's timer, a TLS HelloRetryRequest, and the
//! client's use of a subscription sent ahead.
//!
//! Error kinds are matched by their `ErrorKind::as_str()` names, so the file also compiles
//! where a kind does not exist yet: "protocol error" is `ErrorKind::Protocol` (the broker broke
//! MQTT and the client closed the connection) and "publish refused" is
//! `ErrorKind::PublishRefused` (a PUBACK refusing our PUBLISH). Messages are matched by
//! substrings, case-insensitively; reason names also match in their CamelCase spelling.
//!
//! Every case is bounded: the client's connect and operation timeouts are a few seconds (a
//! case that expects an immediate failure and gets "timed out" fails), and each case has a
//! backstop limit. Nothing here asserts a duration.

use fleetprov_testkit::hostile as broker;

use broker::*;
use fleetprov::client::{Client, ClientOptions, MqttVersion};
use fleetprov::protocol::RegisterThingRequest;
use fleetprov::Error;

const V5: MqttVersion = MqttVersion::V5;
const V311: MqttVersion = MqttVersion::V311;

/// Asserts the error's kind (by name) and that its message holds every needle (compared
/// squashed, see [`squash`]).
#[track_caller]
fn assert_error(e: &Error, kind: &str, needles: &[&str]) {
    assert_eq!(
        e.kind.as_str(),
        kind,
        "wrong kind; message: {:?}",
        e.message
    );
    let msg = squash(&e.message);
    for n in needles {
        assert!(
            msg.contains(&squash(n)),
            "message {:?} lacks {n:?}",
            e.message
        );
    }
}

#[derive(Clone, Copy, Debug)]
enum Op {
    CreateKeys,
    CreateFromCsr,
    Register,
}

/// A CSR-shaped string; the client sends it as it is.
fn fake_csr(len: usize) -> String {
    format!(
        "-----BEGIN CERTIFICATE REQUEST-----\n{}\n-----END CERTIFICATE REQUEST-----\n",
        "A".repeat(len)
    )
}

/// Runs one operation; returns the ownership token or the thing name.
async fn run(client: &Client, op: Op) -> Result<String, Error> {
    match op {
        Op::CreateKeys => client
            .create_keys_and_certificate()
            .await
            .map(|r| r.certificate_ownership_token),
        Op::CreateFromCsr => client
            .create_certificate_from_csr(&fake_csr(200))
            .await
            .map(|r| r.certificate_ownership_token),
        Op::Register => {
            let req = RegisterThingRequest {
                certificate_ownership_token: "hostile-token".into(),
                parameters: [("SerialNumber".to_owned(), "1".to_owned())].into(),
            };
            client
                .register_thing("FleetTemplate", &req)
                .await
                .map(|r| r.thing_name)
        }
    }
}

fn accepted_payload(op: Op) -> Vec<u8> {
    match op {
        Op::CreateKeys => create_keys_accepted(),
        Op::CreateFromCsr => br#"{"certificateId":"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef","certificatePem":"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n","certificateOwnershipToken":"hostile-token"}"#.to_vec(),
        Op::Register => register_accepted(),
    }
}

fn expected_value(op: Op) -> &'static str {
    match op {
        Op::Register => "HostileThing",
        _ => "hostile-token",
    }
}

/// Connects with `opts` and runs `op`; a connect failure is returned as the error.
async fn connect_and_run(opts: ClientOptions, op: Op) -> Result<String, Error> {
    let client = Client::connect(opts).await?;
    let r = run(&client, op).await;
    client.disconnect().await;
    r
}

// ---------- 1. a reply followed by the end of the connection ----------

#[derive(Clone, Copy, Debug)]
enum End {
    /// An MQTT 5 DISCONNECT (0x8B Server shutting down) in the same write as the reply.
    Disconnect,
    /// TLS close_notify and TCP FIN right after the write.
    CloseTls,
    /// TCP FIN without close_notify right after the write.
    CloseTcp,
}

/// The broker acknowledges the request, answers it on `/accepted` and ends the connection
/// in the same breath. The reply was fully received: the operation must succeed with it.
async fn reply_then_loss(version: MqttVersion, op: Op, end: End) {
    // Repeated: the loss races the reply inside the client, so one pass can pass by luck.
    for round in 0..3 {
        let b = Broker::start(move |mut c| async move {
            let v5 = version == V5;
            let (topic, pkid) = c.up_to_request(&connack_ok(v5)).await?;
            let mut out = puback(v5, pkid, None);
            out.extend(publish0(
                v5,
                &format!("{topic}/accepted"),
                &accepted_payload(op),
            ));
            if let End::Disconnect = end {
                out.extend(disconnect_v5(0x8b, &[0]));
            }
            c.send(&out).await?;
            match end {
                End::Disconnect => {}
                End::CloseTls => c.close_tls().await?,
                End::CloseTcp => c.close_tcp().await?,
            }
            Ok(())
        })
        .await;
        let got = connect_and_run(b.opts(version), op).await;
        match got {
            Ok(v) => assert_eq!(v, expected_value(op)),
            Err(e) => panic!("{op:?} {end:?} {version:?} round {round}: lost the reply: {e:?}"),
        }
        b.join().await;
    }
}

/// A reply and an MQTT 5 DISCONNECT in one TLS record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reply_then_disconnect_in_one_record() {
    bounded(reply_then_loss(V5, Op::CreateKeys, End::Disconnect)).await;
}

/// A reply, then close_notify and FIN.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reply_then_tls_close() {
    for version in [V5, V311] {
        bounded(reply_then_loss(version, Op::CreateKeys, End::CloseTls)).await;
    }
}

/// A reply, then FIN without close_notify.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reply_then_tcp_close() {
    for version in [V5, V311] {
        bounded(reply_then_loss(version, Op::Register, End::CloseTcp)).await;
    }
}

// ---------- 2. what arrives with CONNACK, and bytes one record at a time ----------

/// The connection ends right after CONNACK, in the same write. An operation started then
/// fails with "disconnected" and keeps the broker's reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loss_right_after_connack_keeps_the_cause() {
    bounded(async {
        let b = Broker::start(|mut c| async move {
            let mut out = connack_ok(true);
            out.extend(disconnect_v5(
                0x89,
                &props(&[prop::string(prop::REASON_STRING, "busy after CONNACK")]),
            ));
            c.accept_connect(&out).await?;
            c.hold_open().await
        })
        .await;
        let e = connect_and_run(b.opts(V5), Op::CreateKeys)
            .await
            .unwrap_err();
        assert_error(&e, "disconnected", &["server busy", "busy after CONNACK"]);
    })
    .await;
}

/// Every packet sent one byte per TLS record: framing across reads works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytewise_packets_are_reassembled() {
    for version in [V5, V311] {
        bounded(async {
            let b = Broker::start(move |mut c| async move {
                let v5 = version == V5;
                match c.next("CONNECT").await? {
                    In::Connect { .. } => {}
                    other => return Err(format!("expected CONNECT, got {other:?}")),
                }
                c.send_bytewise(&connack_ok(v5)).await?;
                let (pkid, filters) = c.expect_subscribe().await?;
                c.send_bytewise(&suback(v5, pkid, &vec![1; filters.len()]))
                    .await?;
                let (topic, pkid, _) = c.expect_publish().await?;
                let mut out = puback(v5, pkid, None);
                out.extend(publish0(
                    v5,
                    &format!("{topic}/accepted"),
                    &create_keys_accepted(),
                ));
                c.send_bytewise(&out).await?;
                c.hold_open().await
            })
            .await;
            let token = connect_and_run(b.opts(version), Op::CreateKeys)
                .await
                .unwrap();
            assert_eq!(token, "hostile-token");
        })
        .await;
    }
}

// ---------- RegisterThing's subscription sent ahead ----------

/// The PUBACK of the request `pkid` on `topic`, then its accepted reply for `op` at QoS 1 with
/// packet id `reply_pkid`, which the client owes a PUBACK for.
fn accepted_at_qos1(v5: bool, topic: &str, pkid: u16, reply_pkid: u16, op: Op) -> Vec<u8> {
    let mut out = puback(v5, pkid, None);
    out.extend(publish(
        v5,
        &format!("{topic}/accepted"),
        1,
        reply_pkid,
        &[0],
        &accepted_payload(op),
    ));
    out
}

/// A client naming the template that `run` registers with, on which `create` has succeeded.
async fn created_naming_the_template<T: Send + 'static>(b: &Broker<T>, create: Op) -> Client {
    let mut opts = b.opts(V5);
    opts.template_name = Some(fleetprov::TemplateName::new("FleetTemplate").unwrap());
    let client = Client::connect(opts).await.unwrap();
    assert_eq!(run(&client, create).await.unwrap(), expected_value(create));
    client
}

/// The next packet after a reply, skipping the reply's PUBACK.
async fn next_after_reply(c: &mut Conn, what: &str) -> Result<In, String> {
    loop {
        match c.next(what).await? {
            In::PubAck { .. } => {}
            other => return Ok(other),
        }
    }
}

/// With `template_name` set, the create operation's SUBSCRIBE also carries RegisterThing's
/// two reply filters, and RegisterThing then publishes without a SUBSCRIBE of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn template_name_subscribes_register_thing_with_the_create_operation() {
    bounded(async {
        let b = Broker::start(|mut c| async move {
            c.accept_connect(&connack_ok(true)).await?;
            let filters = c.grant_subscribe().await?;
            let register = "$aws/provisioning-templates/FleetTemplate/provision/json";
            let want = [
                "$aws/certificates/create-from-csr/json/accepted".to_owned(),
                "$aws/certificates/create-from-csr/json/rejected".to_owned(),
                format!("{register}/accepted"),
                format!("{register}/rejected"),
            ];
            if filters != want {
                return Err(format!("SUBSCRIBE filters {filters:?}, expected {want:?}"));
            }
            let (topic, pkid, _) = c.expect_publish().await?;
            c.send(&accepted_at_qos1(
                true,
                &topic,
                pkid,
                4001,
                Op::CreateFromCsr,
            ))
            .await?;
            match next_after_reply(&mut c, "the RegisterThing PUBLISH").await? {
                In::Publish { topic, pkid, .. } if topic == register => {
                    c.send(&accepted_at_qos1(true, &topic, pkid, 4002, Op::Register))
                        .await?;
                }
                other => return Err(format!("expected the RegisterThing PUBLISH, got {other:?}")),
            }
            c.hold_open().await
        })
        .await;
        let client = created_naming_the_template(&b, Op::CreateFromCsr).await;
        assert_eq!(
            run(&client, Op::Register).await.unwrap(),
            expected_value(Op::Register)
        );
        client.disconnect().await;
        b.join().await;
    })
    .await;
}

/// A SUBACK that grants the create operation's filters and refuses RegisterThing's: the create
/// operation succeeds, and RegisterThing subscribes again and reports its own refusal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_register_filters_fail_only_register_thing() {
    bounded(async {
        let b = Broker::start(|mut c| async move {
            c.accept_connect(&connack_ok(true)).await?;
            let (pkid, filters) = c.expect_subscribe().await?;
            if filters.len() != 4 {
                return Err(format!("expected 4 filters, got {filters:?}"));
            }
            c.send(&suback(true, pkid, &[1, 1, 0x87, 0x87])).await?;
            let (topic, pkid, _) = c.expect_publish().await?;
            c.send(&accepted_at_qos1(true, &topic, pkid, 4001, Op::CreateKeys))
                .await?;
            match next_after_reply(&mut c, "RegisterThing's own SUBSCRIBE").await? {
                In::Subscribe { pkid, filters } if filters.len() == 2 => {
                    c.send(&suback(true, pkid, &[0x87, 0x87])).await?;
                }
                other => return Err(format!("expected a SUBSCRIBE of 2 filters, got {other:?}")),
            }
            c.hold_open().await
        })
        .await;
        let client = created_naming_the_template(&b, Op::CreateKeys).await;
        let e = run(&client, Op::Register).await.unwrap_err();
        assert_eq!(e.kind.as_str(), "subscription refused", "{e:?}");
        assert!(e.message.contains("FleetTemplate"), "{e:?}");
        client.disconnect().await;
        b.join().await;
    })
    .await;
}

// ---------- acknowledgements of replies ----------

/// The broker answers with a QoS 1 reply and then waits for its PUBACK. `then_disconnect`:
/// the client disconnects at once after the reply (the PUBACK must come before DISCONNECT);
/// otherwise the client stays connected and sends nothing more (the PUBACK must still come).
async fn reply_is_acknowledged(version: MqttVersion, then_disconnect: bool) {
    let v5 = version == V5;
    let b = Broker::start(move |mut c| async move {
        let (topic, pkid) = c.up_to_request(&connack_ok(v5)).await?;
        c.send(&accepted_at_qos1(v5, &topic, pkid, 4242, Op::CreateKeys))
            .await?;
        match c.next("PUBACK of the reply").await? {
            In::PubAck { pkid: 4242 } => {}
            other => return Err(format!("expected PUBACK 4242, got {other:?}")),
        }
        if then_disconnect {
            match c.next("DISCONNECT").await? {
                In::Disconnect => {}
                other => return Err(format!("expected DISCONNECT, got {other:?}")),
            }
        }
        Ok(())
    })
    .await;
    let client = Client::connect(b.opts(version)).await.unwrap();
    let got = run(&client, Op::CreateKeys).await.unwrap();
    assert_eq!(got, expected_value(Op::CreateKeys));
    if then_disconnect {
        client.disconnect().await;
        b.join().await;
    } else {
        // Connected and silent until the broker has seen the PUBACK.
        b.join().await;
        client.disconnect().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reply_acknowledged_while_the_client_is_idle_mqtt5() {
    bounded(reply_is_acknowledged(V5, false)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reply_acknowledged_before_an_immediate_disconnect() {
    bounded(reply_is_acknowledged(V5, true)).await;
}

// ---------- a broker without the client's key exchange group ----------

/// The client's one key share is for P-256; a server without P-256 asks for X25519 (TLS 1.3
/// HelloRetryRequest) and the connection goes on with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_without_p256_gets_x25519() {
    bounded(async {
        let mut provider = rustls::crypto::ring::default_provider();
        provider
            .kx_groups
            .retain(|g| g.name() == rustls::NamedGroup::X25519);
        let b = Broker::start_with(provider, |mut c| async move {
            c.accept_connect(&connack_ok(true)).await?;
            let group = c.kx_group();
            c.hold_open().await?;
            Ok(group)
        })
        .await;
        let client = Client::connect(b.opts(V5)).await.unwrap();
        client.disconnect().await;
        assert_eq!(b.join().await, Some(rustls::NamedGroup::X25519));
    })
    .await;
}
