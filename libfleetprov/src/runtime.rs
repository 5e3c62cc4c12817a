//! The one tokio runtime shared by every C client of the process.
//!
//! One thread drives all connections (a gateway with 1,000 clients still has one I/O thread);
//! callbacks run on the runtime's blocking pool, capped at [`CALLBACK_THREADS`], so a slow
//! callback never stalls I/O. The runtime starts with the first client and stops when the last client is released, so a
//! program that frees its clients leaves no threads or allocations behind (valgrind-clean).
//!
//! It is a current-thread runtime driven by a thread of our own, rather than a multi-thread
//! runtime with one worker: the same single I/O thread, without linking tokio's work-stealing
//! scheduler (about 75 KB of the shared library).
//!
//! Stopping has one trap: a runtime must not be shut down from one of its own threads (on the
//! driver thread it would wait for itself; on a blocking-pool thread the shutdown would wait
//! for the very thread doing it). The last release happens on such a thread when a client is
//! freed from inside its own callback. The release therefore only tells the driver thread to
//! stop; that thread shuts the runtime down itself, and whoever releases from outside the
//! runtime joins it. A driver thread told to stop from inside the runtime is kept and joined by
//! the next acquire or release made outside the runtime.
//!
//! A program may also free its last client from a callback and then return from `main` at
//! once, before that callback has even returned. An `atexit` handler then waits (bounded) for
//! such deferred releases and joins the driver thread, so the runtime's threads end normally
//! instead of being killed with their memory still allocated.

use std::any::Any;
use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// Threads that run callbacks (tokio's blocking pool): a fixed few whatever the number of
/// clients. Together with the driver thread the library never runs more than five threads.
pub(crate) const CALLBACK_THREADS: usize = 4;

/// How long a shutdown waits for runtime threads to finish. When the last client is released
/// every callback has already returned, so this only bounds a misbehaving case.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The running runtime: its handle, and the thread that drives it until told to stop.
struct Driver {
    handle: Handle,
    stop: oneshot::Sender<()>,
    thread: JoinHandle<()>,
}

struct Slot {
    driver: Option<Driver>,
    users: usize,
    /// A driver thread told to stop from inside the runtime, not joined yet (see the module
    /// docs).
    stopping: Option<JoinHandle<()>>,
}

static SLOT: Mutex<Slot> = Mutex::new(Slot {
    driver: None,
    users: 0,
    stopping: None,
});

thread_local! {
    static ON_RUNTIME_THREAD: Cell<bool> = const { Cell::new(false) };
}

fn slot() -> MutexGuard<'static, Slot> {
    // The slot is consistent at every unlock, so a poisoned lock is still usable.
    SLOT.lock().unwrap_or_else(|e| e.into_inner())
}

/// Starts a task on the runtime, boxed: tokio builds its task machinery (poll, completion,
/// join and abort paths) once per future type, so every task of the library shares one
/// instantiation instead of one per spawn site (about 1.5 KB of code each). The cost is one
/// allocation per task.
pub(crate) fn spawn(handle: &Handle, task: impl Future<Output = ()> + Send + 'static) {
    let task: Pin<Box<dyn Future<Output = ()> + Send>> = Box::pin(task);
    drop(handle.spawn(task));
}

/// Runs `job` on the blocking pool, boxed for the same reason as [`spawn`], and in the same
/// form as the core's blocking work (a job returning `Box<dyn Any>`), so that the two share
/// one instantiation; the returned handle completes when `job` has returned.
pub(crate) fn spawn_blocking(
    job: impl FnOnce() + Send + 'static,
) -> tokio::task::JoinHandle<Box<dyn Any + Send>> {
    let job: Box<dyn FnOnce() -> Box<dyn Any + Send> + Send> = Box::new(move || {
        job();
        Box::new(())
    });
    tokio::task::spawn_blocking(job)
}

/// Whether the current thread belongs to the library's runtime (worker or blocking pool).
pub(crate) fn on_runtime_thread() -> bool {
    ON_RUNTIME_THREAD.with(Cell::get)
}

/// Keeps the shared runtime alive; the last guard dropped stops it.
pub(crate) struct RuntimeGuard {
    handle: Handle,
}

impl std::fmt::Debug for RuntimeGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RuntimeGuard")
    }
}

impl RuntimeGuard {
    pub(crate) fn handle(&self) -> &Handle {
        &self.handle
    }
}

/// Takes a reference on the shared runtime, starting it if needed.
pub(crate) fn acquire() -> std::io::Result<RuntimeGuard> {
    let mut slot = slot();
    if !on_runtime_thread() {
        if let Some(previous) = slot.stopping.take() {
            // Bounded by SHUTDOWN_GRACE; its result carries nothing to report.
            let _ = previous.join();
        }
    }
    let handle = match &slot.driver {
        Some(driver) => driver.handle.clone(),
        None => {
            let driver = start()?;
            let handle = driver.handle.clone();
            slot.driver = Some(driver);
            handle
        }
    };
    slot.users += 1;
    Ok(RuntimeGuard { handle })
}

/// Starts the thread that builds and drives the runtime, and returns once it runs.
fn start() -> std::io::Result<Driver> {
    let (stop, stopped) = oneshot::channel::<()>();
    // The new thread reports here whether the runtime was built (a Mutex and Condvar rather
    // than a channel type, whose code would only be linked for this).
    let ready = Arc::new((Mutex::new(None::<std::io::Result<Handle>>), Condvar::new()));
    let report = Arc::clone(&ready);
    let tell = move |outcome: std::io::Result<Handle>| {
        let (cell, changed) = &*report;
        *cell.lock().unwrap_or_else(|e| e.into_inner()) = Some(outcome);
        changed.notify_all();
    };
    let thread = std::thread::Builder::new()
        .name("fleetprov".into())
        .spawn(move || {
            ON_RUNTIME_THREAD.with(|f| f.set(true));
            // Built here rather than by the caller: tokio records the thread that builds a
            // current-thread runtime, and what it records for a C program's main thread is
            // never freed (valgrind would report it at exit). A panic is reported too: the
            // caller waits for the outcome.
            let built = std::panic::catch_unwind(|| {
                tokio::runtime::Builder::new_current_thread()
                    .thread_name("fleetprov")
                    .enable_io()
                    .enable_time()
                    .max_blocking_threads(CALLBACK_THREADS)
                    // Blocking-pool threads; this thread marked itself above.
                    .on_thread_start(|| ON_RUNTIME_THREAD.with(|f| f.set(true)))
                    .build()
            })
            .unwrap_or_else(|_| Err(std::io::Error::other("building the runtime panicked")));
            let rt = match built {
                Ok(rt) => rt,
                Err(e) => return tell(Err(e)),
            };
            tell(Ok(rt.handle().clone()));
            // Runs every task until told to stop (or the sender is gone).
            let _ = rt.block_on(stopped);
            // Outside `block_on` now, so shutting down here is allowed; it waits (bounded)
            // for callbacks still running on the blocking pool.
            rt.shutdown_timeout(SHUTDOWN_GRACE);
        })?;
    let (cell, changed) = &*ready;
    let outcome = {
        let guard = cell.lock().unwrap_or_else(|e| e.into_inner());
        let mut guard = changed
            .wait_while(guard, |o| o.is_none())
            .unwrap_or_else(|e| e.into_inner());
        guard.take()
    };
    match outcome {
        Some(Ok(handle)) => Ok(Driver {
            handle,
            stop,
            thread,
        }),
        Some(Err(e)) => {
            let _ = thread.join();
            Err(e)
        }
        // Not reached: the thread reports before it can end.
        None => Err(std::io::Error::other("the runtime thread did not start")),
    }
}

impl Drop for RuntimeGuard {
    fn drop(&mut self) {
        let mut slot = slot();
        slot.users = slot.users.saturating_sub(1);
        if slot.users > 0 {
            return;
        }
        let Some(driver) = slot.driver.take() else {
            return;
        };
        // A send fails only if the driver thread is gone already; it then needs no signal.
        let _ = driver.stop.send(());
        let previous = slot.stopping.take();
        if on_runtime_thread() {
            // The driver shuts down by itself; joining it here could wait for this very
            // thread. The join is left to a later caller outside the runtime.
            slot.stopping = match previous {
                None => Some(driver.thread),
                Some(previous) => {
                    // One slot, two threads to join: a small thread joins them in order. If
                    // it cannot start, both still end on their own, just unjoined.
                    let current = driver.thread;
                    std::thread::Builder::new()
                        .name("fleetprov-stop".into())
                        .spawn(move || {
                            let _ = previous.join();
                            let _ = current.join();
                        })
                        .ok()
                }
            };
            register_exit_join();
        } else {
            drop(slot);
            if let Some(previous) = previous {
                let _ = previous.join();
            }
            // Bounded by SHUTDOWN_GRACE inside the driver thread.
            let _ = driver.thread.join();
        }
    }
}

extern "C" {
    // From the C library. In a shared object this registers the handler with the object's
    // own handle, so it also runs if the library is unloaded before exit.
    fn atexit(callback: extern "C" fn()) -> std::ffi::c_int;
}

/// How long process exit waits for deferred releases (a callback that freed its own client
/// and has not returned yet).
const EXIT_WAIT: Duration = Duration::from_secs(5);

/// Number of clients freed from inside their own callbacks and not yet released.
static DEFERRED: Mutex<usize> = Mutex::new(0);
static DEFERRED_DONE: Condvar = Condvar::new();

fn deferred() -> MutexGuard<'static, usize> {
    DEFERRED.lock().unwrap_or_else(|e| e.into_inner())
}

/// A client was freed from inside its own callback; its release will come later.
pub(crate) fn deferred_release_started() {
    *deferred() += 1;
    register_exit_join();
}

/// The release announced by [`deferred_release_started`] has happened.
pub(crate) fn deferred_release_finished() {
    let mut n = deferred();
    *n = n.saturating_sub(1);
    DEFERRED_DONE.notify_all();
}

/// Makes sure deferred releases and a handed-off shutdown finish before the process exits.
fn register_exit_join() {
    static REGISTERED: std::sync::Once = std::sync::Once::new();
    REGISTERED.call_once(|| {
        // SAFETY: registers a plain `extern "C" fn` that does not unwind.
        // A failed registration only means the join is skipped.
        let _ = unsafe { atexit(join_stopping_at_exit) };
    });
}

extern "C" fn join_stopping_at_exit() {
    // Exiting from a runtime thread: joining would wait for this very thread.
    if on_runtime_thread() {
        return;
    }
    let _ = std::panic::catch_unwind(|| {
        let n = deferred();
        let _ = DEFERRED_DONE.wait_timeout_while(n, EXIT_WAIT, |n| *n > 0);
        let stopping = slot().stopping.take();
        if let Some(handle) = stopping {
            let _ = handle.join();
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The runtime is process-wide: tests that count on being its only user take turns.
    static SERIAL: Mutex<()> = Mutex::new(());

    fn serial() -> MutexGuard<'static, ()> {
        SERIAL.lock().unwrap_or_else(|e| e.into_inner())
    }

    #[test]
    fn releasing_from_a_runtime_thread_does_not_panic_or_deadlock() {
        let _turn = serial();
        let outer = acquire().unwrap();
        let inner = acquire().unwrap();
        assert!(!on_runtime_thread());
        let h = outer.handle().clone();
        // Drop `outer` on a blocking-pool thread, then `inner` here: whichever is last must
        // stop the runtime cleanly, on whichever thread that happens.
        let on_rt = h
            .block_on(h.spawn_blocking(move || {
                let on_rt = on_runtime_thread();
                drop(outer);
                on_rt
            }))
            .unwrap();
        assert!(on_rt);
        drop(inner);
        // The runtime can be started again afterwards.
        let again = acquire().unwrap();
        let v = again.handle().block_on(async { 7 });
        assert_eq!(v, 7);
    }

    #[test]
    fn last_release_inside_the_runtime_leaves_the_join_to_the_next_acquire() {
        let _turn = serial();
        let only = acquire().unwrap();
        let h = only.handle().clone();
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        // The last release happens on a blocking-pool thread: the runtime must stop without
        // that thread waiting for itself.
        drop(h.spawn_blocking(move || {
            drop(only);
            let _ = done_tx.send(on_runtime_thread());
        }));
        assert!(done_rx.recv().unwrap());
        assert!(slot().driver.is_none());
        // The next acquire joins the stopped driver thread and starts a fresh runtime.
        let next = acquire().unwrap();
        assert!(slot().stopping.is_none());
        assert_eq!(next.handle().block_on(async { 7 }), 7);
        drop(next);
        let slot = slot();
        assert!(slot.driver.is_none() && slot.stopping.is_none() && slot.users == 0);
    }
}
