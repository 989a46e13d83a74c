//! What a hostile or careless client cannot do: hold connections forever, starve the admin
//! port of descriptors, or get its own mistakes blamed on a pod; and HTTP framing by the RFC.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::harness::*;

/// A Knative Service named `name` running `tidegate sample-service`, one pod kept warm.
fn sample(name: &str) -> String {
    format!(
        "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: default\nspec:\n  template:\n    metadata:\n      annotations:\n        tidegate.dev/reserved-instances: \"1\"\n    spec:\n      containerConcurrency: 0\n      timeoutSeconds: 30\n      containers:\n        - command: [\"tidegate\", \"sample-service\"]\n"
    )
}

fn addr(url: &str) -> String {
    url.trim_start_matches("http://").to_owned()
}

/// Reads until the peer closes (or `limit` passes); returns what arrived and when it closed.
async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> (String, Option<Duration>) {
    let started = Instant::now();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = limit.saturating_sub(started.elapsed());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Err(_) => return (String::from_utf8_lossy(&seen).into_owned(), None),
            Ok(Ok(0)) | Ok(Err(_)) => {
                return (
                    String::from_utf8_lossy(&seen).into_owned(),
                    Some(started.elapsed()),
                );
            }
            Ok(Ok(n)) => seen.extend_from_slice(&buf[..n]),
        }
    }
}

/// Sends `raw` on a new connection and returns the first response's status line and the rest.
async fn raw_exchange(ingress: &str, raw: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr(ingress)).await.expect("connect");
    stream.write_all(raw).await.expect("write");
    let (seen, _) = read_until_closed(&mut stream, Duration::from_secs(10)).await;
    seen
}

fn status_of(response: &str) -> u16 {
    response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_idle_and_stalled_clients_are_closed_on_time() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = manifests(tmp.path(), &[("broker.yaml", BROKER)]);
    let gw = Gateway::start(
        &dir,
        &tmp.path().join("data"),
        &[
            "--header-read-timeout",
            "2s",
            "--idle-timeout",
            "1s",
            "--body-read-timeout",
            "1s",
            "--body-timeout",
            "3s",
        ],
    )
    .await;
    let ingress = addr(&gw.ingress);

    // Slowloris: headers at one byte every 200 ms never complete; closed after ~2 s.
    let slowloris = {
        let ingress = ingress.clone();
        tokio::spawn(async move {
            let mut stream = TcpStream::connect(&ingress).await.expect("connect");
            let head = b"POST /default/default HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
            let started = Instant::now();
            for byte in head {
                if stream.write_all(&[*byte]).await.is_err() {
                    return Some(started.elapsed());
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            let (_, closed) = read_until_closed(&mut stream, Duration::from_secs(10)).await;
            closed.map(|_| started.elapsed())
        })
    };

    // Idle keep-alive: one request answered, then nothing; closed after the idle timeout.
    let mut idle = TcpStream::connect(&ingress).await.expect("connect");
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let (answer, closed) = read_until_closed(&mut idle, Duration::from_secs(10)).await;
    assert_eq!(status_of(&answer), 404, "{answer}");
    let closed = closed.expect("an idle keep-alive connection stayed open for 10 s");
    assert!(
        closed >= Duration::from_millis(800),
        "closed too early: {closed:?}"
    );

    // A connection that never sends anything.
    let mut silent = TcpStream::connect(&ingress).await.expect("connect");
    let (_, closed) = read_until_closed(&mut silent, Duration::from_secs(10)).await;
    assert!(closed.is_some(), "a silent connection stayed open for 10 s");

    // A body that stops half-way: 408 and the connection closed.
    let mut stalled = TcpStream::connect(&ingress).await.expect("connect");
    stalled
        .write_all(b"POST /default/default HTTP/1.1\r\nHost: x\r\nce-specversion: 1.0\r\nce-id: 1\r\nce-source: s\r\nce-type: t\r\nContent-Length: 100\r\n\r\n0123456789")
        .await
        .expect("write");
    let (answer, closed) = read_until_closed(&mut stalled, Duration::from_secs(10)).await;
    assert_eq!(status_of(&answer), 408, "{answer}");
    assert!(answer.contains("\"field\":\"body\""), "{answer}");
    assert!(closed.is_some(), "a stalled body kept its connection open");

    // A body that trickles (a byte every 500 ms, never a pause of 1 s) still hits the total limit.
    let mut trickle = TcpStream::connect(&ingress).await.expect("connect");
    trickle
        .write_all(b"POST /default/default HTTP/1.1\r\nHost: x\r\nce-specversion: 1.0\r\nce-id: 1\r\nce-source: s\r\nce-type: t\r\nContent-Length: 100\r\n\r\n")
        .await
        .expect("write");
    let started = Instant::now();
    let mut answer = String::new();
    let mut buf = [0u8; 1024];
    for _ in 0..40 {
        let _ = trickle.write_all(b"x").await;
        if let Ok(Ok(n)) =
            tokio::time::timeout(Duration::from_millis(500), trickle.read(&mut buf)).await
        {
            answer.push_str(&String::from_utf8_lossy(&buf[..n]));
            if n == 0 || answer.contains("\r\n\r\n") {
                break;
            }
        }
    }
    assert_eq!(status_of(&answer), 408, "{answer}");
    assert!(
        started.elapsed() >= Duration::from_millis(2500),
        "total body limit hit after {:?}",
        started.elapsed()
    );

    let slowloris = slowloris.await.expect("slowloris task");
    let closed = slowloris.expect("a slowloris client kept its connection");
    assert!(
        closed >= Duration::from_millis(1500) && closed < Duration::from_secs(8),
        "slowloris closed after {closed:?}"
    );

    // Well-behaved publishing still works.
    let client = reqwest::Client::new();
    let r = publish(
        &client,
        &gw.broker_url("default", "default"),
        "ok",
        "t",
        &[],
    )
    .await;
    assert_eq!(r.status(), 202);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_h2_connection_gets_goaway() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = manifests(tmp.path(), &[("broker.yaml", BROKER)]);
    let gw = Gateway::start(&dir, &tmp.path().join("data"), &["--idle-timeout", "1s"]).await;
    let stream = TcpStream::connect(addr(&gw.ingress))
        .await
        .expect("connect");
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .expect("h2c handshake");
    let conn = tokio::spawn(conn);
    let request = http::Request::get(format!("{}/nothing", gw.ingress))
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .expect("request");
    let response = send.send_request(request).await.expect("h2 request");
    assert_eq!(response.status(), 404);
    let ended = tokio::time::timeout(Duration::from_secs(10), conn).await;
    assert!(ended.is_ok(), "an idle h2 connection stayed open for 10 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_idle_connections_leaves_admin_and_new_requests_served() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = manifests(tmp.path(), &[("broker.yaml", BROKER)]);
    // 256 descriptors: the ingress takes at most 128 connections, the rest stays for the store,
    // the admin port and pods.
    let gw = Gateway::start_with_nofile(&dir, &tmp.path().join("data"), &[], 256).await;
    let ingress = addr(&gw.ingress);
    let mut flood = Vec::new();
    for _ in 0..400 {
        match TcpStream::connect(&ingress).await {
            Ok(stream) => flood.push(stream),
            Err(_) => break,
        }
    }
    assert!(
        flood.len() >= 300,
        "only {} flood connections opened",
        flood.len()
    );
    tokio::time::sleep(Duration::from_millis(500)).await;

    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client");
    for i in 0..5 {
        let health = client
            .get(format!("{}/healthz", gw.admin))
            .send()
            .await
            .expect("healthz answers during the flood");
        assert_eq!(health.status(), 200);
        let r = publish(
            &client,
            &gw.broker_url("default", "default"),
            &format!("during-flood-{i}"),
            "t",
            &[],
        )
        .await;
        assert_eq!(r.status(), 202, "publishing during the flood");
    }
    drop(flood);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn framing_and_routing_follow_the_rfc() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (echo, other) = (sample("echo"), sample("other"));
    let dir = manifests(tmp.path(), &[("echo.yaml", &echo), ("other.yaml", &other)]);
    let gw = Gateway::start(
        &dir,
        &tmp.path().join("data"),
        &["--body-read-timeout", "1s"],
    )
    .await;
    let client = reqwest::Client::new();
    eventually("both services answer", || async {
        let mut ok = true;
        for host in ["echo.default.example.com", "other.default.example.com"] {
            let r = client
                .get(format!("{}/", gw.ingress))
                .header("host", host)
                .send()
                .await;
            ok &= r.is_ok_and(|r| r.status() == 200);
        }
        ok
    })
    .await;
    let revision = |response: &str| {
        response
            .lines()
            .find_map(|l| l.strip_prefix("x-sample-revision: "))
            .map(str::to_owned)
            .unwrap_or_default()
    };

    // Absolute form: the target's authority wins over Host (RFC 9112 §3.2.2).
    let r = raw_exchange(
        &gw.ingress,
        b"GET http://other.default.example.com/ HTTP/1.1\r\nHost: echo.default.example.com\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&r), 200, "{r}");
    assert_eq!(revision(&r), "other-00001", "{r}");

    // Two Host headers: 400 naming the field (RFC 9112 §3.2).
    let r = raw_exchange(
        &gw.ingress,
        b"GET / HTTP/1.1\r\nHost: echo.default.example.com\r\nHost: other.default.example.com\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&r), 400, "{r}");
    assert!(r.contains("\"field\":\"host\""), "{r}");

    // No Host on HTTP/1.1: 400.
    let r = raw_exchange(&gw.ingress, b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n").await;
    assert_eq!(status_of(&r), 400, "{r}");

    // Host with a port and in upper case routes as the service.
    let r = raw_exchange(
        &gw.ingress,
        b"GET / HTTP/1.1\r\nHost: ECHO.Default.Example.COM:8080\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&r), 200, "{r}");
    assert_eq!(revision(&r), "echo-00001", "{r}");

    // X-Forwarded-Host and Forwarded are never used for routing.
    for header in [
        "X-Forwarded-Host: other.default.example.com",
        "Forwarded: host=other.default.example.com",
    ] {
        let raw = format!(
            "GET / HTTP/1.1\r\nHost: echo.default.example.com\r\n{header}\r\nConnection: close\r\n\r\n"
        );
        let r = raw_exchange(&gw.ingress, raw.as_bytes()).await;
        assert_eq!(revision(&r), "echo-00001", "{header}: {r}");
    }

    // Malformed chunked body from the client: 400, counted as a client error, not the pod's.
    let r = raw_exchange(
        &gw.ingress,
        b"POST / HTTP/1.1\r\nHost: echo.default.example.com\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&r), 400, "{r}");

    // A proxied body that stalls: 408, also the client's fault.
    let r = raw_exchange(
        &gw.ingress,
        b"POST / HTTP/1.1\r\nHost: echo.default.example.com\r\nContent-Length: 100\r\n\r\nhalf",
    )
    .await;
    assert_eq!(status_of(&r), 408, "{r}");
    let metrics = gw.metrics().await;
    let count = |outcome: &str| -> f64 {
        metrics
            .lines()
            .filter(|l| l.starts_with("tidegate_proxy_requests_total{"))
            .filter(|l| l.contains("revision=\"echo-00001\""))
            .filter(|l| l.contains(&format!("outcome=\"{outcome}\"")))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    assert_eq!(count("client_error"), 2.0, "{metrics}");
    assert_eq!(count("pod_failed"), 0.0, "{metrics}");

    // Content-Length beside Transfer-Encoding (both orders): the chunked framing wins, the
    // connection is closed after the answer (RFC 9112 §6.3), nothing is smuggled.
    for raw in [
        &b"POST / HTTP/1.1\r\nHost: echo.default.example.com\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: echo.default.example.com\r\n\r\n"[..],
        &b"POST / HTTP/1.1\r\nHost: echo.default.example.com\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: echo.default.example.com\r\n\r\n"[..],
    ] {
        let r = raw_exchange(&gw.ingress, raw).await;
        assert!(matches!(status_of(&r), 200 | 400), "{r}");
        assert_eq!(r.matches("HTTP/1.1 ").count(), 1, "a second request was served: {r}");
    }
    // Refused outright: differing duplicate Content-Length, obs-fold, NUL in a header value.
    for raw in [
        &b"POST / HTTP/1.1\r\nHost: echo.default.example.com\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"[..],
        &b"GET / HTTP/1.1\r\nHost: echo.default.example.com\r\nX-Folded: a\r\n b\r\n\r\n"[..],
        &b"GET / HTTP/1.1\r\nHost: echo.default.example.com\r\nX-Nul: a\x00b\r\n\r\n"[..],
    ] {
        let r = raw_exchange(&gw.ingress, raw).await;
        assert_eq!(status_of(&r), 400, "{:?} got {r:?}", String::from_utf8_lossy(raw));
    }
}

/// A Service whose only pod never becomes ready: every request to it waits in the queue.
const COLD: &str = "apiVersion: serving.knative.dev/v1
kind: Service
metadata: {name: cold, namespace: default}
spec:
  template:
    metadata:
      annotations:
        autoscaling.knative.dev/class: precise.tidegate.dev
        autoscaling.knative.dev/initial-scale: \"0\"
        autoscaling.knative.dev/max-scale: \"1\"
    spec:
      timeoutSeconds: 600
      containers:
        - command: [sh, -c, \"exec sleep 600\"]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: config-autoscaler, namespace: knative-serving}
data:
  allow-zero-initial-scale: \"true\"
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_keep_their_order_and_a_client_that_leaves_frees_its_place() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = manifests(tmp.path(), &[("broker.yaml", BROKER), ("cold.yaml", COLD)]);
    let gw = Gateway::start(&dir, &tmp.path().join("data"), &[]).await;

    // Three requests in one write: answered in order on the one connection, the last one
    // (Connection: close) closes it.
    let r = raw_exchange(
        &gw.ingress,
        b"GET /nothing HTTP/1.1\r\nHost: x\r\n\r\nPOST /default/default HTTP/1.1\r\nHost: x\r\nce-specversion: 1.0\r\nce-id: p1\r\nce-source: s\r\nce-type: t\r\nContent-Length: 2\r\n\r\n{}GET /nothing HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    let statuses: Vec<u16> = r
        .match_indices("HTTP/1.1 ")
        .filter_map(|(at, _)| r[at + 9..at + 12].parse().ok())
        .collect();
    assert_eq!(statuses, [404, 202, 404], "{r}");
    assert!(r.to_ascii_lowercase().contains("connection: close"), "{r}");

    // HTTP/1.0 without keep-alive: one answer, then the connection closes.
    let mut old = TcpStream::connect(addr(&gw.ingress))
        .await
        .expect("connect");
    old.write_all(b"GET /nothing HTTP/1.0\r\n\r\n")
        .await
        .expect("write");
    let (answer, closed) = read_until_closed(&mut old, Duration::from_secs(10)).await;
    assert_eq!(status_of(&answer), 404, "{answer}");
    assert!(closed.is_some(), "an HTTP/1.0 connection stayed open");

    // A request queued for a revision with no pod, whose client goes away: its place in the
    // queue is freed at once, not when the revision's timeout (600 s) ends.
    let queued = || async {
        gw.revisions()
            .await
            .iter()
            .filter(|r| r["service"] == "cold")
            .map(|r| r["queued"].as_u64().unwrap_or(0))
            .sum::<u64>()
    };
    let mut waiting = TcpStream::connect(addr(&gw.ingress))
        .await
        .expect("connect");
    waiting
        .write_all(b"GET / HTTP/1.1\r\nHost: cold.default.example.com\r\n\r\n")
        .await
        .expect("write");
    eventually("the request is queued", || async { queued().await == 1 }).await;
    drop(waiting);
    eventually("the queue is empty once the client left", || async {
        queued().await == 0
    })
    .await;
}
