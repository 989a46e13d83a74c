//! Connections to pods.
//!
//! - **HTTP/1.1**, driven inside the proxied request's own task: hyper's pooled client runs
//!   every upstream connection as a task of its own, so each proxied request would wake a second
//!   task (often on another worker thread). Here the request future and, later, the response
//!   body poll the connection themselves; a connection whose response was read to the end goes
//!   back to a per-pod idle list. Upgrades (WebSocket) still use hyper's client.
//! - **h2c** (a container port named `h2c`): requests are multiplexed over at most
//!   [`H2_MAX_CONNECTIONS_PER_POD`] HTTP/2 connections per pod, each driven by a task of its
//!   own (one connection serves many requests). A request goes to the connection carrying the
//!   fewest open streams; another connection opens only when every one carries
//!   [`H2_STREAMS_PER_CONNECTION`]. Trailers and streaming bodies pass both ways.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, Connection, SendRequest};
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;

/// Idle connections kept per pod.
const MAX_IDLE_PER_POD: usize = 256;
/// Locks the idle lists are spread over, by pod address.
const SHARDS: usize = 16;
/// HTTP/2 connections per h2c pod at most.
pub const H2_MAX_CONNECTIONS_PER_POD: usize = 4;
/// Open streams on every connection to a pod before another connection to it opens.
pub const H2_STREAMS_PER_CONNECTION: usize = 64;
/// Pings on an HTTP/2 connection to a pod that is otherwise quiet, and the wait for the answer.
const H2_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(20);
const H2_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a request to a pod failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// Nothing was sent: the pod refused or could not be reached.
    #[error("could not connect: {0}")]
    Connect(std::io::Error),
    #[error("{0}")]
    Http(hyper::Error),
    #[error("the pod closed the connection without answering")]
    Closed,
}

struct PodConnection {
    send: SendRequest<Body>,
    conn: Connection<TokioIo<TcpStream>, Body>,
    /// The idle lists of the thread that opened it (whose runtime drives its I/O): it goes
    /// back there after a request, also one that borrowed it.
    home: Arc<IdleShards>,
}

impl PodConnection {
    /// Lets the connection process what it has (end of a response, a close by the pod) and says
    /// whether it can take another request.
    fn reusable(&mut self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        if Pin::new(&mut self.conn).poll(&mut cx).is_ready() {
            return false;
        }
        self.send.is_ready()
    }
}

/// Idle connections by pod. Boxed once per connection and moved by pointer between these lists
/// and responses.
#[allow(clippy::vec_box)]
type IdleLists = HashMap<SocketAddr, Vec<Box<PodConnection>>>;

/// One HTTP/2 connection to a pod and the streams open on it.
struct H2Connection {
    send: http2::SendRequest<Body>,
    streams: Arc<AtomicUsize>,
}

/// HTTP/2 connections by pod.
type H2Lists = HashMap<SocketAddr, Vec<H2Connection>>;

/// An open stream on an HTTP/2 connection, counted until dropped.
struct OpenStream(Arc<AtomicUsize>);

impl OpenStream {
    fn new(streams: &Arc<AtomicUsize>) -> Self {
        streams.fetch_add(1, Ordering::Relaxed);
        Self(Arc::clone(streams))
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Idle HTTP/1.1 connections and open HTTP/2 connections per pod address.
///
/// Each ingress thread has an `Upstream` of its own ([`Upstream::sibling`]): an HTTP/1.1
/// connection to a pod is registered with the runtime of the thread that opened it, so keeping
/// it on that thread keeps a request, its client connection and its pod connection on one core.
/// A thread with no idle connection to a pod that has no other request in flight borrows one
/// idle on a sibling before it opens another, and returns it there (its I/O stays with the
/// runtime that opened it; the borrowed request pays a cross-thread wake-up per read): a pod
/// that serves one connection at a time (Python's `http.server`) is never left waiting on a
/// connection that idles on another thread. Under load each thread opens its own.
/// HTTP/2 connections (a task each, many requests at once) are shared by all siblings, so a pod
/// gets at most [`H2_MAX_CONNECTIONS_PER_POD`] whatever the number of threads.
pub struct Upstream {
    idle: Arc<IdleShards>,
    /// The idle lists of every sibling, this one's included.
    all_idle: Arc<RwLock<Vec<Arc<IdleShards>>>>,
    h2: Arc<H2Pool>,
}

/// One `Upstream`'s idle HTTP/1.1 connections, sharded by pod address.
type IdleShards = [Mutex<IdleLists>; SHARDS];

/// The HTTP/2 connections every sibling [`Upstream`] shares.
struct H2Pool {
    lists: [Mutex<H2Lists>; SHARDS],
    builder: http2::Builder<TokioExecutor>,
}

impl Default for Upstream {
    fn default() -> Self {
        let mut builder = http2::Builder::new(TokioExecutor::new());
        builder
            .timer(TokioTimer::new())
            .adaptive_window(true)
            .keep_alive_interval(H2_KEEPALIVE_INTERVAL)
            .keep_alive_timeout(H2_KEEPALIVE_TIMEOUT);
        let idle = Arc::<IdleShards>::default();
        Self {
            all_idle: Arc::new(RwLock::new(vec![Arc::clone(&idle)])),
            idle,
            h2: Arc::new(H2Pool {
                lists: Default::default(),
                builder,
            }),
        }
    }
}

/// The shard of `address`: pods spread over several locks, so requests to different pods
/// rarely meet on one.
fn shard_index(address: SocketAddr) -> usize {
    let ip = match address.ip() {
        std::net::IpAddr::V4(ip) => u128::from(u32::from(ip)),
        std::net::IpAddr::V6(ip) => u128::from(ip),
    };
    let mixed = ip ^ (u128::from(address.port()) << 7) ^ u128::from(address.port());
    usize::try_from(mixed % SHARDS as u128).unwrap_or(0)
}

/// A request sent on an HTTP/2 connection: the answer to come, and the stream it holds.
type H2Sent = (
    Pin<
        Box<
            dyn Future<
                    Output = Result<
                        Response<Incoming>,
                        hyper::client::conn::TrySendError<Request<Body>>,
                    >,
                > + Send,
        >,
    >,
    OpenStream,
);

impl Upstream {
    /// An `Upstream` with idle HTTP/1.1 lists of its own that shares this one's HTTP/2
    /// connections.
    pub fn sibling(&self) -> Upstream {
        let idle = Arc::<IdleShards>::default();
        self.all_idle
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Arc::clone(&idle));
        Upstream {
            idle,
            all_idle: Arc::clone(&self.all_idle),
            h2: Arc::clone(&self.h2),
        }
    }

    /// The HTTP/2 lists of `address`'s shard.
    fn h2_shard(&self, address: SocketAddr) -> std::sync::MutexGuard<'_, H2Lists> {
        self.h2.lists[shard_index(address)]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Sends `request` on the least busy open connection to `address`, unless there is none or
    /// every one is busy while another may still open; then the request comes back (moved, not
    /// copied: the large error is the request itself).
    #[allow(clippy::result_large_err)]
    fn h2_try_send(
        &self,
        address: SocketAddr,
        request: Request<Body>,
    ) -> Result<H2Sent, Request<Body>> {
        let mut lists = self.h2_shard(address);
        let Some(list) = lists.get_mut(&address) else {
            return Err(request);
        };
        list.retain(|c| !c.send.is_closed());
        let room = list.len() < H2_MAX_CONNECTIONS_PER_POD;
        let Some(best) = list
            .iter_mut()
            .min_by_key(|c| c.streams.load(Ordering::Relaxed))
        else {
            lists.remove(&address);
            return Err(request);
        };
        if room && best.streams.load(Ordering::Relaxed) >= H2_STREAMS_PER_CONNECTION {
            return Err(request);
        }
        let stream = OpenStream::new(&best.streams);
        Ok((Box::pin(best.send.try_send_request(request)), stream))
    }

    /// Adds a new connection to `address` and sends `request` on it.
    fn h2_add_and_send(
        &self,
        address: SocketAddr,
        mut send: http2::SendRequest<Body>,
        request: Request<Body>,
    ) -> H2Sent {
        let streams = Arc::new(AtomicUsize::new(0));
        let stream = OpenStream::new(&streams);
        let answer = Box::pin(send.try_send_request(request));
        let mut lists = self.h2_shard(address);
        let list = lists.entry(address).or_default();
        // Connections opened at once by requests that raced: the surplus serves its one
        // request and closes when that ends.
        if list.len() < H2_MAX_CONNECTIONS_PER_POD {
            list.push(H2Connection { send, streams });
        }
        (answer, stream)
    }

    /// Sends `request` to the h2c pod at `address` over HTTP/2 (the request carries its
    /// authority in its URI). As [`Upstream::send`], a request that certainly never reached the
    /// pod comes back in the error.
    pub async fn send_h2(
        self: &Arc<Self>,
        address: SocketAddr,
        request: Request<Body>,
    ) -> Result<Response<UpstreamBody>, SendError> {
        let (answer, stream) = match self.h2_try_send(address, request) {
            Ok(sent) => sent,
            Err(request) => match connect_h2(address, &self.h2.builder).await {
                Ok(send) => self.h2_add_and_send(address, send, request),
                Err(error) => {
                    return Err(SendError {
                        error,
                        unsent: Some(request),
                    });
                }
            },
        };
        match answer.await {
            Ok(response) => Ok(response.map(|inner| UpstreamBody {
                inner,
                conn: None,
                stream: Some(stream),
                address,
            })),
            Err(mut e) => {
                let unsent = e.take_message();
                Err(SendError {
                    error: UpstreamError::Http(e.into_error()),
                    unsent,
                })
            }
        }
    }

    /// An idle connection to `address`: this thread's, else, when `alone()` (nothing else is
    /// in flight on the pod), a sibling's.
    fn take(
        &self,
        address: SocketAddr,
        alone: impl FnOnce() -> bool,
    ) -> Option<Box<PodConnection>> {
        if let Some(pc) = take_from(&self.idle, address) {
            return Some(pc);
        }
        if !alone() {
            return None;
        }
        let all = self.all_idle.read().unwrap_or_else(PoisonError::into_inner);
        all.iter()
            .filter(|other| !Arc::ptr_eq(other, &self.idle))
            .find_map(|other| take_from(other, address))
    }

    fn put(address: SocketAddr, mut pc: Box<PodConnection>) {
        if !pc.reusable() {
            return;
        }
        let home = Arc::clone(&pc.home);
        let mut idle = lock_shard(&home, address);
        let list = idle.entry(address).or_default();
        if list.len() < MAX_IDLE_PER_POD {
            list.push(pc);
        }
    }

    /// Sends `request` to the pod at `address` and returns its response head; the body streams
    /// from the same connection as it is read. A request that certainly never reached the pod
    /// comes back in the error, untouched, so it can go to another pod. `alone()` says whether
    /// this is the only request in flight on the pod (asked only when this thread has no idle
    /// connection to it).
    pub async fn send(
        self: &Arc<Self>,
        address: SocketAddr,
        request: Request<Body>,
        alone: impl FnOnce() -> bool,
    ) -> Result<Response<UpstreamBody>, SendError> {
        let mut pc = match self.take(address, alone) {
            Some(pc) => pc,
            None => match connect(address, &self.idle).await {
                Ok(pc) => pc,
                Err(error) => {
                    return Err(SendError {
                        error,
                        unsent: Some(request),
                    });
                }
            },
        };
        let response = pc.send.try_send_request(request);
        let mut response = std::pin::pin!(response);
        let answer = std::future::poll_fn(|cx| {
            if let Poll::Ready(r) = response.as_mut().poll(cx) {
                return Poll::Ready(Some(r));
            }
            match Pin::new(&mut pc.conn).poll(cx) {
                Poll::Pending => Poll::Pending,
                // The connection ended; the request learns why, or never had an answer.
                Poll::Ready(_) => match response.as_mut().poll(cx) {
                    Poll::Ready(r) => Poll::Ready(Some(r)),
                    Poll::Pending => Poll::Ready(None),
                },
            }
        })
        .await;
        match answer {
            Some(Ok(response)) => Ok(response.map(|inner| UpstreamBody {
                inner,
                conn: Some(pc),
                stream: None,
                address,
            })),
            Some(Err(mut e)) => {
                let unsent = e.take_message();
                Err(SendError {
                    error: UpstreamError::Http(e.into_error()),
                    unsent,
                })
            }
            None => Err(SendError {
                error: UpstreamError::Closed,
                unsent: None,
            }),
        }
    }
}

/// The idle lists of `address`'s shard in `shards`.
fn lock_shard(shards: &IdleShards, address: SocketAddr) -> std::sync::MutexGuard<'_, IdleLists> {
    shards[shard_index(address)]
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
}

/// A reusable idle connection to `address` from `shards`; closed ones found on the way go.
fn take_from(shards: &IdleShards, address: SocketAddr) -> Option<Box<PodConnection>> {
    let mut idle = lock_shard(shards, address);
    let list = idle.get_mut(&address)?;
    while let Some(mut pc) = list.pop() {
        if pc.reusable() {
            return Some(pc);
        }
    }
    idle.remove(&address);
    None
}

/// A new connection to a pod. Boxed once per connection, so moving it per request stays cheap.
async fn connect(
    address: SocketAddr,
    home: &Arc<IdleShards>,
) -> Result<Box<PodConnection>, UpstreamError> {
    let stream = TcpStream::connect(address)
        .await
        .map_err(UpstreamError::Connect)?;
    let _ = stream.set_nodelay(true);
    let (send, conn) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(UpstreamError::Http)?;
    Ok(Box::new(PodConnection {
        send,
        conn,
        home: Arc::clone(home),
    }))
}

/// A new HTTP/2 connection (prior knowledge) to an h2c pod, driven by a task of its own until
/// every handle to it is gone and its streams ended.
async fn connect_h2(
    address: SocketAddr,
    builder: &http2::Builder<TokioExecutor>,
) -> Result<http2::SendRequest<Body>, UpstreamError> {
    let stream = TcpStream::connect(address)
        .await
        .map_err(UpstreamError::Connect)?;
    let _ = stream.set_nodelay(true);
    let (send, conn) = builder
        .handshake(TokioIo::new(stream))
        .await
        .map_err(UpstreamError::Http)?;
    tokio::spawn(async move {
        if let Err(error) = conn.await {
            tracing::debug!(%address, %error, "HTTP/2 connection to a pod ended.");
        }
    });
    Ok(send)
}

/// A failed send; `unsent` holds the request when it never reached the pod.
#[derive(Debug)]
pub struct SendError {
    pub error: UpstreamError,
    pub unsent: Option<Request<Body>>,
}

/// A pod's response body. On HTTP/1.1 reading it drives the connection, which is reused once
/// the body ended; on HTTP/2 it holds its stream open (counted on its connection) until dropped.
pub struct UpstreamBody {
    inner: Incoming,
    conn: Option<Box<PodConnection>>,
    stream: Option<OpenStream>,
    address: SocketAddr,
}

impl UpstreamBody {
    fn recycle(&mut self) {
        if self.inner.is_end_stream()
            && let Some(pc) = self.conn.take()
        {
            Upstream::put(self.address, pc);
        }
    }
}

impl HttpBody for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        if let Some(pc) = &mut this.conn
            && Pin::new(&mut pc.conn).poll(cx).is_ready()
        {
            this.conn = None;
        }
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None)) {
            this.recycle();
            this.stream = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        // An empty body is often never polled; its connection is still good.
        self.recycle();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn refused_requests_come_back_and_answered_ones_share_a_connection_across_threads() {
        let upstream = Arc::new(Upstream::default());
        let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let address = closed.local_addr().expect("addr");
        drop(closed);
        let request = Request::post("/x")
            .header("x-id", "7")
            .body(Body::from("payload"));
        let err = upstream
            .send(address, request.expect("request"), || true)
            .await
            .err()
            .expect("refused");
        assert!(matches!(err.error, UpstreamError::Connect(_)));
        let unsent = err.unsent.expect("the request comes back");
        assert_eq!(unsent.headers()["x-id"], "7");

        // A real pod: two requests in a row share one connection.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("addr");
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = Arc::clone(&accepted);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let service = hyper::service::service_fn(|_req| async {
                    Ok::<_, std::convert::Infallible>(Response::new(Body::from("ok")))
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service),
                );
            }
        });
        // The third from another ingress thread's Upstream: it takes the idle connection
        // rather than open a second one (a pod may serve one connection at a time).
        let sibling = Arc::new(upstream.sibling());
        for upstream in [&upstream, &upstream, &sibling] {
            let response = upstream
                .send(
                    address,
                    Request::get("/").body(Body::empty()).expect("request"),
                    || true,
                )
                .await
                .expect("answer");
            let body = http_body_util::BodyExt::collect(response.into_body())
                .await
                .expect("body");
            assert_eq!(&body.to_bytes()[..], b"ok");
        }
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1);
    }
}
