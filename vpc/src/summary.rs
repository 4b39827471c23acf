//! What an ingestion run did, counted: printed at the end, and as one JSON object.
//!
//! The job adds its own counts (attributed, unattributed by reason) beside these.

use std::collections::BTreeMap;

use crate::parse::ParseStats;
use crate::sink::FileStatus;

/// Rows by `log-status`.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct RowsByStatus {
    /// OK.
    pub ok: u64,
    /// NODATA.
    pub nodata: u64,
    /// SKIPDATA.
    pub skipdata: u64,
    /// Formats without `log-status`.
    pub none: u64,
}

/// Counts of one run. Everything not used is counted here, and dead-lettered through the sink.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct Summary {
    /// Files read (whatever their outcome).
    pub files: u64,
    /// Their bytes, as stored.
    pub bytes: u64,
    /// Records handed to the sink.
    pub records: u64,
    /// Records by `log-status`.
    pub rows: RowsByStatus,
    /// Rows that could not be read (dead-lettered with file and line).
    pub malformed: u64,
    /// Empty lines.
    pub blank_lines: u64,
    /// Files that ended in damage (truncated or corrupt; rows before the damage used).
    pub files_damaged: u64,
    /// Files that could not be read as flow logs at all.
    pub files_unreadable: u64,
    /// Files gone (or changed) before they were read.
    pub files_missing: u64,
    /// File reads that failed in a way a retry may cure (their messages were released).
    pub files_failed: u64,
    /// Objects skipped because they were already processed (same bucket, key and ETag).
    pub skipped_processed: u64,
    /// Header fields flowmap does not know, with the number of files naming them.
    pub unknown_fields: BTreeMap<String, u64>,
    /// Dead letters handed to the sink.
    pub dead_letters: u64,
    /// Mouthfuls started.
    pub mouthfuls: u64,
    /// Mouthfuls the sink reported delivered.
    pub mouthfuls_delivered: u64,
    /// Queue messages received.
    pub messages_received: u64,
    /// Messages received again while still in flight.
    pub messages_redelivered: u64,
    /// Messages deleted (after delivery).
    pub messages_deleted: u64,
    /// Messages released without deletion (made visible again).
    pub messages_released: u64,
    /// `s3:TestEvent` messages (ignored, deleted).
    pub test_events: u64,
    /// Messages that were not S3 event notifications (dead-lettered, then deleted).
    pub bad_messages: u64,
    /// Event records other than `ObjectCreated:*`, by event name (ignored).
    pub ignored_events: BTreeMap<String, u64>,
    /// Visibility extensions asked.
    pub visibility_extensions: u64,
    /// Queue calls that failed (receive, delete, extend), retried or left to SQS's timeouts.
    pub queue_errors: u64,
    /// The most messages in flight at once.
    pub max_in_flight: u64,
    /// Wall-clock seconds of the run.
    pub elapsed_s: f64,
}

impl Summary {
    /// Adds one file's outcome.
    pub(crate) fn file(&mut self, size: u64, status: &FileStatus, stats: &ParseStats, unknown: &[String]) {
        self.files += 1;
        self.bytes += size;
        self.records += stats.records;
        self.rows.ok += stats.ok;
        self.rows.nodata += stats.nodata;
        self.rows.skipdata += stats.skipdata;
        self.rows.none += stats.no_status;
        self.malformed += stats.malformed;
        self.blank_lines += stats.blank;
        match status {
            FileStatus::Complete => {}
            FileStatus::Damaged => self.files_damaged += 1,
            FileStatus::Unreadable => self.files_unreadable += 1,
            FileStatus::Missing => self.files_missing += 1,
        }
        for name in unknown {
            *self.unknown_fields.entry(name.clone()).or_default() += 1;
        }
    }

    /// The summary as one JSON object.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    /// The summary as a few lines of text.
    pub fn render(&self) -> String {
        let rate = if self.elapsed_s > 0.0 { self.records as f64 / self.elapsed_s } else { 0.0 };
        format!(
            "vpc ingest: {} files ({} bytes), {} records ({:.0}/s over {:.1}s)\n\
             \x20 rows            ok {}, nodata {}, skipdata {}, no status {}\n\
             \x20 not used        malformed {}, damaged files {}, unreadable {}, missing {}, failed {}, dead letters {}\n\
             \x20 skipped         already processed {}, test events {}, bad messages {}, other events {}\n\
             \x20 queue           received {}, deleted {}, released {}, redelivered {}, extensions {}, errors {}, max in flight {}\n\
             \x20 mouthfuls       {} ({} delivered)",
            self.files,
            self.bytes,
            self.records,
            rate,
            self.elapsed_s,
            self.rows.ok,
            self.rows.nodata,
            self.rows.skipdata,
            self.rows.none,
            self.malformed,
            self.files_damaged,
            self.files_unreadable,
            self.files_missing,
            self.files_failed,
            self.dead_letters,
            self.skipped_processed,
            self.test_events,
            self.bad_messages,
            self.ignored_events.values().sum::<u64>(),
            self.messages_received,
            self.messages_deleted,
            self.messages_released,
            self.messages_redelivered,
            self.visibility_extensions,
            self.queue_errors,
            self.max_in_flight,
            self.mouthfuls,
            self.mouthfuls_delivered,
        )
    }
}
