//! Result codes and the error object handed to callbacks.

use std::ffi::{c_char, c_int, CStr, CString};

use fleetprov_core::error::{Error, ErrorKind};

/// Result of a library call, and the code carried by an ::fp_error.
///
/// `FP_OK` is 0; every other value is a distinct failure. New codes may be added at the end in
/// later versions, so a `switch` over this type should have a `default:` branch.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum fp_result {
    /// Success.
    FP_OK = 0,
    /// A required pointer argument was NULL.
    FP_ERR_NULL_ARGUMENT = 1,
    /// A string argument was not valid UTF-8.
    FP_ERR_INVALID_UTF8 = 2,
    /// An argument or option was invalid (empty string, template name outside
    /// `[A-Za-z0-9_-]{1,36}`, parameters that are not a JSON object of strings, port 0, ...).
    FP_ERR_INVALID_ARGUMENT = 3,
    /// A file could not be read (missing certificate, key or CA file).
    FP_ERR_IO = 4,
    /// TLS setup or handshake failed: no certificate or key in the PEM, a key that does not
    /// match the certificate, an untrusted or mismatched server certificate, or the server
    /// refusing the client certificate.
    FP_ERR_TLS = 5,
    /// The broker refused the MQTT connection (CONNACK with a failure reason).
    FP_ERR_CONNECTION_REFUSED = 6,
    /// The connection could not be set up (DNS, TCP, proxy, closed before CONNACK).
    FP_ERR_CONNECTION = 7,
    /// The connection was lost while the operation was pending.
    FP_ERR_DISCONNECTED = 8,
    /// No answer in time (CONNACK, SUBACK, PUBACK or the service's reply).
    FP_ERR_TIMEOUT = 9,
    /// The broker refused a subscription to a reply topic, or its Maximum Packet Size (MQTT 5
    /// CONNACK) is smaller than the SUBSCRIBE, which was not sent.
    FP_ERR_SUBSCRIBE_REFUSED = 10,
    /// The service rejected the request; fp_error_status_code(), fp_error_aws_code() and
    /// fp_error_aws_message() give AWS's `statusCode`, `errorCode` and `errorMessage`.
    FP_ERR_REJECTED = 11,
    /// The service's reply could not be used (not JSON, wrong shape or types, too large).
    FP_ERR_BAD_REPLY = 12,
    /// The operation was abandoned: its client was freed or disconnected first.
    FP_ERR_CANCELLED = 13,
    /// fp_client_connect() was not called, or the connection has failed, been lost or stopped.
    FP_ERR_NOT_CONNECTED = 14,
    /// fp_client_connect() was already called on this client (a client connects once).
    FP_ERR_ALREADY_CONNECTED = 15,
    /// A bug in the library was caught at the C boundary; the library state may be unusable.
    FP_ERR_PANIC = 16,
    /// An impossible state inside the library (a bug).
    FP_ERR_INTERNAL = 17,
    /// The broker broke the MQTT protocol (a malformed packet, a topic alias the client never
    /// allowed, a CONNACK with Receive Maximum 0, a packet a broker never sends); the library
    /// closed the connection. The message says what was received.
    FP_ERR_PROTOCOL = 18,
    /// The broker refused the request's PUBLISH (MQTT 5 PUBACK with a failure reason code,
    /// such as 0x87 not authorized: the broker's policy forbids the topic), or its Maximum
    /// Packet Size (MQTT 5 CONNACK) is smaller than the request, which was not sent. The
    /// message names the reason; the service never saw the request.
    FP_ERR_PUBLISH_REFUSED = 19,
    /// The signer failed: the application's signer callback (fp_signer_new()) returned an
    /// error or a signature that does not verify with the key, or the PKCS#11 module, token,
    /// PIN or key could not be used. fp_error_message() names the cause.
    FP_ERR_SIGNER = 20,
    /// The identity store of fp_provision() (a directory) cannot be created, read or written,
    /// or is not a directory.
    FP_ERR_STORE = 21,
}

use fp_result::*;

include!(concat!(env!("OUT_DIR"), "/result_codes.rs"));

impl fp_result {
    /// The static, NUL-terminated name of the code.
    pub(crate) fn as_cstr(self) -> &'static CStr {
        match self {
            FP_OK => c"success",
            FP_ERR_NULL_ARGUMENT => c"a required argument was NULL",
            FP_ERR_INVALID_UTF8 => c"a string argument was not valid UTF-8",
            FP_ERR_INVALID_ARGUMENT => c"invalid argument",
            FP_ERR_IO => c"I/O error",
            FP_ERR_TLS => c"TLS error",
            FP_ERR_CONNECTION_REFUSED => c"connection refused by the broker",
            FP_ERR_CONNECTION => c"connection failed",
            FP_ERR_DISCONNECTED => c"disconnected",
            FP_ERR_TIMEOUT => c"timed out",
            FP_ERR_SUBSCRIBE_REFUSED => c"subscription refused",
            FP_ERR_REJECTED => c"rejected by the service",
            FP_ERR_BAD_REPLY => c"bad reply from the service",
            FP_ERR_CANCELLED => c"cancelled",
            FP_ERR_NOT_CONNECTED => c"not connected",
            FP_ERR_ALREADY_CONNECTED => c"already connected",
            FP_ERR_PANIC => c"internal panic caught at the API boundary",
            FP_ERR_INTERNAL => c"internal error",
            FP_ERR_PROTOCOL => c"the broker broke the MQTT protocol",
            FP_ERR_PUBLISH_REFUSED => c"the broker refused the publish",
            FP_ERR_SIGNER => c"signer failed",
            FP_ERR_STORE => c"identity store error",
        }
    }

    fn from_int(code: c_int) -> Option<fp_result> {
        ALL_RESULTS.iter().copied().find(|r| *r as c_int == code)
    }
}

/// The code for `e`, its message logged at `FP_LOG_ERROR` first: a call that returns only a
/// code still tells the program's log callback why it refused.
pub(crate) fn logged(e: &Error) -> fp_result {
    log_error(format_args!("{}", e.message));
    e.kind.into()
}

/// [`logged`] with what failed before the message ("CSR: ...").
pub(crate) fn log_failure(what: &str, e: &Error) -> fp_result {
    log_error(format_args!("{what}: {}", e.message));
    e.kind.into()
}

/// Logs `message` at `FP_LOG_ERROR`, formatted only when that level is enabled.
fn log_error(message: std::fmt::Arguments<'_>) {
    use fleetprov_core::log::{emit, enabled, Level};
    if enabled(Level::Error) {
        emit(Level::Error, &message.to_string());
    }
}

impl From<ErrorKind> for fp_result {
    fn from(kind: ErrorKind) -> fp_result {
        match kind {
            ErrorKind::InvalidArgument => FP_ERR_INVALID_ARGUMENT,
            ErrorKind::Io => FP_ERR_IO,
            ErrorKind::Tls => FP_ERR_TLS,
            ErrorKind::ConnectionRefused => FP_ERR_CONNECTION_REFUSED,
            ErrorKind::Connection => FP_ERR_CONNECTION,
            ErrorKind::Disconnected => FP_ERR_DISCONNECTED,
            ErrorKind::Timeout => FP_ERR_TIMEOUT,
            ErrorKind::SubscribeRefused => FP_ERR_SUBSCRIBE_REFUSED,
            ErrorKind::Rejected => FP_ERR_REJECTED,
            ErrorKind::BadReply => FP_ERR_BAD_REPLY,
            ErrorKind::Cancelled => FP_ERR_CANCELLED,
            ErrorKind::NotConnected => FP_ERR_NOT_CONNECTED,
            ErrorKind::Internal => FP_ERR_INTERNAL,
            ErrorKind::Protocol => FP_ERR_PROTOCOL,
            ErrorKind::PublishRefused => FP_ERR_PUBLISH_REFUSED,
            ErrorKind::Signer => FP_ERR_SIGNER,
            ErrorKind::Store => FP_ERR_STORE,
            // A kind added to the core later: still a failure, never FP_OK.
            #[allow(unreachable_patterns)]
            _ => FP_ERR_INTERNAL,
        }
    }
}

/// Names a result code: a static NUL-terminated English string, never NULL (an unknown code
/// gives "unknown result code"). Never free it. Callable from any thread.
#[unsafe(no_mangle)]
pub extern "C" fn fp_result_str(result: c_int) -> *const c_char {
    ffi_panic_boundary! {
        match fp_result::from_int(result) {
            Some(r) => r.as_cstr().as_ptr(),
            None => c"unknown result code".as_ptr(),
        }
    }
}

/// Details of a failed operation or connection, handed to a callback.
///
/// Borrowed: valid only while the callback that received it runs; copy what you need. All
/// accessors may be called from any thread during that time.
pub struct fp_error {
    code: fp_result,
    message: CString,
    status_code: c_int,
    aws_code: Option<CString>,
    aws_message: Option<CString>,
}

/// Builds a C string, replacing interior NULs so a message is never lost or truncated silently.
pub(crate) fn lossy_cstring(s: &str) -> CString {
    CString::new(s.replace('\0', "\u{FFFD}")).unwrap_or_default()
}

impl fp_error {
    pub(crate) fn new(code: fp_result, message: &str) -> fp_error {
        fp_error {
            code,
            message: lossy_cstring(message),
            status_code: 0,
            aws_code: None,
            aws_message: None,
        }
    }

    #[cfg(test)]
    pub(crate) fn code(&self) -> fp_result {
        self.code
    }
}

impl Clone for fp_error {
    fn clone(&self) -> fp_error {
        fp_error {
            code: self.code,
            message: self.message.clone(),
            status_code: self.status_code,
            aws_code: self.aws_code.clone(),
            aws_message: self.aws_message.clone(),
        }
    }
}

impl std::fmt::Debug for fp_error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}: {}", self.code, self.message.to_string_lossy())
    }
}

impl From<&Error> for fp_error {
    fn from(e: &Error) -> fp_error {
        let mut out = fp_error::new(e.kind.into(), &e.message);
        if let Some(r) = &e.rejection {
            out.status_code = c_int::try_from(r.status_code).unwrap_or(c_int::MAX);
            out.aws_code = Some(lossy_cstring(&r.error_code));
            out.aws_message = Some(lossy_cstring(&r.error_message));
        }
        out
    }
}

impl From<Error> for fp_error {
    fn from(e: Error) -> fp_error {
        fp_error::from(&e)
    }
}

/// The error handed to a running callback; `None` for NULL. (Not through the handle layer,
/// which builds on this module's codes: an error is only ever borrowed from a callback.)
fn borrowed<'a>(error: *const fp_error) -> Option<&'a fp_error> {
    // SAFETY: NULL or the error handed to the callback, which is running, per the header.
    unsafe { error.as_ref() }
}

/// The error's code. `FP_ERR_NULL_ARGUMENT` if `error` is NULL.
#[unsafe(no_mangle)]
pub extern "C" fn fp_error_code(error: *const fp_error) -> fp_result {
    ffi_panic_boundary! {
        borrowed(error).map_or(FP_ERR_NULL_ARGUMENT, |e| e.code)
    }
}

/// A one-line human-readable message (never contains key material). Borrowed from `error`:
/// valid while the callback runs. NULL only if `error` is NULL.
#[unsafe(no_mangle)]
pub extern "C" fn fp_error_message(error: *const fp_error) -> *const c_char {
    ffi_panic_boundary! {
        borrowed(error).map_or(std::ptr::null(), |e| e.message.as_ptr())
    }
}

/// For a service rejection (`FP_ERR_REJECTED` from `/rejected`), AWS's `statusCode` as
/// received (e.g. 400); 0 for any other error or if `error` is NULL.
#[unsafe(no_mangle)]
pub extern "C" fn fp_error_status_code(error: *const fp_error) -> c_int {
    ffi_panic_boundary! {
        borrowed(error).map_or(0, |e| e.status_code)
    }
}

/// For a service rejection, AWS's `errorCode` as received (e.g.
/// "InvalidCertificateOwnershipToken"); NULL for any other error or if `error` is NULL.
/// Borrowed from `error`: valid while the callback runs.
#[unsafe(no_mangle)]
pub extern "C" fn fp_error_aws_code(error: *const fp_error) -> *const c_char {
    ffi_panic_boundary! {
        borrowed(error)
            .and_then(|e| e.aws_code.as_ref())
            .map_or(std::ptr::null(), |s| s.as_ptr())
    }
}

/// For a service rejection, AWS's `errorMessage` as received; NULL for any other error or if
/// `error` is NULL. Borrowed from `error`: valid while the callback runs.
#[unsafe(no_mangle)]
pub extern "C" fn fp_error_aws_message(error: *const fp_error) -> *const c_char {
    ffi_panic_boundary! {
        borrowed(error)
            .and_then(|e| e.aws_message.as_ref())
            .map_or(std::ptr::null(), |s| s.as_ptr())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetprov_core::protocol::Rejection;

    #[test]
    fn every_code_has_a_distinct_name_and_round_trips() {
        let mut names = std::collections::HashSet::new();
        for code in 0..=21 {
            let r = fp_result::from_int(code).unwrap();
            assert_eq!(r as c_int, code);
            assert!(names.insert(r.as_cstr()));
        }
        assert_eq!(fp_result::from(ErrorKind::Signer), FP_ERR_SIGNER);
        assert_eq!(fp_result::from(ErrorKind::Store), FP_ERR_STORE);
        assert!(fp_result::from_int(22).is_none());
        assert!(fp_result::from_int(-1).is_none());
        let unknown = unsafe { CStr::from_ptr(fp_result_str(-1)) };
        assert_eq!(unknown, c"unknown result code");
    }

    #[test]
    fn rejection_fields_reach_the_accessors() {
        let e = Error::rejected(
            "RegisterThing",
            Rejection {
                status_code: 400,
                error_code: "InvalidParameters".into(),
                error_message: "missing\0SerialNumber".into(),
            },
        );
        let fe = fp_error::from(&e);
        assert_eq!(fp_error_code(&fe), FP_ERR_REJECTED);
        assert_eq!(fp_error_status_code(&fe), 400);
        let code = unsafe { CStr::from_ptr(fp_error_aws_code(&fe)) };
        assert_eq!(code, c"InvalidParameters");
        let msg = unsafe { CStr::from_ptr(fp_error_aws_message(&fe)) };
        assert_eq!(msg.to_str().unwrap(), "missing\u{FFFD}SerialNumber");
    }

    #[test]
    fn plain_errors_have_no_aws_fields_and_null_is_handled() {
        let fe = fp_error::from(Error::new(ErrorKind::Timeout, "no reply"));
        assert_eq!(fe.code(), FP_ERR_TIMEOUT);
        assert_eq!(fp_error_status_code(&fe), 0);
        assert!(fp_error_aws_code(&fe).is_null());
        assert!(fp_error_aws_message(&fe).is_null());
        assert_eq!(fp_error_code(std::ptr::null()), FP_ERR_NULL_ARGUMENT);
        assert!(fp_error_message(std::ptr::null()).is_null());
    }
}
