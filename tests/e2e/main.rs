//! End-to-end tests: the real `tidegate` binary, real HTTP publishers and subscribers on
//! 127.0.0.1, real disk.

mod backends;
mod delivery;
mod durability;
mod grpc;
mod hardening;
mod harness;
mod ingress;
mod kubernetes;
mod manifests;
mod operator;
mod pods;
mod serving;
