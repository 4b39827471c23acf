//! `flowmap capture` (Kafka topics to a directory) and `flowmap replay` (the job over a
//! capture, or over Kafka topics up to their current end, as fast as the machine allows).

use std::collections::HashMap;
use std::io::{BufWriter, IsTerminal, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use flowmap_kafka::{admin, ClientSettings};
use serde::Serialize;

use super::kafka::BROKER_TIMEOUT;
use super::outputs::{lake_line, Destinations, LakeArgs};
use super::TimelyArgs;
use crate::capture::{partition_path, CapturedTopic, Manifest, PartitionWriter, ReplayFeed, FORMAT};
use crate::feed::{FeedError, Startup};
use crate::kafka::reader::read_topic;
use crate::kafka::{number_lanes, KafkaFeedConfig};
use crate::output::OutputRecord;
use crate::run::{run, OutputMode, RunOptions};

/// Arguments of `flowmap capture`.
#[derive(Debug, Args)]
pub struct CaptureArgs {
    /// Bootstrap brokers.
    #[arg(long)]
    pub brokers: String,
    /// Topic to capture; repeat for several, in the order the job reads them (batches first,
    /// then IPAM events).
    #[arg(long = "topic", required = true)]
    pub topics: Vec<String>,
    /// Directory to write (created; must not hold a capture already).
    #[arg(long)]
    pub out: PathBuf,
    /// Only messages stamped at or after this time (RFC 3339, or ms since the epoch).
    #[arg(long, value_parser = parse_time_ms)]
    pub from: Option<i64>,
    /// Only messages stamped before this time (RFC 3339, or ms since the epoch).
    #[arg(long, value_parser = parse_time_ms)]
    pub to: Option<i64>,
}

/// Arguments of `flowmap replay`.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// A capture directory (from `flowmap capture`).
    #[arg(long, required_unless_present = "brokers", conflicts_with = "brokers")]
    pub from: Option<PathBuf>,
    /// Replay Kafka topics (up to their end at start-up) instead, from these brokers; also
    /// the brokers of `--output-topic`.
    #[arg(long)]
    pub brokers: Option<String>,
    /// With `--brokers`: the topics to replay, in the job's order.
    #[arg(long = "topic")]
    pub topics: Vec<String>,
    /// With `--brokers`: only messages stamped at or after this time (RFC 3339, or ms).
    #[arg(long, value_parser = parse_time_ms, requires = "brokers")]
    pub since: Option<i64>,
    /// With `--brokers`: only messages stamped before this time (RFC 3339, or ms).
    #[arg(long, value_parser = parse_time_ms, requires = "brokers")]
    pub until: Option<i64>,
    /// Write attributed flows here (JSON lines, sorted by flow id: byte-identical across replays).
    #[arg(long, required_unless_present_any = ["output_topic", "lake", "lake_config"])]
    pub out: Option<PathBuf>,
    /// Or produce them to this topic (needs `--brokers`).
    #[arg(long, requires = "brokers", conflicts_with = "out")]
    pub output_topic: Option<String>,
    /// With `--output-topic`: produce dependency edges (`flowmap.v1.Edge`) to this topic.
    #[arg(long, requires = "output_topic")]
    pub edges_topic: Option<String>,
    /// With `--output-topic`: produce change events (`flowmap.v1.Event`: new dependencies,
    /// policy violations, disagreements) to this topic.
    #[arg(long, requires = "output_topic")]
    pub change_events_topic: Option<String>,
    /// The flow lake and the dependency policy (flows and edges also go to the lake).
    #[command(flatten)]
    pub outputs: LakeArgs,
    /// Job settings (TOML).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Print one JSON summary object as the last line of stdout.
    #[arg(long)]
    pub json: bool,
    /// timely's cluster flags.
    #[command(flatten)]
    pub timely: TimelyArgs,
}

/// A time as RFC 3339 or ms since the epoch.
fn parse_time_ms(s: &str) -> Result<i64, String> {
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(ms);
    }
    let t =
        humantime::parse_rfc3339_weak(s).map_err(|e| format!("{s:?}: not ms since the epoch nor RFC 3339 ({e})"))?;
    let d = t.duration_since(std::time::UNIX_EPOCH).map_err(|e| e.to_string())?;
    Ok(d.as_millis() as i64)
}

/// Prints `label: read / total` on a terminal every quarter second until dropped.
struct Progress {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Progress {
    fn start(label: &'static str, read: Arc<AtomicU64>, total: u64) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::io::stderr().is_terminal().then(|| {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let n = read.load(Ordering::Relaxed);
                    let pct = if total > 0 { 100.0 * n as f64 / total as f64 } else { 0.0 };
                    eprint!("\r{label}: {n} / {total} messages ({pct:.0}%)   ");
                    std::thread::sleep(Duration::from_millis(250));
                }
                eprintln!();
            })
        });
        Progress { stop, thread }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `flowmap capture`.
pub fn capture(args: CaptureArgs) -> Result<()> {
    let client = ClientSettings::new(&args.brokers);
    client.validate()?;
    if args.out.join("manifest.json").exists() {
        bail!("{} already holds a capture; choose another directory", args.out.display());
    }
    std::fs::create_dir_all(&args.out).with_context(|| format!("cannot create {}", args.out.display()))?;
    let in_range = |ts: i64| args.from.is_none_or(|f| ts >= f) && args.to.is_none_or(|t| ts < t);
    let mut manifest = Manifest { format: FORMAT.to_string(), topics: Vec::new(), from_ms: args.from, to_ms: args.to };
    for topic in &args.topics {
        let partitions = admin::partition_count(&client, topic, BROKER_TIMEOUT)?;
        let mut writers: HashMap<i32, PartitionWriter> = HashMap::new();
        let mut captured = 0u64;
        let mut failure: Option<anyhow::Error> = None;
        let read = Arc::new(AtomicU64::new(0));
        let total = Arc::new(AtomicU64::new(0));
        let progress = {
            let (read, total) = (Arc::clone(&read), Arc::clone(&total));
            move |n: u64, t: u64| {
                read.store(n, Ordering::Relaxed);
                total.store(t, Ordering::Relaxed);
                if std::io::stderr().is_terminal() {
                    eprint!("\rcapture {topic}: {n} / {t} messages   ");
                }
            }
        };
        let mut progress = progress;
        read_topic(
            &client,
            topic,
            BROKER_TIMEOUT,
            &mut |m| {
                if failure.is_some() || !in_range(m.timestamp_ms) {
                    return;
                }
                let writer = match writers.entry(m.partition) {
                    std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                    std::collections::hash_map::Entry::Vacant(e) => {
                        match PartitionWriter::create(partition_path(&args.out, topic, m.partition)) {
                            Ok(w) => e.insert(w),
                            Err(err) => {
                                failure = Some(err.into());
                                return;
                            }
                        }
                    }
                };
                let c = crate::capture::Captured {
                    offset: m.offset,
                    timestamp_ms: m.timestamp_ms,
                    key: m.key,
                    payload: m.payload,
                };
                match writer.write(&c) {
                    Ok(()) => captured += 1,
                    Err(err) => failure = Some(err.into()),
                }
            },
            &mut progress,
        )
        .map_err(anyhow::Error::msg)?;
        if std::io::stderr().is_terminal() {
            eprintln!();
        }
        if let Some(e) = failure {
            return Err(e);
        }
        for (_, w) in writers {
            w.finish()?;
        }
        eprintln!("capture: {captured} messages of '{topic}' ({partitions} partitions)");
        manifest.topics.push(CapturedTopic { name: topic.clone(), partitions, messages: captured });
    }
    manifest.save(&args.out)?;
    eprintln!("capture: {} messages in {}", manifest.messages(), args.out.display());
    Ok(())
}

/// What a replay did.
#[derive(Debug, Serialize)]
struct ReplaySummary {
    messages: u64,
    output: u64,
    attributed: u64,
    ingest: crate::admission::IngestStats,
    counts: crate::run::Counts,
    seconds: f64,
    flows_per_s: f64,
}

/// `flowmap replay`.
pub fn replay(args: ReplayArgs) -> Result<()> {
    let job = super::job_config(args.config.as_ref())?;
    let timely = if args.out.is_some() { args.timely.single_process_config()? } else { args.timely.config()? };
    let read = Arc::new(AtomicU64::new(0));
    let totals = crate::lake::LakeTotals::default();
    let mut destinations =
        Destinations { kafka: None, lake: args.outputs.open()?.map(|l| (l, totals.clone())), map: None };
    if let (Some(topic), Some(brokers)) = (&args.output_topic, &args.brokers) {
        let client = ClientSettings::new(brokers);
        let mut topics = vec![(topic.as_str(), 4)];
        topics.extend(args.edges_topic.iter().chain(&args.change_events_topic).map(|t| (t.as_str(), 4)));
        admin::ensure_topics(&client, &topics, BROKER_TIMEOUT)?;
        let producer = flowmap_kafka::Producer::new(&client, &flowmap_kafka::ProducerSettings::default())?;
        destinations.kafka =
            Some((producer, (Some(topic.clone()), args.edges_topic.clone(), args.change_events_topic.clone())));
    } else if args.output_topic.is_some() {
        bail!("--output-topic needs --brokers");
    }
    let edges = destinations.lake.is_some() || args.edges_topic.is_some() || args.change_events_topic.is_some();
    let with_lake = destinations.lake.is_some();
    let mode = match (&args.out, destinations.any()) {
        (Some(_), false) => OutputMode::Collect,
        (Some(_), true) => OutputMode::CollectAnd(destinations.factory()),
        (None, true) => OutputMode::Sink(destinations.factory()),
        (None, false) => bail!("give --out FILE, --lake DIR, or --brokers with --output-topic"),
    };
    let options = RunOptions {
        edges,
        policy: args.outputs.policy()?,
        sample_every: Duration::from_secs(1),
        ..RunOptions::new(mode)
    };
    let (report, total) = match (&args.from, &args.brokers) {
        (Some(dir), _) => {
            let manifest = Manifest::load(dir)?;
            let total = manifest.messages();
            let _progress = Progress::start("replay", Arc::clone(&read), total);
            let (dir, counter) = (dir.clone(), Arc::clone(&read));
            let report = run(
                timely,
                job,
                move |index, peers| {
                    Startup::from(
                        ReplayFeed::open(&dir, &manifest, index, peers, Arc::clone(&counter)).map_err(FeedError::from),
                    )
                },
                options,
            )?;
            (report, total)
        }
        (None, Some(brokers)) => {
            if args.topics.is_empty() {
                bail!("--brokers needs at least one --topic to replay");
            }
            let client = ClientSettings::new(brokers);
            let mut topics = Vec::new();
            for t in &args.topics {
                topics.push((t.clone(), admin::partition_count(&client, t, BROKER_TIMEOUT)?));
            }
            let feed = KafkaFeedConfig {
                client: client.clone(),
                group: None,
                lanes: number_lanes(&topics),
                dead_letter_topic: None,
                until_idle: None,
                bounded: true,
                live: false,
                rebuild_window: job.rebuild_window(),
                timeout: BROKER_TIMEOUT,
                time_range: (args.since.is_some() || args.until.is_some())
                    .then(|| (args.since.unwrap_or(i64::MIN), args.until.unwrap_or(i64::MAX))),
                lag_metrics: false,
            };
            let counters = Arc::new(crate::kafka::FeedCounters::default());
            let c = Arc::clone(&counters);
            let report = run(
                timely,
                job,
                move |index, peers| {
                    Startup::from(crate::kafka::KafkaFeed::new(feed.clone(), index, peers, Arc::clone(&c)))
                },
                options,
            )?;
            read.store(counters.messages.load(Ordering::Relaxed), Ordering::Relaxed);
            let n = read.load(Ordering::Relaxed);
            (report, n)
        }
        _ => bail!("give --from DIR, or --brokers with --topic"),
    };
    if let Some(path) = &args.out {
        let mut lines: Vec<(u64, String)> = Vec::with_capacity(report.flows.len());
        for f in &report.flows {
            let r = OutputRecord::from(f);
            lines.push((r.flow_id, serde_json::to_string(&r)?));
        }
        lines.sort_unstable();
        let file = std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
        let mut out = BufWriter::new(file);
        for (_, line) in &lines {
            out.write_all(line.as_bytes())?;
            out.write_all(b"\n")?;
        }
        out.flush()?;
    }
    let seconds = report.elapsed.as_secs_f64();
    let summary = ReplaySummary {
        messages: total,
        output: report.output,
        attributed: report.attributed,
        ingest: report.ingest.clone(),
        counts: report.counts.clone(),
        seconds,
        flows_per_s: if seconds > 0.0 { report.output as f64 / seconds } else { 0.0 },
    };
    eprintln!(
        "replay: {} flows ({} attributed) from {} messages in {:.2}s ({:.0} flows/s)",
        summary.output, summary.attributed, summary.messages, summary.seconds, summary.flows_per_s
    );
    if edges {
        eprintln!("replay: {} edge rows, {} change events", report.counts.edges, report.counts.events);
    }
    if with_lake {
        eprintln!("replay: {}", lake_line(&totals));
    }
    if args.json {
        println!("{}", serde_json::to_string(&summary)?);
    }
    Ok(())
}
