//! tidegate: an event-driven scaling gateway.
//!
//! `runtime` wires the pieces; every other module can be read and tested alone.

pub mod actuator;
pub mod autoscaler;
pub mod commands;
pub mod dispatch;
pub mod ingress;
pub mod kubernetes;
pub mod metrics;
pub mod revision;
pub mod runtime;
pub mod sample_service;
pub mod telemetry;
pub mod topology;
