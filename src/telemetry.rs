//! OpenTelemetry traces (`--otlp-endpoint URL`, OTLP over HTTP/protobuf).
//!
//! Spans are `tracing` spans with target [`TARGET`], turned into OpenTelemetry spans by
//! `tracing-opentelemetry` and exported in batches from the SDK's own thread, so the data path
//! never waits for the collector: `ingest` (receive → durable store), `delivery` (one per attempt,
//! with `retry` and `outcome`), and for proxied requests `proxy` with its `queue` wait and
//! `upstream` time as children. Context travels as W3C trace context: an event's `traceparent`
//! (from the publisher's header or extension) is the parent of its ingest span; an event without
//! one gets the ingest span's, so its deliveries join the same trace; subscribers and pods get
//! the `traceparent` of the span that calls them.
//!
//! Without `--otlp-endpoint` the spans are disabled (no layer wants them) and cost a check.
//! Spans that could not be exported (collector unreachable, or the export queue full) are
//! dropped and counted in `tidegate_otlp_spans_dropped_total`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context as _;
use opentelemetry::propagation::TextMapPropagator as _;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// The target of every span exported.
pub const TARGET: &str = "tidegate::trace";

static DROPPED: AtomicU64 = AtomicU64::new(0);

/// Spans dropped since start (not exported).
pub fn dropped_spans() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

/// Counts the spans of every batch the exporter could not deliver.
#[derive(Debug)]
struct Counting<E>(E);

impl<E: opentelemetry_sdk::trace::SpanExporter> opentelemetry_sdk::trace::SpanExporter
    for Counting<E>
{
    async fn export(&self, batch: Vec<SpanData>) -> opentelemetry_sdk::error::OTelSdkResult {
        let spans = batch.len() as u64;
        let result = self.0.export(batch).await;
        if result.is_err() {
            DROPPED.fetch_add(spans, Ordering::Relaxed);
        }
        result
    }

    fn shutdown_with_timeout(
        &self,
        timeout: std::time::Duration,
    ) -> opentelemetry_sdk::error::OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> opentelemetry_sdk::error::OTelSdkResult {
        self.0.force_flush()
    }

    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        self.0.set_resource(resource);
    }
}

/// The tracer provider exporting to `endpoint` (the full URL, `…/v1/traces`). Keep it until
/// exit and call [`SdkTracerProvider::shutdown`] to flush.
pub fn provider(endpoint: &str) -> anyhow::Result<SdkTracerProvider> {
    use opentelemetry_otlp::WithExportConfig as _;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .with_endpoint(endpoint)
        .with_timeout(std::time::Duration::from_secs(5))
        .build()
        .with_context(|| format!("setting up the OTLP exporter to {endpoint}"))?;
    // Exported every second unless OTEL_BSP_SCHEDULE_DELAY says otherwise (the SDK reads the
    // OTEL_BSP_* variables); the queue is the SDK's bound (2048 spans), beyond it spans drop.
    let mut config = opentelemetry_sdk::trace::BatchConfigBuilder::default();
    if std::env::var_os("OTEL_BSP_SCHEDULE_DELAY").is_none() {
        config = config.with_scheduled_delay(std::time::Duration::from_secs(1));
    }
    let processor = opentelemetry_sdk::trace::BatchSpanProcessor::builder(Counting(exporter))
        .with_batch_config(config.build())
        .build();
    Ok(SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name("tidegate")
                .build(),
        )
        .build())
}

/// The `tracing` layer feeding `provider`, for [`TARGET`]'s spans only.
pub fn layer<S>(
    provider: &SdkTracerProvider,
) -> impl tracing_subscriber::Layer<S> + Send + Sync + 'static
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a> + Send + Sync,
{
    use tracing_subscriber::Layer as _;
    tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("tidegate"))
        .with_filter(
            tracing_subscriber::filter::Targets::new().with_target(TARGET, tracing::Level::INFO),
        )
}

/// Makes the context in `traceparent` (and `tracestate`) the parent of `span`. Malformed
/// values are ignored (the span starts a trace of its own).
pub fn set_parent(span: &tracing::Span, traceparent: &str, tracestate: Option<&str>) {
    if span.is_disabled() {
        return;
    }
    let mut carrier = HashMap::with_capacity(2);
    carrier.insert("traceparent".to_owned(), traceparent.to_owned());
    if let Some(state) = tracestate {
        carrier.insert("tracestate".to_owned(), state.to_owned());
    }
    let parent = TraceContextPropagator::new().extract(&carrier);
    let _ = span.set_parent(parent);
}

/// As [`set_parent`], from a request's `traceparent` and `tracestate` headers, if it sent them.
pub fn set_parent_from_headers(span: &tracing::Span, headers: &http::HeaderMap) {
    let value = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(parent) = value("traceparent") {
        set_parent(span, parent, value("tracestate"));
    }
}

/// `span`'s W3C `traceparent`, when traces are exported.
pub fn traceparent(span: &tracing::Span) -> Option<String> {
    if span.is_disabled() {
        return None;
    }
    let mut carrier = HashMap::with_capacity(2);
    TraceContextPropagator::new().inject_context(&span.context(), &mut carrier);
    carrier.remove("traceparent")
}
