//! tidegate event storage and transport.
//!
//! - [`event`]: the [`CloudEvent`](event::CloudEvent) type with strict validation and its
//!   storage encoding.
//! - [`http`]: the CloudEvents HTTP protocol binding (binary, structured and batched modes).
//! - [`Broker`] and [`Subscription`]: what every broker backend offers the gateway.
//! - [`embedded`]: the default backend, a durable log in one redb file with group commit.

pub mod embedded;
pub mod event;
pub mod http;

mod broker;

pub use broker::{AckHandler, Acker, Broker, BrokerError, Delivery, Subscription};
