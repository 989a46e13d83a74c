use std::time::Duration;

use super::*;

const SECOND: Duration = Duration::from_secs(1);

fn requests(in_flight: u64, queued: u64) -> Demand {
    Demand {
        in_flight,
        queued,
        backlog: 0,
    }
}

/// Precise for cc 10 with no initial pod, so only demand counts.
fn policy() -> Policy {
    Policy {
        initial_scale: 0,
        ..Policy::precise_default(10)
    }
}

#[test]
fn demand_over_container_concurrency() {
    let p = policy();
    assert_eq!(demand_pods(requests(0, 0), &p), 0);
    assert_eq!(demand_pods(requests(1, 0), &p), 1);
    assert_eq!(demand_pods(requests(10, 0), &p), 1);
    assert_eq!(demand_pods(requests(10, 15), &p), 3);
}

#[test]
fn unlimited_concurrency_uses_the_target() {
    let p = Policy {
        initial_scale: 0,
        ..Policy::precise_default(0)
    };
    // 100 × 0.7 = 70 per pod.
    assert_eq!(demand_pods(requests(70, 0), &p), 1);
    assert_eq!(demand_pods(requests(70, 1), &p), 2);
}

#[test]
fn backlog_wants_pods_of_its_own_without_double_counting_in_flight() {
    let p = policy();
    let d = |in_flight, backlog| Demand {
        in_flight,
        queued: 0,
        backlog,
    };
    // 5 in flight (1 pod at cc 10) while 25 are pending (3 pods at target 10): the pending
    // count already includes the deliveries in flight.
    assert_eq!(demand_pods(d(5, 25), &p), 3);
    assert_eq!(demand_pods(d(35, 25), &p), 4);
    assert_eq!(demand_pods(d(0, 500), &p), 50);
}

#[test]
fn increases_apply_at_once() {
    let (p, t) = (policy(), Instant::now());
    let mut s = Precise::new();
    assert_eq!(s.decide(t, requests(0, 0), &p), 0);
    assert_eq!(s.decide(t, requests(10, 1), &p), 2);
    assert_eq!(s.decide(t + SECOND, requests(10, 31), &p), 5);
    assert_eq!(s.next_wakeup(), None, "nothing held");
}

#[test]
fn decreases_wait_for_the_delay() {
    let (p, t) = (policy(), Instant::now());
    let mut s = Precise::new();
    assert_eq!(s.decide(t, requests(50, 0), &p), 5);
    assert_eq!(s.decide(t + 3 * SECOND, requests(10, 0), &p), 5);
    assert_eq!(s.next_wakeup(), Some(t + 13 * SECOND));
    let just_before = t + 13 * SECOND - Duration::from_millis(1);
    assert_eq!(s.decide(just_before, requests(10, 0), &p), 5);
    assert_eq!(s.decide(t + 13 * SECOND, requests(10, 0), &p), 1);
    assert_eq!(s.next_wakeup(), None);
}

#[test]
fn the_largest_want_of_the_window_holds() {
    let (p, t) = (policy(), Instant::now());
    let mut s = Precise::new();
    s.decide(t, requests(50, 0), &p);
    s.decide(t + 2 * SECOND, requests(30, 0), &p);
    assert_eq!(s.decide(t + 4 * SECOND, requests(10, 0), &p), 5);
    // 5 was wanted until second 2: it holds until 12, then 3 (wanted until 4) until 14.
    assert_eq!(s.next_wakeup(), Some(t + 12 * SECOND));
    assert_eq!(s.decide(t + 12 * SECOND, requests(10, 0), &p), 3);
    assert_eq!(s.next_wakeup(), Some(t + 14 * SECOND));
    assert_eq!(s.decide(t + 14 * SECOND, requests(10, 0), &p), 1);
}

#[test]
fn a_short_dip_does_not_release_pods() {
    let (p, t) = (policy(), Instant::now());
    let mut s = Precise::new();
    s.decide(t, requests(40, 0), &p);
    s.decide(t + SECOND, requests(0, 0), &p);
    assert_eq!(s.decide(t + 5 * SECOND, requests(40, 0), &p), 4);
    assert_eq!(
        s.next_wakeup(),
        None,
        "the current want is the largest again"
    );
    assert_eq!(s.decide(t + 30 * SECOND, requests(40, 0), &p), 4);
}

#[test]
fn idle_goes_to_zero_after_the_delay_unless_min_scale() {
    let (p, t) = (policy(), Instant::now());
    let mut s = Precise::new();
    s.decide(t, requests(1, 0), &p);
    assert_eq!(s.decide(t + SECOND, requests(0, 0), &p), 1);
    assert_eq!(s.decide(t + 11 * SECOND, requests(0, 0), &p), 0);

    let floor = Policy {
        min_scale: 2,
        ..policy()
    };
    let mut s = Precise::new();
    s.decide(t, requests(50, 0), &floor);
    assert_eq!(s.decide(t + SECOND, requests(0, 0), &floor), 5);
    assert_eq!(s.decide(t + 60 * SECOND, requests(0, 0), &floor), 2);
}

#[test]
fn zero_delay_follows_demand_down_at_once() {
    let p = Policy {
        scale_down_delay: Duration::ZERO,
        ..policy()
    };
    let t = Instant::now();
    let mut s = Precise::new();
    s.decide(t, requests(50, 0), &p);
    assert_eq!(s.decide(t, requests(20, 0), &p), 2);
    assert_eq!(s.next_wakeup(), None);
}

#[test]
fn max_scale_caps() {
    let p = Policy {
        max_scale: Some(4),
        ..policy()
    };
    let mut s = Precise::new();
    assert_eq!(s.decide(Instant::now(), requests(10, 990), &p), 4);
}

#[test]
fn initial_scale_applies_to_the_first_decision_then_is_held() {
    let p = Policy::precise_default(10);
    let t = Instant::now();
    let mut s = Precise::new();
    assert_eq!(s.decide(t, requests(0, 0), &p), 1);
    assert_eq!(s.decide(t + SECOND, requests(0, 0), &p), 1);
    // Wanted until second 1, so held until 11.
    assert_eq!(s.next_wakeup(), Some(t + 11 * SECOND));
    assert_eq!(s.decide(t + 11 * SECOND, requests(0, 0), &p), 0);
}

#[test]
fn reserved_instances_do_not_count() {
    let p = Policy {
        reserved_instances: 3,
        ..policy()
    };
    let mut s = Precise::new();
    assert_eq!(s.decide(Instant::now(), requests(5, 0), &p), 1);
}
