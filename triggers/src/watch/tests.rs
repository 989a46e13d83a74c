use std::path::Path;

use tokio::time::timeout;

use super::*;
use crate::load::load_documents;
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

/// A watch of `dir` starting from what it holds now.
fn watch_dir(dir: &Path) -> ManifestWatch {
    let dirs = vec![dir.to_path_buf()];
    let start = DirContents::read(&dirs);
    watch(dirs, start, POLL)
}

async fn next(w: &mut ManifestWatch) -> Reload {
    match timeout(WAIT, w.next()).await {
        Ok(Some(reload)) => reload,
        Ok(None) => panic!("the watch stopped"),
        Err(_) => panic!("no reload within {WAIT:?}"),
    }
}

fn applied(reload: Reload) -> (Arc<Snapshot>, Vec<(PathBuf, String)>) {
    match reload {
        Reload::Applied { snapshot, files } => (snapshot, files),
        Reload::Rejected { errors } => panic!("rejected: {errors:#?}"),
    }
}

fn rejected(reload: Reload) -> Vec<ManifestError> {
    match reload {
        Reload::Rejected { errors } => errors,
        Reload::Applied { snapshot, .. } => panic!("applied: {snapshot:#?}"),
    }
}

/// Nothing is reported for a few polls.
async fn quiet(w: &mut ManifestWatch) {
    if let Ok(reload) = timeout(POLL * 6, w.next()).await {
        panic!("unexpected reload: {reload:#?}");
    }
}

#[tokio::test]
async fn reports_valid_changes_with_their_texts_and_rejected_ones_with_their_errors() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    write(dir.path(), &manifests("http://one/"));
    let mut w = watch_dir(dir.path());

    // A valid change comes with the texts that load back into the same snapshot.
    write(dir.path(), &manifests("http://two/"));
    let (snapshot, files) = applied(next(&mut w).await);
    assert_eq!(
        subscriber(&snapshot),
        &Destination::Uri("http://two/".into())
    );
    assert_eq!(
        files,
        vec![(dir.path().join("set.yaml"), manifests("http://two/"))]
    );
    assert_eq!(
        load_documents(&files).unwrap_or_else(|e| panic!("{e:#?}")),
        *snapshot
    );

    // An invalid change is reported with its located errors.
    write(dir.path(), &manifests("ftp://three/"));
    let errors = rejected(next(&mut w).await);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert_eq!(errors[0].file, dir.path().join("set.yaml"));
    assert_eq!(errors[0].document, 1);
    assert_eq!(errors[0].field, "spec.subscriber.uri");
    // ... once, not at every poll.
    quiet(&mut w).await;

    // Fixing it reports the new set.
    write(dir.path(), &manifests("http://four/"));
    let (snapshot, _) = applied(next(&mut w).await);
    assert_eq!(
        subscriber(&snapshot),
        &Destination::Uri("http://four/".into())
    );
}

#[tokio::test]
async fn rewriting_the_same_bytes_reports_nothing_and_any_other_change_reloads() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    write(dir.path(), &manifests("http://one/"));
    let mut w = watch_dir(dir.path());
    write(dir.path(), &manifests("http://one/"));
    quiet(&mut w).await;
    // A change that validates to the same snapshot is still a reload (its texts are new).
    let commented = format!("# comment\n{}", manifests("http://one/"));
    write(dir.path(), &commented);
    let (snapshot, files) = applied(next(&mut w).await);
    assert_eq!(
        subscriber(&snapshot),
        &Destination::Uri("http://one/".into())
    );
    assert_eq!(files[0].1, commented);
}

#[tokio::test]
async fn a_set_rejected_at_start_is_not_reported_again_and_its_fix_is() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    write(dir.path(), &manifests("ftp://bad/"));
    let dirs = vec![dir.path().to_path_buf()];
    let start = DirContents::read(&dirs);
    assert!(start.load().is_err());
    let mut w = watch(dirs, start, POLL);
    quiet(&mut w).await;

    write(dir.path(), &manifests("http://good/"));
    let (snapshot, _) = applied(next(&mut w).await);
    assert_eq!(
        subscriber(&snapshot),
        &Destination::Uri("http://good/".into())
    );
}

#[tokio::test]
async fn a_change_made_before_the_watch_started_is_reported() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    write(dir.path(), &manifests("http://one/"));
    let dirs = vec![dir.path().to_path_buf()];
    let start = DirContents::read(&dirs);
    write(dir.path(), &manifests("http://two/"));
    let mut w = watch(dirs, start, POLL);
    let (snapshot, _) = applied(next(&mut w).await);
    assert_eq!(
        subscriber(&snapshot),
        &Destination::Uri("http://two/".into())
    );
}

#[tokio::test]
async fn stops_when_the_watch_is_dropped() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (tx, reloads) = mpsc::channel(1);
    let task = tokio::spawn(poll_loop(
        vec![dir.path().to_path_buf()],
        DirContents::default(),
        POLL,
        tx,
    ));
    tokio::time::sleep(POLL * 2).await;
    drop(reloads);
    assert!(timeout(WAIT, task).await.is_ok(), "the poll loop ended");
}
