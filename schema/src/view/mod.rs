//! Zero-copy reading of an encoded [`ExporterBatch`](crate::ExporterBatch).
//!
//! Why: the job decodes every flow of every batch, and the generated decoder allocates two
//! vectors (the addresses) and a string per flow. [`BatchView`] reads the same Protobuf bytes in
//! place: addresses and names are borrowed slices, and nothing is allocated per record. It
//! follows the Protobuf wire rules (unknown fields are skipped, the last value of a repeated
//! scalar wins), and a property test checks that it reads exactly what the generated decoder
//! reads.

use crate::{DecodeError, SCHEMA_VERSION};

/// A borrowed view of one batch; the repeated fields are read lazily.
#[derive(Clone, Debug, Default)]
pub struct BatchView<'a> {
    /// Schema version.
    pub schema_version: u32,
    /// Exporter id.
    pub exporter_id: &'a str,
    /// Sequence number.
    pub seq: u64,
    /// Window start.
    pub window_from_ns: u64,
    /// Window end.
    pub window_to_ns: u64,
    /// The exporter's incarnation (0: not stated).
    pub incarnation: u64,
    flows: Vec<&'a [u8]>,
    heartbeats: Vec<&'a [u8]>,
    assignments: Vec<&'a [u8]>,
}

/// A borrowed flow.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowView<'a> {
    /// Local address bytes.
    pub local_ip: &'a [u8],
    /// Local port.
    pub local_port: u32,
    /// Remote address bytes.
    pub remote_ip: &'a [u8],
    /// Remote port.
    pub remote_port: u32,
    /// Direction (the enum's number).
    pub direction: i32,
    /// Start.
    pub start_ns: u64,
    /// End.
    pub end_ns: u64,
    /// Bytes sent.
    pub bytes_sent: u64,
    /// Bytes received.
    pub bytes_received: u64,
    /// Segments sent.
    pub segments_sent: u64,
    /// Segments received.
    pub segments_received: u64,
    /// Retransmits.
    pub retransmits: u32,
    /// Smoothed RTT, us.
    pub srtt_us: u32,
    /// Local workload (empty when unknown).
    pub local_workload: &'a str,
    /// Open slice.
    pub open: bool,
    /// Scope of the local workload (the enum's number).
    pub local_scope: i32,
    /// How the local workload was known (the enum's number).
    pub local_source: i32,
    /// The exporter did not see the connection established.
    pub start_unobserved: bool,
    /// The exporter's connection id (0: not stated).
    pub connection_id: u64,
    /// Socket error of a connection that never established.
    pub connect_error: u32,
}

/// A borrowed heartbeat.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OwnershipView<'a> {
    /// Address bytes.
    pub ip: &'a [u8],
    /// Owner.
    pub workload: &'a str,
    /// Start.
    pub from_ns: u64,
    /// End.
    pub to_ns: u64,
    /// 0: the whole IP; otherwise this port only.
    pub port: u32,
}

/// A borrowed assignment event.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AssignmentView<'a> {
    /// Address bytes.
    pub ip: &'a [u8],
    /// New owner (empty: released).
    pub workload: &'a str,
    /// When.
    pub at_ns: u64,
}

enum Value<'a> {
    Varint(u64),
    Fixed64(u64),
    Bytes(&'a [u8]),
    Other,
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    // Inlined: a call per field was measured at about a third of this function's time on the
    // core-lookup benchmark (prologue and the result passed through memory).
    #[inline(always)]
    fn varint(&mut self) -> Result<u64, DecodeError> {
        // One-byte values (tags, small numbers) are most fields; longer ones (times) go to
        // prost's unrolled decoder, which reads up to ten bytes at once from a slice.
        match self.buf.first() {
            Some(&b) if b < 0x80 => {
                self.buf = &self.buf[1..];
                Ok(u64::from(b))
            }
            Some(_) => prost::encoding::decode_varint(&mut self.buf).map_err(|_| DecodeError::Invalid("bad varint")),
            None => Err(DecodeError::Invalid("truncated varint")),
        }
    }

    #[inline(always)]
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError::Invalid("truncated field"));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    /// The next (field number, value), or `None` at the end.
    #[inline(always)]
    fn field(&mut self) -> Result<Option<(u64, Value<'a>)>, DecodeError> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        let key = self.varint()?;
        let (field, wire) = (key >> 3, key & 7);
        if field == 0 {
            return Err(DecodeError::Invalid("field number 0"));
        }
        let value = match wire {
            0 => Value::Varint(self.varint()?),
            1 => {
                let b = self.take(8)?;
                let mut le = [0u8; 8];
                le.copy_from_slice(b);
                Value::Fixed64(u64::from_le_bytes(le))
            }
            2 => {
                let len = usize::try_from(self.varint()?).map_err(|_| DecodeError::Invalid("length overflow"))?;
                Value::Bytes(self.take(len)?)
            }
            5 => {
                self.take(4)?;
                Value::Other
            }
            _ => return Err(DecodeError::Invalid("unsupported wire type")),
        };
        Ok(Some((field, value)))
    }
}

fn string(bytes: &[u8]) -> Result<&str, DecodeError> {
    std::str::from_utf8(bytes).map_err(|_| DecodeError::Invalid("string is not UTF-8"))
}

fn mismatch() -> DecodeError {
    DecodeError::Invalid("field has the wrong wire type")
}

macro_rules! read_fields {
    ($bytes:expr, |$field:ident, $value:ident| $body:block) => {{
        let mut reader = Reader { buf: $bytes };
        while let Some(($field, $value)) = reader.field()? $body
    }};
}

/// Reads a batch in place, checking its schema version.
pub fn view_batch(bytes: &[u8]) -> Result<BatchView<'_>, DecodeError> {
    let mut view = BatchView::default();
    read_fields!(bytes, |field, value| {
        match (field, value) {
            (1, Value::Varint(v)) => view.schema_version = v as u32,
            (2, Value::Bytes(b)) => view.exporter_id = string(b)?,
            (3, Value::Varint(v)) => view.seq = v,
            (4, Value::Varint(v)) => view.window_from_ns = v,
            (5, Value::Varint(v)) => view.window_to_ns = v,
            (6, Value::Bytes(b)) => view.flows.push(b),
            (7, Value::Bytes(b)) => view.heartbeats.push(b),
            (8, Value::Bytes(b)) => view.assignments.push(b),
            (9, Value::Fixed64(v)) => view.incarnation = v,
            (1..=9, _) => return Err(mismatch()),
            _ => {}
        }
    });
    if view.schema_version != SCHEMA_VERSION {
        return Err(DecodeError::UnsupportedVersion { found: view.schema_version });
    }
    Ok(view)
}

impl<'a> BatchView<'a> {
    /// Number of flows.
    pub fn flow_count(&self) -> usize {
        self.flows.len()
    }

    /// The flows, each parsed on demand.
    pub fn flows(&self) -> impl Iterator<Item = Result<FlowView<'a>, DecodeError>> + '_ {
        self.flows.iter().map(|b| parse_flow(b))
    }

    /// The encoded flow messages, in order (for readers that keep a flow's bytes and parse it
    /// again later with [`parse_flow`]).
    pub fn flow_bytes(&self) -> &[&'a [u8]] {
        &self.flows
    }

    /// The heartbeats.
    pub fn heartbeats(&self) -> impl Iterator<Item = Result<OwnershipView<'a>, DecodeError>> + '_ {
        self.heartbeats.iter().map(|b| parse_ownership(b))
    }

    /// The assignment events.
    pub fn assignments(&self) -> impl Iterator<Item = Result<AssignmentView<'a>, DecodeError>> + '_ {
        self.assignments.iter().map(|b| parse_assignment(b))
    }
}

/// Reads one encoded `Flow` message in place.
pub fn parse_flow(bytes: &[u8]) -> Result<FlowView<'_>, DecodeError> {
    let mut f = FlowView::default();
    read_fields!(bytes, |field, value| {
        match (field, value) {
            (1, Value::Bytes(b)) => f.local_ip = b,
            (2, Value::Varint(v)) => f.local_port = v as u32,
            (3, Value::Bytes(b)) => f.remote_ip = b,
            (4, Value::Varint(v)) => f.remote_port = v as u32,
            (5, Value::Varint(v)) => f.direction = v as i32,
            (6, Value::Varint(v)) => f.start_ns = v,
            (7, Value::Varint(v)) => f.end_ns = v,
            (8, Value::Varint(v)) => f.bytes_sent = v,
            (9, Value::Varint(v)) => f.bytes_received = v,
            (10, Value::Varint(v)) => f.segments_sent = v,
            (11, Value::Varint(v)) => f.segments_received = v,
            (12, Value::Varint(v)) => f.retransmits = v as u32,
            (13, Value::Varint(v)) => f.srtt_us = v as u32,
            (14, Value::Bytes(b)) => f.local_workload = string(b)?,
            (15, Value::Varint(v)) => f.open = v != 0,
            (16, Value::Varint(v)) => f.local_scope = v as i32,
            (17, Value::Varint(v)) => f.local_source = v as i32,
            (18, Value::Varint(v)) => f.start_unobserved = v != 0,
            (19, Value::Fixed64(v)) => f.connection_id = v,
            (20, Value::Varint(v)) => f.connect_error = v as u32,
            (1..=20, _) => return Err(mismatch()),
            _ => {}
        }
    });
    Ok(f)
}

fn parse_ownership(bytes: &[u8]) -> Result<OwnershipView<'_>, DecodeError> {
    let mut o = OwnershipView::default();
    read_fields!(bytes, |field, value| {
        match (field, value) {
            (1, Value::Bytes(b)) => o.ip = b,
            (2, Value::Bytes(b)) => o.workload = string(b)?,
            (3, Value::Varint(v)) => o.from_ns = v,
            (4, Value::Varint(v)) => o.to_ns = v,
            (5, Value::Varint(v)) => o.port = v as u32,
            (1..=5, _) => return Err(mismatch()),
            _ => {}
        }
    });
    Ok(o)
}

fn parse_assignment(bytes: &[u8]) -> Result<AssignmentView<'_>, DecodeError> {
    let mut a = AssignmentView::default();
    read_fields!(bytes, |field, value| {
        match (field, value) {
            (1, Value::Bytes(b)) => a.ip = b,
            (2, Value::Bytes(b)) => a.workload = string(b)?,
            (3, Value::Varint(v)) => a.at_ns = v,
            (1..=3, _) => return Err(mismatch()),
            _ => {}
        }
    });
    Ok(a)
}

#[cfg(test)]
mod tests;
