//! [`WriterStats`]: what a writer has done, for the job's progress line and metrics (names for
//! metrics: `flowmap_lake_<field>_total`, labelled by table).

use std::collections::BTreeMap;

use serde::Serialize;

/// Counters of one [`crate::TableWriter`] since it started (all monotonic).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct WriterStats {
    /// Rows taken by `push` (after the check).
    pub rows_received: u64,
    /// Rows rejected by the check, by reason ([`crate::BadRow::name`]); not stored.
    pub rejected: BTreeMap<&'static str, u64>,
    /// Rows dropped because a row with the same key was already stored or held (re-emitted rows
    /// after a restart, mostly).
    pub duplicates: u64,
    /// Rows pushed at a time the frontier had already passed (a breach of the contract; they
    /// are stored all the same).
    pub late_rows: u64,
    /// Rows written to data files.
    pub rows_written: u64,
    /// Data files written.
    pub files_written: u64,
    /// Bytes of data files written.
    pub bytes_written: u64,
    /// Manifests written (one per group of parts committed).
    pub manifests_written: u64,
    /// Cells completed (written out and forgotten).
    pub cells_closed: u64,
    /// Cells that had a manifest from an earlier run (or from earlier in this one).
    pub cells_resumed: u64,
    /// Existing data files read back (their keys) when resuming cells.
    pub existing_files_read: u64,
    /// Files listed in a manifest but absent: the writer stopped before writing them.
    pub missing_files: u64,
    /// Staging files of a killed local write removed.
    pub staging_removed: u64,
}
