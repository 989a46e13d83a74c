//! The last good manifest set, persisted in the data directory so that a restart can serve it
//! while the manifest directories hold an invalid set.
//!
//! `manifests.last-good.json` holds the `(file, text)` pairs of the set as they were read, so
//! loading it runs exactly the validation the directories get. It is replaced atomically:
//! written to a temporary file, fsynced, renamed over the old one, then the directory fsynced.

use std::fs;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use triggers::{ManifestError, Snapshot};

/// The file's name in the data directory.
pub const FILE_NAME: &str = "manifests.last-good.json";

/// The layout written, and the only one read.
const FORMAT: u32 = 1;

/// A manifest set that was applied, with where and when it came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastGood {
    /// Layout of the file ([`FORMAT`]).
    pub format: u32,
    /// Number of the set: one more than the set it replaced, unless their files are the same.
    pub generation: u64,
    /// When the set was applied from the manifest directories, RFC 3339.
    pub applied_at: String,
    /// The manifest directories (or files) it was read from, as configured.
    pub sources: Vec<String>,
    /// Every manifest file of the set, in load order.
    pub files: Vec<ManifestFile>,
}

/// One manifest file of a persisted set.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestFile {
    /// The path it was read from (errors and warnings are located there).
    pub file: String,
    /// Its YAML text.
    pub text: String,
}

impl LastGood {
    pub fn new(
        generation: u64,
        applied_at: String,
        sources: &[PathBuf],
        files: &[(PathBuf, String)],
    ) -> Self {
        Self {
            format: FORMAT,
            generation,
            applied_at,
            sources: source_names(sources),
            files: files
                .iter()
                .map(|(file, text)| ManifestFile {
                    file: file.to_string_lossy().into_owned(),
                    text: text.clone(),
                })
                .collect(),
        }
    }

    /// Whether this set was read from `sources`.
    pub fn is_from(&self, sources: &[PathBuf]) -> bool {
        self.sources == source_names(sources)
    }

    /// Whether this is the set `files` read from `sources`.
    pub fn is_set(&self, sources: &[PathBuf], files: &[(PathBuf, String)]) -> bool {
        self.is_from(sources) && self.files == Self::new(0, String::new(), sources, files).files
    }

    /// Validates the set again, exactly as the manifest directories are validated.
    pub fn load(&self) -> Result<Snapshot, Vec<ManifestError>> {
        let files: Vec<(PathBuf, String)> = self
            .files
            .iter()
            .map(|f| (PathBuf::from(&f.file), f.text.clone()))
            .collect();
        triggers::load_documents(&files)
    }
}

fn source_names(sources: &[PathBuf]) -> Vec<String> {
    sources
        .iter()
        .map(|s| s.to_string_lossy().into_owned())
        .collect()
}

/// The file's path in `data_dir`.
pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join(FILE_NAME)
}

/// The set persisted in `data_dir`, if any; an error says why the file cannot be used.
pub fn read(data_dir: &Path) -> Result<Option<LastGood>, String> {
    let path = path(data_dir);
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let set: LastGood = serde_json::from_slice(&bytes)
        .map_err(|e| format!("cannot parse {}: {e}", path.display()))?;
    if set.format != FORMAT {
        return Err(format!(
            "{} has format {}; this build reads format {FORMAT}",
            path.display(),
            set.format
        ));
    }
    Ok(Some(set))
}

/// Replaces the set persisted in `data_dir` with `set`, atomically and durably.
pub fn write(data_dir: &Path, set: &LastGood) -> io::Result<()> {
    fs::create_dir_all(data_dir)?;
    let bytes = serde_json::to_vec_pretty(set).map_err(io::Error::other)?;
    let path = path(data_dir);
    let tmp = data_dir.join(format!("{FILE_NAME}.tmp"));
    // The set may hold Secrets: readable by the gateway's user only.
    let mut file = {
        use std::os::unix::fs::OpenOptionsExt as _;
        fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?
    };
    file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    file.write_all(&bytes)?;
    file.sync_all()?;
    drop(file);
    fs::rename(&tmp, &path)?;
    // The rename is durable once the directory entry is.
    fs::File::open(data_dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    const BROKER: &str =
        "apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata: {name: default}\n";

    fn set(generation: u64) -> LastGood {
        LastGood::new(
            generation,
            "2025-01-02T03:04:05.000Z".to_owned(),
            &[PathBuf::from("deploy/local")],
            &[(PathBuf::from("deploy/local/b.yaml"), BROKER.to_owned())],
        )
    }

    #[test]
    fn round_trips_and_loads_with_the_same_validation() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(read(dir.path()), Ok(None));
        write(dir.path(), &set(1)).unwrap_or_else(|e| panic!("{e}"));
        write(dir.path(), &set(2)).unwrap_or_else(|e| panic!("{e}"));
        let mode = {
            use std::os::unix::fs::PermissionsExt as _;
            fs::metadata(path(dir.path())).map(|m| m.permissions().mode() & 0o777)
        };
        assert_eq!(mode.ok(), Some(0o600), "the set may hold Secrets");
        let back = read(dir.path())
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("persisted"));
        assert_eq!(back, set(2));
        let snapshot = back.load().unwrap_or_else(|e| panic!("{e:#?}"));
        assert_eq!(snapshot.brokers.len(), 1);
        assert!(!dir.path().join(format!("{FILE_NAME}.tmp")).exists());

        let mut bad = set(3);
        bad.files[0]
            .text
            .push_str("spec: {delivery: {retry: -1}}\n");
        let errors = bad.load().err().unwrap_or_else(|| panic!("rejected"));
        assert_eq!(errors[0].file, PathBuf::from("deploy/local/b.yaml"));
    }

    #[test]
    fn knows_its_sources_and_files() {
        let s = set(1);
        let sources = [PathBuf::from("deploy/local")];
        let files = [(PathBuf::from("deploy/local/b.yaml"), BROKER.to_owned())];
        assert!(s.is_from(&sources));
        assert!(s.is_set(&sources, &files));
        assert!(!s.is_from(&[PathBuf::from("elsewhere")]));
        let changed = [(
            PathBuf::from("deploy/local/b.yaml"),
            format!("# x\n{BROKER}"),
        )];
        assert!(!s.is_set(&sources, &changed));
    }

    #[test]
    fn refuses_an_unreadable_or_unknown_file() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        fs::write(path(dir.path()), "{not json").unwrap_or_else(|e| panic!("{e}"));
        assert!(read(dir.path()).is_err_and(|e| e.contains("cannot parse")));
        let mut future = set(1);
        future.format = 2;
        fs::write(
            path(dir.path()),
            serde_json::to_vec(&future).unwrap_or_else(|e| panic!("{e}")),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(read(dir.path()).is_err_and(|e| e.contains("format 2")));
    }
}
