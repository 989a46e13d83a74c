//! The receiver tested without a socket, against a real embedded store on disk.

use std::sync::Arc;

use arc_swap::ArcSwap;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use brokers::embedded::{EmbeddedOptions, EmbeddedStore};
use http_body_util::BodyExt;
use tower::ServiceExt;

use super::*;
use crate::metrics::Metrics;
use crate::topology::IngestCounters;
use crate::topology::{BrokerEntry, Topology};

struct Fixture {
    _dir: tempfile::TempDir,
    store: Arc<EmbeddedStore>,
    router: Router,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).expect("open store");
    let metrics = Metrics::new();
    let entry = Arc::new(BrokerEntry {
        counters: IngestCounters::new(&metrics, "default", "default"),
        namespace: "default".into(),
        name: "default".into(),
        backend: "embedded",
        config: brokers::BackendConfig::Embedded,
        broker: Some(store.broker("default", "default")),
        reason: None,
    });
    let router = router(IngressState {
        topology: Arc::new(ArcSwap::from_pointee(Topology::new([entry]))),
        max_body_bytes: 64 * 1024,
        max_batch_events: 3,
        budget: IngestBudget::new(1024 * 1024),
        unknown_broker: metrics.ingest_unknown_broker.clone(),
    });
    Fixture {
        _dir: dir,
        store,
        router,
    }
}

async fn send(router: &Router, request: Request<Body>) -> (StatusCode, serde_json::Value) {
    let response = router.clone().oneshot(request).await.expect("infallible");
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    let json = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    (status, json)
}

fn structured(body: &str, content_type: &str) -> Request<Body> {
    Request::post("/default/default")
        .header("content-type", content_type)
        .body(Body::from(body.to_owned()))
        .expect("request")
}

#[tokio::test]
async fn a_batch_over_the_event_limit_is_refused_naming_the_limit() {
    let f = fixture();
    let event = r#"{"specversion":"1.0","id":"1","source":"s","type":"t"}"#;
    let batch = format!("[{event},{event},{event},{event}]");
    let (status, body) = send(&f.router, structured(&batch, MODE_BATCH_CT)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["field"], "body", "{body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("at most 3")),
        "{body}"
    );
    let batch = format!("[{event},{event},{event}]");
    let (status, _) = send(&f.router, structured(&batch, MODE_BATCH_CT)).await;
    assert_eq!(status, StatusCode::ACCEPTED);
}

#[test]
fn the_ingest_budget_refuses_what_does_not_fit_and_frees_on_drop() {
    let budget = IngestBudget::new(1024 * 1024);
    // 150 KiB bodies reserve 450 KiB each: two fit, the third does not.
    let a = budget.reserve(150 * 1024).expect("first fits");
    let _b = budget.reserve(150 * 1024).expect("second fits");
    assert!(budget.reserve(150 * 1024).is_none(), "over the budget");
    drop(a);
    assert!(budget.reserve(150 * 1024).is_some(), "freed on drop");
}

#[tokio::test]
async fn batch_is_all_or_nothing() {
    let f = fixture();
    let broker = f.store.broker("default", "default");
    // A subscription keeps what is stored, so `pending` counts it.
    let _sub = broker
        .subscribe("t", &brokers::SubscribeOptions::default())
        .await
        .expect("subscribe");
    let bad = r#"[{"specversion":"1.0","id":"1","source":"s","type":"t"},
                  {"specversion":"1.0","id":"2","source":"s"}]"#;
    let (status, body) = send(&f.router, structured(bad, MODE_BATCH_CT)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["field"].as_str().is_some_and(|f| f.contains("type")),
        "{body}"
    );
    assert_eq!(
        broker.pending("t"),
        0,
        "nothing of a rejected batch is stored"
    );

    let good = r#"[{"specversion":"1.0","id":"1","source":"s","type":"t"},
                   {"specversion":"1.0","id":"2","source":"s","type":"t","data":{"a":1}}]"#;
    let (status, _) = send(&f.router, structured(good, MODE_BATCH_CT)).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(broker.pending("t"), 2);
}

const MODE_BATCH_CT: &str = "application/cloudevents-batch+json";

#[tokio::test]
async fn structured_and_legacy_versions_are_accepted() {
    let f = fixture();
    let v1 =
        r#"{"specversion":"1.0","id":"a","source":"/s","type":"t","time":"2026-11-25T10:00:00Z"}"#;
    let (status, _) = send(
        &f.router,
        structured(v1, "application/cloudevents+json; charset=utf-8"),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let v03 = r#"{"specversion":"0.3","id":"b","source":"/s","type":"t","schemaurl":"http://x/s"}"#;
    let (status, _) = send(&f.router, structured(v03, "application/cloudevents+json")).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let unknown = r#"{"specversion":"2.0","id":"c","source":"/s","type":"t"}"#;
    let (status, body) = send(
        &f.router,
        structured(unknown, "application/cloudevents+json"),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["field"], "specversion");
}

#[tokio::test]
async fn binary_headers_are_validated() {
    let f = fixture();
    let request = |name: &str, value: &[u8]| {
        Request::post("/default/default")
            .header("ce-specversion", "1.0")
            .header("ce-id", "1")
            .header("ce-source", "s")
            .header("ce-type", "t")
            .header(name, value)
            .body(Body::empty())
            .expect("request")
    };
    let (status, _) = send(&f.router, request("ce-note", b"caf%C3%A9")).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (status, body) = send(&f.router, request("ce-note", b"bad%ZZ")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["field"], "note");
    let (status, body) = send(&f.router, request("ce-note", b"%FF%FE")).await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "invalid UTF-8 after decoding"
    );
    assert_eq!(body["field"], "note");
    let (status, body) = send(&f.router, request("ce-note", b"a%0Ab")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "control character");
    assert_eq!(body["field"], "note");
    let (status, body) = send(&f.router, request("ce-knativebrokerttl", b"-3")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["field"], "knativebrokerttl");
    let (status, _) = send(&f.router, request("ce-Bad_Name", b"x")).await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "attribute names are [a-z0-9]"
    );
}

#[tokio::test]
async fn unknown_paths_and_brokers_are_404_and_wrong_methods_405() {
    let f = fixture();
    let (status, _) = send(
        &f.router,
        Request::post("/default/other")
            .body(Body::empty())
            .expect("req"),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = send(
        &f.router,
        Request::get("/a/b/c").body(Body::empty()).expect("req"),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let response = f
        .router
        .clone()
        .oneshot(
            Request::put("/default/default")
                .body(Body::empty())
                .expect("req"),
        )
        .await
        .expect("infallible");
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert!(
        response
            .headers()
            .get("allow")
            .is_some_and(|v| v.to_str().unwrap_or("").contains("POST"))
    );
}

#[tokio::test]
async fn oversize_bodies_are_413() {
    let f = fixture();
    let body = format!(
        r#"{{"specversion":"1.0","id":"a","source":"/s","type":"t","data":"{}"}}"#,
        "x".repeat(70 * 1024)
    );
    let (status, body) = send(&f.router, structured(&body, "application/cloudevents+json")).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(body["field"], "body");
}
