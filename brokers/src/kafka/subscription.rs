//! A consumer group member as a [`Subscription`]: manual commits over the contiguous settled
//! prefix of each partition.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};

use super::{REQUEST_TIMEOUT, client_config};
use crate::binding::{self, Transport};
use crate::broker::{AckHandler, Acker, BrokerError, Delivery, SubscribeOptions, Subscription};
use crate::config::KafkaConfig;
use crate::event::AttrValue;
use crate::remote::lock;

/// How often settled prefixes are committed.
const COMMIT_INTERVAL: Duration = Duration::from_millis(500);
/// How often the group's lag is read.
const LAG_INTERVAL: Duration = Duration::from_secs(1);

/// Where one partition stands in this member.
struct Partition {
    /// Offsets handed out and not settled.
    outstanding: BTreeSet<i64>,
    /// One past the highest offset handed out.
    next: i64,
    /// The offset last committed (the next record the group would read).
    committed: i64,
    /// Assignment this state belongs to; acks of an older one are ignored.
    generation: u64,
}

impl Partition {
    /// The group may move to here: everything below is settled.
    fn commit_point(&self) -> i64 {
        self.outstanding.first().copied().unwrap_or(self.next)
    }
}

#[derive(Default)]
struct Track {
    partitions: HashMap<i32, Partition>,
    /// Delivery number → (partition, offset, generation).
    deliveries: HashMap<u64, (i32, i64, u64)>,
    next_delivery: u64,
    generation: u64,
}

/// Settled-offset bookkeeping shared by the subscription, its ackers and the rebalance hooks.
pub(super) struct Tracker {
    topic: String,
    track: Mutex<Track>,
}

impl Tracker {
    fn handed_out(&self, partition: i32, offset: i64) -> u64 {
        let mut t = lock(&self.track);
        let generation = t.generation;
        let p = t.partitions.entry(partition).or_insert_with(|| Partition {
            outstanding: BTreeSet::new(),
            next: offset,
            committed: offset,
            generation,
        });
        p.outstanding.insert(offset);
        p.next = p.next.max(offset + 1);
        let generation = p.generation;
        let n = t.next_delivery;
        t.next_delivery += 1;
        t.deliveries.insert(n, (partition, offset, generation));
        n
    }

    /// Partitions whose settled prefix is past their last confirmed commit. They stay in the
    /// next list until the commit callback confirms them, so a failed commit is sent again.
    fn commits(&self, only: Option<&[i32]>) -> TopicPartitionList {
        let mut list = TopicPartitionList::new();
        let t = lock(&self.track);
        for (partition, p) in &t.partitions {
            if only.is_some_and(|o| !o.contains(partition)) {
                continue;
            }
            let point = p.commit_point();
            if point > p.committed {
                let _ = list.add_partition_offset(&self.topic, *partition, Offset::Offset(point));
            }
        }
        list
    }

    /// The cluster confirmed these offsets.
    fn confirmed(&self, offsets: &TopicPartitionList) {
        let mut t = lock(&self.track);
        for element in offsets.elements_for_topic(&self.topic) {
            if let (Offset::Offset(o), Some(p)) =
                (element.offset(), t.partitions.get_mut(&element.partition()))
            {
                p.committed = p.committed.max(o);
            }
        }
    }

    /// Forgets revoked partitions (after their prefix was committed).
    fn revoke(&self, partitions: &[i32]) {
        let mut t = lock(&self.track);
        t.generation += 1;
        for p in partitions {
            t.partitions.remove(p);
        }
    }
}

impl AckHandler for Tracker {
    fn ack(&self, delivery: u64) {
        let mut t = lock(&self.track);
        if let Some((partition, offset, generation)) = t.deliveries.remove(&delivery)
            && let Some(p) = t.partitions.get_mut(&partition)
            && p.generation == generation
        {
            p.outstanding.remove(&offset);
        }
    }
}

/// Commits the settled prefix of partitions before they are taken away.
pub(super) struct TrackingContext {
    tracker: Arc<Tracker>,
}

impl ClientContext for TrackingContext {}

impl ConsumerContext for TrackingContext {
    /// Runs inside the consumer's poll (an async worker), so the commit is asynchronous:
    /// librdkafka sends it to the coordinator before the rebalance completes.
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(list) = rebalance {
            let revoked: Vec<i32> = list.elements().iter().map(|e| e.partition()).collect();
            let commits = self.tracker.commits(Some(&revoked));
            if commits.count() > 0
                && let Err(error) = consumer.commit(&commits, CommitMode::Async)
            {
                tracing::warn!(%error, "Committing revoked partitions failed; their settled records will be redelivered.");
            }
            self.tracker.revoke(&revoked);
        }
    }

    fn commit_callback(
        &self,
        result: rdkafka::error::KafkaResult<()>,
        offsets: &TopicPartitionList,
    ) {
        match result {
            Ok(()) => self.tracker.confirmed(offsets),
            Err(error) => {
                tracing::debug!(%error, "Kafka commit failed; sent again with the next round.");
            }
        }
    }
}

pub(super) struct KafkaSubscription {
    consumer: Arc<StreamConsumer<TrackingContext>>,
    tracker: Arc<Tracker>,
    source: String,
    backlog: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for KafkaSubscription {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        self.backlog.store(0, Ordering::Relaxed);
        // A last commit of what settled (what did not is redelivered to the next member), then
        // the consumer's close — which blocks while it leaves the group — on the blocking pool.
        let commits = self.tracker.commits(None);
        if commits.count() > 0 {
            let _ = self.consumer.commit(&commits, CommitMode::Async);
        }
        let consumer = Arc::clone(&self.consumer);
        let close = move || {
            // The aborted tasks release their handles shortly; wait (bounded) to be the last.
            for _ in 0..500 {
                if Arc::strong_count(&consumer) <= 1 {
                    break;
                }
                #[allow(clippy::disallowed_methods)] // on the blocking pool, not a worker
                std::thread::sleep(Duration::from_millis(10));
            }
            drop(consumer);
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn_blocking(close);
            }
            Err(_) => close(),
        }
    }
}

impl KafkaSubscription {
    pub(super) fn open(
        config: &KafkaConfig,
        group: &str,
        _options: &SubscribeOptions,
        source: &str,
        backlog: Arc<AtomicU64>,
    ) -> Result<KafkaSubscription, BrokerError> {
        let tracker = Arc::new(Tracker {
            topic: config.topic.clone(),
            track: Mutex::new(Track::default()),
        });
        let consumer: StreamConsumer<TrackingContext> = client_config(config)
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", "10000")
            .set("enable.partition.eof", "false")
            // librdkafka waits up to 500 ms for data per fetch by default: an event gateway
            // wants deliveries in milliseconds (at the cost of more fetch requests when idle).
            .set("fetch.wait.max.ms", "10")
            // librdkafka prefetches up to 64 MiB per consumer by default; under a large lag that
            // is per Trigger (Knative's Kafka broker ran out of memory this way). 4 MiB keeps
            // memory flat and still fills the dispatcher's in-flight cap.
            .set("queued.max.messages.kbytes", "4096")
            .create_with_context(TrackingContext {
                tracker: Arc::clone(&tracker),
            })
            .map_err(|e| BrokerError::Unavailable(format!("creating the Kafka consumer: {e}")))?;
        consumer.subscribe(&[&config.topic]).map_err(|e| {
            BrokerError::Unavailable(format!("subscribing to {}: {e}", config.topic))
        })?;
        let consumer = Arc::new(consumer);
        let committer = {
            let (consumer, tracker) = (Arc::clone(&consumer), Arc::clone(&tracker));
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(COMMIT_INTERVAL);
                loop {
                    tick.tick().await;
                    let commits = tracker.commits(None);
                    if commits.count() > 0
                        && let Err(error) = consumer.commit(&commits, CommitMode::Async)
                    {
                        tracing::debug!(%error, "Kafka commit failed; retried with the next one.");
                    }
                }
            })
        };
        let lag = {
            let consumer = Arc::clone(&consumer);
            let topic = config.topic.clone();
            let backlog = Arc::clone(&backlog);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(LAG_INTERVAL);
                loop {
                    tick.tick().await;
                    let (consumer, topic) = (Arc::clone(&consumer), topic.clone());
                    if let Ok(lag) =
                        tokio::task::spawn_blocking(move || group_lag(&*consumer, &topic)).await
                    {
                        // Nothing assigned here: another member reports those partitions.
                        backlog.store(lag.unwrap_or(0), Ordering::Relaxed);
                    }
                }
            })
        };
        Ok(KafkaSubscription {
            consumer,
            tracker,
            source: source.to_owned(),
            backlog,
            tasks: vec![committer, lag],
        })
    }
}

/// The group's lag over the partitions assigned here: high watermark minus committed offset.
/// `None` while nothing is assigned yet.
fn group_lag<C: ConsumerContext>(consumer: &impl Consumer<C>, topic: &str) -> Option<u64> {
    let assignment = consumer.assignment().ok()?;
    if assignment.count() == 0 {
        return None;
    }
    let committed = consumer.committed(REQUEST_TIMEOUT).ok()?;
    let mut lag = 0u64;
    for element in committed.elements_for_topic(topic) {
        let (low, high) = consumer
            .fetch_watermarks(topic, element.partition(), REQUEST_TIMEOUT)
            .ok()?;
        let from = match element.offset() {
            Offset::Offset(o) => o,
            _ => low,
        };
        lag += u64::try_from(high - from).unwrap_or(0);
    }
    Some(lag)
}

/// Commits, for a group that has no offsets yet, the current end of every partition: the group
/// then sees everything stored from now on, even records written before its first member joins.
/// Blocking: call it on the blocking pool.
pub(super) fn start_group_at_end(config: &KafkaConfig, group: &str) -> Result<(), String> {
    let consumer: BaseConsumer = client_config(config)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .map_err(|e| format!("creating a consumer for group {group}: {e}"))?;
    let metadata = &consumer;
    let partitions = consumer
        .fetch_metadata(Some(&config.topic), REQUEST_TIMEOUT)
        .map_err(|e| format!("cannot reach Kafka: {e}"))?
        .topics()
        .iter()
        .find(|t| t.name() == config.topic)
        .map_or(0, |t| t.partitions().len());
    let mut all = TopicPartitionList::new();
    for p in 0..partitions {
        all.add_partition(&config.topic, i32::try_from(p).unwrap_or(i32::MAX));
    }
    let committed = consumer
        .committed_offsets(all, REQUEST_TIMEOUT)
        .map_err(|e| format!("reading the offsets of group {group}: {e}"))?;
    let mut start = TopicPartitionList::new();
    for element in committed.elements() {
        if matches!(element.offset(), Offset::Offset(_)) {
            continue;
        }
        let (_, high) = metadata
            .fetch_watermarks(&config.topic, element.partition(), REQUEST_TIMEOUT)
            .map_err(|e| format!("reading the end of {}: {e}", config.topic))?;
        start
            .add_partition_offset(&config.topic, element.partition(), Offset::Offset(high))
            .map_err(|e| e.to_string())?;
    }
    if start.count() > 0
        && let Err(error) = consumer.commit(&start, CommitMode::Sync)
    {
        // A group with live members owns its offsets (and then had its start already).
        tracing::debug!(%error, group, "Could not set the group's start offsets; it keeps its own.");
    }
    Ok(())
}

#[async_trait]
impl Subscription for KafkaSubscription {
    async fn next(&mut self) -> Option<Result<Delivery, BrokerError>> {
        let message = loop {
            match self.consumer.recv().await {
                Ok(message) => break message,
                // librdkafka recovers from transport errors and broker outages by itself; only a
                // fatal error makes this consumer unusable (the caller then reopens it).
                Err(rdkafka::error::KafkaError::MessageConsumptionFatal(code)) => {
                    return Some(Err(BrokerError::Unavailable(format!(
                        "consuming from Kafka: fatal error {code}"
                    ))));
                }
                Err(error) => {
                    tracing::debug!(%error, "Kafka consumer error; librdkafka retries.");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        };
        let (partition, offset) = (message.partition(), message.offset());
        let headers: Vec<(&str, &[u8])> = message
            .headers()
            .map(|h| {
                h.iter()
                    .filter_map(|header| header.value.map(|v| (header.key, v)))
                    .collect()
            })
            .unwrap_or_default();
        let payload = Bytes::copy_from_slice(message.payload().unwrap_or_default());
        let key = message
            .key()
            .and_then(|k| std::str::from_utf8(k).ok())
            .map(str::to_owned);
        let decoded = binding::decode(headers, payload.clone(), Transport::Kafka);
        let n = self.tracker.handed_out(partition, offset);
        let acker = Acker::new(n, Arc::clone(&self.tracker) as Arc<dyn AckHandler>);
        Some(Ok(match decoded {
            Ok(mut event) => {
                // The record key is the binding's partition key.
                if let Some(key) = key
                    && event.attribute("partitionkey").is_none()
                {
                    let _ = event.set_attribute("partitionkey", AttrValue::String(key));
                }
                Delivery {
                    offset: n,
                    event,
                    redelivered: false,
                    invalid: None,
                    acker,
                }
            }
            Err(error) => Delivery::invalid_record(n, &self.source, payload, &error, acker),
        }))
    }
}
