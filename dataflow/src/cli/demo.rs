//! `flowmap demo`: simulator -> dataflow -> scorer in one process, no external services.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

use anyhow::{ensure, Result};
use clap::Args;
use serde_json::json;

use super::RunFlags;
use crate::memory::run_deliveries;
use crate::output::OutputRecord;
use crate::run::{OutputMode, RunOptions};

/// Arguments of `flowmap demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// `steady`, `adversarial`, or a scenario TOML file.
    #[arg(long, default_value = "adversarial")]
    pub scenario: String,
    /// Override the scenario's seed.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Job settings (TOML); the built-in defaults otherwise.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// A dependency policy (TOML, see `configs/policy.toml`): edges it does not allow are
    /// reported as policy violations.
    #[arg(long)]
    pub policy: Option<PathBuf>,
    /// Output and cluster flags.
    #[command(flatten)]
    pub run: RunFlags,
}

/// Runs the demo.
pub fn run(args: DemoArgs) -> Result<()> {
    let scenario = super::scenario(&args.scenario, args.seed)?;
    let job = super::job_config(args.config.as_ref())?;
    let timely = args.run.timely.single_process_config()?;

    eprintln!("flowmap demo: simulating scenario {:?} (seed {}) ...", scenario.name, scenario.seed);
    let started = Instant::now();
    let sim = flowmap_sim::simulate(&scenario)?;
    let sim_secs = started.elapsed().as_secs_f64();
    eprintln!(
        "  {} flow records (truth), {} deliveries from {} exporters in {:.1}s",
        sim.truth.len(),
        sim.deliveries.len(),
        sim.roster.len(),
        sim_secs
    );

    eprintln!("  attributing with {} worker(s) ...", args.run.timely.workers * args.run.timely.processes);
    let deliveries = Arc::new(sim.deliveries);
    let roster = Arc::new(sim.roster);
    let mode = OutputMode::Collect;
    let sample = Duration::from_millis(50);
    let policy = args.policy.as_deref().map(crate::edges::Policy::load).transpose()?;
    let options =
        RunOptions { edges: true, policy, sample_every: sample, profile: args.run.profile, ..RunOptions::new(mode) };
    let report = run_deliveries(timely, job, Arc::clone(&deliveries), roster, options)?;
    let records: Vec<OutputRecord> = report.flows.iter().map(OutputRecord::from).collect();
    let verdicts: Vec<_> = records.iter().map(super::verdict).collect();
    let score = flowmap_sim::score(&sim.truth, &verdicts, &deliveries);
    let secs = report.elapsed.as_secs_f64();
    if args.run.profile {
        super::print_profile(&report);
    }
    let flows_per_sec = report.output as f64 / secs.max(1e-9);

    println!("flowmap demo — scenario {}", scenario.name);
    println!(
        "  records output      {:>10}   of {} flows ({} open slices); {:.0} records/s, {} workers, {:.2}s",
        score.records, score.flows, score.slices, flows_per_sec, report.workers, secs
    );
    println!(
        "  attributed          {:>10}   correct {}, MISATTRIBUTED {}   by evidence {:?}",
        score.attributed, score.correct, score.misattributed, score.attributed_by_evidence
    );
    println!("  unattributed        {:>10}   {:?}", score.unattributed, score.unattributed_by_reason);
    println!("  in-fleet attributed {:>9.2}%", score.attributed_in_fleet_pct);
    println!("  one verdict per flow: flows whose records disagree {}", score.verdict_changes);
    println!("  by remote kind      (records, correct, misattributed, unattributed by reason)");
    for (kind, t) in &score.by_kind {
        println!("    {kind:<18} {:>8} {:>8} {:>4}   {:?}", t.records, t.correct, t.misattributed, t.unattributed);
    }
    println!("  by condition");
    for (cond, t) in &score.by_condition {
        println!("    {cond:<18} {:>8} {:>8} {:>4}   {:?}", t.records, t.correct, t.misattributed, t.unattributed);
    }
    println!(
        "  input               lost in transit {}, corrupted records {}, missing {}, duplicates out {}",
        score.lost_in_transit, score.corrupted, score.missing, score.duplicates_in_output
    );
    println!("  ingest              {:?}", report.ingest);
    println!(
        "  ownership state     peak {} addresses, {} claims, {} connection records, {} assignments (~{} KiB, sampled every 50 ms)",
        report.peak_state.ips,
        report.peak_state.claims,
        report.peak_state.conns,
        report.peak_state.assignments,
        report.peak_state.bytes / 1024
    );
    println!(
        "  baseline (IPAM map as it arrives): attributed {}, MISATTRIBUTED {}   by kind {:?}",
        score.baseline_attributed, score.baseline_misattributed, score.baseline_misattributed_by_kind
    );
    ensure!(score.missing == 0, "{} delivered records are missing from the output", score.missing);
    if args.run.json {
        let summary = json!({
            "scenario": scenario.name,
            "flows": score.flows,
            "records": score.records,
            "slices": score.slices,
            "verdict_changes": score.verdict_changes,
            "attributed_by_evidence": score.attributed_by_evidence,
            "by_kind": score.by_kind,
            "by_condition": score.by_condition,
            "attributed": score.attributed,
            "unattributed": score.unattributed,
            "misattributed": score.misattributed,
            "correct": score.correct,
            "unattributed_by_reason": score.unattributed_by_reason,
            "in_fleet": score.in_fleet,
            "attributed_in_fleet_pct": score.attributed_in_fleet_pct,
            "lost_in_transit": score.lost_in_transit,
            "corrupted": score.corrupted,
            "missing": score.missing,
            "duplicates_in_output": score.duplicates_in_output,
            "baseline_attributed": score.baseline_attributed,
            "baseline_misattributed": score.baseline_misattributed,
            "flows_per_sec": flows_per_sec,
            "workers": report.workers,
            "elapsed_s": secs,
            "ingest": report.ingest,
            "peak_state_claims": report.peak_state.claims,
            "peak_state_bytes": report.peak_state.bytes,
        });
        println!("{summary}");
    }
    Ok(())
}
