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
//! instant its evidence describes. Input arrives in *lanes* (transport partitions): one
//! exporter's batches stay in one lane, in order. Each lane tracks its own exporters
//! ([`Tracker`]); a lane's frontier is the least promise of its exporters, and the source's
//! capabilities sit at the tick-rounded minimum over its lanes and over the first-window times
//! of the heartbeat runs it holds. A batch whose time is behind its own lane's frontier (a
//! late batch, or the first batch of an exporter new to the lane) is emitted at that lane
//! frontier and counted as late. Because that decision depends only on the order of messages
//! within the lane, never on how lanes interleave or on when the capabilities moved, any
//! reading of the same lanes (1 or N workers, 1 or N processes, live or replayed) makes the same
//! decisions. While the feed is settling (a lane has not shown its first message yet) the
//! capabilities do not move. On a live feed, exporters silent for the idle timeout stop holding
//! their lane back, and a worker with no live exporter at all follows the wall clock minus the
//! idle timeout. When the feed is exhausted the capabilities are dropped, which lets every
//! downstream operator drain.
//!
//! Work per activation is bounded (`MAX_PER_ACTIVATION` messages); the source re-activates
//! itself while the feed has more, and polls again after a short pause while it has none.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

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
    /// More messages are ready now.
    Ready,
    /// Nothing right now; poll again later.
    Pending,
    /// Exhausted: nothing will ever come again.
    Done,
}

/// One lane (transport partition) a worker reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lane {
    /// Its id, unique within the job.
    pub id: u32,
    /// Exporters known up front to publish into it: each holds the lane's frontier back until
    /// its first batch.
    pub roster: Vec<String>,
}

/// One message handed to the source.
#[derive(Clone, Copy, Debug)]
pub struct Message<'a> {
    /// The lane it came from.
    pub lane: u32,
    /// Transport key (the exporter id, by convention).
    pub key: &'a str,
    /// The encoded batch.
    pub payload: &'a [u8],
    /// When the transport received it (the receiver clock for the "from the future" check).
    pub arrival: Time,
    /// Re-read after a restart only to rebuild ownership state: its flows were output before.
    pub rebuild: bool,
}

/// What the source made of a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Used: everything derived from it is at times up to `until`.
    Used {
        /// Latest time of anything derived from it.
        until: Time,
    },
    /// Used, but some of its records were refused (counted): dead-letter it with `reason`.
    Partial {
        /// Latest time of anything derived from it.
        until: Time,
        /// Which records were refused, and why.
        reason: String,
    },
    /// Seen before: nothing derived.
    Duplicate,
    /// Refused as a whole (counted): dead-letter it with `reason`.
    Rejected {
        /// Why.
        reason: &'static str,
    },
}

/// A source of raw batches for one worker.
pub trait Feed: 'static {
    /// The lanes this worker reads.
    fn lanes(&self) -> Vec<Lane>;

    /// Hands up to `max` messages to `deliver`, which says what became of each.
    fn poll(&mut self, max: usize, deliver: &mut dyn FnMut(&Message<'_>) -> Outcome) -> FeedStatus;

    /// True while some lane has not shown what it holds yet; the frontier may not move.
    fn settling(&self) -> bool {
        false
    }

    /// Whether wall-clock decisions (idle exporters) apply. Replays and in-memory feeds say
    /// no, which keeps them deterministic.
    fn live(&self) -> bool {
        false
    }

    /// Everything derived from input, at times before `frontier`, has been delivered to the
    /// output (so input offsets up to there can be committed). Called by the runner.
    fn delivered(&mut self, _frontier: &[Time]) -> Result<(), String> {
        Ok(())
    }

    /// The run is over and every output is delivered. Called once by the runner.
    fn finish(&mut self) -> Result<(), String> {
        Ok(())
    }
}

/// A feed that may have failed to start (a broker away, a damaged capture): a failed one has
/// no lanes, ends at once, and hands its error to the runner, which stops the job with it.
pub enum Startup<F> {
    /// A working feed.
    Ready(F),
    /// Why it could not start (taken when reported).
    Failed(Option<String>),
}

impl<F> From<Result<F, String>> for Startup<F> {
    fn from(result: Result<F, String>) -> Self {
        match result {
            Ok(f) => Startup::Ready(f),
            Err(e) => Startup::Failed(Some(e)),
        }
    }
}

impl<F: Feed> Startup<F> {
    fn error(e: &mut Option<String>) -> String {
        e.take().unwrap_or_else(|| "the input failed to start".to_string())
    }
}

impl<F: Feed> Feed for Startup<F> {
    fn lanes(&self) -> Vec<Lane> {
        match self {
            Startup::Ready(f) => f.lanes(),
            Startup::Failed(_) => Vec::new(),
        }
    }
    fn poll(&mut self, max: usize, deliver: &mut dyn FnMut(&Message<'_>) -> Outcome) -> FeedStatus {
        match self {
            Startup::Ready(f) => f.poll(max, deliver),
            Startup::Failed(_) => FeedStatus::Done,
        }
    }
    fn settling(&self) -> bool {
        matches!(self, Startup::Ready(f) if f.settling())
    }
    fn live(&self) -> bool {
        matches!(self, Startup::Ready(f) if f.live())
    }
    fn delivered(&mut self, frontier: &[Time]) -> Result<(), String> {
        match self {
            Startup::Ready(f) => f.delivered(frontier),
            Startup::Failed(e) => Err(Self::error(e)),
        }
    }
    fn finish(&mut self) -> Result<(), String> {
        match self {
            Startup::Ready(f) => f.finish(),
            Startup::Failed(e) => Err(Self::error(e)),
        }
    }
}

/// A feed shared between the source operator and the runner (which reports delivery).
pub type SharedFeed = Rc<RefCell<dyn Feed>>;

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
    let (mut flows_out, flows) = builder.new_output::<Vec<FlowRecord>>();
    let (mut external_out, external) = builder.new_output::<Vec<AttributedFlow>>();
    let (mut evidence_out, evidence) = builder.new_output::<Vec<Arc<Evidence>>>();

    builder.build(move |capabilities| {
        let activator = scope.activator_for(info.address);
        let lanes = feed.borrow().lanes();
        let live = feed.borrow().live();
        let mut trackers: BTreeMap<u32, Tracker> =
            lanes.iter().map(|lane| (lane.id, Tracker::new(lane.roster.iter().map(|id| Workload::new(id))))).collect();
        // One capability per output, all at the same time; `None` once done.
        let mut caps: Option<Vec<Capability<Time>>> = (!lanes.is_empty()).then_some(capabilities);
        let mut interned = Interner::default();
        let mut coalescer = Coalescer::new(config.coalesce_windows);
        let (tick, guard) = (config.tick, config.guard);
        let idle_ns = config.idle_timeout.as_nanos() as Time;
        let mut last_sweep = Instant::now();

        move |_frontiers| {
            let mut stats = stats.borrow_mut();
            let mut feed = feed.borrow_mut();
            let Some(cap) = caps.as_mut() else {
                // No lanes for this worker: drain the feed so nothing is silently ignored.
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
            let mut fleet = Groups::default();
            let mut external: BTreeMap<Time, Vec<AttributedFlow>> = BTreeMap::new();
            let mut evidence: BTreeMap<Time, Evidence> = BTreeMap::new();
            let emit = |evidence: &mut BTreeMap<Time, Evidence>, at: Time, ip, claim| {
                evidence.entry(at).or_default().claims.push((ip, claim));
            };
            let status = feed.poll(MAX_PER_ACTIVATION, &mut |m| {
                let batch = match decode_batch(m.key, m.payload, m.arrival, &config, &mut interned, &mut stats) {
                    Ok(batch) => batch,
                    Err(rejected) => return Outcome::Rejected { reason: rejected.name() },
                };
                let tracker = trackers.entry(m.lane).or_default();
                let lane_front = tracker.frontier().map(|f| f - f % tick);
                let admission = tracker.admit(&batch.exporter, batch.seq, batch.to, &mut stats);
                let own = batch.from - batch.from % tick;
                let at = match admission {
                    Admission::Duplicate => return Outcome::Duplicate,
                    Admission::Late => lane_front.unwrap_or(own),
                    Admission::InOrder => match lane_front {
                        // An exporter new to the lane, or windows that overlap.
                        Some(front) if own < front => {
                            stats.late_batches += 1;
                            front
                        }
                        _ => own,
                    },
                };
                if at < now {
                    // Only in a lane without a live exporter: behind the other lanes.
                    if admission == Admission::InOrder && lane_front.is_none_or(|f| own >= f) {
                        stats.late_batches += 1;
                    }
                }
                let at = at.max(now);
                stats.batches += 1;
                let mut until = at;
                log_records(&mut stats.rejected_address, batch.rejected_address, "address or port", &batch.exporter);
                log_records(&mut stats.rejected_time, batch.rejected_time, "time range", &batch.exporter);
                if m.rebuild {
                    stats.rebuild_flows += batch.flows.len() as u64;
                } else {
                    stats.flows += batch.flows.len() as u64;
                    for flow in batch.flows {
                        if config.in_fleet(flow.remote_ip) {
                            let lookup = at.max(round_up(flow.start.saturating_add(guard), tick));
                            until = until.max(lookup);
                            fleet.push(lookup, flow);
                        } else {
                            let remote = Attribution::Unattributed(Reason::External);
                            external.entry(at).or_default().push(AttributedFlow { flow, remote });
                        }
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
                match (batch.rejected_address, batch.rejected_time) {
                    (0, 0) => Outcome::Used { until },
                    (address, time) => Outcome::Partial {
                        until,
                        reason: format!("{address} records with a bad address or port, {time} with a bad time range"),
                    },
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
            if live && last_sweep.elapsed() >= Duration::from_millis(200) {
                last_sweep = Instant::now();
                for tracker in trackers.values_mut() {
                    tracker.sweep(last_sweep, config.idle_timeout, &mut stats);
                }
            }
            if feed.settling() {
                return;
            }
            // The frontier: the least lane frontier, held back to the earliest heartbeat run
            // still held (see `coalesce`). A live worker with no live exporter follows the wall
            // clock, minus the idle timeout.
            let lanes_front = trackers.values().filter_map(Tracker::frontier).min();
            let lanes_front = match lanes_front {
                None if live => Some(wall_clock().saturating_sub(idle_ns)),
                front => front,
            };
            let held = coalescer.earliest().unwrap_or(Time::MAX);
            if let (Some(caps), Some(frontier)) = (caps.as_mut(), lanes_front.map(|f| f.min(held))) {
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
