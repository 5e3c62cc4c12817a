//! One packet model for MQTT 3.1.1 and 5 on top of rumqttc's public codecs.
//!
//! The connection logic sees only the types here; which of rumqttc's two codecs reads and writes
//! the bytes is decided once per connection by the protocol level in CONNECT.

use bytes::{Bytes, BytesMut};
use rumqttc::mqttbytes as m4;
use rumqttc::mqttbytes::v4;
use rumqttc::v5::mqttbytes as m5;
use rumqttc::v5::mqttbytes::v5;

pub(crate) use rumqttc::v5::mqttbytes::v5::DisconnectReasonCode as Reason;
/// MQTT 5 PUBLISH properties, relayed from publisher to subscribers.
pub(crate) use rumqttc::v5::mqttbytes::v5::PublishProperties;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Version {
    V4,
    V5,
}

/// As the log names it: "MQTT 3.1.1", "MQTT 5".
impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Version::V4 => "MQTT 3.1.1",
            Version::V5 => "MQTT 5",
        })
    }
}

/// What the first bytes of a connection say about its CONNECT packet.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Peek {
    NeedMore,
    Level(Version),
    /// A CONNECT with a protocol level this endpoint does not speak (e.g. 3 for MQTT 3.1).
    UnsupportedLevel,
    /// Not a CONNECT at all.
    NotConnect,
}

/// Look at the protocol level of the CONNECT at the start of `buf` without decoding it, so the
/// right codec can be chosen.
pub(crate) fn peek_connect(buf: &[u8]) -> Peek {
    let Some(&first) = buf.first() else {
        return Peek::NeedMore;
    };
    if first != 0x10 {
        return Peek::NotConnect;
    }
    // Skip the variable-length remaining-length field (1 to 4 bytes).
    let mut pos = 1;
    loop {
        let Some(&b) = buf.get(pos) else {
            return Peek::NeedMore;
        };
        pos += 1;
        if b & 0x80 == 0 {
            break;
        }
        if pos > 4 {
            return Peek::NotConnect;
        }
    }
    // Protocol name (length-prefixed) then the level byte.
    let Some(name_len) = buf.get(pos..pos + 2) else {
        return Peek::NeedMore;
    };
    let name_len = usize::from(u16::from_be_bytes([name_len[0], name_len[1]]));
    if name_len > 6 {
        return Peek::NotConnect;
    }
    let Some(rest) = buf.get(pos + 2..pos + 2 + name_len + 1) else {
        return Peek::NeedMore;
    };
    let (name, level) = rest.split_at(name_len);
    match (name, level[0]) {
        (b"MQTT", 4) => Peek::Level(Version::V4),
        (b"MQTT", 5) => Peek::Level(Version::V5),
        (b"MQTT", _) | (b"MQIsdp", _) => Peek::UnsupportedLevel,
        _ => Peek::NotConnect,
    }
}

/// The CONNACK a 3.1.1 server sends for an unacceptable protocol level; MQTT 5 allows the same
/// answer to a client whose level the server does not support.
pub(crate) const CONNACK_UNSUPPORTED_LEVEL: [u8; 4] = [0x20, 0x02, 0x00, 0x01];

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Will {
    pub topic: String,
    pub payload: Bytes,
    pub qos: u8,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ConnectInfo {
    pub client_id: String,
    pub clean_start: bool,
    pub keep_alive: u16,
    pub will: Option<Will>,
    /// MQTT 5: the largest packet the client accepts.
    pub max_packet_size: Option<u32>,
    /// MQTT 5: how many QoS 1 deliveries the client takes unacknowledged at once.
    pub receive_max: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Publish {
    pub topic: String,
    pub qos: u8,
    pub pkid: u16,
    pub payload: Bytes,
    /// MQTT 5 topic alias; this endpoint grants none, so any alias is a protocol error.
    pub topic_alias: bool,
    /// The RETAIN flag; this endpoint keeps no retained messages (CONNACK says so on MQTT 5).
    pub retain: bool,
    /// MQTT 5 properties to relay (without the topic alias and subscription identifiers, which
    /// are the publisher's and the server's own).
    pub properties: Option<PublishProperties>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SubFilter {
    pub filter: String,
    pub qos: u8,
    pub no_local: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Incoming {
    Connect(ConnectInfo),
    Publish(Publish),
    PubAck(u16),
    Subscribe {
        pkid: u16,
        filters: Vec<SubFilter>,
    },
    Unsubscribe {
        pkid: u16,
        filters: Vec<String>,
    },
    PingReq,
    Disconnect {
        with_will: bool,
    },
    /// A packet a client may not send here (a second CONNECT, server-side acks, QoS 2 flow, AUTH).
    Unexpected(&'static str),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DecodeError {
    /// The remaining length exceeds the limit; detected from the fixed header alone.
    TooLarge,
    Malformed(String),
}

/// Decode the next complete packet from `buf`; `Ok(None)` means more bytes are needed.
pub(crate) fn decode(
    version: Version,
    buf: &mut BytesMut,
    max_remaining: usize,
) -> Result<Option<Incoming>, DecodeError> {
    match version {
        Version::V4 => decode_v4(buf, max_remaining),
        Version::V5 => decode_v5(buf, max_remaining),
    }
}

/// A SUBSCRIBE from its packet id and its (filter, QoS, no local) triples.
fn subscribe(pkid: u16, filters: impl Iterator<Item = (String, u8, bool)>) -> Incoming {
    let filters = filters
        .map(|(filter, qos, no_local)| SubFilter {
            filter,
            qos,
            no_local,
        })
        .collect();
    Incoming::Subscribe { pkid, filters }
}

/// The name of the packet starting `buf`, from its fixed header's type (the same in 3.1.1 and 5).
fn packet_name(buf: &[u8]) -> &'static str {
    const NAMES: [&str; 16] = [
        "reserved packet type",
        "CONNECT",
        "CONNACK",
        "PUBLISH",
        "PUBACK",
        "PUBREC",
        "PUBREL",
        "PUBCOMP",
        "SUBSCRIBE",
        "SUBACK",
        "UNSUBSCRIBE",
        "UNSUBACK",
        "PINGREQ",
        "PINGRESP",
        "DISCONNECT",
        "AUTH",
    ];
    buf.first().map_or(NAMES[0], |b| NAMES[usize::from(b >> 4)])
}

fn decode_v4(buf: &mut BytesMut, max: usize) -> Result<Option<Incoming>, DecodeError> {
    let name = packet_name(buf);
    let packet = match v4::Packet::read(buf, max) {
        Ok(p) => p,
        Err(m4::Error::InsufficientBytes(_)) => return Ok(None),
        Err(m4::Error::PayloadSizeLimitExceeded(_)) => return Err(DecodeError::TooLarge),
        Err(e) => return Err(DecodeError::Malformed(e.to_string())),
    };
    Ok(Some(match packet {
        v4::Packet::Connect(c) => Incoming::Connect(ConnectInfo {
            client_id: c.client_id,
            clean_start: c.clean_session,
            keep_alive: c.keep_alive,
            will: c.last_will.map(|w| Will {
                topic: w.topic,
                payload: w.message,
                qos: w.qos as u8,
            }),
            max_packet_size: None,
            receive_max: None,
        }),
        v4::Packet::Publish(p) => Incoming::Publish(Publish {
            topic: p.topic,
            qos: p.qos as u8,
            pkid: p.pkid,
            payload: p.payload,
            topic_alias: false,
            retain: p.retain,
            properties: None,
        }),
        v4::Packet::PubAck(a) => Incoming::PubAck(a.pkid),
        v4::Packet::Subscribe(s) => subscribe(
            s.pkid,
            s.filters.into_iter().map(|f| (f.path, f.qos as u8, false)),
        ),
        v4::Packet::Unsubscribe(u) => Incoming::Unsubscribe {
            pkid: u.pkid,
            filters: u.topics,
        },
        v4::Packet::PingReq => Incoming::PingReq,
        v4::Packet::Disconnect => Incoming::Disconnect { with_will: false },
        // Server-side acks and the QoS 2 flow.
        _ => Incoming::Unexpected(name),
    }))
}

fn decode_v5(buf: &mut BytesMut, max: usize) -> Result<Option<Incoming>, DecodeError> {
    // MQTT 5 allows DISCONNECT without a reason code (remaining length 0), meaning "normal";
    // rumqttc's reader rejects that form, so it is recognised here.
    if buf.len() >= 2 && buf[0] == 0xE0 && buf[1] == 0x00 {
        let _ = buf.split_to(2);
        return Ok(Some(Incoming::Disconnect { with_will: false }));
    }
    let max = u32::try_from(max).unwrap_or(u32::MAX);
    let name = packet_name(buf);
    let packet = match v5::Packet::read(buf, Some(max)) {
        Ok(p) => p,
        Err(m5::Error::InsufficientBytes(_)) => return Ok(None),
        Err(m5::Error::PayloadSizeLimitExceeded { .. }) => return Err(DecodeError::TooLarge),
        Err(e) => return Err(DecodeError::Malformed(e.to_string())),
    };
    Ok(Some(match packet {
        v5::Packet::Connect(c, will, _login) => {
            let will = match will {
                Some(w) => Some(Will {
                    topic: String::from_utf8(w.topic.to_vec())
                        .map_err(|_| DecodeError::Malformed("will topic is not UTF-8".into()))?,
                    payload: w.message,
                    qos: w.qos as u8,
                }),
                None => None,
            };
            Incoming::Connect(ConnectInfo {
                client_id: c.client_id,
                clean_start: c.clean_start,
                keep_alive: c.keep_alive,
                will,
                max_packet_size: c.properties.as_ref().and_then(|p| p.max_packet_size),
                receive_max: c.properties.as_ref().and_then(|p| p.receive_maximum),
            })
        }
        v5::Packet::Publish(p) => Incoming::Publish(Publish {
            topic: String::from_utf8(p.topic.to_vec())
                .map_err(|_| DecodeError::Malformed("topic is not UTF-8".into()))?,
            qos: p.qos as u8,
            pkid: p.pkid,
            payload: p.payload,
            topic_alias: p
                .properties
                .as_ref()
                .is_some_and(|pr| pr.topic_alias.is_some()),
            retain: p.retain,
            properties: p.properties.map(|pr| PublishProperties {
                topic_alias: None,
                subscription_identifiers: Vec::new(),
                ..pr
            }),
        }),
        v5::Packet::PubAck(a) => Incoming::PubAck(a.pkid),
        v5::Packet::Subscribe(s) => subscribe(
            s.pkid,
            s.filters
                .into_iter()
                .map(|f| (f.path, f.qos as u8, f.nolocal)),
        ),
        v5::Packet::Unsubscribe(u) => Incoming::Unsubscribe {
            pkid: u.pkid,
            filters: u.filters,
        },
        v5::Packet::PingReq(_) => Incoming::PingReq,
        v5::Packet::Disconnect(d) => Incoming::Disconnect {
            with_will: d.reason_code == Reason::DisconnectWithWillMessage,
        },
        // AUTH, server-side acks and the QoS 2 flow.
        _ => Incoming::Unexpected(name),
    }))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ConnCode {
    Accepted,
    NotAuthorized,
    BadClientId,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PubAckCode {
    Success,
    NotAuthorized,
    QuotaExceeded,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SubCode {
    Granted(u8),
    NotAuthorized,
    FilterInvalid,
    QuotaExceeded,
}

/// As the log names it: "granted QoS 1", "not authorized", ...
impl std::fmt::Display for SubCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SubCode::Granted(qos) => write!(f, "granted QoS {qos}"),
            SubCode::NotAuthorized => f.write_str("not authorized"),
            SubCode::FilterInvalid => f.write_str("invalid filter"),
            SubCode::QuotaExceeded => f.write_str("too many subscriptions"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UnsubCode {
    Success,
    NoSubscription,
}

/// A message the server sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Delivery {
    pub topic: String,
    pub qos: u8,
    pub pkid: u16,
    pub payload: Bytes,
    /// MQTT 5 properties (not sent to MQTT 3.1.1 clients).
    pub properties: Option<PublishProperties>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outgoing {
    ConnAck {
        code: ConnCode,
        assigned_client_id: Option<String>,
        server_keep_alive: Option<u16>,
        max_packet_size: u32,
    },
    Publish(Delivery),
    PubAck {
        pkid: u16,
        code: PubAckCode,
    },
    SubAck {
        pkid: u16,
        codes: Vec<SubCode>,
    },
    UnsubAck {
        pkid: u16,
        codes: Vec<UnsubCode>,
    },
    PingResp,
    /// MQTT 5 only, with a reason string; on 3.1.1 the server just closes the connection.
    Disconnect(Reason, &'static str),
}

impl Outgoing {
    /// The packet type's MQTT name, for the log.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Outgoing::ConnAck { .. } => "CONNACK",
            Outgoing::Publish(_) => "PUBLISH",
            Outgoing::PubAck { .. } => "PUBACK",
            Outgoing::SubAck { .. } => "SUBACK",
            Outgoing::UnsubAck { .. } => "UNSUBACK",
            Outgoing::PingResp => "PINGRESP",
            Outgoing::Disconnect(..) => "DISCONNECT",
        }
    }
}

/// Append `packet` to `out`. A 3.1.1 DISCONNECT from the server does not exist and writes nothing.
pub(crate) fn encode(
    version: Version,
    packet: &Outgoing,
    out: &mut BytesMut,
) -> Result<(), String> {
    match version {
        Version::V4 => encode_v4(packet, out),
        Version::V5 => encode_v5(packet, out),
    }
}

fn qos4(q: u8) -> m4::QoS {
    match q {
        0 => m4::QoS::AtMostOnce,
        _ => m4::QoS::AtLeastOnce,
    }
}

fn qos5(q: u8) -> m5::QoS {
    match q {
        0 => m5::QoS::AtMostOnce,
        _ => m5::QoS::AtLeastOnce,
    }
}

fn encode_v4(packet: &Outgoing, out: &mut BytesMut) -> Result<(), String> {
    let p = match packet {
        Outgoing::ConnAck { code, .. } => v4::Packet::ConnAck(v4::ConnAck::new(
            match code {
                ConnCode::Accepted => v4::ConnectReturnCode::Success,
                ConnCode::NotAuthorized => v4::ConnectReturnCode::NotAuthorized,
                ConnCode::BadClientId => v4::ConnectReturnCode::BadClientId,
            },
            false,
        )),
        Outgoing::Publish(d) => {
            let mut p = v4::Publish::from_bytes(d.topic.as_str(), qos4(d.qos), d.payload.clone());
            p.pkid = d.pkid;
            v4::Packet::Publish(p)
        }
        // 3.1.1 has no negative PUBACK; refusals close the connection instead.
        Outgoing::PubAck { pkid, .. } => v4::Packet::PubAck(v4::PubAck::new(*pkid)),
        Outgoing::SubAck { pkid, codes } => v4::Packet::SubAck(v4::SubAck::new(
            *pkid,
            codes
                .iter()
                .map(|c| match c {
                    SubCode::Granted(q) => v4::SubscribeReasonCode::Success(qos4(*q)),
                    _ => v4::SubscribeReasonCode::Failure,
                })
                .collect(),
        )),
        Outgoing::UnsubAck { pkid, .. } => v4::Packet::UnsubAck(v4::UnsubAck::new(*pkid)),
        Outgoing::PingResp => v4::Packet::PingResp,
        Outgoing::Disconnect(..) => return Ok(()),
    };
    p.write(out, usize::MAX)
        .map(drop)
        .map_err(|e| e.to_string())
}

fn encode_v5(packet: &Outgoing, out: &mut BytesMut) -> Result<(), String> {
    let p = match packet {
        Outgoing::ConnAck {
            code,
            assigned_client_id,
            server_keep_alive,
            max_packet_size,
        } => {
            let properties = (*code == ConnCode::Accepted).then(|| v5::ConnAckProperties {
                // Sessions end with the connection, whatever the client asked for.
                session_expiry_interval: Some(0),
                // AWS IoT's in-flight limit; it also keeps rumqttc clients from sizing their
                // in-flight table for 65,535 messages.
                receive_max: Some(100),
                max_qos: Some(1),
                retain_available: Some(0),
                max_packet_size: Some(*max_packet_size),
                assigned_client_identifier: assigned_client_id.clone(),
                topic_alias_max: None,
                reason_string: None,
                user_properties: Vec::new(),
                wildcard_subscription_available: None,
                subscription_identifiers_available: Some(0),
                // Shared subscriptions ($share/GROUP/FILTER) are served, as on AWS.
                shared_subscription_available: None,
                server_keep_alive: *server_keep_alive,
                response_information: None,
                server_reference: None,
                authentication_method: None,
                authentication_data: None,
            });
            v5::Packet::ConnAck(v5::ConnAck {
                session_present: false,
                code: match code {
                    ConnCode::Accepted => v5::ConnectReturnCode::Success,
                    ConnCode::NotAuthorized => v5::ConnectReturnCode::NotAuthorized,
                    ConnCode::BadClientId => v5::ConnectReturnCode::ClientIdentifierNotValid,
                },
                properties,
            })
        }
        Outgoing::Publish(d) => {
            let mut p = v5::Publish::new(
                d.topic.as_str(),
                qos5(d.qos),
                d.payload.clone(),
                d.properties.clone(),
            );
            p.pkid = d.pkid;
            v5::Packet::Publish(p)
        }
        Outgoing::PubAck { pkid, code } => {
            let mut ack = v5::PubAck::new(*pkid, None);
            ack.reason = match code {
                PubAckCode::Success => v5::PubAckReason::Success,
                PubAckCode::NotAuthorized => v5::PubAckReason::NotAuthorized,
                PubAckCode::QuotaExceeded => v5::PubAckReason::QuotaExceeded,
            };
            v5::Packet::PubAck(ack)
        }
        Outgoing::SubAck { pkid, codes } => v5::Packet::SubAck(v5::SubAck {
            pkid: *pkid,
            return_codes: codes
                .iter()
                .map(|c| match c {
                    SubCode::Granted(q) => v5::SubscribeReasonCode::Success(qos5(*q)),
                    SubCode::NotAuthorized => v5::SubscribeReasonCode::NotAuthorized,
                    SubCode::FilterInvalid => v5::SubscribeReasonCode::TopicFilterInvalid,
                    SubCode::QuotaExceeded => v5::SubscribeReasonCode::QuotaExceeded,
                })
                .collect(),
            properties: None,
        }),
        Outgoing::UnsubAck { pkid, codes } => v5::Packet::UnsubAck(v5::UnsubAck {
            pkid: *pkid,
            reasons: codes
                .iter()
                .map(|c| match c {
                    UnsubCode::Success => v5::UnsubAckReason::Success,
                    UnsubCode::NoSubscription => v5::UnsubAckReason::NoSubscriptionExisted,
                })
                .collect(),
            properties: None,
        }),
        Outgoing::PingResp => v5::Packet::PingResp(v5::PingResp),
        // Always with properties: rumqttc mis-sizes a DISCONNECT that has a reason code but none.
        Outgoing::Disconnect(reason, text) => v5::Packet::Disconnect(v5::Disconnect {
            reason_code: *reason,
            properties: Some(v5::DisconnectProperties {
                session_expiry_interval: None,
                reason_string: Some((*text).to_owned()),
                user_properties: Vec::new(),
                server_reference: None,
            }),
        }),
    };
    p.write(out, None).map(drop).map_err(|e| e.to_string())
}

/// Encoded size of a PUBLISH without properties, to honour a client's maximum packet size.
/// The encoded size of a delivery, properties included.
pub(crate) fn delivery_size(version: Version, d: &Delivery) -> usize {
    let plain = publish_size(version, &d.topic, d.qos, d.payload.len());
    match (&d.properties, version) {
        // What the properties add, as rumqttc counts them.
        (Some(props), Version::V5) => {
            let size =
                |p| v5::Publish::new(d.topic.as_str(), qos5(d.qos), d.payload.clone(), p).size();
            plain + size(Some(props.clone())) - size(None)
        }
        _ => plain,
    }
}

pub(crate) fn publish_size(version: Version, topic: &str, qos: u8, payload_len: usize) -> usize {
    let mut remaining = 2 + topic.len() + payload_len;
    if qos > 0 {
        remaining += 2;
    }
    if version == Version::V5 {
        remaining += 1; // empty property length
    }
    let len_len = match remaining {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    };
    1 + len_len + remaining
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connect_bytes(level: u8) -> Vec<u8> {
        // CONNECT, client id "c", keep-alive 30, clean start.
        let mut v = vec![0x10, 0];
        v.extend_from_slice(&[0, 4, b'M', b'Q', b'T', b'T', level, 0x02, 0, 30]);
        if level == 5 {
            v.push(0); // no properties
        }
        v.extend_from_slice(&[0, 1, b'c']);
        v[1] = (v.len() - 2) as u8;
        v
    }

    #[test]
    fn peek_levels() {
        assert_eq!(peek_connect(&connect_bytes(4)), Peek::Level(Version::V4));
        assert_eq!(peek_connect(&connect_bytes(5)), Peek::Level(Version::V5));
        assert_eq!(peek_connect(&connect_bytes(3)), Peek::UnsupportedLevel);
        assert_eq!(peek_connect(&connect_bytes(5)[..6]), Peek::NeedMore);
        assert_eq!(peek_connect(b""), Peek::NeedMore);
        assert_eq!(peek_connect(b"GET / HTTP/1.1\r\n"), Peek::NotConnect);
        assert_eq!(
            peek_connect(&[0x10, 0xff, 0xff, 0xff, 0xff, 0x01]),
            Peek::NotConnect
        );
        assert_eq!(
            peek_connect(&[0x10, 9, 0, 6, b'M', b'Q', b'I', b's', b'd', b'p', 3]),
            Peek::UnsupportedLevel
        );
        assert_eq!(peek_connect(&[0x10, 9, 0, 200]), Peek::NotConnect);
    }

    #[test]
    fn decode_connect_both_versions() {
        for (level, version) in [(4, Version::V4), (5, Version::V5)] {
            let mut buf = BytesMut::from(&connect_bytes(level)[..]);
            let Some(Incoming::Connect(c)) = decode(version, &mut buf, 1024).unwrap() else {
                panic!("not a connect");
            };
            assert_eq!(c.client_id, "c");
            assert_eq!(c.keep_alive, 30);
            assert!(c.clean_start);
            assert!(buf.is_empty());
        }
    }

    #[test]
    fn packets_a_client_may_not_send_are_named() {
        // SUBACK (pkid 1, granted QoS 0; MQTT 5 adds an empty property length), then PINGRESP.
        let v4: &[u8] = &[0x90, 0x03, 0x00, 0x01, 0x00, 0xD0, 0x00];
        let v5: &[u8] = &[0x90, 0x04, 0x00, 0x01, 0x00, 0x00, 0xD0, 0x00];
        for (version, bytes) in [(Version::V4, v4), (Version::V5, v5)] {
            let mut buf = BytesMut::from(bytes);
            assert_eq!(
                decode(version, &mut buf, 1024).unwrap(),
                Some(Incoming::Unexpected("SUBACK"))
            );
            assert_eq!(
                decode(version, &mut buf, 1024).unwrap(),
                Some(Incoming::Unexpected("PINGRESP"))
            );
        }
    }

    #[test]
    fn short_v5_disconnect() {
        let mut buf = BytesMut::from(&[0xE0, 0x00][..]);
        assert_eq!(
            decode(Version::V5, &mut buf, 1024).unwrap(),
            Some(Incoming::Disconnect { with_will: false })
        );
        let mut buf = BytesMut::from(&[0xE0, 0x00][..]);
        assert_eq!(
            decode(Version::V4, &mut buf, 1024).unwrap(),
            Some(Incoming::Disconnect { with_will: false })
        );
    }

    #[test]
    fn too_large_and_partial() {
        // PUBLISH with a remaining length of 200 000 bytes, nothing else yet.
        let mut buf = BytesMut::from(&[0x30, 0xC0, 0x9A, 0x0C][..]);
        assert_eq!(
            decode(Version::V5, &mut buf.clone(), 1000),
            Err(DecodeError::TooLarge)
        );
        assert_eq!(
            decode(Version::V4, &mut buf, 1000),
            Err(DecodeError::TooLarge)
        );
        let mut partial = BytesMut::from(&[0x30, 0x10, 0x00][..]);
        assert_eq!(decode(Version::V4, &mut partial, 1000), Ok(None));
    }

    #[test]
    fn garbage_is_malformed() {
        let mut buf = BytesMut::from(&[0x00, 0x00][..]);
        assert!(matches!(
            decode(Version::V5, &mut buf, 1000),
            Err(DecodeError::Malformed(_))
        ));
    }

    #[test]
    fn delivery_size_counts_the_properties() {
        let props = PublishProperties {
            content_type: Some("application/json".into()),
            response_topic: Some("reply/here".into()),
            correlation_data: Some(Bytes::from_static(b"id-1")),
            user_properties: vec![("k".into(), "v".into())],
            payload_format_indicator: Some(1),
            message_expiry_interval: Some(60),
            ..PublishProperties::default()
        };
        for (version, props) in [
            (Version::V5, Some(props.clone())),
            (Version::V4, Some(props)),
            (Version::V5, None),
        ] {
            let d = Delivery {
                topic: "a/b".into(),
                qos: 1,
                pkid: 3,
                payload: Bytes::from(vec![0u8; 300]),
                properties: props,
            };
            let mut out = BytesMut::new();
            encode(version, &Outgoing::Publish(d.clone()), &mut out).unwrap();
            assert_eq!(out.len(), delivery_size(version, &d), "{version:?}");
        }
    }

    #[test]
    fn publish_size_matches_codec() {
        for (version, qos, len) in [
            (Version::V4, 0, 10),
            (Version::V4, 1, 200),
            (Version::V5, 1, 20_000),
            (Version::V5, 0, 127),
        ] {
            let mut out = BytesMut::new();
            let p = Outgoing::Publish(Delivery {
                topic: "a/b".into(),
                qos,
                pkid: 7,
                payload: Bytes::from(vec![0u8; len]),
                properties: None,
            });
            encode(version, &p, &mut out).unwrap();
            assert_eq!(out.len(), publish_size(version, "a/b", qos, len));
        }
    }

    #[test]
    fn v4_disconnect_writes_nothing() {
        let mut out = BytesMut::new();
        let d = Outgoing::Disconnect(Reason::NotAuthorized, "no");
        encode(Version::V4, &d, &mut out).unwrap();
        assert!(out.is_empty());
        encode(Version::V5, &d, &mut out).unwrap();
        // reason 0x87, properties: reason string "no".
        assert_eq!(
            &out[..],
            &[0xE0, 0x07, 0x87, 0x05, 0x1F, 0x00, 0x02, b'n', b'o']
        );
    }
}
