//! Per-exporter progress: sequence numbers, duplicates, gaps, and the event-time frontier.
//!
//! The transport (Kafka, keyed by exporter id) delivers one exporter's batches in the order it
//! published them, possibly with duplicates (producer retries) and gaps (lost batches), while
//! different exporters' batches interleave arbitrarily. The frontier of the input is therefore
//! the minimum, over the exporters this source reads, of the `window_to` of the last batch each
//! delivered. A gap in one exporter's sequence is counted as lost at once (its successor has
//! arrived, and per-exporter order is the transport's guarantee); if the missing batch does turn
//! up later it is *late*: still used, but at the current time, and counted. The same holds for
//! a batch numbered below the first one the job saw of that exporter (the job may start
//! mid-stream, or the transport may break the order): late, unless it was already seen.
//!
//! Everything here depends only on the sequence of batches per exporter, never on wall-clock
//! arrival times, so any interleaving of the exporters gives the same frontier decisions for
//! each batch. That is the basis of the job's determinism. The one exception is opt-in: on a
//! live feed, [`Tracker::sweep`] marks exporters silent for longer than the idle timeout as
//! idle, and idle exporters stop holding the frontier back until they send again.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use flowmap_operators::{Time, Workload};

use crate::decode::IngestStats;

/// What to do with a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// The next batch (possibly after a gap): use it at its own window time.
    InOrder,
    /// A batch the tracker had counted as lost: use it, but it is behind the frontier.
    Late,
    /// Seen before: drop it.
    Duplicate,
}

#[derive(Debug)]
struct ExporterState {
    /// When its last batch arrived (or when it was expected, for a roster entry).
    last_seen: Instant,
    /// Silent for longer than the idle timeout: not holding the frontier.
    idle: bool,
    /// The next expected sequence number; `None` before the first batch.
    next_seq: Option<u64>,
    /// `window_to` of the latest batch: the exporter's promise so far.
    frontier: Time,
    /// Sequence numbers skipped and not yet seen (bounded, oldest forgotten first).
    missing: BTreeSet<u64>,
    /// The first sequence number seen: the job may have started mid-stream, so numbers below
    /// it are not known to be lost, only unseen.
    floor: u64,
    /// Numbers below `floor` that have arrived since (bounded), to tell their duplicates.
    seen_below: BTreeSet<u64>,
}

impl Default for ExporterState {
    fn default() -> Self {
        ExporterState {
            last_seen: Instant::now(),
            idle: false,
            next_seq: None,
            frontier: 0,
            missing: BTreeSet::new(),
            floor: 0,
            seen_below: BTreeSet::new(),
        }
    }
}

/// How many missing sequence numbers an exporter remembers; older gaps are forgotten, and a
/// batch that fills one of them afterwards is treated as a duplicate.
const MAX_MISSING: usize = 4096;

/// Tracks the exporters one source reads.
#[derive(Debug, Default)]
pub struct Tracker {
    exporters: HashMap<Workload, ExporterState>,
}

impl Tracker {
    /// A tracker expecting these exporters: each holds the frontier back until its first batch.
    pub fn new(roster: impl IntoIterator<Item = Workload>) -> Self {
        Tracker { exporters: roster.into_iter().map(|w| (w, ExporterState::default())).collect() }
    }

    /// Admits a batch `seq` with window end `to` from `exporter`, counting gaps, late batches
    /// and duplicates in `stats`.
    pub fn admit(&mut self, exporter: &Workload, seq: u64, to: Time, stats: &mut IngestStats) -> Admission {
        let state = self.exporters.entry(exporter.clone()).or_default();
        state.last_seen = Instant::now();
        state.idle = false;
        match state.next_seq {
            Some(next) if seq < next => {
                if state.missing.remove(&seq) {
                    stats.late_batches += 1;
                    stats.lost_batches = stats.lost_batches.saturating_sub(1);
                    Admission::Late
                } else if seq < state.floor && state.seen_below.len() < MAX_MISSING && state.seen_below.insert(seq) {
                    // Older than the first batch seen, and new: late, not a duplicate.
                    stats.late_batches += 1;
                    Admission::Late
                } else {
                    stats.duplicate_batches += 1;
                    Admission::Duplicate
                }
            }
            next => {
                if next.is_none() {
                    state.floor = seq;
                }
                if let Some(next) = next {
                    let gap = seq - next;
                    stats.lost_batches += gap;
                    // Remember at most MAX_MISSING of the skipped numbers (the newest).
                    let keep_from = next.max(seq.saturating_sub(MAX_MISSING as u64));
                    state.missing.extend(keep_from..seq);
                    while state.missing.len() > MAX_MISSING {
                        state.missing.pop_first();
                    }
                }
                state.next_seq = Some(seq + 1);
                state.frontier = state.frontier.max(to);
                Admission::InOrder
            }
        }
    }

    /// The input frontier: the least promise over all exporters that are not idle (0 while any
    /// has sent nothing), or `None` when there are none.
    pub fn frontier(&self) -> Option<Time> {
        self.exporters.values().filter(|s| !s.idle).map(|s| s.frontier).min()
    }

    /// Marks exporters silent for longer than `timeout` (at `now`) as idle, counting each
    /// one that becomes idle in `stats.idle_exporters`.
    pub fn sweep(&mut self, now: Instant, timeout: Duration, stats: &mut IngestStats) {
        for (id, state) in &mut self.exporters {
            if !state.idle && now.saturating_duration_since(state.last_seen) > timeout {
                state.idle = true;
                stats.idle_exporters += 1;
                tracing::info!(
                    exporter = id.as_str(),
                    promise = state.frontier,
                    "exporter idle: no longer holding the frontier"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(s: &str) -> Workload {
        Workload::new(s)
    }

    #[test]
    fn in_order_gap_late_duplicate() {
        let mut t = Tracker::new([w("a"), w("b")]);
        let mut stats = IngestStats::default();
        assert_eq!(t.frontier(), Some(0));
        assert_eq!(t.admit(&w("a"), 0, 10, &mut stats), Admission::InOrder);
        assert_eq!(t.frontier(), Some(0), "b has not reported yet");
        assert_eq!(t.admit(&w("b"), 5, 10, &mut stats), Admission::InOrder, "first batch may start anywhere");
        assert_eq!(t.frontier(), Some(10));
        assert_eq!(t.admit(&w("a"), 3, 40, &mut stats), Admission::InOrder);
        assert_eq!(stats.lost_batches, 2);
        assert_eq!(t.admit(&w("a"), 3, 40, &mut stats), Admission::Duplicate);
        assert_eq!(t.admit(&w("a"), 1, 20, &mut stats), Admission::Late);
        assert_eq!(t.admit(&w("a"), 1, 20, &mut stats), Admission::Duplicate);
        assert_eq!(t.admit(&w("a"), 0, 10, &mut stats), Admission::Duplicate);
        assert_eq!((stats.lost_batches, stats.late_batches, stats.duplicate_batches), (1, 1, 3));
        assert_eq!(t.frontier(), Some(10));
        assert_eq!(t.admit(&w("b"), 6, 50, &mut stats), Admission::InOrder);
        assert_eq!(t.frontier(), Some(40));
    }

    /// Regression: when a transport delivered an exporter's batch k+1 before batch k and k+1
    /// was the first batch the job saw of it, batch k was dropped as a duplicate.
    #[test]
    fn regression_earlier_batch_after_the_first_is_late_not_duplicate() {
        let mut t = Tracker::new([w("a")]);
        let mut stats = IngestStats::default();
        assert_eq!(t.admit(&w("a"), 1, 20, &mut stats), Admission::InOrder);
        assert_eq!(t.admit(&w("a"), 0, 10, &mut stats), Admission::Late);
        assert_eq!(t.admit(&w("a"), 0, 10, &mut stats), Admission::Duplicate);
        assert_eq!((stats.late_batches, stats.duplicate_batches, stats.lost_batches), (1, 1, 0));
    }

    #[test]
    fn empty_roster_and_unknown_exporter() {
        let mut t = Tracker::new([]);
        let mut stats = IngestStats::default();
        assert_eq!(t.frontier(), None);
        t.admit(&w("x"), 0, 7, &mut stats);
        assert_eq!(t.frontier(), Some(7));
    }

    #[test]
    fn idle_exporters_stop_holding_the_frontier() {
        let mut t = Tracker::new([w("a"), w("b")]);
        let mut stats = IngestStats::default();
        t.admit(&w("a"), 0, 10, &mut stats);
        assert_eq!(t.frontier(), Some(0), "b holds the frontier");
        let later = Instant::now() + Duration::from_secs(5);
        t.sweep(later, Duration::from_secs(10), &mut stats);
        assert_eq!(t.frontier(), Some(0), "not idle yet");
        t.sweep(later, Duration::from_secs(1), &mut stats);
        assert_eq!(t.frontier(), None, "both silent");
        assert_eq!(stats.idle_exporters, 2);
        t.admit(&w("a"), 1, 20, &mut stats);
        assert_eq!(t.frontier(), Some(20), "a is back; b still idle");
        t.admit(&w("b"), 0, 10, &mut stats);
        assert_eq!(t.frontier(), Some(10));
    }

    #[test]
    fn huge_gap_is_bounded() {
        let mut t = Tracker::new([w("a")]);
        let mut stats = IngestStats::default();
        t.admit(&w("a"), 0, 1, &mut stats);
        t.admit(&w("a"), 1_000_000_000, 2, &mut stats);
        assert_eq!(stats.lost_batches, 999_999_999);
        assert_eq!(t.admit(&w("a"), 999_999_999, 2, &mut stats), Admission::Late);
        assert_eq!(t.admit(&w("a"), 5, 2, &mut stats), Admission::Duplicate, "forgotten gap");
    }
}
