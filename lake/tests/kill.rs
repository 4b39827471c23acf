//! A writer process killed (SIGKILL) at several points while it writes, and restarted the way the
//! job restarts (from its committed messages, re-emitting every later row): in the end every row
//! is stored exactly once, every data file is whole, and no staging file is left.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use common::*;
use flowmap_lake::sample::{run_job, SampleInput};
use flowmap_lake::{EdgeRow, FlowRow};

const DIR_VAR: &str = "FLOWMAP_LAKE_KILL_DIR";

fn input() -> SampleInput {
    // 50 minutes of dataflow time; a message's rows span 90 s, more than a 60 s cell, so a
    // restart re-emits rows of cells already written.
    SampleInput { base_ns: BASE, messages: 3_000, rows_per_message: 20, step_ns: SEC, spread: 90 }
}

/// The child process (run by `a_killed_writer_restarts_without_duplicates_or_losses`): the job
/// model on the lake in `$FLOWMAP_LAKE_KILL_DIR`, printing `files N` as data files are written
/// and, at the end, `done DUPLICATES MISSING STAGING RESUMED_AT`.
#[test]
#[ignore = "run as a child process by a_killed_writer_restarts_without_duplicates_or_losses"]
fn kill_child() {
    let dir = std::path::PathBuf::from(std::env::var(DIR_VAR).unwrap());
    let lake = local(&dir.join("lake"), 60, 200);
    let mut last = 0;
    let run = run_job(&lake, &input(), 0, 1, &dir.join("commits"), |p| {
        if p.files != last {
            last = p.files;
            println!("files {}", p.files);
        }
    })
    .unwrap();
    let (f, e) = (&run.flows, &run.edges);
    println!(
        "done {} {} {} {}",
        f.duplicates + e.duplicates,
        f.missing_files + e.missing_files,
        f.staging_removed + e.staging_removed,
        run.resumed_at
    );
}

/// Runs the child until it has written `kill_after` files (then kills it), or to the end;
/// returns the `done` line's numbers when it finished.
fn child(dir: &Path, kill_after: Option<u64>) -> Option<Vec<u64>> {
    let mut c = Command::new(std::env::current_exe().unwrap())
        .args(["kill_child", "--exact", "--ignored", "--nocapture", "--test-threads=1"])
        .env(DIR_VAR, dir)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = BufReader::new(c.stdout.take().unwrap()).lines();
    for line in lines {
        let line = line.unwrap();
        if let Some(n) = line.strip_prefix("files ") {
            if kill_after.is_some_and(|k| n.parse::<u64>().unwrap() >= k) {
                c.kill().unwrap();
                c.wait().unwrap();
                return None;
            }
        } else if let Some(rest) = line.strip_prefix("done ") {
            assert!(c.wait().unwrap().success());
            return Some(rest.split(' ').map(|x| x.parse().unwrap()).collect());
        }
    }
    let status = c.wait().unwrap();
    panic!("child ended without finishing: {status}");
}

#[test]
fn a_killed_writer_restarts_without_duplicates_or_losses() {
    let dir = scratch("kill");
    for kill_after in [40, 75, 110] {
        assert_eq!(child(&dir, Some(kill_after)), None, "killed after {kill_after} files");
        let committed: u64 = std::fs::read_to_string(dir.join("commits")).unwrap().trim().parse().unwrap();
        assert!(committed > 0 && committed < input().messages, "{committed}");
    }
    let done = child(&dir, None).unwrap();
    let (duplicates, resumed_at) = (done[0], done[3]);
    assert!(resumed_at > 0);
    assert!(duplicates > 0, "the restart re-emitted rows already stored");
    let lake = local(&dir.join("lake"), 60, 200);
    // `stored` reads every data file (a half file would fail) and fails on a key stored twice.
    assert_eq!(stored::<FlowRow>(&lake), expected_flows(&input()));
    assert_eq!(stored::<EdgeRow>(&lake), expected_edges(&input()));
    let all = files(&dir.join("lake"));
    assert!(all.iter().all(|f| !f.contains('#')), "a staging file is left");
    // Running again over the complete input adds nothing.
    std::fs::remove_file(dir.join("commits")).unwrap();
    let run = run_job(&lake, &input(), 0, 1, &dir.join("commits"), |_| {}).unwrap();
    assert_eq!((run.flows.files_written, run.edges.files_written), (0, 0));
    assert_eq!(run.flows.duplicates, 60_000);
    assert_eq!(files(&dir.join("lake")), all);
}
