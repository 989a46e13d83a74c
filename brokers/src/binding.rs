//! The CloudEvents NATS and Kafka protocol bindings, both ways.
//!
//! Both carry binary mode in message headers, as HTTP does: NATS as `ce-{attribute}` (the
//! binding's HTTP-like headers), Kafka as `ce_{attribute}` with plain UTF-8 values. The
//! `datacontenttype` attribute travels as `content-type`. A `content-type` of
//! `application/cloudevents+json` (or a record with no `ce` headers whose payload is a JSON
//! object) is structured mode. Decoding maps the headers onto the HTTP binding's decoder so one
//! strict validator serves every transport.

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use percent_encoding::{AsciiSet, CONTROLS, percent_decode_str, utf8_percent_encode};

use crate::event::{CloudEvent, EventError};
use crate::http::{MODE_BATCH, MODE_STRUCTURED, decode_request, encode_binary};

/// Which transport a record came from: decides the header prefix and value encoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// `ce-` headers, values percent-encoded like HTTP.
    Nats,
    /// `ce_` headers, values plain UTF-8.
    Kafka,
}

/// Binary mode: the headers (name, value) and the payload (the event's data).
pub fn encode(event: &CloudEvent, transport: Transport) -> (Vec<(String, String)>, Bytes) {
    let mut headers = HeaderMap::new();
    let payload = encode_binary(event, &mut headers);
    let pairs = headers
        .iter()
        .filter_map(|(name, value)| {
            let value = value.to_str().ok()?;
            let name = name.as_str();
            Some(match (transport, name.strip_prefix("ce-")) {
                (Transport::Kafka, Some(attribute)) => (
                    format!("ce_{attribute}"),
                    percent_decode_str(value).decode_utf8_lossy().into_owned(),
                ),
                _ => (name.to_owned(), value.to_owned()),
            })
        })
        .collect();
    (pairs, payload)
}

/// Why a record is not a CloudEvent, as a short kind for metrics and logs.
pub fn invalid_kind(error: &EventError) -> &'static str {
    match error.kind {
        crate::event::EventErrorKind::UnsupportedMediaType => "unsupported_format",
        _ => "invalid_event",
    }
}

/// A record's headers and payload as one CloudEvent, validated exactly like ingress events.
pub fn decode<'a>(
    headers: impl IntoIterator<Item = (&'a str, &'a [u8])>,
    payload: Bytes,
    transport: Transport,
) -> Result<CloudEvent, EventError> {
    let mut map = HeaderMap::new();
    let mut binary = false;
    for (name, value) in headers {
        let lower = name.to_ascii_lowercase();
        let (name, value) = match (transport, lower.strip_prefix("ce_")) {
            (Transport::Kafka, Some(attribute)) => {
                let text = std::str::from_utf8(value)
                    .map_err(|_| EventError::invalid(lower.clone(), "header value is not UTF-8"))?;
                (
                    format!("ce-{attribute}"),
                    utf8_percent_encode(text, KAFKA_TO_HTTP).to_string(),
                )
            }
            _ => (lower.clone(), String::from_utf8_lossy(value).into_owned()),
        };
        if !name.starts_with("ce-") && name != "content-type" {
            continue; // other headers (Nats-Msg-Id, tracing) are not event attributes
        }
        binary |= name == "ce-specversion";
        let header_name = HeaderName::try_from(name.as_str())
            .map_err(|_| EventError::invalid(name.clone(), "not a valid header name"))?;
        let header_value = HeaderValue::try_from(value)
            .map_err(|_| EventError::invalid(name.clone(), "not a valid header value"))?;
        map.append(header_name, header_value);
    }
    if !binary && !map.contains_key(CONTENT_TYPE) && payload.first() == Some(&b'{') {
        map.insert(CONTENT_TYPE, HeaderValue::from_static(MODE_STRUCTURED));
    }
    if let Some(ct) = map.get(CONTENT_TYPE)
        && ct
            .as_bytes()
            .to_ascii_lowercase()
            .starts_with(MODE_BATCH.as_bytes())
    {
        return Err(EventError::unsupported_media_type(
            "content-type",
            "batched mode is not defined for this protocol binding; write one event per record",
        ));
    }
    let mut events = decode_request(&map, payload)?;
    match events.len() {
        1 => Ok(events.remove(0)),
        _ => Err(EventError::invalid(
            "(record)",
            "expected exactly one event",
        )),
    }
}

/// Characters escaped when a plain Kafka header value is handed to the HTTP binding's decoder,
/// which percent-decodes: the same set the HTTP encoder escapes.
const KAFKA_TO_HTTP: &AsciiSet = &CONTROLS.add(b' ').add(b'"').add(b'%');

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{AttrValue, SpecVersion};

    fn event() -> CloudEvent {
        let mut e = CloudEvent::new(SpecVersion::V10, "id-1", "/src/100%25", "dev.tidegate.test");
        e.set_attribute("partitionkey", AttrValue::String("k\"1".into()))
            .expect("attr");
        e.set_data(
            Some("application/json".into()),
            Bytes::from_static(b"{\"n\":1}"),
        )
        .expect("data");
        e
    }

    fn round_trip(transport: Transport) -> CloudEvent {
        let (headers, payload) = encode(&event(), transport);
        decode(
            headers.iter().map(|(n, v)| (n.as_str(), v.as_bytes())),
            payload,
            transport,
        )
        .expect("decodes")
    }

    #[test]
    fn binary_mode_round_trips_on_both_transports() {
        for transport in [Transport::Nats, Transport::Kafka] {
            assert_eq!(round_trip(transport), event(), "{transport:?}");
        }
        let (headers, _) = encode(&event(), Transport::Kafka);
        assert!(
            headers
                .iter()
                .any(|(n, v)| n == "ce_source" && v == "/src/100%25"),
            "Kafka values are plain UTF-8: {headers:?}"
        );
        assert!(
            headers
                .iter()
                .any(|(n, v)| n == "content-type" && v == "application/json")
        );
    }

    #[test]
    fn structured_records_with_or_without_content_type() {
        let json = br#"{"specversion":"1.0","id":"a","source":"/s","type":"t","data":{"x":1}}"#;
        let with = decode(
            [("content-type", MODE_STRUCTURED.as_bytes())],
            Bytes::from_static(json),
            Transport::Kafka,
        )
        .expect("structured");
        let without = decode([], Bytes::from_static(json), Transport::Nats).expect("plain");
        assert_eq!(with, without);
        assert_eq!(with.id(), "a");
    }

    #[test]
    fn records_that_are_not_events_are_errors() {
        let plain = decode([], Bytes::from_static(b"hello"), Transport::Kafka);
        assert!(plain.is_err());
        let missing_id = decode(
            [
                ("ce_specversion", &b"1.0"[..]),
                ("ce_type", b"t"),
                ("ce_source", b"/s"),
            ],
            Bytes::new(),
            Transport::Kafka,
        )
        .expect_err("no id");
        assert!(missing_id.to_string().contains("id"), "{missing_id}");
        let batch = decode(
            [("content-type", MODE_BATCH.as_bytes())],
            Bytes::from_static(b"[]"),
            Transport::Nats,
        )
        .expect_err("batch");
        assert_eq!(invalid_kind(&batch), "unsupported_format");
    }
}
