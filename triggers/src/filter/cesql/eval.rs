//! Evaluation of the compiled tree, and the casts between types.

use std::borrow::Cow;
use std::fmt;

use super::ast::{BinOp, Chain, In, Level, Lit, Node, Type};
use super::{EvalError, EvalErrorKind, Event, Value, functions};

/// Context attributes every valid event has; `EXISTS` is always true for them.
const REQUIRED: [&str; 4] = ["id", "source", "specversion", "type"];

/// Errors raised during one evaluation.
pub(super) struct Errors {
    first: Option<EvalError>,
    count: usize,
    /// Whether to keep the first error's message (else only count).
    detailed: bool,
}

impl Errors {
    pub(super) fn new(detailed: bool) -> Errors {
        Errors {
            first: None,
            count: 0,
            detailed,
        }
    }

    /// Record an error; the message is only formatted for the first one.
    pub(super) fn raise(&mut self, kind: EvalErrorKind, message: fmt::Arguments<'_>) {
        if self.count == 0 && self.detailed {
            self.first = Some(EvalError {
                kind,
                message: message.to_string(),
            });
        }
        self.count += 1;
    }

    pub(super) fn raised(&self) -> bool {
        self.count > 0
    }

    pub(super) fn into_first(self) -> Option<EvalError> {
        self.first
    }
}

/// Evaluate `node`.
pub(super) fn eval<'a, E: Event + ?Sized>(
    node: &'a Node,
    event: &'a E,
    errs: &mut Errors,
) -> Value<'a> {
    match node {
        Node::Lit(Lit::Str(s)) => Value::String(Cow::Borrowed(s)),
        Node::Lit(Lit::Int(i)) => Value::Integer(*i),
        Node::Lit(Lit::Bool(b)) => Value::Boolean(*b),
        Node::Attr(name) => match event.attribute(name) {
            Some(v) => v.into(),
            None => {
                errs.raise(
                    EvalErrorKind::MissingAttribute,
                    format_args!("missing attribute {name:?}"),
                );
                // The type of a bare attribute is unknown: assume Boolean.
                Value::Boolean(false)
            }
        },
        Node::Exists(name) => {
            Value::Boolean(REQUIRED.contains(&&**name) || event.attribute(name).is_some())
        }
        Node::Not(x) => match operand(x, event, errs) {
            Some(v) => Value::Boolean(!to_bool(&v, errs)),
            None => Value::Boolean(false),
        },
        Node::Neg(x) => match operand(x, event, errs) {
            Some(v) => {
                let i = to_int(&v, errs);
                Value::Integer(i.checked_neg().unwrap_or_else(|| {
                    errs.raise(EvalErrorKind::Math, format_args!("overflow in -({i})"));
                    i32::MAX
                }))
            }
            None => Value::Integer(0),
        },
        Node::Chain(chain) => eval_chain(chain, event, errs),
        Node::Like(like) => match operand(&like.operand, event, errs) {
            Some(v) => Value::Boolean(like.pattern.matches(text(&v).as_str()) != like.negated),
            None => Value::Boolean(false),
        },
        Node::In(set) => eval_in(set, event, errs),
        Node::Call(func, args) => functions::call(*func, args, event, errs),
        Node::MissingFunction(name, arity) => {
            errs.raise(
                EvalErrorKind::MissingFunction,
                format_args!("no function {name} taking {arity} argument(s)"),
            );
            Value::Boolean(false)
        }
    }
}

/// Evaluate an operand: `None` when its evaluation raised an error, in which
/// case the caller yields its zero value.
pub(super) fn operand<'a, E: Event + ?Sized>(
    node: &'a Node,
    event: &'a E,
    errs: &mut Errors,
) -> Option<Value<'a>> {
    let before = errs.count;
    let v = eval(node, event, errs);
    (errs.count == before).then_some(v)
}

/// The zero value of a type.
pub(super) fn zero(ty: Type) -> Value<'static> {
    match ty {
        Type::String => Value::String(Cow::Borrowed("")),
        Type::Integer => Value::Integer(0),
        Type::Boolean => Value::Boolean(false),
    }
}

/// `AND`, `OR` and `XOR` associate to the right, as the CESQL grammar
/// (`<assoc=right>`) and Knative's evaluator have it: `a OR b AND c` is
/// `a OR (b AND c)`. Operands are evaluated left to right and a decided `AND`
/// or `OR` skips everything to its right; no recursion, so long chains are fine.
fn eval_logic<'a, E: Event + ?Sized>(
    chain: &'a Chain,
    event: &'a E,
    errs: &mut Errors,
) -> Value<'a> {
    let start = errs.count;
    // Undecided `AND` (left true) and `OR` (left false) pass their right side
    // through; `XOR` flips it when its left side is true.
    let mut flip = false;
    let mut node = &chain.first;
    let mut index = 0;
    let tail = loop {
        let Some(value) = operand(node, event, errs) else {
            return Value::Boolean(false);
        };
        let left = to_bool(&value, errs);
        if errs.count != start {
            return Value::Boolean(false);
        }
        let Some((op, next)) = chain.rest.get(index) else {
            break left;
        };
        match (op, left) {
            (BinOp::And, false) => break false,
            (BinOp::Or, true) => break true,
            (BinOp::Xor, left) => flip ^= left,
            _ => {}
        }
        node = next;
        index += 1;
    };
    Value::Boolean(tail ^ flip)
}

fn eval_chain<'a, E: Event + ?Sized>(
    chain: &'a Chain,
    event: &'a E,
    errs: &mut Errors,
) -> Value<'a> {
    if matches!(chain.level, Level::Logic) {
        return eval_logic(chain, event, errs);
    }
    let zero = zero(if chain.level.is_numeric() {
        Type::Integer
    } else {
        Type::Boolean
    });
    let start = errs.count;
    let Some(mut acc) = operand(&chain.first, event, errs) else {
        return zero;
    };
    for (op, rhs) in &chain.rest {
        // An error in the previous step is an error in this step's left operand.
        if errs.count != start {
            return zero;
        }
        acc = match chain.level {
            Level::Logic => {
                let left = to_bool(&acc, errs);
                match (op, left) {
                    (BinOp::And, false) => Value::Boolean(false),
                    (BinOp::Or, true) => Value::Boolean(true),
                    _ => {
                        let Some(r) = operand(rhs, event, errs) else {
                            return zero;
                        };
                        let right = to_bool(&r, errs);
                        Value::Boolean(match op {
                            BinOp::Xor => left != right,
                            // AND with left true, OR with left false.
                            _ => right,
                        })
                    }
                }
            }
            Level::Compare => {
                let Some(r) = operand(rhs, event, errs) else {
                    return zero;
                };
                Value::Boolean(match op {
                    BinOp::Eq => equals(&acc, &r, errs),
                    BinOp::NotEq => !equals(&acc, &r, errs),
                    _ => {
                        let (x, y) = (to_int(&acc, errs), to_int(&r, errs));
                        match op {
                            BinOp::Lt => x < y,
                            BinOp::Le => x <= y,
                            BinOp::Gt => x > y,
                            _ => x >= y,
                        }
                    }
                })
            }
            Level::Additive | Level::Multiplicative => {
                let Some(r) = operand(rhs, event, errs) else {
                    return zero;
                };
                let (x, y) = (to_int(&acc, errs), to_int(&r, errs));
                Value::Integer(arithmetic(*op, x, y, errs))
            }
        };
    }
    acc
}

/// `x op y` on 32-bit integers. Division and remainder by zero yield 0, and
/// overflow yields the nearest representable value, each with a math error.
fn arithmetic(op: BinOp, x: i32, y: i32, errs: &mut Errors) -> i32 {
    if matches!(op, BinOp::Div | BinOp::Rem) && y == 0 {
        errs.raise(
            EvalErrorKind::Math,
            format_args!("{x} {} 0: division by zero", op.symbol()),
        );
        return 0;
    }
    let exact = match op {
        BinOp::Add => i64::from(x) + i64::from(y),
        BinOp::Sub => i64::from(x) - i64::from(y),
        BinOp::Mul => i64::from(x) * i64::from(y),
        BinOp::Div => i64::from(x) / i64::from(y),
        _ => i64::from(x) % i64::from(y),
    };
    i32::try_from(exact).unwrap_or_else(|_| {
        errs.raise(
            EvalErrorKind::Math,
            format_args!("{x} {} {y} overflows 32 bits", op.symbol()),
        );
        if exact < 0 { i32::MIN } else { i32::MAX }
    })
}

fn eval_in<'a, E: Event + ?Sized>(set: &'a In, event: &'a E, errs: &mut Errors) -> Value<'a> {
    let Some(x) = operand(&set.operand, event, errs) else {
        return Value::Boolean(false);
    };
    for elem in &set.set {
        let Some(y) = operand(elem, event, errs) else {
            return Value::Boolean(false);
        };
        // Elements are cast to the type of the left operand.
        let before = errs.count;
        let equal = equals(&y, &x, errs);
        if errs.count != before {
            return Value::Boolean(false);
        }
        if equal {
            return Value::Boolean(!set.negated);
        }
    }
    Value::Boolean(set.negated)
}

/// `x = y`: `x` is cast to the type of `y`.
fn equals(x: &Value<'_>, y: &Value<'_>, errs: &mut Errors) -> bool {
    match y {
        Value::String(ys) => text(x).as_str() == &**ys,
        Value::Integer(yi) => to_int(x, errs) == *yi,
        Value::Boolean(yb) => to_bool(x, errs) == *yb,
    }
}

/// Implicit or explicit cast to Integer; a failed cast yields 0 and an error.
pub(super) fn to_int(v: &Value<'_>, errs: &mut Errors) -> i32 {
    match v {
        Value::Integer(i) => *i,
        Value::Boolean(b) => i32::from(*b),
        Value::String(s) => s.parse().unwrap_or_else(|_| {
            errs.raise(
                EvalErrorKind::Cast,
                format_args!("cannot cast string {} to Integer", Snippet(s)),
            );
            0
        }),
    }
}

/// Implicit cast to Boolean; a failed cast yields false and an error.
///
/// Integer to Boolean is only done by an explicit `BOOL(x)`: the conformance
/// cases require `NOT 10` to raise a cast error.
pub(super) fn to_bool(v: &Value<'_>, errs: &mut Errors) -> bool {
    match v {
        Value::Integer(i) => {
            errs.raise(
                EvalErrorKind::Cast,
                format_args!("Integer {i} is not implicitly cast to Boolean; use BOOL()"),
            );
            false
        }
        _ => to_bool_explicit(v, errs),
    }
}

/// Explicit cast to Boolean (`BOOL(x)`); a failed cast yields false and an
/// error.
pub(super) fn to_bool_explicit(v: &Value<'_>, errs: &mut Errors) -> bool {
    match v {
        Value::Boolean(b) => *b,
        Value::Integer(i) => *i != 0,
        Value::String(s) => parse_bool(s).unwrap_or_else(|| {
            errs.raise(
                EvalErrorKind::Cast,
                format_args!("cannot cast string {} to Boolean", Snippet(s)),
            );
            false
        }),
    }
}

/// `true` or `false` in any case.
pub(super) fn parse_bool(s: &str) -> Option<bool> {
    if s.eq_ignore_ascii_case("true") {
        Some(true)
    } else if s.eq_ignore_ascii_case("false") {
        Some(false)
    } else {
        None
    }
}

/// Cast to String, moving a string value; only integers allocate.
pub(super) fn into_text(v: Value<'_>) -> Cow<'_, str> {
    match v {
        Value::String(s) => s,
        Value::Boolean(b) => Cow::Borrowed(bool_str(b)),
        Value::Integer(i) => Cow::Owned(i.to_string()),
    }
}

fn bool_str(b: bool) -> &'static str {
    if b { "true" } else { "false" }
}

/// The String form of a value, without allocating.
pub(super) enum Text<'v> {
    Str(&'v str),
    Int(IntText),
}

impl Text<'_> {
    pub(super) fn as_str(&self) -> &str {
        match self {
            Text::Str(s) => s,
            Text::Int(i) => i.as_str(),
        }
    }
}

/// See [`Text`].
pub(super) fn text<'v>(v: &'v Value<'_>) -> Text<'v> {
    match v {
        Value::String(s) => Text::Str(s),
        Value::Boolean(b) => Text::Str(bool_str(*b)),
        Value::Integer(i) => Text::Int(IntText::new(*i)),
    }
}

/// An `i32` in base 10, formatted on the stack.
pub(super) struct IntText {
    buf: [u8; 11],
    start: usize,
}

impl IntText {
    fn new(v: i32) -> IntText {
        let mut buf = [0u8; 11];
        let mut start = buf.len();
        let mut n = v.unsigned_abs();
        loop {
            start -= 1;
            buf[start] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        if v < 0 {
            start -= 1;
            buf[start] = b'-';
        }
        IntText { buf, start }
    }

    fn as_str(&self) -> &str {
        std::str::from_utf8(self.buf.get(self.start..).unwrap_or_default()).unwrap_or_default()
    }
}

/// A string for error messages: quoted, escaped, cut after 40 characters.
pub(super) struct Snippet<'s>(pub(super) &'s str);

impl fmt::Display for Snippet<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const MAX: usize = 40;
        f.write_str("\"")?;
        for c in self.0.chars().take(MAX) {
            write!(f, "{}", c.escape_debug())?;
        }
        if self.0.chars().nth(MAX).is_some() {
            f.write_str("...")?;
        }
        f.write_str("\"")
    }
}
