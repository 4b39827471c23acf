//! The VPC flow log output schema: one [`VpcFlowRecord`] per flow log row, mirroring
//! `proto/flowmap/v1/vpc.proto` field for field (a test checks every tag), and the stable id of a
//! row, [`vpc_record_id`].
//!
//! A separate message from [`crate::AttributedFlow`] because a VPC flow log row is not a flow
//! seen from one host: it has two ends, both to attribute, an aggregation interval rather than a
//! connection's life, and a source file and line rather than an exporter and a sequence number.

use prost::Message;

use crate::{DecodeError, Evidence, Reason, SCHEMA_VERSION};

/// The Protobuf source of the VPC output schema.
pub const VPC_PROTO: &str = include_str!("../proto/flowmap/v1/vpc.proto");

/// The flow log's `action` field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum VpcAction {
    /// Not present, or `-`.
    Unspecified = 0,
    /// Accepted.
    Accept = 1,
    /// Rejected.
    Reject = 2,
}

/// The flow log's `log-status` field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum VpcLogStatus {
    /// Not present in the format.
    Unspecified = 0,
    /// Logging normally.
    Ok = 1,
    /// No traffic in the interval.
    Nodata = 2,
    /// Records skipped in the interval.
    Skipdata = 3,
}

/// The flow log's `type` field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum VpcTrafficType {
    /// Not present, or `-`.
    Unspecified = 0,
    /// IPv4.
    Ipv4 = 1,
    /// IPv6.
    Ipv6 = 2,
    /// Elastic Fabric Adapter.
    Efa = 3,
}

/// The flow log's `flow-direction` field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum VpcFlowDirection {
    /// Not present, or `-`.
    Unspecified = 0,
    /// Towards the logged interface.
    Ingress = 1,
    /// From the logged interface.
    Egress = 2,
}

/// VPC-specific reasons for an unattributed end (beyond [`Reason`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum VpcReason {
    /// See [`Reason`], or attributed.
    Unspecified = 0,
    /// The owner's evidence does not cover the record's whole interval.
    IntervalNotCovered = 1,
    /// The row has no address for this end.
    NoAddress = 2,
}

/// Which of the row's addresses an end's attribution used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum VpcAddressField {
    /// No address.
    Unspecified = 0,
    /// `srcaddr` / `dstaddr`.
    Interface = 1,
    /// `pkt-srcaddr` / `pkt-dstaddr` (present and different from the interface-level address).
    Packet = 2,
}

/// One end of a record, as attributed; see `vpc.proto`.
#[derive(Clone, PartialEq, Message)]
pub struct VpcEnd {
    /// The address attributed, 4 or 16 bytes; empty when the row has none.
    #[prost(bytes = "vec", tag = "1")]
    pub ip: Vec<u8>,
    /// Which field `ip` came from ([`VpcAddressField`]).
    #[prost(enumeration = "VpcAddressField", tag = "2")]
    pub address_field: i32,
    /// The workload; empty exactly when unattributed.
    #[prost(string, tag = "3")]
    pub workload: String,
    /// What the attribution rests on ([`Evidence`]).
    #[prost(enumeration = "Evidence", tag = "4")]
    pub evidence: i32,
    /// Why unattributed, one of [`Reason`].
    #[prost(enumeration = "Reason", tag = "5")]
    pub reason: i32,
    /// Why unattributed, one of [`VpcReason`].
    #[prost(enumeration = "VpcReason", tag = "6")]
    pub vpc_reason: i32,
}

/// One VPC flow log row with both ends attributed; see `vpc.proto`.
#[derive(Clone, PartialEq, Message)]
pub struct VpcFlowRecord {
    /// Always [`SCHEMA_VERSION`].
    #[prost(uint32, tag = "1")]
    pub schema_version: u32,
    /// [`vpc_record_id`] of (bucket, key, etag, line).
    #[prost(fixed64, tag = "2")]
    pub record_id: u64,
    /// Source bucket.
    #[prost(string, tag = "3")]
    pub bucket: String,
    /// Source object key (decoded, as stored).
    #[prost(string, tag = "4")]
    pub key: String,
    /// Source object ETag, without quotes.
    #[prost(string, tag = "5")]
    pub etag: String,
    /// 1-based line in the decompressed text (header = 1); Parquet: row index + 2.
    #[prost(uint64, tag = "6")]
    pub line: u64,
    /// `version`.
    #[prost(uint32, optional, tag = "7")]
    pub version: Option<u32>,
    /// `account-id`.
    #[prost(string, tag = "8")]
    pub account_id: String,
    /// `interface-id`.
    #[prost(string, tag = "9")]
    pub interface_id: String,
    /// `srcaddr`, 4 or 16 bytes.
    #[prost(bytes = "vec", tag = "10")]
    pub srcaddr: Vec<u8>,
    /// `dstaddr`, 4 or 16 bytes.
    #[prost(bytes = "vec", tag = "11")]
    pub dstaddr: Vec<u8>,
    /// `srcport`.
    #[prost(uint32, optional, tag = "12")]
    pub srcport: Option<u32>,
    /// `dstport`.
    #[prost(uint32, optional, tag = "13")]
    pub dstport: Option<u32>,
    /// `protocol` (IANA number).
    #[prost(uint32, optional, tag = "14")]
    pub protocol: Option<u32>,
    /// `packets`.
    #[prost(uint64, optional, tag = "15")]
    pub packets: Option<u64>,
    /// `bytes`.
    #[prost(uint64, optional, tag = "16")]
    pub bytes: Option<u64>,
    /// `start`, seconds since the epoch.
    #[prost(uint64, optional, tag = "17")]
    pub start_s: Option<u64>,
    /// `end`, seconds since the epoch.
    #[prost(uint64, optional, tag = "18")]
    pub end_s: Option<u64>,
    /// `action` ([`VpcAction`]).
    #[prost(enumeration = "VpcAction", tag = "19")]
    pub action: i32,
    /// `log-status` ([`VpcLogStatus`]).
    #[prost(enumeration = "VpcLogStatus", tag = "20")]
    pub log_status: i32,
    /// `vpc-id`.
    #[prost(string, tag = "21")]
    pub vpc_id: String,
    /// `subnet-id`.
    #[prost(string, tag = "22")]
    pub subnet_id: String,
    /// `instance-id`.
    #[prost(string, tag = "23")]
    pub instance_id: String,
    /// `tcp-flags`.
    #[prost(uint32, optional, tag = "24")]
    pub tcp_flags: Option<u32>,
    /// `type` ([`VpcTrafficType`]).
    #[prost(enumeration = "VpcTrafficType", tag = "25")]
    pub r#type: i32,
    /// `pkt-srcaddr`, 4 or 16 bytes.
    #[prost(bytes = "vec", tag = "26")]
    pub pkt_srcaddr: Vec<u8>,
    /// `pkt-dstaddr`, 4 or 16 bytes.
    #[prost(bytes = "vec", tag = "27")]
    pub pkt_dstaddr: Vec<u8>,
    /// `region`.
    #[prost(string, tag = "28")]
    pub region: String,
    /// `az-id`.
    #[prost(string, tag = "29")]
    pub az_id: String,
    /// `sublocation-type`.
    #[prost(string, tag = "30")]
    pub sublocation_type: String,
    /// `sublocation-id`.
    #[prost(string, tag = "31")]
    pub sublocation_id: String,
    /// `pkt-src-aws-service`.
    #[prost(string, tag = "32")]
    pub pkt_src_aws_service: String,
    /// `pkt-dst-aws-service`.
    #[prost(string, tag = "33")]
    pub pkt_dst_aws_service: String,
    /// `flow-direction` ([`VpcFlowDirection`]).
    #[prost(enumeration = "VpcFlowDirection", tag = "34")]
    pub flow_direction: i32,
    /// `traffic-path`.
    #[prost(uint32, optional, tag = "35")]
    pub traffic_path: Option<u32>,
    /// The source end, attributed.
    #[prost(message, optional, tag = "36")]
    pub src: Option<VpcEnd>,
    /// The destination end, attributed.
    #[prost(message, optional, tag = "37")]
    pub dst: Option<VpcEnd>,
}

/// Serializes a VPC record (the caller sets `schema_version`).
pub fn encode_vpc_record(record: &VpcFlowRecord) -> Vec<u8> {
    record.encode_to_vec()
}

/// Parses a VPC record and checks its schema version.
///
/// # Errors
/// [`DecodeError::Malformed`] for bytes that are not this message, and
/// [`DecodeError::UnsupportedVersion`] for a version other than [`SCHEMA_VERSION`].
pub fn decode_vpc_record(bytes: &[u8]) -> Result<VpcFlowRecord, DecodeError> {
    let record = VpcFlowRecord::decode(bytes).map_err(DecodeError::Malformed)?;
    if record.schema_version != SCHEMA_VERSION {
        return Err(DecodeError::UnsupportedVersion { found: record.schema_version });
    }
    Ok(record)
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// The stable id of a flow log row: the same for the same (bucket, key, ETag, line) in every
/// process and language, different (up to 64-bit collisions) for any other row.
///
/// The algorithm, so that other languages can compute it: start from the FNV-1a 64 offset basis
/// (`0xcbf29ce484222325`); for each of bucket, key and ETag (without quotes) in that order, feed
/// the string's length in bytes as a 64-bit little-endian word and then its bytes, every byte
/// FNV-1a style (xor it in, then multiply by the FNV prime `0x100000001b3`, wrapping); finally
/// feed the line number as 8 bytes, little-endian, the same way; then xor the result with itself
/// shifted right by 29 bits. The length prefixes keep ("ab", "c") and ("a", "bc") apart.
pub fn vpc_record_id(bucket: &str, key: &str, etag: &str, line: u64) -> u64 {
    VpcRecordIdHasher::new(bucket, key, etag).id(line)
}

/// [`vpc_record_id`] with the file's part hashed once, for the many rows of one file.
#[derive(Clone, Copy, Debug)]
pub struct VpcRecordIdHasher {
    prefix: u64,
}

fn fnv_bytes(mut hash: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(FNV_PRIME);
    }
    hash
}

impl VpcRecordIdHasher {
    /// Hashes the file's identity.
    pub fn new(bucket: &str, key: &str, etag: &str) -> Self {
        let mut hash = FNV_OFFSET;
        for part in [bucket, key, etag] {
            hash = fnv_bytes(hash, &(part.len() as u64).to_le_bytes());
            hash = fnv_bytes(hash, part.as_bytes());
        }
        VpcRecordIdHasher { prefix: hash }
    }

    /// The id of line `line` of this file.
    pub fn id(&self, line: u64) -> u64 {
        let hash = fnv_bytes(self.prefix, &line.to_le_bytes());
        hash ^ (hash >> 29)
    }
}
