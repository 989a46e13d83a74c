//! Brokers on NATS JetStream (a real `nats-server -js` started per test) next to the embedded
//! log: delivery, exact retries, dead letters, third-party records, per-key order, readiness,
//! restarts and backlog scaling.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::http::StatusCode;
use axum::response::IntoResponse;
use brokers::testkit::{
    KafkaMock, NatsServer, TansuServer, kafka_produce, nats_or_skip, tansu_or_skip,
};

use crate::harness::*;

/// Broker `default/default` on NATS at `url`, with its ConfigMap.
fn nats_broker(url: &str) -> String {
    format!(
        "apiVersion: eventing.knative.dev/v1
kind: Broker
metadata:
  name: default
  namespace: default
spec:
  config:
    apiVersion: v1
    kind: ConfigMap
    name: nats-broker
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: nats-broker
  namespace: default
data:
  backend: nats
  url: {url}
"
    )
}

const FAST_RETRY: &str =
    "  delivery:\n    retry: 2\n    backoffPolicy: linear\n    backoffDelay: PT0.05S\n";

fn filtered(name: &str, uri: &str, ty: &str, extra: &str) -> String {
    trigger(
        name,
        uri,
        &format!("  filter:\n    attributes:\n      type: {ty}\n{extra}"),
    )
}

async fn wait_broker_ready(gw: &Gateway) -> serde_json::Value {
    eventually("the broker to be ready", || async {
        gw.brokers()
            .await
            .first()
            .is_some_and(|b| b["ready"] == true)
    })
    .await;
    gw.brokers().await.into_iter().next().unwrap_or_default()
}

/// Broker `default/default` on Kafka (Knative's Kafka broker class and ConfigMap keys).
fn kafka_broker(bootstrap: &str) -> String {
    format!(
        "apiVersion: eventing.knative.dev/v1
kind: Broker
metadata:
  name: default
  namespace: default
  annotations:
    eventing.knative.dev/broker.class: Kafka
spec:
  config:
    apiVersion: v1
    kind: ConfigMap
    name: kafka-broker-config
    namespace: knative-eventing
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: kafka-broker-config
  namespace: knative-eventing
data:
  bootstrap.servers: {bootstrap}
  default.topic.partitions: \"10\"
  default.topic.replication.factor: \"1\"
"
    )
}

/// The topic Knative names for Broker default/default.
const KAFKA_TOPIC: &str = "knative-broker-default-default";

/// A backend server a test runs.
enum Backend {
    Nats(NatsServer),
    Kafka(KafkaMock),
    /// A real Kafka-protocol broker in its own process, file-backed: tidegate creates the
    /// topic itself, and a restart keeps the data.
    Tansu(TansuServer),
}

impl Backend {
    fn nats(test: &str) -> Option<Backend> {
        nats_or_skip(test).map(|bin| Backend::Nats(NatsServer::start(&bin)))
    }

    fn kafka() -> Backend {
        Backend::Kafka(KafkaMock::start(&[(KAFKA_TOPIC, 10)]))
    }

    fn tansu(test: &str) -> Option<Backend> {
        tansu_or_skip(test).map(|bin| Backend::Tansu(TansuServer::start(&bin)))
    }

    fn broker_yaml(&self) -> String {
        match self {
            Backend::Nats(server) => nats_broker(&server.url()),
            Backend::Kafka(mock) => kafka_broker(&mock.bootstrap_servers()),
            Backend::Tansu(server) => kafka_broker(&server.bootstrap_servers()),
        }
    }

    /// Writes a record straight to the subject or topic, as another producer would.
    async fn produce(&self, headers: &[(&str, &str)], payload: &'static [u8]) {
        match self {
            Backend::Nats(server) => {
                let raw = async_nats::connect(server.url())
                    .await
                    .expect("nats client");
                let mut map = async_nats::HeaderMap::new();
                for (k, v) in headers {
                    map.insert(*k, *v);
                }
                raw.publish_with_headers("tidegate.default.default.ext", map, payload.into())
                    .await
                    .expect("publish");
                raw.flush().await.expect("flush");
            }
            Backend::Kafka(_) | Backend::Tansu(_) => {
                kafka_produce(&self.kafka_bootstrap(), KAFKA_TOPIC, None, headers, payload).await;
            }
        }
    }

    fn kafka_bootstrap(&self) -> String {
        match self {
            Backend::Kafka(mock) => mock.bootstrap_servers(),
            Backend::Tansu(server) => server.bootstrap_servers(),
            Backend::Nats(_) => String::new(),
        }
    }

    fn check_location(&self, row: &serde_json::Value) {
        match self {
            Backend::Nats(_) => {
                assert_eq!(row["backend"], "nats");
                assert_eq!(row["stream"], "default-default");
                assert_eq!(row["subject"], "tidegate.default.default.>");
            }
            Backend::Kafka(_) | Backend::Tansu(_) => {
                assert_eq!(row["backend"], "kafka");
                assert_eq!(row["topic"], KAFKA_TOPIC);
            }
        }
    }
}

/// Publish → filter → deliver → ack; `retry: 2` makes exactly 3 attempts then dead-letters; a
/// third-party producer's CloudEvent is routed; a record that is not one reaches the
/// dead-letter sink and is counted.
async fn delivery_semantics(backend: &Backend) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let ok = Subscriber::accepting().await;
    let failing = Subscriber::start(|_, _| StatusCode::INTERNAL_SERVER_ERROR.into_response()).await;
    let sink = Subscriber::accepting().await;
    let with_sink = format!("{FAST_RETRY}    deadLetterSink:\n      uri: {}\n", sink.url);
    let dir = manifests(
        tmp.path(),
        &[
            ("b.yaml", &backend.broker_yaml()),
            ("ok.yaml", &filtered("ok", &ok.url, "dev.ok", "")),
            (
                "fails.yaml",
                &filtered("fails", &failing.url, "dev.fail", &with_sink),
            ),
        ],
    );
    let gw = Gateway::start(&dir, &tmp.path().join("data"), &[]).await;
    let row = wait_broker_ready(&gw).await;
    backend.check_location(&row);
    eventually("both triggers consuming", || async {
        gw.triggers().await.iter().all(|t| t["ready"] == true)
    })
    .await;

    let client = reqwest::Client::new();
    let url = gw.broker_url("default", "default");
    for i in 0..5 {
        let r = publish(&client, &url, &format!("ok-{i}"), "dev.ok", &[]).await;
        assert_eq!(r.status(), 202);
    }
    let nats = matches!(backend, Backend::Nats(_));
    if nats {
        // A publisher's retry within the duplicate window is stored once (Nats-Msg-Id).
        assert_eq!(
            publish(&client, &url, "ok-0", "dev.ok", &[]).await.status(),
            202
        );
    }
    assert_eq!(
        publish(&client, &url, "bad-1", "dev.fail", &[])
            .await
            .status(),
        202
    );
    let (prefix, source) = match backend {
        Backend::Nats(_) => ("ce-", "/elsewhere"),
        Backend::Kafka(_) | Backend::Tansu(_) => ("ce_", "/elsewhere"),
    };
    let attribute = |name: &str| format!("{prefix}{name}");
    let (specversion, id, src, ty) = (
        attribute("specversion"),
        attribute("id"),
        attribute("source"),
        attribute("type"),
    );
    backend
        .produce(
            &[
                (&specversion, "1.0"),
                (&id, "third-party-1"),
                (&src, source),
                (&ty, "dev.ok"),
            ],
            b"{}",
        )
        .await;
    backend.produce(&[], b"garbage").await;

    let got = ok.wait_for(6).await;
    let counts = ids(&got);
    assert_eq!(counts.len(), 6, "{counts:?}");
    assert!(counts.contains_key("third-party-1"));

    // retry: 2 means exactly 3 attempts, then the dead-letter sink.
    let dead = sink.wait_for(2).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(failing.received().len(), 3, "1 attempt + 2 retries");
    if nats {
        assert_eq!(
            ids(&ok.received()).get("ok-0"),
            Some(&1),
            "the duplicate was stored once"
        );
    }
    let by_type: HashMap<_, _> = dead
        .iter()
        .map(|r| (r.header("ce-type").unwrap_or("").to_owned(), r))
        .collect();
    assert_eq!(
        by_type["dev.fail"].header("ce-knativeerrorcode"),
        Some("500")
    );
    let invalid = by_type
        .get("dev.tidegate.invalid-record")
        .expect("the invalid record reached the dead-letter sink");
    assert_eq!(&invalid.body[..], b"garbage");
    assert!(invalid.header("ce-knativeerrordata").is_some());
    assert_eq!(sink.received().len(), 2);
    let metrics = gw.metrics().await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("tidegate_broker_invalid_records_total")
                && l.contains("trigger=\"fails\"")
                && l.ends_with(" 1")),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_delivers_retries_exactly_dead_letters_and_routes_third_party_records() {
    let Some(backend) = Backend::nats("nats_delivers_retries_exactly") else {
        return;
    };
    delivery_semantics(&backend).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_delivers_retries_exactly_dead_letters_and_routes_third_party_records() {
    delivery_semantics(&Backend::kafka()).await;
}

/// 20 keys × 50 events in one batch; key k0's subscriber is slow and k1's third event fails
/// once. Every key arrives in order, and the other keys finish while k0 is still going.
async fn ordered_per_key(broker_yaml: &str) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let failed_once = Arc::new(AtomicUsize::new(0));
    let subscriber = {
        let failed_once = Arc::clone(&failed_once);
        Subscriber::start_async(move |_, r| {
            let key = r.header("ce-partitionkey").unwrap_or("").to_owned();
            let id = r.header("ce-id").unwrap_or("").to_owned();
            let fail = id == "k1-2" && failed_once.fetch_add(1, Ordering::SeqCst) == 0;
            Box::pin(async move {
                if key == "k0" {
                    tokio::time::sleep(Duration::from_millis(80)).await;
                }
                if fail {
                    StatusCode::SERVICE_UNAVAILABLE.into_response()
                } else {
                    StatusCode::ACCEPTED.into_response()
                }
            })
        })
        .await
    };
    let ordered = trigger(
        "ordered",
        &subscriber.url,
        "  delivery:\n    retry: 3\n    backoffPolicy: linear\n    backoffDelay: PT0.05S\n",
    )
    .replace(
        "  namespace: default\n",
        "  namespace: default\n  annotations:\n    tidegate.dev/delivery-order: ordered\n",
    );
    let dir = manifests(tmp.path(), &[("b.yaml", broker_yaml), ("t.yaml", &ordered)]);
    let gw = Gateway::start(&dir, &tmp.path().join("data"), &[]).await;
    wait_broker_ready(&gw).await;
    eventually("the trigger consuming", || async {
        gw.trigger("ordered").await["ready"] == true
    })
    .await;
    let mut batch = Vec::new();
    for seq in 0..50 {
        for key in 0..20 {
            batch.push(serde_json::json!({
                "specversion": "1.0", "id": format!("k{key}-{seq}"), "source": "/order",
                "type": "dev.ordered", "partitionkey": format!("k{key}"), "data": {"seq": seq},
            }));
        }
    }
    let r = reqwest::Client::new()
        .post(gw.broker_url("default", "default"))
        .header("content-type", "application/cloudevents-batch+json")
        .body(serde_json::to_vec(&batch).expect("json"))
        .send()
        .await
        .expect("publish batch");
    assert_eq!(r.status(), 202);

    // The other 19 keys finish while the slow key is still at the start of its 50.
    let others_done = loop {
        let got = subscriber.received();
        let done = got
            .iter()
            .filter(|r| r.header("ce-partitionkey") != Some("k0"))
            .filter_map(|r| r.header("ce-id"))
            .collect::<HashSet<_>>()
            .len();
        if done == 19 * 50 {
            break got;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let slow_so_far = others_done
        .iter()
        .filter(|r| r.header("ce-partitionkey") == Some("k0"))
        .count();
    assert!(
        slow_so_far < 40,
        "the slow key held the others back: {slow_so_far} of its 50 were through when the others finished"
    );
    let all = subscriber.wait_for(1000 + 1).await; // + the one failed attempt
    let mut by_key: HashMap<String, Vec<String>> = HashMap::new();
    for r in &all {
        by_key
            .entry(r.header("ce-partitionkey").unwrap_or("").to_owned())
            .or_default()
            .push(r.header("ce-id").unwrap_or("").to_owned());
    }
    for key in 0..20 {
        let mut expected: Vec<String> = (0..50).map(|seq| format!("k{key}-{seq}")).collect();
        if key == 1 {
            expected.insert(2, "k1-2".into()); // its failed attempt, retried before k1-3
        }
        assert_eq!(
            by_key[&format!("k{key}")],
            expected,
            "key k{key} out of order"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordered_delivery_is_per_key_on_the_embedded_log() {
    ordered_per_key(BROKER).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordered_delivery_is_per_key_on_nats() {
    let Some(bin) = nats_or_skip("ordered_delivery_is_per_key_on_nats") else {
        return;
    };
    let nats = NatsServer::start(&bin);
    ordered_per_key(&nats_broker(&nats.url())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordered_delivery_is_per_key_on_kafka() {
    let backend = Backend::kafka();
    ordered_per_key(&backend.broker_yaml()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_nats_is_not_ready_answers_503_and_recovers_by_itself() {
    let Some(bin) = nats_or_skip("an_unreachable_nats_is_not_ready") else {
        return;
    };
    let port = free_port();
    let tmp = tempfile::tempdir().expect("tempdir");
    let subscriber = Subscriber::accepting().await;
    let dir = manifests(
        tmp.path(),
        &[
            ("b.yaml", &nats_broker(&format!("nats://127.0.0.1:{port}"))),
            ("t.yaml", &trigger("t", &subscriber.url, "")),
        ],
    );
    let gw = Gateway::start_unready(&dir, &tmp.path().join("data"), &[]).await;
    let row = gw.brokers().await.into_iter().next().expect("broker row");
    assert_eq!(row["ready"], false);
    assert!(
        row["reason"].as_str().unwrap_or("").contains("127.0.0.1"),
        "{row}"
    );
    let client = reqwest::Client::new();
    let url = gw.broker_url("default", "default");
    let refused = publish(&client, &url, "e-0", "dev.t", &[]).await;
    assert_eq!(refused.status(), 503);
    assert!(header(&refused, "retry-after").is_some());
    eventually("the trigger to say why it waits", || async {
        let t = gw.trigger("t").await;
        t["ready"] == false && t["reason"].as_str().unwrap_or("").contains("subscription")
    })
    .await;
    let ready = reqwest::get(format!("{}/readyz", gw.admin))
        .await
        .expect("readyz");
    assert_eq!(ready.status(), 503);

    let _nats = NatsServer::start_on(&bin, port);
    wait_broker_ready(&gw).await;
    eventually("the trigger consuming", || async {
        gw.trigger("t").await["ready"] == true
    })
    .await;
    assert_eq!(
        publish(&client, &url, "e-1", "dev.t", &[]).await.status(),
        202
    );
    let got = subscriber.wait_for(1).await;
    assert_eq!(got[0].header("ce-id"), Some("e-1"));
}

const EVENTS: usize = 600;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_and_gateway_restarts_mid_stream_lose_nothing_accepted() {
    let Some(mut backend) = Backend::nats("nats_and_gateway_restarts_mid_stream") else {
        return;
    };
    restarts_lose_nothing(&mut backend).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_outage_and_gateway_restart_mid_stream_lose_nothing_accepted() {
    restarts_lose_nothing(&mut Backend::kafka()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tansu_delivers_retries_exactly_dead_letters_and_routes_third_party_records() {
    let Some(backend) = Backend::tansu("tansu_delivers_retries_exactly") else {
        return;
    };
    delivery_semantics(&backend).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tansu_and_gateway_restarts_mid_stream_lose_nothing_accepted() {
    let Some(mut backend) = Backend::tansu("tansu_and_gateway_restarts_mid_stream") else {
        return;
    };
    restarts_lose_nothing(&mut backend).await;
}

/// Publishers keep going while the gateway is killed with SIGKILL and restarted, then while
/// the backend goes away and comes back: every event answered 202 reaches the subscriber.
async fn restarts_lose_nothing(backend: &mut Backend) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let sample = SampleService::start(&[]).await;
    let retry =
        "  delivery:\n    retry: 30\n    backoffPolicy: linear\n    backoffDelay: PT0.05S\n";
    let dir = manifests(
        tmp.path(),
        &[
            ("b.yaml", &backend.broker_yaml()),
            ("t.yaml", &trigger("prober", &sample.url, retry)),
        ],
    );
    let mut gw = Gateway::start(&dir, &tmp.path().join("data"), &[]).await;
    wait_broker_ready(&gw).await;
    let url = gw.broker_url("default", "default");
    let publishers = Publishers::start(&url, 4, EVENTS);
    publishers.wait_accepted(EVENTS / 4).await;
    gw.kill9_and_restart().await;
    publishers.wait_accepted(EVENTS / 2).await;
    match backend {
        Backend::Nats(server) => server.restart(),
        Backend::Kafka(mock) => {
            mock.broker_down();
            tokio::time::sleep(Duration::from_secs(1)).await;
            mock.broker_up();
        }
        Backend::Tansu(server) => server.restart(),
    }
    let accepted = publishers.finish().await;
    assert!(
        accepted.len() > EVENTS / 2,
        "only {} accepted",
        accepted.len()
    );
    wait_arrived(&sample, &accepted).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_backlog_scales_a_service_from_zero_and_back() {
    let Some(bin) = nats_or_skip("a_nats_backlog_scales_a_service") else {
        return;
    };
    let nats = NatsServer::start(&bin);
    let tmp = tempfile::tempdir().expect("tempdir");
    // In-flight cap 2 at containerConcurrency 1 wants at most 2 pods for requests; a backlog of
    // 500 at backlog-target 50 wants 10 (the max-scale).
    let worker = "apiVersion: tidegate.dev/v1alpha1
kind: Trigger
metadata:
  name: worker
  namespace: default
  annotations:
    tidegate.dev/max-in-flight: \"2\"
spec:
  broker: default
  service:
    spec:
      template:
        metadata:
          annotations:
            autoscaling.knative.dev/scale-down-delay: \"1s\"
            autoscaling.knative.dev/max-scale: \"10\"
            tidegate.dev/backlog-target: \"50\"
        spec:
          containerConcurrency: 1
          containers:
            - command: [tidegate, sample-service, --delay, 50ms]
";
    let dir = manifests(
        tmp.path(),
        &[("b.yaml", &nats_broker(&nats.url())), ("t.yaml", worker)],
    );
    let gw = Gateway::start(&dir, &tmp.path().join("data"), &[]).await;
    wait_broker_ready(&gw).await;
    eventually("the trigger consuming", || async {
        gw.trigger("worker").await["ready"] == true
    })
    .await;
    let batch: Vec<_> = (0..500)
        .map(|i| {
            serde_json::json!({"specversion": "1.0", "id": format!("b-{i}"), "source": "/b", "type": "dev.work"})
        })
        .collect();
    let r = reqwest::Client::new()
        .post(gw.broker_url("default", "default"))
        .header("content-type", "application/cloudevents-batch+json")
        .body(serde_json::to_vec(&batch).expect("json"))
        .send()
        .await
        .expect("publish");
    assert_eq!(r.status(), 202);
    let mut max_desired = 0;
    let mut max_pending = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let revision = gw.revisions().await.into_iter().next().unwrap_or_default();
        let trigger = gw.trigger("worker").await;
        max_desired = max_desired.max(revision["desired_pods"].as_u64().unwrap_or(0));
        max_pending = max_pending.max(trigger["pending"].as_u64().unwrap_or(0));
        if trigger["delivered"] == 500 && revision["desired_pods"] == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not drained and back to zero: {revision} {trigger}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // 2 pods drain 500 events of 50 ms in about 12 s: the backlog stays above 450 for seconds.
    assert!(
        max_pending > 450,
        "the backlog was visible: max pending {max_pending}"
    );
    assert_eq!(
        max_desired, 10,
        "the backlog wanted max-scale pods (requests alone want 2)"
    );
}
