//! Strings coming in from C: NUL-terminated UTF-8, checked and copied before the call returns.

use std::ffi::{c_char, CStr};

use fleetprov_core::protocol::TemplateName;
use zeroize::Zeroizing;

use super::error::fp_result;

/// Borrows a C string argument as `&str`.
///
/// # Safety
/// `ptr` must be NULL or point to a NUL-terminated string that stays valid for `'a`.
pub(crate) unsafe fn str_arg<'a>(ptr: *const c_char) -> Result<&'a str, fp_result> {
    if ptr.is_null() {
        return Err(fp_result::FP_ERR_NULL_ARGUMENT);
    }
    // SAFETY: non-NULL and NUL-terminated per the caller's contract.
    let cstr = unsafe { CStr::from_ptr(ptr) };
    cstr.to_str().map_err(|_| fp_result::FP_ERR_INVALID_UTF8)
}

/// Like [`str_arg`], for an optional argument: NULL is `None`.
///
/// # Safety
/// As for [`str_arg`].
pub(crate) unsafe fn opt_str_arg<'a>(ptr: *const c_char) -> Result<Option<&'a str>, fp_result> {
    if ptr.is_null() {
        return Ok(None);
    }
    // SAFETY: forwarded contract.
    unsafe { str_arg(ptr) }.map(Some)
}

/// Like [`str_arg`] but also refuses the empty string.
///
/// # Safety
/// As for [`str_arg`].
pub(crate) unsafe fn nonempty_str_arg<'a>(ptr: *const c_char) -> Result<&'a str, fp_result> {
    // SAFETY: forwarded contract.
    let s = unsafe { str_arg(ptr) }?;
    if s.is_empty() {
        return Err(fp_result::FP_ERR_INVALID_ARGUMENT);
    }
    Ok(s)
}

/// Copies a template name argument: UTF-8 and valid by AWS's rules (1-36 characters of
/// `A-Za-z0-9_-`), else `FP_ERR_INVALID_ARGUMENT`.
///
/// # Safety
/// As for [`str_arg`].
pub(crate) unsafe fn template_name_arg(ptr: *const c_char) -> Result<TemplateName, fp_result> {
    // SAFETY: forwarded contract.
    let name = unsafe { str_arg(ptr) }?;
    TemplateName::new(name).map_err(|e| super::error::logged(&e))
}

/// Copies a secret C string argument (a PEM key) into memory that is wiped on drop. Empty and
/// non-UTF-8 input are refused; no intermediate copy is left behind.
///
/// # Safety
/// As for [`str_arg`].
pub(crate) unsafe fn secret_arg(ptr: *const c_char) -> Result<Zeroizing<Vec<u8>>, fp_result> {
    // SAFETY: forwarded contract.
    let s = unsafe { nonempty_str_arg(ptr) }?;
    let mut out = Zeroizing::new(Vec::with_capacity(s.len()));
    out.extend_from_slice(s.as_bytes());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn null_utf8_and_empty_are_distinguished() {
        unsafe {
            assert_eq!(
                str_arg(std::ptr::null()),
                Err(fp_result::FP_ERR_NULL_ARGUMENT)
            );
            let bad = c"\xff\xfe";
            assert_eq!(str_arg(bad.as_ptr()), Err(fp_result::FP_ERR_INVALID_UTF8));
            assert_eq!(str_arg(c"".as_ptr()), Ok(""));
            assert_eq!(opt_str_arg(std::ptr::null()), Ok(None));
            assert_eq!(opt_str_arg(c"cn".as_ptr()), Ok(Some("cn")));
            assert_eq!(
                opt_str_arg(bad.as_ptr()),
                Err(fp_result::FP_ERR_INVALID_UTF8)
            );
            assert_eq!(
                nonempty_str_arg(c"".as_ptr()),
                Err(fp_result::FP_ERR_INVALID_ARGUMENT)
            );
            assert_eq!(nonempty_str_arg(c"x".as_ptr()), Ok("x"));
            assert_eq!(&secret_arg(c"pem".as_ptr()).unwrap()[..], b"pem");
        }
    }
}
