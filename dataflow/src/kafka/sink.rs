//! [`KafkaSink`]: attributed flows to the output topic, one Protobuf record per flow.
//!
//! Each record is keyed by its flow id (8 bytes, big-endian) and stamped with the flow's start.
//! Records of one dataflow time share a delivery [`Ticket`]; a time is delivered when its
//! ticket has nothing outstanding. A failed delivery (after librdkafka's retries for the
//! producer's `message_timeout`) is an error: the job stops without committing past it, and a
//! restart produces the record again.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use flowmap_kafka::{Producer, Record, Ticket};
use flowmap_operators::records::VerdictPiece;
use flowmap_operators::Time;

use crate::output::to_wire;
use crate::sink::{FlowSink, SinkError};

/// The output side of the Kafka job.
pub struct KafkaSink {
    producer: Producer,
    topic: String,
    pending: BTreeMap<Time, Arc<Ticket>>,
    buf: Vec<u8>,
}

impl KafkaSink {
    /// A sink sharing an existing producer (one per process).
    pub fn from_producer(producer: Producer, topic: &str) -> Self {
        KafkaSink { producer, topic: topic.to_string(), pending: BTreeMap::new(), buf: Vec::new() }
    }
}

impl FlowSink for KafkaSink {
    fn write(&mut self, time: Time, piece: &VerdictPiece) -> Result<(), SinkError> {
        let ticket = Arc::clone(self.pending.entry(time).or_default());
        for (row, verdict) in piece.iter() {
            let record = to_wire(piece, row, verdict);
            self.buf.clear();
            prost::Message::encode(&record, &mut self.buf)
                .map_err(|e| SinkError::Send { topic: self.topic.clone(), detail: e.to_string() })?;
            let key = row.id.to_be_bytes();
            let record = Record {
                topic: &self.topic,
                key: &key,
                payload: &self.buf,
                timestamp_ms: Some((record.start_ns / 1_000_000) as i64),
                headers: &[],
            };
            self.producer
                .send_tracked(&record, &ticket)
                .map_err(|e| SinkError::Send { topic: self.topic.clone(), detail: e.to_string() })?;
        }
        Ok(())
    }

    fn undelivered(&mut self) -> Result<Option<Time>, SinkError> {
        while let Some((_, ticket)) = self.pending.first_key_value() {
            if ticket.failed() > 0 {
                return Err(SinkError::Delivery {
                    failed: ticket.failed(),
                    topic: self.topic.clone(),
                    detail: self.producer.last_error().unwrap_or_default(),
                });
            }
            if ticket.outstanding() > 0 {
                break;
            }
            self.pending.pop_first();
        }
        Ok(self.pending.first_key_value().map(|(t, _)| *t))
    }

    fn finish(&mut self) -> Result<(), SinkError> {
        self.producer.flush(Duration::from_secs(300)).map_err(|e| SinkError::Delivery {
            failed: 0,
            topic: self.topic.clone(),
            detail: e.to_string(),
        })?;
        self.undelivered().map(|_| ())
    }
}
