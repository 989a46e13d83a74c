//! Manifests: `tidegate check`, live reload, the last good set kept on errors.

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
