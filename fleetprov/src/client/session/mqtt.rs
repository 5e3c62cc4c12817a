//! The MQTT wire format for the session: framing, the packets a client sends, and the packets
//! it receives, with the differences between MQTT 3.1.1 and 5 removed.
//!
//! Packets are encoded and decoded with rumqttc's public codec (`mqttbytes` v4 and v5). The
//! framing is ours, so that the short forms the codec refuses are understood (an MQTT 5
//! DISCONNECT of remaining length 0 or 1, a 3.1.1 CONNACK in answer to an MQTT 5 CONNECT), so
//! that a frame's length is checked before it is buffered, and so that the bytes of a frame are
//! wiped from the receive buffer once decoded (replies carry private keys).

use bytes::{Buf, Bytes, BytesMut};
use rumqttc::mqttbytes::v4;
use rumqttc::v5::mqttbytes::v5;
use zeroize::Zeroize;

use super::super::options::MqttVersion;

/// The longest fixed header: one type byte and a four-byte remaining length.
const MAX_FIXED_HEADER: usize = 5;

/// One frame's place in the receive buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Frame {
    /// The first byte: packet type and flags.
    pub byte1: u8,
    pub header_len: usize,
    pub remaining_len: usize,
}

impl Frame {
    pub(super) fn len(&self) -> usize {
        self.header_len + self.remaining_len
    }

    fn kind(&self) -> u8 {
        self.byte1 >> 4
    }
}

/// Why the bytes received cannot be framed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum FrameError {
    /// The remaining length is not a valid variable byte integer.
    Malformed,
    /// The packet is longer than we accept; the length it announced.
    TooLarge(usize),
}

/// Looks for one complete frame at the start of `buf`. `Ok(None)`: more bytes are needed
/// (`need` then says how many the whole frame takes, once the header is complete).
pub(super) fn frame(buf: &[u8], max: usize) -> Result<(Option<Frame>, usize), FrameError> {
    if buf.len() < 2 {
        return Ok((None, 2));
    }
    let mut remaining_len = 0usize;
    let mut header_len = 1;
    loop {
        if header_len == MAX_FIXED_HEADER {
            return Err(FrameError::Malformed);
        }
        let Some(&byte) = buf.get(header_len) else {
            return Ok((None, header_len + 1));
        };
        remaining_len |= usize::from(byte & 0x7f) << (7 * (header_len - 1));
        header_len += 1;
        if byte & 0x80 == 0 {
            break;
        }
    }
    if !flags_valid(buf[0]) {
        return Err(FrameError::Malformed);
    }
    if remaining_len > max {
        return Err(FrameError::TooLarge(remaining_len));
    }
    let f = Frame {
        byte1: buf[0],
        header_len,
        remaining_len,
    };
    if buf.len() < f.len() {
        return Ok((None, f.len()));
    }
    Ok((Some(f), f.len()))
}

/// Whether the first byte's flags are the ones MQTT fixes for its packet type (PUBLISH has
/// its own; type 0 is reserved). Checked at once, so bytes that are no MQTT at all (an HTTP
/// answer, say) are refused from their first byte rather than waited on.
fn flags_valid(byte1: u8) -> bool {
    let flags = byte1 & 0x0f;
    match byte1 >> 4 {
        0 => false,
        // QoS 3 is malformed.
        3 => flags & 0b0110 != 0b0110,
        6 | 8 | 10 => flags == 0b0010,
        _ => flags == 0,
    }
}

/// Takes the frame `f` off the front of `buf` into a buffer of its own, and wipes the bytes it
/// occupied in `buf` (the receive buffer is reused, and a reply may carry a private key).
pub(super) fn take_frame(buf: &mut BytesMut, f: Frame) -> BytesMut {
    let n = f.len();
    let own = BytesMut::from(&buf[..n]);
    buf[..n].zeroize();
    buf.advance(n);
    own
}

/// What CONNACK said, both versions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct ConnAck {
    /// Session Present: never right in answer to our clean start.
    pub session_present: bool,
    /// The refusal's reason; `None` when accepted.
    pub refused: Option<String>,
    /// A 3.1.1 CONNACK "unacceptable protocol version" in answer to an MQTT 5 CONNECT.
    pub wants_v311: bool,
    pub server_keep_alive: Option<u16>,
    pub receive_maximum: Option<u16>,
    pub maximum_packet_size: Option<u32>,
    pub maximum_qos: Option<u8>,
}

/// A packet from the broker, both versions.
#[derive(Debug)]
pub(super) enum Incoming {
    ConnAck(ConnAck),
    Publish {
        topic: String,
        payload: Bytes,
        /// 0, 1 or 2.
        qos: u8,
        pkid: u16,
        /// MQTT 5: the packet carries a Topic Alias (we allow none).
        topic_alias: bool,
    },
    PubAck {
        pkid: u16,
        /// The failure reason; `None` for success (and "no matching subscribers").
        failure: Option<String>,
    },
    SubAck {
        pkid: u16,
        /// Per filter: `None` granted, `Some(reason)` refused.
        outcome: Vec<Option<String>>,
    },
    UnsubAck {
        pkid: u16,
    },
    PingResp,
    /// MQTT 5 DISCONNECT from the broker, its reason as text.
    Disconnect {
        reason: String,
    },
    /// A packet type a broker never sends to a client (CONNECT, SUBSCRIBE, ...), or one this
    /// client never asked for (QoS 2 flow packets).
    Unexpected(&'static str),
}

/// Decodes one frame taken by [`take_frame`]. `Err` is a malformed packet, with the reason.
pub(super) fn decode(
    version: MqttVersion,
    f: Frame,
    mut bytes: BytesMut,
) -> Result<Incoming, String> {
    let kind = f.kind();
    // Short forms the codec refuses or misreads.
    match (version, kind) {
        (MqttVersion::V5, 14) if f.remaining_len <= 1 => {
            let code = if f.remaining_len == 1 {
                bytes[f.header_len]
            } else {
                0
            };
            return Ok(Incoming::Disconnect {
                reason: reason_text(code, None),
            });
        }
        (MqttVersion::V5, 2) if f.remaining_len == 2 => {
            // A 3.1.1 broker answers an MQTT 5 CONNECT with its own, two-byte, CONNACK.
            let code = bytes[f.header_len + 1];
            return Ok(Incoming::ConnAck(ConnAck {
                session_present: bytes[f.header_len] & 1 == 1,
                wants_v311: code == 1,
                refused: Some(v311_connack_reason(code)),
                ..ConnAck::default()
            }));
        }
        _ => {}
    }
    let name = match kind {
        1 => Some("CONNECT"),
        6 => Some("PUBREL"),
        7 => Some("PUBCOMP"),
        8 => Some("SUBSCRIBE"),
        10 => Some("UNSUBSCRIBE"),
        12 => Some("PINGREQ"),
        15 => Some("AUTH"),
        _ => None,
    };
    if let Some(name) = name {
        return Ok(Incoming::Unexpected(name));
    }
    if kind == 5 {
        return Ok(Incoming::Unexpected("PUBREC"));
    }
    match version {
        MqttVersion::V311 => decode_v4(&mut bytes, f.remaining_len),
        MqttVersion::V5 => decode_v5(&mut bytes, f.remaining_len),
    }
}

/// rumqttc's `Packet::read` (3.1.1) for the packets a broker sends, so that the decoders of
/// the ones it never sends (CONNECT, SUBSCRIBE, ...; [`decode`] answers those before) are not
/// linked in: about 15 KB of the C library with [`read_v5`]. Same checks, same errors.
fn read_v4(
    bytes: &mut BytesMut,
    remaining_len: usize,
) -> Result<v4::Packet, rumqttc::mqttbytes::Error> {
    use rumqttc::mqttbytes::{check, PacketType};
    use v4::Packet;
    let header = check(bytes.iter(), bytes.len())?;
    let frame = bytes.split_to(header.frame_length());
    let kind = header.packet_type()?;
    if remaining_len == 0 {
        return match kind {
            PacketType::PingReq => Ok(Packet::PingReq),
            PacketType::PingResp => Ok(Packet::PingResp),
            PacketType::Disconnect => Ok(Packet::Disconnect),
            _ => Err(rumqttc::mqttbytes::Error::PayloadRequired),
        };
    }
    let frame = frame.freeze();
    Ok(match kind {
        PacketType::ConnAck => Packet::ConnAck(v4::ConnAck::read(header, frame)?),
        PacketType::Publish => Packet::Publish(v4::Publish::read(header, frame)?),
        PacketType::PubAck => Packet::PubAck(v4::PubAck::read(header, frame)?),
        PacketType::SubAck => Packet::SubAck(v4::SubAck::read(header, frame)?),
        PacketType::UnsubAck => Packet::UnsubAck(v4::UnsubAck::read(header, frame)?),
        PacketType::PingResp => Packet::PingResp,
        PacketType::Disconnect => Packet::Disconnect,
        // Answered by `decode` before this is called.
        PacketType::Connect
        | PacketType::PubRec
        | PacketType::PubRel
        | PacketType::PubComp
        | PacketType::Subscribe
        | PacketType::Unsubscribe
        | PacketType::PingReq => Packet::PingReq,
    })
}

/// rumqttc's `Packet::read` (MQTT 5) for the packets a broker sends; see [`read_v4`].
fn read_v5(
    bytes: &mut BytesMut,
    remaining_len: usize,
) -> Result<v5::Packet, rumqttc::v5::mqttbytes::Error> {
    use v5::{check, Packet, PacketType};
    let max = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
    let header = check(bytes.iter(), Some(max))?;
    let frame = bytes.split_to(header.frame_length());
    let kind = header.packet_type()?;
    if remaining_len == 0 {
        return match kind {
            PacketType::PingReq => Ok(Packet::PingReq(v5::PingReq)),
            PacketType::PingResp => Ok(Packet::PingResp(v5::PingResp)),
            _ => Err(rumqttc::v5::mqttbytes::Error::PayloadRequired),
        };
    }
    let frame = frame.freeze();
    Ok(match kind {
        PacketType::ConnAck => Packet::ConnAck(v5::ConnAck::read(header, frame)?),
        PacketType::Publish => Packet::Publish(v5::Publish::read(header, frame)?),
        PacketType::PubAck => Packet::PubAck(v5::PubAck::read(header, frame)?),
        PacketType::SubAck => Packet::SubAck(v5::SubAck::read(header, frame)?),
        PacketType::UnsubAck => Packet::UnsubAck(v5::UnsubAck::read(header, frame)?),
        PacketType::PingResp => Packet::PingResp(v5::PingResp),
        PacketType::Disconnect => Packet::Disconnect(v5::Disconnect::read(header, frame)?),
        // Answered by `decode` before this is called.
        PacketType::Connect
        | PacketType::PubRec
        | PacketType::PubRel
        | PacketType::PubComp
        | PacketType::Subscribe
        | PacketType::Unsubscribe
        | PacketType::PingReq => Packet::PingReq(v5::PingReq),
    })
}

fn decode_v4(bytes: &mut BytesMut, remaining_len: usize) -> Result<Incoming, String> {
    use v4::Packet;
    let packet = read_v4(bytes, remaining_len).map_err(|e| e.to_string())?;
    Ok(match packet {
        Packet::ConnAck(c) => {
            let code = c.code as u8;
            Incoming::ConnAck(ConnAck {
                session_present: c.session_present,
                refused: (code != 0).then(|| v311_connack_reason(code)),
                ..ConnAck::default()
            })
        }
        Packet::Publish(p) if p.topic.is_empty() => {
            return Err("PUBLISH with an empty topic".into())
        }
        Packet::Publish(p) => Incoming::Publish {
            topic: p.topic,
            payload: p.payload,
            qos: p.qos as u8,
            pkid: p.pkid,
            topic_alias: false,
        },
        Packet::PubAck(a) => Incoming::PubAck {
            pkid: a.pkid,
            failure: None,
        },
        Packet::SubAck(s) => Incoming::SubAck {
            pkid: s.pkid,
            outcome: s
                .return_codes
                .iter()
                .map(|c| match c {
                    v4::SubscribeReasonCode::Success(_) => None,
                    v4::SubscribeReasonCode::Failure => Some(reason_text(0x80, None)),
                })
                .collect(),
        },
        Packet::UnsubAck(u) => Incoming::UnsubAck { pkid: u.pkid },
        Packet::PingResp => Incoming::PingResp,
        // A 3.1.1 server never sends DISCONNECT.
        Packet::Disconnect => Incoming::Unexpected("DISCONNECT"),
        Packet::Connect(_)
        | Packet::PubRec(_)
        | Packet::PubRel(_)
        | Packet::PubComp(_)
        | Packet::Subscribe(_)
        | Packet::Unsubscribe(_)
        | Packet::PingReq => Incoming::Unexpected("a client-only packet"),
    })
}

fn decode_v5(bytes: &mut BytesMut, remaining_len: usize) -> Result<Incoming, String> {
    use v5::Packet;
    let packet = read_v5(bytes, remaining_len).map_err(|e| e.to_string())?;
    Ok(match packet {
        Packet::ConnAck(c) => {
            let code = connack_code(c.code);
            let p = c.properties.as_ref();
            Incoming::ConnAck(ConnAck {
                session_present: c.session_present,
                refused: (code != 0)
                    .then(|| reason_text(code, p.and_then(|p| p.reason_string.as_deref()))),
                wants_v311: code == 0x84,
                server_keep_alive: p.and_then(|p| p.server_keep_alive),
                receive_maximum: p.and_then(|p| p.receive_max),
                maximum_packet_size: p.and_then(|p| p.max_packet_size),
                maximum_qos: p.and_then(|p| p.max_qos),
            })
        }
        Packet::Publish(p)
            if p.topic.is_empty()
                && p.properties
                    .as_ref()
                    .is_none_or(|p| p.topic_alias.is_none()) =>
        {
            return Err("PUBLISH with an empty topic and no Topic Alias".into())
        }
        Packet::Publish(p) => Incoming::Publish {
            topic: String::from_utf8(p.topic.to_vec())
                .map_err(|_| "PUBLISH topic is not UTF-8".to_owned())?,
            payload: p.payload,
            qos: p.qos as u8,
            pkid: p.pkid,
            topic_alias: p.properties.is_some_and(|p| p.topic_alias.is_some()),
        },
        Packet::PubAck(a) => {
            let code = puback_code(a.reason);
            let why = a.properties.and_then(|p| p.reason_string);
            Incoming::PubAck {
                pkid: a.pkid,
                // 0x10: accepted, nobody subscribed (the service listens by other means).
                failure: (code >= 0x80).then(|| reason_text(code, why.as_deref())),
            }
        }
        Packet::SubAck(s) => {
            let why = s.properties.and_then(|p| p.reason_string);
            Incoming::SubAck {
                pkid: s.pkid,
                outcome: s
                    .return_codes
                    .iter()
                    .map(|c| {
                        let code = suback_code(*c);
                        (code >= 0x80).then(|| reason_text(code, why.as_deref()))
                    })
                    .collect(),
            }
        }
        Packet::UnsubAck(u) => Incoming::UnsubAck { pkid: u.pkid },
        Packet::PingResp(_) => Incoming::PingResp,
        Packet::Disconnect(d) => Incoming::Disconnect {
            reason: reason_text(
                d.reason_code as u8,
                d.properties
                    .as_ref()
                    .and_then(|p| p.reason_string.as_deref()),
            ),
        },
        Packet::Auth(_)
        | Packet::Connect(..)
        | Packet::PubRec(_)
        | Packet::PubRel(_)
        | Packet::PubComp(_)
        | Packet::Subscribe(_)
        | Packet::Unsubscribe(_)
        | Packet::PingReq(_) => Incoming::Unexpected("a client-only packet"),
    })
}

fn connack_code(c: v5::ConnectReturnCode) -> u8 {
    use v5::ConnectReturnCode as C;
    match c {
        C::Success => 0x00,
        C::RefusedProtocolVersion => 0x84,
        C::BadClientId => 0x85,
        C::ServiceUnavailable => 0x88,
        C::UnspecifiedError => 0x80,
        C::MalformedPacket => 0x81,
        C::ProtocolError => 0x82,
        C::ImplementationSpecificError => 0x83,
        C::UnsupportedProtocolVersion => 0x84,
        C::ClientIdentifierNotValid => 0x85,
        C::BadUserNamePassword => 0x86,
        C::NotAuthorized => 0x87,
        C::ServerUnavailable => 0x88,
        C::ServerBusy => 0x89,
        C::Banned => 0x8a,
        C::BadAuthenticationMethod => 0x8c,
        C::TopicNameInvalid => 0x90,
        C::PacketTooLarge => 0x95,
        C::QuotaExceeded => 0x97,
        C::PayloadFormatInvalid => 0x99,
        C::RetainNotSupported => 0x9a,
        C::QoSNotSupported => 0x9b,
        C::UseAnotherServer => 0x9c,
        C::ServerMoved => 0x9d,
        C::ConnectionRateExceeded => 0x9f,
    }
}

fn puback_code(r: v5::PubAckReason) -> u8 {
    use v5::PubAckReason as R;
    match r {
        R::Success => 0x00,
        R::NoMatchingSubscribers => 0x10,
        R::UnspecifiedError => 0x80,
        R::ImplementationSpecificError => 0x83,
        R::NotAuthorized => 0x87,
        R::TopicNameInvalid => 0x90,
        R::PacketIdentifierInUse => 0x91,
        R::QuotaExceeded => 0x97,
        R::PayloadFormatInvalid => 0x99,
    }
}

fn suback_code(c: v5::SubscribeReasonCode) -> u8 {
    use v5::SubscribeReasonCode as S;
    match c {
        S::Success(q) => q as u8,
        S::Failure | S::Unspecified => 0x80,
        S::ImplementationSpecific => 0x83,
        S::NotAuthorized => 0x87,
        S::TopicFilterInvalid => 0x8f,
        S::PkidInUse => 0x91,
        S::QuotaExceeded => 0x97,
        S::SharedSubscriptionsNotSupported => 0x9e,
        S::SubscriptionIdNotSupported => 0xa1,
        S::WildcardSubscriptionsNotSupported => 0xa2,
    }
}

/// The meaning of a 3.1.1 CONNACK return code.
fn v311_connack_reason(code: u8) -> String {
    let what = match code {
        1 => "unacceptable protocol version",
        2 => "identifier rejected",
        3 => "server unavailable",
        4 => "bad user name or password",
        5 => "not authorized",
        _ => "unknown return code",
    };
    format!("{what} (0x{code:02x})")
}

/// An MQTT 5 reason code as text: its name, the code, and the broker's reason string if any.
pub(super) fn reason_text(code: u8, reason_string: Option<&str>) -> String {
    let name = match code {
        0x00 => "normal disconnection",
        0x04 => "disconnect with will message",
        0x10 => "no matching subscribers",
        0x80 => "unspecified error",
        0x81 => "malformed packet",
        0x82 => "protocol error",
        0x83 => "implementation specific error",
        0x84 => "unsupported protocol version",
        0x85 => "client identifier not valid",
        0x86 => "bad user name or password",
        0x87 => "not authorized",
        0x88 => "server unavailable",
        0x89 => "server busy",
        0x8a => "banned",
        0x8b => "server shutting down",
        0x8c => "bad authentication method",
        0x8d => "keep alive timeout",
        0x8e => "session taken over",
        0x8f => "topic filter invalid",
        0x90 => "topic name invalid",
        0x91 => "packet identifier in use",
        0x92 => "packet identifier not found",
        0x93 => "receive maximum exceeded",
        0x94 => "topic alias invalid",
        0x95 => "packet too large",
        0x96 => "message rate too high",
        0x97 => "quota exceeded",
        0x98 => "administrative action",
        0x99 => "payload format invalid",
        0x9a => "retain not supported",
        0x9b => "QoS not supported",
        0x9c => "use another server",
        0x9d => "server moved",
        0x9e => "shared subscriptions not supported",
        0x9f => "connection rate exceeded",
        0xa0 => "maximum connect time",
        0xa1 => "subscription identifiers not supported",
        0xa2 => "wildcard subscriptions not supported",
        _ => "unknown reason code",
    };
    match reason_string {
        Some(s) if !s.is_empty() => format!("{name} (0x{code:02x}): {s}"),
        _ => format!("{name} (0x{code:02x})"),
    }
}

/// What the session sends. Each is encoded into the write buffer by [`encode`].
pub(super) enum Outgoing<'a> {
    Connect {
        client_id: &'a str,
        keep_alive: u16,
        /// MQTT 5: the most unacknowledged QoS 1 publishes we accept, and our largest packet.
        receive_maximum: u16,
        maximum_packet_size: u32,
    },
    Subscribe {
        pkid: u16,
        filters: &'a [String],
    },
    Unsubscribe {
        pkid: u16,
        filters: &'a [String],
    },
    Publish {
        pkid: u16,
        topic: &'a str,
        payload: Bytes,
    },
    PubAck {
        pkid: u16,
    },
    PingReq,
    /// MQTT 5 carries a reason code; 3.1.1 ignores it.
    Disconnect {
        reason: u8,
    },
}

/// The encoded size of `packet`, so a packet the broker would refuse is never sent.
pub(super) fn encode(
    version: MqttVersion,
    packet: Outgoing<'_>,
    out: &mut BytesMut,
) -> Result<usize, String> {
    match version {
        MqttVersion::V311 => encode_v4(packet, out).map_err(|e| e.to_string()),
        MqttVersion::V5 => encode_v5(packet, out).map_err(|e| e.to_string()),
    }
}

fn encode_v4(packet: Outgoing<'_>, out: &mut BytesMut) -> Result<usize, rumqttc::mqttbytes::Error> {
    use rumqttc::mqttbytes::QoS;
    match packet {
        Outgoing::Connect {
            client_id,
            keep_alive,
            ..
        } => {
            let mut c = v4::Connect::new(client_id);
            c.keep_alive = keep_alive;
            c.clean_session = true;
            c.write(out)
        }
        Outgoing::Subscribe { pkid, filters } => v4::Subscribe {
            pkid,
            filters: filters
                .iter()
                .map(|f| v4::SubscribeFilter::new(f.clone(), QoS::AtLeastOnce))
                .collect(),
        }
        .write(out),
        Outgoing::Unsubscribe { pkid, filters } => v4::Unsubscribe {
            pkid,
            topics: filters.to_vec(),
        }
        .write(out),
        Outgoing::Publish {
            pkid,
            topic,
            payload,
        } => v4::Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: false,
            topic: topic.to_owned(),
            pkid,
            payload,
        }
        .write(out),
        Outgoing::PubAck { pkid } => v4::PubAck::new(pkid).write(out),
        Outgoing::PingReq => v4::PingReq.write(out),
        Outgoing::Disconnect { .. } => v4::Disconnect.write(out),
    }
}

fn encode_v5(
    packet: Outgoing<'_>,
    out: &mut BytesMut,
) -> Result<usize, rumqttc::v5::mqttbytes::Error> {
    use rumqttc::v5::mqttbytes::QoS;
    match packet {
        Outgoing::Connect {
            client_id,
            keep_alive,
            receive_maximum,
            maximum_packet_size,
        } => {
            let mut props = v5::ConnectProperties::new();
            props.receive_maximum = Some(receive_maximum);
            props.max_packet_size = Some(maximum_packet_size);
            // Topic Alias Maximum absent means 0: the broker may not use aliases.
            props.topic_alias_max = None;
            v5::Connect {
                keep_alive,
                client_id: client_id.to_owned(),
                clean_start: true,
                properties: Some(props),
            }
            .write(&None, &None, out)
        }
        Outgoing::Subscribe { pkid, filters } => {
            let mut s = v5::Subscribe::new_many(
                filters
                    .iter()
                    .map(|f| v5::Filter::new(f.clone(), QoS::AtLeastOnce)),
                None,
            );
            s.pkid = pkid;
            s.write(out)
        }
        Outgoing::Unsubscribe { pkid, filters } => v5::Unsubscribe {
            pkid,
            filters: filters.to_vec(),
            properties: None,
        }
        .write(out),
        Outgoing::Publish {
            pkid,
            topic,
            payload,
        } => v5::Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: false,
            topic: Bytes::copy_from_slice(topic.as_bytes()),
            pkid,
            payload,
            properties: None,
        }
        .write(out),
        Outgoing::PubAck { pkid } => v5::PubAck::new(pkid, None).write(out),
        Outgoing::PingReq => v5::PingReq::write(out),
        Outgoing::Disconnect { reason } => {
            // Written by hand: the codec's DISCONNECT with a reason code and no properties
            // carries a wrong remaining length. The reason code and an empty property length
            // (the shorter legal forms are ones some decoders, rumqttc's among them, refuse).
            if reason == 0 {
                out.extend_from_slice(&[0xe0, 0x00]);
                Ok(2)
            } else {
                out.extend_from_slice(&[0xe0, 0x02, reason, 0x00]);
                Ok(4)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn incoming(version: MqttVersion, raw: &[u8]) -> Incoming {
        let mut buf = BytesMut::from(raw);
        let (f, _) = frame(&buf, 1 << 20).unwrap();
        let f = f.expect("a whole frame");
        let own = take_frame(&mut buf, f);
        assert!(buf.is_empty());
        decode(version, f, own).unwrap()
    }

    #[test]
    fn framing_waits_for_whole_packets_and_checks_the_length_first() {
        assert_eq!(frame(&[0x30], 100).unwrap(), (None, 2));
        assert_eq!(frame(&[0x30, 0x80], 100).unwrap(), (None, 3));
        let (f, need) = frame(&[0x30, 0x05, 1, 2], 100).unwrap();
        assert_eq!((f, need), (None, 7));
        assert_eq!(
            frame(&[0x30, 0xff, 0xff, 0x7f], 1000),
            Err(FrameError::TooLarge(2_097_151))
        );
        assert_eq!(
            frame(&[0x30, 0xff, 0xff, 0xff, 0xff, 0x01], usize::MAX),
            Err(FrameError::Malformed)
        );
    }

    #[test]
    fn taking_a_frame_wipes_its_bytes() {
        let mut buf = BytesMut::from(&[0xd0, 0x00, 0x30, 0x02, 0x00][..]);
        let (f, _) = frame(&buf, 10).unwrap();
        let own = take_frame(&mut buf, f.unwrap());
        assert_eq!(&own[..], &[0xd0, 0x00]);
        assert_eq!(&buf[..], &[0x30, 0x02, 0x00]);
    }

    #[test]
    fn short_disconnects_keep_their_reason() {
        match incoming(MqttVersion::V5, &[0xe0, 0x01, 0x8b]) {
            Incoming::Disconnect { reason } => assert!(reason.contains("server shutting down")),
            other => panic!("{other:?}"),
        }
        match incoming(MqttVersion::V5, &[0xe0, 0x00]) {
            Incoming::Disconnect { reason } => assert!(reason.contains("normal disconnection")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_311_connack_to_an_mqtt5_connect_says_so() {
        match incoming(MqttVersion::V5, &[0x20, 0x02, 0x00, 0x01]) {
            Incoming::ConnAck(c) => {
                assert!(c.wants_v311);
                assert!(c.refused.unwrap().contains("unacceptable protocol version"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn connack_properties_are_read() {
        // Session present 0, success, properties: Server Keep Alive 0, Receive Maximum 0.
        let raw = [
            0x20, 0x09, 0x00, 0x00, 0x06, 0x13, 0x00, 0x00, 0x21, 0x00, 0x00,
        ];
        match incoming(MqttVersion::V5, &raw) {
            Incoming::ConnAck(c) => {
                assert_eq!(c.refused, None);
                assert_eq!(c.server_keep_alive, Some(0));
                assert_eq!(c.receive_maximum, Some(0));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn our_disconnect_has_the_right_length() {
        let mut out = BytesMut::new();
        encode(
            MqttVersion::V5,
            Outgoing::Disconnect { reason: 0x94 },
            &mut out,
        )
        .unwrap();
        assert_eq!(&out[..], &[0xe0, 0x02, 0x94, 0x00]);
    }

    #[test]
    fn puback_refusal_is_named() {
        match incoming(MqttVersion::V5, &[0x40, 0x03, 0x00, 0x07, 0x87]) {
            Incoming::PubAck { pkid, failure } => {
                assert_eq!(pkid, 7);
                assert!(failure.unwrap().contains("not authorized"));
            }
            other => panic!("{other:?}"),
        }
    }
}
