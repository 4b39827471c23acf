//! Files of a simulation: the deliveries (a simple length-prefixed binary log) and the truth
//! (JSON lines), so that `flowmap simulate` and `flowmap score` can run apart.
//!
//! Delivery log format, little-endian: the magic `FMD1`, then per delivery
//! `u32 key_len, key, u64 arrival_ns, u32 payload_len, payload`.

use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::path::Path;

use crate::publish::{Delivery, TruthFlow};

const MAGIC: &[u8; 4] = b"FMD1";

/// A file that cannot be read as a simulation file.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// I/O failed.
    #[error("{path}: {source}")]
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

/// Writes deliveries.
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

/// Reads deliveries; a truncated or foreign file is an error, not a panic.
pub fn read_deliveries(path: &Path) -> Result<Vec<Delivery>, FileError> {
    let mut bytes = Vec::new();
    File::open(path).and_then(|mut f| f.read_to_end(&mut bytes)).map_err(io_err(path))?;
    let format = |why: String| FileError::Format { path: path.display().to_string(), why };
    let Some(mut rest) = bytes.strip_prefix(MAGIC.as_slice()) else {
        return Err(format("not a delivery log (bad magic)".into()));
    };
    let take = |n: usize, rest: &mut &[u8]| -> Result<Vec<u8>, FileError> {
        if rest.len() < n {
            return Err(format(format!("truncated: wanted {n} more bytes, {} left", rest.len())));
        }
        let (head, tail) = rest.split_at(n);
        *rest = tail;
        Ok(head.to_vec())
    };
    let mut out = Vec::new();
    while !rest.is_empty() {
        let u32_of = |b: Vec<u8>| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize;
        let key_len = u32_of(take(4, &mut rest)?);
        let key = String::from_utf8(take(key_len, &mut rest)?).map_err(|_| format("key is not UTF-8".into()))?;
        let a = take(8, &mut rest)?;
        let arrival = u64::from_le_bytes([a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]]);
        let len = u32_of(take(4, &mut rest)?);
        let payload = take(len, &mut rest)?;
        out.push(Delivery { key, arrival, payload });
    }
    Ok(out)
}

/// Writes truth as JSON lines.
pub fn write_truth(path: &Path, truth: &[TruthFlow]) -> Result<(), FileError> {
    let mut w = BufWriter::new(File::create(path).map_err(io_err(path))?);
    for t in truth {
        serde_json::to_writer(&mut w, t).map_err(|e| io_err(path)(e.into()))?;
        w.write_all(b"\n").map_err(io_err(path))?;
    }
    w.flush().map_err(io_err(path))
}

/// Reads truth written by [`write_truth`].
pub fn read_truth(path: &Path) -> Result<Vec<TruthFlow>, FileError> {
    let r = BufReader::new(File::open(path).map_err(io_err(path))?);
    let mut out = Vec::new();
    for (n, line) in r.lines().enumerate() {
        let line = line.map_err(io_err(path))?;
        if line.trim().is_empty() {
            continue;
        }
        let t = serde_json::from_str(&line)
            .map_err(|e| FileError::Format { path: path.display().to_string(), why: format!("line {}: {e}", n + 1) })?;
        out.push(t);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deliveries_round_trip_and_truncation_is_an_error() {
        let dir = std::env::temp_dir().join(format!("flowmap-io-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("d.fmd");
        let ds = vec![
            Delivery { key: "a".into(), arrival: 5, payload: vec![1, 2, 3] },
            Delivery { key: "bb".into(), arrival: 7, payload: vec![] },
        ];
        write_deliveries(&path, &ds).unwrap();
        assert_eq!(read_deliveries(&path).unwrap(), ds);
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 2]).unwrap();
        assert!(matches!(read_deliveries(&path), Err(FileError::Format { .. })));
        std::fs::write(&path, b"nope").unwrap();
        assert!(read_deliveries(&path).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
