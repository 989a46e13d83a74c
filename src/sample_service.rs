//! `tidegate sample-service`: an HTTP workload for examples, tests and benchmarks.
//!
//! Every response carries `x-sample-instance` (stable for the process) and `x-sample-inflight`
//! (requests in flight in this process, including this one), and `x-sample-revision` when
//! `$K_REVISION` is set. CloudEvents it receives are kept
//! (up to `keep`) and listed by `GET /events`.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use brokers::event::{CloudEvent, SpecVersion};

/// How the sample service behaves.
#[derive(Clone, Debug)]
pub struct SampleConfig {
    pub listen: SocketAddr,
    /// Work time per request.
    pub delay: Duration,
    /// CPU time burnt per request (a busy loop on a blocking thread).
    pub burn_cpu: Duration,
    /// Fraction of requests answered 500.
    pub fail_rate: f64,
    /// Status of successful answers.
    pub status: u16,
    /// Reply to each CloudEvent with an event of this type.
    pub reply_type: Option<String>,
    /// Most events kept for `GET /events`.
    pub keep: usize,
    /// Serve HTTP/2 with prior knowledge only.
    pub h2c_only: bool,
}

struct Sample {
    config: SampleConfig,
    instance: HeaderValue,
    /// `$K_REVISION` (set by Knative and by tidegate's local runtime), echoed as
    /// `x-sample-revision`.
    revision: Option<HeaderValue>,
    in_flight: AtomicU64,
    events: Mutex<VecDeque<serde_json::Value>>,
}

/// Serves until Ctrl-C or SIGTERM.
pub async fn run(config: SampleConfig) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let instance = format!(
        "{}-{}",
        std::process::id(),
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    tracing::info!(listen = %listener.local_addr()?, %instance, "sample-service listening.");
    let h2c_only = config.h2c_only;
    let app = router(config, &instance)?;
    let stopped = async {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {},
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {},
        }
    };
    if h2c_only {
        tokio::select! {
            () = serve_h2c_only(listener, app) => {}
            () = stopped => {}
        }
        return Ok(());
    }
    axum::serve(listener, app)
        .with_graceful_shutdown(stopped)
        .await?;
    Ok(())
}

/// Serves every connection as HTTP/2 with prior knowledge; anything else fails the handshake.
async fn serve_h2c_only(listener: tokio::net::TcpListener, app: Router) {
    let builder =
        hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
            .http2_only();
    let builder = Arc::new(builder);
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let builder = Arc::clone(&builder);
        tokio::spawn(async move {
            let io = hyper_util::rt::TokioIo::new(stream);
            if let Err(error) = builder.serve_connection(io, service).await {
                tracing::debug!(%error, "h2c connection ended.");
            }
        });
    }
}

/// The sample service's routes, for tests without a socket.
pub fn router(config: SampleConfig, instance: &str) -> anyhow::Result<Router> {
    let state = Arc::new(Sample {
        instance: HeaderValue::from_str(instance).context("instance id")?,
        revision: std::env::var("K_REVISION")
            .ok()
            .and_then(|r| HeaderValue::from_str(&r).ok()),
        config,
        in_flight: AtomicU64::new(0),
        events: Mutex::new(VecDeque::new()),
    });
    Ok(Router::new().fallback(handle).with_state(state))
}

async fn handle(
    State(sample): State<Arc<Sample>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let in_flight = sample.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    let mut response = respond(&sample, &method, &uri, &headers, body).await;
    let h = response.headers_mut();
    h.insert("x-sample-instance", sample.instance.clone());
    h.insert("x-sample-inflight", HeaderValue::from(in_flight));
    if let Some(revision) = &sample.revision {
        h.insert("x-sample-revision", revision.clone());
    }
    sample.in_flight.fetch_sub(1, Ordering::SeqCst);
    response
}

async fn respond(
    sample: &Sample,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: Bytes,
) -> Response {
    if method == Method::GET && uri.path() == "/events" {
        let events: Vec<serde_json::Value> = match sample.events.lock() {
            Ok(events) => events.iter().cloned().collect(),
            Err(_) => Vec::new(),
        };
        return axum::Json(events).into_response();
    }
    if !sample.config.delay.is_zero() {
        tokio::time::sleep(sample.config.delay).await;
    }
    if !sample.config.burn_cpu.is_zero() {
        let burn = sample.config.burn_cpu;
        let _ = tokio::task::spawn_blocking(move || {
            let deadline = tokio::time::Instant::now() + burn;
            let mut x = 0u64;
            while tokio::time::Instant::now() < deadline {
                x = std::hint::black_box(x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1));
            }
        })
        .await;
    }
    if sample.config.fail_rate > 0.0 && rand::random::<f64>() < sample.config.fail_rate {
        return (StatusCode::INTERNAL_SERVER_ERROR, "injected failure\n").into_response();
    }
    let event = if method == Method::POST {
        brokers::http::decode_request(headers, body)
            .ok()
            .and_then(|mut e| e.pop())
    } else {
        None
    };
    let status = StatusCode::from_u16(sample.config.status).unwrap_or(StatusCode::OK);
    let Some(event) = event else {
        return status.into_response();
    };
    if let Ok(mut events) = sample.events.lock() {
        if events.len() >= sample.config.keep {
            events.pop_front();
        }
        events.push_back(brokers::http::to_json_value(&event));
    }
    match (&sample.config.reply_type, status.is_success()) {
        (Some(ty), true) => reply(&event, ty),
        _ => status.into_response(),
    }
}

fn reply(event: &CloudEvent, ty: &str) -> Response {
    let mut reply = CloudEvent::new(
        SpecVersion::V10,
        uuid::Uuid::new_v4().to_string(),
        "tidegate/sample-service",
        ty,
    );
    if let Some(data) = event.data()
        && let Err(e) = reply.set_data(event.datacontenttype().map(str::to_owned), data.clone())
    {
        return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response();
    }
    let mut headers = HeaderMap::new();
    let body = brokers::http::encode_binary(&reply, &mut headers);
    (StatusCode::OK, headers, body).into_response()
}
