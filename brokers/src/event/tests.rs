use std::borrow::Cow;

use bytes::Bytes;
use proptest::prelude::*;

use super::*;

fn sample() -> CloudEvent {
    CloudEvent::new(SpecVersion::V10, "id-1", "/src", "com.example.test")
}

fn invalid_field(result: Result<(), EventError>) -> String {
    let error = result.expect_err("should be rejected");
    assert_eq!(error.kind, EventErrorKind::Invalid);
    error.field
}

#[test]
fn accessors_and_borrowed_attributes() {
    let mut event = sample();
    event
        .set_attribute("myext", AttrValue::Integer(42))
        .expect("valid extension");
    assert_eq!(event.id(), "id-1");
    assert_eq!(event.source(), "/src");
    assert_eq!(event.ty(), "com.example.test");
    assert!(matches!(
        event.attribute("type"),
        Some(Cow::Borrowed("com.example.test"))
    ));
    assert!(matches!(
        event.attribute("specversion"),
        Some(Cow::Borrowed("1.0"))
    ));
    assert_eq!(event.attribute("myext").as_deref(), Some("42"));
    assert_eq!(event.attribute("missing"), None);
    let names: Vec<&str> = event.attributes().map(|(name, _)| name).collect();
    assert_eq!(names, ["id", "myext", "source", "type"]);
    assert!(event.validate().is_ok());
}

#[test]
fn attribute_names_are_checked() {
    let mut event = sample();
    for name in ["", "Foo", "my-ext", "my_ext", "ünï"] {
        assert_eq!(invalid_field(event.set_attribute(name, "x".into())), name);
    }
    assert!(event.set_attribute("data", "x".into()).is_err());
    assert!(event.set_attribute("specversion", "1.0".into()).is_err());
    // Longer than 20 characters is only a SHOULD NOT in the spec.
    assert!(
        event
            .set_attribute("averyveryverylongextensionname", "x".into())
            .is_ok()
    );
}

#[test]
fn attribute_values_are_checked() {
    let mut event = sample();
    let cases: [(&str, AttrValue); 12] = [
        ("id", "".into()),
        ("type", AttrValue::Integer(1)),
        ("source", "has space".into()),
        ("source", "".into()),
        ("time", "yesterday".into()),
        ("time", "2024-13-01T00:00:00Z".into()),
        ("datacontenttype", "json".into()),
        ("datacontenttype", "text/ plain".into()),
        ("dataschema", "/relative/schema".into()),
        ("subject", "".into()),
        ("ext", AttrValue::Integer(i64::from(i32::MAX) + 1)),
        ("ext", "line\nbreak".into()),
    ];
    for (name, value) in cases {
        let shown = format!("{name}={value:?}");
        assert_eq!(
            invalid_field(event.set_attribute(name, value)),
            name,
            "{shown}"
        );
    }
    for (name, value) in [
        ("time", AttrValue::from("2024-05-01T12:00:00.123+02:00")),
        (
            "datacontenttype",
            "application/cloudevents+json; charset=utf-8".into(),
        ),
        ("dataschema", "https://example.com/schema".into()),
        ("ext", AttrValue::Integer(i64::from(i32::MIN))),
        ("flag", true.into()),
        ("unicode", "Euro € 😀 \"quoted\" 100%".into()),
    ] {
        let shown = format!("{name}={value:?}");
        assert!(event.set_attribute(name, value).is_ok(), "{shown}");
    }
}

#[test]
fn version_specific_attributes() {
    let mut v03 = CloudEvent::new(SpecVersion::V03, "1", "/s", "t");
    assert!(v03.set_attribute("schemaurl", "/relative".into()).is_ok());
    assert!(
        v03.set_attribute("datacontentencoding", "base64".into())
            .is_err()
    );
    // In 1.0 these are plain extensions.
    let mut v10 = sample();
    assert!(v10.set_attribute("schemaurl", "anything".into()).is_ok());
    assert!(
        v10.set_attribute("datacontentencoding", "base64".into())
            .is_ok()
    );
}

#[test]
fn required_attributes() {
    let mut event = sample();
    assert_eq!(event.remove_attribute("id"), None);
    assert_eq!(event.id(), "id-1");
    let hand_built = CloudEvent::new(SpecVersion::V10, "", "/s", "t");
    assert_eq!(invalid_field(hand_built.validate()), "id");
    let empty = CloudEvent::empty(SpecVersion::V10);
    assert_eq!(invalid_field(empty.validate()), "id");
}

#[test]
fn set_data_and_content_type() {
    let mut event = sample();
    event
        .set_data(Some("text/plain".into()), Bytes::from_static(b"hi"))
        .expect("valid");
    assert_eq!(event.datacontenttype(), Some("text/plain"));
    assert_eq!(event.data().map(|d| d.as_ref()), Some(&b"hi"[..]));
    assert!(
        event
            .set_data(Some("nonsense".into()), Bytes::new())
            .is_err()
    );
    event
        .set_data(None, Bytes::from_static(b"x"))
        .expect("valid");
    assert_eq!(event.datacontenttype(), None);
    assert!(event.clear_data().is_some());
    assert_eq!(event.data(), None);
}

#[test]
fn json_media_types() {
    for ct in [
        "application/json",
        "text/json",
        "application/cloudevents+json",
        "x/y+JSON; a=b",
    ] {
        assert!(is_json_media_type(ct), "{ct}");
    }
    for ct in [
        "text/plain",
        "application/jsonx",
        "json",
        "application/x-json-stream",
    ] {
        assert!(!is_json_media_type(ct), "{ct}");
    }
}

#[test]
fn storage_rejects_corrupt_records() {
    let mut good = Vec::new();
    sample().encode_storage(&mut good);
    assert!(CloudEvent::decode_storage(&good).is_ok());
    let mut trailing = good.clone();
    trailing.push(0);
    assert!(CloudEvent::decode_storage(&trailing).is_err());
    let mut future = good.clone();
    future[0] = 9;
    let error = CloudEvent::decode_storage(&future).expect_err("unknown version");
    assert_eq!(error.field, "storage");
    assert!(CloudEvent::decode_storage(&good[..good.len() - 1]).is_err());
    assert!(CloudEvent::decode_storage(&[]).is_err());
}

/// Strategies for valid events, shared with the HTTP binding tests.
pub(crate) mod strategies {
    use super::*;

    /// Text that needs percent-encoding in headers: space, quote, percent, non-ASCII.
    pub(crate) fn text() -> impl Strategy<Value = String> {
        "[a-zA-Z0-9 %\"é€😀/:._-]{1,16}"
    }

    fn uri_reference() -> impl Strategy<Value = String> {
        "[a-z]{1,6}:/[a-zA-Z0-9/%._-]{0,12}|/[a-z0-9/]{0,10}"
    }

    fn time() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("2018-04-05T17:31:00Z".to_owned()),
            Just("2024-02-29T23:59:59.123456+05:30".to_owned()),
            Just("1999-12-31T00:00:00-08:00".to_owned()),
        ]
    }

    const RESERVED: [&str; 11] = [
        "id",
        "source",
        "type",
        "subject",
        "time",
        "datacontenttype",
        "dataschema",
        "schemaurl",
        "datacontentencoding",
        "data",
        "specversion",
    ];

    fn extension_value(strings_only: bool) -> BoxedStrategy<AttrValue> {
        if strings_only {
            text().prop_map(AttrValue::String).boxed()
        } else {
            prop_oneof![
                text().prop_map(AttrValue::String),
                any::<i32>().prop_map(AttrValue::from),
                any::<bool>().prop_map(AttrValue::Boolean),
            ]
            .boxed()
        }
    }

    /// (datacontenttype, data)
    fn data() -> impl Strategy<Value = (Option<String>, Option<Bytes>)> {
        prop_oneof![
            Just((None, None)),
            Just((Some("application/xml".to_owned()), None)),
            (any::<i64>(), text()).prop_map(|(n, s)| {
                let json = serde_json::json!({ "n": n, "s": s, "list": [1, "two", null] });
                (
                    Some("application/json".to_owned()),
                    Some(Bytes::from(json.to_string())),
                )
            }),
            text().prop_map(|s| (
                Some("text/plain; charset=utf-8".to_owned()),
                Some(Bytes::from(s))
            )),
            prop::collection::vec(any::<u8>(), 1..64).prop_map(|b| (
                Some("application/octet-stream".to_owned()),
                Some(Bytes::from(b))
            )),
            prop::collection::vec(any::<u8>(), 1..64).prop_map(|b| (None, Some(Bytes::from(b)))),
            // Declared JSON that is not JSON must survive too.
            Just((
                Some("application/json".to_owned()),
                Some(Bytes::from_static(b"{not json"))
            )),
        ]
    }

    /// Valid events of both spec versions; with `strings_only`, every extension is a string
    /// (what binary mode can carry without losing the type).
    pub(crate) fn event(strings_only: bool) -> impl Strategy<Value = CloudEvent> {
        let extensions = prop::collection::btree_map(
            "[a-z][a-z0-9]{0,8}".prop_filter("reserved", |n| !RESERVED.contains(&n.as_str())),
            extension_value(strings_only),
            0..4,
        );
        (
            prop_oneof![Just(SpecVersion::V03), Just(SpecVersion::V10)],
            (text(), uri_reference(), text()),
            prop::option::of(text()),
            prop::option::of(time()),
            prop::option::of(uri_reference()),
            extensions,
            data(),
        )
            .prop_map(
                |(spec, (id, source, ty), subject, time, schema, extensions, data)| {
                    let mut event = CloudEvent::new(spec, id, source, ty);
                    let mut optional: Vec<(&str, AttrValue)> = Vec::new();
                    if let Some(subject) = subject {
                        optional.push(("subject", subject.into()));
                    }
                    if let Some(time) = time {
                        optional.push(("time", time.into()));
                    }
                    if let Some(schema) = schema {
                        match spec {
                            SpecVersion::V03 => optional.push(("schemaurl", schema.into())),
                            SpecVersion::V10 => {
                                optional.push(("dataschema", format!("urn:x{schema}").into()));
                            }
                        }
                    }
                    for (name, value) in optional {
                        event
                            .set_attribute(name, value)
                            .expect("generated attribute is valid");
                    }
                    for (name, value) in extensions {
                        event
                            .set_attribute(&name, value)
                            .expect("generated extension is valid");
                    }
                    let (content_type, data) = data;
                    if let Some(ct) = content_type {
                        event
                            .set_attribute("datacontenttype", ct.into())
                            .expect("generated media type is valid");
                    }
                    event.set_data_only(data);
                    event
                },
            )
    }
}

proptest! {
    #[test]
    fn storage_round_trip(event in strategies::event(false)) {
        let mut encoded = Vec::new();
        event.encode_storage(&mut encoded);
        prop_assert_eq!(encoded.len(), event.encoded_len());
        prop_assert_eq!(CloudEvent::decode_storage(&encoded), Ok(event));
    }

    #[test]
    fn storage_decoder_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = CloudEvent::decode_storage(&bytes);
    }

    #[test]
    fn storage_decoder_survives_bit_flips(
        event in strategies::event(false),
        flip in any::<prop::sample::Index>(),
        bit in 0u8..8,
    ) {
        let mut encoded = Vec::new();
        event.encode_storage(&mut encoded);
        let i = flip.index(encoded.len());
        encoded[i] ^= 1 << bit;
        if let Ok(decoded) = CloudEvent::decode_storage(&encoded) {
            prop_assert!(decoded.validate().is_ok());
        }
    }
}
