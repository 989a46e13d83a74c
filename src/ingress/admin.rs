//! The admin API: health, readiness, Prometheus metrics and JSON views of brokers and triggers.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};

use super::topology::SharedTopology;
use crate::dispatch::Dispatcher;
use crate::metrics::Metrics;

/// What the admin API reads.
#[derive(Clone)]
pub struct AdminState {
    pub metrics: Arc<Metrics>,
    pub topology: SharedTopology,
    pub dispatcher: Arc<Dispatcher>,
    /// Set once the manifests are loaded and storage is open.
    pub ready: Arc<AtomicBool>,
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
}

pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/api/v1/triggers", get(triggers))
        .route("/api/v1/brokers", get(brokers))
        .with_state(state)
}

async fn readyz(State(state): State<AdminState>) -> Response {
    if state.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
    }
}

async fn metrics(State(state): State<AdminState>) -> Response {
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
    let rows = state
        .dispatcher
        .triggers()
        .iter()
        .map(|t| TriggerStatus {
            namespace: t.config.namespace.clone(),
            name: t.config.name.clone(),
            broker: t.config.broker.clone(),
            subscriber: t
                .subscriber
                .clone()
                .unwrap_or_else(|| describe(&t.config.subscriber)),
            ready: t.ready(),
            reason: t.not_ready.clone(),
            delivered: t.counters.delivered.get(),
            retried: t.counters.retries.get(),
            dead_lettered: t.counters.dead_lettered.get(),
            dropped: t.counters.dropped_total(),
            in_flight: t.counters.in_flight(),
            pending: t.pending(),
        })
        .collect();
    Json(rows)
}

async fn brokers(State(state): State<AdminState>) -> Json<Vec<BrokerStatus>> {
    let rows = state
        .topology
        .load()
        .entries()
        .iter()
        .map(|b| BrokerStatus {
            namespace: b.namespace.clone(),
            name: b.name.clone(),
            backend: b.backend.to_owned(),
            ready: b.broker.is_some(),
            reason: b.reason.clone(),
            stored: b.broker.as_ref().map_or(0, |b| b.stored()),
        })
        .collect();
    Json(rows)
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
