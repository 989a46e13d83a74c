//! `tidegate simulate`: run one autoscaler class over a trace on virtual time.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;

use crate::autoscaler::Class;
use crate::autoscaler::simulate::{SimConfig, simulate};
use crate::autoscaler::trace::{self, Trace};

#[derive(clap::Args, Debug)]
#[command(group(
    clap::ArgGroup::new("source").required(true).args(["trace", "trace_file"])
))]
pub struct SimulateArgs {
    /// Built-in trace: step (10 → 200 → 10 rps over 240 s), spike (5 rps with 10 s at 500 rps,
    /// 180 s), diurnal (5–200 rps sinusoid, 300 s period, 900 s).
    #[arg(long, value_enum)]
    pub trace: Option<TraceName>,
    /// CSV trace with the header `second,arrivals`.
    #[arg(long)]
    pub trace_file: Option<PathBuf>,
    /// Autoscaler class.
    #[arg(long, value_enum, default_value = "precise")]
    pub class: ClassName,
    /// Time a pod takes to serve one request.
    #[arg(long, default_value = "100ms", value_parser = humantime::parse_duration)]
    pub service_time: Duration,
    /// Time from asking for a pod until it is ready.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub cold_start: Duration,
    /// Requests one pod takes at once (0 = unlimited).
    #[arg(long, default_value_t = 10)]
    pub container_concurrency: u32,
    /// Fewest pods (`autoscaling.knative.dev/min-scale`); the class's default when not given
    /// (0, or 1 for hpa as Knative's HPA class).
    #[arg(long)]
    pub min_scale: Option<u32>,
    /// Reserved instances (`tidegate.dev/reserved-instances`): started whenever the desired
    /// scale is 0, taking the first requests after idle until a regular pod is ready.
    #[arg(long, default_value_t = 0)]
    pub reserved_instances: u32,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Schedule windows, as the `tidegate.dev/schedule` annotation writes them (a YAML or
    /// JSON list of `{start, end, timezone, minScale, maxScale}`); needs `--start`.
    #[arg(long, requires = "start")]
    pub schedule: Option<String>,
    /// The wall-clock time of the trace's second 0, RFC 3339 (`2026-12-07T07:00:00Z`).
    #[arg(long)]
    pub start: Option<jiff::Timestamp>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum TraceName {
    Step,
    Spike,
    Diurnal,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum ClassName {
    Kpa,
    Precise,
    /// `hpa.autoscaling.knative.dev` on cpu: 80 % of a 1000 m request, a running request
    /// using 1000 m / containerConcurrency.
    Hpa,
}

pub fn run(args: SimulateArgs) -> anyhow::Result<ExitCode> {
    let arrivals = match (args.trace, &args.trace_file) {
        (Some(name), _) => trace::builtin(match name {
            TraceName::Step => Trace::Step,
            TraceName::Spike => Trace::Spike,
            TraceName::Diurnal => Trace::Diurnal,
        }),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            trace::parse_csv(&text).with_context(|| format!("in {}", path.display()))?
        }
        (None, None) => anyhow::bail!("give --trace or --trace-file"),
    };
    let class = match args.class {
        ClassName::Kpa => Class::Kpa,
        ClassName::Precise => Class::Precise,
        ClassName::Hpa => Class::Hpa,
    };
    let mut config = SimConfig::new(class, args.container_concurrency, arrivals);
    config.service_time = args.service_time;
    config.cold_start = args.cold_start;
    config.policy.reserved_instances = args.reserved_instances;
    if let Some(min_scale) = args.min_scale {
        config.policy.min_scale = min_scale;
    }
    if let Some(text) = &args.schedule {
        let windows = triggers::schedule::parse(text).map_err(|problems| {
            let lines: Vec<String> = problems
                .into_iter()
                .map(|(at, why)| format!("--schedule{at}: {why}"))
                .collect();
            anyhow::anyhow!(lines.join("\n"))
        })?;
        config.policy.schedule = windows.into();
        config.wall_start = args.start;
    }
    let report = simulate(&config);
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", report.table());
    }
    Ok(ExitCode::SUCCESS)
}
