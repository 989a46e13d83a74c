//! State the network backends (NATS, Kafka) share between their refresh task and the Broker
//! handle: why the backend cannot store now, the refreshed counts, and the subscriptions the
//! Broker's Triggers need. Every lock here is held for a map operation only, never across I/O.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

use crate::broker::SubscribeOptions;

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

pub(crate) struct RemoteState {
    /// `nats` or `kafka`, for logs.
    backend: &'static str,
    /// The stream or topic, for logs.
    place: String,
    unavailable: Mutex<Option<String>>,
    stored: AtomicU64,
    /// Backlog of each subscription consumed here, by backend name (consumer, group).
    pending: Mutex<HashMap<String, Arc<AtomicU64>>>,
    /// Subscriptions the Broker's Triggers need, by backend name, and whether each exists.
    expected: Mutex<HashMap<String, (SubscribeOptions, bool)>>,
    /// Wakes the refresh task when new subscriptions are expected.
    pub(crate) expected_changed: Notify,
}

impl RemoteState {
    pub(crate) fn new(backend: &'static str, place: String, connecting: String) -> RemoteState {
        RemoteState {
            backend,
            place,
            unavailable: Mutex::new(Some(connecting)),
            stored: AtomicU64::new(0),
            pending: Mutex::new(HashMap::new()),
            expected: Mutex::new(HashMap::new()),
            expected_changed: Notify::new(),
        }
    }

    /// Records why the backend cannot store (`None`: it can), logging each change once.
    pub(crate) fn set_unavailable(&self, reason: Option<String>) {
        let mut current = lock(&self.unavailable);
        if *current != reason {
            match &reason {
                Some(r) => {
                    tracing::warn!(backend = self.backend, place = %self.place, reason = %r, "Broker not ready.")
                }
                None => {
                    tracing::info!(backend = self.backend, place = %self.place, "Broker ready.")
                }
            }
            *current = reason;
        }
    }

    pub(crate) fn unavailable(&self) -> Option<String> {
        lock(&self.unavailable).clone()
    }

    pub(crate) fn set_stored(&self, stored: u64) {
        self.stored.store(stored, Ordering::Relaxed);
    }

    pub(crate) fn stored(&self) -> u64 {
        self.stored.load(Ordering::Relaxed)
    }

    /// The backlog cell of a subscription, created at 0.
    pub(crate) fn backlog(&self, name: &str) -> Arc<AtomicU64> {
        Arc::clone(
            lock(&self.pending)
                .entry(name.to_owned())
                .or_insert_with(|| Arc::new(AtomicU64::new(0))),
        )
    }

    pub(crate) fn backlogs(&self) -> Vec<(String, Arc<AtomicU64>)> {
        lock(&self.pending)
            .iter()
            .map(|(k, v)| (k.clone(), Arc::clone(v)))
            .collect()
    }

    pub(crate) fn pending(&self, name: &str) -> u64 {
        lock(&self.pending)
            .get(name)
            .map_or(0, |b| b.load(Ordering::Relaxed))
    }

    /// Forgets a removed subscription.
    pub(crate) fn forget(&self, name: &str) {
        lock(&self.pending).remove(name);
        lock(&self.expected).remove(name);
    }

    /// Declares needed subscriptions; new ones (or ones whose options changed) are created by
    /// the refresh task, which this wakes.
    pub(crate) fn expect(
        &self,
        subscriptions: impl IntoIterator<Item = (String, SubscribeOptions)>,
    ) {
        let mut expected = lock(&self.expected);
        let mut added = false;
        for (name, options) in subscriptions {
            if expected.get(&name).is_none_or(|(o, _)| *o != options) {
                expected.insert(name, (options, false));
                added = true;
            }
        }
        drop(expected);
        if added {
            self.expected_changed.notify_one();
        }
    }

    /// Expected subscriptions not created yet.
    pub(crate) fn missing(&self) -> Vec<(String, SubscribeOptions)> {
        lock(&self.expected)
            .iter()
            .filter(|(_, (_, created))| !created)
            .map(|(name, (options, _))| (name.clone(), *options))
            .collect()
    }

    pub(crate) fn mark_created(&self, name: &str) {
        if let Some(entry) = lock(&self.expected).get_mut(name) {
            entry.1 = true;
        }
    }

    /// The stream or topic is gone: every subscription must be created again.
    pub(crate) fn reset_created(&self) {
        for (_, created) in lock(&self.expected).values_mut() {
            *created = false;
        }
    }
}
