//! The revision template of a Service: its pod spec (see [`super::pod`]), concurrency,
//! timeouts and scaling annotations.

use std::time::Duration;

use super::Scope;
use super::pod::{PodIdentity, Sources, pod_template};
use super::scaling::scaling_spec;
use super::service::ServiceTarget;
use crate::error::join_key;
use crate::manifest::RevisionTemplateSpec;
use crate::snapshot::{RevisionTemplate, ScalingClass, ScalingMetric};

/// `spec.template` at `field`, fully defaulted.
pub(super) fn revision_template(
    target: &ServiceTarget<'_>,
    template: &RevisionTemplateSpec,
    field: &str,
    sources: &Sources<'_, '_>,
    scope: &mut Scope<'_>,
) -> Option<RevisionTemplate> {
    let spec = &template.spec;
    let spec_field = join_key(field, "spec");
    let config = sources.serving;
    let cc_field = join_key(&spec_field, "containerConcurrency");
    let container_concurrency = match spec.container_concurrency {
        None => Some(config.container_concurrency),
        Some(n) => match u32::try_from(n) {
            Err(_) => {
                scope.error(
                    &cc_field,
                    format!("must be 0 (unlimited) or more, found {n}"),
                );
                None
            }
            Ok(0) if !config.allow_container_concurrency_zero => {
                scope.error(
                    &cc_field,
                    "0 (unlimited) is not allowed: allow-container-concurrency-zero is false in \
                     ConfigMap knative-serving/config-defaults",
                );
                None
            }
            Ok(n) if n > config.container_concurrency_max => {
                scope.error(
                    &cc_field,
                    format!(
                        "must be at most {} (container-concurrency-max-limit of \
                         knative-serving/config-defaults), found {n}",
                        config.container_concurrency_max
                    ),
                );
                None
            }
            Ok(n) => Some(n),
        },
    };
    let timeout = match spec.timeout_seconds {
        None => Some(config.revision_timeout),
        Some(n) => seconds(n, 1, &join_key(&spec_field, "timeoutSeconds"), scope).and_then(|t| {
            if t > config.max_revision_timeout {
                scope.error(
                    join_key(&spec_field, "timeoutSeconds"),
                    format!(
                        "must be at most {} (max-revision-timeout-seconds of \
                         knative-serving/config-defaults), found {n}",
                        config.max_revision_timeout.as_secs()
                    ),
                );
                None
            } else {
                Some(t)
            }
        }),
    };
    let optional_seconds =
        |key: &str, value: Option<i64>, min: i64, scope: &mut Scope<'_>| match value {
            None => Some(None),
            Some(n) => seconds(n, min, &join_key(&spec_field, key), scope).map(Some),
        };
    let response_start_timeout = optional_seconds(
        "responseStartTimeoutSeconds",
        spec.response_start_timeout_seconds,
        1,
        scope,
    );
    let idle_timeout = optional_seconds("idleTimeoutSeconds", spec.idle_timeout_seconds, 0, scope);
    // Knative's defaults apply only when shorter than the revision's timeout.
    let shorter = |d: Option<Duration>| d.filter(|d| timeout.is_some_and(|t| *d < t));
    let response_start_timeout =
        response_start_timeout.map(|r| r.or_else(|| shorter(config.response_start_timeout)));
    let idle_timeout = idle_timeout.map(|i| i.or_else(|| shorter(config.idle_timeout)));
    if let (Some(Some(start)), Some(timeout)) = (response_start_timeout, timeout)
        && start > timeout
    {
        scope.error(
            join_key(&spec_field, "responseStartTimeoutSeconds"),
            format!(
                "must be at most timeoutSeconds ({}), found {}",
                timeout.as_secs(),
                start.as_secs()
            ),
        );
    }
    let identity = PodIdentity {
        namespace: target.namespace,
        labels: &template.metadata.labels,
        annotations: &template.metadata.annotations,
    };
    let mut pod = pod_template(&spec.pod, &spec_field, &identity, sources, scope);
    if let (Some(pod), Some(Some(_))) = (pod.as_mut(), idle_timeout) {
        pod.ignored_locally.push(format!(
            "{} (not enforced by the local proxy yet)",
            join_key(&spec_field, "idleTimeoutSeconds")
        ));
    }
    let default_class = match target.owner {
        Some(_) => ScalingClass::Precise,
        None => config.default_class,
    };
    let annotations_field = format!("{field}.metadata.annotations");
    let scaling = scaling_spec(
        &template.metadata.annotations,
        &annotations_field,
        default_class,
        config,
        scope,
    );
    if let (Some(scaling), Some(pod)) = (&scaling, pod.as_mut())
        && scaling.class == ScalingClass::Hpa
    {
        let serving = pod.serving_container();
        if scaling.metric == ScalingMetric::Cpu && serving.resources.requests_cpu_millis.is_none() {
            // Kubernetes says "missing request for cpu" only once the HPA runs.
            scope.error(
                format!(
                    "{spec_field}.containers[{}].resources.requests.cpu",
                    pod.serving
                ),
                "missing request for cpu: the hpa.autoscaling.knative.dev class's cpu target is \
                 a percentage of it",
            );
        }
    }
    Some(RevisionTemplate {
        annotations: template.metadata.annotations.clone(),
        labels: template.metadata.labels.clone(),
        container_concurrency: container_concurrency?,
        timeout: timeout?,
        response_start_timeout: response_start_timeout?,
        idle_timeout: idle_timeout?,
        pod: pod?,
        scaling: scaling?,
    })
}

/// A whole number of seconds of at least `min`.
fn seconds(value: i64, min: i64, field: &str, scope: &mut Scope<'_>) -> Option<Duration> {
    match u64::try_from(value) {
        Ok(secs) if value >= min => Some(Duration::from_secs(secs)),
        _ => {
            let bound = if min == 0 {
                "0 or more"
            } else {
                "greater than 0"
            };
            scope.error(field, format!("must be {bound}, found {value}"));
            None
        }
    }
}
