//! The scorer: compares the job's verdicts with ground truth, record by record, and runs the
//! *old* method on the same input as a baseline ([`baseline`]).
//!
//! Every record of every exporter incarnation is accounted for: in the output (correct,
//! misattributed, or unattributed with a reason), lost in transit, corrupted by its exporter,
//! dead-lettered by the job, or missing. Records are identified as the job's output identifies
//! them, `(flow_id, end_ns, open)`; the scorer also checks that all records of one flow carry
//! one verdict (the job decides a connection once, at its first record). Outcomes are also
//! counted apart by the kind of the remote end (pod, load balancer, hostNetwork, NAT, shared
//! network namespace, external, vacant) and by the hazards that touched the record (assignment
//! feed faults, exporter restarts, pre-existing connections, the duplicated exporter id,
//! failed connects, open slices), so a report can say why flows are unattributed.
//!
//! # Layout
//! - [`Verdict`], [`Score`], [`Tally`], [`score`], [`account_dead_letters`]: here.
//! - [`baseline`]: the old method.

use std::collections::{BTreeMap, HashMap, HashSet};

use flowmap_schema as wire;
use serde::Serialize;

use crate::publish::Delivery;
use crate::truth::{Fate, RecordKey, TruthFlow};

pub mod baseline;

/// The job's verdict on one output record, as the scorer reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// Flow id.
    pub id: u64,
    /// The record's `end_ns` (close, or window end of a slice), exporter clock.
    pub end_ns: u64,
    /// Whether the record is an open slice.
    pub open: bool,
    /// The attributed remote workload, if any.
    pub remote: Option<String>,
    /// Why not, if not (`no_owner`, `shared_ip`, ...).
    pub reason: Option<String>,
    /// What the attribution rests on, if attributed (`heartbeat`, `peer`, ...).
    pub evidence: Option<String>,
}

impl Verdict {
    /// The record's identity.
    pub fn key(&self) -> RecordKey {
        RecordKey { id: self.id, end_ns: self.end_ns, open: self.open }
    }

    /// The verdict an output record on the wire carries (`attributed.proto`), with reasons and
    /// evidence named as the job names them (`no_owner`, `shared_ip`, `peer`, ...; a value this
    /// reader does not know is `unknown`).
    pub fn from_wire(a: &wire::AttributedFlow) -> Self {
        let attributed = !a.remote_workload.is_empty();
        let reason = match wire::Reason::try_from(a.reason) {
            Ok(wire::Reason::Unspecified) => None,
            Ok(wire::Reason::NoOwner) => Some("no_owner"),
            Ok(wire::Reason::Conflict) => Some("conflict"),
            Ok(wire::Reason::NearBoundary) => Some("near_boundary"),
            Ok(wire::Reason::External) => Some("external"),
            Ok(wire::Reason::EvidenceExpired) => Some("evidence_expired"),
            Ok(wire::Reason::SharedIp) => Some("shared_ip"),
            Ok(wire::Reason::SourceGap) => Some("source_gap"),
            Err(_) => Some("unknown"),
        };
        let evidence = match wire::Evidence::try_from(a.evidence) {
            Ok(wire::Evidence::Unspecified) => None,
            Ok(wire::Evidence::Heartbeat) => Some("heartbeat"),
            Ok(wire::Evidence::Flow) => Some("flow"),
            Ok(wire::Evidence::Assignment) => Some("assignment"),
            Ok(wire::Evidence::Peer) => Some("peer"),
            Err(_) => Some("unknown"),
        };
        Verdict {
            id: a.flow_id,
            end_ns: a.end_ns,
            open: a.open,
            remote: attributed.then(|| a.remote_workload.clone()),
            reason: reason.filter(|_| !attributed).map(String::from),
            evidence: evidence.filter(|_| attributed).map(String::from),
        }
    }
}

/// Outcomes of one class of truth records (one remote kind, or one condition).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Tally {
    /// Truth records of the class.
    pub records: u64,
    /// Of those, in the output.
    pub output: u64,
    /// Attributed to the workload that was really there.
    pub correct: u64,
    /// Attributed to anyone else.
    pub misattributed: u64,
    /// Unattributed, by reason.
    pub unattributed: BTreeMap<String, u64>,
    /// Delivered intact, yet not in the output.
    pub missing: u64,
    /// Lost in transit.
    pub lost_in_transit: u64,
    /// Corrupted by the exporter.
    pub corrupted: u64,
}

/// The comparison. Counts are of records unless named otherwise.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Score {
    /// Distinct flow ids in the output.
    pub flows: u64,
    /// Distinct records `(flow_id, end_ns, open)` in the output.
    pub records: u64,
    /// Of those, open slices.
    pub slices: u64,
    /// Output records with a remote workload.
    pub attributed: u64,
    /// Output records left unattributed.
    pub unattributed: u64,
    /// Attributed to the workload that was really on the remote end: right.
    pub correct: u64,
    /// Attributed to a workload that was not on the remote end when the flow started.
    pub misattributed: u64,
    /// Unattributed records by reason.
    pub unattributed_by_reason: BTreeMap<String, u64>,
    /// Attributed records by evidence.
    pub attributed_by_evidence: BTreeMap<String, u64>,
    /// Output records whose remote end was a workload of the fleet (someone to attribute them
    /// to: not external, not a vacant address or a port nobody listened on).
    pub in_fleet: u64,
    /// Of those, attributed (percent).
    pub attributed_in_fleet_pct: f64,
    /// Records the exporters produced (the truth), of every incarnation.
    pub truth_records: u64,
    /// Distinct flows among them.
    pub truth_flows: u64,
    /// Records delivered to the job intact but absent from its output (must be 0).
    pub missing: u64,
    /// Records whose batch was lost in transit (the job never saw them).
    pub lost_in_transit: u64,
    /// Records the exporter corrupted (the job must reject them).
    pub corrupted: u64,
    /// Corrupted records that nevertheless appear in the output (must be 0).
    pub corrupted_in_output: u64,
    /// Output records repeating a record already output.
    pub duplicates_in_output: u64,
    /// Output records with no truth at all.
    pub unknown_in_output: u64,
    /// Flows whose output records do not all carry the same verdict (must be 0).
    pub verdict_changes: u64,
    /// Messages the job dead-lettered (only when scoring a Kafka run).
    pub dead_lettered_messages: u64,
    /// Records absent from the output but present in a dead-lettered message (refused records,
    /// or records of a refused batch).
    pub dead_lettered: u64,
    /// Records the job received (not lost in transit) that are neither in the output nor
    /// dead-lettered: must be 0 when dead letters are known, and is `missing + corrupted`
    /// otherwise (corrupted records are then only counted by the job).
    pub unaccounted: u64,
    /// Outcomes by the kind of the remote end (`pod`, `load_balancer`, `host_network`, `nat`,
    /// `shared_netns`, `external`, `vacant`).
    pub by_kind: BTreeMap<String, Tally>,
    /// Outcomes by hazard (`ipam_fault`, `exporter_restart`, `remote_exporter_down`,
    /// `preexisting`, `duplicated_id`, `failed_connect`, and `open_slice` for slices); a record
    /// can count under several.
    pub by_condition: BTreeMap<String, Tally>,
    /// Baseline: records it attributed.
    pub baseline_attributed: u64,
    /// Baseline: records it attributed to the wrong workload.
    pub baseline_misattributed: u64,
    /// Baseline: records it attributed correctly.
    pub baseline_correct: u64,
    /// Baseline: wrong attributions by the kind of the remote end.
    pub baseline_misattributed_by_kind: BTreeMap<String, u64>,
}

/// A record's outcome in the output.
#[derive(Clone, Copy)]
enum Outcome<'a> {
    Correct,
    Misattributed,
    Unattributed(&'a str),
}

/// Scores verdicts against truth; `deliveries` (the job's input, in arrival order) feed the
/// baseline (pass none to skip it).
pub fn score(truth: &[TruthFlow], verdicts: &[Verdict], deliveries: &[Delivery]) -> Score {
    let by_key: HashMap<RecordKey, usize> = truth.iter().enumerate().map(|(i, t)| (t.key(), i)).collect();
    let mut s = Score { truth_records: truth.len() as u64, ..Score::default() };
    s.truth_flows = truth.iter().map(|t| t.id).collect::<HashSet<u64>>().len() as u64;
    let mut outcomes: Vec<Option<Outcome<'_>>> = vec![None; truth.len()];
    let mut seen: HashSet<RecordKey> = HashSet::with_capacity(verdicts.len());
    let mut first: HashMap<u64, (Option<&str>, Option<&str>)> = HashMap::new();
    let mut changed: HashSet<u64> = HashSet::new();
    let mut attributed_in_fleet = 0u64;
    for v in verdicts {
        if !seen.insert(v.key()) {
            s.duplicates_in_output += 1;
            continue;
        }
        s.records += 1;
        s.slices += u64::from(v.open);
        let verdict = (v.remote.as_deref(), v.reason.as_deref());
        if *first.entry(v.id).or_insert(verdict) != verdict {
            changed.insert(v.id);
        }
        let Some(&i) = by_key.get(&v.key()) else {
            s.unknown_in_output += 1;
            continue;
        };
        let t = &truth[i];
        if t.fate == Fate::Corrupted {
            s.corrupted_in_output += 1;
        }
        let someone = t.remote.is_some() && !t.is_external();
        s.in_fleet += u64::from(someone);
        attributed_in_fleet += u64::from(someone && v.remote.is_some());
        outcomes[i] = Some(match &v.remote {
            Some(w) => {
                s.attributed += 1;
                *s.attributed_by_evidence.entry(v.evidence.clone().unwrap_or_else(|| "unknown".into())).or_default() +=
                    1;
                if t.remote.as_deref() == Some(w.as_str()) {
                    s.correct += 1;
                    Outcome::Correct
                } else {
                    s.misattributed += 1;
                    Outcome::Misattributed
                }
            }
            None => {
                s.unattributed += 1;
                let reason = v.reason.as_deref().unwrap_or("unknown");
                *s.unattributed_by_reason.entry(reason.to_string()).or_default() += 1;
                Outcome::Unattributed(reason)
            }
        });
    }
    s.flows = first.len() as u64;
    s.verdict_changes = changed.len() as u64;
    for (t, outcome) in truth.iter().zip(&outcomes) {
        match (t.fate, outcome) {
            (Fate::Lost, _) => s.lost_in_transit += 1,
            (Fate::Corrupted, _) => s.corrupted += 1,
            (Fate::Delivered, None) => s.missing += 1,
            (Fate::Delivered, Some(_)) => {}
        }
        count(s.by_kind.entry(t.remote_kind.name().to_string()).or_default(), t, *outcome);
        for c in t.conditions.iter() {
            count(s.by_condition.entry(c.name().to_string()).or_default(), t, *outcome);
        }
        if t.open {
            count(s.by_condition.entry(OPEN_SLICE.to_string()).or_default(), t, *outcome);
        }
    }
    s.unaccounted = s.missing + s.corrupted;
    s.attributed_in_fleet_pct =
        if s.in_fleet == 0 { 0.0 } else { 100.0 * attributed_in_fleet as f64 / s.in_fleet as f64 };
    baseline::run(truth, &by_key, deliveries, &mut s);
    s
}

/// The [`Score::by_condition`] class of open slices.
pub const OPEN_SLICE: &str = "open_slice";

fn count(tally: &mut Tally, t: &TruthFlow, outcome: Option<Outcome<'_>>) {
    tally.records += 1;
    match (t.fate, outcome) {
        (Fate::Lost, _) => tally.lost_in_transit += 1,
        (Fate::Corrupted, _) => tally.corrupted += 1,
        (Fate::Delivered, None) => tally.missing += 1,
        (Fate::Delivered, Some(_)) => {}
    }
    let Some(outcome) = outcome else { return };
    tally.output += 1;
    match outcome {
        Outcome::Correct => tally.correct += 1,
        Outcome::Misattributed => tally.misattributed += 1,
        Outcome::Unattributed(reason) => *tally.unattributed.entry(reason.to_string()).or_default() += 1,
    }
}

/// Accounts for the job's dead letters: `payloads` are the dead-lettered messages (batches,
/// possibly corrupt), `verdicts` the same output that [`score`] saw. Sets
/// [`Score::dead_lettered_messages`], [`Score::dead_lettered`] and [`Score::unaccounted`].
pub fn account_dead_letters(s: &mut Score, truth: &[TruthFlow], verdicts: &[Verdict], payloads: &[Vec<u8>]) {
    let output: HashSet<RecordKey> = verdicts.iter().map(Verdict::key).collect();
    let mut dead: HashSet<RecordKey> = HashSet::new();
    for payload in payloads {
        // Whole-message refusals may not decode at all; their records cannot be named.
        if let Ok(batch) = flowmap_schema::decode_batch(payload) {
            dead.extend(batch.flows.iter().map(|f| RecordKey {
                id: flowmap_schema::flow_id(&batch.exporter_id, f),
                end_ns: f.end_ns,
                open: f.open,
            }));
        }
    }
    s.dead_lettered_messages = payloads.len() as u64;
    s.dead_lettered = 0;
    s.unaccounted = 0;
    for t in truth.iter().filter(|t| t.fate != Fate::Lost && !output.contains(&t.key())) {
        // Only a record the job had to refuse is accounted for by its batch's dead letter: a
        // dead-lettered batch is kept whole, and its good records must be in the output (found
        // by a fresh user: a good record dropped from the output was credited as dead-lettered).
        if t.fate == Fate::Corrupted && dead.contains(&t.key()) {
            s.dead_lettered += 1;
        } else {
            s.unaccounted += 1;
        }
    }
}

#[cfg(test)]
mod tests;
