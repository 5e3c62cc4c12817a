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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::mpsc;

    #[test]
    fn one_lock_per_directory() {
        let (a, b) = (Path::new("/tmp/store-a"), Path::new("/tmp/store-b"));
        let la = lock_for(a);
        assert!(Arc::ptr_eq(&la, &lock_for(a)));
        assert!(!Arc::ptr_eq(&la, &lock_for(b)));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn work_of_a_dropped_run_holds_the_directory_until_it_ends() {
        let tmp = tempfile::tempdir().unwrap();
        let store = IdentityStore::open(tmp.path()).unwrap();
        let lock = lock_for(tmp.path());
        let (entered_tx, entered_rx) = mpsc::channel::<()>();
        let (go_tx, go_rx) = mpsc::channel::<()>();
        let done = Arc::new(AtomicBool::new(false));
        let d = Arc::clone(&done);
        let mut first = Box::pin(locked(&lock, &store, move |_| {
            entered_tx.send(()).unwrap();
            go_rx.recv().unwrap();
            d.store(true, Ordering::SeqCst);
            Ok(())
        }));
        // Poll it until its work runs on the blocking pool, then drop it, as a cancel would.
        let entered = tokio::task::spawn_blocking(move || entered_rx.recv().unwrap());
        tokio::select! {
            biased;
            r = entered => r.unwrap(),
            _ = &mut first => panic!("the work ended before it was let go"),
        }
        drop(first);
        // The work goes on and still holds the directory: the next run's lock is the same one,
        // and taken.
        let next = lock_for(tmp.path());
        assert!(Arc::ptr_eq(&lock, &next));
        assert!(next.try_lock().is_err());
        go_tx.send(()).unwrap();
        let d = Arc::clone(&done);
        let saw_it_done = locked(&next, &store, move |_| Ok(d.load(Ordering::SeqCst)))
            .await
            .unwrap();
        assert!(saw_it_done);
    }
}
