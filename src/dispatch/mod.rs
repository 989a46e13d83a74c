//! Per-trigger delivery: pull from the broker, filter, deliver with retries, dead-letter, reply,
//! and acknowledge only after the subscriber or the dead-letter sink accepted.
//!
//! Retries live here and only here: the broker redelivers solely what was never acknowledged
//! (after a restart), so retries never multiply.

pub mod backlog;
pub mod backoff;
pub mod delivery;
pub mod error;
pub mod stats;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use brokers::{Broker, Delivery, SubscribeOptions, Subscription};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use triggers::{DeliveryOrder, Destination, TriggerConfig};

use crate::metrics::{DropReason, Metrics};
use crate::revision::route::SharedRoutes;
use crate::topology::Topology;
pub use delivery::Clients;
use delivery::{Endpoint, Outcome, ReplyOutcome};
use stats::TriggerCounters;

/// One trigger as the dispatcher runs it and the admin API shows it.
pub struct TriggerState {
    pub config: TriggerConfig,
    /// Resolved subscriber, if it could be resolved.
    pub subscriber: Option<Endpoint>,
    pub dead_letter: Option<Endpoint>,
    pub broker: Option<Arc<dyn Broker>>,
    /// Why the trigger cannot run with this configuration, if it cannot.
    pub not_ready: Option<String>,
    /// Why a trigger that should run is not consuming right now (subscription cannot be opened,
    /// reads fail); cleared once it consumes again.
    problem: Mutex<Option<String>>,
    pub counters: TriggerCounters,
    /// Kinds of invalid records already logged (each is logged once).
    logged_invalid: Mutex<HashSet<&'static str>>,
}

impl TriggerState {
    /// Why the trigger is not ready (configuration or a live subscription problem), or `None`.
    pub fn problem(&self) -> Option<String> {
        self.not_ready.clone().or_else(|| {
            self.problem
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone()
        })
    }

    fn set_problem(&self, problem: Option<String>) {
        let mut current = self
            .problem
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if *current != problem {
            match &problem {
                Some(p) => {
                    tracing::warn!(trigger = %subscription_name(&self.config), reason = %p, "Trigger not ready.")
                }
                None => {
                    tracing::info!(trigger = %subscription_name(&self.config), "Trigger running.")
                }
            }
            *current = problem;
        }
    }

    /// Events appended to the broker this trigger has not finished yet.
    pub fn pending(&self) -> u64 {
        self.broker
            .as_ref()
            .map_or(0, |b| b.pending(&subscription_name(&self.config)))
    }
}

/// The durable subscription name of a trigger in its broker.
pub fn subscription_name(trigger: &TriggerConfig) -> String {
    format!("{}/{}", trigger.namespace, trigger.name)
}

struct Worker {
    state: Arc<TriggerState>,
    stop: CancellationToken,
}

/// Runs one worker per ready trigger and swaps them when manifests change.
pub struct Dispatcher {
    client: Clients,
    routes: SharedRoutes,
    metrics: Arc<Metrics>,
    /// Touched only when manifests change and at shutdown, never per event.
    workers: Mutex<HashMap<(String, String), Worker>>,
    states: ArcSwap<Vec<Arc<TriggerState>>>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
}

impl Dispatcher {
    pub fn new(client: Clients, routes: SharedRoutes, metrics: Arc<Metrics>) -> Self {
        Self {
            client,
            routes,
            metrics,
            workers: Mutex::new(HashMap::new()),
            states: ArcSwap::from_pointee(Vec::new()),
            tracker: TaskTracker::new(),
            shutdown: CancellationToken::new(),
        }
    }

    /// Every trigger with its state, sorted by namespace and name.
    pub fn triggers(&self) -> Arc<Vec<Arc<TriggerState>>> {
        self.states.load_full()
    }

    /// Brings the running workers in line with `triggers`: unchanged ones keep running, changed
    /// ones restart from their persisted cursor, removed ones stop and drop their subscription.
    /// `services` are the Knative Services known to the gateway, by (namespace, name).
    pub async fn apply(
        &self,
        triggers: &[TriggerConfig],
        topology: &Topology,
        services: &std::collections::HashSet<(String, String)>,
    ) {
        let mut keep = Vec::new();
        let mut start = Vec::new();
        let mut removed = Vec::new();
        {
            let Ok(mut workers) = self.workers.lock() else {
                return;
            };
            let mut old = std::mem::take(&mut *workers);
            for config in triggers {
                let key = (config.namespace.clone(), config.name.clone());
                let state = self.resolve(config, topology, services);
                match old.remove(&key) {
                    Some(w) if same_runtime(&w.state, &state) => keep.push((key, w)),
                    Some(w) => {
                        w.stop.cancel();
                        // Moved to another broker: the old one must stop retaining events for it.
                        if (&w.state.config.broker_namespace, &w.state.config.broker)
                            != (&state.config.broker_namespace, &state.config.broker)
                        {
                            removed.push(w.state);
                        }
                        start.push((key, state));
                    }
                    None => start.push((key, state)),
                }
            }
            for (_, w) in old {
                w.stop.cancel();
                removed.push(w.state);
            }
            workers.extend(keep);
        }
        for state in removed {
            if let Some(broker) = &state.broker {
                let name = subscription_name(&state.config);
                if let Err(error) = broker.remove_subscription(&name).await {
                    tracing::warn!(trigger = %name, %error, "Could not remove a subscription.");
                }
            }
            tracing::info!(trigger = %subscription_name(&state.config), broker = %state.config.broker, "Trigger left its broker.");
        }
        for (key, state) in start {
            let state = Arc::new(state);
            let stop = self.shutdown.child_token();
            if let (None, Some(broker)) = (&state.not_ready, &state.broker) {
                self.tracker.spawn(consume(
                    Arc::clone(&state),
                    Arc::clone(broker),
                    self.client.clone(),
                    self.routes.clone(),
                    stop.clone(),
                    self.tracker.clone(),
                ));
            } else if let Some(reason) = &state.not_ready {
                tracing::warn!(trigger = %subscription_name(&state.config), reason, "Trigger not ready.");
            }
            if let Ok(mut workers) = self.workers.lock() {
                workers.insert(key, Worker { state, stop });
            }
        }
        if let Ok(workers) = self.workers.lock() {
            let mut states: Vec<_> = workers.values().map(|w| Arc::clone(&w.state)).collect();
            states.sort_by(|a, b| {
                (&a.config.namespace, &a.config.name).cmp(&(&b.config.namespace, &b.config.name))
            });
            self.states.store(Arc::new(states));
        }
    }

    fn resolve(
        &self,
        config: &TriggerConfig,
        topology: &Topology,
        services: &std::collections::HashSet<(String, String)>,
    ) -> TriggerState {
        let entry = topology.get(&config.broker_namespace, &config.broker);
        let broker = entry.and_then(|e| e.broker.clone());
        let subscriber = resolve(&config.subscriber, services);
        let dead_letter = config
            .delivery
            .dead_letter_sink
            .as_ref()
            .map(|d| resolve(d, services));
        let not_ready = if entry.is_none() {
            Some(format!(
                "broker {}/{} does not exist",
                config.broker_namespace, config.broker
            ))
        } else if broker.is_none() {
            Some(format!(
                "broker {}/{} is not ready",
                config.broker_namespace, config.broker
            ))
        } else if let Err(reason) = &subscriber {
            Some(format!("spec.subscriber: {reason}"))
        } else if let Some(Err(reason)) = &dead_letter {
            Some(format!("spec.delivery.deadLetterSink: {reason}"))
        } else {
            None
        };
        TriggerState {
            counters: TriggerCounters::new(&self.metrics, &config.namespace, &config.name),
            config: config.clone(),
            subscriber: subscriber.ok(),
            dead_letter: dead_letter.and_then(Result::ok),
            broker,
            not_ready,
            problem: Mutex::new(None),
            logged_invalid: Mutex::new(HashSet::new()),
        }
    }

    /// Stops pulling new events, lets in-flight deliveries finish for up to `drain`, and returns
    /// how many were still running when the time ran out (they are redelivered after restart).
    pub async fn shutdown(&self, drain: Duration) -> usize {
        self.shutdown.cancel();
        self.tracker.close();
        if tokio::time::timeout(drain, self.tracker.wait())
            .await
            .is_err()
        {
            return self.tracker.len();
        }
        0
    }
}

/// A worker keeps running when neither its spec nor its broker changed.
fn same_runtime(old: &TriggerState, new: &TriggerState) -> bool {
    let same_broker = match (&old.broker, &new.broker) {
        (Some(a), Some(b)) => Arc::ptr_eq(a, b),
        (None, None) => true,
        _ => false,
    };
    old.config == new.config && same_broker && old.not_ready == new.not_ready
}

/// A destination as an endpoint: a URI as is, a Knative Service ref through its revisions.
fn resolve(
    destination: &Destination,
    services: &std::collections::HashSet<(String, String)>,
) -> Result<Endpoint, String> {
    match destination {
        Destination::Uri(uri) => Ok(Endpoint::Url(uri.clone())),
        Destination::Ref {
            api_version,
            kind,
            namespace,
            name,
            path,
        } if kind == "Service" && api_version.starts_with("serving.knative.dev/") => {
            if !services.contains(&(namespace.clone(), name.clone())) {
                return Err(format!("Knative Service {namespace}/{name} does not exist"));
            }
            let path = path
                .as_deref()
                .map_or_else(|| "/".to_owned(), triggers::snapshot::absolute_path);
            Ok(Endpoint::Service {
                namespace: namespace.clone(),
                name: name.clone(),
                path,
            })
        }
        Destination::Ref {
            api_version,
            kind,
            namespace,
            name,
            ..
        } if kind == "Service" && api_version == "v1" => Err(format!(
            "core v1 Service {namespace}/{name} has no address on the local runtime (no cluster \
             DNS; in Kubernetes mode it is {}); use a uri for it here",
            destination.kubernetes_url().unwrap_or_default()
        )),
        Destination::Ref {
            api_version,
            kind,
            namespace,
            name,
            ..
        } => Err(format!(
            "cannot resolve {kind}.{api_version} {namespace}/{name}: only URIs and Knative Services (serving.knative.dev) are addressable here"
        )),
    }
}

/// Subscription open retries back off from this to [`SUBSCRIBE_BACKOFF_MAX`].
const SUBSCRIBE_BACKOFF_MIN: Duration = Duration::from_millis(200);
const SUBSCRIBE_BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Consecutive read errors after which the subscription is reopened.
const READ_ERRORS_BEFORE_REOPEN: u32 = 5;
/// An ordered trigger holds at most this many times its in-flight cap (in flight plus waiting
/// behind their key), so a slow key cannot make the trigger buffer without bound.
pub const ORDERED_HOLD_FACTOR: usize = 4;

/// How the dispatcher consumes a trigger's subscription.
pub fn subscribe_options(config: &TriggerConfig) -> SubscribeOptions {
    SubscribeOptions {
        max_in_flight: held_cap(config),
    }
}

/// Deliveries the trigger holds unacknowledged at most: JetStream's `MaxAckPending`.
fn held_cap(config: &TriggerConfig) -> usize {
    let cap = config.max_in_flight.max(1);
    match config.order {
        DeliveryOrder::Ordered => cap.saturating_mul(ORDERED_HOLD_FACTOR),
        DeliveryOrder::Unordered => cap,
    }
}

/// Opens the trigger's subscription, retrying with capped backoff while it cannot be opened
/// (the trigger is not ready meanwhile, with the reason), then consumes it; reopens after
/// repeated read errors. Ends when the worker is stopped.
async fn consume(
    state: Arc<TriggerState>,
    broker: Arc<dyn Broker>,
    client: Clients,
    routes: SharedRoutes,
    stop: CancellationToken,
    tracker: TaskTracker,
) {
    let name = subscription_name(&state.config);
    let options = subscribe_options(&state.config);
    let mut backoff = SUBSCRIBE_BACKOFF_MIN;
    loop {
        let opened = tokio::select! {
            opened = broker.subscribe(&name, &options) => opened,
            () = stop.cancelled() => return,
        };
        match opened {
            Ok(subscription) => {
                state.set_problem(None);
                backoff = SUBSCRIBE_BACKOFF_MIN;
                let ended = match state.config.order {
                    DeliveryOrder::Unordered => {
                        run(&state, subscription, &client, &routes, &stop, &tracker).await
                    }
                    DeliveryOrder::Ordered => {
                        run_ordered(&state, subscription, &client, &routes, &stop, &tracker).await
                    }
                };
                if ended == RunEnd::Stopped {
                    return;
                }
            }
            Err(error) => {
                state.set_problem(Some(format!("cannot open the subscription: {error}")));
            }
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = stop.cancelled() => return,
        }
        backoff = (backoff * 2).min(SUBSCRIBE_BACKOFF_MAX);
    }
}

#[derive(Debug, PartialEq, Eq)]
enum RunEnd {
    /// The worker was stopped or the broker closed.
    Stopped,
    /// Reads kept failing: reopen the subscription.
    Reopen,
}

/// The next delivery, or why the loop should end. Read errors are retried after a second;
/// after [`READ_ERRORS_BEFORE_REOPEN`] in a row the subscription is reopened.
async fn next_delivery(
    state: &TriggerState,
    subscription: &mut Box<dyn Subscription>,
    stop: &CancellationToken,
    errors: &mut u32,
) -> Result<Delivery, RunEnd> {
    loop {
        let next = tokio::select! {
            next = subscription.next() => next,
            () = stop.cancelled() => return Err(RunEnd::Stopped),
        };
        match next {
            None => return Err(RunEnd::Stopped),
            Some(Ok(delivery)) => {
                if *errors > 0 {
                    *errors = 0;
                    state.set_problem(None);
                }
                return Ok(delivery);
            }
            Some(Err(error)) => {
                *errors += 1;
                state.set_problem(Some(format!("cannot read from the broker: {error}")));
                if *errors >= READ_ERRORS_BEFORE_REOPEN {
                    return Err(RunEnd::Reopen);
                }
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    () = stop.cancelled() => return Err(RunEnd::Stopped),
                }
            }
        }
    }
}

/// What to do with a delivery before it is handed on: counts redeliveries, acks filtered-out
/// events, counts and logs (once per kind) records that are not CloudEvents. Returns the
/// delivery when it goes on: to the subscriber, or (when `invalid` is set) to the dead-letter
/// sink through [`settle`].
fn admit(state: &TriggerState, delivery: Delivery) -> Option<Delivery> {
    if delivery.redelivered {
        state.counters.redelivered.inc();
    }
    if let Some((kind, detail)) = &delivery.invalid {
        state.counters.invalid_record(kind);
        let first = state
            .logged_invalid
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(kind);
        if first {
            tracing::warn!(trigger = %subscription_name(&state.config), kind, %detail, "A record on the broker is not a valid CloudEvent; it goes to the dead-letter sink if one is set (logged once per kind).");
        }
        return Some(delivery);
    }
    if !state
        .config
        .filter
        .matches(&EventAttributes(&delivery.event))
    {
        state.counters.filtered.inc();
        delivery.acker.ack();
        return None;
    }
    Some(delivery)
}

/// Settles one admitted delivery: delivers it, or dead-letters a record that is not a
/// CloudEvent.
async fn settle(
    state: &TriggerState,
    client: &Clients,
    routes: &SharedRoutes,
    delivery: Delivery,
    stop: &CancellationToken,
) {
    if delivery.invalid.is_some() {
        dead_letter_invalid(state, client, routes, delivery, stop).await;
    } else {
        deliver(state, client, routes, delivery, stop).await;
    }
}

/// Pulls deliveries while the trigger's in-flight cap allows and hands each to its own task.
async fn run(
    state: &Arc<TriggerState>,
    mut subscription: Box<dyn Subscription>,
    client: &Clients,
    routes: &SharedRoutes,
    stop: &CancellationToken,
    tracker: &TaskTracker,
) -> RunEnd {
    let permits = Arc::new(Semaphore::new(state.config.max_in_flight.max(1)));
    let mut errors = 0;
    loop {
        let permit = tokio::select! {
            permit = Arc::clone(&permits).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return RunEnd::Stopped,
            },
            () = stop.cancelled() => return RunEnd::Stopped,
        };
        let delivery = match next_delivery(state, &mut subscription, stop, &mut errors).await {
            Ok(delivery) => delivery,
            Err(end) => return end,
        };
        let Some(delivery) = admit(state, delivery) else {
            continue;
        };
        let state = Arc::clone(state);
        let client = client.clone();
        let routes = routes.clone();
        let stop = stop.clone();
        tracker.spawn(async move {
            settle(&state, &client, &routes, delivery, &stop).await;
            drop(permit);
        });
    }
}

/// The lane of a delivery: its event's `partitionkey`, the keyless lane, or (for records that
/// are not CloudEvents) a lane of their own, which no attribute value can name.
fn ordering_key(delivery: &Delivery) -> Option<String> {
    if delivery.invalid.is_some() {
        return Some("\0invalid".to_owned());
    }
    delivery
        .event
        .attribute("partitionkey")
        .map(|k| k.into_owned())
}

/// Ordered delivery: one event per key at a time, in the order the subscription hands them
/// out (stored order); keys in parallel up to the in-flight cap. Events whose key is busy wait
/// in that key's lane; at most [`held_cap`] are held in all, then pulling pauses.
async fn run_ordered(
    state: &Arc<TriggerState>,
    mut subscription: Box<dyn Subscription>,
    client: &Clients,
    routes: &SharedRoutes,
    stop: &CancellationToken,
    tracker: &TaskTracker,
) -> RunEnd {
    let permits = Arc::new(Semaphore::new(state.config.max_in_flight.max(1)));
    let hold = held_cap(&state.config);
    // A key is present while one of its events is in flight; its queue holds the waiting ones.
    let mut lanes: HashMap<Option<String>, VecDeque<Delivery>> = HashMap::new();
    let mut held = 0usize;
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<Option<String>>();
    let start = |key: Option<String>, delivery: Delivery| {
        let state = Arc::clone(state);
        let client = client.clone();
        let routes = routes.clone();
        let stop = stop.clone();
        let permits = Arc::clone(&permits);
        let done = done_tx.clone();
        tracker.spawn(async move {
            let permit = tokio::select! {
                permit = permits.acquire_owned() => permit.ok(),
                () = stop.cancelled() => None,
            };
            if permit.is_some() {
                settle(&state, &client, &routes, delivery, &stop).await;
            }
            let _ = done.send(key);
        });
    };
    let mut errors = 0;
    let end = loop {
        tokio::select! {
            key = done_rx.recv() => {
                let Some(key) = key else { break RunEnd::Stopped };
                held -= 1;
                let next = lanes.get_mut(&key).and_then(VecDeque::pop_front);
                match next {
                    Some(delivery) => start(key, delivery),
                    None => {
                        lanes.remove(&key);
                    }
                }
            }
            next = next_delivery(state, &mut subscription, stop, &mut errors), if held < hold => {
                let delivery = match next {
                    Ok(delivery) => delivery,
                    Err(end) => break end,
                };
                let Some(delivery) = admit(state, delivery) else {
                    continue;
                };
                held += 1;
                let key = ordering_key(&delivery);
                match lanes.get_mut(&key) {
                    Some(waiting) => waiting.push_back(delivery),
                    None => {
                        lanes.insert(key.clone(), VecDeque::new());
                        start(key, delivery);
                    }
                }
            }
            () = stop.cancelled() => break RunEnd::Stopped,
        }
    };
    if end == RunEnd::Reopen {
        // The reopened subscription hands out the unsettled events again, in order; the ones
        // in flight must finish first, or a key's later event could overtake them.
        for waiting in lanes.values_mut() {
            waiting.clear();
        }
        drop(subscription);
        while !lanes.is_empty() {
            tokio::select! {
                key = done_rx.recv() => match key {
                    Some(key) => {
                        lanes.remove(&key);
                    }
                    None => break,
                },
                () = stop.cancelled() => return RunEnd::Stopped,
            }
        }
    }
    end
}

/// Hands a record that is not a CloudEvent to the dead-letter sink (the raw payload as data,
/// `knativeerrordata` naming the reason), then acks it whatever happens: it must never block
/// the partition or consumer.
async fn dead_letter_invalid(
    state: &TriggerState,
    client: &Clients,
    routes: &SharedRoutes,
    delivery: Delivery,
    stop: &CancellationToken,
) {
    let Delivery {
        event,
        acker,
        invalid,
        ..
    } = delivery;
    if let Some(sink) = &state.dead_letter {
        let reason = invalid.map(|(_, detail)| detail).unwrap_or_default();
        let dead = delivery::invalid_record_event(&event, &reason);
        match delivery::deliver_with_retries(
            client,
            routes,
            sink,
            &dead,
            &state.config.delivery,
            &state.counters,
            stop,
        )
        .await
        {
            Outcome::Aborted => return,
            Outcome::Delivered { .. } => {
                state.counters.dead_lettered.inc();
            }
            Outcome::Failed(_) => state.counters.drop_event(DropReason::RetriesExhausted),
        }
    } else {
        state.counters.drop_event(DropReason::InvalidRecord);
    }
    acker.ack();
}

/// Lets the filter engine read a stored event's attributes without copying them.
struct EventAttributes<'a>(&'a brokers::event::CloudEvent);

impl triggers::Attributes for EventAttributes<'_> {
    fn attribute(&self, name: &str) -> Option<std::borrow::Cow<'_, str>> {
        self.0.attribute(name)
    }
}

/// Delivers one event and acknowledges it once its fate is settled.
async fn deliver(
    state: &TriggerState,
    client: &Clients,
    routes: &SharedRoutes,
    delivery: Delivery,
    stop: &CancellationToken,
) {
    let _in_flight = state.counters.start();
    let started = Instant::now();
    let (Some(subscriber), Some(broker)) = (&state.subscriber, &state.broker) else {
        return;
    };
    let Delivery { event, acker, .. } = delivery;
    let config = &state.config.delivery;
    let name = || subscription_name(&state.config);
    let counters = &state.counters;
    match delivery::deliver_with_retries(client, routes, subscriber, &event, config, counters, stop)
        .await
    {
        Outcome::Aborted => return,
        Outcome::Delivered { reply } => {
            state.counters.delivered.inc();
            if let Some(reply) = reply {
                match delivery::publish_reply(broker, &event, reply).await {
                    ReplyOutcome::Published => {
                        state.counters.replies.inc();
                    }
                    ReplyOutcome::TtlExpired => state.counters.drop_event(DropReason::TtlExpired),
                    ReplyOutcome::NotStored => {
                        state.counters.drop_event(DropReason::ReplyNotStored);
                    }
                }
            }
        }
        Outcome::Failed(error) => {
            let Some(sink) = &state.dead_letter else {
                tracing::warn!(trigger = %name(), id = event.id(), %error, "Delivery failed and no dead-letter sink is set; dropping the event.");
                state.counters.drop_event(DropReason::RetriesExhausted);
                acker.ack();
                return;
            };
            let dead = delivery::dead_letter_event(&event, &subscriber.to_string(), &error);
            match delivery::deliver_with_retries(
                client, routes, sink, &dead, config, counters, stop,
            )
            .await
            {
                Outcome::Aborted => return,
                Outcome::Delivered { .. } => {
                    tracing::info!(trigger = %name(), id = event.id(), %error, "Event dead-lettered.");
                    state.counters.dead_lettered.inc();
                }
                Outcome::Failed(sink_error) => {
                    tracing::warn!(trigger = %name(), id = event.id(), %error, %sink_error, "Delivery and dead-letter sink both failed; dropping the event.");
                    state.counters.drop_event(DropReason::RetriesExhausted);
                }
            }
        }
    }
    state
        .counters
        .latency
        .observe(started.elapsed().as_secs_f64());
    acker.ack();
}
