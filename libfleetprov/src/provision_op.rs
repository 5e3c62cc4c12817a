//! `fp_provision_op`: a running fp_provision_start(), which the caller can cancel or wait for.

use std::ffi::c_void;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use tokio::sync::Notify;

use super::callback::Callback;
use super::error::fp_error;
use super::error::fp_result::{self, *};
use super::handle::{check_out, Castable};
use super::provision::{
    deliver, fp_provision_callback, fp_provision_options, fp_provision_progress_callback,
    fp_provisioned, run_options, DoneFn,
};
use super::runtime;
use fleetprov_core::client::CatchUnwind;
use fleetprov_core::provision::{provision, ProgressFuture, ProgressSink};
use fleetprov_core::{Error, ErrorKind};

/// A provisioning run started by fp_provision_start(): cancel it with fp_provision_cancel(),
/// wait for its outcome with fp_provision_wait(), release it with fp_provision_op_free().
///
/// Thread-safe: any thread may cancel, wait for or read it, also from a library callback
/// (except fp_provision_wait(), which would wait for itself there).
pub struct fp_provision_op {
    shared: Arc<Shared>,
}

impl Castable for fp_provision_op {}

/// What the run's task and the caller's handle share.
pub(crate) struct Shared {
    cancelled: AtomicBool,
    cancel: Notify,
    outcome: Mutex<Option<Outcome>>,
    ended: Condvar,
}

/// The run's outcome, kept for fp_provision_wait(). Set once, never changed after.
struct Outcome(Result<fp_provisioned, fp_error>);

// SAFETY: fp_provisioned's raw pointers point into its own CStrings, which move with it and
// are never changed once built; nothing in it is tied to a thread.
unsafe impl Send for Outcome {}
// SAFETY: as above; it is only read after being set.
unsafe impl Sync for Outcome {}

impl Shared {
    fn new() -> Shared {
        Shared {
            cancelled: AtomicBool::new(false),
            cancel: Notify::new(),
            outcome: Mutex::new(None),
            ended: Condvar::new(),
        }
    }

    fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::SeqCst)
    }

    /// Resolves once the run is cancelled.
    async fn cancelled(&self) {
        while !self.is_cancelled() {
            self.cancel.notified().await;
        }
    }

    fn cancel(&self) {
        if !self.cancelled.swap(true, Ordering::SeqCst) {
            // A permit is stored if the task is not waiting yet.
            self.cancel.notify_one();
        }
    }

    fn finish(&self, outcome: Outcome) {
        let mut slot = self.outcome.lock().unwrap_or_else(|e| e.into_inner());
        *slot = Some(outcome);
        self.ended.notify_all();
    }
}

/// A progress sink that, once the run is cancelled, never lets the next step start: a cancel
/// from inside the progress callback stops the run exactly there.
fn stopping_at_cancel(sink: ProgressSink, shared: Arc<Shared>) -> ProgressSink {
    Arc::new(move |p| -> ProgressFuture {
        let call = sink(p);
        let shared = Arc::clone(&shared);
        Box::pin(async move {
            call.await;
            if shared.is_cancelled() {
                std::future::pending::<()>().await;
            }
        })
    })
}

/// Starts a run: fp_provision() and fp_provision_start().
pub(crate) fn start(
    options: *const fp_provision_options,
    progress: fp_provision_progress_callback,
    callback: Option<DoneFn>,
    user_data: *mut c_void,
    publish: impl FnOnce(&Arc<Shared>),
) -> Result<(), fp_result> {
    let gate = Arc::new(Mutex::new(()));
    let shared = Arc::new(Shared::new());
    let mut opts = run_options(options, progress, user_data, &gate)?;
    opts.progress = opts
        .progress
        .map(|sink| stopping_at_cancel(sink, Arc::clone(&shared)));
    let opts = opts.check().map_err(|e| super::error::logged(&e))?;
    let callback = callback.map(|c| Callback::unreleased(c, user_data));
    let guard = runtime::acquire().map_err(|_| FP_ERR_INTERNAL)?;
    // Process exit waits (bounded) for the release below, as for a client freed from its own
    // callback.
    runtime::deferred_release_started();
    // Before the run starts, so that its callbacks can already use the handle.
    publish(&shared);
    let task_shared = Arc::clone(&shared);
    // Not through runtime::spawn: boxing this large future costs more copying than the code it
    // saves (about 0.4 % more instructions per run under callgrind).
    guard.handle().clone().spawn(async move {
        let shared = task_shared;
        // The cancel is looked at first, so a cancel from the progress callback stops the
        // run before its next step.
        let result = tokio::select! {
            biased;
            () = shared.cancelled() => Err(fp_error::new(
                FP_ERR_CANCELLED,
                "provisioning was cancelled (fp_provision_cancel); the store keeps the \
                 identity it held before, if any",
            )),
            // A panic in the core becomes an error, not a lost callback.
            r = CatchUnwind(provision(opts)) => match r {
                Ok(r) => r.map_err(fp_error::from),
                Err(()) => Err(fp_error::new(
                    FP_ERR_PANIC,
                    "the library panicked while provisioning",
                )),
            },
        };
        // Through runtime::spawn_blocking (one instantiation of the blocking-task machinery for
        // the whole library); the outcome comes back in a slot, left empty by a panic.
        let slot = Arc::new(Mutex::new(None));
        let fill = Arc::clone(&slot);
        let joined = runtime::spawn_blocking(move || {
            // After any progress call still running (the run was cancelled during it).
            let _gate = gate.lock().unwrap_or_else(|e| e.into_inner());
            let outcome = Outcome(deliver(callback, result));
            *fill.lock().unwrap_or_else(|e| e.into_inner()) = Some(outcome);
        })
        .await;
        let outcome = slot.lock().unwrap_or_else(|e| e.into_inner()).take();
        let delivered = outcome.filter(|_| joined.is_ok()).unwrap_or_else(|| {
            Outcome(Err(fp_error::new(
                FP_ERR_PANIC,
                "the library panicked delivering the result",
            )))
        });
        shared.finish(delivered);
        drop(guard);
        runtime::deferred_release_finished();
    });
    Ok(())
}

/// Starts provisioning as fp_provision() does, and gives a handle to cancel the run or wait
/// for it.
///
/// `callback` may be NULL: then nothing is called at the end, and the outcome is read with
/// fp_provision_wait(). Given, it is called exactly once as for fp_provision(), a cancelled
/// run included, and fp_provision_wait() returns after it has returned. `progress` (may be
/// NULL) and `user_data` are as for fp_provision(); `user_data` must stay valid until the run
/// has ended (its callback returned, or fp_provision_wait() returned).
///
/// On success writes the handle to `*out` (free it with fp_provision_op_free()) and returns
/// `FP_OK`; `*out` is written before the run starts, so its callbacks may read the handle
/// from where `out` points (through `user_data`), e.g. to cancel from the progress callback. Otherwise `*out` is untouched and no callback runs: `FP_ERR_NULL_ARGUMENT`
/// (`options` or `out` NULL), `FP_ERR_INVALID_ARGUMENT` (options that cannot work) or
/// `FP_ERR_INTERNAL` (the library's thread cannot start).
///
/// The simplest program: `fp_provision_start(options, NULL, NULL, NULL, &op)`, then
/// `fp_provision_wait(op, &identity, &error)`, then `fp_provision_op_free(op)`.
#[unsafe(no_mangle)]
pub extern "C" fn fp_provision_start(
    options: *const fp_provision_options,
    progress: fp_provision_progress_callback,
    callback: fp_provision_callback,
    user_data: *mut c_void,
    out: *mut *mut fp_provision_op,
) -> fp_result {
    ffi_result! {
        check_out(out)?;
        start(options, progress, callback, user_data, |shared| {
            let shared = Arc::clone(shared);
            // SAFETY: `out` was checked and is writable, per the header.
            unsafe { fp_provision_op { shared }.give(out) };
        })
    }
}

/// Cancels the run: it ends promptly (well under 100 ms, plus the rest of a progress
/// callback that is running) with `FP_ERR_CANCELLED`, its callback called once as always.
/// Connections it had open are closed. The store keeps the identity it held before, or none:
/// a new identity's files already written are not committed. As after a killed process, the
/// next run registers a create result left staged with its token (or reports it as abandoned
/// when it keeps another identity) and verifies and commits an identity left pending.
/// (A cancel that arrives while the verified identity is being committed, its last
/// milliseconds, may let that commit finish: the store then holds the new identity, whole,
/// and the next run reuses it.)
///
/// Callable from any thread, from the run's own progress callback too (the run then stops
/// before its next step), and any number of times. After the run has ended it does nothing.
/// Not async-signal-safe: from a signal handler, hand the signal to a thread (`sigwait`).
/// `FP_ERR_NULL_ARGUMENT` if `op` is NULL, `FP_OK` otherwise.
#[unsafe(no_mangle)]
pub extern "C" fn fp_provision_cancel(op: *const fp_provision_op) -> fp_result {
    ffi_result! {
        // SAFETY: NULL or a live handle from fp_provision_start(), per the header.
        let op = unsafe { fp_provision_op::try_ref(op) }?;
        op.shared.cancel();
        Ok(())
    }
}

/// Waits until the run has ended (and its callback, if any, has returned) and gives its
/// outcome: returns `FP_OK` and writes the identity to `*result`, or returns the failure's
/// code (`FP_ERR_CANCELLED` after fp_provision_cancel()) and writes its details to `*error`.
/// Either out-parameter may be NULL when not wanted. Both are borrowed from `op`: valid until
/// fp_provision_op_free(op). Any number of threads may wait, any number of times.
///
/// Called from a library thread (inside any callback of the library) it would block a thread
/// the run may need, so it returns `FP_ERR_INVALID_ARGUMENT` at once (logged) and writes
/// nothing. `FP_ERR_NULL_ARGUMENT` if `op` is NULL.
#[unsafe(no_mangle)]
pub extern "C" fn fp_provision_wait(
    op: *const fp_provision_op,
    result: *mut *const fp_provisioned,
    error: *mut *const fp_error,
) -> fp_result {
    ffi_panic_boundary! {
        // SAFETY: NULL or a live handle from fp_provision_start(), per the header.
        match unsafe { fp_provision_op::try_ref(op) } {
            Err(code) => code,
            Ok(_) if runtime::on_runtime_thread() => {
                super::error::logged(&Error::new(
                    ErrorKind::InvalidArgument,
                    "fp_provision_wait() was called from a library callback, where it would \
                     wait for itself: refused",
                ))
            }
            Ok(op) => wait(&op.shared, result, error),
        }
    }
}

fn wait(
    shared: &Shared,
    result: *mut *const fp_provisioned,
    error: *mut *const fp_error,
) -> fp_result {
    let mut slot = shared.outcome.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        if let Some(Outcome(outcome)) = slot.as_ref() {
            // The outcome is never changed once set and lives as long as `shared`, which the
            // handle keeps: pointers into it stay valid until fp_provision_op_free().
            return match outcome {
                Ok(r) => {
                    if !result.is_null() {
                        // SAFETY: a writable out-parameter, per the header.
                        unsafe { result.write(r) };
                    }
                    FP_OK
                }
                Err(e) => {
                    if !error.is_null() {
                        // SAFETY: a writable out-parameter, per the header.
                        unsafe { error.write(e) };
                    }
                    super::error::fp_error_code(e)
                }
            };
        }
        slot = shared.ended.wait(slot).unwrap_or_else(|e| e.into_inner());
    }
}

/// Releases the handle. It does not cancel the run (call fp_provision_cancel() first for
/// that): a run still going goes on and calls its callback, if any, as usual. The result and
/// error fp_provision_wait() gave are freed with it. NULL is a no-op. Do not free it while
/// another thread uses it.
#[unsafe(no_mangle)]
pub extern "C" fn fp_provision_op_free(op: *mut fp_provision_op) {
    ffi_panic_boundary! {
        // SAFETY: NULL or a pointer from fp_provision_start(), freed once, per the header.
        unsafe { fp_provision_op::free(op) }
    }
}
