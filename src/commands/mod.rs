//! Client-side subcommands: `send`, `check`, `status`, `simulate`.

pub mod exec_pod;
pub mod send;
pub mod simulate;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;

use crate::ingress::admin::{BrokerStatus, RevisionStatus, TriggerStatus};

/// `tidegate check DIR…`: prints every located error and warning; exit 1 on any error.
pub fn check(dirs: &[PathBuf]) -> ExitCode {
    match triggers::load_dirs(dirs) {
        Ok(snapshot) => {
            for w in &snapshot.warnings {
                println!("warning: {w}");
            }
            println!(
                "ok: {} broker(s), {} trigger(s)",
                snapshot.brokers.len(),
                snapshot.triggers.len()
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

/// `tidegate status`: brokers and triggers as tables.
pub async fn status(admin: &str) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let base = admin.trim_end_matches('/');
    let brokers: Vec<BrokerStatus> = client
        .get(format!("{base}/api/v1/brokers"))
        .send()
        .await
        .with_context(|| format!("contacting the admin API at {base}"))?
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
    print!("{}", render_revisions(&revisions));
    print!("{}", render(&brokers, &triggers));
    Ok(())
}

fn render_revisions(revisions: &[RevisionStatus]) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "REVISIONS\n{:<16} {:<28} {:<8} {:>3} {:>6} {:>8} {:>9} {:>7}",
        "NAMESPACE", "REVISION", "CLASS", "CC", "READY", "DESIRED", "INFLIGHT", "QUEUED"
    );
    for r in revisions {
        let class = r.class.split('.').next().unwrap_or(&r.class);
        let _ = writeln!(
            out,
            "{:<16} {:<28} {:<8} {:>3} {:>6} {:>8} {:>9} {:>7}",
            r.namespace,
            r.revision,
            class,
            r.container_concurrency,
            r.ready_pods,
            r.desired_pods,
            r.in_flight,
            r.queued
        );
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
        "BROKERS\n{:<16} {:<20} {:<9} {:<6} {:>10}",
        "NAMESPACE", "NAME", "BACKEND", "READY", "STORED"
    );
    for b in brokers {
        let _ = writeln!(
            out,
            "{:<16} {:<20} {:<9} {:<6} {:>10}",
            b.namespace, b.name, b.backend, b.ready, b.stored
        );
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
