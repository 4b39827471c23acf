//! The ingester over a local directory store (backfill): failure paths of the sink, stopping
//! before delivery, unreadable files, Parquet objects. No external service needed.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use flowmap_vpc::backfill::BackfillRange;
use flowmap_vpc::config::Settings;
use flowmap_vpc::ingest::{run_backfill, IngestError, RunOptions, Stop};
use flowmap_vpc::{Batch, DeadSource, FileStatus, MouthfulId, Sealed, Sink, SinkError};

fn local(root: &Path) -> Settings {
    Settings::from_toml(&format!(
        "[store]\nkind = \"local\"\nroot = \"{}\"\n[mouthful]\nmax_bytes = 1000000\nmax_files = 2\n\
         max_wait = \"100ms\"\nbatch_records = 50\n[state]\npath = \"{}\"\nretention = \"1d\"\n",
        root.join("store").display(),
        root.join("state.jsonl").display()
    ))
    .unwrap()
}

fn everything(bucket: &str) -> BackfillRange {
    BackfillRange {
        bucket: bucket.into(),
        prefix: String::new(),
        from: std::time::UNIX_EPOCH,
        to: std::time::SystemTime::now() + Duration::from_secs(86_400),
    }
}

fn write(root: &Path, key: &str, bytes: &[u8]) {
    let path = root.join("store/logs").join(key);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

#[derive(Debug)]
struct Failing;

impl Sink for Failing {
    fn submit(&mut self, _: Batch) -> Result<(), SinkError> {
        Err(SinkError("the downstream is gone".into()))
    }

    fn seal(&mut self, _: Sealed) -> Result<(), SinkError> {
        Ok(())
    }

    fn delivered(&mut self) -> MouthfulId {
        0
    }
}

/// A failing sink stops the ingester with its error, and nothing is recorded as processed: the
/// next run reads the files again.
#[test]
fn a_sink_error_stops_ingestion_and_records_nothing() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.log.gz", &gz_file(DEFAULT, &rows(120, 1)));
    let s = local(dir.path());
    let err = run_backfill(&s, everything("logs"), Failing, Stop::new(), RunOptions::default()).unwrap_err();
    assert!(matches!(err, IngestError::Sink(_)), "{err}");
    assert!(err.to_string().contains("the downstream is gone"));
    let sink = Recorder::default();
    let (summary, _) = run_backfill(&s, everything("logs"), sink.clone(), Stop::new(), RunOptions::default()).unwrap();
    assert_eq!((summary.files, summary.records, summary.skipped_processed), (1, 120, 0));
}

/// A sink that never acknowledges: after a stop, the ingester waits the drain time and returns,
/// recording nothing; the next run reads everything again.
#[test]
fn undelivered_work_is_not_recorded() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.log.gz", &gz_file(DEFAULT, &rows(30, 1)));
    let s = local(dir.path());
    let held = Recorder::default();
    held.0.lock().unwrap().hold = true;
    let options = RunOptions { drain_timeout: Duration::from_secs(1), ..RunOptions::default() };
    let (summary, _) = run_backfill(&s, everything("logs"), held.clone(), Stop::new(), options).unwrap();
    assert_eq!((summary.records, summary.mouthfuls_delivered), (30, 0));
    assert_eq!(held.0.lock().unwrap().records.len(), 30);
    let again = Recorder::default();
    let (summary, _) = run_backfill(&s, everything("logs"), again, Stop::new(), RunOptions::default()).unwrap();
    assert_eq!((summary.records, summary.skipped_processed), (30, 0));
}

/// Files that are not flow logs are dead-lettered as unreadable; Parquet objects are read; an
/// empty file is unreadable too; all are counted.
#[test]
fn unreadable_and_parquet_files() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "junk.log.gz", b"\x1f\x8bnot really gzip at all");
    write(dir.path(), "empty.log", b"");
    write(dir.path(), "notes.txt", b"hello world\nthis is not a flow log\n");
    let parquet_rows = rows(75, 2);
    write(
        dir.path(),
        "p/x.log.parquet",
        &flowmap_vpc::write::write_parquet(Vec::new(), DEFAULT, &parquet_rows).unwrap(),
    );
    write(dir.path(), "broken.log.parquet", b"PAR1 but nothing else");
    let sink = Recorder::default();
    let (summary, _) =
        run_backfill(&local(dir.path()), everything("logs"), sink.clone(), Stop::new(), RunOptions::default()).unwrap();
    let seen = sink.0.lock().unwrap();
    assert_eq!(summary.files, 5);
    assert_eq!(summary.files_unreadable, 4);
    assert_eq!(summary.records, 75);
    let expected = expected(&gz_file(DEFAULT, &parquet_rows));
    for (_, object, r) in seen.records.iter() {
        assert_eq!(object.key, "p/x.log.parquet");
        assert_eq!(expected.get(&r.line), Some(r));
    }
    let dead: Vec<&str> = seen
        .dead
        .iter()
        .map(|d| match &d.source {
            DeadSource::File { object, line: None } => object.key.as_str(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(dead.len(), 4);
    for key in ["junk.log.gz", "empty.log", "notes.txt", "broken.log.parquet"] {
        assert!(dead.contains(&key), "{key}: {dead:?}");
    }
    let unreadable = seen.sealed.iter().flat_map(|s| &s.files).filter(|f| f.status == FileStatus::Unreadable).count();
    assert_eq!(unreadable, 4);
}
