//! `flowmap demo`: simulator -> dataflow -> scorer in one process, no external services.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

use anyhow::{ensure, Result};
use clap::Args;
use serde_json::json;

use super::outputs::{lake_line, Destinations, LakeArgs};
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
    /// The lake and the dependency policy.
    #[command(flatten)]
    pub outputs: LakeArgs,
    /// After the run, serve the dependency map of its edges and events at this address (for
    /// example 127.0.0.1:8080) until killed.
    #[arg(long)]
    pub serve: Option<std::net::SocketAddr>,
    /// The map's settings.
    #[command(flatten)]
    pub map: super::serve::MapArgs,
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
    let policy = args.outputs.policy()?;
    let totals = crate::lake::LakeTotals::default();
    let lake = args.outputs.open()?;
    if let Some(lake) = &lake {
        eprintln!("  writing flows and edges to the lake at {}", lake.location());
    }
    let map = args.serve.map(|_| super::serve::memory_source());
    // Start the map before the run, so that a bad address (not loopback, in use) fails at once
    // rather than after the whole demo (found by a fresh user); it fills as the run goes.
    let server = match (args.serve, &map) {
        (Some(addr), Some(map)) => Some(args.map.start(addr, map.clone())?),
        _ => None,
    };
    let destinations = Destinations { kafka: None, lake: lake.map(|l| (l, totals.clone())), map: map.clone() };
    let with_lake = destinations.any();
    let mode = if with_lake { OutputMode::CollectAnd(destinations.factory()) } else { OutputMode::Collect };
    let sample = Duration::from_millis(50);
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
    let c = &report.counts;
    println!(
        "  two-sided check     connections {}: both ends agree {}, disagree {}, other end only {}, one end only {}",
        c.verified_agree + c.verified_disagree + c.verified_peer_only + c.one_sided,
        c.verified_agree,
        c.verified_disagree,
        c.verified_peer_only,
        c.one_sided
    );
    print_edges(&report);
    if with_lake {
        println!("  {}", lake_line(&totals));
    }
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
            "counts": report.counts,
        });
        println!("{summary}");
    }
    if let Some(server) = server {
        println!("the map of this run is at {} (Ctrl-C stops it)", server.url());
        use std::io::Write;
        std::io::stdout().flush()?;
        server.wait()?;
    }
    Ok(())
}

/// Prints the dependency edges (summed over buckets) with the most bytes, and the change
/// events by kind.
fn print_edges(report: &crate::run::RunReport) {
    use std::collections::BTreeMap;
    /// Connections, bytes both ways, verified, one-sided.
    type Sums = (u64, u64, u64, u64);
    let mut sums: BTreeMap<(&str, &str, u32), Sums> = BTreeMap::new();
    for e in &report.edges {
        let s = sums.entry((&e.client, &e.server, e.server_port)).or_default();
        s.0 += e.connections;
        s.1 += e.bytes_client_to_server + e.bytes_server_to_client;
        s.2 += e.verified;
        s.3 += e.one_sided;
    }
    let mut top: Vec<_> = sums.into_iter().collect();
    top.sort_by(|a, b| b.1 .1.cmp(&a.1 .1).then(a.0.cmp(&b.0)));
    println!(
        "  dependency edges    {} distinct (client, server, port) from {} edge rows; top by bytes:",
        top.len(),
        report.edges.len()
    );
    for ((client, server, port), (conns, bytes, verified, one_sided)) in top.iter().take(8) {
        println!(
            "    {client} -> {server}:{port}  {conns} connections, {:.1} MiB, verified {verified}, one-sided {one_sided}",
            *bytes as f64 / 1048576.0
        );
    }
    let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
    for e in &report.events {
        let kind = flowmap_schema::EventKind::try_from(e.kind).map_or("unknown", |k| k.name());
        *kinds.entry(kind).or_default() += 1;
    }
    println!("  change events       {kinds:?}");
}
