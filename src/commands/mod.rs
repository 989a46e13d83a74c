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

/// `tidegate status`: the manifest set (with warnings when a reload was rejected or the
/// persisted last-good set is served), then revisions, brokers and triggers as tables.
pub async fn status(admin: &str) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let base = admin.trim_end_matches('/');
    let manifests: ManifestsReport = client
        .get(format!("{base}/api/v1/manifests"))
        .send()
        .await
        .with_context(|| format!("contacting the admin API at {base}"))?
        .error_for_status()?
        .json()
        .await?;
    let brokers: Vec<BrokerStatus> = client
        .get(format!("{base}/api/v1/brokers"))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let triggers: Vec<TriggerStatus> = client
        .get(format!("{base}/api/v1/triggers"))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let revisions: Vec<RevisionStatus> = client
        .get(format!("{base}/api/v1/revisions"))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    print!("{}", render_manifests(&manifests));
    print!("{}", render_revisions(&revisions));
    print!("{}", render(&brokers, &triggers));
    Ok(())
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

fn render_revisions(revisions: &[RevisionStatus]) -> String {
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
