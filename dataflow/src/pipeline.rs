//! The attribution dataflow, from decoded batches to attributed flows.
//!
//! ```text
//! batches ──┬─ claims (heartbeats, flows' local ends) ─┐
//!           ├─ assignment events ─ AssignmentClaims ───┴─ Expire ─ arrange_by_key (by IP)
//!           │                                                            │
//!           ├─ fleet flows, stamped at their lookup time ─────────── Attribute ─┐
//!           └─ external flows ─ Unattributed(External) ─────────────────────────┴─ output
//! ```
//!
//! A fleet flow's lookup time is `max(batch time, start + guard)` rounded up to the tick: by
//! then every exporter has promised everything about the guard band around its start.

use std::collections::BTreeMap;
use std::sync::Arc;

use differential_dataflow::operators::arrange::Arranged;
use differential_dataflow::AsCollection;
use flowmap_operators::{
    round_up, AssignmentClaims, AssignmentEvent, Attribute, AttributeParams, AttributedFlow, Attribution,
    Claim, Diff, Expire, FlowRecord, Ip, OwnershipTrace, Reason, Time,
};
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::Concat;
use timely::dataflow::Stream;

use crate::config::JobConfig;
use crate::decode::DecodedBatch;

/// The pieces of a built dataflow that a runner needs.
pub struct Built<'scope> {
    /// Every flow, attributed or not, exactly once per accepted flow record.
    pub output: Stream<'scope, Time, Vec<AttributedFlow>>,
    /// The ownership arrangement (shared; readable for state statistics).
    pub ownership: Arranged<'scope, OwnershipTrace>,
}

/// Builds the attribution dataflow over a stream of decoded batches.
pub fn attribution<'scope>(batches: Stream<'scope, Time, Vec<Arc<DecodedBatch>>>, config: &JobConfig) -> Built<'scope> {
    let claims = batches
        .clone()
        .unary(Pipeline, "Claims", |_, _| {
            move |input, output| {
                input.for_each(|cap, data| {
                    let Some(&time) = cap.least() else { return };
                    let mut session = output.session(&cap);
                    for batch in data.iter() {
                        for (ip, claim) in &batch.claims {
                            session.give(((*ip, claim.clone()), time, 1 as Diff));
                        }
                    }
                });
            }
        })
        .as_collection();

    let assignments: Stream<'scope, Time, Vec<AssignmentEvent>> = batches.clone().unary(Pipeline, "Assignments", |_, _| {
        move |input, output| {
            input.for_each(|cap, data| {
                let mut session = output.session(&cap);
                for batch in data.iter() {
                    session.give_iterator(batch.assignments.iter().cloned());
                }
            });
        }
    });

    let ownership = claims
        .concat(assignments.assignment_claims())
        .expire(config.retention, config.tick)
        .arrange_by_key_named("Ownership");

    let (guard, tick, fleet) = (config.guard, config.tick, config.clone());
    let fleet_flows: Stream<'scope, Time, Vec<FlowRecord>> = batches.clone().unary(Pipeline, "StampFlows", move |_, _| {
        move |input, output| {
            let port = output.output_index();
            input.for_each(|cap, data| {
                let Some(&time) = cap.least() else { return };
                let mut by_time: BTreeMap<Time, Vec<FlowRecord>> = BTreeMap::new();
                for batch in data.iter() {
                    for flow in batch.flows.iter().filter(|f| fleet.in_fleet(f.remote_ip)) {
                        let at = time.max(round_up(flow.start.saturating_add(guard), tick));
                        by_time.entry(at).or_default().push(flow.clone());
                    }
                }
                for (at, mut flows) in by_time {
                    let delayed = cap.delayed(&at, port);
                    output.session(&delayed).give_container(&mut flows);
                }
            });
        }
    });

    let outside = config.clone();
    let external: Stream<'scope, Time, Vec<AttributedFlow>> = batches.unary(Pipeline, "ExternalFlows", move |_, _| {
        move |input, output| {
            input.for_each(|cap, data| {
                let mut session = output.session(&cap);
                for batch in data.iter() {
                    for flow in batch.flows.iter().filter(|f| !outside.in_fleet(f.remote_ip)) {
                        session.give(AttributedFlow {
                            flow: flow.clone(),
                            remote: Attribution::Unattributed(Reason::External),
                        });
                    }
                }
            });
        }
    });

    let params = AttributeParams {
        guard: config.guard,
        retention: config.retention,
        max_claim_len: config.max_window,
        fuel: config.fuel,
    };
    let output = fleet_flows.attribute(ownership.clone(), params).concat(external);
    Built { output, ownership }
}

/// Estimated bytes and update count of an ownership trace, and its number of distinct IPs
/// (summed over its batches, so an IP present in several batches counts more than once).
pub fn trace_size(trace: &mut OwnershipTrace) -> TraceSize {
    use differential_dataflow::trace::TraceReader;
    let mut size = TraceSize::default();
    trace.map_spans(|span| {
        if let Some(batch) = &span.inner {
            size.updates += batch.updates as u64;
            size.keys += batch.storage.keys.len() as u64;
            size.vals += batch.storage.vals.vals.len() as u64;
        }
    });
    size.bytes = size.keys * (std::mem::size_of::<Ip>() + 8) as u64
        + size.vals * (std::mem::size_of::<Claim>() + 8) as u64
        + size.updates * (std::mem::size_of::<Time>() + std::mem::size_of::<Diff>()) as u64;
    size
}

/// The size of an ownership trace.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TraceSize {
    /// Keys (IPs), summed over batches.
    pub keys: u64,
    /// Values (claims), summed over batches.
    pub vals: u64,
    /// (time, diff) updates.
    pub updates: u64,
    /// Estimated bytes of keys, values, times and diffs plus offsets (excluding the shared
    /// workload-name strings).
    pub bytes: u64,
}
