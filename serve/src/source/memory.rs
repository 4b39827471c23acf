//! The job's live rows: [`MemorySource`], which the job updates as it emits edge deltas and
//! events, and the server reads.
//!
//! Rows are kept per bucket as immutable chunks (one per push and bucket), so a reader takes a
//! read lock only long enough to clone a few `Arc`s, and a push only waits for that. A bucket
//! that collects many small chunks has them concatenated (the rows are deltas: keeping them all
//! is exact). Memory is bounded by the retention: buckets and events older than the newest data
//! minus the retention are dropped (counted in [`Health::expired_rows`]).

use std::collections::BTreeMap;

use foldhash::HashSet;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use super::{EdgeRows, EdgeSource, Health, SourceError};
use crate::row::{EdgeRow, EventKind, EventRow, BAD_PORT, BAD_SKETCH, UNSPECIFIED_EVENT};
use crate::time::TimeRange;

/// A bucket with more chunks than this has them concatenated into one.
const CHUNKS_PER_BUCKET: usize = 16;

/// How much the in-memory source keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryOptions {
    retention: Duration,
}

/// A retention of zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the in-memory source's retention must be positive")]
pub struct ZeroRetention;

impl MemoryOptions {
    /// Keep rows whose bucket starts within `retention` of the newest bucket's end.
    ///
    /// # Errors
    /// [`ZeroRetention`] for a zero retention.
    pub fn new(retention: Duration) -> Result<Self, ZeroRetention> {
        if retention.is_zero() {
            return Err(ZeroRetention);
        }
        Ok(MemoryOptions { retention })
    }

    /// The retention.
    pub fn retention(&self) -> Duration {
        self.retention
    }
}

impl Default for MemoryOptions {
    /// Six hours.
    fn default() -> Self {
        MemoryOptions { retention: Duration::from_secs(6 * 3600) }
    }
}

/// The job's rows in memory. Share it as `Arc<MemorySource>`: the job pushes, the server reads.
#[derive(Debug, Default)]
pub struct MemorySource {
    options: MemoryOptions,
    state: RwLock<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Chunks by bucket start.
    edges: BTreeMap<u64, Vec<Arc<[EdgeRow]>>>,
    /// Events by instant.
    events: BTreeMap<u64, Vec<EventRow>>,
    /// The end of the newest bucket (or the newest event), ns.
    newest_ns: u64,
    edge_rows: u64,
    event_rows: u64,
    expired_rows: u64,
    frontier_ns: Option<u64>,
    /// Rows kept with what could be read, by reason.
    bad_rows: BTreeMap<String, u64>,
    /// One allocation per distinct name (client, server, protocol) of the rows held: the job
    /// hands over a new string per row, and hours of rows repeat a few thousand names.
    names: HashSet<Arc<str>>,
}

impl State {
    fn intern(&mut self, name: &Arc<str>) -> Arc<str> {
        match self.names.get(name) {
            Some(shared) => shared.clone(),
            None => {
                self.names.insert(name.clone());
                name.clone()
            }
        }
    }

    fn bad(&mut self, reason: &str, n: u64) {
        if n > 0 {
            metrics::counter!("flowmap_serve_memory_bad_rows_total").increment(n);
            *self.bad_rows.entry(reason.to_owned()).or_default() += n;
        }
    }
}

impl MemorySource {
    /// An empty source.
    pub fn new(options: MemoryOptions) -> Self {
        MemorySource { options, state: RwLock::default() }
    }

    /// Adds edge deltas (any buckets, any order), then drops what fell out of the retention.
    /// Rows with an unreadable sketch or port 0 are kept and counted in [`Health::bad_rows`].
    pub fn push_edges(&self, rows: Vec<EdgeRow>) {
        if rows.is_empty() {
            return;
        }
        let mut by_bucket: BTreeMap<u64, Vec<EdgeRow>> = BTreeMap::new();
        let mut newest = 0;
        let (mut bad_sketch, mut bad_port) = (0, 0);
        let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
        for mut row in rows {
            for name in [&mut row.client, &mut row.server, &mut row.protocol] {
                *name = state.intern(name);
            }
            bad_sketch += u64::from(row.rtt_sketch.is_unreadable());
            bad_port += u64::from(row.server_port == 0);
            newest = newest.max(row.bucket_start_ns.saturating_add(u64::from(row.bucket_s) * 1_000_000_000));
            by_bucket.entry(row.bucket_start_ns).or_default().push(row);
        }
        state.bad(BAD_SKETCH, bad_sketch);
        state.bad(BAD_PORT, bad_port);
        state.newest_ns = state.newest_ns.max(newest);
        for (bucket, rows) in by_bucket {
            state.edge_rows += rows.len() as u64;
            let chunks = state.edges.entry(bucket).or_default();
            chunks.push(rows.into());
            if chunks.len() > CHUNKS_PER_BUCKET {
                let all: Vec<EdgeRow> = chunks.iter().flat_map(|c| c.iter().cloned()).collect();
                *chunks = vec![all.into()];
            }
        }
        self.expire(&mut state);
    }

    /// Adds events, then drops what fell out of the retention. Events of
    /// [`EventKind::Unspecified`] are kept and counted in [`Health::bad_rows`].
    pub fn push_events(&self, events: Vec<EventRow>) {
        let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
        let unspecified = events.iter().filter(|e| e.kind == EventKind::Unspecified).count() as u64;
        state.bad(UNSPECIFIED_EVENT, unspecified);
        for event in events {
            state.newest_ns = state.newest_ns.max(event.at_ns);
            state.event_rows += 1;
            state.events.entry(event.at_ns).or_default().push(event);
        }
        self.expire(&mut state);
    }

    /// Records the job's progress: every row before `frontier_ns` has been pushed.
    pub fn set_frontier(&self, frontier_ns: u64) {
        self.state.write().unwrap_or_else(PoisonError::into_inner).frontier_ns = Some(frontier_ns);
    }

    fn expire(&self, state: &mut State) {
        let retention = u64::try_from(self.options.retention.as_nanos()).unwrap_or(u64::MAX);
        let cutoff = state.newest_ns.saturating_sub(retention);
        let kept_edges = state.edges.split_off(&cutoff);
        let gone: u64 = state.edges.values().flatten().map(|c| c.len() as u64).sum();
        state.edges = kept_edges;
        let kept_events = state.events.split_off(&cutoff);
        let gone_events: u64 = state.events.values().map(|e| e.len() as u64).sum();
        state.events = kept_events;
        state.edge_rows -= gone;
        state.event_rows -= gone_events;
        state.expired_rows += gone + gone_events;
        if gone > 0 {
            // Names only the set still holds belong to expired rows.
            state.names.retain(|n| Arc::strong_count(n) > 1);
        }
    }
}

impl EdgeSource for MemorySource {
    fn edges(&self, range: TimeRange) -> Result<EdgeRows, SourceError> {
        let state = self.state.read().unwrap_or_else(PoisonError::into_inner);
        let chunks = state.edges.range(range.from_ns()..range.to_ns()).flat_map(|(_, c)| c.iter().cloned()).collect();
        Ok(EdgeRows::new(range, chunks))
    }

    fn events(&self, range: TimeRange) -> Result<Vec<EventRow>, SourceError> {
        let state = self.state.read().unwrap_or_else(PoisonError::into_inner);
        Ok(state.events.range(range.from_ns()..range.to_ns()).flat_map(|(_, e)| e.iter().cloned()).collect())
    }

    fn extent(&self) -> Result<Option<TimeRange>, SourceError> {
        let state = self.state.read().unwrap_or_else(PoisonError::into_inner);
        let first = state.edges.keys().next().copied();
        Ok(first.and_then(|first| TimeRange::new(first, state.newest_ns).ok()))
    }

    fn health(&self) -> Health {
        let state = self.state.read().unwrap_or_else(PoisonError::into_inner);
        Health {
            source: "memory",
            ok: true,
            edge_rows: state.edge_rows,
            event_rows: state.event_rows,
            expired_rows: state.expired_rows,
            frontier_ns: state.frontier_ns,
            bad_rows: state.bad_rows.clone(),
            ..Health::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::row::EventKind;

    const S: u64 = 1_000_000_000;

    fn row(bucket_s: u64, client: &str, connections: u64) -> EdgeRow {
        EdgeRow {
            bucket_start_ns: bucket_s * S,
            bucket_s: 60,
            client: client.into(),
            server: "db".into(),
            server_port: 5432,
            protocol: "tcp".into(),
            emitted_at_ns: bucket_s * S,
            connections,
            bytes_client_to_server: 0,
            bytes_server_to_client: 0,
            segments: 0,
            retransmits: 0,
            failed_connects: 0,
            verified: 0,
            disagreements: 0,
            one_sided: connections,
            rtt_p50_us: None,
            rtt_p90_us: None,
            rtt_p99_us: None,
            rtt_sketch: crate::row::RowSketch::Absent,
        }
    }

    fn range(from_s: u64, to_s: u64) -> TimeRange {
        TimeRange::new(from_s * S, to_s * S).expect("valid")
    }

    #[test]
    fn reads_what_was_pushed_by_bucket() {
        let source = MemorySource::new(MemoryOptions::default());
        source.push_edges(vec![row(0, "a", 1), row(60, "a", 2), row(120, "b", 4)]);
        source.push_edges(vec![row(60, "b", 8)]);
        let sum = |r: TimeRange| source.edges(r).expect("memory").iter().map(|r| r.connections).sum::<u64>();
        assert_eq!(sum(range(0, 180)), 15);
        assert_eq!(sum(range(60, 120)), 10);
        assert_eq!(sum(range(61, 120)), 0, "a bucket belongs to the range its start is in");
        assert_eq!(source.extent().expect("memory"), Some(range(0, 180)));
        assert_eq!(source.health().edge_rows, 4);
    }

    #[test]
    fn many_small_pushes_are_concatenated_exactly() {
        let source = MemorySource::new(MemoryOptions::default());
        for i in 0..(3 * CHUNKS_PER_BUCKET as u64) {
            source.push_edges(vec![row(0, "a", i)]);
        }
        let rows = source.edges(range(0, 60)).expect("memory");
        assert!(rows.chunks.len() <= CHUNKS_PER_BUCKET, "{} chunks", rows.chunks.len());
        let n = 3 * CHUNKS_PER_BUCKET as u64;
        assert_eq!(rows.iter().map(|r| r.connections).sum::<u64>(), n * (n - 1) / 2);
    }

    #[test]
    fn names_are_shared_and_forgotten_with_their_rows() {
        let source = MemorySource::new(MemoryOptions::new(Duration::from_secs(120)).expect("positive"));
        source.push_edges(vec![row(0, "a", 1)]);
        source.push_edges(vec![row(60, "a", 1), row(60, "b", 1)]);
        let rows: Vec<EdgeRow> = source.edges(range(0, 120)).expect("memory").iter().cloned().collect();
        let a: Vec<&Arc<str>> = rows.iter().filter(|r| &*r.client == "a").map(|r| &r.client).collect();
        assert_eq!(a.len(), 2);
        assert!(Arc::ptr_eq(a[0], a[1]), "one allocation per name");
        assert!(Arc::ptr_eq(&rows[0].server, &rows[2].server));
        drop(rows);
        source.push_edges(vec![row(240, "c", 1)]); // everything before 180 s expires
        let names = source.state.read().expect("not poisoned").names.len();
        assert_eq!(names, 3, "c, db and tcp are left");
    }

    #[test]
    fn old_rows_expire_and_are_counted() {
        let source = MemorySource::new(MemoryOptions::new(Duration::from_secs(120)).expect("positive"));
        source.push_edges(vec![row(0, "a", 1), row(60, "a", 1)]);
        source.push_events(vec![EventRow {
            at_ns: 10 * S,
            kind: EventKind::NewDependency,
            client: "a".into(),
            server: "db".into(),
            server_port: 5432,
            detail: "".into(),
        }]);
        assert_eq!(source.health().expired_rows, 0);
        source.push_edges(vec![row(180, "a", 1)]); // newest end 240 s: keep buckets from 120 s
        let h = source.health();
        assert_eq!((h.edge_rows, h.event_rows, h.expired_rows), (1, 0, 3));
        assert_eq!(source.edges(range(0, 240)).expect("memory").iter().count(), 1);
        assert!(MemoryOptions::new(Duration::ZERO).is_err());
    }
}
