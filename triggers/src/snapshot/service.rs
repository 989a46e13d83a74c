//! Validated Knative Services: the fully defaulted revision template each revision is made
//! from, and the traffic split. The `DEFAULT_*` constants are the reference for every default.

use std::collections::BTreeMap;
use std::time::Duration;

use super::PodTemplate;
use crate::manifest::{HPA_CLASS, KPA_CLASS, PRECISE_CLASS};

/// `containerConcurrency` when unset: 0, no limit per pod.
pub const DEFAULT_CONTAINER_CONCURRENCY: u32 = 0;
/// `timeoutSeconds` when unset: 300 s, Knative's `revision-timeout-seconds`.
pub const DEFAULT_REVISION_TIMEOUT: Duration = Duration::from_secs(300);

/// `readinessProbe.httpGet.path` when unset.
pub const DEFAULT_PROBE_PATH: &str = "/";
/// `readinessProbe.initialDelaySeconds` when unset.
pub const DEFAULT_PROBE_INITIAL_DELAY: Duration = Duration::ZERO;
/// `readinessProbe.periodSeconds` when unset: zero, meaning probe aggressively (every
/// [`AGGRESSIVE_PROBE_INTERVAL`](super::AGGRESSIVE_PROBE_INTERVAL)) until the pod is ready,
/// as Knative's queue-proxy does. Liveness and startup probes default to Kubernetes' 10 s
/// ([`DEFAULT_LIVENESS_PERIOD`]).
pub const DEFAULT_PROBE_PERIOD: Duration = Duration::ZERO;
/// `periodSeconds` of a liveness or startup probe when unset (Kubernetes' default).
pub const DEFAULT_LIVENESS_PERIOD: Duration = Duration::from_secs(10);
/// `readinessProbe.timeoutSeconds` when unset.
pub const DEFAULT_PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// `readinessProbe.failureThreshold` when unset.
pub const DEFAULT_PROBE_FAILURE_THRESHOLD: u32 = 3;
/// `readinessProbe.successThreshold` when unset.
pub const DEFAULT_PROBE_SUCCESS_THRESHOLD: u32 = 1;

/// Autoscaler of a Service written as a `serving.knative.dev/v1` Service. Services created
/// by tidegate Triggers default to [`ScalingClass::Precise`] instead.
pub const DEFAULT_SCALING_CLASS: ScalingClass = ScalingClass::Kpa;
/// `autoscaling.knative.dev/metric` when unset.
pub const DEFAULT_SCALING_METRIC: ScalingMetric = ScalingMetric::Concurrency;
/// Per-pod concurrency target when neither `autoscaling.knative.dev/target` nor
/// `containerConcurrency` sets one (Knative's `container-concurrency-target-default`).
pub const DEFAULT_CONCURRENCY_TARGET: f64 = 100.0;
/// Per-pod requests-per-second target when the metric is `rps` and
/// `autoscaling.knative.dev/target` is unset (Knative's `requests-per-second-target-default`).
pub const DEFAULT_RPS_TARGET: f64 = 200.0;
/// Smallest effective target, whatever the annotations say (Knative's `TargetMin`).
pub const MIN_METRIC_TARGET: f64 = 0.01;
/// `autoscaling.knative.dev/target-utilization-percentage` when unset, as a fraction.
pub const DEFAULT_TARGET_UTILIZATION: f64 = 0.7;
/// `autoscaling.knative.dev/min-scale` when unset.
pub const DEFAULT_MIN_SCALE: u32 = 0;
/// `autoscaling.knative.dev/max-scale` when unset (or 0): unbounded.
pub const DEFAULT_MAX_SCALE: Option<u32> = None;
/// `autoscaling.knative.dev/initial-scale` when unset.
pub const DEFAULT_INITIAL_SCALE: u32 = 1;
/// `autoscaling.knative.dev/window` when unset: the KPA stable window.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(60);
/// Shortest `autoscaling.knative.dev/window` accepted.
pub const MIN_WINDOW: Duration = Duration::from_secs(6);
/// Longest `autoscaling.knative.dev/window` accepted.
pub const MAX_WINDOW: Duration = Duration::from_secs(3_600);
/// `autoscaling.knative.dev/panic-window-percentage` when unset.
pub const DEFAULT_PANIC_WINDOW_PERCENTAGE: f64 = 10.0;
/// `autoscaling.knative.dev/panic-threshold-percentage` when unset.
pub const DEFAULT_PANIC_THRESHOLD_PERCENTAGE: f64 = 200.0;
/// `autoscaling.knative.dev/scale-down-delay` when unset and the class is KPA.
pub const DEFAULT_KPA_SCALE_DOWN_DELAY: Duration = Duration::ZERO;
/// `autoscaling.knative.dev/scale-down-delay` when unset and the class is precise: decreases
/// wait this long so a brief lull does not stop pods that are needed again at once.
pub const DEFAULT_PRECISE_SCALE_DOWN_DELAY: Duration = Duration::from_secs(10);
/// Longest `autoscaling.knative.dev/scale-down-delay` accepted.
pub const MAX_SCALE_DOWN_DELAY: Duration = Duration::from_secs(3_600);
/// `autoscaling.knative.dev/scale-to-zero-pod-retention-period` when unset.
pub const DEFAULT_SCALE_TO_ZERO_RETENTION: Duration = Duration::ZERO;
/// `max-scale-up-rate` of `config-autoscaler` when unset: the KPA grows to at most
/// ceil(rate × ready pods) per decision.
pub const DEFAULT_MAX_SCALE_UP_RATE: f64 = 1000.0;
/// `max-scale-down-rate` of `config-autoscaler` when unset: the KPA shrinks to no less than
/// floor(ready pods / rate) per decision.
pub const DEFAULT_MAX_SCALE_DOWN_RATE: f64 = 2.0;
/// `scale-to-zero-grace-period` of `config-autoscaler` when unset.
pub const DEFAULT_SCALE_TO_ZERO_GRACE: Duration = Duration::from_secs(30);
/// `autoscaling.knative.dev/activation-scale` when unset: pods started when scaling up from
/// zero.
pub const DEFAULT_ACTIVATION_SCALE: u32 = 1;
/// `tidegate.dev/backlog-target` when unset: pending events one pod absorbs.
pub const DEFAULT_BACKLOG_TARGET: u32 = 10;
/// `tidegate.dev/reserved-instances` when unset.
pub const DEFAULT_RESERVED_INSTANCES: u32 = 0;
/// `tidegate.dev/queue-depth` when unset: requests queued per revision.
pub const DEFAULT_QUEUE_DEPTH: usize = 10_000;

/// A Service: written as `serving.knative.dev/v1`, or created by a tidegate Trigger.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceConfig {
    /// `metadata.namespace` (for a created Service, the Trigger's).
    pub namespace: String,
    /// `metadata.name` (for a created Service, `spec.service.metadata.name` or the
    /// Trigger's name).
    pub name: String,
    /// Name of the tidegate Trigger (same namespace) that created and owns the Service.
    pub owner: Option<String>,
    /// What each revision runs, fully defaulted.
    pub template: RevisionTemplate,
    /// `spec.template.metadata.name`: the name of the revision this template makes
    /// (prefixed `{name}-`); `None` lets the gateway number revisions `{name}-00001`, …
    pub template_name: Option<String>,
    /// Stable hash of `template` and `template_name`: a new value means a new revision.
    /// Unaffected by `traffic`, labels or annotations of the Service itself. Stable for a
    /// given template; do not persist it across tidegate versions.
    pub fingerprint: u64,
    /// How requests are split; empty sends 100 % to the latest revision.
    pub traffic: Vec<TrafficTarget>,
    /// What older revisions named in `traffic` run, by revision name, where it is known
    /// (Kubernetes mode: Knative's Revision objects); a revision not listed runs `template`.
    pub revisions: BTreeMap<String, RevisionTemplate>,
}

/// The template a revision is made from.
#[derive(Debug, Clone, PartialEq)]
pub struct RevisionTemplate {
    /// `spec.template.metadata.annotations`, as written.
    pub annotations: BTreeMap<String, String>,
    /// `spec.template.metadata.labels`.
    pub labels: BTreeMap<String, String>,
    /// Most requests one pod holds at once; 0 is unlimited.
    pub container_concurrency: u32,
    /// Longest a request may take.
    pub timeout: Duration,
    /// `responseStartTimeoutSeconds`: longest wait for the first byte of a response.
    pub response_start_timeout: Option<Duration>,
    /// `idleTimeoutSeconds`: longest a request may go without a byte read or written.
    pub idle_timeout: Option<Duration>,
    /// What each pod runs.
    pub pod: PodTemplate,
    /// Autoscaler settings from the annotations.
    pub scaling: ScalingSpec,
}

/// Which autoscaler decides a revision's scale.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ScalingClass {
    /// `kpa.autoscaling.knative.dev`: Knative's Pod Autoscaler, on a 2 s tick.
    Kpa,
    /// `precise.tidegate.dev`: ceil((in flight + queued) / containerConcurrency), on every
    /// change.
    Precise,
    /// `hpa.autoscaling.knative.dev`: the Kubernetes HPA on cpu or memory. In Kubernetes mode
    /// Knative keeps it (a real HPA); the local runtime does not run it yet.
    Hpa,
}

/// What the KPA measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ScalingMetric {
    /// Requests in flight per pod.
    Concurrency,
    /// Requests per second per pod.
    Rps,
    /// HPA class: cpu, the target a percentage of the container's `requests.cpu`.
    Cpu,
    /// HPA class: resident memory, the target in MiB per pod.
    Memory,
}

/// Autoscaler settings of a revision, fully defaulted.
#[derive(Debug, Clone, PartialEq)]
pub struct ScalingSpec {
    /// Which autoscaler.
    pub class: ScalingClass,
    /// What the KPA measures.
    pub metric: ScalingMetric,
    /// `autoscaling.knative.dev/target`; `None` derives it (see
    /// [`RevisionTemplate::metric_total`]).
    pub target: Option<f64>,
    /// Fraction of the target to aim for, 0.01 to 1.
    pub target_utilization: f64,
    /// Fewest pods.
    pub min_scale: u32,
    /// Most pods; `None` is unbounded.
    pub max_scale: Option<u32>,
    /// Pods a new revision starts with.
    pub initial_scale: u32,
    /// KPA stable window.
    pub window: Duration,
    /// `autoscaling.knative.dev/window` was written (the HPA class then uses it as both
    /// stabilization windows).
    pub window_set: bool,
    /// KPA panic window, as a percentage of `window`.
    pub panic_window_percentage: f64,
    /// KPA panic threshold, as a percentage of the target.
    pub panic_threshold_percentage: f64,
    /// How long a lower scale must persist before it is applied.
    pub scale_down_delay: Duration,
    /// How long the last pod is kept once the revision may scale to zero.
    pub scale_to_zero_retention: Duration,
    /// Broker backlog one pod is expected to absorb.
    pub backlog_target: u32,
    /// Reserved instances: run while the revision is at zero, take the first request after
    /// idle, stop once a regular pod is ready, never count toward the desired scale.
    pub reserved_instances: u32,
    /// Requests one reserved instance takes at once (`None`: the revision's
    /// `containerConcurrency`; `Some(0)`: unlimited).
    pub reserved_instance_concurrency: Option<u32>,
    /// `tidegate.dev/reserved-instance-resources`, in place of the serving container's
    /// resources on reserved instances.
    pub reserved_instance_resources: Option<crate::snapshot::Resources>,
    /// `tidegate.dev/schedule`: windows that raise the floor and may lower the ceiling.
    pub schedule: Vec<crate::schedule::Window>,
    /// Requests queued per revision before more are refused.
    pub queue_depth: usize,
    /// Fewest pods started when scaling up from zero.
    pub activation_scale: u32,
    /// Whether the revision may go to zero pods (`enable-scale-to-zero` of
    /// `config-autoscaler`); when false at least one pod stays.
    pub scale_to_zero: bool,
    /// KPA: most growth per decision, as a factor of the ready pods.
    pub max_scale_up_rate: f64,
    /// KPA: most shrinkage per decision, as a divisor of the ready pods.
    pub max_scale_down_rate: f64,
    /// KPA: how long one pod stays once the revision may go to zero.
    pub scale_to_zero_grace: Duration,
    /// Per-pod concurrency target when neither the annotation nor `containerConcurrency`
    /// sets one (`container-concurrency-target-default`).
    pub concurrency_target_default: f64,
    /// Per-pod rps target when the annotation does not set one
    /// (`requests-per-second-target-default`).
    pub rps_target_default: f64,
}

/// Which revision a traffic entry sends to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TrafficRevision {
    /// The latest ready revision, following template changes.
    Latest,
    /// One named revision of this Service.
    Named(String),
}

/// One entry of a Service's traffic split.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TrafficTarget {
    /// Where this share goes.
    pub revision: TrafficRevision,
    /// Share of the Service's requests, 0 to 100; the entries sum to 100.
    pub percent: u32,
    /// Extra host `{tag}-{service}.{namespace}.{domain}` routed only to this entry.
    pub tag: Option<String>,
}

impl ScalingClass {
    /// The `autoscaling.knative.dev/class` value naming this class.
    pub fn annotation_value(self) -> &'static str {
        match self {
            ScalingClass::Kpa => KPA_CLASS,
            ScalingClass::Precise => PRECISE_CLASS,
            ScalingClass::Hpa => HPA_CLASS,
        }
    }
}

impl ScalingSpec {
    /// The defaults for `class`: only the scale-down delay differs between classes.
    pub fn for_class(class: ScalingClass) -> Self {
        Self {
            class,
            metric: DEFAULT_SCALING_METRIC,
            target: None,
            target_utilization: DEFAULT_TARGET_UTILIZATION,
            min_scale: DEFAULT_MIN_SCALE,
            max_scale: DEFAULT_MAX_SCALE,
            initial_scale: DEFAULT_INITIAL_SCALE,
            window: DEFAULT_WINDOW,
            panic_window_percentage: DEFAULT_PANIC_WINDOW_PERCENTAGE,
            panic_threshold_percentage: DEFAULT_PANIC_THRESHOLD_PERCENTAGE,
            scale_down_delay: match class {
                ScalingClass::Kpa | ScalingClass::Hpa => DEFAULT_KPA_SCALE_DOWN_DELAY,
                ScalingClass::Precise => DEFAULT_PRECISE_SCALE_DOWN_DELAY,
            },
            scale_to_zero_retention: DEFAULT_SCALE_TO_ZERO_RETENTION,
            window_set: false,
            reserved_instance_concurrency: None,
            reserved_instance_resources: None,
            backlog_target: DEFAULT_BACKLOG_TARGET,
            reserved_instances: DEFAULT_RESERVED_INSTANCES,
            schedule: Vec::new(),
            queue_depth: DEFAULT_QUEUE_DEPTH,
            activation_scale: DEFAULT_ACTIVATION_SCALE,
            scale_to_zero: true,
            max_scale_up_rate: DEFAULT_MAX_SCALE_UP_RATE,
            max_scale_down_rate: DEFAULT_MAX_SCALE_DOWN_RATE,
            scale_to_zero_grace: DEFAULT_SCALE_TO_ZERO_GRACE,
            concurrency_target_default: DEFAULT_CONCURRENCY_TARGET,
            rps_target_default: DEFAULT_RPS_TARGET,
        }
    }
}

impl Default for ScalingSpec {
    /// The KPA defaults ([`DEFAULT_SCALING_CLASS`]).
    fn default() -> Self {
        Self::for_class(DEFAULT_SCALING_CLASS)
    }
}

impl RevisionTemplate {
    /// The per-pod metric value the KPA treats as full, before utilization (Knative's
    /// `total`): the target annotation, capped at `containerConcurrency` for the concurrency
    /// metric; without the annotation, `containerConcurrency` (or
    /// [`DEFAULT_CONCURRENCY_TARGET`] when unlimited) for concurrency and
    /// [`DEFAULT_RPS_TARGET`] for rps.
    pub fn metric_total(&self) -> f64 {
        let concurrency = f64::from(self.container_concurrency);
        let limited = self.container_concurrency > 0;
        match (self.scaling.metric, self.scaling.target) {
            (ScalingMetric::Concurrency, Some(target)) if limited => target.min(concurrency),
            (_, Some(target)) => target,
            (ScalingMetric::Concurrency, None) if limited => concurrency,
            (ScalingMetric::Concurrency, None) => self.scaling.concurrency_target_default,
            (ScalingMetric::Rps, None) => self.scaling.rps_target_default,
            // The HPA class's targets are not request counts.
            (ScalingMetric::Cpu | ScalingMetric::Memory, None) => 0.0,
        }
    }

    /// The per-pod metric value the KPA aims for: [`Self::metric_total`] × utilization, at
    /// least [`MIN_METRIC_TARGET`].
    pub fn metric_target(&self) -> f64 {
        (self.metric_total() * self.scaling.target_utilization).max(MIN_METRIC_TARGET)
    }
}

impl ServiceConfig {
    /// The revision name for the `generation`-th template (1-based): `template_name` when
    /// set, else `{name}-00001`-style.
    pub fn revision_name(&self, generation: u64) -> String {
        match &self.template_name {
            Some(name) => name.clone(),
            None => format!("{}-{generation:05}", self.name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::ContainerSpec;

    fn template(
        container_concurrency: u32,
        metric: ScalingMetric,
        target: Option<f64>,
    ) -> RevisionTemplate {
        RevisionTemplate {
            annotations: BTreeMap::new(),
            labels: BTreeMap::new(),
            container_concurrency,
            timeout: DEFAULT_REVISION_TIMEOUT,
            response_start_timeout: None,
            idle_timeout: None,
            pod: PodTemplate::single(ContainerSpec::command(vec!["app".into()])),
            scaling: ScalingSpec {
                metric,
                target,
                ..ScalingSpec::default()
            },
        }
    }

    #[test]
    fn metric_target_resolves_as_knative() {
        use ScalingMetric::{Concurrency, Rps};
        let cases = [
            (0, Concurrency, None, 100.0),
            (10, Concurrency, None, 10.0),
            (10, Concurrency, Some(25.0), 10.0),
            (10, Concurrency, Some(4.0), 4.0),
            (0, Concurrency, Some(4.0), 4.0),
            (0, Rps, None, 200.0),
            (10, Rps, Some(50.0), 50.0),
        ];
        for (cc, metric, target, total) in cases {
            let t = template(cc, metric, target);
            assert_eq!(t.metric_total(), total, "{cc} {metric:?} {target:?}");
            assert!((t.metric_target() - total * 0.7).abs() < 1e-9);
        }
        let tiny = template(0, Concurrency, Some(0.001));
        assert_eq!(tiny.metric_target(), MIN_METRIC_TARGET);
    }

    #[test]
    fn class_defaults_differ_only_in_scale_down_delay() {
        let kpa = ScalingSpec::default();
        let precise = ScalingSpec::for_class(ScalingClass::Precise);
        assert_eq!(kpa.class, ScalingClass::Kpa);
        assert_eq!(kpa.scale_down_delay, Duration::ZERO);
        assert_eq!(precise.scale_down_delay, Duration::from_secs(10));
        assert_eq!(
            ScalingSpec {
                class: ScalingClass::Kpa,
                scale_down_delay: Duration::ZERO,
                ..precise
            },
            kpa
        );
        assert_eq!(
            ScalingClass::Precise.annotation_value(),
            "precise.tidegate.dev"
        );
    }
}
