//! The compiled trigger filter and its matching against an event's attributes.
//!
//! Both Knative filter syntaxes compile to one [`Filter`] tree:
//! - `spec.filter.attributes: {type: x, source: ""}` becomes
//!   `All[Exact(type = x), Exists(source)]`: exact match, and an empty value only requires the
//!   attribute to be present.
//! - `spec.filters` (the subscriptions API dialects) becomes `All[...]` of its entries, with
//!   `exact`, `prefix`, `suffix`, `all`, `any`, `not` and `cesql` mapping one to one. A CESQL
//!   expression ([`cesql`]) is compiled once per snapshot; an evaluation error makes it false
//!   and is counted ([`Filter::cesql_errors`]).
//!
//! Semantics follow Knative: values compare as case-sensitive strings; `exact`, `prefix` and
//! `suffix` on an attribute the event lacks do not match (so `not` of them does); an empty
//! `all` matches every event, and so does an empty `any` (as Knative's `NewAnyFilter` with no
//! filters does).

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

pub mod cesql;

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
    /// A CloudEvents SQL expression whose result is `TRUE` without an error.
    Cesql(Arc<CesqlFilter>),
}

/// A compiled CESQL expression and how often evaluating it failed. Compared and hashed by its
/// source text.
#[derive(Debug)]
pub struct CesqlFilter {
    expression: cesql::Expression,
    errors: AtomicU64,
}

impl CesqlFilter {
    /// Compiles `source`; the error carries the column.
    pub fn parse(source: &str) -> Result<Self, cesql::ParseError> {
        Ok(Self {
            expression: cesql::Expression::parse(source)?,
            errors: AtomicU64::new(0),
        })
    }

    /// The source text.
    pub fn source(&self) -> &str {
        self.expression.source()
    }

    /// Evaluations that raised an error (and so did not match) since the filter was compiled.
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    fn matches<A: Attributes + ?Sized>(&self, event: &A) -> bool {
        let view = CesqlView(event);
        let (value, error) = self.expression.evaluate(&view);
        if error.is_some() {
            self.errors.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        value == cesql::Value::Boolean(true)
    }
}

impl PartialEq for CesqlFilter {
    fn eq(&self, other: &Self) -> bool {
        self.expression == other.expression
    }
}

impl Eq for CesqlFilter {}

impl Hash for CesqlFilter {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.expression.hash(state);
    }
}

/// An event's attributes as CESQL reads them: every value is a String (the bindings carry no
/// extension types).
struct CesqlView<'a, A: ?Sized>(&'a A);

impl<A: Attributes + ?Sized> cesql::Event for CesqlView<'_, A> {
    fn attribute(&self, name: &str) -> Option<cesql::AttrValue<'_>> {
        self.0.attribute(name).map(cesql::AttrValue::String)
    }
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
            Filter::Cesql(filter) => filter.matches(event),
        }
    }

    /// Evaluation errors of the CESQL expressions in the filter.
    pub fn cesql_errors(&self) -> u64 {
        match self {
            Filter::All(filters) | Filter::Any(filters) => {
                filters.iter().map(Filter::cesql_errors).sum()
            }
            Filter::Not(filter) => filter.cesql_errors(),
            Filter::Cesql(filter) => filter.errors(),
            _ => 0,
        }
    }
}

#[cfg(test)]
mod tests;
