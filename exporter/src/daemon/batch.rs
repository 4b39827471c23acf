//! Turning one batch interval's flow events into an `ExporterBatch`.
//!
//! The wire schema's promise: a batch for `[from, to)` holds every flow that ended before `to`
//! (or an earlier batch does), and nothing that ends after `to`. So the window's end is taken
//! *before* the ring buffer is drained for the last time; any flow that closed after it is
//! carried into the next batch. Connections still open at `to` are reported as slices
//! (`open = true`, ending at `to`, counters so far), so long-lived flows are seen while they
//! live; every slice and the final record share the flow's `connection_id` (a hash of the
//! kernel's socket cookie and the boot id: the same across exporter restarts), hence its id.
//!
//! Each batch carries the exporter's `incarnation` (random, chosen at start); `seq` restarts
//! at 0 with every incarnation. A flow whose start the exporter did not see (it predates the
//! exporter) says so (`start_unobserved`) and starts when it was first seen. A connection
//! that never established carries its socket error (`connect_error`) and starts and ends when
//! it failed. The scope of each flow's local workload and the heartbeats follow the
//! shared-IP rule of [`super::shared`]. A connection whose local address left the host ends
//! where the address was last known here ([`super::departed`]).

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;

use flowmap_schema::{self as wire, ExporterBatch, Flow, FlowIdHasher, Scope, SCHEMA_VERSION};
use serde::Serialize;

use super::departed::{Departures, Fate};
use super::local::{Attributor, Source};
use super::nat::Nat;
use super::shared::{self, SharedIps};
use crate::events::{Direction, FlowEvent};
use crate::sockets::Listener;

/// The error a connection that never established reports when the socket had none: the
/// application gave up (closed it during the handshake), which is what ECONNABORTED means.
pub const ABANDONED_CONNECT_ERROR: u32 = libc::ECONNABORTED as u32;

/// One flow as the stdout and file sinks print it (one JSON object per line).
#[derive(Clone, Debug, Serialize)]
pub struct FlowLine {
    /// Always `flow`.
    pub kind: &'static str,
    /// Exporter id.
    pub exporter: String,
    /// The exporter's incarnation (random per start).
    pub incarnation: u64,
    /// Batch sequence number (within the incarnation).
    pub seq: u64,
    /// The flow's id (`flowmap_schema::flow_id`): the same in every slice and at close, and
    /// across exporter restarts.
    pub flow_id: u64,
    /// The exporter's connection id (0: not stated).
    pub connection_id: u64,
    /// Local address.
    pub local_ip: IpAddr,
    /// Local port.
    pub local_port: u16,
    /// Remote address.
    pub remote_ip: IpAddr,
    /// Remote port.
    pub remote_port: u16,
    /// `client`, `server` or `unknown`.
    pub direction: &'static str,
    /// Established (or first handshake state), ns since the epoch.
    pub start_ns: u64,
    /// Closed, or the window end for an open slice.
    pub end_ns: u64,
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
    /// Local workload, when attributed.
    pub local_workload: Option<String>,
    /// How it was attributed: `port_assignment`, `ip_assignment`, `cgroup_rule`,
    /// `host_identity`.
    pub local_source: Option<&'static str>,
    /// What the local workload vouches for: `ip` (the whole local IP) or `port`.
    pub local_scope: Option<&'static str>,
    /// Still open (a slice).
    pub open: bool,
    /// The exporter did not see the connection start: `start_ns` is when it first saw it.
    pub start_unobserved: bool,
    /// Closed before it was established (refused, timed out, abandoned).
    pub never_established: bool,
    /// For a connection that never established: its socket error (111 refused, 110 timed
    /// out, 103 abandoned); 0 otherwise.
    pub connect_error: u32,
    /// The socket error at close, if any (also for established connections: 104 reset).
    pub error: Option<i32>,
    /// The socket's cgroup id.
    pub cgroup_id: u64,
}

/// A built batch: the wire form, and the same flows as lines.
#[derive(Debug)]
pub struct Built {
    /// The batch.
    pub batch: ExporterBatch,
    /// Its flows, for the JSON sinks.
    pub lines: Vec<FlowLine>,
}

/// What one batch is built from.
#[derive(Debug)]
pub struct BatchInput<'a> {
    /// The window's end, ns since the epoch (taken before the last ring buffer drain).
    pub to: u64,
    /// Flows closed since the last batch.
    pub closed: Vec<FlowEvent>,
    /// The open-connection snapshot.
    pub open: &'a [FlowEvent],
    /// The listening sockets.
    pub listeners: &'a [Listener],
    /// The host's own addresses (`None`: they could not be read).
    pub host_addresses: Option<&'a [IpAddr]>,
    /// What conntrack shows of NAT on the host's addresses ([`super::nat`]); `None` when that is
    /// not known (the table exists but cannot be read): then no host address is vouched for as
    /// a whole.
    pub nat: Option<&'a Nat>,
}

/// The listening sockets of one batch by (network namespace, port): every server-side flow
/// looks up its port's (a scan over all of them per flow would cost the exporter's hot path).
type ListenersByPort<'a> = HashMap<(u32, u16), Vec<&'a Listener>>;

/// The local workload of `ev` (`local`, as [`Attributor::local`] found it), unless the
/// listeners that could have accepted it are served by another workload.
///
/// An accepted socket is charged to its listener's cgroup, which is the cgroup of whoever
/// created the listener; the tasks that accept on it may be elsewhere (socket activation, a
/// fork whose child moved to another cgroup, a process moved while its listener lives). Found
/// by a fresh user: such connections were reported as the creator's workload, and the job
/// named it for connections another workload served. Assignments are the operator's word and
/// stand; a workload from a cgroup rule or the host identity stands only if every listener on
/// the flow's local port (its address, or a wildcard) in its namespace is served by it.
fn served_as(
    attributor: &mut Attributor,
    ev: &FlowEvent,
    listeners: &ListenersByPort<'_>,
    local: Option<(Arc<str>, Source)>,
) -> Option<(Arc<str>, Source)> {
    let (w, source) = local?;
    if ev.direction != Direction::Server || !matches!(source, Source::Cgroup | Source::Host) {
        return Some((w, source));
    }
    let ip = ev.local.ip();
    let covers =
        |l: &&&Listener| l.local.ip() == ip || (l.local.ip().is_unspecified() && (l.local.is_ipv6() || ip.is_ipv4()));
    let on_port = listeners.get(&(ev.netns_ino, ev.local.port())).map_or(&[][..], Vec::as_slice);
    for l in on_port.iter().filter(covers) {
        if attributor.listener(l, ip).is_none_or(|(served, _)| served != w) {
            return None;
        }
    }
    Some((w, source))
}

/// A stable, non-zero id for the socket `cookie` on the boot whose id hashes to `boot`.
pub fn connection_id(boot: u64, cookie: u64) -> u64 {
    // splitmix64's finaliser over the boot hash and the cookie: cookies are small counters,
    // so they are spread out before mixing.
    let mut h = boot ^ cookie.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^= h >> 31;
    h.max(1)
}

/// FNV-1a of the kernel's boot id (`/proc/sys/kernel/random/boot_id`), or `None` when it cannot
/// be read (connection ids are then not stated: a cookie alone repeats across reboots).
pub fn boot_hash() -> Option<u64> {
    let id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let id = id.trim();
    if id.is_empty() {
        return None;
    }
    Some(id.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)))
}

/// A random, non-zero incarnation number (from the kernel's random source).
pub fn random_incarnation() -> std::io::Result<u64> {
    use std::io::Read;
    let mut file = std::fs::File::open("/dev/urandom")?;
    loop {
        let mut bytes = [0u8; 8];
        file.read_exact(&mut bytes)?;
        let n = u64::from_ne_bytes(bytes);
        if n != 0 {
            return Ok(n);
        }
    }
}

/// Numbers batches and keeps the window contiguous.
#[derive(Debug)]
pub struct Batcher {
    exporter_id: String,
    ids: FlowIdHasher,
    incarnation: u64,
    boot: Option<u64>,
    seq: u64,
    from: u64,
    carry: Vec<FlowEvent>,
    lines: bool,
    /// The heartbeats that held at the previous window's end (address, workload, port).
    beaten: HashSet<(Vec<u8>, String, u32)>,
    /// Addresses that left the host, and the connections ended because of it.
    departures: Departures,
}

/// One flow to report, with its local workload resolved.
struct Resolved<'a> {
    ev: &'a FlowEvent,
    end: u64,
    open: bool,
    local: Option<(Arc<str>, Source)>,
}

impl Batcher {
    /// Batches of `exporter_id` in incarnation `incarnation`, the first window starting at
    /// `from` (ns since the epoch); `boot`: the boot id's hash ([`boot_hash`]), for connection
    /// ids; `lines`: also produce the JSON-line form (only the stdout and file sinks need it).
    pub fn new(exporter_id: String, incarnation: u64, boot: Option<u64>, from: u64, lines: bool) -> Self {
        let ids = FlowIdHasher::new(&exporter_id);
        Batcher {
            exporter_id,
            ids,
            incarnation,
            boot,
            seq: 0,
            from,
            carry: Vec::new(),
            lines,
            beaten: HashSet::new(),
            departures: Departures::default(),
        }
    }

    /// Builds the batch for `[from, to)` from the flows closed since the last batch and the
    /// connections open now; flows closed at or after `to`, and connections first seen at or
    /// after it, wait for the next batch.
    pub fn build(&mut self, input: BatchInput<'_>, attributor: &mut Attributor, shared: &mut SharedIps) -> Built {
        let to = input.to.max(self.from + 1);
        let mut keep = Vec::new();
        let mut closed = std::mem::take(&mut self.carry);
        closed.extend(input.closed);
        closed.retain(|ev| {
            let late = ev.closed.is_some_and(|t| t.0 >= to);
            if late {
                keep.push(ev.clone());
            }
            !late
        });
        self.carry = keep;

        self.departures.window(to, input.host_addresses);
        let host_addresses = input.host_addresses.unwrap_or(&[]);
        let host_netns = attributor.host_netns();

        // Resolve every flow's workload and learn which IPs are shared before deciding any scope.
        let rules = attributor.has_rules();
        let mut flows: Vec<Resolved<'_>> = Vec::with_capacity(closed.len() + input.open.len());
        let open = input.open.iter().filter(|e| e.established.is_some_and(|t| t.0 < to));
        // Runs of flows on one (IP, namespace) are common (a busy server): observed once a run.
        let mut last: Option<(IpAddr, u32, bool)> = None;
        let mut by_port: ListenersByPort<'_> = HashMap::new();
        for l in input.listeners {
            by_port.entry((l.netns_ino, l.local.port())).or_default().push(l);
        }
        for (ev, mut is_open) in closed.iter().map(|e| (e, false)).chain(open.map(|e| (e, true))) {
            let mut end = if is_open { to - 1 } else { ev.closed.map_or(to - 1, |t| t.0) };
            let host = host_netns.is_none_or(|n| n == ev.netns_ino);
            match self.departures.fate(ev, Self::start(ev, end), end, host, to) {
                Fate::Keep => {}
                Fate::EndAt(t) => (end, is_open) = (t, false),
                Fate::Drop => continue,
            }
            let local = attributor.local(ev);
            let local = served_as(attributor, ev, &by_port, local);
            let by_rule = rules
                && (matches!(local, Some((_, Source::Cgroup))) || attributor.cgroup_workload(ev.cgroup_id).is_some());
            let seen = (ev.local.ip(), ev.netns_ino, by_rule);
            if last != Some(seen) {
                shared.observe(seen.0, seen.1, seen.2, to);
                last = Some(seen);
            }
            flows.push(Resolved { ev, end, open: is_open, local });
        }
        shared.observe_port_assignments(attributor.by_port.keys(), to);
        match input.nat {
            Some(nat) => {
                shared.observe_forwarded(&nat.forwarded, to);
                shared.observe_nat_shared(&nat.masquerading, to);
            }
            None => shared.observe_nat_shared(host_addresses, to),
        }
        // A listener is a rule's socket if its own cgroup or its holder's is a rule's.
        let mut by_rule = |l: &Listener| {
            rules
                && (attributor.cgroup_workload(l.cgroup_id).is_some()
                    || attributor.cgroup_workload(l.holder_cgroup_id).is_some())
        };
        for l in input.listeners.iter().filter(|l| !l.local.ip().is_unspecified()) {
            let by_rule = by_rule(l);
            shared.observe(l.local.ip(), l.netns_ino, by_rule, to);
        }
        for l in input.listeners.iter().filter(|l| l.local.ip().is_unspecified()) {
            let by_rule = by_rule(l);
            for ip in shared::listener_ips(l, shared, host_netns, host_addresses, to) {
                shared.observe(ip, l.netns_ino, by_rule, to);
            }
        }

        let mut wire_flows = Vec::with_capacity(flows.len());
        let mut lines = Vec::new();
        for f in &flows {
            let flow = self.flow(f, shared, to);
            if self.lines {
                lines.push(self.line(f, &flow));
            }
            wire_flows.push(flow);
        }
        // A heartbeat claims its whole window, but the state behind it is read at the window's
        // end: only what held at the previous window's end too is claimed, so an address or a
        // listener that arrived during the window is claimed from the next one (found by a
        // fresh user: a pod address that moved here mid-window was claimed for the time before
        // it came, and a flow to its previous holder was attributed here).
        let now = shared::heartbeats(attributor, shared, input.listeners, host_addresses, self.from, to);
        let key = |b: &wire::Ownership| (b.ip.clone(), b.workload.clone(), b.port);
        let heartbeats = now.iter().filter(|b| self.beaten.contains(&key(b))).cloned().collect();
        self.beaten = now.iter().map(key).collect();
        let batch = ExporterBatch {
            schema_version: SCHEMA_VERSION,
            exporter_id: self.exporter_id.clone(),
            seq: self.seq,
            window_from_ns: self.from,
            window_to_ns: to,
            flows: wire_flows,
            heartbeats,
            assignments: Vec::new(),
            incarnation: self.incarnation,
        };
        self.seq += 1;
        self.from = to;
        Built { batch, lines }
    }

    /// The reported start of `ev`, a record ending at `end`: a connection that never
    /// established starts and ends when it failed; one whose start was not seen starts when the
    /// exporter first saw it (for a close without an open record: at the close), never at a
    /// made-up time.
    fn start(ev: &FlowEvent, end: u64) -> u64 {
        if ev.never_established() {
            end
        } else {
            ev.start().map_or(end, |t| t.0).min(end)
        }
    }

    fn flow(&self, f: &Resolved<'_>, shared: &SharedIps, to: u64) -> Flow {
        let ev = f.ev;
        let never = ev.never_established();
        let start = Self::start(ev, f.end);
        let direction = match ev.direction {
            Direction::Client => wire::Direction::Client,
            Direction::Server => wire::Direction::Server,
            Direction::Unknown => wire::Direction::Unspecified,
        };
        let (workload, scope, source) = match &f.local {
            Some((w, source)) => {
                let whole = source.can_claim_ip() && !shared.is_shared(ev.local.ip(), to);
                (w.to_string(), if whole { Scope::Ip } else { Scope::Port }, source.wire())
            }
            None => (String::new(), Scope::Unspecified, wire::WorkloadSource::Unspecified),
        };
        Flow {
            local_ip: wire::ip_to_bytes(ev.local.ip()),
            local_port: u32::from(ev.local.port()),
            remote_ip: wire::ip_to_bytes(ev.remote.ip()),
            remote_port: u32::from(ev.remote.port()),
            direction: direction as i32,
            start_ns: start,
            end_ns: f.end,
            bytes_sent: ev.bytes_sent,
            bytes_received: ev.bytes_received,
            segments_sent: u64::from(ev.segs_out),
            segments_received: u64::from(ev.segs_in),
            retransmits: ev.total_retrans,
            srtt_us: ev.srtt_us,
            local_workload: workload,
            open: f.open,
            local_scope: scope as i32,
            local_source: source as i32,
            start_unobserved: ev.flags.start_unobserved(),
            connection_id: self.boot.map_or(0, |boot| connection_id(boot, ev.cookie)),
            connect_error: if never {
                ev.error.and_then(|e| u32::try_from(e).ok()).filter(|e| *e != 0).unwrap_or(ABANDONED_CONNECT_ERROR)
            } else {
                0
            },
        }
    }

    fn line(&self, f: &Resolved<'_>, flow: &Flow) -> FlowLine {
        let ev = f.ev;
        FlowLine {
            kind: "flow",
            exporter: self.exporter_id.clone(),
            incarnation: self.incarnation,
            seq: self.seq,
            flow_id: if flow.connection_id != 0 {
                self.ids.connection(flow.connection_id)
            } else {
                self.ids.id(
                    &flow.local_ip,
                    flow.local_port,
                    &flow.remote_ip,
                    flow.remote_port,
                    flow.direction,
                    flow.start_ns,
                )
            },
            connection_id: flow.connection_id,
            local_ip: ev.local.ip(),
            local_port: ev.local.port(),
            remote_ip: ev.remote.ip(),
            remote_port: ev.remote.port(),
            direction: match ev.direction {
                Direction::Client => "client",
                Direction::Server => "server",
                Direction::Unknown => "unknown",
            },
            start_ns: flow.start_ns,
            end_ns: flow.end_ns,
            bytes_sent: flow.bytes_sent,
            bytes_received: flow.bytes_received,
            segments_sent: flow.segments_sent,
            segments_received: flow.segments_received,
            retransmits: flow.retransmits,
            srtt_us: flow.srtt_us,
            local_workload: f.local.as_ref().map(|(w, _)| w.to_string()),
            local_source: f.local.as_ref().map(|(_, s)| s.name()),
            local_scope: match Scope::try_from(flow.local_scope) {
                Ok(Scope::Ip) => Some("ip"),
                Ok(Scope::Port) => Some("port"),
                _ => None,
            },
            open: f.open,
            start_unobserved: flow.start_unobserved,
            never_established: ev.never_established(),
            connect_error: flow.connect_error,
            error: ev.error,
            cgroup_id: ev.cgroup_id,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by a fresh user: an address that arrived during a window was heartbeaten for the
    /// whole window. A heartbeat is sent for a window only if it held at the previous window's
    /// end too.
    #[test]
    fn an_address_that_arrives_mid_window_is_claimed_from_the_next_window() {
        use crate::daemon::local::CgroupIndex;
        const S: u64 = 1_000_000_000;
        let mut attributor = Attributor::new(Vec::new(), Some("host".into()), Some(1), CgroupIndex::default());
        let mut shared = SharedIps::new(60 * S);
        let mut batcher = Batcher::new("h".into(), 1, None, 0, false);
        let (old, new): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let mut window = |to: u64, addresses: &[IpAddr]| {
            let none = Nat::default();
            let input = BatchInput {
                to,
                closed: Vec::new(),
                open: &[],
                listeners: &[],
                host_addresses: Some(addresses),
                nat: Some(&none),
            };
            let batch = batcher.build(input, &mut attributor, &mut shared).batch;
            let mut beaten: Vec<IpAddr> =
                batch.heartbeats.iter().map(|h| wire::ip_from_bytes(&h.ip).unwrap()).collect();
            beaten.sort();
            beaten
        };
        assert_eq!(window(10 * S, &[old]), Vec::<IpAddr>::new(), "nothing known at the first window's start");
        assert_eq!(window(20 * S, &[old, new]), vec![old], "new arrived during [10, 20)");
        assert_eq!(window(30 * S, &[old, new]), vec![old, new]);
        assert_eq!(window(40 * S, &[new]), vec![new], "old left during [30, 40): not claimed for it");
    }

    #[test]
    fn connection_ids_are_stable_non_zero_and_differ_by_boot_and_cookie() {
        assert_eq!(connection_id(1, 2), connection_id(1, 2));
        assert_ne!(connection_id(1, 2), connection_id(1, 3));
        assert_ne!(connection_id(1, 2), connection_id(4, 2));
        assert!((0..10_000).all(|c| connection_id(0, c) != 0));
        let here = boot_hash().expect("this kernel has a boot id");
        assert_eq!(boot_hash(), Some(here));
    }

    #[test]
    fn incarnations_are_random_and_non_zero() {
        let a = random_incarnation().unwrap();
        let b = random_incarnation().unwrap();
        assert!(a != 0 && b != 0 && a != b);
    }
}
