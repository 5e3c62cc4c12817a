//! A client's connection from start to end, for callers that start operations before it is up:
//! connecting in the background, operations waiting for the connection, a stop request, and how
//! it ended, reported as events in order. The C surface is built on this; a Rust program that
//! wants the same semantics uses it directly.
//!
//! ```no_run
//! # async fn demo(opts: fleetprov::client::ClientOptions) {
//! use fleetprov::client::{Event, Lifecycle};
//! let life = Lifecycle::new();
//! assert!(life.begin());
//! let ticket = life.ticket();
//! let driver = {
//!     let life = life.clone();
//!     tokio::spawn(async move { life.run(opts, |e: Event| async move { println!("{e:?}") }).await })
//! };
//! let client = life.client(ticket).await; // waits for the connection, or says why not
//! life.stop();
//! let _ = driver.await;
//! # drop(client); }
//! ```

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use super::signal::Signal;

use super::{CheckedClientOptions, Client};
use crate::error::{Error, ErrorKind};

/// How long a clean MQTT DISCONNECT may take when stopping; the connection is dropped after.
const DISCONNECT_GRACE: Duration = Duration::from_secs(2);

/// Where the connection is.
#[derive(Clone)]
enum Stage {
    /// [`Lifecycle::begin`] not called yet.
    Idle,
    Connecting,
    Connected(Client),
    /// Connecting failed; operations that waited for it fail with the same error.
    Failed(Error),
    /// Stopped by the owner (`None`) or lost (why).
    Ended(Option<Error>),
}

/// What happened to the connection, reported by [`Lifecycle::run`] in this order: `Connected`
/// or `ConnectFailed`; `Lost` if the connection ended without a stop request; `Stopped`, last
/// and always.
#[derive(Debug, Clone)]
pub enum Event {
    /// The MQTT session is up.
    Connected,
    /// Connecting failed (or was stopped first: [`ErrorKind::Cancelled`]).
    ConnectFailed(Error),
    /// The established connection ended without a stop request.
    Lost(Error),
    /// The connection is over; nothing follows.
    Stopped,
}

/// Taken when an operation starts ([`Lifecycle::ticket`]): whether the connection was being
/// made or up at that moment, so an operation that then waits for it and finds it gone is told
/// the loss (or the stop) rather than "not connected".
#[derive(Debug, Clone, Copy)]
pub struct Ticket {
    live: bool,
}

/// One connection's life: cheap to clone, all clones share it.
#[derive(Clone)]
pub struct Lifecycle {
    inner: Arc<Inner>,
}

struct Inner {
    stage: Signal<Stage>,
    stop: Signal<bool>,
}

impl Default for Lifecycle {
    fn default() -> Self {
        Lifecycle::new()
    }
}

impl std::fmt::Debug for Lifecycle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lifecycle")
            .field("started", &self.started())
            .field("stop_requested", &self.stop_requested())
            .finish()
    }
}

impl Lifecycle {
    /// A lifecycle that has not started.
    pub fn new() -> Lifecycle {
        Lifecycle {
            inner: Arc::new(Inner {
                stage: Signal::new(Stage::Idle),
                stop: Signal::new(false),
            }),
        }
    }

    /// Marks the lifecycle as connecting; `false` if it had been started already (a lifecycle
    /// connects once). Call [`Lifecycle::run`] after it.
    pub fn begin(&self) -> bool {
        self.inner.stage.modify(|s| {
            if matches!(s, Stage::Idle) {
                *s = Stage::Connecting;
                true
            } else {
                false
            }
        })
    }

    /// Whether [`Lifecycle::begin`] was called.
    pub fn started(&self) -> bool {
        !matches!(&*self.inner.stage.get(), Stage::Idle)
    }

    /// Asks the connection to stop (a clean DISCONNECT if it is up). Harmless to repeat.
    pub fn stop(&self) {
        self.inner.stop.set(true);
    }

    /// Whether [`Lifecycle::stop`] was called.
    pub fn stop_requested(&self) -> bool {
        *self.inner.stop.get()
    }

    /// A ticket for an operation starting now.
    pub fn ticket(&self) -> Ticket {
        Ticket {
            live: matches!(
                &*self.inner.stage.get(),
                Stage::Connecting | Stage::Connected(_)
            ),
        }
    }

    /// Waits until connecting is over and returns the connected client, or why there is none:
    /// the connect error; for an operation started while the connection was being made or up,
    /// the loss ([`ErrorKind::Disconnected`]) or the stop ([`ErrorKind::Cancelled`]); otherwise
    /// [`ErrorKind::NotConnected`] (with the loss's cause when there was one).
    pub async fn client(&self, ticket: Ticket) -> Result<Client, Error> {
        let stage = self
            .inner
            .stage
            .wait_for(|s| (!matches!(s, Stage::Connecting)).then(|| s.clone()))
            .await;
        match stage {
            Stage::Connected(client) => Ok(client),
            Stage::Failed(e) => Err(e),
            Stage::Ended(Some(lost)) if ticket.live => Err(lost),
            Stage::Ended(None) if ticket.live => Err(Error::new(
                ErrorKind::Cancelled,
                "the client was disconnected by its owner before the operation could start",
            )),
            Stage::Ended(Some(lost)) => Err(Error::new(
                ErrorKind::NotConnected,
                format!("not connected: the connection was lost: {}", lost.message),
            )),
            Stage::Idle | Stage::Connecting | Stage::Ended(None) => Err(Error::new(
                ErrorKind::NotConnected,
                "not connected: the connection had ended before the operation could start",
            )),
        }
    }

    /// Connects with `opts` and drives the connection until it is stopped or lost, handing each
    /// [`Event`] to `report` and awaiting it before the next. Call once, after
    /// [`Lifecycle::begin`]. Options that fail their check end it as a connect failure.
    pub async fn run<O, F, Fut>(&self, opts: O, mut report: F)
    where
        O: TryInto<CheckedClientOptions>,
        O::Error: Into<Error>,
        F: FnMut(Event) -> Fut,
        Fut: Future<Output = ()>,
    {
        let stage = &self.inner.stage;
        let stop = &self.inner.stop;
        // A panic while connecting becomes an error, not a lost event. Boxed: the handshake's
        // state is kilobytes, given back as soon as the connection is up.
        let connecting = CatchUnwind(Box::pin(Client::connect(opts)));
        // Losing the race drops the attempt where it stands.
        let outcome = tokio::select! {
            done = connecting => done.unwrap_or_else(|()| Err(Error::new(
                ErrorKind::Internal,
                "the library panicked while connecting",
            ))),
            () = stop.wait_for(|&s| s.then_some(())) => {
                Err(Error::new(ErrorKind::Cancelled, "the client was stopped before the connection completed"))
            }
        };
        match outcome {
            Ok(client) => {
                stage.set(Stage::Connected(client.clone()));
                report(Event::Connected).await;
                let lost = tokio::select! {
                    // A stop request wins a tie: the owner asked, so the end is not a surprise.
                    biased;
                    () = stop.wait_for(|&s| s.then_some(())) => None,
                    reason = client.closed() => Some(reason),
                };
                stage.set(Stage::Ended(lost.clone()));
                // After a loss this sends nothing and only waits for the finished connection task.
                let _ = tokio::time::timeout(DISCONNECT_GRACE, client.disconnect()).await;
                drop(client);
                if let Some(reason) = lost {
                    report(Event::Lost(reason)).await;
                }
            }
            Err(e) => {
                stage.set(Stage::Failed(e.clone()));
                report(Event::ConnectFailed(e)).await;
            }
        }
        report(Event::Stopped).await;
    }
}

/// A future whose panic is caught where it is polled: `Err(())` instead of unwinding into the
/// task (in place of a task of its own, which costs an allocation and a wake-up). Public for
/// embedders that must not unwind across their own boundary (the C library wraps every
/// operation in it).
pub struct CatchUnwind<F>(pub F);

impl<F: Future> Future for CatchUnwind<F> {
    type Output = Result<F::Output, ()>;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        // SAFETY: the field is pinned with the wrapper (structural pinning): it is never moved
        // out or given out unpinned, and the wrapper has no Drop of its own.
        let inner = unsafe { self.map_unchecked_mut(|s| &mut s.0) };
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(std::task::Poll::Ready(v)) => std::task::Poll::Ready(Ok(v)),
            Ok(std::task::Poll::Pending) => std::task::Poll::Pending,
            // A panicked future is never polled again; it is dropped with the task.
            Err(_) => std::task::Poll::Ready(Err(())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_lifecycle_starts_once_and_reports_why_there_is_no_client() {
        let life = Lifecycle::new();
        assert!(!life.started());
        let before = life.ticket();
        let e = life.client(before).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::NotConnected);
        assert!(life.begin());
        assert!(!life.begin());
        let during = life.ticket();
        let mut o = crate::client::ClientOptions::new("localhost");
        o.port = 1; // nothing listens there
        o.connect_timeout = Duration::from_secs(5);
        let mut events = Vec::new();
        life.run(o, |e| {
            events.push(e);
            async {}
        })
        .await;
        assert_eq!(events.len(), 2, "{events:?}");
        let Event::ConnectFailed(failed) = &events[0] else {
            panic!("{events:?}");
        };
        assert!(matches!(events[1], Event::Stopped), "{events:?}");
        // An operation started while connecting gets the connect error itself.
        assert_eq!(life.client(during).await.unwrap_err(), *failed);
    }
}
