//! The scorer: compares the job's verdicts with ground truth, and runs the *old* method on the
//! same input as a baseline.
//!
//! The baseline is what a flow log enriched from the IP address manager does today: it keeps a
//! map "IP -> current owner" updated from the assignment feed as the feed's batches arrive, and
//! looks up each flow's remote IP in that map when the flow's batch arrives. Delivery delays
//! and fast IP reuse make it attribute flows to whoever holds the IP *now*, not when the flow
//! started: the misattributions this project exists to remove.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;

use serde::Serialize;

use crate::publish::{Delivery, Fate, TruthFlow, IPAM_FEED};

/// The job's verdict on one flow, as the scorer reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// Flow id.
    pub id: u64,
    /// The attributed remote workload, if any.
    pub remote: Option<String>,
    /// Why not, if not.
    pub reason: Option<String>,
}

/// The comparison.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Score {
    /// Distinct flows in the output.
    pub flows: u64,
    /// Output flows with a remote workload.
    pub attributed: u64,
    /// Output flows left unattributed.
    pub unattributed: u64,
    /// Attributed to the workload that held the IP: right.
    pub correct: u64,
    /// Attributed to a workload that did not hold the IP at the flow's start.
    pub misattributed: u64,
    /// Unattributed flows by reason.
    pub unattributed_by_reason: BTreeMap<String, u64>,
    /// Output flows whose remote end is in the fleet.
    pub in_fleet: u64,
    /// Of those, attributed (percent).
    pub attributed_in_fleet_pct: f64,
    /// Flows delivered to the job intact but absent from its output (must be 0).
    pub missing: u64,
    /// Flows whose batch was lost in transit (the job never saw them).
    pub lost_in_transit: u64,
    /// Flows the exporter corrupted (the job must reject them).
    pub corrupted: u64,
    /// Corrupted flows that nevertheless appear in the output (must be 0).
    pub corrupted_in_output: u64,
    /// Output records repeating a flow id already output.
    pub duplicates_in_output: u64,
    /// Output flows with no truth at all.
    pub unknown_in_output: u64,
    /// Messages the job dead-lettered (only when scoring a Kafka run).
    pub dead_lettered_messages: u64,
    /// Flows absent from the output but present in a dead-lettered message (refused records,
    /// or records of a refused batch).
    pub dead_lettered: u64,
    /// Flows the job received (not lost in transit) that are neither in the output nor
    /// dead-lettered: must be 0 when dead letters are known, and is `missing + corrupted`
    /// otherwise (corrupted records are then only counted by the job).
    pub unaccounted: u64,
    /// Baseline: flows it attributed.
    pub baseline_attributed: u64,
    /// Baseline: flows it attributed to the wrong workload.
    pub baseline_misattributed: u64,
    /// Baseline: flows it attributed correctly.
    pub baseline_correct: u64,
}

/// Scores verdicts against truth; `deliveries` (the job's input, in arrival order) feed the
/// baseline.
pub fn score(truth: &[TruthFlow], verdicts: &[Verdict], deliveries: &[Delivery]) -> Score {
    let by_id: HashMap<u64, &TruthFlow> = truth.iter().map(|t| (t.id, t)).collect();
    let mut s = Score::default();
    let mut seen: HashSet<u64> = HashSet::with_capacity(verdicts.len());
    for v in verdicts {
        if !seen.insert(v.id) {
            s.duplicates_in_output += 1;
            continue;
        }
        s.flows += 1;
        let Some(t) = by_id.get(&v.id) else {
            s.unknown_in_output += 1;
            continue;
        };
        if t.fate == Fate::Corrupted {
            s.corrupted_in_output += 1;
        }
        if !t.external {
            s.in_fleet += 1;
        }
        match &v.remote {
            Some(w) => {
                s.attributed += 1;
                if t.remote.as_deref() == Some(w.as_str()) {
                    s.correct += 1;
                } else {
                    s.misattributed += 1;
                }
            }
            None => {
                s.unattributed += 1;
                let reason = v.reason.clone().unwrap_or_else(|| "unknown".into());
                *s.unattributed_by_reason.entry(reason).or_default() += 1;
            }
        }
    }
    for t in truth {
        match t.fate {
            Fate::Lost => s.lost_in_transit += 1,
            Fate::Corrupted => s.corrupted += 1,
            Fate::Delivered if !seen.contains(&t.id) => s.missing += 1,
            Fate::Delivered => {}
        }
    }
    s.unaccounted = s.missing + s.corrupted;
    let attributed_in_fleet = s.correct + s.misattributed;
    s.attributed_in_fleet_pct =
        if s.in_fleet == 0 { 0.0 } else { 100.0 * attributed_in_fleet as f64 / s.in_fleet as f64 };
    baseline(&by_id, deliveries, &mut s);
    s
}

/// Accounts for the job's dead letters: `payloads` are the dead-lettered messages (batches,
/// possibly corrupt), `verdicts` the same output that [`score`] saw.
pub fn account_dead_letters(s: &mut Score, truth: &[TruthFlow], verdicts: &[Verdict], payloads: &[Vec<u8>]) {
    let output: HashSet<u64> = verdicts.iter().map(|v| v.id).collect();
    let mut dead: HashSet<u64> = HashSet::new();
    for payload in payloads {
        // Whole-message refusals may not decode at all; their flows cannot be named.
        if let Ok(batch) = flowmap_schema::decode_batch(payload) {
            dead.extend(batch.flows.iter().map(|f| flowmap_schema::flow_id(&batch.exporter_id, f)));
        }
    }
    s.dead_lettered_messages = payloads.len() as u64;
    s.dead_lettered = 0;
    s.unaccounted = 0;
    for t in truth.iter().filter(|t| t.fate != Fate::Lost && !output.contains(&t.id)) {
        if dead.contains(&t.id) {
            s.dead_lettered += 1;
        } else {
            s.unaccounted += 1;
        }
    }
}

/// The old method (see the module docs), over the same deliveries.
fn baseline(by_id: &HashMap<u64, &TruthFlow>, deliveries: &[Delivery], s: &mut Score) {
    let mut current: HashMap<IpAddr, String> = HashMap::new();
    let mut seen_batches: HashSet<(String, u64)> = HashSet::new();
    for d in deliveries {
        let Ok(batch) = flowmap_schema::decode_batch(&d.payload) else { continue };
        if !seen_batches.insert((batch.exporter_id.clone(), batch.seq)) {
            continue;
        }
        if batch.exporter_id == IPAM_FEED {
            for a in &batch.assignments {
                let Some(ip) = flowmap_schema::ip_from_bytes(&a.ip) else { continue };
                if a.workload.is_empty() {
                    current.remove(&ip);
                } else {
                    current.insert(ip, a.workload.clone());
                }
            }
            continue;
        }
        for f in &batch.flows {
            let Some(ip) = flowmap_schema::ip_from_bytes(&f.remote_ip) else { continue };
            let Some(owner) = current.get(&ip) else { continue };
            let id = flowmap_schema::flow_id(&batch.exporter_id, f);
            s.baseline_attributed += 1;
            match by_id.get(&id) {
                Some(t) if t.remote.as_deref() == Some(owner.as_str()) => s.baseline_correct += 1,
                _ => s.baseline_misattributed += 1,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn truth(id: u64, remote: Option<&str>, fate: Fate) -> TruthFlow {
        TruthFlow { id, remote: remote.map(String::from), local: "l".into(), external: remote.is_none(), fate }
    }

    fn verdict(id: u64, remote: Option<&str>, reason: Option<&str>) -> Verdict {
        Verdict { id, remote: remote.map(String::from), reason: reason.map(String::from) }
    }

    #[test]
    fn counts_every_outcome() {
        let t = vec![
            truth(1, Some("a"), Fate::Delivered),
            truth(2, Some("b"), Fate::Delivered),
            truth(3, Some("c"), Fate::Delivered),
            truth(4, None, Fate::Delivered),
            truth(5, Some("e"), Fate::Lost),
            truth(6, Some("f"), Fate::Corrupted),
            truth(7, Some("g"), Fate::Delivered),
        ];
        let v = vec![
            verdict(1, Some("a"), None),
            verdict(2, Some("x"), None),
            verdict(3, None, Some("conflict")),
            verdict(4, None, Some("external")),
            verdict(1, Some("a"), None),
            verdict(99, None, Some("no_owner")),
        ];
        let s = score(&t, &v, &[]);
        assert_eq!(
            (s.flows, s.attributed, s.correct, s.misattributed, s.unattributed),
            (5, 2, 1, 1, 2),
            "the unknown flow is counted apart"
        );
        assert_eq!((s.missing, s.lost_in_transit, s.corrupted), (1, 1, 1));
        assert_eq!((s.duplicates_in_output, s.unknown_in_output), (1, 1));
        assert_eq!(s.in_fleet, 3);
        assert_eq!(s.unattributed_by_reason.get("conflict"), Some(&1));
    }
}
