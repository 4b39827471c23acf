use proptest::prelude::*;

use super::*;
use crate::types::EvidenceKind::*;

fn span(kind: EvidenceKind, from: Time, to: Time, workload: &'static str) -> Span<'static> {
    Span { from, to, workload, kind }
}

fn ok(workload: &str, evidence: EvidenceKind) -> Decision<'_> {
    Decision::Attributed { workload, evidence }
}

const fn no(reason: Reason) -> Decision<'static> {
    Decision::Unattributed(reason)
}

/// The owners of instant `t` by brute force: the distinct workloads whose ranges contain it.
fn owners_at<'a>(claims: &[Span<'a>], t: Time) -> Vec<&'a str> {
    let mut owners: Vec<&str> = claims.iter().filter(|c| c.from <= t && t < c.to).map(|c| c.workload).collect();
    owners.sort_unstable();
    owners.dedup();
    owners
}

/// The range rule, pointwise: W iff W alone holds every instant of the band.
fn pointwise<'a>(claims: &[Span<'a>], at: Time, guard: Time) -> Decision<'a> {
    pointwise_in(claims, Band::point(at, guard))
}

/// The range rule over a band, pointwise: the owner of the anchor, if it alone holds every
/// instant of the band.
fn pointwise_in<'a>(claims: &[Span<'a>], b: Band) -> Decision<'a> {
    let Band { at, lo, hi } = b;
    let near: Vec<Span<'a>> = claims.iter().copied().filter(|c| touches(c.from, c.to, (lo, hi))).collect();
    let here = owners_at(&near, at);
    match here.as_slice() {
        [] => no(Reason::NoOwner),
        [_, _, ..] => no(Reason::Conflict),
        [w] => {
            if (lo..hi).all(|t| owners_at(&near, t) == [*w]) {
                let kind = near.iter().filter(|c| c.workload == *w).map(|c| c.kind).min_by_key(|k| k.rank());
                ok(w, kind.unwrap_or(Assignment))
            } else {
                no(Reason::NearBoundary)
            }
        }
    }
}

/// The whole rule, pointwise (see the module docs, in the same order).
fn rule_pointwise<'a>(c: &Candidates<'a>, at: Time, guard: Time) -> Decision<'a> {
    rule_pointwise_in(c, Band::point(at, guard))
}

/// The whole rule over a band, pointwise.
fn rule_pointwise_in<'a>(c: &Candidates<'a>, band: Band) -> Decision<'a> {
    let b = band.range();
    if let Some(first) = c.peers.first() {
        if c.peers.iter().any(|w| w != first) {
            return no(Reason::Conflict);
        }
        // Every claim in the band on this port, the whole address or by assignment names the
        // peer's workload: the peer decides. Otherwise the claims do, and never a workload.
        let others =
            c.exact.iter().chain(&c.whole).chain(&c.assigned).any(|s| touches(s.from, s.to, b) && s.workload != *first);
        // The peer's own address-level evidence in the band, if any, holds the anchor.
        let own: Vec<Span<'a>> = c
            .whole
            .iter()
            .chain(&c.assigned)
            .chain(c.exact.iter().filter(|s| s.kind != Flow))
            .copied()
            .filter(|s| touches(s.from, s.to, b) && s.workload == *first)
            .collect();
        let holds_at = own.iter().any(|s| s.from <= band.at && band.at < s.to);
        if !others && (own.is_empty() || holds_at) {
            return ok(first, Peer);
        }
        let claims = rule_pointwise_in(&Candidates { peers: Vec::new(), ..c.clone() }, band);
        return if matches!(claims, Decision::Attributed { .. }) { no(Reason::Conflict) } else { claims };
    }
    let touching = |v: &[Span<'a>]| v.iter().any(|s| touches(s.from, s.to, b));
    let exact_counts: Vec<Span<'a>> =
        c.exact.iter().copied().filter(|s| !inside_whole_heartbeat(s, &c.whole)).collect();
    if touching(&exact_counts) {
        let both: Vec<Span<'a>> = c.exact.iter().chain(&c.whole).copied().collect();
        return pointwise_in(&both, band);
    }
    let (lo, hi) = b;
    let holds_whole = |w: &str| c.whole.iter().any(|s| s.workload == w && touches(s.from, s.to, (lo, hi)));
    if c.other.iter().any(|o| touches(o.from, o.to, (lo, hi)) && !holds_whole(o.workload)) {
        return no(Reason::SharedIp);
    }
    if touching(&c.whole) {
        return pointwise_in(&c.whole, band);
    }
    match pointwise_in(&c.assigned, band) {
        Decision::Unattributed(Reason::NoOwner | Reason::NearBoundary) if c.assignment_cut => no(Reason::SourceGap),
        d => d,
    }
}

#[test]
fn same_workload_abutting_and_overlapping_merge() {
    let set = RangeSet::build([(0, 10, "a"), (10, 20, "a"), (15, 30, "a")]);
    assert_eq!(set.segments(), &[Segment { from: 0, to: 30, owner: Owner::One("a") }]);
}

#[test]
fn different_workloads_overlap_is_conflict() {
    let set = RangeSet::build([(0, 10, "a"), (5, 20, "b")]);
    assert_eq!(
        set.segments(),
        &[
            Segment { from: 0, to: 5, owner: Owner::One("a") },
            Segment { from: 5, to: 10, owner: Owner::Conflict },
            Segment { from: 10, to: 20, owner: Owner::One("b") },
        ]
    );
}

#[test]
fn gap_and_empty_ranges() {
    let set = RangeSet::build([(0, 10, "a"), (12, 20, "a"), (30, 30, "a"), (40, 35, "a")]);
    assert_eq!(set.segments().len(), 2);
    assert!(set.segment_at(11).is_none());
    assert!(set.segment_at(10).is_none());
    assert_eq!(set.segment_at(12).map(|s| s.from), Some(12));
    assert!(RangeSet::build([]).segment_at(0).is_none());
}

fn whole(spans: Vec<Span<'static>>) -> Candidates<'static> {
    Candidates { whole: spans, ..Default::default() }
}

#[test]
fn decide_inside_guard_band() {
    let c = whole(vec![span(Heartbeat, 100, 200, "a"), span(Heartbeat, 200, 300, "b")]);
    assert_eq!(decide(&c, 150, 10), ok("a", Heartbeat));
    assert_eq!(decide(&c, 250, 10), ok("b", Heartbeat));
    assert_eq!(decide(&c, 195, 10), no(Reason::NearBoundary));
    assert_eq!(decide(&c, 205, 10), no(Reason::NearBoundary));
    assert_eq!(decide(&c, 105, 10), no(Reason::NearBoundary));
    assert_eq!(decide(&c, 50, 10), no(Reason::NoOwner));
    // Exactly at the band edges: [t-g, t+g] must be inside [from, to).
    assert_eq!(decide(&c, 110, 10), ok("a", Heartbeat));
    assert_eq!(decide(&c, 189, 10), ok("a", Heartbeat));
    assert_eq!(decide(&c, 190, 10), no(Reason::NearBoundary));
}

#[test]
fn decide_conflict() {
    let c = whole(vec![span(Heartbeat, 0, 100, "a"), span(Flow, 50, 60, "b")]);
    assert_eq!(decide(&c, 55, 1), no(Reason::Conflict));
    // Near, not at, the conflicting claim.
    assert_eq!(decide(&c, 45, 10), no(Reason::NearBoundary));
}

#[test]
fn flow_evidence_merges_with_heartbeats() {
    let c = whole(vec![span(Heartbeat, 0, 100, "a"), span(Flow, 90, 150, "a")]);
    assert_eq!(decide(&c, 120, 10), ok("a", Flow));
    assert_eq!(decide(&c, 95, 10), ok("a", Heartbeat));
}

#[test]
fn assignments_only_where_no_exporter_evidence() {
    let lb = span(Assignment, 0, Time::MAX, "lb");
    let c = Candidates { assigned: vec![lb], ..Default::default() };
    assert_eq!(decide(&c, 1_000, 10), ok("lb", Assignment));
    // A heartbeat of another owner near the instant overrides the assignment.
    let c = Candidates { assigned: vec![lb], whole: vec![span(Heartbeat, 995, 2_000, "pod")], ..Default::default() };
    assert_eq!(decide(&c, 1_000, 10), no(Reason::NearBoundary));
    assert_eq!(decide(&c, 990, 10), no(Reason::NoOwner));
    // Far from the heartbeat, the assignment applies.
    assert_eq!(decide(&c, 500, 10), ok("lb", Assignment));
}

/// The smallest input of kind 1 of "Never the wrong owner": `web` holds port 8080 of an
/// address; a flow to port 5432 of the same address is not `web`'s.
#[test]
fn a_port_claim_does_not_lend_its_identity_to_the_address() {
    let web = span(Flow, 1_000, 19_000, "web");
    let c = Candidates { other: vec![web], ..Default::default() };
    assert_eq!(decide(&c, 5_000, 2_000), no(Reason::SharedIp));
    let c = Candidates { exact: vec![web], ..Default::default() };
    assert_eq!(decide(&c, 5_000, 2_000), ok("web", Flow));
    // A whole-IP claim of another workload contradicts the port claim: conflict.
    let c = Candidates { exact: vec![web], whole: vec![span(Heartbeat, 0, 20_000, "host")], ..Default::default() };
    assert_eq!(decide(&c, 5_000, 2_000), no(Reason::Conflict));
    // Another workload's port outweighs whole-IP claims: the address is shared.
    let c = Candidates { other: vec![web], whole: vec![span(Heartbeat, 0, 20_000, "host")], ..Default::default() };
    assert_eq!(decide(&c, 5_000, 2_000), no(Reason::SharedIp));
    // The whole address's own holder's port claims say nothing about sharing.
    let c = Candidates { other: vec![web], whole: vec![span(Heartbeat, 0, 20_000, "web")], ..Default::default() };
    assert_eq!(decide(&c, 5_000, 2_000), ok("web", Heartbeat));
}

#[test]
fn peers_are_first_hand() {
    let c = Candidates { peers: vec!["db", "db"], other: vec![span(Flow, 0, 9_000, "x")], ..Default::default() };
    assert_eq!(decide(&c, 5_000, 2_000), ok("db", Peer));
    let c = Candidates { peers: vec!["db", "web"], ..Default::default() };
    assert_eq!(decide(&c, 5_000, 2_000), no(Reason::Conflict));
}

/// Found by a fresh user: a peer record never outweighs a claim that names another workload.
/// A whole-IP heartbeat of `db` against a peer `impostor` is a conflict; a reused 4-tuple
/// matched to `old`'s record across the change to `new` (heartbeats, or an assignment) leaves
/// the claims to decide (`near_boundary`), never `old`.
#[test]
fn regression_a_peer_contradicted_by_a_claim_decides_nothing() {
    let c = Candidates { peers: vec!["impostor"], whole: vec![span(Heartbeat, 0, 60_000, "db")], ..Default::default() };
    assert_eq!(decide(&c, 15_000, 2_000), no(Reason::Conflict));
    let c = Candidates {
        peers: vec!["old"],
        whole: vec![span(Heartbeat, 0, 15_000, "old"), span(Heartbeat, 15_000, 60_000, "new")],
        ..Default::default()
    };
    assert_eq!(decide(&c, 15_500, 2_000), no(Reason::NearBoundary));
    let c = Candidates {
        peers: vec!["old"],
        assigned: vec![span(Assignment, 0, 15_000, "old"), span(Assignment, 15_000, 60_000, "lb-new")],
        ..Default::default()
    };
    assert_eq!(decide(&c, 15_900, 2_000), no(Reason::NearBoundary));
    // Claims of the peer's own workload holding the flow's start (even ending within the band),
    // or on other ports only, leave the peer to decide.
    let c = Candidates { peers: vec!["db"], whole: vec![span(Heartbeat, 0, 15_000, "db")], ..Default::default() };
    assert_eq!(decide(&c, 14_000, 2_000), ok("db", Peer));
    let c = Candidates {
        peers: vec!["web"],
        exact: vec![span(Flow, 14_000, 14_400, "web")],
        other: vec![span(Flow, 0, 60_000, "sidecar")],
        ..Default::default()
    };
    assert_eq!(decide(&c, 14_500, 2_000), ok("web", Peer), "a shared address's tenant, known by its own record");
    // The peer's own evidence ends (or begins) inside the band and nobody else is known: the
    // address changed hands there (an unmonitored new owner), so the record may be another
    // connection's: the claims decide.
    let c = Candidates { peers: vec!["old"], whole: vec![span(Heartbeat, 0, 15_000, "old")], ..Default::default() };
    assert_eq!(decide(&c, 15_500, 2_000), no(Reason::NoOwner));
    let c =
        Candidates { peers: vec!["new"], whole: vec![span(Heartbeat, 17_000, 60_000, "new")], ..Default::default() };
    assert_eq!(decide(&c, 15_500, 2_000), no(Reason::NoOwner));
}

/// The smallest input of kind 2: an assignment cut at its source's gap.
#[test]
fn an_assignment_cut_by_its_source_is_a_source_gap() {
    let c =
        Candidates { assigned: vec![span(Assignment, 3, 10, "lb-old")], assignment_cut: true, ..Default::default() };
    assert_eq!(decide(&c, 25, 2), no(Reason::SourceGap));
    assert_eq!(decide(&c, 6, 2), ok("lb-old", Assignment));
    assert_eq!(decide(&c, 9, 2), no(Reason::SourceGap), "the cut inside the band");
}

#[test]
fn saturating_edges() {
    let c = whole(vec![span(Heartbeat, 1, 100, "a")]);
    assert_eq!(decide(&c, 5, 10), no(Reason::NearBoundary));
    let c = Candidates { assigned: vec![span(Assignment, 0, Time::MAX, "a")], ..Default::default() };
    assert_eq!(decide(&c, Time::MAX - 1, 10), ok("a", Assignment));
}

const NAMES: [&str; 4] = ["w0", "w1", "w2", "w3"];

fn arb_spans(max_time: Time, kind: EvidenceKind) -> impl Strategy<Value = Vec<Span<'static>>> {
    proptest::collection::vec(
        (0..max_time, 0..max_time / 2, 0usize..4, 0u8..2).prop_map(move |(from, len, who, k)| Span {
            from,
            to: from + len,
            workload: NAMES[who],
            kind: if kind == Assignment {
                Assignment
            } else if k == 0 {
                Heartbeat
            } else {
                Flow
            },
        }),
        0..8,
    )
}

fn arb_candidates() -> impl Strategy<Value = Candidates<'static>> {
    (
        proptest::collection::vec(0usize..3, 0..3),
        arb_spans(60, Heartbeat),
        arb_spans(60, Heartbeat),
        arb_spans(60, Heartbeat),
        arb_spans(60, Assignment),
        any::<bool>(),
    )
        .prop_map(|(peers, exact, whole, other, assigned, assignment_cut)| Candidates {
            peers: peers.into_iter().map(|i| NAMES[i]).collect(),
            exact,
            whole,
            other,
            assigned,
            assignment_cut,
        })
}

proptest! {
    /// Segments are sorted, disjoint, non-empty, adjacent ones differ, and at every instant
    /// the segment owner equals the brute-force owner set: one workload, a conflict, or none.
    #[test]
    fn range_set_matches_pointwise_definition(claims in arb_spans(60, Heartbeat)) {
        let set = RangeSet::build(claims.iter().map(|c| (c.from, c.to, c.workload)));
        for pair in set.segments().windows(2) {
            prop_assert!(pair[0].to <= pair[1].from);
            prop_assert!(!(pair[0].to == pair[1].from && pair[0].owner == pair[1].owner));
        }
        for s in set.segments() {
            prop_assert!(s.from < s.to);
        }
        for t in 0..100 {
            let want = match owners_at(&claims, t).as_slice() {
                [] => None,
                [one] => Some(Owner::One(one)),
                _ => Some(Owner::Conflict),
            };
            prop_assert_eq!(set.segment_at(t).map(|s| s.owner), want, "t = {}", t);
        }
    }

    /// The order of claims never changes the set.
    #[test]
    fn range_set_is_order_independent(claims in arb_spans(60, Heartbeat), seed in any::<u64>()) {
        let mut shuffled = claims.clone();
        let n = shuffled.len();
        for i in 0..n {
            let j = (seed.wrapping_mul(i as u64 + 1).rotate_left(17) % n as u64) as usize;
            shuffled.swap(i, j);
        }
        let a = RangeSet::build(claims.iter().map(|c| (c.from, c.to, c.workload)));
        let b = RangeSet::build(shuffled.iter().map(|c| (c.from, c.to, c.workload)));
        prop_assert_eq!(a, b);
    }

    /// The range rule (fast path and sweep) equals its pointwise definition.
    #[test]
    fn ranges_match_pointwise(claims in arb_spans(60, Heartbeat), at in 0..70u64, guard in 0..6u64) {
        let (lo, hi) = band(at, guard);
        let got = ranges(claims.iter().filter(|c| touches(c.from, c.to, (lo, hi))).copied(), at, guard);
        prop_assert_eq!(got, pointwise(&claims, at, guard));
    }

    /// The whole rule equals its pointwise definition.
    #[test]
    fn decide_matches_pointwise(c in arb_candidates(), at in 0..70u64, guard in 0..6u64) {
        prop_assert_eq!(decide(&c, at, guard), rule_pointwise(&c, at, guard));
    }

    /// Never a workload without a full, clean cover of the band by the evidence chosen.
    #[test]
    fn attributed_only_with_full_clean_cover(c in arb_candidates(), at in 0..70u64, guard in 0..6u64) {
        if let Decision::Attributed { workload, evidence } = decide(&c, at, guard) {
            let (lo, hi) = band(at, guard);
            let chosen: Vec<Span<'_>> = match evidence {
                Peer => {
                    prop_assert!(c.peers.iter().all(|p| *p == workload));
                    let others = c.exact.iter().chain(&c.whole).chain(&c.assigned).any(|s| touches(s.from, s.to, (lo, hi)) && s.workload != workload);
                    prop_assert!(!others, "a peer attributed against a claim of another workload");
                    return Ok(());
                }
                Assignment => c.assigned.clone(),
                _ if c.exact.iter().any(|s| touches(s.from, s.to, (lo, hi)) && !inside_whole_heartbeat(s, &c.whole)) => c.exact.iter().chain(&c.whole).copied().collect(),
                _ => { prop_assert!(!shared(&c, (lo, hi))); c.whole.clone() }
            };
            for t in lo..hi {
                prop_assert_eq!(owners_at(&chosen, t), vec![workload], "t = {}", t);
            }
        }
    }

    /// Over an interval, the rule equals its pointwise definition on the interval's band.
    #[test]
    fn interval_matches_pointwise(c in arb_candidates(), from in 0..70u64, len in 0..30u64, guard in 0..6u64) {
        let b = Band::interval(from, from + len, guard);
        prop_assert_eq!(decide_in(&c, b), rule_pointwise_in(&c, b));
    }

    /// Over an interval: a workload only if the evidence chosen names it alone at every instant
    /// of `[from - guard, to + guard]`; `NotCovered` only where an owner holds the start; and
    /// an interval of one instant decides as the flow rule does.
    #[test]
    fn interval_attributed_only_when_one_owner_holds_all_of_it(
        c in arb_candidates(), from in 0..70u64, len in 0..30u64, guard in 0..6u64,
    ) {
        let c = Candidates { peers: Vec::new(), ..c };
        let to = from + len;
        let b = Band::interval(from, to, guard);
        match decide_over(&c, from, to, guard) {
            Interval::Decided(Decision::Attributed { workload, evidence }) => {
                let chosen: Vec<Span<'_>> = match evidence {
                    Assignment => c.assigned.clone(),
                    _ if c.exact.iter().any(|s| touches(s.from, s.to, b.range()) && !inside_whole_heartbeat(s, &c.whole)) => c.exact.iter().chain(&c.whole).copied().collect(),
                    _ => c.whole.clone(),
                };
                for t in b.lo..b.hi {
                    prop_assert_eq!(owners_at(&chosen, t), vec![workload], "t = {}", t);
                }
            }
            Interval::NotCovered => {
                let at_start = matches!(decide(&c, from, guard), Decision::Attributed { .. });
                let over_all = matches!(decide_in(&c, b), Decision::Attributed { .. });
                prop_assert!(at_start && !over_all, "start {} whole {}", at_start, over_all);
            }
            Interval::Decided(_) => {}
        }
        if len == 0 {
            prop_assert_eq!(decide_in(&c, b), decide(&c, from, guard));
        }
    }
}

#[test]
fn an_owner_change_inside_an_interval_is_not_covered() {
    // a holds the address until 300, b from 300: a row for [100, 250] is a's, [100, 400] is
    // nobody's (a held its start), [350, 400] is b's.
    let c = whole(vec![span(Heartbeat, 0, 300, "a"), span(Heartbeat, 300, 1_000, "b")]);
    assert_eq!(decide_over(&c, 100, 250, 10), Interval::Decided(ok("a", Heartbeat)));
    assert_eq!(decide_over(&c, 100, 400, 10), Interval::NotCovered);
    assert_eq!(decide_over(&c, 350, 400, 10), Interval::Decided(ok("b", Heartbeat)));
    // The guard band widens the interval: ending 5 before the change is too close.
    assert_eq!(decide_over(&c, 100, 295, 10), Interval::NotCovered);
    // Evidence that stops inside the interval does not cover it either.
    let stops = whole(vec![span(Heartbeat, 0, 300, "a")]);
    assert_eq!(decide_over(&stops, 100, 400, 10), Interval::NotCovered);
    assert_eq!(decide_over(&stops, 500, 600, 10), Interval::Decided(no(Reason::NoOwner)));
    // Another workload on another port of the address during the interval: shared.
    let shared = Candidates {
        whole: vec![span(Heartbeat, 0, 1_000, "a")],
        other: vec![span(Flow, 350, 360, "b")],
        ..Default::default()
    };
    assert_eq!(decide_over(&shared, 100, 250, 10), Interval::Decided(ok("a", Heartbeat)));
    assert_eq!(decide_over(&shared, 100, 400, 10), Interval::Decided(no(Reason::SharedIp)));
}
