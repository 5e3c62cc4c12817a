//! One MQTT connection, MQTT 5 or 3.1.1 behind one interface: the protocol state in
//! [`state::Machine`] (no I/O), driven here by one tokio task per connection.
//!
//! The task owns the TLS stream and the machine. It reads, hands what it read to the machine,
//! which acts on every complete packet before the task looks at how the read ended, so a reply
//! that arrived together with a DISCONNECT or the TCP close is delivered, and only then is the
//! loss reported. It writes what the machine asks to send, hands each waiter what the machine
//! says is theirs, and keeps the one timer the machine asks for. Requests reach it through a
//! channel, in order (a reply slot registered before its request is in place before the
//! request goes out); an operation that gives up simply drops its receiver.
//!
//! Between packets a connection holds no buffer of its own beyond a small one for the next
//! read: the receive buffer is sized by the packet being read and dropped once it has been
//! taken out, and the machine's output is dropped once written.

mod errors;
mod mqtt;
mod state;
mod tls_stream;
mod transport;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::options::ClientOptions;
use super::signal::Signal;
use crate::error::{Error, ErrorKind};
use crate::log::{fp_log, Level};
use crate::protocol::Topics;
use errors::Phase;
use state::{Command, End, Event, Machine, SubOutcome};
use transport::Stream;

pub(crate) use state::Reply;

/// How long `disconnect` waits for the DISCONNECT packet to go out before closing anyway.
const DISCONNECT_GRACE: Duration = Duration::from_secs(2);
/// How long a write may wait for the broker to take our bytes before the connection counts
/// as lost.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// The receive buffer's size between packets: enough for the fixed header and the short
/// packets (acknowledgements) whole; a longer packet grows it to its own size once its header
/// has been read, and the buffer is dropped once that packet has been taken out.
const FIRST_READ: usize = 64;

type SubTx = oneshot::Sender<Result<SubOutcome, Error>>;
type PubTx = oneshot::Sender<Result<(), Error>>;
type ReplyTx = mpsc::UnboundedSender<Result<Reply, Error>>;
/// Receives the replies a slot takes: one, or (see [`Session::expect_replies`]) every one
/// until the slot is dropped.
pub(crate) type ReplyRx = mpsc::UnboundedReceiver<Result<Reply, Error>>;

/// The library's waiters: the sending halves of the operations' channels.
struct Channels;

impl state::Waiters for Channels {
    type Sub = SubTx;
    type Pub = PubTx;
    type Reply = ReplyTx;
}

/// Sent boxed: the channel's blocks hold 32 slots each, and a slot of pointer size keeps a
/// connection's idle channel at a few hundred bytes instead of two kilobytes.
type Commands = mpsc::UnboundedSender<Box<Command<Channels>>>;

/// What the handle and the task share: whether the session is up, and why it ended.
struct Shared {
    connected: AtomicBool,
    endpoint: String,
    /// Why the session ended, set once, for [`Session::closed`].
    ended: Signal<Option<Error>>,
}

impl Shared {
    /// The error for an operation that finds the session gone.
    fn not_connected(&self) -> Error {
        match &*self.reason() {
            Some(e) => Error::new(
                ErrorKind::Disconnected,
                format!("not connected: {}", e.message),
            ),
            None => Error::new(ErrorKind::Disconnected, "not connected"),
        }
    }

    fn is_closed(&self) -> bool {
        self.reason().is_some()
    }

    fn reason(&self) -> std::sync::MutexGuard<'_, Option<Error>> {
        self.ended.get()
    }

    /// Marks the session ended with `err`, unless it already is.
    fn close(&self, err: Error) {
        self.connected.store(false, Ordering::SeqCst);
        self.ended.modify(|ended| {
            if ended.is_some() {
                return false;
            }
            *ended = Some(err);
            true
        });
    }
}

/// Removes a reply slot when the operation ends, however it ends.
pub(crate) struct ReplyGuard {
    commands: Commands,
    id: u64,
}

impl Drop for ReplyGuard {
    fn drop(&mut self) {
        // A closed session has no slots left to forget.
        let _ = self.commands.send(Box::new(Command::ForgetReply(self.id)));
    }
}

/// A live MQTT connection.
pub(crate) struct Session {
    shared: Arc<Shared>,
    commands: Commands,
    next_slot: AtomicU64,
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
            Driver::open(opts, tls, &client_id, endpoint.clone()),
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
            connected: AtomicBool::new(true),
            endpoint,
            ended: Signal::new(None),
        });
        let (stop_tx, stop_rx) = oneshot::channel();
        let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
        // Boxed, as the C library's tasks are: one instantiation of tokio's task machinery for
        // all of them.
        let run: Pin<Box<dyn Future<Output = ()> + Send>> =
            Box::pin(conn.run(shared.clone(), cmd_rx, stop_rx));
        let task = tokio::spawn(run);
        Ok(Session {
            shared,
            commands: cmd_tx,
            next_slot: AtomicU64::new(0),
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
        self.shared.ended.wait_for(Option::clone).await
    }

    /// Hands `cmd` to the connection's task; fails when the session has ended.
    fn send(&self, cmd: Command<Channels>) -> Result<(), Error> {
        if self.shared.is_closed() {
            return Err(self.not_connected());
        }
        self.commands
            .send(Box::new(cmd))
            .map_err(|_| self.not_connected())
    }

    /// Queues one SUBSCRIBE (QoS 1) for `filters`; the receiver yields the SUBACK outcome.
    pub(crate) fn start_subscribe(
        &self,
        filters: Vec<String>,
    ) -> Result<oneshot::Receiver<Result<SubOutcome, Error>>, Error> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Subscribe(filters, tx))?;
        Ok(rx)
    }

    /// Queues one QoS 1 PUBLISH; the receiver yields the PUBACK outcome.
    pub(crate) fn start_publish(
        &self,
        topic: String,
        payload: Vec<u8>,
    ) -> Result<oneshot::Receiver<Result<(), Error>>, Error> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Publish(topic, Bytes::from(payload), tx))?;
        Ok(rx)
    }

    /// Queues an UNSUBSCRIBE for `filters` without waiting for the UNSUBACK. Callable from
    /// `Drop`: it neither blocks nor needs a runtime.
    pub(crate) fn unsubscribe(&self, filters: Vec<String>) {
        // A closed session has no subscriptions left to drop.
        let _ = self.send(Command::Unsubscribe(filters));
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
        let id = self.next_slot.fetch_add(1, Ordering::Relaxed);
        self.send(Command::ExpectReply {
            slot: id,
            accepted: topics.accepted.clone(),
            rejected: topics.rejected.clone(),
            many,
            to: tx,
        })?;
        let guard = ReplyGuard {
            commands: self.commands.clone(),
            id,
        };
        Ok((guard, rx))
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
/// operations then fail at once (their senders are dropped with the machine) instead of
/// waiting for their timeout. After a normal end the session is already closed and this does
/// nothing.
struct CloseOnExit(Arc<Shared>);

impl Drop for CloseOnExit {
    fn drop(&mut self) {
        self.0.close(Error::new(
            ErrorKind::Internal,
            "the connection task ended unexpectedly",
        ));
    }
}

/// The connection's I/O: the stream, the receive buffer, and the machine it feeds.
struct Driver {
    stream: Stream,
    rbuf: BytesMut,
    machine: Machine<Channels>,
}

impl Driver {
    /// TCP, TLS, CONNECT and a validated CONNACK.
    async fn open(
        opts: &ClientOptions,
        tls: Arc<rustls::ClientConfig>,
        client_id: &str,
        endpoint: String,
    ) -> Result<Driver, Error> {
        // Validated: 5..=65535 s, whole seconds are what goes on the wire.
        let keep_alive = u16::try_from(opts.keep_alive.as_secs()).unwrap_or(u16::MAX);
        let mut machine = Machine::new(
            opts.mqtt_version,
            endpoint.clone(),
            keep_alive,
            Instant::now().into_std(),
        );
        machine.connect(client_id)?;
        // CONNECT goes out with the handshake's last flight (one write, one segment): TLS 1.3
        // lets the client send data right after its Finished, and rustls holds it until then.
        let now = Instant::now().into_std();
        let connect = machine.poll_transmit(now).unwrap_or_default().to_vec();
        let stream = transport::open(opts, tls, &endpoint, &connect).await?;
        machine.transmitted(Instant::now().into_std());
        let mut conn = Driver {
            stream,
            rbuf: BytesMut::new(),
            machine,
        };
        while !conn.machine.is_up() {
            if let Err(end) = conn.read().await {
                return Err(conn.finish(end, None).await);
            }
        }
        Ok(conn)
    }

    /// Reads once and hands what came to the machine, then reports how the read ended.
    async fn read(&mut self) -> Result<(), End> {
        self.prepare_read();
        let read = self.stream.read_buf(&mut self.rbuf).await;
        self.after_read(read)
    }

    /// Acts on every complete packet received, then on how the read ended.
    fn after_read(&mut self, read: std::io::Result<usize>) -> Result<(), End> {
        self.machine
            .receive(&mut self.rbuf, Instant::now().into_std())?;
        if self.rbuf.is_empty() {
            // Every packet was copied out (its bytes wiped): the allocation the last one
            // needed goes, and the next read starts small (`prepare_read`).
            self.rbuf = BytesMut::new();
        }
        match read {
            Ok(0) => Err(self.machine.eof(!self.rbuf.is_empty())),
            Ok(_) => Ok(()),
            Err(e) => Err(End::quietly(errors::io_failure(
                &e,
                self.machine.endpoint(),
                host(self.machine.endpoint()),
                self.machine.phase(),
            ))),
        }
    }

    /// Drives the session until it ends, then closes `shared` with the reason.
    async fn run(
        mut self,
        shared: Arc<Shared>,
        mut commands: mpsc::UnboundedReceiver<Box<Command<Channels>>>,
        mut stop: oneshot::Receiver<()>,
    ) {
        let _close = CloseOnExit(shared.clone());
        // What came with CONNACK, in the same read, is acted on first.
        let buffered = match self.after_read(Ok(1)) {
            Ok(()) => self.flush().await,
            Err(end) => Err(end),
        };
        let end = match buffered {
            Err(end) => end,
            Ok(()) => self.serve(&mut commands, &mut stop).await,
        };
        let error = self.finish(end, Some(&shared)).await;
        if error.kind != ErrorKind::Cancelled {
            fp_log!(Level::Warn, "{}", error.message);
        }
        // Commands still queued are dropped with their senders: their receivers then find
        // the session closed. Dropping the stream closes the socket; nothing reconnects.
    }

    /// Reads, writes and keeps alive until something ends the session.
    async fn serve(
        &mut self,
        commands: &mut mpsc::UnboundedReceiver<Box<Command<Channels>>>,
        stop: &mut oneshot::Receiver<()>,
    ) -> End {
        // One timer for the connection's life, moved rather than made anew for each packet: a
        // deadline moved later costs no timer-wheel update.
        let timer = tokio::time::sleep_until(Instant::now());
        tokio::pin!(timer);
        loop {
            self.prepare_read();
            let wake = self.machine.next_wake().map(Instant::from_std);
            if let Some(at) = wake {
                if timer.deadline() != at {
                    timer.as_mut().reset(at);
                }
            }
            let step = tokio::select! {
                biased;
                _ = &mut *stop => Err(End::quietly(Error::new(ErrorKind::Cancelled, "the client was closed"))),
                read = self.stream.read_buf(&mut self.rbuf) => self.after_read(read),
                cmd = commands.recv() => match cmd {
                    Some(cmd) => self.machine.command(*cmd),
                    // The handle is gone: a clean end.
                    None => self.machine.command(Command::Disconnect),
                },
                () = &mut timer, if wake.is_some() => self.machine.wake(Instant::now().into_std()),
            };
            self.deliver();
            let step = match step {
                Ok(()) => self.flush().await,
                Err(end) => Err(end),
            };
            if let Err(end) = step {
                return end;
            }
        }
    }

    /// Hands each waiter what the machine says is theirs. A waiter that gave up dropped its
    /// receiver; what was meant for it is dropped here.
    fn deliver(&mut self) {
        for event in self.machine.take_events() {
            match event {
                Event::Subscribed(tx, r) => drop(tx.send(r)),
                Event::Published(tx, r) => drop(tx.send(r)),
                Event::Reply(tx, r) => drop(tx.send(r)),
            }
        }
        self.machine.shed();
    }

    /// Ends the session: marks `shared` closed, then every pending waiter gets the error (so a
    /// waiter woken by it finds the session down), and the DISCONNECT it asks for goes out with
    /// TLS's close_notify (best effort, bounded). Returns the error.
    async fn finish(&mut self, end: End, shared: Option<&Shared>) -> Error {
        self.machine.finish(&end);
        if let Some(shared) = shared {
            shared.close(end.error.clone());
        }
        self.deliver();
        if let Some(out) = self.machine.poll_transmit(Instant::now().into_std()) {
            // Written with TLS's close_notify, in one write.
            let _ = tokio::time::timeout(DISCONNECT_GRACE, self.stream.close(out)).await;
            self.machine.transmitted(Instant::now().into_std());
        }
        end.error
    }

    /// Makes room in the receive buffer for the next read: what the frame at hand still needs,
    /// at least a small chunk.
    fn prepare_read(&mut self) {
        let spare = self
            .machine
            .wants()
            .saturating_sub(self.rbuf.len())
            .max(FIRST_READ);
        if self.rbuf.capacity() - self.rbuf.len() < spare {
            self.rbuf.reserve(spare);
        }
    }

    /// Writes what the machine has to send, bounded in time.
    async fn flush(&mut self) -> Result<(), End> {
        let Some(out) = self.machine.poll_transmit(Instant::now().into_std()) else {
            return Ok(());
        };
        let stream = &mut self.stream;
        let written = tokio::time::timeout(WRITE_TIMEOUT, stream.write_all(out)).await;
        self.machine.transmitted(Instant::now().into_std());
        let endpoint = self.machine.endpoint();
        match written {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(End::quietly(errors::io_failure(
                &e,
                endpoint,
                host(endpoint),
                Phase::Session,
            ))),
            Err(_) => Err(End::quietly(Error::new(
                ErrorKind::Disconnected,
                format!(
                    "{endpoint} took none of our data for {WRITE_TIMEOUT:?}; connection closed"
                ),
            ))),
        }
    }
}

/// The host part of `host:port`.
fn host(endpoint: &str) -> &str {
    endpoint.rsplit_once(':').map_or(endpoint, |(h, _)| h)
}
