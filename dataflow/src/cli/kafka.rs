//! `flowmap collect` (the job on Kafka), publishing a simulation to Kafka, and reading the
//! output topic for the scorer.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use flowmap_kafka::{admin, ClientSettings, FullPolicy, Producer, ProducerSettings};
use serde::Serialize;

use super::outputs::{lake_line, Destinations, LakeArgs};
use super::TimelyArgs;
use crate::feed::Startup;
use crate::kafka::{number_lanes, FeedCounters, KafkaFeed, KafkaFeedConfig};
use crate::output::OutputRecord;
use crate::run::{run, OutputMode, RunOptions, RunReport};

/// How long start-up requests to the broker may take.
pub const BROKER_TIMEOUT: Duration = Duration::from_secs(15);

/// Arguments of `flowmap collect`.
#[derive(Debug, Args)]
pub struct CollectArgs {
    /// Bootstrap brokers, HOST:PORT[,HOST:PORT...].
    #[arg(long)]
    pub brokers: String,
    /// Topic of exporter batches.
    #[arg(long)]
    pub input_topic: String,
    /// Topic of IP assignment events (IPAM), if they are published apart.
    #[arg(long)]
    pub events_topic: Option<String>,
    /// Topic for attributed flows (created if missing).
    #[arg(long)]
    pub output_topic: String,
    /// Topic for dependency edges (`flowmap.v1.Edge`, created if missing); computing edges is
    /// on when this, `--change-events-topic` or `--lake` is given.
    #[arg(long)]
    pub edges_topic: Option<String>,
    /// Topic for change events (`flowmap.v1.Event`: new dependencies, policy violations,
    /// disagreements between the two ends; created if missing).
    #[arg(long)]
    pub change_events_topic: Option<String>,
    /// The flow lake and the dependency policy.
    #[command(flatten)]
    pub outputs: LakeArgs,
    /// Serve Prometheus metrics (the job's counters) at http://ADDR/metrics.
    #[arg(long, conflicts_with = "serve")]
    pub metrics: Option<std::net::SocketAddr>,
    /// Serve the dependency map of the job's own edges and events at this address while it
    /// runs (its `/metrics` are the job's metrics).
    #[arg(long)]
    pub serve: Option<std::net::SocketAddr>,
    /// The map's settings.
    #[command(flatten)]
    pub map: super::serve::MapArgs,
    /// Topic for refused input (created if missing). Default: `<output-topic>.dlq`.
    #[arg(long)]
    pub dead_letter_topic: Option<String>,
    /// Consumer group whose committed offsets the job resumes from.
    #[arg(long, default_value = "flowmap")]
    pub group: String,
    /// Partitions of the output and dead-letter topics when they are created.
    #[arg(long, default_value_t = 4)]
    pub partitions: i32,
    /// Stop once no input arrived for this long and everything is delivered and committed
    /// (for backfills and tests). Without it the job runs until killed.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub until_idle: Option<Duration>,
    /// Job settings (TOML, see configs/job.toml).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Print one JSON summary object as the last line of stdout.
    #[arg(long)]
    pub json: bool,
    /// timely's cluster flags.
    #[command(flatten)]
    pub timely: TimelyArgs,
}

/// What one process of `collect` did.
#[derive(Debug, Serialize)]
pub struct CollectSummary {
    /// Flows output (delivered) by this process's workers.
    pub output: u64,
    /// Of those, attributed.
    pub attributed: u64,
    /// Input messages read (excluding re-reads for rebuilding).
    pub messages: u64,
    /// Messages re-read after a restart to rebuild ownership state.
    pub reread: u64,
    /// Messages sent to the dead-letter topic.
    pub dead_lettered: u64,
    /// Refused messages that could not be dead-lettered (counted, never silent).
    pub dead_letter_failed: u64,
    /// Consumer errors seen (a broker away shows here).
    pub consumer_errors: u64,
    /// Offset commits.
    pub commits: u64,
    /// Ingest counters (batches, duplicates, lost, late, rejected, idle exporters).
    pub ingest: crate::admission::IngestStats,
    /// Output counts: two-sided checks (each connection once), edge rows, change events.
    pub counts: crate::run::Counts,
    /// Output producer counters.
    pub output_producer: flowmap_kafka::ProducerStats,
    /// Wall time, seconds.
    pub seconds: f64,
    /// Flows per second.
    pub flows_per_s: f64,
}

/// `flowmap collect`.
pub fn collect(args: CollectArgs) -> Result<()> {
    let job = super::job_config(args.config.as_ref())?;
    let timely = args.timely.config()?;
    let client = ClientSettings::new(&args.brokers);
    client.validate()?;
    let dlq = args.dead_letter_topic.clone().unwrap_or_else(|| format!("{}.dlq", args.output_topic));
    let mut inputs = vec![args.input_topic.clone()];
    inputs.extend(args.events_topic.clone());
    let mut topics = Vec::new();
    for t in &inputs {
        let n = admin::partition_count(&client, t, BROKER_TIMEOUT).with_context(|| {
            format!("input topic '{t}' (the producers create it; see `flowmap simulate --brokers`)")
        })?;
        topics.push((t.clone(), n));
    }
    let mut outputs = vec![(args.output_topic.as_str(), args.partitions), (dlq.as_str(), args.partitions)];
    outputs.extend(args.edges_topic.iter().chain(&args.change_events_topic).map(|t| (t.as_str(), args.partitions)));
    admin::ensure_topics(&client, &outputs, BROKER_TIMEOUT)?;
    if job.rebuild_window() < job.retention() {
        tracing::warn!(
            "rebuild_window is shorter than retention: flows right after a restart may be left unattributed"
        );
    }
    let feed = KafkaFeedConfig {
        client: client.clone(),
        group: Some(args.group.clone()),
        lanes: number_lanes(&topics),
        dead_letter_topic: Some(dlq),
        until_idle: args.until_idle,
        bounded: false,
        live: true,
        rebuild_window: job.rebuild_window(),
        timeout: BROKER_TIMEOUT,
        time_range: None,
        lag_metrics: args.metrics.is_some(),
    };
    eprintln!(
        "collect: {} lanes from {}, output to '{}', group '{}'{}",
        feed.lanes.len(),
        inputs.join(", "),
        args.output_topic,
        args.group,
        args.until_idle.map(|d| format!(", until idle for {d:?}")).unwrap_or_default()
    );
    let totals = crate::lake::LakeTotals::default();
    let lake = args.outputs.open()?;
    if let Some(lake) = &lake {
        eprintln!("collect: flows and edges also to the lake at {}", lake.location());
    }
    let topics = OutputTopics {
        flows: args.output_topic.clone(),
        edges: args.edges_topic.clone(),
        change_events: args.change_events_topic.clone(),
    };
    let with_lake = lake.is_some();
    let map = args.serve.map(|_| super::serve::memory_source());
    let server = match (args.serve, &map) {
        (Some(addr), Some(map)) => {
            let server = args.map.start(addr, Arc::clone(map) as Arc<dyn flowmap_serve::EdgeSource>)?;
            eprintln!("collect: the map is at {}", server.url());
            Some(server)
        }
        _ => None,
    };
    let extra = Extra { lake: lake.map(|l| (l, totals.clone())), policy: args.outputs.policy()?, map };
    if let Some(addr) = args.metrics {
        crate::metrics::serve(addr)?;
        eprintln!("collect: metrics at http://{addr}/metrics");
    }
    let (report, counters, producer) = run_on_kafka(timely, job, feed, &client, topics, extra)?;
    let summary = summarize(&report, &counters, &producer);
    eprintln!(
        "collect: output {} flows ({} attributed) from {} messages in {:.1}s ({:.0} flows/s); dead-lettered {}, \
         lost batches {}, late {}, duplicates {}, idle exporters {}, commits {}",
        summary.output,
        summary.attributed,
        summary.messages,
        summary.seconds,
        summary.flows_per_s,
        summary.dead_lettered,
        summary.ingest.lost_batches,
        summary.ingest.late_batches,
        summary.ingest.duplicate_batches,
        summary.ingest.idle_exporters,
        summary.commits
    );
    if report.counts.edges + report.counts.events > 0 {
        eprintln!("collect: {} edge rows, {} change events", report.counts.edges, report.counts.events);
    }
    if with_lake {
        eprintln!("collect: {}", lake_line(&totals));
    }
    if args.json {
        println!("{}", serde_json::to_string(&summary)?);
    }
    if let Some(server) = server {
        server.stop()?;
    }
    Ok(())
}

/// The topics a Kafka job writes.
#[derive(Debug, Clone)]
pub struct OutputTopics {
    /// Attributed flows.
    pub flows: String,
    /// Dependency edges, if wanted.
    pub edges: Option<String>,
    /// Change events, if wanted.
    pub change_events: Option<String>,
}

/// What a Kafka job adds to its topics: a lake, a policy.
#[derive(Clone, Default)]
pub struct Extra {
    /// The lake and its writers' counters.
    pub lake: Option<(flowmap_lake::Lake, crate::lake::LakeTotals)>,
    /// The dependency policy.
    pub policy: Option<crate::edges::Policy>,
    /// The map's in-memory source.
    pub map: Option<Arc<flowmap_serve::MemorySource>>,
}

/// Runs the job from Kafka lanes to the output topics (and the lake). Edges are computed when
/// an edges or change-events topic or a lake is given.
pub fn run_on_kafka(
    timely: timely::Config,
    job: crate::config::JobConfig,
    feed: KafkaFeedConfig,
    client: &ClientSettings,
    topics: OutputTopics,
    extra: Extra,
) -> Result<(RunReport, Arc<FeedCounters>, Producer)> {
    let counters = Arc::new(FeedCounters::default());
    // One output producer per process, shared by its workers (librdkafka is thread-safe).
    let settings =
        ProducerSettings { when_full: FullPolicy::Block { max_wait: Duration::from_secs(300) }, ..Default::default() };
    let producer = Producer::new(client, &settings)?;
    let edges = topics.edges.is_some() || topics.change_events.is_some() || extra.lake.is_some() || extra.map.is_some();
    let destinations = Destinations {
        kafka: Some((producer.clone(), (Some(topics.flows), topics.edges, topics.change_events))),
        lake: extra.lake,
        map: extra.map,
    };
    let feed_counters = Arc::clone(&counters);
    let make_feed =
        move |index, peers| Startup::from(KafkaFeed::new(feed.clone(), index, peers, Arc::clone(&feed_counters)));
    let options = RunOptions {
        edges,
        policy: extra.policy,
        sample_every: Duration::from_secs(1),
        ..RunOptions::new(OutputMode::Sink(destinations.factory()))
    };
    let report = run(timely, job, make_feed, options)?;
    Ok((report, counters, producer))
}

/// The summary of a Kafka run.
pub fn summarize(report: &RunReport, counters: &FeedCounters, producer: &Producer) -> CollectSummary {
    let seconds = report.elapsed.as_secs_f64();
    CollectSummary {
        output: report.output,
        attributed: report.attributed,
        messages: counters.messages.load(Ordering::Relaxed),
        reread: counters.reread.load(Ordering::Relaxed),
        dead_lettered: counters.dead_lettered.load(Ordering::Relaxed),
        dead_letter_failed: counters.dead_letter_failed.load(Ordering::Relaxed),
        consumer_errors: counters.consumer_errors.load(Ordering::Relaxed),
        commits: counters.commits.load(Ordering::Relaxed),
        ingest: report.ingest.clone(),
        counts: report.counts.clone(),
        output_producer: producer.stats(),
        seconds,
        flows_per_s: if seconds > 0.0 { report.output as f64 / seconds } else { 0.0 },
    }
}

/// Reads an output topic: the records, and how many messages could not be read as records.
pub fn read_output(client: &ClientSettings, topic: &str) -> Result<(Vec<OutputRecord>, u64)> {
    let mut records = Vec::new();
    let mut unreadable = 0u64;
    crate::kafka::reader::read_topic(
        client,
        topic,
        BROKER_TIMEOUT,
        &mut |m| match flowmap_schema::decode_attributed(&m.payload) {
            Ok(r) => records.push(OutputRecord::from(&r)),
            Err(_) => unreadable += 1,
        },
        &mut |_, _| {},
    )
    .map_err(anyhow::Error::msg)?;
    Ok((records, unreadable))
}
