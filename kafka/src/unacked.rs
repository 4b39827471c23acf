//! The records a producer has queued and the broker has not acknowledged yet: what a recreated
//! producer resends.
//!
//! Why: librdkafka retries a record as long as its producer lives, but a *fatal* error (with
//! idempotence, a broken sequence the broker cannot explain; seen against Tansu 0.6 after a
//! broker bounce with records in flight) ends that producer for good: every later record
//! fails. The only way on is a new producer, and the records the old one never got
//! acknowledged must be sent again, in their order. This is the bookkeeping for that, kept
//! apart from librdkafka so that it can be tested exactly.
//!
//! Every queued record gets an id (its delivery opaque). A delivery report settles the record
//! (acknowledged, or failed for good) and removes it. A report for an id that is no longer here
//! is ignored: that record was taken for a resend under a new id, and the old producer is
//! failing it as it goes away. Resending takes every record still here, in send order, to be
//! queued again under new ids. The buffer holds at most as many records as the producer's
//! queue (a send beyond that is refused like a full queue), so it is bounded by the same
//! settings.

use std::collections::HashMap;
use std::sync::Arc;

use crate::producer::Ticket;

/// One record, owned, as it was queued.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Buffered {
    pub topic: String,
    pub key: Vec<u8>,
    pub payload: Vec<u8>,
    pub timestamp_ms: Option<i64>,
    pub headers: Vec<(String, Vec<u8>)>,
    /// Producers that tried it before the current one.
    pub attempts: u32,
}

#[derive(Debug)]
struct Entry {
    record: Buffered,
    ticket: Arc<Ticket>,
}

/// The unacknowledged records of one producer (across its recreations).
#[derive(Debug)]
pub(crate) struct Unacked {
    next_id: u64,
    capacity: usize,
    entries: HashMap<u64, Entry>,
}

/// A record that could not be buffered (the buffer is full), handed back.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Full(pub Buffered);

impl Unacked {
    /// A buffer for at most `capacity` records.
    pub fn new(capacity: usize) -> Self {
        Unacked { next_id: 1, capacity, entries: HashMap::new() }
    }

    /// Buffers a record about to be queued; returns its id.
    pub fn push(&mut self, record: Buffered, ticket: &Arc<Ticket>) -> Result<u64, Full> {
        if self.entries.len() >= self.capacity {
            return Err(Full(record));
        }
        let id = self.next_id;
        self.next_id += 1;
        self.entries.insert(id, Entry { record, ticket: Arc::clone(ticket) });
        Ok(id)
    }

    /// Removes a record that was not queued after all (the queue refused it), handing it back.
    pub fn cancel(&mut self, id: u64) -> Option<Buffered> {
        self.entries.remove(&id).map(|e| e.record)
    }

    /// A copy of the record buffered under `id`, if it is still there.
    pub fn entry(&self, id: u64) -> Option<Buffered> {
        self.entries.get(&id).map(|e| e.record.clone())
    }

    /// A delivery report: the record's ticket, when the record is still here (`None`: it was
    /// taken for a resend, and this report is the old producer's).
    pub fn settle(&mut self, id: u64) -> Option<Arc<Ticket>> {
        self.entries.remove(&id).map(|e| e.ticket)
    }

    /// Every record still unacknowledged, in send order, removed from the buffer: to be queued
    /// again by a new producer (each with [`Unacked::push`], which gives it a new id).
    pub fn take_all(&mut self) -> Vec<(Buffered, Arc<Ticket>)> {
        let mut all: Vec<(u64, Entry)> = self.entries.drain().collect();
        all.sort_unstable_by_key(|(id, _)| *id);
        all.into_iter().map(|(_, e)| (e.record, e.ticket)).collect()
    }

    /// Records buffered.
    pub fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(n: u8) -> Buffered {
        Buffered {
            topic: "t".into(),
            key: vec![n],
            payload: vec![n; 3],
            timestamp_ms: None,
            headers: Vec::new(),
            attempts: 0,
        }
    }

    #[test]
    fn settle_take_and_resend_in_order_with_old_reports_ignored() {
        let ticket = Ticket::new();
        let mut u = Unacked::new(3);
        let a = u.push(rec(1), &ticket).unwrap();
        let b = u.push(rec(2), &ticket).unwrap();
        let c = u.push(rec(3), &ticket).unwrap();
        assert_eq!(u.push(rec(4), &ticket), Err(Full(rec(4))), "capacity 3");
        assert!(u.settle(b).is_some(), "b acknowledged");
        assert!(u.settle(b).is_none(), "reported once");
        let again = u.take_all();
        assert_eq!(again.iter().map(|(r, _)| r.key[0]).collect::<Vec<_>>(), [1, 3], "send order");
        assert_eq!(u.len(), 0);
        // The old producer fails a and c as it goes away: ignored.
        assert!(u.settle(a).is_none() && u.settle(c).is_none());
        let ids: Vec<u64> = again.into_iter().map(|(r, t)| u.push(r, &t).unwrap()).collect();
        assert!(ids.iter().all(|id| *id > c), "new ids");
        assert_eq!(u.cancel(ids[0]), Some(rec(1)));
        assert_eq!(u.len(), 1);
    }
}
