//! The validated manifest set the gateway routes with: brokers with their backend, triggers
//! with compiled filters, resolved subscribers and fully defaulted delivery settings, and
//! Services with their fully defaulted revision templates and traffic splits.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::ManifestWarning;
use crate::filter::Filter;

mod pod;
mod service;

pub use pod::{
    AGGRESSIVE_PROBE_INTERVAL, ContainerSpec, EnvValue, EnvVar, PodField, PodTemplate, Probe,
    ProbeAction, Resources, Sensitive, Volume, VolumeFile, VolumeMount, VolumeSource,
};

pub use service::{
    DEFAULT_ACTIVATION_SCALE, DEFAULT_BACKLOG_TARGET, DEFAULT_CONCURRENCY_TARGET,
    DEFAULT_CONTAINER_CONCURRENCY, DEFAULT_INITIAL_SCALE, DEFAULT_KPA_SCALE_DOWN_DELAY,
    DEFAULT_LIVENESS_PERIOD, DEFAULT_MAX_SCALE, DEFAULT_MAX_SCALE_DOWN_RATE,
    DEFAULT_MAX_SCALE_UP_RATE, DEFAULT_MIN_SCALE, DEFAULT_PANIC_THRESHOLD_PERCENTAGE,
    DEFAULT_PANIC_WINDOW_PERCENTAGE, DEFAULT_PRECISE_SCALE_DOWN_DELAY,
    DEFAULT_PROBE_FAILURE_THRESHOLD, DEFAULT_PROBE_INITIAL_DELAY, DEFAULT_PROBE_PATH,
    DEFAULT_PROBE_PERIOD, DEFAULT_PROBE_SUCCESS_THRESHOLD, DEFAULT_PROBE_TIMEOUT,
    DEFAULT_QUEUE_DEPTH, DEFAULT_RESERVED_INSTANCES, DEFAULT_REVISION_TIMEOUT, DEFAULT_RPS_TARGET,
    DEFAULT_SCALE_TO_ZERO_GRACE, DEFAULT_SCALE_TO_ZERO_RETENTION, DEFAULT_SCALING_CLASS,
    DEFAULT_SCALING_METRIC, DEFAULT_TARGET_UTILIZATION, DEFAULT_WINDOW, MAX_SCALE_DOWN_DELAY,
    MAX_WINDOW, MIN_METRIC_TARGET, MIN_WINDOW, RevisionTemplate, ScalingClass, ScalingMetric,
    ScalingSpec, ServiceConfig, TrafficRevision, TrafficTarget,
};

/// Retries after the first failed attempt when neither the Trigger nor its Broker sets
/// `delivery.retry`.
pub const DEFAULT_RETRY: u32 = 10;
/// Backoff policy when neither the Trigger nor its Broker sets `delivery.backoffPolicy`.
pub const DEFAULT_BACKOFF_POLICY: BackoffPolicy = BackoffPolicy::Exponential;
/// Backoff delay when neither the Trigger nor its Broker sets `delivery.backoffDelay`
/// (Knative's `config-br-defaults`: `PT0.2S`).
pub const DEFAULT_BACKOFF_DELAY: Duration = Duration::from_millis(200);
/// Per-attempt timeout when neither the Trigger nor its Broker sets `delivery.timeout`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Deliveries in flight per trigger without the `tidegate.dev/max-in-flight` annotation.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 100;

/// Everything a valid manifest set declares, sorted by (namespace, name).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// Brokers, sorted by (namespace, name).
    pub brokers: Vec<BrokerConfig>,
    /// Triggers of both apiVersions, sorted by (namespace, name).
    pub triggers: Vec<TriggerConfig>,
    /// Services, written as such or created by tidegate Triggers, sorted by
    /// (namespace, name).
    pub services: Vec<ServiceConfig>,
    /// Accepted but suspicious things, such as a Trigger whose Broker is not in the set.
    pub warnings: Vec<ManifestWarning>,
}

/// A Broker and the backend that stores its events.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BrokerConfig {
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
    /// Where the events are stored, from the ConfigMap in `spec.config`.
    pub backend: Backend,
}

/// Where a Broker's events are stored: the backends' own settings type.
pub use brokers::config::BackendConfig as Backend;

/// A Trigger ready to dispatch: filter compiled, subscriber resolved, delivery defaulted.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TriggerConfig {
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
    /// Namespace of the Broker: the Trigger's, unless `spec.brokerRef.namespace` says
    /// otherwise.
    pub broker_namespace: String,
    /// Name of the Broker.
    pub broker: String,
    /// Whether that Broker is in the manifest set. A Trigger without its Broker is kept
    /// (it may appear later) but receives nothing.
    pub broker_ready: bool,
    /// Which events to deliver.
    pub filter: Filter,
    /// Where to deliver them.
    pub subscriber: Destination,
    /// Retry, backoff, timeout and dead-letter settings.
    pub delivery: DeliveryConfig,
    /// From the `tidegate.dev/delivery-order` annotation.
    pub order: DeliveryOrder,
    /// From the `tidegate.dev/max-in-flight` annotation.
    pub max_in_flight: usize,
    /// For a tidegate Trigger with `spec.service`: the name of the Service it creates and
    /// owns (same namespace), which is also its `subscriber`.
    pub owned_service: Option<String>,
    /// Changes whenever anything above changes (including defaults inherited from the
    /// Broker), so the gateway can tell which dispatchers to restart. Stable for a given
    /// configuration; do not persist it across tidegate versions.
    pub generation_key: u64,
}

/// Where deliveries go.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Destination {
    /// An absolute `http` or `https` URL.
    Uri(String),
    /// An addressable object (usually a Knative Service), resolved by the gateway.
    Ref {
        /// `ref.apiVersion`, e.g. `serving.knative.dev/v1`.
        api_version: String,
        /// `ref.kind`, e.g. `Service`.
        kind: String,
        /// `ref.namespace`, defaulting to the referring object's namespace.
        namespace: String,
        /// `ref.name`.
        name: String,
        /// The relative `uri` given next to `ref`, appended to the resolved address.
        path: Option<String>,
    },
}

/// A ref's relative `uri` as a request path: `/` prefixed when missing.
pub fn absolute_path(path: &str) -> String {
    if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("/{path}")
    }
}

impl Destination {
    /// Where a core `v1` Service ref points inside a Kubernetes cluster:
    /// `http://{name}.{namespace}.svc.cluster.local{path}`; `None` for other destinations.
    pub fn kubernetes_url(&self) -> Option<String> {
        match self {
            Destination::Ref {
                api_version,
                kind,
                namespace,
                name,
                path,
            } if api_version == "v1" && kind == "Service" => {
                let path = path.as_deref().map(absolute_path).unwrap_or_default();
                Some(format!("http://{name}.{namespace}.svc.cluster.local{path}"))
            }
            _ => None,
        }
    }
}

/// Fully defaulted delivery settings: Trigger, then Broker, then the `DEFAULT_*` constants.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DeliveryConfig {
    /// Retries after the first attempt.
    pub retry: u32,
    /// How the delay grows between retries.
    pub backoff_policy: BackoffPolicy,
    /// Base delay between retries.
    pub backoff_delay: Duration,
    /// Timeout of one delivery attempt.
    pub timeout: Duration,
    /// Where events go after the last failed attempt; `None` drops them (counted).
    pub dead_letter_sink: Option<Destination>,
    /// Upper bound for honouring `Retry-After`; `None` ignores `Retry-After`.
    pub retry_after_max: Option<Duration>,
}

/// How the delay between retries grows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackoffPolicy {
    /// `backoffDelay × n` before retry n.
    Linear,
    /// `backoffDelay × 2^n` before retry n.
    Exponential,
}

/// Whether a trigger delivers one event at a time per ordering key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum DeliveryOrder {
    /// Events with the same `partitionkey` one at a time, in stored order; different keys (and
    /// the lane of events without a key) in parallel up to `max_in_flight`.
    Ordered,
    /// Up to `max_in_flight` deliveries at once.
    #[default]
    Unordered,
}

impl Snapshot {
    /// The Broker `namespace/name`, if the set has it.
    pub fn broker(&self, namespace: &str, name: &str) -> Option<&BrokerConfig> {
        self.brokers
            .iter()
            .find(|b| b.namespace == namespace && b.name == name)
    }

    /// The Service `namespace/name`, if the set has it.
    pub fn service(&self, namespace: &str, name: &str) -> Option<&ServiceConfig> {
        self.services
            .iter()
            .find(|s| s.namespace == namespace && s.name == name)
    }

    /// The Triggers subscribed to Broker `namespace/name`.
    pub fn triggers_of<'a>(
        &'a self,
        namespace: &'a str,
        broker: &'a str,
    ) -> impl Iterator<Item = &'a TriggerConfig> + 'a {
        self.triggers
            .iter()
            .filter(move |t| t.namespace == namespace && t.broker == broker)
    }
}
