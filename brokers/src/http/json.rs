//! The JSON event format and JSON batch format.
//!
//! Request bodies are parsed into a list of members with their raw JSON text, which lets us
//! reject duplicate attribute names (serde_json's maps keep the last one silently) and store
//! `data` as its own compact JSON text, member order and number precision preserved.

use std::borrow::Cow;

use base64::Engine as _;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use bytes::Bytes;
use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::event::{AttrValue, CloudEvent, EventError, SpecVersion, is_json_media_type};

/// Converts an event to its JSON format representation.
pub fn to_json_value(event: &CloudEvent) -> Value {
    let mut map = Map::new();
    map.insert(
        "specversion".to_owned(),
        Value::String(event.spec_version().as_str().to_owned()),
    );
    for (name, value) in event.attributes() {
        map.insert(name.to_owned(), attr_to_json(value));
    }
    match classify_data(event) {
        DataRepr::None => {}
        DataRepr::Json(raw) => match serde_json::from_str(raw.get()) {
            Ok(value) => {
                map.insert("data".to_owned(), value);
            }
            // Valid JSON that serde_json cannot hold as a Value (e.g. 1e400): keep the bytes.
            Err(_) => {
                let encoded = STANDARD.encode(raw.get());
                for (name, value) in base64_members(event.spec_version(), encoded) {
                    map.insert(name.to_owned(), Value::String(value));
                }
            }
        },
        DataRepr::Text(text) => {
            map.insert("data".to_owned(), Value::String(text.to_owned()));
        }
        DataRepr::Base64(encoded) => {
            for (name, value) in base64_members(event.spec_version(), encoded) {
                map.insert(name.to_owned(), Value::String(value));
            }
        }
    }
    Value::Object(map)
}

/// Builds and validates an event from its JSON format representation.
pub fn from_json_value(value: &Value) -> Result<CloudEvent, EventError> {
    let Value::Object(map) = value else {
        return Err(EventError::invalid(
            "body",
            "a CloudEvent must be a JSON object",
        ));
    };
    let members: Vec<(&str, Member<'_>)> = map
        .iter()
        .map(|(name, value)| (name.as_str(), Member::Value(value)))
        .collect();
    build_event(&members)
}

pub(super) fn decode_structured(body: &[u8]) -> Result<CloudEvent, EventError> {
    let members: Members<'_> = serde_json::from_slice(body)
        .map_err(|e| EventError::invalid("body", format!("not a valid JSON object: {e}")))?;
    build_event(&members.borrowed())
}

pub(super) fn decode_batch(
    body: &[u8],
    max_events: usize,
    mut each: impl FnMut(CloudEvent) -> Result<(), EventError>,
) -> Result<usize, EventError> {
    let elements: Vec<&RawValue> = serde_json::from_slice(body)
        .map_err(|e| EventError::invalid("body", format!("not a valid JSON array: {e}")))?;
    if elements.len() > max_events {
        return Err(EventError::invalid(
            "body",
            format!(
                "the batch holds {} events; at most {max_events} are accepted per request",
                elements.len()
            ),
        ));
    }
    let mut first_spec = None;
    for (i, raw) in elements.iter().enumerate() {
        let prefix = || format!("[{i}].");
        let members: Members<'_> = serde_json::from_str(raw.get()).map_err(|_| {
            EventError::invalid("", "each batch element must be a JSON object").prefixed(&prefix())
        })?;
        let event = build_event(&members.borrowed()).map_err(|e| e.prefixed(&prefix()))?;
        let spec = *first_spec.get_or_insert(event.spec_version());
        if spec != event.spec_version() {
            return Err(EventError::invalid(
                "specversion",
                format!("all events of a batch must share one specversion; the first is {spec}"),
            )
            .prefixed(&prefix()));
        }
        each(event).map_err(|e| e.prefixed(&prefix()))?;
    }
    Ok(elements.len())
}

/// `application/cloudevents+…` or `application/cloudevents-batch+…`, parameters ignored.
fn is_event_format(media_type: &str) -> bool {
    let essence = media_type.split(';').next().unwrap_or("").trim();
    let prefix = |p: &str| {
        essence.len() >= p.len() && essence.as_bytes()[..p.len()].eq_ignore_ascii_case(p.as_bytes())
    };
    prefix("application/cloudevents+") || prefix("application/cloudevents-batch+")
}

pub(super) fn encode_structured(event: &CloudEvent) -> Vec<u8> {
    // Serializing into a Vec cannot fail: every map key is a string and no Serialize impl here
    // returns an error.
    serde_json::to_vec(&Structured(event)).unwrap_or_default()
}

pub(super) fn encode_batch(events: &[CloudEvent]) -> Vec<u8> {
    let batch: Vec<Structured<'_>> = events.iter().map(Structured).collect();
    serde_json::to_vec(&batch).unwrap_or_else(|_| b"[]".to_vec())
}

/// A JSON member value: raw text from a request body, or a parsed value.
#[derive(Clone, Copy)]
enum Member<'a> {
    Raw(&'a RawValue),
    Value(&'a Value),
}

impl<'a> Member<'a> {
    fn value(self) -> Result<Cow<'a, Value>, EventError> {
        match self {
            Member::Value(v) => Ok(Cow::Borrowed(v)),
            Member::Raw(raw) => serde_json::from_str(raw.get())
                .map(Cow::Owned)
                .map_err(|e| EventError::invalid("body", format!("invalid JSON: {e}"))),
        }
    }

    fn is_null(self) -> bool {
        match self {
            Member::Value(v) => v.is_null(),
            Member::Raw(raw) => raw.get() == "null",
        }
    }

    /// The value as compact JSON text.
    fn compact_json(self) -> Vec<u8> {
        match self {
            Member::Raw(raw) => minify(raw.get()),
            Member::Value(v) => serde_json::to_vec(v).unwrap_or_default(),
        }
    }
}

/// Builds an event from the members of one JSON object.
fn build_event(members: &[(&str, Member<'_>)]) -> Result<CloudEvent, EventError> {
    check_duplicates(members)?;
    let spec = match members.iter().find(|(name, _)| *name == "specversion") {
        Some((_, member)) => match member.value()?.as_ref() {
            Value::String(s) => SpecVersion::parse(s)?,
            Value::Null => return Err(EventError::invalid("specversion", "must not be null")),
            _ => return Err(EventError::invalid("specversion", "must be a string")),
        },
        None => {
            return Err(EventError::invalid(
                "specversion",
                "required attribute is missing",
            ));
        }
    };
    let mut event = CloudEvent::empty(spec);
    let mut data = None;
    let mut data_base64 = None;
    let mut base64_encoding = false;
    for &(name, member) in members {
        match (spec, name) {
            (_, "specversion") => {}
            (_, "data") => data = Some(member),
            (SpecVersion::V10, "data_base64") => match member.value()?.as_ref() {
                Value::Null => {}
                Value::String(s) => data_base64 = Some(s.clone()),
                _ => return Err(EventError::invalid(name, "must be a base64 string")),
            },
            (SpecVersion::V03, "datacontentencoding") => match member.value()?.as_ref() {
                Value::Null => {}
                Value::String(s) if s.eq_ignore_ascii_case("base64") => base64_encoding = true,
                _ => {
                    return Err(EventError::invalid(
                        name,
                        "only \"base64\" is supported as datacontentencoding",
                    ));
                }
            },
            _ => {
                if let Some(value) = attr_from_json(name, member.value()?.as_ref())? {
                    event.set_attribute(name, value)?;
                }
            }
        }
    }
    event.check_required()?;
    if event.datacontenttype().is_some_and(is_event_format) {
        // Delivered in binary mode, such data would be read as the event itself: a receiver
        // would see an event the filters never saw.
        return Err(EventError::invalid(
            "datacontenttype",
            "data in a CloudEvents event format (application/cloudevents…) cannot be carried; \
             nest the event as application/json data instead",
        ));
    }
    let data = data.filter(|member| {
        // `null` data is an explicit JSON null payload only where the data is JSON.
        !member.is_null()
            || (!base64_encoding && event.datacontenttype().is_none_or(is_json_media_type))
    });
    match (data, data_base64) {
        (Some(_), Some(_)) => Err(EventError::invalid(
            "data",
            "data and data_base64 are mutually exclusive; send only one of them",
        )),
        (None, Some(encoded)) => {
            let bytes = decode_base64(&encoded)
                .map_err(|reason| EventError::invalid("data_base64", reason))?;
            event.set_data_only(Some(bytes));
            Ok(event)
        }
        (Some(member), None) => {
            let bytes = data_bytes(&event, member, base64_encoding)?;
            if event.datacontenttype().is_none() && !base64_encoding {
                event.set_attribute("datacontenttype", AttrValue::from("application/json"))?;
            }
            event.set_data_only(Some(bytes));
            Ok(event)
        }
        (None, None) => Ok(event),
    }
}

/// The stored bytes of a `data` member.
fn data_bytes(
    event: &CloudEvent,
    member: Member<'_>,
    base64_encoding: bool,
) -> Result<Bytes, EventError> {
    let content_type = event.datacontenttype();
    if base64_encoding {
        return match member.value()?.as_ref() {
            Value::String(s) => {
                decode_base64(s).map_err(|reason| EventError::invalid("data", reason))
            }
            _ => Err(EventError::invalid(
                "data",
                "must be a base64 string when datacontentencoding is base64",
            )),
        };
    }
    if content_type.is_none_or(is_json_media_type) {
        return Ok(Bytes::from(member.compact_json()));
    }
    match member.value()?.as_ref() {
        Value::String(s) => Ok(Bytes::from(s.clone().into_bytes())),
        _ => Err(EventError::invalid(
            "data",
            format!(
                "must be a string because datacontenttype {:?} is not JSON; send binary \
                 data as data_base64",
                content_type.unwrap_or("")
            ),
        )),
    }
}

fn check_duplicates(members: &[(&str, Member<'_>)]) -> Result<(), EventError> {
    let mut names: Vec<&str> = members.iter().map(|(name, _)| *name).collect();
    names.sort_unstable();
    match names.windows(2).find(|pair| pair[0] == pair[1]) {
        Some(pair) => Err(EventError::invalid(
            pair[0],
            "duplicate attribute: the member appears more than once in the JSON object",
        )),
        None => Ok(()),
    }
}

/// An attribute value from JSON; `None` for `null` (treated as absent).
fn attr_from_json(name: &str, value: &Value) -> Result<Option<AttrValue>, EventError> {
    match value {
        Value::Null => Ok(None),
        Value::Bool(b) => Ok(Some(AttrValue::Boolean(*b))),
        Value::String(s) => Ok(Some(AttrValue::String(s.clone()))),
        Value::Number(n) => match n.as_i64() {
            Some(i) => Ok(Some(AttrValue::Integer(i))),
            None if n.is_u64() => Err(EventError::invalid(
                name,
                "integer is outside the CloudEvents range of a signed 32-bit integer",
            )),
            None => Err(EventError::invalid(
                name,
                "must be an integer; fractions and exponents are not allowed",
            )),
        },
        Value::Array(_) | Value::Object(_) => Err(EventError::invalid(
            name,
            "attribute values must be a string, integer or boolean",
        )),
    }
}

fn attr_to_json(value: &AttrValue) -> Value {
    match value {
        AttrValue::String(s) => Value::String(s.clone()),
        AttrValue::Integer(i) => Value::from(*i),
        AttrValue::Boolean(b) => Value::Bool(*b),
    }
}

/// How an event's data is written in the JSON format.
enum DataRepr<'a> {
    None,
    /// JSON `datacontenttype` and the data parses as JSON: written as a JSON value.
    Json(&'a RawValue),
    /// A non-JSON `datacontenttype` and UTF-8 data: written as a JSON string.
    Text(&'a str),
    /// Anything else (also data without `datacontenttype`): base64.
    Base64(String),
}

fn classify_data(event: &CloudEvent) -> DataRepr<'_> {
    let Some(data) = event.data() else {
        return DataRepr::None;
    };
    match event.datacontenttype() {
        Some(ct) if is_json_media_type(ct) => match serde_json::from_slice::<&RawValue>(data) {
            Ok(raw) => DataRepr::Json(raw),
            Err(_) => DataRepr::Base64(STANDARD.encode(data)),
        },
        Some(_) => match std::str::from_utf8(data) {
            Ok(text) => DataRepr::Text(text),
            Err(_) => DataRepr::Base64(STANDARD.encode(data)),
        },
        None => DataRepr::Base64(STANDARD.encode(data)),
    }
}

/// 1.0 has `data_base64`; 0.3 marks base64 `data` with `datacontentencoding`.
fn base64_members(spec: SpecVersion, encoded: String) -> Vec<(&'static str, String)> {
    match spec {
        SpecVersion::V10 => vec![("data_base64", encoded)],
        SpecVersion::V03 => vec![
            ("datacontentencoding", "base64".to_owned()),
            ("data", encoded),
        ],
    }
}

/// Serializes an event in the JSON format.
struct Structured<'a>(&'a CloudEvent);

impl Serialize for Structured<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let event = self.0;
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("specversion", event.spec_version().as_str())?;
        for (name, value) in event.attributes() {
            match value {
                AttrValue::String(s) => map.serialize_entry(name, s)?,
                AttrValue::Integer(i) => map.serialize_entry(name, i)?,
                AttrValue::Boolean(b) => map.serialize_entry(name, b)?,
            }
        }
        match classify_data(event) {
            DataRepr::None => {}
            DataRepr::Json(raw) => map.serialize_entry("data", raw)?,
            DataRepr::Text(text) => map.serialize_entry("data", text)?,
            DataRepr::Base64(encoded) => {
                for (name, value) in base64_members(event.spec_version(), encoded) {
                    map.serialize_entry(name, &value)?;
                }
            }
        }
        map.end()
    }
}

/// Base64 with or without padding (senders differ), standard alphabet.
fn decode_base64(encoded: &str) -> Result<Bytes, String> {
    const LENIENT: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    LENIENT
        .decode(encoded)
        .map(Bytes::from)
        .map_err(|e| format!("not valid base64: {e}"))
}

/// Strips insignificant whitespace from valid JSON text.
fn minify(json: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(json.len());
    let (mut in_string, mut escaped) = (false, false);
    for &b in json.as_bytes() {
        if in_string {
            out.push(b);
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
        } else if !matches!(b, b' ' | b'\t' | b'\n' | b'\r') {
            in_string = b == b'"';
            out.push(b);
        }
    }
    out
}

/// The members of a JSON object in document order, values as raw JSON text; duplicates kept
/// so that they can be reported.
struct Members<'a> {
    list: Vec<(String, &'a RawValue)>,
}

impl<'a> Members<'a> {
    fn borrowed(&self) -> Vec<(&str, Member<'a>)> {
        self.list
            .iter()
            .map(|(name, raw)| (name.as_str(), Member::Raw(raw)))
            .collect()
    }
}

impl<'de> Deserialize<'de> for Members<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(MembersVisitor)
    }
}

struct MembersVisitor;

impl<'de> Visitor<'de> for MembersVisitor {
    type Value = Members<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut list = Vec::with_capacity(map.size_hint().unwrap_or(8));
        while let Some(name) = map.next_key::<String>()? {
            let value: &'de RawValue = map.next_value()?;
            list.push((name, value));
        }
        Ok(Members { list })
    }
}
