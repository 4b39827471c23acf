//! The `flows` table: one row per output record of the job (a slice of an open connection, or
//! its final record), both ends attributed or a reason why the remote one is not.
//!
//! Key: (`flow_id`, `end_ns`, `open`), as in `attributed.proto`. Partition: the flow's start
//! (`start_ns`). Enumerations are stored as lowercase names (`direction`: `client`, `server`,
//! `unknown`; `verification`: `agree`, `disagree`, `peer_only`, `one_sided`; ...), addresses
//! in their text form (IPv4 dotted, IPv6 as RFC 5952; an IPv4-mapped IPv6 address stays IPv6).

use std::net::IpAddr;
use std::sync::{Arc, OnceLock};

use arrow_array::RecordBatch;
use arrow_schema::{ArrowError, DataType, Schema, SchemaRef};
use flowmap_schema::{AttributedFlow, Direction, Evidence, Reason, Scope, WorkloadSource};

use crate::error::BadRow;
use crate::row::{build, check_ns, field, name_of, parse_name, timestamp_type, ColumnError, Columns, LakeRow};

/// How the two ends' records of a connection compare (the job's two-sided verification).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Verification {
    /// Both ends reported the connection and their attributions agree.
    Agree,
    /// Both ends reported it and their attributions disagree.
    Disagree,
    /// Only the remote end's record exists (this row stands for it).
    PeerOnly,
    /// Only this end reported it.
    OneSided,
}

const VERIFICATION: &[(Verification, &str)] = &[
    (Verification::Agree, "agree"),
    (Verification::Disagree, "disagree"),
    (Verification::PeerOnly, "peer_only"),
    (Verification::OneSided, "one_sided"),
];
const DIRECTION: &[(Direction, &str)] =
    &[(Direction::Client, "client"), (Direction::Server, "server"), (Direction::Unspecified, "unknown")];
const SCOPE: &[(Scope, &str)] = &[(Scope::Ip, "ip"), (Scope::Port, "port"), (Scope::Unspecified, "unspecified")];
const SOURCE: &[(WorkloadSource, &str)] = &[
    (WorkloadSource::HostIdentity, "host_identity"),
    (WorkloadSource::IpAssignment, "ip_assignment"),
    (WorkloadSource::PortAssignment, "port_assignment"),
    (WorkloadSource::CgroupRule, "cgroup_rule"),
    (WorkloadSource::Unspecified, "unspecified"),
];
const EVIDENCE: &[(Evidence, &str)] = &[
    (Evidence::Heartbeat, "heartbeat"),
    (Evidence::Flow, "flow"),
    (Evidence::Assignment, "assignment"),
    (Evidence::Peer, "peer"),
    (Evidence::Unspecified, "unspecified"),
];
const REASON: &[(Reason, &str)] = &[
    (Reason::NoOwner, "no_owner"),
    (Reason::Conflict, "conflict"),
    (Reason::NearBoundary, "near_boundary"),
    (Reason::External, "external"),
    (Reason::EvidenceExpired, "evidence_expired"),
    (Reason::SharedIp, "shared_ip"),
    (Reason::SourceGap, "source_gap"),
    (Reason::Unspecified, "unspecified"),
];

impl Verification {
    /// The stored name (`agree`, `disagree`, `peer_only`, `one_sided`).
    pub fn name(self) -> &'static str {
        name_of(VERIFICATION, self)
    }
}

/// The stored name of a direction (`client`, `server`, `unknown`).
pub fn direction_name(d: Direction) -> &'static str {
    name_of(DIRECTION, d)
}

/// The stored name of a reason (`no_owner`, `conflict`, ..., as in `attributed.proto` without
/// the `REASON_` prefix, lowercase).
pub fn reason_name(r: Reason) -> &'static str {
    name_of(REASON, r)
}

/// The stored name of a scope (`ip`, `port`, `unspecified`).
pub fn scope_name(s: Scope) -> &'static str {
    name_of(SCOPE, s)
}

/// The stored name of a workload source (`host_identity`, `ip_assignment`, `port_assignment`,
/// `cgroup_rule`, `unspecified`).
pub fn source_name(s: WorkloadSource) -> &'static str {
    name_of(SOURCE, s)
}

/// The stored name of an evidence (`heartbeat`, `flow`, `assignment`, `peer`).
pub fn evidence_name(e: Evidence) -> &'static str {
    name_of(EVIDENCE, e)
}

/// One row of `flows`; the columns, in order, are its fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowRow {
    /// Stable id of the connection (`attributed.proto`).
    pub flow_id: u64,
    /// The exporter that reported the flow.
    pub exporter: String,
    /// The exporter's incarnation.
    pub incarnation: u64,
    /// The local address.
    pub local_ip: IpAddr,
    /// The local port.
    pub local_port: u16,
    /// The remote address.
    pub remote_ip: IpAddr,
    /// The remote port.
    pub remote_port: u16,
    /// Which side opened the connection (`Unspecified` is stored as `unknown`).
    pub direction: Direction,
    /// Established at, ns since the Unix epoch (the partitioning time).
    pub start_ns: u64,
    /// The end of this record (closed at, or the end of the slice), ns since the Unix epoch.
    pub end_ns: u64,
    /// A slice of a connection still open (counters so far), not its final record.
    pub open: bool,
    /// The exporter did not see the connection established.
    pub start_unobserved: bool,
    /// The socket error of a connection that never established (0: it did).
    pub connect_error: u32,
    /// Payload bytes sent by the local end.
    pub bytes_sent: u64,
    /// Payload bytes received by the local end.
    pub bytes_received: u64,
    /// Segments sent.
    pub segments_sent: u64,
    /// Segments received.
    pub segments_received: u64,
    /// Retransmitted segments.
    pub retransmits: u32,
    /// Smoothed round-trip time, microseconds.
    pub srtt_us: u32,
    /// The local workload (`None`: unknown).
    pub local_workload: Option<String>,
    /// What the local workload vouches for.
    pub local_scope: Scope,
    /// How the exporter knew the local workload.
    pub local_source: WorkloadSource,
    /// The remote workload (`None` exactly when unattributed).
    pub remote_workload: Option<String>,
    /// What the remote attribution rests on (`None` when unattributed).
    pub evidence: Option<Evidence>,
    /// Why the remote end is unattributed (`None` when attributed).
    pub reason: Option<Reason>,
    /// This record counts its connection in the edges.
    pub counted: bool,
    /// How the two ends' records compare.
    pub verification: Verification,
}

/// An output record that is not a valid row.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FromWireError {
    /// An address that is not 4 or 16 bytes.
    #[error("{end} address of {len} bytes")]
    Address {
        /// `local` or `remote`.
        end: &'static str,
        /// Its length.
        len: usize,
    },
    /// A port above 65535.
    #[error("{end} port {port}")]
    Port {
        /// `local` or `remote`.
        end: &'static str,
        /// The value.
        port: u32,
    },
    /// An enumeration value this version does not know.
    #[error("unknown {field} value {value}")]
    Enum {
        /// The field.
        field: &'static str,
        /// The value.
        value: i32,
    },
}

impl FlowRow {
    /// The row of one output record, with the job's two-sided results (`counted`,
    /// `verification`) beside it. Empty workload names become `None`; `EVIDENCE_UNSPECIFIED` and
    /// `REASON_UNSPECIFIED` become `None`.
    ///
    /// # Errors
    /// [`FromWireError`]: an address of another length, a port above 65535, an unknown
    /// enumeration value.
    pub fn from_attributed(
        flow: &AttributedFlow,
        counted: bool,
        verification: Verification,
    ) -> Result<FlowRow, FromWireError> {
        let ip = |end, bytes: &[u8]| {
            flowmap_schema::ip_from_bytes(bytes).ok_or(FromWireError::Address { end, len: bytes.len() })
        };
        let port = |end, port: u32| u16::try_from(port).map_err(|_| FromWireError::Port { end, port });
        fn known<T: TryFrom<i32>>(field: &'static str, value: i32) -> Result<T, FromWireError> {
            T::try_from(value).map_err(|_| FromWireError::Enum { field, value })
        }
        let name = |s: &str| (!s.is_empty()).then(|| s.to_string());
        let evidence: Evidence = known("evidence", flow.evidence)?;
        let reason: Reason = known("reason", flow.reason)?;
        Ok(FlowRow {
            flow_id: flow.flow_id,
            exporter: flow.exporter_id.clone(),
            incarnation: flow.incarnation,
            local_ip: ip("local", &flow.local_ip)?,
            local_port: port("local", flow.local_port)?,
            remote_ip: ip("remote", &flow.remote_ip)?,
            remote_port: port("remote", flow.remote_port)?,
            direction: known("direction", flow.direction)?,
            start_ns: flow.start_ns,
            end_ns: flow.end_ns,
            open: flow.open,
            start_unobserved: flow.start_unobserved,
            connect_error: flow.connect_error,
            bytes_sent: flow.bytes_sent,
            bytes_received: flow.bytes_received,
            segments_sent: flow.segments_sent,
            segments_received: flow.segments_received,
            retransmits: flow.retransmits,
            srtt_us: flow.srtt_us,
            local_workload: name(&flow.local_workload),
            local_scope: known("local_scope", flow.local_scope)?,
            local_source: known("local_source", flow.local_source)?,
            remote_workload: name(&flow.remote_workload),
            evidence: (evidence != Evidence::Unspecified).then_some(evidence),
            reason: (reason != Reason::Unspecified).then_some(reason),
            counted,
            verification,
        })
    }
}

impl LakeRow for FlowRow {
    const TABLE: &'static str = "flows";
    const KEY_COLUMNS: &'static [&'static str] = &["flow_id", "end_ns", "open"];
    type Key = (u64, u64, bool);

    fn schema() -> SchemaRef {
        static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
        SCHEMA
            .get_or_init(|| {
                use DataType::*;
                Arc::new(Schema::new(vec![
                    field("flow_id", UInt64, false),
                    field("exporter", Utf8, false),
                    field("incarnation", UInt64, false),
                    field("local_ip", Utf8, false),
                    field("local_port", UInt16, false),
                    field("remote_ip", Utf8, false),
                    field("remote_port", UInt16, false),
                    field("direction", Utf8, false),
                    field("start_ns", timestamp_type(), false),
                    field("end_ns", timestamp_type(), false),
                    field("open", Boolean, false),
                    field("start_unobserved", Boolean, false),
                    field("connect_error", UInt32, false),
                    field("bytes_sent", UInt64, false),
                    field("bytes_received", UInt64, false),
                    field("segments_sent", UInt64, false),
                    field("segments_received", UInt64, false),
                    field("retransmits", UInt32, false),
                    field("srtt_us", UInt32, false),
                    field("local_workload", Utf8, true),
                    field("local_scope", Utf8, false),
                    field("local_source", Utf8, false),
                    field("remote_workload", Utf8, true),
                    field("evidence", Utf8, true),
                    field("reason", Utf8, true),
                    field("counted", Boolean, false),
                    field("verification", Utf8, false),
                ]))
            })
            .clone()
    }

    fn key(&self) -> Self::Key {
        (self.flow_id, self.end_ns, self.open)
    }

    fn partition_ns(&self) -> u64 {
        self.start_ns
    }

    fn check(&self) -> Result<(), BadRow> {
        check_ns(self.start_ns)?;
        check_ns(self.end_ns)
    }

    fn to_batch(rows: &[&Self]) -> Result<RecordBatch, ArrowError> {
        RecordBatch::try_new(
            Self::schema(),
            vec![
                build::u64s(rows, |r| r.flow_id),
                build::strs(rows, |r| &r.exporter),
                build::u64s(rows, |r| r.incarnation),
                build::displayed(rows, |r| r.local_ip),
                build::u16s(rows, |r| r.local_port),
                build::displayed(rows, |r| r.remote_ip),
                build::u16s(rows, |r| r.remote_port),
                build::strs(rows, |r| direction_name(r.direction)),
                build::timestamps(rows, |r| r.start_ns),
                build::timestamps(rows, |r| r.end_ns),
                build::bools(rows, |r| r.open),
                build::bools(rows, |r| r.start_unobserved),
                build::u32s(rows, |r| r.connect_error),
                build::u64s(rows, |r| r.bytes_sent),
                build::u64s(rows, |r| r.bytes_received),
                build::u64s(rows, |r| r.segments_sent),
                build::u64s(rows, |r| r.segments_received),
                build::u32s(rows, |r| r.retransmits),
                build::u32s(rows, |r| r.srtt_us),
                build::opt_strs(rows, |r| r.local_workload.as_deref()),
                build::strs(rows, |r| scope_name(r.local_scope)),
                build::strs(rows, |r| source_name(r.local_source)),
                build::opt_strs(rows, |r| r.remote_workload.as_deref()),
                build::opt_strs(rows, |r| r.evidence.map(evidence_name)),
                build::opt_strs(rows, |r| r.reason.map(reason_name)),
                build::bools(rows, |r| r.counted),
                build::strs(rows, |r| r.verification.name()),
            ],
        )
    }

    fn keys(batch: &RecordBatch) -> Result<Vec<Self::Key>, ColumnError> {
        let c = Columns(batch);
        let (ids, ends, open) = (c.u64s("flow_id")?, c.timestamps("end_ns")?, c.bools("open")?);
        Ok(ids.into_iter().zip(ends).zip(open).map(|((i, e), o)| (i, e, o)).collect())
    }

    fn from_batch(batch: &RecordBatch) -> Result<Vec<Self>, ColumnError> {
        let c = Columns(batch);
        let ip = |column: &str| -> Result<Vec<IpAddr>, ColumnError> {
            c.strs(column)?
                .into_iter()
                .map(|s| s.parse().map_err(|_| ColumnError::new(column, format!("{s:?} is not an address"))))
                .collect()
        };
        let names = |column: &'static str| c.strs(column);
        let (flow_id, exporter, incarnation) = (c.u64s("flow_id")?, names("exporter")?, c.u64s("incarnation")?);
        let (local_ip, local_port, remote_ip, remote_port) =
            (ip("local_ip")?, c.u16s("local_port")?, ip("remote_ip")?, c.u16s("remote_port")?);
        let direction = names("direction")?;
        let (start_ns, end_ns, open) = (c.timestamps("start_ns")?, c.timestamps("end_ns")?, c.bools("open")?);
        let (start_unobserved, connect_error) = (c.bools("start_unobserved")?, c.u32s("connect_error")?);
        let (bytes_sent, bytes_received) = (c.u64s("bytes_sent")?, c.u64s("bytes_received")?);
        let (segments_sent, segments_received) = (c.u64s("segments_sent")?, c.u64s("segments_received")?);
        let (retransmits, srtt_us) = (c.u32s("retransmits")?, c.u32s("srtt_us")?);
        let (local_workload, local_scope, local_source) =
            (c.opt_strs("local_workload")?, names("local_scope")?, names("local_source")?);
        let (remote_workload, evidence, reason) =
            (c.opt_strs("remote_workload")?, c.opt_strs("evidence")?, c.opt_strs("reason")?);
        let (counted, verification) = (c.bools("counted")?, names("verification")?);
        (0..batch.num_rows())
            .map(|i| {
                Ok(FlowRow {
                    flow_id: flow_id[i],
                    exporter: exporter[i].to_string(),
                    incarnation: incarnation[i],
                    local_ip: local_ip[i],
                    local_port: local_port[i],
                    remote_ip: remote_ip[i],
                    remote_port: remote_port[i],
                    direction: parse_name("direction", DIRECTION, direction[i])?,
                    start_ns: start_ns[i],
                    end_ns: end_ns[i],
                    open: open[i],
                    start_unobserved: start_unobserved[i],
                    connect_error: connect_error[i],
                    bytes_sent: bytes_sent[i],
                    bytes_received: bytes_received[i],
                    segments_sent: segments_sent[i],
                    segments_received: segments_received[i],
                    retransmits: retransmits[i],
                    srtt_us: srtt_us[i],
                    local_workload: local_workload[i].map(str::to_string),
                    local_scope: parse_name("local_scope", SCOPE, local_scope[i])?,
                    local_source: parse_name("local_source", SOURCE, local_source[i])?,
                    remote_workload: remote_workload[i].map(str::to_string),
                    evidence: evidence[i].map(|e| parse_name("evidence", EVIDENCE, e)).transpose()?,
                    reason: reason[i].map(|r| parse_name("reason", REASON, r)).transpose()?,
                    counted: counted[i],
                    verification: parse_name("verification", VERIFICATION, verification[i])?,
                })
            })
            .collect()
    }
}
