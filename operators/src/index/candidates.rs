//! Gathering a lookup's candidates from an address's entry: exporter claims split by scope,
//! the other end's records of the flow's connection (the peer rule, [`super::peer`]), and
//! assignments cut where their source's promise ends; and the shortcut for the common case
//! (whole-IP claims only). Kept apart from the index's bookkeeping (applying evidence, expiry,
//! memos) because this is what the rules read: [`crate::rule`] decides over what it gathers.
//!
//! Time contract: called at a lookup's time `now`, it reads only evidence applied at `now` or
//! before, and what it reads past a horizon (`retention`, `guard + peer_horizon`) counts for
//! nothing whether swept yet or not, so the answer does not depend on when sweeps ran.

use super::peer;
use super::{Arena, Assign, Entry, IndexParams, Map, Run, Scratch, NONE};
use crate::records::{FlowPiece, FlowRow, RunId};
use crate::rule::{band, touches, Candidates, Decision, Span};
use crate::types::{EvidenceKind, Ip, Reason, Time};

/// The decision for an address with whole-IP claims only near the band and nothing else (the
/// common case), without gathering candidates: exactly what [`decide`] gives then (no peers,
/// no port claims, and no assignments to fall back on), or `None` when the case is not this one.
///
/// With `named` false the caller needs no name, and a lone claim is decided without reading its
/// name from the arena (a cache miss per lookup, measured: about a tenth of the lookup's time
/// on the core-lookup benchmark); the verdict then names "".
pub(super) fn whole_only<'a>(
    entry: &'a Entry,
    row: &FlowRow,
    arena: &'a Arena,
    p: IndexParams,
    named: bool,
) -> Option<Decision<'a>> {
    if entry.extra.is_some() {
        return None;
    }
    let b = band(row.start, p.guard);
    let near = entry.claims.iter().filter(move |c| touches(c.from, c.to, b));
    if near.clone().any(|c| c.port != 0) {
        return None;
    }
    let mut lone = near.clone();
    if let (Some(c), None, false) = (lone.next(), lone.next(), named) {
        let at = row.start;
        return Some(if !(c.from <= at && at < c.to) {
            Decision::Unattributed(Reason::NoOwner)
        } else if c.from > b.0 || c.to < b.1 {
            Decision::Unattributed(Reason::NearBoundary)
        } else {
            Decision::Attributed { workload: "", evidence: EvidenceKind::from_u8(c.kind).unwrap_or(EvidenceKind::Flow) }
        });
    }
    let spans = near.map(|c| Span {
        from: c.from,
        to: c.to,
        workload: arena.get(c.name),
        kind: EvidenceKind::from_u8(c.kind).unwrap_or(EvidenceKind::Flow),
    });
    Some(crate::rule::ranges(spans, row.start, p.guard))
}

/// What the other end's records of a connection tell about counting it.
#[derive(Clone, Copy, Debug)]
pub(super) struct Peers<'a> {
    /// This end's records carry the connection in aggregates (see [`peer::counts`]).
    pub counts: bool,
    /// The workloads of the records of the other end that are this connection's by its start
    /// (proved or not): the first, and another one if any differs. Two-sided verification
    /// compares them with the claims, as a monitor; only proved ones attribute
    /// (`Candidates::peers`). Two names, not a vector: this is on every lookup's path.
    pub seen: [Option<&'a str>; 2],
}

/// Gathers the candidates of `row` from `entry` and hands them to `f`, with what the other
/// end's records say about counting the connection.
#[allow(clippy::too_many_arguments)]
pub(super) fn candidates<'a, R>(
    entry: &'a Entry,
    piece: &FlowPiece,
    row: &FlowRow,
    arena: &'a Arena,
    runs: &Map<RunId, Run>,
    p: IndexParams,
    now: Time,
    scratch: &mut Scratch,
    f: impl FnOnce(&Candidates<'a>, Peers<'a>) -> R,
) -> R {
    let b = band(row.start, p.guard);
    let mut c = Candidates::default();
    let mut peers = Peers { counts: true, seen: [None, None] };
    exporter_claims(entry, row.remote_port, b, arena, &mut c);
    if let Some(x) = &entry.extra {
        let matched = &mut scratch.peers;
        matched.clear();
        if !x.conns.is_empty() {
            let record = flowmap_schema::view::parse_flow(piece.message(row)).ok();
            let stated = record.as_ref().is_some_and(|r| r.connection_id != 0);
            let local = record.and_then(|r| Some((Ip::from_wire(r.local_ip)?, u16::try_from(r.local_port).ok()?)));
            if let Some((local, local_port)) = local {
                let horizon = p.guard.saturating_add(p.peer_horizon);
                // Connection and mirror records past their horizon count for nothing, swept
                // or not.
                let live = |end: Time| end.saturating_add(horizon) > now;
                let mut flow = peer::Flow {
                    local,
                    local_port,
                    port: row.remote_port,
                    start: row.start,
                    end: row.start,
                    start_unobserved: row.start_unobserved(),
                    horizon,
                    now,
                };
                // The connection as all its records applied so far show it (its own mirrors);
                // without any (a record past its horizon), as this record alone shows it, with
                // no end beyond its start.
                // Only its own connection's (by flow id, stated through a connection id, so
                // the same for every record of it whichever exporter run sent it): another
                // exporter, or a clone with its id, that names the same 4-tuple and start says
                // nothing of its end (found by fresh users: such a record stretched a short
                // flow's end over a later connection's, which then passed the lifetime proof).
                // Without a connection id, none is known to be its own.
                let probe = flow;
                let own = x
                    .mirrors
                    .iter()
                    .filter(|m| stated && m.connection == row.id && m.start == row.start && probe.tuple(m));
                let seen = own.fold(None, |acc: Option<(Time, bool)>, m| {
                    let (end, unobserved) = acc.unwrap_or((m.end, m.start_unobserved));
                    Some((end.max(m.end), unobserved || m.start_unobserved))
                });
                if let Some((end, unobserved)) = seen {
                    (flow.end, flow.start_unobserved) = (end.max(row.start), unobserved);
                }
                // Counting needs only that the other end reported the connection (so that the
                // two ends decide alike, as both see the same pairs); attribution needs proof.
                let lower = (local, local_port) < (row.remote, row.remote_port);
                let mut counts: Option<bool> = None;
                for (i, k) in x.conns.iter().enumerate().filter(|(_, k)| live(k.end)) {
                    if peer::mirrored(k, &flow)
                        && peer::same_connection(k, flow.start, flow.end, flow.start_unobserved, p.guard)
                    {
                        counts = Some(counts.unwrap_or(false) || peer::counts(row, k, lower));
                        let name = arena.get(k.name);
                        match peers.seen {
                            _ if name.is_empty() => {}
                            [None, _] => peers.seen[0] = Some(name),
                            [Some(first), None] if first != name => peers.seen[1] = Some(name),
                            _ => {}
                        }
                        if peer::certain(k, &flow, p.guard) {
                            matched.push(i as u32);
                        }
                    }
                }
                peers.counts = counts.unwrap_or(true);
            }
            for &i in matched.iter() {
                let name = arena.get(x.conns[i as usize].name);
                if !name.is_empty() {
                    c.peers.push(name);
                }
            }
        }
        assignments(&x.assigns, arena, runs, b, (now, p.retention), &mut c);
    }
    f(&c, peers)
}

/// The exporter claims of `entry` touching the band `b`, split by their scope against `port`.
pub(super) fn exporter_claims<'a>(
    entry: &'a Entry,
    port: u16,
    b: (Time, Time),
    arena: &'a Arena,
    c: &mut Candidates<'a>,
) {
    for claim in entry.claims.iter() {
        if !touches(claim.from, claim.to, b) {
            continue;
        }
        let span = || Span {
            from: claim.from,
            to: claim.to,
            workload: arena.get(claim.name),
            kind: EvidenceKind::from_u8(claim.kind).unwrap_or(EvidenceKind::Flow),
        };
        match claim.port {
            0 => c.whole.push(span()),
            claimed if claimed == port => c.exact.push(span()),
            _ => c.other.push(span()),
        }
    }
}

/// Where assignment `i` would end by its source's next event for the address alone (`MAX`
/// when there is none yet).
pub(super) fn uncut_end(assigns: &[Assign], i: usize) -> Time {
    let me = assigns[i].source;
    assigns[i + 1..].iter().find(|n| n.source == me && me != NONE).map_or(Time::MAX, |n| n.at)
}

/// Where assignment `i` ends: at its source's next event for the address, or where its run
/// of contiguous batches ends, whichever is first. An assignment whose run is unknown (its
/// promise dropped a retention after the run ended, or never sent) ends at 0: it is forgotten
/// (which changes nothing: it ended a retention ago at the latest).
pub(super) fn assignment_end(assigns: &[Assign], i: usize, runs: &Map<RunId, Run>) -> Time {
    let a = &assigns[i];
    if a.source == NONE {
        return 0;
    }
    uncut_end(assigns, i).min(runs.get(&a.run).map_or(0, |r| r.end))
}

/// Adds the assignment claims (cut at their run's end) touching the band to `c`. Assignments
/// that ended a retention or more before `now` are forgotten, swept or not: they can reach no
/// band a lookup still reads, and their cut says nothing any more.
pub(super) fn assignments<'a>(
    assigns: &[Assign],
    arena: &'a Arena,
    runs: &Map<RunId, Run>,
    b: (Time, Time),
    (now, retention): (Time, Time),
    c: &mut Candidates<'a>,
) {
    for (i, a) in assigns.iter().enumerate() {
        if a.name == NONE || a.source == NONE || a.at >= b.1 {
            continue;
        }
        let uncut = uncut_end(assigns, i);
        let cut = assignment_end(assigns, i, runs);
        if cut.saturating_add(retention) <= now {
            continue;
        }
        if touches(a.at, cut, b) {
            c.assigned.push(Span { from: a.at, to: cut, workload: arena.get(a.name), kind: EvidenceKind::Assignment });
        }
        if cut < uncut && cut < b.1 && touches(a.at, uncut, b) {
            c.assignment_cut = true;
        }
    }
}
