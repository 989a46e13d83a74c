//! Runs the CESQL conformance cases in `tck/` (see `tck/README.md`).

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::Deserialize;

use super::{AttrValue, EvalErrorKind, Event, Expression, Value};

const FILES: [(&str, &str); 18] = [
    (
        "binary_comparison_operators.yaml",
        include_str!("tck/binary_comparison_operators.yaml"),
    ),
    (
        "binary_logical_operators.yaml",
        include_str!("tck/binary_logical_operators.yaml"),
    ),
    (
        "binary_math_operators.yaml",
        include_str!("tck/binary_math_operators.yaml"),
    ),
    (
        "case_sensitivity.yaml",
        include_str!("tck/case_sensitivity.yaml"),
    ),
    (
        "casting_functions.yaml",
        include_str!("tck/casting_functions.yaml"),
    ),
    (
        "context_attributes_access.yaml",
        include_str!("tck/context_attributes_access.yaml"),
    ),
    (
        "exists_expression.yaml",
        include_str!("tck/exists_expression.yaml"),
    ),
    ("in_expression.yaml", include_str!("tck/in_expression.yaml")),
    (
        "integer_builtin_functions.yaml",
        include_str!("tck/integer_builtin_functions.yaml"),
    ),
    (
        "like_expression.yaml",
        include_str!("tck/like_expression.yaml"),
    ),
    ("literals.yaml", include_str!("tck/literals.yaml")),
    (
        "negate_operator.yaml",
        include_str!("tck/negate_operator.yaml"),
    ),
    ("not_operator.yaml", include_str!("tck/not_operator.yaml")),
    ("parse_errors.yaml", include_str!("tck/parse_errors.yaml")),
    ("spec_examples.yaml", include_str!("tck/spec_examples.yaml")),
    (
        "string_builtin_functions.yaml",
        include_str!("tck/string_builtin_functions.yaml"),
    ),
    (
        "sub_expression.yaml",
        include_str!("tck/sub_expression.yaml"),
    ),
    (
        "subscriptions_api_recreations.yaml",
        include_str!("tck/subscriptions_api_recreations.yaml"),
    ),
];

#[derive(Deserialize)]
struct Suite {
    tests: Vec<Case>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Case {
    name: String,
    expression: String,
    result: Option<Scalar>,
    error: Option<String>,
    event: Option<BTreeMap<String, Scalar>>,
    event_overrides: Option<BTreeMap<String, Scalar>>,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(untagged)]
enum Scalar {
    Bool(bool),
    Int(i64),
    Str(String),
}

/// A JSON-format event as a map of attribute names to values.
struct MapEvent(BTreeMap<String, Scalar>);

impl Event for MapEvent {
    fn attribute(&self, name: &str) -> Option<AttrValue<'_>> {
        if name == "data" || name == "data_base64" {
            return None;
        }
        Some(match self.0.get(name)? {
            Scalar::Bool(b) => AttrValue::Boolean(*b),
            Scalar::Int(i) => AttrValue::Integer(i32::try_from(*i).ok()?),
            Scalar::Str(s) => AttrValue::String(Cow::Borrowed(s)),
        })
    }
}

fn default_event() -> BTreeMap<String, Scalar> {
    [
        ("specversion", "1.0"),
        ("id", "tck-id"),
        ("source", "tck-source"),
        ("type", "tck.type"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), Scalar::Str(v.to_owned())))
    .collect()
}

fn kind_name(kind: EvalErrorKind) -> &'static str {
    match kind {
        EvalErrorKind::MissingAttribute => "missingAttribute",
        EvalErrorKind::Cast => "cast",
        EvalErrorKind::Math => "math",
        EvalErrorKind::FunctionEvaluation => "functionEvaluation",
        EvalErrorKind::MissingFunction => "missingFunction",
    }
}

fn scalar(v: &Value<'_>) -> Scalar {
    match v {
        Value::String(s) => Scalar::Str(s.to_string()),
        Value::Integer(i) => Scalar::Int(i64::from(*i)),
        Value::Boolean(b) => Scalar::Bool(*b),
    }
}

/// Run one case: `Err` describes the mismatch.
fn run(case: &Case) -> Result<(), String> {
    let (got_value, got_error) = match Expression::parse(&case.expression) {
        Err(e) => (None, Some(format!("parse ({e})"))),
        Ok(expr) => {
            let mut attrs = case.event.clone().unwrap_or_else(default_event);
            attrs.extend(case.event_overrides.clone().unwrap_or_default());
            let event = MapEvent(attrs);
            let (value, error) = expr.evaluate(&event);
            // `matches` must agree with `evaluate`.
            let filter = value == Value::Boolean(true) && error.is_none();
            if expr.matches(&event) != filter {
                return Err(format!("matches() = {} disagrees", !filter));
            }
            let error = error.map(|e| format!("{} ({})", kind_name(e.kind), e.message));
            (Some(scalar(&value)), error)
        }
    };
    let got_kind = got_error
        .as_deref()
        .map(|e| e.split(' ').next().unwrap_or_default());
    let error_ok = got_kind == case.error.as_deref();
    // A parse error has no value to compare.
    let value_ok = match (&case.result, &got_value) {
        (Some(want), Some(got)) => want == got,
        _ => true,
    };
    if error_ok && value_ok {
        Ok(())
    } else {
        Err(format!(
            "expected result {:?} error {:?}, got result {:?} error {:?}",
            case.result, case.error, got_value, got_error
        ))
    }
}

#[test]
fn tck_all_cases_pass() {
    let mut total = 0;
    let mut with_result = 0;
    let mut failures = Vec::new();
    for (file, text) in FILES {
        let suite: Suite = match serde_saphyr::from_str(text) {
            Ok(s) => s,
            Err(e) => panic!("{file}: cannot read: {e}"),
        };
        for case in &suite.tests {
            total += 1;
            with_result += usize::from(case.result.is_some());
            if let Err(why) = run(case) {
                failures.push(format!(
                    "{file}: {:?}: `{}`: {why}",
                    case.name, case.expression
                ));
            }
        }
    }
    for f in &failures {
        eprintln!("TCK FAIL {f}");
    }
    eprintln!("TCK: {} of {total} cases pass", total - failures.len());
    assert!(total > 0, "no TCK cases found");
    // Guards against a reader that silently drops expected results.
    assert!(
        with_result + 1 >= total,
        "only {with_result} cases have a result"
    );
    assert!(failures.is_empty(), "{} TCK case(s) failed", failures.len());
}
