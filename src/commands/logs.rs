//! `tidegate logs NAMESPACE/REVISION [--pod ID] [-f]`: the last lines a revision's local pods
//! wrote, from the admin API's rings, and with `-f` the lines that follow until interrupted.

use std::io::Write as _;
use std::time::Duration;

use anyhow::{Context as _, bail};

use crate::actuator::logs::{LogLine, LogPage, SERVING_CONTAINER};

/// How often `-f` asks for new lines.
const FOLLOW_EVERY: Duration = Duration::from_millis(500);
/// How long one request to the admin API may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(clap::Args)]
pub struct LogsArgs {
    /// The revision, as `namespace/revision` (`tidegate status` lists them).
    pub revision: String,
    /// Only this pod (as the lines and `tidegate status -o wide` name it: `hello-00001-1`).
    #[arg(long)]
    pub pod: Option<String>,
    /// Keep printing new lines as the pods write them, until interrupted.
    #[arg(short, long)]
    pub follow: bool,
    /// Print only the latest this many lines first.
    #[arg(long)]
    pub tail: Option<usize>,
    /// Admin API base URL.
    #[arg(
        long,
        env = "TIDEGATE_ADMIN_URL",
        default_value = "http://127.0.0.1:9090"
    )]
    pub admin: String,
}

pub async fn run(args: LogsArgs) -> anyhow::Result<()> {
    let Some((namespace, revision)) = args.revision.split_once('/') else {
        bail!(
            "revision: {:?} is not namespace/revision (for example default/hello-00001)",
            args.revision
        );
    };
    let client = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .build()
        .context("building the HTTP client")?;
    let base = args.admin.trim_end_matches('/');
    let url = format!("{base}/api/v1/revisions/{namespace}/{revision}/logs");
    let mut after = 0;
    let mut limit = args.tail;
    loop {
        let page = fetch(&client, &url, args.pod.as_deref(), after, limit).await?;
        print_lines(&page.lines)?;
        after = page.next;
        limit = None;
        if !args.follow {
            return Ok(());
        }
        tokio::select! {
            () = tokio::time::sleep(FOLLOW_EVERY) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

async fn fetch(
    client: &reqwest::Client,
    url: &str,
    pod: Option<&str>,
    after: u64,
    limit: Option<usize>,
) -> anyhow::Result<LogPage> {
    let mut query: Vec<(&str, String)> = vec![("after", after.to_string())];
    if let Some(pod) = pod {
        query.push(("pod", pod.to_owned()));
    }
    if let Some(limit) = limit {
        query.push(("limit", limit.to_string()));
    }
    let response = client
        .get(url)
        .query(&query)
        .send()
        .await
        .with_context(|| format!("contacting the admin API at {url}"))?;
    let status = response.status();
    if !status.is_success() {
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        let why = body["error"].as_str().unwrap_or("no reason given");
        bail!("{status}: {why}");
    }
    response
        .json()
        .await
        .context("reading the admin API's answer")
}

/// `pod[/container] | text`, the text as the pod wrote it.
fn print_lines(lines: &[LogLine]) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    for line in lines {
        if line.container == SERVING_CONTAINER {
            write!(out, "{}", line.pod)?;
        } else {
            write!(out, "{}/{}", line.pod, line.container)?;
        }
        writeln!(out, " | {}", line.text)?;
    }
    out.flush()?;
    Ok(())
}
