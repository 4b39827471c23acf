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

use flowmap_operators::{
    AssignmentEvent, Claim, Counters, Direction, EvidenceKind, FlowRecord, Ip, Time, Workload,
};
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
    /// Ownership claims from heartbeats and from the flows' local ends.
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
    /// Batches seen before (same exporter and sequence number): dropped.
    pub duplicate_batches: u64,
    /// Sequence numbers skipped (batches lost in transit, as far as the job knows).
    pub lost_batches: u64,
    /// Batches that arrived after the job had moved past them: used, at a later time.
    pub late_batches: u64,
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
        self.duplicate_batches += other.duplicate_batches;
        self.lost_batches += other.lost_batches;
        self.late_batches += other.late_batches;
    }

    /// All rejected batches and records.
    pub fn rejected(&self) -> u64 {
        self.rejected_malformed
            + self.rejected_version
            + self.rejected_window
            + self.rejected_future
            + self.rejected_address
            + self.rejected_time
    }
}

fn ip(bytes: &[u8]) -> Option<Ip> {
    wire::ip_from_bytes(bytes).map(Ip::from_addr)
}

fn workload(name: &str, interned: &mut HashMap<String, Workload>) -> Option<Workload> {
    if name.is_empty() {
        return None;
    }
    if let Some(w) = interned.get(name) {
        return Some(w.clone());
    }
    let w = Workload::new(name);
    interned.insert(name.to_string(), w.clone());
    Some(w)
}

/// Decodes and validates one batch received at `now` (the receiver's clock).
///
/// `interned` shares workload names between batches so that equal names share memory.
pub fn decode_batch(
    bytes: &[u8],
    now: Time,
    config: &JobConfig,
    interned: &mut HashMap<String, Workload>,
    stats: &mut IngestStats,
) -> Option<DecodedBatch> {
    let batch = match wire::decode_batch(bytes) {
        Ok(batch) => batch,
        Err(err @ wire::DecodeError::Malformed(_)) => {
            stats.rejected_malformed += 1;
            tracing::warn!(error = %err, len = bytes.len(), "rejected batch");
            return None;
        }
        Err(err @ wire::DecodeError::UnsupportedVersion { .. }) => {
            stats.rejected_version += 1;
            tracing::warn!(error = %err, "rejected batch");
            return None;
        }
    };
    let (from, to) = (batch.window_from_ns, batch.window_to_ns);
    let exporter_id = batch.exporter_id.as_str();
    if from >= to || to - from > config.max_window || exporter_id.is_empty() {
        stats.rejected_window += 1;
        tracing::warn!(exporter = exporter_id, seq = batch.seq, from, to, "rejected batch: impossible window or no exporter id");
        return None;
    }
    if from > now.saturating_add(config.max_future) {
        stats.rejected_future += 1;
        tracing::warn!(exporter = exporter_id, seq = batch.seq, from, now, "rejected batch from the future");
        return None;
    }
    let exporter = workload(exporter_id, interned)?;
    let (bad_address, bad_time) = (stats.rejected_address, stats.rejected_time);

    let mut claims: Vec<(Ip, Claim)> = Vec::with_capacity(batch.heartbeats.len());
    for hb in &batch.heartbeats {
        let (Some(addr), Some(owner)) = (ip(&hb.ip), workload(&hb.workload, interned)) else {
            stats.rejected_address += 1;
            continue;
        };
        if hb.from_ns >= hb.to_ns {
            stats.rejected_time += 1;
            continue;
        }
        let (lo, hi) = (hb.from_ns.max(from), hb.to_ns.min(to));
        if lo < hi {
            claims.push((addr, Claim { kind: EvidenceKind::Heartbeat, from: lo, to: hi, workload: owner }));
        }
    }

    let mut flows = Vec::with_capacity(batch.flows.len());
    let mut flow_claims: Vec<(Ip, Workload, Time, Time)> = Vec::new();
    for f in &batch.flows {
        let (Some(local_ip), Some(remote_ip)) = (ip(&f.local_ip), ip(&f.remote_ip)) else {
            stats.rejected_address += 1;
            continue;
        };
        let (Ok(local_port), Ok(remote_port)) = (u16::try_from(f.local_port), u16::try_from(f.remote_port)) else {
            stats.rejected_address += 1;
            continue;
        };
        if f.start_ns > f.end_ns || f.end_ns > to {
            stats.rejected_time += 1;
            continue;
        }
        let local_workload = workload(&f.local_workload, interned);
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
            id: wire::flow_id(exporter_id, f),
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

    let mut assignments = Vec::with_capacity(batch.assignments.len());
    for a in &batch.assignments {
        let Some(addr) = ip(&a.ip) else {
            stats.rejected_address += 1;
            continue;
        };
        if a.at_ns < from || a.at_ns >= to {
            stats.rejected_time += 1;
            continue;
        }
        assignments.push(AssignmentEvent { ip: addr, workload: workload(&a.workload, interned), at: a.at_ns });
    }

    let (dropped_address, dropped_time) = (stats.rejected_address - bad_address, stats.rejected_time - bad_time);
    if dropped_address + dropped_time > 0 {
        tracing::warn!(exporter = exporter_id, seq = batch.seq, dropped_address, dropped_time, "dropped bad records");
    }
    stats.batches += 1;
    stats.flows += flows.len() as u64;
    Some(DecodedBatch { exporter, seq: batch.seq, from, to, flows, claims, assignments })
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
        let covered = heartbeats
            .get(&ip)
            .is_some_and(|hbs| hbs.iter().any(|(w, f, t)| *w == owner && *f <= lo && hi <= *t));
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
