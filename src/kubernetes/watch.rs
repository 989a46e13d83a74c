//! The Kubernetes provider: one reflector per watched kind, and a builder that turns what they
//! hold into snapshots through the same `triggers` validation as manifest files.
//!
//! - Brokers count when their `eventing.knative.dev/broker.class` is `tidegate`; Knative
//!   Triggers when their Broker is one of those. tidegate Triggers, Knative Services, ConfigMaps
//!   and Secrets all count (Secrets of the Helm release and service account token types are
//!   not listed).
//! - A Knative Service controlled by a tidegate Trigger of the set is that Trigger's inline
//!   Service: the Trigger declares it, so the object itself is not loaded twice.
//! - Revisions and traffic are Knative's: a Service's latest revision is
//!   `status.latestCreatedRevisionName` and its split is its Route's `status.traffic`, as
//!   Knative resolved them.
//! - An invalid object is left out alone ([`triggers::load_objects`]); its errors are kept in
//!   [`Loaded`] for the controllers to write into its status.
//! - A watch that fails is retried with backoff (kube-runtime's default: 0.8 s growing to
//!   30 s); the reflector keeps the last objects, so the snapshot served stays, and
//!   [`ProviderHealth`] says what fails.

use std::collections::{HashMap, HashSet};
use std::hash::{Hash as _, Hasher};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use futures::StreamExt as _;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::Client;
use kube::api::DynamicObject;
use kube::runtime::reflector::{self, Store, store::Writer};
use kube::runtime::watcher::{self, Event};
use kube::runtime::{WatchStreamExt as _, watcher as watch_stream};
use serde_json::Value;
use tokio::sync::{mpsc, watch};
use triggers::{ManifestError, Snapshot, TrafficRevision, TrafficTarget};

use super::api::{Kind, Kinds, TIDEGATE_TRIGGER_API_VERSION, explain};
use crate::runtime::provider::{ProviderHealth, Update};

/// The Broker annotation naming its implementation.
pub const BROKER_CLASS_ANNOTATION: &str = "eventing.knative.dev/broker.class";
/// The broker class tidegate implements.
pub const BROKER_CLASS: &str = "tidegate";
/// Changes closer together than this make one snapshot.
const DEBOUNCE: Duration = Duration::from_millis(100);

/// A reflector's store, the kind it holds, and a counter bumped on every change it sees.
#[derive(Clone)]
pub struct Watched {
    pub store: Store<DynamicObject>,
    pub changes: watch::Receiver<u64>,
    pub resource: kube::core::ApiResource,
}

impl Watched {
    /// Every object as JSON with its `apiVersion` and `kind` (the API server leaves them out
    /// of list items for built-in kinds; watch events have them).
    pub fn values(&self) -> Vec<Value> {
        self.values_where(|_| true)
    }

    /// [`Watched::values`] of the objects `wanted` keeps.
    pub fn values_where(&self, wanted: impl Fn(&DynamicObject) -> bool) -> Vec<Value> {
        self.store
            .state()
            .iter()
            .filter(|o| wanted(o))
            .filter_map(|o| {
                let mut value = serde_json::to_value(o.as_ref()).ok()?;
                let object = value.as_object_mut()?;
                object
                    .entry("apiVersion")
                    .or_insert_with(|| Value::String(self.resource.api_version.clone()));
                object
                    .entry("kind")
                    .or_insert_with(|| Value::String(self.resource.kind.clone()));
                Some(value)
            })
            .collect()
    }
}

/// Every watched kind's objects.
#[derive(Clone)]
pub struct Stores {
    pub broker: Watched,
    pub trigger: Watched,
    pub tidegate_trigger: Watched,
    pub service: Watched,
    pub route: Watched,
    pub revision: Watched,
    pub pod_autoscaler: Watched,
    pub config_map: Watched,
    pub secret: Watched,
    pub endpoint_slice: Watched,
}

impl Stores {
    fn all(&self) -> [&Watched; 10] {
        [
            &self.broker,
            &self.trigger,
            &self.tidegate_trigger,
            &self.service,
            &self.route,
            &self.revision,
            &self.pod_autoscaler,
            &self.config_map,
            &self.secret,
            &self.endpoint_slice,
        ]
    }

    /// Waits until every reflector has listed its kind once.
    pub async fn ready(&self) {
        for watched in self.all() {
            let _ = watched.store.wait_until_ready().await;
        }
    }
}

/// Starts one reflector task per watched kind.
pub fn start(client: &Client, kinds: &Kinds, health: &Arc<ProviderHealth>) -> Stores {
    let reflect = |kind: &Kind, config: watcher::Config| {
        let writer = Writer::new(kind.resource.clone());
        let store = writer.as_reader();
        let (tx, changes) = watch::channel(0u64);
        tokio::spawn(drive(
            kind.clone(),
            kind.all(client),
            config,
            writer,
            tx,
            Arc::clone(health),
        ));
        Watched {
            store,
            changes,
            resource: kind.resource.clone(),
        }
    };
    let plain = watcher::Config::default;
    Stores {
        broker: reflect(&kinds.broker, plain()),
        trigger: reflect(&kinds.trigger, plain()),
        tidegate_trigger: reflect(&kinds.tidegate_trigger, plain()),
        service: reflect(&kinds.service, plain()),
        route: reflect(&kinds.route, plain()),
        revision: reflect(&kinds.revision, plain()),
        pod_autoscaler: reflect(&kinds.pod_autoscaler, plain()),
        config_map: reflect(&kinds.config_map, plain()),
        secret: reflect(
            &kinds.secret,
            plain().fields("type!=helm.sh/release.v1,type!=kubernetes.io/service-account-token"),
        ),
        endpoint_slice: reflect(&kinds.endpoint_slice, plain()),
    }
}

async fn drive(
    kind: Kind,
    api: kube::Api<DynamicObject>,
    config: watcher::Config,
    writer: Writer<DynamicObject>,
    changes: watch::Sender<u64>,
    health: Arc<ProviderHealth>,
) {
    let source = kind.describe();
    let stream = reflector::reflector(writer, watch_stream(api, config).default_backoff());
    let mut stream = std::pin::pin!(stream);
    let mut failing = false;
    while let Some(item) = stream.next().await {
        match item {
            Ok(Event::Init | Event::InitApply(_)) => {}
            Ok(Event::InitDone | Event::Apply(_) | Event::Delete(_)) => {
                if failing {
                    tracing::info!(kind = %source, "Kubernetes watch recovered.");
                    failing = false;
                    health.set(&source, None);
                }
                changes.send_modify(|n| *n = n.wrapping_add(1));
            }
            Err(error) => {
                let why = watch_error(&kind, &error);
                if !failing {
                    tracing::warn!(kind = %source, error = %why, "Kubernetes watch failing; retrying with backoff, serving the objects last seen.");
                }
                failing = true;
                health.set(&source, Some(why));
            }
        }
    }
}

fn watch_error(kind: &Kind, error: &watcher::Error) -> String {
    match error {
        watcher::Error::InitialListFailed(e) => explain(kind, "list", e),
        watcher::Error::WatchStartFailed(e) | watcher::Error::WatchFailed(e) => {
            explain(kind, "watch", e)
        }
        watcher::Error::WatchError(status) => {
            explain(kind, "watch", &kube::Error::Api(status.clone()))
        }
        other => format!("cannot watch {}: {other}", kind.describe()),
    }
}

/// The outcome of the last load, shared with the controllers.
#[derive(Debug, Default)]
pub struct Loaded {
    /// The snapshot served.
    pub snapshot: Arc<Snapshot>,
    /// Errors of each left-out object, by [`triggers::object_label`].
    pub errors: HashMap<String, Vec<ManifestError>>,
    /// `(apiVersion, kind, namespace, name)` of the Brokers and Triggers tidegate serves or
    /// reports on (valid or not).
    pub objects: Vec<(String, String, String, String)>,
    /// References of the left-out objects that have no status tidegate writes (Knative
    /// Services, ConfigMaps, Secrets), for Events on them.
    pub references: HashMap<String, ObjectReference>,
    /// What this load read, to tell whether the next one would differ.
    pub inputs: Inputs,
    /// [`digest_value`] of every object loaded, by [`triggers::object_label`]: a controller
    /// acts on an object only once a load has seen it as it is (status aside).
    pub versions: HashMap<String, u64>,
}

impl Loaded {
    /// Whether this load saw `object` as it is now (its status aside).
    pub fn has_seen(&self, object: &Value) -> bool {
        self.versions.get(&triggers::object_label(object)) == Some(&digest_value(object))
    }
}

/// The status fields a load reads (of Knative Services); the rest of a status is not part of
/// what an object means to a snapshot.
const STATUS_READ: [&str; 2] = ["latestCreatedRevisionName", "traffic"];

/// A digest of what a load reads of an object: everything but `resourceVersion`,
/// `managedFields`, `generation` and the status fields it does not read. Status writes
/// (tidegate's own among them) change no digest, so they make no new load.
pub fn digest_value(object: &Value) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    if let Value::Object(map) = object {
        for (k, v) in sorted(map) {
            match k.as_str() {
                "metadata" => {
                    if let Value::Object(meta) = v {
                        for (mk, mv) in sorted(meta) {
                            if !matches!(
                                mk.as_str(),
                                "resourceVersion" | "managedFields" | "generation"
                            ) {
                                mk.hash(&mut h);
                                hash_value(mv, &mut h);
                            }
                        }
                    }
                }
                "status" => hash_status(v, &mut h),
                _ => {
                    k.hash(&mut h);
                    hash_value(v, &mut h);
                }
            }
        }
    }
    h.finish()
}

/// [`digest_value`] of a reflected object, without serializing it.
fn digest(object: &DynamicObject) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    let m = &object.metadata;
    m.uid.hash(&mut h);
    m.labels.hash(&mut h);
    m.annotations.hash(&mut h);
    m.deletion_timestamp.is_some().hash(&mut h);
    for r in m.owner_references.iter().flatten() {
        (&r.api_version, &r.kind, &r.name, &r.uid, r.controller).hash(&mut h);
    }
    if let Value::Object(map) = &object.data {
        for (k, v) in sorted(map) {
            if k == "status" {
                hash_status(v, &mut h);
            } else {
                k.hash(&mut h);
                hash_value(v, &mut h);
            }
        }
    }
    h.finish()
}

fn hash_status(status: &Value, h: &mut impl Hasher) {
    for field in STATUS_READ {
        if let Some(v) = status.get(field) {
            field.hash(h);
            hash_value(v, h);
        }
    }
}

fn sorted(map: &serde_json::Map<String, Value>) -> Vec<(&String, &Value)> {
    let mut entries: Vec<_> = map.iter().collect();
    entries.sort_by(|a, b| a.0.cmp(b.0));
    entries
}

fn hash_value(value: &Value, h: &mut impl Hasher) {
    match value {
        Value::Null => 0u8.hash(h),
        Value::Bool(b) => (1u8, b).hash(h),
        Value::Number(n) => (2u8, n.as_u64(), n.as_i64(), n.as_f64().map(f64::to_bits)).hash(h),
        Value::String(s) => (3u8, s).hash(h),
        Value::Array(items) => {
            (4u8, items.len()).hash(h);
            items.iter().for_each(|v| hash_value(v, h));
        }
        Value::Object(map) => {
            (5u8, map.len()).hash(h);
            for (k, v) in sorted(map) {
                k.hash(h);
                hash_value(v, h);
            }
        }
    }
}

/// Builds a snapshot after every change (debounced) and sends it as an [`Update`]; `loaded`
/// holds the last one for the controllers (who hear of it once the runtime applied it).
pub fn provider(stores: Stores, loaded: Arc<ArcSwap<Loaded>>) -> mpsc::Receiver<Update> {
    let (tx, rx) = mpsc::channel(1);
    tokio::spawn(async move {
        stores.ready().await;
        // EndpointSlices and PodAutoscalers are not part of the snapshot.
        let mut changes: Vec<watch::Receiver<u64>> = stores
            .all()
            .iter()
            .filter(|w| !matches!(w.resource.kind.as_str(), "EndpointSlice" | "PodAutoscaler"))
            .map(|w| w.changes.clone())
            .collect();
        let mut first_done = false;
        loop {
            for c in &mut changes {
                c.mark_unchanged();
            }
            let previous = loaded.load_full();
            // The first load is always sent: the gateway is ready once it is applied.
            let previous = first_done.then_some(previous.as_ref());
            let Some(load) = build(&stores, previous) else {
                // Nothing the snapshot reads changed (an unreferenced ConfigMap, a status).
                let any =
                    futures::future::select_all(changes.iter_mut().map(|c| Box::pin(c.changed())));
                if any.await.0.is_err() {
                    return;
                }
                tokio::time::sleep(DEBOUNCE).await;
                continue;
            };
            for (label, errors) in &load.errors {
                for error in errors {
                    tracing::warn!(object = %label, %error, "Kubernetes object left out.");
                }
            }
            first_done = true;
            loaded.store(Arc::clone(&load));
            if tx
                .send(Update::Applied {
                    snapshot: Arc::clone(&load.snapshot),
                    files: None,
                    left_out: load.errors.values().flatten().cloned().collect(),
                })
                .await
                .is_err()
            {
                return;
            }
            let any =
                futures::future::select_all(changes.iter_mut().map(|c| Box::pin(c.changed())));
            if any.await.0.is_err() {
                return;
            }
            tokio::time::sleep(DEBOUNCE).await;
        }
    });
    rx
}

/// Namespaces whose ConfigMaps are Knative's configuration, always read.
const KNATIVE_NAMESPACES: [&str; 2] = ["knative-serving", "knative-eventing"];

/// Every string under a `name` or `secretName` key of `value`: a superset of the ConfigMaps
/// and Secrets it refers to (Broker `spec.config`, `configMapKeyRef`, `secretKeyRef`,
/// `envFrom`, volumes, projected sources).
fn referenced_names<'a>(value: &'a Value, names: &mut HashSet<&'a str>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v) {
                    ("name" | "secretName", Value::String(name)) => {
                        names.insert(name);
                    }
                    _ => referenced_names(v, names),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| referenced_names(v, names)),
        _ => {}
    }
}

/// `(kind, namespace, name, digest)` of every object a load reads, sorted: equal for two
/// moments means the same snapshot.
type Inputs = Vec<(String, String, String, u64)>;

fn inputs(
    stores: &Stores,
    wanted_config_map: &dyn Fn(&DynamicObject) -> bool,
    wanted_secret: &dyn Fn(&DynamicObject) -> bool,
) -> Inputs {
    let mut inputs = Inputs::new();
    for w in stores.all() {
        if matches!(w.resource.kind.as_str(), "EndpointSlice" | "PodAutoscaler") {
            continue;
        }
        let wanted: &dyn Fn(&DynamicObject) -> bool = match w.resource.kind.as_str() {
            "ConfigMap" => wanted_config_map,
            "Secret" => wanted_secret,
            _ => &|_| true,
        };
        for o in w.store.state() {
            if !wanted(&o) {
                continue;
            }
            let m = &o.metadata;
            inputs.push((
                w.resource.kind.clone(),
                m.namespace.clone().unwrap_or_default(),
                m.name.clone().unwrap_or_default(),
                digest(&o),
            ));
        }
    }
    inputs.sort();
    inputs
}

/// One snapshot of what the stores hold; `None` when nothing it reads changed since
/// `previous`.
pub fn build(stores: &Stores, previous: Option<&Loaded>) -> Option<Arc<Loaded>> {
    // ConfigMaps and Secrets: Knative's configuration, and those something refers to.
    let referring: Vec<Arc<DynamicObject>> = [
        &stores.broker,
        &stores.trigger,
        &stores.tidegate_trigger,
        &stores.service,
        &stores.revision,
    ]
    .iter()
    .flat_map(|w| w.store.state())
    .collect();
    let mut names: HashSet<&str> = HashSet::new();
    for o in &referring {
        referenced_names(&o.data, &mut names);
    }
    let named = |o: &DynamicObject, names: &HashSet<&str>| {
        o.metadata
            .namespace
            .as_deref()
            .is_some_and(|ns| KNATIVE_NAMESPACES.contains(&ns))
            || o.metadata
                .name
                .as_deref()
                .is_some_and(|n| names.contains(n))
    };
    // A Broker's ConfigMap may name the Secret of its credentials (`auth.secret.ref.name`).
    let config_maps = stores.config_map.store.state();
    let mut secret_names = names.clone();
    for cm in &config_maps {
        if named(cm, &names)
            && let Some(secret) = cm
                .data
                .pointer("/data/auth.secret.ref.name")
                .and_then(Value::as_str)
        {
            secret_names.insert(secret.trim());
        }
    }
    let wanted_config_map = |o: &DynamicObject| named(o, &names);
    let wanted_secret = |o: &DynamicObject| named(o, &secret_names);
    let inputs = inputs(stores, &wanted_config_map, &wanted_secret);
    if previous.is_some_and(|p| p.inputs == inputs) {
        return None;
    }
    let values = Watched::values;
    let brokers: Vec<Value> = values(&stores.broker)
        .into_iter()
        .filter(|b| annotation(b, BROKER_CLASS_ANNOTATION) == Some(BROKER_CLASS))
        .collect();
    let ours: HashSet<(String, String)> = brokers.iter().map(key).collect();
    let triggers: Vec<Value> = values(&stores.trigger)
        .into_iter()
        .filter(|t| {
            let (namespace, _) = key(t);
            let (broker_namespace, broker) = trigger_broker(t, &namespace);
            ours.contains(&(broker_namespace.to_owned(), broker.to_owned()))
        })
        .collect();
    let tidegate_triggers = values(&stores.tidegate_trigger);
    let trigger_uids: HashSet<&str> = tidegate_triggers
        .iter()
        .filter_map(|t| t.pointer("/metadata/uid").and_then(Value::as_str))
        .collect();
    let services = values(&stores.service);
    let inline: HashSet<(String, String)> = services
        .iter()
        .filter(|s| {
            controller_uid(s, TIDEGATE_TRIGGER_API_VERSION, "Trigger")
                .is_some_and(|uid| trigger_uids.contains(uid))
        })
        .map(key)
        .collect();
    let served: Vec<(String, String, String, String)> = brokers
        .iter()
        .chain(triggers.iter())
        .chain(tidegate_triggers.iter())
        .map(|o| {
            let (namespace, name) = key(o);
            let field = |f: &str| {
                o.get(f)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned()
            };
            (field("apiVersion"), field("kind"), namespace, name)
        })
        .collect();
    let mut objects: Vec<Value> = Vec::new();
    objects.extend(stores.config_map.values_where(wanted_config_map));
    objects.extend(stores.secret.values_where(wanted_secret));
    objects.extend(brokers);
    objects.extend(triggers);
    objects.extend(tidegate_triggers.iter().cloned());
    objects.extend(
        services
            .iter()
            .filter(|s| !inline.contains(&key(s)))
            .cloned(),
    );
    // Where two objects collide, which one is left out does not depend on hash order.
    objects.sort_by_cached_key(triggers::object_label);
    let versions: HashMap<String, u64> = objects
        .iter()
        .map(|o| (triggers::object_label(o), digest_value(o)))
        .collect();
    let mut load = triggers::load_objects(&objects);
    // A tidegate Trigger left out (a mistake in an edit) still has the Knative Service it
    // created: that Service keeps being served, from the object itself.
    let left_out: HashSet<&str> = tidegate_triggers
        .iter()
        .filter(|t| {
            load.errors
                .iter()
                .any(|e| e.file.to_str() == Some(triggers::object_label(t).as_str()))
        })
        .filter_map(|t| t.pointer("/metadata/uid").and_then(Value::as_str))
        .collect();
    let orphans: Vec<&Value> = services
        .iter()
        .filter(|s| {
            controller_uid(s, TIDEGATE_TRIGGER_API_VERSION, "Trigger")
                .is_some_and(|uid| left_out.contains(uid))
        })
        .collect();
    if !orphans.is_empty() {
        let kept_errors: Vec<ManifestError> = load
            .errors
            .iter()
            .filter(|e| {
                tidegate_triggers.iter().any(|t| {
                    t.pointer("/metadata/uid")
                        .and_then(Value::as_str)
                        .is_some_and(|uid| left_out.contains(uid))
                        && e.file.to_str() == Some(triggers::object_label(t).as_str())
                })
            })
            .cloned()
            .collect();
        objects.retain(|o| {
            !(o.get("apiVersion").and_then(Value::as_str) == Some(TIDEGATE_TRIGGER_API_VERSION)
                && o.pointer("/metadata/uid")
                    .and_then(Value::as_str)
                    .is_some_and(|uid| left_out.contains(uid)))
        });
        objects.extend(orphans.into_iter().cloned());
        objects.sort_by_cached_key(triggers::object_label);
        load = triggers::load_objects(&objects);
        load.errors.extend(kept_errors);
    }

    let by_key: HashMap<(String, String), &Value> = services.iter().map(|s| (key(s), s)).collect();
    let revisions: HashMap<(String, String), Value> = values(&stores.revision)
        .into_iter()
        .map(|r| (key(&r), r))
        .collect();
    // What a revision's template may refer to: ConfigMaps and Secrets, Knative's config.
    let context: Vec<Value> = objects
        .iter()
        .filter(|o| {
            matches!(
                o.get("kind").and_then(Value::as_str),
                Some("ConfigMap" | "Secret")
            )
        })
        .cloned()
        .collect();
    let routes: HashMap<(String, String), Value> = values(&stores.route)
        .into_iter()
        .map(|r| (key(&r), r))
        .collect();
    for service in &mut load.snapshot.services {
        let k = (service.namespace.clone(), service.name.clone());
        let object = by_key.get(&k);
        if let Some(latest) = object
            .and_then(|o| o.pointer("/status/latestCreatedRevisionName"))
            .and_then(Value::as_str)
        {
            service.template_name = Some(latest.to_owned());
        }
        if let Some(traffic) = routes.get(&k).and_then(route_traffic) {
            service.traffic = traffic;
        }
        let older: Vec<String> = service
            .traffic
            .iter()
            .filter_map(|t| match &t.revision {
                TrafficRevision::Named(name) if Some(name) != service.template_name.as_ref() => {
                    Some(name.clone())
                }
                _ => None,
            })
            .collect();
        for name in older {
            if let Some(template) = revisions
                .get(&(k.0.clone(), name.clone()))
                .and_then(|r| revision_template(r, &k.1, &context))
            {
                service.revisions.insert(name, template);
            }
        }
        // Pod spec fields are Knative's to apply here: none is "ignored locally".
        service.template.pod.ignored_locally.clear();
        for template in service.revisions.values_mut() {
            template.pod.ignored_locally.clear();
        }
        if service.template.scaling.class != triggers::ScalingClass::Precise {
            // Knative's classes: the endpoints are the pods' queue-proxies or Knative's
            // activator, which enforce containerConcurrency themselves; an activator endpoint
            // must not be held to one pod's limit.
            service.template.container_concurrency = 0;
        }
    }
    // In a cluster a core Service has an address: its cluster DNS name.
    for trigger in &mut load.snapshot.triggers {
        in_cluster(&mut trigger.subscriber);
        if let Some(sink) = &mut trigger.delivery.dead_letter_sink {
            in_cluster(sink);
        }
    }
    let mut errors: HashMap<String, Vec<ManifestError>> = HashMap::new();
    for error in load.errors {
        errors
            .entry(error.file.display().to_string())
            .or_default()
            .push(error);
    }
    let references = objects
        .iter()
        .filter(|o| {
            let kind = o.get("kind").and_then(Value::as_str);
            matches!(kind, Some("Service" | "ConfigMap" | "Secret"))
                && errors.contains_key(&triggers::object_label(o))
        })
        .map(|o| {
            let field = |path: &str| o.pointer(path).and_then(Value::as_str).map(str::to_owned);
            (
                triggers::object_label(o),
                ObjectReference {
                    api_version: field("/apiVersion"),
                    kind: field("/kind"),
                    namespace: field("/metadata/namespace"),
                    name: field("/metadata/name"),
                    uid: field("/metadata/uid"),
                    resource_version: field("/metadata/resourceVersion"),
                    ..ObjectReference::default()
                },
            )
        })
        .collect();
    Some(Arc::new(Loaded {
        snapshot: Arc::new(load.snapshot),
        errors,
        objects: served,
        references,
        versions,
        inputs,
    }))
}

/// What a Knative Revision runs, read as the template of a Service `service` that names it,
/// through the same validation; `None` when it does not validate (the current template is
/// used then).
fn revision_template(
    revision: &Value,
    service: &str,
    context: &[Value],
) -> Option<triggers::RevisionTemplate> {
    let (namespace, name) = key(revision);
    let mut metadata = serde_json::json!({"name": name});
    for field in ["annotations", "labels"] {
        if let Some(v) = revision.pointer(&format!("/metadata/{field}")) {
            metadata[field] = v.clone();
        }
    }
    let document = serde_json::json!({
        "apiVersion": "serving.knative.dev/v1", "kind": "Service",
        "metadata": {"name": service, "namespace": namespace},
        "spec": {"template": {"metadata": metadata, "spec": revision.get("spec")?}},
    });
    let mut objects = context.to_vec();
    objects.push(document);
    let load = triggers::load_objects(&objects);
    load.snapshot
        .services
        .into_iter()
        .find(|s| s.namespace == namespace && s.name == service)
        .map(|s| s.template)
}

/// A core `v1` Service ref as the URL cluster DNS gives it.
fn in_cluster(destination: &mut triggers::Destination) {
    if let Some(url) = destination.kubernetes_url() {
        *destination = triggers::Destination::Uri(url);
    }
}

/// A Route's `status.traffic` as Knative resolved it: every entry names its revision.
fn route_traffic(route: &Value) -> Option<Vec<TrafficTarget>> {
    let entries = route.pointer("/status/traffic")?.as_array()?;
    let mut traffic = Vec::new();
    for entry in entries {
        let revision = entry.get("revisionName")?.as_str()?;
        traffic.push(TrafficTarget {
            revision: TrafficRevision::Named(revision.to_owned()),
            percent: entry
                .get("percent")
                .and_then(Value::as_u64)
                .map_or(0, |p| u32::try_from(p.min(100)).unwrap_or(100)),
            tag: entry.get("tag").and_then(Value::as_str).map(str::to_owned),
        });
    }
    (!traffic.is_empty()).then_some(traffic)
}

/// `(namespace, name)` of the Broker a Trigger in `namespace` names: `spec.broker`, else
/// `spec.brokerRef` (whose namespace defaults to the Trigger's), else `default`.
pub fn trigger_broker<'a>(trigger: &'a Value, namespace: &'a str) -> (&'a str, &'a str) {
    let text = |path: &str| trigger.pointer(path).and_then(Value::as_str);
    let name = text("/spec/broker")
        .or_else(|| text("/spec/brokerRef/name"))
        .unwrap_or("default");
    (text("/spec/brokerRef/namespace").unwrap_or(namespace), name)
}

/// `(namespace, name)` of an object.
pub fn key(object: &Value) -> (String, String) {
    let field = |f: &str| {
        object
            .pointer(&format!("/metadata/{f}"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    (field("namespace"), field("name"))
}

/// A `metadata.annotations` value.
pub fn annotation<'a>(object: &'a Value, name: &str) -> Option<&'a str> {
    object
        .get("metadata")?
        .get("annotations")?
        .get(name)?
        .as_str()
}

/// The uid of the object's controller, when it is of `api_version` and `kind`.
pub fn controller_uid<'a>(object: &'a Value, api_version: &str, kind: &str) -> Option<&'a str> {
    object
        .pointer("/metadata/ownerReferences")?
        .as_array()?
        .iter()
        .find(|r| r.get("controller").and_then(Value::as_bool) == Some(true))
        .filter(|r| {
            r.get("apiVersion").and_then(Value::as_str) == Some(api_version)
                && r.get("kind").and_then(Value::as_str) == Some(kind)
        })?
        .get("uid")?
        .as_str()
}
