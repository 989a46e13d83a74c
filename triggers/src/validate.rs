//! Turning typed manifests into a [`Snapshot`]: names, references between objects, backends,
//! filters, destinations, delivery defaults, and Services (written as such or created by
//! tidegate Triggers), with every problem located.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use crate::duration::parse_iso8601;
use crate::error::{ManifestError, ManifestWarning, Origin, join_key};
use crate::fingerprint::stable_hash;
use crate::load::{Located, ObjectKey};
use crate::manifest::{
    BROKER_CLASS_ANNOTATION, Broker, ConfigMap, DEFAULT_BROKER, DELIVERY_ORDER_ANNOTATION,
    DeliverySpec, DestinationSpec, EVENTING_API_VERSION, KReference, MAX_IN_FLIGHT_ANNOTATION,
    Manifest, ObjectMeta, SERVING_API_VERSION, Secret, SubscriptionsApiFilter, TidegateTrigger,
    Trigger, TriggerFilter,
};
use crate::snapshot::{
    Backend, BackoffPolicy, BrokerConfig, DEFAULT_BACKOFF_DELAY, DEFAULT_BACKOFF_POLICY,
    DEFAULT_MAX_IN_FLIGHT, DEFAULT_RETRY, DEFAULT_TIMEOUT, DeliveryConfig, DeliveryOrder,
    Destination, Snapshot, TriggerConfig,
};

mod backend;
mod filters;
mod knative;
mod pod;
mod scaling;
mod service;
mod syntax;
mod template;
mod traffic;

use backend::{KAFKA_BROKER_CLASS, Target, broker_backend};
use filters::trigger_filter;
use knative::{EventingConfig, Features, ServingConfig};
use service::{DeclaredService, check_service_name, owned_service_name, validate_services};
use syntax::{check_dns_label, check_dns_subdomain, check_http_url, check_relative_uri};

/// ConfigMaps by (namespace, name), with where each was read.
type ConfigMaps<'a> = HashMap<(&'a str, &'a str), (&'a ConfigMap, &'a Origin)>;
/// Secrets by (namespace, name), with where each was read.
type Secrets<'a> = HashMap<(&'a str, &'a str), (&'a Secret, &'a Origin)>;

/// Annotation prefix whose keys tidegate reads; unknown keys under it draw a warning.
const TIDEGATE_ANNOTATION_PREFIX: &str = "tidegate.dev/";
/// Trigger annotations tidegate knows (the backlog target is read by the autoscaler).
const KNOWN_TRIGGER_ANNOTATIONS: [&str; 3] = [
    DELIVERY_ORDER_ANNOTATION,
    MAX_IN_FLIGHT_ANNOTATION,
    "tidegate.dev/backlog-target",
];

/// Validates a whole manifest set. The snapshot is meaningful only when no error is returned.
///
/// `rejected` holds objects whose documents were already rejected, so a Broker referring to
/// such a ConfigMap does not also report it missing.
pub(crate) fn snapshot(
    manifests: &[Located],
    rejected: &HashSet<ObjectKey>,
) -> (Snapshot, Vec<ManifestError>) {
    let mut report = Report::default();
    check_names(manifests, &mut report);

    let mut config_maps: ConfigMaps<'_> = HashMap::new();
    for located in manifests {
        if let Manifest::ConfigMap(cm) = &located.manifest {
            let key = (cm.metadata.namespace(), cm.metadata.name.as_str());
            config_maps.entry(key).or_insert((cm, &located.origin));
        }
    }

    let mut secrets: Secrets<'_> = HashMap::new();
    for located in manifests {
        if let Manifest::Secret(secret) = &located.manifest {
            let key = (secret.metadata.namespace(), secret.metadata.name.as_str());
            secrets.entry(key).or_insert((secret, &located.origin));
        }
    }

    let eventing = EventingConfig::from_set(&config_maps, &mut report);
    let mut brokers = Vec::new();
    let mut broker_delivery: HashMap<(&str, &str), PartialDelivery> = HashMap::new();
    for located in manifests {
        if let Manifest::Broker(broker) = &located.manifest {
            let mut scope = Scope::new(&located.origin, &mut report);
            let (config, delivery) = validate_broker(
                broker,
                &config_maps,
                &secrets,
                rejected,
                &eventing,
                &mut scope,
            );
            brokers.push(config);
            let key = (broker.metadata.namespace(), broker.metadata.name.as_str());
            broker_delivery.entry(key).or_insert(delivery);
        }
    }

    let features = Features::from_set(&config_maps, &mut report);
    let serving = ServingConfig::from_set(&config_maps, &mut report);
    let sources = pod::Sources {
        config_maps: &config_maps,
        secrets: &secrets,
        features: &features,
        serving: &serving,
    };
    let (mut services, declared_services) = validate_services(manifests, &sources, &mut report);
    let known = Known {
        cross_namespace: eventing.cross_namespace,
        brokers: &broker_delivery,
        services: &declared_services,
    };

    let mut triggers = Vec::new();
    for located in manifests {
        let view = match &located.manifest {
            Manifest::Trigger(trigger) => TriggerView::knative(trigger),
            Manifest::TidegateTrigger(trigger) => TriggerView::tidegate(trigger),
            _ => continue,
        };
        let mut scope = Scope::new(&located.origin, &mut report);
        triggers.extend(validate_trigger(&view, &known, &mut scope));
    }

    brokers.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    triggers.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    services.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    let mut seen = HashSet::new();
    report.warnings.retain(|w| seen.insert(w.clone()));
    let snapshot = Snapshot {
        brokers,
        triggers,
        services,
        warnings: report.warnings,
    };
    (snapshot, report.errors)
}

/// Errors and warnings gathered while validating.
#[derive(Debug, Default)]
struct Report {
    errors: Vec<ManifestError>,
    warnings: Vec<ManifestWarning>,
}

/// The document being validated and where its problems go.
struct Scope<'a> {
    origin: &'a Origin,
    report: &'a mut Report,
}

/// What the Triggers of a set may refer to.
struct Known<'a, 'm> {
    /// `cross-namespace-event-links` is enabled in `knative-eventing/config-features`.
    cross_namespace: bool,
    /// Brokers by (namespace, name), with their delivery defaults.
    brokers: &'a HashMap<(&'m str, &'m str), PartialDelivery>,
    /// Services declared by (namespace, name), valid or not.
    services: &'a HashMap<(&'m str, &'m str), DeclaredService<'m>>,
}

/// The parts of a Trigger of either apiVersion that make its configuration.
struct TriggerView<'m> {
    metadata: &'m ObjectMeta,
    broker: Option<&'m String>,
    broker_ref: Option<&'m KReference>,
    filter: Option<&'m TriggerFilter>,
    filters: &'m [SubscriptionsApiFilter],
    subscriber: Option<&'m DestinationSpec>,
    delivery: Option<&'m DeliverySpec>,
    /// The Service a tidegate Trigger creates (`spec.service`).
    owned_service: Option<&'m str>,
}

impl<'m> TriggerView<'m> {
    fn knative(trigger: &'m Trigger) -> Self {
        let spec = &trigger.spec;
        Self {
            metadata: &trigger.metadata,
            broker: spec.broker.as_ref(),
            broker_ref: spec.broker_ref.as_ref(),
            filter: spec.filter.as_ref(),
            filters: &spec.filters,
            subscriber: Some(&spec.subscriber),
            delivery: spec.delivery.as_ref(),
            owned_service: None,
        }
    }

    fn tidegate(trigger: &'m TidegateTrigger) -> Self {
        let spec = &trigger.spec;
        Self {
            metadata: &trigger.metadata,
            broker: spec.broker.as_ref(),
            broker_ref: spec.broker_ref.as_ref(),
            filter: spec.filter.as_ref(),
            filters: &spec.filters,
            subscriber: spec.subscriber.as_ref(),
            delivery: spec.delivery.as_ref(),
            owned_service: owned_service_name(trigger).map(|(name, _)| name),
        }
    }
}

/// Delivery settings as one object sets them; unset fields fall back to the next level.
#[derive(Debug, Clone, Default)]
struct PartialDelivery {
    retry: Option<u32>,
    backoff_policy: Option<BackoffPolicy>,
    backoff_delay: Option<Duration>,
    timeout: Option<Duration>,
    dead_letter_sink: Option<Destination>,
    retry_after_max: Option<Duration>,
}

impl<'a> Scope<'a> {
    fn new(origin: &'a Origin, report: &'a mut Report) -> Self {
        Self { origin, report }
    }

    /// The same report, located in another document.
    fn at<'b>(&'b mut self, origin: &'b Origin) -> Scope<'b> {
        Scope {
            origin,
            report: self.report,
        }
    }

    fn error(&mut self, field: impl Into<String>, reason: impl Into<String>) {
        self.report.errors.push(self.origin.error(field, reason));
    }

    fn warn(&mut self, field: impl Into<String>, reason: impl Into<String>) {
        self.report
            .warnings
            .push(self.origin.warning(field, reason));
    }
}

impl PartialDelivery {
    /// Fills unset fields from the Broker's delivery, then from the `DEFAULT_*` constants.
    fn resolve(self, broker: Option<&PartialDelivery>) -> DeliveryConfig {
        let fallback = broker.cloned().unwrap_or_default();
        DeliveryConfig {
            retry: self.retry.or(fallback.retry).unwrap_or(DEFAULT_RETRY),
            backoff_policy: self
                .backoff_policy
                .or(fallback.backoff_policy)
                .unwrap_or(DEFAULT_BACKOFF_POLICY),
            backoff_delay: self
                .backoff_delay
                .or(fallback.backoff_delay)
                .unwrap_or(DEFAULT_BACKOFF_DELAY),
            timeout: self.timeout.or(fallback.timeout).unwrap_or(DEFAULT_TIMEOUT),
            dead_letter_sink: self.dead_letter_sink.or(fallback.dead_letter_sink),
            retry_after_max: self.retry_after_max.or(fallback.retry_after_max),
        }
    }
}

/// Checks names and namespaces, and that no object is declared twice.
fn check_names(manifests: &[Located], report: &mut Report) {
    let mut first: HashMap<(&str, &str, &str), &Origin> = HashMap::new();
    for located in manifests {
        let kind = located.manifest.kind();
        let meta = located.manifest.metadata();
        let mut scope = Scope::new(&located.origin, report);
        let check_name = match located.manifest {
            Manifest::ConfigMap(_) | Manifest::Secret(_) => check_dns_subdomain,
            Manifest::Service(_) => check_service_name,
            _ => check_dns_label,
        };
        check_metadata(meta, check_name, &mut scope);
        match &located.manifest {
            Manifest::ConfigMap(cm) => {
                check_data_keys("data", cm.data.keys(), &mut scope);
                check_data_keys("binaryData", cm.binary_data.keys(), &mut scope);
            }
            Manifest::Secret(secret) => {
                check_data_keys("data", secret.data.keys(), &mut scope);
                check_data_keys("stringData", secret.string_data.keys(), &mut scope);
            }
            _ => {}
        }
        let key = (kind, meta.namespace(), meta.name.as_str());
        match first.get(&key) {
            Some(origin) => scope.error(
                "metadata.name",
                format!(
                    "duplicate {kind} {}/{}; first defined in {}",
                    meta.namespace(),
                    meta.name,
                    origin.describe(),
                ),
            ),
            None => {
                first.insert(key, &located.origin);
            }
        }
    }
}

/// Decodes base64 values as Kubernetes reads them (line breaks and other ASCII whitespace
/// ignored) into `into`; returns the keys that are not base64.
fn decode_base64<'k>(
    encoded: &'k BTreeMap<String, String>,
    into: &mut BTreeMap<String, Vec<u8>>,
) -> Vec<&'k str> {
    use base64::Engine as _;
    let mut bad = Vec::new();
    for (key, value) in encoded {
        let compact: Vec<u8> = value.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
        match base64::engine::general_purpose::STANDARD.decode(compact) {
            Ok(bytes) => {
                into.insert(key.clone(), bytes);
            }
            Err(_) => bad.push(key.as_str()),
        }
    }
    bad
}

/// A Secret's values as Kubernetes merges them: base64 `data`, then `stringData` over it;
/// and the `data` keys that are not base64.
fn secret_bytes(secret: &Secret) -> (BTreeMap<String, Vec<u8>>, Vec<&str>) {
    let mut values = BTreeMap::new();
    let bad = decode_base64(&secret.data, &mut values);
    for (key, value) in &secret.string_data {
        values.insert(key.clone(), value.clone().into_bytes());
    }
    (values, bad)
}

/// Whether `reference` at `field` has this `kind` and `apiVersion`; each mismatch is a
/// located error.
fn check_kind(
    reference: &KReference,
    field: &str,
    kind: &str,
    api_version: &str,
    scope: &mut Scope<'_>,
) -> bool {
    let mut ok = true;
    if reference.kind != kind {
        scope.error(
            join_key(field, "kind"),
            format!("must be {kind}, found {:?}", reference.kind),
        );
        ok = false;
    }
    if reference.api_version != api_version {
        scope.error(
            join_key(field, "apiVersion"),
            format!("must be {api_version}, found {:?}", reference.api_version),
        );
        ok = false;
    }
    ok
}

/// ConfigMap and Secret keys as Kubernetes allows them (`[-._a-zA-Z0-9]+`, at most 253, not
/// `.` or `..`): they become file names when mounted.
fn check_data_keys<'k>(field: &str, keys: impl Iterator<Item = &'k String>, scope: &mut Scope<'_>) {
    for key in keys {
        let valid = !key.is_empty()
            && key.len() <= 253
            && key != "."
            && key != ".."
            && key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
        if !valid {
            scope.error(
                join_key(field, key),
                "invalid key: use 1 to 253 letters, digits, '-', '_' and '.' (not \".\" or \
                 \"..\"), as Kubernetes requires",
            );
        }
    }
}

fn check_metadata(
    meta: &ObjectMeta,
    check_name: fn(&str) -> Result<(), String>,
    scope: &mut Scope<'_>,
) {
    if let Err(why) = check_name(&meta.name) {
        scope.error("metadata.name", why);
    }
    if let Some(namespace) = &meta.namespace
        && let Err(why) = check_dns_label(namespace)
    {
        scope.error("metadata.namespace", why);
    }
}

fn validate_broker(
    broker: &Broker,
    config_maps: &HashMap<(&str, &str), (&ConfigMap, &Origin)>,
    secrets: &Secrets<'_>,
    rejected: &HashSet<ObjectKey>,
    eventing: &EventingConfig,
    scope: &mut Scope<'_>,
) -> (BrokerConfig, PartialDelivery) {
    let namespace = broker.metadata.namespace();
    let name = &broker.metadata.name;
    let defaults = eventing.for_namespace(namespace);
    // `config-br-defaults` supplies the config of Brokers that name none.
    let default_reference = defaults.and_then(|d| {
        Some(KReference {
            api_version: d.api_version.clone().unwrap_or_else(|| "v1".into()),
            kind: d.kind.clone().unwrap_or_else(|| "ConfigMap".into()),
            name: d.name.clone()?,
            namespace: d.namespace.clone(),
        })
    });
    let reference = broker.spec.config.as_ref().or(default_reference.as_ref());
    let backend = match reference {
        None => Backend::Embedded,
        Some(reference) => {
            let class = broker
                .metadata
                .annotations
                .get(BROKER_CLASS_ANNOTATION)
                .or_else(|| defaults.and_then(|d| d.broker_class.as_ref()));
            let default_kafka = class.is_some_and(|c| c == KAFKA_BROKER_CLASS);
            let target = Target {
                namespace,
                name,
                default_kafka,
            };
            broker_backend(reference, &target, config_maps, rejected, secrets, scope)
                .unwrap_or(Backend::Embedded)
        }
    };
    let delivery = match &broker.spec.delivery {
        Some(delivery) => partial_delivery(delivery, "spec.delivery", namespace, scope),
        None => match defaults.and_then(|d| d.delivery.as_ref()) {
            // Located at the Broker: its delivery is what the defaults fill.
            Some(delivery) => partial_delivery(delivery, "spec.delivery", namespace, scope),
            None => PartialDelivery::default(),
        },
    };
    let config = BrokerConfig {
        namespace: namespace.to_owned(),
        name: name.clone(),
        backend,
    };
    (config, delivery)
}

/// The Broker a Trigger names: `spec.broker` (default `default`) or `spec.brokerRef`, and the
/// field it comes from.
fn broker_of<'m>(
    trigger: &TriggerView<'m>,
    namespace: &'m str,
    cross_namespace: bool,
    scope: &mut Scope<'_>,
) -> Option<(&'m str, &'m str, &'static str)> {
    match (trigger.broker, trigger.broker_ref) {
        (Some(_), Some(_)) => {
            scope.error(
                "spec.brokerRef",
                "set only one of spec.broker and spec.brokerRef",
            );
            None
        }
        (Some(broker), None) => {
            if let Err(why) = check_dns_label(broker) {
                scope.error("spec.broker", why);
            }
            Some((namespace, broker.as_str(), "spec.broker"))
        }
        (None, None) => Some((namespace, DEFAULT_BROKER, "spec.broker")),
        (None, Some(reference)) => {
            let mut ok = check_kind(
                reference,
                "spec.brokerRef",
                "Broker",
                EVENTING_API_VERSION,
                scope,
            );
            if let Err(why) = check_dns_label(&reference.name) {
                scope.error("spec.brokerRef.name", why);
                ok = false;
            }
            let broker_namespace = reference.namespace.as_deref().unwrap_or(namespace);
            if broker_namespace != namespace && !cross_namespace {
                scope.error(
                    "spec.brokerRef.namespace",
                    format!(
                        "a Broker in another namespace ({broker_namespace}) needs \
                         cross-namespace-event-links: enabled in ConfigMap \
                         knative-eventing/config-features, as in Knative"
                    ),
                );
                ok = false;
            }
            ok.then_some((broker_namespace, reference.name.as_str(), "spec.brokerRef"))
        }
    }
}

fn validate_trigger(
    trigger: &TriggerView<'_>,
    known: &Known<'_, '_>,
    scope: &mut Scope<'_>,
) -> Option<TriggerConfig> {
    let namespace = trigger.metadata.namespace();
    let (broker_namespace, broker, broker_field) =
        broker_of(trigger, namespace, known.cross_namespace, scope)?;
    let broker_delivery = known.brokers.get(&(broker_namespace, broker));
    if broker_delivery.is_none() {
        scope.warn(
            broker_field,
            format!(
                "Broker {broker_namespace}/{broker} is not in the manifest set; the Trigger \
                 receives no events until it is"
            ),
        );
    }

    let filter = trigger_filter(trigger.filter, trigger.filters, scope);
    let subscriber = subscriber(trigger, known, scope);
    let delivery = trigger
        .delivery
        .map(|d| partial_delivery(d, "spec.delivery", namespace, scope))
        .unwrap_or_default()
        .resolve(broker_delivery);
    let order = delivery_order(&trigger.metadata.annotations, scope);
    let max_in_flight = max_in_flight(&trigger.metadata.annotations, scope);
    warn_unknown_annotations(&trigger.metadata.annotations, scope);

    let mut config = TriggerConfig {
        namespace: namespace.to_owned(),
        name: trigger.metadata.name.clone(),
        broker_namespace: broker_namespace.to_owned(),
        broker: broker.to_owned(),
        broker_ready: broker_delivery.is_some(),
        filter: filter?,
        subscriber: subscriber?,
        delivery,
        order: order?,
        max_in_flight: max_in_flight?,
        owned_service: trigger.owned_service.map(str::to_owned),
        generation_key: 0,
    };
    config.generation_key = stable_hash(&config);
    Some(config)
}

/// `spec.subscriber`, or the Service a tidegate Trigger creates. A Knative Service that is
/// not in the set draws a warning: it may appear later.
fn subscriber(
    trigger: &TriggerView<'_>,
    known: &Known<'_, '_>,
    scope: &mut Scope<'_>,
) -> Option<Destination> {
    let namespace = trigger.metadata.namespace();
    let spec = match (trigger.owned_service, trigger.subscriber) {
        (Some(_), Some(_)) => {
            scope.error(
                "spec.subscriber",
                "must be absent when spec.service is set: the Trigger delivers to the Service \
                 it creates",
            );
            return None;
        }
        (Some(service), None) => {
            return Some(Destination::Ref {
                api_version: SERVING_API_VERSION.to_owned(),
                kind: "Service".to_owned(),
                namespace: namespace.to_owned(),
                name: service.to_owned(),
                path: None,
            });
        }
        (None, None) => {
            scope.error(
                "spec.subscriber",
                "required field is missing (or set spec.service to have tidegate create the \
                 subscriber)",
            );
            return None;
        }
        (None, Some(spec)) => spec,
    };
    let destination = destination(spec, "spec.subscriber", namespace, scope)?;
    if let Destination::Ref {
        api_version,
        kind,
        namespace,
        name,
        ..
    } = &destination
        && api_version == SERVING_API_VERSION
        && kind == "Service"
        && !known
            .services
            .contains_key(&(namespace.as_str(), name.as_str()))
    {
        scope.warn(
            "spec.subscriber.ref.name",
            format!(
                "Service {namespace}/{name} is not in the manifest set; the subscriber cannot \
                 be resolved until it is"
            ),
        );
    }
    if let Some(url) = destination.kubernetes_url() {
        scope.warn(
            "spec.subscriber.ref",
            format!(
                "a core v1 Service resolves to {url} in Kubernetes mode only; on the local \
                 runtime the Trigger is not ready (deliver to a uri instead)"
            ),
        );
    }
    Some(destination)
}

/// A `ref`, a `uri`, or a `ref` with a relative `uri`.
fn destination(
    spec: &DestinationSpec,
    field: &str,
    namespace: &str,
    scope: &mut Scope<'_>,
) -> Option<Destination> {
    let uri_field = join_key(field, "uri");
    match (&spec.reference, &spec.uri) {
        (None, None) => {
            scope.error(field, "set ref, uri, or ref with a relative uri");
            None
        }
        (None, Some(uri)) => match check_http_url(uri) {
            Ok(()) => Some(Destination::Uri(uri.clone())),
            Err(why) => {
                scope.error(uri_field, why);
                None
            }
        },
        (Some(reference), uri) => {
            let path = match uri {
                None => Some(None),
                Some(path) => match check_relative_uri(path) {
                    Ok(()) => Some(Some(path.clone())),
                    Err(why) => {
                        scope.error(uri_field, why);
                        None
                    }
                },
            };
            let checked = check_reference(reference, &join_key(field, "ref"), scope);
            let path = path?;
            checked?;
            Some(Destination::Ref {
                api_version: reference.api_version.clone(),
                kind: reference.kind.clone(),
                namespace: reference
                    .namespace
                    .clone()
                    .unwrap_or_else(|| namespace.to_owned()),
                name: reference.name.clone(),
                path,
            })
        }
    }
}

fn check_reference(reference: &KReference, field: &str, scope: &mut Scope<'_>) -> Option<()> {
    let mut ok = true;
    for (key, value) in [
        ("apiVersion", &reference.api_version),
        ("kind", &reference.kind),
    ] {
        if value.trim().is_empty() {
            scope.error(join_key(field, key), "must not be empty");
            ok = false;
        }
    }
    if let Err(why) = check_dns_subdomain(&reference.name) {
        scope.error(join_key(field, "name"), why);
        ok = false;
    }
    if let Some(namespace) = &reference.namespace
        && let Err(why) = check_dns_label(namespace)
    {
        scope.error(join_key(field, "namespace"), why);
        ok = false;
    }
    ok.then_some(())
}

fn partial_delivery(
    spec: &DeliverySpec,
    field: &str,
    namespace: &str,
    scope: &mut Scope<'_>,
) -> PartialDelivery {
    let retry = spec.retry.and_then(|retry| match u32::try_from(retry) {
        Ok(retry) => Some(retry),
        Err(_) => {
            scope.error(
                join_key(field, "retry"),
                format!("must be 0 or more, found {retry}"),
            );
            None
        }
    });
    let mut duration = |key: &str, value: &Option<String>, positive: bool| {
        let value = value.as_deref()?;
        match parse_iso8601(value) {
            Ok(d) if positive && d.is_zero() => {
                scope.error(join_key(field, key), "must be greater than zero");
                None
            }
            Ok(d) => Some(d),
            Err(why) => {
                scope.error(join_key(field, key), why);
                None
            }
        }
    };
    let backoff_delay = duration("backoffDelay", &spec.backoff_delay, false);
    let timeout = duration("timeout", &spec.timeout, true);
    let retry_after_max = duration("retryAfterMax", &spec.retry_after_max, false);
    let dead_letter_sink = spec
        .dead_letter_sink
        .as_ref()
        .and_then(|sink| destination(sink, &join_key(field, "deadLetterSink"), namespace, scope));
    PartialDelivery {
        retry,
        backoff_policy: spec.backoff_policy,
        backoff_delay,
        timeout,
        dead_letter_sink,
        retry_after_max,
    }
}

fn delivery_order(
    annotations: &BTreeMap<String, String>,
    scope: &mut Scope<'_>,
) -> Option<DeliveryOrder> {
    match annotations
        .get(DELIVERY_ORDER_ANNOTATION)
        .map(String::as_str)
    {
        None | Some("unordered") => Some(DeliveryOrder::Unordered),
        Some("ordered") => Some(DeliveryOrder::Ordered),
        Some(other) => {
            scope.error(
                join_key("metadata.annotations", DELIVERY_ORDER_ANNOTATION),
                format!("expected ordered or unordered, found {other:?}"),
            );
            None
        }
    }
}

fn max_in_flight(annotations: &BTreeMap<String, String>, scope: &mut Scope<'_>) -> Option<usize> {
    let Some(value) = annotations.get(MAX_IN_FLIGHT_ANNOTATION) else {
        return Some(DEFAULT_MAX_IN_FLIGHT);
    };
    match value.trim().parse::<usize>() {
        Ok(n) if n > 0 => Some(n),
        _ => {
            scope.error(
                join_key("metadata.annotations", MAX_IN_FLIGHT_ANNOTATION),
                format!("must be a positive integer, found {value:?}"),
            );
            None
        }
    }
}

fn warn_unknown_annotations(annotations: &BTreeMap<String, String>, scope: &mut Scope<'_>) {
    for key in annotations.keys() {
        if key.starts_with(TIDEGATE_ANNOTATION_PREFIX)
            && !KNOWN_TRIGGER_ANNOTATIONS.contains(&key.as_str())
        {
            scope.warn(
                join_key("metadata.annotations", key),
                format!(
                    "unknown tidegate annotation, ignored; known: {}",
                    KNOWN_TRIGGER_ANNOTATIONS.join(", ")
                ),
            );
        }
    }
}
