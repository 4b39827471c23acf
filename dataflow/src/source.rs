//! The batch source operator: polls a [`Feed`], admits each message ([`Admission`]), emits what
//! it derived, and advances its capabilities with the exporters' event-time promises.
//!
//! Three outputs, so that nothing is copied on its way out: flow pieces (each at its lookup
//! time, for the worker owning its remote address), flows decided here (`external`, at the batch
//! time), and evidence pieces (at the batch time, for the worker owning each address).
//!
//! Time contract: the capabilities sit at the tick-rounded least promise over this worker's
//! lanes (see [`crate::admission`] for how each batch's time is chosen; nothing is emitted
//! before the capabilities). While the feed is settling (a lane has not shown its first message
//! yet) they do not move. On a live feed, exporters silent for the idle timeout stop holding
//! their lane back, and a worker with no live exporter at all follows the wall clock minus the
//! idle timeout. When the feed is exhausted the capabilities are dropped, which lets every
//! downstream operator drain.
//!
//! Work per activation is bounded (`MAX_PER_ACTIVATION` messages); the source re-activates
//! itself while the feed has more, and polls again after a short pause while it has none.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use flowmap_operators::records::{EvidencePiece, FlowPiece, VerdictPiece};
use flowmap_operators::Time;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::Capability;
use timely::dataflow::{Scope, Stream};

use crate::admission::{Admission, IngestStats, Routed};
use crate::config::JobConfig;
use crate::feed::{Feed, FeedStatus, Outcome};

/// A feed shared between the source operator and the runner (which reports delivery).
pub type SharedFeed = Rc<RefCell<dyn Feed>>;

/// The source's three output streams.
pub struct Sourced<'scope> {
    /// Fleet flows, each at its lookup time, per target worker.
    pub flows: Stream<'scope, Time, Vec<FlowPiece>>,
    /// Flows decided at the source (`external`).
    pub decided: Stream<'scope, Time, Vec<VerdictPiece>>,
    /// Ownership evidence, per target worker.
    pub evidence: Stream<'scope, Time, Vec<EvidencePiece>>,
}

const MAX_PER_ACTIVATION: usize = 1024;

/// The wall clock in event-time units (ns since the epoch).
fn wall_clock() -> Time {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as Time).unwrap_or(0)
}

/// Builds the source operator. `stats` receives the ingest counters of this worker.
pub fn batch_source<'scope>(
    scope: Scope<'scope, Time>,
    feed: SharedFeed,
    config: JobConfig,
    stats: Rc<RefCell<IngestStats>>,
) -> Sourced<'scope> {
    let mut builder = OperatorBuilder::new("BatchSource".to_owned(), scope);
    let info = builder.operator_info();
    let (mut flows_out, flows) = builder.new_output::<Vec<FlowPiece>>();
    let (mut decided_out, decided) = builder.new_output::<Vec<VerdictPiece>>();
    let (mut evidence_out, evidence) = builder.new_output::<Vec<EvidencePiece>>();
    let peers = scope.peers();

    builder.build(move |capabilities| {
        let activator = scope.activator_for(info.address);
        let lanes = feed.borrow().lanes();
        let live = feed.borrow().live();
        let mut admission = Admission::new(config.clone(), &lanes, peers);
        // One capability per output, all at the same time; `None` once done.
        let mut caps: Option<Vec<Capability<Time>>> = (!lanes.is_empty()).then_some(capabilities);
        let tick = config.tick();
        let idle_ns = config.idle_timeout().as_nanos() as Time;
        let mut last_sweep = Instant::now();
        let mut routed = Routed::default();

        move |_frontiers| {
            let mut feed = feed.borrow_mut();
            let Some(cap) = caps.as_mut() else {
                // No lanes for this worker: drain the feed so nothing is silently ignored.
                let mut stats = stats.borrow_mut();
                let status = feed.poll(MAX_PER_ACTIVATION, &mut |m| {
                    stats.rejected_unrostered += 1;
                    if stats.rejected_unrostered.is_power_of_two() {
                        let total = stats.rejected_unrostered;
                        tracing::warn!(exporter = m.key, total, "rejected batch: no lane for it");
                    }
                    Outcome::Rejected { reason: "no_lane" }
                });
                if status != FeedStatus::Done {
                    activator.activate();
                }
                return;
            };
            let now = *cap[0].time();
            let status = feed.poll(MAX_PER_ACTIVATION, &mut |m| admission.admit(m, now, &mut routed));

            if !routed.is_empty() {
                let mut out = flows_out.activate();
                for (at, mut data) in routed.take_flows() {
                    out.give(&cap[0].delayed(&at), &mut data);
                }
                drop(out);
                let mut out = decided_out.activate();
                for (at, mut data) in routed.take_external() {
                    out.give(&cap[1].delayed(&at), &mut data);
                }
                drop(out);
                let mut out = evidence_out.activate();
                for (at, mut data) in routed.take_evidence() {
                    out.give(&cap[2].delayed(&at), &mut data);
                }
            }

            match status {
                FeedStatus::Done => caps = None,
                FeedStatus::Ready => activator.activate(),
                FeedStatus::Pending => activator.activate_after(Duration::from_millis(20)),
            }
            if live && last_sweep.elapsed() >= Duration::from_millis(200) {
                last_sweep = Instant::now();
                admission.sweep(last_sweep, config.idle_timeout());
            }
            *stats.borrow_mut() = admission.stats.clone();
            if feed.settling() {
                return;
            }
            // The frontier: the least lane frontier. A live worker with no live exporter
            // follows the wall clock, minus the idle timeout.
            let front = match admission.frontier() {
                None if live => Some(wall_clock().saturating_sub(idle_ns)),
                front => front,
            };
            if let (Some(caps), Some(frontier)) = (caps.as_mut(), front) {
                let at = frontier - frontier % tick;
                if at > now {
                    for cap in caps.iter_mut() {
                        cap.downgrade(&at);
                    }
                }
            }
        }
    });
    Sourced { flows, decided, evidence }
}
