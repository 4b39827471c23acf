//! `flowmap simulate`, `flowmap attribute` and `flowmap score`: the demo's three stages, run
//! apart over files.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use flowmap_kafka::{ClientSettings, Producer, ProducerSettings, Record};
use flowmap_sim::{Delivery, IPAM_FEED};

use super::TimelyArgs;
use crate::output::OutputRecord;
use crate::run::{OutputMode, RunOptions};

/// Arguments of `flowmap simulate`.
#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// `steady`, `adversarial`, or a scenario TOML file.
    #[arg(long, default_value = "adversarial")]
    pub scenario: String,
    /// Override the scenario's seed.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Directory for `deliveries.fmd`, `truth.jsonl` and `roster.txt`.
    #[arg(long, required_unless_present = "brokers")]
    pub out: Option<PathBuf>,
    /// Publish the batches to Kafka at these brokers (HOST:PORT), keyed by exporter id.
    #[arg(long, requires_all = ["topic", "truth"])]
    pub brokers: Option<String>,
    /// Topic for the exporter batches (created if missing).
    #[arg(long)]
    pub topic: Option<String>,
    /// Topic for the IPAM feed's batches (default: the same topic).
    #[arg(long)]
    pub events_topic: Option<String>,
    /// Where to write the ground truth (JSON lines) when publishing.
    #[arg(long)]
    pub truth: Option<PathBuf>,
    /// Partitions of the topic when it is created.
    #[arg(long, default_value_t = 4)]
    pub partitions: i32,
    /// Publish at most this many batches per second (0: as fast as possible).
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Publish only from this delivery on (in arrival order), to publish a scenario in parts.
    #[arg(long, default_value_t = 0)]
    pub skip: usize,
    /// Publish at most this many deliveries.
    #[arg(long)]
    pub limit: Option<usize>,
}

/// Arguments of `flowmap attribute`.
#[derive(Debug, Args)]
pub struct AttributeArgs {
    /// A directory written by `flowmap simulate`.
    #[arg(long)]
    pub input: PathBuf,
    /// Output file (JSON lines); stdout if absent.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Job settings (TOML).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Cloud flow logs (AWS VPC Flow Logs files: text, gzip or Parquet, in this directory and
    /// below) whose rows to attribute, both ends, from the same evidence as the flows.
    #[arg(long, requires = "vpc_out")]
    pub vpc_flow_logs: Option<PathBuf>,
    /// Where to write the attributed flow log rows (JSON lines, one per row, in record id
    /// order).
    #[arg(long, requires = "vpc_flow_logs")]
    pub vpc_out: Option<PathBuf>,
    /// Write the batches refused in whole or in part (corrupt records, bad addresses) to this
    /// delivery log, for `flowmap score --dead-letters` (the file counterpart of the Kafka job's
    /// dead-letter topic).
    #[arg(long)]
    pub dead_letters: Option<PathBuf>,
    /// timely's cluster flags.
    #[command(flatten)]
    pub timely: TimelyArgs,
}

/// Arguments of `flowmap score`.
#[derive(Debug, Args)]
pub struct ScoreArgs {
    /// `truth.jsonl` written by `flowmap simulate`.
    #[arg(long)]
    pub truth: PathBuf,
    /// Attributed flows (JSON lines) written by `flowmap attribute` or `flowmap replay`.
    #[arg(long, required_unless_present = "brokers", conflicts_with = "brokers")]
    pub input: Option<PathBuf>,
    /// Read the attributed flows from Kafka at these brokers instead (with `--topic`).
    #[arg(long, requires = "topic")]
    pub brokers: Option<String>,
    /// The output topic to score.
    #[arg(long)]
    pub topic: Option<String>,
    /// The job's dead-letter topic (default: `<topic>.dlq`; read when it exists).
    #[arg(long)]
    pub dead_letter_topic: Option<String>,
    /// With `--input`: the dead letters `flowmap attribute --dead-letters` wrote (without them,
    /// refused records count as unaccounted).
    #[arg(long, requires = "input")]
    pub dead_letters: Option<PathBuf>,
    /// The delivery log, to run the baseline on (defaults to `deliveries.fmd` beside the
    /// truth; the baseline is skipped when there is none).
    #[arg(long)]
    pub deliveries: Option<PathBuf>,
    /// Print one JSON object as the last line of stdout.
    #[arg(long)]
    pub json: bool,
}

/// `flowmap simulate`.
pub fn simulate(args: SimulateArgs) -> Result<()> {
    let scenario = super::scenario(&args.scenario, args.seed)?;
    let sim = flowmap_sim::simulate(&scenario)?;
    if let Some(out) = &args.out {
        std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
        flowmap_sim::io::write_deliveries(&out.join("deliveries.fmd"), &sim.deliveries)?;
        flowmap_sim::io::write_truth(&out.join("truth.jsonl"), &sim.truth)?;
        std::fs::write(out.join("roster.txt"), sim.roster.join("\n") + "\n")?;
        eprintln!(
            "wrote {} deliveries and truth for {} flow records to {}",
            sim.deliveries.len(),
            sim.truth.len(),
            out.display()
        );
    }
    if let (Some(brokers), Some(topic), Some(truth)) = (&args.brokers, &args.topic, &args.truth) {
        flowmap_sim::io::write_truth(truth, &sim.truth)?;
        let client = flowmap_kafka::ClientSettings::new(brokers);
        let started = std::time::Instant::now();
        let from = args.skip.min(sim.deliveries.len());
        let to = args.limit.map_or(sim.deliveries.len(), |n| from.saturating_add(n).min(sim.deliveries.len()));
        let part = &sim.deliveries[from..to];
        let stats = publish(&client, part, topic, args.events_topic.as_deref(), args.partitions, args.rate)?;
        eprintln!(
            "published {} batches (deliveries {from}..{to} of {}; {} flow records in the scenario) to '{}' at {brokers} in {:.1}s; truth in {}",
            stats.delivered,
            sim.deliveries.len(),
            sim.truth.len(),
            topic,
            started.elapsed().as_secs_f64(),
            truth.display()
        );
    }
    Ok(())
}

/// `flowmap attribute`.
pub fn attribute(args: AttributeArgs) -> Result<()> {
    let job = super::job_config(args.config.as_ref())?;
    let timely = args.timely.single_process_config()?;
    let deliveries = Arc::new(flowmap_sim::io::read_deliveries(&args.input.join("deliveries.fmd"))?);
    let roster_path = args.input.join("roster.txt");
    let roster: Arc<Vec<String>> = Arc::new(
        std::fs::read_to_string(&roster_path)
            .with_context(|| format!("cannot read {}", roster_path.display()))?
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_string)
            .collect(),
    );
    let mut options = RunOptions::new(OutputMode::Collect);
    if let Some(dir) = &args.vpc_flow_logs {
        let rows = crate::vpc::VpcRows::load_dir(dir, &job)?;
        let s = &rows.stats;
        eprintln!(
            "flow logs: {} files, {} rows ({} NODATA, {} SKIPDATA), {} malformed lines, {} damaged files",
            s.files, s.rows, s.nodata, s.skipdata, s.malformed, s.damaged
        );
        for (file, line, why) in s.dead_letters.iter().take(10) {
            eprintln!("  dead letter: {file}:{line}: {why}");
        }
        options.vpc = Some(Arc::new(rows));
    }
    let dead = crate::memory::DeadLetters::default();
    let report =
        crate::memory::run_deliveries_with_dead_letters(timely, job, deliveries, roster, options, Arc::clone(&dead))?;
    if let Some(path) = &args.dead_letters {
        let mut dead = dead.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        // In input order (workers push as they go).
        dead.sort_by(|a, b| (a.arrival, &a.key, &a.payload).cmp(&(b.arrival, &b.key, &b.payload)));
        flowmap_sim::io::write_deliveries(path, &dead)?;
        eprintln!("dead letters: {} batches written to {}", dead.len(), path.display());
    }
    let mut records: Vec<OutputRecord> = report.flows.iter().map(OutputRecord::from).collect();
    records.sort_by_key(OutputRecord::key);
    let sink: Box<dyn Write> = match &args.out {
        Some(path) => Box::new(File::create(path).with_context(|| format!("cannot create {}", path.display()))?),
        None => Box::new(std::io::stdout().lock()),
    };
    let mut out = BufWriter::new(sink);
    for r in &records {
        serde_json::to_writer(&mut out, r)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    eprintln!("attributed {} flows in {:.2}s; ingest {:?}", report.output, report.elapsed.as_secs_f64(), report.ingest);
    if let Some(path) = &args.vpc_out {
        let mut rows = report.vpc.clone();
        rows.sort_by_key(|r| r.record_id);
        let file = File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
        let mut out = BufWriter::new(file);
        for r in &rows {
            serde_json::to_writer(&mut out, &crate::vpc::row_json(r))?;
            out.write_all(b"\n")?;
        }
        out.flush()?;
        let c = &report.counts.vpc;
        eprintln!(
            "flow log rows: {} written to {}; ends attributed {}, unattributed {:?}",
            c.rows,
            path.display(),
            c.ends_attributed,
            c.ends_unattributed
        );
    }
    Ok(())
}

/// `flowmap score`.
pub fn score(args: ScoreArgs) -> Result<()> {
    let truth = flowmap_sim::io::read_truth(&args.truth)?;
    let deliveries_path = args.deliveries.clone().unwrap_or_else(|| args.truth.with_file_name("deliveries.fmd"));
    let deliveries = if args.deliveries.is_some() || deliveries_path.exists() {
        flowmap_sim::io::read_deliveries(&deliveries_path)?
    } else {
        eprintln!("score: no delivery log at {}: baseline skipped", deliveries_path.display());
        Vec::new()
    };
    let mut verdicts = Vec::new();
    let mut dead_letters: Option<Vec<Vec<u8>>> = None;
    match (&args.input, &args.brokers, &args.topic) {
        (Some(input), _, _) => {
            let reader = BufReader::new(File::open(input).with_context(|| format!("cannot open {}", input.display()))?);
            for (n, line) in reader.lines().enumerate() {
                let line = line?;
                if line.trim().is_empty() {
                    continue;
                }
                let record: OutputRecord = serde_json::from_str(&line)
                    .with_context(|| format!("{}: line {} is not an output record", input.display(), n + 1))?;
                verdicts.push(super::verdict(&record));
            }
            if let Some(path) = &args.dead_letters {
                let dead = flowmap_sim::io::read_deliveries(path)?;
                dead_letters = Some(dead.into_iter().map(|d| d.payload).collect());
            }
        }
        (None, Some(brokers), Some(topic)) => {
            let client = flowmap_kafka::ClientSettings::new(brokers);
            let (records, unreadable) = super::kafka::read_output(&client, topic)?;
            if unreadable > 0 {
                anyhow::bail!("{unreadable} messages of '{topic}' are not attributed-flow records");
            }
            verdicts.extend(records.iter().map(super::verdict));
            let dlq = args.dead_letter_topic.clone().unwrap_or_else(|| format!("{topic}.dlq"));
            let mut payloads = Vec::new();
            match crate::kafka::reader::read_topic(
                &client,
                &dlq,
                super::kafka::BROKER_TIMEOUT,
                &mut |m| payloads.push(m.payload),
                &mut |_, _| {},
            ) {
                Ok(_) => dead_letters = Some(payloads),
                Err(e) => eprintln!("score: dead-letter topic '{dlq}' not read ({e}): dead letters not accounted"),
            }
        }
        _ => anyhow::bail!("give --input FILE, or --brokers ADDR --topic TOPIC"),
    }
    let mut score = flowmap_sim::score(&truth, &verdicts, &deliveries);
    if let Some(payloads) = &dead_letters {
        flowmap_sim::account_dead_letters(&mut score, &truth, &verdicts, payloads);
    }
    println!(
        "flows {}  attributed {}  unattributed {}  misattributed {}  missing {}  dead-lettered {}  unaccounted {}  baseline misattributed {}",
        score.flows,
        score.attributed,
        score.unattributed,
        score.misattributed,
        score.missing,
        score.dead_lettered,
        score.unaccounted,
        score.baseline_misattributed
    );
    if args.json {
        println!("{}", serde_json::to_string(&score)?);
    }
    Ok(())
}

/// Publishes a simulation's deliveries in arrival order: exporter batches to `topic`, the
/// IPAM feed to `events_topic` when given. `rate` limits messages per second (0: no limit).
pub fn publish(
    client: &ClientSettings,
    deliveries: &[Delivery],
    topic: &str,
    events_topic: Option<&str>,
    partitions: i32,
    rate: u64,
) -> Result<flowmap_kafka::ProducerStats> {
    let mut topics = vec![(topic, partitions)];
    if let Some(e) = events_topic {
        topics.push((e, 1));
    }
    flowmap_kafka::admin::ensure_topics(client, &topics, super::kafka::BROKER_TIMEOUT)?;
    let producer = Producer::new(client, &ProducerSettings::default())?;
    let started = Instant::now();
    for (i, d) in deliveries.iter().enumerate() {
        if rate > 0 {
            let due = Duration::from_secs_f64(i as f64 / rate as f64);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(wait);
            }
        }
        let to = match events_topic {
            Some(e) if d.key == IPAM_FEED => e,
            _ => topic,
        };
        let record = Record {
            topic: to,
            key: d.key.as_bytes(),
            payload: &d.payload,
            timestamp_ms: Some((d.arrival / 1_000_000) as i64),
            headers: &[],
        };
        producer.send(&record).with_context(|| format!("publishing delivery {i}"))?;
    }
    let stats = producer.flush(Duration::from_secs(300))?;
    if stats.failed > 0 || stats.dropped > 0 {
        bail!(
            "{} of {} batches were not delivered ({} failed, {} dropped): {}",
            stats.failed + stats.dropped,
            deliveries.len(),
            stats.failed,
            stats.dropped,
            producer.last_error().unwrap_or_default()
        );
    }
    Ok(stats)
}
