//! The lake source over a lake written by `flowmap-lake`'s own writer: it reads back every row
//! the job would have written (the same rows as the in-memory source gets from the job's
//! messages), only from the partitions a range overlaps; a lake without an `events/` table
//! answers with no events and a note; unreadable files and sketches are counted, never fatal.

mod harness;

use std::sync::Arc;

use flowmap_serve::row::{EdgeRow, BAD_SKETCH};
use flowmap_serve::{EdgeSource, LakeOptions, LakeSource, ServeConfig, TimeRange};
use harness::fixture::{fixture, write_lake, BUCKETS, MINUTE_NS, START_NS};
use harness::{rfc3339, Server};

/// Rows in a canonical order, for comparison.
fn sorted(mut rows: Vec<EdgeRow>) -> Vec<EdgeRow> {
    rows.sort_by(|a, b| {
        (a.bucket_start_ns, &a.client, &a.server, a.server_port, a.emitted_at_ns).cmp(&(
            b.bucket_start_ns,
            &b.client,
            &b.server,
            b.server_port,
            b.emitted_at_ns,
        ))
    });
    rows
}

#[test]
fn reads_what_the_lake_writer_wrote() -> anyhow::Result<()> {
    let f = fixture();
    let dir = tempfile::tempdir()?;
    write_lake(dir.path(), &f.edges)?;
    // The writer partitions by the bucket's hour: the fixture spans 11:45 to 12:15.
    for hour in ["hour=11", "hour=12"] {
        assert!(dir.path().join("edges/dt=2026-11-29").join(hour).is_dir(), "{hour}");
    }
    let lake = LakeSource::open(dir.path(), LakeOptions::default())?;
    let end = START_NS + BUCKETS * MINUTE_NS;
    let all = TimeRange::new(START_NS, end)?;
    let got = sorted(lake.edges(all)?.iter().cloned().collect());
    let want = sorted(f.edges.iter().map(EdgeRow::from).collect());
    assert_eq!(got.len(), want.len());
    assert_eq!(got, want, "every row, every column (sketches decoded the same way)");

    // A range inside one hour reads that hour's rows only, and only those of the range.
    let inside = TimeRange::new(START_NS + 20 * MINUTE_NS, START_NS + 25 * MINUTE_NS)?;
    let got = lake.edges(inside)?.iter().count();
    let want = f.edges.iter().filter(|e| inside.contains(e.bucket_start_ns)).count();
    assert_eq!(got, want);
    assert!(got > 0);

    assert_eq!(lake.extent()?, Some(all));
    // No events table yet: no events, and a note saying so; not an error.
    assert!(lake.events(all)?.is_empty());
    let health = lake.health();
    assert!(health.ok);
    assert!(health.notes.iter().any(|n| n.contains("no events table")), "{:?}", health.notes);
    assert_eq!(health.bad_rows.get(BAD_SKETCH), Some(&1), "the fixture's one unreadable sketch");
    assert_eq!(health.bad_files, 0);
    Ok(())
}

#[tokio::test]
async fn the_lake_serves_the_same_graph_as_memory() -> anyhow::Result<()> {
    let f = fixture();
    let dir = tempfile::tempdir()?;
    write_lake(dir.path(), &f.edges)?;
    let lake = Server::start(Arc::new(LakeSource::open(dir.path(), LakeOptions::default())?), ServeConfig::default())?;
    let memory = Arc::new(flowmap_serve::MemorySource::new(flowmap_serve::MemoryOptions::default()));
    memory.push_edges(f.edges.iter().map(Into::into).collect());
    let memory = Server::start(memory, ServeConfig::default())?;
    let range = format!("from={}&to={}", rfc3339(START_NS), rfc3339(START_NS + BUCKETS * MINUTE_NS));
    for group in ["0", "1", "2", "16"] {
        let path = format!("/api/graph?{range}&group={group}&limit=20000");
        let (a, b) = (lake.json(&path).await?, memory.json(&path).await?);
        assert_eq!(a["edges"], b["edges"], "{path}");
        assert_eq!(a["nodes"], b["nodes"], "{path}");
    }
    // The default range ends at the end of the lake's data.
    let default = lake.json("/api/graph").await?;
    assert_eq!(default["range"]["to"], rfc3339(START_NS + BUCKETS * MINUTE_NS));
    let events = lake.json(&format!("/api/events?{range}")).await?;
    assert_eq!(events["events"].as_array().map(Vec::len), Some(0));
    let meta = lake.json("/api/meta").await?;
    assert_eq!(meta["source"], "lake");
    assert!(meta["notes"][0].as_str().unwrap_or_default().contains("no events table"), "{meta}");
    Ok(())
}

#[test]
fn unreadable_files_are_counted_and_skipped() -> anyhow::Result<()> {
    let f = fixture();
    let dir = tempfile::tempdir()?;
    write_lake(dir.path(), &f.edges)?;
    let partition = dir.path().join("edges/dt=2026-11-29/hour=12");
    std::fs::write(partition.join("garbage.parquet"), b"not parquet at all")?;
    std::fs::write(partition.join("_ignored.parquet"), b"a writer's own file")?;
    std::fs::write(partition.join("notes.txt"), b"not a data file")?;
    let lake = LakeSource::open(dir.path(), LakeOptions::default())?;
    let all = TimeRange::new(START_NS, START_NS + BUCKETS * MINUTE_NS)?;
    assert_eq!(lake.edges(all)?.iter().count(), f.edges.len());
    let health = lake.health();
    assert_eq!(health.bad_files, 1, "{:?}", health.problems);
    assert!(health.problems.iter().any(|p| p.contains("garbage.parquet")), "{:?}", health.problems);
    // Read again: counted once, while the file is unchanged.
    lake.edges(all)?;
    assert_eq!(lake.health().bad_files, 1);
    assert!(LakeSource::open(dir.path().join("missing"), LakeOptions::default()).is_err());
    Ok(())
}
