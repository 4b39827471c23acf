//! The index and the operator against a plain definition, on random evidence.
//!
//! The definition: a lookup at time `q` sees exactly the evidence applied at times `<= q`, as it
//! was stated (no merging, nothing left out): exporter claims, connection records still within
//! the peer horizon (their ends as extended by later records of the same connection), of which
//! a record is the query's peer only if the lifetimes rule out every other connection of the
//! 4-tuple (the query's connection as its own records known at `q` show it: the mirrors with its
//! flow id, none when it states no connection id), and assignment events ending at their
//! source's next event for the address or where their run's promise known at `q` ends. A
//! connection record extends the one before it only if that one was still within its horizon
//! when it came. From those it builds the rule's candidates and applies `rule::decide` (itself checked against its pointwise definition in `rule/tests.rs`); and a
//! connection with several records keeps the verdict of the first one looked up.
//!
//! What this checks: that everything the index does to save space and time (claims grown in
//! place, flow claims left out under heartbeats, the name arena, per-address expiry, the
//! memo) changes no verdict, and that the operator gives the same verdicts with 1 or 2 workers
//! whatever order and grouping the evidence and flows arrive in.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, HashMap};

use flowmap_operators::records::*;
use flowmap_operators::rule::{decide, Candidates, Decision, Span};
use flowmap_operators::*;
use proptest::prelude::*;
use prost::Message;

const NAMES: [&str; 4] = ["w0", "w1", "w2", "w3"];
const PORTS: [u16; 3] = [80, 443, 5000];

fn addr(i: u8) -> Ip {
    Ip::v4([10, 0, 0, i])
}

/// One piece of evidence, applied at `at`.
#[derive(Clone, Debug)]
enum Ev {
    Claim {
        ip: u8,
        port: u16,
        heartbeat: bool,
        from: Time,
        to: Time,
        who: usize,
    },
    Conn {
        local: u8,
        local_port: u16,
        peer: u8,
        peer_port: u16,
        start: Time,
        end: Time,
        unobserved: bool,
        who: usize,
    },
    /// A fleet flow's record as its remote end's worker stores it (under `peer`), of the
    /// connection with flow id `connection` (0: its exporter stated no connection id).
    Mirror {
        local: u8,
        local_port: u16,
        peer: u8,
        peer_port: u16,
        start: Time,
        end: Time,
        unobserved: bool,
        connection: u64,
    },
    Promise {
        run: RunId,
        from: Time,
        to: Time,
    },
    Assign {
        ip: u8,
        at: Time,
        who: Option<usize>,
        run: RunId,
    },
}

#[derive(Clone, Debug)]
struct Query {
    remote: u8,
    remote_port: u16,
    local: u8,
    local_port: u16,
    start: Time,
    end: Time,
    unobserved: bool,
    id: u64,
    several: bool,
}

#[derive(Clone, Debug)]
struct Case {
    guard: Time,
    horizon: Time,
    evidence: Vec<(Time, Ev)>,
    queries: Vec<(Time, Query)>,
}

/// Short enough that expiry (of evidence, connection records, remembered verdicts) happens.
const RETENTION: Time = 120;

fn params(c: &Case) -> IndexParams {
    IndexParams { guard: c.guard, retention: RETENTION, peer_horizon: c.horizon }
}

fn arb_ev() -> impl Strategy<Value = Ev> {
    prop_oneof![
        4 => (0u8..3, 0usize..4, any::<bool>(), 0u64..60, 1u64..40, 0usize..4).prop_map(|(ip, p, hb, from, len, who)| {
            Ev::Claim { ip, port: if p == 3 { 0 } else { PORTS[p] }, heartbeat: hb, from, to: from + len, who }
        }),
        3 => (0u8..3, 0usize..3, 0u8..3, 0usize..3, 0u64..40, 0u64..20, any::<bool>(), 0usize..4).prop_map(
            |(local, lp, peer, pp, start, len, unobserved, who)| Ev::Conn {
                local, local_port: PORTS[lp], peer, peer_port: PORTS[pp], start, end: start + len, unobserved, who,
            }
        ),
        2 => (0u8..3, 0usize..3, 0u8..3, 0usize..3, 0u64..40, 0u64..20, any::<bool>()).prop_map(
            |(local, lp, peer, pp, start, len, unobserved)| Ev::Mirror {
                local, local_port: PORTS[lp], peer, peer_port: PORTS[pp], start, end: start + len, unobserved, connection: 0,
            }
        ),
        2 => (1u64..4, 0u64..60, 1u64..30).prop_map(|(run, from, len)| Ev::Promise { run, from, to: from + len }),
        2 => (0u8..3, 0u64..70, proptest::option::of(0usize..4), 1u64..4).prop_map(|(ip, at, who, run)| Ev::Assign { ip, at, who, run }),
    ]
}

fn arb_query() -> impl Strategy<Value = Query> {
    (0u8..3, 0usize..3, 0u8..3, 0usize..3, 0u64..50, 0u64..20, any::<bool>(), 0u64..6, any::<bool>()).prop_map(
        |(remote, rp, local, lp, start, len, unobserved, id, several)| Query {
            remote,
            remote_port: PORTS[rp],
            local,
            local_port: PORTS[lp],
            start,
            end: start + len,
            unobserved,
            // Records of one connection share its 4-tuple and start; ids 0..6 make some repeat.
            id: id * 1_000 + u64::from(remote) * 100 + (rp as u64) * 10 + u64::from(local) + (lp as u64) * 3,
            several,
        },
    )
}

fn arb_case() -> impl Strategy<Value = Case> {
    (
        0u64..5,
        0u64..30,
        proptest::collection::vec((0u64..80, arb_ev()), 0..40),
        proptest::collection::vec((0u64..300, arb_query()), 1..30),
        proptest::collection::vec((0usize..30, 0u8..3, 0u64..9, 0u64..12, 0u64..80, any::<bool>()), 0..24),
    )
        .prop_map(|(guard, horizon, mut evidence, queries, near)| {
            // A query is looked up no earlier than its start plus the guard band (the source's
            // contract); records of one connection share a start.
            let mut starts: HashMap<u64, (Time, Time, bool)> = HashMap::new();
            let queries = queries
                .into_iter()
                .map(|(q, mut query)| {
                    let first = (query.start, query.end, query.unobserved);
                    let (start, end, unobserved) = *starts.entry(query.id).or_insert(first);
                    query.start = start;
                    query.end = end;
                    query.unobserved = unobserved;
                    (q.max(start + guard), query)
                })
                .collect::<Vec<(Time, Query)>>();
            let mut queries = queries;
            // Evidence about the queries' own connections, so that the peer rule's matching is
            // exercised: the other end's records, rival connections of the 4-tuple, and promises
            // of the queries' runs.
            for (i, kind, offset, len, at, unobserved) in near {
                let n = queries.len();
                let Some((looked_up, q)) = queries.get_mut(i % n.max(1)) else { break };
                // Looked up soon after its evidence, which comes before (or with) it.
                *looked_up = (*looked_up).min(q.start + guard + at % 20);
                let at = at.min(*looked_up);
                let q = q.clone();
                let start = (q.start + offset).saturating_sub(4);
                evidence.push((
                    at,
                    match kind {
                        0 => Ev::Conn {
                            local: q.remote,
                            local_port: q.remote_port,
                            peer: q.local,
                            peer_port: q.local_port,
                            start,
                            end: start + len,
                            unobserved,
                            who: (offset % 4) as usize,
                        },
                        1 => Ev::Mirror {
                            local: q.local,
                            local_port: q.local_port,
                            peer: q.remote,
                            peer_port: q.remote_port,
                            start,
                            end: start + len,
                            unobserved,
                            connection: q.id,
                        },
                        // Its own connection's records, or another connection's with the same start.
                        _ => Ev::Mirror {
                            local: q.local,
                            local_port: q.local_port,
                            peer: q.remote,
                            peer_port: q.remote_port,
                            start: q.start,
                            end: q.end + len,
                            unobserved,
                            connection: if offset % 3 == 0 { q.id + 1 } else { q.id },
                        },
                    },
                ));
            }
            Case { guard, horizon, evidence, queries }
        })
}

/// Whether a query's exporter stated a connection id (the same for every record of one
/// connection; a third of the connections state none, so none of their records is known to be
/// their own).
fn stated(q: &Query) -> bool {
    !(q.id / 1_000).is_multiple_of(3)
}

/// The row and the encoded message of query `i` (what the source would send; the message's
/// `bytes_sent` names the query, to find its verdict).
fn row(i: usize, q: &Query) -> (FlowRow, Vec<u8>) {
    let flow = flowmap_schema::Flow {
        bytes_sent: i as u64,
        connection_id: if stated(q) { q.id } else { 0 },
        local_ip: vec![10, 0, 0, q.local],
        local_port: u32::from(q.local_port),
        remote_ip: vec![10, 0, 0, q.remote],
        remote_port: u32::from(q.remote_port),
        start_ns: q.start,
        end_ns: q.end,
        start_unobserved: q.unobserved,
        ..Default::default()
    };
    let bytes = flow.encode_to_vec();
    let mut flags = 0;
    if q.unobserved {
        flags |= flags::START_UNOBSERVED;
    }
    if q.several {
        flags |= flags::CONTINUED;
    }
    let r = FlowRow {
        remote: addr(q.remote),
        start: q.start,
        batch_at: 0,
        id: q.id,
        msg_off: 0,
        msg_len: bytes.len() as u32,
        remote_port: q.remote_port,
        exporter: 0,
        flags,
        direction: 0,
    };
    (r, bytes)
}

/// A connection record `local -> peer` over `(start, end)`, without a name or connection id.
fn conn_in(local: (u8, u16), peer: (u8, u16), (start, end): (Time, Time), unobserved: bool) -> ConnIn {
    ConnIn {
        local: addr(local.0),
        local_port: local.1,
        peer: addr(peer.0),
        peer_port: peer.1,
        start,
        end,
        start_unobserved: unobserved,
        direction: 0,
        lookup: 0,
        name: NameRef::default(),
        connection: 0,
    }
}

/// The evidence piece(s) of one item, for `peers` workers (promises go to every worker).
fn pieces(ev: &Ev, peers: usize) -> Vec<EvidencePiece> {
    let mut out: Vec<EvidencePiece> = Vec::new();
    fn piece(out: &mut Vec<EvidencePiece>, worker: usize) -> &mut EvidencePiece {
        out.push(EvidencePiece::new(worker));
        out.last_mut().unwrap()
    }
    match ev {
        Ev::Claim { ip, port, heartbeat, from, to, who } => {
            let p = piece(&mut out, addr(*ip).worker(peers));
            let name = p.names.push(NAMES[*who]);
            let kind = if *heartbeat { EvidenceKind::Heartbeat } else { EvidenceKind::Flow };
            p.claims.push(ClaimIn { ip: addr(*ip), port: *port, kind, from: *from, to: *to, name });
        }
        Ev::Conn { local, local_port, peer, peer_port, start, end, unobserved, who } => {
            let p = piece(&mut out, addr(*local).worker(peers));
            let name = p.names.push(NAMES[*who]);
            let c = conn_in((*local, *local_port), (*peer, *peer_port), (*start, *end), *unobserved);
            p.conns.push(ConnIn { name, ..c });
        }
        Ev::Mirror { local, local_port, peer, peer_port, start, end, unobserved, connection } => {
            let p = piece(&mut out, addr(*peer).worker(peers));
            let c = conn_in((*local, *local_port), (*peer, *peer_port), (*start, *end), *unobserved);
            p.mirrors.push(ConnIn { connection: *connection, ..c });
        }
        Ev::Promise { run, from, to } => {
            for w in 0..peers {
                let p = piece(&mut out, w);
                let source = p.names.push(if *run == 3 { "ipam-b" } else { "ipam-a" });
                p.promises.push(Promise { run: *run, source, from: *from, to: *to });
            }
        }
        Ev::Assign { ip, at, who, run } => {
            let p = piece(&mut out, addr(*ip).worker(peers));
            let name = who.map(|w| p.names.push(NAMES[w]));
            p.assignments.push(AssignIn { ip: addr(*ip), at: *at, name, run: *run });
        }
    }
    out
}

type Answer = Result<(String, EvidenceKind), Reason>;

fn answer(d: Decision<'_>) -> Answer {
    match d {
        Decision::Attributed { workload, evidence } => Ok((workload.to_string(), evidence)),
        Decision::Unattributed(r) => Err(r),
    }
}

/// The definition (see the module docs): verdicts by query index.
fn definition(c: &Case) -> Vec<Answer> {
    let mut order: Vec<usize> = (0..c.queries.len()).collect();
    order.sort_by_key(|&i| c.queries[i].0);
    let mut memo: HashMap<(u64, u8, u16), (Answer, Time)> = HashMap::new();
    let mut out = vec![Err(Reason::NoOwner); c.queries.len()];
    let source_of = |run: RunId| if run == 3 { 1 } else { 0 };
    for i in order {
        let (q, query) = &c.queries[i];
        let key = (query.id, query.remote, query.remote_port);
        // Only a record of a connection with several records repeats a remembered verdict.
        let remembered = if query.several { memo.get_mut(&key) } else { None };
        if let Some((a, last_seen)) = remembered {
            if *last_seen + RETENTION > *q {
                *last_seen = *q;
                out[i] = a.clone();
                continue;
            }
            memo.remove(&key);
        }
        if *q >= query.start.saturating_sub(c.guard) + RETENTION {
            let a = Err(Reason::EvidenceExpired);
            if query.several {
                memo.insert(key, (a.clone(), *q));
            }
            out[i] = a;
            continue;
        }
        // In the order applied (by time), so that merged records keep their first one's flags.
        let mut known: Vec<&(Time, Ev)> = c.evidence.iter().filter(|(t, _)| t <= q).collect();
        known.sort_by_key(|(t, _)| *t);
        // Connection and mirror records already past their horizon when applied are dropped.
        let past = |t: Time, e: &Ev| match e {
            Ev::Conn { end, .. } | Ev::Mirror { end, .. } => end + c.guard + c.horizon <= t,
            _ => false,
        };
        let timed: Vec<(Time, &Ev)> = known.into_iter().filter(|(t, e)| !past(*t, e)).map(|(t, e)| (*t, e)).collect();
        let known: Vec<&Ev> = timed.iter().map(|(_, e)| *e).collect();
        let mut cand = Candidates::default();
        // Exporter claims on the remote address.
        for e in &known {
            if let Ev::Claim { ip, port, heartbeat, from, to, who } = e {
                if *ip != query.remote {
                    continue;
                }
                let kind = if *heartbeat { EvidenceKind::Heartbeat } else { EvidenceKind::Flow };
                let span = Span { from: *from, to: *to, workload: NAMES[*who], kind };
                match *port {
                    0 => cand.whole.push(span),
                    p if p == query.remote_port => cand.exact.push(span),
                    _ => cand.other.push(span),
                }
            }
        }
        // Connection records of the remote end, ends extended by later records of the same
        // connection (a start unobserved if any record says so) that came while the record so
        // far was within its horizon (one that came later starts over), within the horizon.
        // (local port, peer, peer port, start, who) -> (latest end, start unobserved).
        type Records = BTreeMap<(u16, u8, u16, Time, usize), (Time, bool)>;
        let mut conns: Records = BTreeMap::new();
        for (t, e) in &timed {
            if let Ev::Conn { local, local_port, peer, peer_port, start, end, unobserved, who } = e {
                if *local != query.remote {
                    continue;
                }
                let key = (*local_port, *peer, *peer_port, *start, *who);
                match conns.get_mut(&key) {
                    Some(so_far) if so_far.0 + c.guard + c.horizon > *t => {
                        so_far.0 = so_far.0.max(*end);
                        so_far.1 |= *unobserved;
                    }
                    _ => {
                        conns.insert(key, (*end, *unobserved));
                    }
                }
            }
        }
        // The query's connection as its own exporter run's records of it (its 4-tuple and
        // start) known at `q` show it: the latest end, a start unobserved if any says so; each
        // record counts within its own horizon. Without any, no end beyond its start.
        let mut own: Option<(Time, bool)> = None;
        for e in &known {
            if let Ev::Mirror { local, local_port, peer, peer_port, start, end, unobserved, connection } = e {
                let same_tuple = *peer == query.remote
                    && *peer_port == query.remote_port
                    && *local == query.local
                    && *local_port == query.local_port;
                let mine = stated(query) && *connection == query.id;
                if same_tuple && *start == query.start && mine && *q < *end + c.guard + c.horizon {
                    let (e0, u0) = own.unwrap_or((*end, *unobserved));
                    own = Some((e0.max(*end), u0 || *unobserved));
                }
            }
        }
        let (q_end, q_unobserved) = own.map_or((query.start, query.unobserved), |(end, u)| (end.max(query.start), u));
        for ((lp, peer, pp, start, who), (end, unobserved)) in conns {
            if *q >= end + c.guard + c.horizon {
                continue;
            }
            let mirrored = lp == query.remote_port && peer == query.local && pp == query.local_port;
            let observed = !unobserved && !q_unobserved;
            let same = if observed {
                start.abs_diff(query.start) <= c.guard
            } else {
                start <= q_end + c.guard && query.start <= end + c.guard
            };
            if !(mirrored && same) {
                continue;
            }
            // Another connection of the 4-tuple ended at some instant `e` by the query's start,
            // or started at some `s` from its end on; the record could be its if the record
            // ended by `e + guard` (skew), or started from `s - guard` on.
            let an_earlier_ones = (0..=query.start).any(|e| end <= e + c.guard);
            let a_later_ones = (q_end..=q_end + 400).any(|s| start + c.guard >= s);
            if !an_earlier_ones && !a_later_ones {
                cand.peers.push(NAMES[who]);
            }
        }
        // Assignments, cut at their run's promise as known at q.
        let mut runs: HashMap<RunId, Time> = HashMap::new();
        for e in &known {
            if let Ev::Promise { run, to, .. } = e {
                let end = runs.entry(*run).or_insert(*to);
                *end = (*end).max(*to);
            }
        }
        // Each event's source is its run's, if a promise of the run was applied at the event's
        // time or before (promises of a time go first); otherwise it vouches for nothing.
        let promised_by = |run: RunId, t: Time| {
            c.evidence.iter().any(|(pt, e)| *pt <= t && matches!(e, Ev::Promise { run: r, .. } if *r == run))
        };
        let mut events: Vec<(Time, RunId, Option<&str>, Option<u8>)> = Vec::new();
        for (t, e) in c.evidence.iter().filter(|(t, _)| t <= q) {
            if let Ev::Assign { ip, at, who, run } = e {
                if *ip == query.remote {
                    let source = promised_by(*run, *t).then(|| source_of(*run));
                    events.push((*at, *run, who.map(|w| NAMES[w]), source));
                }
            }
        }
        events.sort();
        events.dedup_by(|a, b| (a.0, a.1, a.2) == (b.0, b.1, b.2));
        let (lo, hi) = flowmap_operators::rule::band(query.start, c.guard);
        for (k, (at, run, who, source)) in events.iter().enumerate() {
            let (Some(who), Some(me)) = (who, source) else { continue };
            if *at >= hi {
                continue;
            }
            let uncut = events[k + 1..].iter().find(|e| e.3 == Some(*me)).map_or(Time::MAX, |e| e.0);
            // A run whose promise was dropped (a retention after it ended) ends its events at once.
            let run_end = if runs[run] + RETENTION <= *q { 0 } else { runs[run] };
            let cut = uncut.min(run_end);
            if cut + RETENTION <= *q {
                continue; // forgotten
            }
            if *at < hi && lo < cut && *at < cut {
                cand.assigned.push(Span { from: *at, to: cut, workload: who, kind: EvidenceKind::Assignment });
            }
            if cut < uncut && cut < hi && *at < hi && lo < uncut {
                cand.assignment_cut = true;
            }
        }
        let a = answer(decide(&cand, query.start, c.guard));
        if query.several {
            memo.insert(key, (a.clone(), *q));
        }
        out[i] = a;
    }
    out
}

/// The index, applying evidence and answering queries in time order.
fn by_index(c: &Case) -> Vec<Answer> {
    by_index_named(c, true)
}

/// As [`by_index`]; without names (as for a consumer that only counts), attributed verdicts
/// name "".
fn by_index_named(c: &Case, named: bool) -> Vec<Answer> {
    let mut index = Index::new(params(c));
    let mut times: Vec<Time> = c.evidence.iter().map(|(t, _)| *t).chain(c.queries.iter().map(|(t, _)| *t)).collect();
    times.sort_unstable();
    times.dedup();
    let mut out = vec![Err(Reason::NoOwner); c.queries.len()];
    for t in times {
        index.advance(t);
        let now: Vec<EvidencePiece> =
            c.evidence.iter().filter(|(at, _)| *at == t).flat_map(|(_, e)| pieces(e, 1)).collect();
        index.apply(&now);
        for (i, (_, q)) in c.queries.iter().enumerate().filter(|(_, (at, _))| *at == t) {
            let (r, bytes) = row(i, q);
            let piece = FlowPiece { rows: vec![r], bytes, ..Default::default() };
            let mut names = Names::default();
            out[i] = match index.lookup(&piece, &r, named.then_some(&mut names)).verdict {
                Verdict::Attributed { name, evidence } => Ok((names.get(name).to_string(), evidence)),
                Verdict::Unattributed(reason) => Err(reason),
            };
        }
    }
    out
}

/// The operator, on `workers` workers, with the evidence and flows of each time sent in an
/// order given by `shuffle`, each item in its own piece; the exchange routes them.
fn by_operator(c: &Case, workers: usize, shuffle: u64) -> Vec<Answer> {
    use std::sync::{Arc, Mutex};
    use timely::dataflow::operators::{Input, Inspect, Probe};
    let results: Arc<Mutex<Vec<(usize, Answer)>>> = Arc::default();
    let case = c.clone();
    let sink = Arc::clone(&results);
    timely::execute(timely::Config::process(workers), move |worker| {
        let peers = worker.peers();
        let sink = Arc::clone(&sink);
        let params = AttributeParams { index: params(&case), fuel: 3, names: true };
        let probe = timely::dataflow::ProbeHandle::new();
        let (mut flows_in, mut evidence_in) = worker.dataflow::<Time, _, _>(|scope| {
            let (flows_in, flows) = scope.new_input::<Vec<FlowPiece>>();
            let (evidence_in, evidence) = scope.new_input::<Vec<EvidencePiece>>();
            flows
                .attribute(evidence, params, StateProbe::default())
                .inspect(move |piece: &VerdictPiece| {
                    // Each piece holds one query; its message's `bytes_sent` names it.
                    let row = &piece.flows.rows[0];
                    let i = flowmap_schema::view::parse_flow(piece.flows.message(row)).unwrap().bytes_sent as usize;
                    let a = match &piece.verdicts[0] {
                        Verdict::Attributed { name, evidence } => Ok((piece.names.get(*name).to_string(), *evidence)),
                        Verdict::Unattributed(reason) => Err(*reason),
                    };
                    sink.lock().unwrap().push((i, a));
                })
                .probe_with(&probe);
            (flows_in, evidence_in)
        });
        // Flows enter at worker 0 and evidence at the last worker (the same one with a single
        // worker), each in its own order, so the two inputs' frontiers move apart; the exchange
        // routes every piece to the worker owning its address.
        let (sends_flows, sends_evidence) = (worker.index() == 0, worker.index() == peers - 1);
        let mut items: Vec<(Time, u64, Result<EvidencePiece, FlowPiece>)> = Vec::new();
        if sends_evidence {
            for (k, (t, e)) in case.evidence.iter().enumerate() {
                for p in pieces(e, peers) {
                    items.push((*t, (k as u64 + 1).wrapping_mul(shuffle | 1).rotate_left(7), Ok(p)));
                }
            }
        }
        if sends_flows {
            for (i, (t, q)) in case.queries.iter().enumerate() {
                let (r, bytes) = row(i, q);
                let piece = FlowPiece {
                    worker: r.remote.worker(peers) as u32,
                    exporters: vec![Reporter::default()],
                    rows: vec![r],
                    bytes,
                };
                items.push((*t, (i as u64 + 7_919).wrapping_mul(shuffle | 1).rotate_left(3), Err(piece)));
            }
        }
        items.sort_by_key(|(t, k, _)| (*t, *k));
        for (n, (t, _, item)) in items.into_iter().enumerate() {
            // Both handles of this worker follow the time of what it sends.
            flows_in.advance_to(t);
            evidence_in.advance_to(t);
            match item {
                Ok(p) => evidence_in.send(p),
                Err(p) => flows_in.send(p),
            }
            // Let the dataflow run between sends now and then, so inputs are seen apart.
            if (n as u64 ^ shuffle).is_multiple_of(3) {
                worker.step();
            }
        }
        flows_in.close();
        evidence_in.close();
        while !probe.done() {
            worker.step();
        }
    })
    .unwrap();
    let mut got = results.lock().unwrap().clone();
    got.sort_by_key(|(i, _)| *i);
    assert_eq!(got.len(), c.queries.len(), "one verdict per query");
    got.into_iter().map(|(_, a)| a).collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, .. ProptestConfig::default() })]

    /// The index answers exactly what the definition says.
    #[test]
    fn index_matches_the_definition(c in arb_case()) {
        prop_assert_eq!(by_index(&c), definition(&c));
    }

    /// Without names the index decides the same (only the names are left out).
    #[test]
    fn index_without_names_decides_the_same(c in arb_case()) {
        let unnamed = |a: Answer| a.map(|(_, e)| e);
        let with: Vec<_> = by_index(&c).into_iter().map(unnamed).collect();
        let without: Vec<_> = by_index_named(&c, false).into_iter().map(unnamed).collect();
        prop_assert_eq!(with, without);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 60, .. ProptestConfig::default() })]

    /// The operator answers what the index does, with 1 or 2 workers and any arrival order of
    /// the evidence and flows of one time.
    #[test]
    fn operator_matches_the_index_with_any_workers_and_order(c in arb_case(), shuffle in any::<u64>(), workers in 1usize..=2) {
        prop_assert_eq!(by_operator(&c, workers, shuffle), by_index(&c));
    }
}
