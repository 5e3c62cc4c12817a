//! One connection's state machine: TLS handshake, CONNECT, then the packet loop until it ends.
//!
//! A connection owns its buffers, deadlines and in-flight provisioning requests; the endpoint's
//! shared state (sessions, fault, backend) is reached through [`Shared`].

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::{timeout, Instant};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use super::codec::{
    self, ConnCode, DecodeError, Delivery, Incoming, Outgoing, Peek, PubAckCode, Reason, SubCode,
    SubFilter, UnsubCode, Version, Will,
};
use super::outbound::Outbound;
use super::{
    lock, stopped, topic, Access, Control, Fault, Kick, Shared, Sub, MAX_PAYLOAD, MAX_REMAINING,
    STOP_GRACE,
};
use crate::access::store::Authorizer;
use crate::policy::{Action, Decision};

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A client that does not take our bytes for this long is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);
/// Messages waiting for one connection; a client that lets more pile up is dropped.
const QUEUE_LEN: usize = 256;
const MAX_SUBSCRIPTIONS: usize = 100;
/// Provisioning requests one connection may have in the service at once.
const MAX_PENDING_REQUESTS: usize = 16;
/// AWS IoT refuses longer client ids.
const MAX_CLIENT_ID_BYTES: usize = 128;
/// AWS IoT uses 1200 s when a client asks for 0 (no keep-alive) or more than 1200 s.
const MAX_KEEP_ALIVE: u16 = 1200;

pub(super) async fn serve_connection(
    shared: Arc<Shared>,
    acceptor: TlsAcceptor,
    tcp: TcpStream,
    peer: SocketAddr,
    mut shutdown: watch::Receiver<bool>,
) {
    // Small request/reply exchanges must not wait for delayed ACKs.
    let _ = tcp.set_nodelay(true);
    let stream = tokio::select! {
        r = timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)) => match r {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                log::warn!("{peer}: TLS handshake failed: {e}");
                return;
            }
            Err(_) => {
                log::warn!("{peer}: TLS handshake timed out");
                return;
            }
        },
        _ = stopped(&mut shutdown) => return,
    };
    let der = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .map(|c| c.as_ref().to_vec());
    // The verifier requires a client certificate, so this is only a safeguard.
    let Some(der) = der else { return };
    let (cert_id, access) = shared.backend.identify(&der);
    let cert_der = der;
    let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
    let mut conn = Conn {
        shared,
        id,
        peer,
        stream,
        inbuf: BytesMut::with_capacity(8 * 1024),
        out: BytesMut::with_capacity(8 * 1024),
        version: Version::V4,
        cert_id,
        client_id: String::new(),
        access,
        cert_der,
        authz: Authorizer::allow_all(),
        outbound: Outbound::new(),
        client_max_packet: usize::MAX,
        requests: JoinSet::new(),
    };
    conn.run(shutdown).await;
}

/// How a connection ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The client sent DISCONNECT; `will` says whether it asked for its will to be published.
    ClientDisconnect {
        will: bool,
    },
    /// The server closes with this MQTT 5 reason (on 3.1.1 it just closes).
    Server(Reason, &'static str),
    /// The transport failed or the peer went away.
    Lost,
    /// Refused before or at CONNACK: flush what is queued (the CONNACK) and close, no DISCONNECT.
    Refused,
    /// A fault injection closes the socket abruptly, discarding anything queued.
    Abort,
    Shutdown,
}

/// How the log tells the end of a connection: words, not the variant.
impl std::fmt::Display for End {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            End::ClientDisconnect { will: false } => f.write_str("client disconnected"),
            End::ClientDisconnect { will: true } => {
                f.write_str("client disconnected and asked for its will message")
            }
            End::Server(_, why) => write!(f, "closed by the server: {why}"),
            End::Lost => f.write_str("connection lost"),
            End::Refused => f.write_str("refused"),
            End::Abort => f.write_str("closed abruptly"),
            End::Shutdown => f.write_str("server shutting down"),
        }
    }
}

/// A reply from the service on its way to the requesting connection.
struct Reply {
    topic: String,
    payload: Bytes,
    /// Deliver even without a matching subscription (fault injection only).
    unsolicited: bool,
}

struct Conn {
    shared: Arc<Shared>,
    id: u64,
    peer: SocketAddr,
    stream: TlsStream<TcpStream>,
    inbuf: BytesMut,
    out: BytesMut,
    version: Version,
    cert_id: String,
    client_id: String,
    access: Access,
    cert_der: Vec<u8>,
    /// The connection's policies; set once CONNECT is read.
    authz: Authorizer,
    /// QoS 1 deliveries: packet ids, the Receive Maximum, those held for room.
    outbound: Outbound,
    client_max_packet: usize,
    requests: JoinSet<Option<Reply>>,
}

impl Conn {
    async fn run(&mut self, mut shutdown: watch::Receiver<bool>) {
        let connect = tokio::select! {
            r = timeout(CONNECT_TIMEOUT, self.read_connect()) => match r {
                Ok(Some(c)) => c,
                Ok(None) => return self.close(End::Refused).await,
                Err(_) => {
                    let secs = CONNECT_TIMEOUT.as_secs();
                    log::warn!("{}: no CONNECT within {secs} seconds", self.peer);
                    return self.close(End::Refused).await;
                }
            },
            _ = stopped(&mut shutdown) => return self.close(End::Shutdown).await,
        };

        if self.shared.fault() == Fault::NoConnack {
            return self.idle_until_closed(shutdown).await;
        }
        if self.access == Access::Denied {
            log::warn!(
                "{}: certificate {} is not active: CONNACK not authorized",
                self.peer,
                self.cert_id
            );
            self.connack(ConnCode::NotAuthorized, None, None);
            return self.close(End::Refused).await;
        }
        let mut assigned = None;
        let client_id = if connect.client_id.is_empty() {
            if self.version == Version::V4 && !connect.clean_start {
                self.connack(ConnCode::BadClientId, None, None);
                return self.close(End::Refused).await;
            }
            let generated = format!("fleetprov-emulator-{}", self.id);
            assigned = Some(generated.clone());
            generated
        } else {
            connect.client_id.clone()
        };
        // AWS IoT's limit on client ids.
        if client_id.len() > MAX_CLIENT_ID_BYTES {
            log::warn!(
                "{}: client id of {} bytes refused (at most {MAX_CLIENT_ID_BYTES})",
                self.peer,
                client_id.len()
            );
            self.connack(ConnCode::BadClientId, None, None);
            return self.close(End::Refused).await;
        }
        let keep_alive = match connect.keep_alive {
            0 => MAX_KEEP_ALIVE,
            k => k.min(MAX_KEEP_ALIVE),
        };
        let server_keep_alive = (keep_alive != connect.keep_alive).then_some(keep_alive);
        self.client_id = client_id.clone();
        if !self.authorize_connect() {
            // AWS answers MQTT 5 with CONNACK "not authorized"; MQTT 3.1.1 clients see the
            // connection closed without a CONNACK.
            if self.version == Version::V5 {
                self.connack(ConnCode::NotAuthorized, None, None);
            }
            return self.close(End::Refused).await;
        }
        if let Some(max) = connect.max_packet_size {
            self.client_max_packet = usize::try_from(max).unwrap_or(usize::MAX);
        }
        if let Some(max) = connect.receive_max {
            self.outbound.set_receive_max(max);
        }

        let (tx, mut rx) = mpsc::channel(QUEUE_LEN);
        let ctl = Arc::new(Control::default());
        self.shared
            .register(self.id, &client_id, tx, Arc::clone(&ctl));
        self.connack(ConnCode::Accepted, assigned, server_keep_alive);
        log::info!(
            "{}: connected as {client_id:?} ({}, certificate {}, {})",
            self.peer,
            self.version,
            self.cert_id,
            self.access
        );

        // MQTT: no packet for 1.5 times the keep-alive ends the connection.
        let grace = Duration::from_millis(u64::from(keep_alive) * 1500);
        let mut deadline = Instant::now() + grace;
        let end = loop {
            if !self.out.is_empty() {
                // A client that stopped reading blocks this write; being dropped for it (a full
                // queue noticed by a publisher) must still get through.
                let flushed = tokio::select! {
                    r = self.flush() => r.map_err(|_| End::Lost),
                    _ = ctl.notify.notified() => Err(End::Abort),
                };
                if let Err(end) = flushed {
                    break end;
                }
            }
            if self.inbuf.capacity() - self.inbuf.len() < 4096 {
                self.inbuf.reserve(8 * 1024);
            }
            tokio::select! {
                _ = stopped(&mut shutdown) => break End::Shutdown,
                _ = ctl.notify.notified() => {
                    break match *lock(&ctl.kick) {
                        Some(Kick::TakenOver) => End::Server(
                            Reason::SessionTakenOver,
                            "another connection uses this client id",
                        ),
                        _ => End::Server(Reason::QuotaExceeded, "client does not read fast enough"),
                    };
                }
                r = self.stream.read_buf(&mut self.inbuf) => match r {
                    Ok(0) | Err(_) => break End::Lost,
                    Ok(_) => {
                        deadline = Instant::now() + grace;
                        if let Some(end) = self.process_input() {
                            break end;
                        }
                    }
                },
                // Held deliveries are bounded like the queue: while they are full, the queue
                // fills and publishers drop this connection as too slow.
                Some(msg) = rx.recv(), if self.outbound.held() < QUEUE_LEN => {
                    if self.may_receive(&msg.topic) {
                        self.publish_out(&msg.topic, msg.payload, msg.qos, msg.properties);
                    }
                }
                Some(done) = self.requests.join_next(), if !self.requests.is_empty() => {
                    if let Ok(Some(reply)) = done {
                        self.deliver_reply(reply);
                    }
                }
                _ = tokio::time::sleep_until(deadline) => {
                    break End::Server(Reason::KeepAliveTimeout, "keep-alive timeout");
                }
            }
        };
        self.shared.unregister(self.id);
        if matches!(
            end,
            End::ClientDisconnect { will: true } | End::Server(..) | End::Lost
        ) {
            if let Some(will) = connect.will {
                self.publish_will(will);
            }
        }
        log::info!("{}: {client_id:?} closed: {end}", self.peer);
        self.close(end).await;
    }

    /// Read until a whole CONNECT is buffered; choose the codec from its protocol level first.
    async fn read_connect(&mut self) -> Option<codec::ConnectInfo> {
        loop {
            match codec::peek_connect(&self.inbuf) {
                Peek::NeedMore => {}
                Peek::Level(v) => {
                    self.version = v;
                    break;
                }
                Peek::UnsupportedLevel => {
                    self.out
                        .extend_from_slice(&codec::CONNACK_UNSUPPORTED_LEVEL);
                    return None;
                }
                Peek::NotConnect => return None,
            }
            self.read_more().await?;
        }
        loop {
            match codec::decode(self.version, &mut self.inbuf, MAX_REMAINING) {
                Ok(Some(Incoming::Connect(c))) => return Some(c),
                Ok(Some(_)) | Err(_) => return None,
                Ok(None) => self.read_more().await?,
            }
        }
    }

    async fn read_more(&mut self) -> Option<()> {
        if self.inbuf.capacity() - self.inbuf.len() < 4096 {
            self.inbuf.reserve(8 * 1024);
        }
        match self.stream.read_buf(&mut self.inbuf).await {
            Ok(0) | Err(_) => None,
            Ok(_) => Some(()),
        }
    }

    /// Keep the connection open without answering anything until the client or the server ends it.
    async fn idle_until_closed(&mut self, mut shutdown: watch::Receiver<bool>) {
        let mut sink = [0u8; 1024];
        loop {
            tokio::select! {
                _ = stopped(&mut shutdown) => return self.close(End::Shutdown).await,
                r = self.stream.read(&mut sink) => {
                    if matches!(r, Ok(0) | Err(_)) {
                        return self.close(End::Lost).await;
                    }
                }
            }
        }
    }

    fn connack(&mut self, code: ConnCode, assigned: Option<String>, keep_alive: Option<u16>) {
        self.send(&Outgoing::ConnAck {
            code,
            assigned_client_id: assigned,
            server_keep_alive: keep_alive,
            max_packet_size: MAX_PACKET_SIZE,
        });
    }

    fn send(&mut self, packet: &Outgoing) {
        if let Err(e) = codec::encode(self.version, packet, &mut self.out) {
            // A PUBLISH's payload may hold a private key: name its topic only.
            match packet {
                Outgoing::Publish(d) => {
                    log::error!("{}: cannot encode PUBLISH on {:?}: {e}", self.peer, d.topic)
                }
                other => log::error!("{}: cannot encode {}: {e}", self.peer, other.name()),
            }
        }
    }

    async fn flush(&mut self) -> io::Result<()> {
        let write = async {
            self.stream.write_all(&self.out).await?;
            self.stream.flush().await
        };
        let result = match timeout(WRITE_TIMEOUT, write).await {
            Ok(r) => r,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "client not reading",
            )),
        };
        self.out.clear();
        result
    }

    /// Say why (MQTT 5), close the TLS session, and wait briefly for provisioning requests still
    /// in the service so their registry writes finish before the connection is gone.
    async fn close(&mut self, end: End) {
        let reason = match end {
            End::Server(reason, text) => Some((reason, text)),
            End::Shutdown => Some((Reason::ServerShuttingDown, "server shutting down")),
            _ => None,
        };
        if let Some((reason, text)) = reason {
            self.send(&Outgoing::Disconnect(reason, text));
        }
        if !matches!(end, End::Lost | End::Abort) && !self.out.is_empty() {
            let out = std::mem::take(&mut self.out);
            let _ = timeout(CLOSE_TIMEOUT, async {
                self.stream.write_all(&out).await?;
                self.stream.flush().await
            })
            .await;
        }
        if !matches!(end, End::Lost | End::Abort) {
            let _ = timeout(CLOSE_TIMEOUT, self.stream.shutdown()).await;
        }
        let requests = &mut self.requests;
        let drained = timeout(STOP_GRACE, async {
            while requests.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            self.requests.abort_all();
        }
    }

    fn process_input(&mut self) -> Option<End> {
        loop {
            match codec::decode(self.version, &mut self.inbuf, MAX_REMAINING) {
                Ok(None) => return None,
                Ok(Some(packet)) => {
                    if let Some(end) = self.handle(packet) {
                        return Some(end);
                    }
                }
                Err(DecodeError::TooLarge) => {
                    return Some(End::Server(Reason::PacketTooLarge, "packet too large"))
                }
                Err(DecodeError::Malformed(e)) => {
                    log::warn!("{}: malformed packet: {e}", self.peer);
                    return Some(End::Server(Reason::MalformedPacket, "malformed packet"));
                }
            }
        }
    }

    fn handle(&mut self, packet: Incoming) -> Option<End> {
        match packet {
            Incoming::Publish(p) => self.on_publish(p),
            // Deliveries are not retransmitted (clean sessions only); an ack makes room under
            // the client's Receive Maximum.
            Incoming::PubAck(pkid) => {
                for d in self.outbound.ack(pkid, std::time::Instant::now()) {
                    self.send(&Outgoing::Publish(d));
                }
                None
            }
            Incoming::Subscribe { pkid, filters } => {
                self.on_subscribe(pkid, filters);
                None
            }
            Incoming::Unsubscribe { pkid, filters } => self.on_unsubscribe(pkid, filters),
            Incoming::PingReq => {
                self.send(&Outgoing::PingResp);
                None
            }
            Incoming::Disconnect { with_will } => Some(End::ClientDisconnect { will: with_will }),
            Incoming::Connect(_) => Some(End::Server(Reason::ProtocolError, "second CONNECT")),
            Incoming::Unexpected(what) => {
                log::warn!("{}: unexpected {what}", self.peer);
                Some(End::Server(Reason::ProtocolError, "unexpected packet"))
            }
        }
    }

    fn on_publish(&mut self, p: codec::Publish) -> Option<End> {
        if p.topic_alias {
            return Some(End::Server(
                Reason::TopicAliasInvalid,
                "topic aliases are not supported",
            ));
        }
        if p.qos > 1 {
            return Some(End::Server(
                Reason::QoSNotSupported,
                "QoS 2 is not supported",
            ));
        }
        // AWS's payload limit. The packet is within the Maximum Packet Size CONNACK announced,
        // so this is a refused message, not a protocol error: MQTT 5 QoS 1 gets PUBACK "quota
        // exceeded"; otherwise the connection ends (DISCONNECT "quota exceeded" on MQTT 5).
        if p.payload.len() > MAX_PAYLOAD {
            log::warn!(
                "{}: PUBLISH on {:?} refused: payload of {} bytes, more than {MAX_PAYLOAD}",
                self.peer,
                p.topic,
                p.payload.len()
            );
            if self.version == Version::V5 && p.qos == 1 {
                self.puback(&p, PubAckCode::QuotaExceeded);
                return None;
            }
            return Some(End::Server(
                Reason::QuotaExceeded,
                "payload larger than 128 KiB",
            ));
        }
        if !topic::valid_topic_name(&p.topic) {
            return Some(End::Server(Reason::TopicNameInvalid, "invalid topic name"));
        }
        // MQTT 5 clients were told Retain Available 0; AWS closes MQTT 3.1.1 clients that ask.
        if p.retain {
            log::warn!(
                "{}: retained PUBLISH on {:?} refused: retained messages are not kept",
                self.peer,
                p.topic
            );
            return Some(End::Server(
                Reason::RetainNotSupported,
                "retained messages are not supported",
            ));
        }
        let decision = self.authz.check(Action::Publish, &p.topic);
        if !decision.allowed {
            self.log_denied(Action::Publish, &p.topic, &decision);
            return self.refuse_publish(&p);
        }
        if topic::request_format(&p.topic).is_some() {
            let fault = self.shared.fault();
            if fault == Fault::DisconnectOnRequest {
                return Some(End::Abort);
            }
            match self.shared.backend.admit(&p.topic) {
                crate::throttle::Admission::Pass => {}
                crate::throttle::Admission::Close => return Some(End::Abort),
                crate::throttle::Admission::Reject(body) => {
                    self.puback(&p, PubAckCode::Success);
                    self.deliver_reply(Reply {
                        topic: format!("{}/rejected", p.topic),
                        payload: Bytes::from(body),
                        unsolicited: false,
                    });
                    return None;
                }
            }
            self.puback(&p, PubAckCode::Success);
            self.start_request(p.topic, p.payload, fault);
            return None;
        }
        // Reserved topics other than the requests are not served here, whatever the policy says.
        if p.topic.starts_with('$') {
            log::warn!(
                "{}: publish to {:?} not authorized: a reserved topic this endpoint does not serve",
                self.peer,
                p.topic
            );
            return self.refuse_publish(&p);
        }
        self.puback(&p, PubAckCode::Success);
        self.shared
            .fan_out(self.id, &p.topic, &p.payload, p.qos, &p.properties);
        None
    }

    /// A refused PUBLISH: MQTT 5 QoS 1 gets PUBACK "not authorized" and the connection stays; a
    /// QoS 0 publish (no PUBACK to carry the refusal) and MQTT 3.1.1 end the connection
    /// (DISCONNECT "not authorized" on MQTT 5).
    fn refuse_publish(&mut self, p: &codec::Publish) -> Option<End> {
        if self.version == Version::V5 && p.qos == 1 {
            self.puback(p, PubAckCode::NotAuthorized);
            return None;
        }
        Some(End::Server(Reason::NotAuthorized, "publish not authorized"))
    }

    /// Build the connection's policies and check iot:Connect for its client id; each refusal is
    /// logged with what decided it.
    fn authorize_connect(&mut self) -> bool {
        match self
            .shared
            .backend
            .authorize(&self.cert_der, &self.client_id)
        {
            Ok((authz, notes)) => {
                for note in notes {
                    log::warn!("{}: {:?}: {note}", self.peer, self.client_id);
                }
                self.authz = authz;
            }
            Err(why) => {
                log::warn!(
                    "{}: CONNECT as {:?} not authorized: {why}",
                    self.peer,
                    self.client_id
                );
                return false;
            }
        }
        let client_id = self.client_id.clone();
        let decision = self.authz.check(Action::Connect, &client_id);
        if !decision.allowed {
            self.log_denied(Action::Connect, &client_id, &decision);
        }
        decision.allowed
    }

    /// May this connection receive a message on `topic`? A message it may not is dropped
    /// silently for it, as AWS does; the log says so.
    fn may_receive(&self, topic: &str) -> bool {
        let decision = self.authz.check(Action::Receive, topic);
        if !decision.allowed {
            self.log_denied(Action::Receive, topic, &decision);
        }
        decision.allowed
    }

    fn log_denied(&self, action: Action, name: &str, decision: &Decision) {
        log::warn!(
            "{}: {:?}: {action} on {} not authorized: {decision}",
            self.peer,
            self.client_id,
            self.authz.resource(action, name)
        );
    }

    fn puback(&mut self, p: &codec::Publish, code: PubAckCode) {
        if p.qos == 1 {
            self.send(&Outgoing::PubAck { pkid: p.pkid, code });
        }
    }

    fn start_request(&mut self, request: String, payload: Bytes, fault: Fault) {
        match fault {
            Fault::Silent => return,
            Fault::ReplyAccepted(raw) => {
                let topic = format!("{request}/accepted");
                return self.deliver_reply(Reply {
                    topic,
                    payload: Bytes::from(raw),
                    unsolicited: false,
                });
            }
            _ => {}
        }
        if self.requests.len() >= MAX_PENDING_REQUESTS {
            let body = br#"{"statusCode":429,"errorCode":"Throttling","errorMessage":"Too many requests in progress on this connection."}"#;
            return self.deliver_reply(Reply {
                topic: format!("{request}/rejected"),
                payload: Bytes::from_static(body),
                unsolicited: false,
            });
        }
        let backend = Arc::clone(&self.shared.backend);
        let calls = Arc::clone(&self.shared.service_calls);
        let cert_id = self.cert_id.clone();
        let client_id = self.client_id.clone();
        let wrong_topic = fault == Fault::ReplyOnWrongTopic;
        self.requests.spawn(async move {
            let _permit = calls.acquire_owned().await.ok()?;
            // Key generation and signing are CPU-bound: keep them off the async workers.
            let handled = tokio::task::spawn_blocking(move || {
                backend
                    .handle(&request, &payload, &cert_id, &client_id)
                    .map(|(topic, body)| (request, topic, body))
            })
            .await
            .ok()??;
            let (request, topic, body) = handled;
            Some(if wrong_topic {
                Reply {
                    topic: format!("{request}/unexpected"),
                    payload: Bytes::from(body),
                    unsolicited: true,
                }
            } else {
                Reply {
                    topic,
                    payload: Bytes::from(body),
                    unsolicited: false,
                }
            })
        });
    }

    /// A reply goes to this connection only, and only if it subscribed to the reply topic.
    fn deliver_reply(&mut self, reply: Reply) {
        let qos = if reply.unsolicited {
            Some(1)
        } else {
            let qos = self.shared.subscribed_qos(self.id, &reply.topic);
            if qos.is_some() && !self.may_receive(&reply.topic) {
                return;
            }
            qos
        };
        match qos {
            Some(qos) => self.publish_out(&reply.topic, reply.payload, qos, None),
            None => log::warn!(
                "{}: reply on {:?} dropped: not subscribed",
                self.peer,
                reply.topic
            ),
        }
    }

    fn publish_out(
        &mut self,
        topic: &str,
        payload: Bytes,
        qos: u8,
        properties: Option<codec::PublishProperties>,
    ) {
        let d = Delivery {
            topic: topic.to_owned(),
            qos,
            pkid: 0,
            payload,
            properties,
        };
        // MQTT 5: a message larger than the client's maximum packet size is dropped for it.
        if codec::delivery_size(self.version, &d) > self.client_max_packet {
            return;
        }
        if let Some(d) = self.outbound.offer(d, std::time::Instant::now()) {
            self.send(&Outgoing::Publish(d));
        }
    }

    fn on_subscribe(&mut self, pkid: u16, filters: Vec<SubFilter>) {
        let fault = self.shared.fault();
        if fault == Fault::NoSuback {
            return;
        }
        let asked: Vec<String> = filters.iter().map(|f| f.filter.clone()).collect();
        let allowed: Vec<bool> = filters
            .iter()
            .map(|f| {
                if !topic::valid_filter(&f.filter) {
                    return true;
                }
                let decision = self.authz.check(Action::Subscribe, &f.filter);
                if !decision.allowed {
                    self.log_denied(Action::Subscribe, &f.filter, &decision);
                }
                decision.allowed
            })
            .collect();
        let codes = {
            let mut sessions = lock(&self.shared.sessions);
            let Some(session) = sessions.conns.get_mut(&self.id) else {
                return;
            };
            filters
                .into_iter()
                .zip(allowed)
                .map(|(f, allowed)| {
                    let share = topic::shared_parts(&f.filter)
                        .map(|(g, inner)| (g.to_owned(), inner.to_owned()));
                    if !topic::valid_filter(&f.filter)
                        || (topic::is_shared_filter(&f.filter) && share.is_none())
                    {
                        SubCode::FilterInvalid
                    } else if fault == Fault::RefuseSubscribe || !allowed {
                        SubCode::NotAuthorized
                    } else {
                        let qos = f.qos.min(1);
                        if let Some(s) = session.subs.iter_mut().find(|s| s.filter == f.filter) {
                            s.qos = qos;
                            s.no_local = f.no_local;
                            SubCode::Granted(qos)
                        } else if session.subs.len() >= MAX_SUBSCRIPTIONS {
                            SubCode::QuotaExceeded
                        } else {
                            session.subs.push(Sub {
                                filter: f.filter,
                                qos,
                                no_local: f.no_local,
                                share,
                            });
                            SubCode::Granted(qos)
                        }
                    }
                })
                .collect::<Vec<_>>()
        };
        if codes.iter().any(|c| !matches!(c, SubCode::Granted(_))) {
            let refused: Vec<String> = asked
                .iter()
                .zip(&codes)
                .filter(|(_, code)| !matches!(code, SubCode::Granted(_)))
                .map(|(filter, code)| format!("{filter} ({code})"))
                .collect();
            log::warn!(
                "{}: subscription refused: {}",
                self.peer,
                refused.join(", ")
            );
        }
        self.send(&Outgoing::SubAck { pkid, codes });
    }

    fn on_unsubscribe(&mut self, pkid: u16, filters: Vec<String>) -> Option<End> {
        if filters.is_empty() {
            return Some(End::Server(
                Reason::ProtocolError,
                "UNSUBSCRIBE without filters",
            ));
        }
        let codes = {
            let mut sessions = lock(&self.shared.sessions);
            let session = sessions.conns.get_mut(&self.id)?;
            filters
                .iter()
                .map(|f| {
                    let before = session.subs.len();
                    session.subs.retain(|s| &s.filter != f);
                    if session.subs.len() < before {
                        UnsubCode::Success
                    } else {
                        UnsubCode::NoSubscription
                    }
                })
                .collect()
        };
        self.send(&Outgoing::UnsubAck { pkid, codes });
        None
    }

    fn publish_will(&self, will: Will) {
        let allowed = topic::valid_topic_name(&will.topic)
            && !will.topic.starts_with('$')
            && will.payload.len() <= MAX_PAYLOAD
            && {
                let decision = self.authz.check(Action::Publish, &will.topic);
                if !decision.allowed {
                    self.log_denied(Action::Publish, &will.topic, &decision);
                }
                decision.allowed
            };
        if allowed {
            self.shared
                .fan_out(self.id, &will.topic, &will.payload, will.qos.min(1), &None);
        }
    }
}

/// The largest packet the decoder accepts, as CONNACK announces it: the fixed header's byte,
/// the Remaining Length's encoding, and [`MAX_REMAINING`] bytes.
const MAX_PACKET_SIZE: u32 = {
    let length_bytes = if MAX_REMAINING < 128 {
        1
    } else if MAX_REMAINING < 16_384 {
        2
    } else if MAX_REMAINING < 2_097_152 {
        3
    } else {
        4
    };
    (1 + length_bytes + MAX_REMAINING) as u32
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_announced_maximum_packet_size_is_what_the_decoder_takes() {
        // 147,456 bytes of remaining length take three bytes to encode.
        assert_eq!(MAX_REMAINING, 147_456);
        assert_eq!(MAX_PACKET_SIZE, 147_460);
    }
}
