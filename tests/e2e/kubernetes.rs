//! Kubernetes mode against a stateful API emulator (`kube_emulator.py`: PyPI kmock with the
//! additions kube-rs needs; no real API server runs here). The test plays Knative's part:
//! it writes the Revision's Route status, PodAutoscaler, Deployment and EndpointSlice that
//! Knative and Kubernetes would, with the EndpointSlice pointing at a real `tidegate
//! sample-service` on 127.0.0.1.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{Gateway, SampleService, WAIT, bin, eventually, free_port, publish};

/// The emulator process.
struct Emulator {
    child: Child,
    url: String,
}

impl Emulator {
    /// Starts it with every resource declared except `omit` (CRDs "not installed").
    async fn start(omit: &[&str]) -> Emulator {
        Self::start_on(free_port(), omit).await
    }

    async fn start_on(port: u16, omit: &[&str]) -> Emulator {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e/kube_emulator.py");
        let child = Command::new("python3")
            .arg(script)
            .arg(port.to_string())
            .args(omit)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 runs the emulator (scripts/test.sh installs kmock)");
        let url = format!("http://127.0.0.1:{port}");
        let client = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + WAIT;
        while client.get(format!("{url}/api")).send().await.is_err() {
            assert!(tokio::time::Instant::now() < deadline, "emulator not up");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Emulator { child, url }
    }

    fn kubeconfig(&self, dir: &Path) -> String {
        let path = dir.join("kubeconfig");
        std::fs::write(
            &path,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: emu\n  cluster: {{server: \"{}\"}}\nusers:\n- name: emu\n  user: {{token: test}}\ncontexts:\n- name: emu\n  context: {{cluster: emu, user: emu, namespace: default}}\ncurrent-context: emu\n",
                self.url
            ),
        )
        .expect("write kubeconfig");
        path.display().to_string()
    }

    fn path(&self, resource: &str, name: Option<&str>) -> String {
        let (prefix, rest) = match resource.split_once('/') {
            Some(("v1", plural)) => ("api/v1".to_owned(), plural.to_owned()),
            _ => {
                let (gv, plural) = resource.rsplit_once('/').expect("group/version/plural");
                (format!("apis/{gv}"), plural.to_owned())
            }
        };
        let mut url = format!("{}/{prefix}/namespaces/default/{rest}", self.url);
        if let Some(name) = name {
            url.push('/');
            url.push_str(name);
        }
        url
    }

    async fn create(&self, resource: &str, object: Value) -> Value {
        let response = reqwest::Client::new()
            .post(self.path(resource, None))
            .json(&object)
            .send()
            .await
            .expect("create");
        assert!(
            response.status().is_success(),
            "create {resource}: {}",
            response.status()
        );
        response.json().await.expect("created object")
    }

    async fn get(&self, resource: &str, name: &str) -> Option<Value> {
        let response = reqwest::get(self.path(resource, Some(name)))
            .await
            .expect("get");
        if response.status() == 404 {
            return None;
        }
        Some(response.json().await.expect("object"))
    }

    async fn list(&self, resource: &str) -> Vec<Value> {
        let list: Value = reqwest::get(self.path(resource, None))
            .await
            .expect("list")
            .json()
            .await
            .expect("list JSON");
        list["items"].as_array().cloned().unwrap_or_default()
    }

    async fn patch(&self, resource: &str, name: &str, patch: Value) {
        let response = reqwest::Client::new()
            .patch(self.path(resource, Some(name)))
            .header("content-type", "application/merge-patch+json")
            .body(patch.to_string())
            .send()
            .await
            .expect("patch");
        assert!(
            response.status().is_success(),
            "patch {resource}/{name}: {}",
            response.status()
        );
    }

    async fn delete(&self, resource: &str, name: &str) {
        let response = reqwest::Client::new()
            .delete(self.path(resource, Some(name)))
            .send()
            .await
            .expect("delete");
        assert!(
            response.status().is_success(),
            "delete {resource}/{name}: {}",
            response.status()
        );
    }

    /// The object once `ready` holds for it.
    async fn wait_for(
        &self,
        resource: &str,
        name: &str,
        what: &str,
        ready: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let object = self.get(resource, name).await;
            if let Some(object) = object.filter(|o| ready(o)) {
                return object;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}: {:?}",
                self.get(resource, name).await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const BROKERS: &str = "eventing.knative.dev/v1/brokers";
const TRIGGERS: &str = "tidegate.dev/v1alpha1/triggers";
const SERVICES: &str = "serving.knative.dev/v1/services";
const ROUTES: &str = "serving.knative.dev/v1/routes";
const PAS: &str = "autoscaling.internal.knative.dev/v1alpha1/podautoscalers";
const DEPLOYMENTS: &str = "apps/v1/deployments";
const SLICES: &str = "discovery.k8s.io/v1/endpointslices";
const CORE_SERVICES: &str = "v1/services";
const EVENTS: &str = "events.k8s.io/v1/events";

fn condition<'a>(object: &'a Value, type_: &str) -> Option<&'a Value> {
    object["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

fn condition_is(object: &Value, type_: &str, status: &str) -> bool {
    condition(object, type_).is_some_and(|c| c["status"] == status)
}

async fn gateway(emulator: &Emulator, dir: &Path) -> Gateway {
    let kubeconfig = emulator.kubeconfig(dir);
    let ingress_port = free_port();
    let listen = format!("127.0.0.1:{ingress_port}");
    Gateway::start_on(
        &dir.join("unused-manifests"),
        &dir.join("data"),
        &[
            "--kubernetes",
            "--kubeconfig",
            &kubeconfig,
            "--advertise",
            &listen,
            "--ingress-url",
            "http://tidegate.example",
        ],
        &listen,
    )
    .await
}

/// Runs `tidegate serve --kubernetes` expected to stop by itself; fails the test (and kills
/// it) if it is still running after [`WAIT`].
async fn serve_until_exit(kubeconfig: &str, dir: &Path) -> std::process::Output {
    let child = Command::new(bin())
        .args([
            "serve",
            "--kubernetes",
            "--kubeconfig",
            kubeconfig,
            "--data-dir",
        ])
        .arg(dir.join("data"))
        .args([
            "--listen",
            &format!("127.0.0.1:{}", free_port()),
            "--admin-listen",
            &format!("127.0.0.1:{}", free_port()),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run tidegate");
    let pid = child.id();
    let waiting = tokio::task::spawn_blocking(move || child.wait_with_output());
    match tokio::time::timeout(WAIT, waiting).await {
        Ok(output) => output.expect("join").expect("tidegate output"),
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            panic!("tidegate serve --kubernetes did not stop within {WAIT:?}");
        }
    }
}

fn broker() -> Value {
    json!({"apiVersion": "eventing.knative.dev/v1", "kind": "Broker",
           "metadata": {"name": "default", "namespace": "default",
                        "annotations": {"eventing.knative.dev/broker.class": "tidegate"}}})
}

fn tidegate_trigger(name: &str, service: Value) -> Value {
    json!({"apiVersion": "tidegate.dev/v1alpha1", "kind": "Trigger",
           "metadata": {"name": name, "namespace": "default"},
           "spec": {"broker": "default", "delivery": {"retry": 20, "backoffDelay": "PT0.1S"}, "service": service}})
}

/// Publish → held in tidegate's queue → the precise PodAutoscaler scales the Deployment from
/// zero → the EndpointSlice Knative would write appears → the event reaches the pod; the same
/// pod serves HTTP routed by Knative's revision headers; deleting the Trigger cleans up.
#[tokio::test(flavor = "multi_thread")]
async fn a_trigger_with_a_service_is_created_scaled_from_zero_served_and_cleaned_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    let emulator = Emulator::start(&[]).await;
    let gw = gateway(&emulator, dir.path()).await;
    emulator.create(BROKERS, broker()).await;
    let trigger = emulator
        .create(
            TRIGGERS,
            tidegate_trigger(
                "orders",
                json!({"spec": {"template": {
                    "metadata": {"annotations": {"autoscaling.knative.dev/scale-down-delay": "1s"}},
                    "spec": {"containerConcurrency": 1, "containers": [{"image": "example.com/orders:1"}]}}}}),
            ),
        )
        .await;
    let trigger_uid = trigger["metadata"]["uid"].as_str().expect("uid").to_owned();

    // The owned Knative Service, as tidegate applied it.
    let service = emulator
        .wait_for(SERVICES, "orders", "the Trigger's Knative Service", |_| {
            true
        })
        .await;
    let owner = &service["metadata"]["ownerReferences"][0];
    assert_eq!(owner["kind"], "Trigger");
    assert_eq!(owner["apiVersion"], "tidegate.dev/v1alpha1");
    assert_eq!(owner["uid"], trigger_uid.as_str());
    assert_eq!(owner["controller"], true);
    assert_eq!(
        service["spec"]["template"]["metadata"]["annotations"]["autoscaling.knative.dev/class"],
        "precise.tidegate.dev",
        "Services created by Triggers default to the precise class"
    );
    assert_eq!(
        service["spec"]["template"]["spec"]["containerConcurrency"],
        1
    );

    // What Knative would do: a revision, its Route, its PodAutoscaler and Deployment (at zero).
    let revision = "orders-00001";
    emulator
        .patch(SERVICES, "orders", json!({"status": {"latestCreatedRevisionName": revision, "latestReadyRevisionName": revision,
            "url": "http://orders.default.example.com", "address": {"url": "http://orders.default.svc.cluster.local"},
            "conditions": [{"type": "Ready", "status": "True"}]}}))
        .await;
    emulator
        .create(ROUTES, json!({"apiVersion": "serving.knative.dev/v1", "kind": "Route",
            "metadata": {"name": "orders", "namespace": "default"},
            "status": {"traffic": [{"revisionName": revision, "percent": 100, "latestRevision": true}]}}))
        .await;
    emulator
        .create(DEPLOYMENTS, json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": format!("{revision}-deployment"), "namespace": "default"},
            "spec": {"replicas": 0, "selector": {"matchLabels": {"serving.knative.dev/revisionUID": "r-1"}},
                     "template": {"metadata": {"labels": {"serving.knative.dev/revisionUID": "r-1"}}, "spec": {"containers": [{"name": "user-container", "image": "example.com/orders:1"}]}}}}))
        .await;
    emulator
        .create(PAS, json!({"apiVersion": "autoscaling.internal.knative.dev/v1alpha1", "kind": "PodAutoscaler",
            "metadata": {"name": revision, "namespace": "default",
                         "annotations": {"autoscaling.knative.dev/class": "precise.tidegate.dev", "autoscaling.knative.dev/min-scale": "0"}},
            "spec": {"containerConcurrency": 1, "protocolType": "http1",
                     "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": format!("{revision}-deployment")}}}))
        .await;

    // tidegate's serving objects for the revision: it stays in the path at every scale.
    let public = emulator
        .wait_for(
            CORE_SERVICES,
            revision,
            "the revision's public Service",
            |_| true,
        )
        .await;
    assert!(
        public["spec"].get("selector").is_none_or(Value::is_null),
        "the public Service selects no pods: {public}"
    );
    let private = emulator
        .wait_for(
            CORE_SERVICES,
            &format!("{revision}-private"),
            "the private Service",
            |_| true,
        )
        .await;
    assert_eq!(
        private["spec"]["selector"]["serving.knative.dev/revisionUID"],
        "r-1"
    );
    assert_eq!(private["spec"]["ports"][0]["targetPort"], 8012);
    let slice = emulator
        .wait_for(
            SLICES,
            &format!("{revision}-tidegate"),
            "tidegate's EndpointSlice",
            |_| true,
        )
        .await;
    assert_eq!(
        slice["metadata"]["labels"]["kubernetes.io/service-name"],
        revision
    );
    let advertised = gw.ingress.trim_start_matches("http://").to_owned();
    assert_eq!(
        format!(
            "{}:{}",
            slice["endpoints"][0]["addresses"][0]
                .as_str()
                .unwrap_or_default(),
            slice["ports"][0]["port"]
        ),
        advertised
    );
    let pa = emulator
        .wait_for(PAS, revision, "the PodAutoscaler's status", |pa| {
            pa["status"]["serviceName"] == revision
        })
        .await;
    assert_eq!(
        pa["status"]["metricsServiceName"],
        format!("{revision}-private")
    );
    assert!(condition_is(&pa, "SKSReady", "True"), "{pa}");
    for c in ["Ready", "Active", "ScaleTargetInitialized", "SKSReady"] {
        assert!(condition(&pa, c).is_some(), "condition {c} in {pa}");
    }

    // An event arrives while the revision is at zero: it waits, and the Deployment is scaled.
    let client = reqwest::Client::new();
    let response = publish(
        &client,
        &gw.broker_url("default", "default"),
        "e-1",
        "order.created",
        &[],
    )
    .await;
    assert_eq!(response.status(), 202);
    emulator
        .wait_for(
            DEPLOYMENTS,
            &format!("{revision}-deployment"),
            "the Deployment scaled to 1 by the event",
            |d| d["spec"]["replicas"] == 1,
        )
        .await;
    let pa = emulator
        .wait_for(PAS, revision, "desiredScale 1", |pa| {
            pa["status"]["desiredScale"] == 1
        })
        .await;
    assert!(
        !condition_is(&pa, "Active", "True"),
        "no pod is ready yet: {pa}"
    );

    // The pod Kubernetes would start, listed as the private Service's endpoint.
    let pod = SampleService::start(&[]).await;
    let pod_port: u16 = pod
        .url
        .trim_end_matches('/')
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port");
    emulator
        .create(
            SLICES,
            json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": format!("{revision}-private-x1"), "namespace": "default",
                         "labels": {"kubernetes.io/service-name": format!("{revision}-private")}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": true}}],
            "ports": [{"name": "http", "port": pod_port, "protocol": "TCP"}]}),
        )
        .await;
    eventually("the held event to reach the pod", || async {
        pod.events().await.iter().any(|e| e["id"] == "e-1")
    })
    .await;
    let pa = emulator
        .wait_for(
            PAS,
            revision,
            "the PodAutoscaler Ready with one pod",
            |pa| pa["status"]["actualScale"] == 1 && condition_is(pa, "Ready", "True"),
        )
        .await;
    assert!(condition_is(&pa, "ScaleTargetInitialized", "True"));
    let trigger = emulator
        .wait_for(TRIGGERS, "orders", "the Trigger Ready", |t| {
            condition_is(t, "Ready", "True")
        })
        .await;
    assert_eq!(
        trigger["status"]["subscriberUri"],
        "http://orders.default.svc.cluster.local"
    );
    assert!(
        condition_is(&trigger, "BrokerReady", "True")
            && condition_is(&trigger, "ServiceReady", "True"),
        "{trigger}"
    );
    let broker = emulator
        .wait_for(BROKERS, "default", "the Broker's address", |b| {
            condition_is(b, "Ready", "True")
        })
        .await;
    assert_eq!(
        broker["status"]["address"]["url"],
        "http://tidegate.example/default/default"
    );

    // Knative's ingress sends the revision's traffic to tidegate, naming the revision.
    let response = client
        .get(format!("{}/hello", gw.ingress))
        .header("host", "orders.default.svc.cluster.local")
        .header("knative-serving-revision", revision)
        .header("knative-serving-namespace", "default")
        .send()
        .await
        .expect("request through tidegate");
    assert_eq!(response.status(), 200);

    // Knative's ingress probes its backends: tidegate answers as queue-proxy does.
    let probe = client
        .get(format!("{}/", gw.ingress))
        .header("k-network-probe", "probe")
        .header("k-network-hash", "h-42")
        .send()
        .await
        .expect("probe");
    assert_eq!(probe.status(), 200);
    assert_eq!(
        crate::harness::header(&probe, "k-network-hash"),
        Some("h-42")
    );

    // An edit that makes the Trigger invalid says so, and its Service stays served.
    emulator
        .patch(TRIGGERS, "orders", json!({"spec": {"filtres": []}}))
        .await;
    let invalid = emulator
        .wait_for(TRIGGERS, "orders", "InvalidSpec after a bad edit", |t| {
            condition(t, "Ready").is_some_and(|c| c["reason"] == "InvalidSpec")
        })
        .await;
    let message = condition(&invalid, "Ready")
        .and_then(|c| c["message"].as_str())
        .unwrap_or_default()
        .to_owned();
    assert!(message.contains("spec.filtres"), "{message}");
    let response = client
        .get(format!("{}/again", gw.ingress))
        .header("knative-serving-revision", revision)
        .header("knative-serving-namespace", "default")
        .send()
        .await
        .expect("request through tidegate");
    assert_eq!(
        response.status(),
        200,
        "the Service of an invalid Trigger is still served"
    );
    assert!(emulator.get(SERVICES, "orders").await.is_some());

    // Idle again: after the scale-down delay the Deployment goes back to zero.
    emulator
        .wait_for(
            DEPLOYMENTS,
            &format!("{revision}-deployment"),
            "the Deployment back at 0 once idle",
            |d| d["spec"]["replicas"] == 0,
        )
        .await;
    emulator
        .wait_for(PAS, revision, "desiredScale 0", |pa| {
            pa["status"]["desiredScale"] == 0
        })
        .await;

    // Deleting the Trigger deletes its Service (garbage collection); tidegate stops serving it.
    emulator.delete(TRIGGERS, "orders").await;
    eventually("the owned Service to be gone", || async {
        emulator.get(SERVICES, "orders").await.is_none()
    })
    .await;
    eventually("the gateway to drop the Service", || async {
        gw.revisions().await.is_empty()
    })
    .await;
}

/// A Trigger whose Service name is taken, and one whose inline Service is invalid: neither
/// touches anything, both say why in their status and in a Warning Event.
#[tokio::test(flavor = "multi_thread")]
async fn a_taken_name_and_an_invalid_service_are_reported_and_nothing_is_overwritten() {
    let dir = tempfile::tempdir().expect("tempdir");
    let emulator = Emulator::start(&[]).await;
    let _gw = gateway(&emulator, dir.path()).await;
    emulator.create(BROKERS, broker()).await;
    let foreign = json!({"apiVersion": "serving.knative.dev/v1", "kind": "Service",
        "metadata": {"name": "taken", "namespace": "default", "labels": {"team": "other"}},
        "spec": {"template": {"spec": {"containers": [{"image": "example.com/other:1"}]}}}});
    emulator.create(SERVICES, foreign).await;
    emulator
        .create(SERVICES, json!({"apiVersion": "serving.knative.dev/v1", "kind": "Service",
            "metadata": {"name": "broken", "namespace": "default"},
            "spec": {"template": {"spec": {"containers": [{"image": "example.com/b:1", "ports": [{"containerPort": 9091}]}]}}}}))
        .await;
    emulator
        .create(TRIGGERS, tidegate_trigger("taken", json!({"spec": {"template": {"spec": {"containers": [{"image": "example.com/mine:1"}]}}}})))
        .await;
    emulator
        .create(TRIGGERS, tidegate_trigger("bad", json!({"spec": {"template": {"spec": {"containerConcurrency": 1, "containers": [{"image": "example.com/bad:1", "ports": [{"containerPort": 8012}]}]}}}})))
        .await;

    let taken = emulator
        .wait_for(TRIGGERS, "taken", "ServiceNotOwned", |t| {
            condition(t, "Ready").is_some_and(|c| c["reason"] == "ServiceNotOwned")
        })
        .await;
    assert!(condition_is(&taken, "Ready", "False"));
    let service = emulator
        .get(SERVICES, "taken")
        .await
        .expect("the foreign Service stays");
    assert_eq!(
        service["spec"]["template"]["spec"]["containers"][0]["image"],
        "example.com/other:1"
    );
    assert!(
        service["metadata"]
            .get("ownerReferences")
            .is_none_or(Value::is_null),
        "not adopted: {service}"
    );

    let bad = emulator
        .wait_for(TRIGGERS, "bad", "InvalidSpec", |t| {
            condition(t, "Ready").is_some_and(|c| c["reason"] == "InvalidSpec")
        })
        .await;
    let message = condition(&bad, "Ready")
        .and_then(|c| c["message"].as_str())
        .unwrap_or_default()
        .to_owned();
    assert!(
        message.contains("spec.service.spec.template.spec.containers[0].ports[0].containerPort"),
        "located: {message}"
    );
    assert!(message.contains("8012"), "{message}");
    assert!(
        emulator.get(SERVICES, "bad").await.is_none(),
        "an invalid Trigger creates nothing"
    );

    eventually("Warning Events for both", || async {
        let events = emulator.list(EVENTS).await;
        let reason = |r: &str, name: &str| {
            events.iter().any(|e| {
                e["reason"] == r && e["regarding"]["name"] == name && e["type"] == "Warning"
            })
        };
        reason("ServiceNotOwned", "taken")
            && reason("InvalidSpec", "bad")
            && reason("InvalidSpec", "broken")
    })
    .await;
}

/// A CRD missing or a permission refused at start is a clear error naming it; the API server going away later keeps
/// the last objects served and `/readyz` says what fails; one that is not up yet at start is
/// waited for (not ready until it answers).
#[tokio::test(flavor = "multi_thread")]
async fn a_missing_crd_or_permission_stops_the_start_an_absent_api_server_is_waited_for_and_a_lost_one_keeps_the_last_state()
 {
    let dir = tempfile::tempdir().expect("tempdir");
    let emulator = Emulator::start(&["serving.knative.dev/v1/services"]).await;
    let kubeconfig = emulator.kubeconfig(dir.path());
    let output = serve_until_exit(&kubeconfig, dir.path()).await;
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(
            "the CRD services.serving.knative.dev (serving.knative.dev/v1 Service) is not installed"
        ),
        "{stderr}"
    );
    drop(emulator);

    // A permission the service account lacks stops the start too, naming it.
    let dir = tempfile::tempdir().expect("tempdir");
    let emulator = Emulator::start(&["forbid:v1/secrets"]).await;
    let kubeconfig = emulator.kubeconfig(dir.path());
    let output = serve_until_exit(&kubeconfig, dir.path()).await;
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("RBAC: tidegate's service account may not list secrets (v1 Secret)"),
        "{stderr}"
    );
    drop(emulator);

    let dir = tempfile::tempdir().expect("tempdir");
    let mut emulator = Emulator::start(&[]).await;
    let gw = gateway(&emulator, dir.path()).await;
    emulator.create(BROKERS, broker()).await;
    eventually("the Broker served", || async {
        !gw.brokers().await.is_empty()
    })
    .await;
    let _ = emulator.child.kill();
    let _ = emulator.child.wait();
    eventually("/readyz to name the failing watches", || async {
        let Ok(response) = reqwest::get(format!("{}/readyz", gw.admin)).await else {
            return false;
        };
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        status == 200 && body.contains("desired state:")
    })
    .await;
    let client = reqwest::Client::new();
    let response = publish(
        &client,
        &gw.broker_url("default", "default"),
        "e-2",
        "t",
        &[],
    )
    .await;
    assert_eq!(
        response.status(),
        202,
        "the last Brokers keep accepting events"
    );

    // Started while the API server is down: not ready, saying why, until it answers.
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let absent = Emulator {
        child: Command::new("true").spawn().expect("placeholder"),
        url: format!("http://127.0.0.1:{port}"),
    };
    let kubeconfig = absent.kubeconfig(dir.path());
    let gw = Gateway::start_unready(
        &dir.path().join("unused"),
        &dir.path().join("data"),
        &["--kubernetes", "--kubeconfig", &kubeconfig],
    )
    .await;
    eventually("/readyz 503 saying why", || async {
        let Ok(readyz) = reqwest::get(format!("{}/readyz", gw.admin)).await else {
            return false;
        };
        let status = readyz.status();
        let body = readyz.text().await.unwrap_or_default();
        assert_ne!(status, 200, "ready without an API server: {body}");
        body.contains("desired state: ")
    })
    .await;
    let emulator = Emulator::start_on(port, &[]).await;
    emulator.create(BROKERS, broker()).await;
    eventually("ready once the API server answers", || async {
        reqwest::get(format!("{}/readyz", gw.admin))
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
    eventually("the Broker served", || async {
        !gw.brokers().await.is_empty()
    })
    .await;
    drop(absent);
}

/// A Knative Trigger on a tidegate Broker delivers to a Knative Service (not created by
/// tidegate) whose EndpointSlices list one pod that refuses connections and one that works:
/// nothing is lost (refused requests never reached a pod and go to the other), and the
/// Trigger's status is written as Knative's broker implementations write it. A Trigger on a
/// Broker of another class is left alone.
#[tokio::test(flavor = "multi_thread")]
async fn a_knative_trigger_delivers_through_endpoint_slices_and_fails_over_refused_pods() {
    let dir = tempfile::tempdir().expect("tempdir");
    let emulator = Emulator::start(&[]).await;
    // Listed at start (list items of built-in kinds carry no apiVersion or kind).
    emulator
        .create("v1/configmaps", json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "broker-config", "namespace": "default"}, "data": {"backend": "embedded"}}))
        .await;
    let mut with_config = broker();
    with_config["spec"] =
        json!({"config": {"apiVersion": "v1", "kind": "ConfigMap", "name": "broker-config"}});
    emulator.create(BROKERS, with_config).await;
    let gw = gateway(&emulator, dir.path()).await;
    emulator
        .create(BROKERS, json!({"apiVersion": "eventing.knative.dev/v1", "kind": "Broker",
            "metadata": {"name": "other", "namespace": "default",
                         "annotations": {"eventing.knative.dev/broker.class": "MTChannelBasedBroker"}}}))
        .await;
    let revision = "audit-00001";
    emulator
        .create(SERVICES, json!({"apiVersion": "serving.knative.dev/v1", "kind": "Service",
            "metadata": {"name": "audit", "namespace": "default"},
            "spec": {"template": {"metadata": {"annotations": {"autoscaling.knative.dev/class": "precise.tidegate.dev", "autoscaling.knative.dev/min-scale": "1"}},
                                  "spec": {"containerConcurrency": 2, "containers": [{"image": "example.com/audit:1"}]}}},
            "status": {"latestCreatedRevisionName": revision, "latestReadyRevisionName": revision,
                       "conditions": [{"type": "Ready", "status": "True"}]}}))
        .await;
    emulator
        .create(ROUTES, json!({"apiVersion": "serving.knative.dev/v1", "kind": "Route",
            "metadata": {"name": "audit", "namespace": "default"},
            "status": {"traffic": [{"revisionName": revision, "percent": 100, "latestRevision": true}]}}))
        .await;
    let pod = SampleService::start(&[]).await;
    let pod_port: u16 = pod
        .url
        .trim_end_matches('/')
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port");
    let refused = free_port();
    for (name, port) in [("x1", refused), ("x2", pod_port)] {
        emulator
            .create(SLICES, json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {"name": format!("{revision}-private-{name}"), "namespace": "default",
                             "labels": {"kubernetes.io/service-name": format!("{revision}-private")}},
                "addressType": "IPv4",
                "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": true}}],
                "ports": [{"name": "http", "port": port, "protocol": "TCP"}]}))
            .await;
    }
    for (name, broker) in [("audit", "default"), ("elsewhere", "other")] {
        emulator
            .create("eventing.knative.dev/v1/triggers", json!({"apiVersion": "eventing.knative.dev/v1", "kind": "Trigger",
                "metadata": {"name": name, "namespace": "default"},
                "spec": {"broker": broker, "filters": [{"prefix": {"type": "audit."}}],
                         "delivery": {"retry": 10, "backoffDelay": "PT0.1S"},
                         "subscriber": {"ref": {"apiVersion": "serving.knative.dev/v1", "kind": "Service", "name": "audit"}}}}))
            .await;
    }
    let trigger = emulator
        .wait_for(
            "eventing.knative.dev/v1/triggers",
            "audit",
            "the Knative Trigger Ready",
            |t| condition_is(t, "Ready", "True"),
        )
        .await;
    for c in ["BrokerReady", "SubscriberResolved", "DependencyReady"] {
        assert!(condition_is(&trigger, c, "True"), "{c} in {trigger}");
    }
    assert_eq!(
        trigger["status"]["subscriberUri"],
        "http://audit.default.svc.cluster.local"
    );

    let client = reqwest::Client::new();
    for i in 0..20 {
        let response = publish(
            &client,
            &gw.broker_url("default", "default"),
            &format!("a-{i}"),
            "audit.entry",
            &[],
        )
        .await;
        assert_eq!(response.status(), 202);
    }
    eventually("all 20 events at the working pod", || async {
        let events = pod.events().await;
        (0..20).all(|i| events.iter().any(|e| e["id"] == format!("a-{i}")))
    })
    .await;
    for _ in 0..10 {
        let response = client
            .get(format!("{}/", gw.ingress))
            .header("host", "audit.default.example.com")
            .send()
            .await
            .expect("request");
        assert_eq!(
            response.status(),
            200,
            "routed by host to a pod that answers"
        );
    }
    let elsewhere = emulator
        .get("eventing.knative.dev/v1/triggers", "elsewhere")
        .await
        .expect("exists");
    assert!(
        elsewhere.get("status").is_none_or(Value::is_null),
        "another class's Trigger is not tidegate's: {elsewhere}"
    );
    let events = emulator.list(EVENTS).await;
    assert!(
        !events
            .iter()
            .any(|e| e["regarding"]["name"] == "default" && e["reason"] == "InvalidSpec"),
        "the Broker with its ConfigMap is valid: {events:?}"
    );
    let other = emulator.get(BROKERS, "other").await.expect("exists");
    assert!(other.get("status").is_none_or(Value::is_null), "{other}");
}

/// A traffic split over two Knative revisions: each revision runs with its own Revision's
/// settings (here `containerConcurrency`), and the split and tags are the Route's.
#[tokio::test(flavor = "multi_thread")]
async fn each_revision_of_a_split_runs_with_its_own_revision_s_settings() {
    let dir = tempfile::tempdir().expect("tempdir");
    let emulator = Emulator::start(&[]).await;
    let gw = gateway(&emulator, dir.path()).await;
    let template = |cc: u32| {
        json!({"metadata": {"annotations": {"autoscaling.knative.dev/class": "precise.tidegate.dev"}},
                                    "spec": {"containerConcurrency": cc, "containers": [{"image": "example.com/split:1"}]}})
    };
    emulator
        .create(
            SERVICES,
            json!({"apiVersion": "serving.knative.dev/v1", "kind": "Service",
            "metadata": {"name": "split", "namespace": "default"},
            "spec": {"template": template(5)},
            "status": {"latestCreatedRevisionName": "split-00002"}}),
        )
        .await;
    for (name, cc) in [("split-00001", 3), ("split-00002", 5)] {
        let mut revision = template(cc);
        revision["apiVersion"] = json!("serving.knative.dev/v1");
        revision["kind"] = json!("Revision");
        revision["metadata"]["name"] = json!(name);
        revision["metadata"]["namespace"] = json!("default");
        emulator
            .create("serving.knative.dev/v1/revisions", revision)
            .await;
    }
    emulator
        .create(ROUTES, json!({"apiVersion": "serving.knative.dev/v1", "kind": "Route",
            "metadata": {"name": "split", "namespace": "default"},
            "status": {"traffic": [{"revisionName": "split-00001", "percent": 80},
                                   {"revisionName": "split-00002", "percent": 20, "tag": "canary"}]}}))
        .await;
    eventually(
        "both revisions with their own containerConcurrency",
        || async {
            let revisions = gw.revisions().await;
            let cc = |name: &str| {
                revisions
                    .iter()
                    .find(|r| r["revision"] == name)
                    .map(|r| r["container_concurrency"].clone())
            };
            cc("split-00001") == Some(json!(3)) && cc("split-00002") == Some(json!(5))
        },
    )
    .await;
    assert!(
        gw.revisions()
            .await
            .iter()
            .all(|r| r.get("ignored_locally").is_none()),
        "nothing is ignored on Kubernetes"
    );
}
