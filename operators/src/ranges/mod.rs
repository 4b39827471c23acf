//! Ownership of one IP over time, as a set of non-overlapping ranges, and the attribution rule.
//!
//! The arrangement stores raw claims ("IP was W during [from, to)") exactly as the evidence
//! stated them; this module turns the claims near one instant into a [`RangeSet`] and decides.
//! Doing the interval logic at lookup time (rather than maintaining merged ranges in the
//! arrangement) keeps every update to the arrangement an insert or a retraction of evidence,
//! which is what lets differential compact it and lets the result be the same whatever order
//! the evidence arrived in.
//!
//! The rules (tested by property tests in `tests.rs`):
//! - ranges of the same workload that overlap or abut merge into one;
//! - where ranges of different workloads overlap, the overlap is a *conflict* and attributes
//!   nothing;
//! - a flow starting at `t` is attributed to `W` only if one merged range of `W`, free of any
//!   conflict, covers the whole guard band `[t - guard, t + guard]`. A boundary inside the band
//!   could be clock skew between the two hosts, so the flow is left unattributed rather than
//!   risk the wrong owner.

use crate::types::{Attribution, Claim, EvidenceKind, Reason, Time, Workload};

/// Who holds a segment of time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Owner {
    /// Exactly one workload.
    One(Workload),
    /// Two or more workloads claim it.
    Conflict,
}

/// One segment `[from, to)` of a [`RangeSet`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment {
    /// Start (inclusive).
    pub from: Time,
    /// End (exclusive).
    pub to: Time,
    /// Who holds it.
    pub owner: Owner,
}

/// Sorted, non-overlapping segments; adjacent segments never have the same owner (they merge).
/// Times not covered by any segment have no owner.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeSet {
    segments: Vec<Segment>,
}

impl RangeSet {
    /// Builds the set from claims `(from, to, workload)`; empty ranges (`from >= to`) are ignored.
    pub fn build<'a>(claims: impl IntoIterator<Item = (Time, Time, &'a Workload)>) -> Self {
        // Sweep over the endpoints, keeping a count of open ranges per workload.
        let mut edges: Vec<(Time, i32, &Workload)> = Vec::new();
        for (from, to, workload) in claims {
            if from < to {
                edges.push((from, 1, workload));
                edges.push((to, -1, workload));
            }
        }
        edges.sort_unstable_by_key(|e| e.0);
        let mut active: Vec<(&Workload, i32)> = Vec::new();
        let mut segments: Vec<Segment> = Vec::new();
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
                [(workload, _)] => Owner::One((*workload).clone()),
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
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// The segment containing `t`, if any.
    pub fn segment_at(&self, t: Time) -> Option<&Segment> {
        let i = self.segments.partition_point(|s| s.to <= t);
        self.segments.get(i).filter(|s| s.from <= t)
    }
}

/// Decides who owned an IP at `at`, from the claims on it (each with positive multiplicity).
///
/// Exporter evidence (heartbeats and flows) near `at` takes precedence; assignment claims are
/// consulted only when no exporter evidence intersects the guard band.
pub fn decide(claims: &[Claim], at: Time, guard: Time) -> Attribution {
    let lo = at.saturating_sub(guard);
    let hi = at.saturating_add(guard).saturating_add(1); // the band is [lo, hi)
    let near = |c: &&Claim| c.from < hi && lo < c.to;
    let exporter = claims.iter().filter(near).any(|c| c.kind != EvidenceKind::Assignment);
    let chosen = || claims.iter().filter(near).filter(move |c| (c.kind != EvidenceKind::Assignment) == exporter);
    let Some(first) = chosen().next() else {
        return Attribution::Unattributed(Reason::NoOwner);
    };
    let workload = &first.workload;
    if chosen().all(|c| &c.workload == workload) {
        // The common case, one claimant: grow the union of its ranges around `at`, without
        // building a range set (this runs once per flow).
        let Some(seed) = chosen().find(|c| c.from <= at && at < c.to) else {
            return Attribution::Unattributed(Reason::NoOwner);
        };
        let (mut from, mut to) = (seed.from, seed.to);
        loop {
            let mut grown = false;
            for c in chosen() {
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
            return Attribution::Unattributed(Reason::NearBoundary);
        }
        return Attribution::Workload { workload: workload.clone(), evidence: strongest(chosen(), workload) };
    }
    let set = RangeSet::build(chosen().map(|c| (c.from, c.to, &c.workload)));
    let Some(segment) = set.segment_at(at) else {
        return Attribution::Unattributed(Reason::NoOwner);
    };
    let workload = match &segment.owner {
        Owner::Conflict => return Attribution::Unattributed(Reason::Conflict),
        Owner::One(workload) => workload,
    };
    if segment.from > lo || segment.to < hi {
        return Attribution::Unattributed(Reason::NearBoundary);
    }
    Attribution::Workload { workload: workload.clone(), evidence: strongest(chosen(), workload) }
}

/// The strongest kind of evidence of `workload` among `claims`.
fn strongest<'a>(claims: impl Iterator<Item = &'a Claim>, workload: &Workload) -> EvidenceKind {
    claims
        .filter(|c| &c.workload == workload)
        .map(|c| c.kind)
        .min_by_key(|kind| match kind {
            EvidenceKind::Heartbeat => 0,
            EvidenceKind::Flow => 1,
            EvidenceKind::Assignment => 2,
        })
        .unwrap_or(EvidenceKind::Assignment)
}

#[cfg(test)]
mod tests;
