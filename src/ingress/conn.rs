//! Connection handling shared by the ingress and the admin listener: timeouts, a cap on open
//! connections, request bodies that cannot stall, and shedding of idle connections under pressure.
//! A connection is served by [`super::h1`] while its requests are the plain HTTP/1.1 kind that
//! arrived whole, and by hyper (HTTP/1.1 and h2c) from the first one that is not.
//!
//! - **Headers**: hyper's header read timeout runs from the moment a connection waits for a
//!   request until its head is complete, so on HTTP/1.1 it also bounds keep-alive idleness.
//! - **Idle**: a connection with no request open for [`ConnLimits::idle_timeout`] is shut down
//!   gracefully (HTTP/2 gets a GOAWAY). A request queued for a pod slot is open, not idle.
//! - **Bodies**: [`ClientBody`] fails a body that sends nothing for
//!   [`ConnLimits::body_read_timeout`] or is not complete [`ConnLimits::body_timeout`] after it
//!   was first read; the error is recorded in a [`BodyFault`] so the handler can answer 408 (or
//!   400 for a malformed body) and blame the client, not the pod.
//! - **Cap**: at most [`ConnLimits::max_connections`] connections are open; at the cap the accept
//!   loop stops accepting (new connections wait in the kernel's backlog) and asks idle
//!   connections to close, so a flood of idle connections cannot starve well-behaved clients,
//!   and the descriptors above the cap stay free for the admin listener and pod connections.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::AsyncWriteExt as _;
use tokio::sync::{Notify, Semaphore};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;

use super::h1;

/// Default time to receive a request's headers (hyper's default; nginx uses 60 s).
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Default time a connection may stay open with no request (nginx keep-alive: 75 s).
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Default longest pause between two reads of a request body (nginx: 60 s).
pub const DEFAULT_BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Default longest time to receive a whole request body once its first byte is read.
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(300);
/// Default interval of HTTP/2 keep-alive pings on a connection that is otherwise quiet.
pub const DEFAULT_H2_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// Default wait for a ping's acknowledgement before the connection is closed.
pub const DEFAULT_H2_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// Default concurrent streams per HTTP/2 connection (nginx: 128, Go: 250).
pub const DEFAULT_H2_MAX_CONCURRENT_STREAMS: u32 = 250;
/// Connections of the admin listener at most (it serves probes and dashboards, not traffic).
pub const ADMIN_MAX_CONNECTIONS: usize = 128;
/// File descriptors kept out of the ingress cap whatever the limit (files, pods, admin).
const RESERVED_DESCRIPTORS: u64 = 256;
/// A connection is shed under pressure only after it has been idle this long, so a client that
/// just connected gets to send its request.
const SHED_MIN_IDLE: Duration = Duration::from_millis(200);
/// How long a connection asked to shut down gets to finish before it is dropped.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Timeouts and limits of one listener.
#[derive(Clone, Debug)]
pub struct ConnLimits {
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub body_read_timeout: Duration,
    pub body_timeout: Duration,
    pub h2_keepalive_interval: Duration,
    pub h2_keepalive_timeout: Duration,
    pub h2_max_concurrent_streams: u32,
    pub max_connections: usize,
}

impl Default for ConnLimits {
    fn default() -> Self {
        ConnLimits {
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            body_read_timeout: DEFAULT_BODY_READ_TIMEOUT,
            body_timeout: DEFAULT_BODY_TIMEOUT,
            h2_keepalive_interval: DEFAULT_H2_KEEPALIVE_INTERVAL,
            h2_keepalive_timeout: DEFAULT_H2_KEEPALIVE_TIMEOUT,
            h2_max_concurrent_streams: DEFAULT_H2_MAX_CONCURRENT_STREAMS,
            // Replaced at start by the cap derived from the descriptor limit.
            max_connections: 1024,
        }
    }
}

/// Raises the soft file-descriptor limit to the hard one (as servers do) and returns the soft
/// limit in force afterwards.
pub fn raise_descriptor_limit() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => hard,
            Err(error) => {
                tracing::warn!(%error, soft, hard, "Could not raise the file-descriptor limit.");
                soft
            }
        },
        Ok((soft, _)) => soft,
        Err(error) => {
            tracing::warn!(%error, "Could not read the file-descriptor limit.");
            1024
        }
    }
}

/// The ingress connection cap for a descriptor limit: half of it, and never closer to it than
/// [`RESERVED_DESCRIPTORS`], so the admin listener, pod connections and files keep descriptors
/// of their own. `requested` (a flag) is honoured up to that bound.
pub fn connection_cap(descriptor_limit: u64, requested: Option<usize>) -> usize {
    let ceiling = descriptor_limit
        .saturating_sub(RESERVED_DESCRIPTORS)
        .max(descriptor_limit / 2)
        .max(1);
    let default = (descriptor_limit / 2).max(1);
    let cap = match requested {
        Some(n) if n as u64 > ceiling => {
            tracing::warn!(
                requested = n,
                ceiling,
                descriptor_limit,
                "--max-connections is above what the descriptor limit leaves; using the ceiling."
            );
            ceiling
        }
        Some(n) => n as u64,
        None => default,
    };
    usize::try_from(cap.max(1)).unwrap_or(usize::MAX)
}

/// Why a request body failed; recorded for the handler that reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFaultKind {
    /// The client stopped sending (408).
    Timeout,
    /// The body was malformed or the connection broke (400; the client's fault).
    Malformed,
}

/// Records whether the client's body failed, so a handler whose send to a pod failed can tell
/// the client's fault from the pod's. A request without a body (most GETs) allocates nothing.
#[derive(Clone, Debug, Default)]
pub struct BodyFault(Option<Arc<AtomicU8>>);

impl BodyFault {
    fn set(&self, kind: BodyFaultKind) {
        let value = match kind {
            BodyFaultKind::Timeout => 1,
            BodyFaultKind::Malformed => 2,
        };
        if let Some(cell) = &self.0 {
            cell.store(value, Ordering::Relaxed);
        }
    }

    /// The body's failure, if it failed.
    pub fn get(&self) -> Option<BodyFaultKind> {
        match self.0.as_ref()?.load(Ordering::Relaxed) {
            1 => Some(BodyFaultKind::Timeout),
            2 => Some(BodyFaultKind::Malformed),
            _ => None,
        }
    }
}

/// The error a [`ClientBody`] yields.
#[derive(Debug, thiserror::Error)]
pub enum ClientBodyError {
    #[error("the request body stalled: nothing arrived for {0:?}")]
    Stalled(Duration),
    #[error("the request body was not complete within {0:?}")]
    TooSlow(Duration),
    #[error("the request body could not be read: {0}")]
    Read(hyper::Error),
}

impl ClientBodyError {
    pub fn kind(&self) -> BodyFaultKind {
        match self {
            ClientBodyError::Stalled(_) | ClientBodyError::TooSlow(_) => BodyFaultKind::Timeout,
            ClientBodyError::Read(_) => BodyFaultKind::Malformed,
        }
    }

    /// The client-body failure somewhere in `error`'s source chain.
    pub fn find<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a ClientBodyError> {
        let mut current = Some(error);
        while let Some(e) = current {
            if let Some(found) = e.downcast_ref::<ClientBodyError>() {
                return Some(found);
            }
            current = e.source();
        }
        None
    }
}

/// A request body with a timeout between reads and one for the whole body. The clocks start at
/// the first read, so a request waiting in a revision's queue is not timed out by them.
pub struct ClientBody {
    inner: Inner,
    read_timeout: Duration,
    total_timeout: Duration,
    /// Set at the first poll.
    deadline: Option<Instant>,
    /// Allocated only when a read has to wait.
    sleep: Option<Pin<Box<Sleep>>>,
    fault: BodyFault,
}

/// Where a request body comes from.
enum Inner {
    /// Read by hyper as the handler asks for it.
    Incoming(Incoming),
    /// Read with the head already (see [`super::h1`]).
    Buffered(Option<Bytes>),
}

impl ClientBody {
    pub fn new(inner: Incoming, limits: &ConnLimits) -> ClientBody {
        let inner_is_empty = inner.is_end_stream();
        ClientBody {
            inner: Inner::Incoming(inner),
            read_timeout: limits.body_read_timeout,
            total_timeout: limits.body_timeout,
            deadline: None,
            sleep: None,
            fault: if inner_is_empty {
                BodyFault(None)
            } else {
                BodyFault(Some(Arc::default()))
            },
        }
    }

    /// A body that arrived whole: it cannot stall or break, so it has no timeouts.
    pub fn buffered(body: Bytes) -> ClientBody {
        ClientBody {
            inner: Inner::Buffered((!body.is_empty()).then_some(body)),
            read_timeout: Duration::ZERO,
            total_timeout: Duration::ZERO,
            deadline: None,
            sleep: None,
            fault: BodyFault(None),
        }
    }

    /// Where this body's failure is recorded.
    pub fn fault(&self) -> BodyFault {
        self.fault.clone()
    }

    fn fail(
        &mut self,
        error: ClientBodyError,
    ) -> Poll<Option<Result<Frame<Bytes>, ClientBodyError>>> {
        self.fault.set(error.kind());
        self.sleep = None;
        Poll::Ready(Some(Err(error)))
    }
}

impl HttpBody for ClientBody {
    type Data = Bytes;
    type Error = ClientBodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        let inner = match &mut this.inner {
            Inner::Incoming(inner) => inner,
            Inner::Buffered(body) => return Poll::Ready(body.take().map(|b| Ok(Frame::data(b)))),
        };
        let now = Instant::now();
        let deadline = *this.deadline.get_or_insert(now + this.total_timeout);
        match Pin::new(inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                // Data arrived: the pause clock restarts at the next wait.
                if let Some(sleep) = this.sleep.as_mut() {
                    sleep.as_mut().reset(far_future());
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => this.fail(ClientBodyError::Read(e)),
            Poll::Ready(None) => {
                this.sleep = None;
                Poll::Ready(None)
            }
            Poll::Pending => {
                if now >= deadline {
                    return this.fail(ClientBodyError::TooSlow(this.total_timeout));
                }
                let pause_ends = (now + this.read_timeout).min(deadline);
                let sleep = this
                    .sleep
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(pause_ends)));
                // Parked (far future) after data arrived, or armed later than this pause ends.
                if sleep.deadline() > pause_ends {
                    sleep.as_mut().reset(pause_ends);
                }
                ready!(sleep.as_mut().poll(cx));
                let error = if Instant::now() >= deadline {
                    ClientBodyError::TooSlow(this.total_timeout)
                } else {
                    ClientBodyError::Stalled(this.read_timeout)
                };
                this.fail(error)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Incoming(inner) => inner.is_end_stream(),
            Inner::Buffered(body) => body.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Incoming(inner) => inner.size_hint(),
            Inner::Buffered(body) => {
                SizeHint::with_exact(body.as_ref().map_or(0, |b| b.len() as u64))
            }
        }
    }
}

/// A deadline that never comes (a year away), for a parked sleep.
fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(365 * 24 * 3600)
}

/// Activity of one connection: requests open and when the last one ended.
pub struct ConnState {
    open: AtomicUsize,
    /// Set when the connection should close after the answers it owes.
    pub closing: AtomicBool,
    /// Milliseconds since `epoch` when the connection last became idle.
    idle_since: AtomicU64,
    epoch: Instant,
}

impl ConnState {
    fn new() -> ConnState {
        ConnState {
            open: AtomicUsize::new(0),
            closing: AtomicBool::new(false),
            idle_since: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    pub fn enter(self: &Arc<Self>) -> OpenRequest {
        self.open.fetch_add(1, Ordering::AcqRel);
        OpenRequest(Arc::clone(self))
    }

    /// How long the connection has been idle, or `None` while a request is open.
    fn idle_for(&self) -> Option<Duration> {
        if self.open.load(Ordering::Acquire) > 0 {
            return None;
        }
        let since = Duration::from_millis(self.idle_since.load(Ordering::Acquire));
        Some(self.epoch.elapsed().saturating_sub(since))
    }
}

/// An open request on a connection; the connection is idle again once every one is dropped.
pub struct OpenRequest(Arc<ConnState>);

impl Drop for OpenRequest {
    fn drop(&mut self) {
        let state = &self.0;
        let millis = u64::try_from(state.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        state.idle_since.store(millis, Ordering::Release);
        state.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A request as handlers get it, with where its body's failure is recorded.
pub type IncomingRequest = Request<ClientBody>;

/// What every listener thread of one listener shares: the cap on open connections and the
/// signal that asks idle connections to close when it is reached.
pub struct ConnGate {
    permits: Arc<Semaphore>,
    pressure: Notify,
}

impl ConnGate {
    pub fn new(max_connections: usize) -> Arc<ConnGate> {
        Arc::new(ConnGate {
            permits: Arc::new(Semaphore::new(max_connections)),
            pressure: Notify::new(),
        })
    }
}

/// Serves HTTP/1.1 and h2c connections from `listener` with `handler` until `stop` fires, then
/// shuts every connection down gracefully and waits for them.
pub async fn serve<H, F>(
    listener: tokio::net::TcpListener,
    limits: ConnLimits,
    handler: H,
    stop: CancellationToken,
) where
    H: Fn(IncomingRequest, SocketAddr) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<axum::body::Body>> + Send + 'static,
{
    let gate = ConnGate::new(limits.max_connections);
    serve_gated(listener, Arc::new(limits), gate, handler, stop).await;
}

/// As [`serve`], for one of several accept loops on one listener (one per ingress thread):
/// `gate` caps the connections of all of them together.
pub async fn serve_gated<H, F>(
    listener: tokio::net::TcpListener,
    limits: Arc<ConnLimits>,
    gate: Arc<ConnGate>,
    handler: H,
    stop: CancellationToken,
) where
    H: Fn(IncomingRequest, SocketAddr) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<axum::body::Body>> + Send + 'static,
{
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(limits.h2_keepalive_interval)
        .keep_alive_timeout(limits.h2_keepalive_timeout)
        .max_concurrent_streams(limits.h2_max_concurrent_streams);
    let builder = Arc::new(builder);
    let tracker = tokio_util::task::TaskTracker::new();
    loop {
        // At the cap: stop accepting and ask idle connections to make room.
        let permit = loop {
            match Arc::clone(&gate.permits).try_acquire_owned() {
                Ok(permit) => break Some(permit),
                Err(_) => {
                    gate.pressure.notify_waiters();
                    let acquired = tokio::select! {
                        permit = Arc::clone(&gate.permits).acquire_owned() => permit.ok(),
                        () = tokio::time::sleep(SHED_MIN_IDLE) => None,
                        () = stop.cancelled() => break None,
                    };
                    if let Some(permit) = acquired {
                        break Some(permit);
                    }
                }
            }
        };
        let Some(permit) = permit else { break };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(%error, "Could not accept a connection.");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = stop.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        let (builder, limits, gate, handler, stop) = (
            Arc::clone(&builder),
            Arc::clone(&limits),
            Arc::clone(&gate),
            handler.clone(),
            stop.clone(),
        );
        let task = async move {
            serve_connection(stream, peer, &builder, &limits, &gate, handler, &stop).await;
            drop(permit);
        };
        tracker.spawn(task);
    }
    drop(listener);
    tracker.close();
    tracker.wait().await;
}

/// Serves one connection: HTTP/1.1 requests by [`h1`] while they are of the kind it serves,
/// then (or for h2c from the start) by hyper, until it closes, a timeout or pressure closes it
/// while idle, or `stop` fires (open requests are answered first).
async fn serve_connection<H, F>(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    builder: &hyper_util::server::conn::auto::Builder<TokioExecutor>,
    limits: &Arc<ConnLimits>,
    gate: &ConnGate,
    handler: H,
    stop: &CancellationToken,
) where
    H: Fn(IncomingRequest, SocketAddr) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<axum::body::Body>> + Send + 'static,
{
    let state = Arc::new(ConnState::new());
    // The watch for shutdown waits for rare things (its timer, pressure, stop): polled only
    // when one of them woke it, not at every read and write of the connection.
    let watch = std::pin::pin!(until_shutdown(&state, limits, &gate.pressure, stop));
    let mut shutdown = WhenWoken::new(watch);
    let mut shutdown_fired = false;
    let mut stream = stream;
    let mut pending = bytes::BytesMut::new();
    let end = {
        let mut fast = std::pin::pin!(h1::serve(
            &stream,
            &mut pending,
            peer,
            limits,
            &state,
            &handler
        ));
        std::future::poll_fn(|cx| {
            if let Poll::Ready(end) = fast.as_mut().poll(cx) {
                return Poll::Ready(end);
            }
            if !shutdown_fired && Pin::new(&mut shutdown).poll(cx).is_ready() {
                shutdown_fired = true;
                state.closing.store(true, Ordering::Release);
            }
            // Asked to close: at once when no answer is owed, else after it (h1 sees `closing`).
            if shutdown_fired && state.idle_for().is_some() {
                return Poll::Ready(h1::End::Closed);
            }
            Poll::Pending
        })
        .await
    };
    if let h1::End::Closed = end {
        // The client reads the last answer to its end before the socket closes.
        let _ = tokio::time::timeout(SHUTDOWN_GRACE, stream.shutdown()).await;
        return;
    }
    // Boxed: hyper's connection is large and rare here, and would make every connection
    // (and every request waiting for a revision) as large.
    let shutdown = (!shutdown_fired).then_some(&mut shutdown);
    let io = h1::Rewind::new(stream, pending.freeze());
    Box::pin(serve_with_hyper(
        io, peer, builder, limits, &state, handler, shutdown, stop,
    ))
    .await;
}

/// The rest of a connection, served by hyper; `shutdown` is the connection's watch unless it
/// fired already.
#[allow(clippy::too_many_arguments)]
async fn serve_with_hyper<H, F, W>(
    io: h1::Rewind,
    peer: SocketAddr,
    builder: &hyper_util::server::conn::auto::Builder<TokioExecutor>,
    limits: &Arc<ConnLimits>,
    state: &Arc<ConnState>,
    handler: H,
    shutdown: Option<&mut W>,
    stop: &CancellationToken,
) where
    H: Fn(IncomingRequest, SocketAddr) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<axum::body::Body>> + Send + 'static,
    W: Future<Output = ()> + Unpin,
{
    let service = {
        let (state, limits) = (Arc::clone(state), Arc::clone(limits));
        hyper::service::service_fn(move |request: Request<Incoming>| {
            let open = state.enter();
            let request = request.map(|body| ClientBody::new(body, &limits));
            let response = handler(request, peer);
            async move {
                let response = response.await;
                Ok::<_, Infallible>(response.map(|inner| TrackedBody { inner, _open: open }))
            }
        })
    };
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    let mut connection = std::pin::pin!(connection);
    let outcome = match shutdown {
        None => None,
        Some(shutdown) => {
            std::future::poll_fn(|cx| {
                if let Poll::Ready(result) = connection.as_mut().poll(cx) {
                    return Poll::Ready(Some(result));
                }
                Pin::new(&mut *shutdown).poll(cx).map(|()| None)
            })
            .await
        }
    };
    let result = match outcome {
        Some(result) => result,
        None => {
            connection.as_mut().graceful_shutdown();
            if stop.is_cancelled() {
                // Draining: open requests get the caller's drain timeout.
                connection.await
            } else {
                // Idle: nothing is lost by dropping it if it does not close in time.
                tokio::time::timeout(SHUTDOWN_GRACE, connection)
                    .await
                    .unwrap_or(Ok(()))
            }
        }
    };
    if let Err(error) = result {
        tracing::debug!(%error, "Connection ended with an error.");
    }
}

/// A future polled only after its own waker fired (and at the first poll), so a task that
/// also drives busier futures does not re-poll it, and re-register its wakers, at every wake-up.
struct WhenWoken<'a, F> {
    inner: Pin<&'a mut F>,
    flag: Arc<WakeFlag>,
}

/// Records that the inner future was woken, then wakes the task.
struct WakeFlag {
    woken: AtomicBool,
    task: futures::task::AtomicWaker,
}

impl std::task::Wake for WakeFlag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

impl<'a, F: Future> WhenWoken<'a, F> {
    fn new(inner: Pin<&'a mut F>) -> Self {
        WhenWoken {
            inner,
            flag: Arc::new(WakeFlag {
                woken: AtomicBool::new(true),
                task: futures::task::AtomicWaker::new(),
            }),
        }
    }
}

impl<F: Future> Future for WhenWoken<'_, F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.flag.task.register(cx.waker());
        if !self.flag.woken.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        let waker = std::task::Waker::from(Arc::clone(&self.flag));
        self.inner.as_mut().poll(&mut Context::from_waker(&waker))
    }
}

/// Returns when the connection should shut down: idle for the idle timeout, idle while the
/// listener is at its cap, or the listener stops. Requests do not wake it: the idle timer
/// re-checks when it fires and sleeps for whatever is left, so the request path pays nothing.
async fn until_shutdown(
    state: &ConnState,
    limits: &ConnLimits,
    pressure: &Notify,
    stop: &CancellationToken,
) {
    loop {
        let idle_deadline = match state.idle_for() {
            Some(idle) => Instant::now() + limits.idle_timeout.saturating_sub(idle),
            None => Instant::now() + limits.idle_timeout,
        };
        tokio::select! {
            () = tokio::time::sleep_until(idle_deadline) => {
                if state.idle_for().is_some_and(|idle| idle >= limits.idle_timeout) {
                    return;
                }
            }
            () = pressure.notified() => {
                if state.idle_for().is_some_and(|idle| idle >= SHED_MIN_IDLE) {
                    return;
                }
            }
            () = stop.cancelled() => return,
        }
    }
}

/// A response body that keeps its request open on the connection until it ends.
struct TrackedBody {
    inner: axum::body::Body,
    _open: OpenRequest,
}

impl HttpBody for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
