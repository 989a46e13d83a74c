//! The fields Knative's webhook accepts in a revision's pod spec (knative/serving
//! `pkg/apis/serving/fieldmask.go`), which of them sit behind a `config-features` flag, and
//! which have no effect on the local runtime.
//!
//! [`check`] walks the pod spec as written before it is read into the Kubernetes types (which
//! would silently drop unknown fields): every unknown or disabled field is a located error,
//! and Kubernetes quantities written as YAML numbers (`cpu: 1`) become the strings the types
//! expect, as the API server accepts both.

use serde_json::Value;

use super::super::Features;
use crate::error::join_key;

/// The shape of a value in the pod spec.
pub(super) enum Shape {
    /// A scalar or list of scalars; its type is checked when read into the Kubernetes types.
    Leaf,
    /// A Kubernetes quantity: a string, or a number written without quotes.
    Quantity,
    /// A string-keyed map of values.
    Map(&'static Shape),
    /// A list of values.
    List(&'static Shape),
    /// An object with exactly these fields.
    Object(&'static [Field]),
    /// A Kubernetes object passed to Kubernetes as written (affinity, tolerations, …); its
    /// own fields are not checked here.
    Opaque,
}

/// What a field does on the local runtime.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Local {
    /// It works (or its meaning is decided by the code reading it).
    Used,
    /// Accepted and kept for Kubernetes mode; no effect on local processes.
    Ignored,
}

/// One accepted field.
pub(super) struct Field {
    name: &'static str,
    shape: &'static Shape,
    /// The `config-features` flag that must not be `disabled` for the field to be accepted.
    flag: Option<&'static str>,
    local: Local,
}

const fn f(name: &'static str, shape: &'static Shape) -> Field {
    Field {
        name,
        shape,
        flag: None,
        local: Local::Used,
    }
}

impl Field {
    const fn flag(self, flag: &'static str) -> Self {
        Self {
            flag: Some(flag),
            ..self
        }
    }

    const fn ignored(self) -> Self {
        Self {
            local: Local::Ignored,
            ..self
        }
    }
}

const LEAF: &Shape = &Shape::Leaf;
const OPAQUE: &Shape = &Shape::Opaque;
const QUANTITY: &Shape = &Shape::Quantity;

static KEY_TO_PATH: Shape = Shape::Object(&[f("key", LEAF), f("path", LEAF), f("mode", LEAF)]);
static ITEMS: Shape = Shape::List(&KEY_TO_PATH);
static SECRET_VOLUME: Shape = Shape::Object(&[
    f("secretName", LEAF),
    f("items", &ITEMS),
    f("defaultMode", LEAF),
    f("optional", LEAF),
]);
static CONFIG_MAP_VOLUME: Shape = Shape::Object(&[
    f("name", LEAF),
    f("items", &ITEMS),
    f("defaultMode", LEAF),
    f("optional", LEAF),
]);
static PROJECTION_SOURCE: Shape =
    Shape::Object(&[f("name", LEAF), f("items", &ITEMS), f("optional", LEAF)]);
static SERVICE_ACCOUNT_TOKEN: Shape = Shape::Object(&[
    f("audience", LEAF),
    f("expirationSeconds", LEAF),
    f("path", LEAF),
]);
static DOWNWARD_API_FILE: Shape = Shape::Object(&[
    f("fieldRef", OPAQUE),
    f("resourceFieldRef", OPAQUE),
    f("path", LEAF),
    f("mode", LEAF),
]);
static DOWNWARD_API: Shape = Shape::Object(&[f("items", &Shape::List(&DOWNWARD_API_FILE))]);
static PROJECTION: Shape = Shape::Object(&[
    f("secret", &PROJECTION_SOURCE),
    f("configMap", &PROJECTION_SOURCE),
    f("serviceAccountToken", &SERVICE_ACCOUNT_TOKEN),
    f("downwardAPI", &DOWNWARD_API),
]);
static PROJECTED: Shape = Shape::Object(&[
    f("sources", &Shape::List(&PROJECTION)),
    f("defaultMode", LEAF),
]);
static EMPTY_DIR: Shape = Shape::Object(&[f("medium", LEAF), f("sizeLimit", QUANTITY)]);
static VOLUME: Shape = Shape::Object(&[
    f("name", LEAF),
    f("secret", &SECRET_VOLUME),
    f("configMap", &CONFIG_MAP_VOLUME),
    f("projected", &PROJECTED),
    f("emptyDir", &EMPTY_DIR).flag("kubernetes.podspec-volumes-emptydir"),
    f("persistentVolumeClaim", OPAQUE).flag("kubernetes.podspec-persistent-volume-claim"),
    f("hostPath", OPAQUE).flag("kubernetes.podspec-volumes-hostpath"),
    f("csi", OPAQUE).flag("kubernetes.podspec-volumes-csi"),
    f("ephemeral", OPAQUE).flag("kubernetes.podspec-volumes-ephemeral"),
    f("image", OPAQUE).flag("kubernetes.podspec-volumes-image"),
]);

static KEY_SELECTOR: Shape = Shape::Object(&[f("name", LEAF), f("key", LEAF), f("optional", LEAF)]);
static ENV_SOURCE: Shape = Shape::Object(&[
    f("configMapKeyRef", &KEY_SELECTOR),
    f("secretKeyRef", &KEY_SELECTOR),
    f("fieldRef", &FIELD_REF).flag("kubernetes.podspec-fieldref"),
    f("resourceFieldRef", &RESOURCE_FIELD_REF).flag("kubernetes.podspec-fieldref"),
]);
static FIELD_REF: Shape = Shape::Object(&[f("apiVersion", LEAF), f("fieldPath", LEAF)]);
static RESOURCE_FIELD_REF: Shape = Shape::Object(&[
    f("containerName", LEAF),
    f("resource", LEAF),
    f("divisor", QUANTITY),
]);
static ENV_VAR: Shape = Shape::Object(&[
    f("name", LEAF),
    f("value", LEAF),
    f("valueFrom", &ENV_SOURCE),
]);
static ENV_FROM_SOURCE: Shape = Shape::Object(&[f("name", LEAF), f("optional", LEAF)]);
static ENV_FROM: Shape = Shape::Object(&[
    f("prefix", LEAF),
    f("configMapRef", &ENV_FROM_SOURCE),
    f("secretRef", &ENV_FROM_SOURCE),
]);

static PORT: Shape = Shape::Object(&[
    f("containerPort", LEAF),
    f("name", LEAF),
    f("protocol", LEAF),
]);
static HTTP_HEADER: Shape = Shape::Object(&[f("name", LEAF), f("value", LEAF)]);
static HTTP_GET: Shape = Shape::Object(&[
    f("host", LEAF).ignored(),
    f("path", LEAF),
    f("scheme", LEAF),
    f("httpHeaders", &Shape::List(&HTTP_HEADER)),
    f("port", LEAF),
]);
static TCP_SOCKET: Shape = Shape::Object(&[f("host", LEAF).ignored(), f("port", LEAF)]);
static EXEC: Shape = Shape::Object(&[f("command", LEAF)]);
static GRPC: Shape = Shape::Object(&[f("port", LEAF), f("service", LEAF)]);
static PROBE: Shape = Shape::Object(&[
    f("exec", &EXEC),
    f("httpGet", &HTTP_GET),
    f("tcpSocket", &TCP_SOCKET),
    f("grpc", &GRPC),
    f("initialDelaySeconds", LEAF),
    f("timeoutSeconds", LEAF),
    f("periodSeconds", LEAF),
    f("successThreshold", LEAF),
    f("failureThreshold", LEAF),
    f("terminationGracePeriodSeconds", LEAF).ignored(),
]);
static RESOURCES: Shape = Shape::Object(&[
    f("limits", &Shape::Map(QUANTITY)),
    f("requests", &Shape::Map(QUANTITY)),
]);
static CAPABILITIES: Shape = Shape::Object(&[
    f("drop", LEAF),
    f("add", LEAF).flag("kubernetes.containerspec-addcapabilities"),
]);
static SECURITY_CONTEXT: Shape = Shape::Object(&[
    f("capabilities", &CAPABILITIES),
    f("readOnlyRootFilesystem", LEAF),
    f("runAsUser", LEAF),
    f("runAsGroup", LEAF),
    f("runAsNonRoot", LEAF),
    f("allowPrivilegeEscalation", LEAF),
    f("seccompProfile", OPAQUE),
    // Only `false` is accepted; checked on the typed spec.
    f("privileged", LEAF),
]);
static VOLUME_MOUNT: Shape = Shape::Object(&[
    f("name", LEAF),
    f("readOnly", LEAF),
    f("mountPath", LEAF),
    f("subPath", LEAF),
    f("mountPropagation", LEAF)
        .flag("kubernetes.podspec-volumes-mount-propagation")
        .ignored(),
]);
static CONTAINER: Shape = Shape::Object(&[
    f("name", LEAF),
    f("args", LEAF),
    f("command", LEAF),
    f("env", &Shape::List(&ENV_VAR)),
    f("workingDir", LEAF),
    f("envFrom", &Shape::List(&ENV_FROM)),
    f("image", LEAF),
    f("imagePullPolicy", LEAF).ignored(),
    f("livenessProbe", &PROBE),
    f("ports", &Shape::List(&PORT)),
    f("readinessProbe", &PROBE),
    f("resources", &RESOURCES),
    f("securityContext", &SECURITY_CONTEXT).ignored(),
    f("startupProbe", &PROBE),
    f("terminationMessagePath", LEAF).ignored(),
    f("terminationMessagePolicy", LEAF).ignored(),
    f("volumeMounts", &Shape::List(&VOLUME_MOUNT)),
]);
static POD_SECURITY_CONTEXT: Shape = Shape::Object(&[
    f("runAsUser", LEAF),
    f("runAsGroup", LEAF),
    f("runAsNonRoot", LEAF),
    f("fsGroup", LEAF),
    f("supplementalGroups", LEAF),
    f("seccompProfile", OPAQUE),
]);
static LOCAL_REFERENCE: Shape = Shape::Object(&[f("name", LEAF)]);

/// `spec.template.spec` without Knative's own fields.
pub(super) static POD: Shape = Shape::Object(&[
    f("serviceAccountName", LEAF).ignored(),
    f("containers", &Shape::List(&CONTAINER)),
    f("volumes", &Shape::List(&VOLUME)),
    f("imagePullSecrets", &Shape::List(&LOCAL_REFERENCE)).ignored(),
    f("enableServiceLinks", LEAF).ignored(),
    // Only `false` is accepted; checked on the typed spec.
    f("automountServiceAccountToken", LEAF).ignored(),
    f("affinity", OPAQUE)
        .flag("kubernetes.podspec-affinity")
        .ignored(),
    f("topologySpreadConstraints", OPAQUE)
        .flag("kubernetes.podspec-topologyspreadconstraints")
        .ignored(),
    f("hostAliases", OPAQUE)
        .flag("kubernetes.podspec-hostaliases")
        .ignored(),
    f("nodeSelector", OPAQUE)
        .flag("kubernetes.podspec-nodeselector")
        .ignored(),
    f("runtimeClassName", LEAF)
        .flag("kubernetes.podspec-runtimeclassname")
        .ignored(),
    f("tolerations", OPAQUE)
        .flag("kubernetes.podspec-tolerations")
        .ignored(),
    f("securityContext", &POD_SECURITY_CONTEXT)
        .flag("kubernetes.podspec-securitycontext")
        .ignored(),
    f("shareProcessNamespace", LEAF)
        .flag("kubernetes.podspec-shareprocessnamespace")
        .ignored(),
    f("priorityClassName", LEAF)
        .flag("kubernetes.podspec-priorityclassname")
        .ignored(),
    f("schedulerName", LEAF)
        .flag("kubernetes.podspec-schedulername")
        .ignored(),
    f("initContainers", &Shape::List(&CONTAINER)).flag("kubernetes.podspec-init-containers"),
    f("dnsPolicy", LEAF)
        .flag("kubernetes.podspec-dnspolicy")
        .ignored(),
    f("dnsConfig", OPAQUE)
        .flag("kubernetes.podspec-dnsconfig")
        .ignored(),
    f("hostIPC", LEAF)
        .flag("kubernetes.podspec-hostipc")
        .ignored(),
    f("hostPID", LEAF)
        .flag("kubernetes.podspec-hostpid")
        .ignored(),
    f("hostNetwork", LEAF)
        .flag("kubernetes.podspec-hostnetwork")
        .ignored(),
]);

/// What [`check`] found.
#[derive(Debug, Default)]
pub(super) struct Findings {
    /// (field, reason) of each field Knative would reject.
    pub(super) errors: Vec<(String, String)>,
    /// Fields that are set and have no local effect.
    pub(super) ignored: Vec<String>,
}

/// Checks `value` at `path` against `shape`, normalizing quantities in place.
pub(super) fn check(
    value: &mut Value,
    shape: &Shape,
    path: &str,
    features: &Features,
    found: &mut Findings,
) {
    match (shape, value) {
        (Shape::Quantity, value @ Value::Number(_)) => {
            *value = Value::String(value.to_string());
        }
        (Shape::List(item), Value::Array(items)) => {
            for (index, item_value) in items.iter_mut().enumerate() {
                check(
                    item_value,
                    item,
                    &format!("{path}[{index}]"),
                    features,
                    found,
                );
            }
        }
        (Shape::Map(item), Value::Object(map)) => {
            for (key, item_value) in map.iter_mut() {
                check(item_value, item, &join_key(path, key), features, found);
            }
        }
        (Shape::Object(fields), Value::Object(map)) => {
            for (key, field_value) in map.iter_mut() {
                let field_path = join_key(path, key);
                let Some(field) = fields.iter().find(|f| f.name == key) else {
                    let accepted: Vec<&str> = fields.iter().map(|f| f.name).collect();
                    found.errors.push((
                        field_path,
                        format!(
                            "unknown field (Knative accepts here: {})",
                            accepted.join(", ")
                        ),
                    ));
                    continue;
                };
                if field_value.is_null() {
                    continue;
                }
                if let Some(flag) = field.flag
                    && !features.allows(flag)
                {
                    found.errors.push((
                        field_path,
                        format!(
                            "Knative accepts this field only when the feature flag {flag} is \
                             enabled or allowed in ConfigMap knative-serving/config-features \
                             (it is disabled)"
                        ),
                    ));
                    continue;
                }
                if field.local == Local::Ignored {
                    found.ignored.push(field_path.clone());
                }
                check(field_value, field.shape, &field_path, features, found);
            }
        }
        // Leaves, opaque objects, and values of the wrong type (reported when read).
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(yaml: &str, features: &Features) -> (Value, Findings) {
        let mut value: Value = serde_saphyr::from_str(yaml).expect("yaml");
        let mut found = Findings::default();
        check(&mut value, &POD, "spec", features, &mut found);
        (value, found)
    }

    #[test]
    fn unknown_fields_are_located_and_known_ones_pass() {
        let (_, found) = run(
            "containers:\n- image: x\n  lifecycle: {}\n  volumeMounts: [{name: a, mountPath: /a, readOnly: true, recursiveReadOnly: Enabled}]\n",
            &Features::default(),
        );
        let fields: Vec<&str> = found.errors.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(
            fields,
            [
                "spec.containers[0].lifecycle",
                "spec.containers[0].volumeMounts[0].recursiveReadOnly"
            ]
        );
        assert!(found.errors[0].1.contains("livenessProbe"), "{found:?}");
    }

    #[test]
    fn flagged_fields_need_their_flag() {
        let yaml = "containers: [{image: x}]\naffinity: {nodeAffinity: {}}\n";
        let (_, found) = run(yaml, &Features::default());
        assert_eq!(found.errors.len(), 1);
        assert!(
            found.errors[0].1.contains("kubernetes.podspec-affinity"),
            "{found:?}"
        );
        let enabled = Features::from_pairs([("kubernetes.podspec-affinity", "enabled")]);
        let (_, found) = run(yaml, &enabled);
        assert!(found.errors.is_empty(), "{found:?}");
        assert_eq!(found.ignored, ["spec.affinity"]);
    }

    #[test]
    fn numeric_quantities_become_strings() {
        let (value, found) = run(
            "containers: [{image: x, resources: {limits: {cpu: 1, memory: 128Mi}, requests: {cpu: 0.5}}}]\n",
            &Features::default(),
        );
        assert!(found.errors.is_empty());
        let resources = &value["containers"][0]["resources"];
        assert_eq!(resources["limits"]["cpu"], "1");
        assert_eq!(resources["requests"]["cpu"], "0.5");
    }
}
