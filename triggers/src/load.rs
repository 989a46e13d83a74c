//! Loading a manifest set: reading directories, splitting YAML documents, deserializing each
//! into its typed manifest with the field path of any error, and validating the whole set
//! into a [`Snapshot`].
//!
//! A directory contributes its `*.yaml` and `*.yml` files (not recursive, sorted by name;
//! names starting with `.` are skipped, so Kubernetes ConfigMap volume internals such as
//! `..data` are ignored). A path that is a file is read whatever its extension. Every file may
//! hold any number of documents of any supported kind; empty documents are skipped and not
//! counted. Loading reports every error of the set, not just the first.

use std::collections::HashSet;
use std::fs;
use std::io::Cursor;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde_json::Value;
use serde_path_to_error::{Path as SerdePath, Segment};

use crate::error::{DOCUMENT_FIELD, FILE_FIELD, ManifestError, Origin, join_key};
use crate::manifest::{
    CORE_API_VERSION, DEFAULT_NAMESPACE, EVENTING_API_VERSION, Manifest, SERVING_API_VERSION,
    TIDEGATE_API_VERSION,
};
use crate::snapshot::Snapshot;
use crate::validate;

/// Loads and validates every manifest in `dirs` (directories, or single files).
pub fn load_dirs(dirs: &[PathBuf]) -> Result<Snapshot, Vec<ManifestError>> {
    DirContents::read(dirs).load()
}

/// Loads and validates manifests given as `(file name, YAML text)` pairs, in order.
pub fn load_documents(files: &[(PathBuf, String)]) -> Result<Snapshot, Vec<ManifestError>> {
    let mut parsed = Parsed::default();
    for (file, text) in files {
        parse_file(file, text, &mut parsed);
    }
    let Parsed {
        manifests,
        rejected,
        mut errors,
    } = parsed;
    let (snapshot, validation_errors) = validate::snapshot(&manifests, &rejected);
    errors.extend(validation_errors);
    if errors.is_empty() {
        Ok(snapshot)
    } else {
        Err(dedup(errors))
    }
}

/// What [`load_objects`] made of a set of API objects.
#[derive(Debug)]
pub struct ObjectsLoad {
    /// The snapshot of every object that is valid on its own and with the others.
    pub snapshot: Snapshot,
    /// Why each left-out object was left out (file `{kind} {namespace}/{name}`, document
    /// [`API_OBJECT`](crate::error::API_OBJECT)).
    pub errors: Vec<ManifestError>,
}

/// Loads objects read from the Kubernetes API (each a JSON object with `apiVersion`, `kind`
/// and `metadata`). Unlike a file set, one invalid object does not reject the others: the
/// objects that have errors are left out and the rest is validated again, until what is left
/// is valid (at most once per object).
pub fn load_objects(objects: &[Value]) -> ObjectsLoad {
    let located: Vec<(PathBuf, &Value)> = objects
        .iter()
        .map(|object| (PathBuf::from(object_label(object)), object))
        .collect();
    let mut left_out: HashSet<PathBuf> = HashSet::new();
    let mut errors = Vec::new();
    loop {
        let mut parsed = Parsed::default();
        for (label, object) in &located {
            if left_out.contains(label) {
                continue;
            }
            let origin = Origin::new(label, crate::error::API_OBJECT);
            let declared = declared_object(object);
            match parse_document((*object).clone()) {
                Ok(manifest) => parsed.manifests.push(Located { origin, manifest }),
                Err((field, reason)) => {
                    parsed.rejected.extend(declared);
                    parsed.errors.push(origin.error(field, reason));
                }
            }
        }
        let (snapshot, more) = validate::snapshot(&parsed.manifests, &parsed.rejected);
        let mut round = parsed.errors;
        round.extend(more);
        if round.is_empty() {
            return ObjectsLoad {
                snapshot,
                errors: dedup(errors),
            };
        }
        let before = left_out.len();
        for error in &round {
            left_out.insert(error.file.clone());
        }
        errors.extend(round);
        if left_out.len() == before {
            // An error not tied to one object (cannot happen today): serve nothing new.
            return ObjectsLoad {
                snapshot: Snapshot::default(),
                errors: dedup(errors),
            };
        }
    }
}

/// `{kind} {namespace}/{name}` of an API object, as its errors name it.
pub fn object_label(object: &Value) -> String {
    let field = |path: &[&str]| {
        path.iter()
            .try_fold(object, |v, key| v.get(key))
            .and_then(Value::as_str)
            .unwrap_or("?")
            .to_owned()
    };
    let kind = field(&["kind"]);
    let api_version = field(&["apiVersion"]);
    let group = api_version.split_once('/').map_or("", |(group, _)| group);
    let kind = if group.is_empty() {
        kind
    } else {
        format!("{kind}.{group}")
    };
    let namespace = object
        .get("metadata")
        .and_then(|m| m.get("namespace"))
        .and_then(Value::as_str)
        .unwrap_or(DEFAULT_NAMESPACE);
    format!("{kind} {namespace}/{}", field(&["metadata", "name"]))
}

/// A manifest and where it was found.
#[derive(Debug, Clone)]
pub(crate) struct Located {
    pub(crate) origin: Origin,
    pub(crate) manifest: Manifest,
}

/// `(kind, namespace, name)` of an object.
pub(crate) type ObjectKey = (String, String, String);

/// The documents of a manifest set, deserialized.
#[derive(Debug, Default)]
struct Parsed {
    manifests: Vec<Located>,
    /// Objects whose document was rejected: others referring to them get no second error.
    rejected: HashSet<ObjectKey>,
    errors: Vec<ManifestError>,
}

/// What a set of manifest directories held at one moment, including what could not be read.
///
/// [`DirContents::load`] validates it; a valid set loads again from [`DirContents::files`]
/// alone, through [`load_documents`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DirContents {
    /// `(file, text)` of every manifest file read, in load order.
    pub files: Vec<(PathBuf, String)>,
    /// Paths that could not be read (each with `(file)` as its field).
    pub errors: Vec<ManifestError>,
}

impl DirContents {
    /// Reads every manifest file of `dirs`, in order.
    pub fn read(dirs: &[PathBuf]) -> Self {
        let mut contents = Self::default();
        for dir in dirs {
            contents.read_path(dir);
        }
        contents
    }

    /// Parses and validates what was read; read errors come first.
    pub fn load(&self) -> Result<Snapshot, Vec<ManifestError>> {
        let result = load_documents(&self.files);
        if self.errors.is_empty() {
            return result;
        }
        let mut errors = self.errors.clone();
        if let Err(more) = result {
            errors.extend(more);
        }
        Err(errors)
    }

    fn read_path(&mut self, path: &Path) {
        match fs::metadata(path) {
            Ok(meta) if meta.is_file() => self.read_file(path),
            Ok(_) => self.read_dir(path),
            Err(e) => self.fail(path, format!("cannot read the manifest directory: {e}")),
        }
    }

    fn read_dir(&mut self, dir: &Path) {
        let entries = match fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) => return self.fail(dir, format!("cannot read the manifest directory: {e}")),
        };
        let mut files = Vec::new();
        for entry in entries {
            let path = match entry {
                Ok(entry) => entry.path(),
                Err(e) => {
                    return self.fail(dir, format!("cannot list the manifest directory: {e}"));
                }
            };
            if is_manifest_name(&path) {
                match fs::metadata(&path) {
                    Ok(meta) if meta.is_file() => files.push(path),
                    Ok(_) => {}
                    Err(e) => self.fail(&path, format!("cannot read the file: {e}")),
                }
            }
        }
        files.sort();
        for file in files {
            self.read_file(&file);
        }
    }

    fn read_file(&mut self, file: &Path) {
        match fs::read(file) {
            Ok(bytes) => match String::from_utf8(bytes) {
                Ok(text) => self.files.push((file.to_path_buf(), text)),
                Err(e) => self.fail(file, format!("the file is not valid UTF-8: {e}")),
            },
            Err(e) => self.fail(file, format!("cannot read the file: {e}")),
        }
    }

    fn fail(&mut self, path: &Path, reason: String) {
        self.errors
            .push(Origin::new(path, 0).error(FILE_FIELD, reason));
    }
}

fn is_manifest_name(path: &Path) -> bool {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    !name.starts_with('.') && (name.ends_with(".yaml") || name.ends_with(".yml"))
}

/// Splits `text` into documents and deserializes each; errors are located in `file`.
fn parse_file(file: &Path, text: &str, parsed: &mut Parsed) {
    // `0644` is octal, as in the YAML 1.1 Kubernetes reads (file modes of volumes).
    let options = serde_saphyr::options! { with_snippet: false, legacy_octal_numbers: true };
    let mut reader = Cursor::new(text.as_bytes());
    let documents = serde_saphyr::read_with_options::<_, Value>(&mut reader, options);
    for (index, document) in documents.enumerate() {
        let origin = Origin::new(file, index);
        match document.map_err(|e| (DOCUMENT_FIELD.to_owned(), yaml_reason(&e))) {
            Ok(value) => {
                let declared = declared_object(&value);
                match parse_document(value) {
                    Ok(manifest) => parsed.manifests.push(Located { origin, manifest }),
                    Err((field, reason)) => {
                        parsed.rejected.extend(declared);
                        parsed.errors.push(origin.error(field, reason));
                    }
                }
            }
            Err((field, reason)) => parsed.errors.push(origin.error(field, reason)),
        }
    }
}

/// Reads `apiVersion` and `kind`, then deserializes into the matching typed manifest.
fn parse_document(value: Value) -> Result<Manifest, (String, String)> {
    let Value::Object(object) = &value else {
        return Err((
            DOCUMENT_FIELD.to_owned(),
            format!(
                "expected a mapping with apiVersion and kind, found {}",
                type_name(&value)
            ),
        ));
    };
    let api_version = string_field(object, "apiVersion")?;
    let kind = string_field(object, "kind")?;
    match (api_version.as_str(), kind.as_str()) {
        (EVENTING_API_VERSION, "Broker") => typed(value).map(Manifest::Broker),
        (EVENTING_API_VERSION, "Trigger") => typed(value).map(Manifest::Trigger),
        (TIDEGATE_API_VERSION, "Trigger") => typed(value).map(Manifest::TidegateTrigger),
        (SERVING_API_VERSION, "Service") => typed(value).map(Manifest::Service),
        (CORE_API_VERSION, "ConfigMap") => typed(value).map(Manifest::ConfigMap),
        (CORE_API_VERSION, "Secret") => typed(value)
            .map(Manifest::Secret)
            .map_err(|(field, reason)| (field, redact_values(&reason))),
        (_, "Broker") => Err(unsupported_api_version(
            &api_version,
            &kind,
            EVENTING_API_VERSION,
        )),
        (_, "Trigger") => Err(unsupported_api_version(
            &api_version,
            &kind,
            &format!("{EVENTING_API_VERSION} or {TIDEGATE_API_VERSION}"),
        )),
        (_, "Service") => Err(unsupported_api_version(
            &api_version,
            &kind,
            SERVING_API_VERSION,
        )),
        (_, "ConfigMap" | "Secret") => Err(unsupported_api_version(
            &api_version,
            &kind,
            CORE_API_VERSION,
        )),
        _ => Err((
            "kind".to_owned(),
            format!(
                "unsupported kind {kind:?} (apiVersion {api_version:?}); expected Broker or \
                 Trigger ({EVENTING_API_VERSION}), Trigger ({TIDEGATE_API_VERSION}), Service \
                 ({SERVING_API_VERSION}), ConfigMap or Secret ({CORE_API_VERSION})"
            ),
        )),
    }
}

fn unsupported_api_version(api_version: &str, kind: &str, expected: &str) -> (String, String) {
    (
        "apiVersion".to_owned(),
        format!("unsupported apiVersion {api_version:?} for {kind}; expected {expected}"),
    )
}

/// The kind, namespace and name a document declares, if it reads that far.
fn declared_object(value: &Value) -> Option<ObjectKey> {
    let kind = value.get("kind")?.as_str()?;
    let metadata = value.get("metadata")?;
    let name = metadata.get("name")?.as_str()?;
    let namespace = match metadata.get("namespace") {
        Some(namespace) => namespace.as_str()?,
        None => DEFAULT_NAMESPACE,
    };
    Some((kind.to_owned(), namespace.to_owned(), name.to_owned()))
}

fn string_field(
    object: &serde_json::Map<String, Value>,
    name: &str,
) -> Result<String, (String, String)> {
    match object.get(name) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(other) => Err((
            name.to_owned(),
            format!("expected a string, found {}", type_name(other)),
        )),
        None => Err((name.to_owned(), "required field is missing".to_owned())),
    }
}

/// Deserializes with the path of the failing field, e.g. `spec.filters[1].prefix`.
/// A deserializer's reason with the quoted values (`` `...` ``) it cites removed, for Secrets.
fn redact_values(reason: &str) -> String {
    if !reason.starts_with("invalid") {
        return reason.to_owned(); // unknown or missing field names, no values
    }
    let mut out = String::with_capacity(reason.len());
    let mut quoted = false;
    for c in reason.chars() {
        if c == '`' {
            quoted = !quoted;
            if quoted {
                out.push_str("`<redacted>`");
            }
        } else if !quoted {
            out.push(c);
        }
    }
    out
}

fn typed<T: DeserializeOwned>(value: Value) -> Result<T, (String, String)> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let mut field = field_path(e.path());
        let mut reason = e.inner().to_string();
        if let Some(missing) = backticked(&reason, "missing field `") {
            field = join_key(&field, missing);
            reason = "required field is missing".to_owned();
        } else if reason.contains("expected a string") {
            reason.push_str("; quote the value");
        }
        if field.is_empty() {
            field = DOCUMENT_FIELD.to_owned();
        }
        (field, reason)
    })
}

fn field_path(path: &SerdePath) -> String {
    let mut out = String::new();
    for segment in path.iter() {
        match segment {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } | Segment::Enum { variant: key } => out = join_key(&out, key),
            Segment::Unknown => out = join_key(&out, "?"),
        }
    }
    out
}

/// The text between `prefix` and the next backtick, if `message` starts with `prefix`.
fn backticked<'a>(message: &'a str, prefix: &str) -> Option<&'a str> {
    let rest = message.strip_prefix(prefix)?;
    rest.split_once('`').map(|(name, _)| name)
}

fn yaml_reason(error: &serde_saphyr::Error) -> String {
    let message = error
        .without_snippet()
        .to_string()
        .replace(", set DuplicateKeyPolicy in Options if acceptable", "");
    match error.location() {
        Some(at) if !message.contains(" line ") => {
            format!(
                "invalid YAML: {message} at line {}, column {}",
                at.line(),
                at.column()
            )
        }
        _ => format!("invalid YAML: {message}"),
    }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// Drops repeated errors (a ConfigMap shared by two Brokers reports its problems once).
fn dedup(errors: Vec<ManifestError>) -> Vec<ManifestError> {
    let mut seen = HashSet::new();
    errors
        .into_iter()
        .filter(|e| seen.insert(e.clone()))
        .collect()
}

#[cfg(test)]
mod tests;
