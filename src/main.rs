//! The `tidegate` command line. Everything it runs lives in the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use tidegate::actuator::logs::LogFormat;
use tidegate::commands;
use tidegate::ingress::events::DEFAULT_MAX_BODY_BYTES;
use tidegate::runtime::{self, ServeConfig};
use tidegate::sample_service::{self, SampleConfig};

/// mimalloc, told to return freed memory to the OS at once (`MIMALLOC_PURGE_DELAY=0`, set by
/// [`purge_at_once`]), gives memory back after a burst (large batches, many connections); glibc's
/// allocator keeps most of it (measured in `bench/batch_memory.sh`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc reads its options from the environment when the process starts, so `serve` re-runs
/// itself once with `MIMALLOC_PURGE_DELAY=0` unless the variable is already set (an operator's
/// own value wins). Returns only if that is not needed or the re-exec failed.
fn purge_at_once() {
    use std::os::unix::process::CommandExt as _;
    const OPTION: &str = "MIMALLOC_PURGE_DELAY";
    if std::env::var_os(OPTION).is_some() {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let error = std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env(OPTION, "0")
        .exec();
    eprintln!(
        "warning: could not re-run with {OPTION}=0 ({error}); freed memory is returned later"
    );
}

#[derive(Parser)]
#[command(
    name = "tidegate",
    version,
    about = "Event-driven scaling gateway for Knative workloads"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// The gateway's log on stderr: `text` for people (colours only on a terminal), `json` for
    /// log shippers (one object per line, pods' lines included).
    #[arg(
        long,
        global = true,
        env = "TIDEGATE_LOG_FORMAT",
        value_enum,
        default_value_t = LogFormat::Text
    )]
    log_format: LogFormat,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway: CloudEvents ingress, embedded broker, trigger delivery, admin API.
    Serve(Box<ServeArgs>),
    /// Publish one CloudEvent and print the response.
    Send(commands::send::SendArgs),
    /// Validate manifest directories; exit 1 on any error.
    Check {
        /// Directories (or files) holding Knative YAML.
        #[arg(required = true)]
        dirs: Vec<PathBuf>,
    },
    /// Show the manifest set, revisions, brokers and triggers from a running gateway's admin API.
    Status {
        /// Admin API base URL.
        #[arg(
            long,
            env = "TIDEGATE_ADMIN_URL",
            default_value = "http://127.0.0.1:9090"
        )]
        admin: String,
        /// Output: tables, `wide` tables (each pod's in-flight against its limit), `json` or
        /// `yaml` (everything the admin API said).
        #[arg(short, long, value_enum, default_value_t = commands::StatusFormat::Table)]
        output: commands::StatusFormat,
        /// Redraw every --interval until interrupted (like `kubectl get -w` / `watch`).
        #[arg(short, long)]
        watch: bool,
        /// How often --watch redraws.
        #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
        interval: Duration,
    },
    /// Print the last lines a revision's local pods wrote, and with -f follow new ones.
    Logs(commands::logs::LogsArgs),
    /// Internal: start a pod's program tied to the gateway's lifetime.
    #[command(hide = true)]
    ExecPod {
        /// The gateway's process id.
        #[arg(long)]
        parent: Option<u32>,
        /// The pod's volumes (JSON list of mounts): run in a private file system view.
        #[arg(long)]
        mounts: Option<String>,
        /// With --mounts: the working directory inside the pod's view.
        #[arg(long)]
        workdir: Option<String>,
        /// Run in the file system view of this process (a pod's exec probe).
        #[arg(long)]
        enter: Option<u32>,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        argv: Vec<String>,
    },
    /// Print the CustomResourceDefinitions tidegate defines (the tidegate.dev Trigger), as YAML.
    Crds,
    /// A small HTTP workload for examples, tests and benchmarks.
    SampleService(SampleArgs),
    /// Simulate an autoscaler class on a request trace (virtual time) and report waits and cost.
    Simulate(commands::simulate::SimulateArgs),
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Manifest directory; repeat for several.
    #[arg(
        long = "manifests",
        env = "TIDEGATE_MANIFESTS",
        value_delimiter = ',',
        default_value = "deploy/local"
    )]
    manifests: Vec<PathBuf>,
    /// Where the embedded broker keeps its log.
    #[arg(long, env = "TIDEGATE_DATA_DIR", default_value = "./data")]
    data_dir: PathBuf,
    /// Ingress address (CloudEvents).
    #[arg(long, env = "TIDEGATE_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Admin address (health, metrics, API).
    #[arg(long, env = "TIDEGATE_ADMIN_LISTEN", default_value = "127.0.0.1:9090")]
    admin_listen: SocketAddr,
    /// Largest accepted request body in bytes.
    #[arg(long, env = "TIDEGATE_MAX_BODY_BYTES", default_value_t = DEFAULT_MAX_BODY_BYTES)]
    max_body_bytes: usize,
    /// Most events in one batch request (default: one per 400 bytes of --max-body-bytes,
    /// 10 485 for 4 MiB); a larger batch is answered 400.
    #[arg(long, env = "TIDEGATE_MAX_BATCH_EVENTS")]
    max_batch_events: Option<usize>,
    /// Memory, in bytes, for ingress requests between reading their body and the durable
    /// answer (each reserves 3× its body); a request that does not fit gets 503 + Retry-After.
    #[arg(long, env = "TIDEGATE_INGEST_MEMORY_BYTES", default_value_t = tidegate::ingress::events::DEFAULT_INGEST_MEMORY_BYTES)]
    ingest_memory_bytes: usize,
    /// How long SIGTERM waits for in-flight deliveries.
    #[arg(long, env = "TIDEGATE_DRAIN_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    drain_timeout: Duration,
    /// Quota for events retained by the embedded broker, in bytes; over it ingress answers 503.
    #[arg(long, env = "TIDEGATE_STORAGE_MAX_BYTES")]
    storage_max_bytes: Option<u64>,
    /// Free space, in bytes, the embedded broker leaves on its file system: appends that would
    /// leave less are answered 503 (default 1/32 of the file system, at most 64 MiB).
    #[arg(long, env = "TIDEGATE_STORAGE_MIN_FREE_BYTES")]
    storage_min_free_bytes: Option<u64>,
    /// Knative Services answer on `{service}.{namespace}.{domain}` (and `{tag}-{service}…`).
    #[arg(long, env = "TIDEGATE_DOMAIN", default_value = tidegate::ingress::proxy::DEFAULT_DOMAIN)]
    domain: String,
    /// Time to receive a request's headers, counted from when the connection waits for one (so
    /// on HTTP/1.1 also the longest keep-alive pause).
    /// Default 30s.
    #[arg(long, env = "TIDEGATE_HEADER_READ_TIMEOUT", value_parser = humantime::parse_duration)]
    header_read_timeout: Option<Duration>,
    /// A connection with no open request for this long is closed (HTTP/2: GOAWAY).
    /// Default 60s.
    #[arg(long, env = "TIDEGATE_IDLE_TIMEOUT", value_parser = humantime::parse_duration)]
    idle_timeout: Option<Duration>,
    /// Longest pause between two reads of a request body; past it the request gets 408.
    /// Default 30s.
    #[arg(long, env = "TIDEGATE_BODY_READ_TIMEOUT", value_parser = humantime::parse_duration)]
    body_read_timeout: Option<Duration>,
    /// Longest time to receive a whole request body once its first byte was read (408 past it).
    /// Default 300s.
    #[arg(long, env = "TIDEGATE_BODY_TIMEOUT", value_parser = humantime::parse_duration)]
    body_timeout: Option<Duration>,
    /// Interval of HTTP/2 keep-alive pings.
    /// Default 30s.
    #[arg(long, env = "TIDEGATE_H2_KEEPALIVE_INTERVAL", value_parser = humantime::parse_duration)]
    h2_keepalive_interval: Option<Duration>,
    /// How long an HTTP/2 ping may go unanswered before the connection is closed.
    /// Default 20s.
    #[arg(long, env = "TIDEGATE_H2_KEEPALIVE_TIMEOUT", value_parser = humantime::parse_duration)]
    h2_keepalive_timeout: Option<Duration>,
    /// Concurrent streams per HTTP/2 connection.
    #[arg(long, env = "TIDEGATE_H2_MAX_CONCURRENT_STREAMS", default_value_t = tidegate::ingress::conn::DEFAULT_H2_MAX_CONCURRENT_STREAMS)]
    h2_max_concurrent_streams: u32,
    /// Open ingress connections at most; default half the file-descriptor limit (which is
    /// raised to its hard limit at start), never closer to it than 256.
    #[arg(long, env = "TIDEGATE_MAX_CONNECTIONS")]
    max_connections: Option<usize>,
    /// Export OpenTelemetry traces to this OTLP/HTTP endpoint (protobuf), e.g.
    /// `http://127.0.0.1:4318/v1/traces`. An unreachable one drops spans (counted in
    /// `tidegate_otlp_spans_dropped_total`), never requests.
    #[arg(long, env = "TIDEGATE_OTLP_ENDPOINT")]
    otlp_endpoint: Option<String>,
    /// Threads serving the ingress, each with its own runtime and accept loop (default: one
    /// per core).
    #[arg(long, env = "TIDEGATE_INGRESS_THREADS", value_parser = clap::value_parser!(u16).range(1..=1024))]
    ingress_threads: Option<u16>,
    /// Read Brokers, Triggers and Knative Services from the Kubernetes API instead of
    /// --manifests, and reach pods through EndpointSlices.
    #[arg(long, env = "TIDEGATE_KUBERNETES")]
    kubernetes: bool,
    /// kubeconfig file (default: KUBECONFIG, ~/.kube/config, then the in-cluster service
    /// account).
    #[arg(long, env = "TIDEGATE_KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// tidegate's event ingress as the cluster reaches it: Brokers' status.address.url is
    /// `{url}/{namespace}/{broker}`.
    #[arg(
        long,
        env = "TIDEGATE_INGRESS_URL",
        default_value = "http://tidegate-ingress.tidegate-system.svc.cluster.local"
    )]
    ingress_url: String,
    /// Where Knative's ingress reaches this gateway for precise-class revisions (default: the
    /// pod IP from POD_IP with the --listen port).
    #[arg(long, env = "TIDEGATE_ADVERTISE")]
    advertise: Option<SocketAddr>,
}

#[derive(clap::Args)]
struct SampleArgs {
    /// Listen address; defaults to 127.0.0.1:$PORT, else 127.0.0.1:8081.
    #[arg(long, env = "TIDEGATE_SAMPLE_LISTEN")]
    listen: Option<SocketAddr>,
    /// Work time per request.
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    delay: Duration,
    /// CPU time each request burns (a busy loop on a blocking thread) before it is answered:
    /// a workload for the HPA class.
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    burn_cpu: Duration,
    /// Fraction of requests answered 500, in [0, 1].
    #[arg(long, default_value_t = 0.0)]
    fail_rate: f64,
    /// Status code of successful answers.
    #[arg(long, default_value_t = 200)]
    status: u16,
    /// Answer each CloudEvent with a reply event of this type.
    #[arg(long)]
    reply_type: Option<String>,
    /// Most received events kept for `GET /events`.
    #[arg(long, default_value_t = 100_000)]
    keep: usize,
    /// Speak HTTP/2 with prior knowledge only (an h2c workload, as behind a port named `h2c`);
    /// HTTP/1.1 requests fail.
    #[arg(long)]
    h2c_only: bool,
}

fn main() -> ExitCode {
    // Before anything else: exec-pod replaces the process and must not start a runtime.
    let cli = Cli::parse();
    if let Command::ExecPod {
        parent,
        mounts,
        workdir,
        enter,
        argv,
    } = &cli.command
    {
        return commands::exec_pod::run(
            *parent,
            mounts.as_deref(),
            workdir.as_deref(),
            *enter,
            argv,
        );
    }
    if matches!(cli.command, Command::Serve(_)) {
        purge_at_once();
    }
    // The log's filter never lets the trace spans in: they are for the OTLP layer only.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"))
        .add_directive(
            format!("{}=off", tidegate::telemetry::TARGET)
                .parse()
                .expect("a valid directive"),
        );
    let traces = match &cli.command {
        Command::Serve(args) => match args
            .otlp_endpoint
            .as_deref()
            .map(tidegate::telemetry::provider)
        {
            Some(Ok(provider)) => Some(provider),
            Some(Err(error)) => {
                eprintln!("error: --otlp-endpoint: {error:#}");
                return ExitCode::from(2);
            }
            None => None,
        },
        _ => None,
    };
    {
        use tracing_subscriber::Layer as _;
        use tracing_subscriber::layer::SubscriberExt as _;
        use tracing_subscriber::util::SubscriberInitExt as _;
        let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
        match (&traces, cli.log_format) {
            // Each layer its own filter: the log's, and the trace spans for the exporter.
            (Some(provider), format) => {
                let log = match format {
                    LogFormat::Text => tracing_subscriber::fmt::layer()
                        .with_ansi(ansi)
                        .with_writer(std::io::stderr)
                        .with_filter(filter)
                        .boxed(),
                    LogFormat::Json => tracing_subscriber::fmt::layer()
                        .json()
                        .flatten_event(true)
                        .with_writer(std::io::stderr)
                        .with_filter(filter)
                        .boxed(),
                };
                tracing_subscriber::registry()
                    .with(log)
                    .with(tidegate::telemetry::layer(provider))
                    .init();
            }
            // One global filter: spans nobody wants are never recorded.
            (None, LogFormat::Text) => tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_ansi(ansi)
                .with_writer(std::io::stderr)
                .init(),
            (None, LogFormat::Json) => tracing_subscriber::fmt()
                .json()
                .flatten_event(true)
                .with_env_filter(filter)
                .with_writer(std::io::stderr)
                .init(),
        }
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => runtime::serve(ServeConfig {
                manifests: args.manifests,
                data_dir: args.data_dir,
                listen: args.listen,
                admin_listen: args.admin_listen,
                max_body_bytes: args.max_body_bytes,
                max_batch_events: args.max_batch_events,
                ingest_memory_bytes: args.ingest_memory_bytes,
                drain_timeout: args.drain_timeout,
                storage_max_bytes: args.storage_max_bytes,
                storage_min_free_bytes: args.storage_min_free_bytes,
                domain: args.domain,
                connections: {
                    // The defaults live in one place: `ConnLimits::default`.
                    let d = tidegate::ingress::conn::ConnLimits::default();
                    tidegate::ingress::conn::ConnLimits {
                        header_read_timeout: args
                            .header_read_timeout
                            .unwrap_or(d.header_read_timeout),
                        idle_timeout: args.idle_timeout.unwrap_or(d.idle_timeout),
                        body_read_timeout: args.body_read_timeout.unwrap_or(d.body_read_timeout),
                        body_timeout: args.body_timeout.unwrap_or(d.body_timeout),
                        h2_keepalive_interval: args
                            .h2_keepalive_interval
                            .unwrap_or(d.h2_keepalive_interval),
                        h2_keepalive_timeout: args
                            .h2_keepalive_timeout
                            .unwrap_or(d.h2_keepalive_timeout),
                        h2_max_concurrent_streams: args.h2_max_concurrent_streams,
                        ..d
                    }
                },
                max_connections: args.max_connections,
                log_format: cli.log_format,
                ingress_threads: args.ingress_threads.map_or_else(
                    || std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
                    usize::from,
                ),
                kubernetes: args
                    .kubernetes
                    .then(|| tidegate::kubernetes::KubernetesConfig {
                        kubeconfig: args.kubeconfig.clone(),
                        ingress_url: args.ingress_url.clone(),
                        advertise: args.advertise.unwrap_or_else(|| {
                            let ip = std::env::var("POD_IP")
                                .ok()
                                .and_then(|ip| ip.parse().ok())
                                .unwrap_or(args.listen.ip());
                            SocketAddr::new(ip, args.listen.port())
                        }),
                        instance: std::env::var("POD_NAME").ok(),
                        request_timeout: Duration::from_secs(10),
                    }),
            })
            .await
            .map(|()| ExitCode::SUCCESS),
            Command::Send(args) => commands::send::run(args).await,
            Command::Check { dirs } => Ok(commands::check(&dirs)),
            Command::Crds => match triggers::crd::crds_yaml() {
                Ok(yaml) => {
                    print!("{yaml}");
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => Err(anyhow::anyhow!("cannot render the CRDs: {e}")),
            },
            Command::ExecPod { .. } => Ok(ExitCode::FAILURE),
            Command::Status {
                admin,
                output,
                watch,
                interval,
            } => commands::status(&admin, output, watch, interval)
                .await
                .map(|()| ExitCode::SUCCESS),
            Command::Logs(args) => commands::logs::run(args).await.map(|()| ExitCode::SUCCESS),
            Command::Simulate(args) => commands::simulate::run(args),
            Command::SampleService(args) => {
                let listen = args.listen.unwrap_or_else(|| {
                    let port = std::env::var("PORT")
                        .ok()
                        .and_then(|p| p.parse().ok())
                        .unwrap_or(8081);
                    SocketAddr::from(([127, 0, 0, 1], port))
                });
                sample_service::run(SampleConfig {
                    listen,
                    delay: args.delay,
                    burn_cpu: args.burn_cpu,
                    fail_rate: args.fail_rate,
                    status: args.status,
                    reply_type: args.reply_type,
                    keep: args.keep,
                    h2c_only: args.h2c_only,
                })
                .await
                .map(|()| ExitCode::SUCCESS)
            }
        }
    });
    // Spans still queued go out before the process ends (bounded by the exporter's timeout).
    if let Some(provider) = traces {
        let _ = provider.shutdown();
    }
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
