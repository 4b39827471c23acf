//! Reading a whole topic: every partition from its start (or from a time) to the end it had
//! when reading began. For the scorer, the capture command and tests; not for the job, which
//! reads through [`super::KafkaFeed`].

use std::collections::HashSet;
use std::time::{Duration, Instant};

use flowmap_kafka::rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use flowmap_kafka::rdkafka::error::{KafkaError, RDKafkaErrorCode};
use flowmap_kafka::rdkafka::message::Headers;
use flowmap_kafka::rdkafka::{ClientContext, Message, Offset, TopicPartitionList};
use flowmap_kafka::ClientSettings;

/// Logs librdkafka's client errors as warnings, except the end of a partition, which is how
/// this reader knows it is done (librdkafka's default context logged it as an error at every
/// normal end; found by a fresh user).
struct Quiet;

impl ClientContext for Quiet {
    fn error(&self, error: KafkaError, reason: &str) {
        if matches!(error, KafkaError::PartitionEOF(_) | KafkaError::Global(RDKafkaErrorCode::PartitionEOF)) {
            return;
        }
        tracing::warn!(%error, reason, "kafka consumer error");
    }
}

impl ConsumerContext for Quiet {}

/// One message as read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawMessage {
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Timestamp, ms since the epoch (-1 when absent).
    pub timestamp_ms: i64,
    /// Key (empty when absent).
    pub key: Vec<u8>,
    /// Payload (empty when absent).
    pub payload: Vec<u8>,
    /// Headers, as (name, value).
    pub headers: Vec<(String, Vec<u8>)>,
}

/// Reads `topic` from the beginning to its end (where librdkafka first reports it), calling `each` per message in
/// partition order within each partition. `progress(read, total)` is called now and then.
/// Returns the number of messages read. Fails if the topic does not exist or the broker does
/// not answer within `timeout` (per request; a stalled read also fails after `timeout`).
pub fn read_topic(
    client: &ClientSettings,
    topic: &str,
    timeout: Duration,
    each: &mut dyn FnMut(RawMessage),
    progress: &mut dyn FnMut(u64, u64),
) -> Result<u64, String> {
    client.validate().map_err(|e| e.to_string())?;
    let partitions = flowmap_kafka::admin::partition_count(client, topic, timeout).map_err(|e| e.to_string())?;
    let mut cc = client.client_config();
    cc.set("group.id", "flowmap-reader").set("enable.auto.commit", "false").set("enable.partition.eof", "true");
    let consumer: BaseConsumer<Quiet> =
        cc.create_with_context(Quiet).map_err(|e| format!("cannot create a consumer: {e}"))?;
    // The end of each partition is where librdkafka reports "end of partition"; the high
    // watermark gives only an estimate of the total (a development broker reports it low).
    let mut open: HashSet<i32> = HashSet::new();
    let mut tpl = TopicPartitionList::new();
    let mut total = 0u64;
    for p in 0..partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, p, timeout)
            .map_err(|e| format!("cannot read the offsets of {topic}/{p}: {e}"))?;
        total += high.saturating_sub(low).max(0) as u64;
        open.insert(p);
        tpl.add_partition_offset(topic, p, Offset::Offset(low)).map_err(|e| e.to_string())?;
    }
    consumer.assign(&tpl).map_err(|e| format!("cannot assign {topic}: {e}"))?;
    let mut read = 0u64;
    let mut last_message = Instant::now();
    let mut last_progress = Instant::now();
    progress(0, total);
    while !open.is_empty() {
        match consumer.poll(Duration::from_millis(100)) {
            None => {
                if last_message.elapsed() > timeout {
                    return Err(format!("reading {topic} stalled for {timeout:?} with {read} messages read"));
                }
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                open.remove(&p);
            }
            Some(Err(e)) => tracing::warn!(error = %e, "kafka error while reading {topic}"),
            Some(Ok(m)) => {
                last_message = Instant::now();
                let p = m.partition();
                if !open.contains(&p) {
                    continue; // Written after this read reached the partition's end.
                }
                read += 1;
                let headers = m
                    .headers()
                    .map(|h| h.iter().map(|h| (h.key.to_string(), h.value.unwrap_or(&[]).to_vec())).collect())
                    .unwrap_or_default();
                each(RawMessage {
                    partition: p,
                    offset: m.offset(),
                    timestamp_ms: m.timestamp().to_millis().unwrap_or(-1),
                    key: m.key().unwrap_or(&[]).to_vec(),
                    payload: m.payload().unwrap_or(&[]).to_vec(),
                    headers,
                });
                if last_progress.elapsed() >= Duration::from_millis(500) {
                    last_progress = Instant::now();
                    progress(read, total.max(read));
                }
            }
        }
    }
    progress(read, read);
    Ok(read)
}
