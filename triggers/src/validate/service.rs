//! Knative Services of a set: written as such or created by tidegate Triggers, their names,
//! and their assembly from a revision template and a traffic split.

use std::collections::{BTreeMap, HashMap};

use super::pod::Sources;
use super::syntax::check_dns_label;
use super::template::revision_template;
use super::traffic::traffic;
use super::{Report, Scope};
use crate::error::{Origin, join_key};
use crate::fingerprint::template_fingerprint;
use crate::load::Located;
use crate::manifest::{
    AUTOSCALING_ANNOTATION_PREFIX, EmbeddedMeta, Manifest, ServiceSpec, TidegateTrigger,
};
use crate::snapshot::ServiceConfig;

/// Longest Service name: revision names `{name}-00001` must stay DNS labels (≤ 63).
const MAX_SERVICE_NAME_LEN: usize = 57;

/// Where a Service of the set is declared: its own document, or a tidegate Trigger's.
#[derive(Debug, Clone, Copy)]
pub(super) struct DeclaredService<'m> {
    origin: &'m Origin,
    /// The tidegate Trigger creating it.
    owner: Option<&'m str>,
}

/// The Service being validated and where its `spec` sits in the document.
#[derive(Debug, Clone, Copy)]
pub(super) struct ServiceTarget<'a> {
    pub(super) namespace: &'a str,
    pub(super) name: &'a str,
    /// The tidegate Trigger creating the Service, if any.
    pub(super) owner: Option<&'a str>,
    /// `spec` for a Service, `spec.service.spec` inside a tidegate Trigger.
    pub(super) spec_field: &'a str,
}

/// A DNS label short enough for `{name}-00001` to be one too.
pub(super) fn check_service_name(name: &str) -> Result<(), String> {
    check_dns_label(name)?;
    if name.len() > MAX_SERVICE_NAME_LEN {
        return Err(format!(
            "invalid Service name {name:?}: use at most {MAX_SERVICE_NAME_LEN} characters so \
             that revision names such as {name}-00001 fit in 63"
        ));
    }
    Ok(())
}

/// The Services of the set: written as such, then created by tidegate Triggers; and where
/// each (namespace, name) is first declared.
pub(super) fn validate_services<'m>(
    manifests: &'m [Located],
    sources: &Sources<'_, '_>,
    report: &mut Report,
) -> (
    Vec<ServiceConfig>,
    HashMap<(&'m str, &'m str), DeclaredService<'m>>,
) {
    let mut configs = Vec::new();
    let mut declared = HashMap::new();
    for located in manifests {
        let Manifest::Service(service) = &located.manifest else {
            continue;
        };
        let namespace = service.metadata.namespace();
        let name = service.metadata.name.as_str();
        declared
            .entry((namespace, name))
            .or_insert(DeclaredService {
                origin: &located.origin,
                owner: None,
            });
        let mut scope = Scope::new(&located.origin, report);
        warn_misplaced_scaling(
            &service.metadata.annotations,
            "metadata.annotations",
            "spec.template.metadata.annotations",
            &mut scope,
        );
        let target = ServiceTarget {
            namespace,
            name,
            owner: None,
            spec_field: "spec",
        };
        configs.extend(service_config(&target, &service.spec, sources, &mut scope));
    }
    for located in manifests {
        if let Manifest::TidegateTrigger(trigger) = &located.manifest {
            let mut scope = Scope::new(&located.origin, report);
            configs.extend(owned_service(
                trigger,
                &located.origin,
                &mut declared,
                sources,
                &mut scope,
            ));
        }
    }
    (configs, declared)
}

/// The Service a tidegate Trigger creates, if it has `spec.service`. Its name must not be
/// taken by a Service of the set or one another Trigger creates.
fn owned_service<'m>(
    trigger: &'m TidegateTrigger,
    origin: &'m Origin,
    declared: &mut HashMap<(&'m str, &'m str), DeclaredService<'m>>,
    sources: &Sources<'_, '_>,
    scope: &mut Scope<'_>,
) -> Option<ServiceConfig> {
    let inline = trigger.spec.service.as_ref()?;
    let (name, name_field) = owned_service_name(trigger)?;
    let namespace = trigger.metadata.namespace();
    let owner = trigger.metadata.name.as_str();
    if let Some(other) = &inline.metadata.namespace
        && other.as_str() != Some(namespace)
    {
        scope.error(
            "spec.service.metadata.namespace",
            format!(
                "must be absent or {namespace:?}: the Service is created in the Trigger's \
                 namespace"
            ),
        );
    }
    if let Err(why) = check_service_name(name) {
        if inline.metadata.name.is_some() {
            scope.error(name_field, why);
        } else if check_dns_label(name).is_ok() {
            // Only the length is wrong; other problems are reported for the Trigger's name.
            scope.error(
                name_field,
                format!(
                    "{why}; the Service this Trigger creates takes its name unless \
                     spec.service.metadata.name is set"
                ),
            );
        }
    }
    match declared.get(&(namespace, name)) {
        Some(first) => {
            let by = match first.owner {
                Some(other) => format!("Trigger {namespace}/{other} creates"),
                None => "is defined".to_owned(),
            };
            scope.error(
                name_field,
                format!(
                    "the Service {namespace}/{name} this Trigger creates collides with the one \
                     that {by} in {}",
                    first.origin.describe(),
                ),
            );
        }
        None => {
            let owner = Some(owner);
            declared.insert((namespace, name), DeclaredService { origin, owner });
        }
    }
    warn_misplaced_scaling(
        &inline.metadata.annotations,
        "spec.service.metadata.annotations",
        "spec.service.spec.template.metadata.annotations",
        scope,
    );
    let target = ServiceTarget {
        namespace,
        name,
        owner: Some(owner),
        spec_field: "spec.service.spec",
    };
    service_config(&target, &inline.spec, sources, scope)
}

/// The name of the Service a tidegate Trigger creates, and the field it comes from.
pub(super) fn owned_service_name(trigger: &TidegateTrigger) -> Option<(&str, &'static str)> {
    let inline = trigger.spec.service.as_ref()?;
    Some(match &inline.metadata.name {
        Some(name) => (name.as_str(), "spec.service.metadata.name"),
        None => (trigger.metadata.name.as_str(), "metadata.name"),
    })
}

/// Validates a Service's spec into its configuration.
pub(super) fn service_config(
    target: &ServiceTarget<'_>,
    spec: &ServiceSpec,
    sources: &Sources<'_, '_>,
    scope: &mut Scope<'_>,
) -> Option<ServiceConfig> {
    let template_field = join_key(target.spec_field, "template");
    let template_name = template_name(target, &spec.template.metadata, &template_field, scope);
    let template = revision_template(target, &spec.template, &template_field, sources, scope);
    let traffic = traffic(
        target,
        &spec.traffic,
        &join_key(target.spec_field, "traffic"),
        scope,
    );
    let (template, template_name, traffic) = (template?, template_name?, traffic?);
    let fingerprint = template_fingerprint(&template, template_name.as_deref());
    Some(ServiceConfig {
        namespace: target.namespace.to_owned(),
        name: target.name.to_owned(),
        owner: target.owner.map(str::to_owned),
        template,
        template_name,
        fingerprint,
        traffic,
        revisions: BTreeMap::new(),
    })
}

/// Autoscaling annotations on the Service's own metadata (at `field`) have no effect.
pub(super) fn warn_misplaced_scaling(
    annotations: &BTreeMap<String, String>,
    field: &str,
    template_field: &str,
    scope: &mut Scope<'_>,
) {
    for key in annotations.keys() {
        if key.starts_with(AUTOSCALING_ANNOTATION_PREFIX) {
            scope.warn(
                join_key(field, key),
                format!("ignored here: put autoscaling annotations on {template_field}"),
            );
        }
    }
}

/// `spec.template.metadata.name`: a DNS label starting with `{service}-`.
fn template_name(
    target: &ServiceTarget<'_>,
    metadata: &EmbeddedMeta,
    template_field: &str,
    scope: &mut Scope<'_>,
) -> Option<Option<String>> {
    let Some(name) = &metadata.name else {
        return Some(None);
    };
    let field = format!("{template_field}.metadata.name");
    if let Err(why) = check_dns_label(name) {
        scope.error(field, why);
        return None;
    }
    let prefix = format!("{}-", target.name);
    if !name.starts_with(&prefix) {
        scope.error(
            field,
            format!("revision name {name:?} must start with {prefix:?} (the Service's name)"),
        );
        return None;
    }
    Some(Some(name.clone()))
}
