//! The replica calculator on cases of kubernetes `pkg/controller/podautoscaler/
//! replica_calculator_test.go` (named per test; cpu levels in millicores against 1 000 m
//! requests), then the behaviour: stabilization windows, rate policies, bounds and tidegate's
//! scale to zero, on paused time.

use std::time::Duration;

use tokio::time::Instant;

use super::*;

const SECOND: Duration = Duration::from_secs(1);

/// A cpu policy at `percent` of a 1 000 m request.
fn cpu(percent: f64) -> HpaPolicy {
    HpaPolicy::new(Resource::Cpu, 1000.0 * percent / 100.0)
}

/// Ready pods started long ago, each with a fresh sample of `levels[i]`.
fn pods(now: Instant, levels: &[f64]) -> Vec<PodSample> {
    let long_ago = now - Duration::from_secs(3600);
    levels
        .iter()
        .map(|&level| PodSample {
            ready: true,
            started: long_ago,
            ready_changed: long_ago + SECOND,
            usage: Some((level, now)),
        })
        .collect()
}

fn idle() -> Demand {
    Demand::default()
}

fn busy() -> Demand {
    Demand {
        in_flight: 1,
        ..Demand::default()
    }
}

#[tokio::test(start_paused = true)]
async fn scale_up() {
    // TestReplicaCalcScaleUp: 3 pods at 300/500/700 m, target 30 % → 50 % → 5.
    let now = Instant::now();
    assert_eq!(
        replicas(&pods(now, &[300.0, 500.0, 700.0]), 3, &cpu(30.0), now),
        5
    );
}

#[tokio::test(start_paused = true)]
async fn scale_up_unready_less_scale() {
    // TestReplicaCalcScaleUpUnreadyLessScale: the unready pod counts as 0 on the way up → 4.
    let now = Instant::now();
    let mut p = pods(now, &[300.0, 500.0, 700.0]);
    p[0].ready = false;
    // Never ready since it started: left out, then taken as 0 on the way up.
    p[0].ready_changed = p[0].started;
    assert_eq!(replicas(&p, 3, &cpu(30.0), now), 4);
    // A pod that was ready and lost it later, past its initialization, still counts.
    p[0].ready_changed = now - Duration::from_secs(10);
    assert_eq!(replicas(&p, 3, &cpu(30.0), now), 5);
}

#[tokio::test(start_paused = true)]
async fn scale_up_unready_no_scale() {
    // TestReplicaCalcScaleUpUnreadyNoScale: 400/500/700 at target 40 %, one never ready: the
    // ready pods say 60 % (ratio 1.5), with the unready one at 0 the ratio is 1.0, inside the
    // tolerance → no change.
    let now = Instant::now();
    let mut p = pods(now, &[400.0, 500.0, 700.0]);
    p[0].ready = false;
    p[0].ready_changed = p[0].started;
    assert_eq!(replicas(&p, 3, &cpu(40.0), now), 3);
}

#[tokio::test(start_paused = true)]
async fn scale_down() {
    // TestReplicaCalcScaleDown: 100/300/500/250/250 at target 50 % → 28 % → 3.
    let now = Instant::now();
    let p = pods(now, &[100.0, 300.0, 500.0, 250.0, 250.0]);
    assert_eq!(replicas(&p, 5, &cpu(50.0), now), 3);
}

#[tokio::test(start_paused = true)]
async fn tolerance() {
    // TestReplicaCalcTolerance: 1 010/1 030/1 020 at target 100 % → 102 % → no change.
    let now = Instant::now();
    let p = pods(now, &[1010.0, 1030.0, 1020.0]);
    assert_eq!(replicas(&p, 3, &cpu(100.0), now), 3);
}

#[tokio::test(start_paused = true)]
async fn missing_metrics_count_at_target_on_the_way_down() {
    // After TestReplicaCalcMissingMetricsScaleDown (values ours): 4 pods, one without a sample,
    // 400/95/155 at target 50 % → ratio 0.433 over the sampled; the missing one at target
    // makes 0.575 → 3.
    let now = Instant::now();
    let mut p = pods(now, &[400.0, 95.0, 155.0, 0.0]);
    p[3].usage = None;
    assert_eq!(replicas(&p, 4, &cpu(50.0), now), 3);
}

#[tokio::test(start_paused = true)]
async fn missing_metrics_count_as_zero_on_the_way_up() {
    // After TestReplicaCalcMissingMetricsScaleUp (values ours): 2 pods sampled at 1 900 m, 2 without, target
    // 50 %: 380 % over the sampled; with the missing at 0 → 190 % → ceil(1.9 × 4) = 8.
    let now = Instant::now();
    let mut p = pods(now, &[1900.0, 1900.0, 0.0, 0.0]);
    p[2].usage = None;
    p[3].usage = None;
    assert_eq!(replicas(&p, 4, &cpu(50.0), now), 8);
}

#[tokio::test(start_paused = true)]
async fn missing_metrics_that_would_turn_the_direction_change_nothing() {
    // After TestReplicaCalcMissingMetricsNoChangeGt (values ours): the sampled pods say up (ratio 1.9), but the
    // missing ones at 0 say down (0.95): no change.
    let now = Instant::now();
    let mut p = pods(now, &[950.0, 0.0]);
    p[1].usage = None;
    assert_eq!(replicas(&p, 2, &cpu(50.0), now), 2);
}

#[tokio::test(start_paused = true)]
async fn initializing_cpu_pods_count_only_once_ready_with_a_later_sample() {
    // After TestReplicaCalcScaleHotCpuNoScale (values ours): a pod in its initialization period whose
    // sample predates its readiness is left out on the way up.
    let now = Instant::now();
    // 600/800/700 at target 30 %: all counted, 70 % → 7; the third left out and then taken
    // as 0 on the way up, (600 + 800 + 0) / 3 000 = 46.7 % → ceil(1.556 × 3) = 5.
    let mut p = pods(now, &[600.0, 800.0, 700.0]);
    p[2].started = now - Duration::from_secs(60);
    p[2].ready_changed = now; // became ready just now: the sample predates a whole window
    assert_eq!(
        replicas(&p, 3, &cpu(30.0), now),
        5,
        "counted as 0 on the way up"
    );
    p[2].ready_changed = now - Duration::from_secs(10);
    assert_eq!(
        replicas(&p, 3, &cpu(30.0), now),
        7,
        "ready with a later sample: counts"
    );
}

#[tokio::test(start_paused = true)]
async fn memory_counts_every_sampled_pod() {
    // Memory, average value 100 MiB: 150/150 MiB → ratio 1.5 → 3; an unready pod counts.
    let now = Instant::now();
    let mib = 1024.0 * 1024.0;
    let policy = HpaPolicy::new(Resource::Memory, 100.0 * mib);
    let mut p = pods(now, &[150.0 * mib, 150.0 * mib]);
    p[1].ready = false;
    assert_eq!(replicas(&p, 2, &policy, now), 3);
}

#[tokio::test(start_paused = true)]
async fn no_sample_at_all_changes_nothing() {
    let now = Instant::now();
    let mut p = pods(now, &[0.0, 0.0]);
    p.iter_mut().for_each(|p| p.usage = None);
    assert_eq!(replicas(&p, 2, &cpu(50.0), now), 2);
}

#[tokio::test(start_paused = true)]
async fn scale_up_is_limited_to_four_pods_or_double_per_15_seconds() {
    let mut hpa = Hpa::new();
    let policy = cpu(10.0);
    let now = Instant::now();
    // 1 pod at 1 000 m against 100 m: 10× → wants 10, may add max(4, 100 %) → 5.
    assert_eq!(
        hpa.decide(now, &pods(now, &[1000.0]), 1, busy(), &policy),
        5
    );
    // Within the same 15 s, the limit counts from the period's start (1 pod): still 5.
    let later = now + 5 * SECOND;
    assert_eq!(
        hpa.decide(later, &pods(later, &[1000.0; 5]), 5, busy(), &policy),
        5
    );
    // Once the period passed: from 5, max(9, 10) → 10.
    let after = now + 16 * SECOND;
    assert_eq!(
        hpa.decide(after, &pods(after, &[1000.0; 5]), 5, busy(), &policy),
        10
    );
}

#[tokio::test(start_paused = true)]
async fn scale_down_takes_the_highest_recommendation_of_the_last_300_seconds() {
    let mut hpa = Hpa::new();
    let policy = cpu(50.0);
    let start = Instant::now();
    // 4 pods at target: stays 4.
    assert_eq!(
        hpa.decide(start, &pods(start, &[500.0; 4]), 4, busy(), &policy),
        4
    );
    // Load drops to a quarter: the calculator says 1, the window still holds 4.
    for s in [10u64, 100, 299] {
        let now = start + Duration::from_secs(s);
        assert_eq!(
            hpa.decide(now, &pods(now, &[125.0; 4]), 4, busy(), &policy),
            4,
            "at {s} s"
        );
    }
    // 300 s after the last recommendation of 4, the down window lets it go (100 % per 15 s).
    let now = start + Duration::from_secs(301);
    assert_eq!(
        hpa.decide(now, &pods(now, &[125.0; 4]), 4, busy(), &policy),
        1
    );
}

#[tokio::test(start_paused = true)]
async fn window_sets_both_stabilization_windows() {
    let policy = cpu(50.0).with_window(Duration::from_secs(60));
    assert_eq!(policy.scale_up.stabilization, Duration::from_secs(60));
    assert_eq!(policy.scale_down.stabilization, Duration::from_secs(60));
    let mut hpa = Hpa::new();
    let start = Instant::now();
    assert_eq!(
        hpa.decide(start, &pods(start, &[500.0; 2]), 2, busy(), &policy),
        2
    );
    // A burst wants 4, but the up window still holds the lower 2 from 10 s ago.
    let now = start + 10 * SECOND;
    assert_eq!(
        hpa.decide(now, &pods(now, &[1000.0; 2]), 2, busy(), &policy),
        2
    );
    let now = start + 61 * SECOND;
    assert_eq!(
        hpa.decide(now, &pods(now, &[1000.0; 2]), 2, busy(), &policy),
        4
    );
}

#[tokio::test(start_paused = true)]
async fn bounds_hold_and_min_scale_defaults_to_one() {
    let policy = HpaPolicy {
        max_scale: Some(3),
        ..cpu(10.0)
    };
    assert_eq!(policy.min_scale, 1, "Knative's HPA class default");
    let mut hpa = Hpa::new();
    let now = Instant::now();
    assert_eq!(
        hpa.decide(now, &pods(now, &[1000.0; 2]), 2, busy(), &policy),
        3
    );
    let mut hpa = Hpa::new();
    let later = now + Duration::from_secs(400);
    assert_eq!(
        hpa.decide(later, &pods(later, &[0.0; 2]), 2, idle(), &cpu(10.0)),
        2,
        "the first low recommendation is held by the 300 s window"
    );
}

#[tokio::test(start_paused = true)]
async fn with_min_scale_zero_an_idle_revision_goes_to_zero_and_a_request_brings_it_back() {
    let policy = HpaPolicy {
        min_scale: 0,
        ..cpu(50.0)
    };
    let mut hpa = Hpa::new();
    let start = Instant::now();
    assert_eq!(
        hpa.decide(start, &pods(start, &[500.0]), 1, busy(), &policy),
        1
    );
    // Idle from 10 s: usage 0 recommends 0, held by the window, then released.
    let mut now = start + 10 * SECOND;
    assert_eq!(hpa.decide(now, &pods(now, &[0.0]), 1, idle(), &policy), 1);
    now = start + 200 * SECOND;
    assert_eq!(hpa.decide(now, &pods(now, &[0.0]), 1, idle(), &policy), 1);
    now = start + 311 * SECOND;
    assert_eq!(hpa.decide(now, &pods(now, &[0.0]), 1, idle(), &policy), 0);
    // At zero: idle stays at zero; a request wants one pod at once.
    now += SECOND;
    assert_eq!(hpa.decide(now, &[], 0, idle(), &policy), 0);
    assert_eq!(hpa.decide(now, &[], 0, busy(), &policy), 1);
}

#[tokio::test(start_paused = true)]
async fn a_held_request_keeps_one_pod_even_when_usage_says_zero() {
    let policy = HpaPolicy {
        min_scale: 0,
        ..cpu(50.0).with_window(Duration::ZERO)
    };
    let mut hpa = Hpa::new();
    let now = Instant::now();
    // A request waiting on I/O uses no cpu: usage says 0, the held request says 1.
    assert_eq!(
        hpa.decide(now, &pods(now, &[0.0, 0.0]), 2, busy(), &policy),
        1
    );
}
