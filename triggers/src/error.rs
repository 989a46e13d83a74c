//! Located diagnostics: every rejection and warning names the file, the document, the field
//! path and the reason.

use std::fmt;
use std::path::{Path, PathBuf};

/// Field name used for problems with a whole document (YAML syntax, not a mapping).
pub const DOCUMENT_FIELD: &str = "(document)";
/// Field name used for problems with a whole file or directory (unreadable, not UTF-8).
pub const FILE_FIELD: &str = "(file)";

/// `document` of a problem with an object read from the Kubernetes API: `file` is then
/// `{kind} {namespace}/{name}` and the problem displays as `{kind} {namespace}/{name}
/// {field}: {reason}`.
pub const API_OBJECT: usize = usize::MAX;

/// Why a manifest set was rejected, located precisely enough to fix it.
///
/// Displays as `{file} document {document}: {field}: {reason}`, or for an API object
/// ([`API_OBJECT`]) as `{kind} {namespace}/{name} {field}: {reason}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, thiserror::Error)]
#[error("{}", located(file, *document, field, reason))]
pub struct ManifestError {
    /// The manifest file (or the directory, when it could not be read).
    pub file: PathBuf,
    /// 0-based index of the document in the file, counting non-empty documents only.
    pub document: usize,
    /// Field path such as `spec.filters[1].prefix`; `(document)` or `(file)` when the problem
    /// is not one field.
    pub field: String,
    /// What is wrong, in words a user can act on.
    pub reason: String,
}

/// Something accepted but probably not what the author meant; located like [`ManifestError`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ManifestWarning {
    /// The manifest file.
    pub file: PathBuf,
    /// 0-based index of the document in the file, counting non-empty documents only.
    pub document: usize,
    /// Field path such as `spec.broker`.
    pub field: String,
    /// What was noticed and what tidegate does about it.
    pub reason: String,
}

impl fmt::Display for ManifestWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&located(
            &self.file,
            self.document,
            &self.field,
            &self.reason,
        ))
    }
}

fn located(file: &Path, document: usize, field: &str, reason: &str) -> String {
    if document == API_OBJECT {
        format!("{} {field}: {reason}", file.display())
    } else {
        format!("{} document {document}: {field}: {reason}", file.display())
    }
}

/// Where a document came from: its file and 0-based index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Origin {
    pub(crate) file: PathBuf,
    pub(crate) document: usize,
}

impl Origin {
    pub(crate) fn new(file: &Path, document: usize) -> Self {
        Self {
            file: file.to_path_buf(),
            document,
        }
    }

    /// Where the document is, for a message naming it: `file document N`, or for an API
    /// object its `{kind} {namespace}/{name}`.
    pub(crate) fn describe(&self) -> String {
        if self.document == API_OBJECT {
            self.file.display().to_string()
        } else {
            format!("{} document {}", self.file.display(), self.document)
        }
    }

    pub(crate) fn error(
        &self,
        field: impl Into<String>,
        reason: impl Into<String>,
    ) -> ManifestError {
        ManifestError {
            file: self.file.clone(),
            document: self.document,
            field: field.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn warning(
        &self,
        field: impl Into<String>,
        reason: impl Into<String>,
    ) -> ManifestWarning {
        ManifestWarning {
            file: self.file.clone(),
            document: self.document,
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// Appends a map key to a field path: `data` + `url` is `data.url`, while keys that are not
/// plain words are quoted: `data` + `bootstrap.servers` is `data["bootstrap.servers"]`.
pub(crate) fn join_key(path: &str, key: &str) -> String {
    let plain = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    match (path.is_empty(), plain) {
        (true, true) => key.to_owned(),
        (false, true) => format!("{path}.{key}"),
        (_, false) => format!("{path}[{key:?}]"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displays_location_then_reason() {
        let error = Origin::new(Path::new("deploy/a.yaml"), 2).error("spec.retry", "bad");
        assert_eq!(
            error.to_string(),
            "deploy/a.yaml document 2: spec.retry: bad"
        );
        let warning = Origin::new(Path::new("a.yaml"), 0).warning("spec.broker", "missing");
        assert_eq!(
            warning.to_string(),
            "a.yaml document 0: spec.broker: missing"
        );
    }

    #[test]
    fn quotes_keys_that_are_not_words() {
        assert_eq!(join_key("", "spec"), "spec");
        assert_eq!(join_key("data", "url"), "data.url");
        assert_eq!(
            join_key("data", "bootstrap.servers"),
            "data[\"bootstrap.servers\"]"
        );
        assert_eq!(
            join_key("metadata.annotations", "tidegate.dev/max-in-flight"),
            "metadata.annotations[\"tidegate.dev/max-in-flight\"]"
        );
    }
}
