//! What local pods write: each line goes to the gateway's stderr as the pod wrote it, prefixed
//! `namespace/pod` (or as one JSON object per line with `--log-format json`), and into a bounded
//! ring per pod that `tidegate logs` reads through the admin API
//! (`/api/v1/revisions/{namespace}/{revision}/logs`).
//!
//! Bounds: [`LINES_PER_POD`] lines and [`BYTES_PER_POD`] bytes per pod (the oldest go first),
//! the rings of at most [`GONE_PODS_KEPT`] pods per revision after they ended (so the last words
//! of a crashed pod can be read), lines cut at `output::MAX_LINE` bytes by the reader.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use serde::{Deserialize, Serialize};

/// Lines kept per pod.
pub const LINES_PER_POD: usize = 1000;
/// Bytes of text kept per pod.
pub const BYTES_PER_POD: usize = 256 * 1024;
/// Pods of a revision whose lines are kept after they ended.
pub const GONE_PODS_KEPT: usize = 8;
/// Lines one read returns at most.
pub const MAX_PAGE: usize = 5000;

/// How the gateway writes its log (`--log-format`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Lines for people; colours only when stderr is a terminal.
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// Which of a container's streams a line came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    Stdout,
    Stderr,
}

/// One line a pod wrote.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    /// Increasing over every line of the gateway: `after` of the next read.
    pub seq: u64,
    /// When the gateway read it (RFC 3339, UTC).
    pub time: String,
    /// The pod's name, `{revision}-{N}` (as `/api/v1/revisions` lists it).
    pub pod: String,
    pub container: String,
    pub stream: Stream,
    pub text: String,
}

/// An answer of [`PodLogs::read`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogPage {
    /// `namespace/revision`.
    pub revision: String,
    /// The pods with lines kept, running or ended.
    pub pods: Vec<String>,
    /// In the order written, oldest first.
    pub lines: Vec<LogLine>,
    /// Pass as `after` to read only what comes later.
    pub next: u64,
}

/// Every local pod's recent lines, by revision.
pub struct PodLogs {
    seq: AtomicU64,
    /// `namespace/revision` → its pods' rings. One lock per revision: pods of different
    /// revisions never wait for each other.
    revisions: Mutex<HashMap<String, Arc<Mutex<RevisionLogs>>>>,
    /// Whether lines also go to the gateway's stderr, and how.
    echo: Option<LogFormat>,
}

#[derive(Default)]
struct RevisionLogs {
    pods: BTreeMap<String, PodRing>,
    /// Pods that ended, oldest first.
    gone: VecDeque<String>,
}

#[derive(Default)]
struct PodRing {
    lines: VecDeque<LogLine>,
    bytes: usize,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl PodLogs {
    /// Rings only, nothing on stderr (tests).
    pub fn quiet() -> Arc<PodLogs> {
        PodLogs::new(None)
    }

    /// Rings, and every line on stderr in `format`.
    pub fn echoing(format: LogFormat) -> Arc<PodLogs> {
        PodLogs::new(Some(format))
    }

    fn new(echo: Option<LogFormat>) -> Arc<PodLogs> {
        Arc::new(PodLogs {
            seq: AtomicU64::new(0),
            revisions: Mutex::default(),
            echo,
        })
    }

    fn revision(&self, revision: &str) -> Arc<Mutex<RevisionLogs>> {
        let mut revisions = lock(&self.revisions);
        if let Some(logs) = revisions.get(revision) {
            return Arc::clone(logs);
        }
        let logs = Arc::new(Mutex::new(RevisionLogs::default()));
        revisions.insert(revision.to_owned(), Arc::clone(&logs));
        logs
    }

    /// Records one line of `pod`'s `container` (and echoes it).
    pub fn record(&self, revision: &str, pod: &str, container: &str, stream: Stream, text: &str) {
        let line = LogLine {
            seq: self.seq.fetch_add(1, Ordering::Relaxed) + 1,
            time: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            pod: pod.to_owned(),
            container: container.to_owned(),
            stream,
            text: text.to_owned(),
        };
        if let Some(format) = self.echo {
            echo(format, revision, &line);
        }
        let logs = self.revision(revision);
        let mut logs = lock(&logs);
        let ring = logs.pods.entry(pod.to_owned()).or_default();
        ring.bytes += line.text.len();
        ring.lines.push_back(line);
        while ring.lines.len() > LINES_PER_POD || ring.bytes > BYTES_PER_POD {
            match ring.lines.pop_front() {
                Some(old) => ring.bytes -= old.text.len(),
                None => break,
            }
        }
    }

    /// `pod` ended: its lines stay readable until [`GONE_PODS_KEPT`] later pods ended too.
    pub fn pod_gone(&self, revision: &str, pod: &str) {
        let logs = self.revision(revision);
        let mut logs = lock(&logs);
        if !logs.pods.contains_key(pod) {
            return;
        }
        logs.gone.push_back(pod.to_owned());
        while logs.gone.len() > GONE_PODS_KEPT {
            if let Some(old) = logs.gone.pop_front() {
                logs.pods.remove(&old);
            }
        }
    }

    /// The lines of `revision` after `after`, of one pod or all, the latest `limit` of them;
    /// `None` for a revision that never had a local pod write a line.
    pub fn read(
        &self,
        revision: &str,
        pod: Option<&str>,
        after: u64,
        limit: usize,
    ) -> Option<LogPage> {
        let logs = Arc::clone(lock(&self.revisions).get(revision)?);
        let logs = lock(&logs);
        let mut lines: Vec<LogLine> = logs
            .pods
            .iter()
            .filter(|(id, _)| pod.is_none_or(|p| p == id.as_str()))
            .flat_map(|(_, ring)| ring.lines.iter().filter(|l| l.seq > after).cloned())
            .collect();
        lines.sort_unstable_by_key(|l| l.seq);
        let limit = limit.clamp(1, MAX_PAGE);
        if lines.len() > limit {
            lines.drain(..lines.len() - limit);
        }
        let next = lines.last().map_or(after, |l| l.seq).max(after);
        Some(LogPage {
            revision: revision.to_owned(),
            pods: logs.pods.keys().cloned().collect(),
            lines,
            next,
        })
    }
}

/// Writes `line` to stderr: text as `namespace/pod[/container] | text` (as `kubectl logs
/// --prefix` names them), the pod's bytes untouched (its own colours included); JSON as one
/// object per line.
fn echo(format: LogFormat, revision: &str, line: &LogLine) {
    let mut out = Vec::with_capacity(line.text.len() + revision.len() + 48);
    match format {
        LogFormat::Text => {
            let namespace = revision.split('/').next().unwrap_or(revision);
            let _ = write!(out, "{namespace}/{}", line.pod);
            if line.container != SERVING_CONTAINER {
                let _ = write!(out, "/{}", line.container);
            }
            out.extend_from_slice(b" | ");
            out.extend_from_slice(line.text.as_bytes());
            out.push(b'\n');
        }
        LogFormat::Json => {
            let object = serde_json::json!({
                "timestamp": line.time,
                "level": "INFO",
                "target": "pod",
                "revision": revision,
                "pod": line.pod,
                "container": line.container,
                "stream": line.stream,
                "message": line.text,
            });
            if serde_json::to_writer(&mut out, &object).is_err() {
                return;
            }
            out.push(b'\n');
        }
    }
    // One write per line, so lines of pods and of the gateway do not interleave mid-line.
    let _ = std::io::stderr().lock().write_all(&out);
}

/// The name of a pod's serving container when its spec gives none (Knative's).
pub const SERVING_CONTAINER: &str = "user-container";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rings_are_bounded_and_read_in_order_after_a_sequence_number() {
        let logs = PodLogs::quiet();
        for i in 0..(LINES_PER_POD + 10) {
            logs.record(
                "ns/r-1",
                "pod-1",
                SERVING_CONTAINER,
                Stream::Stdout,
                &format!("a{i}"),
            );
        }
        logs.record("ns/r-1", "pod-2", "side", Stream::Stderr, "b");
        let page = logs.read("ns/r-1", None, 0, MAX_PAGE).expect("page");
        assert_eq!(page.pods, ["pod-1", "pod-2"]);
        assert_eq!(page.lines.len(), LINES_PER_POD + 1);
        assert_eq!(page.lines[0].text, "a10", "the oldest lines went first");
        assert_eq!(page.lines.last().map(|l| l.text.as_str()), Some("b"));
        let later = logs.read("ns/r-1", None, page.next, 10).expect("page");
        assert!(later.lines.is_empty());
        assert_eq!(later.next, page.next);
        let one = logs.read("ns/r-1", Some("pod-2"), 0, 10).expect("page");
        assert_eq!(one.lines.len(), 1);
        assert_eq!(one.lines[0].stream, Stream::Stderr);
        assert!(logs.read("ns/other", None, 0, 10).is_none());
    }

    #[test]
    fn bytes_are_bounded_too() {
        let logs = PodLogs::quiet();
        let big = "x".repeat(8 * 1024);
        for _ in 0..100 {
            logs.record("ns/r-1", "pod-1", SERVING_CONTAINER, Stream::Stdout, &big);
        }
        let page = logs.read("ns/r-1", None, 0, MAX_PAGE).expect("page");
        assert_eq!(page.lines.len(), BYTES_PER_POD / big.len());
    }

    #[test]
    fn ended_pods_are_kept_up_to_a_bound() {
        let logs = PodLogs::quiet();
        for pod in 0..(GONE_PODS_KEPT + 3) {
            let id = format!("pod-{pod}");
            logs.record("ns/r-1", &id, SERVING_CONTAINER, Stream::Stdout, "bye");
            logs.pod_gone("ns/r-1", &id);
        }
        let page = logs.read("ns/r-1", None, 0, MAX_PAGE).expect("page");
        assert_eq!(page.pods.len(), GONE_PODS_KEPT);
        assert!(!page.pods.contains(&"pod-0".to_owned()));
    }
}
