//! From wire bytes to validated records: [`decode_batch`] turns one exporter batch into flows,
//! ownership claims and assignment events, and counts every rejection in [`IngestStats`].
//!
//! Nothing here panics on bad input. A batch that cannot be trusted as a whole (corrupt,
//! unknown version, impossible window, from the future) is rejected whole; a bad record inside
//! a good batch (an address that is not 4 or 16 bytes, an end before its start) is dropped
//! alone. Both are counted and logged.
//!
//! Exporter claims are clipped to the batch window: that is what bounds their length (the
//! lookup relies on it) and what makes "evidence about instant t enters no later than the
//! window containing t" true. Flow claims are merged per (IP, workload) within the batch, and
//! dropped where a heartbeat of the same workload already covers them, so a busy IP costs one
//! claim per batch, not one per flow.

use std::collections::HashMap;

use flowmap_operators::{AssignmentEvent, Claim, Counters, Direction, EvidenceKind, FlowRecord, Ip, Time, Workload};
use flowmap_schema as wire;

use serde::Serialize;

use crate::config::JobConfig;

/// A batch that passed validation.
#[derive(Clone, Debug)]
pub struct DecodedBatch {
    /// The exporter (also the Kafka key).
    pub exporter: Workload,
    /// Per-exporter sequence number.
    pub seq: u64,
    /// Window start.
    pub from: Time,
    /// Window end: the exporter's promise.
    pub to: Time,
    /// Valid flows.
    pub flows: Vec<FlowRecord>,
    /// Ownership evidence.
    pub evidence: Evidence,
    /// Records dropped for a bad address or port.
    pub rejected_address: u64,
    /// Records dropped for an impossible time range.
    pub rejected_time: u64,
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

/// The ownership evidence of one batch.
#[derive(Clone, Debug, Default)]
pub struct Evidence {
    /// Claims from heartbeats and from the flows' local ends.
    pub claims: Vec<(Ip, Claim)>,
    /// Assignment events.
    pub assignments: Vec<AssignmentEvent>,
}

/// Counters of what the ingest accepted and rejected.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct IngestStats {
    /// Batches accepted in order.
    pub batches: u64,
    /// Flows accepted.
    pub flows: u64,
    /// Batches that are not valid Protobuf (corrupt, truncated).
    pub rejected_malformed: u64,
    /// Batches of a schema version this reader does not know.
    pub rejected_version: u64,
    /// Batches with an impossible window (empty, reversed, longer than `max_window`).
    pub rejected_window: u64,
    /// Batches whose window starts too far ahead of the receiver's clock.
    pub rejected_future: u64,
    /// Records whose address is not 4 or 16 bytes, or whose port is not 16 bits.
    pub rejected_address: u64,
    /// Records whose time range is reversed or, for a flow, ends after the window.
    pub rejected_time: u64,
    /// Batches for an exporter no source reads (outside the roster).
    pub rejected_unrostered: u64,
    /// Batches seen before (same exporter and sequence number): dropped.
    pub duplicate_batches: u64,
    /// Sequence numbers skipped (batches lost in transit, as far as the job knows).
    pub lost_batches: u64,
    /// Batches that arrived after the job had moved past them: used, at a later time.
    pub late_batches: u64,
    /// Times an exporter went idle (silent longer than the idle timeout, live feeds only).
    pub idle_exporters: u64,
    /// Flows re-read after a restart only to rebuild ownership state (output before it).
    pub rebuild_flows: u64,
}

impl IngestStats {
    /// Adds another worker's counts.
    pub fn merge(&mut self, other: &IngestStats) {
        self.batches += other.batches;
        self.flows += other.flows;
        self.rejected_malformed += other.rejected_malformed;
        self.rejected_version += other.rejected_version;
        self.rejected_window += other.rejected_window;
        self.rejected_future += other.rejected_future;
        self.rejected_address += other.rejected_address;
        self.rejected_time += other.rejected_time;
        self.rejected_unrostered += other.rejected_unrostered;
        self.duplicate_batches += other.duplicate_batches;
        self.lost_batches += other.lost_batches;
        self.late_batches += other.late_batches;
        self.idle_exporters += other.idle_exporters;
        self.rebuild_flows += other.rebuild_flows;
    }

    /// All rejected batches and records.
    pub fn rejected(&self) -> u64 {
        self.rejected_malformed
            + self.rejected_version
            + self.rejected_window
            + self.rejected_future
            + self.rejected_address
            + self.rejected_time
            + self.rejected_unrostered
    }
}

/// The wire form of an address as an [`Ip`], without going through `IpAddr`.
fn ip(bytes: &[u8]) -> Option<Ip> {
    match bytes.len() {
        4 => {
            let v4 = u32::from_be_bytes(bytes.try_into().ok()?);
            Some(Ip((0xffff_u128 << 32) | u128::from(v4)))
        }
        16 => Some(Ip(u128::from_be_bytes(bytes.try_into().ok()?))),
        _ => None,
    }
}

/// Workload names seen so far, shared by all batches of a source, keyed by the name's hash
/// (which [`Workload`] computes anyway), so a lookup hashes the name once.
#[derive(Default)]
pub struct Interner {
    by_hash: HashMap<u64, Workload, std::hash::BuildHasherDefault<IdentityHasher>>,
}

/// The hasher of a table whose keys are already hashes.
#[derive(Default)]
pub struct IdentityHasher(u64);

impl std::hash::Hasher for IdentityHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

fn workload(name: &str, interned: &mut Interner) -> Option<Workload> {
    if name.is_empty() {
        return None;
    }
    let hash = Workload::hash_of(name);
    match interned.by_hash.get(&hash) {
        Some(w) if w.as_str() == name => Some(w.clone()),
        // A different name with the same hash: correct, just not shared.
        Some(_) => Some(Workload::with_hash(name, hash)),
        None => {
            let w = Workload::with_hash(name, hash);
            interned.by_hash.insert(hash, w.clone());
            Some(w)
        }
    }
}

/// Counts a rejected batch, and logs it when the count is a power of two (so a flood of bad
/// input costs a logarithmic number of log lines).
fn reject(counter: &mut u64, what: &str, exporter: &str, detail: &dyn std::fmt::Display) {
    *counter += 1;
    if counter.is_power_of_two() {
        tracing::warn!(exporter, total = *counter, "rejected batch: {what}: {detail}");
    }
}

/// Decodes and validates one batch received at `now` (the receiver's clock) under the
/// transport key `key` (named in logs when the batch itself cannot be read).
///
/// Batch-level rejections are counted in `stats` here; record-level ones are returned in the
/// batch, for the caller to count once it knows the batch is not a duplicate. `interned`
/// shares workload names between batches so that equal names share memory.
pub fn decode_batch(
    key: &str,
    bytes: &[u8],
    now: Time,
    config: &JobConfig,
    interned: &mut Interner,
    stats: &mut IngestStats,
) -> Result<DecodedBatch, Rejected> {
    let view = match wire::view_batch(bytes) {
        Ok(view) => view,
        Err(err @ wire::DecodeError::UnsupportedVersion { .. }) => {
            reject(&mut stats.rejected_version, "unsupported version", key, &err);
            return Err(Rejected::Version);
        }
        Err(err) => {
            reject(&mut stats.rejected_malformed, "malformed", key, &err);
            return Err(Rejected::Malformed);
        }
    };
    let (from, to) = (view.window_from_ns, view.window_to_ns);
    let exporter_id = view.exporter_id;
    if from >= to || to - from > config.max_window || exporter_id.is_empty() {
        let detail = format!("seq {} window [{from}, {to}) (at most {} ns)", view.seq, config.max_window);
        reject(&mut stats.rejected_window, "impossible window or no exporter id", exporter_id, &detail);
        return Err(Rejected::Window);
    }
    if from > now.saturating_add(config.max_future) {
        let detail = format!("seq {} starts at {from}, receiver clock {now}", view.seq);
        reject(&mut stats.rejected_future, "from the future", exporter_id, &detail);
        return Err(Rejected::Future);
    }
    let exporter = workload(exporter_id, interned).ok_or(Rejected::Window)?;
    let ids = wire::FlowIdHasher::new(exporter_id);
    let (mut bad_address, mut bad_time) = (0u64, 0u64);

    let mut claims: Vec<(Ip, Claim)> = Vec::new();
    for hb in view.heartbeats() {
        let Ok(hb) = hb else {
            bad_address += 1;
            continue;
        };
        let (Some(addr), Some(owner)) = (ip(hb.ip), workload(hb.workload, interned)) else {
            bad_address += 1;
            continue;
        };
        if hb.from_ns >= hb.to_ns {
            bad_time += 1;
            continue;
        }
        let (lo, hi) = (hb.from_ns.max(from), hb.to_ns.min(to));
        if lo < hi {
            claims.push((addr, Claim { kind: EvidenceKind::Heartbeat, from: lo, to: hi, workload: owner }));
        }
    }

    let mut flows = Vec::with_capacity(view.flow_count());
    let mut flow_claims: Vec<(Ip, Workload, Time, Time)> = Vec::new();
    for f in view.flows() {
        let Ok(f) = f else {
            bad_address += 1;
            continue;
        };
        let (Some(local_ip), Some(remote_ip)) = (ip(f.local_ip), ip(f.remote_ip)) else {
            bad_address += 1;
            continue;
        };
        let (Ok(local_port), Ok(remote_port)) = (u16::try_from(f.local_port), u16::try_from(f.remote_port)) else {
            bad_address += 1;
            continue;
        };
        if f.start_ns > f.end_ns || f.end_ns > to {
            bad_time += 1;
            continue;
        }
        let local_workload = workload(f.local_workload, interned);
        if let Some(owner) = &local_workload {
            let (lo, hi) = (f.start_ns.max(from), f.end_ns.min(to));
            if lo < hi {
                flow_claims.push((local_ip, owner.clone(), lo, hi));
            }
        }
        let direction = match wire::Direction::try_from(f.direction) {
            Ok(wire::Direction::Client) => Direction::Client,
            Ok(wire::Direction::Server) => Direction::Server,
            _ => Direction::Unknown,
        };
        flows.push(FlowRecord {
            id: ids.id(f.local_ip, f.local_port, f.remote_ip, f.remote_port, f.direction, f.start_ns),
            exporter: exporter.clone(),
            local_ip,
            local_port,
            remote_ip,
            remote_port,
            direction,
            start: f.start_ns,
            end: f.end_ns,
            counters: Counters {
                bytes_sent: f.bytes_sent,
                bytes_received: f.bytes_received,
                segments_sent: f.segments_sent,
                segments_received: f.segments_received,
                retransmits: f.retransmits,
                srtt_us: f.srtt_us,
            },
            local_workload,
            open: f.open,
        });
    }
    merge_flow_claims(flow_claims, &mut claims);

    let mut assignments = Vec::new();
    for a in view.assignments() {
        let Some((addr, a)) = a.ok().and_then(|a| Some((ip(a.ip)?, a))) else {
            bad_address += 1;
            continue;
        };
        if a.at_ns < from || a.at_ns >= to {
            bad_time += 1;
            continue;
        }
        assignments.push(AssignmentEvent { ip: addr, workload: workload(a.workload, interned), at: a.at_ns });
    }

    Ok(DecodedBatch {
        exporter,
        seq: view.seq,
        from,
        to,
        flows,
        evidence: Evidence { claims, assignments },
        rejected_address: bad_address,
        rejected_time: bad_time,
    })
}

/// Unions flow claims per (IP, workload) and appends those not covered by a heartbeat.
fn merge_flow_claims(mut flow_claims: Vec<(Ip, Workload, Time, Time)>, claims: &mut Vec<(Ip, Claim)>) {
    if flow_claims.is_empty() {
        return;
    }
    flow_claims.sort_unstable();
    let mut heartbeats: HashMap<Ip, Vec<(Workload, Time, Time)>> = HashMap::new();
    for (ip, c) in claims.iter() {
        heartbeats.entry(*ip).or_default().push((c.workload.clone(), c.from, c.to));
    }
    let mut emit = |(ip, owner, lo, hi): (Ip, Workload, Time, Time)| {
        let covered =
            heartbeats.get(&ip).is_some_and(|hbs| hbs.iter().any(|(w, f, t)| *w == owner && *f <= lo && hi <= *t));
        if !covered {
            claims.push((ip, Claim { kind: EvidenceKind::Flow, from: lo, to: hi, workload: owner }));
        }
    };
    let mut current: Option<(Ip, Workload, Time, Time)> = None;
    for (ip, owner, lo, hi) in flow_claims {
        match &mut current {
            Some((cip, cw, _, chi)) if *cip == ip && *cw == owner && lo <= *chi => *chi = (*chi).max(hi),
            _ => {
                if let Some(done) = current.take() {
                    emit(done);
                }
                current = Some((ip, owner, lo, hi));
            }
        }
    }
    if let Some(done) = current {
        emit(done);
    }
}

#[cfg(test)]
mod tests;
