//! `flowmap bench`: attribution throughput on the core-lookup data set (N IPs with R
//! ownership ranges each, M flows), generated before the clock starts.
//!
//! The run uses a zero guard band so that its answer is exactly the peers' (a flow is
//! attributed iff its start lies inside a range of its remote IP); the command checks that the
//! number of attributed flows equals the number the generator knows lie inside a range, and
//! fails otherwise. `--export DIR` writes the same data as CSV for the peer script.

use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

use anyhow::{ensure, Context, Result};
use clap::Args;
use flowmap_sim::lookup::{generate, LookupSpec};
use serde_json::json;

use super::RunFlags;
use crate::cidr::Cidr;
use crate::memory::run_deliveries;
use crate::run::{OutputMode, RunOptions};

/// Arguments of `flowmap bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Distinct remote IPs.
    #[arg(long, default_value_t = 100_000)]
    pub ips: usize,
    /// Ownership ranges per IP.
    #[arg(long, default_value_t = 12)]
    pub ranges_per_ip: usize,
    /// Flows.
    #[arg(long, default_value_t = 10_000_000)]
    pub flows: usize,
    /// Exporters the IPs are spread over.
    #[arg(long, default_value_t = 1_000)]
    pub exporters: usize,
    /// Batch window, milliseconds.
    #[arg(long, default_value_t = 60_000)]
    pub window_ms: u64,
    /// Seed of the data set.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Write `ranges.csv` and `flows.csv` here (for the peer benchmark) and exit.
    #[arg(long)]
    pub export: Option<PathBuf>,
    /// Run twice: the core alone (flows counted), then with dependency edges and change events
    /// computed and flows and edges written to a lake in this directory (emptied first); print
    /// both rates and their ratio.
    #[arg(long)]
    pub with_lake: Option<PathBuf>,
    /// Output and cluster flags.
    #[command(flatten)]
    pub run: RunFlags,
}

/// Runs the benchmark.
pub fn run(args: BenchArgs) -> Result<()> {
    ensure!(
        args.ips > 0 && args.ranges_per_ip > 0 && args.flows > 0,
        "--ips, --ranges-per-ip and --flows must be positive"
    );
    ensure!(args.ips <= 1 << 22, "--ips at most {} (the data set lives in 10.64.0.0/10)", 1 << 22);
    let spec = LookupSpec {
        ips: args.ips,
        ranges_per_ip: args.ranges_per_ip,
        flows: args.flows,
        exporters: args.exporters,
        window_ms: args.window_ms,
        seed: args.seed,
    };
    eprintln!("generating {} flows over {} IPs x {} ranges ...", args.flows, args.ips, args.ranges_per_ip);
    let started = Instant::now();
    let data = generate(&spec);
    let generate_s = started.elapsed().as_secs_f64();
    eprintln!("  generated {} batches in {:.1}s", data.deliveries.len(), generate_s);

    if let Some(dir) = &args.export {
        std::fs::create_dir_all(dir)?;
        let mut ranges = BufWriter::new(std::fs::File::create(dir.join("ranges.csv"))?);
        writeln!(ranges, "ip,from_ns,to_ns,workload")?;
        for r in &data.ranges {
            writeln!(ranges, "{},{},{},{}", r.ip, r.from, r.to, r.workload)?;
        }
        ranges.flush()?;
        let mut flows = BufWriter::new(std::fs::File::create(dir.join("flows.csv"))?);
        writeln!(flows, "ip,start_ns")?;
        for (ip, start) in &data.flows {
            writeln!(flows, "{ip},{start}")?;
        }
        flows.flush()?;
        std::fs::write(dir.join("expected_inside.txt"), format!("{}\n", data.expected_inside))?;
        eprintln!("  wrote {}", dir.display());
        return Ok(());
    }

    let defaults = crate::config::RawJobConfig::default();
    let raw = crate::config::RawJobConfig {
        guard: Duration::ZERO,
        max_window: defaults.max_window.max(Duration::from_millis(args.window_ms)),
        fleet_cidrs: vec!["10.0.0.0/8".parse::<Cidr>().context("fleet block")?],
        ..defaults
    };
    let job = crate::config::JobConfig::try_from(raw)?;
    let timely = args.run.timely.single_process_config()?;
    let deliveries = Arc::new(data.deliveries);
    let roster = Arc::new(data.roster);
    eprintln!("  attributing with {} worker(s) ...", args.run.timely.workers);
    let sample = Duration::from_millis(100);
    let options = RunOptions { sample_every: sample, profile: args.run.profile, ..RunOptions::new(OutputMode::Count) };
    let report = run_deliveries(timely.clone(), job.clone(), Arc::clone(&deliveries), Arc::clone(&roster), options)?;
    let secs = report.elapsed.as_secs_f64();
    if args.run.profile {
        super::print_profile(&report);
    }
    check(&report, &args, data.expected_inside)?;
    let with_outputs = match &args.with_lake {
        Some(dir) => {
            let _ = std::fs::remove_dir_all(dir);
            let settings = flowmap_lake::LakeConfig::at(&dir.display().to_string()).validate()?;
            let lake = flowmap_lake::Lake::open(&settings)?;
            let totals = crate::lake::LakeTotals::default();
            let destinations =
                super::outputs::Destinations { kafka: None, lake: Some((lake, totals.clone())), map: None };
            eprintln!("  again with edges, change events and the lake at {} ...", dir.display());
            let options = RunOptions {
                edges: true,
                sample_every: sample,
                profile: args.run.profile,
                ..RunOptions::new(OutputMode::Sink(destinations.factory()))
            };
            let outputs = run_deliveries(timely, job, deliveries, roster, options)?;
            if args.run.profile {
                super::print_profile(&outputs);
            }
            check(&outputs, &args, data.expected_inside)?;
            let s = outputs.elapsed.as_secs_f64();
            let rate = outputs.output as f64 / s;
            println!(
                "bench: with edges and the lake: {} flows in {:.2}s: {:.0} flows/s, {:.2}x the core alone; {} edge rows; {}",
                outputs.output,
                s,
                rate,
                rate / (report.output as f64 / secs),
                outputs.counts.edges,
                super::outputs::lake_line(&totals)
            );
            Some((rate, outputs.counts.edges))
        }
        None => None,
    };
    let flows_per_sec = report.output as f64 / secs;
    let workers = report.workers;
    let outputs_ratio = with_outputs.map(|(rate, _)| rate / flows_per_sec);
    let peak_rss = super::peak_rss_bytes();
    let state_bytes_per_ip = report.peak_state.bytes as f64 / args.ips as f64;
    println!(
        "bench: {} flows in {:.2}s with {} worker(s): {:.0} flows/s ({:.0} per worker); peak state {} claims, ~{:.0} bytes per IP; peak RSS {} MiB",
        report.output,
        secs,
        workers,
        flows_per_sec,
        flows_per_sec / workers as f64,
        report.peak_state.claims,
        state_bytes_per_ip,
        peak_rss.unwrap_or(0) >> 20,
    );
    if args.run.json {
        let summary = json!({
            "workers": workers,
            "flows": report.output,
            "ips": args.ips,
            "ranges": args.ips * args.ranges_per_ip,
            "elapsed_s": secs,
            "generate_s": generate_s,
            "flows_per_sec": flows_per_sec,
            "flows_per_sec_per_worker": flows_per_sec / workers as f64,
            "peak_rss_bytes": peak_rss,
            "state_bytes": report.peak_state.bytes,
            "state_claims": report.peak_state.claims,
            "state_ips": report.peak_state.ips,
            "state_bytes_per_ip": state_bytes_per_ip,
            "attributed": report.attributed,
            "expected_attributed": data.expected_inside,
            "with_lake_flows_per_sec": with_outputs.map(|(rate, _)| rate),
            "with_lake_edge_rows": with_outputs.map(|(_, edges)| edges),
            "with_lake_ratio": outputs_ratio,
        });
        println!("{summary}");
    }
    Ok(())
}

/// The bench's own check: every flow out, and exactly the flows inside a range attributed.
fn check(report: &crate::run::RunReport, args: &BenchArgs, expected_inside: u64) -> Result<()> {
    ensure!(report.output == args.flows as u64, "output {} flows, expected {}", report.output, args.flows);
    ensure!(
        report.attributed == expected_inside,
        "attributed {} flows, but {} start inside a range: the lookup is wrong",
        report.attributed,
        expected_inside
    );
    Ok(())
}
