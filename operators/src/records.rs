//! The containers that cross the exchange between workers: evidence, flows and verdicts, each
//! for one target worker and one dataflow time.
//!
//! Why these shapes: every flow and every heartbeat passes through here, so a record is a few
//! plain words (addresses as 128-bit integers, times, small offsets), and names travel as
//! offsets into one string per container ([`Names`]) instead of a reference-counted string per
//! record. A flow's full report (counters, local workload, ...) is not taken apart at all: the
//! source copies the flow's encoded Protobuf message into the container's `bytes`, and the
//! output stage rebuilds the output record from it (see `flowmap_schema::view::parse_flow`). All
//! of it is plain data, so between processes timely serializes it as it is.

use serde::{Deserialize, Serialize};

use crate::types::{EvidenceKind, Ip, Reason, Time};

/// Names carried by one container: their bytes concatenated, each referenced by a [`NameRef`].
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Names {
    text: String,
}

/// A name in a [`Names`] table: offset and length in bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NameRef {
    off: u32,
    len: u32,
}

impl Names {
    /// Appends a name and returns its reference.
    ///
    /// A table holds at most 4 GiB of names; the source sizes containers far below that (one
    /// container holds one batch's share for one worker).
    pub fn push(&mut self, name: &str) -> NameRef {
        let off = self.text.len() as u32;
        self.text.push_str(name);
        NameRef { off, len: name.len() as u32 }
    }

    /// The name behind a reference made by this table ("" for a reference it did not make).
    pub fn get(&self, r: NameRef) -> &str {
        self.text.get(r.off as usize..(r.off as usize).saturating_add(r.len as usize)).unwrap_or("")
    }

    /// Bytes held.
    pub fn len(&self) -> usize {
        self.text.len()
    }

    /// Whether no name is held.
    pub fn is_empty(&self) -> bool {
        self.text.is_empty()
    }
}

/// Identifies a *run* of an assignment source: a stretch of its batches with no gap in the
/// sequence, abutting windows and one incarnation. The source of the job numbers runs per lane
/// (`lane << 32 | n`), which is unique in the job and depends only on the lane's message order.
pub type RunId = u64;

/// An exporter claim: "`ip` (or only its `port`, when non-zero) was `name` during
/// `[from, to)`", a heartbeat or a flow's local end.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ClaimIn {
    /// The address.
    pub ip: Ip,
    /// 0: the whole address; otherwise only this port.
    pub port: u16,
    /// [`EvidenceKind::Heartbeat`] or [`EvidenceKind::Flow`].
    pub kind: EvidenceKind,
    /// Start.
    pub from: Time,
    /// End (exclusive).
    pub to: Time,
    /// The owner.
    pub name: NameRef,
}

/// One end's own record of a connection: "`name` had `local:local_port` connected to
/// `peer:peer_port` from `start` (to `end` so far)". Stored under `local`; read when the other
/// end's record of the same connection is looked up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ConnIn {
    /// The reporting end's address.
    pub local: Ip,
    /// The reporting end's port.
    pub local_port: u16,
    /// The other end's address.
    pub peer: Ip,
    /// The other end's port.
    pub peer_port: u16,
    /// Established at (or first seen, when `start_unobserved`).
    pub start: Time,
    /// Closed at, or the window end for a connection still open.
    pub end: Time,
    /// The exporter did not see the connection established.
    pub start_unobserved: bool,
    /// Which side the reporting end was ([`direction`]).
    pub direction: u8,
    /// When the reporting end's own record of the connection is looked up (its dataflow time):
    /// the other end uses it to tell whether that lookup saw its own record (see
    /// [`crate::index`], counting a connection once).
    pub lookup: Time,
    /// The reporting end's workload ("" when its exporter did not know it: the record still
    /// tells the other end that both ends reported the connection).
    pub name: NameRef,
    /// The record's flow id when its exporter stated a connection id (then the same in every
    /// record of the connection, across exporter restarts; another exporter's or another
    /// host's record of the same 4-tuple and start has another), or 0 when it stated none. A
    /// flow's own records of its connection are the ones with its id.
    pub connection: u64,
}

/// Which side of a connection an end was, as a byte.
pub mod direction {
    /// Not known.
    pub const UNKNOWN: u8 = 0;
    /// The end connected out.
    pub const CLIENT: u8 = 1;
    /// The end accepted.
    pub const SERVER: u8 = 2;
}

/// An assignment event: from `at` on, `ip` belongs to `name` (released when `None`), as far as
/// its source's run `run` vouches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AssignIn {
    /// The address.
    pub ip: Ip,
    /// When.
    pub at: Time,
    /// The new owner; `None` releases the address.
    pub name: Option<NameRef>,
    /// The run of the source batch it came in.
    pub run: RunId,
}

/// An assignment source's promise: its run `run` covers `[from, to)` (so far). Sent to every
/// worker, since any of them may hold an assignment of that run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Promise {
    /// The run.
    pub run: RunId,
    /// The source (exporter id of the address manager).
    pub source: NameRef,
    /// Start of the run's first window.
    pub from: Time,
    /// End of its latest window.
    pub to: Time,
}

/// The evidence of one dataflow time for one worker.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct EvidencePiece {
    /// The worker it is for (the exchange routes by it).
    pub worker: u32,
    /// The names its records refer to.
    pub names: Names,
    /// Exporter claims.
    pub claims: Vec<ClaimIn>,
    /// Connection records, stored under their `local` address (for the other end's lookups).
    pub conns: Vec<ConnIn>,
    /// The same records of fleet flows, stored under their `peer` address: at the worker that
    /// looks up their remote end, they show each connection as all its records applied so far
    /// do (latest end, any unobserved start), whichever record is looked up first.
    pub mirrors: Vec<ConnIn>,
    /// Assignment events.
    pub assignments: Vec<AssignIn>,
    /// Assignment sources' promises (applied before the events of the same piece).
    pub promises: Vec<Promise>,
}

impl EvidencePiece {
    /// An empty piece for `worker`.
    pub fn new(worker: usize) -> Self {
        EvidencePiece { worker: worker as u32, ..Default::default() }
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.claims.is_empty()
            && self.conns.is_empty()
            && self.mirrors.is_empty()
            && self.assignments.is_empty()
            && self.promises.is_empty()
    }
}

/// Flags of a [`FlowRow`].
pub mod flags {
    /// A slice of a connection still open at its window's end.
    pub const OPEN: u8 = 1;
    /// The exporter did not see the connection established.
    pub const START_UNOBSERVED: u8 = 2;
    /// Re-read after a job restart only to rebuild state: looked up (so later records of the
    /// same connection keep its verdict) but not output again.
    pub const REBUILD: u8 = 4;
    /// The connection started before this record's window: other records of it may exist (an
    /// earlier slice, or, when batches arrive out of order, a later one).
    pub const CONTINUED: u8 = 8;
}

/// What the lookup needs of one flow record, plus where its full report is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct FlowRow {
    /// The address to attribute.
    pub remote: Ip,
    /// The flow's start (exporter clock; first seen, when the start was not observed).
    pub start: Time,
    /// The dataflow time of the batch the record came in (when its own connection record
    /// entered the other end's worker).
    pub batch_at: Time,
    /// The flow id (the same for every record of one connection).
    pub id: u64,
    /// Offset of the flow's encoded message in the container's `bytes`.
    pub msg_off: u32,
    /// Its length.
    pub msg_len: u32,
    /// The remote port.
    pub remote_port: u16,
    /// Index of the reporting exporter in the container's `exporters`.
    pub exporter: u16,
    /// [`flags`].
    pub flags: u8,
    /// Which side the reporting end was ([`direction`]).
    pub direction: u8,
}

impl FlowRow {
    /// A slice of an open connection.
    pub fn open(&self) -> bool {
        self.flags & flags::OPEN != 0
    }

    /// The exporter did not see the connection established.
    pub fn start_unobserved(&self) -> bool {
        self.flags & flags::START_UNOBSERVED != 0
    }

    /// Re-read only to rebuild state.
    pub fn rebuild(&self) -> bool {
        self.flags & flags::REBUILD != 0
    }

    /// One of several records of its connection (an open slice, or a record of a connection
    /// that started before its window).
    pub fn one_of_several(&self) -> bool {
        self.flags & (flags::OPEN | flags::CONTINUED) != 0
    }
}

/// An exporter run that reported flows of a [`FlowPiece`].
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Reporter {
    /// The exporter id.
    pub exporter: String,
    /// Its incarnation (0: not stated).
    pub incarnation: u64,
}

/// Flow records for one worker and one lookup time, from any number of batches.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct FlowPiece {
    /// The worker it is for (the exchange routes by it).
    pub worker: u32,
    /// The exporter runs that reported the rows (a row names one by index).
    pub exporters: Vec<Reporter>,
    /// The flows' encoded `flowmap.v1.Flow` messages, concatenated.
    pub bytes: Vec<u8>,
    /// The rows.
    pub rows: Vec<FlowRow>,
}

impl FlowPiece {
    /// The exporter run that reported `row`.
    pub fn reporter(&self, row: &FlowRow) -> Option<&Reporter> {
        self.exporters.get(usize::from(row.exporter))
    }

    /// The encoded message of `row`.
    pub fn message(&self, row: &FlowRow) -> &[u8] {
        let from = row.msg_off as usize;
        self.bytes.get(from..from.saturating_add(row.msg_len as usize)).unwrap_or(&[])
    }
}

/// The verdict on one flow's remote end.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Verdict {
    /// Attributed to the workload named in the container's [`Names`], on this evidence.
    Attributed {
        /// The owner.
        name: NameRef,
        /// What it rests on.
        evidence: EvidenceKind,
    },
    /// Unattributed, for this reason.
    Unattributed(Reason),
}

/// What the other end's own record of a connection says about a verdict (two-sided
/// verification), per record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Verification {
    /// The other end's record was not seen (one end only, or the other end outside the fleet
    /// or without an exporter).
    OneSided,
    /// The other end's workload and the claims about its address name the same workload.
    Agree,
    /// They name different workloads (or two records of the other end do): a wrong claim
    /// somewhere; reported as an event.
    Disagree,
    /// The other end's record names a workload (or none) and the claims name nobody.
    PeerOnly,
}

impl Verification {
    /// snake_case name, as used in output and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Verification::OneSided => "one_sided",
            Verification::Agree => "agree",
            Verification::Disagree => "disagree",
            Verification::PeerOnly => "peer_only",
        }
    }
}

/// The lookup's notes on one record besides its verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Check {
    /// Two-sided verification (decided at the connection's first record, repeated after).
    pub verification: Verification,
    /// The connection's first record looked up (the others repeat its verdict).
    pub first: bool,
    /// This end's records carry the connection in aggregates (edges): of the two ends' records
    /// of one connection, exactly one end's (see [`crate::index`]).
    pub counts: bool,
}

impl Default for Check {
    fn default() -> Self {
        Check { verification: Verification::OneSided, first: true, counts: true }
    }
}

/// A disagreement between the two ends of a connection: what the other end's record says and
/// what the claims about its address say.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Disagreement {
    /// The row of the piece.
    pub row: u32,
    /// The other end's workload(s) (the first one, for two differing records).
    pub peer: NameRef,
    /// The workload the claims name (empty when two peer records differ).
    pub claims: NameRef,
    /// What the claims rest on.
    pub evidence: EvidenceKind,
}

/// Flow records with their verdicts, in the same order.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct VerdictPiece {
    /// The flows (rebuild pieces never reach the output).
    pub flows: FlowPiece,
    /// One verdict per row of `flows`.
    pub verdicts: Vec<Verdict>,
    /// One check per row (empty for flows decided without a lookup: one-sided, first, counts).
    pub checks: Vec<Check>,
    /// Disagreements found, for events.
    pub disagreements: Vec<Disagreement>,
    /// The workloads the verdicts and disagreements name.
    pub names: Names,
}

impl VerdictPiece {
    /// The remote workload a verdict names, if attributed.
    pub fn workload(&self, v: &Verdict) -> Option<&str> {
        match v {
            Verdict::Attributed { name, .. } => Some(self.names.get(*name)),
            Verdict::Unattributed(_) => None,
        }
    }

    /// Rows and verdicts together.
    pub fn iter(&self) -> impl Iterator<Item = (&FlowRow, &Verdict)> {
        self.flows.rows.iter().zip(&self.verdicts)
    }

    /// The check of row `i`. A row decided without a lookup (an external address) has no
    /// stored check: it is one-sided and counts, and it is its connection's first record unless
    /// the connection started before the record's window (a later slice, or the final record of
    /// a connection reported before; found by the new edge test: every slice of an external
    /// connection counted it again).
    pub fn check(&self, i: usize) -> Check {
        self.checks.get(i).copied().unwrap_or_else(|| {
            let continued = self.flows.rows.get(i).is_some_and(|r| r.flags & flags::CONTINUED != 0);
            Check { first: !continued, ..Check::default() }
        })
    }
}

/// One address to attribute over a whole interval: one end of a cloud flow log row (which
/// aggregates the packets of up to ten minutes; see [`crate::rule::decide_over`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct IntervalQuery {
    /// The row's id (`flowmap.v1.VpcFlowRecord.record_id`).
    pub record: u64,
    /// Which end of the row: [`IntervalQuery::SOURCE`] or [`IntervalQuery::DESTINATION`].
    pub end: u8,
    /// The address.
    pub ip: Ip,
    /// The port on that end (0 when the row has none: a port-scoped claim then never matches).
    pub port: u16,
    /// The interval's start, ns since the epoch (inclusive).
    pub from: Time,
    /// The interval's end, ns since the epoch (inclusive).
    pub to: Time,
}

impl IntervalQuery {
    /// The row's source end.
    pub const SOURCE: u8 = 0;
    /// The row's destination end.
    pub const DESTINATION: u8 = 1;
}

/// Interval queries for one worker (the one owning their addresses) and one lookup time.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct IntervalPiece {
    /// The worker it is for (the exchange routes by it).
    pub worker: u32,
    /// The queries.
    pub queries: Vec<IntervalQuery>,
}

/// The verdict on one address over an interval.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum IntervalVerdict {
    /// One workload (named in the container's [`Names`]) held the address over the whole
    /// interval, guard band included, on this evidence.
    Attributed {
        /// The owner.
        name: NameRef,
        /// What it rests on.
        evidence: EvidenceKind,
    },
    /// Unattributed, for this reason.
    Unattributed(Reason),
    /// An owner held the interval's start, but not all of it (the owner changed, or its
    /// evidence stops, inside it).
    NotCovered,
}

/// Interval queries with their verdicts, in the same order.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct IntervalAnswers {
    /// The queries.
    pub queries: Vec<IntervalQuery>,
    /// One verdict per query.
    pub verdicts: Vec<IntervalVerdict>,
    /// The workloads the verdicts name.
    pub names: Names,
}

impl IntervalAnswers {
    /// The workload a verdict names, if attributed.
    pub fn workload(&self, v: &IntervalVerdict) -> Option<&str> {
        match v {
            IntervalVerdict::Attributed { name, .. } => Some(self.names.get(*name)),
            _ => None,
        }
    }
}
