//! `attribute`: the frontier-driven lookup of each flow's remote IP in the ownership
//! arrangement.
//!
//! Flows are exchanged by the hash of their remote IP, the same hash differential uses to
//! partition the arrangement by key, so each worker looks up only the IPs whose ownership it
//! holds: nothing is broadcast.
//!
//! Time contract: a flow arrives at its *lookup time* `q` (the dataflow timestamp the source
//! gave it: at least its start plus the guard band, and at least the time its batch entered).
//! The operator holds the flow, under a capability for `q`, exactly until the arrangement's
//! upper frontier is beyond `q`: at that point every claim with a time `<= q` is in the trace,
//! including every claim about the guard band around the flow's start, because evidence enters
//! the dataflow no later than the start of the window it describes. It then reads the claims
//! on the remote IP accumulated at times `<= q` (not "whatever is there now"), so the verdict
//! depends only on the input, not on arrival timing. It emits the verdict at `q` and drops the
//! capability.
//!
//! How it reads: all flows ready in one activation are sorted by IP and answered one trace batch
//! at a time, each pass walking that batch's keys and values forward (random probes into a
//! large trace are what this operator's time goes to; forward walks are what memory likes).
//!
//! Trace maintenance: the operator lets the trace compact logically up to the least time it may
//! still read (the least stashed `q`, or its flow input's frontier), and physically up to the
//! trace upper it has read through. When its flow input is exhausted it drops the trace.
//! Work per activation is bounded by `fuel` flows; it re-activates itself when more is ready.
//!
//! ```
//! use flowmap_operators::*;
//! use differential_dataflow::AsCollection;
//! use timely::dataflow::operators::{Capture, ToStream, capture::Extract};
//!
//! let ip = Ip::v4([10, 0, 0, 7]);
//! let claim = Claim { kind: EvidenceKind::Heartbeat, from: 0, to: 1_000, workload: Workload::new("db") };
//! let flow = FlowRecord {
//!     id: 1, exporter: Workload::new("host-a"), local_ip: Ip::v4([10, 0, 0, 1]), local_port: 5000,
//!     remote_ip: ip, remote_port: 5432, direction: Direction::Client, start: 500, end: 600,
//!     counters: Counters::default(), local_workload: None, open: false,
//! };
//! let out = timely::example(move |scope| {
//!     let ownership = vec![((ip, claim), 0u64, 1i64)].to_stream(scope).as_collection().arrange_by_key();
//!     let params = AttributeParams { guard: 10, retention: 10_000, max_claim_len: 1_000, fuel: 100 };
//!     vec![flow].to_stream(scope).attribute(ownership, params).capture()
//! });
//! let verdicts: Vec<_> = out.extract().into_iter().flat_map(|(_, v)| v).map(|a| a.remote).collect();
//! assert_eq!(verdicts, vec![Attribution::Workload { workload: Workload::new("db"), evidence: EvidenceKind::Heartbeat }]);
//! ```

use std::collections::BTreeMap;

use differential_dataflow::hashable::Hashable;
use differential_dataflow::operators::arrange::{Arranged, TraceAgent};
use differential_dataflow::trace::cursor::{Cursor, Navigable};
use differential_dataflow::trace::implementations::ValSpine;
use differential_dataflow::trace::TraceReader;
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::Capability;
use timely::dataflow::Stream;
use timely::progress::Antichain;

use crate::ranges::decide;
use crate::types::{AttributedFlow, Attribution, Claim, Diff, EvidenceKind, FlowRecord, Ip, Reason, Time, Workload};

/// The ownership arrangement: claims keyed by IP.
pub type OwnershipTrace = TraceAgent<ValSpine<Ip, Claim, Time, Diff>>;

/// Parameters of the lookup.
#[derive(Clone, Copy, Debug)]
pub struct AttributeParams {
    /// Clock-skew guard band: an owner must hold `[start - guard, start + guard]` alone.
    pub guard: Time,
    /// Claims are retracted this long after they end (see [`crate::Expire`]); flows whose
    /// start is older than that at lookup time are left unattributed.
    pub retention: Time,
    /// The longest exporter claim (heartbeat or flow) in the arrangement; the sources clip
    /// exporter claims to their batch window, so this is the longest accepted window.
    pub max_claim_len: Time,
    /// Flows looked up per activation at most.
    pub fuel: usize,
}

/// Extension trait on a stream of flows, each at its lookup time.
pub trait Attribute<'scope> {
    /// Attributes each flow's remote IP against `ownership` (see the module docs).
    fn attribute(
        self,
        ownership: Arranged<'scope, OwnershipTrace>,
        params: AttributeParams,
    ) -> Stream<'scope, Time, Vec<AttributedFlow>>;
}

impl<'scope> Attribute<'scope> for Stream<'scope, Time, Vec<FlowRecord>> {
    fn attribute(
        self,
        ownership: Arranged<'scope, OwnershipTrace>,
        params: AttributeParams,
    ) -> Stream<'scope, Time, Vec<AttributedFlow>> {
        let scope = self.scope();
        let mut trace = Some(ownership.trace);
        let exchange = Exchange::new(|flow: &FlowRecord| flow.remote_ip.hashed());
        self.binary_frontier(ownership.stream, exchange, Pipeline, "Attribute", move |_cap, info| {
            let activator = scope.activator_for(info.address);
            let mut stash: BTreeMap<Time, (Capability<Time>, Vec<FlowRecord>)> = BTreeMap::new();
            let mut upper: Antichain<Time> = Antichain::from_elem(0);
            let probe_workload = Workload::new("");

            move |(flows, flows_frontier), (batches, _), output| {
                let port = output.output_index();
                flows.for_each_stamp(|cap, data| {
                    let Some(cap) = cap.retain_least(port) else { return };
                    let entry = stash.entry(*cap.time()).or_insert_with(|| (cap, Vec::new()));
                    for batch in data {
                        entry.1.append(batch);
                    }
                });
                // The batches themselves are read through the trace.
                batches.for_each(|_, _| {});

                let Some(tr) = trace.as_mut() else {
                    // Trace dropped: the flow input is exhausted, so there is nothing left to do.
                    stash.clear();
                    return;
                };
                tr.read_upper(&mut upper);

                // Take the ready flows of every ready time (up to `fuel`), and look them all up
                // in one pass in key order: the cursors then move forward through the trace
                // instead of jumping around it, which is what makes the lookup fast.
                let mut ready: Vec<(Capability<Time>, Vec<FlowRecord>)> = Vec::new();
                let mut fuel = params.fuel;
                while fuel > 0 {
                    let Some(mut entry) = stash.first_entry() else { break };
                    if upper.less_equal(entry.key()) {
                        break;
                    }
                    let (cap, pending) = entry.get_mut();
                    let take = pending.len().min(fuel);
                    fuel -= take;
                    if take == pending.len() {
                        ready.push(entry.remove());
                    } else {
                        let part = pending.split_off(pending.len() - take);
                        ready.push((cap.clone(), part));
                    }
                }
                if !ready.is_empty() {
                    if let Some(batches) = tr.batches_through(upper.borrow()) {
                        // Sort an index (IP, group, position) rather than the records.
                        let mut order: Vec<(Ip, u32, u32)> = Vec::new();
                        for (g, (_, flows)) in ready.iter().enumerate() {
                            order.extend(flows.iter().enumerate().map(|(i, f)| (f.remote_ip, g as u32, i as u32)));
                        }
                        order.sort_unstable();
                        let mut verdicts: Vec<Vec<Attribution>> = ready
                            .iter()
                            .map(|(_, flows)| vec![Attribution::Unattributed(Reason::NoOwner); flows.len()])
                            .collect();
                        let queries: Vec<Query> = order
                            .iter()
                            .map(|&(ip, g, i)| {
                                let (cap, flows) = &ready[g as usize];
                                Query { ip, start: flows[i as usize].start, at: *cap.time() }
                            })
                            .collect();
                        let answers = lookup_sorted(&batches, &queries, &params, &probe_workload);
                        for ((_, g, i), answer) in order.into_iter().zip(answers) {
                            verdicts[g as usize][i as usize] = answer;
                        }
                        for ((cap, flows), verdicts) in ready.into_iter().zip(verdicts) {
                            let mut session = output.session(&cap);
                            for (flow, remote) in flows.into_iter().zip(verdicts) {
                                session.give(AttributedFlow { flow, remote });
                            }
                        }
                    } else {
                        // The trace cannot be read through `upper` (never expected: we hold its
                        // physical compaction there). Put the flows back and try again later.
                        for (cap, flows) in ready {
                            stash.entry(*cap.time()).or_insert_with(|| (cap, Vec::new())).1.extend(flows);
                        }
                    }
                }
                if stash.first_key_value().is_some_and(|(t, _)| !upper.less_equal(t)) {
                    activator.activate();
                }

                // Trace maintenance (see the module docs).
                let mut readable: Antichain<Time> = flows_frontier.frontier().to_owned();
                if let Some((t, _)) = stash.first_key_value() {
                    readable.insert(*t);
                }
                if readable.is_empty() {
                    trace = None;
                } else {
                    tr.set_logical_compaction(readable.borrow());
                    tr.set_physical_compaction(upper.borrow());
                }
            }
        })
    }
}

/// One lookup: who held `ip` at `start`, as known at time `at`.
struct Query {
    ip: Ip,
    start: Time,
    at: Time,
}

/// Answers lookups sorted by IP, one trace batch at a time: each pass walks one batch's keys
/// and values forward, which the memory system rewards, and collects the claims each query
/// can see (with their multiplicity at its time); then the claims of every query are summed
/// over batches and decided.
fn lookup_sorted<B>(
    batches: &[B],
    queries: &[Query],
    params: &AttributeParams,
    probe_workload: &Workload,
) -> Vec<Attribution>
where
    B: Navigable,
    B::Cursor: for<'a> Cursor<
        Storage = B,
        Key<'a> = &'a Ip,
        Val<'a> = &'a Claim,
        TimeGat<'a> = &'a Time,
        DiffGat<'a> = &'a Diff,
    >,
{
    let expired = |q: &Query| q.at >= q.start.saturating_sub(params.guard).saturating_add(params.retention);
    let mut hits: Vec<(u32, &Claim, Diff)> = Vec::new();
    for batch in batches {
        let mut cursor = batch.cursor();
        for (k, q) in queries.iter().enumerate() {
            if expired(q) {
                continue;
            }
            cursor.seek_key(batch, &q.ip);
            if cursor.get_key(batch) != Some(&q.ip) {
                continue;
            }
            let lo = q.start.saturating_sub(params.guard);
            let hi = q.start.saturating_add(params.guard).saturating_add(1);
            let seek_from = lo.saturating_sub(params.max_claim_len);
            cursor.rewind_vals(batch);
            // Assignment claims sort first and may be open-ended, so all of the IP's are
            // scanned (there are few); exporter claims are at most `max_claim_len` long, so the
            // scan seeks to the first that can reach the band.
            let mut sought = false;
            while let Some(claim) = cursor.get_val(batch) {
                let assignment = claim.kind == EvidenceKind::Assignment;
                if !sought && (!assignment || claim.from >= hi) {
                    sought = true;
                    if assignment || claim.from < seek_from {
                        let probe = Claim {
                            kind: EvidenceKind::Heartbeat,
                            from: seek_from,
                            to: 0,
                            workload: probe_workload.clone(),
                        };
                        cursor.seek_val(batch, &probe);
                        continue;
                    }
                }
                if claim.from >= hi {
                    break;
                }
                if claim.to > lo {
                    let mut count: Diff = 0;
                    cursor.map_times(batch, |t, d| {
                        if *t <= q.at {
                            count += *d;
                        }
                    });
                    if count != 0 {
                        hits.push((k as u32, claim, count));
                    }
                }
                cursor.step_val(batch);
            }
        }
    }
    hits.sort_by_key(|h| h.0);
    let mut answers = Vec::with_capacity(queries.len());
    let mut counted: Vec<(&Claim, Diff)> = Vec::new();
    let mut claims: Vec<Claim> = Vec::new();
    let mut next = hits.iter().peekable();
    for (k, q) in queries.iter().enumerate() {
        if expired(q) {
            answers.push(Attribution::Unattributed(Reason::EvidenceExpired));
            continue;
        }
        counted.clear();
        while let Some(&(_, claim, count)) = next.next_if(|h| h.0 as usize == k) {
            match counted.iter_mut().find(|(c, _)| *c == claim) {
                Some((_, total)) => *total += count,
                None => counted.push((claim, count)),
            }
        }
        claims.clear();
        claims.extend(counted.iter().filter(|(_, n)| *n > 0).map(|(c, _)| (*c).clone()));
        answers.push(decide(&claims, q.start, params.guard));
    }
    answers
}
