//! The small value types every part of the attribution job shares: addresses, times, and the
//! vocabulary of verdicts (what evidence a verdict rests on, why a flow is unattributed).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

/// Event time: wall-clock nanoseconds since the Unix epoch (the dataflow's timestamp too).
pub type Time = u64;

/// An IPv4 or IPv6 address, stored as 128 bits (IPv4 as an IPv4-mapped IPv6 address) so that
/// both families share one key type and one index. The wire bytes a flow was reported with are
/// kept separately (see [`crate::records::FlowRow`]): this is the *identity* of an address, not
/// its reported form.
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

    /// Reads the wire form of an address (4 or 16 raw bytes); anything else is `None`.
    pub fn from_wire(bytes: &[u8]) -> Option<Self> {
        match bytes.len() {
            4 => {
                let v4 = u32::from_be_bytes(bytes.try_into().ok()?);
                Some(Ip((0xffff_u128 << 32) | u128::from(v4)))
            }
            16 => Some(Ip(u128::from_be_bytes(bytes.try_into().ok()?))),
            _ => None,
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

    /// Which of `peers` workers holds this address's evidence and looks up flows to it. The same
    /// function routes claims and flows, which is what lets each worker answer only for its own
    /// share of the addresses (nothing is broadcast but assignment sources' promises).
    pub fn worker(self, peers: usize) -> usize {
        // A 128-to-64-bit mix (the multiply-xorshift of splitmix64 over both halves); any fixed
        // function would do, it only has to be the same in every process.
        let mut x = (self.0 as u64) ^ ((self.0 >> 64) as u64).rotate_left(29);
        x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        x ^= x >> 31;
        (x % peers.max(1) as u64) as usize
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

/// What an attribution rests on, strongest first in [`EvidenceKind::rank`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum EvidenceKind {
    /// An ownership heartbeat from the owner's own exporter (whole IP, or one port of it).
    Heartbeat,
    /// A flow the owner's own exporter reported with this address as its local end.
    Flow,
    /// IP assignment events from an address manager (lower trust: used only where no exporter
    /// evidence touches the guard band, and only as far as the source vouched).
    Assignment,
    /// The other end's own record of this very connection (the mirrored 4-tuple, starts within
    /// the guard band): first-hand, even on a shared address.
    Peer,
}

impl EvidenceKind {
    /// Lower-case name, as used in output and metrics.
    pub fn name(self) -> &'static str {
        match self {
            EvidenceKind::Heartbeat => "heartbeat",
            EvidenceKind::Flow => "flow",
            EvidenceKind::Assignment => "assignment",
            EvidenceKind::Peer => "peer",
        }
    }

    /// Which kind a verdict names when several kinds of the winner's evidence cover the band
    /// (lower is stronger): a heartbeat is an explicit statement of ownership, a flow's local
    /// end an implicit one, an assignment a third party's.
    pub fn rank(self) -> u8 {
        match self {
            EvidenceKind::Peer => 0,
            EvidenceKind::Heartbeat => 1,
            EvidenceKind::Flow => 2,
            EvidenceKind::Assignment => 3,
        }
    }

    /// The kind stored as a byte (records and the index keep it in one byte).
    pub fn to_u8(self) -> u8 {
        self as u8
    }

    /// The kind back from [`EvidenceKind::to_u8`].
    pub fn from_u8(b: u8) -> Option<Self> {
        Some(match b {
            0 => EvidenceKind::Heartbeat,
            1 => EvidenceKind::Flow,
            2 => EvidenceKind::Assignment,
            3 => EvidenceKind::Peer,
            _ => return None,
        })
    }
}

/// Why a flow's remote end was left unattributed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Reason {
    /// No evidence of any owner around the flow's start.
    NoOwner,
    /// Two or more workloads claim the address (or two peers name different workloads).
    Conflict,
    /// One owner at the start, but an ownership boundary (or another claimant) lies within the
    /// clock-skew guard band around it.
    NearBoundary,
    /// The remote address is outside the configured fleet blocks.
    External,
    /// The flow started so long before it could be looked up that the evidence for its start
    /// has passed the retention horizon.
    EvidenceExpired,
    /// The address is shared by several workloads (evidence scoped to other ports of it) and
    /// nothing vouches for this port.
    SharedIp,
    /// The address's last assignment lies before a gap in its source's promise (a lost, late or
    /// silent assignment source), so it is not trusted at the flow's start.
    SourceGap,
}

impl Reason {
    /// All reasons, for reports.
    pub const ALL: [Reason; 7] = [
        Reason::NoOwner,
        Reason::Conflict,
        Reason::NearBoundary,
        Reason::External,
        Reason::EvidenceExpired,
        Reason::SharedIp,
        Reason::SourceGap,
    ];

    /// snake_case name, as used in output and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Reason::NoOwner => "no_owner",
            Reason::Conflict => "conflict",
            Reason::NearBoundary => "near_boundary",
            Reason::External => "external",
            Reason::EvidenceExpired => "evidence_expired",
            Reason::SharedIp => "shared_ip",
            Reason::SourceGap => "source_gap",
        }
    }

    /// The reason back from its [`name`](Reason::name).
    pub fn from_name(name: &str) -> Option<Self> {
        Reason::ALL.into_iter().find(|r| r.name() == name)
    }
}

/// What a piece of local ownership evidence vouches for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Scope {
    /// The whole address.
    Ip,
    /// Only this port of the address (the address is shared).
    Port(u16),
}

impl Scope {
    /// The port a claim is stored under: 0 for the whole address (no TCP socket has port 0).
    pub fn port_key(self) -> u16 {
        match self {
            Scope::Ip => 0,
            Scope::Port(p) => p,
        }
    }
}
