//! Writes a sample lake with the job model of `flowmap_lake::sample` (the same delivery and
//! commit rules as the job), for trying the lake with DuckDB or pyarrow and for the Python tests.
//!
//! ```sh
//! cargo run -p flowmap-lake --example write_sample -- --lake /tmp/lake --expected /tmp/lake-rows.jsonl
//! cargo run -p flowmap-lake --example write_sample -- --lake s3://bucket/prefix --endpoint http://127.0.0.1:19500
//! ```
//!
//! It resumes from `--commit FILE` (default `<lake>.commit` for a local lake), so a killed run
//! restarted with the same arguments behaves like the job after a kill. It prints `files N` as
//! data files are written (with `--progress`), and a JSON summary as its last line (the run's
//! counters, elapsed seconds and rows per second: with a release build and a large input, the
//! writer's throughput benchmark). With
//! `--expected FILE` it first writes every row of the input as JSON lines (`{"table": ..., the
//! columns}`: timestamps as ns integers, `rtt_sketch` as hex), which is what the lake must hold.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::Parser;
use flowmap_lake::flows::{direction_name, evidence_name, reason_name, scope_name, source_name};
use flowmap_lake::sample::{run_job, SampleInput};
use flowmap_lake::{EdgeRow, FlowRow, Lake, LakeConfig};
use serde_json::json;

#[derive(Parser)]
struct Args {
    /// A local directory or s3://bucket[/prefix].
    #[arg(long)]
    lake: String,
    /// S3 endpoint (moto, MinIO, ...).
    #[arg(long)]
    endpoint: Option<String>,
    /// Dataflow time of the first message, ns since the epoch (default: `--messages` steps
    /// before now, rounded down to a minute, so the data ends about now).
    #[arg(long)]
    base_ns: Option<u64>,
    #[arg(long, default_value_t = 3_000)]
    messages: u64,
    #[arg(long, default_value_t = 4)]
    rows_per_message: u32,
    /// Dataflow time between messages.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    step: Duration,
    /// Steps one message's rows span.
    #[arg(long, default_value_t = 45)]
    spread: u32,
    /// Cell length (the time bound).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    cell: Duration,
    /// Rows per data file (the size bound).
    #[arg(long, default_value_t = 500)]
    max_rows: usize,
    /// The commit file (default: `<lake>.commit` beside a local lake; required for S3).
    #[arg(long)]
    commit: Option<PathBuf>,
    /// Write every row of the input here as JSON lines, first.
    #[arg(long)]
    expected: Option<PathBuf>,
    /// Print `files N` as data files are written.
    #[arg(long)]
    progress: bool,
}

fn main() {
    if let Err(e) = run(Args::parse()) {
        eprintln!("write_sample: {e:#}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let step_ns = u64::try_from(args.step.as_nanos()).context("--step too long")?;
    let base_ns = match args.base_ns {
        Some(b) => b,
        None => {
            let now = u64::try_from(SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos())?;
            let minute = 60_000_000_000;
            (now - args.messages * step_ns) / minute * minute
        }
    };
    let input = SampleInput {
        base_ns,
        messages: args.messages,
        rows_per_message: args.rows_per_message,
        step_ns,
        spread: args.spread,
    };
    if let Some(path) = &args.expected {
        write_expected(path, &input).with_context(|| format!("writing {}", path.display()))?;
    }
    let mut config = LakeConfig::at(&args.lake);
    config.endpoint = args.endpoint.clone();
    config.cell = args.cell;
    config.max_rows_per_file = args.max_rows;
    let settings = config.validate()?;
    let commit = match (&args.commit, args.lake.starts_with("s3://")) {
        (Some(c), _) => c.clone(),
        (None, false) => PathBuf::from(format!("{}.commit", args.lake.trim_end_matches('/'))),
        (None, true) => anyhow::bail!("--commit FILE is needed for an s3:// lake"),
    };
    let lake = Lake::open(&settings)?;
    let started = std::time::Instant::now();
    let mut last = 0;
    let mut stdout = std::io::stdout();
    let run = run_job(&lake, &input, 0, 1, &commit, |p| {
        if args.progress && p.files != last {
            last = p.files;
            // A closed stdout must not stop the writer.
            let _ = writeln!(stdout, "files {}", p.files).and_then(|_| stdout.flush());
        }
    })?;
    let elapsed = started.elapsed().as_secs_f64();
    let rows = run.flow_rows + run.edge_rows;
    let summary = json!({
        "base_ns": base_ns,
        "elapsed_s": elapsed,
        "rows_per_s": if elapsed > 0.0 { rows as f64 / elapsed } else { 0.0 },
        "resumed_at": run.resumed_at,
        "flow_rows": run.flow_rows,
        "edge_rows": run.edge_rows,
        "flows": run.flows,
        "edges": run.edges,
    });
    println!("{summary}");
    Ok(())
}

fn write_expected(path: &std::path::Path, input: &SampleInput) -> anyhow::Result<()> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    for i in 0..input.messages {
        for (_, f) in input.flows(i) {
            writeln!(out, "{}", flow_json(&f))?;
        }
        for (_, e) in input.edges(i) {
            writeln!(out, "{}", edge_json(&e))?;
        }
    }
    out.flush()?;
    Ok(())
}

fn flow_json(f: &FlowRow) -> serde_json::Value {
    json!({
        "table": "flows",
        "flow_id": f.flow_id,
        "exporter": f.exporter,
        "incarnation": f.incarnation,
        "local_ip": f.local_ip.to_string(),
        "local_port": f.local_port,
        "remote_ip": f.remote_ip.to_string(),
        "remote_port": f.remote_port,
        "direction": direction_name(f.direction),
        "start_ns": f.start_ns,
        "end_ns": f.end_ns,
        "open": f.open,
        "start_unobserved": f.start_unobserved,
        "connect_error": f.connect_error,
        "bytes_sent": f.bytes_sent,
        "bytes_received": f.bytes_received,
        "segments_sent": f.segments_sent,
        "segments_received": f.segments_received,
        "retransmits": f.retransmits,
        "srtt_us": f.srtt_us,
        "local_workload": f.local_workload,
        "local_scope": scope_name(f.local_scope),
        "local_source": source_name(f.local_source),
        "remote_workload": f.remote_workload,
        "evidence": f.evidence.map(evidence_name),
        "reason": f.reason.map(reason_name),
        "counted": f.counted,
        "verification": f.verification.name(),
    })
}

fn edge_json(e: &EdgeRow) -> serde_json::Value {
    json!({
        "table": "edges",
        "bucket_start": e.bucket_start_ns,
        "bucket_s": e.bucket_s,
        "client": e.client,
        "server": e.server,
        "server_port": e.server_port,
        "protocol": e.protocol,
        "emitted_at": e.emitted_at_ns,
        "connections": e.connections,
        "bytes_client_to_server": e.bytes_client_to_server,
        "bytes_server_to_client": e.bytes_server_to_client,
        "segments": e.segments,
        "retransmits": e.retransmits,
        "failed_connects": e.failed_connects,
        "verified": e.verified,
        "disagreements": e.disagreements,
        "one_sided": e.one_sided,
        "rtt_p50_us": e.rtt_p50_us,
        "rtt_p90_us": e.rtt_p90_us,
        "rtt_p99_us": e.rtt_p99_us,
        "rtt_sketch": e.rtt_sketch.as_ref().map(|b| b.iter().map(|x| format!("{x:02x}")).collect::<String>()),
    })
}
