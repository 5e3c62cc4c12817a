//! One MQTT connection, MQTT 5 or 3.1.1 behind one interface, driven by our own state machine
//! over rumqttc's packet codec.
//!
//! One task per connection owns the TLS stream. It reads, frames and acts on every complete
//! packet in what it received before it looks at how the read ended, so a reply that arrived
//! together with a DISCONNECT or the TCP close is delivered, and only then is the loss
//! reported. It assigns packet ids itself, so SUBACKs and PUBACKs find their waiters by id.
//! Requests reach it through a channel; waiters (SUBACK, PUBACK, replies) live in [`Shared`],
//! so an operation that gives up simply drops its receiver.
//!
//! Memory per connection is bounded whatever the broker sends: a frame's length is checked
//! against [`MAX_PACKET`] before any of it is buffered, the receive buffer grows only for a
//! packet that needs it and shrinks back once idle, nothing the broker sends is kept beyond
//! the packet at hand (topic aliases, which would oblige a client to remember topics, are
//! refused: the client allows none), and at most [`INFLIGHT`] publishes wait for a PUBACK.

mod errors;
mod mqtt;
mod transport;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::options::{ClientOptions, MqttVersion};
use crate::error::{Error, ErrorKind};
use crate::log::{fp_log, Level};
use crate::protocol::{Topics, MAX_PAYLOAD_LEN};
use errors::Phase;
use mqtt::{FrameError, Incoming, Outgoing};
use transport::Stream;

/// Upper bound of unacknowledged QoS 1 publishes, ours and the broker's (our Receive Maximum).
/// Provisioning needs a handful.
const INFLIGHT: u16 = 16;
/// Largest packet accepted or sent: AWS's 128 KiB payload plus room for topic and properties.
pub(crate) const MAX_PACKET: usize = MAX_PAYLOAD_LEN + 1024;
/// How long `disconnect` waits for the DISCONNECT packet to go out before closing anyway.
const DISCONNECT_GRACE: Duration = Duration::from_secs(2);
/// How long a write may wait for the broker to take our bytes before the connection counts
/// as lost.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// The receive buffer's size between packets; larger packets grow it for as long as needed.
const READ_CHUNK: usize = 2048;
/// How long a PUBACK for a reply may wait to go out with the next packet we send. A reply is
/// usually followed by the next request (RegisterThing after the certificate) or by
/// DISCONNECT, so the acknowledgement rides along instead of costing a write of its own. Under
/// load that next packet can be hundreds of milliseconds away (the callback that sends it waits
/// its turn): at 20 ms, 1,000 devices provisioning at once sent 9 writes a device, not 7.
/// Neither MQTT version times a PUBACK: a broker resends only on reconnection (MQTT 3.1.1 and
/// MQTT 5, section 4.4), so a later acknowledgement costs it nothing but an in-flight slot.
const ACK_DELAY: Duration = Duration::from_secs(1);

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
type ReplyTx = mpsc::UnboundedSender<Result<Reply, Error>>;
/// Receives the replies a slot takes: one, or (see [`Session::expect_replies`]) every one
/// until the slot is dropped.
pub(crate) type ReplyRx = mpsc::UnboundedReceiver<Result<Reply, Error>>;

struct ReplySlot {
    id: u64,
    accepted: String,
    rejected: String,
    tx: Option<ReplyTx>,
    /// Takes every message on its topics, not only the first.
    many: bool,
}

#[derive(Default)]
struct State {
    /// Why the session ended; set once.
    closed: Option<Error>,
    /// Waiters by packet id.
    subs: HashMap<u16, SubTx>,
    pubs: HashMap<u16, PubTx>,
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
        not_connected(self.lock().closed.as_ref())
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
        for (_, tx) in st.subs.drain() {
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

    /// Hands a received message to the operation waiting on its topic.
    fn deliver(&self, topic: String, payload: Bytes) {
        let mut st = self.lock();
        let slot = st
            .replies
            .iter_mut()
            .find(|s| s.tx.is_some() && (s.accepted == topic || s.rejected == topic));
        let taken = slot.and_then(|s| {
            let tx = if s.many { s.tx.clone() } else { s.tx.take() };
            Some((s.accepted == topic, tx?))
        });
        match taken {
            Some((accepted, tx)) => {
                fp_log!(Level::Debug, "reply on {topic} ({} bytes)", payload.len());
                let _ = tx.send(Ok(Reply {
                    accepted,
                    topic,
                    payload,
                }));
            }
            None => fp_log!(
                Level::Info,
                "ignoring a message on {topic} ({} bytes): no operation waits for it",
                payload.len()
            ),
        }
    }
}

fn not_connected(closed: Option<&Error>) -> Error {
    match closed {
        Some(e) => Error::new(
            ErrorKind::Disconnected,
            format!("not connected: {}", e.message),
        ),
        None => Error::new(ErrorKind::Disconnected, "not connected"),
    }
}

/// Sent boxed: the channel's blocks hold 32 slots each, and a slot of pointer size keeps a
/// connection's idle channel at a few hundred bytes instead of two kilobytes.
enum Command {
    Subscribe(Vec<String>, SubTx),
    Publish(String, Bytes, PubTx),
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
    commands: mpsc::UnboundedSender<Box<Command>>,
    stop: Mutex<Option<oneshot::Sender<()>>>,
    task: tokio::sync::Mutex<Option<JoinHandle<()>>>,
}

impl Session {
    /// Connects: TCP (through the proxy if any), TLS, CONNECT/CONNACK, within the connect
    /// timeout; then starts the connection's task. Must run inside a tokio runtime.
    pub(crate) async fn connect(
        opts: &ClientOptions,
        tls: Arc<rustls::ClientConfig>,
        client_id: String,
    ) -> Result<Session, Error> {
        let endpoint = format!("{}:{}", opts.endpoint, opts.port);
        fp_log!(Level::Debug, "connecting to {endpoint}");
        let conn = match tokio::time::timeout(
            opts.connect_timeout,
            Connection::open(opts, tls, &client_id, &endpoint),
        )
        .await
        {
            Ok(conn) => conn?,
            Err(_) => {
                return Err(Error::new(
                    ErrorKind::Timeout,
                    format!(
                        "no CONNACK from {endpoint} within {:?} (TCP, TLS or MQTT stalled)",
                        opts.connect_timeout
                    ),
                ))
            }
        };
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            connected: AtomicBool::new(true),
            endpoint,
            ended: watch::Sender::new(None),
        });
        let (stop_tx, stop_rx) = oneshot::channel();
        let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(conn.run(shared.clone(), cmd_rx, stop_rx));
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
            .send(Box::new(Command::Subscribe(filters, tx)))
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
            .send(Box::new(Command::Publish(topic, Bytes::from(payload), tx)))
            .map_err(|_| self.not_connected())?;
        Ok(rx)
    }

    /// Queues an UNSUBSCRIBE for `filters` without waiting for the UNSUBACK. Callable from
    /// `Drop`: it neither blocks nor needs a runtime.
    pub(crate) fn unsubscribe(&self, filters: Vec<String>) {
        // A closed session has no subscriptions left to drop.
        let _ = self.commands.send(Box::new(Command::Unsubscribe(filters)));
    }

    /// Registers interest in the next message on `topics.accepted` or `topics.rejected`.
    pub(crate) fn expect_reply(&self, topics: &Topics) -> Result<(ReplyGuard, ReplyRx), Error> {
        self.reply_slot(topics, false)
    }

    /// Registers interest in every message on `topics.accepted` or `topics.rejected` until the
    /// guard is dropped: for an operation that may have to pass over answers that are not its
    /// own, without a gap in which its own could be missed.
    pub(crate) fn expect_replies(&self, topics: &Topics) -> Result<(ReplyGuard, ReplyRx), Error> {
        self.reply_slot(topics, true)
    }

    fn reply_slot(&self, topics: &Topics, many: bool) -> Result<(ReplyGuard, ReplyRx), Error> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut st = self.shared.lock();
        if st.closed.is_some() {
            return Err(not_connected(st.closed.as_ref()));
        }
        let id = st.next_slot;
        st.next_slot += 1;
        st.replies.push(ReplySlot {
            id,
            accepted: topics.accepted.clone(),
            rejected: topics.rejected.clone(),
            tx: Some(tx),
            many,
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
        let _ = self.commands.send(Box::new(Command::Disconnect));
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

/// Closes the session when the connection task ends in any way, a panic included: pending
/// operations then fail at once instead of waiting for their timeout. After a normal end the
/// session is already closed and this does nothing.
struct CloseOnExit(Arc<Shared>);

impl Drop for CloseOnExit {
    fn drop(&mut self) {
        self.0.close(Error::new(
            ErrorKind::Internal,
            "the connection task ended unexpectedly",
        ));
    }
}

/// What ends the connection task: the error every pending operation receives, and the
/// DISCONNECT reason code (MQTT 5) to send first, if any.
struct End {
    error: Error,
    disconnect_with: Option<u8>,
}

impl End {
    fn quietly(error: Error) -> End {
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

const REASON_MALFORMED: u8 = 0x81;
const REASON_PROTOCOL_ERROR: u8 = 0x82;
const REASON_QOS_NOT_SUPPORTED: u8 = 0x9b;
const REASON_TOPIC_ALIAS_INVALID: u8 = 0x94;
const REASON_PACKET_TOO_LARGE: u8 = 0x95;

/// The connection's own state, owned by its task.
struct Connection {
    stream: Stream,
    version: MqttVersion,
    endpoint: String,
    rbuf: BytesMut,
    /// How many bytes the frame at the front of `rbuf` needs in all.
    want: usize,
    wbuf: BytesMut,
    /// PUBACKs not written yet, and when they must be at the latest.
    acks: BytesMut,
    ack_due: Option<Instant>,
    next_pkid: u16,
    /// Packet ids of UNSUBSCRIBEs awaiting their UNSUBACK.
    unsubs: HashSet<u16>,
    /// Publishes sent and not acknowledged, and the most the broker allows (Receive Maximum).
    inflight: usize,
    send_quota: usize,
    /// Publishes waiting for a free place under `send_quota`.
    queued: VecDeque<(String, Bytes, PubTx)>,
    /// The broker's Maximum Packet Size (MQTT 5), else ours.
    max_out: usize,
    /// `None`: keep-alive off (MQTT 5 Server Keep Alive 0).
    keep_alive: Option<Duration>,
    last_sent: Instant,
    ping_sent: Option<Instant>,
}

impl Connection {
    /// TCP, TLS, CONNECT and a validated CONNACK.
    async fn open(
        opts: &ClientOptions,
        tls: Arc<rustls::ClientConfig>,
        client_id: &str,
        endpoint: &str,
    ) -> Result<Connection, Error> {
        // Validated: 5..=65535 s, whole seconds are what goes on the wire.
        let keep_alive = u16::try_from(opts.keep_alive.as_secs()).unwrap_or(u16::MAX);
        // CONNECT goes out with the handshake's last flight (one write, one segment): TLS 1.3
        // lets the client send data right after its Finished, and rustls holds it until then.
        let mut connect = BytesMut::new();
        mqtt::encode(
            opts.mqtt_version,
            Outgoing::Connect {
                client_id,
                keep_alive,
                receive_maximum: INFLIGHT,
                maximum_packet_size: MAX_PACKET as u32,
            },
            &mut connect,
        )
        .map_err(|e| Error::new(ErrorKind::InvalidArgument, e))?;
        let stream = transport::open(opts, tls, endpoint, &connect).await?;
        let mut conn = Connection {
            stream,
            version: opts.mqtt_version,
            endpoint: endpoint.to_owned(),
            rbuf: BytesMut::new(),
            want: 2,
            wbuf: BytesMut::new(),
            acks: BytesMut::new(),
            ack_due: None,
            next_pkid: 0,
            unsubs: HashSet::new(),
            inflight: 0,
            send_quota: usize::from(INFLIGHT),
            queued: VecDeque::new(),
            max_out: MAX_PACKET,
            keep_alive: Some(Duration::from_secs(u64::from(keep_alive))),
            last_sent: Instant::now(),
            ping_sent: None,
        };
        let connack = match conn.next_packet(Phase::Connack).await {
            Ok(Incoming::ConnAck(c)) => c,
            Ok(other) => {
                let end = End::protocol(
                    endpoint,
                    REASON_PROTOCOL_ERROR,
                    format!("{} before CONNACK", describe(&other)),
                );
                return Err(conn.finish(end).await);
            }
            Err(end) => return Err(conn.finish(end).await),
        };
        if let Err(end) = conn.accept_connack(&connack, opts) {
            return Err(conn.finish(end).await);
        }
        Ok(conn)
    }

    /// Checks CONNACK and adopts the broker's limits.
    fn accept_connack(&mut self, c: &mqtt::ConnAck, opts: &ClientOptions) -> Result<(), End> {
        let endpoint = &self.endpoint;
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
        if let Some(max) = c.receive_maximum {
            self.send_quota = usize::from(max.min(INFLIGHT));
        }
        match c.maximum_packet_size {
            Some(0) => {
                return Err(End::protocol(
                    endpoint,
                    REASON_PROTOCOL_ERROR,
                    "CONNACK has Maximum Packet Size 0",
                ))
            }
            Some(max) => self.max_out = MAX_PACKET.min(max as usize),
            None => {}
        }
        if c.maximum_qos == Some(0) {
            return Err(End::quietly(Error::new(
                ErrorKind::ConnectionRefused,
                format!("{endpoint} allows QoS 0 only; fleet provisioning needs QoS 1"),
            )));
        }
        if let Some(secs) = c.server_keep_alive {
            if secs == 0 {
                fp_log!(Level::Debug, "{endpoint} turned keep-alive off");
                self.keep_alive = None;
            } else {
                if u64::from(secs) != opts.keep_alive.as_secs() {
                    fp_log!(Level::Debug, "{endpoint} set keep-alive to {secs} s");
                }
                self.keep_alive = Some(Duration::from_secs(u64::from(secs)));
            }
        }
        Ok(())
    }

    /// Drives the session until it ends, then closes `shared` with the reason.
    async fn run(
        mut self,
        shared: Arc<Shared>,
        mut commands: mpsc::UnboundedReceiver<Box<Command>>,
        mut stop: oneshot::Receiver<()>,
    ) {
        let _close = CloseOnExit(shared.clone());
        // What came with CONNACK, in the same read, is acted on first.
        let buffered = match self.after_read(Ok(1), &shared) {
            Ok(()) => self.flush(Phase::Session).await,
            Err(end) => Err(end),
        };
        let end = if let Err(end) = buffered {
            end
        } else {
            self.serve(&shared, &mut commands, &mut stop).await
        };
        let error = self.finish(end).await;
        if error.kind != ErrorKind::Cancelled {
            fp_log!(Level::Warn, "{}", error.message);
        }
        shared.close(error);
        // Dropping the stream closes the socket; nothing reconnects.
    }

    /// Reads, writes and keeps alive until something ends the session.
    async fn serve(
        &mut self,
        shared: &Shared,
        commands: &mut mpsc::UnboundedReceiver<Box<Command>>,
        stop: &mut oneshot::Receiver<()>,
    ) -> End {
        // One timer for the connection's life, moved rather than made anew for each packet: a
        // deadline moved later costs no timer-wheel update.
        let timer = tokio::time::sleep_until(self.last_sent);
        tokio::pin!(timer);
        loop {
            self.prepare_read();
            let wake = self.next_timer();
            if let Some(at) = wake {
                if timer.deadline() != at {
                    timer.as_mut().reset(at);
                }
            }
            let step = tokio::select! {
                biased;
                _ = &mut *stop => Err(End::quietly(Error::new(ErrorKind::Cancelled, "the client was closed"))),
                read = self.stream.read_buf(&mut self.rbuf) => self.after_read(read, shared),
                cmd = commands.recv() => match cmd.map(|c| *c) {
                    Some(Command::Disconnect) | None => {
                        // A clean end: DISCONNECT, then close.
                        let _ = self.queue(Outgoing::Disconnect { reason: 0 });
                        self.close_with_queued().await;
                        Err(End::quietly(Error::new(
                            ErrorKind::Cancelled,
                            "the client was disconnected by its owner",
                        )))
                    }
                    Some(cmd) => self.command(cmd, shared),
                },
                () = &mut timer, if wake.is_some() => self.keep_alive_due(),
            };
            let step = match step {
                Ok(()) => self.flush(Phase::Session).await,
                Err(end) => Err(end),
            };
            if let Err(end) = step {
                return end;
            }
        }
    }

    /// Sends the DISCONNECT an ending asks for (best effort, bounded) and returns its error.
    async fn finish(&mut self, end: End) -> Error {
        if let Some(reason) = end.disconnect_with {
            self.wbuf.clear();
            if self.queue(Outgoing::Disconnect { reason }).is_ok() {
                let _ = tokio::time::timeout(DISCONNECT_GRACE, self.close_with_queued()).await;
            }
        }
        end.error
    }

    /// Makes room in the receive buffer for the next read: what the frame at hand still needs,
    /// or a small chunk; an idle buffer that grew for a large packet is given back.
    fn prepare_read(&mut self) {
        if self.rbuf.is_empty() && self.rbuf.capacity() > 4 * READ_CHUNK {
            self.rbuf = BytesMut::new();
        }
        let spare = self.want.saturating_sub(self.rbuf.len()).max(READ_CHUNK);
        if self.rbuf.capacity() - self.rbuf.len() < spare {
            self.rbuf.reserve(spare);
        }
    }

    /// Reads one packet during connect (before the task runs).
    async fn next_packet(&mut self, phase: Phase) -> Result<Incoming, End> {
        loop {
            if let Some(p) = self.take_packet()? {
                return Ok(p);
            }
            self.prepare_read();
            match self.stream.read_buf(&mut self.rbuf).await {
                Ok(0) => {
                    return Err(End::quietly(errors::eof(
                        &self.endpoint,
                        phase,
                        !self.rbuf.is_empty(),
                    )))
                }
                Ok(_) => {}
                Err(e) => {
                    let host = self.host().to_owned();
                    return Err(End::quietly(errors::io_failure(
                        &e,
                        &self.endpoint,
                        &host,
                        phase,
                    )));
                }
            }
        }
    }

    fn host(&self) -> &str {
        self.endpoint
            .rsplit_once(':')
            .map_or(self.endpoint.as_str(), |(h, _)| h)
    }

    /// Frames and decodes the packet at the front of the receive buffer, if it is complete.
    fn take_packet(&mut self) -> Result<Option<Incoming>, End> {
        let (frame, want) = match mqtt::frame(&self.rbuf, MAX_PACKET) {
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
        let bytes = mqtt::take_frame(&mut self.rbuf, frame);
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

    /// Acts on every complete packet received, then on how the read ended.
    fn after_read(&mut self, read: std::io::Result<usize>, shared: &Shared) -> Result<(), End> {
        while let Some(packet) = self.take_packet()? {
            self.incoming(packet, shared)?;
        }
        match read {
            Ok(0) => Err(End::quietly(errors::eof(
                &self.endpoint,
                Phase::Session,
                !self.rbuf.is_empty(),
            ))),
            Ok(_) => Ok(()),
            Err(e) => {
                let host = self.host().to_owned();
                Err(End::quietly(errors::io_failure(
                    &e,
                    &self.endpoint,
                    &host,
                    Phase::Session,
                )))
            }
        }
    }

    fn incoming(&mut self, packet: Incoming, shared: &Shared) -> Result<(), End> {
        let endpoint = self.endpoint.clone();
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
                        &endpoint,
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
                        self.ack_due
                            .get_or_insert_with(|| Instant::now() + ACK_DELAY);
                    }
                    _ => {
                        return Err(End::protocol(
                            &endpoint,
                            REASON_QOS_NOT_SUPPORTED,
                            "QoS 2 PUBLISH on a QoS 1 subscription",
                        ))
                    }
                }
                shared.deliver(topic, payload);
            }
            Incoming::PubAck { pkid, failure } => {
                let Some(tx) = shared.lock().pubs.remove(&pkid) else {
                    return Err(End::protocol(
                        &endpoint,
                        REASON_PROTOCOL_ERROR,
                        format!("PUBACK for packet id {pkid}, which is not awaiting one"),
                    ));
                };
                self.inflight = self.inflight.saturating_sub(1);
                let _ = tx.send(match failure {
                    None => Ok(()),
                    Some(reason) => Err(Error::new(
                        ErrorKind::PublishRefused,
                        format!("{endpoint} refused the publish: {reason}"),
                    )),
                });
                self.send_queued(shared)?;
            }
            Incoming::SubAck { pkid, outcome } => {
                let Some(tx) = shared.lock().subs.remove(&pkid) else {
                    return Err(End::protocol(
                        &endpoint,
                        REASON_PROTOCOL_ERROR,
                        format!("SUBACK for packet id {pkid}, which is not awaiting one"),
                    ));
                };
                let _ = tx.send(Ok(outcome));
            }
            Incoming::UnsubAck { pkid } => {
                if !self.unsubs.remove(&pkid) {
                    return Err(End::protocol(
                        &endpoint,
                        REASON_PROTOCOL_ERROR,
                        format!("UNSUBACK for packet id {pkid}, which is not awaiting one"),
                    ));
                }
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
                    &endpoint,
                    REASON_PROTOCOL_ERROR,
                    "a second CONNACK",
                ))
            }
            Incoming::Unexpected(name) => {
                return Err(End::protocol(
                    &endpoint,
                    REASON_PROTOCOL_ERROR,
                    format!("it sent {name}, which a broker never sends to a client"),
                ))
            }
        }
        Ok(())
    }

    fn command(&mut self, cmd: Command, shared: &Shared) -> Result<(), End> {
        match cmd {
            Command::Subscribe(filters, tx) => {
                if shared.lock().closed.is_some() {
                    let _ = tx.send(Err(shared.not_connected()));
                    return Ok(());
                }
                let pkid = self.pkid(shared);
                match self.queue(Outgoing::Subscribe {
                    pkid,
                    filters: &filters,
                }) {
                    Ok(()) => {
                        fp_log!(Level::Debug, "SUBSCRIBE {}", filters.join(", "));
                        shared.lock().subs.insert(pkid, tx);
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                    }
                }
            }
            Command::Publish(topic, payload, tx) => {
                if shared.lock().closed.is_some() {
                    let _ = tx.send(Err(shared.not_connected()));
                    return Ok(());
                }
                self.queued.push_back((topic, payload, tx));
                self.send_queued(shared)?;
            }
            Command::Unsubscribe(filters) => {
                if shared.lock().closed.is_some() {
                    return Ok(());
                }
                let pkid = self.pkid(shared);
                if self
                    .queue(Outgoing::Unsubscribe {
                        pkid,
                        filters: &filters,
                    })
                    .is_ok()
                {
                    fp_log!(Level::Debug, "UNSUBSCRIBE {}", filters.join(", "));
                    self.unsubs.insert(pkid);
                }
            }
            // Handled by the caller.
            Command::Disconnect => {}
        }
        Ok(())
    }

    /// Sends queued publishes while the broker's Receive Maximum allows.
    fn send_queued(&mut self, shared: &Shared) -> Result<(), End> {
        while self.inflight < self.send_quota {
            let Some((topic, payload, tx)) = self.queued.pop_front() else {
                break;
            };
            let pkid = self.pkid(shared);
            let len = payload.len();
            match self.queue(Outgoing::Publish {
                pkid,
                topic: &topic,
                payload,
            }) {
                Ok(()) => {
                    fp_log!(Level::Debug, "PUBLISH {topic} ({len} bytes)");
                    self.inflight += 1;
                    shared.lock().pubs.insert(pkid, tx);
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                }
            }
        }
        Ok(())
    }

    /// The next packet id not in use by a pending SUBSCRIBE, PUBLISH or UNSUBSCRIBE.
    fn pkid(&mut self, shared: &Shared) -> u16 {
        let st = shared.lock();
        loop {
            self.next_pkid = self.next_pkid.checked_add(1).unwrap_or(1);
            let id = self.next_pkid;
            if !st.subs.contains_key(&id)
                && !st.pubs.contains_key(&id)
                && !self.unsubs.contains(&id)
            {
                return id;
            }
        }
    }

    /// Encodes `packet` into the write buffer. One that cannot be encoded is an invalid
    /// argument; one larger than the broker's Maximum Packet Size (MQTT 5 CONNACK) is refused
    /// by the broker's limit before it is sent: a SUBSCRIBE as a refused subscription, anything
    /// else (in practice a PUBLISH) as a refused publish.
    fn queue(&mut self, packet: Outgoing<'_>) -> Result<(), Error> {
        let (name, refused) = match packet {
            Outgoing::Subscribe { .. } => ("SUBSCRIBE", ErrorKind::SubscribeRefused),
            Outgoing::Publish { .. } => ("PUBLISH", ErrorKind::PublishRefused),
            _ => ("packet", ErrorKind::PublishRefused),
        };
        let before = self.wbuf.len();
        let written = mqtt::encode(self.version, packet, &mut self.wbuf)
            .map_err(|e| Error::new(ErrorKind::InvalidArgument, e))?;
        if written <= self.max_out {
            return Ok(());
        }
        self.wbuf.truncate(before);
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

    /// Sends what is queued (a DISCONNECT) and TLS's close_notify together, in one write, and
    /// closes our side. Best effort: the connection ends either way.
    async fn close_with_queued(&mut self) {
        self.take_acks();
        let (_, tls) = self.stream.get_mut();
        // Taken as plaintext by rustls (the handshake is done); written with the alert below.
        let _ = std::io::Write::write_all(&mut tls.writer(), &self.wbuf);
        self.wbuf.clear();
        let _ = tokio::time::timeout(WRITE_TIMEOUT, self.stream.shutdown()).await;
    }

    /// Puts the waiting PUBACKs in front of what is queued.
    fn take_acks(&mut self) {
        if self.acks.is_empty() {
            return;
        }
        let mut out = std::mem::take(&mut self.acks);
        out.extend_from_slice(&self.wbuf);
        self.wbuf = out;
        self.ack_due = None;
    }

    /// Writes what is queued, bounded in time, with the waiting PUBACKs; PUBACKs alone wait
    /// until they are due.
    async fn flush(&mut self, phase: Phase) -> Result<(), End> {
        if !self.wbuf.is_empty() || self.ack_due.is_some_and(|due| due <= Instant::now()) {
            self.take_acks();
        }
        if self.wbuf.is_empty() {
            return Ok(());
        }
        let written = tokio::time::timeout(WRITE_TIMEOUT, async {
            self.stream.write_all(&self.wbuf).await?;
            self.stream.flush().await
        })
        .await;
        self.wbuf.clear();
        if self.wbuf.capacity() > 4 * READ_CHUNK {
            self.wbuf = BytesMut::new();
        }
        self.last_sent = Instant::now();
        match written {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => {
                let host = self.host().to_owned();
                Err(End::quietly(errors::io_failure(
                    &e,
                    &self.endpoint,
                    &host,
                    phase,
                )))
            }
            Err(_) => Err(End::quietly(Error::new(
                ErrorKind::Disconnected,
                format!(
                    "{} took none of our data for {WRITE_TIMEOUT:?}; connection closed",
                    self.endpoint
                ),
            ))),
        }
    }

    /// When the connection next needs attention: the PINGRESP deadline or the time to ping,
    /// or the latest time for the waiting PUBACKs, whichever comes first.
    fn next_timer(&self) -> Option<Instant> {
        let ping = self.keep_alive.map(|ka| match self.ping_sent {
            Some(sent) => sent + ka,
            None => self.last_sent + ka,
        });
        ping.into_iter().chain(self.ack_due).min()
    }

    fn keep_alive_due(&mut self) -> Result<(), End> {
        let Some(ka) = self.keep_alive else {
            return Ok(());
        };
        if let Some(sent) = self.ping_sent {
            if sent.elapsed() >= ka {
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
        if self.last_sent.elapsed() >= ka {
            self.queue(Outgoing::PingReq)
                .map_err(|e| End::quietly(Error::new(ErrorKind::Internal, e.message)))?;
            self.ping_sent = Some(Instant::now());
        }
        Ok(())
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
