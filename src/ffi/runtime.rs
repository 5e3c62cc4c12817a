//! The one tokio runtime shared by every C client of the process.
//!
//! One worker thread drives all connections (a gateway with 1,000 clients still has one I/O
//! thread); callbacks run on the runtime's blocking pool so a slow callback never stalls I/O.
//! The runtime starts with the first client and stops when the last client is released, so a
//! program that frees its clients leaves no threads or allocations behind (valgrind-clean).
//!
//! Stopping has one trap: a runtime must not be dropped from one of its own threads (tokio
//! panics on a worker, and on a blocking-pool thread the shutdown would wait for the very
//! thread doing it). The last release happens on such a thread when a client is freed from
//! inside its own callback. In that case the shutdown is handed to a plain thread, whose
//! handle is kept and joined by the next acquire or release made outside the runtime.
//!
//! A program may also free its last client from a callback and then return from `main` at
//! once, before that callback has even returned. An `atexit` handler then waits (bounded) for
//! such deferred releases and joins the shutdown, so the runtime's threads end normally
//! instead of being killed with their memory still allocated.

use std::cell::Cell;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::runtime::{Handle, Runtime};

/// How long a shutdown waits for runtime threads to finish. When the last client is released
/// every callback has already returned, so this only bounds a misbehaving case.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

struct Slot {
    runtime: Option<Runtime>,
    users: usize,
    /// A shutdown running on a plain thread (see the module docs).
    stopping: Option<JoinHandle<()>>,
}

static SLOT: Mutex<Slot> = Mutex::new(Slot {
    runtime: None,
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
    let handle = match &slot.runtime {
        Some(rt) => rt.handle().clone(),
        None => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("fleetprov")
                .enable_io()
                .enable_time()
                .on_thread_start(|| ON_RUNTIME_THREAD.with(|f| f.set(true)))
                .build()?;
            let handle = rt.handle().clone();
            slot.runtime = Some(rt);
            handle
        }
    };
    slot.users += 1;
    Ok(RuntimeGuard { handle })
}

impl Drop for RuntimeGuard {
    fn drop(&mut self) {
        let mut slot = slot();
        slot.users = slot.users.saturating_sub(1);
        if slot.users > 0 {
            return;
        }
        let Some(rt) = slot.runtime.take() else {
            return;
        };
        let previous = slot.stopping.take();
        if on_runtime_thread() {
            // Shared so a failed spawn can hand the runtime back instead of dropping it here.
            let cell = Arc::new(Mutex::new(Some(rt)));
            let for_thread = Arc::clone(&cell);
            let spawned = std::thread::Builder::new()
                .name("fleetprov-stop".into())
                .spawn(move || {
                    if let Some(previous) = previous {
                        let _ = previous.join();
                    }
                    if let Some(rt) = take_runtime(&for_thread) {
                        rt.shutdown_timeout(SHUTDOWN_GRACE);
                    }
                });
            match spawned {
                Ok(handle) => {
                    slot.stopping = Some(handle);
                    register_exit_join();
                }
                Err(_) => {
                    // No thread to spare: stop without waiting, which tokio allows anywhere.
                    if let Some(rt) = take_runtime(&cell) {
                        rt.shutdown_background();
                    }
                }
            }
        } else {
            drop(slot);
            if let Some(previous) = previous {
                let _ = previous.join();
            }
            rt.shutdown_timeout(SHUTDOWN_GRACE);
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

fn take_runtime(cell: &Mutex<Option<Runtime>>) -> Option<Runtime> {
    cell.lock().unwrap_or_else(|e| e.into_inner()).take()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releasing_from_a_runtime_thread_does_not_panic_or_deadlock() {
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
}
