//! The API kinds tidegate reads and writes, the client, and what API errors mean to a user.

use std::time::Duration;

use anyhow::Context as _;
use kube::api::{Api, DynamicObject, ListParams};
use kube::core::ApiResource;
use kube::{Client, Config};

/// The field manager of every server-side apply and status patch tidegate sends.
pub const FIELD_MANAGER: &str = "tidegate";

/// `apiVersion` of tidegate's own Trigger.
pub const TIDEGATE_TRIGGER_API_VERSION: &str = "tidegate.dev/v1alpha1";

/// Every permission tidegate's calls need, as `group/resource verb` (the core group is empty):
/// `deploy/kubernetes/rbac.yaml` grants exactly these (a test compares them).
pub const PERMISSIONS: &[&str] = &[
    // Watches (list + watch; get for the controllers' reads).
    "tidegate.dev/triggers get",
    "tidegate.dev/triggers list",
    "tidegate.dev/triggers watch",
    "eventing.knative.dev/brokers get",
    "eventing.knative.dev/brokers list",
    "eventing.knative.dev/brokers watch",
    "eventing.knative.dev/triggers get",
    "eventing.knative.dev/triggers list",
    "eventing.knative.dev/triggers watch",
    "serving.knative.dev/services get",
    "serving.knative.dev/services list",
    "serving.knative.dev/services watch",
    "serving.knative.dev/routes get",
    "serving.knative.dev/routes list",
    "serving.knative.dev/routes watch",
    "serving.knative.dev/revisions get",
    "serving.knative.dev/revisions list",
    "serving.knative.dev/revisions watch",
    "autoscaling.internal.knative.dev/podautoscalers get",
    "autoscaling.internal.knative.dev/podautoscalers list",
    "autoscaling.internal.knative.dev/podautoscalers watch",
    "/configmaps get",
    "/configmaps list",
    "/configmaps watch",
    "/secrets get",
    "/secrets list",
    "/secrets watch",
    "discovery.k8s.io/endpointslices get",
    "discovery.k8s.io/endpointslices list",
    "discovery.k8s.io/endpointslices watch",
    // Status of what tidegate implements.
    "tidegate.dev/triggers/status patch",
    "eventing.knative.dev/brokers/status patch",
    "eventing.knative.dev/triggers/status patch",
    "autoscaling.internal.knative.dev/podautoscalers/status patch",
    // Owner references with blockOwnerDeletion (OwnerReferencesPermissionEnforcement).
    "tidegate.dev/triggers/finalizers update",
    "autoscaling.internal.knative.dev/podautoscalers/finalizers update",
    // Server-side apply of owned objects (create when absent, patch when present).
    "serving.knative.dev/services create",
    "serving.knative.dev/services patch",
    "/services get",
    "/services create",
    "/services patch",
    "discovery.k8s.io/endpointslices create",
    "discovery.k8s.io/endpointslices patch",
    // Scaling precise revisions.
    "apps/deployments get",
    "apps/deployments/scale patch",
    // Events (kube-runtime's recorder creates, then patches a repeated one as a series).
    "events.k8s.io/events create",
    "events.k8s.io/events patch",
];

/// One kind tidegate lists and watches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kind {
    pub resource: ApiResource,
    /// The CustomResourceDefinition that serves it; `None` for built-in kinds.
    pub crd: Option<&'static str>,
}

impl Kind {
    fn new(api_version: &str, kind: &str, plural: &str, crd: Option<&'static str>) -> Self {
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        Self {
            resource: ApiResource {
                group: group.to_owned(),
                version: version.to_owned(),
                api_version: api_version.to_owned(),
                kind: kind.to_owned(),
                plural: plural.to_owned(),
            },
            crd,
        }
    }

    /// How a user names the kind: `triggers.tidegate.dev (tidegate.dev/v1alpha1 Trigger)`.
    pub fn describe(&self) -> String {
        let r = &self.resource;
        let plural = if r.group.is_empty() {
            r.plural.clone()
        } else {
            format!("{}.{}", r.plural, r.group)
        };
        format!("{plural} ({} {})", r.api_version, r.kind)
    }

    /// The kind in every namespace.
    pub fn all(&self, client: &Client) -> Api<DynamicObject> {
        Api::all_with(client.clone(), &self.resource)
    }

    /// The kind in one namespace.
    pub fn namespaced(&self, client: &Client, namespace: &str) -> Api<DynamicObject> {
        Api::namespaced_with(client.clone(), namespace, &self.resource)
    }
}

/// Every kind tidegate needs, by what it is used for.
#[derive(Debug, Clone)]
pub struct Kinds {
    pub broker: Kind,
    pub trigger: Kind,
    pub tidegate_trigger: Kind,
    pub service: Kind,
    pub route: Kind,
    pub revision: Kind,
    pub pod_autoscaler: Kind,
    pub config_map: Kind,
    pub secret: Kind,
    pub endpoint_slice: Kind,
    pub deployment: Kind,
    pub core_service: Kind,
}

impl Default for Kinds {
    fn default() -> Self {
        Self {
            broker: Kind::new(
                "eventing.knative.dev/v1",
                "Broker",
                "brokers",
                Some("brokers.eventing.knative.dev"),
            ),
            trigger: Kind::new(
                "eventing.knative.dev/v1",
                "Trigger",
                "triggers",
                Some("triggers.eventing.knative.dev"),
            ),
            tidegate_trigger: Kind::new(
                TIDEGATE_TRIGGER_API_VERSION,
                "Trigger",
                "triggers",
                Some("triggers.tidegate.dev"),
            ),
            service: Kind::new(
                "serving.knative.dev/v1",
                "Service",
                "services",
                Some("services.serving.knative.dev"),
            ),
            route: Kind::new(
                "serving.knative.dev/v1",
                "Route",
                "routes",
                Some("routes.serving.knative.dev"),
            ),
            revision: Kind::new(
                "serving.knative.dev/v1",
                "Revision",
                "revisions",
                Some("revisions.serving.knative.dev"),
            ),
            pod_autoscaler: Kind::new(
                "autoscaling.internal.knative.dev/v1alpha1",
                "PodAutoscaler",
                "podautoscalers",
                Some("podautoscalers.autoscaling.internal.knative.dev"),
            ),
            config_map: Kind::new("v1", "ConfigMap", "configmaps", None),
            secret: Kind::new("v1", "Secret", "secrets", None),
            endpoint_slice: Kind::new(
                "discovery.k8s.io/v1",
                "EndpointSlice",
                "endpointslices",
                None,
            ),
            deployment: Kind::new("apps/v1", "Deployment", "deployments", None),
            core_service: Kind::new("v1", "Service", "services", None),
        }
    }
}

impl Kinds {
    /// The kinds listed and watched (the rest are only written or read by name).
    pub fn watched(&self) -> [&Kind; 10] {
        [
            &self.broker,
            &self.trigger,
            &self.tidegate_trigger,
            &self.service,
            &self.route,
            &self.revision,
            &self.pod_autoscaler,
            &self.config_map,
            &self.secret,
            &self.endpoint_slice,
        ]
    }
}

/// A client for `kubeconfig` (a file), or else `KUBECONFIG` / `~/.kube/config`, or else the
/// in-cluster service account. Requests time out after `timeout`; the client itself never
/// retries (tidegate backs off itself and says why it is waiting).
pub async fn client(
    kubeconfig: Option<&std::path::Path>,
    timeout: Duration,
) -> anyhow::Result<Client> {
    // kube's rustls client takes the process-wide provider: make it ring whatever else is linked.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut config = match kubeconfig {
        Some(path) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("reading the kubeconfig {}", path.display()))?;
            Config::from_custom_kubeconfig(kubeconfig, &kube::config::KubeConfigOptions::default())
                .await
                .with_context(|| format!("using the kubeconfig {}", path.display()))?
        }
        None => Config::infer()
            .await
            .context("finding the Kubernetes API (KUBECONFIG, ~/.kube/config or the in-cluster service account)")?,
    };
    config.default_retry = false;
    config.connect_timeout = Some(timeout);
    config.write_timeout = Some(timeout);
    Client::try_from(config).context("building the Kubernetes client")
}

/// Checks that every watched kind can be listed, naming the CRD that is missing or the
/// permission that is refused.
pub async fn preflight(client: &Client, kinds: &Kinds, timeout: Duration) -> anyhow::Result<()> {
    let mut problems = Vec::new();
    for kind in kinds.watched() {
        let api = kind.all(client);
        let params = ListParams::default().limit(1);
        match tokio::time::timeout(timeout, api.list(&params)).await {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => problems.push(explain(kind, "list", &error)),
            Err(_) => problems.push(format!(
                "listing {} took longer than {timeout:?}",
                kind.describe()
            )),
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        anyhow::bail!(
            "the Kubernetes API cannot serve tidegate: {}",
            problems.join("; ")
        )
    }
}

/// What an API error means for `verb` on `kind`, in words an operator acts on.
pub fn explain(kind: &Kind, verb: &str, error: &kube::Error) -> String {
    match status_code(error) {
        Some(404) if kind.crd.is_some() => format!(
            "the CRD {} ({} {}) is not installed",
            kind.crd.unwrap_or_default(),
            kind.resource.api_version,
            kind.resource.kind
        ),
        Some(403) => format!(
            "RBAC: tidegate's service account may not {verb} {}: {}",
            kind.describe(),
            api_message(error)
        ),
        _ => format!("cannot {verb} {}: {}", kind.describe(), api_message(error)),
    }
}

/// The HTTP status of an API error (kube's `is_*` helpers compare reasons, which a body that is
/// not a Status lacks).
pub fn status_code(error: &kube::Error) -> Option<u16> {
    match error {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}

/// The server's message, or the client error.
pub fn api_message(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) if !status.message.is_empty() => {
            format!("{} ({})", status.message, status.code)
        }
        other => other.to_string(),
    }
}
