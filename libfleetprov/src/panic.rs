//! The panic boundary every exported function body runs inside.
//!
//! Unwinding into C is undefined behaviour, so each `extern "C"` body is wrapped in
//! [`ffi_panic_boundary!`]: a panic becomes the return type's failure value (`FP_ERR_PANIC`,
//! NULL, or nothing). The function signature stays outside the macro so cbindgen sees it.

use std::ffi::c_int;

use super::error::{fp_error, fp_result};

/// The value an exported function returns when its body panicked.
pub(crate) trait PanicValue {
    fn panic_value() -> Self;
}

impl PanicValue for fp_result {
    fn panic_value() -> Self {
        fp_result::FP_ERR_PANIC
    }
}

impl PanicValue for () {
    fn panic_value() -> Self {}
}

impl PanicValue for u32 {
    fn panic_value() -> Self {
        0
    }
}

impl PanicValue for usize {
    fn panic_value() -> Self {
        0
    }
}

impl PanicValue for c_int {
    fn panic_value() -> Self {
        0
    }
}

impl<T> PanicValue for *const T {
    fn panic_value() -> Self {
        std::ptr::null()
    }
}

impl<T> PanicValue for *mut T {
    fn panic_value() -> Self {
        std::ptr::null_mut()
    }
}

/// Runs `f`, which prepares what a callback will receive; a panic becomes an `FP_ERR_PANIC`
/// error naming `what`, so the callback still runs and reports it.
pub(crate) fn caught<T>(
    what: &str,
    f: impl FnOnce() -> Result<T, fp_error>,
) -> Result<T, fp_error> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|_| {
        Err(fp_error::new(
            fp_result::FP_ERR_PANIC,
            &format!("the library panicked while {what}"),
        ))
    })
}

/// Runs the body under `catch_unwind` and maps a panic to [`PanicValue::panic_value`].
///
/// `AssertUnwindSafe` is sound here because after a panic the library only hands back a
/// failure value; shared state reached through poisoned locks is recovered explicitly.
macro_rules! ffi_panic_boundary {
    ($($body:tt)*) => {
        match ::std::panic::catch_unwind(::std::panic::AssertUnwindSafe(|| { $($body)* })) {
            Ok(value) => value,
            Err(_) => $crate::panic::PanicValue::panic_value(),
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn panics(flag: bool) -> fp_result {
        ffi_panic_boundary! {
            if flag {
                panic!("boom");
            }
            fp_result::FP_OK
        }
    }

    fn null_on_panic() -> *const u8 {
        ffi_panic_boundary! {
            let v: Vec<u8> = Vec::new();
            let first: Option<&u8> = v.first();
            first.map(|b| b as *const u8).expect("empty")
        }
    }

    #[test]
    fn a_panic_becomes_the_failure_value() {
        assert_eq!(panics(false), fp_result::FP_OK);
        assert_eq!(panics(true), fp_result::FP_ERR_PANIC);
        assert!(null_on_panic().is_null());
    }
}
