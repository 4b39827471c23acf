//! The flow programs' own kernel run time over a window, for the programs a
//! running exporter (any process that loaded the flow probe) holds.
//!
//! ```text
//! bpf_stats --pid PID [--seconds S]
//! ```
//!
//! Switches the kernel's BPF run-time statistics on, reads the programs of
//! `PID` (waiting up to 30 s for them to appear), prints
//! `{"kind":"ready",...}`, then waits for Ctrl-C / SIGINT (or `--seconds`),
//! reads again and prints `{"kind":"window",...}` with each program's runs
//! and run time within the window. Statistics go off again when it exits.
//! Run as root. Used by `scripts/bench-exporter-kernel`.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use flowmap_exporter::bpf_stats::{process_program_stats, BpfStats, BpfStatsError, ProgramStats};

const USAGE: &str = "usage: bpf_stats --pid PID [--seconds S]";

#[derive(serde::Serialize)]
struct Program {
    #[serde(flatten)]
    stats: ProgramStats,
    ns_per_run: Option<f64>,
}

#[derive(serde::Serialize)]
struct Window {
    kind: &'static str,
    pid: u32,
    seconds: f64,
    programs: Vec<Program>,
}

fn parse_args() -> anyhow::Result<(u32, Option<Duration>)> {
    let mut pid = None;
    let mut seconds = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |name: &str| args.next().with_context(|| format!("{name} needs a value ({USAGE})"));
        match a.as_str() {
            "--pid" => pid = Some(value("--pid")?.parse::<u32>().context("--pid")?),
            "--seconds" => {
                let s: f64 = value("--seconds")?.parse().context("--seconds")?;
                seconds = Some(Duration::try_from_secs_f64(s).context("--seconds")?);
            }
            other => bail!("unknown argument {other:?} ({USAGE})"),
        }
    }
    Ok((pid.with_context(|| format!("--pid is required ({USAGE})"))?, seconds))
}

/// The programs of `pid`, waiting for the process to finish loading them.
fn first_read(pid: u32) -> anyhow::Result<Vec<ProgramStats>> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match process_program_stats(pid) {
            Err(BpfStatsError::NotFound { .. }) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
            }
            other => return other.with_context(|| format!("reading the flow programs of process {pid}")),
        }
    }
}

fn run(pid: u32, limit: Option<Duration>, stop: &AtomicBool) -> anyhow::Result<()> {
    let _stats_on = BpfStats::enable()?;
    let before = first_read(pid)?;
    let start = Instant::now();
    let mut out = std::io::stdout().lock();
    writeln!(out, r#"{{"kind":"ready","pid":{pid},"programs":{}}}"#, before.len())?;
    out.flush()?;
    while !stop.load(Ordering::Relaxed) && limit.is_none_or(|l| start.elapsed() < l) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let after =
        process_program_stats(pid).with_context(|| format!("reading the flow programs of process {pid} at the end"))?;
    let seconds = start.elapsed().as_secs_f64();
    let programs = after
        .iter()
        .filter_map(|a| before.iter().find(|b| b.id == a.id).map(|b| a.since(b)))
        .map(|stats| Program { ns_per_run: stats.ns_per_run(), stats })
        .collect();
    let line = serde_json::to_string(&Window { kind: "window", pid, seconds, programs })?;
    writeln!(out, "{line}")?;
    Ok(())
}

fn main() {
    let stop = Arc::new(AtomicBool::new(false));
    let handler_stop = Arc::clone(&stop);
    if let Err(e) = ctrlc::set_handler(move || handler_stop.store(true, Ordering::Relaxed)) {
        eprintln!("error: installing the Ctrl-C handler: {e:#}");
        std::process::exit(2);
    }
    let result = parse_args().and_then(|(pid, limit)| run(pid, limit, &stop));
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
