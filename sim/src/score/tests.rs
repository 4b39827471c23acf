use std::sync::Arc;

use flowmap_schema::{encode_batch, Assignment, ExporterBatch, Flow, SCHEMA_VERSION};

use super::*;
use crate::truth::{Condition, Conditions, EndKind};
use crate::{Scenario, IPAM_FEED};

fn truth(id: u64, end_ns: u64, open: bool, remote: Option<&str>, kind: EndKind, fate: Fate) -> TruthFlow {
    TruthFlow {
        id,
        end_ns,
        open,
        incarnation: 1,
        remote: remote.map(Arc::from),
        remote_kind: kind,
        local: Arc::from("l"),
        fate,
        conditions: Conditions::NONE,
    }
}

fn verdict(id: u64, end_ns: u64, open: bool, remote: Option<&str>, reason: Option<&str>) -> Verdict {
    Verdict {
        id,
        end_ns,
        open,
        remote: remote.map(String::from),
        reason: reason.map(String::from),
        evidence: remote.map(|_| "heartbeat".to_string()),
    }
}

#[test]
fn counts_every_outcome() {
    let t = vec![
        truth(1, 10, true, Some("a"), EndKind::Pod, Fate::Delivered),
        truth(1, 15, false, Some("a"), EndKind::Pod, Fate::Delivered),
        truth(2, 10, false, Some("b"), EndKind::HostNetwork, Fate::Delivered),
        truth(3, 10, false, Some("c"), EndKind::SharedNetns, Fate::Delivered),
        truth(4, 10, false, None, EndKind::External, Fate::Delivered),
        truth(5, 10, false, Some("e"), EndKind::Pod, Fate::Lost),
        truth(6, 10, false, Some("f"), EndKind::Pod, Fate::Corrupted),
        truth(7, 10, false, Some("g"), EndKind::Nat, Fate::Delivered),
        truth(8, 10, false, None, EndKind::Vacant, Fate::Delivered),
    ];
    let v = vec![
        verdict(1, 10, true, Some("a"), None),
        verdict(1, 15, false, Some("a"), None),
        verdict(2, 10, false, Some("x"), None),
        verdict(3, 10, false, None, Some("shared_ip")),
        verdict(4, 10, false, None, Some("external")),
        verdict(1, 15, false, Some("a"), None),
        verdict(99, 10, false, None, Some("no_owner")),
        verdict(8, 10, false, Some("someone"), None),
        // Same flow id as a truth record, another end: not a record of the truth.
        verdict(2, 11, false, Some("x"), None),
    ];
    let s = score(&t, &v, &[]);
    assert_eq!((s.records, s.flows, s.slices), (8, 6, 1), "distinct records, flows, open slices");
    assert_eq!((s.attributed, s.correct, s.misattributed, s.unattributed), (4, 2, 2, 2), "the unknown are apart");
    assert_eq!((s.missing, s.lost_in_transit, s.corrupted), (1, 1, 1));
    assert_eq!((s.duplicates_in_output, s.unknown_in_output), (1, 2));
    assert_eq!((s.truth_records, s.truth_flows), (9, 8));
    assert_eq!(s.in_fleet, 4, "records 1 (twice), 2 and 3: not the external nor the vacant one");
    assert_eq!(s.attributed_in_fleet_pct, 75.0);
    assert_eq!(s.unattributed_by_reason.get("shared_ip"), Some(&1));
    assert_eq!(s.attributed_by_evidence.get("heartbeat"), Some(&4));
    assert_eq!(s.unaccounted, 2, "missing + corrupted without dead letters");
    let pod = &s.by_kind["pod"];
    assert_eq!((pod.records, pod.output, pod.correct, pod.lost_in_transit, pod.corrupted), (4, 2, 2, 1, 1));
    assert_eq!((s.by_kind["host_network"].misattributed, s.by_kind["vacant"].misattributed), (1, 1));
    assert_eq!(s.by_kind["shared_netns"].unattributed.get("shared_ip"), Some(&1));
    assert_eq!(s.by_kind["nat"].missing, 1);
    assert_eq!(s.by_condition[OPEN_SLICE].correct, 1);
}

#[test]
fn a_flow_whose_records_disagree_is_counted_once() {
    let t = vec![
        truth(1, 10, true, Some("a"), EndKind::Pod, Fate::Delivered),
        truth(1, 20, true, Some("a"), EndKind::Pod, Fate::Delivered),
        truth(1, 25, false, Some("a"), EndKind::Pod, Fate::Delivered),
        truth(2, 25, false, Some("b"), EndKind::Pod, Fate::Delivered),
    ];
    let v = vec![
        verdict(1, 10, true, None, Some("no_owner")),
        verdict(1, 20, true, Some("a"), None),
        verdict(1, 25, false, None, Some("near_boundary")),
        verdict(2, 25, false, Some("b"), None),
    ];
    assert_eq!(score(&t, &v, &[]).verdict_changes, 1);
    let same = vec![verdict(1, 10, true, Some("a"), None), verdict(1, 25, false, Some("a"), None)];
    assert_eq!(score(&t, &same, &[]).verdict_changes, 0);
}

#[test]
fn conditions_are_tallied_apart() {
    let mut t = vec![
        truth(1, 10, false, Some("lb"), EndKind::LoadBalancer, Fate::Delivered),
        truth(2, 10, false, Some("p"), EndKind::Pod, Fate::Delivered),
    ];
    t[0].conditions = Conditions::NONE.with(Condition::IpamFault, true).with(Condition::Preexisting, true);
    let v = vec![verdict(1, 10, false, None, Some("source_gap")), verdict(2, 10, false, Some("p"), None)];
    let s = score(&t, &v, &[]);
    assert_eq!(s.by_condition.len(), 2, "{:?}", s.by_condition.keys());
    for c in ["ipam_fault", "preexisting"] {
        assert_eq!(s.by_condition[c].unattributed.get("source_gap"), Some(&1));
        assert_eq!(s.by_condition[c].records, 1);
    }
}

fn batch(exporter: &str, incarnation: u64, seq: u64, flows: Vec<Flow>, assignments: Vec<Assignment>) -> Delivery {
    let b = ExporterBatch {
        schema_version: SCHEMA_VERSION,
        exporter_id: exporter.into(),
        seq,
        window_from_ns: seq * 10,
        window_to_ns: seq * 10 + 10,
        flows,
        heartbeats: Vec::new(),
        assignments,
        incarnation,
    };
    Delivery { key: exporter.into(), arrival: seq, payload: encode_batch(&b) }
}

fn flow(connection_id: u64, remote: [u8; 4], end_ns: u64) -> Flow {
    Flow { local_ip: vec![10, 2, 0, 1], remote_ip: remote.to_vec(), connection_id, end_ns, ..Flow::default() }
}

#[test]
fn dead_letters_account_for_refused_records() {
    let ids = flowmap_schema::FlowIdHasher::new("h");
    let t = vec![
        truth(ids.connection(1), 5, false, Some("a"), EndKind::Pod, Fate::Delivered),
        truth(ids.connection(2), 5, false, Some("a"), EndKind::Pod, Fate::Corrupted),
        truth(ids.connection(3), 5, false, Some("a"), EndKind::Pod, Fate::Delivered),
        truth(ids.connection(4), 5, false, Some("a"), EndKind::Pod, Fate::Lost),
    ];
    let v = vec![verdict(ids.connection(1), 5, false, Some("a"), None)];
    let mut s = score(&t, &v, &[]);
    assert_eq!(s.unaccounted, 2);
    let dead = batch("h", 1, 0, vec![flow(2, [10, 2, 0, 9], 5)], Vec::new()).payload;
    account_dead_letters(&mut s, &t, &v, &[dead, b"garbage".to_vec()]);
    assert_eq!((s.dead_lettered_messages, s.dead_lettered, s.unaccounted), (2, 1, 1), "record 3 is unaccounted");
    // A good record of a dead-lettered batch, missing from the output, is not accounted for by
    // the dead letter (the batch is kept whole, refused in part).
    let partial = batch("h", 1, 0, vec![flow(2, [10, 2, 0, 9], 5), flow(3, [10, 2, 0, 3], 5)], Vec::new()).payload;
    account_dead_letters(&mut s, &t, &v, &[partial]);
    assert_eq!((s.dead_lettered, s.unaccounted), (1, 1), "record 3 is still unaccounted");
}

#[test]
fn the_baseline_uses_the_map_as_it_arrives_and_every_incarnation() {
    let lb = [10, 200, 0, 1];
    let at = |workload: &str, at_ns| Assignment { ip: lb.to_vec(), workload: workload.into(), at_ns };
    let ids = flowmap_schema::FlowIdHasher::new("h");
    // Two flows to the load balancer's address while "old" held it, reported after the
    // address passed to "new"; the second under another incarnation of the same id with the
    // same seq (a restart, or a cloned host): both count.
    let t = vec![
        truth(ids.connection(1), 5, false, Some("old"), EndKind::LoadBalancer, Fate::Delivered),
        truth(ids.connection(2), 6, false, Some("old"), EndKind::LoadBalancer, Fate::Delivered),
    ];
    let deliveries = vec![
        batch(IPAM_FEED, 1, 0, Vec::new(), vec![at("old", 1)]),
        batch(IPAM_FEED, 1, 1, Vec::new(), vec![at("", 12), at("new", 14)]),
        batch("h", 7, 0, vec![flow(1, lb, 5)], Vec::new()),
        batch("h", 8, 0, vec![flow(2, lb, 6)], Vec::new()),
        batch("h", 8, 0, vec![flow(2, lb, 6)], Vec::new()),
    ];
    let s = score(&t, &[], &deliveries);
    assert_eq!((s.baseline_attributed, s.baseline_misattributed, s.baseline_correct), (2, 2, 0));
    assert_eq!(s.baseline_misattributed_by_kind.get("load_balancer"), Some(&2));
}

#[test]
fn a_perfect_job_scores_perfectly_and_the_baseline_does_not() {
    let sim = crate::simulate(&Scenario::adversarial()).unwrap();
    // The verdicts of a job that knows the truth: every record it received, attributed right.
    let verdicts: Vec<Verdict> = sim
        .truth
        .iter()
        .filter(|t| t.fate == Fate::Delivered)
        .map(|t| Verdict {
            id: t.id,
            end_ns: t.end_ns,
            open: t.open,
            remote: t.remote.as_deref().map(String::from),
            reason: t.remote.is_none().then(|| "no_owner".to_string()),
            evidence: t.remote.is_some().then(|| "peer".to_string()),
        })
        .collect();
    let s = score(&sim.truth, &verdicts, &sim.deliveries);
    let delivered = sim.truth.iter().filter(|t| t.fate == Fate::Delivered).count() as u64;
    assert_eq!((s.records, s.misattributed, s.missing, s.verdict_changes), (delivered, 0, 0, 0));
    assert_eq!(s.correct + s.unattributed, delivered);
    assert_eq!(s.attributed_in_fleet_pct, 100.0, "nobody to attribute vacant addresses and closed ports to");
    assert_eq!(s.records + s.lost_in_transit + s.corrupted, s.truth_records, "every record accounted for");
    for (kind, tally) in &s.by_kind {
        assert_eq!(tally.misattributed, 0, "{kind}");
        assert_eq!(tally.records, tally.output + tally.lost_in_transit + tally.corrupted, "{kind}");
    }
    assert_eq!(s.by_kind.len(), EndKind::ALL.len(), "every kind of remote end occurs");
    assert_eq!(s.by_condition.len(), Condition::ALL.len() + 1, "every hazard occurs, and open slices");
    assert!(s.baseline_misattributed > 10_000, "the old method misattributes: {}", s.baseline_misattributed);
    assert!(s.baseline_correct > 10_000, "and attributes many right: {}", s.baseline_correct);
}

#[test]
fn verdicts_read_from_the_wire() {
    let mut a = flowmap_schema::AttributedFlow {
        flow_id: 7,
        end_ns: 70,
        open: true,
        remote_workload: "w".into(),
        evidence: flowmap_schema::Evidence::Peer as i32,
        ..Default::default()
    };
    let v = Verdict::from_wire(&a);
    assert_eq!(
        (v.key(), v.remote.as_deref(), v.reason, v.evidence.as_deref()),
        (RecordKey { id: 7, end_ns: 70, open: true }, Some("w"), None, Some("peer"))
    );
    a.remote_workload.clear();
    a.evidence = 0;
    a.reason = flowmap_schema::Reason::SharedIp as i32;
    assert_eq!(Verdict::from_wire(&a).reason.as_deref(), Some("shared_ip"));
    a.reason = flowmap_schema::Reason::SourceGap as i32;
    assert_eq!(Verdict::from_wire(&a).reason.as_deref(), Some("source_gap"));
    a.reason = 99;
    assert_eq!((Verdict::from_wire(&a).remote, Verdict::from_wire(&a).reason.as_deref()), (None, Some("unknown")));
}
