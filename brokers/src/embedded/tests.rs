use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::broker::{Acker, Delivery};
use crate::event::{CloudEvent, SpecVersion};

fn options() -> EmbeddedOptions {
    EmbeddedOptions {
        cursor_flush: Duration::from_millis(5),
        ..EmbeddedOptions::default()
    }
}

fn open(dir: &Path) -> Arc<EmbeddedStore> {
    EmbeddedStore::open(dir, options()).expect("store opens")
}

fn event(i: usize) -> CloudEvent {
    CloudEvent::new(
        SpecVersion::V10,
        format!("e{i}"),
        "/test",
        "com.example.test",
    )
}

fn events(range: std::ops::Range<usize>) -> Vec<CloudEvent> {
    range.map(event).collect()
}

async fn next(sub: &mut Box<dyn Subscription>) -> Delivery {
    tokio::time::timeout(Duration::from_secs(10), sub.next())
        .await
        .expect("a delivery within 10s")
        .expect("subscription is open")
        .expect("delivery is ok")
}

async fn take(sub: &mut Box<dyn Subscription>, n: usize) -> Vec<Delivery> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(next(sub).await);
    }
    out
}

/// Asserts that nothing is delivered for a while.
async fn assert_idle(sub: &mut Box<dyn Subscription>) {
    let waited = tokio::time::timeout(Duration::from_millis(50), sub.next()).await;
    assert!(waited.is_err(), "unexpected delivery");
}

/// Polls until `check` holds (the writer applies cursor updates asynchronously).
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..500 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting until {what}");
}

fn offsets(deliveries: &[Delivery]) -> Vec<u64> {
    deliveries.iter().map(|d| d.offset).collect()
}

#[tokio::test]
async fn acked_events_are_not_redelivered_after_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = open(dir.path());
        let broker = store.broker("default", "b");
        let mut sub = broker
            .subscribe("t1", &crate::SubscribeOptions::default())
            .await
            .expect("subscribe");
        broker.append(events(0..5)).await.expect("append");
        assert_eq!((broker.stored(), broker.pending("t1")), (5, 5));
        let deliveries = take(&mut sub, 5).await;
        assert_eq!(offsets(&deliveries), [0, 1, 2, 3, 4]);
        assert_eq!(deliveries[2].event.id(), "e2");
        assert!(deliveries.iter().all(|d| !d.redelivered));
        for d in deliveries.into_iter().take(3) {
            d.acker.ack();
        }
        assert_eq!(broker.pending("t1"), 2);
        store.close();
        assert!(
            sub.next().await.is_none(),
            "closed store ends subscriptions"
        );
        assert!(matches!(
            broker.append(events(5..6)).await,
            Err(BrokerError::Closed)
        ));
    }
    let store = open(dir.path());
    let broker = store.broker("default", "b");
    assert_eq!(broker.pending("t1"), 2);
    let mut sub = broker
        .subscribe("t1", &crate::SubscribeOptions::default())
        .await
        .expect("resubscribe");
    let again = take(&mut sub, 2).await;
    assert_eq!(offsets(&again), [3, 4]);
    assert!(
        again.iter().all(|d| d.redelivered),
        "handed out before the restart"
    );
    // Sequence numbers continue after the recovered head.
    broker.append(events(5..7)).await.expect("append");
    let fresh = take(&mut sub, 2).await;
    assert_eq!(offsets(&fresh), [5, 6]);
    assert!(fresh.iter().all(|d| !d.redelivered));
}

#[tokio::test]
async fn unacked_events_are_redelivered_after_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = open(dir.path());
        let broker = store.broker("ns", "b");
        let mut sub = broker
            .subscribe("t", &crate::SubscribeOptions::default())
            .await
            .expect("subscribe");
        broker.append(events(0..3)).await.expect("append");
        let deliveries = take(&mut sub, 3).await;
        drop(deliveries); // dropped ackers: not done
        store.close();
    }
    let store = open(dir.path());
    let broker = store.broker("ns", "b");
    let mut sub = broker
        .subscribe("t", &crate::SubscribeOptions::default())
        .await
        .expect("subscribe");
    let again = take(&mut sub, 3).await;
    assert_eq!(offsets(&again), [0, 1, 2]);
    assert_eq!(again[0].event, event(0));
}

#[tokio::test]
async fn out_of_order_acks_advance_over_the_contiguous_prefix() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let broker = store.broker("ns", "b");
    let mut sub = broker
        .subscribe("t", &crate::SubscribeOptions::default())
        .await
        .expect("subscribe");
    broker.append(events(0..6)).await.expect("append");
    let mut deliveries = take(&mut sub, 6).await;
    // Ack 5, 3, 2, 4: nothing contiguous yet.
    for i in [5, 3, 2, 4] {
        let d = std::mem::replace(&mut deliveries[i].acker, Acker::new(0, Arc::new(NoAck)));
        d.ack();
    }
    assert_eq!(broker.pending("t"), 2);
    // A new handle restarts at the cursor but skips what was acked out of order.
    let mut resumed = broker
        .subscribe("t", &crate::SubscribeOptions::default())
        .await
        .expect("resubscribe");
    let again = take(&mut resumed, 2).await;
    assert_eq!(offsets(&again), [0, 1]);
    assert!(again.iter().all(|d| d.redelivered));
    assert_idle(&mut resumed).await;
    for d in again {
        d.acker.ack();
    }
    assert_eq!(broker.pending("t"), 0);
    eventually("everything is reclaimed", || broker.stored() == 0).await;
    store.close();

    let store = open(dir.path());
    let broker = store.broker("ns", "b");
    let mut sub = broker
        .subscribe("t", &crate::SubscribeOptions::default())
        .await
        .expect("subscribe");
    assert_idle(&mut sub).await;
    assert_eq!(broker.pending("t"), 0);
}

struct NoAck;

impl AckHandler for NoAck {
    fn ack(&self, _offset: u64) {}
}

#[tokio::test]
async fn subscriptions_have_independent_cursors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let broker = store.broker("ns", "b");
    let mut a = broker
        .subscribe("a", &crate::SubscribeOptions::default())
        .await
        .expect("subscribe a");
    let mut b = broker
        .subscribe("b", &crate::SubscribeOptions::default())
        .await
        .expect("subscribe b");
    broker.append(events(0..4)).await.expect("append");
    for d in take(&mut a, 4).await {
        d.acker.ack();
    }
    assert_eq!((broker.pending("a"), broker.pending("b")), (0, 4));
    let first_b = next(&mut b).await;
    assert_eq!(first_b.offset, 0);
    first_b.acker.ack();
    assert_eq!(broker.pending("b"), 3);
    // Only what both have acked can go.
    eventually("offset 0 is reclaimed", || broker.stored() == 3).await;
    store.close();

    let store = open(dir.path());
    let broker = store.broker("ns", "b");
    assert_eq!((broker.pending("a"), broker.pending("b")), (0, 3));
    let mut b = broker
        .subscribe("b", &crate::SubscribeOptions::default())
        .await
        .expect("subscribe b");
    assert_eq!(next(&mut b).await.offset, 1);
    let mut a = broker
        .subscribe("a", &crate::SubscribeOptions::default())
        .await
        .expect("subscribe a");
    assert_idle(&mut a).await;
}

#[tokio::test]
async fn new_subscription_starts_at_head() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let broker = store.broker("ns", "b");
    // No subscription: events match no trigger and are dropped.
    broker.append(events(0..3)).await.expect("append");
    assert_eq!(broker.stored(), 0);
    let mut a = broker
        .subscribe("a", &crate::SubscribeOptions::default())
        .await
        .expect("subscribe a");
    broker.append(events(3..5)).await.expect("append");
    let mut late = broker
        .subscribe("late", &crate::SubscribeOptions::default())
        .await
        .expect("subscribe late");
    assert_eq!(broker.pending("late"), 0);
    broker.append(events(5..6)).await.expect("append");
    assert_eq!(offsets(&take(&mut a, 3).await), [3, 4, 5]);
    assert_eq!(next(&mut late).await.offset, 5);
    assert_eq!(broker.pending("unknown"), 0);
}

#[tokio::test]
async fn reclaim_frees_acked_events_and_removed_subscriptions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let broker = store.broker("ns", "b");
    let mut a = broker
        .subscribe("a", &crate::SubscribeOptions::default())
        .await
        .expect("subscribe a");
    let _b = broker
        .subscribe("b", &crate::SubscribeOptions::default())
        .await
        .expect("subscribe b");
    broker.append(events(0..10)).await.expect("append");
    assert_eq!(broker.stored(), 10);
    let bytes = store.retained_bytes();
    assert!(bytes > 0);
    for d in take(&mut a, 10).await {
        d.acker.ack();
    }
    // "b" has acked nothing: everything stays.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(broker.stored(), 10);
    broker.remove_subscription("b").await.expect("remove b");
    assert_eq!(broker.pending("b"), 0);
    eventually("events are reclaimed", || broker.stored() == 0).await;
    assert_eq!(store.retained_bytes(), 0);
    // Removing an unknown subscription is not an error.
    broker
        .remove_subscription("nope")
        .await
        .expect("remove unknown");
}

#[tokio::test]
async fn removed_subscription_ends_and_restarts_at_head() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let broker = store.broker("ns", "b");
    let mut sub = broker
        .subscribe("t", &crate::SubscribeOptions::default())
        .await
        .expect("subscribe");
    broker.append(events(0..2)).await.expect("append");
    let _ = take(&mut sub, 2).await;
    let waiting = tokio::spawn(async move { sub.next().await.is_none() });
    tokio::time::sleep(Duration::from_millis(20)).await;
    broker.remove_subscription("t").await.expect("remove");
    let ended = tokio::time::timeout(Duration::from_secs(5), waiting).await;
    assert!(
        matches!(ended, Ok(Ok(true))),
        "a waiting handle ends on removal"
    );
    let mut sub = broker
        .subscribe("t", &crate::SubscribeOptions::default())
        .await
        .expect("subscribe again");
    broker.append(events(2..3)).await.expect("append");
    assert_eq!(next(&mut sub).await.offset, 2);
}

#[tokio::test]
async fn quota_rejects_appends_that_do_not_fit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let size = event(0).encoded_len() as u64;
    let store = EmbeddedStore::open(
        dir.path(),
        EmbeddedOptions {
            max_bytes: Some(size * 3),
            ..options()
        },
    )
    .expect("open");
    let broker = store.broker("ns", "b");
    let mut sub = broker
        .subscribe("t", &crate::SubscribeOptions::default())
        .await
        .expect("subscribe");
    broker.append(events(0..3)).await.expect("fits");
    let full = broker.append(events(3..5)).await;
    assert!(matches!(full, Err(BrokerError::Full { .. })), "{full:?}");
    let err = full.expect_err("full");
    assert_eq!(err.http_status(), ::http::StatusCode::SERVICE_UNAVAILABLE);
    assert!(err.to_string().contains("full"), "{err}");
    assert_eq!(broker.stored(), 3);
    // Nothing of the rejected append became visible.
    let delivered = take(&mut sub, 3).await;
    assert_idle(&mut sub).await;
    for d in delivered {
        d.acker.ack();
    }
    eventually("space is reclaimed", || store.retained_bytes() == 0).await;
    broker
        .append(events(3..5))
        .await
        .expect("fits after reclaim");
    assert_eq!(offsets(&take(&mut sub, 2).await), [3, 4]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_share_commits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let broker = store.broker("ns", "b");
    let mut sub = broker
        .subscribe("t", &crate::SubscribeOptions::default())
        .await
        .expect("subscribe");
    let before = store.commits();
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let broker = broker.clone();
            tokio::spawn(async move { broker.append(vec![event(i)]).await })
        })
        .collect();
    for task in tasks {
        task.await.expect("task").expect("append");
    }
    let commits = store.commits() - before;
    println!("200 concurrent appends took {commits} commits");
    assert!(commits < 200, "{commits} commits for 200 appends");
    assert_eq!(broker.stored(), 200);
    let ids: BTreeSet<String> = take(&mut sub, 200)
        .await
        .into_iter()
        .map(|d| d.event.id().to_owned())
        .collect();
    assert_eq!(ids.len(), 200);
}

#[tokio::test]
async fn brokers_are_separate_logs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let one = store.broker("ns", "one");
    let two = store.broker("ns", "two");
    let mut s1 = one
        .subscribe("t", &crate::SubscribeOptions::default())
        .await
        .expect("subscribe");
    let mut s2 = two
        .subscribe("t", &crate::SubscribeOptions::default())
        .await
        .expect("subscribe");
    one.append(events(0..2)).await.expect("append");
    two.append(events(10..11)).await.expect("append");
    assert_eq!(offsets(&take(&mut s1, 2).await), [0, 1]);
    let d = next(&mut s2).await;
    assert_eq!((d.offset, d.event.id()), (0, "e10"));
    assert_eq!(one.backend(), "embedded");
}

#[tokio::test]
async fn invalid_events_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let broker = store.broker("ns", "b");
    let _sub = broker
        .subscribe("t", &crate::SubscribeOptions::default())
        .await
        .expect("subscribe");
    let bad = CloudEvent::new(SpecVersion::V10, "", "/s", "t");
    let result = broker.append(vec![event(0), bad]).await;
    assert!(matches!(result, Err(BrokerError::Event(_))), "{result:?}");
    assert_eq!(broker.stored(), 0);
    broker
        .append(Vec::new())
        .await
        .expect("empty append is a no-op");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement"]
async fn measure_group_commit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let broker = store.broker("ns", "b");
    let _sub = broker
        .subscribe("t", &crate::SubscribeOptions::default())
        .await
        .expect("subscribe");
    let start = tokio::time::Instant::now();
    for i in 0..300 {
        broker.append(vec![event(i)]).await.expect("append");
    }
    let c = store.commits();
    println!(
        "sequential: 300 appends, {c} commits, {:?} per append",
        start.elapsed() / 300
    );
    for concurrency in [10usize, 100, 1000] {
        let before = store.commits();
        let start = tokio::time::Instant::now();
        let tasks: Vec<_> = (0..concurrency)
            .map(|i| {
                let broker = broker.clone();
                tokio::spawn(async move { broker.append(vec![event(i)]).await })
            })
            .collect();
        for t in tasks {
            t.await.expect("task").expect("append");
        }
        println!(
            "concurrent {concurrency}: {} commits, {:?} total",
            store.commits() - before,
            start.elapsed()
        );
    }
}
