//! The writer on a local directory: partitions and names, the delivery contract, deterministic
//! parts, restarts that re-emit rows, a store that fails mid-cell, layout checks, bad rows.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use flowmap_lake::sample::{run_job, SampleInput};
use flowmap_lake::{EdgeRow, FlowRow, Lake, LakeError, LakeRow};
use object_store::local::LocalFileSystem;
use object_store::path::Path;

fn flow(time_s: u64, start: u64, id: u64) -> FlowRow {
    let input = SampleInput { base_ns: BASE, messages: 1, rows_per_message: 1, step_ns: 1, spread: 1 };
    let (_, mut row) = input.flows(0).remove(0);
    row.flow_id = id;
    row.start_ns = start;
    row.end_ns = BASE + time_s * SEC;
    row
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < Duration::from_secs(30), "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Each row goes to the partition of its own start; files are named by cell, writer and part;
/// the bookkeeping is outside the table directory; every file holds its rows in key order.
#[test]
fn files_land_in_their_partitions_with_their_names() {
    let dir = scratch("names");
    let lake = local(&dir, 60, 2);
    let mut w = lake.writer::<FlowRow>(0, 1).unwrap();
    let hour_11 = BASE - 3_600 * SEC;
    // Cell 12:24:00: three rows starting in hour 12 (two parts of 2 rows at most), one in hour 11.
    w.push(BASE + 5 * SEC, vec![flow(5, BASE, 30), flow(5, BASE + SEC, 10), flow(5, hour_11, 40)]).unwrap();
    w.push(BASE + 7 * SEC, vec![flow(7, BASE, 20)]).unwrap();
    // Cell 12:25:00: one row.
    w.push(BASE + 65 * SEC, vec![flow(65, BASE + 60 * SEC, 50)]).unwrap();
    let stats = w.finish().unwrap();
    assert_eq!((stats.files_written, stats.rows_written, stats.cells_closed), (4, 5, 2));
    assert_eq!(
        files(&dir),
        [
            "_lake/flows/layout.json",
            "_lake/flows/w0/2026-11-29/20261129T122400Z.json",
            "_lake/flows/w0/2026-11-29/20261129T122500Z.json",
            "flows/dt=2026-11-29/hour=11/flows-20261129T122400Z-w0-0.parquet",
            "flows/dt=2026-11-29/hour=12/flows-20261129T122400Z-w0-0.parquet",
            "flows/dt=2026-11-29/hour=12/flows-20261129T122400Z-w0-1.parquet",
            "flows/dt=2026-11-29/hour=12/flows-20261129T122500Z-w0-0.parquet",
        ]
    );
    // Parts are cut in (dataflow time, key) order: ids 10 and 30 at 12:24:05, then 20 at 12:24:07.
    let ids = |rel: &str| -> Vec<u64> {
        let bytes = std::fs::read(dir.join(rel)).unwrap();
        let reader =
            parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(bytes)).unwrap();
        let mut out = Vec::new();
        for b in reader.build().unwrap() {
            out.extend(FlowRow::from_batch(&b.unwrap()).unwrap().into_iter().map(|r| r.flow_id));
        }
        out
    };
    assert_eq!(ids("flows/dt=2026-11-29/hour=12/flows-20261129T122400Z-w0-0.parquet"), [10, 30]);
    assert_eq!(ids("flows/dt=2026-11-29/hour=12/flows-20261129T122400Z-w0-1.parquet"), [20]);
    assert_eq!(ids("flows/dt=2026-11-29/hour=11/flows-20261129T122400Z-w0-0.parquet"), [40]);
    assert_eq!(ids("flows/dt=2026-11-29/hour=12/flows-20261129T122500Z-w0-0.parquet"), [50]);
    assert_eq!(lake.data_files("flows").unwrap().len(), 4);
}

/// A time is undelivered from its push until its cell is written; then the writer says so,
/// and calls the notification.
#[test]
fn a_time_is_undelivered_until_its_cell_is_written() {
    let dir = scratch("undelivered");
    let lake = local(&dir, 60, 1000);
    let mut w = lake.writer::<FlowRow>(0, 1).unwrap();
    let notified = Arc::new(AtomicU64::new(0));
    let n = notified.clone();
    w.set_notify(move || {
        n.fetch_add(1, Ordering::SeqCst);
    });
    assert_eq!(w.undelivered().unwrap(), None);
    w.push(BASE + 5 * SEC, vec![flow(5, BASE, 1), flow(5, BASE, 2)]).unwrap();
    w.push(BASE + 61 * SEC, vec![flow(61, BASE, 3)]).unwrap();
    assert_eq!(w.undelivered().unwrap(), Some(BASE + 5 * SEC));
    w.advance(Some(BASE + 59 * SEC)).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(w.undelivered().unwrap(), Some(BASE + 5 * SEC), "the cell is not complete");
    assert_eq!(w.stats().files_written, 0);
    w.advance(Some(BASE + 60 * SEC)).unwrap();
    wait_for("the first cell", || w.undelivered().unwrap() == Some(BASE + 61 * SEC));
    assert!(notified.load(Ordering::SeqCst) >= 1);
    assert_eq!(w.pending_rows(), 1);
    assert_eq!(files(&dir.join("flows")).len(), 1);
    w.advance(None).unwrap();
    wait_for("the second cell", || w.undelivered().unwrap().is_none());
    let stats = w.finish().unwrap();
    assert_eq!((stats.rows_written, stats.files_written), (3, 2));
}

fn sample(messages: u64) -> SampleInput {
    SampleInput { base_ns: BASE, messages, rows_per_message: 5, step_ns: SEC, spread: 90 }
}

/// Pushes every row of `input` with the frontier advanced after each message (`eager`), or all
/// rows first and the frontier only at the end.
fn write_all(lake: &Lake, input: &SampleInput, eager: bool) -> flowmap_lake::WriterStats {
    let mut w = lake.writer::<FlowRow>(0, 1).unwrap();
    for i in 0..input.messages {
        for (t, r) in input.flows(i) {
            w.push(t, vec![r]).unwrap();
        }
        if eager {
            w.advance(Some(input.first_time(i + 1))).unwrap();
        }
    }
    w.finish().unwrap()
}

fn contents(dir: &std::path::Path) -> BTreeMap<String, Vec<u8>> {
    files(dir)
        .into_iter()
        .filter(|f| f.ends_with(".parquet"))
        .map(|f| (f.clone(), std::fs::read(dir.join(&f)).unwrap()))
        .collect()
}

/// The size bound splits a cell into the same files with the same bytes whether parts are cut
/// early (frontier advanced row by row) or all at the end.
#[test]
fn the_size_bound_splits_deterministically() {
    let input = sample(300);
    let (a, b) = (scratch("split-a"), scratch("split-b"));
    let eager = write_all(&local(&a, 60, 7), &input, true);
    let late = write_all(&local(&b, 60, 7), &input, false);
    let (fa, fb) = (contents(&a), contents(&b));
    assert_eq!(fa.keys().collect::<Vec<_>>(), fb.keys().collect::<Vec<_>>());
    assert!(fa == fb, "same names, different bytes");
    assert_eq!(eager.rows_written, 1500);
    assert_eq!(eager.files_written, late.files_written);
    assert!(eager.manifests_written > late.manifests_written, "parts were cut early in one run");
    // Every file holds at most 7 rows; each (cell, partition) has one short part at most.
    let lake = local(&a, 60, 7);
    let stored = stored::<FlowRow>(&lake);
    assert_eq!(stored, expected_flows(&input));
    let mut short: BTreeMap<String, u32> = BTreeMap::new();
    for (name, bytes) in &fa {
        let n = parquet::file::reader::SerializedFileReader::new(bytes::Bytes::from(bytes.clone()))
            .map(|r| parquet::file::reader::FileReader::metadata(&r).file_metadata().num_rows())
            .unwrap();
        assert!((1..=7).contains(&n), "{name}: {n} rows");
        if n < 7 {
            *short.entry(name.rsplit_once('-').unwrap().0.to_string()).or_default() += 1;
        }
    }
    assert!(short.values().all(|&n| n == 1), "{short:?}");
}

/// A cell written with rows {a, b, c} and re-emitted after a restart as {b, c, d} holds
/// {a, b, c, d} once each; the files already there are not touched.
#[test]
fn a_rewrite_after_a_partial_re_emission_keeps_the_union() {
    let dir = scratch("union");
    let lake = local(&dir, 60, 2);
    let rows: Vec<FlowRow> = (1..=4).map(|id| flow(5, BASE, id)).collect();
    let mut w = lake.writer::<FlowRow>(0, 1).unwrap();
    w.push(BASE + 5 * SEC, rows[..3].to_vec()).unwrap();
    w.finish().unwrap();
    let before = contents(&dir);
    assert_eq!(before.len(), 2);

    let lake = local(&dir, 60, 2);
    let mut w = lake.writer::<FlowRow>(0, 1).unwrap();
    w.push(BASE + 5 * SEC, rows[1..].to_vec()).unwrap();
    w.advance(Some(BASE + 60 * SEC)).unwrap();
    wait_for("the cell", || w.undelivered().unwrap().is_none());
    let stats = w.finish().unwrap();
    assert_eq!((stats.duplicates, stats.rows_written, stats.files_written), (2, 1, 1));
    assert_eq!((stats.cells_resumed, stats.existing_files_read, stats.missing_files), (1, 2, 0));
    let after = contents(&dir);
    for (name, bytes) in &before {
        assert_eq!(after.get(name), Some(bytes), "{name} was rewritten");
    }
    assert!(after.contains_key("flows/dt=2026-11-29/hour=12/flows-20261129T122400Z-w0-2.parquet"));
    let got: Vec<u64> = stored::<FlowRow>(&lake).values().map(|r| r.flow_id).collect();
    assert_eq!(got, [1, 2, 3, 4]);

    // A full re-emission of a complete lake writes nothing.
    let lake = local(&dir, 60, 2);
    let mut w = lake.writer::<FlowRow>(0, 1).unwrap();
    w.push(BASE + 5 * SEC, rows.clone()).unwrap();
    let stats = w.finish().unwrap();
    assert_eq!((stats.duplicates, stats.files_written, stats.manifests_written), (4, 0, 0));
    assert_eq!(contents(&dir), after);
}

/// The job model (commits only below the delivered frontier) over a store that fails at the
/// n-th put, for many n, then resumed on a healthy store: every row once, no file unreadable,
/// nothing committed that was not stored.
#[test]
fn a_store_failing_mid_cell_loses_nothing_and_duplicates_nothing() {
    let input = SampleInput { base_ns: BASE, messages: 240, rows_per_message: 4, step_ns: SEC, spread: 75 };
    let (want_flows, want_edges) = (expected_flows(&input), expected_edges(&input));
    for (fail_at, data_only) in [(1, false), (3, false), (4, false), (5, true), (9, false), (14, true), (40, false)] {
        let dir = scratch(&format!("failing-{fail_at}-{data_only}"));
        let commits = dir.join("commits");
        let lake_dir = dir.join("lake");
        std::fs::create_dir_all(&lake_dir).unwrap();
        let healthy = local(&lake_dir, 60, 9);
        let failing =
            FailingStore::new(Arc::new(LocalFileSystem::new_with_prefix(&lake_dir).unwrap()), fail_at, data_only);
        let lake = Lake::with_store(failing, Path::default(), healthy.settings().clone()).unwrap();
        let err = run_job(&lake, &input, 0, 1, &commits, |_| {}).unwrap_err();
        assert!(err.to_string().contains("fails"), "{err}");
        let committed: u64 = std::fs::read_to_string(&commits).map(|s| s.trim().parse().unwrap()).unwrap_or(0);
        assert!(committed < input.messages);
        // What is committed is stored.
        let flows_now = stored::<FlowRow>(&healthy);
        for i in 0..committed {
            for (_, r) in input.flows(i) {
                assert!(flows_now.contains_key(&r.key()), "fail at {fail_at}: message {i} committed, not stored");
            }
        }
        let run = run_job(&healthy, &input, 0, 1, &commits, |_| {}).unwrap();
        assert_eq!(run.resumed_at, committed);
        assert_eq!(stored::<FlowRow>(&healthy), want_flows, "fail at {fail_at}");
        assert_eq!(stored::<EdgeRow>(&healthy), want_edges, "fail at {fail_at}");
        assert!(files(&lake_dir).iter().all(|f| !f.contains('#')));
    }
}

/// A `put` killed mid-write leaves a staging file (`<name>#<n>`) on a local file system: of a
/// data file its cell's manifest lists, of the manifest itself, of the layout record. The writer
/// that resumes the cell (or writer 0, for the layout record) removes them, and writes the files.
/// (Regression: a kill during a manifest's put left `<cell>.json#1` behind.)
#[test]
fn staging_files_of_interrupted_writes_are_removed() {
    let input = SampleInput { base_ns: BASE, messages: 120, rows_per_message: 3, step_ns: SEC, spread: 30 };
    let dir = scratch("staging");
    let (lake_dir, commits) = (dir.join("lake"), dir.join("commits"));
    std::fs::create_dir_all(&lake_dir).unwrap();
    let healthy = local(&lake_dir, 60, 1000);
    let failing = FailingStore::new(Arc::new(LocalFileSystem::new_with_prefix(&lake_dir).unwrap()), 1, true);
    let lake = Lake::with_store(failing, Path::default(), healthy.settings().clone()).unwrap();
    run_job(&lake, &input, 0, 1, &commits, |_| {}).unwrap_err();
    // A manifest lists a file that is not there (whichever writer failed first).
    let (manifest, listed) = files(&lake_dir)
        .into_iter()
        .filter(|f| f.starts_with("_lake/") && !f.ends_with("layout.json"))
        .find_map(|m| {
            let v: serde_json::Value = serde_json::from_slice(&std::fs::read(lake_dir.join(&m)).unwrap()).unwrap();
            let first = v["files"][0]["path"].as_str().unwrap().to_string();
            (!lake_dir.join(&first).exists()).then_some((m, first))
        })
        .expect("a manifest lists a file that was not written");
    let staging = [format!("{listed}#3"), format!("{manifest}#1"), "_lake/flows/layout.json#2".to_string()];
    for s in &staging {
        let path = lake_dir.join(s);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, b"PAR1 half a file").unwrap();
    }
    let run = run_job(&healthy, &input, 0, 1, &commits, |_| {}).unwrap();
    for s in &staging {
        assert!(!lake_dir.join(s).exists(), "{s} is left");
    }
    assert_eq!(run.flows.staging_removed + run.edges.staging_removed, 2, "the data file's and the manifest's");
    assert!(run.flows.missing_files + run.edges.missing_files >= 1);
    assert!(lake_dir.join(&listed).exists());
    assert_eq!(stored::<FlowRow>(&healthy), expected_flows(&input));
    assert!(files(&lake_dir).iter().all(|f| !f.contains('#')));
}

/// Writers 0 and 1 of 2, in two threads, write their own files; together, every row once.
#[test]
fn two_writers_share_a_lake() {
    let input = sample(200);
    let dir = scratch("two");
    let lake = local(&dir.join("lake"), 60, 50);
    std::thread::scope(|s| {
        for w in 0..2u32 {
            let (lake, commits) = (lake.clone(), dir.join(format!("commits-{w}")));
            s.spawn(move || run_job(&lake, &input, w, 2, &commits, |_| {}).unwrap());
        }
    });
    assert_eq!(stored::<FlowRow>(&lake), expected_flows(&input));
    assert_eq!(stored::<EdgeRow>(&lake), expected_edges(&input));
    let names = lake.data_files("flows").unwrap();
    assert!(names.iter().any(|n| n.contains("-w0-")) && names.iter().any(|n| n.contains("-w1-")));
}

/// Another cell length or writer count on a written table is refused (re-emitted rows would
/// land in other cells and be stored twice).
#[test]
fn a_changed_layout_is_refused() {
    let dir = scratch("layout");
    local(&dir, 60, 10).writer::<FlowRow>(0, 2).unwrap().finish().unwrap();
    let refused = |r: Result<flowmap_lake::TableWriter<FlowRow>, LakeError>| match r {
        Err(LakeError::LayoutChanged { found_cell_ns, found_writers, .. }) => (found_cell_ns / SEC, found_writers),
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("accepted"),
    };
    assert_eq!(refused(local(&dir, 30, 10).writer::<FlowRow>(0, 2)), (60, 2));
    assert_eq!(refused(local(&dir, 60, 10).writer::<FlowRow>(0, 1)), (60, 2));
    // Rows per file may change; another table has its own layout.
    local(&dir, 60, 99).writer::<FlowRow>(1, 2).unwrap().finish().unwrap();
    local(&dir, 30, 10).writer::<EdgeRow>(0, 1).unwrap().finish().unwrap();
    assert!(matches!(local(&dir, 60, 10).writer::<FlowRow>(2, 2), Err(LakeError::Bookkeeping { .. })));
}

/// Rows the schema cannot hold are counted by reason and skipped; rows at a time the frontier
/// had passed are counted and stored; a key pushed twice is stored once.
#[test]
fn bad_late_and_repeated_rows_are_counted() {
    let dir = scratch("bad");
    let lake = local(&dir, 60, 10);
    let mut w = lake.writer::<FlowRow>(0, 1).unwrap();
    let mut bad = flow(5, BASE, 2);
    bad.end_ns = u64::MAX;
    w.push(BASE + 5 * SEC, vec![flow(5, BASE, 1), bad]).unwrap();
    assert_eq!(w.pending_rows(), 1);
    w.push(BASE + 6 * SEC, vec![flow(5, BASE, 1)]).unwrap();
    w.advance(Some(BASE + 120 * SEC)).unwrap();
    w.push(BASE + 7 * SEC, vec![flow(5, BASE, 3)]).unwrap();
    let stats = w.finish().unwrap();
    assert_eq!(stats.rejected.get("timestamp_out_of_range"), Some(&1));
    assert_eq!((stats.rows_received, stats.duplicates, stats.late_rows, stats.rows_written), (3, 1, 1, 2));
    let ids: Vec<u64> = stored::<FlowRow>(&lake).values().map(|r| r.flow_id).collect();
    assert_eq!(ids, [1, 3]);
}

/// A manifest that is not this version's, or not this cell's, stops the writer with an error
/// naming it (rather than guessing which rows are stored).
#[test]
fn a_damaged_manifest_stops_the_writer() {
    let dir = scratch("manifest");
    let lake = local(&dir, 60, 10);
    let mut w = lake.writer::<FlowRow>(0, 1).unwrap();
    w.push(BASE + 5 * SEC, vec![flow(5, BASE, 1)]).unwrap();
    w.finish().unwrap();
    let path = dir.join("_lake/flows/w0/2026-11-29/20261129T122400Z.json");
    std::fs::write(&path, b"{\"version\": 2}").unwrap();
    let mut w = lake.writer::<FlowRow>(0, 1).unwrap();
    w.push(BASE + 5 * SEC, vec![flow(5, BASE, 2)]).unwrap();
    w.advance(None).unwrap();
    wait_for("the error", || w.undelivered().is_err());
    match w.undelivered() {
        Err(LakeError::Bookkeeping { path, .. }) => assert!(path.ends_with("20261129T122400Z.json"), "{path}"),
        other => panic!("{other:?}"),
    }
    assert!(w.push(BASE + 6 * SEC, vec![flow(6, BASE, 3)]).is_err());
    assert!(w.finish().is_err());
}
