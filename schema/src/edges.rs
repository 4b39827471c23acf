//! The dependency-edge and change-event output schema: [`Edge`] and [`Event`], mirroring
//! `proto/flowmap/v1/edges.proto` field for field (a test checks every tag).

use prost::Message;

use crate::{DecodeError, Evidence, SCHEMA_VERSION};

/// The Protobuf source of the edges schema.
pub const EDGES_PROTO: &str = include_str!("../proto/flowmap/v1/edges.proto");

/// One emission of a dependency edge (a delta); see `edges.proto`. (Serializable with serde too,
/// for the job's exchange between processes.)
#[derive(Clone, PartialEq, Message, serde::Serialize, serde::Deserialize)]
pub struct Edge {
    /// Always [`SCHEMA_VERSION`].
    #[prost(uint32, tag = "1")]
    pub schema_version: u32,
    /// Start of the bucket, ns.
    #[prost(uint64, tag = "2")]
    pub bucket_start_ns: u64,
    /// Length of the bucket, s.
    #[prost(uint32, tag = "3")]
    pub bucket_s: u32,
    /// The client end's node.
    #[prost(string, tag = "4")]
    pub client: String,
    /// The server end's node.
    #[prost(string, tag = "5")]
    pub server: String,
    /// The server's port.
    #[prost(uint32, tag = "6")]
    pub server_port: u32,
    /// "tcp".
    #[prost(string, tag = "7")]
    pub protocol: String,
    /// The job's dataflow time of this emission, ns.
    #[prost(uint64, tag = "8")]
    pub emitted_at_ns: u64,
    /// Connections started.
    #[prost(uint64, tag = "9")]
    pub connections: u64,
    /// Payload bytes from client to server.
    #[prost(uint64, tag = "10")]
    pub bytes_client_to_server: u64,
    /// Payload bytes from server to client.
    #[prost(uint64, tag = "11")]
    pub bytes_server_to_client: u64,
    /// Segments both ways.
    #[prost(uint64, tag = "12")]
    pub segments: u64,
    /// Retransmitted segments.
    #[prost(uint64, tag = "13")]
    pub retransmits: u64,
    /// Connections that never established.
    #[prost(uint64, tag = "14")]
    pub failed_connects: u64,
    /// Connections verified by the other end's own record.
    #[prost(uint64, tag = "15")]
    pub verified: u64,
    /// Connections whose two ends disagree.
    #[prost(uint64, tag = "16")]
    pub disagreements: u64,
    /// Connections seen by one end only.
    #[prost(uint64, tag = "17")]
    pub one_sided: u64,
    /// RTT median, µs (0 when none).
    #[prost(double, tag = "18")]
    pub rtt_p50_us: f64,
    /// RTT 90th percentile, µs.
    #[prost(double, tag = "19")]
    pub rtt_p90_us: f64,
    /// RTT 99th percentile, µs.
    #[prost(double, tag = "20")]
    pub rtt_p99_us: f64,
    /// The mergeable RTT sketch (see `edges.proto`).
    #[prost(bytes = "vec", tag = "21")]
    pub rtt_sketch: Vec<u8>,
}

/// What a change event is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum EventKind {
    /// Not stated.
    Unspecified = 0,
    /// An edge not seen within the lookback appeared.
    NewDependency = 1,
    /// An edge the policy does not allow appeared.
    PolicyViolation = 2,
    /// The two ends of a connection disagree.
    Disagreement = 3,
}

impl EventKind {
    /// snake_case name, as used in keys, JSON and metrics.
    pub fn name(self) -> &'static str {
        match self {
            EventKind::Unspecified => "unspecified",
            EventKind::NewDependency => "new_dependency",
            EventKind::PolicyViolation => "policy_violation",
            EventKind::Disagreement => "disagreement",
        }
    }
}

/// One change event; see `edges.proto`.
#[derive(Clone, PartialEq, Message, serde::Serialize, serde::Deserialize)]
pub struct Event {
    /// Always [`SCHEMA_VERSION`].
    #[prost(uint32, tag = "1")]
    pub schema_version: u32,
    /// What it is about.
    #[prost(enumeration = "EventKind", tag = "2")]
    pub kind: i32,
    /// When, ns.
    #[prost(uint64, tag = "3")]
    pub at_ns: u64,
    /// The client end's node.
    #[prost(string, tag = "4")]
    pub client: String,
    /// The server end's node.
    #[prost(string, tag = "5")]
    pub server: String,
    /// The server's port.
    #[prost(uint32, tag = "6")]
    pub server_port: u32,
    /// A readable explanation.
    #[prost(string, tag = "7")]
    pub detail: String,
    /// Disagreements: the flow.
    #[prost(fixed64, tag = "8")]
    pub flow_id: u64,
    /// Disagreements: its exporter.
    #[prost(string, tag = "9")]
    pub exporter_id: String,
    /// Disagreements: the other end's workload.
    #[prost(string, tag = "10")]
    pub peer_workload: String,
    /// Disagreements: the claims' workload.
    #[prost(string, tag = "11")]
    pub claims_workload: String,
    /// Disagreements: what the claims rest on.
    #[prost(enumeration = "Evidence", tag = "12")]
    pub claims_evidence: i32,
}

/// Parses an edge and checks its schema version.
///
/// # Errors
/// Malformed bytes, or a schema version this reader does not know.
pub fn decode_edge(bytes: &[u8]) -> Result<Edge, DecodeError> {
    let e = Edge::decode(bytes).map_err(DecodeError::Malformed)?;
    if e.schema_version != SCHEMA_VERSION {
        return Err(DecodeError::UnsupportedVersion { found: e.schema_version });
    }
    Ok(e)
}

/// Parses an event and checks its schema version.
///
/// # Errors
/// Malformed bytes, or a schema version this reader does not know.
pub fn decode_event(bytes: &[u8]) -> Result<Event, DecodeError> {
    let e = Event::decode(bytes).map_err(DecodeError::Malformed)?;
    if e.schema_version != SCHEMA_VERSION {
        return Err(DecodeError::UnsupportedVersion { found: e.schema_version });
    }
    Ok(e)
}
