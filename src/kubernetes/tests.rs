//! The reconcilers against a scripted API server (kube-rs's `tower-test` mocking): each test
//! answers the requests a reconcile makes, in order, and checks what is sent.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use http::{Request, Response, StatusCode};
use kube::Client;
use kube::api::DynamicObject;
use kube::client::Body;
use kube::runtime::reflector::store::Writer;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::api::{Kinds, preflight};
use super::autoscaler::{self, Precise};
use super::controller::{self, Context};
use super::pods::{DesiredScales, EndpointPods};
use super::watch::{Loaded, Watched};
use crate::topology::Topology;

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

/// One request as the server saw it.
struct Seen {
    method: String,
    uri: String,
    content_type: String,
    body: Value,
}

/// Answers the next request with `status` and `body`, returning what was asked.
async fn answer(handle: &mut Handle, status: u16, body: Value) -> Seen {
    let (request, send) = tokio::time::timeout(Duration::from_secs(5), handle.next_request())
        .await
        .expect("a request within 5 s")
        .expect("the client is still there");
    let method = request.method().to_string();
    let uri = request.uri().to_string();
    let content_type = request
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let bytes = request.into_body().collect_bytes().await.expect("body");
    let body_json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    send.send_response(
        Response::builder()
            .status(StatusCode::from_u16(status).expect("status"))
            .header("content-type", "application/json")
            .body(Body::from(body.to_string().into_bytes()))
            .expect("response"),
    );
    Seen {
        method,
        uri,
        content_type,
        body: body_json,
    }
}

/// No further request within 200 ms.
async fn quiet(handle: &mut Handle) {
    let next = tokio::time::timeout(Duration::from_millis(200), handle.next_request()).await;
    assert!(
        !matches!(next, Ok(Some(_))),
        "an unexpected request was made: {:?}",
        next.ok()
            .flatten()
            .map(|(r, _)| format!("{} {}", r.method(), r.uri()))
    );
}

fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Status", "status": "Failure", "code": code, "reason": reason, "message": message})
}

fn mock() -> (Client, Handle) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    (Client::new(service, "default"), handle)
}

fn trigger(service: Value) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "tidegate.dev/v1alpha1", "kind": "Trigger",
        "metadata": {"name": "orders", "namespace": "default", "uid": "u-1", "resourceVersion": "7", "generation": 3},
        "spec": {"broker": "default", "service": service},
    }))
    .expect("trigger")
}

fn context(client: Client, object: &DynamicObject) -> Arc<Context> {
    let value = serde_json::to_value(object).expect("json");
    let label = triggers::object_label(&value);
    let loaded = Loaded {
        versions: HashMap::from([(label, super::watch::digest_value(&value))]),
        ..Loaded::default()
    };
    Arc::new(Context::new(
        client,
        Kinds::default(),
        Arc::new(ArcSwap::from_pointee(loaded)),
        Arc::new(ArcSwap::from_pointee(Topology::default())),
        "http://tidegate.test".into(),
        Some("tidegate-0".into()),
    ))
}

fn condition<'a>(status: &'a Value, type_: &str) -> &'a Value {
    status["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == type_))
        .unwrap_or(&Value::Null)
}

const SERVICE_URL: &str = "/apis/serving.knative.dev/v1/namespaces/default/services/orders";
const STATUS_URL: &str = "/apis/tidegate.dev/v1alpha1/namespaces/default/triggers/orders/status";

fn request(seen: &Seen) -> (&str, &str) {
    (
        seen.method.as_str(),
        seen.uri.split('?').next().unwrap_or_default(),
    )
}

#[tokio::test]
async fn the_trigger_s_service_is_applied_with_the_trigger_as_controller() {
    let (client, mut handle) = mock();
    let object =
        trigger(json!({"spec": {"template": {"spec": {"containers": [{"image": "app:1"}]}}}}));
    let ctx = context(client, &object);
    let run = tokio::spawn(controller::reconcile_tidegate_trigger(
        Arc::new(object),
        Arc::clone(&ctx),
    ));

    let get = answer(
        &mut handle,
        404,
        status(
            404,
            "NotFound",
            "services.serving.knative.dev \"orders\" not found",
        ),
    )
    .await;
    assert_eq!(request(&get), ("GET", SERVICE_URL));
    let apply = answer(
        &mut handle,
        200,
        json!({"apiVersion": "serving.knative.dev/v1", "kind": "Service", "metadata": {"name": "orders", "namespace": "default"}}),
    )
    .await;
    assert_eq!(apply.method, "PATCH");
    assert_eq!(
        apply.uri,
        format!("{SERVICE_URL}?&force=true&fieldManager=tidegate")
    );
    assert_eq!(apply.content_type, "application/apply-patch+yaml");
    let owner = &apply.body["metadata"]["ownerReferences"][0];
    assert_eq!(owner["uid"], "u-1");
    assert_eq!(owner["kind"], "Trigger");
    assert_eq!(owner["controller"], true);
    assert_eq!(
        apply.body["metadata"]["labels"]["tidegate.dev/trigger"],
        "orders"
    );
    assert_eq!(
        apply.body["spec"]["template"]["metadata"]["annotations"]["autoscaling.knative.dev/class"],
        "precise.tidegate.dev"
    );
    let patch = answer(&mut handle, 200, json!({})).await;
    assert_eq!(request(&patch), ("PATCH", STATUS_URL));
    assert_eq!(patch.content_type, "application/merge-patch+json");
    assert_eq!(patch.body["status"]["observedGeneration"], 3);
    assert_eq!(condition(&patch.body, "ServiceReady")["status"], "Unknown");
    assert_eq!(condition(&patch.body, "Ready")["status"], "Unknown");
    run.await.expect("join").expect("reconciled");
    quiet(&mut handle).await;
}

#[tokio::test]
async fn a_service_the_trigger_does_not_own_is_never_applied() {
    let (client, mut handle) = mock();
    let object =
        trigger(json!({"spec": {"template": {"spec": {"containers": [{"image": "app:1"}]}}}}));
    let ctx = context(client, &object);
    let run = tokio::spawn(controller::reconcile_tidegate_trigger(
        Arc::new(object),
        Arc::clone(&ctx),
    ));

    let foreign = json!({"apiVersion": "serving.knative.dev/v1", "kind": "Service",
        "metadata": {"name": "orders", "namespace": "default", "uid": "s-9",
                     "ownerReferences": [{"apiVersion": "tidegate.dev/v1alpha1", "kind": "Trigger", "name": "other", "uid": "u-2", "controller": true}]}});
    let get = answer(&mut handle, 200, foreign).await;
    assert_eq!(request(&get), ("GET", SERVICE_URL));
    let event = answer(&mut handle, 201, json!({})).await;
    assert_eq!(
        request(&event),
        ("POST", "/apis/events.k8s.io/v1/namespaces/default/events")
    );
    assert_eq!(event.body["reason"], "ServiceNotOwned");
    assert_eq!(event.body["type"], "Warning");
    assert_eq!(event.body["regarding"]["name"], "orders");
    let patch = answer(&mut handle, 200, json!({})).await;
    assert_eq!(request(&patch), ("PATCH", STATUS_URL));
    let ready = condition(&patch.body, "Ready");
    assert_eq!(
        (ready["status"].as_str(), ready["reason"].as_str()),
        (Some("False"), Some("ServiceNotOwned"))
    );
    run.await.expect("join").expect("reconciled");
    quiet(&mut handle).await;
}

#[tokio::test]
async fn an_rbac_refusal_is_a_clear_condition_an_event_and_a_retry_with_backoff() {
    let (client, mut handle) = mock();
    let object =
        trigger(json!({"spec": {"template": {"spec": {"containers": [{"image": "app:1"}]}}}}));
    let ctx = context(client, &object);
    let object = Arc::new(object);
    let run = tokio::spawn(controller::reconcile_tidegate_trigger(
        Arc::clone(&object),
        Arc::clone(&ctx),
    ));

    answer(&mut handle, 404, status(404, "NotFound", "not found")).await;
    let forbidden = "services.serving.knative.dev \"orders\" is forbidden: User \"system:serviceaccount:tidegate-system:tidegate\" cannot patch resource \"services\"";
    let apply = answer(&mut handle, 403, status(403, "Forbidden", forbidden)).await;
    assert_eq!(apply.method, "PATCH");
    let event = answer(&mut handle, 201, json!({})).await;
    assert_eq!(event.body["reason"], "Forbidden");
    let patch = answer(&mut handle, 200, json!({})).await;
    assert_eq!(request(&patch), ("PATCH", STATUS_URL));
    let ready = condition(&patch.body, "Ready");
    assert_eq!(ready["reason"], "Forbidden");
    let message = ready["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("RBAC: tidegate's service account may not apply services.serving.knative.dev (serving.knative.dev/v1 Service) orders"),
        "{message}"
    );
    let error = run.await.expect("join").expect_err("the reconcile fails");
    assert_eq!(error.reason, "Forbidden");
    // error_policy: retried, each time later.
    let key = triggers::object_label(&serde_json::to_value(object.as_ref()).expect("json"));
    let first = ctx.backoff(&key);
    let second = ctx.backoff(&key);
    assert_eq!(
        (first, second),
        (Duration::from_millis(500), Duration::from_secs(1))
    );
    quiet(&mut handle).await;
}

#[tokio::test]
async fn a_conflict_writing_the_status_is_retried() {
    let (client, mut handle) = mock();
    let object =
        trigger(json!({"spec": {"template": {"spec": {"containers": [{"image": "app:1"}]}}}}));
    let ctx = context(client, &object);
    let run = tokio::spawn(controller::reconcile_tidegate_trigger(
        Arc::new(object),
        Arc::clone(&ctx),
    ));
    answer(&mut handle, 404, status(404, "NotFound", "not found")).await;
    answer(&mut handle, 200, json!({"apiVersion": "serving.knative.dev/v1", "kind": "Service", "metadata": {"name": "orders"}})).await;
    let conflict = answer(
        &mut handle,
        409,
        status(409, "Conflict", "the object has been modified"),
    )
    .await;
    assert_eq!(request(&conflict), ("PATCH", STATUS_URL));
    let event = answer(&mut handle, 201, json!({})).await;
    assert_eq!(event.body["reason"], "Conflict");
    answer(&mut handle, 200, json!({})).await;
    let error = run.await.expect("join").expect_err("retried");
    assert_eq!(error.reason, "Conflict");
}

#[tokio::test]
async fn the_start_check_names_the_missing_crd_and_the_refused_permission() {
    let (client, mut handle) = mock();
    let kinds = Kinds::default();
    let run = tokio::spawn(async move { preflight(&client, &kinds, Duration::from_secs(5)).await });
    for _ in 0..Kinds::default().watched().len() {
        let (request, send) = handle.next_request().await.expect("a list");
        let uri = request.uri().to_string();
        assert!(uri.contains("limit=1"), "{uri}");
        let (code, body) = if uri.starts_with("/apis/serving.knative.dev/v1/services") {
            (
                404,
                status(
                    404,
                    "NotFound",
                    "the server could not find the requested resource",
                ),
            )
        } else if uri.starts_with("/api/v1/secrets") {
            (403, status(403, "Forbidden", "secrets is forbidden"))
        } else {
            (
                200,
                json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": "1"}, "items": []}),
            )
        };
        send.send_response(
            Response::builder()
                .status(code)
                .body(Body::from(body.to_string().into_bytes()))
                .expect("response"),
        );
    }
    let error = format!("{:#}", run.await.expect("join").expect_err("refused"));
    assert!(
        error.contains(
            "the CRD services.serving.knative.dev (serving.knative.dev/v1 Service) is not installed"
        ),
        "{error}"
    );
    assert!(
        error.contains("RBAC: tidegate's service account may not list secrets (v1 Secret)"),
        "{error}"
    );
}

fn precise_context(
    client: Client,
    object: &DynamicObject,
    desired: Option<u32>,
) -> (Arc<Precise>, CancellationToken) {
    let ctx = context(client, object);
    // tidegate serves the revision: its Knative Service is loaded with it as the latest.
    let service = "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata: {name: orders, namespace: default}\nspec:\n  template:\n    spec:\n      containers: [{image: app:1}]\n";
    let mut snapshot =
        triggers::load_documents(&[("s.yaml".into(), service.to_owned())]).expect("service");
    snapshot.services[0].template_name = Some("orders-00001".into());
    let loaded = Loaded {
        snapshot: Arc::new(snapshot),
        versions: ctx.loaded.load().versions.clone(),
        ..Loaded::default()
    };
    ctx.loaded.store(Arc::new(loaded));
    let writer: Writer<DynamicObject> = Writer::new(Kinds::default().endpoint_slice.resource);
    let (_tx, changes) = tokio::sync::watch::channel(0u64);
    let stop = CancellationToken::new();
    let pods = EndpointPods::start(
        Watched {
            store: writer.as_reader(),
            changes,
            resource: Kinds::default().endpoint_slice.resource,
        },
        None,
        stop.clone(),
    );
    let (scales, _rx) = DesiredScales::new();
    if let Some(d) = desired {
        scales.set("default", "orders-00001", Some(d));
    }
    (
        Arc::new(Precise {
            ctx,
            scales,
            pods,
            advertise: "10.0.0.5:8080".parse().expect("addr"),
        }),
        stop,
    )
}

fn pod_autoscaler() -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "autoscaling.internal.knative.dev/v1alpha1", "kind": "PodAutoscaler",
        "metadata": {"name": "orders-00001", "namespace": "default", "uid": "pa-1", "resourceVersion": "3", "generation": 1,
                     "annotations": {"autoscaling.knative.dev/class": "precise.tidegate.dev"}},
        "spec": {"containerConcurrency": 1, "protocolType": "http1",
                 "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "orders-00001-deployment"}},
    }))
    .expect("pa")
}

fn deployment(replicas: i32) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment",
           "metadata": {"name": "orders-00001-deployment", "namespace": "default"},
           "spec": {"replicas": replicas, "selector": {"matchLabels": {"serving.knative.dev/revisionUID": "r-1"}},
                    "template": {"metadata": {"labels": {"serving.knative.dev/revisionUID": "r-1"}}, "spec": {"containers": [{"name": "c", "image": "app:1"}]}}}})
}

#[tokio::test]
async fn the_precise_pod_autoscaler_owns_the_revision_services_scales_the_deployment_and_reports() {
    let (client, mut handle) = mock();
    let pa = pod_autoscaler();
    let (precise, stop) = precise_context(client, &pa, Some(2));
    let run = tokio::spawn(autoscaler::reconcile(Arc::new(pa), Arc::clone(&precise)));

    let get = answer(&mut handle, 200, deployment(0)).await;
    assert_eq!(
        request(&get),
        (
            "GET",
            "/apis/apps/v1/namespaces/default/deployments/orders-00001-deployment"
        )
    );
    for (path, what) in [
        (
            "/api/v1/namespaces/default/services/orders-00001-private",
            "private",
        ),
        ("/api/v1/namespaces/default/services/orders-00001", "public"),
        (
            "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices/orders-00001-tidegate",
            "slice",
        ),
    ] {
        let get = answer(&mut handle, 404, status(404, "NotFound", "not found")).await;
        assert_eq!(request(&get), ("GET", path), "{what}");
        let apply = answer(
            &mut handle,
            200,
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"}}),
        )
        .await;
        assert_eq!(request(&apply), ("PATCH", path), "{what}");
        assert_eq!(apply.content_type, "application/apply-patch+yaml");
        assert_eq!(
            apply.body["metadata"]["ownerReferences"][0]["uid"], "pa-1",
            "{what}"
        );
        match what {
            "private" => {
                assert_eq!(
                    apply.body["spec"]["selector"]["serving.knative.dev/revisionUID"],
                    "r-1"
                );
                assert_eq!(apply.body["spec"]["ports"][0]["targetPort"], 8012);
            }
            "public" => assert!(apply.body["spec"].get("selector").is_none()),
            _ => {
                assert_eq!(apply.body["endpoints"][0]["addresses"][0], "10.0.0.5");
                assert_eq!(apply.body["ports"][0]["port"], 8080);
                assert_eq!(
                    apply.body["metadata"]["labels"]["kubernetes.io/service-name"],
                    "orders-00001"
                );
            }
        }
    }
    let scale = answer(&mut handle, 200, json!({"apiVersion": "autoscaling/v1", "kind": "Scale", "metadata": {"name": "orders-00001-deployment"}, "spec": {"replicas": 2}})).await;
    assert_eq!(
        request(&scale),
        (
            "PATCH",
            "/apis/apps/v1/namespaces/default/deployments/orders-00001-deployment/scale"
        )
    );
    assert_eq!(scale.body, json!({"spec": {"replicas": 2}}));
    let patch = answer(&mut handle, 200, json!({})).await;
    assert_eq!(
        request(&patch),
        (
            "PATCH",
            "/apis/autoscaling.internal.knative.dev/v1alpha1/namespaces/default/podautoscalers/orders-00001/status"
        )
    );
    let status = &patch.body["status"];
    assert_eq!(status["desiredScale"], 2);
    assert_eq!(status["actualScale"], 0);
    assert_eq!(status["serviceName"], "orders-00001");
    assert_eq!(status["metricsServiceName"], "orders-00001-private");
    assert_eq!(condition(&patch.body, "SKSReady")["status"], "True");
    assert_eq!(
        condition(&patch.body, "ScaleTargetInitialized")["status"],
        "Unknown"
    );
    let active = condition(&patch.body, "Active");
    assert_eq!(
        (active["status"].as_str(), active["reason"].as_str()),
        (Some("Unknown"), Some("Queued"))
    );
    assert_eq!(
        condition(&patch.body, "Ready")["status"],
        "Unknown",
        "never False while activating: Knative would fail the revision"
    );
    run.await.expect("join").expect("reconciled");
    stop.cancel();
}

#[tokio::test]
async fn a_pod_autoscaler_of_another_class_is_left_to_knative() {
    let (client, mut handle) = mock();
    let mut pa = pod_autoscaler();
    pa.metadata.annotations = Some(
        [(
            "autoscaling.knative.dev/class".to_owned(),
            "kpa.autoscaling.knative.dev".to_owned(),
        )]
        .into(),
    );
    let (precise, stop) = precise_context(client, &pa, Some(2));
    autoscaler::reconcile(Arc::new(pa), precise)
        .await
        .expect("nothing to do");
    quiet(&mut handle).await;
    stop.cancel();
}

#[tokio::test]
async fn a_private_service_the_pod_autoscaler_does_not_control_is_reported_not_owned() {
    let (client, mut handle) = mock();
    let pa = pod_autoscaler();
    let (precise, stop) = precise_context(client, &pa, Some(1));
    let run = tokio::spawn(autoscaler::reconcile(Arc::new(pa), Arc::clone(&precise)));
    answer(&mut handle, 200, deployment(0)).await;
    answer(&mut handle, 200, json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "orders-00001-private", "namespace": "default"}})).await;
    let event = answer(&mut handle, 201, json!({})).await;
    assert_eq!(event.body["reason"], "NotOwned");
    let patch = answer(&mut handle, 200, json!({})).await;
    let sks = condition(&patch.body, "SKSReady");
    assert_eq!(
        (sks["status"].as_str(), sks["reason"].as_str()),
        (Some("False"), Some("NotOwned"))
    );
    assert_eq!(condition(&patch.body, "Ready")["status"], "False");
    run.await.expect("join").expect("reported");
    quiet(&mut handle).await;
    stop.cancel();
}

/// Every YAML document under `deploy/kubernetes/`, by file.
fn deploy_documents() -> Vec<(std::path::PathBuf, Vec<Value>)> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes");
    let mut files = Vec::new();
    let mut dirs = vec![root];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("read deploy/kubernetes") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "yaml") {
                let text = std::fs::read_to_string(&path).expect("read");
                let docs: Vec<Value> = serde_saphyr::from_multiple(&text)
                    .unwrap_or_else(|e| panic!("{} does not parse: {e}", path.display()));
                files.push((path, docs));
            }
        }
    }
    files.sort_by(|a, b| a.0.cmp(&b.0));
    files
}

#[test]
fn every_deploy_manifest_parses_and_names_its_kind() {
    let files = deploy_documents();
    assert!(files.len() >= 10, "{files:?}");
    for (path, docs) in &files {
        assert!(!docs.is_empty(), "{} is empty", path.display());
        for doc in docs {
            assert!(
                doc["apiVersion"].is_string() && doc["kind"].is_string(),
                "{}: {doc}",
                path.display()
            );
        }
    }
    let kustomization = files
        .iter()
        .find(|(p, _)| p.ends_with("kustomization.yaml"))
        .expect("kustomization.yaml");
    let root = kustomization.0.parent().expect("dir");
    for resource in kustomization.1[0]["resources"]
        .as_array()
        .expect("resources")
    {
        let path = root.join(resource.as_str().expect("path"));
        assert!(
            path.is_file(),
            "kustomization names {}, which is missing",
            path.display()
        );
    }
    // The Deployment: probes on the admin port, non-root, read-only root file system.
    let deployment = files
        .iter()
        .flat_map(|(_, d)| d)
        .find(|d| d["kind"] == "Deployment")
        .expect("Deployment");
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(
        deployment["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"],
        true
    );
    assert!(container["resources"]["requests"]["cpu"].is_string());
}

#[test]
fn the_deploy_examples_load_as_tidegate_reads_them() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes/examples");
    let snapshot = triggers::load_dirs(&[dir]).unwrap_or_else(|errors| {
        panic!(
            "{}",
            errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        )
    });
    assert_eq!(snapshot.brokers.len(), 1);
    assert_eq!(snapshot.triggers.len(), 2);
    let invoices = snapshot
        .services
        .iter()
        .find(|s| s.name == "invoices")
        .expect("the Trigger's Service");
    assert_eq!(
        invoices.template.scaling.class,
        triggers::ScalingClass::Precise
    );
    assert_eq!(invoices.template.container_concurrency, 1);
}

#[test]
fn the_rbac_rules_grant_the_verbs_tidegate_uses_and_no_more() {
    let files = deploy_documents();
    let role = files
        .iter()
        .flat_map(|(_, d)| d)
        .find(|d| d["kind"] == "ClusterRole")
        .expect("ClusterRole");
    let mut granted: Vec<String> = Vec::new();
    for rule in role["rules"].as_array().expect("rules") {
        for group in rule["apiGroups"].as_array().expect("groups") {
            for resource in rule["resources"].as_array().expect("resources") {
                for verb in rule["verbs"].as_array().expect("verbs") {
                    granted.push(format!(
                        "{}/{} {}",
                        group.as_str().unwrap_or_default(),
                        resource.as_str().unwrap_or_default(),
                        verb.as_str().unwrap_or_default()
                    ));
                }
            }
        }
    }
    granted.sort();
    let mut used: Vec<String> = super::api::PERMISSIONS
        .iter()
        .map(|p| (*p).to_owned())
        .collect();
    used.sort();
    assert_eq!(
        granted, used,
        "deploy/kubernetes/rbac.yaml and api::PERMISSIONS differ"
    );
}

/// Stores holding `objects` (by kind), as reflectors that listed them.
fn stores_with(objects: Vec<DynamicObject>) -> super::watch::Stores {
    let kinds = Kinds::default();
    let watched = |kind: &super::api::Kind| {
        let mut writer: Writer<DynamicObject> = Writer::new(kind.resource.clone());
        for object in &objects {
            let value = serde_json::to_value(object).expect("json");
            let of_kind = object
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get("test/kind"));
            if of_kind.map(String::as_str) == Some(kind.resource.kind.as_str())
                || value["kind"] == kind.resource.kind.as_str()
            {
                writer.apply_watcher_event(&kube::runtime::watcher::Event::Apply(object.clone()));
            }
        }
        let (_tx, changes) = tokio::sync::watch::channel(0u64);
        Watched {
            store: writer.as_reader(),
            changes,
            resource: kind.resource.clone(),
        }
    };
    super::watch::Stores {
        broker: watched(&kinds.broker),
        trigger: watched(&kinds.trigger),
        tidegate_trigger: watched(&kinds.tidegate_trigger),
        service: watched(&kinds.service),
        route: watched(&kinds.route),
        revision: watched(&kinds.revision),
        pod_autoscaler: watched(&kinds.pod_autoscaler),
        config_map: watched(&kinds.config_map),
        secret: watched(&kinds.secret),
        endpoint_slice: watched(&kinds.endpoint_slice),
    }
}

#[test]
fn list_items_without_api_version_and_kind_are_read_as_their_store_s_kind() {
    // As the API server lists built-in kinds: no apiVersion, no kind on the items.
    let mut config_map: DynamicObject = serde_json::from_value(json!({
        "metadata": {"name": "broker-config", "namespace": "default", "resourceVersion": "1",
                     "annotations": {"test/kind": "ConfigMap"}},
        "data": {"backend": "embedded"},
    }))
    .expect("config map");
    config_map.types = None;
    let broker: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "eventing.knative.dev/v1", "kind": "Broker",
        "metadata": {"name": "default", "namespace": "default", "resourceVersion": "2",
                     "annotations": {"eventing.knative.dev/broker.class": "tidegate"}},
        "spec": {"config": {"apiVersion": "v1", "kind": "ConfigMap", "name": "broker-config"}},
    }))
    .expect("broker");
    let loaded = super::watch::build(&stores_with(vec![config_map, broker]), None).expect("a load");
    assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
    assert_eq!(loaded.snapshot.brokers.len(), 1);
}

#[test]
fn a_left_out_trigger_s_service_is_still_served() {
    let trigger: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "tidegate.dev/v1alpha1", "kind": "Trigger",
        "metadata": {"name": "orders", "namespace": "default", "uid": "u-1", "resourceVersion": "5"},
        "spec": {"broker": "default", "filtres": [], "service": {"spec": {"template": {"spec": {"containers": [{"image": "app:1"}]}}}}},
    }))
    .expect("trigger");
    let service: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "serving.knative.dev/v1", "kind": "Service",
        "metadata": {"name": "orders", "namespace": "default", "resourceVersion": "6",
                     "ownerReferences": [{"apiVersion": "tidegate.dev/v1alpha1", "kind": "Trigger", "name": "orders", "uid": "u-1", "controller": true}]},
        "spec": {"template": {"spec": {"containers": [{"image": "app:1"}]}}},
        "status": {"latestCreatedRevisionName": "orders-00001"},
    }))
    .expect("service");
    let loaded = super::watch::build(&stores_with(vec![trigger, service]), None).expect("a load");
    let errors = loaded
        .errors
        .get("Trigger.tidegate.dev default/orders")
        .expect("the Trigger is left out");
    assert!(
        errors.iter().any(|e| e.field == "spec.filtres"),
        "{errors:?}"
    );
    let served: Vec<_> = loaded
        .snapshot
        .services
        .iter()
        .map(|s| (s.name.as_str(), s.template_name.as_deref()))
        .collect();
    assert_eq!(served, vec![("orders", Some("orders-00001"))]);
}

#[test]
fn only_referenced_config_maps_are_read_and_an_unchanged_input_makes_no_new_load() {
    // A version bump alone (no content change) is what a status write or a no-op update does.
    let config_map = |name: &str, version: &str| {
        let mut data = json!({"backend": "embedded"});
        if version == "edited" {
            data["max_bytes"] = json!("1Gi");
        }
        serde_json::from_value::<DynamicObject>(json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": "default", "resourceVersion": version},
            "data": data,
        }))
        .expect("config map")
    };
    let broker: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "eventing.knative.dev/v1", "kind": "Broker",
        "metadata": {"name": "default", "namespace": "default", "resourceVersion": "2",
                     "annotations": {"eventing.knative.dev/broker.class": "tidegate"}},
        "spec": {"config": {"apiVersion": "v1", "kind": "ConfigMap", "name": "broker-config"}},
    }))
    .expect("broker");
    let first = super::watch::build(
        &stores_with(vec![
            config_map("broker-config", "1"),
            config_map("leader-lock", "1"),
            broker.clone(),
        ]),
        None,
    )
    .expect("a load");
    assert_eq!(first.snapshot.brokers.len(), 1);
    assert!(
        !first
            .inputs
            .iter()
            .any(|(_, _, name, _)| name == "leader-lock"),
        "an unreferenced ConfigMap is not read: {:?}",
        first.inputs
    );
    let churn = stores_with(vec![
        config_map("broker-config", "5"),
        config_map("leader-lock", "edited"),
        broker.clone(),
    ]);
    assert!(
        super::watch::build(&churn, Some(&first)).is_none(),
        "an unread ConfigMap changed, and a read one only got a new version"
    );
    let edited = stores_with(vec![
        config_map("broker-config", "edited"),
        config_map("leader-lock", "9"),
        broker,
    ]);
    assert!(
        super::watch::build(&edited, Some(&first)).is_some(),
        "the Broker's ConfigMap changed"
    );
}

#[test]
fn a_secret_named_by_a_broker_s_config_map_is_read() {
    let objects: Vec<DynamicObject> = [
        json!({"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": "nats-config", "namespace": "default", "resourceVersion": "1"},
               "data": {"backend": "nats", "url": "nats://127.0.0.1:4222", "auth.secret.ref.name": "nats-creds"}}),
        json!({"apiVersion": "v1", "kind": "Secret",
               "metadata": {"name": "nats-creds", "namespace": "default", "resourceVersion": "1"},
               "stringData": {"token": "t"}}),
        json!({"apiVersion": "v1", "kind": "Secret",
               "metadata": {"name": "unrelated", "namespace": "default", "resourceVersion": "1"}}),
        json!({"apiVersion": "eventing.knative.dev/v1", "kind": "Broker",
               "metadata": {"name": "default", "namespace": "default", "resourceVersion": "2",
                            "annotations": {"eventing.knative.dev/broker.class": "tidegate"}},
               "spec": {"config": {"apiVersion": "v1", "kind": "ConfigMap", "name": "nats-config"}}}),
    ]
    .into_iter()
    .map(|v| serde_json::from_value(v).expect("object"))
    .collect();
    let loaded = super::watch::build(&stores_with(objects), None).expect("a load");
    let read: Vec<&str> = loaded
        .inputs
        .iter()
        .filter(|i| i.0 == "Secret")
        .map(|i| i.2.as_str())
        .collect();
    assert_eq!(read, vec!["nats-creds"]);
}

/// Prints what building a snapshot costs (not a test of speed: run it with
/// `cargo nextest run --run-ignored only measure_snapshot_load --no-capture`).
#[test]
#[ignore = "a measurement, run by hand"]
fn measure_snapshot_load() {
    let mut objects = Vec::new();
    for i in 0..1000 {
        objects.push(json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": format!("cm-{i}"), "namespace": "default", "resourceVersion": "1"},
            "data": {"a": "b".repeat(200)}}));
    }
    for i in 0..200 {
        objects.push(json!({"apiVersion": "serving.knative.dev/v1", "kind": "Service",
            "metadata": {"name": format!("svc-{i}"), "namespace": "default", "resourceVersion": "1"},
            "spec": {"template": {"spec": {"containerConcurrency": 2,
                "containers": [{"image": "app:1", "env": [{"name": "A", "value": "b"}]}]}}}}));
    }
    let objects = objects
        .into_iter()
        .map(|v| serde_json::from_value(v).expect("object"))
        .collect();
    let stores = stores_with(objects);
    let rounds = 10;
    let start = tokio::time::Instant::now();
    let mut last = None;
    for _ in 0..rounds {
        last = super::watch::build(&stores, None);
    }
    let full = start.elapsed() / rounds;
    let last = last.expect("a load");
    assert_eq!(last.snapshot.services.len(), 200);
    let start = tokio::time::Instant::now();
    for _ in 0..rounds {
        assert!(super::watch::build(&stores, Some(&last)).is_none());
    }
    let unchanged = start.elapsed() / rounds;
    eprintln!(
        "snapshot load, 200 Services + 1000 unrelated ConfigMaps: full {full:?}, unchanged check {unchanged:?}"
    );
}
