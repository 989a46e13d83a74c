//! A Broker's backend, read from the ConfigMap its `spec.config` references.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::Scope;
use crate::error::{Origin, join_key};
use crate::load::ObjectKey;
use crate::manifest::{ConfigMap, KReference};
use crate::snapshot::Backend;

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
    scope: &mut Scope<'_>,
) -> Option<Backend> {
    let mut ok = true;
    if reference.kind != "ConfigMap" {
        scope.error(
            "spec.config.kind",
            format!("must be ConfigMap, found {:?}", reference.kind),
        );
        ok = false;
    }
    if reference.api_version != "v1" {
        scope.error(
            "spec.config.apiVersion",
            format!("must be v1, found {:?}", reference.api_version),
        );
        ok = false;
    }
    if !ok {
        return None;
    }
    let cm_namespace = reference.namespace.as_deref().unwrap_or(broker.namespace);
    let Some((config_map, origin)) = config_maps.get(&(cm_namespace, reference.name.as_str()))
    else {
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
    backend_from_data(&config_map.data, broker, &mut scope.at(origin))
}

/// Reads `backend` and its settings from a ConfigMap's data; problems are located there.
fn backend_from_data(
    data: &BTreeMap<String, String>,
    broker: &Target<'_>,
    scope: &mut Scope<'_>,
) -> Option<Backend> {
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
        "nats" => &["backend", "url", "stream"],
        "kafka" => &[
            "backend",
            "bootstrap.servers",
            "topic",
            "partitions",
            "default.topic.partitions",
            "default.topic.replication.factor",
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
    match kind {
        "nats" => {
            let url = required(data, "url", kind, scope);
            let stream = match data.get("stream") {
                Some(stream) => checked(scope, "data.stream", stream, check_stream_name),
                None => Some(sanitize_stream_name(&format!("{namespace}-{name}"))),
            };
            Some(Backend::Nats {
                url: url?,
                stream: stream?,
            })
        }
        "kafka" => {
            let bootstrap_servers = required(data, "bootstrap.servers", kind, scope);
            let topic = match data.get("topic") {
                Some(topic) => checked(scope, "data.topic", topic, check_topic_name),
                None => Some(format!("knative-broker-{namespace}-{name}")),
            };
            let partitions = kafka_partitions(data, scope);
            Some(Backend::Kafka {
                bootstrap_servers: bootstrap_servers?,
                topic: topic?,
                partitions: partitions?,
            })
        }
        _ => Some(Backend::Embedded),
    }
}

/// `value` if `check` accepts it, else an error at `field`.
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

/// `partitions`, or Knative's `default.topic.partitions`; default 1.
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
        (None, None) => return Some(1),
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
