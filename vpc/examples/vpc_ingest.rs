//! A standalone ingester with a JSON-lines file sink: the library's entry points end to end, for
//! the tests (a real process to kill and restart) and for trying it by hand.
//!
//! ```sh
//! E=$(scripts/objectstore start | tail -1)
//! AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test \
//!   cargo run -p flowmap-vpc --example vpc_ingest -- --config my-vpc.toml --out /tmp/records.jsonl --until-idle 5s
//! ```
//!
//! The sink ([`flowmap_vpc::jsonl::JsonLinesSink`]) appends one JSON line per record and per
//! dead letter to `--out`; a mouthful counts as delivered when its seal has been written and the
//! file synced. `--slow-ms` sleeps after every batch (to make a run
//! long enough to kill in the middle of a mouthful). The summary goes to stderr, and with
//! `--json` as the last line of stdout.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use flowmap_vpc::backfill::BackfillRange;
use flowmap_vpc::config::Settings;
use flowmap_vpc::ingest::{run_backfill, run_queue, RunOptions, Stop};
use flowmap_vpc::jsonl::JsonLinesSink;

#[derive(Parser)]
struct Args {
    /// Settings (see configs/vpc.toml).
    #[arg(long)]
    config: PathBuf,
    /// The JSON-lines output.
    #[arg(long)]
    out: PathBuf,
    /// Stop after this long without messages (queue mode).
    #[arg(long, value_parser = humantime::parse_duration)]
    until_idle: Option<Duration>,
    /// Backfill this bucket instead of reading the queue.
    #[arg(long)]
    backfill_bucket: Option<String>,
    /// Backfill prefix.
    #[arg(long, default_value = "")]
    prefix: String,
    /// Backfill from (RFC 3339).
    #[arg(long, value_parser = humantime::parse_rfc3339_weak)]
    from: Option<std::time::SystemTime>,
    /// Backfill to (RFC 3339, exclusive).
    #[arg(long, value_parser = humantime::parse_rfc3339_weak)]
    to: Option<std::time::SystemTime>,
    /// Sleep this many milliseconds after every batch.
    #[arg(long, default_value_t = 0)]
    slow_ms: u64,
    /// Print the summary as JSON as the last line of stdout.
    #[arg(long)]
    json: bool,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_writer(std::io::stderr).with_env_filter("warn").init();
    let args = Args::parse();
    let settings = Settings::load(&args.config)?;
    let sink = JsonLinesSink::append(&args.out, Duration::from_millis(args.slow_ms))
        .with_context(|| args.out.display().to_string())?;
    let options = RunOptions { until_idle: args.until_idle, progress: true, ..RunOptions::default() };
    let (summary, _sink) = match args.backfill_bucket {
        Some(bucket) => {
            let range = BackfillRange {
                bucket,
                prefix: args.prefix,
                from: args.from.unwrap_or(std::time::UNIX_EPOCH),
                to: args.to.unwrap_or_else(|| std::time::SystemTime::now() + Duration::from_secs(86_400)),
            };
            run_backfill(&settings, range, sink, Stop::new(), options)?
        }
        None => run_queue(&settings, sink, Stop::new(), options)?,
    };
    eprintln!("{}", summary.render());
    if args.json {
        println!("{}", summary.to_json());
    }
    Ok(())
}
