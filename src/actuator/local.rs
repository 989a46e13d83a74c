//! The local process runtime: every pod is a child process of the gateway.
//!
//! Each pod runs in its own process group (so `sh -c` wrappers and their children are signalled
//! together), with stdin closed, the gateway's environment plus the spec's `env`, and `PORT` set to
//! a port that was free on 127.0.0.1 a moment before. Pods that fail to start or die are replaced
//! after a restart backoff that doubles from [`RESTART_BACKOFF_MIN`] to [`RESTART_BACKOFF_MAX`]
//! and resets once a pod has stayed ready for [`STABLE_AFTER`].

use std::collections::BTreeMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::process::{Child, Command};
use tokio::sync::Notify;
use tokio::time::{Instant, sleep, sleep_until};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, info, info_span, warn};

use super::PodSink;
use super::logs::{LogFormat, PodLogs, SERVING_CONTAINER, Stream};
use super::output::for_each_line;
use super::pod_dir::{PodBase, PodDir};
use super::probe::probe_with;
use super::spec::{AGGRESSIVE_PERIOD, EnvValue, PodMount, PodSpec, Readiness, ReadinessProbe};
use super::usage::group_usage;
use crate::revision::queue::PodId;

/// Delay before the first restart after a failure.
pub const RESTART_BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Longest delay between restarts of a failing revision.
pub const RESTART_BACKOFF_MAX: Duration = Duration::from_secs(10);
/// A pod ready for this long resets the failure count (and so the backoff).
pub const STABLE_AFTER: Duration = Duration::from_secs(10);
/// How often a draining pod's in-flight count is checked.
const DRAIN_POLL: Duration = Duration::from_millis(15);
/// Pods spawned per reconcile step before the task yields (spawning blocks the thread briefly).
const START_BATCH: u32 = 16;
/// How often resident memory is compared with `limits.memory`.
const MEMORY_CHECK: Duration = Duration::from_secs(1);
/// Bound on waiting for a process to disappear after SIGKILL, and for output tasks at shutdown.
const KILL_WAIT: Duration = Duration::from_secs(5);

/// Where the pods' stdout and stderr go.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PodOutput {
    /// To the gateway's stderr as the pod wrote it, prefixed with the pod (see
    /// [`super::logs`]), and into the pod's log ring.
    #[default]
    Log,
    /// Nowhere (e.g. benchmarks).
    Discard,
}

/// Owns every pod process of the gateway.
pub struct LocalRuntime {
    output: PodOutput,
    /// Pods' recent lines (and their echo on stderr).
    logs: Arc<PodLogs>,
    /// Where pods' volumes are written (made when the first pod with volumes starts); the
    /// error when it could not be made.
    pod_base: SharedPodBase,
    next_pod: Arc<AtomicU64>,
    registry: Mutex<Registry>,
    tasks: TaskTracker,
    /// Cancelled when the shutdown grace ran out: pods are killed without draining.
    force: CancellationToken,
}

/// The pods of one revision.
///
/// Dropping the handle scales the revision to zero in the background; [`stop`](Self::stop) does
/// the same and waits.
pub struct RevisionPods {
    revision: Arc<Revision>,
}

/// A revision's pods as counted now.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodsStatus {
    /// The scale asked for by the last [`RevisionPods::scale`] (0 once stopped).
    pub desired: u32,
    /// Processes running, not ready yet (or no longer passing periodic readiness probes).
    pub starting: u32,
    /// Pods receiving work.
    pub ready: u32,
    /// Pods on their way out: draining, terminating, or not-ready pods being stopped.
    pub draining: u32,
    /// Failed starts and unexpected exits since a pod last stayed ready for [`STABLE_AFTER`].
    pub failures: u32,
    /// The latest failure, kept after a recovery (then `failures` is 0).
    pub last_error: Option<String>,
}

/// One pod as [`RevisionPods::pod_states`] reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PodState {
    pub id: PodId,
    /// The serving container's process id, which is also its process group id.
    pub pid: Option<u32>,
    /// Passing its readiness probe.
    pub ready: bool,
    pub started: Instant,
    /// When it last turned ready or not ready.
    pub ready_changed: Instant,
}

#[derive(Default)]
struct Registry {
    closed: bool,
    revisions: Vec<Weak<Revision>>,
}

struct Revision {
    /// `namespace/revision`, for logs.
    name: String,
    logs: Arc<PodLogs>,
    pod_base: SharedPodBase,
    spec: PodSpec,
    /// The spec failed validation: nothing is started.
    invalid: bool,
    sink: Arc<dyn PodSink>,
    output: PodOutput,
    next_pod: Arc<AtomicU64>,
    tasks: TaskTracker,
    force: CancellationToken,
    state: Mutex<State>,
    /// Wakes the reconcile task: desired scale changed, a pod went away.
    wake: Notify,
    /// Cancelled when the reconcile task ended (closed and every pod gone).
    finished: CancellationToken,
}

#[derive(Default)]
struct State {
    desired: u32,
    closed: bool,
    pods: BTreeMap<PodId, Pod>,
    failures: u32,
    last_error: Option<String>,
    /// No pod is started before this (restart backoff).
    retry_at: Option<Instant>,
}

struct Pod {
    phase: Phase,
    pid: Option<u32>,
    /// When its process was spawned.
    started: Instant,
    /// When it last turned ready or not ready (its start, until then).
    ready_changed: Instant,
    /// Cancelled when the pod is chosen for removal.
    stop: CancellationToken,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Starting,
    Ready,
    /// Was ready, failing periodic probes now.
    Unready,
    Stopping,
}

/// What the reconcile task does next.
enum Step {
    Start(u32),
    Wait(Option<Instant>),
    Finished,
}

/// How the starting phase of a pod ended.
enum Started {
    Ready,
    Exited(String),
    TimedOut(String),
    Stop,
}

/// How a pod's life ends.
enum End {
    /// A liveness probe failed or memory went above the limit: stop it, start another.
    Failed(String),
    /// The process exited on its own.
    Exited { status: String, was_ready: bool },
    /// The pod was removed; `sink_knows` when it had been reported ready.
    Stop { sink_knows: bool },
}

/// A spawned pod handed to its task: the serving container's process and the others.
struct Spawned {
    id: PodId,
    name: String,
    address: SocketAddr,
    pid: Option<u32>,
    child: Child,
    /// Other containers' processes.
    sidecars: Vec<Process>,
    stop: CancellationToken,
    /// Its volumes; removed with the pod.
    _dir: Option<PodDir>,
}

/// What [`Revision::spawn`] needs of one container.
struct ContainerRun<'a> {
    /// The pod's name and the container's, for the pod's log ring.
    pod: String,
    container: &'a str,
    /// The serving container: it gets `PORT`.
    serving: bool,
    command: &'a [String],
    args: &'a [String],
    env: &'a [(String, EnvValue)],
    working_dir: Option<&'a std::path::Path>,
    mounts: &'a [PodMount],
}

/// The runtime's pod directory, shared with its revisions and made once, on first need.
type SharedPodBase = Arc<std::sync::OnceLock<Result<PodBase, String>>>;

/// Where a pod's probes go: its address and its processes.
struct Target {
    address: SocketAddr,
    pid: Option<u32>,
    sidecars: Vec<Option<u32>>,
}

impl Target {
    fn of(pod: &Spawned) -> Self {
        Self {
            address: pod.address,
            pid: pod.pid,
            sidecars: pod.sidecars.iter().map(|p| p.pid).collect(),
        }
    }
}

/// One container's process beside the serving one.
struct Process {
    name: String,
    pid: Option<u32>,
    child: Child,
}

/// A probe of one container of a pod, and how it is going.
struct Gate<'a> {
    /// Container name, for messages.
    container: &'a str,
    /// `None`: the serving container.
    sidecar: Option<usize>,
    probe: &'a ReadinessProbe,
    kind: &'static str,
    next: Instant,
    /// Successes in a row (readiness, startup) or failures in a row (liveness).
    streak: u32,
    /// Failures in a row (startup).
    failures: u32,
    last_error: String,
}

impl LocalRuntime {
    pub fn new(output: PodOutput) -> Arc<Self> {
        Self::with_log_format(output, LogFormat::Text)
    }

    /// As [`new`](Self::new), echoing pods' lines on stderr in `format`.
    pub fn with_log_format(output: PodOutput, format: LogFormat) -> Arc<Self> {
        super::pod_dir::remove_stale();
        Arc::new(Self {
            output,
            logs: PodLogs::echoing(format),
            pod_base: SharedPodBase::default(),
            next_pod: Arc::new(AtomicU64::new(1)),
            registry: Mutex::new(Registry::default()),
            tasks: TaskTracker::new(),
            force: CancellationToken::new(),
        })
    }

    /// The pods' recent lines, for the admin API.
    pub fn logs(&self) -> Arc<PodLogs> {
        Arc::clone(&self.logs)
    }

    /// Registers a revision at scale 0 and starts its reconcile task. An invalid spec (see
    /// [`PodSpec::validate`]) never starts a pod and shows up in [`PodsStatus::last_error`].
    ///
    /// Must be called within a Tokio runtime.
    pub fn revision(
        self: &Arc<Self>,
        name: String,
        spec: PodSpec,
        sink: Arc<dyn PodSink>,
    ) -> Arc<RevisionPods> {
        let invalid = spec.validate().err();
        if let Some(error) = &invalid {
            warn!(revision = %name, %error, "Invalid pod spec; no pod will start.");
        }
        let revision = Arc::new(Revision {
            name,
            logs: Arc::clone(&self.logs),
            pod_base: self.pod_base.clone(),
            spec,
            invalid: invalid.is_some(),
            sink,
            output: self.output,
            next_pod: self.next_pod.clone(),
            tasks: self.tasks.clone(),
            force: self.force.clone(),
            state: Mutex::new(State {
                last_error: invalid.map(|e| format!("invalid pod spec: {e}")),
                ..State::default()
            }),
            wake: Notify::new(),
            finished: CancellationToken::new(),
        });
        {
            let mut registry = lock(&self.registry);
            registry.revisions.retain(|r| r.strong_count() > 0);
            registry.revisions.push(Arc::downgrade(&revision));
            if registry.closed {
                revision.state().closed = true;
            }
        }
        let span = info_span!("reconcile", revision = %revision.name);
        self.tasks
            .spawn(Revision::reconcile(revision.clone()).instrument(span));
        Arc::new(RevisionPods { revision })
    }

    /// Drains and stops every pod of every revision. Pods still running after `grace` are
    /// killed. Revisions registered afterwards never start a pod.
    pub async fn shutdown(&self, grace: Duration) {
        let revisions: Vec<Arc<Revision>> = {
            let mut registry = lock(&self.registry);
            registry.closed = true;
            registry
                .revisions
                .iter()
                .filter_map(Weak::upgrade)
                .collect()
        };
        for revision in &revisions {
            revision.close();
        }
        let all_stopped =
            futures::future::join_all(revisions.iter().map(|r| r.finished.cancelled()));
        if tokio::time::timeout(grace, all_stopped).await.is_err() {
            warn!(
                ?grace,
                "Pods still running after the shutdown grace; killing them."
            );
            self.force.cancel();
        }
        self.tasks.close();
        if tokio::time::timeout(KILL_WAIT, self.tasks.wait())
            .await
            .is_err()
        {
            warn!("Some pod tasks did not finish after SIGKILL.");
        }
        if let Some(Ok(base)) = self.pod_base.get() {
            base.remove();
        }
    }
}

impl RevisionPods {
    /// `namespace/revision`.
    pub fn name(&self) -> &str {
        &self.revision.name
    }

    /// Asks for `desired` pods; returns at once, the reconcile task converges. Ignored once the
    /// revision is stopped.
    pub fn scale(&self, desired: u32) {
        let changed = {
            let mut state = self.revision.state();
            let changed = !state.closed && state.desired != desired;
            if changed {
                state.desired = desired;
            }
            changed
        };
        if changed {
            self.revision.wake.notify_one();
        }
    }

    pub fn status(&self) -> PodsStatus {
        let state = self.revision.state();
        let mut status = PodsStatus {
            desired: state.desired,
            failures: state.failures,
            last_error: state.last_error.clone(),
            ..PodsStatus::default()
        };
        for pod in state.pods.values() {
            match pod.phase {
                Phase::Starting | Phase::Unready => status.starting += 1,
                Phase::Ready => status.ready += 1,
                Phase::Stopping => status.draining += 1,
            }
        }
        status
    }

    /// Process ids of the running pods (each is also its process group id).
    pub fn pids(&self) -> Vec<(PodId, u32)> {
        let state = self.revision.state();
        state
            .pods
            .iter()
            .filter_map(|(id, pod)| Some((*id, pod.pid?)))
            .collect()
    }

    /// Every running pod: whether it is ready, since when, and its process group (what the HPA
    /// class samples).
    pub fn pod_states(&self) -> Vec<PodState> {
        let state = self.revision.state();
        state
            .pods
            .iter()
            .filter(|(_, pod)| pod.phase != Phase::Stopping)
            .map(|(id, pod)| PodState {
                id: *id,
                pid: pod.pid,
                ready: pod.phase == Phase::Ready,
                started: pod.started,
                ready_changed: pod.ready_changed,
            })
            .collect()
    }

    /// Scales to zero for good and waits until every process exited.
    pub async fn stop(&self) {
        self.revision.close();
        self.revision.finished.cancelled().await;
    }
}

impl Drop for RevisionPods {
    fn drop(&mut self) {
        self.revision.close();
    }
}

impl Revision {
    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    fn close(&self) {
        {
            let mut state = self.state();
            state.closed = true;
            state.desired = 0;
        }
        self.wake.notify_one();
    }

    /// Converges the pods to the desired scale until the revision is closed and empty.
    async fn reconcile(self: Arc<Self>) {
        loop {
            let step = self.plan(Instant::now());
            match step {
                Step::Finished => break,
                Step::Start(count) => {
                    for _ in 0..count.min(START_BATCH) {
                        if let Err(error) = self.start_pod() {
                            warn!(revision = %self.name, %error, "Pod failed to start.");
                            self.record_failure(error);
                            break;
                        }
                    }
                    tokio::task::yield_now().await;
                }
                Step::Wait(until) => {
                    tokio::select! {
                        () = self.wake.notified() => {}
                        () = sleep_until_some(until) => {}
                    }
                }
            }
        }
        self.finished.cancel();
    }

    /// Compares actual with desired; marks pods to remove and tells them to stop.
    fn plan(&self, now: Instant) -> Step {
        let mut state = self.state();
        if state.closed && state.pods.is_empty() {
            return Step::Finished;
        }
        let target = if state.closed { 0 } else { state.desired };
        let live = state
            .pods
            .values()
            .filter(|p| p.phase != Phase::Stopping)
            .count();
        let target = usize::try_from(target).unwrap_or(usize::MAX);
        if live > target {
            // Not-yet-ready pods first, then the newest ready ones.
            let mut victims: Vec<(bool, PodId)> = state
                .pods
                .iter()
                .filter(|(_, p)| p.phase != Phase::Stopping)
                .map(|(id, p)| (p.phase == Phase::Ready, *id))
                .collect();
            victims.sort_by_key(|&(ready, id)| (ready, std::cmp::Reverse(id)));
            for (_, id) in victims.into_iter().take(live - target) {
                if let Some(pod) = state.pods.get_mut(&id) {
                    pod.phase = Phase::Stopping;
                    pod.stop.cancel();
                }
            }
            return Step::Wait(None);
        }
        if live < target && !self.invalid {
            if let Some(at) = state.retry_at
                && at > now
            {
                return Step::Wait(Some(at));
            }
            return Step::Start(u32::try_from(target - live).unwrap_or(u32::MAX));
        }
        Step::Wait(None)
    }

    fn record_failure(&self, error: String) {
        let mut state = self.state();
        state.failures = state.failures.saturating_add(1);
        state.last_error = Some(error);
        state.retry_at = Some(Instant::now() + restart_backoff(state.failures));
    }

    /// Spawns one pod's processes and its task.
    fn start_pod(self: &Arc<Self>) -> Result<(), String> {
        let port = free_port().map_err(|e| format!("no free port on 127.0.0.1: {e}"))?;
        let id = self.next_pod.fetch_add(1, Ordering::Relaxed);
        let name = format!("{}/pod-{id}", self.name);
        let spec = &self.spec;
        let needs_dir = !spec.volumes.is_empty();
        let dir = if needs_dir {
            let unique = format!("pod-{id}");
            let base = self
                .pod_base
                .get_or_init(|| {
                    PodBase::create()
                        .map_err(|e| format!("cannot create a directory for pods' volumes: {e}"))
                })
                .as_ref()
                .map_err(Clone::clone)?;
            Some(
                PodDir::create(base, &unique, &spec.volumes)
                    .map_err(|e| format!("cannot write the pod's volumes: {e}"))?,
            )
        } else {
            None
        };
        let uid = uuid::Uuid::new_v4().to_string();
        let pod_name = self.pod_name(id);
        let container = ContainerRun {
            pod: pod_name.clone(),
            container: SERVING_CONTAINER,
            serving: true,
            command: &spec.command,
            args: &spec.args,
            env: &spec.env,
            working_dir: spec.working_dir.as_deref(),
            mounts: &spec.mounts,
        };
        let mut child = self.spawn(&container, port, &pod_name, &uid, dir.as_ref())?;
        let pid = child.id();
        let mut sidecars = Vec::with_capacity(spec.sidecars.len());
        for sidecar in &spec.sidecars {
            let run = ContainerRun {
                pod: pod_name.clone(),
                container: &sidecar.name,
                serving: false,
                command: &sidecar.command,
                args: &sidecar.args,
                env: &sidecar.env,
                working_dir: sidecar.working_dir.as_deref(),
                mounts: &sidecar.mounts,
            };
            match self.spawn(&run, port, &pod_name, &uid, dir.as_ref()) {
                Ok(process) => sidecars.push(Process {
                    name: sidecar.name.clone(),
                    pid: process.id(),
                    child: process,
                }),
                Err(error) => {
                    signal_group(pid, Signal::SIGKILL);
                    let _ = child.start_kill();
                    for other in &mut sidecars {
                        signal_group(other.pid, Signal::SIGKILL);
                        let _ = other.child.start_kill();
                    }
                    return Err(format!("container {}: {error}", sidecar.name));
                }
            }
        }
        info!(pod = %name, pid, port, containers = 1 + sidecars.len(), "Pod started.");
        let stop = CancellationToken::new();
        self.state().pods.insert(
            id,
            Pod {
                phase: Phase::Starting,
                pid,
                started: Instant::now(),
                ready_changed: Instant::now(),
                stop: stop.clone(),
            },
        );
        let spawned = Spawned {
            id,
            name,
            address: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
            pid,
            child,
            sidecars,
            stop,
            _dir: dir,
        };
        self.tasks.spawn(self.clone().run_pod(spawned));
        Ok(())
    }

    /// Spawns one container's process, its output forwarded to the log.
    fn spawn(
        &self,
        run: &ContainerRun<'_>,
        port: u16,
        pod_name: &str,
        uid: &str,
        dir: Option<&PodDir>,
    ) -> Result<Child, String> {
        // The environment in order, each `$(VAR)` expanded from those before it (Kubernetes'
        // rule); then `command` and `args` expanded from all of it.
        let mut env: Vec<(&str, String)> = Vec::with_capacity(run.env.len() + 1);
        if run.serving {
            env.push(("PORT", port.to_string()));
        }
        for (name, value) in run.env {
            let value = match value {
                EnvValue::Plain(value) => expand(value, &env),
                EnvValue::Secret(value) => value.clone(),
                EnvValue::PodName => pod_name.to_owned(),
                EnvValue::PodUid => uid.to_owned(),
            };
            env.push((name.as_str(), value));
        }
        if run.serving {
            // The pod's port always wins (validation rejects a `PORT` of the user's).
            env.push(("PORT", port.to_string()));
        }
        let mut argv: Vec<String> = run.command.iter().map(|a| expand(a, &env)).collect();
        let args: Vec<String> = run.args.iter().map(|a| expand(a, &env)).collect();
        let in_view = !run.mounts.is_empty();
        if in_view {
            let dir = dir.ok_or("the pod has mounts but no volumes")?;
            let mounts = dir.mount_args(run.mounts, &self.spec.volumes)?;
            let json = serde_json::to_string(&mounts).map_err(|e| e.to_string())?;
            // The launcher sets up the mounts (see commands/exec_pod.rs).
            if argv.get(1).map(String::as_str) != Some("exec-pod") {
                return Err(
                    "mounting volumes needs tidegate's own executable as the pod launcher, \
                     which was not found"
                        .into(),
                );
            }
            argv.splice(2..2, ["--mounts".to_owned(), json]);
            if let Some(dir) = run.working_dir {
                // Looked up inside the pod's view, where its volumes are.
                argv.splice(2..2, ["--workdir".to_owned(), dir.display().to_string()]);
            }
        }
        let (program, leading) = argv.split_first().ok_or("spawn failed: command is empty")?;
        let output = match self.output {
            PodOutput::Log => Stdio::piped,
            PodOutput::Discard => Stdio::null,
        };
        let mut command = Command::new(program);
        command
            .args(leading)
            .args(&args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(output())
            .stderr(output())
            .process_group(0)
            .kill_on_drop(true);
        if let Some(dir) = dir {
            command.env("TIDEGATE_POD_DIR", dir.work());
        }
        if let Some(dir) = run.working_dir
            && !in_view
        {
            command.current_dir(dir);
        }
        let mut child = command.spawn().map_err(|e| format!("spawn failed: {e}"))?;
        for (stream, kind) in [
            (
                child
                    .stdout
                    .take()
                    .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
                Stream::Stdout,
            ),
            (
                child
                    .stderr
                    .take()
                    .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
                Stream::Stderr,
            ),
        ] {
            let Some(stream) = stream else { continue };
            let (logs, revision, pod, container) = (
                Arc::clone(&self.logs),
                self.name.clone(),
                run.pod.clone(),
                run.container.to_owned(),
            );
            self.tasks.spawn(for_each_line(stream, move |line| {
                logs.record(&revision, &pod, &container, kind, line);
            }));
        }
        Ok(child)
    }

    /// A pod's name, `{revision}-{id}`, as `/api/v1/revisions` and the downward API's
    /// `metadata.name` give it.
    fn pod_name(&self, id: PodId) -> String {
        format!("{}-{id}", self.name.rsplit('/').next().unwrap_or("pod"))
    }

    /// One pod's life: readiness, serving, removal or death, then `pod_gone`.
    async fn run_pod(self: Arc<Self>, mut pod: Spawned) {
        let end = match self.until_ready(&mut pod).await {
            Started::Ready => self.serve(&mut pod).await,
            Started::Exited(status) => End::Exited {
                status,
                was_ready: false,
            },
            Started::TimedOut(error) => {
                warn!(pod = %pod.name, %error, "Pod did not become ready; stopping it.");
                self.record_failure(error);
                End::Stop { sink_knows: false }
            }
            Started::Stop => End::Stop { sink_knows: false },
        };
        match end {
            End::Exited { status, was_ready } => {
                let when = if was_ready { "after" } else { "before" };
                warn!(pod = %pod.name, %status, "Pod exited {when} becoming ready.");
                self.record_failure(format!("exited {when} becoming ready ({status})"));
            }
            End::Failed(reason) => {
                warn!(pod = %pod.name, %reason, "Pod failed; restarting it.");
                self.sink.pod_draining(pod.id);
                self.record_failure(reason);
                let status = self.terminate(&mut pod, false).await;
                info!(pod = %pod.name, %status, "Pod stopped.");
            }
            End::Stop { sink_knows } => {
                let status = self.terminate(&mut pod, sink_knows).await;
                info!(pod = %pod.name, %status, "Pod stopped.");
            }
        }
        // Leftovers of the process groups (children of a shell wrapper) go with the pod.
        signal_group(pod.pid, Signal::SIGKILL);
        for sidecar in &mut pod.sidecars {
            signal_group(sidecar.pid, Signal::SIGKILL);
            let _ = sidecar.child.start_kill();
            let _ = tokio::time::timeout(KILL_WAIT, sidecar.child.wait()).await;
        }
        self.sink.pod_gone(pod.id);
        self.state().pods.remove(&pod.id);
        self.logs.pod_gone(&self.name, &self.pod_name(pod.id));
        self.wake.notify_one();
    }

    /// The probes of one kind of every container that has one (`readiness` always includes
    /// the serving container's).
    fn gates(&self, kind: &'static str, now: Instant) -> Vec<Gate<'_>> {
        let spec = &self.spec;
        let serving = match kind {
            "startup" => spec.startup.as_ref(),
            "liveness" => spec.liveness.as_ref(),
            _ => Some(&spec.readiness),
        };
        let mut gates: Vec<Gate<'_>> = serving
            .map(|probe| (None, "serving container", probe))
            .into_iter()
            .chain(spec.sidecars.iter().enumerate().filter_map(|(i, s)| {
                let probe = match kind {
                    "startup" => s.startup.as_ref(),
                    "liveness" => s.liveness.as_ref(),
                    _ => s.readiness.as_ref(),
                }?;
                Some((Some(i), s.name.as_str(), probe))
            }))
            .map(|(sidecar, container, probe)| Gate {
                container,
                sidecar,
                probe,
                kind,
                next: now + probe.initial_delay,
                streak: 0,
                failures: 0,
                last_error: String::from("not probed yet"),
            })
            .collect();
        gates.sort_by_key(|g| g.next);
        gates
    }

    /// One attempt of `probe` (of the serving container, or of sidecar `sidecar`) against
    /// `pod`.
    async fn attempt(
        &self,
        pod: &Target,
        probe: &ReadinessProbe,
        sidecar: Option<usize>,
    ) -> Result<(), String> {
        let address = SocketAddr::from((
            Ipv4Addr::LOCALHOST,
            probe.port.unwrap_or_else(|| pod.address.port()),
        ));
        let Readiness::Exec { command } = &probe.check else {
            return probe_with(&probe.check, address, probe.timeout, &probe.headers).await;
        };
        let (env, dir, mounts, pid) = match sidecar {
            None => (
                &self.spec.env,
                self.spec.working_dir.as_deref(),
                !self.spec.mounts.is_empty(),
                pod.pid,
            ),
            Some(i) => {
                let s = &self.spec.sidecars[i];
                (
                    &s.env,
                    s.working_dir.as_deref(),
                    !s.mounts.is_empty(),
                    pod.sidecars.get(i).copied().flatten(),
                )
            }
        };
        let mut argv = command.clone();
        let mut in_view = false;
        // A container with volumes is probed in its own file system view.
        if mounts && let (Some(pid), Some(exe)) = (pid, self.launcher()) {
            // exec-pod enters the pod's root last: until then the view is not complete.
            let root = format!("/proc/{pid}/root");
            let ready_by = Instant::now() + probe.timeout;
            while std::fs::read_link(&root).is_ok_and(|r| r == std::path::Path::new("/"))
                && Instant::now() < ready_by
            {
                sleep(Duration::from_millis(10)).await;
            }
            argv.splice(
                0..0,
                [
                    exe,
                    "exec-pod".into(),
                    "--enter".into(),
                    pid.to_string(),
                    "--".into(),
                ],
            );
            if let Some(dir) = dir {
                argv.splice(2..2, ["--workdir".to_owned(), dir.display().to_string()]);
            }
            in_view = true;
        }
        let (program, rest) = argv.split_first().ok_or("exec probe without a command")?;
        let mut cmd = Command::new(program);
        cmd.args(rest)
            .envs(env.iter().filter_map(|(k, v)| match v {
                EnvValue::Plain(value) | EnvValue::Secret(value) => Some((k, value)),
                _ => None,
            }))
            .env("PORT", pod.address.port().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .kill_on_drop(true);
        if let Some(dir) = dir
            && !in_view
        {
            cmd.current_dir(dir);
        }
        let mut child = cmd.spawn().map_err(|e| format!("exec {program}: {e}"))?;
        let probe_pid = child.id();
        match tokio::time::timeout(probe.timeout, child.wait()).await {
            Ok(Ok(status)) if status.success() => Ok(()),
            Ok(Ok(status)) => Err(format!("exec {program}: {status}")),
            Ok(Err(error)) => Err(format!("exec {program}: {error}")),
            Err(_) => {
                signal_group(probe_pid, Signal::SIGKILL);
                Err(format!(
                    "exec {program}: no exit within {:?}",
                    probe.timeout
                ))
            }
        }
    }

    /// The attempt of whichever of `gates` is due first, waiting until it is due; `None` when
    /// there are no gates. The future borrows only `self` and `target`, so the gates may change
    /// while it runs.
    fn due_attempt<'a>(
        &'a self,
        gates: &[Gate<'a>],
        target: &'a Target,
    ) -> Option<(usize, ProbeFuture<'a>)> {
        let index = (0..gates.len()).min_by_key(|&i| gates[i].next)?;
        let (at, probe, sidecar) = (gates[index].next, gates[index].probe, gates[index].sidecar);
        Some((
            index,
            Box::pin(async move {
                sleep_until(at).await;
                self.attempt(target, probe, sidecar).await
            }),
        ))
    }

    /// The gateway executable that launches pods, when pods are launched through it.
    fn launcher(&self) -> Option<String> {
        (self.spec.command.get(1).map(String::as_str) == Some("exec-pod"))
            .then(|| self.spec.command[0].clone())
    }

    /// Probes until ready (startup probes first, then every readiness probe); also ends when a
    /// process exits, the pod is removed or time is up.
    async fn until_ready(&self, pod: &mut Spawned) -> Started {
        let deadline = Instant::now() + self.spec.start_timeout;
        let target = Target::of(pod);
        for kind in ["startup", "readiness"] {
            let mut gates = self.gates(kind, Instant::now());
            while let Some((index, attempt)) = self.due_attempt(&gates, &target) {
                let result = tokio::select! {
                    biased;
                    () = pod.stop.cancelled() => return Started::Stop,
                    () = self.force.cancelled() => return Started::Stop,
                    status = exited(&mut pod.child, &mut pod.sidecars) => return Started::Exited(status),
                    () = sleep_until(deadline) => {
                        let last = gates.first().map(|g| format!("{} probe of {}: {}", g.kind, g.container, g.last_error)).unwrap_or_default();
                        return Started::TimedOut(format!(
                            "not ready within {:?} (last {last})",
                            self.spec.start_timeout
                        ));
                    }
                    result = attempt => result,
                };
                let gate = &mut gates[index];
                let period = match (gate.kind, gate.probe.period) {
                    ("readiness", period) => period.unwrap_or(AGGRESSIVE_PERIOD),
                    (_, period) => period.unwrap_or(Duration::from_secs(10)),
                };
                gate.next = Instant::now() + period;
                match result {
                    Ok(()) => {
                        gate.streak += 1;
                        gate.failures = 0;
                    }
                    Err(error) => {
                        gate.streak = 0;
                        gate.failures += 1;
                        if gate.kind == "startup" && gate.failures >= gate.probe.failure_threshold {
                            return Started::TimedOut(format!(
                                "startup probe of {} failed {} times in a row: {error}",
                                gate.container, gate.failures
                            ));
                        }
                        gate.last_error = error;
                    }
                }
                if gate.streak >= gate.probe.success_threshold {
                    gates.remove(index);
                }
            }
        }
        Started::Ready
    }

    /// Reports the pod ready and watches it until it exits, fails a liveness probe, exceeds
    /// its memory limit, or is removed.
    async fn serve(&self, pod: &mut Spawned) -> End {
        {
            let mut state = self.state();
            if pod.stop.is_cancelled() {
                return End::Stop { sink_knows: false };
            }
            if let Some(p) = state.pods.get_mut(&pod.id) {
                p.phase = Phase::Ready;
                p.ready_changed = Instant::now();
            }
        }
        self.sink.pod_ready(pod.id, pod.address);
        info!(pod = %pod.name, address = %pod.address, "Pod ready.");
        let stable_at = Instant::now() + STABLE_AFTER;
        let mut stable = false;
        // Periodic readiness probes of every container (Knative's aggressive probe, period
        // zero, stops at the first success); the pod takes work while all of them pass.
        let mut readiness: Vec<Gate<'_>> = self
            .gates("readiness", Instant::now())
            .into_iter()
            .filter(|g| g.probe.period.is_some())
            .collect();
        for gate in &mut readiness {
            gate.next = Instant::now() + gate.probe.period.unwrap_or_default();
        }
        let mut passing = vec![true; readiness.len()];
        let mut ready = true;
        let address = pod.address;
        let mut liveness = self.gates("liveness", Instant::now());
        let target = Target::of(pod);
        let limits = self.memory_limits();
        let mut memory_check = tokio::time::interval(MEMORY_CHECK);
        memory_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // A probe in progress is kept across loop turns, so other events (a memory check,
        // the other probe) never cancel it.
        let mut attempt: Option<(usize, ProbeFuture<'_>)> = None;
        let mut live_attempt: Option<(usize, ProbeFuture<'_>)> = None;
        loop {
            if attempt.is_none() {
                attempt = self.due_attempt(&readiness, &target);
            }
            if live_attempt.is_none() {
                live_attempt = self.due_attempt(&liveness, &target);
            }
            let live_index = live_attempt.as_ref().map(|(i, _)| *i);
            tokio::select! {
                biased;
                () = pod.stop.cancelled() => return End::Stop { sink_knows: true },
                () = self.force.cancelled() => return End::Stop { sink_knows: true },
                status = exited(&mut pod.child, &mut pod.sidecars) => {
                    return End::Exited { status, was_ready: true };
                }
                () = sleep_until(stable_at), if !stable => {
                    stable = true;
                    let mut state = self.state();
                    state.failures = 0;
                    state.retry_at = None;
                }
                _ = memory_check.tick(), if !limits.is_empty() => {
                    if let Some(reason) = over_memory(pod, &limits) {
                        return End::Failed(reason);
                    }
                }
                result = running(live_attempt.as_mut().map(|(_, f)| f)) => {
                    live_attempt = None;
                    let Some(i) = live_index else { continue };
                    let gate = &mut liveness[i];
                    gate.next = Instant::now() + gate.probe.period.unwrap_or(Duration::from_secs(10));
                    match result {
                        Ok(()) => gate.streak = 0,
                        Err(error) => {
                            gate.streak += 1;
                            if gate.streak >= gate.probe.failure_threshold {
                                return End::Failed(format!(
                                    "liveness probe of {} failed {} times in a row: {error}",
                                    gate.container, gate.streak
                                ));
                            }
                        }
                    }
                }
                result = running(attempt.as_mut().map(|(_, f)| f)) => {
                    let Some((i, _)) = attempt.take() else { continue };
                    let gate = &mut readiness[i];
                    gate.next = Instant::now() + gate.probe.period.unwrap_or_default();
                    // `streak` counts results that disagree with the gate's current state.
                    gate.streak = if result.is_ok() != passing[i] { gate.streak + 1 } else { 0 };
                    if passing[i] && gate.streak >= gate.probe.failure_threshold {
                        passing[i] = false;
                        gate.streak = 0;
                        gate.last_error = result.err().unwrap_or_default();
                    } else if !passing[i] && gate.streak >= gate.probe.success_threshold {
                        passing[i] = true;
                        gate.streak = 0;
                    }
                    let all = passing.iter().all(|p| *p);
                    if ready && !all {
                        ready = false;
                        self.set_phase(pod.id, Phase::Unready);
                        self.sink.pod_draining(pod.id);
                        let (container, error) = (gate.container, &gate.last_error);
                        warn!(pod = %pod.name, container, %error, "Pod failed a readiness probe; no new work for it.");
                    } else if !ready && all {
                        ready = true;
                        self.set_phase(pod.id, Phase::Ready);
                        self.sink.pod_ready(pod.id, address);
                        info!(pod = %pod.name, "Pod ready again.");
                    }
                }
            }
        }
    }

    /// (container, index of the sidecar or `None` for the serving one, limit in bytes).
    fn memory_limits(&self) -> Vec<(String, Option<usize>, u64)> {
        let spec = &self.spec;
        spec.memory_limit
            .map(|limit| ("serving container".to_owned(), None, limit))
            .into_iter()
            .chain(
                spec.sidecars
                    .iter()
                    .enumerate()
                    .filter_map(|(i, s)| Some((s.name.clone(), Some(i), s.memory_limit?))),
            )
            .collect()
    }

    /// Sets a pod's phase unless it is being removed.
    fn set_phase(&self, id: PodId, phase: Phase) {
        if let Some(pod) = self.state().pods.get_mut(&id)
            && pod.phase != Phase::Stopping
        {
            if (pod.phase == Phase::Ready) != (phase == Phase::Ready) {
                pod.ready_changed = Instant::now();
            }
            pod.phase = phase;
        }
    }

    /// Drains (when the sink knows the pod), then SIGTERM, then SIGKILL after the grace.
    /// Returns how the process ended.
    async fn terminate(&self, pod: &mut Spawned, sink_knows: bool) -> String {
        if sink_knows {
            self.sink.pod_draining(pod.id);
            let deadline = Instant::now() + self.spec.drain_timeout;
            loop {
                let in_flight = self.sink.pod_in_flight(pod.id);
                if in_flight == 0 || self.force.is_cancelled() {
                    break;
                }
                if Instant::now() >= deadline {
                    warn!(pod = %pod.name, in_flight, "Drain timed out; stopping the pod with requests in flight.");
                    break;
                }
                tokio::select! {
                    status = pod.child.wait() => {
                        // The serving container is gone; the others still get their SIGTERM.
                        let status = describe(status);
                        self.stop_sidecars(pod, Instant::now() + self.spec.termination_grace).await;
                        return status;
                    }
                    () = sleep(DRAIN_POLL) => {}
                }
            }
        }
        if !self.force.is_cancelled() {
            // One grace period for every container of the pod.
            let deadline = Instant::now() + self.spec.termination_grace;
            signal_group(pod.pid, Signal::SIGTERM);
            for sidecar in &pod.sidecars {
                signal_group(sidecar.pid, Signal::SIGTERM);
            }
            tokio::select! {
                status = pod.child.wait() => {
                    let status = describe(status);
                    self.stop_sidecars(pod, deadline).await;
                    return status;
                }
                () = sleep_until(deadline) => {
                    warn!(pod = %pod.name, grace = ?self.spec.termination_grace, "Pod ignored SIGTERM; killing it.");
                }
                () = self.force.cancelled() => {}
            }
        }
        signal_group(pod.pid, Signal::SIGKILL);
        if let Err(error) = pod.child.start_kill() {
            warn!(pod = %pod.name, %error, "Could not kill the pod.");
        }
        match tokio::time::timeout(KILL_WAIT, pod.child.wait()).await {
            Ok(status) => describe(status),
            Err(_) => format!("still running {KILL_WAIT:?} after SIGKILL"),
        }
    }
}

impl Revision {
    /// SIGTERM to every sidecar, then up to `deadline` for them to exit (the caller kills the
    /// rest).
    async fn stop_sidecars(&self, pod: &mut Spawned, deadline: Instant) {
        for sidecar in &pod.sidecars {
            signal_group(sidecar.pid, Signal::SIGTERM);
        }
        let all = async {
            for sidecar in &mut pod.sidecars {
                let _ = sidecar.child.wait().await;
            }
        };
        tokio::select! {
            () = all => {}
            () = sleep_until(deadline) => {}
            () = self.force.cancelled() => {}
        }
    }
}

/// Kubernetes' `$(VAR)` expansion: `$(NAME)` becomes the value of the last `NAME` in `env`
/// (left as written when there is none), `$$` is a literal `$`.
fn expand(text: &str, env: &[(&str, String)]) -> String {
    if !text.contains('$') {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let tail = &rest[at + 1..];
        if let Some(after) = tail.strip_prefix('$') {
            out.push('$');
            rest = after;
        } else if let Some(inner) = tail.strip_prefix('(')
            && let Some(end) = inner.find(')')
        {
            let name = &inner[..end];
            match env.iter().rev().find(|(k, _)| *k == name) {
                Some((_, value)) => out.push_str(value),
                None => {
                    out.push_str("$(");
                    out.push_str(name);
                    out.push(')');
                }
            }
            rest = &inner[end + 1..];
        } else {
            out.push('$');
            rest = tail;
        }
    }
    out.push_str(rest);
    out
}

/// A probe attempt in progress.
type ProbeFuture<'a> = std::pin::Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>>;

/// The probe's result once it finishes; never, when there is none.
async fn running(probe: Option<&mut ProbeFuture<'_>>) -> Result<(), String> {
    match probe {
        Some(probe) => probe.await,
        None => std::future::pending().await,
    }
}

/// Waits until any of the pod's processes exits; says which and how.
async fn exited(child: &mut Child, sidecars: &mut [Process]) -> String {
    if sidecars.is_empty() {
        return describe(child.wait().await);
    }
    let serving = async { format!("serving container: {}", describe(child.wait().await)) };
    let others = futures::future::select_all(sidecars.iter_mut().map(|p| {
        Box::pin(async move {
            let status = p.child.wait().await;
            format!("container {}: {}", p.name, describe(status))
        })
    }));
    tokio::select! {
        status = serving => status,
        (status, _, _) = others => status,
    }
}

/// The first container above its `limits.memory`, as Kubernetes' OOM kill reports it.
fn over_memory(pod: &Spawned, limits: &[(String, Option<usize>, u64)]) -> Option<String> {
    let groups: Vec<Option<u32>> = limits
        .iter()
        .map(|(_, sidecar, _)| match sidecar {
            None => pod.pid,
            Some(i) => pod.sidecars.get(*i).and_then(|p| p.pid),
        })
        .collect();
    // One pass over /proc for every limited container of the pod.
    let usage = group_usage(&groups.iter().flatten().copied().collect::<Vec<_>>());
    for ((name, _, limit), group) in limits.iter().zip(&groups) {
        let Some(rss) = group.and_then(|g| usage.get(&g).map(|u| u.resident_bytes)) else {
            continue;
        };
        if rss > *limit {
            return Some(format!(
                "OOMKilled: {name} used {} MiB of resident memory, above its limits.memory of {} \
                 MiB",
                rss >> 20,
                limit >> 20
            ));
        }
    }
    None
}

/// Doubles from the minimum with each consecutive failure (`failures` ≥ 1), up to the maximum.
fn restart_backoff(failures: u32) -> Duration {
    let factor = 1u32
        .checked_shl(failures.saturating_sub(1))
        .unwrap_or(u32::MAX);
    RESTART_BACKOFF_MIN
        .saturating_mul(factor)
        .min(RESTART_BACKOFF_MAX)
}

/// A port the kernel considers free on 127.0.0.1 right now.
fn free_port() -> io::Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?.port())
}

/// Signals the process group led by `pid`; a group that is already gone is fine.
fn signal_group(pid: Option<u32>, signal: Signal) {
    let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()).filter(|&p| p > 1) else {
        return;
    };
    match killpg(Pid::from_raw(pid), signal) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
        Err(error) => warn!(pid, %signal, %error, "Could not signal a pod's process group."),
    }
}

fn describe(status: io::Result<ExitStatus>) -> String {
    match status {
        // `exec-pod` exits 126 when it cannot set up the pod's volumes (as shells do for a
        // program that cannot be executed).
        Ok(status) if status.code() == Some(126) => format!(
            "{status}: the program could not be run, or the pod's volumes could not be set up \
             (private mount namespaces not permitted, or a mount failed); the pod's log says \
             which"
        ),
        Ok(status) => status.to_string(),
        Err(error) => format!("wait failed: {error}"),
    }
}

async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
#[path = "local_tests.rs"]
mod tests;
