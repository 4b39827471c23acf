//! Running the dataflow on timely workers: [`run`] builds one dataflow per worker over that
//! worker's [`Feed`], steps it to completion, and gathers the output and the statistics.
//!
//! With a [`FlowSink`] ([`OutputMode::Sink`]) the runner also closes the loop the Kafka job
//! needs: it follows the delivered frontier (see [`crate::sink`]) and reports it to the feed,
//! which commits its input up to there; at the end it waits for the sink to drain before the
//! feed's final commit. An error in a feed or a sink stops every worker of the process.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flowmap_operators::records::{Verdict, VerdictPiece};
use flowmap_operators::{IndexSize, Time};
use flowmap_schema as wire;
use timely::dataflow::operators::{Inspect, Probe};
use timely::dataflow::ProbeHandle;

use crate::admission::IngestStats;
use crate::config::JobConfig;
use crate::feed::{Feed, FeedError};
use crate::output::records;
use crate::pipeline::attribution;
use crate::profile::OperatorTimes;
use crate::sink::{deliver, FlowSink, SharedSink, SinkError};
use crate::source::{batch_source, SharedFeed};

/// Makes worker `index` of `peers` its sink.
pub type SinkFactory = Arc<dyn Fn(usize, usize) -> Result<Box<dyn FlowSink>, SinkError> + Send + Sync>;

/// What to do with the attributed flows.
#[derive(Clone)]
pub enum OutputMode {
    /// Keep them all and return them (demo, tests, replay to a file).
    Collect,
    /// Only count them (benchmarks).
    Count,
    /// Hand them to a sink that acknowledges delivery (Kafka); the feed is told the delivered
    /// frontier, so it can commit.
    Sink(SinkFactory),
}

impl OutputMode {
    fn collects(&self) -> bool {
        matches!(self, OutputMode::Collect)
    }
}

#[derive(Default)]
struct Collected {
    flows: Vec<wire::AttributedFlow>,
    output: u64,
    attributed: u64,
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
    /// How many records were output.
    pub output: u64,
    /// How many of them have a remote workload.
    pub attributed: u64,
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
    /// How many records were output.
    pub output: u64,
    /// How many of them have a remote workload.
    pub attributed: u64,
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
    /// The feed or the sink failed (the job stopped; nothing past the failure was committed).
    #[error(transparent)]
    Stopped(#[from] Stop),
}

/// Runs the attribution job until every feed is exhausted.
///
/// `make_feed(index, peers)` gives each worker its share of the input. `sample_every` sets how
/// often the ownership state is measured.
pub fn run<F, M>(
    timely: timely::Config,
    job: JobConfig,
    make_feed: M,
    mode: OutputMode,
    sample_every: Duration,
    profile: bool,
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
        let profiler = profile.then(|| crate::profile::install(worker));
        let feed = Rc::new(RefCell::new(make_feed(index, peers)));
        let shared: SharedFeed = feed.clone();
        let sink: Option<SharedSink> = match &mode {
            OutputMode::Sink(factory) => match factory(index, peers) {
                Ok(sink) => Some(Rc::new(RefCell::new(BoxedSink(sink)))),
                Err(e) => {
                    *error.borrow_mut() = Some(e.into());
                    None
                }
            },
            _ => None,
        };
        let collect = mode.collects();
        let names = !matches!(mode, OutputMode::Count);
        let state = worker.dataflow::<Time, _, _>(|scope| {
            let batches = batch_source(scope, shared, job.clone(), Rc::clone(&stats));
            let built = attribution(batches, &job, names);
            let sink_counts = Rc::clone(&collected);
            let counted = built.output.inspect_core(move |event| {
                if let Ok((_, pieces)) = event {
                    let mut c = sink_counts.borrow_mut();
                    for piece in pieces.iter() {
                        count(&mut c, piece);
                        if collect {
                            c.flows.extend(records(piece));
                        }
                    }
                }
            });
            match &sink {
                Some(sink) => {
                    deliver(counted, Rc::clone(sink), Rc::clone(&sink_error)).probe_with(&probe);
                }
                None => {
                    counted.probe_with(&probe);
                }
            }
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
            }
            if last_sample.elapsed() >= sample_every {
                last_sample = Instant::now();
                let size = state.get();
                if size.bytes > report.peak_state.bytes {
                    report.peak_state = size;
                }
                report.state_samples.push(size);
            }
        }
        if error.borrow().is_none() && !abort.load(Ordering::Relaxed) {
            // Everything is out of the dataflow: drain the sink, then the feed's last commit.
            let drained: Result<(), Stop> =
                sink.as_ref().map_or(Ok(()), |s| s.borrow_mut().finish().map_err(Stop::from));
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
        report.output = collected.output;
        report.attributed = collected.attributed;
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
        merged.output += worker.output;
        merged.attributed += worker.attributed;
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
    merged.elapsed = started.elapsed();
    if let Some(e) = first_error.lock().ok().and_then(|e| e.clone()) {
        return Err(RunError::Stopped(e));
    }
    Ok(merged)
}

fn count(c: &mut Collected, piece: &VerdictPiece) {
    c.output += piece.verdicts.len() as u64;
    c.attributed += piece.verdicts.iter().filter(|v| matches!(v, Verdict::Attributed { .. })).count() as u64;
}

/// Adapts a boxed sink to the shared, unsized form.
struct BoxedSink(Box<dyn FlowSink>);

impl FlowSink for BoxedSink {
    fn write(&mut self, time: Time, piece: &VerdictPiece) -> Result<(), SinkError> {
        self.0.write(time, piece)
    }
    fn undelivered(&mut self) -> Result<Option<Time>, SinkError> {
        self.0.undelivered()
    }
    fn finish(&mut self) -> Result<(), SinkError> {
        self.0.finish()
    }
}
