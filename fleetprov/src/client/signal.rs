//! A value that tasks wait on until it meets a condition: what `tokio::sync::watch` does, for
//! the few values each connection keeps (its stage, a stop request, why it ended), at a
//! fraction of the memory (a `watch` channel holds eight wait lists, this one).

use std::sync::{Mutex, MutexGuard};

use tokio::sync::Notify;

pub(crate) struct Signal<T> {
    value: Mutex<T>,
    changed: Notify,
}

impl<T> Signal<T> {
    pub(crate) fn new(value: T) -> Signal<T> {
        Signal {
            value: Mutex::new(value),
            changed: Notify::new(),
        }
    }

    /// The value now. Not to be held across an `.await`.
    pub(crate) fn get(&self) -> MutexGuard<'_, T> {
        // Every update leaves the value consistent.
        self.value.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Lets `change` update the value; it returns whether it did, and the waiters are woken if
    /// so. Returns what `change` returned.
    pub(crate) fn modify(&self, change: impl FnOnce(&mut T) -> bool) -> bool {
        let changed = change(&mut self.get());
        if changed {
            self.changed.notify_waiters();
        }
        changed
    }

    /// Sets the value and wakes the waiters.
    pub(crate) fn set(&self, value: T) {
        *self.get() = value;
        self.changed.notify_waiters();
    }

    /// Waits until the value meets `done`, and returns what `done` made of it (at once if it
    /// does already).
    pub(crate) async fn wait_for<R>(&self, mut done: impl FnMut(&T) -> Option<R>) -> R {
        loop {
            // Registered before the check, so a change in between is not missed.
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(r) = done(&self.get()) {
                return r;
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[tokio::test]
    async fn a_waiter_sees_the_change_it_waits_for() {
        let s = Arc::new(Signal::new(0));
        let waiter = tokio::spawn({
            let s = s.clone();
            async move { s.wait_for(|&v| (v >= 2).then_some(v * 10)).await }
        });
        s.set(1);
        assert!(!s.modify(|_| false));
        assert!(s.modify(|v| {
            *v = 2;
            true
        }));
        assert_eq!(waiter.await.unwrap(), 20);
        // Met already: no wait.
        assert_eq!(s.wait_for(|&v| (v == 2).then_some("now")).await, "now");
    }
}
