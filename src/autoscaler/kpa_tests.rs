//! Cases of knative/serving `pkg/autoscaler/scaling/autoscaler_test.go` (named per test), then the
//! windows and the scaler's bounds.

use std::time::Duration;

use super::*;
use crate::autoscaler::policy::{DEFAULT_RPS_TARGET, Metric};

const SECOND: Duration = Duration::from_secs(1);
const STABLE: Duration = Duration::from_secs(60);

/// Knative's `newTestAutoscaler`: `TargetValue` is already the post-utilization target, panic
/// threshold 2 (200 %), both rates 10, stable window 60 s.
fn spec(target: f64) -> Policy {
    Policy {
        target,
        target_utilization: 1.0,
        panic_threshold_percentage: 200.0,
        max_scale_up_rate: 10.0,
        max_scale_down_rate: 10.0,
        stable_window: STABLE,
        ..Policy::kpa_default()
    }
}

/// Runs the decider on given averages (Knative's fake metric client).
fn expect(kpa: &mut Kpa, p: &Policy, now: Instant, ready: u32, s: f64, pa: f64, want: u32) {
    let got = kpa.decide_observed(now, ready, s, pa, p).desired;
    assert_eq!(got, want, "stable {s}, panic {pa}, ready {ready}");
}

#[test]
fn stable_mode_increase_with_concurrency_default() {
    // TestAutoscalerStableModeIncreaseWithConcurrencyDefault
    let (p, t) = (spec(10.0), Instant::now());
    let mut a = Kpa::new(&p, t, 1);
    expect(&mut a, &p, t, 1, 50.0, 10.0, 5);
    expect(&mut a, &p, t, 1, 100.0, 10.0, 10);
}

#[test]
fn stable_mode_increase_with_rps() {
    // TestAutoscalerStableModeIncreaseWithRPS
    let p = Policy {
        metric: Metric::Rps,
        ..spec(10.0)
    };
    let t = Instant::now();
    let mut a = Kpa::new(&p, t, 1);
    expect(&mut a, &p, t, 1, 50.0, 50.0, 5);
    expect(&mut a, &p, t, 1, 100.0, 99.0, 10);
}

#[test]
fn unpanic_after_slow_increase() {
    // TestAutoscalerUnpanicAfterSlowIncrease
    let (p, start) = (spec(1.0), Instant::now());
    let mut a = Kpa::new(&p, start, 1);
    expect(&mut a, &p, start, 10, 11.0, 25.0, 25);
    assert_eq!(a.panic_since, Some(start));
    let tm = start + STABLE / 2;
    expect(&mut a, &p, tm, 40, 30.0, 41.0, 41);
    assert_eq!(
        a.panic_since,
        Some(start),
        "41/40 < 2: panic time does not move"
    );
    let tm = tm + STABLE / 2 + p.tick;
    expect(&mut a, &p, tm, 55, 50.0, 56.0, 50);
    assert!(!a.in_panic());
}

#[test]
fn extend_panic_window() {
    // TestAutoscalerExtendPanicWindow
    let (p, start) = (spec(1.0), Instant::now());
    let mut a = Kpa::new(&p, start, 1);
    expect(&mut a, &p, start, 10, 11.0, 25.0, 25);
    let tm = start + STABLE / 2;
    expect(&mut a, &p, tm, 40, 30.0, 80.0, 80);
    assert_eq!(a.panic_since, Some(tm));
}

#[test]
fn stable_mode_decrease() {
    // TestAutoscalerStableModeDecrease
    let (p, t) = (spec(10.0), Instant::now());
    let mut a = Kpa::new(&p, t, 1);
    expect(&mut a, &p, t, 8, 100.0, 100.0, 10);
    expect(&mut a, &p, t, 8, 50.0, 50.0, 5);
}

#[test]
fn stable_mode_no_traffic_scale_to_zero() {
    // TestAutoscalerStableModeNoTrafficScaleToZero
    let (p, t) = (spec(10.0), Instant::now());
    let mut a = Kpa::new(&p, t, 1);
    expect(&mut a, &p, t, 1, 1.0, 0.0, 1);
    expect(&mut a, &p, t, 1, 0.0, 0.0, 0);
}

#[test]
fn panic_mode_exponential_track_and_stabilize() {
    // TestAutoscalerPanicModeExponentialTrackAndStabilize
    let (p, t) = (spec(1.0), Instant::now());
    let mut a = Kpa::new(&p, t, 1);
    expect(&mut a, &p, t, 1, 6.0, 6.0, 6);
    expect(&mut a, &p, t, 6, 36.0, 36.0, 36);
    assert_eq!(a.panic_since, Some(t));
    let t = t + SECOND;
    expect(&mut a, &p, t, 36, 216.0, 216.0, 216);
    expect(&mut a, &p, t, 216, 1296.0, 1296.0, 1296);
    let t = t + SECOND;
    expect(&mut a, &p, t, 1296, 1296.0, 1296.0, 1296);
}

#[test]
fn scale_table() {
    // TestAutoscalerScale, row by row.
    struct Row {
        label: &'static str,
        policy: Policy,
        panic_pods: Option<u32>,
        ready: u32,
        stable: f64,
        panic: f64,
        want: u32,
    }
    let row = |label, policy, ready, stable, panic, want| Row {
        label,
        policy,
        panic_pods: None,
        ready,
        stable,
        panic,
        want,
    };
    let rows = [
        row(
            "AutoscalerNoDataAtZeroNoAutoscale",
            spec(10.0),
            1,
            0.0,
            0.0,
            0,
        ),
        row(
            "AutoscalerStableModeUnlimitedTBC",
            spec(181.0),
            1,
            21.0,
            26.0,
            1,
        ),
        row("Autoscaler0TBC", spec(10.0), 1, 50.0, 49.0, 5),
        row("AutoscalerStableModeNoChange", spec(10.0), 1, 50.0, 50.0, 5),
        Row {
            panic_pods: Some(5),
            ..row(
                "AutoscalerPanicStableLargerThanPanic",
                spec(1.0),
                5,
                50.0,
                30.0,
                50,
            )
        },
        Row {
            panic_pods: Some(5),
            ..row(
                "AutoscalerPanicStableLessThanPanic",
                spec(1.0),
                5,
                20.0,
                30.0,
                30,
            )
        },
        row(
            "AutoscalerStableModeNoChangeAlreadyScaled",
            spec(10.0),
            5,
            50.0,
            50.0,
            5,
        ),
        row(
            "AutoscalerStableModeIncreaseWithSmallScaleUpRate",
            Policy {
                max_scale_up_rate: 1.1,
                ..spec(1.0)
            },
            2,
            3.0,
            3.1,
            3,
        ),
        row(
            "AutoscalerStableModeDecreaseWithSmallScaleDownRate",
            Policy {
                max_scale_down_rate: 1.1,
                ..spec(10.0)
            },
            100,
            1.0,
            1.0,
            90,
        ),
        row(
            "AutoscalerPanicModeDoublePodCount",
            spec(10.0),
            1,
            50.0,
            100.0,
            10,
        ),
    ];
    for r in rows {
        let now = Instant::now();
        let mut a = Kpa::new(&r.policy, now, 1);
        if let Some(pods) = r.panic_pods {
            a.panic_since = Some(now - Duration::from_secs(5));
            a.max_panic_pods = pods;
        }
        let got = a
            .decide_observed(now, r.ready, r.stable, r.panic, &r.policy)
            .desired;
        assert_eq!(got, r.want, "{}", r.label);
    }
}

#[test]
fn panic_then_unpanic_scale_down() {
    // TestAutoscalerPanicThenUnPanicScaleDown
    let (p, t) = (spec(10.0), Instant::now());
    let mut a = Kpa::new(&p, t, 1);
    expect(&mut a, &p, t, 1, 100.0, 100.0, 10);
    let panic_time = t;
    expect(&mut a, &p, panic_time, 10, 100.0, 1000.0, 100);
    // Traffic dropped off; scale stays while panicking.
    expect(&mut a, &p, panic_time + 30 * SECOND, 10, 1.0, 1.0, 100);
    expect(&mut a, &p, panic_time + 61 * SECOND, 10, 1.0, 1.0, 1);
}

#[test]
fn rate_limit_scale_up() {
    // TestAutoscalerRateLimitScaleUp: needs 100 pods, but only ×10 per decision.
    let (p, t) = (spec(10.0), Instant::now());
    let mut a = Kpa::new(&p, t, 1);
    expect(&mut a, &p, t, 1, 1000.0, 1001.0, 10);
    expect(&mut a, &p, t, 10, 1000.0, 1001.0, 100);
}

#[test]
fn rate_limit_scale_down() {
    // TestAutoscalerRateLimitScaleDown: needs 1 pod, but only ÷10 per decision.
    let (p, t) = (spec(10.0), Instant::now());
    let mut a = Kpa::new(&p, t, 1);
    expect(&mut a, &p, t, 100, 1.0, 1.0, 10);
    expect(&mut a, &p, t, 10, 1.0, 1.0, 1);
}

#[test]
fn use_one_pod_as_minimum_if_no_ready_pods() {
    // TestAutoscalerUseOnePodAsMinimumIfEndpointsNotFound
    let (p, t) = (spec(10.0), Instant::now());
    let mut a = Kpa::new(&p, t, 1);
    expect(&mut a, &p, t, 0, 1000.0, 888.0, 10);
}

#[test]
fn update_target() {
    // TestAutoscalerUpdateTarget
    let t = Instant::now();
    let p = spec(10.0);
    let mut a = Kpa::new(&p, t, 1);
    expect(&mut a, &p, t, 1, 100.0, 101.0, 10);
    let updated = spec(1.0);
    expect(&mut a, &updated, t, 10, 100.0, 101.0, 100);
}

#[test]
fn scale_down_delay() {
    // TestAutoscalerScaleDownDelay ("simple" then "gradual"): threshold 100 (10 000 %), 5 min delay.
    let p = Policy {
        panic_threshold_percentage: 10_000.0,
        scale_down_delay: Duration::from_secs(300),
        ..spec(10.0)
    };
    let t = Instant::now();
    let mut a = Kpa::new(&p, t, 0);
    let min = |m: u64| t + Duration::from_secs(60 * m);
    expect(&mut a, &p, t + 2 * SECOND, 0, 40.0, 40.0, 4);
    expect(&mut a, &p, min(5), 0, 0.0, 0.0, 4);
    expect(&mut a, &p, min(5) + 2 * SECOND, 0, 0.0, 0.0, 0);

    expect(&mut a, &p, min(9), 0, 40.0, 40.0, 4);
    expect(&mut a, &p, min(10), 0, 30.0, 30.0, 4);
    expect(&mut a, &p, min(11), 0, 0.0, 0.0, 4);
    expect(&mut a, &p, min(14), 0, 0.0, 0.0, 3);
    expect(&mut a, &p, min(15), 0, 0.0, 0.0, 0);
}

#[test]
fn scale_down_delay_zero() {
    // TestAutoscalerScaleDownDelayZero
    let p = Policy {
        panic_threshold_percentage: 10_000.0,
        ..spec(10.0)
    };
    let t = Instant::now();
    let mut a = Kpa::new(&p, t, 0);
    expect(&mut a, &p, t, 0, 40.0, 40.0, 4);
    expect(&mut a, &p, t + Duration::from_millis(500), 0, 20.0, 20.0, 2);
}

#[test]
fn start_in_panic_mode() {
    // TestStartInPanicMode
    let (p, t) = (spec(100.0), Instant::now());
    for ready in 0..2 {
        let a = Kpa::new(&p, t, ready);
        assert!(!a.in_panic(), "ready {ready}");
        assert_eq!(a.max_panic_pods, ready);
    }
    let a = Kpa::new(&p, t, 2);
    assert!(a.in_panic());
    assert_eq!(a.max_panic_pods, 2);
}

// --- Windows, target utilization, rps, bounds and scale to zero (`decide`). ---

/// Records `value` once a second over `[from, to)` seconds after `t`.
fn feed(a: &mut Kpa, t: Instant, from: u32, to: u32, value: f64) {
    for s in from..to {
        a.record(t + s * SECOND, value);
    }
}

#[test]
fn windows_average_the_recorded_seconds() {
    let p = Policy::kpa_default().with_container_concurrency(10);
    let t = Instant::now();
    let mut a = Kpa::new(&p, t, 1);
    feed(&mut a, t, 0, 60, 20.0);
    let d = a.decide(t + 59 * SECOND, 3, &p);
    assert_eq!(d.observed_stable, 20.0);
    assert_eq!(d.observed_panic, 20.0);
    // Target 10 × utilization 0.7 = 7 per pod: ceil(20 / 7) = 3.
    assert_eq!(d.desired, 3);
    assert!(!d.panic);
}

#[test]
fn a_burst_fills_the_panic_window_first() {
    let p = Policy::kpa_default().with_container_concurrency(10);
    let t = Instant::now();
    let mut a = Kpa::new(&p, t, 1);
    feed(&mut a, t, 0, 54, 5.0);
    feed(&mut a, t, 54, 60, 70.0);
    let d = a.decide(t + 59 * SECOND, 1, &p);
    assert_eq!(d.observed_panic, 70.0);
    assert_eq!(d.observed_stable, 11.5);
    assert!(d.panic, "ceil(70 / 7) = 10 ≥ 2 × 1 ready");
    assert_eq!(d.desired, 10);
}

#[test]
fn rps_metric_uses_requests_per_second() {
    let p = Policy {
        metric: Metric::Rps,
        target: DEFAULT_RPS_TARGET,
        ..Policy::kpa_default()
    };
    let t = Instant::now();
    let mut a = Kpa::new(&p, t, 1);
    feed(&mut a, t, 0, 60, 420.0);
    // 200 × 0.7 = 140 rps per pod.
    assert_eq!(a.decide(t + 59 * SECOND, 3, &p).desired, 3);
}

#[test]
fn scale_from_zero_in_one_decision() {
    let p = Policy::kpa_default().with_container_concurrency(10);
    let t = Instant::now();
    let mut a = Kpa::new(&p, t, 0);
    let now = t + 300 * SECOND;
    a.record(now, 3.0);
    assert_eq!(a.decide(now, 0, &p).desired, 1);
    a.record(now, 50.0);
    let d = a.decide(now, 0, &p);
    assert_eq!((d.desired, d.panic), (8, true));
}

#[test]
fn min_and_max_scale_bound_the_decision() {
    let floor = Policy {
        min_scale: 2,
        ..Policy::kpa_default()
    };
    let t = Instant::now();
    let mut a = Kpa::new(&floor, t, 2);
    feed(&mut a, t, 0, 200, 0.0);
    assert_eq!(a.decide(t + 199 * SECOND, 2, &floor).desired, 2);

    let cap = Policy {
        max_scale: Some(3),
        ..Policy::kpa_default()
    };
    let mut a = Kpa::new(&cap, t, 1);
    feed(&mut a, t, 0, 10, 10_000.0);
    assert_eq!(a.decide(t + 9 * SECOND, 1, &cap).desired, 3);
}

#[test]
fn initial_scale_holds_until_reached() {
    let p = Policy {
        initial_scale: 3,
        ..Policy::kpa_default()
    };
    let t = Instant::now();
    let mut a = Kpa::new(&p, t, 0);
    assert_eq!(a.decide(t, 0, &p).desired, 3);
    assert_eq!(a.decide(t + 2 * SECOND, 2, &p).desired, 3);
    a.record(t + 4 * SECOND, 0.0);
    // Reached: from now on the decider rules; an idle revision keeps one pod for now.
    assert_eq!(a.decide(t + 4 * SECOND, 3, &p).desired, 1);
}

#[test]
fn idle_revision_goes_to_zero_after_stable_window_plus_grace() {
    let p = Policy::kpa_default().with_container_concurrency(10);
    let t = Instant::now();
    let mut a = Kpa::new(&p, t, 1);
    // Below the panic threshold (ceil(3 / 7) = 1 pod for 1 ready).
    feed(&mut a, t, 0, 10, 3.0);
    let mut first_zero = None;
    for s in 10..200 {
        a.record(t + s * SECOND, 0.0);
        if s % 2 == 0 && a.decide(t + s * SECOND, 1, &p).desired == 0 {
            first_zero = Some(s);
            break;
        }
    }
    // The last demand (second 9) leaves the stable window at second 69; the first decision
    // saying 0 is at 70, the grace ends at 100.
    assert_eq!(first_zero, Some(100));
}

#[test]
fn a_revision_at_zero_stays_at_zero() {
    let p = Policy {
        initial_scale: 0,
        ..Policy::kpa_default()
    };
    let t = Instant::now();
    let mut a = Kpa::new(&p, t, 0);
    assert_eq!(a.decide(t, 0, &p).desired, 0);
    assert_eq!(a.decide(t + 100 * SECOND, 0, &p).desired, 0);
}
