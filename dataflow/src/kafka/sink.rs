//! [`KafkaSink`]: output records to a topic, one Protobuf message per record: flow records
//! (`flowmap.v1.AttributedFlow`, keyed by the flow id as 8 bytes big-endian, stamped with the
//! flow's start), edges (`flowmap.v1.Edge`, keyed by `client|server|port`, stamped with the
//! bucket start) and change events (`flowmap.v1.Event`, keyed by the event's kind, stamped with
//! its time).
//!
//! Records of one dataflow time share a delivery [`Ticket`]; a time is delivered when its
//! ticket has nothing outstanding. A failed delivery (after librdkafka's retries for the
//! producer's `message_timeout`) is an error: the job stops without committing past it, and a
//! restart produces the record again.

use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use flowmap_kafka::{Producer, Record, Ticket};
use flowmap_operators::records::VerdictPiece;
use flowmap_operators::Time;
use flowmap_schema as wire;
use prost::Message;

use crate::output::to_wire;
use crate::sink::{Sink, SinkError};

/// What a record is handed to: (key, timestamp in ms, encoded message).
pub type Each<'a> = dyn FnMut(&[u8], i64, &[u8]) -> Result<(), SinkError> + 'a;

/// An output item that becomes Kafka records.
pub trait ToKafka: 'static {
    /// Encodes every record of the item into `buf` (reused) and hands it to `each`.
    ///
    /// # Errors
    /// What `each` returns.
    fn records(&self, buf: &mut Vec<u8>, each: &mut Each<'_>) -> Result<(), SinkError>;
}

impl ToKafka for VerdictPiece {
    fn records(&self, buf: &mut Vec<u8>, each: &mut Each<'_>) -> Result<(), SinkError> {
        for (row, verdict) in self.iter() {
            let record = to_wire(self, row, verdict);
            buf.clear();
            record.encode_raw(buf);
            each(&row.id.to_be_bytes(), (record.start_ns / 1_000_000) as i64, buf)?;
        }
        Ok(())
    }
}

impl ToKafka for wire::Edge {
    fn records(&self, buf: &mut Vec<u8>, each: &mut Each<'_>) -> Result<(), SinkError> {
        let key = format!("{}|{}|{}", self.client, self.server, self.server_port);
        buf.clear();
        self.encode_raw(buf);
        each(key.as_bytes(), (self.bucket_start_ns / 1_000_000) as i64, buf)
    }
}

impl ToKafka for wire::Event {
    fn records(&self, buf: &mut Vec<u8>, each: &mut Each<'_>) -> Result<(), SinkError> {
        let kind = wire::EventKind::try_from(self.kind).unwrap_or(wire::EventKind::Unspecified);
        buf.clear();
        self.encode_raw(buf);
        each(kind.name().as_bytes(), (self.at_ns / 1_000_000) as i64, buf)
    }
}

/// The output side of the Kafka job, for one kind of output.
pub struct KafkaSink<T> {
    producer: Producer,
    topic: String,
    pending: BTreeMap<Time, Arc<Ticket>>,
    buf: Vec<u8>,
    kind: PhantomData<fn(T)>,
}

impl<T> KafkaSink<T> {
    /// A sink sharing an existing producer (one per process).
    pub fn from_producer(producer: Producer, topic: &str) -> Self {
        KafkaSink { producer, topic: topic.to_string(), pending: BTreeMap::new(), buf: Vec::new(), kind: PhantomData }
    }
}

impl<T: ToKafka> Sink<T> for KafkaSink<T> {
    fn write(&mut self, time: Time, item: &T) -> Result<(), SinkError> {
        let ticket = Arc::clone(self.pending.entry(time).or_default());
        let (producer, topic) = (&self.producer, &self.topic);
        item.records(&mut self.buf, &mut |key, timestamp_ms, payload| {
            let record = Record { topic, key, payload, timestamp_ms: Some(timestamp_ms), headers: &[] };
            producer
                .send_tracked(&record, &ticket)
                .map_err(|e| SinkError::Send { topic: topic.clone(), detail: e.to_string() })
        })
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
