//! Everything that listens on a socket: the CloudEvents receiver and the admin API.

pub mod admin;
pub mod events;
pub mod topology;

pub use topology::{BrokerEntry, Topology};
