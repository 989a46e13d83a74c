//! A Broker's backend, read from the ConfigMap its `spec.config` references.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::knative::{CONFIG_BR_DEFAULT_CHANNEL, EVENTING_NAMESPACE};
use super::{Scope, Secrets, check_kind, decode_base64};
use crate::duration::parse_go_duration;
use crate::error::{Origin, join_key};
use crate::load::ObjectKey;
use crate::manifest::{ConfigMap, KReference, Secret};
use crate::snapshot::Backend;
use brokers::config::{KafkaAuth, KafkaConfig, NatsAuth, NatsConfig, NatsStorage};

/// Broker class whose ConfigMaps default to the kafka backend (Knative's Kafka broker).
pub(super) const KAFKA_BROKER_CLASS: &str = "Kafka";

/// The Broker a backend is being read for.
#[derive(Debug, Clone, Copy)]
pub(super) struct Target<'a> {
    pub(super) namespace: &'a str,
    pub(super) name: &'a str,
    /// The broker class is Knative's Kafka broker: `backend` defaults to `kafka`.
    pub(super) default_kafka: bool,
}

/// Resolves `spec.config` to its ConfigMap and reads the backend from its `data`.
///
/// Problems with the reference are located in the Broker, problems with the data in the
/// ConfigMap. A ConfigMap whose own document was rejected is not reported missing.
pub(super) fn broker_backend(
    reference: &KReference,
    broker: &Target<'_>,
    config_maps: &HashMap<(&str, &str), (&ConfigMap, &Origin)>,
    rejected: &HashSet<ObjectKey>,
    secrets: &Secrets<'_>,
    scope: &mut Scope<'_>,
) -> Option<Backend> {
    if !check_kind(reference, "spec.config", "ConfigMap", "v1", scope) {
        return None;
    }
    let cm_namespace = reference.namespace.as_deref().unwrap_or(broker.namespace);
    let well_known_channel =
        (cm_namespace, reference.name.as_str()) == (EVENTING_NAMESPACE, CONFIG_BR_DEFAULT_CHANNEL);
    let found = config_maps.get(&(cm_namespace, reference.name.as_str()));
    // Knative's channel-based Broker config (`channel-template-spec`): on tidegate the
    // embedded log stores the events, whatever channel it names.
    if well_known_channel
        || found.is_some_and(|(cm, _)| cm.data.contains_key("channel-template-spec"))
    {
        return Some(Backend::Embedded);
    }
    let Some((config_map, origin)) = found else {
        let key = (
            "ConfigMap".to_owned(),
            cm_namespace.to_owned(),
            reference.name.clone(),
        );
        if !rejected.contains(&key) {
            scope.error(
                "spec.config.name",
                format!(
                    "ConfigMap {cm_namespace}/{} is not in the manifest set",
                    reference.name
                ),
            );
        }
        return None;
    };
    backend_from_data(config_map, broker, secrets, &mut scope.at(origin))
}

/// Knative's key naming the Secret with a backend's credentials.
const AUTH_SECRET_KEY: &str = "auth.secret.ref.name";

/// Reads `backend` and its settings from a ConfigMap's data; problems are located there (and in
/// the Secret it names).
fn backend_from_data(
    config_map: &ConfigMap,
    broker: &Target<'_>,
    secrets: &Secrets<'_>,
    scope: &mut Scope<'_>,
) -> Option<Backend> {
    let data = &config_map.data;
    let kind = match data.get("backend").map(String::as_str) {
        Some(kind @ ("embedded" | "nats" | "kafka")) => kind,
        Some(other) => {
            scope.error(
                "data.backend",
                format!("unknown backend {other:?}; expected embedded, nats or kafka"),
            );
            return None;
        }
        None if broker.default_kafka => "kafka",
        None => "embedded",
    };
    let known: &[&str] = match kind {
        "nats" => &[
            "backend",
            "url",
            "stream",
            "subject",
            "storage",
            "replicas",
            "max_age",
            "max_bytes",
            "duplicate_window",
            AUTH_SECRET_KEY,
        ],
        "kafka" => &[
            "backend",
            "bootstrap.servers",
            "topic",
            "partitions",
            "default.topic.partitions",
            "default.topic.replication.factor",
            "default.topic.retention.ms",
            AUTH_SECRET_KEY,
        ],
        _ => &["backend"],
    };
    for key in data.keys().filter(|k| !known.contains(&k.as_str())) {
        scope.warn(
            join_key("data", key),
            format!("ignored: not a setting of the {kind} backend"),
        );
    }
    let Target {
        namespace, name, ..
    } = *broker;
    let secret = match data.get(AUTH_SECRET_KEY) {
        None => None,
        Some(secret_name) => Some(find_secret(
            config_map.metadata.namespace(),
            secret_name,
            secrets,
            scope,
        )?),
    };
    match kind {
        "nats" => {
            let urls = required(data, "url", kind, scope).and_then(|url| nats_urls(&url, scope));
            let stream = match data.get("stream") {
                Some(stream) => checked(scope, "data.stream", stream, check_stream_name),
                None => Some(sanitize_stream_name(&format!("{namespace}-{name}"))),
            };
            let subject = match data.get("subject") {
                Some(subject) => checked(scope, "data.subject", subject, check_subject_prefix),
                None => Some(format!(
                    "tidegate.{}.{}",
                    sanitize_subject_token(namespace),
                    sanitize_subject_token(name)
                )),
            };
            let storage = match data.get("storage").map(|s| s.trim()) {
                None | Some("file") => Some(NatsStorage::File),
                Some("memory") => Some(NatsStorage::Memory),
                Some(other) => {
                    scope.error(
                        "data.storage",
                        format!("must be file or memory, found {other:?}"),
                    );
                    None
                }
            };
            let replicas = number::<usize>(data, "replicas", scope, 1..=5).map(|n| n.unwrap_or(1));
            let max_age = duration(data, "max_age", scope);
            let max_bytes = number::<i64>(data, "max_bytes", scope, 1..=i64::MAX);
            let duplicate_window = duration(data, "duplicate_window", scope);
            let auth = match secret {
                None => Some(None),
                Some((secret, origin)) => nats_auth(secret, &mut scope.at(origin)).map(Some),
            };
            Some(Backend::Nats(NatsConfig {
                urls: urls?,
                stream: stream?,
                subject: subject?,
                storage: storage?,
                replicas: replicas?,
                max_age: max_age?,
                max_bytes: max_bytes?,
                duplicate_window: duplicate_window?,
                auth: auth?,
            }))
        }
        "kafka" => {
            let bootstrap_servers = required(data, "bootstrap.servers", kind, scope);
            let topic = match data.get("topic") {
                Some(topic) => checked(scope, "data.topic", topic, check_topic_name),
                None => Some(format!("knative-broker-{namespace}-{name}")),
            };
            let partitions = kafka_partitions(data, scope);
            let replication_factor = number::<u16>(
                data,
                "default.topic.replication.factor",
                scope,
                1..=u16::MAX,
            )
            .map(|n| n.unwrap_or(1));
            let retention_ms =
                number::<i64>(data, "default.topic.retention.ms", scope, -1..=i64::MAX);
            let auth = match secret {
                None => Some(None),
                Some((secret, origin)) => kafka_auth(secret, &mut scope.at(origin)).map(Some),
            };
            Some(Backend::Kafka(KafkaConfig {
                bootstrap_servers: bootstrap_servers?,
                topic: topic?,
                partitions: partitions?,
                replication_factor: replication_factor?,
                retention_ms: retention_ms?,
                auth: auth?,
            }))
        }
        _ => Some(Backend::Embedded),
    }
}

/// The Secret `auth.secret.ref.name` names, in the ConfigMap's namespace.
fn find_secret<'a>(
    namespace: &str,
    name: &str,
    secrets: &Secrets<'a>,
    scope: &mut Scope<'_>,
) -> Option<(&'a Secret, &'a Origin)> {
    let found = secrets.get(&(namespace, name.trim())).copied();
    if found.is_none() {
        scope.error(
            join_key("data", AUTH_SECRET_KEY),
            format!(
                "Secret {namespace}/{} is not in the manifest set",
                name.trim()
            ),
        );
    }
    found
}

/// A Secret's keys decoded: `stringData` over base64 `data`. Bad base64 is an error naming the
/// key, never the value.
fn secret_values(secret: &Secret, scope: &mut Scope<'_>) -> Option<BTreeMap<String, String>> {
    let mut decoded = BTreeMap::new();
    let mut bad = decode_base64(&secret.data, &mut decoded);
    let mut values = BTreeMap::new();
    for (key, bytes) in decoded {
        match String::from_utf8(bytes) {
            Ok(text) => {
                values.insert(key, text);
            }
            Err(_) => bad.extend(secret.data.get_key_value(&key).map(|(k, _)| k.as_str())),
        }
    }
    bad.sort_unstable();
    for key in &bad {
        scope.error(
            join_key("data", key),
            "must be base64 of UTF-8 text (use stringData for plain values)",
        );
    }
    for (key, value) in &secret.string_data {
        values.insert(key.clone(), value.clone());
    }
    bad.is_empty().then_some(values)
}

/// NATS credentials: `user` + `password`, or `token`.
fn nats_auth(secret: &Secret, scope: &mut Scope<'_>) -> Option<NatsAuth> {
    let values = secret_values(secret, scope)?;
    match (
        values.get("user"),
        values.get("password"),
        values.get("token"),
    ) {
        (Some(user), Some(password), None) => Some(NatsAuth::UserPassword {
            user: user.clone(),
            password: password.clone(),
        }),
        (None, None, Some(token)) => Some(NatsAuth::Token(token.clone())),
        _ => {
            scope.error(
                "data",
                "a NATS Secret holds user and password, or token (not both, not neither)",
            );
            None
        }
    }
}

/// Kafka security settings, with Knative's keys.
fn kafka_auth(secret: &Secret, scope: &mut Scope<'_>) -> Option<KafkaAuth> {
    let values = secret_values(secret, scope)?;
    let protocol = values
        .get("protocol")
        .map_or("PLAINTEXT", |p| p.trim())
        .to_owned();
    if !matches!(
        protocol.as_str(),
        "PLAINTEXT" | "SASL_PLAINTEXT" | "SASL_SSL" | "SSL"
    ) {
        scope.error(
            "data.protocol",
            format!("must be PLAINTEXT, SASL_PLAINTEXT, SASL_SSL or SSL, found {protocol:?}"),
        );
        return None;
    }
    let mechanism = values.get("sasl.mechanism").map(|m| m.trim().to_owned());
    let sasl = protocol.starts_with("SASL");
    if sasl {
        if let Some(m) = &mechanism
            && !matches!(m.as_str(), "PLAIN" | "SCRAM-SHA-256" | "SCRAM-SHA-512")
        {
            scope.error(
                "data[\"sasl.mechanism\"]",
                format!("must be PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512, found {m:?}"),
            );
            return None;
        }
        for key in ["user", "password"] {
            if !values.contains_key(key) {
                scope.error(
                    join_key("data", key),
                    format!("required for protocol {protocol}"),
                );
                return None;
            }
        }
    }
    Some(KafkaAuth {
        protocol,
        sasl_mechanism: if sasl {
            Some(mechanism.unwrap_or_else(|| "PLAIN".to_owned()))
        } else {
            None
        },
        user: values.get("user").cloned(),
        password: values.get("password").cloned(),
        ca_cert: values.get("ca.crt").cloned(),
    })
}

/// `url`: one or more `nats://host:port` (or `tls://`, `ws://`) separated by commas.
fn nats_urls(value: &str, scope: &mut Scope<'_>) -> Option<Vec<String>> {
    let urls: Vec<String> = value
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(str::to_owned)
        .collect();
    for url in &urls {
        let scheme_ok = ["nats://", "tls://", "ws://", "wss://"]
            .iter()
            .any(|s| url.starts_with(s));
        let has_host = url
            .split_once("://")
            .is_some_and(|(_, rest)| !rest.is_empty());
        if !(scheme_ok && has_host) {
            scope.error(
                "data.url",
                format!("{url:?} is not a NATS URL; write nats://host:port (comma-separated for several)"),
            );
            return None;
        }
    }
    if urls.is_empty() {
        scope.error("data.url", "must name at least one server");
        return None;
    }
    Some(urls)
}

/// An optional integer setting within `range`.
fn number<T>(
    data: &BTreeMap<String, String>,
    key: &str,
    scope: &mut Scope<'_>,
    range: std::ops::RangeInclusive<T>,
) -> Option<Option<T>>
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display,
{
    let Some(value) = data.get(key) else {
        return Some(None);
    };
    match value.trim().parse::<T>() {
        Ok(n) if range.contains(&n) => Some(Some(n)),
        _ => {
            scope.error(
                join_key("data", key),
                format!(
                    "must be an integer from {} to {}, found {value:?}",
                    range.start(),
                    range.end()
                ),
            );
            None
        }
    }
}

/// An optional Go duration setting (`90s`, `24h`), greater than zero.
fn duration(
    data: &BTreeMap<String, String>,
    key: &str,
    scope: &mut Scope<'_>,
) -> Option<Option<std::time::Duration>> {
    let Some(value) = data.get(key) else {
        return Some(None);
    };
    match parse_go_duration(value.trim()) {
        Ok(d) if !d.is_zero() => Some(Some(d)),
        Ok(_) => {
            scope.error(join_key("data", key), "must be greater than zero");
            None
        }
        Err(why) => {
            scope.error(join_key("data", key), why);
            None
        }
    }
}

/// `value` if `check` accepts `value`, else an error at `field`.
fn checked(
    scope: &mut Scope<'_>,
    field: &str,
    value: &str,
    check: fn(&str) -> Result<(), String>,
) -> Option<String> {
    match check(value) {
        Ok(()) => Some(value.to_owned()),
        Err(why) => {
            scope.error(field, why);
            None
        }
    }
}

fn required(
    data: &BTreeMap<String, String>,
    key: &str,
    kind: &str,
    scope: &mut Scope<'_>,
) -> Option<String> {
    match data.get(key) {
        Some(value) if !value.trim().is_empty() => Some(value.trim().to_owned()),
        Some(_) => {
            scope.error(join_key("data", key), "must not be empty");
            None
        }
        None => {
            scope.error(
                join_key("data", key),
                format!("required for backend {kind}"),
            );
            None
        }
    }
}

/// `partitions`, or Knative's `default.topic.partitions`; default 10 (Knative's).
fn kafka_partitions(data: &BTreeMap<String, String>, scope: &mut Scope<'_>) -> Option<u32> {
    let ours = data.get("partitions");
    let knative = data.get("default.topic.partitions");
    if let (Some(a), Some(b)) = (ours, knative)
        && a != b
    {
        scope.error(
            "data.partitions",
            format!("conflicts with data[\"default.topic.partitions\"] ({b:?}); set one"),
        );
        return None;
    }
    let (key, value) = match (ours, knative) {
        (Some(value), _) => ("partitions", value),
        (None, Some(value)) => ("default.topic.partitions", value),
        (None, None) => return Some(DEFAULT_KAFKA_PARTITIONS),
    };
    match value.trim().parse::<u32>() {
        Ok(n) if n > 0 => Some(n),
        _ => {
            scope.error(
                join_key("data", key),
                format!("must be a positive integer, found {value:?}"),
            );
            None
        }
    }
}

/// Partitions of a Kafka topic tidegate creates (Knative's `default.topic.partitions`).
pub const DEFAULT_KAFKA_PARTITIONS: u32 = 10;

/// A subject prefix: dot-separated tokens without wildcards or whitespace.
fn check_subject_prefix(subject: &str) -> Result<(), String> {
    let bad_token = |t: &str| {
        t.is_empty()
            || t.chars()
                .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '*' | '>'))
    };
    if subject.len() > 200 || subject.split('.').any(bad_token) {
        Err(format!(
            "invalid NATS subject prefix {subject:?}: use dot-separated tokens without spaces, \
             '*' or '>' (the stream holds prefix.>)"
        ))
    } else {
        Ok(())
    }
}

fn sanitize_subject_token(token: &str) -> String {
    brokers::config::name_token(token)
}

/// NATS stream names: no whitespace, `.`, `*`, `>`, `/` or `\`.
fn check_stream_name(stream: &str) -> Result<(), String> {
    let forbidden =
        |c: char| c.is_whitespace() || c.is_control() || matches!(c, '.' | '*' | '>' | '/' | '\\');
    if stream.is_empty() || stream.len() > 255 || stream.chars().any(forbidden) {
        Err(format!(
            "invalid NATS stream name {stream:?}: use 1 to 255 characters without spaces, \
             '.', '*', '>', '/' or '\\'"
        ))
    } else {
        Ok(())
    }
}

fn sanitize_stream_name(name: &str) -> String {
    brokers::config::name_token(name)
}

/// Kafka topic names: `[a-zA-Z0-9._-]{1,249}`, not `.` or `..`.
fn check_topic_name(topic: &str) -> Result<(), String> {
    let legal = topic
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if legal && !topic.is_empty() && topic.len() <= 249 && topic != "." && topic != ".." {
        Ok(())
    } else {
        Err(format!(
            "invalid Kafka topic name {topic:?}: use 1 to 249 letters, digits, '.', '_' and '-'"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_and_topic_names() {
        assert!(check_topic_name("a.b_c-1").is_ok());
        assert!(check_topic_name("..").is_err());
        assert!(check_topic_name("a/b").is_err());
        assert!(check_topic_name(&"t".repeat(250)).is_err());
        assert!(check_stream_name("ORDERS_1").is_ok());
        assert!(check_stream_name("a.b").is_err());
        assert!(check_stream_name("a b").is_err());
        assert_eq!(sanitize_stream_name("ns-a.b"), "ns-a_b");
    }
}
