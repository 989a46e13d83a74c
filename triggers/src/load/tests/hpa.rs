//! The `hpa.autoscaling.knative.dev` class: accepted as Knative writes it, cpu by default, a
//! cpu target needing `requests.cpu`, min-scale 1 unless written (then 0 is honoured), the
//! window as both stabilization windows only when written, memory needing a target.

use super::*;
use crate::snapshot::{ScalingClass, ScalingMetric};

fn service(annotations: &str, resources: &str) -> String {
    format!(
        "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata: {{name: h}}\nspec:\n  template:\n    metadata:\n      annotations:\n        autoscaling.knative.dev/class: hpa.autoscaling.knative.dev\n{annotations}    spec:\n      containers:\n        - command: [app]\n{resources}"
    )
}

const CPU_REQUEST: &str = "          resources: {requests: {cpu: 250m}}\n";

#[test]
fn the_hpa_class_loads_with_cpu_by_default_and_keeps_one_pod_unless_told() {
    let snapshot = valid(&[(
        "h.yaml",
        &service(
            "        autoscaling.knative.dev/target: \"70\"\n",
            CPU_REQUEST,
        ),
    )]);
    let template = &snapshot.services[0].template;
    assert_eq!(template.scaling.class, ScalingClass::Hpa);
    assert_eq!(template.scaling.metric, ScalingMetric::Cpu);
    assert_eq!(template.scaling.target, Some(70.0));
    assert_eq!(template.pod.local_blocker, None, "it runs locally");
    assert_eq!(
        template.scaling.min_scale, 1,
        "Knative's HPA class keeps a pod"
    );
    assert!(!template.scaling.window_set);
    let to_zero = valid(&[(
        "h.yaml",
        &service(
            "        autoscaling.knative.dev/min-scale: \"0\"\n        autoscaling.knative.dev/window: 20s\n",
            CPU_REQUEST,
        ),
    )]);
    let scaling = &to_zero.services[0].template.scaling;
    assert_eq!(scaling.min_scale, 0);
    assert!(scaling.window_set);
    assert_eq!(scaling.window, std::time::Duration::from_secs(20));
    let memory = valid(&[(
        "h.yaml",
        &service(
            "        autoscaling.knative.dev/metric: memory\n        autoscaling.knative.dev/target: \"256\"\n",
            "",
        ),
    )]);
    assert_eq!(
        memory.services[0].template.scaling.metric,
        ScalingMetric::Memory
    );
}

#[test]
fn a_cpu_target_without_a_cpu_request_and_request_metrics_are_located_errors() {
    let errors = invalid(&[("h.yaml", &service("", ""))]);
    assert!(
        errors.iter().any(
            |e| e.field == "spec.template.spec.containers[0].resources.requests.cpu"
                && e.reason.contains("missing request for cpu")
        ),
        "{errors:?}"
    );
    let errors = invalid(&[(
        "h.yaml",
        &service(
            "        autoscaling.knative.dev/metric: concurrency\n",
            CPU_REQUEST,
        ),
    )]);
    assert!(
        errors.iter().any(|e| e.field
            == "spec.template.metadata.annotations[\"autoscaling.knative.dev/metric\"]"
            && e.reason
                .contains("scales on cpu or memory, not concurrency")),
        "{errors:?}"
    );
    let errors = invalid(&[(
        "h.yaml",
        &service(
            "        autoscaling.knative.dev/target: \"0\"\n",
            CPU_REQUEST,
        ),
    )]);
    assert!(
        errors.iter().any(|e| e.reason.contains("greater than 0")),
        "{errors:?}"
    );
    let errors = invalid(&[(
        "h.yaml",
        &service("        autoscaling.knative.dev/metric: memory\n", ""),
    )]);
    assert!(
        errors.iter().any(|e| e.field
            == "spec.template.metadata.annotations[\"autoscaling.knative.dev/metric\"]"
            && e.reason
                .contains("memory needs autoscaling.knative.dev/target")),
        "{errors:?}"
    );
}
