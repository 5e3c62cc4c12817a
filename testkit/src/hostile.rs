//! A scriptable MQTT-over-TLS server for the hostile-broker tests.
//!
//! The server decodes what the client sends with rumqttc's packet codec (only to read it) and
//! answers with raw bytes built by the helpers below, so a script can send what no correct
//! broker would: short forms, forbidden properties, wrong packet ids, garbage, or a reply and
//! the end of the connection in one write. A script reacts to the client's packets; the only
//! waits in scripts are the scenario itself (a broker that is slow to answer), never a guess
//! at when the client is ready.
#![allow(dead_code)]

use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::BytesMut;
use fleetprov::client::{ClientOptions, MqttVersion, Pem};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_rustls::server::TlsStream;

/// Every case ends within this, whatever the client does (a backstop, not a measurement).
pub const CASE_LIMIT: Duration = Duration::from_secs(60);

/// The test CA (PEM) and the server's certificate and key, made once per test binary.
struct Pki {
    ca_pem: String,
    cert: CertificateDer<'static>,
    key_der: Vec<u8>,
}

fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(|| {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "hostile broker test CA");
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
        Pki {
            ca_pem: ca.pem(),
            cert: cert.der().clone(),
            key_der: key.serialize_der(),
        }
    })
}

/// The PEM of the CA that signed the server's certificate.
pub fn ca_pem() -> &'static str {
    &pki().ca_pem
}

fn acceptor(provider: rustls::crypto::CryptoProvider) -> tokio_rustls::TlsAcceptor {
    let pki = pki();
    let provider = Arc::new(provider);
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pki.key_der.clone()));
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![pki.cert.clone()], key)
        .unwrap();
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

/// A server that accepts one connection on a loopback port and runs a script on it.
pub struct Broker<T> {
    pub port: u16,
    task: Option<JoinHandle<Result<T, String>>>,
}

impl<T> Drop for Broker<T> {
    fn drop(&mut self) {
        if let Some(t) = &self.task {
            t.abort();
        }
    }
}

impl<T: Send + 'static> Broker<T> {
    /// Listens on 127.0.0.1 and, for the first connection, completes the TLS handshake and
    /// runs `script`. Its result (or the reason it failed) comes back from [`Broker::join`].
    pub async fn start<F, Fut>(script: F) -> Broker<T>
    where
        F: FnOnce(Conn) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, String>> + Send + 'static,
    {
        Self::start_with(rustls::crypto::ring::default_provider(), script).await
    }

    /// [`Broker::start`] with the server's TLS made from `provider` (its suites and groups).
    pub async fn start_with<F, Fut>(
        provider: rustls::crypto::CryptoProvider,
        script: F,
    ) -> Broker<T>
    where
        F: FnOnce(Conn) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, String>> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.map_err(|e| e.to_string())?;
            tcp.set_nodelay(true).map_err(|e| e.to_string())?;
            let tls = acceptor(provider)
                .accept(tcp)
                .await
                .map_err(|e| format!("server TLS handshake: {e}"))?;
            script(Conn::new(tls)).await
        });
        Broker {
            port,
            task: Some(task),
        }
    }

    /// Client options for this server: its CA, no client certificate, short timeouts so a
    /// client that waits for something that never comes fails the case quickly.
    pub fn opts(&self, version: MqttVersion) -> ClientOptions {
        let mut o = ClientOptions::new("localhost");
        o.port = self.port;
        o.mqtt_version = version;
        o.ca = Some(Pem::memory(pki().ca_pem.as_bytes()));
        o.client_id = Some("hostile-test".into());
        o.connect_timeout = Duration::from_secs(5);
        o.operation_timeout = Duration::from_secs(8);
        o
    }

    /// The script's result; panics if it failed or did not end within [`CASE_LIMIT`].
    pub async fn join(mut self) -> T {
        let task = self.task.take().unwrap();
        match tokio::time::timeout(CASE_LIMIT, task).await {
            Ok(Ok(Ok(t))) => t,
            Ok(Ok(Err(e))) => panic!("broker script failed: {e}"),
            Ok(Err(e)) => panic!("broker script panicked: {e}"),
            Err(_) => panic!("broker script did not end within {CASE_LIMIT:?}"),
        }
    }
}

/// A packet the client sent, decoded.
#[derive(Debug, Clone)]
pub enum In {
    Connect {
        v5: bool,
        keep_alive: u16,
        /// MQTT 5 CONNECT properties (None under 3.1.1 or when absent).
        topic_alias_max: Option<u16>,
        max_packet_size: Option<u32>,
        receive_max: Option<u16>,
    },
    Subscribe {
        pkid: u16,
        filters: Vec<String>,
    },
    Unsubscribe {
        pkid: u16,
    },
    Publish {
        topic: String,
        qos: u8,
        pkid: u16,
        payload: bytes::Bytes,
    },
    PubAck {
        pkid: u16,
    },
    PingReq,
    Disconnect,
    /// Anything else, by packet type (high nibble of the first byte).
    Other(u8),
}

/// One decoded packet with the size it had on the wire.
#[derive(Debug, Clone)]
pub struct Received {
    pub packet: In,
    pub wire_len: usize,
}

/// The server side of one connection.
pub struct Conn {
    tls: TlsStream<TcpStream>,
    buf: BytesMut,
    /// Known after the CONNECT: whether the client speaks MQTT 5.
    pub v5: bool,
    /// PINGREQs seen so far (the helpers answer each with PINGRESP unless told not to).
    pub pings: usize,
    pub answer_pings: bool,
    /// Largest packet the client has sent, in bytes on the wire.
    pub largest_packet: usize,
}

impl Conn {
    fn new(tls: TlsStream<TcpStream>) -> Conn {
        Conn {
            tls,
            buf: BytesMut::with_capacity(8 * 1024),
            v5: false,
            pings: 0,
            answer_pings: true,
            largest_packet: 0,
        }
    }

    /// The key exchange group the TLS handshake settled on.
    pub fn kx_group(&self) -> Option<rustls::NamedGroup> {
        self.tls
            .get_ref()
            .1
            .negotiated_key_exchange_group()
            .map(|g| g.name())
    }

    /// The next packet from the client, or `None` when it closed the connection.
    pub async fn recv(&mut self) -> Result<Option<Received>, String> {
        loop {
            if let Some(frame) = self.take_frame()? {
                let wire_len = frame.len();
                self.largest_packet = self.largest_packet.max(wire_len);
                let packet = self.decode(frame)?;
                return Ok(Some(Received { packet, wire_len }));
            }
            let mut chunk = [0u8; 16 * 1024];
            match self.tls.read(&mut chunk).await {
                Ok(0) => return Ok(None),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                // A client that resets or drops TLS has closed, for a script's purposes.
                Err(_) => return Ok(None),
            }
        }
    }

    /// A complete packet off the front of the buffer, if there is one.
    fn take_frame(&mut self) -> Result<Option<BytesMut>, String> {
        let mut len: usize = 0;
        let mut shift = 0;
        let mut i = 1;
        loop {
            let Some(&b) = self.buf.get(i) else {
                return Ok(None);
            };
            len |= usize::from(b & 0x7f) << shift;
            i += 1;
            if b & 0x80 == 0 {
                break;
            }
            shift += 7;
            if shift > 21 {
                return Err("client sent a malformed remaining length".into());
            }
        }
        if self.buf.len() < i + len {
            return Ok(None);
        }
        Ok(Some(self.buf.split_to(i + len)))
    }

    fn decode(&mut self, mut frame: BytesMut) -> Result<In, String> {
        let kind = frame[0] >> 4;
        if kind == 1 {
            // CONNECT: protocol name "MQTT" (2 + 4 bytes) after the fixed header, then the level.
            let header = frame.len() - remaining_len_of(&frame);
            self.v5 = frame.get(header + 6) == Some(&5);
        }
        // DISCONNECT is read here: rumqttc's MQTT 5 reader wants a property block after the
        // reason code, and a client may send the reason code alone, or nothing.
        if kind == 14 {
            return Ok(In::Disconnect);
        }
        if remaining_len_of(&frame) == 0 {
            return Ok(match kind {
                12 => In::PingReq,
                14 => In::Disconnect,
                other => In::Other(other),
            });
        }
        if self.v5 {
            use rumqttc::v5::mqttbytes::v5::Packet;
            let p = Packet::read(&mut frame, None).map_err(|e| format!("decode: {e:?}"))?;
            Ok(match p {
                Packet::Connect(c, _, _) => In::Connect {
                    v5: true,
                    keep_alive: c.keep_alive,
                    topic_alias_max: c.properties.as_ref().and_then(|p| p.topic_alias_max),
                    max_packet_size: c.properties.as_ref().and_then(|p| p.max_packet_size),
                    receive_max: c.properties.as_ref().and_then(|p| p.receive_maximum),
                },
                Packet::Subscribe(s) => In::Subscribe {
                    pkid: s.pkid,
                    filters: s.filters.into_iter().map(|f| f.path).collect(),
                },
                Packet::Unsubscribe(u) => In::Unsubscribe { pkid: u.pkid },
                Packet::Publish(p) => In::Publish {
                    topic: String::from_utf8_lossy(&p.topic).into_owned(),
                    qos: p.qos as u8,
                    pkid: p.pkid,
                    payload: p.payload,
                },
                Packet::PubAck(a) => In::PubAck { pkid: a.pkid },
                Packet::PingReq(_) => In::PingReq,
                Packet::Disconnect(_) => In::Disconnect,
                _ => In::Other(kind),
            })
        } else {
            use rumqttc::mqttbytes::v4::Packet;
            let p = Packet::read(&mut frame, usize::MAX).map_err(|e| format!("decode: {e:?}"))?;
            Ok(match p {
                Packet::Connect(c) => In::Connect {
                    v5: false,
                    keep_alive: c.keep_alive,
                    topic_alias_max: None,
                    max_packet_size: None,
                    receive_max: None,
                },
                Packet::Subscribe(s) => In::Subscribe {
                    pkid: s.pkid,
                    filters: s.filters.into_iter().map(|f| f.path).collect(),
                },
                Packet::Unsubscribe(u) => In::Unsubscribe { pkid: u.pkid },
                Packet::Publish(p) => In::Publish {
                    topic: p.topic,
                    qos: p.qos as u8,
                    pkid: p.pkid,
                    payload: p.payload,
                },
                Packet::PubAck(a) => In::PubAck { pkid: a.pkid },
                Packet::PingReq => In::PingReq,
                Packet::Disconnect => In::Disconnect,
                _ => In::Other(kind),
            })
        }
    }

    /// The next packet that is not a PINGREQ (those are counted and, by default, answered).
    /// Fails the script if the client closes first.
    pub async fn next(&mut self, what: &str) -> Result<In, String> {
        loop {
            match self.recv().await? {
                None => return Err(format!("client closed the connection; expected {what}")),
                Some(Received {
                    packet: In::PingReq,
                    ..
                }) => self.on_ping().await?,
                Some(r) => return Ok(r.packet),
            }
        }
    }

    async fn on_ping(&mut self) -> Result<(), String> {
        self.pings += 1;
        if self.answer_pings {
            self.send(&PINGRESP).await?;
        }
        Ok(())
    }

    /// Reads (counting and answering PINGREQs) for `span`, then returns. Any other packet in
    /// that time is an error: the client has nothing else to say while it waits for a reply.
    pub async fn idle_for(&mut self, span: Duration) -> Result<(), String> {
        let until = tokio::time::Instant::now() + span;
        loop {
            match tokio::time::timeout_at(until, self.recv()).await {
                Err(_) => return Ok(()),
                Ok(r) => match r? {
                    None => return Err("client closed the connection while waiting".into()),
                    Some(Received {
                        packet: In::PingReq,
                        ..
                    }) => self.on_ping().await?,
                    Some(other) => {
                        return Err(format!("unexpected packet while idle: {:?}", other.packet))
                    }
                },
            }
        }
    }

    /// Writes `bytes` in one write and flushes.
    pub async fn send(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.tls
            .write_all(bytes)
            .await
            .map_err(|e| format!("write: {e}"))?;
        self.tls.flush().await.map_err(|e| format!("flush: {e}"))
    }

    /// Writes `bytes` one byte per TLS record (each flushed), the slowest framing there is.
    pub async fn send_bytewise(&mut self, bytes: &[u8]) -> Result<(), String> {
        for b in bytes {
            self.send(std::slice::from_ref(b)).await?;
        }
        Ok(())
    }

    /// Expects the CONNECT and answers with `connack` (raw bytes). Returns the CONNECT.
    pub async fn accept_connect(&mut self, connack: &[u8]) -> Result<In, String> {
        let c = self.next("CONNECT").await?;
        if !matches!(c, In::Connect { .. }) {
            return Err(format!("expected CONNECT, got {c:?}"));
        }
        self.send(connack).await?;
        Ok(c)
    }

    /// Expects a SUBSCRIBE; returns its packet id and filters.
    pub async fn expect_subscribe(&mut self) -> Result<(u16, Vec<String>), String> {
        match self.next("SUBSCRIBE").await? {
            In::Subscribe { pkid, filters } => Ok((pkid, filters)),
            other => Err(format!("expected SUBSCRIBE, got {other:?}")),
        }
    }

    /// Expects a SUBSCRIBE and grants every filter at QoS 1. Returns the filters.
    pub async fn grant_subscribe(&mut self) -> Result<Vec<String>, String> {
        let (pkid, filters) = self.expect_subscribe().await?;
        self.send(&suback(self.v5, pkid, &vec![1; filters.len()]))
            .await?;
        Ok(filters)
    }

    /// Expects a PUBLISH; returns (topic, packet id, payload).
    pub async fn expect_publish(&mut self) -> Result<(String, u16, bytes::Bytes), String> {
        match self.next("PUBLISH").await? {
            In::Publish {
                topic,
                pkid,
                payload,
                ..
            } => Ok((topic, pkid, payload)),
            other => Err(format!("expected PUBLISH, got {other:?}")),
        }
    }

    /// CONNACK, SUBACK for the reply topics, and the request PUBLISH (not yet acknowledged):
    /// the state in which a broker answers. Returns the request's topic and packet id.
    pub async fn up_to_request(&mut self, connack: &[u8]) -> Result<(String, u16), String> {
        self.accept_connect(connack).await?;
        self.grant_subscribe().await?;
        let (topic, pkid, _) = self.expect_publish().await?;
        Ok((topic, pkid))
    }

    /// Sends TLS close_notify and closes the TCP connection.
    pub async fn close_tls(&mut self) -> Result<(), String> {
        self.tls
            .shutdown()
            .await
            .map_err(|e| format!("shutdown: {e}"))
    }

    /// Closes the TCP connection (FIN) without a TLS close_notify, as a crashed broker or a
    /// middlebox would.
    pub async fn close_tcp(&mut self) -> Result<(), String> {
        self.tls
            .get_mut()
            .0
            .shutdown()
            .await
            .map_err(|e| format!("tcp shutdown: {e}"))
    }

    /// Keeps the connection open, reading and answering PINGREQs, until the client closes it.
    pub async fn hold_open(&mut self) -> Result<(), String> {
        while let Some(r) = self.recv().await? {
            if matches!(r.packet, In::PingReq) {
                self.on_ping().await?;
            }
        }
        Ok(())
    }
}

/// A broker with Maximum Packet Size `limit` that grants and acknowledges whatever comes and
/// answers nothing, until the client leaves; its result is the largest packet it received.
pub async fn broker_with_maximum_packet_size(limit: u32) -> Broker<usize> {
    Broker::start(move |mut c| async move {
        c.accept_connect(&connack(
            true,
            &props(&[prop::u32(prop::MAXIMUM_PACKET_SIZE, limit)]),
        ))
        .await?;
        while let Some(r) = c.recv().await? {
            match r.packet {
                In::Subscribe { pkid, filters } => {
                    c.send(&suback(true, pkid, &vec![1; filters.len()])).await?
                }
                In::Publish { pkid, .. } => c.send(&puback(true, pkid, None)).await?,
                In::PingReq => c.send(&PINGRESP).await?,
                _ => {}
            }
        }
        Ok(c.largest_packet)
    })
    .await
}

fn remaining_len_of(frame: &[u8]) -> usize {
    let (mut len, mut shift, mut i) = (0usize, 0, 1);
    while let Some(&b) = frame.get(i) {
        len |= usize::from(b & 0x7f) << shift;
        i += 1;
        if b & 0x80 == 0 {
            break;
        }
        shift += 7;
    }
    len
}

// ---------- raw packet builders ----------

pub const PINGRESP: [u8; 2] = [0xd0, 0x00];

/// MQTT's variable byte integer.
pub fn varint(mut n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let mut b = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            b |= 0x80;
        }
        out.push(b);
        if n == 0 {
            return out;
        }
    }
}

/// A packet: first byte, remaining length, body.
pub fn packet(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    out.extend(varint(body.len()));
    out.extend_from_slice(body);
    out
}

pub fn mqtt_str(s: &str) -> Vec<u8> {
    let mut out = (s.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(s.as_bytes());
    out
}

/// MQTT 5 properties.
pub mod prop {
    pub const PAYLOAD_FORMAT: u8 = 0x01;
    pub const TOPIC_ALIAS: u8 = 0x23;
    pub const SERVER_KEEP_ALIVE: u8 = 0x13;
    pub const RECEIVE_MAXIMUM: u8 = 0x21;
    pub const TOPIC_ALIAS_MAXIMUM: u8 = 0x22;
    pub const MAXIMUM_PACKET_SIZE: u8 = 0x27;
    pub const REASON_STRING: u8 = 0x1f;

    pub fn u8(id: u8, v: u8) -> Vec<u8> {
        vec![id, v]
    }
    pub fn u16(id: u8, v: u16) -> Vec<u8> {
        let mut out = vec![id];
        out.extend(v.to_be_bytes());
        out
    }
    pub fn u32(id: u8, v: u32) -> Vec<u8> {
        let mut out = vec![id];
        out.extend(v.to_be_bytes());
        out
    }
    pub fn string(id: u8, s: &str) -> Vec<u8> {
        let mut out = vec![id];
        out.extend(super::mqtt_str(s));
        out
    }
}

/// A property block: its length, then the properties.
pub fn props(list: &[Vec<u8>]) -> Vec<u8> {
    let body: Vec<u8> = list.concat();
    let mut out = varint(body.len());
    out.extend(body);
    out
}

/// CONNACK, session not present, reason 0; MQTT 5 with the property block `props_block`
/// (from [`props`]).
pub fn connack(v5: bool, props_block: &[u8]) -> Vec<u8> {
    if v5 {
        let mut body = vec![0, 0];
        body.extend_from_slice(props_block);
        packet(0x20, &body)
    } else {
        packet(0x20, &[0, 0])
    }
}

/// A plain successful CONNACK.
pub fn connack_ok(v5: bool) -> Vec<u8> {
    connack(v5, &[0])
}

pub fn suback(v5: bool, pkid: u16, codes: &[u8]) -> Vec<u8> {
    let mut body = pkid.to_be_bytes().to_vec();
    if v5 {
        body.push(0);
    }
    body.extend_from_slice(codes);
    packet(0x90, &body)
}

/// PUBACK; under MQTT 5 with `reason` (and an empty property block) when given.
pub fn puback(v5: bool, pkid: u16, reason: Option<u8>) -> Vec<u8> {
    let mut body = pkid.to_be_bytes().to_vec();
    if let (true, Some(r)) = (v5, reason) {
        body.extend([r, 0]);
    }
    packet(0x40, &body)
}

/// PUBLISH at `qos` (a packet id is written for QoS > 0); MQTT 5 with `props_block`.
pub fn publish(
    v5: bool,
    topic: &str,
    qos: u8,
    pkid: u16,
    props_block: &[u8],
    payload: &[u8],
) -> Vec<u8> {
    let mut body = mqtt_str(topic);
    if qos > 0 {
        body.extend(pkid.to_be_bytes());
    }
    if v5 {
        body.extend_from_slice(props_block);
    }
    body.extend_from_slice(payload);
    packet(0x30 | (qos << 1), &body)
}

/// A QoS 0 PUBLISH without properties.
pub fn publish0(v5: bool, topic: &str, payload: &[u8]) -> Vec<u8> {
    publish(v5, topic, 0, 0, &[0], payload)
}

/// MQTT 5 DISCONNECT with a reason code and a property block.
pub fn disconnect_v5(reason: u8, props_block: &[u8]) -> Vec<u8> {
    let mut body = vec![reason];
    body.extend_from_slice(props_block);
    packet(0xe0, &body)
}

// ---------- service payloads ----------

pub const CERT_ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

pub fn create_keys_accepted() -> Vec<u8> {
    create_keys_accepted_with(CERT_ID, "hostile-token")
}

pub fn create_keys_accepted_with(cert_id: &str, token: &str) -> Vec<u8> {
    format!(
        "{{\"certificateId\":\"{cert_id}\",\
         \"certificatePem\":\"-----BEGIN CERTIFICATE-----\\nMIIB\\n-----END CERTIFICATE-----\\n\",\
         \"privateKey\":\"-----BEGIN RSA PRIVATE KEY-----\\nMIIE\\n-----END RSA PRIVATE KEY-----\\n\",\
         \"certificateOwnershipToken\":\"{token}\"}}"
    )
    .into_bytes()
}

pub fn register_accepted() -> Vec<u8> {
    br#"{"thingName":"HostileThing","deviceConfiguration":{"k":"v"}}"#.to_vec()
}

/// Runs a case within [`CASE_LIMIT`].
pub async fn bounded<F: Future>(f: F) -> F::Output {
    match tokio::time::timeout(CASE_LIMIT, f).await {
        Ok(out) => out,
        Err(_) => panic!("case did not finish within {CASE_LIMIT:?}"),
    }
}

/// Lower case without spaces, underscores or hyphens: "Server shutting down",
/// "ServerShuttingDown" and "server_shutting_down" compare equal.
pub fn squash(s: &str) -> String {
    s.chars()
        .filter(|c| !matches!(c, ' ' | '_' | '-'))
        .flat_map(char::to_lowercase)
        .collect()
}
