//! The compiled trigger filter and its matching against an event's attributes.
//!
//! Both Knative filter syntaxes compile to one [`Filter`] tree:
//! - `spec.filter.attributes: {type: x, source: ""}` becomes
//!   `All[Exact(type = x), Exists(source)]`: exact match, and an empty value only requires the
//!   attribute to be present.
//! - `spec.filters` (the subscriptions API dialects) becomes `All[...]` of its entries, with
//!   `exact`, `prefix`, `suffix`, `all`, `any` and `not` mapping one to one.
//!
//! Semantics follow Knative: values compare as case-sensitive strings; `exact`, `prefix` and
//! `suffix` on an attribute the event lacks do not match (so `not` of them does); an empty
//! `all` matches every event, and so does an empty `any` (as Knative's `NewAnyFilter` with no
//! filters does).

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};

/// Read access to an event's context attributes and extensions by CloudEvents name.
///
/// Implementations should return [`Cow::Borrowed`] for attributes stored as strings so that
/// matching does not allocate.
pub trait Attributes {
    /// The attribute's value as a string, or `None` when the event does not have it.
    fn attribute(&self, name: &str) -> Option<Cow<'_, str>>;
}

impl Attributes for HashMap<String, String> {
    fn attribute(&self, name: &str) -> Option<Cow<'_, str>> {
        self.get(name).map(|value| Cow::Borrowed(value.as_str()))
    }
}

impl Attributes for BTreeMap<String, String> {
    fn attribute(&self, name: &str) -> Option<Cow<'_, str>> {
        self.get(name).map(|value| Cow::Borrowed(value.as_str()))
    }
}

/// A compiled trigger filter. The default filter is `All([])`, which matches every event.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Filter {
    /// Every filter matches; empty matches everything.
    All(Vec<Filter>),
    /// At least one filter matches; empty matches everything (as in Knative).
    Any(Vec<Filter>),
    /// The filter does not match.
    Not(Box<Filter>),
    /// The attribute exists and equals `value`.
    Exact {
        /// CloudEvents attribute name.
        attribute: String,
        /// The whole expected value.
        value: String,
    },
    /// The attribute exists and starts with `value`.
    Prefix {
        /// CloudEvents attribute name.
        attribute: String,
        /// The expected start of the value.
        value: String,
    },
    /// The attribute exists and ends with `value`.
    Suffix {
        /// CloudEvents attribute name.
        attribute: String,
        /// The expected end of the value.
        value: String,
    },
    /// The attribute exists, whatever its value.
    Exists {
        /// CloudEvents attribute name.
        attribute: String,
    },
}

impl Default for Filter {
    fn default() -> Self {
        Filter::All(Vec::new())
    }
}

impl Filter {
    /// Whether an event with these attributes passes the filter.
    pub fn matches<A: Attributes + ?Sized>(&self, event: &A) -> bool {
        match self {
            Filter::All(filters) => filters.iter().all(|f| f.matches(event)),
            Filter::Any(filters) => filters.is_empty() || filters.iter().any(|f| f.matches(event)),
            Filter::Not(filter) => !filter.matches(event),
            Filter::Exact { attribute, value } => event
                .attribute(attribute)
                .is_some_and(|v| v == value.as_str()),
            Filter::Prefix { attribute, value } => event
                .attribute(attribute)
                .is_some_and(|v| v.starts_with(value.as_str())),
            Filter::Suffix { attribute, value } => event
                .attribute(attribute)
                .is_some_and(|v| v.ends_with(value.as_str())),
            Filter::Exists { attribute } => event.attribute(attribute).is_some(),
        }
    }
}

#[cfg(test)]
mod tests;
