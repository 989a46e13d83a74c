//! Client-side subcommands: `send`, `check`, `status`, `logs`, `simulate`.

pub mod exec_pod;
pub mod logs;
pub mod send;
pub mod simulate;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;

use crate::ingress::admin::{BrokerStatus, RevisionStatus, TriggerStatus};
use crate::runtime::manifests::ManifestsReport;

/// `tidegate check DIR…`: prints every located error and warning; exit 1 on any error.
pub fn check(dirs: &[PathBuf]) -> ExitCode {
    match triggers::load_dirs(dirs) {
        Ok(snapshot) => {
            for w in &snapshot.warnings {
                println!("warning: {w}");
            }
            for service in &snapshot.services {
                let ignored = &service.template.pod.ignored_locally;
                if !ignored.is_empty() {
                    println!(
                        "note: Service {}/{}: ignored on the local runtime (kept for Kubernetes \
                         mode): {}",
                        service.namespace,
                        service.name,
                        ignored.join(", ")
                    );
                }
                if let Some(blocker) = &service.template.pod.local_blocker {
                    println!(
                        "note: Service {}/{}: does not run on the local runtime: {blocker}",
                        service.namespace, service.name
                    );
                }
            }
            println!(
                "ok: {} broker(s), {} trigger(s), {} service(s)",
                snapshot.brokers.len(),
                snapshot.triggers.len(),
                snapshot.services.len()
            );
            ExitCode::SUCCESS
        }
        Err(errors) => {
            for e in &errors {
                println!("error: {e}");
            }
            println!("{} error(s)", errors.len());
            ExitCode::FAILURE
        }
    }
}

/// How `tidegate status` prints (`-o`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum StatusFormat {
    /// Tables.
    #[default]
    Table,
    /// Tables with each pod's in-flight count against its limit and address.
    Wide,
    /// Everything the admin API said, as one JSON document.
    Json,
    /// The same as YAML.
    Yaml,
}

/// What `tidegate status` shows: the admin API's four views at one moment.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct StatusSnapshot {
    pub manifests: ManifestsReport,
    pub revisions: Vec<RevisionStatus>,
    pub brokers: Vec<BrokerStatus>,
    pub triggers: Vec<TriggerStatus>,
}

/// How long one request to the admin API may take.
const STATUS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// `tidegate status`: the manifest set (with warnings when a reload was rejected or the
/// persisted last-good set is served), then revisions, brokers and triggers; with `watch`,
/// again every `interval` until interrupted (redrawn in place on a terminal, appended with a
/// timestamp otherwise; an unreachable admin API is reported and retried).
pub async fn status(
    admin: &str,
    format: StatusFormat,
    watch: bool,
    interval: std::time::Duration,
) -> anyhow::Result<()> {
    use std::io::{IsTerminal as _, Write as _};
    let client = reqwest::Client::builder()
        .timeout(STATUS_TIMEOUT)
        .build()
        .context("building the HTTP client")?;
    let base = admin.trim_end_matches('/');
    if !watch {
        let snapshot = fetch_status(&client, base).await?;
        print!("{}", render_status(&snapshot, format)?);
        return Ok(());
    }
    let terminal = std::io::stdout().is_terminal();
    let interval = interval.max(std::time::Duration::from_millis(100));
    loop {
        let text = match fetch_status(&client, base).await {
            // One document per line, as `kubectl get -w -o json` streams objects.
            Ok(snapshot) if !terminal && format == StatusFormat::Json => {
                serde_json::to_string(&snapshot)? + "\n"
            }
            Ok(snapshot) => render_status(&snapshot, format)?,
            // The numbers of the last good read would pass for live ones: none are shown.
            Err(error) => format!("admin API unreachable: {error:#}; retrying\n"),
        };
        let mut out = std::io::stdout().lock();
        if terminal {
            // Home, the new text, then clear whatever the previous one left below it.
            write!(out, "\x1b[H\x1b[2J{text}")?;
        } else if format == StatusFormat::Json {
            write!(out, "{text}")?;
        } else {
            writeln!(
                out,
                "--- {}",
                chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            )?;
            write!(out, "{text}")?;
        }
        out.flush()?;
        drop(out);
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

async fn fetch_status(client: &reqwest::Client, base: &str) -> anyhow::Result<StatusSnapshot> {
    async fn get<T: serde::de::DeserializeOwned>(
        client: &reqwest::Client,
        url: String,
    ) -> anyhow::Result<T> {
        Ok(client
            .get(&url)
            .send()
            .await
            .with_context(|| format!("contacting the admin API at {url}"))?
            .error_for_status()?
            .json()
            .await?)
    }
    let (manifests, revisions, brokers, triggers) = tokio::try_join!(
        get(client, format!("{base}/api/v1/manifests")),
        get(client, format!("{base}/api/v1/revisions")),
        get(client, format!("{base}/api/v1/brokers")),
        get(client, format!("{base}/api/v1/triggers")),
    )?;
    Ok(StatusSnapshot {
        manifests,
        revisions,
        brokers,
        triggers,
    })
}

fn render_status(snapshot: &StatusSnapshot, format: StatusFormat) -> anyhow::Result<String> {
    Ok(match format {
        StatusFormat::Json => serde_json::to_string_pretty(snapshot)? + "\n",
        StatusFormat::Yaml => serde_saphyr::to_string(snapshot)?,
        StatusFormat::Table | StatusFormat::Wide => {
            let wide = format == StatusFormat::Wide;
            format!(
                "{}{}{}",
                render_manifests(&snapshot.manifests),
                render_revisions(&snapshot.revisions, wide),
                render(&snapshot.brokers, &snapshot.triggers)
            )
        }
    })
}

fn render_manifests(report: &ManifestsReport) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "MANIFESTS generation {} applied {} from {}",
        report.generation,
        report.applied_at.as_deref().unwrap_or("never"),
        report.sources.join(", ")
    );
    if let Some(first) = report.errors.first() {
        let _ = writeln!(
            out,
            "warning: the last manifest reload ({}) was rejected with {} error(s); the first: {first}",
            report
                .last_reload_at
                .as_deref()
                .unwrap_or("at an unknown time"),
            report.errors.len()
        );
    }
    if report.from_last_good {
        let _ = writeln!(
            out,
            "warning: serving the persisted last-good manifest set (generation {}): the \
             manifest directories were rejected at start and have not loaded since",
            report.generation
        );
    }
    if let Some(error) = &report.last_good_error {
        let _ = writeln!(
            out,
            "warning: the manifest set served is not persisted as the last good one: {error}"
        );
    }
    out.push('\n');
    out
}

fn render_revisions(revisions: &[RevisionStatus], wide: bool) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "REVISIONS\n{:<16} {:<28} {:<8} {:>3} {:>6} {:>8} {:>9} {:>7} {:>9}",
        "NAMESPACE",
        "REVISION",
        "CLASS",
        "CC",
        "READY",
        "DESIRED",
        "INFLIGHT",
        "QUEUED",
        "RESERVED"
    );
    for r in revisions {
        let class = r.class.split('.').next().unwrap_or(&r.class);
        let _ = writeln!(
            out,
            "{:<16} {:<28} {:<8} {:>3} {:>6} {:>8} {:>9} {:>7} {:>9}",
            r.namespace,
            r.revision,
            class,
            r.container_concurrency,
            r.ready_pods,
            r.desired_pods,
            r.in_flight,
            r.queued,
            r.reserved_pods
        );
        for pod in r.pods.iter().filter(|p| p.reserved) {
            let state = if pod.accepting {
                "taking work"
            } else if pod.standby {
                "standing by"
            } else {
                "handed over, finishing"
            };
            let _ = writeln!(
                out,
                "  reserved pod {} ({state}, {} in flight)",
                pod.id, pod.in_flight
            );
        }
        if wide {
            if let Some(decision) = &r.decision {
                let _ = writeln!(out, "  decision: {decision}");
            }
            for pod in r.pods.iter().filter(|p| !p.reserved) {
                let limit = match r.container_concurrency {
                    0 => "unlimited".to_owned(),
                    cc => cc.to_string(),
                };
                let state = if pod.accepting { "ready" } else { "draining" };
                let _ = writeln!(
                    out,
                    "  pod {:<10} {:<22} in flight {:>4} of {limit:<9} {state}",
                    pod.id, pod.address, pod.in_flight
                );
            }
        }
        if let Some(reason) = &r.reason {
            let _ = writeln!(out, "  problem: {reason}");
        }
    }
    out.push('\n');
    out
}

fn render(brokers: &[BrokerStatus], triggers: &[TriggerStatus]) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "BROKERS\n{:<16} {:<20} {:<9} {:<6} {:>10}  LOCATION",
        "NAMESPACE", "NAME", "BACKEND", "READY", "STORED"
    );
    for b in brokers {
        let location: Vec<String> = b.location.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let _ = writeln!(
            out,
            "{:<16} {:<20} {:<9} {:<6} {:>10}  {}",
            b.namespace,
            b.name,
            b.backend,
            b.ready,
            b.stored,
            location.join(" ")
        );
        if let Some(reason) = &b.reason {
            let _ = writeln!(out, "  not ready: {reason}");
        }
    }
    let _ = writeln!(
        out,
        "\nTRIGGERS\n{:<16} {:<20} {:<12} {:<6} {:>10} {:>8} {:>8} {:>8} {:>9} {:>8}  SUBSCRIBER",
        "NAMESPACE",
        "NAME",
        "BROKER",
        "READY",
        "DELIVERED",
        "RETRIED",
        "DEAD",
        "DROPPED",
        "INFLIGHT",
        "PENDING"
    );
    for t in triggers {
        let _ = writeln!(
            out,
            "{:<16} {:<20} {:<12} {:<6} {:>10} {:>8} {:>8} {:>8} {:>9} {:>8}  {}",
            t.namespace,
            t.name,
            t.broker,
            t.ready,
            t.delivered,
            t.retried,
            t.dead_lettered,
            t.dropped,
            t.in_flight,
            t.pending,
            t.subscriber
        );
        if let Some(reason) = &t.reason {
            let _ = writeln!(out, "  not ready: {reason}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::manifests::LocatedError;

    fn report() -> ManifestsReport {
        ManifestsReport {
            sources: vec!["deploy/local".to_owned()],
            generation: 3,
            applied_at: Some("2025-01-02T03:04:05.000Z".to_owned()),
            last_reload: Some("applied".to_owned()),
            last_reload_at: Some("2025-01-02T03:04:05.000Z".to_owned()),
            ..ManifestsReport::default()
        }
    }

    #[test]
    fn manifests_warn_only_about_rejections_and_the_persisted_set() {
        let ok = render_manifests(&report());
        assert!(
            ok.starts_with(
                "MANIFESTS generation 3 applied 2025-01-02T03:04:05.000Z from deploy/local"
            ),
            "{ok}"
        );
        assert!(!ok.contains("warning"), "{ok}");

        let mut bad = report();
        bad.from_last_good = true;
        bad.last_reload = Some("rejected".to_owned());
        bad.errors = vec![
            LocatedError {
                file: "deploy/local/t.yaml".to_owned(),
                document: 1,
                field: "spec.subscriber".to_owned(),
                reason: "required field is missing".to_owned(),
            };
            2
        ];
        let text = render_manifests(&bad);
        assert!(
            text.contains(
                "was rejected with 2 error(s); the first: deploy/local/t.yaml document 1: \
                 spec.subscriber: required field is missing"
            ),
            "{text}"
        );
        assert!(
            text.contains("warning: serving the persisted last-good manifest set (generation 3)"),
            "{text}"
        );
    }
}
