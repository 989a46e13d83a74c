//! A durable pull consumer as a [`Subscription`]; acks and in-progress signals from one task.

use std::collections::HashMap;
use std::sync::Arc;

use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
use async_nats::jetstream::message::{AckKind, Acker as JsAcker};
use async_nats::jetstream::{self};
use async_trait::async_trait;
use futures::StreamExt as _;
use tokio::sync::mpsc;

use super::{ACK_WAIT, PROGRESS_INTERVAL};
use crate::binding::{self, Transport};
use crate::broker::{AckHandler, Acker, BrokerError, Delivery, SubscribeOptions, Subscription};
use crate::config::NatsConfig;

pub(super) struct NatsSubscription {
    messages: pull::Stream,
    acks: Arc<AckSender>,
    source: String,
}

/// What the ack task hears, in order: a delivery handed out, then its ack.
enum AckEvent {
    Held(u64, Box<JsAcker>),
    Done(u64),
}

struct AckSender(mpsc::UnboundedSender<AckEvent>);

impl AckHandler for AckSender {
    fn ack(&self, offset: u64) {
        let _ = self.0.send(AckEvent::Done(offset));
    }
}

/// The durable pull consumer `name`, created (delivering what is stored from now on) when
/// missing; an existing one keeps its position and gets the wanted limits.
pub(super) async fn ensure_consumer(
    context: &jetstream::Context,
    config: &NatsConfig,
    name: &str,
    options: &SubscribeOptions,
) -> Result<jetstream::consumer::Consumer<pull::Config>, BrokerError> {
    let unavailable = |what: &str, e: &dyn std::fmt::Display| {
        BrokerError::Unavailable(format!(
            "{what} consumer {name} on stream {}: {e}",
            config.stream
        ))
    };
    let stream = context
        .get_stream_no_info(&config.stream)
        .await
        .map_err(|e| unavailable("opening", &e))?;
    let max_ack_pending = i64::try_from(options.max_in_flight.max(1)).unwrap_or(i64::MAX);
    let wanted = pull::Config {
        durable_name: Some(name.to_owned()),
        deliver_policy: DeliverPolicy::New,
        ack_policy: AckPolicy::Explicit,
        ack_wait: ACK_WAIT,
        max_deliver: -1,
        filter_subject: config.stream_subjects(),
        max_ack_pending,
        ..Default::default()
    };
    match stream.get_consumer::<pull::Config>(name).await {
        Ok(mut existing) => {
            let info = existing
                .info()
                .await
                .map_err(|e| unavailable("reading", &e))?;
            if info.config.max_ack_pending == max_ack_pending && info.config.ack_wait == ACK_WAIT {
                return Ok(existing);
            }
            // Keeps the consumer's position; only the limits change.
            let updated = pull::Config {
                deliver_policy: info.config.deliver_policy,
                ..wanted
            };
            context
                .update_consumer_on_stream(updated, &config.stream)
                .await
                .map_err(|e| unavailable("updating", &e))?;
            stream
                .get_consumer(name)
                .await
                .map_err(|e| unavailable("opening", &e))
        }
        Err(_) => stream
            .create_consumer(wanted)
            .await
            .map_err(|e| unavailable("creating", &e)),
    }
}

pub(super) async fn open(
    context: &jetstream::Context,
    config: &NatsConfig,
    name: &str,
    options: &SubscribeOptions,
    source: &str,
) -> Result<NatsSubscription, BrokerError> {
    let consumer = ensure_consumer(context, config, name, options).await?;
    let messages = consumer
        .stream()
        .max_messages_per_batch(options.max_in_flight.clamp(1, 1000))
        .heartbeat(std::time::Duration::from_secs(5))
        .expires(std::time::Duration::from_secs(30))
        .messages()
        .await
        .map_err(|e| {
            BrokerError::Unavailable(format!(
                "pulling from consumer {name} on stream {}: {e}",
                config.stream
            ))
        })?;
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(ack_task(rx));
    Ok(NatsSubscription {
        messages,
        acks: Arc::new(AckSender(tx)),
        source: source.to_owned(),
    })
}

/// Acks settled deliveries, marks held ones in progress every [`PROGRESS_INTERVAL`], and when
/// every handle is gone NAKs what was never settled so it is redelivered at once.
async fn ack_task(mut rx: mpsc::UnboundedReceiver<AckEvent>) {
    let mut held: HashMap<u64, Box<JsAcker>> = HashMap::new();
    let mut progress = tokio::time::interval(PROGRESS_INTERVAL);
    progress.tick().await;
    loop {
        tokio::select! {
            event = rx.recv() => match event {
                Some(AckEvent::Held(seq, acker)) => {
                    held.insert(seq, acker);
                }
                Some(AckEvent::Done(seq)) => {
                    if let Some(acker) = held.remove(&seq)
                        && let Err(error) = acker.ack().await
                    {
                        tracing::warn!(%error, seq, "NATS ack failed; the message will be redelivered.");
                    }
                }
                None => break,
            },
            _ = progress.tick() => {
                for acker in held.values() {
                    let _ = acker.ack_with(AckKind::Progress).await;
                }
            }
        }
    }
    for acker in held.into_values() {
        let _ = acker.ack_with(AckKind::Nak(None)).await;
    }
}

#[async_trait]
impl Subscription for NatsSubscription {
    async fn next(&mut self) -> Option<Result<Delivery, BrokerError>> {
        // The pull stream ends only when its consumer is gone: an error, so the caller reopens.
        let Some(next) = self.messages.next().await else {
            return Some(Err(BrokerError::Unavailable(
                "the JetStream pull stream ended".into(),
            )));
        };
        let message = match next {
            Ok(message) => message,
            Err(error) => {
                return Some(Err(BrokerError::Unavailable(format!(
                    "pulling from NATS: {error}"
                ))));
            }
        };
        let (seq, delivered) = match message.info() {
            Ok(info) => (info.stream_sequence, info.delivered),
            Err(error) => {
                return Some(Err(BrokerError::Unavailable(format!(
                    "NATS message without JetStream metadata: {error}"
                ))));
            }
        };
        let (message, js_acker) = message.split();
        let _ = self.acks.0.send(AckEvent::Held(seq, Box::new(js_acker)));
        let acker = Acker::new(seq, Arc::clone(&self.acks) as Arc<dyn AckHandler>);
        let headers: Vec<(&str, &[u8])> = message
            .headers
            .iter()
            .flat_map(|h| h.iter())
            .flat_map(|(name, values)| {
                values
                    .iter()
                    .map(move |v| (name.as_ref(), v.as_str().as_bytes()))
            })
            .collect();
        let payload = message.payload.clone();
        Some(Ok(
            match binding::decode(headers, payload.clone(), Transport::Nats) {
                Ok(event) => Delivery {
                    offset: seq,
                    event,
                    redelivered: delivered > 1,
                    invalid: None,
                    acker,
                },
                Err(error) => Delivery::invalid_record(seq, &self.source, payload, &error, acker),
            },
        ))
    }
}
