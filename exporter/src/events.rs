//! Closed flows from the ring buffer, as typed [`FlowEvent`]s.
//!
//! Why a ring buffer: one record per closed connection, in order, without a
//! per-CPU buffer to size, and the kernel counts every record it could not
//! reserve (see [`crate::counters`]), so loss is visible rather than silent.
//!
//! The same [`FlowEvent`] type describes still-open connections read from the
//! open-connection map ([`crate::open`]); [`FlowEvent::is_open`] tells them
//! apart.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::time::Duration;

use aya::maps::{MapData, RingBuf};
use serde::{Serialize, Serializer};

use crate::abi::{self, RawFlowEvent};
use crate::clock::{TaiClock, UnixNanos};

/// Which side opened the connection, seen from the local socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Active open (`connect`): SYN_SENT -> ESTABLISHED.
    Client,
    /// Passive open (accepted): SYN_RECV -> ESTABLISHED.
    Server,
    /// The handshake was not observed (the socket predates the probe).
    Unknown,
}

/// Which map the local workload id came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkloadSource {
    /// The (local address, local port) map.
    AddrPort,
    /// The per-address map.
    Addr,
}

/// The `FLOW_F_*` bits of a flow, with named accessors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct FlowFlags(pub u32);

impl FlowFlags {
    const NAMES: [(u32, &'static str); 8] = [
        (abi::FLOW_F_NEVER_ESTABLISHED, "never_established"),
        (abi::FLOW_F_NO_OPEN_RECORD, "no_open_record"),
        (abi::FLOW_F_WORKLOAD_BY_PORT, "workload_by_port"),
        (abi::FLOW_F_WORKLOAD_BY_ADDR, "workload_by_addr"),
        (abi::FLOW_F_FIN_RECEIVED, "fin_received"),
        (abi::FLOW_F_OPEN, "open"),
        (abi::FLOW_F_STALE, "stale"),
        (abi::FLOW_F_SEEDED, "seeded"),
    ];

    /// The connection closed before ESTABLISHED (refused, timed out, aborted).
    pub const fn never_established(self) -> bool {
        self.0 & abi::FLOW_F_NEVER_ESTABLISHED != 0
    }
    /// The probe did not see the connection open (it predates the probe, or
    /// the open map was full): start time and direction are unknown.
    pub const fn no_open_record(self) -> bool {
        self.0 & abi::FLOW_F_NO_OPEN_RECORD != 0
    }
    /// The peer's FIN was received.
    pub const fn fin_received(self) -> bool {
        self.0 & abi::FLOW_F_FIN_RECEIVED != 0
    }
    /// The record describes a connection that is still open.
    pub const fn open(self) -> bool {
        self.0 & abi::FLOW_F_OPEN != 0
    }
    /// The last refresh could not confirm the socket; counters may lag.
    pub const fn stale(self) -> bool {
        self.0 & abi::FLOW_F_STALE != 0
    }
    /// The probe did not see the handshake (the socket was seeded from the kernel's sockets,
    /// or completed its handshake while no probe was attached): `opened`/`established` are
    /// when the probe first saw it.
    pub const fn seeded(self) -> bool {
        self.0 & abi::FLOW_F_SEEDED != 0
    }
    /// The start of the connection was not observed: [`Self::seeded`] or
    /// [`Self::no_open_record`].
    pub const fn start_unobserved(self) -> bool {
        self.0 & (abi::FLOW_F_SEEDED | abi::FLOW_F_NO_OPEN_RECORD) != 0
    }
    /// Names of the bits that are set, in bit order; unknown bits are ignored.
    pub fn names(self) -> impl Iterator<Item = &'static str> {
        Self::NAMES.into_iter().filter(move |(bit, _)| self.0 & bit != 0).map(|(_, n)| n)
    }
}

impl Serialize for FlowFlags {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.names())
    }
}

/// One TCP connection seen from one local socket: a loopback connection
/// yields two, the client's and the server's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FlowEvent {
    /// Socket cookie: unique per socket until reboot; identifies the flow
    /// across open snapshots and its close event.
    pub cookie: u64,
    /// Local address and port.
    pub local: SocketAddr,
    /// Remote address and port.
    pub remote: SocketAddr,
    /// Who opened the connection.
    pub direction: Direction,
    /// First handshake state (SYN_SENT / SYN_RECV), if observed.
    pub opened: Option<UnixNanos>,
    /// ESTABLISHED, if reached.
    pub established: Option<UnixNanos>,
    /// CLOSE; `None` while open.
    pub closed: Option<UnixNanos>,
    /// Payload bytes sent, retransmissions excluded.
    pub bytes_sent: u64,
    /// Payload bytes received (the peer's FIN excluded).
    pub bytes_received: u64,
    /// Payload bytes retransmitted.
    pub bytes_retrans: u64,
    /// Segments sent, including pure ACKs and retransmissions.
    pub segs_out: u32,
    /// Segments received.
    pub segs_in: u32,
    /// Retransmitted segments.
    pub total_retrans: u32,
    /// Smoothed round-trip time, microseconds (0 before the first sample).
    pub srtt_us: u32,
    /// cgroup v2 id of the socket (the creating process's cgroup; an accepted
    /// socket inherits its listener's).
    pub cgroup_id: u64,
    /// Inode number of the socket's network namespace.
    pub netns_ino: u32,
    /// Local workload from the assignment maps.
    pub workload_id: Option<u32>,
    /// Which assignment map matched.
    pub workload_source: Option<WorkloadSource>,
    /// Raw flags.
    pub flags: FlowFlags,
    /// TCP state (include/net/tcp_states.h) before the close, or at refresh
    /// for an open flow.
    pub tcp_state: u8,
    /// `sk_err` at close: e.g. ECONNREFUSED (111), ETIMEDOUT (110),
    /// ECONNRESET (104). `None` when 0.
    pub error: Option<i32>,
}

impl FlowEvent {
    /// Still open (from an open-connection snapshot).
    pub const fn is_open(&self) -> bool {
        self.flags.open()
    }

    /// Closed before ESTABLISHED.
    pub const fn never_established(&self) -> bool {
        self.flags.never_established()
    }

    /// Start of the flow: ESTABLISHED, or the first handshake state for a
    /// connection that never established.
    pub fn start(&self) -> Option<UnixNanos> {
        self.established.or(self.opened)
    }

    /// Decode a raw record, converting times with `clock`.
    pub fn from_raw(raw: &RawFlowEvent, clock: &TaiClock) -> Result<Self, DecodeError> {
        let (local_ip, remote_ip) = match raw.family {
            abi::AF_INET => (
                decode_v4(raw.local_addr).ok_or(DecodeError::NotV4Mapped)?,
                decode_v4(raw.remote_addr).ok_or(DecodeError::NotV4Mapped)?,
            ),
            abi::AF_INET6 => (IpAddr::V6(Ipv6Addr::from(raw.local_addr)), IpAddr::V6(Ipv6Addr::from(raw.remote_addr))),
            other => return Err(DecodeError::Family(other)),
        };
        let direction = match raw.direction {
            abi::FLOW_DIR_CLIENT => Direction::Client,
            abi::FLOW_DIR_SERVER => Direction::Server,
            abi::FLOW_DIR_UNKNOWN => Direction::Unknown,
            other => return Err(DecodeError::Direction(other)),
        };
        let flags = FlowFlags(raw.flags);
        let workload_source = if raw.workload_id == 0 {
            None
        } else if raw.flags & abi::FLOW_F_WORKLOAD_BY_PORT != 0 {
            Some(WorkloadSource::AddrPort)
        } else {
            Some(WorkloadSource::Addr)
        };
        Ok(Self {
            cookie: raw.cookie,
            local: SocketAddr::new(local_ip, raw.local_port),
            remote: SocketAddr::new(remote_ip, raw.remote_port),
            direction,
            opened: clock.to_unix(raw.opened_ns),
            established: clock.to_unix(raw.established_ns),
            closed: clock.to_unix(raw.closed_ns),
            bytes_sent: raw.bytes_sent,
            bytes_received: raw.bytes_received,
            bytes_retrans: raw.bytes_retrans,
            segs_out: raw.segs_out,
            segs_in: raw.segs_in,
            total_retrans: raw.total_retrans,
            srtt_us: raw.srtt_us,
            cgroup_id: raw.cgroup_id,
            netns_ino: raw.netns_ino,
            workload_id: (raw.workload_id != 0).then_some(raw.workload_id),
            workload_source,
            flags,
            tcp_state: raw.state,
            error: (raw.sk_err != 0).then_some(raw.sk_err),
        })
    }
}

fn decode_v4(addr: [u8; 16]) -> Option<IpAddr> {
    Ipv6Addr::from(addr).to_ipv4_mapped().map(IpAddr::V4)
}

/// Encode an address the way the kernel side stores it: 16 bytes, IPv4 (and
/// IPv4-mapped IPv6) as `::ffff:a.b.c.d`.
pub fn encode_addr(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// Normalise an address as flows report it: IPv4-mapped IPv6 becomes IPv4.
pub fn canonical_addr(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

/// Why a ring buffer record could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The record is not one `struct flow_event` (ABI mismatch).
    #[error("record of {0} bytes, expected {expected}", expected = std::mem::size_of::<RawFlowEvent>())]
    Length(usize),
    /// Unknown address family.
    #[error("unknown address family {0}")]
    Family(u16),
    /// `AF_INET` with an address that is not `::ffff:a.b.c.d`.
    #[error("AF_INET record whose address is not IPv4-mapped")]
    NotV4Mapped,
    /// Unknown direction code.
    #[error("unknown direction {0}")]
    Direction(u8),
}

/// Reader of the closed-flow ring buffer.
pub struct FlowEvents {
    ring: RingBuf<MapData>,
    clock: TaiClock,
    decode_errors: u64,
    last_decode_error: Option<DecodeError>,
}

impl std::fmt::Debug for FlowEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlowEvents")
            .field("clock", &self.clock)
            .field("decode_errors", &self.decode_errors)
            .finish_non_exhaustive()
    }
}

impl FlowEvents {
    pub(crate) fn new(ring: RingBuf<MapData>, clock: TaiClock) -> Self {
        Self { ring, clock, decode_errors: 0, last_decode_error: None }
    }

    /// Block until a record is available or `timeout` passes (a signal also
    /// ends the wait early). `Ok(true)` if records are ready.
    pub fn wait(&self, timeout: Duration) -> std::io::Result<bool> {
        crate::sys::poll_readable(self.ring.as_raw_fd(), timeout)
    }

    /// Decode every record available now into `out`; returns how many were
    /// added. Records that do not decode are counted
    /// ([`Self::decode_errors`]), not returned. Re-reads the TAI offset first.
    pub fn read_available(&mut self, out: &mut Vec<FlowEvent>) -> usize {
        self.read_at_most(out, usize::MAX)
    }

    /// Like [`Self::read_available`], but consumes at most `max` records, so
    /// a caller can bound the work it does per activation; the rest stay in
    /// the ring buffer (and [`Self::wait`] returns at once).
    pub fn read_at_most(&mut self, out: &mut Vec<FlowEvent>, max: usize) -> usize {
        // A failed clock read keeps the previous offset: stale by at most a
        // leap second, better than dropping events.
        let _ = self.clock.refresh();
        let before = out.len();
        let mut consumed = 0;
        while consumed < max {
            let Some(item) = self.ring.next() else { break };
            consumed += 1;
            let decoded = RawFlowEvent::from_bytes(&item)
                .ok_or(DecodeError::Length(item.len()))
                .and_then(|raw| FlowEvent::from_raw(&raw, &self.clock));
            match decoded {
                Ok(ev) => out.push(ev),
                Err(e) => {
                    self.decode_errors += 1;
                    self.last_decode_error = Some(e);
                }
            }
        }
        out.len() - before
    }

    /// Records that could not be decoded since the reader was created.
    pub const fn decode_errors(&self) -> u64 {
        self.decode_errors
    }

    /// The most recent decode error, for diagnostics.
    pub const fn last_decode_error(&self) -> Option<DecodeError> {
        self.last_decode_error
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn raw_v4() -> RawFlowEvent {
        RawFlowEvent {
            cookie: 42,
            opened_ns: 10_000_000_000,
            established_ns: 11_000_000_000,
            closed_ns: 12_000_000_000,
            family: abi::AF_INET,
            local_port: 5000,
            remote_port: 80,
            direction: abi::FLOW_DIR_CLIENT,
            local_addr: encode_addr(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))),
            remote_addr: encode_addr(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2))),
            workload_id: 7,
            flags: abi::FLOW_F_WORKLOAD_BY_PORT | abi::FLOW_F_FIN_RECEIVED,
            ..RawFlowEvent::default()
        }
    }

    #[test]
    fn decodes_v4_mapped_as_v4() {
        let ev = FlowEvent::from_raw(&raw_v4(), &TaiClock::with_offset_ns(1_000_000_000)).expect("valid record");
        assert_eq!(ev.local, "10.0.0.1:5000".parse().expect("addr"));
        assert_eq!(ev.remote, "10.0.0.2:80".parse().expect("addr"));
        assert_eq!(ev.direction, Direction::Client);
        assert_eq!(ev.opened, Some(UnixNanos(9_000_000_000)));
        assert_eq!(ev.start(), Some(UnixNanos(10_000_000_000)));
        assert_eq!(ev.closed, Some(UnixNanos(11_000_000_000)));
        assert_eq!(ev.workload_id, Some(7));
        assert_eq!(ev.workload_source, Some(WorkloadSource::AddrPort));
        assert!(ev.flags.fin_received() && !ev.is_open() && !ev.never_established());
        assert_eq!(ev.error, None);
    }

    #[test]
    fn decodes_v6_and_unobserved_times() {
        let mut raw = raw_v4();
        raw.family = abi::AF_INET6;
        raw.local_addr = encode_addr("fd00::1".parse().expect("addr"));
        raw.remote_addr = encode_addr("fd00::2".parse().expect("addr"));
        raw.established_ns = 0;
        raw.closed_ns = 0;
        raw.workload_id = 0;
        raw.direction = abi::FLOW_DIR_UNKNOWN;
        let ev = FlowEvent::from_raw(&raw, &TaiClock::with_offset_ns(0)).expect("valid record");
        assert_eq!(ev.local.ip(), "fd00::1".parse::<IpAddr>().expect("addr"));
        assert_eq!((ev.established, ev.closed), (None, None));
        assert_eq!(ev.start(), ev.opened);
        assert_eq!((ev.workload_id, ev.workload_source), (None, None));
        assert_eq!(ev.direction, Direction::Unknown);
    }

    #[test]
    fn rejects_bad_records() {
        let clock = TaiClock::with_offset_ns(0);
        let mut raw = raw_v4();
        raw.family = 1;
        assert_eq!(FlowEvent::from_raw(&raw, &clock), Err(DecodeError::Family(1)));
        let mut raw = raw_v4();
        raw.local_addr = encode_addr("fd00::1".parse().expect("addr"));
        assert_eq!(FlowEvent::from_raw(&raw, &clock), Err(DecodeError::NotV4Mapped));
        let mut raw = raw_v4();
        raw.direction = 3;
        assert_eq!(FlowEvent::from_raw(&raw, &clock), Err(DecodeError::Direction(3)));
    }

    #[test]
    fn address_encoding_round_trips() {
        let v4: IpAddr = "192.0.2.1".parse().expect("addr");
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().expect("addr");
        assert_eq!(encode_addr(v4), encode_addr(mapped));
        assert_eq!(canonical_addr(mapped), v4);
        let v6: IpAddr = "2001:db8::1".parse().expect("addr");
        assert_eq!(canonical_addr(v6), v6);
        assert_eq!(Ipv6Addr::from(encode_addr(v6)), "2001:db8::1".parse::<Ipv6Addr>().expect("addr"));
    }

    #[test]
    fn flags_serialize_as_names() {
        let f = FlowFlags(abi::FLOW_F_NEVER_ESTABLISHED | abi::FLOW_F_OPEN | (1 << 31));
        assert_eq!(f.names().collect::<Vec<_>>(), ["never_established", "open"]);
    }
}
