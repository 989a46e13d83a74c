//! The NATS backend against a real `nats-server -js` (see [`crate::testkit`]).

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt as _;

use super::*;
use crate::event::{AttrValue, SpecVersion};
use crate::testkit::{NatsServer, free_port, nats_or_skip};
use crate::{Delivery, Subscription};

fn config(url: &str) -> NatsConfig {
    crate::testkit::nats_config(url, "ns", "b")
}

fn event(id: &str) -> CloudEvent {
    let mut e = CloudEvent::new(SpecVersion::V10, id, "/test", "dev.tidegate.test");
    e.set_data(Some("text/plain".into()), Bytes::from(format!("data {id}")))
        .expect("data");
    e
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn ready(broker: &NatsBroker) {
    eventually("broker ready", || broker.unavailable().is_none()).await;
}

async fn next(sub: &mut Box<dyn Subscription>) -> Delivery {
    tokio::time::timeout(Duration::from_secs(10), sub.next())
        .await
        .expect("a delivery within 10 s")
        .expect("subscription open")
        .expect("delivery")
}

async fn nothing_within(sub: &mut Box<dyn Subscription>, wait: Duration) {
    if let Ok(Some(d)) = tokio::time::timeout(wait, sub.next()).await {
        panic!("unexpected delivery {:?}", d.map(|d| d.event));
    }
}

#[test]
fn message_ids_are_unambiguous_and_stable() {
    let a = CloudEvent::new(SpecVersion::V10, "1x", "/a", "t");
    let b = CloudEvent::new(SpecVersion::V10, "x", "/a1", "t");
    assert_ne!(message_id(&a), message_id(&b));
    assert_eq!(message_id(&a), "2:/a1x");
    let spaced = CloudEvent::new(SpecVersion::V10, "id with space", "/a", "t");
    assert!(message_id(&spaced).starts_with("h:"));
    assert_eq!(message_id(&spaced), message_id(&spaced.clone()));
    assert_eq!(consumer_name("ns/trigger.1"), "ns_trigger_1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_consume_ack_with_duplicates_stored_once() {
    let Some(bin) = nats_or_skip("publish_consume_ack_with_duplicates_stored_once") else {
        return;
    };
    let server = NatsServer::start(&bin);
    let broker = NatsBroker::open("ns", "b", config(&server.url()));
    ready(&broker).await;
    assert_eq!(
        broker.location(),
        [
            ("stream", "ns-b".to_owned()),
            ("subject", "tidegate.ns.b.>".to_owned())
        ]
    );
    let mut sub = broker
        .subscribe("ns/t", &SubscribeOptions::default())
        .await
        .expect("subscribe");
    broker
        .append(vec![event("1"), event("2")])
        .await
        .expect("append");
    // A publisher's retry: same source and id, stored once.
    broker.append(vec![event("1")]).await.expect("append again");
    let first = next(&mut sub).await;
    let second = next(&mut sub).await;
    assert_eq!((first.event.id(), second.event.id()), ("1", "2"));
    assert_eq!(first.event, event("1"), "binary mode round trip");
    assert!(!first.redelivered);
    nothing_within(&mut sub, Duration::from_millis(500)).await;
    eventually("stored == 2", || broker.stored() == 2).await;
    eventually("pending == 2 while unacked", || broker.pending("ns/t") == 2).await;
    first.acker.ack();
    second.acker.ack();
    eventually("pending == 0 after acks", || broker.pending("ns/t") == 0).await;
    broker.remove_subscription("ns/t").await.expect("remove");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unacked_deliveries_return_and_acked_ones_do_not() {
    let Some(bin) = nats_or_skip("unacked_deliveries_return_and_acked_ones_do_not") else {
        return;
    };
    let server = NatsServer::start(&bin);
    let broker = NatsBroker::open("ns", "b", config(&server.url()));
    ready(&broker).await;
    let options = SubscribeOptions::default();
    let mut sub = broker.subscribe("ns/t", &options).await.expect("subscribe");
    broker
        .append(vec![event("a"), event("b")])
        .await
        .expect("append");
    let a = next(&mut sub).await;
    let b = next(&mut sub).await;
    a.acker.ack();
    drop(b); // not settled: the worker stopped mid-delivery
    drop(sub);
    let mut again = broker
        .subscribe("ns/t", &options)
        .await
        .expect("resubscribe");
    let back = next(&mut again).await;
    assert_eq!(back.event.id(), "b");
    assert!(back.redelivered);
    back.acker.ack();
    nothing_within(&mut again, Duration::from_millis(500)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_restart_loses_nothing_acknowledged_and_the_broker_recovers() {
    let Some(bin) = nats_or_skip("a_server_restart_loses_nothing_acknowledged") else {
        return;
    };
    let mut server = NatsServer::start(&bin);
    let broker = NatsBroker::open("ns", "b", config(&server.url()));
    ready(&broker).await;
    let options = SubscribeOptions::default();
    drop(
        broker
            .subscribe("ns/t", &options)
            .await
            .expect("create consumer"),
    );
    let before: Vec<_> = (0..50).map(|i| event(&format!("before-{i}"))).collect();
    broker.append(before).await.expect("append before");
    server.kill();
    eventually("not ready while the server is down", || {
        broker.unavailable().is_some()
    })
    .await;
    let refused = broker.append(vec![event("while-down")]).await;
    assert!(
        matches!(refused, Err(BrokerError::Unavailable(_))),
        "{refused:?}"
    );
    server.restart();
    ready(&broker).await;
    broker
        .append(vec![event("after")])
        .await
        .expect("append after restart");
    let mut sub = broker.subscribe("ns/t", &options).await.expect("subscribe");
    let mut ids = Vec::new();
    for _ in 0..51 {
        let d = next(&mut sub).await;
        ids.push(d.event.id().to_owned());
        d.acker.ack();
    }
    let mut expected: Vec<_> = (0..50).map(|i| format!("before-{i}")).collect();
    expected.push("after".into());
    assert_eq!(ids, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_at_start_then_ready_when_the_server_comes() {
    let Some(bin) = nats_or_skip("unreachable_at_start_then_ready") else {
        return;
    };
    let port = free_port();
    let broker = NatsBroker::open("ns", "b", config(&format!("nats://127.0.0.1:{port}")));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let reason = broker.unavailable().expect("not ready without a server");
    assert!(reason.contains("127.0.0.1"), "{reason}");
    assert!(
        broker
            .subscribe("ns/t", &SubscribeOptions::default())
            .await
            .is_err()
    );
    let _server = NatsServer::start_on(&bin, port);
    ready(&broker).await;
    broker.append(vec![event("1")]).await.expect("append");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn third_party_records_are_routed_and_invalid_ones_flagged() {
    let Some(bin) = nats_or_skip("third_party_records") else {
        return;
    };
    let server = NatsServer::start(&bin);
    let broker = NatsBroker::open("ns", "b", config(&server.url()));
    ready(&broker).await;
    let mut sub = broker
        .subscribe("ns/t", &SubscribeOptions::default())
        .await
        .expect("subscribe");
    let client = async_nats::connect(server.url()).await.expect("client");
    let js = jetstream::new(client);
    let mut headers = async_nats::HeaderMap::new();
    for (k, v) in [
        ("ce-specversion", "1.0"),
        ("ce-id", "ext-1"),
        ("ce-source", "/other/producer"),
        ("ce-type", "com.example.order"),
        ("ce-partitionkey", "order-7"),
        ("content-type", "application/json"),
    ] {
        headers.insert(k, v);
    }
    let payload = Bytes::from_static(br#"{"total":3}"#);
    js.publish_with_headers("tidegate.ns.b.orders", headers, payload.clone())
        .await
        .expect("publish")
        .await
        .expect("ack");
    let structured = br#"{"specversion":"1.0","id":"ext-2","source":"/s","type":"t"}"#;
    js.publish("tidegate.ns.b.x", Bytes::from_static(structured))
        .await
        .expect("publish")
        .await
        .expect("ack");
    js.publish("tidegate.ns.b.x", Bytes::from_static(b"not an event"))
        .await
        .expect("publish")
        .await
        .expect("ack");
    let binary = next(&mut sub).await;
    assert_eq!(binary.event.id(), "ext-1");
    assert_eq!(
        binary.event.attribute_value("partitionkey"),
        Some(&AttrValue::String("order-7".into()))
    );
    assert_eq!(binary.event.data(), Some(&payload));
    assert!(binary.invalid.is_none());
    assert_eq!(next(&mut sub).await.event.id(), "ext-2");
    let invalid = next(&mut sub).await;
    let (kind, _) = invalid.invalid.clone().expect("flagged invalid");
    assert_eq!(kind, "invalid_event");
    assert_eq!(invalid.event.ty(), crate::INVALID_RECORD_TYPE);
    assert_eq!(
        invalid.event.data().map(|d| d.as_ref()),
        Some(&b"not an event"[..])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conflicting_stream_is_a_clear_error() {
    let Some(bin) = nats_or_skip("a_conflicting_stream_is_a_clear_error") else {
        return;
    };
    let server = NatsServer::start(&bin);
    let client = async_nats::connect(server.url()).await.expect("client");
    jetstream::new(client)
        .create_stream(stream::Config {
            name: "ns-b".into(),
            subjects: vec!["elsewhere.>".into()],
            storage: stream::StorageType::Memory,
            ..Default::default()
        })
        .await
        .expect("create");
    let broker = NatsBroker::open("ns", "b", config(&server.url()));
    eventually("conflict reported", || {
        broker
            .unavailable()
            .is_some_and(|r| r.contains("conflicting"))
    })
    .await;
    let reason = broker.unavailable().unwrap_or_default();
    assert!(
        reason.contains("subjects") && reason.contains("storage"),
        "{reason}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_stream_is_reported_and_recreated() {
    let Some(bin) = nats_or_skip("a_deleted_stream_is_reported_and_recreated") else {
        return;
    };
    let server = NatsServer::start(&bin);
    let broker = NatsBroker::open("ns", "b", config(&server.url()));
    ready(&broker).await;
    let client = async_nats::connect(server.url()).await.expect("client");
    let js = jetstream::new(client);
    js.delete_stream("ns-b").await.expect("delete");
    // Recreated within a refresh or two; appends work again.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    ready(&broker).await;
    broker
        .append(vec![event("1")])
        .await
        .expect("append after recreate");
    let mut names = js.stream_names();
    let mut found = false;
    while let Some(Ok(name)) = names.next().await {
        found |= name == "ns-b";
    }
    assert!(found, "stream recreated");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_over_max_payload_is_refused_and_nothing_of_its_batch_stored() {
    let Some(bin) = nats_or_skip("an_event_over_max_payload_is_refused") else {
        return;
    };
    let server = NatsServer::start(&bin);
    let broker = NatsBroker::open("ns", "b", config(&server.url()));
    ready(&broker).await;
    let mut big = event("big");
    big.set_data(Some("text/plain".into()), Bytes::from(vec![b'x'; 2 << 20]))
        .expect("data");
    let refused = broker.append(vec![event("small"), big]).await;
    match refused {
        Err(e @ BrokerError::TooLarge { .. }) => {
            assert_eq!(e.http_status(), http::StatusCode::PAYLOAD_TOO_LARGE);
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        broker.stored(),
        0,
        "the small event of the batch was not stored either"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_credentials_are_the_reason_and_the_right_ones_connect() {
    let Some(bin) = nats_or_skip("refused_credentials_are_the_reason") else {
        return;
    };
    let server = NatsServer::start_with(&bin, free_port(), &["--user", "app", "--pass", "s3cret"]);
    let with = |password: &str| NatsConfig {
        auth: Some(NatsAuth::UserPassword {
            user: "app".into(),
            password: password.into(),
        }),
        ..config(&server.url())
    };
    let wrong = NatsBroker::open("ns", "b", with("wrong"));
    eventually("the refusal reported", || {
        wrong
            .unavailable()
            .is_some_and(|r| r.to_lowercase().contains("author"))
    })
    .await;
    assert!(
        !wrong.unavailable().unwrap_or_default().contains("wrong"),
        "the password is not part of the reason"
    );
    let right = NatsBroker::open("ns", "b", with("s3cret"));
    ready(&right).await;
    right.append(vec![event("1")]).await.expect("append");
}
