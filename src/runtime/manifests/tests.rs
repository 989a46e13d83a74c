use std::path::Path;

use super::*;

const BROKER: &str =
    "apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata: {name: default}\n";
const BROKEN: &str =
    "apiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata: {name: x}\nspec: {bogus: 1}\n";

struct Dirs {
    _tmp: tempfile::TempDir,
    manifests: PathBuf,
    data: PathBuf,
}

fn dirs() -> Dirs {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let manifests = tmp.path().join("manifests");
    std::fs::create_dir_all(&manifests).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(manifests.join("b.yaml"), BROKER).unwrap_or_else(|e| panic!("{e}"));
    let data = tmp.path().join("data");
    Dirs {
        _tmp: tmp,
        manifests,
        data,
    }
}

fn sets(dirs: &Dirs, metrics: &Metrics) -> (ManifestSets, Arc<ManifestStatus>) {
    let sources = vec![dirs.manifests.clone()];
    let status = Arc::new(ManifestStatus::new(&sources, metrics));
    let sets = ManifestSets::new(sources, dirs.data.clone(), Arc::clone(&status));
    (sets, status)
}

fn contents(dir: &Path) -> DirContents {
    DirContents::read(&[dir.to_path_buf()])
}

fn metric(metrics: &Metrics, line: &str) -> bool {
    metrics.encode().lines().any(|l| l == line)
}

#[tokio::test]
async fn a_valid_start_is_served_numbered_and_persisted() {
    let d = dirs();
    let metrics = Metrics::new();
    let (mut sets, status) = sets(&d, &metrics);
    let snapshot = sets
        .start(&contents(&d.manifests))
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(snapshot.brokers.len(), 1);
    sets.persist().await;
    let report = status.report();
    assert_eq!(report.sources, vec![d.manifests.display().to_string()]);
    assert_eq!(report.generation, 1);
    assert!(report.applied_at.is_some());
    assert!(!report.from_last_good);
    assert_eq!(report.last_reload.as_deref(), Some("applied"));
    assert!(report.errors.is_empty());
    assert_eq!(report.last_good_error, None);
    assert!(metric(
        &metrics,
        "tidegate_manifest_reloads_total{outcome=\"applied\"} 1"
    ));
    assert!(metric(
        &metrics,
        "tidegate_manifest_reloads_total{outcome=\"rejected\"} 0"
    ));
    assert!(metric(&metrics, "tidegate_manifest_last_reload_success 1"));
    assert!(last_good::path(&d.data).is_file());

    // The same set after a restart keeps its number; a different one gets the next.
    let (mut again, status) = self::sets(&d, &Metrics::new());
    again
        .start(&contents(&d.manifests))
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(status.report().generation, 1);
    std::fs::write(d.manifests.join("c.yaml"), "# nothing\n").unwrap_or_else(|e| panic!("{e}"));
    let (mut changed, status) = self::sets(&d, &Metrics::new());
    changed
        .start(&contents(&d.manifests))
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(status.report().generation, 2);
}

#[tokio::test]
async fn reloads_are_numbered_persisted_and_counted() {
    let d = dirs();
    let metrics = Metrics::new();
    let (mut sets, status) = sets(&d, &metrics);
    sets.start(&contents(&d.manifests))
        .unwrap_or_else(|e| panic!("{e:#}"));

    std::fs::write(d.manifests.join("x.yaml"), BROKEN).unwrap_or_else(|e| panic!("{e}"));
    let errors = contents(&d.manifests)
        .load()
        .err()
        .unwrap_or_else(|| panic!("rejected"));
    sets.rejected(&errors);
    let report = status.report();
    assert_eq!(report.generation, 1);
    assert_eq!(report.last_reload.as_deref(), Some("rejected"));
    assert_eq!(report.errors.len(), errors.len());
    assert!(report.errors[0].file.ends_with("x.yaml"), "{report:?}");
    assert!(metric(
        &metrics,
        "tidegate_manifest_reloads_total{outcome=\"rejected\"} 1"
    ));
    assert!(metric(&metrics, "tidegate_manifest_last_reload_success 0"));

    let fixed = vec![(d.manifests.join("b.yaml"), format!("# fixed\n{BROKER}"))];
    sets.applied(fixed.clone()).await;
    let report = status.report();
    assert_eq!(report.generation, 2);
    assert_eq!(report.last_reload.as_deref(), Some("applied"));
    assert!(report.errors.is_empty());
    assert!(metric(
        &metrics,
        "tidegate_manifest_reloads_total{outcome=\"applied\"} 2"
    ));
    assert!(metric(&metrics, "tidegate_manifest_last_reload_success 1"));
    let persisted = last_good::read(&d.data)
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("persisted"));
    assert!(persisted.is_set(std::slice::from_ref(&d.manifests), &fixed));
    assert_eq!(persisted.generation, 2);

    // A rejected edit reverted to the set served: an applied reload of the same generation.
    sets.rejected(&errors);
    sets.applied(fixed).await;
    let report = status.report();
    assert_eq!(report.generation, 2);
    assert!(report.errors.is_empty());
    assert!(metric(
        &metrics,
        "tidegate_manifest_reloads_total{outcome=\"applied\"} 3"
    ));
}

#[tokio::test]
async fn an_invalid_start_serves_the_persisted_set_loudly() {
    let d = dirs();
    let (mut first, _) = sets(&d, &Metrics::new());
    first
        .start(&contents(&d.manifests))
        .unwrap_or_else(|e| panic!("{e:#}"));
    first.persist().await;

    std::fs::write(d.manifests.join("x.yaml"), BROKEN).unwrap_or_else(|e| panic!("{e}"));
    let metrics = Metrics::new();
    let (mut sets, status) = sets(&d, &metrics);
    let before = std::fs::read(last_good::path(&d.data)).unwrap_or_else(|e| panic!("{e}"));
    let snapshot = sets
        .start(&contents(&d.manifests))
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(snapshot.brokers.len(), 1);
    // Served as it was read: not written again.
    sets.persist().await;
    assert_eq!(
        std::fs::read(last_good::path(&d.data)).unwrap_or_else(|e| panic!("{e}")),
        before
    );
    let report = status.report();
    assert!(report.from_last_good);
    assert_eq!(report.generation, 1);
    assert_eq!(report.last_reload.as_deref(), Some("rejected"));
    assert!(report.errors[0].file.ends_with("x.yaml"), "{report:?}");
    assert!(metric(&metrics, "tidegate_manifest_last_reload_success 0"));
    assert!(metric(
        &metrics,
        "tidegate_manifest_reloads_total{outcome=\"rejected\"} 1"
    ));

    // The directories load again: the persisted flag goes, the number moves on.
    sets.applied(contents(&d.manifests).files).await;
    let report = status.report();
    assert!(!report.from_last_good);
    assert_eq!(report.generation, 2);
    assert!(report.errors.is_empty());
}

#[test]
fn an_invalid_start_without_a_usable_copy_fails_with_the_located_errors() {
    let d = dirs();
    std::fs::write(d.manifests.join("x.yaml"), BROKEN).unwrap_or_else(|e| panic!("{e}"));
    let (mut sets, _) = sets(&d, &Metrics::new());
    let error = sets
        .start(&contents(&d.manifests))
        .err()
        .unwrap_or_else(|| panic!("no set to serve"))
        .to_string();
    assert!(error.contains("x.yaml document 0"), "{error}");
    assert!(error.contains("no last good set"), "{error}");

    // A copy persisted from other directories is not served.
    let other = LastGood::new(
        4,
        now(),
        &[PathBuf::from("elsewhere")],
        &[(PathBuf::from("elsewhere/b.yaml"), BROKER.to_owned())],
    );
    last_good::write(&d.data, &other).unwrap_or_else(|e| panic!("{e}"));
    let error = sets
        .start(&contents(&d.manifests))
        .err()
        .unwrap_or_else(|| panic!("no set to serve"))
        .to_string();
    assert!(error.contains("read from elsewhere"), "{error}");
}
