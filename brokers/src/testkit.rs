//! Real servers for tests: `nats-server -js` and `tansu` (a Kafka-compatible broker) as
//! processes on free 127.0.0.1 ports with their own stores, and librdkafka's in-process mock
//! cluster.
//!
//! Used by this crate's tests and the gateway's end-to-end tests and benchmarks. A binary is
//! found through its environment variable (`TIDEGATE_NATS_SERVER`, `TIDEGATE_TANSU`), then
//! `PATH`, then `~/.cache/tidegate-tools` (where README's test command installs it).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// `binary` from `env`, `PATH` or `~/.cache/tidegate-tools/{cache_dir}`.
fn find_binary(env: &str, binary: &str, cache_dir: &str) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(env) {
        return Some(PathBuf::from(path));
    }
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(
            Path::new(&home)
                .join(".cache/tidegate-tools")
                .join(cache_dir),
        );
    }
    dirs.into_iter()
        .map(|d| d.join(binary))
        .find(|p| p.is_file())
}

/// `found`, or `None` after saying the test is skipped; under `CI=true` a missing server is a
/// failure, never a skip.
fn or_skip(found: Option<PathBuf>, test: &str, binary: &str) -> Option<PathBuf> {
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "{test}: {binary} not found (README's test command installs it)"
        );
        eprintln!("SKIPPED {test}: {binary} not found; run bash scripts/test.sh to install it");
    }
    found
}

/// The nats-server binary, if one can be found.
pub fn nats_server_binary() -> Option<PathBuf> {
    find_binary("TIDEGATE_NATS_SERVER", "nats-server", "py/bin")
}

/// The nats-server binary, or `None` after saying `test` is skipped (a failure under CI).
pub fn nats_or_skip(test: &str) -> Option<PathBuf> {
    or_skip(nats_server_binary(), test, "nats-server")
}

/// The `tansu` binary, if one can be found.
pub fn tansu_binary() -> Option<PathBuf> {
    find_binary("TIDEGATE_TANSU", "tansu", "bin")
}

/// Like [`nats_or_skip`] for tansu.
pub fn tansu_or_skip(test: &str) -> Option<PathBuf> {
    or_skip(tansu_binary(), test, "tansu")
}

/// NATS settings for Broker `namespace/name` at `url`, with the defaults `triggers/` derives
/// (stream `{namespace}-{name}`, subject prefix `tidegate.{namespace}.{name}`, file storage).
pub fn nats_config(url: &str, namespace: &str, name: &str) -> crate::config::NatsConfig {
    crate::config::NatsConfig {
        urls: vec![url.to_owned()],
        stream: format!("{namespace}-{name}"),
        subject: format!("tidegate.{namespace}.{name}"),
        storage: crate::config::NatsStorage::File,
        replicas: 1,
        max_age: None,
        max_bytes: None,
        duplicate_window: None,
        auth: None,
    }
}

/// A free TCP port on 127.0.0.1 (bound, then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port: {e}"))
}

/// A server's arguments after the binary, given its port and store directory.
type ServerArgs = Box<dyn Fn(u16, &Path) -> Vec<String> + Send + Sync>;

/// A server process on 127.0.0.1 with its own store directory: killed (SIGKILL) when dropped,
/// restartable on the same port with the same store.
struct ServerProcess {
    /// For messages.
    name: &'static str,
    binary: PathBuf,
    port: u16,
    store: tempfile::TempDir,
    args: ServerArgs,
    child: Option<Child>,
}

impl ServerProcess {
    fn start(
        name: &'static str,
        binary: &Path,
        port: u16,
        args: impl Fn(u16, &Path) -> Vec<String> + Send + Sync + 'static,
    ) -> ServerProcess {
        let mut server = ServerProcess {
            name,
            binary: binary.to_owned(),
            port,
            store: tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}")),
            args: Box::new(args),
            child: None,
        };
        server.run();
        server
    }

    /// Spawns the process (working directory: the store) and blocks until the port accepts,
    /// at most 20 s; a blocking wait, for test set-up only.
    #[allow(clippy::disallowed_methods)]
    fn run(&mut self) {
        let child = Command::new(&self.binary)
            .args((self.args)(self.port, self.store.path()))
            .current_dir(self.store.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", self.binary.display()));
        self.child = Some(child);
        for _ in 0..1000 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("{} did not accept connections within 20 s", self.name);
    }

    /// SIGKILL: nothing flushed beyond what the server had written.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn restart(&mut self) {
        self.kill();
        self.run();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A running `nats-server -js` with a file store in a fresh directory; killed when dropped.
pub struct NatsServer {
    process: ServerProcess,
    pub port: u16,
}

impl NatsServer {
    /// Starts a server and waits until it accepts connections.
    pub fn start(binary: &Path) -> NatsServer {
        NatsServer::start_on(binary, free_port())
    }

    /// Like [`NatsServer::start`] on a given port.
    pub fn start_on(binary: &Path, port: u16) -> NatsServer {
        NatsServer::start_with(binary, port, &[])
    }

    /// Like [`NatsServer::start_on`] with more server arguments (e.g. `--user u --pass p`).
    pub fn start_with(binary: &Path, port: u16, args: &[&str]) -> NatsServer {
        let extra: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        let process = ServerProcess::start("nats-server", binary, port, move |port, store| {
            let mut all: Vec<String> = ["-js", "-a", "127.0.0.1", "-p"]
                .iter()
                .map(|a| (*a).to_owned())
                .collect();
            all.push(port.to_string());
            all.push("-sd".to_owned());
            all.push(store.display().to_string());
            all.extend(extra.iter().cloned());
            all
        });
        NatsServer { process, port }
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kills the server (SIGKILL: nothing flushed beyond what it had synced).
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Starts it again on the same port with the same store.
    pub fn restart(&mut self) {
        self.process.restart();
    }
}

/// librdkafka's mock cluster: a Kafka-protocol server on 127.0.0.1 inside the test process
/// (a gateway process can connect to it). It does not implement CreateTopics, so topics are
/// created up front.
pub struct KafkaMock {
    cluster: rdkafka::mocking::MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
}

impl KafkaMock {
    /// One broker with `topics` (name, partitions).
    pub fn start(topics: &[(&str, i32)]) -> KafkaMock {
        let cluster = rdkafka::mocking::MockCluster::new(1)
            .unwrap_or_else(|e| panic!("starting the Kafka mock cluster: {e}"));
        for (topic, partitions) in topics {
            cluster
                .create_topic(topic, *partitions, 1)
                .unwrap_or_else(|e| panic!("creating topic {topic}: {e}"));
        }
        KafkaMock { cluster }
    }

    pub fn bootstrap_servers(&self) -> String {
        self.cluster.bootstrap_servers()
    }

    /// Takes the (only) broker down: connections close and new ones are refused.
    pub fn broker_down(&self) {
        self.cluster
            .broker_down(1)
            .unwrap_or_else(|e| panic!("broker down: {e}"));
    }

    pub fn broker_up(&self) {
        self.cluster
            .broker_up(1)
            .unwrap_or_else(|e| panic!("broker up: {e}"));
    }
}

/// Writes one record straight to a topic, as a third-party producer would.
pub async fn kafka_produce(
    bootstrap: &str,
    topic: &str,
    key: Option<&str>,
    headers: &[(&str, &str)],
    payload: &[u8],
) {
    use rdkafka::message::{Header, OwnedHeaders};
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap_or_else(|e| panic!("producer: {e}"));
    let mut owned = OwnedHeaders::new();
    for (k, v) in headers {
        owned = owned.insert(Header {
            key: k,
            value: Some(*v),
        });
    }
    let mut record = FutureRecord::to(topic).payload(payload).headers(owned);
    if let Some(key) = key {
        record = record.key(key);
    }
    producer
        .send(record, Duration::from_secs(10))
        .await
        .unwrap_or_else(|(e, _)| panic!("producing to {topic}: {e}"));
}

/// A running `tansu broker` with file-backed (SQLite) storage on a free 127.0.0.1 port; killed
/// when dropped. A restart keeps the data.
pub struct TansuServer {
    process: ServerProcess,
    pub port: u16,
}

impl TansuServer {
    pub fn start(binary: &Path) -> TansuServer {
        let port = free_port();
        let process = ServerProcess::start("tansu", binary, port, |port, _store| {
            let url = format!("tcp://127.0.0.1:{port}");
            // The SQLite path is resolved against the working directory: the store.
            [
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
                "--storage-engine",
                "sqlite://tansu.db",
            ]
            .iter()
            .map(|a| (*a).to_owned())
            .collect()
        });
        TansuServer { process, port }
    }

    pub fn bootstrap_servers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// SIGKILL: nothing flushed beyond what it had written.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Starts it again on the same port with the same storage.
    pub fn restart(&mut self) {
        self.process.restart();
    }
}
