//! The records that flow through the attribution dataflow.
//!
//! Everything here is small, `Ord` and serde-serializable, because timely exchanges it between
//! workers (serialized with bincode between processes) and differential arranges it.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Event time: wall-clock nanoseconds since the Unix epoch (the dataflow's timestamp too).
pub type Time = u64;

/// Multiplicity of an update in an ownership collection.
pub type Diff = i64;

/// An IPv4 or IPv6 address, stored as 128 bits (IPv4 as an IPv4-mapped IPv6 address) so that
/// both families share one key type and one arrangement.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Ip(pub u128);

impl Ip {
    /// Converts from the standard library's address type.
    pub fn from_addr(addr: IpAddr) -> Self {
        match addr {
            IpAddr::V4(v4) => Ip(u128::from(v4.to_ipv6_mapped())),
            IpAddr::V6(v6) => Ip(u128::from(v6)),
        }
    }

    /// Converts back; IPv4-mapped addresses come back as IPv4.
    pub fn to_addr(self) -> IpAddr {
        let v6 = Ipv6Addr::from(self.0);
        match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        }
    }

    /// An IPv4 address.
    pub fn v4(octets: [u8; 4]) -> Self {
        Self::from_addr(IpAddr::V4(Ipv4Addr::from(octets)))
    }
}

impl fmt::Debug for Ip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.to_addr())
    }
}

impl fmt::Display for Ip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.to_addr())
    }
}

/// A workload name. Cheap to clone (shared), with a precomputed hash so that comparisons
/// (which differential does a lot of, sorting and merging claims) rarely touch the string.
///
/// The order is by hash, then by name: a total order, the same in every process (the hash is
/// FNV-1a), but not alphabetical.
#[derive(Clone)]
pub struct Workload {
    hash: u64,
    name: Arc<str>,
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

impl Workload {
    /// A workload with this name.
    pub fn new(name: &str) -> Self {
        Self::with_hash(name, Self::hash_of(name))
    }

    /// The hash [`Workload`] orders by (FNV-1a 64 of the name), for interning tables.
    pub fn hash_of(name: &str) -> u64 {
        fnv1a(name.as_bytes())
    }

    /// A workload whose name's [`hash_of`](Self::hash_of) is already known.
    pub fn with_hash(name: &str, hash: u64) -> Self {
        debug_assert_eq!(hash, fnv1a(name.as_bytes()));
        Workload { hash, name: Arc::from(name) }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.name
    }
}

impl PartialEq for Workload {
    fn eq(&self, other: &Self) -> bool {
        self.hash == other.hash && (Arc::ptr_eq(&self.name, &other.name) || self.name == other.name)
    }
}

impl Eq for Workload {}

impl Ord for Workload {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.hash.cmp(&other.hash).then_with(|| {
            if Arc::ptr_eq(&self.name, &other.name) {
                std::cmp::Ordering::Equal
            } else {
                self.name.cmp(&other.name)
            }
        })
    }
}

impl PartialOrd for Workload {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl std::hash::Hash for Workload {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

impl Serialize for Workload {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.name)
    }
}

impl<'de> Deserialize<'de> for Workload {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Ok(Workload::new(&name))
    }
}

impl fmt::Debug for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", &*self.name)
    }
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

/// Where a claim of ownership comes from, in the order the arrangement sorts them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum EvidenceKind {
    /// An IP assignment event from an IP address manager (lower trust: used only where no
    /// exporter evidence exists).
    Assignment,
    /// An ownership heartbeat from the owner's own exporter.
    Heartbeat,
    /// A flow the owner's own exporter reported with this IP as its local address.
    Flow,
}

impl EvidenceKind {
    /// Lower-case name, as used in output and metrics.
    pub fn name(self) -> &'static str {
        match self {
            EvidenceKind::Assignment => "assignment",
            EvidenceKind::Heartbeat => "heartbeat",
            EvidenceKind::Flow => "flow",
        }
    }
}

/// "The IP (the key this value is stored under) was `workload` during [from, to)".
///
/// The sort order (see the `Ord` impl) is the order in the arrangement: all assignment claims
/// of an IP first, then the exporter claims (heartbeats and flows together) by start time,
/// which lets a lookup seek straight to the exporter claims near an instant.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Claim {
    /// Where the claim comes from.
    pub kind: EvidenceKind,
    /// Start of the range.
    pub from: Time,
    /// End of the range (exclusive); [`OPEN`] for an assignment not yet ended.
    pub to: Time,
    /// The owner.
    pub workload: Workload,
}

impl Claim {
    fn sort_key(&self) -> (bool, Time, Time, EvidenceKind, &Workload) {
        (self.kind != EvidenceKind::Assignment, self.from, self.to, self.kind, &self.workload)
    }
}

impl Ord for Claim {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.sort_key().cmp(&other.sort_key())
    }
}

impl PartialOrd for Claim {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// The `to` of a claim whose end is not known yet.
pub const OPEN: Time = Time::MAX;

/// Which side opened a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Direction {
    /// Not known.
    Unknown,
    /// The local end connected out.
    Client,
    /// The local end accepted.
    Server,
}

/// One TCP flow as its exporter reported it, validated.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct FlowRecord {
    /// Stable id (a hash of exporter, 5-tuple, direction and start), for deduplication.
    pub id: u64,
    /// The exporter that reported the flow.
    pub exporter: Workload,
    /// Local address.
    pub local_ip: Ip,
    /// Local port.
    pub local_port: u16,
    /// Remote address: the one to attribute.
    pub remote_ip: Ip,
    /// Remote port.
    pub remote_port: u16,
    /// Which side opened.
    pub direction: Direction,
    /// Established at.
    pub start: Time,
    /// Closed at (or window end for an open slice).
    pub end: Time,
    /// Counters as reported.
    pub counters: Counters,
    /// The local workload, as the exporter attributed it.
    pub local_workload: Option<Workload>,
    /// True for the slice of a flow still open.
    pub open: bool,
}

/// Per-flow counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Counters {
    /// Payload bytes sent.
    pub bytes_sent: u64,
    /// Payload bytes received.
    pub bytes_received: u64,
    /// Segments sent.
    pub segments_sent: u64,
    /// Segments received.
    pub segments_received: u64,
    /// Retransmitted segments.
    pub retransmits: u32,
    /// Smoothed RTT, microseconds.
    pub srtt_us: u32,
}

/// Why a flow's remote end was left unattributed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Reason {
    /// No evidence of any owner at the flow's start.
    NoOwner,
    /// Two or more workloads claim the IP at the flow's start.
    Conflict,
    /// One owner at the start, but an ownership boundary (or another claimant) lies within the
    /// clock-skew guard band around it.
    NearBoundary,
    /// The remote address is outside the configured fleet CIDRs.
    External,
    /// The flow started so long before it could be looked up that the evidence for its start
    /// has passed the retention horizon.
    EvidenceExpired,
}

impl Reason {
    /// All reasons, for reports.
    pub const ALL: [Reason; 5] =
        [Reason::NoOwner, Reason::Conflict, Reason::NearBoundary, Reason::External, Reason::EvidenceExpired];

    /// snake_case name, as used in output and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Reason::NoOwner => "no_owner",
            Reason::Conflict => "conflict",
            Reason::NearBoundary => "near_boundary",
            Reason::External => "external",
            Reason::EvidenceExpired => "evidence_expired",
        }
    }
}

/// The verdict on a flow's remote end.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Attribution {
    /// The remote end was this workload, on this evidence.
    Workload {
        /// The owner.
        workload: Workload,
        /// The kind of evidence that decided it.
        evidence: EvidenceKind,
    },
    /// Left unattributed, for this reason.
    Unattributed(Reason),
}

/// A flow with its remote end attributed (or not).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AttributedFlow {
    /// The flow as reported.
    pub flow: FlowRecord,
    /// The verdict on its remote end.
    pub remote: Attribution,
}
