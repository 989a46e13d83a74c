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

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

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

use super::conn::{BodyFault, BodyFaultKind};
use super::upstream::{SendError, Upstream, UpstreamBody};
use crate::metrics::ProxyOutcome;
use crate::revision::route::Route;
use crate::revision::{DispatchError, SlotGuard};

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

/// A JSON error answer, with the field at fault when the client is to blame: 503 carries
/// `Retry-After`, 408 closes the connection.
fn error_with_field(status: StatusCode, message: String, field: Option<&str>) -> Response<Body> {
    let body = match field {
        Some(field) => serde_json::json!({ "error": message, "field": field }),
        None => serde_json::json!({ "error": message }),
    };
    let mut response = (status, axum::Json(body)).into_response();
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
    mut request: Request<Body>,
    peer: Option<SocketAddr>,
    fault: &BodyFault,
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
    let deadline = Instant::now() + revision.timeout;
    let mut attempts = 1;
    let upgrade = is_upgrade(request.headers());
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut request));
    let mut next = Some(request);
    let mut prepared = false;
    let (guard, answer) = loop {
        let guard = match revision.acquire(deadline).await {
            Ok(guard) => guard,
            Err(e) => {
                revision.proxied.count(match e {
                    DispatchError::QueueFull(..) => ProxyOutcome::QueueFull,
                    DispatchError::Timeout(_) => ProxyOutcome::NoSlot,
                });
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
            *upstream.uri_mut() = origin_form(upstream.uri());
            // Boxed: a queued request's future must not carry the send machinery's size.
            let send = Box::pin(state.upstream.send(guard.address(), upstream));
            match tokio::time::timeout_at(answer_by, send).await {
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
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
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
        let value = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
            Some(prior) => format!("{prior}, {}", peer.ip()),
            None => peer.ip().to_string(),
        };
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(HeaderName::from_static("x-forwarded-for"), value);
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

fn strip_hop_by_hop(headers: &mut HeaderMap) {
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
