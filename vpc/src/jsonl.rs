//! A [`Sink`] that appends JSON lines to a file: one per record, one per dead letter, one per
//! sealed mouthful. A mouthful counts as delivered once its seal line is written and the file
//! synced. For the example ingester, the tests, and trying the ingester without the job.
//!
//! Lines: `{"id", "mouthful", "bucket", "key", "etag", "line", "record"}` (the record as
//! parsed, addresses as text), `{"dead": DeadLetter}`, `{"sealed": N, "files": [...]}`.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::Duration;

use crate::sink::{Batch, MouthfulId, Sealed, Sink, SinkError};

#[derive(serde::Serialize)]
struct Line<'a> {
    id: u64,
    mouthful: MouthfulId,
    bucket: &'a str,
    key: &'a str,
    etag: &'a str,
    line: u64,
    record: &'a crate::record::Record,
}

/// The JSON-lines file sink.
pub struct JsonLinesSink {
    out: BufWriter<File>,
    delivered: MouthfulId,
    slow: Duration,
}

fn err(e: impl std::error::Error + Send + Sync + 'static) -> SinkError {
    SinkError(Box::new(e))
}

impl JsonLinesSink {
    /// Appends to `path` (created if missing). `slow` is slept after every batch (zero: none),
    /// to make a run long enough to interrupt in tests.
    ///
    /// # Errors
    /// The file cannot be opened.
    pub fn append(path: &Path, slow: Duration) -> std::io::Result<JsonLinesSink> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(JsonLinesSink { out: BufWriter::new(file), delivered: 0, slow })
    }

    fn line(&mut self, v: &serde_json::Value) -> Result<(), SinkError> {
        serde_json::to_writer(&mut self.out, v).map_err(err)?;
        self.out.write_all(b"\n").map_err(err)
    }
}

impl Sink for JsonLinesSink {
    fn submit(&mut self, batch: Batch) -> Result<(), SinkError> {
        if let Some(file) = &batch.file {
            for r in &batch.records {
                let line = Line {
                    id: file.record_id(r.line),
                    mouthful: batch.mouthful,
                    bucket: &file.id.bucket,
                    key: &file.id.key,
                    etag: &file.id.etag,
                    line: r.line,
                    record: r,
                };
                // Serialized straight from the borrowed fields (no intermediate JSON tree).
                serde_json::to_writer(&mut self.out, &line).map_err(err)?;
                self.out.write_all(b"\n").map_err(err)?;
            }
        }
        for d in &batch.dead_letters {
            self.line(&serde_json::json!({ "dead": d }))?;
        }
        if !self.slow.is_zero() {
            std::thread::sleep(self.slow);
        }
        Ok(())
    }

    fn seal(&mut self, sealed: Sealed) -> Result<(), SinkError> {
        self.line(&serde_json::json!({ "sealed": sealed.mouthful, "files": sealed.files }))?;
        self.out.flush().map_err(err)?;
        self.out.get_ref().sync_data().map_err(err)?;
        self.delivered = sealed.mouthful + 1;
        Ok(())
    }

    fn delivered(&mut self) -> MouthfulId {
        self.delivered
    }
}
