//! Nothing answered 202 is lost: `kill -9` mid-stream, restart, count arrivals.

use std::collections::HashSet;

use crate::harness::*;

const EVENTS: usize = 1500;
const PUBLISHERS: usize = 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_loses_no_accepted_event() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let sample = SampleService::start(&[]).await;
    let retry =
        "  delivery:\n    retry: 20\n    backoffPolicy: linear\n    backoffDelay: PT0.05S\n";
    let dir = manifests(
        tmp.path(),
        &[
            ("b.yaml", BROKER),
            ("t.yaml", &trigger("prober", &sample.url, retry)),
        ],
    );
    let mut gw = Gateway::start(&dir, &tmp.path().join("data"), &[]).await;
    let url = gw.broker_url("default", "default");

    let publishers = Publishers::start(&url, PUBLISHERS, EVENTS);
    // Kill once a good share is in, while publishing and delivery are both in full swing.
    publishers.wait_accepted(EVENTS / 3).await;
    gw.kill9_and_restart().await;
    let accepted = publishers.finish().await;
    assert!(
        accepted.len() > EVENTS / 2,
        "only {} accepted",
        accepted.len()
    );
    wait_arrived(&sample, &accepted).await;
}

#[tokio::test]
async fn sigterm_drains_and_exits_zero() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let sub = Subscriber::accepting().await;
    let dir = manifests(
        tmp.path(),
        &[("b.yaml", BROKER), ("t.yaml", &trigger("t", &sub.url, ""))],
    );
    let mut gw = Gateway::start(&dir, &tmp.path().join("data"), &[]).await;
    let client = reqwest::Client::new();
    for i in 0..20 {
        let r = publish(
            &client,
            &gw.broker_url("default", "default"),
            &format!("s-{i}"),
            "t",
            &[],
        )
        .await;
        assert_eq!(r.status(), 202);
    }
    let status = gw.terminate().await;
    assert!(status.success(), "exit status {status}");
    // Restart on the same data: whatever was not delivered before is delivered now.
    let gw = Gateway::start(&dir, &tmp.path().join("data"), &[]).await;
    let got = sub.wait_for(20).await;
    assert_eq!(ids(&got).len(), 20);
    drop(gw);
}

/// Mounts an 8 MiB tmpfs at `dir`; `None` (with the reason printed) where mounting is not
/// permitted.
fn small_tmpfs(dir: &std::path::Path) -> Option<TmpfsMount> {
    std::fs::create_dir_all(dir).expect("mount point");
    let status = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=8m", "tmpfs"])
        .arg(dir)
        .stderr(std::process::Stdio::piped())
        .output();
    match status {
        Ok(out) if out.status.success() => Some(TmpfsMount(dir.to_owned())),
        Ok(out) => {
            eprintln!(
                "SKIPPED: cannot mount a tmpfs here ({}); the full-disk test needs one",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            None
        }
        Err(e) => {
            eprintln!("SKIPPED: cannot run mount ({e}); the full-disk test needs a tmpfs");
            None
        }
    }
}

struct TmpfsMount(std::path::PathBuf);

impl Drop for TmpfsMount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// Fills the file system holding `path` with a ballast file until the disk refuses more.
fn fill(path: &std::path::Path) {
    use std::io::Write as _;
    let mut file = std::fs::File::create(path).expect("ballast");
    let chunk = vec![0xA5u8; 64 * 1024];
    while file.write_all(&chunk).is_ok() {}
    let chunk = vec![0xA5u8; 512];
    while file.write_all(&chunk).is_ok() {}
    let _ = file.sync_all();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_then_recovers_without_a_restart_or_a_loss_and_survives_a_crash() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let Some(mount) = small_tmpfs(&tmp.path().join("disk")) else {
        return;
    };
    let sample = Subscriber::accepting().await;
    let dir = manifests(
        tmp.path(),
        &[
            ("b.yaml", BROKER),
            ("t.yaml", &trigger("fill", &sample.url, "")),
        ],
    );
    let data = mount.0.join("data");
    let mut gw = Gateway::start(&dir, &data, &[]).await;
    let client = reqwest::Client::new();
    let url = gw.broker_url("default", "default");
    let payload = "x".repeat(1500);
    let send = |id: String| {
        let (client, url, payload) = (client.clone(), url.clone(), payload.clone());
        async move {
            client
                .post(&url)
                .header("ce-specversion", "1.0")
                .header("ce-id", &id)
                .header("ce-source", "tests/e2e/full-disk")
                .header("ce-type", "fill")
                .header("content-type", "text/plain")
                .body(payload)
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0)
        }
    };
    let mut accepted = HashSet::new();
    for i in 0..200 {
        if send(format!("before-{i}")).await == 202 {
            accepted.insert(format!("before-{i}"));
        }
    }
    assert_eq!(accepted.len(), 200, "publishing before the disk fills");

    // The disk fills (another process's file).
    let delivered_at_fill = sample.received().len();
    let ballast = mount.0.join("ballast");
    fill(&ballast);
    let mut refused = 0;
    for i in 0..50 {
        match send(format!("full-{i}")).await {
            202 => {
                accepted.insert(format!("full-{i}"));
            }
            503 => refused += 1,
            other => panic!("full disk answered {other}"),
        }
    }
    assert!(refused > 0, "a full disk refused nothing");
    let brokers: Vec<serde_json::Value> = gw.brokers().await;
    assert_eq!(brokers[0]["ready"], false, "{brokers:?}");
    assert!(
        brokers[0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("full")),
        "{brokers:?}"
    );
    let ready = client
        .get(format!("{}/readyz", gw.admin))
        .send()
        .await
        .expect("readyz");
    assert_eq!(ready.status(), 503);
    let metrics = gw.metrics().await;
    assert!(
        metrics.contains("tidegate_storage_available 0"),
        "{metrics}"
    );
    // What was stored before keeps being delivered while the disk is full.
    let received = sample.wait_for(200).await;
    assert!(received.len() >= 200);

    // A crash while the disk is full: the gateway starts, says why it is not ready, and
    // refuses publishing with 503 (cursor progress made while full may be redelivered).
    let delivered_before_crash = sample.received().len();
    gw.kill9_and_restart_until("/healthz").await;
    eventually("not ready after a restart on a full disk", || async {
        let r = client.get(format!("{}/readyz", gw.admin)).send().await;
        match r {
            Ok(r) if r.status() == 503 => r.text().await.is_ok_and(|t| t.contains("full")),
            _ => false,
        }
    })
    .await;
    assert_eq!(send("full-after-restart".to_owned()).await, 503);

    // Space comes back: publishing resumes without a restart.
    std::fs::remove_file(&ballast).expect("free the disk");
    eventually("publishing resumes after space returns", || async {
        send("probe-after".to_owned()).await == 202
    })
    .await;
    accepted.insert("probe-after".to_owned());
    for i in 0..100 {
        let id = format!("after-{i}");
        assert_eq!(send(id.clone()).await, 202, "publishing after recovery");
        accepted.insert(id);
    }
    let ready = client
        .get(format!("{}/readyz", gw.admin))
        .send()
        .await
        .expect("readyz");
    assert_eq!(ready.status(), 200, "ready again after recovery");

    // Nothing answered 202 is lost; nothing settled is delivered twice.
    eventually("every accepted event delivered", || {
        let got: HashSet<String> = sample
            .received()
            .iter()
            .filter_map(|r| r.header("ce-id").map(str::to_owned))
            .collect();
        let done = accepted.is_subset(&got);
        async move { done }
    })
    .await;
    let received = sample.received();
    let ids = ids(&received);
    let duplicates: usize = ids.values().map(|n| n.saturating_sub(1)).sum();
    // Only what was delivered while no cursor could be saved (after the fill, before the
    // crash) or was in flight when the disk filled (at most the trigger's in-flight cap, 100)
    // may come twice.
    let unsaved = delivered_before_crash - delivered_at_fill;
    assert!(
        duplicates <= unsaved + 100,
        "redelivered after recovery: {duplicates} ({unsaved} delivered while full)"
    );
    drop(gw);
}
