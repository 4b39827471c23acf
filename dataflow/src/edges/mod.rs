//! Dependency edges and change events in the job.
//!
//! ```text
//! verdicts ─ EdgeUpdates (per record) ─ exchange by edge ─ EdgeBuckets (sum per bucket) ─┬─ edges
//!     │                                                                                  └─ ChangeEvents ─┐
//!     └─ Disagreements ──────────────────────────────────────────────────────────────────────────────────┴─ events
//! ```
//!
//! [`flowmap_operators::edges`] turns every record into edge updates (a connection once, byte
//! deltas, verification); [`EdgeBuckets`](buckets) sums them per (bucket, client, server, port)
//! and emits a bucket's edges once the event-time frontier has passed its end plus the guard band
//! (records of a connection started in the bucket are looked up by then), and a *delta* for a
//! bucket already emitted if late records add to it. The emitted rows (`flowmap.v1.Edge`) are the
//! shared form every consumer reads: the edges topic, the lake, the map, the change events.
//!
//! Why not a differential arrangement of edges: edges are never retracted, so an arrangement
//! keyed by bucket would grow by every bucket forever (or need a retraction per update after a
//! retention, doubling the work); the bucket aggregator holds only the buckets still open, which
//! the guard band bounds, and what it emits is complete and deterministic per dataflow time.
//!
//! [`events`]: `new_dependency` when an edge (client, server, port) not seen within the lookback
//! appears, `policy_violation` when the policy file allows no such edge, and `disagreement` for
//! every connection whose two ends disagree (the lookup's two-sided verification).

mod buckets;
mod events;
pub mod policy;

use flowmap_operators::edges::{EdgeParams, EdgeUpdates};
use flowmap_operators::records::VerdictPiece;
use flowmap_operators::Time;
use flowmap_schema as wire;
use timely::dataflow::operators::Concat;
use timely::dataflow::Stream;

pub use buckets::{edge_row, EdgeBuckets};
pub use events::{disagreement_events, ChangeEvents};
pub use policy::Policy;

use crate::config::JobConfig;

/// The edge and event streams of a dataflow.
pub struct Edges<'scope> {
    /// Emitted edges (deltas), per worker.
    pub edges: Stream<'scope, Time, Vec<wire::Edge>>,
    /// Change events.
    pub events: Stream<'scope, Time, Vec<wire::Event>>,
}

/// Builds the edges and events of `verdicts`.
pub fn edges<'scope>(
    verdicts: &Stream<'scope, Time, Vec<VerdictPiece>>,
    config: &JobConfig,
    policy: Option<Policy>,
) -> Edges<'scope> {
    let e = config.edges();
    let params = EdgeParams {
        bucket: e.bucket(),
        v4_prefix: e.v4_prefix(),
        v6_prefix: e.v6_prefix(),
        retention: config.retention(),
    };
    // A bucket is complete once every record of a connection started in it has been looked up:
    // at the latest at its start plus the guard band, rounded up to the tick.
    let allowance = config.guard().saturating_add(config.tick());
    let edges = verdicts.clone().edge_updates(params).edge_buckets(e.bucket(), allowance);
    let changes = edges.clone().change_events(e.lookback(), policy);
    let events = changes.concat(disagreement_events(verdicts));
    Edges { edges, events }
}

/// The top `n` edges by bytes (both ways), summed over deltas and buckets, for reports:
/// (client, server, port, connections, bytes).
pub fn top_edges(edges: &[wire::Edge], n: usize) -> Vec<(String, String, u32, u64, u64)> {
    let mut sum: std::collections::BTreeMap<(String, String, u32), (u64, u64)> = Default::default();
    for e in edges {
        let entry = sum.entry((e.client.clone(), e.server.clone(), e.server_port)).or_default();
        entry.0 += e.connections;
        entry.1 += e.bytes_client_to_server + e.bytes_server_to_client;
    }
    let mut all: Vec<_> = sum.into_iter().map(|((c, s, p), (n, b))| (c, s, p, n, b)).collect();
    all.sort_by(|a, b| b.4.cmp(&a.4).then_with(|| a.cmp(b)));
    all.truncate(n);
    all
}
