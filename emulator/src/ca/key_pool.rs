//! RSA keys generated ahead of need for CreateKeysAndCertificate.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use rsa::RsaPrivateKey;

use super::{CsrError, RSA_BITS};

pub(super) fn generate_rsa() -> Result<RsaPrivateKey, CsrError> {
    RsaPrivateKey::new(&mut rand::rngs::OsRng, RSA_BITS)
        .map_err(|e| CsrError(format!("RSA key generation failed: {e}")))
}

/// RSA keys generated ahead of need by one background thread, so that a request takes a ready
/// key. The thread ends when the pool is dropped.
pub(super) struct KeyPool {
    shared: Arc<PoolShared>,
    worker: Option<JoinHandle<()>>,
}

struct PoolShared {
    state: Mutex<PoolState>,
    wake: Condvar,
    capacity: usize,
}

struct PoolState {
    keys: Vec<RsaPrivateKey>,
    closed: bool,
}

impl PoolShared {
    fn lock(&self) -> MutexGuard<'_, PoolState> {
        // A panic elsewhere cannot leave the key list in a broken state.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl KeyPool {
    pub(super) fn start(capacity: usize) -> KeyPool {
        let shared = Arc::new(PoolShared {
            state: Mutex::new(PoolState {
                keys: Vec::with_capacity(capacity),
                closed: false,
            }),
            wake: Condvar::new(),
            capacity,
        });
        let for_worker = Arc::clone(&shared);
        // Without the thread, keys are generated on demand: slower, still correct.
        let worker = std::thread::Builder::new()
            .name("fleetprov-rsa-pool".into())
            .spawn(move || fill_pool(&for_worker))
            .ok();
        KeyPool { shared, worker }
    }

    pub(super) fn take(&self) -> Result<RsaPrivateKey, CsrError> {
        let ready = {
            let mut state = self.shared.lock();
            let key = state.keys.pop();
            self.shared.wake.notify_all();
            key
        };
        match ready {
            Some(key) => Ok(key),
            None => generate_rsa(),
        }
    }

    #[cfg(test)]
    fn ready(&self) -> usize {
        self.shared.lock().keys.len()
    }
}

fn fill_pool(shared: &PoolShared) {
    loop {
        {
            let mut state = shared.lock();
            while !state.closed && state.keys.len() >= shared.capacity {
                state = shared.wake.wait(state).unwrap_or_else(|e| e.into_inner());
            }
            if state.closed {
                return;
            }
        }
        let Ok(key) = generate_rsa() else {
            return;
        };
        let mut state = shared.lock();
        if state.closed {
            return;
        }
        state.keys.push(key);
        shared.wake.notify_all();
    }
}

impl Drop for KeyPool {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.wake.notify_all();
        if let Some(worker) = self.worker.take() {
            // At most one key generation in progress to wait for.
            let _ = worker.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_pool_fills_up_and_its_thread_ends_with_it() {
        let pool = KeyPool::start(2);
        let shared = Arc::clone(&pool.shared);
        // Wait on the pool's own condition variable until the worker has filled it.
        {
            let mut state = shared.lock();
            while state.keys.len() < 2 {
                state = shared.wake.wait(state).unwrap();
            }
        }
        assert_eq!(pool.ready(), 2);
        pool.take().unwrap();
        assert!(pool.ready() <= 2);
        drop(pool);
        // The worker held the other reference: it is gone, so the thread has returned.
        assert_eq!(Arc::strong_count(&shared), 1);
    }
}
