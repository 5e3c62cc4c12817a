//! `fp_client`: one MQTT connection, its lifecycle events, and the bookkeeping behind the
//! callback contract (exactly once, never inside the start call, free waits for callbacks).
//! The connection's life itself (connecting, operations waiting for it, stopping, how it ended)
//! is the core's [`Lifecycle`]; this file turns its events into C callbacks.

use std::cell::Cell;
use std::ffi::c_void;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use tokio::runtime::Handle;
use tokio::sync::Notify;

use super::callback::Callback;
use super::error::fp_error;
use super::error::fp_result::{self, *};
use super::handle::{check_out, Castable};
use super::options::fp_client_options;
use super::runtime::{self, RuntimeGuard};
use fleetprov_core::client::CatchUnwind;
use fleetprov_core::client::{CheckedClientOptions, Client, Event, Lifecycle};
use fleetprov_core::error::Error;

/// A connection to the provisioning endpoint.
///
/// Created by fp_client_new(), connected once by fp_client_connect(), released by
/// fp_client_free(). All functions taking an `fp_client *` may be called from any thread,
/// concurrently, including from inside this library's callbacks; fp_client_free() must not
/// race other calls on the same handle, except from the client's own running callbacks.
pub struct fp_client {
    shared: Arc<Shared>,
}

impl Castable for fp_client {}

/// Lifecycle events of a client's connection, delivered to its ::fp_lifecycle_callback.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum fp_lifecycle_event {
    /// The MQTT session is up (TLS done, CONNACK accepted). `error` is NULL.
    FP_EVENT_CONNECTION_SUCCESS = 0,
    /// Connecting failed; `error` says why (`FP_ERR_IO`, `FP_ERR_TLS`, `FP_ERR_CONNECTION`,
    /// `FP_ERR_CONNECTION_REFUSED`, `FP_ERR_TIMEOUT`, or `FP_ERR_CANCELLED` when the client was
    /// disconnected or freed first). `FP_EVENT_STOPPED` follows.
    FP_EVENT_CONNECTION_FAILURE = 1,
    /// The established connection ended without the owner asking: lost, or closed by the
    /// broker. `error` says why: `FP_ERR_DISCONNECTED` as a rule, `FP_ERR_BAD_REPLY` if the
    /// broker sent a packet over the size limit, `FP_ERR_INTERNAL` if the connection's task
    /// failed. At most once per fp_client_connect(), only after `FP_EVENT_CONNECTION_SUCCESS`,
    /// and it never begins once fp_client_disconnect() or fp_client_free() has been called
    /// (the loss is then part of the requested stop). The client does not reconnect: `FP_EVENT_STOPPED`
    /// follows at once; operations the loss interrupted fail with its error, and operations
    /// started from then on call back with `FP_ERR_NOT_CONNECTED`.
    FP_EVENT_DISCONNECTED = 2,
    /// The client is stopped: this is always the last event, exactly once per
    /// fp_client_connect(), after a failed connect, a lost connection, or a requested
    /// fp_client_disconnect() / fp_client_free(). `error` is NULL.
    FP_EVENT_STOPPED = 3,
}

use fp_lifecycle_event::*;

/// Receives a client's lifecycle events, in order, one at a time.
///
/// `error` is non-NULL for `FP_EVENT_CONNECTION_FAILURE` and `FP_EVENT_DISCONNECTED` only, and
/// is borrowed for the duration of the call. Runs on a library thread, never inside
/// fp_client_connect(); it may call any library function, including fp_client_free() on its
/// own client.
pub type fp_lifecycle_callback = Option<
    unsafe extern "C" fn(user_data: *mut c_void, event: fp_lifecycle_event, error: *const fp_error),
>;

/// The lifecycle callback's function.
type LifecycleFn = unsafe extern "C" fn(*mut c_void, fp_lifecycle_event, *const fp_error);

/// The lifecycle callback of one fp_client_connect(), shared by its events.
type LifecycleCallback = Option<Arc<Callback<LifecycleFn>>>;

thread_local! {
    /// Id of the client whose callback this thread is running (0: none).
    static IN_CALLBACK_OF: Cell<u64> = const { Cell::new(0) };
}

static NEXT_CLIENT_ID: AtomicU64 = AtomicU64::new(1);

struct Tracking {
    /// Callbacks promised and not yet returned (operations, lifecycle).
    outstanding: usize,
    /// fp_client_free() was called: new work is refused.
    closing: bool,
    /// fp_client_free() was called from inside one of this client's callbacks: the last
    /// callback to return releases the runtime reference.
    deferred_release: bool,
    connect_called: bool,
    runtime: Option<RuntimeGuard>,
    /// The handle freed from inside a callback, released with the runtime reference: other
    /// callbacks of the client still running may use it until they return.
    freed_handle: Option<FreedHandle>,
}

/// An `fp_client` allocation whose release is deferred to the last callback.
struct FreedHandle(*mut fp_client);

// SAFETY: the pointer is only turned back into its Box once, by whichever thread drops the
// last promise; `fp_client` itself holds only an `Arc` of thread-safe state.
unsafe impl Send for FreedHandle {}

/// Everything a client's tasks share with its handle.
pub(crate) struct Shared {
    id: u64,
    options: CheckedClientOptions,
    handle: Handle,
    /// The connection, from fp_client_connect() to its end; stopped by fp_client_disconnect()
    /// and fp_client_free().
    life: Lifecycle,
    /// Set by fp_client_free(): pending operations finish with `FP_ERR_CANCELLED`.
    cancel: CancelFlag,
    tracking: Mutex<Tracking>,
    idle: Condvar,
}

/// A promise that one callback will run; dropping it (after the callback returned) keeps the
/// count that fp_client_free() waits on.
pub(crate) struct Promise {
    shared: Arc<Shared>,
}

impl Drop for Promise {
    fn drop(&mut self) {
        let (release, handle) = {
            let mut t = self.shared.lock();
            t.outstanding = t.outstanding.saturating_sub(1);
            if t.outstanding > 0 {
                (None, None)
            } else {
                self.shared.idle.notify_all();
                if t.deferred_release {
                    (t.runtime.take(), t.freed_handle.take())
                } else {
                    (None, None)
                }
            }
        };
        if let Some(FreedHandle(client)) = handle {
            // SAFETY: from fp_client_new(), given up by fp_client_free(); no callback of this
            // client runs any more, so nothing may still use the handle.
            unsafe { fp_client::free(client) };
        }
        if let Some(guard) = release {
            // Outside the lock: dropping the last runtime reference stops the runtime.
            drop(guard);
            runtime::deferred_release_finished();
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Tracking> {
        // Every critical section leaves the counters consistent, so poison carries no meaning.
        self.tracking.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Promises a callback for a new operation, or says why the operation is refused.
    pub(crate) fn promise_operation(self: &Arc<Self>) -> Result<Promise, fp_result> {
        let mut t = self.lock();
        if t.closing {
            return Err(FP_ERR_CANCELLED);
        }
        // Only "connect never called" is refused here. Once fp_client_connect() was called,
        // whether an operation is accepted must not depend on how far the connection got on
        // the library thread (that would be a race for the caller): an operation started
        // after the connection failed or ended is accepted and its callback reports why.
        if !self.life.started() {
            return Err(FP_ERR_NOT_CONNECTED);
        }
        t.outstanding += 1;
        Ok(Promise {
            shared: Arc::clone(self),
        })
    }

    /// Runs an operation on the connected client, with cancellation by fp_client_free() and
    /// panic isolation, then hands the result to `deliver` on a blocking-pool thread.
    pub(crate) fn spawn_operation<T, F, Fut, D>(
        self: &Arc<Self>,
        promise: Promise,
        operation: F,
        deliver: D,
    ) where
        T: Send + 'static,
        F: FnOnce(Client) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, Error>> + Send + 'static,
        D: FnOnce(Result<T, fp_error>) + Send + 'static,
    {
        let shared = Arc::clone(self);
        let ticket = self.life.ticket();
        runtime::spawn(&self.handle, async move {
            // A panic inside the core becomes an error, not a lost callback.
            let work = CatchUnwind({
                let shared = Arc::clone(&shared);
                async move {
                    let client = shared.life.client(ticket).await.map_err(fp_error::from)?;
                    operation(client).await.map_err(fp_error::from)
                }
            });
            // Losing the race drops the operation where it stands.
            let result = tokio::select! {
                done = work => done.unwrap_or_else(|()| Err(fp_error::new(
                    FP_ERR_PANIC,
                    "the library panicked while running the operation",
                ))),
                () = shared.cancel.raised() => {
                    Err(fp_error::new(FP_ERR_CANCELLED, "the client was freed before the operation completed"))
                }
            };
            let id = shared.id;
            drop(shared);
            run_callback(id, promise, move || deliver(result));
        });
    }
}

/// Runs a C callback on the blocking pool (so slow callbacks never stall network I/O), marks
/// the thread as inside this client's callback, and fulfils the promise once it returned.
///
/// Nothing waits for it to finish: the promise it holds keeps the client (and so the runtime)
/// alive until the callback returned, and not waiting spares the I/O thread a wake-up per
/// callback.
fn run_callback(client_id: u64, promise: Promise, callback: impl FnOnce() + Send + 'static) {
    drop(runtime::spawn_blocking(move || {
        let previous = IN_CALLBACK_OF.with(|c| c.replace(client_id));
        // The deliver functions catch their own panics (preparing the reply, and around the C
        // call), so the bookkeeping below always runs.
        callback();
        IN_CALLBACK_OF.with(|c| c.set(previous));
        drop(promise);
    }));
}

/// Creates a client from `options` (copied: the options may be freed right after).
///
/// Checks the options (`FP_ERR_INVALID_ARGUMENT`, e.g. a certificate without its key) and
/// starts the library's shared thread if this is the first live client. Does not touch the
/// network or read files: that happens in fp_client_connect(). On success writes the new
/// handle to `*out` (untouched on failure); free it with fp_client_free().
/// `FP_ERR_NULL_ARGUMENT` if `options` or `out` is NULL; `FP_ERR_INTERNAL` if the library's
/// thread cannot be started.
#[unsafe(no_mangle)]
pub extern "C" fn fp_client_new(
    options: *const fp_client_options,
    out: *mut *mut fp_client,
) -> fp_result {
    ffi_result! {
        // SAFETY: NULL or a live handle from fp_client_options_new(), per the header.
        let options = unsafe { fp_client_options::try_ref(options) }?;
        check_out(out)?;
        let options = options.checked()?;
        let guard = runtime::acquire().map_err(|_| FP_ERR_INTERNAL)?;
        let shared = Arc::new(Shared {
            id: NEXT_CLIENT_ID.fetch_add(1, Ordering::Relaxed),
            options,
            handle: guard.handle().clone(),
            life: Lifecycle::new(),
            cancel: CancelFlag::default(),
            tracking: Mutex::new(Tracking {
                outstanding: 0,
                closing: false,
                deferred_release: false,
                connect_called: false,
                runtime: Some(guard),
                freed_handle: None,
            }),
            idle: Condvar::new(),
        });
        // SAFETY: `out` was checked and is writable, per the header.
        unsafe { fp_client { shared }.give(out) };
        Ok(())
    }
}

/// Borrows the shared state behind a client handle.
pub(crate) fn shared_of(client: *mut fp_client) -> Result<Arc<Shared>, fp_result> {
    // SAFETY: NULL or a live handle from fp_client_new(), per the header.
    unsafe { fp_client::try_ref(client) }.map(|c| Arc::clone(&c.shared))
}

/// Starts connecting (DNS, TCP, proxy, TLS, MQTT CONNECT) on the library's thread and returns
/// at once. `callback` (may be NULL) receives the lifecycle events with `user_data`:
/// `FP_EVENT_CONNECTION_SUCCESS` or `FP_EVENT_CONNECTION_FAILURE`, then, if the connection is
/// lost before the owner stops it, `FP_EVENT_DISCONNECTED`, and `FP_EVENT_STOPPED`, always
/// last: right after a failure or a loss, otherwise once fp_client_disconnect() or
/// fp_client_free() has closed the connection. No event is delivered after fp_client_free()
/// returned, unless it was called from inside one of this client's callbacks; then only
/// `FP_EVENT_STOPPED` may still follow.
///
/// Operations may be started as soon as this returns: one started while the connection is
/// being made waits for it and fails with its error if it fails. From this call on, an
/// operation is always accepted (`FP_OK`, the callback will fire), however far the
/// connection got: after a failed connect its callback gets the connect error, after the
/// connection ended `FP_ERR_NOT_CONNECTED`. So the start call's result never depends on the
/// timing of the library thread. A client connects
/// once (`FP_ERR_ALREADY_CONNECTED` on a second call); to reconnect, e.g. with the newly issued
/// certificate, create a new client.
/// `user_data` must stay valid, and usable from library threads, until `FP_EVENT_STOPPED`.
#[unsafe(no_mangle)]
pub extern "C" fn fp_client_connect(
    client: *mut fp_client,
    callback: fp_lifecycle_callback,
    user_data: *mut c_void,
) -> fp_result {
    ffi_result! {
        let shared = shared_of(client)?;
        let promise = {
            let mut t = shared.lock();
            if t.closing {
                return Err(FP_ERR_CANCELLED);
            }
            if t.connect_called {
                return Err(FP_ERR_ALREADY_CONNECTED);
            }
            t.connect_called = true;
            t.outstanding += 1;
            shared.life.begin();
            Promise { shared: Arc::clone(&shared) }
        };
        let callback = Callback::new(callback, user_data, None).map(Arc::new);
        let task = lifecycle(Arc::clone(&shared), promise, callback);
        runtime::spawn(&shared.handle, task);
        Ok(())
    }
}

/// Delivers one lifecycle event on the blocking pool and waits until the callback returned,
/// so events stay in order. `FP_EVENT_DISCONNECTED` is dropped if the owner asked to stop
/// before the callback would start, so it never begins after fp_client_free() returned.
async fn emit(
    shared: &Arc<Shared>,
    callback: &LifecycleCallback,
    event: fp_lifecycle_event,
    error: Option<fp_error>,
) {
    let Some(callback) = callback.clone() else {
        return;
    };
    let id = shared.id;
    let life = shared.life.clone();
    let run = move || {
        // Checked on the callback's own thread, right before the call: fp_client_free() asks
        // for the stop before it returns, so a free that returned first is always seen here.
        if event == FP_EVENT_DISCONNECTED && life.stop_requested() {
            return;
        }
        let error_ptr = error
            .as_ref()
            .map_or(std::ptr::null(), |e| e as *const fp_error);
        callback.invoke(|call, user_data| {
            // SAFETY: callback and user_data were supplied together by the C caller; the
            // error outlives the call.
            unsafe { call(user_data, event, error_ptr) }
        });
    };
    let joined = runtime::spawn_blocking(move || {
        let previous = IN_CALLBACK_OF.with(|c| c.replace(id));
        run();
        IN_CALLBACK_OF.with(|c| c.set(previous));
    })
    .await;
    let _ = joined;
}

/// Drives one connection from connect to stop and reports its events.
async fn lifecycle(shared: Arc<Shared>, promise: Promise, callback: LifecycleCallback) {
    let life = shared.life.clone();
    let options = shared.options.clone();
    let reporting = Arc::clone(&shared);
    life.run(options, move |event| {
        let shared = Arc::clone(&reporting);
        let callback = callback.clone();
        async move {
            let (event, error) = match event {
                Event::Connected => (FP_EVENT_CONNECTION_SUCCESS, None),
                Event::ConnectFailed(e) => (FP_EVENT_CONNECTION_FAILURE, Some(fp_error::from(e))),
                // Dropped by `emit` if the owner has asked to stop since.
                Event::Lost(e) => (FP_EVENT_DISCONNECTED, Some(fp_error::from(e))),
                Event::Stopped => (FP_EVENT_STOPPED, None),
            };
            emit(&shared, &callback, event, error).await;
        }
    })
    .await;
    drop(shared);
    drop(promise);
}

/// Closes the connection cleanly (MQTT DISCONNECT) on the library's thread and returns at
/// once. Pending operations finish with an error (`FP_ERR_DISCONNECTED` or `FP_ERR_CANCELLED`);
/// the lifecycle callback then gets `FP_EVENT_STOPPED`. `FP_ERR_NOT_CONNECTED` if
/// fp_client_connect() was never called. Calling it again is harmless.
#[unsafe(no_mangle)]
pub extern "C" fn fp_client_disconnect(client: *mut fp_client) -> fp_result {
    ffi_result! {
        let shared = shared_of(client)?;
        if !shared.lock().connect_called {
            return Err(FP_ERR_NOT_CONNECTED);
        }
        shared.life.stop();
        Ok(())
    }
}

/// Frees a client: cancels what is pending, disconnects, and waits.
///
/// Every pending operation's callback fires with `FP_ERR_CANCELLED` (or its real result if it
/// was already complete), the lifecycle callback gets its remaining events, and this function
/// returns only after all of this client's callbacks have returned. NULL is a no-op.
///
/// Called from inside one of this client's own callbacks, it does not wait (that would wait for
/// itself): it cancels everything and returns; the last of the client's callbacks to return
/// releases the remaining resources. Either way the handle must not be used after this call,
/// except by this client's callbacks that are running meanwhile: until they return they may
/// still pass it to the library (new operations are refused with `FP_ERR_CANCELLED`, a second
/// fp_client_free() does nothing).
/// Do not hold a lock that this client's callbacks take while calling it.
#[unsafe(no_mangle)]
pub extern "C" fn fp_client_free(client: *mut fp_client) {
    ffi_panic_boundary! {
        // Borrowed, not taken back into its Box yet: callbacks of this client that are
        // running may still use the handle (their calls are refused), so it is released only
        // once they have returned.
        let shared = match shared_of(client) {
            Ok(s) => s,
            Err(_) => return,
        };
        let inside_own_callback = IN_CALLBACK_OF.with(Cell::get) == shared.id;
        let already_freed = std::mem::replace(&mut shared.lock().closing, true);
        if already_freed && inside_own_callback {
            // Freed already by another of the client's callbacks, still running: the handle
            // is alive until they all return, and its release is already arranged.
            return;
        }
        shared.cancel.raise();
        shared.life.stop();
        let release = {
            let mut t = shared.lock();
            if inside_own_callback {
                runtime::deferred_release_started();
                t.deferred_release = true;
                // The last of the client's callbacks to return frees the handle.
                t.freed_handle = Some(FreedHandle(client));
                None
            } else {
                while t.outstanding > 0 {
                    t = shared.idle.wait(t).unwrap_or_else(|e| e.into_inner());
                }
                // SAFETY: a live handle from fp_client_new(), freed once, per the header; no
                // callback of this client runs any more.
                unsafe { fp_client::free(client) };
                t.runtime.take()
            }
        };
        drop(shared);
        // Outside the lock, on the caller's thread: stops the runtime if this was the last
        // client.
        drop(release);
    }
}

/// Set once by fp_client_free(); the client's pending operations wait on it. (A `watch`
/// channel would do, with eight wait lists per client.)
#[derive(Default)]
struct CancelFlag {
    raised: AtomicBool,
    notify: Notify,
}

impl CancelFlag {
    fn raise(&self) {
        self.raised.store(true, Ordering::SeqCst);
        self.notify.notify_waiters();
    }

    /// Resolves once the flag is raised; at once if it is already.
    async fn raised(&self) {
        loop {
            // Registered before the check, so a raise in between is not missed.
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.raised.load(Ordering::SeqCst) {
                return;
            }
            notified.await;
        }
    }
}
