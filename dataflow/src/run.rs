//! Running the dataflow on timely workers: [`run`] builds one dataflow per worker over that
//! worker's [`Feed`], steps it to completion, and gathers the output and the statistics.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use differential_dataflow::trace::TraceReader;
use flowmap_operators::{AttributedFlow, Attribution, Time};
use timely::dataflow::operators::{Inspect, Probe};
use timely::dataflow::ProbeHandle;
use timely::progress::Antichain;

use crate::config::JobConfig;
use crate::decode::IngestStats;
use crate::pipeline::{attribution, trace_size, TraceSize};
use crate::profile::OperatorTimes;
use crate::source::{batch_source, Feed};

/// What to do with the attributed flows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputMode {
    /// Keep them all and return them (demo, tests, replay to a file).
    Collect,
    /// Only count them (benchmarks).
    Count,
}

#[derive(Default)]
struct Collected {
    flows: Vec<AttributedFlow>,
    output: u64,
    attributed: u64,
}

/// One worker's results.
#[derive(Debug, Default)]
pub struct WorkerReport {
    /// Attributed flows (when collecting).
    pub flows: Vec<AttributedFlow>,
    /// How many flows were output.
    pub output: u64,
    /// How many of them have a remote workload.
    pub attributed: u64,
    /// Ingest counters.
    pub ingest: IngestStats,
    /// Largest ownership state this worker held, sampled during the run.
    pub peak_state: TraceSize,
    /// Ownership state sampled during the run.
    pub state_samples: Vec<TraceSize>,
    /// Time per operator (when profiling).
    pub operator_times: OperatorTimes,
}

/// The merged results of all workers of this process.
#[derive(Debug, Default)]
pub struct RunReport {
    /// Attributed flows (when collecting), in no particular order.
    pub flows: Vec<AttributedFlow>,
    /// How many flows were output.
    pub output: u64,
    /// How many of them have a remote workload.
    pub attributed: u64,
    /// Ingest counters, summed.
    pub ingest: IngestStats,
    /// Sum over workers of each worker's peak ownership state.
    pub peak_state: TraceSize,
    /// Ownership state summed over workers, per sample (taken every `sample_every`).
    pub state_samples: Vec<TraceSize>,
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
    let guards = timely::execute(timely, move |worker| {
        let (index, peers) = (worker.index(), worker.peers());
        let stats = Rc::new(RefCell::new(IngestStats::default()));
        let collected: Rc<RefCell<Collected>> = Rc::default();
        let probe = ProbeHandle::new();
        let profiler = profile.then(|| crate::profile::install(worker));
        let feed = make_feed(index, peers);
        let mut trace = worker.dataflow::<Time, _, _>(|scope| {
            let batches = batch_source(scope, feed, job.clone(), Rc::clone(&stats));
            let built = attribution(batches, &job);
            let sink = Rc::clone(&collected);
            built
                .output
                .inspect_core(move |event| {
                    if let Ok((_, flows)) = event {
                        let mut sink = sink.borrow_mut();
                        sink.output += flows.len() as u64;
                        sink.attributed += flows.iter().filter(|f| matches!(f.remote, Attribution::Workload { .. })).count() as u64;
                        if mode == OutputMode::Collect {
                            sink.flows.extend(flows.iter().cloned());
                        }
                    }
                })
                .probe_with(&probe);
            built.ownership.trace
        });
        let mut report = WorkerReport::default();
        let mut frontier = Antichain::new();
        let mut last_sample = Instant::now();
        while !probe.done() {
            worker.step();
            if last_sample.elapsed() >= sample_every {
                last_sample = Instant::now();
                // Follow the probe so this handle never holds back compaction.
                probe.with_frontier(|f| frontier = f.to_owned());
                trace.set_logical_compaction(frontier.borrow());
                trace.set_physical_compaction(frontier.borrow());
                let size = trace_size(&mut trace);
                if size.bytes > report.peak_state.bytes {
                    report.peak_state = size;
                }
                report.state_samples.push(size);
            }
        }
        let collected = std::mem::take(&mut *collected.borrow_mut());
        report.flows = collected.flows;
        report.output = collected.output;
        report.attributed = collected.attributed;
        report.ingest = stats.borrow().clone();
        // Drop the dataflow's state before reading the log, so shutdown time is counted too.
        drop(trace);
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
                merged.state_samples.push(TraceSize::default());
            }
            merged.state_samples[i].add(s);
        }
    }
    merged.elapsed = started.elapsed();
    Ok(merged)
}
