//! Every rejection names the file, the document, the field path and the reason.

use super::*;

#[test]
fn malformed_yaml_names_line_and_column() {
    one_error(
        "apiVersion: v1\nkind: [ConfigMap\n",
        0,
        "(document)",
        "line 2",
    );
    let second = format!("{DEFAULT_SET}---\nkind: Broker\n  bad: indent\n");
    let errors = invalid(&[("m.yaml", &second)]);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert_eq!(
        (errors[0].document, errors[0].field.as_str()),
        (2, "(document)")
    );
    assert!(
        errors[0].reason.starts_with("invalid YAML: "),
        "{}",
        errors[0]
    );
    assert!(errors[0].reason.contains("line"), "{}", errors[0]);
}

#[test]
fn documents_must_be_mappings_with_a_known_kind() {
    one_error("- a\n- b\n", 0, "(document)", "found a list");
    one_error(
        "kind: Broker\n",
        0,
        "apiVersion",
        "required field is missing",
    );
    one_error("apiVersion: v1\nkind: 3\n", 0, "kind", "expected a string");
    one_error(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: s}\n",
        0,
        "kind",
        "unsupported kind \"Pod\"",
    );
    one_error(
        "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata: {name: s}\n",
        0,
        "spec",
        "required field is missing",
    );
    one_error(
        "apiVersion: serving.knative.dev/v2\nkind: Service\nmetadata: {name: s}\n",
        0,
        "apiVersion",
        "expected serving.knative.dev/v1",
    );
    one_error(
        "apiVersion: tidegate.dev/v1\nkind: Trigger\nmetadata: {name: s}\n",
        0,
        "apiVersion",
        "expected eventing.knative.dev/v1 or tidegate.dev/v1alpha1",
    );
    one_error(
        "apiVersion: eventing.knative.dev/v1beta1\nkind: Trigger\n",
        0,
        "apiVersion",
        "expected eventing.knative.dev/v1",
    );
}

#[test]
fn unknown_and_missing_fields_name_their_path() {
    let yaml = trigger(
        "t",
        "  subscriber:\n    uri: http://x\n    urll: http://y\n",
    );
    one_error(&yaml, 0, "spec.subscriber.urll", "unknown field `urll`");
    one_error(
        &trigger("t", "  broker: b\n"),
        0,
        "spec.subscriber",
        "required field is missing",
    );
    let yaml = "apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata: {name: b, uidd: x}\n";
    one_error(yaml, 0, "metadata.uidd", "unknown field");
    let yaml = "apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata: {namespace: x}\n";
    one_error(yaml, 0, "metadata.name", "required field is missing");
    let yaml = "apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata: {name: Bad_Name}\n";
    one_error(yaml, 0, "metadata.name", "invalid name");
}

#[test]
fn delivery_values() {
    let delivery = |body: &str| trigger("t", &format!("{SUBSCRIBER}  delivery:\n    {body}\n"));
    one_error(
        &delivery("backoffPolicy: quadratic"),
        0,
        "spec.delivery.backoffPolicy",
        "unknown variant `quadratic`",
    );
    one_error(
        &delivery("timeout: 10s"),
        0,
        "spec.delivery.timeout",
        "invalid ISO-8601 duration \"10s\"",
    );
    one_error(
        &delivery("backoffDelay: P1M"),
        0,
        "spec.delivery.backoffDelay",
        "months",
    );
    one_error(
        &delivery("timeout: PT0S"),
        0,
        "spec.delivery.timeout",
        "greater than zero",
    );
    one_error(
        &delivery("retry: -1"),
        0,
        "spec.delivery.retry",
        "must be 0 or more",
    );
    one_error(
        &delivery("retry: 1.5"),
        0,
        "spec.delivery.retry",
        "invalid type",
    );
    one_error(
        &delivery("deadLetterSink: {uri: dlq}"),
        0,
        "spec.delivery.deadLetterSink.uri",
        "absolute",
    );
}

#[test]
fn filter_dialects() {
    let filters = |body: &str| trigger("t", &format!("  filters:\n{body}{SUBSCRIBER}"));
    one_error(
        &filters("    - exact: {type: a}\n      prefix: {type: b}\n"),
        0,
        "spec.filters[0]",
        "found exact and prefix",
    );
    one_error(&filters("    - {}\n"), 0, "spec.filters[0]", "found none");
    one_error(
        &filters("    - exact: {type: a, source: b}\n"),
        0,
        "spec.filters[0].exact",
        "exactly one attribute; found source, type",
    );
    one_error(
        &filters("    - exact: {type: a}\n    - cesql: \"type = 'a' AND\"\n"),
        0,
        "spec.filters[1].cesql",
        "invalid CESQL expression at column 15: expected an expression",
    );
    one_error(
        &filters("    - all:\n        - exact: {type: a}\n        - prefix: {My-Ext: b}\n"),
        0,
        "spec.filters[0].all[1].prefix.My-Ext",
        "invalid CloudEvents attribute name",
    );
    one_error(
        &filters("    - suffix: {type: \"\"}\n"),
        0,
        "spec.filters[0].suffix.type",
        "must not be empty",
    );
    one_error(
        &filters("    - not: {any: [{exact: {}}]}\n"),
        0,
        "spec.filters[0].not.any[0].exact",
        "found none",
    );
    one_error(
        &filters("    - prefix: {type: a}\n      unknown: x\n"),
        0,
        "spec.filters[0].unknown",
        "unknown field",
    );
    let attributes = trigger(
        "t",
        &format!("  filter:\n    attributes: {{Type: a}}\n{SUBSCRIBER}"),
    );
    one_error(
        &attributes,
        0,
        "spec.filter.attributes.Type",
        "invalid CloudEvents attribute name",
    );
}

#[test]
fn subscribers() {
    let subscriber = |body: &str| trigger("t", &format!("  subscriber:\n{body}"));
    one_error(
        &subscriber("    uri: ftp://x/\n"),
        0,
        "spec.subscriber.uri",
        "scheme must be http or https",
    );
    one_error(
        &subscriber("    uri: not a url\n"),
        0,
        "spec.subscriber.uri",
        "invalid uri",
    );
    one_error(
        &subscriber("    {}\n"),
        0,
        "spec.subscriber",
        "set ref, uri",
    );
    one_error(
        &subscriber("    ref: {apiVersion: v1, kind: Service, name: s}\n    uri: http://x/\n"),
        0,
        "spec.subscriber.uri",
        "relative path",
    );
    one_error(
        &subscriber("    ref: {apiVersion: v1, kind: Service}\n"),
        0,
        "spec.subscriber.ref.name",
        "required field is missing",
    );
}

#[test]
fn trigger_annotations() {
    let annotated = |key: &str, value: &str| {
        trigger("t", SUBSCRIBER).replace(
            "  name: t\n",
            &format!("  name: t\n  annotations: {{{key}: \"{value}\"}}\n"),
        )
    };
    one_error(
        &annotated("tidegate.dev/delivery-order", "fifo"),
        0,
        "metadata.annotations[\"tidegate.dev/delivery-order\"]",
        "expected ordered or unordered",
    );
    one_error(
        &annotated("tidegate.dev/max-in-flight", "0"),
        0,
        "metadata.annotations[\"tidegate.dev/max-in-flight\"]",
        "positive integer",
    );
    let typo = annotated("tidegate.dev/max-inflight", "5");
    let snapshot = valid(&[("t.yaml", &typo), ("d.yaml", DEFAULT_SET)]);
    assert_eq!(
        snapshot.warnings[0].field,
        "metadata.annotations[\"tidegate.dev/max-inflight\"]"
    );
    let unquoted = trigger("t", SUBSCRIBER).replace(
        "  name: t\n",
        "  name: t\n  annotations: {tidegate.dev/max-in-flight: 5}\n",
    );
    one_error(
        &unquoted,
        0,
        "metadata.annotations[\"tidegate.dev/max-in-flight\"]",
        "quote the value",
    );
}

#[test]
fn duplicates_across_files() {
    let yaml = trigger("t", SUBSCRIBER);
    let errors = invalid(&[
        ("a.yaml", &yaml),
        ("d.yaml", DEFAULT_SET),
        ("b.yaml", &yaml),
    ]);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert_eq!(errors[0].file, PathBuf::from("b.yaml"));
    assert_eq!(errors[0].field, "metadata.name");
    assert!(
        errors[0]
            .reason
            .contains("duplicate Trigger default/t; first defined in a.yaml document 0")
    );
    let other_namespace = yaml.replace("  name: t\n", "  name: t\n  namespace: other\n");
    valid(&[("a.yaml", &yaml), ("b.yaml", &other_namespace)]);
}

#[test]
fn broker_config_references() {
    let broker = |config: &str| {
        format!(
            "apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata: {{name: b}}\nspec:\n  config: {config}\n"
        )
    };
    one_error(
        &broker("{apiVersion: v1, kind: ConfigMap, name: missing}"),
        0,
        "spec.config.name",
        "ConfigMap default/missing is not in the manifest set",
    );
    one_error(
        &broker("{apiVersion: v1, kind: Secret, name: s}"),
        0,
        "spec.config.kind",
        "must be ConfigMap",
    );

    let with_data = |data: &str| {
        format!(
            "{}---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: c}}\ndata: {data}\n",
            broker("{apiVersion: v1, kind: ConfigMap, name: c}")
        )
    };
    one_error(
        &with_data("{backend: rabbit}"),
        1,
        "data.backend",
        "unknown backend \"rabbit\"",
    );
    one_error(
        &with_data("{backend: nats}"),
        1,
        "data.url",
        "required for backend nats",
    );
    one_error(
        &with_data("{backend: nats, url: nats://x, stream: a.b}"),
        1,
        "data.stream",
        "invalid NATS stream name",
    );
    one_error(
        &with_data("{backend: kafka}"),
        1,
        "data[\"bootstrap.servers\"]",
        "required for backend kafka",
    );
    one_error(
        &with_data("{backend: kafka, bootstrap.servers: k, partitions: \"0\"}"),
        1,
        "data.partitions",
        "positive integer",
    );
    one_error(
        &with_data("{backend: kafka, bootstrap.servers: k, partitions: 3}"),
        1,
        "data.partitions",
        "quote the value",
    );
    for (data, field, reason) in [
        (
            "{backend: nats, url: \"http://x\"}",
            "data.url",
            "not a NATS URL",
        ),
        (
            "{backend: nats, url: nats://x, storage: disk}",
            "data.storage",
            "file or memory",
        ),
        (
            "{backend: nats, url: nats://x, replicas: \"9\"}",
            "data.replicas",
            "from 1 to 5",
        ),
        (
            "{backend: nats, url: nats://x, max_age: soon}",
            "data.max_age",
            "invalid duration",
        ),
        (
            "{backend: nats, url: nats://x, max_bytes: \"-1\"}",
            "data.max_bytes",
            "integer",
        ),
        (
            "{backend: nats, url: nats://x, subject: \"a.>\"}",
            "data.subject",
            "subject prefix",
        ),
        (
            "{backend: kafka, bootstrap.servers: k, default.topic.replication.factor: \"x\"}",
            "data[\"default.topic.replication.factor\"]",
            "integer",
        ),
        (
            "{backend: nats, url: nats://x, auth.secret.ref.name: gone}",
            "data[\"auth.secret.ref.name\"]",
            "Secret default/gone is not in the manifest set",
        ),
    ] {
        one_error(&with_data(data), 1, field, reason);
    }
}

#[test]
fn broker_credentials_come_from_secrets_and_never_appear_in_errors() {
    let yaml = |secret_data: &str| {
        format!(
            "apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata: {{name: b}}\nspec:\n  config: {{apiVersion: v1, kind: ConfigMap, name: c}}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: c}}\ndata: {{backend: kafka, bootstrap.servers: k, auth.secret.ref.name: creds}}\n---\napiVersion: v1\nkind: Secret\nmetadata: {{name: creds}}\ntype: Opaque\n{secret_data}\n"
        )
    };
    // Knative's keys; `data` is base64, `stringData` plain.
    let snapshot = valid(&[(
        "k.yaml",
        &yaml(
            "data: {protocol: U0FTTF9TU0w=, sasl.mechanism: UExBSU4=, user: YXBw}\nstringData: {password: hunter2}",
        ),
    )]);
    let Backend::Kafka(kafka) = &snapshot.brokers[0].backend else {
        panic!("kafka backend expected");
    };
    let auth = kafka.auth.as_ref().expect("auth");
    assert_eq!(auth.protocol, "SASL_SSL");
    assert_eq!(auth.sasl_mechanism.as_deref(), Some("PLAIN"));
    assert_eq!(auth.password.as_deref(), Some("hunter2"));
    assert!(
        !format!("{snapshot:?}").contains("hunter2"),
        "secrets stay out of Debug"
    );

    one_error(
        &yaml("data: {protocol: U0FTTF9TU0w=, user: YXBw}"),
        2,
        "data.password",
        "required for protocol SASL_SSL",
    );
    one_error(
        &yaml("data: {password: \"not base64!\"}"),
        2,
        "data.password",
        "must be base64",
    );
    let errors = invalid(&[("k.yaml", &yaml("data: {password: 12345678}"))]);
    assert!(
        errors.iter().all(|e| !e.to_string().contains("12345678")),
        "a Secret's value never appears in an error: {errors:#?}"
    );
}

#[test]
fn every_error_of_the_set_is_reported() {
    let bad_uri = trigger("a", "  subscriber: {uri: nope}\n");
    let bad_filter = trigger(
        "b",
        &format!("  filters: [{{cesql: \"x =\"}}]\n{SUBSCRIBER}"),
    );
    let bad_kind = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\n";
    let file = format!("{bad_uri}\n---\n{bad_filter}\n---\n{bad_kind}");
    let errors = invalid(&[("one.yaml", &file), ("two.yaml", "kind: [\n")]);
    let located: Vec<_> = errors
        .iter()
        .map(|e| {
            (
                e.file.to_string_lossy().into_owned(),
                e.document,
                e.field.as_str(),
            )
        })
        .collect();
    assert_eq!(
        located,
        [
            ("one.yaml".to_owned(), 2, "kind"),
            ("two.yaml".to_owned(), 0, "(document)"),
            ("one.yaml".to_owned(), 0, "spec.subscriber.uri"),
            ("one.yaml".to_owned(), 1, "spec.filters[0].cesql"),
        ]
    );
    assert_eq!(
        errors[2].to_string(),
        "one.yaml document 0: spec.subscriber.uri: invalid uri \"nope\": expected an absolute \
         http:// or https:// URL"
    );
}

#[test]
fn each_problem_is_reported_once() {
    let broker = |name: &str| {
        format!(
            "apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata: {{name: {name}}}\n\
             spec:\n  config: {{apiVersion: v1, kind: ConfigMap, name: c}}\n---\n"
        )
    };
    let config_map = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n";
    let shared = format!(
        "{}{}{config_map}data: {{backend: nats}}\n",
        broker("a"),
        broker("b")
    );
    one_error(&shared, 2, "data.url", "required for backend nats");
    let rejected = format!("{}{config_map}data: {{partitions: 3}}\n", broker("a"));
    one_error(&rejected, 1, "data.partitions", "quote the value");
}

#[test]
fn hostile_cesql_is_rejected_with_a_limit() {
    let deep = format!("{}TRUE{}", "(".repeat(5_000), ")".repeat(5_000));
    let long = format!("type = '{}'", "a".repeat(1 << 20));
    for (expression, limit) in [(deep, "MAX_DEPTH"), (long, "MAX_SOURCE_LEN")] {
        let yaml = trigger(
            "t",
            &format!("  filters:\n    - cesql: \"{expression}\"\n{SUBSCRIBER}"),
        );
        let errors = invalid(&[("t.yaml", &yaml)]);
        assert_eq!(errors.len(), 1, "{limit}");
        assert_eq!(errors[0].field, "spec.filters[0].cesql");
        assert!(errors[0].reason.contains(limit), "{}", errors[0].reason);
    }
}
