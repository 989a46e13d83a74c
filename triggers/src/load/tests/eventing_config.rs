//! Knative Eventing's defaults ConfigMaps, `spec.brokerRef` and core Service subscribers.

use super::*;
use crate::snapshot::Backend;

fn broker(name: &str, namespace: &str, spec: &str) -> String {
    format!(
        "apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata: {{name: {name}, namespace: {namespace}}}\nspec:{spec}\n"
    )
}

fn features(data: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: config-features, namespace: knative-eventing}}\ndata:\n{data}"
    )
}

#[test]
fn brokers_naming_knatives_channel_config_are_embedded() {
    // As the Knative docs write a channel-based Broker; the ConfigMap is not in the set.
    let reference = broker(
        "default",
        "default",
        "\n  config:\n    apiVersion: v1\n    kind: ConfigMap\n    name: config-br-default-channel\n    namespace: knative-eventing\n",
    );
    let snapshot = valid(&[("b.yaml", &reference)]);
    assert_eq!(snapshot.brokers[0].backend, Backend::Embedded);
    // A user's own channel config (`channel-template-spec`) is read the same way.
    let own = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: imc-channel, namespace: default}\ndata:\n  channel-template-spec: |\n    apiVersion: messaging.knative.dev/v1\n    kind: InMemoryChannel\n";
    let reference = broker(
        "default",
        "default",
        "\n  config: {apiVersion: v1, kind: ConfigMap, name: imc-channel}\n",
    );
    let snapshot = valid(&[("b.yaml", &reference), ("c.yaml", own)]);
    assert_eq!(snapshot.brokers[0].backend, Backend::Embedded);
}

#[test]
fn config_br_defaults_fills_brokers_that_set_nothing() {
    let defaults = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: config-br-defaults, namespace: knative-eventing}\ndata:\n  default-br-config: |\n    clusterDefault:\n      brokerClass: MTChannelBasedBroker\n      apiVersion: v1\n      kind: ConfigMap\n      name: config-br-default-channel\n      namespace: knative-eventing\n      delivery:\n        retry: 3\n        backoffPolicy: linear\n        backoffDelay: PT0.5S\n    namespaceDefaults:\n      orders:\n        brokerClass: Kafka\n        apiVersion: v1\n        kind: ConfigMap\n        name: kafka-broker-config\n        namespace: knative-eventing\n";
    let kafka = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: kafka-broker-config, namespace: knative-eventing}\ndata:\n  bootstrap.servers: 127.0.0.1:9092\n  default.topic.partitions: \"3\"\n  default.topic.replication.factor: \"1\"\n";
    let plain = broker("default", "default", " {}");
    let orders = broker("default", "orders", " {}");
    let t = trigger("t", SUBSCRIBER);
    let snapshot = valid(&[
        ("d.yaml", defaults),
        ("k.yaml", kafka),
        ("b.yaml", &plain),
        ("o.yaml", &orders),
        ("t.yaml", &t),
    ]);
    let backend = |ns: &str| {
        snapshot
            .brokers
            .iter()
            .find(|b| b.namespace == ns)
            .map(|b| b.backend.clone())
    };
    assert_eq!(backend("default"), Some(Backend::Embedded));
    assert!(
        matches!(backend("orders"), Some(Backend::Kafka(_))),
        "{:?}",
        backend("orders")
    );
    let delivery = &snapshot.triggers[0].delivery;
    assert_eq!(delivery.retry, 3);
    assert_eq!(delivery.backoff_delay, Duration::from_millis(500));

    let broken = defaults.replace("    clusterDefault:\n", "    clusterDefault: [\n");
    let errors = invalid(&[("d.yaml", &broken), ("b.yaml", &plain)]);
    assert_eq!(errors[0].field, "data.default-br-config", "{errors:#?}");
}

#[test]
fn broker_ref_names_the_broker_as_knative_does() {
    let same = trigger(
        "t",
        &format!(
            "  brokerRef: {{apiVersion: eventing.knative.dev/v1, kind: Broker, name: orders}}\n{SUBSCRIBER}"
        ),
    );
    let snapshot = valid(&[
        ("t.yaml", &same),
        ("b.yaml", &broker("orders", "default", " {}")),
    ]);
    let t = &snapshot.triggers[0];
    assert_eq!(
        (t.broker_namespace.as_str(), t.broker.as_str()),
        ("default", "orders")
    );
    assert!(t.broker_ready);

    let other = same.replace("name: orders}", "name: orders, namespace: shop}");
    let errors = invalid(&[
        ("t.yaml", &other),
        ("b.yaml", &broker("orders", "shop", " {}")),
    ]);
    assert_eq!(errors[0].field, "spec.brokerRef.namespace");
    assert!(errors[0].reason.contains("cross-namespace-event-links"));
    let snapshot = valid(&[
        ("t.yaml", &other),
        ("b.yaml", &broker("orders", "shop", " {}")),
        (
            "f.yaml",
            &features("  cross-namespace-event-links: enabled\n"),
        ),
    ]);
    let t = &snapshot.triggers[0];
    assert_eq!(
        (t.namespace.as_str(), t.broker_namespace.as_str()),
        ("default", "shop")
    );
    assert!(t.broker_ready);

    let both = same.replace("spec:\n", "spec:\n  broker: default\n");
    one_error(
        &both,
        0,
        "spec.brokerRef",
        "set only one of spec.broker and spec.brokerRef",
    );
    let wrong = same.replace("kind: Broker", "kind: Channel");
    one_error(&wrong, 0, "spec.brokerRef.kind", "must be Broker");
}

#[test]
fn core_service_subscribers_resolve_in_kubernetes_mode_only() {
    let t = trigger(
        "t",
        "  subscriber:\n    ref: {apiVersion: v1, kind: Service, name: event-display}\n    uri: /events\n",
    );
    let snapshot = valid(&[
        ("t.yaml", &t),
        ("b.yaml", &broker("default", "default", " {}")),
    ]);
    let subscriber = &snapshot.triggers[0].subscriber;
    assert_eq!(
        subscriber.kubernetes_url().as_deref(),
        Some("http://event-display.default.svc.cluster.local/events")
    );
    assert!(
        snapshot
            .warnings
            .iter()
            .any(|w| w.field == "spec.subscriber.ref" && w.reason.contains("Kubernetes mode only")),
        "{:?}",
        snapshot.warnings
    );
}
