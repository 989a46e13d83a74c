//! Knative's system ConfigMaps in the manifest set and what they change:
//! `knative-serving/config-features` (which pod spec fields are accepted),
//! `knative-serving/config-autoscaler` and `knative-serving/config-defaults` (the defaults of
//! every revision).

use std::collections::BTreeMap;
use std::time::Duration;

use super::{ConfigMaps, Report, Scope};
use crate::duration::parse_go_duration;
use crate::error::join_key;
use crate::manifest::{HPA_CLASS, KPA_CLASS, PRECISE_CLASS};
use crate::snapshot::{
    DEFAULT_CONTAINER_CONCURRENCY, DEFAULT_REVISION_TIMEOUT, DEFAULT_SCALING_CLASS,
    MAX_SCALE_DOWN_DELAY, MAX_WINDOW, MIN_METRIC_TARGET, MIN_WINDOW, ScalingClass, ScalingSpec,
};

/// Namespace of Knative Serving's system ConfigMaps.
pub(crate) const SERVING_NAMESPACE: &str = "knative-serving";
/// ConfigMap of Knative Serving's feature flags.
pub(crate) const CONFIG_FEATURES: &str = "config-features";

/// A `config-features` flag value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flag {
    Enabled,
    Allowed,
    Disabled,
}

/// Flags that are not `disabled` unless a `config-features` says so (Knative's defaults).
const ENABLED_BY_DEFAULT: [&str; 2] = ["multi-container", "kubernetes.podspec-volumes-emptydir"];

/// Knative Serving's feature flags: its defaults, overridden by `config-features` in the set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Features {
    set: BTreeMap<String, Flag>,
}

impl Features {
    /// Reads `knative-serving/config-features` when the set has it; a value other than
    /// `enabled`, `allowed` or `disabled` is a located error (and the flag keeps its default).
    pub(crate) fn from_set(config_maps: &ConfigMaps<'_>, report: &mut Report) -> Self {
        let mut features = Self::default();
        let Some((config_map, origin)) = config_maps.get(&(SERVING_NAMESPACE, CONFIG_FEATURES))
        else {
            return features;
        };
        let mut scope = Scope::new(origin, report);
        for (key, value) in &config_map.data {
            if key.starts_with('_') {
                continue; // `_example`, Knative's documentation block.
            }
            let flag = match value.trim().to_ascii_lowercase().as_str() {
                "enabled" => Flag::Enabled,
                "allowed" => Flag::Allowed,
                "disabled" => Flag::Disabled,
                other => {
                    scope.error(
                        join_key("data", key),
                        format!("expected enabled, allowed or disabled, found {other:?}"),
                    );
                    continue;
                }
            };
            features.set.insert(key.clone(), flag);
        }
        features
    }

    /// A set with these flags (tests).
    #[cfg(test)]
    pub(crate) fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        let set = pairs
            .into_iter()
            .map(|(k, v)| {
                let flag = match v {
                    "enabled" => Flag::Enabled,
                    "allowed" => Flag::Allowed,
                    _ => Flag::Disabled,
                };
                (k.to_owned(), flag)
            })
            .collect();
        Self { set }
    }

    fn flag(&self, name: &str) -> Flag {
        match self.set.get(name) {
            Some(flag) => *flag,
            None if ENABLED_BY_DEFAULT.contains(&name) => Flag::Enabled,
            None => Flag::Disabled,
        }
    }

    /// Whether a field behind `name` is accepted (`enabled` or `allowed`).
    pub(crate) fn allows(&self, name: &str) -> bool {
        self.flag(name) != Flag::Disabled
    }

    /// Whether `name` is `enabled` (behaviour flags such as `multi-container-probing`).
    pub(crate) fn enabled(&self, name: &str) -> bool {
        self.flag(name) == Flag::Enabled
    }
}

/// ConfigMap of Knative's autoscaler defaults.
pub(crate) const CONFIG_AUTOSCALER: &str = "config-autoscaler";
/// ConfigMap of Knative's revision defaults.
pub(crate) const CONFIG_DEFAULTS: &str = "config-defaults";

/// What `knative-serving/config-autoscaler` and `knative-serving/config-defaults` in the set
/// change, with Knative's defaults where they are absent. Per-revision annotations and fields
/// still win.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ServingConfig {
    /// `pod-autoscaler-class`: the class of a Service written as such.
    pub(crate) default_class: ScalingClass,
    /// Defaults of every scaling field but the class-specific scale-down delay.
    pub(crate) scaling: ScalingSpec,
    /// `scale-down-delay`, when set: replaces both classes' defaults.
    pub(crate) scale_down_delay: Option<Duration>,
    /// `allow-zero-initial-scale`: whether `initial-scale` may be 0.
    pub(crate) allow_zero_initial_scale: bool,
    /// `max-scale-limit`: the largest `max-scale` accepted (0: none).
    pub(crate) max_scale_limit: u32,
    /// `container-concurrency`: default `containerConcurrency`.
    pub(crate) container_concurrency: u32,
    /// `container-concurrency-max-limit`.
    pub(crate) container_concurrency_max: u32,
    /// `allow-container-concurrency-zero`.
    pub(crate) allow_container_concurrency_zero: bool,
    /// `revision-timeout-seconds`.
    pub(crate) revision_timeout: Duration,
    /// `max-revision-timeout-seconds`.
    pub(crate) max_revision_timeout: Duration,
    /// `revision-response-start-timeout-seconds` (0: none).
    pub(crate) response_start_timeout: Option<Duration>,
    /// `revision-idle-timeout-seconds` (0: none).
    pub(crate) idle_timeout: Option<Duration>,
    /// `revision-{cpu,memory}-{request,limit}`: resources given to containers that set none.
    pub(crate) resources: Vec<(&'static str, &'static str, String)>,
}

impl Default for ServingConfig {
    fn default() -> Self {
        Self {
            default_class: DEFAULT_SCALING_CLASS,
            scaling: ScalingSpec::default(),
            scale_down_delay: None,
            allow_zero_initial_scale: false,
            max_scale_limit: 0,
            container_concurrency: DEFAULT_CONTAINER_CONCURRENCY,
            container_concurrency_max: 1000,
            allow_container_concurrency_zero: true,
            revision_timeout: DEFAULT_REVISION_TIMEOUT,
            max_revision_timeout: Duration::from_secs(600),
            response_start_timeout: None,
            idle_timeout: None,
            resources: Vec::new(),
        }
    }
}

impl ServingConfig {
    /// The scaling defaults of `class`.
    pub(crate) fn scaling_for(&self, class: ScalingClass) -> ScalingSpec {
        let class_default = ScalingSpec::for_class(class);
        ScalingSpec {
            class,
            scale_down_delay: self
                .scale_down_delay
                .unwrap_or(class_default.scale_down_delay),
            ..self.scaling.clone()
        }
    }

    /// Reads both ConfigMaps when the set has them. Every bad value is a located error (and
    /// then the whole set is rejected, so the previous defaults stay in force).
    pub(crate) fn from_set(config_maps: &ConfigMaps<'_>, report: &mut Report) -> Self {
        let mut config = Self::default();
        if let Some((cm, origin)) = config_maps.get(&(SERVING_NAMESPACE, CONFIG_AUTOSCALER)) {
            let mut reader = Data {
                data: &cm.data,
                scope: Scope::new(origin, report),
            };
            config.read_autoscaler(&mut reader);
        }
        if let Some((cm, origin)) = config_maps.get(&(SERVING_NAMESPACE, CONFIG_DEFAULTS)) {
            let mut reader = Data {
                data: &cm.data,
                scope: Scope::new(origin, report),
            };
            config.read_defaults(&mut reader);
        }
        config
    }

    fn read_autoscaler(&mut self, d: &mut Data<'_, '_>) {
        let s = &mut self.scaling;
        match d.text("pod-autoscaler-class") {
            None => {}
            Some(KPA_CLASS) => self.default_class = ScalingClass::Kpa,
            Some(PRECISE_CLASS) => self.default_class = ScalingClass::Precise,
            Some(HPA_CLASS) => self.default_class = ScalingClass::Hpa,
            Some(other) => d.fail(
                "pod-autoscaler-class",
                format!("expected {KPA_CLASS}, {HPA_CLASS} or {PRECISE_CLASS}, found {other:?}"),
            ),
        }
        if let Some(b) = d.boolean("enable-scale-to-zero") {
            s.scale_to_zero = b;
        }
        if let Some(b) = d.boolean("allow-zero-initial-scale") {
            self.allow_zero_initial_scale = b;
        }
        let above_one = |x: f64| x > 1.0;
        if let Some(x) = d.number("max-scale-up-rate", above_one, "greater than 1.0") {
            s.max_scale_up_rate = x;
        }
        if let Some(x) = d.number("max-scale-down-rate", above_one, "greater than 1.0") {
            s.max_scale_down_rate = x;
        }
        // Knative accepts a fraction in (0, 1] or a percentage in (1, 100].
        if let Some(x) = d.number(
            "container-concurrency-target-percentage",
            |x| x > 0.0 && x <= 100.0,
            "in (0, 100]",
        ) {
            s.target_utilization = if x > 1.0 { x / 100.0 } else { x };
        }
        let at_least_min = |x: f64| x >= MIN_METRIC_TARGET;
        if let Some(x) = d.number(
            "container-concurrency-target-default",
            at_least_min,
            "at least 0.01",
        ) {
            s.concurrency_target_default = x;
        }
        if let Some(x) = d.number(
            "requests-per-second-target-default",
            at_least_min,
            "at least 0.01",
        ) {
            s.rps_target_default = x;
        }
        if let Some(x) = d.number(
            "panic-window-percentage",
            |x| (1.0..=100.0).contains(&x),
            "in [1, 100]",
        ) {
            s.panic_window_percentage = x;
        }
        if let Some(x) = d.number(
            "panic-threshold-percentage",
            |x| (110.0..=1000.0).contains(&x),
            "in [110, 1000]",
        ) {
            s.panic_threshold_percentage = x;
        }
        if let Some(n) = d.integer("min-scale") {
            s.min_scale = n;
        }
        if let Some(n) = d.integer("max-scale-limit") {
            self.max_scale_limit = n;
        }
        if let Some(n) = d.integer("max-scale") {
            s.max_scale = (n > 0).then_some(n);
        }
        if let Some(n) = d.integer("initial-scale") {
            s.initial_scale = n;
        }
        if s.initial_scale == 0 && !self.allow_zero_initial_scale {
            d.fail(
                "initial-scale",
                "must be at least 1 while allow-zero-initial-scale is false",
            );
        }
        if self.max_scale_limit > 0 && s.max_scale.is_none_or(|m| m > self.max_scale_limit) {
            d.fail(
                "max-scale",
                format!(
                    "must be from 1 to max-scale-limit ({}) when max-scale-limit is set",
                    self.max_scale_limit
                ),
            );
        }
        if let Some(max) = s.max_scale
            && s.min_scale > max
        {
            d.fail(
                "min-scale",
                format!(
                    "min-scale ({}) must not exceed max-scale ({max})",
                    s.min_scale
                ),
            );
        }
        if let Some(w) = d.duration("stable-window", MIN_WINDOW, Some(MAX_WINDOW)) {
            s.window = w;
        }
        if let Some(w) = d.duration(
            "scale-down-delay",
            Duration::ZERO,
            Some(MAX_SCALE_DOWN_DELAY),
        ) {
            self.scale_down_delay = Some(w);
        }
        if let Some(w) = d.duration("scale-to-zero-grace-period", Duration::from_millis(1), None) {
            s.scale_to_zero_grace = w;
        }
        if let Some(w) = d.duration("scale-to-zero-pod-retention-period", Duration::ZERO, None) {
            s.scale_to_zero_retention = w;
        }
        // Read by Knative's activator; tidegate always holds requests for a cold revision.
        for key in ["target-burst-capacity", "activator-capacity"] {
            if d.text(key).is_some() {
                d.scope.warn(
                    join_key("data", key),
                    "no effect on tidegate: the gateway itself queues every request for a \
                     revision (there is no separate activator)",
                );
            }
        }
    }

    fn read_defaults(&mut self, d: &mut Data<'_, '_>) {
        for key in [
            "container-name-template",
            "init-container-name-template",
            "enable-service-links",
            "revision-ephemeral-storage-request",
            "revision-ephemeral-storage-limit",
        ] {
            if d.text(key).is_some() {
                d.scope.warn(
                    join_key("data", key),
                    "no effect on the local runtime (kept for Kubernetes mode)",
                );
            }
        }
        if let Some(b) = d.boolean("allow-container-concurrency-zero") {
            self.allow_container_concurrency_zero = b;
        }
        if let Some(n) = d.integer("container-concurrency-max-limit") {
            if n == 0 {
                d.fail("container-concurrency-max-limit", "must be at least 1");
            }
            self.container_concurrency_max = n;
        }
        if let Some(n) = d.integer("container-concurrency") {
            self.container_concurrency = n;
        }
        if self.container_concurrency > self.container_concurrency_max {
            d.fail(
                "container-concurrency",
                format!(
                    "must be at most container-concurrency-max-limit ({})",
                    self.container_concurrency_max
                ),
            );
        }
        let seconds = |d: &mut Data<'_, '_>, key: &'static str, min: u32| {
            d.integer(key).and_then(|n: u32| {
                if n < min {
                    d.fail(key, format!("must be at least {min}"));
                    None
                } else {
                    Some(Duration::from_secs(u64::from(n)))
                }
            })
        };
        if let Some(t) = seconds(d, "max-revision-timeout-seconds", 1) {
            self.max_revision_timeout = t;
        }
        if let Some(t) = seconds(d, "revision-timeout-seconds", 1) {
            self.revision_timeout = t;
        }
        if self.revision_timeout > self.max_revision_timeout {
            d.fail(
                "revision-timeout-seconds",
                format!(
                    "must be at most max-revision-timeout-seconds ({})",
                    self.max_revision_timeout.as_secs()
                ),
            );
        }
        if let Some(t) = seconds(d, "revision-response-start-timeout-seconds", 0) {
            self.response_start_timeout = (!t.is_zero()).then_some(t);
        }
        if let Some(t) = seconds(d, "revision-idle-timeout-seconds", 0) {
            self.idle_timeout = (!t.is_zero()).then_some(t);
        }
        for (key, kind, name) in [
            ("revision-cpu-request", "requests", "cpu"),
            ("revision-memory-request", "requests", "memory"),
            ("revision-cpu-limit", "limits", "cpu"),
            ("revision-memory-limit", "limits", "memory"),
        ] {
            if let Some(value) = d.text(key) {
                let value = value.to_owned();
                self.resources.push((kind, name, value));
            }
        }
    }
}

/// A ConfigMap's data, read key by key with located errors.
struct Data<'a, 'r> {
    data: &'a BTreeMap<String, String>,
    scope: Scope<'r>,
}

impl<'a> Data<'a, '_> {
    fn fail(&mut self, key: &str, reason: impl Into<String>) {
        self.scope.error(join_key("data", key), reason);
    }

    fn text(&self, key: &str) -> Option<&'a str> {
        self.data.get(key).map(|v| v.trim())
    }

    fn boolean(&mut self, key: &str) -> Option<bool> {
        let value = self.text(key)?;
        match value.to_ascii_lowercase().as_str() {
            "true" => Some(true),
            "false" => Some(false),
            _ => {
                self.fail(
                    key,
                    format!("expected \"true\" or \"false\", found {value:?}"),
                );
                None
            }
        }
    }

    fn number(&mut self, key: &str, ok: impl Fn(f64) -> bool, bound: &str) -> Option<f64> {
        let value = self.text(key)?;
        match value.parse::<f64>() {
            Ok(x) if x.is_finite() && ok(x) => Some(x),
            _ => {
                self.fail(key, format!("must be a number {bound}, found {value:?}"));
                None
            }
        }
    }

    fn integer(&mut self, key: &str) -> Option<u32> {
        let value = self.text(key)?;
        match value.parse::<u32>() {
            Ok(n) if i32::try_from(n).is_ok() => Some(n),
            _ => {
                self.fail(
                    key,
                    format!("must be an integer from 0 to 2147483647, found {value:?}"),
                );
                None
            }
        }
    }

    fn duration(&mut self, key: &str, min: Duration, max: Option<Duration>) -> Option<Duration> {
        let value = self.text(key)?;
        let parsed = match parse_go_duration(value) {
            Ok(d) => d,
            Err(why) => {
                self.fail(key, why);
                return None;
            }
        };
        let too_big = max.is_some_and(|m| parsed > m);
        if parsed < min || too_big {
            let range = match max {
                Some(max) => format!("from {min:?} to {max:?}"),
                None => format!("at least {min:?}"),
            };
            self.fail(key, format!("must be {range}, found {value:?}"));
            return None;
        }
        if parsed.subsec_nanos() != 0 && key != "scale-to-zero-grace-period" {
            self.fail(key, format!("must be whole seconds, found {value:?}"));
            return None;
        }
        Some(parsed)
    }
}

/// Namespace of Knative Eventing's system ConfigMaps.
pub(crate) const EVENTING_NAMESPACE: &str = "knative-eventing";
/// ConfigMap of the default Broker class, config and delivery.
pub(crate) const CONFIG_BR_DEFAULTS: &str = "config-br-defaults";
/// ConfigMap naming the channel of channel-based Brokers; on tidegate the embedded backend.
pub(crate) const CONFIG_BR_DEFAULT_CHANNEL: &str = "config-br-default-channel";
/// Key of `config-br-defaults` holding the defaults as YAML.
const DEFAULT_BR_CONFIG: &str = "default-br-config";

/// One entry of `default-br-config`: `clusterDefault` or `namespaceDefaults.{ns}`.
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct BrokerDefault {
    /// `eventing.knative.dev/broker.class` of Brokers that do not set it.
    #[serde(default)]
    pub(crate) broker_class: Option<String>,
    #[serde(default)]
    pub(crate) api_version: Option<String>,
    #[serde(default)]
    pub(crate) kind: Option<String>,
    #[serde(default)]
    pub(crate) name: Option<String>,
    #[serde(default)]
    pub(crate) namespace: Option<String>,
    /// Delivery of Brokers that set none.
    #[serde(default)]
    pub(crate) delivery: Option<crate::manifest::DeliverySpec>,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct BrokerDefaults {
    #[serde(default)]
    cluster_default: Option<BrokerDefault>,
    #[serde(default)]
    namespace_defaults: BTreeMap<String, BrokerDefault>,
}

/// What `knative-eventing/config-br-defaults` (by namespace) and
/// `knative-eventing/config-features` in the set say.
#[derive(Debug, Default)]
pub(crate) struct EventingConfig {
    cluster: Option<BrokerDefault>,
    namespaces: BTreeMap<String, BrokerDefault>,
    /// `cross-namespace-event-links: enabled` in `knative-eventing/config-features`: a
    /// Trigger may name a Broker of another namespace.
    pub(crate) cross_namespace: bool,
}

impl EventingConfig {
    /// Reads `default-br-config`; YAML that does not parse is a located error.
    pub(crate) fn from_set(config_maps: &ConfigMaps<'_>, report: &mut Report) -> Self {
        let cross_namespace = config_maps
            .get(&(EVENTING_NAMESPACE, CONFIG_FEATURES))
            .and_then(|(cm, _)| cm.data.get("cross-namespace-event-links"))
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("enabled"));
        let plain = Self {
            cross_namespace,
            ..Self::default()
        };
        let Some((cm, origin)) = config_maps.get(&(EVENTING_NAMESPACE, CONFIG_BR_DEFAULTS)) else {
            return plain;
        };
        let Some(text) = cm.data.get(DEFAULT_BR_CONFIG) else {
            return plain;
        };
        match serde_saphyr::from_str::<BrokerDefaults>(text) {
            Ok(defaults) => Self {
                cluster: defaults.cluster_default,
                namespaces: defaults.namespace_defaults,
                cross_namespace,
            },
            Err(error) => {
                Scope::new(origin, report).error(
                    join_key("data", DEFAULT_BR_CONFIG),
                    format!(
                        "invalid broker defaults: {}",
                        error.to_string().lines().next().unwrap_or_default()
                    ),
                );
                plain
            }
        }
    }

    /// The defaults of Brokers in `namespace`: its own entry, else the cluster's.
    pub(crate) fn for_namespace(&self, namespace: &str) -> Option<&BrokerDefault> {
        self.namespaces.get(namespace).or(self.cluster.as_ref())
    }
}
