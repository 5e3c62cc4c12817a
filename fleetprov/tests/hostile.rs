//! The client against a broker that misbehaves on purpose, over real TLS on loopback.
//!
//! Each case scripts the server side (`tests/hostile/broker.rs`): it reads what the client
//! sends and answers with raw bytes. The expected outcome is that of the client's own MQTT
//! session: every packet received before the connection ended is acted on, each broker fault
//! is reported with its own error kind and the broker's reason, and nothing waits for a
//! timeout that a packet already answered.
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

use std::time::Duration;

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

/// The broker answers an MQTT 5 CONNECT with `connack` and keeps the socket open: the connect
/// must fail at once with `kind` and every needle in its message.
async fn connack_fails_the_connect(connack: Vec<u8>, kind: &str, needles: &[&str]) {
    bounded(async {
        let b = Broker::start(move |mut c| async move {
            c.accept_connect(&connack).await?;
            c.hold_open().await
        })
        .await;
        let e = connect_and_run(b.opts(V5), Op::CreateKeys)
            .await
            .unwrap_err();
        assert_error(&e, kind, needles);
    })
    .await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_keys_reply_then_disconnect_mqtt5() {
    bounded(reply_then_loss(V5, Op::CreateKeys, End::Disconnect)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_reply_then_disconnect_mqtt5() {
    bounded(reply_then_loss(V5, Op::Register, End::Disconnect)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_keys_reply_then_tls_close_mqtt5() {
    bounded(reply_then_loss(V5, Op::CreateKeys, End::CloseTls)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_keys_reply_then_tls_close_mqtt311() {
    bounded(reply_then_loss(V311, Op::CreateKeys, End::CloseTls)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_reply_then_tls_close_mqtt5() {
    bounded(reply_then_loss(V5, Op::Register, End::CloseTls)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_reply_then_tls_close_mqtt311() {
    bounded(reply_then_loss(V311, Op::Register, End::CloseTls)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_keys_reply_then_tcp_close_mqtt5() {
    bounded(reply_then_loss(V5, Op::CreateKeys, End::CloseTcp)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_keys_reply_then_tcp_close_mqtt311() {
    bounded(reply_then_loss(V311, Op::CreateKeys, End::CloseTcp)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_reply_then_tcp_close_mqtt5() {
    bounded(reply_then_loss(V5, Op::Register, End::CloseTcp)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_reply_then_tcp_close_mqtt311() {
    bounded(reply_then_loss(V311, Op::Register, End::CloseTcp)).await;
}

// ---------- 2. topic aliases (the client allows none) ----------

/// The client announces no topic aliases (Topic Alias Maximum absent or 0), so a PUBLISH with
/// a Topic Alias is a protocol error: the operation fails at once. The flood version, with a
/// memory bound, is in `tests/hostile_memory.rs`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_alias_is_a_protocol_error() {
    bounded(async {
        let b = Broker::start(|mut c| async move {
            let connect = c.accept_connect(&connack_ok(true)).await?;
            let In::Connect {
                topic_alias_max, ..
            } = connect
            else {
                unreachable!()
            };
            c.grant_subscribe().await?;
            let (topic, pkid, _) = c.expect_publish().await?;
            c.send(&puback(true, pkid, None)).await?;
            let aliased = props(&[prop::u16(prop::TOPIC_ALIAS, 1)]);
            c.send(&publish(
                true,
                &format!("{topic}/accepted"),
                0,
                0,
                &aliased,
                &create_keys_accepted(),
            ))
            .await?;
            c.hold_open().await?;
            Ok(topic_alias_max)
        })
        .await;
        let e = connect_and_run(b.opts(V5), Op::CreateKeys)
            .await
            .unwrap_err();
        assert_error(&e, "protocol error", &["alias"]);
        let announced = b.join().await;
        assert!(
            matches!(announced, None | Some(0)),
            "client announced Topic Alias Maximum {announced:?}"
        );
    })
    .await;
}

// ---------- 3. Server Keep Alive ----------

/// Runs CreateKeys against a broker whose CONNACK carries `server_keep_alive` and that holds
/// the reply back for `delay` (the scenario: a slow service). Returns the PINGREQs it saw.
async fn pings_while_waiting(
    server_keep_alive: u16,
    client_keep_alive: u64,
    delay: Duration,
) -> usize {
    let b = Broker::start(move |mut c| async move {
        let ack = connack(
            true,
            &props(&[prop::u16(prop::SERVER_KEEP_ALIVE, server_keep_alive)]),
        );
        let (topic, pkid) = c.up_to_request(&ack).await?;
        c.send(&puback(true, pkid, None)).await?;
        c.idle_for(delay).await?;
        c.send(&publish0(
            true,
            &format!("{topic}/accepted"),
            &create_keys_accepted(),
        ))
        .await?;
        let pings = c.pings;
        c.hold_open().await?;
        Ok(pings)
    })
    .await;
    let mut opts = b.opts(V5);
    opts.keep_alive = Duration::from_secs(client_keep_alive);
    let token = connect_and_run(opts, Op::CreateKeys).await.unwrap();
    assert_eq!(token, "hostile-token");
    b.join().await
}

/// Server Keep Alive 0 turns keep-alive off: the client must not ping at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_keep_alive_zero_means_no_pings() {
    bounded(async {
        let pings = pings_while_waiting(0, 5, Duration::from_millis(1500)).await;
        assert_eq!(pings, 0, "PINGREQs with keep-alive off");
    })
    .await;
}

/// A Server Keep Alive of 1 s under the client's 30 s is the interval to use: over a 3 s wait
/// the client pings, and at most about once a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smaller_server_keep_alive_is_honoured() {
    bounded(async {
        let pings = pings_while_waiting(1, 30, Duration::from_secs(3)).await;
        assert!(
            (1..=4).contains(&pings),
            "{pings} PINGREQs over a 3 s wait with a 1 s keep-alive"
        );
    })
    .await;
}

// ---------- 4. CONNACK limits ----------

/// Receive Maximum 0 is a protocol error (MQTT 5 3.2.2.3.3): connecting fails at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receive_maximum_zero_fails_the_connect() {
    let connack = connack(true, &props(&[prop::u16(prop::RECEIVE_MAXIMUM, 0)]));
    connack_fails_the_connect(connack, "protocol error", &["Receive Maximum"]).await;
}

/// A broker whose Maximum Packet Size is below the request: the operation fails at once as a
/// publish the broker refuses (not as a bad argument), with the broker's limit in the message,
/// and nothing over the limit is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_maximum_packet_size_is_respected() {
    bounded(async {
        const LIMIT: u32 = 300;
        let b = broker_with_maximum_packet_size(LIMIT).await;
        let client = Client::connect(b.opts(V5)).await.unwrap();
        let e = client
            .create_certificate_from_csr(&fake_csr(600))
            .await
            .unwrap_err();
        client.disconnect().await;
        assert_error(
            &e,
            "publish refused",
            &[&LIMIT.to_string(), "Maximum Packet Size", "PUBLISH"],
        );
        let largest = b.join().await;
        assert!(
            largest <= LIMIT as usize,
            "the client sent a {largest}-byte packet to a broker that takes {LIMIT}"
        );
    })
    .await;
}

/// A Maximum Packet Size below even the reply topics' SUBSCRIBE: a refused subscription.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_maximum_packet_size_below_the_subscribe() {
    bounded(async {
        const LIMIT: u32 = 60;
        let b = broker_with_maximum_packet_size(LIMIT).await;
        let client = Client::connect(b.opts(V5)).await.unwrap();
        let e = client.create_keys_and_certificate().await.unwrap_err();
        client.disconnect().await;
        assert_error(
            &e,
            "subscription refused",
            &[&LIMIT.to_string(), "Maximum Packet Size", "SUBSCRIBE"],
        );
        let largest = b.join().await;
        assert!(largest <= LIMIT as usize, "{largest}-byte packet sent");
    })
    .await;
}

// ---------- 5. short forms ----------

/// A 3.1.1-only broker answers the MQTT 5 CONNECT with the 4-byte CONNACK "unacceptable
/// protocol version" (0x01).
async fn v311_only_broker(keep_open: bool) {
    let b = Broker::start(move |mut c| async move {
        c.accept_connect(&[0x20, 0x02, 0x00, 0x01]).await?;
        if keep_open {
            c.hold_open().await
        } else {
            c.close_tls().await
        }
    })
    .await;
    let e = connect_and_run(b.opts(V5), Op::CreateKeys)
        .await
        .unwrap_err();
    assert_error(&e, "connection refused", &["MQTT 5", "3.1.1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v311_only_broker_then_close() {
    bounded(v311_only_broker(false)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v311_only_broker_socket_kept_open() {
    bounded(v311_only_broker(true)).await;
}

/// An MQTT 5 DISCONNECT carrying only its reason code (remaining length 1), the socket left
/// open: the pending operation fails at once with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_disconnect_with_socket_open() {
    bounded(async {
        let b = Broker::start(|mut c| async move {
            let (_, pkid) = c.up_to_request(&connack_ok(true)).await?;
            c.send(&puback(true, pkid, None)).await?;
            c.send(&[0xe0, 0x01, 0x8b]).await?;
            c.hold_open().await
        })
        .await;
        let e = connect_and_run(b.opts(V5), Op::CreateKeys)
            .await
            .unwrap_err();
        assert_error(&e, "disconnected", &["server shutting down"]);
    })
    .await;
}

/// The shortest DISCONNECT of all (remaining length 0: Normal disconnection), socket open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_disconnect_with_socket_open() {
    bounded(async {
        let b = Broker::start(|mut c| async move {
            let (_, pkid) = c.up_to_request(&connack_ok(true)).await?;
            c.send(&puback(true, pkid, None)).await?;
            c.send(&[0xe0, 0x00]).await?;
            c.hold_open().await
        })
        .await;
        let e = connect_and_run(b.opts(V5), Op::CreateKeys)
            .await
            .unwrap_err();
        assert_error(&e, "disconnected", &[]);
    })
    .await;
}

// ---------- 6. error reports ----------

/// A malformed packet (PUBLISH with QoS bits 11) makes the client close the connection as a
/// protocol error, and the operation says so (not "cancelled", not "disconnected").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_packet_is_a_protocol_error() {
    for version in [V5, V311] {
        bounded(async {
            let b = Broker::start(move |mut c| async move {
                let v5 = version == V5;
                let (topic, pkid) = c.up_to_request(&connack_ok(v5)).await?;
                c.send(&puback(v5, pkid, None)).await?;
                let mut bad = publish0(v5, &format!("{topic}/accepted"), b"{}");
                bad[0] = 0x36;
                c.send(&bad).await?;
                c.hold_open().await
            })
            .await;
            let e = connect_and_run(b.opts(version), Op::CreateKeys)
                .await
                .unwrap_err();
            assert_error(&e, "protocol error", &[]);
        })
        .await;
    }
}

/// A PUBACK with 0x87 Not authorized refuses the request: its own kind, the reason in words.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn puback_not_authorized_is_publish_refused() {
    bounded(async {
        let b = Broker::start(|mut c| async move {
            let (_, pkid) = c.up_to_request(&connack_ok(true)).await?;
            c.send(&puback(true, pkid, Some(0x87))).await?;
            c.hold_open().await
        })
        .await;
        let e = connect_and_run(b.opts(V5), Op::CreateKeys)
            .await
            .unwrap_err();
        assert_eq!(e.kind.as_str(), "publish refused", "{e:?}");
        assert!(
            e.message.to_lowercase().contains("not authorized"),
            "{:?}",
            e.message
        );
        assert!(e.rejection.is_none());
    })
    .await;
}

/// Same refusal on a plain publish.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn puback_refusal_on_publish() {
    bounded(async {
        let b = Broker::start(|mut c| async move {
            c.accept_connect(&connack_ok(true)).await?;
            let (_, pkid, _) = c.expect_publish().await?;
            c.send(&puback(true, pkid, Some(0x87))).await?;
            c.hold_open().await
        })
        .await;
        let client = Client::connect(b.opts(V5)).await.unwrap();
        let e = client.publish("devices/1/hello", b"hi").await.unwrap_err();
        client.disconnect().await;
        assert_eq!(e.kind.as_str(), "publish refused", "{e:?}");
        assert!(e.message.to_lowercase().contains("not authorized"));
    })
    .await;
}

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loss_right_after_connack_mqtt311() {
    bounded(async {
        let b = Broker::start(|mut c| async move {
            c.accept_connect(&connack_ok(false)).await?;
            c.close_tls().await
        })
        .await;
        let e = connect_and_run(b.opts(V311), Op::CreateKeys)
            .await
            .unwrap_err();
        assert_error(&e, "disconnected", &["closed"]);
    })
    .await;
}

/// Answers the request with `payload` on `/accepted` or `/rejected`.
async fn answer_with(
    version: MqttVersion,
    op: Op,
    accepted: bool,
    payload: Vec<u8>,
) -> Result<String, Error> {
    let b = Broker::start(move |mut c| async move {
        let v5 = version == V5;
        let (topic, pkid) = c.up_to_request(&connack_ok(v5)).await?;
        let which = if accepted { "accepted" } else { "rejected" };
        let mut out = puback(v5, pkid, None);
        out.extend(publish0(v5, &format!("{topic}/{which}"), &payload));
        c.send(&out).await?;
        c.hold_open().await
    })
    .await;
    connect_and_run(b.opts(version), op).await
}

/// A `statusCode` that no HTTP status can be is a bad reply, not a rejection with a made-up
/// number.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_range_status_code_is_a_bad_reply() {
    for code in ["99999999999", "-1", "4.5e2"] {
        bounded(async {
            let payload = format!(
                r#"{{"statusCode":{code},"errorCode":"InvalidRequest","errorMessage":"x"}}"#
            );
            let e = answer_with(V5, Op::Register, false, payload.into_bytes())
                .await
                .unwrap_err();
            assert_error(&e, "bad reply", &["statusCode"]);
        })
        .await;
    }
}

/// An accepted reply with an empty ownership token or certificate id is unusable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_token_or_certificate_id_is_a_bad_reply() {
    for (id, token, field) in [
        (CERT_ID, "", "certificateOwnershipToken"),
        ("", "hostile-token", "certificateId"),
    ] {
        bounded(async {
            let e = answer_with(V5, Op::CreateKeys, true, create_keys_accepted_with(id, token))
                .await
                .unwrap_err();
            assert_error(&e, "bad reply", &[field]);
            let csr_reply = format!(
                r#"{{"certificateId":"{id}","certificatePem":"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n","certificateOwnershipToken":"{token}"}}"#
            );
            let e = answer_with(V5, Op::CreateFromCsr, true, csr_reply.into_bytes())
                .await
                .unwrap_err();
            assert_error(&e, "bad reply", &[field]);
        })
        .await;
    }
}

/// RegisterThing accepted without a thing name cannot be used either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_thing_name_is_a_bad_reply() {
    bounded(async {
        let e = answer_with(
            V5,
            Op::Register,
            true,
            br#"{"thingName":"","deviceConfiguration":{}}"#.to_vec(),
        )
        .await
        .unwrap_err();
        assert_error(&e, "bad reply", &["thingName"]);
    })
    .await;
}

// ---------- more of what a hostile broker tries ----------

/// Not MQTT at all where the CONNACK belongs (an HTTP error page), socket left open: the
/// first byte is already no valid packet (type 4 with flags 8).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_instead_of_connack() {
    bounded(async {
        let b = Broker::start(|mut c| async move {
            c.accept_connect(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                .await?;
            c.hold_open().await
        })
        .await;
        let e = connect_and_run(b.opts(V5), Op::CreateKeys)
            .await
            .unwrap_err();
        assert_error(&e, "protocol error", &[]);
    })
    .await;
}

/// A PUBLISH announcing the largest remaining length MQTT can encode (256 MiB), then a
/// trickle: refused from its header, not read or buffered, and not waited for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_remaining_length_is_refused_from_the_header() {
    for version in [V5, V311] {
        bounded(async {
            let b = Broker::start(move |mut c| async move {
                let (_, pkid) = c.up_to_request(&connack_ok(version == V5)).await?;
                c.send(&puback(version == V5, pkid, None)).await?;
                c.send(&[0x30, 0xff, 0xff, 0xff, 0x7f, 0x00, 0x05, b'a'])
                    .await?;
                c.hold_open().await
            })
            .await;
            let e = connect_and_run(b.opts(version), Op::CreateKeys)
                .await
                .unwrap_err();
            assert!(
                matches!(e.kind.as_str(), "protocol error" | "bad reply"),
                "{version:?}: {e:?}"
            );
            assert!(
                e.message.contains("268435460") || e.message.contains("limit"),
                "{e:?}"
            );
        })
        .await;
    }
}

/// A remaining length of five bytes is malformed (MQTT allows four).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_byte_remaining_length_is_a_protocol_error() {
    bounded(async {
        let b = Broker::start(|mut c| async move {
            let (_, pkid) = c.up_to_request(&connack_ok(true)).await?;
            c.send(&puback(true, pkid, None)).await?;
            c.send(&[0x30, 0xff, 0xff, 0xff, 0xff, 0x01]).await?;
            c.hold_open().await
        })
        .await;
        let e = connect_and_run(b.opts(V5), Op::CreateKeys)
            .await
            .unwrap_err();
        assert_error(&e, "protocol error", &[]);
    })
    .await;
}

/// A SUBACK for a packet id the client never used: a broker answering what was never asked
/// is broken, and the client closes the connection as a protocol error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suback_for_unknown_packet_id_is_a_protocol_error() {
    for version in [V5, V311] {
        bounded(async {
            let b = Broker::start(move |mut c| async move {
                let v5 = version == V5;
                c.accept_connect(&connack_ok(v5)).await?;
                let (pkid, filters) = c.expect_subscribe().await?;
                c.send(&suback(v5, pkid.wrapping_add(100), &vec![1; filters.len()]))
                    .await?;
                c.hold_open().await
            })
            .await;
            let e = connect_and_run(b.opts(version), Op::CreateKeys)
                .await
                .unwrap_err();
            assert_error(&e, "protocol error", &["SUBACK"]);
        })
        .await;
    }
}

/// Same for a PUBACK for a packet id the client never used.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn puback_for_unknown_packet_id_is_a_protocol_error() {
    for version in [V5, V311] {
        bounded(async {
            let b = Broker::start(move |mut c| async move {
                let v5 = version == V5;
                let (_, pkid) = c.up_to_request(&connack_ok(v5)).await?;
                c.send(&puback(v5, pkid.wrapping_add(100), None)).await?;
                c.hold_open().await
            })
            .await;
            let e = connect_and_run(b.opts(version), Op::CreateKeys)
                .await
                .unwrap_err();
            assert_error(&e, "protocol error", &["PUBACK"]);
        })
        .await;
    }
}

/// Messages on topics nobody subscribed to, before and around the reply: ignored; the reply
/// still counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_on_unrequested_topics_is_ignored() {
    for version in [V5, V311] {
        bounded(async {
            let b = Broker::start(move |mut c| async move {
                let v5 = version == V5;
                let (topic, pkid) = c.up_to_request(&connack_ok(v5)).await?;
                let mut out = publish0(v5, "not/yours", b"noise");
                // The other operation's reply topic: subscribed to by nobody either.
                out.extend(publish0(
                    v5,
                    "$aws/certificates/create-from-csr/json/accepted",
                    b"{}",
                ));
                out.extend(puback(v5, pkid, None));
                out.extend(publish0(v5, "not/yours/either", b"noise"));
                out.extend(publish0(
                    v5,
                    &format!("{topic}/accepted"),
                    &create_keys_accepted(),
                ));
                c.send(&out).await?;
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

/// The reply at QoS 2, above the QoS 1 the client subscribed with: a protocol error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos2_publish_is_a_protocol_error() {
    bounded(async {
        let b = Broker::start(|mut c| async move {
            let (topic, pkid) = c.up_to_request(&connack_ok(true)).await?;
            let mut out = puback(true, pkid, None);
            out.extend(publish(
                true,
                &format!("{topic}/accepted"),
                2,
                7,
                &[0],
                &create_keys_accepted(),
            ));
            c.send(&out).await?;
            c.hold_open().await
        })
        .await;
        let e = connect_and_run(b.opts(V5), Op::CreateKeys)
            .await
            .unwrap_err();
        assert_error(&e, "protocol error", &["QoS"]);
    })
    .await;
}

/// A second CONNACK on an established connection is a protocol error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_connack_is_a_protocol_error() {
    for version in [V5, V311] {
        bounded(async {
            let b = Broker::start(move |mut c| async move {
                let v5 = version == V5;
                c.accept_connect(&connack_ok(v5)).await?;
                c.expect_subscribe().await?;
                c.send(&connack_ok(v5)).await?;
                c.hold_open().await
            })
            .await;
            let e = connect_and_run(b.opts(version), Op::CreateKeys)
                .await
                .unwrap_err();
            assert_error(&e, "protocol error", &["CONNACK"]);
        })
        .await;
    }
}

/// Session Present 1 in answer to a clean start is a protocol error (MQTT 5 3.2.2.1.1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_present_after_clean_start_is_a_protocol_error() {
    let connack = vec![0x20, 0x03, 0x01, 0x00, 0x00];
    connack_fails_the_connect(connack, "protocol error", &["session"]).await;
}

/// An AUTH packet nobody asked for (the CONNECT had no authentication method).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsolicited_auth_is_a_protocol_error() {
    bounded(async {
        let b = Broker::start(|mut c| async move {
            let (_, pkid) = c.up_to_request(&connack_ok(true)).await?;
            let mut out = puback(true, pkid, None);
            out.extend([0xf0, 0x02, 0x18, 0x00]);
            c.send(&out).await?;
            c.hold_open().await
        })
        .await;
        let e = connect_and_run(b.opts(V5), Op::CreateKeys)
            .await
            .unwrap_err();
        assert_error(&e, "protocol error", &[]);
    })
    .await;
}

/// A PUBLISH with an empty topic and no alias (MQTT 5) is malformed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_topic_publish_is_a_protocol_error() {
    bounded(async {
        let b = Broker::start(|mut c| async move {
            let (_, pkid) = c.up_to_request(&connack_ok(true)).await?;
            let mut out = puback(true, pkid, None);
            out.extend(publish0(true, "", &create_keys_accepted()));
            c.send(&out).await?;
            c.hold_open().await
        })
        .await;
        let e = connect_and_run(b.opts(V5), Op::CreateKeys)
            .await
            .unwrap_err();
        assert_error(&e, "protocol error", &[]);
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

/// The reply overtakes the PUBACK (both in one write): the operation takes the reply.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reply_before_puback() {
    for version in [V5, V311] {
        bounded(async {
            let b = Broker::start(move |mut c| async move {
                let v5 = version == V5;
                let (topic, pkid) = c.up_to_request(&connack_ok(v5)).await?;
                let mut out = publish0(v5, &format!("{topic}/accepted"), &create_keys_accepted());
                out.extend(puback(v5, pkid, None));
                c.send(&out).await?;
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

/// A SUBACK refusing with 0x87 Not authorized: "subscription refused" with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suback_refusal_names_the_reason() {
    bounded(async {
        let b = Broker::start(|mut c| async move {
            c.accept_connect(&connack_ok(true)).await?;
            let (pkid, _) = c.expect_subscribe().await?;
            c.send(&suback(true, pkid, &[0x01, 0x87])).await?;
            c.hold_open().await
        })
        .await;
        let e = connect_and_run(b.opts(V5), Op::CreateKeys)
            .await
            .unwrap_err();
        assert_error(&e, "subscription refused", &["not authorized", "rejected"]);
    })
    .await;
}

/// A SUBACK with fewer reason codes than filters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_suback_is_a_bad_reply() {
    bounded(async {
        let b = Broker::start(|mut c| async move {
            c.accept_connect(&connack_ok(true)).await?;
            let (pkid, _) = c.expect_subscribe().await?;
            c.send(&suback(true, pkid, &[0x01])).await?;
            c.hold_open().await
        })
        .await;
        let e = connect_and_run(b.opts(V5), Op::CreateKeys)
            .await
            .unwrap_err();
        assert!(
            matches!(e.kind.as_str(), "bad reply" | "protocol error"),
            "{e:?}"
        );
    })
    .await;
}

/// CONNACK refusing with 0x87 Not authorized and a reason string: both reach the user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connack_refusal_names_the_reason() {
    let mut body = vec![0x00, 0x87];
    body.extend(props(&[prop::string(prop::REASON_STRING, "claim revoked")]));
    let needles = ["not authorized", "claim revoked"];
    connack_fails_the_connect(packet(0x20, &body), "connection refused", &needles).await;
}

/// CONNACK Maximum Packet Size 0 is a protocol error (MQTT 5 3.2.2.3.6: zero is not allowed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maximum_packet_size_zero_fails_the_connect() {
    let connack = connack(true, &props(&[prop::u32(prop::MAXIMUM_PACKET_SIZE, 0)]));
    connack_fails_the_connect(connack, "protocol error", &["Maximum Packet Size"]).await;
}

/// A SUBSCRIBE sent to the client (only clients subscribe): a protocol error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_from_the_broker_is_a_protocol_error() {
    for version in [V5, V311] {
        bounded(async {
            let b = Broker::start(move |mut c| async move {
                let v5 = version == V5;
                let (_, pkid) = c.up_to_request(&connack_ok(v5)).await?;
                let mut out = puback(v5, pkid, None);
                let mut body = 9u16.to_be_bytes().to_vec();
                if v5 {
                    body.push(0);
                }
                body.extend(mqtt_str("#"));
                body.push(1);
                out.extend(packet(0x82, &body));
                c.send(&out).await?;
                c.hold_open().await
            })
            .await;
            let e = connect_and_run(b.opts(version), Op::CreateKeys)
                .await
                .unwrap_err();
            assert_error(&e, "protocol error", &["SUBSCRIBE"]);
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
async fn reply_acknowledged_while_the_client_is_idle_mqtt311() {
    bounded(reply_is_acknowledged(V311, false)).await;
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
