//! `tidegate.dev/schedule` on a revision template: windows read, every mistake located.

use super::*;

fn service(schedule: &str) -> String {
    format!(
        "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata: {{name: s}}\nspec:\n  template:\n    metadata:\n      annotations:\n        tidegate.dev/schedule: '{schedule}'\n    spec:\n      containers: [{{command: [app]}}]\n"
    )
}

const FIELD: &str = "spec.template.metadata.annotations[\"tidegate.dev/schedule\"]";

#[test]
fn windows_are_read_from_yaml_or_json() {
    for schedule in [
        r#"[{start: "0 8 * * mon-fri", end: "0 18 * * mon-fri", timezone: Europe/Berlin, minScale: 3, maxScale: 10}]"#,
        r#"[{"start": "0 8 * * mon-fri", "end": "0 18 * * mon-fri", "timezone": "Europe/Berlin", "minScale": 3, "maxScale": 10}]"#,
    ] {
        let snapshot = valid(&[("s.yaml", &service(schedule))]);
        let windows = &snapshot.services[0].template.scaling.schedule;
        assert_eq!(windows.len(), 1, "{schedule}");
        assert_eq!(windows[0].start.as_str(), "0 8 * * mon-fri");
        assert_eq!(windows[0].timezone, "Europe/Berlin");
        assert_eq!((windows[0].min_scale, windows[0].max_scale), (3, Some(10)));
    }
}

#[test]
fn every_mistake_is_located_at_its_window_and_field() {
    let cases = [
        (
            r#"[{start: "0 8 * * *", end: "0 18 * * *", minScale: 1}]"#,
            "[0].timezone",
            "required",
        ),
        (
            r#"[{start: "0 8 * * *", end: "0 18 * * *", timezone: Mars/Base}]"#,
            "[0].timezone",
            "unknown time zone",
        ),
        (
            r#"[{start: "0 8 * *", end: "0 18 * * *", timezone: UTC}]"#,
            "[0].start",
            "expected 5 fields",
        ),
        (
            r#"[{start: "0 8 * * *", end: "61 18 * * *", timezone: UTC}]"#,
            "[0].end",
            "minute 61 is outside 0-59",
        ),
        (
            r#"[{start: "0 8 * * *", end: "0  8 * * *", timezone: UTC}]"#,
            "[0].end",
            "must differ from start",
        ),
        (
            r#"[{start: "0 8 * * *", end: "0 9 * * *", timezone: UTC, minScale: 5, maxScale: 2}]"#,
            "[0].minScale",
            "greater than maxScale 2",
        ),
    ];
    for (schedule, field, reason) in cases {
        let errors = invalid(&[("s.yaml", &service(schedule))]);
        assert!(
            errors
                .iter()
                .any(|e| e.field == format!("{FIELD}{field}") && e.reason.contains(reason)),
            "{schedule}: {errors:?}"
        );
    }
    for (schedule, reason) in [
        (r#"{start: x}"#, "expected a YAML or JSON list"),
        (
            r#"[{start: "0 8 * * *", end: "0 9 * * *", timezone: UTC, minscale: 1}]"#,
            "unknown field `minscale`",
        ),
        (
            r#"[{start: "0 8 * * *", end: "0 9 * * *", timezone: UTC, minScale: -1}]"#,
            "expected a YAML or JSON list",
        ),
    ] {
        let errors = invalid(&[("s.yaml", &service(schedule))]);
        assert!(
            errors
                .iter()
                .any(|e| e.field == FIELD && e.reason.contains(reason)),
            "{schedule}: {errors:?}"
        );
    }
}
