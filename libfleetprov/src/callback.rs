//! One callback type for every C function pointer the library keeps: the function, the
//! caller's `user_data`, and the release function the caller gave for it (if the C API has
//! one), called once when the library no longer needs `user_data`.

use std::ffi::c_void;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Releases the `user_data` a callback was registered with, once the library is done with
/// it: called exactly once, after the last call of the callback has returned, on whichever
/// thread drops the library's last use (possibly inside the call that replaced the callback).
pub type fp_release_callback = Option<unsafe extern "C" fn(user_data: *mut c_void)>;

/// A C function pointer `F` with its `user_data` and release.
pub(crate) struct Callback<F: Copy> {
    call: F,
    user_data: *mut c_void,
    release: fp_release_callback,
}

// SAFETY: the header requires every callback and its `user_data` to be usable from the
// library's threads (from several at once where a callback type says so); the library never
// dereferences `user_data` itself.
unsafe impl<F: Copy> Send for Callback<F> {}
// SAFETY: as above.
unsafe impl<F: Copy> Sync for Callback<F> {}

impl<F: Copy> Callback<F> {
    /// The callback, or `None` when `call` is NULL: `release` then runs at once, since nothing
    /// will use `user_data`.
    pub(crate) fn new(
        call: Option<F>,
        user_data: *mut c_void,
        release: fp_release_callback,
    ) -> Option<Callback<F>> {
        let Some(call) = call else {
            if let Some(release) = release {
                // SAFETY: the caller's release function with its own `user_data`, called once.
                unsafe { release(user_data) };
            }
            return None;
        };
        Some(Callback {
            call,
            user_data,
            release,
        })
    }

    /// A callback (not NULL) with its release.
    pub(crate) fn with_release(
        call: F,
        user_data: *mut c_void,
        release: fp_release_callback,
    ) -> Callback<F> {
        Callback {
            call,
            user_data,
            release,
        }
    }

    /// A callback the C API gives no release function for.
    pub(crate) fn unreleased(call: F, user_data: *mut c_void) -> Callback<F> {
        Callback {
            call,
            user_data,
            release: None,
        }
    }

    /// Runs `f` with the function and `user_data`: `f` makes the call. A panic in the Rust
    /// code around the call is caught (`None`), so it never unwinds into a library thread's
    /// bookkeeping or into C.
    pub(crate) fn invoke<R>(&self, f: impl FnOnce(F, *mut c_void) -> R) -> Option<R> {
        catch_unwind(AssertUnwindSafe(|| f(self.call, self.user_data))).ok()
    }
}

impl<F: Copy> Drop for Callback<F> {
    fn drop(&mut self) {
        if let Some(release) = self.release.take() {
            // SAFETY: the release function the C caller supplied with this `user_data`,
            // called once.
            unsafe { release(self.user_data) };
        }
    }
}
