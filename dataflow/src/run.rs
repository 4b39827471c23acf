//! Running the dataflow on timely workers: [`run`] builds one dataflow per worker over that
//! worker's [`Feed`], steps it to completion, and gathers the output and the statistics.
//!
//! With sinks ([`OutputMode::Sink`]: flows, and optionally edges and events) the runner also
//! closes the loop the Kafka job needs: it follows the delivered frontier (see
//! [`crate::sink`]) over every sink and reports it to the feed, which commits its input up to
//! there; at the end it waits for the sinks to drain before the feed's final commit. An error
//! in a feed or a sink stops every worker of the process.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flowmap_operators::records::{Verdict, VerdictPiece, Verification};
use flowmap_operators::{IndexSize, Reason, Time};
use flowmap_schema as wire;
use serde::Serialize;
use timely::dataflow::operators::{Inspect, Probe};
use timely::dataflow::{ProbeHandle, Stream};

use crate::admission::IngestStats;
use crate::config::JobConfig;
use crate::edges::Policy;
use crate::feed::{Feed, FeedError};
use crate::output::records;
use crate::pipeline::attribution;
use crate::profile::OperatorTimes;
use crate::sink::{deliver, EdgeSink, EventSink, FlowSink, Sink, SinkError};
use crate::source::{batch_source, SharedFeed};

/// Where one worker's output goes (what a [`OutputMode::Sink`] factory makes per worker).
#[derive(Default)]
pub struct Outputs {
    /// Flow records.
    pub flows: Option<Box<FlowSink>>,
    /// Edges (only when edges are computed).
    pub edges: Option<Box<EdgeSink>>,
    /// Change events (only when edges are computed).
    pub events: Option<Box<EventSink>>,
}

/// Makes worker `index` of `peers` its outputs.
pub type SinkFactory = Arc<dyn Fn(usize, usize) -> Result<Outputs, SinkError> + Send + Sync>;

/// What to do with the output.
#[derive(Clone)]
pub enum OutputMode {
    /// Keep it all and return it (demo, tests, replay to a file).
    Collect,
    /// Only count it (benchmarks).
    Count,
    /// Hand it to sinks that acknowledge delivery (Kafka, the lake); the feed is told the
    /// delivered frontier, so it can commit.
    Sink(SinkFactory),
    /// Both: keep it all and write it to the sinks (the demo writing a lake).
    CollectAnd(SinkFactory),
}

/// How to run.
#[derive(Clone)]
pub struct RunOptions {
    /// What to do with the output.
    pub mode: OutputMode,
    /// Compute dependency edges and change events.
    pub edges: bool,
    /// The dependency policy (policy violations), with edges.
    pub policy: Option<Policy>,
    /// How often the ownership state is sampled.
    pub sample_every: Duration,
    /// Collect the time per operator.
    pub profile: bool,
    /// Cloud flow log rows to attribute (both ends) beside the flows.
    pub vpc: Option<Arc<crate::vpc::VpcRows>>,
}

impl RunOptions {
    /// Options for `mode`, without edges, sampling every 100 ms, no profile.
    pub fn new(mode: OutputMode) -> Self {
        RunOptions {
            mode,
            edges: false,
            policy: None,
            sample_every: Duration::from_millis(100),
            profile: false,
            vpc: None,
        }
    }
}

#[derive(Default)]
struct Collected {
    flows: Vec<wire::AttributedFlow>,
    edges: Vec<wire::Edge>,
    events: Vec<wire::Event>,
    vpc: Vec<wire::VpcFlowRecord>,
    counts: Counts,
}

/// Counts of the output.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Flow records output.
    pub output: u64,
    /// Of those, with a remote workload.
    pub attributed: u64,
    /// Of those, without one, by reason (in the order of `Reason::ALL`; JSON: by name).
    #[serde(serialize_with = "by_reason")]
    pub unattributed: [u64; 7],
    /// Connections (each counted once, as in the edges) whose other end's record agrees with the
    /// claims.
    pub verified_agree: u64,
    /// Connections whose two ends disagree.
    pub verified_disagree: u64,
    /// Connections whose other end's record names a workload the claims do not.
    pub verified_peer_only: u64,
    /// Connections seen by one end only.
    pub one_sided: u64,
    /// Edge rows emitted.
    pub edges: u64,
    /// Events emitted.
    pub events: u64,
    /// Cloud flow log rows output, and their ends by verdict.
    #[serde(skip_serializing_if = "crate::vpc::VpcCounts::is_empty")]
    pub vpc: crate::vpc::VpcCounts,
}

impl Counts {
    fn add(&mut self, o: &Counts) {
        self.output += o.output;
        self.attributed += o.attributed;
        for (a, b) in self.unattributed.iter_mut().zip(o.unattributed) {
            *a += b;
        }
        self.verified_agree += o.verified_agree;
        self.verified_disagree += o.verified_disagree;
        self.verified_peer_only += o.verified_peer_only;
        self.one_sided += o.one_sided;
        self.edges += o.edges;
        self.events += o.events;
        self.vpc.add(&o.vpc);
    }
}

/// What stopped a worker.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Stop {
    /// The input failed.
    #[error(transparent)]
    Feed(#[from] FeedError),
    /// The output failed.
    #[error(transparent)]
    Sink(#[from] SinkError),
}

/// One worker's results.
#[derive(Debug, Default)]
pub struct WorkerReport {
    /// Output records (when collecting).
    pub flows: Vec<wire::AttributedFlow>,
    /// Edges (when collecting).
    pub edges: Vec<wire::Edge>,
    /// Events (when collecting).
    pub events: Vec<wire::Event>,
    /// Cloud flow log rows with both ends attributed (collected runs with VPC rows).
    pub vpc: Vec<wire::VpcFlowRecord>,
    /// Counts of the output.
    pub counts: Counts,
    /// Ingest counters.
    pub ingest: IngestStats,
    /// Largest ownership state this worker held, sampled during the run.
    pub peak_state: IndexSize,
    /// Ownership state sampled during the run.
    pub state_samples: Vec<IndexSize>,
    /// Time per operator (when profiling).
    pub operator_times: OperatorTimes,
    /// What stopped this worker, if it did not finish.
    pub error: Option<Stop>,
}

/// The merged results of all workers of this process.
#[derive(Debug, Default)]
pub struct RunReport {
    /// Output records (when collecting), in no particular order.
    pub flows: Vec<wire::AttributedFlow>,
    /// Edges (when collecting), in no particular order.
    pub edges: Vec<wire::Edge>,
    /// Events (when collecting), in no particular order.
    pub events: Vec<wire::Event>,
    /// Cloud flow log rows with both ends attributed, in no particular order.
    pub vpc: Vec<wire::VpcFlowRecord>,
    /// How many records were output.
    pub output: u64,
    /// How many of them have a remote workload.
    pub attributed: u64,
    /// Counts of the output, summed.
    pub counts: Counts,
    /// Ingest counters, summed.
    pub ingest: IngestStats,
    /// Sum over workers of each worker's peak ownership state.
    pub peak_state: IndexSize,
    /// Ownership state summed over workers, per sample (taken every `sample_every`).
    pub state_samples: Vec<IndexSize>,
    /// Wall time from start to all workers finished.
    pub elapsed: Duration,
    /// Workers in this process.
    pub workers: usize,
    /// Time per operator summed over workers (when profiling).
    pub operator_times: OperatorTimes,
}

/// A failure to run the dataflow.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Timely could not start (bad cluster configuration, address in use, ...).
    #[error("cannot start timely workers: {0}")]
    Start(String),
    /// A worker panicked.
    #[error("worker failed: {0}")]
    Worker(String),
    /// The feed or a sink failed (the job stopped; nothing past the failure was committed).
    #[error(transparent)]
    Stopped(#[from] Stop),
}

/// Adapts a boxed sink to the shared, unsized form.
struct Boxed<T>(Box<dyn Sink<T>>);

impl<T: 'static> Sink<T> for Boxed<T> {
    fn write(&mut self, time: Time, item: &T) -> Result<(), SinkError> {
        self.0.write(time, item)
    }
    fn advance(&mut self, frontier: Option<Time>) -> Result<(), SinkError> {
        self.0.advance(frontier)
    }
    fn undelivered(&mut self) -> Result<Option<Time>, SinkError> {
        self.0.undelivered()
    }
    fn finish(&mut self) -> Result<(), SinkError> {
        self.0.finish()
    }
}

/// The sinks of one worker, shared with its operators.
#[derive(Default)]
struct Shared {
    flows: Option<Rc<RefCell<Boxed<VerdictPiece>>>>,
    edges: Option<Rc<RefCell<Boxed<wire::Edge>>>>,
    events: Option<Rc<RefCell<Boxed<wire::Event>>>>,
}

impl Shared {
    fn finish(&self) -> Result<(), SinkError> {
        if let Some(s) = &self.flows {
            s.borrow_mut().finish()?;
        }
        if let Some(s) = &self.edges {
            s.borrow_mut().finish()?;
        }
        if let Some(s) = &self.events {
            s.borrow_mut().finish()?;
        }
        Ok(())
    }
}

/// Delivers `stream` to `sink` if there is one; either way, `probe` follows what is delivered.
fn to_sink<'scope, T: Clone + 'static>(
    stream: Stream<'scope, Time, Vec<T>>,
    sink: Option<Rc<RefCell<Boxed<T>>>>,
    error: &Rc<RefCell<Option<SinkError>>>,
    probe: &ProbeHandle<Time>,
) {
    match sink {
        Some(sink) => {
            let shared: Rc<RefCell<dyn Sink<T>>> = sink;
            deliver(stream, shared, Rc::clone(error)).probe_with(probe);
        }
        None => {
            stream.probe_with(probe);
        }
    }
}

/// Runs the attribution job until every feed is exhausted.
///
/// `make_feed(index, peers)` gives each worker its share of the input.
///
/// # Errors
/// Timely could not start, a worker panicked, or a feed or sink failed.
pub fn run<F, M>(
    timely: timely::Config,
    job: JobConfig,
    make_feed: M,
    options: RunOptions,
) -> Result<RunReport, RunError>
where
    F: Feed,
    M: Fn(usize, usize) -> F + Send + Sync + 'static,
{
    let started = Instant::now();
    let abort = Arc::new(AtomicBool::new(false));
    let first_error: Arc<Mutex<Option<Stop>>> = Arc::default();
    let failure = Arc::clone(&first_error);
    let guards = timely::execute(timely, move |worker| {
        let (index, peers) = (worker.index(), worker.peers());
        let stats = Rc::new(RefCell::new(IngestStats::default()));
        let collected: Rc<RefCell<Collected>> = Rc::default();
        let error: Rc<RefCell<Option<Stop>>> = Rc::default();
        let sink_error: Rc<RefCell<Option<SinkError>>> = Rc::default();
        let probe = ProbeHandle::new();
        let profiler = options.profile.then(|| crate::profile::install(worker));
        let feed = Rc::new(RefCell::new(make_feed(index, peers)));
        let shared: SharedFeed = feed.clone();
        let mut sinks = Shared::default();
        if let OutputMode::Sink(factory) | OutputMode::CollectAnd(factory) = &options.mode {
            match factory(index, peers) {
                Ok(outputs) => {
                    sinks.flows = outputs.flows.map(|s| Rc::new(RefCell::new(Boxed(s))));
                    sinks.edges = outputs.edges.map(|s| Rc::new(RefCell::new(Boxed(s))));
                    sinks.events = outputs.events.map(|s| Rc::new(RefCell::new(Boxed(s))));
                }
                Err(e) => *error.borrow_mut() = Some(e.into()),
            }
        }
        let collect = matches!(options.mode, OutputMode::Collect | OutputMode::CollectAnd(_));
        let names = !matches!(options.mode, OutputMode::Count) || options.edges;
        let state = worker.dataflow::<Time, _, _>(|scope| {
            let batches = batch_source(scope, shared, job.clone(), Rc::clone(&stats));
            let vpc = options.vpc.as_ref().map(|rows| crate::vpc::vpc_queries(scope, rows, job.guard(), job.tick()));
            let (intervals, vpc_decided) = vpc.unzip();
            let built = attribution(batches, intervals, &job, names);
            if let (Some(answers), Some(decided), Some(rows)) =
                (built.answers.clone(), vpc_decided, options.vpc.clone())
            {
                let c = Rc::clone(&collected);
                crate::vpc::vpc_join(answers, decided, rows)
                    .inspect(move |r| {
                        let mut c = c.borrow_mut();
                        c.counts.vpc.count(r);
                        c.vpc.push(r.clone());
                    })
                    .probe_with(&probe);
            }
            let c = Rc::clone(&collected);
            let counted = built.output.inspect_core(move |event| {
                if let Ok((_, pieces)) = event {
                    let mut c = c.borrow_mut();
                    for piece in pieces.iter() {
                        count(&mut c.counts, piece);
                        if collect {
                            c.flows.extend(records(piece));
                        }
                    }
                }
            });
            if options.edges {
                let edges = crate::edges::edges(&counted, &job, options.policy.clone());
                let c = Rc::clone(&collected);
                let rows = edges.edges.inspect(move |e| {
                    let mut c = c.borrow_mut();
                    c.counts.edges += 1;
                    if collect {
                        c.edges.push(e.clone());
                    }
                });
                let c = Rc::clone(&collected);
                let events = edges.events.inspect(move |e| {
                    let mut c = c.borrow_mut();
                    c.counts.events += 1;
                    if collect {
                        c.events.push(e.clone());
                    }
                });
                to_sink(rows, sinks.edges.clone(), &sink_error, &probe);
                to_sink(events, sinks.events.clone(), &sink_error, &probe);
            }
            to_sink(counted, sinks.flows.clone(), &sink_error, &probe);
            built.state
        });
        let mut report = WorkerReport::default();
        let mut last_sample = Instant::now();
        let mut last_report = Instant::now();
        let mut delivered: Vec<Time> = Vec::new();
        while !probe.done() {
            worker.step_or_park(Some(Duration::from_millis(20)));
            if let Some(e) = sink_error.borrow_mut().take() {
                error.borrow_mut().get_or_insert(e.into());
            }
            if error.borrow().is_some() || abort.load(Ordering::Relaxed) {
                break;
            }
            if last_report.elapsed() >= Duration::from_millis(100) {
                last_report = Instant::now();
                probe.with_frontier(|f| {
                    delivered.clear();
                    delivered.extend(f.iter().copied());
                });
                if let Err(e) = feed.borrow_mut().delivered(&delivered) {
                    *error.borrow_mut() = Some(e.into());
                    break;
                }
                let delivered_ns = delivered.iter().min().copied();
                crate::metrics::publish(index, &collected.borrow().counts, &stats.borrow(), &state.get(), delivered_ns);
            }
            if last_sample.elapsed() >= options.sample_every {
                last_sample = Instant::now();
                let size = state.get();
                if size.bytes > report.peak_state.bytes {
                    report.peak_state = size;
                }
                report.state_samples.push(size);
            }
        }
        crate::metrics::publish(index, &collected.borrow().counts, &stats.borrow(), &state.get(), None);
        if error.borrow().is_none() && !abort.load(Ordering::Relaxed) {
            // Everything is out of the dataflow: drain the sinks, then the feed's last commit.
            let drained = sinks.finish().map_err(Stop::from);
            if let Err(e) = drained.and_then(|()| feed.borrow_mut().finish().map_err(Stop::from)) {
                *error.borrow_mut() = Some(e);
            }
        }
        if let Some(e) = error.borrow().clone() {
            abort.store(true, Ordering::Relaxed);
            if let Ok(mut first) = failure.lock() {
                first.get_or_insert(e.clone());
            }
            report.error = Some(e);
        }
        let collected = std::mem::take(&mut *collected.borrow_mut());
        report.flows = collected.flows;
        report.edges = collected.edges;
        report.events = collected.events;
        report.vpc = collected.vpc;
        report.counts = collected.counts;
        report.ingest = stats.borrow().clone();
        report.operator_times = profiler.map(|finish| finish()).unwrap_or_default();
        report
    })
    .map_err(RunError::Start)?;

    let mut merged = RunReport::default();
    for result in guards.join() {
        let worker = result.map_err(RunError::Worker)?;
        merged.workers += 1;
        merged.flows.extend(worker.flows);
        merged.edges.extend(worker.edges);
        merged.events.extend(worker.events);
        merged.vpc.extend(worker.vpc);
        merged.counts.add(&worker.counts);
        merged.ingest.merge(&worker.ingest);
        merged.peak_state.add(&worker.peak_state);
        merged.operator_times.merge(&worker.operator_times);
        for (i, s) in worker.state_samples.iter().enumerate() {
            if merged.state_samples.len() <= i {
                merged.state_samples.push(IndexSize::default());
            }
            merged.state_samples[i].add(s);
        }
    }
    merged.output = merged.counts.output;
    merged.attributed = merged.counts.attributed;
    merged.elapsed = started.elapsed();
    if let Some(e) = first_error.lock().ok().and_then(|e| e.clone()) {
        return Err(RunError::Stopped(e));
    }
    Ok(merged)
}

fn count(c: &mut Counts, piece: &VerdictPiece) {
    c.output += piece.verdicts.len() as u64;
    for v in &piece.verdicts {
        match v {
            Verdict::Attributed { .. } => c.attributed += 1,
            Verdict::Unattributed(reason) => {
                if let Some(i) = Reason::ALL.iter().position(|r| r == reason) {
                    c.unattributed[i] += 1;
                }
            }
        }
    }
    // Each connection once: its first record, from the end that counts it (as the edges and the
    // lake's `counted` do); a piece decided without lookups has no checks (one-sided firsts).
    for check in (0..piece.verdicts.len()).map(|i| piece.check(i)).filter(|c| c.first && c.counts) {
        match check.verification {
            Verification::Agree => c.verified_agree += 1,
            Verification::Disagree => c.verified_disagree += 1,
            Verification::PeerOnly => c.verified_peer_only += 1,
            Verification::OneSided => c.one_sided += 1,
        }
    }
}

/// The unattributed counts as a JSON object by reason name.
fn by_reason<S: serde::Serializer>(counts: &[u64; 7], s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut map = s.serialize_map(Some(counts.len()))?;
    for (reason, n) in Reason::ALL.iter().zip(counts) {
        map.serialize_entry(reason.name(), n)?;
    }
    map.end()
}
