use proptest::prelude::*;

use super::*;
use crate::types::{EvidenceKind::*, OPEN};

fn w(name: &str) -> Workload {
    Workload::new(name)
}

fn claim(kind: EvidenceKind, from: Time, to: Time, name: &str) -> Claim {
    Claim { kind, from, to, workload: w(name) }
}

/// The owner at `t` by brute force: the set of distinct workloads whose ranges contain `t`.
fn owners_at(claims: &[(Time, Time, Workload)], t: Time) -> Vec<Workload> {
    let mut owners: Vec<Workload> =
        claims.iter().filter(|(f, to, _)| *f <= t && t < *to).map(|(_, _, w)| w.clone()).collect();
    owners.sort();
    owners.dedup();
    owners
}

#[test]
fn same_workload_abutting_and_overlapping_merge() {
    let a = w("a");
    let set = RangeSet::build([(0, 10, &a), (10, 20, &a), (15, 30, &a)]);
    assert_eq!(set.segments(), &[Segment { from: 0, to: 30, owner: Owner::One(a.clone()) }]);
}

#[test]
fn different_workloads_overlap_is_conflict() {
    let (a, b) = (w("a"), w("b"));
    let set = RangeSet::build([(0, 10, &a), (5, 20, &b)]);
    assert_eq!(
        set.segments(),
        &[
            Segment { from: 0, to: 5, owner: Owner::One(a) },
            Segment { from: 5, to: 10, owner: Owner::Conflict },
            Segment { from: 10, to: 20, owner: Owner::One(b) },
        ]
    );
}

#[test]
fn gap_and_empty_ranges() {
    let a = w("a");
    let set = RangeSet::build([(0, 10, &a), (12, 20, &a), (30, 30, &a), (40, 35, &a)]);
    assert_eq!(set.segments().len(), 2);
    assert!(set.segment_at(11).is_none());
    assert!(set.segment_at(10).is_none());
    assert_eq!(set.segment_at(12).map(|s| s.from), Some(12));
    assert!(RangeSet::build([]).segment_at(0).is_none());
}

#[test]
fn decide_inside_guard_band() {
    let claims = [claim(Heartbeat, 100, 200, "a"), claim(Heartbeat, 200, 300, "b")];
    let ok = |name: &str| Attribution::Workload { workload: w(name), evidence: Heartbeat };
    assert_eq!(decide(&claims, 150, 10), ok("a"));
    assert_eq!(decide(&claims, 250, 10), ok("b"));
    assert_eq!(decide(&claims, 195, 10), Attribution::Unattributed(Reason::NearBoundary));
    assert_eq!(decide(&claims, 205, 10), Attribution::Unattributed(Reason::NearBoundary));
    assert_eq!(decide(&claims, 105, 10), Attribution::Unattributed(Reason::NearBoundary));
    assert_eq!(decide(&claims, 50, 10), Attribution::Unattributed(Reason::NoOwner));
    // Exactly at the band edges: [t-g, t+g] must be inside [from, to).
    assert_eq!(decide(&claims, 110, 10), ok("a"));
    assert_eq!(decide(&claims, 189, 10), ok("a"));
    assert_eq!(decide(&claims, 190, 10), Attribution::Unattributed(Reason::NearBoundary));
}

#[test]
fn decide_conflict() {
    let claims = [claim(Heartbeat, 0, 100, "a"), claim(Flow, 50, 60, "b")];
    assert_eq!(decide(&claims, 55, 1), Attribution::Unattributed(Reason::Conflict));
    // Near, not at, the conflicting claim.
    assert_eq!(decide(&claims, 45, 10), Attribution::Unattributed(Reason::NearBoundary));
}

#[test]
fn flow_evidence_merges_with_heartbeats() {
    let claims = [claim(Heartbeat, 0, 100, "a"), claim(Flow, 90, 150, "a")];
    let got = decide(&claims, 120, 10);
    assert_eq!(got, Attribution::Workload { workload: w("a"), evidence: Flow });
    let got = decide(&claims, 95, 10);
    assert_eq!(got, Attribution::Workload { workload: w("a"), evidence: Heartbeat });
}

#[test]
fn assignments_only_where_no_exporter_evidence() {
    let lb = claim(Assignment, 0, OPEN, "lb");
    assert_eq!(
        decide(std::slice::from_ref(&lb), 1_000, 10),
        Attribution::Workload { workload: w("lb"), evidence: Assignment }
    );
    // A heartbeat of another owner near the instant overrides the assignment.
    let claims = [lb.clone(), claim(Heartbeat, 995, 2_000, "pod")];
    assert_eq!(decide(&claims, 1_000, 10), Attribution::Unattributed(Reason::NearBoundary));
    assert_eq!(decide(&claims, 990, 10), Attribution::Unattributed(Reason::NoOwner));
    // Far from the heartbeat, the assignment applies.
    assert_eq!(decide(&claims, 500, 10), Attribution::Workload { workload: w("lb"), evidence: Assignment });
}

#[test]
fn saturating_edges() {
    // The band is clipped at the ends of the time axis rather than overflowing.
    let claims = [claim(Heartbeat, 1, 100, "a")];
    assert_eq!(decide(&claims, 5, 10), Attribution::Unattributed(Reason::NearBoundary));
    let claims = [claim(Assignment, 0, OPEN, "a")];
    assert_eq!(decide(&claims, Time::MAX - 1, 10), Attribution::Workload { workload: w("a"), evidence: Assignment });
}

fn arb_claims(max_time: Time) -> impl Strategy<Value = Vec<(Time, Time, Workload)>> {
    proptest::collection::vec(
        (0..max_time, 0..max_time / 2, 0u8..4)
            .prop_map(|(from, len, who)| (from, from + len, Workload::new(&format!("w{who}")))),
        0..12,
    )
}

proptest! {
    /// Segments are sorted, disjoint, non-empty, adjacent ones differ, and at every instant
    /// the segment owner equals the brute-force owner set: one workload, a conflict, or none.
    #[test]
    fn range_set_matches_pointwise_definition(claims in arb_claims(60)) {
        let set = RangeSet::build(claims.iter().map(|(f, t, w)| (*f, *t, w)));
        for pair in set.segments().windows(2) {
            prop_assert!(pair[0].to <= pair[1].from);
            prop_assert!(!(pair[0].to == pair[1].from && pair[0].owner == pair[1].owner));
        }
        for s in set.segments() {
            prop_assert!(s.from < s.to);
        }
        for t in 0..100 {
            let owners = owners_at(&claims, t);
            let got = set.segment_at(t).map(|s| s.owner.clone());
            let want = match owners.as_slice() {
                [] => None,
                [one] => Some(Owner::One(one.clone())),
                _ => Some(Owner::Conflict),
            };
            prop_assert_eq!(got, want, "t = {}", t);
        }
    }

    /// The order of claims never changes the set.
    #[test]
    fn range_set_is_order_independent(claims in arb_claims(60), seed in any::<u64>()) {
        let mut shuffled = claims.clone();
        let n = shuffled.len();
        for i in 0..n {
            let j = (seed.wrapping_mul(i as u64 + 1).rotate_left(17) % n as u64) as usize;
            shuffled.swap(i, j);
        }
        let a = RangeSet::build(claims.iter().map(|(f, t, w)| (*f, *t, w)));
        let b = RangeSet::build(shuffled.iter().map(|(f, t, w)| (*f, *t, w)));
        prop_assert_eq!(a, b);
    }

    /// The single-claimant fast path agrees with the general range-set rule.
    #[test]
    fn decide_single_claimant_matches_range_set(
        ranges in proptest::collection::vec((0..60u64, 0..30u64), 1..8), at in 0..70u64, guard in 0..6u64,
    ) {
        let a = w("a");
        let claims: Vec<Claim> = ranges.iter()
            .map(|(f, len)| Claim { kind: Heartbeat, from: *f, to: f + len, workload: a.clone() })
            .collect();
        let set = RangeSet::build(claims.iter().filter(|c| c.from < at + guard + 1 && at.saturating_sub(guard) < c.to).map(|c| (c.from, c.to, &c.workload)));
        let want = match set.segment_at(at) {
            None => Attribution::Unattributed(Reason::NoOwner),
            Some(s) if s.from > at.saturating_sub(guard) || s.to < at + guard + 1 => Attribution::Unattributed(Reason::NearBoundary),
            Some(_) => Attribution::Workload { workload: a.clone(), evidence: Heartbeat },
        };
        prop_assert_eq!(decide(&claims, at, guard), want);
    }

    /// `decide` attributes W only if W, and no one else, holds every instant of the band.
    #[test]
    fn decide_never_attributes_without_full_clean_cover(
        claims in arb_claims(60), at in 0..70u64, guard in 0..6u64,
    ) {
        let typed: Vec<Claim> = claims.iter()
            .map(|(f, t, w)| Claim { kind: Heartbeat, from: *f, to: *t, workload: w.clone() })
            .collect();
        if let Attribution::Workload { workload, .. } = decide(&typed, at, guard) {
            for t in at.saturating_sub(guard)..=at + guard {
                prop_assert_eq!(owners_at(&claims, t), vec![workload.clone()], "t = {}", t);
            }
        } else {
            // And when one workload does hold the whole band alone, it is attributed.
            let band: Vec<Vec<Workload>> = (at.saturating_sub(guard)..=at + guard)
                .map(|t| owners_at(&claims, t)).collect();
            let first = band[0].clone();
            prop_assert!(!(first.len() == 1 && band.iter().all(|o| *o == first)));
        }
    }
}
