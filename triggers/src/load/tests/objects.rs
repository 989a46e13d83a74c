//! API objects (Kubernetes mode): each one is valid or left out on its own.

use serde_json::json;

use crate::load::{load_objects, object_label};

fn broker(name: &str) -> serde_json::Value {
    json!({"apiVersion": "eventing.knative.dev/v1", "kind": "Broker",
           "metadata": {"name": name, "namespace": "shop", "uid": "b-1", "resourceVersion": "12",
                        "generation": 1, "creationTimestamp": "2026-12-01T10:00:00Z",
                        "managedFields": [{"manager": "kubectl", "operation": "Apply"}],
                        "annotations": {"eventing.knative.dev/broker.class": "tidegate"}},
           "spec": {}, "status": {"address": {"url": "http://x"}}})
}

fn trigger(name: &str, spec: serde_json::Value) -> serde_json::Value {
    json!({"apiVersion": "eventing.knative.dev/v1", "kind": "Trigger",
           "metadata": {"name": name, "namespace": "shop", "uid": "t-1", "resourceVersion": "13", "generation": 2,
                        "finalizers": ["x"], "ownerReferences": []},
           "spec": spec})
}

#[test]
fn an_invalid_object_is_left_out_alone_with_its_located_errors() {
    let objects = vec![
        broker("orders"),
        trigger(
            "good",
            json!({"broker": "orders", "subscriber": {"uri": "http://a.shop.svc"}}),
        ),
        trigger(
            "typo",
            json!({"broker": "orders", "subscriber": {"uri": "http://a.shop.svc"}, "filtres": []}),
        ),
        trigger(
            "no-broker",
            json!({"broker": "missing", "subscriber": {"uri": "http://a.shop.svc"}}),
        ),
    ];
    let load = load_objects(&objects);
    let served: Vec<&str> = load
        .snapshot
        .triggers
        .iter()
        .map(|t| t.name.as_str())
        .collect();
    assert_eq!(load.snapshot.brokers.len(), 1, "{:?}", load.errors);
    assert!(served.contains(&"good"), "{served:?} {:?}", load.errors);
    assert!(!served.contains(&"typo"));
    let typo = load
        .errors
        .iter()
        .find(|e| e.file.to_str() == Some("Trigger.eventing.knative.dev shop/typo"))
        .expect("the typo's error");
    assert_eq!(typo.field, "spec.filtres");
    assert!(
        typo.to_string()
            .starts_with("Trigger.eventing.knative.dev shop/typo spec.filtres: "),
        "{typo}"
    );
    // A Trigger on a Broker that is not there is either left out or served not ready, never
    // a reason to reject the others.
    assert!(
        load.errors
            .iter()
            .all(|e| !e.file.to_string_lossy().contains("good"))
    );
}

#[test]
fn an_object_referring_to_a_left_out_one_is_left_out_too_and_says_why() {
    let mut bad_broker = broker("orders");
    bad_broker["spec"] = json!({"delivery": {"retry": -1}});
    let objects = vec![
        bad_broker,
        trigger(
            "t",
            json!({"broker": "orders", "subscriber": {"uri": "http://a"}}),
        ),
    ];
    let load = load_objects(&objects);
    assert!(load.snapshot.brokers.is_empty());
    assert!(
        load.errors
            .iter()
            .any(|e| e.file.to_str() == Some("Broker.eventing.knative.dev shop/orders")),
        "{:?}",
        load.errors
    );
}

#[test]
fn labels_name_kind_group_namespace_and_name() {
    assert_eq!(
        object_label(&broker("orders")),
        "Broker.eventing.knative.dev shop/orders"
    );
    let config_map = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}});
    assert_eq!(object_label(&config_map), "ConfigMap default/c");
}
