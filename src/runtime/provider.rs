//! Where desired state comes from: a provider yields whole manifest sets, validated by the
//! `triggers` crate into a [`Snapshot`], or the located errors of a set it rejected. The
//! runtime applies every provider's sets through the same applier; nothing in `ingress/`,
//! `dispatch/`, `revision/` or `autoscaler/` knows which provider runs.
//!
//! Two providers: the manifest directories ([`Provider::files`]) and the Kubernetes API
//! ([`Provider::Kubernetes`], fed by `kubernetes::watch`), which turns API objects into the
//! same snapshots.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;

use triggers::{DirContents, ManifestError, ManifestWatch, Reload, Snapshot};

/// One change of the desired state.
#[derive(Debug)]
pub enum Update {
    /// A valid set. `files`: the `(file, text)` pairs it was read from, kept as the last good
    /// copy by the files provider.
    Applied {
        snapshot: Arc<Snapshot>,
        files: Option<Vec<(PathBuf, String)>>,
        /// Errors of objects left out of the snapshot (Kubernetes objects are loaded one by
        /// one: an invalid object does not reject the others).
        left_out: Vec<ManifestError>,
    },
    /// A rejected set, for every one of these reasons; the set served stays.
    Rejected { errors: Vec<ManifestError> },
}

/// A source of desired state.
#[derive(Debug)]
pub enum Provider {
    /// Manifest directories, polled.
    Files(ManifestWatch),
    /// Objects watched on the Kubernetes API.
    Kubernetes(mpsc::Receiver<Update>),
}

impl Provider {
    /// Watches `dirs`, reporting changes from `start` (what they held when the set served was
    /// chosen). Must be called within a Tokio runtime.
    pub fn files(dirs: Vec<PathBuf>, start: DirContents, interval: Duration) -> Self {
        Provider::Files(triggers::watch(dirs, start, interval))
    }

    /// The next change; `None` once the provider has stopped.
    pub async fn next(&mut self) -> Option<Update> {
        match self {
            Provider::Files(watch) => watch.next().await.map(|reload| match reload {
                Reload::Applied { snapshot, files } => Update::Applied {
                    snapshot,
                    files: Some(files),
                    left_out: Vec::new(),
                },
                Reload::Rejected { errors } => Update::Rejected { errors },
            }),
            Provider::Kubernetes(updates) => updates.recv().await,
        }
    }
}

/// What keeps a provider from seeing the current desired state, by source (for `/readyz`):
/// the set served stays while any is listed.
#[derive(Debug, Default)]
pub struct ProviderHealth {
    problems: Mutex<BTreeMap<String, String>>,
}

impl ProviderHealth {
    /// Records (`Some`) or clears (`None`) the problem of `source`.
    pub fn set(&self, source: &str, problem: Option<String>) {
        let mut problems = self
            .problems
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match problem {
            Some(problem) => {
                problems.insert(source.to_owned(), problem);
            }
            None => {
                problems.remove(source);
            }
        }
    }

    /// `(source, problem)` pairs, sorted by source.
    pub fn problems(&self) -> Vec<(String, String)> {
        self.problems
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}
