//! The group-commit writer: the only thread that opens write transactions.
//!
//! Each round it takes everything queued (up to `max_batch` events), writes it into one
//! transaction together with due cursor updates and reclaim deletes, commits with
//! `Durability::Immediate` (one fsync) and then answers every waiter. Changes are planned on
//! copies of the brokers' state and published only after the commit succeeded, so a failed
//! commit acknowledges nothing and leaves memory matching the file.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, mpsc};
use std::time::Duration;

use redb::{Database, Durability};
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::{BROKERS, BrokerShared, EVENTS, STATE, SUBSCRIPTIONS, Shared, SubShared, lock};
use crate::broker::BrokerError;
use crate::event::EventBatch;

/// Events deleted per commit at most; the rest follows in the next rounds.
const RECLAIM_PER_COMMIT: usize = 16_384;
/// How often a failing store checks whether it can work again.
const PROBE_INTERVAL: Duration = Duration::from_millis(500);
/// How often a working store checks its disk's free space while idle.
const HEALTHY_PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// Backoff between attempts to reopen the file after an I/O failure.
const REOPEN_BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(5));
/// Largest reserve of free space kept by default.
const MAX_DEFAULT_RESERVE: u64 = 64 * 1024 * 1024;
/// An append needs about twice its bytes on disk while it commits (copy-on-write pages), plus
/// this for the tree pages it touches.
const APPEND_OVERHEAD: u64 = 64 * 1024;

/// A request to the writer.
pub(super) enum Msg {
    Append {
        broker: Arc<BrokerShared>,
        records: EventBatch,
        bytes: u64,
        reply: oneshot::Sender<Result<(), BrokerError>>,
    },
    Subscribe {
        broker: Arc<BrokerShared>,
        name: String,
        reply: oneshot::Sender<Result<Arc<SubShared>, BrokerError>>,
    },
    Remove {
        broker: Arc<BrokerShared>,
        name: String,
        reply: oneshot::Sender<Result<(), BrokerError>>,
    },
    /// The subscription's cursor advanced.
    Dirty(Arc<SubShared>),
    Shutdown,
}

pub(super) struct Writer {
    shared: Arc<Shared>,
    /// `None` after an I/O failure until the file is reopened.
    db: Option<Arc<Database>>,
    rx: mpsc::Receiver<Msg>,
    /// The data directory, whose file system's free space is checked before appends.
    dir: PathBuf,
    /// When to try reopening next, and the backoff after that.
    reopen_at: Option<(Instant, Duration)>,
    /// Appends are being refused for lack of free space.
    disk_full: bool,
    /// When free space was last checked by [`Writer::probe`].
    last_space_check: Option<Instant>,
    /// Subscriptions whose cursor is to be written.
    dirty: Vec<Arc<SubShared>>,
    /// When the dirty cursors are committed even without an append to ride along with.
    cursor_deadline: Option<Instant>,
    /// Brokers with more to reclaim than one commit deletes.
    reclaim_backlog: Vec<Arc<BrokerShared>>,
}

/// What one request gets once the transaction has committed.
enum Outcome {
    Done(
        oneshot::Sender<Result<(), BrokerError>>,
        Result<(), BrokerError>,
    ),
    Subscribed(
        oneshot::Sender<Result<Arc<SubShared>, BrokerError>>,
        Arc<SubShared>,
    ),
}

impl Outcome {
    fn send(self, failure: Option<&str>) {
        // A waiter that went away (its task was cancelled) needs no answer.
        match (self, failure) {
            (Outcome::Done(reply, result), None) => {
                let _ = reply.send(result);
            }
            (Outcome::Subscribed(reply, sub), None) => {
                let _ = reply.send(Ok(sub));
            }
            (Outcome::Done(reply, _), Some(e)) => {
                let _ = reply.send(Err(BrokerError::Unavailable(e.to_owned())));
            }
            (Outcome::Subscribed(reply, _), Some(e)) => {
                let _ = reply.send(Err(BrokerError::Unavailable(e.to_owned())));
            }
        }
    }
}

impl Writer {
    pub(super) fn new(
        shared: Arc<Shared>,
        db: Arc<Database>,
        rx: mpsc::Receiver<Msg>,
        dir: PathBuf,
    ) -> Writer {
        Writer {
            shared,
            db: Some(db),
            rx,
            dir,
            reopen_at: None,
            disk_full: false,
            last_space_check: None,
            dirty: Vec::new(),
            cursor_deadline: None,
            reclaim_backlog: Vec::new(),
        }
    }

    pub(super) fn run(mut self) {
        let max_batch = self.shared.options.max_batch;
        let mut running = true;
        while running {
            self.probe();
            let mut batch = Vec::new();
            let mut events = 0;
            if self.reclaim_backlog.is_empty() {
                match self.wait() {
                    Wait::Msg(msg) => self.take(msg, &mut batch, &mut events, &mut running),
                    Wait::Timeout => {}
                    Wait::Disconnected => running = false,
                }
            }
            while running && events < max_batch {
                match self.rx.try_recv() {
                    Ok(msg) => self.take(msg, &mut batch, &mut events, &mut running),
                    Err(mpsc::TryRecvError::Empty) => break,
                    Err(mpsc::TryRecvError::Disconnected) => running = false,
                }
            }
            let cursors_due = !self.dirty.is_empty()
                && (!batch.is_empty()
                    || !running
                    || self.cursor_deadline.is_some_and(|d| d <= Instant::now()));
            if !batch.is_empty() || cursors_due || !self.reclaim_backlog.is_empty() {
                self.commit(batch, cursors_due);
            } else if !self.dirty.is_empty() && self.cursor_deadline.is_none() {
                self.cursor_deadline = Some(Instant::now() + self.shared.options.cursor_flush);
            }
        }
        // Whatever arrives from now on is refused.
        while let Ok(msg) = self.rx.try_recv() {
            refuse(msg);
        }
    }

    fn wait(&self) -> Wait {
        // Wakes up to probe the disk (a failing store: whether it can work again).
        let interval = if self.failing() {
            PROBE_INTERVAL
        } else {
            HEALTHY_PROBE_INTERVAL
        };
        let probe = Instant::now() + interval;
        let deadline = Some(self.cursor_deadline.map_or(probe, |d| d.min(probe)));
        let received = match deadline {
            None => self
                .rx
                .recv()
                .map_err(|_| mpsc::RecvTimeoutError::Disconnected),
            Some(deadline) => {
                let timeout = deadline.saturating_duration_since(Instant::now());
                self.rx.recv_timeout(timeout)
            }
        };
        match received {
            Ok(msg) => Wait::Msg(msg),
            Err(mpsc::RecvTimeoutError::Timeout) => Wait::Timeout,
            Err(mpsc::RecvTimeoutError::Disconnected) => Wait::Disconnected,
        }
    }

    fn take(&mut self, msg: Msg, batch: &mut Vec<Msg>, events: &mut usize, running: &mut bool) {
        match msg {
            Msg::Dirty(sub) => {
                if !self.dirty.iter().any(|d| Arc::ptr_eq(d, &sub)) {
                    self.dirty.push(sub);
                }
                if self.cursor_deadline.is_none() {
                    self.cursor_deadline = Some(Instant::now() + self.shared.options.cursor_flush);
                }
            }
            Msg::Shutdown => *running = false,
            Msg::Append { ref records, .. } => {
                *events += records.len();
                batch.push(msg);
            }
            other => {
                *events += 1;
                batch.push(other);
            }
        }
    }

    /// Writes and commits one transaction, then answers the waiters and publishes the new state.
    fn commit(&mut self, batch: Vec<Msg>, cursors_due: bool) {
        let cursors = if cursors_due {
            self.cursor_deadline = None;
            std::mem::take(&mut self.dirty)
        } else {
            Vec::new()
        };
        let mut plan = Plan::default();
        for broker in std::mem::take(&mut self.reclaim_backlog) {
            plan.broker(&broker);
        }
        let mut outcomes = Vec::with_capacity(batch.len());
        // No room for even a small commit: writing would fail with ENOSPC, after which redb
        // refuses reads too. Keep the file as it is (reads, hence deliveries, go on) and retry.
        // Free space and reserve, measured once per commit (None: could not tell).
        let space = self.free_space();
        let no_room = space.is_some_and(|(free, _)| free < APPEND_OVERHEAD);
        let result = match self.db.clone() {
            Some(_) if no_room => {
                let reason = format!(
                    "the disk holding {} is full: no room for a commit; cursor progress is kept \
                     in memory and saved once there is space",
                    self.dir.display()
                );
                for msg in batch {
                    refuse_with(msg, || BrokerError::Unavailable(reason.clone()));
                }
                self.disk_full = true;
                self.set_health(Some(reason));
                Err(redb::Error::Io(std::io::Error::from(
                    std::io::ErrorKind::StorageFull,
                )))
            }
            Some(db) => self.write(&db, batch, &cursors, space, &mut plan, &mut outcomes),
            None => {
                // Reopening: refuse everything queued at once rather than keep publishers waiting.
                for msg in batch {
                    refuse_with(msg, || {
                        BrokerError::Unavailable(self.health_reason("reopening"))
                    });
                }
                Err(redb::Error::PreviousIo)
            }
        };
        match result {
            Ok(()) => {
                self.shared.commits.fetch_add(1, Ordering::Relaxed);
                self.publish(plan);
                for outcome in outcomes {
                    outcome.send(None);
                }
            }
            Err(error) => {
                let message = error.to_string();
                if self.db.is_some() && !no_room {
                    tracing::error!(%error, "embedded broker commit failed");
                }
                if !no_room
                    && matches!(
                        error,
                        redb::Error::Io(_) | redb::Error::PreviousIo | redb::Error::Corrupted(_)
                    )
                    && self.db.is_some()
                {
                    // redb fails every later operation after an I/O error: close the file and
                    // reopen it (with backoff) once nothing reads it any more.
                    self.set_health(Some(format!(
                        "storage failed ({message}); reopening the event store"
                    )));
                    *lock(&self.shared.db) = None;
                    self.db = None;
                    self.reopen_at = Some((Instant::now(), REOPEN_BACKOFF.0));
                } else if self.db.is_some() && !no_room {
                    self.set_health(Some(format!("storage failed: {message}")));
                }
                let error = message;
                for outcome in outcomes {
                    outcome.send(Some(&error));
                }
                if !cursors.is_empty() {
                    self.shared
                        .cursor_save_failures
                        .fetch_add(1, Ordering::Relaxed);
                }
                for sub in cursors {
                    lock(&sub.acks).dirty = true;
                    self.dirty.push(sub);
                }
                if !self.dirty.is_empty() {
                    self.cursor_deadline = Some(Instant::now() + self.shared.options.cursor_flush);
                }
                // Reclaim is retried whenever a broker is next touched; retrying right away
                // would spin on a broken disk.
            }
        }
    }

    fn write(
        &mut self,
        db: &Database,
        batch: Vec<Msg>,
        cursors: &[Arc<SubShared>],
        mut space: Option<(u64, u64)>,
        plan: &mut Plan,
        outcomes: &mut Vec<Outcome>,
    ) -> Result<(), redb::Error> {
        let has_appends = batch.iter().any(|m| matches!(m, Msg::Append { .. }));
        let mut refused_for_space = None;
        let mut txn = db.begin_write().map_err(err)?;
        txn.set_durability(Durability::Immediate).map_err(err)?;
        {
            let mut events = txn.open_table(EVENTS).map_err(err)?;
            let mut subs = txn.open_table(SUBSCRIPTIONS).map_err(err)?;
            let mut brokers = txn.open_table(BROKERS).map_err(err)?;
            let mut states = txn.open_table(STATE).map_err(err)?;
            let limit = self.shared.options.max_bytes;
            let retained = self.shared.retained_bytes.load(Ordering::Relaxed);
            for msg in batch {
                match msg {
                    Msg::Append {
                        broker,
                        records,
                        bytes,
                        reply,
                    } => {
                        let t = plan.broker(&broker);
                        if t.subs.is_empty() {
                            // Knative drops events that no trigger subscribes to.
                            t.head += records.len() as u64;
                            outcomes.push(Outcome::Done(reply, Ok(())));
                            continue;
                        }
                        if let Some((free, reserve)) = space.as_mut() {
                            let need = bytes.saturating_mul(2).saturating_add(APPEND_OVERHEAD);
                            if free.saturating_sub(need) < *reserve {
                                let reason = format!(
                                    "the disk holding {} is full: {} bytes free, {} kept in \
                                     reserve, this append needs about {need}",
                                    self.dir.display(),
                                    free,
                                    reserve
                                );
                                outcomes.push(Outcome::Done(
                                    reply,
                                    Err(BrokerError::Unavailable(reason.clone())),
                                ));
                                refused_for_space = Some(reason);
                                continue;
                            }
                            *free -= need;
                        }
                        let total = retained + plan.added_bytes;
                        if let Some(limit) = limit
                            && total.saturating_add(bytes) > limit
                        {
                            let full = BrokerError::Full {
                                limit,
                                retained: total,
                                requested: bytes,
                            };
                            outcomes.push(Outcome::Done(reply, Err(full)));
                            continue;
                        }
                        let t = plan.broker(&broker);
                        for record in records.records() {
                            events.insert((broker.id, t.head), record).map_err(err)?;
                            t.head += 1;
                        }
                        t.count += records.len() as u64;
                        t.bytes += bytes;
                        plan.added_bytes += bytes;
                        outcomes.push(Outcome::Done(reply, Ok(())));
                    }
                    Msg::Subscribe {
                        broker,
                        name,
                        reply,
                    } => {
                        let t = plan.broker(&broker);
                        let sub = match t.subs.get(&name) {
                            Some(existing) => existing.sub.clone(),
                            None => {
                                let head = t.head;
                                subs.insert((broker.id, name.as_str()), (head, head))
                                    .map_err(err)?;
                                let sub =
                                    SubShared::new(&broker, &self.shared, name.clone(), head, head);
                                t.subs.insert(
                                    name,
                                    PlannedSub {
                                        sub: sub.clone(),
                                        cursor: head,
                                    },
                                );
                                sub
                            }
                        };
                        outcomes.push(Outcome::Subscribed(reply, sub));
                    }
                    Msg::Remove {
                        broker,
                        name,
                        reply,
                    } => {
                        let t = plan.broker(&broker);
                        if let Some(removed) = t.subs.remove(&name) {
                            subs.remove((broker.id, name.as_str())).map_err(err)?;
                            t.removed.push(removed.sub);
                        }
                        outcomes.push(Outcome::Done(reply, Ok(())));
                    }
                    Msg::Dirty(_) | Msg::Shutdown => {}
                }
            }
            for sub in cursors {
                let Some(broker) = sub.broker.upgrade() else {
                    continue;
                };
                let (cursor, delivered) = {
                    let mut acks = lock(&sub.acks);
                    acks.dirty = false;
                    if acks.removed {
                        continue;
                    }
                    (acks.cursor, acks.delivered)
                };
                let t = plan.broker(&broker);
                if let Some(planned) = t.subs.get_mut(&sub.name)
                    && Arc::ptr_eq(&planned.sub, sub)
                {
                    subs.insert((broker.id, sub.name.as_str()), (cursor, delivered))
                        .map_err(err)?;
                    planned.cursor = cursor;
                }
            }
            for t in plan.brokers.values_mut() {
                let keep_from = t.subs.values().map(|s| s.cursor).min().unwrap_or(t.head);
                if t.low < keep_from {
                    let range = (t.broker.id, t.low)..(t.broker.id, keep_from);
                    let (mut count, mut bytes, mut last) = (0usize, 0u64, None);
                    for row in events
                        .extract_from_if(range, |_, _| true)
                        .map_err(err)?
                        .take(RECLAIM_PER_COMMIT)
                    {
                        let (key, value) = row.map_err(err)?;
                        count += 1;
                        bytes += value.value().len() as u64;
                        last = Some(key.value().1);
                    }
                    t.count = t.count.saturating_sub(count as u64);
                    t.bytes = t.bytes.saturating_sub(bytes);
                    plan.reclaimed_bytes += bytes;
                    match last {
                        Some(last) if count == RECLAIM_PER_COMMIT => {
                            t.low = last + 1;
                            t.more_to_reclaim = true;
                        }
                        _ => t.low = keep_from,
                    }
                }
                if !t.persisted {
                    let (namespace, name) = &t.broker.key;
                    brokers
                        .insert((namespace.as_str(), name.as_str()), t.broker.id)
                        .map_err(err)?;
                }
                states
                    .insert(t.broker.id, (t.head, t.low, t.count, t.bytes))
                    .map_err(err)?;
            }
        }
        txn.commit().map_err(err)?;
        match refused_for_space {
            Some(reason) => {
                self.disk_full = true;
                self.set_health(Some(reason));
            }
            None if has_appends => {
                self.disk_full = false;
                self.set_health(None);
            }
            None => {}
        }
        Ok(())
    }

    /// Whether storage is failing (disk full, I/O failure, reopening).
    fn failing(&self) -> bool {
        self.db.is_none() || lock(&self.shared.health).is_some()
    }

    fn set_health(&self, reason: Option<String>) {
        let mut health = lock(&self.shared.health);
        if *health != reason {
            match &reason {
                Some(reason) => {
                    tracing::error!(%reason, "Embedded broker storage is unavailable.");
                }
                None => tracing::info!("Embedded broker storage is available again."),
            }
            *health = reason;
        }
    }

    fn health_reason(&self, fallback: &str) -> String {
        lock(&self.shared.health)
            .clone()
            .unwrap_or_else(|| format!("the event store is {fallback}"))
    }

    /// Bytes free for us on the data directory's file system and the reserve to keep there.
    fn free_space(&self) -> Option<(u64, u64)> {
        let stat = nix::sys::statvfs::statvfs(&self.dir).ok()?;
        let block = stat.fragment_size().max(1);
        let free = stat.blocks_available().saturating_mul(block);
        let total = stat.blocks().saturating_mul(block);
        let reserve = self
            .shared
            .options
            .min_free_bytes
            .unwrap_or_else(|| (total / 32).min(MAX_DEFAULT_RESERVE));
        Some((free, reserve))
    }

    /// While storage is failing: reopens the file when due, and clears a disk-full state once
    /// there is room again.
    fn probe(&mut self) {
        if self.db.is_none() {
            let Some((at, backoff)) = self.reopen_at else {
                return;
            };
            if Instant::now() < at {
                return;
            }
            match super::open_file(&self.shared.path, self.shared.options.cache_bytes) {
                Ok(db) => {
                    let db = Arc::new(db);
                    *lock(&self.shared.db) = Some(Arc::clone(&db));
                    self.db = Some(db);
                    self.reopen_at = None;
                    tracing::info!(path = %self.shared.path.display(), "Reopened the event store.");
                    self.set_health(None);
                    // Subscriptions that failed to read try again on their own; wake the idle.
                    self.wake_all();
                }
                Err(error) => {
                    tracing::warn!(%error, retry_in = ?backoff, "Could not reopen the event store yet.");
                    self.reopen_at = Some((
                        Instant::now() + backoff,
                        (backoff * 2).min(REOPEN_BACKOFF.1),
                    ));
                }
            }
            return;
        }
        if self
            .last_space_check
            .is_some_and(|at| at.elapsed() < PROBE_INTERVAL)
        {
            return;
        }
        self.last_space_check = Some(Instant::now());
        let Some((free, reserve)) = self.free_space() else {
            return;
        };
        let room = free.saturating_sub(APPEND_OVERHEAD) >= reserve;
        if self.disk_full && room {
            self.disk_full = false;
            self.set_health(None);
        } else if !self.disk_full && !room {
            // Filled by someone else while idle: say so before the next publisher finds out.
            self.disk_full = true;
            self.set_health(Some(format!(
                "the disk holding {} is full: {free} bytes free, {reserve} kept in reserve",
                self.dir.display()
            )));
        }
    }

    fn wake_all(&self) {
        for broker in lock(&self.shared.brokers).by_name.values() {
            broker.head.send_modify(|_| {});
        }
    }

    /// Makes a committed plan visible: heads (waking subscriptions), counts, subscriptions.
    fn publish(&mut self, plan: Plan) {
        let retained = self.shared.retained_bytes.load(Ordering::Relaxed);
        self.shared.retained_bytes.store(
            (retained + plan.added_bytes).saturating_sub(plan.reclaimed_bytes),
            Ordering::Relaxed,
        );
        for t in plan.brokers.into_values() {
            for sub in &t.removed {
                lock(&sub.acks).removed = true;
            }
            for planned in t.subs.values() {
                lock(&planned.sub.acks).persisted_cursor = planned.cursor;
            }
            {
                let mut state = lock(&t.broker.state);
                state.persisted = true;
                state.low = t.low;
                state.retained_bytes = t.bytes;
                state.subs = t
                    .subs
                    .into_iter()
                    .map(|(name, planned)| (name, planned.sub))
                    .collect();
            }
            t.broker.retained.store(t.count, Ordering::Relaxed);
            // Subscriptions wake when there is something new to read, or when one of them was
            // removed (its handle then ends).
            let (head, removed) = (t.head, !t.removed.is_empty());
            t.broker.head.send_if_modified(|current| {
                let moved = *current != head;
                *current = head;
                moved || removed
            });
            if t.more_to_reclaim {
                self.reclaim_backlog.push(t.broker);
            }
        }
    }
}

enum Wait {
    Msg(Msg),
    Timeout,
    Disconnected,
}

fn refuse(msg: Msg) {
    refuse_with(msg, || BrokerError::Closed);
}

fn refuse_with(msg: Msg, error: impl Fn() -> BrokerError) {
    match msg {
        Msg::Append { reply, .. } | Msg::Remove { reply, .. } => {
            let _ = reply.send(Err(error()));
        }
        Msg::Subscribe { reply, .. } => {
            let _ = reply.send(Err(error()));
        }
        Msg::Dirty(_) | Msg::Shutdown => {}
    }
}

fn err(e: impl Into<redb::Error>) -> redb::Error {
    e.into()
}

/// The transaction's changes, on copies of the touched brokers' state.
#[derive(Default)]
struct Plan {
    brokers: HashMap<u64, PlannedBroker>,
    added_bytes: u64,
    reclaimed_bytes: u64,
}

struct PlannedBroker {
    broker: Arc<BrokerShared>,
    persisted: bool,
    head: u64,
    low: u64,
    count: u64,
    bytes: u64,
    subs: HashMap<String, PlannedSub>,
    removed: Vec<Arc<SubShared>>,
    more_to_reclaim: bool,
}

struct PlannedSub {
    sub: Arc<SubShared>,
    /// The persisted cursor (as of this transaction).
    cursor: u64,
}

impl Plan {
    fn broker(&mut self, broker: &Arc<BrokerShared>) -> &mut PlannedBroker {
        self.brokers.entry(broker.id).or_insert_with(|| {
            let state = lock(&broker.state);
            let subs = state
                .subs
                .iter()
                .map(|(name, sub)| {
                    let cursor = lock(&sub.acks).persisted_cursor;
                    let planned = PlannedSub {
                        sub: sub.clone(),
                        cursor,
                    };
                    (name.clone(), planned)
                })
                .collect();
            PlannedBroker {
                broker: broker.clone(),
                persisted: state.persisted,
                head: broker.head(),
                low: state.low,
                count: broker.retained.load(Ordering::Relaxed),
                bytes: state.retained_bytes,
                subs,
                removed: Vec::new(),
                more_to_reclaim: false,
            }
        })
    }
}
