//! Helpers shared by the integration tests: run a simulation through the real dataflow and
//! score it, and re-order deliveries the way a transport may.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use flowmap::config::JobConfig;
use flowmap::memory::MemoryFeed;
use flowmap::output::OutputRecord;
use flowmap::run::{run, OutputMode, RunOptions, RunReport};
use flowmap_sim::rng::Rng;
use flowmap_sim::{Delivery, Scenario, Score, Simulation};

/// Runs deliveries through the dataflow on `workers` threads and returns the report.
pub fn attribute(deliveries: Vec<Delivery>, roster: Vec<String>, workers: usize, job: JobConfig) -> RunReport {
    attribute_paced(deliveries, roster, workers, job, usize::MAX)
}

/// As [`attribute`], feeding at most `pace` deliveries per source activation.
pub fn attribute_paced(
    deliveries: Vec<Delivery>,
    roster: Vec<String>,
    workers: usize,
    job: JobConfig,
    pace: usize,
) -> RunReport {
    let deliveries = Arc::new(deliveries);
    let roster = Arc::new(roster);
    let config = if workers == 1 { timely::Config::thread() } else { timely::Config::process(workers) };
    run(
        config,
        job,
        move |index, peers| MemoryFeed::new(Arc::clone(&deliveries), &roster, index, peers).with_pace(pace),
        RunOptions { sample_every: Duration::ZERO, ..RunOptions::new(OutputMode::Collect) },
    )
    .expect("dataflow runs")
}

/// The output as sorted JSON-ready records (a canonical form to compare runs by).
pub fn records(report: &RunReport) -> Vec<OutputRecord> {
    let mut out: Vec<OutputRecord> = report.flows.iter().map(OutputRecord::from).collect();
    out.sort_by_key(OutputRecord::key);
    out
}

/// Scores a report against a simulation's truth.
pub fn score(sim: &Simulation, report: &RunReport) -> Score {
    let verdicts: Vec<_> = records(report).iter().map(flowmap::cli::verdict).collect();
    flowmap_sim::score(&sim.truth, &verdicts, &sim.deliveries)
}

/// Simulates, attributes with `workers`, scores.
pub fn simulate_and_score(scenario: &Scenario, workers: usize) -> (Simulation, RunReport, Score) {
    let sim = flowmap_sim::simulate(scenario).expect("valid scenario");
    let report = attribute(sim.deliveries.clone(), sim.roster.clone(), workers, JobConfig::default());
    let score = score(&sim, &report);
    (sim, report, score)
}

/// A random interleaving of the deliveries that keeps each lane's own order (what Kafka
/// guarantees per partition; the in-memory feed's lanes are its partitions), seeded.
pub fn interleave(deliveries: &[Delivery], seed: u64) -> Vec<Delivery> {
    let mut rng = Rng::new(seed);
    let mut queues: Vec<(u32, std::collections::VecDeque<Delivery>)> = Vec::new();
    for d in deliveries {
        let lane = flowmap::memory::lane_of(&d.key);
        match queues.iter_mut().find(|(k, _)| *k == lane) {
            Some((_, q)) => q.push_back(d.clone()),
            None => queues.push((lane, [d.clone()].into())),
        }
    }
    let mut out = Vec::with_capacity(deliveries.len());
    while !queues.is_empty() {
        let i = rng.index(queues.len());
        // Take a run of 1-8 messages from one lane, as a consumer polling a partition would.
        for _ in 0..rng.range(1, 9) {
            match queues[i].1.pop_front() {
                Some(d) => out.push(d),
                None => break,
            }
        }
        if queues[i].1.is_empty() {
            queues.swap_remove(i);
        }
    }
    out
}

/// A small scenario (fast in tests) with the adversarial faults.
pub fn small_adversarial(seed: u64) -> Scenario {
    Scenario {
        name: format!("small-adversarial-{seed}"),
        seed,
        duration_s: 180,
        hosts: 6,
        services: 8,
        replicas_min: 1,
        replicas_max: 3,
        flows_per_pod_per_s: 1.0,
        ..Scenario::adversarial()
    }
}
