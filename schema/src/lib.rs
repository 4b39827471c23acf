//! The flowmap wire schema: what an exporter publishes and the attribution job reads.
//!
//! The contract is the Protobuf file `proto/flowmap/v1/batch.proto` in this crate; the Rust
//! types here mirror it field for field (a test parses the `.proto` and checks every tag), so
//! any language with a Protobuf code generator can read and write batches.
//!
//! Why Protobuf: it is the standard, self-describing-enough, forward-compatible encoding that
//! every Kafka ecosystem already speaks, and it needs no Rust on the other side.
//!
//! # Layout
//! - [`ExporterBatch`], [`Flow`], [`Ownership`], [`Assignment`], [`Direction`], [`Scope`],
//!   [`WorkloadSource`]: the messages.
//! - [`encode_batch`] / [`decode_batch`]: bytes in and out, with version checking.
//! - [`view`]: the zero-copy reader the job uses on its hot path.
//! - [`ip_from_bytes`] / [`ip_to_bytes`]: the raw 4- or 16-byte address form used on the wire.
//! - [`flow_id`]: the stable id of a flow.
//! - [`attributed`]: the job's output schema, [`AttributedFlow`] (`proto/flowmap/v1/attributed.proto`).
//! - [`edges`]: dependency edges and change events, [`Edge`] and [`Event`] (`proto/flowmap/v1/edges.proto`).
//! - [`vpc`]: the output schema of VPC flow log rows, [`VpcFlowRecord`] (`proto/flowmap/v1/vpc.proto`),
//!   and their stable id, [`vpc_record_id`].
#![deny(missing_docs)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use prost::Message;

pub mod attributed;
pub mod edges;
pub mod sketch;
pub mod view;
pub mod vpc;

pub use attributed::{decode_attributed, encode_attributed, AttributedFlow, Evidence, Reason, ATTRIBUTED_PROTO};
pub use edges::{decode_edge, decode_event, Edge, Event, EventKind, EDGES_PROTO};

pub use vpc::{
    decode_vpc_record, encode_vpc_record, vpc_record_id, VpcAction, VpcAddressField, VpcEnd, VpcFlowDirection,
    VpcFlowRecord, VpcLogStatus, VpcReason, VpcRecordIdHasher, VpcTrafficType, VPC_PROTO,
};

pub use view::{view_batch, AssignmentView, BatchView, FlowView, OwnershipView};

/// The schema version this crate reads and writes.
pub const SCHEMA_VERSION: u32 = 1;

/// The Protobuf source of this schema, for publishing beside the data.
pub const BATCH_PROTO: &str = include_str!("../proto/flowmap/v1/batch.proto");

/// One exporter batch; see `batch.proto` for the meaning and the promise of every field.
#[derive(Clone, PartialEq, Message)]
pub struct ExporterBatch {
    /// Always [`SCHEMA_VERSION`].
    #[prost(uint32, tag = "1")]
    pub schema_version: u32,
    /// Stable identity of the exporter.
    #[prost(string, tag = "2")]
    pub exporter_id: String,
    /// Per-exporter sequence number, from 0, without gaps.
    #[prost(uint64, tag = "3")]
    pub seq: u64,
    /// Start of the batch window, ns since the epoch.
    #[prost(uint64, tag = "4")]
    pub window_from_ns: u64,
    /// End (exclusive) of the batch window: every flow that ended before it has been published.
    #[prost(uint64, tag = "5")]
    pub window_to_ns: u64,
    /// Flows that ended in the window, and slices of open flows.
    #[prost(message, repeated, tag = "6")]
    pub flows: Vec<Flow>,
    /// Ownership heartbeats for local IPs.
    #[prost(message, repeated, tag = "7")]
    pub heartbeats: Vec<Ownership>,
    /// IP assignment events (from an IP address manager).
    #[prost(message, repeated, tag = "8")]
    pub assignments: Vec<Assignment>,
    /// This run of the exporter (random, non-zero; 0 when not stated).
    #[prost(fixed64, tag = "9")]
    pub incarnation: u64,
}

/// What a piece of local ownership evidence vouches for (see `batch.proto`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum Scope {
    /// Not stated: for a flow's local workload, read as [`Scope::Port`].
    Unspecified = 0,
    /// The whole IP.
    Ip = 1,
    /// Only this port of the IP (the IP is shared).
    Port = 2,
}

/// How the exporter knew a flow's local workload (see `batch.proto`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum WorkloadSource {
    /// Not stated.
    Unspecified = 0,
    /// The host's identity.
    HostIdentity = 1,
    /// A per-IP assignment.
    IpAssignment = 2,
    /// A per-(IP, port) assignment.
    PortAssignment = 3,
    /// A cgroup rule.
    CgroupRule = 4,
}

/// Which side opened the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum Direction {
    /// Not known.
    Unspecified = 0,
    /// The local end connected out.
    Client = 1,
    /// The local end accepted.
    Server = 2,
}

/// One TCP connection as the local host saw it.
#[derive(Clone, PartialEq, Message)]
pub struct Flow {
    /// Local address, 4 or 16 bytes.
    #[prost(bytes = "vec", tag = "1")]
    pub local_ip: Vec<u8>,
    /// Local port.
    #[prost(uint32, tag = "2")]
    pub local_port: u32,
    /// Remote address, 4 or 16 bytes.
    #[prost(bytes = "vec", tag = "3")]
    pub remote_ip: Vec<u8>,
    /// Remote port.
    #[prost(uint32, tag = "4")]
    pub remote_port: u32,
    /// Which side opened the connection.
    #[prost(enumeration = "Direction", tag = "5")]
    pub direction: i32,
    /// Established at, ns since the epoch.
    #[prost(uint64, tag = "6")]
    pub start_ns: u64,
    /// Closed at (or the window end for an open slice), ns since the epoch.
    #[prost(uint64, tag = "7")]
    pub end_ns: u64,
    /// Payload bytes sent.
    #[prost(uint64, tag = "8")]
    pub bytes_sent: u64,
    /// Payload bytes received.
    #[prost(uint64, tag = "9")]
    pub bytes_received: u64,
    /// Segments sent.
    #[prost(uint64, tag = "10")]
    pub segments_sent: u64,
    /// Segments received.
    #[prost(uint64, tag = "11")]
    pub segments_received: u64,
    /// Retransmitted segments.
    #[prost(uint32, tag = "12")]
    pub retransmits: u32,
    /// Smoothed RTT in microseconds, 0 when unknown.
    #[prost(uint32, tag = "13")]
    pub srtt_us: u32,
    /// Workload of the local IP as the exporter attributed it; empty when unknown.
    #[prost(string, tag = "14")]
    pub local_workload: String,
    /// True for the slice of a flow still open at the window end.
    #[prost(bool, tag = "15")]
    pub open: bool,
    /// What `local_workload` vouches for ([`Scope`]; unspecified reads as a port).
    #[prost(enumeration = "Scope", tag = "16")]
    pub local_scope: i32,
    /// How the exporter knew `local_workload` ([`WorkloadSource`]).
    #[prost(enumeration = "WorkloadSource", tag = "17")]
    pub local_source: i32,
    /// The exporter did not see the connection established: `start_ns` is when it first saw it.
    #[prost(bool, tag = "18")]
    pub start_unobserved: bool,
    /// The exporter's stable id of the connection (0: not stated).
    #[prost(fixed64, tag = "19")]
    pub connection_id: u64,
    /// Socket error of a connection that never established (111 refused, 110 timed out).
    #[prost(uint32, tag = "20")]
    pub connect_error: u32,
}

/// "IP `ip` was `workload` during [from_ns, to_ns)".
#[derive(Clone, PartialEq, Message)]
pub struct Ownership {
    /// The address, 4 or 16 bytes.
    #[prost(bytes = "vec", tag = "1")]
    pub ip: Vec<u8>,
    /// The owning workload.
    #[prost(string, tag = "2")]
    pub workload: String,
    /// Start of the range, ns since the epoch.
    #[prost(uint64, tag = "3")]
    pub from_ns: u64,
    /// End (exclusive) of the range, ns since the epoch.
    #[prost(uint64, tag = "4")]
    pub to_ns: u64,
    /// 0: the whole IP; otherwise only this port of it.
    #[prost(uint32, tag = "5")]
    pub port: u32,
}

/// An IP assignment event; an empty workload releases the IP.
#[derive(Clone, PartialEq, Message)]
pub struct Assignment {
    /// The address, 4 or 16 bytes.
    #[prost(bytes = "vec", tag = "1")]
    pub ip: Vec<u8>,
    /// The new owner, or empty for "released".
    #[prost(string, tag = "2")]
    pub workload: String,
    /// When the assignment took effect, ns since the epoch.
    #[prost(uint64, tag = "3")]
    pub at_ns: u64,
}

/// Why bytes could not be read as a batch.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Not valid Protobuf for this message (corrupt or truncated).
    #[error("malformed batch: {0}")]
    Malformed(#[source] prost::DecodeError),
    /// Not valid Protobuf for this schema (read by the zero-copy [`view`] reader).
    #[error("malformed batch: {0}")]
    Invalid(&'static str),
    /// Valid Protobuf, but a schema version this reader does not know.
    #[error("unsupported schema version {found} (this reader knows {SCHEMA_VERSION})")]
    UnsupportedVersion {
        /// The version the batch carries.
        found: u32,
    },
}

/// Serializes a batch (the caller sets `schema_version`).
pub fn encode_batch(batch: &ExporterBatch) -> Vec<u8> {
    batch.encode_to_vec()
}

/// Parses a batch and checks its schema version.
pub fn decode_batch(bytes: &[u8]) -> Result<ExporterBatch, DecodeError> {
    let batch = ExporterBatch::decode(bytes).map_err(DecodeError::Malformed)?;
    if batch.schema_version != SCHEMA_VERSION {
        return Err(DecodeError::UnsupportedVersion { found: batch.schema_version });
    }
    Ok(batch)
}

/// Reads the wire form of an address: 4 bytes for IPv4, 16 for IPv6, anything else is `None`.
pub fn ip_from_bytes(bytes: &[u8]) -> Option<IpAddr> {
    match bytes.len() {
        4 => {
            let octets: [u8; 4] = bytes.try_into().ok()?;
            Some(IpAddr::V4(Ipv4Addr::from(octets)))
        }
        16 => {
            let octets: [u8; 16] = bytes.try_into().ok()?;
            Some(IpAddr::V6(Ipv6Addr::from(octets)))
        }
        _ => None,
    }
}

/// Writes the wire form of an address.
pub fn ip_to_bytes(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    }
}

/// The stable id of a flow. When the exporter states a `connection_id`, a 64-bit hash of the
/// exporter id and that id (so one connection keeps its id in every slice and across exporter
/// restarts); otherwise a 64-bit hash of the exporter id, the 5-tuple, the direction and the
/// start time. The same flow reported twice (a duplicated batch, a replay) gets the same id in
/// every process, so consumers can deduplicate on it.
///
/// With a connection id: start from the exporter id's hash (below), then feed the word
/// `0xc0ff_ee00_0000_0001` and the connection id, as described below.
///
/// The hash, so that other languages can compute it: start from the FNV-1a 64 offset basis;
/// feed the exporter id's bytes one at a time, FNV-1a style (xor, then multiply by the FNV
/// prime); then feed, as 64-bit little-endian words each xored in and followed by one multiply
/// and a 29-bit right-shift xor, the local address (the IPv4-mapped 128-bit value as two
/// words, high first), the local port, the remote address (two words), the remote port, the
/// direction, and the start time.
pub fn flow_id(exporter_id: &str, flow: &Flow) -> u64 {
    let ids = FlowIdHasher::new(exporter_id);
    if flow.connection_id != 0 {
        return ids.connection(flow.connection_id);
    }
    ids.id(&flow.local_ip, flow.local_port, &flow.remote_ip, flow.remote_port, flow.direction, flow.start_ns)
}

/// [`flow_id`] with the exporter id's part hashed once, for the many flows of one batch.
#[derive(Clone, Copy, Debug)]
pub struct FlowIdHasher {
    prefix: u64,
}

const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// Marks the connection-id form of a flow id (so it never equals a 5-tuple form by design).
const CONNECTION_MARK: u64 = 0xc0ff_ee00_0000_0001;

impl FlowIdHasher {
    /// Hashes the exporter id.
    pub fn new(exporter_id: &str) -> Self {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for &b in exporter_id.as_bytes() {
            hash ^= u64::from(b);
            hash = hash.wrapping_mul(FNV_PRIME);
        }
        FlowIdHasher { prefix: hash }
    }

    /// The id of a connection this exporter named with its own `connection_id` (non-zero).
    pub fn connection(&self, connection_id: u64) -> u64 {
        let mut hash = self.prefix;
        for w in [CONNECTION_MARK, connection_id] {
            hash ^= w;
            hash = hash.wrapping_mul(FNV_PRIME);
            hash ^= hash >> 29;
        }
        hash
    }

    /// The id of one flow of this exporter that states no connection id.
    pub fn id(
        &self,
        local_ip: &[u8],
        local_port: u32,
        remote_ip: &[u8],
        remote_port: u32,
        direction: i32,
        start_ns: u64,
    ) -> u64 {
        let mut hash = self.prefix;
        let mut word = |w: u64| {
            hash ^= w;
            hash = hash.wrapping_mul(FNV_PRIME);
            hash ^= hash >> 29;
        };
        let wide = |ip: &[u8]| -> u128 {
            match ip.len() {
                4 => (0xffff_u128 << 32) | u128::from(u32::from_be_bytes([ip[0], ip[1], ip[2], ip[3]])),
                16 => u128::from_be_bytes(ip.try_into().unwrap_or([0; 16])),
                // Not an address: such records are rejected, but the id must still be defined.
                _ => ip.iter().fold(0u128, |acc, &b| acc.rotate_left(8) ^ u128::from(b)),
            }
        };
        let (local, remote) = (wide(local_ip), wide(remote_ip));
        word((local >> 64) as u64);
        word(local as u64);
        word(u64::from(local_port));
        word((remote >> 64) as u64);
        word(remote as u64);
        word(u64::from(remote_port));
        word(direction as u64);
        word(start_ns);
        hash
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod vpc_tests;
