//! Exact accounting and dispatch of one revision, on paused time.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::*;

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn revision(cc: u32, depth: usize) -> Arc<Revision> {
    Revision::new(
        "default",
        "svc",
        "svc-00001",
        "precise",
        Limits {
            container_concurrency: cc,
            timeout: Duration::from_secs(10),
            response_start_timeout: None,
            queue_depth: depth,
            protocol: Default::default(),
        },
        Default::default(),
    )
}

#[tokio::test(start_paused = true)]
async fn cold_requests_wait_for_the_first_pod_and_count_as_queued() {
    let rev = revision(1, 100);
    let deadline = Instant::now() + Duration::from_secs(10);
    let waiting: Vec<_> = (0..3)
        .map(|_| {
            let rev = Arc::clone(&rev);
            tokio::spawn(async move { rev.acquire(deadline).await })
        })
        .collect();
    tokio::task::yield_now().await;
    let counts = rev.counts();
    assert_eq!((counts.in_flight, counts.queued), (0, 3));
    rev.pod_ready(1, addr(1));
    rev.pod_ready(2, addr(2));
    let counts = rev.counts();
    assert_eq!((counts.in_flight, counts.queued), (2, 1));
    let mut guards = Vec::new();
    for w in waiting.into_iter().take(2) {
        guards.push(w.await.expect("join").expect("slot"));
    }
    drop(guards.pop());
    let counts = rev.counts();
    assert_eq!(
        (counts.in_flight, counts.queued),
        (2, 0),
        "the freed slot went to the waiter"
    );
}

#[tokio::test(start_paused = true)]
async fn timeouts_and_gone_clients_leave_the_queue_exactly() {
    let rev = revision(1, 100);
    let short = Instant::now() + Duration::from_millis(100);
    let result = rev.acquire(short).await;
    assert_eq!(
        result.err(),
        Some(DispatchError::Timeout("svc-00001".into()))
    );
    assert_eq!(rev.counts().queued, 0);

    let far = Instant::now() + Duration::from_secs(60);
    let task = {
        let rev = Arc::clone(&rev);
        tokio::spawn(async move { rev.acquire(far).await })
    };
    tokio::task::yield_now().await;
    assert_eq!(rev.counts().queued, 1);
    task.abort();
    let _ = task.await;
    assert_eq!(rev.counts().queued, 0, "an abandoned wait is not counted");
    rev.pod_ready(1, addr(1));
    assert_eq!(
        rev.counts().in_flight,
        0,
        "nobody took the slot for a gone client"
    );
}

#[tokio::test(start_paused = true)]
async fn full_queue_is_refused() {
    let rev = revision(1, 1);
    let deadline = Instant::now() + Duration::from_secs(60);
    let first = {
        let rev = Arc::clone(&rev);
        tokio::spawn(async move { rev.acquire(deadline).await.map(|_| ()) })
    };
    tokio::task::yield_now().await;
    assert!(matches!(
        rev.acquire(deadline).await,
        Err(DispatchError::QueueFull(..))
    ));
    first.abort();
}

#[tokio::test(start_paused = true)]
async fn many_concurrent_requests_never_exceed_container_concurrency() {
    let rev = revision(2, 1000);
    rev.pod_ready(1, addr(1));
    rev.pod_ready(2, addr(2));
    let deadline = Instant::now() + Duration::from_secs(60);
    let max_seen = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let rev = Arc::clone(&rev);
            let max_seen = Arc::clone(&max_seen);
            tokio::spawn(async move {
                let guard = rev.acquire(deadline).await.expect("slot");
                let on_pod = rev.pod_in_flight(guard.pod());
                max_seen.fetch_max(on_pod, std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(1 + i % 7)).await;
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("join");
    }
    assert_eq!(max_seen.load(std::sync::atomic::Ordering::Relaxed), 2);
    let counts = rev.counts();
    assert_eq!((counts.in_flight, counts.queued), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn a_gone_pod_frees_nothing_twice() {
    let rev = revision(1, 10);
    rev.pod_ready(1, addr(1));
    let deadline = Instant::now() + Duration::from_secs(5);
    let guard = rev.acquire(deadline).await.expect("slot");
    rev.pod_gone(1);
    assert_eq!(rev.counts().in_flight, 0);
    drop(guard);
    assert_eq!(rev.counts().in_flight, 0);
    rev.pod_ready(2, addr(2));
    let g = rev.acquire(deadline).await.expect("slot");
    assert_eq!(g.pod(), 2);
}

#[tokio::test(start_paused = true)]
async fn the_autoscaler_is_woken_exactly_when_its_decision_can_change() {
    let rev = revision(0, 100);
    rev.set_wake_step(4.0);
    rev.pod_ready(1, addr(1));
    let woken = || {
        let rev = Arc::clone(&rev);
        async move {
            tokio::time::timeout(Duration::from_millis(1), rev.changed.notified())
                .await
                .is_ok()
        }
    };
    assert!(woken().await, "a pod change always wakes");
    let deadline = Instant::now() + Duration::from_secs(1);
    let mut guards = Vec::new();
    let mut wakes = Vec::new();
    for _ in 0..9 {
        guards.push(rev.acquire(deadline).await.expect("slot"));
        wakes.push(woken().await);
    }
    // Demand 1 (from zero), 5 and 9 cross a step of 4.
    assert_eq!(
        wakes,
        [true, false, false, false, true, false, false, false, true]
    );
    let mut wakes = Vec::new();
    while let Some(g) = guards.pop() {
        drop(g);
        wakes.push(woken().await);
    }
    // Demand 8 (from 9), 4 (from 5) and 0 cross back.
    assert_eq!(
        wakes,
        [true, false, false, false, true, false, false, false, true]
    );
}

#[tokio::test(start_paused = true)]
async fn average_concurrency_is_time_weighted() {
    let rev = revision(0, 100);
    rev.pod_ready(1, addr(1));
    let _ = rev.average_concurrency();
    let deadline = Instant::now() + Duration::from_secs(10);
    // One request for the whole second, a second one for its last quarter: 1.25 on average.
    let a = rev.acquire(deadline).await.expect("slot");
    tokio::time::sleep(Duration::from_millis(750)).await;
    let b = rev.acquire(deadline).await.expect("slot");
    tokio::time::sleep(Duration::from_millis(250)).await;
    let average = rev.average_concurrency();
    assert!((average - 1.25).abs() < 1e-6, "{average}");
    drop((a, b));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(rev.average_concurrency(), 0.0);
}

/// Many clients on real threads acquire, hold, time out and give up while pods (regular and
/// reserved) become ready, drain and disappear: no pod ever holds more than its limit, and in
/// flight and queued return to zero.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn accounting_stays_exact_under_concurrent_clients_cancellations_and_pod_changes() {
    use rand::{Rng as _, SeedableRng as _};
    use std::collections::HashMap;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, Ordering};

    const CC: u32 = 3;
    const RESERVED_LIMIT: u32 = 5;
    let rev = revision(CC, 64);
    // What the test saw sent to each pod right now, and each pod's limit.
    let on_pod: Arc<Mutex<HashMap<PodId, (u32, u32)>>> = Arc::default();
    let exceeded = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicBool::new(false));

    let churn = {
        let (rev, on_pod, done) = (Arc::clone(&rev), Arc::clone(&on_pod), Arc::clone(&done));
        tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(7);
            let mut live: Vec<PodId> = Vec::new();
            let mut next: PodId = 1;
            // Bounded: at most 4000 changes.
            for _ in 0..4000 {
                if done.load(Ordering::Relaxed) {
                    break;
                }
                match rng.random_range(0..10) {
                    0..=3 if live.len() < 6 => {
                        let reserved = rng.random_bool(0.25);
                        let limit = if reserved { RESERVED_LIMIT } else { CC };
                        if let Ok(mut m) = on_pod.lock() {
                            m.insert(next, (0, limit));
                        }
                        if reserved {
                            rev.reserved_pod_ready(next, addr(1), limit);
                        } else {
                            rev.pod_ready(next, addr(1));
                        }
                        live.push(next);
                        next += 1;
                    }
                    4..=5 if !live.is_empty() => {
                        let pod = live[rng.random_range(0..live.len())];
                        rev.pod_draining(pod);
                    }
                    6 if !live.is_empty() => {
                        let pod = live.swap_remove(rng.random_range(0..live.len()));
                        rev.pod_gone(pod);
                    }
                    _ => {}
                }
                tokio::time::sleep(Duration::from_micros(rng.random_range(50..400))).await;
            }
            for pod in live {
                rev.pod_gone(pod);
            }
        })
    };

    let clients: Vec<_> = (0..48u64)
        .map(|seed| {
            let (rev, on_pod, exceeded) =
                (Arc::clone(&rev), Arc::clone(&on_pod), Arc::clone(&exceeded));
            tokio::spawn(async move {
                let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
                let (mut served, mut refused) = (0u32, 0u32);
                for _ in 0..150 {
                    let wait = Duration::from_micros(rng.random_range(100..5_000));
                    let give_up = Duration::from_micros(rng.random_range(50..6_000));
                    let attempt = rev.acquire(Instant::now() + wait);
                    // Some clients go away before their wait is over (the future is dropped).
                    let Ok(result) = tokio::time::timeout(give_up, attempt).await else {
                        refused += 1;
                        continue;
                    };
                    let Ok(guard) = result else {
                        refused += 1;
                        continue;
                    };
                    let pod = guard.pod();
                    if let Ok(mut m) = on_pod.lock()
                        && let Some((count, limit)) = m.get_mut(&pod)
                    {
                        *count += 1;
                        if *count > *limit {
                            exceeded.store(true, Ordering::SeqCst);
                        }
                    }
                    tokio::time::sleep(Duration::from_micros(rng.random_range(0..800))).await;
                    if let Ok(mut m) = on_pod.lock()
                        && let Some((count, _)) = m.get_mut(&pod)
                    {
                        *count -= 1;
                    }
                    drop(guard);
                    served += 1;
                }
                (served, refused)
            })
        })
        .collect();
    let (mut served, mut refused) = (0u32, 0u32);
    for client in clients {
        let (s, r) = client.await.expect("client");
        served += s;
        refused += r;
    }
    done.store(true, Ordering::Relaxed);
    churn.await.expect("churn");
    assert!(
        !exceeded.load(Ordering::SeqCst),
        "a pod held more than its limit"
    );
    let counts = rev.counts();
    assert_eq!((counts.in_flight, counts.queued), (0, 0), "{counts:?}");
    assert_eq!(served + refused, 48 * 150);
    assert!(
        served > 0 && refused > 0,
        "both paths ran: {served} served, {refused} refused"
    );
}
