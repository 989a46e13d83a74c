//! The revision template of a Service: its container, port, readiness probe, concurrency,
//! timeout and scaling annotations.

use std::time::Duration;

use super::Scope;
use super::scaling::scaling_spec;
use super::service::ServiceTarget;
use crate::error::join_key;
use crate::manifest::{Container, ContainerPort, ProbeSpec, RevisionTemplateSpec};
use crate::snapshot::{
    ContainerSpec, DEFAULT_CONTAINER_CONCURRENCY, DEFAULT_PROBE_FAILURE_THRESHOLD,
    DEFAULT_PROBE_INITIAL_DELAY, DEFAULT_PROBE_PATH, DEFAULT_PROBE_PERIOD,
    DEFAULT_PROBE_SUCCESS_THRESHOLD, DEFAULT_PROBE_TIMEOUT, DEFAULT_REVISION_TIMEOUT,
    DEFAULT_SCALING_CLASS, Probe, ProbeAction, RevisionTemplate, ScalingClass,
};

/// Variables tidegate sets in every pod (Knative reserves the same).
const RESERVED_ENV: [&str; 4] = ["PORT", "K_SERVICE", "K_CONFIGURATION", "K_REVISION"];

/// `spec.template` at `field`, fully defaulted.
pub(super) fn revision_template(
    target: &ServiceTarget<'_>,
    template: &RevisionTemplateSpec,
    field: &str,
    scope: &mut Scope<'_>,
) -> Option<RevisionTemplate> {
    let spec = &template.spec;
    let spec_field = join_key(field, "spec");
    let container_concurrency = match spec.container_concurrency {
        None => Some(DEFAULT_CONTAINER_CONCURRENCY),
        Some(n) => u32::try_from(n).ok().or_else(|| {
            scope.error(
                join_key(&spec_field, "containerConcurrency"),
                format!("must be 0 (unlimited) or more, found {n}"),
            );
            None
        }),
    };
    let timeout = match spec.timeout_seconds {
        None => Some(DEFAULT_REVISION_TIMEOUT),
        Some(n) => seconds(n, 1, &join_key(&spec_field, "timeoutSeconds"), scope),
    };
    let containers_field = join_key(&spec_field, "containers");
    let container = match spec.containers.as_slice() {
        [] => {
            scope.error(containers_field, "one container is required; found none");
            None
        }
        [container] => container_spec(container, &format!("{containers_field}[0]"), scope),
        more => {
            scope.error(
                containers_field,
                format!(
                    "tidegate runs exactly one container per revision; found {}",
                    more.len()
                ),
            );
            None
        }
    };
    let default_class = match target.owner {
        Some(_) => ScalingClass::Precise,
        None => DEFAULT_SCALING_CLASS,
    };
    let annotations_field = format!("{field}.metadata.annotations");
    let scaling = scaling_spec(
        &template.metadata.annotations,
        &annotations_field,
        default_class,
        scope,
    );
    Some(RevisionTemplate {
        annotations: template.metadata.annotations.clone(),
        labels: template.metadata.labels.clone(),
        container_concurrency: container_concurrency?,
        timeout: timeout?,
        container: container?,
        scaling: scaling?,
    })
}

fn container_spec(
    container: &Container,
    field: &str,
    scope: &mut Scope<'_>,
) -> Option<ContainerSpec> {
    let mut ok = true;
    let mut fail = |scope: &mut Scope<'_>, key: String, reason: String| {
        scope.error(key, reason);
        ok = false;
    };
    if container.command.is_empty() && container.image.is_none() {
        fail(
            scope,
            join_key(field, "command"),
            "set command (the local process runtime runs it) or image (Kubernetes mode runs \
             it); found neither"
                .to_owned(),
        );
    }
    if container
        .command
        .first()
        .is_some_and(|c| c.trim().is_empty())
    {
        fail(
            scope,
            format!("{field}.command[0]"),
            "the program must not be empty".to_owned(),
        );
    }
    for (key, value) in [
        ("image", &container.image),
        ("workingDir", &container.working_dir),
    ] {
        if value.as_deref().is_some_and(|v| v.trim().is_empty()) {
            fail(scope, join_key(field, key), "must not be empty".to_owned());
        }
    }
    for (index, var) in container.env.iter().enumerate() {
        let name_field = format!("{field}.env[{index}].name");
        if var.name.is_empty() {
            fail(scope, name_field, "must not be empty".to_owned());
        } else if RESERVED_ENV.contains(&var.name.as_str()) {
            fail(
                scope,
                name_field,
                format!("{} is reserved: tidegate sets it in every pod", var.name),
            );
        }
    }
    let port = match container.ports.as_slice() {
        [] => Some(None),
        [port] => container_port(port, &format!("{field}.ports[0]"), scope).map(Some),
        more => {
            fail(
                scope,
                join_key(field, "ports"),
                format!("set at most one port; found {}", more.len()),
            );
            None
        }
    };
    let readiness = match &container.readiness_probe {
        None => Some(None),
        Some(probe) => readiness_probe(probe, &join_key(field, "readinessProbe"), scope).map(Some),
    };
    let (port, readiness) = (port?, readiness?);
    ok.then(|| ContainerSpec {
        image: container.image.clone(),
        command: container.command.clone(),
        args: container.args.clone(),
        env: container
            .env
            .iter()
            .map(|var| (var.name.clone(), var.value.clone()))
            .collect(),
        port,
        working_dir: container.working_dir.clone(),
        readiness,
    })
}

fn container_port(port: &ContainerPort, field: &str, scope: &mut Scope<'_>) -> Option<u16> {
    let mut ok = true;
    match port.name.as_deref() {
        None | Some("" | "http1" | "h2c") => {}
        Some(other) => {
            scope.error(
                join_key(field, "name"),
                format!("expected http1 or h2c, found {other:?}"),
            );
            ok = false;
        }
    }
    match port.protocol.as_deref() {
        None | Some("TCP") => {}
        Some(other) => {
            scope.error(
                join_key(field, "protocol"),
                format!("only TCP is supported, found {other:?}"),
            );
            ok = false;
        }
    }
    let number = port_number(
        port.container_port,
        &join_key(field, "containerPort"),
        scope,
    );
    if ok { number } else { None }
}

fn port_number(port: i64, field: &str, scope: &mut Scope<'_>) -> Option<u16> {
    match u16::try_from(port) {
        Ok(port) if port > 0 => Some(port),
        _ => {
            scope.error(
                field,
                format!("must be a port from 1 to 65535, found {port}"),
            );
            None
        }
    }
}

fn readiness_probe(probe: &ProbeSpec, field: &str, scope: &mut Scope<'_>) -> Option<Probe> {
    let optional_port = |port: Option<i64>, key: &str, scope: &mut Scope<'_>| match port {
        None => Some(None),
        Some(port) => port_number(port, &format!("{field}.{key}.port"), scope).map(Some),
    };
    let action = match (&probe.http_get, &probe.tcp_socket) {
        (Some(http), None) => {
            let path = match http.path.as_deref() {
                None | Some("") => DEFAULT_PROBE_PATH.to_owned(),
                Some(path) if path.starts_with('/') => path.to_owned(),
                Some(path) => format!("/{path}"),
            };
            optional_port(http.port, "httpGet", scope)
                .map(|port| ProbeAction::HttpGet { path, port })
        }
        (None, Some(tcp)) => {
            optional_port(tcp.port, "tcpSocket", scope).map(|port| ProbeAction::TcpSocket { port })
        }
        (found, _) => {
            let found = if found.is_some() { "both" } else { "none" };
            scope.error(
                field,
                format!("set exactly one of httpGet or tcpSocket; found {found}"),
            );
            None
        }
    };
    let mut timing = |key: &str, value: Option<i64>, min: i64, default: Duration| match value {
        None => Some(default),
        Some(n) => seconds(n, min, &join_key(field, key), scope),
    };
    let initial_delay = timing(
        "initialDelaySeconds",
        probe.initial_delay_seconds,
        0,
        DEFAULT_PROBE_INITIAL_DELAY,
    );
    let period = timing(
        "periodSeconds",
        probe.period_seconds,
        0,
        DEFAULT_PROBE_PERIOD,
    );
    let timeout = timing(
        "timeoutSeconds",
        probe.timeout_seconds,
        1,
        DEFAULT_PROBE_TIMEOUT,
    );
    let mut threshold = |key: &str, value: Option<i64>, default: u32| match value {
        None => Some(default),
        Some(n) => match u32::try_from(n) {
            Ok(n) if n > 0 => Some(n),
            _ => {
                scope.error(
                    join_key(field, key),
                    format!("must be 1 or more, found {n}"),
                );
                None
            }
        },
    };
    let failure_threshold = threshold(
        "failureThreshold",
        probe.failure_threshold,
        DEFAULT_PROBE_FAILURE_THRESHOLD,
    );
    let success_threshold = threshold(
        "successThreshold",
        probe.success_threshold,
        DEFAULT_PROBE_SUCCESS_THRESHOLD,
    );
    Some(Probe {
        action: action?,
        initial_delay: initial_delay?,
        period: period?,
        timeout: timeout?,
        failure_threshold: failure_threshold?,
        success_threshold: success_threshold?,
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
