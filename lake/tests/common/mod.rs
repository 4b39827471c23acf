//! Helpers of the lake's integration tests: settings, the sample input and its expected rows, a
//! store that fails on demand, checks of a lake's files.
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path as FsPath, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use flowmap_lake::sample::SampleInput;
use flowmap_lake::{EdgeRow, FlowRow, Lake, LakeConfig, LakeRow, LakeSettings};
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore, PutMultipartOptions,
    PutOptions, PutPayload, PutResult,
};

pub const SEC: u64 = 1_000_000_000;
/// 2026-11-29T12:24:00Z.
pub const BASE: u64 = 1_795_955_040 * SEC;

pub fn settings(location: &str, cell_s: u64, max_rows: usize) -> LakeSettings {
    let mut c = LakeConfig::at(location);
    c.cell = std::time::Duration::from_secs(cell_s);
    c.max_rows_per_file = max_rows;
    c.validate().unwrap()
}

pub fn local(dir: &FsPath, cell_s: u64, max_rows: usize) -> Lake {
    Lake::open(&settings(dir.to_str().unwrap(), cell_s, max_rows)).unwrap()
}

/// Every row of the sample input, by key.
pub fn expected_flows(input: &SampleInput) -> BTreeMap<(u64, u64, bool), FlowRow> {
    (0..input.messages).flat_map(|i| input.flows(i)).map(|(_, r)| (r.key(), r)).collect()
}

pub fn expected_edges(input: &SampleInput) -> BTreeMap<<EdgeRow as LakeRow>::Key, EdgeRow> {
    (0..input.messages).flat_map(|i| input.edges(i)).map(|(_, r)| (r.key(), r)).collect()
}

/// The rows of a table by key, failing on a key stored twice.
pub fn stored<R: LakeRow + fmt::Debug>(lake: &Lake) -> BTreeMap<R::Key, R> {
    let mut out = BTreeMap::new();
    for row in lake.read_table::<R>().unwrap() {
        let key = row.key();
        assert!(out.insert(key.clone(), row).is_none(), "{} row {key:?} stored twice", R::TABLE);
    }
    out
}

/// Every file under a directory, relative, sorted.
pub fn files(dir: &FsPath) -> Vec<String> {
    fn walk(root: &FsPath, dir: &FsPath, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                out.push(p.strip_prefix(root).unwrap().to_str().unwrap().to_string());
            }
        }
    }
    let mut out = Vec::new();
    if dir.exists() {
        walk(dir, dir, &mut out);
    }
    out.sort();
    out
}

/// The path of the test binary's temporary lakes' parent (in the target directory, so a failed
/// test leaves its lake to look at).
pub fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("lake-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A store that passes everything to another, and fails the `fail_at`-th put (counting from 1;
/// only puts of data files when `data_only`) and every put after it (a store that went away), as
/// a failed upload would: nothing is written.
#[derive(Debug)]
pub struct FailingStore {
    pub inner: Arc<dyn ObjectStore>,
    pub puts: AtomicU64,
    pub fail_at: u64,
    pub data_only: bool,
}

impl FailingStore {
    pub fn new(inner: Arc<dyn ObjectStore>, fail_at: u64, data_only: bool) -> Arc<FailingStore> {
        Arc::new(FailingStore { inner, puts: AtomicU64::new(0), fail_at, data_only })
    }
}

impl fmt::Display for FailingStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FailingStore({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for FailingStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        let counted = !self.data_only || location.extension() == Some("parquet");
        let n = if counted { self.puts.fetch_add(1, Ordering::SeqCst) + 1 } else { 0 };
        if counted && n >= self.fail_at || self.puts.load(Ordering::SeqCst) >= self.fail_at {
            return Err(object_store::Error::Generic { store: "failing", source: format!("put {n} fails").into() });
        }
        self.inner.put_opts(location, payload, opts).await
    }
    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }
    async fn get_opts(&self, location: &Path, options: GetOptions) -> object_store::Result<GetResult> {
        self.inner.get_opts(location, options).await
    }
    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }
    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }
    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }
    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}
