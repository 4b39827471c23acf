//! Where every object of the lake lives: Hive partitions, data file names, cell manifests.
//!
//! All names are pure functions of (table, event time, dataflow time, writer, part), so a
//! restarted job computes the same names for the same rows and overwrites instead of adding:
//!
//! ```text
//! <table>/dt=YYYY-MM-DD/hour=HH/<table>-<cell>-w<writer>-<part>.parquet   data (Hive-partitioned)
//! _lake/<table>/layout.json                                               cell length and writer count
//! _lake/<table>/w<writer>/<YYYY-MM-DD>/<cell>.json                        manifest of one cell
//! ```
//!
//! `dt`/`hour` are the UTC date and hour of each row's own event time (a flow's start, an edge's
//! bucket); `<cell>` is the UTC start of the writer's cell of dataflow time as
//! `YYYYMMDDTHHMMSSZ` (cells are whole seconds, aligned to the Unix epoch); manifests are grouped
//! by the cell's UTC day so no directory grows without bound. The bookkeeping lives
//! under `_lake/`, outside every table directory: readers that list a table (`pyarrow.dataset`,
//! DuckDB's `read_parquet('<table>/*/*/*.parquet')`) see data files only.

use chrono::{DateTime, Datelike, Timelike, Utc};
use object_store::path::Path;

/// Nanoseconds in a second.
pub const NANOS_PER_SEC: u64 = 1_000_000_000;

/// The Hive partition of an event time: UTC date and hour.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Partition {
    /// Days since 1970-01-01 (UTC).
    pub day: u32,
    /// Hour of the day, 0 to 23.
    pub hour: u8,
}

impl Partition {
    /// The partition holding event time `ns` (ns since the Unix epoch, UTC).
    pub fn of_ns(ns: u64) -> Partition {
        let secs = ns / NANOS_PER_SEC;
        let day = u32::try_from(secs / 86_400).unwrap_or(u32::MAX);
        Partition { day, hour: ((secs % 86_400) / 3_600) as u8 }
    }

    /// The first nanosecond of the partition.
    pub fn start_ns(self) -> u64 {
        (u64::from(self.day) * 86_400 + u64::from(self.hour) * 3_600) * NANOS_PER_SEC
    }

    /// `dt=YYYY-MM-DD/hour=HH`.
    pub fn dir(self) -> String {
        let t = utc(self.start_ns());
        format!("dt={:04}-{:02}-{:02}/hour={:02}", t.year(), t.month(), t.day(), t.hour())
    }
}

/// Start of the cell of length `cell_ns` holding dataflow time `time` (cells are aligned to 0).
pub fn cell_start(time: u64, cell_ns: u64) -> u64 {
    time - time % cell_ns
}

/// A cell start as `YYYYMMDDTHHMMSSZ` (UTC; whole seconds, as cells are).
pub fn cell_label(start_ns: u64) -> String {
    let t = utc(start_ns);
    format!("{:04}{:02}{:02}T{:02}{:02}{:02}Z", t.year(), t.month(), t.day(), t.hour(), t.minute(), t.second())
}

/// The object of one data file, under the lake's root.
pub fn data_path(root: &Path, table: &str, partition: Partition, cell: u64, writer: u32, part: u32) -> Path {
    let name = format!("{table}-{}-w{writer}-{part}.parquet", cell_label(cell));
    join(root, &format!("{table}/{}/{name}", partition.dir()))
}

/// The manifest of one cell of one writer.
pub fn manifest_path(root: &Path, table: &str, writer: u32, cell: u64) -> Path {
    let t = utc(cell);
    let day = format!("{:04}-{:02}-{:02}", t.year(), t.month(), t.day());
    join(root, &format!("_lake/{table}/w{writer}/{day}/{}.json", cell_label(cell)))
}

/// The layout record of a table (cell length and writer count, checked at every start).
pub fn layout_path(root: &Path, table: &str) -> Path {
    join(root, &format!("_lake/{table}/layout.json"))
}

/// `root/rel` (`rel` is made of valid segments: table names are checked when a table is
/// defined, the rest is generated here).
pub fn join(root: &Path, rel: &str) -> Path {
    let mut parts: Vec<object_store::path::PathPart<'_>> = root.parts().collect();
    parts.extend(rel.split('/').map(object_store::path::PathPart::from));
    Path::from_iter(parts)
}

/// The path of an object relative to the lake's root (as manifests store it).
pub fn relative(root: &Path, path: &Path) -> String {
    match path.prefix_match(root) {
        Some(rest) => rest.map(|p| p.as_ref().to_string()).collect::<Vec<_>>().join("/"),
        None => path.to_string(),
    }
}

fn utc(ns: u64) -> DateTime<Utc> {
    // Event times beyond 2262 do not fit chrono's i64 nanoseconds; rows are checked before they
    // get here (timestamps must fit Parquet's signed 64-bit nanoseconds), so saturate.
    DateTime::from_timestamp_nanos(i64::try_from(ns).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    // 2026-11-29T12:24:05.123456789Z
    const T: u64 = 1_795_955_045_123_456_789;

    #[test]
    fn partitions_are_utc_date_and_hour() {
        assert_eq!(Partition::of_ns(T).dir(), "dt=2026-11-29/hour=12");
        assert_eq!(Partition::of_ns(0).dir(), "dt=1970-01-01/hour=00");
        // The last nanosecond of an hour, and the first of the next.
        let h = Partition::of_ns(T).start_ns();
        assert_eq!(h, 1_795_953_600 * NANOS_PER_SEC);
        assert_eq!(Partition::of_ns(h - 1).dir(), "dt=2026-11-29/hour=11");
        assert_eq!(Partition::of_ns(h + 3_600 * NANOS_PER_SEC - 1).dir(), "dt=2026-11-29/hour=12");
        // Midnight rolls the date.
        let midnight = (Partition::of_ns(T).day as u64 + 1) * 86_400 * NANOS_PER_SEC;
        assert_eq!(Partition::of_ns(midnight - 1).dir(), "dt=2026-11-29/hour=23");
        assert_eq!(Partition::of_ns(midnight).dir(), "dt=2026-11-30/hour=00");
        // A leap day.
        assert_eq!(Partition::of_ns(1_709_164_800 * NANOS_PER_SEC).dir(), "dt=2024-02-29/hour=00");
    }

    #[test]
    fn names_follow_the_documented_pattern() {
        let root = Path::from("lake/root");
        let cell = cell_start(T, 60 * NANOS_PER_SEC);
        assert_eq!(cell, 1_795_955_040 * NANOS_PER_SEC);
        assert_eq!(
            data_path(&root, "flows", Partition::of_ns(T - 7_200 * NANOS_PER_SEC), cell, 3, 12).as_ref(),
            "lake/root/flows/dt=2026-11-29/hour=10/flows-20261129T122400Z-w3-12.parquet"
        );
        assert_eq!(
            manifest_path(&root, "edges", 0, cell).as_ref(),
            "lake/root/_lake/edges/w0/2026-11-29/20261129T122400Z.json"
        );
        assert_eq!(layout_path(&Path::default(), "flows").as_ref(), "_lake/flows/layout.json");
        let p = data_path(&Path::default(), "flows", Partition::of_ns(0), 0, 0, 0);
        assert_eq!(p.as_ref(), "flows/dt=1970-01-01/hour=00/flows-19700101T000000Z-w0-0.parquet");
        assert_eq!(relative(&root, &data_path(&root, "t", Partition::of_ns(0), 0, 1, 2)), {
            "t/dt=1970-01-01/hour=00/t-19700101T000000Z-w1-2.parquet"
        });
    }

    #[test]
    fn cells_are_aligned() {
        let len = 10 * NANOS_PER_SEC;
        assert_eq!(cell_start(0, len), 0);
        assert_eq!(cell_start(len - 1, len), 0);
        assert_eq!(cell_start(len, len), len);
        assert_eq!(cell_start(u64::MAX, len), u64::MAX - u64::MAX % len);
    }
}
