//! Parquet record batches to rows, by column name, accepting any type a writer could reasonably
//! use for a column (timestamps of any unit or plain integers, counts of any integer type, ports
//! as u16 or i32, strings as utf8 or large/view utf8): each column is cast to one type with
//! arrow's cast kernel, values that do not fit become nulls, and a row with a null where a value
//! is required is skipped and counted by reason. A required column that is missing makes the
//! whole file unreadable.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, TimestampNanosecondType, UInt16Type, UInt32Type, UInt64Type};
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::{DataType, TimeUnit};
use foldhash::HashMap;

use crate::row::{EdgeRow, EventKind, EventRow, RowSketch, BAD_SKETCH};

/// Rows skipped, by reason.
pub(super) type BadRows = BTreeMap<String, u64>;

/// Names shared by all rows of a file: one allocation per distinct name.
#[derive(Default)]
pub(super) struct Names(HashMap<String, Arc<str>>);

impl Names {
    fn get(&mut self, name: &str) -> Arc<str> {
        if let Some(n) = self.0.get(name) {
            return n.clone();
        }
        let n: Arc<str> = name.into();
        self.0.insert(name.to_owned(), n.clone());
        n
    }
}

fn ts_type() -> DataType {
    DataType::Timestamp(TimeUnit::Nanosecond, None)
}

/// One column, cast to `target`; `None` when the file has no such column.
fn column(batch: &RecordBatch, name: &str, target: &DataType) -> Result<Option<ArrayRef>, String> {
    let Some(col) = batch.column_by_name(name) else { return Ok(None) };
    // Timestamps with a time zone are cast to the same instant without one.
    let col = match col.data_type() {
        DataType::Timestamp(unit, Some(_)) => arrow_cast::cast(col, &DataType::Timestamp(*unit, None)),
        _ => Ok(col.clone()),
    }
    .and_then(|c| arrow_cast::cast(&c, target))
    .map_err(|e| format!("column {name} ({}) cannot be read as {target}: {e}", col.data_type()))?;
    Ok(Some(col))
}

fn required(batch: &RecordBatch, name: &str, target: &DataType) -> Result<ArrayRef, String> {
    column(batch, name, target)?.ok_or_else(|| format!("required column {name} is missing"))
}

/// A required non-negative integer or timestamp column, as `u64` per row (`None`: null, negative
/// or not representable).
struct U64s(ArrayRef, &'static str);

impl U64s {
    fn ts(batch: &RecordBatch, name: &'static str) -> Result<Self, String> {
        Ok(U64s(required(batch, name, &ts_type())?, name))
    }

    fn int(batch: &RecordBatch, name: &'static str) -> Result<Self, String> {
        Ok(U64s(required(batch, name, &DataType::UInt64)?, name))
    }

    fn get(&self, i: usize) -> Option<u64> {
        if self.0.is_null(i) {
            return None;
        }
        match self.0.data_type() {
            DataType::UInt64 => Some(self.0.as_primitive::<UInt64Type>().value(i)),
            _ => u64::try_from(self.0.as_primitive::<TimestampNanosecondType>().value(i)).ok(),
        }
    }
}

/// Reads the edge rows of one batch; bad rows are counted in `bad`.
///
/// # Errors
/// A message when a required column is missing or of a type that cannot be cast.
pub(super) fn edges(batch: &RecordBatch, names: &mut Names, bad: &mut BadRows) -> Result<Vec<EdgeRow>, String> {
    let bucket_start = U64s::ts(batch, "bucket_start")?;
    let bucket_s = required(batch, "bucket_s", &DataType::UInt32)?;
    let client = required(batch, "client", &DataType::Utf8)?;
    let server = required(batch, "server", &DataType::Utf8)?;
    let port = required(batch, "server_port", &DataType::UInt16)?;
    let protocol = required(batch, "protocol", &DataType::Utf8)?;
    let emitted_at = column(batch, "emitted_at", &ts_type())?.map(|c| U64s(c, "emitted_at"));
    let counts = [
        "connections",
        "bytes_client_to_server",
        "bytes_server_to_client",
        "segments",
        "retransmits",
        "failed_connects",
        "verified",
        "disagreements",
        "one_sided",
    ]
    .map(|name| U64s::int(batch, name));
    let counts: Vec<U64s> = counts.into_iter().collect::<Result<_, _>>()?;
    let rtt = ["rtt_p50_us", "rtt_p90_us", "rtt_p99_us"].map(|name| column(batch, name, &DataType::Float64));
    let rtt: Vec<Option<ArrayRef>> = rtt.into_iter().collect::<Result<_, _>>()?;
    let sketch = column(batch, "rtt_sketch", &DataType::Binary)?;

    let (bucket_s, port) = (bucket_s.as_primitive::<UInt32Type>(), port.as_primitive::<UInt16Type>());
    let (client, server, protocol) =
        (client.as_string::<i32>(), server.as_string::<i32>(), protocol.as_string::<i32>());
    let mut rows = Vec::with_capacity(batch.num_rows());
    'rows: for i in 0..batch.num_rows() {
        let mut reject = |what: &str| *bad.entry(format!("null or invalid {what}")).or_default() += 1;
        let Some(start) = bucket_start.get(i) else {
            reject("bucket_start");
            continue;
        };
        for (array, name) in [(bucket_s as &dyn Array, "bucket_s"), (port, "server_port")] {
            if array.is_null(i) {
                reject(name);
                continue 'rows;
            }
        }
        for (array, name) in [(client, "client"), (server, "server"), (protocol, "protocol")] {
            if array.is_null(i) || array.value(i).is_empty() {
                reject(name);
                continue 'rows;
            }
        }
        let mut c = [0u64; 9];
        for (slot, col) in c.iter_mut().zip(&counts) {
            match col.get(i) {
                Some(v) => *slot = v,
                None => {
                    reject(col.1);
                    continue 'rows;
                }
            }
        }
        let quantile =
            |k: usize| rtt[k].as_ref().filter(|a| !a.is_null(i)).map(|a| a.as_primitive::<Float64Type>().value(i));
        let rtt_sketch = match sketch.as_ref().filter(|a| !a.is_null(i)) {
            None => RowSketch::Absent,
            Some(a) => RowSketch::from_bytes(a.as_binary::<i32>().value(i)),
        };
        if rtt_sketch.is_unreadable() {
            *bad.entry(BAD_SKETCH.into()).or_default() += 1;
        }
        rows.push(EdgeRow {
            bucket_start_ns: start,
            bucket_s: bucket_s.value(i),
            client: names.get(client.value(i)),
            server: names.get(server.value(i)),
            server_port: port.value(i),
            protocol: names.get(protocol.value(i)),
            emitted_at_ns: emitted_at.as_ref().and_then(|e| e.get(i)).unwrap_or(start),
            connections: c[0],
            bytes_client_to_server: c[1],
            bytes_server_to_client: c[2],
            segments: c[3],
            retransmits: c[4],
            failed_connects: c[5],
            verified: c[6],
            disagreements: c[7],
            one_sided: c[8],
            rtt_p50_us: quantile(0),
            rtt_p90_us: quantile(1),
            rtt_p99_us: quantile(2),
            rtt_sketch,
        });
    }
    Ok(rows)
}

/// Reads the event rows of one batch; bad rows are counted in `bad`.
///
/// # Errors
/// As for [`edges`].
pub(super) fn events(batch: &RecordBatch, names: &mut Names, bad: &mut BadRows) -> Result<Vec<EventRow>, String> {
    let at = U64s::ts(batch, "at")?;
    let kind = required(batch, "kind", &DataType::Utf8)?;
    let client = required(batch, "client", &DataType::Utf8)?;
    let server = required(batch, "server", &DataType::Utf8)?;
    let port = required(batch, "server_port", &DataType::UInt16)?;
    let detail = column(batch, "detail", &DataType::Utf8)?;
    let (kind, client, server) = (kind.as_string::<i32>(), client.as_string::<i32>(), server.as_string::<i32>());
    let port = port.as_primitive::<UInt16Type>();
    let detail = detail.as_ref().map(|d| d.as_string::<i32>());
    let mut rows = Vec::with_capacity(batch.num_rows());
    for i in 0..batch.num_rows() {
        let mut reject = |what: &str| *bad.entry(what.to_owned()).or_default() += 1;
        let Some(at_ns) = at.get(i) else {
            reject("null or invalid at");
            continue;
        };
        if kind.is_null(i) || client.is_null(i) || server.is_null(i) || port.is_null(i) {
            reject("null or invalid kind, client, server or server_port");
            continue;
        }
        let Ok(k) = kind.value(i).parse::<EventKind>() else {
            reject("unknown event kind");
            continue;
        };
        rows.push(EventRow {
            at_ns,
            kind: k,
            client: names.get(client.value(i)),
            server: names.get(server.value(i)),
            server_port: port.value(i),
            detail: detail.filter(|d| !d.is_null(i)).map(|d| names.get(d.value(i))).unwrap_or_else(|| "".into()),
        });
    }
    Ok(rows)
}
