//! Which manifest set is served, and what became of the last load of the manifest directories.
//!
//! [`ManifestStatus`] is the shared view: `/api/v1/manifests` reports it and it keeps the
//! `tidegate_manifest_*` metrics. [`ManifestSets`] is the runtime's side: it chooses the set to
//! serve at start (the directories' when valid, else the persisted last-good copy), numbers
//! each set applied, persists it and records every outcome in the status.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use anyhow::anyhow;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use serde::{Deserialize, Serialize};
use triggers::{DirContents, ManifestError, Snapshot};

use super::last_good::{self, LastGood};
use crate::metrics::{Metrics, ReloadLabels, ReloadOutcome};

/// `GET /api/v1/manifests`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestsReport {
    /// The watched manifest directories (or files), as configured.
    pub sources: Vec<String>,
    /// Number of the set being served; it grows by one each time a set differing from the one
    /// served is applied, and is kept across restarts in the data directory.
    pub generation: u64,
    /// When the set being served was applied from the directories, RFC 3339.
    pub applied_at: Option<String>,
    /// True while the set served is the persisted last-good copy: the directories were
    /// rejected at start and have not loaded since.
    pub from_last_good: bool,
    /// `applied` or `rejected`: the outcome of the last load of the directories.
    pub last_reload: Option<String>,
    /// When that load happened, RFC 3339.
    pub last_reload_at: Option<String>,
    /// Why the last load was rejected; empty when it was applied.
    pub errors: Vec<LocatedError>,
    /// Why the set served could not be persisted as the last good one, when it could not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_good_error: Option<String>,
}

/// A [`ManifestError`] as JSON.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocatedError {
    pub file: String,
    /// 0-based index of the document in the file.
    pub document: usize,
    pub field: String,
    pub reason: String,
}

impl From<&ManifestError> for LocatedError {
    fn from(e: &ManifestError) -> Self {
        Self {
            file: e.file.display().to_string(),
            document: e.document,
            field: e.field.clone(),
            reason: e.reason.clone(),
        }
    }
}

impl std::fmt::Display for LocatedError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} document {}: {}: {}",
            self.file, self.document, self.field, self.reason
        )
    }
}

/// The manifest status shared by the runtime (which writes it) and the admin API.
pub struct ManifestStatus {
    report: Mutex<ManifestsReport>,
    applied: Counter,
    rejected: Counter,
    success: Gauge,
}

impl ManifestStatus {
    pub fn new(sources: &[PathBuf], metrics: &Metrics) -> Self {
        let outcome = |outcome| {
            metrics
                .manifest_reloads
                .get_or_create(&ReloadLabels { outcome })
                .clone()
        };
        Self {
            report: Mutex::new(ManifestsReport {
                sources: sources.iter().map(|s| s.display().to_string()).collect(),
                ..ManifestsReport::default()
            }),
            applied: outcome(ReloadOutcome::Applied),
            rejected: outcome(ReloadOutcome::Rejected),
            success: metrics.manifest_last_reload_success.clone(),
        }
    }

    /// What `/api/v1/manifests` shows.
    pub fn report(&self) -> ManifestsReport {
        self.lock().clone()
    }

    /// A load of the directories passed; `set` is served from now on.
    fn applied(&self, set: &LastGood, at: &str) {
        self.applied.inc();
        self.success.set(1);
        let mut report = self.lock();
        report.generation = set.generation;
        report.applied_at = Some(set.applied_at.clone());
        report.from_last_good = false;
        report.last_reload = Some(ReloadOutcome::Applied.as_str().to_owned());
        report.last_reload_at = Some(at.to_owned());
        report.errors.clear();
    }

    /// A snapshot built from Kubernetes objects is served; `left_out` are the objects' errors
    /// that kept them out of it (the other objects are served). `changed`: it differs from
    /// the set served before.
    pub fn objects_loaded(&self, left_out: &[ManifestError], changed: bool, at: &str) {
        self.applied.inc();
        self.success.set(i64::from(left_out.is_empty()));
        let mut report = self.lock();
        if changed {
            report.generation += 1;
            report.applied_at = Some(at.to_owned());
        }
        report.from_last_good = false;
        report.last_reload = Some(ReloadOutcome::Applied.as_str().to_owned());
        report.last_reload_at = Some(at.to_owned());
        report.errors = left_out.iter().map(LocatedError::from).collect();
    }

    /// The persisted copy `set` is served (not a load of the directories).
    fn restored(&self, set: &LastGood) {
        let mut report = self.lock();
        report.generation = set.generation;
        report.applied_at = Some(set.applied_at.clone());
        report.from_last_good = true;
    }

    /// A load of the directories was rejected; the set served stays.
    fn rejected(&self, errors: &[ManifestError], at: &str) {
        self.rejected.inc();
        self.success.set(0);
        let mut report = self.lock();
        report.last_reload = Some(ReloadOutcome::Rejected.as_str().to_owned());
        report.last_reload_at = Some(at.to_owned());
        report.errors = errors.iter().map(LocatedError::from).collect();
    }

    fn persisted(&self, error: Option<String>) {
        self.lock().last_good_error = error;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ManifestsReport> {
        self.report.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The runtime's bookkeeping of manifest sets: start-up choice, numbering, persistence, status.
pub struct ManifestSets {
    sources: Vec<PathBuf>,
    data_dir: PathBuf,
    status: Arc<ManifestStatus>,
    /// The set served, once chosen.
    serving: Option<Arc<LastGood>>,
    /// Whether `serving` still has to be written (not when it was read from the data directory).
    unsaved: bool,
}

impl ManifestSets {
    pub fn new(sources: Vec<PathBuf>, data_dir: PathBuf, status: Arc<ManifestStatus>) -> Self {
        Self {
            sources,
            data_dir,
            status,
            serving: None,
            unsaved: false,
        }
    }

    /// Chooses the set to serve at start from what the directories hold (`contents`): theirs
    /// when valid, else the last good set persisted for the same directories, loudly. Fails
    /// with every located error when neither can be served. Call [`ManifestSets::persist`]
    /// once the data directory is open.
    pub fn start(&mut self, contents: &DirContents) -> anyhow::Result<Snapshot> {
        let persisted = last_good::read(&self.data_dir);
        let now = now();
        match contents.load() {
            Ok(snapshot) => {
                let generation = match &persisted {
                    Ok(Some(set)) if set.is_set(&self.sources, &contents.files) => set.generation,
                    Ok(Some(set)) => set.generation + 1,
                    Ok(None) => 1,
                    Err(reason) => {
                        tracing::warn!(%reason, "Ignoring the persisted last-good manifest set; replacing it.");
                        1
                    }
                };
                let set = LastGood::new(generation, now.clone(), &self.sources, &contents.files);
                self.status.applied(&set, &now);
                self.serving = Some(Arc::new(set));
                self.unsaved = true;
                Ok(snapshot)
            }
            Err(errors) => {
                log_rejected(&errors);
                let fallback = match persisted {
                    Ok(Some(set)) if set.is_from(&self.sources) => match set.load() {
                        Ok(snapshot) => Ok((set, snapshot)),
                        Err(more) => Err(format!(
                            "the last good set in {} is rejected too:\n{}",
                            last_good::path(&self.data_dir).display(),
                            indented(&more)
                        )),
                    },
                    Ok(Some(set)) => Err(format!(
                        "the last good set in {} was read from {} instead",
                        last_good::path(&self.data_dir).display(),
                        set.sources.join(", ")
                    )),
                    Ok(None) => Err(format!(
                        "no last good set in {} to fall back on",
                        last_good::path(&self.data_dir).display()
                    )),
                    Err(reason) => Err(reason),
                };
                match fallback {
                    Ok((set, snapshot)) => {
                        tracing::error!(
                            errors = errors.len(),
                            generation = set.generation,
                            applied_at = %set.applied_at,
                            last_good = %last_good::path(&self.data_dir).display(),
                            "The manifest directories are rejected; serving the last good set \
                             persisted from them. They stay watched and apply once valid."
                        );
                        self.status.restored(&set);
                        self.status.rejected(&errors, &now);
                        self.serving = Some(Arc::new(set));
                        self.unsaved = false;
                        Ok(snapshot)
                    }
                    Err(why) => Err(anyhow!(
                        "{} manifest error(s):\n{}\n{why}",
                        errors.len(),
                        indented(&errors)
                    )),
                }
            }
        }
    }

    /// A reload of the directories applied `files`: numbers the set (the files of the set
    /// served again, say after a rejected edit was reverted, keep its number), persists it,
    /// records it.
    pub async fn applied(&mut self, files: Vec<(PathBuf, String)>) {
        let now = now();
        let generation = match &self.serving {
            Some(set) if set.is_set(&self.sources, &files) => set.generation,
            Some(set) => set.generation + 1,
            None => 1,
        };
        self.serving = Some(Arc::new(LastGood::new(
            generation,
            now.clone(),
            &self.sources,
            &files,
        )));
        self.unsaved = true;
        self.persist().await;
        if let Some(set) = &self.serving {
            self.status.applied(set, &now);
        }
    }

    /// A reload of the directories was rejected (already logged by the watch).
    pub fn rejected(&self, errors: &[ManifestError]) {
        self.status.rejected(errors, &now());
    }

    /// Writes the set served as the last good one unless that is where it came from; a
    /// failure is logged and reported in the status.
    pub async fn persist(&mut self) {
        let Some(set) = self.serving.clone().filter(|_| self.unsaved) else {
            return;
        };
        let data_dir = self.data_dir.clone();
        let written = tokio::task::spawn_blocking(move || last_good::write(&data_dir, &set))
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string()));
        self.unsaved = written.is_err();
        let error = written.err().map(|e| {
            let path = last_good::path(&self.data_dir);
            tracing::error!(path = %path.display(), error = %e, "Cannot persist the last good manifest set; a restart with invalid manifests would not start.");
            format!("cannot write {}: {e}", path.display())
        });
        self.status.persisted(error);
    }
}

pub(crate) fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn log_rejected(errors: &[ManifestError]) {
    for e in errors {
        tracing::error!(file = %e.file.display(), document = e.document, field = %e.field, reason = %e.reason, "Manifest rejected.");
    }
}

fn indented(errors: &[ManifestError]) -> String {
    errors
        .iter()
        .map(|e| format!("  {e}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests;
