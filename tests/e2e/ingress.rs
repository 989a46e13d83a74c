//! Ingress answers as publishers rely on, against the running binary.

use crate::harness::*;

async fn gateway(tmp: &std::path::Path, extra: &[&str]) -> Gateway {
    let dir = manifests(tmp, &[("broker.yaml", BROKER)]);
    Gateway::start(&dir, &tmp.join("data"), extra).await
}

#[tokio::test]
async fn rejections_name_the_field_and_status() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let gw = gateway(tmp.path(), &["--max-body-bytes", "1024"]).await;
    let client = reqwest::Client::new();
    let url = gw.broker_url("default", "default");

    // Unknown broker.
    let r = publish(&client, &gw.broker_url("default", "nope"), "1", "t", &[]).await;
    assert_eq!(r.status(), 404);

    // Wrong method: 405 with Allow.
    let r = client.get(&url).send().await.expect("get");
    assert_eq!(r.status(), 405);
    let allow = header(&r, "allow").unwrap_or("").to_owned();
    assert!(allow.contains("POST"), "Allow header was {allow:?}");

    // Missing required attribute: 400 naming it.
    let r = client
        .post(&url)
        .header("ce-specversion", "1.0")
        .header("ce-id", "x")
        .header("ce-source", "s")
        .body("{}")
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 400);
    let body: serde_json::Value = r.json().await.expect("json error body");
    assert_eq!(body["field"], "type", "{body}");
    assert!(body["error"].as_str().is_some_and(|e| !e.is_empty()));

    // Bad time attribute.
    let r = publish(&client, &url, "1", "t", &[("ce-time", "yesterday")]).await;
    assert_eq!(r.status(), 400);
    let body: serde_json::Value = r.json().await.expect("json");
    assert_eq!(body["field"], "time");

    // TTL ≤ 0.
    let r = publish(&client, &url, "1", "t", &[("ce-knativebrokerttl", "0")]).await;
    assert_eq!(r.status(), 400);
    let body: serde_json::Value = r.json().await.expect("json");
    assert_eq!(body["field"], "knativebrokerttl");

    // Unknown structured format.
    let r = client
        .post(&url)
        .header("content-type", "application/cloudevents+xml")
        .body("<event/>")
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 415);

    // Over the limit, declared and chunked.
    let big = "x".repeat(4096);
    let r = publish(&client, &url, "1", "t", &[]).await;
    assert_eq!(r.status(), 202);
    let r = client
        .post(&url)
        .header("ce-specversion", "1.0")
        .header("ce-id", "big")
        .header("ce-source", "s")
        .header("ce-type", "t")
        .body(big.clone())
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 413);
    let chunks: Vec<Result<String, std::io::Error>> = vec![Ok(big.clone()), Ok(big)];
    let r = client
        .post(&url)
        .header("ce-specversion", "1.0")
        .header("ce-id", "big")
        .header("ce-source", "s")
        .header("ce-type", "t")
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .expect("post chunked");
    assert_eq!(r.status(), 413);
}

#[tokio::test]
async fn full_storage_answers_503_and_stores_nothing() {
    let tmp = tempfile::tempdir().expect("tempdir");
    // A trigger whose subscriber never answers keeps everything retained; events matching no
    // trigger would not be stored at all (Knative's behaviour).
    let (hang, _task) = hanging_server().await;
    let dir = manifests(
        tmp.path(),
        &[("b.yaml", BROKER), ("t.yaml", &trigger("slow", &hang, ""))],
    );
    let gw = Gateway::start(
        &dir,
        &tmp.path().join("data"),
        &["--storage-max-bytes", "3000"],
    )
    .await;
    let client = reqwest::Client::new();
    let url = gw.broker_url("default", "default");
    // A few events fit; a batch over the quota is refused whole.
    for i in 0..3 {
        assert_eq!(
            publish(&client, &url, &format!("ok-{i}"), "t", &[])
                .await
                .status(),
            202
        );
    }
    let batch: Vec<serde_json::Value> = (0..50)
        .map(|i| {
            serde_json::json!({"specversion":"1.0","id":format!("{i}"),"source":"s","type":"t","data":{"pad":"x".repeat(100)}})
        })
        .collect();
    let r = client
        .post(&url)
        .header("content-type", "application/cloudevents-batch+json")
        .body(serde_json::to_vec(&batch).expect("json"))
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    let t = gw.trigger("slow").await;
    assert_eq!(
        t["pending"], 3,
        "nothing of the refused batch was stored: {t}"
    );
}

#[tokio::test]
async fn admin_endpoints_answer() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let gw = gateway(tmp.path(), &[]).await;
    let client = reqwest::Client::new();
    let r = client
        .get(format!("{}/healthz", gw.admin))
        .send()
        .await
        .expect("healthz");
    assert_eq!(r.status(), 200);
    let r = publish(
        &client,
        &gw.broker_url("default", "default"),
        "m1",
        "t",
        &[],
    )
    .await;
    assert_eq!(r.status(), 202);
    let text = gw.metrics().await;
    assert!(
        text.contains("tidegate_ingest_requests_total{namespace=\"default\",broker=\"default\",outcome=\"accepted\"} 1"),
        "{text}"
    );
    let brokers: Vec<serde_json::Value> = gw.brokers().await;
    assert_eq!(brokers.len(), 1);
    assert_eq!(brokers[0]["backend"], "embedded");
    assert_eq!(brokers[0]["ready"], true);
}
