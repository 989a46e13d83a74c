//! Revisions: exact in-flight accounting and precise dispatch per revision, routes and traffic
//! split across revisions.
//!
//! Every request or delivery for a revision holds either a queue ticket (queued in the gateway)
//! or a [`SlotGuard`] (in flight on one pod). Both are released on drop — when the response body
//! ends, the client goes away, or the wait times out — so the counts are exact at every instant.

pub mod queue;
pub mod registry;
pub mod route;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;

use crate::metrics::ProxyCounters;
use queue::{DispatchQueue, PodId, PodSlots, Slot, Ticket};

/// Requests that may wait per revision unless `tidegate.dev/queue-depth` says otherwise.
pub const DEFAULT_QUEUE_DEPTH: usize = 10_000;

/// Why a request got no slot.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DispatchError {
    #[error("revision {0} has {1} requests queued already")]
    QueueFull(String, usize),
    #[error("no pod of revision {0} had a free slot within the request timeout")]
    Timeout(String),
}

/// How requests reach a revision's pods.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PodProtocol {
    /// HTTP/1.1, one request per connection at a time.
    #[default]
    Http1,
    /// HTTP/2 with prior knowledge (container port named `h2c`): requests are multiplexed over
    /// a few connections per pod; trailers and streaming bodies pass both ways (gRPC).
    H2c,
}

/// One immutable revision of a Knative Service as the data path sees it.
pub struct Revision {
    pub namespace: String,
    pub service: String,
    pub name: String,
    /// Autoscaler class shown by the admin API.
    pub class: &'static str,
    pub container_concurrency: u32,
    /// `timeoutSeconds`: the longest a request may take, queueing included.
    pub timeout: Duration,
    /// `responseStartTimeoutSeconds`: the longest wait for response headers once on a pod.
    pub response_start_timeout: Option<Duration>,
    /// How requests reach the pods.
    pub protocol: PodProtocol,
    dispatch: Mutex<Dispatch>,
    /// Fires on every change of demand (arrival, queueing, completion) and of pods.
    pub changed: Arc<Notify>,
    desired: AtomicU32,
    /// The autoscaler's last decision in words (admin API, dashboard).
    decision: std::sync::Mutex<Option<Arc<str>>>,
    /// Set once a pod of this revision was ready (Knative's revision Ready condition).
    ever_ready: AtomicBool,
    /// Requests and deliveries that ever asked for a slot (the rps metric's source).
    requests: AtomicU64,
    /// Broker backlog of the triggers delivering to this revision (filled by queue-backed
    /// brokers; joins demand with `tidegate.dev/backlog-target`).
    pub backlog: AtomicU64,
    /// How proxied requests to this revision ended.
    pub proxied: ProxyCounters,
    /// Demand granularity the autoscaler decides at (f64 bits): a change of demand wakes it when
    /// `ceil(demand / step)` changes, when demand leaves or reaches zero, or while no pod is
    /// ready. 0 wakes it on every change.
    wake_step: AtomicU64,
    /// Headers every request to a pod of this revision carries (set once by the launcher;
    /// Kubernetes mode names the revision as Knative's ingress does, which Knative's
    /// activator needs).
    upstream_headers: std::sync::OnceLock<Vec<(http::HeaderName, http::HeaderValue)>>,
}

/// Counts of a revision at one instant.
#[derive(Clone, Debug)]
pub struct RevisionCounts {
    pub in_flight: u64,
    pub queued: u64,
    pub ready_pods: u32,
    /// Reserved instances taking work (not in `ready_pods`).
    pub reserved_pods: u32,
    pub pods: Vec<PodSlots>,
}

/// What bounds a revision's requests, and how they reach its pods.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Requests per pod at once; 0 = unlimited.
    pub container_concurrency: u32,
    /// `timeoutSeconds`: queueing plus the wait for the answer.
    pub timeout: Duration,
    /// `responseStartTimeoutSeconds`: longest wait for response headers once the request is
    /// on a pod.
    pub response_start_timeout: Option<Duration>,
    /// Requests that may wait for a slot.
    pub queue_depth: usize,
    /// HTTP/1.1 or h2c to the pods.
    pub protocol: PodProtocol,
}

impl Revision {
    pub fn new(
        namespace: &str,
        service: &str,
        name: &str,
        class: &'static str,
        limits: Limits,
        proxied: ProxyCounters,
    ) -> Arc<Self> {
        let Limits {
            container_concurrency,
            timeout,
            response_start_timeout,
            queue_depth,
            protocol,
        } = limits;
        Arc::new(Self {
            namespace: namespace.to_owned(),
            service: service.to_owned(),
            name: name.to_owned(),
            class,
            container_concurrency,
            timeout,
            response_start_timeout,
            protocol,
            dispatch: Mutex::new(Dispatch {
                queue: DispatchQueue::new(container_concurrency, queue_depth),
                area: 0.0,
                changed_at: Instant::now(),
                window_start: Instant::now(),
            }),
            changed: Arc::new(Notify::new()),
            desired: AtomicU32::new(0),
            decision: std::sync::Mutex::new(None),
            ever_ready: AtomicBool::new(false),
            requests: AtomicU64::new(0),
            backlog: AtomicU64::new(0),
            wake_step: AtomicU64::new(0f64.to_bits()),
            proxied,
            upstream_headers: std::sync::OnceLock::new(),
        })
    }

    /// Sets the headers every request to a pod carries; only the first call counts.
    pub fn set_upstream_headers(&self, headers: Vec<(http::HeaderName, http::HeaderValue)>) {
        let _ = self.upstream_headers.set(headers);
    }

    /// Headers every request to a pod carries.
    pub fn upstream_headers(&self) -> &[(http::HeaderName, http::HeaderValue)] {
        self.upstream_headers.get().map_or(&[], Vec::as_slice)
    }

    fn lock(&self) -> MutexGuard<'_, Dispatch> {
        // The queue's invariants hold between calls; a panic elsewhere cannot break them.
        self.dispatch.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits for a slot on a pod, at most until `deadline`. A revision at zero is woken at once
    /// through [`Revision::changed`]; the request waits in FIFO order until a pod is ready.
    pub async fn acquire(self: &Arc<Self>, deadline: Instant) -> Result<SlotGuard, DispatchError> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let (ticket, rx, wake) = {
            let mut q = self.lock();
            let before = demand(&q);
            if let Some(slot) = q.try_acquire() {
                let wake = self.wakes(before, &mut q);
                drop(q);
                if wake {
                    self.changed.notify_one();
                }
                return Ok(SlotGuard {
                    revision: Arc::clone(self),
                    slot,
                });
            }
            // Only a request that has to wait pays for a channel.
            let (tx, rx) = oneshot::channel();
            match q.enqueue(tx) {
                Ok(ticket) => (ticket, rx, self.wakes(before, &mut q)),
                Err(_) => {
                    return Err(DispatchError::QueueFull(self.name.clone(), q.queued()));
                }
            }
        };
        if wake {
            self.changed.notify_one();
        }
        let mut waiter = Waiter {
            revision: self,
            ticket,
            rx: Some(rx),
        };
        let result = match waiter.rx.as_mut() {
            Some(rx) => tokio::time::timeout_at(deadline, rx).await,
            None => return Err(DispatchError::Timeout(self.name.clone())),
        };
        match result {
            Ok(Ok(slot)) => {
                waiter.rx = None;
                Ok(SlotGuard {
                    revision: Arc::clone(self),
                    slot,
                })
            }
            // The sender is only dropped by a cancel, which is ours; treat like a timeout.
            Ok(Err(_)) | Err(_) => match waiter.leave() {
                Some(slot) => Ok(SlotGuard {
                    revision: Arc::clone(self),
                    slot,
                }),
                None => Err(DispatchError::Timeout(self.name.clone())),
            },
        }
    }

    /// Frees a slot and passes it to the longest waiter still there.
    fn release(&self, pod: PodId) {
        let wake = {
            let mut q = self.lock();
            let before = demand(&q);
            let mut next = q.release(pod);
            while let Some((waiter, slot)) = next {
                match waiter.send(slot) {
                    Ok(()) => break,
                    Err(slot) => next = q.release(slot.pod),
                }
            }
            self.wakes(before, &mut q)
        };
        if wake {
            self.changed.notify_one();
        }
    }

    /// Sets the demand granularity of the autoscaler (see [`Revision::wake_step`]):
    /// `containerConcurrency` (or the target) for the precise class, infinity for classes that
    /// sample on their own and only need the scale-from-zero signal.
    pub fn set_wake_step(&self, step: f64) {
        self.wake_step.store(step.to_bits(), Ordering::Relaxed);
    }

    /// Whether a change of demand from `before` to the queue's current demand must wake the
    /// autoscaler: exactly when a decision based on it could differ.
    fn wakes(&self, before: u64, q: &mut Dispatch) -> bool {
        q.integrate(before);
        let after = demand(q);
        if before == after {
            return false;
        }
        if before == 0 || after == 0 || q.ready_pods() == 0 {
            return true;
        }
        let step = f64::from_bits(self.wake_step.load(Ordering::Relaxed));
        if step <= 0.0 || step.is_nan() {
            return true;
        }
        (before as f64 / step).ceil() != (after as f64 / step).ceil()
    }

    fn hand_over_all(
        q: &mut DispatchQueue<oneshot::Sender<Slot>>,
        handed: Vec<(oneshot::Sender<Slot>, Slot)>,
    ) {
        for (waiter, slot) in handed {
            if let Err(slot) = waiter.send(slot) {
                let mut next = q.release(slot.pod);
                while let Some((w, s)) = next {
                    match w.send(s) {
                        Ok(()) => break,
                        Err(s) => next = q.release(s.pod),
                    }
                }
            }
        }
    }

    /// A pod is ready: it takes queued requests at once.
    pub fn pod_ready(&self, id: PodId, address: SocketAddr) {
        {
            let mut q = self.lock();
            let handed = q.add_pod(id, address);
            Self::hand_over_all(&mut q, handed);
        }
        self.ever_ready.store(true, Ordering::Release);
        self.changed.notify_one();
    }

    /// A reserved instance is ready: it takes queued requests at once unless a regular pod
    /// takes work (see [`queue`]), up to `limit` at a time.
    pub fn reserved_pod_ready(&self, id: PodId, address: SocketAddr, limit: u32) {
        {
            let mut q = self.lock();
            let handed = q.add_reserved_pod(id, address, limit);
            Self::hand_over_all(&mut q, handed);
        }
        self.ever_ready.store(true, Ordering::Release);
        self.changed.notify_one();
    }

    /// A pod stops taking new work (scale down).
    pub fn pod_draining(&self, id: PodId) {
        {
            let mut q = self.lock();
            let handed = q.drain_pod(id);
            Self::hand_over_all(&mut q, handed);
        }
        self.changed.notify_one();
    }

    /// A pod is gone. Its requests still running release their slots into nothing.
    pub fn pod_gone(&self, id: PodId) {
        let mut q = self.lock();
        let before = demand(&q);
        q.integrate(before);
        q.remove_pod(id);
        let handed = q.wake_standby();
        Self::hand_over_all(&mut q, handed);
        drop(q);
        self.changed.notify_one();
    }

    /// Requests from this gateway running on a pod.
    pub fn pod_in_flight(&self, id: PodId) -> u32 {
        self.lock().pod(id).map_or(0, |p| p.in_flight)
    }

    /// The time-weighted average of in flight + queued since the previous call (what Knative's
    /// queue-proxy reports as concurrency), exact to every change.
    pub fn average_concurrency(&self) -> f64 {
        let mut q = self.lock();
        let current = demand(&q);
        q.integrate(current);
        let span = q.changed_at.duration_since(q.window_start).as_secs_f64();
        let average = if span > 0.0 {
            q.area / span
        } else {
            current as f64
        };
        q.area = 0.0;
        q.window_start = q.changed_at;
        average
    }

    /// In flight, queued and ready pods, without copying the pods.
    pub fn demand(&self) -> (u64, u64, u32) {
        let q = self.lock();
        (
            q.in_flight(),
            q.queued() as u64,
            u32::try_from(q.ready_pods()).unwrap_or(u32::MAX),
        )
    }

    pub fn counts(&self) -> RevisionCounts {
        let q = self.lock();
        RevisionCounts {
            in_flight: q.in_flight(),
            queued: q.queued() as u64,
            ready_pods: u32::try_from(q.ready_pods()).unwrap_or(u32::MAX),
            reserved_pods: u32::try_from(q.reserved_ready()).unwrap_or(u32::MAX),
            pods: q.pods().to_vec(),
        }
    }

    pub fn requests_total(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    pub fn desired(&self) -> u32 {
        self.desired.load(Ordering::Relaxed)
    }

    /// The autoscaler's last decision in words.
    pub fn decision(&self) -> Option<Arc<str>> {
        self.decision
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    pub fn set_decision(&self, decision: String) {
        *self
            .decision
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(decision.into());
    }

    pub fn set_desired(&self, desired: u32) {
        self.desired.store(desired, Ordering::Relaxed);
    }

    /// True once any pod of the revision was ready.
    pub fn ever_ready(&self) -> bool {
        self.ever_ready.load(Ordering::Acquire)
    }
}

/// The dispatch queue plus the running integral of its demand over time.
struct Dispatch {
    queue: DispatchQueue<oneshot::Sender<Slot>>,
    /// ∫ demand dt since `window_start`, in request-seconds.
    area: f64,
    changed_at: Instant,
    window_start: Instant,
}

impl Dispatch {
    /// Accounts `demand` (the value before a change) up to now.
    fn integrate(&mut self, demand: u64) {
        let now = Instant::now();
        self.area += demand as f64 * now.duration_since(self.changed_at).as_secs_f64();
        self.changed_at = now;
    }
}

impl std::ops::Deref for Dispatch {
    type Target = DispatchQueue<oneshot::Sender<Slot>>;
    fn deref(&self) -> &Self::Target {
        &self.queue
    }
}

impl std::ops::DerefMut for Dispatch {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.queue
    }
}

/// Requests in flight plus queued.
fn demand<W>(q: &DispatchQueue<W>) -> u64 {
    q.in_flight() + q.queued() as u64
}

/// A queued request; leaving the queue (timeout, client gone) is exact, even mid-hand-over.
struct Waiter<'a> {
    revision: &'a Arc<Revision>,
    ticket: Ticket,
    rx: Option<oneshot::Receiver<Slot>>,
}

impl Waiter<'_> {
    /// Leaves the queue; returns a slot handed over in the meantime.
    fn leave(&mut self) -> Option<Slot> {
        let mut rx = self.rx.take()?;
        let (cancelled, wake) = {
            let mut q = self.revision.lock();
            let before = demand(&q);
            let cancelled = q.cancel(self.ticket).is_some();
            (cancelled, self.revision.wakes(before, &mut q))
        };
        if wake {
            self.revision.changed.notify_one();
        }
        if cancelled {
            return None;
        }
        rx.try_recv().ok()
    }
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        if let Some(slot) = self.leave() {
            self.revision.release(slot.pod);
        }
    }
}

/// A request in flight on a pod; the slot is released when this drops.
pub struct SlotGuard {
    revision: Arc<Revision>,
    slot: Slot,
}

impl SlotGuard {
    pub fn address(&self) -> SocketAddr {
        self.slot.address
    }

    pub fn pod(&self) -> PodId {
        self.slot.pod
    }

    pub fn revision(&self) -> &Arc<Revision> {
        &self.revision
    }
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        self.revision.release(self.slot.pod);
    }
}

#[cfg(test)]
#[path = "revision_tests.rs"]
mod tests;
