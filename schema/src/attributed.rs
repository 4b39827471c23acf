//! The output schema: one [`AttributedFlow`] per flow, mirroring `proto/flowmap/v1/attributed.proto`
//! field for field (a test checks every tag). The job writes it; any consumer with a Protobuf
//! code generator reads it.

use prost::Message;

use crate::{DecodeError, Direction, Scope, WorkloadSource, SCHEMA_VERSION};

/// The Protobuf source of the output schema.
pub const ATTRIBUTED_PROTO: &str = include_str!("../proto/flowmap/v1/attributed.proto");

/// What a remote attribution rests on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum Evidence {
    /// Unattributed.
    Unspecified = 0,
    /// Ownership heartbeats.
    Heartbeat = 1,
    /// The remote host's flow reports.
    Flow = 2,
    /// IP assignment events.
    Assignment = 3,
    /// The other end's own record of the same connection.
    Peer = 4,
}

/// Why the remote end is unattributed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum Reason {
    /// Attributed.
    Unspecified = 0,
    /// No evidence of an owner.
    NoOwner = 1,
    /// Two workloads claim the address.
    Conflict = 2,
    /// The owner changed within the guard band.
    NearBoundary = 3,
    /// Outside the fleet.
    External = 4,
    /// Evidence no longer kept.
    EvidenceExpired = 5,
    /// A shared address, and nothing vouches for this port.
    SharedIp = 6,
    /// The last assignment lies before a gap in its source's promise.
    SourceGap = 7,
}

/// One attributed flow; see `attributed.proto`.
#[derive(Clone, PartialEq, Message)]
pub struct AttributedFlow {
    /// Always [`SCHEMA_VERSION`].
    #[prost(uint32, tag = "1")]
    pub schema_version: u32,
    /// Stable flow id.
    #[prost(fixed64, tag = "2")]
    pub flow_id: u64,
    /// The reporting exporter.
    #[prost(string, tag = "3")]
    pub exporter_id: String,
    /// Local address, 4 or 16 bytes.
    #[prost(bytes = "vec", tag = "4")]
    pub local_ip: Vec<u8>,
    /// Local port.
    #[prost(uint32, tag = "5")]
    pub local_port: u32,
    /// Remote address, 4 or 16 bytes.
    #[prost(bytes = "vec", tag = "6")]
    pub remote_ip: Vec<u8>,
    /// Remote port.
    #[prost(uint32, tag = "7")]
    pub remote_port: u32,
    /// Which side opened the connection.
    #[prost(enumeration = "Direction", tag = "8")]
    pub direction: i32,
    /// Established at, ns since the epoch.
    #[prost(uint64, tag = "9")]
    pub start_ns: u64,
    /// Closed at, ns since the epoch.
    #[prost(uint64, tag = "10")]
    pub end_ns: u64,
    /// Payload bytes sent.
    #[prost(uint64, tag = "11")]
    pub bytes_sent: u64,
    /// Payload bytes received.
    #[prost(uint64, tag = "12")]
    pub bytes_received: u64,
    /// Segments sent.
    #[prost(uint64, tag = "13")]
    pub segments_sent: u64,
    /// Segments received.
    #[prost(uint64, tag = "14")]
    pub segments_received: u64,
    /// Retransmitted segments.
    #[prost(uint32, tag = "15")]
    pub retransmits: u32,
    /// Smoothed RTT, microseconds.
    #[prost(uint32, tag = "16")]
    pub srtt_us: u32,
    /// The local workload; empty when unknown.
    #[prost(string, tag = "17")]
    pub local_workload: String,
    /// The remote workload; empty exactly when unattributed.
    #[prost(string, tag = "18")]
    pub remote_workload: String,
    /// What the attribution rests on.
    #[prost(enumeration = "Evidence", tag = "19")]
    pub evidence: i32,
    /// Why unattributed.
    #[prost(enumeration = "Reason", tag = "20")]
    pub reason: i32,
    /// A slice of a connection still open (counters so far); false for the final record.
    #[prost(bool, tag = "21")]
    pub open: bool,
    /// The exporter's incarnation.
    #[prost(fixed64, tag = "22")]
    pub incarnation: u64,
    /// What the local workload vouches for.
    #[prost(enumeration = "Scope", tag = "23")]
    pub local_scope: i32,
    /// How the exporter knew the local workload.
    #[prost(enumeration = "WorkloadSource", tag = "24")]
    pub local_source: i32,
    /// The exporter did not see the connection established.
    #[prost(bool, tag = "25")]
    pub start_unobserved: bool,
    /// Socket error of a connection that never established (0: it did).
    #[prost(uint32, tag = "26")]
    pub connect_error: u32,
}

/// Serializes an attributed flow (the caller sets `schema_version`).
pub fn encode_attributed(flow: &AttributedFlow) -> Vec<u8> {
    flow.encode_to_vec()
}

/// Parses an attributed flow and checks its schema version.
pub fn decode_attributed(bytes: &[u8]) -> Result<AttributedFlow, DecodeError> {
    let flow = AttributedFlow::decode(bytes).map_err(DecodeError::Malformed)?;
    if flow.schema_version != SCHEMA_VERSION {
        return Err(DecodeError::UnsupportedVersion { found: flow.schema_version });
    }
    Ok(flow)
}
