//! Knative Services on the local process runtime: scale from zero, precise concurrency,
//! scaling out and back to zero, traffic split, tags, pod failure, Triggers that create Services.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::harness::*;

/// A Knative Service running `tidegate sample-service` with `args`.
fn service(
    name: &str,
    annotations: &[(&str, &str)],
    cc: u32,
    args: &[&str],
    extra_spec: &str,
) -> String {
    service_running(
        name,
        annotations,
        cc,
        &["tidegate", "sample-service"],
        args,
        extra_spec,
    )
}

/// A Knative Service whose pods run `command` with `args`.
fn service_running(
    name: &str,
    annotations: &[(&str, &str)],
    cc: u32,
    command: &[&str],
    args: &[&str],
    extra_spec: &str,
) -> String {
    let list = |items: &[&str]| {
        items
            .iter()
            .map(|a| format!("\"{a}\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut yaml = format!(
        "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: default\nspec:\n  template:\n"
    );
    if !annotations.is_empty() {
        yaml.push_str("    metadata:\n      annotations:\n");
        for (k, v) in annotations {
            yaml.push_str(&format!("        {k}: \"{v}\"\n"));
        }
    }
    yaml.push_str(&format!(
        "    spec:\n      containerConcurrency: {cc}\n      timeoutSeconds: 30\n      containers:\n        - command: [{}]\n          args: [{}]\n",
        list(command),
        list(args)
    ));
    yaml.push_str(extra_spec);
    yaml
}

/// A Knative Service whose pods run the Python program `source` (written under `dir`).
fn python_service(
    dir: &std::path::Path,
    name: &str,
    source: &str,
    annotations: &[(&str, &str)],
) -> String {
    let script = dir.join(format!("{name}.py"));
    std::fs::write(&script, source).expect("write script");
    let script = script.display().to_string();
    service_running(name, annotations, 0, &["python3", &script], &[], "")
}

const PRECISE: (&str, &str) = ("autoscaling.knative.dev/class", "precise.tidegate.dev");
const FAST_DOWN: (&str, &str) = ("autoscaling.knative.dev/scale-down-delay", "1s");

async fn get(client: &reqwest::Client, gw: &Gateway, host: &str) -> reqwest::Response {
    client
        .get(format!("{}/hello", gw.ingress))
        .header("host", host)
        .send()
        .await
        .expect("request through the proxy")
}

async fn revisions(gw: &Gateway) -> Vec<serde_json::Value> {
    gw.revisions().await
}

async fn wait_revision(
    gw: &Gateway,
    what: &str,
    check: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    wait_revision_for(gw, what, Duration::from_secs(60), check).await
}

async fn wait_revision_for(
    gw: &Gateway,
    what: &str,
    limit: Duration,
    check: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(r) = revisions(gw).await.into_iter().find(|r| check(r)) {
            return r;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}: {:?}",
            revisions(gw).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cold_burst_all_succeed_and_concurrency_one_is_never_exceeded() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let yaml = service(
        "hello",
        &[
            PRECISE,
            FAST_DOWN,
            ("autoscaling.knative.dev/initial-scale", "0"),
        ],
        1,
        &["--delay", "100ms"],
        "",
    );
    // Knative accepts initial-scale 0 only with this flag.
    let config = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: config-autoscaler, namespace: knative-serving}\ndata:\n  allow-zero-initial-scale: \"true\"\n";
    let dir = manifests(tmp.path(), &[("svc.yaml", &yaml), ("config.yaml", config)]);
    let gw = Gateway::start(&dir, &tmp.path().join("data"), &[]).await;
    // At zero before any request.
    let r = wait_revision(&gw, "revision listed", |r| r["revision"] == "hello-00001").await;
    assert_eq!(r["ready_pods"], 0, "{r}");
    let client = reqwest::Client::new();
    let max_inflight = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let client = client.clone();
            let url = format!("{}/hello", gw.ingress);
            let max_inflight = Arc::clone(&max_inflight);
            tokio::spawn(async move {
                let r = client
                    .get(url)
                    .header("host", "hello.default.example.com")
                    .send()
                    .await
                    .expect("send");
                let inflight: u64 = header(&r, "x-sample-inflight")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(u64::MAX);
                max_inflight.fetch_max(inflight, Ordering::SeqCst);
                (
                    r.status().as_u16(),
                    r.headers().get("x-sample-revision").cloned(),
                )
            })
        })
        .collect();
    let mut statuses = HashMap::new();
    for t in tasks {
        let (status, revision) = t.await.expect("join");
        *statuses.entry(status).or_insert(0) += 1;
        assert_eq!(
            revision.as_ref().and_then(|v| v.to_str().ok()),
            Some("hello-00001")
        );
    }
    assert_eq!(statuses.get(&200), Some(&50), "{statuses:?}");
    assert_eq!(
        max_inflight.load(Ordering::SeqCst),
        1,
        "containerConcurrency 1 exceeded"
    );
    // Demand of 50 at cc=1 scaled out beyond one pod, then back to zero after the delay.
    let metrics = gw.metrics().await;
    assert!(metrics.contains("tidegate_revision_in_flight"), "{metrics}");
    wait_revision(&gw, "scale to zero", |r| {
        r["ready_pods"] == 0 && r["desired_pods"] == 0 && r["in_flight"] == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scales_out_to_the_demand() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let yaml = service("wide", &[PRECISE, FAST_DOWN], 2, &["--delay", "1s"], "");
    let dir = manifests(tmp.path(), &[("svc.yaml", &yaml)]);
    let gw = Gateway::start(&dir, &tmp.path().join("data"), &[]).await;
    let client = reqwest::Client::new();
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let client = client.clone();
            let url = format!("{}/x", gw.ingress);
            tokio::spawn(async move {
                client
                    .get(url)
                    .header("host", "wide.default.example.com")
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
            })
        })
        .collect();
    // 8 requests at cc=2 → 4 pods desired; the revision reaches them while the requests run.
    let r = wait_revision(&gw, "4 desired pods", |r| r["desired_pods"] == 4).await;
    assert!(
        r["in_flight"].as_u64().unwrap_or(0) + r["queued"].as_u64().unwrap_or(0) <= 8,
        "{r}"
    );
    for t in tasks {
        assert_eq!(t.await.expect("join").expect("request"), 200);
    }
    wait_revision(&gw, "scale to zero", |r| {
        r["ready_pods"] == 0 && r["desired_pods"] == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_split_and_tags() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let v1 = service("split", &[PRECISE], 0, &[], "");
    let dir = manifests(tmp.path(), &[("svc.yaml", &v1)]);
    let gw = Gateway::start(&dir, &tmp.path().join("data"), &[]).await;
    let client = reqwest::Client::new();
    let r = get(&client, &gw, "split.default.example.com").await;
    assert_eq!(r.status(), 200);
    // A new template makes revision 2; 80/20 between them, a tag on each.
    let traffic = "  traffic:\n    - revisionName: split-00001\n      percent: 80\n      tag: old\n    - latestRevision: true\n      percent: 20\n      tag: canary\n";
    let v2 = service(
        "split",
        &[PRECISE, ("tidegate.dev/reserved-instances", "0")],
        0,
        &["--status", "200"],
        traffic,
    );
    std::fs::write(dir.join("svc.yaml"), v2).expect("write");
    wait_revision(&gw, "revision 2 ready", |r| {
        r["revision"] == "split-00002" && r["ready"] == true
    })
    .await;
    let mut counts: HashMap<String, u32> = HashMap::new();
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let client = client.clone();
            let url = format!("{}/", gw.ingress);
            tokio::spawn(async move {
                let mut seen = Vec::new();
                for _ in 0..250 {
                    let r = client
                        .get(&url)
                        .header("host", "split.default.example.com")
                        .send()
                        .await
                        .expect("send");
                    assert_eq!(r.status(), 200);
                    seen.push(header(&r, "x-sample-revision").unwrap_or("").to_owned());
                }
                seen
            })
        })
        .collect();
    for t in tasks {
        for rev in t.await.expect("join") {
            *counts.entry(rev).or_insert(0) += 1;
        }
    }
    let old = f64::from(counts.get("split-00001").copied().unwrap_or(0)) / 2000.0;
    assert!((0.75..=0.85).contains(&old), "80/20 split gave {counts:?}");
    assert_eq!(counts.values().sum::<u32>(), 2000);
    for (host, revision) in [
        ("canary-split.default.example.com", "split-00002"),
        ("old-split.default.example.com", "split-00001"),
    ] {
        for _ in 0..20 {
            let r = get(&client, &gw, host).await;
            assert_eq!(header(&r, "x-sample-revision"), Some(revision));
        }
    }
    // Unknown hosts are not forwarded anywhere.
    let r = get(&client, &gw, "nope.default.example.com").await;
    assert_eq!(r.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_killed_under_load_is_replaced() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let yaml = service(
        "sturdy",
        &[PRECISE, ("autoscaling.knative.dev/min-scale", "1")],
        4,
        &["--delay", "20ms"],
        "",
    );
    let dir = manifests(tmp.path(), &[("svc.yaml", &yaml)]);
    let gw = Gateway::start(&dir, &tmp.path().join("data"), &[]).await;
    let client = reqwest::Client::new();
    let r = get(&client, &gw, "sturdy.default.example.com").await;
    assert_eq!(r.status(), 200);
    let instance = header(&r, "x-sample-instance").unwrap_or("").to_owned();
    let pid = instance.split('-').next().unwrap_or("").to_owned();
    let status = std::process::Command::new("kill")
        .args(["-9", &pid])
        .status()
        .expect("kill");
    assert!(status.success());
    // Requests keep coming; after the replacement is ready they all succeed again.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut ok_in_a_row = 0;
    while ok_in_a_row < 20 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "revision never recovered"
        );
        let r = get(&client, &gw, "sturdy.default.example.com").await;
        if r.status() == 200 {
            ok_in_a_row += 1;
            let now = header(&r, "x-sample-instance").unwrap_or("").to_owned();
            assert_ne!(now, instance, "the killed pod answered");
        } else {
            ok_in_a_row = 0;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_that_does_not_exist_is_reported_and_requests_end_with_503() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let yaml = "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata:\n  name: broken\n  namespace: default\nspec:\n  template:\n    spec:\n      timeoutSeconds: 2\n      containers:\n        - command: [/nonexistent/program]\n";
    let dir = manifests(tmp.path(), &[("svc.yaml", yaml)]);
    let gw = Gateway::start(&dir, &tmp.path().join("data"), &[]).await;
    let r = wait_revision(&gw, "a reported problem", |r| {
        r["reason"].as_str().is_some_and(|p| p.contains("spawn"))
    })
    .await;
    assert_eq!(r["ready"], false);
    let client = reqwest::Client::new();
    let started = tokio::time::Instant::now();
    let r = get(&client, &gw, "broken.default.example.com").await;
    assert_eq!(r.status(), 503);
    let metrics = gw.metrics().await;
    assert!(
        metrics.contains(
            "tidegate_proxy_requests_total{namespace=\"default\",service=\"broken\",revision=\"broken-00001\",outcome=\"no_slot\"} 1"
        ),
        "{metrics}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "answered only after {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trigger_creates_its_service_and_deliveries_count_as_its_work() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let trigger = "apiVersion: tidegate.dev/v1alpha1\nkind: Trigger\nmetadata:\n  name: worker\n  namespace: default\nspec:\n  broker: default\n  service:\n    spec:\n      template:\n        metadata:\n          annotations:\n            autoscaling.knative.dev/scale-down-delay: \"1s\"\n        spec:\n          containerConcurrency: 2\n          containers:\n            - command: [tidegate, sample-service, --delay, 50ms]\n";
    let dir = manifests(tmp.path(), &[("b.yaml", BROKER), ("t.yaml", trigger)]);
    let gw = Gateway::start(&dir, &tmp.path().join("data"), &[]).await;
    let r = wait_revision(&gw, "the trigger's revision", |r| {
        r["revision"] == "worker-00001"
    })
    .await;
    assert_eq!(r["class"], "precise.tidegate.dev");
    let client = reqwest::Client::new();
    let url = gw.broker_url("default", "default");
    for i in 0..20 {
        assert_eq!(
            publish(&client, &url, &format!("w-{i}"), "dev.work", &[])
                .await
                .status(),
            202
        );
    }
    eventually("20 deliveries to the created service", || async {
        gw.trigger("worker").await["delivered"] == 20
    })
    .await;
    // Removing the Trigger removes its Service.
    std::fs::remove_file(dir.join("t.yaml")).expect("rm");
    eventually("the service to go with its trigger", || async {
        revisions(&gw).await.is_empty()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_die_with_a_killed_gateway() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let yaml = service(
        "orphan",
        &[PRECISE, ("autoscaling.knative.dev/min-scale", "1")],
        0,
        &[],
        "",
    );
    let dir = manifests(tmp.path(), &[("svc.yaml", &yaml)]);
    let mut gw = Gateway::start(&dir, &tmp.path().join("data"), &[]).await;
    let client = reqwest::Client::new();
    let r = get(&client, &gw, "orphan.default.example.com").await;
    let instance = header(&r, "x-sample-instance").unwrap_or("").to_owned();
    let pid = instance.split('-').next().unwrap_or("").to_owned();
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
    gw.kill9();
    eventually("the pod to die with the gateway", || async {
        // Gone, or a zombie waiting for its reaper.
        std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| s.contains(") Z "))
    })
    .await;
}

/// A pod that switches any request to an echo protocol and echoes bytes back.
const UPGRADE_ECHO: &str = r#"
import os, socket, threading
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", int(os.environ["PORT"]))); srv.listen(64)
def serve(c):
    buf = b""
    while b"\r\n\r\n" not in buf:
        d = c.recv(4096)
        if not d: return
        buf += d
    if b"upgrade: echo" not in buf.lower():
        c.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"); c.close(); return
    c.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n")
    while True:
        d = c.recv(4096)
        if not d: break
        c.sendall(d)
    c.close()
while True:
    c, _ = srv.accept(); threading.Thread(target=serve, args=(c,), daemon=True).start()
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrades_are_tunnelled_and_slow_pods_time_out() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let tmp = tempfile::tempdir().expect("tempdir");
    let echo = python_service(tmp.path(), "echo", UPGRADE_ECHO, &[]);
    let slow = service("slow", &[PRECISE], 0, &["--delay", "5s"], "")
        .replace("timeoutSeconds: 30", "timeoutSeconds: 1");
    let dir = manifests(tmp.path(), &[("echo.yaml", &echo), ("slow.yaml", &slow)]);
    let gw = Gateway::start(&dir, &tmp.path().join("data"), &[]).await;

    let addr = gw.ingress.trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    stream
        .write_all(b"GET /chat HTTP/1.1\r\nHost: echo.default.example.com\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
        .await
        .expect("write");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(WAIT, stream.read(&mut byte))
            .await
            .expect("response head in time")
            .expect("read");
        assert_eq!(
            n,
            1,
            "connection closed early: {}",
            String::from_utf8_lossy(&head)
        );
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: echo"), "{head}");
    stream
        .write_all(b"ping through the tunnel")
        .await
        .expect("write");
    let mut echoed = [0u8; 23];
    tokio::time::timeout(WAIT, stream.read_exact(&mut echoed))
        .await
        .expect("echo in time")
        .expect("read");
    assert_eq!(&echoed, b"ping through the tunnel");
    let during = wait_revision(&gw, "tunnel counted in flight", |r| {
        r["service"] == "echo" && r["in_flight"] == 1
    })
    .await;
    assert_eq!(during["queued"], 0);
    drop(stream);
    wait_revision(&gw, "tunnel released", |r| {
        r["service"] == "echo" && r["in_flight"] == 0
    })
    .await;

    // A pod that answers after timeoutSeconds: 504 (once it is ready, so the wait is the pod's).
    wait_revision(&gw, "slow pod ready", |r| {
        r["service"] == "slow" && r["ready_pods"] == 1
    })
    .await;
    let client = reqwest::Client::new();
    let r = get(&client, &gw, "slow.default.example.com").await;
    assert_eq!(r.status(), 504);
}

/// A pod that answers with the request head it received, as JSON lines of `name: value`.
const ECHO_HEAD: &str = r#"
import os
from http.server import BaseHTTPRequestHandler, HTTPServer
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        body = "".join(f"{k.lower()}: {v}\n" for k, v in self.headers.items()).encode()
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.send_header("connection", "keep-alive, x-hop")
        self.send_header("x-hop", "must not reach the client")
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
HTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_headers_are_set_hop_by_hop_dropped_and_h2c_accepted() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let annotations = [("tidegate.dev/reserved-instances", "1"), PRECISE, FAST_DOWN];
    let yaml = python_service(tmp.path(), "heads", ECHO_HEAD, &annotations);
    let dir = manifests(tmp.path(), &[("svc.yaml", &yaml)]);
    let gw = Gateway::start(&dir, &tmp.path().join("data"), &[]).await;
    let client = reqwest::Client::new();
    let r = client
        .get(format!("{}/path?q=1", gw.ingress))
        .header("host", "heads.default.example.com")
        .header("x-forwarded-for", "203.0.113.9")
        .header("connection", "keep-alive, x-secret")
        .header("x-secret", "hop-by-hop")
        .header("proxy-authorization", "Basic Zm9vOmJhcg==")
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 200);
    assert!(
        r.headers().get("x-hop").is_none(),
        "a header named in Connection was forwarded"
    );
    let seen = r.text().await.expect("body");
    assert!(seen.contains("host: heads.default.example.com"), "{seen}");
    assert!(
        seen.contains("x-forwarded-for: 203.0.113.9, 127.0.0.1"),
        "{seen}"
    );
    assert!(
        seen.contains("x-forwarded-host: heads.default.example.com"),
        "{seen}"
    );
    assert!(seen.contains("x-forwarded-proto: http"), "{seen}");
    assert!(!seen.contains("x-secret"), "{seen}");
    assert!(!seen.contains("proxy-authorization"), "{seen}");

    // HTTP/2 with prior knowledge (h2c) reaches the same pod.
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .expect("client");
    let r = h2
        .get(format!("{}/", gw.ingress))
        .header("host", "heads.default.example.com")
        .send()
        .await
        .expect("h2c request");
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status(), 200);

    // Idle: the autoscaler wants zero, the reserved instance keeps one pod warm.
    wait_revision(&gw, "desired 0 with a reserved pod", |r| {
        r["service"] == "heads" && r["desired_pods"] == 0 && r["ready_pods"] == 1
    })
    .await;
}

/// A schedule window that is open raises the floor before any request: its `minScale` pods
/// run with no traffic at all, and the Service's own bounds (min-scale 0) apply outside it.
#[tokio::test(flavor = "multi_thread")]
async fn an_open_schedule_window_keeps_its_floor_warm_without_traffic() {
    let tmp = tempfile::tempdir().expect("tempdir");
    // Opens every minute, closes only at midnight on 29 February: open now.
    let schedule =
        r#"[{start: "* * * * *", end: "0 0 29 2 *", timezone: Europe/Berlin, minScale: 2}]"#;
    let yaml = service(
        "warm",
        &[
            PRECISE,
            ("autoscaling.knative.dev/min-scale", "0"),
            ("tidegate.dev/schedule", schedule),
        ],
        1,
        &[],
        "",
    )
    .replace("\"[{", "'[{")
    .replace("}]\"", "}]'");
    let dir = manifests(tmp.path(), &[("svc.yaml", &yaml)]);
    let gw = Gateway::start(&dir, &tmp.path().join("data"), &[]).await;
    wait_revision(&gw, "two warm pods without a request", |r| {
        r["service"] == "warm" && r["ready_pods"] == 2 && r["desired_pods"] == 2
    })
    .await;
}

/// The HPA class on the local runtime: pods that burn cpu per request scale the revision out
/// (to max-scale), the samples are shown, and once the load stops it goes back to zero
/// (min-scale "0") after its window; the next request brings it back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_hpa_revision_scales_out_on_cpu_and_back_to_zero() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let yaml = service(
        "burner",
        &[
            (
                "autoscaling.knative.dev/class",
                "hpa.autoscaling.knative.dev",
            ),
            ("autoscaling.knative.dev/metric", "cpu"),
            ("autoscaling.knative.dev/target", "50"),
            ("autoscaling.knative.dev/min-scale", "0"),
            ("autoscaling.knative.dev/max-scale", "3"),
            ("autoscaling.knative.dev/window", "6s"),
        ],
        0,
        &["--burn-cpu", "50ms"],
        "          resources: {requests: {cpu: 100m}}\n",
    );
    let dir = manifests(tmp.path(), &[("svc.yaml", &yaml)]);
    let gw = Gateway::start(&dir, &tmp.path().join("data"), &[]).await;
    let host = "burner.default.example.com";
    // Initial scale 1, idle: down to zero after the 6 s window.
    wait_revision(&gw, "the idle revision at zero", |r| {
        r["service"] == "burner" && r["ready"] == true && r["desired_pods"] == 0
    })
    .await;

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let client = reqwest::Client::new();
    let mut load = Vec::new();
    for _ in 0..4 {
        let (client, stop, url) = (client.clone(), Arc::clone(&stop), gw.ingress.clone());
        load.push(tokio::spawn(async move {
            let mut failures = 0u32;
            // Bounded: at most 90 s of requests.
            let end = tokio::time::Instant::now() + Duration::from_secs(90);
            while !stop.load(Ordering::Relaxed) && tokio::time::Instant::now() < end {
                let ok = client
                    .get(format!("{url}/burn"))
                    .header("host", host)
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                failures += u32::from(!ok);
            }
            failures
        }));
    }
    let busy = wait_revision_for(
        &gw,
        "three pods for the cpu",
        Duration::from_secs(80),
        |r| r["service"] == "burner" && r["ready_pods"] == 3,
    )
    .await;
    let sampled = wait_revision(&gw, "cpu samples of the pods", |r| {
        r["service"] == "burner"
            && r["pods"].as_array().is_some_and(|pods| {
                pods.iter()
                    .any(|p| p["cpu_millicores"].as_f64() > Some(0.0))
            })
    })
    .await;
    let pod = sampled["pods"]
        .as_array()
        .and_then(|pods| {
            pods.iter()
                .find(|p| p["cpu_millicores"].as_f64() > Some(0.0))
        })
        .cloned()
        .unwrap_or_default();
    assert!(pod["memory_bytes"].as_u64() > Some(0), "{pod}");
    // Utilization is cpu over the 100m request.
    let (cpu, utilization) = (
        pod["cpu_millicores"].as_f64().unwrap_or(0.0),
        pod["utilization_percent"].as_f64().unwrap_or(0.0),
    );
    assert!((utilization - cpu).abs() < 1e-6 * cpu.max(1.0), "{pod}");
    let metrics = gw.metrics().await;
    assert!(metrics.contains("pod_cpu_millicores{"), "{metrics}");
    assert!(metrics.contains("pod_utilization_percent{"), "{metrics}");
    assert_eq!(busy["desired_pods"], 3, "max-scale bounds it: {busy}");

    stop.store(true, Ordering::Relaxed);
    for task in load {
        assert_eq!(task.await.expect("load task"), 0, "every request succeeded");
    }
    wait_revision_for(
        &gw,
        "back to zero without load",
        Duration::from_secs(60),
        |r| r["service"] == "burner" && r["desired_pods"] == 0 && r["ready_pods"] == 0,
    )
    .await;
    let response = get(&client, &gw, host).await;
    assert_eq!(
        response.status(),
        200,
        "the first request after zero waits for a pod"
    );
}

/// A schedule window that opens while the gateway runs raises the ready pods before any
/// request arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_window_opening_during_the_test_warms_pods_before_any_request() {
    let tmp = tempfile::tempdir().expect("tempdir");
    // The next whole minute, at least 15 s away, in UTC; the window lasts ten minutes.
    let now = jiff::Timestamp::now();
    let second = now.as_second().rem_euclid(60);
    let wait = if 60 - second >= 15 {
        60 - second
    } else {
        120 - second
    };
    let opens = jiff::Timestamp::from_second(now.as_second() + wait)
        .expect("time")
        .in_tz("UTC")
        .expect("utc");
    let closes = opens
        .checked_add(jiff::SignedDuration::from_secs(600))
        .expect("time");
    let cron = |t: &jiff::Zoned| format!("{} {} * * *", t.minute(), t.hour());
    let schedule = format!(
        "[{{start: \"{}\", end: \"{}\", timezone: UTC, minScale: 2}}]",
        cron(&opens),
        cron(&closes)
    );
    let yaml = service(
        "morning",
        &[
            PRECISE,
            ("autoscaling.knative.dev/min-scale", "0"),
            ("autoscaling.knative.dev/initial-scale", "0"),
            ("tidegate.dev/schedule", &schedule),
        ],
        1,
        &[],
        "",
    )
    .replace("\"[{", "'[{")
    .replace("}]\"", "}]'");
    let config = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: config-autoscaler, namespace: knative-serving}\ndata:\n  allow-zero-initial-scale: \"true\"\n";
    let dir = manifests(tmp.path(), &[("svc.yaml", &yaml), ("config.yaml", config)]);
    let gw = Gateway::start(&dir, &tmp.path().join("data"), &[]).await;
    let before = wait_revision(&gw, "the revision, closed window", |r| {
        r["service"] == "morning"
    })
    .await;
    assert_eq!(before["desired_pods"], 0, "{before}");
    assert!(
        jiff::Timestamp::now() < opens.timestamp(),
        "the window opened before the first look; the test is too slow here"
    );
    let warm = wait_revision_for(
        &gw,
        "two pods once the window opens",
        Duration::from_secs(90),
        |r| r["service"] == "morning" && r["ready_pods"] == 2,
    )
    .await;
    let ready_at = jiff::Timestamp::now();
    assert!(
        ready_at >= opens.timestamp(),
        "not before the window: {warm}"
    );
    assert_eq!(warm["in_flight"], 0);
    assert_eq!(warm["queued"], 0);
}

/// A reserved instance runs while the revision is at zero, takes the first request at once,
/// and is gone once a regular pod is ready; the latency of that first request is printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_request_after_idle_goes_to_the_reserved_instance_which_then_hands_over() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let yaml = service(
        "reserve",
        &[
            PRECISE,
            ("autoscaling.knative.dev/initial-scale", "0"),
            ("knative.aliyun.com/reserve-instance", "enable"),
            ("tidegate.dev/reserved-instance-concurrency", "4"),
        ],
        1,
        &["--delay", "1500ms"],
        "",
    )
    .replace(
        "knative.aliyun.com/reserve-instance: \"enable\"",
        "knative.aliyun.com/reserve-instance: \"enable\"\n        tidegate.dev/reserved-instance-resources: '{requests: {cpu: 50m}, limits: {memory: 256Mi}}'",
    );
    let config = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: config-autoscaler, namespace: knative-serving}\ndata:\n  allow-zero-initial-scale: \"true\"\n";
    let dir = manifests(tmp.path(), &[("svc.yaml", &yaml), ("config.yaml", config)]);
    let gw = Gateway::start(&dir, &tmp.path().join("data"), &[]).await;
    let idle = wait_revision(&gw, "the reserved instance at zero", |r| {
        r["service"] == "reserve" && r["reserved_pods"] == 1
    })
    .await;
    assert_eq!(idle["ready_pods"], 0, "it is not a regular pod: {idle}");
    assert_eq!(
        idle["desired_pods"], 0,
        "nor counted in the desired scale: {idle}"
    );
    assert_eq!(idle["reserved_resources"]["requests.cpu"], "50m", "{idle}");

    let client = reqwest::Client::new();
    let host = "reserve.default.example.com";
    let started = tokio::time::Instant::now();
    let first = {
        let (client, gw_ingress) = (client.clone(), gw.ingress.clone());
        tokio::spawn(async move {
            let response = client
                .get(format!("{gw_ingress}/first"))
                .header("host", host)
                .send()
                .await
                .expect("first request");
            (response.status(), started.elapsed())
        })
    };
    // The request runs on the reserved instance while a regular pod starts for it.
    let holding = wait_revision(
        &gw,
        "the reserved instance holding the first request",
        |r| {
            r["service"] == "reserve"
                && r["pods"].as_array().is_some_and(|pods| {
                    pods.iter()
                        .any(|p| p["reserved"] == true && p["in_flight"] == 1)
                })
        },
    )
    .await;
    assert!(holding["desired_pods"].as_u64() >= Some(1), "{holding}");
    let handed = wait_revision(&gw, "a regular pod taking over", |r| {
        r["service"] == "reserve" && r["ready_pods"].as_u64() >= Some(1) && r["reserved_pods"] == 0
    })
    .await;
    assert!(
        handed["pods"].as_array().is_some_and(|pods| pods
            .iter()
            .all(|p| p["reserved"] == false || p["accepting"] == false)),
        "{handed}"
    );
    // A second request goes to the regular pod.
    let second = get(&client, &gw, host).await;
    assert_eq!(second.status(), 200);
    let (status, latency) = first.await.expect("first request task");
    assert_eq!(status, 200);
    println!(
        "first request after idle, served by the reserved instance: {} ms (1500 ms of it is the pod's own delay)",
        latency.as_millis()
    );
    // The reserved instance finished its request and is gone.
    wait_revision(&gw, "the reserved instance gone", |r| {
        r["service"] == "reserve"
            && r["pods"]
                .as_array()
                .is_some_and(|pods| pods.iter().all(|p| p["reserved"] == false))
    })
    .await;
}

/// The coffee demo of README, on the real `deploy/local/`: outside its schedule window a
/// reserved instance answers the first request and hands over to a regular pod; inside it
/// two regular pods are warm.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_coffee_demo_runs_as_the_readme_says() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let local = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/local");
    let text = std::fs::read_to_string(local.join("service-coffee.yaml")).expect("coffee");
    let schedule: String = text
        .lines()
        .skip_while(|l| !l.contains("tidegate.dev/schedule"))
        .skip(1)
        .take_while(|l| l.trim_start().starts_with('-'))
        .map(|l| format!("{}\n", l.trim()))
        .collect();
    let windows = triggers::schedule::parse(&schedule).expect("the demo's schedule parses");
    let gw = Gateway::start(&local, &tmp.path().join("data"), &[]).await;
    let host = "coffee.default.example.com";
    let client = reqwest::Client::new();
    if windows.iter().any(|w| w.is_open(jiff::Timestamp::now())) {
        wait_revision(&gw, "the morning rush's two warm pods", |r| {
            r["service"] == "coffee" && r["ready_pods"] == 2
        })
        .await;
        assert_eq!(get(&client, &gw, host).await.status(), 200);
        return;
    }
    wait_revision(&gw, "coffee's reserved instance", |r| {
        r["service"] == "coffee" && r["reserved_pods"] == 1 && r["ready_pods"] == 0
    })
    .await;
    let started = tokio::time::Instant::now();
    let response = get(&client, &gw, host).await;
    assert_eq!(response.status(), 200);
    println!(
        "coffee: first request after idle answered in {} ms (200 ms of it brewing)",
        started.elapsed().as_millis()
    );
    wait_revision(&gw, "a regular coffee pod, the reserved one gone", |r| {
        r["service"] == "coffee"
            && r["ready_pods"] == 1
            && r["pods"]
                .as_array()
                .is_some_and(|pods| pods.iter().all(|p| p["reserved"] == false))
    })
    .await;
    let status = tokio::process::Command::new(bin())
        .args(["status", "--admin", &gw.admin])
        .output()
        .await
        .expect("tidegate status");
    let table = String::from_utf8_lossy(&status.stdout);
    assert!(table.contains("RESERVED"), "{table}");
    assert!(table.lines().any(|l| l.contains("coffee-00001")), "{table}");
}
