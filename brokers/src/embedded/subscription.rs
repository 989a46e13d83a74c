//! Reading a subscription: batches of committed events from read transactions on the blocking
//! pool, fetched only when the consumer asks for more.

use std::collections::VecDeque;
use std::sync::Arc;

use async_trait::async_trait;
use redb::{Database, ReadableDatabase};
use tokio::sync::watch;

use super::{BrokerShared, EVENTS, Shared, SubShared, lock};
use crate::broker::{AckHandler, Acker, BrokerError, Delivery, Subscription};
use crate::event::{CloudEvent, EventError};

/// A stored event: its offset and the decoded event (or why it could not be decoded).
type Row = (u64, Result<CloudEvent, EventError>);

/// A subscription handle. Delivery restarts at the in-memory cursor (the persisted one after a
/// restart), skipping offsets already acked out of order. Use one handle per subscription at a
/// time: two handles both deliver every event.
pub(super) struct EmbeddedSubscription {
    shared: Arc<Shared>,
    broker: Arc<BrokerShared>,
    sub: Arc<SubShared>,
    /// The next offset to read from the table.
    next_read: u64,
    /// Offsets below had been handed out before this handle was opened.
    redelivery_below: u64,
    buffer: VecDeque<Row>,
    head: watch::Receiver<u64>,
    closed: watch::Receiver<bool>,
}

impl EmbeddedSubscription {
    pub(super) fn new(
        shared: Arc<Shared>,
        broker: Arc<BrokerShared>,
        sub: Arc<SubShared>,
    ) -> EmbeddedSubscription {
        let (cursor, delivered) = {
            let acks = lock(&sub.acks);
            (acks.cursor, acks.delivered)
        };
        EmbeddedSubscription {
            head: broker.head.subscribe(),
            closed: shared.closed.subscribe(),
            shared,
            broker,
            sub,
            next_read: cursor,
            redelivery_below: delivered,
            buffer: VecDeque::new(),
        }
    }

    /// Reads the next batch below `head` into the buffer.
    async fn fill(&mut self, head: u64) -> Result<(), BrokerError> {
        let from = self.next_read;
        let to = head.min(from.saturating_add(self.shared.options.read_batch as u64));
        let db = match self.shared.db() {
            Some(db) => db,
            None if self.shared.is_closed() => return Err(BrokerError::Closed),
            // The writer is reopening the file after a storage failure; read again shortly.
            None => {
                return Err(BrokerError::Unavailable(
                    "the event store is reopening after a storage failure".into(),
                ));
            }
        };
        let id = self.broker.id;
        let rows = tokio::task::spawn_blocking(move || read_range(&db, id, from, to))
            .await
            .map_err(|e| BrokerError::Unavailable(format!("event read task failed: {e}")))?
            .map_err(|e| BrokerError::Unavailable(format!("cannot read events: {e}")))?;
        let acks = lock(&self.sub.acks);
        let unacked = rows
            .into_iter()
            .filter(|(offset, _)| *offset >= acks.cursor && !acks.acked.contains(offset));
        self.buffer.extend(unacked);
        self.next_read = to;
        Ok(())
    }

    fn deliver(
        &mut self,
        offset: u64,
        decoded: Result<CloudEvent, EventError>,
    ) -> Result<Delivery, BrokerError> {
        match decoded {
            Ok(event) => {
                {
                    let mut acks = lock(&self.sub.acks);
                    acks.delivered = acks.delivered.max(offset + 1);
                }
                Ok(Delivery {
                    offset,
                    event,
                    redelivered: offset < self.redelivery_below,
                    invalid: None,
                    acker: Acker::new(offset, self.sub.clone()),
                })
            }
            Err(error) => {
                // A corrupt record can never be delivered; acking it keeps it from holding the
                // cursor (and the broker's storage) forever.
                tracing::error!(
                    broker = ?self.broker.key,
                    subscription = %self.sub.name,
                    offset,
                    %error,
                    "skipping corrupt stored event"
                );
                self.sub.ack(offset);
                Err(BrokerError::Event(error))
            }
        }
    }
}

#[async_trait]
impl Subscription for EmbeddedSubscription {
    async fn next(&mut self) -> Option<Result<Delivery, BrokerError>> {
        loop {
            if *self.closed.borrow() || lock(&self.sub.acks).removed {
                return None;
            }
            if let Some((offset, decoded)) = self.buffer.pop_front() {
                return Some(self.deliver(offset, decoded));
            }
            let head = *self.head.borrow_and_update();
            if self.next_read < head {
                match self.fill(head).await {
                    Ok(()) => continue,
                    Err(BrokerError::Closed) => return None,
                    Err(e) => return Some(Err(e)),
                }
            }
            tokio::select! {
                changed = self.head.changed() => {
                    if changed.is_err() {
                        return None;
                    }
                }
                _ = self.closed.changed() => {}
            }
        }
    }
}

/// Offsets `from..to` of broker `id` that are still stored, decoded.
fn read_range(db: &Database, id: u64, from: u64, to: u64) -> Result<Vec<Row>, redb::Error> {
    let txn = db.begin_read()?;
    let table = txn.open_table(EVENTS)?;
    let mut rows = Vec::new();
    for row in table.range((id, from)..(id, to))? {
        let (key, value) = row?;
        rows.push((key.value().1, CloudEvent::decode_storage(value.value())));
    }
    Ok(rows)
}
