//! CloudEvents SQL Expression Language (CESQL) v1.
//!
//! [`Expression::parse`] compiles a source text once; [`Expression::evaluate`]
//! and [`Expression::matches`] run it against any [`Event`] many times.
//!
//! Error model: when an operation raises an error it still yields the value
//! the spec defines for it (for example `ABS(-2147483648)` yields
//! `2147483647`), and every enclosing operation then yields the zero value of
//! its own return type (`""`, `0` or `false`) without evaluating further
//! operands. So an evaluation raises at most one error.

mod ast;
mod eval;
mod functions;
mod lexer;
mod like;
mod parser;
#[cfg(test)]
mod tck;
#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::fmt;
use std::hash::{Hash, Hasher};

/// Longest accepted source text, in bytes.
pub const MAX_SOURCE_LEN: usize = 16 * 1024;

/// Deepest accepted nesting of parentheses, function calls, unary operators
/// and `LIKE` / `IN` operators.
pub const MAX_DEPTH: usize = 64;

/// A typed CloudEvents attribute value as CESQL sees it.
///
/// Attributes of other CloudEvents types (URI, timestamp, binary) are given
/// as strings in their canonical string form.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum AttrValue<'a> {
    /// A string, or any non-integer, non-boolean attribute in string form.
    String(Cow<'a, str>),
    /// A 32-bit integer.
    Integer(i32),
    /// A boolean.
    Boolean(bool),
}

/// Read access to an event for CESQL: context attributes and extensions by
/// name (lower-case names as in CloudEvents).
pub trait Event {
    /// The attribute or extension called `name`, or `None` when the event does
    /// not have it.
    fn attribute(&self, name: &str) -> Option<AttrValue<'_>>;
}

/// The result of an evaluation.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Value<'a> {
    /// A string, borrowed from the event or the expression where possible.
    String(Cow<'a, str>),
    /// A 32-bit integer.
    Integer(i32),
    /// A boolean.
    Boolean(bool),
}

impl Value<'_> {
    /// The same value with any borrowed string copied.
    pub fn into_owned(self) -> Value<'static> {
        match self {
            Value::String(s) => Value::String(Cow::Owned(s.into_owned())),
            Value::Integer(i) => Value::Integer(i),
            Value::Boolean(b) => Value::Boolean(b),
        }
    }
}

impl<'a> From<AttrValue<'a>> for Value<'a> {
    fn from(v: AttrValue<'a>) -> Self {
        match v {
            AttrValue::String(s) => Value::String(s),
            AttrValue::Integer(i) => Value::Integer(i),
            AttrValue::Boolean(b) => Value::Boolean(b),
        }
    }
}

impl fmt::Display for Value<'_> {
    /// Strings as they are, integers in base 10, booleans as `true`/`false`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::String(s) => f.write_str(s),
            Value::Integer(i) => write!(f, "{i}"),
            Value::Boolean(b) => write!(f, "{b}"),
        }
    }
}

/// A source text that is not a valid CESQL expression.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    /// 1-based position of the offending character, counted in characters
    /// from the start of the source (line breaks count as characters).
    pub column: usize,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "column {}: {}", self.column, self.message)
    }
}

impl std::error::Error for ParseError {}

/// The kind of an evaluation error, as the spec names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EvalErrorKind {
    /// An attribute the expression reads is not on the event.
    MissingAttribute,
    /// An implicit or explicit type cast failed.
    Cast,
    /// Division or remainder by zero, or 32-bit integer overflow.
    Math,
    /// A built-in function got an argument outside its domain.
    FunctionEvaluation,
    /// A call names no function with that name and number of arguments.
    MissingFunction,
}

/// An error raised while evaluating an expression.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EvalError {
    /// The kind of error.
    pub kind: EvalErrorKind,
    /// What went wrong, for people.
    pub message: String,
}

impl fmt::Display for EvalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            EvalErrorKind::MissingAttribute => "missing attribute",
            EvalErrorKind::Cast => "cast error",
            EvalErrorKind::Math => "math error",
            EvalErrorKind::FunctionEvaluation => "function evaluation error",
            EvalErrorKind::MissingFunction => "missing function",
        };
        write!(f, "{kind}: {}", self.message)
    }
}

impl std::error::Error for EvalError {}

/// A compiled CESQL expression.
///
/// Equality and hashing compare the source text only.
#[derive(Clone)]
pub struct Expression {
    source: Box<str>,
    root: ast::Node,
}

impl Expression {
    /// Parse and type-check `source`.
    ///
    /// Calls to unknown functions, or with a wrong number of arguments, are
    /// accepted and raise [`EvalErrorKind::MissingFunction`] when evaluated,
    /// as the spec's conformance cases require; use [`Expression::parse_strict`]
    /// to reject them here instead.
    pub fn parse(source: &str) -> Result<Expression, ParseError> {
        Self::parse_with(source, false)
    }

    /// Like [`Expression::parse`], but a call that names no built-in function
    /// with that number of arguments is a [`ParseError`].
    pub fn parse_strict(source: &str) -> Result<Expression, ParseError> {
        Self::parse_with(source, true)
    }

    fn parse_with(source: &str, strict: bool) -> Result<Expression, ParseError> {
        let root = parser::parse(source, strict)?;
        Ok(Expression {
            source: source.into(),
            root,
        })
    }

    /// Evaluate against `event`: the value and the error raised, if any.
    ///
    /// Strings in the value borrow from the event or the expression unless a
    /// function or cast produced them.
    pub fn evaluate<'a, E: Event + ?Sized>(
        &'a self,
        event: &'a E,
    ) -> (Value<'a>, Option<EvalError>) {
        let mut errors = eval::Errors::new(true);
        let value = eval::eval(&self.root, event, &mut errors);
        (value, errors.into_first())
    }

    /// Filter semantics: true only when the result is Boolean `true` and no
    /// error was raised.
    pub fn matches<E: Event + ?Sized>(&self, event: &E) -> bool {
        let mut errors = eval::Errors::new(false);
        let value = eval::eval(&self.root, event, &mut errors);
        !errors.raised() && value == Value::Boolean(true)
    }

    /// The source text.
    pub fn source(&self) -> &str {
        &self.source
    }
}

impl fmt::Debug for Expression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Expression").field(&self.source).finish()
    }
}

impl PartialEq for Expression {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl Eq for Expression {}

impl Hash for Expression {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.source.hash(state);
    }
}
