//! Knative Services → Configuration → immutable Revisions, and the routes over them.
//!
//! - A Service's template fingerprint names its revision: the same template always maps to the
//!   same revision, a changed one gets the next number (`{service}-00001`, `-00002`, …) unless
//!   `spec.template.metadata.name` names it. The numbering is persisted in the data directory
//!   (`revisions.json`), so names survive restarts.
//! - `latestRevision` traffic goes to the latest revision once it has been ready, and until then
//!   to the newest revision that has (Knative's latest *ready* revision).
//! - Revisions that no route can reach any more are stopped (pods drained) and forgotten.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use triggers::{ServiceConfig, TrafficRevision};

use super::route::SharedRoutes;
use super::route::{Route, RouteTable, Target};
use super::{Limits, PodProtocol, Revision};
use crate::metrics::{Metrics, ProxyCounters};

/// Starts and stops what runs a revision (pods and autoscaler); implemented by the runtime.
pub trait RevisionLauncher: Send + Sync {
    /// Starts pods and autoscaling for a new revision.
    fn start(&self, revision: &Arc<Revision>, service: &ServiceConfig) -> Box<dyn RunningRevision>;
}

/// A started revision.
pub trait RunningRevision: Send + Sync {
    /// Why the revision is not ready, if the runtime knows (e.g. its command fails).
    fn problem(&self) -> Option<String>;
    /// Drains and stops the revision's pods; returns at once, stopping goes on in the background.
    fn stop(&self);
    /// The last usage sample of each pod, where the runtime samples them (the HPA class on
    /// the local runtime).
    fn pod_usage(&self) -> Vec<PodUsage> {
        Vec::new()
    }
    /// The resources reserved instances run with (`tidegate.dev/reserved-instance-resources`
    /// as written: `requests.cpu` → `100m`, …); empty when they use the template's.
    fn reserved_resources(&self) -> std::collections::BTreeMap<String, String> {
        std::collections::BTreeMap::new()
    }
}

/// One pod's last usage sample.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PodUsage {
    pub pod: crate::revision::queue::PodId,
    /// Cpu used over the last second; `None` until a pod has two samples.
    pub cpu_millicores: Option<f64>,
    pub memory_bytes: u64,
    /// What the HPA class compares with its target: cpu as a percentage of the container's
    /// `requests.cpu`, memory as a percentage of the target.
    pub utilization_percent: Option<f64>,
}

/// One revision the gateway runs.
pub struct LiveRevision {
    pub revision: Arc<Revision>,
    pub running: Box<dyn RunningRevision>,
    /// Pod spec fields that have no effect on the local runtime.
    pub ignored_locally: Vec<String>,
    fingerprint: u64,
}

#[derive(Default, Serialize, Deserialize)]
struct History {
    /// (namespace/service) → revisions in creation order: (name, fingerprint).
    services: BTreeMap<String, Vec<(String, u64)>>,
}

/// Every Service and Revision, rebuilt from each manifest snapshot.
pub struct Registry {
    path: PathBuf,
    history: History,
    live: HashMap<(String, String), LiveRevision>,
    routes: SharedRoutes,
    metrics: Arc<Metrics>,
    /// Revision names come from elsewhere (Knative in Kubernetes mode): traffic may name any.
    external_names: bool,
}

impl Registry {
    /// Accepts every revision name traffic names: Knative created them (Kubernetes mode).
    pub fn with_external_names(mut self) -> Self {
        self.external_names = true;
        self
    }

    /// Loads the revision numbering from `data_dir/revisions.json`.
    pub fn open(data_dir: &Path, routes: SharedRoutes, metrics: Arc<Metrics>) -> Self {
        let path = data_dir.join("revisions.json");
        let history = std::fs::read(&path)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default();
        Self {
            metrics,
            path,
            history,
            live: HashMap::new(),
            routes,
            external_names: false,
        }
    }

    /// Live revisions sorted by namespace, service, name.
    pub fn revisions(&self) -> Vec<&LiveRevision> {
        let mut all: Vec<_> = self.live.values().collect();
        all.sort_by(|a, b| {
            (&a.revision.namespace, &a.revision.service, &a.revision.name).cmp(&(
                &b.revision.namespace,
                &b.revision.service,
                &b.revision.name,
            ))
        });
        all
    }

    /// Brings revisions and routes in line with `services`.
    pub fn apply(&mut self, services: &[ServiceConfig], launcher: &dyn RevisionLauncher) {
        let mut table = RouteTable::default();
        let mut keep: HashSet<(String, String)> = HashSet::new();
        for service in services {
            let key = format!("{}/{}", service.namespace, service.name);
            let latest = self.revision_name(&key, service);
            // Latest first, then older revisions newest first: `Latest` traffic takes the first
            // one that has been ready.
            let history = self.history.services.get(&key).cloned().unwrap_or_default();
            let mut candidates = vec![self.ensure(service, &latest, launcher, &mut keep)];
            if !candidates[0].ever_ready() {
                let previous_ready = history
                    .iter()
                    .rev()
                    .filter(|(name, _)| *name != latest)
                    .find(|(name, _)| {
                        self.live
                            .get(&(service.namespace.clone(), name.clone()))
                            .is_some_and(|l| l.revision.ever_ready())
                    })
                    .map(|(name, _)| name.clone());
                if let Some(name) = previous_ready {
                    keep.insert((service.namespace.clone(), name.clone()));
                    if let Some(l) = self.live.get(&(service.namespace.clone(), name)) {
                        candidates.push(Arc::clone(&l.revision));
                    }
                }
            }
            let traffic = if service.traffic.is_empty() {
                vec![(TrafficRevision::Latest, 100, None)]
            } else {
                service
                    .traffic
                    .iter()
                    .map(|t| (t.revision.clone(), t.percent, t.tag.clone()))
                    .collect()
            };
            let mut targets = Vec::new();
            let mut tags = Vec::new();
            for (revision, percent, tag) in traffic {
                let target = match revision {
                    TrafficRevision::Latest => Target::Latest(candidates.clone()),
                    TrafficRevision::Named(name) => {
                        if !self.external_names
                            && !history.iter().any(|(n, _)| *n == name)
                            && name != latest
                        {
                            tracing::warn!(service = %key, revision = %name, "Traffic names a revision that does not exist; skipping it.");
                            continue;
                        }
                        Target::Fixed(self.ensure(service, &name, launcher, &mut keep))
                    }
                };
                // A revision named in the split or by a tag is reachable by its name too
                // (Knative's ingress names it); a 0 % untagged one is not.
                if percent > 0 || tag.is_some() {
                    match &target {
                        Target::Fixed(revision) => table.insert_revision(revision),
                        // Before Knative resolved the split (Kubernetes mode), its ingress
                        // may already name the latest revision.
                        Target::Latest(candidates) if self.external_names => {
                            candidates.iter().for_each(|r| table.insert_revision(r));
                        }
                        Target::Latest(_) => {}
                    }
                }
                if let Some(tag) = tag {
                    tags.push((tag, target.clone()));
                }
                if percent > 0 {
                    targets.push((target, percent));
                }
            }
            table.insert_service(Arc::new(Route {
                namespace: service.namespace.clone(),
                service: service.name.clone(),
                targets,
            }));
            for (tag, target) in tags {
                table.insert_tag(
                    &tag,
                    Arc::new(Route {
                        namespace: service.namespace.clone(),
                        service: service.name.clone(),
                        targets: vec![(target, 100)],
                    }),
                );
            }
        }
        self.routes.store(Arc::new(table));
        let gone: Vec<_> = self
            .live
            .keys()
            .filter(|k| !keep.contains(*k))
            .cloned()
            .collect();
        for key in gone {
            if let Some(live) = self.live.remove(&key) {
                tracing::info!(revision = %live.revision.name, "Revision no longer routed; stopping it.");
                live.running.stop();
            }
        }
        self.save();
    }

    /// The revision for the service's current template, numbering a new one if needed.
    fn revision_name(&mut self, key: &str, service: &ServiceConfig) -> String {
        let history = self.history.services.entry(key.to_owned()).or_default();
        if let Some(name) = &service.template_name {
            if !history.iter().any(|(n, _)| n == name) {
                history.push((name.clone(), service.fingerprint));
            }
            return name.clone();
        }
        if let Some((name, _)) = history
            .iter()
            .rev()
            .find(|(_, f)| *f == service.fingerprint)
        {
            return name.clone();
        }
        let next = history
            .iter()
            .filter_map(|(n, _)| {
                n.rsplit_once('-')
                    .and_then(|(_, num)| num.parse::<u32>().ok())
            })
            .max()
            .unwrap_or(0)
            + 1;
        let name = format!("{}-{next:05}", service.name);
        history.push((name.clone(), service.fingerprint));
        name
    }

    /// The live revision `name`, started if needed.
    fn ensure(
        &mut self,
        service: &ServiceConfig,
        name: &str,
        launcher: &dyn RevisionLauncher,
        keep: &mut HashSet<(String, String)>,
    ) -> Arc<Revision> {
        let key = (service.namespace.clone(), name.to_owned());
        keep.insert(key.clone());
        // A named old revision keeps the template it was created with; only the latest one
        // runs the current template.
        if let Some(live) = self.live.get(&key) {
            if live.fingerprint == service.fingerprint || !self.is_latest(service, name) {
                return Arc::clone(&live.revision);
            }
            live.running.stop();
        }
        // An older revision Knative knows runs its own template.
        let own;
        let service = match service.revisions.get(name) {
            Some(template) => {
                own = ServiceConfig {
                    template: template.clone(),
                    revisions: Default::default(),
                    ..service.clone()
                };
                &own
            }
            None => service,
        };
        let template = &service.template;
        let revision = Revision::new(
            &service.namespace,
            &service.name,
            name,
            template.scaling.class.annotation_value(),
            Limits {
                container_concurrency: template.container_concurrency,
                timeout: template.timeout,
                response_start_timeout: template.response_start_timeout,
                queue_depth: template.scaling.queue_depth,
                protocol: if template.pod.serving_container().h2c {
                    PodProtocol::H2c
                } else {
                    PodProtocol::Http1
                },
            },
            ProxyCounters::new(&self.metrics, &service.namespace, &service.name, name),
        );
        let running = launcher.start(&revision, service);
        self.live.insert(
            key,
            LiveRevision {
                revision: Arc::clone(&revision),
                running,
                ignored_locally: service.template.pod.ignored_locally.clone(),
                fingerprint: service.fingerprint,
            },
        );
        revision
    }

    fn is_latest(&self, service: &ServiceConfig, name: &str) -> bool {
        let key = format!("{}/{}", service.namespace, service.name);
        self.history
            .services
            .get(&key)
            .and_then(|h| h.iter().find(|(_, f)| *f == service.fingerprint))
            .is_some_and(|(n, _)| n == name)
    }

    fn save(&self) {
        let Ok(bytes) = serde_json::to_vec_pretty(&self.history) else {
            return;
        };
        let tmp = self.path.with_extension("json.tmp");
        let result = std::fs::write(&tmp, bytes).and_then(|()| std::fs::rename(&tmp, &self.path));
        if let Err(error) = result {
            tracing::warn!(path = %self.path.display(), %error, "Could not save revision numbering.");
        }
    }

    /// Stops every revision (gateway shutdown).
    pub fn stop_all(&mut self) {
        for (_, live) in self.live.drain() {
            live.running.stop();
        }
    }
}
