//! [`LakeRow`]: what a table must say about its rows for the writer to store them (name, Arrow
//! schema, key, partitioning time, columns in and out), and the typed column helpers the tables
//! share. A third table (VPC flow log records, say) is one more implementation of the trait.

use std::fmt;
use std::hash::Hash;
use std::sync::Arc;

use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::{ArrowError, DataType, Field, SchemaRef, TimeUnit};

use crate::error::BadRow;

/// One row of a lake table.
///
/// Two rows with the same [`LakeRow::Key`] are the same row: the writer keeps one of them
/// (the one at the earliest dataflow time), within a run and across restarts.
pub trait LakeRow: Clone + Send + 'static {
    /// The table's name: its directory under the lake root and the first part of its file
    /// names. Lowercase ASCII letters, digits and `_`, not starting with `_`.
    const TABLE: &'static str;
    /// The key columns, in key order (read back from existing files to deduplicate).
    const KEY_COLUMNS: &'static [&'static str];
    /// The row's identity.
    type Key: Ord + Hash + Clone + Send + fmt::Debug + 'static;

    /// The Arrow schema of the table's data files (column names and types are the contract).
    fn schema() -> SchemaRef;
    /// The row's key.
    fn key(&self) -> Self::Key;
    /// The event time that picks the row's Hive partition, ns since the Unix epoch.
    fn partition_ns(&self) -> u64;
    /// Whether the row can be stored.
    ///
    /// # Errors
    /// [`BadRow`]: a value the schema cannot hold.
    fn check(&self) -> Result<(), BadRow>;
    /// The rows as one record batch of [`LakeRow::schema`] (rows already [`LakeRow::check`]ed).
    ///
    /// # Errors
    /// An Arrow error (none for checked rows of a correct implementation).
    fn to_batch(rows: &[&Self]) -> Result<RecordBatch, ArrowError>;
    /// The keys of a batch read back with at least the key columns.
    ///
    /// # Errors
    /// A missing column, or one of another type or with a null.
    fn keys(batch: &RecordBatch) -> Result<Vec<Self::Key>, ColumnError>;
    /// The rows of a batch read back with every column.
    ///
    /// # Errors
    /// A missing column, one of another type, a null where none is allowed, an unknown name.
    fn from_batch(batch: &RecordBatch) -> Result<Vec<Self>, ColumnError>;
}

/// A column read back is not what the schema says.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("column {column}: {problem}")]
pub struct ColumnError {
    /// The column.
    pub column: String,
    /// What is wrong.
    pub problem: String,
}

impl ColumnError {
    pub(crate) fn new(column: &str, problem: impl fmt::Display) -> ColumnError {
        ColumnError { column: column.to_string(), problem: problem.to_string() }
    }
}

/// The type of timestamp columns: nanoseconds, UTC (DuckDB reads `TIMESTAMPTZ_NS`, pyarrow
/// `timestamp[ns, tz=UTC]`).
pub fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into()))
}

/// A field.
pub(crate) fn field(name: &str, data_type: DataType, nullable: bool) -> Field {
    Field::new(name, data_type, nullable)
}

/// Whether a ns timestamp fits Parquet's signed 64-bit nanoseconds.
pub(crate) fn check_ns(ns: u64) -> Result<(), BadRow> {
    i64::try_from(ns).map(|_| ()).map_err(|_| BadRow::TimestampOutOfRange)
}

/// A checked timestamp as Arrow stores it.
pub(crate) fn ns_value(ns: u64) -> i64 {
    i64::try_from(ns).unwrap_or(i64::MAX)
}

/// Column builders: one array per column, from the rows.
pub(crate) mod build {
    use super::*;
    use arrow_array::{
        BinaryArray, BooleanArray, Float64Array, StringArray, TimestampNanosecondArray, UInt16Array, UInt32Array,
        UInt64Array,
    };

    pub(crate) fn u64s<R>(rows: &[&R], f: impl Fn(&R) -> u64) -> ArrayRef {
        Arc::new(UInt64Array::from_iter_values(rows.iter().map(|r| f(r))))
    }
    pub(crate) fn u32s<R>(rows: &[&R], f: impl Fn(&R) -> u32) -> ArrayRef {
        Arc::new(UInt32Array::from_iter_values(rows.iter().map(|r| f(r))))
    }
    pub(crate) fn u16s<R>(rows: &[&R], f: impl Fn(&R) -> u16) -> ArrayRef {
        Arc::new(UInt16Array::from_iter_values(rows.iter().map(|r| f(r))))
    }
    pub(crate) fn bools<R>(rows: &[&R], f: impl Fn(&R) -> bool) -> ArrayRef {
        Arc::new(rows.iter().map(|r| Some(f(r))).collect::<BooleanArray>())
    }
    pub(crate) fn strs<'a, R: 'a>(rows: &[&'a R], f: impl Fn(&'a R) -> &'a str) -> ArrayRef {
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| f(r))))
    }
    pub(crate) fn opt_strs<'a, R: 'a>(rows: &[&'a R], f: impl Fn(&'a R) -> Option<&'a str>) -> ArrayRef {
        Arc::new(rows.iter().map(|r| f(r)).collect::<StringArray>())
    }
    /// Values written with their `Display` form, straight into the array's buffer.
    pub(crate) fn displayed<R, D: std::fmt::Display>(rows: &[&R], f: impl Fn(&R) -> D) -> ArrayRef {
        use std::fmt::Write;
        let mut b = arrow_array::builder::StringBuilder::with_capacity(rows.len(), rows.len() * 12);
        for r in rows {
            // Writing into the builder's buffer cannot fail.
            let _ = write!(b, "{}", f(r));
            b.append_value("");
        }
        Arc::new(b.finish())
    }
    pub(crate) fn timestamps<R>(rows: &[&R], f: impl Fn(&R) -> u64) -> ArrayRef {
        Arc::new(TimestampNanosecondArray::from_iter_values(rows.iter().map(|r| ns_value(f(r)))).with_timezone("UTC"))
    }
    pub(crate) fn opt_f64s<R>(rows: &[&R], f: impl Fn(&R) -> Option<f64>) -> ArrayRef {
        Arc::new(rows.iter().map(|r| f(r)).collect::<Float64Array>())
    }
    pub(crate) fn opt_bytes<'a, R: 'a>(rows: &[&'a R], f: impl Fn(&'a R) -> Option<&'a [u8]>) -> ArrayRef {
        Arc::new(rows.iter().map(|r| f(r)).collect::<BinaryArray>())
    }
}

/// Typed column readers over a batch read back from a data file.
pub(crate) struct Columns<'a>(pub(crate) &'a RecordBatch);

impl<'a> Columns<'a> {
    fn array<T: Array + 'static>(&self, name: &str) -> Result<&'a T, ColumnError> {
        let col = self.0.column_by_name(name).ok_or_else(|| ColumnError::new(name, "missing"))?;
        col.as_any()
            .downcast_ref::<T>()
            .ok_or_else(|| ColumnError::new(name, format!("type {}, not the schema's", col.data_type())))
    }

    fn required<T: Array + 'static>(&self, name: &str) -> Result<&'a T, ColumnError> {
        let a = self.array::<T>(name)?;
        if a.null_count() > 0 {
            return Err(ColumnError::new(name, "null in a column without nulls"));
        }
        Ok(a)
    }

    pub(crate) fn u64s(&self, name: &str) -> Result<Vec<u64>, ColumnError> {
        Ok(self.required::<arrow_array::UInt64Array>(name)?.values().to_vec())
    }
    pub(crate) fn u32s(&self, name: &str) -> Result<Vec<u32>, ColumnError> {
        Ok(self.required::<arrow_array::UInt32Array>(name)?.values().to_vec())
    }
    pub(crate) fn u16s(&self, name: &str) -> Result<Vec<u16>, ColumnError> {
        Ok(self.required::<arrow_array::UInt16Array>(name)?.values().to_vec())
    }
    pub(crate) fn bools(&self, name: &str) -> Result<Vec<bool>, ColumnError> {
        Ok(self.required::<arrow_array::BooleanArray>(name)?.iter().map(|b| b.unwrap_or_default()).collect())
    }
    pub(crate) fn strs(&self, name: &str) -> Result<Vec<&'a str>, ColumnError> {
        Ok(self.required::<arrow_array::StringArray>(name)?.iter().map(|s| s.unwrap_or_default()).collect())
    }
    pub(crate) fn opt_strs(&self, name: &str) -> Result<Vec<Option<&'a str>>, ColumnError> {
        Ok(self.array::<arrow_array::StringArray>(name)?.iter().collect())
    }
    pub(crate) fn timestamps(&self, name: &str) -> Result<Vec<u64>, ColumnError> {
        let a = self.required::<arrow_array::TimestampNanosecondArray>(name)?;
        a.values().iter().map(|&v| u64::try_from(v).map_err(|_| ColumnError::new(name, "negative timestamp"))).collect()
    }
    pub(crate) fn opt_f64s(&self, name: &str) -> Result<Vec<Option<f64>>, ColumnError> {
        Ok(self.array::<arrow_array::Float64Array>(name)?.iter().collect())
    }
    pub(crate) fn opt_bytes(&self, name: &str) -> Result<Vec<Option<&'a [u8]>>, ColumnError> {
        Ok(self.array::<arrow_array::BinaryArray>(name)?.iter().collect())
    }
}

/// A name of an enumerated string column, parsed back.
pub(crate) fn parse_name<T: Copy>(column: &str, table: &[(T, &str)], name: &str) -> Result<T, ColumnError> {
    table
        .iter()
        .find(|(_, n)| *n == name)
        .map(|(v, _)| *v)
        .ok_or_else(|| ColumnError::new(column, format!("unknown value {name:?}")))
}

/// The name of an enumerated value (every value is in its table).
pub(crate) fn name_of<T: Copy + PartialEq>(table: &[(T, &'static str)], value: T) -> &'static str {
    table.iter().find(|(v, _)| *v == value).map(|(_, n)| *n).unwrap_or("unknown")
}
