//! gRPC through tidegate to h2c pods: a real grpcio server as the pod, a real grpcio client.

use std::time::Duration;

use crate::harness::*;

/// A grpcio server with raw-bytes methods (no generated code): unary, server streaming,
/// bidirectional streaming, a slow call and one failing with a status of its own. Trailing
/// metadata names the revision and the connection (peer) the call came on.
const SERVER: &str = r#"
import os, time
from concurrent import futures
import grpc

def trailers(context):
    context.set_trailing_metadata((
        ("x-revision", os.environ.get("K_REVISION", "?")),
        ("x-peer", context.peer()),
    ))

def say(request, context):
    trailers(context)
    return b"hello " + request

def count(request, context):
    trailers(context)
    for i in range(int(request)):
        yield b"%d" % i

def echo(requests, context):
    trailers(context)
    for m in requests:
        yield m.upper()

def slow(request, context):
    time.sleep(float(request))
    return b"late"

def missing(request, context):
    context.abort(grpc.StatusCode.NOT_FOUND, "no such order")

handlers = {
    "Say": grpc.unary_unary_rpc_method_handler(say),
    "Count": grpc.unary_stream_rpc_method_handler(count),
    "Echo": grpc.stream_stream_rpc_method_handler(echo),
    "Slow": grpc.unary_unary_rpc_method_handler(slow),
    "Missing": grpc.unary_unary_rpc_method_handler(missing),
}
server = grpc.server(futures.ThreadPoolExecutor(max_workers=32))
server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("demo.Demo", handlers),))
server.add_insecure_port("127.0.0.1:%s" % os.environ["PORT"])
server.start()
server.wait_for_termination()
"#;

/// A grpcio client: every call goes to tidegate's ingress with `:authority` naming the service.
/// Prints one JSON object of what it saw.
const CLIENT: &str = r#"
import json, queue, sys, threading
import grpc

target, authority, stuck_authority = sys.argv[1], sys.argv[2], sys.argv[3]
channel = grpc.insecure_channel(target, options=[("grpc.default_authority", authority)])
out = {}

def failure(call):
    try:
        call()
        return {"code": "OK"}
    except grpc.RpcError as e:
        return {"code": e.code().name, "details": e.details() or ""}

# Unary, from zero pods: held while the pod starts.
reply, call = channel.unary_unary("/demo.Demo/Say").with_call(b"world", timeout=60)
out["unary"] = reply.decode()
out["unary_trailers"] = {k: v for k, v in call.trailing_metadata()}

# Server streaming.
out["stream"] = [m.decode() for m in channel.unary_stream("/demo.Demo/Count")(b"5", timeout=30)]

# Bidirectional, interleaved: each message is sent only after the answer to the one before
# arrived, which works only if both directions stream through the proxy.
outgoing = queue.Queue()
outgoing.put(b"a")
def requests():
    while True:
        m = outgoing.get()
        if m is None:
            return
        yield m
got = []
for m in channel.stream_stream("/demo.Demo/Echo")(requests(), timeout=30):
    got.append(m.decode())
    outgoing.put([b"b", b"c", None][len(got) - 1])
out["bidi"] = got

# A status of the pod's own passes through.
out["missing"] = failure(lambda: channel.unary_unary("/demo.Demo/Missing")(b"", timeout=30))

# Concurrent calls share a few connections to the pod.
peers, lock = set(), threading.Lock()
def one():
    _, c = channel.unary_unary("/demo.Demo/Say").with_call(b"x", timeout=30)
    with lock:
        peers.add(dict(c.trailing_metadata())["x-peer"])
threads = [threading.Thread(target=one) for _ in range(24)]
for t in threads: t.start()
for t in threads: t.join()
out["peers"] = len(peers)

# The client's deadline expires while the pod works.
out["client_deadline"] = failure(lambda: channel.unary_unary("/demo.Demo/Slow")(b"12", timeout=1))
# No client deadline: the revision's timeoutSeconds ends it, answered as DEADLINE_EXCEEDED.
out["revision_timeout"] = failure(lambda: channel.unary_unary("/demo.Demo/Slow")(b"12"))

# A revision that never gets a ready pod: UNAVAILABLE once its timeout passes.
stuck = grpc.insecure_channel(target, options=[("grpc.default_authority", stuck_authority)])
out["no_pod"] = failure(lambda: stuck.unary_unary("/demo.Demo/Say")(b"x"))
print(json.dumps(out))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_calls_of_every_kind_reach_an_h2c_pod_scaled_from_zero_with_statuses_and_deadlines() {
    if !python_imports("grpc") {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let server = tmp.path().join("server.py");
    std::fs::write(&server, SERVER).expect("server script");
    let client = tmp.path().join("client.py");
    std::fs::write(&client, CLIENT).expect("client script");
    let rpc = format!(
        "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata: {{name: rpc, namespace: default}}\nspec:\n  template:\n    metadata:\n      annotations: {{autoscaling.knative.dev/initial-scale: \"0\"}}\n    spec:\n      timeoutSeconds: 8\n      containers:\n        - command: [python3, \"{}\"]\n          ports: [{{name: h2c, containerPort: {}}}]\n",
        server.display(),
        free_port()
    );
    // Nothing ever listens on its port: never ready.
    let stuck = format!(
        "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata: {{name: stuck, namespace: default}}\nspec:\n  template:\n    metadata:\n      annotations: {{autoscaling.knative.dev/initial-scale: \"0\"}}\n    spec:\n      timeoutSeconds: 2\n      containers:\n        - command: [sleep, \"600\"]\n          ports: [{{name: h2c, containerPort: {}}}]\n",
        free_port()
    );
    let config = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: config-autoscaler, namespace: knative-serving}\ndata:\n  allow-zero-initial-scale: \"true\"\n";
    let dir = manifests(
        tmp.path(),
        &[
            ("rpc.yaml", &rpc),
            ("stuck.yaml", &stuck),
            ("config.yaml", config),
        ],
    );
    let gw = Gateway::start(&dir, &tmp.path().join("data"), &[]).await;
    let rpc_revision = |revisions: &[serde_json::Value]| {
        revisions
            .iter()
            .find(|r| r["revision"] == "rpc-00001")
            .cloned()
            .unwrap_or_default()
    };
    eventually("the rpc revision to be listed", || async {
        rpc_revision(&gw.revisions().await)["revision"] == "rpc-00001"
    })
    .await;
    assert_eq!(
        rpc_revision(&gw.revisions().await)["ready_pods"],
        0,
        "at zero before the first call"
    );

    let target = gw.ingress.trim_start_matches("http://").to_owned();
    let output = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::process::Command::new("python3")
            .arg(&client)
            .args([
                target.as_str(),
                "rpc.default.example.com",
                "stuck.default.example.com",
            ])
            .output(),
    )
    .await
    .expect("the client finishes")
    .expect("python3 runs");
    assert!(
        output.status.success(),
        "client failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let seen: serde_json::Value = serde_json::from_slice(&output.stdout).expect("client JSON");

    assert_eq!(seen["unary"], "hello world", "{seen}");
    assert_eq!(
        seen["unary_trailers"]["x-revision"], "rpc-00001",
        "trailing metadata passes through: {seen}"
    );
    assert_eq!(seen["stream"], serde_json::json!(["0", "1", "2", "3", "4"]));
    assert_eq!(seen["bidi"], serde_json::json!(["A", "B", "C"]));
    assert_eq!(seen["missing"]["code"], "NOT_FOUND", "{seen}");
    assert_eq!(seen["missing"]["details"], "no such order", "{seen}");
    let peers = seen["peers"].as_u64().expect("peers");
    assert!(
        (1..=4).contains(&peers),
        "24 concurrent calls are multiplexed over at most 4 connections, saw {peers}"
    );
    assert_eq!(
        seen["client_deadline"]["code"], "DEADLINE_EXCEEDED",
        "{seen}"
    );
    assert_eq!(
        seen["revision_timeout"]["code"], "DEADLINE_EXCEEDED",
        "{seen}"
    );
    assert!(
        seen["revision_timeout"]["details"]
            .as_str()
            .is_some_and(|d| d.contains("did not answer within 8s")),
        "tidegate's own answer reaches the client as grpc-message: {seen}"
    );
    assert_eq!(seen["no_pod"]["code"], "UNAVAILABLE", "{seen}");
    assert!(
        seen["no_pod"]["details"]
            .as_str()
            .is_some_and(|d| d.contains("stuck-00001")),
        "{seen}"
    );
    // The expired and cancelled calls gave their slots back.
    eventually("nothing in flight or queued", || async {
        let r = rpc_revision(&gw.revisions().await);
        r["in_flight"] == 0 && r["queued"] == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2c_only_service_gets_http1_requests_and_trigger_deliveries_over_http2() {
    let tmp = tempfile::tempdir().expect("tempdir");
    // sample-service --h2c-only fails any HTTP/1.1 connection: everything below must arrive
    // over HTTP/2. One pod at most, so `GET /events` sees every delivery.
    let trigger = format!(
        "apiVersion: tidegate.dev/v1alpha1\nkind: Trigger\nmetadata:\n  name: worker\n  namespace: default\nspec:\n  broker: default\n  service:\n    spec:\n      template:\n        metadata:\n          annotations:\n            autoscaling.knative.dev/max-scale: \"1\"\n        spec:\n          containerConcurrency: 4\n          containers:\n            - command: [tidegate, sample-service, --h2c-only]\n              ports: [{{name: h2c, containerPort: {}}}]\n",
        free_port()
    );
    let dir = manifests(tmp.path(), &[("b.yaml", BROKER), ("t.yaml", &trigger)]);
    let gw = Gateway::start(&dir, &tmp.path().join("data"), &[]).await;
    let client = reqwest::Client::new();
    let url = gw.broker_url("default", "default");
    for i in 0..5 {
        let response = publish(&client, &url, &format!("h2-{i}"), "dev.work", &[]).await;
        assert_eq!(response.status(), 202);
    }
    eventually("5 deliveries to the h2c service", || async {
        gw.trigger("worker").await["delivered"] == 5
    })
    .await;
    // An HTTP/1.1 client through the proxy: tidegate speaks HTTP/2 to the pod.
    let response = client
        .get(format!("{}/events", gw.ingress))
        .header("host", "worker.default.example.com")
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "x-sample-revision"), Some("worker-00001"));
    let events: Vec<serde_json::Value> = response.json().await.expect("events");
    let mut ids: Vec<&str> = events.iter().filter_map(|e| e["id"].as_str()).collect();
    ids.sort_unstable();
    assert_eq!(ids, ["h2-0", "h2-1", "h2-2", "h2-3", "h2-4"]);
    assert_eq!(gw.trigger("worker").await["dead_lettered"], 0);
}
