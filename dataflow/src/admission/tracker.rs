//! Per-exporter progress: incarnations, sequence numbers, duplicates, gaps, and the event-time
//! frontier of one lane.
//!
//! The transport (Kafka, keyed by exporter id) delivers one exporter's batches in the order it
//! published them, possibly with duplicates (producer retries) and gaps (lost batches), while
//! different exporters' batches interleave arbitrarily. An exporter numbers its batches from 0
//! in every *incarnation* (every start of the process, named by a random id on the wire), so
//! sequence numbers, gaps and duplicates are tracked per (exporter, incarnation):
//! - A new incarnation of a known exporter is a restart (counted): the previous incarnation is
//!   retired and stops holding the frontier; the new one holds it from its first batch on.
//! - A retired incarnation that sends new batches again means two live processes share one
//!   exporter id (a cloned image, a default host name): counted, logged once per exporter, and
//!   both are tracked (each holds the frontier) so nothing is lost; ids must be unique.
//! - Within an incarnation, a gap is counted as lost at once (its successor arrived, and
//!   per-exporter order is the transport's guarantee); if the missing batch turns up later it
//!   is *late*: still used, at a later time, and counted. A batch numbered below the first one
//!   the job saw of that incarnation (the job may start mid-stream) is late too, unless seen.
//!
//! The lane's frontier is the minimum, over its exporters, of the promise (`window_to`) of the
//! last batch each live incarnation delivered. Everything here depends only on the sequence of
//! batches per exporter, never on wall-clock arrival times, so any interleaving of exporters
//! gives the same decisions for each batch: the basis of the job's determinism. The one
//! exception is opt-in: on a live feed, [`Tracker::sweep`] marks exporters silent for longer
//! than the idle timeout as idle, and idle exporters stop holding the frontier until they send
//! again.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use flowmap_operators::Time;

use super::IngestStats;

/// What to do with a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// The next batch of its incarnation (possibly after a gap): use it at its own window time.
    InOrder,
    /// A batch the tracker had counted as lost, or one from before the first seen: use it, but
    /// it is behind the frontier.
    Late,
    /// Seen before: drop it.
    Duplicate,
}

/// How many missing sequence numbers an incarnation remembers; older gaps are forgotten, and a
/// batch that fills one of them afterwards is treated as a duplicate.
const MAX_MISSING: usize = 4096;

/// How many incarnations of one exporter id are remembered (a restart loop should not grow
/// memory without bound); the oldest retired one is forgotten first.
const MAX_INCARNATIONS: usize = 8;

#[derive(Debug)]
struct Incarnation {
    id: u64,
    /// The next expected sequence number.
    next_seq: u64,
    /// `window_to` of the latest batch: the promise so far.
    frontier: Time,
    /// Sequence numbers skipped and not yet seen (bounded, oldest forgotten first).
    missing: BTreeSet<u64>,
    /// The first sequence number seen.
    floor: u64,
    /// Numbers below `floor` that have arrived since (bounded), to tell their duplicates.
    seen_below: BTreeSet<u64>,
    /// Replaced by a newer incarnation: not holding the frontier.
    retired: bool,
}

impl Incarnation {
    fn new(id: u64, seq: u64, to: Time) -> Self {
        Incarnation {
            id,
            next_seq: seq + 1,
            frontier: to,
            missing: BTreeSet::new(),
            floor: seq,
            seen_below: BTreeSet::new(),
            retired: false,
        }
    }

    fn admit(&mut self, seq: u64, to: Time, stats: &mut IngestStats) -> Admission {
        if seq < self.next_seq {
            if self.missing.remove(&seq) {
                stats.late_batches += 1;
                stats.lost_batches = stats.lost_batches.saturating_sub(1);
                Admission::Late
            } else if seq < self.floor && self.seen_below.len() < MAX_MISSING && self.seen_below.insert(seq) {
                stats.late_batches += 1;
                Admission::Late
            } else {
                stats.duplicate_batches += 1;
                Admission::Duplicate
            }
        } else {
            let gap = seq - self.next_seq;
            stats.lost_batches += gap;
            // Remember at most MAX_MISSING of the skipped numbers (the newest).
            let keep_from = self.next_seq.max(seq.saturating_sub(MAX_MISSING as u64));
            self.missing.extend(keep_from..seq);
            while self.missing.len() > MAX_MISSING {
                self.missing.pop_first();
            }
            self.next_seq = seq + 1;
            self.frontier = self.frontier.max(to);
            Admission::InOrder
        }
    }
}

#[derive(Debug)]
struct ExporterState {
    /// When its last batch arrived (or when it was expected, for a roster entry).
    last_seen: Instant,
    /// Silent for longer than the idle timeout: not holding the frontier.
    idle: bool,
    /// Known incarnations, the newest last. Empty for a roster entry not heard from yet.
    incarnations: Vec<Incarnation>,
    /// Two live incarnations were seen (logged once).
    conflict: bool,
}

impl ExporterState {
    fn new() -> Self {
        ExporterState { last_seen: Instant::now(), idle: false, incarnations: Vec::new(), conflict: false }
    }

    /// The promise of the exporter: the least over its live incarnations (0 before its first
    /// batch).
    fn frontier(&self) -> Time {
        self.incarnations.iter().filter(|i| !i.retired).map(|i| i.frontier).min().unwrap_or(0)
    }
}

/// Tracks the exporters of one lane.
#[derive(Debug, Default)]
pub struct Tracker {
    exporters: HashMap<String, ExporterState>,
}

impl Tracker {
    /// A tracker expecting these exporters: each holds the frontier back until its first batch.
    pub fn new<'a>(roster: impl IntoIterator<Item = &'a str>) -> Self {
        Tracker { exporters: roster.into_iter().map(|w| (w.to_string(), ExporterState::new())).collect() }
    }

    /// Admits batch `seq` of `incarnation` of `exporter`, with window `[from, to)`, counting
    /// gaps, late batches, duplicates, restarts and id conflicts in `stats`.
    ///
    /// An exporter that does not state its incarnation (0) and restarts is recognized by its
    /// numbering going back while its window moves on (a duplicate repeats its window): that is
    /// a restart too, not a run of duplicates.
    pub fn admit(
        &mut self,
        exporter: &str,
        incarnation: u64,
        seq: u64,
        (from, to): (Time, Time),
        stats: &mut IngestStats,
    ) -> Admission {
        let state = match self.exporters.get_mut(exporter) {
            Some(s) => s,
            None => self.exporters.entry(exporter.to_string()).or_insert_with(ExporterState::new),
        };
        state.last_seen = Instant::now();
        state.idle = false;
        let mut known = state.incarnations.iter().rposition(|i| i.id == incarnation);
        if let Some(k) = known {
            let inc = &state.incarnations[k];
            if incarnation == 0 && seq < inc.next_seq && from >= inc.frontier && !inc.retired {
                known = None; // an unstated incarnation restarted
            }
        }
        match known {
            Some(k) => {
                let inc = &mut state.incarnations[k];
                let admission = inc.admit(seq, to, stats);
                if inc.retired && admission == Admission::InOrder {
                    // A replaced incarnation sends new batches: two live processes, one id.
                    inc.retired = false;
                    stats.exporter_id_conflicts += 1;
                    if !state.conflict {
                        state.conflict = true;
                        tracing::warn!(
                            exporter,
                            incarnation = format!("{incarnation:016x}"),
                            "two live incarnations of one exporter id: exporter ids must be unique (both are tracked)"
                        );
                    }
                }
                admission
            }
            None => {
                if !state.incarnations.is_empty() {
                    stats.exporter_restarts += 1;
                    for old in &mut state.incarnations {
                        old.retired = true;
                    }
                    if state.incarnations.len() >= MAX_INCARNATIONS {
                        state.incarnations.remove(0);
                    }
                }
                state.incarnations.push(Incarnation::new(incarnation, seq, to));
                Admission::InOrder
            }
        }
    }

    /// The lane frontier: the least promise over the exporters that are not idle (0 while any
    /// has sent nothing), or `None` when there are none.
    pub fn frontier(&self) -> Option<Time> {
        self.exporters.values().filter(|s| !s.idle).map(ExporterState::frontier).min()
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
                    promise = state.frontier(),
                    "exporter idle: no longer holding the frontier"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_gap_late_duplicate() {
        let mut t = Tracker::new(["a", "b"]);
        let mut stats = IngestStats::default();
        assert_eq!(t.frontier(), Some(0));
        assert_eq!(t.admit("a", 1, 0, (0, 10), &mut stats), Admission::InOrder);
        assert_eq!(t.frontier(), Some(0), "b has not reported yet");
        assert_eq!(t.admit("b", 1, 5, (0, 10), &mut stats), Admission::InOrder, "first batch may start anywhere");
        assert_eq!(t.frontier(), Some(10));
        assert_eq!(t.admit("a", 1, 3, (0, 40), &mut stats), Admission::InOrder);
        assert_eq!(stats.lost_batches, 2);
        assert_eq!(t.admit("a", 1, 3, (0, 40), &mut stats), Admission::Duplicate);
        assert_eq!(t.admit("a", 1, 1, (0, 20), &mut stats), Admission::Late);
        assert_eq!(t.admit("a", 1, 1, (0, 20), &mut stats), Admission::Duplicate);
        assert_eq!(t.admit("a", 1, 0, (0, 10), &mut stats), Admission::Duplicate);
        assert_eq!((stats.lost_batches, stats.late_batches, stats.duplicate_batches), (1, 1, 3));
        assert_eq!(t.frontier(), Some(10));
        assert_eq!(t.admit("b", 1, 6, (0, 50), &mut stats), Admission::InOrder);
        assert_eq!(t.frontier(), Some(40));
    }

    /// Regression: when a transport delivered an exporter's batch k+1 before batch k and k+1
    /// was the first batch the job saw of it, batch k was dropped as a duplicate.
    #[test]
    fn regression_earlier_batch_after_the_first_is_late_not_duplicate() {
        let mut t = Tracker::new(["a"]);
        let mut stats = IngestStats::default();
        assert_eq!(t.admit("a", 0, 1, (0, 20), &mut stats), Admission::InOrder);
        assert_eq!(t.admit("a", 0, 0, (0, 10), &mut stats), Admission::Late);
        assert_eq!(t.admit("a", 0, 0, (0, 10), &mut stats), Admission::Duplicate);
        assert_eq!((stats.late_batches, stats.duplicate_batches, stats.lost_batches), (1, 1, 0));
    }

    /// Regression (issue "Nothing lost", 1): an exporter that restarts numbers its batches from
    /// 0 again; they were dropped as duplicates until the numbering caught up.
    #[test]
    fn regression_a_restarted_exporter_is_a_new_incarnation_not_duplicates() {
        let mut t = Tracker::new(["host-a"]);
        let mut stats = IngestStats::default();
        assert_eq!(t.admit("host-a", 0xaaaa, 0, (0, 10), &mut stats), Admission::InOrder);
        assert_eq!(t.admit("host-a", 0xaaaa, 1, (0, 20), &mut stats), Admission::InOrder);
        assert_eq!(t.admit("host-a", 0xbbbb, 0, (0, 32), &mut stats), Admission::InOrder, "restart: seq 0 again");
        assert_eq!(t.admit("host-a", 0xbbbb, 1, (0, 42), &mut stats), Admission::InOrder);
        assert_eq!((stats.exporter_restarts, stats.duplicate_batches, stats.lost_batches), (1, 0, 0));
        assert_eq!(t.frontier(), Some(42), "the retired incarnation no longer holds the frontier");
        // A duplicate of the old incarnation's batch is still a duplicate, not a conflict.
        assert_eq!(t.admit("host-a", 0xaaaa, 1, (0, 20), &mut stats), Admission::Duplicate);
        assert_eq!(stats.exporter_id_conflicts, 0);
    }

    /// Two hosts sharing one exporter id interleave two incarnations: counted, both tracked,
    /// nothing dropped.
    #[test]
    fn two_live_incarnations_of_one_id_are_counted_and_both_used() {
        let mut t = Tracker::new([]);
        let mut stats = IngestStats::default();
        assert_eq!(t.admit("localhost", 1, 0, (0, 10), &mut stats), Admission::InOrder);
        assert_eq!(t.admit("localhost", 2, 0, (0, 10), &mut stats), Admission::InOrder);
        assert_eq!(t.admit("localhost", 1, 1, (0, 20), &mut stats), Admission::InOrder);
        assert_eq!(t.admit("localhost", 2, 1, (0, 20), &mut stats), Admission::InOrder);
        assert_eq!(t.admit("localhost", 1, 2, (0, 30), &mut stats), Admission::InOrder);
        assert_eq!(stats.exporter_restarts, 1);
        assert!(stats.exporter_id_conflicts >= 1);
        assert_eq!(stats.duplicate_batches, 0);
        assert_eq!(t.frontier(), Some(20), "both hold the frontier");
    }

    /// An exporter that does not state incarnations is still recognized when it restarts: its
    /// numbering goes back while its window moves on.
    #[test]
    fn unstated_incarnation_restart_is_recognized_by_its_window() {
        let mut t = Tracker::new([]);
        let mut stats = IngestStats::default();
        assert_eq!(t.admit("old", 0, 0, (0, 10), &mut stats), Admission::InOrder);
        assert_eq!(t.admit("old", 0, 1, (10, 20), &mut stats), Admission::InOrder);
        assert_eq!(t.admit("old", 0, 1, (10, 20), &mut stats), Admission::Duplicate, "same window: a duplicate");
        assert_eq!(t.admit("old", 0, 0, (25, 35), &mut stats), Admission::InOrder, "later window: a restart");
        assert_eq!(t.admit("old", 0, 1, (35, 45), &mut stats), Admission::InOrder);
        assert_eq!((stats.exporter_restarts, stats.duplicate_batches), (1, 1));
        assert_eq!(t.frontier(), Some(45));
    }

    #[test]
    fn empty_roster_and_unknown_exporter() {
        let mut t = Tracker::new([]);
        let mut stats = IngestStats::default();
        assert_eq!(t.frontier(), None);
        t.admit("x", 0, 0, (0, 7), &mut stats);
        assert_eq!(t.frontier(), Some(7));
    }

    #[test]
    fn idle_exporters_stop_holding_the_frontier() {
        let mut t = Tracker::new(["a", "b"]);
        let mut stats = IngestStats::default();
        t.admit("a", 0, 0, (0, 10), &mut stats);
        assert_eq!(t.frontier(), Some(0), "b holds the frontier");
        let later = Instant::now() + Duration::from_secs(5);
        t.sweep(later, Duration::from_secs(10), &mut stats);
        assert_eq!(t.frontier(), Some(0), "not idle yet");
        t.sweep(later, Duration::from_secs(1), &mut stats);
        assert_eq!(t.frontier(), None, "both silent");
        assert_eq!(stats.idle_exporters, 2);
        t.admit("a", 0, 1, (0, 20), &mut stats);
        assert_eq!(t.frontier(), Some(20), "a is back; b still idle");
        t.admit("b", 0, 0, (0, 10), &mut stats);
        assert_eq!(t.frontier(), Some(10));
    }

    #[test]
    fn huge_gap_is_bounded() {
        let mut t = Tracker::new(["a"]);
        let mut stats = IngestStats::default();
        t.admit("a", 0, 0, (0, 1), &mut stats);
        t.admit("a", 0, 1_000_000_000, (0, 2), &mut stats);
        assert_eq!(stats.lost_batches, 999_999_999);
        assert_eq!(t.admit("a", 0, 999_999_999, (0, 2), &mut stats), Admission::Late);
        assert_eq!(t.admit("a", 0, 5, (0, 2), &mut stats), Admission::Duplicate, "forgotten gap");
    }
}
