//! The traffic split of a Service.

use std::collections::HashMap;

use super::Scope;
use super::service::ServiceTarget;
use super::syntax::check_dns_label;
use crate::error::join_key;
use crate::manifest::TrafficTargetSpec;
use crate::snapshot::{TrafficRevision, TrafficTarget};

/// `spec.traffic` at `field`: entries, unique tags, percents summing to 100.
pub(super) fn traffic(
    target: &ServiceTarget<'_>,
    entries: &[TrafficTargetSpec],
    field: &str,
    scope: &mut Scope<'_>,
) -> Option<Vec<TrafficTarget>> {
    let mut targets = Vec::with_capacity(entries.len());
    let mut ok = true;
    let mut percents_ok = true;
    let mut sum: u32 = 0;
    let mut tags: HashMap<&str, usize> = HashMap::new();
    for (index, entry) in entries.iter().enumerate() {
        let entry_field = format!("{field}[{index}]");
        if entry.configuration_name.is_some() {
            scope.error(
                join_key(&entry_field, "configurationName"),
                "not supported: a Service routes to its own revisions; use revisionName or \
                 latestRevision",
            );
            ok = false;
        }
        let percent = match entry.percent {
            None => Some(0),
            Some(p) => match u32::try_from(p) {
                Ok(p) if p <= 100 => Some(p),
                _ => {
                    scope.error(
                        join_key(&entry_field, "percent"),
                        format!("must be from 0 to 100, found {p}"),
                    );
                    percents_ok = false;
                    None
                }
            },
        };
        sum = sum.saturating_add(percent.unwrap_or(0));
        let revision = traffic_revision(target, entry, &entry_field, scope);
        let tag = match &entry.tag {
            None => Some(None),
            Some(tag) => {
                let tag_field = join_key(&entry_field, "tag");
                if let Err(why) = check_dns_label(tag) {
                    scope.error(tag_field, why);
                    None
                } else if let Some(first) = tags.get(tag.as_str()) {
                    scope.error(
                        tag_field,
                        format!(
                            "tag {tag:?} is also used by {field}[{first}]; tags must be unique \
                             within a Service"
                        ),
                    );
                    None
                } else {
                    tags.insert(tag, index);
                    Some(Some(tag.clone()))
                }
            }
        };
        match (percent, revision, tag) {
            (Some(percent), Some(revision), Some(tag)) => targets.push(TrafficTarget {
                revision,
                percent,
                tag,
            }),
            _ => ok = false,
        }
    }
    if percents_ok && !entries.is_empty() && sum != 100 {
        scope.error(
            field,
            format!("the percents sum to {sum}; they must sum to 100"),
        );
        ok = false;
    }
    ok.then_some(targets)
}

/// `revisionName` xor `latestRevision` (unset `latestRevision` is true exactly when
/// `revisionName` is unset, as Knative defaults it).
fn traffic_revision(
    target: &ServiceTarget<'_>,
    entry: &TrafficTargetSpec,
    entry_field: &str,
    scope: &mut Scope<'_>,
) -> Option<TrafficRevision> {
    let latest = entry
        .latest_revision
        .unwrap_or(entry.revision_name.is_none());
    match (&entry.revision_name, latest) {
        (None, true) => Some(TrafficRevision::Latest),
        (Some(_), true) => {
            scope.error(
                entry_field,
                "set revisionName or latestRevision: true, not both",
            );
            None
        }
        (None, false) => {
            scope.error(
                join_key(entry_field, "latestRevision"),
                "latestRevision: false needs a revisionName",
            );
            None
        }
        (Some(name), false) => {
            let name_field = join_key(entry_field, "revisionName");
            let prefix = format!("{}-", target.name);
            if let Err(why) = check_dns_label(name) {
                scope.error(name_field, why);
                None
            } else if !name.starts_with(&prefix) {
                scope.error(
                    name_field,
                    format!(
                        "revision {name:?} is not a revision of Service {}/{}: its revisions \
                         are named {prefix}…",
                        target.namespace, target.name
                    ),
                );
                None
            } else {
                Some(TrafficRevision::Named(name.clone()))
            }
        }
    }
}
