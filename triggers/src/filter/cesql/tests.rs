//! Focused tests for cases the conformance suite does not cover.

#![allow(clippy::unwrap_used)]

use std::borrow::Cow;

use super::{
    AttrValue, EvalError, EvalErrorKind, Event, Expression, MAX_DEPTH, MAX_SOURCE_LEN, ParseError,
    Value,
};

/// An event with the required attributes plus a few extensions.
struct TestEvent(Vec<(&'static str, AttrValue<'static>)>);

impl Event for TestEvent {
    fn attribute(&self, name: &str) -> Option<AttrValue<'_>> {
        self.0
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.clone())
    }
}

fn event() -> TestEvent {
    let s = |v: &'static str| AttrValue::String(Cow::Borrowed(v));
    TestEvent(vec![
        ("specversion", s("1.0")),
        ("id", s("id-1")),
        ("source", s("https://example.com/src")),
        ("type", s("com.example.created")),
        ("text", s("Hello World")),
        ("num", s("42")),
        ("int", AttrValue::Integer(7)),
        ("yes", AttrValue::Boolean(true)),
        ("uni", s("日本語")),
    ])
}

fn eval(src: &str) -> (Value<'static>, Option<EvalError>) {
    let expr = Expression::parse(src).unwrap_or_else(|e| panic!("{src}: {e}"));
    let ev = event();
    let (v, e) = expr.evaluate(&ev);
    (v.into_owned(), e)
}

fn parse_err(src: &str) -> ParseError {
    match Expression::parse(src) {
        Ok(_) => panic!("{src}: parsed"),
        Err(e) => e,
    }
}

fn s(v: &str) -> Value<'static> {
    Value::String(Cow::Owned(v.to_owned()))
}

const fn i(v: i32) -> Value<'static> {
    Value::Integer(v)
}

const fn b(v: bool) -> Value<'static> {
    Value::Boolean(v)
}

#[track_caller]
fn ok(src: &str, want: Value<'static>) {
    assert_eq!(eval(src), (want, None), "{src}");
}

#[track_caller]
fn err(src: &str, want: Value<'static>, want_kind: EvalErrorKind) {
    let (v, e) = eval(src);
    assert_eq!((v, e.map(|e| e.kind)), (want, Some(want_kind)), "{src}");
}

#[test]
fn string_literal_escapes() {
    ok(r"'a\'b'", s("a'b"));
    ok(r#""a\"b""#, s("a\"b"));
    ok("'it''s'", s("it's"));
    ok(r#""say ""hi""""#, s("say \"hi\""));
    // Other backslashes are kept as written.
    ok(r"'a\\b'", s(r"a\\b"));
    ok(r"'a\nb'", s(r"a\nb"));
    ok(r#"'a\"b'"#, s(r#"a\"b"#));
    ok("'日本'", s("日本"));
    assert_eq!(parse_err(r"'abc\'").column, 1);
    assert!(parse_err("'abc").message.contains("unterminated"));
}

#[test]
fn like_escapes_and_wildcards() {
    ok(r"'a%' LIKE 'a\%'", b(true));
    ok(r"'ab' LIKE 'a\%'", b(false));
    ok(r"'a_' LIKE 'a\_'", b(true));
    ok(r"'ab' LIKE 'a\_'", b(false));
    // A backslash before anything else matches itself.
    ok(r"'a\b' LIKE 'a\b'", b(true));
    ok(r"'ab' LIKE 'a\b'", b(false));
    ok(r#""a\\" LIKE "a\\""#, b(true));
    ok(r"'a\x' LIKE 'a\_'", b(false));
    ok("'' LIKE ''", b(true));
    ok("'' LIKE '%'", b(true));
    ok("'x' LIKE ''", b(false));
    ok("'abc' LIKE '%%'", b(true));
    ok("'abcabc' LIKE '%abc'", b(true));
    ok("'ab' LIKE 'ab%ab'", b(false));
    ok("'abab' LIKE 'ab%ab'", b(true));
    ok("'aaa' LIKE 'a%a%a'", b(true));
    ok("'aa' LIKE 'a%a%a'", b(false));
    ok("'aXbXc' LIKE '%X_X%'", b(true));
    ok("'Hello' LIKE 'hello'", b(false));
    // `_` is one character, not one byte.
    ok("uni LIKE '___'", b(true));
    ok("uni LIKE '__'", b(false));
    ok("uni LIKE '%本_'", b(true));
    ok("'é' LIKE '_'", b(true));
    ok("text NOT LIKE 'Hello%'", b(false));
    ok("int LIKE '7'", b(true));
    ok("-2147483648 LIKE '-21%8'", b(true));
}

/// A slow, obviously correct LIKE matcher over characters.
fn reference_like(text: &[char], pat: &[char]) -> bool {
    let (c, rest, escaped) = match pat {
        [] => return text.is_empty(),
        ['\\', n @ ('%' | '_'), rest @ ..] => (*n, rest, true),
        [c, rest @ ..] => (*c, rest, false),
    };
    match (c, escaped) {
        ('%', false) => (0..=text.len()).any(|k| reference_like(&text[k..], rest)),
        ('_', false) => !text.is_empty() && reference_like(&text[1..], rest),
        _ => text.first() == Some(&c) && reference_like(&text[1..], rest),
    }
}

#[test]
fn like_agrees_with_reference() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let alphabet = ['a', 'b', '%', '_', '\\', 'é'];
    for _ in 0..20_000 {
        let mut word = |max: u64| -> String {
            (0..rng.below(max))
                .map(|_| alphabet[rng.below(alphabet.len() as u64) as usize])
                .collect()
        };
        let text = word(8);
        let pat = word(7);
        let compiled = super::like::LikePattern::new(&pat);
        let t: Vec<char> = text.chars().collect();
        let p: Vec<char> = pat.chars().collect();
        assert_eq!(
            compiled.matches(&text),
            reference_like(&t, &p),
            "{text:?} LIKE {pat:?}"
        );
    }
}

#[test]
fn integer_literals() {
    ok("2147483647", i(i32::MAX));
    ok("-2147483648", i(i32::MIN));
    ok("- 2147483648", i(i32::MIN));
    ok("+5", i(5));
    ok("5 + +3", i(8));
    ok("5-3", i(2));
    ok("5--3", i(8));
    ok("007", i(7));
    let e = parse_err("2147483648");
    assert_eq!((e.column, e.message.contains("32 bits")), (1, true));
    assert_eq!(parse_err("1 + -2147483649").column, 5);
    assert_eq!(parse_err("-(2147483648)").column, 3);
    assert_eq!(parse_err("99999999999999999999999").column, 1);
    assert_eq!(parse_err("+ 5").column, 1);
    assert_eq!(parse_err("+'5'").column, 1);
}

#[test]
fn integer_overflow_and_division() {
    use EvalErrorKind::Math;
    err("2147483647 + 1", i(i32::MAX), Math);
    err("-2147483648 - 1", i(i32::MIN), Math);
    err("65536 * 65536", i(i32::MAX), Math);
    err("65536 * -65536", i(i32::MIN), Math);
    err("-2147483648 / -1", i(i32::MAX), Math);
    err("--2147483648", i(i32::MAX), Math);
    err("-(-2147483648)", i(i32::MAX), Math);
    ok("-2147483648 % -1", i(0));
    ok("-7 / 2", i(-3));
    ok("-7 % 2", i(-1));
    ok("7 % -2", i(1));
    err("7 % 0", i(0), Math);
    // Enclosing operations yield their zero value after an error.
    err("2147483647 + 1 - 5", i(0), Math);
    err("(1 / 0) + 1", i(0), Math);
    err("ABS(-2147483648) + 0", i(0), Math);
    err("1 / 0 = 0", b(false), Math);
}

#[test]
fn error_propagation() {
    use EvalErrorKind::{Cast, MissingAttribute};
    err("missing", b(false), MissingAttribute);
    err("NOT (missing = 1)", b(false), MissingAttribute);
    err("missing OR TRUE", b(false), MissingAttribute);
    ok("TRUE OR missing", b(true));
    ok("FALSE AND missing", b(false));
    err("LENGTH(missing)", i(0), MissingAttribute);
    err("CONCAT('a', missing)", s(""), MissingAttribute);
    err("UPPER(missing)", s(""), MissingAttribute);
    ok("EXISTS missing", b(false));
    err("missing IN (1)", b(false), MissingAttribute);
    err("1 NOT IN (2, missing)", b(false), MissingAttribute);
    ok("1 IN (1, missing)", b(true));
    // The operator's own failed cast yields the cast's fallback value.
    err("NOT 'maybe'", b(true), Cast);
    err("'abc' + 1", i(1), Cast);
    err("'x' = 0", b(true), Cast);
    err("1 IN ('abc', 1)", b(false), Cast);
    err("NOT NOT 'maybe'", b(false), Cast);
    // The first error is reported.
    let (_, e) = eval("missing + (1 / 0)");
    let e = e.unwrap();
    assert_eq!(e.kind, MissingAttribute);
    assert!(e.message.contains("missing"), "{e}");
}

#[test]
fn casts() {
    use EvalErrorKind::Cast;
    // Integer to Boolean only explicitly (the conformance suite wants `NOT 10`
    // to raise a cast error).
    err("NOT 10", b(true), Cast);
    err("1 AND TRUE", b(false), Cast);
    err("1 = TRUE", b(false), Cast);
    ok("BOOL(10)", b(true));
    ok("TRUE = 1", b(true));
    ok("TRUE + TRUE", i(2));
    ok("'TRUE' = TRUE", b(true));
    ok("'yes' = 'yes'", b(true));
    ok("num = 42", b(true));
    ok("num + 1", i(43));
    ok("int = '7'", b(true));
    ok("yes = 'true'", b(true));
    ok("yes AND 'false'", b(false));
    ok("INT('+5')", i(5));
    ok("INT('-0')", i(0));
    err("INT(' 5')", i(0), Cast);
    err("INT('2147483648')", i(0), Cast);
    err("INT('')", i(0), Cast);
    ok("INT(yes)", i(1));
    ok("STRING(-2147483648)", s("-2147483648"));
    ok("STRING(int)", s("7"));
    ok("BOOL('fAlSe')", b(false));
    err("BOOL('1')", b(false), Cast);
    ok("IS_INT('-12')", b(true));
    ok("IS_INT(12)", b(true));
    ok("IS_INT('1.5')", b(false));
    ok("IS_INT(TRUE)", b(false));
    ok("IS_BOOL('True')", b(true));
    ok("IS_BOOL(FALSE)", b(true));
    ok("IS_BOOL(1)", b(false));
    err("2 < 'x'", b(false), Cast);
}

#[test]
fn in_operator() {
    ok("type IN ('a', 'com.example.created')", b(true));
    ok("type NOT IN ('a', 'b')", b(true));
    ok("int IN ('6', '7')", b(true));
    ok("'7' IN (int)", b(true));
    ok("yes IN (FALSE, 'TRUE')", b(true));
    err("yes IN (FALSE, 'no')", b(false), EvalErrorKind::Cast);
    ok("1 IN (1 + 0)", b(true));
    assert!(
        parse_err("1 IN ()")
            .message
            .contains("expected an expression")
    );
    assert_eq!(parse_err("1 IN 1").column, 6);
}

#[test]
fn functions() {
    use EvalErrorKind::{FunctionEvaluation, MissingFunction};
    ok("LENGTH(uni)", i(3));
    ok("LENGTH(-10)", i(3));
    ok("CONCAT(1, TRUE, 'x')", s("1truex"));
    ok("CONCAT_WS('-', 1, 2, 3)", s("1-2-3"));
    ok("CONCAT_WS(',', '', '')", s(","));
    ok("LOWER('ÀB')", s("àb"));
    ok("UPPER('straße')", s("STRASSE"));
    ok("LOWER('ΟΔΟΣ')", s("οδος"));
    ok("LOWER('ǅ')", s("ǆ"));
    ok("TRIM('\u{3000} x \t\n')", s("x"));
    ok("TRIM('\u{1}x')", s("\u{1}x"));
    ok("LEFT(uni, 2)", s("日本"));
    ok("RIGHT(uni, 2)", s("本語"));
    ok("LEFT(uni, 0)", s(""));
    ok("RIGHT(uni, 0)", s(""));
    err("RIGHT(uni, -1)", s("日本語"), FunctionEvaluation);
    ok("SUBSTRING(uni, 3)", s("語"));
    ok("SUBSTRING(uni, -3)", s("日本語"));
    ok("SUBSTRING(uni, 2, 0)", s(""));
    ok("SUBSTRING(uni, 2, 2147483647)", s("本語"));
    ok("SUBSTRING(uni, -2, 1)", s("本"));
    err("SUBSTRING(uni, 1, -1)", s(""), FunctionEvaluation);
    err("SUBSTRING(uni, 4)", s(""), FunctionEvaluation);
    err("SUBSTRING('', 1)", s(""), FunctionEvaluation);
    ok("SUBSTRING('', 0)", s(""));
    ok("ABS(-2147483647)", i(2147483647));
    ok("abs(num)", i(42));
    ok("Concat_Ws(',', 'a')", s("a"));
    err("FOO(1)", b(false), MissingFunction);
    err("ABS(1, 2)", b(false), MissingFunction);
    err("SUBSTRING('a')", b(false), MissingFunction);
    err("CONCAT_WS()", b(false), MissingFunction);
    err("NOT FOO()", b(false), MissingFunction);
    // Strict parsing rejects them up front, at the function name.
    let e = Expression::parse_strict("1 = ABS(1, 2)").unwrap_err();
    assert_eq!(e.column, 5);
    assert!(e.message.contains("ABS"), "{e}");
    assert!(Expression::parse_strict("ABS(1)").is_ok());
    assert_eq!(parse_err("ABS1(2)").column, 1);
    assert_eq!(parse_err("my_attr").column, 1);
}

#[test]
fn results_borrow_when_possible() {
    let ev = event();
    let borrowed = |src: &str| {
        let expr = Expression::parse(src).unwrap();
        let (v, e) = expr.evaluate(&ev);
        assert_eq!(e, None, "{src}");
        matches!(v, Value::String(Cow::Borrowed(_)))
    };
    for src in [
        "text",
        "'lit'",
        "TRIM(text)",
        "LOWER(type)",
        "LEFT(text, 5)",
        "RIGHT(text, 5)",
        "SUBSTRING(text, 2, 3)",
        "CONCAT(text)",
        "STRING(yes)",
        "UPPER('ÀB')",
        "LOWER(uni)",
    ] {
        assert!(borrowed(src), "{src} allocated");
    }
    assert!(!borrowed("UPPER(text)"));
    assert!(!borrowed("LOWER('ΣΑ')"));
    assert!(!borrowed("STRING(int)"));
}

#[test]
fn precedence_and_associativity() {
    ok("1 + 2 * 3", i(7));
    ok("(1 + 2) * 3", i(9));
    ok("10 - 4 - 3", i(3));
    ok("100 / 10 / 5", i(2));
    ok("NOT TRUE = FALSE", b(true));
    ok("- 2 * 3", i(-6));
    ok("1 < 2 = TRUE", b(true));
    // LIKE binds tighter than binary operators: 1 + ('2' LIKE '2').
    ok("1 + '2' LIKE '2'", i(2));
    // Unary operators bind tighter than LIKE: (NOT 'true') LIKE 'f%'.
    ok("NOT 'true' LIKE 'f%'", b(true));
    // AND, OR and XOR share one level and associate to the right, as the
    // grammar's `<assoc=right>` (and Knative) has it.
    ok("TRUE OR TRUE AND FALSE", b(true));
    ok("FALSE AND FALSE OR TRUE", b(false));
    ok("TRUE XOR TRUE OR TRUE", b(false));
    ok("TRUE XOR FALSE XOR TRUE", b(false));
    ok("FALSE XOR TRUE AND TRUE", b(true));
    ok("TRUE AND TRUE XOR TRUE", b(false));
    ok("int > 5 AND\n\ttext LIKE 'Hello%'\r\n", b(true));
}

#[test]
fn names_and_keywords() {
    ok("EXISTS TEXT", b(true));
    ok("exists Specversion", b(true));
    ok("Type = 'com.example.created'", b(true));
    ok("tRuE aNd NoT fAlSe", b(true));
    let required = TestEvent(Vec::new());
    let expr = Expression::parse("EXISTS id AND EXISTS source").unwrap();
    assert_eq!(expr.evaluate(&required), (b(true), None));
    let expr = Expression::parse("EXISTS 123").unwrap();
    assert_eq!(expr.evaluate(&required), (b(false), None));
    assert_eq!(parse_err("in = 1").column, 1);
    assert_eq!(parse_err("EXISTS 'id'").column, 8);
    assert_eq!(parse_err("EXISTS").column, 7);
}

#[test]
fn parse_error_columns() {
    let cases = [
        ("1 +", 4),
        ("1 # 2", 3),
        ("'é' = #", 7),
        ("x LIKE 123", 8),
        ("(1", 3),
        ("1)", 2),
        ("ABC(", 5),
        ("a NOT b", 7),
        ("1 2", 3),
        ("a ! b", 3),
        ("", 1),
        ("  ", 3),
        ("f(1,)", 5),
        ("'日本' = \"x", 8),
    ];
    for (src, column) in cases {
        let e = parse_err(src);
        assert_eq!(e.column, column, "{src:?}: {e}");
        assert!(!e.message.is_empty());
    }
    assert_eq!(
        parse_err("1 +").to_string(),
        format!("column 4: {}", parse_err("1 +").message)
    );
}

#[test]
fn depth_limit() {
    let nested = |n: usize| format!("{}1{}", "(".repeat(n), ")".repeat(n));
    ok(&nested(MAX_DEPTH), i(1));
    let e = parse_err(&nested(MAX_DEPTH + 1));
    assert!(e.message.contains("MAX_DEPTH"), "{e}");
    assert_eq!(e.column, MAX_DEPTH + 1);
    for deep in [
        "(".repeat(10_000),
        format!("{}TRUE", "NOT ".repeat(10_000)),
        format!("{}1", "-".repeat(10_000)),
        format!("{}1{}", "ABS(".repeat(10_000), ")".repeat(10_000)),
        format!("1{}", " IN (1)".repeat(1_000)),
        format!("'a'{}", " LIKE 'a'".repeat(1_000)),
    ] {
        // Inputs over the length limit fail on it first; the depth limit holds
        // on its own too.
        let e = parse_err(&deep);
        assert!(e.message.contains("MAX_DEPTH") || e.message.contains("MAX_SOURCE_LEN"));
        let e = super::parser::parse_unlimited(&deep, false).unwrap_err();
        assert!(e.message.contains("MAX_DEPTH"), "{e}");
    }
    let e = parse_err(&"(".repeat(10_000));
    assert!(e.message.contains("MAX_DEPTH"), "{e}");
    let e = parse_err(&"-".repeat(10_000));
    assert!(e.message.contains("MAX_DEPTH"), "{e}");
    let e = parse_err(&format!("{}1", "NOT ".repeat(4_000)));
    assert!(e.message.contains("MAX_DEPTH"), "{e}");
    ok(&format!("{}TRUE", "NOT ".repeat(MAX_DEPTH)), b(true));
    ok(&format!("{}1", "-".repeat(MAX_DEPTH + 1)), i(-1));
    // Long flat chains are not nesting.
    let chain = vec!["type = 'x'"; 1000].join(" OR ");
    ok(&chain, b(false));
    let sum = vec!["1"; 4000].join("+");
    ok(&sum, i(4000));
}

#[test]
fn deepest_expression_on_a_small_stack() {
    // Each parenthesis level nests all four binary operator levels: the
    // tallest tree the depth limit allows. Parsing and evaluating it needs
    // under 128 KiB of stack in release builds; debug builds need more.
    let mut src = String::from("1");
    for _ in 0..MAX_DEPTH {
        src = format!("(TRUE AND 1 = 1 + 2 * {src})");
    }
    let worker = std::thread::Builder::new()
        .stack_size(512 * 1024)
        .spawn(move || {
            let expr = Expression::parse(&src).unwrap();
            expr.evaluate(&event()).0.into_owned()
        })
        .unwrap();
    assert_eq!(worker.join().unwrap(), b(true));
}

#[test]
fn length_limit() {
    let long = "1".repeat(1 << 20);
    let e = parse_err(&long);
    assert!(e.message.contains("MAX_SOURCE_LEN"), "{e}");
    assert_eq!(e.column, MAX_SOURCE_LEN + 1);
    let at_limit = format!("'{}'", "a".repeat(MAX_SOURCE_LEN - 2));
    assert!(Expression::parse(&at_limit).is_ok());
    assert!(Expression::parse(&format!("{at_limit} ")).is_err());
}

#[test]
fn expression_traits() {
    fn assert_traits<T: Clone + std::fmt::Debug + Send + Sync + Eq + std::hash::Hash>() {}
    assert_traits::<Expression>();
    let a = Expression::parse("id = 'x'").unwrap();
    let b = Expression::parse("id = 'x'").unwrap();
    let c = Expression::parse("id  = 'x'").unwrap();
    assert_eq!(a, b);
    assert_ne!(a, c);
    assert_eq!(a.source(), "id = 'x'");
    assert_eq!(format!("{a:?}"), "Expression(\"id = 'x'\")");
    assert_eq!(a.clone().source(), a.source());
}

#[test]
fn matches_is_filter_semantics() {
    let ev = event();
    let m = |src: &str| Expression::parse(src).unwrap().matches(&ev);
    assert!(m("type LIKE 'com.example.%'"));
    assert!(!m("type LIKE 'org.%'"));
    assert!(!m("text")); // not a Boolean
    assert!(!m("NOT (missing = 1)")); // true, but with an error
    assert!(!m("NOT 10"));
    assert!(m("TRUE OR missing"));
    let dyn_ev: &dyn Event = &ev;
    assert!(Expression::parse("EXISTS uni").unwrap().matches(dyn_ev));
}

#[test]
fn value_display() {
    assert_eq!(s("a b").to_string(), "a b");
    assert_eq!(i(-3).to_string(), "-3");
    assert_eq!(b(true).to_string(), "true");
    let e = eval("1 / 0").1.unwrap();
    assert!(e.to_string().starts_with("math error: "), "{e}");
}

/// xorshift64: a small deterministic generator for the fuzz-style tests.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn exercise(src: &str, ev: &TestEvent) {
    if let Ok(expr) = Expression::parse(src) {
        let (v, e) = expr.evaluate(ev);
        let filter = v == Value::Boolean(true) && e.is_none();
        assert_eq!(expr.matches(ev), filter, "{src:?}");
    }
}

#[test]
fn fuzz_random_bytes() {
    let mut rng = Rng(0x1234_5678_9abc_def1);
    let ev = event();
    for _ in 0..20_000 {
        let len = rng.below(40) as usize;
        let bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        exercise(&String::from_utf8_lossy(&bytes), &ev);
    }
}

#[test]
fn fuzz_token_soup() {
    const WORDS: [&str; 48] = [
        "(",
        ")",
        ",",
        "+",
        "-",
        "*",
        "/",
        "%",
        "=",
        "!=",
        "<>",
        "<",
        "<=",
        ">",
        ">=",
        "AND",
        "OR",
        "XOR",
        "NOT",
        "LIKE",
        "IN",
        "EXISTS",
        "TRUE",
        "false",
        "0",
        "1",
        "-1",
        "2147483647",
        "-2147483648",
        "'a%'",
        "'_b'",
        "'\\%'",
        "\"x\"",
        "''",
        "text",
        "num",
        "int",
        "yes",
        "uni",
        "missing",
        "ABS(",
        "LENGTH(",
        "CONCAT(",
        "CONCAT_WS(",
        "SUBSTRING(",
        "LEFT(",
        "INT(",
        "BOOL(",
    ];
    let mut rng = Rng(0xdead_beef_cafe_f00d);
    let ev = event();
    for _ in 0..30_000 {
        let n = rng.below(14) as usize;
        let src: Vec<&str> = (0..n)
            .map(|_| WORDS[rng.below(WORDS.len() as u64) as usize])
            .collect();
        exercise(&src.join(" "), &ev);
    }
}

#[test]
fn fuzz_generated_expressions() {
    fn gen_expr(rng: &mut Rng, depth: u32, out: &mut String) {
        const ATOMS: [&str; 12] = [
            "1", "-7", "0", "'12'", "'abc'", "TRUE", "FALSE", "text", "num", "int", "yes",
            "missing",
        ];
        if depth == 0 || rng.below(3) == 0 {
            out.push_str(ATOMS[rng.below(ATOMS.len() as u64) as usize]);
            return;
        }
        match rng.below(8) {
            0 => {
                out.push_str(["NOT ", "-"][rng.below(2) as usize]);
                gen_expr(rng, depth - 1, out);
            }
            1 => {
                out.push('(');
                gen_expr(rng, depth - 1, out);
                out.push_str([") LIKE '%1%'", ") NOT LIKE '_b%'"][rng.below(2) as usize]);
            }
            2 => {
                out.push('(');
                gen_expr(rng, depth - 1, out);
                out.push_str(") IN (");
                gen_expr(rng, depth - 1, out);
                out.push_str(", 'x')");
            }
            3 => {
                const FNS: [&str; 10] = [
                    "ABS", "LENGTH", "LOWER", "UPPER", "TRIM", "INT", "BOOL", "STRING", "IS_INT",
                    "IS_BOOL",
                ];
                out.push_str(FNS[rng.below(FNS.len() as u64) as usize]);
                out.push('(');
                gen_expr(rng, depth - 1, out);
                out.push(')');
            }
            4 => {
                out.push_str(
                    ["SUBSTRING(", "LEFT(", "RIGHT(", "CONCAT_WS("][rng.below(4) as usize],
                );
                gen_expr(rng, depth - 1, out);
                out.push_str(", ");
                gen_expr(rng, depth - 1, out);
                out.push(')');
            }
            _ => {
                const OPS: [&str; 14] = [
                    " AND ", " OR ", " XOR ", " = ", " != ", " < ", " >= ", " + ", " - ", " * ",
                    " / ", " % ", " <> ", " <= ",
                ];
                out.push('(');
                gen_expr(rng, depth - 1, out);
                out.push_str(OPS[rng.below(OPS.len() as u64) as usize]);
                gen_expr(rng, depth - 1, out);
                out.push(')');
            }
        }
    }
    let mut rng = Rng(0x0bad_5eed_1234_4321);
    let ev = event();
    let mut parsed = 0;
    for _ in 0..20_000 {
        let mut src = String::new();
        gen_expr(&mut rng, 6, &mut src);
        parsed += usize::from(Expression::parse(&src).is_ok());
        exercise(&src, &ev);
    }
    assert_eq!(parsed, 20_000, "generated expressions are all valid");
}
