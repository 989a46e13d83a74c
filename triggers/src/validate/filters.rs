//! Compiling `spec.filter` and `spec.filters` into one [`Filter`].

use std::collections::BTreeMap;
use std::sync::Arc;

use super::Scope;
use crate::error::join_key;
use crate::filter::{CesqlFilter, Filter};
use crate::manifest::{SubscriptionsApiFilter, TriggerFilter};

/// The dialects of one `spec.filters` entry, in the order they are reported.
const DIALECTS: &str = "exact, prefix, suffix, all, any, not or cesql";

/// `spec.filters` when non-empty (as in Knative), else `spec.filter.attributes`.
pub(super) fn trigger_filter(
    filter: Option<&TriggerFilter>,
    filters: &[SubscriptionsApiFilter],
    scope: &mut Scope<'_>,
) -> Option<Filter> {
    let attributes =
        filter.map(|f| attributes_filter(&f.attributes, "spec.filter.attributes", scope));
    if filters.is_empty() {
        return attributes.unwrap_or_else(|| Some(Filter::default()));
    }
    if filter.is_some() {
        scope.warn(
            "spec.filter",
            "ignored because spec.filters is set (spec.filters takes precedence, as in Knative)",
        );
    }
    let filters = filter_list(filters, "spec.filters", scope);
    match attributes {
        // Invalid even though unused: Knative rejects it too.
        Some(None) => None,
        _ => filters.map(Filter::All),
    }
}

/// `{a: x, b: ""}` is `All[Exact a = x, Exists b]`.
fn attributes_filter(
    attributes: &BTreeMap<String, String>,
    field: &str,
    scope: &mut Scope<'_>,
) -> Option<Filter> {
    let mut filters = Vec::with_capacity(attributes.len());
    let mut ok = true;
    for (attribute, value) in attributes {
        if let Err(why) = check_attribute_name(attribute) {
            scope.error(join_key(field, attribute), why);
            ok = false;
        } else if value.is_empty() {
            filters.push(Filter::Exists {
                attribute: attribute.clone(),
            });
        } else {
            filters.push(Filter::Exact {
                attribute: attribute.clone(),
                value: value.clone(),
            });
        }
    }
    ok.then_some(Filter::All(filters))
}

fn filter_list(
    list: &[SubscriptionsApiFilter],
    field: &str,
    scope: &mut Scope<'_>,
) -> Option<Vec<Filter>> {
    let mut filters = Vec::with_capacity(list.len());
    let mut ok = true;
    for (index, entry) in list.iter().enumerate() {
        match dialect_filter(entry, &format!("{field}[{index}]"), scope) {
            Some(filter) => filters.push(filter),
            None => ok = false,
        }
    }
    ok.then_some(filters)
}

/// One subscriptions API filter object: exactly one dialect.
fn dialect_filter(
    entry: &SubscriptionsApiFilter,
    field: &str,
    scope: &mut Scope<'_>,
) -> Option<Filter> {
    let set: Vec<&str> = [
        ("exact", entry.exact.is_some()),
        ("prefix", entry.prefix.is_some()),
        ("suffix", entry.suffix.is_some()),
        ("all", entry.all.is_some()),
        ("any", entry.any.is_some()),
        ("not", entry.not.is_some()),
        ("cesql", entry.cesql.is_some()),
    ]
    .into_iter()
    .filter_map(|(name, is_set)| is_set.then_some(name))
    .collect();
    match set.len() {
        0 => {
            scope.error(field, format!("set exactly one of {DIALECTS}; found none"));
            return None;
        }
        1 => {}
        _ => {
            let found = set.join(" and ");
            scope.error(
                field,
                format!("set exactly one of {DIALECTS}; found {found}"),
            );
            return None;
        }
    }
    if let Some(map) = &entry.exact {
        let (attribute, value) = single_attribute(map, "exact", field, false, scope)?;
        return Some(Filter::Exact { attribute, value });
    }
    if let Some(map) = &entry.prefix {
        let (attribute, value) = single_attribute(map, "prefix", field, true, scope)?;
        return Some(Filter::Prefix { attribute, value });
    }
    if let Some(map) = &entry.suffix {
        let (attribute, value) = single_attribute(map, "suffix", field, true, scope)?;
        return Some(Filter::Suffix { attribute, value });
    }
    if let Some(list) = &entry.all {
        return filter_list(list, &format!("{field}.all"), scope).map(Filter::All);
    }
    if let Some(list) = &entry.any {
        return filter_list(list, &format!("{field}.any"), scope).map(Filter::Any);
    }
    if let Some(inner) = &entry.not {
        return dialect_filter(inner, &format!("{field}.not"), scope)
            .map(|f| Filter::Not(Box::new(f)));
    }
    let source = entry.cesql.as_deref().unwrap_or_default();
    match CesqlFilter::parse(source) {
        Ok(filter) => Some(Filter::Cesql(Arc::new(filter))),
        Err(error) => {
            scope.error(
                format!("{field}.cesql"),
                format!(
                    "invalid CESQL expression at column {}: {}",
                    error.column, error.message
                ),
            );
            None
        }
    }
}

/// The one `attribute: value` pair of an `exact`, `prefix` or `suffix` map.
fn single_attribute(
    map: &BTreeMap<String, String>,
    dialect: &str,
    field: &str,
    non_empty: bool,
    scope: &mut Scope<'_>,
) -> Option<(String, String)> {
    let field = format!("{field}.{dialect}");
    let mut entries = map.iter();
    let (Some((attribute, value)), None) = (entries.next(), entries.next()) else {
        let found = if map.is_empty() {
            "none".to_owned()
        } else {
            map.keys()
                .map(String::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        };
        scope.error(
            field,
            format!("must hold exactly one attribute; found {found}"),
        );
        return None;
    };
    let field = join_key(&field, attribute);
    if let Err(why) = check_attribute_name(attribute) {
        scope.error(field, why);
        return None;
    }
    if non_empty && value.is_empty() {
        scope.error(field, format!("a {dialect} value must not be empty"));
        return None;
    }
    Some((attribute.clone(), value.clone()))
}

/// A CloudEvents attribute name as Knative accepts it: `[a-z0-9]+`.
fn check_attribute_name(name: &str) -> Result<(), String> {
    if !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    {
        Ok(())
    } else {
        Err(format!(
            "invalid CloudEvents attribute name {name:?}: use only lowercase letters a-z and \
             digits 0-9"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attribute_names() {
        assert!(check_attribute_name("type").is_ok());
        assert!(check_attribute_name("ext2").is_ok());
        for bad in ["", "Type", "my-ext", "my_ext", "é"] {
            assert!(check_attribute_name(bad).is_err(), "{bad}");
        }
    }
}
