//! Knative's KPA (`kpa.autoscaling.knative.dev`) as a pure state machine.
//!
//! Two halves, as in knative/serving:
//! - the decider (`pkg/autoscaler/scaling/autoscaler.go`, here [`Kpa::decide_observed`]): stable
//!   and panic averages over the target give `ceil(observed / target)`, limited to
//!   `floor(ready / max_down_rate) ..= ceil(max_up_rate × ready)` with `ready ≥ 1`; panic mode
//!   starts when the panic window wants `threshold` times the ready pods, never scales down, and
//!   ends after a stable window without crossing; a scale-down delay keeps the largest decision of
//!   the delay window;
//! - the scaler (`pkg/reconciler/autoscaling/kpa/scaler.go`, here [`Kpa::bound`]): min/max
//!   scale, initial scale until the revision first had that many ready pods, and scale to zero
//!   only after the decider said 0 for `scale_to_zero_grace` (one pod stays meanwhile). Since the
//!   stable average reaches 0 only after a whole window without demand, and a revision stays at
//!   least a stable window after it became active, an idle revision goes to zero a stable window
//!   plus the grace (60 s + 30 s) after its last request.
//!
//! Metrics arrive once a second through [`Kpa::record`]: for concurrency the time-averaged
//! requests in flight plus queued during that second, for rps the requests that arrived in it.
//! Nothing here reads a clock: every call takes `now`.

use std::time::Duration;

use tokio::time::Instant;

use super::policy::Policy;
use super::window::{AverageWindow, MaxWindow};

/// Bucket width of the metric windows (Knative `BucketSize`).
pub const BUCKET: Duration = Duration::from_secs(1);

/// One KPA decision.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Decision {
    /// Pods wanted, after rate limits, panic, delay, bounds and the scale-to-zero grace.
    pub desired: u32,
    /// Panic mode is on.
    pub panic: bool,
    /// Average metric over the stable window.
    pub observed_stable: f64,
    /// Average metric over the panic window.
    pub observed_panic: f64,
}

/// KPA state of one revision.
#[derive(Clone, Debug)]
pub struct Kpa {
    origin: Instant,
    stable: AverageWindow,
    panic: AverageWindow,
    /// Last time the panic threshold was crossed while panicking.
    panic_since: Option<Instant>,
    max_panic_pods: u32,
    delay: Option<MaxWindow>,
    /// Since when the revision has had ready pods (Knative's PodAutoscaler `Active`).
    active_since: Option<Instant>,
    /// When the decider first said 0 (after bounds) while active: the PodAutoscaler went
    /// inactive and the grace period started.
    zero_since: Option<Instant>,
    initialized: bool,
}

impl Kpa {
    /// A revision that has `ready_pods` ready at `now`. As in Knative, an autoscaler that starts
    /// over more than one pod starts in panic mode, so losing the metric history does not scale
    /// it down before the windows refill.
    pub fn new(policy: &Policy, now: Instant, ready_pods: u32) -> Self {
        let stable = buckets(policy.stable_window, BUCKET);
        let panic = buckets(policy.panic_window(), BUCKET);
        let delay = (!policy.scale_down_delay.is_zero())
            .then(|| MaxWindow::new(buckets(policy.scale_down_delay, tick(policy))));
        Self {
            origin: now,
            stable: AverageWindow::new(stable),
            panic: AverageWindow::new(panic),
            panic_since: (ready_pods > 1).then_some(now),
            max_panic_pods: ready_pods,
            delay,
            active_since: None,
            zero_since: None,
            initialized: ready_pods >= policy.initial_scale,
        }
    }

    /// Records the metric for the second holding `now`: concurrency (in flight + queued, averaged
    /// over the second) or requests that arrived in it. When two values land in the same second
    /// the larger counts (a scale-from-zero poke may come before the regular sample).
    pub fn record(&mut self, now: Instant, value: f64) {
        let second = self.second(now);
        self.stable.record(second, value);
        self.panic.record(second, value);
    }

    /// Decides from the recorded windows.
    pub fn decide(&mut self, now: Instant, ready_pods: u32, policy: &Policy) -> Decision {
        let second = self.second(now);
        let stable = self.stable.average(second);
        let panic = self.panic.average(second);
        let decided = self.decide_observed(now, ready_pods, stable, panic, policy);
        Decision {
            desired: self.bound(now, ready_pods, decided.desired, policy),
            ..decided
        }
    }

    /// Knative's decider on given stable and panic averages: rate limits, panic mode and the
    /// scale-down delay, without bounds or the scale-to-zero grace.
    pub fn decide_observed(
        &mut self,
        now: Instant,
        ready_pods: u32,
        observed_stable: f64,
        observed_panic: f64,
        policy: &Policy,
    ) -> Decision {
        let ready = f64::from(ready_pods.max(1));
        let max_up = (policy.max_scale_up_rate * ready).ceil();
        let max_down = (ready / policy.max_scale_down_rate.max(1.0)).floor();
        let target = policy.effective_target();
        let stable_pods = (observed_stable / target).ceil();
        let panic_pods = (observed_panic / target).ceil();
        let desired_stable = to_pods(stable_pods.max(max_down).min(max_up));
        let desired_panic = to_pods(panic_pods.max(max_down).min(max_up));

        let over_threshold = panic_pods / ready >= policy.panic_threshold_percentage / 100.0;
        match self.panic_since {
            _ if over_threshold => self.panic_since = Some(now),
            Some(since) if since + policy.stable_window < now => {
                self.panic_since = None;
                self.max_panic_pods = 0;
            }
            _ => {}
        }

        let mut desired = desired_stable;
        if self.panic_since.is_some() {
            // Provision for the larger of the two, and never below the panic high-water mark.
            desired = desired.max(desired_panic);
            self.max_panic_pods = self.max_panic_pods.max(desired);
            desired = self.max_panic_pods;
        }
        if let Some(delay) = &mut self.delay {
            let index = tick_index(self.origin, now, tick(policy));
            desired = delay.record(index, desired);
        }
        Decision {
            desired,
            panic: self.panic_since.is_some(),
            observed_stable,
            observed_panic,
        }
    }

    /// The scaler's part: min/max scale; initial scale until the revision first had
    /// `initial_scale` ready pods; scale to zero only once the revision has been active (had
    /// ready pods) for a stable window and `scale_to_zero_grace` has passed since the decider
    /// first said 0 — meanwhile one pod stays. A revision without ready pods gets 0 at once:
    /// there is nothing to keep.
    pub fn bound(&mut self, now: Instant, ready_pods: u32, desired: u32, policy: &Policy) -> u32 {
        if ready_pods == 0 {
            self.active_since = None;
        } else if self.active_since.is_none() {
            self.active_since = Some(now);
        }
        let mut desired = policy.bound(desired);
        if !self.initialized {
            if ready_pods >= policy.initial_scale {
                self.initialized = true;
            } else if policy.min_scale < policy.initial_scale {
                desired = desired.max(policy.bound(policy.initial_scale));
            }
        }
        if desired > 0 {
            self.zero_since = None;
            return desired;
        }
        let Some(active_since) = self.active_since else {
            self.zero_since = None;
            return 0;
        };
        if now.duration_since(active_since) < policy.stable_window {
            return 1;
        }
        let since = *self.zero_since.get_or_insert(now);
        if now.duration_since(since) >= policy.scale_to_zero_grace {
            0
        } else {
            1
        }
    }

    /// Panic mode is on.
    pub fn in_panic(&self) -> bool {
        self.panic_since.is_some()
    }

    fn second(&self, now: Instant) -> i64 {
        tick_index(self.origin, now, BUCKET)
    }
}

/// `ceil(window / width)`, at least 1.
fn buckets(window: Duration, width: Duration) -> usize {
    let width = width.as_micros().max(1);
    usize::try_from(window.as_micros().div_ceil(width))
        .unwrap_or(usize::MAX)
        .max(1)
}

fn tick(policy: &Policy) -> Duration {
    policy.tick.max(Duration::from_millis(1))
}

/// Index of the `width`-wide bucket holding `now`, counted from `origin`.
fn tick_index(origin: Instant, now: Instant, width: Duration) -> i64 {
    let elapsed = now.saturating_duration_since(origin).as_micros();
    i64::try_from(elapsed / width.as_micros().max(1)).unwrap_or(i64::MAX)
}

/// Float pod counts to `u32`, saturating (NaN → 0).
fn to_pods(x: f64) -> u32 {
    // `as` saturates for floats and maps NaN to 0.
    x as u32
}

#[cfg(test)]
#[path = "kpa_tests.rs"]
mod tests;
