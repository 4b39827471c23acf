//! The rows of one cell of one writer, and which data files they become: a pure state machine
//! (no I/O), so its rules are tested exactly.
//!
//! A *cell* is a span of dataflow time (`cell_len`, aligned to 0). Its rows are kept per Hive
//! partition (the row's own event time), in (dataflow time, key) order, and cut into numbered
//! *parts* of `max_rows` rows:
//!
//! - A full part is cut as soon as the input frontier has passed the dataflow time of its last
//!   row: no row still to come can sort before it (rows come at times at or after the
//!   frontier), so where the cut falls depends only on the rows, never on when they arrived.
//!   This is the size bound, and it bounds what a partition holds in memory.
//! - When the frontier passes the end of the cell, every partition's remaining rows become its
//!   last part. This is the time bound.
//!
//! Every key is kept once: a row whose key was already stored (in this run, or in a data file of
//! an earlier run, loaded into [`Cell::new`]) is a duplicate and is dropped (counted); of two
//! pending rows with one key, the one at the earlier dataflow time stays (so which one stays does
//! not depend on arrival order either). Part numbers continue after the parts already stored, per
//! partition, so a restarted writer adds the parts that are missing and never reuses a name that
//! holds rows.

use std::collections::{BTreeMap, HashMap};

use crate::layout::Partition;
use crate::row::LakeRow;

/// Where a key of the cell is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Seen {
    /// In a data file.
    Stored,
    /// Held, at this dataflow time, in this partition.
    Pending(u64, Partition),
}

/// What became of an inserted row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Insert {
    /// Held for a part.
    Held,
    /// Dropped as a duplicate of a row already stored or held: the row at this dataflow time
    /// needs no writing (it is settled).
    Duplicate(u64),
    /// Held, replacing a held row with the same key at a later dataflow time (that one is
    /// settled, as a duplicate).
    Replaced(u64),
}

/// One data file to write.
#[derive(Debug)]
pub(crate) struct Planned<R> {
    /// Its partition.
    pub(crate) partition: Partition,
    /// Its part number within the (cell, writer, partition).
    pub(crate) part: u32,
    /// Its rows with their dataflow times, in key order.
    pub(crate) rows: Vec<(u64, R)>,
}

/// The held rows of one partition of a cell. Rows stay in their slot until they are taken (they
/// are large; the ordered index moves only keys and slot numbers), and freed slots are reused, so
/// the slots never outnumber the rows held at once.
struct Pending<R: LakeRow> {
    order: BTreeMap<(u64, R::Key), usize>,
    slots: Vec<Option<R>>,
    free: Vec<usize>,
    /// Rows per dataflow time (to count the complete ones without walking the rows).
    times: BTreeMap<u64, usize>,
    next_part: u32,
}

impl<R: LakeRow> Pending<R> {
    fn new(next_part: u32) -> Self {
        Pending { order: BTreeMap::new(), slots: Vec::new(), free: Vec::new(), times: BTreeMap::new(), next_part }
    }

    fn len(&self) -> usize {
        self.order.len()
    }

    fn put(&mut self, time: u64, key: R::Key, row: R) {
        let slot = match self.free.pop() {
            Some(slot) => {
                self.slots[slot] = Some(row);
                slot
            }
            None => {
                self.slots.push(Some(row));
                self.slots.len() - 1
            }
        };
        self.order.insert((time, key), slot);
        *self.times.entry(time).or_default() += 1;
    }

    fn forget_time(&mut self, time: u64) {
        if let Some(n) = self.times.get_mut(&time) {
            *n -= 1;
            if *n == 0 {
                self.times.remove(&time);
            }
        }
    }

    fn remove(&mut self, time: u64, key: &R::Key) -> Option<R> {
        let slot = self.order.remove(&(time, key.clone()))?;
        self.forget_time(time);
        self.free.push(slot);
        self.slots[slot].take()
    }

    /// Rows at dataflow times before `frontier` (`None`: the input is complete).
    fn complete(&self, frontier: Option<u64>) -> usize {
        match frontier {
            None => self.len(),
            Some(f) => self.times.range(..f).map(|(_, n)| n).sum(),
        }
    }

    /// The first `n` rows, as a part.
    fn take(&mut self, partition: Partition, n: usize, seen: &mut HashMap<R::Key, Seen, Hasher>) -> Planned<R> {
        let mut rows = Vec::with_capacity(n.min(self.len()));
        while rows.len() < n {
            let Some(((time, key), slot)) = self.order.pop_first() else { break };
            self.forget_time(time);
            self.free.push(slot);
            seen.insert(key, Seen::Stored);
            if let Some(row) = self.slots[slot].take() {
                rows.push((time, row));
            }
        }
        if self.order.is_empty() {
            self.slots = Vec::new();
            self.free = Vec::new();
        }
        rows.sort_by_cached_key(|(_, r)| r.key());
        let part = self.next_part;
        self.next_part += 1;
        Planned { partition, part, rows }
    }
}

type Hasher = foldhash::fast::RandomState;

/// The rows of one cell.
pub(crate) struct Cell<R: LakeRow> {
    seen: HashMap<R::Key, Seen, Hasher>,
    partitions: BTreeMap<Partition, Pending<R>>,
    /// The first free part number of partitions not in `partitions` yet.
    next_parts: BTreeMap<Partition, u32>,
    held: usize,
}

impl<R: LakeRow> Cell<R> {
    /// A cell whose data files (of earlier runs) hold `stored` keys; `next_parts` gives, per
    /// partition with files, the first part number not taken.
    pub(crate) fn new(stored: impl IntoIterator<Item = R::Key>, next_parts: BTreeMap<Partition, u32>) -> Self {
        let seen = stored.into_iter().map(|k| (k, Seen::Stored)).collect();
        Cell { seen, partitions: BTreeMap::new(), next_parts, held: 0 }
    }

    /// Rows held (not yet planned into a part).
    pub(crate) fn held(&self) -> usize {
        self.held
    }

    /// Takes a row at dataflow `time`.
    pub(crate) fn insert(&mut self, time: u64, row: R) -> Insert {
        let key = row.key();
        let partition = Partition::of_ns(row.partition_ns());
        let outcome = match self.seen.get(&key) {
            None => Insert::Held,
            Some(Seen::Stored) => return Insert::Duplicate(time),
            Some(&Seen::Pending(t, _)) if t <= time => return Insert::Duplicate(time),
            Some(&Seen::Pending(t, p)) => {
                if let Some(pending) = self.partitions.get_mut(&p) {
                    pending.remove(t, &key);
                }
                self.held -= 1;
                Insert::Replaced(t)
            }
        };
        self.seen.insert(key.clone(), Seen::Pending(time, partition));
        let next_parts = &self.next_parts;
        let pending = self
            .partitions
            .entry(partition)
            .or_insert_with(|| Pending::new(next_parts.get(&partition).copied().unwrap_or(0)));
        pending.put(time, key, row);
        self.held += 1;
        outcome
    }

    /// The full parts whose rows are all before `frontier` (`None`: the input is complete).
    pub(crate) fn cut(&mut self, frontier: Option<u64>, max_rows: usize) -> Vec<Planned<R>> {
        let mut out = Vec::new();
        for (&partition, pending) in &mut self.partitions {
            while pending.len() >= max_rows && pending.complete(frontier) >= max_rows {
                let part = pending.take(partition, max_rows, &mut self.seen);
                self.held -= part.rows.len();
                out.push(part);
            }
        }
        out
    }

    /// Every row held, as parts (the cell is complete).
    pub(crate) fn close(&mut self, max_rows: usize) -> Vec<Planned<R>> {
        let mut out = self.cut(None, max_rows);
        for (&partition, pending) in &mut self.partitions {
            if pending.len() > 0 {
                let n = pending.len();
                let part = pending.take(partition, n, &mut self.seen);
                self.held -= part.rows.len();
                out.push(part);
            }
        }
        out
    }
}

#[cfg(test)]
#[path = "cell_tests.rs"]
mod tests;
