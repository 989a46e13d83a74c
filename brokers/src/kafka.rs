//! The Kafka backend (rdkafka, bundled librdkafka): one topic per Broker, one consumer group
//! per Trigger (`knative-trigger-{namespace}-{name}`, Knative's naming).
//!
//! - **Topic.** Created when missing with the configured partitions, replication factor and
//!   retention; a task checks it once a second (recreating a deleted one) and refreshes
//!   `stored` from the partitions' watermarks. Until the topic is there and the cluster
//!   answers, [`Broker::unavailable`] says why and ingress answers 503.
//! - **Produce.** Binary mode ([`crate::binding`]: `ce_` headers, `content-type`, the
//!   `partitionkey` extension as the record key) with `acks=all` and idempotence; a request is
//!   acknowledged only when every record's delivery report arrived. A batch is not a Kafka
//!   transaction: when one record fails the request fails (503) while the records already
//!   written stay written, so a publisher's retry of the whole batch stores those again —
//!   duplicates with the same `source` + `id`, which at-least-once consumers must expect (as
//!   Knative's Kafka broker does); no event is lost.
//! - **Consume.** Offsets are committed manually, only over the contiguous prefix of settled
//!   records of each partition, periodically and on partition revocation; deliveries of a
//!   revoked partition that settle later are not committed by this member (the new owner
//!   redelivers them). A new group starts at the end of each partition, committed before the
//!   Broker reports ready (see [`Broker::expect_subscriptions`]).

mod subscription;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::binding::{self, Transport};
use crate::broker::{Broker, BrokerError, SubscribeOptions, Subscription};
use crate::config::KafkaConfig;
use crate::event::{CloudEvent, EventBatch};
use crate::remote::RemoteState;

/// How often the topic, `stored` and backlogs are refreshed.
const REFRESH_INTERVAL: Duration = Duration::from_secs(1);
/// Longest wait for one metadata or offsets request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// A record not acknowledged by the cluster within this fails its request (503).
const DELIVERY_TIMEOUT_MS: &str = "10000";
/// librdkafka's default `message.max.bytes` (and Kafka's default broker limit, about 1 MB).
const MAX_MESSAGE_BYTES: usize = 1_000_000;
const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// One Broker's Kafka topic.
pub struct KafkaBroker {
    shared: Arc<Shared>,
    /// Always `Some` until dropped (then closed on the blocking pool: it flushes).
    producer: Option<FutureProducer>,
    task: tokio::task::JoinHandle<()>,
}

struct Shared {
    config: KafkaConfig,
    source: String,
    /// Readiness, counts, and the groups the Broker's Triggers need (by group id; "created"
    /// means their start offsets exist).
    state: RemoteState,
}

/// Client settings shared by the producer, admin client and consumers.
pub(crate) fn client_config(config: &KafkaConfig) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &config.bootstrap_servers)
        .set("client.id", "tidegate")
        .set("socket.timeout.ms", "10000");
    if let Some(auth) = &config.auth {
        c.set("security.protocol", auth.protocol.to_ascii_lowercase());
        if let Some(mechanism) = &auth.sasl_mechanism {
            c.set("sasl.mechanism", mechanism);
        }
        if let Some(user) = &auth.user {
            c.set("sasl.username", user);
        }
        if let Some(password) = &auth.password {
            c.set("sasl.password", password);
        }
        if let Some(ca) = &auth.ca_cert {
            c.set("ssl.ca.pem", ca);
        }
    }
    c
}

/// The consumer group of a subscription `{namespace}/{trigger}`.
pub fn group_id(subscription: &str) -> String {
    let (namespace, name) = subscription
        .split_once('/')
        .unwrap_or(("default", subscription));
    format!("knative-trigger-{namespace}-{name}")
}

impl KafkaBroker {
    /// Creates the producer and starts the topic task; never blocks. Must run inside a Tokio
    /// runtime.
    pub fn open(
        namespace: &str,
        name: &str,
        config: KafkaConfig,
    ) -> Result<Arc<KafkaBroker>, BrokerError> {
        let producer: FutureProducer = client_config(&config)
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("linger.ms", "1")
            .set("message.timeout.ms", DELIVERY_TIMEOUT_MS)
            .create()
            .map_err(|e| BrokerError::Unavailable(format!("creating the Kafka producer: {e}")))?;
        let shared = Arc::new(Shared {
            source: format!("tidegate://{namespace}/{name}"),
            state: RemoteState::new(
                "kafka",
                format!("topic {}", config.topic),
                format!("connecting to Kafka at {}", config.bootstrap_servers),
            ),
            config,
        });
        let task = tokio::spawn(run(Arc::clone(&shared)));
        Ok(Arc::new(KafkaBroker {
            shared,
            producer: Some(producer),
            task,
        }))
    }
}

impl Drop for KafkaBroker {
    fn drop(&mut self) {
        self.task.abort();
        if let (Some(producer), Ok(runtime)) =
            (self.producer.take(), tokio::runtime::Handle::try_current())
        {
            runtime.spawn_blocking(move || drop(producer));
        }
    }
}

impl Shared {
    fn set_unavailable(&self, reason: Option<String>) {
        self.state.set_unavailable(reason);
    }
}

/// Ensures the topic (and the expected groups' start offsets), then refreshes until dropped.
async fn run(shared: Arc<Shared>) {
    let admin: AdminClient<DefaultClientContext> = match client_config(&shared.config).create() {
        Ok(admin) => admin,
        Err(e) => {
            shared.set_unavailable(Some(format!("creating the Kafka admin client: {e}")));
            return;
        }
    };
    let metadata: Arc<BaseConsumer> = match client_config(&shared.config).create() {
        Ok(c) => Arc::new(c),
        Err(e) => {
            shared.set_unavailable(Some(format!("creating the Kafka metadata client: {e}")));
            return;
        }
    };
    let mut ready = false;
    let mut backoff = BACKOFF_MIN;
    loop {
        match partitions(&metadata, &shared.config.topic).await {
            Err(why) => {
                shared.set_unavailable(Some(why));
                ready = false;
            }
            Ok(None) => {
                ready = false;
                match create_topic(&admin, &shared.config).await {
                    Ok(()) => {} // checked again after the backoff (metadata may lag)
                    Err(why) => shared.set_unavailable(Some(why)),
                }
            }
            Ok(Some(count)) => {
                if count < shared.config.partitions as usize && !ready {
                    tracing::warn!(topic = %shared.config.topic, partitions = count, configured = shared.config.partitions, "The topic exists with fewer partitions than configured; using it as it is.");
                }
                match ensure_groups(&shared).await {
                    Ok(()) => {
                        if !ready {
                            ready = true;
                            backoff = BACKOFF_MIN;
                            shared.set_unavailable(None);
                        }
                        if let Ok(stored) = stored(&metadata, &shared.config.topic, count).await {
                            shared.state.set_stored(stored);
                        }
                    }
                    Err(why) => {
                        shared.set_unavailable(Some(why));
                        ready = false;
                    }
                }
            }
        }
        let wait = if ready {
            REFRESH_INTERVAL
        } else {
            let wait = backoff;
            backoff = (backoff * 2).min(BACKOFF_MAX);
            wait
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = shared.state.expected_changed.notified(), if ready => {}
        }
    }
}

/// The topic's partition count, `None` when it does not exist; an error when the cluster does
/// not answer.
async fn partitions(metadata: &Arc<BaseConsumer>, topic: &str) -> Result<Option<usize>, String> {
    let client = Arc::clone(metadata);
    let topic_name = topic.to_owned();
    let fetched = tokio::task::spawn_blocking(move || {
        client.fetch_metadata(Some(&topic_name), REQUEST_TIMEOUT)
    })
    .await
    .map_err(|e| e.to_string())?;
    let metadata = fetched.map_err(|e| format!("cannot reach Kafka: {e}"))?;
    let Some(t) = metadata.topics().iter().find(|t| t.name() == topic) else {
        return Ok(None);
    };
    match t.error() {
        None => Ok(Some(t.partitions().len()).filter(|n| *n > 0)),
        Some(code) if RDKafkaErrorCode::from(code) == RDKafkaErrorCode::UnknownTopicOrPartition => {
            Ok(None)
        }
        Some(code) => Err(format!("topic {topic}: {}", RDKafkaErrorCode::from(code))),
    }
}

async fn create_topic(
    admin: &AdminClient<DefaultClientContext>,
    config: &KafkaConfig,
) -> Result<(), String> {
    let retention = config.retention_ms.map(|ms| ms.to_string());
    let mut topic = NewTopic::new(
        &config.topic,
        i32::try_from(config.partitions).unwrap_or(i32::MAX),
        TopicReplication::Fixed(i32::from(config.replication_factor)),
    );
    if let Some(ms) = &retention {
        topic = topic.set("retention.ms", ms);
    }
    let options = AdminOptions::new().operation_timeout(Some(REQUEST_TIMEOUT));
    let results = admin
        .create_topics([&topic], &options)
        .await
        .map_err(|e| format!("creating topic {}: {e}", config.topic))?;
    for result in results {
        match result {
            Ok(_) => {
                tracing::info!(topic = %config.topic, partitions = config.partitions, "Created Kafka topic.")
            }
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((_, code)) => return Err(format!("creating topic {}: {code}", config.topic)),
        }
    }
    Ok(())
}

/// Records retained: the sum over partitions of high minus low watermark.
async fn stored(
    metadata: &Arc<BaseConsumer>,
    topic: &str,
    partitions: usize,
) -> Result<u64, String> {
    let client = Arc::clone(metadata);
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut total = 0u64;
        for p in 0..partitions {
            let (low, high) = client
                .fetch_watermarks(
                    &topic,
                    i32::try_from(p).unwrap_or(i32::MAX),
                    REQUEST_TIMEOUT,
                )
                .map_err(|e| e.to_string())?;
            total += u64::try_from(high - low).unwrap_or(0);
        }
        Ok(total)
    })
    .await
    .map_err(|e| e.to_string())?
}

/// Gives each expected group without committed offsets a start at the current end of every
/// partition, so it sees everything stored from now on.
async fn ensure_groups(shared: &Arc<Shared>) -> Result<(), String> {
    for (group, _) in shared.state.missing() {
        start_group(&shared.config, &group).await?;
        shared.state.mark_created(&group);
    }
    Ok(())
}

async fn start_group(config: &KafkaConfig, group: &str) -> Result<(), String> {
    let (config, group) = (config.clone(), group.to_owned());
    tokio::task::spawn_blocking(move || subscription::start_group_at_end(&config, &group))
        .await
        .map_err(|e| e.to_string())?
}

#[async_trait]
impl Broker for KafkaBroker {
    fn backend(&self) -> &'static str {
        "kafka"
    }

    async fn append_batch(&self, batch: EventBatch) -> Result<(), BrokerError> {
        if let Some(reason) = self.shared.state.unavailable() {
            return Err(BrokerError::Unavailable(reason));
        }
        let topic = &self.shared.config.topic;
        // Encoded and checked before anything is produced: an event over the producer's
        // message.max.bytes never leaves part of its batch written.
        let mut encoded = Vec::with_capacity(batch.len());
        for record in batch.records() {
            let event = CloudEvent::decode_storage(record)?;
            let (pairs, payload) = binding::encode(&event, Transport::Kafka);
            let size = payload.len()
                + pairs
                    .iter()
                    .map(|(k, v)| k.len() + v.len() + 8)
                    .sum::<usize>();
            if size + 256 > MAX_MESSAGE_BYTES {
                return Err(BrokerError::TooLarge {
                    backend: "kafka",
                    size,
                    limit: MAX_MESSAGE_BYTES,
                });
            }
            encoded.push((event, pairs, payload));
        }
        let mut reports = Vec::with_capacity(encoded.len());
        for (event, pairs, payload) in &encoded {
            let mut headers = OwnedHeaders::new_with_capacity(pairs.len());
            for (name, value) in pairs {
                headers = headers.insert(Header {
                    key: name,
                    value: Some(value.as_bytes()),
                });
            }
            let key = event.attribute("partitionkey").map(|k| k.into_owned());
            let mut record = FutureRecord::to(topic)
                .payload(payload.as_ref())
                .headers(headers);
            if let Some(key) = &key {
                record = record.key(key.as_bytes());
            }
            let Some(producer) = &self.producer else {
                return Err(BrokerError::Closed);
            };
            match producer.send_result(record) {
                Ok(report) => reports.push(report),
                Err((error, _)) => {
                    return Err(BrokerError::Unavailable(format!(
                        "producing to Kafka topic {topic}: {error}"
                    )));
                }
            }
        }
        for report in reports {
            match report.await {
                Ok(Ok(_)) => {}
                Ok(Err((error, _))) => {
                    return Err(BrokerError::Unavailable(format!(
                        "Kafka did not acknowledge a record on {topic}: {error}"
                    )));
                }
                Err(_) => return Err(BrokerError::Closed),
            }
        }
        Ok(())
    }

    async fn subscribe(
        &self,
        subscription: &str,
        options: &SubscribeOptions,
    ) -> Result<Box<dyn Subscription>, BrokerError> {
        if let Some(reason) = self.shared.state.unavailable() {
            return Err(BrokerError::Unavailable(reason));
        }
        let group = group_id(subscription);
        // A group that joins before it has offsets would start wherever auto.offset.reset says.
        start_group(&self.shared.config, &group)
            .await
            .map_err(BrokerError::Unavailable)?;
        self.shared.state.mark_created(&group);
        let backlog = self.shared.state.backlog(&group);
        let sub = subscription::KafkaSubscription::open(
            &self.shared.config,
            &group,
            options,
            &self.shared.source,
            backlog,
        )?;
        Ok(Box::new(sub))
    }

    fn expect_subscriptions(&self, subscriptions: &[(String, SubscribeOptions)]) {
        // A group's start does not depend on how it is consumed.
        self.shared.state.expect(
            subscriptions
                .iter()
                .map(|(subscription, _)| (group_id(subscription), SubscribeOptions::default())),
        );
    }

    async fn remove_subscription(&self, subscription: &str) -> Result<(), BrokerError> {
        let group = group_id(subscription);
        self.shared.state.forget(&group);
        let admin: AdminClient<DefaultClientContext> = client_config(&self.shared.config)
            .create()
            .map_err(|e| BrokerError::Unavailable(e.to_string()))?;
        // The stopping worker may still be a member for a moment (NON_EMPTY_GROUP): retry in
        // the background for about a minute.
        tokio::spawn(async move {
            let options = AdminOptions::new().operation_timeout(Some(REQUEST_TIMEOUT));
            for attempt in 1..=10u32 {
                let deleted = match admin.delete_groups(&[group.as_str()], &options).await {
                    Ok(results) => results
                        .iter()
                        .all(|r| matches!(r, Ok(_) | Err((_, RDKafkaErrorCode::GroupIdNotFound)))),
                    Err(_) => false,
                };
                if deleted {
                    break;
                }
                if attempt == 10 {
                    tracing::warn!(%group, "Could not delete the consumer group of a removed Trigger.");
                }
                tokio::time::sleep(Duration::from_secs(u64::from(attempt))).await;
            }
            // Dropping an admin client joins its thread: off the async workers.
            tokio::task::spawn_blocking(move || drop(admin));
        });
        Ok(())
    }

    fn stored(&self) -> u64 {
        self.shared.state.stored()
    }

    fn pending(&self, subscription: &str) -> u64 {
        self.shared.state.pending(&group_id(subscription))
    }

    fn unavailable(&self) -> Option<String> {
        self.shared.state.unavailable()
    }

    fn location(&self) -> Vec<(&'static str, String)> {
        vec![("topic", self.shared.config.topic.clone())]
    }
}

#[cfg(test)]
mod tests;
