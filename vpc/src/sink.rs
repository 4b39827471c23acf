//! What the ingester hands on, and the [`Sink`] trait it hands it to.
//!
//! The ingester groups files into *mouthfuls* (bounded by bytes and file count), numbered from 0
//! in the order they are started. A mouthful goes to the sink as [`Batch`]es (a bounded number of
//! one file's records, with that file's dead letters) and ends with one [`Sealed`]: after it,
//! nothing more of that mouthful comes. The sink delivers them wherever they go (the job:
//! attribution, then Kafka) and reports progress as a watermark, [`Sink::delivered`]: every
//! mouthful numbered below it is delivered in full. Only then does the ingester record the
//! mouthful's files as processed and delete their queue messages: at-least-once, and a sink that
//! loses nothing loses nothing.
//!
//! Batches rather than whole mouthfuls because a mouthful of large files holds millions of
//! records: handing them on in bounded pieces keeps the ingester's memory flat (a 75 MB gzip file
//! is about 6 million rows).

use std::sync::Arc;

use flowmap_schema::VpcRecordIdHasher;

use crate::parse::ParseStats;
use crate::record::Record;

/// The number of a mouthful: 0, 1, 2... in the order the ingester starts them (per run).
pub type MouthfulId = u64;

/// The identity of one object: what "already processed" is keyed on.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct ObjectId {
    /// The bucket (for a local store, the directory under its root).
    pub bucket: String,
    /// The key, decoded (as stored, not URL-encoded).
    pub key: String,
    /// The ETag, without quotes.
    pub etag: String,
}

/// How a file is encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Text, gzip-compressed or plain (detected from the content).
    Text,
    /// Parquet (a key ending in `.parquet`).
    Parquet,
}

impl Format {
    /// The format of a key: Parquet for `.parquet` (AWS writes `.log.parquet`), text otherwise.
    pub fn of_key(key: &str) -> Format {
        if key.ends_with(".parquet") {
            Format::Parquet
        } else {
            Format::Text
        }
    }
}

/// One file being ingested.
#[derive(Clone, Debug)]
pub struct FileInfo {
    /// Which object.
    pub id: ObjectId,
    /// Its size in bytes, as stored (compressed).
    pub size: u64,
    /// Its encoding.
    pub format: Format,
    ids: VpcRecordIdHasher,
}

impl FileInfo {
    /// Describes a file.
    pub fn new(id: ObjectId, size: u64) -> FileInfo {
        let ids = VpcRecordIdHasher::new(&id.bucket, &id.key, &id.etag);
        let format = Format::of_key(&id.key);
        FileInfo { id, size, format, ids }
    }

    /// The stable id of the row at `line` of this file ([`flowmap_schema::vpc_record_id`]).
    pub fn record_id(&self, line: u64) -> u64 {
        self.ids.id(line)
    }
}

/// Where a dead letter came from.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeadSource {
    /// A file, at a line (see [`Record::line`]); no line for a file that could not be read at all.
    File {
        /// The file.
        object: ObjectId,
        /// The line, when the problem is one row, or the last whole line before damage.
        line: Option<u64>,
    },
    /// A queue message that is not an S3 event notification.
    Message {
        /// The SQS message id.
        message_id: String,
    },
}

/// Something that could not be used, with where it came from and why: the sink sends it to a
/// dead-letter destination.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct DeadLetter {
    /// Where.
    pub source: DeadSource,
    /// Why.
    pub reason: String,
    /// The bad text (a row, or a message body), cut to [`crate::parse::MAX_DEAD_TEXT`] bytes.
    pub text: String,
}

/// A piece of a mouthful: records of one file in file order, and dead letters.
#[derive(Debug)]
pub struct Batch {
    /// The mouthful this belongs to.
    pub mouthful: MouthfulId,
    /// The file the records come from (`None` for a batch of message dead letters only).
    pub file: Option<Arc<FileInfo>>,
    /// Records, at most [`crate::config::Settings::batch_records`].
    pub records: Vec<Record>,
    /// Dead letters.
    pub dead_letters: Vec<DeadLetter>,
}

/// What became of one file of a mouthful.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FileStatus {
    /// Read to its end (bad rows, if any, were dead-lettered).
    Complete,
    /// Damaged (truncated or corrupt): the rows before the damage were used, the damage
    /// dead-lettered. Not retried: the same bytes would give the same result.
    Damaged,
    /// Not readable as a flow log at all (no header, not Parquet, empty): dead-lettered.
    Unreadable,
    /// The object no longer exists (deleted, or its ETag changed): dead-lettered.
    Missing,
}

/// One file's outcome in a [`Sealed`].
#[derive(Clone, Debug, serde::Serialize)]
pub struct FileOutcome {
    /// The object.
    pub object: ObjectId,
    /// Its size in bytes.
    pub size: u64,
    /// What became of it.
    pub status: FileStatus,
    /// Its rows.
    pub stats: ParseStats,
}

/// The end of a mouthful: every batch of it was submitted.
#[derive(Clone, Debug)]
pub struct Sealed {
    /// The mouthful.
    pub mouthful: MouthfulId,
    /// Its files, in the order their batches came.
    pub files: Vec<FileOutcome>,
}

/// An error of the sink: the ingester stops (deleting nothing the sink did not report
/// delivered), and the error is returned to its caller.
#[derive(Debug, thiserror::Error)]
#[error("sink: {0}")]
pub struct SinkError(#[source] pub Box<dyn std::error::Error + Send + Sync>);

/// Where the ingester hands its mouthfuls. Called from one thread (the ingester's processing
/// thread), so an implementation needs `Send` but no locking.
pub trait Sink: Send + 'static {
    /// Takes one batch. May block to push back (the ingester then reads no further).
    ///
    /// # Errors
    /// A [`SinkError`] stops the ingester.
    fn submit(&mut self, batch: Batch) -> Result<(), SinkError>;

    /// Ends a mouthful: all its batches were submitted.
    ///
    /// # Errors
    /// A [`SinkError`] stops the ingester.
    fn seal(&mut self, sealed: Sealed) -> Result<(), SinkError>;

    /// The delivered watermark: every mouthful numbered below it is delivered in full (all its
    /// batches, and its seal). Never decreases. Called after every batch and seal, and every
    /// [`crate::config::Settings::poll`] while idle.
    fn delivered(&mut self) -> MouthfulId;
}
