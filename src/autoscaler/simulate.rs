//! Discrete-event simulation of one revision on virtual time, to compare autoscaler classes.
//!
//! Events sit in a priority queue keyed by integer microseconds; nothing sleeps. Dispatch is the
//! gateway's own [`DispatchQueue`] (slots per pod, bounded FIFO of depth 10 000, drops beyond).
//! The model:
//! - arrivals of second `s` are spread evenly over `[s, s + 1)`;
//! - a pod is ready `cold_start` after the autoscaler asked for it, then serves each request in
//!   exactly `service_time`, up to `containerConcurrency` at once (no slowdown under load);
//! - scaling down removes pods not yet ready first, then the least busy ready pods; a busy pod
//!   drains (no new work) and leaves with its last request;
//! - KPA records the time-averaged in-flight + queued requests (or arrivals for rps) once a
//!   second, decides every `tick`, and decides at once when demand arrives while no pod is ready
//!   (as [`super::task`] does); precise decides on every arrival, completion and pod start, and
//!   when a held decrease expires;
//! - the HPA class samples each pod's cpu once a second and decides on each sample (and at once
//!   on an arrival at zero pods). CPU is modelled as busy time: a request running on a pod uses
//!   `1000 / containerConcurrency` millicores (one core for a pod at its concurrency), and the
//!   pod's `requests.cpu` is 1000 m, so the default 80 % target is 0.8 × containerConcurrency
//!   requests running per pod.
//!
//! - reserved instances (`policy.reserved_instances`) start whenever the desired scale is 0
//!   (ready `cold_start` later, taking up to `containerConcurrency` requests), take work only
//!   while no regular pod is ready, and leave once one is (after their last request). They
//!   count in `pod_seconds` and `max_pods`, never in the desired scale.
//!
//! Reported: `requests` (arrivals), `p50_wait_ms`/`p99_wait_ms` (time queued in the gateway
//! before a slot, over requests that got one), `pod_seconds` (pods existing, ready or not, during
//! the trace), `max_pods` (most pods existing at once), `dropped` (refused by a full queue).
//! After the trace ends the simulation runs on until every accepted request is served; that tail
//! counts in the waits but not in `pod_seconds`.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use super::Demand;
use super::hpa::{Hpa, PodSample};
use super::kpa::Kpa;
use super::policy::{Class, Metric, Policy};
use super::precise::Precise;
use crate::revision::queue::{DispatchQueue, PodId};

/// The gateway's per-revision queue depth (Knative's activator uses the same).
pub const DEFAULT_QUEUE_DEPTH: usize = 10_000;

/// The simulation gives up on requests this long after the trace ended.
const DRAIN_LIMIT: Duration = Duration::from_secs(3600);

const MICROS: u64 = 1_000_000;

/// The simulated pods' `requests.cpu`, in millicores.
pub const SIM_CPU_REQUEST: f64 = 1000.0;

/// What to simulate.
#[derive(Clone, Debug)]
pub struct SimConfig {
    pub policy: Policy,
    /// Requests arriving in each second.
    pub arrivals: Vec<u32>,
    pub service_time: Duration,
    pub cold_start: Duration,
    pub queue_depth: usize,
    /// The wall-clock time of the trace's second 0, for `policy.schedule`'s windows (`None`:
    /// the schedule is not consulted).
    pub wall_start: Option<jiff::Timestamp>,
}

impl SimConfig {
    /// The class with its defaults for pods of `container_concurrency`; KPA's target follows
    /// `containerConcurrency` as in Knative (`cc × 0.7`).
    pub fn new(class: Class, container_concurrency: u32, arrivals: Vec<u32>) -> Self {
        let policy = match class {
            Class::Kpa => Policy::kpa_default().with_container_concurrency(container_concurrency),
            Class::Precise => Policy::precise_default(container_concurrency),
            Class::Hpa => Policy {
                container_concurrency,
                ..Policy::hpa_cpu(SIM_CPU_REQUEST, 80.0)
            },
        };
        Self {
            policy,
            arrivals,
            service_time: Duration::from_millis(100),
            cold_start: Duration::from_secs(2),
            queue_depth: DEFAULT_QUEUE_DEPTH,
            wall_start: None,
        }
    }
}

/// Outcome of one run.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    pub requests: u64,
    pub p50_wait_ms: f64,
    pub p99_wait_ms: f64,
    pub pod_seconds: f64,
    pub max_pods: u32,
    pub dropped: u64,
}

impl Report {
    /// A two-line table.
    pub fn table(&self) -> String {
        let mut out = format!(
            "{:>10} {:>12} {:>12} {:>12} {:>9} {:>8}\n",
            "requests", "p50_wait_ms", "p99_wait_ms", "pod_seconds", "max_pods", "dropped"
        );
        let _ = writeln!(
            out,
            "{:>10} {:>12.1} {:>12.1} {:>12.1} {:>9} {:>8}",
            self.requests,
            self.p50_wait_ms,
            self.p99_wait_ms,
            self.pod_seconds,
            self.max_pods,
            self.dropped
        );
        out
    }
}

/// Desired pods over time, for tests and scenario checks.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Timeline {
    /// `(microsecond, desired)` at every change.
    pub desired: Vec<(u64, u32)>,
}

impl Timeline {
    /// Desired pods in effect at `second`.
    pub fn desired_at(&self, second: f64) -> u32 {
        let at = (second * MICROS as f64) as u64;
        self.desired
            .iter()
            .take_while(|&&(t, _)| t <= at)
            .last()
            .map_or(0, |&(_, d)| d)
    }
}

/// Runs the simulation.
pub fn simulate(config: &SimConfig) -> Report {
    simulate_with_timeline(config).0
}

/// Runs the simulation and also returns the desired pod count over time.
pub fn simulate_with_timeline(config: &SimConfig) -> (Report, Timeline) {
    let mut sim = Sim::new(config);
    sim.run();
    sim.finish()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    // Order among simultaneous events: metrics first, then decisions, then traffic.
    Sample,
    Tick,
    Second(u32),
    Arrival,
    Complete(PodId),
    PodReady(PodId),
    Wakeup,
}

impl Event {
    fn rank(self) -> u8 {
        match self {
            Event::Sample => 0,
            Event::Tick => 1,
            Event::Second(_) => 2,
            _ => 3,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PodState {
    Starting,
    Ready,
    Draining,
}

enum Decider {
    Kpa(Box<Kpa>),
    Precise(Precise),
    Hpa(Box<Hpa>),
}

struct Sim<'a> {
    config: &'a SimConfig,
    base: Instant,
    now: u64,
    end: u64,
    events: BinaryHeap<Reverse<(u64, u8, u64, Event)>>,
    seq: u64,
    queue: DispatchQueue<u64>,
    pods: BTreeMap<PodId, PodState>,
    /// Reserved instances, apart from the regular pods.
    reserved: BTreeMap<PodId, PodState>,
    /// When each pod was asked for and when it became ready (the HPA's pod samples).
    pod_times: BTreeMap<PodId, (u64, Option<u64>)>,
    /// Request-microseconds each pod ran since the last sample (its cpu for the HPA class).
    busy_area: BTreeMap<PodId, u128>,
    next_pod: PodId,
    decider: Decider,
    desired: Option<u32>,
    wakeup: Option<u64>,
    timeline: Timeline,
    // Results.
    requests: u64,
    dropped: u64,
    waits: Vec<u64>,
    pod_micros: u128,
    max_pods: u32,
    // KPA metric since the last sample.
    demand_area: u128,
    arrivals_since_sample: u64,
    last_change: u64,
}

impl<'a> Sim<'a> {
    fn new(config: &'a SimConfig) -> Self {
        let base = Instant::now();
        let policy = &config.policy;
        let decider = match policy.class {
            Class::Kpa => Decider::Kpa(Box::new(Kpa::new(policy, base, 0))),
            Class::Precise => Decider::Precise(Precise::new()),
            Class::Hpa => Decider::Hpa(Box::new(Hpa::new())),
        };
        let end = config.arrivals.len() as u64 * MICROS;
        Self {
            config,
            base,
            now: 0,
            end,
            events: BinaryHeap::new(),
            seq: 0,
            queue: DispatchQueue::new(policy.container_concurrency, config.queue_depth),
            pods: BTreeMap::new(),
            reserved: BTreeMap::new(),
            pod_times: BTreeMap::new(),
            busy_area: BTreeMap::new(),
            next_pod: 0,
            decider,
            desired: None,
            wakeup: None,
            timeline: Timeline::default(),
            requests: 0,
            dropped: 0,
            waits: Vec::new(),
            pod_micros: 0,
            max_pods: 0,
            demand_area: 0,
            arrivals_since_sample: 0,
            last_change: 0,
        }
    }

    fn run(&mut self) {
        if !self.config.arrivals.is_empty() {
            self.schedule(0, Event::Second(0));
        }
        match self.decider {
            Decider::Kpa(_) => {
                self.schedule(MICROS, Event::Sample);
                self.schedule(0, Event::Tick);
            }
            Decider::Hpa(_) => {
                let initial = self.policy_now().bound(self.config.policy.initial_scale);
                self.apply(initial);
                self.schedule(MICROS, Event::Sample);
            }
            Decider::Precise(_) => {
                self.decide_precise();
                if self.scheduled() {
                    // Windows open on the clock, not on arrivals: look at it every tick.
                    self.schedule(0, Event::Tick);
                }
            }
        }
        let limit = self.end + micros(DRAIN_LIMIT);
        while let Some(Reverse((at, _, _, event))) = self.events.pop() {
            if at > limit {
                break;
            }
            self.advance(at);
            match event {
                Event::Second(s) => self.second(s),
                Event::Arrival => self.arrival(),
                Event::Complete(pod) => self.complete(pod),
                Event::PodReady(pod) => self.pod_ready(pod),
                Event::Sample => self.sample(),
                Event::Tick => self.tick(),
                Event::Wakeup => {
                    if self.wakeup == Some(self.now) {
                        self.wakeup = None;
                        self.decide_precise();
                    }
                }
            }
        }
    }

    fn finish(mut self) -> (Report, Timeline) {
        self.advance(self.now.max(self.end));
        self.waits.sort_unstable();
        let report = Report {
            requests: self.requests,
            p50_wait_ms: percentile_ms(&self.waits, 0.50),
            p99_wait_ms: percentile_ms(&self.waits, 0.99),
            pod_seconds: self.pod_micros as f64 / MICROS as f64,
            max_pods: self.max_pods,
            dropped: self.dropped,
        };
        (report, self.timeline)
    }

    fn schedule(&mut self, at: u64, event: Event) {
        self.seq += 1;
        self.events
            .push(Reverse((at, event.rank(), self.seq, event)));
    }

    fn instant(&self) -> Instant {
        self.base + Duration::from_micros(self.now)
    }

    /// Moves the clock, integrating pods (within the trace) and demand (for KPA's samples).
    fn advance(&mut self, to: u64) {
        let from = self.last_change;
        if to <= from {
            self.now = self.now.max(to);
            return;
        }
        let pods = (self.pods.len() + self.reserved.len()) as u128;
        let within = u128::from(to.min(self.end).saturating_sub(from.min(self.end)));
        self.pod_micros += pods * within;
        let demand = u128::from(self.queue.in_flight()) + self.queue.queued() as u128;
        self.demand_area += demand * u128::from(to - from);
        if matches!(self.decider, Decider::Hpa(_)) {
            for pod in self.queue.pods() {
                if pod.in_flight > 0 {
                    *self.busy_area.entry(pod.id).or_default() +=
                        u128::from(pod.in_flight) * u128::from(to - from);
                }
            }
        }
        self.last_change = to;
        self.now = to;
    }

    fn busy(&self) -> bool {
        self.queue.in_flight() > 0 || self.queue.queued() > 0
    }

    fn demand(&self) -> Demand {
        Demand {
            in_flight: self.queue.in_flight(),
            queued: self.queue.queued() as u64,
            backlog: 0,
        }
    }

    fn second(&mut self, s: u32) {
        let index = s as usize;
        let count = u64::from(self.config.arrivals.get(index).copied().unwrap_or(0));
        let start = u64::from(s) * MICROS;
        for i in 0..count {
            self.schedule(start + i * MICROS / count, Event::Arrival);
        }
        if index + 1 < self.config.arrivals.len() {
            self.schedule(start + MICROS, Event::Second(s + 1));
        }
    }

    fn arrival(&mut self) {
        self.requests += 1;
        self.arrivals_since_sample += 1;
        if let Some(slot) = self.queue.try_acquire() {
            self.waits.push(0);
            self.schedule(
                self.now + micros(self.config.service_time),
                Event::Complete(slot.pod),
            );
        } else if self.queue.enqueue(self.now).is_err() {
            self.dropped += 1;
        }
        self.on_change(true);
    }

    fn complete(&mut self, pod: PodId) {
        if let Some((arrived, slot)) = self.queue.release(pod) {
            self.start_request(arrived, slot.pod);
        }
        let idle = self.queue.pod(pod).is_some_and(|p| p.in_flight == 0);
        if idle && self.reserved.get(&pod) == Some(&PodState::Draining) {
            self.queue.remove_pod(pod);
            self.reserved.remove(&pod);
        }
        if idle && self.pods.get(&pod) == Some(&PodState::Draining) {
            self.queue.remove_pod(pod);
            self.pods.remove(&pod);
            self.pod_times.remove(&pod);
        }
        self.on_change(false);
    }

    fn pod_ready(&mut self, pod: PodId) {
        if self.reserved.get(&pod) == Some(&PodState::Starting) {
            self.reserved.insert(pod, PodState::Ready);
            let limit = self.config.policy.container_concurrency;
            let handed = self.queue.add_reserved_pod(pod, address(pod), limit);
            for (arrived, slot) in handed {
                self.start_request(arrived, slot.pod);
            }
            self.on_change(false);
            return;
        }
        if self.pods.get(&pod) != Some(&PodState::Starting) {
            return;
        }
        self.pods.insert(pod, PodState::Ready);
        if let Some(times) = self.pod_times.get_mut(&pod) {
            times.1 = Some(self.now);
        }
        let handed = self.queue.add_pod(pod, address(pod));
        for (arrived, slot) in handed {
            self.start_request(arrived, slot.pod);
        }
        // Hand-over: the reserved instances take no new work and leave after their last one.
        let reserved: Vec<PodId> = self.reserved.keys().copied().collect();
        for id in reserved {
            let busy = self.queue.pod(id).is_some_and(|p| p.in_flight > 0);
            if busy {
                self.reserved.insert(id, PodState::Draining);
            } else {
                self.queue.remove_pod(id);
                self.reserved.remove(&id);
            }
        }
        self.on_change(false);
    }

    fn start_request(&mut self, arrived: u64, pod: PodId) {
        self.waits.push(self.now - arrived);
        self.schedule(
            self.now + micros(self.config.service_time),
            Event::Complete(pod),
        );
    }

    /// Precise decides on every change; KPA is poked when demand waits without a ready pod.
    fn on_change(&mut self, arrival: bool) {
        match self.decider {
            Decider::Precise(_) => self.decide_precise(),
            Decider::Hpa(_) => {
                if arrival && self.desired == Some(0) {
                    self.decide_hpa();
                }
            }
            Decider::Kpa(_) => {
                if arrival && self.queue.ready_pods() == 0 && self.busy() {
                    let value = self.kpa_value(self.demand().requests() as f64);
                    let now = self.instant();
                    if let Decider::Kpa(kpa) = &mut self.decider {
                        kpa.record(now, value);
                    }
                    self.decide_kpa();
                }
            }
        }
    }

    fn kpa_value(&self, concurrency: f64) -> f64 {
        match self.config.policy.metric {
            Metric::Concurrency | Metric::Cpu | Metric::Memory => concurrency,
            Metric::Rps => self.arrivals_since_sample as f64,
        }
    }

    fn sample(&mut self) {
        let average = self.demand_area as f64 / MICROS as f64;
        let value = self.kpa_value(average);
        self.demand_area = 0;
        self.arrivals_since_sample = 0;
        let now = self.instant();
        let ready = self.queue.ready_pods();
        if let Decider::Kpa(kpa) = &mut self.decider
            && (value > 0.0 || ready > 0)
        {
            kpa.record(now, value);
        }
        if matches!(self.decider, Decider::Hpa(_)) {
            self.decide_hpa();
        }
        if self.running() {
            self.schedule(self.now + MICROS, Event::Sample);
        }
    }

    fn tick(&mut self) {
        self.decide_kpa();
        if self.scheduled() {
            self.decide_precise();
        }
        if self.running() {
            self.schedule(self.now + micros(self.config.policy.tick), Event::Tick);
        }
    }

    /// The periodic events continue while the trace lasts or requests are left.
    fn running(&self) -> bool {
        self.now < self.end || self.busy()
    }

    /// Whether a schedule's windows bound the decisions.
    fn scheduled(&self) -> bool {
        self.config.wall_start.is_some() && !self.config.policy.schedule.is_empty()
    }

    /// The policy in force now: the schedule's windows at the trace's wall-clock time.
    fn policy_now(&self) -> Policy {
        match self.config.wall_start.and_then(|start| {
            start
                .checked_add(jiff::SignedDuration::from_micros(
                    i64::try_from(self.now).unwrap_or(i64::MAX),
                ))
                .ok()
        }) {
            Some(at) => self.config.policy.at(at).into_owned(),
            None => self.config.policy.clone(),
        }
    }

    fn decide_kpa(&mut self) {
        let now = self.instant();
        let ready = u32::try_from(self.queue.ready_pods()).unwrap_or(u32::MAX);
        let policy = &self.policy_now();
        let desired = match &mut self.decider {
            Decider::Kpa(kpa) => kpa.decide(now, ready, policy).desired,
            Decider::Precise(_) | Decider::Hpa(_) => return,
        };
        self.apply(desired);
    }

    /// The HPA class on the pods' modelled cpu since the last sample.
    fn decide_hpa(&mut self) {
        let now = self.instant();
        let per_request =
            SIM_CPU_REQUEST / f64::from(self.config.policy.container_concurrency.max(1));
        let at = |micros: u64| self.base + Duration::from_micros(micros);
        let samples: Vec<PodSample> = self
            .pods
            .iter()
            .filter(|(_, state)| **state != PodState::Draining)
            .map(|(id, state)| {
                let (started, ready_at) = self.pod_times.get(id).copied().unwrap_or_default();
                let area = self.busy_area.get(id).copied().unwrap_or(0);
                let ready = *state == PodState::Ready;
                PodSample {
                    ready,
                    started: at(started),
                    ready_changed: at(ready_at.unwrap_or(started)),
                    usage: ready.then(|| (area as f64 / MICROS as f64 * per_request, now)),
                }
            })
            .collect();
        self.busy_area.clear();
        let current = self.desired.unwrap_or(0);
        let demand = self.demand();
        let policy = self.policy_now().hpa();
        let Decider::Hpa(hpa) = &mut self.decider else {
            return;
        };
        let desired = hpa.decide(now, &samples, current, demand, &policy);
        self.apply(desired);
    }

    fn decide_precise(&mut self) {
        let now = self.instant();
        let demand = self.demand();
        let policy = &self.policy_now();
        let Decider::Precise(precise) = &mut self.decider else {
            return;
        };
        let desired = precise.decide(now, demand, policy);
        let wakeup = precise
            .next_wakeup()
            .map(|w| micros(w.saturating_duration_since(self.base)));
        self.apply(desired);
        if wakeup.is_some() && wakeup != self.wakeup {
            self.wakeup = wakeup;
            if let Some(at) = wakeup {
                self.schedule(at, Event::Wakeup);
            }
        }
    }

    /// Starts or removes pods so that `desired` are ready or starting.
    fn apply(&mut self, desired: u32) {
        // Every call reaches its target, so an unchanged target needs nothing.
        if self.desired == Some(desired) {
            return;
        }
        self.desired = Some(desired);
        self.timeline.desired.push((self.now, desired));
        if desired == 0 {
            let running = self
                .reserved
                .values()
                .filter(|s| **s != PodState::Draining)
                .count();
            for _ in running..self.config.policy.reserved_instances as usize {
                self.start_pod(true);
            }
        }
        let active: Vec<PodId> = self
            .pods
            .iter()
            .filter(|(_, s)| **s != PodState::Draining)
            .map(|(&id, _)| id)
            .collect();
        let want = desired as usize;
        if want > active.len() {
            for _ in active.len()..want {
                self.start_pod(false);
            }
            return;
        }
        let mut surplus = active.len() - want;
        // Pods still starting go first, newest first.
        for &id in active.iter().rev() {
            if surplus == 0 {
                return;
            }
            if self.pods.get(&id) == Some(&PodState::Starting) {
                self.pods.remove(&id);
                self.pod_times.remove(&id);
                surplus -= 1;
            }
        }
        // Then the least busy ready pods.
        let mut ready: Vec<(u32, PodId)> = active
            .iter()
            .filter(|id| self.pods.get(id) == Some(&PodState::Ready))
            .map(|&id| (self.queue.pod(id).map_or(0, |p| p.in_flight), id))
            .collect();
        ready.sort_unstable();
        for (in_flight, id) in ready.into_iter().take(surplus) {
            // A reserved instance on standby takes the waiters once no regular pod does.
            for (arrived, slot) in self.queue.drain_pod(id) {
                self.start_request(arrived, slot.pod);
            }
            if in_flight == 0 {
                self.queue.remove_pod(id);
                self.pods.remove(&id);
                self.pod_times.remove(&id);
            } else {
                self.pods.insert(id, PodState::Draining);
            }
        }
    }
}

impl Sim<'_> {
    /// Asks for one pod (a reserved instance when `reserved`), ready a cold start from now.
    fn start_pod(&mut self, reserved: bool) {
        let id = self.next_pod;
        self.next_pod += 1;
        if reserved {
            self.reserved.insert(id, PodState::Starting);
        } else {
            self.pods.insert(id, PodState::Starting);
            self.pod_times.insert(id, (self.now, None));
        }
        self.schedule(
            self.now + micros(self.config.cold_start),
            Event::PodReady(id),
        );
        let existing = self.pods.len() + self.reserved.len();
        self.max_pods = self
            .max_pods
            .max(u32::try_from(existing).unwrap_or(u32::MAX));
    }
}

fn address(pod: PodId) -> SocketAddr {
    let port = u16::try_from(pod % 60_000).unwrap_or(0) + 1024;
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Nearest-rank percentile of sorted microseconds, in milliseconds.
fn percentile_ms(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    let index = rank.clamp(1, sorted.len()) - 1;
    sorted[index] as f64 / 1000.0
}

#[cfg(test)]
#[path = "simulate_tests.rs"]
mod tests;
