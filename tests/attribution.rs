//! The attribution job end to end, in process: simulated fleets through the real dataflow,
//! scored against ground truth.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use flowmap::config::JobConfig;
use flowmap_sim::Scenario;
use proptest::prelude::*;

#[test]
fn adversarial_never_misattributes_and_the_baseline_does() {
    let (sim, report, score) = simulate_and_score(&Scenario::adversarial(), 2);
    assert!(score.flows > 100_000, "a real workload: {} flows", score.flows);
    assert_eq!(score.misattributed, 0, "{score:?}");
    assert!(score.baseline_misattributed > 0, "the old method fails on the same input: {score:?}");
    assert_eq!(score.missing, 0, "every delivered flow is in the output");
    assert_eq!(score.duplicates_in_output, 0);
    assert_eq!(score.corrupted_in_output, 0);
    assert!(report.ingest.duplicate_batches > 0 && report.ingest.lost_batches > 0, "{:?}", report.ingest);
    assert!(report.ingest.rejected_malformed > 0 && report.ingest.rejected_address > 0, "{:?}", report.ingest);
    // Every flow the exporters produced is accounted for: output, lost in transit, or rejected.
    assert_eq!(score.records + score.lost_in_transit + score.corrupted, sim.truth.len() as u64);
    assert_eq!(score.verdict_changes, 0, "one verdict per flow");
    // 72.3% measured: short connections whose remote only its own record names stay
    // unattributed since the peer rule needs proof (README, "Known gaps").
    assert!(score.attributed_in_fleet_pct > 70.0, "{score:?}");
}

#[test]
fn steady_attributes_most_fleet_flows() {
    let (_, _, score) = simulate_and_score(&Scenario::steady(), 2);
    assert_eq!(score.misattributed, 0);
    // 90.7% measured (99.98% before the peer rule needed proof: README, "Known gaps").
    assert!(score.attributed_in_fleet_pct >= 90.0, "{score:?}");
    assert_eq!(score.missing, 0);
}

#[test]
fn one_and_two_workers_give_the_same_output() {
    let scenario = small_adversarial(11);
    let sim = flowmap_sim::simulate(&scenario).unwrap();
    let one = attribute(sim.deliveries.clone(), sim.roster.clone(), 1, JobConfig::default());
    let two = attribute(sim.deliveries.clone(), sim.roster.clone(), 2, JobConfig::default());
    assert!(!one.flows.is_empty());
    assert_eq!(records(&one), records(&two));
    assert_eq!(one.ingest, two.ingest);
}

#[test]
fn adversarial_output_is_independent_of_arrival_order_and_workers() {
    let sim = flowmap_sim::simulate(&Scenario::adversarial()).unwrap();
    let one = records(&attribute(sim.deliveries.clone(), sim.roster.clone(), 1, JobConfig::default()));
    let shuffled = interleave(&sim.deliveries, 7);
    let two = records(&attribute(shuffled, sim.roster.clone(), 2, JobConfig::default()));
    assert!(one.len() > 100_000);
    assert!(one == two, "output differs between arrival orders / worker counts");
}

#[test]
fn evidence_kinds_are_all_used() {
    let (_, report, _) = simulate_and_score(&small_adversarial(5), 1);
    let kinds: std::collections::BTreeSet<String> = records(&report).into_iter().filter_map(|r| r.evidence).collect();
    assert!(kinds.contains("heartbeat") && kinds.contains("assignment"), "{kinds:?}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, .. ProptestConfig::default() })]

    /// Any seed of the adversarial fleet: no misattribution, nothing delivered goes missing.
    #[test]
    fn random_adversarial_fleets_never_misattribute(seed in 100u64..100_000) {
        let (_, _, score) = simulate_and_score(&small_adversarial(seed), 1);
        prop_assert_eq!(score.misattributed, 0);
        prop_assert_eq!(score.missing, 0);
        prop_assert!(score.flows > 0);
    }

    /// The same input in any arrival order (each exporter's own order kept, as the transport
    /// guarantees) gives byte-identical output, with 1 or 2 workers.
    #[test]
    fn arrival_order_does_not_change_the_output(seed in 1u64..1_000, order in any::<u64>(), workers in 1usize..=2) {
        let sim = flowmap_sim::simulate(&small_adversarial(seed)).unwrap();
        let baseline = records(&attribute(sim.deliveries.clone(), sim.roster.clone(), 1, JobConfig::default()));
        let shuffled = interleave(&sim.deliveries, order);
        prop_assert_ne!(&shuffled, &sim.deliveries);
        let again = records(&attribute(shuffled, sim.roster.clone(), workers, JobConfig::default()));
        prop_assert_eq!(baseline, again);
    }
}

/// A transport that breaks one exporter's order (batch k+1 before batch k): batch k is first
/// counted lost, then arrives late; it is still used, nothing is lost, nothing misattributed.
#[test]
fn out_of_order_batches_are_late_not_lost() {
    let sim = flowmap_sim::simulate(&small_adversarial(21)).unwrap();
    let mut deliveries = sim.deliveries.clone();
    // The exporter with the most batches (one incarnation: no restart in its stream).
    let key = sim.roster.iter().max_by_key(|k| deliveries.iter().filter(|d| &d.key == *k).count()).unwrap().clone();
    // First deliveries of each (incarnation, sequence number) of that exporter, in order.
    let mut seen = std::collections::HashSet::new();
    let positions: Vec<(usize, (u64, u64))> = deliveries
        .iter()
        .enumerate()
        .filter(|(_, d)| d.key == key)
        .filter_map(|(i, d)| flowmap_schema::view_batch(&d.payload).ok().map(|b| (i, (b.incarnation, b.seq))))
        .filter(|(_, id)| seen.insert(*id))
        .collect();
    let mut swapped = 0;
    for pair in positions.windows(2).step_by(4) {
        let ((a, (inc_a, seq_a)), (b, (inc_b, seq_b))) = (pair[0], pair[1]);
        if inc_a == inc_b && seq_b == seq_a + 1 {
            deliveries.swap(a, b);
            swapped += 1;
        }
    }
    assert!(swapped > 3);
    let before = attribute(sim.deliveries.clone(), sim.roster.clone(), 2, JobConfig::default()).ingest.late_batches;
    let report = attribute(deliveries, sim.roster.clone(), 2, JobConfig::default());
    assert_eq!(report.ingest.late_batches, before + swapped, "{:?}", report.ingest);
    let score = score(&sim, &report);
    assert_eq!(score.misattributed, 0);
    assert_eq!(score.missing, 0, "late batches are used, not dropped");
}
