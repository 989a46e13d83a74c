//! Backlog for queue-backed workloads: the broker's pending count of each Trigger whose
//! subscriber is a Service tidegate runs becomes that Service's revisions' `backlog`, split by
//! the traffic percentages, so the autoscaler wants `ceil(backlog / backlog-target)` pods even
//! when no request arrives. Every backend fills it the same way (the embedded log exactly,
//! JetStream and Kafka from their refreshed counts).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Dispatcher;
use super::delivery::Endpoint;
use crate::revision::Revision;
use crate::revision::route::SharedRoutes;

/// How often backlogs are read and published to revisions.
pub const BACKLOG_INTERVAL: Duration = Duration::from_secs(1);

/// Backlog per revision (keyed by the revision's address) for the triggers' current pending counts: each trigger's pending count
/// split over its Service's revisions by percent (rounded up, so a backlog never rounds away).
pub fn backlog_by_revision(
    dispatcher: &Dispatcher,
    routes: &SharedRoutes,
) -> HashMap<usize, (Arc<Revision>, u64)> {
    let routes = routes.load();
    let mut by_revision: HashMap<usize, (Arc<Revision>, u64)> = HashMap::new();
    for trigger in dispatcher.triggers().iter() {
        let Some(Endpoint::Service {
            namespace, name, ..
        }) = &trigger.subscriber
        else {
            continue;
        };
        let pending = trigger.pending();
        if pending == 0 {
            continue;
        }
        let Some(route) = routes.service(namespace, name) else {
            continue;
        };
        for (target, percent) in &route.targets {
            if *percent == 0 {
                continue;
            }
            let Some(revision) = target.resolve() else {
                continue;
            };
            let share = (pending * u64::from(*percent)).div_ceil(100);
            by_revision
                .entry(Arc::as_ptr(revision) as usize)
                .or_insert_with(|| (Arc::clone(revision), 0))
                .1 += share;
        }
    }
    by_revision
}

/// Publishes backlogs every [`BACKLOG_INTERVAL`] until `stop`; a revision whose backlog
/// changes is woken at once (a revision at zero with a backlog starts scaling without a
/// request). Revisions no trigger has a backlog for go back to 0.
pub async fn feed(dispatcher: Arc<Dispatcher>, routes: SharedRoutes, stop: CancellationToken) {
    let mut previous: HashMap<usize, (Arc<Revision>, u64)> = HashMap::new();
    let mut tick = tokio::time::interval(BACKLOG_INTERVAL);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => return,
        }
        let current = backlog_by_revision(&dispatcher, &routes);
        for (key, (revision, backlog)) in &current {
            let old = previous.get(key).map_or(0, |(_, b)| *b);
            revision.backlog.store(*backlog, Ordering::Relaxed);
            if old != *backlog {
                revision.changed.notify_one();
            }
        }
        for (key, (revision, _)) in &previous {
            if !current.contains_key(key) {
                revision.backlog.store(0, Ordering::Relaxed);
                revision.changed.notify_one();
            }
        }
        previous = current;
    }
}
