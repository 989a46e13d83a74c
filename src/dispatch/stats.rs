//! Per-trigger counters: metric handles resolved once, read back by the admin API.

use std::sync::atomic::{AtomicI64, Ordering};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;

use crate::metrics::{
    AttemptLabels, AttemptOutcome, DropLabels, DropReason, InvalidRecordLabels, Metrics,
    TriggerLabels,
};

/// Counters of one trigger. The Prometheus handles are the single source of truth: the admin
/// API reads the same numbers `/metrics` exports.
pub struct TriggerCounters {
    pub delivered: Counter,
    pub retries: Counter,
    pub dead_lettered: Counter,
    pub filtered: Counter,
    pub redelivered: Counter,
    pub replies: Counter,
    pub latency: Histogram,
    attempts: [Counter; 5],
    dropped: [Counter; 4],
    invalid_records: prometheus_client::metrics::family::Family<InvalidRecordLabels, Counter>,
    labels: TriggerLabels,
    in_flight: AtomicI64,
}

const ATTEMPT_OUTCOMES: [AttemptOutcome; 5] = [
    AttemptOutcome::Success,
    AttemptOutcome::Retryable,
    AttemptOutcome::Rejected,
    AttemptOutcome::Timeout,
    AttemptOutcome::NetworkError,
];
const DROP_REASONS: [DropReason; 4] = [
    DropReason::RetriesExhausted,
    DropReason::TtlExpired,
    DropReason::ReplyNotStored,
    DropReason::InvalidRecord,
];

impl TriggerCounters {
    pub fn new(metrics: &Metrics, namespace: &str, trigger: &str) -> Self {
        let labels = TriggerLabels {
            namespace: namespace.to_owned(),
            trigger: trigger.to_owned(),
        };
        let family = |f: &prometheus_client::metrics::family::Family<TriggerLabels, Counter>| {
            f.get_or_create(&labels).clone()
        };
        Self {
            delivered: family(&metrics.delivered),
            retries: family(&metrics.retries),
            dead_lettered: family(&metrics.dead_lettered),
            filtered: family(&metrics.filtered),
            redelivered: family(&metrics.redelivered),
            replies: family(&metrics.replies),
            latency: metrics.delivery_latency.get_or_create(&labels).clone(),
            attempts: ATTEMPT_OUTCOMES.map(|outcome| {
                metrics
                    .delivery_attempts
                    .get_or_create(&AttemptLabels {
                        namespace: namespace.to_owned(),
                        trigger: trigger.to_owned(),
                        outcome,
                    })
                    .clone()
            }),
            dropped: DROP_REASONS.map(|reason| {
                metrics
                    .dropped
                    .get_or_create(&DropLabels {
                        namespace: namespace.to_owned(),
                        trigger: trigger.to_owned(),
                        reason,
                    })
                    .clone()
            }),
            invalid_records: metrics.invalid_records.clone(),
            labels,
            in_flight: AtomicI64::new(0),
        }
    }

    /// Counts a record that is not a CloudEvent (rare: resolves its label set each time).
    pub fn invalid_record(&self, reason: &str) {
        self.invalid_records
            .get_or_create(&InvalidRecordLabels {
                namespace: self.labels.namespace.clone(),
                trigger: self.labels.trigger.clone(),
                reason: reason.to_owned(),
            })
            .inc();
    }

    pub fn attempt(&self, outcome: AttemptOutcome) {
        if let Some(i) = ATTEMPT_OUTCOMES.iter().position(|o| *o == outcome) {
            self.attempts[i].inc();
        }
    }

    pub fn drop_event(&self, reason: DropReason) {
        if let Some(i) = DROP_REASONS.iter().position(|r| *r == reason) {
            self.dropped[i].inc();
        }
    }

    pub fn dropped_total(&self) -> u64 {
        self.dropped.iter().map(Counter::get).sum()
    }

    /// Deliveries started and not yet finished.
    pub fn in_flight(&self) -> u64 {
        u64::try_from(self.in_flight.load(Ordering::Relaxed)).unwrap_or(0)
    }

    /// Counts a delivery as in flight until the guard drops.
    pub fn start(&self) -> InFlight<'_> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(&self.in_flight)
    }
}

/// Decrements the trigger's in-flight count when dropped, whatever path the delivery took.
pub struct InFlight<'a>(&'a AtomicI64);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
