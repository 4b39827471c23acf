//! Admission: from one raw message to what the dataflow needs, with no timely in sight.
//!
//! [`Admission::admit`] reads a batch in place (the zero-copy view), validates its window,
//! asks the lane's [`Tracker`] whether it is new, late or a duplicate, decides the dataflow time
//! it enters at, and routes everything it carries into [`Routed`] pieces, one per (time, target
//! worker):
//! - fleet flows, each at its *lookup time* `max(batch time, start + guard)` rounded up to the
//!   tick, to the worker owning its remote address; flows to addresses outside the fleet are
//!   decided here (`external`);
//! - evidence at the batch time, to the worker owning each address: heartbeats (whole-IP or
//!   port-scoped), flows' local ends (whole-IP claims when the exporter says `SCOPE_IP`, a
//!   port claim for the listening end of a shared address, and a connection record for the peer
//!   rule), and assignment events with their source's *run* (see below);
//! - for every fleet flow, its *mirror* at the worker owning its remote address (the same
//!   connection record, stored under the remote end), so that the peer rule sees the flow's
//!   connection as all its records so far show it (`flowmap_operators::index`).
//!
//! Time: the batch time is the window start rounded down to the tick, the earliest instant its
//! evidence describes. A batch behind its own lane's frontier (late, or the first of an exporter
//! new to the lane) enters at that lane frontier and is counted late. These decisions depend only
//! on the order of messages within a lane, so every reading of the same lanes decides the same.
//!
//! Assignment runs: an assignment holds only as far as its source vouched. A source's batches
//! form a *run* while they come in order (no gap in `seq`, one incarnation, abutting windows);
//! every batch of a known assignment source sends a promise "run `r` covers `[from, to)`" to
//! every worker, and its events name their run. A gap, a restart or a late batch starts a new
//! run, so the index ends an assignment where its run ends (`source_gap`).
//!
//! Nothing here panics on bad input: a batch that cannot be trusted as a whole (corrupt, unknown
//! version, impossible window, from the future) is refused whole; a bad record inside a good
//! batch (an address that is not 4 or 16 bytes, a port over 65535, an end before its start, a
//! name longer than [`MAX_NAME`] bytes) is dropped alone. Both are counted and logged.

mod route;
mod tracker;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use flowmap_operators::index::MAX_NAME;
use flowmap_operators::records::{direction, flags, AssignIn, ClaimIn, ConnIn, FlowRow, NameRef, Promise, RunId};
use flowmap_operators::{EvidenceKind, Ip, Reason, Time};
use flowmap_schema as wire;
use serde::Serialize;

pub use route::Routed;
pub use tracker::{Admission as Decision, Tracker};

use crate::config::JobConfig;
use crate::feed::{Lane, Message, Outcome};

/// Counters of what the ingest accepted and rejected.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct IngestStats {
    /// Batches accepted.
    pub batches: u64,
    /// Flow records accepted.
    pub flows: u64,
    /// Batches that are not valid Protobuf (corrupt, truncated).
    pub rejected_malformed: u64,
    /// Batches of a schema version this reader does not know.
    pub rejected_version: u64,
    /// Batches with an impossible window (empty, reversed, longer than `max_window`) or no id.
    pub rejected_window: u64,
    /// Batches whose window starts too far ahead of the receiver's clock.
    pub rejected_future: u64,
    /// Records whose address is not 4 or 16 bytes, or whose port is not 16 bits.
    pub rejected_address: u64,
    /// Records whose time range is reversed or, for a flow, ends after the window.
    pub rejected_time: u64,
    /// Records naming a workload longer than the longest name accepted.
    pub rejected_name: u64,
    /// Batches for an exporter no source reads (outside the roster).
    pub rejected_unrostered: u64,
    /// Batches seen before (same exporter, incarnation and sequence number): dropped.
    pub duplicate_batches: u64,
    /// Sequence numbers skipped (batches lost in transit, as far as the job knows).
    pub lost_batches: u64,
    /// Batches that arrived after the job had moved past them: used, at a later time.
    pub late_batches: u64,
    /// Times an exporter went idle (silent longer than the idle timeout, live feeds only).
    pub idle_exporters: u64,
    /// New incarnations of known exporters (restarts).
    pub exporter_restarts: u64,
    /// Times a replaced incarnation sent again: two live processes share one exporter id.
    pub exporter_id_conflicts: u64,
    /// Flows re-read after a restart only to rebuild state (output before it).
    pub rebuild_flows: u64,
}

impl IngestStats {
    /// Adds another worker's counts.
    pub fn merge(&mut self, o: &IngestStats) {
        self.batches += o.batches;
        self.flows += o.flows;
        self.rejected_malformed += o.rejected_malformed;
        self.rejected_version += o.rejected_version;
        self.rejected_window += o.rejected_window;
        self.rejected_future += o.rejected_future;
        self.rejected_address += o.rejected_address;
        self.rejected_time += o.rejected_time;
        self.rejected_name += o.rejected_name;
        self.rejected_unrostered += o.rejected_unrostered;
        self.duplicate_batches += o.duplicate_batches;
        self.lost_batches += o.lost_batches;
        self.late_batches += o.late_batches;
        self.idle_exporters += o.idle_exporters;
        self.exporter_restarts += o.exporter_restarts;
        self.exporter_id_conflicts += o.exporter_id_conflicts;
        self.rebuild_flows += o.rebuild_flows;
    }

    /// All rejected batches and records.
    pub fn rejected(&self) -> u64 {
        self.rejected_malformed
            + self.rejected_version
            + self.rejected_window
            + self.rejected_future
            + self.rejected_address
            + self.rejected_time
            + self.rejected_name
            + self.rejected_unrostered
    }
}

/// Why a whole batch was refused (each is also counted in [`IngestStats`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejected {
    /// Not valid Protobuf for the schema (corrupt, truncated).
    Malformed,
    /// A schema version this reader does not know.
    Version,
    /// An impossible window, or no exporter id.
    Window,
    /// A window too far ahead of the receiver's clock.
    Future,
}

impl Rejected {
    /// A short name, for dead-letter headers and logs.
    pub fn name(self) -> &'static str {
        match self {
            Rejected::Malformed => "malformed",
            Rejected::Version => "unsupported_version",
            Rejected::Window => "bad_window",
            Rejected::Future => "from_the_future",
        }
    }
}

/// The run state of one assignment source (per lane, exporter and incarnation).
#[derive(Clone, Copy, Debug)]
struct RunState {
    run: RunId,
    next_seq: u64,
    to: Time,
}

/// One worker's admission state: the trackers of its lanes and its assignment sources' runs.
pub struct Admission {
    config: JobConfig,
    peers: usize,
    trackers: BTreeMap<u32, Tracker>,
    runs: HashMap<(u32, String, u64), RunState>,
    next_run: HashMap<u32, u32>,
    /// The counters.
    pub stats: IngestStats,
}

/// Counts a rejected batch, and logs it when the count is a power of two (so a flood of bad
/// input costs a logarithmic number of log lines).
fn reject(counter: &mut u64, what: &str, exporter: &str, detail: &dyn std::fmt::Display) {
    *counter += 1;
    if counter.is_power_of_two() {
        tracing::warn!(exporter, total = *counter, "rejected batch: {what}: {detail}");
    }
}

/// Adds `n` rejected records to `total`, logging when the total crosses a power of two.
fn reject_records(total: &mut u64, n: u64, what: &str, exporter: &str) {
    if n == 0 {
        return;
    }
    let before = *total;
    *total += n;
    if before.checked_ilog2() != total.checked_ilog2() {
        tracing::warn!(exporter, dropped = n, total = *total, "dropped records with a bad {what}");
    }
}

/// Rounds `t` up to a multiple of `tick` (saturating).
pub fn round_up(t: Time, tick: Time) -> Time {
    match t % tick.max(1) {
        0 => t,
        r => t.saturating_add(tick - r),
    }
}

/// Record-level rejections of one batch.
#[derive(Default)]
struct Bad {
    address: u64,
    time: u64,
    name: u64,
}

impl Admission {
    /// The admission state of one worker reading `lanes`, routing to `peers` workers.
    pub fn new(config: JobConfig, lanes: &[Lane], peers: usize) -> Self {
        let trackers =
            lanes.iter().map(|lane| (lane.id, Tracker::new(lane.roster.iter().map(String::as_str)))).collect();
        Admission { config, peers, trackers, runs: HashMap::new(), next_run: HashMap::new(), stats: Default::default() }
    }

    /// The least promise over this worker's lanes (`None` when no lane has a live exporter).
    pub fn frontier(&self) -> Option<Time> {
        self.trackers.values().filter_map(Tracker::frontier).min()
    }

    /// Marks exporters silent for longer than `timeout` as idle (live feeds only).
    pub fn sweep(&mut self, now: Instant, timeout: Duration) {
        for tracker in self.trackers.values_mut() {
            tracker.sweep(now, timeout, &mut self.stats);
        }
    }

    /// Admits message `m` while the source's capabilities are at `now`, routing what it carries
    /// into `out`, and says what became of it.
    pub fn admit(&mut self, m: &Message<'_>, now: Time, out: &mut Routed) -> Outcome {
        let view = match wire::view_batch(m.payload) {
            Ok(view) => view,
            Err(err @ wire::DecodeError::UnsupportedVersion { .. }) => {
                reject(&mut self.stats.rejected_version, "unsupported version", m.key, &err);
                return Outcome::Rejected { reason: Rejected::Version.name() };
            }
            Err(err) => {
                reject(&mut self.stats.rejected_malformed, "malformed", m.key, &err);
                return Outcome::Rejected { reason: Rejected::Malformed.name() };
            }
        };
        let (from, to) = (view.window_from_ns, view.window_to_ns);
        let exporter = view.exporter_id;
        let config = &self.config;
        if from >= to || to - from > config.max_window() || exporter.is_empty() || exporter.len() > MAX_NAME {
            let detail = format!("seq {} window [{from}, {to}) (at most {} ns)", view.seq, config.max_window());
            reject(&mut self.stats.rejected_window, "impossible window or exporter id", exporter, &detail);
            return Outcome::Rejected { reason: Rejected::Window.name() };
        }
        if from > m.arrival.saturating_add(config.max_future()) {
            let detail = format!("seq {} starts at {from}, receiver clock {}", view.seq, m.arrival);
            reject(&mut self.stats.rejected_future, "from the future", exporter, &detail);
            return Outcome::Rejected { reason: Rejected::Future.name() };
        }

        let tick = config.tick();
        let tracker = self.trackers.entry(m.lane).or_default();
        let lane_front = tracker.frontier().map(|f| f - f % tick);
        let decision = tracker.admit(exporter, view.incarnation, view.seq, (from, to), &mut self.stats);
        let own = from - from % tick;
        let at = match decision {
            Decision::Duplicate => return Outcome::Duplicate,
            Decision::Late => lane_front.unwrap_or(own),
            Decision::InOrder => match lane_front {
                // An exporter new to the lane, or windows that overlap.
                Some(front) if own < front => {
                    self.stats.late_batches += 1;
                    front
                }
                _ => own,
            },
        };
        if at < now && decision == Decision::InOrder && lane_front.is_none_or(|f| own >= f) {
            // Only in a lane without a live exporter: behind the other lanes.
            self.stats.late_batches += 1;
        }
        let at = at.max(now);
        self.stats.batches += 1;

        let mut bad = Bad::default();
        let batch = out.begin_batch(exporter, view.incarnation);
        let mut until = at;

        // Heartbeats.
        for hb in view.heartbeats() {
            let Ok(hb) = hb else {
                bad.address += 1;
                continue;
            };
            let (Some(ip), Ok(port)) = (Ip::from_wire(hb.ip), u16::try_from(hb.port)) else {
                bad.address += 1;
                continue;
            };
            if hb.workload.is_empty() || hb.workload.len() > MAX_NAME {
                bad.name += 1;
                continue;
            }
            if hb.from_ns >= hb.to_ns {
                bad.time += 1;
                continue;
            }
            let (lo, hi) = (hb.from_ns.max(from), hb.to_ns.min(to));
            if lo < hi {
                let piece = out.evidence(at, ip.worker(self.peers));
                let name = piece.names.push(hb.workload);
                piece.claims.push(ClaimIn { ip, port, kind: EvidenceKind::Heartbeat, from: lo, to: hi, name });
            }
        }

        // Flows.
        let ids = wire::FlowIdHasher::new(exporter);
        let mut flows = 0u64;
        for bytes in view.flow_bytes() {
            let Ok(f) = wire::view::parse_flow(bytes) else {
                bad.address += 1;
                continue;
            };
            let (Some(local), Some(remote)) = (Ip::from_wire(f.local_ip), Ip::from_wire(f.remote_ip)) else {
                bad.address += 1;
                continue;
            };
            let (Ok(local_port), Ok(remote_port)) = (u16::try_from(f.local_port), u16::try_from(f.remote_port)) else {
                bad.address += 1;
                continue;
            };
            if f.start_ns > f.end_ns || f.end_ns > to {
                bad.time += 1;
                continue;
            }
            if f.local_workload.len() > MAX_NAME {
                bad.name += 1;
                continue;
            }
            flows += 1;
            let id = if f.connection_id != 0 {
                ids.connection(f.connection_id)
            } else {
                ids.id(f.local_ip, f.local_port, f.remote_ip, f.remote_port, f.direction, f.start_ns)
            };
            let mut flag = 0;
            if f.open {
                flag |= flags::OPEN;
            }
            if f.start_unobserved {
                flag |= flags::START_UNOBSERVED;
            }
            if m.rebuild {
                flag |= flags::REBUILD;
            }
            if f.start_ns < from {
                flag |= flags::CONTINUED;
            }
            let direction = match wire::Direction::try_from(f.direction) {
                Ok(wire::Direction::Client) => direction::CLIENT,
                Ok(wire::Direction::Server) => direction::SERVER,
                _ => direction::UNKNOWN,
            };
            let row = FlowRow {
                remote,
                start: f.start_ns,
                batch_at: at,
                id,
                msg_off: 0,
                msg_len: 0,
                remote_port,
                exporter: 0,
                flags: flag,
                direction,
            };
            let fleet = self.config.in_fleet(remote);
            let lookup = at.max(round_up(f.start_ns.saturating_add(self.config.guard()), tick));
            if fleet {
                until = until.max(lookup);
                out.flow(lookup, remote.worker(self.peers), &batch, row, bytes);
            } else if !m.rebuild {
                out.external(at, &batch, row, bytes, Reason::External);
            }
            // The local end as evidence: this very connection (for the other end's record, even
            // without a workload: it still shows that both ends reported it), and claims.
            if f.local_workload.is_empty() && !fleet {
                continue;
            }
            let conn = ConnIn {
                local,
                local_port,
                peer: remote,
                peer_port: remote_port,
                start: f.start_ns,
                end: f.end_ns,
                start_unobserved: f.start_unobserved,
                direction,
                lookup,
                name: NameRef::default(),
                connection: if f.connection_id != 0 { id } else { 0 },
            };
            if fleet {
                // For the remote end's lookups: the connection as all its records so far show
                // it, whichever of them is looked up first (no name: it is not evidence about
                // the remote).
                out.evidence(at, remote.worker(self.peers)).mirrors.push(conn);
            }
            let piece = out.evidence(at, local.worker(self.peers));
            let name = piece.names.push(f.local_workload);
            if fleet {
                piece.conns.push(ConnIn { name, ..conn });
            }
            if f.local_workload.is_empty() {
                continue;
            }
            let scope = wire::Scope::try_from(f.local_scope).unwrap_or(wire::Scope::Unspecified);
            let server_side = f.direction != wire::Direction::Client as i32;
            let port = match scope {
                wire::Scope::Ip => Some(0),
                // The narrow reading: a claim on the port only where it listens (a client's
                // ephemeral port says nothing about the next connection to it).
                _ if server_side && local_port != 0 => Some(local_port),
                _ => None,
            };
            let (lo, hi) = (f.start_ns.max(from), f.end_ns.min(to));
            if let Some(port) = port.filter(|_| lo < hi) {
                piece.claims.push(ClaimIn { ip: local, port, kind: EvidenceKind::Flow, from: lo, to: hi, name });
            }
        }
        if m.rebuild {
            self.stats.rebuild_flows += flows;
        } else {
            self.stats.flows += flows;
        }

        // Assignment events, with their source's run.
        let key = (m.lane, exporter.to_string(), view.incarnation);
        let has_assignments = view.assignments().next().is_some();
        if has_assignments || self.runs.contains_key(&key) {
            let prior = self.runs.get(&key).copied();
            let continues =
                decision == Decision::InOrder && prior.is_some_and(|r| r.next_seq == view.seq && r.to == from);
            let run = match prior {
                Some(r) if continues => r.run,
                _ => {
                    let n = self.next_run.entry(m.lane).or_default();
                    *n += 1;
                    (u64::from(m.lane) << 32) | u64::from(*n)
                }
            };
            if decision == Decision::InOrder {
                // A late batch is a run of its own and does not move the source's current run.
                self.runs.insert(key, RunState { run, next_seq: view.seq + 1, to });
            }
            for worker in 0..self.peers {
                let piece = out.evidence(at, worker);
                let source = piece.names.push(exporter);
                piece.promises.push(Promise { run, source, from, to });
            }
            for a in view.assignments() {
                let Some((ip, a)) = a.ok().and_then(|a| Some((Ip::from_wire(a.ip)?, a))) else {
                    bad.address += 1;
                    continue;
                };
                if a.at_ns < from || a.at_ns >= to {
                    bad.time += 1;
                    continue;
                }
                if a.workload.len() > MAX_NAME {
                    bad.name += 1;
                    continue;
                }
                let piece = out.evidence(at, ip.worker(self.peers));
                let name = (!a.workload.is_empty()).then(|| piece.names.push(a.workload));
                piece.assignments.push(AssignIn { ip, at: a.at_ns, name, run });
            }
        }

        reject_records(&mut self.stats.rejected_address, bad.address, "address or port", exporter);
        reject_records(&mut self.stats.rejected_time, bad.time, "time range", exporter);
        reject_records(&mut self.stats.rejected_name, bad.name, "workload name", exporter);
        match (bad.address, bad.time, bad.name) {
            (0, 0, 0) => Outcome::Used { until },
            (address, time, name) => Outcome::Partial {
                until,
                reason: format!(
                    "{address} records with a bad address or port, {time} with a bad time range, {name} with a bad name"
                ),
            },
        }
    }
}

#[cfg(test)]
mod tests;
