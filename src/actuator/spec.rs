//! What a pod runs and how it is judged ready, mapped by the caller from the Knative container
//! spec (`command`, `args`, `env`, `workingDir`, `readinessProbe`, the revision's timeouts).

use std::path::PathBuf;
use std::time::Duration;

/// SIGKILL follows SIGTERM after this long.
pub const DEFAULT_TERMINATION_GRACE: Duration = Duration::from_secs(10);
/// Longest wait for a draining pod's requests; Knative's default revision `timeoutSeconds`, so a
/// request Knative would let finish is not cut short.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(300);
/// A pod not ready after this long is stopped and counted as a failed start (Knative's default
/// `progress-deadline`).
pub const DEFAULT_START_TIMEOUT: Duration = Duration::from_secs(600);
/// Each probe attempt is bounded by this (Kubernetes' default `timeoutSeconds`).
pub const DEFAULT_PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// Probe period until the first success when no period is given (Knative's aggressive probing).
pub(crate) const AGGRESSIVE_PERIOD: Duration = Duration::from_millis(50);

/// What a pod runs.
#[derive(Clone, Debug)]
pub struct PodSpec {
    /// Program and leading arguments (`containers[0].command`).
    pub command: Vec<String>,
    /// Further arguments (`containers[0].args`).
    pub args: Vec<String>,
    /// Set on top of the gateway's own environment; `PORT` is always overridden with the pod's
    /// port.
    pub env: Vec<(String, String)>,
    /// Working directory of the process; the gateway's when `None`.
    pub working_dir: Option<PathBuf>,
    pub readiness: ReadinessProbe,
    /// SIGKILL after SIGTERM when the process has not exited by then.
    pub termination_grace: Duration,
    /// Longest wait for the requests in flight on a draining pod before SIGTERM.
    pub drain_timeout: Duration,
    /// A pod not ready after this long is stopped and counted as a failed start.
    pub start_timeout: Duration,
}

/// How readiness is checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Readiness {
    /// The pod's port accepts a TCP connection.
    TcpPort,
    /// `GET path` on the pod's port answers 200–399 (Kubernetes' `httpGet` rule).
    HttpGet { path: String },
}

/// A readiness probe with Kubernetes' knobs.
#[derive(Clone, Debug)]
pub struct ReadinessProbe {
    pub check: Readiness,
    /// Wait before the first attempt.
    pub initial_delay: Duration,
    /// `None`: aggressive probing — every 50 ms until the first success, none afterwards (Knative's
    /// default when `periodSeconds` is unset). `Some(p)`: every `p` before and after readiness; a
    /// ready pod that fails `failure_threshold` probes in a row is drained from dispatch until it
    /// passes `success_threshold` in a row again. Its process keeps running either way.
    pub period: Option<Duration>,
    /// Bound on each attempt.
    pub timeout: Duration,
    /// Consecutive failures that make a ready pod unready (periodic probing only).
    pub failure_threshold: u32,
    /// Consecutive successes that make a pod ready.
    pub success_threshold: u32,
}

/// A pod spec the runtime cannot run.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpecError {
    #[error("command is empty: give the program to run")]
    EmptyCommand,
    #[error("readiness path {0:?} must start with '/' and contain no spaces or control characters")]
    ProbePath(String),
    #[error("readiness {0} must be at least 1")]
    ProbeThreshold(&'static str),
    #[error("readiness timeout must be greater than zero")]
    ProbeTimeout,
    #[error("readiness period must be greater than zero")]
    ProbePeriod,
}

impl PodSpec {
    /// A spec running `command` with every other field at its default.
    pub fn new(command: Vec<String>) -> Self {
        Self {
            command,
            args: Vec::new(),
            env: Vec::new(),
            working_dir: None,
            readiness: ReadinessProbe::default(),
            termination_grace: DEFAULT_TERMINATION_GRACE,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            start_timeout: DEFAULT_START_TIMEOUT,
        }
    }

    /// Checks what would otherwise only fail at run time.
    pub fn validate(&self) -> Result<(), SpecError> {
        if self
            .command
            .first()
            .is_none_or(|program| program.is_empty())
        {
            return Err(SpecError::EmptyCommand);
        }
        self.readiness.validate()
    }
}

impl ReadinessProbe {
    fn validate(&self) -> Result<(), SpecError> {
        if let Readiness::HttpGet { path } = &self.check
            && !valid_path(path)
        {
            return Err(SpecError::ProbePath(path.clone()));
        }
        if self.failure_threshold == 0 {
            return Err(SpecError::ProbeThreshold("failure_threshold"));
        }
        if self.success_threshold == 0 {
            return Err(SpecError::ProbeThreshold("success_threshold"));
        }
        if self.timeout.is_zero() {
            return Err(SpecError::ProbeTimeout);
        }
        if self.period.is_some_and(|p| p.is_zero()) {
            return Err(SpecError::ProbePeriod);
        }
        Ok(())
    }
}

impl Default for ReadinessProbe {
    fn default() -> Self {
        Self {
            check: Readiness::TcpPort,
            initial_delay: Duration::ZERO,
            period: None,
            timeout: DEFAULT_PROBE_TIMEOUT,
            failure_threshold: 3,
            success_threshold: 1,
        }
    }
}

/// A request target that is safe to put on an HTTP/1.1 request line.
pub(crate) fn valid_path(path: &str) -> bool {
    path.starts_with('/') && path.bytes().all(|b| b > b' ' && b != 0x7f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validate_names_the_problem() {
        let mut spec = PodSpec::new(vec![]);
        assert_eq!(spec.validate(), Err(SpecError::EmptyCommand));
        spec.command = vec!["srv".into()];
        assert_eq!(spec.validate(), Ok(()));
        spec.readiness.check = Readiness::HttpGet {
            path: "/ready\r\nX: y".into(),
        };
        assert!(matches!(spec.validate(), Err(SpecError::ProbePath(_))));
        spec.readiness.check = Readiness::HttpGet {
            path: "/healthz?full=1".into(),
        };
        assert_eq!(spec.validate(), Ok(()));
        spec.readiness.success_threshold = 0;
        assert_eq!(
            spec.validate(),
            Err(SpecError::ProbeThreshold("success_threshold"))
        );
    }
}
