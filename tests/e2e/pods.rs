//! Revision pod specs as the Knative documentation writes them, run as real processes: a
//! mounted Secret and env from a ConfigMap, a liveness probe that fails, a sidecar the pod
//! waits for.

use std::time::Duration;

use crate::harness::*;

/// Shared by the pods' Python programs: `serve(get, port)` answers every GET with what
/// `get(path)` returns, `(status, body bytes)`.
const PY_SERVE: &str = r#"
import os
from http.server import BaseHTTPRequestHandler, HTTPServer
def serve(get, port=None):
    class H(BaseHTTPRequestHandler):
        def do_GET(self):
            status, body = get(self.path)
            self.send_response(status)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        def log_message(self, *a):
            pass
    HTTPServer(("127.0.0.1", int(port or os.environ["PORT"])), H).serve_forever()
"#;

/// Writes `PY_SERVE` followed by `program` to `dir/name` and returns its path.
fn python(dir: &std::path::Path, name: &str, program: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, format!("{PY_SERVE}\n{program}")).expect("write the program");
    path.display().to_string()
}

/// Serves `GET /` with what the pod sees: the mounted files and the env var.
const READER: &str = r#"
import json, sys

def read(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError as e:
        return "error: %s" % e

serve(lambda path: (200, json.dumps({
    "password": read("/etc/secret-volume/db/password"),
    "settings": read("/etc/app/settings.json"),
    "log_level": os.environ.get("LOG_LEVEL"),
    "user": os.environ.get("DB_USER"),
    "pod": os.environ.get("POD_NAME"),
    "writable": os.access("/etc/secret-volume", os.W_OK),
    "scratch": os.access("/scratch", os.W_OK),
    "cwd": os.getcwd(),
    "argv": sys.argv[1:],
    "linked": read("/var/run/app/db/password"),
}).encode()))
"#;

fn reader_manifests(script: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Secret
metadata:
  name: db-credentials
  namespace: default
type: Opaque
data:
  password: aHVudGVyMg==
stringData:
  user: admin
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: app-config
  namespace: default
data:
  LOG_LEVEL: debug
  settings.json: '{{"color": "blue"}}'
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: config-features
  namespace: knative-serving
data:
  kubernetes.podspec-fieldref: enabled
---
apiVersion: serving.knative.dev/v1
kind: Service
metadata:
  name: reader
  namespace: default
spec:
  template:
    spec:
      containers:
        - image: ghcr.io/example/reader:1
          command: [python3, "{script}"]
          args: ["--level=$(LOG_LEVEL)", "$$(LOG_LEVEL)", "$(UNDEFINED)"]
          workingDir: /scratch
          startupProbe:
            exec:
              command: [cat, /etc/secret-volume/db/password]
            periodSeconds: 1
          env:
            - name: LOG_LEVEL
              valueFrom:
                configMapKeyRef: {{name: app-config, key: LOG_LEVEL}}
            - name: DB_USER
              valueFrom:
                secretKeyRef: {{name: db-credentials, key: user}}
            - name: POD_NAME
              valueFrom:
                fieldRef: {{fieldPath: metadata.name}}
          securityContext:
            runAsNonRoot: false
          volumeMounts:
            - name: secret-volume
              mountPath: /etc/secret-volume
            - name: config
              mountPath: /etc/app/settings.json
              subPath: settings.json
            - name: scratch
              mountPath: /scratch
            - name: secret-volume
              mountPath: /var/run/app
      volumes:
        - name: secret-volume
          secret:
            secretName: db-credentials
            items:
              - {{key: password, path: db/password}}
        - name: config
          configMap:
            name: app-config
        - name: scratch
          emptyDir: {{}}
"#
    )
}

async fn get_json(gw: &Gateway, host: &str) -> serde_json::Value {
    let client = reqwest::Client::new();
    let response = client
        .get(format!("{}/", gw.ingress))
        .header("host", host)
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .expect("request through the proxy");
    assert_eq!(response.status(), 200);
    response.json().await.expect("json answer")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_reads_its_mounted_secret_and_env_from_a_config_map() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let script = python(tmp.path(), "reader.py", READER);
    let yaml = reader_manifests(&script);
    let dir = manifests(tmp.path(), &[("all.yaml", &yaml)]);
    let gw = Gateway::start(&dir, &tmp.path().join("data"), &[]).await;
    let seen = get_json(&gw, "reader.default.example.com").await;
    assert_eq!(seen["password"], "hunter2", "{seen}");
    assert_eq!(seen["settings"], "{\"color\": \"blue\"}", "{seen}");
    assert_eq!(seen["log_level"], "debug", "{seen}");
    assert_eq!(seen["user"], "admin", "{seen}");
    assert!(
        seen["pod"]
            .as_str()
            .is_some_and(|p| p.starts_with("reader-00001-")),
        "{seen}"
    );
    assert_eq!(
        seen["writable"], false,
        "Secret volumes are read-only: {seen}"
    );
    assert_eq!(seen["scratch"], true, "emptyDir is writable: {seen}");
    assert_eq!(
        seen["cwd"], "/scratch",
        "workingDir inside a volume: {seen}"
    );
    assert_eq!(
        seen["argv"],
        serde_json::json!(["--level=debug", "$(LOG_LEVEL)", "$(UNDEFINED)"]),
        "$(VAR) expanded as Kubernetes does: {seen}"
    );
    // Mounted through the /var/run -> /run link, inside the pod's root.
    if std::fs::symlink_metadata("/var/run").is_ok_and(|m| m.file_type().is_symlink()) {
        assert_eq!(seen["linked"], "hunter2", "{seen}");
        assert!(!std::path::Path::new("/run/app").exists());
    }
    // Nothing was created on the machine's own file system.
    assert!(!std::path::Path::new("/etc/secret-volume").exists());
    assert!(!std::path::Path::new("/scratch").exists());

    let revisions = gw.revisions().await;
    let ignored = revisions[0]["ignored_locally"].to_string();
    assert!(ignored.contains("securityContext"), "{revisions:?}");
    assert!(ignored.contains("containers[0].image"), "{revisions:?}");
    // Secret values never reach the admin API or the log.
    for what in ["revisions", "manifests"] {
        let text = reqwest::get(format!("{}/api/v1/{what}", gw.admin))
            .await
            .expect("admin")
            .text()
            .await
            .expect("text");
        assert!(!text.contains("hunter2"), "{what}: {text}");
    }
}

/// Healthy for its first second, then its liveness endpoint fails.
const SICKENS: &str = r#"
import time
start = time.time()
def get(path):
    sick = path == "/healthz" and time.time() - start > 1.0
    return (500 if sick else 200, str(os.getpid()).encode())
serve(get)
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_liveness_probe_restarts_the_pod() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let script = python(tmp.path(), "sickens.py", SICKENS);
    let yaml = format!(
        "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata:\n  name: sick\n  namespace: default\n  annotations:\nspec:\n  template:\n    metadata:\n      annotations:\n        autoscaling.knative.dev/min-scale: \"1\"\n    spec:\n      containers:\n        - command: [python3, \"{script}\"]\n          livenessProbe:\n            httpGet: {{path: /healthz}}\n            periodSeconds: 1\n            failureThreshold: 2\n"
    );
    let dir = manifests(tmp.path(), &[("svc.yaml", &yaml)]);
    let gw = Gateway::start(&dir, &tmp.path().join("data"), &[]).await;
    let client = reqwest::Client::new();
    let pid_of = |r: reqwest::Response| async move { r.text().await.expect("pid") };
    let first = pid_of(
        client
            .get(format!("{}/", gw.ingress))
            .header("host", "sick.default.example.com")
            .send()
            .await
            .expect("first request"),
    )
    .await;
    // The probe fails from the second second on; two failures restart the pod.
    let mut restarted = None;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let Ok(response) = client
            .get(format!("{}/", gw.ingress))
            .header("host", "sick.default.example.com")
            .timeout(Duration::from_secs(20))
            .send()
            .await
        else {
            continue;
        };
        if response.status() != 200 {
            continue;
        }
        let pid = pid_of(response).await;
        if pid != first {
            restarted = Some(pid);
            break;
        }
    }
    assert!(
        restarted.is_some(),
        "the pod whose liveness probe fails was never replaced"
    );
}

/// A serving container that answers with what its sidecar says; the sidecar listens late.
const FRONT: &str = r#"
import urllib.request
side = "http://127.0.0.1:%s/" % os.environ["SIDECAR_PORT"]
serve(lambda path: (200, urllib.request.urlopen(side, timeout=5).read()))
"#;

const SIDE: &str = r#"
import time
time.sleep(1.5)
serve(lambda path: (200, b"from the sidecar"), os.environ["SIDECAR_PORT"])
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_container_pod_is_ready_only_once_its_sidecar_is() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let front = python(tmp.path(), "front.py", FRONT);
    let side = python(tmp.path(), "side.py", SIDE);
    let port = free_port();
    let yaml = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: config-features, namespace: knative-serving}}\ndata:\n  multi-container-probing: enabled\n---\napiVersion: serving.knative.dev/v1\nkind: Service\nmetadata:\n  name: pair\n  namespace: default\nspec:\n  template:\n    spec:\n      containers:\n        - name: front\n          command: [python3, \"{}\"]\n          ports: [{{containerPort: {}}}]\n          env: [{{name: SIDECAR_PORT, value: \"{port}\"}}]\n        - name: side\n          command: [python3, \"{}\"]\n          env: [{{name: SIDECAR_PORT, value: \"{port}\"}}]\n          readinessProbe:\n            tcpSocket: {{port: {port}}}\n",
        front,
        free_port(),
        side
    );
    let dir = manifests(tmp.path(), &[("svc.yaml", &yaml)]);
    let gw = Gateway::start(&dir, &tmp.path().join("data"), &[]).await;
    let response = reqwest::Client::new()
        .get(format!("{}/", gw.ingress))
        .header("host", "pair.default.example.com")
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.expect("body"), "from the sidecar");
}

/// Serves, and a moment after starting holds 160 MiB.
const HOG: &str = r#"
import threading, time
hold = []
def grow():
    time.sleep(0.3)
    hold.append(b"x" * (160 << 20))
threading.Thread(target=grow, daemon=True).start()
serve(lambda path: (200, b"ok"))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_above_its_memory_limit_is_stopped_as_oom_killed() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let script = python(tmp.path(), "hog.py", HOG);
    let yaml = format!(
        "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata: {{name: hog, namespace: default}}\nspec:\n  template:\n    metadata:\n      annotations: {{autoscaling.knative.dev/min-scale: \"1\"}}\n    spec:\n      containers:\n        - command: [python3, \"{script}\"]\n          resources:\n            limits: {{memory: 64Mi}}\n"
    );
    let dir = manifests(tmp.path(), &[("svc.yaml", &yaml)]);
    let gw = Gateway::start(&dir, &tmp.path().join("data"), &[]).await;
    eventually("the revision to report the OOM kill", || async {
        gw.revisions().await.iter().any(|r| {
            r["reason"]
                .as_str()
                .is_some_and(|reason| reason.contains("OOMKilled") && reason.contains("64 MiB"))
        })
    })
    .await;
}

/// A real gRPC server (grpcio) whose health service says NOT_SERVING until `ready` exists.
const GRPC_SERVER: &str = r#"
import os, sys, threading, time
from concurrent import futures
import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
flag = sys.argv[1]
server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
servicer = health.HealthServicer()
health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
server.add_insecure_port("127.0.0.1:%s" % os.environ["PORT"])
server.start()
while not os.path.exists(flag):
    time.sleep(0.05)
servicer.set("", health_pb2.HealthCheckResponse.SERVING)
server.wait_for_termination()
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_readiness_probe_asks_the_health_service() {
    if !python_imports("grpc, grpc_health.v1.health") {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let script = tmp.path().join("grpc_server.py");
    std::fs::write(&script, GRPC_SERVER).expect("script");
    let flag = tmp.path().join("ready");
    let yaml = format!(
        "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata: {{name: rpc, namespace: default}}\nspec:\n  template:\n    metadata:\n      annotations: {{autoscaling.knative.dev/min-scale: \"1\"}}\n    spec:\n      containers:\n        - command: [python3, \"{}\", \"{}\"]\n          ports: [{{name: h2c, containerPort: {}}}]\n          readinessProbe:\n            grpc: {{port: 0}}\n            periodSeconds: 1\n",
        script.display(),
        flag.display(),
        free_port()
    );
    let dir = manifests(tmp.path(), &[("svc.yaml", &yaml)]);
    let gw = Gateway::start(&dir, &tmp.path().join("data"), &[]).await;
    // The server runs but says NOT_SERVING: the pod is not ready.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let revisions = gw.revisions().await;
    assert_eq!(revisions[0]["ready_pods"], 0, "{revisions:?}");
    std::fs::write(&flag, b"").expect("flag");
    eventually("the pod to be ready once SERVING", || async {
        gw.revisions().await[0]["ready_pods"] == 1
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_start_timeout_answers_504_before_timeout_seconds() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let yaml = "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata: {name: slow, namespace: default}\nspec:\n  template:\n    spec:\n      timeoutSeconds: 60\n      responseStartTimeoutSeconds: 1\n      containers:\n        - command: [tidegate, sample-service, --delay, 5s]\n";
    let dir = manifests(tmp.path(), &[("svc.yaml", yaml)]);
    let gw = Gateway::start(&dir, &tmp.path().join("data"), &[]).await;
    let client = reqwest::Client::new();
    // The first request also waits for the cold start, which the limit does not count.
    let started = tokio::time::Instant::now();
    let response = client
        .get(format!("{}/", gw.ingress))
        .header("host", "slow.default.example.com")
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 504);
    assert!(started.elapsed() < Duration::from_secs(30));
    let body = response.text().await.expect("body");
    assert!(body.contains("responseStartTimeoutSeconds"), "{body}");
}
