//! One MQTT connection over rumqttc, MQTT 5 or 3.1.1 behind one interface.
//!
//! Two tasks run per connection:
//! - the event-loop task owns rumqttc's `EventLoop`, polls it, and hands SUBACKs, PUBACKs and
//!   replies to whoever waits for them. On the first error it stops polling (rumqttc would
//!   otherwise reconnect with the subscriptions gone) and fails everything pending.
//! - the sender task feeds requests to rumqttc one at a time. rumqttc does not return the
//!   packet id it assigns, but it reports `Outgoing::Subscribe(pkid)` / `Outgoing::Publish(pkid)`
//!   in the order requests went in; queuing each waiter just before its request, in one task,
//!   keeps those two orders equal even when a caller gives up half way.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use rumqttc::{Outgoing, TlsConfiguration, Transport};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use super::options::{ClientOptions, MqttVersion};
use super::tls::{describe_tls_error, tls_error};
use crate::error::{Error, ErrorKind};
use crate::log::{fp_log, Level};
use crate::protocol::{Topics, MAX_PAYLOAD_LEN};

/// Upper bound of unacknowledged QoS 1 publishes. rumqttc sizes its state tables by it (its
/// MQTT 5 default of 65,535 costs megabytes per connection); provisioning needs a handful.
const INFLIGHT: u16 = 16;
/// Capacity of rumqttc's request channel.
const REQUEST_CHANNEL: usize = 8;
/// Largest packet accepted or sent: AWS's 128 KiB payload plus room for topic and properties.
pub(crate) const MAX_PACKET: usize = MAX_PAYLOAD_LEN + 1024;
/// How long `disconnect` waits for the DISCONNECT packet to go out before closing anyway.
const DISCONNECT_GRACE: Duration = Duration::from_secs(2);

/// A message received on a reply topic.
pub(crate) struct Reply {
    /// Whether it came on `/accepted` (else `/rejected`).
    pub accepted: bool,
    pub topic: String,
    pub payload: Bytes,
}

/// Per-filter outcome of a SUBSCRIBE: `None` granted, `Some(reason)` refused.
type SubOutcome = Vec<Option<String>>;
type SubTx = oneshot::Sender<Result<SubOutcome, Error>>;
type PubTx = oneshot::Sender<Result<(), Error>>;
type ReplyTx = oneshot::Sender<Result<Reply, Error>>;

struct ReplySlot {
    id: u64,
    accepted: String,
    rejected: String,
    tx: Option<ReplyTx>,
}

#[derive(Default)]
struct State {
    /// Why the session ended; set once.
    closed: Option<Error>,
    /// SUBSCRIBE waiters in request order, until rumqttc names their packet id.
    sub_order: VecDeque<SubTx>,
    subs: HashMap<u16, SubTx>,
    /// Same for QoS 1 PUBLISH.
    pub_order: VecDeque<PubTx>,
    pubs: HashMap<u16, PubTx>,
    /// Packet id of a publish rumqttc parked on an id collision; its later
    /// `Outgoing::Publish` is the same publish, already matched.
    collided: Option<u16>,
    replies: Vec<ReplySlot>,
    next_slot: u64,
}

struct Shared {
    state: Mutex<State>,
    connected: AtomicBool,
    endpoint: String,
    /// Why the session ended, published once for [`Session::closed`].
    ended: watch::Sender<Option<Error>>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding this lock; recover rather than propagate a poison.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The error for an operation that finds the session gone.
    fn not_connected(&self) -> Error {
        match &self.lock().closed {
            Some(e) => Error::new(
                ErrorKind::Disconnected,
                format!("not connected: {}", e.message),
            ),
            None => Error::new(ErrorKind::Disconnected, "not connected"),
        }
    }

    /// Ends the session: every pending waiter gets `err`, later operations fail at once.
    fn close(&self, err: Error) {
        let mut st = self.lock();
        self.connected.store(false, Ordering::SeqCst);
        if st.closed.is_some() {
            return;
        }
        st.closed = Some(err.clone());
        // Still under the state lock, so watchers never see the end before the waiters do.
        self.ended.send_replace(Some(err.clone()));
        for tx in st.sub_order.drain(..) {
            let _ = tx.send(Err(err.clone()));
        }
        for (_, tx) in st.subs.drain() {
            let _ = tx.send(Err(err.clone()));
        }
        for tx in st.pub_order.drain(..) {
            let _ = tx.send(Err(err.clone()));
        }
        for (_, tx) in st.pubs.drain() {
            let _ = tx.send(Err(err.clone()));
        }
        for slot in st.replies.iter_mut() {
            if let Some(tx) = slot.tx.take() {
                let _ = tx.send(Err(err.clone()));
            }
        }
    }

    fn dispatch(&self, ev: Ev) {
        let mut st = self.lock();
        match ev {
            Ev::OutSubscribe(pkid) => match st.sub_order.pop_front() {
                Some(tx) => {
                    if let Some(old) = st.subs.insert(pkid, tx) {
                        let _ = old.send(Err(Error::new(
                            ErrorKind::Internal,
                            format!("packet id {pkid} reused before its SUBACK"),
                        )));
                    }
                }
                None => fp_log!(Level::Warn, "SUBSCRIBE {pkid} sent with nobody waiting"),
            },
            Ev::SubAck { pkid, outcome } => match st.subs.remove(&pkid) {
                Some(tx) => {
                    let _ = tx.send(Ok(outcome));
                }
                None => fp_log!(Level::Debug, "SUBACK {pkid} with nobody waiting"),
            },
            Ev::OutPublish(pkid) if st.collided == Some(pkid) => st.collided = None,
            Ev::OutPublish(pkid) | Ev::OutAwaitAck(pkid) => {
                if matches!(ev, Ev::OutAwaitAck(_)) {
                    st.collided = Some(pkid);
                }
                match st.pub_order.pop_front() {
                    Some(tx) => {
                        if let Some(old) = st.pubs.insert(pkid, tx) {
                            let _ = old.send(Err(Error::new(
                                ErrorKind::Internal,
                                format!("packet id {pkid} reused before its PUBACK"),
                            )));
                        }
                    }
                    None => fp_log!(Level::Warn, "PUBLISH {pkid} sent with nobody waiting"),
                }
            }
            Ev::PubAck { pkid, failure } => {
                if let Some(tx) = st.pubs.remove(&pkid) {
                    let _ = tx.send(match failure {
                        None => Ok(()),
                        Some(reason) => Err(Error::new(
                            ErrorKind::Rejected,
                            format!("the broker refused the publish: {reason}"),
                        )),
                    });
                }
            }
            Ev::Publish { topic, payload } => {
                let slot = st
                    .replies
                    .iter_mut()
                    .find(|s| s.tx.is_some() && (s.accepted == topic || s.rejected == topic));
                match slot {
                    Some(slot) => {
                        let accepted = slot.accepted == topic;
                        if let Some(tx) = slot.tx.take() {
                            fp_log!(Level::Debug, "reply on {topic} ({} bytes)", payload.len());
                            let _ = tx.send(Ok(Reply {
                                accepted,
                                topic,
                                payload,
                            }));
                        }
                    }
                    None => fp_log!(
                        Level::Info,
                        "ignoring a message on {topic} ({} bytes): no operation waits for it",
                        payload.len()
                    ),
                }
            }
            Ev::ConnAck | Ev::OutDisconnect | Ev::Other => {}
        }
    }
}

/// What the event loop reported, with the MQTT version's differences removed.
enum Ev {
    ConnAck,
    SubAck { pkid: u16, outcome: SubOutcome },
    Publish { topic: String, payload: Bytes },
    PubAck { pkid: u16, failure: Option<String> },
    OutSubscribe(u16),
    OutPublish(u16),
    OutAwaitAck(u16),
    OutDisconnect,
    Other,
}

fn outgoing(o: Outgoing) -> Ev {
    match o {
        Outgoing::Subscribe(p) => Ev::OutSubscribe(p),
        Outgoing::Publish(p) if p != 0 => Ev::OutPublish(p),
        Outgoing::AwaitAck(p) => Ev::OutAwaitAck(p),
        Outgoing::Disconnect => Ev::OutDisconnect,
        _ => Ev::Other,
    }
}

enum EventLoop {
    V4(Box<rumqttc::EventLoop>),
    V5(Box<rumqttc::v5::EventLoop>),
}

enum LoopError {
    V4(rumqttc::ConnectionError),
    V5(rumqttc::v5::ConnectionError),
}

impl EventLoop {
    async fn poll(&mut self) -> Result<Ev, LoopError> {
        match self {
            EventLoop::V4(el) => {
                use rumqttc::{Event, Packet, SubscribeReasonCode};
                Ok(match el.poll().await.map_err(LoopError::V4)? {
                    Event::Incoming(Packet::ConnAck(_)) => Ev::ConnAck,
                    Event::Incoming(Packet::SubAck(s)) => Ev::SubAck {
                        pkid: s.pkid,
                        outcome: s
                            .return_codes
                            .iter()
                            .map(|c| match c {
                                SubscribeReasonCode::Success(_) => None,
                                SubscribeReasonCode::Failure => Some("Failure (0x80)".to_owned()),
                            })
                            .collect(),
                    },
                    Event::Incoming(Packet::Publish(p)) => Ev::Publish {
                        topic: p.topic,
                        payload: p.payload,
                    },
                    Event::Incoming(Packet::PubAck(a)) => Ev::PubAck {
                        pkid: a.pkid,
                        failure: None,
                    },
                    Event::Incoming(_) => Ev::Other,
                    Event::Outgoing(o) => outgoing(o),
                })
            }
            EventLoop::V5(el) => {
                use rumqttc::v5::mqttbytes::v5::{Packet, PubAckReason, SubscribeReasonCode};
                use rumqttc::v5::Event;
                Ok(match el.poll().await.map_err(LoopError::V5)? {
                    Event::Incoming(Packet::ConnAck(_)) => Ev::ConnAck,
                    Event::Incoming(Packet::SubAck(s)) => {
                        let why = s
                            .properties
                            .as_ref()
                            .and_then(|p| p.reason_string.clone())
                            .map(|r| format!(" ({r})"))
                            .unwrap_or_default();
                        Ev::SubAck {
                            pkid: s.pkid,
                            outcome: s
                                .return_codes
                                .iter()
                                .map(|c| match c {
                                    SubscribeReasonCode::Success(_) => None,
                                    other => Some(format!("{other:?}{why}")),
                                })
                                .collect(),
                        }
                    }
                    Event::Incoming(Packet::Publish(p)) => Ev::Publish {
                        topic: String::from_utf8_lossy(&p.topic).into_owned(),
                        payload: p.payload,
                    },
                    Event::Incoming(Packet::PubAck(a)) => Ev::PubAck {
                        pkid: a.pkid,
                        failure: match a.reason {
                            PubAckReason::Success | PubAckReason::NoMatchingSubscribers => None,
                            other => Some(format!("{other:?}")),
                        },
                    },
                    Event::Incoming(_) => Ev::Other,
                    Event::Outgoing(o) => outgoing(o),
                })
            }
        }
    }
}

enum Link {
    V4(rumqttc::AsyncClient),
    V5(rumqttc::v5::AsyncClient),
}

impl Link {
    async fn subscribe(&self, filters: Vec<String>) -> bool {
        match self {
            Link::V4(c) => c
                .subscribe_many(
                    filters
                        .into_iter()
                        .map(|f| rumqttc::SubscribeFilter::new(f, rumqttc::QoS::AtLeastOnce)),
                )
                .await
                .is_ok(),
            Link::V5(c) => c
                .subscribe_many(filters.into_iter().map(|f| {
                    rumqttc::v5::mqttbytes::v5::Filter::new(
                        f,
                        rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
                    )
                }))
                .await
                .is_ok(),
        }
    }

    async fn publish(&self, topic: String, payload: Vec<u8>) -> bool {
        match self {
            Link::V4(c) => c
                .publish(topic, rumqttc::QoS::AtLeastOnce, false, payload)
                .await
                .is_ok(),
            Link::V5(c) => c
                .publish(
                    topic,
                    rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
                    false,
                    payload,
                )
                .await
                .is_ok(),
        }
    }

    /// One UNSUBSCRIBE per filter (rumqttc's API takes one at a time); nobody waits for the
    /// UNSUBACKs.
    async fn unsubscribe(&self, filters: Vec<String>) {
        for f in filters {
            let sent = match self {
                Link::V4(c) => c.unsubscribe(f).await.is_ok(),
                Link::V5(c) => c.unsubscribe(f).await.is_ok(),
            };
            if !sent {
                return;
            }
        }
    }

    async fn disconnect(&self) {
        let _ = match self {
            Link::V4(c) => c.disconnect().await.is_ok(),
            Link::V5(c) => c.disconnect().await.is_ok(),
        };
    }
}

enum Command {
    Subscribe(Vec<String>, SubTx),
    Publish(String, Vec<u8>, PubTx),
    Unsubscribe(Vec<String>),
    Disconnect,
}

/// Removes a reply slot when the operation ends, however it ends.
pub(crate) struct ReplyGuard {
    shared: Arc<Shared>,
    id: u64,
}

impl Drop for ReplyGuard {
    fn drop(&mut self) {
        self.shared.lock().replies.retain(|s| s.id != self.id);
    }
}

/// A live MQTT connection.
pub(crate) struct Session {
    shared: Arc<Shared>,
    commands: mpsc::UnboundedSender<Command>,
    stop: Mutex<Option<oneshot::Sender<()>>>,
    task: tokio::sync::Mutex<Option<JoinHandle<()>>>,
}

impl Session {
    /// Connects: TCP (through the proxy if any), TLS, CONNECT/CONNACK, within the connect
    /// timeout; then starts the tasks. Must run inside a tokio runtime.
    pub(crate) async fn connect(
        opts: &ClientOptions,
        tls: Arc<rustls::ClientConfig>,
        client_id: String,
    ) -> Result<Session, Error> {
        let endpoint = format!("{}:{}", opts.endpoint, opts.port);
        let mut network = rumqttc::NetworkOptions::new();
        network.set_tcp_nodelay(true);
        // Longer than our own limit, so ours fires first and names the cause.
        let secs = opts.connect_timeout.as_secs().saturating_add(2);
        network.set_connection_timeout(secs);
        let transport = Transport::tls_with_config(TlsConfiguration::Rustls(tls));
        let proxy = opts.proxy.as_ref().map(|(host, port)| rumqttc::Proxy {
            ty: rumqttc::ProxyType::Http,
            auth: rumqttc::ProxyAuth::None,
            addr: host.clone(),
            port: *port,
        });
        let (link, mut el) = match opts.mqtt_version {
            MqttVersion::V311 => {
                let mut mo = rumqttc::MqttOptions::new(client_id, opts.endpoint.clone(), opts.port);
                // Validated: 5..=65535 s, whole seconds are what goes on the wire.
                mo.set_keep_alive(Duration::from_secs(opts.keep_alive.as_secs()))
                    .set_clean_session(true)
                    .set_max_packet_size(MAX_PACKET, MAX_PACKET)
                    .set_inflight(INFLIGHT)
                    .set_transport(transport);
                if let Some(p) = proxy {
                    mo.set_proxy(p);
                }
                let (c, mut el) = rumqttc::AsyncClient::new(mo, REQUEST_CHANNEL);
                el.set_network_options(network);
                (Link::V4(c), EventLoop::V4(Box::new(el)))
            }
            MqttVersion::V5 => {
                let mut mo =
                    rumqttc::v5::MqttOptions::new(client_id, opts.endpoint.clone(), opts.port);
                mo.set_keep_alive(Duration::from_secs(opts.keep_alive.as_secs()))
                    .set_clean_start(true)
                    .set_max_packet_size(Some(MAX_PACKET as u32))
                    .set_outgoing_inflight_upper_limit(INFLIGHT)
                    .set_connection_timeout(secs)
                    .set_network_options(network)
                    .set_transport(transport);
                if let Some(p) = proxy {
                    mo.set_proxy(p);
                }
                let (c, el) = rumqttc::v5::AsyncClient::new(mo, REQUEST_CHANNEL);
                (Link::V5(c), EventLoop::V5(Box::new(el)))
            }
        };

        fp_log!(Level::Debug, "connecting to {endpoint}");
        match tokio::time::timeout(opts.connect_timeout, el.poll()).await {
            Err(_) => {
                return Err(Error::new(
                    ErrorKind::Timeout,
                    format!(
                        "no CONNACK from {endpoint} within {:?} (TCP, TLS or MQTT stalled)",
                        opts.connect_timeout
                    ),
                ))
            }
            Ok(Err(e)) => return Err(connect_error(&e, &opts.endpoint, &endpoint)),
            Ok(Ok(Ev::ConnAck)) => {}
            Ok(Ok(_)) => {
                return Err(Error::new(
                    ErrorKind::Connection,
                    format!("{endpoint} did not start with CONNACK"),
                ))
            }
        }

        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            connected: AtomicBool::new(true),
            endpoint: endpoint.clone(),
            ended: watch::Sender::new(None),
        });
        let (stop_tx, stop_rx) = oneshot::channel();
        let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(run_event_loop(el, shared.clone(), stop_rx));
        tokio::spawn(run_sender(link, shared.clone(), cmd_rx));
        Ok(Session {
            shared,
            commands: cmd_tx,
            stop: Mutex::new(Some(stop_tx)),
            task: tokio::sync::Mutex::new(Some(task)),
        })
    }

    pub(crate) fn is_connected(&self) -> bool {
        self.shared.connected.load(Ordering::SeqCst)
    }

    pub(crate) fn not_connected(&self) -> Error {
        self.shared.not_connected()
    }

    /// Resolves with the reason once the session has ended; at once if it already has.
    pub(crate) async fn closed(&self) -> Error {
        let mut rx = self.shared.ended.subscribe();
        let ended = match rx.wait_for(Option::is_some).await {
            Ok(reason) => reason.clone(),
            // `Shared` owns the sender and outlives `self`: not reachable.
            Err(_) => None,
        };
        ended.unwrap_or_else(|| Error::new(ErrorKind::Internal, "the session state was dropped"))
    }

    /// Queues one SUBSCRIBE (QoS 1) for `filters`; the receiver yields the SUBACK outcome.
    pub(crate) fn start_subscribe(
        &self,
        filters: Vec<String>,
    ) -> Result<oneshot::Receiver<Result<SubOutcome, Error>>, Error> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Subscribe(filters, tx))
            .map_err(|_| self.not_connected())?;
        Ok(rx)
    }

    /// Queues one QoS 1 PUBLISH; the receiver yields the PUBACK outcome.
    pub(crate) fn start_publish(
        &self,
        topic: String,
        payload: Vec<u8>,
    ) -> Result<oneshot::Receiver<Result<(), Error>>, Error> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Publish(topic, payload, tx))
            .map_err(|_| self.not_connected())?;
        Ok(rx)
    }

    /// Queues UNSUBSCRIBEs for `filters` without waiting for the UNSUBACKs. Callable from
    /// `Drop`: it neither blocks nor needs a runtime.
    pub(crate) fn unsubscribe(&self, filters: Vec<String>) {
        // A closed session has no subscriptions left to drop.
        let _ = self.commands.send(Command::Unsubscribe(filters));
    }

    /// Registers interest in the next message on `topics.accepted` or `topics.rejected`.
    pub(crate) fn expect_reply(
        &self,
        topics: &Topics,
    ) -> Result<(ReplyGuard, oneshot::Receiver<Result<Reply, Error>>), Error> {
        let (tx, rx) = oneshot::channel();
        let mut st = self.shared.lock();
        if let Some(e) = &st.closed {
            return Err(Error::new(
                ErrorKind::Disconnected,
                format!("not connected: {}", e.message),
            ));
        }
        let id = st.next_slot;
        st.next_slot += 1;
        st.replies.push(ReplySlot {
            id,
            accepted: topics.accepted.clone(),
            rejected: topics.rejected.clone(),
            tx: Some(tx),
        });
        Ok((
            ReplyGuard {
                shared: self.shared.clone(),
                id,
            },
            rx,
        ))
    }

    /// Sends DISCONNECT, fails pending operations with `Cancelled`, and returns when the
    /// connection is closed.
    pub(crate) async fn disconnect(&self) {
        self.shared.close(Error::new(
            ErrorKind::Cancelled,
            "the client was disconnected by its owner",
        ));
        let _ = self.commands.send(Command::Disconnect);
        let Some(mut task) = self.task.lock().await.take() else {
            return;
        };
        if tokio::time::timeout(DISCONNECT_GRACE, &mut task)
            .await
            .is_err()
        {
            self.stop_now();
            let _ = task.await;
        }
        fp_log!(Level::Info, "disconnected from {}", self.shared.endpoint);
    }

    fn stop_now(&self) {
        let tx = self.stop.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(tx) = tx {
            let _ = tx.send(());
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // No runtime may be current here; a oneshot send needs none.
        self.stop_now();
    }
}

/// Closes the session when a connection task ends in any way, a panic inside rumqttc
/// included: pending operations then fail at once instead of waiting for their timeout.
/// After a normal end the session is already closed and this does nothing.
struct CloseOnExit(Arc<Shared>);

impl Drop for CloseOnExit {
    fn drop(&mut self) {
        self.0.close(Error::new(
            ErrorKind::Internal,
            "the connection task ended unexpectedly",
        ));
    }
}

async fn run_event_loop(mut el: EventLoop, shared: Arc<Shared>, mut stop: oneshot::Receiver<()>) {
    let _close = CloseOnExit(shared.clone());
    loop {
        let polled = tokio::select! {
            biased;
            _ = &mut stop => {
                shared.close(Error::new(ErrorKind::Cancelled, "the client was closed"));
                break;
            }
            r = el.poll() => r,
        };
        match polled {
            Ok(Ev::OutDisconnect) => {
                shared.close(Error::new(
                    ErrorKind::Cancelled,
                    "the client was disconnected by its owner",
                ));
                break;
            }
            Ok(ev) => shared.dispatch(ev),
            Err(e) => {
                let err = runtime_error(&e, &shared.endpoint);
                fp_log!(Level::Warn, "{}", err.message);
                shared.close(err);
                break;
            }
        }
    }
    // Dropping the event loop closes the socket; it is never polled again, so never reconnects.
}

async fn run_sender(
    link: Link,
    shared: Arc<Shared>,
    mut commands: mpsc::UnboundedReceiver<Command>,
) {
    // Normally ends only with the `Session` itself, when nobody is left to see the close.
    let _close = CloseOnExit(shared.clone());
    while let Some(cmd) = commands.recv().await {
        match cmd {
            Command::Subscribe(filters, tx) => {
                {
                    let mut st = shared.lock();
                    if st.closed.is_some() {
                        drop(st);
                        let _ = tx.send(Err(shared.not_connected()));
                        continue;
                    }
                    st.sub_order.push_back(tx);
                }
                fp_log!(Level::Debug, "SUBSCRIBE {}", filters.join(", "));
                if !link.subscribe(filters).await {
                    let tx = shared.lock().sub_order.pop_back();
                    if let Some(tx) = tx {
                        let _ = tx.send(Err(shared.not_connected()));
                    }
                }
            }
            Command::Publish(topic, payload, tx) => {
                {
                    let mut st = shared.lock();
                    if st.closed.is_some() {
                        drop(st);
                        let _ = tx.send(Err(shared.not_connected()));
                        continue;
                    }
                    st.pub_order.push_back(tx);
                }
                fp_log!(Level::Debug, "PUBLISH {topic} ({} bytes)", payload.len());
                if !link.publish(topic, payload).await {
                    let tx = shared.lock().pub_order.pop_back();
                    if let Some(tx) = tx {
                        let _ = tx.send(Err(shared.not_connected()));
                    }
                }
            }
            Command::Unsubscribe(filters) => {
                if shared.lock().closed.is_some() {
                    continue;
                }
                fp_log!(Level::Debug, "UNSUBSCRIBE {}", filters.join(", "));
                link.unsubscribe(filters).await;
            }
            Command::Disconnect => link.disconnect().await,
        }
    }
}

type DynError = dyn std::error::Error + 'static;

/// The next error down a chain. Looks inside `io::Error`s, and through rumqttc's MQTT 5
/// `StateError::Deserialization`, which does not report its cause as a source.
fn next_in_chain(err: &DynError) -> Option<&DynError> {
    if let Some(rumqttc::v5::StateError::Deserialization(inner)) = err.downcast_ref() {
        return Some(inner);
    }
    if let Some(inner) = err
        .downcast_ref::<std::io::Error>()
        .and_then(|io| io.get_ref())
    {
        return Some(inner);
    }
    err.source()
}

/// The first error of type `T` in the chain starting at `e`.
fn find_in_chain<T: std::error::Error + 'static>(e: &DynError) -> Option<&T> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(t) = err.downcast_ref::<T>() {
            return Some(t);
        }
        cur = next_in_chain(err);
    }
    None
}

/// Finds an oversized incoming packet in an error chain.
fn oversized(e: &DynError) -> Option<usize> {
    if let Some(rumqttc::mqttbytes::Error::PayloadSizeLimitExceeded(n)) = find_in_chain(e) {
        return Some(*n);
    }
    if let Some(rumqttc::v5::mqttbytes::Error::PayloadSizeLimitExceeded { pkt_size, .. }) =
        find_in_chain(e)
    {
        return Some(*pkt_size);
    }
    None
}

/// Whether the chain says the peer simply went away.
fn closed_by_peer(e: &DynError) -> bool {
    use std::io::ErrorKind as K;
    if matches!(
        find_in_chain::<rumqttc::StateError>(e),
        Some(rumqttc::StateError::ConnectionAborted)
    ) || matches!(
        find_in_chain::<rumqttc::v5::StateError>(e),
        Some(rumqttc::v5::StateError::ConnectionAborted)
    ) {
        return true;
    }
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if matches!(
                io.kind(),
                K::UnexpectedEof | K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe
            ) {
                return true;
            }
        }
        cur = next_in_chain(err);
    }
    false
}

impl LoopError {
    fn as_dyn(&self) -> &DynError {
        match self {
            LoopError::V4(e) => e,
            LoopError::V5(e) => e,
        }
    }
}

/// Maps a failure before CONNACK.
fn connect_error(e: &LoopError, host: &str, endpoint: &str) -> Error {
    if let Some(r) = find_in_chain::<rustls::Error>(e.as_dyn()) {
        return tls_error(r, host);
    }
    let (kind, what) = match e {
        LoopError::V4(e) => {
            use rumqttc::ConnectionError as C;
            match e {
                C::ConnectionRefused(code) => (
                    ErrorKind::ConnectionRefused,
                    format!("{endpoint} refused the connection: {code:?}"),
                ),
                C::NetworkTimeout | C::FlushTimeout => (
                    ErrorKind::Timeout,
                    format!("connecting to {endpoint} timed out"),
                ),
                C::Tls(t) => (ErrorKind::Tls, format!("TLS with {endpoint} failed: {t}")),
                C::Proxy(p) => (
                    ErrorKind::Connection,
                    format!("cannot reach {endpoint} through the proxy: {p}"),
                ),
                C::Io(io) => (
                    ErrorKind::Connection,
                    format!("cannot connect to {endpoint}: {io}"),
                ),
                other => (ErrorKind::Connection, before_connack(endpoint, other)),
            }
        }
        LoopError::V5(e) => {
            use rumqttc::v5::{ConnectionError as C, StateError as S};
            match e {
                C::ConnectionRefused(code) | C::MqttState(S::ConnFail { reason: code }) => (
                    ErrorKind::ConnectionRefused,
                    format!("{endpoint} refused the connection: {code:?}"),
                ),
                C::Timeout(_) => (
                    ErrorKind::Timeout,
                    format!("connecting to {endpoint} timed out"),
                ),
                C::Tls(t) => (ErrorKind::Tls, format!("TLS with {endpoint} failed: {t}")),
                C::Proxy(p) => (
                    ErrorKind::Connection,
                    format!("cannot reach {endpoint} through the proxy: {p}"),
                ),
                C::Io(io) => (
                    ErrorKind::Connection,
                    format!("cannot connect to {endpoint}: {io}"),
                ),
                other => (ErrorKind::Connection, before_connack(endpoint, other)),
            }
        }
    };
    Error::new(kind, what)
}

fn before_connack(endpoint: &str, e: &DynError) -> String {
    if closed_by_peer(e) {
        format!("{endpoint} closed the connection before CONNACK")
    } else {
        format!("{endpoint} failed before CONNACK: {e}")
    }
}

/// Maps a failure of an established session; pending operations receive it.
fn runtime_error(e: &LoopError, endpoint: &str) -> Error {
    let dyn_err = e.as_dyn();
    if let Some(n) = oversized(dyn_err) {
        return Error::new(
            ErrorKind::BadReply,
            format!(
                "{endpoint} sent a packet of {n} bytes, over the {MAX_PACKET}-byte limit; \
                 connection closed"
            ),
        );
    }
    if let Some(r) = find_in_chain::<rustls::Error>(dyn_err) {
        return Error::new(
            ErrorKind::Disconnected,
            format!(
                "connection to {endpoint} lost: {}",
                describe_tls_error(r, endpoint)
            ),
        );
    }
    if let LoopError::V5(rumqttc::v5::ConnectionError::MqttState(
        rumqttc::v5::StateError::ServerDisconnect {
            reason_code,
            reason_string,
        },
    )) = e
    {
        return Error::new(
            ErrorKind::Disconnected,
            format!(
                "{endpoint} closed the connection: {reason_code:?}{}",
                reason_string
                    .as_ref()
                    .map(|s| format!(" ({s})"))
                    .unwrap_or_default()
            ),
        );
    }
    if closed_by_peer(dyn_err) {
        return Error::new(
            ErrorKind::Disconnected,
            format!("{endpoint} closed the connection"),
        );
    }
    Error::new(
        ErrorKind::Disconnected,
        format!("connection to {endpoint} lost: {dyn_err}"),
    )
}
