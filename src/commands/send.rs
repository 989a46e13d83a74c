//! `tidegate send`: publish one CloudEvent in binary or structured mode.

use std::process::ExitCode;

use anyhow::Context as _;
use brokers::event::{AttrValue, CloudEvent, SpecVersion};

#[derive(clap::Args, Debug)]
pub struct SendArgs {
    /// Broker URL, e.g. http://127.0.0.1:8080/default/default.
    #[arg(
        long,
        env = "TIDEGATE_SEND_URL",
        default_value = "http://127.0.0.1:8080/default/default"
    )]
    pub url: String,
    /// CloudEvents `type`.
    #[arg(long = "type")]
    pub ty: String,
    /// CloudEvents `source`.
    #[arg(long, default_value = "tidegate/send")]
    pub source: String,
    /// CloudEvents `id` (default: a random UUID).
    #[arg(long)]
    pub id: Option<String>,
    /// Event data, sent as is.
    #[arg(long)]
    pub data: Option<String>,
    /// Content type of the data.
    #[arg(long, default_value = "application/json")]
    pub content_type: String,
    /// Extension attribute `name=value`; repeat for several.
    #[arg(long = "extension", value_name = "NAME=VALUE")]
    pub extensions: Vec<String>,
    /// Send in structured mode (application/cloudevents+json) instead of binary mode.
    #[arg(long)]
    pub structured: bool,
}

/// Builds the event from the arguments, validating it as ingress would.
pub fn build_event(args: &SendArgs) -> anyhow::Result<CloudEvent> {
    let id = args
        .id
        .clone()
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let mut event = CloudEvent::new(SpecVersion::V10, id, args.source.clone(), args.ty.clone());
    event.set_attribute(
        "time",
        AttrValue::String(brokers::event::knative::now_rfc3339()),
    )?;
    for ext in &args.extensions {
        let (name, value) = ext
            .split_once('=')
            .with_context(|| format!("--extension {ext:?}: expected NAME=VALUE"))?;
        event
            .set_attribute(name, AttrValue::String(value.to_owned()))
            .with_context(|| format!("--extension {ext:?}"))?;
    }
    if let Some(data) = &args.data {
        event
            .set_data(
                Some(args.content_type.clone()),
                bytes::Bytes::from(data.clone()),
            )
            .context("--content-type")?;
    }
    Ok(event)
}

/// Sends the event through the Rust CloudEvents SDK's reqwest binding, as a publisher's
/// program would (binary mode), or its JSON format (structured mode).
pub async fn run(args: SendArgs) -> anyhow::Result<ExitCode> {
    use cloudevents::binding::reqwest::RequestBuilderExt as _;
    let event = build_event(&args)?;
    let sdk_event = brokers::sdk::to_sdk(&event)?;
    let request = reqwest::Client::new().post(&args.url);
    let request = if args.structured {
        request
            .header(http::header::CONTENT_TYPE, brokers::http::MODE_STRUCTURED)
            .body(serde_json::to_vec(&sdk_event).context("encoding the event")?)
    } else {
        request
            .event(sdk_event)
            .context("encoding the event in binary mode")?
    };
    let response = request
        .send()
        .await
        .with_context(|| format!("sending to {}", args.url))?;
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    println!(
        "{} {}",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    if !text.is_empty() {
        println!("{text}");
    }
    println!("id: {}", event.id());
    Ok(if status.is_success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
