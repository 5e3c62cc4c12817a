//! How the library's objects cross the C boundary: every `fp_*` handle is a `Box` given to C
//! as a pointer, borrowed back through [`Castable`], which turns a NULL argument into
//! `FP_ERR_NULL_ARGUMENT`. Functions whose result is an `fp_result` write their bodies as
//! `Result<(), fp_result>` inside [`ffi_result!`], so each check is one `?`.

use super::error::fp_result::{self, *};

/// A Rust object that C holds as an opaque `T *` handle.
pub(crate) trait Castable: Sized {
    /// Borrows the object behind `ptr`.
    ///
    /// # Safety
    /// `ptr` is NULL or a live handle of this type, not freed for `'a`.
    unsafe fn try_ref<'a>(ptr: *const Self) -> Result<&'a Self, fp_result> {
        // SAFETY: forwarded contract.
        unsafe { ptr.as_ref() }.ok_or(FP_ERR_NULL_ARGUMENT)
    }

    /// Borrows the object behind `ptr` mutably.
    ///
    /// # Safety
    /// As for [`Castable::try_ref`], and nothing else uses the object meanwhile.
    unsafe fn try_mut<'a>(ptr: *mut Self) -> Result<&'a mut Self, fp_result> {
        // SAFETY: forwarded contract.
        unsafe { ptr.as_mut() }.ok_or(FP_ERR_NULL_ARGUMENT)
    }

    /// Gives `self` to C: boxes it and writes the handle to `out`.
    ///
    /// # Safety
    /// `out` was checked with [`check_out`] and points to writable storage.
    unsafe fn give(self, out: *mut *mut Self) {
        // SAFETY: forwarded contract.
        unsafe { out.write(Box::into_raw(Box::new(self))) };
    }

    /// Takes a handle back from C and drops the object; NULL is a no-op.
    ///
    /// # Safety
    /// `ptr` is NULL or a handle from [`Castable::give`] that is freed once.
    unsafe fn free(ptr: *mut Self) {
        if !ptr.is_null() {
            // SAFETY: forwarded contract.
            drop(unsafe { Box::from_raw(ptr) });
        }
    }
}

/// Checks an out-parameter before any work is done, so a NULL `out` fails early and `*out` is
/// written only on success.
pub(crate) fn check_out<T>(out: *mut *mut T) -> Result<(), fp_result> {
    if out.is_null() {
        Err(FP_ERR_NULL_ARGUMENT)
    } else {
        Ok(())
    }
}

impl From<Result<(), fp_result>> for fp_result {
    fn from(r: Result<(), fp_result>) -> fp_result {
        r.err().unwrap_or(FP_OK)
    }
}

/// The body of an exported function returning `fp_result`, written as a block that evaluates
/// to `Result<(), fp_result>` (so arguments are checked with `?`), inside the panic boundary.
macro_rules! ffi_result {
    ($($body:tt)*) => {
        ffi_panic_boundary! {
            let run = || -> ::std::result::Result<(), $crate::error::fp_result> { $($body)* };
            $crate::error::fp_result::from(run())
        }
    };
}
