//! Real processes on 127.0.0.1 (`sh`, `python3 -m http.server`), every wait bounded.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::time::{Instant, sleep};

use super::*;
use crate::actuator::Readiness;
use crate::actuator::probe::probe_once;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Event {
    Ready(PodId, SocketAddr),
    Draining(PodId),
    Gone(PodId),
}

/// Records every callback; after `pod_draining` reports one request in flight for `hold`.
#[derive(Default)]
struct FakeSink {
    events: Mutex<Vec<(Instant, Event)>>,
    hold: Option<Duration>,
    drained_at: Mutex<HashMap<PodId, Instant>>,
}

impl FakeSink {
    fn holding(hold: Duration) -> Arc<Self> {
        Arc::new(Self {
            hold: Some(hold),
            ..Self::default()
        })
    }

    fn events(&self) -> Vec<Event> {
        self.events
            .lock()
            .expect("sink lock")
            .iter()
            .map(|(_, e)| *e)
            .collect()
    }

    fn at(&self, event: Event) -> Option<Instant> {
        let events = self.events.lock().expect("sink lock");
        events.iter().find(|(_, e)| *e == event).map(|(t, _)| *t)
    }

    fn ready(&self) -> Vec<(PodId, SocketAddr)> {
        let events = self.events();
        events
            .iter()
            .filter_map(|e| match e {
                Event::Ready(id, address) => Some((*id, *address)),
                _ => None,
            })
            .collect()
    }

    fn gone(&self, id: PodId) -> bool {
        self.events().contains(&Event::Gone(id))
    }

    fn push(&self, event: Event) {
        self.events
            .lock()
            .expect("sink lock")
            .push((Instant::now(), event));
    }
}

impl PodSink for FakeSink {
    fn pod_ready(&self, id: PodId, address: SocketAddr) {
        self.push(Event::Ready(id, address));
    }

    fn pod_draining(&self, id: PodId) {
        self.drained_at
            .lock()
            .expect("sink lock")
            .insert(id, Instant::now());
        self.push(Event::Draining(id));
    }

    fn pod_gone(&self, id: PodId) {
        self.push(Event::Gone(id));
    }

    fn pod_in_flight(&self, id: PodId) -> u32 {
        let since = self.drained_at.lock().expect("sink lock").get(&id).copied();
        match (self.hold, since) {
            (Some(hold), Some(since)) if since.elapsed() < hold => 1,
            _ => 0,
        }
    }
}

const WAIT: Duration = Duration::from_secs(20);

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        sleep(Duration::from_millis(20)).await;
    }
}

fn shell(script: &str) -> PodSpec {
    let mut spec = PodSpec::new(vec!["sh".into(), "-c".into(), script.into()]);
    spec.termination_grace = Duration::from_secs(5);
    spec.drain_timeout = Duration::from_secs(5);
    spec
}

fn http_server(check: Readiness) -> PodSpec {
    let mut spec = shell(r#"exec python3 -m http.server "$PORT" --bind 127.0.0.1"#);
    spec.readiness.check = check;
    spec
}

fn alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

fn stopped(status: &PodsStatus) -> bool {
    status.starting + status.ready + status.draining == 0
}

#[tokio::test]
async fn http_get_readiness_scales_up_and_down() {
    let runtime = LocalRuntime::new(PodOutput::Log);
    let sink = Arc::new(FakeSink::default());
    let pods = runtime.revision(
        "default/web-00001".into(),
        http_server(Readiness::HttpGet { path: "/".into() }),
        sink.clone(),
    );
    pods.scale(2);
    wait_for("2 ready pods", || pods.status().ready == 2).await;
    let ready = sink.ready();
    assert_eq!(ready.len(), 2);
    assert_ne!(ready[0].1, ready[1].1);
    for (_, address) in &ready {
        let check = Readiness::HttpGet { path: "/".into() };
        assert_eq!(
            probe_once(&check, *address, Duration::from_secs(5)).await,
            Ok(())
        );
    }
    let pids = pods.pids();
    assert_eq!(pids.len(), 2);
    assert!(pids.iter().all(|(_, pid)| alive(*pid)));

    pods.scale(0);
    wait_for("no pods", || stopped(&pods.status())).await;
    for (id, pid) in pids {
        let events = sink.events();
        let order: Vec<usize> = [
            Event::Ready(id, ready.iter().find(|r| r.0 == id).expect("was ready").1),
            Event::Draining(id),
            Event::Gone(id),
        ]
        .iter()
        .map(|e| events.iter().position(|x| x == e).expect("event recorded"))
        .collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{events:?}");
        assert!(!alive(pid));
    }
    tokio::time::timeout(WAIT, pods.stop())
        .await
        .expect("stopped in time");
}

#[tokio::test]
async fn tcp_readiness_with_env_and_working_dir_removes_the_newest_pod_first() {
    let runtime = LocalRuntime::new(PodOutput::Log);
    let sink = Arc::new(FakeSink::default());
    // The pod only starts serving when the environment and working directory are as specified.
    let dir = tempfile::tempdir().expect("temp dir");
    let mut spec = shell(
        r#"test "$GREETING" = hello && test "$(pwd -P)" = "$WANT_DIR" && exec python3 -m http.server "$PORT" --bind 127.0.0.1"#,
    );
    let canonical = dir.path().canonicalize().expect("canonical temp dir");
    spec.env = vec![
        ("GREETING".into(), "hello".into()),
        (
            "WANT_DIR".into(),
            canonical.to_string_lossy().into_owned().into(),
        ),
        ("PORT".into(), "1".into()),
    ];
    spec.working_dir = Some(dir.path().to_owned());
    let pods = runtime.revision("default/tcp-00001".into(), spec, sink.clone());
    pods.scale(1);
    wait_for("the first pod ready", || pods.status().ready == 1).await;
    pods.scale(2);
    wait_for("2 ready pods", || pods.status().ready == 2).await;
    let mut ids: Vec<PodId> = sink.ready().iter().map(|r| r.0).collect();
    ids.sort_unstable();

    pods.scale(1);
    wait_for("the newest pod gone", || sink.gone(ids[1])).await;
    assert!(!sink.gone(ids[0]));
    assert_eq!(pods.status().ready, 1);

    tokio::time::timeout(WAIT, pods.stop())
        .await
        .expect("stopped in time");
    assert!(sink.gone(ids[0]));
    assert!(stopped(&pods.status()));
    // Stopped for good.
    pods.scale(3);
    sleep(Duration::from_millis(200)).await;
    assert!(stopped(&pods.status()));
}

#[tokio::test]
async fn a_killed_pod_is_replaced() {
    let runtime = LocalRuntime::new(PodOutput::Log);
    let sink = Arc::new(FakeSink::default());
    let pods = runtime.revision(
        "default/kill-00001".into(),
        http_server(Readiness::TcpPort),
        sink.clone(),
    );
    pods.scale(1);
    wait_for("a ready pod", || pods.status().ready == 1).await;
    let [(first, pid)] = pods.pids()[..] else {
        panic!("one pid expected");
    };
    kill(
        Pid::from_raw(i32::try_from(pid).expect("pid fits i32")),
        Signal::SIGKILL,
    )
    .expect("kill the pod");
    wait_for("the killed pod gone", || sink.gone(first)).await;
    wait_for("a replacement", || {
        sink.ready().iter().any(|(id, _)| *id != first) && pods.status().ready == 1
    })
    .await;
    let status = pods.status();
    assert_eq!(status.failures, 1);
    let error = status.last_error.expect("an error is recorded");
    assert!(error.contains("after becoming ready"), "{error}");
    assert!(error.contains("signal: 9"), "{error}");
    tokio::time::timeout(WAIT, pods.stop())
        .await
        .expect("stopped in time");
}

#[tokio::test]
async fn a_missing_command_backs_off_and_scale_to_zero_stops_retrying() {
    let runtime = LocalRuntime::new(PodOutput::Log);
    let sink = Arc::new(FakeSink::default());
    let spec = PodSpec::new(vec!["/nonexistent/tidegate-no-such-program".into()]);
    let pods = runtime.revision("default/missing-00001".into(), spec, sink.clone());
    pods.scale(2);
    wait_for("3 failures", || pods.status().failures >= 3).await;
    let status = pods.status();
    assert_eq!((status.starting, status.ready), (0, 0));
    let error = status.last_error.expect("an error is recorded");
    assert!(error.starts_with("spawn failed: "), "{error}");
    assert!(sink.events().is_empty());

    // Backoff: 100 + 200 + 400 ms of waits fit 4 attempts into ~0.8 s, not hundreds.
    sleep(Duration::from_millis(500)).await;
    assert!(pods.status().failures <= 6, "{:?}", pods.status());

    pods.scale(0);
    let failures = pods.status().failures;
    sleep(Duration::from_millis(1500)).await;
    assert_eq!(pods.status().failures, failures);
    tokio::time::timeout(WAIT, pods.stop())
        .await
        .expect("stopped in time");
}

#[tokio::test]
async fn a_pod_exiting_at_once_is_reported_and_retried() {
    let runtime = LocalRuntime::new(PodOutput::Log);
    let sink = Arc::new(FakeSink::default());
    let pods = runtime.revision(
        "default/crash-00001".into(),
        shell("echo starting; echo oops >&2; exit 3"),
        sink.clone(),
    );
    pods.scale(1);
    wait_for("2 failures", || pods.status().failures >= 2).await;
    let error = pods.status().last_error.expect("an error is recorded");
    assert_eq!(error, "exited before becoming ready (exit status: 3)");
    let events = sink.events();
    assert!(
        events.iter().all(|e| matches!(e, Event::Gone(_))),
        "{events:?}"
    );
    pods.scale(0);
    tokio::time::timeout(WAIT, pods.stop())
        .await
        .expect("stopped in time");
}

#[tokio::test]
async fn a_pod_never_ready_is_stopped_after_the_start_timeout() {
    let runtime = LocalRuntime::new(PodOutput::Log);
    let sink = Arc::new(FakeSink::default());
    let mut spec = shell("exec sleep 30");
    spec.start_timeout = Duration::from_millis(300);
    let pods = runtime.revision("default/slow-00001".into(), spec, sink.clone());
    pods.scale(1);
    wait_for("a failure", || pods.status().failures >= 1).await;
    let error = pods.status().last_error.expect("an error is recorded");
    assert!(error.starts_with("not ready within 300ms"), "{error}");
    tokio::time::timeout(WAIT, pods.stop())
        .await
        .expect("stopped in time");
    assert!(sink.ready().is_empty());
}

#[tokio::test]
async fn scale_down_waits_for_requests_in_flight() {
    let runtime = LocalRuntime::new(PodOutput::Log);
    let sink = FakeSink::holding(Duration::from_millis(500));
    let pods = runtime.revision(
        "default/drain-00001".into(),
        http_server(Readiness::TcpPort),
        sink.clone(),
    );
    pods.scale(1);
    wait_for("a ready pod", || pods.status().ready == 1).await;
    let [(id, pid)] = pods.pids()[..] else {
        panic!("one pid expected");
    };
    pods.scale(0);
    wait_for("draining", || pods.status().draining == 1).await;
    sleep(Duration::from_millis(100)).await;
    assert!(alive(pid), "stopped while a request was in flight");
    wait_for("the pod gone", || sink.gone(id)).await;
    let drained = sink.at(Event::Draining(id)).expect("drained");
    let gone = sink.at(Event::Gone(id)).expect("gone");
    assert!(gone - drained >= Duration::from_millis(500));
    assert!(!alive(pid));
}

#[tokio::test]
async fn drain_and_termination_are_bounded() {
    let runtime = LocalRuntime::new(PodOutput::Log);
    // A request that never ends, and a process that ignores SIGTERM.
    let sink = FakeSink::holding(Duration::from_secs(3600));
    let mut spec = shell(r#"trap '' TERM; exec python3 -m http.server "$PORT" --bind 127.0.0.1"#);
    spec.drain_timeout = Duration::from_millis(200);
    spec.termination_grace = Duration::from_millis(300);
    let pods = runtime.revision("default/stubborn-00001".into(), spec, sink.clone());
    pods.scale(1);
    wait_for("a ready pod", || pods.status().ready == 1).await;
    let [(id, pid)] = pods.pids()[..] else {
        panic!("one pid expected");
    };
    tokio::time::timeout(WAIT, pods.stop())
        .await
        .expect("stopped in time");
    let drained = sink.at(Event::Draining(id)).expect("drained");
    let gone = sink.at(Event::Gone(id)).expect("gone");
    assert!(gone - drained >= Duration::from_millis(500));
    assert!(!alive(pid));
}

#[tokio::test]
async fn shutdown_stops_every_revision() {
    let runtime = LocalRuntime::new(PodOutput::Discard);
    let sink = Arc::new(FakeSink::default());
    let a = runtime.revision(
        "ns/a-00001".into(),
        http_server(Readiness::TcpPort),
        sink.clone(),
    );
    let b = runtime.revision(
        "ns/b-00001".into(),
        http_server(Readiness::TcpPort),
        sink.clone(),
    );
    a.scale(1);
    b.scale(2);
    wait_for("3 ready pods", || a.status().ready + b.status().ready == 3).await;
    let pids: Vec<u32> = a.pids().into_iter().chain(b.pids()).map(|p| p.1).collect();
    tokio::time::timeout(WAIT, runtime.shutdown(Duration::from_secs(5)))
        .await
        .expect("shut down in time");
    assert!(stopped(&a.status()) && stopped(&b.status()));
    assert!(pids.iter().all(|pid| !alive(*pid)));
    assert_eq!(sink.events().len(), 3 * 3);

    let late = runtime.revision("ns/c-00001".into(), http_server(Readiness::TcpPort), sink);
    late.scale(1);
    sleep(Duration::from_millis(200)).await;
    assert!(stopped(&late.status()));
}

#[tokio::test]
async fn an_invalid_spec_never_starts() {
    let runtime = LocalRuntime::new(PodOutput::Log);
    let sink = Arc::new(FakeSink::default());
    let pods = runtime.revision(
        "ns/bad-00001".into(),
        http_server(Readiness::HttpGet {
            path: "healthz".into(),
        }),
        sink.clone(),
    );
    pods.scale(1);
    sleep(Duration::from_millis(200)).await;
    let status = pods.status();
    assert!(stopped(&status));
    assert!(
        status
            .last_error
            .expect("an error is recorded")
            .starts_with("invalid pod spec: readiness path")
    );
    tokio::time::timeout(WAIT, pods.stop())
        .await
        .expect("stopped in time");
}

#[tokio::test]
async fn periodic_probes_take_a_pod_out_of_dispatch_and_back() {
    let runtime = LocalRuntime::new(PodOutput::Log);
    let sink = Arc::new(FakeSink::default());
    let dir = tempfile::tempdir().expect("temp dir");
    let marker = dir.path().join("ready");
    std::fs::write(&marker, "ok").expect("write the marker");
    let mut spec = http_server(Readiness::HttpGet {
        path: "/ready".into(),
    });
    spec.working_dir = Some(dir.path().to_owned());
    spec.readiness.period = Some(Duration::from_millis(50));
    spec.readiness.failure_threshold = 2;
    let pods = runtime.revision("ns/flaky-00001".into(), spec, sink.clone());
    pods.scale(1);
    wait_for("a ready pod", || pods.status().ready == 1).await;
    let [(id, address)] = sink.ready()[..] else {
        panic!("one ready pod expected");
    };

    std::fs::remove_file(&marker).expect("remove the marker");
    wait_for("readiness lost", || {
        sink.events().contains(&Event::Draining(id))
    })
    .await;
    let status = pods.status();
    assert_eq!((status.starting, status.ready), (1, 0));

    std::fs::write(&marker, "ok").expect("write the marker");
    wait_for("ready again", || sink.ready().len() == 2).await;
    assert_eq!(sink.ready()[1], (id, address));
    assert_eq!(pods.status().ready, 1);
    tokio::time::timeout(WAIT, pods.stop())
        .await
        .expect("stopped in time");
}

#[tokio::test]
async fn pod_output_is_kept_per_pod_with_its_stream_and_outlives_the_pod() {
    let runtime = LocalRuntime::new(PodOutput::Log);
    let sink = Arc::new(FakeSink::default());
    let pods = runtime.revision(
        "ns/chatty-00001".into(),
        shell("echo hello from stdout; printf '\\033[2mdim\\033[0m\\n' >&2; exec sleep 30"),
        sink,
    );
    pods.scale(1);
    let logs = runtime.logs();
    let page = || logs.read("ns/chatty-00001", None, 0, 100);
    wait_for("both lines kept", || {
        page().is_some_and(|p| p.lines.len() == 2)
    })
    .await;
    let page = page().expect("page");
    let pod = page.pods[0].clone();
    assert!(pod.starts_with("chatty-00001-"), "{pod}");
    let out = page
        .lines
        .iter()
        .find(|l| l.stream == Stream::Stdout)
        .expect("stdout");
    assert_eq!(out.text, "hello from stdout");
    assert_eq!(out.container, SERVING_CONTAINER);
    let err = page
        .lines
        .iter()
        .find(|l| l.stream == Stream::Stderr)
        .expect("stderr");
    assert_eq!(
        err.text, "\u{1b}[2mdim\u{1b}[0m",
        "kept as the pod wrote it"
    );
    tokio::time::timeout(WAIT, pods.stop())
        .await
        .expect("stopped in time");
    let after = logs
        .read("ns/chatty-00001", Some(&pod), 0, 100)
        .expect("kept");
    assert_eq!(after.lines.len(), 2, "an ended pod's lines stay readable");
}

#[test]
fn restart_backoff_doubles_up_to_the_cap() {
    assert_eq!(restart_backoff(1), Duration::from_millis(100));
    assert_eq!(restart_backoff(2), Duration::from_millis(200));
    assert_eq!(restart_backoff(7), Duration::from_millis(6400));
    assert_eq!(restart_backoff(8), RESTART_BACKOFF_MAX);
    assert_eq!(restart_backoff(u32::MAX), RESTART_BACKOFF_MAX);
}

#[test]
fn variables_expand_as_kubernetes_expands_them() {
    let env = vec![
        ("PORT", "8080".to_owned()),
        ("A", "one".to_owned()),
        ("A", "two".to_owned()),
    ];
    assert_eq!(expand("--port=$(PORT)", &env), "--port=8080");
    assert_eq!(expand("$(A)", &env), "two", "the last definition wins");
    assert_eq!(expand("$$(A) $$ $", &env), "$(A) $ $");
    assert_eq!(expand("$(MISSING) $(A", &env), "$(MISSING) $(A");
    assert_eq!(expand("no variables", &env), "no variables");
}

#[tokio::test]
async fn a_sidecar_failing_its_readiness_probe_takes_the_pod_out_of_dispatch() {
    let runtime = LocalRuntime::new(PodOutput::Log);
    let sink = Arc::new(FakeSink::default());
    let dir = tempfile::tempdir().expect("temp dir");
    let marker = dir.path().join("sidecar-ready");
    std::fs::write(&marker, "ok").expect("write the marker");
    let mut spec = http_server(Readiness::TcpPort);
    let check = ReadinessProbe {
        check: Readiness::Exec {
            command: vec!["test".into(), "-f".into(), marker.display().to_string()],
        },
        period: Some(Duration::from_millis(50)),
        failure_threshold: 2,
        ..ReadinessProbe::default()
    };
    spec.sidecars.push(crate::actuator::Sidecar {
        name: "sidecar".into(),
        command: vec!["sleep".into(), "60".into()],
        args: vec![],
        env: vec![],
        working_dir: None,
        readiness: Some(check),
        liveness: None,
        startup: None,
        mounts: vec![],
        memory_limit: None,
    });
    let pods = runtime.revision("ns/pair-00001".into(), spec, sink.clone());
    pods.scale(1);
    wait_for("a ready pod", || pods.status().ready == 1).await;
    let [(id, _)] = sink.ready()[..] else {
        panic!("one ready pod expected");
    };
    std::fs::remove_file(&marker).expect("remove the marker");
    wait_for("readiness lost with the sidecar's", || {
        sink.events().contains(&Event::Draining(id))
    })
    .await;
    std::fs::write(&marker, "ok").expect("write the marker");
    wait_for("ready again", || sink.ready().len() == 2).await;
    tokio::time::timeout(WAIT, pods.stop())
        .await
        .expect("stopped in time");
    assert!(stopped(&pods.status()));
}

/// A busy process group's cpu time grows by about a core per second, a sleeping one's does not;
/// both show their resident memory (the samples the HPA class will read).
#[tokio::test]
async fn group_usage_counts_cpu_time_and_resident_memory_per_process_group() {
    use std::os::unix::process::CommandExt as _;
    let spawn = |script: &str| {
        std::process::Command::new("sh")
            .args(["-c", script])
            .process_group(0)
            .spawn()
            .expect("spawn sh")
    };
    let mut busy = spawn("while :; do :; done");
    let mut idle = spawn("sleep 30");
    let groups = [busy.id(), idle.id()];
    let mut clock = crate::actuator::CpuClock::default();
    let sample = |clock: &mut crate::actuator::CpuClock| {
        let usage = group_usage(&groups);
        let now = Instant::now();
        groups.map(|pid| clock.millicores(u64::from(pid), usage[&pid].cpu_ticks, now))
    };
    assert_eq!(
        sample(&mut clock),
        [None, None],
        "the first sample has no rate"
    );
    sleep(Duration::from_millis(600)).await;
    let [Some(busy_m), Some(idle_m)] = sample(&mut clock) else {
        panic!("the second sample has a rate");
    };
    let after = group_usage(&groups);
    for pid in groups {
        // The whole group: `sleep` may be a child of its shell.
        let _ = nix::sys::signal::killpg(
            Pid::from_raw(i32::try_from(pid).unwrap_or(0)),
            Signal::SIGKILL,
        );
    }
    let _ = busy.wait();
    let _ = idle.wait();
    assert!(
        busy_m > 300.0,
        "a busy loop uses most of a core: {busy_m:.0} m"
    );
    assert!(idle_m < 50.0, "a sleeping process uses none: {idle_m:.0} m");
    assert!(after[&groups[1]].resident_bytes > 0);
}
