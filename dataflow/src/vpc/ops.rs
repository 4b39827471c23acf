//! The VPC operators: `vpc_queries` (rows to interval queries, at their lookup times) and
//! `vpc_join` (both ends' answers back into the row's output record).
//!
//! Time contract: `vpc_queries` emits every query of its rows at the row's lookup time (the end
//! of its interval plus the guard band, rounded up to the tick) and rows that need no lookup at
//! the same time, then drops its capability: it is a batch source. `vpc_join` holds nothing
//! across times: both ends of a row are answered at the row's lookup time, and a row goes out
//! as soon as its last end is in, at that time.

use std::collections::HashMap;
use std::sync::Arc;

use flowmap_operators::records::{IntervalAnswers, IntervalPiece, IntervalQuery, IntervalVerdict};
use flowmap_operators::{Reason, Time};
use flowmap_schema as wire;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::{Concat, ToStream};
use timely::dataflow::{Scope, Stream};

use super::{EndPlan, VpcRows};
use crate::output::{wire_evidence, wire_reason};

/// One end's answer, on its way to the row.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EndAnswer {
    record: u64,
    end: u8,
    workload: String,
    evidence: i32,
    reason: i32,
    vpc_reason: i32,
}

/// A row whose ends need no lookup (sent on as an answer-less row id).
type Row = u64;

fn lookup_time(to: Time, guard: Time, tick: Time) -> Time {
    let at = to.saturating_add(guard);
    let tick = tick.max(1);
    at.div_ceil(tick).saturating_mul(tick)
}

/// Emits stamped items at their times (a batch source: everything is known up front).
fn at_times<'scope, D: Clone + 'static>(
    scope: Scope<'scope, Time>,
    items: Vec<(D, Time)>,
) -> Stream<'scope, Time, Vec<D>> {
    items.to_stream(scope).unary::<CapacityContainerBuilder<Vec<D>>, _, _, _>(Pipeline, "AtTime", |_, _| {
        move |input, output| {
            input.for_each(|cap, data: &mut Vec<(D, Time)>| {
                let port = output.output_index();
                for (item, at) in data.drain(..) {
                    output.session(&cap.delayed(&at, port)).give(item);
                }
            })
        }
    })
}

/// This worker's share of `rows` (every `peers`-th row) as interval queries for the workers
/// owning their addresses, and the ids of rows that need no lookup; `guard` and `tick` in ns.
pub fn vpc_queries<'scope>(
    scope: Scope<'scope, Time>,
    rows: &Arc<VpcRows>,
    guard: Time,
    tick: Time,
) -> (Stream<'scope, Time, Vec<IntervalPiece>>, Stream<'scope, Time, Vec<Row>>) {
    let (index, peers) = (scope.index(), scope.peers());
    let mut pieces: HashMap<(Time, u32), IntervalPiece> = HashMap::new();
    let mut decided = Vec::new();
    for (i, record) in rows.records.iter().enumerate().skip(index).step_by(peers.max(1)) {
        let interval = rows.intervals[i];
        let at = interval.map_or(0, |(_, to)| lookup_time(to, guard, tick));
        let mut queried = false;
        for (end, plan) in rows.plans[i].iter().enumerate() {
            let (EndPlan::Query(ip, port), Some((from, to))) = (plan, interval) else { continue };
            let worker = ip.worker(peers) as u32;
            let piece = pieces.entry((at, worker)).or_insert_with(|| IntervalPiece { worker, queries: Vec::new() });
            piece.queries.push(IntervalQuery {
                record: record.record_id,
                end: end as u8,
                ip: *ip,
                port: *port,
                from,
                to,
            });
            queried = true;
        }
        if !queried {
            decided.push((record.record_id, at));
        }
    }
    let mut pieces: Vec<(IntervalPiece, Time)> = pieces.into_iter().map(|((at, _), p)| (p, at)).collect();
    pieces.sort_by_key(|(p, at)| (*at, p.worker));
    (at_times(scope, pieces), at_times(scope, decided))
}

/// Puts each row's answers back into its output record (see the module docs); rows that needed
/// no lookup (`decided`) go out as they are, their ends' reasons filled in.
pub fn vpc_join<'scope>(
    answers: Stream<'scope, Time, Vec<IntervalAnswers>>,
    decided: Stream<'scope, Time, Vec<Row>>,
    rows: Arc<VpcRows>,
) -> Stream<'scope, Time, Vec<wire::VpcFlowRecord>> {
    let ends = answers.unary::<CapacityContainerBuilder<Vec<EndAnswer>>, _, _, _>(Pipeline, "VpcAnswers", |_, _| {
        move |input, output| {
            input.for_each(|cap, data: &mut Vec<IntervalAnswers>| {
                let mut session = output.session(&cap);
                for a in data.drain(..) {
                    for (q, v) in a.queries.iter().zip(&a.verdicts) {
                        session.give(end_answer(&a, q, v));
                    }
                }
            })
        }
    });
    let decided = decided.unary::<CapacityContainerBuilder<Vec<EndAnswer>>, _, _, _>(Pipeline, "VpcDecided", |_, _| {
        move |input, output| {
            input.for_each(|cap, data: &mut Vec<Row>| {
                let mut session = output.session(&cap);
                for record in data.drain(..) {
                    // A marker: a row with nothing to wait for.
                    session.give(EndAnswer {
                        record,
                        end: u8::MAX,
                        workload: String::new(),
                        evidence: 0,
                        reason: 0,
                        vpc_reason: 0,
                    });
                }
            })
        }
    });
    let exchange = Exchange::new(|a: &EndAnswer| a.record);
    ends.concat(decided).unary::<CapacityContainerBuilder<Vec<wire::VpcFlowRecord>>, _, _, _>(
        exchange,
        "VpcJoin",
        move |_, _| {
            let mut waiting: HashMap<u64, Vec<EndAnswer>> = HashMap::new();
            move |input, output| {
                input.for_each(|cap, data: &mut Vec<EndAnswer>| {
                    let mut session = output.session(&cap);
                    for answer in data.drain(..) {
                        let Some(&i) = rows.by_id.get(&answer.record) else { continue };
                        let wanted = rows.plans[i].iter().filter(|p| matches!(p, EndPlan::Query(..))).count();
                        let have = waiting.entry(answer.record).or_default();
                        if answer.end != u8::MAX {
                            have.push(answer.clone());
                        }
                        if have.len() >= wanted {
                            let answers = waiting.remove(&answer.record).unwrap_or_default();
                            session.give(complete(&rows, i, &answers));
                        }
                    }
                })
            }
        },
    )
}

fn end_answer(a: &IntervalAnswers, q: &IntervalQuery, v: &IntervalVerdict) -> EndAnswer {
    let mut out =
        EndAnswer { record: q.record, end: q.end, workload: String::new(), evidence: 0, reason: 0, vpc_reason: 0 };
    match v {
        IntervalVerdict::Attributed { evidence, .. } => {
            out.workload = a.workload(v).unwrap_or_default().to_string();
            out.evidence = wire_evidence(*evidence) as i32;
        }
        IntervalVerdict::Unattributed(r) => out.reason = wire_reason(*r) as i32,
        IntervalVerdict::NotCovered => out.vpc_reason = wire::VpcReason::IntervalNotCovered as i32,
    }
    out
}

/// Row `i`'s record with its ends filled in from `answers` and its plans.
fn complete(rows: &VpcRows, i: usize, answers: &[EndAnswer]) -> wire::VpcFlowRecord {
    let mut record = rows.records[i].clone();
    for (end, plan) in rows.plans[i].iter().enumerate() {
        let slot = if end == 0 { &mut record.src } else { &mut record.dst };
        let e = slot.get_or_insert_with(wire::VpcEnd::default);
        match plan {
            EndPlan::Query(..) => {
                if let Some(a) = answers.iter().find(|a| usize::from(a.end) == end) {
                    e.workload.clone_from(&a.workload);
                    e.evidence = a.evidence;
                    e.reason = a.reason;
                    e.vpc_reason = a.vpc_reason;
                }
            }
            EndPlan::External => e.reason = wire_reason(Reason::External) as i32,
            // An address but no interval to look it up over.
            EndPlan::Decided if e.vpc_reason == wire::VpcReason::Unspecified as i32 => {
                e.reason = wire_reason(Reason::NoOwner) as i32;
            }
            EndPlan::Decided => {}
        }
    }
    record
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_times_round_up_to_the_tick() {
        assert_eq!(lookup_time(10, 5, 10), 20);
        assert_eq!(lookup_time(15, 5, 10), 20);
        assert_eq!(lookup_time(16, 5, 10), 30);
        assert_eq!(lookup_time(u64::MAX - 1, 5, 10), u64::MAX, "saturates");
    }
}
