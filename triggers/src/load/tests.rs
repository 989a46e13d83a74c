use std::path::PathBuf;
use std::time::Duration;

use super::*;
use crate::error::ManifestWarning;
use crate::filter::Filter;
use crate::snapshot::{
    Backend, BackoffPolicy, DEFAULT_BACKOFF_DELAY, DEFAULT_BACKOFF_POLICY, DEFAULT_MAX_IN_FLIGHT,
    DEFAULT_RETRY, DEFAULT_TIMEOUT, DeliveryOrder, Destination, TriggerConfig,
};

const SHOP: &str = r#"
apiVersion: v1
kind: ConfigMap
metadata:
  name: nats-config
  namespace: shop
data:
  backend: nats
  url: nats://127.0.0.1:4222
---
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata:
  name: orders
  namespace: shop
  annotations:
    eventing.knative.dev/broker.class: tidegate
spec:
  config:
    apiVersion: v1
    kind: ConfigMap
    name: nats-config
  delivery:
    retry: 3
    backoffPolicy: linear
    deadLetterSink:
      uri: http://dlq.shop.svc/events
---
# a comment-only document is skipped
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata:
  name: created
  namespace: shop
  annotations:
    tidegate.dev/delivery-order: ordered
    tidegate.dev/max-in-flight: "5"
spec:
  broker: orders
  filters:
    - prefix: {type: com.example.order.}
    - not: {exact: {source: /test}}
  subscriber:
    ref: {apiVersion: serving.knative.dev/v1, kind: Service, name: billing}
    uri: /events
  delivery:
    backoffDelay: PT0.5S
    timeout: PT10S
"#;

const DEFAULT_SET: &str = r#"
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata:
  name: audit
spec:
  filter:
    attributes: {type: com.example.audit, subject: ""}
  subscriber:
    uri: http://audit.default.svc:8080/in
---
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata:
  name: default
"#;

/// A Trigger document with `spec` lines inserted (two-space indented under `spec:`).
fn trigger(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata:\n  name: {name}\nspec:\n{spec}"
    )
}

const SUBSCRIBER: &str = "  subscriber:\n    uri: http://sink/\n";

fn load(files: &[(&str, &str)]) -> Result<Snapshot, Vec<ManifestError>> {
    let files: Vec<(PathBuf, String)> = files
        .iter()
        .map(|(name, text)| (PathBuf::from(name), (*text).to_owned()))
        .collect();
    load_documents(&files)
}

fn valid(files: &[(&str, &str)]) -> Snapshot {
    match load(files) {
        Ok(snapshot) => snapshot,
        Err(errors) => panic!("unexpected errors: {errors:#?}"),
    }
}

fn invalid(files: &[(&str, &str)]) -> Vec<ManifestError> {
    match load(files) {
        Ok(snapshot) => panic!("unexpectedly valid: {snapshot:#?}"),
        Err(errors) => errors,
    }
}

/// Asserts a single-file set fails with exactly one error at `document`/`field`.
fn one_error(yaml: &str, document: usize, field: &str, reason: &str) {
    let errors = invalid(&[("m.yaml", yaml)]);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    let error = &errors[0];
    assert_eq!(error.file, PathBuf::from("m.yaml"), "{error}");
    assert_eq!(
        (error.document, error.field.as_str()),
        (document, field),
        "{error}"
    );
    assert!(error.reason.contains(reason), "{error}");
}

fn find<'a>(snapshot: &'a Snapshot, namespace: &str, name: &str) -> &'a TriggerConfig {
    match snapshot
        .triggers
        .iter()
        .find(|t| t.namespace == namespace && t.name == name)
    {
        Some(t) => t,
        None => panic!("no trigger {namespace}/{name}"),
    }
}

#[test]
fn valid_set_across_files() {
    let snapshot = valid(&[("shop.yaml", SHOP), ("default.yml", DEFAULT_SET)]);
    let warnings: Vec<_> = snapshot
        .warnings
        .iter()
        .map(|w| (w.file.to_string_lossy(), w.document, w.field.as_str()))
        .collect();
    assert_eq!(
        warnings,
        [("shop.yaml".into(), 2, "spec.subscriber.ref.name")],
        "the billing Service is not in the set"
    );
    assert!(snapshot.warnings[0].reason.contains("Service shop/billing"));

    let brokers: Vec<_> = snapshot
        .brokers
        .iter()
        .map(|b| (b.namespace.as_str(), b.name.as_str(), &b.backend))
        .collect();
    let nats = Backend::Nats(brokers::config::NatsConfig {
        urls: vec!["nats://127.0.0.1:4222".into()],
        stream: "shop-orders".into(),
        subject: "tidegate.shop.orders".into(),
        storage: brokers::config::NatsStorage::File,
        replicas: 1,
        max_age: None,
        max_bytes: None,
        duplicate_window: None,
        auth: None,
    });
    assert_eq!(
        brokers,
        [
            ("default", "default", &Backend::Embedded),
            ("shop", "orders", &nats)
        ]
    );

    let created = find(&snapshot, "shop", "created");
    assert!(created.broker_ready);
    assert_eq!(created.broker, "orders");
    assert_eq!(created.order, DeliveryOrder::Ordered);
    assert_eq!(created.max_in_flight, 5);
    assert_eq!(
        created.subscriber,
        Destination::Ref {
            api_version: "serving.knative.dev/v1".into(),
            kind: "Service".into(),
            namespace: "shop".into(),
            name: "billing".into(),
            path: Some("/events".into()),
        }
    );
    assert_eq!(
        created.filter,
        Filter::All(vec![
            Filter::Prefix {
                attribute: "type".into(),
                value: "com.example.order.".into()
            },
            Filter::Not(Box::new(Filter::Exact {
                attribute: "source".into(),
                value: "/test".into()
            })),
        ])
    );

    let audit = find(&snapshot, "default", "audit");
    assert_eq!(audit.broker, "default");
    assert_eq!(audit.order, DeliveryOrder::Unordered);
    assert_eq!(audit.max_in_flight, DEFAULT_MAX_IN_FLIGHT);
    assert_eq!(
        audit.subscriber,
        Destination::Uri("http://audit.default.svc:8080/in".into())
    );
    assert_eq!(
        audit.filter,
        Filter::All(vec![
            Filter::Exists {
                attribute: "subject".into()
            },
            Filter::Exact {
                attribute: "type".into(),
                value: "com.example.audit".into()
            },
        ])
    );
    let names: Vec<_> = snapshot.triggers.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["audit", "created"], "sorted by namespace, name");
}

#[test]
fn delivery_defaults_trigger_then_broker_then_constants() {
    let snapshot = valid(&[("shop.yaml", SHOP), ("default.yml", DEFAULT_SET)]);
    let created = &find(&snapshot, "shop", "created").delivery;
    assert_eq!(created.retry, 3, "from the broker");
    assert_eq!(
        created.backoff_policy,
        BackoffPolicy::Linear,
        "from the broker"
    );
    assert_eq!(created.backoff_delay, Duration::from_millis(500), "own");
    assert_eq!(created.timeout, Duration::from_secs(10), "own");
    assert_eq!(
        created.dead_letter_sink,
        Some(Destination::Uri("http://dlq.shop.svc/events".into())),
        "from the broker"
    );
    assert_eq!(created.retry_after_max, None);

    let audit = &find(&snapshot, "default", "audit").delivery;
    assert_eq!(audit.retry, DEFAULT_RETRY);
    assert_eq!(audit.backoff_policy, DEFAULT_BACKOFF_POLICY);
    assert_eq!(audit.backoff_delay, DEFAULT_BACKOFF_DELAY);
    assert_eq!(audit.timeout, DEFAULT_TIMEOUT);
    assert_eq!(audit.dead_letter_sink, None);

    let own = trigger(
        "own",
        "  broker: orders\n  subscriber: {uri: http://x}\n  delivery:\n    retry: 0\n    \
         backoffPolicy: exponential\n    retryAfterMax: PT1M\n    deadLetterSink:\n      \
         ref: {apiVersion: v1, kind: Service, name: dlq, namespace: other}\n",
    )
    .replace("name: own", "name: own\n  namespace: shop");
    let snapshot = valid(&[("shop.yaml", SHOP), ("own.yaml", &own)]);
    let own = &find(&snapshot, "shop", "own").delivery;
    assert_eq!(own.retry, 0, "an explicit 0 wins over the broker's 3");
    assert_eq!(own.backoff_policy, BackoffPolicy::Exponential);
    assert_eq!(own.retry_after_max, Some(Duration::from_secs(60)));
    assert!(matches!(
        &own.dead_letter_sink,
        Some(Destination::Ref { namespace, name, path: None, .. }) if namespace == "other" && name == "dlq"
    ));
}

#[test]
fn trigger_without_its_broker_is_kept_with_a_warning() {
    let yaml = trigger("lonely", &format!("  broker: missing\n{SUBSCRIBER}"));
    let snapshot = valid(&[("t.yaml", &yaml)]);
    assert!(!snapshot.triggers[0].broker_ready);
    assert_eq!(snapshot.warnings.len(), 1);
    let warning = &snapshot.warnings[0];
    assert_eq!(
        (warning.document, warning.field.as_str()),
        (0, "spec.broker")
    );
    assert!(warning.reason.contains("default/missing"), "{warning}");
}

#[test]
fn filters_win_over_filter_with_a_warning() {
    let yaml = trigger(
        "t",
        &format!(
            "  filter: {{attributes: {{type: a}}}}\n  filters: [{{suffix: {{type: .b}}}}]\n{SUBSCRIBER}"
        ),
    );
    let snapshot = valid(&[("t.yaml", DEFAULT_SET), ("u.yaml", &yaml)]);
    let t = find(&snapshot, "default", "t");
    assert_eq!(
        t.filter,
        Filter::All(vec![Filter::Suffix {
            attribute: "type".into(),
            value: ".b".into()
        }])
    );
    assert_eq!(snapshot.warnings.len(), 1);
    assert_eq!(snapshot.warnings[0].field, "spec.filter");
}

#[test]
fn nested_dialects_compile() {
    let yaml = trigger(
        "t",
        &format!(
            "  filters:\n    - any:\n        - exact: {{type: a}}\n        - all: []\n    - not:\n        \
             suffix: {{subject: .tmp}}\n{SUBSCRIBER}"
        ),
    );
    let snapshot = valid(&[("t.yaml", &yaml), ("d.yaml", DEFAULT_SET)]);
    assert_eq!(
        find(&snapshot, "default", "t").filter,
        Filter::All(vec![
            Filter::Any(vec![
                Filter::Exact {
                    attribute: "type".into(),
                    value: "a".into()
                },
                Filter::All(vec![]),
            ]),
            Filter::Not(Box::new(Filter::Suffix {
                attribute: "subject".into(),
                value: ".tmp".into()
            })),
        ])
    );
}

#[test]
fn generation_key_follows_the_effective_spec() {
    let key = |files: &[(&str, &str)], name: &str| find(&valid(files), "shop", name).generation_key;
    let base = key(&[("s.yaml", SHOP)], "created");
    assert_eq!(base, key(&[("s.yaml", SHOP)], "created"));
    let new_uri = SHOP.replace("uri: /events", "uri: /v2/events");
    assert_ne!(base, key(&[("s.yaml", &new_uri)], "created"));
    let broker_default = SHOP.replace("retry: 3", "retry: 4");
    assert_ne!(base, key(&[("s.yaml", &broker_default)], "created"));
    let label = SHOP.replace(
        "  namespace: shop\n  annotations:\n    tidegate.dev/delivery",
        "  namespace: shop\n  labels: {team: a}\n  annotations:\n    tidegate.dev/delivery",
    );
    assert_ne!(label, SHOP);
    assert_eq!(
        base,
        key(&[("s.yaml", &label)], "created"),
        "labels are not spec"
    );
}

#[test]
fn kafka_backend_from_knative_kafka_broker_config() {
    let yaml = r#"
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata:
  name: b
  namespace: ns
  annotations: {eventing.knative.dev/broker.class: Kafka}
spec:
  config: {apiVersion: v1, kind: ConfigMap, name: kafka-broker-config, namespace: knative-eventing}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: kafka-broker-config, namespace: knative-eventing}
data:
  bootstrap.servers: "k1:9092,k2:9092"
  default.topic.partitions: "6"
  default.topic.replication.factor: "3"
  colour: blue
"#;
    let snapshot = valid(&[("k.yaml", yaml)]);
    assert_eq!(
        snapshot.brokers[0].backend,
        Backend::Kafka(brokers::config::KafkaConfig {
            bootstrap_servers: "k1:9092,k2:9092".into(),
            topic: "knative-broker-ns-b".into(),
            partitions: 6,
            replication_factor: 3,
            retention_ms: None,
            auth: None,
        })
    );
    assert_eq!(snapshot.warnings.len(), 1);
    let warning = &snapshot.warnings[0];
    assert_eq!(
        (warning.document, warning.field.as_str()),
        (1, "data.colour")
    );
}

#[test]
fn load_dirs_reads_sorted_yaml_files_only() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let write = |name: &str, text: &str| {
        std::fs::write(dir.path().join(name), text).unwrap_or_else(|e| panic!("{e}"));
    };
    write("b.yml", DEFAULT_SET);
    write("a.yaml", SHOP);
    write("notes.txt", "not yaml: [");
    write(".hidden.yaml", "not yaml: [");
    std::fs::create_dir(dir.path().join("sub.yaml")).unwrap_or_else(|e| panic!("{e}"));
    let snapshot = load_dirs(&[dir.path().to_path_buf()]).unwrap_or_else(|e| panic!("{e:#?}"));
    assert_eq!((snapshot.brokers.len(), snapshot.triggers.len()), (2, 2));

    write(
        "c.yaml",
        "apiVersion: eventing.knative.dev/v1\nkind: Trigge\nmetadata: {name: x}\n",
    );
    let errors = load_dirs(&[dir.path().to_path_buf()])
        .err()
        .unwrap_or_default();
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert_eq!(errors[0].file, dir.path().join("c.yaml"));
    assert_eq!((errors[0].document, errors[0].field.as_str()), (0, "kind"));

    let missing = dir.path().join("nope");
    let errors = load_dirs(std::slice::from_ref(&missing))
        .err()
        .unwrap_or_default();
    assert_eq!(errors.len(), 1);
    assert_eq!(
        (errors[0].file.clone(), errors[0].field.as_str()),
        (missing, "(file)")
    );
}

mod eventing_config;
mod hpa;
mod knative_config;
mod objects;
mod pods;
mod rejections;
mod schedule;
mod services;
mod tidegate_triggers;

#[test]
fn kubectl_get_output_and_null_maps_load_as_written() {
    // As `kubectl get -o yaml` prints them: server-set metadata, `status`, and maps written
    // with no value.
    let yaml = r#"
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata:
  name: default
  namespace: default
  annotations:
  labels:
  uid: 6f1c2a3e-0d7b-4c1e-9a51-3b2f1f0e9c11
  resourceVersion: "123456"
  generation: 2
  creationTimestamp: "2026-11-30T10:00:00Z"
  managedFields:
    - manager: kubectl
      operation: Update
  finalizers: [brokers.eventing.knative.dev]
spec:
status:
  conditions:
    - type: Ready
      status: "True"
  address:
    url: http://broker-ingress.knative-eventing.svc.cluster.local/default/default
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata:
  name: t
  namespace: default
  annotations:
  ownerReferences:
    - apiVersion: v1
      kind: Namespace
      name: default
      uid: 1
spec:
  broker: default
  subscriber:
    uri: http://127.0.0.1:9/
status:
  subscriberUri: http://127.0.0.1:9/
---
apiVersion: serving.knative.dev/v1
kind: Service
metadata:
  name: hello
  namespace: default
  labels:
spec:
  template:
    metadata:
      annotations:
    spec:
      containers:
        - command: [tidegate, sample-service]
status:
  url: http://hello.default.example.com
  latestReadyRevisionName: hello-00001
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: unused
  namespace: default
  creationTimestamp: "2026-11-30T10:00:00Z"
  resourceVersion: "99"
  uid: 0f0f0f0f-0000-4000-8000-000000000001
data:
---
apiVersion: v1
kind: Secret
metadata:
  name: unused-secret
  namespace: default
  creationTimestamp: "2026-11-30T10:00:00Z"
  resourceVersion: "100"
  uid: 0f0f0f0f-0000-4000-8000-000000000002
type: Opaque
data:
---
apiVersion: tidegate.dev/v1alpha1
kind: Trigger
metadata:
  name: worker
  namespace: default
  generation: 3
  uid: 0f0f0f0f-0000-4000-8000-000000000003
  resourceVersion: "101"
  creationTimestamp: "2026-11-30T10:00:00Z"
  finalizers:
spec:
  broker: default
  service:
    spec:
      template:
        metadata:
          creationTimestamp: null
        spec:
          containers:
            - command: [tidegate, sample-service]
              resources: {}
status:
  observedGeneration: 3
  subscriberUri: http://worker.default.svc.cluster.local
  conditions:
    - type: Ready
      status: "True"
"#;
    let snapshot = valid(&[("get.yaml", yaml)]);
    assert_eq!(snapshot.brokers.len(), 1);
    assert_eq!(snapshot.brokers[0].backend, Backend::Embedded);
    assert_eq!(snapshot.triggers.len(), 2);
    assert_eq!(snapshot.services.len(), 2);
    // An unknown field is still a located error, server-set or not.
    let typo = yaml.replacen("  resourceVersion:", "  resourceVersio:", 1);
    let errors = invalid(&[("get.yaml", &typo)]);
    assert_eq!(errors[0].field, "metadata.resourceVersio", "{}", errors[0]);
}
