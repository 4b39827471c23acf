//! Print every TCP flow of the host as JSON lines until Ctrl-C.
//!
//! Closed flows are printed as they arrive (`"kind":"closed"`); every
//! `--interval-ms` (default 5000) the still-open flows are printed too
//! (`"kind":"open"`), followed by the kernel loss counters (`"kind":"counters"`).
//!
//! Run as root: `cargo run -j 1 --example dump -- [--interval-ms N]`.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use flowmap_exporter::{FlowEvent, LoaderConfig};

#[derive(serde::Serialize)]
struct Line<'a, T: serde::Serialize> {
    kind: &'a str,
    #[serde(flatten)]
    body: &'a T,
}

fn parse_interval() -> anyhow::Result<Duration> {
    let mut args = std::env::args().skip(1);
    let mut ms = 5000u64;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--interval-ms" => {
                ms = args.next().context("--interval-ms needs a value")?.parse().context("--interval-ms")?;
            }
            other => anyhow::bail!("unknown argument {other:?} (usage: dump [--interval-ms N])"),
        }
    }
    Ok(Duration::from_millis(ms.max(1)))
}

/// `Ok(false)` when stdout is gone (broken pipe): stop quietly.
fn emit<T: serde::Serialize>(out: &mut impl Write, kind: &str, body: &T) -> anyhow::Result<bool> {
    let res = serde_json::to_writer(&mut *out, &Line { kind, body })
        .map_err(std::io::Error::from)
        .and_then(|()| out.write_all(b"\n"));
    match res {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(e.into()),
    }
}

fn run(interval: Duration, stop: &AtomicBool) -> anyhow::Result<()> {
    let mut probe = flowmap_exporter::load(&LoaderConfig::default()).context("loading the flow probe")?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut batch: Vec<FlowEvent> = Vec::new();
    let mut next_snapshot = Instant::now() + interval;
    while !stop.load(Ordering::Relaxed) {
        if probe.events.wait(Duration::from_millis(200))? {
            batch.clear();
            probe.events.read_available(&mut batch);
            for ev in &batch {
                if !emit(&mut out, "closed", ev)? {
                    return Ok(());
                }
            }
        }
        if Instant::now() >= next_snapshot {
            next_snapshot += interval;
            let snap = probe.open_flows.snapshot().context("open-flow snapshot")?;
            for ev in snap.flows.iter().filter(|e| e.established.is_some()) {
                if !emit(&mut out, "open", ev)? {
                    return Ok(());
                }
            }
            let counters = probe.counters.read().context("reading counters")?;
            if !emit(&mut out, "counters", &counters)? {
                return Ok(());
            }
        }
        if out.flush().is_err() {
            return Ok(()); // stdout closed
        }
    }
    Ok(())
}

fn main() {
    let stop = Arc::new(AtomicBool::new(false));
    let handler_stop = Arc::clone(&stop);
    if let Err(e) = ctrlc::set_handler(move || handler_stop.store(true, Ordering::Relaxed)) {
        eprintln!("error: installing the Ctrl-C handler: {e:#}");
        std::process::exit(2);
    }
    let result = parse_interval().and_then(|interval| run(interval, &stop));
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
