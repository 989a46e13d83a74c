//! Starts what runs a revision: its pods (local process runtime) and its autoscaler task, and
//! connects them to the revision's exact counts.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio_util::sync::CancellationToken;
use triggers::snapshot::{PodField, VolumeSource};
use triggers::{ProbeAction, RevisionTemplate, ScalingClass, ScalingMetric, ServiceConfig};

use crate::actuator::{
    CpuClock, EnvValue, LocalRuntime, PodMount, PodSink, PodSpec, PodVolume, PodVolumeSource,
    Readiness, ReadinessProbe, RevisionPods, Sidecar,
};
use crate::autoscaler::hpa::PodSample;
use crate::autoscaler::task::{DemandSource, Scaler};
use crate::autoscaler::{self, Class, Demand, Metric, Policy};
use crate::revision::Revision;
use crate::revision::queue::PodId;
use crate::revision::registry::{PodUsage, RevisionLauncher, RunningRevision};

/// Launches revisions as local processes.
pub struct LocalLauncher {
    pub runtime: Arc<LocalRuntime>,
    /// The gateway's own executable: a container command `tidegate` runs it.
    pub self_exe: Option<PathBuf>,
}

impl RevisionLauncher for LocalLauncher {
    fn start(&self, revision: &Arc<Revision>, service: &ServiceConfig) -> Box<dyn RunningRevision> {
        let template = &service.template;
        let mut spec = self.pod_spec(template);
        // Knative's runtime contract.
        let contract = [
            (
                "K_SERVICE".to_owned(),
                EnvValue::Plain(service.name.clone()),
            ),
            (
                "K_CONFIGURATION".to_owned(),
                EnvValue::Plain(service.name.clone()),
            ),
            (
                "K_REVISION".to_owned(),
                EnvValue::Plain(revision.name.clone()),
            ),
        ];
        spec.env.extend(contract.iter().cloned());
        for sidecar in &mut spec.sidecars {
            sidecar.env.extend(contract.iter().cloned());
        }
        let policy = policy(template);
        // Reserved instances: the same pod with their own resources, in a pod set of their own.
        let regular_pods = Arc::new(std::sync::OnceLock::new());
        let reserved = (policy.reserved_instances > 0).then(|| {
            let mut reserved_spec = spec.clone();
            if let Some(memory) = template
                .scaling
                .reserved_instance_resources
                .as_ref()
                .and_then(|r| r.limits_memory)
            {
                reserved_spec.memory_limit = Some(memory);
            }
            let limit = template
                .scaling
                .reserved_instance_concurrency
                .unwrap_or(template.container_concurrency);
            self.runtime.revision(
                format!("{}/{}-reserved", revision.namespace, revision.name),
                reserved_spec,
                Arc::new(Sink {
                    revision: Arc::clone(revision),
                    role: Role::Reserved {
                        limit,
                        regular: Arc::clone(&regular_pods),
                    },
                }) as Arc<dyn PodSink>,
            )
        });
        let pods = self.runtime.revision(
            format!("{}/{}", revision.namespace, revision.name),
            spec,
            Arc::new(Sink {
                revision: Arc::clone(revision),
                role: Role::Regular(reserved.clone()),
            }) as Arc<dyn PodSink>,
        );
        let _ = regular_pods.set(Arc::clone(&pods));
        revision.set_wake_step(wake_step(&policy));
        let stop = CancellationToken::new();
        let scaler = Arc::new(PodScaler {
            revision: Arc::clone(revision),
            pods: Arc::clone(&pods),
            reserved: reserved
                .clone()
                .map(|pods| (pods, policy.reserved_instances)),
            activation: ActivationScale::new(template.scaling.activation_scale),
        });
        let usage = Arc::new(Mutex::new(Vec::new()));
        let source: Arc<dyn DemandSource> = match policy.class {
            Class::Hpa => Arc::new(HpaDemand {
                revision: RevisionDemand(Arc::clone(revision)),
                pods: Arc::clone(&pods),
                memory: policy.metric == Metric::Memory,
                full: match policy.metric {
                    Metric::Memory => policy.target,
                    _ => policy.cpu_request_millis.unwrap_or(policy.target),
                },
                clock: Mutex::new(CpuClock::default()),
                shown: Arc::clone(&usage),
            }),
            _ => Arc::new(RevisionDemand(Arc::clone(revision))),
        };
        tokio::spawn(autoscaler::task::run(
            policy,
            source,
            scaler as Arc<dyn Scaler>,
            Arc::clone(&revision.changed),
            stop.clone(),
        ));
        Box::new(Running {
            pods,
            reserved,
            reserved_resources: template
                .scaling
                .reserved_instance_resources
                .as_ref()
                .map(|r| r.written.clone())
                .unwrap_or_default(),
            stop,
            usage,
        })
    }
}

impl LocalLauncher {
    fn pod_spec(&self, template: &RevisionTemplate) -> PodSpec {
        let pod = &template.pod;
        let serving = pod.serving_container();
        let mut spec = PodSpec::new(self.command(&serving.command));
        spec.args = serving.args.clone();
        spec.env = env(&serving.env);
        spec.working_dir = serving.working_dir.as_ref().map(PathBuf::from);
        if let Some(probe) = &serving.readiness {
            spec.readiness = probe_spec(probe);
        }
        spec.liveness = serving.liveness.as_ref().map(probe_spec);
        spec.startup = serving.startup.as_ref().map(probe_spec);
        spec.mounts = mounts(&serving.mounts);
        spec.memory_limit = serving.resources.limits_memory;
        spec.sidecars = pod
            .containers
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != pod.serving)
            .map(|(_, c)| Sidecar {
                name: c.name.clone(),
                command: self.command(&c.command),
                args: c.args.clone(),
                env: env(&c.env),
                working_dir: c.working_dir.as_ref().map(PathBuf::from),
                readiness: c.readiness.as_ref().map(probe_spec),
                liveness: c.liveness.as_ref().map(probe_spec),
                startup: c.startup.as_ref().map(probe_spec),
                mounts: mounts(&c.mounts),
                memory_limit: c.resources.limits_memory,
            })
            .collect();
        spec.volumes = pod
            .volumes
            .iter()
            .filter_map(|v| {
                let source = match &v.source {
                    VolumeSource::Files(files) => PodVolumeSource::Files(
                        files
                            .iter()
                            .map(|f| (f.path.clone(), f.data.0.clone(), f.mode))
                            .collect(),
                    ),
                    VolumeSource::EmptyDir { .. } => PodVolumeSource::EmptyDir,
                    VolumeSource::HostPath(path) => PodVolumeSource::HostPath(PathBuf::from(path)),
                    // Mounting one is a blocker, reported by validation.
                    VolumeSource::Unavailable(_) => return None,
                };
                Some(PodVolume {
                    name: v.name.clone(),
                    source,
                })
            })
            .collect();
        spec.blocker = pod.local_blocker.clone();
        spec
    }

    /// A container's command as the local runtime starts it: `tidegate` is this executable,
    /// and every program runs through `exec-pod` so it dies with the gateway.
    fn command(&self, command: &[String]) -> Vec<String> {
        let mut command = command.to_vec();
        if let Some(exe) = &self.self_exe {
            let exe = exe.display().to_string();
            if command.first().is_some_and(|c| c == "tidegate") {
                command[0] = exe.clone();
            }
            // Every pod dies with the gateway, even on `kill -9` (see commands/exec_pod.rs).
            // A program that cannot be found is left unwrapped so its spawn error is reported.
            if command.first().is_some_and(|program| findable(program)) {
                let parent = std::process::id().to_string();
                let wrapper = [
                    exe,
                    "exec-pod".into(),
                    "--parent".into(),
                    parent,
                    "--".into(),
                ];
                command.splice(0..0, wrapper);
            }
        }
        command
    }
}

fn env(vars: &[triggers::EnvVar]) -> Vec<(String, EnvValue)> {
    vars.iter()
        .map(|var| {
            let value = match &var.value {
                triggers::EnvValue::Plain(value) => EnvValue::Plain(value.clone()),
                triggers::EnvValue::Secret(value) => EnvValue::Secret(value.0.clone()),
                triggers::EnvValue::PodField(PodField::Name) => EnvValue::PodName,
                triggers::EnvValue::PodField(PodField::Uid) => EnvValue::PodUid,
            };
            (var.name.clone(), value)
        })
        .collect()
}

fn mounts(mounts: &[triggers::VolumeMount]) -> Vec<PodMount> {
    mounts
        .iter()
        .map(|m| PodMount {
            volume: m.volume.clone(),
            target: m.mount_path.clone(),
            sub_path: m.sub_path.clone(),
            read_only: m.read_only,
        })
        .collect()
}

fn probe_spec(probe: &triggers::Probe) -> ReadinessProbe {
    let (check, port, headers) = match &probe.action {
        ProbeAction::HttpGet {
            path,
            port,
            headers,
        } => (
            Readiness::HttpGet { path: path.clone() },
            *port,
            headers.clone(),
        ),
        ProbeAction::TcpSocket { port } => (Readiness::TcpPort, *port, Vec::new()),
        ProbeAction::Exec { command } => (
            Readiness::Exec {
                command: command.clone(),
            },
            None,
            Vec::new(),
        ),
        ProbeAction::Grpc { port, service } => (
            Readiness::Grpc {
                service: service.clone(),
            },
            *port,
            Vec::new(),
        ),
    };
    ReadinessProbe {
        check,
        initial_delay: probe.initial_delay,
        period: (!probe.period.is_zero()).then_some(probe.period),
        timeout: probe.timeout,
        failure_threshold: probe.failure_threshold.max(1),
        success_threshold: probe.success_threshold.max(1),
        port,
        headers,
    }
}

/// Whether `program` names an existing file, directly or through `$PATH`.
fn findable(program: &str) -> bool {
    if program.contains('/') {
        return std::path::Path::new(program).is_file();
    }
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

/// Demand that wakes the autoscaler early: a pod's worth for the precise class.
pub(crate) fn wake_step(policy: &Policy) -> f64 {
    match policy.class {
        Class::Precise if policy.container_concurrency > 0 => {
            f64::from(policy.container_concurrency)
        }
        Class::Precise => policy.effective_target(),
        Class::Kpa | Class::Hpa => f64::INFINITY,
    }
}

/// The autoscaler policy of a revision template.
pub fn policy(template: &RevisionTemplate) -> Policy {
    let s = &template.scaling;
    let cc = template.container_concurrency;
    let mut policy = match s.class {
        ScalingClass::Kpa => Policy::kpa_default().with_container_concurrency(cc),
        ScalingClass::Precise => Policy::precise_default(cc),
        ScalingClass::Hpa => hpa_policy(template),
    };
    if s.class != ScalingClass::Hpa {
        policy.metric = match s.metric {
            ScalingMetric::Rps => Metric::Rps,
            _ => Metric::Concurrency,
        };
        if let Some(target) = s.target {
            policy.target = target;
        }
        policy.target_utilization = s.target_utilization;
    }
    policy.container_concurrency = cc;
    policy.min_scale = s.min_scale;
    policy.max_scale = s.max_scale;
    policy.initial_scale = s.initial_scale;
    policy.stable_window = s.window;
    policy.panic_window_percentage = s.panic_window_percentage;
    policy.panic_threshold_percentage = s.panic_threshold_percentage;
    policy.scale_down_delay = s.scale_down_delay;
    policy.backlog_target = s.backlog_target;
    policy.reserved_instances = s.reserved_instances;
    policy.schedule = s.schedule.clone().into();
    policy.max_scale_up_rate = s.max_scale_up_rate;
    policy.max_scale_down_rate = s.max_scale_down_rate;
    // The last pod stays for the longer of the grace period and the pod retention period
    // (`scale-to-zero-pod-retention-period`).
    policy.scale_to_zero_grace = s.scale_to_zero_grace.max(s.scale_to_zero_retention);
    if !s.scale_to_zero {
        // `enable-scale-to-zero: "false"`: one pod always stays.
        policy.min_scale = policy.min_scale.max(1);
    }
    policy
}

/// `hpa.autoscaling.knative.dev`: the target in the resource's unit (cpu: `target` percent,
/// 80 as the Kubernetes HPA's default, of `requests.cpu`; memory: `target` MiB), and
/// `autoscaling.knative.dev/window` as both stabilization windows when written.
fn hpa_policy(template: &RevisionTemplate) -> Policy {
    let s = &template.scaling;
    let request = template
        .pod
        .serving_container()
        .resources
        .requests_cpu_millis
        .map_or(0.0, |m| m as f64);
    let mut policy = Policy::hpa_cpu(request, s.target.unwrap_or(DEFAULT_HPA_CPU_PERCENT));
    if s.metric == ScalingMetric::Memory {
        policy.metric = Metric::Memory;
        policy.cpu_request_millis = None;
        policy.target = s.target.unwrap_or(0.0) * 1024.0 * 1024.0;
    }
    policy.hpa_window = s.window_set.then_some(s.window);
    policy
}

/// The Kubernetes HPA's cpu utilization target when the manifest names none.
pub const DEFAULT_HPA_CPU_PERCENT: f64 = 80.0;

struct Running {
    pods: Arc<RevisionPods>,
    reserved: Option<Arc<RevisionPods>>,
    reserved_resources: std::collections::BTreeMap<String, String>,
    stop: CancellationToken,
    /// The HPA class's last samples, per pod.
    usage: Arc<Mutex<Vec<PodUsage>>>,
}

impl RunningRevision for Running {
    fn problem(&self) -> Option<String> {
        let status = self.pods.status();
        if status.ready > 0 {
            return None;
        }
        status.last_error
    }

    fn stop(&self) {
        self.stop.cancel();
        let pods = Arc::clone(&self.pods);
        let reserved = self.reserved.clone();
        tokio::spawn(async move {
            match reserved {
                Some(reserved) => {
                    tokio::join!(pods.stop(), reserved.stop());
                }
                None => pods.stop().await,
            }
        });
    }

    fn reserved_resources(&self) -> std::collections::BTreeMap<String, String> {
        self.reserved_resources.clone()
    }

    fn pod_usage(&self) -> Vec<PodUsage> {
        self.usage
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// The HPA class's source: the revision's counts, and each pod's cpu or memory sampled from
/// `/proc` (its serving container's process group).
struct HpaDemand {
    revision: RevisionDemand,
    pods: Arc<RevisionPods>,
    memory: bool,
    /// What 100 % utilization is: `requests.cpu` in millicores, or the memory target in bytes.
    full: f64,
    clock: Mutex<CpuClock>,
    /// The last samples, as the admin API shows them.
    shown: Arc<Mutex<Vec<PodUsage>>>,
}

impl DemandSource for HpaDemand {
    fn demand(&self) -> Demand {
        self.revision.demand()
    }
    fn ready_pods(&self) -> u32 {
        self.revision.ready_pods()
    }
    fn requests_total(&self) -> u64 {
        self.revision.requests_total()
    }

    fn explain(&self, decision: String) {
        self.revision.0.set_decision(decision);
    }

    fn applied_scale(&self) -> Option<u32> {
        Some(self.revision.0.desired())
    }

    fn pod_samples(&self, now: tokio::time::Instant) -> Vec<PodSample> {
        let states = self.pods.pod_states();
        let groups: Vec<u32> = states.iter().filter_map(|p| p.pid).collect();
        let usage = crate::actuator::group_usage(&groups);
        let mut clock = self.clock.lock().unwrap_or_else(PoisonError::into_inner);
        clock.retain(|id| states.iter().any(|p| p.id == *id));
        let mut shown = Vec::with_capacity(states.len());
        let samples = states
            .iter()
            .map(|pod| {
                let group = pod.pid.and_then(|pid| usage.get(&pid));
                let cpu = group.and_then(|g| clock.millicores(pod.id, g.cpu_ticks, now));
                let memory = group.map(|g| g.resident_bytes);
                let value = if self.memory {
                    memory.map(|m| m as f64)
                } else {
                    cpu
                };
                if let Some(memory_bytes) = memory {
                    shown.push(PodUsage {
                        pod: pod.id,
                        cpu_millicores: cpu,
                        memory_bytes,
                        utilization_percent: value
                            .filter(|_| self.full > 0.0)
                            .map(|v| v / self.full * 100.0),
                    });
                }
                PodSample {
                    ready: pod.ready,
                    started: pod.started,
                    ready_changed: pod.ready_changed,
                    usage: value.map(|v| (v, now)),
                }
            })
            .collect();
        *self.shown.lock().unwrap_or_else(PoisonError::into_inner) = shown;
        samples
    }
}

/// The revision's dispatch state, as the actuator reports regular pods to it. A regular pod
/// that is ready retires the reserved instances: dispatch stops sending them work at once
/// (inside `pod_ready`) and their pod set is scaled to zero, so each finishes what it holds and
/// stops.
struct Sink {
    revision: Arc<Revision>,
    role: Role,
}

/// Which pod set a [`Sink`] reports.
enum Role {
    /// Regular pods; the reserved instances' pod set, if any, to retire.
    Regular(Option<Arc<RevisionPods>>),
    /// Reserved instances, taking `tidegate.dev/reserved-instance-concurrency` requests each;
    /// the regular pods (set once both exist), whose last pod waits for a reserved instance.
    Reserved {
        limit: u32,
        regular: Arc<std::sync::OnceLock<Arc<RevisionPods>>>,
    },
}

impl PodSink for Sink {
    fn pod_ready(&self, id: PodId, address: SocketAddr) {
        match &self.role {
            Role::Regular(reserved) => {
                self.revision.pod_ready(id, address);
                // Only while the class wants pods: a pod that turns ready just after a
                // decision of 0 must not retire the reserved instances that decision started.
                if let Some(reserved) = reserved
                    && self.revision.desired() > 0
                {
                    reserved.scale(0);
                }
            }
            Role::Reserved { limit, regular } => {
                self.revision.reserved_pod_ready(id, address, *limit);
                // At zero, the last regular pod stayed until now (see PodScaler).
                if self.revision.desired() == 0
                    && let Some(regular) = regular.get()
                {
                    regular.scale(0);
                }
            }
        }
    }
    fn pod_draining(&self, id: PodId) {
        self.revision.pod_draining(id);
    }
    fn pod_gone(&self, id: PodId) {
        self.revision.pod_gone(id);
    }
    fn pod_in_flight(&self, id: PodId) -> u32 {
        self.revision.pod_in_flight(id)
    }
}

/// The revision's exact counts, as the autoscaler reads them.
pub(crate) struct RevisionDemand(pub(crate) Arc<Revision>);

impl DemandSource for RevisionDemand {
    fn demand(&self) -> Demand {
        let (in_flight, queued, _) = self.0.demand();
        Demand {
            in_flight,
            queued,
            backlog: self.0.backlog.load(Ordering::Relaxed),
        }
    }
    fn ready_pods(&self) -> u32 {
        self.0.demand().2
    }
    fn requests_total(&self) -> u64 {
        self.0.requests_total()
    }
    fn average_concurrency(&self) -> Option<f64> {
        Some(self.0.average_concurrency())
    }
    fn explain(&self, decision: String) {
        self.0.set_decision(decision);
    }
}

/// Applies decisions to the pods: at zero the reserved instances are started (they never
/// count toward `desired`); a scale-up from zero starts at least `activation` pods
/// (`autoscaling.knative.dev/activation-scale`).
struct PodScaler {
    revision: Arc<Revision>,
    pods: Arc<RevisionPods>,
    /// The reserved instances' pod set and how many run at zero.
    reserved: Option<(Arc<RevisionPods>, u32)>,
    activation: ActivationScale,
}

/// `autoscaling.knative.dev/activation-scale`: the fewest pods asked for when scaling up
/// from zero.
pub(crate) struct ActivationScale {
    activation: u32,
    /// The last scale asked for.
    last: AtomicU32,
}

impl ActivationScale {
    pub(crate) fn new(activation: u32) -> Self {
        Self {
            activation,
            last: AtomicU32::new(0),
        }
    }

    /// The scale to ask for when the autoscaler decides `desired`.
    pub(crate) fn apply(&self, desired: u32) -> u32 {
        let from_zero = self.last.load(Ordering::Relaxed) == 0;
        let desired = if from_zero && desired > 0 {
            desired.max(self.activation)
        } else {
            desired
        };
        self.last.store(desired, Ordering::Relaxed);
        desired
    }
}

impl Scaler for PodScaler {
    fn scale(&self, desired: u32) {
        let desired = self.activation.apply(desired);
        self.revision.set_desired(desired);
        match &self.reserved {
            Some((reserved, count)) if desired == 0 => {
                reserved.scale(*count);
                // No gap at zero: the last ready regular pod stays until a reserved instance
                // is ready to take over (its sink then scales the regular pods to 0).
                let hand_back = reserved.status().ready == 0 && self.pods.status().ready > 0;
                self.pods.scale(u32::from(hand_back));
                if hand_back && reserved.status().ready > 0 {
                    // It turned ready meanwhile, and its sink may have looked before.
                    self.pods.scale(0);
                }
            }
            _ => self.pods.scale(desired),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::time::Duration;

    use tokio::time::Instant;

    use super::*;
    use crate::autoscaler::kpa::Kpa;

    const SERVICE: &str = "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata: {name: s}\nspec:\n  template:\n    spec:\n      containerConcurrency: 1\n      containers: [{command: [app]}]\n";

    fn template(files: &[(&str, &str)]) -> RevisionTemplate {
        let files: Vec<(PathBuf, String)> = files
            .iter()
            .map(|(n, t)| (PathBuf::from(n), (*t).to_owned()))
            .collect();
        match triggers::load_documents(&files) {
            Ok(snapshot) => snapshot.services[0].template.clone(),
            Err(errors) => panic!("{errors:#?}"),
        }
    }

    /// Ten seconds of demand 7, then ten quiet seconds; the decision at the end.
    fn decision_after_a_burst(policy: &Policy) -> u32 {
        let start = Instant::now();
        let mut kpa = Kpa::new(policy, start, 1);
        for second in 0..20u64 {
            let value = if second < 10 { 7.0 } else { 0.0 };
            kpa.record(start + Duration::from_secs(second), value);
        }
        kpa.decide(start + Duration::from_secs(20), 1, policy)
            .desired
    }

    #[test]
    fn config_autoscaler_changes_the_kpa_as_in_knative() {
        let default = policy(&template(&[("s.yaml", SERVICE)]));
        assert_eq!(default.stable_window, Duration::from_secs(60));
        let config = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: config-autoscaler, namespace: knative-serving}\ndata:\n  stable-window: 6s\n  max-scale-up-rate: \"10\"\n  scale-to-zero-grace-period: 10s\n  container-concurrency-target-percentage: \"50\"\n";
        let configured = policy(&template(&[("s.yaml", SERVICE), ("c.yaml", config)]));
        assert_eq!(configured.stable_window, Duration::from_secs(6));
        assert_eq!(configured.max_scale_up_rate, 10.0);
        assert_eq!(configured.scale_to_zero_grace, Duration::from_secs(10));
        assert_eq!(configured.target_utilization, 0.5);
        // The 60 s window still remembers the burst; the 6 s one has forgotten it.
        let (long, short) = (
            decision_after_a_burst(&default),
            decision_after_a_burst(&configured),
        );
        assert!(long >= 2, "{long}");
        assert!(short < long, "{short} vs {long}");

        // Annotations still win over the ConfigMap.
        let annotated = SERVICE.replace(
            "  template:\n",
            "  template:\n    metadata:\n      annotations: {autoscaling.knative.dev/window: 30s}\n",
        );
        let p = policy(&template(&[("s.yaml", &annotated), ("c.yaml", config)]));
        assert_eq!(p.stable_window, Duration::from_secs(30));

        let no_zero = config.replace("stable-window: 6s", "enable-scale-to-zero: \"false\"");
        let p = policy(&template(&[("s.yaml", SERVICE), ("c.yaml", &no_zero)]));
        assert_eq!(p.min_scale, 1);
    }
}
