//! Routes: a Knative Service's traffic split over its revisions, and tag routes.

use std::collections::HashMap;
use std::sync::Arc;

use super::Revision;

/// One traffic target.
#[derive(Clone)]
pub enum Target {
    /// A named revision.
    Fixed(Arc<Revision>),
    /// The latest ready revision: the first of these (newest first) that has been ready, else
    /// the newest (requests then wait for its first pod).
    Latest(Vec<Arc<Revision>>),
}

impl Target {
    pub fn resolve(&self) -> Option<&Arc<Revision>> {
        match self {
            Target::Fixed(revision) => Some(revision),
            Target::Latest(candidates) => candidates
                .iter()
                .find(|r| r.ever_ready())
                .or_else(|| candidates.first()),
        }
    }
}

/// Where requests for one host go: revisions with their share in percent.
#[derive(Clone)]
pub struct Route {
    pub namespace: String,
    pub service: String,
    /// (target, percent); percents add up to 100 when non-empty.
    pub targets: Vec<(Target, u32)>,
}

impl Route {
    /// Picks a revision for a uniformly random `roll` in [0, 100).
    pub fn pick_with(&self, roll: u32) -> Option<&Arc<Revision>> {
        let mut acc = 0;
        for (target, percent) in &self.targets {
            acc += percent;
            if roll < acc {
                return target.resolve();
            }
        }
        self.targets
            .iter()
            .rev()
            .find(|(_, p)| *p > 0)
            .and_then(|(t, _)| t.resolve())
    }

    /// Picks a revision by the traffic split.
    pub fn pick(&self) -> Option<&Arc<Revision>> {
        if let [(only, _)] = self.targets.as_slice() {
            return only.resolve();
        }
        self.pick_with(rand::random_range(0..100))
    }
}

/// Shared, atomically swapped routes: the registry writes them, the proxy and the dispatcher
/// read them.
pub type SharedRoutes = Arc<arc_swap::ArcSwap<RouteTable>>;

/// Every route by host label (`{service}` or `{tag}-{service}`) within a namespace.
#[derive(Default, Clone)]
pub struct RouteTable {
    hosts: HashMap<String, HashMap<String, Arc<Route>>>,
    /// Service routes by namespace, then service, for Trigger subscribers.
    services: HashMap<String, HashMap<String, Arc<Route>>>,
    /// One route per revision by namespace, then revision name: what Knative's ingress asks
    /// for with `Knative-Serving-Namespace` and `Knative-Serving-Revision`.
    revisions: HashMap<String, HashMap<String, Arc<Route>>>,
}

impl RouteTable {
    pub fn insert_service(&mut self, route: Arc<Route>) {
        self.hosts
            .entry(route.namespace.clone())
            .or_default()
            .insert(route.service.clone(), Arc::clone(&route));
        self.services
            .entry(route.namespace.clone())
            .or_default()
            .insert(route.service.clone(), route);
    }

    /// The route of one revision, by its name.
    pub fn insert_revision(&mut self, revision: &Arc<Revision>) {
        self.revisions
            .entry(revision.namespace.clone())
            .or_default()
            .insert(
                revision.name.clone(),
                Arc::new(Route {
                    namespace: revision.namespace.clone(),
                    service: revision.service.clone(),
                    targets: vec![(Target::Fixed(Arc::clone(revision)), 100)],
                }),
            );
    }

    /// The route of revision `name` in `namespace`.
    pub fn by_revision(&self, namespace: &str, name: &str) -> Option<&Arc<Route>> {
        self.revisions.get(namespace)?.get(name)
    }

    pub fn insert_tag(&mut self, tag: &str, route: Arc<Route>) {
        self.hosts
            .entry(route.namespace.clone())
            .or_default()
            .insert(format!("{tag}-{}", route.service), route);
    }

    /// The route for `Host: {label}.{namespace}.{domain}`.
    pub fn by_host(&self, host: &str, domain: &str) -> Option<&Arc<Route>> {
        let host = strip_port(host);
        if host.bytes().any(|b| b.is_ascii_uppercase()) {
            return self.by_host(&host.to_ascii_lowercase(), domain);
        }
        let rest = host.strip_suffix(domain)?.strip_suffix('.')?;
        let (label, namespace) = rest.split_once('.')?;
        if namespace.contains('.') {
            return None;
        }
        self.hosts.get(namespace)?.get(label)
    }

    /// The route of a Service; borrows the names, no allocation per delivery.
    pub fn service(&self, namespace: &str, service: &str) -> Option<&Arc<Route>> {
        self.services.get(namespace)?.get(service)
    }
}

/// `host:port` → `host`; hostnames never contain ':' (IPv6 literals are not service hosts).
fn strip_port(host: &str) -> &str {
    match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn revision(name: &str) -> Arc<Revision> {
        Revision::new(
            "default",
            "hello",
            name,
            "kpa",
            crate::revision::Limits {
                container_concurrency: 0,
                timeout: Duration::from_secs(1),
                response_start_timeout: None,
                queue_depth: 10,
                protocol: Default::default(),
            },
            Default::default(),
        )
    }

    #[test]
    fn split_follows_percentages() {
        let route = Route {
            namespace: "default".into(),
            service: "hello".into(),
            targets: vec![
                (Target::Fixed(revision("hello-00001")), 80),
                (Target::Fixed(revision("hello-00002")), 20),
            ],
        };
        let mut counts = HashMap::new();
        for roll in 0..100 {
            let r = route.pick_with(roll).expect("target");
            *counts.entry(r.name.clone()).or_insert(0) += 1;
        }
        assert_eq!(counts["hello-00001"], 80);
        assert_eq!(counts["hello-00002"], 20);
    }

    #[test]
    fn hosts_resolve_services_and_tags_only_under_the_domain() {
        let route = Arc::new(Route {
            namespace: "default".into(),
            service: "hello".into(),
            targets: vec![(Target::Fixed(revision("hello-00001")), 100)],
        });
        let mut table = RouteTable::default();
        table.insert_service(Arc::clone(&route));
        table.insert_tag("canary", route);
        assert!(
            table
                .by_host("hello.default.example.com", "example.com")
                .is_some()
        );
        assert!(
            table
                .by_host("hello.default.example.com:8080", "example.com")
                .is_some()
        );
        assert!(
            table
                .by_host("Hello.Default.Example.COM", "example.com")
                .is_some()
        );
        assert!(
            table
                .by_host("canary-hello.default.example.com", "example.com")
                .is_some()
        );
        assert!(
            table
                .by_host("hello.other.example.com", "example.com")
                .is_none()
        );
        assert!(
            table
                .by_host("hello.default.example.org", "example.com")
                .is_none()
        );
        assert!(
            table
                .by_host("x.hello.default.example.com", "example.com")
                .is_none()
        );
        assert!(
            table
                .by_host("hello.default.evilexample.com", "example.com")
                .is_none()
        );
        assert!(table.by_host("example.com", "example.com").is_none());
    }
}
