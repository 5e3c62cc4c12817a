//! The session's protocol state: a value without I/O, locks or a runtime.
//!
//! [`Machine`] is fed what the broker sent (raw bytes, framed and decoded here), the owner's
//! commands and the time, and answers with the bytes to write ([`Machine::poll_transmit`]),
//! what to hand to which waiter ([`Machine::take_events`]), when it next needs waking
//! ([`Machine::next_wake`]) and, as an `Err(End)` from any call, how the connection ends.
//! Waiters are whatever the driver wants them to be (a channel's sending half in the library,
//! a label in the tests); the machine keeps them by packet id and hands each back once.
//!
//! Memory is bounded whatever the broker sends: a frame's length is checked against
//! [`MAX_PACKET`] before any of it is buffered, nothing the broker sends is kept beyond the
//! packet at hand (topic aliases, which would oblige a client to remember topics, are
//! refused: the client allows none), and at most [`INFLIGHT`] publishes wait for a PUBACK.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use super::errors::{self, Phase};
use super::mqtt::{self, FrameError, Incoming, Outgoing};
use crate::client::options::MqttVersion;
use crate::error::{Error, ErrorKind};
use crate::log::{fp_log, Level};
use crate::protocol::MAX_PAYLOAD_LEN;

/// Upper bound of unacknowledged QoS 1 publishes, ours and the broker's (our Receive Maximum).
/// Provisioning needs a handful.
pub(super) const INFLIGHT: u16 = 16;
/// Largest packet accepted or sent: AWS's 128 KiB payload plus room for topic and properties.
pub(super) const MAX_PACKET: usize = MAX_PAYLOAD_LEN + 1024;
/// How long a PUBACK for a reply may wait to go out with the next packet we send. A reply is
/// usually followed by the next request (RegisterThing after the certificate) or by
/// DISCONNECT, so the acknowledgement rides along instead of costing a write of its own. Under
/// load that next packet can be hundreds of milliseconds away (the callback that sends it waits
/// its turn): at 20 ms, 1,000 devices provisioning at once sent 9 writes a device, not 7.
/// Neither MQTT version times a PUBACK: a broker resends only on reconnection (MQTT 3.1.1 and
/// MQTT 5, section 4.4), so a later acknowledgement costs it nothing but an in-flight slot.
pub(super) const ACK_DELAY: Duration = Duration::from_secs(1);

const REASON_MALFORMED: u8 = 0x81;
const REASON_PROTOCOL_ERROR: u8 = 0x82;
const REASON_QOS_NOT_SUPPORTED: u8 = 0x9b;
const REASON_TOPIC_ALIAS_INVALID: u8 = 0x94;
const REASON_PACKET_TOO_LARGE: u8 = 0x95;

/// The types the driver uses as waiters: one per SUBSCRIBE, one per PUBLISH, and one per reply
/// slot (cloned for a slot that takes every message on its topics).
pub(super) trait Waiters {
    type Sub;
    type Pub;
    type Reply: Clone;
}

/// Per-filter outcome of a SUBSCRIBE: `None` granted, `Some(reason)` refused.
pub(crate) type SubOutcome = Vec<Option<String>>;

/// A message received on a reply topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reply {
    /// Whether it came on `/accepted` (else `/rejected`).
    pub accepted: bool,
    pub topic: String,
    pub payload: Bytes,
}

/// What the owner asks of the session.
pub(super) enum Command<K: Waiters> {
    /// One SUBSCRIBE (QoS 1); the waiter gets the SUBACK's outcome.
    Subscribe(Vec<String>, K::Sub),
    /// One QoS 1 PUBLISH; the waiter gets the PUBACK's outcome.
    Publish(String, Bytes, K::Pub),
    /// An UNSUBSCRIBE nobody waits for.
    Unsubscribe(Vec<String>),
    /// Hands the next message (`many`: every message) on `accepted` or `rejected` to `to`,
    /// until [`Command::ForgetReply`] with the same `slot`.
    ExpectReply {
        slot: u64,
        accepted: String,
        rejected: String,
        many: bool,
        to: K::Reply,
    },
    ForgetReply(u64),
    /// A clean end: DISCONNECT, then close.
    Disconnect,
}

/// What the driver hands to a waiter.
pub(super) enum Event<K: Waiters> {
    Subscribed(K::Sub, Result<SubOutcome, Error>),
    Published(K::Pub, Result<(), Error>),
    Reply(K::Reply, Result<Reply, Error>),
}

/// How the connection ends: the error every pending operation receives, and the DISCONNECT
/// reason code to send first, if any (MQTT 3.1.1 sends its DISCONNECT without one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct End {
    pub error: Error,
    pub disconnect_with: Option<u8>,
}

impl End {
    pub(super) fn quietly(error: Error) -> End {
        End {
            error,
            disconnect_with: None,
        }
    }

    /// A protocol violation by the broker: DISCONNECT with `reason`, then close.
    fn protocol(endpoint: &str, reason: u8, what: impl std::fmt::Display) -> End {
        End {
            error: errors::protocol(endpoint, what),
            disconnect_with: Some(reason),
        }
    }
}

struct ReplySlot<R> {
    id: u64,
    accepted: String,
    rejected: String,
    /// Taken by the first message unless `many`.
    to: Option<R>,
    many: bool,
}

/// One MQTT session's protocol state, from CONNECT to the end.
pub(super) struct Machine<K: Waiters> {
    version: MqttVersion,
    endpoint: String,
    /// CONNACK accepted.
    up: bool,
    /// How many bytes the frame at the front of the receive buffer needs in all.
    want: usize,
    /// Bytes to write now.
    out: BytesMut,
    /// PUBACKs not written yet, and when they must be at the latest.
    acks: BytesMut,
    ack_due: Option<Instant>,
    next_pkid: u16,
    /// Waiters by packet id; UNSUBSCRIBEs have none but hold their id until the UNSUBACK.
    subs: HashMap<u16, K::Sub>,
    pubs: HashMap<u16, K::Pub>,
    unsubs: Vec<u16>,
    /// The most publishes the broker lets us have unacknowledged (Receive Maximum).
    send_quota: usize,
    /// Publishes waiting for a free place under `send_quota`.
    queued: VecDeque<(String, Bytes, K::Pub)>,
    replies: Vec<ReplySlot<K::Reply>>,
    events: Vec<Event<K>>,
    /// The broker's Maximum Packet Size (MQTT 5), else ours.
    max_out: usize,
    /// What we asked for in CONNECT, in seconds.
    asked_keep_alive: u16,
    /// `None`: keep-alive off (MQTT 5 Server Keep Alive 0).
    keep_alive: Option<Duration>,
    last_sent: Instant,
    ping_sent: Option<Instant>,
}

impl<K: Waiters> Machine<K> {
    /// A session about to connect to `endpoint` (`host:port`, for messages) asking for
    /// `keep_alive` seconds.
    pub(super) fn new(
        version: MqttVersion,
        endpoint: String,
        keep_alive: u16,
        now: Instant,
    ) -> Machine<K> {
        Machine {
            version,
            endpoint,
            up: false,
            want: 2,
            out: BytesMut::new(),
            acks: BytesMut::new(),
            ack_due: None,
            next_pkid: 0,
            subs: HashMap::new(),
            pubs: HashMap::new(),
            unsubs: Vec::new(),
            send_quota: usize::from(INFLIGHT),
            queued: VecDeque::new(),
            replies: Vec::new(),
            events: Vec::new(),
            max_out: MAX_PACKET,
            asked_keep_alive: keep_alive,
            keep_alive: Some(Duration::from_secs(u64::from(keep_alive))),
            last_sent: now,
            ping_sent: None,
        }
    }

    /// Queues CONNECT (clean start, our limits).
    pub(super) fn connect(&mut self, client_id: &str) -> Result<(), Error> {
        mqtt::encode(
            self.version,
            Outgoing::Connect {
                client_id,
                keep_alive: self.asked_keep_alive,
                receive_maximum: INFLIGHT,
                maximum_packet_size: MAX_PACKET as u32,
            },
            &mut self.out,
        )
        .map(drop)
        .map_err(|e| Error::new(ErrorKind::InvalidArgument, e))
    }

    pub(super) fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Whether CONNACK has been accepted.
    pub(super) fn is_up(&self) -> bool {
        self.up
    }

    pub(super) fn phase(&self) -> Phase {
        if self.up {
            Phase::Session
        } else {
            Phase::Connack
        }
    }

    /// How many bytes the frame at the front of the receive buffer needs in all (2 between
    /// packets): what the next read must make room for.
    pub(super) fn wants(&self) -> usize {
        self.want
    }

    /// Acts on every complete packet at the front of `rbuf`, taking each out (and wiping its
    /// bytes). Before CONNACK it stops after the CONNACK, so the driver can report the
    /// connection up before what came with it is acted on.
    pub(super) fn receive(&mut self, rbuf: &mut BytesMut, now: Instant) -> Result<(), End> {
        while let Some(packet) = self.take_packet(rbuf)? {
            if !self.up {
                return self.connack(packet);
            }
            self.incoming(packet, now)?;
        }
        Ok(())
    }

    /// The end of the stream from the broker; `partial` if it cut a packet short.
    pub(super) fn eof(&self, partial: bool) -> End {
        End::quietly(errors::eof(&self.endpoint, self.phase(), partial))
    }

    /// Acts on one command of the owner.
    pub(super) fn command(&mut self, cmd: Command<K>) -> Result<(), End> {
        match cmd {
            Command::Subscribe(filters, to) => {
                let pkid = self.pkid();
                match self.queue(Outgoing::Subscribe {
                    pkid,
                    filters: &filters,
                }) {
                    Ok(()) => {
                        fp_log!(Level::Debug, "SUBSCRIBE {}", filters.join(", "));
                        self.subs.insert(pkid, to);
                    }
                    Err(e) => self.events.push(Event::Subscribed(to, Err(e))),
                }
            }
            Command::Publish(topic, payload, to) => {
                self.queued.push_back((topic, payload, to));
                self.send_queued();
            }
            Command::Unsubscribe(filters) => {
                let pkid = self.pkid();
                if self
                    .queue(Outgoing::Unsubscribe {
                        pkid,
                        filters: &filters,
                    })
                    .is_ok()
                {
                    fp_log!(Level::Debug, "UNSUBSCRIBE {}", filters.join(", "));
                    self.unsubs.push(pkid);
                }
            }
            Command::ExpectReply {
                slot,
                accepted,
                rejected,
                many,
                to,
            } => self.replies.push(ReplySlot {
                id: slot,
                accepted,
                rejected,
                to: Some(to),
                many,
            }),
            Command::ForgetReply(slot) => self.replies.retain(|s| s.id != slot),
            Command::Disconnect => {
                return Err(End {
                    error: Error::new(
                        ErrorKind::Cancelled,
                        "the client was disconnected by its owner",
                    ),
                    disconnect_with: Some(0),
                })
            }
        }
        Ok(())
    }

    /// When the session next needs [`Machine::wake`]: the PINGRESP deadline or the time to
    /// ping, or the latest time for the waiting PUBACKs, whichever comes first.
    pub(super) fn next_wake(&self) -> Option<Instant> {
        let ping = self.keep_alive.map(|ka| match self.ping_sent {
            Some(sent) => sent + ka,
            None => self.last_sent + ka,
        });
        ping.into_iter().chain(self.ack_due).min()
    }

    /// Keeps the connection alive: a PINGREQ when nothing was sent for the keep-alive
    /// interval, the end when a PINGREQ went unanswered for as long.
    pub(super) fn wake(&mut self, now: Instant) -> Result<(), End> {
        let Some(ka) = self.keep_alive else {
            return Ok(());
        };
        if let Some(sent) = self.ping_sent {
            if now.saturating_duration_since(sent) >= ka {
                return Err(End::quietly(Error::new(
                    ErrorKind::Disconnected,
                    format!(
                        "{} did not answer PINGREQ within {ka:?}; connection closed",
                        self.endpoint
                    ),
                )));
            }
            return Ok(());
        }
        if now.saturating_duration_since(self.last_sent) >= ka {
            self.queue(Outgoing::PingReq)
                .map_err(|e| End::quietly(Error::new(ErrorKind::Internal, e.message)))?;
            self.ping_sent = Some(now);
        }
        Ok(())
    }

    /// The bytes to write now, the waiting PUBACKs in front, if there is anything to write;
    /// PUBACKs alone wait until they are due. Call [`Machine::transmitted`] once written.
    pub(super) fn poll_transmit(&mut self, now: Instant) -> Option<&[u8]> {
        if !self.out.is_empty() || self.ack_due.is_some_and(|due| due <= now) {
            self.take_acks();
        }
        (!self.out.is_empty()).then_some(&self.out[..])
    }

    /// What [`Machine::poll_transmit`] returned has been written.
    pub(super) fn transmitted(&mut self, now: Instant) {
        // Dropped rather than kept for the next packet: most of a session is spent waiting.
        self.out = BytesMut::new();
        self.last_sent = now;
    }

    /// What the driver hands on, in order.
    pub(super) fn take_events(&mut self) -> std::vec::Drain<'_, Event<K>> {
        self.events.drain(..)
    }

    /// Gives back the allocations of the tables that are empty now (waiters, queued
    /// publishes, undelivered events), so that a session between operations holds none: call
    /// once the events are taken. What is in use stays as it is.
    pub(super) fn shed(&mut self) {
        macro_rules! drop_if_empty {
            ($($table:ident),*) => {$(
                if self.$table.is_empty() && self.$table.capacity() > 0 {
                    self.$table = Default::default();
                }
            )*};
        }
        drop_if_empty!(subs, pubs, unsubs, queued, replies, events);
    }

    /// The room its tables and output hold, in entries and bytes (for tests): 0 between
    /// operations once shed.
    #[cfg(test)]
    pub(super) fn held(&self) -> usize {
        self.subs.capacity()
            + self.pubs.capacity()
            + self.unsubs.capacity()
            + self.queued.capacity()
            + self.replies.capacity()
            + self.events.capacity()
            + self.out.capacity()
            + self.acks.capacity()
    }

    /// Ends the session with `end`: every waiter still pending gets its error as an event,
    /// and the output holds the DISCONNECT it asks for (behind the waiting PUBACKs), if any.
    pub(super) fn finish(&mut self, end: &End) {
        self.out.clear();
        if let Some(reason) = end.disconnect_with {
            let _ = mqtt::encode(self.version, Outgoing::Disconnect { reason }, &mut self.out);
            self.take_acks();
        }
        let err = &end.error;
        for (_, to) in self.subs.drain() {
            self.events.push(Event::Subscribed(to, Err(err.clone())));
        }
        let pubs = self.pubs.drain().map(|(_, to)| to);
        let queued = self.queued.drain(..).map(|(_, _, to)| to);
        for to in pubs.chain(queued).collect::<Vec<_>>() {
            self.events.push(Event::Published(to, Err(err.clone())));
        }
        for slot in self.replies.drain(..) {
            if let Some(to) = slot.to {
                self.events.push(Event::Reply(to, Err(err.clone())));
            }
        }
        self.ack_due = None;
        self.keep_alive = None;
    }

    /// Frames and decodes the packet at the front of `rbuf`, if it is complete.
    fn take_packet(&mut self, rbuf: &mut BytesMut) -> Result<Option<Incoming>, End> {
        let (frame, want) = match mqtt::frame(rbuf, MAX_PACKET) {
            Ok(f) => f,
            Err(FrameError::TooLarge(n)) => {
                return Err(End {
                    error: errors::oversized(&self.endpoint, n, MAX_PACKET),
                    disconnect_with: Some(REASON_PACKET_TOO_LARGE),
                })
            }
            Err(FrameError::Malformed) => {
                return Err(End::protocol(
                    &self.endpoint,
                    REASON_MALFORMED,
                    "malformed remaining length",
                ))
            }
        };
        self.want = want;
        let Some(frame) = frame else {
            return Ok(None);
        };
        let bytes = mqtt::take_frame(rbuf, frame);
        self.want = 2;
        mqtt::decode(self.version, frame, bytes)
            .map(Some)
            .map_err(|why| {
                End::protocol(
                    &self.endpoint,
                    REASON_MALFORMED,
                    format!("malformed packet: {why}"),
                )
            })
    }

    /// The first packet: it must be a CONNACK that accepts us; adopts the broker's limits.
    fn connack(&mut self, packet: Incoming) -> Result<(), End> {
        let endpoint = &self.endpoint;
        let c = match packet {
            Incoming::ConnAck(c) => c,
            other => {
                return Err(End::protocol(
                    endpoint,
                    REASON_PROTOCOL_ERROR,
                    format!("{} before CONNACK", describe(&other)),
                ))
            }
        };
        if let Some(reason) = &c.refused {
            let message = if c.wants_v311 && self.version == MqttVersion::V5 {
                format!(
                    "{endpoint} refused the connection: {reason}: the broker does not speak \
                     MQTT 5; connect with MQTT 3.1.1"
                )
            } else {
                format!("{endpoint} refused the connection: {reason}")
            };
            return Err(End::quietly(Error::new(
                ErrorKind::ConnectionRefused,
                message,
            )));
        }
        if c.session_present {
            return Err(End::protocol(
                endpoint,
                REASON_PROTOCOL_ERROR,
                "CONNACK has Session Present set in answer to a clean start",
            ));
        }
        if c.receive_maximum == Some(0) {
            return Err(End::protocol(
                endpoint,
                REASON_PROTOCOL_ERROR,
                "CONNACK has Receive Maximum 0",
            ));
        }
        if c.maximum_packet_size == Some(0) {
            return Err(End::protocol(
                endpoint,
                REASON_PROTOCOL_ERROR,
                "CONNACK has Maximum Packet Size 0",
            ));
        }
        if c.maximum_qos == Some(0) {
            return Err(End::quietly(Error::new(
                ErrorKind::ConnectionRefused,
                format!("{endpoint} allows QoS 0 only; fleet provisioning needs QoS 1"),
            )));
        }
        if let Some(max) = c.receive_maximum {
            self.send_quota = usize::from(max.min(INFLIGHT));
        }
        if let Some(max) = c.maximum_packet_size {
            self.max_out = MAX_PACKET.min(max as usize);
        }
        if let Some(secs) = c.server_keep_alive {
            if secs == 0 {
                fp_log!(Level::Debug, "{endpoint} turned keep-alive off");
                self.keep_alive = None;
            } else {
                if secs != self.asked_keep_alive {
                    fp_log!(Level::Debug, "{endpoint} set keep-alive to {secs} s");
                }
                self.keep_alive = Some(Duration::from_secs(u64::from(secs)));
            }
        }
        self.up = true;
        Ok(())
    }

    fn incoming(&mut self, packet: Incoming, now: Instant) -> Result<(), End> {
        let endpoint = &self.endpoint;
        match packet {
            Incoming::Publish {
                topic,
                payload,
                qos,
                pkid,
                topic_alias,
            } => {
                if topic_alias {
                    return Err(End::protocol(
                        endpoint,
                        REASON_TOPIC_ALIAS_INVALID,
                        "PUBLISH with a Topic Alias, which the client does not allow",
                    ));
                }
                match qos {
                    0 => {}
                    1 => {
                        // Acknowledged before it is handed on; the PUBACK goes out with our
                        // next packet, or after ACK_DELAY at the latest.
                        mqtt::encode(self.version, Outgoing::PubAck { pkid }, &mut self.acks)
                            .map_err(|e| End::quietly(Error::new(ErrorKind::Internal, e)))?;
                        self.ack_due.get_or_insert(now + ACK_DELAY);
                    }
                    _ => {
                        return Err(End::protocol(
                            endpoint,
                            REASON_QOS_NOT_SUPPORTED,
                            "QoS 2 PUBLISH on a QoS 1 subscription",
                        ))
                    }
                }
                self.deliver(topic, payload);
            }
            Incoming::PubAck { pkid, failure } => {
                let Some(to) = self.pubs.remove(&pkid) else {
                    return Err(End::protocol(
                        endpoint,
                        REASON_PROTOCOL_ERROR,
                        format!("PUBACK for packet id {pkid}, which is not awaiting one"),
                    ));
                };
                let outcome = match failure {
                    None => Ok(()),
                    Some(reason) => Err(Error::new(
                        ErrorKind::PublishRefused,
                        format!("{endpoint} refused the publish: {reason}"),
                    )),
                };
                self.events.push(Event::Published(to, outcome));
                self.send_queued();
            }
            Incoming::SubAck { pkid, outcome } => {
                let Some(to) = self.subs.remove(&pkid) else {
                    return Err(End::protocol(
                        endpoint,
                        REASON_PROTOCOL_ERROR,
                        format!("SUBACK for packet id {pkid}, which is not awaiting one"),
                    ));
                };
                self.events.push(Event::Subscribed(to, Ok(outcome)));
            }
            Incoming::UnsubAck { pkid } => {
                let Some(at) = self.unsubs.iter().position(|&id| id == pkid) else {
                    return Err(End::protocol(
                        endpoint,
                        REASON_PROTOCOL_ERROR,
                        format!("UNSUBACK for packet id {pkid}, which is not awaiting one"),
                    ));
                };
                self.unsubs.swap_remove(at);
            }
            Incoming::PingResp => self.ping_sent = None,
            Incoming::Disconnect { reason } => {
                return Err(End::quietly(Error::new(
                    ErrorKind::Disconnected,
                    format!("{endpoint} closed the connection: {reason}"),
                )))
            }
            Incoming::ConnAck(_) => {
                return Err(End::protocol(
                    endpoint,
                    REASON_PROTOCOL_ERROR,
                    "a second CONNACK",
                ))
            }
            Incoming::Unexpected(name) => {
                return Err(End::protocol(
                    endpoint,
                    REASON_PROTOCOL_ERROR,
                    format!("it sent {name}, which a broker never sends to a client"),
                ))
            }
        }
        Ok(())
    }

    /// Hands a received message to the operation waiting on its topic.
    fn deliver(&mut self, topic: String, payload: Bytes) {
        let slot = self
            .replies
            .iter_mut()
            .find(|s| s.to.is_some() && (s.accepted == topic || s.rejected == topic));
        let Some(slot) = slot else {
            fp_log!(
                Level::Info,
                "ignoring a message on {topic} ({} bytes): no operation waits for it",
                payload.len()
            );
            return;
        };
        let accepted = slot.accepted == topic;
        let to = if slot.many {
            slot.to.clone()
        } else {
            slot.to.take()
        };
        if let Some(to) = to {
            fp_log!(Level::Debug, "reply on {topic} ({} bytes)", payload.len());
            self.events.push(Event::Reply(
                to,
                Ok(Reply {
                    accepted,
                    topic,
                    payload,
                }),
            ));
        }
    }

    /// Sends queued publishes while the broker's Receive Maximum allows.
    fn send_queued(&mut self) {
        while self.pubs.len() < self.send_quota {
            let Some((topic, payload, to)) = self.queued.pop_front() else {
                break;
            };
            let pkid = self.pkid();
            let len = payload.len();
            match self.queue(Outgoing::Publish {
                pkid,
                topic: &topic,
                payload,
            }) {
                Ok(()) => {
                    fp_log!(Level::Debug, "PUBLISH {topic} ({len} bytes)");
                    self.pubs.insert(pkid, to);
                }
                Err(e) => self.events.push(Event::Published(to, Err(e))),
            }
        }
    }

    /// The next packet id not in use by a pending SUBSCRIBE, PUBLISH or UNSUBSCRIBE.
    fn pkid(&mut self) -> u16 {
        loop {
            self.next_pkid = self.next_pkid.checked_add(1).unwrap_or(1);
            let id = self.next_pkid;
            if !self.subs.contains_key(&id)
                && !self.pubs.contains_key(&id)
                && !self.unsubs.contains(&id)
            {
                return id;
            }
        }
    }

    /// Encodes `packet` into the output. One that cannot be encoded is an invalid argument;
    /// one larger than the broker's Maximum Packet Size (MQTT 5 CONNACK) is refused by the
    /// broker's limit before it is sent: a SUBSCRIBE as a refused subscription, anything else
    /// (in practice a PUBLISH) as a refused publish.
    fn queue(&mut self, packet: Outgoing<'_>) -> Result<(), Error> {
        let (name, refused) = match packet {
            Outgoing::Subscribe { .. } => ("SUBSCRIBE", ErrorKind::SubscribeRefused),
            Outgoing::Publish { .. } => ("PUBLISH", ErrorKind::PublishRefused),
            _ => ("packet", ErrorKind::PublishRefused),
        };
        let before = self.out.len();
        let written = mqtt::encode(self.version, packet, &mut self.out)
            .map_err(|e| Error::new(ErrorKind::InvalidArgument, e))?;
        if written <= self.max_out {
            return Ok(());
        }
        self.out.truncate(before);
        Err(if self.max_out < MAX_PACKET {
            Error::new(
                refused,
                format!(
                    "{} takes packets of at most {} bytes (its Maximum Packet Size); this \
                     {name} has {written}, so it was not sent",
                    self.endpoint, self.max_out
                ),
            )
        } else {
            Error::new(
                ErrorKind::InvalidArgument,
                format!(
                    "this {name} has {written} bytes; the most the library sends is {MAX_PACKET}"
                ),
            )
        })
    }

    /// Puts the waiting PUBACKs in front of the output.
    fn take_acks(&mut self) {
        if self.acks.is_empty() {
            return;
        }
        let mut out = std::mem::take(&mut self.acks);
        out.extend_from_slice(&self.out);
        self.out = out;
        self.ack_due = None;
    }
}

fn describe(p: &Incoming) -> &'static str {
    match p {
        Incoming::ConnAck(_) => "CONNACK",
        Incoming::Publish { .. } => "PUBLISH",
        Incoming::PubAck { .. } => "PUBACK",
        Incoming::SubAck { .. } => "SUBACK",
        Incoming::UnsubAck { .. } => "UNSUBACK",
        Incoming::PingResp => "PINGRESP",
        Incoming::Disconnect { .. } => "DISCONNECT",
        Incoming::Unexpected(name) => name,
    }
}

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;
