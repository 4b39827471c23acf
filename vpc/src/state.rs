//! The record of objects already processed (bucket, key, ETag), kept in a small file so that a
//! restart, or a notification delivered twice, skips them.
//!
//! An object is recorded only after everything derived from it was delivered, and before its
//! queue messages are deleted: a crash between delivery and recording re-reads the file (the
//! sink sees its records again, with the same record ids); a crash between recording and
//! deletion brings the message back, and the object is skipped.
//!
//! The file is JSON lines, one object per line with the time it was recorded, appended and
//! synced per mouthful. On opening, entries older than the retention are dropped and the file is
//! rewritten (through a temporary file and a rename), so it holds about `retention` worth of
//! objects. A line that does not parse (a torn last write) is counted and dropped.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::sink::ObjectId;

/// A state file error.
#[derive(Debug, thiserror::Error)]
#[error("state file {path}: {source}")]
pub struct StateError {
    path: PathBuf,
    #[source]
    source: std::io::Error,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Entry {
    #[serde(flatten)]
    id: ObjectId,
    /// Seconds since the epoch when recorded.
    at: u64,
}

/// The processed objects.
pub struct Processed {
    path: PathBuf,
    entries: HashMap<ObjectId, u64>,
    file: BufWriter<File>,
    /// Lines dropped when opening because they did not parse.
    pub torn_lines: u64,
}

fn secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO).as_secs()
}

impl Processed {
    /// Opens (or creates) the state file, dropping entries recorded more than `retention`
    /// before `now`.
    ///
    /// # Errors
    /// [`StateError`] when the file cannot be read or rewritten.
    pub fn open(path: &Path, retention: Duration, now: SystemTime) -> Result<Processed, StateError> {
        let err = |source| StateError { path: path.to_path_buf(), source };
        let cutoff = secs(now).saturating_sub(retention.as_secs());
        let mut entries = HashMap::new();
        let mut torn_lines = 0;
        match File::open(path) {
            Ok(f) => {
                for line in BufReader::new(f).lines() {
                    let line = line.map_err(err)?;
                    match serde_json::from_str::<Entry>(&line) {
                        Ok(e) if e.at >= cutoff => {
                            entries.insert(e.id, e.at);
                        }
                        Ok(_) => {}
                        Err(_) => torn_lines += 1,
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(err(e)),
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        // Compact: write the kept entries to a temporary file and rename it over the old one.
        let tmp = path.with_extension("compacting");
        {
            let mut w = BufWriter::new(File::create(&tmp).map_err(err)?);
            for (id, &at) in &entries {
                serde_json::to_writer(&mut w, &Entry { id: id.clone(), at }).map_err(|e| err(e.into()))?;
                w.write_all(b"\n").map_err(err)?;
            }
            w.into_inner().map_err(|e| err(e.into_error()))?.sync_all().map_err(err)?;
        }
        std::fs::rename(&tmp, path).map_err(err)?;
        let file = OpenOptions::new().append(true).open(path).map_err(err)?;
        Ok(Processed { path: path.to_path_buf(), entries, file: BufWriter::new(file), torn_lines })
    }

    /// True when `id` was processed.
    pub fn contains(&self, id: &ObjectId) -> bool {
        self.entries.contains_key(id)
    }

    /// The number of objects recorded.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no object is recorded.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Records objects as processed, durably (the file is synced before this returns).
    ///
    /// # Errors
    /// [`StateError`] when the file cannot be written.
    pub fn record<'a>(
        &mut self,
        ids: impl IntoIterator<Item = &'a ObjectId>,
        now: SystemTime,
    ) -> Result<(), StateError> {
        let err = |source| StateError { path: self.path.clone(), source };
        let at = secs(now);
        let mut any = false;
        for id in ids {
            if self.entries.insert(id.clone(), at).is_none() {
                let entry = Entry { id: id.clone(), at };
                serde_json::to_writer(&mut self.file, &entry).map_err(|e| err(e.into()))?;
                self.file.write_all(b"\n").map_err(err)?;
                any = true;
            }
        }
        if any {
            self.file.flush().map_err(err)?;
            self.file.get_ref().sync_data().map_err(err)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(key: &str, etag: &str) -> ObjectId {
        ObjectId { bucket: "b".into(), key: key.into(), etag: etag.into() }
    }

    #[test]
    fn survives_reopening_and_expires() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/state.jsonl");
        let t0 = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let day = Duration::from_secs(86_400);
        let mut p = Processed::open(&path, day, t0).unwrap();
        assert!(p.is_empty());
        p.record([&id("a", "1"), &id("b", "1")], t0).unwrap();
        p.record([&id("c", "1")], t0 + day).unwrap();
        drop(p);
        let p = Processed::open(&path, day, t0 + day).unwrap();
        assert!(p.contains(&id("a", "1")) && p.contains(&id("c", "1")));
        assert!(!p.contains(&id("a", "2")), "another ETag is another object");
        drop(p);
        // Past the retention, the first two are dropped, and the file is compacted.
        let p = Processed::open(&path, day, t0 + day + Duration::from_secs(1)).unwrap();
        assert!(!p.contains(&id("a", "1")));
        assert!(p.contains(&id("c", "1")));
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 1);
    }

    #[test]
    fn a_torn_line_is_counted_and_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.jsonl");
        let t0 = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let mut p = Processed::open(&path, Duration::from_secs(60), t0).unwrap();
        p.record([&id("a", "1")], t0).unwrap();
        drop(p);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"bucket\":\"b\",\"ke").unwrap();
        drop(f);
        let p = Processed::open(&path, Duration::from_secs(60), t0).unwrap();
        assert_eq!(p.torn_lines, 1);
        assert_eq!(p.len(), 1);
    }
}
