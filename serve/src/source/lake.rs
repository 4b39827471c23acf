//! The lake: Parquet tables `edges/` and `events/` under a root, Hive-partitioned by the hour of
//! their time column (`<table>/dt=YYYY-MM-DD/hour=HH/*.parquet`, any file names).
//!
//! A request lists only the partitions its range overlaps and reads only their `*.parquet` files
//! (names starting with `.` or `_`, other files and other directories are a writer's business
//! and are not read). Decoded files are cached by (path, length, modification time), least
//! recently used first out past `cache_rows` rows, so the page's repeated requests over one range
//! read each file once, and a file the writer replaces is read again. A file that cannot be read
//! is remembered the same way (and counted once, in [`Health::bad_files`]) until it changes.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use chrono::NaiveDate;
use foldhash::HashMap;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::columns::{self, BadRows, Names};
use super::{EdgeRows, EdgeSource, Health, SourceError};
use crate::row::{EdgeRow, EventRow};
use crate::time::TimeRange;

const HOUR_NS: u64 = 3_600_000_000_000;
/// Problems kept for `/healthz`, most recent last.
const PROBLEMS_KEPT: usize = 20;

/// How the lake source reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LakeOptions {
    cache_rows: usize,
}

impl LakeOptions {
    /// Keep up to `cache_rows` decoded rows (edges and events) in memory; the least recently
    /// used files go first. A file larger than that is still read, but not kept.
    pub const fn new(cache_rows: usize) -> Self {
        LakeOptions { cache_rows }
    }
}

impl Default for LakeOptions {
    /// Five million rows (about 1 GB of edge rows with their sketches).
    fn default() -> Self {
        LakeOptions { cache_rows: 5_000_000 }
    }
}

/// The lake's tables, read through a cache of decoded files.
#[derive(Debug)]
pub struct LakeSource {
    root: PathBuf,
    options: LakeOptions,
    cache: Mutex<Cache>,
}

#[derive(Debug, Default)]
struct Cache {
    files: HashMap<PathBuf, Cached>,
    rows: usize,
    tick: u64,
    bad_rows: BadRows,
    bad_files: u64,
    problems: Vec<String>,
}

/// A file's identity: a change of either means the file was rewritten.
type Version = (u64, Option<SystemTime>);

#[derive(Debug)]
struct Cached {
    version: Version,
    last_used: u64,
    content: Content,
}

#[derive(Clone, Debug)]
enum Content {
    Edges(Arc<[EdgeRow]>),
    Events(Arc<[EventRow]>),
    Unreadable,
}

impl Content {
    fn rows(&self) -> usize {
        match self {
            Content::Edges(r) => r.len(),
            Content::Events(r) => r.len(),
            Content::Unreadable => 0,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Table {
    Edges,
    Events,
}

impl Table {
    const fn dir(self) -> &'static str {
        match self {
            Table::Edges => "edges",
            Table::Events => "events",
        }
    }
}

impl LakeSource {
    /// The lake under `root` (its tables may not exist yet: they read as empty).
    ///
    /// # Errors
    /// [`SourceError::List`] when `root` is not a readable directory.
    pub fn open(root: impl Into<PathBuf>, options: LakeOptions) -> Result<Self, SourceError> {
        let root = root.into();
        std::fs::read_dir(&root).map_err(|source| SourceError::List { path: root.clone(), source })?;
        Ok(LakeSource { root, options, cache: Mutex::default() })
    }

    /// The lake's root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The partitions of `table`, as (start of the hour, directory), oldest first.
    fn partitions(&self, table: Table) -> Result<Vec<(u64, PathBuf)>, SourceError> {
        let dir = self.root.join(table.dir());
        let mut out = Vec::new();
        for (day, day_dir) in subdirs(&dir, "dt=")? {
            let Ok(date) = NaiveDate::parse_from_str(&day, "%Y-%m-%d") else { continue };
            let Some(midnight) = date.and_hms_opt(0, 0, 0).and_then(|t| t.and_utc().timestamp_nanos_opt()) else {
                continue;
            };
            let Ok(midnight) = u64::try_from(midnight) else { continue };
            for (hour, hour_dir) in subdirs(&day_dir, "hour=")? {
                match hour.parse::<u64>() {
                    Ok(h) if h < 24 => out.push((midnight + h * HOUR_NS, hour_dir)),
                    _ => {}
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// The contents of the files of the partitions that overlap `range`.
    fn read(&self, table: Table, range: TimeRange) -> Result<Vec<Content>, SourceError> {
        let mut out = Vec::new();
        for (start, dir) in self.partitions(table)? {
            if start < range.to_ns() && range.from_ns() < start + HOUR_NS {
                for file in parquet_files(&dir)? {
                    out.push(self.file(table, &file));
                }
            }
        }
        Ok(out)
    }

    /// One file's content, from the cache or read now.
    fn file(&self, table: Table, path: &Path) -> Content {
        let version = match std::fs::metadata(path) {
            Ok(m) => (m.len(), m.modified().ok()),
            Err(_) => return Content::Unreadable, // removed since the listing
        };
        {
            let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
            cache.tick += 1;
            let tick = cache.tick;
            if let Some(hit) = cache.files.get_mut(path).filter(|c| c.version == version) {
                hit.last_used = tick;
                return hit.content.clone();
            }
        }
        // Read outside the lock: other requests keep using the cache meanwhile.
        let mut bad = BadRows::new();
        let mut unreadable = None;
        let content = match read_file(table, path, &mut bad) {
            Ok(content) => content,
            Err(message) => {
                tracing::warn!(file = %path.display(), %message, "lake file skipped");
                metrics::counter!("flowmap_serve_lake_bad_files_total").increment(1);
                unreadable = Some(message);
                Content::Unreadable
            }
        };
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(message) = unreadable {
            cache.bad_files += 1;
            cache.problem(format!("{}: {message}", path.display()));
        }
        for (reason, n) in bad {
            metrics::counter!("flowmap_serve_lake_bad_rows_total").increment(n);
            cache.problem(format!("{}: {n} rows skipped: {reason}", path.display()));
            *cache.bad_rows.entry(reason).or_default() += n;
        }
        let rows = content.rows();
        if rows <= self.options.cache_rows {
            cache.tick += 1;
            let cached = Cached { version, last_used: cache.tick, content: content.clone() };
            if let Some(old) = cache.files.insert(path.to_owned(), cached) {
                cache.rows -= old.content.rows();
            }
            cache.rows += rows;
            cache.evict(self.options.cache_rows);
        }
        content
    }
}

impl Cache {
    fn problem(&mut self, problem: String) {
        if self.problems.len() == PROBLEMS_KEPT {
            self.problems.remove(0);
        }
        self.problems.push(problem);
    }

    fn evict(&mut self, limit: usize) {
        while self.rows > limit {
            let Some(oldest) = self.files.iter().min_by_key(|(_, c)| c.last_used).map(|(p, _)| p.clone()) else {
                break;
            };
            if let Some(gone) = self.files.remove(&oldest) {
                self.rows -= gone.content.rows();
            }
        }
    }
}

/// Reads a whole file of `table`.
fn read_file(table: Table, path: &Path, bad: &mut BadRows) -> Result<Content, String> {
    let file = File::open(path).map_err(|e| format!("cannot open: {e}"))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .and_then(|b| b.with_batch_size(64 * 1024).build())
        .map_err(|e| format!("not a readable Parquet file: {e}"))?;
    let mut names = Names::default();
    let (mut edges, mut events) = (Vec::new(), Vec::new());
    for batch in reader {
        let batch = batch.map_err(|e| format!("cannot decode: {e}"))?;
        match table {
            Table::Edges => edges.extend(columns::edges(&batch, &mut names, bad)?),
            Table::Events => events.extend(columns::events(&batch, &mut names, bad)?),
        }
    }
    Ok(match table {
        Table::Edges => Content::Edges(edges.into()),
        Table::Events => Content::Events(events.into()),
    })
}

/// The subdirectories of `dir` named `<key><value>`, as (value, path); none when `dir` does not
/// exist.
fn subdirs(dir: &Path, key: &str) -> Result<Vec<(String, PathBuf)>, SourceError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(SourceError::List { path: dir.to_owned(), source }),
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(value) = name.to_str().and_then(|n| n.strip_prefix(key)) else { continue };
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            out.push((value.to_owned(), entry.path()));
        }
    }
    Ok(out)
}

/// The `*.parquet` files of a partition directory, in name order.
fn parquet_files(dir: &Path) -> Result<Vec<PathBuf>, SourceError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(SourceError::List { path: dir.to_owned(), source }),
    };
    let mut out: Vec<PathBuf> = entries
        .flatten()
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.ends_with(".parquet") && !name.starts_with('.') && !name.starts_with('_')
        })
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| e.path())
        .collect();
    out.sort();
    Ok(out)
}

impl EdgeSource for LakeSource {
    fn edges(&self, range: TimeRange) -> Result<EdgeRows, SourceError> {
        let chunks = self
            .read(Table::Edges, range)?
            .into_iter()
            .filter_map(|c| match c {
                Content::Edges(rows) => Some(rows),
                _ => None,
            })
            .collect();
        Ok(EdgeRows::new(range, chunks))
    }

    fn events(&self, range: TimeRange) -> Result<Vec<EventRow>, SourceError> {
        let mut out = Vec::new();
        for content in self.read(Table::Events, range)? {
            if let Content::Events(rows) = content {
                out.extend(rows.iter().filter(|e| range.contains(e.at_ns)).cloned());
            }
        }
        Ok(out)
    }

    fn extent(&self) -> Result<Option<TimeRange>, SourceError> {
        let partitions = self.partitions(Table::Edges)?;
        let rows_of = |dir: &Path| -> Result<Vec<Arc<[EdgeRow]>>, SourceError> {
            Ok(parquet_files(dir)?
                .iter()
                .filter_map(|f| match self.file(Table::Edges, f) {
                    Content::Edges(rows) if !rows.is_empty() => Some(rows),
                    _ => None,
                })
                .collect())
        };
        let mut first = None;
        for (_, dir) in &partitions {
            first = rows_of(dir)?.iter().flat_map(|c| c.iter()).map(|r| r.bucket_start_ns).min();
            if first.is_some() {
                break;
            }
        }
        let mut last = None;
        for (_, dir) in partitions.iter().rev() {
            last = rows_of(dir)?
                .iter()
                .flat_map(|c| c.iter())
                .map(|r| r.bucket_start_ns.saturating_add(u64::from(r.bucket_s.max(1)) * 1_000_000_000))
                .max();
            if last.is_some() {
                break;
            }
        }
        Ok(first.zip(last).and_then(|(f, l)| TimeRange::new(f, l).ok()))
    }

    fn health(&self) -> Health {
        let ok = std::fs::read_dir(&self.root).is_ok();
        let cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        let mut problems = cache.problems.clone();
        if !ok {
            problems.push(format!("{}: cannot be read", self.root.display()));
        }
        let (mut edge_rows, mut event_rows) = (0, 0);
        for cached in cache.files.values() {
            match &cached.content {
                Content::Edges(r) => edge_rows += r.len() as u64,
                Content::Events(r) => event_rows += r.len() as u64,
                Content::Unreadable => {}
            }
        }
        let mut notes = Vec::new();
        if !self.root.join(Table::Events.dir()).is_dir() {
            notes.push(format!(
                "the lake has no events table ({}) yet: no events are shown from it (live events come from a running job)",
                self.root.join(Table::Events.dir()).display()
            ));
        }
        Health {
            source: "lake",
            ok,
            problems,
            notes,
            edge_rows,
            event_rows,
            bad_rows: cache.bad_rows.clone(),
            bad_files: cache.bad_files,
            ..Health::default()
        }
    }
}
