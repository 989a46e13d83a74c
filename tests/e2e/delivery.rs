//! Delivery: binary mode, safe headers, retries, dead letters, replies.

use std::time::Duration;

use axum::http::StatusCode;
use axum::response::IntoResponse;

use crate::harness::*;

const FAST_RETRY: &str = "  delivery:
    retry: 3
    backoffPolicy: linear
    backoffDelay: PT0.05S
    timeout: PT1S
";

#[tokio::test]
async fn delivers_binary_mode_with_safe_headers_only() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let sub = Subscriber::accepting().await;
    let dir = manifests(
        tmp.path(),
        &[
            ("b.yaml", BROKER),
            ("t.yaml", &trigger("all", &sub.url, "")),
        ],
    );
    let gw = Gateway::start(&dir, &tmp.path().join("data"), &[]).await;
    let client = reqwest::Client::new();
    let r = publish(
        &client,
        &gw.broker_url("default", "default"),
        "e-1",
        "dev.tidegate.test",
        &[
            ("authorization", "Bearer secret"),
            ("cookie", "session=1"),
            (
                "traceparent",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            ),
            ("ce-myext", "hello%20world"),
        ],
    )
    .await;
    assert_eq!(r.status(), 202);
    let got = sub.wait_for(1).await;
    let req = &got[0];
    assert_eq!(req.header("ce-id"), Some("e-1"));
    assert_eq!(req.header("ce-type"), Some("dev.tidegate.test"));
    assert_eq!(req.header("ce-specversion"), Some("1.0"));
    assert_eq!(req.header("content-type"), Some("application/json"));
    assert_eq!(req.header("prefer"), Some("reply"));
    assert_eq!(req.header("ce-myext"), Some("hello%20world"));
    assert_eq!(req.header("ce-knativebrokerttl"), Some("255"));
    assert!(req.header("ce-knativearrivaltime").is_some());
    assert_eq!(
        req.header("traceparent"),
        Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
    );
    assert!(
        req.header("authorization").is_none(),
        "Authorization must not be forwarded"
    );
    assert!(
        req.header("cookie").is_none(),
        "Cookie must not be forwarded"
    );
    assert_eq!(&req.body[..], b"{\"id\":\"e-1\"}");
}

#[tokio::test]
async fn filters_select_events() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let sub = Subscriber::accepting().await;
    let spec = "  filters:
    - any:
        - exact:
            type: dev.a
        - all:
            - prefix:
                type: dev.b.
            - not:
                suffix:
                  source: /skip
";
    let dir = manifests(
        tmp.path(),
        &[
            ("b.yaml", BROKER),
            ("t.yaml", &trigger("filtered", &sub.url, spec)),
        ],
    );
    let gw = Gateway::start(&dir, &tmp.path().join("data"), &[]).await;
    let client = reqwest::Client::new();
    let url = gw.broker_url("default", "default");
    for (id, ty, source) in [
        ("1", "dev.a", "x"),
        ("2", "dev.b.one", "x"),
        ("3", "dev.b.two", "x/skip"),
        ("4", "dev.c", "x"),
        ("5", "dev.a", "x/skip"),
    ] {
        let r = client
            .post(&url)
            .header("ce-specversion", "1.0")
            .header("ce-id", id)
            .header("ce-source", source)
            .header("ce-type", ty)
            .send()
            .await
            .expect("publish");
        assert_eq!(r.status(), 202);
    }
    // Wait until all five passed through the trigger (filtered or delivered).
    eventually("the filtered trigger to pass all events", || async {
        gw.trigger("filtered").await["pending"] == 0
    })
    .await;
    let mut ids: Vec<String> = ids(&sub.wait_for(3).await).into_keys().collect();
    ids.sort();
    assert_eq!(ids, ["1", "2", "5"]);
}

/// A CESQL filter written as the Knative documentation writes one.
#[tokio::test]
async fn cesql_filters_select_events_and_count_errors() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let sub = Subscriber::accepting().await;
    let spec = "  filters:
    - cesql: \"type LIKE 'dev.order.%' AND (region = 'eu' OR INT(amount) > 100)\"
";
    let dir = manifests(
        tmp.path(),
        &[
            ("b.yaml", BROKER),
            ("t.yaml", &trigger("sql", &sub.url, spec)),
        ],
    );
    let gw = Gateway::start(&dir, &tmp.path().join("data"), &[]).await;
    let client = reqwest::Client::new();
    let url = gw.broker_url("default", "default");
    for (id, ty, region, amount) in [
        ("1", "dev.order.created", "eu", "5"),
        ("2", "dev.order.created", "us", "500"),
        ("3", "dev.order.created", "us", "50"),
        ("4", "dev.user.created", "eu", "500"),
        ("5", "dev.order.created", "us", "lots"),
    ] {
        let extra = [("ce-region", region), ("ce-amount", amount)];
        let r = publish(&client, &url, id, ty, &extra).await;
        assert_eq!(r.status(), 202);
    }
    eventually("the CESQL trigger to pass all events", || async {
        gw.trigger("sql").await["pending"] == 0
    })
    .await;
    let mut ids: Vec<String> = ids(&sub.wait_for(2).await).into_keys().collect();
    ids.sort();
    assert_eq!(ids, ["1", "2"]);
    // INT('lots') is a cast error: no match, counted.
    assert_eq!(gw.trigger("sql").await["filter_errors"], 1);
    let metrics = gw.metrics().await;
    assert!(
        metrics.contains("tidegate_trigger_filter_errors{namespace=\"default\",trigger=\"sql\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn retries_then_delivers() {
    let tmp = tempfile::tempdir().expect("tempdir");
    // 503, 500, 429 then success.
    let sub = Subscriber::start(|n, _| match n {
        0 => StatusCode::SERVICE_UNAVAILABLE.into_response(),
        1 => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        2 => StatusCode::TOO_MANY_REQUESTS.into_response(),
        _ => StatusCode::OK.into_response(),
    })
    .await;
    let dir = manifests(
        tmp.path(),
        &[
            ("b.yaml", BROKER),
            ("t.yaml", &trigger("flaky", &sub.url, FAST_RETRY)),
        ],
    );
    let gw = Gateway::start(&dir, &tmp.path().join("data"), &[]).await;
    let client = reqwest::Client::new();
    let r = publish(
        &client,
        &gw.broker_url("default", "default"),
        "r-1",
        "t",
        &[],
    )
    .await;
    assert_eq!(r.status(), 202);
    let got = sub.wait_for(4).await;
    assert!(got.iter().all(|r| r.header("ce-id") == Some("r-1")));
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let t = gw.trigger("flaky").await;
        if t["delivered"] == 1 {
            assert_eq!(t["retried"], 3, "{t}");
            assert_eq!(t["dead_lettered"], 0, "{t}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{t}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Exactly retry + 1 attempts: no hidden redelivery on top.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(sub.received().len(), 4);
}

#[tokio::test]
async fn non_retryable_and_exhausted_go_to_dead_letter_sink() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let sub = Subscriber::start(|_, r| {
        if r.header("ce-id") == Some("bad") {
            (StatusCode::BAD_REQUEST, "schema mismatch").into_response()
        } else {
            StatusCode::BAD_GATEWAY.into_response()
        }
    })
    .await;
    let dls = Subscriber::accepting().await;
    let spec = format!("{FAST_RETRY}    deadLetterSink:\n      uri: {}\n", dls.url);
    let dir = manifests(
        tmp.path(),
        &[
            ("b.yaml", BROKER),
            ("t.yaml", &trigger("dl", &sub.url, &spec)),
        ],
    );
    let gw = Gateway::start(&dir, &tmp.path().join("data"), &[]).await;
    let client = reqwest::Client::new();
    let url = gw.broker_url("default", "default");
    assert_eq!(publish(&client, &url, "bad", "t", &[]).await.status(), 202);
    let dead = dls.wait_for(1).await;
    assert_eq!(dead[0].header("ce-id"), Some("bad"));
    assert_eq!(dead[0].header("ce-knativeerrorcode"), Some("400"));
    assert_eq!(
        dead[0].header("ce-knativeerrordest"),
        Some(sub.url.as_str())
    );
    // base64("schema mismatch")
    assert_eq!(
        dead[0].header("ce-knativeerrordata"),
        Some("c2NoZW1hIG1pc21hdGNo")
    );
    // A 400 is not retried.
    assert_eq!(ids(&sub.received())["bad"], 1);

    assert_eq!(publish(&client, &url, "down", "t", &[]).await.status(), 202);
    let dead = dls.wait_for(2).await;
    assert_eq!(dead[1].header("ce-id"), Some("down"));
    assert_eq!(dead[1].header("ce-knativeerrorcode"), Some("502"));
    assert_eq!(ids(&sub.received())["down"], 4, "1 attempt + 3 retries");
    eventually("two dead-lettered events", || async {
        gw.trigger("dl").await["dead_lettered"] == 2
    })
    .await;
}

#[tokio::test]
async fn hanging_subscriber_times_out_and_unreachable_is_retried() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (hang, _hang_task) = hanging_server().await;
    let dls = Subscriber::accepting().await;
    let unreachable = format!("http://127.0.0.1:{}/", free_port());
    let spec = format!(
        "  delivery:\n    retry: 1\n    backoffDelay: PT0.05S\n    timeout: PT0.3S\n    deadLetterSink:\n      uri: {}\n",
        dls.url
    );
    let dir = manifests(
        tmp.path(),
        &[
            ("b.yaml", BROKER),
            ("t1.yaml", &trigger("hang", &hang, &spec)),
            ("t2.yaml", &trigger("gone", &unreachable, &spec)),
        ],
    );
    let gw = Gateway::start(&dir, &tmp.path().join("data"), &[]).await;
    let client = reqwest::Client::new();
    assert_eq!(
        publish(&client, &gw.broker_url("default", "default"), "h", "t", &[])
            .await
            .status(),
        202
    );
    // Both triggers dead-letter the event: one by timeout, one by connection refused.
    let dead = dls.wait_for(2).await;
    let dests: Vec<_> = dead
        .iter()
        .filter_map(|r| r.header("ce-knativeerrordest"))
        .collect();
    assert!(dests.contains(&hang.as_str()), "{dests:?}");
    assert!(dests.contains(&unreachable.as_str()), "{dests:?}");
    assert!(
        dead.iter()
            .all(|r| r.header("ce-knativeerrorcode").is_none())
    );
}

#[tokio::test]
async fn replies_are_republished_with_ttl() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let replier = Subscriber::start(|_, r| {
        let ttl = r.header("ce-knativebrokerttl").unwrap_or("").to_owned();
        (
            StatusCode::OK,
            [
                ("ce-specversion", "1.0".to_owned()),
                ("ce-id", "reply-1".to_owned()),
                ("ce-source", "replier".to_owned()),
                ("ce-type", "dev.reply".to_owned()),
                ("ce-seenttl", ttl),
                ("content-type", "text/plain".to_owned()),
            ],
            "pong",
        )
            .into_response()
    })
    .await;
    let sink = Subscriber::accepting().await;
    let only = |ty: &str| format!("  filter:\n    attributes:\n      type: {ty}\n");
    let dir = manifests(
        tmp.path(),
        &[
            ("b.yaml", BROKER),
            ("t1.yaml", &trigger("ping", &replier.url, &only("dev.ping"))),
            ("t2.yaml", &trigger("pong", &sink.url, &only("dev.reply"))),
        ],
    );
    let gw = Gateway::start(&dir, &tmp.path().join("data"), &[]).await;
    let client = reqwest::Client::new();
    let r = publish(
        &client,
        &gw.broker_url("default", "default"),
        "p-1",
        "dev.ping",
        &[("ce-knativebrokerttl", "7")],
    )
    .await;
    assert_eq!(r.status(), 202);
    let got = sink.wait_for(1).await;
    assert_eq!(got[0].header("ce-id"), Some("reply-1"));
    assert_eq!(got[0].header("ce-seenttl"), Some("7"));
    assert_eq!(got[0].header("ce-knativebrokerttl"), Some("6"));
    assert_eq!(&got[0].body[..], b"pong");
}

#[tokio::test]
async fn non_cloudevent_200_body_is_a_failed_delivery() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let sub = Subscriber::start(|_, _| (StatusCode::OK, "not an event").into_response()).await;
    let dls = Subscriber::accepting().await;
    let spec = format!("{FAST_RETRY}    deadLetterSink:\n      uri: {}\n", dls.url);
    let dir = manifests(
        tmp.path(),
        &[
            ("b.yaml", BROKER),
            ("t.yaml", &trigger("badreply", &sub.url, &spec)),
        ],
    );
    let gw = Gateway::start(&dir, &tmp.path().join("data"), &[]).await;
    let client = reqwest::Client::new();
    let r = publish(&client, &gw.broker_url("default", "default"), "x", "t", &[]).await;
    assert_eq!(r.status(), 202);
    let dead = dls.wait_for(1).await;
    assert_eq!(dead[0].header("ce-knativeerrorcode"), Some("200"));
}

#[tokio::test]
async fn send_and_status_commands_work_against_a_running_gateway() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let sub = Subscriber::accepting().await;
    let dir = manifests(
        tmp.path(),
        &[
            ("b.yaml", BROKER),
            ("t.yaml", &trigger("cli", &sub.url, "")),
        ],
    );
    let gw = Gateway::start(&dir, &tmp.path().join("data"), &[]).await;
    let url = gw.broker_url("default", "default");
    for structured in [false, true] {
        let mut cmd = tokio::process::Command::new(bin());
        cmd.args([
            "send",
            "--url",
            &url,
            "--type",
            "dev.cli",
            "--data",
            r#"{"n":1}"#,
        ]);
        cmd.args(["--extension", "color=blue"]);
        if structured {
            cmd.arg("--structured");
        }
        let out = cmd.output().await.expect("run send");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{stdout}");
        assert!(stdout.starts_with("202"), "{stdout}");
    }
    let got = sub.wait_for(2).await;
    for r in &got {
        assert_eq!(r.header("ce-type"), Some("dev.cli"));
        assert_eq!(r.header("ce-color"), Some("blue"));
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(&r.body[..], br#"{"n":1}"#);
    }
    eventually("two delivered events", || async {
        gw.trigger("cli").await["delivered"] == 2
    })
    .await;
    let out = tokio::process::Command::new(bin())
        .args(["status", "--admin", &gw.admin])
        .output()
        .await
        .expect("run status");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    let row = stdout
        .lines()
        .find(|l| l.contains(" cli "))
        .unwrap_or_else(|| panic!("{stdout}"));
    let columns: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        columns[..5],
        ["default", "cli", "default", "true", "2"],
        "{row}"
    );
}

/// Publishers and subscribers written against the Rust CloudEvents SDK: events published
/// through its HTTP binding (binary and structured) arrive as the same SDK events, plus the
/// broker's `knativearrivaltime` and `knativebrokerttl`.
#[tokio::test]
async fn rust_sdk_publishers_and_subscribers_interoperate() {
    use cloudevents::binding::reqwest::RequestBuilderExt as _;
    use cloudevents::{AttributesReader as _, EventBuilder as _, EventBuilderV10};

    let tmp = tempfile::tempdir().expect("tempdir");
    let sub = Subscriber::accepting().await;
    let dir = manifests(
        tmp.path(),
        &[
            ("b.yaml", BROKER),
            ("t.yaml", &trigger("sdk", &sub.url, "")),
        ],
    );
    let gw = Gateway::start(&dir, &tmp.path().join("data"), &[]).await;
    let url = gw.broker_url("default", "default");
    let event = |id: &str| {
        EventBuilderV10::new()
            .id(id)
            .source("https://publisher.example.com/orders")
            .ty("com.example.order.created")
            .subject("order-7")
            .time("2026-12-01T10:00:00Z")
            .extension("partitionkey", "customer-3")
            .extension("region", "eu-west")
            .data(
                "application/json",
                serde_json::json!({"total": 12.5, "items": ["a"]}),
            )
            .build()
            .expect("SDK event")
    };
    let client = reqwest::Client::new();
    let binary = client
        .post(&url)
        .event(event("sdk-binary"))
        .expect("binary mode")
        .send()
        .await
        .expect("send");
    assert_eq!(binary.status(), 202);
    let structured = client
        .post(&url)
        .header("content-type", "application/cloudevents+json")
        .body(serde_json::to_vec(&event("sdk-structured")).expect("json"))
        .send()
        .await
        .expect("send");
    assert_eq!(structured.status(), 202);

    for received in sub.wait_for(2).await {
        let mut delivered =
            cloudevents::binding::http::to_event(&received.headers, received.body.to_vec())
                .expect("a delivery the SDK reads");
        assert!(delivered.extension("knativearrivaltime").is_some());
        // Deliveries are binary mode, where an extension is a header: the SDK reads every
        // extension back as a string (so integer extensions are compared as strings here).
        assert_eq!(
            delivered.remove_extension("knativebrokerttl"),
            Some(cloudevents::event::ExtensionValue::String("255".into()))
        );
        delivered.remove_extension("knativearrivaltime");
        // The SDK's HTTP reader keeps a binary-mode body as bytes; as JSON it is the same value.
        if let Some(cloudevents::Data::Binary(bytes)) = delivered.data() {
            let json: serde_json::Value = serde_json::from_slice(bytes).expect("JSON data");
            delivered.set_data_unchecked(json);
        }
        let sent = event(delivered.id());
        assert_eq!(delivered, sent, "the SDK event arrives as it was published");
    }
}
