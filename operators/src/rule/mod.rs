//! The attribution rule: from the evidence about one address near one instant to a verdict.
//!
//! Pure functions over small slices, so the rule can be stated, tested against a pointwise
//! definition (`tests.rs`), and reused by every reader of the ownership index (flows from
//! exporters, intervals from cloud flow logs).
//!
//! # The rule
//! A flow to remote `(R, p)` starting at `t` is looked up in the *guard band*
//! `[t - guard, t + guard]` (the clock skew between two hosts could put the true instant
//! anywhere in it). In order:
//! 1. **Peer.** If the other end reported this very connection (the mirrored 4-tuple, starts
//!    within the band, see [`crate::index`]), its local workload is first-hand: one workload
//!    named by the peers is the verdict (`peer`), unless a claim touching the band (on this
//!    port, on the whole address, or an assignment) names another workload, or the peer's own
//!    address-level evidence (whole-IP claims, assignments, port-scoped heartbeats) touches the
//!    band without holding the flow's start: then the peer decides nothing, and the claims decide as
//!    without a peer, except that claims attributing another workload are a `conflict`. A
//!    4-tuple reused within the band across an owner change, or a wrong claim, could stand
//!    behind either. Two different peers are a `conflict`.
//! 2. **Exact port.** If claims scoped to `(R, p)` touch the band, decide on them together with
//!    the whole-IP claims on `R` (a whole-IP claim speaks about every port, so a different owner
//!    there is a conflict). A port claim from a flow that lies inside a whole-IP heartbeat of
//!    the same workload adds nothing and is not counted here (so the index may leave it out).
//! 3. **Shared address.** Otherwise, if a workload holds another port of `R` in the band
//!    without holding the whole of `R` (no whole-IP claim of its own touches the band), `R` is
//!    shared and nothing vouches for `p`: `shared_ip`. (A workload's own port claims on an
//!    address it holds whole say nothing about sharing.)
//! 4. **Whole address.** Otherwise decide on the whole-IP exporter claims.
//! 5. **Assignments.** Only where no exporter evidence touches the band: decide on the
//!    assignment claims, each cut where its source's promise ends. If that finds no owner (or a
//!    boundary in the band) and some assignment would have reached the band but for its
//!    source's gap, the reason is `source_gap`.
//!
//! "Decide" is the range rule: ranges of one workload that overlap or abut merge; where
//! different workloads overlap there is a conflict; `W` is attributed only if `W`, and no one
//! else, holds every instant of the band. A boundary inside the band is `near_boundary` (it
//! could be clock skew), another claimant at `t` a `conflict`, nothing at `t` `no_owner`.
//!
//! # Intervals
//! A cloud flow log row aggregates the packets of up to ten minutes: its addresses are looked
//! up over the [`Band`] `[from - guard, to + guard]` of the row's whole interval `[from, to]`,
//! anchored at `from`, by the same rule ([`decide_in`]). One owner must hold every instant of
//! it; where an owner holds the start but not the rest, [`decide_over`] says so
//! ([`Interval::NotCovered`]) instead of `near_boundary`.

use crate::types::{EvidenceKind, Reason, Time};

/// One claim as the rule sees it: "`workload` held the address (or the port) during
/// `[from, to)`", of this kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span<'a> {
    /// Start (inclusive).
    pub from: Time,
    /// End (exclusive).
    pub to: Time,
    /// The owner.
    pub workload: &'a str,
    /// Where the claim comes from.
    pub kind: EvidenceKind,
}

/// Everything the index found about one remote `(R, p)` near one flow's guard band. Claims not
/// touching the band may be included; the rule ignores them.
#[derive(Clone, Debug, Default)]
pub struct Candidates<'a> {
    /// Local workloads of the peer's records of this very connection.
    pub peers: Vec<&'a str>,
    /// Exporter claims scoped to exactly `(R, p)`.
    pub exact: Vec<Span<'a>>,
    /// Exporter claims on the whole address `R`.
    pub whole: Vec<Span<'a>>,
    /// Exporter claims scoped to other ports of `R`.
    pub other: Vec<Span<'a>>,
    /// Assignment claims on `R`, each already cut where its source's promise ends.
    pub assigned: Vec<Span<'a>>,
    /// Whether an assignment that would have reached the band was cut short by its source's
    /// promise ending before the band's end.
    pub assignment_cut: bool,
}

/// A verdict, borrowing the winner's name from the candidates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision<'a> {
    /// Attributed to this workload, on this kind of evidence.
    Attributed {
        /// The owner.
        workload: &'a str,
        /// What it rests on.
        evidence: EvidenceKind,
    },
    /// Unattributed, for this reason.
    Unattributed(Reason),
}

/// The guard band around `at` as a half-open range `[lo, hi)`, saturating at the ends of time.
pub fn band(at: Time, guard: Time) -> (Time, Time) {
    (at.saturating_sub(guard), at.saturating_add(guard).saturating_add(1))
}

/// The instants a lookup needs one owner for: `[lo, hi)`, anchored at `at` (the owner is the
/// one holding `at`; `lo <= at < hi`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Band {
    /// The anchor: a flow's start, an interval's start.
    pub at: Time,
    /// First instant (inclusive).
    pub lo: Time,
    /// End (exclusive).
    pub hi: Time,
}

impl Band {
    /// The guard band around the instant `at` ([`band`]).
    pub fn point(at: Time, guard: Time) -> Band {
        let (lo, hi) = band(at, guard);
        Band { at, lo, hi }
    }

    /// The band of the interval `[from, to]` (both included, as a flow log row's start and end
    /// seconds are), widened by `guard` on each side and anchored at `from`; `to < from` is taken
    /// as `to = from`.
    pub fn interval(from: Time, to: Time, guard: Time) -> Band {
        let to = to.max(from);
        Band { at: from, lo: from.saturating_sub(guard), hi: to.saturating_add(guard).saturating_add(1) }
    }

    /// As a half-open range, for [`touches`].
    pub fn range(self) -> (Time, Time) {
        (self.lo, self.hi)
    }
}

/// Whether `[from, to)` touches the band `[lo, hi)`.
pub fn touches(from: Time, to: Time, (lo, hi): (Time, Time)) -> bool {
    from < hi && lo < to && from < to
}

/// Applies the rule (see the module docs) to the candidates of a flow starting at `at`.
pub fn decide<'a>(c: &Candidates<'a>, at: Time, guard: Time) -> Decision<'a> {
    decide_in(c, Band::point(at, guard))
}

/// Applies the rule (see the module docs) over the band `b`.
pub fn decide_in<'a>(c: &Candidates<'a>, b: Band) -> Decision<'a> {
    let near = |s: &&Span<'a>| touches(s.from, s.to, b.range());
    if let Some((first, rest)) = c.peers.split_first() {
        if rest.iter().any(|w| w != first) {
            return Decision::Unattributed(Reason::Conflict);
        }
        let contradicted = c.exact.iter().chain(&c.whole).chain(&c.assigned).filter(near).any(|s| s.workload != *first);
        // The peer's own address-level evidence (whole-IP claims, assignments, port-scoped
        // heartbeats; not the short claims of its flows), if it touches the band, must hold the
        // flow's start: evidence that ends before it or begins after it means the address
        // changed hands, and the record may be another connection's on a reused 4-tuple (found
        // by a fresh user: an unmonitored new owner, an address manager's lost batch).
        let mut own = c
            .whole
            .iter()
            .chain(&c.assigned)
            .chain(c.exact.iter().filter(|s| s.kind != EvidenceKind::Flow))
            .filter(near)
            .filter(|s| s.workload == *first)
            .peekable();
        let changes_hands = own.peek().is_some() && !own.any(|s| s.from <= b.at && b.at < s.to);
        if !contradicted && !changes_hands {
            return Decision::Attributed { workload: first, evidence: EvidenceKind::Peer };
        }
        // Found by a fresh user: a peer record contradicted by a heartbeat, and a reused
        // 4-tuple matched to the previous owner's record across an owner change.
        let claims = decide_in(&Candidates { peers: Vec::new(), ..c.clone() }, b);
        return match claims {
            Decision::Attributed { .. } => Decision::Unattributed(Reason::Conflict),
            unattributed => unattributed,
        };
    }
    if c.exact.iter().any(|s| near(&s) && !inside_whole_heartbeat(s, &c.whole)) {
        return ranges_in(c.exact.iter().chain(&c.whole).filter(near).copied(), b);
    }
    if shared(c, b.range()) {
        return Decision::Unattributed(Reason::SharedIp);
    }
    if c.whole.iter().any(|s| near(&s)) {
        return ranges_in(c.whole.iter().filter(near).copied(), b);
    }
    let verdict = ranges_in(c.assigned.iter().filter(near).copied(), b);
    match verdict {
        Decision::Unattributed(Reason::NoOwner | Reason::NearBoundary) if c.assignment_cut => {
            Decision::Unattributed(Reason::SourceGap)
        }
        v => v,
    }
}

/// What the rule says about an address over a whole interval (a flow log row's).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Interval<'a> {
    /// The rule's decision over the interval's band (attributed only if one owner holds all of
    /// it).
    Decided(Decision<'a>),
    /// An owner holds the interval's start (its own guard band included), but not the whole
    /// interval: the owner changed, or its evidence stops, inside it.
    NotCovered,
}

/// Applies the rule over the interval `[from, to]` widened by `guard` (see "Intervals" in the
/// module docs).
pub fn decide_over<'a>(c: &Candidates<'a>, from: Time, to: Time, guard: Time) -> Interval<'a> {
    match decide_in(c, Band::interval(from, to, guard)) {
        Decision::Unattributed(Reason::NearBoundary | Reason::Conflict | Reason::SourceGap)
            if matches!(decide_in(c, Band::point(from, guard)), Decision::Attributed { .. }) =>
        {
            Interval::NotCovered
        }
        d => Interval::Decided(d),
    }
}

/// Whether `s` is a flow claim lying inside one whole-IP heartbeat claim of its workload.
pub fn inside_whole_heartbeat(s: &Span<'_>, whole: &[Span<'_>]) -> bool {
    s.kind == EvidenceKind::Flow
        && whole
            .iter()
            .any(|w| w.kind == EvidenceKind::Heartbeat && w.workload == s.workload && w.from <= s.from && s.to <= w.to)
}

/// Whether a workload holds another port of the address in the band without a whole-IP claim
/// of its own touching the band (rule 3).
pub fn shared(c: &Candidates<'_>, b: (Time, Time)) -> bool {
    c.other
        .iter()
        .filter(|s| touches(s.from, s.to, b))
        .any(|o| !c.whole.iter().any(|w| w.workload == o.workload && touches(w.from, w.to, b)))
}

/// The range rule over claims that touch the band (see the module docs).
///
/// Works without building a range set in the common case of one claimant: grow the union of its
/// ranges around `at`, and check it covers the band.
pub fn ranges<'a>(claims: impl Iterator<Item = Span<'a>> + Clone, at: Time, guard: Time) -> Decision<'a> {
    ranges_in(claims, Band::point(at, guard))
}

/// The range rule over the band `b` (see the module docs).
pub fn ranges_in<'a>(claims: impl Iterator<Item = Span<'a>> + Clone, b: Band) -> Decision<'a> {
    let Band { at, lo, hi } = b;
    let Some(first) = claims.clone().next() else {
        return Decision::Unattributed(Reason::NoOwner);
    };
    let workload = first.workload;
    if claims.clone().all(|c| c.workload == workload) {
        let Some(seed) = claims.clone().find(|c| c.from <= at && at < c.to) else {
            return Decision::Unattributed(Reason::NoOwner);
        };
        let (mut from, mut to) = (seed.from, seed.to);
        loop {
            let mut grown = false;
            for c in claims.clone() {
                if c.from <= to && from <= c.to && (c.from < from || c.to > to) {
                    from = from.min(c.from);
                    to = to.max(c.to);
                    grown = true;
                }
            }
            if !grown {
                break;
            }
        }
        if from > lo || to < hi {
            return Decision::Unattributed(Reason::NearBoundary);
        }
        return Decision::Attributed { workload, evidence: strongest(claims, workload) };
    }
    // Several claimants: sweep the band's endpoints.
    let set = RangeSet::build(claims.clone().map(|c| (c.from, c.to, c.workload)));
    let Some(segment) = set.segment_at(at) else {
        return Decision::Unattributed(Reason::NoOwner);
    };
    let Owner::One(workload) = segment.owner else {
        return Decision::Unattributed(Reason::Conflict);
    };
    if segment.from > lo || segment.to < hi {
        return Decision::Unattributed(Reason::NearBoundary);
    }
    Decision::Attributed { workload, evidence: strongest(claims, workload) }
}

/// The strongest kind of `workload`'s evidence among `claims` (see [`EvidenceKind::rank`]).
fn strongest<'a>(claims: impl Iterator<Item = Span<'a>>, workload: &str) -> EvidenceKind {
    claims
        .filter(|c| c.workload == workload)
        .map(|c| c.kind)
        .min_by_key(|k| k.rank())
        .unwrap_or(EvidenceKind::Assignment)
}

/// Who holds a segment of time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Owner<'a> {
    /// Exactly one workload.
    One(&'a str),
    /// Two or more workloads claim it.
    Conflict,
}

/// One segment `[from, to)` of a [`RangeSet`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment<'a> {
    /// Start (inclusive).
    pub from: Time,
    /// End (exclusive).
    pub to: Time,
    /// Who holds it.
    pub owner: Owner<'a>,
}

/// Sorted, non-overlapping segments; adjacent segments never have the same owner (they merge).
/// Times not covered by any segment have no owner.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeSet<'a> {
    segments: Vec<Segment<'a>>,
}

impl<'a> RangeSet<'a> {
    /// Builds the set from claims `(from, to, workload)`; empty ranges (`from >= to`) are ignored.
    pub fn build(claims: impl IntoIterator<Item = (Time, Time, &'a str)>) -> Self {
        // Sweep over the endpoints, keeping a count of open ranges per workload.
        let mut edges: Vec<(Time, i32, &'a str)> = Vec::new();
        for (from, to, workload) in claims {
            if from < to {
                edges.push((from, 1, workload));
                edges.push((to, -1, workload));
            }
        }
        edges.sort_unstable_by_key(|e| e.0);
        let mut active: Vec<(&'a str, i32)> = Vec::new();
        let mut segments: Vec<Segment<'a>> = Vec::new();
        let mut i = 0;
        while i < edges.len() {
            let at = edges[i].0;
            while i < edges.len() && edges[i].0 == at {
                let (_, delta, workload) = edges[i];
                match active.iter_mut().find(|(w, _)| *w == workload) {
                    Some(entry) => entry.1 += delta,
                    None => active.push((workload, delta)),
                }
                i += 1;
            }
            active.retain(|(_, count)| *count != 0);
            let Some(&(next, _, _)) = edges.get(i) else { break };
            let owner = match active.as_slice() {
                [] => continue,
                [(workload, _)] => Owner::One(workload),
                _ => Owner::Conflict,
            };
            match segments.last_mut() {
                Some(last) if last.to == at && last.owner == owner => last.to = next,
                _ => segments.push(Segment { from: at, to: next, owner }),
            }
        }
        RangeSet { segments }
    }

    /// The segments, sorted by time.
    pub fn segments(&self) -> &[Segment<'a>] {
        &self.segments
    }

    /// The segment containing `t`, if any.
    pub fn segment_at(&self, t: Time) -> Option<&Segment<'a>> {
        let i = self.segments.partition_point(|s| s.to <= t);
        self.segments.get(i).filter(|s| s.from <= t)
    }
}

#[cfg(test)]
mod tests;
