//! A tiny logging hook: the library reports what it does to one process-wide callback.
//!
//! No `log` crate: the C surface needs a plain callback, and a Rust user can forward the
//! messages to whatever logger they use. Messages never contain private keys or the payloads
//! that carry them.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, RwLock};

/// Severity of a log message; a higher value is more verbose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum Level {
    /// Something failed.
    Error = 1,
    /// Something unexpected that the library handled.
    Warn = 2,
    /// Connection and operation milestones.
    Info = 3,
    /// Packet-level detail (topics, packet ids, sizes).
    Debug = 4,
    /// Everything.
    Trace = 5,
}

impl Level {
    fn from_u8(v: u8) -> Level {
        match v {
            0 | 1 => Level::Error,
            2 => Level::Warn,
            3 => Level::Info,
            4 => Level::Debug,
            _ => Level::Trace,
        }
    }
}

/// The logging callback: receives the level and a one-line message.
pub type Logger = Box<dyn Fn(Level, &str) + Send + Sync>;

static LOGGER: RwLock<Option<Arc<Logger>>> = RwLock::new(None);
static MAX_LEVEL: AtomicU8 = AtomicU8::new(Level::Info as u8);

/// Installs (or with `None` removes) the process-wide logging callback.
///
/// The callback may run on any thread, concurrently. It may call back into this module.
pub fn set_logger(f: Option<Logger>) {
    let new = f.map(Arc::new);
    // A poisoned lock only means a logger panicked; the slot itself is still valid.
    let mut slot = LOGGER.write().unwrap_or_else(|e| e.into_inner());
    *slot = new;
}

/// Sets the most verbose level passed to the callback (default [`Level::Info`]).
pub fn set_max_level(level: Level) {
    MAX_LEVEL.store(level as u8, Ordering::Relaxed);
}

/// The current maximum level.
pub fn max_level() -> Level {
    Level::from_u8(MAX_LEVEL.load(Ordering::Relaxed))
}

/// Whether a message at `level` would reach a logger; lets callers skip formatting.
pub fn enabled(level: Level) -> bool {
    level as u8 <= MAX_LEVEL.load(Ordering::Relaxed)
        && LOGGER.read().map(|g| g.is_some()).unwrap_or(false)
}

/// Hands one message to the logger, if any.
pub fn emit(level: Level, message: &str) {
    // Clone the callback out so it runs without the lock held: it may call set_logger.
    let logger = match LOGGER.read() {
        Ok(g) => g.clone(),
        Err(e) => e.into_inner().clone(),
    };
    if let Some(logger) = logger {
        logger(level, message);
    }
}

/// `fp_log!(Level::Info, "connected to {}", host)`: formats only when the level is enabled.
macro_rules! fp_log {
    ($level:expr, $($arg:tt)+) => {{
        let level = $level;
        if $crate::log::enabled(level) {
            $crate::log::emit(level, &format!($($arg)+));
        }
    }};
}
pub(crate) use fp_log;

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    // The logger is process-global; this is the only test in the library that installs one.
    #[test]
    fn levels_filter_and_logger_receives_messages() {
        let seen: Arc<Mutex<Vec<(Level, String)>>> = Arc::default();
        let sink = seen.clone();
        set_logger(Some(Box::new(move |l, m| {
            sink.lock().unwrap().push((l, m.to_owned()))
        })));
        set_max_level(Level::Warn);
        fp_log!(Level::Error, "e {}", 1);
        fp_log!(Level::Warn, "w");
        fp_log!(Level::Info, "i");
        assert_eq!(max_level(), Level::Warn);
        set_max_level(Level::Trace);
        fp_log!(Level::Trace, "t");
        set_logger(None);
        fp_log!(Level::Error, "dropped");
        set_max_level(Level::Info);
        let seen = seen.lock().unwrap().clone();
        assert_eq!(
            seen,
            vec![
                (Level::Error, "e 1".to_owned()),
                (Level::Warn, "w".to_owned()),
                (Level::Trace, "t".to_owned()),
            ]
        );
    }

    #[test]
    fn levels_are_ordered_by_verbosity() {
        assert!(Level::Error < Level::Warn && Level::Debug < Level::Trace);
        assert_eq!(Level::from_u8(Level::Debug as u8), Level::Debug);
    }
}
