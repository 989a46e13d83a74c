//! The live dashboard at admin `/`: one page embedded in the binary (`dashboard/index.html`,
//! plain HTML, CSS and SVG drawn by its own script, no CDN), fed by Server-Sent Events from
//! `/api/v1/stream`.
//!
//! A sampler on the main runtime reads the admin API's views once a second: the whole state
//! (revisions with their pods, triggers, brokers, the manifest set) goes to every open stream,
//! and each revision's ready, desired, in-flight and queued counts go into a history of the last
//! [`HISTORY`] samples (15 minutes), which a stream sends first, so a page opened late still
//! draws its charts. Bounds: the history keeps at most [`HISTORY_REVISIONS`] revisions per
//! sample; a stream that falls [`STREAM_BUFFER`] samples behind skips to the latest; at most
//! [`MAX_STREAMS`] streams are open (more get 503 with `Retry-After`).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::extract::State;
use axum::http::header;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use serde::Serialize;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use super::admin::{
    AdminState, BrokerStatus, RevisionStatus, TriggerStatus, broker_rows, revision_rows,
    trigger_rows,
};
use crate::runtime::manifests::ManifestsReport;

/// Samples kept: 15 minutes at one a second.
pub const HISTORY: usize = 900;
/// Revisions a history sample holds at most.
pub const HISTORY_REVISIONS: usize = 200;
/// How often the state is read.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(1);
/// Samples a slow stream may fall behind before it skips ahead.
const STREAM_BUFFER: usize = 8;
/// Streams open at once at most: the admin listener's 128 connections stay mostly for probes
/// and the API.
pub const MAX_STREAMS: usize = 32;

const PAGE: &str = include_str!("dashboard/index.html");

/// The sampler's output, shared by the streams.
pub struct Dashboard {
    /// Each sample's `{t, r}` as JSON, oldest first.
    history: Mutex<VecDeque<Arc<str>>>,
    samples: broadcast::Sender<Arc<str>>,
    /// Ends the sampler and every stream (the admin listener drains at shutdown).
    stop: CancellationToken,
    streams: Arc<tokio::sync::Semaphore>,
}

/// The state at one moment, as a stream sends it.
#[derive(Serialize)]
struct Now {
    /// Milliseconds since the Unix epoch.
    t: u64,
    revisions: Vec<RevisionStatus>,
    triggers: Vec<TriggerStatus>,
    brokers: Vec<BrokerStatus>,
    manifests: ManifestsReport,
}

/// One history sample: `namespace/revision` → `[ready, desired, in_flight, queued]`.
#[derive(Serialize)]
struct Point {
    t: u64,
    r: Vec<(String, [u64; 4])>,
}

impl Dashboard {
    pub fn new(stop: CancellationToken) -> Arc<Dashboard> {
        Arc::new(Dashboard {
            history: Mutex::new(VecDeque::with_capacity(HISTORY)),
            samples: broadcast::channel(STREAM_BUFFER).0,
            stop,
            streams: Arc::new(tokio::sync::Semaphore::new(MAX_STREAMS)),
        })
    }

    /// Samples `state` every [`SAMPLE_EVERY`] until the dashboard's stop fires.
    pub async fn run(self: Arc<Self>, state: AdminState) {
        let stop = self.stop.clone();
        let mut tick = tokio::time::interval(SAMPLE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = stop.cancelled() => return,
            }
            self.sample(&state);
        }
    }

    fn sample(&self, state: &AdminState) {
        let t = u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap_or(0);
        let revisions = revision_rows(&state.registry);
        let point = Point {
            t,
            r: revisions
                .iter()
                .take(HISTORY_REVISIONS)
                .map(|r| {
                    (
                        format!("{}/{}", r.namespace, r.revision),
                        [
                            u64::from(r.ready_pods),
                            u64::from(r.desired_pods),
                            r.in_flight,
                            r.queued,
                        ],
                    )
                })
                .collect(),
        };
        let Ok(point) = serde_json::to_string(&point) else {
            return;
        };
        let point: Arc<str> = point.into();
        {
            let mut history = self.history.lock().unwrap_or_else(PoisonError::into_inner);
            if history.len() == HISTORY {
                history.pop_front();
            }
            history.push_back(Arc::clone(&point));
        }
        // The whole state only for open streams; the history is kept either way.
        if self.samples.receiver_count() == 0 {
            return;
        }
        let now = Now {
            t,
            revisions,
            triggers: trigger_rows(state),
            brokers: broker_rows(state),
            manifests: state.manifests.report(),
        };
        let Ok(now) = serde_json::to_string(&now) else {
            return;
        };
        // {"now": …, "point": …}; a stream that just closed is no error.
        let _ = self
            .samples
            .send(format!("{{\"now\":{now},\"point\":{point}}}").into());
    }

    /// The history as one JSON array.
    fn history_json(&self) -> String {
        let history = self.history.lock().unwrap_or_else(PoisonError::into_inner);
        let mut out = String::with_capacity(2 + history.iter().map(|p| p.len() + 1).sum::<usize>());
        out.push('[');
        for (i, point) in history.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(point);
        }
        out.push(']');
        out
    }
}

/// `GET /`: the page.
pub async fn page() -> Response {
    (
        [
            (header::CACHE_CONTROL, "no-cache"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; img-src 'self' data:; script-src 'unsafe-inline'; style-src 'unsafe-inline'",
            ),
        ],
        Html(PAGE),
    )
        .into_response()
}

/// `GET /api/v1/stream`: `history` (the samples kept) first, then a `sample` every second.
pub async fn stream(State(state): State<AdminState>) -> Response {
    let Some(dashboard) = state.dashboard.clone() else {
        return (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "the dashboard's sampler is not running\n",
        )
            .into_response();
    };
    let Ok(permit) = Arc::clone(&dashboard.streams).try_acquire_owned() else {
        return (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "5")],
            format!("{MAX_STREAMS} dashboard streams are open already\n"),
        )
            .into_response();
    };
    let receiver = dashboard.samples.subscribe();
    let first = Event::default()
        .event("history")
        .data(dashboard.history_json());
    let stop = dashboard.stop.clone();
    // The permit travels with the stream and is given back when the client goes away.
    let rest = futures::stream::unfold((receiver, permit), move |(mut receiver, permit)| {
        let stop = stop.clone();
        async move {
            loop {
                let received = tokio::select! {
                    received = receiver.recv() => received,
                    () = stop.cancelled() => return None,
                };
                match received {
                    Ok(sample) => {
                        let event = Event::default().event("sample").data(&*sample);
                        return Some((Ok::<_, Infallible>(event), (receiver, permit)));
                    }
                    // Too slow: the samples it missed are gone; the next one is current.
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        }
    });
    let events = futures::StreamExt::chain(
        futures::stream::once(async move { Ok::<_, Infallible>(first) }),
        rest,
    );
    Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}
