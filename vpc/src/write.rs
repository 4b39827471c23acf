//! Writing flow log files in AWS's formats: for the simulator's VPC writer, tests and
//! benchmarks. Rows are given as text values in the header's order (`-` for "not applicable"),
//! exactly as a text flow log holds them.
//!
//! - [`write_text`]: the header line and the rows, gzip-compressed (as AWS delivers `.log.gz`).
//! - [`write_parquet`]: one column per field (named with `_`), integer fields as `INT64` (the
//!   rest as UTF-8 strings), `-` as null, gzip-compressed pages.

use std::io::Write;
use std::sync::Arc;

use flate2::write::GzEncoder;
use flate2::Compression;
use parquet::basic::Compression as PqCompression;
use parquet::data_type::{ByteArray, ByteArrayType, Int64Type};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;

use crate::parse::Field;

/// A writing error.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// I/O.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// Parquet.
    #[error(transparent)]
    Parquet(#[from] parquet::errors::ParquetError),
    /// A row does not fit the header.
    #[error("row {row}: {msg}")]
    Row {
        /// Row index.
        row: usize,
        /// Why.
        msg: String,
    },
}

/// Writes a gzip-compressed text flow log: `header` (field names), then one line per row.
///
/// # Errors
/// [`WriteError::Io`].
pub fn write_text<W: Write, S: AsRef<str>>(out: W, header: &[&str], rows: &[Vec<S>]) -> Result<W, WriteError> {
    let mut gz = GzEncoder::new(out, Compression::fast());
    writeln!(gz, "{}", header.join(" "))?;
    for row in rows {
        let mut first = true;
        for v in row {
            if !first {
                gz.write_all(b" ")?;
            }
            first = false;
            gz.write_all(v.as_ref().as_bytes())?;
        }
        gz.write_all(b"\n")?;
    }
    Ok(gz.finish()?)
}

fn is_integer(name: &str) -> bool {
    matches!(
        Field::from_name(name),
        Some(
            Field::Version
                | Field::Srcport
                | Field::Dstport
                | Field::Protocol
                | Field::Packets
                | Field::Bytes
                | Field::Start
                | Field::End
                | Field::TcpFlags
                | Field::TrafficPath
        )
    )
}

/// Writes a Parquet flow log with one row group.
///
/// # Errors
/// [`WriteError`] on I/O, on a row of the wrong length or an integer field that does not parse.
pub fn write_parquet<W: Write + Send, S: AsRef<str>>(
    out: W,
    header: &[&str],
    rows: &[Vec<S>],
) -> Result<W, WriteError> {
    let mut schema = String::from("message flowlog {\n");
    for name in header {
        let col = name.replace('-', "_");
        if is_integer(name) {
            schema.push_str(&format!("  OPTIONAL INT64 {col};\n"));
        } else {
            schema.push_str(&format!("  OPTIONAL BINARY {col} (UTF8);\n"));
        }
    }
    schema.push('}');
    for (i, row) in rows.iter().enumerate() {
        if row.len() != header.len() {
            return Err(WriteError::Row { row: i, msg: format!("{} values, {} fields", row.len(), header.len()) });
        }
    }
    let props = WriterProperties::builder().set_compression(PqCompression::GZIP(Default::default())).build();
    let mut writer = SerializedFileWriter::new(out, Arc::new(parse_message_type(&schema)?), Arc::new(props))?;
    let mut group = writer.next_row_group()?;
    let mut col = 0;
    while let Some(mut column) = group.next_column()? {
        let values = rows.iter().map(|r| r[col].as_ref());
        let defs: Vec<i16> = values.clone().map(|v| i16::from(v != "-")).collect();
        if is_integer(header[col]) {
            let mut ints = Vec::new();
            for (i, v) in values.enumerate().filter(|(_, v)| *v != "-") {
                ints.push(
                    v.parse::<i64>().map_err(|e| WriteError::Row { row: i, msg: format!("{}: {e}", header[col]) })?,
                );
            }
            column.typed::<Int64Type>().write_batch(&ints, Some(&defs), None)?;
        } else {
            let strings: Vec<ByteArray> = values.filter(|v| *v != "-").map(ByteArray::from).collect();
            column.typed::<ByteArrayType>().write_batch(&strings, Some(&defs), None)?;
        }
        column.close()?;
        col += 1;
    }
    group.close()?;
    Ok(writer.into_inner()?)
}
