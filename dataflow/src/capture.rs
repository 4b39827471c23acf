//! Captured topics on disk, and the feed that replays them.
//!
//! A capture is a directory: `manifest.json` (topics in lane order, partition counts, message
//! counts, the time range asked for) and one file per partition, `<topic>/<partition>.fmc`:
//! the magic `FMC1`, then per message its offset and timestamp (i64, little-endian), key and
//! payload (u32 length, little-endian, then bytes). Offsets and timestamps are kept so that a
//! replay reads exactly what the live job read, in the same per-partition order, and checks
//! batches against the same receiver clock (the message timestamp).
//!
//! [`ReplayFeed`] gives each worker the lanes it would have had live (see
//! [`crate::kafka::lanes`]) and reads them round-robin; since the source decides lateness per
//! lane, the interleaving does not change any verdict.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, ErrorKind, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use flowmap_operators::Time;
use serde::{Deserialize, Serialize};

use crate::feed::{Feed, FeedError, FeedStatus, Lane, Message, Outcome};
use crate::kafka::{lanes_of, number_lanes, LaneId};

const MAGIC: &[u8; 4] = b"FMC1";
/// The `format` field of a manifest this version writes and reads.
pub const FORMAT: &str = "flowmap-capture/1";
/// Largest key or payload accepted when reading (a corrupt length is not an allocation).
const MAX_FIELD: u32 = 64 << 20;

/// A failure to read or write a capture.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// The file system refused.
    #[error("{path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The content is not a capture of this version.
    #[error("{path}: {why}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
}

impl From<CaptureError> for FeedError {
    fn from(e: CaptureError) -> Self {
        match e {
            CaptureError::Io { path, source } => {
                FeedError::Damaged { what: path.display().to_string(), detail: source.to_string() }
            }
            CaptureError::Invalid { path, why } => FeedError::Damaged { what: path.display().to_string(), detail: why },
        }
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CaptureError + '_ {
    move |source| CaptureError::Io { path: path.to_path_buf(), source }
}

/// One captured topic.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapturedTopic {
    /// Topic name.
    pub name: String,
    /// Partitions.
    pub partitions: i32,
    /// Messages captured.
    pub messages: u64,
}

/// `manifest.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Always [`FORMAT`].
    pub format: String,
    /// Topics, in lane order (the input topic first, as the job was given them).
    pub topics: Vec<CapturedTopic>,
    /// Only messages with a timestamp at or after this (ms), if set.
    pub from_ms: Option<i64>,
    /// Only messages with a timestamp before this (ms), if set.
    pub to_ms: Option<i64>,
}

impl Manifest {
    /// Reads and checks `dir/manifest.json`.
    pub fn load(dir: &Path) -> Result<Self, CaptureError> {
        let path = dir.join("manifest.json");
        let text = std::fs::read_to_string(&path).map_err(io(&path))?;
        let m: Manifest = serde_json::from_str(&text)
            .map_err(|e| CaptureError::Invalid { path: path.clone(), why: format!("not a capture manifest: {e}") })?;
        if m.format != FORMAT {
            return Err(CaptureError::Invalid {
                path,
                why: format!("format {:?}, this reader knows {FORMAT:?}", m.format),
            });
        }
        Ok(m)
    }

    /// Writes `dir/manifest.json`.
    pub fn save(&self, dir: &Path) -> Result<(), CaptureError> {
        let path = dir.join("manifest.json");
        let text = serde_json::to_string_pretty(self)
            .map_err(|e| CaptureError::Invalid { path: path.clone(), why: e.to_string() })?;
        std::fs::write(&path, text + "\n").map_err(io(&path))
    }

    /// The lanes of the job that read these topics.
    pub fn lanes(&self) -> Vec<LaneId> {
        number_lanes(&self.topics.iter().map(|t| (t.name.clone(), t.partitions)).collect::<Vec<_>>())
    }

    /// All messages captured.
    pub fn messages(&self) -> u64 {
        self.topics.iter().map(|t| t.messages).sum()
    }
}

/// The file of one partition.
pub fn partition_path(dir: &Path, topic: &str, partition: i32) -> PathBuf {
    dir.join(topic).join(format!("{partition}.fmc"))
}

/// One captured message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Captured {
    /// Offset in its partition.
    pub offset: i64,
    /// Timestamp, ms (-1: none).
    pub timestamp_ms: i64,
    /// Key.
    pub key: Vec<u8>,
    /// Payload.
    pub payload: Vec<u8>,
}

/// Writes one partition's messages.
pub struct PartitionWriter {
    out: BufWriter<File>,
    path: PathBuf,
}

impl PartitionWriter {
    /// Creates the file (and its topic directory).
    pub fn create(path: PathBuf) -> Result<Self, CaptureError> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        let mut out = BufWriter::new(File::create(&path).map_err(io(&path))?);
        out.write_all(MAGIC).map_err(io(&path))?;
        Ok(PartitionWriter { out, path })
    }

    /// Appends a message.
    pub fn write(&mut self, m: &Captured) -> Result<(), CaptureError> {
        let w = &mut self.out;
        let r = (|| {
            w.write_all(&m.offset.to_le_bytes())?;
            w.write_all(&m.timestamp_ms.to_le_bytes())?;
            w.write_all(&(m.key.len() as u32).to_le_bytes())?;
            w.write_all(&m.key)?;
            w.write_all(&(m.payload.len() as u32).to_le_bytes())?;
            w.write_all(&m.payload)
        })();
        r.map_err(io(&self.path))
    }

    /// Flushes to disk.
    pub fn finish(mut self) -> Result<(), CaptureError> {
        self.out.flush().map_err(io(&self.path))?;
        self.out.get_ref().sync_all().map_err(io(&self.path))
    }
}

/// Reads one partition's messages in order.
pub struct PartitionReader {
    input: BufReader<File>,
    path: PathBuf,
}

impl PartitionReader {
    /// Opens a partition file and checks its magic.
    pub fn open(path: PathBuf) -> Result<Self, CaptureError> {
        let mut input = BufReader::new(File::open(&path).map_err(io(&path))?);
        let mut magic = [0u8; 4];
        input.read_exact(&mut magic).map_err(io(&path))?;
        if &magic != MAGIC {
            return Err(CaptureError::Invalid { path, why: "not a partition capture (bad magic)".into() });
        }
        Ok(PartitionReader { input, path })
    }

    /// The next message, `None` at the end. A file cut inside a message is an error.
    pub fn next_message(&mut self) -> Result<Option<Captured>, CaptureError> {
        // The end of the file is only clean between messages: a file cut inside one (even
        // inside its first field) is damaged, not shorter.
        if self.input.fill_buf().map_err(io(&self.path))?.is_empty() {
            return Ok(None);
        }
        let mut word = [0u8; 8];
        self.input.read_exact(&mut word).map_err(|e| match e.kind() {
            ErrorKind::UnexpectedEof => {
                CaptureError::Invalid { path: self.path.clone(), why: "truncated inside a message header".into() }
            }
            _ => io(&self.path)(e),
        })?;
        let offset = i64::from_le_bytes(word);
        let truncated = |path: &Path| CaptureError::Invalid {
            path: path.to_path_buf(),
            why: format!("truncated in the message at offset {offset}"),
        };
        self.input.read_exact(&mut word).map_err(|_| truncated(&self.path))?;
        let timestamp_ms = i64::from_le_bytes(word);
        let mut field = || -> Result<Vec<u8>, CaptureError> {
            let mut len = [0u8; 4];
            self.input.read_exact(&mut len).map_err(|_| truncated(&self.path))?;
            let len = u32::from_le_bytes(len);
            if len > MAX_FIELD {
                return Err(CaptureError::Invalid {
                    path: self.path.clone(),
                    why: format!("field of {len} bytes at offset {offset}"),
                });
            }
            let mut buf = vec![0u8; len as usize];
            self.input.read_exact(&mut buf).map_err(|_| truncated(&self.path))?;
            Ok(buf)
        };
        let key = field()?;
        let payload = field()?;
        Ok(Some(Captured { offset, timestamp_ms, key, payload }))
    }
}

struct ReplayLane {
    lane: u32,
    reader: Option<PartitionReader>,
    started: bool,
}

/// One worker's share of a capture.
pub struct ReplayFeed {
    lanes: Vec<ReplayLane>,
    next: usize,
    progress: Arc<AtomicU64>,
    error: Option<CaptureError>,
}

impl ReplayFeed {
    /// Opens the lanes of worker `index` of `peers`; `progress` counts messages read.
    pub fn open(
        dir: &Path,
        manifest: &Manifest,
        index: usize,
        peers: usize,
        progress: Arc<AtomicU64>,
    ) -> Result<Self, CaptureError> {
        let mut lanes = Vec::new();
        for l in lanes_of(&manifest.lanes(), index, peers) {
            let path = partition_path(dir, &l.topic, l.partition);
            // A partition with no messages in the range has no file.
            let reader = if path.exists() { Some(PartitionReader::open(path)?) } else { None };
            lanes.push(ReplayLane { lane: l.lane, started: reader.is_none(), reader });
        }
        Ok(ReplayFeed { lanes, next: 0, progress, error: None })
    }
}

/// Messages read from one lane before moving to the next.
const PER_LANE: usize = 64;

impl Feed for ReplayFeed {
    fn lanes(&self) -> Vec<Lane> {
        self.lanes.iter().map(|l| Lane { id: l.lane, roster: Vec::new() }).collect()
    }

    fn poll(&mut self, max: usize, deliver: &mut dyn FnMut(&Message<'_>) -> Outcome) -> FeedStatus {
        let mut given = 0;
        while given < max && self.lanes.iter().any(|l| l.reader.is_some()) {
            let i = self.next % self.lanes.len();
            self.next = self.next.wrapping_add(1);
            let lane = &mut self.lanes[i];
            for _ in 0..PER_LANE {
                let Some(reader) = lane.reader.as_mut() else { break };
                match reader.next_message() {
                    Ok(Some(m)) => {
                        lane.started = true;
                        given += 1;
                        let key = std::str::from_utf8(&m.key).unwrap_or("<non-utf8 key>");
                        let arrival = if m.timestamp_ms > 0 { m.timestamp_ms as Time * 1_000_000 } else { Time::MAX };
                        deliver(&Message { lane: lane.lane, key, payload: &m.payload, arrival, rebuild: false });
                    }
                    Ok(None) => lane.reader = None,
                    Err(e) => {
                        tracing::error!(error = %e, "capture unreadable: stopping this partition");
                        self.error.get_or_insert(e);
                        lane.reader = None;
                    }
                }
            }
        }
        self.progress.fetch_add(given as u64, Ordering::Relaxed);
        if self.lanes.iter().all(|l| l.reader.is_none()) {
            FeedStatus::Done
        } else {
            FeedStatus::Ready
        }
    }

    fn settling(&self) -> bool {
        self.lanes.iter().any(|l| !l.started)
    }

    fn finish(&mut self) -> Result<(), FeedError> {
        match self.error.take() {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_round_trip_and_truncation() {
        let dir = std::env::temp_dir().join(format!("flowmap-capture-test-{}", std::process::id()));
        let path = partition_path(&dir, "flows", 3);
        let mut w = PartitionWriter::create(path.clone()).unwrap();
        let msgs: Vec<Captured> = (0..3)
            .map(|i| Captured {
                offset: 10 + i,
                timestamp_ms: 1000 * i,
                key: b"host".to_vec(),
                payload: vec![i as u8; i as usize],
            })
            .collect();
        for m in &msgs {
            w.write(m).unwrap();
        }
        w.finish().unwrap();
        let mut r = PartitionReader::open(path.clone()).unwrap();
        let mut back = Vec::new();
        while let Some(m) = r.next_message().unwrap() {
            back.push(m);
        }
        assert_eq!(back, msgs);
        // Cut inside the last message.
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 1]).unwrap();
        let mut r = PartitionReader::open(path.clone()).unwrap();
        r.next_message().unwrap();
        r.next_message().unwrap();
        let err = r.next_message().unwrap_err().to_string();
        assert!(err.contains("truncated"), "{err}");
        // Regression: a file cut inside the first field of a message read as a clean end.
        std::fs::write(&path, &bytes[..4 + 3]).unwrap();
        let err = PartitionReader::open(path.clone()).unwrap().next_message().unwrap_err().to_string();
        assert!(err.contains("truncated"), "{err}");
        std::fs::write(&path, b"nope").unwrap();
        assert!(PartitionReader::open(path).is_err());
        let m = Manifest { format: "other".into(), topics: vec![], from_ms: None, to_ms: None };
        m.save(&dir).unwrap();
        assert!(Manifest::load(&dir).unwrap_err().to_string().contains("format"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
