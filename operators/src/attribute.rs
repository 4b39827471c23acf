//! `attribute`: the frontier-driven lookup of each flow's remote end in the worker's ownership
//! [`Index`].
//!
//! Two inputs, both routed to the worker that owns the address ([`crate::types::Ip::worker`];
//! the source splits its output per worker): evidence pieces, at the batch time of the batch they
//! came in, and flow pieces, each at its *lookup time* `q` (at least the flow's start plus the
//! guard band, and at least the time its batch entered).
//!
//! Time contract: the operator stashes both inputs by time, and handles a time `t` only once
//! both input frontiers have passed it: it first moves the index's clock to `t` (expiry), then
//! applies the evidence of `t`, then looks up the flows of `t` and emits their verdicts at `t`,
//! holding a capability for `t` only while flows of `t` wait. So a lookup at `q` sees exactly
//! the evidence of times `<= q`, whatever order and batching things arrived in: every claim
//! about the guard band around a flow's start is in, because the source gives evidence the time
//! of the window it describes (or later, for a late batch) and lookup times are at least the
//! band's end. Evidence produces no output and holds no capability.
//!
//! A third input, interval queries (the two ends of each cloud flow log row, each at its lookup
//! time, for the worker owning the address), is handled in the same order: at `t`, after the
//! flows of `t`, against the same index ([`Index::lookup_interval`]), so an interval's answer
//! depends only on its lookup time, like a flow's. Its answers go to a second output, connected
//! only to the interval input: the flows' verdicts never wait on the answers' consumers.
//!
//! Work per activation is bounded by `fuel` records (flows and interval queries); the operator
//! re-activates itself while it has ready work.
//!
//! ```
//! use flowmap_operators::*;
//! use flowmap_operators::records::*;
//! use timely::dataflow::operators::{Capture, ToStream, capture::Extract};
//!
//! let db = Ip::v4([10, 0, 0, 7]);
//! let mut evidence = EvidencePiece::new(0);
//! let name = evidence.names.push("db");
//! evidence.claims.push(ClaimIn { ip: db, port: 0, kind: EvidenceKind::Heartbeat, from: 0, to: 1_000, name });
//! let flow = FlowPiece {
//!     rows: vec![FlowRow { remote: db, start: 500, batch_at: 0, id: 1, msg_off: 0, msg_len: 0, remote_port: 5432, exporter: 0, flags: 0, direction: 0 }],
//!     ..Default::default()
//! };
//! let params = AttributeParams {
//!     index: IndexParams { guard: 10, retention: 10_000, peer_horizon: 100 },
//!     fuel: 100,
//!     names: true,
//! };
//! let out = timely::example(move |scope| {
//!     let evidence = vec![evidence].to_stream(scope);
//!     vec![flow].to_stream(scope).attribute(evidence, params, Default::default()).capture()
//! });
//! let pieces: Vec<VerdictPiece> = out.extract().into_iter().flat_map(|(_, v)| v).collect();
//! assert_eq!(pieces[0].workload(&pieces[0].verdicts[0]), Some("db"));
//! ```

use std::cell::Cell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::Capability;
use timely::dataflow::Stream;
use timely::progress::Antichain;

use crate::index::{Index, IndexParams, IndexSize};
use crate::records::{
    Disagreement, EvidencePiece, FlowPiece, FlowRow, IntervalAnswers, IntervalPiece, IntervalVerdict, Names,
    VerdictPiece,
};
use crate::rule::{Decision, Interval};
use crate::types::Time;

/// Parameters of the lookup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttributeParams {
    /// The index's settings.
    pub index: IndexParams,
    /// Flow records looked up per activation, at most.
    pub fuel: usize,
    /// Whether verdicts carry the remote workload's name (consumers that only count say no).
    pub names: bool,
}

/// Where the operator reports its index's size (sampled about every 100 ms).
#[derive(Clone, Default)]
pub struct StateProbe(Rc<Cell<IndexSize>>);

impl StateProbe {
    /// The latest sample.
    pub fn get(&self) -> IndexSize {
        self.0.get()
    }
}

/// Extension trait on a stream of flow pieces, each at its lookup time.
pub trait Attribute<'scope> {
    /// Attributes each flow's remote end against the evidence (see the module docs).
    fn attribute(
        self,
        evidence: Stream<'scope, Time, Vec<EvidencePiece>>,
        params: AttributeParams,
        state: StateProbe,
    ) -> Stream<'scope, Time, Vec<VerdictPiece>>;

    /// As [`Attribute::attribute`], and also attributes each interval query (an end of a cloud
    /// flow log row) against the same index, at its time, in the same order: at a time `t`,
    /// evidence, then flows, then intervals. The second stream holds the interval answers,
    /// connected only to the interval input (its frontier is the interval input's).
    fn attribute_with_intervals(
        self,
        evidence: Stream<'scope, Time, Vec<EvidencePiece>>,
        intervals: Stream<'scope, Time, Vec<IntervalPiece>>,
        params: AttributeParams,
        state: StateProbe,
    ) -> (Stream<'scope, Time, Vec<VerdictPiece>>, Stream<'scope, Time, Vec<IntervalAnswers>>);
}

impl<'scope> Attribute<'scope> for Stream<'scope, Time, Vec<FlowPiece>> {
    fn attribute(
        self,
        evidence: Stream<'scope, Time, Vec<EvidencePiece>>,
        params: AttributeParams,
        state: StateProbe,
    ) -> Stream<'scope, Time, Vec<VerdictPiece>> {
        let none = timely::dataflow::operators::generic::operator::empty(self.scope());
        self.attribute_with_intervals(evidence, none, params, state).0
    }

    fn attribute_with_intervals(
        self,
        evidence: Stream<'scope, Time, Vec<EvidencePiece>>,
        intervals: Stream<'scope, Time, Vec<IntervalPiece>>,
        params: AttributeParams,
        state: StateProbe,
    ) -> (Stream<'scope, Time, Vec<VerdictPiece>>, Stream<'scope, Time, Vec<IntervalAnswers>>) {
        let scope = self.scope();
        let mut builder = OperatorBuilder::new("Attribute".to_owned(), scope);
        let info = builder.operator_info();
        let mut flows = builder.new_input(self, Exchange::new(|p: &FlowPiece| u64::from(p.worker)));
        let mut evidence = builder.new_input(evidence, Exchange::new(|p: &EvidencePiece| u64::from(p.worker)));
        let mut intervals = builder.new_input(intervals, Exchange::new(|p: &IntervalPiece| u64::from(p.worker)));
        let unit = || Antichain::from_elem(Default::default());
        let (verdicts_out, verdicts) =
            builder.new_output_connection::<Vec<VerdictPiece>, _>([(0, unit()), (1, unit())]);
        let (answers_out, answers) = builder.new_output_connection::<Vec<IntervalAnswers>, _>([(2, unit())]);
        let mut verdicts_out = OutputBuilder::<_, CapacityContainerBuilder<Vec<VerdictPiece>>>::from(verdicts_out);
        let mut answers_out = OutputBuilder::<_, CapacityContainerBuilder<Vec<IntervalAnswers>>>::from(answers_out);

        builder.build(move |_capabilities| {
            let activator = scope.activator_for(info.address);
            let mut index = Index::new(params.index);
            let mut flows_at: BTreeMap<Time, (Capability<Time>, Vec<FlowPiece>)> = BTreeMap::new();
            let mut evidence_at: BTreeMap<Time, Vec<EvidencePiece>> = BTreeMap::new();
            let mut intervals_at: BTreeMap<Time, (Capability<Time>, Vec<IntervalPiece>)> = BTreeMap::new();
            let mut last_sample: Option<Instant> = None;

            move |frontiers| {
                flows.for_each(|cap, data| {
                    let Some(cap) = cap.retain_least(0) else { return };
                    let entry = flows_at.entry(*cap.time()).or_insert_with(|| (cap, Vec::new()));
                    entry.1.append(data);
                });
                evidence.for_each(|cap, data| {
                    let Some(&time) = cap.least() else { return };
                    evidence_at.entry(time).or_default().append(data);
                });
                intervals.for_each(|cap, data| {
                    let Some(cap) = cap.retain_least(1) else { return };
                    let entry = intervals_at.entry(*cap.time()).or_insert_with(|| (cap, Vec::new()));
                    entry.1.append(data);
                });
                let mut verdicts_out = verdicts_out.activate();
                let mut answers_out = answers_out.activate();

                let mut fuel = params.fuel;
                loop {
                    let next_e = evidence_at.first_key_value().map(|(t, _)| *t);
                    let next_f = flows_at.first_key_value().map(|(t, _)| *t);
                    let next_i = intervals_at.first_key_value().map(|(t, _)| *t);
                    let Some(t) = next_e.into_iter().chain(next_f).chain(next_i).min() else { break };
                    if frontiers.iter().any(|f| f.less_equal(&t)) {
                        break; // more may still come at `t`
                    }
                    if fuel == 0 {
                        activator.activate();
                        break;
                    }
                    index.advance(t);
                    if next_e == Some(t) {
                        index.apply(&evidence_at.remove(&t).unwrap_or_default());
                    }
                    if next_f == Some(t) {
                        let Some(mut entry) = flows_at.first_entry() else { break };
                        let (cap, pending) = entry.get_mut();
                        let mut session = verdicts_out.session(&*cap);
                        while fuel > 0 {
                            let Some(piece) = pending.pop() else { break };
                            fuel = fuel.saturating_sub(piece.rows.len());
                            if let Some(verdicts) = look_up(&mut index, piece, params.names) {
                                session.give(verdicts);
                            }
                        }
                        drop(session);
                        if !pending.is_empty() {
                            continue; // out of fuel: the loop re-activates
                        }
                        entry.remove();
                    }
                    if next_i == Some(t) && fuel > 0 {
                        let Some(entry) = intervals_at.first_entry() else { break };
                        let (cap, pending) = entry.remove();
                        let mut session = answers_out.session(&cap);
                        for piece in pending {
                            fuel = fuel.saturating_sub(piece.queries.len());
                            session.give(answer(&index, piece));
                        }
                    }
                }

                if last_sample.is_none_or(|t| t.elapsed() >= Duration::from_millis(100)) {
                    last_sample = Some(Instant::now());
                    state.0.set(index.size());
                }
            }
        });
        (verdicts, answers)
    }
}

/// Looks up the rows of one flow piece; `None` when every row was only re-read to rebuild
/// state (those are looked up for the memo only).
fn look_up(index: &mut Index, piece: FlowPiece, names_wanted: bool) -> Option<VerdictPiece> {
    let mut names = Names::default();
    let n = piece.rows.len();
    let (mut verdicts, mut checks) = (Vec::with_capacity(n), Vec::with_capacity(n));
    let mut disagreements = Vec::new();
    for row in &piece.rows {
        let looked = index.lookup(&piece, row, names_wanted.then_some(&mut names));
        if let Some((peer, claims, evidence)) = looked.disagreement {
            let row = verdicts.len() as u32;
            disagreements.push(Disagreement { row, peer, claims, evidence });
        }
        verdicts.push(looked.verdict);
        checks.push(looked.check);
    }
    let mut piece = piece;
    if piece.rows.iter().any(FlowRow::rebuild) {
        let keep: Vec<bool> = piece.rows.iter().map(|r| !r.rebuild()).collect();
        let mut index_of = Vec::with_capacity(n);
        let mut kept = 0u32;
        for k in &keep {
            index_of.push(kept);
            kept += u32::from(*k);
        }
        disagreements.retain(|d| keep[d.row as usize]);
        for d in &mut disagreements {
            d.row = index_of[d.row as usize];
        }
        let mut k = keep.iter();
        verdicts.retain(|_| *k.next().unwrap_or(&false));
        let mut k = keep.iter();
        checks.retain(|_| *k.next().unwrap_or(&false));
        piece.rows.retain(|r| !r.rebuild());
    }
    (!piece.rows.is_empty()).then_some(VerdictPiece { flows: piece, verdicts, checks, disagreements, names })
}

/// Answers one piece of interval queries (names always: interval answers are few).
fn answer(index: &Index, piece: IntervalPiece) -> IntervalAnswers {
    let mut names = Names::default();
    let verdicts = piece
        .queries
        .iter()
        .map(|q| match index.lookup_interval(q.ip, q.port, q.from, q.to) {
            Interval::Decided(Decision::Attributed { workload, evidence }) => {
                IntervalVerdict::Attributed { name: names.push(workload), evidence }
            }
            Interval::Decided(Decision::Unattributed(reason)) => IntervalVerdict::Unattributed(reason),
            Interval::NotCovered => IntervalVerdict::NotCovered,
        })
        .collect();
    IntervalAnswers { queries: piece.queries, verdicts, names }
}
