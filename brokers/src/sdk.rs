//! Lossless conversions between [`CloudEvent`] and the Rust CloudEvents SDK's
//! [`cloudevents::Event`], for publishers and subscribers written against the SDK.
//!
//! Ingress keeps its own strict codec (the SDK validates less than the specification
//! demands and has no batch mode), so these go through the structured JSON format, which both
//! sides implement in full: every attribute with its type, extensions, and data (JSON, text or
//! binary) survive the trip. An SDK event that tidegate's validation refuses is an error naming
//! the field, as ingress would answer it.

use crate::event::{CloudEvent, EventError};
use crate::http::{MODE_STRUCTURED, decode_request, encode_structured};

/// The SDK's view of `event`.
pub fn to_sdk(event: &CloudEvent) -> Result<cloudevents::Event, EventError> {
    serde_json::from_slice(&encode_structured(event))
        .map_err(|e| EventError::invalid("(event)", format!("the CloudEvents SDK refused it: {e}")))
}

/// `event` validated as ingress validates events.
pub fn from_sdk(event: &cloudevents::Event) -> Result<CloudEvent, EventError> {
    let json = serde_json::to_vec(event)
        .map_err(|e| EventError::invalid("(event)", format!("not serializable: {e}")))?;
    let mut headers = http::HeaderMap::new();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(MODE_STRUCTURED),
    );
    let mut events = decode_request(&headers, json.into())?;
    events
        .pop()
        .ok_or_else(|| EventError::invalid("(event)", "no event"))
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use cloudevents::{AttributesReader as _, EventBuilder as _, EventBuilderV10};

    use super::*;
    use crate::event::{AttrValue, SpecVersion};

    fn ours(data: Option<(&str, &'static [u8])>) -> CloudEvent {
        let mut e = CloudEvent::new(SpecVersion::V10, "id-1", "/src/a", "dev.tidegate.t");
        for (name, value) in [
            ("subject", AttrValue::String("s".into())),
            (
                "time",
                AttrValue::String("2026-12-01T10:00:00.123456Z".into()),
            ),
            (
                "dataschema",
                AttrValue::String("https://example.com/schema".into()),
            ),
            ("partitionkey", AttrValue::String("k-1".into())),
            ("count", AttrValue::Integer(42)),
            ("flag", AttrValue::Boolean(true)),
        ] {
            e.set_attribute(name, value).expect("attribute");
        }
        if let Some((ct, bytes)) = data {
            e.set_data(Some(ct.into()), Bytes::from_static(bytes))
                .expect("data");
        }
        e
    }

    #[test]
    fn round_trips_attributes_extensions_and_every_kind_of_data() {
        for data in [
            None,
            Some(("application/json", &br#"{"a":[1,2]}"#[..])),
            Some(("text/plain", &b"hello"[..])),
            Some(("application/octet-stream", &[0u8, 159, 146, 150][..])),
        ] {
            let event = ours(data);
            let sdk = to_sdk(&event).expect("to sdk");
            assert_eq!(sdk.id(), "id-1");
            assert_eq!(sdk.source().as_str(), "/src/a");
            assert_eq!(
                sdk.extension("count"),
                Some(&cloudevents::event::ExtensionValue::Integer(42))
            );
            assert_eq!(from_sdk(&sdk).expect("back"), event, "{data:?}");
        }
    }

    #[test]
    fn sdk_events_are_validated_like_ingress_events() {
        let sdk = EventBuilderV10::new()
            .id("x")
            .source("/s")
            .ty("t")
            .extension("UPPER", "not a valid attribute name")
            .build()
            .expect("the SDK accepts it");
        let error = from_sdk(&sdk).expect_err("tidegate does not");
        assert!(
            error.field.contains("UPPER") || error.reason.contains("UPPER"),
            "{error}"
        );
    }
}
