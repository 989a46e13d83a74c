//! Actuators: what turns a revision's desired scale into running pods.
//!
//! [`LocalRuntime`] runs every pod as a child process of the gateway (one process per pod,
//! `PORT` set to a free port on 127.0.0.1). One reconcile task per revision converges the pods to
//! the desired scale; each pod has its own task that starts the process, probes readiness,
//! forwards its output to the log and drains it on scale down. The revision's dispatch state
//! hears about each pod through [`PodSink`].
//!
//! # Pod lifecycle as the sink sees it
//! For every pod whose process was spawned, in this order:
//! 1. [`PodSink::pod_ready`] once the readiness probe passed (never, if the pod dies or is removed
//!    first). It may be called again after a readiness loss recovered.
//! 2. [`PodSink::pod_draining`] when the pod is chosen for removal after it was ready, or when a
//!    periodic readiness probe fails `failure_threshold` times in a row.
//! 3. [`PodSink::pod_gone`] exactly once, after the process has exited.
//!
//! # Failover rule
//! Requests already sent to a pod that dies fail: the gateway answers 502 for HTTP, and a
//! delivery counts as a failed attempt that the trigger's retry policy may retry. Requests not yet
//! sent — still queued in the gateway, or whose connection to the pod was refused — never reached
//! the pod and are safe to send to another pod. Scale down does not fail requests: a pod gets no
//! new work once draining and is stopped only when its in-flight count is zero (or after
//! `drain_timeout`).

mod local;
pub mod logs;
mod output;
mod pod_dir;
mod probe;
mod spec;
mod usage;

pub use local::{LocalRuntime, PodOutput, PodState, PodsStatus, RevisionPods};
pub use spec::{
    DEFAULT_DRAIN_TIMEOUT, DEFAULT_PROBE_TIMEOUT, DEFAULT_START_TIMEOUT, DEFAULT_TERMINATION_GRACE,
    EnvValue, PodMount, PodSpec, PodVolume, PodVolumeSource, Readiness, ReadinessProbe, Sidecar,
    SpecError,
};
pub use usage::{CpuClock, GroupUsage, group_usage};

use std::net::SocketAddr;

use crate::revision::queue::PodId;

/// Callbacks into a revision's dispatch state (implemented by the revision).
///
/// Called from the actuator's tasks, never while the actuator holds a lock; implementations must
/// not block for long.
pub trait PodSink: Send + Sync + 'static {
    /// The pod passed its readiness probe: start sending work to `address`.
    fn pod_ready(&self, id: PodId, address: SocketAddr);
    /// Stop sending new work to the pod; requests already running on it finish.
    fn pod_draining(&self, id: PodId);
    /// The pod's process exited (on its own or because it was removed).
    fn pod_gone(&self, id: PodId);
    /// Requests from the gateway still running on the pod.
    fn pod_in_flight(&self, id: PodId) -> u32;
}
