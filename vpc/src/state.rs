//! The record of objects already processed (bucket, key, ETag), kept in a small file so that a
//! restart, or a notification delivered twice, skips them.
//!
//! An object is recorded only after everything derived from it was delivered, and before its
//! queue messages are deleted: a crash between delivery and recording re-reads the file (the
//! sink sees its records again, with the same record ids); a crash between recording and
//! deletion brings the message back, and the object is skipped.
//!
//! Each object is kept as a 128-bit hash of its identity (see [`object_hash`]) and the time it
//! was recorded: 16 bytes and a timestamp per object, so a fleet's hundreds of thousands of
//! files an hour fit in memory for hours. The file is JSON lines (`{"h": "<32 hex digits>",
//! "at": <seconds>}`), appended and synced per mouthful. Entries older than the retention are
//! dropped on opening and by [`Processed::maintain`], which also rewrites the file (through a
//! temporary file and a rename) once the appended lines outnumber the live entries. A line that
//! does not parse (a torn last write) is counted and dropped.
//!
//! The retention must cover at least the queue's visibility timeout (a message whose object was
//! recorded but which was not yet deleted comes back within it after a crash); longer also skips
//! duplicate notifications and backfills over the same range.

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
    /// [`object_hash`], 32 hex digits.
    h: String,
    /// Seconds since the epoch when recorded.
    at: u64,
}

/// A stable 128-bit hash of an object's identity: FNV-1a 128 over the bucket, key and ETag, each
/// preceded by its length in bytes (64-bit little-endian). Stable across processes and versions,
/// because it is kept in the state file.
pub fn object_hash(id: &ObjectId) -> u128 {
    const OFFSET: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    const PRIME: u128 = 0x0000_0000_0100_0000_0000_0000_0000_013b;
    let mut h = OFFSET;
    for part in [&id.bucket, &id.key, &id.etag] {
        for &b in (part.len() as u64).to_le_bytes().iter().chain(part.as_bytes()) {
            h ^= u128::from(b);
            h = h.wrapping_mul(PRIME);
        }
    }
    h
}

/// The processed objects.
pub struct Processed {
    path: PathBuf,
    retention: Duration,
    entries: HashMap<u128, u64>,
    /// Lines appended since the file was last rewritten.
    appended: usize,
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
                    let parsed = serde_json::from_str::<Entry>(&line)
                        .ok()
                        .and_then(|e| u128::from_str_radix(&e.h, 16).ok().map(|h| (h, e.at)));
                    match parsed {
                        Some((h, at)) if at >= cutoff => {
                            entries.insert(h, at);
                        }
                        Some(_) => {}
                        None => torn_lines += 1,
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(err(e)),
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        let file = rewrite(path, &entries).map_err(err)?;
        Ok(Processed { path: path.to_path_buf(), retention, entries, appended: 0, file, torn_lines })
    }

    /// True when `id` was processed.
    pub fn contains(&self, id: &ObjectId) -> bool {
        self.entries.contains_key(&object_hash(id))
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
            let h = object_hash(id);
            if self.entries.insert(h, at).is_none() {
                let entry = Entry { h: format!("{h:032x}"), at };
                serde_json::to_writer(&mut self.file, &entry).map_err(|e| err(e.into()))?;
                self.file.write_all(b"\n").map_err(err)?;
                self.appended += 1;
                any = true;
            }
        }
        if any {
            self.file.flush().map_err(err)?;
            self.file.get_ref().sync_data().map_err(err)?;
        }
        Ok(())
    }

    /// Drops entries older than the retention, and rewrites the file when the lines appended
    /// since it was last written outnumber the live entries (so the file stays within about twice
    /// the live entries). Cheap when there is nothing to do; the ingester calls it every minute.
    ///
    /// # Errors
    /// [`StateError`] when the file cannot be rewritten.
    pub fn maintain(&mut self, now: SystemTime) -> Result<(), StateError> {
        let cutoff = secs(now).saturating_sub(self.retention.as_secs());
        self.entries.retain(|_, at| *at >= cutoff);
        if self.appended > self.entries.len().max(1024) {
            self.file.flush().map_err(|source| StateError { path: self.path.clone(), source })?;
            self.file =
                rewrite(&self.path, &self.entries).map_err(|source| StateError { path: self.path.clone(), source })?;
            self.appended = 0;
        }
        Ok(())
    }
}

/// Writes the entries to a temporary file, syncs it, renames it over `path`, and opens `path`
/// for appending.
fn rewrite(path: &Path, entries: &HashMap<u128, u64>) -> std::io::Result<BufWriter<File>> {
    let tmp = path.with_extension("compacting");
    {
        let mut w = BufWriter::new(File::create(&tmp)?);
        for (h, &at) in entries {
            serde_json::to_writer(&mut w, &Entry { h: format!("{h:032x}"), at })?;
            w.write_all(b"\n")?;
        }
        w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    Ok(BufWriter::new(OpenOptions::new().append(true).open(path)?))
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
        f.write_all(b"{\"h\":\"00ff").unwrap();
        drop(f);
        let p = Processed::open(&path, Duration::from_secs(60), t0).unwrap();
        assert_eq!(p.torn_lines, 1);
        assert_eq!(p.len(), 1);
    }

    #[test]
    fn maintain_expires_and_bounds_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.jsonl");
        let t0 = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let hour = Duration::from_secs(3600);
        let mut p = Processed::open(&path, hour, t0).unwrap();
        let ids: Vec<ObjectId> = (0..3000).map(|i| id(&format!("k{i}"), "e")).collect();
        p.record(&ids[..2000], t0).unwrap();
        p.record(&ids[2000..], t0 + hour).unwrap();
        // Nothing expired yet; 3000 appended lines, 3000 live: no rewrite.
        p.maintain(t0 + hour).unwrap();
        assert_eq!((p.len(), std::fs::read_to_string(&path).unwrap().lines().count()), (3000, 3000));
        // The first 2000 expire: 3000 lines for 1000 live entries, so the file is rewritten.
        p.maintain(t0 + hour + Duration::from_secs(1)).unwrap();
        assert_eq!(p.len(), 1000);
        assert!(!p.contains(&ids[0]) && p.contains(&ids[2999]));
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 1000);
        // Appending goes on after the rewrite, and a reopening sees the same.
        p.record([&ids[0]], t0 + hour + Duration::from_secs(2)).unwrap();
        drop(p);
        let p = Processed::open(&path, hour, t0 + hour + Duration::from_secs(2)).unwrap();
        assert_eq!(p.len(), 1001);
        assert!(p.contains(&ids[0]));
    }

    #[test]
    fn object_hash_is_stable_and_length_prefixed() {
        let a = ObjectId { bucket: "ab".into(), key: "c".into(), etag: "e".into() };
        let b = ObjectId { bucket: "a".into(), key: "bc".into(), etag: "e".into() };
        assert_ne!(object_hash(&a), object_hash(&b));
        assert_eq!(object_hash(&a), object_hash(&a.clone()));
        // The documented algorithm, written out.
        let mut bytes = Vec::new();
        for part in ["ab", "c", "e"] {
            bytes.extend_from_slice(&(part.len() as u64).to_le_bytes());
            bytes.extend_from_slice(part.as_bytes());
        }
        let mut h: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
        for b in bytes {
            h = (h ^ u128::from(b)).wrapping_mul(0x0100_0000_0000_0000_0000_013b);
        }
        assert_eq!(object_hash(&a), h);
    }
}
