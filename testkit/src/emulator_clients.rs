//! Test clients for the emulator: rumqttc (MQTT 5 and 3.1.1) over real mutual TLS, and a raw
//! TLS connection for sending bytes no well-behaved client would send.

#![allow(dead_code)]

use std::collections::VecDeque;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use rumqttc::v5::mqttbytes::v5 as p5;
use rumqttc::v5::mqttbytes::QoS as QoS5;
use rumqttc::{TlsConfiguration, Transport};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

pub const CREATE: &str = "$aws/certificates/create/json";
pub const CREATE_CSR: &str = "$aws/certificates/create-from-csr/json";
pub const REGISTER: &str = "$aws/provisioning-templates/FleetTemplate/provision/json";
pub const WAIT: Duration = Duration::from_secs(20);

/// Fail the test instead of hanging when something never happens.
pub async fn within<F: std::future::Future>(what: &str, f: F) -> F::Output {
    match tokio::time::timeout(WAIT, f).await {
        Ok(v) => v,
        Err(_) => panic!("timed out waiting for {what}"),
    }
}

/// The emulator of the library's tests ([`crate::env::Env`]), with what the emulator's own
/// tests need of it: raw MQTT clients.
pub use crate::env::Env;

impl Env {
    pub fn port(&self) -> u16 {
        self.emu.port()
    }

    pub fn claim(&self) -> Identity {
        Identity::from_files(&self.emu.claim_cert_path(), &self.emu.claim_key_path())
    }

    pub fn tls(&self, id: &Identity) -> Arc<rustls::ClientConfig> {
        client_tls(&self.emu.ca_path(), id)
    }

    /// An MQTT 5 connection with the claim certificate.
    pub async fn claim_v5(&self, client_id: &str) -> V5 {
        V5::connect(self.port(), self.tls(&self.claim()), client_id).await
    }
}

/// A client certificate and its key, PEM.
#[derive(Clone)]
pub struct Identity {
    pub cert_pem: String,
    pub key_pem: String,
}

impl Identity {
    pub fn from_files(cert: &Path, key: &Path) -> Identity {
        Identity {
            cert_pem: std::fs::read_to_string(cert).unwrap(),
            key_pem: std::fs::read_to_string(key).unwrap(),
        }
    }
}

pub fn client_tls(ca: &Path, id: &Identity) -> Arc<rustls::ClientConfig> {
    client_tls_alpn(ca, id, Vec::new())
}

pub fn client_tls_alpn(ca: &Path, id: &Identity, alpn: Vec<Vec<u8>>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let chain = CertificateDer::pem_slice_iter(id.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(id.key_pem.as_bytes()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .unwrap();
    cfg.alpn_protocols = alpn;
    Arc::new(cfg)
}

/// A received PUBLISH, either version.
#[derive(Debug, Clone)]
pub struct Msg {
    pub topic: String,
    pub payload: Vec<u8>,
}

impl Msg {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.payload).unwrap()
    }
}

/// What the MQTT 5 and 3.1.1 test clients have in common.
pub trait Client: Sized {
    type Options;
    type Error: std::fmt::Debug;

    fn options(port: u16, tls: Arc<rustls::ClientConfig>, client_id: &str) -> Self::Options;

    /// Connect and wait for CONNACK; the error is what rumqttc reports (refusal, TLS failure).
    async fn try_connect(opts: Self::Options) -> Result<Self, Self::Error>;

    /// Wait for the next packet from the server (a PUBLISH also goes to the inbox).
    async fn step(&mut self) -> Result<(), Self::Error>;

    async fn connect(port: u16, tls: Arc<rustls::ClientConfig>, client_id: &str) -> Self {
        Self::try_connect(Self::options(port, tls, client_id))
            .await
            .unwrap()
    }
}

/// A rumqttc client with its event loop driven by the test, and the PUBLISHes received so far.
pub struct Mqtt<C, L> {
    pub client: C,
    pub events: L,
    pub inbox: VecDeque<Msg>,
}

impl<C, L> Mqtt<C, L> {
    fn new(client: C, events: L) -> Self {
        Mqtt {
            client,
            events,
            inbox: VecDeque::new(),
        }
    }

    /// The next received PUBLISH.
    pub async fn recv(&mut self) -> Msg
    where
        Self: Client,
    {
        loop {
            if let Some(m) = self.inbox.pop_front() {
                return m;
            }
            self.step().await.unwrap();
        }
    }
}

/// rumqttc MQTT 5 client.
pub type V5 = Mqtt<rumqttc::v5::AsyncClient, rumqttc::v5::EventLoop>;

impl Client for V5 {
    type Options = rumqttc::v5::MqttOptions;
    type Error = rumqttc::v5::ConnectionError;

    fn options(port: u16, tls: Arc<rustls::ClientConfig>, client_id: &str) -> Self::Options {
        let mut o = rumqttc::v5::MqttOptions::new(client_id, "localhost", port);
        o.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(tls)));
        o.set_keep_alive(Duration::from_secs(30));
        o.set_max_packet_size(Some(256 * 1024));
        // Otherwise rumqttc sizes its in-flight table for 65,535 messages (~13 MB per client).
        o.set_outgoing_inflight_upper_limit(16);
        o
    }

    async fn try_connect(opts: Self::Options) -> Result<V5, Self::Error> {
        let (client, mut events) = rumqttc::v5::AsyncClient::new(opts, 16);
        loop {
            match within("CONNACK", events.poll()).await? {
                rumqttc::v5::Event::Incoming(p5::Packet::ConnAck(_)) => break,
                _ => continue,
            }
        }
        Ok(Mqtt::new(client, events))
    }

    async fn step(&mut self) -> Result<(), Self::Error> {
        self.next().await.map(drop)
    }
}

impl V5 {
    /// Next packet from the server; a received PUBLISH is also kept in the inbox.
    pub async fn next(&mut self) -> Result<p5::Packet, rumqttc::v5::ConnectionError> {
        loop {
            match within("a packet", self.events.poll()).await? {
                rumqttc::v5::Event::Incoming(p) => {
                    if let p5::Packet::Publish(publish) = &p {
                        self.inbox.push_back(Msg {
                            topic: String::from_utf8(publish.topic.to_vec()).unwrap(),
                            payload: publish.payload.to_vec(),
                        });
                    }
                    return Ok(p);
                }
                rumqttc::v5::Event::Outgoing(_) => continue,
            }
        }
    }

    pub async fn subscribe(&mut self, filters: &[&str]) -> Vec<p5::SubscribeReasonCode> {
        let filters: Vec<p5::Filter> = filters
            .iter()
            .map(|f| p5::Filter::new(*f, QoS5::AtLeastOnce))
            .collect();
        self.client.subscribe_many(filters).await.unwrap();
        loop {
            if let p5::Packet::SubAck(ack) = self.next().await.unwrap() {
                return ack.return_codes;
            }
        }
    }

    /// Publish without waiting for an answer.
    pub async fn send(&mut self, topic: &str, qos: QoS5, payload: impl Into<Vec<u8>>) {
        self.client
            .publish(topic, qos, false, payload.into())
            .await
            .unwrap();
    }

    /// Publish at QoS 1 and wait for the PUBACK.
    pub async fn publish(&mut self, topic: &str, payload: impl Into<Vec<u8>>) -> p5::PubAck {
        self.send(topic, QoS5::AtLeastOnce, payload).await;
        loop {
            if let p5::Packet::PubAck(ack) = self.next().await.unwrap() {
                return ack;
            }
        }
    }

    /// Subscribe to the reply topics of `topic`, publish the request, and return the reply.
    pub async fn request(&mut self, topic: &str, payload: impl AsRef<[u8]>) -> Msg {
        let accepted = format!("{topic}/accepted");
        let rejected = format!("{topic}/rejected");
        let codes = self.subscribe(&[&accepted, &rejected]).await;
        assert!(codes
            .iter()
            .all(|c| *c == p5::SubscribeReasonCode::Success(QoS5::AtLeastOnce)));
        let ack = self.publish(topic, payload.as_ref().to_vec()).await;
        assert_eq!(ack.reason, p5::PubAckReason::Success);
        self.recv().await
    }

    /// CreateKeysAndCertificate must be accepted: the connection works and may provision.
    pub async fn expect_create_accepted(&mut self) {
        let reply = self.request(CREATE, "{}").await;
        assert_eq!(reply.topic, format!("{CREATE}/accepted"));
    }

    /// A clean end: sends DISCONNECT and returns once it has been written out.
    pub async fn disconnect(mut self) {
        self.client.disconnect().await.unwrap();
        loop {
            match within("DISCONNECT written", self.events.poll()).await {
                Ok(rumqttc::v5::Event::Outgoing(rumqttc::Outgoing::Disconnect)) => return,
                Ok(_) => continue,
                Err(e) => panic!("the connection ended before DISCONNECT went out: {e}"),
            }
        }
    }

    /// The server must end the connection with DISCONNECT `reason`.
    pub async fn expect_disconnect(&mut self, reason: p5::DisconnectReasonCode) {
        assert_eq!(self.closed().await, Some(reason));
    }

    /// Wait until the server ends the connection; returns its DISCONNECT reason, if it sent one.
    pub async fn closed(&mut self) -> Option<p5::DisconnectReasonCode> {
        loop {
            match self.next().await {
                Ok(_) => continue,
                Err(rumqttc::v5::ConnectionError::MqttState(
                    rumqttc::v5::StateError::ServerDisconnect { reason_code, .. },
                )) => return Some(reason_code),
                Err(_) => return None,
            }
        }
    }
}

/// rumqttc MQTT 3.1.1 client.
pub type V4 = Mqtt<rumqttc::AsyncClient, rumqttc::EventLoop>;

impl Client for V4 {
    type Options = rumqttc::MqttOptions;
    type Error = rumqttc::ConnectionError;

    fn options(port: u16, tls: Arc<rustls::ClientConfig>, client_id: &str) -> Self::Options {
        let mut o = rumqttc::MqttOptions::new(client_id, "localhost", port);
        o.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(tls)));
        o.set_keep_alive(Duration::from_secs(30));
        o.set_max_packet_size(256 * 1024, 256 * 1024);
        o
    }

    async fn try_connect(opts: Self::Options) -> Result<V4, Self::Error> {
        let (client, mut events) = rumqttc::AsyncClient::new(opts, 16);
        loop {
            if let rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_)) =
                within("CONNACK", events.poll()).await?
            {
                break;
            }
        }
        Ok(Mqtt::new(client, events))
    }

    async fn step(&mut self) -> Result<(), Self::Error> {
        self.next().await.map(drop)
    }
}

impl V4 {
    pub async fn next(&mut self) -> Result<rumqttc::Packet, rumqttc::ConnectionError> {
        loop {
            match within("a packet", self.events.poll()).await? {
                rumqttc::Event::Incoming(p) => {
                    if let rumqttc::Packet::Publish(publish) = &p {
                        self.inbox.push_back(Msg {
                            topic: publish.topic.clone(),
                            payload: publish.payload.to_vec(),
                        });
                    }
                    return Ok(p);
                }
                rumqttc::Event::Outgoing(_) => continue,
            }
        }
    }

    pub async fn subscribe(&mut self, filters: &[&str]) -> Vec<rumqttc::SubscribeReasonCode> {
        let filters: Vec<rumqttc::SubscribeFilter> = filters
            .iter()
            .map(|f| rumqttc::SubscribeFilter::new((*f).to_owned(), rumqttc::QoS::AtLeastOnce))
            .collect();
        self.client.subscribe_many(filters).await.unwrap();
        loop {
            if let rumqttc::Packet::SubAck(ack) = self.next().await.unwrap() {
                return ack.return_codes;
            }
        }
    }

    /// Publish without waiting for an answer.
    pub async fn send(&mut self, topic: &str, qos: rumqttc::QoS, payload: impl Into<Vec<u8>>) {
        self.client
            .publish(topic, qos, false, payload.into())
            .await
            .unwrap();
    }

    /// Publish at QoS 1 and wait for the PUBACK.
    pub async fn publish(&mut self, topic: &str, payload: impl Into<Vec<u8>>) {
        self.send(topic, rumqttc::QoS::AtLeastOnce, payload).await;
        loop {
            if let rumqttc::Packet::PubAck(_) = self.next().await.unwrap() {
                return;
            }
        }
    }

    pub async fn request(&mut self, topic: &str, payload: &str) -> Msg {
        let accepted = format!("{topic}/accepted");
        let rejected = format!("{topic}/rejected");
        let codes = self.subscribe(&[&accepted, &rejected]).await;
        assert!(codes
            .iter()
            .all(|c| *c == rumqttc::SubscribeReasonCode::Success(rumqttc::QoS::AtLeastOnce)));
        self.publish(topic, payload).await;
        self.recv().await
    }

    /// True once the server has closed the connection.
    pub async fn closed(&mut self) -> bool {
        loop {
            if self.next().await.is_err() {
                return true;
            }
        }
    }
}

/// CreateKeysAndCertificate then RegisterThing over MQTT 5; returns the new identity and the
/// RegisterThing reply.
pub async fn provision(env: &Env, serial: &str) -> (Identity, Value) {
    let mut c = V5::connect(
        env.port(),
        env.tls(&env.claim()),
        &format!("test-prov-{serial}"),
    )
    .await;
    let created = c.request(CREATE, "{}").await;
    assert_eq!(created.topic, format!("{CREATE}/accepted"));
    let created = created.json();
    let token = created["certificateOwnershipToken"].as_str().unwrap();
    let body = serde_json::json!({
        "certificateOwnershipToken": token,
        "parameters": {"SerialNumber": serial, "DeviceLocation": "Seattle"}
    });
    let registered = c.request(REGISTER, &body.to_string()).await;
    assert_eq!(
        registered.topic,
        format!("{REGISTER}/accepted"),
        "{:?}",
        registered.json()
    );
    let id = Identity {
        cert_pem: created["certificatePem"].as_str().unwrap().to_owned(),
        key_pem: created["privateKey"].as_str().unwrap().to_owned(),
    };
    (id, registered.json())
}

/// A fresh key and a CSR for it (PEM, empty subject).
pub fn new_csr() -> (rcgen::KeyPair, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let csr = rcgen::CertificateParams::new(Vec::<String>::new())
        .unwrap()
        .serialize_request(&key)
        .unwrap()
        .pem()
        .unwrap();
    (key, csr)
}

/// A TLS connection speaking raw bytes.
pub struct Raw {
    pub stream: TlsStream<TcpStream>,
    pub buf: BytesMut,
}

impl Raw {
    pub async fn connect(port: u16, tls: Arc<rustls::ClientConfig>) -> std::io::Result<Raw> {
        let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
        let name = ServerName::try_from("localhost").unwrap();
        let stream = tokio_rustls::TlsConnector::from(tls)
            .connect(name, tcp)
            .await?;
        Ok(Raw {
            stream,
            buf: BytesMut::new(),
        })
    }

    /// A raw MQTT 5 session of `client_id` that has received its CONNACK.
    pub async fn connected_v5(
        port: u16,
        tls: Arc<rustls::ClientConfig>,
        client_id: &str,
        keep_alive: u16,
    ) -> Raw {
        let mut raw = Raw::connect(port, tls).await.unwrap();
        raw.send(&connect_v5(client_id, keep_alive)).await;
        assert!(matches!(raw.read_v5().await, Some(p5::Packet::ConnAck(_))));
        raw
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
        self.stream.flush().await.unwrap();
    }

    /// Next MQTT 5 packet, or None once the server closed the connection.
    pub async fn read_v5(&mut self) -> Option<p5::Packet> {
        loop {
            match p5::Packet::read(&mut self.buf, None) {
                Ok(p) => return Some(p),
                Err(rumqttc::v5::mqttbytes::Error::InsufficientBytes(_)) => {}
                Err(e) => panic!("bad packet from server: {e}"),
            }
            let n = within("server bytes", self.stream.read_buf(&mut self.buf))
                .await
                .unwrap_or(0);
            if n == 0 {
                return None;
            }
        }
    }

    /// Read until the server closes; returns everything it sent on the way.
    pub async fn drain(&mut self) -> Vec<u8> {
        loop {
            let n = within("the server to close", self.stream.read_buf(&mut self.buf))
                .await
                .unwrap_or(0);
            if n == 0 {
                return self.buf.to_vec();
            }
        }
    }
}

/// An MQTT 5 CONNECT with the given keep-alive.
pub fn connect_v5(client_id: &str, keep_alive: u16) -> Vec<u8> {
    let connect = p5::Connect {
        keep_alive,
        client_id: client_id.to_owned(),
        clean_start: true,
        properties: None,
    };
    let mut out = BytesMut::new();
    p5::Packet::Connect(connect, None, None)
        .write(&mut out, None)
        .unwrap();
    out.to_vec()
}

/// An MQTT 5 SUBSCRIBE for one filter at QoS 1.
pub fn subscribe_v5(filter: &str, pkid: u16) -> Vec<u8> {
    let mut sub = p5::Subscribe::new(p5::Filter::new(filter, QoS5::AtLeastOnce), None);
    sub.pkid = pkid;
    let mut out = BytesMut::new();
    p5::Packet::Subscribe(sub).write(&mut out, None).unwrap();
    out.to_vec()
}
