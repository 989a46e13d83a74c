//! Autoscaling: pure decisions (KPA, precise, backlog), the task that applies them, and a
//! simulator that compares the classes on virtual time.
//!
//! - [`policy`]: the knobs of one revision, with Knative's (and for the HPA class Kubernetes')
//!   defaults.
//! - [`kpa`]: Knative's KPA — windows, panic mode, rate limits, scale to zero.
//! - [`hpa`]: the Kubernetes HPA's algorithm on cpu or memory (`hpa.autoscaling.knative.dev`),
//!   with scale to zero; fed per-pod samples once a second by the local runtime.
//! - [`precise`]: `precise.tidegate.dev` — exact demand over `containerConcurrency`, on every change.
//! - [`schedule`]: scheduled windows composed with a class's bounds, for every class.
//! - [`task`]: the thin per-revision task that feeds a decision function and calls a [`task::Scaler`].
//! - [`simulate`]: discrete-event simulation over [`crate::revision::queue::DispatchQueue`],
//!   driven by the [`trace`]s.

pub mod hpa;
pub mod kpa;
pub mod policy;
pub mod precise;
pub mod schedule;
pub mod simulate;
pub mod task;
pub mod trace;
pub mod window;

#[cfg(test)]
mod scenarios;

pub use policy::{Class, Metric, Policy};

/// What one revision is asked to do right now, exactly.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Demand {
    /// Requests and deliveries running on pods.
    pub in_flight: u64,
    /// Requests waiting in the gateway for a slot.
    pub queued: u64,
    /// Broker messages pending for the revision's triggers (NATS `num_pending + num_ack_pending`,
    /// Kafka consumer lag).
    pub backlog: u64,
}

impl Demand {
    /// Requests in flight plus queued.
    pub fn requests(&self) -> u64 {
        self.in_flight.saturating_add(self.queued)
    }

    /// True when anything at all is asked of the revision.
    pub fn is_idle(&self) -> bool {
        self.requests() == 0 && self.backlog == 0
    }
}
