//! The thin per-revision task: reads demand, runs the class's pure decision, applies the result.
//!
//! - KPA: samples the metric once a second into its windows and decides every `tick`; when the
//!   revision has no ready pod and demand arrives (`changed` fires), it records that demand and
//!   decides at once, so scale from zero never waits for a tick.
//! - Precise: decides on every `changed` notification, when a held decrease expires
//!   ([`Precise::next_wakeup`]), and every `tick` as a safety net for changes nobody signalled
//!   (a broker backlog that grows without a request).
//!
//! For both, a broker backlog wants at least `ceil(backlog / backlog_target)` pods. The
//! [`Scaler`] hears only changes of the desired count (and the first decision). Producers signal
//! `changed` with [`Notify::notify_one`], so a signal that arrives while the task is deciding is
//! kept for the next turn.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::{Instant, MissedTickBehavior, interval, interval_at, sleep_until};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::Demand;
use super::hpa::{Hpa, PodSample};
use super::kpa::{BUCKET, Kpa};
use super::policy::{Class, Metric, Policy, backlog_pods};
use super::precise::Precise;

/// Applies a desired pod count (local processes, Kubernetes scale subresource).
pub trait Scaler: Send + Sync {
    fn scale(&self, desired: u32);
}

/// Where the task reads one revision's exact counts.
pub trait DemandSource: Send + Sync {
    /// Requests in flight and queued, and broker backlog, right now.
    fn demand(&self) -> Demand;
    /// Pods ready to take requests.
    fn ready_pods(&self) -> u32;
    /// Requests that ever arrived for the revision (monotonic); the rps metric counts its
    /// increase per second.
    fn requests_total(&self) -> u64;
    /// The time-weighted average of in flight + queued since the previous call, if the source
    /// integrates it (Knative's queue-proxy does); otherwise KPA samples `demand()` once a second.
    fn average_concurrency(&self) -> Option<f64> {
        None
    }
    /// The HPA class: every pod of the revision with its usage sampled now (called once a
    /// second). Sources that cannot sample return none, and the HPA then keeps its scale.
    fn pod_samples(&self, _now: Instant) -> Vec<PodSample> {
        Vec::new()
    }
    /// The pod count last asked of the actuator, when the source knows it (after
    /// `activation-scale` raised a decision).
    fn applied_scale(&self) -> Option<u32> {
        None
    }
    /// The class's current decision in words (KPA's mode, the precise demand and the bound that
    /// limits it), for the admin API and the dashboard. Called when it changes.
    fn explain(&self, _decision: String) {}
}

/// Says `decision` to `source` when it differs from the last one said.
fn explain(source: &dyn DemandSource, last: &mut Option<String>, decision: String) {
    if last.as_deref() != Some(decision.as_str()) {
        source.explain(decision.clone());
        *last = Some(decision);
    }
}

/// Which bound of `policy` turns `wanted` into `bounded`, in words.
fn bound_note(wanted: u32, bounded: u32, policy: &Policy) -> String {
    if bounded < wanted {
        format!(
            ", held to max-scale {}",
            policy.max_scale.unwrap_or(bounded)
        )
    } else if bounded > wanted {
        format!(", raised to min-scale {}", policy.min_scale.max(bounded))
    } else {
        String::new()
    }
}

/// Runs the autoscaler of one revision until `stop` is cancelled.
pub async fn run(
    policy: Policy,
    source: Arc<dyn DemandSource>,
    scaler: Arc<dyn Scaler>,
    changed: Arc<Notify>,
    stop: CancellationToken,
) {
    let applier = Applier { scaler, last: None };
    match policy.class {
        Class::Kpa => run_kpa(policy, source, applier, changed, stop).await,
        Class::Precise => run_precise(policy, source, applier, changed, stop).await,
        Class::Hpa => run_hpa(policy, source, applier, changed, stop).await,
    }
}

/// Tells the scaler about changes only.
struct Applier {
    scaler: Arc<dyn Scaler>,
    last: Option<u32>,
}

impl Applier {
    fn apply(&mut self, desired: u32) {
        if self.last != Some(desired) {
            debug!(desired, previous = ?self.last, "Scaling.");
            self.last = Some(desired);
            self.scaler.scale(desired);
        }
    }
}

async fn run_kpa(
    policy: Policy,
    source: Arc<dyn DemandSource>,
    mut applier: Applier,
    changed: Arc<Notify>,
    stop: CancellationToken,
) {
    let start = Instant::now();
    let mut kpa = Kpa::new(&policy, start, source.ready_pods());
    let mut sample = interval_at(start + BUCKET, BUCKET);
    sample.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut tick = interval_at(start, policy.tick.max(Duration::from_millis(1)));
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut counted = source.requests_total();
    loop {
        tokio::select! {
            biased;
            () = stop.cancelled() => return,
            now = sample.tick() => {
                let total = source.requests_total();
                let arrived = total.saturating_sub(counted);
                let value = match (policy.metric, source.average_concurrency()) {
                    (Metric::Concurrency, Some(average)) => average,
                    _ => metric_value(&policy, source.demand(), arrived),
                };
                counted = total;
                // Like Knative, no data while the revision is at zero and idle, so the windows
                // start afresh when it wakes after a long sleep.
                if value > 0.0 || source.ready_pods() > 0 {
                    kpa.record(now, value);
                }
            }
            now = tick.tick() => {
                let policy = policy.at(jiff::Timestamp::now());
                decide_kpa(&mut kpa, now, source.as_ref(), &policy, &mut applier);
            }
            () = changed.notified() => {
                let demand = source.demand();
                if source.ready_pods() == 0 && !demand.is_idle() {
                    let now = Instant::now();
                    let arrived = source.requests_total().saturating_sub(counted);
                    kpa.record(now, metric_value(&policy, demand, arrived));
                    let policy = policy.at(jiff::Timestamp::now());
                    decide_kpa(&mut kpa, now, source.as_ref(), &policy, &mut applier);
                }
            }
        }
    }
}

fn decide_kpa(
    kpa: &mut Kpa,
    now: Instant,
    source: &dyn DemandSource,
    policy: &Policy,
    applier: &mut Applier,
) {
    let decision = kpa.decide(now, source.ready_pods(), policy);
    let desired = with_backlog(decision.desired, source.demand().backlog, policy);
    source.explain(format!(
        "{} mode: stable average {:.1}, panic average {:.1} → {desired} pods",
        if decision.panic { "panic" } else { "stable" },
        decision.observed_stable,
        decision.observed_panic,
    ));
    debug!(
        desired,
        panic = decision.panic,
        stable = decision.observed_stable,
        panic_value = decision.observed_panic,
        "KPA decided."
    );
    applier.apply(desired);
}

/// A class's decision raised to the pods a broker backlog wants (within the policy's bounds).
fn with_backlog(decided: u32, backlog: u64, policy: &Policy) -> u32 {
    let backlog = policy.bound(backlog_pods(backlog, policy));
    if backlog > 0 {
        decided.max(backlog)
    } else {
        decided
    }
}

/// The KPA metric for one second: requests in flight plus queued, or requests that arrived.
fn metric_value(policy: &Policy, demand: Demand, arrived: u64) -> f64 {
    match policy.metric {
        Metric::Concurrency | Metric::Cpu | Metric::Memory => demand.requests() as f64,
        Metric::Rps => arrived as f64,
    }
}

/// The HPA class: samples every pod once a second and decides on each sample; at zero pods a
/// request is noticed at once (`changed`) so it waits only for the pod's start.
async fn run_hpa(
    policy: Policy,
    source: Arc<dyn DemandSource>,
    mut applier: Applier,
    changed: Arc<Notify>,
    stop: CancellationToken,
) {
    let mut hpa = Hpa::new();
    let initial = policy
        .at(jiff::Timestamp::now())
        .bound(policy.initial_scale);
    applier.apply(initial);
    let mut sample = interval_at(Instant::now() + BUCKET, BUCKET);
    sample.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        let now = tokio::select! {
            biased;
            () = stop.cancelled() => return,
            now = sample.tick() => now,
            () = changed.notified() => {
                if applier.last != Some(0) || source.demand().is_idle() {
                    continue;
                }
                Instant::now()
            }
        };
        let policy = policy.at(jiff::Timestamp::now());
        let hpa_policy = policy.hpa();
        // Sampling reads /proc: off the async threads, timed where it reads.
        let sampler = Arc::clone(&source);
        let pods = tokio::task::spawn_blocking(move || sampler.pod_samples(Instant::now()))
            .await
            .unwrap_or_default();
        let now = now.max(Instant::now());
        // The scale in force, which activation-scale may have raised above the decision.
        let current = source
            .applied_scale()
            .unwrap_or_else(|| applier.last.unwrap_or(initial));
        applier.last = Some(current);
        let demand = source.demand();
        let decided = hpa.decide(now, &pods, current, demand, &hpa_policy);
        let desired = with_backlog(decided, demand.backlog, &policy);
        source.explain(format!(
            "{} pods sampled at {current} → {desired}",
            pods.len()
        ));
        debug!(desired, current, pods = pods.len(), "HPA decided.");
        applier.apply(desired);
    }
}

async fn run_precise(
    policy: Policy,
    source: Arc<dyn DemandSource>,
    mut applier: Applier,
    changed: Arc<Notify>,
    stop: CancellationToken,
) {
    let mut precise = Precise::new();
    // Explained only when the demand or the decision changed (this loop runs at every change).
    let (mut last_demand, mut said) = (None, None);
    let mut refresh = interval(policy.tick.max(Duration::from_millis(1)));
    refresh.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        let wakeup = precise.next_wakeup();
        tokio::select! {
            biased;
            () = stop.cancelled() => return,
            () = changed.notified() => {}
            () = sleep_until(wakeup.unwrap_or_else(Instant::now)), if wakeup.is_some() => {}
            _ = refresh.tick() => {}
        }
        // Schedule windows open and close on the wall clock; the refresh tick notices.
        let policy = policy.at(jiff::Timestamp::now());
        let demand = source.demand();
        let desired = precise.decide(Instant::now(), demand, &policy);
        if last_demand != Some((demand, desired)) {
            last_demand = Some((demand, desired));
            let wanted = super::precise::demand_pods(demand, &policy);
            explain(
                source.as_ref(),
                &mut said,
                format!(
                    "demand {} requests + {} backlog → {wanted} pods{} → {desired}",
                    demand.requests(),
                    demand.backlog,
                    bound_note(wanted, policy.bound(wanted), &policy),
                ),
            );
        }
        applier.apply(desired);
    }
}

#[cfg(test)]
#[path = "task_tests.rs"]
mod tests;
