//! The session's protocol rules, one table row each: a protocol version, what arrives (bytes,
//! in reads as the socket would hand them over), the owner's commands and the time, and what
//! the machine must do about it, as a transcript:
//!
//! - `> A, B` one write holding packets A and B (`PUBLISH 2 topic`, `PUBACK 7`, `DISCONNECT
//!   0x94`, ...);
//! - `label: outcome` what a waiter is handed (`pub: ok`, `sub: [granted, refused ...]`,
//!   `reply: accepted topic`, `reply: disconnected: ...`);
//! - `connected`, `t=1000ms` (time moved on), and last `end: <kind>: <message>`.
//!
//! A row's expectations are substrings found in that order in the transcript (several may be
//! on one line); one starting with `!` must appear nowhere, one starting with `=1:` on exactly
//! one line. The rows cover what `tests/hostile.rs` once scripted over TLS
//! for each rule (the case names are kept in the rows' names); what only a socket shows is
//! still tested there.

use std::time::{Duration, Instant};

use bytes::BytesMut;

use super::*;
use crate::client::options::MqttVersion::{self, V311, V5};

struct Labels;

impl Waiters for Labels {
    type Sub = &'static str;
    type Pub = &'static str;
    type Reply = &'static str;
}

const EP: &str = "broker.test:8883";
/// The request topic of the standard exchange.
const T: &str = "$aws/certificates/create/json";

enum Step {
    /// One read's worth of bytes from the broker.
    In(Vec<u8>),
    /// The same, one byte per read.
    Bytewise(Vec<u8>),
    /// The broker closed its side.
    Eof,
    Sub(&'static str, Vec<String>),
    Pub(&'static str, &'static str, usize),
    /// A reply slot for `T`'s two reply topics; `true`: every message.
    Expect(&'static str, bool),
    /// Forgets the `n`-th reply slot (from 0).
    Forget(u64),
    Unsub(&'static str),
    Disconnect,
    /// Time moves on by this many milliseconds; the machine is woken when it asked to be.
    After(u64),
}
use Step::*;

/// Runs `steps` against a fresh machine (keep-alive 30 s asked) and returns the transcript.
fn run(version: MqttVersion, steps: Vec<Step>) -> Vec<String> {
    let t0 = Instant::now();
    let mut now = t0;
    let mut m = Machine::<Labels>::new(version, EP.to_owned(), 30, now);
    m.connect("device-1").unwrap();
    let mut log = Vec::new();
    transmit(&mut m, now, &mut log);
    let mut rbuf = BytesMut::new();
    let mut slots = 0;
    for step in steps {
        let r = match step {
            In(bytes) => {
                rbuf.extend_from_slice(&bytes);
                feed(&mut m, &mut rbuf, now, &mut log)
            }
            Bytewise(bytes) => bytes.iter().try_for_each(|b| {
                rbuf.extend_from_slice(&[*b]);
                feed(&mut m, &mut rbuf, now, &mut log)
            }),
            Eof => Err(m.eof(!rbuf.is_empty())),
            Sub(to, filters) => m.command(Command::Subscribe(filters, to)),
            Pub(to, topic, len) => m.command(Command::Publish(
                topic.to_owned(),
                vec![b'x'; len].into(),
                to,
            )),
            Expect(to, many) => {
                slots += 1;
                m.command(Command::ExpectReply {
                    slot: slots - 1,
                    accepted: format!("{T}/accepted"),
                    rejected: format!("{T}/rejected"),
                    many,
                    to,
                })
            }
            Forget(slot) => m.command(Command::ForgetReply(slot)),
            Unsub(filter) => m.command(Command::Unsubscribe(vec![filter.to_owned()])),
            Disconnect => m.command(Command::Disconnect),
            After(ms) => {
                let until = now + Duration::from_millis(ms);
                let mut r = Ok(());
                while let Some(at) = m.next_wake().filter(|&at| at <= until) {
                    now = at;
                    r = m.wake(now);
                    if r.is_err() {
                        break;
                    }
                    transmit(&mut m, now, &mut log);
                }
                if r.is_ok() {
                    now = until;
                    log.push(format!("t={}ms", (now - t0).as_millis()));
                }
                r
            }
        };
        events(&mut m, &mut log);
        match r {
            Ok(()) => transmit(&mut m, now, &mut log),
            Err(end) => {
                m.finish(&end);
                events(&mut m, &mut log);
                transmit(&mut m, now, &mut log);
                log.push(format!("end: {}: {}", end.error.kind, end.error.message));
                return log;
            }
        }
    }
    log
}

/// Hands the machine what is buffered, as the driver does: after CONNACK, once more for what
/// came with it.
fn feed(
    m: &mut Machine<Labels>,
    rbuf: &mut BytesMut,
    now: Instant,
    log: &mut Vec<String>,
) -> Result<(), End> {
    let was_up = m.is_up();
    m.receive(rbuf, now)?;
    if !was_up && m.is_up() {
        log.push("connected".into());
        m.receive(rbuf, now)?;
    }
    Ok(())
}

fn events(m: &mut Machine<Labels>, log: &mut Vec<String>) {
    for e in m.take_events() {
        log.push(match e {
            Event::Subscribed(to, Ok(outcome)) => {
                let each: Vec<String> = outcome
                    .iter()
                    .map(|o| match o {
                        None => "granted".to_owned(),
                        Some(why) => format!("refused {why}"),
                    })
                    .collect();
                format!("{to}: [{}]", each.join(", "))
            }
            Event::Published(to, Ok(())) => format!("{to}: ok"),
            Event::Reply(to, Ok(r)) => format!(
                "{to}: {} {} ({} bytes)",
                if r.accepted { "accepted" } else { "rejected" },
                r.topic,
                r.payload.len()
            ),
            Event::Subscribed(to, Err(e))
            | Event::Published(to, Err(e))
            | Event::Reply(to, Err(e)) => format!("{to}: {}: {}", e.kind, e.message),
        });
    }
}

fn transmit(m: &mut Machine<Labels>, now: Instant, log: &mut Vec<String>) {
    let Some(out) = m.poll_transmit(now) else {
        return;
    };
    let mut buf = BytesMut::from(out);
    let mut names = Vec::new();
    while let Ok((Some(f), _)) = mqtt::frame(&buf, usize::MAX) {
        let p = mqtt::take_frame(&mut buf, f);
        names.push(describe_ours(&p[f.header_len..], f.byte1));
    }
    assert!(buf.is_empty(), "a write ends in a partial packet");
    log.push(format!("> {}", names.join(", ")));
    m.transmitted(now);
}

/// One packet we sent, in a few words: its name, packet id, and the topic or reason.
fn describe_ours(body: &[u8], byte1: u8) -> String {
    let id = || u16::from_be_bytes([body[0], body[1]]);
    match byte1 >> 4 {
        1 => "CONNECT".into(),
        3 => {
            let n = usize::from(u16::from_be_bytes([body[0], body[1]]));
            let topic = String::from_utf8_lossy(&body[2..2 + n]);
            let pkid = u16::from_be_bytes([body[2 + n], body[3 + n]]);
            format!("PUBLISH {pkid} {topic}")
        }
        4 => format!("PUBACK {}", id()),
        8 => format!("SUBSCRIBE {}", id()),
        10 => format!("UNSUBSCRIBE {}", id()),
        12 => "PINGREQ".into(),
        14 if body.is_empty() => "DISCONNECT".into(),
        14 => format!("DISCONNECT 0x{:02x}", body[0]),
        other => format!("packet type {other}"),
    }
}

/// Checks a transcript against a row's expectations (see the module's comment).
fn check(name: &str, log: &[String], expect: &[&str]) {
    let mut from = 0;
    for want in expect {
        if let Some(absent) = want.strip_prefix('!') {
            let hit = log.iter().find(|l| l.contains(absent));
            assert!(hit.is_none(), "{name}: {absent:?} found in {log:#?}");
            continue;
        }
        if let Some(once) = want.strip_prefix("=1:") {
            let hits = log.iter().filter(|l| l.contains(once)).count();
            assert_eq!(hits, 1, "{name}: {once:?} in {log:#?}");
            continue;
        }
        // The same line may hold several expectations (a waiter's and the end's words).
        match log[from..].iter().position(|l| l.contains(want)) {
            Some(at) => from += at,
            None => panic!("{name}: {want:?} not found after line {from} of {log:#?}"),
        }
    }
}

// ---------- bytes a broker sends ----------

fn packet(byte1: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![byte1];
    let mut n = body.len();
    loop {
        let digit = (n % 128) as u8;
        n /= 128;
        out.push(if n > 0 { digit | 0x80 } else { digit });
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(body);
    out
}

fn string(s: &str) -> Vec<u8> {
    let mut out = (s.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(s.as_bytes());
    out
}

/// An MQTT 5 property block from `(id, value bytes)` pairs.
fn props(list: &[(u8, Vec<u8>)]) -> Vec<u8> {
    let body: Vec<u8> = list
        .iter()
        .flat_map(|(id, v)| std::iter::once(*id).chain(v.iter().copied()))
        .collect();
    let mut out = packet(0, &body);
    out.remove(0);
    out
}

const SERVER_KEEP_ALIVE: u8 = 0x13;
const RECEIVE_MAXIMUM: u8 = 0x21;
const MAXIMUM_PACKET_SIZE: u8 = 0x27;
const TOPIC_ALIAS: u8 = 0x23;
const REASON_STRING: u8 = 0x1f;

fn u16p(id: u8, v: u16) -> (u8, Vec<u8>) {
    (id, v.to_be_bytes().to_vec())
}

fn connack(v: MqttVersion, code: u8, properties: &[(u8, Vec<u8>)]) -> Vec<u8> {
    let mut body = vec![0x00, code];
    if v == V5 {
        body.extend(props(properties));
    }
    packet(0x20, &body)
}

fn ok(v: MqttVersion) -> Vec<u8> {
    connack(v, 0, &[])
}

fn suback(v: MqttVersion, pkid: u16, codes: &[u8]) -> Vec<u8> {
    let mut body = pkid.to_be_bytes().to_vec();
    if v == V5 {
        body.push(0);
    }
    body.extend_from_slice(codes);
    packet(0x90, &body)
}

fn puback(v: MqttVersion, pkid: u16, reason: Option<u8>) -> Vec<u8> {
    let mut body = pkid.to_be_bytes().to_vec();
    if let (V5, Some(r)) = (v, reason) {
        body.extend([r, 0]);
    }
    packet(0x40, &body)
}

fn publish(
    v: MqttVersion,
    topic: &str,
    qos: u8,
    pkid: u16,
    properties: &[(u8, Vec<u8>)],
) -> Vec<u8> {
    let mut body = string(topic);
    if qos > 0 {
        body.extend(pkid.to_be_bytes());
    }
    if v == V5 {
        body.extend(props(properties));
    }
    body.extend_from_slice(br#"{"certificateOwnershipToken":"t"}"#);
    packet(0x30 | (qos << 1), &body)
}

fn publish0(v: MqttVersion, topic: &str) -> Vec<u8> {
    publish(v, topic, 0, 0, &[])
}

fn reply(v: MqttVersion) -> Vec<u8> {
    publish0(v, &format!("{T}/accepted"))
}

fn disconnect(reason: u8, properties: &[(u8, Vec<u8>)]) -> Vec<u8> {
    let mut body = vec![reason];
    body.extend(props(properties));
    packet(0xe0, &body)
}

fn cat(parts: &[Vec<u8>]) -> Vec<u8> {
    parts.concat()
}

fn filters() -> Vec<String> {
    vec![format!("{T}/accepted"), format!("{T}/rejected")]
}

/// CONNACK, the reply topics' SUBSCRIBE (packet id 1) granted, a reply slot, and the request
/// published (packet id 2): where most rows start.
fn up_to_request(v: MqttVersion) -> Vec<Step> {
    vec![
        In(ok(v)),
        Sub("sub", filters()),
        In(suback(v, 1, &[1, 1])),
        Expect("reply", false),
        Pub("pub", T, 10),
    ]
}

/// A string for a row's expectations, made at run time.
fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

fn then(mut first: Vec<Step>, rest: Vec<Step>) -> Vec<Step> {
    first.extend(rest);
    first
}

struct Row {
    name: &'static str,
    version: MqttVersion,
    steps: Vec<Step>,
    expect: Vec<&'static str>,
}

fn row(name: &'static str, version: MqttVersion, steps: Vec<Step>, expect: &[&'static str]) -> Row {
    Row {
        name,
        version,
        steps,
        expect: expect.to_vec(),
    }
}

fn check_rows(rows: Vec<Row>) {
    for r in rows {
        let name = format!("{} ({:?})", r.name, r.version);
        let log = run(r.version, r.steps);
        check(&name, &log, &r.expect);
    }
}

/// The standard exchange, both versions: what every other row departs from.
#[test]
fn the_standard_exchange() {
    let mut rows = Vec::new();
    for v in [V5, V311] {
        rows.push(row(
            "request answered",
            v,
            then(
                up_to_request(v),
                vec![In(cat(&[puback(v, 2, None), reply(v)])), Disconnect],
            ),
            &[
                "> CONNECT",
                "connected",
                "> SUBSCRIBE 1",
                "sub: [granted, granted]",
                leak(format!("> PUBLISH 2 {T}")),
                "pub: ok",
                "reply: accepted $aws/certificates/create/json/accepted",
                "> DISCONNECT",
                "end: cancelled: the client was disconnected by its owner",
                "!protocol error",
            ],
        ));
    }
    check_rows(rows);
}

/// A reply, then the end of the connection in the same read or the next: the reply is handed
/// over before the loss is reported (hostile: `*_reply_then_disconnect_*`,
/// `*_reply_then_tls_close_*`, `*_reply_then_tcp_close_*`; the socket's part, a close in the
/// same TLS record, stays in `tests/hostile.rs`).
#[test]
fn a_reply_before_the_end_is_delivered() {
    let mut rows = vec![row(
        "reply then DISCONNECT in one read",
        V5,
        then(
            up_to_request(V5),
            vec![In(cat(&[
                puback(V5, 2, None),
                reply(V5),
                disconnect(0x8b, &[]),
            ]))],
        ),
        &[
            "pub: ok",
            "reply: accepted",
            "end: disconnected: broker.test:8883 closed the connection: server shutting down (0x8b)",
            "!> DISCONNECT",
        ],
    )];
    for v in [V5, V311] {
        rows.push(row(
            "reply then the stream's end",
            v,
            then(
                up_to_request(v),
                vec![In(cat(&[puback(v, 2, None), reply(v)])), Eof],
            ),
            &[
                "reply: accepted",
                "end: disconnected: broker.test:8883 closed the connection",
                "!middle",
            ],
        ));
    }
    check_rows(rows);
}

/// Every rule of the broker's CONNACK (hostile: `receive_maximum_zero_fails_the_connect`,
/// `session_present_after_clean_start_is_a_protocol_error`,
/// `connack_refusal_names_the_reason`, `maximum_packet_size_zero_fails_the_connect`,
/// `v311_only_broker_*`, `garbage_instead_of_connack`).
#[test]
fn connack_rules() {
    let refused_with_reason = {
        let mut body = vec![0x00, 0x87];
        body.extend(props(&[(REASON_STRING, string("claim revoked"))]));
        packet(0x20, &body)
    };
    let rows = vec![
        row(
            "receive maximum zero",
            V5,
            vec![In(connack(V5, 0, &[u16p(RECEIVE_MAXIMUM, 0)]))],
            &[
                "> DISCONNECT 0x82",
                "end: protocol error: broker.test:8883 broke the MQTT protocol: CONNACK has \
                 Receive Maximum 0; connection closed",
                "!connected",
            ],
        ),
        row(
            "session present after a clean start",
            V5,
            vec![In(vec![0x20, 0x03, 0x01, 0x00, 0x00])],
            &["> DISCONNECT 0x82", "end: protocol error", "Session Present"],
        ),
        row(
            "session present after a clean start",
            V311,
            vec![In(vec![0x20, 0x02, 0x01, 0x00])],
            &["> DISCONNECT", "end: protocol error", "Session Present"],
        ),
        row(
            "refusal names the reason",
            V5,
            vec![In(refused_with_reason)],
            &[
                "end: connection refused: broker.test:8883 refused the connection: not \
                 authorized (0x87): claim revoked",
                "!> DISCONNECT",
            ],
        ),
        row(
            "refusal names the reason",
            V311,
            vec![In(connack(V311, 5, &[]))],
            &["end: connection refused", "not authorized (0x05)"],
        ),
        row(
            "maximum packet size zero",
            V5,
            vec![In(connack(
                V5,
                0,
                &[(MAXIMUM_PACKET_SIZE, 0u32.to_be_bytes().to_vec())],
            ))],
            &["> DISCONNECT 0x82", "end: protocol error", "Maximum Packet Size 0"],
        ),
        row(
            "a 3.1.1-only broker",
            V5,
            vec![In(vec![0x20, 0x02, 0x00, 0x01])],
            &[
                "end: connection refused",
                "unacceptable protocol version (0x01): the broker does not speak MQTT 5; \
                 connect with MQTT 3.1.1",
            ],
        ),
        row(
            "QoS 0 only",
            V5,
            vec![In(connack(V5, 0, &[(0x24, vec![0])]))],
            &["end: connection refused", "QoS 0 only"],
        ),
        row(
            "garbage instead of CONNACK",
            V5,
            vec![In(b"HTTP/1.1 400 Bad Request\r\n\r\n".to_vec())],
            &[
                "> DISCONNECT 0x81",
                "end: protocol error",
                "malformed remaining length",
            ],
        ),
        row(
            "another packet before CONNACK",
            V311,
            vec![In(puback(V311, 1, None))],
            &["end: protocol error", "PUBACK before CONNACK"],
        ),
        row(
            "the end before CONNACK",
            V5,
            vec![In(vec![0x20]), Eof],
            &["end: connection failed: broker.test:8883 closed the connection before CONNACK in the middle of a packet"],
        ),
    ];
    check_rows(rows);
}

/// CONNACK, then the end in the same read: the session was up, and an operation then fails
/// with the broker's reason (hostile: `loss_right_after_connack_keeps_the_cause`,
/// `loss_right_after_connack_mqtt311`).
#[test]
fn the_end_right_after_connack() {
    let busy = disconnect(0x89, &[(REASON_STRING, string("busy after CONNACK"))]);
    check_rows(vec![
        row(
            "DISCONNECT with CONNACK",
            V5,
            vec![In(cat(&[ok(V5), busy]))],
            &[
                "connected",
                "end: disconnected: broker.test:8883 closed the connection: server busy \
                 (0x89): busy after CONNACK",
            ],
        ),
        row(
            "close after CONNACK",
            V311,
            vec![In(ok(V311)), Eof],
            &["connected", "end: disconnected", "closed the connection"],
        ),
    ]);
}

/// Keep-alive: the broker's Server Keep Alive wins, 0 turns pings off, an unanswered ping
/// ends the connection (hostile: `server_keep_alive_zero_means_no_pings`,
/// `smaller_server_keep_alive_is_honoured`).
#[test]
fn keep_alive() {
    check_rows(vec![
        row(
            "server keep alive zero",
            V5,
            vec![
                In(connack(V5, 0, &[u16p(SERVER_KEEP_ALIVE, 0)])),
                After(600_000),
            ],
            &["connected", "t=600000ms", "!PINGREQ"],
        ),
        row(
            "smaller server keep alive",
            V5,
            vec![
                In(connack(V5, 0, &[u16p(SERVER_KEEP_ALIVE, 1)])),
                After(999),
                After(1),
                In(vec![0xd0, 0x00]),
                After(1000),
            ],
            &[
                "connected",
                "t=999ms",
                "> PINGREQ",
                "t=1000ms",
                "> PINGREQ",
                "t=2000ms",
            ],
        ),
        row(
            "our keep alive when the broker sets none",
            V311,
            vec![In(ok(V311)), After(29_999), After(1)],
            &["t=29999ms", "> PINGREQ", "t=30000ms", "!end"],
        ),
        row(
            "sending counts as activity",
            V311,
            vec![In(ok(V311)), After(20_000), Pub("pub", T, 1), After(20_000)],
            &["> PUBLISH 1", "t=40000ms", "!PINGREQ"],
        ),
        row(
            "an unanswered ping",
            V5,
            vec![
                In(connack(V5, 0, &[u16p(SERVER_KEEP_ALIVE, 5)])),
                After(10_000),
            ],
            &[
                "> PINGREQ",
                "end: disconnected: broker.test:8883 did not answer PINGREQ within 5s; \
                 connection closed",
            ],
        ),
    ]);
}

/// The broker's Maximum Packet Size: what is over it is refused before it is sent, a PUBLISH
/// as a refused publish, a SUBSCRIBE as a refused subscription (hostile:
/// `broker_maximum_packet_size_is_respected`, `broker_maximum_packet_size_below_the_subscribe`).
#[test]
fn maximum_packet_size() {
    let limit = |n: u32| connack(V5, 0, &[(MAXIMUM_PACKET_SIZE, n.to_be_bytes().to_vec())]);
    check_rows(vec![
        row(
            "a PUBLISH over the limit",
            V5,
            vec![In(limit(300)), Pub("big", T, 600), Pub("small", "t/s", 10)],
            &[
                "big: publish refused: broker.test:8883 takes packets of at most 300 bytes \
                 (its Maximum Packet Size); this PUBLISH has",
                "> PUBLISH 2 t/s",
                "!> PUBLISH 1",
            ],
        ),
        row(
            "a SUBSCRIBE over the limit",
            V5,
            vec![In(limit(60)), Sub("sub", filters())],
            &[
                "sub: subscription refused",
                "at most 60 bytes",
                "this SUBSCRIBE has",
                "!> SUBSCRIBE",
            ],
        ),
        row(
            "over our own limit",
            V311,
            vec![In(ok(V311)), Pub("huge", T, MAX_PACKET)],
            &["huge: invalid argument", "the most the library sends is"],
        ),
    ]);
}

/// The short forms of DISCONNECT (hostile: `short_disconnect_with_socket_open`,
/// `empty_disconnect_with_socket_open`).
#[test]
fn disconnect_short_forms() {
    let mut rows = Vec::new();
    for (name, bytes, reason) in [
        (
            "reason code only",
            vec![0xe0, 0x01, 0x8b],
            "server shutting down (0x8b)",
        ),
        ("no body", vec![0xe0, 0x00], "normal disconnection (0x00)"),
    ] {
        rows.push(row(
            name,
            V5,
            then(up_to_request(V5), vec![In(puback(V5, 2, None)), In(bytes)]),
            &[
                "pub: ok",
                "reply: disconnected",
                "end: disconnected: broker.test:8883 closed the connection",
                reason,
                "!> DISCONNECT",
            ],
        ));
    }
    rows.push(row(
        "a DISCONNECT from a 3.1.1 broker",
        V311,
        vec![In(ok(V311)), In(vec![0xe0, 0x00])],
        &[
            "end: protocol error",
            "DISCONNECT, which a broker never sends",
        ],
    ));
    check_rows(rows);
}

/// Outcomes of our packets: PUBACK and SUBACK refusals carry the reason; the reply may
/// overtake the PUBACK (hostile: `puback_not_authorized_is_publish_refused`,
/// `puback_refusal_on_publish`, `suback_refusal_names_the_reason`, `short_suback_is_a_bad_reply`
/// (the count is the client's check: the session hands the codes over as they came),
/// `reply_before_puback`).
#[test]
fn acknowledgements() {
    let mut rows =
        vec![
        row(
            "PUBACK not authorized",
            V5,
            then(up_to_request(V5), vec![In(puback(V5, 2, Some(0x87)))]),
            &[
                "pub: publish refused: broker.test:8883 refused the publish: not authorized (0x87)",
                "!end",
            ],
        ),
        row(
            "PUBACK refusal of a plain publish",
            V5,
            vec![In(ok(V5)), Pub("pub", "devices/1/hello", 2), In(puback(V5, 1, Some(0x87)))],
            &["> PUBLISH 1 devices/1/hello", "pub: publish refused", "not authorized"],
        ),
        row(
            "PUBACK no matching subscribers is success",
            V5,
            vec![In(ok(V5)), Pub("pub", "a", 2), In(puback(V5, 1, Some(0x10)))],
            &["pub: ok"],
        ),
        row(
            "SUBACK refusal",
            V5,
            vec![In(ok(V5)), Sub("sub", filters()), In(suback(V5, 1, &[0x01, 0x87]))],
            &["sub: [granted, refused not authorized (0x87)]"],
        ),
        row(
            "SUBACK refusal",
            V311,
            vec![In(ok(V311)), Sub("sub", filters()), In(suback(V311, 1, &[0x01, 0x80]))],
            &["sub: [granted, refused unspecified error (0x80)]"],
        ),
        row(
            "short SUBACK",
            V5,
            vec![In(ok(V5)), Sub("sub", filters()), In(suback(V5, 1, &[0x01]))],
            &["sub: [granted]", "!end"],
        ),
    ];
    for v in [V5, V311] {
        rows.push(row(
            "reply before PUBACK",
            v,
            then(
                up_to_request(v),
                vec![In(cat(&[reply(v), puback(v, 2, None)]))],
            ),
            &["reply: accepted", "pub: ok", "!end"],
        ));
    }
    check_rows(rows);
}

/// Publishes past the broker's Receive Maximum wait for a PUBACK; UNSUBSCRIBE holds its
/// packet id until its UNSUBACK.
#[test]
fn flow_control_and_packet_ids() {
    check_rows(vec![
        row(
            "receive maximum 1",
            V5,
            vec![
                In(connack(V5, 0, &[u16p(RECEIVE_MAXIMUM, 1)])),
                Pub("a", "t/a", 1),
                Pub("b", "t/b", 1),
                In(puback(V5, 1, None)),
            ],
            &["> PUBLISH 1 t/a", "a: ok", "> PUBLISH 2 t/b"],
        ),
        row(
            "UNSUBACK",
            V311,
            vec![
                In(ok(V311)),
                Unsub("t/#"),
                In(packet(0xb0, &[0, 1])),
                In(packet(0xb0, &[0, 1])),
            ],
            &[
                "> UNSUBSCRIBE 1",
                "end: protocol error",
                "UNSUBACK for packet id 1",
            ],
        ),
    ]);
}

/// Packets a broker must not send, and packets that are not MQTT (hostile:
/// `malformed_packet_is_a_protocol_error`, `huge_remaining_length_is_refused_from_the_header`,
/// `five_byte_remaining_length_is_a_protocol_error`,
/// `suback_for_unknown_packet_id_is_a_protocol_error`,
/// `puback_for_unknown_packet_id_is_a_protocol_error`, `qos2_publish_is_a_protocol_error`,
/// `second_connack_is_a_protocol_error`, `unsolicited_auth_is_a_protocol_error`,
/// `empty_topic_publish_is_a_protocol_error`, `subscribe_from_the_broker_is_a_protocol_error`,
/// `topic_alias_is_a_protocol_error`).
#[test]
fn protocol_errors() {
    let mut rows = Vec::new();
    for v in [V5, V311] {
        let mut qos3 = reply(v);
        qos3[0] = 0x36;
        let mut subscribe = 9u16.to_be_bytes().to_vec();
        if v == V5 {
            subscribe.push(0);
        }
        subscribe.extend(string("#"));
        subscribe.push(1);
        let d = if v == V5 {
            "> DISCONNECT 0x"
        } else {
            "> DISCONNECT"
        };
        for (name, bytes, reason, kind, words) in [
            (
                "QoS bits 11",
                qos3,
                "81",
                "protocol error",
                "malformed remaining length",
            ),
            (
                "256 MiB remaining length",
                vec![0x30, 0xff, 0xff, 0xff, 0x7f, 0x00, 0x05, b'a'],
                "95",
                "bad reply",
                "sent a packet of 268435455 bytes, over the 132096-byte limit",
            ),
            (
                "five-byte remaining length",
                vec![0x30, 0xff, 0xff, 0xff, 0xff, 0x01],
                "81",
                "protocol error",
                "malformed remaining length",
            ),
            (
                "SUBACK for an unknown packet id",
                suback(v, 101, &[1, 1]),
                "82",
                "protocol error",
                "SUBACK for packet id 101, which is not awaiting one",
            ),
            (
                "PUBACK for an unknown packet id",
                puback(v, 102, None),
                "82",
                "protocol error",
                "PUBACK for packet id 102, which is not awaiting one",
            ),
            (
                "a second CONNACK",
                ok(v),
                "82",
                "protocol error",
                "a second CONNACK",
            ),
            (
                "SUBSCRIBE from the broker",
                packet(0x82, &subscribe),
                "82",
                "protocol error",
                "it sent SUBSCRIBE, which a broker never sends to a client",
            ),
            (
                "QoS 2 reply",
                publish(v, &format!("{T}/accepted"), 2, 7, &[]),
                "9b",
                "protocol error",
                "QoS 2 PUBLISH on a QoS 1 subscription",
            ),
            (
                "PUBREL",
                packet(0x62, &[0, 1]),
                "82",
                "protocol error",
                "it sent PUBREL",
            ),
        ] {
            let disconnect = if v == V5 {
                format!("{d}{reason}")
            } else {
                d.to_owned()
            };
            rows.push(Row {
                name,
                version: v,
                steps: then(
                    up_to_request(v),
                    vec![In(cat(&[puback(v, 2, None), bytes]))],
                ),
                expect: vec![
                    "pub: ok",
                    leak(format!("reply: {kind}")),
                    leak(disconnect),
                    leak(format!("end: {kind}: broker.test:8883 ")),
                    words,
                    "; connection closed",
                ],
            });
        }
    }
    let v5_only = [
        (
            "AUTH nobody asked for",
            vec![0xf0, 0x02, 0x18, 0x00],
            "0x82",
            "it sent AUTH",
        ),
        (
            "empty topic without an alias",
            publish0(V5, ""),
            "0x81",
            "PUBLISH with an empty topic and no Topic Alias",
        ),
        (
            "topic alias",
            publish(V5, &format!("{T}/accepted"), 0, 0, &[u16p(TOPIC_ALIAS, 1)]),
            "0x94",
            "PUBLISH with a Topic Alias, which the client does not allow",
        ),
    ];
    for (name, bytes, reason, words) in v5_only {
        rows.push(Row {
            name,
            version: V5,
            steps: then(
                up_to_request(V5),
                vec![In(cat(&[puback(V5, 2, None), bytes]))],
            ),
            expect: vec![
                "reply: protocol error",
                leak(format!("> DISCONNECT {reason}")),
                "end: protocol error",
                words,
                "!reply: accepted",
            ],
        });
    }
    rows.push(row(
        "empty topic",
        V311,
        then(up_to_request(V311), vec![In(publish0(V311, ""))]),
        &["end: protocol error", "PUBLISH with an empty topic"],
    ));
    check_rows(rows);
}

/// What the client does not wait for is ignored; the reply still counts (hostile:
/// `publish_on_unrequested_topics_is_ignored`). A slot that takes every message keeps taking
/// them; a forgotten slot takes none.
#[test]
fn deliveries() {
    let mut rows = Vec::new();
    for v in [V5, V311] {
        rows.push(row(
            "messages on topics nobody waits on",
            v,
            then(
                up_to_request(v),
                vec![In(cat(&[
                    publish0(v, "not/yours"),
                    publish0(v, "$aws/certificates/create-from-csr/json/accepted"),
                    puback(v, 2, None),
                    publish0(v, "not/yours/either"),
                    reply(v),
                ]))],
            ),
            &["pub: ok", "reply: accepted", "!not/yours", "!end"],
        ));
    }
    rows.push(row(
        "one slot takes one message",
        V5,
        vec![
            In(ok(V5)),
            Expect("once", false),
            In(cat(&[reply(V5), reply(V5)])),
        ],
        &["=1:once: accepted"],
    ));
    rows.push(row(
        "a slot for every message",
        V5,
        vec![
            In(ok(V5)),
            Expect("many", true),
            In(cat(&[reply(V5), publish0(V5, &format!("{T}/rejected"))])),
            Forget(0),
            In(reply(V5)),
            Disconnect,
        ],
        &[
            "=1:many: accepted",
            "many: rejected",
            "end: cancelled",
            "!many: cancelled",
        ],
    ));
    check_rows(rows);
}

/// The PUBACK for a QoS 1 reply waits to ride with our next packet, for a second at most
/// (hostile: `reply_acknowledged_while_the_client_is_idle_*`,
/// `reply_acknowledged_before_an_immediate_disconnect`).
#[test]
fn replies_are_acknowledged() {
    let mut rows = Vec::new();
    for v in [V5, V311] {
        let qos1 = publish(v, &format!("{T}/accepted"), 1, 4242, &[]);
        rows.push(row(
            "while the client is idle",
            v,
            then(
                up_to_request(v),
                vec![
                    In(cat(&[puback(v, 2, None), qos1.clone()])),
                    After(999),
                    After(1),
                ],
            ),
            &["reply: accepted", "t=999ms", "> PUBACK 4242", "t=1000ms"],
        ));
        rows.push(row(
            "with the next request",
            v,
            then(
                up_to_request(v),
                vec![
                    In(cat(&[puback(v, 2, None), qos1.clone()])),
                    Pub("next", "t/n", 1),
                ],
            ),
            &["reply: accepted", "> PUBACK 4242, PUBLISH 3 t/n"],
        ));
        rows.push(row(
            "before an immediate DISCONNECT",
            v,
            then(
                up_to_request(v),
                vec![In(cat(&[puback(v, 2, None), qos1])), Disconnect],
            ),
            &[
                "reply: accepted",
                "> PUBACK 4242, DISCONNECT",
                "end: cancelled",
            ],
        ));
    }
    check_rows(rows);
}

/// Framing across reads: every packet one byte at a time (hostile:
/// `bytewise_packets_are_reassembled`; the socket-level version stays there), and a stream
/// cut in the middle of a packet.
#[test]
fn framing_across_reads() {
    let mut rows = Vec::new();
    for v in [V5, V311] {
        rows.push(row(
            "one byte per read",
            v,
            vec![
                Bytewise(ok(v)),
                Sub("sub", filters()),
                Bytewise(suback(v, 1, &[1, 1])),
                Expect("reply", false),
                Pub("pub", T, 10),
                Bytewise(cat(&[puback(v, 2, None), reply(v)])),
            ],
            &[
                "connected",
                "sub: [granted, granted]",
                "pub: ok",
                "reply: accepted",
                "!end",
            ],
        ));
        rows.push(row(
            "cut in the middle of a packet",
            v,
            then(up_to_request(v), vec![In(reply(v)[..5].to_vec()), Eof]),
            &[
                "reply: disconnected",
                "end: disconnected: broker.test:8883 closed the connection in the middle of a packet",
            ],
        ));
    }
    check_rows(rows);
}

/// Everything pending gets the end: subscriptions, publishes in flight and queued, reply
/// slots; nothing after it.
#[test]
fn the_end_reaches_every_waiter() {
    check_rows(vec![row(
        "pending at the end",
        V5,
        vec![
            In(connack(V5, 0, &[u16p(RECEIVE_MAXIMUM, 1)])),
            Sub("sub", filters()),
            Expect("reply", false),
            Pub("first", "t/a", 1),
            Pub("queued", "t/b", 1),
            Eof,
        ],
        &[
            "sub: disconnected",
            "first: disconnected",
            "queued: disconnected",
            "reply: disconnected",
            "end: disconnected",
        ],
    )]);
}

/// The CONNECT asks for a clean start, announces our limits, and allows no topic aliases.
#[test]
fn our_connect() {
    use rumqttc::v5::mqttbytes::v5::Packet;
    let mut m = Machine::<Labels>::new(V5, EP.to_owned(), 30, Instant::now());
    m.connect("device-1").unwrap();
    let mut out = BytesMut::from(m.poll_transmit(Instant::now()).unwrap());
    let Packet::Connect(c, _, _) = Packet::read(&mut out, None).unwrap() else {
        panic!("not a CONNECT");
    };
    assert!(c.clean_start);
    assert_eq!(c.keep_alive, 30);
    let p = c.properties.unwrap();
    assert_eq!(p.receive_maximum, Some(INFLIGHT));
    assert_eq!(p.max_packet_size, Some(MAX_PACKET as u32));
    assert!(matches!(p.topic_alias_max, None | Some(0)));
}

/// Between operations the machine holds no allocation: once the waiters have what is theirs,
/// its tables and its output are given back (`shed`), however much they held meanwhile.
#[test]
fn nothing_is_held_between_operations() {
    for v in [V5, V311] {
        let mut now = Instant::now();
        let mut m = Machine::<Labels>::new(v, EP.to_owned(), 30, now);
        m.connect("device-1").unwrap();
        let mut log = Vec::new();
        transmit(&mut m, now, &mut log);
        let mut rbuf = BytesMut::from(&ok(v)[..]);
        feed(&mut m, &mut rbuf, now, &mut log).unwrap();
        m.command(Command::Subscribe(filters(), "sub")).unwrap();
        m.command(Command::ExpectReply {
            slot: 0,
            accepted: format!("{T}/accepted"),
            rejected: format!("{T}/rejected"),
            many: false,
            to: "reply",
        })
        .unwrap();
        for _ in 0..3 {
            let payload = vec![b'x'; 4000].into();
            m.command(Command::Publish(T.to_owned(), payload, "pub"))
                .unwrap();
        }
        assert!(m.held() > 12_000, "the three requests are queued to go out");
        transmit(&mut m, now, &mut log);
        let answers = [
            suback(v, 1, &[1, 1]),
            puback(v, 2, None),
            puback(v, 3, None),
            puback(v, 4, None),
            publish(v, &format!("{T}/accepted"), 1, 9, &[]),
        ];
        rbuf.extend_from_slice(&cat(&answers));
        feed(&mut m, &mut rbuf, now, &mut log).unwrap();
        events(&mut m, &mut log);
        // The reply's PUBACK goes out when due.
        while let Some(at) = m
            .next_wake()
            .filter(|&at| at <= now + Duration::from_secs(1))
        {
            now = at;
            m.wake(now).unwrap();
            transmit(&mut m, now, &mut log);
        }
        m.command(Command::ForgetReply(0)).unwrap();
        m.shed();
        check(
            &format!("exchange ({v:?})"),
            &log,
            &[
                "sub: [granted, granted]",
                "pub: ok",
                "pub: ok",
                "pub: ok",
                "reply: accepted",
                "> PUBACK 9",
            ],
        );
        assert_eq!(m.held(), 0, "{v:?}: held between operations");
        assert!(rbuf.is_empty());
    }
}
