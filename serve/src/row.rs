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

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::Serialize;

use crate::sketch::RttSketch;

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
    /// rows are computed; in the lake, serialized with [`RttSketch::encode`].
    pub rtt_sketch: Option<Arc<RttSketch>>,
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
}

impl EventKind {
    /// Every kind, in display order.
    pub const ALL: [EventKind; 3] = [EventKind::NewDependency, EventKind::PolicyViolation, EventKind::Disagreement];

    /// The kind's name in the lake and the API (`new_dependency`, ...).
    pub const fn as_str(self) -> &'static str {
        match self {
            EventKind::NewDependency => "new_dependency",
            EventKind::PolicyViolation => "policy_violation",
            EventKind::Disagreement => "disagreement",
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
    fn event_kinds_round_trip() {
        for kind in EventKind::ALL {
            assert_eq!(kind.as_str().parse::<EventKind>(), Ok(kind));
        }
        assert_eq!("new".parse::<EventKind>(), Err(UnknownEventKind("new".into())));
    }
}
