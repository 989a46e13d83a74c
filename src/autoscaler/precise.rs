//! `precise.tidegate.dev`: pods for exactly the demand the gateway sees, on every change.
//!
//! `desired = max(ceil((in_flight + queued) / containerConcurrency), ceil(backlog / backlog_target))`
//! (the backlog is JetStream's `num_pending + num_ack_pending` or Kafka's lag, which already
//! count the deliveries in flight, so the two are not added)
//! (with `containerConcurrency` 0 the per-pod target is KPA's `target × utilization`), bounded by
//! min/max scale. Increases apply at once. A decrease waits: the answer is the largest value
//! wanted during the last `scale_down_delay`, so a revision goes to zero once it has been idle for
//! that long (and `min_scale` is 0). The first decision wants at least `initial_scale`.
//! Reserved instances are not counted here; the actuator adds them.

use std::collections::VecDeque;

use tokio::time::Instant;

use super::Demand;
use super::policy::{Policy, backlog_pods};

/// Precise state of one revision: the recent wants that can still hold a decrease back.
#[derive(Clone, Debug, Default)]
pub struct Precise {
    /// Strictly descending values with ascending expiry; the back is the current want
    /// (`expires == None`) unless it was superseded by a smaller one.
    held: VecDeque<Held>,
    started: bool,
}

#[derive(Clone, Copy, Debug)]
struct Held {
    pods: u32,
    /// When this want stops holding the decision up: `scale_down_delay` after it was
    /// superseded. `None` while it is the current want.
    expires: Option<Instant>,
}

impl Precise {
    pub fn new() -> Self {
        Self::default()
    }

    /// Pods wanted at `now` for `demand`.
    pub fn decide(&mut self, now: Instant, demand: Demand, policy: &Policy) -> u32 {
        let mut want = policy.bound(demand_pods(demand, policy));
        if !self.started {
            self.started = true;
            want = want.max(policy.bound(policy.initial_scale));
        }
        self.push(now, want, policy);
        while self
            .held
            .front()
            .is_some_and(|h| h.expires.is_some_and(|e| e <= now))
        {
            self.held.pop_front();
        }
        self.held.front().map_or(want, |h| h.pods)
    }

    /// When a held decrease expires, so the caller can decide again then; `None` while nothing
    /// is held.
    pub fn next_wakeup(&self) -> Option<Instant> {
        self.held.front().and_then(|h| h.expires)
    }

    fn push(&mut self, now: Instant, pods: u32, policy: &Policy) {
        if let Some(current) = self.held.back_mut().filter(|h| h.expires.is_none()) {
            if current.pods == pods {
                return;
            }
            current.expires = Some(now + policy.scale_down_delay);
        }
        // A smaller or equal want that expires no later than the new one can never be the answer.
        while self.held.back().is_some_and(|h| h.pods <= pods) {
            self.held.pop_back();
        }
        self.held.push_back(Held {
            pods,
            expires: None,
        });
    }
}

/// Pods for the demand alone, before bounds and holding.
pub fn demand_pods(demand: Demand, policy: &Policy) -> u32 {
    let requests = demand.requests();
    let for_requests = if policy.container_concurrency > 0 {
        u32::try_from(requests.div_ceil(u64::from(policy.container_concurrency)))
            .unwrap_or(u32::MAX)
    } else {
        // Saturating float-to-int conversion.
        (requests as f64 / policy.effective_target()).ceil() as u32
    };
    for_requests.max(backlog_pods(demand.backlog, policy))
}

#[cfg(test)]
#[path = "precise_tests.rs"]
mod tests;
