//! The flow lake: attributed flows and dependency edges as Parquet files, Hive-partitioned by
//! event time (`<table>/dt=YYYY-MM-DD/hour=HH/`), in object storage (a local directory, or S3
//! and compatible services), readable by any Parquet reader (DuckDB, pyarrow, Spark) without
//! flowmap.
//!
//! Why files in object storage: the questions asked of flow history ("who called `payments` in
//! the last hour, and how much?") are scans and aggregations over large, append-mostly data,
//! which columnar files answer cheaply with any engine; the job only has to write them right.
//!
//! Writing them right means: each file committed atomically; a killed and restarted job, which
//! re-emits rows it had already written, adds no duplicate and loses no row; files flushed on a
//! time bound (a cell of dataflow time) and a size bound (rows per file), both deterministic.
//! [`writer`] explains how.
//!
//! # Use (for the job)
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use flowmap_lake::{FlowRow, Lake, LakeConfig};
//! let settings = LakeConfig::at("/var/lib/flowmap/lake").validate()?;
//! let lake = Lake::open(&settings)?; // one per process
//! let mut flows = lake.writer::<FlowRow>(0, 1)?; // worker index, worker count
//! # let (time, rows, frontier): (u64, Vec<FlowRow>, Option<u64>) = (0, vec![], None);
//! flows.push(time, rows)?; // rows of one dataflow time
//! flows.advance(frontier)?; // the operator's input frontier (None: closed)
//! let _hold_at = flows.undelivered()?; // hold the delivered frontier here
//! let stats = flows.finish()?; // at the end: write everything held
//! # let _ = stats; Ok(()) }
//! ```
//!
//! # Layout
//! - [`config`]: [`LakeConfig`] (TOML) checked into [`LakeSettings`].
//! - [`store`]: [`Lake`], the object store and its runtime; reading tables back.
//! - [`writer`]: [`TableWriter`], the delivery contract, the restart argument.
//! - [`cell`] (private): the pure rules of cells, parts and duplicates.
//! - [`layout`]: partitions, file names, manifests.
//! - [`row`]: the [`LakeRow`] trait a table implements; [`flows`] ([`FlowRow`]) and [`edges`]
//!   ([`EdgeRow`]) are the two tables.
//! - [`stats`]: the counters, [`WriterStats`].
//! - [`sample`]: deterministic sample rows and a model of the job's delivery loop (examples,
//!   tests, benchmarks).
#![deny(missing_docs)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

mod cell;
pub mod config;
pub mod edges;
pub mod error;
pub mod flows;
pub mod layout;
mod parquet_io;
pub mod row;
pub mod sample;
pub mod stats;
pub mod store;
pub mod writer;

pub use config::{Compression, LakeConfig, LakeSettings, Location};
pub use edges::EdgeRow;
pub use error::{BadRow, ConfigError, LakeError};
pub use flows::{FlowRow, FromWireError, Verification};
pub use row::LakeRow;
pub use stats::WriterStats;
pub use store::Lake;
pub use writer::TableWriter;

#[cfg(test)]
mod tables_tests;
