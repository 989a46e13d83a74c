//! Built-in functions.

use std::borrow::Cow;

use super::ast::{Func, Node};
use super::eval::{Errors, into_text, operand, parse_bool, text, to_bool_explicit, to_int, zero};
use super::{EvalErrorKind, Event, Value};

/// Call `func` on `args`. An argument whose evaluation raised an error makes
/// the call yield the zero value of its return type.
pub(super) fn call<'a, E: Event + ?Sized>(
    func: Func,
    args: &'a [Node],
    event: &'a E,
    errs: &mut Errors,
) -> Value<'a> {
    let zero = zero(func.return_type());
    match (func, args) {
        (Func::Concat, args) => concat(None, args, event, errs).map_or(zero, Value::String),
        (Func::ConcatWs, [delimiter, args @ ..]) => match operand(delimiter, event, errs) {
            Some(d) => concat(Some(into_text(d)), args, event, errs).map_or(zero, Value::String),
            None => zero,
        },
        (_, [x]) => match operand(x, event, errs) {
            Some(x) => unary(func, x, errs),
            None => zero,
        },
        (_, [x, y]) => {
            let Some(x) = operand(x, event, errs) else {
                return zero;
            };
            let Some(y) = operand(y, event, errs) else {
                return zero;
            };
            let (s, n) = (into_text(x), to_int(&y, errs));
            Value::String(match func {
                Func::Left => left(s, n, errs),
                Func::Right => right(s, n, errs),
                _ => substring(s, n, None, errs),
            })
        }
        (_, [x, y, z]) => {
            let Some(x) = operand(x, event, errs) else {
                return zero;
            };
            let Some(y) = operand(y, event, errs) else {
                return zero;
            };
            let Some(z) = operand(z, event, errs) else {
                return zero;
            };
            let (s, pos, len) = (into_text(x), to_int(&y, errs), to_int(&z, errs));
            Value::String(substring(s, pos, Some(len), errs))
        }
        // The parser only builds calls with a valid arity.
        _ => zero,
    }
}

fn unary<'a>(func: Func, x: Value<'a>, errs: &mut Errors) -> Value<'a> {
    match func {
        Func::Abs => {
            let i = to_int(&x, errs);
            Value::Integer(i.checked_abs().unwrap_or_else(|| {
                errs.raise(
                    EvalErrorKind::Math,
                    format_args!("ABS({i}) overflows 32 bits"),
                );
                i32::MAX
            }))
        }
        Func::Length => {
            let n = text(&x).as_str().chars().count();
            Value::Integer(i32::try_from(n).unwrap_or(i32::MAX))
        }
        Func::Lower => Value::String(map_case(into_text(x), false)),
        Func::Upper => Value::String(map_case(into_text(x), true)),
        Func::Trim => Value::String(match into_text(x) {
            Cow::Borrowed(s) => Cow::Borrowed(s.trim()),
            Cow::Owned(s) => Cow::Owned(s.trim().to_owned()),
        }),
        Func::Int => Value::Integer(to_int(&x, errs)),
        Func::Bool => Value::Boolean(to_bool_explicit(&x, errs)),
        Func::String => Value::String(into_text(x)),
        Func::IsInt => Value::Boolean(match &x {
            Value::Integer(_) => true,
            Value::String(s) => s.parse::<i32>().is_ok(),
            Value::Boolean(_) => false,
        }),
        Func::IsBool => Value::Boolean(match &x {
            Value::Boolean(_) => true,
            Value::String(s) => parse_bool(s).is_some(),
            Value::Integer(_) => false,
        }),
        // Not unary; unreachable from the parser.
        _ => zero(func.return_type()),
    }
}

/// CONCAT and CONCAT_WS; `None` when an argument raised an error.
fn concat<'a, E: Event + ?Sized>(
    delimiter: Option<Cow<'a, str>>,
    args: &'a [Node],
    event: &'a E,
    errs: &mut Errors,
) -> Option<Cow<'a, str>> {
    if let [only] = args {
        return operand(only, event, errs).map(into_text);
    }
    let mut out = String::new();
    for (i, arg) in args.iter().enumerate() {
        let v = operand(arg, event, errs)?;
        if i > 0
            && let Some(d) = &delimiter
        {
            out.push_str(d);
        }
        out.push_str(text(&v).as_str());
    }
    Some(Cow::Owned(out))
}

/// LOWER / UPPER; keeps the input, without allocating, when no character
/// changes.
fn map_case(s: Cow<'_, str>, upper: bool) -> Cow<'_, str> {
    let unchanged = s.chars().all(|c| {
        if upper {
            maps_to_itself(c, c.to_uppercase())
        } else {
            maps_to_itself(c, c.to_lowercase())
        }
    });
    match (unchanged, upper) {
        (true, _) => s,
        (false, true) => Cow::Owned(s.to_uppercase()),
        (false, false) => Cow::Owned(s.to_lowercase()),
    }
}

fn maps_to_itself(c: char, mut mapped: impl Iterator<Item = char>) -> bool {
    mapped.next() == Some(c) && mapped.next().is_none()
}

/// The first `n` characters of `s`, or all of it.
fn left<'a>(s: Cow<'a, str>, n: i32, errs: &mut Errors) -> Cow<'a, str> {
    let Ok(n) = usize::try_from(n) else {
        errs.raise(
            EvalErrorKind::FunctionEvaluation,
            format_args!("LEFT: negative length {n}"),
        );
        return s;
    };
    let end = byte_offset(&s, n);
    slice(s, 0, end)
}

/// The last `n` characters of `s`, or all of it.
fn right<'a>(s: Cow<'a, str>, n: i32, errs: &mut Errors) -> Cow<'a, str> {
    let Ok(n) = usize::try_from(n) else {
        errs.raise(
            EvalErrorKind::FunctionEvaluation,
            format_args!("RIGHT: negative length {n}"),
        );
        return s;
    };
    let count = s.chars().count();
    let start = byte_offset(&s, count.saturating_sub(n));
    let end = s.len();
    slice(s, start, end)
}

/// SUBSTRING(s, pos) and SUBSTRING(s, pos, len), with 1-based `pos` counted
/// from the end when negative.
fn substring<'a>(s: Cow<'a, str>, pos: i32, len: Option<i32>, errs: &mut Errors) -> Cow<'a, str> {
    let empty = Cow::Borrowed("");
    if let Some(len) = len
        && len < 0
    {
        errs.raise(
            EvalErrorKind::FunctionEvaluation,
            format_args!("SUBSTRING: negative length {len}"),
        );
        return empty;
    }
    let count = i64::try_from(s.chars().count()).unwrap_or(i64::MAX);
    let pos = i64::from(pos);
    if pos > count || pos < -count {
        errs.raise(
            EvalErrorKind::FunctionEvaluation,
            format_args!("SUBSTRING: position {pos} is outside a string of length {count}"),
        );
        return empty;
    }
    if pos == 0 {
        return empty;
    }
    let first = if pos > 0 { pos - 1 } else { count + pos };
    let last = match len {
        Some(len) => count.min(first + i64::from(len)),
        None => count,
    };
    let to_usize = |i: i64| usize::try_from(i).unwrap_or(0);
    let start = byte_offset(&s, to_usize(first));
    let end = byte_offset(&s, to_usize(last));
    slice(s, start, end)
}

/// Byte offset of character `n` of `s`, or its length.
fn byte_offset(s: &str, n: usize) -> usize {
    s.char_indices().nth(n).map_or(s.len(), |(i, _)| i)
}

/// `s[start..end]`, borrowing when `s` is borrowed.
fn slice(s: Cow<'_, str>, start: usize, end: usize) -> Cow<'_, str> {
    match s {
        Cow::Borrowed(b) => Cow::Borrowed(b.get(start..end).unwrap_or_default()),
        Cow::Owned(o) => Cow::Owned(o.get(start..end).unwrap_or_default().to_owned()),
    }
}
