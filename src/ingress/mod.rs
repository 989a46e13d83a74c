//! Everything that listens on a socket: the ingress (CloudEvents receiver and HTTP proxy by
//! host) and the admin API. A request whose `Host` names a Knative Service is proxied to it;
//! anything else is for the CloudEvents receiver (`POST /{namespace}/{broker}`).

pub mod admin;
pub mod events;
pub mod proxy;
pub mod topology;
pub mod upstream;

use axum::body::Body;
use axum::http::Request;
use tower::ServiceExt as _;

pub use topology::{BrokerEntry, Topology};

/// Serves the ingress on `listener` until `stop` fires, then lets open requests finish.
///
/// A hand-rolled accept loop instead of `axum::serve`: proxied requests go straight from hyper
/// to [`proxy::forward`] without the router in between, and every connection gets `TCP_NODELAY`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    events: events::IngressState,
    proxy: proxy::ProxyState,
    stop: tokio_util::sync::CancellationToken,
) {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let events = events::router(events);
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(%error, "Could not accept a connection.");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = stop.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        let (proxy, events) = (proxy.clone(), events.clone());
        let service = hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
            let (proxy, events) = (proxy.clone(), events.clone());
            async move {
                let request = request.map(Body::new);
                let response = match proxy.route_for(&request) {
                    Some(route) => proxy::forward(&proxy, &route, request, Some(peer)).await,
                    None => match events.oneshot(request).await {
                        Ok(response) => response,
                        Err(never) => match never {},
                    },
                };
                Ok::<_, std::convert::Infallible>(response)
            }
        });
        let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
        let connection = graceful.watch(connection.into_owned());
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "Connection ended with an error.");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}
