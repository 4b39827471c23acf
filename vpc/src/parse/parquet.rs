//! The Parquet delivery format: one column per field, named as in the text format with `_` for
//! `-` (`log_status`), integers as Parquet integers, everything else as strings; a null or `-` is
//! "not applicable". Read row group by row group with the `parquet` crate (arrow-rs), so memory
//! follows the row group, not the file.
//!
//! Parquet needs random access (its footer comes last): the ingester spools an object to a
//! temporary file first ([`crate::ingest`]).

use std::fs::File;

use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::reader::RowIter;
use parquet::record::Field as Value;

use super::{set_int, set_text, Header, HeaderError, Interner, LineError, LineErrorKind, ParseError, ParseStats};
use crate::record::Record;

/// Streams the rows of one Parquet flow log file; yields like [`super::TextReader`].
pub struct ParquetReader {
    rows: RowIter<'static>,
    header: Header,
    strings: Interner,
    index: u64,
    stats: ParseStats,
    done: bool,
}

impl ParquetReader {
    /// Opens a Parquet file and maps its columns to fields.
    ///
    /// # Errors
    /// [`HeaderError::Read`] when the file is not Parquet (or its footer is damaged), and the
    /// other [`HeaderError`]s as for text.
    pub fn open(file: File) -> Result<Self, HeaderError> {
        let reader = SerializedFileReader::new(file).map_err(|e| HeaderError::Read(e.to_string()))?;
        let names: Vec<String> = reader
            .metadata()
            .file_metadata()
            .schema_descr()
            .root_schema()
            .get_fields()
            .iter()
            .map(|f| f.name().to_string())
            .collect();
        let header = Header::from_names(names.iter().map(String::as_str))?;
        Ok(ParquetReader {
            rows: reader.into_iter(),
            header,
            strings: Interner::default(),
            index: 0,
            stats: ParseStats::default(),
            done: false,
        })
    }

    /// The file's fields.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Counts so far.
    pub fn stats(&self) -> &ParseStats {
        &self.stats
    }

    fn convert(&mut self, row: &parquet::record::Row, line: u64) -> Result<Record, LineErrorKind> {
        let mut record = Record { line, ..Record::default() };
        if row.len() != self.header.columns.len() {
            return Err(LineErrorKind::FieldCount { expected: self.header.columns.len(), found: row.len() });
        }
        for (&field, (_, value)) in self.header.columns.iter().zip(row.get_column_iter()) {
            let strings = &mut self.strings;
            match *value {
                Value::Null => {}
                Value::Str(ref s) => set_text(&mut record, field, s, strings)?,
                Value::Byte(v) => set_int(&mut record, field, v.into(), strings)?,
                Value::Short(v) => set_int(&mut record, field, v.into(), strings)?,
                Value::Int(v) => set_int(&mut record, field, v.into(), strings)?,
                Value::Long(v) => set_int(&mut record, field, v, strings)?,
                Value::UByte(v) => set_int(&mut record, field, v.into(), strings)?,
                Value::UShort(v) => set_int(&mut record, field, v.into(), strings)?,
                Value::UInt(v) => set_int(&mut record, field, v.into(), strings)?,
                Value::ULong(v) => {
                    let v = i64::try_from(v)
                        .map_err(|_| LineErrorKind::BadValue { field: field.name(), value: v.to_string() })?;
                    set_int(&mut record, field, v, strings)?
                }
                _ if field == super::Field::Ignored => {}
                ref other => {
                    return Err(LineErrorKind::BadValue { field: field.name(), value: format!("{other:?}") });
                }
            }
        }
        Ok(record)
    }
}

impl Iterator for ParquetReader {
    type Item = Result<Record, ParseError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let line = self.index + 2;
        match self.rows.next() {
            None => {
                self.done = true;
                None
            }
            Some(Err(e)) => {
                self.done = true;
                self.stats.damaged = true;
                Some(Err(ParseError::Damaged { after_line: line - 1, truncated: false, reason: e.to_string() }))
            }
            Some(Ok(row)) => {
                self.index += 1;
                Some(match self.convert(&row, line) {
                    Ok(record) => {
                        self.stats.count(&record);
                        Ok(record)
                    }
                    Err(kind) => {
                        self.stats.malformed += 1;
                        let text = super::dead_text(row.to_string().as_bytes());
                        Err(ParseError::Line(LineError { line, kind, text }))
                    }
                })
            }
        }
    }
}
