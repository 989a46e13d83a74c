//! `serving.knative.dev/v1` Services: every field, defaults, rejections, fingerprints.

use std::collections::BTreeMap;

use super::*;
use crate::snapshot::{
    ContainerSpec, DEFAULT_CONTAINER_CONCURRENCY, DEFAULT_PROBE_FAILURE_THRESHOLD,
    DEFAULT_PROBE_INITIAL_DELAY, DEFAULT_PROBE_PERIOD, DEFAULT_PROBE_SUCCESS_THRESHOLD,
    DEFAULT_PROBE_TIMEOUT, DEFAULT_REVISION_TIMEOUT, EnvVar, Probe, ProbeAction, RevisionTemplate,
    ScalingClass, ScalingMetric, ScalingSpec, ServiceConfig, TrafficRevision, TrafficTarget,
};

const FULL: &str = r#"
apiVersion: serving.knative.dev/v1
kind: Service
metadata:
  name: billing
  namespace: shop
  labels: {team: payments}
spec:
  template:
    metadata:
      name: billing-v2
      labels: {app: billing}
      annotations:
        autoscaling.knative.dev/class: kpa.autoscaling.knative.dev
        autoscaling.knative.dev/metric: rps
        autoscaling.knative.dev/target: "12.5"
        autoscaling.knative.dev/target-utilization-percentage: "80"
        autoscaling.knative.dev/minScale: "0"
        autoscaling.knative.dev/max-scale: "8"
        autoscaling.knative.dev/initial-scale: "2"
        autoscaling.knative.dev/window: 1m30s
        autoscaling.knative.dev/panic-window-percentage: "20"
        autoscaling.knative.dev/panic-threshold-percentage: "150"
        autoscaling.knative.dev/scale-down-delay: 500ms
        autoscaling.knative.dev/scale-to-zero-pod-retention-period: 2m
        tidegate.dev/backlog-target: "25"
        tidegate.dev/reserved-instances: "1"
        tidegate.dev/queue-depth: "500"
    spec:
      containerConcurrency: 4
      timeoutSeconds: 60
      containers:
        - name: app
          image: ghcr.io/example/billing:2
          imagePullPolicy: IfNotPresent
          command: [./billing]
          args: [--verbose]
          workingDir: /srv
          env:
            - {name: MODE, value: live}
            - {name: EMPTY}
          ports:
            - {containerPort: 8081, name: h2c, protocol: TCP}
          resources:
            limits: {cpu: "1", memory: 128Mi}
          readinessProbe:
            httpGet: {path: healthz, port: 8081}
            initialDelaySeconds: 2
            periodSeconds: 5
            timeoutSeconds: 3
            failureThreshold: 4
            successThreshold: 2
  traffic:
    - {revisionName: billing-v1, percent: 90}
    - {latestRevision: true, percent: 10, tag: canary}
    - {revisionName: billing-v1, latestRevision: false, tag: old}
"#;

/// A Service `name` in `default` whose `spec` is `spec` (lines indented by two spaces).
pub(super) fn service(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata:\n  name: {name}\nspec:\n{spec}"
    )
}

/// A template with one container running `app`, annotations `annotations` (a flow mapping).
fn annotated(annotations: &str) -> String {
    service(
        "s",
        &format!(
            "  template:\n    metadata:\n      annotations: {annotations}\n    spec:\n      \
             containers: [{{command: [app]}}]\n"
        ),
    )
}

/// A one-container Service `s` whose container has `container` fields (a flow mapping body).
fn container(container: &str) -> String {
    service(
        "s",
        &format!("  template:\n    spec:\n      containers: [{{{container}}}]\n"),
    )
}

/// Service `s` running `app`, with `traffic` lines.
fn with_traffic(traffic: &str) -> String {
    service(
        "s",
        &format!(
            "  template:\n    spec:\n      containers: [{{command: [app]}}]\n  traffic:\n{traffic}"
        ),
    )
}

fn only_service(yaml: &str) -> ServiceConfig {
    let mut snapshot = valid(&[("s.yaml", yaml)]);
    assert_eq!(snapshot.services.len(), 1);
    snapshot.services.remove(0)
}

fn annotation_field(key: &str) -> String {
    format!("spec.template.metadata.annotations[{key:?}]")
}

#[test]
fn full_service() {
    let snapshot = valid(&[("full.yaml", FULL)]);
    assert_eq!(snapshot.warnings, Vec::<ManifestWarning>::new());
    let billing = match snapshot.service("shop", "billing") {
        Some(s) => s.clone(),
        None => panic!("no service: {snapshot:#?}"),
    };
    let annotations: BTreeMap<String, String> = FULL
        .lines()
        .filter_map(|line| {
            let (key, value) = line.trim().split_once(": ")?;
            let scaling = key.starts_with("autoscaling.") || key.starts_with("tidegate.");
            scaling.then(|| (key.to_owned(), value.trim_matches('"').to_owned()))
        })
        .collect();
    assert_eq!(annotations.len(), 15);
    let expected = ServiceConfig {
        namespace: "shop".into(),
        name: "billing".into(),
        owner: None,
        template: RevisionTemplate {
            annotations,
            labels: [("app".to_owned(), "billing".to_owned())].into(),
            container_concurrency: 4,
            timeout: Duration::from_secs(60),
            response_start_timeout: None,
            idle_timeout: None,
            pod: billing.template.pod.clone(),
            scaling: ScalingSpec {
                class: ScalingClass::Kpa,
                metric: ScalingMetric::Rps,
                target: Some(12.5),
                target_utilization: 0.8,
                min_scale: 0,
                max_scale: Some(8),
                initial_scale: 2,
                window: Duration::from_secs(90),
                panic_window_percentage: 20.0,
                panic_threshold_percentage: 150.0,
                scale_down_delay: Duration::from_millis(500),
                scale_to_zero_retention: Duration::from_secs(120),
                window_set: true,
                reserved_instance_concurrency: None,
                reserved_instance_resources: None,
                backlog_target: 25,
                reserved_instances: 1,
                queue_depth: 500,
                ..ScalingSpec::default()
            },
        },
        template_name: Some("billing-v2".into()),
        fingerprint: billing.fingerprint,
        traffic: vec![
            TrafficTarget {
                revision: TrafficRevision::Named("billing-v1".into()),
                percent: 90,
                tag: None,
            },
            TrafficTarget {
                revision: TrafficRevision::Latest,
                percent: 10,
                tag: Some("canary".into()),
            },
            TrafficTarget {
                revision: TrafficRevision::Named("billing-v1".into()),
                percent: 0,
                tag: Some("old".into()),
            },
        ],
        revisions: BTreeMap::new(),
    };
    assert_eq!(billing, expected);
    let pod = &billing.template.pod;
    assert_eq!((pod.containers.len(), pod.serving), (1, 0));
    assert_eq!(
        pod.containers[0],
        ContainerSpec {
            image: Some("ghcr.io/example/billing:2".into()),
            command: vec!["./billing".into()],
            args: vec!["--verbose".into()],
            name: "app".into(),
            env: vec![EnvVar::plain("MODE", "live"), EnvVar::plain("EMPTY", "")],
            port: Some(8081),
            h2c: true,
            working_dir: Some("/srv".into()),
            readiness: Some(Probe {
                action: ProbeAction::HttpGet {
                    path: "/healthz".into(),
                    port: Some(8081),
                    headers: vec![],
                },
                initial_delay: Duration::from_secs(2),
                period: Duration::from_secs(5),
                timeout: Duration::from_secs(3),
                failure_threshold: 4,
                success_threshold: 2,
            }),
            resources: pod.containers[0].resources.clone(),
            ..ContainerSpec::command(vec![])
        }
    );
    let resources = &pod.containers[0].resources;
    assert_eq!(
        (resources.limits_cpu_millis, resources.limits_memory),
        (Some(1000), Some(128 << 20))
    );
    assert_eq!(
        pod.ignored_locally,
        [
            "spec.template.spec.containers[0].imagePullPolicy",
            "spec.template.spec.containers[0].image",
            "spec.template.spec.containers[0].resources.limits (all but memory)"
        ]
    );
    assert_eq!(
        pod.kubernetes.containers[0].image.as_deref(),
        Some("ghcr.io/example/billing:2")
    );
    assert_eq!(billing.revision_name(7), "billing-v2");
    assert_eq!(billing.template.metric_total(), 12.5, "rps: not capped");
}

#[test]
fn defaults_of_a_plain_service() {
    let s = only_service(&container("command: [app]"));
    assert_eq!((s.namespace.as_str(), s.name.as_str()), ("default", "s"));
    assert_eq!((s.owner.clone(), s.template_name.clone()), (None, None));
    assert_eq!(s.traffic, [], "empty: 100 % to the latest revision");
    assert_eq!(s.revision_name(1), "s-00001");
    let t = &s.template;
    assert_eq!(t.container_concurrency, DEFAULT_CONTAINER_CONCURRENCY);
    assert_eq!(t.timeout, DEFAULT_REVISION_TIMEOUT);
    assert_eq!(t.scaling, ScalingSpec::default());
    assert_eq!(t.scaling.class, ScalingClass::Kpa);
    assert_eq!(t.scaling.scale_down_delay, Duration::ZERO);
    assert_eq!(t.scaling.max_scale, None);
    assert_eq!(t.scaling.initial_scale, 1);
    assert_eq!(t.scaling.queue_depth, 10_000);
    assert_eq!(t.metric_total(), 100.0);
    assert_eq!(
        t.pod.containers,
        [ContainerSpec::command(vec!["app".into()])]
    );
    assert_eq!(t.pod.local_blocker, None);
    assert_eq!(t.pod.ignored_locally, Vec::<String>::new());

    let tcp = only_service(&container(
        "command: [app], readinessProbe: {tcpSocket: {}}",
    ));
    assert_eq!(
        tcp.template.pod.containers[0].readiness,
        Some(Probe {
            action: ProbeAction::TcpSocket { port: None },
            initial_delay: DEFAULT_PROBE_INITIAL_DELAY,
            period: DEFAULT_PROBE_PERIOD,
            timeout: DEFAULT_PROBE_TIMEOUT,
            failure_threshold: DEFAULT_PROBE_FAILURE_THRESHOLD,
            success_threshold: DEFAULT_PROBE_SUCCESS_THRESHOLD,
        })
    );
    let http = only_service(&container("command: [app], readinessProbe: {httpGet: {}}"));
    assert!(matches!(
        http.template.pod.containers[0].readiness.clone().map(|p| p.action),
        Some(ProbeAction::HttpGet { path, port: None, .. }) if path == "/"
    ));

    let image_only = only_service(&container("image: example/app"));
    let pod = &image_only.template.pod;
    assert_eq!(pod.containers[0].command, Vec::<String>::new());
    assert_eq!(pod.containers[0].image.as_deref(), Some("example/app"));
    assert!(
        pod.local_blocker
            .as_deref()
            .is_some_and(|b| b.contains("spec.template.spec.containers[0] has only an image")),
        "{:?}",
        pod.local_blocker
    );

    let unbounded = only_service(&annotated(
        "{autoscaling.knative.dev/max-scale: \"0\", autoscaling.knative.dev/min-scale: \"3\"}",
    ));
    assert_eq!(
        (
            unbounded.template.scaling.min_scale,
            unbounded.template.scaling.max_scale
        ),
        (3, None),
        "max-scale 0 is unbounded, so any min-scale fits"
    );
}

#[test]
fn rejected_templates_name_their_field() {
    let no_containers = service("s", "  template:\n    spec:\n      containers: []\n");
    one_error(
        &no_containers,
        0,
        "spec.template.spec.containers",
        "one container is required; found none",
    );
    let two = service(
        "s",
        "  template:\n    spec:\n      containers: [{command: [a]}, {command: [b]}]\n",
    );
    one_error(
        &two,
        0,
        "spec.template.spec.containers",
        "needs a port on exactly one of them",
    );
    let spec = |body: &str| {
        service(
            "s",
            &format!(
                "  template:\n    spec:\n      {body}\n      containers: [{{command: [a]}}]\n"
            ),
        )
    };
    one_error(
        &spec("containerConcurrency: -1"),
        0,
        "spec.template.spec.containerConcurrency",
        "must be 0 (unlimited) or more, found -1",
    );
    one_error(
        &spec("timeoutSeconds: 0"),
        0,
        "spec.template.spec.timeoutSeconds",
        "greater than 0",
    );
    let c = "spec.template.spec.containers[0]";
    for (body, field, reason) in [
        (
            "args: [x]",
            "command",
            "set command (the local process runtime",
        ),
        ("command: [\"\"]", "command[0]", "must not be empty"),
        ("image: \"\"", "command", "found neither"),
        (
            "command: [a], env: [{name: \"\", value: x}]",
            "env[0].name",
            "must not be empty",
        ),
        (
            "command: [a], env: [{name: PORT, value: \"1\"}]",
            "env[0].name",
            "reserved",
        ),
        (
            "command: [a], ports: [{containerPort: 0}]",
            "ports[0].containerPort",
            "from 1 to 65535, found 0",
        ),
        (
            "command: [a], ports: [{containerPort: 70000}]",
            "ports[0].containerPort",
            "found 70000",
        ),
        (
            "command: [a], ports: [{containerPort: 1}, {containerPort: 2}]",
            "ports",
            "more than one container port is set",
        ),
        (
            "command: [a], ports: [{containerPort: 80, protocol: UDP}]",
            "ports[0].protocol",
            "only TCP",
        ),
        (
            "command: [a], ports: [{containerPort: 80, name: grpc}]",
            "ports[0].name",
            "expected empty, http1 or h2c",
        ),
        (
            "command: [a], readinessProbe: {}",
            "readinessProbe",
            "exactly one of httpGet, tcpSocket, exec or grpc; found none",
        ),
        (
            "command: [a], readinessProbe: {httpGet: {}, tcpSocket: {}}",
            "readinessProbe",
            "found several",
        ),
        (
            "command: [a], readinessProbe: {tcpSocket: {port: -1}}",
            "readinessProbe.tcpSocket.port",
            "from 1 to 65535",
        ),
        (
            "command: [a], readinessProbe: {tcpSocket: {}, periodSeconds: -1}",
            "readinessProbe.periodSeconds",
            "0 or more",
        ),
        (
            "command: [a], readinessProbe: {tcpSocket: {}, periodSeconds: 1, timeoutSeconds: -1}",
            "readinessProbe.timeoutSeconds",
            "greater than 0",
        ),
        (
            "command: [a], readinessProbe: {tcpSocket: {}, periodSeconds: 1, failureThreshold: -1}",
            "readinessProbe.failureThreshold",
            "1 or more",
        ),
        (
            "command: [a], lifecycle: {preStop: {exec: {command: [x]}}}",
            "lifecycle",
            "unknown field (Knative accepts here: name, args, command",
        ),
        (
            "command: [a], volumeMounts: [{name: nope, mountPath: /x}]",
            "volumeMounts[0].name",
            "no volume named \"nope\"",
        ),
        (
            "command: [a], readinessProbe: {exec: {command: []}}",
            "readinessProbe.exec.command",
            "give the program to run",
        ),
        (
            "command: [a], ports: [{containerPort: 9090}]",
            "ports[0].containerPort",
            "9090 is a reserved port",
        ),
        (
            "command: [a], readinessProbe: {tcpSocket: {}, timeoutSeconds: 3}",
            "readinessProbe.timeoutSeconds",
            "disallowed when periodSeconds is zero",
        ),
        (
            "command: [a], livenessProbe: {tcpSocket: {}, successThreshold: 2}",
            "livenessProbe.successThreshold",
            "must be 1 for liveness",
        ),
        (
            "command: [a], resources: {limits: {memory: lots}}",
            "resources.limits.memory",
            "invalid quantity \"lots\"",
        ),
    ] {
        one_error(&container(body), 0, &format!("{c}.{field}"), reason);
    }
}

#[test]
fn rejected_annotations_name_their_key() {
    for (key, value, reason) in [
        (
            "autoscaling.knative.dev/min-scale",
            "-1",
            "integer of at least 0, found \"-1\"",
        ),
        (
            "autoscaling.knative.dev/minScale",
            "x",
            "integer of at least 0",
        ),
        ("autoscaling.knative.dev/max-scale", "1.5", "integer"),
        ("autoscaling.knative.dev/initial-scale", "-2", "integer"),
        (
            "autoscaling.knative.dev/target",
            "abc",
            "number greater than 0, found \"abc\"",
        ),
        ("autoscaling.knative.dev/target", "0", "greater than 0"),
        ("autoscaling.knative.dev/target", "NaN", "greater than 0"),
        (
            "autoscaling.knative.dev/target-utilization-percentage",
            "101",
            "from 1 to 100",
        ),
        ("autoscaling.knative.dev/class", "mine", "unknown class"),
        (
            "autoscaling.knative.dev/metric",
            "cpu",
            "needs the hpa.autoscaling.knative.dev class",
        ),
        (
            "autoscaling.knative.dev/metric",
            "latency",
            "expected concurrency or rps",
        ),
        ("autoscaling.knative.dev/window", "5s", "from 6s to 1h"),
        ("autoscaling.knative.dev/window", "2h", "from 6s to 1h"),
        ("autoscaling.knative.dev/window", "60", "has no unit"),
        (
            "autoscaling.knative.dev/panic-window-percentage",
            "0.5",
            "from 1 to 100",
        ),
        (
            "autoscaling.knative.dev/panic-threshold-percentage",
            "100",
            "from 110 to 1000",
        ),
        (
            "autoscaling.knative.dev/scale-down-delay",
            "61m",
            "from 0s to 1h",
        ),
        (
            "autoscaling.knative.dev/scale-down-delay",
            "-1s",
            "negative",
        ),
        (
            "autoscaling.knative.dev/scale-to-zero-pod-retention-period",
            "PT1M",
            "invalid duration",
        ),
        ("tidegate.dev/backlog-target", "0", "integer of at least 1"),
        (
            "tidegate.dev/reserved-instances",
            "-1",
            "integer of at least 0",
        ),
        ("tidegate.dev/queue-depth", "0", "integer of at least 1"),
        (
            "tidegate.dev/reserved-instances",
            "two",
            "integer of at least 0",
        ),
        (
            "tidegate.dev/reserved-instance-concurrency",
            "-2",
            "integer of at least 0",
        ),
        (
            "knative.aliyun.com/reserve-instance",
            "yes",
            "expected enable or disable",
        ),
        (
            "tidegate.dev/reserved-instance-resources",
            "[1, 2]",
            "expected a YAML or JSON object",
        ),
    ] {
        one_error(
            &annotated(&format!("{{{key}: \"{value}\"}}")),
            0,
            &annotation_field(key),
            reason,
        );
    }
    one_error(
        &annotated(
            "{autoscaling.knative.dev/min-scale: \"3\", autoscaling.knative.dev/max-scale: \"2\"}",
        ),
        0,
        &annotation_field("autoscaling.knative.dev/min-scale"),
        "min-scale 3 is greater than max-scale 2",
    );
    one_error(
        &annotated(
            "{autoscaling.knative.dev/minScale: \"3\", autoscaling.knative.dev/maxScale: \"2\"}",
        ),
        0,
        &annotation_field("autoscaling.knative.dev/minScale"),
        "greater than max-scale",
    );
    one_error(
        &annotated(
            "{autoscaling.knative.dev/min-scale: \"1\", autoscaling.knative.dev/minScale: \"1\"}",
        ),
        0,
        &annotation_field("autoscaling.knative.dev/minScale"),
        "set only one of",
    );
    one_error(
        &annotated("{autoscaling.knative.dev/min-scale: 1}"),
        0,
        &annotation_field("autoscaling.knative.dev/min-scale"),
        "quote the value",
    );
}

#[test]
fn unknown_and_misplaced_annotations_warn() {
    let yaml = annotated(
        "{autoscaling.knative.dev/target-burst-capacity: \"200\", tidegate.dev/queue-size: \"5\", \
         autoscaling.knative.dev/minScale: \"2\", example.com/x: z}",
    )
    .replace(
        "  name: s\n",
        "  name: s\n  annotations: {autoscaling.knative.dev/min-scale: \"1\"}\n",
    );
    let snapshot = valid(&[("s.yaml", &yaml)]);
    assert_eq!(snapshot.services[0].template.scaling.min_scale, 2);
    let fields: Vec<_> = snapshot.warnings.iter().map(|w| w.field.as_str()).collect();
    assert_eq!(
        fields,
        [
            "metadata.annotations[\"autoscaling.knative.dev/min-scale\"]",
            annotation_field("autoscaling.knative.dev/target-burst-capacity").as_str(),
            annotation_field("tidegate.dev/queue-size").as_str(),
        ]
    );
    assert!(
        snapshot.warnings[0]
            .reason
            .contains("spec.template.metadata.annotations")
    );
    assert!(snapshot.warnings[1].reason.contains("ignored"));
}

#[test]
fn rejected_traffic_names_the_entry() {
    one_error(
        &with_traffic("    - {latestRevision: true, percent: 99}\n"),
        0,
        "spec.traffic",
        "the percents sum to 99; they must sum to 100",
    );
    one_error(
        &with_traffic(
            "    - {percent: 50, tag: blue}\n    - {revisionName: s-00001, percent: 50, tag: blue}\n",
        ),
        0,
        "spec.traffic[1].tag",
        "tag \"blue\" is also used by spec.traffic[0]",
    );
    one_error(
        &with_traffic("    - {revisionName: other-00001, percent: 100}\n"),
        0,
        "spec.traffic[0].revisionName",
        "\"other-00001\" is not a revision of Service default/s",
    );
    for (entry, field, reason) in [
        (
            "{percent: 101}",
            "spec.traffic[0].percent",
            "from 0 to 100, found 101",
        ),
        ("{percent: -1}", "spec.traffic[0].percent", "found -1"),
        (
            "{percent: 100, revisionName: s-1, latestRevision: true}",
            "spec.traffic[0]",
            "not both",
        ),
        (
            "{percent: 100, latestRevision: false}",
            "spec.traffic[0].latestRevision",
            "needs a revisionName",
        ),
        (
            "{percent: 100, configurationName: s}",
            "spec.traffic[0].configurationName",
            "not supported",
        ),
        (
            "{percent: 100, tag: Blue}",
            "spec.traffic[0].tag",
            "invalid name",
        ),
        (
            "{percent: 100, revisionName: s-}",
            "spec.traffic[0].revisionName",
            "invalid name",
        ),
        (
            "{percent: 100, url: http://x}",
            "spec.traffic[0].url",
            "unknown field",
        ),
    ] {
        one_error(&with_traffic(&format!("    - {entry}\n")), 0, field, reason);
    }
    let tag_only = only_service(&with_traffic(
        "    - {percent: 100}\n    - {revisionName: s-00001, tag: old}\n",
    ));
    assert_eq!(tag_only.traffic[1].percent, 0);
}

#[test]
fn service_and_revision_names() {
    let long = "a".repeat(58);
    one_error(
        &container("command: [a]").replace("name: s\n", &format!("name: {long}\n")),
        0,
        "metadata.name",
        "at most 57 characters",
    );
    only_service(
        &container("command: [a]").replace("name: s\n", &format!("name: {}\n", &long[1..])),
    );
    one_error(
        &container("command: [a]").replace("name: s\n", "name: S\n"),
        0,
        "metadata.name",
        "invalid name",
    );
    let named = |name: &str| {
        service(
            "s",
            &format!(
                "  template:\n    metadata: {{name: {name}}}\n    spec:\n      containers: [{{command: [a]}}]\n"
            ),
        )
    };
    assert_eq!(
        only_service(&named("s-blue")).template_name.as_deref(),
        Some("s-blue")
    );
    one_error(
        &named("blue"),
        0,
        "spec.template.metadata.name",
        "must start with \"s-\"",
    );
    let duplicate = container("command: [a]");
    let errors = invalid(&[("a.yaml", &duplicate), ("b.yaml", &duplicate)]);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert!(errors[0].reason.contains("duplicate Service default/s"));
}

#[test]
fn fingerprint_follows_the_template_not_the_traffic() {
    let fingerprint = |yaml: &str| only_service(yaml).fingerprint;
    let base = fingerprint(FULL);
    assert_eq!(base, fingerprint(FULL), "stable");
    let changes = [
        ("name: billing-v2", "name: billing-v3"),
        ("app: billing", "app: billing2"),
        ("target: \"12.5\"", "target: \"12.6\""),
        ("percentage: \"80\"", "percentage: \"81\""),
        ("minScale: \"0\"", "minScale: \"2\""),
        ("window: 1m30s", "window: 1m31s"),
        ("delay: 500ms", "delay: 501ms"),
        ("queue-depth: \"500\"", "queue-depth: \"501\""),
        ("containerConcurrency: 4", "containerConcurrency: 5"),
        ("timeoutSeconds: 60", "timeoutSeconds: 61"),
        ("billing:2", "billing:3"),
        ("[./billing]", "[./billing2]"),
        ("[--verbose]", "[--quiet]"),
        ("/srv", "/srv2"),
        ("value: live", "value: test"),
        ("containerPort: 8081", "containerPort: 8082"),
        ("path: healthz", "path: ready"),
        ("periodSeconds: 5", "periodSeconds: 6"),
        ("successThreshold: 2", "successThreshold: 3"),
    ];
    for (from, to) in changes {
        assert_eq!(FULL.matches(from).count(), 1, "{from}");
        let changed = FULL.replace(from, to);
        assert_ne!(base, fingerprint(&changed), "{from} -> {to}");
    }
    let traffic = FULL
        .replace("percent: 90}", "percent: 80}")
        .replace("percent: 10, tag: canary", "percent: 20, tag: blue");
    assert_eq!(base, fingerprint(&traffic), "traffic is not the template");
    let service_label = FULL.replace("{team: payments}", "{team: billing}");
    assert_eq!(
        base,
        fingerprint(&service_label),
        "nor the Service's own metadata"
    );
}

#[test]
fn reserved_instances_read_as_tidegate_and_alibaba_write_them() {
    let template = |annotations: &str| {
        valid(&[("s.yaml", &annotated(annotations))]).services[0]
            .template
            .scaling
            .clone()
    };
    let aliyun = template("{knative.aliyun.com/reserve-instance: enable}");
    assert_eq!(aliyun.reserved_instances, 1);
    assert_eq!(aliyun.reserved_instance_concurrency, None);
    let own = template(
        "{tidegate.dev/reserved-instances: \"2\", tidegate.dev/reserved-instance-concurrency: \"4\", tidegate.dev/reserved-instance-resources: '{requests: {cpu: 100m, memory: 64Mi}, limits: {memory: 128Mi}}'}",
    );
    assert_eq!(own.reserved_instances, 2);
    assert_eq!(own.reserved_instance_concurrency, Some(4));
    let resources = own.reserved_instance_resources.expect("resources");
    assert_eq!(resources.requests_cpu_millis, Some(100));
    assert_eq!(resources.requests_memory, Some(64 << 20));
    assert_eq!(resources.limits_memory, Some(128 << 20));
    assert_eq!(
        resources.written.get("requests.cpu").map(String::as_str),
        Some("100m")
    );

    one_error(
        &annotated("{tidegate.dev/reserved-instance-resources: '{requests: {cpu: lots}}'}"),
        0,
        &format!(
            "{}.requests.cpu",
            annotation_field("tidegate.dev/reserved-instance-resources")
        ),
        "",
    );
    one_error(
        &annotated(
            "{knative.aliyun.com/reserve-instance: enable, tidegate.dev/reserved-instances: \"1\"}",
        ),
        0,
        &annotation_field("knative.aliyun.com/reserve-instance"),
        "not both",
    );
}

#[test]
fn reserved_instance_settings_that_change_nothing_warn() {
    let warnings = |annotations: &str| {
        valid(&[("s.yaml", &annotated(annotations))])
            .warnings
            .into_iter()
            .map(|w| format!("{} {}", w.field, w.reason))
            .collect::<Vec<_>>()
    };
    let above_zero = warnings(
        "{tidegate.dev/reserved-instances: \"1\", autoscaling.knative.dev/min-scale: \"2\"}",
    );
    assert!(
        above_zero
            .iter()
            .any(|w| w.contains("tidegate.dev/reserved-instances") && w.contains("min-scale 2")),
        "{above_zero:?}"
    );
    let unused = warnings(
        "{tidegate.dev/reserved-instance-concurrency: \"3\", knative.aliyun.com/reserve-instance-type: ecs}",
    );
    assert!(
        unused
            .iter()
            .any(|w| w.contains("reserved-instance-concurrency")
                && w.contains("no reserved instance")),
        "{unused:?}"
    );
    assert!(
        unused
            .iter()
            .any(|w| w.contains("knative.aliyun.com/reserve-instance-type")
                && w.contains("not read")),
        "{unused:?}"
    );
    one_error(
        &annotated(
            "{tidegate.dev/reserved-instances: \"1\", tidegate.dev/reserved-instance-resources: '{requests: {memory: 1Gi}, limits: {memory: 64Mi}}'}",
        ),
        0,
        &format!(
            "{}.requests.memory",
            annotation_field("tidegate.dev/reserved-instance-resources")
        ),
        "at most limits.memory",
    );
}
