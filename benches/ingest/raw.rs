//! Raw client references: the same binary-mode CloudEvent records published and consumed with
//! async-nats (JetStream publish acks, durable pull consumer, explicit acks) and rdkafka
//! (acks=all idempotent produce, consumer group) without tidegate. Rates in records/s.

use std::time::Duration;

use anyhow::Context as _;
use futures::StreamExt as _;
use tokio::time::Instant;

const PAYLOAD: &[u8] = br#"{"payload":"0123456789abcdef0123456789abcdef"}"#;
/// Publish acks awaited in windows of this many (pipelined like tidegate's batches).
const WINDOW: usize = 256;

fn headers(n: usize) -> [(&'static str, String); 5] {
    [
        ("ce-specversion", "1.0".to_owned()),
        ("ce-id", n.to_string()),
        ("ce-source", "bench".to_owned()),
        ("ce-type", "dev.tidegate.bench".to_owned()),
        ("content-type", "application/json".to_owned()),
    ]
}

/// JetStream: publish `events` to a fresh file stream, then consume and ack them all.
pub async fn nats(url: &str, events: usize) -> anyhow::Result<(f64, f64)> {
    use async_nats::jetstream::{self, consumer::pull, stream};
    let client = async_nats::connect(url).await?;
    let js = jetstream::new(client);
    let stream = js
        .create_stream(stream::Config {
            name: "bench-raw".into(),
            subjects: vec!["bench.raw.>".into()],
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await?;
    let started = Instant::now();
    let mut pending = Vec::with_capacity(WINDOW);
    for n in 0..events {
        let mut map = async_nats::HeaderMap::new();
        for (k, v) in headers(n) {
            map.insert(k, v.as_str());
        }
        map.insert("Nats-Msg-Id", format!("bench:{n}").as_str());
        pending.push(
            js.publish_with_headers("bench.raw.events", map, PAYLOAD.into())
                .await?,
        );
        if pending.len() == WINDOW {
            for ack in pending.drain(..) {
                ack.await?;
            }
        }
    }
    for ack in pending {
        ack.await?;
    }
    let publish = events as f64 / started.elapsed().as_secs_f64();
    let consumer = stream
        .create_consumer(pull::Config {
            durable_name: Some("bench".into()),
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            max_ack_pending: 1000,
            ..Default::default()
        })
        .await?;
    let started = Instant::now();
    let mut messages = consumer.messages().await?;
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut got = 0;
    while got < events {
        anyhow::ensure!(
            Instant::now() < deadline,
            "raw NATS consume stalled at {got}"
        );
        let message = messages.next().await.context("stream ended")??;
        message.ack().await.map_err(|e| anyhow::anyhow!("{e}"))?;
        got += 1;
    }
    Ok((publish, events as f64 / started.elapsed().as_secs_f64()))
}

/// Kafka: produce `events` with acks=all and idempotence, then consume them in a group
/// (`create`: create the topic first, 10 partitions, as tidegate does).
pub async fn kafka(
    bootstrap: &str,
    topic: &str,
    events: usize,
    create: bool,
) -> anyhow::Result<(f64, f64)> {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::consumer::{Consumer as _, StreamConsumer};
    if create {
        let admin: AdminClient<rdkafka::client::DefaultClientContext> =
            rdkafka::ClientConfig::new()
                .set("bootstrap.servers", bootstrap)
                .create()?;
        admin
            .create_topics(
                [&NewTopic::new(topic, 10, TopicReplication::Fixed(1))],
                &AdminOptions::new(),
            )
            .await?;
    }
    use rdkafka::message::{Header, OwnedHeaders};
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", "1")
        .create()?;
    let started = Instant::now();
    let mut pending = Vec::with_capacity(WINDOW);
    for n in 0..events {
        let mut owned = OwnedHeaders::new();
        for (k, v) in headers(n) {
            let key = k.replace("ce-", "ce_");
            owned = owned.insert(Header {
                key: &key,
                value: Some(v.as_bytes()),
            });
        }
        let key = format!("k{}", n % 64);
        let record = FutureRecord::to(topic)
            .key(&key)
            .payload(PAYLOAD)
            .headers(owned);
        pending.push(
            producer
                .send_result(record)
                .map_err(|(e, _)| anyhow::anyhow!("{e}"))?,
        );
        if pending.len() == WINDOW {
            for report in pending.drain(..) {
                report.await?.map_err(|(e, _)| anyhow::anyhow!("{e}"))?;
            }
        }
    }
    for report in pending {
        report.await?.map_err(|(e, _)| anyhow::anyhow!("{e}"))?;
    }
    let publish = events as f64 / started.elapsed().as_secs_f64();
    let consumer: StreamConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "bench-raw")
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "true")
        .create()?;
    consumer.subscribe(&[topic])?;
    // The first record waits for the group join; time the rest from the first arrival.
    let deadline = Instant::now() + Duration::from_secs(120);
    let _first = tokio::time::timeout(Duration::from_secs(60), consumer.recv()).await??;
    let started = Instant::now();
    for got in 1..events {
        anyhow::ensure!(
            Instant::now() < deadline,
            "raw Kafka consume stalled at {got}"
        );
        consumer.recv().await?;
    }
    Ok((
        publish,
        (events - 1) as f64 / started.elapsed().as_secs_f64(),
    ))
}
