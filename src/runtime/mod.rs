//! The one place that wires everything together and owns start-up and shutdown.

mod last_good;
pub(crate) mod launch;
pub mod manifests;
pub mod provider;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use arc_swap::ArcSwap;
use brokers::Backends;
use brokers::embedded::{EmbeddedOptions, EmbeddedStore};
use provider::{Provider, ProviderHealth, Update};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use triggers::Snapshot;

use crate::actuator::{LocalRuntime, PodOutput};
use crate::dispatch::{Clients, Dispatcher};
use crate::ingress::conn::{self, ConnLimits};
use crate::ingress::{admin, events, proxy};
use crate::metrics::Metrics;
use crate::revision::registry::{Registry, RevisionLauncher};
use crate::revision::route::RouteTable;
use crate::topology::{BrokerEntry, IngestCounters, Topology};
use manifests::{ManifestSets, ManifestStatus};

/// How often manifest directories are checked for changes.
pub const MANIFEST_POLL_INTERVAL: Duration = Duration::from_secs(1);

/// Everything `tidegate serve` needs.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    pub manifests: Vec<PathBuf>,
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    pub max_body_bytes: usize,
    /// Most events per batch request (default: one per 400 bytes of the body limit).
    pub max_batch_events: Option<usize>,
    /// Memory for requests between reading and storing (503 over it).
    pub ingest_memory_bytes: usize,
    pub drain_timeout: Duration,
    /// Retained-event quota of the embedded broker; over it ingress answers 503.
    pub storage_max_bytes: Option<u64>,
    /// Free space kept on the data directory's file system (default 1/32 of it, ≤ 64 MiB).
    pub storage_min_free_bytes: Option<u64>,
    /// Services answer on `{service}.{namespace}.{domain}`.
    pub domain: String,
    /// Timeouts and limits of ingress connections; `max_connections` is replaced by the cap
    /// derived from the descriptor limit unless `max_connections` below asks for one.
    pub connections: ConnLimits,
    /// Requested cap on open ingress connections (bounded by the descriptor limit).
    pub max_connections: Option<usize>,
    /// Threads serving the ingress, each with a runtime of its own (default: one per core).
    pub ingress_threads: usize,
    /// How pods' lines are echoed on stderr (the gateway's own log is set up by `main`).
    pub log_format: crate::actuator::logs::LogFormat,
    /// Kubernetes mode: desired state from the API server instead of `manifests`.
    pub kubernetes: Option<crate::kubernetes::KubernetesConfig>,
}

/// Runs the gateway until SIGTERM or Ctrl-C, then drains and returns.
pub async fn serve(config: ServeConfig) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::new());
    let sources = match &config.kubernetes {
        Some(_) => vec![PathBuf::from("kubernetes")],
        None => config.manifests.clone(),
    };
    let manifest_status = Arc::new(ManifestStatus::new(&sources, &metrics));
    let mut manifest_sets = ManifestSets::new(
        config.manifests.clone(),
        config.data_dir.clone(),
        Arc::clone(&manifest_status),
    );
    let mut cluster = match config.kubernetes.clone() {
        Some(k) => Some(crate::kubernetes::Cluster::connect(k).await?),
        None => None,
    };
    // The watch starts from these contents, whichever set is served.
    let (snapshot, contents) = match &cluster {
        Some(_) => (Snapshot::default(), None),
        None => {
            let contents = triggers::DirContents::read(&config.manifests);
            let snapshot = manifest_sets.start(&contents)?;
            for w in &snapshot.warnings {
                tracing::warn!(warning = %w, "Manifest warning.");
            }
            (snapshot, Some(contents))
        }
    };
    let store = EmbeddedStore::open(
        &config.data_dir,
        EmbeddedOptions {
            max_bytes: config.storage_max_bytes,
            min_free_bytes: config.storage_min_free_bytes,
            ..EmbeddedOptions::default()
        },
    )
    .with_context(|| {
        format!(
            "opening the embedded broker in {}",
            config.data_dir.display()
        )
    })?;
    if cluster.is_none() {
        manifest_sets.persist().await;
    }

    let topology = Arc::new(ArcSwap::from_pointee(Topology::default()));
    let client = Clients::new().context("building the delivery HTTP clients")?;
    let routes = Arc::new(ArcSwap::from_pointee(RouteTable::default()));
    let dispatcher = Arc::new(Dispatcher::new(
        client,
        Arc::clone(&routes),
        Arc::clone(&metrics),
    ));
    let ready = Arc::new(AtomicBool::new(false));
    let pods = LocalRuntime::with_log_format(PodOutput::Log, config.log_format);
    let launcher: Arc<dyn RevisionLauncher> = match &cluster {
        Some(cluster) => Arc::clone(&cluster.launcher) as Arc<dyn RevisionLauncher>,
        None => Arc::new(launch::LocalLauncher {
            runtime: Arc::clone(&pods),
            self_exe: std::env::current_exe().ok(),
        }),
    };
    let registry = Registry::open(&config.data_dir, Arc::clone(&routes), Arc::clone(&metrics));
    let registry = Arc::new(std::sync::Mutex::new(if cluster.is_some() {
        registry.with_external_names()
    } else {
        registry
    }));
    let provider_health = cluster.as_ref().map_or_else(
        || Arc::new(ProviderHealth::default()),
        |c| Arc::clone(&c.health),
    );

    let applier = Arc::new(Applier {
        backends: Backends::new(Arc::clone(&store)),
        metrics: Arc::clone(&metrics),
        topology: Arc::clone(&topology),
        dispatcher: Arc::clone(&dispatcher),
        registry: Arc::clone(&registry),
        launcher,
    });
    let snapshot = Arc::new(snapshot);
    applier.apply(&snapshot).await;

    let ingress_listener = std::net::TcpListener::bind(config.listen)
        .with_context(|| format!("binding ingress on {}", config.listen))?;
    let admin_listener = TcpListener::bind(config.admin_listen)
        .await
        .with_context(|| format!("binding admin on {}", config.admin_listen))?;
    tracing::info!(
        ingress = %ingress_listener.local_addr()?,
        admin = %admin_listener.local_addr()?,
        data_dir = %config.data_dir.display(),
        brokers = snapshot.brokers.len(),
        triggers = snapshot.triggers.len(),
        "tidegate serving."
    );

    let descriptors = conn::raise_descriptor_limit();
    let ingress_limits = ConnLimits {
        max_connections: conn::connection_cap(descriptors, config.max_connections),
        ..config.connections.clone()
    };
    let admin_limits = ConnLimits {
        max_connections: conn::ADMIN_MAX_CONNECTIONS,
        ..config.connections.clone()
    };
    tracing::info!(
        descriptors,
        max_connections = ingress_limits.max_connections,
        "Connection limits set."
    );
    let stop_ingress = CancellationToken::new();
    let ingress = crate::ingress::start(
        ingress_listener,
        config.ingress_threads,
        ingress_limits,
        events::IngressState {
            topology: Arc::clone(&topology),
            max_body_bytes: config.max_body_bytes,
            max_batch_events: config
                .max_batch_events
                .unwrap_or_else(|| events::default_max_batch_events(config.max_body_bytes)),
            budget: events::IngestBudget::new(config.ingest_memory_bytes),
            unknown_broker: metrics.ingest_unknown_broker.clone(),
        },
        proxy::ProxyState {
            revision_headers: cluster.is_some(),
            ..proxy::ProxyState::new(Arc::clone(&routes), &config.domain)
        },
        stop_ingress.clone(),
    )?;
    let ingress_task = tokio::spawn(ingress.finished());
    let stop_admin = CancellationToken::new();
    let dashboard = crate::ingress::dashboard::Dashboard::new(stop_admin.clone());
    let admin_state = admin::AdminState {
        metrics: Arc::clone(&metrics),
        topology: Arc::clone(&topology),
        dispatcher: Arc::clone(&dispatcher),
        ready: Arc::clone(&ready),
        registry: Arc::clone(&registry),
        store: Arc::clone(&store),
        manifests: Arc::clone(&manifest_status),
        provider: Arc::clone(&provider_health),
        pod_logs: cluster.is_none().then(|| pods.logs()),
        dashboard: Some(Arc::clone(&dashboard)),
    };
    tokio::spawn(Arc::clone(&dashboard).run(admin_state.clone()));
    let admin = admin::router(admin_state);
    let admin_task = tokio::spawn({
        let stop = stop_admin.clone();
        let handler = move |request: conn::IncomingRequest, _peer| {
            use tower::ServiceExt as _;
            let admin = admin.clone();
            async move {
                match admin.oneshot(request.map(axum::body::Body::new)).await {
                    Ok(response) => response,
                    Err(never) => match never {},
                }
            }
        };
        conn::serve(admin_listener, admin_limits, handler, stop)
    });

    let kubernetes = cluster.is_some();
    let (mut provider, applied_hook) = match (&mut cluster, contents) {
        (Some(cluster), _) => {
            let (updates, applied) = cluster.start(Arc::clone(&topology));
            (Provider::Kubernetes(updates), Some(applied))
        }
        (None, contents) => (
            Provider::files(
                config.manifests.clone(),
                contents.unwrap_or_default(),
                MANIFEST_POLL_INTERVAL,
            ),
            None,
        ),
    };
    let ready_on_load = Arc::clone(&ready);
    let watcher = tokio::spawn(async move {
        let mut serving = snapshot;
        while let Some(update) = provider.next().await {
            match update {
                Update::Applied {
                    snapshot,
                    files,
                    left_out,
                } => {
                    let changed = *snapshot != *serving;
                    if changed {
                        tracing::info!(
                            brokers = snapshot.brokers.len(),
                            triggers = snapshot.triggers.len(),
                            services = snapshot.services.len(),
                            "Desired state changed; applying."
                        );
                        applier.apply(&snapshot).await;
                        serving = snapshot;
                    }
                    match files {
                        Some(files) => manifest_sets.applied(files).await,
                        None => {
                            manifest_status.objects_loaded(&left_out, changed, &manifests::now());
                            if let Some(hook) = &applied_hook {
                                hook.applied();
                            }
                            // Ready once the cluster's objects were served once.
                            ready_on_load.store(true, Ordering::Release);
                        }
                    }
                }
                Update::Rejected { errors } => manifest_sets.rejected(&errors),
            }
        }
    });
    let stop_backlog = CancellationToken::new();
    tokio::spawn(crate::dispatch::backlog::feed(
        Arc::clone(&dispatcher),
        Arc::clone(&routes),
        stop_backlog.clone(),
    ));
    if !kubernetes {
        ready.store(true, Ordering::Release);
    }

    shutdown_signal().await;
    tracing::info!("Shutting down: refusing new events, draining deliveries.");
    ready.store(false, Ordering::Release);
    watcher.abort();
    if let Some(cluster) = &cluster {
        cluster.stop();
    }
    stop_backlog.cancel();
    stop_ingress.cancel();
    if tokio::time::timeout(config.drain_timeout, ingress_task)
        .await
        .is_err()
    {
        tracing::warn!("Ingress requests still running after the drain timeout.");
    }
    let unfinished = dispatcher.shutdown(config.drain_timeout).await;
    if unfinished > 0 {
        tracing::warn!(
            unfinished,
            "Deliveries still running after the drain timeout; they will be redelivered."
        );
    }
    registry
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .stop_all();
    pods.shutdown(config.drain_timeout).await;
    // Flushes the last cursor updates; joins the writer thread, so off the async workers.
    let _ = tokio::task::spawn_blocking(move || store.close()).await;
    stop_admin.cancel();
    let _ = admin_task.await;
    tracing::info!("tidegate stopped.");
    Ok(())
}

/// Applies manifest snapshots: brokers, then Services and their revisions, then triggers (which
/// may deliver to those Services).
struct Applier {
    backends: Backends,
    metrics: Arc<Metrics>,
    topology: Arc<ArcSwap<Topology>>,
    dispatcher: Arc<Dispatcher>,
    registry: Arc<std::sync::Mutex<Registry>>,
    launcher: Arc<dyn RevisionLauncher>,
}

impl Applier {
    async fn apply(&self, snapshot: &Snapshot) {
        let next = build_topology(
            snapshot,
            &self.backends,
            &self.metrics,
            &self.topology.load(),
        );
        // Subscriptions exist before the brokers accept events for them.
        for entry in next.entries() {
            let Some(broker) = &entry.broker else {
                continue;
            };
            let expected: Vec<_> = snapshot
                .triggers
                .iter()
                .filter(|t| t.namespace == entry.namespace && t.broker == entry.name)
                .map(|t| {
                    (
                        crate::dispatch::subscription_name(t),
                        crate::dispatch::subscribe_options(t),
                    )
                })
                .collect();
            broker.expect_subscriptions(&expected);
        }
        self.topology.store(Arc::new(next));
        self.registry
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .apply(&snapshot.services, self.launcher.as_ref());
        let services = snapshot
            .services
            .iter()
            .map(|s| (s.namespace.clone(), s.name.clone()))
            .collect();
        self.dispatcher
            .apply(&snapshot.triggers, &self.topology.load(), &services)
            .await;
    }
}

/// Brokers for a snapshot: an entry whose settings did not change is kept (with its open
/// backend and metric handles); a new or changed one is opened through [`Backends::open`].
fn build_topology(
    snapshot: &Snapshot,
    backends: &Backends,
    metrics: &Metrics,
    previous: &Topology,
) -> Topology {
    Topology::new(snapshot.brokers.iter().map(|b| {
        if let Some(old) = previous.get(&b.namespace, &b.name)
            && old.config == b.backend
        {
            return Arc::clone(old);
        }
        let (broker, reason) = match backends.open(&b.namespace, &b.name, &b.backend) {
            Ok(broker) => (Some(broker), None),
            Err(error) => (None, Some(error.to_string())),
        };
        tracing::info!(namespace = %b.namespace, broker = %b.name, backend = b.backend.name(), "Broker opened.");
        Arc::new(BrokerEntry {
            counters: IngestCounters::new(metrics, &b.namespace, &b.name),
            namespace: b.namespace.clone(),
            name: b.name.clone(),
            backend: b.backend.name(),
            config: b.backend.clone(),
            broker,
            reason,
        })
    }))
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use triggers::snapshot::BrokerConfig;

    fn snapshot(backend: triggers::Backend) -> Snapshot {
        Snapshot {
            brokers: vec![BrokerConfig {
                namespace: "ns".into(),
                name: "b".into(),
                backend,
            }],
            triggers: Vec::new(),
            services: Vec::new(),
            warnings: Vec::new(),
        }
    }

    fn nats(url: &str) -> triggers::Backend {
        triggers::Backend::Nats(brokers::testkit::nats_config(url, "ns", "b"))
    }

    #[tokio::test]
    async fn a_broker_is_kept_while_its_settings_hold_and_reopened_when_they_change() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).expect("store");
        let backends = Backends::new(Arc::clone(&store));
        let metrics = Metrics::new();
        let first = build_topology(
            &snapshot(triggers::Backend::Embedded),
            &backends,
            &metrics,
            &Topology::default(),
        );
        let same = build_topology(
            &snapshot(triggers::Backend::Embedded),
            &backends,
            &metrics,
            &first,
        );
        let kept = |a: &Topology, b: &Topology| {
            Arc::ptr_eq(
                a.get("ns", "b").expect("entry"),
                b.get("ns", "b").expect("entry"),
            )
        };
        assert!(
            kept(&first, &same),
            "unchanged settings keep the open broker"
        );
        let moved = build_topology(
            &snapshot(nats("nats://127.0.0.1:1")),
            &backends,
            &metrics,
            &same,
        );
        assert!(!kept(&same, &moved));
        assert_eq!(moved.get("ns", "b").map(|e| e.backend), Some("nats"));
        let again = build_topology(
            &snapshot(nats("nats://127.0.0.1:1")),
            &backends,
            &metrics,
            &moved,
        );
        assert!(kept(&moved, &again));
        let other_url = build_topology(
            &snapshot(nats("nats://127.0.0.1:2")),
            &backends,
            &metrics,
            &again,
        );
        assert!(
            !kept(&again, &other_url),
            "a changed URL reopens the broker"
        );
        store.close();
    }
}
