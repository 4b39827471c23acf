//! The processing thread: takes mouthfuls from the controller, reads each file (streamed from the
//! object store, decompressed and parsed on the fly, or spooled to a temporary file for Parquet),
//! hands the sink bounded batches, seals the mouthful, and reports back: file outcomes, failures
//! a retry may cure, seals, and every move of the sink's delivered watermark.
//!
//! It is the only thread that touches the sink. Fetching runs on the controller's tokio runtime
//! (through a handle), parsing here, so a slow sink pushes back on reading, and memory holds one
//! batch and the decoder's buffers whatever the file's size.

use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use object_store::path::Path;
use object_store::ObjectStoreExt;
use tokio::runtime::Handle;
use tokio::sync::mpsc::UnboundedSender;

use crate::parse::{self, HeaderError, ParseError, ParseStats};
use crate::sink::{
    Batch, DeadLetter, DeadSource, FileInfo, FileOutcome, FileStatus, MouthfulId, ObjectId, Sealed, Sink, SinkError,
};
use crate::store::Stores;
use crate::tracker::{FileRef, Item, MouthfulPlan};

/// Work for the thread.
pub(crate) enum Job {
    Mouthful(MouthfulPlan),
    Stop,
}

/// What the thread tells the controller, in order.
#[derive(Debug)]
pub(crate) enum Report {
    /// A file was read (whatever the outcome) and its batches submitted.
    File { outcome: FileOutcome, unknown: Vec<String>, dead_letters: u64 },
    /// A file failed in a way a retry may cure; its messages must not be deleted.
    Failed { mouthful: MouthfulId, file: FileRef, reason: String },
    /// Message dead letters submitted.
    DeadLetters(u64),
    /// A mouthful was sealed.
    Sealed(MouthfulId),
    /// The sink's delivered watermark.
    Watermark(MouthfulId),
}

pub(crate) struct Processor<S> {
    pub sink: S,
    pub stores: Arc<Stores>,
    pub handle: Handle,
    pub batch_records: usize,
    pub poll: Duration,
    pub reports: UnboundedSender<Report>,
    pub live: Arc<Live>,
    watermark: MouthfulId,
}

/// Live counts for the progress line, updated by the processing thread.
#[derive(Default)]
pub(crate) struct Live {
    /// Bytes read from objects (as stored).
    pub bytes: AtomicU64,
    /// Records handed to the sink.
    pub records: AtomicU64,
}

/// Counts bytes read, and remembers whether the object store (not the decoder) failed.
struct Fetch<R> {
    inner: R,
    live: Arc<Live>,
    failed: Arc<AtomicBool>,
}

impl<R: Read> Read for Fetch<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.inner.read(buf) {
            Ok(n) => {
                self.live.bytes.fetch_add(n as u64, Ordering::Relaxed);
                Ok(n)
            }
            Err(e) => {
                self.failed.store(true, Ordering::Relaxed);
                Err(e)
            }
        }
    }
}

/// Chunks fetched ahead (per file).
const PREFETCH: usize = 64;

/// Files whose GETs are started ahead of the one being parsed (object stores answer a GET in
/// tens of milliseconds: without this, small files are read one round trip at a time).
const FETCH_AHEAD: usize = 4;

/// A file being fetched: its metadata (once the GET answers), then its chunks.
struct Started {
    meta: tokio::sync::oneshot::Receiver<Result<object_store::ObjectMeta, GetError>>,
    chunks: tokio::sync::mpsc::Receiver<io::Result<bytes::Bytes>>,
}

/// Why a GET gave no object.
enum GetError {
    /// The object does not exist.
    NotFound,
    /// No store for the bucket, or a key that is not a path.
    Unusable(String),
    /// An error a retry may cure.
    Retry(String),
}

/// Reads the chunks a fetching task sends; an error from the store is an I/O error here.
struct ChunkReader {
    rx: tokio::sync::mpsc::Receiver<io::Result<bytes::Bytes>>,
    current: bytes::Bytes,
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(chunk)) => self.current = chunk,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        bytes::Buf::advance(&mut self.current, n);
        Ok(n)
    }
}

enum Opened {
    Text(parse::text::AnyTextReader<'static>),
    Parquet(parse::ParquetReader, tempfile::NamedTempFile),
}

impl<S: Sink> Processor<S> {
    pub(crate) fn new(
        sink: S,
        stores: Arc<Stores>,
        handle: Handle,
        batch_records: usize,
        poll: Duration,
        reports: UnboundedSender<Report>,
        live: Arc<Live>,
    ) -> Self {
        Processor { sink, stores, handle, batch_records, poll, reports, live, watermark: 0 }
    }

    /// Runs until [`Job::Stop`] (or the controller is gone); returns the sink.
    pub(crate) fn run(mut self, jobs: Receiver<Job>) -> Result<S, SinkError> {
        loop {
            match jobs.recv_timeout(self.poll) {
                Ok(Job::Mouthful(plan)) => self.mouthful(plan)?,
                Ok(Job::Stop) | Err(RecvTimeoutError::Disconnected) => return Ok(self.sink),
                Err(RecvTimeoutError::Timeout) => {}
            }
            self.poll_delivered();
        }
    }

    fn report(&self, r: Report) {
        // The controller outlives this thread; a send error means it is already gone.
        let _ = self.reports.send(r);
    }

    fn poll_delivered(&mut self) {
        let w = self.sink.delivered();
        if w > self.watermark {
            self.watermark = w;
            self.report(Report::Watermark(w));
        }
    }

    fn submit(&mut self, batch: Batch) -> Result<(), SinkError> {
        self.live.records.fetch_add(batch.records.len() as u64, Ordering::Relaxed);
        self.sink.submit(batch)?;
        self.poll_delivered();
        Ok(())
    }

    fn mouthful(&mut self, plan: MouthfulPlan) -> Result<(), SinkError> {
        let mut files = Vec::new();
        // Files fetched ahead (GETs in flight) while the current one is parsed.
        let mut ahead: std::collections::VecDeque<Started> = std::collections::VecDeque::new();
        let mut next = 0;
        for i in 0..plan.items.len() {
            while next < plan.items.len() && (next <= i || ahead.len() < FETCH_AHEAD) {
                if let Item::File(f) = &plan.items[next] {
                    ahead.push_back(self.start(f));
                }
                next += 1;
            }
            match plan.items[i].clone() {
                Item::BadMessage { message_id, reason, body } => {
                    let dead = DeadLetter { source: DeadSource::Message { message_id }, reason, text: body };
                    self.submit(Batch {
                        mouthful: plan.id,
                        file: None,
                        records: Vec::new(),
                        dead_letters: vec![dead],
                    })?;
                    self.report(Report::DeadLetters(1));
                }
                Item::File(file) => {
                    let Some(started) = ahead.pop_front() else { continue };
                    if let Some(outcome) = self.file(plan.id, file, started)? {
                        files.push(outcome);
                    }
                }
            }
        }
        self.sink.seal(Sealed { mouthful: plan.id, files })?;
        self.report(Report::Sealed(plan.id));
        self.poll_delivered();
        Ok(())
    }

    /// Reads one file; `None` when it failed and will be retried (its messages released).
    fn file(
        &mut self,
        mouthful: MouthfulId,
        file: FileRef,
        started: Started,
    ) -> Result<Option<FileOutcome>, SinkError> {
        let failed = Arc::new(AtomicBool::new(false));
        let opened = self.open(&file, started, &failed);
        let (info, opened) = match opened {
            Ok(pair) => pair,
            Err(Open::Retry(reason)) => {
                self.report(Report::Failed { mouthful, file, reason });
                return Ok(None);
            }
            Err(Open::Dead { status, reason, etag, size }) => {
                let object = ObjectId { bucket: file.bucket.clone(), key: file.key.clone(), etag };
                let dead = DeadLetter {
                    source: DeadSource::File { object: object.clone(), line: None },
                    reason,
                    text: String::new(),
                };
                let info = Arc::new(FileInfo::new(object.clone(), size));
                self.submit(Batch { mouthful, file: Some(info), records: Vec::new(), dead_letters: vec![dead] })?;
                let outcome = FileOutcome { object, size, status, stats: ParseStats::default() };
                self.report(Report::File { outcome: outcome.clone(), unknown: Vec::new(), dead_letters: 1 });
                return Ok(Some(outcome));
            }
        };
        let info = Arc::new(info);
        let (stats, unknown, dead_count, status) = match opened {
            Opened::Text(reader) => {
                self.drain(mouthful, &info, reader, |r| (r.stats().clone(), r.header().unknown.clone()))?
            }
            Opened::Parquet(reader, _spool) => {
                self.drain(mouthful, &info, reader, |r| (r.stats().clone(), r.header().unknown.clone()))?
            }
        };
        if failed.load(Ordering::Relaxed) {
            // The store failed mid-file, not the data: what was read was submitted (it will be
            // read again, with the same record ids); the messages go back to the queue.
            self.report(Report::Failed { mouthful, file, reason: "reading the object failed mid-file".into() });
            return Ok(None);
        }
        let outcome = FileOutcome { object: info.id.clone(), size: info.size, status, stats };
        self.report(Report::File { outcome: outcome.clone(), unknown, dead_letters: dead_count });
        Ok(Some(outcome))
    }

    /// Feeds a reader's records and dead letters to the sink in batches.
    fn drain<I>(
        &mut self,
        mouthful: MouthfulId,
        info: &Arc<FileInfo>,
        mut reader: I,
        finish: impl Fn(&I) -> (ParseStats, Vec<String>),
    ) -> Result<(ParseStats, Vec<String>, u64, FileStatus), SinkError>
    where
        I: Iterator<Item = Result<crate::Record, ParseError>>,
    {
        let mut records = Vec::with_capacity(self.batch_records);
        let mut dead = Vec::new();
        let mut dead_count = 0;
        let mut status = FileStatus::Complete;
        for item in &mut reader {
            match item {
                Ok(r) => records.push(r),
                Err(ParseError::Line(e)) => dead.push(DeadLetter {
                    source: DeadSource::File { object: info.id.clone(), line: Some(e.line) },
                    reason: e.kind.to_string(),
                    text: e.text,
                }),
                Err(ParseError::Damaged { after_line, truncated, reason }) => {
                    status = FileStatus::Damaged;
                    let what = if truncated { "truncated" } else { "damaged" };
                    dead.push(DeadLetter {
                        source: DeadSource::File { object: info.id.clone(), line: Some(after_line) },
                        reason: format!("file {what} after line {after_line}: {reason}"),
                        text: String::new(),
                    });
                }
            }
            if records.len() >= self.batch_records || dead.len() >= self.batch_records {
                dead_count += dead.len() as u64;
                let batch = Batch {
                    mouthful,
                    file: Some(info.clone()),
                    records: std::mem::replace(&mut records, Vec::with_capacity(self.batch_records)),
                    dead_letters: std::mem::take(&mut dead),
                };
                self.submit(batch)?;
            }
        }
        if !records.is_empty() || !dead.is_empty() {
            dead_count += dead.len() as u64;
            self.submit(Batch { mouthful, file: Some(info.clone()), records, dead_letters: dead })?;
        }
        let (stats, unknown) = finish(&reader);
        Ok((stats, unknown, dead_count, status))
    }

    /// Starts fetching a file on the runtime: the GET, then its chunks into a bounded channel
    /// (at most [`PREFETCH`] chunks ahead of the parser).
    fn start(&self, file: &FileRef) -> Started {
        let (meta_tx, meta) = tokio::sync::oneshot::channel();
        let (tx, chunks) = tokio::sync::mpsc::channel(PREFETCH);
        let stores = self.stores.clone();
        let (bucket, key) = (file.bucket.clone(), file.key.clone());
        self.handle.spawn(async move {
            let store = match stores.bucket(&bucket) {
                Ok(s) => s,
                Err(e) => return drop(meta_tx.send(Err(GetError::Unusable(e.to_string())))),
            };
            let path = match Path::parse(&key) {
                Ok(p) => p,
                Err(e) => return drop(meta_tx.send(Err(GetError::Unusable(format!("bad key: {e}"))))),
            };
            let got = match store.get(&path).await {
                Ok(g) => g,
                Err(object_store::Error::NotFound { .. }) => return drop(meta_tx.send(Err(GetError::NotFound))),
                Err(e) => return drop(meta_tx.send(Err(GetError::Retry(e.to_string())))),
            };
            if meta_tx.send(Ok(got.meta.clone())).is_err() {
                return;
            }
            let mut stream = got.into_stream();
            while let Some(chunk) = stream.next().await {
                let stop = chunk.is_err();
                if tx.send(chunk.map_err(io::Error::other)).await.is_err() || stop {
                    break;
                }
            }
        });
        Started { meta, chunks }
    }

    fn open(&self, file: &FileRef, started: Started, failed: &Arc<AtomicBool>) -> Result<(FileInfo, Opened), Open> {
        let etag_of = |e: Option<&String>| e.cloned().unwrap_or_default();
        let dead =
            |status, reason: String| Open::Dead { status, reason, etag: etag_of(file.etag.as_ref()), size: file.size };
        let meta = match started.meta.blocking_recv() {
            Ok(Ok(meta)) => meta,
            Ok(Err(GetError::NotFound)) => return Err(dead(FileStatus::Missing, "object not found".into())),
            Ok(Err(GetError::Unusable(reason))) => return Err(dead(FileStatus::Unreadable, reason)),
            Ok(Err(GetError::Retry(reason))) => return Err(Open::Retry(reason)),
            Err(_) => return Err(Open::Retry("the fetching task ended".into())),
        };
        let stored_etag = meta.e_tag.as_deref().map(|e| e.trim_matches('"').to_string());
        if let (Some(announced), Some(stored)) = (&file.etag, &stored_etag) {
            if announced != stored {
                return Err(dead(
                    FileStatus::Missing,
                    format!("object changed since the notification (ETag {stored})"),
                ));
            }
        }
        let size = meta.size;
        let info = FileInfo::new(
            ObjectId {
                bucket: file.bucket.clone(),
                key: file.key.clone(),
                etag: file.etag.clone().or(stored_etag).unwrap_or_default(),
            },
            size,
        );
        let chunks = ChunkReader { rx: started.chunks, current: bytes::Bytes::new() };
        let fetch = Fetch { inner: chunks, live: self.live.clone(), failed: failed.clone() };
        let header_err = |e: HeaderError| {
            if failed.load(Ordering::Relaxed) {
                Open::Retry(e.to_string())
            } else {
                Open::Dead { status: FileStatus::Unreadable, reason: e.to_string(), etag: info.id.etag.clone(), size }
            }
        };
        match info.format {
            crate::sink::Format::Text => {
                let reader = parse::text::open(fetch).map_err(header_err)?;
                Ok((info, Opened::Text(reader)))
            }
            crate::sink::Format::Parquet => {
                // Parquet's footer comes last: spool to a temporary file (memory stays flat).
                let mut spool = tempfile::NamedTempFile::new().map_err(|e| Open::Retry(e.to_string()))?;
                let mut fetch = fetch;
                if let Err(e) = io::copy(&mut fetch, spool.as_file_mut()) {
                    return Err(Open::Retry(e.to_string()));
                }
                let f = spool.reopen().map_err(|e| Open::Retry(e.to_string()))?;
                let reader = parse::ParquetReader::open(f).map_err(header_err)?;
                Ok((info, Opened::Parquet(reader, spool)))
            }
        }
    }
}

enum Open {
    /// Unusable as it is: dead-letter it and count the file as done.
    Dead { status: FileStatus, reason: String, etag: String, size: u64 },
    /// Failed in a way a retry may cure.
    Retry(String),
}
