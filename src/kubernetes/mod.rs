//! Kubernetes mode (`tidegate serve --kubernetes`): desired state from the API server instead
//! of manifest files, pods from EndpointSlices instead of local processes, and the controllers
//! that make tidegate a Knative broker class and autoscaler class.
//!
//! - [`api`]: the kinds, the client (kubeconfig or in-cluster; no hidden retries), the start
//!   check naming a missing CRD or a refused permission.
//! - [`watch`]: reflectors and the snapshot builder (the provider).
//! - [`pods`]: EndpointSlices → each revision's pods; the launcher of revisions.
//! - [`controller`]: tidegate Triggers (their Knative Services), Knative Brokers and Triggers
//!   of class `tidegate` (their status).
//! - [`autoscaler`]: PodAutoscalers of class `precise.tidegate.dev`.
//!
//! The data path does not know which mode runs: the runtime applies the same snapshots, and
//! revisions hear about pods through the same calls.

pub mod api;
pub mod autoscaler;
pub mod controller;
pub mod pods;
pub mod status;
pub mod watch;

#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::runtime::provider::{ProviderHealth, Update};
use crate::topology::Topology;
use api::Kinds;
use pods::{DesiredScales, EndpointPods, KubernetesLauncher};
use watch::{Loaded, Stores};

/// Tells the controllers that a snapshot was applied.
pub struct Applied(tokio::sync::watch::Sender<u64>);

impl Applied {
    pub fn applied(&self) {
        self.0.send_modify(|n| *n = n.wrapping_add(1));
    }
}

/// How `serve --kubernetes` reaches the cluster and is reached from it.
#[derive(Debug, Clone)]
pub struct KubernetesConfig {
    /// A kubeconfig file; default: `KUBECONFIG`, `~/.kube/config`, then in-cluster.
    pub kubeconfig: Option<PathBuf>,
    /// Base URL of tidegate's event ingress as the cluster reaches it (Broker addresses).
    pub ingress_url: String,
    /// tidegate's address for Knative's ingress (public Services of precise revisions).
    pub advertise: SocketAddr,
    /// This replica's name in Events (`POD_NAME`).
    pub instance: Option<String>,
    /// Longest an API request at start may take.
    pub request_timeout: Duration,
}

/// A connected cluster: its watches, and the launcher revisions start through.
pub struct Cluster {
    config: KubernetesConfig,
    client: kube::Client,
    kinds: Kinds,
    stores: Stores,
    pub health: Arc<ProviderHealth>,
    pub launcher: Arc<KubernetesLauncher>,
    pods: Arc<EndpointPods>,
    scales: Arc<DesiredScales>,
    decisions: Option<mpsc::UnboundedReceiver<(String, String)>>,
    stop: CancellationToken,
}

impl Cluster {
    /// Connects, checks that every kind can be listed (a missing CRD or permission is an
    /// error naming it; an API server that does not answer is waited for by the watches,
    /// with backoff), and starts the watches.
    pub async fn connect(config: KubernetesConfig) -> anyhow::Result<Self> {
        let client = api::client(config.kubeconfig.as_deref(), config.request_timeout).await?;
        let kinds = Kinds::default();
        if let Err(error) = api::preflight(&client, &kinds, config.request_timeout).await {
            let text = format!("{error:#}");
            if text.contains("is not installed") || text.contains("RBAC:") {
                return Err(error);
            }
            tracing::warn!(error = %text, "The Kubernetes API does not answer yet; waiting for it with backoff.");
        }
        let health = Arc::new(ProviderHealth::default());
        let stores = watch::start(&client, &kinds, &health);
        let stop = CancellationToken::new();
        let (scales, decisions) = DesiredScales::new();
        let pods = EndpointPods::start(
            stores.endpoint_slice.clone(),
            Some(scales.changed.clone()),
            stop.clone(),
        );
        let launcher = Arc::new(KubernetesLauncher {
            pods: Arc::clone(&pods),
            scales: Arc::clone(&scales),
        });
        Ok(Self {
            config,
            client,
            kinds,
            stores,
            health,
            launcher,
            pods,
            scales,
            decisions: Some(decisions),
            stop,
        })
    }

    /// Starts the provider and the controllers; the updates are the provider's, and the
    /// runtime calls [`Applied::applied`] once it applied each one (the controllers then
    /// read the new snapshot and topology).
    pub fn start(&mut self, topology: Arc<ArcSwap<Topology>>) -> (mpsc::Receiver<Update>, Applied) {
        let loaded = Arc::new(ArcSwap::from_pointee(Loaded::default()));
        let (loads_tx, loads) = tokio::sync::watch::channel(0u64);
        let updates = watch::provider(self.stores.clone(), Arc::clone(&loaded));
        let ctx = Arc::new(controller::Context::new(
            self.client.clone(),
            self.kinds.clone(),
            loaded,
            topology,
            self.config.ingress_url.clone(),
            self.config.instance.clone(),
        ));
        tokio::spawn(controller::run(Arc::clone(&ctx), loads, self.stop.clone()));
        if let Some(decisions) = self.decisions.take() {
            let precise = Arc::new(autoscaler::Precise {
                ctx,
                scales: Arc::clone(&self.scales),
                pods: Arc::clone(&self.pods),
                advertise: self.config.advertise,
            });
            tokio::spawn(autoscaler::run(precise, decisions, self.stop.clone()));
        }
        (updates, Applied(loads_tx))
    }

    /// Stops the controllers and the endpoint follower.
    pub fn stop(&self) {
        self.stop.cancel();
    }
}
