//! The broker table: every Broker of the manifest set with its backend, swapped atomically when
//! manifests change. The runtime builds it; ingress stores into it, the dispatcher subscribes
//! through it, the admin API lists it.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use brokers::Broker;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;

use crate::metrics::{BrokerLabels, IngestLabels, IngestOutcome, Metrics};

/// One broker as ingress and the admin API see it.
pub struct BrokerEntry {
    pub namespace: String,
    pub name: String,
    /// `embedded`, `nats` or `kafka`.
    pub backend: &'static str,
    /// The settings it was opened with: an entry whose settings change is reopened.
    pub config: brokers::BackendConfig,
    /// `None` when the backend is not available in this process; ingress answers 503.
    pub broker: Option<Arc<dyn Broker>>,
    /// Why the broker is not ready, for the admin API.
    pub reason: Option<String>,
    pub counters: IngestCounters,
}

impl BrokerEntry {
    /// Why the broker cannot store events now (no backend in this build, disk full, storage
    /// failure), or `None` when it can.
    pub fn not_ready(&self) -> Option<String> {
        match &self.broker {
            None => Some(
                self.reason
                    .clone()
                    .unwrap_or_else(|| "backend unavailable".into()),
            ),
            Some(broker) => broker.unavailable(),
        }
    }
}

/// Metric handles resolved once per broker so the hot path neither allocates nor hashes labels.
pub struct IngestCounters {
    pub accepted: Counter,
    pub invalid: Counter,
    pub too_large: Counter,
    pub unsupported: Counter,
    pub unavailable: Counter,
    pub events: Counter,
    pub latency: Histogram,
}

impl IngestCounters {
    pub fn new(metrics: &Metrics, namespace: &str, broker: &str) -> Self {
        let outcome = |outcome| {
            metrics
                .ingest_requests
                .get_or_create(&IngestLabels {
                    namespace: namespace.to_owned(),
                    broker: broker.to_owned(),
                    outcome,
                })
                .clone()
        };
        let labels = BrokerLabels {
            namespace: namespace.to_owned(),
            broker: broker.to_owned(),
        };
        Self {
            accepted: outcome(IngestOutcome::Accepted),
            invalid: outcome(IngestOutcome::Invalid),
            too_large: outcome(IngestOutcome::TooLarge),
            unsupported: outcome(IngestOutcome::UnsupportedMediaType),
            unavailable: outcome(IngestOutcome::Unavailable),
            events: metrics.ingest_events.get_or_create(&labels).clone(),
            latency: metrics.ingest_latency.get_or_create(&labels).clone(),
        }
    }
}

/// Brokers by namespace, then name: lookups borrow the request's path, no allocation.
#[derive(Default)]
pub struct Topology {
    brokers: HashMap<String, HashMap<String, Arc<BrokerEntry>>>,
}

impl Topology {
    pub fn new(entries: impl IntoIterator<Item = Arc<BrokerEntry>>) -> Self {
        let mut brokers: HashMap<String, HashMap<String, Arc<BrokerEntry>>> = HashMap::new();
        for entry in entries {
            brokers
                .entry(entry.namespace.clone())
                .or_default()
                .insert(entry.name.clone(), entry);
        }
        Self { brokers }
    }

    pub fn get(&self, namespace: &str, name: &str) -> Option<&Arc<BrokerEntry>> {
        self.brokers.get(namespace)?.get(name)
    }

    /// All brokers sorted by namespace and name.
    pub fn entries(&self) -> Vec<Arc<BrokerEntry>> {
        let mut all: Vec<_> = self
            .brokers
            .values()
            .flat_map(|m| m.values().cloned())
            .collect();
        all.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        all
    }
}

/// Shared, atomically swapped topology.
pub type SharedTopology = Arc<ArcSwap<Topology>>;
