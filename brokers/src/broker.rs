//! The backend-neutral broker interface: durable append, durable named subscriptions, acks.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;

use crate::event::{CloudEvent, EventBatch, EventError};

/// A durable event log of one Knative Broker, with named durable subscriptions (one per
/// Trigger).
#[async_trait]
pub trait Broker: Send + Sync + 'static {
    /// The backend's name, e.g. `"embedded"`.
    fn backend(&self) -> &'static str;

    /// Durably stores all events of the batch atomically; returns only after they are fsynced.
    async fn append_batch(&self, batch: EventBatch) -> Result<(), BrokerError>;

    /// Durably stores all events atomically (validating each); returns only after they are
    /// fsynced.
    async fn append(&self, events: Vec<CloudEvent>) -> Result<(), BrokerError> {
        self.append_batch(EventBatch::from_events(&events)?).await
    }

    /// Opens the named durable subscription (`{namespace}/{trigger}`). A new one starts after
    /// the current last event; an existing one resumes at its persisted cursor (everything not
    /// acked is redelivered). Fails with [`BrokerError::Unavailable`] while the backend cannot be
    /// reached; the caller retries.
    async fn subscribe(
        &self,
        subscription: &str,
        options: &SubscribeOptions,
    ) -> Result<Box<dyn Subscription>, BrokerError>;

    /// Declares the subscriptions this Broker must have, before any event is accepted for them:
    /// a backend that creates them lazily (NATS consumers) creates the missing ones before it
    /// reports ready, so an event stored while a Trigger exists is never skipped because its
    /// subscription did not exist yet. Cheap, never blocks; the default does nothing (the
    /// embedded log creates a subscription on [`Broker::subscribe`], at start-up before ingress
    /// serves).
    fn expect_subscriptions(&self, subscriptions: &[(String, SubscribeOptions)]) {
        let _ = subscriptions;
    }

    /// Deletes the subscription and its cursor; events only it still needed are reclaimed.
    async fn remove_subscription(&self, subscription: &str) -> Result<(), BrokerError>;

    /// Events currently retained.
    ///
    /// Never a call to the server: the embedded log counts exactly, NATS and Kafka serve the
    /// value their refresh task last read (at most about a second old; 0 before the first).
    fn stored(&self) -> u64;

    /// Events appended but not yet acked by this subscription (0 for an unknown one): the
    /// subscription's backlog. Like [`Broker::stored`], a kept value: exact on the embedded
    /// log; JetStream's `num_pending + num_ack_pending` and Kafka's consumer lag summed over
    /// partitions as last refreshed (about once a second) for a subscription open in this
    /// process.
    fn pending(&self, subscription: &str) -> u64;

    /// Where the backend keeps this Broker's events, for the admin API: e.g.
    /// `[("stream", "default-default"), ("subject", "tidegate.default.default.>")]`.
    fn location(&self) -> Vec<(&'static str, String)> {
        Vec::new()
    }

    /// Why the backend cannot store events right now (disk full, I/O failure, reconnecting),
    /// or `None` when it can. Cheap: a value the backend keeps, never a call to storage.
    fn unavailable(&self) -> Option<String> {
        None
    }
}

/// How a subscription will be consumed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubscribeOptions {
    /// Most deliveries the caller holds unacknowledged at once (JetStream `MaxAckPending`).
    pub max_in_flight: usize,
}

impl Default for SubscribeOptions {
    fn default() -> Self {
        SubscribeOptions { max_in_flight: 100 }
    }
}

/// A stream of deliveries for one subscription.
#[async_trait]
pub trait Subscription: Send {
    /// The next event, waiting for new ones when caught up; `None` once the broker is closed.
    async fn next(&mut self) -> Option<Result<Delivery, BrokerError>>;
}

/// One event handed to a subscriber.
#[derive(Debug)]
pub struct Delivery {
    /// Position in the broker's log; increases with every appended event.
    pub offset: u64,
    pub event: CloudEvent,
    /// True when this offset was handed out before (before a restart, or to an earlier
    /// subscription handle) as far as the backend can tell; false otherwise.
    pub redelivered: bool,
    /// Set when the stored record is not a valid CloudEvent (written straight to the topic or
    /// subject by another producer): why, as `(kind, detail)`. `event` then wraps the raw record
    /// (type [`INVALID_RECORD_TYPE`], the payload as data) for the dead-letter sink; it must not
    /// reach the subscriber. Ack it like any other delivery so it never blocks its partition.
    pub invalid: Option<(&'static str, String)>,
    pub acker: Acker,
}

/// The `type` of the event that wraps a record which is not a valid CloudEvent.
pub const INVALID_RECORD_TYPE: &str = "dev.tidegate.invalid-record";

impl Delivery {
    /// A delivery for a record that failed to decode: `event` wraps the raw payload.
    pub fn invalid_record(
        offset: u64,
        source: &str,
        payload: bytes::Bytes,
        error: &crate::event::EventError,
        acker: Acker,
    ) -> Delivery {
        let mut event = CloudEvent::new(
            crate::event::SpecVersion::V10,
            format!("invalid-{offset}"),
            source,
            INVALID_RECORD_TYPE,
        );
        let _ = event.set_data(Some("application/octet-stream".into()), payload);
        Delivery {
            offset,
            event,
            redelivered: false,
            invalid: Some((crate::binding::invalid_kind(error), error.to_string())),
            acker,
        }
    }
}

/// Acknowledges one delivery. Dropping it without [`Acker::ack`] means "not done": the event is
/// redelivered after a restart (or a new [`Broker::subscribe`]).
pub struct Acker {
    offset: u64,
    handler: Arc<dyn AckHandler>,
}

/// The backend side of [`Acker`].
pub trait AckHandler: Send + Sync {
    /// Records that `offset` is done. Must be cheap and must not block.
    fn ack(&self, offset: u64);
}

impl Acker {
    /// An acker for `offset` that reports to `handler` (for backends).
    pub fn new(offset: u64, handler: Arc<dyn AckHandler>) -> Acker {
        Acker { offset, handler }
    }

    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Marks the delivery done; cheap and non-blocking. Persisted with a later commit.
    pub fn ack(self) {
        self.handler.ack(self.offset);
    }
}

impl fmt::Debug for Acker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Acker")
            .field("offset", &self.offset)
            .finish()
    }
}

/// Why a broker operation failed.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// Storage failed (I/O error, failed commit); nothing was acknowledged. Retry later (503).
    #[error("broker storage unavailable: {0}")]
    Unavailable(String),
    /// The retained-size quota would be exceeded; nothing was stored (503). Subscribers must
    /// catch up (or the quota be raised) before more events fit.
    #[error(
        "broker storage is full: {retained} of {limit} bytes retained and this append needs \
         {requested} more; wait for subscribers to catch up or raise the size limit"
    )]
    Full {
        limit: u64,
        retained: u64,
        requested: u64,
    },
    /// One event is larger than the backend stores (NATS `max_payload`, Kafka
    /// `message.max.bytes`); nothing of the request should be retried as is (413).
    #[error(
        "an event of {size} bytes is larger than the {backend} backend accepts ({limit} bytes)"
    )]
    TooLarge {
        backend: &'static str,
        size: usize,
        limit: usize,
    },
    /// The broker was shut down.
    #[error("broker is closed")]
    Closed,
    /// An event is invalid (or a stored one is corrupt).
    #[error("invalid event: {0}")]
    Event(#[from] EventError),
}

impl BrokerError {
    /// The HTTP status an ingress should answer with.
    pub fn http_status(&self) -> ::http::StatusCode {
        match self {
            BrokerError::Event(e) => e.http_status(),
            BrokerError::TooLarge { .. } => ::http::StatusCode::PAYLOAD_TOO_LARGE,
            BrokerError::Unavailable(_) | BrokerError::Full { .. } | BrokerError::Closed => {
                ::http::StatusCode::SERVICE_UNAVAILABLE
            }
        }
    }
}
