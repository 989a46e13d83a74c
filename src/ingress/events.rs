//! The CloudEvents receiver: `POST /{namespace}/{broker}`.
//!
//! Answers 202 only after the broker reports the request's events durably stored (a batch as one
//! atomic append). Every rejection is a JSON body naming the field and the reason.

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use brokers::BrokerError;
use brokers::event::{AttrValue, CloudEvent, EventBatch, EventError, EventErrorKind};
use bytes::Bytes;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde::Serialize;
use tokio::time::Instant;
use tracing::Instrument as _;

use super::conn::{BodyFaultKind, ClientBodyError};
use crate::topology::SharedTopology;

use brokers::event::knative::{ARRIVAL_EXTENSION, DEFAULT_BROKER_TTL, TTL_EXTENSION, now_rfc3339};
pub use brokers::http::DEFAULT_MAX_BODY_BYTES;
/// Seconds a publisher is asked to wait when storage is unavailable.
const RETRY_AFTER_SECONDS: &str = "1";
/// HTTP headers of the publisher carried with the event as CloudEvents extensions
/// (the distributed-tracing extension), so deliveries can forward them.
const TRACING_HEADERS: [&str; 2] = ["traceparent", "tracestate"];

/// Default memory budget for request bodies being read, decoded or waiting for their commit.
pub const DEFAULT_INGEST_MEMORY_BYTES: usize = 128 * 1024 * 1024;
/// Bytes of body per event the default batch limit allows for (a minimal event is ~100 bytes).
pub const BYTES_PER_BATCH_EVENT: usize = 400;
/// What a request costs in memory until it is stored, as a multiple of its body: the body, the
/// index of a batch's elements and the events' storage encoding (measured: `bench/batch_memory.sh`).
const DECODE_COST_FACTOR: usize = 3;

/// The default largest number of events in one batch for a body limit.
pub fn default_max_batch_events(max_body_bytes: usize) -> usize {
    (max_body_bytes / BYTES_PER_BATCH_EVENT).max(1)
}

/// Memory shared by every ingress request between reading its body and the durable answer, in
/// KiB permits; a request that does not fit is answered 503 + `Retry-After` at once.
#[derive(Clone)]
pub struct IngestBudget {
    permits: std::sync::Arc<tokio::sync::Semaphore>,
    kib: usize,
}

impl IngestBudget {
    pub fn new(bytes: usize) -> IngestBudget {
        let kib = (bytes / 1024).clamp(1, tokio::sync::Semaphore::MAX_PERMITS);
        IngestBudget {
            permits: std::sync::Arc::new(tokio::sync::Semaphore::new(kib)),
            kib,
        }
    }

    fn reserve(&self, body_bytes: usize) -> Option<tokio::sync::OwnedSemaphorePermit> {
        let kib = (body_bytes.saturating_mul(DECODE_COST_FACTOR) / 1024).clamp(1, self.kib);
        let kib = u32::try_from(kib).unwrap_or(u32::MAX);
        std::sync::Arc::clone(&self.permits)
            .try_acquire_many_owned(kib)
            .ok()
    }
}

/// State of the receiver.
#[derive(Clone)]
pub struct IngressState {
    pub topology: SharedTopology,
    pub max_body_bytes: usize,
    /// Most events accepted in one batch request.
    pub max_batch_events: usize,
    pub budget: IngestBudget,
    /// Requests naming a broker that does not exist.
    pub unknown_broker: prometheus_client::metrics::counter::Counter,
}

/// Every way an ingress request fails, mapped to a response in one place.
#[derive(Debug, thiserror::Error)]
pub enum IngressError {
    #[error("{0}")]
    Event(#[from] EventError),
    #[error("broker {namespace}/{name} does not exist")]
    UnknownBroker { namespace: String, name: String },
    #[error("request body exceeds the limit of {limit} bytes")]
    TooLarge { limit: usize },
    #[error("request body could not be read: {0}")]
    Body(String),
    #[error("{0}")]
    BodyTimeout(String),
    #[error("broker is not ready: {0}")]
    NotReady(String),
    #[error("the gateway is busy storing other requests; retry shortly")]
    Busy,
    #[error("storage is unavailable: {0}")]
    Storage(BrokerError),
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
}

impl IntoResponse for IngressError {
    fn into_response(self) -> Response {
        let (status, field) = match &self {
            IngressError::Event(e) => match e.kind {
                EventErrorKind::Invalid => (StatusCode::BAD_REQUEST, Some(e.field.as_str())),
                EventErrorKind::UnsupportedMediaType => {
                    (StatusCode::UNSUPPORTED_MEDIA_TYPE, Some(e.field.as_str()))
                }
            },
            IngressError::UnknownBroker { .. } => (StatusCode::NOT_FOUND, None),
            IngressError::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, Some("body")),
            IngressError::Body(_) => (StatusCode::BAD_REQUEST, Some("body")),
            IngressError::BodyTimeout(_) => (StatusCode::REQUEST_TIMEOUT, Some("body")),
            IngressError::Storage(BrokerError::TooLarge { .. }) => {
                (StatusCode::PAYLOAD_TOO_LARGE, Some("data"))
            }
            IngressError::NotReady(_) | IngressError::Storage(_) | IngressError::Busy => {
                (StatusCode::SERVICE_UNAVAILABLE, None)
            }
        };
        let error = match &self {
            IngressError::Event(e) => e.reason.clone(),
            other => other.to_string(),
        };
        // A broker known to be failing was already reported once by its backend.
        if status.is_server_error()
            && !matches!(self, IngressError::NotReady(_) | IngressError::Busy)
        {
            tracing::warn!(%error, "Ingress could not store events.");
        }
        let mut response = (status, axum::Json(ErrorBody { error, field })).into_response();
        if status == StatusCode::REQUEST_TIMEOUT {
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from_static(RETRY_AFTER_SECONDS),
            );
        }
        response
    }
}

/// The receiver's routes. Anything else answers 404 (the HTTP proxy takes over in a later stage).
pub fn router(state: IngressState) -> Router {
    Router::new()
        .route("/{namespace}/{broker}", post(publish))
        .fallback(not_found)
        .with_state(state)
}

async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        axum::Json(ErrorBody {
            error: "no broker at this path; publish to /{namespace}/{broker}".into(),
            field: None,
        }),
    )
        .into_response()
}

async fn publish(
    State(state): State<IngressState>,
    Path((namespace, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<StatusCode, IngressError> {
    let started = Instant::now();
    let topology = state.topology.load();
    let Some(entry) = topology.get(&namespace, &name) else {
        state.unknown_broker.inc();
        return Err(IngressError::UnknownBroker { namespace, name });
    };
    let counters = &entry.counters;
    // Receive → durable store; the publisher's trace context, if it sent one, is the parent.
    let span = tracing::info_span!(
        target: crate::telemetry::TARGET,
        "ingest",
        broker = %format_args!("{namespace}/{name}"),
        events = tracing::field::Empty,
    );
    crate::telemetry::set_parent_from_headers(&span, &headers);
    // Events without a trace context of their own join the ingest span's trace.
    let ingest_context = crate::telemetry::traceparent(&span);
    let result = async {
        let Some(broker) = entry.broker.as_ref() else {
            return Err(IngressError::NotReady(
                entry
                    .reason
                    .clone()
                    .unwrap_or_else(|| "backend unavailable".into()),
            ));
        };
        // Storage known to be failing: answer before reading the body.
        if let Some(reason) = broker.unavailable() {
            return Err(IngressError::NotReady(reason));
        }
        let declared = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        // Held until the events are stored: bounds the memory of requests in progress.
        let reservation = declared
            .unwrap_or(state.max_body_bytes)
            .min(state.max_body_bytes);
        let Some(_budget) = state.budget.reserve(reservation) else {
            // Read (and drop) the body first, so a client that sends it before reading the
            // answer sees the 503 instead of a broken connection.
            drain_body(body, state.max_body_bytes).await;
            return Err(IngressError::Busy);
        };
        let body = read_body(declared, body, state.max_body_bytes).await?;
        let arrival = AttrValue::String(now_rfc3339());
        // Each event goes into its storage encoding as soon as it is decoded: a batch costs
        // about its encoded size, not a tree of allocations per event.
        let mut batch = EventBatch::new();
        let count = brokers::http::decode_request_each(
            &headers,
            body,
            state.max_batch_events,
            |mut event| {
                prepare(&mut event, &headers, &arrival, ingest_context.as_deref())?;
                batch.push(&event)
            },
        )?;
        if count > 0 {
            broker
                .append_batch(batch)
                .await
                .map_err(IngressError::Storage)?;
        }
        tracing::Span::current().record("events", count as u64);
        Ok(count as u64)
    }
    .instrument(span)
    .await;
    match &result {
        Ok(count) => {
            counters.accepted.inc();
            counters.events.inc_by(*count);
        }
        Err(IngressError::Event(e)) if e.kind == EventErrorKind::UnsupportedMediaType => {
            counters.unsupported.inc();
        }
        Err(IngressError::Event(_) | IngressError::Body(_) | IngressError::BodyTimeout(_)) => {
            counters.invalid.inc();
        }
        Err(IngressError::TooLarge { .. }) => {
            counters.too_large.inc();
        }
        Err(_) => {
            counters.unavailable.inc();
        }
    }
    counters.latency.observe(started.elapsed().as_secs_f64());
    result.map(|_| StatusCode::ACCEPTED)
}

/// Reads and discards up to `limit` bytes of the body, holding one chunk at a time.
async fn drain_body(mut body: Body, limit: usize) {
    let mut seen = 0usize;
    while seen <= limit {
        match body.frame().await {
            Some(Ok(frame)) => seen += frame.data_ref().map_or(0, Bytes::len),
            Some(Err(_)) | None => break,
        }
    }
}

/// Reads the body, refusing it as soon as it grows past `limit` (also for chunked bodies).
async fn read_body(
    declared: Option<usize>,
    body: Body,
    limit: usize,
) -> Result<Bytes, IngressError> {
    if declared.is_some_and(|len| len > limit) {
        return Err(IngressError::TooLarge { limit });
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<LengthLimitError>() => Err(IngressError::TooLarge { limit }),
        Err(e) => match ClientBodyError::find(e.as_ref()) {
            Some(cause) if cause.kind() == BodyFaultKind::Timeout => {
                Err(IngressError::BodyTimeout(cause.to_string()))
            }
            _ => Err(IngressError::Body(e.to_string())),
        },
    }
}

/// Applies the broker's extensions: arrival time, TTL (validated), tracing context.
fn prepare(
    event: &mut CloudEvent,
    headers: &HeaderMap,
    arrival: &AttrValue,
    ingest_context: Option<&str>,
) -> Result<(), EventError> {
    match event.attribute(TTL_EXTENSION) {
        None => event.set_attribute(TTL_EXTENSION, AttrValue::Integer(DEFAULT_BROKER_TTL))?,
        Some(ttl) => {
            let ttl: i64 = ttl.trim().parse().map_err(|_| EventError {
                kind: EventErrorKind::Invalid,
                field: TTL_EXTENSION.into(),
                reason: format!("{TTL_EXTENSION} must be an integer, got {ttl:?}"),
            })?;
            if ttl <= 0 {
                return Err(EventError {
                    kind: EventErrorKind::Invalid,
                    field: TTL_EXTENSION.into(),
                    reason: format!("{TTL_EXTENSION} must be positive, got {ttl}"),
                });
            }
            event.set_attribute(TTL_EXTENSION, AttrValue::Integer(ttl))?;
        }
    }
    event.set_attribute(ARRIVAL_EXTENSION, arrival.clone())?;
    for name in TRACING_HEADERS {
        if event.attribute(name).is_none()
            && let Some(value) = headers.get(name).and_then(|v| v.to_str().ok())
            && !value.is_empty()
        {
            event.set_attribute(name, AttrValue::String(value.to_owned()))?;
        }
    }
    if let Some(context) = ingest_context
        && event.attribute("traceparent").is_none()
    {
        event.set_attribute("traceparent", AttrValue::String(context.to_owned()))?;
    }
    Ok(())
}

/// Current time as RFC 3339 with microseconds, UTC.
#[cfg(test)]
#[path = "events_tests.rs"]
mod tests;
