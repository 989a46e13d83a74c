//! Nothing answered 202 is lost: `kill -9` mid-stream, restart, count arrivals.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

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

    let next = Arc::new(AtomicUsize::new(0));
    let accepted = Arc::new(std::sync::Mutex::new(HashSet::new()));
    let mut publishers = Vec::new();
    for _ in 0..PUBLISHERS {
        let next = Arc::clone(&next);
        let accepted = Arc::clone(&accepted);
        let url = url.clone();
        publishers.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            loop {
                let n = next.fetch_add(1, Ordering::SeqCst);
                if n >= EVENTS {
                    break;
                }
                let id = format!("n-{n}");
                let result = client
                    .post(&url)
                    .header("ce-specversion", "1.0")
                    .header("ce-id", &id)
                    .header("ce-source", "prober")
                    .header("ce-type", "dev.tidegate.prober")
                    .timeout(Duration::from_secs(5))
                    .send()
                    .await;
                match result {
                    Ok(r) if r.status() == 202 => {
                        accepted.lock().expect("lock").insert(id);
                    }
                    // The gateway is down or restarting; this number is simply not accepted.
                    _ => tokio::time::sleep(Duration::from_millis(5)).await,
                }
            }
        }));
    }
    // Kill once a good share is in, while publishing and delivery are both in full swing.
    let deadline = tokio::time::Instant::now() + WAIT;
    while accepted.lock().expect("lock").len() < EVENTS / 3 {
        assert!(tokio::time::Instant::now() < deadline, "publishing stalled");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    gw.kill9_and_restart().await;
    for p in publishers {
        p.await.expect("publisher");
    }
    let accepted = accepted.lock().expect("lock").clone();
    assert!(
        accepted.len() > EVENTS / 2,
        "only {} accepted",
        accepted.len()
    );

    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let arrived: HashSet<String> = sample
            .events()
            .await
            .iter()
            .filter_map(|e| e["id"].as_str().map(str::to_owned))
            .collect();
        let missing: Vec<_> = accepted.difference(&arrived).take(5).collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} accepted events never arrived, e.g. {missing:?}",
            accepted.difference(&arrived).count()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
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
