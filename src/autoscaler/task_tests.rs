//! The task on paused tokio time with a fake source and scaler.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use tokio::task::JoinHandle;
use tokio::time::sleep;

use super::*;

#[derive(Default)]
struct FakeSource {
    demand: Mutex<Demand>,
    ready: AtomicU32,
    total: AtomicU64,
    /// The HPA class: every ready pod's usage.
    usage: Mutex<Option<f64>>,
}

impl FakeSource {
    fn set(&self, in_flight: u64, queued: u64, backlog: u64) {
        if let Ok(mut d) = self.demand.lock() {
            *d = Demand {
                in_flight,
                queued,
                backlog,
            };
        }
    }
}

impl DemandSource for FakeSource {
    fn demand(&self) -> Demand {
        self.demand.lock().map(|d| *d).unwrap_or_default()
    }
    fn ready_pods(&self) -> u32 {
        self.ready.load(Ordering::SeqCst)
    }
    fn requests_total(&self) -> u64 {
        self.total.load(Ordering::SeqCst)
    }
    fn pod_samples(&self, now: Instant) -> Vec<PodSample> {
        let usage = self.usage.lock().map(|u| *u).unwrap_or_default();
        let long_ago = now.checked_sub(Duration::from_secs(600)).unwrap_or(now);
        (0..self.ready.load(Ordering::SeqCst))
            .map(|_| PodSample {
                ready: true,
                started: long_ago,
                ready_changed: long_ago,
                usage: usage.map(|u| (u, now)),
            })
            .collect()
    }
}

/// Remembers every call with the (virtual) time it came.
#[derive(Default)]
struct FakeScaler {
    calls: Mutex<Vec<(Duration, u32)>>,
    start: Mutex<Option<Instant>>,
}

impl FakeScaler {
    fn calls(&self) -> Vec<(Duration, u32)> {
        self.calls.lock().map(|c| c.clone()).unwrap_or_default()
    }
    fn last(&self) -> Option<u32> {
        self.calls().last().map(|&(_, d)| d)
    }
}

impl Scaler for FakeScaler {
    fn scale(&self, desired: u32) {
        let start = self.start.lock().ok().and_then(|s| *s);
        let at = start.map_or(Duration::ZERO, |s| Instant::now() - s);
        if let Ok(mut c) = self.calls.lock() {
            c.push((at, desired));
        }
    }
}

struct Harness {
    source: Arc<FakeSource>,
    scaler: Arc<FakeScaler>,
    changed: Arc<Notify>,
    stop: CancellationToken,
    handle: JoinHandle<()>,
}

fn start(policy: Policy) -> Harness {
    let source = Arc::new(FakeSource::default());
    let scaler = Arc::new(FakeScaler::default());
    if let Ok(mut s) = scaler.start.lock() {
        *s = Some(Instant::now());
    }
    let changed = Arc::new(Notify::new());
    let stop = CancellationToken::new();
    let handle = tokio::spawn(run(
        policy,
        source.clone(),
        scaler.clone(),
        changed.clone(),
        stop.clone(),
    ));
    Harness {
        source,
        scaler,
        changed,
        stop,
        handle,
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[tokio::test(start_paused = true)]
async fn precise_follows_every_change_and_holds_decreases() {
    let h = start(Policy {
        initial_scale: 0,
        ..Policy::precise_default(10)
    });
    sleep(ms(500)).await;
    assert_eq!(h.scaler.calls(), [(ms(0), 0)]);

    h.source.set(10, 15, 0);
    h.changed.notify_one();
    sleep(ms(1)).await;
    assert_eq!(h.scaler.last(), Some(3), "no tick wait");
    assert_eq!(h.scaler.calls()[1].0, ms(500));

    h.source.set(0, 0, 0);
    h.changed.notify_one();
    sleep(ms(9_000)).await;
    assert_eq!(h.scaler.last(), Some(3), "decrease held");
    sleep(ms(2_000)).await;
    assert_eq!(
        h.scaler.calls().last(),
        Some(&(ms(10_501), 0)),
        "released at the wakeup"
    );
    h.stop.cancel();
    assert!(h.handle.await.is_ok());
}

#[tokio::test(start_paused = true)]
async fn precise_counts_backlog_on_its_refresh() {
    let h = start(Policy {
        initial_scale: 0,
        ..Policy::precise_default(10)
    });
    sleep(ms(100)).await;
    h.source.set(0, 0, 35);
    sleep(ms(1_800)).await;
    assert_eq!(h.scaler.last(), Some(0));
    sleep(ms(200)).await;
    assert_eq!(
        h.scaler.calls().last(),
        Some(&(ms(2_000), 4)),
        "ceil(35 / 10) at the refresh, without a signal"
    );
    h.stop.cancel();
}

#[tokio::test(start_paused = true)]
async fn kpa_scales_from_zero_without_waiting_for_a_tick() {
    let h = start(Policy {
        initial_scale: 0,
        ..Policy::kpa_default().with_container_concurrency(10)
    });
    sleep(ms(700)).await;
    assert_eq!(h.scaler.calls(), [(ms(0), 0)]);
    h.source.set(0, 3, 0);
    h.changed.notify_one();
    sleep(ms(1)).await;
    assert_eq!(h.scaler.calls(), [(ms(0), 0), (ms(700), 1)]);
    h.stop.cancel();
    assert!(h.handle.await.is_ok());
}

#[tokio::test(start_paused = true)]
async fn kpa_ignores_changes_while_pods_are_ready_and_decides_on_ticks() {
    let h = start(Policy::kpa_default().with_container_concurrency(10));
    h.source.ready.store(1, Ordering::SeqCst);
    sleep(ms(100)).await;
    // Idle, but a revision stays up for a stable window after it became active.
    assert_eq!(h.scaler.calls(), [(ms(0), 1)]);
    h.source.set(10, 20, 0);
    h.changed.notify_one();
    sleep(ms(1_000)).await;
    assert_eq!(h.scaler.calls().len(), 1, "no decision between ticks");
    sleep(ms(1_000)).await;
    // Second 1 recorded 30 in flight + queued: ceil(30 / 7) = 5, and 5 ≥ 2 × 1 ready: panic.
    assert_eq!(h.scaler.calls()[1], (ms(2_000), 5));
    h.stop.cancel();
}

#[tokio::test(start_paused = true)]
async fn kpa_idle_revision_goes_to_zero_after_window_and_grace() {
    let h = start(Policy::kpa_default().with_container_concurrency(10));
    h.source.ready.store(1, Ordering::SeqCst);
    sleep(ms(200_000)).await;
    // Active from 0 s; idle all along: the decider says 0 from the first tick, the revision must
    // have been active for the 60 s stable window, then 30 s grace.
    assert_eq!(h.scaler.calls(), [(ms(0), 1), (ms(90_000), 0)]);
    h.stop.cancel();
}

#[tokio::test(start_paused = true)]
async fn kpa_rps_counts_arrivals_per_second() {
    let h = start(Policy {
        metric: Metric::Rps,
        target: crate::autoscaler::policy::DEFAULT_RPS_TARGET,
        ..Policy::kpa_default()
    });
    h.source.ready.store(1, Ordering::SeqCst);
    sleep(ms(500)).await;
    for _ in 0..10 {
        h.source.total.fetch_add(300, Ordering::SeqCst);
        sleep(ms(1_000)).await;
    }
    // 300 rps over 140 per pod: 3 pods.
    assert_eq!(h.scaler.last(), Some(3));
    h.stop.cancel();
}

#[tokio::test(start_paused = true)]
async fn kpa_backlog_wants_pods_too() {
    let h = start(Policy::kpa_default());
    h.source.ready.store(1, Ordering::SeqCst);
    h.source.set(0, 0, 45);
    sleep(ms(2_100)).await;
    assert_eq!(h.scaler.last(), Some(5));
    h.stop.cancel();
}

#[tokio::test(start_paused = true)]
async fn hpa_samples_every_second_scales_on_usage_and_goes_to_zero_after_its_window() {
    let h = start(Policy {
        min_scale: 0,
        ..Policy::hpa_cpu(1000.0, 50.0)
    });
    // One pod at 1000 m against a 500 m target: two pods on the first sample.
    h.source.ready.store(1, Ordering::SeqCst);
    if let Ok(mut u) = h.source.usage.lock() {
        *u = Some(1000.0);
    }
    h.source.set(3, 0, 0);
    sleep(ms(1_500)).await;
    assert_eq!(h.scaler.calls(), [(ms(0), 1), (ms(1_000), 2)]);

    // Idle: the 300 s scale-down window keeps two pods, then zero (min-scale 0).
    h.source.ready.store(2, Ordering::SeqCst);
    if let Ok(mut u) = h.source.usage.lock() {
        *u = Some(0.0);
    }
    h.source.set(0, 0, 0);
    sleep(ms(250_000)).await;
    assert_eq!(h.scaler.last(), Some(2), "held by the stabilization window");
    sleep(ms(60_000)).await;
    assert_eq!(h.scaler.last(), Some(0));

    // At zero a request wants a pod at once, without waiting for a sample.
    h.source.ready.store(0, Ordering::SeqCst);
    sleep(ms(500)).await;
    h.source.set(0, 1, 0);
    let before = h.scaler.calls().len();
    h.changed.notify_one();
    sleep(ms(1)).await;
    assert_eq!(h.scaler.calls().len(), before + 1);
    assert_eq!(h.scaler.last(), Some(1));
    h.stop.cancel();
    assert!(h.handle.await.is_ok());
}
