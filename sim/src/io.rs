//! Files of a simulation: the deliveries (a length-prefixed binary log) and the truth (JSON
//! lines), so that `flowmap simulate` and `flowmap score` can run apart. Both are written and
//! read one entry at a time ([`TruthWriter`], [`TruthReader`], [`DeliveryReader`]), so neither
//! side needs a whole file in memory; [`read_truth`] and [`read_deliveries`] collect them.
//!
//! Delivery log format, little-endian: the magic `FMD1`, then per delivery
//! `u32 key_len, key, u64 arrival_ns, u32 payload_len, payload`.
//!
//! Truth file format: a header line `{"format":"flowmap-truth/2"}`, then one [`TruthFlow`] per
//! line, in the order the exporters produced the records, for example
//!
//! ```text
//! {"format":"flowmap-truth/2"}
//! {"id":123,"end_ns":1767225610000000000,"open":true,"incarnation":77,"remote":"svc-03/pod-00012","remote_kind":"pod","local":"svc-01/pod-00007","fate":"delivered","conditions":["preexisting"]}
//! ```
//!
//! `remote` is `null` when nobody was on the remote end; `conditions` is left out when empty.
//! Version 1 files (one entry per flow, no `end_ns`/`open`) are refused with a message saying so.

use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use crate::publish::{Delivery, TruthFlow};

const MAGIC: &[u8; 4] = b"FMD1";

/// The header line of a truth file.
pub const TRUTH_HEADER: &str = r#"{"format":"flowmap-truth/2"}"#;

/// A file that cannot be read or written as a simulation file.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// I/O failed.
    #[error("{path}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The content is not in the expected format.
    #[error("{path}: {why}")]
    Format {
        /// The file.
        path: String,
        /// What is wrong.
        why: String,
    },
}

fn io_err(path: &Path) -> impl Fn(io::Error) -> FileError + '_ {
    move |source| FileError::Io { path: path.display().to_string(), source }
}

fn format_err(path: &Path, why: String) -> FileError {
    FileError::Format { path: path.display().to_string(), why }
}

/// Writes deliveries.
///
/// # Errors
/// [`FileError::Io`] when the file cannot be created or written.
pub fn write_deliveries(path: &Path, deliveries: &[Delivery]) -> Result<(), FileError> {
    let mut w = BufWriter::new(File::create(path).map_err(io_err(path))?);
    let put = |w: &mut BufWriter<File>| -> io::Result<()> {
        w.write_all(MAGIC)?;
        for d in deliveries {
            w.write_all(&(d.key.len() as u32).to_le_bytes())?;
            w.write_all(d.key.as_bytes())?;
            w.write_all(&d.arrival.to_le_bytes())?;
            w.write_all(&(d.payload.len() as u32).to_le_bytes())?;
            w.write_all(&d.payload)?;
        }
        w.flush()
    };
    put(&mut w).map_err(io_err(path))
}

/// Reads a delivery log one delivery at a time.
pub struct DeliveryReader<R> {
    path: PathBuf,
    inner: R,
    done: bool,
}

impl DeliveryReader<BufReader<File>> {
    /// Opens a delivery log and checks its magic.
    ///
    /// # Errors
    /// [`FileError::Io`] when it cannot be opened or read; [`FileError::Format`] when it is not
    /// a delivery log.
    pub fn open(path: &Path) -> Result<Self, FileError> {
        let file = File::open(path).map_err(io_err(path))?;
        DeliveryReader::new(path, BufReader::new(file))
    }
}

impl<R: Read> DeliveryReader<R> {
    /// Reads a delivery log from `inner` (named `path` in errors) and checks its magic.
    ///
    /// # Errors
    /// As [`DeliveryReader::open`].
    pub fn new(path: &Path, mut inner: R) -> Result<Self, FileError> {
        let mut magic = [0u8; 4];
        match read_full(&mut inner, &mut magic).map_err(io_err(path))? {
            4 if &magic == MAGIC => {}
            _ => return Err(format_err(path, "not a delivery log (bad magic)".into())),
        }
        Ok(DeliveryReader { path: path.to_path_buf(), inner, done: false })
    }

    fn next_delivery(&mut self) -> Result<Option<Delivery>, FileError> {
        let path = self.path.clone();
        let mut len = [0u8; 4];
        match read_full(&mut self.inner, &mut len).map_err(io_err(&path))? {
            0 => return Ok(None),
            4 => {}
            n => return Err(format_err(&path, format!("truncated: wanted 4 more bytes, {n} left"))),
        }
        let key = self.take(u32::from_le_bytes(len) as usize)?;
        let key = String::from_utf8(key).map_err(|_| format_err(&path, "key is not UTF-8".into()))?;
        let arrival = self.take(8)?;
        let arrival = u64::from_le_bytes(arrival.try_into().unwrap_or_default());
        let len = self.take(4)?;
        let len = u32::from_le_bytes(len.try_into().unwrap_or_default()) as usize;
        let payload = self.take(len)?;
        Ok(Some(Delivery { key, arrival, payload }))
    }

    fn take(&mut self, n: usize) -> Result<Vec<u8>, FileError> {
        let mut buf = vec![0u8; n];
        let got = read_full(&mut self.inner, &mut buf).map_err(io_err(&self.path))?;
        if got < n {
            return Err(format_err(&self.path, format!("truncated: wanted {n} more bytes, {got} left")));
        }
        Ok(buf)
    }
}

impl<R: Read> Iterator for DeliveryReader<R> {
    type Item = Result<Delivery, FileError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let next = self.next_delivery().transpose();
        if !matches!(next, Some(Ok(_))) {
            self.done = true;
        }
        next
    }
}

/// Reads as many bytes as `buf` holds, fewer only at the end of the input.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// Reads a whole delivery log; a truncated or foreign file is an error, not a panic.
///
/// # Errors
/// As [`DeliveryReader::open`], and [`FileError::Format`] for a truncated entry.
pub fn read_deliveries(path: &Path) -> Result<Vec<Delivery>, FileError> {
    DeliveryReader::open(path)?.collect()
}

/// Writes a truth file one record at a time.
pub struct TruthWriter {
    path: PathBuf,
    out: BufWriter<File>,
}

impl TruthWriter {
    /// Creates the file and writes the header.
    ///
    /// # Errors
    /// [`FileError::Io`] when the file cannot be created or written.
    pub fn create(path: &Path) -> Result<Self, FileError> {
        let mut out = BufWriter::new(File::create(path).map_err(io_err(path))?);
        writeln!(out, "{TRUTH_HEADER}").map_err(io_err(path))?;
        Ok(TruthWriter { path: path.to_path_buf(), out })
    }

    /// Appends one record.
    ///
    /// # Errors
    /// [`FileError::Io`] when writing fails.
    pub fn write(&mut self, t: &TruthFlow) -> Result<(), FileError> {
        serde_json::to_writer(&mut self.out, t).map_err(|e| io_err(&self.path)(e.into()))?;
        self.out.write_all(b"\n").map_err(io_err(&self.path))
    }

    /// Flushes and closes the file.
    ///
    /// # Errors
    /// [`FileError::Io`] when flushing fails.
    pub fn finish(mut self) -> Result<(), FileError> {
        self.out.flush().map_err(io_err(&self.path))
    }
}

/// Writes a truth file.
///
/// # Errors
/// As [`TruthWriter`].
pub fn write_truth<'a>(path: &Path, truth: impl IntoIterator<Item = &'a TruthFlow>) -> Result<(), FileError> {
    let mut w = TruthWriter::create(path)?;
    for t in truth {
        w.write(t)?;
    }
    w.finish()
}

/// Reads a truth file one record at a time.
pub struct TruthReader<R> {
    path: PathBuf,
    lines: io::Lines<R>,
    line: usize,
}

impl TruthReader<BufReader<File>> {
    /// Opens a truth file and checks its header.
    ///
    /// # Errors
    /// [`FileError::Io`] when it cannot be opened or read; [`FileError::Format`] when its first
    /// line is not the header of this version.
    pub fn open(path: &Path) -> Result<Self, FileError> {
        let file = File::open(path).map_err(io_err(path))?;
        TruthReader::new(path, BufReader::new(file))
    }
}

impl<R: BufRead> TruthReader<R> {
    /// Reads a truth file from `inner` (named `path` in errors) and checks its header.
    ///
    /// # Errors
    /// As [`TruthReader::open`].
    pub fn new(path: &Path, inner: R) -> Result<Self, FileError> {
        let mut lines = inner.lines();
        let header = lines.next().transpose().map_err(io_err(path))?.unwrap_or_default();
        if header.trim() != TRUTH_HEADER {
            let why = if header.trim_start().starts_with("{\"id\"") {
                "a version 1 truth file (one entry per flow); simulate again to get version 2".to_string()
            } else {
                format!("not a truth file: the first line must be {TRUTH_HEADER}")
            };
            return Err(format_err(path, why));
        }
        Ok(TruthReader { path: path.to_path_buf(), lines, line: 1 })
    }
}

impl<R: BufRead> Iterator for TruthReader<R> {
    type Item = Result<TruthFlow, FileError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let line = match self.lines.next()? {
                Ok(line) => line,
                Err(e) => return Some(Err(io_err(&self.path)(e))),
            };
            self.line += 1;
            if line.trim().is_empty() {
                continue;
            }
            return Some(
                serde_json::from_str(&line).map_err(|e| format_err(&self.path, format!("line {}: {e}", self.line))),
            );
        }
    }
}

/// Reads a whole truth file written by [`write_truth`] or [`TruthWriter`].
///
/// # Errors
/// As [`TruthReader::open`], and [`FileError::Format`] naming the first line that is not a
/// record.
pub fn read_truth(path: &Path) -> Result<Vec<TruthFlow>, FileError> {
    TruthReader::open(path)?.collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::truth::{Condition, Conditions, EndKind, Fate};

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("flowmap-sim-io-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn deliveries_round_trip_and_truncation_is_an_error() {
        let dir = scratch("deliveries");
        let path = dir.join("d.fmd");
        let ds = vec![
            Delivery { key: "a".into(), arrival: 5, payload: vec![1, 2, 3] },
            Delivery { key: "bb".into(), arrival: 7, payload: vec![] },
        ];
        write_deliveries(&path, &ds).unwrap();
        assert_eq!(read_deliveries(&path).unwrap(), ds);
        let bytes = std::fs::read(&path).unwrap();
        for cut in 5..bytes.len() {
            std::fs::write(&path, &bytes[..cut]).unwrap();
            let read: Vec<_> = DeliveryReader::open(&path).unwrap().collect();
            let clean = cut == 4 + 4 + 1 + 8 + 4 + 3;
            assert_eq!(read.iter().all(Result::is_ok), clean, "cut at {cut}");
            if !clean {
                assert!(matches!(read.last(), Some(Err(FileError::Format { .. }))), "cut at {cut}");
            }
        }
        std::fs::write(&path, b"nope").unwrap();
        assert!(matches!(read_deliveries(&path), Err(FileError::Format { .. })));
        std::fs::write(&path, b"").unwrap();
        assert!(matches!(read_deliveries(&path), Err(FileError::Format { .. })));
        std::fs::write(&path, MAGIC).unwrap();
        assert_eq!(read_deliveries(&path).unwrap(), vec![]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn truth_round_trips_and_old_or_foreign_files_are_refused() {
        let dir = scratch("truth");
        let path = dir.join("t.jsonl");
        let truth = vec![
            TruthFlow {
                id: 1,
                end_ns: 10,
                open: true,
                incarnation: 7,
                remote: Some(Arc::from("b")),
                remote_kind: EndKind::HostNetwork,
                local: Arc::from("a"),
                fate: Fate::Delivered,
                conditions: Conditions::NONE.with(Condition::ExporterRestart, true),
            },
            TruthFlow {
                id: 1,
                end_ns: 12,
                open: false,
                incarnation: 7,
                remote: None,
                remote_kind: EndKind::Vacant,
                local: Arc::from("a"),
                fate: Fate::Lost,
                conditions: Conditions::NONE,
            },
        ];
        write_truth(&path, &truth).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with(TRUTH_HEADER));
        assert!(!text.lines().nth(2).unwrap().contains("conditions"), "empty conditions are left out");
        assert_eq!(read_truth(&path).unwrap(), truth);

        std::fs::write(&path, "{\"id\":1,\"remote\":null,\"local\":\"a\",\"external\":true,\"fate\":\"lost\"}\n")
            .unwrap();
        let err = read_truth(&path).unwrap_err().to_string();
        assert!(err.contains("version 1"), "{err}");
        std::fs::write(&path, "").unwrap();
        assert!(read_truth(&path).unwrap_err().to_string().contains("not a truth file"));
        std::fs::write(&path, format!("{TRUTH_HEADER}\n\n{{\"id\":1}}\n")).unwrap();
        let err = read_truth(&path).unwrap_err().to_string();
        assert!(err.contains("line 3"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
