//! Reading flow log files from a local directory for a batch run, into rows with their plans.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use flowmap_operators::Ip;
use flowmap_schema as wire;
use flowmap_vpc::parse::{self, ParquetReader, ParseError};
use flowmap_vpc::{FileInfo, LogStatus, ObjectId};

use super::EndPlan;
use crate::config::JobConfig;

/// Why the flow logs could not be read (a bad row is counted, never this).
#[derive(Debug, thiserror::Error)]
pub enum VpcLoadError {
    /// The directory or a file could not be read.
    #[error("cannot read flow logs at {path}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A file has no usable header (not a flow log).
    #[error("{path} is not a flow log: {reason}")]
    Header {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
}

/// What reading the files found.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct LoadStats {
    /// Files read.
    pub files: u64,
    /// Rows read (every row becomes an output record).
    pub rows: u64,
    /// Of those, `NODATA` rows.
    pub nodata: u64,
    /// Of those, `SKIPDATA` rows.
    pub skipdata: u64,
    /// Malformed lines (skipped, listed in `dead_letters`).
    pub malformed: u64,
    /// Files that end in damage (a truncated gzip stream): their rows before it are used.
    pub damaged: u64,
    /// Each malformed line or damaged file: (file, line, why).
    pub dead_letters: Vec<(String, u64, String)>,
}

/// Flow log rows read for a run: each as its output record (ends not yet attributed) with what
/// becomes of each end.
#[derive(Debug, Default)]
pub struct VpcRows {
    /// The rows' output records, ends unattributed.
    pub records: Vec<wire::VpcFlowRecord>,
    /// Per row: source end, destination end.
    pub plans: Vec<[EndPlan; 2]>,
    /// Per row: the interval `[from, to]`, ns since the epoch (`None`: the row has no times).
    pub intervals: Vec<Option<(u64, u64)>>,
    /// Row index by record id.
    pub by_id: HashMap<u64, usize>,
    /// What reading found.
    pub stats: LoadStats,
}

const NS: u64 = 1_000_000_000;

impl VpcRows {
    /// Reads every flow log file under `dir` (recursively, in path order): gzip or plain text
    /// (`.log.gz`, `.log`, `.txt`, ...; gzip is told by its magic bytes) and Parquet
    /// (`.parquet`). A file's ETag, for the record ids, is the CRC-32 of its bytes with its
    /// size, so the same file gives the same ids wherever it lies; its bucket is `local`, its key
    /// the path under `dir`.
    ///
    /// # Errors
    /// [`VpcLoadError`]: the directory or a file is unreadable, or a file has no flow log
    /// header. Malformed lines and damaged file ends are counted in [`LoadStats`] instead.
    pub fn load_dir(dir: &Path, config: &JobConfig) -> Result<VpcRows, VpcLoadError> {
        let io = |path: &Path, source| VpcLoadError::Io { path: path.to_path_buf(), source };
        let mut files = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for entry in std::fs::read_dir(&d).map_err(|e| io(&d, e))? {
                let path = entry.map_err(|e| io(&d, e))?.path();
                if path.is_dir() {
                    stack.push(path);
                } else {
                    files.push(path);
                }
            }
        }
        files.sort();
        let mut rows = VpcRows::default();
        for path in files {
            rows.load_file(dir, &path, config)?;
        }
        Ok(rows)
    }

    fn load_file(&mut self, dir: &Path, path: &Path, config: &JobConfig) -> Result<(), VpcLoadError> {
        let io = |source| VpcLoadError::Io { path: path.to_path_buf(), source };
        let mut bytes = Vec::new();
        File::open(path).and_then(|f| BufReader::new(f).read_to_end(&mut bytes)).map_err(io)?;
        let key = path.strip_prefix(dir).unwrap_or(path).to_string_lossy().into_owned();
        let etag = format!("{:08x}-{}", crc32fast::hash(&bytes), bytes.len());
        let info = FileInfo::new(ObjectId { bucket: "local".into(), key: key.clone(), etag }, bytes.len() as u64);
        let header = |e: parse::HeaderError| VpcLoadError::Header { path: path.to_path_buf(), reason: e.to_string() };
        self.stats.files += 1;
        if key.ends_with(".parquet") {
            let reader = ParquetReader::open(File::open(path).map_err(io)?).map_err(header)?;
            for row in reader {
                self.take(&info, &key, row, config);
            }
        } else {
            for row in parse::text::open(std::io::Cursor::new(bytes)).map_err(header)? {
                self.take(&info, &key, row, config);
            }
        }
        Ok(())
    }

    fn take(&mut self, info: &FileInfo, key: &str, row: Result<flowmap_vpc::Record, ParseError>, config: &JobConfig) {
        let record = match row {
            Ok(r) => r,
            Err(ParseError::Line(e)) => {
                self.stats.malformed += 1;
                self.stats.dead_letters.push((key.to_string(), e.line, e.to_string()));
                return;
            }
            Err(e @ ParseError::Damaged { after_line, .. }) => {
                self.stats.damaged += 1;
                self.stats.dead_letters.push((key.to_string(), after_line, e.to_string()));
                return;
            }
        };
        self.stats.rows += 1;
        match record.log_status {
            Some(LogStatus::Nodata) => self.stats.nodata += 1,
            Some(LogStatus::Skipdata) => self.stats.skipdata += 1,
            _ => {}
        }
        let out = flowmap_vpc::output::to_proto(info, &record);
        // A row whose end precedes its start covers its start (found by a fresh user: looked up
        // at its end, before the evidence about its start was in).
        let interval = match (record.start, record.end) {
            (Some(s), Some(e)) => Some((s.saturating_mul(NS), e.max(s).saturating_mul(NS))),
            _ => None,
        };
        // Port-scoped claims are TCP listeners' and sockets': they vouch for nothing about
        // another protocol's traffic to the same port number (found by a fresh user: a UDP row
        // attributed through a TCP listener's claim), so other protocols look the address up
        // without a port (a port claim then never matches; shared addresses stay `shared_ip`).
        let tcp = record.protocol == Some(6);
        let plan = |end: &Option<wire::VpcEnd>, port: Option<u16>| -> EndPlan {
            let Some(ip) = end.as_ref().and_then(|e| Ip::from_wire(&e.ip)) else { return EndPlan::Decided };
            if !config.in_fleet(ip) {
                EndPlan::External
            } else if interval.is_none() {
                EndPlan::Decided
            } else {
                EndPlan::Query(ip, if tcp { port.unwrap_or(0) } else { 0 })
            }
        };
        let plans = [plan(&out.src, record.srcport), plan(&out.dst, record.dstport)];
        self.by_id.insert(out.record_id, self.records.len());
        self.records.push(out);
        self.plans.push(plans);
        self.intervals.push(interval);
    }
}
