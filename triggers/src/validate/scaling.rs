//! The autoscaling annotations of a revision template, read into a [`ScalingSpec`].

use std::collections::BTreeMap;
use std::fmt::Display;
use std::str::FromStr;
use std::time::Duration;

use super::Scope;
use super::knative::ServingConfig;
use crate::duration::parse_go_duration;
use crate::error::join_key;
use crate::manifest::{
    ACTIVATION_SCALE_ANNOTATION, ALIYUN_RESERVE_INSTANCE_ANNOTATION, AUTOSCALING_ANNOTATION_PREFIX,
    AUTOSCALING_CLASS_ANNOTATION, AUTOSCALING_METRIC_ANNOTATION, AUTOSCALING_TARGET_ANNOTATION,
    BACKLOG_TARGET_ANNOTATION, HPA_CLASS, INITIAL_SCALE_ANNOTATION, KPA_CLASS,
    MAX_SCALE_ANNOTATION, MIN_SCALE_ANNOTATION, PANIC_THRESHOLD_PERCENTAGE_ANNOTATION,
    PANIC_WINDOW_PERCENTAGE_ANNOTATION, PRECISE_CLASS, QUEUE_DEPTH_ANNOTATION,
    RESERVED_INSTANCE_CONCURRENCY_ANNOTATION, RESERVED_INSTANCE_RESOURCES_ANNOTATION,
    RESERVED_INSTANCES_ANNOTATION, SCALE_DOWN_DELAY_ANNOTATION, SCALE_TO_ZERO_RETENTION_ANNOTATION,
    SCHEDULE_ANNOTATION, TARGET_UTILIZATION_ANNOTATION, WINDOW_ANNOTATION,
};
use crate::schedule::Window;
use crate::snapshot::{
    MAX_SCALE_DOWN_DELAY, MAX_WINDOW, MIN_WINDOW, ScalingClass, ScalingMetric, ScalingSpec,
};

use super::TIDEGATE_ANNOTATION_PREFIX;

/// Keys and the older camelCase spellings Knative still accepts for them.
const ALIASES: [(&str, &str); 8] = [
    (
        ACTIVATION_SCALE_ANNOTATION,
        "autoscaling.knative.dev/activationScale",
    ),
    (MIN_SCALE_ANNOTATION, "autoscaling.knative.dev/minScale"),
    (MAX_SCALE_ANNOTATION, "autoscaling.knative.dev/maxScale"),
    (
        INITIAL_SCALE_ANNOTATION,
        "autoscaling.knative.dev/initialScale",
    ),
    (
        TARGET_UTILIZATION_ANNOTATION,
        "autoscaling.knative.dev/targetUtilizationPercentage",
    ),
    (
        PANIC_WINDOW_PERCENTAGE_ANNOTATION,
        "autoscaling.knative.dev/panicWindowPercentage",
    ),
    (
        PANIC_THRESHOLD_PERCENTAGE_ANNOTATION,
        "autoscaling.knative.dev/panicThresholdPercentage",
    ),
    (
        SCALE_DOWN_DELAY_ANNOTATION,
        "autoscaling.knative.dev/scaleDownDelay",
    ),
];

/// The `autoscaling.knative.dev/*` keys read here (aliases aside).
const KNATIVE_KEYS: [&str; 13] = [
    ACTIVATION_SCALE_ANNOTATION,
    AUTOSCALING_CLASS_ANNOTATION,
    AUTOSCALING_METRIC_ANNOTATION,
    AUTOSCALING_TARGET_ANNOTATION,
    TARGET_UTILIZATION_ANNOTATION,
    MIN_SCALE_ANNOTATION,
    MAX_SCALE_ANNOTATION,
    INITIAL_SCALE_ANNOTATION,
    WINDOW_ANNOTATION,
    PANIC_WINDOW_PERCENTAGE_ANNOTATION,
    PANIC_THRESHOLD_PERCENTAGE_ANNOTATION,
    SCALE_DOWN_DELAY_ANNOTATION,
    SCALE_TO_ZERO_RETENTION_ANNOTATION,
];

/// The `tidegate.dev/*` keys of a revision template.
const TIDEGATE_KEYS: [&str; 6] = [
    BACKLOG_TARGET_ANNOTATION,
    RESERVED_INSTANCES_ANNOTATION,
    RESERVED_INSTANCE_CONCURRENCY_ANNOTATION,
    RESERVED_INSTANCE_RESOURCES_ANNOTATION,
    QUEUE_DEPTH_ANNOTATION,
    SCHEDULE_ANNOTATION,
];

/// Reads the scaling annotations of a template at `field` (its `metadata.annotations`) over
/// the defaults of `config`; `default_class` applies when `autoscaling.knative.dev/class` is
/// unset.
pub(super) fn scaling_spec(
    annotations: &BTreeMap<String, String>,
    field: &str,
    default_class: ScalingClass,
    config: &ServingConfig,
    scope: &mut Scope<'_>,
) -> Option<ScalingSpec> {
    let mut reader = Reader {
        annotations,
        field,
        scope,
        ok: true,
    };
    let class = reader.class(default_class);
    let mut spec = config.scaling_for(class);
    if let Some(metric) = reader.metric(class) {
        spec.metric = metric;
    }
    let positive = |x: f64| x > 0.0;
    let percentage = |x: f64| (1.0..=100.0).contains(&x);
    spec.target = reader.number(AUTOSCALING_TARGET_ANNOTATION, positive, "greater than 0");
    if spec.metric == ScalingMetric::Memory
        && !annotations.contains_key(AUTOSCALING_TARGET_ANNOTATION)
    {
        let key = reader.written_key(AUTOSCALING_METRIC_ANNOTATION);
        reader.fail(
            key,
            format!(
                "memory needs {AUTOSCALING_TARGET_ANNOTATION} (MiB per pod): the {HPA_CLASS} \
                 class has no memory default"
            ),
        );
    }
    if let Some(p) = reader.number(TARGET_UTILIZATION_ANNOTATION, percentage, "from 1 to 100") {
        spec.target_utilization = p / 100.0;
    }
    if class == ScalingClass::Hpa {
        // Knative's HPA class keeps one pod unless min-scale says otherwise; tidegate honours
        // an explicit "0" (its queue holds the first request while a pod starts).
        spec.min_scale = spec.min_scale.max(1);
    }
    if let Some(n) = reader.integer(MIN_SCALE_ANNOTATION, 0) {
        spec.min_scale = n;
    }
    if let Some(n) = reader.integer(MAX_SCALE_ANNOTATION, 0u32) {
        spec.max_scale = (n > 0).then_some(n);
    }
    if let Some(n) = reader.integer(INITIAL_SCALE_ANNOTATION, 0) {
        if n == 0 && !config.allow_zero_initial_scale {
            let key = reader.written_key(INITIAL_SCALE_ANNOTATION);
            reader.fail(
                key,
                "0 needs allow-zero-initial-scale: \"true\" in ConfigMap \
                 knative-serving/config-autoscaler",
            );
        }
        spec.initial_scale = n;
    }
    if let Some(n) = reader.integer(ACTIVATION_SCALE_ANNOTATION, 1) {
        spec.activation_scale = n;
    }
    if config.max_scale_limit > 0 && spec.max_scale.is_none_or(|m| m > config.max_scale_limit) {
        let key = reader.written_key(MAX_SCALE_ANNOTATION);
        reader.fail(
            key,
            format!(
                "must be from 1 to {} (max-scale-limit of knative-serving/config-autoscaler)",
                config.max_scale_limit
            ),
        );
    }
    let hour = Some(MAX_WINDOW);
    if let Some(d) = reader.duration(WINDOW_ANNOTATION, MIN_WINDOW, hour, "from 6s to 1h") {
        spec.window = d;
        spec.window_set = true;
    }
    if let Some(p) = reader.number(
        PANIC_WINDOW_PERCENTAGE_ANNOTATION,
        percentage,
        "from 1 to 100",
    ) {
        spec.panic_window_percentage = p;
    }
    let threshold = |x: f64| (110.0..=1000.0).contains(&x);
    if let Some(p) = reader.number(
        PANIC_THRESHOLD_PERCENTAGE_ANNOTATION,
        threshold,
        "from 110 to 1000",
    ) {
        spec.panic_threshold_percentage = p;
    }
    let delay_max = Some(MAX_SCALE_DOWN_DELAY);
    if let Some(d) = reader.duration(
        SCALE_DOWN_DELAY_ANNOTATION,
        Duration::ZERO,
        delay_max,
        "from 0s to 1h",
    ) {
        spec.scale_down_delay = d;
    }
    if let Some(d) = reader.duration(SCALE_TO_ZERO_RETENTION_ANNOTATION, Duration::ZERO, None, "") {
        spec.scale_to_zero_retention = d;
    }
    if let Some(n) = reader.integer(BACKLOG_TARGET_ANNOTATION, 1) {
        spec.backlog_target = n;
    }
    if let Some(n) = reader.integer(RESERVED_INSTANCES_ANNOTATION, 0) {
        spec.reserved_instances = n;
    }
    if let Some((key, value)) = reader.get(ALIYUN_RESERVE_INSTANCE_ANNOTATION) {
        match value.trim() {
            "enable" if !annotations.contains_key(RESERVED_INSTANCES_ANNOTATION) => {
                spec.reserved_instances = 1;
            }
            "enable" => reader.fail(
                key,
                format!("set {RESERVED_INSTANCES_ANNOTATION} or this one, not both"),
            ),
            "disable" => {}
            other => reader.fail(key, format!("expected enable or disable, found {other:?}")),
        }
    }
    if let Some(n) = reader.integer(RESERVED_INSTANCE_CONCURRENCY_ANNOTATION, 0) {
        spec.reserved_instance_concurrency = Some(n);
    }
    spec.reserved_instance_resources = reader.reserved_resources();
    if let Some(n) = reader.integer(QUEUE_DEPTH_ANNOTATION, 1usize) {
        spec.queue_depth = n;
    }
    if let Some(windows) = reader.schedule() {
        spec.schedule = windows;
    }
    if let Some(max) = spec.max_scale
        && spec.min_scale > max
    {
        let key = reader.written_key(MIN_SCALE_ANNOTATION);
        reader.fail(
            key,
            format!(
                "min-scale {} is greater than max-scale {max}",
                spec.min_scale
            ),
        );
    }
    reader.warn_reserved(&spec);
    reader.warn_unknown();
    reader.ok.then_some(spec)
}

/// Reads annotations, locating each problem at its key.
struct Reader<'a, 'b, 's> {
    annotations: &'a BTreeMap<String, String>,
    field: &'a str,
    scope: &'b mut Scope<'s>,
    ok: bool,
}

impl<'a> Reader<'a, '_, '_> {
    fn fail(&mut self, key: &str, reason: impl Into<String>) {
        self.scope.error(join_key(self.field, key), reason);
        self.ok = false;
    }

    /// The key `key` is written under: itself, or its alias when only that is set.
    fn written_key(&self, key: &'static str) -> &'static str {
        match alias(key) {
            Some(old) if !self.annotations.contains_key(key) => old,
            _ => key,
        }
    }

    /// The key written and the value of `key` or its alias; both set is an error.
    fn get(&mut self, key: &'static str) -> Option<(&'static str, &'a str)> {
        let old = alias(key);
        let current = self.annotations.get(key);
        let aliased = old.and_then(|old| self.annotations.get(old));
        match (current, aliased, old) {
            (Some(_), Some(_), Some(old)) => {
                self.fail(old, format!("set only one of {key:?} and {old:?}"));
                None
            }
            (Some(value), _, _) => Some((key, value.as_str())),
            (None, Some(value), Some(old)) => Some((old, value.as_str())),
            _ => None,
        }
    }

    fn class(&mut self, default_class: ScalingClass) -> ScalingClass {
        match self.get(AUTOSCALING_CLASS_ANNOTATION) {
            None => default_class,
            Some((_, KPA_CLASS)) => ScalingClass::Kpa,
            Some((_, PRECISE_CLASS)) => ScalingClass::Precise,
            Some((_, HPA_CLASS)) => ScalingClass::Hpa,
            Some((key, other)) => {
                self.fail(
                    key,
                    format!(
                        "unknown class {other:?}; expected {KPA_CLASS}, {HPA_CLASS} or \
                         {PRECISE_CLASS}"
                    ),
                );
                default_class
            }
        }
    }

    fn metric(&mut self, class: ScalingClass) -> Option<ScalingMetric> {
        let Some((key, value)) = self.get(AUTOSCALING_METRIC_ANNOTATION) else {
            // Knative's HPA class scales on cpu unless told otherwise.
            return (class == ScalingClass::Hpa).then_some(ScalingMetric::Cpu);
        };
        let metric = match (value, class) {
            ("cpu", ScalingClass::Hpa) => ScalingMetric::Cpu,
            ("memory", ScalingClass::Hpa) => ScalingMetric::Memory,
            ("cpu" | "memory", _) => {
                self.fail(key, format!("{value} needs the {HPA_CLASS} class"));
                return None;
            }
            ("concurrency" | "rps", ScalingClass::Hpa) => {
                self.fail(
                    key,
                    format!("the {HPA_CLASS} class scales on cpu or memory, not {value}"),
                );
                return None;
            }
            ("concurrency", _) => ScalingMetric::Concurrency,
            ("rps", _) => ScalingMetric::Rps,
            (other, ScalingClass::Hpa) => {
                self.fail(key, format!("expected cpu or memory, found {other:?}"));
                return None;
            }
            (other, _) => {
                self.fail(key, format!("expected concurrency or rps, found {other:?}"));
                return None;
            }
        };
        if class == ScalingClass::Precise && metric == ScalingMetric::Rps {
            self.scope.warn(
                join_key(self.field, key),
                format!(
                    "ignored: {PRECISE_CLASS} scales on requests in flight and queued, not on rps"
                ),
            );
        }
        Some(metric)
    }

    /// Reserved-instance settings that would change nothing.
    fn warn_reserved(&mut self, spec: &ScalingSpec) {
        let field = self.field;
        if spec.reserved_instances == 0 {
            for key in [
                RESERVED_INSTANCE_CONCURRENCY_ANNOTATION,
                RESERVED_INSTANCE_RESOURCES_ANNOTATION,
            ] {
                if self.annotations.contains_key(key) {
                    self.scope.warn(
                        join_key(field, key),
                        format!(
                            "ignored: no reserved instance ({RESERVED_INSTANCES_ANNOTATION} is 0)"
                        ),
                    );
                }
            }
        } else if spec.min_scale > 0 {
            let key = if self.annotations.contains_key(RESERVED_INSTANCES_ANNOTATION) {
                RESERVED_INSTANCES_ANNOTATION
            } else {
                ALIYUN_RESERVE_INSTANCE_ANNOTATION
            };
            self.scope.warn(
                join_key(field, key),
                format!(
                    "reserved instances run only while the revision is at zero, and min-scale {} \
                     keeps it above zero",
                    spec.min_scale
                ),
            );
        }
        for key in self.annotations.keys() {
            if key.starts_with("knative.aliyun.com/reserve-instance-") {
                self.scope.warn(
                    join_key(field, key),
                    "not read by tidegate (reserved instances use \
                     tidegate.dev/reserved-instance-resources and -concurrency)",
                );
            }
        }
    }

    /// `tidegate.dev/reserved-instance-resources`: `{requests: {cpu, memory}, limits: {cpu,
    /// memory}}`, each problem located below the key.
    fn reserved_resources(&mut self) -> Option<crate::snapshot::Resources> {
        let (key, text) = self.get(RESERVED_INSTANCE_RESOURCES_ANNOTATION)?;
        let base = join_key(self.field, key);
        type Table = BTreeMap<String, BTreeMap<String, serde_json::Value>>;
        let table: Table = match serde_saphyr::from_str(text) {
            Ok(table) => table,
            Err(error) => {
                self.scope.error(
                    base,
                    format!(
                        "expected a YAML or JSON object {{requests: {{cpu, memory}}, limits: \
                         {{cpu, memory}}}}: {}",
                        error.to_string().lines().next().unwrap_or_default()
                    ),
                );
                self.ok = false;
                return None;
            }
        };
        let mut out = crate::snapshot::Resources::default();
        let mut ok = true;
        for (kind, map) in &table {
            for (name, value) in map {
                let at = format!("{base}.{kind}.{name}");
                let text = match value {
                    serde_json::Value::String(s) => s.clone(),
                    serde_json::Value::Number(n) => n.to_string(),
                    other => {
                        self.scope
                            .error(at, format!("expected a quantity, found {other}"));
                        ok = false;
                        continue;
                    }
                };
                let parsed = match name.as_str() {
                    "cpu" => super::pod::quantity::cpu_millis(&text),
                    "memory" => super::pod::quantity::bytes(&text),
                    _ => Err("expected cpu or memory".to_owned()),
                };
                let slot = match (kind.as_str(), name.as_str()) {
                    ("requests", "cpu") => &mut out.requests_cpu_millis,
                    ("requests", "memory") => &mut out.requests_memory,
                    ("limits", "cpu") => &mut out.limits_cpu_millis,
                    ("limits", "memory") => &mut out.limits_memory,
                    ("requests" | "limits", _) => {
                        self.scope.error(at, "expected cpu or memory");
                        ok = false;
                        continue;
                    }
                    _ => {
                        self.scope
                            .error(format!("{base}.{kind}"), "expected requests or limits");
                        ok = false;
                        break;
                    }
                };
                match parsed {
                    Ok(value) => {
                        *slot = Some(value);
                        out.written.insert(format!("{kind}.{name}"), text);
                    }
                    Err(why) => {
                        self.scope.error(at, why);
                        ok = false;
                    }
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
                self.scope.error(
                    format!("{base}.requests.{name}"),
                    format!("must be at most limits.{name}"),
                );
                ok = false;
            }
        }
        if !ok {
            self.ok = false;
            return None;
        }
        Some(out)
    }

    /// `tidegate.dev/schedule`: each window located as `…["tidegate.dev/schedule"][i].field`.
    fn schedule(&mut self) -> Option<Vec<Window>> {
        let (key, text) = self.get(SCHEDULE_ANNOTATION)?;
        let base = join_key(self.field, key);
        match crate::schedule::parse(text) {
            Ok(windows) => Some(windows),
            Err(problems) => {
                for (at, why) in problems {
                    self.scope.error(format!("{base}{at}"), why);
                }
                self.ok = false;
                None
            }
        }
    }

    /// An integer of at least `min`.
    fn integer<T>(&mut self, key: &'static str, min: T) -> Option<T>
    where
        T: FromStr + PartialOrd + Display,
    {
        let (written, value) = self.get(key)?;
        match value.trim().parse::<T>() {
            Ok(n) if n >= min => Some(n),
            _ => {
                self.fail(
                    written,
                    format!("must be an integer of at least {min}, found {value:?}"),
                );
                None
            }
        }
    }

    /// A finite number accepted by `accept`, which `expected` describes.
    fn number(
        &mut self,
        key: &'static str,
        accept: fn(f64) -> bool,
        expected: &str,
    ) -> Option<f64> {
        let (written, value) = self.get(key)?;
        match value.trim().parse::<f64>() {
            Ok(x) if x.is_finite() && accept(x) => Some(x),
            _ => {
                self.fail(
                    written,
                    format!("must be a number {expected}, found {value:?}"),
                );
                None
            }
        }
    }

    /// A Go duration from `min` to `max` (unbounded when `None`), `range` describing both.
    fn duration(
        &mut self,
        key: &'static str,
        min: Duration,
        max: Option<Duration>,
        range: &str,
    ) -> Option<Duration> {
        let (written, value) = self.get(key)?;
        match parse_go_duration(value.trim()) {
            Ok(d) if d >= min && max.is_none_or(|max| d <= max) => Some(d),
            Ok(_) => {
                self.fail(written, format!("must be {range}, found {value:?}"));
                None
            }
            Err(why) => {
                self.fail(written, format!("{why}; write e.g. `60s` or `1m30s`"));
                None
            }
        }
    }

    fn warn_unknown(&mut self) {
        for key in self.annotations.keys() {
            let known: &[&str] = if key.starts_with(AUTOSCALING_ANNOTATION_PREFIX) {
                &KNATIVE_KEYS
            } else if key.starts_with(TIDEGATE_ANNOTATION_PREFIX) {
                &TIDEGATE_KEYS
            } else {
                continue;
            };
            let is_alias = ALIASES.iter().any(|(_, old)| old == key);
            if !known.contains(&key.as_str()) && !is_alias {
                self.scope.warn(
                    join_key(self.field, key),
                    format!(
                        "not a scaling setting tidegate reads; ignored (known: {})",
                        known.join(", ")
                    ),
                );
            }
        }
    }
}

fn alias(key: &str) -> Option<&'static str> {
    ALIASES
        .iter()
        .find(|(current, _)| *current == key)
        .map(|(_, old)| *old)
}
