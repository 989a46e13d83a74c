//! Scenario files `tests/data/autoscaler/*.json` run through the pure decision functions on
//! virtual time.
//!
//! A file names a class, policy overrides, a demand timeline (from second `at` on: in flight,
//! queued, backlog, arrivals per second) and expected ranges of desired pods at given seconds.
//! Virtual time advances a second at a time. Ready pods follow the desired count
//! `cold_start_seconds` late. KPA records one sample a second, decides every tick, and decides at
//! once while demand waits without a ready pod (as the task does); precise decides when the
//! demand changes and when a held decrease expires.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use tokio::time::Instant;

use super::Demand;
use super::kpa::Kpa;
use super::policy::{Metric, Policy};
use super::precise::Precise;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Scenario {
    #[allow(dead_code)]
    description: String,
    class: ClassName,
    #[serde(default)]
    policy: Overrides,
    #[serde(default)]
    cold_start_seconds: u64,
    duration_seconds: u64,
    demand: Vec<Step>,
    expect: Vec<Expect>,
}

#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
enum ClassName {
    Kpa,
    Precise,
}

#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
enum MetricName {
    Concurrency,
    Rps,
}

/// Policy fields to change; durations in humantime (`10s`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Overrides {
    metric: Option<MetricName>,
    container_concurrency: Option<u32>,
    target: Option<f64>,
    target_utilization: Option<f64>,
    min_scale: Option<u32>,
    max_scale: Option<u32>,
    initial_scale: Option<u32>,
    stable_window: Option<String>,
    panic_window_percentage: Option<f64>,
    panic_threshold_percentage: Option<f64>,
    max_scale_up_rate: Option<f64>,
    max_scale_down_rate: Option<f64>,
    scale_to_zero_grace: Option<String>,
    scale_down_delay: Option<String>,
    backlog_target: Option<u32>,
    tick: Option<String>,
}

/// From second `at` on (until the next step).
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Step {
    at: u64,
    #[serde(default)]
    in_flight: u64,
    #[serde(default)]
    queued: u64,
    #[serde(default)]
    backlog: u64,
    /// Requests arriving per second (the rps metric).
    #[serde(default)]
    rps: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Expect {
    at: u64,
    min: u32,
    max: u32,
    /// KPA only: panic mode on (or off) at that second.
    panic: Option<bool>,
}

fn duration(field: &str, text: &Option<String>, default: Duration) -> Result<Duration, String> {
    match text {
        None => Ok(default),
        Some(t) => humantime::parse_duration(t).map_err(|e| format!("policy.{field}: {e}")),
    }
}

impl Scenario {
    fn policy(&self) -> Result<Policy, String> {
        let o = &self.policy;
        let mut p = match self.class {
            ClassName::Kpa => Policy::kpa_default(),
            ClassName::Precise => Policy::precise_default(0),
        };
        if let Some(MetricName::Rps) = o.metric {
            p.metric = Metric::Rps;
            p.target = super::policy::DEFAULT_RPS_TARGET;
        }
        let mut p = p.with_container_concurrency(o.container_concurrency.unwrap_or(0));
        p.target = o.target.unwrap_or(p.target);
        p.target_utilization = o.target_utilization.unwrap_or(p.target_utilization);
        p.min_scale = o.min_scale.unwrap_or(p.min_scale);
        p.max_scale = o.max_scale.or(p.max_scale);
        p.initial_scale = o.initial_scale.unwrap_or(p.initial_scale);
        p.stable_window = duration("stable_window", &o.stable_window, p.stable_window)?;
        p.panic_window_percentage = o
            .panic_window_percentage
            .unwrap_or(p.panic_window_percentage);
        p.panic_threshold_percentage = o
            .panic_threshold_percentage
            .unwrap_or(p.panic_threshold_percentage);
        p.max_scale_up_rate = o.max_scale_up_rate.unwrap_or(p.max_scale_up_rate);
        p.max_scale_down_rate = o.max_scale_down_rate.unwrap_or(p.max_scale_down_rate);
        p.scale_to_zero_grace = duration(
            "scale_to_zero_grace",
            &o.scale_to_zero_grace,
            p.scale_to_zero_grace,
        )?;
        p.scale_down_delay = duration("scale_down_delay", &o.scale_down_delay, p.scale_down_delay)?;
        p.backlog_target = o.backlog_target.unwrap_or(p.backlog_target);
        p.tick = duration("tick", &o.tick, p.tick)?;
        Ok(p)
    }

    fn step_at(&self, second: u64) -> Step {
        self.demand
            .iter()
            .take_while(|s| s.at <= second)
            .last()
            .copied()
            .unwrap_or(Step {
                at: 0,
                in_flight: 0,
                queued: 0,
                backlog: 0,
                rps: 0,
            })
    }

    /// Desired pods and panic mode in effect at the end of each second.
    fn run(&self) -> Result<Vec<(u32, bool)>, String> {
        let policy = self.policy()?;
        let tick = policy.tick.as_secs().max(1);
        let t0 = Instant::now();
        let mut kpa = Kpa::new(&policy, t0, 0);
        let mut precise = Precise::new();
        let mut history: Vec<(u32, bool)> = Vec::new();
        let mut desired = 0;
        let mut panic = false;
        let mut last_demand = None;
        for s in 0..=self.duration_seconds {
            let now = t0 + Duration::from_secs(s);
            let step = self.step_at(s);
            let demand = Demand {
                in_flight: step.in_flight,
                queued: step.queued,
                backlog: step.backlog,
            };
            let ready = if self.cold_start_seconds == 0 {
                desired
            } else {
                s.checked_sub(self.cold_start_seconds)
                    .and_then(|then| history.get(usize::try_from(then).ok()?))
                    .map_or(0, |&(d, _)| d)
            };
            match self.class {
                ClassName::Kpa => {
                    let value = match policy.metric {
                        Metric::Concurrency | Metric::Cpu | Metric::Memory => {
                            demand.requests() as f64
                        }
                        Metric::Rps => step.rps as f64,
                    };
                    // The regular sample (from second 1 on), or the scale-from-zero poke.
                    let poke = ready == 0 && value > 0.0;
                    if poke || (s > 0 && (value > 0.0 || ready > 0)) {
                        kpa.record(now, value);
                    }
                    if poke || s % tick == 0 {
                        let d = kpa.decide(now, ready, &policy);
                        desired = d.desired;
                        panic = d.panic;
                    }
                }
                ClassName::Precise => {
                    let woken = precise.next_wakeup().is_some_and(|w| w <= now);
                    if last_demand != Some(demand) || woken {
                        desired = precise.decide(now, demand, &policy);
                        last_demand = Some(demand);
                    }
                }
            }
            history.push((desired, panic));
        }
        Ok(history)
    }
}

fn scenario_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/autoscaler")
}

/// Runs one file; returns its failures.
fn check(path: &Path) -> Vec<String> {
    let name = path.display();
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => return vec![format!("{name}: {e}")],
    };
    let scenario: Scenario = match serde_json::from_str(&text) {
        Ok(s) => s,
        Err(e) => return vec![format!("{name}: {e}")],
    };
    let history = match scenario.run() {
        Ok(h) => h,
        Err(e) => return vec![format!("{name}: {e}")],
    };
    let mut failures = Vec::new();
    for e in &scenario.expect {
        let Some(&(desired, panic)) = history.get(e.at as usize) else {
            failures.push(format!("{name}: second {} is past the end", e.at));
            continue;
        };
        if !(e.min..=e.max).contains(&desired) {
            failures.push(format!(
                "{name}: at {} s desired {desired}, expected {}..={}",
                e.at, e.min, e.max
            ));
        }
        if e.panic.is_some_and(|p| p != panic) {
            failures.push(format!(
                "{name}: at {} s panic {panic}, expected {:?}",
                e.at, e.panic
            ));
        }
    }
    failures
}

#[test]
fn scenario_files_hold() {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(scenario_dir())
        .map(|dir| {
            dir.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "json"))
                .collect()
        })
        .unwrap_or_default();
    paths.sort();
    assert!(paths.len() >= 10, "scenario files: {paths:?}");
    let failures: Vec<String> = paths.iter().flat_map(|p| check(p)).collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn unknown_fields_are_refused() {
    let text = r#"{"description": "", "class": "kpa", "duration_seconds": 1,
        "demand": [], "expect": [], "polcy": {}}"#;
    assert!(serde_json::from_str::<Scenario>(text).is_err());
    let text = r#"{"description": "", "class": "kpa", "duration_seconds": 1,
        "demand": [], "expect": [], "policy": {"scale_down_delay": "soon"}}"#;
    let scenario: Result<Scenario, _> = serde_json::from_str(text);
    assert!(scenario.is_ok_and(|s| s.policy().is_err()));
}
