//! A bounded, counted producer that survives a fatal error.
//!
//! librdkafka already keeps a bounded queue (`queue.buffering.max.*`), retries, and reports
//! each record's delivery. What this wrapper adds is the policy around it, so that no record is
//! ever dropped without a count:
//! - when the queue is full, a send waits for room (counted as `blocked`, up to the policy's
//!   `max_wait`) or is refused at once (counted as `dropped`), per [`FullPolicy`];
//! - every delivery report is counted (`delivered` or `failed`, with the last error kept);
//! - a caller that must know when *its* records are delivered (the job commits input offsets
//!   only after that) passes a [`Ticket`], which counts its own outstanding and failed records;
//! - after a *fatal* error, the producer is recreated and every record the old one had not got
//!   acknowledged is sent again, in order, from a buffer bounded like the queue
//!   ([`crate::unacked`]); counted (`recreations`, `resent`). Fatal means librdkafka's own
//!   `fatal_error`, or a delivery failing with a broker error that says the idempotent
//!   producer's sequence is broken ([`breaks_the_producer`]): against Tansu 0.6, a broker
//!   bounced with records in flight answers "Unknown broker error" to every later record of
//!   that producer (without a librdkafka fatal error), while a new producer (a new producer id)
//!   is served. A resent record may have reached the broker before the error: consumers
//!   deduplicate (the job drops duplicate batches by sequence number). A record that fails in
//!   [`MAX_ATTEMPTS`] producers in a row fails for good (counted), so a record the broker
//!   refuses every time cannot loop. Tickets settle only when a record is settled for good.
//!
//! The producer is idempotent with `acks=all`, so librdkafka's retries neither duplicate nor
//! reorder records of one partition; records are keyed by the caller (the exporter id, for
//! batches), so one key's records stay in order.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use rdkafka::config::FromClientConfigAndContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer as _, ProducerContext};
use rdkafka::{ClientConfig, ClientContext, Message};

use crate::config::{ClientSettings, ConfigError, FullPolicy, ProducerSettings};
use crate::unacked::{Buffered, Full, Unacked};

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
    /// Records queued (resends not included).
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
    /// Times the producer was recreated after a fatal error.
    pub recreations: u64,
    /// Records sent again by a recreated producer.
    pub resent: u64,
}

#[derive(Default)]
struct Counters {
    sent: AtomicU64,
    delivered: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
    blocked: AtomicU64,
    refused: AtomicU64,
    recreations: AtomicU64,
    resent: AtomicU64,
    last_error: Mutex<Option<String>>,
}

/// What every generation of the producer shares.
struct Shared {
    counters: Counters,
    unacked: Mutex<Unacked>,
}

impl Shared {
    fn unacked(&self) -> MutexGuard<'_, Unacked> {
        // A panic while holding the lock cannot leave the buffer inconsistent (each method is
        // one map operation), so a poisoned lock is still usable.
        self.unacked.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn fail(&self, ticket: &Ticket, text: String) {
        let failed = self.counters.failed.fetch_add(1, Ordering::Relaxed) + 1;
        ticket.failed.fetch_add(1, Ordering::AcqRel);
        ticket.outstanding.fetch_sub(1, Ordering::AcqRel);
        if failed.is_power_of_two() {
            tracing::error!(error = %text, failed, "kafka delivery failed");
        }
        if let Ok(mut last) = self.counters.last_error.lock() {
            *last = Some(text);
        }
    }
}

/// How many producers a record is tried with before its failure is final.
pub const MAX_ATTEMPTS: u32 = 3;

/// Whether a delivery error means this producer cannot go on (its records must be resent by a
/// new one): librdkafka's fatal error, or a broker error about the idempotent producer's
/// identity or sequence (Tansu answers `UNKNOWN_SERVER_ERROR` for those).
pub fn breaks_the_producer(code: Option<RDKafkaErrorCode>) -> bool {
    matches!(
        code,
        Some(
            RDKafkaErrorCode::Fatal
                | RDKafkaErrorCode::Unknown
                | RDKafkaErrorCode::OutOfOrderSequenceNumber
                | RDKafkaErrorCode::UnknownProducerId
                | RDKafkaErrorCode::InvalidProducerEpoch
                | RDKafkaErrorCode::InvalidProducerIdMapping
        )
    )
}

/// The librdkafka context of one generation: counts delivery reports, settles tickets, and
/// notices a fatal error.
struct Context {
    shared: Arc<Shared>,
    fatal: Arc<AtomicBool>,
}

impl ClientContext for Context {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, log_message: &str) {
        use rdkafka::config::RDKafkaLogLevel as L;
        match level {
            L::Emerg | L::Alert | L::Critical | L::Error => tracing::error!(target: "librdkafka", fac, "{log_message}"),
            L::Warning => tracing::warn!(target: "librdkafka", fac, "{log_message}"),
            L::Notice | L::Info => tracing::info!(target: "librdkafka", fac, "{log_message}"),
            L::Debug => tracing::debug!(target: "librdkafka", fac, "{log_message}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::Fatal) {
            self.fatal.store(true, Ordering::Release);
            tracing::error!(%error, reason, "kafka producer fatal error: the producer will be recreated");
        } else {
            tracing::warn!(%error, reason, "kafka producer error");
        }
    }
}

impl ProducerContext for Context {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, id: usize) {
        let id = id as u64;
        match result {
            Ok(_) => {
                let settled = self.shared.unacked().settle(id);
                if let Some(ticket) = settled {
                    self.shared.counters.delivered.fetch_add(1, Ordering::Relaxed);
                    ticket.outstanding.fetch_sub(1, Ordering::AcqRel);
                }
            }
            Err((error, message)) => {
                // A purge happens only when the producer goes away (librdkafka purges on a fatal
                // error, and dropping a producer purges it): its records are the successor's.
                let purged = matches!(
                    error.rdkafka_error_code(),
                    Some(RDKafkaErrorCode::PurgeQueue | RDKafkaErrorCode::PurgeInflight)
                );
                if purged {
                    self.fatal.store(true, Ordering::Release);
                }
                if breaks_the_producer(error.rdkafka_error_code()) && !self.fatal.swap(true, Ordering::AcqRel) {
                    tracing::error!(%error, "kafka producer broken: it will be recreated and its unacknowledged records resent");
                }
                if self.fatal.load(Ordering::Acquire) {
                    // This producer is dead: the record stays buffered for its successor.
                    return;
                }
                let settled = self.shared.unacked().settle(id);
                if let Some(ticket) = settled {
                    self.shared.fail(&ticket, format!("{error} (topic {})", message.topic()));
                }
            }
        }
    }
}

/// Takes a record that was not queued after all back out of the buffer (a function of its own,
/// so that the buffer's lock is never held by the caller at the same time).
fn cancel(shared: &Shared, id: u64) -> Option<Buffered> {
    shared.unacked().cancel(id)
}

/// How long the polling thread waits for delivery reports in one call. rdkafka 0.39's poll
/// loop spins through the last millisecond of every wait (its remaining time rounds down to a
/// 0 ms, non-blocking wait), which with `ThreadedProducer`'s 100 ms waits cost about 1% of a core
/// (measured under the exporter's connection storm: 0.3 us per flow); with 1 s waits it is a
/// tenth of that. The price: dropping a producer waits for the current wait to end.
const POLL_WAIT: Duration = Duration::from_secs(1);

/// One librdkafka producer and the thread that serves its delivery reports; replaced after a
/// fatal error.
struct Generation {
    producer: Arc<BaseProducer<Context>>,
    fatal: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    poller: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Generation {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(poller) = self.poller.take() {
            let _ = poller.join();
        }
        // The last reference: dropping the producer purges it and serves its last reports.
    }
}

impl Generation {
    fn create(config: &ClientConfig, shared: &Arc<Shared>, brokers: &str) -> Result<Self, ProducerError> {
        let fatal = Arc::new(AtomicBool::new(false));
        let context = Context { shared: Arc::clone(shared), fatal: Arc::clone(&fatal) };
        let producer: Arc<BaseProducer<Context>> = Arc::new(
            BaseProducer::from_config_and_context(config, context)
                .map_err(|source| ProducerError::Create { brokers: brokers.to_string(), source })?,
        );
        let stop = Arc::new(AtomicBool::new(false));
        let poller = {
            let (producer, stop) = (Arc::clone(&producer), Arc::clone(&stop));
            std::thread::Builder::new()
                .name("kafka-poll".into())
                .spawn(move || {
                    while !stop.load(Ordering::Acquire) {
                        producer.poll(POLL_WAIT);
                    }
                })
                .map_err(|e| ProducerError::Create {
                    brokers: brokers.to_string(),
                    source: KafkaError::ClientCreation(format!("cannot start the polling thread: {e}")),
                })?
        };
        Ok(Generation { producer, fatal, stop, poller: Some(poller) })
    }

    fn is_fatal(&self) -> bool {
        self.fatal.load(Ordering::Acquire) || self.producer.client().fatal_error().is_some()
    }

    /// Queues one record under the delivery opaque `id`; `Err` carries librdkafka's refusal.
    fn produce(&self, record: &Record<'_>, id: u64) -> Result<(), KafkaError> {
        let mut headers = None;
        if !record.headers.is_empty() {
            let mut h = OwnedHeaders::new_with_capacity(record.headers.len());
            for (key, value) in record.headers {
                h = h.insert(Header { key, value: Some(*value) });
            }
            headers = Some(h);
        }
        let mut base = BaseRecord::with_opaque_to(record.topic, id as usize).key(record.key).payload(record.payload);
        base.timestamp = record.timestamp_ms;
        base.headers = headers;
        self.producer.send(base).map_err(|(e, _)| e)
    }

    /// [`Generation::produce`] for a buffered record.
    fn produce_buffered(&self, record: &Buffered, id: u64) -> Result<(), KafkaError> {
        let headers: Vec<(&str, &[u8])> = record.headers.iter().map(|(k, v)| (k.as_str(), v.as_slice())).collect();
        let view = Record {
            topic: &record.topic,
            key: &record.key,
            payload: &record.payload,
            timestamp_ms: record.timestamp_ms,
            headers: &headers,
        };
        self.produce(&view, id)
    }
}

struct Inner {
    current: RwLock<Generation>,
    config: ClientConfig,
    shared: Arc<Shared>,
    policy: FullPolicy,
    brokers: String,
    untracked: Arc<Ticket>,
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

/// The producer (cheap to clone; clones share the queue, the buffer and the counters).
#[derive(Clone)]
pub struct Producer {
    inner: Arc<Inner>,
}

impl Producer {
    /// Connects (lazily: librdkafka connects in the background and retries forever).
    pub fn new(client: &ClientSettings, settings: &ProducerSettings) -> Result<Self, ProducerError> {
        client.validate()?;
        settings.validate()?;
        let mut config = client.client_config();
        settings.apply(&mut config);
        let shared = Arc::new(Shared {
            counters: Counters::default(),
            unacked: Mutex::new(Unacked::new(settings.queue_max_messages)),
        });
        let current = Generation::create(&config, &shared, &client.brokers)?;
        Ok(Producer {
            inner: Arc::new(Inner {
                current: RwLock::new(current),
                config,
                shared,
                policy: settings.when_full,
                brokers: client.brokers.clone(),
                untracked: Ticket::new(),
            }),
        })
    }

    /// Queues a record; its delivery is counted in [`Producer::stats`].
    pub fn send(&self, record: &Record<'_>) -> Result<(), SendError> {
        self.send_tracked(record, &self.inner.untracked)
    }

    /// Queues a record whose delivery settles `ticket`.
    pub fn send_tracked(&self, record: &Record<'_>, ticket: &Arc<Ticket>) -> Result<(), SendError> {
        self.recover();
        let inner = &self.inner;
        let buffered = Buffered {
            topic: record.topic.to_string(),
            key: record.key.to_vec(),
            payload: record.payload.to_vec(),
            timestamp_ms: record.timestamp_ms,
            headers: record.headers.iter().map(|(k, v)| ((*k).to_string(), v.to_vec())).collect(),
            attempts: 0,
        };
        let current = inner.current.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        ticket.outstanding.fetch_add(1, Ordering::AcqRel);
        let started = Instant::now();
        let mut waited = false;
        let mut pending = Some(buffered);
        loop {
            let Some(buffered) = pending.take() else {
                ticket.outstanding.fetch_sub(1, Ordering::AcqRel);
                return Err(SendError::Refused { topic: record.topic.to_string(), reason: "lost its buffer".into() });
            };
            // Buffered first: the delivery report may come before `produce` returns. (The guard
            // is a statement of its own: held across `produce`, it would block the reports.)
            let pushed = inner.shared.unacked().push(buffered, ticket);
            let result = match pushed {
                Ok(id) => match current.produce(record, id) {
                    Ok(()) => Ok(()),
                    Err(e) => match cancel(&inner.shared, id) {
                        Some(back) => Err((e, back)),
                        None => {
                            ticket.outstanding.fetch_sub(1, Ordering::AcqRel);
                            return Err(SendError::Refused {
                                topic: record.topic.to_string(),
                                reason: "record vanished from the resend buffer".into(),
                            });
                        }
                    },
                },
                // The buffer holds as many records as the queue: it is full when the queue is.
                Err(Full(back)) => Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)),
            };
            let result = match result {
                Ok(()) => Ok(()),
                Err((e, back)) => {
                    pending = Some(back);
                    Err(e)
                }
            };
            match result {
                Ok(()) => {
                    inner.shared.counters.sent.fetch_add(1, Ordering::Relaxed);
                    return Ok(());
                }
                Err(KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull)) => {
                    let max_wait = match inner.policy {
                        FullPolicy::Block { max_wait } => max_wait,
                        FullPolicy::Drop => Duration::ZERO,
                    };
                    if started.elapsed() >= max_wait {
                        ticket.outstanding.fetch_sub(1, Ordering::AcqRel);
                        let dropped = inner.shared.counters.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                        if dropped.is_power_of_two() {
                            tracing::warn!(topic = record.topic, dropped, "producer queue full: record dropped");
                        }
                        return Err(SendError::QueueFull { topic: record.topic.to_string() });
                    }
                    if !waited {
                        waited = true;
                        inner.shared.counters.blocked.fetch_add(1, Ordering::Relaxed);
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(error) => {
                    ticket.outstanding.fetch_sub(1, Ordering::AcqRel);
                    inner.shared.counters.refused.fetch_add(1, Ordering::Relaxed);
                    return Err(SendError::Refused { topic: record.topic.to_string(), reason: error.to_string() });
                }
            }
        }
    }

    /// After a fatal error: replaces the producer and resends what it had not got
    /// acknowledged. Returns whether it did. Called by every send and flush.
    pub fn recover(&self) -> bool {
        let inner = &self.inner;
        if !inner.current.read().unwrap_or_else(std::sync::PoisonError::into_inner).is_fatal() {
            return false;
        }
        let mut current = inner.current.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        if !current.is_fatal() {
            return false; // another thread did it
        }
        let reason = current.producer.client().fatal_error().map(|(code, text)| format!("{code:?}: {text}"));
        // Its context may not have served the error event yet: from now on, its failures are
        // the successor's to resend.
        current.fatal.store(true, Ordering::Release);
        let fresh = match Generation::create(&inner.config, &inner.shared, &inner.brokers) {
            Ok(fresh) => fresh,
            Err(e) => {
                tracing::error!(error = %e, "cannot recreate the kafka producer: trying again at the next send");
                return false;
            }
        };
        // Dropping the old producer purges its queue (its reports for those records are
        // ignored: the records stay buffered) and serves its last reports, so records it got
        // acknowledged before dying are settled before the rest is resent.
        drop(std::mem::replace(&mut *current, fresh));
        let pending = inner.shared.unacked().take_all();
        let mut resent = 0u64;
        for (mut record, ticket) in pending {
            let topic = record.topic.clone();
            record.attempts += 1;
            if record.attempts >= MAX_ATTEMPTS {
                inner.shared.fail(&ticket, format!("failed in {MAX_ATTEMPTS} producers in a row (topic {topic})"));
                continue;
            }
            let pushed = inner.shared.unacked().push(record, &ticket);
            let result = match pushed {
                Ok(id) => {
                    let entry = inner.shared.unacked().entry(id);
                    let produced = match entry {
                        Some(record) => current.produce_buffered(&record, id),
                        None => Ok(()), // already reported
                    };
                    produced.inspect_err(|_| {
                        cancel(&inner.shared, id);
                    })
                }
                Err(_) => Err(KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull)),
            };
            match result {
                Ok(()) => resent += 1,
                Err(e) => inner.shared.fail(&ticket, format!("resending after a fatal error: {e} (topic {topic})")),
            }
        }
        inner.shared.counters.recreations.fetch_add(1, Ordering::Relaxed);
        inner.shared.counters.resent.fetch_add(resent, Ordering::Relaxed);
        tracing::warn!(reason = reason.as_deref().unwrap_or("fatal error"), resent, "kafka producer recreated");
        true
    }

    /// Records queued (or buffered for a resend) and not yet reported.
    pub fn in_flight(&self) -> u64 {
        self.inner.shared.unacked().len() as u64
    }

    /// Waits until every queued record is reported, or `timeout` passes.
    pub fn flush(&self, timeout: Duration) -> Result<ProducerStats, ProducerError> {
        let started = Instant::now();
        // Flush in short steps: librdkafka's flush also serves delivery callbacks.
        while self.in_flight() > 0 && started.elapsed() < timeout {
            self.recover();
            let current = self.inner.current.read().unwrap_or_else(std::sync::PoisonError::into_inner);
            let _ = current.producer.flush(Duration::from_millis(100));
        }
        match self.in_flight() {
            0 => Ok(self.stats()),
            in_flight => Err(ProducerError::FlushTimeout {
                brokers: self.inner.brokers.clone(),
                in_flight,
                waited: started.elapsed(),
            }),
        }
    }

    /// The counters so far.
    pub fn stats(&self) -> ProducerStats {
        let c = &self.inner.shared.counters;
        ProducerStats {
            sent: c.sent.load(Ordering::Relaxed),
            delivered: c.delivered.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
            blocked: c.blocked.load(Ordering::Relaxed),
            refused: c.refused.load(Ordering::Relaxed),
            recreations: c.recreations.load(Ordering::Relaxed),
            resent: c.resent.load(Ordering::Relaxed),
        }
    }

    /// The last delivery error, if any.
    pub fn last_error(&self) -> Option<String> {
        self.inner.shared.counters.last_error.lock().ok().and_then(|e| e.clone())
    }

    /// Raises a fatal error in the current librdkafka producer, as a broker would (librdkafka's
    /// `rd_kafka_test_fatal_error`): for tests of [`Producer::recover`].
    #[doc(hidden)]
    pub fn inject_fatal_error(&self, reason: &str) -> bool {
        let current = self.inner.current.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        let Ok(reason) = std::ffi::CString::new(reason) else { return false };
        // SAFETY: the client pointer is valid while `current` (the producer owning it) is
        // borrowed; the reason is a valid NUL-terminated string that outlives the call.
        let rc = unsafe {
            rdkafka::bindings::rd_kafka_test_fatal_error(
                current.producer.client().native_ptr(),
                rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER,
                reason.as_ptr(),
            )
        };
        rc == rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR
    }
}

#[cfg(test)]
mod tests;
