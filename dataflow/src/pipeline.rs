//! The attribution dataflow, from decoded batches to attributed flows.
//!
//! ```text
//! source ─┬─ evidence ─┬─ claims (heartbeats, flows' local ends) ─┐
//!         │            └─ assignment events ─ AssignmentClaims ───┴─ Expire ─ arrange_by_key (by IP)
//!         │                                                                        │
//!         ├─ fleet flows, each at its lookup time ─────────────────────────── Attribute ─┐
//!         └─ external flows, decided ──────────────────────────────────────────────────┴─ output
//! ```
//! A fleet flow's lookup time is `max(batch time, start + guard)` rounded up to the tick: by
//! then every exporter has promised everything about the guard band around its start.

use differential_dataflow::operators::arrange::Arranged;
use differential_dataflow::AsCollection;
use flowmap_operators::{
    AssignmentClaims, AssignmentEvent, Attribute, AttributeParams, AttributedFlow, Claim, Diff, Expire, Ip,
    OwnershipTrace, Time,
};
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::Concat;
use timely::dataflow::Stream;

use crate::config::JobConfig;
use crate::source::Sourced;

/// The pieces of a built dataflow that a runner needs.
pub struct Built<'scope> {
    /// Every flow, attributed or not, exactly once per accepted flow record.
    pub output: Stream<'scope, Time, Vec<AttributedFlow>>,
    /// The ownership arrangement (shared; readable for state statistics).
    pub ownership: Arranged<'scope, OwnershipTrace>,
}

/// Builds the attribution dataflow over the source's streams.
pub fn attribution<'scope>(sourced: Sourced<'scope>, config: &JobConfig) -> Built<'scope> {
    let claims = sourced
        .evidence
        .clone()
        .unary(Pipeline, "Claims", |_, _| {
            move |input, output| {
                input.for_each(|cap, data| {
                    let Some(&time) = cap.least() else { return };
                    let mut session = output.session(&cap);
                    for evidence in data.iter() {
                        for (ip, claim) in &evidence.claims {
                            session.give(((*ip, claim.clone()), time, 1 as Diff));
                        }
                    }
                });
            }
        })
        .as_collection();

    let assignments: Stream<'scope, Time, Vec<AssignmentEvent>> =
        sourced.evidence.unary(Pipeline, "Assignments", |_, _| {
            move |input, output| {
                input.for_each(|cap, data| {
                    let mut session = output.session(&cap);
                    for evidence in data.iter() {
                        session.give_iterator(evidence.assignments.iter().cloned());
                    }
                });
            }
        });

    let ownership = claims
        .concat(assignments.assignment_claims())
        .expire(config.retention, config.tick)
        .arrange_by_key_named("Ownership");

    let params = AttributeParams {
        guard: config.guard,
        retention: config.retention,
        // Heartbeat runs are the longest claims: up to `coalesce_windows` windows.
        max_claim_len: config.max_window.saturating_mul(u64::from(config.coalesce_windows)),
        fuel: config.fuel,
    };
    let output = sourced.flows.attribute(ownership.clone(), params).concat(sourced.external);
    Built { output, ownership }
}

/// Estimated bytes and update count of an ownership trace, and its number of distinct IPs
/// (summed over its batches, so an IP present in several batches counts more than once).
pub fn trace_size(trace: &mut OwnershipTrace) -> TraceSize {
    use differential_dataflow::trace::TraceReader;
    let mut size = TraceSize::default();
    trace.map_spans(|span| {
        if let Some(batch) = &span.inner {
            size.batches += 1;
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
    /// Batches in the trace holding updates.
    pub batches: u64,
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

impl TraceSize {
    /// Adds another trace's size (another worker's).
    pub fn add(&mut self, other: &TraceSize) {
        self.batches += other.batches;
        self.keys += other.keys;
        self.vals += other.vals;
        self.updates += other.updates;
        self.bytes += other.bytes;
    }
}
