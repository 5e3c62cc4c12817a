//! The mutual-TLS MQTT endpoint: accepts connections, identifies each by its client certificate,
//! hands fleet-provisioning requests to the service, and relays every other topic between the
//! connected devices.
//!
//! Every connection runs in its own task with its own buffers and deadlines, so a connection that
//! sends garbage, stalls, never reads, or sends a huge packet only ever ends itself.

mod codec;
mod connection;
mod outbound;
mod topic;

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use tokio::net::TcpListener;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, watch, Notify, Semaphore};
use tokio::task::JoinSet;
use tokio::time::timeout;
use tokio_rustls::TlsAcceptor;

use connection::serve_connection;

pub use crate::service::MAX_PAYLOAD_BYTES as MAX_PAYLOAD;
/// Largest remaining length read off the wire: the payload limit plus room for topic and properties.
pub(crate) const MAX_REMAINING: usize = MAX_PAYLOAD + 16 * 1024;
/// How long `stop` waits for connections to finish before aborting them.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// Provisioning requests in the service at once, over all connections.
const MAX_SERVICE_CALLS: usize = 64;

/// A fault the endpoint can be told to inject, for testing a device library's error paths.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Fault {
    /// Normal behaviour.
    #[default]
    None,
    /// Acknowledge provisioning requests but never answer them.
    Silent,
    /// Never send CONNACK (the connection stays open until the client gives up).
    NoConnack,
    /// Never send SUBACK (the subscription is not made either).
    NoSuback,
    /// Refuse every subscription: SUBACK "not authorized" (0x87; 0x80 on MQTT 3.1.1).
    RefuseSubscribe,
    /// Close the connection, without PUBACK, as soon as a provisioning request arrives.
    DisconnectOnRequest,
    /// Answer every provisioning request with this raw payload on its `/accepted` topic.
    ReplyAccepted(Vec<u8>),
    /// Send the service's reply on `<request topic>/unexpected`, a topic the client never
    /// subscribed to, instead of the reply topic.
    ReplyOnWrongTopic,
}

/// What kind of certificate connected; what it may do is its policies' (see [`crate::policy`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// A provisioning claim, held to the claim policy.
    Claim,
    /// A provisioned, active device certificate, held to the policies its template attached.
    Device,
    /// Known but not usable (pending, inactive, revoked) or unknown: CONNACK "not authorized".
    Denied,
}

/// As the log names it.
impl std::fmt::Display for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Access::Claim => "a claim: provisioning topics only",
            Access::Device => "an active device certificate",
            Access::Denied => "not allowed to connect",
        })
    }
}

/// The service side the endpoint talks to.
pub(crate) trait Backend: Send + Sync + 'static {
    /// The certificate id of a connecting client and what it may do.
    fn identify(&self, cert_der: &[u8]) -> (String, Access);
    /// Handle one provisioning request; returns the reply topic and payload, if any.
    fn handle(
        &self,
        topic: &str,
        payload: &[u8],
        cert_id: &str,
        client_id: &str,
    ) -> Option<(String, Vec<u8>)>;
    /// The policies and policy variables of a connection with this certificate and client id,
    /// with notes worth a warning; `Err` says why it may not connect at all.
    fn authorize(
        &self,
        _cert_der: &[u8],
        _client_id: &str,
    ) -> Result<(crate::access::store::Authorizer, Vec<String>), String> {
        Ok((crate::access::store::Authorizer::allow_all(), Vec::new()))
    }
    /// Whether a request is served, rejected as throttled, or closes the connection.
    fn admit(&self, _topic: &str) -> crate::throttle::Admission {
        crate::throttle::Admission::Pass
    }
}

/// Resolves once the endpoint is stopping (or its owner is gone).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is not Send; drop it here.
    let _ = shutdown.wait_for(|stop| *stop).await.is_ok();
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Why another task ended a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kick {
    TakenOver,
    TooSlow,
}

#[derive(Default)]
struct Control {
    notify: Notify,
    kick: Mutex<Option<Kick>>,
}

impl Control {
    fn kick(&self, k: Kick) {
        lock(&self.kick).get_or_insert(k);
        self.notify.notify_one();
    }
}

struct Sub {
    /// As subscribed (`$share/GROUP/FILTER` for a shared subscription).
    filter: String,
    qos: u8,
    no_local: bool,
    /// A shared subscription's group and topic filter.
    share: Option<(String, String)>,
}

impl Sub {
    /// The topic filter topics are matched against.
    fn topic_filter(&self) -> &str {
        self.share.as_ref().map_or(&self.filter, |(_, f)| f)
    }
}

/// A message relayed from another connection.
struct Message {
    topic: String,
    payload: Bytes,
    qos: u8,
    properties: Option<codec::PublishProperties>,
}

struct Session {
    client_id: String,
    subs: Vec<Sub>,
    tx: mpsc::Sender<Message>,
    ctl: Arc<Control>,
}

#[derive(Default)]
struct Sessions {
    conns: HashMap<u64, Session>,
    client_ids: HashMap<String, u64>,
}

/// A handle that changes the fault of a running endpoint.
#[derive(Clone)]
pub(crate) struct FaultSwitch(Arc<Mutex<Fault>>);

impl FaultSwitch {
    pub(crate) fn set(&self, fault: Fault) {
        *lock(&self.0) = fault;
    }
}

struct Shared {
    backend: Arc<dyn Backend>,
    fault: Arc<Mutex<Fault>>,
    sessions: Mutex<Sessions>,
    next_id: AtomicU64,
    /// Turns among the members of shared subscription groups.
    share_turn: AtomicU64,
    service_calls: Arc<Semaphore>,
}

impl Shared {
    fn fault(&self) -> Fault {
        lock(&self.fault).clone()
    }

    /// Add a session; a session already holding the client id is told to go (MQTT's takeover).
    fn register(&self, id: u64, client_id: &str, tx: mpsc::Sender<Message>, ctl: Arc<Control>) {
        let mut s = lock(&self.sessions);
        if let Some(old) = s.client_ids.insert(client_id.to_owned(), id) {
            if let Some(old) = s.conns.get(&old) {
                old.ctl.kick(Kick::TakenOver);
            }
        }
        s.conns.insert(
            id,
            Session {
                client_id: client_id.to_owned(),
                subs: Vec::new(),
                tx,
                ctl,
            },
        );
    }

    fn unregister(&self, id: u64) {
        let mut s = lock(&self.sessions);
        if let Some(session) = s.conns.remove(&id) {
            if s.client_ids.get(&session.client_id) == Some(&id) {
                s.client_ids.remove(&session.client_id);
            }
        }
    }

    /// Deliver a plain publish to every session with a matching subscription. Never waits: a
    /// session whose queue is full is dropped rather than slowing the publisher down.
    fn fan_out(
        &self,
        publisher: u64,
        topic: &str,
        payload: &Bytes,
        qos: u8,
        properties: &Option<codec::PublishProperties>,
    ) {
        let s = lock(&self.sessions);
        let deliver = |session: &Session, granted: u8| {
            let msg = Message {
                topic: topic.to_owned(),
                payload: payload.clone(),
                qos: granted.min(qos),
                properties: properties.clone(),
            };
            if let Err(TrySendError::Full(_)) = session.tx.try_send(msg) {
                session.ctl.kick(Kick::TooSlow);
            }
        };
        // Shared subscription groups by (group, filter): members in connection order.
        let mut groups: BTreeMap<(&str, &str), Vec<(u64, u8)>> = BTreeMap::new();
        for (id, session) in &s.conns {
            let mut granted = None;
            for sub in &session.subs {
                if !topic::filter_matches(sub.topic_filter(), topic) {
                    continue;
                }
                match &sub.share {
                    Some((group, filter)) => groups
                        .entry((group.as_str(), filter.as_str()))
                        .or_default()
                        .push((*id, sub.qos)),
                    None if sub.no_local && *id == publisher => {}
                    None => granted = granted.max(Some(sub.qos)),
                }
            }
            if let Some(granted) = granted {
                deliver(session, granted);
            }
        }
        // Each group gets the message once, its members taking turns.
        for members in groups.values_mut() {
            members.sort_unstable();
            let turn = self.share_turn.fetch_add(1, Ordering::Relaxed);
            let (id, granted) = members[(turn % members.len() as u64) as usize];
            if let Some(session) = s.conns.get(&id) {
                deliver(session, granted);
            }
        }
    }

    /// The highest QoS among this session's subscriptions matching `topic`, if any matches.
    fn subscribed_qos(&self, id: u64, topic: &str) -> Option<u8> {
        let s = lock(&self.sessions);
        s.conns
            .get(&id)?
            .subs
            .iter()
            .filter(|sub| sub.share.is_none() && topic::filter_matches(&sub.filter, topic))
            .map(|sub| sub.qos)
            .max()
    }
}

/// A running endpoint.
pub(crate) struct Broker {
    shared: Arc<Shared>,
    addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Broker {
    /// Bind `addr` and start accepting connections.
    pub(crate) async fn start(
        addr: SocketAddr,
        tls: Arc<rustls::ServerConfig>,
        backend: Arc<dyn Backend>,
        fault: Fault,
    ) -> io::Result<Broker> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            backend,
            fault: Arc::new(Mutex::new(fault)),
            sessions: Mutex::new(Sessions::default()),
            next_id: AtomicU64::new(1),
            share_turn: AtomicU64::new(0),
            service_calls: Arc::new(Semaphore::new(MAX_SERVICE_CALLS)),
        });
        let (shutdown, rx) = watch::channel(false);
        let task = tokio::spawn(accept_loop(
            listener,
            TlsAcceptor::from(tls),
            Arc::clone(&shared),
            rx,
        ));
        Ok(Broker {
            shared,
            addr,
            shutdown,
            task,
        })
    }

    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub(crate) fn fault_switch(&self) -> FaultSwitch {
        FaultSwitch(Arc::clone(&self.shared.fault))
    }

    /// Stop accepting, close every connection (MQTT 5 clients get DISCONNECT "server shutting
    /// down"), and wait for all connection tasks to end.
    pub(crate) async fn stop(self) {
        self.shutdown.send_replace(true);
        let _ = self.task.await;
    }
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            _ = stopped(&mut shutdown) => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    conns.spawn(serve_connection(
                        Arc::clone(&shared),
                        acceptor.clone(),
                        tcp,
                        peer,
                        shutdown.clone(),
                    ));
                }
                Err(e) => {
                    // Usually out of file descriptors: back off instead of spinning.
                    log::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    drop(listener);
    let drained = timeout(STOP_GRACE, async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        conns.abort_all();
        while conns.join_next().await.is_some() {}
    }
}

/// Feeds untrusted bytes through what a connection does with them before any state is touched:
/// the CONNECT peek, the packet decoder of the chosen protocol level, and the topic checks.
/// Used by the fuzz targets; it must never panic, whatever the input.
#[doc(hidden)]
pub fn fuzz_packets(data: &[u8]) {
    let version = match codec::peek_connect(data) {
        codec::Peek::Level(v) => v,
        // Also decode streams that do not start with CONNECT, as both codecs.
        _ if data.first().is_some_and(|b| b & 1 == 1) => codec::Version::V5,
        _ => codec::Version::V4,
    };
    let mut buf = bytes::BytesMut::from(data);
    while let Ok(Some(packet)) = codec::decode(version, &mut buf, MAX_REMAINING) {
        if let codec::Incoming::Subscribe { filters, .. } = &packet {
            for f in filters {
                let _ =
                    topic::valid_filter(&f.filter) && topic::filter_matches(&f.filter, "$aws/x");
                let _ = topic::is_reply_topic(&f.filter);
            }
        }
        if let codec::Incoming::Publish(p) = &packet {
            let _ = topic::valid_topic_name(&p.topic) && topic::request_format(&p.topic).is_some();
        }
    }
}
