//! What an operator reads: pods' lines in the gateway log and through `tidegate logs`.

use std::time::Duration;

use tokio::io::AsyncBufReadExt;

use crate::harness::*;

/// A Service whose pod writes a coloured line at start, then a numbered tick every 200 ms,
/// while it serves (Python's `http.server`, whose request lines go to stderr).
const CHATTY: &str = r#"apiVersion: serving.knative.dev/v1
kind: Service
metadata: {name: chatty, namespace: default}
spec:
  template:
    metadata:
      annotations:
        autoscaling.knative.dev/min-scale: "1"
    spec:
      containers:
        - command:
            - sh
            - -c
            - |
              printf '\033[2mdim\033[0m started\n'
              (i=0; while [ $i -lt 300 ]; do i=$((i+1)); echo "tick $i"; sleep 0.2; done) &
              exec python3 -m http.server "$PORT" --bind 127.0.0.1
"#;

async fn tidegate(args: &[&str]) -> std::process::Output {
    tokio::process::Command::new(bin())
        .args(args)
        .output()
        .await
        .expect("run tidegate")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_lines_reach_the_log_as_written_and_tidegate_logs_reads_and_follows_them() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = manifests(tmp.path(), &[("chatty.yaml", CHATTY)]);
    let log = tmp.path().join("gateway.log");
    let gw = Gateway::start_logging_to(&dir, &tmp.path().join("data"), &[], &log).await;

    // In the gateway log: the pod's bytes untouched (its escape sequences are not re-escaped),
    // prefixed with the pod; the gateway's own lines carry no colours (stderr is a file).
    eventually("the pod's first line in the gateway log", || async {
        std::fs::read(&log).is_ok_and(|l| {
            String::from_utf8_lossy(&l).contains("default/chatty-00001-1 | \u{1b}[2mdim")
        })
    })
    .await;
    let text = String::from_utf8_lossy(&std::fs::read(&log).expect("log")).into_owned();
    assert!(
        !text.contains("\\x1b"),
        "escape sequences re-escaped: {text}"
    );
    let own: Vec<&str> = text.lines().filter(|l| !l.contains(" | ")).collect();
    assert!(!own.is_empty(), "{text}");
    assert!(own.iter().all(|l| !l.contains('\u{1b}')), "{own:?}");

    // `tidegate logs`: the lines kept, the first one as written.
    let revision = "default/chatty-00001";
    let out = tidegate(&["logs", revision, "--admin", &gw.admin]).await;
    assert!(out.status.success(), "{out:?}");
    let printed = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        printed.starts_with("chatty-00001-1 | \u{1b}[2mdim\u{1b}[0m started\n"),
        "{printed}"
    );
    assert!(printed.contains("chatty-00001-1 | tick 1\n"), "{printed}");
    let tail = tidegate(&["logs", revision, "--tail", "1", "--admin", &gw.admin]).await;
    assert_eq!(String::from_utf8_lossy(&tail.stdout).lines().count(), 1);

    // -f prints lines written after it started.
    let mut follow = tokio::process::Command::new(bin())
        .args(["logs", revision, "-f", "--tail", "1", "--admin", &gw.admin])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn logs -f");
    let mut lines = tokio::io::BufReader::new(follow.stdout.take().expect("stdout")).lines();
    let tick = |line: &str| {
        line.strip_prefix("chatty-00001-1 | tick ")
            .and_then(|n| n.parse::<u32>().ok())
    };
    let mut ticks = Vec::new();
    while ticks.len() < 4 {
        let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
            .await
            .expect("a line within 10 s")
            .expect("read")
            .expect("not at the end");
        ticks.extend(tick(&line));
    }
    let (first, later) = (ticks[0], ticks[3]);
    assert!(later >= first + 3, "followed {first} then {later}");
    follow.kill().await.expect("stop logs -f");

    // Unknown revision and pod: 404 naming the field, and the command says so.
    let r = reqwest::get(format!(
        "{}/api/v1/revisions/default/nothing-00001/logs",
        gw.admin
    ))
    .await
    .expect("request");
    assert_eq!(r.status(), 404);
    let body: serde_json::Value = r.json().await.expect("json");
    assert_eq!(body["field"], "revision", "{body}");
    let r = reqwest::get(format!(
        "{}/api/v1/revisions/{revision}/logs?pod=chatty-00001-9",
        gw.admin
    ))
    .await
    .expect("request");
    assert_eq!(r.status(), 404);
    let body: serde_json::Value = r.json().await.expect("json");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("chatty-00001-1")),
        "{body}"
    );
    let out = tidegate(&["logs", "default/nothing-00001", "--admin", &gw.admin]).await;
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no revision default/nothing-00001"),
        "{out:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_json_log_format_writes_one_object_per_line_pods_included() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = manifests(tmp.path(), &[("chatty.yaml", CHATTY)]);
    let log = tmp.path().join("gateway.log");
    let _gw = Gateway::start_logging_to(
        &dir,
        &tmp.path().join("data"),
        &["--log-format", "json"],
        &log,
    )
    .await;
    eventually("a pod line in the log", || async {
        std::fs::read_to_string(&log).is_ok_and(|l| l.contains("tick 2"))
    })
    .await;
    let text = std::fs::read_to_string(&log).expect("log");
    let objects: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect();
    let pod = objects
        .iter()
        .find(|o| o["message"] == "\u{1b}[2mdim\u{1b}[0m started")
        .expect("the pod's first line, as written");
    assert_eq!(pod["pod"], "chatty-00001-1", "{pod}");
    assert_eq!(pod["revision"], "default/chatty-00001", "{pod}");
    assert_eq!(pod["stream"], "stdout", "{pod}");
    assert!(
        objects
            .iter()
            .any(|o| o["level"] == "INFO" && o["target"] != "pod"),
        "the gateway's own events are objects too: {text}"
    );
}

/// Runs `tidegate ARGS` for `run`, then stops it and returns what it printed.
async fn run_for(args: &[&str], run: Duration) -> String {
    let mut child = tokio::process::Command::new(bin())
        .args(args)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn tidegate");
    tokio::time::sleep(run).await;
    child.start_kill().expect("stop it");
    let out = child.wait_with_output().await.expect("output");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_prints_json_yaml_and_wide_and_watches_until_stopped() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = manifests(
        tmp.path(),
        &[("chatty.yaml", CHATTY), ("broker.yaml", BROKER)],
    );
    let gw = Gateway::start(&dir, &tmp.path().join("data"), &[]).await;
    eventually("the pod is ready", || async {
        gw.revisions().await.iter().any(|r| r["ready_pods"] == 1)
    })
    .await;
    let admin = gw.admin.as_str();

    let json = tidegate(&["status", "-o", "json", "--admin", admin]).await;
    assert!(json.status.success(), "{json:?}");
    let doc: serde_json::Value = serde_json::from_slice(&json.stdout).expect("one JSON document");
    assert_eq!(doc["revisions"][0]["revision"], "chatty-00001", "{doc}");
    assert_eq!(doc["brokers"][0]["name"], "default", "{doc}");
    assert!(doc["manifests"]["generation"].as_u64().is_some(), "{doc}");

    let yaml = tidegate(&["status", "-o", "yaml", "--admin", admin]).await;
    let yaml = String::from_utf8_lossy(&yaml.stdout).into_owned();
    assert!(
        yaml.contains("revisions:") && yaml.contains("revision: chatty-00001"),
        "{yaml}"
    );

    let wide = tidegate(&["status", "-o", "wide", "--admin", admin]).await;
    let wide = String::from_utf8_lossy(&wide.stdout).into_owned();
    let pod_row = wide
        .lines()
        .find(|l| l.trim_start().starts_with("pod chatty-00001-1"))
        .unwrap_or_else(|| panic!("no pod row: {wide}"));
    assert!(
        pod_row.contains("in flight") && pod_row.contains("ready"),
        "{pod_row}"
    );

    // --watch, stdout not a terminal: a timestamped snapshot per interval until stopped.
    let watched = run_for(
        &["status", "--watch", "--interval", "300ms", "--admin", admin],
        Duration::from_millis(1500),
    )
    .await;
    assert!(watched.matches("--- ").count() >= 3, "{watched}");
    assert!(watched.matches("REVISIONS").count() >= 3, "{watched}");
    // With -o json: one document per line.
    let watched = run_for(
        &[
            "status",
            "-w",
            "-o",
            "json",
            "--interval",
            "300ms",
            "--admin",
            admin,
        ],
        Duration::from_millis(1500),
    )
    .await;
    let documents: Vec<serde_json::Value> = watched
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(documents.len() >= 3, "{watched}");

    // An admin API that goes away: said so, no stale numbers, and the watch carries on.
    let closed = format!("http://127.0.0.1:{}", free_port());
    let watched = run_for(
        &["status", "-w", "--interval", "200ms", "--admin", &closed],
        Duration::from_millis(1200),
    )
    .await;
    assert!(
        watched.matches("admin API unreachable").count() >= 2,
        "{watched}"
    );
    assert!(!watched.contains("REVISIONS"), "{watched}");
}

/// Node.js and `playwright-core` (in `$TIDEGATE_TOOLS/node`, installed by `scripts/test.sh`) and
/// Chromium, or `None` with the reason printed.
fn browser_or_skip(test: &str) -> Option<std::path::PathBuf> {
    let tools = std::env::var_os("TIDEGATE_TOOLS")
        .map(std::path::PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".cache/tidegate-tools"))
        })?;
    let modules = tools.join("node/node_modules");
    let chromium = std::env::var_os("CHROMIUM")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| "/usr/bin/chromium".into());
    let node = std::process::Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if node && modules.join("playwright-core").is_dir() && chromium.exists() {
        return Some(modules);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{test}: needs node, playwright-core in {} and Chromium at {} (README's test command installs them)",
        modules.display(),
        chromium.display()
    );
    eprintln!(
        "SKIPPED {test}: needs node, playwright-core in {} and Chromium at {} (bash scripts/test.sh installs them)",
        modules.display(),
        chromium.display()
    );
    None
}

/// A Service whose one pod answers after 3 s, one request at a time.
const SLOW: &str = r#"apiVersion: serving.knative.dev/v1
kind: Service
metadata: {name: slow, namespace: default}
spec:
  template:
    metadata:
      annotations:
        autoscaling.knative.dev/class: precise.tidegate.dev
        autoscaling.knative.dev/min-scale: "1"
        autoscaling.knative.dev/max-scale: "1"
    spec:
      containerConcurrency: 1
      containers:
        - command: [tidegate, sample-service, --delay, 3s]
"#;

/// [`SLOW`] without the delay: a Service `quick` that answers at once.
fn quick_service() -> String {
    SLOW.replace("name: slow", "name: quick")
        .replace(", --delay, 3s", "")
}

/// Waits until the `quick` Service answers through the ingress.
async fn until_quick_answers(gw: &Gateway, client: &reqwest::Client) {
    eventually("the quick service answers", || async {
        client
            .get(format!("{}/", gw.ingress))
            .header("host", "quick.default.example.com")
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_live_revisions_in_a_real_browser_and_survives_a_restart() {
    use tokio::io::AsyncWriteExt as _;
    let Some(modules) = browser_or_skip("the_dashboard_shows_live_revisions_in_a_real_browser")
    else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = manifests(tmp.path(), &[("slow.yaml", SLOW), ("broker.yaml", BROKER)]);
    let mut gw = Gateway::start(&dir, &tmp.path().join("data"), &[]).await;
    eventually("the slow pod is ready", || async {
        gw.revisions().await.iter().any(|r| r["ready_pods"] == 1)
    })
    .await;
    let screenshot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    let _ = std::fs::remove_file(&screenshot);
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e/dashboard.cjs");
    let mut browser = tokio::process::Command::new("node")
        .arg(&script)
        .arg(&gw.admin)
        .arg("default/slow-00001")
        .arg(&screenshot)
        .env("NODE_PATH", &modules)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start node");
    let mut to_browser = browser.stdin.take().expect("stdin");
    let mut from_browser =
        tokio::io::BufReader::new(browser.stdout.take().expect("stdout")).lines();
    let mut expect = async |word: &str| {
        let line = tokio::time::timeout(Duration::from_secs(60), from_browser.next_line())
            .await
            .unwrap_or_else(|_| panic!("the browser did not say {word:?} within 60 s"))
            .expect("read");
        assert_eq!(
            line.as_deref(),
            Some(word),
            "the browser script stopped (see its stderr)"
        );
    };
    expect("shown").await;

    // Six requests on a pod that takes one at a time for 3 s: one in flight, five queued.
    let client = reqwest::Client::new();
    let load: Vec<_> = (0..6)
        .map(|_| {
            let (client, url) = (client.clone(), format!("{}/", gw.ingress));
            tokio::spawn(async move {
                client
                    .get(url)
                    .header("host", "slow.default.example.com")
                    .timeout(Duration::from_secs(60))
                    .send()
                    .await
            })
        })
        .collect();
    to_browser
        .write_all(b"load\n")
        .await
        .expect("tell the browser");
    expect("moved").await;
    assert!(
        std::fs::metadata(&screenshot).is_ok_and(|m| m.len() > 10_000),
        "no screenshot at {}",
        screenshot.display()
    );
    eprintln!("dashboard screenshot: {}", screenshot.display());

    // A manifest with an error: the page shows the rejected reload and where the error is.
    std::fs::write(
        dir.join("bad.yaml"),
        "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata: {name: bad, namespace: default}\nspec:\n  template:\n    spec:\n      containerConcurrency: -3\n      containers: [{command: [x]}]\n",
    )
    .expect("write a bad manifest");
    to_browser
        .write_all(b"bad\n")
        .await
        .expect("tell the browser");
    expect("rejected").await;
    std::fs::remove_file(dir.join("bad.yaml")).expect("remove it");

    // The gateway goes away: the page says it is not live; back, it is live again by itself.
    to_browser
        .write_all(b"restart\n")
        .await
        .expect("tell the browser");
    gw.kill9();
    expect("stale").await;
    gw.kill9_and_restart().await;
    expect("live").await;
    let status = tokio::time::timeout(Duration::from_secs(30), browser.wait())
        .await
        .expect("the browser script ends")
        .expect("wait");
    assert!(status.success(), "the browser script failed: {status}");
    for request in load {
        let _ = request.await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_grafana_dashboard_is_json_and_queries_only_metrics_tidegate_exposes() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy/grafana/tidegate-dashboard.json");
    let text = std::fs::read_to_string(&path).expect("read the dashboard");
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    let panels = dashboard["panels"].as_array().expect("panels");
    let mut queries: Vec<String> = panels
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .filter_map(|t| t["expr"].as_str().map(str::to_owned))
        .collect();
    assert!(queries.len() >= 10, "{queries:?}");
    for variable in dashboard["templating"]["list"]
        .as_array()
        .expect("variables")
    {
        if let Some(definition) = variable["definition"].as_str() {
            queries.push(definition.to_owned());
        }
    }
    let mut names: Vec<String> = queries
        .iter()
        .flat_map(|q| {
            q.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|w| w.starts_with("tidegate_"))
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect();
    names.sort();
    names.dedup();

    // A gateway with a broker, a trigger to a Service and a proxied request: every family has
    // series.
    let tmp = tempfile::tempdir().expect("tempdir");
    let quick = quick_service();
    let trigger = "apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {name: to-quick, namespace: default}
spec:
  broker: default
  subscriber:
    ref: {apiVersion: serving.knative.dev/v1, kind: Service, name: quick}
";
    let dir = manifests(
        tmp.path(),
        &[
            ("quick.yaml", &quick),
            ("broker.yaml", BROKER),
            ("trigger.yaml", trigger),
        ],
    );
    let gw = Gateway::start(&dir, &tmp.path().join("data"), &[]).await;
    let client = reqwest::Client::new();
    until_quick_answers(&gw, &client).await;
    let r = publish(
        &client,
        &gw.broker_url("default", "default"),
        "g1",
        "t",
        &[],
    )
    .await;
    assert_eq!(r.status(), 202);
    eventually("the event delivered", || async {
        gw.trigger("to-quick").await["delivered"] == 1
    })
    .await;
    let metrics = gw.metrics().await;
    let exposed: std::collections::BTreeSet<&str> = metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();
    let missing: Vec<&String> = names
        .iter()
        .filter(|n| !exposed.contains(n.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "queried but not exposed: {missing:?}\n{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_streams_are_capped_and_the_admin_port_stays_served() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = manifests(tmp.path(), &[("broker.yaml", BROKER)]);
    let gw = Gateway::start(&dir, &tmp.path().join("data"), &[]).await;
    let client = reqwest::Client::new();
    let url = format!("{}/api/v1/stream", gw.admin);
    let mut open = Vec::new();
    for _ in 0..32 {
        let r = client.get(&url).send().await.expect("stream");
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-type"], "text/event-stream");
        open.push(r);
    }
    let refused = client.get(&url).send().await.expect("request");
    assert_eq!(refused.status(), 503);
    assert!(refused.headers().contains_key("retry-after"));
    let health = client
        .get(format!("{}/healthz", gw.admin))
        .send()
        .await
        .expect("healthz");
    assert_eq!(health.status(), 200);
    // The first event of a stream is the history.
    let mut first = open.pop().expect("a stream");
    let chunk = tokio::time::timeout(Duration::from_secs(5), first.chunk())
        .await
        .expect("an event within 5 s")
        .expect("read")
        .expect("data");
    assert!(
        String::from_utf8_lossy(&chunk).starts_with("event: history"),
        "{chunk:?}"
    );
    drop(first);
    eventually("a stream closed frees its place", || async {
        client
            .get(&url)
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
}

/// The OTLP receiver of `otlp_receiver.py` and where it writes the spans it decoded.
struct OtlpReceiver {
    child: std::process::Child,
    url: String,
    spans: std::path::PathBuf,
}

impl OtlpReceiver {
    async fn start(dir: &std::path::Path) -> OtlpReceiver {
        let (port_file, spans) = (dir.join("otlp.port"), dir.join("spans.jsonl"));
        let script =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e/otlp_receiver.py");
        let child = std::process::Command::new("python3")
            .arg(&script)
            .arg(&port_file)
            .arg(&spans)
            .spawn()
            .expect("start the OTLP receiver");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        let port = loop {
            if let Ok(port) = std::fs::read_to_string(&port_file) {
                break port;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the OTLP receiver did not start (needs opentelemetry-proto from PyPI; bash scripts/test.sh installs it)"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        OtlpReceiver {
            child,
            url: format!("http://127.0.0.1:{port}/v1/traces"),
            spans,
        }
    }

    fn spans(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.spans)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traces_reach_an_otlp_receiver_in_one_trace_from_ingest_to_the_subscriber() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let receiver = OtlpReceiver::start(tmp.path()).await;
    let subscriber = Subscriber::accepting().await;
    let quick = quick_service();
    let dir = manifests(
        tmp.path(),
        &[
            ("broker.yaml", BROKER),
            ("trigger.yaml", &trigger("traced", &subscriber.url, "")),
            ("quick.yaml", &quick),
        ],
    );
    let gw = Gateway::start(
        &dir,
        &tmp.path().join("data"),
        &["--otlp-endpoint", &receiver.url],
    )
    .await;
    let client = reqwest::Client::new();
    let r = publish(
        &client,
        &gw.broker_url("default", "default"),
        "traced-1",
        "t",
        &[],
    )
    .await;
    assert_eq!(r.status(), 202);
    let got = subscriber.wait_for(1).await;
    let seen = got[0]
        .header("traceparent")
        .expect("the subscriber got a traceparent")
        .to_owned();

    // One trace: ingest → delivery (its child), and the subscriber's parent is the delivery.
    let find = |name: &str| receiver.spans().into_iter().find(|s| s["name"] == name);
    eventually("an ingest and a delivery span exported", || async {
        find("ingest").is_some() && find("delivery").is_some()
    })
    .await;
    let (ingest, delivery) = (
        find("ingest").expect("ingest"),
        find("delivery").expect("delivery"),
    );
    assert_eq!(ingest["service"], "tidegate");
    assert_eq!(
        ingest["trace_id"], delivery["trace_id"],
        "{ingest} {delivery}"
    );
    assert_eq!(delivery["parent_span_id"], ingest["span_id"], "{delivery}");
    // tracing-opentelemetry sends unsigned integers as strings.
    let number = |v: &serde_json::Value| v.to_string().trim_matches('"').to_owned();
    assert_eq!(number(&delivery["attributes"]["retry"]), "0", "{delivery}");
    assert_eq!(delivery["attributes"]["outcome"], "delivered", "{delivery}");
    assert_eq!(number(&ingest["attributes"]["events"]), "1", "{ingest}");
    let trace_id = ingest["trace_id"].as_str().expect("hex");
    assert!(
        seen.contains(trace_id) && seen.contains(delivery["span_id"].as_str().expect("hex")),
        "the subscriber saw {seen}, the trace is {trace_id}"
    );

    // A publisher's own trace context is kept: its trace id, ingest a child of its span.
    let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let r = client
        .post(gw.broker_url("default", "default"))
        .header("ce-specversion", "1.0")
        .header("ce-id", "traced-2")
        .header("ce-source", "test")
        .header("ce-type", "t")
        .header("traceparent", parent)
        .body("{}")
        .send()
        .await
        .expect("publish");
    assert_eq!(r.status(), 202);
    eventually("the publisher's trace exported", || async {
        let spans = receiver.spans();
        spans.iter().any(|s| {
            s["name"] == "ingest"
                && s["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
                && s["parent_span_id"] == "00f067aa0ba902b7"
        }) && spans
            .iter()
            .any(|s| s["name"] == "delivery" && s["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736")
    })
    .await;

    // A proxied request: proxy, with its queue wait and upstream time as children.
    until_quick_answers(&gw, &client).await;
    eventually("proxy, queue and upstream spans in one trace", || async {
        let spans = receiver.spans();
        spans.iter().filter(|s| s["name"] == "proxy").any(|proxy| {
            let child = |name: &str| {
                spans.iter().any(|s| {
                    s["name"] == name
                        && s["trace_id"] == proxy["trace_id"]
                        && s["parent_span_id"] == proxy["span_id"]
                })
            };
            child("queue") && child("upstream")
        })
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_otlp_endpoint_drops_and_counts_spans_and_serves_as_usual() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let subscriber = Subscriber::accepting().await;
    let dir = manifests(
        tmp.path(),
        &[
            ("broker.yaml", BROKER),
            ("trigger.yaml", &trigger("t", &subscriber.url, "")),
        ],
    );
    let closed = format!("http://127.0.0.1:{}/v1/traces", free_port());
    let gw = Gateway::start(
        &dir,
        &tmp.path().join("data"),
        &["--otlp-endpoint", &closed],
    )
    .await;
    let client = reqwest::Client::new();
    for i in 0..5 {
        let r = publish(
            &client,
            &gw.broker_url("default", "default"),
            &format!("e{i}"),
            "t",
            &[],
        )
        .await;
        assert_eq!(r.status(), 202);
    }
    subscriber.wait_for(5).await;
    eventually("dropped spans counted", || async {
        gw.metrics().await.lines().any(|l| {
            l.strip_prefix("tidegate_otlp_spans_dropped_total ")
                .and_then(|v| v.parse::<f64>().ok())
                .is_some_and(|v| v >= 1.0)
        })
    })
    .await;
}
