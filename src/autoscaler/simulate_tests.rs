use super::*;
use crate::autoscaler::trace::{Trace, builtin};

fn run_sim(config: &SimConfig) -> Sim<'_> {
    let mut sim = Sim::new(config);
    sim.run();
    sim
}

#[test]
fn empty_trace_reports_nothing() {
    let report = simulate(&SimConfig::new(Class::Precise, 10, Vec::new()));
    assert_eq!(report.requests, 0);
    assert_eq!((report.p50_wait_ms, report.p99_wait_ms), (0.0, 0.0));
    assert_eq!(report.dropped, 0);
}

#[test]
fn every_accepted_request_is_served() {
    for class in [Class::Kpa, Class::Precise, Class::Hpa] {
        let config = SimConfig::new(class, 10, builtin(Trace::Spike));
        let sim = run_sim(&config);
        assert_eq!(sim.requests, 5_850);
        assert_eq!(
            sim.waits.len() as u64 + sim.dropped,
            sim.requests,
            "{class:?}"
        );
        assert_eq!(sim.queue.queued(), 0);
        assert_eq!(sim.queue.in_flight(), 0);
    }
}

#[test]
fn the_first_requests_wait_for_the_cold_start() {
    // One request a second; the initial pod is ready at 2 s.
    let config = SimConfig::new(Class::Precise, 10, vec![1; 10]);
    let sim = run_sim(&config);
    assert_eq!(sim.waits[..3], [2_000_000, 1_000_000, 0]);
}

#[test]
fn precise_reacts_to_the_first_queued_request() {
    let mut config = SimConfig::new(Class::Precise, 1, vec![0, 0, 0, 5, 5]);
    config.policy.initial_scale = 0;
    let (_, timeline) = simulate_with_timeline(&config);
    // At 3 s the first request wants one pod; at 3.2 s the second arrives while the first
    // still runs (100 ms service, but the pod is not ready before 5 s): two pods.
    assert_eq!(timeline.desired_at(2.9), 0);
    assert_eq!(timeline.desired_at(3.0), 1);
    assert_eq!(timeline.desired_at(3.2), 2);
}

#[test]
fn kpa_is_poked_from_zero_and_otherwise_ticks() {
    let mut config = SimConfig::new(Class::Kpa, 10, vec![0, 0, 0, 1, 0]);
    config.policy.initial_scale = 0;
    let (_, timeline) = simulate_with_timeline(&config);
    assert_eq!(timeline.desired_at(2.9), 0);
    assert_eq!(
        timeline.desired_at(3.0),
        1,
        "poked at the arrival, not at the 4 s tick"
    );
}

#[test]
fn a_full_queue_drops() {
    let mut config = SimConfig::new(Class::Precise, 1, vec![100]);
    config.queue_depth = 5;
    config.policy.max_scale = Some(1);
    let report = simulate(&config);
    // Initial pod ready at 2 s: nothing runs before, five wait, the rest is refused.
    assert_eq!(report.dropped, 95);
    assert_eq!(report.requests, 100);
}

#[test]
fn scale_down_removes_idle_pods_first_and_drains_busy_ones() {
    // KPA only reacts to arrivals at zero, so the test drives the pods by hand.
    let config = SimConfig::new(Class::Kpa, 1, Vec::new());
    let mut sim = Sim::new(&config);
    sim.apply(3);
    for id in 0..3 {
        sim.pod_ready(id);
    }
    sim.arrival();
    sim.arrival();
    assert_eq!(sim.queue.in_flight(), 2);
    sim.apply(1);
    let states: Vec<(PodId, PodState)> = sim.pods.iter().map(|(&id, &s)| (id, s)).collect();
    assert_eq!(states, [(0, PodState::Draining), (1, PodState::Ready)]);
    // The draining pod takes no new work and leaves with its last request.
    sim.arrival();
    assert_eq!(sim.queue.queued(), 1);
    sim.complete(0);
    assert_eq!(sim.pods.len(), 1);
    assert_eq!(sim.waits.len(), 2);
}

#[test]
fn scale_down_cancels_starting_pods_first() {
    let config = SimConfig::new(Class::Kpa, 1, Vec::new());
    let mut sim = Sim::new(&config);
    sim.apply(2);
    sim.pod_ready(0);
    sim.apply(3);
    sim.apply(1);
    let states: Vec<(PodId, PodState)> = sim.pods.iter().map(|(&id, &s)| (id, s)).collect();
    assert_eq!(states, [(0, PodState::Ready)]);
}

#[test]
fn pod_seconds_count_starting_pods_within_the_trace() {
    let mut config = SimConfig::new(Class::Precise, 10, vec![0; 5]);
    config.policy.min_scale = 2;
    config.policy.initial_scale = 2;
    let report = simulate(&config);
    assert_eq!(report.pod_seconds, 10.0);
    assert_eq!(report.max_pods, 2);
}

#[test]
fn runs_are_deterministic() {
    let config = SimConfig::new(Class::Kpa, 10, builtin(Trace::Step));
    assert_eq!(simulate(&config), simulate(&config));
}

#[test]
fn percentiles_use_the_nearest_rank() {
    let waits: Vec<u64> = (1..=100).map(|ms| ms * 1000).collect();
    assert_eq!(percentile_ms(&waits, 0.5), 50.0);
    assert_eq!(percentile_ms(&waits, 0.99), 99.0);
    assert_eq!(percentile_ms(&[7_000], 0.99), 7.0);
}

#[test]
fn report_formats() {
    let report = Report {
        requests: 3,
        p50_wait_ms: 1.25,
        p99_wait_ms: 2.0,
        pod_seconds: 4.0,
        max_pods: 1,
        dropped: 0,
    };
    let table = report.table();
    assert!(table.starts_with("  requests"), "{table}");
    assert!(table.contains("1.2") && table.contains("4.0"), "{table}");
    let json = serde_json::to_value(&report).unwrap_or_default();
    let mut keys: Vec<&str> = json
        .as_object()
        .map(|o| o.keys().map(String::as_str).collect())
        .unwrap_or_default();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "dropped",
            "max_pods",
            "p50_wait_ms",
            "p99_wait_ms",
            "pod_seconds",
            "requests"
        ]
    );
}

#[test]
fn a_schedule_window_over_the_spike_has_the_pods_warm_when_it_comes() {
    // The spike is at seconds 60–70; with second 0 at 06:59:30 UTC the window 07:00–07:02
    // opens 30 s before it and closes at second 150.
    let windows = triggers::schedule::parse(
        r#"[{start: "0 7 * * *", end: "2 7 * * *", timezone: UTC, minScale: 6}]"#,
    )
    .expect("schedule");
    let plain = SimConfig::new(Class::Precise, 10, builtin(Trace::Spike));
    let mut scheduled = plain.clone();
    scheduled.policy.schedule = windows.into();
    scheduled.wall_start = Some("2026-12-07T06:59:30Z".parse().expect("time"));
    let (without, with) = (simulate(&plain), simulate(&scheduled));
    assert!(
        without.p99_wait_ms > 100.0,
        "cold pods make the spike wait: {without:?}"
    );
    assert!(
        with.p99_wait_ms < without.p99_wait_ms,
        "{with:?} vs {without:?}"
    );
    assert!(with.max_pods >= 6, "the window's floor ran: {with:?}");
    // Without a start time the schedule is not consulted.
    let mut unanchored = scheduled.clone();
    unanchored.wall_start = None;
    assert_eq!(simulate(&unanchored), without);
}

#[test]
fn hpa_scales_out_on_modelled_cpu_and_back_after_its_window() {
    // 60 s at 200 rps × 100 ms = 20 requests running: 2000 m of cpu, 2.5 pods at 800 m each;
    // then quiet.
    let mut arrivals = vec![200; 60];
    arrivals.extend(vec![0; 400]);
    let mut config = SimConfig::new(Class::Hpa, 10, arrivals);
    config.policy.min_scale = 0;
    let (report, timeline) = simulate_with_timeline(&config);
    assert_eq!(timeline.desired_at(0.0), 1, "initial scale");
    // At least ceil(2000 m / 800 m); more while the queue built up by the first saturated
    // pod (cpu cannot exceed a pod's 1000 m, so the HPA sees at most 125 %) drains.
    let peak = timeline.desired_at(59.0);
    assert!((3..=6).contains(&peak), "{peak}");
    assert_eq!(report.dropped, 0);
    // Down only after the 300 s stabilization window, and to zero as min-scale 0 allows.
    assert_eq!(timeline.desired_at(300.0), peak);
    assert_eq!(timeline.desired_at(459.0), 0);
}

#[test]
fn hpa_at_zero_starts_a_pod_for_the_first_request() {
    let mut config = SimConfig::new(Class::Hpa, 10, vec![0, 0, 0, 1, 0]);
    config.policy.min_scale = 0;
    config.policy.initial_scale = 0;
    let (_, timeline) = simulate_with_timeline(&config);
    assert_eq!(timeline.desired_at(2.9), 0);
    assert_eq!(timeline.desired_at(3.0), 1);
}

#[test]
fn a_reserved_instance_takes_the_first_request_after_idle_without_a_cold_start() {
    let mut arrivals = vec![0; 30];
    arrivals.push(1);
    let mut config = SimConfig::new(Class::Precise, 10, arrivals);
    config.policy.initial_scale = 0;
    let cold = run_sim(&config);
    assert_eq!(
        cold.waits,
        [2_000_000],
        "a cold start without a reserved instance"
    );
    config.policy.reserved_instances = 1;
    let sim = run_sim(&config);
    assert_eq!(sim.waits, [0], "the reserved instance answers at once");
    // The regular pod asked for at 30 s is ready at 32 s and the reserved instance leaves
    // (its request ended at 30.1 s); it never counted in the desired scale.
    assert!(!sim.reserved.contains_key(&0), "{:?}", sim.reserved);
    assert_eq!(sim.timeline.desired_at(29.0), 0);
    assert_eq!(sim.timeline.desired_at(30.0), 1);
    // Back at zero after the 10 s scale-down delay: a new reserved instance (pod 2; pod 1 was
    // the regular one).
    assert_eq!(sim.timeline.desired_at(41.0), 0);
    assert_eq!(sim.reserved.keys().copied().collect::<Vec<_>>(), [2]);
}
