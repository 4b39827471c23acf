//! The attribution dataflow, from the source's pieces to verdicts.
//!
//! ```text
//! source ─┬─ evidence (per worker, at batch time) ──────────────┐
//!         ├─ fleet flows (per worker, each at its lookup time) ─┴─ Attribute (ownership index) ─┐
//!         └─ flows decided at the source (external) ───────────────────────────────────────────┴─ output
//! ```
//! A fleet flow's lookup time is `max(batch time, start + guard)` rounded up to the tick: by
//! then every exporter has promised everything about the guard band around its start. Cloud
//! flow log rows, when there are any, enter the same `Attribute` as interval queries (see
//! [`crate::vpc`]).

use flowmap_operators::records::{IntervalAnswers, IntervalPiece, VerdictPiece};
use flowmap_operators::{Attribute, AttributeParams, IndexParams, StateProbe, Time};
use timely::dataflow::operators::Concat;
use timely::dataflow::Stream;

use crate::config::JobConfig;
use crate::source::Sourced;

/// The pieces of a built dataflow that a runner needs.
pub struct Built<'scope> {
    /// Every flow record, attributed or not, exactly once per accepted record.
    pub output: Stream<'scope, Time, Vec<VerdictPiece>>,
    /// This worker's ownership index size, sampled.
    pub state: StateProbe,
    /// The answers to the interval queries, when there were any.
    pub answers: Option<Stream<'scope, Time, Vec<IntervalAnswers>>>,
}

/// The index settings a job configuration implies.
pub fn index_params(config: &JobConfig) -> IndexParams {
    IndexParams {
        guard: config.guard(),
        retention: config.retention(),
        // The other end's record of a connection enters with the batch of the window it
        // started in (as a slice, or closed), at most a window plus the guard after its
        // start; keep connection records that long after they end, and a tick more.
        peer_horizon: config.max_window().saturating_add(config.guard()).saturating_add(config.tick()),
    }
}

/// Builds the attribution dataflow over the source's streams, and over `intervals` (cloud flow
/// log rows' ends) when given. With `names` false, verdicts do not carry workload names (for
/// consumers that only count).
pub fn attribution<'scope>(
    sourced: Sourced<'scope>,
    intervals: Option<Stream<'scope, Time, Vec<IntervalPiece>>>,
    config: &JobConfig,
    names: bool,
) -> Built<'scope> {
    let params = AttributeParams { index: index_params(config), fuel: config.fuel(), names };
    let state = StateProbe::default();
    let (output, answers) = match intervals {
        None => (sourced.flows.attribute(sourced.evidence, params, state.clone()), None),
        Some(intervals) => {
            let (v, a) = sourced.flows.attribute_with_intervals(sourced.evidence, intervals, params, state.clone());
            (v, Some(a))
        }
    };
    Built { output: output.concat(sourced.decided), state, answers }
}
