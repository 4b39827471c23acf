//! What can go wrong, as types: a setting ([`ConfigError`]), a row the lake cannot store
//! ([`BadRow`], counted and skipped), and a failure of the lake itself ([`LakeError`], which stops
//! the writer: the job then stops without committing past the rows it holds, and a restart
//! writes them again).

use std::fmt;

/// A setting that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The configuration file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The configuration is not valid TOML of the expected shape.
    #[error("parsing the lake settings: {0}")]
    Parse(#[from] toml::de::Error),
    /// A value is out of its range or malformed.
    #[error("lake setting `{field}`: {problem}")]
    Invalid {
        /// The setting.
        field: &'static str,
        /// What is wrong with it.
        problem: String,
    },
}

/// Why a row cannot be stored (it is counted in [`crate::WriterStats::rejected`] and skipped;
/// the rest of its batch is stored).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BadRow {
    /// A timestamp beyond what Parquet's signed 64-bit nanoseconds hold (after 2262-04-11).
    TimestampOutOfRange,
}

impl BadRow {
    /// A short name, for counters and logs.
    pub fn name(self) -> &'static str {
        match self {
            BadRow::TimestampOutOfRange => "timestamp_out_of_range",
        }
    }
}

impl fmt::Display for BadRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A failure of the lake: the writer stops and reports it; nothing it held is reported delivered.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LakeError {
    /// The object store could not be set up.
    #[error("opening the lake at {location}: {detail}")]
    Open {
        /// The lake's location.
        location: String,
        /// The store's error.
        detail: String,
    },
    /// A read or write of the object store failed (after the store's own retries).
    #[error("{op} {path}: {detail}")]
    Store {
        /// `get`, `put`, `delete`.
        op: &'static str,
        /// The object.
        path: String,
        /// The store's error.
        detail: String,
    },
    /// Encoding rows as Parquet, or reading an existing data file, failed.
    #[error("parquet {path}: {detail}")]
    Parquet {
        /// The data file.
        path: String,
        /// The Parquet or Arrow error.
        detail: String,
    },
    /// A manifest or layout record of the lake is not what this version writes.
    #[error("lake bookkeeping {path}: {detail}")]
    Bookkeeping {
        /// The object.
        path: String,
        /// What is wrong.
        detail: String,
    },
    /// The table was written with another cell length or writer count: the same rows would land
    /// in other cells and be stored twice after a restart.
    #[error(
        "{path} says cell length {found_cell_ns} ns and {found_writers} writers, this job has {cell_ns} ns and \
         {writers}: keep them, write to a new lake, or delete {path} after a clean stop (finish) of every writer"
    )]
    LayoutChanged {
        /// The layout record.
        path: String,
        /// Its cell length.
        found_cell_ns: u64,
        /// Its writer count.
        found_writers: u32,
        /// This job's cell length.
        cell_ns: u64,
        /// This job's writer count.
        writers: u32,
    },
    /// The writer's thread stopped (it panicked, or the process is shutting down).
    #[error("the lake writer of {table} (writer {writer}) stopped")]
    WriterGone {
        /// The table.
        table: &'static str,
        /// The writer.
        writer: u32,
    },
}

impl LakeError {
    pub(crate) fn store(op: &'static str, path: &object_store::path::Path, e: impl fmt::Display) -> LakeError {
        LakeError::Store { op, path: path.to_string(), detail: e.to_string() }
    }

    pub(crate) fn parquet(path: &object_store::path::Path, e: impl fmt::Display) -> LakeError {
        LakeError::Parquet { path: path.to_string(), detail: e.to_string() }
    }
}
