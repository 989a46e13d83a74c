//! Serde types mirroring the manifests users write: `eventing.knative.dev/v1` Broker and
//! Trigger, `serving.knative.dev/v1` Service, `tidegate.dev/v1alpha1` Trigger and `v1`
//! ConfigMap.
//!
//! These check shape only (unknown fields are rejected); meaning is checked when a set of them
//! becomes a [`crate::Snapshot`]. The doc comments are the reference for each field.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::snapshot::BackoffPolicy;

mod service;

pub use service::{
    ACTIVATION_SCALE_ANNOTATION, ALIYUN_RESERVE_INSTANCE_ANNOTATION, AUTOSCALING_ANNOTATION_PREFIX,
    AUTOSCALING_CLASS_ANNOTATION, AUTOSCALING_METRIC_ANNOTATION, AUTOSCALING_TARGET_ANNOTATION,
    BACKLOG_TARGET_ANNOTATION, EmbeddedMeta, HPA_CLASS, INITIAL_SCALE_ANNOTATION, KPA_CLASS,
    MAX_SCALE_ANNOTATION, MIN_SCALE_ANNOTATION, PANIC_THRESHOLD_PERCENTAGE_ANNOTATION,
    PANIC_WINDOW_PERCENTAGE_ANNOTATION, PRECISE_CLASS, QUEUE_DEPTH_ANNOTATION,
    RESERVED_INSTANCE_CONCURRENCY_ANNOTATION, RESERVED_INSTANCE_RESOURCES_ANNOTATION,
    RESERVED_INSTANCES_ANNOTATION, RevisionSpec, RevisionTemplateSpec, SCALE_DOWN_DELAY_ANNOTATION,
    SCALE_TO_ZERO_RETENTION_ANNOTATION, SCHEDULE_ANNOTATION, SERVING_API_VERSION, Service,
    ServiceSpec, TARGET_UTILIZATION_ANNOTATION, TrafficTargetSpec, WINDOW_ANNOTATION,
};

/// `apiVersion` of Broker and Trigger.
pub const EVENTING_API_VERSION: &str = "eventing.knative.dev/v1";
/// `apiVersion` of the tidegate Trigger, which may create its subscriber Service.
pub const TIDEGATE_API_VERSION: &str = "tidegate.dev/v1alpha1";
/// `apiVersion` of ConfigMap.
pub const CORE_API_VERSION: &str = "v1";
/// Namespace of objects that do not set `metadata.namespace`.
pub const DEFAULT_NAMESPACE: &str = "default";
/// Broker of Triggers that do not set `spec.broker`.
pub const DEFAULT_BROKER: &str = "default";

/// Broker annotation naming the broker implementation (any value is accepted; `Kafka` makes
/// `kafka` the default backend).
pub const BROKER_CLASS_ANNOTATION: &str = "eventing.knative.dev/broker.class";
/// Trigger annotation: `ordered` or `unordered` (default).
pub const DELIVERY_ORDER_ANNOTATION: &str = "tidegate.dev/delivery-order";
/// Trigger annotation: positive number of deliveries in flight (default 100).
pub const MAX_IN_FLIGHT_ANNOTATION: &str = "tidegate.dev/max-in-flight";

/// One document of a manifest set.
#[derive(Debug, Clone, PartialEq)]
pub enum Manifest {
    /// `eventing.knative.dev/v1` Broker.
    Broker(Broker),
    /// `eventing.knative.dev/v1` Trigger.
    Trigger(Trigger),
    /// `tidegate.dev/v1alpha1` Trigger.
    TidegateTrigger(TidegateTrigger),
    /// `serving.knative.dev/v1` Service.
    Service(Service),
    /// `v1` ConfigMap.
    ConfigMap(ConfigMap),
    /// `v1` Secret.
    Secret(Secret),
}

/// `eventing.knative.dev/v1` Broker: a named event store in a namespace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Broker {
    /// `eventing.knative.dev/v1`.
    pub api_version: String,
    /// `Broker`.
    pub kind: String,
    /// Name, namespace, labels, annotations.
    pub metadata: ObjectMeta,
    /// Backend and delivery defaults; may be omitted (or written as null).
    #[serde(default, deserialize_with = "null_as_default")]
    pub spec: BrokerSpec,
    /// What the API server reports (`kubectl get -o yaml` output); accepted and ignored.
    #[serde(default, skip_serializing)]
    pub status: Option<serde_json::Value>,
}

/// `Broker.spec`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BrokerSpec {
    /// A `v1` ConfigMap (also in the manifest set) holding the backend settings:
    /// `backend: embedded|nats|kafka`; for nats `url` and optional `stream`; for kafka
    /// `bootstrap.servers` and optional `topic` and `partitions`. Omitted: embedded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<KReference>,
    /// Delivery defaults for the Broker's Triggers, field by field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<DeliverySpec>,
}

/// `eventing.knative.dev/v1` Trigger: a filter and a subscriber on a Broker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Trigger {
    /// `eventing.knative.dev/v1`.
    pub api_version: String,
    /// `Trigger`.
    pub kind: String,
    /// Name, namespace, labels, annotations (`tidegate.dev/delivery-order`,
    /// `tidegate.dev/max-in-flight`).
    pub metadata: ObjectMeta,
    /// What to deliver, where, and how.
    pub spec: TriggerSpec,
    /// What the API server reports (`kubectl get -o yaml` output); accepted and ignored.
    #[serde(default, skip_serializing)]
    pub status: Option<serde_json::Value>,
}

/// `Trigger.spec`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TriggerSpec {
    /// Name of the Broker in the Trigger's namespace; default `default`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broker: Option<String>,
    /// The Broker as a reference (`apiVersion: eventing.knative.dev/v1`, `kind: Broker`,
    /// `name`, optional `namespace`); exclusive with `broker`. Another namespace needs
    /// `cross-namespace-event-links: enabled` in `knative-eventing/config-features`, as in
    /// Knative.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broker_ref: Option<KReference>,
    /// Exact-match attribute filter; ignored (with a warning) when `filters` is non-empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<TriggerFilter>,
    /// Subscriptions API filters; every entry must match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<SubscriptionsApiFilter>,
    /// Where matching events are delivered.
    pub subscriber: DestinationSpec,
    /// Retry, backoff, timeout and dead-letter settings; unset fields come from the Broker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<DeliverySpec>,
}

/// `tidegate.dev/v1alpha1` Trigger: a Knative Trigger that may also declare the Service it
/// delivers to. tidegate creates that Service (named `spec.service.metadata.name`, default
/// the Trigger's name, in the Trigger's namespace), owns it and subscribes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TidegateTrigger {
    /// `tidegate.dev/v1alpha1`.
    pub api_version: String,
    /// `Trigger`.
    pub kind: String,
    /// As for the Knative Trigger.
    pub metadata: ObjectMeta,
    /// The Knative Trigger spec, plus `service`.
    pub spec: TidegateTriggerSpec,
    /// What the API server reports (`kubectl get -o yaml` output); accepted and ignored.
    #[serde(default, skip_serializing)]
    pub status: Option<serde_json::Value>,
}

/// `tidegate.dev/v1alpha1` `Trigger.spec`: exactly one of `subscriber` or `service`.
///
/// Also the source of the CustomResourceDefinition (`tidegate crds`, [`crate::crd`]): the
/// nested objects are declared with `x-kubernetes-preserve-unknown-fields`, so the API
/// server keeps them as written and tidegate's own validation reports every mistake with its
/// field path (a fully typed schema would have the server prune typos silently).
// kube's printcolumn entries repeat `type_` by design.
#[allow(clippy::duplicated_attributes)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, kube::CustomResource, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[kube(
    group = "tidegate.dev",
    version = "v1alpha1",
    kind = "Trigger",
    root = "TidegateTriggerResource",
    status = "crate::crd::TriggerStatus",
    namespaced,
    shortname = "tgt",
    category = "tidegate",
    doc = "A Knative Trigger that may also declare the Knative Service it delivers to.",
    printcolumn(name = "Broker", type_ = "string", json_path = ".spec.broker"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason"
    ),
    printcolumn(
        name = "Subscriber",
        type_ = "string",
        json_path = ".status.subscriberUri",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[schemars(
    description = "A Knative Trigger's spec (broker or brokerRef, filter or filters, subscriber, delivery), plus service: a Knative Service tidegate creates and delivers to. Set exactly one of subscriber and service."
)]
pub struct TidegateTriggerSpec {
    /// As [`TriggerSpec::broker`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(description = "Name of the Broker in the Trigger's namespace; default: default.")]
    pub broker: Option<String>,
    /// As [`TriggerSpec::broker_ref`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        schema_with = "crate::crd::preserve_unknown_object",
        description = "The Broker as a reference (apiVersion, kind: Broker, name, namespace); exclusive with broker."
    )]
    pub broker_ref: Option<KReference>,
    /// As [`TriggerSpec::filter`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        schema_with = "crate::crd::preserve_unknown_object",
        description = "attributes: exact matches (an empty value: the attribute is present)."
    )]
    pub filter: Option<TriggerFilter>,
    /// As [`TriggerSpec::filters`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        schema_with = "crate::crd::preserve_unknown_list",
        description = "Subscriptions API filters (exact, prefix, suffix, all, any, not, cesql); every entry must match."
    )]
    pub filters: Vec<SubscriptionsApiFilter>,
    /// As [`TriggerSpec::subscriber`]; must be absent when `service` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        schema_with = "crate::crd::preserve_unknown_object",
        description = "Where matching events go: ref, uri, or ref with a relative uri. Absent when service is set."
    )]
    pub subscriber: Option<DestinationSpec>,
    /// As [`TriggerSpec::delivery`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        schema_with = "crate::crd::preserve_unknown_object",
        description = "retry, backoffPolicy, backoffDelay, timeout, deadLetterSink, retryAfterMax; unset fields come from the Broker."
    )]
    pub delivery: Option<DeliverySpec>,
    /// A Knative Service tidegate creates and subscribes; its autoscaler class defaults to
    /// `precise.tidegate.dev`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        schema_with = "crate::crd::preserve_unknown_object",
        description = "A Knative Service (metadata, spec) tidegate creates, owns and delivers to; its autoscaler class defaults to precise.tidegate.dev."
    )]
    pub service: Option<Box<InlineService>>,
}

/// `spec.service` of a tidegate Trigger: a Knative Service without `apiVersion`, `kind` and
/// namespace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct InlineService {
    /// Name (default: the Trigger's), labels, annotations.
    #[serde(default)]
    pub metadata: EmbeddedMeta,
    /// Template and traffic, as in a Service.
    pub spec: ServiceSpec,
}

/// `Trigger.spec.filter`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TriggerFilter {
    /// CloudEvents attribute name to exact value; every entry must match. An empty value
    /// only requires the attribute to be present.
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
}

/// One entry of `Trigger.spec.filters`: exactly one dialect must be set.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SubscriptionsApiFilter {
    /// One attribute whose value must equal the given string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<BTreeMap<String, String>>,
    /// One attribute whose value must start with the given non-empty string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<BTreeMap<String, String>>,
    /// One attribute whose value must end with the given non-empty string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suffix: Option<BTreeMap<String, String>>,
    /// Every nested filter must match (empty: always matches).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub all: Option<Vec<SubscriptionsApiFilter>>,
    /// At least one nested filter must match (empty: always matches).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub any: Option<Vec<SubscriptionsApiFilter>>,
    /// The nested filter must not match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not: Option<Box<SubscriptionsApiFilter>>,
    /// A CloudEvents SQL expression. Not supported yet: rejected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cesql: Option<String>,
}

/// A delivery target: `ref`, `uri`, or `ref` plus a relative `uri` appended to its address.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DestinationSpec {
    /// An addressable object, usually a `serving.knative.dev/v1` Service.
    #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
    pub reference: Option<KReference>,
    /// An absolute `http(s)` URL, or with `ref` a relative path such as `/events`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
}

/// A reference to another object by kind and name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KReference {
    /// API version of the referent, e.g. `serving.knative.dev/v1` or `v1`.
    pub api_version: String,
    /// Kind of the referent, e.g. `Service` or `ConfigMap`.
    pub kind: String,
    /// Name of the referent.
    pub name: String,
    /// Namespace of the referent; default: the referring object's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// Delivery settings (`spec.delivery` of Trigger and Broker).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DeliverySpec {
    /// Retries after the first failed attempt (≥ 0); default 10.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<i32>,
    /// `linear` (delay × n) or `exponential` (delay × 2^n, the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_policy: Option<BackoffPolicy>,
    /// ISO-8601 base delay between retries, e.g. `PT0.2S` (the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_delay: Option<String>,
    /// ISO-8601 timeout of one attempt, greater than zero; default `PT30S`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// Where events go after the last failed attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter_sink: Option<DestinationSpec>,
    /// ISO-8601 upper bound for honouring `Retry-After` on 429/503; unset ignores it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_max: Option<String>,
}

/// `v1` ConfigMap: string settings, here the backend of a Broker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ConfigMap {
    /// `v1`.
    pub api_version: String,
    /// `ConfigMap`.
    pub kind: String,
    /// Name, namespace, labels, annotations.
    pub metadata: ObjectMeta,
    /// Key to string value (quote numbers: `partitions: "3"`).
    #[serde(default, deserialize_with = "null_as_default")]
    pub data: BTreeMap<String, String>,
    /// Key to base64-encoded bytes (files of a mounted ConfigMap).
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub binary_data: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub immutable: Option<bool>,
}

/// `v1` Secret: credentials a Broker's ConfigMap names in `auth.secret.ref.name`. Its values
/// never reach `Debug` output, logs or the admin API.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Secret {
    /// `v1`.
    pub api_version: String,
    /// `Secret`.
    pub kind: String,
    pub metadata: ObjectMeta,
    /// e.g. `Opaque`; not interpreted.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    /// Key to base64-encoded value.
    #[serde(default, deserialize_with = "null_as_default")]
    pub data: BTreeMap<String, String>,
    /// Key to plain value; wins over `data` for the same key (as Kubernetes merges them).
    #[serde(default, deserialize_with = "null_as_default")]
    pub string_data: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub immutable: Option<bool>,
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keys: Vec<&String> = self.data.keys().chain(self.string_data.keys()).collect();
        f.debug_struct("Secret")
            .field("metadata", &self.metadata)
            .field("keys", &keys)
            .finish_non_exhaustive()
    }
}

/// Kubernetes object metadata: what tidegate reads, plus every field the API server sets
/// (accepted and ignored, so `kubectl get -o yaml` output loads); other fields are rejected.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ObjectMeta {
    /// DNS-1123 label (lowercase letters, digits, `-`; at most 63 characters).
    pub name: String,
    /// DNS-1123 label; default `default`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Free-form string labels; null is empty, as Kubernetes treats it.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub labels: BTreeMap<String, String>,
    /// Free-form string annotations; some tidegate.dev and eventing.knative.dev keys have
    /// meaning. Null is empty.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub annotations: BTreeMap<String, String>,
    /// Set by the API server; ignored.
    #[serde(default, skip_serializing)]
    pub uid: Option<serde_json::Value>,
    #[serde(default, skip_serializing)]
    pub resource_version: Option<serde_json::Value>,
    #[serde(default, skip_serializing)]
    pub generation: Option<serde_json::Value>,
    #[serde(default, skip_serializing)]
    pub creation_timestamp: Option<serde_json::Value>,
    #[serde(default, skip_serializing)]
    pub deletion_timestamp: Option<serde_json::Value>,
    #[serde(default, skip_serializing)]
    pub deletion_grace_period_seconds: Option<serde_json::Value>,
    #[serde(default, skip_serializing)]
    pub managed_fields: Option<serde_json::Value>,
    #[serde(default, skip_serializing)]
    pub owner_references: Option<serde_json::Value>,
    #[serde(default, skip_serializing)]
    pub finalizers: Option<serde_json::Value>,
    #[serde(default, skip_serializing)]
    pub self_link: Option<serde_json::Value>,
    #[serde(default, skip_serializing)]
    pub generate_name: Option<serde_json::Value>,
}

/// A field written as YAML null (`annotations:` with nothing after it) is its default, as
/// Kubernetes treats it.
pub(crate) fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

impl Manifest {
    /// `Broker`, `Trigger` (either apiVersion), `Service` or `ConfigMap`.
    pub fn kind(&self) -> &'static str {
        match self {
            Manifest::Broker(_) => "Broker",
            Manifest::Trigger(_) | Manifest::TidegateTrigger(_) => "Trigger",
            Manifest::Service(_) => "Service",
            Manifest::ConfigMap(_) => "ConfigMap",
            Manifest::Secret(_) => "Secret",
        }
    }

    /// The object's `apiVersion`, as tidegate expects it.
    pub fn api_version(&self) -> &'static str {
        match self {
            Manifest::Broker(_) | Manifest::Trigger(_) => EVENTING_API_VERSION,
            Manifest::TidegateTrigger(_) => TIDEGATE_API_VERSION,
            Manifest::Service(_) => SERVING_API_VERSION,
            Manifest::ConfigMap(_) | Manifest::Secret(_) => CORE_API_VERSION,
        }
    }

    /// The object's metadata.
    pub fn metadata(&self) -> &ObjectMeta {
        match self {
            Manifest::Broker(b) => &b.metadata,
            Manifest::Trigger(t) => &t.metadata,
            Manifest::TidegateTrigger(t) => &t.metadata,
            Manifest::Service(s) => &s.metadata,
            Manifest::ConfigMap(c) => &c.metadata,
            Manifest::Secret(s) => &s.metadata,
        }
    }
}

impl ObjectMeta {
    /// `namespace`, or `default` when unset.
    pub fn namespace(&self) -> &str {
        self.namespace.as_deref().unwrap_or(DEFAULT_NAMESPACE)
    }
}
