//! The reconciler of Knative PodAutoscalers of class `precise.tidegate.dev`.
//!
//! Knative creates one PodAutoscaler per revision (named as the revision, owning nothing,
//! `spec.scaleTargetRef` the revision's Deployment) and leaves it to the reconciler of its
//! class, as it does for its own KPA and HPA classes. For each one tidegate:
//!
//! - keeps tidegate in the request path at every scale. Knative's ServerlessService can only
//!   point a revision's public Service at Knative's activator or at the pods, so tidegate
//!   creates no ServerlessService; it owns the two Services a ServerlessService would make:
//!   `{revision}-private`, selecting the revision's pods (its EndpointSlices are where tidegate
//!   dispatches), and the public `{revision}` with no selector and one EndpointSlice naming
//!   tidegate's own address. Knative's ingress sends the revision's share of traffic there with
//!   `Knative-Serving-Revision` / `Knative-Serving-Namespace`, which tidegate routes by; at zero
//!   requests wait in tidegate's queue, exactly as in local mode.
//! - patches the Deployment's `scale` subresource to the precise autoscaler's decision (exact
//!   in-flight and queued counts, `min-scale`, `max-scale`, `initial-scale`,
//!   `scale-down-delay`, from the revision's annotations through the same policy as locally).
//! - writes `status.serviceName`, `metricsServiceName`, `desiredScale`, `actualScale` (ready
//!   endpoints of `{revision}-private`) and the conditions Knative's revision reconciler reads:
//!   `SKSReady`, `ScaleTargetInitialized` (once the initial scale was ready, then for good),
//!   `Active` (True with ready pods, Unknown `Queued` while activating, False `NoTraffic` at
//!   zero by decision), and `Ready`, plus `observedGeneration`.
//!
//! A Service or EndpointSlice of those names that the PodAutoscaler does not control is never
//! overwritten: `Ready=False` with reason `NotOwned`, as Knative's reconcilers report it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::apps::v1::Deployment;
use kube::Api;
use kube::api::{DynamicObject, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::api::{FIELD_MANAGER, Kind, Kinds};
use super::controller::{
    APPLIED_ANNOTATION, Context, PRECISE_CLASS, ReconcileError, applied_hash, owner_reference,
    report_failure,
};
use super::pods::{DesiredScales, EndpointPods};
use super::status::{Cond, conditions_json, now, patch_status, ready};
use super::watch::{annotation, key};

const CLASS_ANNOTATION: &str = "autoscaling.knative.dev/class";
const INITIAL_SCALE_ANNOTATION: &str = "autoscaling.knative.dev/initial-scale";
const MIN_SCALE_ANNOTATION: &str = "autoscaling.knative.dev/min-scale";
/// The queue-proxy's ports in every Knative pod.
const QUEUE_HTTP_PORT: u16 = 8012;
const QUEUE_H2C_PORT: u16 = 8013;

/// What the PodAutoscaler reconciler needs besides the shared [`Context`].
pub struct Precise {
    pub ctx: Arc<Context>,
    pub scales: Arc<DesiredScales>,
    pub pods: Arc<EndpointPods>,
    /// Where Knative's ingress reaches tidegate (its pod address and ingress port).
    pub advertise: SocketAddr,
}

/// Runs the reconciler until `stop`; a changed decision (`decisions`) reconciles that
/// PodAutoscaler at once, and each one is looked at again every 2 s while it waits for pods.
pub async fn run(
    precise: Arc<Precise>,
    decisions: mpsc::UnboundedReceiver<(String, String)>,
    stop: tokio_util::sync::CancellationToken,
) {
    let kind = precise.ctx.kinds.pod_autoscaler.clone();
    let client = precise.ctx.client.clone();
    let resource = kind.resource.clone();
    let decided = futures::stream::unfold(decisions, |mut rx| async move {
        let (namespace, name) = rx.recv().await?;
        Some(((namespace, name), rx))
    })
    .map(move |(namespace, name)| ObjectRef::new_with(&name, resource.clone()).within(&namespace));
    Controller::new_with(
        kind.all(&client),
        watcher::Config::default(),
        kind.resource.clone(),
    )
    .reconcile_on(decided)
    .graceful_shutdown_on(stop.cancelled_owned())
    .run(reconcile, error_policy, precise)
    .for_each(|_| async {})
    .await;
}

fn error_policy(
    object: Arc<DynamicObject>,
    error: &ReconcileError,
    precise: Arc<Precise>,
) -> Action {
    let key = format!(
        "PodAutoscaler {}/{}",
        object.metadata.namespace.as_deref().unwrap_or_default(),
        object.metadata.name.as_deref().unwrap_or_default()
    );
    let delay = precise.ctx.backoff(&key);
    tracing::warn!(object = %key, %error, retry_in = ?delay, "Reconcile failed; retrying.");
    Action::requeue(delay)
}

pub(crate) async fn reconcile(
    object: Arc<DynamicObject>,
    precise: Arc<Precise>,
) -> Result<Action, ReconcileError> {
    match pod_autoscaler(Arc::clone(&object), Arc::clone(&precise)).await {
        Ok(action) => Ok(action),
        Err(error) => {
            let ctx = &precise.ctx;
            // Unknown, not False: Knative fails a revision whose PodAutoscaler is not Ready
            // before its initial scale, and an API error is worth a retry, not that.
            Err(report_failure(ctx, &ctx.kinds.pod_autoscaler, &object, error, "Unknown").await)
        }
    }
}

async fn pod_autoscaler(
    object: Arc<DynamicObject>,
    precise: Arc<Precise>,
) -> Result<Action, ReconcileError> {
    let value = serde_json::to_value(object.as_ref()).unwrap_or_default();
    if annotation(&value, CLASS_ANNOTATION) != Some(PRECISE_CLASS)
        || object.metadata.deletion_timestamp.is_some()
    {
        return Ok(Action::await_change());
    }
    let ctx = &precise.ctx;
    let kinds = &ctx.kinds;
    let (namespace, name) = key(&value);
    let pa_api = kinds.pod_autoscaler.namespaced(&ctx.client, &namespace);
    let h2c = value.pointer("/spec/protocolType").and_then(Value::as_str) == Some("h2c");
    let target = value
        .pointer("/spec/scaleTargetRef/name")
        .and_then(Value::as_str)
        .map_or_else(|| format!("{name}-deployment"), str::to_owned);
    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), &namespace);
    let deployment = deployments
        .get_opt(&target)
        .await
        .map_err(|e| ReconcileError::api(&kinds.deployment, "get", &target, &e))?;
    let previous = value.pointer("/status/conditions");
    let was_initialized = condition_true(previous, "ScaleTargetInitialized");
    let mut conditions = Vec::new();
    let Some(deployment) = deployment else {
        conditions.push(Cond::unknown(
            "ScaleTargetInitialized",
            "DeploymentMissing",
            format!("Deployment {namespace}/{target} does not exist yet"),
        ));
        conditions.push(Cond::unknown(
            "SKSReady",
            "NoService",
            "waiting for the Deployment",
        ));
        conditions.push(Cond::unknown(
            "Active",
            "Queued",
            "waiting for the Deployment",
        ));
        write(&pa_api, &object, &conditions, None, None, &name).await?;
        return Ok(Action::requeue(Duration::from_secs(2)));
    };
    let selector = deployment
        .spec
        .selector
        .match_labels
        .clone()
        .unwrap_or_default();

    // The two Services, and tidegate's endpoint behind the public one.
    let port = if h2c {
        (81, QUEUE_H2C_PORT, "http2")
    } else {
        (80, QUEUE_HTTP_PORT, "http")
    };
    let labels = json!({
        "serving.knative.dev/revision": name,
        "app.kubernetes.io/managed-by": "tidegate",
    });
    let private = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": format!("{name}-private"), "namespace": namespace,
                     "labels": with(&labels, "networking.internal.knative.dev/serviceType", "Private"),
                     "ownerReferences": [owner_reference(&object, &kinds.pod_autoscaler.resource)]},
        "spec": {"selector": selector,
                 "ports": [{"name": port.2, "port": port.0, "targetPort": port.1, "protocol": "TCP"}]},
    });
    let public = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": namespace,
                     "labels": with(&labels, "networking.internal.knative.dev/serviceType", "Public"),
                     "ownerReferences": [owner_reference(&object, &kinds.pod_autoscaler.resource)]},
        "spec": {"ports": [{"name": port.2, "port": port.0, "targetPort": precise.advertise.port(), "protocol": "TCP"}]},
    });
    let address_type = if precise.advertise.is_ipv4() {
        "IPv4"
    } else {
        "IPv6"
    };
    let slice = json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": format!("{name}-tidegate"), "namespace": namespace,
                     "labels": with(&with(&labels, "kubernetes.io/service-name", &name),
                                    "endpointslice.kubernetes.io/managed-by", "tidegate.dev"),
                     "ownerReferences": [owner_reference(&object, &kinds.pod_autoscaler.resource)]},
        "addressType": address_type,
        "endpoints": [{"addresses": [precise.advertise.ip().to_string()], "conditions": {"ready": true}}],
        "ports": [{"name": port.2, "port": precise.advertise.port(), "protocol": "TCP"}],
    });
    let uid = object.metadata.uid.clone().unwrap_or_default();
    let mut not_owned = None;
    for (kind, body) in [
        (&kinds.core_service, private),
        (&kinds.core_service, public),
        (&kinds.endpoint_slice, slice),
    ] {
        if let Err(Owned::Not(what)) = apply_owned(ctx, kind, &namespace, &uid, body).await? {
            not_owned = Some(what);
            break;
        }
    }
    if let Some(what) = not_owned {
        let message = format!(
            "{what} exists and is not controlled by this PodAutoscaler; it is left as it is"
        );
        conditions.push(Cond::failed("SKSReady", "NotOwned", message.clone()));
        ctx.warn(&kinds.pod_autoscaler, &object, "NotOwned", &message)
            .await;
        write(&pa_api, &object, &conditions, None, None, &name).await?;
        return Ok(Action::requeue(Duration::from_secs(30)));
    }

    // The scale.
    let actual = precise.pods.ready(&namespace, &format!("{name}-private"));
    let annotations = &value
        .pointer("/metadata/annotations")
        .cloned()
        .unwrap_or_default();
    let scale_annotation = |key: &str, default: u32| {
        annotations
            .get(key)
            .and_then(Value::as_str)
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(default)
    };
    let min_scale = scale_annotation(MIN_SCALE_ANNOTATION, 0);
    let initial = scale_annotation(INITIAL_SCALE_ANNOTATION, 1).max(min_scale);
    let unreachable =
        value.pointer("/spec/reachability").and_then(Value::as_str) == Some("Unreachable");
    let current = deployment.spec.replicas.unwrap_or(0);
    let desired = if unreachable && was_initialized {
        // No route reaches the revision: once it reached its initial scale, min-scale no
        // longer holds (Knative's rule).
        Some(0)
    } else {
        precise.scales.get(&namespace, &name)
    };
    if let Some(d) = desired {
        let d = i32::try_from(d).unwrap_or(i32::MAX);
        if d != current {
            deployments
                .patch_scale(
                    &target,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"spec": {"replicas": d}})),
                )
                .await
                .map_err(|e| {
                    ReconcileError::api(&kinds.deployment, "patch the scale of", &target, &e)
                })?;
            tracing::info!(%namespace, revision = %name, from = current, to = d, "Scaled the revision's Deployment.");
        }
    }
    let want = desired.map_or(current, |d| i32::try_from(d).unwrap_or(i32::MAX));
    let initialized = was_initialized || actual >= initial;
    // Knative's ingress reaches the revision through tidegate: only a revision tidegate
    // serves (its Service loaded, the revision in its split) is reachable.
    let served = ctx.loaded.load().snapshot.services.iter().any(|s| {
        s.namespace == namespace
            && (s.template_name.as_deref() == Some(name.as_str())
                || s.revisions.contains_key(&name)
                || s.traffic.iter().any(
                    |t| matches!(&t.revision, triggers::TrafficRevision::Named(n) if *n == name),
                ))
    });
    conditions.push(if served {
        Cond::ok("SKSReady")
    } else {
        Cond::unknown(
            "SKSReady",
            "NotServed",
            "tidegate does not serve this revision (yet): see the Knative Service's events and tidegate's /api/v1/manifests",
        )
    });
    conditions.push(if initialized {
        Cond::ok("ScaleTargetInitialized")
    } else {
        Cond::unknown(
            "ScaleTargetInitialized",
            "Queued",
            format!("waiting for {initial} ready pods (initial scale), {actual} ready"),
        )
    });
    conditions.push(if actual > 0 {
        Cond::ok("Active")
    } else if want == 0 {
        Cond::failed(
            "Active",
            "NoTraffic",
            "the revision is scaled to zero; requests wait in tidegate",
        )
    } else {
        Cond::unknown("Active", "Queued", "waiting for pods to be ready")
    });
    write(
        &pa_api,
        &object,
        &conditions,
        Some(want),
        Some(actual),
        &name,
    )
    .await?;
    ctx.succeeded(&format!("PodAutoscaler {namespace}/{name}"));
    Ok(Action::requeue(
        if initialized && i32::try_from(actual).ok() == Some(want) {
            Duration::from_secs(30)
        } else {
            Duration::from_secs(2)
        },
    ))
}

fn with(labels: &Value, key: &str, value: &str) -> Value {
    let mut labels = labels.clone();
    labels[key] = json!(value);
    labels
}

fn condition_true(conditions: Option<&Value>, type_: &str) -> bool {
    super::status::condition(conditions, type_)
        .is_some_and(|c| c.get("status").and_then(Value::as_str) == Some("True"))
}

/// Writes the PodAutoscaler's status (Ready from the others).
async fn write(
    api: &Api<DynamicObject>,
    object: &DynamicObject,
    conditions: &[Cond],
    desired: Option<i32>,
    actual: Option<u32>,
    name: &str,
) -> Result<(), ReconcileError> {
    let mut all = vec![ready(conditions)];
    all.extend(conditions.iter().cloned());
    let previous = object.data.pointer("/status/conditions");
    let mut status = json!({
        "conditions": conditions_json(&all, previous, &now()),
        "observedGeneration": object.metadata.generation.unwrap_or(0),
        "serviceName": name,
        "metricsServiceName": format!("{name}-private"),
    });
    // null removes a scale no longer known.
    status["desiredScale"] = json!(desired);
    status["actualScale"] = json!(actual);
    patch_status(api, object, status).await.map_err(|e| {
        ReconcileError::api(
            &Kinds::default().pod_autoscaler,
            "patch the status of",
            name,
            &e,
        )
    })
}

enum Owned {
    Not(String),
}

/// Applies `body` unless an object of its name exists that `owner_uid` does not control.
async fn apply_owned(
    ctx: &Context,
    kind: &Kind,
    namespace: &str,
    owner_uid: &str,
    mut body: Value,
) -> Result<Result<(), Owned>, ReconcileError> {
    let name = body
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let api = kind.namespaced(&ctx.client, namespace);
    let existing = api
        .get_opt(&name)
        .await
        .map_err(|e| ReconcileError::api(kind, "get", &name, &e))?;
    let hash = applied_hash(&body);
    if let Some(existing) = &existing {
        let controlled = existing
            .metadata
            .owner_references
            .as_ref()
            .is_some_and(|refs| {
                refs.iter()
                    .any(|r| r.controller == Some(true) && r.uid == owner_uid)
            });
        if !controlled {
            return Ok(Err(Owned::Not(format!(
                "{} {namespace}/{name}",
                kind.resource.kind
            ))));
        }
        if existing
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(APPLIED_ANNOTATION))
            .is_some_and(|h| *h == hash)
        {
            return Ok(Ok(()));
        }
    }
    body["metadata"]["annotations"] = json!({ APPLIED_ANNOTATION: hash });
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await
    .map_err(|e| ReconcileError::api(kind, "apply", &name, &e))?;
    Ok(Ok(()))
}
