//! The rows the map is drawn from, as the job emits them and the lake stores them: edge *deltas*
//! and events. This is the contract with the job (which hands rows to a
//! [`MemorySource`](crate::MemorySource)) and with the lake writer (whose Parquet tables
//! [`LakeSource`](crate::LakeSource) reads).
//!
//! An edge is (time bucket, client, server, server port, protocol). Several rows of one edge may
//! exist (deltas emitted at several dataflow times as late records arrive): every measure is the
//! sum over them. Names are workload names (hierarchical, `/`-separated), `external:<prefix>` for
//! addresses outside the fleet (grouped by prefix), or `unattributed:<reason>` when the job would
//! not name an owner; [`Endpoint`] tells them apart. Names are `Arc<str>` so that the many rows of
//! one workload share one allocation.
//!
//! The job's rows are `flowmap_schema::edges::{Edge, Event}`; `From` turns them into these, so
//! the job hands them over with `source.push_edges(edges.iter().map(Into::into).collect())`.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::Serialize;

use flowmap_schema::edges as job;
use flowmap_schema::sketch::{RttSketch, SketchError};

/// One delta of one dependency edge during one time bucket.
#[derive(Clone, Debug, PartialEq)]
pub struct EdgeRow {
    /// Start of the time bucket, ns since the Unix epoch. A row belongs to a time range when its
    /// bucket starts inside it.
    pub bucket_start_ns: u64,
    /// The bucket's length, seconds.
    pub bucket_s: u32,
    /// The calling end: a workload name, `external:<prefix>` or `unattributed:<reason>`.
    pub client: Arc<str>,
    /// The called end, named like `client`.
    pub server: Arc<str>,
    /// The server's port.
    pub server_port: u16,
    /// The protocol (`tcp`).
    pub protocol: Arc<str>,
    /// The dataflow time of this delta, ns since the Unix epoch.
    pub emitted_at_ns: u64,
    /// Connections counted (established or not).
    pub connections: u64,
    /// Payload bytes from client to server.
    pub bytes_client_to_server: u64,
    /// Payload bytes from server to client.
    pub bytes_server_to_client: u64,
    /// Segments, both ways.
    pub segments: u64,
    /// Retransmitted segments.
    pub retransmits: u64,
    /// Connections that never established.
    pub failed_connects: u64,
    /// Connections whose two ends' records agree (verified by both ends).
    pub verified: u64,
    /// Connections whose two ends' records disagree.
    pub disagreements: u64,
    /// Connections seen from one end only.
    pub one_sided: u64,
    /// Median RTT of this row's connections, microseconds (`None`: no RTT sample).
    pub rtt_p50_us: Option<f64>,
    /// 90th percentile RTT, microseconds.
    pub rtt_p90_us: Option<f64>,
    /// 99th percentile RTT, microseconds.
    pub rtt_p99_us: Option<f64>,
    /// The RTT samples as a mergeable sketch (microseconds), from which quantiles over several
    /// rows are computed; in the lake and on the wire, [`RttSketch::to_bytes`].
    pub rtt_sketch: RowSketch,
}

/// A row's RTT sketch: none, a sketch, or bytes that are not one (the row is kept, its RTT taken
/// from its quantile columns, and the sources count it under [`BAD_SKETCH`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub enum RowSketch {
    /// No sketch (no RTT sample, or none written).
    #[default]
    Absent,
    /// A sketch with at least one sample.
    Present(Arc<RttSketch>),
    /// Bytes [`RttSketch::from_bytes`] refused.
    Unreadable(SketchError),
}

/// The reason rows with an unreadable sketch are counted under in
/// [`Health::bad_rows`](crate::Health::bad_rows).
pub const BAD_SKETCH: &str = "unreadable rtt_sketch (row kept, RTT from its quantile columns)";

impl RowSketch {
    /// Reads [`RttSketch::to_bytes`]; no bytes, or a sketch without samples, is [`RowSketch::Absent`].
    pub fn from_bytes(bytes: &[u8]) -> Self {
        match RttSketch::from_bytes(bytes) {
            Ok(s) if s.is_empty() => RowSketch::Absent,
            Ok(s) => RowSketch::Present(Arc::new(s)),
            Err(e) => RowSketch::Unreadable(e),
        }
    }

    /// The sketch, if the row has a readable one.
    pub fn get(&self) -> Option<&RttSketch> {
        match self {
            RowSketch::Present(s) => Some(s),
            _ => None,
        }
    }

    /// Whether the row's bytes were not a sketch.
    pub fn is_unreadable(&self) -> bool {
        matches!(self, RowSketch::Unreadable(_))
    }
}

impl From<RttSketch> for RowSketch {
    fn from(s: RttSketch) -> Self {
        if s.is_empty() {
            RowSketch::Absent
        } else {
            RowSketch::Present(Arc::new(s))
        }
    }
}

/// A server port of 0, or one the job wrote that does not fit in 16 bits (the wire's field is
/// 32 bits wide; TCP ports never are; such rows get port 0): the in-memory source counts the rows
/// under this reason and keeps them.
pub const BAD_PORT: &str = "server_port 0 or above 65535 (row kept as port 0)";

/// The reason events of [`EventKind::Unspecified`] are counted under (they are kept and shown).
pub const UNSPECIFIED_EVENT: &str = "event of unspecified or unknown kind (kept as `unspecified`)";

/// The job's quantiles are 0 when there was no sample.
fn quantile(v: f64) -> Option<f64> {
    (v.is_finite() && v > 0.0).then_some(v)
}

impl From<&job::Edge> for EdgeRow {
    /// The job's edge delta as a row: quantiles of 0 (the job's "no sample") become `None`, an
    /// empty sketch is absent, and bytes that are not a sketch are kept as
    /// [`RowSketch::Unreadable`] (counted by the source).
    fn from(e: &job::Edge) -> Self {
        EdgeRow {
            bucket_start_ns: e.bucket_start_ns,
            bucket_s: e.bucket_s,
            client: e.client.as_str().into(),
            server: e.server.as_str().into(),
            server_port: u16::try_from(e.server_port).unwrap_or(0),
            protocol: e.protocol.as_str().into(),
            emitted_at_ns: e.emitted_at_ns,
            connections: e.connections,
            bytes_client_to_server: e.bytes_client_to_server,
            bytes_server_to_client: e.bytes_server_to_client,
            segments: e.segments,
            retransmits: e.retransmits,
            failed_connects: e.failed_connects,
            verified: e.verified,
            disagreements: e.disagreements,
            one_sided: e.one_sided,
            rtt_p50_us: quantile(e.rtt_p50_us),
            rtt_p90_us: quantile(e.rtt_p90_us),
            rtt_p99_us: quantile(e.rtt_p99_us),
            rtt_sketch: RowSketch::from_bytes(&e.rtt_sketch),
        }
    }
}

impl From<&job::Event> for EventRow {
    /// The job's event as a row; a kind this version does not know (or `UNSPECIFIED`) is
    /// [`EventKind::Unspecified`], shown as such and counted by the source.
    fn from(e: &job::Event) -> Self {
        let kind = match job::EventKind::try_from(e.kind) {
            Ok(job::EventKind::NewDependency) => EventKind::NewDependency,
            Ok(job::EventKind::PolicyViolation) => EventKind::PolicyViolation,
            Ok(job::EventKind::Disagreement) => EventKind::Disagreement,
            Ok(job::EventKind::Unspecified) | Err(_) => EventKind::Unspecified,
        };
        EventRow {
            at_ns: e.at_ns,
            kind,
            client: e.client.as_str().into(),
            server: e.server.as_str().into(),
            server_port: u16::try_from(e.server_port).unwrap_or(0),
            detail: e.detail.as_str().into(),
        }
    }
}

impl EdgeRow {
    /// Payload bytes both ways.
    pub fn bytes(&self) -> u64 {
        self.bytes_client_to_server.saturating_add(self.bytes_server_to_client)
    }
}

/// What an event reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A (client, server, port) seen for the first time.
    NewDependency,
    /// A connection a policy does not allow.
    PolicyViolation,
    /// The two ends of a connection disagree on who was on the other end.
    Disagreement,
    /// A kind the job wrote that this version does not know (counted by the source).
    Unspecified,
}

impl EventKind {
    /// Every kind a job writes, in display order.
    pub const ALL: [EventKind; 3] = [EventKind::NewDependency, EventKind::PolicyViolation, EventKind::Disagreement];

    /// The kind's name in the lake and the API (`new_dependency`, ...).
    pub const fn as_str(self) -> &'static str {
        match self {
            EventKind::NewDependency => "new_dependency",
            EventKind::PolicyViolation => "policy_violation",
            EventKind::Disagreement => "disagreement",
            EventKind::Unspecified => "unspecified",
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is not an [`EventKind`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown event kind {0:?} (expected new_dependency, policy_violation or disagreement)")]
pub struct UnknownEventKind(pub String);

impl FromStr for EventKind {
    type Err = UnknownEventKind;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EventKind::ALL.into_iter().find(|k| k.as_str() == s).ok_or_else(|| UnknownEventKind(s.to_owned()))
    }
}

/// One event: a new dependency, a policy violation or a verification disagreement.
#[derive(Clone, Debug, PartialEq)]
pub struct EventRow {
    /// When it happened, ns since the Unix epoch.
    pub at_ns: u64,
    /// What happened.
    pub kind: EventKind,
    /// The calling end, named like [`EdgeRow::client`].
    pub client: Arc<str>,
    /// The called end.
    pub server: Arc<str>,
    /// The server's port.
    pub server_port: u16,
    /// Free text from the job (the policy, the two ends' claims, ...).
    pub detail: Arc<str>,
}

/// What an edge's end is, read from its name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint<'a> {
    /// A workload of the fleet: its hierarchical name.
    Workload(&'a str),
    /// An address outside the fleet, grouped by prefix (`external:<prefix>`).
    External(&'a str),
    /// An end flowmap would not name, with the reason (`unattributed:<reason>`).
    Unattributed(&'a str),
}

impl<'a> Endpoint<'a> {
    /// The prefix that marks external ends.
    pub const EXTERNAL: &'static str = "external:";
    /// The prefix that marks unattributed ends.
    pub const UNATTRIBUTED: &'static str = "unattributed:";

    /// Reads a name.
    pub fn parse(name: &'a str) -> Self {
        if let Some(prefix) = name.strip_prefix(Self::EXTERNAL) {
            Endpoint::External(prefix)
        } else if let Some(reason) = name.strip_prefix(Self::UNATTRIBUTED) {
            Endpoint::Unattributed(reason)
        } else {
            Endpoint::Workload(name)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_read_from_names() {
        assert_eq!(Endpoint::parse("svc-03/pod-00123"), Endpoint::Workload("svc-03/pod-00123"));
        assert_eq!(Endpoint::parse("external:203.0.113.0/24"), Endpoint::External("203.0.113.0/24"));
        assert_eq!(Endpoint::parse("unattributed:near_boundary"), Endpoint::Unattributed("near_boundary"));
        assert_eq!(Endpoint::parse("externally/x"), Endpoint::Workload("externally/x"));
    }

    #[test]
    fn job_rows_convert() {
        let mut sketch = RttSketch::default();
        sketch.add(250.0, 3);
        let edge = job::Edge {
            schema_version: 1,
            bucket_start_ns: 60_000_000_000,
            bucket_s: 60,
            client: "web/a".into(),
            server: "db/main".into(),
            server_port: 5432,
            protocol: "tcp".into(),
            emitted_at_ns: 120_000_000_000,
            connections: 3,
            bytes_client_to_server: 10,
            bytes_server_to_client: 20,
            verified: 2,
            one_sided: 1,
            rtt_p50_us: 250.0,
            rtt_p90_us: 0.0,
            rtt_sketch: sketch.to_bytes(),
            ..job::Edge::default()
        };
        let row = EdgeRow::from(&edge);
        assert_eq!((row.client.as_ref(), row.server.as_ref(), row.server_port), ("web/a", "db/main", 5432));
        assert_eq!((row.connections, row.bytes(), row.verified, row.one_sided), (3, 30, 2, 1));
        assert_eq!((row.rtt_p50_us, row.rtt_p90_us, row.rtt_p99_us), (Some(250.0), None, None), "0 is the job's none");
        assert_eq!(row.rtt_sketch.get(), Some(&sketch));
        let empty = EdgeRow::from(&job::Edge { rtt_sketch: Vec::new(), ..edge.clone() });
        assert_eq!(empty.rtt_sketch, RowSketch::Absent);
        let bad = EdgeRow::from(&job::Edge { rtt_sketch: vec![1], server_port: 70_000, ..edge });
        assert!(bad.rtt_sketch.is_unreadable());
        assert_eq!(bad.server_port, 0, "a port that does not fit is 0 (and counted by the source)");

        let event = job::Event {
            kind: job::EventKind::PolicyViolation as i32,
            at_ns: 5,
            client: "web/a".into(),
            server: "db/main".into(),
            server_port: 5432,
            detail: "not allowed".into(),
            ..job::Event::default()
        };
        let row = EventRow::from(&event);
        assert_eq!((row.kind, row.at_ns, row.detail.as_ref()), (EventKind::PolicyViolation, 5, "not allowed"));
        assert_eq!(EventRow::from(&job::Event { kind: 99, ..event.clone() }).kind, EventKind::Unspecified);
        assert_eq!(EventRow::from(&job::Event { kind: 0, ..event }).kind, EventKind::Unspecified);
    }

    #[test]
    fn event_kinds_round_trip() {
        for kind in EventKind::ALL {
            assert_eq!(kind.as_str().parse::<EventKind>(), Ok(kind));
        }
        assert_eq!("new".parse::<EventKind>(), Err(UnknownEventKind("new".into())));
    }
}
