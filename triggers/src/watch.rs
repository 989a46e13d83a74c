//! Watching manifest directories: poll, reload on change, and report every reload: the new
//! [`Snapshot`] (with the texts it came from) when the set is valid, its located errors when it
//! is not. A rejected set changes nothing: the caller keeps serving its last good one.
//!
//! Polling compares the full contents of the manifest files (names and bytes) with what was
//! last loaded, so it needs no file-system notification support and sees changes made through
//! Kubernetes ConfigMap volume symlink swaps. New contents are loaded once two polls in a row
//! read them identically, so a change takes effect within about two intervals and a file
//! caught mid-write (for instance truncated to nothing) is not applied.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::MissedTickBehavior;

use crate::error::ManifestError;
use crate::load::DirContents;
use crate::snapshot::Snapshot;

/// Shortest polling interval accepted; shorter ones are raised to it.
const MIN_INTERVAL: Duration = Duration::from_millis(10);

/// The outcome of loading changed manifest contents.
#[derive(Debug, Clone)]
pub enum Reload {
    /// The set is valid. `files` are the `(file, text)` pairs it was loaded from:
    /// [`crate::load_documents`] turns them back into the same snapshot.
    Applied {
        snapshot: Arc<Snapshot>,
        files: Vec<(PathBuf, String)>,
    },
    /// The set is invalid, for every one of these reasons; nothing of it applies.
    Rejected { errors: Vec<ManifestError> },
}

/// The reloads of some manifest directories, in order, each reported once.
#[derive(Debug)]
pub struct ManifestWatch {
    reloads: mpsc::Receiver<Reload>,
}

impl ManifestWatch {
    /// The next reload; `None` once the watch task has stopped.
    pub async fn next(&mut self) -> Option<Reload> {
        self.reloads.recv().await
    }
}

/// Spawns a task polling `dirs` every `interval` that reports a [`Reload`] each time their
/// contents change. `start` is what the directories held when the serving set was chosen
/// (usually [`DirContents::read`] of `dirs`, whether it loaded or not): while they still hold
/// it nothing is reported, so a set rejected at start is not reported again, and any change
/// from it is. Must be called within a tokio runtime; the task ends when the returned
/// [`ManifestWatch`] is dropped.
pub fn watch(dirs: Vec<PathBuf>, start: DirContents, interval: Duration) -> ManifestWatch {
    let (tx, reloads) = mpsc::channel(1);
    tokio::spawn(poll_loop(dirs, start, interval, tx));
    ManifestWatch { reloads }
}

async fn poll_loop(
    dirs: Vec<PathBuf>,
    start: DirContents,
    interval: Duration,
    tx: mpsc::Sender<Reload>,
) {
    let mut ticker = tokio::time::interval(interval.max(MIN_INTERVAL));
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let dirs = Arc::new(dirs);
    // The contents last loaded, and contents seen once but not yet loaded.
    let mut applied = start;
    let mut pending: Option<DirContents> = None;
    loop {
        tokio::select! {
            () = tx.closed() => break,
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
        if applied == contents {
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
        let reload = match loaded {
            Ok((contents, result)) => {
                let reload = reload(result, &contents);
                applied = contents;
                reload
            }
            Err(e) => {
                tracing::error!(error = %e, "Manifest load failed; will retry.");
                continue;
            }
        };
        if tx.send(reload).await.is_err() {
            break;
        }
    }
    tracing::debug!("Manifest watch stopped: nobody reads its reloads.");
}

/// The reload for a load of `contents`, logged.
fn reload(result: Result<Snapshot, Vec<ManifestError>>, contents: &DirContents) -> Reload {
    match result {
        Ok(snapshot) => {
            for w in &snapshot.warnings {
                tracing::warn!(
                    file = %w.file.display(),
                    document = w.document,
                    field = %w.field,
                    reason = %w.reason,
                    "Manifest accepted with a warning."
                );
            }
            tracing::info!(
                brokers = snapshot.brokers.len(),
                triggers = snapshot.triggers.len(),
                services = snapshot.services.len(),
                "Manifests reloaded."
            );
            Reload::Applied {
                snapshot: Arc::new(snapshot),
                files: contents.files.clone(),
            }
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
            Reload::Rejected { errors }
        }
    }
}

#[cfg(test)]
mod tests;
