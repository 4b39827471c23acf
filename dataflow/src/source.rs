//! The batch source: reads a [`Feed`], decodes and admits batches, and advances its capability
//! with the exporters' event-time promises.
//!
//! Time contract: a batch is emitted at its window start (rounded down to the tick), the
//! earliest time any of its evidence describes. The source's capability is the tick-rounded
//! minimum of its exporters' promises ([`Tracker::frontier`]), so it never emits behind its own
//! capability except for late batches and unknown exporters' first batches, which are emitted
//! at the capability (counted as late). When the feed is exhausted the capability is dropped,
//! which lets every downstream operator drain.
//!
//! Work per activation is bounded (`MAX_PER_ACTIVATION` deliveries); the source re-activates
//! itself while the feed has more, and polls again after a short pause while it has none.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use flowmap_operators::{Time, Workload};
use timely::dataflow::operators::generic::operator::source;
use timely::dataflow::{Scope, Stream};

use crate::config::JobConfig;
use crate::decode::{decode_batch, DecodedBatch, IngestStats};
use crate::tracker::{Admission, Tracker};

/// Whether a feed has more to give.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FeedStatus {
    /// More deliveries are ready now.
    Ready,
    /// Nothing right now; poll again later.
    Pending,
    /// Exhausted: nothing will ever come again.
    Done,
}

/// A source of raw batches for one worker.
pub trait Feed: 'static {
    /// The exporters this worker reads (each holds the frontier back until its first batch).
    fn roster(&self) -> Vec<String>;

    /// Hands up to `max` deliveries to `deliver(key, payload, arrival_time)`.
    fn poll(&mut self, max: usize, deliver: &mut dyn FnMut(&str, &[u8], Time)) -> FeedStatus;
}

const MAX_PER_ACTIVATION: usize = 1024;

/// Builds the source operator. `stats` receives the ingest counters of this worker.
pub fn batch_source<'scope, F: Feed>(
    scope: Scope<'scope, Time>,
    mut feed: F,
    config: JobConfig,
    stats: Rc<RefCell<IngestStats>>,
) -> Stream<'scope, Time, Vec<Arc<DecodedBatch>>> {
    source(scope, "BatchSource", move |capability, info| {
        let activator = scope.activator_for(info.address);
        let roster = feed.roster();
        let mut tracker = Tracker::new(roster.iter().map(|id| Workload::new(id)));
        let mut capability = (!roster.is_empty()).then_some(capability);
        let mut interned: HashMap<String, Workload> = HashMap::new();
        let tick = config.tick;

        move |output| {
            let Some(cap) = capability.as_mut() else {
                // No exporters for this worker: drain the feed so nothing is silently ignored.
                let mut stats = stats.borrow_mut();
                let status = feed.poll(MAX_PER_ACTIVATION, &mut |key, _, _| {
                    stats.rejected_window += 1;
                    tracing::warn!(exporter = key, "batch from an exporter outside the roster of an idle source");
                });
                if status != FeedStatus::Done {
                    activator.activate();
                }
                return;
            };
            let mut stats = stats.borrow_mut();
            let mut session = output.session(&*cap);
            let cap_time = *cap.time();
            let mut late: Vec<Arc<DecodedBatch>> = Vec::new();
            let mut by_time: Vec<(Time, Arc<DecodedBatch>)> = Vec::new();
            let status = feed.poll(MAX_PER_ACTIVATION, &mut |_key, payload, arrival| {
                let Some(batch) = decode_batch(payload, arrival, &config, &mut interned, &mut stats) else {
                    return;
                };
                match tracker.admit(&batch.exporter, batch.seq, batch.to, &mut stats) {
                    Admission::Duplicate => {}
                    Admission::Late => late.push(Arc::new(batch)),
                    Admission::InOrder => {
                        let at = batch.from - batch.from % tick;
                        if at <= cap_time {
                            if at < cap_time {
                                // An exporter outside the roster, or windows that overlap.
                                stats.late_batches += 1;
                            }
                            late.push(Arc::new(batch));
                        } else {
                            by_time.push((at, Arc::new(batch)));
                        }
                    }
                }
            });
            session.give_container(&mut late);
            drop(session);
            by_time.sort_by_key(|(t, _)| *t);
            for chunk in by_time.chunk_by(|a, b| a.0 == b.0) {
                let delayed = cap.delayed(&chunk[0].0);
                let mut session = output.session(&delayed);
                for (_, batch) in chunk {
                    session.give(Arc::clone(batch));
                }
            }
            match status {
                FeedStatus::Done => capability = None,
                FeedStatus::Ready => activator.activate(),
                FeedStatus::Pending => activator.activate_after(Duration::from_millis(20)),
            }
            if let (Some(cap), Some(frontier)) = (capability.as_mut(), tracker.frontier()) {
                let at = frontier - frontier % tick;
                if at > *cap.time() {
                    cap.downgrade(&at);
                }
            }
        }
    })
}
