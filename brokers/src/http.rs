//! The CloudEvents HTTP protocol binding: binary, structured and batched content modes.
//!
//! [`decode_request`] picks the mode from `Content-Type` and returns validated events; the
//! `encode_*` functions produce requests for delivery. The JSON event format is also available
//! on its own through [`to_json_value`] and [`from_json_value`].

mod json;
#[cfg(test)]
mod tests;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};

use crate::event::{AttrValue, CloudEvent, EventError, SpecVersion};

pub use json::{from_json_value, to_json_value};

/// Media type of the structured content mode with the JSON event format.
/// Default largest request body (and reply body) accepted, in bytes (4 MiB).
pub const DEFAULT_MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

pub const MODE_STRUCTURED: &str = "application/cloudevents+json";
/// Media type of the batched content mode with the JSON batch format.
pub const MODE_BATCH: &str = "application/cloudevents-batch+json";

/// Decodes the events of an HTTP request (binary, structured or batched mode).
///
/// The mode is chosen by `Content-Type` (case-insensitive, parameters ignored): the structured
/// and batch JSON media types are decoded as such, any other `application/cloudevents…+fmt`
/// is [`EventErrorKind::UnsupportedMediaType`](crate::event::EventErrorKind), and everything
/// else is binary mode, which needs a `ce-specversion` header. A batch may hold zero events.
pub fn decode_request(headers: &HeaderMap, body: Bytes) -> Result<Vec<CloudEvent>, EventError> {
    let mut events = Vec::new();
    decode_request_each(headers, body, usize::MAX, |event| {
        events.push(event);
        Ok(())
    })?;
    Ok(events)
}

/// Decodes the events of an HTTP request like [`decode_request`], handing each to `each` as soon
/// as it is built (so a large batch never exists as a list of events), in order. A batch of more
/// than `max_events` events is refused before any is built. An error from `each` stops decoding
/// and is returned (prefixed with `[i].` in a batch). Returns the number of events.
pub fn decode_request_each(
    headers: &HeaderMap,
    body: Bytes,
    max_events: usize,
    mut each: impl FnMut(CloudEvent) -> Result<(), EventError>,
) -> Result<usize, EventError> {
    let content_type = single_header(headers, &CONTENT_TYPE, "content-type")?;
    let essence = content_type
        .map(|ct| {
            ct.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default();
    match essence.as_str() {
        MODE_STRUCTURED => each(json::decode_structured(&body)?).map(|()| 1),
        MODE_BATCH => json::decode_batch(&body, max_events, each),
        other
            if other.starts_with("application/cloudevents+")
                || other.starts_with("application/cloudevents-batch+") =>
        {
            Err(EventError::unsupported_media_type(
                "content-type",
                format!(
                    "event format {other:?} is not supported; send {MODE_STRUCTURED}, \
                     {MODE_BATCH} or a binary-mode request with ce-* headers"
                ),
            ))
        }
        _ => each(decode_binary(headers, content_type, body)?).map(|()| 1),
    }
}

/// Writes `event` as binary mode: `ce-*` headers (percent-encoded), `content-type` from
/// `datacontenttype`; returns the body (the data, or empty).
pub fn encode_binary(event: &CloudEvent, headers: &mut HeaderMap) -> Bytes {
    headers.insert(
        HeaderName::from_static("ce-specversion"),
        HeaderValue::from_static(event.spec_version().as_str()),
    );
    for (name, value) in event.attributes() {
        if name == "datacontenttype" {
            if let Ok(v) = HeaderValue::from_str(&value.to_string()) {
                headers.insert(CONTENT_TYPE, v);
            }
            continue;
        }
        let encoded = match value {
            AttrValue::String(s) => utf8_percent_encode(s, HEADER_ESCAPES).to_string(),
            other => other.to_string(),
        };
        // Attribute names are [a-z0-9]+ and values are percent-encoded to printable ASCII, so
        // both conversions always succeed.
        if let (Ok(n), Ok(v)) = (
            HeaderName::try_from(format!("ce-{name}")),
            HeaderValue::try_from(encoded),
        ) {
            headers.insert(n, v);
        }
    }
    event.data().cloned().unwrap_or_default()
}

/// The event in the structured JSON format (`application/cloudevents+json`).
pub fn encode_structured(event: &CloudEvent) -> Bytes {
    Bytes::from(json::encode_structured(event))
}

/// The events in the JSON batch format (`application/cloudevents-batch+json`).
pub fn encode_batch(events: &[CloudEvent]) -> Bytes {
    Bytes::from(json::encode_batch(events))
}

/// Characters percent-encoded in header values: controls, space, `"`, `%` and (implicitly, by
/// `utf8_percent_encode`) everything outside ASCII.
const HEADER_ESCAPES: &AsciiSet = &CONTROLS.add(b' ').add(b'"').add(b'%');

fn decode_binary(
    headers: &HeaderMap,
    content_type: Option<&str>,
    body: Bytes,
) -> Result<CloudEvent, EventError> {
    let spec = match single_header(headers, "ce-specversion", "specversion")? {
        Some(value) => SpecVersion::parse(
            &decode_header_value(value.as_bytes())
                .map_err(|reason| EventError::invalid("specversion", reason))?,
        )?,
        None if headers.keys().any(|name| name.as_str().starts_with("ce-")) => {
            return Err(EventError::invalid(
                "specversion",
                "binary-mode request has ce-* headers but no ce-specversion header",
            ));
        }
        None => {
            return Err(EventError::invalid(
                "specversion",
                format!(
                    "request is neither a binary-mode CloudEvent (no ce-specversion header) nor \
                     structured (Content-Type {:?}, expected {MODE_STRUCTURED} or {MODE_BATCH})",
                    content_type.unwrap_or("")
                ),
            ));
        }
    };
    let mut event = CloudEvent::empty(spec);
    for name in headers.keys() {
        let Some(attribute) = name.as_str().strip_prefix("ce-") else {
            continue;
        };
        if attribute == "specversion" {
            continue;
        }
        if attribute.is_empty() {
            return Err(EventError::invalid(
                name.as_str(),
                "header has no attribute name after the ce- prefix",
            ));
        }
        if attribute == "datacontenttype" {
            return Err(EventError::invalid(
                attribute,
                "ce-datacontenttype is not allowed in binary mode; send the media type as \
                 Content-Type",
            ));
        }
        let mut values = headers.get_all(name).iter();
        let (Some(value), None) = (values.next(), values.next()) else {
            return Err(EventError::invalid(
                attribute,
                format!("duplicate attribute: header {name} sent more than once"),
            ));
        };
        let text = decode_header_value(value.as_bytes())
            .map_err(|reason| EventError::invalid(attribute, reason))?;
        event.set_attribute(attribute, AttrValue::String(text))?;
    }
    if let Some(ct) = content_type {
        event
            .set_attribute("datacontenttype", AttrValue::String(ct.to_owned()))
            .map_err(|e| EventError::invalid("content-type", e.reason))?;
    }
    event.check_required()?;
    if !body.is_empty() {
        event.set_data_only(Some(body));
    }
    Ok(event)
}

/// The value of a header that may appear at most once, as text.
fn single_header<'a, K: http::header::AsHeaderName>(
    headers: &'a HeaderMap,
    name: K,
    field: &str,
) -> Result<Option<&'a str>, EventError> {
    let mut values = headers.get_all(name).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(EventError::invalid(field, "header sent more than once"));
    }
    value
        .to_str()
        .map(Some)
        .map_err(|_| EventError::invalid(field, "header value must be printable ASCII"))
}

/// Undoes the binding's header encoding: an optional RFC 7230 quoted string, then exactly one
/// round of strict percent-decoding, then UTF-8.
fn decode_header_value(raw: &[u8]) -> Result<String, String> {
    let unquoted;
    let raw = match raw {
        [b'"', rest @ ..] => {
            unquoted = unquote(rest)?;
            unquoted.as_slice()
        }
        _ => raw,
    };
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'%' {
            let hex = raw
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| {
                    "invalid percent-encoding: '%' must be followed by two hex digits".to_owned()
                })?;
            out.push(hex);
            i += 3;
        } else {
            out.push(raw[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "value is not valid UTF-8 after percent-decoding".to_owned())
}

/// The inside of a quoted string whose opening quote was already consumed.
fn unquote(rest: &[u8]) -> Result<Vec<u8>, String> {
    let malformed = || "malformed quoted-string header value".to_owned();
    let mut out = Vec::with_capacity(rest.len());
    let mut bytes = rest.iter();
    while let Some(&b) = bytes.next() {
        match b {
            b'\\' => out.push(*bytes.next().ok_or_else(malformed)?),
            b'"' if bytes.as_slice().is_empty() => return Ok(out),
            b'"' => return Err(malformed()),
            _ => out.push(b),
        }
    }
    Err(malformed())
}
