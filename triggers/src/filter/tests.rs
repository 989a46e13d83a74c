use std::collections::{BTreeMap, HashMap};

use proptest::prelude::*;

use super::*;

fn event(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn exact(attribute: &str, value: &str) -> Filter {
    Filter::Exact {
        attribute: attribute.to_owned(),
        value: value.to_owned(),
    }
}

fn prefix(attribute: &str, value: &str) -> Filter {
    Filter::Prefix {
        attribute: attribute.to_owned(),
        value: value.to_owned(),
    }
}

fn suffix(attribute: &str, value: &str) -> Filter {
    Filter::Suffix {
        attribute: attribute.to_owned(),
        value: value.to_owned(),
    }
}

fn exists(attribute: &str) -> Filter {
    Filter::Exists {
        attribute: attribute.to_owned(),
    }
}

#[test]
fn exact_is_whole_and_case_sensitive() {
    let e = event(&[("type", "com.example.created")]);
    assert!(exact("type", "com.example.created").matches(&e));
    assert!(!exact("type", "com.example").matches(&e));
    assert!(!exact("type", "COM.EXAMPLE.CREATED").matches(&e));
}

#[test]
fn prefix_and_suffix() {
    let e = event(&[("type", "com.example.created")]);
    assert!(prefix("type", "com.example.").matches(&e));
    assert!(!prefix("type", "org.").matches(&e));
    assert!(suffix("type", ".created").matches(&e));
    assert!(!suffix("type", ".deleted").matches(&e));
}

#[test]
fn missing_attribute_never_matches_a_value_filter() {
    let e = event(&[("type", "t")]);
    assert!(!exact("source", "").matches(&e));
    assert!(!prefix("source", "x").matches(&e));
    assert!(!suffix("source", "x").matches(&e));
    assert!(!exists("source").matches(&e));
    assert!(exists("type").matches(&e));
    assert!(Filter::Not(Box::new(exact("source", "x"))).matches(&e));
}

#[test]
fn all_any_not_and_empty_lists() {
    let e = event(&[("type", "a.b"), ("source", "/s")]);
    assert!(Filter::All(vec![]).matches(&e));
    assert!(Filter::Any(vec![]).matches(&e));
    assert!(Filter::default().matches(&event(&[])));
    assert!(Filter::All(vec![prefix("type", "a"), exact("source", "/s")]).matches(&e));
    assert!(!Filter::All(vec![prefix("type", "a"), exact("source", "/x")]).matches(&e));
    assert!(Filter::Any(vec![exact("type", "zzz"), suffix("type", ".b")]).matches(&e));
    assert!(!Filter::Any(vec![exact("type", "zzz"), suffix("type", ".c")]).matches(&e));
    assert!(!Filter::Not(Box::new(exists("type"))).matches(&e));
}

#[test]
fn nesting() {
    // type starts with "a." and (source is /s or not from /t), and not a test event.
    let filter = Filter::All(vec![
        prefix("type", "a."),
        Filter::Any(vec![
            exact("source", "/s"),
            Filter::Not(Box::new(exact("source", "/t"))),
        ]),
        Filter::Not(Box::new(Filter::All(vec![
            exists("test"),
            exact("test", "yes"),
        ]))),
    ]);
    assert!(filter.matches(&event(&[("type", "a.b"), ("source", "/s")])));
    assert!(filter.matches(&event(&[("type", "a.b"), ("source", "/u")])));
    assert!(!filter.matches(&event(&[("type", "a.b"), ("source", "/t")])));
    assert!(filter.matches(&event(&[("type", "a.b"), ("source", "/s"), ("test", "no")])));
    assert!(!filter.matches(&event(&[
        ("type", "a.b"),
        ("source", "/s"),
        ("test", "yes")
    ])));
    assert!(!filter.matches(&event(&[("type", "b.a"), ("source", "/s")])));
}

#[test]
fn hash_map_events_and_unsized_callers() {
    let mut e = HashMap::new();
    e.insert("type".to_owned(), "x".to_owned());
    let dynamic: &dyn Attributes = &e;
    assert!(exact("type", "x").matches(dynamic));
}

fn leaf() -> impl Strategy<Value = Filter> {
    let attribute = prop::sample::select(vec!["type", "source", "subject", "ext"]);
    let value = "[ab]{0,3}";
    prop_oneof![
        (attribute.clone(), value).prop_map(|(a, v)| exact(a, &v)),
        (attribute.clone(), value).prop_map(|(a, v)| prefix(a, &v)),
        (attribute.clone(), value).prop_map(|(a, v)| suffix(a, &v)),
        attribute.prop_map(exists),
    ]
}

fn any_filter() -> impl Strategy<Value = Filter> {
    leaf().prop_recursive(4, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Filter::All),
            prop::collection::vec(inner.clone(), 0..4).prop_map(Filter::Any),
            inner.prop_map(|f| Filter::Not(Box::new(f))),
        ]
    })
}

fn any_event() -> impl Strategy<Value = BTreeMap<String, String>> {
    prop::collection::btree_map(
        prop::sample::select(vec!["type", "source", "subject", "ext"]).prop_map(str::to_owned),
        "[ab]{0,3}",
        0..4,
    )
}

proptest! {
    #[test]
    fn double_negation_is_identity(f in any_filter(), e in any_event()) {
        let twice = Filter::Not(Box::new(Filter::Not(Box::new(f.clone()))));
        prop_assert_eq!(twice.matches(&e), f.matches(&e));
    }

    #[test]
    fn singleton_all_and_any_are_identity(f in any_filter(), e in any_event()) {
        prop_assert_eq!(Filter::All(vec![f.clone()]).matches(&e), f.matches(&e));
        prop_assert_eq!(Filter::Any(vec![f.clone()]).matches(&e), f.matches(&e));
    }

    #[test]
    fn de_morgan(f in any_filter(), g in any_filter(), e in any_event()) {
        let not_all = Filter::Not(Box::new(Filter::All(vec![f.clone(), g.clone()])));
        let any_not = Filter::Any(vec![Filter::Not(Box::new(f)), Filter::Not(Box::new(g))]);
        prop_assert_eq!(not_all.matches(&e), any_not.matches(&e));
    }

    #[test]
    fn every_prefix_and_suffix_of_a_value_matches(value in "\\PC{0,12}", cut in 0usize..13) {
        let e = event(&[("subject", &value)]);
        let chars: Vec<char> = value.chars().collect();
        let cut = cut.min(chars.len());
        let head: String = chars[..cut].iter().collect();
        let tail: String = chars[cut..].iter().collect();
        prop_assert!(prefix("subject", &head).matches(&e));
        prop_assert!(suffix("subject", &tail).matches(&e));
        prop_assert!(exact("subject", &value).matches(&e));
        prop_assert!(!prefix("other", &head).matches(&e));
    }
}

#[test]
fn cesql_filters_match_and_count_their_errors() {
    let filter = |source: &str| match crate::filter::CesqlFilter::parse(source) {
        Ok(f) => Filter::Cesql(std::sync::Arc::new(f)),
        Err(e) => panic!("{source}: {e}"),
    };
    let event: BTreeMap<String, String> = [
        ("type".to_owned(), "com.example.order.created".to_owned()),
        ("source".to_owned(), "/shop".to_owned()),
        ("amount".to_owned(), "250".to_owned()),
    ]
    .into();
    let big = filter("type LIKE 'com.example.order.%' AND INT(amount) > 100");
    assert!(big.matches(&event));
    let small = filter("type LIKE 'com.example.order.%' AND INT(amount) > 1000");
    assert!(!small.matches(&event));
    assert_eq!(big.cesql_errors() + small.cesql_errors(), 0);
    // A missing attribute is an evaluation error: no match, counted.
    let missing = Filter::All(vec![filter("region = 'eu'")]);
    assert!(!missing.matches(&event));
    assert!(!missing.matches(&event));
    assert_eq!(missing.cesql_errors(), 2);
    // `EXISTS` tests presence without an error.
    let exists = filter("NOT EXISTS region");
    assert!(exists.matches(&event));
    assert_eq!(exists.cesql_errors(), 0);
}
