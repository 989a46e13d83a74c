//! Watching manifest directories: poll, reload on change, publish a new [`Snapshot`] when the
//! set is valid, and keep the last good one (publishing the errors) when it is not.
//!
//! Polling compares the full contents of the manifest files (names and bytes) with what was
//! last loaded, so it needs no file-system notification support and sees changes made through
//! Kubernetes ConfigMap volume symlink swaps. New contents are loaded once two polls in a row
//! read them identically, so a change takes effect within about two intervals and a file
//! caught mid-write (for instance truncated to nothing) is not applied.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::MissedTickBehavior;

use crate::error::ManifestError;
use crate::load::DirContents;
use crate::snapshot::Snapshot;

/// Shortest polling interval accepted; shorter ones are raised to it.
const MIN_INTERVAL: Duration = Duration::from_millis(10);

/// The live manifest set of some directories.
#[derive(Debug, Clone)]
pub struct ManifestWatch {
    /// The last valid snapshot; changes only when the set changes and is valid.
    pub snapshots: watch::Receiver<Arc<Snapshot>>,
    /// Why the current files are rejected; empty while they are valid.
    pub errors: watch::Receiver<Arc<Vec<ManifestError>>>,
}

/// Spawns a task polling `dirs` every `interval`, starting from `initial` (usually what
/// [`crate::load_dirs`] returned). Must be called within a tokio runtime. The task ends when
/// every receiver of [`ManifestWatch::snapshots`] has been dropped.
pub fn watch(dirs: Vec<PathBuf>, initial: Arc<Snapshot>, interval: Duration) -> ManifestWatch {
    let (snapshot_tx, snapshots) = watch::channel(initial);
    let (errors_tx, errors) = watch::channel(Arc::new(Vec::new()));
    tokio::spawn(poll_loop(dirs, interval, snapshot_tx, errors_tx));
    ManifestWatch { snapshots, errors }
}

async fn poll_loop(
    dirs: Vec<PathBuf>,
    interval: Duration,
    snapshot_tx: watch::Sender<Arc<Snapshot>>,
    errors_tx: watch::Sender<Arc<Vec<ManifestError>>>,
) {
    let mut ticker = tokio::time::interval(interval.max(MIN_INTERVAL));
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let dirs = Arc::new(dirs);
    // The contents last loaded, and contents seen once but not yet loaded.
    let mut applied: Option<DirContents> = None;
    let mut pending: Option<DirContents> = None;
    loop {
        tokio::select! {
            () = snapshot_tx.closed() => break,
            _ = ticker.tick() => {}
        }
        let read_dirs = Arc::clone(&dirs);
        let contents =
            match tokio::task::spawn_blocking(move || DirContents::read(&read_dirs)).await {
                Ok(contents) => contents,
                Err(e) => {
                    tracing::error!(error = %e, "Manifest poll failed; will retry.");
                    continue;
                }
            };
        if applied.as_ref() == Some(&contents) {
            pending = None;
            continue;
        }
        if pending.as_ref() != Some(&contents) {
            // Load only contents seen on two polls in a row, so a file caught while an
            // editor truncates and rewrites it is never applied as an empty set.
            pending = Some(contents);
            continue;
        }
        pending = None;
        let loaded = tokio::task::spawn_blocking(move || {
            let result = contents.load();
            (contents, result)
        })
        .await;
        match loaded {
            Ok((contents, result)) => {
                applied = Some(contents);
                publish(result, &snapshot_tx, &errors_tx);
            }
            Err(e) => tracing::error!(error = %e, "Manifest load failed; will retry."),
        }
    }
    tracing::debug!("Manifest watch stopped: no snapshot receivers left.");
}

fn publish(
    result: Result<Snapshot, Vec<ManifestError>>,
    snapshot_tx: &watch::Sender<Arc<Snapshot>>,
    errors_tx: &watch::Sender<Arc<Vec<ManifestError>>>,
) {
    match result {
        Ok(snapshot) => {
            let changed = snapshot_tx.send_if_modified(|current| {
                if **current == snapshot {
                    return false;
                }
                for w in &snapshot.warnings {
                    tracing::warn!(
                        file = %w.file.display(),
                        document = w.document,
                        field = %w.field,
                        reason = %w.reason,
                        "Manifest accepted with a warning."
                    );
                }
                *current = Arc::new(snapshot);
                true
            });
            if changed {
                let current = snapshot_tx.borrow();
                tracing::info!(
                    brokers = current.brokers.len(),
                    triggers = current.triggers.len(),
                    "Manifests applied."
                );
            }
            errors_tx.send_if_modified(|errors| {
                let had_errors = !errors.is_empty();
                if had_errors {
                    *errors = Arc::new(Vec::new());
                }
                had_errors
            });
        }
        Err(errors) => {
            for e in &errors {
                tracing::error!(
                    file = %e.file.display(),
                    document = e.document,
                    field = %e.field,
                    reason = %e.reason,
                    "Manifest rejected; keeping the last good set."
                );
            }
            errors_tx.send_replace(Arc::new(errors));
        }
    }
}

#[cfg(test)]
mod tests;
