//! `serving.knative.dev/v1` Service: a revision template and a traffic split, and the
//! annotations on the template that tune its autoscaler.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::ObjectMeta;

/// `apiVersion` of Service.
pub const SERVING_API_VERSION: &str = "serving.knative.dev/v1";

/// Prefix of Knative's autoscaling annotations; unknown keys under it draw a warning.
pub const AUTOSCALING_ANNOTATION_PREFIX: &str = "autoscaling.knative.dev/";
/// Template annotation choosing the autoscaler: [`KPA_CLASS`] (default for Services written
/// as such) or [`PRECISE_CLASS`] (default for Services tidegate Triggers create).
/// [`HPA_CLASS`] is rejected.
pub const AUTOSCALING_CLASS_ANNOTATION: &str = "autoscaling.knative.dev/class";
/// Template annotation: `concurrency` (default) or `rps`.
pub const AUTOSCALING_METRIC_ANNOTATION: &str = "autoscaling.knative.dev/metric";
/// Template annotation: the per-pod metric target, a number greater than 0. Unset: derived
/// from `containerConcurrency` (or 100 concurrent, 200 rps).
pub const AUTOSCALING_TARGET_ANNOTATION: &str = "autoscaling.knative.dev/target";
/// Template annotation: percentage of the target to aim for, 1 to 100 (default 70). Alias:
/// `autoscaling.knative.dev/targetUtilizationPercentage`.
pub const TARGET_UTILIZATION_ANNOTATION: &str =
    "autoscaling.knative.dev/target-utilization-percentage";
/// Template annotation: fewest pods, an integer ≥ 0 (default 0). Alias:
/// `autoscaling.knative.dev/minScale`.
pub const MIN_SCALE_ANNOTATION: &str = "autoscaling.knative.dev/min-scale";
/// Template annotation: most pods, an integer ≥ 0 where 0 is unbounded (the default). Alias:
/// `autoscaling.knative.dev/maxScale`.
pub const MAX_SCALE_ANNOTATION: &str = "autoscaling.knative.dev/max-scale";
/// Template annotation: pods a new revision starts with, an integer ≥ 0 (default 1). Alias:
/// `autoscaling.knative.dev/initialScale`.
pub const INITIAL_SCALE_ANNOTATION: &str = "autoscaling.knative.dev/initial-scale";
/// Template annotation: KPA stable window, a Go duration from `6s` to `1h` (default `60s`).
pub const WINDOW_ANNOTATION: &str = "autoscaling.knative.dev/window";
/// Template annotation: KPA panic window as a percentage of the stable window, 1 to 100
/// (default 10). Alias: `autoscaling.knative.dev/panicWindowPercentage`.
pub const PANIC_WINDOW_PERCENTAGE_ANNOTATION: &str =
    "autoscaling.knative.dev/panic-window-percentage";
/// Template annotation: KPA panic threshold as a percentage of the target, 110 to 1000
/// (default 200). Alias: `autoscaling.knative.dev/panicThresholdPercentage`.
pub const PANIC_THRESHOLD_PERCENTAGE_ANNOTATION: &str =
    "autoscaling.knative.dev/panic-threshold-percentage";
/// Template annotation: how long a lower scale must persist before it is applied, a Go
/// duration from `0s` to `1h` (default `0s` for KPA, `10s` for precise). Alias:
/// `autoscaling.knative.dev/scaleDownDelay`.
pub const SCALE_DOWN_DELAY_ANNOTATION: &str = "autoscaling.knative.dev/scale-down-delay";
/// Template annotation: how long the last pod is kept once the revision may scale to zero,
/// a Go duration ≥ `0s` (default `0s`).
pub const SCALE_TO_ZERO_RETENTION_ANNOTATION: &str =
    "autoscaling.knative.dev/scale-to-zero-pod-retention-period";
/// Template annotation: broker backlog (pending events) one pod is expected to absorb, an
/// integer > 0 (default 10).
pub const BACKLOG_TARGET_ANNOTATION: &str = "tidegate.dev/backlog-target";
/// Template annotation: pods kept beyond what demand asks for, an integer ≥ 0 (default 0).
pub const RESERVED_INSTANCES_ANNOTATION: &str = "tidegate.dev/reserved-instances";
/// Template annotation: requests the gateway queues per revision before refusing more, an
/// integer > 0 (default 10 000).
pub const QUEUE_DEPTH_ANNOTATION: &str = "tidegate.dev/queue-depth";

/// [`AUTOSCALING_CLASS_ANNOTATION`] value: Knative's Pod Autoscaler.
pub const KPA_CLASS: &str = "kpa.autoscaling.knative.dev";
/// [`AUTOSCALING_CLASS_ANNOTATION`] value: tidegate's exact in-flight + queued scaler.
pub const PRECISE_CLASS: &str = "precise.tidegate.dev";
/// [`AUTOSCALING_CLASS_ANNOTATION`] value: Kubernetes' HPA. Not supported: rejected.
pub const HPA_CLASS: &str = "hpa.autoscaling.knative.dev";

/// `serving.knative.dev/v1` Service: a template whose every change makes a new immutable
/// revision (`{name}-00001`, `{name}-00002`, …), and how traffic is split among revisions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Service {
    /// `serving.knative.dev/v1`.
    pub api_version: String,
    /// `Service`.
    pub kind: String,
    /// Name (a DNS label of at most 57 characters, so revision names fit in 63), namespace,
    /// labels, annotations.
    pub metadata: ObjectMeta,
    /// Template and traffic.
    pub spec: ServiceSpec,
    /// What the API server reports (`kubectl get -o yaml` output); accepted and ignored.
    #[serde(default, skip_serializing)]
    pub status: Option<serde_json::Value>,
}

/// `Service.spec`, also the `spec` of the Service inlined in a tidegate Trigger.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServiceSpec {
    /// What each revision runs.
    pub template: RevisionTemplateSpec,
    /// How requests are split among revisions; empty sends everything to the latest.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub traffic: Vec<TrafficTargetSpec>,
}

/// Metadata of an object embedded in another: the namespace is the container's.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EmbeddedMeta {
    /// For a revision template: the revision's name, which must start with `{service}-`.
    /// For a Service in a tidegate Trigger: the Service's name (default: the Trigger's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Free-form string labels; null is empty.
    #[serde(
        default,
        deserialize_with = "super::null_as_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub labels: BTreeMap<String, String>,
    /// Free-form string annotations (null is empty); on a revision template the `autoscaling.knative.dev/*`
    /// and `tidegate.dev/*` keys above tune scaling.
    #[serde(
        default,
        deserialize_with = "super::null_as_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub annotations: BTreeMap<String, String>,
}

/// `spec.template`: metadata and spec of the revisions to create.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RevisionTemplateSpec {
    /// Revision name, labels and the scaling annotations.
    #[serde(default)]
    pub metadata: EmbeddedMeta,
    /// Container, concurrency and timeout.
    pub spec: RevisionSpec,
}

/// `spec.template.spec`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RevisionSpec {
    /// Most requests one pod handles at once, ≥ 0; 0 (the default) is unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_concurrency: Option<i64>,
    /// Longest a request may take, in seconds, > 0; default 300.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<i64>,
    /// Exactly one container.
    #[serde(default)]
    pub containers: Vec<Container>,
}

/// One container of a revision. The local process runtime runs `command` + `args`;
/// Kubernetes mode runs `image`. At least one of the two is required.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Container {
    /// Container name; not used by tidegate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Container image, used in Kubernetes mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Program and its leading arguments; the local process runtime requires it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// Further arguments.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Environment variables; `PORT`, `K_SERVICE`, `K_CONFIGURATION` and `K_REVISION` are
    /// reserved (tidegate sets them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    /// At most one port: where the container listens for requests.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<ContainerPort>,
    /// When a pod is ready for requests; default: its port accepts TCP connections.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness_probe: Option<ProbeSpec>,
    /// Working directory of the process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// Kubernetes resource requests and limits; accepted and ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Value>,
    /// Kubernetes image pull policy; accepted and ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<String>,
}

/// One environment variable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EnvVar {
    /// Non-empty name.
    pub name: String,
    /// Value; default empty.
    #[serde(default)]
    pub value: String,
}

/// A port the container listens on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ContainerPort {
    /// 1 to 65535.
    pub container_port: i64,
    /// `http1` or `h2c` as in Knative; default `http1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `TCP`, the only protocol Knative accepts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
}

/// `readinessProbe`: exactly one of `httpGet` or `tcpSocket`, and its timing.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ProbeSpec {
    /// Ready when a GET answers 2xx or 3xx.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_get: Option<HttpGetAction>,
    /// Ready when a TCP connection is accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_socket: Option<TcpSocketAction>,
    /// Seconds before the first probe, ≥ 0; default 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_delay_seconds: Option<i64>,
    /// Seconds between probes, ≥ 0; unset or 0 probes aggressively, as Knative does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period_seconds: Option<i64>,
    /// Seconds one probe may take, > 0; default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<i64>,
    /// Failures in a row that make a ready pod unready, > 0; default 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_threshold: Option<i64>,
    /// Successes in a row that make a pod ready, > 0; default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_threshold: Option<i64>,
}

/// `readinessProbe.httpGet`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpGetAction {
    /// Request path; default `/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// 1 to 65535; default the container's port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i64>,
}

/// `readinessProbe.tcpSocket`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TcpSocketAction {
    /// 1 to 65535; default the container's port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i64>,
}

/// One entry of `spec.traffic`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TrafficTargetSpec {
    /// Share of requests, 0 to 100 (default 0: reachable only through its `tag`). The
    /// entries of a Service sum to 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<i64>,
    /// A revision of this Service (`{service}-…`); excludes `latestRevision: true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision_name: Option<String>,
    /// Follow the latest ready revision. Unset: true exactly when `revisionName` is unset,
    /// as Knative defaults it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest_revision: Option<bool>,
    /// Extra route `{tag}-{service}.{namespace}.{domain}` to this entry; a DNS label unique
    /// within the Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// Routing to another Configuration. Not supported: rejected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub configuration_name: Option<String>,
}
