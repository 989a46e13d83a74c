//! Real servers for tests: a `nats-server -js` on a free 127.0.0.1 port with its own store.
//!
//! Used by this crate's tests and the gateway's end-to-end tests. The binary is found through
//! `TIDEGATE_NATS_SERVER`, then `PATH`, then `~/.cache/tidegate-tools/py/bin` (where README's
//! test command installs it).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The nats-server binary, if one can be found.
pub fn nats_server_binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("TIDEGATE_NATS_SERVER") {
        return Some(PathBuf::from(path));
    }
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(Path::new(&home).join(".cache/tidegate-tools/py/bin"));
    }
    dirs.into_iter()
        .map(|d| d.join("nats-server"))
        .find(|p| p.is_file())
}

/// `None` (after saying so) when no server can run here; under `CI=true` a missing server is a
/// failure, never a skip.
pub fn nats_or_skip(test: &str) -> Option<PathBuf> {
    let found = nats_server_binary();
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "{test}: nats-server not found (README's test command installs it)"
        );
        eprintln!("SKIPPED {test}: nats-server not found; run bash scripts/test.sh to install it");
    }
    found
}

/// A free TCP port on 127.0.0.1 (bound, then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port: {e}"))
}

/// A running `nats-server -js`; killed when dropped.
pub struct NatsServer {
    binary: PathBuf,
    args: Vec<String>,
    pub port: u16,
    store: tempfile::TempDir,
    child: Option<Child>,
}

impl NatsServer {
    /// Starts a server with JetStream (file store in a fresh directory) and waits until it
    /// accepts connections.
    pub fn start(binary: &Path) -> NatsServer {
        NatsServer::start_on(binary, free_port())
    }

    /// Like [`NatsServer::start`] on a given port.
    pub fn start_on(binary: &Path, port: u16) -> NatsServer {
        NatsServer::start_with(binary, port, &[])
    }

    /// Like [`NatsServer::start_on`] with more server arguments (e.g. `--user u --pass p`).
    pub fn start_with(binary: &Path, port: u16, args: &[&str]) -> NatsServer {
        let mut server = NatsServer {
            binary: binary.to_owned(),
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            port,
            store: tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}")),
            child: None,
        };
        server.run();
        server
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Blocks until the port accepts (at most 10 s); a blocking wait, for test set-up only.
    #[allow(clippy::disallowed_methods)]
    fn run(&mut self) {
        let child = Command::new(&self.binary)
            .args([
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-sd",
            ])
            .arg(self.store.path())
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", self.binary.display()));
        self.child = Some(child);
        for _ in 0..500 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("nats-server did not accept connections within 10 s");
    }

    /// Kills the server (SIGKILL: nothing flushed beyond what it had synced).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port with the same store.
    pub fn restart(&mut self) {
        self.kill();
        self.run();
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
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

/// The `tansu` binary (a Kafka-compatible broker), if one can be found: `TIDEGATE_TANSU`, then
/// `PATH`, then `~/.cache/tidegate-tools/bin` (where README's test command installs it).
pub fn tansu_binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("TIDEGATE_TANSU") {
        return Some(PathBuf::from(path));
    }
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(Path::new(&home).join(".cache/tidegate-tools/bin"));
    }
    dirs.into_iter()
        .map(|d| d.join("tansu"))
        .find(|p| p.is_file())
}

/// Like [`nats_or_skip`] for tansu.
pub fn tansu_or_skip(test: &str) -> Option<PathBuf> {
    let found = tansu_binary();
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "{test}: tansu not found (README's test command installs it)"
        );
        eprintln!("SKIPPED {test}: tansu not found; run bash scripts/test.sh to install it");
    }
    found
}

/// A running `tansu broker` with file-backed (SQLite) storage on a free 127.0.0.1 port; killed
/// when dropped. A restart keeps the data.
pub struct TansuServer {
    binary: PathBuf,
    pub port: u16,
    store: tempfile::TempDir,
    child: Option<Child>,
}

impl TansuServer {
    pub fn start(binary: &Path) -> TansuServer {
        let mut server = TansuServer {
            binary: binary.to_owned(),
            port: free_port(),
            store: tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}")),
            child: None,
        };
        server.run();
        server
    }

    pub fn bootstrap_servers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    #[allow(clippy::disallowed_methods)] // a blocking wait, for test set-up only
    fn run(&mut self) {
        let url = format!("tcp://127.0.0.1:{}", self.port);
        // tansu resolves the SQLite path against its working directory.
        let storage = "sqlite://tansu.db";
        let child = Command::new(&self.binary)
            .current_dir(self.store.path())
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
                "--storage-engine",
                storage,
            ])
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
        panic!("tansu did not accept connections within 20 s");
    }

    /// SIGKILL: nothing flushed beyond what it had written.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port with the same storage.
    pub fn restart(&mut self) {
        self.kill();
        self.run();
    }
}

impl Drop for TansuServer {
    fn drop(&mut self) {
        self.kill();
    }
}
