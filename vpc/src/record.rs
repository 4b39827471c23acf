//! One flow log row, typed: what the parsers yield and the sink receives.
//!
//! Every field is an `Option`: a custom format may leave any field out, and `-` ("not
//! applicable") is a legal value of every field (NODATA and SKIPDATA rows have `-` for the
//! addresses, ports and counters). Absent and `-` are both `None`; the header says which fields the
//! format has ([`crate::parse::Header`]).
//!
//! Repeated strings (account, interface, VPC, subnet, region...) are shared `Arc<str>`s, interned
//! per file by the parser: a file names a few hundred interfaces in millions of rows.

use std::net::IpAddr;
use std::sync::Arc;

/// The `action` field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Action {
    /// `ACCEPT`.
    Accept,
    /// `REJECT`: the packets never reached a socket.
    Reject,
}

/// The `log-status` field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum LogStatus {
    /// `OK`.
    Ok,
    /// `NODATA`: no traffic in the interval.
    Nodata,
    /// `SKIPDATA`: records were skipped in the interval (capacity).
    Skipdata,
}

/// The `type` field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub enum TrafficType {
    /// `IPv4`.
    IPv4,
    /// `IPv6`.
    IPv6,
    /// `EFA` (Elastic Fabric Adapter).
    Efa,
}

/// The `flow-direction` field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FlowDirection {
    /// `ingress`.
    Ingress,
    /// `egress`.
    Egress,
}

/// One end of a row.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum End {
    /// The source (`srcaddr`, `pkt-srcaddr`).
    Src,
    /// The destination (`dstaddr`, `pkt-dstaddr`).
    Dst,
}

/// Which of a row's addresses stands for an end (see [`Record::end_address`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AddressField {
    /// `srcaddr` / `dstaddr`.
    Interface,
    /// `pkt-srcaddr` / `pkt-dstaddr`.
    Packet,
}

/// One flow log row as parsed. `line` locates it: the 1-based line number in the decompressed
/// text (the header is line 1), or for Parquet the 0-based row index plus 2.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
#[allow(missing_docs)] // the fields are the flow log's own, named after them
pub struct Record {
    pub line: u64,
    pub version: Option<u8>,
    pub account_id: Option<Arc<str>>,
    pub interface_id: Option<Arc<str>>,
    pub srcaddr: Option<IpAddr>,
    pub dstaddr: Option<IpAddr>,
    pub srcport: Option<u16>,
    pub dstport: Option<u16>,
    /// IANA protocol number.
    pub protocol: Option<u8>,
    pub packets: Option<u64>,
    pub bytes: Option<u64>,
    /// Start of the aggregation interval, seconds since the epoch.
    pub start: Option<u64>,
    /// End of the aggregation interval, seconds since the epoch.
    pub end: Option<u64>,
    pub action: Option<Action>,
    pub log_status: Option<LogStatus>,
    pub vpc_id: Option<Arc<str>>,
    pub subnet_id: Option<Arc<str>>,
    pub instance_id: Option<Arc<str>>,
    pub tcp_flags: Option<u16>,
    pub traffic_type: Option<TrafficType>,
    pub pkt_srcaddr: Option<IpAddr>,
    pub pkt_dstaddr: Option<IpAddr>,
    pub region: Option<Arc<str>>,
    pub az_id: Option<Arc<str>>,
    pub sublocation_type: Option<Arc<str>>,
    pub sublocation_id: Option<Arc<str>>,
    pub pkt_src_aws_service: Option<Arc<str>>,
    pub pkt_dst_aws_service: Option<Arc<str>>,
    pub flow_direction: Option<FlowDirection>,
    pub traffic_path: Option<u8>,
}

impl Record {
    /// The address that stands for `end`, and which field it came from: the packet-level
    /// address (`pkt-srcaddr`, `pkt-dstaddr`) when present and different from the interface-level
    /// one (traffic through a NAT gateway, transit gateway or load balancer interface, whose
    /// `srcaddr`/`dstaddr` is the intermediate interface), otherwise the interface-level address.
    /// `None` when the row has neither (`-`, or a format without them).
    pub fn end_address(&self, end: End) -> Option<(IpAddr, AddressField)> {
        let (interface, packet) = match end {
            End::Src => (self.srcaddr, self.pkt_srcaddr),
            End::Dst => (self.dstaddr, self.pkt_dstaddr),
        };
        match (interface, packet) {
            (Some(i), Some(p)) if i != p => Some((p, AddressField::Packet)),
            (None, Some(p)) => Some((p, AddressField::Packet)),
            (Some(i), _) => Some((i, AddressField::Interface)),
            (None, None) => None,
        }
    }

    /// The port of `end` (`srcport` or `dstport`).
    pub fn port(&self, end: End) -> Option<u16> {
        match end {
            End::Src => self.srcport,
            End::Dst => self.dstport,
        }
    }
}
