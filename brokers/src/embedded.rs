//! The embedded broker backend: a durable log per broker in one redb file, written by a single
//! group-commit writer thread.
//!
//! - [`EmbeddedStore::open`] opens `dir/events.redb` and starts the writer thread.
//! - [`EmbeddedStore::broker`] hands out a [`Broker`] per Knative broker; all share the store.
//! - `append` queues its events for the writer, which puts everything queued (appends of every
//!   broker, subscription changes, cursor updates, reclaim deletes) into one write transaction,
//!   commits it with one fsync and then answers every waiter.
//! - Subscriptions read committed events in batches on the blocking pool, only when asked for
//!   more, and wait on the broker's head otherwise.

mod subscription;
#[cfg(test)]
mod tests;
mod writer;

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

use async_trait::async_trait;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::{oneshot, watch};

use crate::broker::{AckHandler, Broker, BrokerError, SubscribeOptions, Subscription};
use crate::event::EventBatch;

use subscription::EmbeddedSubscription;
use writer::{Msg, Writer};

/// Events: (broker id, offset) → storage-encoded event.
const EVENTS: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("events");
/// Brokers: (namespace, name) → broker id.
const BROKERS: TableDefinition<(&str, &str), u64> = TableDefinition::new("brokers");
/// Broker state: id → (head, low, retained events, retained bytes). `head` is the next offset,
/// everything below `low` has been reclaimed.
const STATE: TableDefinition<u64, (u64, u64, u64, u64)> = TableDefinition::new("broker_state");
/// Subscriptions: (broker id, name) → (cursor, delivered). Everything below `cursor` is acked;
/// offsets below `delivered` had been handed out when the cursor was written.
const SUBSCRIPTIONS: TableDefinition<(u64, &str), (u64, u64)> =
    TableDefinition::new("subscriptions");

/// Default page cache of the redb file (redb's own default is 1 GiB).
pub const DEFAULT_CACHE_BYTES: usize = 16 * 1024 * 1024;

/// Tuning of the embedded store.
#[derive(Debug, Clone)]
pub struct EmbeddedOptions {
    /// Quota on the retained (not yet reclaimed) event bytes of the whole store; an append that
    /// would exceed it fails with [`BrokerError::Full`]. `None`: unlimited.
    pub max_bytes: Option<u64>,
    /// Events the writer puts into one transaction at most (a larger single append is still
    /// committed whole).
    pub max_batch: usize,
    /// How long ack-only cursor updates may wait for a commit to ride along with; after that
    /// they are committed on their own. Losing them only causes redelivery.
    pub cursor_flush: Duration,
    /// Events a subscription reads per read transaction.
    pub read_batch: usize,
    /// Free space kept on the data directory's file system: an append that would leave less is
    /// refused (503) before it reaches the file, so cursor saves and reclaims still fit and the
    /// store never meets `ENOSPC` on the way. `None`: 1/32 of the file system, at most 64 MiB.
    pub min_free_bytes: Option<u64>,
    /// Page cache of the redb file.
    pub cache_bytes: usize,
}

impl Default for EmbeddedOptions {
    fn default() -> Self {
        EmbeddedOptions {
            max_bytes: None,
            max_batch: 4096,
            cursor_flush: Duration::from_millis(100),
            read_batch: 128,
            min_free_bytes: None,
            cache_bytes: DEFAULT_CACHE_BYTES,
        }
    }
}

/// One redb file holding the logs of any number of brokers.
pub struct EmbeddedStore {
    shared: Arc<Shared>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl EmbeddedStore {
    /// Opens (or creates) `dir/events.redb`, recovers every broker's head and subscription
    /// cursors, and starts the writer thread.
    pub fn open(dir: &Path, options: EmbeddedOptions) -> Result<Arc<EmbeddedStore>, BrokerError> {
        std::fs::create_dir_all(dir).map_err(|e| {
            BrokerError::Unavailable(format!("cannot create {}: {e}", dir.display()))
        })?;
        let path = dir.join("events.redb");
        let db = open_file(&path, options.cache_bytes).map_err(|e| {
            BrokerError::Unavailable(format!("cannot open {}: {e}", path.display()))
        })?;
        let recovered = recover(&db).map_err(|e| {
            BrokerError::Unavailable(format!("cannot read {}: {e}", path.display()))
        })?;
        let db = Arc::new(db);
        let (tx, rx) = mpsc::channel();
        let shared = Arc::new(Shared {
            path: path.clone(),
            db: Mutex::new(Some(db.clone())),
            health: Mutex::new(None),
            cursor_save_failures: AtomicU64::new(0),
            tx,
            closed: watch::Sender::new(false),
            brokers: Mutex::new(Registry::default()),
            retained_bytes: AtomicU64::new(0),
            commits: AtomicU64::new(0),
            options: EmbeddedOptions {
                max_batch: options.max_batch.max(1),
                read_batch: options.read_batch.max(1),
                ..options
            },
        });
        shared.install(recovered);
        let writer = Writer::new(shared.clone(), db, rx, dir.to_owned());
        let handle = std::thread::Builder::new()
            .name("tidegate-embedded-writer".to_owned())
            .spawn(move || writer.run())
            .map_err(|e| BrokerError::Unavailable(format!("cannot start the writer: {e}")))?;
        Ok(Arc::new(EmbeddedStore {
            shared,
            writer: Mutex::new(Some(handle)),
        }))
    }

    /// The handle of broker `namespace/name`; created on first use, durable from its first
    /// append or subscription.
    pub fn broker(&self, namespace: &str, name: &str) -> Arc<dyn Broker> {
        Arc::new(EmbeddedBroker {
            shared: self.shared.clone(),
            broker: self.shared.broker(namespace, name),
        })
    }

    /// Stops the store: waits for the writer to finish its current commit, answers every later
    /// request with [`BrokerError::Closed`], ends every subscription and releases the file
    /// once in-flight reads are done. Blocks for at most one commit; idempotent.
    pub fn close(&self) {
        self.shared.closed.send_replace(true);
        // The writer may already be gone; then there is nobody left to tell.
        let _ = self.shared.tx.send(Msg::Shutdown);
        if let Some(handle) = lock(&self.writer).take()
            && handle.join().is_err()
        {
            tracing::error!("embedded broker writer thread panicked");
        }
        lock(&self.shared.db).take();
    }

    /// Write transactions committed so far (each one fsync).
    pub fn commits(&self) -> u64 {
        self.shared.commits.load(Ordering::Relaxed)
    }

    /// Bytes of retained events across all brokers (what [`EmbeddedOptions::max_bytes`] limits).
    pub fn retained_bytes(&self) -> u64 {
        self.shared.retained_bytes.load(Ordering::Relaxed)
    }

    /// Why the store cannot take events right now (disk full, I/O failure, reopening), or
    /// `None` when it can.
    pub fn unavailable(&self) -> Option<String> {
        self.shared.unavailable()
    }

    /// Commits of cursor progress that failed (each is retried until it succeeds).
    pub fn cursor_save_failures(&self) -> u64 {
        self.shared.cursor_save_failures.load(Ordering::Relaxed)
    }
}

impl Drop for EmbeddedStore {
    fn drop(&mut self) {
        self.close();
    }
}

/// State shared by the store, its broker handles, subscriptions and the writer thread.
struct Shared {
    path: std::path::PathBuf,
    /// `None` once closed, and while the writer reopens the file after a storage failure.
    db: Mutex<Option<Arc<Database>>>,
    /// Why storage is failing, while it is; set and cleared by the writer.
    health: Mutex<Option<String>>,
    cursor_save_failures: AtomicU64,
    tx: mpsc::Sender<Msg>,
    closed: watch::Sender<bool>,
    brokers: Mutex<Registry>,
    /// Changed by the writer only.
    retained_bytes: AtomicU64,
    commits: AtomicU64,
    options: EmbeddedOptions,
}

#[derive(Default)]
struct Registry {
    by_name: HashMap<(String, String), Arc<BrokerShared>>,
    next_id: u64,
}

impl Shared {
    fn is_closed(&self) -> bool {
        *self.closed.borrow()
    }

    fn db(&self) -> Option<Arc<Database>> {
        lock(&self.db).clone()
    }

    fn unavailable(&self) -> Option<String> {
        if self.is_closed() {
            return Some("the event store is closed".into());
        }
        lock(&self.health).clone()
    }

    fn broker(&self, namespace: &str, name: &str) -> Arc<BrokerShared> {
        let mut registry = lock(&self.brokers);
        let key = (namespace.to_owned(), name.to_owned());
        if let Some(broker) = registry.by_name.get(&key) {
            return broker.clone();
        }
        let id = registry.next_id;
        registry.next_id += 1;
        let broker = Arc::new(BrokerShared::new(id, key.clone(), BrokerState::default()));
        registry.by_name.insert(key, broker.clone());
        broker
    }

    fn install(self: &Arc<Self>, recovered: Recovered) {
        let mut registry = lock(&self.brokers);
        let mut bytes = 0;
        for (key, id) in recovered.brokers {
            let (head, low, count, retained_bytes) =
                recovered.states.get(&id).copied().unwrap_or_default();
            bytes += retained_bytes;
            let state = BrokerState {
                persisted: true,
                low,
                retained_bytes,
                subs: HashMap::new(),
            };
            let broker = Arc::new(BrokerShared::new(id, key.clone(), state));
            broker.head.send_replace(head);
            broker.retained.store(count, Ordering::Relaxed);
            let subs = recovered
                .subscriptions
                .iter()
                .filter(|((broker_id, _), _)| *broker_id == id)
                .map(|((_, name), (cursor, delivered))| {
                    let sub = SubShared::new(&broker, self, name.clone(), *cursor, *delivered);
                    (name.clone(), sub)
                })
                .collect();
            lock(&broker.state).subs = subs;
            registry.next_id = registry.next_id.max(id + 1);
            registry.by_name.insert(key, broker);
        }
        self.retained_bytes.store(bytes, Ordering::Relaxed);
    }
}

/// One broker's log.
struct BrokerShared {
    id: u64,
    /// (namespace, name)
    key: (String, String),
    /// The committed head: the offset the next appended event gets.
    head: watch::Sender<u64>,
    /// Retained events; changed by the writer only.
    retained: AtomicU64,
    state: Mutex<BrokerState>,
}

/// Changed by the writer only, after a successful commit.
#[derive(Default)]
struct BrokerState {
    /// Whether the BROKERS row exists.
    persisted: bool,
    /// Everything below has been reclaimed.
    low: u64,
    retained_bytes: u64,
    subs: HashMap<String, Arc<SubShared>>,
}

impl BrokerShared {
    fn new(id: u64, key: (String, String), state: BrokerState) -> BrokerShared {
        BrokerShared {
            id,
            key,
            head: watch::Sender::new(0),
            retained: AtomicU64::new(0),
            state: Mutex::new(state),
        }
    }

    fn head(&self) -> u64 {
        *self.head.borrow()
    }
}

/// One durable subscription: its acks, and the handle acks report to.
struct SubShared {
    name: String,
    broker: Weak<BrokerShared>,
    me: Weak<SubShared>,
    tx: mpsc::Sender<Msg>,
    acks: Mutex<AckState>,
}

struct AckState {
    /// Every offset below is acked (in memory).
    cursor: u64,
    /// Acked offsets above `cursor` (acks may come out of order).
    acked: BTreeSet<u64>,
    /// One past the highest offset handed out (persisted along with the cursor).
    delivered: u64,
    /// The cursor of the last commit.
    persisted_cursor: u64,
    /// A cursor update is queued for the writer.
    dirty: bool,
    /// The subscription was deleted; late acks are ignored.
    removed: bool,
}

impl SubShared {
    fn new(
        broker: &Arc<BrokerShared>,
        shared: &Shared,
        name: String,
        cursor: u64,
        delivered: u64,
    ) -> Arc<SubShared> {
        Arc::new_cyclic(|me| SubShared {
            name,
            broker: Arc::downgrade(broker),
            me: me.clone(),
            tx: shared.tx.clone(),
            acks: Mutex::new(AckState {
                cursor,
                acked: BTreeSet::new(),
                delivered: delivered.max(cursor),
                persisted_cursor: cursor,
                dirty: false,
                removed: false,
            }),
        })
    }

    /// Events appended but not acked, given the broker head.
    fn pending(&self, head: u64) -> u64 {
        let acks = lock(&self.acks);
        head.saturating_sub(acks.cursor)
            .saturating_sub(acks.acked.len() as u64)
    }
}

impl AckHandler for SubShared {
    fn ack(&self, offset: u64) {
        let mut acks = lock(&self.acks);
        if acks.removed || offset < acks.cursor || !acks.acked.insert(offset) {
            return;
        }
        let before = acks.cursor;
        while acks.acked.first() == Some(&acks.cursor) {
            acks.acked.pop_first();
            acks.cursor += 1;
        }
        if acks.cursor > before && !acks.dirty {
            acks.dirty = true;
            drop(acks);
            if let Some(me) = self.me.upgrade() {
                // A closed store cannot persist the cursor anyway; redelivery follows.
                let _ = self.tx.send(Msg::Dirty(me));
            }
        }
    }
}

/// The [`Broker`] handle of one broker.
struct EmbeddedBroker {
    shared: Arc<Shared>,
    broker: Arc<BrokerShared>,
}

#[async_trait]
impl Broker for EmbeddedBroker {
    fn backend(&self) -> &'static str {
        "embedded"
    }

    async fn append_batch(&self, batch: EventBatch) -> Result<(), BrokerError> {
        if self.shared.is_closed() {
            return Err(BrokerError::Closed);
        }
        if batch.is_empty() {
            return Ok(());
        }
        let bytes = batch.bytes() as u64;
        let (reply, done) = oneshot::channel();
        let msg = Msg::Append {
            broker: self.broker.clone(),
            records: batch,
            bytes,
            reply,
        };
        self.shared.tx.send(msg).map_err(|_| BrokerError::Closed)?;
        done.await.unwrap_or(Err(BrokerError::Closed))
    }

    async fn subscribe(
        &self,
        subscription: &str,
        _options: &SubscribeOptions,
    ) -> Result<Box<dyn Subscription>, BrokerError> {
        if self.shared.is_closed() {
            return Err(BrokerError::Closed);
        }
        let existing = lock(&self.broker.state).subs.get(subscription).cloned();
        let sub = match existing {
            Some(sub) => sub,
            None => {
                let (reply, done) = oneshot::channel();
                let msg = Msg::Subscribe {
                    broker: self.broker.clone(),
                    name: subscription.to_owned(),
                    reply,
                };
                self.shared.tx.send(msg).map_err(|_| BrokerError::Closed)?;
                done.await.unwrap_or(Err(BrokerError::Closed))?
            }
        };
        Ok(Box::new(EmbeddedSubscription::new(
            self.shared.clone(),
            self.broker.clone(),
            sub,
        )))
    }

    async fn remove_subscription(&self, subscription: &str) -> Result<(), BrokerError> {
        if self.shared.is_closed() {
            return Err(BrokerError::Closed);
        }
        let (reply, done) = oneshot::channel();
        let msg = Msg::Remove {
            broker: self.broker.clone(),
            name: subscription.to_owned(),
            reply,
        };
        self.shared.tx.send(msg).map_err(|_| BrokerError::Closed)?;
        done.await.unwrap_or(Err(BrokerError::Closed))
    }

    fn stored(&self) -> u64 {
        self.broker.retained.load(Ordering::Relaxed)
    }

    fn unavailable(&self) -> Option<String> {
        self.shared.unavailable()
    }

    fn pending(&self, subscription: &str) -> u64 {
        let sub = lock(&self.broker.state).subs.get(subscription).cloned();
        sub.map_or(0, |sub| sub.pending(self.broker.head()))
    }
}

/// What the tables hold at open.
struct Recovered {
    brokers: Vec<((String, String), u64)>,
    states: HashMap<u64, (u64, u64, u64, u64)>,
    subscriptions: Vec<((u64, String), (u64, u64))>,
}

/// Opens (creating if needed) the redb file with our cache size.
fn open_file(path: &Path, cache_bytes: usize) -> Result<Database, redb::DatabaseError> {
    redb::Builder::new()
        .set_cache_size(cache_bytes)
        .create(path)
}

/// Creates the tables if needed and reads brokers, their state and subscriptions. Writes only
/// when a table is missing, so a store on a full disk still opens and delivers what it holds.
fn recover(db: &Database) -> Result<Recovered, redb::Error> {
    let complete = {
        let txn = db.begin_read()?;
        let exists = |result: Result<(), redb::TableError>| match result {
            Ok(()) => Ok(true),
            Err(redb::TableError::TableDoesNotExist(_)) => Ok(false),
            Err(e) => Err(e),
        };
        exists(txn.open_table(EVENTS).map(drop))?
            && exists(txn.open_table(BROKERS).map(drop))?
            && exists(txn.open_table(STATE).map(drop))?
            && exists(txn.open_table(SUBSCRIPTIONS).map(drop))?
    };
    if !complete {
        let txn = db.begin_write()?;
        txn.open_table(EVENTS)?;
        txn.open_table(BROKERS)?;
        txn.open_table(STATE)?;
        txn.open_table(SUBSCRIPTIONS)?;
        txn.commit()?;
    }

    let txn = db.begin_read()?;
    let mut recovered = Recovered {
        brokers: Vec::new(),
        states: HashMap::new(),
        subscriptions: Vec::new(),
    };
    for row in txn.open_table(BROKERS)?.iter()? {
        let (key, id) = row?;
        let (namespace, name) = key.value();
        recovered
            .brokers
            .push(((namespace.to_owned(), name.to_owned()), id.value()));
    }
    for row in txn.open_table(STATE)?.iter()? {
        let (id, state) = row?;
        recovered.states.insert(id.value(), state.value());
    }
    for row in txn.open_table(SUBSCRIPTIONS)?.iter()? {
        let (key, cursor) = row?;
        let (id, name) = key.value();
        recovered
            .subscriptions
            .push(((id, name.to_owned()), cursor.value()));
    }
    Ok(recovered)
}

/// Locks, ignoring poisoning: every critical section leaves the state consistent.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
