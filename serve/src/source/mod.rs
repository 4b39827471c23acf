//! Where the map's rows come from: the [`EdgeSource`] trait and its two implementations, the
//! job's live rows in memory ([`MemorySource`]) and the lake's Parquet tables ([`LakeSource`]).
//!
//! A source answers for a time range with the rows whose bucket (edges) or instant (events)
//! starts in it. Edge rows come back as shared, immutable chunks ([`EdgeRows`]) rather than
//! copies: a range can hold millions of rows, and both sources already keep them in chunks (the
//! job's pushes, the lake's files), so a request costs a few reference counts, and the job's
//! thread never waits for a request to finish reading.
//!
//! # Layout
//! - `memory`: [`MemorySource`], updated by the job, bounded by a retention.
//! - `lake`: [`LakeSource`], Hive-partitioned Parquet files with a decoded-file cache.
//! - `columns`: reading Parquet columns of any reasonable type into rows, counting bad ones.

mod columns;
mod lake;
mod memory;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use serde::Serialize;

pub use lake::{LakeOptions, LakeSource};
pub use memory::{MemoryOptions, MemorySource};

use crate::row::{EdgeRow, EventRow};
use crate::time::TimeRange;

/// The rows the map is drawn from. Implementations are shared between the caller (the job, which
/// updates its rows) and the server's threads.
pub trait EdgeSource: Send + Sync {
    /// The edge rows whose bucket starts in `range`.
    ///
    /// # Errors
    /// [`SourceError`] when the source cannot be read at all (a file that cannot be read is
    /// skipped and counted in [`EdgeSource::health`] instead).
    fn edges(&self, range: TimeRange) -> Result<EdgeRows, SourceError>;

    /// The events whose instant is in `range`, in no particular order.
    ///
    /// # Errors
    /// As for [`EdgeSource::edges`].
    fn events(&self, range: TimeRange) -> Result<Vec<EventRow>, SourceError>;

    /// The time the edge rows span, from the first bucket's start to the last bucket's end;
    /// `None` when there are none yet. The page's default range ends there.
    ///
    /// # Errors
    /// As for [`EdgeSource::edges`].
    fn extent(&self) -> Result<Option<TimeRange>, SourceError>;

    /// What the source holds and what it had to skip.
    fn health(&self) -> Health;
}

/// Edge rows of a time range, as shared chunks. The chunks may hold rows outside the range;
/// [`EdgeRows::iter`] skips them.
#[derive(Clone, Debug)]
pub struct EdgeRows {
    range: TimeRange,
    chunks: Vec<Arc<[EdgeRow]>>,
}

impl EdgeRows {
    /// The rows of `chunks` whose bucket starts in `range`.
    pub fn new(range: TimeRange, chunks: Vec<Arc<[EdgeRow]>>) -> Self {
        EdgeRows { range, chunks }
    }

    /// The range asked for.
    pub fn range(&self) -> TimeRange {
        self.range
    }

    /// The rows whose bucket starts in the range.
    pub fn iter(&self) -> impl Iterator<Item = &EdgeRow> + '_ {
        let range = self.range;
        self.chunks.iter().flat_map(|c| c.iter()).filter(move |r| range.contains(r.bucket_start_ns))
    }
}

/// A source's state, as `/healthz` shows it.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Health {
    /// `memory` or `lake`.
    pub source: &'static str,
    /// False when the source cannot serve (its directory is gone, ...); `problems` says why.
    pub ok: bool,
    /// What is wrong or was skipped, most recent last (bounded).
    pub problems: Vec<String>,
    /// Edge rows held (memory) or decoded and cached (lake).
    pub edge_rows: u64,
    /// Event rows held (memory) or decoded and cached (lake).
    pub event_rows: u64,
    /// Bad rows, by reason: skipped (`null or invalid bytes_client_to_server`, `unknown event
    /// kind`, ...) or kept with what could be read ([`BAD_SKETCH`](crate::row::BAD_SKETCH): a row
    /// whose sketch is unreadable keeps its quantile columns).
    pub bad_rows: BTreeMap<String, u64>,
    /// Facts about the data the page shows beside the map (a table the lake does not have yet,
    /// ...).
    pub notes: Vec<String>,
    /// Files that could not be read (not Parquet, a required column missing, ...), among those
    /// read so far (a lake is read as requests need it).
    pub bad_files: u64,
    /// Rows dropped because they were older than the retention (memory).
    pub expired_rows: u64,
    /// The job's progress: every row before it has been handed over (memory), ns since the
    /// epoch.
    pub frontier_ns: Option<u64>,
}

/// A source that cannot be read at all.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// A directory of the lake cannot be listed.
    #[error("cannot list {}", path.display())]
    List {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}
