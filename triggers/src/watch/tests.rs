use std::path::Path;

use tokio::time::timeout;

use super::*;
use crate::load::load_dirs;
use crate::snapshot::Destination;

const POLL: Duration = Duration::from_millis(50);
const WAIT: Duration = Duration::from_secs(10);

fn manifests(uri: &str) -> String {
    format!(
        "apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata: {{name: default}}\n---\n\
         apiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata: {{name: t}}\n\
         spec:\n  subscriber: {{uri: \"{uri}\"}}\n"
    )
}

fn write(dir: &Path, text: &str) {
    std::fs::write(dir.join("set.yaml"), text).unwrap_or_else(|e| panic!("{e}"));
}

fn subscriber(snapshot: &Snapshot) -> &Destination {
    &snapshot.triggers[0].subscriber
}

#[tokio::test]
async fn applies_valid_changes_and_keeps_the_last_good_set() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    write(dir.path(), &manifests("http://one/"));
    let dirs = vec![dir.path().to_path_buf()];
    let initial = Arc::new(load_dirs(&dirs).unwrap_or_else(|e| panic!("{e:#?}")));
    let mut w = watch(dirs, initial, POLL);

    // A valid change is published.
    write(dir.path(), &manifests("http://two/"));
    timeout(WAIT, w.snapshots.changed()).await.ok();
    assert_eq!(
        subscriber(&w.snapshots.borrow_and_update()),
        &Destination::Uri("http://two/".into())
    );

    // An invalid change publishes errors and keeps the last good snapshot.
    write(dir.path(), &manifests("ftp://three/"));
    timeout(WAIT, w.errors.changed()).await.ok();
    let errors = Arc::clone(&w.errors.borrow_and_update());
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert_eq!(errors[0].field, "spec.subscriber.uri");
    assert_eq!(errors[0].document, 1);
    assert!(!w.snapshots.has_changed().unwrap_or(true));
    assert_eq!(
        subscriber(&w.snapshots.borrow()),
        &Destination::Uri("http://two/".into())
    );

    // Fixing it clears the errors and publishes the new set.
    write(dir.path(), &manifests("http://four/"));
    timeout(WAIT, w.snapshots.changed()).await.ok();
    assert_eq!(
        subscriber(&w.snapshots.borrow_and_update()),
        &Destination::Uri("http://four/".into())
    );
    timeout(WAIT, async {
        while !w.errors.borrow_and_update().is_empty() {
            if w.errors.changed().await.is_err() {
                return;
            }
        }
    })
    .await
    .ok();
    assert!(w.errors.borrow().is_empty());
}

#[tokio::test]
async fn unchanged_contents_publish_nothing() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    write(dir.path(), &manifests("http://one/"));
    let dirs = vec![dir.path().to_path_buf()];
    let initial = Arc::new(load_dirs(&dirs).unwrap_or_else(|e| panic!("{e:#?}")));
    let w = watch(dirs, initial, POLL);
    // Rewriting identical bytes, and a change that validates to the same snapshot.
    write(dir.path(), &manifests("http://one/"));
    tokio::time::sleep(POLL * 4).await;
    write(
        dir.path(),
        &format!("# comment\n{}", manifests("http://one/")),
    );
    tokio::time::sleep(POLL * 4).await;
    assert!(!w.snapshots.has_changed().unwrap_or(true));
    assert!(w.errors.borrow().is_empty());
}

#[tokio::test]
async fn stops_when_snapshot_receivers_are_dropped() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (snapshot_tx, snapshots) = watch::channel(Arc::new(Snapshot::default()));
    let (errors_tx, _errors) = watch::channel(Arc::new(Vec::new()));
    let task = tokio::spawn(poll_loop(
        vec![dir.path().to_path_buf()],
        POLL,
        snapshot_tx,
        errors_tx,
    ));
    tokio::time::sleep(POLL * 2).await;
    drop(snapshots);
    assert!(timeout(WAIT, task).await.is_ok(), "the poll loop ended");
}
