//! The batch source: reads a [`Feed`], decodes and admits batches, and advances its
//! capabilities with the exporters' event-time promises.
//!
//! It has three outputs, so that no record is copied on its way out:
//! - fleet flows, each at its *lookup time* `max(batch time, start + guard)` rounded up to the
//!   tick (by then every exporter has promised everything about the guard band around the
//!   flow's start);
//! - flows to addresses outside the fleet, already decided (`external`), at the batch time;
//! - the batch's ownership evidence (claims and assignment events), at the batch time, except
//!   heartbeats, which are merged into runs over consecutive windows ([`crate::coalesce`]) and
//!   emitted at the batch time of a run's first window.
//!
//! Time contract: the batch time is the window start rounded down to the tick, the earliest
//! instant its evidence describes. The source's capabilities sit at the tick-rounded minimum of
//! its exporters' promises ([`Tracker::frontier`]) and of the first-window times of the
//! heartbeat runs it holds, so nothing is emitted behind them except
//! late batches and unknown exporters' first batches, which are emitted at the capability
//! (counted as late). When the feed is exhausted the capabilities are dropped, which lets every
//! downstream operator drain.
//!
//! Work per activation is bounded (`MAX_PER_ACTIVATION` deliveries); the source re-activates
//! itself while the feed has more, and polls again after a short pause while it has none.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use flowmap_operators::{round_up, AttributedFlow, Attribution, FlowRecord, Reason, Time, Workload};
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::Capability;
use timely::dataflow::{Scope, Stream};

use crate::coalesce::Coalescer;
use crate::config::JobConfig;
use crate::decode::{decode_batch, Evidence, IngestStats, Interner};
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

/// The source's three output streams.
pub struct Sourced<'scope> {
    /// Fleet flows, each at its lookup time.
    pub flows: Stream<'scope, Time, Vec<FlowRecord>>,
    /// Flows to external addresses, decided.
    pub external: Stream<'scope, Time, Vec<AttributedFlow>>,
    /// Ownership evidence per batch.
    pub evidence: Stream<'scope, Time, Vec<Arc<Evidence>>>,
}

const MAX_PER_ACTIVATION: usize = 1024;

/// Builds the source operator. `stats` receives the ingest counters of this worker.
pub fn batch_source<'scope, F: Feed>(
    scope: Scope<'scope, Time>,
    mut feed: F,
    config: JobConfig,
    stats: Rc<RefCell<IngestStats>>,
) -> Sourced<'scope> {
    let mut builder = OperatorBuilder::new("BatchSource".to_owned(), scope);
    let info = builder.operator_info();
    let (mut flows_out, flows) = builder.new_output::<Vec<FlowRecord>>();
    let (mut external_out, external) = builder.new_output::<Vec<AttributedFlow>>();
    let (mut evidence_out, evidence) = builder.new_output::<Vec<Arc<Evidence>>>();

    builder.build(move |capabilities| {
        let activator = scope.activator_for(info.address);
        let roster = feed.roster();
        let mut tracker = Tracker::new(roster.iter().map(|id| Workload::new(id)));
        // One capability per output, all at the same time; `None` once done.
        let mut caps: Option<Vec<Capability<Time>>> = (!roster.is_empty()).then_some(capabilities);
        let mut interned = Interner::default();
        let mut coalescer = Coalescer::new(config.coalesce_windows);
        let (tick, guard) = (config.tick, config.guard);

        move |_frontiers| {
            let mut stats = stats.borrow_mut();
            let Some(cap) = caps.as_mut() else {
                // No exporters for this worker: drain the feed so nothing is silently ignored.
                let status = feed.poll(MAX_PER_ACTIVATION, &mut |key, _, _| {
                    stats.rejected_unrostered += 1;
                    if stats.rejected_unrostered.is_power_of_two() {
                        let total = stats.rejected_unrostered;
                        tracing::warn!(exporter = key, total, "rejected batch: exporter outside the roster");
                    }
                });
                if status != FeedStatus::Done {
                    activator.activate();
                }
                return;
            };
            let now = *cap[0].time();
            let mut fleet = Groups::default();
            let mut external: BTreeMap<Time, Vec<AttributedFlow>> = BTreeMap::new();
            let mut evidence: BTreeMap<Time, Evidence> = BTreeMap::new();
            let emit = |evidence: &mut BTreeMap<Time, Evidence>, at: Time, ip, claim| {
                evidence.entry(at).or_default().claims.push((ip, claim));
            };
            let status = feed.poll(MAX_PER_ACTIVATION, &mut |key, payload, arrival| {
                let Some(batch) = decode_batch(key, payload, arrival, &config, &mut interned, &mut stats) else {
                    return;
                };
                let admission = tracker.admit(&batch.exporter, batch.seq, batch.to, &mut stats);
                let at = match admission {
                    Admission::Duplicate => return,
                    Admission::Late => now,
                    Admission::InOrder => {
                        let at = batch.from - batch.from % tick;
                        if at < now {
                            // An exporter outside the roster, or windows that overlap.
                            stats.late_batches += 1;
                        }
                        at.max(now)
                    }
                };
                stats.batches += 1;
                stats.flows += batch.flows.len() as u64;
                log_records(&mut stats.rejected_address, batch.rejected_address, "address or port", &batch.exporter);
                log_records(&mut stats.rejected_time, batch.rejected_time, "time range", &batch.exporter);
                for flow in batch.flows {
                    if config.in_fleet(flow.remote_ip) {
                        let lookup = at.max(round_up(flow.start.saturating_add(guard), tick));
                        fleet.push(lookup, flow);
                    } else {
                        let remote = Attribution::Unattributed(Reason::External);
                        external.entry(at).or_default().push(AttributedFlow { flow, remote });
                    }
                }
                let Evidence { claims, assignments } = batch.evidence;
                evidence.entry(at).or_default().assignments.extend(assignments);
                if admission == Admission::InOrder {
                    let sink = &mut |t, ip, claim| emit(&mut evidence, t, ip, claim);
                    coalescer.batch(&batch.exporter, batch.seq, at, claims, sink);
                } else {
                    evidence.entry(at).or_default().claims.extend(claims);
                }
            });
            if status == FeedStatus::Done {
                // Held heartbeat runs go out before the capabilities are dropped.
                coalescer.flush(&mut |t, ip, claim| emit(&mut evidence, t, ip, claim));
            }

            let mut out = flows_out.activate();
            for (at, mut data) in fleet.into_sorted() {
                out.give(&cap[0].delayed(&at), &mut data);
            }
            drop(out);
            let mut out = external_out.activate();
            for (at, mut data) in external {
                out.give(&cap[1].delayed(&at), &mut data);
            }
            drop(out);
            let mut out = evidence_out.activate();
            for (at, data) in evidence {
                out.give(&cap[2].delayed(&at), &mut vec![Arc::new(data)]);
            }
            drop(out);

            match status {
                FeedStatus::Done => caps = None,
                FeedStatus::Ready => activator.activate(),
                FeedStatus::Pending => activator.activate_after(Duration::from_millis(20)),
            }
            // The frontier: the exporters' least promise, held back to the earliest heartbeat
            // run still held (see `coalesce`).
            let held = coalescer.earliest().unwrap_or(Time::MAX);
            if let (Some(caps), Some(frontier)) = (caps.as_mut(), tracker.frontier().map(|f| f.min(held))) {
                let at = frontier - frontier % tick;
                if at > now {
                    for cap in caps.iter_mut() {
                        cap.downgrade(&at);
                    }
                }
            }
        }
    });
    Sourced { flows, external, evidence }
}

/// Adds `n` rejected records to `total`, logging when the total crosses a power of two.
fn log_records(total: &mut u64, n: u64, what: &str, exporter: &Workload) {
    if n == 0 {
        return;
    }
    let before = *total;
    *total += n;
    if before.checked_ilog2() != total.checked_ilog2() {
        tracing::warn!(exporter = exporter.as_str(), dropped = n, total = *total, "dropped records with a bad {what}");
    }
}

/// Flows grouped by lookup time. Consecutive flows mostly share a time, so the last group
/// used is checked first; a map lookup per flow costs more than the grouping saves.
#[derive(Default)]
struct Groups {
    groups: Vec<(Time, Vec<FlowRecord>)>,
    index: foldhash::HashMap<Time, usize>,
    last: usize,
}

impl Groups {
    fn push(&mut self, at: Time, flow: FlowRecord) {
        if self.groups.get(self.last).is_some_and(|(t, _)| *t == at) {
            self.groups[self.last].1.push(flow);
            return;
        }
        let next = self.groups.len();
        let i = *self.index.entry(at).or_insert(next);
        if i == next {
            self.groups.push((at, Vec::new()));
        }
        self.groups[i].1.push(flow);
        self.last = i;
    }

    fn into_sorted(mut self) -> Vec<(Time, Vec<FlowRecord>)> {
        self.groups.sort_unstable_by_key(|(t, _)| *t);
        self.groups
    }
}
