//! Everything that listens on a socket: the ingress (CloudEvents receiver and HTTP proxy by
//! host) and the admin API. A request whose `Host` names a Knative Service is proxied to it;
//! anything else is for the CloudEvents receiver (`POST /{namespace}/{broker}`).

pub mod admin;
pub mod conn;
pub mod dashboard;
pub mod events;
mod h1;
pub mod proxy;
pub mod upstream;

use std::sync::Arc;

use axum::body::Body;
use tower::ServiceExt as _;

/// Starts serving the ingress on `listener` from `threads` threads until `stop` fires, then
/// lets open requests finish; [`Ingress::finished`] resolves once every thread is done.
///
/// nginx's model: each thread runs a single-threaded runtime with an accept loop of its own on
/// the one listening socket (whichever thread is free takes the next connection), and serves
/// that connection, its requests and their pod connections itself, so a proxied request never
/// crosses to another core or wakes another thread. Everything else (autoscalers, deliveries,
/// brokers, the admin API) stays on the main runtime; revisions' dispatch queues and the
/// brokers are reached through runtime-independent locks and channels. The connection cap is
/// shared by all threads.
///
/// Our own accept loop ([`conn::serve_gated`]) instead of `axum::serve`: proxied requests go
/// straight from the connection (served by [`h1`] or, for what it does not serve, by hyper) to
/// [`proxy::forward`] without the router in between, every connection gets `TCP_NODELAY`, and
/// the listener's timeouts and connection cap apply.
pub fn start(
    listener: std::net::TcpListener,
    threads: usize,
    limits: conn::ConnLimits,
    events: events::IngressState,
    proxy: proxy::ProxyState,
    stop: tokio_util::sync::CancellationToken,
) -> anyhow::Result<Ingress> {
    use anyhow::Context as _;
    listener
        .set_nonblocking(true)
        .context("setting the ingress listener non-blocking")?;
    let gate = conn::ConnGate::new(limits.max_connections);
    let limits = Arc::new(limits);
    let events = events::router(events);
    let mut finished = Vec::new();
    for index in 0..threads.max(1) {
        let listener = listener
            .try_clone()
            .context("sharing the ingress listener with an ingress thread")?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting an ingress runtime")?;
        let (proxy, events, limits, gate, stop) = (
            Arc::new(proxy.for_thread()),
            events.clone(),
            Arc::clone(&limits),
            Arc::clone(&gate),
            stop.clone(),
        );
        // Knative ingress probes, proxied requests by host, everything else to the
        // CloudEvents receiver.
        let handler = move |request: conn::IncomingRequest, peer| {
            let (proxy, events) = (Arc::clone(&proxy), events.clone());
            async move {
                let fault = request.body().fault();
                let request = request.map(Body::new);
                if let Some(answer) = proxy.network_probe(&request) {
                    return answer;
                }
                match proxy.route_for(&request) {
                    Ok(Some(route)) => {
                        proxy::forward(&proxy, &route, request, Some(peer), &fault).await
                    }
                    // Boxed: the router's future is larger than the proxy's, and would make
                    // every waiting proxied request as large.
                    Ok(None) => match Box::pin(events.oneshot(request)).await {
                        Ok(response) => response,
                        Err(never) => match never {},
                    },
                    Err(reason) => proxy::bad_host(reason),
                }
            }
        };
        let (done, finished_rx) = tokio::sync::oneshot::channel::<()>();
        finished.push(finished_rx);
        std::thread::Builder::new()
            .name(format!("tidegate-ingress-{index}"))
            .spawn(move || {
                runtime.block_on(async move {
                    let listener = match tokio::net::TcpListener::from_std(listener) {
                        Ok(listener) => listener,
                        Err(error) => {
                            tracing::error!(%error, "An ingress thread could not use the listener.");
                            return;
                        }
                    };
                    conn::serve_gated(listener, limits, gate, handler, stop).await;
                });
                // Tasks still on this thread (tunnels, pod connections) end with it.
                drop(runtime);
                let _ = done.send(());
            })
            .context("starting an ingress thread")?;
    }
    Ok(Ingress { finished })
}

/// The running ingress threads.
pub struct Ingress {
    finished: Vec<tokio::sync::oneshot::Receiver<()>>,
}

impl Ingress {
    /// Resolves once every ingress thread has stopped (after `stop` fired and its connections
    /// ended).
    pub async fn finished(self) {
        for thread in self.finished {
            let _ = thread.await;
        }
    }
}
