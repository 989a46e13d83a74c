use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use proptest::prelude::*;
use serde_json::json;

use super::*;
use crate::event::tests::strategies;
use crate::event::{EventErrorKind, SpecVersion};

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(
            HeaderName::from_bytes(name.as_bytes()).expect("test header name"),
            HeaderValue::from_str(value).expect("test header value"),
        );
    }
    map
}

fn structured(body: serde_json::Value) -> Result<Vec<CloudEvent>, EventError> {
    decode_request(
        &headers(&[("content-type", MODE_STRUCTURED)]),
        Bytes::from(body.to_string()),
    )
}

fn one(result: Result<Vec<CloudEvent>, EventError>) -> CloudEvent {
    let mut events = result.expect("valid request");
    assert_eq!(events.len(), 1);
    events.remove(0)
}

fn error(result: Result<Vec<CloudEvent>, EventError>) -> EventError {
    result.expect_err("request should be rejected")
}

const BINARY: [(&str, &str); 4] = [
    ("ce-specversion", "1.0"),
    ("ce-id", "1"),
    ("ce-source", "/s"),
    ("ce-type", "t"),
];

fn binary_with(extra: &[(&str, &str)]) -> Result<Vec<CloudEvent>, EventError> {
    let mut pairs = BINARY.to_vec();
    pairs.extend_from_slice(extra);
    decode_request(&headers(&pairs), Bytes::from_static(b"payload"))
}

#[test]
fn binary_mode() {
    let event = one(binary_with(&[
        ("content-type", "text/plain"),
        ("CE-MyExt", "Euro%20%e2%82%AC%20%F0%9F%98%80"),
        ("ce-quoted", "\"a \\\"b\\\" c\""),
    ]));
    assert_eq!(event.spec_version(), SpecVersion::V10);
    assert_eq!(event.datacontenttype(), Some("text/plain"));
    assert_eq!(event.attribute("myext").as_deref(), Some("Euro € 😀"));
    assert_eq!(event.attribute("quoted").as_deref(), Some("a \"b\" c"));
    assert_eq!(event.data().map(|d| d.as_ref()), Some(&b"payload"[..]));

    let mut out = HeaderMap::new();
    let body = encode_binary(&event, &mut out);
    assert_eq!(body, Bytes::from_static(b"payload"));
    assert_eq!(out["ce-myext"], "Euro%20%E2%82%AC%20%F0%9F%98%80");
    assert_eq!(out["ce-quoted"], "a%20%22b%22%20c");
    assert_eq!(out[CONTENT_TYPE], "text/plain");
    assert!(out.get("ce-datacontenttype").is_none());

    let empty = decode_request(&headers(&BINARY), Bytes::new()).expect("valid");
    assert_eq!(empty[0].data(), None);
}

#[test]
fn binary_mode_errors() {
    let cases: [(&[(&str, &str)], &str); 7] = [
        (&[("ce-bad", "%zz")], "bad"),
        (&[("ce-bad", "%4")], "bad"),
        (&[("ce-bad", "%C0%A0")], "bad"),
        (&[("ce-bad", "a%0Ab")], "bad"),
        (&[("ce-id", "2")], "id"),
        (&[("ce-datacontenttype", "text/plain")], "datacontenttype"),
        (&[("ce-Bad_Name", "x")], "bad_name"),
    ];
    for (extra, field) in cases {
        let e = error(binary_with(extra));
        assert_eq!(
            (e.kind, e.field.as_str()),
            (EventErrorKind::Invalid, field),
            "{extra:?}"
        );
    }
    let dup = error(binary_with(&[("ce-id", "2")]));
    assert!(dup.reason.contains("duplicate"), "{dup}");

    let no_spec = headers(&[("ce-id", "1"), ("content-type", "application/json")]);
    let e = error(decode_request(&no_spec, Bytes::new()));
    assert_eq!(e.field, "specversion");
    let nothing = headers(&[("content-type", "text/plain")]);
    let e = error(decode_request(&nothing, Bytes::from_static(b"hi")));
    assert_eq!(
        (e.kind, e.field.as_str()),
        (EventErrorKind::Invalid, "specversion")
    );
    assert!(e.reason.contains("neither"), "{e}");
    let unknown = headers(&[("ce-specversion", "2.0"), ("ce-id", "1")]);
    assert_eq!(
        error(decode_request(&unknown, Bytes::new())).field,
        "specversion"
    );
    let missing_type = headers(&BINARY[..3]);
    assert_eq!(
        error(decode_request(&missing_type, Bytes::new())).field,
        "type"
    );
}

#[test]
fn content_type_selects_the_mode() {
    let body = json!({"specversion": "1.0", "id": "1", "source": "/s", "type": "t"});
    let ct = headers(&[(
        "content-type",
        "Application/CloudEvents+JSON; charset=UTF-8",
    )]);
    assert_eq!(
        decode_request(&ct, Bytes::from(body.to_string()))
            .expect("ok")
            .len(),
        1
    );
    for unsupported in [
        "application/cloudevents+xml",
        "application/cloudevents-batch+avro",
    ] {
        let e = error(decode_request(
            &headers(&[("content-type", unsupported)]),
            Bytes::new(),
        ));
        assert_eq!(e.kind, EventErrorKind::UnsupportedMediaType);
        assert_eq!(e.http_status(), http::StatusCode::UNSUPPORTED_MEDIA_TYPE);
    }
}

#[test]
fn structured_attributes() {
    let event = one(structured(json!({
        "specversion": "1.0", "id": "1", "source": "/s", "type": "t",
        "subject": null, "count": 7, "flag": false, "name": "x",
    })));
    assert_eq!(event.attribute_value("count"), Some(&AttrValue::Integer(7)));
    assert_eq!(
        event.attribute_value("flag"),
        Some(&AttrValue::Boolean(false))
    );
    assert_eq!(event.attribute("subject"), None);
    assert_eq!(event.data(), None);

    let base = json!({"specversion": "1.0", "id": "1", "source": "/s", "type": "t"});
    let with = |name: &str, value: serde_json::Value| {
        let mut body = base.clone();
        body[name] = value;
        structured(body)
    };
    for (name, value) in [
        ("ext", json!(1.5)),
        ("ext", json!(2_147_483_648_i64)),
        ("ext", json!(u64::MAX)),
        ("ext", json!({"a": 1})),
        ("ext", json!([1])),
        ("id", json!(5)),
        ("id", json!(null)),
        ("time", json!("not a time")),
        ("Ext", json!("x")),
    ] {
        assert_eq!(
            error(with(name, value.clone())).field,
            name,
            "{name}={value}"
        );
    }
    assert_eq!(
        error(with("specversion", json!("0.2"))).field,
        "specversion"
    );
    let not_object = structured(json!([1]));
    assert_eq!(error(not_object).field, "body");
    let bad_json = decode_request(
        &headers(&[("content-type", MODE_STRUCTURED)]),
        Bytes::from_static(b"{\"specversion\":"),
    );
    assert_eq!(error(bad_json).field, "body");
}

#[test]
fn structured_rejects_duplicate_members() {
    let body = r#"{"specversion":"1.0","id":"1","source":"/s","type":"t","id":"2"}"#;
    let e = error(decode_request(
        &headers(&[("content-type", MODE_STRUCTURED)]),
        Bytes::from_static(body.as_bytes()),
    ));
    assert_eq!(e.field, "id");
    assert!(e.reason.contains("duplicate"), "{e}");
}

#[test]
fn structured_data() {
    let base = json!({"specversion": "1.0", "id": "1", "source": "/s", "type": "t"});
    let with = |members: serde_json::Value| {
        let mut body = base.clone();
        for (k, v) in members.as_object().expect("object") {
            body[k] = v.clone();
        }
        structured(body)
    };
    let data = |event: &CloudEvent| event.data().map(|d| d.to_vec());

    // JSON data without a type: stored compactly, type made explicit.
    let event = one(with(json!({"data": {"b": [1, 2], "a": "x y"}})));
    assert_eq!(event.datacontenttype(), Some("application/json"));
    assert_eq!(data(&event), Some(br#"{"a":"x y","b":[1,2]}"#.to_vec()));
    // Whitespace in the request is dropped, member order kept.
    let pretty = "{\"specversion\":\"1.0\",\"id\":\"1\",\"source\":\"/s\",\"type\":\"t\",\
                  \"data\": {\n  \"z\" : 1,\n  \"a\" : \"s p\" }}";
    let event = one(decode_request(
        &headers(&[("content-type", MODE_STRUCTURED)]),
        Bytes::from_static(pretty.as_bytes()),
    ));
    assert_eq!(data(&event), Some(br#"{"z":1,"a":"s p"}"#.to_vec()));
    // A JSON string stays a JSON string for JSON types, raw text for others.
    let event = one(with(
        json!({"data": "hi", "datacontenttype": "application/json"}),
    ));
    assert_eq!(data(&event), Some(b"\"hi\"".to_vec()));
    let event = one(with(
        json!({"data": "<a/>", "datacontenttype": "application/xml"}),
    ));
    assert_eq!(data(&event), Some(b"<a/>".to_vec()));
    let e = error(with(json!({"data": 5, "datacontenttype": "text/plain"})));
    assert_eq!(e.field, "data");
    // Explicit null payload for JSON.
    let event = one(with(json!({"data": null})));
    assert_eq!(data(&event), Some(b"null".to_vec()));
    // data_base64
    let event = one(with(
        json!({"data_base64": "AAEC/w==", "datacontenttype": "x/y"}),
    ));
    assert_eq!(data(&event), Some(vec![0, 1, 2, 255]));
    assert_eq!(
        one(with(json!({"data_base64": "AAEC/w"}))).datacontenttype(),
        None
    );
    assert_eq!(
        error(with(json!({"data_base64": "!!"}))).field,
        "data_base64"
    );
    assert_eq!(
        error(with(json!({"data_base64": "AA==", "data": 1}))).field,
        "data"
    );
}

#[test]
fn spec_0_3_base64_data() {
    let event = one(structured(json!({
        "specversion": "0.3", "id": "1", "source": "/s", "type": "t",
        "schemaurl": "/schema", "datacontentencoding": "base64", "data": "AAEC",
    })));
    assert_eq!(event.data().map(|d| d.to_vec()), Some(vec![0, 1, 2]));
    assert_eq!(event.attribute("datacontentencoding"), None);
    let value = to_json_value(&event);
    assert_eq!(value["datacontentencoding"], "base64");
    assert_eq!(value["data"], "AAEC");
}

#[test]
fn encoding_structured_data() {
    let mut event = CloudEvent::new(SpecVersion::V10, "1", "/s", "t");
    event
        .set_attribute("n", AttrValue::Integer(-3))
        .expect("valid");
    event
        .set_data(
            Some("application/json".into()),
            Bytes::from_static(br#"{"k":[true]}"#),
        )
        .expect("valid");
    let value: serde_json::Value =
        serde_json::from_slice(&encode_structured(&event)).expect("JSON");
    assert_eq!(value["data"], json!({"k": [true]}));
    assert_eq!(value["n"], json!(-3));
    assert_eq!(value["specversion"], "1.0");
    assert_eq!(value, to_json_value(&event));
    assert_eq!(from_json_value(&value), Ok(event.clone()));

    event
        .set_data(Some("text/plain".into()), Bytes::from_static(b"hello"))
        .expect("valid");
    assert_eq!(to_json_value(&event)["data"], "hello");
    event
        .set_data(Some("text/plain".into()), Bytes::from_static(&[0xff]))
        .expect("valid");
    assert_eq!(to_json_value(&event)["data_base64"], "/w==");
    event
        .set_data(None, Bytes::from_static(b"text"))
        .expect("valid");
    assert_eq!(to_json_value(&event)["data_base64"], "dGV4dA==");
}

#[test]
fn hostile_json_is_an_error_not_a_crash() {
    let deep = format!(
        r#"{{"specversion":"1.0","id":"1","source":"/s","type":"t","data":{}{}}}"#,
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let ct = headers(&[("content-type", MODE_STRUCTURED)]);
    // Valid JSON, however deep, is opaque data: it is stored and re-encoded without recursion.
    let decoded = decode_request(&ct, Bytes::from(deep));
    let event = decoded.as_ref().map(|events| &events[0]);
    assert!(event.is_ok_and(|e| e.data().is_some_and(|d| d.len() == 200_000)));
    if let Ok(event) = event {
        assert!(encode_structured(event).len() > 200_000);
        // Too deep for serde_json::Value: the bytes are kept as data_base64.
        assert!(to_json_value(event).get("data_base64").is_some());
    }
    let spaced = "{ \"specversion\" : \"1.0\" , \"id\" : \"1\", \"source\":\"/s\",\n \
                  \"type\":\"t\", \"data\" :  null , \"datacontenttype\": \"text/plain\" }";
    let event = one(decode_request(&ct, Bytes::from_static(spaced.as_bytes())));
    assert_eq!(event.data(), None);
    let not_utf8 = decode_request(&ct, Bytes::from_static(b"{\"id\": \"\xff\"}"));
    assert_eq!(error(not_utf8).field, "body");
}

#[test]
fn batches() {
    let batch = |body: serde_json::Value| {
        decode_request(
            &headers(&[("content-type", MODE_BATCH)]),
            Bytes::from(body.to_string()),
        )
    };
    assert_eq!(batch(json!([])).expect("empty batch is valid"), Vec::new());
    let e1 = json!({"specversion": "1.0", "id": "1", "source": "/s", "type": "t"});
    let events = batch(json!([e1, e1])).expect("valid");
    assert_eq!(events.len(), 2);
    assert_eq!(
        decode_request(
            &headers(&[("content-type", MODE_BATCH)]),
            encode_batch(&events)
        ),
        Ok(events)
    );
    assert_eq!(
        error(batch(json!([e1, {"specversion": "1.0"}]))).field,
        "[1].id"
    );
    assert_eq!(error(batch(json!([5]))).field, "[0]");
    assert_eq!(error(batch(json!({}))).field, "body");
    let v03 = json!({"specversion": "0.3", "id": "1", "source": "/s", "type": "t"});
    assert_eq!(error(batch(json!([e1, v03]))).field, "[1].specversion");
}

fn binary_round_trip(event: &CloudEvent) -> CloudEvent {
    let mut headers = HeaderMap::new();
    let body = encode_binary(event, &mut headers);
    one(decode_request(&headers, body))
}

fn structured_round_trip(event: &CloudEvent) -> CloudEvent {
    let headers = headers(&[("content-type", MODE_STRUCTURED)]);
    one(decode_request(&headers, encode_structured(event)))
}

/// Attributes in canonical string form (binary mode carries every value as a string).
fn canonical(event: &CloudEvent) -> Vec<(String, String)> {
    event
        .attributes()
        .map(|(name, value)| (name.to_owned(), value.to_string()))
        .collect()
}

proptest! {
    #[test]
    fn binary_structured_binary(event in strategies::event(true)) {
        let from_binary = binary_round_trip(&event);
        prop_assert_eq!(&from_binary, &event);
        let via_structured = structured_round_trip(&from_binary);
        prop_assert_eq!(&via_structured, &from_binary);
        prop_assert_eq!(binary_round_trip(&via_structured), from_binary);
    }

    #[test]
    fn structured_binary_structured(event in strategies::event(false)) {
        let from_structured = structured_round_trip(&event);
        prop_assert_eq!(&from_structured, &event);
        prop_assert_eq!(from_json_value(&to_json_value(&event)), Ok(event.clone()));
        let via_binary = binary_round_trip(&from_structured);
        prop_assert_eq!(canonical(&via_binary), canonical(&from_structured));
        prop_assert_eq!(via_binary.data(), from_structured.data());
        prop_assert_eq!(structured_round_trip(&via_binary), via_binary);
    }

    #[test]
    fn decoder_never_panics(
        content_type in prop_oneof![
            Just(MODE_STRUCTURED.to_owned()),
            Just(MODE_BATCH.to_owned()),
            Just("application/cloudevents+xml".to_owned()),
            Just("text/plain".to_owned()),
            "[ -~]{0,20}",
        ],
        ce in prop::collection::vec(
            ("(ce-)?(specversion|id|source|type|time|datacontenttype|x|Y_z)",
             prop::collection::vec(any::<u8>(), 0..24)),
            0..8,
        ),
        body in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..128),
            Just(br#"{"specversion":"1.0","id":"1","source":"/s","type":"t","data":{}}"#.to_vec()),
            Just(br#"[{"specversion":"1.0"},{"id":1}, null]"#.to_vec()),
        ],
    ) {
        let mut headers = HeaderMap::new();
        if let Ok(value) = HeaderValue::from_str(&content_type) {
            headers.insert(CONTENT_TYPE, value);
        }
        for (name, value) in ce {
            if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_bytes(&value)) {
                headers.append(n, v);
            }
        }
        if let Ok(events) = decode_request(&headers, Bytes::from(body)) {
            for event in events {
                prop_assert!(event.validate().is_ok());
            }
        }
    }
}

#[test]
fn data_in_an_event_format_is_refused_so_delivery_cannot_substitute_it() {
    for ct in [
        "application/cloudevents+json",
        "Application/CloudEvents-Batch+JSON; charset=utf-8",
    ] {
        let err = structured(json!({
            "specversion": "1.0", "id": "outer", "source": "s", "type": "t",
            "datacontenttype": ct,
            "data": {"specversion": "1.0", "id": "inner", "source": "evil", "type": "x"}
        }))
        .expect_err(ct);
        assert_eq!(err.field, "datacontenttype", "{ct}");
    }
    // Nested as JSON data, the inner event is just data.
    let event = one(structured(json!({
        "specversion": "1.0", "id": "outer", "source": "s", "type": "t",
        "datacontenttype": "application/json",
        "data": {"specversion": "1.0", "id": "inner"}
    })));
    assert_eq!(event.id(), "outer");
}
