//! [`TableWriter`]: the writer a job's operator drives, and its background thread.
//!
//! # Contract with the job
//! The operator hands over rows with their dataflow time ([`TableWriter::push`]) and the input
//! frontier ([`TableWriter::advance`]: every later push has a time at or after it), and asks
//! [`TableWriter::undelivered`] for the earliest time with rows not yet durably stored, holding
//! its delivered frontier there (the same contract as the Kafka sink). The job commits its input
//! only below that frontier; after a kill it re-emits every row of every uncommitted message,
//! possibly including rows already stored.
//!
//! # What the writer does
//! Rows go to the cell of their dataflow time ([`crate::cell`]: partitions, deterministic parts,
//! duplicates dropped). Parts are written by a background thread, so the operator never waits
//! for the store (except when [`QUEUE_BATCHES`] batches are queued: then `push` blocks, which
//! is the back-pressure). Each data file is committed atomically, and before any data file of a
//! cell is written, the cell's manifest (`_lake/<table>/w<writer>/<day>/<cell>.json`) lists it.
//!
//! # Why a restart neither duplicates nor loses rows
//! The first rows of a cell a writer sees make it read the cell's manifest. Files listed there
//! and present are read (their keys only): their rows are already stored, so re-emitted copies
//! are dropped, and new parts are numbered after them. Files listed but absent were never
//! written (the writer stopped between the manifest and the file): they are forgotten, and their
//! rows, not being stored, are written again (in full re-emissions, under the same names: the
//! job's re-emission of an undelivered cell is the same rows, cut the same way). No existing data
//! file is ever rewritten with other rows, so no reader ever sees a row disappear or appear
//! twice. (A design that rewrites a cell as the union of its old files and the new rows has a
//! window where a crash loses rows: the first rewritten part pushes rows into later parts that
//! are not written yet.)

use std::collections::BTreeMap;
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use serde::{Deserialize, Serialize};

use crate::cell::{Cell, Insert, Planned};
use crate::error::{BadRow, LakeError};
use crate::layout::{self, Partition};
use crate::parquet_io;
use crate::row::LakeRow;
use crate::stats::WriterStats;
use crate::store::LakeInner;

/// Rows gathered before they go to the background thread as one batch (fewer wake-ups of it);
/// [`TableWriter::advance`] sends a smaller batch at once.
pub const BATCH_ROWS: usize = 1024;

/// Batches queued for the background thread before [`TableWriter::push`] blocks (so at most
/// `BATCH_ROWS * QUEUE_BATCHES` rows wait for it).
pub const QUEUE_BATCHES: usize = 256;

enum Command<R> {
    Rows(Vec<(u64, R)>),
    Frontier(Option<u64>),
    Finish,
}

type Notify = Box<dyn Fn() + Send + Sync>;

#[derive(Default)]
struct Shared {
    stats: Mutex<WriterStats>,
    error: Mutex<Option<LakeError>>,
    notify: Mutex<Option<Notify>>,
}

impl Shared {
    fn stats(&self) -> std::sync::MutexGuard<'_, WriterStats> {
        self.stats.lock().unwrap_or_else(PoisonError::into_inner)
    }
    fn error(&self) -> Option<LakeError> {
        self.error.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
    fn notify(&self) {
        if let Some(f) = &*self.notify.lock().unwrap_or_else(PoisonError::into_inner) {
            f();
        }
    }
}

/// Writes one table's rows of one writer (a timely worker) into the lake. Create it with
/// [`crate::Lake::writer`].
pub struct TableWriter<R: LakeRow> {
    tx: Option<SyncSender<Command<R>>>,
    /// Rows not yet sent to the background thread, with their times.
    batch: Vec<(u64, R)>,
    settled: Receiver<Vec<(u64, u64)>>,
    /// Rows per dataflow time not yet stored (nor dropped as duplicates).
    outstanding: BTreeMap<u64, u64>,
    frontier_sent: Option<Option<u64>>,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    writer: u32,
}

impl<R: LakeRow> TableWriter<R> {
    pub(crate) fn start(lake: Arc<LakeInner>, writer: u32) -> Result<TableWriter<R>, LakeError> {
        let (tx, rx) = mpsc::sync_channel(QUEUE_BATCHES);
        let (settled_tx, settled) = mpsc::channel();
        let shared = Arc::new(Shared::default());
        let background = Background::<R> {
            lake,
            writer,
            cells: BTreeMap::new(),
            frontier: Some(0),
            shared: shared.clone(),
            settled: settled_tx,
        };
        let thread = std::thread::Builder::new()
            .name(format!("lake-{}-w{writer}", R::TABLE))
            .spawn(move || background.run(rx))
            .map_err(|_| LakeError::WriterGone { table: R::TABLE, writer })?;
        Ok(TableWriter {
            tx: Some(tx),
            batch: Vec::new(),
            settled,
            outstanding: BTreeMap::new(),
            frontier_sent: None,
            shared,
            thread: Some(thread),
            writer,
        })
    }

    /// Calls `f` (from the background thread) whenever rows become stored or the writer fails,
    /// so an operator can schedule itself (a timely `SyncActivator`, for example) instead of
    /// polling.
    pub fn set_notify(&self, f: impl Fn() + Send + Sync + 'static) {
        *self.shared.notify.lock().unwrap_or_else(PoisonError::into_inner) = Some(Box::new(f));
    }

    /// Takes rows of dataflow time `time` (at or after the last frontier given to
    /// [`TableWriter::advance`]). Rows that fail [`LakeRow::check`] are counted
    /// ([`WriterStats::rejected`]), logged and skipped. Blocks while [`QUEUE_BATCHES`] batches
    /// of [`BATCH_ROWS`] are queued.
    ///
    /// # Errors
    /// The writer has failed (the error it failed with).
    pub fn push(&mut self, time: u64, mut rows: Vec<R>) -> Result<(), LakeError> {
        self.check()?;
        let mut bad: Vec<BadRow> = Vec::new();
        rows.retain(|r| match r.check() {
            Ok(()) => true,
            Err(e) => {
                bad.push(e);
                false
            }
        });
        if !bad.is_empty() {
            let mut stats = self.shared.stats();
            for reason in bad {
                let n = stats.rejected.entry(reason.name()).or_default();
                *n += 1;
                if n.is_power_of_two() {
                    tracing::warn!(table = R::TABLE, writer = self.writer, %reason, count = *n, "lake: rows rejected");
                }
            }
        }
        if rows.is_empty() {
            return Ok(());
        }
        self.shared.stats().rows_received += rows.len() as u64;
        *self.outstanding.entry(time).or_default() += rows.len() as u64;
        self.batch.extend(rows.into_iter().map(|r| (time, r)));
        if self.batch.len() >= BATCH_ROWS {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), LakeError> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.batch);
        self.send(Command::Rows(batch))
    }

    /// The input frontier: every later [`TableWriter::push`] has a time at or after `frontier`
    /// (`None`: there will be none). Cells that end at or before it are written, and full parts
    /// whose rows are all before it.
    ///
    /// # Errors
    /// The writer has failed.
    pub fn advance(&mut self, frontier: Option<u64>) -> Result<(), LakeError> {
        self.check()?;
        self.flush()?;
        if self.frontier_sent == Some(frontier) {
            return Ok(());
        }
        self.frontier_sent = Some(frontier);
        self.send(Command::Frontier(frontier))
    }

    /// The earliest dataflow time with rows pushed and not yet durably stored (`None`: every row
    /// pushed is stored, or was a duplicate of a stored row).
    ///
    /// # Errors
    /// The writer has failed: nothing it still holds will be stored.
    pub fn undelivered(&mut self) -> Result<Option<u64>, LakeError> {
        self.drain();
        self.check()?;
        Ok(self.outstanding.first_key_value().map(|(t, _)| *t))
    }

    /// Rows pushed and not yet stored.
    pub fn pending_rows(&mut self) -> u64 {
        self.drain();
        self.outstanding.values().sum()
    }

    /// The counters so far.
    pub fn stats(&self) -> WriterStats {
        self.shared.stats().clone()
    }

    /// Writes everything held (as if the input had ended) and stops the background thread.
    ///
    /// # Errors
    /// The writer failed, now or before.
    pub fn finish(mut self) -> Result<WriterStats, LakeError> {
        self.check()?;
        let sent = self.flush().and_then(|_| self.send(Command::Finish));
        self.tx = None;
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                return Err(self.gone());
            }
        }
        sent?;
        self.drain();
        self.check()?;
        if let Some((&time, &rows)) = self.outstanding.first_key_value() {
            return Err(LakeError::Bookkeeping {
                path: R::TABLE.to_string(),
                detail: format!("{rows} rows of time {time} neither stored nor settled at finish"),
            });
        }
        Ok(self.stats())
    }

    fn send(&mut self, command: Command<R>) -> Result<(), LakeError> {
        let Some(tx) = &self.tx else { return Err(self.gone()) };
        tx.send(command).map_err(|_| self.shared.error().unwrap_or_else(|| self.gone()))
    }

    fn check(&self) -> Result<(), LakeError> {
        match self.shared.error() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn gone(&self) -> LakeError {
        LakeError::WriterGone { table: R::TABLE, writer: self.writer }
    }

    fn drain(&mut self) {
        while let Ok(settled) = self.settled.try_recv() {
            for (time, n) in settled {
                if let Some(count) = self.outstanding.get_mut(&time) {
                    *count = count.saturating_sub(n);
                    if *count == 0 {
                        self.outstanding.remove(&time);
                    }
                }
            }
        }
    }
}

/// The manifest of one cell of one writer: the data files it has (or is about to have).
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    version: u32,
    table: String,
    writer: u32,
    cell_start_ns: u64,
    cell_ns: u64,
    files: Vec<ManifestFile>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ManifestFile {
    /// Relative to the lake's root.
    path: String,
    /// The first ns of the file's partition.
    partition_ns: u64,
    part: u32,
    rows: u64,
}

struct OpenCell<R: LakeRow> {
    cell: Cell<R>,
    manifest: Manifest,
}

struct Background<R: LakeRow> {
    lake: Arc<LakeInner>,
    writer: u32,
    cells: BTreeMap<u64, OpenCell<R>>,
    frontier: Option<u64>,
    shared: Arc<Shared>,
    settled: Sender<Vec<(u64, u64)>>,
}

impl<R: LakeRow> Background<R> {
    fn run(mut self, rx: Receiver<Command<R>>) {
        // A closed channel without `Finish` is a writer dropped unfinished: stop without writing
        // (nothing held was reported delivered, so the job produces it again).
        while let Ok(command) = rx.recv() {
            let finish = matches!(command, Command::Finish);
            let result = match command {
                Command::Rows(rows) => self.rows(rows),
                Command::Frontier(f) => self.advance(f),
                Command::Finish => self.advance(None),
            };
            if let Err(e) = result {
                tracing::error!(table = R::TABLE, writer = self.writer, error = %e, "lake writer stopped");
                self.shared.error.lock().unwrap_or_else(PoisonError::into_inner).get_or_insert(e);
                self.shared.notify();
                return;
            }
            if finish {
                return;
            }
        }
    }

    fn cell_ns(&self) -> u64 {
        self.lake.settings.cell_ns()
    }

    fn rows(&mut self, rows: Vec<(u64, R)>) -> Result<(), LakeError> {
        let cell_ns = self.cell_ns();
        let mut settled: BTreeMap<u64, u64> = BTreeMap::new();
        let mut touched: Vec<u64> = Vec::new();
        let mut late = 0;
        for (time, row) in rows {
            let start = layout::cell_start(time, cell_ns);
            if self.frontier.is_none_or(|f| time < f) {
                late += 1;
            }
            if touched.last() != Some(&start) {
                if !self.cells.contains_key(&start) {
                    let open = self.open(start)?;
                    self.cells.insert(start, open);
                }
                touched.push(start);
            }
            let Some(open) = self.cells.get_mut(&start) else { continue };
            match open.cell.insert(time, row) {
                Insert::Held => {}
                Insert::Duplicate(t) | Insert::Replaced(t) => *settled.entry(t).or_default() += 1,
            }
        }
        if late > 0 {
            self.shared.stats().late_rows += late;
        }
        if !settled.is_empty() {
            self.shared.stats().duplicates += settled.values().sum::<u64>();
            self.settle(settled);
        }
        // Rows of a cell the frontier has already passed (a breach of the contract, counted
        // above) are written at once rather than held.
        touched.sort_unstable();
        touched.dedup();
        for start in touched {
            if self.frontier.is_none_or(|f| start + cell_ns <= f) {
                self.close(start)?;
            }
        }
        Ok(())
    }

    fn advance(&mut self, frontier: Option<u64>) -> Result<(), LakeError> {
        self.frontier = frontier;
        let max_rows = self.lake.settings.max_rows_per_file();
        let starts: Vec<u64> = self.cells.keys().copied().collect();
        for start in starts {
            if frontier.is_none_or(|f| start + self.cell_ns() <= f) {
                self.close(start)?;
            } else if let Some(open) = self.cells.get_mut(&start) {
                if open.cell.held() >= max_rows {
                    let parts = open.cell.cut(frontier, max_rows);
                    self.commit(start, parts)?;
                }
            }
        }
        Ok(())
    }

    fn close(&mut self, start: u64) -> Result<(), LakeError> {
        let max_rows = self.lake.settings.max_rows_per_file();
        let Some(open) = self.cells.get_mut(&start) else { return Ok(()) };
        let parts = open.cell.close(max_rows);
        self.commit(start, parts)?;
        self.cells.remove(&start);
        self.shared.stats().cells_closed += 1;
        Ok(())
    }

    /// Lists the parts in the cell's manifest, then writes each.
    fn commit(&mut self, start: u64, parts: Vec<Planned<R>>) -> Result<(), LakeError> {
        if parts.is_empty() {
            return Ok(());
        }
        let lake = self.lake.clone();
        let Some(open) = self.cells.get_mut(&start) else { return Ok(()) };
        let paths: Vec<object_store::path::Path> = parts
            .iter()
            .map(|p| layout::data_path(&lake.root, R::TABLE, p.partition, start, self.writer, p.part))
            .collect();
        for (p, path) in parts.iter().zip(&paths) {
            open.manifest.files.push(ManifestFile {
                path: layout::relative(&lake.root, path),
                partition_ns: p.partition.start_ns(),
                part: p.part,
                rows: p.rows.len() as u64,
            });
        }
        let manifest_path = layout::manifest_path(&lake.root, R::TABLE, self.writer, start);
        let manifest = serde_json::to_vec_pretty(&open.manifest)
            .map_err(|e| LakeError::Bookkeeping { path: manifest_path.to_string(), detail: e.to_string() })?;
        lake.put(&manifest_path, manifest)?;
        self.shared.stats().manifests_written += 1;
        for (part, path) in parts.into_iter().zip(paths) {
            let rows: Vec<&R> = part.rows.iter().map(|(_, r)| r).collect();
            let bytes =
                parquet_io::encode(&rows, lake.settings.compression()).map_err(|e| LakeError::parquet(&path, e))?;
            let size = bytes.len() as u64;
            lake.put(&path, bytes)?;
            {
                let mut stats = self.shared.stats();
                stats.files_written += 1;
                stats.rows_written += rows.len() as u64;
                stats.bytes_written += size;
            }
            let mut settled: BTreeMap<u64, u64> = BTreeMap::new();
            for (time, _) in &part.rows {
                *settled.entry(*time).or_default() += 1;
            }
            self.settle(settled);
        }
        Ok(())
    }

    fn settle(&self, settled: BTreeMap<u64, u64>) {
        // The receiver is gone only when the writer was dropped; nothing waits for this then.
        let _ = self.settled.send(settled.into_iter().collect());
        self.shared.notify();
    }

    /// The state of a cell this run has not seen yet: its manifest's files that exist (their
    /// keys are stored), with leftovers of files that were never written cleaned up.
    fn open(&mut self, start: u64) -> Result<OpenCell<R>, LakeError> {
        let lake = self.lake.clone();
        let path = layout::manifest_path(&lake.root, R::TABLE, self.writer, start);
        let fresh = Manifest {
            version: 1,
            table: R::TABLE.to_string(),
            writer: self.writer,
            cell_start_ns: start,
            cell_ns: self.cell_ns(),
            files: Vec::new(),
        };
        // A manifest put killed mid-write left a staging file (only this writer puts it).
        let removed = lake.remove_staging(&path)?;
        self.shared.stats().staging_removed += removed;
        let Some(bytes) = lake.get(&path)? else {
            return Ok(OpenCell { cell: Cell::new([], BTreeMap::new()), manifest: fresh });
        };
        let bad = |detail: String| LakeError::Bookkeeping { path: path.to_string(), detail };
        let found: Manifest = serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
        if (found.version, found.table.as_str(), found.writer, found.cell_start_ns, found.cell_ns)
            != (1, R::TABLE, self.writer, start, self.cell_ns())
        {
            return Err(bad(format!(
                "version {} of table {} writer {} cell {} length {}: not this cell",
                found.version, found.table, found.writer, found.cell_start_ns, found.cell_ns
            )));
        }
        let mut stored = Vec::new();
        let mut next_parts: BTreeMap<Partition, u32> = BTreeMap::new();
        let mut files = Vec::new();
        for file in found.files {
            let data = layout::join(&lake.root, &file.path);
            match lake.get(&data)? {
                None => {
                    let removed = lake.remove_staging(&data)?;
                    let mut stats = self.shared.stats();
                    stats.missing_files += 1;
                    stats.staging_removed += removed;
                }
                Some(bytes) => {
                    let keys = parquet_io::keys::<R>(bytes).map_err(|e| LakeError::parquet(&data, e))?;
                    if keys.len() as u64 != file.rows {
                        tracing::warn!(path = %data, listed = file.rows, found = keys.len(), "lake: row count differs from the manifest");
                    }
                    stored.extend(keys);
                    let next = next_parts.entry(Partition::of_ns(file.partition_ns)).or_default();
                    *next = (*next).max(file.part + 1);
                    self.shared.stats().existing_files_read += 1;
                    files.push(file);
                }
            }
        }
        self.shared.stats().cells_resumed += 1;
        Ok(OpenCell { cell: Cell::new(stored, next_parts), manifest: Manifest { files, ..fresh } })
    }
}
