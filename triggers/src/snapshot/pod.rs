//! What each pod of a revision runs: its containers, their environment (resolved against the
//! set's Secrets and ConfigMaps), probes, mounts and resources, and the pod's volumes with
//! their files. Secret values are kept as [`Sensitive`], which never shows in `Debug` output.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// The pod spec of a revision, validated and resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct PodTemplate {
    /// Every container, in the order written; each runs as one process of the pod.
    pub containers: Vec<ContainerSpec>,
    /// Index in `containers` of the serving container: the one with a port (or the only one).
    pub serving: usize,
    /// Volumes by name, in the order written.
    pub volumes: Vec<Volume>,
    /// Fields that are accepted and kept for Kubernetes mode but change nothing on the local
    /// runtime, as field paths (`spec.template.spec.containers[0].securityContext`).
    pub ignored_locally: Vec<String>,
    /// Why pods of this template cannot run on the local runtime (for example a container
    /// with only an `image`); `None` when they can.
    pub local_blocker: Option<String>,
    /// The pod spec as written (Kubernetes types), for Kubernetes mode.
    pub kubernetes: Arc<k8s_openapi::api::core::v1::PodSpec>,
}

/// One container of a pod.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ContainerSpec {
    /// `name`; defaulted as Knative does (`user-container`, or `container-{i}` beside others).
    pub name: String,
    /// Container image, for Kubernetes mode.
    pub image: Option<String>,
    /// Program and leading arguments, for the local process runtime; empty when only
    /// `image` is set (then [`PodTemplate::local_blocker`] says so).
    pub command: Vec<String>,
    /// Further arguments.
    pub args: Vec<String>,
    /// Environment variables in the order Kubernetes sets them: `envFrom` sources first, then
    /// `env` (a later entry with the same name wins).
    pub env: Vec<EnvVar>,
    /// Port the serving container listens on; `None` lets the runtime choose and pass `PORT`.
    /// Always `None` for other containers.
    pub port: Option<u16>,
    /// The port is named `h2c` (Knative's convention): the container speaks HTTP/2 with prior
    /// knowledge (gRPC services), so requests reach it over multiplexed HTTP/2 connections.
    pub h2c: bool,
    /// Working directory of the process.
    pub working_dir: Option<String>,
    /// Readiness probe; for the serving container `None` means ready once the port accepts
    /// TCP connections, for others ready once started.
    pub readiness: Option<Probe>,
    /// A failing liveness probe restarts the pod.
    pub liveness: Option<Probe>,
    /// Readiness and liveness probing wait until this passes; failing it restarts the pod.
    pub startup: Option<Probe>,
    /// Volumes mounted into the process's view of the file system.
    pub mounts: Vec<VolumeMount>,
    /// `resources`, parsed.
    pub resources: Resources,
}

/// One environment variable.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EnvVar {
    /// Variable name.
    pub name: String,
    /// Its value, or where the runtime gets it.
    pub value: EnvValue,
}

/// Where an environment variable's value comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum EnvValue {
    /// A literal, or a ConfigMap value, or a pod field known when the set is validated.
    Plain(String),
    /// A Secret value.
    Secret(Sensitive<String>),
    /// A field of the pod known only when it starts (`fieldRef`).
    PodField(PodField),
}

/// Pod fields a `fieldRef` may name that differ per pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PodField {
    /// `metadata.name`: the pod's name.
    Name,
    /// `metadata.uid`: a unique id of the pod.
    Uid,
}

/// A value that must not appear in logs, the admin API or `tidegate check` output: `Debug`
/// prints `<redacted>`. Compared and hashed by value, so a changed Secret makes a new
/// revision.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Sensitive<T>(pub T);

impl<T> fmt::Debug for Sensitive<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A volume of the pod.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Volume {
    /// `name`, which `volumeMounts[].name` refers to.
    pub name: String,
    /// What the volume holds.
    pub source: VolumeSource,
}

/// What a volume holds.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum VolumeSource {
    /// `secret`, `configMap` or `projected` of those: files written for each pod.
    Files(Vec<VolumeFile>),
    /// `emptyDir`: an empty directory per pod.
    EmptyDir {
        /// `medium: Memory`: backed by memory (tmpfs).
        memory: bool,
        /// `sizeLimit` in bytes.
        size_limit: Option<u64>,
    },
    /// `hostPath` (behind Knative's `kubernetes.podspec-volumes-hostpath` flag): a directory
    /// or file of this machine.
    HostPath(String),
    /// A kind the local runtime cannot provide (`persistentVolumeClaim`, `csi`, …); a pod
    /// that mounts it cannot run locally.
    Unavailable(String),
}

/// One file of a [`VolumeSource::Files`] volume.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct VolumeFile {
    /// Relative path inside the volume (`key`, or `items[].path`); never absolute, never
    /// containing `..`.
    pub path: String,
    /// File contents.
    pub data: Sensitive<Vec<u8>>,
    /// Permission bits (`items[].mode`, else `defaultMode`, else 0644).
    pub mode: u32,
}

impl fmt::Debug for VolumeFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VolumeFile")
            .field("path", &self.path)
            .field("bytes", &self.data.0.len())
            .field("mode", &format_args!("{:o}", self.mode))
            .finish()
    }
}

/// One `volumeMounts` entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct VolumeMount {
    /// The volume's name.
    pub volume: String,
    /// Absolute path where the process sees it.
    pub mount_path: String,
    /// A path inside the volume to mount instead of its root; relative, without `..`.
    pub sub_path: Option<String>,
    /// Mounted read-only.
    pub read_only: bool,
}

/// `resources` of a container, parsed from Kubernetes quantities.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Resources {
    /// `requests.cpu` in millicores.
    pub requests_cpu_millis: Option<u64>,
    /// `requests.memory` in bytes.
    pub requests_memory: Option<u64>,
    /// `limits.cpu` in millicores.
    pub limits_cpu_millis: Option<u64>,
    /// `limits.memory` in bytes.
    pub limits_memory: Option<u64>,
    /// Every entry as written (`ephemeral-storage`, extended resources, …).
    pub written: BTreeMap<String, String>,
}

/// A probe with Kubernetes' defaults applied.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Probe {
    /// What one probe does.
    pub action: ProbeAction,
    /// Wait before the first probe.
    pub initial_delay: Duration,
    /// Time between probes; zero probes every [`AGGRESSIVE_PROBE_INTERVAL`] (readiness only,
    /// as Knative's queue-proxy does).
    pub period: Duration,
    /// Time one probe may take.
    pub timeout: Duration,
    /// Failures in a row that make the probe fail.
    pub failure_threshold: u32,
    /// Successes in a row that make the probe pass.
    pub success_threshold: u32,
}

/// How often a readiness probe whose period is zero runs.
pub const AGGRESSIVE_PROBE_INTERVAL: Duration = Duration::from_millis(50);

/// What one probe does.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ProbeAction {
    /// GET `path`; 2xx and 3xx pass.
    HttpGet {
        /// Request path, starting with `/`.
        path: String,
        /// `None`: the container's port.
        port: Option<u16>,
        /// `httpHeaders`, in order.
        headers: Vec<(String, String)>,
    },
    /// Open a TCP connection.
    TcpSocket {
        /// `None`: the container's port.
        port: Option<u16>,
    },
    /// Run a command; exit status 0 passes.
    Exec {
        /// Program and arguments.
        command: Vec<String>,
    },
    /// The gRPC health checking protocol (`grpc.health.v1.Health/Check`); `SERVING` passes.
    Grpc {
        /// `None`: the container's port.
        port: Option<u16>,
        /// The service name asked about; empty for the whole server.
        service: String,
    },
}

impl PodTemplate {
    /// A pod of one container and nothing else.
    pub fn single(container: ContainerSpec) -> Self {
        Self {
            containers: vec![container],
            serving: 0,
            volumes: Vec::new(),
            ignored_locally: Vec::new(),
            local_blocker: None,
            kubernetes: Arc::default(),
        }
    }

    /// The serving container.
    pub fn serving_container(&self) -> &ContainerSpec {
        &self.containers[self.serving]
    }
}

impl ContainerSpec {
    /// A container named `user-container` running `command`, every other field unset.
    pub fn command(command: Vec<String>) -> Self {
        Self {
            name: "user-container".to_owned(),
            image: None,
            command,
            args: Vec::new(),
            env: Vec::new(),
            port: None,
            h2c: false,
            working_dir: None,
            readiness: None,
            liveness: None,
            startup: None,
            mounts: Vec::new(),
            resources: Resources::default(),
        }
    }
}

impl EnvVar {
    /// A variable with a literal value.
    pub fn plain(name: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            value: EnvValue::Plain(value.into()),
        }
    }
}
