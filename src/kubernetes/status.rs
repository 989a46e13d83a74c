//! Status conditions as Knative writes them, and status patches that change nothing when
//! nothing changed.

use kube::api::{DynamicObject, Patch, PatchParams};
use serde_json::{Value, json};

/// One condition: `status` is `True`, `False` or `Unknown`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cond {
    pub type_: &'static str,
    pub status: &'static str,
    pub reason: Option<String>,
    pub message: Option<String>,
}

impl Cond {
    pub fn ok(type_: &'static str) -> Self {
        Self {
            type_,
            status: "True",
            reason: None,
            message: None,
        }
    }

    pub fn failed(type_: &'static str, reason: &str, message: impl Into<String>) -> Self {
        Self {
            type_,
            status: "False",
            reason: Some(reason.to_owned()),
            message: Some(message.into()),
        }
    }

    pub fn unknown(type_: &'static str, reason: &str, message: impl Into<String>) -> Self {
        Self {
            type_,
            status: "Unknown",
            reason: Some(reason.to_owned()),
            message: Some(message.into()),
        }
    }

    pub fn is_true(&self) -> bool {
        self.status == "True"
    }
}

/// `Ready` from the other conditions: the first one not True decides, as Knative's living
/// condition sets do.
pub fn ready(conditions: &[Cond]) -> Cond {
    match conditions.iter().find(|c| !c.is_true()) {
        None => Cond::ok("Ready"),
        Some(c) => Cond {
            type_: "Ready",
            status: c.status,
            reason: c.reason.clone(),
            message: c.message.clone(),
        },
    }
}

/// The condition of `type_` in a `status.conditions` array, if there is one.
pub fn condition<'a>(conditions: Option<&'a Value>, type_: &str) -> Option<&'a Value> {
    conditions?
        .as_array()?
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(type_))
}

/// The conditions as JSON, keeping `lastTransitionTime` of each one whose status did not change
/// from `previous` (the object's current `status.conditions`).
pub fn conditions_json(conditions: &[Cond], previous: Option<&Value>, now: &str) -> Value {
    let list: Vec<Value> = conditions
        .iter()
        .map(|c| {
            let old = condition(previous, c.type_);
            let since = old
                .filter(|o| o.get("status").and_then(Value::as_str) == Some(c.status))
                .and_then(|o| o.get("lastTransitionTime"))
                .and_then(Value::as_str)
                .unwrap_or(now);
            let mut v = json!({"type": c.type_, "status": c.status, "lastTransitionTime": since});
            if let Some(reason) = &c.reason {
                v["reason"] = json!(reason);
            }
            if let Some(message) = &c.message {
                v["message"] = json!(message);
            }
            v
        })
        .collect();
    Value::Array(list)
}

/// RFC 3339 now, to the second, as Kubernetes writes times.
pub fn now() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Whether `status` differs from the object's current status in anything but
/// `lastTransitionTime`s.
pub fn differs(current: Option<&Value>, status: &Value) -> bool {
    fn strip(v: &Value) -> Value {
        match v {
            Value::Object(map) => Value::Object(
                map.iter()
                    .filter(|(k, _)| k.as_str() != "lastTransitionTime")
                    .map(|(k, v)| (k.clone(), strip(v)))
                    .collect(),
            ),
            Value::Array(items) => Value::Array(items.iter().map(strip).collect()),
            other => other.clone(),
        }
    }
    let Some(current) = current else { return true };
    // Only the fields tidegate writes are compared.
    let Value::Object(fields) = status else {
        return true;
    };
    // `null` deletes a field in a merge patch: it matches an absent one.
    let present = |v: Option<&Value>| v.filter(|v| !v.is_null()).map(strip);
    fields
        .iter()
        .any(|(k, v)| present(current.get(k)) != present(Some(v)))
}

/// Merge-patches `status` of `object` when it changed.
pub async fn patch_status(
    api: &kube::Api<DynamicObject>,
    object: &DynamicObject,
    status: Value,
) -> Result<(), kube::Error> {
    if !differs(object.data.get("status"), &status) {
        return Ok(());
    }
    let name = object.metadata.name.as_deref().unwrap_or_default();
    api.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({ "status": status })),
    )
    .await
    .map(|_| ())
}
