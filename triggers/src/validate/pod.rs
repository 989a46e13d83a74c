//! The pod spec of a revision template: Knative's field masks ([`mask`]), then the Kubernetes
//! types from `k8s-openapi`, then Knative's defaulting and validation rules, then what each
//! field means on the local runtime (env and files resolved from the set's Secrets and
//! ConfigMaps; fields without a local meaning listed once).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1 as core;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::{Map, Value};

use super::knative::{Features, ServingConfig};
use super::syntax::check_dns_label;
use super::{ConfigMaps, Scope, Secrets, decode_base64, secret_bytes};
use crate::error::join_key;
use crate::snapshot::{
    ContainerSpec, DEFAULT_LIVENESS_PERIOD, DEFAULT_PROBE_FAILURE_THRESHOLD,
    DEFAULT_PROBE_INITIAL_DELAY, DEFAULT_PROBE_PATH, DEFAULT_PROBE_PERIOD,
    DEFAULT_PROBE_SUCCESS_THRESHOLD, DEFAULT_PROBE_TIMEOUT, EnvValue, EnvVar, PodField,
    PodTemplate, Probe, ProbeAction, Resources, Sensitive, Volume, VolumeFile, VolumeMount,
    VolumeSource,
};

mod mask;
pub(crate) mod quantity;

/// Variables tidegate sets in the serving container (Knative reserves the same).
const RESERVED_ENV: [&str; 4] = ["PORT", "K_SERVICE", "K_CONFIGURATION", "K_REVISION"];
/// Ports Knative's queue-proxy and its metrics use, which a revision may not listen on.
const RESERVED_PORTS: [i32; 6] = [8012, 8013, 8022, 9090, 9091, 8008];
/// Mount paths Knative reserves.
const RESERVED_PATHS: [&str; 3] = ["/", "/dev", "/dev/log"];
/// Container name Knative reserves for its sidecar.
const RESERVED_CONTAINER_NAME: &str = "queue-proxy";
/// Knative's default container name (`config-defaults` `container-name-template`).
const DEFAULT_CONTAINER_NAME: &str = "user-container";
/// File mode of Secret and ConfigMap files when neither `defaultMode` nor `items[].mode` says.
const DEFAULT_FILE_MODE: i32 = 0o644;

/// What a pod spec may refer to, and how Knative is configured.
pub(super) struct Sources<'a, 'm> {
    pub(super) config_maps: &'a ConfigMaps<'m>,
    pub(super) secrets: &'a Secrets<'m>,
    pub(super) features: &'a Features,
    /// Knative's revision and autoscaler defaults.
    pub(super) serving: &'a ServingConfig,
}

/// The pod's identity, for `fieldRef`.
pub(super) struct PodIdentity<'a> {
    pub(super) namespace: &'a str,
    pub(super) labels: &'a BTreeMap<String, String>,
    pub(super) annotations: &'a BTreeMap<String, String>,
}

/// The pod spec `pod` (written at `field`), validated and resolved.
pub(super) fn pod_template(
    pod: &Map<String, Value>,
    field: &str,
    identity: &PodIdentity<'_>,
    sources: &Sources<'_, '_>,
    scope: &mut Scope<'_>,
) -> Option<PodTemplate> {
    let mut raw = Value::Object(pod.clone());
    let mut found = mask::Findings::default();
    mask::check(&mut raw, &mask::POD, field, sources.features, &mut found);
    if !found.errors.is_empty() {
        for (path, reason) in found.errors {
            scope.error(path, reason);
        }
        return None;
    }
    default_container_names(&mut raw);
    let spec: core::PodSpec = match serde_path_to_error::deserialize(raw) {
        Ok(spec) => spec,
        Err(error) => {
            let path = error.path().to_string();
            let at = if path == "." {
                field.to_owned()
            } else {
                format!("{field}.{path}")
            };
            scope.error(at, error.into_inner().to_string());
            return None;
        }
    };
    let mut check = Checker {
        field,
        identity,
        sources,
        scope,
        ok: true,
        ignored: found.ignored,
        blockers: Vec::new(),
    };
    let template = check.pod(&spec);
    let Checker {
        ok,
        mut ignored,
        blockers,
        ..
    } = check;
    let (containers, serving, volumes) = template?;
    if !ok {
        return None;
    }
    ignored.dedup();
    Some(PodTemplate {
        containers,
        serving,
        volumes,
        ignored_locally: ignored,
        local_blocker: (!blockers.is_empty()).then(|| blockers.join("; ")),
        kubernetes: Arc::new(spec),
    })
}

/// Knative's defaulting of container names: `user-container` for a lone container, else
/// `user-container-{n}` with the first free suffix.
fn default_container_names(raw: &mut Value) {
    let Some(Value::Array(containers)) = raw.get_mut("containers") else {
        return;
    };
    let taken: HashSet<String> = containers
        .iter()
        .filter_map(|c| c.get("name")?.as_str().map(str::to_owned))
        .filter(|n| !n.is_empty())
        .collect();
    let several = containers.len() > 1;
    let mut suffix = 0;
    for container in containers.iter_mut() {
        let Value::Object(container) = container else {
            continue;
        };
        let unnamed = container
            .get("name")
            .is_none_or(|n| n.is_null() || n.as_str() == Some(""));
        if !unnamed {
            continue;
        }
        let mut name = DEFAULT_CONTAINER_NAME.to_owned();
        if several || taken.contains(&name) {
            loop {
                name = format!("{DEFAULT_CONTAINER_NAME}-{suffix}");
                suffix += 1;
                if !taken.contains(&name) {
                    break;
                }
            }
        }
        container.insert("name".into(), Value::String(name));
    }
}

struct Checker<'s, 'a, 'm, 'o> {
    field: &'s str,
    identity: &'s PodIdentity<'s>,
    sources: &'s Sources<'a, 'm>,
    scope: &'s mut Scope<'o>,
    ok: bool,
    ignored: Vec<String>,
    /// Why the pod cannot run locally.
    blockers: Vec<String>,
}

impl Checker<'_, '_, '_, '_> {
    fn error(&mut self, field: impl Into<String>, reason: impl Into<String>) {
        self.scope.error(field, reason);
        self.ok = false;
    }

    fn at(&self, rest: &str) -> String {
        format!("{}.{rest}", self.field)
    }

    fn pod(&mut self, spec: &core::PodSpec) -> Option<(Vec<ContainerSpec>, usize, Vec<Volume>)> {
        if spec.automount_service_account_token == Some(true) {
            self.error(
                self.at("automountServiceAccountToken"),
                "Knative accepts only false here (or leave it unset)",
            );
        }
        if spec.init_containers.as_ref().is_some_and(|c| !c.is_empty()) {
            self.blockers.push(format!(
                "{} do not run on the local runtime",
                self.at("initContainers")
            ));
        }
        let volumes = self.volumes(spec);
        let containers = spec.containers.as_slice();
        if containers.is_empty() {
            self.error(
                self.at("containers"),
                "one container is required; found none",
            );
            return None;
        }
        if containers.len() > 1 && !self.sources.features.allows("multi-container") {
            self.error(
                self.at("containers"),
                format!(
                    "multi-container is disabled in knative-serving/config-features, but found {} \
                     containers",
                    containers.len()
                ),
            );
        }
        let with_ports: Vec<usize> = (0..containers.len())
            .filter(|&i| containers[i].ports.as_ref().is_some_and(|p| !p.is_empty()))
            .collect();
        let port_count: usize = containers
            .iter()
            .map(|c| c.ports.as_ref().map_or(0, Vec::len))
            .sum();
        if port_count > 1 {
            let at = with_ports.first().map_or(0, |&i| i);
            self.error(
                self.at(&format!("containers[{at}].ports")),
                "more than one container port is set: only a single port is allowed across all \
                 containers",
            );
        }
        if containers.len() > 1 && port_count == 0 {
            self.error(
                self.at("containers"),
                "a revision with several containers needs a port on exactly one of them (the \
                 serving container)",
            );
        }
        let serving = with_ports.first().copied().unwrap_or(0);
        let mut names = HashSet::new();
        let mut mounted = HashSet::new();
        let mut specs = Vec::with_capacity(containers.len());
        for (index, container) in containers.iter().enumerate() {
            let field = self.at(&format!("containers[{index}]"));
            if !names.insert(container.name.as_str()) {
                self.error(
                    join_key(&field, "name"),
                    format!("duplicate container name {:?}", container.name),
                );
            }
            for mount in container.volume_mounts.iter().flatten() {
                mounted.insert(mount.name.clone());
            }
            specs.push(self.container(container, index == serving, &field, &volumes));
        }
        for (index, volume) in volumes.iter().enumerate() {
            if !mounted.contains(&volume.name) {
                self.error(
                    self.at(&format!("volumes[{index}].name")),
                    format!(
                        "volume {:?} is not mounted by any container (Knative requires every \
                         volume to be mounted)",
                        volume.name
                    ),
                );
            }
        }
        let specs: Option<Vec<ContainerSpec>> = specs.into_iter().collect();
        Some((specs?, serving, volumes))
    }

    fn container(
        &mut self,
        container: &core::Container,
        serving: bool,
        field: &str,
        volumes: &[Volume],
    ) -> Option<ContainerSpec> {
        if let Err(why) = check_dns_label(&container.name) {
            self.error(join_key(field, "name"), why);
        } else if container.name == RESERVED_CONTAINER_NAME {
            self.error(
                join_key(field, "name"),
                format!("{RESERVED_CONTAINER_NAME:?} is a reserved container name"),
            );
        }
        let command = container.command.clone().unwrap_or_default();
        let image = container.image.clone().filter(|i| !i.trim().is_empty());
        if command.is_empty() {
            if image.is_none() {
                self.error(
                    join_key(field, "command"),
                    "set command (the local process runtime runs it) or image (Kubernetes mode \
                     runs it); found neither",
                );
            } else {
                let reason = format!(
                    "{field} has only an image ({}): the local runtime runs command and args, so \
                     this revision runs only in Kubernetes mode; add command to run it here",
                    image.as_deref().unwrap_or_default()
                );
                self.scope.warn(join_key(field, "command"), reason.clone());
                self.blockers.push(reason);
            }
        } else if command[0].trim().is_empty() {
            self.error(
                format!("{field}.command[0]"),
                "the program must not be empty",
            );
        } else if image.is_some() {
            self.ignored.push(join_key(field, "image"));
        }
        if container
            .working_dir
            .as_deref()
            .is_some_and(|d| d.trim().is_empty())
        {
            self.error(join_key(field, "workingDir"), "must not be empty");
        }
        if let Some(security) = &container.security_context
            && security.privileged == Some(true)
        {
            self.error(
                format!("{field}.securityContext.privileged"),
                "Knative accepts only false here (or leave it unset)",
            );
        }
        let env = self.env(container, serving, field);
        let port = self.port(container, field);
        let port_name = container
            .ports
            .iter()
            .flatten()
            .next()
            .and_then(|p| p.name.clone());
        let probe_context = ProbeContext {
            serving,
            port_name: port_name.as_deref(),
        };
        let probing = serving || self.sources.features.enabled("multi-container-probing");
        let probe = |this: &mut Self, key: &str, probe: Option<&core::Probe>| match probe {
            None => Some(None),
            Some(_) if !probing => {
                this.error(
                    join_key(field, key),
                    "probes on a container without the port need the Knative feature flag \
                     multi-container-probing enabled in knative-serving/config-features",
                );
                None
            }
            Some(p) => this
                .probe(p, key, &join_key(field, key), &probe_context)
                .map(Some),
        };
        let readiness = probe(self, "readinessProbe", container.readiness_probe.as_ref());
        let liveness = probe(self, "livenessProbe", container.liveness_probe.as_ref());
        let startup = probe(self, "startupProbe", container.startup_probe.as_ref());
        let mounts = self.mounts(container, field, volumes);
        let resources = self.resources(container, field);
        Some(ContainerSpec {
            name: container.name.clone(),
            image,
            command,
            args: container.args.clone().unwrap_or_default(),
            env: env?,
            port: port?,
            h2c: port_name.as_deref() == Some("h2c"),
            working_dir: container.working_dir.clone(),
            readiness: readiness?,
            liveness: liveness?,
            startup: startup?,
            mounts: mounts?,
            resources: resources?,
        })
    }

    fn port(&mut self, container: &core::Container, field: &str) -> Option<Option<u16>> {
        let Some(port) = container.ports.iter().flatten().next() else {
            return Some(None);
        };
        let field = format!("{field}.ports[0]");
        match port.name.as_deref() {
            None | Some("" | "http1" | "h2c") => {}
            Some(other) => self.error(
                join_key(&field, "name"),
                format!("expected empty, http1 or h2c, found {other:?}"),
            ),
        }
        match port.protocol.as_deref() {
            None | Some("" | "TCP") => {}
            Some(other) => self.error(
                join_key(&field, "protocol"),
                format!("only TCP is supported, found {other:?}"),
            ),
        }
        if RESERVED_PORTS.contains(&port.container_port) {
            self.error(
                join_key(&field, "containerPort"),
                format!(
                    "{} is a reserved port (Knative's queue-proxy uses it); use another",
                    port.container_port
                ),
            );
        }
        // Errors above are recorded in `self.ok`, which rejects the whole pod spec.
        self.port_number(port.container_port, &join_key(&field, "containerPort"))
            .map(Some)
    }

    fn port_number(&mut self, port: i32, field: &str) -> Option<u16> {
        match u16::try_from(port) {
            Ok(port) if port > 0 => Some(port),
            _ => {
                self.error(
                    field,
                    format!("must be a port from 1 to 65535, found {port}"),
                );
                None
            }
        }
    }

    fn env(
        &mut self,
        container: &core::Container,
        serving: bool,
        field: &str,
    ) -> Option<Vec<EnvVar>> {
        let namespace = self.identity.namespace;
        let mut out: Vec<EnvVar> = Vec::new();
        let mut ok = true;
        for (index, source) in container.env_from.iter().flatten().enumerate() {
            let at = format!("{field}.envFrom[{index}]");
            let prefix = source.prefix.clone().unwrap_or_default();
            match (&source.config_map_ref, &source.secret_ref) {
                (Some(cm), None) => {
                    let optional = cm.optional == Some(true);
                    match self.sources.config_maps.get(&(namespace, cm.name.as_str())) {
                        Some((config_map, _)) => {
                            for (key, value) in &config_map.data {
                                out.push(EnvVar {
                                    name: format!("{prefix}{key}"),
                                    value: EnvValue::Plain(value.clone()),
                                });
                            }
                        }
                        None if optional => {}
                        None => {
                            self.error(
                                format!("{at}.configMapRef.name"),
                                missing("ConfigMap", namespace, &cm.name),
                            );
                            ok = false;
                        }
                    }
                }
                (None, Some(secret)) => {
                    let optional = secret.optional == Some(true);
                    match self.secret(&secret.name) {
                        Some(values) => {
                            for (key, value) in values {
                                match String::from_utf8(value) {
                                    Ok(text) => out.push(EnvVar {
                                        name: format!("{prefix}{key}"),
                                        value: EnvValue::Secret(Sensitive(text)),
                                    }),
                                    Err(_) => {
                                        self.error(
                                            format!("{at}.secretRef"),
                                            format!(
                                                "key {key:?} of Secret {namespace}/{} is not \
                                                 UTF-8 text, so it cannot be an environment \
                                                 variable",
                                                secret.name
                                            ),
                                        );
                                        ok = false;
                                    }
                                }
                            }
                        }
                        None if optional => {}
                        None => {
                            self.error(
                                format!("{at}.secretRef.name"),
                                missing("Secret", namespace, &secret.name),
                            );
                            ok = false;
                        }
                    }
                }
                _ => {
                    self.error(&at, "set exactly one of configMapRef or secretRef");
                    ok = false;
                }
            }
        }
        for (index, var) in container.env.iter().flatten().enumerate() {
            let at = format!("{field}.env[{index}]");
            if var.name.is_empty() || var.name.contains('=') {
                self.error(
                    format!("{at}.name"),
                    "must not be empty and must not contain '='",
                );
                ok = false;
                continue;
            }
            let reserved =
                RESERVED_ENV.contains(&var.name.as_str()) && (serving || var.name != "PORT");
            if reserved {
                self.error(
                    format!("{at}.name"),
                    format!("{} is reserved: tidegate sets it in every pod", var.name),
                );
                ok = false;
                continue;
            }
            let value = match (&var.value, &var.value_from) {
                (Some(_), Some(_)) => {
                    self.error(&at, "set value or valueFrom, not both");
                    ok = false;
                    continue;
                }
                (value, None) => Some(EnvValue::Plain(value.clone().unwrap_or_default())),
                (None, Some(from)) => self.value_from(from, &format!("{at}.valueFrom")),
            };
            match value {
                Some(value) => out.push(EnvVar {
                    name: var.name.clone(),
                    value,
                }),
                None if self.ok => {} // an optional reference to something absent
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    /// A `valueFrom`; `None` either on an error (reported) or for an absent optional key.
    fn value_from(&mut self, from: &core::EnvVarSource, at: &str) -> Option<EnvValue> {
        let namespace = self.identity.namespace;
        let set = [
            from.config_map_key_ref.is_some(),
            from.secret_key_ref.is_some(),
            from.field_ref.is_some(),
            from.resource_field_ref.is_some(),
            from.file_key_ref.is_some(),
        ];
        if set.iter().filter(|s| **s).count() != 1 {
            self.error(
                at,
                "set exactly one of configMapKeyRef, secretKeyRef, fieldRef or resourceFieldRef",
            );
            return None;
        }
        if let Some(selector) = &from.config_map_key_ref {
            let optional = selector.optional == Some(true);
            let Some((config_map, _)) = self
                .sources
                .config_maps
                .get(&(namespace, selector.name.as_str()))
            else {
                if !optional {
                    self.error(
                        format!("{at}.configMapKeyRef.name"),
                        missing("ConfigMap", namespace, &selector.name),
                    );
                }
                return None;
            };
            return match config_map.data.get(&selector.key) {
                Some(value) => Some(EnvValue::Plain(value.clone())),
                None => {
                    if !optional {
                        self.error(
                            format!("{at}.configMapKeyRef.key"),
                            format!(
                                "ConfigMap {namespace}/{} has no key {:?} (set optional: true \
                                 if that is expected)",
                                selector.name, selector.key
                            ),
                        );
                    }
                    None
                }
            };
        }
        if let Some(selector) = &from.secret_key_ref {
            let optional = selector.optional == Some(true);
            let Some(mut values) = self.secret(&selector.name) else {
                if !optional {
                    self.error(
                        format!("{at}.secretKeyRef.name"),
                        missing("Secret", namespace, &selector.name),
                    );
                }
                return None;
            };
            return match values.remove(&selector.key).map(String::from_utf8) {
                Some(Ok(text)) => Some(EnvValue::Secret(Sensitive(text))),
                Some(Err(_)) => {
                    self.error(
                        format!("{at}.secretKeyRef.key"),
                        format!(
                            "key {:?} of Secret {namespace}/{} is not UTF-8 text, so it cannot \
                             be an environment variable",
                            selector.key, selector.name
                        ),
                    );
                    None
                }
                None => {
                    if !optional {
                        self.error(
                            format!("{at}.secretKeyRef.key"),
                            format!(
                                "Secret {namespace}/{} has no key {:?} (set optional: true if \
                                 that is expected)",
                                selector.name, selector.key
                            ),
                        );
                    }
                    None
                }
            };
        }
        if let Some(field_ref) = &from.field_ref {
            return self.field_ref(&field_ref.field_path, &format!("{at}.fieldRef.fieldPath"));
        }
        self.error(
            at,
            "resourceFieldRef is not available on the local runtime; use a literal value",
        );
        None
    }

    fn field_ref(&mut self, path: &str, at: &str) -> Option<EnvValue> {
        let lookup = |map: &BTreeMap<String, String>, rest: &str| -> Option<String> {
            let key = rest.strip_prefix("['")?.strip_suffix("']")?;
            Some(map.get(key).cloned().unwrap_or_default())
        };
        let value = match path {
            "metadata.name" => return Some(EnvValue::PodField(PodField::Name)),
            "metadata.uid" => return Some(EnvValue::PodField(PodField::Uid)),
            "metadata.namespace" => Some(self.identity.namespace.to_owned()),
            "status.podIP" | "status.hostIP" => Some("127.0.0.1".to_owned()),
            "status.podIPs" | "status.hostIPs" => Some("127.0.0.1".to_owned()),
            "spec.nodeName" => Some("localhost".to_owned()),
            "spec.serviceAccountName" => Some("default".to_owned()),
            _ => path
                .strip_prefix("metadata.labels")
                .and_then(|rest| lookup(self.identity.labels, rest))
                .or_else(|| {
                    path.strip_prefix("metadata.annotations")
                        .and_then(|rest| lookup(self.identity.annotations, rest))
                }),
        };
        match value {
            Some(value) => Some(EnvValue::Plain(value)),
            None => {
                self.error(
                    at,
                    format!(
                        "unsupported field path {path:?}: expected metadata.name, \
                         metadata.namespace, metadata.uid, metadata.labels['…'], \
                         metadata.annotations['…'], spec.nodeName, spec.serviceAccountName, \
                         status.podIP or status.hostIP"
                    ),
                );
                None
            }
        }
    }

    /// A Secret's values; `None` when the set does not have it. Bad base64 is reported at the
    /// Secret (and the values it could decode are returned).
    fn secret(&mut self, name: &str) -> Option<BTreeMap<String, Vec<u8>>> {
        let (secret, origin) = self
            .sources
            .secrets
            .get(&(self.identity.namespace, name))
            .copied()?;
        let (values, bad) = secret_bytes(secret);
        for key in bad {
            self.scope.at(origin).error(
                join_key("data", key),
                "must be base64 (use stringData for plain values)",
            );
            self.ok = false;
        }
        Some(values)
    }

    fn probe(
        &mut self,
        probe: &core::Probe,
        kind: &str,
        field: &str,
        context: &ProbeContext<'_>,
    ) -> Option<Probe> {
        let readiness = kind == "readinessProbe";
        let handlers = [
            probe.http_get.is_some(),
            probe.tcp_socket.is_some(),
            probe.exec.is_some(),
            probe.grpc.is_some(),
        ];
        let count = handlers.iter().filter(|h| **h).count();
        if count != 1 {
            let found = if count == 0 { "none" } else { "several" };
            self.error(
                field,
                format!("set exactly one of httpGet, tcpSocket, exec or grpc; found {found}"),
            );
            return None;
        }
        let action = if let Some(http) = &probe.http_get {
            let path = match http.path.as_deref() {
                None | Some("") => DEFAULT_PROBE_PATH.to_owned(),
                Some(path) if path.starts_with('/') => path.to_owned(),
                Some(path) => format!("/{path}"),
            };
            if http
                .scheme
                .as_deref()
                .is_some_and(|s| s.eq_ignore_ascii_case("https"))
            {
                self.blockers.push(format!(
                    "{field}.httpGet.scheme HTTPS probes are not available on the local runtime"
                ));
            }
            let headers = http
                .http_headers
                .iter()
                .flatten()
                .map(|h| (h.name.clone(), h.value.clone()))
                .collect();
            let port = self.probe_port(&http.port, &format!("{field}.httpGet.port"), context);
            ProbeAction::HttpGet {
                path,
                port: port?,
                headers,
            }
        } else if let Some(tcp) = &probe.tcp_socket {
            let port = self.probe_port(&tcp.port, &format!("{field}.tcpSocket.port"), context);
            ProbeAction::TcpSocket { port: port? }
        } else if let Some(exec) = &probe.exec {
            let command = exec.command.clone().unwrap_or_default();
            if command.first().is_none_or(|c| c.trim().is_empty()) {
                self.error(format!("{field}.exec.command"), "give the program to run");
                return None;
            }
            ProbeAction::Exec { command }
        } else {
            let grpc = probe.grpc.as_ref()?;
            let port = if grpc.port == 0 && context.serving {
                None
            } else {
                Some(self.port_number(grpc.port, &format!("{field}.grpc.port"))?)
            };
            ProbeAction::Grpc {
                port,
                service: grpc.service.clone().unwrap_or_default(),
            }
        };
        let default_period = if readiness {
            DEFAULT_PROBE_PERIOD
        } else {
            DEFAULT_LIVENESS_PERIOD
        };
        let timing = |this: &mut Self, key: &str, value: Option<i32>, min: i32, default| match value
        {
            None => Some(default),
            Some(n) if n >= min => Some(Duration::from_secs(u64::from(n.unsigned_abs()))),
            Some(n) => {
                let bound = if min == 0 {
                    "0 or more"
                } else {
                    "greater than 0"
                };
                this.error(join_key(field, key), format!("must be {bound}, found {n}"));
                None
            }
        };
        // Knative: a readiness period of zero is its aggressive probe, which has no timeout or
        // failure threshold of its own.
        if readiness && probe.period_seconds.unwrap_or(0) == 0 {
            for (key, value) in [
                ("timeoutSeconds", probe.timeout_seconds),
                ("failureThreshold", probe.failure_threshold),
            ] {
                if value.is_some_and(|n| n != 0) {
                    self.error(
                        join_key(field, key),
                        format!("{key} is disallowed when periodSeconds is zero (as in Knative)"),
                    );
                    return None;
                }
            }
        }
        let initial_delay = timing(
            self,
            "initialDelaySeconds",
            probe.initial_delay_seconds,
            0,
            DEFAULT_PROBE_INITIAL_DELAY,
        );
        let period_min = if readiness { 0 } else { 1 };
        let period = timing(
            self,
            "periodSeconds",
            // Go's zero value is "unset": 0 is the default, except a readiness period, where
            // it means Knative's aggressive probing.
            probe.period_seconds.filter(|&n| readiness || n != 0),
            period_min,
            default_period,
        );
        let timeout = timing(
            self,
            "timeoutSeconds",
            probe.timeout_seconds.filter(|&n| n != 0),
            1,
            DEFAULT_PROBE_TIMEOUT,
        );
        let threshold = |this: &mut Self, key: &str, value: Option<i32>, default: u32| match value {
            None => Some(default),
            Some(n) => match u32::try_from(n) {
                Ok(n) if n > 0 => Some(n),
                _ => {
                    this.error(
                        join_key(field, key),
                        format!("must be 1 or more, found {n}"),
                    );
                    None
                }
            },
        };
        let failure_threshold = threshold(
            self,
            "failureThreshold",
            probe.failure_threshold.filter(|&n| n != 0),
            DEFAULT_PROBE_FAILURE_THRESHOLD,
        );
        let success_threshold = threshold(
            self,
            "successThreshold",
            probe.success_threshold.filter(|&n| n != 0),
            DEFAULT_PROBE_SUCCESS_THRESHOLD,
        );
        if !readiness && success_threshold.is_some_and(|n| n != 1) {
            self.error(
                join_key(field, "successThreshold"),
                "must be 1 for liveness and startup probes (as Kubernetes requires)",
            );
            return None;
        }
        Some(Probe {
            action,
            initial_delay: initial_delay?,
            period: period?,
            timeout: timeout?,
            failure_threshold: failure_threshold?,
            success_threshold: success_threshold?,
        })
    }

    /// A probe's port: on the serving container unset, 0 or the port's name mean the
    /// container's port (Knative probes the user port); elsewhere it must be a number.
    fn probe_port(
        &mut self,
        port: &IntOrString,
        field: &str,
        context: &ProbeContext<'_>,
    ) -> Option<Option<u16>> {
        match port {
            IntOrString::Int(0) if context.serving => Some(None),
            IntOrString::Int(n) => self.port_number(*n, field).map(Some),
            IntOrString::String(name) if name.is_empty() && context.serving => Some(None),
            IntOrString::String(name)
                if context.serving && Some(name.as_str()) == context.port_name =>
            {
                Some(None)
            }
            IntOrString::String(name) => {
                let reason = if context.serving {
                    format!("probe port {name:?} must match the container port's name")
                } else {
                    "give the probe's port as a number on a container without the port".to_owned()
                };
                self.error(field, reason);
                None
            }
        }
    }

    fn mounts(
        &mut self,
        container: &core::Container,
        field: &str,
        volumes: &[Volume],
    ) -> Option<Vec<VolumeMount>> {
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        let mut ok = true;
        for (index, mount) in container.volume_mounts.iter().flatten().enumerate() {
            let at = format!("{field}.volumeMounts[{index}]");
            let Some(volume) = volumes.iter().find(|v| v.name == mount.name) else {
                self.error(
                    format!("{at}.name"),
                    format!("no volume named {:?} in spec.volumes", mount.name),
                );
                ok = false;
                continue;
            };
            let path = clean_path(&mount.mount_path);
            if mount.mount_path.is_empty() {
                self.error(format!("{at}.mountPath"), "must not be empty");
                ok = false;
            } else if mount.mount_path.split('/').any(|part| part == "..") {
                self.error(
                    format!("{at}.mountPath"),
                    format!("must not contain '..', found {:?}", mount.mount_path),
                );
                ok = false;
            } else if !mount.mount_path.starts_with('/') {
                self.error(
                    format!("{at}.mountPath"),
                    format!("must be an absolute path, found {:?}", mount.mount_path),
                );
                ok = false;
            } else if RESERVED_PATHS.contains(&path.as_str()) {
                self.error(
                    format!("{at}.mountPath"),
                    format!("{path:?} is a reserved path"),
                );
                ok = false;
            } else if !seen.insert(path.clone()) {
                self.error(
                    format!("{at}.mountPath"),
                    format!(
                        "{path:?} is mounted twice in this container; mount paths must be unique"
                    ),
                );
                ok = false;
            }
            let sub_path = mount.sub_path.clone().filter(|s| !s.is_empty());
            if let Some(sub) = &sub_path
                && let Err(why) = relative_inside(sub)
            {
                self.error(format!("{at}.subPath"), why);
                ok = false;
            }
            if mount.sub_path_expr.is_some() {
                self.error(
                    format!("{at}.subPathExpr"),
                    "unknown field (Knative does not accept it)",
                );
                ok = false;
            }
            if let VolumeSource::Unavailable(kind) = &volume.source {
                self.blockers.push(format!(
                    "{at} mounts volume {:?} ({kind}), which the local runtime cannot provide",
                    volume.name
                ));
            }
            // Knative's defaulting makes every mount read-only except emptyDir (and claims),
            // whatever `readOnly` says.
            let writable_kind = matches!(
                volume.source,
                VolumeSource::EmptyDir { .. } | VolumeSource::Unavailable(_)
            );
            let read_only = !writable_kind || mount.read_only == Some(true);
            if mount.read_only == Some(false) && !writable_kind {
                self.scope.warn(
                    format!("{at}.readOnly"),
                    "mounted read-only anyway: Knative makes every mount but emptyDir and \
                     persistentVolumeClaim read-only",
                );
            }
            out.push(VolumeMount {
                volume: mount.name.clone(),
                mount_path: path,
                sub_path,
                read_only,
            });
        }
        ok.then_some(out)
    }

    fn resources(&mut self, container: &core::Container, field: &str) -> Option<Resources> {
        // `revision-*-request` / `-limit` of config-defaults fill what the container leaves
        // unset, as Knative's defaulting does.
        let mut resources = container.resources.clone().unwrap_or_default();
        for (kind, name, value) in &self.sources.serving.resources {
            let map = match *kind {
                "limits" => resources.limits.get_or_insert_with(BTreeMap::new),
                _ => resources.requests.get_or_insert_with(BTreeMap::new),
            };
            map.entry((*name).to_owned())
                .or_insert_with(|| Quantity(value.clone()));
        }
        let resources = &resources;
        let mut out = Resources::default();
        let mut ok = true;
        for (kind, map) in [
            ("limits", &resources.limits),
            ("requests", &resources.requests),
        ] {
            for (name, quantity) in map.iter().flatten() {
                let at = join_key(&format!("{field}.resources.{kind}"), name);
                out.written
                    .insert(format!("{kind}.{name}"), quantity.0.clone());
                let parsed = match name.as_str() {
                    "cpu" => quantity::cpu_millis(&quantity.0),
                    "memory" | "ephemeral-storage" => quantity::bytes(&quantity.0),
                    _ => quantity::bytes(&quantity.0).map(|_| 0),
                };
                let value = match parsed {
                    Ok(value) => value,
                    Err(why) => {
                        self.error(at, why);
                        ok = false;
                        continue;
                    }
                };
                match (kind, name.as_str()) {
                    ("limits", "cpu") => out.limits_cpu_millis = Some(value),
                    ("limits", "memory") => out.limits_memory = Some(value),
                    ("requests", "cpu") => out.requests_cpu_millis = Some(value),
                    ("requests", "memory") => out.requests_memory = Some(value),
                    _ => {}
                }
            }
        }
        for (limit, request, name) in [
            (out.limits_cpu_millis, out.requests_cpu_millis, "cpu"),
            (out.limits_memory, out.requests_memory, "memory"),
        ] {
            if let (Some(limit), Some(request)) = (limit, request)
                && request > limit
            {
                self.error(
                    format!("{field}.resources.requests.{name}"),
                    format!("must be at most limits.{name}"),
                );
                ok = false;
            }
        }
        if resources.requests.as_ref().is_some_and(|r| !r.is_empty()) {
            self.ignored.push(format!("{field}.resources.requests"));
        }
        let limits = resources.limits.iter().flatten();
        if limits.filter(|(name, _)| name.as_str() != "memory").count() > 0 {
            self.ignored
                .push(format!("{field}.resources.limits (all but memory)"));
        }
        ok.then_some(out)
    }

    fn volumes(&mut self, spec: &core::PodSpec) -> Vec<Volume> {
        let mut names = HashSet::new();
        let mut out = Vec::new();
        for (index, volume) in spec.volumes.iter().flatten().enumerate() {
            let at = self.at(&format!("volumes[{index}]"));
            if let Err(why) = check_dns_label(&volume.name) {
                self.error(format!("{at}.name"), why);
            } else if !names.insert(volume.name.clone()) {
                self.error(
                    format!("{at}.name"),
                    format!("duplicate volume name {:?}", volume.name),
                );
            }
            let source = self.volume_source(volume, &at);
            if let Some(source) = source {
                out.push(Volume {
                    name: volume.name.clone(),
                    source,
                });
            }
        }
        out
    }

    fn volume_source(&mut self, volume: &core::Volume, at: &str) -> Option<VolumeSource> {
        let kinds: Vec<&str> = [
            (volume.secret.is_some(), "secret"),
            (volume.config_map.is_some(), "configMap"),
            (volume.projected.is_some(), "projected"),
            (volume.empty_dir.is_some(), "emptyDir"),
            (volume.host_path.is_some(), "hostPath"),
            (
                volume.persistent_volume_claim.is_some(),
                "persistentVolumeClaim",
            ),
            (volume.csi.is_some(), "csi"),
            (volume.ephemeral.is_some(), "ephemeral"),
            (volume.image.is_some(), "image"),
        ]
        .into_iter()
        .filter_map(|(set, kind)| set.then_some(kind))
        .collect();
        if kinds.len() != 1 {
            self.error(
                at,
                format!(
                    "set exactly one volume source (secret, configMap, projected, emptyDir, …); \
                     found {}",
                    if kinds.is_empty() {
                        "none".to_owned()
                    } else {
                        kinds.join(", ")
                    }
                ),
            );
            return None;
        }
        if let Some(secret) = &volume.secret {
            let Some(name) = secret.secret_name.as_deref().filter(|n| !n.is_empty()) else {
                self.error(format!("{at}.secret.secretName"), "required");
                return None;
            };
            let source = FileSource {
                secret: true,
                name,
                name_key: "secretName",
                items: secret.items.as_deref(),
                optional: secret.optional == Some(true),
                default_mode: secret.default_mode,
            };
            let mut files = Vec::new();
            self.source_files(&source, &format!("{at}.secret"), &mut files)?;
            return Some(VolumeSource::Files(files));
        }
        if let Some(config_map) = &volume.config_map {
            let source = FileSource {
                secret: false,
                name: &config_map.name,
                name_key: "name",
                items: config_map.items.as_deref(),
                optional: config_map.optional == Some(true),
                default_mode: config_map.default_mode,
            };
            let mut files = Vec::new();
            self.source_files(&source, &format!("{at}.configMap"), &mut files)?;
            return Some(VolumeSource::Files(files));
        }
        if let Some(projected) = &volume.projected {
            let mut files = Vec::new();
            for (index, source) in projected.sources.iter().flatten().enumerate() {
                let at = format!("{at}.projected.sources[{index}]");
                let (secret, config_map) = (&source.secret, &source.config_map);
                if let Some(secret) = secret {
                    let source = FileSource {
                        secret: true,
                        name: &secret.name,
                        name_key: "name",
                        items: secret.items.as_deref(),
                        optional: secret.optional == Some(true),
                        default_mode: projected.default_mode,
                    };
                    self.source_files(&source, &format!("{at}.secret"), &mut files)?;
                } else if let Some(config_map) = config_map {
                    let source = FileSource {
                        secret: false,
                        name: &config_map.name,
                        name_key: "name",
                        items: config_map.items.as_deref(),
                        optional: config_map.optional == Some(true),
                        default_mode: projected.default_mode,
                    };
                    self.source_files(&source, &format!("{at}.configMap"), &mut files)?;
                } else if source.service_account_token.is_some() {
                    return Some(VolumeSource::Unavailable(
                        "projected serviceAccountToken".into(),
                    ));
                } else if source.downward_api.is_some() {
                    return Some(VolumeSource::Unavailable("projected downwardAPI".into()));
                } else {
                    self.error(
                        at,
                        "set one of secret, configMap, serviceAccountToken or downwardAPI",
                    );
                    return None;
                }
            }
            let mut paths = HashSet::new();
            for file in &files {
                if !paths.insert(file.path.as_str()) {
                    self.error(
                        format!("{at}.projected.sources"),
                        format!("two sources write the same file {:?}", file.path),
                    );
                    return None;
                }
            }
            return Some(VolumeSource::Files(files));
        }
        if let Some(empty) = &volume.empty_dir {
            let memory = match empty.medium.as_deref() {
                None | Some("") => false,
                Some("Memory") => true,
                Some(other) => {
                    self.error(
                        format!("{at}.emptyDir.medium"),
                        format!("expected empty or Memory, found {other:?}"),
                    );
                    return None;
                }
            };
            let size_limit = match &empty.size_limit {
                None => None,
                Some(q) => match quantity::bytes(&q.0) {
                    Ok(0) | Err(_) => {
                        self.error(
                            format!("{at}.emptyDir.sizeLimit"),
                            format!("must be a quantity greater than 0, found {:?}", q.0),
                        );
                        return None;
                    }
                    Ok(n) => Some(n),
                },
            };
            if memory {
                self.ignored.push(format!(
                    "{at}.emptyDir.medium (a directory on disk locally, not memory)"
                ));
            }
            if size_limit.is_some() {
                self.ignored
                    .push(format!("{at}.emptyDir.sizeLimit (not enforced locally)"));
            }
            return Some(VolumeSource::EmptyDir { memory, size_limit });
        }
        if let Some(host) = &volume.host_path {
            if !host.path.starts_with('/') {
                self.error(
                    format!("{at}.hostPath.path"),
                    format!("must be an absolute path, found {:?}", host.path),
                );
                return None;
            }
            return Some(VolumeSource::HostPath(host.path.clone()));
        }
        Some(VolumeSource::Unavailable(kinds[0].to_owned()))
    }

    /// The files of `source` at `at`, appended to `files`. A missing Secret or ConfigMap is a
    /// located error unless the source is optional (then it adds nothing).
    fn source_files(
        &mut self,
        source: &FileSource<'_>,
        at: &str,
        files: &mut Vec<VolumeFile>,
    ) -> Option<()> {
        let namespace = self.identity.namespace;
        let kind = if source.secret { "Secret" } else { "ConfigMap" };
        let values = if source.secret {
            self.secret(source.name)
        } else {
            self.config_map_values(source.name)
        };
        let Some(values) = values else {
            if source.optional {
                return Some(());
            }
            self.error(
                format!("{at}.{}", source.name_key),
                missing(kind, namespace, source.name),
            );
            return None;
        };
        self.files(
            &values,
            source,
            at,
            &format!("{kind} {namespace}/{}", source.name),
            files,
        )
    }

    /// A ConfigMap's values: `data` as bytes and `binaryData` decoded; `None` when the set
    /// does not have it. Bad base64 is reported at the ConfigMap.
    fn config_map_values(&mut self, name: &str) -> Option<BTreeMap<String, Vec<u8>>> {
        let (config_map, origin) = self
            .sources
            .config_maps
            .get(&(self.identity.namespace, name))
            .copied()?;
        let mut values: BTreeMap<String, Vec<u8>> = config_map
            .data
            .iter()
            .map(|(k, v)| (k.clone(), v.clone().into_bytes()))
            .collect();
        for key in decode_base64(&config_map.binary_data, &mut values) {
            self.scope
                .at(origin)
                .error(join_key("binaryData", key), "must be base64");
            self.ok = false;
        }
        Some(values)
    }

    fn files(
        &mut self,
        values: &BTreeMap<String, Vec<u8>>,
        source: &FileSource<'_>,
        at: &str,
        what: &str,
        files: &mut Vec<VolumeFile>,
    ) -> Option<()> {
        let (items, optional) = (source.items, source.optional);
        let default_mode = match source.default_mode {
            None => DEFAULT_FILE_MODE,
            Some(mode) if (0..=0o777).contains(&mode) => mode,
            Some(mode) => {
                self.error(
                    format!("{at}.defaultMode"),
                    format!("must be a file mode from 0 to 0777 (511), found {mode}"),
                );
                return None;
            }
        };
        let mode_bits = |mode: i32| u32::try_from(mode).unwrap_or(0o644);
        match items {
            None | Some([]) => {
                for (key, data) in values {
                    files.push(VolumeFile {
                        path: key.clone(),
                        data: Sensitive(data.clone()),
                        mode: mode_bits(default_mode),
                    });
                }
            }
            Some(items) => {
                for (index, item) in items.iter().enumerate() {
                    let item_at = format!("{at}.items[{index}]");
                    if let Err(why) = relative_inside(&item.path) {
                        self.error(format!("{item_at}.path"), why);
                        return None;
                    }
                    let mode = match item.mode {
                        None => default_mode,
                        Some(mode) if (0..=0o777).contains(&mode) => mode,
                        Some(mode) => {
                            self.error(
                                format!("{item_at}.mode"),
                                format!("must be a file mode from 0 to 0777 (511), found {mode}"),
                            );
                            return None;
                        }
                    };
                    let Some(data) = values.get(&item.key) else {
                        if optional {
                            continue;
                        }
                        self.error(
                            format!("{item_at}.key"),
                            format!("{what} has no key {:?}", item.key),
                        );
                        return None;
                    };
                    files.push(VolumeFile {
                        path: clean_path(&item.path),
                        data: Sensitive(data.clone()),
                        mode: mode_bits(mode),
                    });
                }
            }
        }
        Some(())
    }
}

/// Where a volume's files come from: a Secret or a ConfigMap of the set.
struct FileSource<'a> {
    secret: bool,
    name: &'a str,
    /// The field naming it: `secretName` in a `secret` volume, else `name`.
    name_key: &'static str,
    items: Option<&'a [core::KeyToPath]>,
    optional: bool,
    default_mode: Option<i32>,
}

/// What a probe's port may be.
struct ProbeContext<'a> {
    serving: bool,
    port_name: Option<&'a str>,
}

fn missing(kind: &str, namespace: &str, name: &str) -> String {
    format!("{kind} {namespace}/{name} is not in the manifest set (add it, or set optional: true)")
}

/// A relative path that stays inside its volume: not absolute, no `..` component.
fn relative_inside(path: &str) -> Result<(), String> {
    if path.is_empty() {
        return Err("must not be empty".to_owned());
    }
    if path.starts_with('/') {
        return Err(format!("must be a relative path, found {path:?}"));
    }
    if path.split('/').any(|part| part == "..") {
        return Err(format!(
            "must stay inside the volume: {path:?} contains '..'"
        ));
    }
    Ok(())
}

/// `path` without empty and `.` components and without a trailing `/` (`/a//b/` is `/a/b`).
fn clean_path(path: &str) -> String {
    let absolute = path.starts_with('/');
    let parts: Vec<&str> = path
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    let joined = parts.join("/");
    if absolute {
        format!("/{joined}")
    } else {
        joined
    }
}
