//! The Kafka backend against librdkafka's in-process mock cluster (a real Kafka protocol
//! server on 127.0.0.1, run by librdkafka itself).

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{FutureProducer, FutureRecord};

use super::*;
use crate::event::{AttrValue, SpecVersion};
use crate::{Delivery, Subscription};

fn config(bootstrap: &str, topic: &str) -> KafkaConfig {
    KafkaConfig {
        bootstrap_servers: bootstrap.to_owned(),
        topic: topic.to_owned(),
        partitions: 3,
        replication_factor: 1,
        retention_ms: None,
        auth: None,
    }
}

fn event(id: &str, key: &str) -> CloudEvent {
    let mut e = CloudEvent::new(SpecVersion::V10, id, "/test", "dev.tidegate.test");
    e.set_attribute("partitionkey", AttrValue::String(key.into()))
        .expect("key");
    e.set_data(Some("text/plain".into()), Bytes::from(format!("data {id}")))
        .expect("data");
    e
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn ready(broker: &KafkaBroker) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while let Some(reason) = broker.unavailable() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not ready: {reason}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The next delivery; the first one waits for the group join (a few seconds on the mock).
async fn next(sub: &mut Box<dyn Subscription>) -> Delivery {
    tokio::time::timeout(Duration::from_secs(30), sub.next())
        .await
        .expect("a delivery within 30 s")
        .expect("subscription open")
        .expect("delivery")
}

/// A one-broker mock cluster with `topics` (name, partitions) created: the mock does not
/// implement the CreateTopics API, so topic creation is covered by the end-to-end tests only.
fn mock(topics: &[(&str, i32)]) -> MockCluster<'static, rdkafka::producer::DefaultProducerContext> {
    let cluster = MockCluster::new(1).expect("mock cluster");
    for (topic, partitions) in topics {
        cluster
            .create_topic(topic, *partitions, 1)
            .expect("create topic");
    }
    cluster
}

async fn subscribe(broker: &KafkaBroker, name: &str) -> Box<dyn Subscription> {
    broker
        .subscribe(name, &SubscribeOptions::default())
        .await
        .expect("subscribe")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_consume_commit_in_key_order_and_resume_after_the_commit() {
    let cluster = mock(&[("t1", 3)]);
    let broker =
        KafkaBroker::open("ns", "b", config(&cluster.bootstrap_servers(), "t1")).expect("open");
    broker.expect_subscriptions(&[("ns/t".into(), SubscribeOptions::default())]);
    ready(&broker).await;
    assert_eq!(broker.location(), [("topic", "t1".to_owned())]);
    // Stored before the first member joins, after the group was given its start.
    let events: Vec<_> = (0..30)
        .map(|i| event(&format!("e{i}"), &format!("k{}", i % 5)))
        .collect();
    broker.append(events.clone()).await.expect("append");
    eventually("stored == 30", || broker.stored() == 30).await;

    let mut sub = subscribe(&broker, "ns/t").await;
    let mut by_key: HashMap<String, Vec<String>> = HashMap::new();
    let mut held = Vec::new();
    for _ in 0..30 {
        let d = next(&mut sub).await;
        assert!(d.invalid.is_none());
        let key = d.event.attribute("partitionkey").map(|k| k.into_owned());
        by_key
            .entry(key.unwrap_or_default())
            .or_default()
            .push(d.event.id().to_owned());
        held.push(d);
    }
    for k in 0..5 {
        let expected: Vec<_> = (0..30)
            .filter(|i| i % 5 == k)
            .map(|i| format!("e{i}"))
            .collect();
        assert_eq!(
            by_key[&format!("k{k}")],
            expected,
            "key k{k} keeps its order"
        );
    }
    assert_eq!(
        held.iter().find(|d| d.event.id() == "e0").map(|d| &d.event),
        Some(&events[0]),
        "binary mode round trip"
    );
    eventually("lag 30 while nothing is settled", || {
        broker.pending("ns/t") == 30
    })
    .await;
    for d in held {
        d.acker.ack();
    }
    eventually("lag 0 once all are settled and committed", || {
        broker.pending("ns/t") == 0
    })
    .await;
    drop(sub);
    broker
        .append(vec![event("after", "k0")])
        .await
        .expect("append");
    let mut again = subscribe(&broker, "ns/t").await;
    assert_eq!(
        next(&mut again).await.event.id(),
        "after",
        "nothing committed is delivered again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_contiguous_settled_prefix_is_committed() {
    let cluster = mock(&[("t2", 1)]);
    let mut c = config(&cluster.bootstrap_servers(), "t2");
    c.partitions = 1;
    let broker = KafkaBroker::open("ns", "b", c).expect("open");
    broker.expect_subscriptions(&[("ns/t".into(), SubscribeOptions::default())]);
    ready(&broker).await;
    broker
        .append(vec![event("a", "k"), event("b", "k"), event("c", "k")])
        .await
        .expect("append");
    let mut sub = subscribe(&broker, "ns/t").await;
    let a = next(&mut sub).await;
    let b = next(&mut sub).await;
    let c = next(&mut sub).await;
    // b and c settle, a does not: the prefix stays before a.
    b.acker.ack();
    c.acker.ack();
    tokio::time::sleep(Duration::from_secs(1)).await;
    drop(a);
    drop(sub);
    let mut again = subscribe(&broker, "ns/t").await;
    let ids: Vec<_> = [
        next(&mut again).await,
        next(&mut again).await,
        next(&mut again).await,
    ]
    .iter()
    .map(|d| d.event.id().to_owned())
    .collect();
    assert_eq!(
        ids,
        ["a", "b", "c"],
        "redelivered from the first unsettled record"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn third_party_records_are_routed_and_invalid_ones_flagged() {
    let cluster = mock(&[("t3", 3)]);
    let broker =
        KafkaBroker::open("ns", "b", config(&cluster.bootstrap_servers(), "t3")).expect("open");
    broker.expect_subscriptions(&[("ns/t".into(), SubscribeOptions::default())]);
    ready(&broker).await;
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", cluster.bootstrap_servers())
        .create()
        .expect("producer");
    let headers = OwnedHeaders::new()
        .insert(Header {
            key: "ce_specversion",
            value: Some("1.0"),
        })
        .insert(Header {
            key: "ce_id",
            value: Some("ext-1"),
        })
        .insert(Header {
            key: "ce_source",
            value: Some("/kcat/a%2Fb"),
        })
        .insert(Header {
            key: "ce_type",
            value: Some("com.example"),
        })
        .insert(Header {
            key: "content-type",
            value: Some("application/json"),
        });
    producer
        .send(
            FutureRecord::to("t3")
                .key("order-1")
                .payload(r#"{"n":1}"#)
                .headers(headers)
                .partition(0),
            Duration::from_secs(5),
        )
        .await
        .expect("produce");
    producer
        .send(
            FutureRecord::<str, str>::to("t3")
                .payload("garbage")
                .partition(0),
            Duration::from_secs(5),
        )
        .await
        .expect("produce");
    let mut sub = subscribe(&broker, "ns/t").await;
    let first = next(&mut sub).await;
    assert_eq!(first.event.id(), "ext-1");
    assert_eq!(
        first.event.source(),
        "/kcat/a%2Fb",
        "Kafka header values are plain, never percent-decoded"
    );
    assert_eq!(
        first.event.attribute_value("partitionkey"),
        Some(&AttrValue::String("order-1".into())),
        "the record key is the partition key"
    );
    let second = next(&mut sub).await;
    assert_eq!(
        second.invalid.as_ref().map(|(k, _)| *k),
        Some("invalid_event")
    );
    assert_eq!(
        second.event.data().map(|d| d.as_ref()),
        Some(&b"garbage"[..])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_cluster_is_not_ready_and_refuses_appends() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port");
    let broker =
        KafkaBroker::open("ns", "b", config(&format!("127.0.0.1:{port}"), "t4")).expect("open");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let reason = broker.unavailable().expect("not ready");
    assert!(reason.contains("Kafka"), "{reason}");
    let refused = broker.append(vec![event("x", "k")]).await;
    assert!(
        matches!(refused, Err(BrokerError::Unavailable(_))),
        "{refused:?}"
    );
    assert_eq!(group_id("ns/trigger"), "knative-trigger-ns-trigger");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_over_the_message_limit_is_refused_and_nothing_of_its_batch_written() {
    let cluster = mock(&[("t5", 1)]);
    let broker =
        KafkaBroker::open("ns", "b", config(&cluster.bootstrap_servers(), "t5")).expect("open");
    ready(&broker).await;
    let mut big = event("big", "k");
    big.set_data(Some("text/plain".into()), Bytes::from(vec![b'x'; 2 << 20]))
        .expect("data");
    let refused = broker.append(vec![event("small", "k"), big]).await;
    assert!(
        matches!(
            refused,
            Err(BrokerError::TooLarge {
                backend: "kafka",
                ..
            })
        ),
        "{refused:?}"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(broker.stored(), 0);
}
