//! A backend's validated settings: what [`crate::Backends::open`] needs to open one Broker.
//!
//! `triggers/` reads them from a Broker's ConfigMap (and the Secret it names) and locates every
//! error; here they are plain values. Two equal configs open the same backend, so the gateway
//! keeps a Broker whose settings did not change and reopens one whose settings did.

use std::fmt;
use std::time::Duration;

/// Which backend stores a Broker's events, with its settings.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum BackendConfig {
    /// tidegate's own log on local disk (one store for every embedded Broker).
    Embedded,
    /// A NATS JetStream stream.
    Nats(NatsConfig),
    /// A Kafka topic.
    Kafka(KafkaConfig),
}

impl BackendConfig {
    /// `embedded`, `nats` or `kafka`.
    pub fn name(&self) -> &'static str {
        match self {
            BackendConfig::Embedded => "embedded",
            BackendConfig::Nats(_) => "nats",
            BackendConfig::Kafka(_) => "kafka",
        }
    }
}

/// Where a JetStream stream keeps messages (`storage`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum NatsStorage {
    #[default]
    File,
    Memory,
}

/// One Broker on NATS JetStream.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NatsConfig {
    /// Server URLs (`url`, comma-separated), e.g. `nats://127.0.0.1:4222`.
    pub urls: Vec<String>,
    /// Stream name (`stream`; default `{namespace}-{name}` with unsafe characters replaced).
    pub stream: String,
    /// Subject prefix (`subject`; default `tidegate.{namespace}.{name}`): the stream holds
    /// `{subject}.>`, ingress publishes to `{subject}.events`.
    pub subject: String,
    pub storage: NatsStorage,
    /// Stream replicas (`replicas`, default 1).
    pub replicas: usize,
    /// Oldest message kept (`max_age`; `None` = unlimited).
    pub max_age: Option<Duration>,
    /// Most bytes kept (`max_bytes`; `None` = unlimited).
    pub max_bytes: Option<i64>,
    /// Window in which a repeated `Nats-Msg-Id` is stored once (`duplicate_window`, default
    /// the server's 2 min).
    pub duplicate_window: Option<Duration>,
    pub auth: Option<NatsAuth>,
}

impl NatsConfig {
    /// The subject ingress publishes to.
    pub fn publish_subject(&self) -> String {
        format!("{}.events", self.subject)
    }

    /// The subjects the stream holds.
    pub fn stream_subjects(&self) -> String {
        format!("{}.>", self.subject)
    }
}

/// NATS credentials from the Secret named by `auth.secret.ref.name`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum NatsAuth {
    UserPassword { user: String, password: String },
    Token(String),
}

impl fmt::Debug for NatsAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NatsAuth::UserPassword { user, .. } => f
                .debug_struct("UserPassword")
                .field("user", user)
                .field("password", &"<redacted>")
                .finish(),
            NatsAuth::Token(_) => f.write_str("Token(<redacted>)"),
        }
    }
}

/// One Broker on Kafka.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KafkaConfig {
    /// `bootstrap.servers`, comma-separated `host:port`.
    pub bootstrap_servers: String,
    /// Topic (`topic`; default `knative-broker-{namespace}-{name}`, Knative's name).
    pub topic: String,
    /// Partitions the topic is created with (`default.topic.partitions`, default 10).
    pub partitions: u32,
    /// Replication factor the topic is created with (`default.topic.replication.factor`,
    /// default 1).
    pub replication_factor: u16,
    /// `retention.ms` the topic is created with (`default.topic.retention.ms`).
    pub retention_ms: Option<i64>,
    pub auth: Option<KafkaAuth>,
}

/// Kafka security settings from the Secret named by `auth.secret.ref.name` (Knative's keys).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct KafkaAuth {
    /// `protocol`: `PLAINTEXT`, `SASL_PLAINTEXT`, `SASL_SSL` or `SSL`.
    pub protocol: String,
    /// `sasl.mechanism`: `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512`.
    pub sasl_mechanism: Option<String>,
    pub user: Option<String>,
    pub password: Option<String>,
    /// `ca.crt`, PEM.
    pub ca_cert: Option<String>,
}

impl fmt::Debug for KafkaAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaAuth")
            .field("protocol", &self.protocol)
            .field("sasl_mechanism", &self.sasl_mechanism)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("ca_cert", &self.ca_cert.as_ref().map(|_| "<pem>"))
            .finish()
    }
}

/// `name` with every character but ASCII letters, digits, `-` and `_` replaced by `_`: safe as
/// a NATS stream, consumer or subject token.
pub fn name_token(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_reach_debug_output() {
        let nats = NatsAuth::UserPassword {
            user: "app".into(),
            password: "hunter2".into(),
        };
        let token = NatsAuth::Token("s3cret".into());
        let kafka = KafkaAuth {
            protocol: "SASL_SSL".into(),
            sasl_mechanism: Some("PLAIN".into()),
            user: Some("app".into()),
            password: Some("hunter2".into()),
            ca_cert: Some("-----BEGIN CERTIFICATE-----".into()),
        };
        let shown = format!("{nats:?} {token:?} {kafka:?}");
        assert!(shown.contains("app"));
        for secret in ["hunter2", "s3cret", "BEGIN"] {
            assert!(!shown.contains(secret), "{secret} leaked in {shown}");
        }
    }
}
