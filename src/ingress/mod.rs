//! Everything that listens on a socket: the ingress (CloudEvents receiver and HTTP proxy by
//! host) and the admin API. A request whose `Host` names a Knative Service is proxied to it;
//! anything else is for the CloudEvents receiver (`POST /{namespace}/{broker}`).

pub mod admin;
pub mod conn;
pub mod events;
pub mod proxy;
pub mod upstream;

use axum::body::Body;
use tower::ServiceExt as _;

/// Serves the ingress on `listener` until `stop` fires, then lets open requests finish.
///
/// Our own accept loop ([`conn::serve`]) instead of `axum::serve`: proxied requests go straight
/// from hyper to [`proxy::forward`] without the router in between, every connection gets
/// `TCP_NODELAY`, and the listener's timeouts and connection cap apply.
pub async fn serve(
    listener: tokio::net::TcpListener,
    limits: conn::ConnLimits,
    events: events::IngressState,
    proxy: proxy::ProxyState,
    stop: tokio_util::sync::CancellationToken,
) {
    let events = events::router(events);
    let handler = move |request: conn::IncomingRequest, peer| {
        let (proxy, events) = (proxy.clone(), events.clone());
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
                Ok(None) => match events.oneshot(request).await {
                    Ok(response) => response,
                    Err(never) => match never {},
                },
                Err(reason) => proxy::bad_host(reason),
            }
        }
    };
    conn::serve(listener, limits, handler, stop).await;
}
