//! Store work one call at a time per directory, within this process.
//!
//! A run that is dropped (cancelled) while its store work runs on the blocking pool cannot
//! stop that work: a write, a rename or the commit finishes in the background. The next run on
//! the same directory waits for it here, rather than racing it (its clean-up removing a file
//! the other is still writing, or its load reading an identity being replaced).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};

use super::store::IdentityStore;
use crate::error::Error;

/// One lock per directory that has store work in flight or a run holding it.
static LOCKS: Mutex<Vec<(PathBuf, Weak<Mutex<()>>)>> = Mutex::new(Vec::new());

/// The lock of `dir`, shared by every run using it.
pub(super) fn lock_for(dir: &Path) -> Arc<Mutex<()>> {
    let mut locks = LOCKS.lock().unwrap_or_else(|e| e.into_inner());
    locks.retain(|(_, lock)| lock.strong_count() > 0);
    if let Some(lock) = locks
        .iter()
        .find(|(d, _)| d == dir)
        .and_then(|(_, l)| l.upgrade())
    {
        return lock;
    }
    let lock = Arc::new(Mutex::new(()));
    locks.push((dir.to_path_buf(), Arc::downgrade(&lock)));
    lock
}

/// Runs store work `f` on the blocking pool under `lock`. Dropping the returned future does
/// not stop `f`; it only stops waiting for it.
pub(super) async fn locked<T: Send + 'static>(
    lock: &Arc<Mutex<()>>,
    store: &IdentityStore,
    f: impl FnOnce(&IdentityStore) -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    let (lock, store) = (Arc::clone(lock), store.clone());
    super::run::blocking(move || {
        let _held = lock.lock().unwrap_or_else(|e| e.into_inner());
        f(&store)
    })
    .await
}
