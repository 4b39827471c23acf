//! [`KafkaFeed`]: one worker's share of the input partitions, as a [`Feed`].
//!
//! Start-up: the worker's lanes are assigned explicitly (lane `k` to worker `k % peers`; no
//! rebalancing, so a lane never changes hands mid-run). Each starts at its *rebuild offset*
//! when the consumer group has one (see [`super::commit`]): messages from there up to the
//! committed offset are re-read only for their ownership evidence. Lanes with unread input hold
//! the frontier (`settling`) until their first message, or the end of the partition, arrives.
//! (One consumer per topic: librdkafka reports a partition's end by partition number only.)
//!
//! Running: messages are polled without blocking; each one's outcome decides its commit
//! bookkeeping, and refused messages (wholly, or some of their records) go to the dead-letter
//! topic with the reason in a header. The runner reports the delivered frontier; the feed then
//! commits, per lane, up to the first message whose output is not yet delivered (and only when
//! every dead letter so far is acknowledged). With `until_idle`, the run ends once the *whole
//! input* has been quiet that long: every feed of the process shares one "last input" clock
//! (a message on any lane, or a consumer error, since a broker that cannot be reached is not
//! quiet input), and a feed ends only when that clock is old enough *and* every one of its
//! lanes has reached its end. At the end the feed checks each lane's end again against what it
//! read and committed, and fails the run, naming the lanes, if input was left unread. With
//! `bounded`, a feed ends once every lane reached the end it had at start-up.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use flowmap_kafka::rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use flowmap_kafka::rdkafka::error::{KafkaError, RDKafkaErrorCode};
use flowmap_kafka::rdkafka::{ClientContext, Message as _, Offset, Statistics, TopicPartitionList};
use flowmap_kafka::{ClientSettings, FullPolicy, Producer, ProducerSettings, Record, Ticket};
use flowmap_operators::Time;

use super::commit::OffsetTracker;
use super::lanes::{lanes_of, LaneId};
use crate::feed::{Feed, FeedError, FeedStatus, Lane, Message, Outcome};

/// How a Kafka feed reads.
#[derive(Clone, Debug)]
pub struct KafkaFeedConfig {
    /// Brokers and client options.
    pub client: ClientSettings,
    /// Consumer group for committed offsets (`None`: never commit, start at the beginning).
    pub group: Option<String>,
    /// Every lane of the job.
    pub lanes: Vec<LaneId>,
    /// Dead-letter topic for refused messages (`None`: refused messages are only counted).
    pub dead_letter_topic: Option<String>,
    /// End once no input arrived for this long.
    pub until_idle: Option<Duration>,
    /// End at the partition ends found at start-up (a replay of a range).
    pub bounded: bool,
    /// Wall-clock decisions (idle exporters) apply.
    pub live: bool,
    /// Event time re-read before the committed offsets after a restart, ns.
    pub rebuild_window: Time,
    /// How long start-up requests to the broker may take.
    pub timeout: Duration,
    /// Only messages stamped in `[from, to)` (ms since the epoch), for replaying a time range.
    pub time_range: Option<(i64, i64)>,
    /// Publish each partition's consumer lag as a metric, from librdkafka's statistics (every
    /// second; only worth it when metrics are served).
    pub lag_metrics: bool,
}

/// Counters shared by the feeds of one process.
#[derive(Debug, Default)]
pub struct FeedCounters {
    /// Messages read (excluding re-reads).
    pub messages: AtomicU64,
    /// Messages re-read to rebuild state.
    pub reread: AtomicU64,
    /// Messages sent to the dead-letter topic.
    pub dead_lettered: AtomicU64,
    /// Refused messages that could not be dead-lettered (no topic, or queue full): counted here.
    pub dead_letter_failed: AtomicU64,
    /// Errors reported by the consumer (broker away, ...).
    pub consumer_errors: AtomicU64,
    /// Offset commits made.
    pub commits: AtomicU64,
    /// The last time any feed of the process saw input or a consumer error (ms since the
    /// process's [`FeedCounters`] were made): the "whole input is quiet" clock of `until_idle`.
    last_activity_ms: AtomicU64,
    /// When these counters were made.
    born: std::sync::OnceLock<Instant>,
}

impl FeedCounters {
    fn born(&self) -> Instant {
        *self.born.get_or_init(Instant::now)
    }

    /// Notes input (or trouble) now, for every feed of the process.
    fn touch(&self) {
        let ms = self.born().elapsed().as_millis() as u64;
        self.last_activity_ms.fetch_max(ms, Ordering::Relaxed);
    }

    /// How long the whole input of the process has been quiet.
    fn quiet_for(&self) -> Duration {
        let now = self.born().elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_activity_ms.load(Ordering::Relaxed)))
    }
}

/// Logs librdkafka's client errors through `tracing`, sparsely.
struct Context {
    errors: Arc<FeedCounters>,
}

impl ClientContext for Context {
    fn error(&self, error: KafkaError, reason: &str) {
        // librdkafka also reports the end of a partition here; that is not an error.
        if matches!(error, KafkaError::PartitionEOF(_) | KafkaError::Global(RDKafkaErrorCode::PartitionEOF)) {
            return;
        }
        self.errors.touch();
        let n = self.errors.consumer_errors.fetch_add(1, Ordering::Relaxed) + 1;
        metrics::counter!("flowmap_consumer_errors_total").increment(1);
        if n.is_power_of_two() {
            tracing::warn!(%error, reason, total = n, "kafka consumer error");
        }
    }

    /// librdkafka's statistics (only when `statistics.interval.ms` is set: `lag_metrics`): each
    /// partition's lag, the partition's high watermark minus the next offset this job reads
    /// (`app_offset`), as `flowmap_consumer_lag_messages{topic,partition}`.
    fn stats(&self, statistics: Statistics) {
        for (topic, t) in &statistics.topics {
            for (&partition, p) in &t.partitions {
                // Partition -1 is librdkafka's internal "unassigned" partition; offsets are -1
                // until known.
                if partition < 0 || p.hi_offset < 0 || p.app_offset < 0 {
                    continue;
                }
                let lag = (p.hi_offset - p.app_offset).max(0);
                metrics::gauge!(
                    "flowmap_consumer_lag_messages",
                    "topic" => topic.clone(),
                    "partition" => partition.to_string()
                )
                .set(lag as f64);
            }
        }
    }
}

impl ConsumerContext for Context {}

struct LaneState {
    id: LaneId,
    /// Messages below this offset are re-read only to rebuild state.
    rebuild_until: i64,
    /// Has shown its first message, or had nothing to read at start-up.
    settled: bool,
    /// At the end of the partition: reached it, and nothing read since.
    at_end: bool,
    /// The offset after the last message read (the low watermark before any).
    next_offset: i64,
    offsets: OffsetTracker,
}

/// One consumer per input topic, so that "end of partition N" names one lane.
struct TopicConsumer {
    consumer: BaseConsumer<Context>,
    /// Lane index (into `KafkaFeed::lanes`) by partition.
    by_partition: Vec<Option<usize>>,
}

/// One worker's Kafka input.
pub struct KafkaFeed {
    consumers: Vec<TopicConsumer>,
    rebuild_group: Option<BaseConsumer>,
    lanes: Vec<LaneState>,
    config: KafkaFeedConfig,
    dead_letters: Option<(Producer, String, Arc<Ticket>)>,
    counters: Arc<FeedCounters>,
    ended: bool,
}

fn kafka_error(what: &str, brokers: &str) -> impl FnOnce(KafkaError) -> FeedError {
    let what = format!("{what} (brokers {brokers})");
    move |e| FeedError::Unavailable { what, detail: e.to_string() }
}

impl KafkaFeed {
    /// Connects worker `index` of `peers` to its lanes.
    pub fn new(
        config: KafkaFeedConfig,
        index: usize,
        peers: usize,
        counters: Arc<FeedCounters>,
    ) -> Result<Self, FeedError> {
        config.client.validate().map_err(|e| FeedError::Config(e.to_string()))?;
        let brokers = config.client.brokers.clone();
        let mine = lanes_of(&config.lanes, index, peers);
        let mut tpl = TopicPartitionList::new();
        for l in &mine {
            tpl.add_partition(&l.topic, l.partition);
        }
        let committed = |group: &str| -> Result<HashMap<(String, i32), i64>, FeedError> {
            let mut gc = config.client.client_config();
            gc.set("group.id", group).set("enable.auto.commit", "false");
            let c: BaseConsumer = gc.create().map_err(kafka_error("cannot create a Kafka consumer", &brokers))?;
            let list = c
                .committed_offsets(tpl.clone(), config.timeout)
                .map_err(kafka_error(&format!("cannot read the committed offsets of group '{group}'"), &brokers))?;
            Ok(list
                .elements()
                .iter()
                .filter_map(|e| match e.offset() {
                    Offset::Offset(o) => Some(((e.topic().to_string(), e.partition()), o)),
                    _ => None,
                })
                .collect())
        };
        let (main, rebuild, rebuild_group) = match (&config.group, mine.is_empty()) {
            (Some(group), false) => {
                let rebuild_name = format!("{group}.rebuild");
                let mut gc = config.client.client_config();
                gc.set("group.id", &rebuild_name).set("enable.auto.commit", "false");
                let rc: BaseConsumer = gc.create().map_err(kafka_error("cannot create a Kafka consumer", &brokers))?;
                (committed(group)?, committed(&rebuild_name)?, Some(rc))
            }
            _ => (HashMap::new(), HashMap::new(), None),
        };

        let mut lanes = Vec::with_capacity(mine.len());
        let mut consumers: Vec<TopicConsumer> = Vec::new();
        let mut topics: Vec<String> = Vec::new();
        let mut assignments: Vec<TopicPartitionList> = Vec::new();
        for l in mine {
            let t = match topics.iter().position(|t| *t == l.topic) {
                Some(t) => t,
                None => {
                    let mut cc = config.client.client_config();
                    cc.set("group.id", config.group.as_deref().unwrap_or("flowmap-reader"))
                        .set("enable.auto.commit", "false")
                        .set("enable.auto.offset.store", "false")
                        .set("auto.offset.reset", "earliest")
                        .set("enable.partition.eof", "true")
                        // Notice a restarted broker within a second (librdkafka's default
                        // backs off up to 10 s).
                        .set("reconnect.backoff.max.ms", "1000");
                    if config.lag_metrics {
                        cc.set("statistics.interval.ms", "1000");
                    }
                    let consumer: BaseConsumer<Context> = cc
                        .create_with_context(Context { errors: Arc::clone(&counters) })
                        .map_err(kafka_error("cannot create a Kafka consumer", &brokers))?;
                    consumers.push(TopicConsumer { consumer, by_partition: Vec::new() });
                    topics.push(l.topic.clone());
                    assignments.push(TopicPartitionList::new());
                    topics.len() - 1
                }
            };
            let key = (l.topic.clone(), l.partition);
            // (The high watermark is not used: a development broker was seen to report it low.)
            let (low, _) = consumers[t]
                .consumer
                .fetch_watermarks(&l.topic, l.partition, config.timeout)
                .map_err(kafka_error(&format!("cannot read the offsets of {}/{}", l.topic, l.partition), &brokers))?;
            let committed = main.get(&key).copied().filter(|&c| c >= low);
            let (start, rebuild_until) = match (committed, rebuild.get(&key).copied()) {
                (Some(c), Some(r)) if r >= low && r < c => (r, c),
                (Some(c), _) => (c, c),
                (None, _) => (low, low),
            };
            if let (Some(c), None) = (committed, rebuild.get(&key)) {
                if c > low {
                    tracing::warn!(topic = %l.topic, partition = l.partition, "no rebuild offset: ownership state starts empty");
                }
            }
            tracing::info!(topic = %l.topic, partition = l.partition, lane = l.lane, start, rebuild_until, "lane assigned");
            assignments[t]
                .add_partition_offset(&l.topic, l.partition, Offset::Offset(start))
                .map_err(kafka_error("cannot assign a partition", &brokers))?;
            let slot = usize::try_from(l.partition)
                .map_err(|_| FeedError::Config(format!("negative partition {}", l.partition)))?;
            let by_partition = &mut consumers[t].by_partition;
            if by_partition.len() <= slot {
                by_partition.resize(slot + 1, None);
            }
            by_partition[slot] = Some(lanes.len());
            lanes.push(LaneState {
                id: l,
                rebuild_until,
                settled: false,
                at_end: false,
                next_offset: start,
                offsets: OffsetTracker::new(config.rebuild_window),
            });
        }
        for (c, a) in consumers.iter().zip(&assignments) {
            c.consumer.assign(a).map_err(kafka_error("cannot assign partitions", &brokers))?;
        }

        let dead_letters = match &config.dead_letter_topic {
            Some(topic) => {
                let settings = ProducerSettings {
                    when_full: FullPolicy::Block { max_wait: Duration::from_secs(60) },
                    ..Default::default()
                };
                let producer = Producer::new(&config.client, &settings).map_err(|e| FeedError::Unavailable {
                    what: format!("cannot create the dead-letter producer (brokers {brokers})"),
                    detail: e.to_string(),
                })?;
                Some((producer, topic.clone(), Ticket::new()))
            }
            None => None,
        };
        Ok(KafkaFeed { consumers, rebuild_group, lanes, config, dead_letters, counters, ended: false })
    }

    /// Commits every lane as far as `frontier` allows (`None`: everything is delivered).
    fn commit(&mut self, frontier: Option<Time>, mode: CommitMode) -> Result<(), FeedError> {
        let Some(group) = self.rebuild_group.as_ref() else { return Ok(()) };
        if let Some((_, topic, ticket)) = &self.dead_letters {
            if ticket.failed() > 0 {
                return Err(FeedError::Commit(format!(
                    "{} dead letters to '{topic}' could not be delivered; not committing past them",
                    ticket.failed()
                )));
            }
            if ticket.outstanding() > 0 {
                return Ok(()); // Next time: dead letters first.
            }
        }
        let (mut main, mut rebuild) = (TopicPartitionList::new(), TopicPartitionList::new());
        for lane in &mut self.lanes {
            lane.offsets.advance(frontier);
            if let Some((commit, from)) = lane.offsets.take_commit() {
                let (t, p) = (&lane.id.topic, lane.id.partition);
                main.add_partition_offset(t, p, Offset::Offset(commit))
                    .map_err(|e| FeedError::Commit(format!("cannot commit {t}/{p}: {e}")))?;
                rebuild
                    .add_partition_offset(t, p, Offset::Offset(from))
                    .map_err(|e| FeedError::Commit(format!("cannot commit {t}/{p}: {e}")))?;
            }
        }
        if main.count() == 0 {
            return Ok(());
        }
        let brokers = &self.config.client.brokers;
        // The rebuild offsets first: a crash between the two commits leaves a rebuild offset
        // newer than it should be, which only costs rebuild coverage, never output.
        group.commit(&rebuild, mode).map_err(kafka_error("cannot commit rebuild offsets", brokers))?;
        // Any consumer of the group may commit any partition (the commit names them).
        if let Some(c) = self.consumers.first() {
            c.consumer.commit(&main, mode).map_err(kafka_error("cannot commit offsets", brokers))?;
        }
        self.counters.commits.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("flowmap_commits_total").increment(1);
        Ok(())
    }
}

fn wall_clock_ns() -> Time {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as Time).unwrap_or(0)
}

impl Feed for KafkaFeed {
    fn lanes(&self) -> Vec<Lane> {
        self.lanes.iter().map(|l| Lane { id: l.id.lane, roster: Vec::new() }).collect()
    }

    fn poll(&mut self, max: usize, deliver: &mut dyn FnMut(&Message<'_>) -> Outcome) -> FeedStatus {
        if self.ended {
            return FeedStatus::Done;
        }
        let mut n = 0;
        for t in 0..self.consumers.len() {
            while n < max {
                let message = match self.consumers[t].consumer.poll(Duration::ZERO) {
                    None => break,
                    Some(Err(KafkaError::PartitionEOF(p))) => {
                        let slot = usize::try_from(p).ok();
                        if let Some(&Some(i)) = slot.and_then(|s| self.consumers[t].by_partition.get(s)) {
                            self.lanes[i].settled = true;
                            self.lanes[i].at_end = true;
                        }
                        continue;
                    }
                    Some(Err(e)) => {
                        self.counters.touch();
                        let total = self.counters.consumer_errors.fetch_add(1, Ordering::Relaxed) + 1;
                        metrics::counter!("flowmap_consumer_errors_total").increment(1);
                        if total.is_power_of_two() {
                            tracing::warn!(error = %e, total, "kafka consumer error");
                        }
                        break;
                    }
                    Some(Ok(m)) => m,
                };
                n += 1;
                self.counters.touch();
                let slot = usize::try_from(message.partition()).ok();
                let Some(&Some(i)) = slot.and_then(|s| self.consumers[t].by_partition.get(s)) else { continue };
                let lane = &mut self.lanes[i];
                if self.config.bounded && lane.at_end {
                    continue; // Arrived after the end this replay reads to.
                }
                lane.at_end = false;
                lane.next_offset = message.offset() + 1;
                let offset = message.offset();
                lane.settled = true;
                if let Some((from, to)) = self.config.time_range {
                    let ts = message.timestamp().to_millis().unwrap_or(-1);
                    if ts < from || ts >= to {
                        continue;
                    }
                }
                let rebuild = offset < lane.rebuild_until;
                let key = message.key().map(|k| std::str::from_utf8(k).unwrap_or("<non-utf8 key>")).unwrap_or("");
                let payload = message.payload().unwrap_or(&[]);
                let arrival = match message.timestamp().to_millis() {
                    Some(ms) if ms > 0 => ms as Time * 1_000_000,
                    _ => wall_clock_ns(),
                };
                let outcome = deliver(&Message { lane: lane.id.lane, key, payload, arrival, rebuild });
                if rebuild {
                    self.counters.reread.fetch_add(1, Ordering::Relaxed);
                    if let Outcome::Used { until } | Outcome::Partial { until, .. } = outcome {
                        lane.offsets.reread(offset, until);
                    }
                    continue;
                }
                self.counters.messages.fetch_add(1, Ordering::Relaxed);
                let (until, reason) = match outcome {
                    Outcome::Used { until } => (until, None),
                    Outcome::Partial { until, reason } => (until, Some(reason)),
                    Outcome::Duplicate => (0, None),
                    Outcome::Rejected { reason } => (0, Some(reason.to_string())),
                };
                lane.offsets.read(offset, until);
                if let Some(reason) = reason {
                    let source = format!("{}/{}/{}", message.topic(), message.partition(), offset);
                    let sent = self.dead_letters.as_ref().is_some_and(|(producer, topic, ticket)| {
                        let record = Record {
                            topic,
                            key: message.key().unwrap_or(&[]),
                            payload,
                            timestamp_ms: message.timestamp().to_millis(),
                            headers: &[("flowmap.reason", reason.as_bytes()), ("flowmap.source", source.as_bytes())],
                        };
                        producer.send_tracked(&record, ticket).is_ok()
                    });
                    let counter = if sent { &self.counters.dead_lettered } else { &self.counters.dead_letter_failed };
                    let total = counter.fetch_add(1, Ordering::Relaxed) + 1;
                    let metric = if sent { "flowmap_dead_letters_total" } else { "flowmap_dead_letters_failed_total" };
                    metrics::counter!(metric).increment(1);
                    if total.is_power_of_two() {
                        tracing::warn!(%source, %reason, dead_lettered = sent, total, "refused input message");
                    }
                }
            }
        }
        if self.config.bounded && self.lanes.iter().all(|l| l.at_end) {
            self.ended = true;
            return FeedStatus::Done;
        }
        if n == 0 && !self.settling() {
            if let Some(idle) = self.config.until_idle {
                // The whole input quiet for the idle period, and nothing left in our lanes.
                if self.counters.quiet_for() >= idle && self.lanes.iter().all(|l| l.at_end) {
                    tracing::info!(idle = ?idle, "no input for the idle period: finishing");
                    self.ended = true;
                    return FeedStatus::Done;
                }
            }
        }
        if n == max {
            FeedStatus::Ready
        } else {
            FeedStatus::Pending
        }
    }

    fn settling(&self) -> bool {
        self.lanes.iter().any(|l| !l.settled)
    }

    fn live(&self) -> bool {
        self.config.live
    }

    fn delivered(&mut self, frontier: &[Time]) -> Result<(), FeedError> {
        self.commit(frontier.iter().copied().min(), CommitMode::Async)
    }

    fn finish(&mut self) -> Result<(), FeedError> {
        if let Some((producer, topic, _)) = &self.dead_letters {
            producer
                .flush(Duration::from_secs(60))
                .map_err(|e| FeedError::Commit(format!("dead letters to '{topic}': {e}")))?;
        }
        self.commit(None, CommitMode::Sync)?;
        if self.config.until_idle.is_some() {
            self.check_unread()?;
        }
        Ok(())
    }
}

impl KafkaFeed {
    /// Fails if a lane's end is past what this feed read: input arrived after the run decided
    /// it was over (or was never read). The development broker reports partition ends low at
    /// times, so this can miss unread input, but never invents it.
    fn check_unread(&self) -> Result<(), FeedError> {
        let mut unread = 0u64;
        let mut detail = Vec::new();
        for tc in &self.consumers {
            for &i in tc.by_partition.iter().flatten() {
                let lane = &self.lanes[i];
                let (topic, partition) = (&lane.id.topic, lane.id.partition);
                let Ok((_, high)) = tc.consumer.fetch_watermarks(topic, partition, self.config.timeout) else {
                    continue;
                };
                if high > lane.next_offset {
                    let n = (high - lane.next_offset) as u64;
                    unread += n;
                    detail.push(format!("{topic}/{partition}: {n}"));
                }
            }
        }
        if unread > 0 {
            return Err(FeedError::Unread { unread, detail: detail.join(", ") });
        }
        Ok(())
    }
}
