//! Where desired state comes from: a provider yields whole manifest sets, validated by the
//! `triggers` crate into a [`Snapshot`], or the located errors of a set it rejected. The
//! runtime applies every provider's sets through the same applier; nothing in `ingress/`,
//! `dispatch/`, `revision/` or `autoscaler/` knows which provider runs.
//!
//! Today's provider is the manifest directories ([`Provider::files`]); Kubernetes mode will
//! add one that turns API objects into the same snapshots.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use triggers::{DirContents, ManifestError, ManifestWatch, Reload, Snapshot};

/// One change of the desired state.
#[derive(Debug)]
pub enum Update {
    /// A valid set. `files`: the `(file, text)` pairs it was read from, kept as the last good
    /// copy by the files provider.
    Applied {
        snapshot: Arc<Snapshot>,
        files: Option<Vec<(PathBuf, String)>>,
    },
    /// A rejected set, for every one of these reasons; the set served stays.
    Rejected { errors: Vec<ManifestError> },
}

/// A source of desired state.
#[derive(Debug)]
pub enum Provider {
    /// Manifest directories, polled.
    Files(ManifestWatch),
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
                },
                Reload::Rejected { errors } => Update::Rejected { errors },
            }),
        }
    }
}
