//! [`Lake`]: the object store of a lake (a local directory or S3, through `object_store`), the
//! small tokio runtime its I/O runs on, and the reads and writes the writers need.
//!
//! Every object is written with one `put` of the whole object, which `object_store` makes atomic:
//! a file written beside the target and renamed over it on a local file system, one PUT on S3.
//! A reader never sees part of a file. On a local file system, a writer killed during a `put`
//! leaves its staging file (`<name>#<n>`, which `object_store` itself never lists); the writer
//! that resumes the cell removes it (see [`crate::writer`]).

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};

use crate::config::{LakeSettings, Location};
use crate::error::LakeError;
use crate::layout;
use crate::parquet_io;
use crate::row::LakeRow;
use crate::writer::TableWriter;

/// An open lake: where it is, and a runtime for its I/O. Cheap to clone (one per process is
/// enough; every writer of every table shares it).
#[derive(Clone)]
pub struct Lake {
    pub(crate) inner: Arc<LakeInner>,
}

pub(crate) struct LakeInner {
    pub(crate) store: Arc<dyn ObjectStore>,
    pub(crate) root: Path,
    /// The directory of a local lake (to remove staging files left by a killed writer).
    pub(crate) local_dir: Option<PathBuf>,
    pub(crate) settings: LakeSettings,
    pub(crate) location: String,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for LakeInner {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which a runtime context forbids; this does not.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// What `_lake/<table>/layout.json` records: cells and writers must stay the same across
/// restarts, or re-emitted rows would land in other cells and be stored twice.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct LayoutRecord {
    cell_ns: u64,
    writers: u32,
}

impl Lake {
    /// Opens the lake of `settings` (creating a local directory if missing; S3 credentials from
    /// the environment). Nothing is read or written yet.
    ///
    /// # Errors
    /// [`LakeError::Open`]: the directory cannot be created, the S3 client cannot be built, the
    /// runtime cannot start.
    pub fn open(settings: &LakeSettings) -> Result<Lake, LakeError> {
        let location = settings.location().url();
        let open_err = |detail: String| LakeError::Open { location: location.clone(), detail };
        let (store, root, local_dir): (Arc<dyn ObjectStore>, Path, Option<PathBuf>) = match settings.location() {
            Location::Local(dir) => {
                std::fs::create_dir_all(dir).map_err(|e| open_err(e.to_string()))?;
                let dir = dir.canonicalize().map_err(|e| open_err(e.to_string()))?;
                let store = LocalFileSystem::new_with_prefix(&dir).map_err(|e| open_err(e.to_string()))?;
                (Arc::new(store), Path::default(), Some(dir))
            }
            Location::S3 { bucket, prefix, endpoint, region } => {
                let mut b = AmazonS3Builder::from_env().with_bucket_name(bucket).with_region(region);
                if let Some(e) = endpoint {
                    b = b
                        .with_endpoint(e)
                        .with_virtual_hosted_style_request(false)
                        .with_allow_http(e.starts_with("http://"));
                }
                let store = b.build().map_err(|e| open_err(e.to_string()))?;
                (Arc::new(store), Path::from(prefix.as_str()), None)
            }
        };
        Lake::build(store, root, local_dir, settings.clone(), location)
    }

    /// A lake in an existing store, under `root` (for a store the caller built, such as one
    /// shared with other parts of the job, or a test's).
    ///
    /// # Errors
    /// [`LakeError::Open`]: the runtime cannot start.
    pub fn with_store(store: Arc<dyn ObjectStore>, root: Path, settings: LakeSettings) -> Result<Lake, LakeError> {
        let location = format!("{store}/{root}");
        Lake::build(store, root, None, settings, location)
    }

    fn build(
        store: Arc<dyn ObjectStore>,
        root: Path,
        local_dir: Option<PathBuf>,
        settings: LakeSettings,
        location: String,
    ) -> Result<Lake, LakeError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("flowmap-lake-io")
            .enable_all()
            .build()
            .map_err(|e| LakeError::Open { location: location.clone(), detail: e.to_string() })?;
        Ok(Lake { inner: Arc::new(LakeInner { store, root, local_dir, settings, location, runtime: Some(runtime) }) })
    }

    /// Where the lake is (`s3://bucket/prefix`, a directory, or the store and root given).
    pub fn location(&self) -> &str {
        &self.inner.location
    }

    /// The settings it was opened with.
    pub fn settings(&self) -> &LakeSettings {
        &self.inner.settings
    }

    /// The writer `writer` (of `writers`, the job's worker count; the worker index is the
    /// natural id) of table `R`: checks the table's layout record first (written when missing).
    ///
    /// # Errors
    /// [`LakeError::LayoutChanged`] when the table was written with another cell length or
    /// writer count; [`LakeError::Store`] when the record cannot be read or written;
    /// [`LakeError::Bookkeeping`] for an invalid table name or writer index.
    pub fn writer<R: LakeRow>(&self, writer: u32, writers: u32) -> Result<TableWriter<R>, LakeError> {
        check_table_name(R::TABLE)?;
        if writer >= writers {
            return Err(LakeError::Bookkeeping {
                path: R::TABLE.to_string(),
                detail: format!("writer {writer} of {writers}"),
            });
        }
        self.check_layout(R::TABLE, writer, writers)?;
        TableWriter::start(self.inner.clone(), writer)
    }

    /// Compares the table's layout record with this job's, or writes it when missing. Only
    /// writer 0 writes it (and removes staging files a killed write of it left): writers of one
    /// job start together, and a staging file must not be removed while another writer puts it.
    fn check_layout(&self, table: &str, writer: u32, writers: u32) -> Result<(), LakeError> {
        let inner = &self.inner;
        let path = layout::layout_path(&inner.root, table);
        if writer == 0 {
            inner.remove_staging(&path)?;
        }
        let cell_ns = inner.settings.cell_ns();
        match inner.get(&path)? {
            Some(bytes) => {
                let found: LayoutRecord = serde_json::from_slice(&bytes)
                    .map_err(|e| LakeError::Bookkeeping { path: path.to_string(), detail: e.to_string() })?;
                if found.cell_ns != cell_ns || found.writers != writers {
                    return Err(LakeError::LayoutChanged {
                        path: path.to_string(),
                        found_cell_ns: found.cell_ns,
                        found_writers: found.writers,
                        cell_ns,
                        writers,
                    });
                }
                Ok(())
            }
            None if writer != 0 => Ok(()),
            None => {
                let record = serde_json::to_vec(&LayoutRecord { cell_ns, writers })
                    .map_err(|e| LakeError::Bookkeeping { path: path.to_string(), detail: e.to_string() })?;
                inner.put(&path, record)
            }
        }
    }

    /// The data files of a table, relative to the lake's root, sorted.
    ///
    /// # Errors
    /// [`LakeError::Store`]: the listing failed.
    pub fn data_files(&self, table: &str) -> Result<Vec<String>, LakeError> {
        let inner = &self.inner;
        let prefix = layout::join(&inner.root, table);
        let metas: Vec<object_store::ObjectMeta> = inner
            .block_on(inner.store.list(Some(&prefix)).try_collect())
            .map_err(|e| LakeError::store("list", &prefix, e))?;
        let mut files: Vec<String> = metas
            .into_iter()
            .map(|m| m.location)
            .filter(|p| p.extension() == Some("parquet"))
            .map(|p| layout::relative(&inner.root, &p))
            .collect();
        files.sort();
        Ok(files)
    }

    /// Every row of a table, file by file in [`Lake::data_files`] order (for tools and tests; a
    /// query engine reads the files directly).
    ///
    /// # Errors
    /// [`LakeError::Store`] or [`LakeError::Parquet`]: a file cannot be read or is not the
    /// table's.
    pub fn read_table<R: LakeRow>(&self) -> Result<Vec<R>, LakeError> {
        let inner = &self.inner;
        let mut rows = Vec::new();
        for rel in self.data_files(R::TABLE)? {
            let path = layout::join(&inner.root, &rel);
            let bytes = inner.get(&path)?.ok_or_else(|| LakeError::store("get", &path, "listed but gone"))?;
            rows.extend(parquet_io::rows::<R>(bytes).map_err(|e| LakeError::parquet(&path, e))?);
        }
        Ok(rows)
    }
}

impl LakeInner {
    pub(crate) fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        match &self.runtime {
            Some(rt) => rt.block_on(f),
            // Only `Drop` takes the runtime, and nothing runs after it.
            None => futures::executor::block_on(f),
        }
    }

    /// The object at `path`, or `None` when there is none.
    pub(crate) fn get(&self, path: &Path) -> Result<Option<Bytes>, LakeError> {
        self.block_on(async {
            match self.store.get(path).await {
                Ok(r) => r.bytes().await.map(Some),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(e),
            }
        })
        .map_err(|e| LakeError::store("get", path, e))
    }

    /// Writes the whole object at `path` atomically.
    pub(crate) fn put(&self, path: &Path, bytes: Vec<u8>) -> Result<(), LakeError> {
        self.block_on(self.store.put(path, PutPayload::from(bytes)))
            .map(|_| ())
            .map_err(|e| LakeError::store("put", path, e))
    }

    /// Removes the staging files a killed `put` of `path` left in a local lake (`<name>#<n>`);
    /// returns how many.
    pub(crate) fn remove_staging(&self, path: &Path) -> Result<u64, LakeError> {
        let Some(dir) = &self.local_dir else { return Ok(0) };
        let Some(name) = path.filename() else { return Ok(0) };
        let file = path.parts().fold(dir.clone(), |p, part| p.join(part.as_ref()));
        let Some(parent) = file.parent() else { return Ok(0) };
        let entries = match std::fs::read_dir(parent) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(LakeError::store("list", path, e)),
        };
        let mut removed = 0;
        for entry in entries {
            let entry = entry.map_err(|e| LakeError::store("list", path, e))?;
            let other = entry.file_name();
            let Some(suffix) = other.to_str().and_then(|o| o.strip_prefix(name)).and_then(|s| s.strip_prefix('#'))
            else {
                continue;
            };
            if !suffix.is_empty() && suffix.bytes().all(|b| b.is_ascii_digit()) {
                std::fs::remove_file(entry.path()).map_err(|e| LakeError::store("delete", path, e))?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}

fn check_table_name(name: &str) -> Result<(), LakeError> {
    let ok = !name.is_empty()
        && !name.starts_with('_')
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(LakeError::Bookkeeping { path: name.to_string(), detail: "not a valid table name".into() })
    }
}
