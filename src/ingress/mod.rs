//! Everything that listens on a socket: the ingress (CloudEvents receiver and HTTP proxy by
//! host) and the admin API.

pub mod admin;
pub mod events;
pub mod proxy;
pub mod topology;

use std::net::SocketAddr;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::Request;
use axum::response::Response;
use tower::ServiceExt as _;

pub use topology::{BrokerEntry, Topology};

#[derive(Clone)]
struct Entry {
    proxy: proxy::ProxyState,
    events: Router,
}

/// The ingress: a request whose `Host` names a Knative Service is proxied to it; anything else
/// is for the CloudEvents receiver (`POST /{namespace}/{broker}`).
pub fn router(events: events::IngressState, proxy: proxy::ProxyState) -> Router {
    Router::new().fallback(entry).with_state(Entry {
        proxy,
        events: events::router(events),
    })
}

async fn entry(State(entry): State<Entry>, request: Request<Body>) -> Response {
    if let Some(route) = entry.proxy.route_for(&request) {
        let peer = request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0);
        return proxy::forward(&entry.proxy, &route, request, peer).await;
    }
    match entry.events.oneshot(request).await {
        Ok(response) => response,
        Err(never) => match never {},
    }
}
