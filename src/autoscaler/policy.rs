//! The autoscaler's own policy: what one revision's scaling decisions depend on.
//!
//! Knowing nothing of manifests, so it can be built in tests and the simulator directly; the
//! annotations (`autoscaling.knative.dev/*`, `tidegate.dev/*`) map onto it elsewhere. Defaults
//! follow knative/serving `pkg/autoscaler/config/config.go`.

use std::time::Duration;

/// Knative's defaults, defined once with the manifest types (the simulator and the gateway read
/// the same values).
pub use triggers::snapshot::{
    DEFAULT_BACKLOG_TARGET, DEFAULT_CONCURRENCY_TARGET, DEFAULT_INITIAL_SCALE,
    DEFAULT_KPA_SCALE_DOWN_DELAY, DEFAULT_MAX_SCALE_DOWN_RATE, DEFAULT_MAX_SCALE_UP_RATE,
    DEFAULT_PANIC_THRESHOLD_PERCENTAGE, DEFAULT_PANIC_WINDOW_PERCENTAGE,
    DEFAULT_PRECISE_SCALE_DOWN_DELAY, DEFAULT_RPS_TARGET, DEFAULT_SCALE_TO_ZERO_GRACE,
    DEFAULT_TARGET_UTILIZATION, DEFAULT_WINDOW as DEFAULT_STABLE_WINDOW,
    MIN_METRIC_TARGET as TARGET_MIN,
};

/// How often KPA decides (Knative's decider tick).
pub const DEFAULT_TICK: Duration = Duration::from_secs(2);

/// Which decision rules a revision follows (`autoscaling.knative.dev/class`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// `kpa.autoscaling.knative.dev`: Knative's windowed averages, panic mode, 2 s tick.
    Kpa,
    /// `precise.tidegate.dev`: exact demand over `containerConcurrency`, on every change.
    Precise,
    /// `hpa.autoscaling.knative.dev`: the Kubernetes HPA's algorithm on per-pod cpu or memory
    /// samples ([`super::hpa`]), with scale to zero.
    Hpa,
}

/// What KPA averages (`autoscaling.knative.dev/metric`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Metric {
    /// Requests in flight plus queued, time-averaged per second.
    Concurrency,
    /// Requests arriving per second.
    Rps,
    /// The HPA class: cpu in millicores per pod (`target` is millicores).
    Cpu,
    /// The HPA class: resident memory per pod (`target` is bytes).
    Memory,
}

/// Scaling policy of one revision.
#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    pub class: Class,
    pub metric: Metric,
    /// Per-pod target before utilization: `containerConcurrency`, else 100 (concurrency) or 200
    /// (rps) (`autoscaling.knative.dev/target`).
    pub target: f64,
    /// Fraction of `target` aimed for, in (0, 1] (`autoscaling.knative.dev/target-utilization-percentage` / 100).
    pub target_utilization: f64,
    /// Hard per-pod limit enforced by dispatch; 0 = unlimited.
    pub container_concurrency: u32,
    /// Never fewer pods than this (`autoscaling.knative.dev/min-scale`).
    pub min_scale: u32,
    /// Never more pods than this (`autoscaling.knative.dev/max-scale`); `None` (or `Some(0)`, as
    /// Knative's 0) = unbounded.
    pub max_scale: Option<u32>,
    /// Pods wanted until the revision first had that many ready (`autoscaling.knative.dev/initial-scale`).
    pub initial_scale: u32,
    /// KPA's averaging window (`autoscaling.knative.dev/window`).
    pub stable_window: Duration,
    /// KPA's panic window as a percentage of `stable_window`.
    pub panic_window_percentage: f64,
    /// KPA panics when the panic window wants this percentage of the ready pods.
    pub panic_threshold_percentage: f64,
    /// KPA grows to at most `ceil(rate × ready)` per decision.
    pub max_scale_up_rate: f64,
    /// KPA shrinks to no less than `floor(ready / rate)` per decision.
    pub max_scale_down_rate: f64,
    /// KPA keeps one pod this long after the stable window first shows no demand.
    pub scale_to_zero_grace: Duration,
    /// Decreases wait until the lower value held for this long (`autoscaling.knative.dev/scale-down-delay`).
    pub scale_down_delay: Duration,
    /// Broker messages pending per pod (`tidegate.dev/backlog-target`).
    pub backlog_target: u32,
    /// Reserved instances run while the decision is 0 pods and take the first requests after
    /// idle until a regular pod is ready; no decision includes them (the launcher starts and
    /// retires them).
    pub reserved_instances: u32,
    /// KPA's decision interval.
    pub tick: Duration,
    /// `tidegate.dev/schedule`: windows that adjust `min_scale`/`max_scale` while open
    /// ([`Policy::at`]).
    pub schedule: std::sync::Arc<[triggers::schedule::Window]>,
    /// The HPA class: `autoscaling.knative.dev/window` when written, both stabilization
    /// windows (Kubernetes' defaults otherwise).
    pub hpa_window: Option<Duration>,
    /// The HPA class on cpu: the serving container's `requests.cpu` in millicores, which
    /// utilization is a percentage of.
    pub cpu_request_millis: Option<f64>,
}

impl Policy {
    /// Knative's KPA with its defaults: concurrency metric, target 100 × 0.7.
    pub fn kpa_default() -> Self {
        Self {
            class: Class::Kpa,
            metric: Metric::Concurrency,
            target: DEFAULT_CONCURRENCY_TARGET,
            target_utilization: DEFAULT_TARGET_UTILIZATION,
            container_concurrency: 0,
            min_scale: 0,
            max_scale: None,
            initial_scale: DEFAULT_INITIAL_SCALE,
            stable_window: DEFAULT_STABLE_WINDOW,
            panic_window_percentage: DEFAULT_PANIC_WINDOW_PERCENTAGE,
            panic_threshold_percentage: DEFAULT_PANIC_THRESHOLD_PERCENTAGE,
            max_scale_up_rate: DEFAULT_MAX_SCALE_UP_RATE,
            max_scale_down_rate: DEFAULT_MAX_SCALE_DOWN_RATE,
            scale_to_zero_grace: DEFAULT_SCALE_TO_ZERO_GRACE,
            scale_down_delay: DEFAULT_KPA_SCALE_DOWN_DELAY,
            backlog_target: DEFAULT_BACKLOG_TARGET,
            reserved_instances: 0,
            tick: DEFAULT_TICK,
            schedule: std::sync::Arc::new([]),
            hpa_window: None,
            cpu_request_millis: None,
        }
    }

    /// `hpa.autoscaling.knative.dev` on cpu: `target_percent` of `request_millis` per pod,
    /// min-scale 1 as Knative's HPA class.
    pub fn hpa_cpu(request_millis: f64, target_percent: f64) -> Self {
        Self {
            class: Class::Hpa,
            metric: Metric::Cpu,
            target: request_millis * target_percent / 100.0,
            target_utilization: 1.0,
            min_scale: 1,
            cpu_request_millis: Some(request_millis),
            ..Self::kpa_default()
        }
    }

    /// The HPA's knobs in force (after [`Policy::at`]): resource, target, bounds, windows.
    pub fn hpa(&self) -> super::hpa::HpaPolicy {
        let resource = match self.metric {
            Metric::Memory => super::hpa::Resource::Memory,
            _ => super::hpa::Resource::Cpu,
        };
        let mut hpa = super::hpa::HpaPolicy::new(resource, self.target);
        if let Some(window) = self.hpa_window {
            hpa = hpa.with_window(window);
        }
        hpa.min_scale = self.min_scale;
        hpa.max_scale = self.max_scale.filter(|m| *m > 0);
        hpa
    }

    /// `precise.tidegate.dev` for pods taking `container_concurrency` requests each (0 =
    /// unlimited, then the KPA target applies).
    pub fn precise_default(container_concurrency: u32) -> Self {
        Self {
            class: Class::Precise,
            scale_down_delay: DEFAULT_PRECISE_SCALE_DOWN_DELAY,
            ..Self::kpa_default().with_container_concurrency(container_concurrency)
        }
    }

    /// Sets `containerConcurrency`; for the concurrency metric the target becomes it too, as
    /// Knative does when no target annotation is given.
    pub fn with_container_concurrency(mut self, container_concurrency: u32) -> Self {
        self.container_concurrency = container_concurrency;
        if self.metric == Metric::Concurrency && container_concurrency > 0 {
            self.target = f64::from(container_concurrency);
        }
        self
    }

    /// Per-pod value KPA aims for: `max(0.01, target × utilization)`.
    pub fn effective_target(&self) -> f64 {
        (self.target * self.target_utilization).max(TARGET_MIN)
    }

    /// KPA's panic window: `stable_window × panic_window_percentage / 100`.
    pub fn panic_window(&self) -> Duration {
        self.stable_window
            .mul_f64((self.panic_window_percentage / 100.0).clamp(0.0, 1.0))
    }

    /// Clamps `pods` into `[min_scale, max_scale]`.
    /// The policy in force at wall-clock `at`: the Service's bounds composed with the open
    /// schedule windows ([`super::schedule::bounds`]); itself when there is no schedule.
    pub fn at(&self, at: jiff::Timestamp) -> std::borrow::Cow<'_, Policy> {
        if self.schedule.is_empty() {
            return std::borrow::Cow::Borrowed(self);
        }
        let (min_scale, max_scale) =
            super::schedule::bounds(self.min_scale, self.max_scale, &self.schedule, at);
        if (min_scale, max_scale) == (self.min_scale, self.max_scale.filter(|m| *m > 0)) {
            return std::borrow::Cow::Borrowed(self);
        }
        std::borrow::Cow::Owned(Policy {
            min_scale,
            max_scale,
            ..self.clone()
        })
    }

    pub fn bound(&self, pods: u32) -> u32 {
        let pods = pods.max(self.min_scale);
        match self.max_scale {
            Some(max) if max > 0 => pods.min(max),
            _ => pods,
        }
    }
}

/// Pods wanted for a broker backlog: `ceil(backlog / backlog_target)` (a target of 0 counts as
/// 1).
pub fn backlog_pods(backlog: u64, policy: &Policy) -> u32 {
    let per_pod = u64::from(policy.backlog_target.max(1));
    u32::try_from(backlog.div_ceil(per_pod)).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kpa_defaults_follow_knative() {
        let p = Policy::kpa_default();
        assert_eq!(p.effective_target(), 70.0);
        assert_eq!(p.panic_window(), Duration::from_secs(6));
        assert_eq!(p.initial_scale, 1);
        assert_eq!(p.scale_to_zero_grace, Duration::from_secs(30));
        assert_eq!(p.tick, Duration::from_secs(2));
    }

    #[test]
    fn container_concurrency_sets_the_concurrency_target() {
        let p = Policy::kpa_default().with_container_concurrency(10);
        assert_eq!(p.target, 10.0);
        assert!((p.effective_target() - 7.0).abs() < 1e-9);
        let unlimited = Policy::kpa_default().with_container_concurrency(0);
        assert_eq!(unlimited.target, 100.0);
        let rps = Policy {
            metric: Metric::Rps,
            target: DEFAULT_RPS_TARGET,
            ..Policy::kpa_default()
        }
        .with_container_concurrency(10);
        assert_eq!(rps.target, 200.0, "rps keeps its own target");
    }

    #[test]
    fn precise_defaults() {
        let p = Policy::precise_default(4);
        assert_eq!(p.class, Class::Precise);
        assert_eq!(p.container_concurrency, 4);
        assert_eq!(p.scale_down_delay, Duration::from_secs(10));
        assert_eq!(p.backlog_target, 10);
    }

    #[test]
    fn target_has_a_floor() {
        let p = Policy {
            target: 0.0,
            ..Policy::kpa_default()
        };
        assert_eq!(p.effective_target(), TARGET_MIN);
    }

    #[test]
    fn bounds_and_backlog() {
        let p = Policy {
            min_scale: 2,
            max_scale: Some(5),
            ..Policy::kpa_default()
        };
        assert_eq!((p.bound(0), p.bound(3), p.bound(9)), (2, 3, 5));
        assert_eq!(Policy::kpa_default().bound(1000), 1000);
        assert_eq!(backlog_pods(0, &p), 0);
        assert_eq!(backlog_pods(1, &p), 1);
        assert_eq!(backlog_pods(21, &p), 3);
    }
}
