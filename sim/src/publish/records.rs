//! Flow records, as the real exporter produces them, each with its truth.
//!
//! Every connection has a client side and, when it was established and its server has an
//! exporter, a server side. A side is reported by each incarnation of its host's exporter that
//! sees it:
//! - a **slice** (`open = true`, `end_ns` = the window end, counters so far) in every window
//!   at whose end it is still open, and its **final record** in the window where it closes;
//!   all share the flow id (the exporter's `connection_id`, stable across restarts);
//! - a connection open across a restart keeps its start; one that began while the exporter
//!   was down, or before its first start, is reported with `start_unobserved` and the start
//!   (and direction) it could observe: when the exporter came up, direction unspecified;
//! - one that closed while the exporter was down has no final record; one that began and
//!   ended while it was down has no record at all (both are counted in the [`Summary`]);
//! - a failed attempt (refused, timed out) is one final record, start = end, `connect_error`
//!   set, from the client side only.

use std::net::IpAddr;
use std::sync::Arc;

use flowmap_schema::{self as wire, Direction, Flow, FlowIdHasher};

use super::exporters::{skewed, ExporterPlan, Timing};
use super::ipam::IpamPlan;
use super::Summary;
use crate::rng::Rng;
use crate::truth::{Condition, Conditions, EndKind, Fate, TruthFlow};
use crate::world::{Connection, End, Outcome, World};

/// One flow record and its truth.
pub(crate) struct Record {
    pub flow: Flow,
    pub truth: TruthFlow,
}

/// A host's records: by incarnation, then by window.
pub(crate) type HostRecords = Vec<Vec<Vec<Record>>>;

/// Empty record lists shaped by the exporters' windows.
pub(crate) fn empty(plans: &[ExporterPlan], timing: &Timing) -> Vec<HostRecords> {
    plans
        .iter()
        .map(|p| p.incarnations.iter().map(|inc| (0..inc.windows(timing)).map(|_| Vec::new()).collect()).collect())
        .collect()
}

/// One side of a connection, as its host sees it.
struct Side {
    host: usize,
    local: End,
    local_ip: IpAddr,
    local_port: u16,
    remote_ip: IpAddr,
    remote_port: u16,
    direction: Direction,
    sent: u64,
    received: u64,
    remote: Option<Arc<str>>,
    remote_kind: EndKind,
    /// The remote end's host (whose exporter may be down).
    remote_host: Option<usize>,
}

/// Produces the records of every connection into `out` (shaped by [`empty`]).
pub(crate) fn emit_all(
    world: &World,
    plans: &[ExporterPlan],
    ipam: &IpamPlan,
    timing: &Timing,
    rng: &mut Rng,
    out: &mut [HostRecords],
    summary: &mut Summary,
) {
    let hashers: Vec<FlowIdHasher> = plans.iter().map(|p| FlowIdHasher::new(&p.id)).collect();
    let mut emitter = Emitter { world, plans, timing, hashers, out, summary };
    for c in &world.connections {
        emitter.summary.connections += 1;
        if c.outcome != Outcome::Established {
            emitter.summary.failed_connects += 1;
        }
        let srtt = rng.range(50, 5_000) as u32;
        let retransmits = rng.range(0, 3) as u32;
        let ipam_fault = match c.server {
            End::Lb(l) => ipam.affects(world.lbs[l].start, c.start),
            _ => false,
        };
        let base = Conditions::NONE
            .with(Condition::FailedConnect, c.outcome != Outcome::Established)
            .with(Condition::IpamFault, ipam_fault);
        if let Some(host) = world.host_of(c.client) {
            let side = Side {
                host,
                local: c.client,
                local_ip: c.client_ip,
                local_port: c.client_port,
                remote_ip: c.server_ip,
                remote_port: c.server_port,
                direction: Direction::Client,
                sent: c.bytes_up,
                received: c.bytes_down,
                remote: world.name(c.server).cloned(),
                remote_kind: c.server_kind,
                remote_host: world.host_of(c.server),
            };
            emitter.side(c, &side, base, rng.next_u64().max(1), srtt, retransmits);
        }
        if c.outcome == Outcome::Established {
            if let Some(host) = world.host_of(c.server) {
                let side = Side {
                    host,
                    local: c.server,
                    local_ip: c.server_ip,
                    local_port: c.server_port,
                    remote_ip: c.client_ip,
                    remote_port: c.client_port,
                    direction: Direction::Server,
                    sent: c.bytes_down,
                    received: c.bytes_up,
                    remote: world.name(c.client).cloned(),
                    remote_kind: world.kind(c.client),
                    remote_host: world.host_of(c.client),
                };
                emitter.side(c, &side, Conditions::NONE, rng.next_u64().max(1), srtt, 0);
            }
        }
    }
}

struct Emitter<'a> {
    world: &'a World,
    plans: &'a [ExporterPlan],
    timing: &'a Timing,
    hashers: Vec<FlowIdHasher>,
    out: &'a mut [HostRecords],
    summary: &'a mut Summary,
}

impl Emitter<'_> {
    fn side(&mut self, c: &Connection, side: &Side, conditions: Conditions, cid: u64, srtt: u32, retransmits: u32) {
        // Copies of the shared references, so that records can be pushed while they are used.
        let (plans, world, timing) = (self.plans, self.world, self.timing);
        let plan = &plans[side.host];
        let window = timing.window;
        let (s, e) = (skewed(c.start, plan.skew), skewed(c.end, plan.skew));
        let remote_down = side.remote_host.is_some_and(|h| {
            let remote = &plans[h];
            let t = skewed(c.start, remote.skew);
            t >= remote.first_up() && remote.running_at(t, timing).is_none()
        });
        let conditions = conditions
            .with(Condition::DuplicatedId, plan.duplicated)
            .with(Condition::Preexisting, s < plan.first_up())
            .with(Condition::ExporterRestart, plan.restarted_during(s, e))
            .with(Condition::RemoteExporterDown, remote_down);
        let Some((scope, source)) = world.local_scope(side.local) else { return };
        let Some(local) = world.name(side.local) else { return };
        let id = self.hashers[side.host].connection(cid);
        let flow = Flow {
            local_ip: wire::ip_to_bytes(side.local_ip),
            local_port: u32::from(side.local_port),
            remote_ip: wire::ip_to_bytes(side.remote_ip),
            remote_port: u32::from(side.remote_port),
            direction: side.direction as i32,
            start_ns: s,
            end_ns: e,
            bytes_sent: side.sent,
            bytes_received: side.received,
            segments_sent: segments(side.sent),
            segments_received: segments(side.received),
            retransmits,
            srtt_us: if c.outcome == Outcome::Established { srtt } else { 0 },
            local_workload: local.to_string(),
            open: false,
            local_scope: scope as i32,
            local_source: source as i32,
            start_unobserved: false,
            connection_id: cid,
            connect_error: c.outcome.errno(),
        };
        let truth = TruthFlow {
            id,
            end_ns: e,
            open: false,
            incarnation: 0,
            remote: side.remote.clone(),
            remote_kind: side.remote_kind,
            local: Arc::clone(local),
            fate: Fate::Delivered,
            conditions,
        };
        let mut seen_final = false;
        let mut seen = false;
        for (i, inc) in plan.incarnations.iter().enumerate() {
            let stop = inc.stop(timing);
            if e < inc.up || s >= stop {
                continue;
            }
            let kept = s >= inc.up || plan.incarnations[..i].iter().any(|j| j.up <= s && s < j.stop(timing));
            let observed = if kept { s } else { inc.up };
            seen = true;
            // A connection kept across a restart starts before this incarnation: window 0.
            let mut k = observed.saturating_sub(inc.up) / window;
            loop {
                let (_, to) = inc.window(k, timing);
                let record = |open: bool, end: u64| {
                    let mut f = flow.clone();
                    let mut t = truth.clone();
                    f.start_ns = observed;
                    f.end_ns = end;
                    f.open = open;
                    if !kept {
                        f.start_unobserved = true;
                        f.direction = Direction::Unspecified as i32;
                    }
                    if open {
                        // Counters so far, as the kernel reports them for a live socket.
                        let so_far = (end - s) as f64 / (e - s) as f64;
                        f.bytes_sent = (side.sent as f64 * so_far) as u64;
                        f.bytes_received = (side.received as f64 * so_far) as u64;
                        f.segments_sent = segments(f.bytes_sent);
                        f.segments_received = segments(f.bytes_received);
                        f.retransmits = (f64::from(retransmits) * so_far) as u32;
                    }
                    t.end_ns = end;
                    t.open = open;
                    t.incarnation = inc.id;
                    Record { flow: f, truth: t }
                };
                if e < to {
                    self.out[side.host][i][k as usize].push(record(false, e));
                    seen_final = true;
                    self.count(!kept, false);
                    break;
                }
                if e > to {
                    self.out[side.host][i][k as usize].push(record(true, to));
                    self.count(!kept, true);
                }
                if to >= stop {
                    break;
                }
                k += 1;
            }
        }
        if !seen && s >= plan.first_up() {
            self.summary.sides_unseen += 1;
        } else if seen && !seen_final {
            self.summary.finals_unseen += 1;
        }
    }

    fn count(&mut self, unobserved: bool, open: bool) {
        self.summary.records += 1;
        self.summary.open_slices += u64::from(open);
        self.summary.unobserved_starts += u64::from(unobserved);
    }
}

/// Segments for a byte count (full-size segments plus the handshake's).
fn segments(bytes: u64) -> u64 {
    bytes / 1400 + 2
}
