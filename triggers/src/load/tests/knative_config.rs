//! Knative's configuration ConfigMaps in the set change the defaults as they do in Knative;
//! a bad value is an error located at its key.

use super::services::service;
use super::*;
use crate::snapshot::ScalingClass;

fn config(name: &str, data: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}, namespace: knative-serving}}\ndata:\n{data}"
    )
}

fn plain() -> String {
    service(
        "s",
        "  template:\n    spec:\n      containers: [{command: [app], resources: {}}]\n",
    )
}

#[test]
fn config_defaults_and_config_autoscaler_set_the_defaults() {
    let defaults = config(
        "config-defaults",
        "  revision-timeout-seconds: \"120\"\n  container-concurrency: \"8\"\n  revision-memory-limit: 256Mi\n  revision-idle-timeout-seconds: \"30\"\n",
    );
    let autoscaler = config(
        "config-autoscaler",
        "  pod-autoscaler-class: precise.tidegate.dev\n  container-concurrency-target-default: \"50\"\n  requests-per-second-target-default: \"150\"\n  initial-scale: \"0\"\n  allow-zero-initial-scale: \"true\"\n  min-scale: \"1\"\n  max-scale: \"9\"\n  panic-window-percentage: \"20\"\n  scale-down-delay: 30s\n  scale-to-zero-pod-retention-period: 1m\n",
    );
    let snapshot = valid(&[
        ("s.yaml", &plain()),
        ("d.yaml", &defaults),
        ("a.yaml", &autoscaler),
    ]);
    let t = &snapshot.services[0].template;
    assert_eq!(t.container_concurrency, 8);
    assert_eq!(t.timeout, Duration::from_secs(120));
    assert_eq!(t.idle_timeout, Some(Duration::from_secs(30)));
    assert_eq!(t.pod.containers[0].resources.limits_memory, Some(256 << 20));
    let s = &t.scaling;
    assert_eq!(s.class, ScalingClass::Precise);
    assert_eq!(s.concurrency_target_default, 50.0);
    assert_eq!(s.rps_target_default, 150.0);
    assert_eq!((s.initial_scale, s.min_scale, s.max_scale), (0, 1, Some(9)));
    assert_eq!(s.panic_window_percentage, 20.0);
    assert_eq!(s.scale_down_delay, Duration::from_secs(30));
    assert_eq!(s.scale_to_zero_retention, Duration::from_secs(60));

    // Per-revision settings win.
    let own = service(
        "s",
        "  template:\n    metadata:\n      annotations:\n        autoscaling.knative.dev/class: kpa.autoscaling.knative.dev\n        autoscaling.knative.dev/max-scale: \"3\"\n        autoscaling.knative.dev/activation-scale: \"2\"\n    spec:\n      containerConcurrency: 2\n      timeoutSeconds: 10\n      containers: [{command: [app]}]\n",
    );
    let snapshot = valid(&[
        ("s.yaml", &own),
        ("d.yaml", &defaults),
        ("a.yaml", &autoscaler),
    ]);
    let t = &snapshot.services[0].template;
    assert_eq!(
        (t.container_concurrency, t.timeout),
        (2, Duration::from_secs(10))
    );
    assert_eq!(
        t.idle_timeout, None,
        "the default is not shorter than timeoutSeconds"
    );
    assert_eq!(t.scaling.class, ScalingClass::Kpa);
    assert_eq!(t.scaling.max_scale, Some(3));
    assert_eq!(t.scaling.activation_scale, 2);
}

#[test]
fn bad_config_values_are_located_at_their_key() {
    for (name, data, key, reason) in [
        (
            "config-autoscaler",
            "  stable-window: 2s\n",
            "stable-window",
            "must be from 6s",
        ),
        (
            "config-autoscaler",
            "  max-scale-up-rate: \"1\"\n",
            "max-scale-up-rate",
            "greater than 1.0",
        ),
        (
            "config-autoscaler",
            "  enable-scale-to-zero: maybe\n",
            "enable-scale-to-zero",
            "\"true\" or \"false\"",
        ),
        (
            "config-autoscaler",
            "  initial-scale: \"0\"\n",
            "initial-scale",
            "allow-zero-initial-scale",
        ),
        (
            "config-autoscaler",
            "  pod-autoscaler-class: mine.example.com\n",
            "pod-autoscaler-class",
            "expected kpa",
        ),
        (
            "config-autoscaler",
            "  container-concurrency-target-percentage: \"0\"\n",
            "container-concurrency-target-percentage",
            "in (0, 100]",
        ),
        (
            "config-autoscaler",
            "  min-scale: \"5\"\n  max-scale: \"2\"\n",
            "min-scale",
            "must not exceed max-scale",
        ),
        (
            "config-defaults",
            "  revision-timeout-seconds: \"900\"\n",
            "revision-timeout-seconds",
            "max-revision-timeout-seconds (600)",
        ),
        (
            "config-defaults",
            "  container-concurrency: \"-1\"\n",
            "container-concurrency",
            "integer from 0",
        ),
    ] {
        let cm = config(name, data);
        let errors = invalid(&[("s.yaml", &plain()), ("c.yaml", &cm)]);
        let field = format!("data.{key}");
        assert!(
            errors
                .iter()
                .any(|e| e.file == std::path::Path::new("c.yaml")
                    && e.field == field
                    && e.reason.contains(reason)),
            "{name} {data}: want {field}: {reason}; got {errors:#?}"
        );
    }
    let limited = config(
        "config-autoscaler",
        "  max-scale-limit: \"10\"\n  max-scale: \"5\"\n",
    );
    let over = service(
        "s",
        "  template:\n    metadata:\n      annotations: {autoscaling.knative.dev/max-scale: \"20\"}\n    spec:\n      containers: [{command: [app]}]\n",
    );
    let errors = invalid(&[("s.yaml", &over), ("c.yaml", &limited)]);
    assert!(
        errors.iter().any(|e| e.reason.contains("max-scale-limit")),
        "{errors:#?}"
    );
    let zero = service(
        "s",
        "  template:\n    metadata:\n      annotations: {autoscaling.knative.dev/initial-scale: \"0\"}\n    spec:\n      containers: [{command: [app]}]\n",
    );
    let errors = invalid(&[("s.yaml", &zero)]);
    assert!(
        errors[0].reason.contains("allow-zero-initial-scale"),
        "{errors:#?}"
    );
}
