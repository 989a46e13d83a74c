//! Manifests: `tidegate check`, live reload, the last good set kept on errors, reported in
//! `/api/v1/manifests`, `/metrics` and `tidegate status`, and served again after a crash.

use std::process::Command;
use std::time::Duration;

use crate::harness::*;

#[test]
fn check_reports_located_errors_and_exits_1() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let good = manifests(tmp.path(), &[("b.yaml", BROKER)]);
    let out = Command::new(bin())
        .arg("check")
        .arg(&good)
        .output()
        .expect("run check");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    let bad_dir = tmp.path().join("bad");
    std::fs::create_dir_all(&bad_dir).expect("mkdir");
    std::fs::write(
        bad_dir.join("t.yaml"),
        format!(
            "{BROKER}---\n{}",
            trigger(
                "t",
                "http://127.0.0.1:1/",
                "  delivery:\n    backoffPolicy: sideways\n"
            )
        ),
    )
    .expect("write");
    let out = Command::new(bin())
        .arg("check")
        .arg(&bad_dir)
        .output()
        .expect("run check");
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("t.yaml"), "{text}");
    assert!(text.contains("document 1"), "{text}");
    assert!(text.contains("spec.delivery.backoffPolicy"), "{text}");
}

#[tokio::test]
async fn changes_apply_live_and_bad_sets_keep_the_last_good_one() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let sub = Subscriber::accepting().await;
    let dir = manifests(tmp.path(), &[("b.yaml", BROKER)]);
    let gw = Gateway::start(&dir, &tmp.path().join("data"), &[]).await;
    assert!(gw.triggers().await.is_empty());

    std::fs::write(dir.join("t.yaml"), trigger("live", &sub.url, "")).expect("write");
    eventually("the new trigger to apply", || async {
        !(gw.triggers().await.is_empty())
    })
    .await;
    let client = reqwest::Client::new();
    let url = gw.broker_url("default", "default");
    assert_eq!(publish(&client, &url, "l-1", "t", &[]).await.status(), 202);
    sub.wait_for(1).await;

    // An invalid change is reported; the running set stays.
    std::fs::write(dir.join("broken.yaml"), "apiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata: {name: x}\nspec: {bogus: 1}\n").expect("write");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(gw.triggers().await.len(), 1);
    assert_eq!(publish(&client, &url, "l-2", "t", &[]).await.status(), 202);
    sub.wait_for(2).await;

    // A trigger naming a missing broker is listed, not ready.
    std::fs::remove_file(dir.join("broken.yaml")).expect("rm");
    let orphan = trigger("orphan", &sub.url, "").replace("broker: default", "broker: missing");
    std::fs::write(dir.join("orphan.yaml"), orphan).expect("write");
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let triggers = gw.triggers().await;
        if let Some(t) = triggers.iter().find(|t| t["name"] == "orphan") {
            assert_eq!(t["ready"], false);
            assert!(
                t["reason"].as_str().unwrap_or("").contains("missing"),
                "{t}"
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "orphan trigger never listed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_trigger_moved_to_another_broker_releases_the_old_one() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (hang, _task) = hanging_server().await;
    let other = BROKER.replace("name: default", "name: other");
    let dir = manifests(
        tmp.path(),
        &[
            ("b.yaml", BROKER),
            ("o.yaml", &other),
            ("t.yaml", &trigger("mover", &hang, "")),
        ],
    );
    let gw = Gateway::start(&dir, &tmp.path().join("data"), &[]).await;
    let client = reqwest::Client::new();
    for i in 0..3 {
        let r = publish(
            &client,
            &gw.broker_url("default", "default"),
            &format!("m-{i}"),
            "t",
            &[],
        )
        .await;
        assert_eq!(r.status(), 202);
    }
    let stored = |name: &'static str| {
        let admin = gw.admin.clone();
        async move {
            let brokers: Vec<serde_json::Value> = reqwest::get(format!("{admin}/api/v1/brokers"))
                .await
                .expect("admin")
                .json()
                .await
                .expect("json");
            brokers
                .iter()
                .find(|b| b["name"] == name)
                .map(|b| b["stored"].clone())
        }
    };
    assert_eq!(stored("default").await, Some(serde_json::json!(3)));
    let moved = trigger("mover", &hang, "").replace("broker: default", "broker: other");
    std::fs::write(dir.join("t.yaml"), moved).expect("write");
    eventually(
        "the old broker to drop what only the moved trigger needed",
        || async { stored("default").await == Some(serde_json::json!(0)) },
    )
    .await;
}

/// `GET /api/v1/manifests`.
async fn manifest_report(gw: &Gateway) -> serde_json::Value {
    reqwest::get(format!("{}/api/v1/manifests", gw.admin))
        .await
        .expect("admin reachable")
        .json()
        .await
        .expect("manifests JSON")
}

/// The value of the sample `series` (name and labels) in `/metrics`.
async fn metric(gw: &Gateway, series: &str) -> Option<String> {
    let text = gw.metrics().await;
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ').map(str::to_owned))
}

const APPLIED: &str = "tidegate_manifest_reloads_total{outcome=\"applied\"}";
const REJECTED: &str = "tidegate_manifest_reloads_total{outcome=\"rejected\"}";
const SUCCESS: &str = "tidegate_manifest_last_reload_success";

/// Waits until `sub` received the event `id` (an earlier one may arrive again after a crash).
async fn delivered(sub: &Subscriber, id: &str) {
    eventually(&format!("{id} to be delivered"), || async {
        ids(&sub.received()).contains_key(id)
    })
    .await;
}

fn status_output(gw: &Gateway) -> String {
    let out = Command::new(bin())
        .arg("status")
        .arg("--admin")
        .arg(&gw.admin)
        .output()
        .expect("run status");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn a_rejected_reload_is_reported_and_a_restart_serves_the_last_good_set() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let sub = Subscriber::accepting().await;
    let dir = manifests(
        tmp.path(),
        &[
            ("b.yaml", BROKER),
            ("t.yaml", &trigger("keep", &sub.url, "")),
        ],
    );
    let mut gw = Gateway::start(&dir, &tmp.path().join("data"), &[]).await;
    let client = reqwest::Client::new();
    let url = gw.broker_url("default", "default");

    let report = manifest_report(&gw).await;
    assert_eq!(
        report["sources"],
        serde_json::json!([dir.display().to_string()])
    );
    assert_eq!(report["generation"], 1, "{report}");
    assert_eq!(report["from_last_good"], false, "{report}");
    assert_eq!(report["last_reload"], "applied", "{report}");
    assert_eq!(report["errors"], serde_json::json!([]), "{report}");
    assert!(
        report["applied_at"]
            .as_str()
            .is_some_and(|t| t.contains('T')),
        "{report}"
    );
    assert_eq!(metric(&gw, SUCCESS).await.as_deref(), Some("1"));
    assert_eq!(metric(&gw, REJECTED).await.as_deref(), Some("0"));

    // An invalid file: reported with its location, counted; the running set keeps serving.
    let broken = trigger("second", "ftp://nowhere/", "");
    std::fs::write(dir.join("second.yaml"), &broken).expect("write");
    eventually("the rejected reload to be reported", || async {
        manifest_report(&gw).await["last_reload"] == "rejected"
    })
    .await;
    let report = manifest_report(&gw).await;
    let errors = report["errors"].as_array().expect("errors listed");
    assert_eq!(errors.len(), 1, "{report}");
    assert_eq!(
        errors[0]["file"],
        dir.join("second.yaml").display().to_string(),
        "{report}"
    );
    assert_eq!(errors[0]["document"], 0, "{report}");
    assert_eq!(errors[0]["field"], "spec.subscriber.uri", "{report}");
    assert!(
        errors[0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("http or https")),
        "{report}"
    );
    assert_eq!(report["generation"], 1, "{report}");
    assert_eq!(metric(&gw, REJECTED).await.as_deref(), Some("1"));
    assert_eq!(metric(&gw, SUCCESS).await.as_deref(), Some("0"));
    let ready = reqwest::get(format!("{}/readyz", gw.admin))
        .await
        .expect("readyz");
    assert_eq!(ready.status(), 200);
    assert_eq!(publish(&client, &url, "r-1", "t", &[]).await.status(), 202);
    sub.wait_for(1).await;
    let text = status_output(&gw);
    assert!(
        text.contains("was rejected with 1 error(s); the first: ") && text.contains("second.yaml"),
        "{text}"
    );

    // A crash with the invalid file still there: the restart serves the last good set.
    gw.kill9_and_restart().await;
    assert_eq!(publish(&client, &url, "r-2", "t", &[]).await.status(), 202);
    delivered(&sub, "r-2").await;
    assert_eq!(gw.triggers().await.len(), 1);
    let report = manifest_report(&gw).await;
    assert_eq!(report["from_last_good"], true, "{report}");
    assert_eq!(report["generation"], 1, "{report}");
    assert_eq!(report["last_reload"], "rejected", "{report}");
    assert_eq!(
        report["errors"][0]["field"], "spec.subscriber.uri",
        "{report}"
    );
    assert_eq!(metric(&gw, SUCCESS).await.as_deref(), Some("0"));
    assert_eq!(metric(&gw, REJECTED).await.as_deref(), Some("1"));
    let text = status_output(&gw);
    assert!(
        text.contains("warning: serving the persisted last-good manifest set"),
        "{text}"
    );
    assert!(text.contains("was rejected with 1 error(s)"), "{text}");

    // Fixing the file applies it: a new generation from the directories, success again.
    std::fs::write(dir.join("second.yaml"), trigger("second", &sub.url, "")).expect("write");
    eventually("the fixed set to apply", || async {
        manifest_report(&gw).await["last_reload"] == "applied"
    })
    .await;
    let report = manifest_report(&gw).await;
    assert_eq!(report["from_last_good"], false, "{report}");
    assert_eq!(report["generation"], 2, "{report}");
    assert_eq!(report["errors"], serde_json::json!([]), "{report}");
    assert_eq!(metric(&gw, SUCCESS).await.as_deref(), Some("1"));
    assert_eq!(metric(&gw, APPLIED).await.as_deref(), Some("1"));
    assert_eq!(gw.triggers().await.len(), 2);
    assert_eq!(publish(&client, &url, "r-3", "t", &[]).await.status(), 202);
    delivered(&sub, "r-3").await;
    assert!(!status_output(&gw).contains("warning"));
}

#[tokio::test]
async fn serve_exits_1_on_an_invalid_set_with_no_persisted_copy() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = manifests(
        tmp.path(),
        &[
            ("b.yaml", BROKER),
            ("t.yaml", &trigger("t", "ftp://nowhere/", "")),
        ],
    );
    let mut child = Command::new(bin())
        .arg("serve")
        .arg("--manifests")
        .arg(&dir)
        .arg("--data-dir")
        .arg(tmp.path().join("data"))
        .arg("--listen")
        .arg(format!("127.0.0.1:{}", free_port()))
        .arg("--admin-listen")
        .arg(format!("127.0.0.1:{}", free_port()))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn serve");
    let deadline = tokio::time::Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if tokio::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("serve kept running on an invalid set");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut stderr)
        .expect("read stderr");
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("t.yaml document 0: spec.subscriber.uri"),
        "{stderr}"
    );
    assert!(stderr.contains("no last good set"), "{stderr}");
    assert!(!tmp.path().join("data/manifests.last-good.json").exists());
}
