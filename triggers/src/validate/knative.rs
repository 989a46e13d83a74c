//! Knative's system ConfigMaps in the manifest set and what they change:
//! `knative-serving/config-features` (which pod spec fields are accepted).

use std::collections::BTreeMap;

use super::{ConfigMaps, Report, Scope};
use crate::error::join_key;

/// Namespace of Knative Serving's system ConfigMaps.
pub(crate) const SERVING_NAMESPACE: &str = "knative-serving";
/// ConfigMap of Knative Serving's feature flags.
pub(crate) const CONFIG_FEATURES: &str = "config-features";

/// A `config-features` flag value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flag {
    Enabled,
    Allowed,
    Disabled,
}

/// Flags that are not `disabled` unless a `config-features` says so (Knative's defaults).
const ENABLED_BY_DEFAULT: [&str; 2] = ["multi-container", "kubernetes.podspec-volumes-emptydir"];

/// Knative Serving's feature flags: its defaults, overridden by `config-features` in the set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Features {
    set: BTreeMap<String, Flag>,
}

impl Features {
    /// Reads `knative-serving/config-features` when the set has it; a value other than
    /// `enabled`, `allowed` or `disabled` is a located error (and the flag keeps its default).
    pub(crate) fn from_set(config_maps: &ConfigMaps<'_>, report: &mut Report) -> Self {
        let mut features = Self::default();
        let Some((config_map, origin)) = config_maps.get(&(SERVING_NAMESPACE, CONFIG_FEATURES))
        else {
            return features;
        };
        let mut scope = Scope::new(origin, report);
        for (key, value) in &config_map.data {
            if key.starts_with('_') {
                continue; // `_example`, Knative's documentation block.
            }
            let flag = match value.trim().to_ascii_lowercase().as_str() {
                "enabled" => Flag::Enabled,
                "allowed" => Flag::Allowed,
                "disabled" => Flag::Disabled,
                other => {
                    scope.error(
                        join_key("data", key),
                        format!("expected enabled, allowed or disabled, found {other:?}"),
                    );
                    continue;
                }
            };
            features.set.insert(key.clone(), flag);
        }
        features
    }

    /// A set with these flags (tests).
    #[cfg(test)]
    pub(crate) fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        let set = pairs
            .into_iter()
            .map(|(k, v)| {
                let flag = match v {
                    "enabled" => Flag::Enabled,
                    "allowed" => Flag::Allowed,
                    _ => Flag::Disabled,
                };
                (k.to_owned(), flag)
            })
            .collect();
        Self { set }
    }

    fn flag(&self, name: &str) -> Flag {
        match self.set.get(name) {
            Some(flag) => *flag,
            None if ENABLED_BY_DEFAULT.contains(&name) => Flag::Enabled,
            None => Flag::Disabled,
        }
    }

    /// Whether a field behind `name` is accepted (`enabled` or `allowed`).
    pub(crate) fn allows(&self, name: &str) -> bool {
        self.flag(name) != Flag::Disabled
    }

    /// Whether `name` is `enabled` (behaviour flags such as `multi-container-probing`).
    pub(crate) fn enabled(&self, name: &str) -> bool {
        self.flag(name) == Flag::Enabled
    }
}
