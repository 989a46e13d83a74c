//! tidegate's routing API: the Knative manifests it reads, their validation, the filter
//! engine and the loading and watching of manifest directories.
//!
//! The gateway consumes one thing from this crate: a validated [`Snapshot`] of brokers,
//! triggers and services. [`load_dirs`] builds one from manifest directories, [`watch()`]
//! reports each reload of them (a new snapshot, or why the new files are rejected), and every
//! rejection is a [`ManifestError`] naming the file, the document, the field path and the
//! reason.
//!
//! - [`manifest`]: serde types mirroring the YAML (`eventing.knative.dev/v1` Broker and
//!   Trigger, `tidegate.dev/v1alpha1` Trigger, `serving.knative.dev/v1` Service, `v1`
//!   ConfigMap).
//! - [`duration`]: durations as Knative writes them: ISO-8601 in eventing (`PT0.2S`), Go
//!   syntax in serving annotations (`60s`).
//! - [`filter`]: the compiled trigger filter and its matching.
//! - [`load`]: reading files and documents, validating them into a [`Snapshot`].
//! - [`snapshot`]: the validated types the gateway routes with.
//! - [`mod@watch`]: polling manifest directories and reporting each reload.

pub mod duration;
pub mod error;
pub mod filter;
pub mod load;
pub mod manifest;
pub mod schedule;
pub mod snapshot;
pub mod watch;

pub mod crd;
mod fingerprint;
mod validate;

pub use duration::{parse_go_duration, parse_iso8601};
pub use error::{ManifestError, ManifestWarning};
pub use filter::{Attributes, Filter};
pub use load::{DirContents, ObjectsLoad, load_dirs, load_documents, load_objects, object_label};
pub use snapshot::{
    Backend, BackoffPolicy, BrokerConfig, ContainerSpec, DEFAULT_BACKOFF_DELAY,
    DEFAULT_BACKOFF_POLICY, DEFAULT_MAX_IN_FLIGHT, DEFAULT_RETRY, DEFAULT_TIMEOUT, DeliveryConfig,
    DeliveryOrder, Destination, EnvValue, EnvVar, PodTemplate, Probe, ProbeAction,
    RevisionTemplate, ScalingClass, ScalingMetric, ScalingSpec, ServiceConfig, Snapshot,
    TrafficRevision, TrafficTarget, TriggerConfig, VolumeMount,
};
pub use watch::{ManifestWatch, Reload, watch};
