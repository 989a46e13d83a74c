//! One event's way to its subscriber: attempts, retries with backoff, the dead-letter sink, and
//! replies re-published into the broker.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use brokers::Broker;
use brokers::event::{AttrValue, CloudEvent};
use bytes::BytesMut;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use tokio_util::sync::CancellationToken;
use triggers::DeliveryConfig;

use super::backoff;
use super::error::AttemptError;
use super::stats::TriggerCounters;
use tracing::Instrument as _;

use crate::metrics::AttemptOutcome;
use crate::revision::route::SharedRoutes;
use crate::revision::{DispatchError, PodProtocol};
use brokers::event::knative::{ARRIVAL_EXTENSION, DEFAULT_BROKER_TTL, TTL_EXTENSION, now_rfc3339};
use brokers::http::DEFAULT_MAX_BODY_BYTES;

/// Most bytes of a subscriber's error body carried in `knativeerrordata`.
pub const ERROR_DATA_LIMIT: usize = 1024;
/// Publisher headers forwarded to subscribers (carried as CloudEvents extensions).
const FORWARDED_TRACING: [&str; 2] = ["traceparent", "tracestate"];

/// Where a delivery goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// An absolute URL.
    Url(String),
    /// A Knative Service known to the gateway: each attempt goes through the precise dispatch
    /// queue of the revision its route picks, so deliveries count as that revision's work.
    Service {
        namespace: String,
        name: String,
        path: String,
    },
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Url(url) => f.write_str(url),
            Endpoint::Service {
                namespace,
                name,
                path,
            } => {
                write!(f, "http://{name}.{namespace}.svc.cluster.local{path}")
            }
        }
    }
}

/// The HTTP clients deliveries go out on: HTTP/1.1 (or whatever a URL's server negotiates)
/// and HTTP/2 with prior knowledge for Services whose port is named `h2c`.
#[derive(Clone, Debug)]
pub struct Clients {
    pub http1: reqwest::Client,
    pub h2c: reqwest::Client,
}

impl Clients {
    /// Both clients, with pooled connections and `TCP_NODELAY`.
    pub fn new() -> reqwest::Result<Self> {
        let builder = || {
            reqwest::Client::builder()
                .pool_max_idle_per_host(256)
                .tcp_nodelay(true)
        };
        Ok(Self {
            http1: builder().build()?,
            h2c: builder().http2_prior_knowledge().build()?,
        })
    }
}

/// How a delivery ended.
#[derive(Debug)]
pub enum Outcome {
    /// The destination accepted the event; it may have replied with a new one.
    Delivered { reply: Option<CloudEvent> },
    /// Every allowed attempt failed; the last error says why.
    Failed(AttemptError),
    /// The gateway is shutting down; the event stays unacknowledged and is redelivered later.
    Aborted,
}

/// Sends `event` to `url` until it is accepted, the retries are spent, or `stop` fires.
pub async fn deliver_with_retries(
    client: &Clients,
    routes: &SharedRoutes,
    endpoint: &Endpoint,
    event: &CloudEvent,
    delivery: &DeliveryConfig,
    counters: &TriggerCounters,
    stop: &CancellationToken,
) -> Outcome {
    let mut retry = 0u32;
    loop {
        // One span per attempt, a child of the event's trace context (its ingest span's, or the
        // publisher's).
        let span = tracing::info_span!(
            target: crate::telemetry::TARGET,
            "delivery",
            endpoint = %endpoint,
            retry,
            outcome = tracing::field::Empty,
        );
        if let Some(parent) = event.attribute("traceparent") {
            let state = event.attribute("tracestate");
            crate::telemetry::set_parent(&span, &parent, state.as_deref());
        }
        let result = attempt(client, routes, endpoint, event, delivery.timeout)
            .instrument(span.clone())
            .await;
        span.record(
            "outcome",
            match &result {
                Ok(_) => "delivered",
                Err(e) if e.retryable() => "retryable",
                Err(_) => "rejected",
            },
        );
        drop(span);
        counters.attempt(match &result {
            Ok(_) => AttemptOutcome::Success,
            Err(AttemptError::Timeout(_)) => AttemptOutcome::Timeout,
            Err(AttemptError::Network(_)) => AttemptOutcome::NetworkError,
            Err(e) if e.retryable() => AttemptOutcome::Retryable,
            Err(_) => AttemptOutcome::Rejected,
        });
        let error = match result {
            Ok(reply) => return Outcome::Delivered { reply },
            Err(error) => error,
        };
        if !error.retryable() || retry >= delivery.retry {
            return Outcome::Failed(error);
        }
        retry += 1;
        counters.retries.inc();
        let wait = backoff::delay_for(
            delivery.backoff_policy,
            delivery.backoff_delay,
            retry,
            error.retry_after(),
            delivery.retry_after_max,
        );
        tracing::debug!(%endpoint, retry, ?wait, %error, "Delivery attempt failed; retrying.");
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = stop.cancelled() => return Outcome::Aborted,
        }
    }
}

/// One HTTP attempt in binary mode with `Prefer: reply`. For a Service endpoint, `timeout`
/// covers waiting for a slot on a pod as well; the slot is held until the answer is read.
pub async fn attempt(
    client: &Clients,
    routes: &SharedRoutes,
    endpoint: &Endpoint,
    event: &CloudEvent,
    timeout: Duration,
) -> Result<Option<CloudEvent>, AttemptError> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut headers = HeaderMap::new();
    let mut http = &client.http1;
    let (url, _slot) = match endpoint {
        Endpoint::Url(url) => (Cow::Borrowed(url.as_str()), None),
        Endpoint::Service {
            namespace,
            name,
            path,
        } => {
            let revision = routes
                .load()
                .service(namespace, name)
                .and_then(|route| route.pick().cloned())
                .ok_or_else(|| {
                    AttemptError::Network(format!("service {namespace}/{name} has no revision"))
                })?;
            let slot = revision.acquire(deadline).await.map_err(|e| match e {
                DispatchError::Timeout(_) => AttemptError::Timeout(timeout),
                full @ DispatchError::QueueFull(..) => AttemptError::Network(full.to_string()),
            })?;
            for (name, value) in revision.upstream_headers() {
                headers.insert(name.clone(), value.clone());
            }
            if revision.protocol == PodProtocol::H2c {
                http = &client.h2c;
            }
            (
                Cow::Owned(format!("http://{}{path}", slot.address())),
                Some(slot),
            )
        }
    };
    let timeout = deadline.saturating_duration_since(tokio::time::Instant::now());
    let body = brokers::http::encode_binary(event, &mut headers);
    headers.insert("prefer", HeaderValue::from_static("reply"));
    for name in FORWARDED_TRACING {
        if let Some(value) = event.attribute(name)
            && let Ok(value) = HeaderValue::from_str(&value)
        {
            headers.insert(name, value);
        }
    }
    // With traces exported, the subscriber's parent is this attempt's span.
    if let Some(context) = crate::telemetry::traceparent(&tracing::Span::current())
        && let Ok(value) = HeaderValue::from_str(&context)
    {
        headers.insert("traceparent", value);
    }
    let request = http
        .post(&*url)
        .headers(headers)
        .body(body)
        .timeout(timeout);
    let mut response = request.send().await.map_err(|e| classify(e, timeout))?;
    let status = response.status();
    let retry_after = if matches!(status.as_u16(), 429 | 503) {
        response
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(parse_retry_after)
    } else {
        None
    };
    let limit = if status.is_success() {
        DEFAULT_MAX_BODY_BYTES
    } else {
        ERROR_DATA_LIMIT
    };
    let mut body = BytesMut::new();
    while body.len() < limit {
        match response.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            Ok(None) => break,
            Err(e) => return Err(classify(e, timeout)),
        }
    }
    let body = body.freeze();
    if !status.is_success() {
        return Err(AttemptError::Status {
            status,
            retry_after,
            body: body.slice(..body.len().min(ERROR_DATA_LIMIT)),
        });
    }
    let is_event = response
        .headers()
        .keys()
        .any(|k| k.as_str().starts_with("ce-"));
    if status != StatusCode::OK || (body.is_empty() && !is_event) {
        return Ok(None);
    }
    if body.len() >= limit {
        return Err(AttemptError::BadReply {
            reason: format!("reply larger than {limit} bytes"),
            body: body.slice(..ERROR_DATA_LIMIT),
        });
    }
    match brokers::http::decode_request(response.headers(), body.clone()) {
        Ok(mut events) if events.len() == 1 => Ok(events.pop()),
        Ok(events) => Err(AttemptError::BadReply {
            reason: format!("expected one reply event, got {}", events.len()),
            body: body.slice(..body.len().min(ERROR_DATA_LIMIT)),
        }),
        Err(e) => Err(AttemptError::BadReply {
            reason: e.to_string(),
            body: body.slice(..body.len().min(ERROR_DATA_LIMIT)),
        }),
    }
}

fn classify(error: reqwest::Error, timeout: Duration) -> AttemptError {
    if error.is_timeout() {
        AttemptError::Timeout(timeout)
    } else {
        // The source chain says more than reqwest's top-level message.
        let mut message = error.to_string();
        let mut source = std::error::Error::source(&error);
        while let Some(s) = source {
            message.push_str(": ");
            message.push_str(&s.to_string());
            source = s.source();
        }
        AttemptError::Network(message)
    }
}

/// `Retry-After` as delay-seconds or an HTTP date.
fn parse_retry_after(value: &HeaderValue) -> Option<Duration> {
    let text = value.to_str().ok()?.trim();
    if let Ok(secs) = text.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = chrono::DateTime::parse_from_rfc2822(text).ok()?;
    let delta = when.with_timezone(&chrono::Utc) - chrono::Utc::now();
    Some(delta.to_std().unwrap_or(Duration::ZERO))
}

/// The event sent to the dead-letter sink: the original plus Knative's error extensions.
pub fn dead_letter_event(
    event: &CloudEvent,
    destination: &str,
    error: &AttemptError,
) -> CloudEvent {
    let mut dead = event.clone();
    // Attribute values below are valid by construction; a failure would only drop an extension.
    let _ = dead.set_attribute(
        "knativeerrordest",
        AttrValue::String(destination.to_owned()),
    );
    if let Some(status) = error.status() {
        let _ = dead.set_attribute(
            "knativeerrorcode",
            AttrValue::String(status.as_u16().to_string()),
        );
    }
    if let Some(body) = error.body().filter(|b| !b.is_empty()) {
        let data = &body[..body.len().min(ERROR_DATA_LIMIT)];
        let _ = dead.set_attribute(
            "knativeerrordata",
            AttrValue::String(base64::engine::general_purpose::STANDARD.encode(data)),
        );
    }
    dead
}

/// The event the dead-letter sink gets for a record that is not a CloudEvent: the wrapper
/// (raw payload as data) with `knativeerrordata` = base64 of the reason.
pub fn invalid_record_event(wrapper: &CloudEvent, reason: &str) -> CloudEvent {
    let mut dead = wrapper.clone();
    let reason = &reason.as_bytes()[..reason.len().min(ERROR_DATA_LIMIT)];
    let _ = dead.set_attribute(
        "knativeerrordata",
        AttrValue::String(base64::engine::general_purpose::STANDARD.encode(reason)),
    );
    dead
}

/// What became of a reply.
#[derive(Debug, PartialEq, Eq)]
pub enum ReplyOutcome {
    Published,
    TtlExpired,
    NotStored,
}

/// Re-publishes a subscriber's reply into the trigger's broker with the TTL decremented.
pub async fn publish_reply(
    broker: &Arc<dyn Broker>,
    original: &CloudEvent,
    mut reply: CloudEvent,
) -> ReplyOutcome {
    let ttl = original
        .attribute(TTL_EXTENSION)
        .and_then(|v| v.parse::<i64>().ok())
        .unwrap_or(DEFAULT_BROKER_TTL)
        - 1;
    if ttl <= 0 {
        return ReplyOutcome::TtlExpired;
    }
    if reply
        .set_attribute(TTL_EXTENSION, AttrValue::Integer(ttl))
        .is_err()
        || reply
            .set_attribute(ARRIVAL_EXTENSION, AttrValue::String(now_rfc3339()))
            .is_err()
    {
        return ReplyOutcome::NotStored;
    }
    // A reply is stored before the original is acknowledged; storage hiccups get a few tries.
    for attempt in 0..3u32 {
        match broker.append(vec![reply.clone()]).await {
            Ok(()) => return ReplyOutcome::Published,
            Err(error) => {
                tracing::warn!(attempt, %error, "Could not store a reply.");
                tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
            }
        }
    }
    ReplyOutcome::NotStored
}
