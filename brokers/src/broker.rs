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

    /// Opens the named durable subscription. A new one starts after the current last event; an
    /// existing one resumes at its persisted cursor (everything not acked is redelivered).
    async fn subscribe(&self, subscription: &str) -> Result<Box<dyn Subscription>, BrokerError>;

    /// Deletes the subscription and its cursor; events only it still needed are reclaimed.
    async fn remove_subscription(&self, subscription: &str) -> Result<(), BrokerError>;

    /// Events currently retained.
    fn stored(&self) -> u64;

    /// Events appended but not yet acked by this subscription (0 for an unknown one).
    fn pending(&self, subscription: &str) -> u64;

    /// Why the backend cannot store events right now (disk full, I/O failure, reconnecting),
    /// or `None` when it can. Cheap: a value the backend keeps, never a call to storage.
    fn unavailable(&self) -> Option<String> {
        None
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
    pub acker: Acker,
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
            BrokerError::Unavailable(_) | BrokerError::Full { .. } | BrokerError::Closed => {
                ::http::StatusCode::SERVICE_UNAVAILABLE
            }
        }
    }
}
