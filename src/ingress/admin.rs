//! The admin API: health, readiness, Prometheus metrics and JSON views of brokers, triggers,
//! revisions, local pods' recent log lines and the manifest set.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};

use crate::actuator::logs::{LogPage, MAX_PAGE, PodLogs};
use crate::dispatch::Dispatcher;
use crate::metrics::Metrics;
use crate::revision::registry::Registry;
use crate::runtime::manifests::{ManifestStatus, ManifestsReport};
use crate::runtime::provider::ProviderHealth;
use crate::topology::SharedTopology;

/// What the admin API reads.
#[derive(Clone)]
pub struct AdminState {
    pub metrics: Arc<Metrics>,
    pub topology: SharedTopology,
    pub dispatcher: Arc<Dispatcher>,
    /// Set once the manifests are loaded and storage is open.
    pub ready: Arc<AtomicBool>,
    pub registry: Arc<std::sync::Mutex<Registry>>,
    /// The embedded store, for its storage health metrics.
    pub store: Arc<brokers::embedded::EmbeddedStore>,
    /// The manifest set served and the outcome of the last reload.
    pub manifests: Arc<ManifestStatus>,
    /// What keeps the desired-state provider from the current state (Kubernetes watches).
    pub provider: Arc<ProviderHealth>,
    /// Local pods' recent lines; `None` in Kubernetes mode (pods log to the cluster).
    pub pod_logs: Option<Arc<PodLogs>>,
    /// The dashboard's sampler (`/` and `/api/v1/stream`).
    pub dashboard: Option<Arc<super::dashboard::Dashboard>>,
}

/// One row of `/api/v1/revisions`.
#[derive(Debug, Serialize, Deserialize)]
pub struct RevisionStatus {
    pub namespace: String,
    pub service: String,
    pub revision: String,
    pub class: String,
    pub container_concurrency: u32,
    /// True once a pod of the revision was ready.
    pub ready: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub ready_pods: u32,
    pub desired_pods: u32,
    pub in_flight: u64,
    pub queued: u64,
    /// Reserved instances taking work (not counted in `ready_pods`).
    #[serde(default)]
    pub reserved_pods: u32,
    /// The reserved instances' resources where the annotation sets them.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub reserved_resources: std::collections::BTreeMap<String, String>,
    pub pods: Vec<PodStatus>,
    /// The autoscaler's current decision in words: KPA's mode and averages, the precise
    /// class's demand and the bound that limits it, the HPA's samples.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<String>,
    /// Pod spec fields accepted and kept for Kubernetes mode that change nothing here.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ignored_locally: Vec<String>,
}

/// One pod in `/api/v1/revisions`.
#[derive(Debug, Serialize, Deserialize)]
pub struct PodStatus {
    pub id: String,
    pub address: String,
    pub in_flight: u32,
    /// A reserved instance (`tidegate.dev/reserved-instances`).
    #[serde(default)]
    pub reserved: bool,
    /// Taking new work (false while draining).
    #[serde(default)]
    pub accepting: bool,
    /// A reserved instance that takes work once no regular pod does.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub standby: bool,
    /// The HPA class's last samples (absent for other classes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_millicores: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
    /// Cpu as a percentage of `requests.cpu`, memory as a percentage of the target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub utilization_percent: Option<f64>,
}

/// One row of `/api/v1/triggers`.
#[derive(Debug, Serialize, Deserialize)]
pub struct TriggerStatus {
    pub namespace: String,
    pub name: String,
    pub broker: String,
    pub subscriber: String,
    pub ready: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub delivered: u64,
    pub retried: u64,
    pub dead_lettered: u64,
    pub dropped: u64,
    /// CESQL evaluation errors of the filter (each made it false) since it was compiled.
    #[serde(default)]
    pub filter_errors: u64,
    pub in_flight: u64,
    pub pending: u64,
}

/// One row of `/api/v1/brokers`.
#[derive(Debug, Serialize, Deserialize)]
pub struct BrokerStatus {
    pub namespace: String,
    pub name: String,
    pub backend: String,
    pub ready: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub stored: u64,
    /// Where the backend keeps the events: `stream` and `subject` (JetStream), `topic` (Kafka).
    #[serde(flatten)]
    pub location: std::collections::BTreeMap<String, String>,
}

pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/", get(super::dashboard::page))
        .route("/api/v1/stream", get(super::dashboard::stream))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/api/v1/triggers", get(triggers))
        .route("/api/v1/brokers", get(brokers))
        .route("/api/v1/revisions", get(revisions))
        .route(
            "/api/v1/revisions/{namespace}/{revision}/logs",
            get(revision_logs),
        )
        .route("/api/v1/manifests", get(manifests))
        .with_state(state)
}

/// 200 once started while every broker can store events; 503 naming each broker that cannot.
/// A failing Kubernetes watch is listed too, but keeps the answer 200: the gateway serves the
/// objects it last saw, and taking every replica out of its Service would not help.
async fn readyz(State(state): State<AdminState>) -> Response {
    let provider: String = state
        .provider
        .problems()
        .iter()
        .map(|(source, problem)| format!("desired state: {source}: {problem}\n"))
        .collect();
    if !state.ready.load(Ordering::Acquire) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready\n{provider}"),
        )
            .into_response();
    }
    let failing: String = state
        .topology
        .load()
        .entries()
        .iter()
        .filter_map(|b| {
            let reason = b.not_ready()?;
            Some(format!("broker {}/{}: {reason}\n", b.namespace, b.name))
        })
        .collect();
    if failing.is_empty() && provider.is_empty() {
        (StatusCode::OK, "ready\n").into_response()
    } else if failing.is_empty() {
        (
            StatusCode::OK,
            format!("ready (serving the objects last seen)\n{provider}"),
        )
            .into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready\n{failing}{provider}"),
        )
            .into_response()
    }
}

async fn metrics(State(state): State<AdminState>) -> Response {
    let m = &state.metrics;
    for family in [
        &m.revision_in_flight,
        &m.revision_queued,
        &m.revision_ready_pods,
        &m.revision_desired_pods,
    ] {
        family.clear();
    }
    m.broker_ready.clear();
    for b in state.topology.load().entries().iter() {
        let labels = crate::metrics::BrokerLabels {
            namespace: b.namespace.clone(),
            broker: b.name.clone(),
        };
        m.broker_ready
            .get_or_create(&labels)
            .set(i64::from(b.not_ready().is_none()));
    }
    m.trigger_filter_errors.clear();
    for t in state.dispatcher.triggers().iter() {
        let errors = t.config.filter.cesql_errors();
        if errors > 0 {
            let labels = crate::metrics::TriggerLabels {
                namespace: t.config.namespace.clone(),
                trigger: t.config.name.clone(),
            };
            m.trigger_filter_errors
                .get_or_create(&labels)
                .set(i64::try_from(errors).unwrap_or(i64::MAX));
        }
    }
    m.storage_available
        .set(i64::from(state.store.unavailable().is_none()));
    let failures = state.store.cursor_save_failures();
    let counted = m.storage_cursor_save_failures.get();
    if failures > counted {
        m.storage_cursor_save_failures.inc_by(failures - counted);
    }
    m.pod_cpu_millicores.clear();
    m.pod_memory_bytes.clear();
    m.pod_utilization_percent.clear();
    for row in revision_rows(&state.registry) {
        for pod in &row.pods {
            let labels = crate::metrics::PodLabels {
                namespace: row.namespace.clone(),
                revision: row.revision.clone(),
                pod: pod.id.clone(),
            };
            if let Some(cpu) = pod.cpu_millicores {
                m.pod_cpu_millicores.get_or_create(&labels).set(cpu);
            }
            if let Some(bytes) = pod.memory_bytes {
                m.pod_memory_bytes
                    .get_or_create(&labels)
                    .set(i64::try_from(bytes).unwrap_or(i64::MAX));
            }
            if let Some(percent) = pod.utilization_percent {
                m.pod_utilization_percent
                    .get_or_create(&labels)
                    .set(percent);
            }
        }
        let labels = crate::metrics::RevisionLabels {
            namespace: row.namespace,
            service: row.service,
            revision: row.revision,
        };
        let gauge = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        m.revision_in_flight
            .get_or_create(&labels)
            .set(gauge(row.in_flight));
        m.revision_queued
            .get_or_create(&labels)
            .set(gauge(row.queued));
        m.revision_ready_pods
            .get_or_create(&labels)
            .set(i64::from(row.ready_pods));
        m.revision_desired_pods
            .get_or_create(&labels)
            .set(i64::from(row.desired_pods));
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
        .into_response()
}

async fn triggers(State(state): State<AdminState>) -> Json<Vec<TriggerStatus>> {
    Json(trigger_rows(&state))
}

/// The rows of `/api/v1/triggers`.
pub fn trigger_rows(state: &AdminState) -> Vec<TriggerStatus> {
    state
        .dispatcher
        .triggers()
        .iter()
        .map(|t| TriggerStatus {
            namespace: t.config.namespace.clone(),
            name: t.config.name.clone(),
            broker: t.config.broker.clone(),
            subscriber: t
                .subscriber
                .as_ref()
                .map_or_else(|| describe(&t.config.subscriber), ToString::to_string),
            ready: t.problem().is_none(),
            reason: t.problem(),
            delivered: t.counters.delivered.get(),
            retried: t.counters.retries.get(),
            dead_lettered: t.counters.dead_lettered.get(),
            dropped: t.counters.dropped_total(),
            filter_errors: t.config.filter.cesql_errors(),
            in_flight: t.counters.in_flight(),
            pending: t.pending(),
        })
        .collect()
}

async fn brokers(State(state): State<AdminState>) -> Json<Vec<BrokerStatus>> {
    Json(broker_rows(&state))
}

/// The rows of `/api/v1/brokers`.
pub fn broker_rows(state: &AdminState) -> Vec<BrokerStatus> {
    state
        .topology
        .load()
        .entries()
        .iter()
        .map(|b| BrokerStatus {
            namespace: b.namespace.clone(),
            name: b.name.clone(),
            backend: b.backend.to_owned(),
            ready: b.not_ready().is_none(),
            reason: b.not_ready(),
            stored: b.broker.as_ref().map_or(0, |b| b.stored()),
            location: b
                .broker
                .as_ref()
                .map(|b| b.location())
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect(),
        })
        .collect()
}

/// The revisions table, as `/api/v1/revisions` and `/metrics` show it.
pub fn revision_rows(registry: &std::sync::Mutex<Registry>) -> Vec<RevisionStatus> {
    let registry = registry
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    registry
        .revisions()
        .into_iter()
        .map(|live| {
            let r = &live.revision;
            let counts = r.counts();
            let usage = live.running.pod_usage();
            RevisionStatus {
                namespace: r.namespace.clone(),
                service: r.service.clone(),
                revision: r.name.clone(),
                class: r.class.to_owned(),
                container_concurrency: r.container_concurrency,
                ready: r.ever_ready(),
                reason: live.running.problem(),
                ready_pods: counts.ready_pods,
                desired_pods: r.desired(),
                in_flight: counts.in_flight,
                queued: counts.queued,
                reserved_pods: counts.reserved_pods,
                reserved_resources: live.running.reserved_resources(),
                ignored_locally: live.ignored_locally.clone(),
                decision: r.decision().map(|d| d.to_string()),
                pods: counts
                    .pods
                    .iter()
                    .map(|p| {
                        let sample = usage.iter().find(|u| u.pod == p.id);
                        PodStatus {
                            id: format!("{}-{}", r.name, p.id),
                            address: p.address.to_string(),
                            in_flight: p.in_flight,
                            reserved: p.reserved,
                            accepting: p.accepting,
                            standby: p.standby,
                            cpu_millicores: sample.and_then(|u| u.cpu_millicores),
                            memory_bytes: sample.map(|u| u.memory_bytes),
                            utilization_percent: sample.and_then(|u| u.utilization_percent),
                        }
                    })
                    .collect(),
            }
        })
        .collect()
}

async fn revisions(State(state): State<AdminState>) -> Json<Vec<RevisionStatus>> {
    Json(revision_rows(&state.registry))
}

/// Query of `/api/v1/revisions/{namespace}/{revision}/logs`.
#[derive(Debug, Deserialize)]
struct LogQuery {
    /// One pod (its name, as `pods[].id` of `/api/v1/revisions`), else all.
    pod: Option<String>,
    /// Only lines after this sequence number (the `next` of an earlier answer).
    #[serde(default)]
    after: u64,
    /// The latest this many lines (at most 5000).
    limit: Option<usize>,
}

fn not_found(field: &str, message: String) -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(serde_json::json!({ "error": message, "field": field })),
    )
        .into_response()
}

/// The recent lines of a revision's local pods (`tidegate logs`).
async fn revision_logs(
    State(state): State<AdminState>,
    Path((namespace, revision)): Path<(String, String)>,
    Query(query): Query<LogQuery>,
) -> Response {
    let Some(logs) = &state.pod_logs else {
        return not_found(
            "revision",
            "pod logs are kept for local pods only; in Kubernetes mode read them with kubectl logs"
                .into(),
        );
    };
    let name = format!("{namespace}/{revision}");
    let known = revision_rows(&state.registry)
        .iter()
        .any(|r| r.namespace == namespace && r.revision == revision);
    let limit = query.limit.unwrap_or(MAX_PAGE);
    let page = logs.read(&name, query.pod.as_deref(), query.after, limit);
    let page = match page {
        Some(page) => page,
        None if known => LogPage {
            revision: name,
            pods: Vec::new(),
            lines: Vec::new(),
            next: query.after,
        },
        None => return not_found("revision", format!("no revision {name}")),
    };
    if let Some(pod) = &query.pod
        && !page.pods.contains(pod)
    {
        return not_found(
            "pod",
            format!(
                "revision {} has no lines from {pod} (pods with lines: {})",
                page.revision,
                if page.pods.is_empty() {
                    "none".to_owned()
                } else {
                    page.pods.join(", ")
                }
            ),
        );
    }
    Json(page).into_response()
}

async fn manifests(State(state): State<AdminState>) -> Json<ManifestsReport> {
    Json(state.manifests.report())
}

fn describe(destination: &triggers::Destination) -> String {
    match destination {
        triggers::Destination::Uri(uri) => uri.clone(),
        triggers::Destination::Ref {
            kind,
            namespace,
            name,
            ..
        } => {
            format!("{kind}/{namespace}/{name}")
        }
    }
}
