//! A bounded, counted producer.
//!
//! librdkafka already keeps a bounded queue (`queue.buffering.max.*`), retries, and reports
//! each record's delivery. What this wrapper adds is the policy around it, so that no record is
//! ever dropped without a count:
//! - when the queue is full, a send waits for room (counted as `blocked`, up to the policy's
//!   `max_wait`) or is refused at once (counted as `dropped`), per [`FullPolicy`];
//! - every delivery report is counted (`delivered` or `failed`, with the last error kept);
//! - a caller that must know when *its* records are delivered (the job commits input offsets
//!   only after that) passes a [`Ticket`], which counts its own outstanding and failed records.
//!
//! The producer is idempotent with `acks=all`, so librdkafka's retries neither duplicate nor
//! reorder records of one partition; records are keyed by the caller (the exporter id, for
//! batches), so one key's records stay in order.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::config::FromClientConfigAndContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer as _, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Message};

use crate::config::{ClientSettings, ConfigError, FullPolicy, ProducerSettings};

/// A failure to create or flush a producer.
#[derive(Debug, thiserror::Error)]
pub enum ProducerError {
    /// The settings are invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// librdkafka refused the configuration.
    #[error("cannot create a Kafka producer for {brokers}")]
    Create {
        /// The bootstrap addresses.
        brokers: String,
        /// librdkafka's error.
        #[source]
        source: KafkaError,
    },
    /// Records were still undelivered when a flush gave up.
    #[error("{in_flight} records still undelivered after {waited:?} (is the broker at {brokers} up?)")]
    FlushTimeout {
        /// The bootstrap addresses.
        brokers: String,
        /// Records in flight.
        in_flight: u64,
        /// How long the flush waited.
        waited: Duration,
    },
}

/// A record that could not be queued.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SendError {
    /// The queue stayed full (broker away or too slow); the record was not sent and is counted
    /// in `dropped`.
    #[error("producer queue full: record to {topic} dropped (counted)")]
    QueueFull {
        /// Destination topic.
        topic: String,
    },
    /// librdkafka refused the record (too large, unknown topic, ...); counted in `refused`.
    #[error("record to {topic} refused: {reason}")]
    Refused {
        /// Destination topic.
        topic: String,
        /// librdkafka's reason.
        reason: String,
    },
}

/// Tracks a group of records: how many are still undelivered, and how many failed.
#[derive(Debug, Default)]
pub struct Ticket {
    outstanding: AtomicU64,
    failed: AtomicU64,
}

impl Ticket {
    /// A new, empty ticket.
    pub fn new() -> Arc<Self> {
        Arc::new(Ticket::default())
    }

    /// Records sent with this ticket and not yet reported.
    pub fn outstanding(&self) -> u64 {
        self.outstanding.load(Ordering::Acquire)
    }

    /// Records sent with this ticket whose delivery failed.
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Acquire)
    }
}

/// Counters of one producer (monotone).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ProducerStats {
    /// Records queued.
    pub sent: u64,
    /// Records the broker acknowledged.
    pub delivered: u64,
    /// Records whose delivery failed (after librdkafka's retries).
    pub failed: u64,
    /// Records refused because the queue stayed full.
    pub dropped: u64,
    /// Sends that had to wait for room in the queue.
    pub blocked: u64,
    /// Records librdkafka refused outright.
    pub refused: u64,
}

#[derive(Default)]
struct Counters {
    sent: AtomicU64,
    delivered: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
    blocked: AtomicU64,
    refused: AtomicU64,
    last_error: Mutex<Option<String>>,
}

/// The librdkafka context: counts delivery reports and settles tickets.
struct Context {
    counters: Arc<Counters>,
}

impl ClientContext for Context {
    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(%error, reason, "kafka producer error");
    }
}

impl ProducerContext for Context {
    type DeliveryOpaque = Arc<Ticket>;

    fn delivery(&self, result: &DeliveryResult<'_>, ticket: Arc<Ticket>) {
        match result {
            Ok(_) => {
                self.counters.delivered.fetch_add(1, Ordering::Relaxed);
            }
            Err((error, message)) => {
                let failed = self.counters.failed.fetch_add(1, Ordering::Relaxed) + 1;
                ticket.failed.fetch_add(1, Ordering::AcqRel);
                let text = format!("{error} (topic {})", message.topic());
                if failed.is_power_of_two() {
                    tracing::error!(error = %text, failed, "kafka delivery failed");
                }
                if let Ok(mut last) = self.counters.last_error.lock() {
                    *last = Some(text);
                }
            }
        }
        ticket.outstanding.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One record to send.
#[derive(Clone, Copy, Debug)]
pub struct Record<'a> {
    /// Destination topic.
    pub topic: &'a str,
    /// Key: decides the partition, and so the order guarantee.
    pub key: &'a [u8],
    /// Payload.
    pub payload: &'a [u8],
    /// Timestamp, ms since the epoch (`None`: the producer's clock).
    pub timestamp_ms: Option<i64>,
    /// Headers (name, value).
    pub headers: &'a [(&'a str, &'a [u8])],
}

/// The producer (cheap to clone; clones share the queue and the counters).
#[derive(Clone)]
pub struct Producer {
    inner: ThreadedProducer<Context>,
    counters: Arc<Counters>,
    policy: FullPolicy,
    brokers: String,
    untracked: Arc<Ticket>,
}

impl Producer {
    /// Connects (lazily: librdkafka connects in the background and retries forever).
    pub fn new(client: &ClientSettings, settings: &ProducerSettings) -> Result<Self, ProducerError> {
        client.validate()?;
        settings.validate()?;
        let mut config = client.client_config();
        settings.apply(&mut config);
        let counters = Arc::new(Counters::default());
        let context = Context { counters: Arc::clone(&counters) };
        let inner = ThreadedProducer::from_config_and_context(&config, context)
            .map_err(|source| ProducerError::Create { brokers: client.brokers.clone(), source })?;
        Ok(Producer {
            inner,
            counters,
            policy: settings.when_full,
            brokers: client.brokers.clone(),
            untracked: Ticket::new(),
        })
    }

    /// Queues a record; its delivery is counted in [`Producer::stats`].
    pub fn send(&self, record: &Record<'_>) -> Result<(), SendError> {
        self.send_tracked(record, &self.untracked)
    }

    /// Queues a record whose delivery settles `ticket`.
    pub fn send_tracked(&self, record: &Record<'_>, ticket: &Arc<Ticket>) -> Result<(), SendError> {
        let mut headers = None;
        if !record.headers.is_empty() {
            let mut h = OwnedHeaders::new_with_capacity(record.headers.len());
            for (key, value) in record.headers {
                h = h.insert(Header { key, value: Some(*value) });
            }
            headers = Some(h);
        }
        let mut base =
            BaseRecord::with_opaque_to(record.topic, Arc::clone(ticket)).key(record.key).payload(record.payload);
        base.timestamp = record.timestamp_ms;
        base.headers = headers;
        ticket.outstanding.fetch_add(1, Ordering::AcqRel);
        let started = Instant::now();
        let mut waited = false;
        loop {
            match self.inner.send(base) {
                Ok(()) => {
                    self.counters.sent.fetch_add(1, Ordering::Relaxed);
                    return Ok(());
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    let max_wait = match self.policy {
                        FullPolicy::Block { max_wait } => max_wait,
                        FullPolicy::Drop => Duration::ZERO,
                    };
                    if started.elapsed() >= max_wait {
                        ticket.outstanding.fetch_sub(1, Ordering::AcqRel);
                        let dropped = self.counters.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                        if dropped.is_power_of_two() {
                            tracing::warn!(topic = record.topic, dropped, "producer queue full: record dropped");
                        }
                        return Err(SendError::QueueFull { topic: record.topic.to_string() });
                    }
                    if !waited {
                        waited = true;
                        self.counters.blocked.fetch_add(1, Ordering::Relaxed);
                    }
                    base = back;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err((error, _)) => {
                    ticket.outstanding.fetch_sub(1, Ordering::AcqRel);
                    self.counters.refused.fetch_add(1, Ordering::Relaxed);
                    return Err(SendError::Refused { topic: record.topic.to_string(), reason: error.to_string() });
                }
            }
        }
    }

    /// Records queued and not yet reported.
    pub fn in_flight(&self) -> u64 {
        self.inner.in_flight_count().max(0) as u64
    }

    /// Waits until every queued record is reported, or `timeout` passes.
    pub fn flush(&self, timeout: Duration) -> Result<ProducerStats, ProducerError> {
        let started = Instant::now();
        // Flush in short steps: librdkafka's flush also serves delivery callbacks.
        while self.in_flight() > 0 && started.elapsed() < timeout {
            let _ = self.inner.flush(Duration::from_millis(100));
        }
        match self.in_flight() {
            0 => Ok(self.stats()),
            in_flight => {
                Err(ProducerError::FlushTimeout { brokers: self.brokers.clone(), in_flight, waited: started.elapsed() })
            }
        }
    }

    /// The counters so far.
    pub fn stats(&self) -> ProducerStats {
        let c = &self.counters;
        ProducerStats {
            sent: c.sent.load(Ordering::Relaxed),
            delivered: c.delivered.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
            blocked: c.blocked.load(Ordering::Relaxed),
            refused: c.refused.load(Ordering::Relaxed),
        }
    }

    /// The last delivery error, if any.
    pub fn last_error(&self) -> Option<String> {
        self.counters.last_error.lock().ok().and_then(|e| e.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A bootstrap address where nothing listens: the broker is away.
    fn away() -> ClientSettings {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        ClientSettings::new(&format!("127.0.0.1:{port}"))
    }

    fn record(payload: &[u8]) -> Record<'_> {
        Record { topic: "t", key: b"k", payload, timestamp_ms: None, headers: &[] }
    }

    #[test]
    fn full_queue_with_drop_policy_refuses_and_counts() {
        let settings = ProducerSettings { queue_max_messages: 10, when_full: FullPolicy::Drop, ..Default::default() };
        let p = Producer::new(&away(), &settings).unwrap();
        let ticket = Ticket::new();
        let results: Vec<_> = (0..25).map(|_| p.send_tracked(&record(b"x"), &ticket)).collect();
        let refused = results.iter().filter(|r| matches!(r, Err(SendError::QueueFull { .. }))).count();
        assert_eq!(refused, 15, "the queue holds 10");
        let stats = p.stats();
        assert_eq!((stats.sent, stats.dropped, stats.blocked), (10, 15, 0));
        assert_eq!(ticket.outstanding(), 10, "refused records are not outstanding");
        assert_eq!(p.in_flight(), 10);
    }

    #[test]
    fn full_queue_with_block_policy_waits_then_counts() {
        let settings = ProducerSettings {
            queue_max_messages: 2,
            when_full: FullPolicy::Block { max_wait: Duration::from_millis(50) },
            ..Default::default()
        };
        let p = Producer::new(&away(), &settings).unwrap();
        assert!(p.send(&record(b"a")).is_ok());
        assert!(p.send(&record(b"b")).is_ok());
        let started = Instant::now();
        assert_eq!(p.send(&record(b"c")), Err(SendError::QueueFull { topic: "t".into() }));
        assert!(started.elapsed() >= Duration::from_millis(50), "it waited");
        let stats = p.stats();
        assert_eq!((stats.sent, stats.blocked, stats.dropped), (2, 1, 1));
    }

    #[test]
    fn undeliverable_records_fail_their_ticket_and_flush_reports_them() {
        let settings = ProducerSettings { message_timeout: Duration::from_millis(300), ..Default::default() };
        let p = Producer::new(&away(), &settings).unwrap();
        let ticket = Ticket::new();
        p.send_tracked(&record(b"a"), &ticket).unwrap();
        // Not delivered within a short flush: a clear error, nothing silently dropped.
        let err = p.flush(Duration::from_millis(50)).unwrap_err().to_string();
        assert!(err.contains("undelivered"), "{err}");
        // After the message timeout the delivery fails and is counted.
        let stats = p.flush(Duration::from_secs(10)).unwrap();
        assert_eq!((stats.delivered, stats.failed), (0, 1));
        assert_eq!((ticket.outstanding(), ticket.failed()), (0, 1));
        assert!(p.last_error().is_some());
    }

    #[test]
    fn bad_settings_are_refused() {
        assert!(matches!(
            Producer::new(&ClientSettings::new("nohost"), &ProducerSettings::default()),
            Err(ProducerError::Config(_))
        ));
        let zero = ProducerSettings { queue_max_kbytes: 0, ..Default::default() };
        assert!(Producer::new(&away(), &zero).is_err());
    }
}
