//! Where batches go: JSON lines on stdout or in a file (one flow per line, then one line per
//! heartbeat), or Protobuf batches to Kafka through the shared producer (keyed by exporter id,
//! full-queue policy `drop` by default: the exporter must never stall its ring buffer, and
//! every drop is counted).

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};

use flowmap_kafka::{ClientSettings, Producer, ProducerSettings, ProducerStats, Record};
use flowmap_schema::encode_batch;
use serde::Serialize;

use super::batch::Built;
use super::config::SinkSpec;

/// A failure to deliver a batch (counted by the caller; the daemon goes on).
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// Writing failed.
    #[error("writing batch {seq}")]
    Io {
        /// The batch.
        seq: u64,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The reader of stdout went away.
    #[error("stdout closed")]
    Closed,
    /// Kafka refused the batch (queue full: counted as dropped).
    #[error("batch {seq} not queued for Kafka: {reason}")]
    Kafka {
        /// The batch.
        seq: u64,
        /// Why.
        reason: String,
    },
    /// Creating the sink failed.
    #[error("cannot open the sink: {0}")]
    Open(String),
}

/// An open sink.
pub enum Sink {
    /// JSON lines.
    Lines(Box<dyn Write + Send>),
    /// Kafka.
    Kafka {
        /// The producer.
        producer: Producer,
        /// The topic.
        topic: String,
    },
}

#[derive(Serialize)]
struct HeartbeatLine<'a> {
    kind: &'static str,
    exporter: &'a str,
    incarnation: u64,
    seq: u64,
    ip: std::net::IpAddr,
    /// 0: the whole IP; otherwise only this port of it.
    port: u32,
    workload: &'a str,
    from_ns: u64,
    to_ns: u64,
}

impl Sink {
    /// Opens the sink a spec names.
    pub fn open(spec: &SinkSpec, producer: &ProducerSettings) -> Result<Self, SinkError> {
        match spec {
            SinkSpec::Stdout => Ok(Sink::Lines(Box::new(BufWriter::new(std::io::stdout())))),
            SinkSpec::File(path) => {
                let file: File = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| SinkError::Open(format!("{}: {e}", path.display())))?;
                Ok(Sink::Lines(Box::new(BufWriter::new(file))))
            }
            SinkSpec::Kafka { brokers, topic } => {
                let producer = Producer::new(&ClientSettings::new(brokers), producer)
                    .map_err(|e| SinkError::Open(e.to_string()))?;
                Ok(Sink::Kafka { producer, topic: topic.clone() })
            }
        }
    }

    /// Sends one batch.
    pub fn send(&mut self, built: &Built) -> Result<(), SinkError> {
        let seq = built.batch.seq;
        match self {
            Sink::Lines(out) => {
                let io = |source: std::io::Error| {
                    if source.kind() == std::io::ErrorKind::BrokenPipe {
                        SinkError::Closed
                    } else {
                        SinkError::Io { seq, source }
                    }
                };
                for line in &built.lines {
                    serde_json::to_writer(&mut *out, line).map_err(|e| io(e.into()))?;
                    out.write_all(b"\n").map_err(io)?;
                }
                for hb in &built.batch.heartbeats {
                    let Some(ip) = flowmap_schema::ip_from_bytes(&hb.ip) else { continue };
                    let line = HeartbeatLine {
                        kind: "heartbeat",
                        exporter: &built.batch.exporter_id,
                        incarnation: built.batch.incarnation,
                        seq,
                        ip,
                        port: hb.port,
                        workload: &hb.workload,
                        from_ns: hb.from_ns,
                        to_ns: hb.to_ns,
                    };
                    serde_json::to_writer(&mut *out, &line).map_err(|e| io(e.into()))?;
                    out.write_all(b"\n").map_err(io)?;
                }
                out.flush().map_err(io)
            }
            Sink::Kafka { producer, topic } => {
                let payload = encode_batch(&built.batch);
                let record = Record {
                    topic,
                    key: built.batch.exporter_id.as_bytes(),
                    payload: &payload,
                    timestamp_ms: None,
                    headers: &[],
                };
                producer.send(&record).map_err(|e| SinkError::Kafka { seq, reason: e.to_string() })
            }
        }
    }

    /// The producer's counters (Kafka only).
    pub fn producer_stats(&self) -> Option<ProducerStats> {
        match self {
            Sink::Kafka { producer, .. } => Some(producer.stats()),
            Sink::Lines(_) => None,
        }
    }

    /// Flushes what is queued (at shutdown).
    pub fn close(&mut self, timeout: std::time::Duration) -> Result<(), SinkError> {
        match self {
            Sink::Lines(out) => out.flush().map_err(|source| SinkError::Io { seq: 0, source }),
            Sink::Kafka { producer, .. } => {
                producer.flush(timeout).map(|_| ()).map_err(|e| SinkError::Kafka { seq: 0, reason: e.to_string() })
            }
        }
    }
}
