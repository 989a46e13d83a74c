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
/// Template annotation: fewest pods started when scaling up from zero, an integer ≥ 1
/// (default 1). Alias: `autoscaling.knative.dev/activationScale`.
pub const ACTIVATION_SCALE_ANNOTATION: &str = "autoscaling.knative.dev/activation-scale";
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
/// Template annotation: reserved instances run while the revision is at zero and take the
/// first request after idle, an integer ≥ 0 (default 0).
pub const RESERVED_INSTANCES_ANNOTATION: &str = "tidegate.dev/reserved-instances";
/// Alibaba Cloud Knative's spelling of one reserved instance: `enable`.
pub const ALIYUN_RESERVE_INSTANCE_ANNOTATION: &str = "knative.aliyun.com/reserve-instance";
/// Template annotation: the reserved instances' `requests`/`limits` (`cpu`, `memory`), a YAML
/// or JSON object, in place of the serving container's.
pub const RESERVED_INSTANCE_RESOURCES_ANNOTATION: &str = "tidegate.dev/reserved-instance-resources";
/// Template annotation: requests one reserved instance takes at once, an integer ≥ 0 (0 =
/// unlimited; default: the revision's `containerConcurrency`).
pub const RESERVED_INSTANCE_CONCURRENCY_ANNOTATION: &str =
    "tidegate.dev/reserved-instance-concurrency";
/// Scheduled scaling windows: a YAML or JSON list of `{start, end, timezone, minScale,
/// maxScale}`.
pub const SCHEDULE_ANNOTATION: &str = "tidegate.dev/schedule";
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
    /// Fields the API server fills in (`kubectl get -o yaml` prints them, `creationTimestamp:
    /// null` among them): accepted and ignored.
    #[serde(default, skip_serializing)]
    pub namespace: Option<Value>,
    #[serde(default, skip_serializing)]
    pub uid: Option<Value>,
    #[serde(default, skip_serializing)]
    pub resource_version: Option<Value>,
    #[serde(default, skip_serializing)]
    pub generation: Option<Value>,
    #[serde(default, skip_serializing)]
    pub creation_timestamp: Option<Value>,
    #[serde(default, skip_serializing)]
    pub deletion_timestamp: Option<Value>,
    #[serde(default, skip_serializing)]
    pub deletion_grace_period_seconds: Option<Value>,
    #[serde(default, skip_serializing)]
    pub managed_fields: Option<Value>,
    #[serde(default, skip_serializing)]
    pub owner_references: Option<Value>,
    #[serde(default, skip_serializing)]
    pub finalizers: Option<Value>,
    #[serde(default, skip_serializing)]
    pub self_link: Option<Value>,
    #[serde(default, skip_serializing)]
    pub generate_name: Option<Value>,
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

/// `spec.template.spec`: Knative's revision fields beside a Kubernetes pod spec.
///
/// The pod spec is kept as written and checked when the set is validated against the fields
/// Knative's webhook accepts for a revision (including those behind
/// `knative-serving/config-features` flags); unknown fields are located errors there.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RevisionSpec {
    /// Most requests one pod handles at once, ≥ 0; 0 is unlimited. Default:
    /// `container-concurrency` of `knative-serving/config-defaults` (0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_concurrency: Option<i64>,
    /// Longest a request may take, in seconds, > 0. Default: `revision-timeout-seconds` of
    /// `knative-serving/config-defaults` (300).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<i64>,
    /// Longest wait for the first byte of a response, in seconds, > 0; at most
    /// `timeoutSeconds`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_start_timeout_seconds: Option<i64>,
    /// Longest a request may go without a byte read or written, in seconds, ≥ 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout_seconds: Option<i64>,
    /// Every other field: the Kubernetes `PodSpec` (`containers`, `volumes`,
    /// `serviceAccountName`, …).
    #[serde(flatten)]
    pub pod: serde_json::Map<String, Value>,
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
