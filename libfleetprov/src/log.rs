//! `fp_set_log_callback`: the library's log messages, forwarded to C.

use std::ffi::{c_char, c_int, c_void};

use super::callback::{fp_release_callback, Callback};
use super::error::{fp_result, lossy_cstring};
use fleetprov_core::log::{self as core_log, Level};

/// Log verbosity, from nothing to everything (the levels of AWS's sample `--verbosity`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum fp_log_level {
    /// No messages (`NoLogs`).
    FP_LOG_NONE = 0,
    /// Unrecoverable failures (`Fatal`).
    FP_LOG_FATAL = 1,
    /// Failures (`Error`).
    FP_LOG_ERROR = 2,
    /// Unexpected but handled events (`Warn`).
    FP_LOG_WARN = 3,
    /// Connection and operation milestones (`Info`).
    FP_LOG_INFO = 4,
    /// Packet-level detail (`Debug`).
    FP_LOG_DEBUG = 5,
    /// Everything (`Trace`).
    FP_LOG_TRACE = 6,
}

use fp_log_level::*;

impl fp_log_level {
    fn from_int(v: c_int) -> Option<fp_log_level> {
        [
            FP_LOG_NONE,
            FP_LOG_FATAL,
            FP_LOG_ERROR,
            FP_LOG_WARN,
            FP_LOG_INFO,
            FP_LOG_DEBUG,
            FP_LOG_TRACE,
        ]
        .into_iter()
        .find(|l| *l as c_int == v)
    }

    fn from_core(level: Level) -> fp_log_level {
        match level {
            Level::Error => FP_LOG_ERROR,
            Level::Warn => FP_LOG_WARN,
            Level::Info => FP_LOG_INFO,
            Level::Debug => FP_LOG_DEBUG,
            Level::Trace => FP_LOG_TRACE,
        }
    }

    /// The core's threshold that lets through at least this level's messages.
    fn to_core(self) -> Level {
        match self {
            FP_LOG_NONE | FP_LOG_FATAL | FP_LOG_ERROR => Level::Error,
            FP_LOG_WARN => Level::Warn,
            FP_LOG_INFO => Level::Info,
            FP_LOG_DEBUG => Level::Debug,
            FP_LOG_TRACE => Level::Trace,
        }
    }
}

/// Receives one log message.
///
/// `message` is a NUL-terminated UTF-8 line without a trailing newline, borrowed for the
/// duration of the call. It never contains private keys. Called on any thread, possibly on
/// several at once; it must not call back into the library and should return quickly.
pub type fp_log_callback = Option<
    unsafe extern "C" fn(user_data: *mut c_void, level: fp_log_level, message: *const c_char),
>;

/// The log callback's function.
type LogFn = unsafe extern "C" fn(*mut c_void, fp_log_level, *const c_char);

/// The installed callback with its level; dropping it releases `user_data`.
struct LogTarget {
    callback: Callback<LogFn>,
    max_level: fp_log_level,
}

impl LogTarget {
    fn deliver(&self, level: Level, message: &str) {
        let level = fp_log_level::from_core(level);
        if level <= self.max_level {
            let message = lossy_cstring(message);
            self.callback.invoke(|call, user_data| {
                // SAFETY: a callback and user_data supplied together by the C caller;
                // `message` outlives the call.
                unsafe { call(user_data, level, message.as_ptr()) }
            });
        }
    }
}

/// Installs the process-wide log callback, replacing any previous one.
///
/// Messages more verbose than `max_level` (an ::fp_log_level value) are not delivered.
/// `callback` NULL or `max_level` `FP_LOG_NONE` turns logging off (the default).
/// `FP_ERR_INVALID_ARGUMENT` if `max_level` is not an ::fp_log_level value.
///
/// `user_data` is passed to every call and must stay valid, and usable from any thread, until
/// `release` (may be NULL) is called with it: exactly once, after the callback is replaced or
/// removed by a later fp_set_log_callback() and every message in flight on another thread has
/// been delivered. It is also called, at once, when this call fails or does not install the
/// callback (`callback` NULL or `max_level` `FP_LOG_NONE`). A callback still installed at
/// process exit is never released.
#[unsafe(no_mangle)]
pub extern "C" fn fp_set_log_callback(
    callback: fp_log_callback,
    user_data: *mut c_void,
    release: fp_release_callback,
    max_level: c_int,
) -> fp_result {
    ffi_panic_boundary! {
        // Made first, so that every way out below releases `user_data` exactly once: by
        // dropping the target, or later through the logger that keeps it.
        let callback = Callback::new(callback, user_data, release);
        let Some(max_level) = fp_log_level::from_int(max_level) else {
            return fp_result::FP_ERR_INVALID_ARGUMENT;
        };
        match callback {
            Some(callback) if max_level != FP_LOG_NONE => {
                let target = LogTarget { callback, max_level };
                core_log::set_max_level(max_level.to_core());
                core_log::set_logger(Some(Box::new(move |level, message| {
                    target.deliver(level, message)
                })));
            }
            _ => core_log::set_logger(None),
        }
        fp_result::FP_OK
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_map_between_c_and_core() {
        assert_eq!(fp_log_level::from_int(6), Some(FP_LOG_TRACE));
        assert_eq!(fp_log_level::from_int(7), None);
        assert_eq!(fp_log_level::from_core(Level::Warn), FP_LOG_WARN);
        assert_eq!(FP_LOG_FATAL.to_core(), Level::Error);
        assert!(fp_log_level::from_core(Level::Error) > FP_LOG_FATAL);
        assert_eq!(
            fp_set_log_callback(None, std::ptr::null_mut(), None, 9),
            fp_result::FP_ERR_INVALID_ARGUMENT
        );
    }
}
