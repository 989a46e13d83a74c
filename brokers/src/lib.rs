//! tidegate event storage and transport.
//!
//! - [`event`]: the [`CloudEvent`](event::CloudEvent) type with strict validation and its
//!   storage encoding.
//! - [`http`]: the CloudEvents HTTP protocol binding (binary, structured and batched modes).
//! - [`Broker`] and [`Subscription`]: what every broker backend offers the gateway.
//! - [`embedded`]: the default backend, a durable log in one redb file with group commit.
//! - [`nats`]: NATS JetStream, a stream per Broker and a durable pull consumer per Trigger.
//! - [`kafka`]: Kafka, a topic per Broker and a consumer group per Trigger.
//! - [`binding`]: the CloudEvents NATS and Kafka protocol bindings.
//! - [`sdk`]: conversions to and from the Rust CloudEvents SDK's event type.
//! - [`Backends::open`]: a Broker from its [`BackendConfig`].

pub mod binding;
pub mod config;
pub mod embedded;
pub mod event;
pub mod http;
pub mod kafka;
pub mod nats;
mod remote;
pub mod sdk;
#[cfg(any(test, feature = "testkit"))]
pub mod testkit;

mod broker;

pub use broker::{
    AckHandler, Acker, Broker, BrokerError, Delivery, INVALID_RECORD_TYPE, SubscribeOptions,
    Subscription,
};
pub use config::BackendConfig;

use std::sync::Arc;

/// Opens Brokers from their validated settings: the one entry point the gateway uses, so it
/// never matches on a concrete backend.
pub struct Backends {
    embedded: Arc<embedded::EmbeddedStore>,
}

impl Backends {
    /// Every embedded Broker lives in `embedded` (one file, one group commit).
    pub fn new(embedded: Arc<embedded::EmbeddedStore>) -> Backends {
        Backends { embedded }
    }

    /// Opens Broker `namespace/name` on its backend. Network backends return at once and
    /// connect in the background ([`Broker::unavailable`] says why they cannot store yet);
    /// must run inside a Tokio runtime.
    pub fn open(
        &self,
        namespace: &str,
        name: &str,
        config: &BackendConfig,
    ) -> Result<Arc<dyn Broker>, BrokerError> {
        Ok(match config {
            BackendConfig::Embedded => self.embedded.broker(namespace, name),
            BackendConfig::Nats(nats) => nats::NatsBroker::open(namespace, name, nats.clone()),
            BackendConfig::Kafka(kafka) => {
                kafka::KafkaBroker::open(namespace, name, kafka.clone())?
            }
        })
    }
}
