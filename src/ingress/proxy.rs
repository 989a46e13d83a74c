//! The HTTP proxy: requests whose `Host` names a Knative Service go to a pod of one of its
//! revisions, through that revision's precise dispatch queue.
//!
//! - Routing is by the request's authority only (an absolute-form target's, else `Host`; on
//!   HTTP/2 `Host` if sent, else `:authority`): `{service}.{namespace}.{domain}` and
//!   `{tag}-{service}.{namespace}.{domain}`. Two `Host` headers, or none on HTTP/1.1, are a 400.
//!   `X-Forwarded-*` and `Forwarded` are set for the pod and never read.
//! - A client body that stalls (408) or is malformed (400) is the client's fault: counted as
//!   `client_error`, never as the pod's failure.
//! - The slot on the pod is held until the response body ends, the client goes away, or a
//!   WebSocket tunnel closes.
//! - `timeoutSeconds` bounds queueing plus the wait for response headers: 504 past it (503 when
//!   no pod could be had at all).
//! - Failover: a request that never reached the pod (connection refused, or a pooled connection
//!   found closed before the request was written) is retried on another slot, body and all.
//!   Anything already sent is not replayed (502).
//! - Pods whose port is named `h2c` are reached over HTTP/2 (see [`super::upstream`]); trailers
//!   and streaming bodies pass both ways, `TE: trailers` is kept for them.
//! - gRPC clients (`content-type: application/grpc…`): `grpc-timeout` shortens the deadline and
//!   is passed on as what is left of it; an answer tidegate makes itself comes as a gRPC status
//!   (HTTP 200, `grpc-status` 4 for a timeout, 14 when no pod could be had) a gRPC client reads,
//!   never a JSON body.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::http::{
    HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode, Uri, Version, header,
};
use axum::response::IntoResponse;
use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::time::Instant;
use tracing::Instrument as _;

use super::conn::{BodyFault, BodyFaultKind};
use super::upstream::{SendError, Upstream, UpstreamBody};
use crate::metrics::ProxyOutcome;
use crate::revision::route::Route;
use crate::revision::{DispatchError, PodProtocol, SlotGuard};

/// Default domain of service hosts.
pub const DEFAULT_DOMAIN: &str = "example.com";
/// Attempts for a request that never reached a pod (see the failover rule above).
const CONNECT_ATTEMPTS: usize = 3;

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1).
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

pub use crate::revision::route::SharedRoutes;

/// The revision Knative's ingress routed a request to.
pub const KNATIVE_REVISION_HEADER: &str = "knative-serving-revision";
/// The namespace of that revision.
pub const KNATIVE_NAMESPACE_HEADER: &str = "knative-serving-namespace";

/// What the proxy needs.
#[derive(Clone)]
pub struct ProxyState {
    pub routes: SharedRoutes,
    pub domain: Arc<str>,
    /// Connections driven by the requests themselves (everything but upgrades).
    pub upstream: Arc<Upstream>,
    /// hyper's pooled client, for upgrades.
    pub client: Client<HttpConnector, Body>,
    /// Route by `Knative-Serving-Revision` / `Knative-Serving-Namespace` (Kubernetes mode,
    /// where Knative's ingress sends them); off, the headers are passed on like any other.
    pub revision_headers: bool,
}

impl ProxyState {
    pub fn new(routes: SharedRoutes, domain: &str) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(1024)
            .build(connector);
        Self {
            routes,
            domain: domain.into(),
            upstream: Arc::new(Upstream::default()),
            client,
            revision_headers: false,
        }
    }

    /// The state for one more ingress thread: the same routes and clients, with idle pod
    /// connections of its own (see [`Upstream::sibling`]).
    pub fn for_thread(&self) -> Self {
        Self {
            upstream: Arc::new(self.upstream.sibling()),
            ..self.clone()
        }
    }

    /// The answer to a Knative ingress probe (`K-Network-Probe: probe`, Kubernetes mode): 200
    /// echoing `K-Network-Hash`, as Knative's activator and queue-proxy answer it, so an
    /// ingress that probes its backends sees tidegate programmed even at zero pods.
    pub fn network_probe(&self, request: &Request<Body>) -> Option<Response<Body>> {
        if !self.revision_headers
            || request
                .headers()
                .get("k-network-probe")
                .map(HeaderValue::as_bytes)
                != Some(b"probe")
        {
            return None;
        }
        Some(match request.headers().get("k-network-hash") {
            Some(hash) if !hash.is_empty() => {
                let mut response = Response::new(Body::empty());
                response
                    .headers_mut()
                    .insert(HeaderName::from_static("k-network-hash"), hash.clone());
                response
            }
            _ => error_with_field(
                StatusCode::BAD_REQUEST,
                "no K-Network-Hash header".into(),
                Some("k-network-hash"),
            ),
        })
    }

    /// The route for a request's authority, if it names a service; for a request whose
    /// authority is ambiguous or missing, why (answer it with [`bad_host`]).
    ///
    /// RFC 9112 §3.2.2: an absolute-form target's authority wins over `Host`; §3.2: more than
    /// one `Host`, or none on HTTP/1.1, is a 400.
    pub fn route_for(&self, request: &Request<Body>) -> Result<Option<Arc<Route>>, String> {
        // Knative's ingress names the revision it chose for the request (Kubernetes mode).
        let headers = request.headers();
        if self.revision_headers
            && let (Some(revision), Some(namespace)) = (
                headers.get(KNATIVE_REVISION_HEADER),
                headers.get(KNATIVE_NAMESPACE_HEADER),
            )
            && let (Ok(revision), Ok(namespace)) = (revision.to_str(), namespace.to_str())
        {
            // A revision tidegate does not (yet) serve: 503 with Retry-After from `forward`,
            // never the events router.
            let route = self.routes.load().by_revision(namespace, revision).cloned();
            return Ok(Some(route.unwrap_or_else(|| {
                Arc::new(Route {
                    namespace: namespace.to_owned(),
                    service: revision.to_owned(),
                    targets: Vec::new(),
                })
            })));
        }
        let host = request_authority(request)?;
        Ok(host.and_then(|host| self.routes.load().by_host(host, &self.domain).cloned()))
    }
}

/// The authority a request is for. HTTP/1.x: an absolute-form target's authority, else the one
/// `Host`. HTTP/2: the `Host` header when a client sent one (clients that set `Host` on h2c, as
/// `curl -H Host:` users expect), else `:authority`.
fn request_authority(request: &Request<Body>) -> Result<Option<&str>, String> {
    let mut hosts = request.headers().get_all(header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err("the request has more than one Host header (RFC 9112 §3.2)".into());
    }
    let host = host
        .map(|value| {
            value
                .to_str()
                .map_err(|_| "the Host header is not valid ASCII".to_owned())
        })
        .transpose()?;
    let authority = request.uri().authority().map(|a| a.as_str());
    match request.version() {
        Version::HTTP_2 | Version::HTTP_3 => Ok(host.or(authority)),
        version => match (authority, host) {
            (Some(authority), _) => Ok(Some(authority)),
            (None, Some(host)) => Ok(Some(host)),
            (None, None) if version == Version::HTTP_11 => {
                Err("an HTTP/1.1 request must carry a Host header (RFC 9112 §3.2)".into())
            }
            (None, None) => Ok(None),
        },
    }
}

/// The 400 for a request whose authority is ambiguous or missing.
pub fn bad_host(reason: String) -> Response<Body> {
    error_with_field(StatusCode::BAD_REQUEST, reason, Some("host"))
}

/// The message of an answer tidegate made itself rather than a pod, kept on the response (never
/// sent as such) so a gRPC client can get it as `grpc-message`.
#[derive(Clone, Debug)]
struct Refusal(Arc<str>);

/// A JSON error answer, with the field at fault when the client is to blame: 503 carries
/// `Retry-After`, 408 closes the connection.
fn error_with_field(status: StatusCode, message: String, field: Option<&str>) -> Response<Body> {
    let refusal = Refusal(message.as_str().into());
    let body = match field {
        Some(field) => serde_json::json!({ "error": message, "field": field }),
        None => serde_json::json!({ "error": message }),
    };
    let mut response = (status, axum::Json(body)).into_response();
    response.extensions_mut().insert(refusal);
    if status == StatusCode::REQUEST_TIMEOUT {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    if status == StatusCode::SERVICE_UNAVAILABLE {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}

/// The answer when sending to the pod failed because the client's body did.
fn body_fault_response(kind: BodyFaultKind) -> Response<Body> {
    match kind {
        BodyFaultKind::Timeout => error_with_field(
            StatusCode::REQUEST_TIMEOUT,
            "the request body was not received in time".into(),
            Some("body"),
        ),
        BodyFaultKind::Malformed => error_with_field(
            StatusCode::BAD_REQUEST,
            "the request body is malformed (bad chunked encoding or a broken connection)".into(),
            Some("body"),
        ),
    }
}

fn error(status: StatusCode, message: String) -> Response<Body> {
    error_with_field(status, message, None)
}

/// Forwards one request along `route`.
pub async fn forward(
    state: &ProxyState,
    route: &Route,
    request: Request<Body>,
    peer: Option<SocketAddr>,
    fault: &BodyFault,
) -> Response<Body> {
    // The request's span (with `queue` and `upstream` children), a child of the client's trace
    // context when it sent one; disabled (free) unless traces are exported.
    let span = tracing::info_span!(
        target: crate::telemetry::TARGET,
        "proxy",
        service = %format_args!("{}/{}", route.namespace, route.service),
    );
    if span.is_disabled() {
        return forward_untraced(state, route, request, peer, fault).await;
    }
    crate::telemetry::set_parent_from_headers(&span, request.headers());
    // Boxed: a queued request's future stays as small as without traces.
    Box::pin(forward_untraced(state, route, request, peer, fault).instrument(span)).await
}

async fn forward_untraced(
    state: &ProxyState,
    route: &Route,
    request: Request<Body>,
    peer: Option<SocketAddr>,
    fault: &BodyFault,
) -> Response<Body> {
    if !is_grpc(request.headers()) {
        return forward_request(state, route, request, peer, fault, None).await;
    }
    let client_limit = grpc_timeout(request.headers());
    let response = forward_request(state, route, request, peer, fault, client_limit).await;
    grpc_refusal(response)
}

/// Forwards one request along `route`; `client_limit` (a gRPC client's deadline) shortens the
/// revision's timeout.
async fn forward_request(
    state: &ProxyState,
    route: &Route,
    mut request: Request<Body>,
    peer: Option<SocketAddr>,
    fault: &BodyFault,
    client_limit: Option<Duration>,
) -> Response<Body> {
    let Some(revision) = route.pick().cloned() else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "service {}/{} has no ready revision",
                route.namespace, route.service
            ),
        );
    };
    let limit = client_limit.map_or(revision.timeout, |client| client.min(revision.timeout));
    let deadline = Instant::now() + limit;
    let mut attempts = 1;
    let upgrade = is_upgrade(request.headers());
    let te_trailers = wants_trailers(request.headers());
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut request));
    let mut next = Some(request);
    let mut prepared = false;
    let (guard, answer) = loop {
        let queue = tracing::info_span!(target: crate::telemetry::TARGET, "queue");
        let guard = match revision.acquire(deadline).instrument(queue).await {
            Ok(guard) => guard,
            Err(e) => {
                revision.proxied.count(match e {
                    DispatchError::QueueFull(..) => ProxyOutcome::QueueFull,
                    DispatchError::Timeout(_) => ProxyOutcome::NoSlot,
                });
                if limit < revision.timeout && matches!(e, DispatchError::Timeout(_)) {
                    // The client's own deadline ran out while it waited for a pod.
                    return error(
                        StatusCode::GATEWAY_TIMEOUT,
                        format!(
                            "revision {} had no free pod within the client's deadline of {limit:?} (grpc-timeout)",
                            revision.name
                        ),
                    );
                }
                return error(StatusCode::SERVICE_UNAVAILABLE, e.to_string());
            }
        };
        let Some(mut upstream) = next.take() else {
            return error(
                StatusCode::BAD_GATEWAY,
                "request could not be replayed".into(),
            );
        };
        // On a pod now: `responseStartTimeoutSeconds` bounds the wait for its headers.
        let answer_by = match revision.response_start_timeout {
            Some(limit) => deadline.min(Instant::now() + limit),
            None => deadline,
        };
        if !prepared {
            // Prepared only once it has a slot: a queued request stays as small as it came.
            prepare_request(&mut upstream, peer, upgrade);
            for (name, value) in revision.upstream_headers() {
                upstream.headers_mut().insert(name.clone(), value.clone());
            }
            prepared = true;
        }
        let sent = if upgrade {
            // Upgrades need hyper's client, which hands the connection over after a 101.
            *upstream.uri_mut() = match upstream_uri(guard.address(), upstream.uri()) {
                Some(uri) => uri,
                None => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "request target is not valid".into(),
                    );
                }
            };
            match tokio::time::timeout_at(answer_by, state.client.request(upstream)).await {
                Err(_) => Err(None),
                Ok(Ok(response)) => Ok(Answer::Upgradable(response)),
                Ok(Err(e)) => Err(Some(e.to_string())),
            }
        } else {
            if client_limit.is_some() {
                // What is left of the client's deadline once it waited here.
                let left = deadline.saturating_duration_since(Instant::now());
                upstream
                    .headers_mut()
                    .insert(GRPC_TIMEOUT, grpc_timeout_value(left));
            }
            // Until the pod's response head; the pod's parent in the trace.
            let upstream_span = tracing::info_span!(
                target: crate::telemetry::TARGET,
                "upstream",
                pod = guard.pod(),
            );
            if let Some(context) = crate::telemetry::traceparent(&upstream_span)
                && let Ok(value) = HeaderValue::from_str(&context)
            {
                upstream
                    .headers_mut()
                    .insert(HeaderName::from_static("traceparent"), value);
            }
            // Boxed: a queued request's future must not carry the send machinery's size.
            let send: Pin<Box<dyn Future<Output = _> + Send>> = match revision.protocol {
                PodProtocol::Http1 => {
                    *upstream.uri_mut() = origin_form(upstream.uri());
                    let pod = guard.pod();
                    let revision = &revision;
                    let alone = move || revision.pod_in_flight(pod) <= 1;
                    Box::pin(state.upstream.send(guard.address(), upstream, alone))
                }
                PodProtocol::H2c => {
                    h2_request(&mut upstream, guard.address(), te_trailers);
                    Box::pin(state.upstream.send_h2(guard.address(), upstream))
                }
            };
            match tokio::time::timeout_at(answer_by, send)
                .instrument(upstream_span)
                .await
            {
                Err(_) => Err(None),
                Ok(Ok(response)) => Ok(Answer::Pooled(response)),
                Ok(Err(SendError {
                    error,
                    unsent: Some(request),
                })) if attempts < CONNECT_ATTEMPTS => {
                    // Never reached the pod: safe on another slot (the failover rule).
                    attempts += 1;
                    tracing::debug!(revision = %revision.name, pod = guard.pod(), %error, "Request never reached the pod; trying another.");
                    next = Some(request);
                    continue;
                }
                Ok(Err(e)) => Err(Some(e.error.to_string())),
            }
        };
        if sent.is_err()
            && let Some(kind) = fault.get()
        {
            // The client's body failed: its fault, not the pod's.
            revision.proxied.count(ProxyOutcome::ClientError);
            return body_fault_response(kind);
        }
        match sent {
            Ok(answer) => {
                revision.proxied.count(ProxyOutcome::Answered);
                break (guard, answer);
            }
            Err(None) => {
                revision.proxied.count(ProxyOutcome::Timeout);
                let why = match revision.response_start_timeout {
                    Some(limit) if answer_by < deadline => {
                        format!(
                            "did not start answering within {limit:?} (responseStartTimeoutSeconds)"
                        )
                    }
                    _ if limit < revision.timeout => {
                        format!(
                            "did not answer within the client's deadline of {limit:?} (grpc-timeout)"
                        )
                    }
                    _ => format!("did not answer within {:?}", revision.timeout),
                };
                return error(
                    StatusCode::GATEWAY_TIMEOUT,
                    format!("revision {} {why}", revision.name),
                );
            }
            Err(Some(e)) => {
                revision.proxied.count(ProxyOutcome::PodFailed);
                tracing::warn!(revision = %revision.name, pod = guard.pod(), error = %e, "Proxying to the pod failed.");
                return error(
                    StatusCode::BAD_GATEWAY,
                    format!("pod of {} failed: {e}", revision.name),
                );
            }
        }
    };
    match answer {
        Answer::Pooled(response) => guarded(response, guard),
        Answer::Upgradable(mut response) => {
            if response.status() != StatusCode::SWITCHING_PROTOCOLS {
                return guarded(response, guard);
            }
            let Some(client_upgrade) = client_upgrade else {
                return error(
                    StatusCode::BAD_GATEWAY,
                    "pod switched protocols unasked".into(),
                );
            };
            let pod_upgrade = hyper::upgrade::on(&mut response);
            tokio::spawn(tunnel(client_upgrade, pod_upgrade, guard));
            let (parts, _) = response.into_parts();
            Response::from_parts(parts, Body::empty())
        }
    }
}

/// A pod's answer, by the connection it came on.
enum Answer {
    Pooled(Response<UpstreamBody>),
    Upgradable(Response<hyper::body::Incoming>),
}

/// The response for the client: hop-by-hop headers removed, the slot held until the body ends.
fn guarded<B>(response: Response<B>, guard: SlotGuard) -> Response<Body>
where
    B: HttpBody<Data = Bytes> + Unpin + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    Response::from_parts(
        parts,
        Body::new(GuardedBody {
            inner: body,
            guard: Some(guard),
        }),
    )
}

/// Turns a prepared request into one for an h2c pod: the authority (the `Host` the client
/// asked for) goes into the URI as `:authority`, `TE: trailers` stays when the client sent it
/// (gRPC servers require it). Called again on a request that failed over, which keeps its URI.
fn h2_request(request: &mut Request<Body>, pod: SocketAddr, te_trailers: bool) {
    let host = request.headers_mut().remove(header::HOST);
    let authority = host
        .and_then(|host| http::uri::Authority::try_from(host.as_bytes()).ok())
        .or_else(|| request.uri().authority().cloned())
        .or_else(|| http::uri::Authority::try_from(pod.to_string()).ok());
    let mut parts = http::uri::Parts::default();
    parts.scheme = Some(http::uri::Scheme::HTTP);
    parts.authority = authority;
    parts.path_and_query = Some(
        request
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/")),
    );
    if let Ok(uri) = Uri::from_parts(parts) {
        *request.uri_mut() = uri;
    }
    *request.version_mut() = Version::HTTP_2;
    if te_trailers {
        request
            .headers_mut()
            .insert(header::TE, HeaderValue::from_static("trailers"));
    }
}

/// Whether the client asked for trailers (`TE: trailers`).
fn wants_trailers(headers: &HeaderMap) -> bool {
    has_token(headers, &header::TE, "trailers")
}

const GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");

/// A gRPC request (`content-type: application/grpc`, `application/grpc+proto`, …).
fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// A gRPC client's deadline: `grpc-timeout` is up to 8 digits and a unit (`H`, `M`, `S`, `m`,
/// `u`, `n`); anything else is ignored, as gRPC servers do.
fn grpc_timeout(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(GRPC_TIMEOUT)?.as_bytes();
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b"H" => Duration::from_secs(n * 3600),
        b"M" => Duration::from_secs(n * 60),
        b"S" => Duration::from_secs(n),
        b"m" => Duration::from_millis(n),
        b"u" => Duration::from_micros(n),
        b"n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// `grpc-timeout` for what is left of a deadline (at least 1 ms, at most 8 digits).
fn grpc_timeout_value(left: Duration) -> HeaderValue {
    let millis = left.as_millis().max(1);
    let value = if millis < 100_000_000 {
        format!("{millis}m")
    } else {
        format!("{}S", left.as_secs().min(99_999_999))
    };
    HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static("1m"))
}

/// An answer tidegate made itself, as a gRPC client reads it: HTTP 200 with `grpc-status` and
/// `grpc-message` and no body (a trailers-only response). A timeout is `DEADLINE_EXCEEDED` (4),
/// no pod or a failed pod `UNAVAILABLE` (14); other codes follow gRPC's HTTP mapping. The
/// pod's own answers pass untouched.
fn grpc_refusal(response: Response<Body>) -> Response<Body> {
    let Some(Refusal(message)) = response.extensions().get::<Refusal>().cloned() else {
        return response;
    };
    let code = match response.status() {
        StatusCode::GATEWAY_TIMEOUT | StatusCode::REQUEST_TIMEOUT => "4",
        StatusCode::SERVICE_UNAVAILABLE
        | StatusCode::BAD_GATEWAY
        | StatusCode::TOO_MANY_REQUESTS => "14",
        StatusCode::BAD_REQUEST => "13",
        StatusCode::NOT_FOUND => "12",
        StatusCode::UNAUTHORIZED => "16",
        StatusCode::FORBIDDEN => "7",
        _ => "2",
    };
    let mut answer = Response::new(Body::empty());
    let headers = answer.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    headers.insert("grpc-status", HeaderValue::from_static(code));
    if let Ok(message) = HeaderValue::from_str(&grpc_percent_encode(&message)) {
        headers.insert("grpc-message", message);
    }
    answer
}

/// `grpc-message` encoding: bytes outside printable ASCII, and `%`, percent-encoded.
fn grpc_percent_encode(message: &str) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(message.len());
    for &b in message.as_bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// `/path?query` of a request target.
fn origin_form(uri: &Uri) -> Uri {
    uri.path_and_query()
        .and_then(|p| Uri::try_from(p.as_str()).ok())
        .unwrap_or_else(|| Uri::from_static("/"))
}

/// Copies bytes both ways until either side closes; the slot is held meanwhile.
async fn tunnel(
    client: hyper::upgrade::OnUpgrade,
    pod: hyper::upgrade::OnUpgrade,
    guard: SlotGuard,
) {
    match tokio::try_join!(client, pod) {
        Ok((client, pod)) => {
            let mut client = TokioIo::new(client);
            let mut pod = TokioIo::new(pod);
            if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut pod).await {
                tracing::debug!(error = %e, "Upgraded connection ended.");
            }
        }
        Err(e) => tracing::warn!(error = %e, "Connection upgrade failed."),
    }
    drop(guard);
}

fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE) && has_token(headers, &header::CONNECTION, "upgrade")
}

/// Whether the comma-separated header `name` lists `token` (case-insensitive).
pub(super) fn has_token(headers: &HeaderMap, name: &HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

fn prepare_request(request: &mut Request<Body>, peer: Option<SocketAddr>, upgrade: bool) {
    let upgrade_value = request.headers().get(header::UPGRADE).cloned();
    let host = request.headers().get(header::HOST).cloned().or_else(|| {
        request
            .uri()
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    });
    let headers = request.headers_mut();
    if headers.contains_key(header::TRANSFER_ENCODING) {
        // RFC 9112 §6.3: the body was framed by Transfer-Encoding; a Content-Length beside it
        // is wrong and must not reach the pod.
        headers.remove(header::CONTENT_LENGTH);
    }
    strip_hop_by_hop(headers);
    if let Some(host) = host {
        headers.insert(header::HOST, host.clone());
        headers.insert(HeaderName::from_static("x-forwarded-host"), host);
    }
    if let Some(peer) = peer {
        let value = match headers.get(X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
            Some(prior) => HeaderValue::from_str(&format!("{prior}, {}", peer.ip())).ok(),
            None => Some(peer_ip_value(peer.ip())),
        };
        if let Some(value) = value {
            headers.insert(X_FORWARDED_FOR, value);
        }
    }
    headers.insert(
        HeaderName::from_static("x-forwarded-proto"),
        HeaderValue::from_static("http"),
    );
    if upgrade && let Some(value) = upgrade_value {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, value);
    }
    *request.version_mut() = Version::HTTP_11;
}

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// A client address as a header value. Most requests on a thread come from the same few
/// addresses (an ingress, a load balancer), so the last one is kept: a hit costs a reference
/// count, not a format and an allocation.
fn peer_ip_value(ip: std::net::IpAddr) -> HeaderValue {
    thread_local! {
        static LAST: std::cell::RefCell<Option<(std::net::IpAddr, HeaderValue)>> =
            const { std::cell::RefCell::new(None) };
    }
    LAST.with(|last| {
        let mut last = last.borrow_mut();
        if let Some((cached, value)) = last.as_ref()
            && *cached == ip
        {
            return value.clone();
        }
        let value = HeaderValue::from_maybe_shared(Bytes::from(ip.to_string()))
            .unwrap_or_else(|_| HeaderValue::from_static("unknown"));
        *last = Some((ip, value.clone()));
        value
    })
}

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages carry none: one pass over the names instead of a lookup for each.
    if !headers
        .keys()
        .any(|name| name == header::UPGRADE || HOP_BY_HOP.contains(name))
    {
        return;
    }
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for name in listed.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
    headers.remove(header::UPGRADE);
}

fn upstream_uri(address: SocketAddr, uri: &Uri) -> Option<Uri> {
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    Uri::builder()
        .scheme("http")
        .authority(address.to_string())
        .path_and_query(path)
        .build()
        .ok()
}

/// A response body that releases the pod slot when it ends or is dropped.
struct GuardedBody<B> {
    inner: B,
    guard: Option<SlotGuard>,
}

impl<B> HttpBody for GuardedBody<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match polled {
            Poll::Ready(None) => {
                self.guard = None;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                self.guard = None;
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Ready(Some(Ok(frame))) => {
                if self.inner.is_end_stream() {
                    self.guard = None;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    HeaderName::from_bytes(k.as_bytes()).expect("name"),
                    HeaderValue::from_str(v).expect("value"),
                )
            })
            .collect()
    }

    #[test]
    fn grpc_timeouts_are_read_as_the_grpc_spec_writes_them_and_others_ignored() {
        let cases = [
            ("1H", Some(Duration::from_secs(3600))),
            ("2M", Some(Duration::from_secs(120))),
            ("3S", Some(Duration::from_secs(3))),
            ("250m", Some(Duration::from_millis(250))),
            ("99999999u", Some(Duration::from_micros(99_999_999))),
            ("5n", Some(Duration::from_nanos(5))),
            ("123456789m", None), // more than 8 digits
            ("m", None),
            ("10", None),
            ("10s", None),
            ("-1S", None),
        ];
        for (value, expected) in cases {
            assert_eq!(
                grpc_timeout(&headers(&[("grpc-timeout", value)])),
                expected,
                "{value}"
            );
        }
        assert_eq!(grpc_timeout(&HeaderMap::new()), None);
        assert_eq!(grpc_timeout_value(Duration::from_micros(10)), "1m");
        assert_eq!(grpc_timeout_value(Duration::from_millis(1500)), "1500m");
        assert_eq!(
            grpc_timeout_value(Duration::from_secs(200_000)),
            "200000S",
            "past 8 digits of milliseconds, seconds"
        );
    }

    #[test]
    fn answers_tidegate_made_reach_grpc_clients_as_statuses_and_pod_answers_pass() {
        let timeout = grpc_refusal(error(
            StatusCode::GATEWAY_TIMEOUT,
            "revision r did not answer within 8s: 100%".into(),
        ));
        assert_eq!(timeout.status(), StatusCode::OK);
        assert_eq!(timeout.headers()["content-type"], "application/grpc");
        assert_eq!(timeout.headers()["grpc-status"], "4");
        assert_eq!(
            timeout.headers()["grpc-message"],
            "revision r did not answer within 8s: 100%25"
        );
        assert!(timeout.body().is_end_stream(), "trailers-only");
        let unavailable = grpc_refusal(error(StatusCode::SERVICE_UNAVAILABLE, "none".into()));
        assert_eq!(unavailable.headers()["grpc-status"], "14");
        let failed = grpc_refusal(error(StatusCode::BAD_GATEWAY, "pod failed".into()));
        assert_eq!(failed.headers()["grpc-status"], "14");
        // A pod's own 503 is the pod's answer: untouched.
        let mut pod = Response::new(Body::empty());
        *pod.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        assert_eq!(grpc_refusal(pod).status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(grpc_percent_encode("naïve\n"), "na%C3%AFve%0A");
    }

    #[test]
    fn h2c_requests_carry_the_clients_authority_and_keep_te_trailers() {
        let mut request = Request::post("/demo.Demo/Say?x=1")
            .header(header::HOST, "rpc.default.example.com")
            .body(Body::empty())
            .expect("request");
        let pod: SocketAddr = "127.0.0.1:9000".parse().expect("addr");
        h2_request(&mut request, pod, true);
        assert_eq!(
            request.uri().to_string(),
            "http://rpc.default.example.com/demo.Demo/Say?x=1"
        );
        assert_eq!(request.version(), Version::HTTP_2);
        assert!(!request.headers().contains_key(header::HOST));
        assert_eq!(request.headers()[header::TE], "trailers");
        // Failed over to another pod: the authority stays the client's.
        h2_request(&mut request, "127.0.0.1:9001".parse().expect("addr"), true);
        assert_eq!(
            request.uri().authority().map(|a| a.as_str()),
            Some("rpc.default.example.com")
        );
        assert!(wants_trailers(&headers(&[("te", "gzip, trailers")])));
        assert!(!wants_trailers(&headers(&[("te", "gzip")])));
    }
}
