//! Running the dataflow on timely workers: [`run`] builds one dataflow per worker over that
//! worker's [`Feed`], steps it to completion, and gathers the output and the statistics.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use differential_dataflow::trace::TraceReader;
use flowmap_operators::{AttributedFlow, Time};
use timely::dataflow::operators::{Inspect, Probe};
use timely::dataflow::ProbeHandle;
use timely::progress::Antichain;

use crate::config::JobConfig;
use crate::decode::IngestStats;
use crate::pipeline::{attribution, trace_size, TraceSize};
use crate::source::{batch_source, Feed};

/// What to do with the attributed flows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputMode {
    /// Keep them all and return them (demo, tests, replay to a file).
    Collect,
    /// Only count them (benchmarks).
    Count,
}

/// One worker's results.
#[derive(Debug, Default)]
pub struct WorkerReport {
    /// Attributed flows (when collecting).
    pub flows: Vec<AttributedFlow>,
    /// How many flows were output.
    pub output: u64,
    /// Ingest counters.
    pub ingest: IngestStats,
    /// Largest ownership state this worker held, sampled during the run.
    pub peak_state: TraceSize,
    /// Ownership state when the input had been fully ingested (before the final drain).
    pub state_samples: Vec<TraceSize>,
}

/// The merged results of all workers of this process.
#[derive(Debug, Default)]
pub struct RunReport {
    /// Attributed flows (when collecting), in no particular order.
    pub flows: Vec<AttributedFlow>,
    /// How many flows were output.
    pub output: u64,
    /// Ingest counters, summed.
    pub ingest: IngestStats,
    /// Sum over workers of each worker's peak ownership state.
    pub peak_state: TraceSize,
    /// Per-sample ownership state summed over workers (samples taken every `sample_every`).
    pub state_samples: Vec<TraceSize>,
    /// Wall time from start to all workers finished.
    pub elapsed: Duration,
    /// Workers in this process.
    pub workers: usize,
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
/// often (in worker steps) the ownership state is measured.
pub fn run<F, M>(
    timely: timely::Config,
    job: JobConfig,
    make_feed: M,
    mode: OutputMode,
    sample_every: usize,
) -> Result<RunReport, RunError>
where
    F: Feed,
    M: Fn(usize, usize) -> F + Send + Sync + 'static,
{
    let started = Instant::now();
    let guards = timely::execute(timely, move |worker| {
        let (index, peers) = (worker.index(), worker.peers());
        let stats = Rc::new(RefCell::new(IngestStats::default()));
        let collected: Rc<RefCell<(Vec<AttributedFlow>, u64)>> = Rc::default();
        let probe = ProbeHandle::new();
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
                        sink.1 += flows.len() as u64;
                        if mode == OutputMode::Collect {
                            sink.0.extend(flows.iter().cloned());
                        }
                    }
                })
                .probe_with(&probe);
            built.ownership.trace
        });
        let mut report = WorkerReport::default();
        let mut steps = 0usize;
        let mut frontier = Antichain::new();
        while !probe.done() {
            worker.step();
            steps += 1;
            if steps % sample_every.max(1) == 0 {
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
        let (flows, output) = std::mem::take(&mut *collected.borrow_mut());
        report.flows = flows;
        report.output = output;
        report.ingest = stats.borrow().clone();
        report
    })
    .map_err(RunError::Start)?;

    let mut merged = RunReport::default();
    for result in guards.join() {
        let worker = result.map_err(RunError::Worker)?;
        merged.workers += 1;
        merged.flows.extend(worker.flows);
        merged.output += worker.output;
        merged.ingest.merge(&worker.ingest);
        merged.peak_state.keys += worker.peak_state.keys;
        merged.peak_state.vals += worker.peak_state.vals;
        merged.peak_state.updates += worker.peak_state.updates;
        merged.peak_state.bytes += worker.peak_state.bytes;
        for (i, s) in worker.state_samples.iter().enumerate() {
            if merged.state_samples.len() <= i {
                merged.state_samples.push(TraceSize::default());
            }
            let m = &mut merged.state_samples[i];
            m.keys += s.keys;
            m.vals += s.vals;
            m.updates += s.updates;
            m.bytes += s.bytes;
        }
    }
    merged.elapsed = started.elapsed();
    Ok(merged)
}
