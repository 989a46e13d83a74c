//! The CloudEvent type: context attributes, data, strict validation and the compact storage
//! encoding used by the embedded broker.
//!
//! Validation follows the CloudEvents 1.0 (and 0.3) type system: every attribute that enters an
//! event through [`CloudEvent::set_attribute`], a decoder or [`CloudEvent::decode_storage`] is
//! checked, so an event read back from any of them is valid.

mod batch;
mod storage;
#[cfg(test)]
pub(crate) mod tests;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use bytes::Bytes;

pub use batch::EventBatch;

/// Knative Eventing's broker extensions, shared by ingress and delivery.
pub mod knative {
    /// `knativebrokerttl` given to events that arrive without one.
    pub const DEFAULT_BROKER_TTL: i64 = 255;
    /// Extension carrying the remaining hops of an event through brokers.
    pub const TTL_EXTENSION: &str = "knativebrokerttl";
    /// Extension recording when the broker accepted an event.
    pub const ARRIVAL_EXTENSION: &str = "knativearrivaltime";

    /// Now, in the format of `knativearrivaltime` (RFC 3339, UTC, microseconds).
    pub fn now_rfc3339() -> String {
        chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
    }
}

/// The CloudEvents specification version an event follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SpecVersion {
    /// CloudEvents 0.3.
    V03,
    /// CloudEvents 1.0.
    V10,
}

impl SpecVersion {
    /// The value of the `specversion` attribute: `"0.3"` or `"1.0"`.
    pub fn as_str(self) -> &'static str {
        match self {
            SpecVersion::V03 => "0.3",
            SpecVersion::V10 => "1.0",
        }
    }

    /// Parses a `specversion` value; anything but `1.0` and `0.3` is rejected.
    pub fn parse(value: &str) -> Result<SpecVersion, EventError> {
        match value {
            "1.0" => Ok(SpecVersion::V10),
            "0.3" => Ok(SpecVersion::V03),
            "" => Err(EventError::invalid("specversion", "must not be empty")),
            other => Err(EventError::invalid(
                "specversion",
                format!("unsupported version {other:?}; this broker accepts \"1.0\" and \"0.3\""),
            )),
        }
    }
}

impl fmt::Display for SpecVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The value of a context attribute, typed as in the CloudEvents type system.
///
/// URI, URI-reference and Timestamp attributes are kept as strings in their original form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttrValue {
    /// A string (also URIs, timestamps and media types).
    String(String),
    /// An integer; CloudEvents restricts integers to the signed 32-bit range.
    Integer(i64),
    /// A boolean.
    Boolean(bool),
}

impl AttrValue {
    /// The string, when this is a string value.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            AttrValue::String(s) => Some(s),
            _ => None,
        }
    }

    fn type_name(&self) -> &'static str {
        match self {
            AttrValue::String(_) => "a string",
            AttrValue::Integer(_) => "an integer",
            AttrValue::Boolean(_) => "a boolean",
        }
    }
}

/// The canonical string form (as used in HTTP headers).
impl fmt::Display for AttrValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AttrValue::String(s) => f.write_str(s),
            AttrValue::Integer(i) => write!(f, "{i}"),
            AttrValue::Boolean(b) => write!(f, "{b}"),
        }
    }
}

impl From<&str> for AttrValue {
    fn from(value: &str) -> Self {
        AttrValue::String(value.to_owned())
    }
}

impl From<String> for AttrValue {
    fn from(value: String) -> Self {
        AttrValue::String(value)
    }
}

impl From<i32> for AttrValue {
    fn from(value: i32) -> Self {
        AttrValue::Integer(value.into())
    }
}

impl From<bool> for AttrValue {
    fn from(value: bool) -> Self {
        AttrValue::Boolean(value)
    }
}

/// Why an event was rejected: the offending field and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct EventError {
    /// Which HTTP status class the error maps to.
    pub kind: EventErrorKind,
    /// The attribute name, or `data`, `data_base64`, `body`, `content-type`, `specversion`;
    /// prefixed with `[i].` for the i-th event of a batch.
    pub field: String,
    /// What is wrong, phrased so that the sender can fix it.
    pub reason: String,
}

/// The class of an [`EventError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventErrorKind {
    /// The request or event is malformed (HTTP 400).
    Invalid,
    /// The request uses an event format this broker does not speak (HTTP 415).
    UnsupportedMediaType,
}

impl EventError {
    /// An [`EventErrorKind::Invalid`] error.
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> EventError {
        EventError {
            kind: EventErrorKind::Invalid,
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// An [`EventErrorKind::UnsupportedMediaType`] error.
    pub fn unsupported_media_type(
        field: impl Into<String>,
        reason: impl Into<String>,
    ) -> EventError {
        EventError {
            kind: EventErrorKind::UnsupportedMediaType,
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// The HTTP status this error should be answered with (400 or 415).
    pub fn http_status(&self) -> http::StatusCode {
        match self.kind {
            EventErrorKind::Invalid => http::StatusCode::BAD_REQUEST,
            EventErrorKind::UnsupportedMediaType => http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
        }
    }

    /// Prefixes the field, e.g. with `[3].` for the fourth event of a batch.
    pub(crate) fn prefixed(mut self, prefix: &str) -> EventError {
        self.field = if self.field.is_empty() {
            prefix.trim_end_matches('.').to_owned()
        } else {
            format!("{prefix}{}", self.field)
        };
        self
    }
}

/// A CloudEvent: its spec version, context attributes and optional data.
///
/// Attributes (everything but `specversion`) live in one sorted map, extensions included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloudEvent {
    spec: SpecVersion,
    attributes: BTreeMap<String, AttrValue>,
    data: Option<Bytes>,
}

impl CloudEvent {
    /// A new event with the three required attributes besides `specversion`.
    ///
    /// The values are not checked here (this cannot fail); use [`CloudEvent::validate`] on events
    /// built by hand. Events from decoders are always valid.
    pub fn new(
        spec: SpecVersion,
        id: impl Into<String>,
        source: impl Into<String>,
        ty: impl Into<String>,
    ) -> Self {
        let mut attributes = BTreeMap::new();
        attributes.insert("id".to_owned(), AttrValue::String(id.into()));
        attributes.insert("source".to_owned(), AttrValue::String(source.into()));
        attributes.insert("type".to_owned(), AttrValue::String(ty.into()));
        CloudEvent {
            spec,
            attributes,
            data: None,
        }
    }

    /// An event with no attributes yet; decoders fill it and then call
    /// [`CloudEvent::check_required`].
    pub(crate) fn empty(spec: SpecVersion) -> Self {
        CloudEvent {
            spec,
            attributes: BTreeMap::new(),
            data: None,
        }
    }

    pub fn spec_version(&self) -> SpecVersion {
        self.spec
    }

    pub fn id(&self) -> &str {
        self.string_attribute("id")
    }

    pub fn source(&self) -> &str {
        self.string_attribute("source")
    }

    /// The `type` attribute.
    pub fn ty(&self) -> &str {
        self.string_attribute("type")
    }

    fn string_attribute(&self, name: &str) -> &str {
        match self.attributes.get(name) {
            Some(AttrValue::String(s)) => s,
            _ => "",
        }
    }

    /// Any attribute in its canonical string form, `specversion` included. Strings are borrowed,
    /// so filtering on them does not allocate.
    pub fn attribute(&self, name: &str) -> Option<Cow<'_, str>> {
        if name == "specversion" {
            return Some(Cow::Borrowed(self.spec.as_str()));
        }
        match self.attributes.get(name)? {
            AttrValue::String(s) => Some(Cow::Borrowed(s)),
            other => Some(Cow::Owned(other.to_string())),
        }
    }

    /// The typed value of an attribute (not `specversion`).
    pub fn attribute_value(&self, name: &str) -> Option<&AttrValue> {
        self.attributes.get(name)
    }

    /// All attributes except `specversion`, sorted by name.
    pub fn attributes(&self) -> impl Iterator<Item = (&str, &AttrValue)> {
        self.attributes.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Sets an attribute after checking its name, type and value for this spec version.
    ///
    /// `specversion` is fixed at creation and `data` is not an attribute; both are rejected.
    pub fn set_attribute(&mut self, name: &str, value: AttrValue) -> Result<(), EventError> {
        check_attribute(self.spec, name, &value)?;
        self.attributes.insert(name.to_owned(), value);
        Ok(())
    }

    /// Removes an attribute; the required ones (`id`, `source`, `type`) cannot be removed.
    pub fn remove_attribute(&mut self, name: &str) -> Option<AttrValue> {
        if REQUIRED.contains(&name) {
            return None;
        }
        self.attributes.remove(name)
    }

    pub fn data(&self) -> Option<&Bytes> {
        self.data.as_ref()
    }

    /// Replaces the data and its media type; `None` removes `datacontenttype`.
    pub fn set_data(
        &mut self,
        content_type: Option<String>,
        data: Bytes,
    ) -> Result<(), EventError> {
        match content_type {
            Some(ct) => self.set_attribute("datacontenttype", AttrValue::String(ct))?,
            None => {
                self.attributes.remove("datacontenttype");
            }
        }
        self.data = Some(data);
        Ok(())
    }

    /// Removes the data, keeping `datacontenttype`.
    pub fn clear_data(&mut self) -> Option<Bytes> {
        self.data.take()
    }

    pub(crate) fn set_data_only(&mut self, data: Option<Bytes>) {
        self.data = data;
    }

    pub fn datacontenttype(&self) -> Option<&str> {
        self.attributes
            .get("datacontenttype")
            .and_then(AttrValue::as_str)
    }

    /// Checks the whole event: required attributes present and every attribute valid.
    pub fn validate(&self) -> Result<(), EventError> {
        self.check_required()?;
        for (name, value) in &self.attributes {
            check_attribute(self.spec, name, value)?;
        }
        Ok(())
    }

    /// Checks that `id`, `source` and `type` are present (their values were checked on entry).
    pub(crate) fn check_required(&self) -> Result<(), EventError> {
        for name in REQUIRED {
            if !self.attributes.contains_key(name) {
                return Err(EventError::invalid(name, "required attribute is missing"));
            }
        }
        Ok(())
    }

    /// The exact size of [`CloudEvent::encode_storage`]'s output, computed without encoding.
    pub fn encoded_len(&self) -> usize {
        storage::encoded_len(self)
    }

    /// Appends the compact, versioned storage encoding of this event to `out`.
    pub fn encode_storage(&self, out: &mut Vec<u8>) {
        storage::encode(self, out);
    }

    /// Decodes (and fully validates) an event written by [`CloudEvent::encode_storage`].
    pub fn decode_storage(bytes: &[u8]) -> Result<CloudEvent, EventError> {
        storage::decode(bytes)
    }
}

const REQUIRED: [&str; 3] = ["id", "source", "type"];

/// Checks one attribute for `spec`: its name, its type and, for the known ones, its value.
pub(crate) fn check_attribute(
    spec: SpecVersion,
    name: &str,
    value: &AttrValue,
) -> Result<(), EventError> {
    if name == "specversion" {
        return Err(EventError::invalid(
            name,
            "specversion is fixed when the event is created",
        ));
    }
    if name == "data" {
        return Err(EventError::invalid(
            name,
            "\"data\" is reserved for the event payload and cannot be an attribute",
        ));
    }
    if !is_valid_name(name) {
        return Err(EventError::invalid(
            name,
            "attribute names must consist of lowercase ASCII letters and digits only",
        ));
    }
    if let AttrValue::String(s) = value {
        check_string(s).map_err(|reason| EventError::invalid(name, reason))?;
    }
    let fail = |reason: &str| EventError::invalid(name, reason);
    match (spec, name) {
        (_, "id" | "type" | "subject") => non_empty(expect_string(name, value)?).map_err(fail),
        (_, "source") | (SpecVersion::V03, "schemaurl") => {
            check_uri_reference(expect_string(name, value)?).map_err(fail)
        }
        (_, "time") => check_time(expect_string(name, value)?).map_err(fail),
        (_, "datacontenttype") => check_media_type(expect_string(name, value)?).map_err(fail),
        (SpecVersion::V10, "dataschema") => {
            check_absolute_uri(expect_string(name, value)?).map_err(fail)
        }
        (SpecVersion::V03, "datacontentencoding") => Err(fail(
            "datacontentencoding is applied by the event format; store the decoded data instead",
        )),
        _ => check_extension(name, value),
    }
}

fn expect_string<'a>(name: &str, value: &'a AttrValue) -> Result<&'a str, EventError> {
    value.as_str().ok_or_else(|| {
        EventError::invalid(name, format!("must be a string, not {}", value.type_name()))
    })
}

fn check_extension(name: &str, value: &AttrValue) -> Result<(), EventError> {
    match value {
        AttrValue::Integer(i) if i32::try_from(*i).is_err() => Err(EventError::invalid(
            name,
            format!("integer {i} is outside the CloudEvents range of a signed 32-bit integer"),
        )),
        _ => Ok(()),
    }
}

/// `[a-z0-9]+`.
pub(crate) fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// The CloudEvents String type disallows control characters (U+0000–U+001F, U+007F–U+009F) and
/// Unicode noncharacters.
fn check_string(s: &str) -> Result<(), String> {
    match s.chars().find(|&c| is_disallowed_char(c)) {
        None => Ok(()),
        Some(c) => Err(format!(
            "contains the disallowed character U+{:04X} (control characters and Unicode \
             noncharacters are not allowed in CloudEvents strings)",
            u32::from(c)
        )),
    }
}

fn is_disallowed_char(c: char) -> bool {
    let cp = u32::from(c);
    cp <= 0x1F
        || (0x7F..=0x9F).contains(&cp)
        || (0xFDD0..=0xFDEF).contains(&cp)
        || (cp & 0xFFFE) == 0xFFFE
}

fn non_empty(s: &str) -> Result<(), &'static str> {
    if s.is_empty() {
        Err("must not be empty")
    } else {
        Ok(())
    }
}

/// A reasonable URI-reference check: non-empty, no whitespace or control characters.
fn check_uri_reference(s: &str) -> Result<(), &'static str> {
    non_empty(s)?;
    if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("must be a URI-reference without whitespace");
    }
    Ok(())
}

/// A URI-reference that starts with a scheme (`[A-Za-z][A-Za-z0-9+.-]*:`).
fn check_absolute_uri(s: &str) -> Result<(), &'static str> {
    check_uri_reference(s)?;
    let scheme_ok = s.split_once(':').is_some_and(|(scheme, _)| {
        let mut bytes = scheme.bytes();
        bytes.next().is_some_and(|b| b.is_ascii_alphabetic())
            && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
    });
    if scheme_ok {
        Ok(())
    } else {
        Err("must be an absolute URI with a scheme, e.g. https://example.com/schema")
    }
}

fn check_time(s: &str) -> Result<(), &'static str> {
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|_| ())
        .map_err(|_| "must be an RFC 3339 timestamp, e.g. 2024-05-01T12:00:00Z")
}

/// RFC 2046-ish: `type/subtype` made of RFC 7230 token characters, optionally followed by
/// `;`-separated parameters in printable ASCII.
fn check_media_type(s: &str) -> Result<(), &'static str> {
    const MSG: &str = "must be a media type such as application/json or text/plain; charset=utf-8";
    let (essence, params) = s.split_once(';').unwrap_or((s, ""));
    let (ty, subtype) = essence.trim().split_once('/').ok_or(MSG)?;
    let is_token = |t: &str| !t.is_empty() && t.bytes().all(is_tchar);
    if !is_token(ty) || !is_token(subtype) {
        return Err(MSG);
    }
    if params
        .bytes()
        .any(|b| !(b == b' ' || b == b'\t' || b.is_ascii_graphic()))
    {
        return Err("media type parameters must be printable ASCII");
    }
    Ok(())
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Whether a media type declares JSON content: `*/json` or `*/*+json`, parameters ignored.
pub(crate) fn is_json_media_type(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or("").trim();
    let Some((_, subtype)) = essence.split_once('/') else {
        return false;
    };
    let subtype = subtype.as_bytes();
    subtype.eq_ignore_ascii_case(b"json")
        || (subtype.len() > 5 && subtype[subtype.len() - 5..].eq_ignore_ascii_case(b"+json"))
}
