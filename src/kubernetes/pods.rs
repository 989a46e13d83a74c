//! Kubernetes mode's actuator side: pod addresses from EndpointSlices, reported to each
//! revision through the same calls the local runtime makes ([`Revision::pod_ready`],
//! `pod_draining`, `pod_gone`), and the launcher that starts a revision's autoscaler.
//!
//! - A precise-class revision's pods are the endpoints of `{revision}-private` (the Service
//!   selecting its pods; port `http` is the queue-proxy, 8012). tidegate counts every request
//!   to them exactly, so `containerConcurrency` holds per pod, and the desired scale goes to
//!   the PodAutoscaler reconciler ([`DesiredScales`]).
//! - Other classes (KPA, HPA) stay Knative's: tidegate sends to the endpoints of the public
//!   `{revision}` Service, which Knative points at the pods or, at zero, at its activator.
//! - An endpoint that turns not ready (terminating) drains: it gets no new requests, those
//!   running finish. One that disappears is gone. A refused connection is failed over as in
//!   local mode (the request never reached the pod).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use kube::api::DynamicObject;
use serde_json::Value;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use triggers::{ScalingClass, ServiceConfig};

use super::watch::Watched;
use crate::autoscaler::task::{DemandSource, Scaler};
use crate::ingress::proxy::{KNATIVE_NAMESPACE_HEADER, KNATIVE_REVISION_HEADER};
use crate::revision::Revision;
use crate::revision::queue::PodId;
use crate::revision::registry::{RevisionLauncher, RunningRevision};
use crate::runtime::launch::{ActivationScale, RevisionDemand, policy, wake_step};

/// The label an EndpointSlice names its Service with.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// The Service whose endpoints are a revision's pods.
pub fn endpoints_service(revision: &str, class: ScalingClass) -> String {
    match class {
        ScalingClass::Precise => format!("{revision}-private"),
        ScalingClass::Kpa | ScalingClass::Hpa => revision.to_owned(),
    }
}

struct Tracked {
    revision: Arc<Revision>,
    service: String,
    /// Endpoint address → (pod id, ready).
    pods: HashMap<SocketAddr, (PodId, bool)>,
    next: PodId,
}

enum Change {
    Ready(PodId, SocketAddr),
    Draining(PodId),
    Gone(PodId),
}

/// Revisions' pods as EndpointSlices list them.
pub struct EndpointPods {
    slices: Watched,
    tracked: Mutex<HashMap<(String, String), Tracked>>,
    /// `(namespace, revision)` of each revision whose pods changed (the PodAutoscaler
    /// reconciler reports `actualScale` from them).
    changed: Option<tokio::sync::mpsc::UnboundedSender<(String, String)>>,
}

impl EndpointPods {
    /// Follows `slices` until `stop`, telling `changed` which revisions' pods changed.
    pub fn start(
        slices: Watched,
        changed: Option<tokio::sync::mpsc::UnboundedSender<(String, String)>>,
        stop: CancellationToken,
    ) -> Arc<Self> {
        let pods = Arc::new(Self {
            slices,
            tracked: Mutex::new(HashMap::new()),
            changed,
        });
        let mut changes: watch::Receiver<u64> = pods.slices.changes.clone();
        let weak = Arc::downgrade(&pods);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    changed = changes.changed() => if changed.is_err() { return },
                }
                let Some(pods) = weak.upgrade() else { return };
                pods.sync_all();
            }
        });
        pods
    }

    fn track(&self, revision: &Arc<Revision>, service: String) {
        let key = (revision.namespace.clone(), revision.name.clone());
        self.lock().insert(
            key.clone(),
            Tracked {
                revision: Arc::clone(revision),
                service,
                pods: HashMap::new(),
                next: 1,
            },
        );
        self.sync(Some(&key));
    }

    fn untrack(&self, namespace: &str, name: &str) {
        let removed = self.lock().remove(&(namespace.to_owned(), name.to_owned()));
        if let Some(tracked) = removed {
            for (id, _) in tracked.pods.values() {
                tracked.revision.pod_draining(*id);
                tracked.revision.pod_gone(*id);
            }
        }
    }

    /// Ready endpoints of `service` in `namespace`.
    pub fn ready(&self, namespace: &str, service: &str) -> u32 {
        let count = endpoints(&self.slices.store.state(), namespace, service)
            .filter(|(_, ready)| *ready)
            .count();
        u32::try_from(count).unwrap_or(u32::MAX)
    }

    fn sync_all(&self) {
        self.sync(None);
    }

    fn sync(&self, only: Option<&(String, String)>) {
        let slices = self.slices.store.state();
        let mut changes: Vec<(Arc<Revision>, Change)> = Vec::new();
        {
            let mut tracked = self.lock();
            for (key, t) in tracked.iter_mut() {
                if only.is_some_and(|o| o != key) {
                    continue;
                }
                let seen: HashMap<SocketAddr, bool> =
                    endpoints(&slices, &key.0, &t.service).collect();
                for (address, ready) in &seen {
                    match t.pods.get_mut(address) {
                        None if *ready => {
                            let id = t.next;
                            t.next += 1;
                            t.pods.insert(*address, (id, true));
                            changes.push((Arc::clone(&t.revision), Change::Ready(id, *address)));
                        }
                        None => {}
                        Some((id, was)) if *was != *ready => {
                            *was = *ready;
                            let change = if *ready {
                                Change::Ready(*id, *address)
                            } else {
                                Change::Draining(*id)
                            };
                            changes.push((Arc::clone(&t.revision), change));
                        }
                        Some(_) => {}
                    }
                }
                t.pods.retain(|address, (id, ready)| {
                    if seen.contains_key(address) {
                        return true;
                    }
                    if *ready {
                        changes.push((Arc::clone(&t.revision), Change::Draining(*id)));
                    }
                    changes.push((Arc::clone(&t.revision), Change::Gone(*id)));
                    false
                });
            }
        }
        let mut touched: Vec<(String, String)> = changes
            .iter()
            .map(|(r, _)| (r.namespace.clone(), r.name.clone()))
            .collect();
        touched.dedup();
        for (revision, change) in changes {
            match change {
                Change::Ready(id, address) => {
                    tracing::info!(revision = %revision.name, %address, "Endpoint ready.");
                    revision.pod_ready(id, address);
                }
                Change::Draining(id) => revision.pod_draining(id),
                Change::Gone(id) => revision.pod_gone(id),
            }
        }
        if let Some(changed) = &self.changed {
            for key in touched {
                let _ = changed.send(key);
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Tracked>> {
        self.tracked
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// `(address, ready)` of every endpoint of `service`'s EndpointSlices. An endpoint without a
/// `ready` condition is ready (the API's rule); the port is the one named `http` or `h2c`,
/// else the first.
fn endpoints<'a>(
    slices: &'a [Arc<DynamicObject>],
    namespace: &'a str,
    service: &'a str,
) -> impl Iterator<Item = (SocketAddr, bool)> + 'a {
    slices
        .iter()
        .filter(move |s| {
            s.metadata.namespace.as_deref() == Some(namespace)
                && s.metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(SERVICE_NAME_LABEL))
                    .is_some_and(|n| n == service)
        })
        .flat_map(|slice| {
            let ports = slice.data.get("ports").and_then(Value::as_array);
            let port = ports.and_then(|ports| {
                ports
                    .iter()
                    .find(|p| {
                        matches!(
                            p.get("name").and_then(Value::as_str),
                            Some("http" | "http2" | "h2c")
                        )
                    })
                    .or_else(|| ports.first())
                    .and_then(|p| p.get("port"))
                    .and_then(Value::as_u64)
                    .and_then(|p| u16::try_from(p).ok())
            });
            let list = slice
                .data
                .get("endpoints")
                .and_then(Value::as_array)
                .map(Vec::as_slice)
                .unwrap_or_default();
            list.iter().filter_map(move |endpoint| {
                let ip: IpAddr = endpoint
                    .get("addresses")?
                    .as_array()?
                    .first()?
                    .as_str()?
                    .parse()
                    .ok()?;
                let ready = endpoint
                    .pointer("/conditions/ready")
                    .and_then(Value::as_bool)
                    .unwrap_or(true);
                Some((SocketAddr::new(ip, port?), ready))
            })
        })
}

/// The scale each precise-class revision's autoscaler wants, for the PodAutoscaler
/// reconciler; `changed` carries `(namespace, revision)` of each change.
pub struct DesiredScales {
    scales: Mutex<HashMap<(String, String), u32>>,
    pub(crate) changed: tokio::sync::mpsc::UnboundedSender<(String, String)>,
}

impl DesiredScales {
    pub fn new() -> (
        Arc<Self>,
        tokio::sync::mpsc::UnboundedReceiver<(String, String)>,
    ) {
        let (changed, rx) = tokio::sync::mpsc::unbounded_channel();
        (
            Arc::new(Self {
                scales: Mutex::new(HashMap::new()),
                changed,
            }),
            rx,
        )
    }

    /// The scale wanted for the revision, once its autoscaler decided.
    pub fn get(&self, namespace: &str, revision: &str) -> Option<u32> {
        self.lock()
            .get(&(namespace.to_owned(), revision.to_owned()))
            .copied()
    }

    pub(crate) fn set(&self, namespace: &str, revision: &str, desired: Option<u32>) {
        let key = (namespace.to_owned(), revision.to_owned());
        let changed = {
            let mut scales = self.lock();
            match desired {
                Some(d) => scales.insert(key.clone(), d) != Some(d),
                None => scales.remove(&key).is_some(),
            }
        };
        if changed {
            let _ = self.changed.send(key);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), u32>> {
        self.scales
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Starts revisions in Kubernetes mode: pods from EndpointSlices, the precise class's
/// autoscaler writing into [`DesiredScales`].
pub struct KubernetesLauncher {
    pub pods: Arc<EndpointPods>,
    pub scales: Arc<DesiredScales>,
}

impl RevisionLauncher for KubernetesLauncher {
    fn start(&self, revision: &Arc<Revision>, service: &ServiceConfig) -> Box<dyn RunningRevision> {
        let template = &service.template;
        let class = template.scaling.class;
        // As Knative's ingress sends them: Knative's activator finds the revision by these.
        if let (Ok(name), Ok(namespace)) = (
            http::HeaderValue::from_str(&revision.name),
            http::HeaderValue::from_str(&revision.namespace),
        ) {
            revision.set_upstream_headers(vec![
                (http::HeaderName::from_static(KNATIVE_REVISION_HEADER), name),
                (
                    http::HeaderName::from_static(KNATIVE_NAMESPACE_HEADER),
                    namespace,
                ),
            ]);
        }
        self.pods
            .track(revision, endpoints_service(&revision.name, class));
        let stop = CancellationToken::new();
        if class == ScalingClass::Precise {
            let policy = policy(template);
            revision.set_wake_step(wake_step(&policy));
            tokio::spawn(crate::autoscaler::task::run(
                policy,
                Arc::new(RevisionDemand(Arc::clone(revision))) as Arc<dyn DemandSource>,
                Arc::new(ScaleRecorder {
                    scales: Arc::clone(&self.scales),
                    namespace: revision.namespace.clone(),
                    revision: Arc::clone(revision),
                    activation: ActivationScale::new(template.scaling.activation_scale),
                }) as Arc<dyn Scaler>,
                Arc::clone(&revision.changed),
                stop.clone(),
            ));
        }
        Box::new(Running {
            pods: Arc::clone(&self.pods),
            scales: Arc::clone(&self.scales),
            namespace: revision.namespace.clone(),
            name: revision.name.clone(),
            stop,
        })
    }
}

struct ScaleRecorder {
    scales: Arc<DesiredScales>,
    namespace: String,
    revision: Arc<Revision>,
    activation: ActivationScale,
}

impl Scaler for ScaleRecorder {
    fn scale(&self, desired: u32) {
        let desired = self.activation.apply(desired);
        self.revision.set_desired(desired);
        self.scales
            .set(&self.namespace, &self.revision.name, Some(desired));
    }
}

struct Running {
    pods: Arc<EndpointPods>,
    scales: Arc<DesiredScales>,
    namespace: String,
    name: String,
    stop: CancellationToken,
}

impl RunningRevision for Running {
    fn problem(&self) -> Option<String> {
        None
    }

    fn stop(&self) {
        self.stop.cancel();
        self.scales.set(&self.namespace, &self.name, None);
        self.pods.untrack(&self.namespace, &self.name);
    }
}
