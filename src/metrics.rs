//! Prometheus metrics, named `tidegate_<subsystem>_<name>_<unit>[_total]`.
//!
//! Label values come from bounded enums or from configured names (namespace, broker, trigger),
//! never from error strings or event contents.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Outcome of one ingress request.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum IngestOutcome {
    Accepted,
    Invalid,
    TooLarge,
    UnsupportedMediaType,
    Unavailable,
}

/// Outcome of one delivery attempt.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum AttemptOutcome {
    Success,
    Retryable,
    Rejected,
    Timeout,
    NetworkError,
}

/// How the gateway answered one proxied request.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum ProxyOutcome {
    /// The pod answered (any status; the pod's own errors are its business).
    Answered,
    /// 503: the revision's queue was full.
    QueueFull,
    /// 503: no pod slot came free within `timeoutSeconds`.
    NoSlot,
    /// 504: the pod did not answer within `timeoutSeconds`.
    Timeout,
    /// 502: the pod failed after the request was sent.
    PodFailed,
    /// 400/408: the client's request body was malformed or stalled (the pod is not blamed).
    ClientError,
}

/// Why an event left a trigger without reaching its subscriber.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum DropReason {
    /// Retries exhausted and no dead-letter sink configured, or the sink failed too.
    RetriesExhausted,
    /// A reply whose `knativebrokerttl` reached zero.
    TtlExpired,
    /// A reply that could not be stored.
    ReplyNotStored,
    /// A record that is not a CloudEvent, on a trigger without a dead-letter sink.
    InvalidRecord,
}

/// Outcome of one load of the manifest directories (at start or after a change).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// The set was valid and is served.
    Applied,
    /// The set was invalid; the last good one stays served.
    Rejected,
}

/// Label values in Prometheus' snake_case.
macro_rules! label_values {
    ($($ty:ident { $($variant:ident => $text:literal),+ $(,)? })+) => {$(
        impl $ty {
            pub fn as_str(self) -> &'static str {
                match self { $($ty::$variant => $text),+ }
            }
        }
        impl EncodeLabelValue for $ty {
            fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
                std::fmt::Write::write_str(encoder, self.as_str())
            }
        }
    )+};
}

label_values! {
    IngestOutcome {
        Accepted => "accepted",
        Invalid => "invalid",
        TooLarge => "too_large",
        UnsupportedMediaType => "unsupported_media_type",
        Unavailable => "unavailable",
    }
    AttemptOutcome {
        Success => "success",
        Retryable => "retryable",
        Rejected => "rejected",
        Timeout => "timeout",
        NetworkError => "network_error",
    }
    ProxyOutcome {
        Answered => "answered",
        QueueFull => "queue_full",
        NoSlot => "no_slot",
        Timeout => "timeout",
        PodFailed => "pod_failed",
        ClientError => "client_error",
    }
    DropReason {
        RetriesExhausted => "retries_exhausted",
        TtlExpired => "ttl_expired",
        ReplyNotStored => "reply_not_stored",
        InvalidRecord => "invalid_record",
    }
    ReloadOutcome {
        Applied => "applied",
        Rejected => "rejected",
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BrokerLabels {
    pub namespace: String,
    pub broker: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct IngestLabels {
    pub namespace: String,
    pub broker: String,
    pub outcome: IngestOutcome,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TriggerLabels {
    pub namespace: String,
    pub trigger: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AttemptLabels {
    pub namespace: String,
    pub trigger: String,
    pub outcome: AttemptOutcome,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DropLabels {
    pub namespace: String,
    pub trigger: String,
    pub reason: DropReason,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InvalidRecordLabels {
    pub namespace: String,
    pub trigger: String,
    /// `invalid_event` or `unsupported_format`.
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RevisionLabels {
    pub namespace: String,
    pub service: String,
    pub revision: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PodLabels {
    pub namespace: String,
    pub revision: String,
    pub pod: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProxyLabels {
    pub namespace: String,
    pub service: String,
    pub revision: String,
    pub outcome: ProxyOutcome,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    pub outcome: ReloadOutcome,
}

/// Proxy outcome counters of one revision, resolved once so the request path does not hash
/// labels. `Default` gives unregistered counters (tests).
#[derive(Clone, Default)]
pub struct ProxyCounters {
    counters: [Counter; 6],
}

const PROXY_OUTCOMES: [ProxyOutcome; 6] = [
    ProxyOutcome::Answered,
    ProxyOutcome::QueueFull,
    ProxyOutcome::NoSlot,
    ProxyOutcome::Timeout,
    ProxyOutcome::PodFailed,
    ProxyOutcome::ClientError,
];

impl ProxyCounters {
    pub fn new(metrics: &Metrics, namespace: &str, service: &str, revision: &str) -> Self {
        Self {
            counters: PROXY_OUTCOMES.map(|outcome| {
                metrics
                    .proxy_requests
                    .get_or_create(&ProxyLabels {
                        namespace: namespace.to_owned(),
                        service: service.to_owned(),
                        revision: revision.to_owned(),
                        outcome,
                    })
                    .clone()
            }),
        }
    }

    pub fn count(&self, outcome: ProxyOutcome) {
        if let Some(i) = PROXY_OUTCOMES.iter().position(|o| *o == outcome) {
            self.counters[i].inc();
        }
    }
}

/// Every metric the gateway exports.
pub struct Metrics {
    registry: Registry,
    /// Ingress requests by outcome.
    pub ingest_requests: Family<IngestLabels, Counter>,
    /// Requests for a broker that does not exist (no labels: the path is publisher input).
    pub ingest_unknown_broker: Counter,
    /// Events durably stored through ingress (a batch counts each event).
    pub ingest_events: Family<BrokerLabels, Counter>,
    /// Time from request arrival to the durable-store answer, seconds.
    pub ingest_latency: Family<BrokerLabels, Histogram>,
    /// Delivery attempts by outcome.
    pub delivery_attempts: Family<AttemptLabels, Counter>,
    /// Events the subscriber accepted.
    pub delivered: Family<TriggerLabels, Counter>,
    /// Retries (attempts after the first).
    pub retries: Family<TriggerLabels, Counter>,
    /// Events the dead-letter sink accepted.
    pub dead_lettered: Family<TriggerLabels, Counter>,
    /// Events dropped, by reason.
    pub dropped: Family<DropLabels, Counter>,
    /// Records on a broker that are not valid CloudEvents, by trigger and reason.
    pub invalid_records: Family<InvalidRecordLabels, Counter>,
    /// Events that did not pass the trigger's filter.
    pub filtered: Family<TriggerLabels, Counter>,
    /// Deliveries of events handed out before a restart (at-least-once duplicates).
    pub redelivered: Family<TriggerLabels, Counter>,
    /// Replies re-published into the broker.
    pub replies: Family<TriggerLabels, Counter>,
    /// Time from the first attempt to the subscriber's (or sink's) final answer, seconds.
    pub delivery_latency: Family<TriggerLabels, Histogram>,
    /// 1 while a broker can store events (refreshed at scrape).
    pub broker_ready: Family<BrokerLabels, Gauge>,
    /// CESQL evaluation errors of a trigger's filter since it was compiled (refreshed at
    /// scrape).
    pub trigger_filter_errors: Family<TriggerLabels, Gauge>,
    /// 1 while the embedded store can take events (refreshed at scrape).
    pub storage_available: Gauge,
    /// Failed cursor commits of the embedded store (synced at scrape).
    pub storage_cursor_save_failures: Counter,
    /// Spans not exported to the OTLP endpoint (synced at scrape).
    otlp_spans_dropped: Counter,
    /// Requests and deliveries running on pods, per revision (refreshed at scrape).
    pub revision_in_flight: Family<RevisionLabels, Gauge>,
    /// Requests and deliveries waiting in the gateway for a slot, per revision.
    pub revision_queued: Family<RevisionLabels, Gauge>,
    /// Pods taking work, per revision.
    pub revision_ready_pods: Family<RevisionLabels, Gauge>,
    /// The autoscaler's last decision, per revision.
    pub revision_desired_pods: Family<RevisionLabels, Gauge>,
    /// The HPA class's last cpu sample of each pod, millicores (refreshed at scrape).
    pub pod_cpu_millicores: Family<PodLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    /// The HPA class's last resident memory sample of each pod.
    pub pod_memory_bytes: Family<PodLabels, Gauge>,
    /// What the HPA class compares with its target: cpu as a percentage of `requests.cpu`,
    /// memory as a percentage of the target.
    pub pod_utilization_percent: Family<PodLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    /// Proxied requests by how the gateway answered.
    pub proxy_requests: Family<ProxyLabels, Counter>,
    /// Loads of the manifest directories, at start and after each change, by outcome.
    pub manifest_reloads: Family<ReloadLabels, Counter>,
    /// 1 when the last load of the manifest directories was applied, 0 when it was rejected.
    pub manifest_last_reload_success: Gauge,
}

fn latency_histogram() -> Histogram {
    // 100 µs .. ~52 s.
    Histogram::new(exponential_buckets(0.0001, 2.0, 20))
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("tidegate");
        let ingest_requests = Family::default();
        let ingest_unknown_broker = Counter::default();
        let ingest_events = Family::default();
        let ingest_latency = Family::new_with_constructor(latency_histogram as fn() -> Histogram);
        let delivery_attempts = Family::default();
        let delivered = Family::default();
        let retries = Family::default();
        let dead_lettered = Family::default();
        let dropped = Family::default();
        let invalid_records = Family::default();
        let filtered = Family::default();
        let redelivered = Family::default();
        let replies = Family::default();
        let delivery_latency = Family::new_with_constructor(latency_histogram as fn() -> Histogram);
        registry.register(
            "ingest_requests",
            "Ingress requests by outcome",
            ingest_requests.clone(),
        );
        registry.register(
            "ingest_unknown_broker",
            "Requests for a broker that does not exist",
            ingest_unknown_broker.clone(),
        );
        registry.register(
            "ingest_events",
            "Events durably stored through ingress",
            ingest_events.clone(),
        );
        registry.register(
            "ingest_latency_seconds",
            "Ingress request time until the durable-store answer",
            ingest_latency.clone(),
        );
        registry.register(
            "delivery_attempts",
            "Delivery attempts by outcome",
            delivery_attempts.clone(),
        );
        registry.register(
            "delivery_delivered",
            "Events accepted by the subscriber",
            delivered.clone(),
        );
        registry.register(
            "delivery_retries",
            "Delivery attempts after the first",
            retries.clone(),
        );
        registry.register(
            "delivery_dead_lettered",
            "Events accepted by the dead-letter sink",
            dead_lettered.clone(),
        );
        registry.register(
            "delivery_dropped",
            "Events dropped, by reason",
            dropped.clone(),
        );
        registry.register(
            "broker_invalid_records",
            "Records on a broker that are not valid CloudEvents (written straight to the topic or subject), by reason",
            invalid_records.clone(),
        );
        registry.register(
            "delivery_filtered",
            "Events that did not pass the trigger filter",
            filtered.clone(),
        );
        registry.register(
            "delivery_redelivered",
            "Deliveries of events already handed out before a restart",
            redelivered.clone(),
        );
        registry.register(
            "delivery_replies",
            "Subscriber replies re-published into the broker",
            replies.clone(),
        );
        registry.register(
            "delivery_latency_seconds",
            "Time from the first delivery attempt to the final answer",
            delivery_latency.clone(),
        );
        let broker_ready = Family::default();
        let trigger_filter_errors = Family::default();
        registry.register(
            "trigger_filter_errors",
            "CESQL evaluation errors of the trigger's filter (each made the filter false) since \
             the filter was compiled",
            trigger_filter_errors.clone(),
        );
        let storage_available = Gauge::default();
        let storage_cursor_save_failures = Counter::default();
        let otlp_spans_dropped = Counter::default();
        registry.register(
            "otlp_spans_dropped",
            "Spans not exported to --otlp-endpoint (unreachable, refused, or its queue full)",
            otlp_spans_dropped.clone(),
        );
        registry.register(
            "broker_ready",
            "1 while the broker can store events, 0 while it cannot (/api/v1/brokers says why)",
            broker_ready.clone(),
        );
        registry.register(
            "storage_available",
            "1 while the embedded store can take events, 0 while its disk is full or it fails",
            storage_available.clone(),
        );
        registry.register(
            "storage_cursor_save_failures",
            "Commits of subscription cursors that failed (each is retried until it succeeds)",
            storage_cursor_save_failures.clone(),
        );
        let revision_in_flight = Family::default();
        let revision_queued = Family::default();
        let revision_ready_pods = Family::default();
        let revision_desired_pods = Family::default();
        let proxy_requests = Family::default();
        registry.register(
            "proxy_requests",
            "Proxied requests by how the gateway answered",
            proxy_requests.clone(),
        );
        registry.register(
            "revision_in_flight",
            "Requests and deliveries running on pods",
            revision_in_flight.clone(),
        );
        registry.register(
            "revision_queued",
            "Requests and deliveries waiting in the gateway for a pod slot",
            revision_queued.clone(),
        );
        registry.register(
            "revision_ready_pods",
            "Pods taking work",
            revision_ready_pods.clone(),
        );
        registry.register(
            "revision_desired_pods",
            "The autoscaler's last decision",
            revision_desired_pods.clone(),
        );
        let pod_cpu_millicores = Family::default();
        let pod_memory_bytes = Family::default();
        let pod_utilization_percent = Family::default();
        registry.register(
            "pod_cpu_millicores",
            "CPU a pod used over the last second (HPA-class revisions)",
            pod_cpu_millicores.clone(),
        );
        registry.register_with_unit(
            "pod_memory",
            "Resident memory of a pod (HPA-class revisions)",
            prometheus_client::registry::Unit::Bytes,
            pod_memory_bytes.clone(),
        );
        registry.register(
            "pod_utilization_percent",
            "Cpu as a percentage of requests.cpu, or memory as a percentage of the target (HPA-class revisions)",
            pod_utilization_percent.clone(),
        );
        let manifest_reloads = Family::default();
        let manifest_last_reload_success = Gauge::default();
        registry.register(
            "manifest_reloads",
            "Loads of the manifest directories by outcome",
            manifest_reloads.clone(),
        );
        registry.register(
            "manifest_last_reload_success",
            "Whether the last load of the manifest directories was applied (1) or rejected (0)",
            manifest_last_reload_success.clone(),
        );
        Self {
            manifest_reloads,
            manifest_last_reload_success,
            proxy_requests,
            broker_ready,
            trigger_filter_errors,
            storage_available,
            storage_cursor_save_failures,
            otlp_spans_dropped,
            revision_in_flight,
            revision_queued,
            revision_ready_pods,
            revision_desired_pods,
            pod_cpu_millicores,
            pod_memory_bytes,
            pod_utilization_percent,
            registry,
            ingest_requests,
            ingest_unknown_broker,
            ingest_events,
            ingest_latency,
            delivery_attempts,
            delivered,
            retries,
            dead_lettered,
            dropped,
            invalid_records,
            filtered,
            redelivered,
            replies,
            delivery_latency,
        }
    }

    /// Prometheus text exposition.
    pub fn encode(&self) -> String {
        let dropped = crate::telemetry::dropped_spans();
        let seen = self.otlp_spans_dropped.get();
        if dropped > seen {
            self.otlp_spans_dropped.inc_by(dropped - seen);
        }
        let mut out = String::with_capacity(8192);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
