//! Event path benchmark: publish → subscriber through `tidegate serve` on each backend — the
//! embedded durable default, NATS JetStream (a real `nats-server -js`, file storage) and Kafka
//! (librdkafka's mock cluster; tansu with `TIDEGATE_BENCH_TANSU=1`) — one event per request,
//! batch mode and a moderate fixed rate; the direct-HTTP ceiling (the same load straight at
//! `tidegate sample-service`); and each network backend's raw client (async-nats, rdkafka) on
//! the same server and events.
//!
//! Run: `bash bench/ingest.sh` (or `cargo bench --bench ingest`). Loopback only; every loop is
//! bounded by an event count and a deadline.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context as _, bail};
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use brokers::testkit::{KafkaMock, NatsServer, TansuServer};
use tokio::time::Instant;

#[path = "ingest/raw.rs"]
mod raw;

const EVENTS: usize = 20_000;
const CONCURRENCY: usize = 64;
const BATCH: usize = 100;
const BATCH_CONCURRENCY: usize = 4;
const MODERATE_RATE: u64 = 500;
const MODERATE_SECONDS: u64 = 5;
const DEADLINE: Duration = Duration::from_secs(120);

/// Arrival and send times in nanoseconds since the bench started, indexed by event number.
struct Clock {
    start: Instant,
    sent: Vec<AtomicU64>,
    arrived: Vec<AtomicU64>,
    arrivals: AtomicUsize,
}

impl Clock {
    fn now(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

fn main() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run())
}

/// A backend under test, with the server it needs.
enum Backend {
    Embedded,
    Nats(NatsServer),
    Kafka(KafkaMock),
    Tansu(TansuServer),
}

impl Backend {
    fn name(&self) -> &'static str {
        match self {
            Backend::Embedded => "embedded",
            Backend::Nats(_) => "nats",
            Backend::Kafka(_) => "kafka",
            Backend::Tansu(_) => "tansu",
        }
    }

    fn broker_yaml(&self) -> String {
        let config = |data: &str| {
            format!(
                "  config:\n    apiVersion: v1\n    kind: ConfigMap\n    name: bench\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: bench\n  namespace: default\ndata:\n{data}"
            )
        };
        let spec = match self {
            Backend::Embedded => "  {}\n".to_owned(),
            Backend::Nats(server) => config(&format!("  backend: nats\n  url: {}\n", server.url())),
            Backend::Kafka(mock) => config(&format!(
                "  backend: kafka\n  bootstrap.servers: {}\n",
                mock.bootstrap_servers()
            )),
            Backend::Tansu(server) => config(&format!(
                "  backend: kafka\n  bootstrap.servers: {}\n",
                server.bootstrap_servers()
            )),
        };
        format!(
            "apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata:\n  name: default\n  namespace: default\nspec:\n{spec}"
        )
    }
}

async fn run() -> anyhow::Result<()> {
    println!(
        "tidegate event path benchmark: {EVENTS} events per scenario, {CONCURRENCY} connections (batches: {BATCH_CONCURRENCY} × {BATCH}); \
         2 cores shared by load, gateway, broker and subscriber"
    );
    // Direct ceiling: the same single-event load straight at the sample service.
    let direct_addr = free_addr()?;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()?;
    let direct_rate = {
        let _sample = Proc::spawn(
            Command::new(env!("CARGO_BIN_EXE_tidegate"))
                .args([
                    "sample-service",
                    "--listen",
                    &direct_addr.to_string(),
                    "--keep",
                    "1",
                ])
                .env("RUST_LOG", "warn"),
        )?;
        wait_ready(&format!("http://{direct_addr}/events")).await?;
        let (rate, lat) = direct(&client, &format!("http://{direct_addr}/")).await?;
        header();
        row("-", "direct to sample-service", rate, &lat);
        rate
    };
    let mut backends = vec![Backend::Embedded];
    match brokers::testkit::nats_server_binary() {
        Some(bin) => backends.push(Backend::Nats(NatsServer::start(&bin))),
        None => {
            println!("(nats: no nats-server found; run bash scripts/test.sh once to install it)")
        }
    }
    backends.push(Backend::Kafka(KafkaMock::start(&[
        (KAFKA_TOPIC, 10),
        (RAW_TOPIC, 10),
    ])));
    // tansu with SQLite storage saturates far below this load (118 events/s at one event per
    // request here, then produce timeouts and 503s under batches): opt in, for small runs.
    if std::env::var_os("TIDEGATE_BENCH_TANSU").is_some() {
        match brokers::testkit::tansu_binary() {
            Some(bin) => backends.push(Backend::Tansu(TansuServer::start(&bin))),
            None => println!("(tansu: not found; run bash scripts/test.sh once to build it)"),
        }
    }
    let mut references = Vec::new();
    for backend in &backends {
        let (single, batch) = bench_backend(backend, &client).await?;
        println!(
            "{:<9} ratio tidegate/direct (1 event/request): {:.2}",
            backend.name(),
            single / direct_rate
        );
        let raw = match backend {
            Backend::Embedded => None,
            Backend::Nats(server) => Some(raw::nats(&server.url(), EVENTS).await?),
            Backend::Kafka(mock) => {
                Some(raw::kafka(&mock.bootstrap_servers(), RAW_TOPIC, EVENTS, false).await?)
            }
            Backend::Tansu(server) => {
                Some(raw::kafka(&server.bootstrap_servers(), RAW_TOPIC, EVENTS, true).await?)
            }
        };
        if let Some((publish, consume)) = raw {
            references.push((backend.name(), publish, consume, batch));
        }
    }
    println!("\nraw clients on the same servers and events (no tidegate):");
    println!(
        "{:<9} {:>14} {:>14} {:>22}",
        "backend", "publish/s", "consume/s", "tidegate batch ingest/raw"
    );
    for (name, publish, consume, batch) in references {
        println!(
            "{name:<9} {publish:>14.0} {consume:>14.0} {:>22.2}",
            batch / publish
        );
    }
    println!(
        "(kafka: librdkafka's in-process mock cluster, in memory; tansu: a separate Kafka-compatible broker, SQLite storage)"
    );
    Ok(())
}

const KAFKA_TOPIC: &str = "knative-broker-default-default";
const RAW_TOPIC: &str = "bench-raw";

fn header() {
    println!(
        "{:<9} {:<30} {:>10} {:>10} {:>10}",
        "backend", "scenario", "events/s", "p50 ms", "p99 ms"
    );
}

/// Publish → subscriber through a gateway on `backend`: one event per request, batches, and a
/// fixed moderate rate. Returns the single and batch rates.
async fn bench_backend(backend: &Backend, client: &reqwest::Client) -> anyhow::Result<(f64, f64)> {
    let total = EVENTS * 2 + (MODERATE_RATE * MODERATE_SECONDS) as usize;
    let clock = Arc::new(Clock {
        start: Instant::now(),
        sent: (0..total).map(|_| AtomicU64::new(0)).collect(),
        arrived: (0..total).map(|_| AtomicU64::new(0)).collect(),
        arrivals: AtomicUsize::new(0),
    });
    let subscriber = start_subscriber(Arc::clone(&clock)).await?;
    let tmp = tempfile::tempdir()?;
    let manifests = tmp.path().join("manifests");
    std::fs::create_dir_all(&manifests)?;
    std::fs::write(
        manifests.join("bench.yaml"),
        format!(
            "{}---\napiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata:\n  name: bench\n  namespace: default\n\
             spec:\n  broker: default\n  subscriber:\n    uri: http://{subscriber}/\n",
            backend.broker_yaml()
        ),
    )?;
    let ingress = free_addr()?;
    let admin = free_addr()?;
    let _gateway = Proc::spawn(
        Command::new(env!("CARGO_BIN_EXE_tidegate"))
            .args(["serve", "--manifests"])
            .arg(&manifests)
            .arg("--data-dir")
            .arg(tmp.path().join("data"))
            .args([
                "--listen",
                &ingress.to_string(),
                "--admin-listen",
                &admin.to_string(),
            ])
            .env("RUST_LOG", "warn"),
    )?;
    wait_ready(&format!("http://{admin}/readyz")).await?;
    wait_trigger_ready(&format!("http://{admin}/api/v1/triggers")).await?;
    let url = format!("http://{ingress}/default/default");
    let name = backend.name();

    let (single, lat) = publish_single(client, &url, &clock, 0..EVENTS).await?;
    row(name, "1 event/request", single, &lat);
    let (_, lat) = publish_batches(client, &url, &clock, EVENTS..EVENTS * 2).await?;
    let batch = f64::from_bits(INGEST.load(Ordering::Relaxed));
    row(
        name,
        &format!("batch of {BATCH} (delivered)"),
        f64::NAN,
        &lat,
    );
    let lat = publish_rate(client, &url, &clock, EVENTS * 2..total).await?;
    row(name, &format!("fixed {MODERATE_RATE}/s"), f64::NAN, &lat);
    Ok((single, batch))
}

async fn wait_trigger_ready(url: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = reqwest::get(url).await
            && let Ok(rows) = r.json::<Vec<serde_json::Value>>().await
            && rows.iter().all(|t| t["ready"] == true)
        {
            // A Kafka consumer group also needs its first assignment (a few seconds on the mock).
            tokio::time::sleep(Duration::from_secs(4)).await;
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("trigger not ready");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn row(backend: &str, name: &str, rate: f64, latencies: &[u64]) {
    let p = |q: f64| {
        if latencies.is_empty() {
            return f64::NAN;
        }
        let i = ((latencies.len() as f64 - 1.0) * q).round() as usize;
        latencies[i] as f64 / 1e6
    };
    let rate = if rate.is_nan() {
        "-".to_owned()
    } else {
        format!("{rate:.0}")
    };
    println!(
        "{backend:<9} {name:<30} {rate:>10} {:>10.2} {:>10.2}",
        p(0.50),
        p(0.99)
    );
}

fn event_request(client: &reqwest::Client, url: &str, n: usize) -> reqwest::RequestBuilder {
    client
        .post(url)
        .header("ce-specversion", "1.0")
        .header("ce-id", n.to_string())
        .header("ce-source", "bench")
        .header("ce-type", "dev.tidegate.bench")
        .header("content-type", "application/json")
        .body(r#"{"payload":"0123456789abcdef0123456789abcdef"}"#)
}

/// One event per request; rate = events delivered per second, latency = publish → subscriber.
async fn publish_single(
    client: &reqwest::Client,
    url: &str,
    clock: &Arc<Clock>,
    range: std::ops::Range<usize>,
) -> anyhow::Result<(f64, Vec<u64>)> {
    let next = Arc::new(AtomicUsize::new(range.start));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..CONCURRENCY {
        let (client, url, clock, next, end) = (
            client.clone(),
            url.to_owned(),
            Arc::clone(clock),
            Arc::clone(&next),
            range.end,
        );
        tasks.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= end {
                    return Ok::<_, anyhow::Error>(());
                }
                clock.sent[n].store(clock.now(), Ordering::Relaxed);
                let r = event_request(&client, &url, n).send().await?;
                if r.status() != StatusCode::ACCEPTED {
                    bail!("publish answered {}", r.status());
                }
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    wait_arrivals(clock, range.end).await?;
    let rate = range.len() as f64 / started.elapsed().as_secs_f64();
    Ok((rate, latencies(clock, range)))
}

async fn publish_batches(
    client: &reqwest::Client,
    url: &str,
    clock: &Arc<Clock>,
    range: std::ops::Range<usize>,
) -> anyhow::Result<(f64, Vec<u64>)> {
    let next = Arc::new(AtomicUsize::new(range.start));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..BATCH_CONCURRENCY {
        let (client, url, clock, next, end) = (
            client.clone(),
            url.to_owned(),
            Arc::clone(clock),
            Arc::clone(&next),
            range.end,
        );
        tasks.push(tokio::spawn(async move {
            loop {
                let first = next.fetch_add(BATCH, Ordering::Relaxed);
                if first >= end {
                    return Ok::<_, anyhow::Error>(());
                }
                let last = (first + BATCH).min(end);
                let mut body = String::with_capacity(BATCH * 160);
                body.push('[');
                for n in first..last {
                    if n > first {
                        body.push(',');
                    }
                    body.push_str(&format!(
                        r#"{{"specversion":"1.0","id":"{n}","source":"bench","type":"dev.tidegate.bench","data":{{"payload":"0123456789abcdef0123456789abcdef"}}}}"#
                    ));
                }
                body.push(']');
                let now = clock.now();
                for n in first..last {
                    clock.sent[n].store(now, Ordering::Relaxed);
                }
                let r = client
                    .post(&url)
                    .header("content-type", "application/cloudevents-batch+json")
                    .body(body)
                    .send()
                    .await?;
                if r.status() != StatusCode::ACCEPTED {
                    bail!("batch publish answered {}", r.status());
                }
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    let ingest = range.len() as f64 / started.elapsed().as_secs_f64();
    wait_arrivals(clock, range.end).await?;
    let rate = range.len() as f64 / started.elapsed().as_secs_f64();
    println!("          (batch ingest alone, every request answered 202: {ingest:.0} events/s)");
    INGEST.store(ingest.to_bits(), Ordering::Relaxed);
    Ok((rate, latencies(clock, range)))
}

/// The last batch ingest rate (f64 bits), for the raw-client comparison.
static INGEST: AtomicU64 = AtomicU64::new(0);

/// A fixed publish rate, for latency at moderate load.
async fn publish_rate(
    client: &reqwest::Client,
    url: &str,
    clock: &Arc<Clock>,
    range: std::ops::Range<usize>,
) -> anyhow::Result<Vec<u64>> {
    let mut tick = tokio::time::interval(Duration::from_nanos(1_000_000_000 / MODERATE_RATE));
    let mut tasks = Vec::with_capacity(range.len());
    for n in range.clone() {
        tick.tick().await;
        let (client, url, clock) = (client.clone(), url.to_owned(), Arc::clone(clock));
        tasks.push(tokio::spawn(async move {
            clock.sent[n].store(clock.now(), Ordering::Relaxed);
            let r = event_request(&client, &url, n).send().await?;
            anyhow::ensure!(
                r.status() == StatusCode::ACCEPTED,
                "publish answered {}",
                r.status()
            );
            Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    wait_arrivals(clock, range.end).await?;
    Ok(latencies(clock, range))
}

/// The same single-event load straight at the sample service: requests/s and request latency.
async fn direct(client: &reqwest::Client, url: &str) -> anyhow::Result<(f64, Vec<u64>)> {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..CONCURRENCY {
        let (client, url, next) = (client.clone(), url.to_owned(), Arc::clone(&next));
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= EVENTS {
                    return Ok::<_, anyhow::Error>(latencies);
                }
                let t = Instant::now();
                let r = event_request(&client, &url, n).send().await?;
                anyhow::ensure!(r.status().is_success(), "direct answered {}", r.status());
                latencies.push(u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX));
            }
        }));
    }
    let mut all = Vec::with_capacity(EVENTS);
    for t in tasks {
        all.extend(t.await??);
    }
    let rate = EVENTS as f64 / started.elapsed().as_secs_f64();
    all.sort_unstable();
    Ok((rate, all))
}

fn latencies(clock: &Clock, range: std::ops::Range<usize>) -> Vec<u64> {
    let mut l: Vec<u64> = range
        .map(|n| {
            clock.arrived[n]
                .load(Ordering::Relaxed)
                .saturating_sub(clock.sent[n].load(Ordering::Relaxed))
        })
        .collect();
    l.sort_unstable();
    l
}

async fn wait_arrivals(clock: &Clock, upto: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + DEADLINE;
    while clock.arrivals.load(Ordering::Relaxed) < upto {
        if Instant::now() > deadline {
            bail!(
                "only {} of {upto} events arrived",
                clock.arrivals.load(Ordering::Relaxed)
            );
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Ok(())
}

async fn start_subscriber(clock: Arc<Clock>) -> anyhow::Result<SocketAddr> {
    async fn receive(State(clock): State<Arc<Clock>>, headers: HeaderMap) -> StatusCode {
        let n = headers
            .get("ce-id")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        if let Some(slot) = n.and_then(|n| clock.arrived.get(n))
            && slot.swap(clock.now(), Ordering::Relaxed) == 0
        {
            clock.arrivals.fetch_add(1, Ordering::Relaxed);
        }
        StatusCode::ACCEPTED
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = Router::new().fallback(receive).with_state(clock);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(addr)
}

fn free_addr() -> anyhow::Result<SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

async fn wait_ready(url: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = reqwest::get(url).await
            && r.status().is_success()
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{url} not ready");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A child process killed when the benchmark ends.
struct Proc(Child);

impl Proc {
    fn spawn(command: &mut Command) -> anyhow::Result<Proc> {
        Ok(Proc(
            command
                .stdout(Stdio::null())
                .spawn()
                .context("spawning tidegate")?,
        ))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
