//! Controllers (kube-runtime's reconcile + error policy):
//!
//! - `tidegate.dev/v1alpha1` Triggers: the Knative Service of `spec.service` is applied
//!   (server-side apply, field manager `tidegate`) with a controller owner reference to the
//!   Trigger, so deleting the Trigger deletes it through garbage collection. A Service of that
//!   name the Trigger does not control is never touched: the Trigger says `ServiceNotOwned`.
//!   An invalid Trigger creates nothing and says why. Status: `BrokerReady`,
//!   `SubscriberResolved`, `ServiceReady` (with `spec.service`), `Ready`, `subscriberUri`,
//!   `observedGeneration`.
//! - Knative Brokers of class `tidegate`: `status.address.url` at tidegate's ingress, and
//!   `Ready` / `Addressable`; Knative Triggers on them: `BrokerReady`, `SubscriberResolved`,
//!   `DependencyReady`, `Ready`, `subscriberUri`, as Knative's broker implementations write them.
//! - Failures are Kubernetes Events (Warning) on the object besides the log; API errors are
//!   retried with per-object exponential backoff (0.5 s doubling to 60 s).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use futures::StreamExt as _;
use kube::Client;
use kube::Resource as _;
use kube::api::{DynamicObject, Patch, PatchParams};
use kube::core::ApiResource;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use serde_json::{Value, json};
use tokio::sync::watch as watch_channel;

use super::api::{
    FIELD_MANAGER, Kind, Kinds, TIDEGATE_TRIGGER_API_VERSION, api_message, status_code,
};
use super::status::{Cond, condition, conditions_json, now, patch_status, ready};
use super::watch::{
    BROKER_CLASS, BROKER_CLASS_ANNOTATION, Loaded, annotation, controller_uid, trigger_broker,
};
use crate::topology::Topology;

/// Label on every Knative Service tidegate creates: the Trigger that owns it.
pub const TRIGGER_LABEL: &str = "tidegate.dev/trigger";
/// Annotation holding a hash of what tidegate last applied, so an unchanged object is not
/// applied again.
pub const APPLIED_ANNOTATION: &str = "tidegate.dev/applied";
/// The autoscaler class tidegate implements, default for Services Triggers create.
pub const PRECISE_CLASS: &str = "precise.tidegate.dev";
const CLASS_ANNOTATION: &str = "autoscaling.knative.dev/class";

/// What the reconcilers share.
pub struct Context {
    pub client: Client,
    pub kinds: Kinds,
    pub loaded: Arc<ArcSwap<Loaded>>,
    pub topology: Arc<ArcSwap<Topology>>,
    pub recorder: Recorder,
    /// Base of Broker addresses: `{ingress_url}/{namespace}/{broker}`.
    pub ingress_url: String,
    failures: Mutex<HashMap<String, u32>>,
}

impl Context {
    pub fn new(
        client: Client,
        kinds: Kinds,
        loaded: Arc<ArcSwap<Loaded>>,
        topology: Arc<ArcSwap<Topology>>,
        ingress_url: String,
        instance: Option<String>,
    ) -> Self {
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: "tidegate".into(),
                instance,
            },
        );
        Self {
            client,
            kinds,
            loaded,
            topology,
            recorder,
            ingress_url: ingress_url.trim_end_matches('/').to_owned(),
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// A Warning Event on `object`, unless its `Ready` condition already says the same
    /// (a problem is reported once, not on every reconcile); failures to record it are only
    /// logged.
    pub async fn warn(&self, kind: &Kind, object: &DynamicObject, reason: &str, note: &str) {
        let ready = condition(object.data.pointer("/status/conditions"), "Ready");
        if ready.is_some_and(|c| {
            c.get("reason").and_then(Value::as_str) == Some(reason)
                && c.get("message").and_then(Value::as_str) == Some(note)
        }) {
            return;
        }
        let reference = object.object_ref(&kind.resource);
        let event = Event {
            type_: EventType::Warning,
            reason: reason.to_owned(),
            note: Some(truncate(note, 1024)),
            action: "Reconcile".into(),
            secondary: None,
        };
        if let Err(error) = self.recorder.publish(&event, &reference).await {
            tracing::debug!(%error, "Could not record a Kubernetes Event.");
        }
    }

    pub fn succeeded(&self, key: &str) {
        self.lock().remove(key);
    }

    /// The next retry delay for `key`: 0.5 s doubling to 60 s.
    pub fn backoff(&self, key: &str) -> Duration {
        let mut failures = self.lock();
        if failures.len() >= 10_000 {
            // Objects deleted while failing leave entries behind: start over rather than grow.
            failures.clear();
        }
        let n = failures.entry(key.to_owned()).or_default();
        *n = n.saturating_add(1);
        Duration::from_millis(500u64.saturating_mul(1 << (*n - 1).min(7)))
            .min(Duration::from_secs(60))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, u32>> {
        self.failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// When to look again at an object whose status was written: soon while something is not
/// ready (a backend connecting, a Service coming up), rarely otherwise.
fn requeue_for(conditions: &[Cond]) -> Action {
    if conditions.iter().all(Cond::is_true) {
        Action::requeue(Duration::from_secs(300))
    } else {
        Action::requeue(Duration::from_secs(30))
    }
}

/// A reconcile that must be retried: `reason` is the condition reason and Event reason it is
/// reported with (`Forbidden` for an RBAC refusal, `Conflict`, `ApiError`).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ReconcileError {
    pub reason: &'static str,
    pub message: String,
}

impl ReconcileError {
    pub(crate) fn api(kind: &Kind, verb: &str, name: &str, error: &kube::Error) -> Self {
        let code = status_code(error);
        let what = match code {
            Some(403) => format!(
                "RBAC: tidegate's service account may not {verb} {} {name}: {}",
                kind.describe(),
                api_message(error)
            ),
            _ => format!(
                "cannot {verb} {} {name}: {}",
                kind.describe(),
                api_message(error)
            ),
        };
        let reason = match code {
            Some(403) => "Forbidden",
            Some(409) => "Conflict",
            _ => "ApiError",
        };
        Self {
            reason,
            message: what,
        }
    }
}

/// Reports a failed reconcile where Kubernetes users look: `Ready` set to `ready` (`False`,
/// or `Unknown` where False has consequences, as on a PodAutoscaler) with the error's reason
/// (other conditions kept) and a Warning Event, then hands the error on for the retry.
/// Failures to report are only logged: the retry reports again.
pub async fn report_failure(
    ctx: &Context,
    kind: &Kind,
    object: &DynamicObject,
    error: ReconcileError,
    ready: &'static str,
) -> ReconcileError {
    ctx.warn(kind, object, error.reason, &error.message).await;
    let namespace = object.metadata.namespace.clone().unwrap_or_default();
    let previous = object.data.pointer("/status/conditions");
    let mut kept: Vec<Value> = previous
        .and_then(Value::as_array)
        .map(|c| {
            c.iter()
                .filter(|c| c.get("type").and_then(Value::as_str) != Some("Ready"))
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    let condition = Cond {
        status: ready,
        ..Cond::failed("Ready", error.reason, error.message.clone())
    };
    let ready = conditions_json(&[condition], previous, &now());
    if let Value::Array(mut ready) = ready {
        ready.append(&mut kept);
        kept = ready;
    }
    let status = json!({"conditions": kept});
    if let Err(e) = patch_status(&kind.namespaced(&ctx.client, &namespace), object, status).await {
        tracing::debug!(error = %api_message(&e), "Could not report a failed reconcile in the status.");
    }
    error
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// `(namespace, name)` of a dynamic object.
fn names(object: &DynamicObject) -> (String, String) {
    (
        object.metadata.namespace.clone().unwrap_or_default(),
        object.metadata.name.clone().unwrap_or_default(),
    )
}

/// The label of an object in load errors: `Trigger.tidegate.dev ns/name`.
fn label(object: &DynamicObject) -> String {
    triggers::object_label(&serde_json::to_value(object).unwrap_or_default())
}

/// Runs the controllers until `stop`; `loads` counts snapshot loads (each one re-reconciles
/// every object, since validity and broker readiness come from the load).
pub async fn run(
    ctx: Arc<Context>,
    loads: watch_channel::Receiver<u64>,
    stop: tokio_util::sync::CancellationToken,
) {
    let kinds = ctx.kinds.clone();
    let client = ctx.client.clone();
    let loads_for_events = loads.clone();
    // Each controller also reconciles every object of its kind after each applied load.
    let controller = |kind: &Kind| {
        Controller::new_with(
            kind.all(&client),
            watcher::Config::default(),
            kind.resource.clone(),
        )
        .reconcile_on(every_load(loads.clone(), kind.clone(), Arc::clone(&ctx)))
        .graceful_shutdown_on(stop.clone().cancelled_owned())
    };
    let tidegate = controller(&kinds.tidegate_trigger)
        .owns_with(
            kinds.service.all(&client),
            kinds.service.resource.clone(),
            watcher::Config::default(),
        )
        .run(reconcile_tidegate_trigger, error_policy, Arc::clone(&ctx))
        .for_each(|_| async {});
    let brokers = controller(&kinds.broker)
        .run(reconcile_broker, error_policy, Arc::clone(&ctx))
        .for_each(|_| async {});
    let knative_triggers = controller(&kinds.trigger)
        .run(reconcile_knative_trigger, error_policy, Arc::clone(&ctx))
        .for_each(|_| async {});
    let left_out = report_left_out(Arc::clone(&ctx), loads_for_events, stop);
    tokio::join!(tidegate, brokers, knative_triggers, left_out);
}

/// A Warning Event, once per distinct problem, on each left-out object whose status is not
/// tidegate's to write (Knative Services, ConfigMaps, Secrets): Triggers and Brokers say it in
/// their status instead.
async fn report_left_out(
    ctx: Arc<Context>,
    mut loads: watch_channel::Receiver<u64>,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut reported: std::collections::HashSet<(String, String)> = Default::default();
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            changed = loads.changed() => if changed.is_err() { return },
        }
        let loaded = ctx.loaded.load_full();
        let mut now_failing = std::collections::HashSet::new();
        for (label, errors) in &loaded.errors {
            let Some(reference) = loaded.references.get(label) else {
                continue;
            };
            let message = errors
                .iter()
                .map(|e| format!("{}: {}", e.field, e.reason))
                .collect::<Vec<_>>()
                .join("; ");
            let key = (label.clone(), message.clone());
            if !reported.contains(&key) {
                let event = Event {
                    type_: EventType::Warning,
                    reason: "InvalidSpec".into(),
                    note: Some(truncate(
                        &format!("tidegate does not serve this object: {message}"),
                        1024,
                    )),
                    action: "Load".into(),
                    secondary: None,
                };
                if let Err(error) = ctx.recorder.publish(&event, reference).await {
                    tracing::debug!(%error, "Could not record a Kubernetes Event.");
                }
            }
            now_failing.insert(key);
        }
        reported = now_failing;
    }
}

/// After every load, every object of `kind` the load saw (their validity and their Broker's
/// readiness come from it).
fn every_load(
    loads: watch_channel::Receiver<u64>,
    kind: Kind,
    ctx: Arc<Context>,
) -> impl futures::Stream<Item = ObjectRef<DynamicObject>> + Send + 'static {
    futures::stream::unfold(loads, |mut loads| async move {
        loads.changed().await.ok()?;
        Some(((), loads))
    })
    .flat_map(move |()| {
        let refs: Vec<ObjectRef<DynamicObject>> = ctx
            .loaded
            .load()
            .objects
            .iter()
            .filter(|(api_version, k, _, _)| {
                *api_version == kind.resource.api_version && *k == kind.resource.kind
            })
            .map(|(_, _, namespace, name)| {
                ObjectRef::new_with(name, kind.resource.clone()).within(namespace)
            })
            .collect();
        futures::stream::iter(refs)
    })
}

fn error_policy(object: Arc<DynamicObject>, error: &ReconcileError, ctx: Arc<Context>) -> Action {
    let key = label(&object);
    let delay = ctx.backoff(&key);
    tracing::warn!(object = %key, %error, retry_in = ?delay, "Reconcile failed; retrying.");
    Action::requeue(delay)
}

/// What the load says about a tidegate or Knative Trigger: its errors, and whether its broker
/// and subscriber are usable.
fn trigger_conditions(
    ctx: &Context,
    object: &DynamicObject,
    loaded: &Loaded,
) -> (Vec<Cond>, Option<String>) {
    let (namespace, name) = names(object);
    let (broker_namespace, broker) = trigger_broker(&object.data, &namespace);
    let broker_ready = match ctx.topology.load().get(broker_namespace, broker) {
        Some(entry) => match entry.not_ready() {
            None => Cond::ok("BrokerReady"),
            Some(reason) => Cond::failed("BrokerReady", "BrokerNotReady", reason),
        },
        None => Cond::unknown(
            "BrokerReady",
            "BrokerDoesNotExist",
            format!(
                "Broker {broker_namespace}/{broker} does not exist or is not of class {BROKER_CLASS}"
            ),
        ),
    };
    let trigger = loaded
        .snapshot
        .triggers
        .iter()
        .find(|t| t.namespace == namespace && t.name == name);
    let (resolved, uri) = match trigger {
        Some(t) => match subscriber_uri(&t.subscriber, &loaded.snapshot) {
            Ok(uri) => (Cond::ok("SubscriberResolved"), Some(uri)),
            Err(why) => (Cond::failed("SubscriberResolved", "Unresolved", why), None),
        },
        None => (
            Cond::unknown(
                "SubscriberResolved",
                "NotLoaded",
                "the Trigger is not served",
            ),
            None,
        ),
    };
    (vec![broker_ready, resolved], uri)
}

/// Where a subscriber is reached from the cluster: a URI as written, a Knative Service at its
/// cluster-local address (tidegate itself delivers through the revision's queue), a core
/// Service at its cluster DNS name.
fn subscriber_uri(
    destination: &triggers::Destination,
    snapshot: &triggers::Snapshot,
) -> Result<String, String> {
    match destination {
        triggers::Destination::Uri(uri) => Ok(uri.clone()),
        triggers::Destination::Ref {
            kind,
            api_version,
            namespace,
            name,
            path,
        } if kind == "Service" && api_version.starts_with("serving.knative.dev/") => {
            if !snapshot
                .services
                .iter()
                .any(|s| s.namespace == *namespace && s.name == *name)
            {
                return Err(format!(
                    "Knative Service {namespace}/{name} does not exist or is not served"
                ));
            }
            let path = path
                .as_deref()
                .map(triggers::snapshot::absolute_path)
                .unwrap_or_default();
            Ok(format!("http://{name}.{namespace}.svc.cluster.local{path}"))
        }
        other => other.kubernetes_url().ok_or_else(|| match other {
            triggers::Destination::Ref {
                kind,
                api_version,
                namespace,
                name,
                ..
            } => format!("{kind}.{api_version} {namespace}/{name} is not addressable by tidegate"),
            triggers::Destination::Uri(uri) => uri.clone(),
        }),
    }
}

fn load_errors(loaded: &Loaded, object: &DynamicObject) -> Option<String> {
    let errors = loaded.errors.get(&label(object))?;
    Some(
        errors
            .iter()
            .map(|e| format!("{}: {}", e.field, e.reason))
            .collect::<Vec<_>>()
            .join("; "),
    )
}

pub(crate) async fn reconcile_tidegate_trigger(
    object: Arc<DynamicObject>,
    ctx: Arc<Context>,
) -> Result<Action, ReconcileError> {
    match tidegate_trigger(Arc::clone(&object), Arc::clone(&ctx)).await {
        Ok(action) => Ok(action),
        Err(error) => {
            Err(report_failure(&ctx, &ctx.kinds.tidegate_trigger, &object, error, "False").await)
        }
    }
}

async fn tidegate_trigger(
    object: Arc<DynamicObject>,
    ctx: Arc<Context>,
) -> Result<Action, ReconcileError> {
    let kind = &ctx.kinds.tidegate_trigger;
    let (namespace, name) = names(&object);
    let key = label(&object);
    let api = kind.namespaced(&ctx.client, &namespace);
    if object.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let loaded = ctx.loaded.load_full();
    if !loaded.has_seen(&serde_json::to_value(object.as_ref()).unwrap_or_default()) {
        // The next load (which reconciles every Trigger again) validates this version.
        return Ok(Action::requeue(Duration::from_secs(5)));
    }
    let mut conditions = Vec::new();
    let mut uri = None;
    let mut problem: Option<(String, String)> = None;
    let inline = object.data.pointer("/spec/service").cloned();
    if let Some(inline) = &inline {
        let service_name = inline
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or(&name)
            .to_owned();
        match ensure_service(
            &ctx,
            &object,
            inline,
            &service_name,
            loaded.errors.contains_key(&key),
        )
        .await?
        {
            ServiceState::NotOwned => {
                let message = format!(
                    "a Knative Service {namespace}/{service_name} exists that this Trigger does not own; it is left as it is: rename spec.service.metadata.name or delete that Service"
                );
                problem = Some(("ServiceNotOwned".into(), message.clone()));
                conditions.push(Cond::failed("ServiceReady", "ServiceNotOwned", message));
            }
            ServiceState::Invalid => {}
            ServiceState::Applied(service) => {
                conditions.push(service_ready(service.as_ref()));
                uri = service.as_ref().and_then(|s| {
                    s.pointer("/status/address/url")
                        .or_else(|| s.pointer("/status/url"))
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                });
            }
        }
    }
    if problem.is_none()
        && let Some(errors) = load_errors(&loaded, &object)
    {
        problem = Some(("InvalidSpec".into(), errors));
    }
    let (mut more, resolved_uri) = trigger_conditions(&ctx, &object, &loaded);
    if inline.is_none() {
        uri = resolved_uri;
    }
    more.append(&mut conditions);
    let mut conditions = more;
    if let Some((reason, message)) = &problem {
        conditions.insert(0, Cond::failed("Ready", reason, message.clone()));
        ctx.warn(kind, &object, reason, message).await;
    } else {
        let r = ready(&conditions);
        conditions.insert(0, r);
    }
    let status = trigger_status(&object, &conditions, uri);
    patch_status(&api, &object, status)
        .await
        .map_err(|e| ReconcileError::api(kind, "patch the status of", &name, &e))?;
    ctx.succeeded(&key);
    Ok(requeue_for(&conditions))
}

fn trigger_status(object: &DynamicObject, conditions: &[Cond], uri: Option<String>) -> Value {
    let previous = object.data.pointer("/status/conditions");
    json!({
        "conditions": conditions_json(conditions, previous, &now()),
        "observedGeneration": object.metadata.generation.unwrap_or(0),
        // null removes a URI that no longer resolves.
        "subscriberUri": uri,
    })
}

fn service_ready(service: Option<&Value>) -> Cond {
    match condition(
        service.and_then(|s| s.pointer("/status/conditions")),
        "Ready",
    ) {
        Some(c) if c.get("status").and_then(Value::as_str) == Some("True") => {
            Cond::ok("ServiceReady")
        }
        Some(c) => {
            let reason = c
                .get("reason")
                .and_then(Value::as_str)
                .unwrap_or("NotReady");
            let message = c
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("the Knative Service is not ready");
            if c.get("status").and_then(Value::as_str) == Some("False") {
                Cond::failed("ServiceReady", reason, message)
            } else {
                Cond::unknown("ServiceReady", reason, message)
            }
        }
        None => Cond::unknown(
            "ServiceReady",
            "ServiceCreated",
            "waiting for Knative to report the Service",
        ),
    }
}

enum ServiceState {
    /// Applied (or unchanged); the Service as the API last returned it.
    Applied(Option<Value>),
    /// A Service of that name is not the Trigger's.
    NotOwned,
    /// The Trigger is invalid: nothing applied.
    Invalid,
}

/// Creates or updates the Trigger's Service, unless the name is taken or the Trigger invalid.
async fn ensure_service(
    ctx: &Context,
    trigger: &DynamicObject,
    inline: &Value,
    service_name: &str,
    invalid: bool,
) -> Result<ServiceState, ReconcileError> {
    let kind = &ctx.kinds.service;
    let namespace = trigger.metadata.namespace.clone().unwrap_or_default();
    let api = kind.namespaced(&ctx.client, &namespace);
    let existing = api
        .get_opt(service_name)
        .await
        .map_err(|e| ReconcileError::api(kind, "get", service_name, &e))?;
    let uid = trigger.metadata.uid.as_deref().unwrap_or_default();
    let existing = existing.map(|e| serde_json::to_value(&e).unwrap_or_default());
    if let Some(e) = &existing
        && controller_uid(e, TIDEGATE_TRIGGER_API_VERSION, "Trigger") != Some(uid)
    {
        return Ok(ServiceState::NotOwned);
    }
    if invalid {
        return Ok(ServiceState::Invalid);
    }
    let body = service_body(
        trigger,
        inline,
        service_name,
        &ctx.kinds.tidegate_trigger.resource,
    );
    let hash = applied_hash(&body);
    if existing
        .as_ref()
        .and_then(|e| annotation(e, APPLIED_ANNOTATION))
        .is_some_and(|h| h == hash)
    {
        return Ok(ServiceState::Applied(existing));
    }
    let mut body = body;
    body["metadata"]["annotations"][APPLIED_ANNOTATION] = json!(hash);
    let applied = api
        .patch(
            service_name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&body),
        )
        .await
        .map_err(|e| ReconcileError::api(kind, "apply", service_name, &e))?;
    tracing::info!(namespace = %namespace, service = %service_name, "Knative Service applied.");
    Ok(ServiceState::Applied(serde_json::to_value(&applied).ok()))
}

/// The Knative Service a Trigger declares: its `spec.service` with the Trigger as controller,
/// and the precise class unless the template names one.
pub fn service_body(
    trigger: &DynamicObject,
    inline: &Value,
    name: &str,
    trigger_resource: &ApiResource,
) -> Value {
    let mut spec = inline.get("spec").cloned().unwrap_or_else(|| json!({}));
    let annotations = spec
        .pointer("/template/metadata/annotations")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    if !annotations.contains_key(CLASS_ANNOTATION) {
        let mut annotations = annotations;
        annotations.insert(CLASS_ANNOTATION.into(), json!(PRECISE_CLASS));
        if spec.get("template").is_none() {
            spec["template"] = json!({});
        }
        if spec["template"].get("metadata").is_none() {
            spec["template"]["metadata"] = json!({});
        }
        spec["template"]["metadata"]["annotations"] = Value::Object(annotations);
    }
    let mut labels = inline
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    labels.insert(
        TRIGGER_LABEL.into(),
        json!(trigger.metadata.name.clone().unwrap_or_default()),
    );
    let annotations = inline
        .pointer("/metadata/annotations")
        .cloned()
        .unwrap_or_else(|| json!({}));
    json!({
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Service",
        "metadata": {
            "name": name,
            "namespace": trigger.metadata.namespace,
            "labels": labels,
            "annotations": annotations,
            "ownerReferences": [owner_reference(trigger, trigger_resource)],
        },
        "spec": spec,
    })
}

/// A controller owner reference to `owner` (blocking its deletion until this one is gone, as
/// Knative's own children do).
pub fn owner_reference(owner: &DynamicObject, resource: &ApiResource) -> Value {
    json!({
        "apiVersion": resource.api_version,
        "kind": resource.kind,
        "name": owner.metadata.name,
        "uid": owner.metadata.uid,
        "controller": true,
        "blockOwnerDeletion": true,
    })
}

/// A short stable hash of what is applied.
pub fn applied_hash(body: &Value) -> String {
    use std::hash::{Hash as _, Hasher as _};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    body.to_string().hash(&mut hasher);
    format!("{:016x}", hasher.finish())
}

async fn reconcile_broker(
    object: Arc<DynamicObject>,
    ctx: Arc<Context>,
) -> Result<Action, ReconcileError> {
    let value = serde_json::to_value(object.as_ref()).unwrap_or_default();
    if annotation(&value, BROKER_CLASS_ANNOTATION) != Some(BROKER_CLASS) {
        return Ok(Action::await_change());
    }
    let kind = &ctx.kinds.broker;
    let (namespace, name) = names(&object);
    let key = label(&object);
    let loaded = ctx.loaded.load_full();
    if !loaded.has_seen(&value) {
        return Ok(Action::requeue(Duration::from_secs(5)));
    }
    let url = format!("{}/{namespace}/{name}", ctx.ingress_url);
    let mut conditions = vec![Cond::ok("Addressable")];
    let problem = load_errors(&loaded, &object);
    let storage = match (&problem, ctx.topology.load().get(&namespace, &name)) {
        (Some(errors), _) => Cond::failed("Ingress", "InvalidSpec", errors.clone()),
        (None, Some(entry)) => match entry.not_ready() {
            None => Cond::ok("Ingress"),
            Some(reason) => Cond::failed("Ingress", "BackendNotReady", reason),
        },
        (None, None) => Cond::unknown("Ingress", "NotLoaded", "the Broker is not served yet"),
    };
    if let Some(errors) = &problem {
        ctx.warn(kind, &object, "InvalidSpec", errors).await;
    }
    conditions.push(storage);
    let r = ready(&conditions);
    conditions.insert(0, r);
    let previous = object.data.pointer("/status/conditions");
    let status = json!({
        "address": {"name": "http", "url": url},
        "addresses": [{"name": "http", "url": url}],
        "conditions": conditions_json(&conditions, previous, &now()),
        "observedGeneration": object.metadata.generation.unwrap_or(0),
    });
    patch_status(&kind.namespaced(&ctx.client, &namespace), &object, status)
        .await
        .map_err(|e| ReconcileError::api(kind, "patch the status of", &name, &e))?;
    ctx.succeeded(&key);
    Ok(requeue_for(&conditions))
}

async fn reconcile_knative_trigger(
    object: Arc<DynamicObject>,
    ctx: Arc<Context>,
) -> Result<Action, ReconcileError> {
    let kind = &ctx.kinds.trigger;
    let (namespace, name) = names(&object);
    let loaded = ctx.loaded.load_full();
    let (broker_namespace, broker) = trigger_broker(&object.data, &namespace);
    // Only Triggers on tidegate's Brokers are tidegate's to report.
    let ours = loaded
        .objects
        .iter()
        .any(|(_, k, ns, n)| k == "Broker" && ns == broker_namespace && n == broker);
    if !ours {
        return Ok(Action::await_change());
    }
    if !loaded.has_seen(&serde_json::to_value(object.as_ref()).unwrap_or_default()) {
        return Ok(Action::requeue(Duration::from_secs(5)));
    }
    let key = label(&object);
    let (mut conditions, uri) = trigger_conditions(&ctx, &object, &loaded);
    conditions.push(Cond::ok("DependencyReady"));
    match load_errors(&loaded, &object) {
        Some(errors) => {
            ctx.warn(kind, &object, "InvalidSpec", &errors).await;
            conditions.insert(0, Cond::failed("Ready", "InvalidSpec", errors));
        }
        None => {
            let r = ready(&conditions);
            conditions.insert(0, r);
        }
    }
    let status = trigger_status(&object, &conditions, uri);
    patch_status(&kind.namespaced(&ctx.client, &namespace), &object, status)
        .await
        .map_err(|e| ReconcileError::api(kind, "patch the status of", &name, &e))?;
    ctx.succeeded(&key);
    Ok(requeue_for(&conditions))
}
