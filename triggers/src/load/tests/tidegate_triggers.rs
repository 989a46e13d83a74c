//! `tidegate.dev/v1alpha1` Triggers: the Services they create, and their rejections.

use super::*;
use crate::snapshot::{DEFAULT_PRECISE_SCALE_DOWN_DELAY, ScalingClass};

/// A tidegate Trigger `name` in namespace `shop` with `spec` lines.
fn tidegate_trigger(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: tidegate.dev/v1alpha1\nkind: Trigger\nmetadata:\n  name: {name}\n  \
         namespace: shop\nspec:\n  broker: orders\n{spec}"
    )
}

/// `spec.service` with `metadata` (a flow mapping) and one container running `worker`.
fn inline_service(metadata: &str) -> String {
    format!(
        "  service:\n    metadata: {metadata}\n    spec:\n      template:\n        spec:\n          \
         containerConcurrency: 2\n          containers: [{{command: [worker]}}]\n"
    )
}

const BROKER: &str = "apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata: {name: orders, namespace: shop}\n";

/// A standalone Service `name` in `shop`.
fn standalone(name: &str) -> String {
    format!(
        "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata: {{name: {name}, namespace: \
         shop}}\nspec:\n  template:\n    spec:\n      containers: [{{image: x, command: [x]}}]\n"
    )
}

fn service_ref(name: &str) -> Destination {
    Destination::Ref {
        api_version: "serving.knative.dev/v1".into(),
        kind: "Service".into(),
        namespace: "shop".into(),
        name: name.into(),
        path: None,
    }
}

#[test]
fn creates_and_subscribes_its_service_with_precise_defaults() {
    let created = tidegate_trigger(
        "created",
        &format!(
            "  filters: [{{exact: {{type: order.created}}}}]\n{}",
            inline_service("{}")
        ),
    );
    let named = tidegate_trigger("paid", &inline_service("{name: payments, labels: {a: b}}"));
    let snapshot = valid(&[("t.yaml", &created), ("u.yaml", &named), ("b.yaml", BROKER)]);
    assert_eq!(snapshot.warnings, Vec::<ManifestWarning>::new());

    let trigger = find(&snapshot, "shop", "created");
    assert_eq!(trigger.subscriber, service_ref("created"));
    assert_eq!(trigger.owned_service.as_deref(), Some("created"));
    assert!(trigger.broker_ready);
    assert_eq!(
        trigger.filter,
        Filter::All(vec![Filter::Exact {
            attribute: "type".into(),
            value: "order.created".into()
        }])
    );
    assert_eq!(
        find(&snapshot, "shop", "paid").subscriber,
        service_ref("payments")
    );

    let names: Vec<_> = snapshot
        .services
        .iter()
        .map(|s| (s.name.as_str(), s.owner.as_deref()))
        .collect();
    assert_eq!(
        names,
        [("created", Some("created")), ("payments", Some("paid"))]
    );
    let service = &snapshot.services[0];
    assert_eq!(service.namespace, "shop");
    let scaling = &service.template.scaling;
    assert_eq!(scaling.class, ScalingClass::Precise);
    assert_eq!(scaling.scale_down_delay, DEFAULT_PRECISE_SCALE_DOWN_DELAY);
    assert_eq!(service.template.container_concurrency, 2);

    let kpa = tidegate_trigger(
        "created",
        &inline_service("{}").replace(
            "      template:\n",
            "      template:\n        metadata:\n          annotations: \
             {autoscaling.knative.dev/class: kpa.autoscaling.knative.dev}\n",
        ),
    );
    let snapshot = valid(&[("t.yaml", &kpa), ("b.yaml", BROKER)]);
    let scaling = &snapshot.services[0].template.scaling;
    assert_eq!(
        (scaling.class, scaling.scale_down_delay),
        (ScalingClass::Kpa, Duration::ZERO),
        "an explicit class brings its own defaults"
    );
}

#[test]
fn without_a_service_it_is_a_knative_trigger() {
    let yaml = tidegate_trigger("plain", "  subscriber: {uri: http://sink/}\n");
    let snapshot = valid(&[("t.yaml", &yaml), ("b.yaml", BROKER)]);
    let trigger = find(&snapshot, "shop", "plain");
    assert_eq!(trigger.subscriber, Destination::Uri("http://sink/".into()));
    assert_eq!(trigger.owned_service, None);
    assert_eq!(snapshot.services, []);

    let knative = yaml.replace("tidegate.dev/v1alpha1", "eventing.knative.dev/v1");
    let same = valid(&[("t.yaml", &knative), ("b.yaml", BROKER)]);
    assert_eq!(same.triggers, snapshot.triggers);
}

#[test]
fn subscriber_refs_to_services_of_the_set_resolve_quietly() {
    let knative = trigger("k", "  subscriber:\n    ref: {apiVersion: serving.knative.dev/v1, kind: Service, name: billing}\n")
        .replace("  name: k\n", "  name: k\n  namespace: shop\n")
        .replace("spec:\n", "spec:\n  broker: orders\n");
    let snapshot = valid(&[
        ("k.yaml", &knative),
        ("s.yaml", &standalone("billing")),
        ("b.yaml", BROKER),
    ]);
    assert_eq!(snapshot.warnings, Vec::<ManifestWarning>::new());
    let to_created = knative.replace("name: billing", "name: created");
    let owner = tidegate_trigger("created", &inline_service("{}"));
    let snapshot = valid(&[
        ("k.yaml", &to_created),
        ("t.yaml", &owner),
        ("b.yaml", BROKER),
    ]);
    assert_eq!(snapshot.warnings, Vec::<ManifestWarning>::new());
    let missing = knative.replace("name: billing", "name: gone");
    let snapshot = valid(&[("k.yaml", &missing), ("b.yaml", BROKER)]);
    assert_eq!(snapshot.triggers.len(), 1, "kept");
    assert_eq!(snapshot.warnings.len(), 1);
    assert_eq!(snapshot.warnings[0].field, "spec.subscriber.ref.name");
    assert!(
        snapshot.warnings[0]
            .reason
            .contains("Service shop/gone is not in the manifest set")
    );
}

#[test]
fn rejections() {
    let both = tidegate_trigger(
        "t",
        &format!("  subscriber: {{uri: http://x/}}\n{}", inline_service("{}")),
    );
    one_error(
        &both,
        0,
        "spec.subscriber",
        "must be absent when spec.service is set",
    );
    one_error(
        &tidegate_trigger("t", ""),
        0,
        "spec.subscriber",
        "required field is missing (or set spec.service",
    );

    let owner = tidegate_trigger("billing", &inline_service("{}"));
    let errors = invalid(&[("s.yaml", &standalone("billing")), ("t.yaml", &owner)]);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert_eq!(
        (
            errors[0].file.to_string_lossy(),
            errors[0].document,
            errors[0].field.as_str()
        ),
        ("t.yaml".into(), 0, "metadata.name")
    );
    assert!(
        errors[0].reason.contains(
            "the Service shop/billing this Trigger creates collides with the one that is defined \
             in s.yaml document 0"
        ),
        "{}",
        errors[0]
    );

    let second = tidegate_trigger("other", &inline_service("{name: billing}"));
    let errors = invalid(&[("t.yaml", &owner), ("u.yaml", &second)]);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert_eq!(errors[0].field, "spec.service.metadata.name");
    assert!(
        errors[0]
            .reason
            .contains("that Trigger shop/billing creates in t.yaml document 0")
    );

    let knative_twin = trigger("billing", SUBSCRIBER)
        .replace("  name: billing\n", "  name: billing\n  namespace: shop\n");
    let errors = invalid(&[("t.yaml", &owner), ("k.yaml", &knative_twin)]);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert!(errors[0].reason.contains("duplicate Trigger shop/billing"));

    let long = "t".repeat(60);
    one_error(
        &tidegate_trigger(&long, &inline_service("{}")),
        0,
        "metadata.name",
        "unless spec.service.metadata.name is set",
    );
    one_error(
        &tidegate_trigger("t", &inline_service("{name: Bad}")),
        0,
        "spec.service.metadata.name",
        "invalid name",
    );
    one_error(
        &tidegate_trigger("t", &inline_service("{namespace: other}")),
        0,
        "spec.service.metadata.namespace",
        "the Service is created in the Trigger's namespace",
    );
    one_error(
        &tidegate_trigger("t", &inline_service("{}").replace("[worker]", "[]")),
        0,
        "spec.service.spec.template.spec.containers[0].command",
        "set command",
    );
    let traffic = format!(
        "{}      traffic: [{{revisionName: other-00001, percent: 100}}]\n",
        inline_service("{name: svc}")
    );
    one_error(
        &tidegate_trigger("t", &traffic),
        0,
        "spec.service.spec.traffic[0].revisionName",
        "not a revision of Service shop/svc",
    );
    let annotated = inline_service("{}").replace(
        "      template:\n",
        "      template:\n        metadata:\n          annotations: \
         {autoscaling.knative.dev/min-scale: \"-1\"}\n",
    );
    one_error(
        &tidegate_trigger("t", &annotated),
        0,
        "spec.service.spec.template.metadata.annotations[\"autoscaling.knative.dev/min-scale\"]",
        "integer of at least 0",
    );
}
