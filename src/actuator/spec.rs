//! What a pod runs and how it is judged ready and alive, mapped by the caller from the Knative
//! pod spec (containers' `command`, `args`, `env`, `workingDir`, probes, volume mounts,
//! `limits.memory`; the pod's volumes; the revision's timeouts).

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

/// What a pod runs: the serving container's process (these top-level fields), beside any
/// `sidecars`, all sharing the pod's `volumes`.
#[derive(Clone, Debug)]
pub struct PodSpec {
    /// Program and leading arguments (the serving container's `command`).
    pub command: Vec<String>,
    /// Further arguments (`args`).
    pub args: Vec<String>,
    /// Set on top of the gateway's own environment; `PORT` is always overridden with the pod's
    /// port.
    pub env: Vec<(String, EnvValue)>,
    /// Working directory of the process; the gateway's when `None`.
    pub working_dir: Option<PathBuf>,
    pub readiness: ReadinessProbe,
    /// A failing liveness probe restarts the pod.
    pub liveness: Option<ReadinessProbe>,
    /// Readiness and liveness wait for it; failing it restarts the pod.
    pub startup: Option<ReadinessProbe>,
    /// Volumes the serving container sees.
    pub mounts: Vec<PodMount>,
    /// The serving container is stopped (as Kubernetes' OOM kill) when its resident memory
    /// exceeds this many bytes.
    pub memory_limit: Option<u64>,
    /// The pod's other containers.
    pub sidecars: Vec<Sidecar>,
    /// The pod's volumes, materialized for each pod.
    pub volumes: Vec<PodVolume>,
    /// Why this pod cannot run on the local runtime; then no pod starts and this is the
    /// revision's error.
    pub blocker: Option<String>,
    /// SIGKILL after SIGTERM when the process has not exited by then.
    pub termination_grace: Duration,
    /// Longest wait for the requests in flight on a draining pod before SIGTERM.
    pub drain_timeout: Duration,
    /// A pod not ready after this long is stopped and counted as a failed start.
    pub start_timeout: Duration,
}

/// A container of the pod beside the serving one.
#[derive(Clone, Debug)]
pub struct Sidecar {
    /// Container name, for logs.
    pub name: String,
    pub command: Vec<String>,
    pub args: Vec<String>,
    pub env: Vec<(String, EnvValue)>,
    pub working_dir: Option<PathBuf>,
    /// The pod is ready only once this passes too; `None`: ready once started.
    pub readiness: Option<ReadinessProbe>,
    pub liveness: Option<ReadinessProbe>,
    pub startup: Option<ReadinessProbe>,
    pub mounts: Vec<PodMount>,
    pub memory_limit: Option<u64>,
}

/// An environment variable's value.
#[derive(Clone, PartialEq, Eq)]
pub enum EnvValue {
    /// Known in advance.
    Plain(String),
    /// A Secret's value: never logged.
    Secret(String),
    /// The pod's name (`fieldRef: metadata.name`).
    PodName,
    /// A unique id of the pod (`fieldRef: metadata.uid`).
    PodUid,
}

impl From<&str> for EnvValue {
    fn from(value: &str) -> Self {
        EnvValue::Plain(value.to_owned())
    }
}

impl From<String> for EnvValue {
    fn from(value: String) -> Self {
        EnvValue::Plain(value)
    }
}

impl std::fmt::Debug for EnvValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EnvValue::Plain(value) => write!(f, "{value:?}"),
            EnvValue::Secret(_) => f.write_str("<redacted>"),
            EnvValue::PodName => f.write_str("<pod name>"),
            EnvValue::PodUid => f.write_str("<pod uid>"),
        }
    }
}

/// One volume of the pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodVolume {
    pub name: String,
    pub source: PodVolumeSource,
}

/// What a [`PodVolume`] holds.
#[derive(Clone, PartialEq, Eq)]
pub enum PodVolumeSource {
    /// Files written for each pod: (relative path, contents, mode). Kept in memory
    /// (`/dev/shm`) where the machine has it, as Kubernetes keeps Secret volumes.
    Files(Vec<(String, Vec<u8>, u32)>),
    /// An empty directory per pod, shared by its containers.
    EmptyDir,
    /// A path of this machine.
    HostPath(PathBuf),
}

impl std::fmt::Debug for PodVolumeSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PodVolumeSource::Files(files) => {
                let paths: Vec<&str> = files.iter().map(|(p, _, _)| p.as_str()).collect();
                f.debug_tuple("Files").field(&paths).finish()
            }
            PodVolumeSource::EmptyDir => f.write_str("EmptyDir"),
            PodVolumeSource::HostPath(path) => f.debug_tuple("HostPath").field(path).finish(),
        }
    }
}

/// A volume at a path of one container's file system view.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodMount {
    /// The volume's name.
    pub volume: String,
    /// Absolute path the process sees.
    pub target: String,
    /// Path inside the volume to mount instead of its root.
    pub sub_path: Option<String>,
    pub read_only: bool,
}

/// How readiness is checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Readiness {
    /// The pod's port accepts a TCP connection.
    TcpPort,
    /// `GET path` on the pod's port answers 200–399 (Kubernetes' `httpGet` rule).
    HttpGet { path: String },
    /// The command exits 0 (in the container's environment and file system view).
    Exec { command: Vec<String> },
    /// `grpc.health.v1.Health/Check` over h2c answers `SERVING` for `service` ("" is the
    /// whole server).
    Grpc { service: String },
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
    /// Probe this port instead of the pod's.
    pub port: Option<u16>,
    /// Headers of an `HttpGet` probe.
    pub headers: Vec<(String, String)>,
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
    #[error("{0}")]
    NotLocal(String),
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
            liveness: None,
            startup: None,
            mounts: Vec::new(),
            memory_limit: None,
            sidecars: Vec::new(),
            volumes: Vec::new(),
            blocker: None,
            termination_grace: DEFAULT_TERMINATION_GRACE,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            start_timeout: DEFAULT_START_TIMEOUT,
        }
    }

    /// Checks what would otherwise only fail at run time.
    pub fn validate(&self) -> Result<(), SpecError> {
        if let Some(blocker) = &self.blocker {
            return Err(SpecError::NotLocal(blocker.clone()));
        }
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
            port: None,
            headers: Vec::new(),
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
