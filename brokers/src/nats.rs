//! The NATS JetStream backend: one stream per Broker, one durable pull consumer per Trigger.
//!
//! - **Connection.** [`NatsBroker::open`] returns at once; a task connects (retrying with capped
//!   backoff while the server is unreachable or refuses the credentials), creates the stream
//!   when missing and checks it when present, then refreshes `stored`, each open consumer's
//!   backlog and the connection state once a second. Until it is connected and the stream is
//!   right, [`Broker::unavailable`] says why and ingress answers 503.
//! - **Publish.** Each event is published in binary mode ([`crate::binding`]) to
//!   `{subject}.events` with `Nats-Msg-Id` derived from its `source` and `id`, so a publisher's
//!   retry within the stream's duplicate window is stored once. A batch is published pipelined
//!   and acknowledged only when every publish ack arrived; when one fails the request fails
//!   (503) and the events already stored stay stored, so retrying the whole batch is safe: the
//!   message ids make the repeated ones duplicates the server drops.
//! - **Consume.** Retries live in the dispatcher. While a delivery is held (being delivered or
//!   retried), this backend sends an in-progress ack every [`PROGRESS_INTERVAL`] so JetStream
//!   never redelivers it meanwhile (`AckWait` [`ACK_WAIT`], `MaxDeliver` unlimited); JetStream
//!   redelivers only what a crashed or stopped gateway never acknowledged. `MaxAckPending` is
//!   the trigger's in-flight cap.

mod subscription;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_nats::jetstream::{self, stream};
use async_trait::async_trait;
use tokio::sync::watch;

use crate::binding::{self, Transport};
use crate::broker::{Broker, BrokerError, SubscribeOptions, Subscription};
use crate::config::{NatsAuth, NatsConfig, NatsStorage};
use crate::event::{CloudEvent, EventBatch};
use crate::remote::RemoteState;

/// How long JetStream waits for an ack (or an in-progress signal) before redelivering.
pub const ACK_WAIT: Duration = Duration::from_secs(30);
/// How often held deliveries are marked in progress (well inside [`ACK_WAIT`]).
pub const PROGRESS_INTERVAL: Duration = Duration::from_secs(10);
/// How often `stored`, backlogs and the connection state are refreshed.
const REFRESH_INTERVAL: Duration = Duration::from_secs(1);
/// Longest wait for one request to the server (connect, publish ack, stream info).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Reconnect backoff bounds while the server is unreachable.
const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// One Broker's JetStream stream.
pub struct NatsBroker {
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

struct Shared {
    config: NatsConfig,
    /// `tidegate://{namespace}/{name}`, the source of events wrapping invalid records.
    source: String,
    context: watch::Sender<Option<jetstream::Context>>,
    /// Readiness, counts and the consumers the Broker's Triggers need (by consumer name).
    state: RemoteState,
}

impl NatsBroker {
    /// Starts connecting in the background; never blocks. Must run inside a Tokio runtime.
    pub fn open(namespace: &str, name: &str, config: NatsConfig) -> Arc<NatsBroker> {
        let shared = Arc::new(Shared {
            source: format!("tidegate://{namespace}/{name}"),
            context: watch::channel(None).0,
            state: RemoteState::new(
                "nats",
                format!("stream {}", config.stream),
                format!("connecting to NATS at {}", config.urls.join(",")),
            ),
            config,
        });
        let task = tokio::spawn(run(Arc::clone(&shared)));
        Arc::new(NatsBroker { shared, task })
    }
}

impl Drop for NatsBroker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Shared {
    fn set_unavailable(&self, reason: Option<String>) {
        self.state.set_unavailable(reason);
    }

    fn context(&self) -> Result<jetstream::Context, BrokerError> {
        if let Some(reason) = self.state.unavailable() {
            return Err(BrokerError::Unavailable(reason));
        }
        self.context
            .borrow()
            .clone()
            .ok_or_else(|| BrokerError::Unavailable("not connected to NATS".into()))
    }
}

/// Connects, ensures the stream, then refreshes until the broker is dropped.
async fn run(shared: Arc<Shared>) {
    let mut backoff = BACKOFF_MIN;
    let client = loop {
        match connect(&shared.config).await {
            Ok(client) => break client,
            Err(why) => {
                shared.set_unavailable(Some(why));
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    };
    let mut context = jetstream::new(client.clone());
    context.set_timeout(REQUEST_TIMEOUT);
    let mut stream_ok = false;
    let mut backoff = BACKOFF_MIN;
    loop {
        let state = client.connection_state();
        if state != async_nats::connection::State::Connected {
            shared.set_unavailable(Some(format!(
                "disconnected from NATS at {} (reconnecting)",
                shared.config.urls.join(",")
            )));
            stream_ok = false;
        } else if !stream_ok {
            let ensured = match ensure_stream(&context, &shared.config).await {
                Ok(()) => {
                    // After a reconnect the server may have lost them (memory storage).
                    shared.state.reset_created();
                    ensure_consumers(&context, &shared).await
                }
                Err(why) => Err(why),
            };
            match ensured {
                Ok(()) => {
                    stream_ok = true;
                    backoff = BACKOFF_MIN;
                    shared.context.send_replace(Some(context.clone()));
                    shared.set_unavailable(None);
                }
                Err(why) => shared.set_unavailable(Some(why)),
            }
        }
        if stream_ok {
            if let Err(why) = ensure_consumers(&context, &shared).await {
                tracing::warn!(stream = %shared.config.stream, %why, "Could not create a consumer; retrying.");
            }
            match refresh(&context, &shared).await {
                Ok(()) => {}
                Err(Refresh::StreamMissing) => {
                    shared.state.reset_created();
                    shared.set_unavailable(Some(format!(
                        "stream {} was deleted; recreating it",
                        shared.config.stream
                    )));
                    stream_ok = false;
                    continue;
                }
                Err(Refresh::Other(why)) => {
                    tracing::debug!(stream = %shared.config.stream, %why, "NATS refresh failed.");
                }
            }
        }
        let wait = if stream_ok {
            REFRESH_INTERVAL
        } else {
            let wait = backoff;
            backoff = (backoff * 2).min(BACKOFF_MAX);
            wait
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = shared.state.expected_changed.notified(), if stream_ok => {}
        }
    }
}

/// Creates the expected consumers that do not exist yet.
async fn ensure_consumers(context: &jetstream::Context, shared: &Shared) -> Result<(), String> {
    for (name, options) in shared.state.missing() {
        subscription::ensure_consumer(context, &shared.config, &name, &options)
            .await
            .map_err(|e| e.to_string())?;
        shared.state.mark_created(&name);
    }
    Ok(())
}

async fn connect(config: &NatsConfig) -> Result<async_nats::Client, String> {
    let urls = config.urls.join(",");
    let addrs = config
        .urls
        .iter()
        .map(|u| u.parse::<async_nats::ServerAddr>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("invalid NATS URL in {urls:?}: {e}"))?;
    let mut options = async_nats::ConnectOptions::new()
        .name("tidegate")
        .connection_timeout(REQUEST_TIMEOUT)
        .request_timeout(Some(REQUEST_TIMEOUT));
    match &config.auth {
        Some(NatsAuth::UserPassword { user, password }) => {
            options = options.user_and_password(user.clone(), password.clone());
        }
        Some(NatsAuth::Token(token)) => options = options.token(token.clone()),
        None => {}
    }
    options
        .connect(addrs)
        .await
        .map_err(|e| format!("cannot connect to NATS at {urls}: {e}"))
}

/// Creates the stream when missing; a present one must hold our subjects with our settings.
async fn ensure_stream(context: &jetstream::Context, config: &NatsConfig) -> Result<(), String> {
    let wanted = stream_config(config);
    match context.get_stream(&config.stream).await {
        Ok(mut existing) => {
            let info = existing
                .info()
                .await
                .map_err(|e| format!("reading stream {}: {e}", config.stream))?;
            conflicts(&info.config, &wanted, config).map_or(Ok(()), Err)
        }
        Err(e)
            if matches!(
                e.kind(),
                jetstream::context::GetStreamErrorKind::JetStream(ref js)
                    if js.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND
            ) =>
        {
            context
                .create_stream(wanted)
                .await
                .map(|_| {
                    tracing::info!(stream = %config.stream, subjects = %config.stream_subjects(), "Created JetStream stream.");
                })
                .map_err(|e| format!("creating stream {}: {e}", config.stream))
        }
        Err(e) => Err(format!("reading stream {}: {e}", config.stream)),
    }
}

fn stream_config(config: &NatsConfig) -> stream::Config {
    stream::Config {
        name: config.stream.clone(),
        subjects: vec![config.stream_subjects()],
        storage: match config.storage {
            NatsStorage::File => stream::StorageType::File,
            NatsStorage::Memory => stream::StorageType::Memory,
        },
        num_replicas: config.replicas,
        max_age: config.max_age.unwrap_or_default(),
        max_bytes: config.max_bytes.unwrap_or(-1),
        max_messages: -1,
        duplicate_window: config.duplicate_window.unwrap_or(Duration::from_secs(120)),
        retention: stream::RetentionPolicy::Limits,
        discard: stream::DiscardPolicy::New,
        ..Default::default()
    }
}

/// How a present stream differs from what the Broker asks for, as an error sentence.
fn conflicts(have: &stream::Config, want: &stream::Config, config: &NatsConfig) -> Option<String> {
    let mut differences = Vec::new();
    if !have.subjects.iter().any(|s| *s == want.subjects[0]) {
        differences.push(format!(
            "subjects {:?} do not include {:?}",
            have.subjects, want.subjects[0]
        ));
    }
    if have.storage != want.storage {
        differences.push(format!(
            "storage is {:?}, not {:?}",
            have.storage, want.storage
        ));
    }
    if have.num_replicas != want.num_replicas {
        differences.push(format!(
            "replicas is {}, not {}",
            have.num_replicas, want.num_replicas
        ));
    }
    if config.max_age.is_some() && have.max_age != want.max_age {
        differences.push(format!(
            "max_age is {:?}, not {:?}",
            have.max_age, want.max_age
        ));
    }
    if config.max_bytes.is_some() && have.max_bytes != want.max_bytes {
        differences.push(format!(
            "max_bytes is {}, not {}",
            have.max_bytes, want.max_bytes
        ));
    }
    if config.duplicate_window.is_some() && have.duplicate_window != want.duplicate_window {
        differences.push(format!(
            "duplicate_window is {:?}, not {:?}",
            have.duplicate_window, want.duplicate_window
        ));
    }
    (!differences.is_empty()).then(|| {
        format!(
            "stream {} exists with conflicting settings: {}; change the Broker's ConfigMap or the stream",
            config.stream,
            differences.join("; ")
        )
    })
}

enum Refresh {
    StreamMissing,
    Other(String),
}

async fn refresh(context: &jetstream::Context, shared: &Shared) -> Result<(), Refresh> {
    let stream = match context.get_stream_no_info(&shared.config.stream).await {
        Ok(s) => s,
        Err(e) => return Err(Refresh::Other(e.to_string())),
    };
    let info = stream.get_info().await.map_err(|e| {
        if e.to_string().contains("not found") {
            Refresh::StreamMissing
        } else {
            Refresh::Other(e.to_string())
        }
    })?;
    shared.state.set_stored(info.state.messages);
    for (name, backlog) in shared.state.backlogs() {
        if let Ok(info) = stream.consumer_info(&name).await {
            backlog.store(
                info.num_pending + info.num_ack_pending as u64,
                Ordering::Relaxed,
            );
        }
    }
    Ok(())
}

/// The consumer name of a subscription `{namespace}/{trigger}`: NATS names may not hold `.`,
/// `*`, `>`, `/` or whitespace.
fn consumer_name(subscription: &str) -> String {
    crate::config::name_token(subscription)
}

/// `Nats-Msg-Id` of an event: its `source` and `id`, unambiguous (length-prefixed), hashed
/// when long or not printable.
pub fn message_id(event: &CloudEvent) -> String {
    let (source, id) = (event.source(), event.id());
    let plain = source.len() + id.len() <= 200
        && source
            .chars()
            .chain(id.chars())
            .all(|c| c.is_ascii_graphic());
    if plain {
        format!("{}:{source}{id}", source.len())
    } else {
        format!(
            "h:{:032x}",
            fnv1a_128(&[source.as_bytes(), b"\0", id.as_bytes()])
        )
    }
}

/// FNV-1a, 128 bits: stable across builds (unlike std's hasher), for message ids only.
fn fnv1a_128(parts: &[&[u8]]) -> u128 {
    const OFFSET: u128 = 0x6c62272e07bb014262b821756295c58d;
    const PRIME: u128 = 0x0000000001000000000000000000013b;
    let mut hash = OFFSET;
    for byte in parts.iter().flat_map(|p| p.iter()) {
        hash ^= u128::from(*byte);
        hash = hash.wrapping_mul(PRIME);
    }
    hash
}

#[async_trait]
impl Broker for NatsBroker {
    fn backend(&self) -> &'static str {
        "nats"
    }

    async fn append_batch(&self, batch: EventBatch) -> Result<(), BrokerError> {
        let context = self.shared.context()?;
        let subject = self.shared.config.publish_subject();
        let max_payload = context.client().server_info().max_payload;
        // Everything is encoded and checked before anything is published, so an event too
        // large for the server never leaves part of its batch stored.
        let mut messages = Vec::with_capacity(batch.len());
        for record in batch.records() {
            let event = CloudEvent::decode_storage(record)?;
            let (pairs, payload) = binding::encode(&event, Transport::Nats);
            let mut headers = async_nats::HeaderMap::new();
            let mut size = payload.len();
            for (name, value) in &pairs {
                headers.insert(name.as_str(), value.as_str());
                size += name.len() + value.len() + 4;
            }
            let id = message_id(&event);
            size += id.len() + "Nats-Msg-Id".len() + 64; // the id header and the framing
            if max_payload > 0 && size > max_payload {
                return Err(BrokerError::TooLarge {
                    backend: "nats",
                    size,
                    limit: max_payload,
                });
            }
            messages.push(
                jetstream::message::PublishMessage::build()
                    .payload(payload)
                    .headers(headers)
                    .message_id(id),
            );
        }
        let mut acks = Vec::with_capacity(messages.len());
        for publish in messages {
            let ack = context
                .send_publish(subject.clone(), publish)
                .await
                .map_err(|e| BrokerError::Unavailable(format!("publishing to NATS: {e}")))?;
            acks.push(ack);
        }
        for ack in acks {
            ack.await.map_err(|e| {
                BrokerError::Unavailable(format!("NATS did not acknowledge the publish: {e}"))
            })?;
        }
        Ok(())
    }

    async fn subscribe(
        &self,
        subscription: &str,
        options: &SubscribeOptions,
    ) -> Result<Box<dyn Subscription>, BrokerError> {
        let context = self.shared.context()?;
        let name = consumer_name(subscription);
        let sub = subscription::open(
            &context,
            &self.shared.config,
            &name,
            options,
            &self.shared.source,
        )
        .await?;
        self.shared.state.backlog(&name);
        Ok(Box::new(sub))
    }

    fn expect_subscriptions(&self, subscriptions: &[(String, SubscribeOptions)]) {
        self.shared.state.expect(
            subscriptions
                .iter()
                .map(|(subscription, options)| (consumer_name(subscription), *options)),
        );
    }

    async fn remove_subscription(&self, subscription: &str) -> Result<(), BrokerError> {
        let name = consumer_name(subscription);
        self.shared.state.forget(&name);
        let context = self.shared.context()?;
        let stream = context
            .get_stream_no_info(&self.shared.config.stream)
            .await
            .map_err(|e| BrokerError::Unavailable(e.to_string()))?;
        match stream.delete_consumer(&name).await {
            Ok(_) => Ok(()),
            Err(e) if e.to_string().contains("not found") => Ok(()),
            Err(e) => Err(BrokerError::Unavailable(format!(
                "deleting consumer {name}: {e}"
            ))),
        }
    }

    fn stored(&self) -> u64 {
        self.shared.state.stored()
    }

    fn pending(&self, subscription: &str) -> u64 {
        self.shared.state.pending(&consumer_name(subscription))
    }

    fn unavailable(&self) -> Option<String> {
        self.shared.state.unavailable()
    }

    fn location(&self) -> Vec<(&'static str, String)> {
        vec![
            ("stream", self.shared.config.stream.clone()),
            ("subject", self.shared.config.stream_subjects()),
        ]
    }
}

#[cfg(test)]
mod tests;
