//! Revision pod specs written as the Knative documentation writes them: Secrets and
//! ConfigMaps as env and volumes, probes, resources, several containers, Knative's feature
//! flags, and every new way to be wrong.

use super::services::service;
use super::*;
use crate::snapshot::{
    EnvValue, EnvVar, PodField, PodTemplate, ProbeAction, Sensitive, VolumeMount, VolumeSource,
};

const SECRET: &str = "apiVersion: v1
kind: Secret
metadata:
  name: db-credentials
  namespace: shop
type: Opaque
data:
  password: aHVudGVyMg==
stringData:
  user: admin
";

const CONFIG_MAP: &str = "apiVersion: v1
kind: ConfigMap
metadata:
  name: app-config
  namespace: shop
data:
  LOG_LEVEL: debug
  settings.json: '{\"color\": \"blue\"}'
";

/// The Service of the Knative docs' \"Mounting a Secret\" pattern, with a local `command`.
const SERVICE: &str = "apiVersion: serving.knative.dev/v1
kind: Service
metadata:
  name: reader
  namespace: shop
  annotations:
spec:
  template:
    metadata:
      labels:
        app: reader
    spec:
      serviceAccountName: reader-sa
      imagePullSecrets:
        - name: registry
      containers:
        - image: ghcr.io/example/reader:1
          command: [./reader]
          ports:
            - containerPort: 8080
          env:
            - name: DB_PASSWORD
              valueFrom:
                secretKeyRef:
                  name: db-credentials
                  key: password
            - name: LOG_LEVEL
              valueFrom:
                configMapKeyRef:
                  name: app-config
                  key: LOG_LEVEL
            - name: OPTIONAL
              valueFrom:
                configMapKeyRef: {name: absent, key: x, optional: true}
          envFrom:
            - prefix: CFG_
              configMapRef:
                name: app-config
          securityContext:
            runAsNonRoot: true
            allowPrivilegeEscalation: false
          resources:
            requests: {cpu: 100m, memory: 64Mi}
            limits: {memory: 128Mi}
          livenessProbe:
            httpGet: {path: /healthz}
            periodSeconds: 3
          startupProbe:
            tcpSocket: {}
            failureThreshold: 30
          volumeMounts:
            - name: secret-volume
              mountPath: /etc/secret-volume
            - name: config
              mountPath: /etc/app/settings.json
              subPath: settings.json
            - name: scratch
              mountPath: /scratch
      volumes:
        - name: secret-volume
          secret:
            secretName: db-credentials
            items:
              - {key: password, path: db/password, mode: 0400}
        - name: config
          configMap:
            name: app-config
        - name: scratch
          emptyDir: {sizeLimit: 10Mi}
";

fn pod_of(snapshot: &Snapshot, name: &str) -> PodTemplate {
    match snapshot.service("shop", name) {
        Some(service) => service.template.pod.clone(),
        None => panic!("no service {name}: {snapshot:#?}"),
    }
}

#[test]
fn secrets_and_config_maps_resolve_into_env_and_files() {
    let snapshot = valid(&[
        ("s.yaml", SERVICE),
        ("sec.yaml", SECRET),
        ("cm.yaml", CONFIG_MAP),
    ]);
    let pod = pod_of(&snapshot, "reader");
    let c = &pod.containers[0];
    assert_eq!(c.name, "user-container");
    assert_eq!(c.port, Some(8080));
    let env: Vec<&EnvVar> = c.env.iter().collect();
    assert_eq!(
        env,
        [
            &EnvVar::plain("CFG_LOG_LEVEL", "debug"),
            &EnvVar::plain("CFG_settings.json", "{\"color\": \"blue\"}"),
            &EnvVar {
                name: "DB_PASSWORD".into(),
                value: EnvValue::Secret(Sensitive("hunter2".into()))
            },
            &EnvVar::plain("LOG_LEVEL", "debug"),
        ],
        "envFrom first, then env; an absent optional key sets nothing"
    );
    assert_eq!(
        c.mounts,
        [
            VolumeMount {
                volume: "secret-volume".into(),
                mount_path: "/etc/secret-volume".into(),
                sub_path: None,
                read_only: true,
            },
            VolumeMount {
                volume: "config".into(),
                mount_path: "/etc/app/settings.json".into(),
                sub_path: Some("settings.json".into()),
                read_only: true,
            },
            VolumeMount {
                volume: "scratch".into(),
                mount_path: "/scratch".into(),
                sub_path: None,
                read_only: false,
            },
        ],
        "Knative defaults every mount but emptyDir to read-only"
    );
    let VolumeSource::Files(files) = &pod.volumes[0].source else {
        panic!("{:?}", pod.volumes[0]);
    };
    assert_eq!(files.len(), 1);
    assert_eq!(
        (
            files[0].path.as_str(),
            files[0].data.0.as_slice(),
            files[0].mode
        ),
        ("db/password", b"hunter2".as_slice(), 0o400)
    );
    let VolumeSource::Files(files) = &pod.volumes[1].source else {
        panic!("{:?}", pod.volumes[1]);
    };
    let paths: Vec<(&str, u32)> = files.iter().map(|f| (f.path.as_str(), f.mode)).collect();
    assert_eq!(paths, [("LOG_LEVEL", 0o644), ("settings.json", 0o644)]);
    assert_eq!(
        pod.volumes[2].source,
        VolumeSource::EmptyDir {
            memory: false,
            size_limit: Some(10 << 20)
        }
    );
    assert!(matches!(
        &c.liveness,
        Some(p) if p.period == Duration::from_secs(3)
            && matches!(&p.action, ProbeAction::HttpGet { path, .. } if path == "/healthz")
    ));
    assert_eq!(c.startup.as_ref().map(|p| p.failure_threshold), Some(30));
    assert_eq!(c.resources.requests_cpu_millis, Some(100));
    assert_eq!(c.resources.limits_memory, Some(128 << 20));
    let ignored = &pod.ignored_locally;
    for field in [
        "spec.template.spec.serviceAccountName",
        "spec.template.spec.imagePullSecrets",
        "spec.template.spec.containers[0].image",
        "spec.template.spec.containers[0].securityContext",
        "spec.template.spec.containers[0].resources.requests",
    ] {
        assert!(ignored.iter().any(|f| f == field), "{field}: {ignored:?}");
    }
    assert_eq!(pod.local_blocker, None);
    assert_eq!(
        pod.kubernetes.service_account_name.as_deref(),
        Some("reader-sa")
    );

    // Secret values never show in Debug output (logs, `tidegate check`).
    let shown = format!("{snapshot:?}");
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(!shown.contains("aHVudGVyMg"), "{shown}");
}

#[test]
fn a_changed_secret_makes_a_new_revision() {
    let before = valid(&[
        ("s.yaml", SERVICE),
        ("sec.yaml", SECRET),
        ("cm.yaml", CONFIG_MAP),
    ]);
    let changed = SECRET.replace("aHVudGVyMg==", "aHVudGVyMw==");
    let after = valid(&[
        ("s.yaml", SERVICE),
        ("sec.yaml", &changed),
        ("cm.yaml", CONFIG_MAP),
    ]);
    let fingerprint = |s: &Snapshot| s.service("shop", "reader").map(|s| s.fingerprint);
    assert_ne!(fingerprint(&before), fingerprint(&after));
}

#[test]
fn field_refs_resolve_to_the_local_pod() {
    let yaml = service(
        "f",
        "  template:\n    metadata: {labels: {tier: web}}\n    spec:\n      containers:\n      - command: [a]\n        env:\n        - {name: POD, valueFrom: {fieldRef: {fieldPath: metadata.name}}}\n        - {name: NS, valueFrom: {fieldRef: {fieldPath: metadata.namespace}}}\n        - {name: TIER, valueFrom: {fieldRef: {fieldPath: \"metadata.labels['tier']\"}}}\n",
    );
    let flags = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: config-features, namespace: knative-serving}\ndata:\n  kubernetes.podspec-fieldref: enabled\n";
    let errors = invalid(&[("f.yaml", &yaml)]);
    assert!(
        errors[0].reason.contains("kubernetes.podspec-fieldref"),
        "{errors:#?}"
    );
    let snapshot = valid(&[("f.yaml", &yaml), ("flags.yaml", flags)]);
    let env = &snapshot.services[0].template.pod.containers[0].env;
    assert_eq!(
        env,
        &[
            EnvVar {
                name: "POD".into(),
                value: EnvValue::PodField(PodField::Name)
            },
            EnvVar::plain("NS", "default"),
            EnvVar::plain("TIER", "web"),
        ]
    );
}

/// The Knative docs' multi-container sample: a serving container and a sidecar.
#[test]
fn several_containers_make_one_pod() {
    let yaml = service(
        "multi",
        "  template:\n    spec:\n      containers:\n      - name: first-container\n        command: [serve]\n        ports:\n        - containerPort: 8881\n      - name: second-container\n        command: [sidecar]\n",
    );
    let snapshot = valid(&[("m.yaml", &yaml)]);
    let pod = &snapshot.services[0].template.pod;
    let names: Vec<&str> = pod.containers.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["first-container", "second-container"]);
    assert_eq!((pod.serving, pod.serving_container().port), (0, Some(8881)));

    let unnamed = service(
        "multi",
        "  template:\n    spec:\n      containers:\n      - command: [sidecar]\n      - command: [serve]\n        ports: [{containerPort: 8881}]\n",
    );
    let snapshot = valid(&[("m.yaml", &unnamed)]);
    let pod = &snapshot.services[0].template.pod;
    let names: Vec<&str> = pod.containers.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["user-container-0", "user-container-1"]);
    assert_eq!(pod.serving, 1);

    let probed_sidecar = unnamed.replace(
        "- command: [sidecar]\n",
        "- command: [sidecar]\n        readinessProbe: {tcpSocket: {port: 9000}}\n",
    );
    one_error(
        &probed_sidecar,
        0,
        "spec.template.spec.containers[0].readinessProbe",
        "multi-container-probing",
    );
}

#[test]
fn feature_flags_come_from_config_features() {
    let yaml = service(
        "s",
        "  template:\n    spec:\n      nodeSelector: {disk: ssd}\n      containers: [{command: [a]}]\n",
    );
    let errors = invalid(&[("s.yaml", &yaml)]);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert_eq!(errors[0].field, "spec.template.spec.nodeSelector");
    assert!(errors[0].reason.contains("kubernetes.podspec-nodeselector"));
    let flags = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: config-features, namespace: knative-serving}\ndata:\n  kubernetes.podspec-nodeselector: allowed\n";
    let snapshot = valid(&[("s.yaml", &yaml), ("f.yaml", flags)]);
    assert_eq!(
        snapshot.services[0].template.pod.ignored_locally,
        ["spec.template.spec.nodeSelector"]
    );
    let bad = flags.replace("allowed", "maybe");
    let errors = invalid(&[("s.yaml", &yaml), ("f.yaml", &bad)]);
    assert!(
        errors
            .iter()
            .any(|e| e.file == std::path::Path::new("f.yaml")
                && e.field == "data[\"kubernetes.podspec-nodeselector\"]"
                && e.reason.contains("enabled, allowed or disabled")),
        "{errors:#?}"
    );
}

#[test]
fn unavailable_volumes_block_the_local_runtime_only() {
    let flags = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: config-features, namespace: knative-serving}\ndata:\n  kubernetes.podspec-persistent-volume-claim: enabled\n";
    let yaml = service(
        "pvc",
        "  template:\n    spec:\n      containers:\n      - command: [a]\n        volumeMounts: [{name: data, mountPath: /data}]\n      volumes:\n      - name: data\n        persistentVolumeClaim: {claimName: data}\n",
    );
    let snapshot = valid(&[("s.yaml", &yaml), ("f.yaml", flags)]);
    let pod = &snapshot.services[0].template.pod;
    assert_eq!(
        pod.volumes[0].source,
        VolumeSource::Unavailable("persistentVolumeClaim".into())
    );
    assert!(
        pod.local_blocker
            .as_deref()
            .is_some_and(|b| b.contains("volume \"data\" (persistentVolumeClaim)")),
        "{pod:?}"
    );
}

#[test]
fn secret_keys_must_be_file_names() {
    for key in [
        "/etc/cron.d/x",
        "../../root/.ssh/authorized_keys",
        "..",
        "a/b",
    ] {
        let secret = SECRET.replace("  user: admin\n", &format!("  \"{key}\": x\n"));
        let errors = invalid(&[("sec.yaml", &secret)]);
        assert!(
            errors.iter().any(|e| e.reason.contains("invalid key")),
            "{key}: {errors:#?}"
        );
    }
    let wrapped = SECRET.replace(
        "  password: aHVudGVyMg==\n",
        "  password: |\n    aHVu\n    dGVyMg==\n",
    );
    let snapshot = valid(&[
        ("s.yaml", SERVICE),
        ("sec.yaml", &wrapped),
        ("cm.yaml", CONFIG_MAP),
    ]);
    let env = &pod_of(&snapshot, "reader").containers[0].env;
    assert!(env.contains(&EnvVar {
        name: "DB_PASSWORD".into(),
        value: EnvValue::Secret(Sensitive("hunter2".into()))
    }));
    // Knative forces read-only, with a warning.
    let writable = SERVICE.replace(
        "mountPath: /etc/secret-volume\n",
        "mountPath: /etc/secret-volume\n              readOnly: false\n",
    );
    let snapshot = valid(&[
        ("s.yaml", &writable),
        ("sec.yaml", SECRET),
        ("cm.yaml", CONFIG_MAP),
    ]);
    assert!(pod_of(&snapshot, "reader").containers[0].mounts[0].read_only);
    assert!(
        snapshot
            .warnings
            .iter()
            .any(|w| w.field.ends_with("volumeMounts[0].readOnly"))
    );
}

#[test]
fn bad_pod_specs_name_their_field() {
    let c = "spec.template.spec.containers[0]";
    for (from, to, field, reason) in [
        (
            "key: password\n",
            "key: passwd\n",
            format!("{c}.env[0].valueFrom.secretKeyRef.key"),
            "Secret shop/db-credentials has no key \"passwd\"",
        ),
        (
            "                  name: db-credentials\n",
            "                  name: nope\n",
            format!("{c}.env[0].valueFrom.secretKeyRef.name"),
            "Secret shop/nope is not in the manifest set",
        ),
        (
            "mountPath: /scratch",
            "mountPath: /etc/secret-volume/",
            format!("{c}.volumeMounts[2].mountPath"),
            "\"/etc/secret-volume\" is mounted twice",
        ),
        (
            "subPath: settings.json",
            "subPath: ../../etc/passwd",
            format!("{c}.volumeMounts[1].subPath"),
            "must stay inside the volume",
        ),
        (
            "{key: password, path: db/password, mode: 0400}",
            "{key: password, path: ../password}",
            "spec.template.spec.volumes[0].secret.items[0].path".to_owned(),
            "must stay inside the volume",
        ),
        (
            "mountPath: /scratch",
            "mountPath: /scratch/../etc",
            format!("{c}.volumeMounts[2].mountPath"),
            "must not contain '..'",
        ),
        (
            "mountPath: /scratch",
            "mountPath: relative",
            format!("{c}.volumeMounts[2].mountPath"),
            "must be an absolute path",
        ),
        (
            "- name: scratch\n          emptyDir",
            "- name: unused\n          emptyDir",
            format!("{c}.volumeMounts[2].name"),
            "no volume named \"scratch\"",
        ),
        (
            "emptyDir: {sizeLimit: 10Mi}",
            "emptyDir: {medium: Disk}",
            "spec.template.spec.volumes[2].emptyDir.medium".to_owned(),
            "expected empty or Memory",
        ),
        (
            "          configMap:\n            name: app-config\n",
            "          configMap:\n            name: app-config\n          secret: {secretName: db-credentials}\n",
            "spec.template.spec.volumes[1]".to_owned(),
            "exactly one volume source",
        ),
        (
            "runAsNonRoot: true",
            "runAsNonRoot: true\n            privileged: true",
            format!("{c}.securityContext.privileged"),
            "only false",
        ),
        (
            "containerPort: 8080",
            "containerPort: eighty",
            format!("{c}.ports[0].containerPort"),
            "invalid type",
        ),
    ] {
        assert!(SERVICE.contains(from), "{from}");
        let yaml = SERVICE.replacen(from, to, 1);
        let errors = invalid(&[
            ("s.yaml", &yaml),
            ("sec.yaml", SECRET),
            ("cm.yaml", CONFIG_MAP),
        ]);
        assert!(
            errors
                .iter()
                .any(|e| e.field == field && e.reason.contains(reason)),
            "{to}: want {field}: {reason}; got {errors:#?}"
        );
        for error in &errors {
            assert!(!error.to_string().contains("hunter2"), "{error}");
        }
    }
    let unmounted = SERVICE.replace(
        "        - name: scratch\n          emptyDir: {sizeLimit: 10Mi}\n",
        "        - name: scratch\n          emptyDir: {sizeLimit: 10Mi}\n        - name: spare\n          emptyDir: {}\n",
    );
    let errors = invalid(&[
        ("s.yaml", &unmounted),
        ("sec.yaml", SECRET),
        ("cm.yaml", CONFIG_MAP),
    ]);
    assert!(
        errors
            .iter()
            .any(|e| e.field == "spec.template.spec.volumes[3].name"
                && e.reason.contains("not mounted")),
        "{errors:#?}"
    );
}

/// `deploy/examples/knative/`: manifests as the Knative docs write them all load, and do what
/// Knative would.
#[test]
fn examples_written_as_knative_documents_them_load() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples/knative");
    let snapshot = match crate::load_dirs(&[dir]) {
        Ok(snapshot) => snapshot,
        Err(errors) => panic!("{errors:#?}"),
    };
    assert_eq!(snapshot.services.len(), 3);
    assert_eq!(snapshot.triggers.len(), 2);
    let multi = snapshot.service("default", "multi-container");
    assert_eq!(multi.map(|s| s.template.pod.containers.len()), Some(2));
    let cesql = |t: &TriggerConfig| matches!(&t.filter, crate::Filter::All(f) if matches!(f.first(), Some(crate::Filter::Cesql(_))));
    assert!(snapshot.triggers.iter().any(cesql));
}
