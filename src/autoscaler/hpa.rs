//! `hpa.autoscaling.knative.dev`: the Kubernetes Horizontal Pod Autoscaler's algorithm on CPU or
//! memory, as pure functions of per-pod samples, a policy and `now`.
//!
//! - [`replicas`] is the replica calculator (kubernetes `pkg/controller/podautoscaler/
//!   replica_calculator.go`): `ceil(pods × usage / target)` over the pods that count, no change
//!   inside the tolerance band, pods not ready (or, for cpu, still in their initialization
//!   period) left out on the way up, pods without a sample counted at target on the way down
//!   and at zero on the way up, and the result re-checked against the tolerance and the
//!   direction once those pods are filled in.
//! - [`Hpa::decide`] adds the HPA's behaviour (`horizontal.go`): a stabilization window per
//!   direction (scale up takes the lowest recommendation in its window, scale down the
//!   highest), then the rate policies over the scale events of their period (defaults: up by at
//!   most max(4 pods, 100 %) per 15 s with no stabilization, down by at most 100 % per 15 s
//!   with a 300 s window), then `min-scale`/`max-scale`.
//! - Beyond Knative's HPA class, `min-scale: "0"` is honoured: with no request in flight or
//!   queued for as long as the scale-down window, the revision goes to zero, and at zero the
//!   first request wants one pod (usage cannot say anything about a revision with no pods;
//!   the gateway holds the request meanwhile, as for the precise class).

use std::time::Duration;

use tokio::time::Instant;

use super::Demand;

/// Which resource the class scales on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resource {
    /// Usage in millicores; the target is a percentage of the container's cpu request.
    Cpu,
    /// Usage in bytes of resident memory; the target is MiB per pod.
    Memory,
}

/// One direction's scaling rules (`behavior.scaleUp` / `behavior.scaleDown`).
#[derive(Clone, Debug, PartialEq)]
pub struct Rules {
    /// `stabilizationWindowSeconds`.
    pub stabilization: Duration,
    /// Each policy: how much may change within its period; the largest allowed change wins
    /// (`selectPolicy: Max`, the default).
    pub policies: Vec<RatePolicy>,
}

/// One `behavior.*.policies` entry.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RatePolicy {
    /// At most this many pods per period.
    Pods { value: u32, period: Duration },
    /// At most this percentage of the pods at the period's start, per period.
    Percent { value: u32, period: Duration },
}

/// The knobs of the HPA class, with Kubernetes' defaults.
#[derive(Clone, Debug, PartialEq)]
pub struct HpaPolicy {
    pub resource: Resource,
    /// Usage per pod aimed for, in the resource's unit (millicores: the request × the target
    /// percentage / 100; memory: bytes).
    pub target: f64,
    /// `|ratio − 1|` at or under this changes nothing (0.1).
    pub tolerance: f64,
    /// CPU samples of a pod younger than this count only once it is ready and its sample was
    /// taken after it became ready (5 min).
    pub cpu_initialization: Duration,
    /// A pod not ready within this of its start is taken as never having been ready (30 s).
    pub initial_readiness_delay: Duration,
    /// How long one usage sample covers (1 s): an initializing pod's sample counts once it
    /// was taken a whole window after the pod became ready.
    pub sample_window: Duration,
    pub scale_up: Rules,
    pub scale_down: Rules,
    pub min_scale: u32,
    /// `None` is unbounded.
    pub max_scale: Option<u32>,
}

/// Kubernetes' scale-up default: max(4 pods, 100 %) per 15 s, no stabilization.
pub fn default_scale_up() -> Rules {
    Rules {
        stabilization: Duration::ZERO,
        policies: vec![
            RatePolicy::Percent {
                value: 100,
                period: Duration::from_secs(15),
            },
            RatePolicy::Pods {
                value: 4,
                period: Duration::from_secs(15),
            },
        ],
    }
}

/// Kubernetes' scale-down default: 100 % per 15 s, stabilization 300 s.
pub fn default_scale_down() -> Rules {
    Rules {
        stabilization: Duration::from_secs(300),
        policies: vec![RatePolicy::Percent {
            value: 100,
            period: Duration::from_secs(15),
        }],
    }
}

impl HpaPolicy {
    /// Kubernetes' defaults for `resource` at `target` usage per pod; `min-scale` 1 as
    /// Knative's HPA class.
    pub fn new(resource: Resource, target: f64) -> Self {
        Self {
            resource,
            target,
            tolerance: 0.1,
            cpu_initialization: Duration::from_secs(300),
            initial_readiness_delay: Duration::from_secs(30),
            sample_window: Duration::from_secs(1),
            scale_up: default_scale_up(),
            scale_down: default_scale_down(),
            min_scale: 1,
            max_scale: None,
        }
    }

    /// `autoscaling.knative.dev/window`: both stabilization windows, as Knative's HPA class
    /// sets them.
    pub fn with_window(mut self, window: Duration) -> Self {
        self.scale_up.stabilization = window;
        self.scale_down.stabilization = window;
        self
    }
}

/// What the actuator knows of one pod.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PodSample {
    /// Passing its readiness probe now.
    pub ready: bool,
    /// When its process started.
    pub started: Instant,
    /// When it last became ready or not ready (its Ready condition's transition).
    pub ready_changed: Instant,
    /// The last usage sample and when it was taken; `None` when there is none yet.
    pub usage: Option<(f64, Instant)>,
}

/// The replica calculator: the pods wanted for `pods` (all of the revision's pods, `current`
/// of them wanted now), or `current` when no pod that counts has a sample.
pub fn replicas(pods: &[PodSample], current: u32, policy: &HpaPolicy, now: Instant) -> u32 {
    // Group: ready with a sample, unready, missing (no sample).
    let mut ready: Vec<f64> = Vec::new();
    let mut unready = 0usize;
    let mut missing = 0usize;
    for pod in pods {
        let Some((usage, sampled)) = pod.usage else {
            missing += 1;
            continue;
        };
        let counts = match policy.resource {
            Resource::Cpu if pod.started + policy.cpu_initialization > now => {
                // Initializing: counts once ready, with a sample of a whole window since.
                pod.ready && sampled >= pod.ready_changed + policy.sample_window
            }
            Resource::Cpu => {
                // Past initialization: only a pod that never became ready is left out.
                pod.ready || pod.started + policy.initial_readiness_delay <= pod.ready_changed
            }
            Resource::Memory => true,
        };
        if counts {
            ready.push(usage);
        } else {
            unready += 1;
        }
    }
    if ready.is_empty() || policy.target <= 0.0 {
        return current;
    }
    let target = policy.target;
    let ratio = ready.iter().sum::<f64>() / (ready.len() as f64 * target);
    let scale_up_with_unready = unready > 0 && ratio > 1.0;
    if !scale_up_with_unready && missing == 0 {
        if (1.0 - ratio).abs() <= policy.tolerance {
            return current;
        }
        return ceil(ratio * ready.len() as f64);
    }
    // Fill in the pods left out, against the direction they could push.
    let mut usages = ready.clone();
    if missing > 0 {
        let fill = if ratio < 1.0 { target } else { 0.0 };
        if ratio != 1.0 {
            usages.extend(std::iter::repeat_n(fill, missing));
        }
    }
    if scale_up_with_unready {
        usages.extend(std::iter::repeat_n(0.0, unready));
    }
    let new_ratio = usages.iter().sum::<f64>() / (usages.len() as f64 * target);
    if (1.0 - new_ratio).abs() <= policy.tolerance
        || (ratio < 1.0 && new_ratio > 1.0)
        || (ratio > 1.0 && new_ratio < 1.0)
    {
        // Too small a change, or the filled-in pods turned the direction around.
        return current;
    }
    let wanted = ceil(new_ratio * usages.len() as f64);
    if (new_ratio < 1.0 && wanted > current) || (new_ratio > 1.0 && wanted < current) {
        return current;
    }
    wanted
}

fn ceil(x: f64) -> u32 {
    // `as` saturates: a ratio of infinity (a zero target is refused earlier) stays bounded.
    x.ceil().max(0.0) as u32
}

/// HPA state of one revision: recent recommendations and scale events.
#[derive(Clone, Debug, Default)]
pub struct Hpa {
    /// Unstabilized recommendations, oldest first.
    recommendations: Vec<(Instant, u32)>,
    /// `(when, pods added)` and `(when, pods removed)`.
    ups: Vec<(Instant, u32)>,
    downs: Vec<(Instant, u32)>,
    /// Since when no request has been in flight or queued.
    idle_since: Option<Instant>,
    /// The first decision seeds the recommendations with the current scale, so a restart of
    /// the gateway does not scale down at once (as the HPA controller seeds them).
    seeded: bool,
}

impl Hpa {
    pub fn new() -> Self {
        Self::default()
    }

    /// Pods wanted at `now`: `current` pods are wanted today, `pods` are their samples,
    /// `demand` is what the gateway holds for the revision.
    pub fn decide(
        &mut self,
        now: Instant,
        pods: &[PodSample],
        current: u32,
        demand: Demand,
        policy: &HpaPolicy,
    ) -> u32 {
        let idle = demand.requests() == 0 && demand.backlog == 0;
        self.idle_since = match (idle, self.idle_since) {
            (true, Some(since)) => Some(since),
            (true, None) => Some(now),
            (false, _) => None,
        };
        let desired = if current == 0 {
            // No pod, no usage: demand alone decides, at once (the request waits meanwhile).
            let wanted = if idle { 0 } else { policy.min_scale.max(1) };
            self.bound(wanted, policy)
        } else {
            let recommendation = replicas(pods, current, policy, now);
            let stabilized = self.stabilize(now, recommendation, current, policy);
            let limited = self.rate_limit(now, stabilized, current, policy);
            let mut desired = self.bound(limited, policy);
            // To zero only once no request was held for a whole scale-down window, and then
            // whatever the usage says: an idle process still uses memory and a few ticks of
            // cpu, which would keep a recommendation of one pod forever.
            let quiet = self
                .idle_since
                .is_some_and(|since| since + policy.scale_down.stabilization <= now);
            if policy.min_scale == 0 && quiet {
                desired = 0;
            } else if desired == 0 {
                desired = 1;
            }
            desired
        };
        self.record(now, current, desired, policy);
        desired
    }

    fn bound(&self, pods: u32, policy: &HpaPolicy) -> u32 {
        let pods = pods.max(policy.min_scale);
        match policy.max_scale {
            Some(max) if max > 0 => pods.min(max),
            _ => pods,
        }
    }

    /// `stabilizeRecommendationWithBehaviors`: the recommendation brought within the lowest
    /// one of the scale-up window and the highest one of the scale-down window.
    fn stabilize(
        &mut self,
        now: Instant,
        recommendation: u32,
        current: u32,
        policy: &HpaPolicy,
    ) -> u32 {
        let up_cutoff = now.checked_sub(policy.scale_up.stabilization);
        let down_cutoff = now.checked_sub(policy.scale_down.stabilization);
        if !self.seeded {
            self.seeded = true;
            self.recommendations.push((now, current));
        }
        let after = |t: Instant, cutoff: Option<Instant>| cutoff.is_none_or(|c| t > c);
        let mut up = recommendation;
        let mut down = recommendation;
        for &(t, r) in &self.recommendations {
            if after(t, up_cutoff) {
                up = up.min(r);
            }
            if after(t, down_cutoff) {
                down = down.max(r);
            }
        }
        let longest = policy
            .scale_up
            .stabilization
            .max(policy.scale_down.stabilization);
        self.recommendations
            .retain(|&(t, _)| now.checked_sub(longest).is_none_or(|c| t > c));
        self.recommendations.push((now, recommendation));
        current.max(up).min(down)
    }

    /// `convertDesiredReplicasWithBehaviorRate`: the change bounded by the rate policies over
    /// the scale events of each policy's period.
    fn rate_limit(&self, now: Instant, desired: u32, current: u32, policy: &HpaPolicy) -> u32 {
        let changed_within = |events: &[(Instant, u32)], period: Duration| -> u32 {
            events
                .iter()
                .filter(|(t, _)| now.checked_sub(period).is_none_or(|c| *t > c))
                .map(|(_, n)| *n)
                .sum()
        };
        let period_start = |period: Duration| -> u32 {
            (current + changed_within(&self.downs, period))
                .saturating_sub(changed_within(&self.ups, period))
        };
        if desired > current {
            let limit = policy
                .scale_up
                .policies
                .iter()
                .map(|p| match *p {
                    RatePolicy::Pods { value, period } => {
                        period_start(period).saturating_add(value)
                    }
                    RatePolicy::Percent { value, period } => {
                        ceil(f64::from(period_start(period)) * (1.0 + f64::from(value) / 100.0))
                    }
                })
                .max()
                .unwrap_or(u32::MAX)
                .max(current);
            desired.min(limit)
        } else if desired < current {
            let limit = policy
                .scale_down
                .policies
                .iter()
                .map(|p| match *p {
                    RatePolicy::Pods { value, period } => {
                        period_start(period).saturating_sub(value)
                    }
                    RatePolicy::Percent { value, period } => {
                        // Kubernetes truncates here (and rounds up on the way up).
                        (f64::from(period_start(period)) * (1.0 - f64::from(value) / 100.0))
                            .max(0.0) as u32
                    }
                })
                .min()
                .unwrap_or(0)
                .min(current);
            desired.max(limit)
        } else {
            desired
        }
    }

    fn record(&mut self, now: Instant, current: u32, desired: u32, policy: &HpaPolicy) {
        let longest = policy
            .scale_up
            .policies
            .iter()
            .chain(&policy.scale_down.policies)
            .map(|p| match *p {
                RatePolicy::Pods { period, .. } | RatePolicy::Percent { period, .. } => period,
            })
            .max()
            .unwrap_or_default();
        let keep = |t: &Instant| now.checked_sub(longest).is_none_or(|c| *t > c);
        self.ups.retain(|(t, _)| keep(t));
        self.downs.retain(|(t, _)| keep(t));
        if desired > current {
            self.ups.push((now, desired - current));
        } else if desired < current {
            self.downs.push((now, current - desired));
        }
    }
}

#[cfg(test)]
#[path = "hpa_tests.rs"]
mod tests;
