//! [`EventBatch`]: events in their storage encoding, back to back in one buffer.
//!
//! Decoders hand every event to a batch as soon as it is built, so a request of many small events
//! costs about its encoded size in memory, not a tree of small allocations per attribute.

use super::{CloudEvent, EventError};

/// Storage-encoded events in one buffer, appended to a broker as one atomic unit.
#[derive(Debug, Default, Clone)]
pub struct EventBatch {
    buf: Vec<u8>,
    /// End offset of each event in `buf`.
    ends: Vec<usize>,
}

impl EventBatch {
    pub fn new() -> EventBatch {
        EventBatch::default()
    }

    /// Validates `event` and appends its storage encoding.
    pub fn push(&mut self, event: &CloudEvent) -> Result<(), EventError> {
        event.validate()?;
        event.encode_storage(&mut self.buf);
        self.ends.push(self.buf.len());
        Ok(())
    }

    /// A batch of `events`, each validated.
    pub fn from_events(events: &[CloudEvent]) -> Result<EventBatch, EventError> {
        let mut batch = EventBatch::new();
        for event in events {
            batch.push(event)?;
        }
        Ok(batch)
    }

    /// Events in the batch.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Encoded bytes of all events.
    pub fn bytes(&self) -> usize {
        self.buf.len()
    }

    /// Each event's storage encoding, in order.
    pub fn records(&self) -> impl Iterator<Item = &[u8]> {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts
            .zip(self.ends.iter().copied())
            .map(|(start, end)| &self.buf[start..end])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::SpecVersion;

    #[test]
    fn records_decode_back_to_the_events_in_order() {
        let events: Vec<CloudEvent> = (0..5)
            .map(|i| CloudEvent::new(SpecVersion::V10, i.to_string(), "s", "t"))
            .collect();
        let batch = EventBatch::from_events(&events).expect("valid");
        assert_eq!(batch.len(), 5);
        let decoded: Vec<CloudEvent> = batch
            .records()
            .map(|r| CloudEvent::decode_storage(r).expect("decodes"))
            .collect();
        assert_eq!(decoded, events);
    }

    #[test]
    fn an_invalid_event_is_refused() {
        let event = CloudEvent::new(SpecVersion::V10, "", "s", "t");
        assert!(EventBatch::new().push(&event).is_err());
    }
}
