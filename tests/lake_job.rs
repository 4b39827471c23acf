//! The job writing the flow lake (`--lake`), read back with the lake crate's reader: the same
//! input gives the same rows with 1 and 2 workers, every output record is in the lake once, and
//! a second run over the same input into the same lake (what a restart re-emits) adds nothing.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use flowmap_lake::{EdgeRow, FlowRow, Lake, LakeConfig};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("flowmap-lake-job-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A short run of the repository's small fleet.
fn scenario(dir: &Path) -> PathBuf {
    let long = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/scenarios/long.toml");
    let text = std::fs::read_to_string(long)
        .unwrap()
        .replace("duration_s = 10800", "duration_s = 240")
        .replace("ipam_silences = 3", "ipam_silences = 0");
    let path = dir.join("short.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Runs `demo --lake` and returns its JSON summary.
fn demo(scenario: &Path, lake: &Path, workers: &str) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_flowmap"))
        .args(["demo", "--scenario", scenario.to_str().unwrap(), "--lake", lake.to_str().unwrap(), "-w", workers])
        .arg("--json")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_str(String::from_utf8(out.stdout).unwrap().lines().last().unwrap()).unwrap()
}

fn tables(lake: &Path) -> (Vec<FlowRow>, Vec<EdgeRow>) {
    let lake = Lake::open(&LakeConfig::at(lake.to_str().unwrap()).validate().unwrap()).unwrap();
    let mut flows: Vec<FlowRow> = lake.read_table().unwrap();
    let mut edges: Vec<EdgeRow> = lake.read_table().unwrap();
    flows.sort_by_key(|r| (r.flow_id, r.end_ns, r.open));
    edges.sort_by(|a, b| {
        (a.bucket_start_ns, &a.client, &a.server, a.server_port, a.emitted_at_ns).cmp(&(
            b.bucket_start_ns,
            &b.client,
            &b.server,
            b.server_port,
            b.emitted_at_ns,
        ))
    });
    (flows, edges)
}

#[test]
fn the_lake_is_the_same_for_any_worker_count_and_a_rerun_adds_nothing() {
    let dir = scratch("workers");
    let scenario = scenario(&dir);
    let (one, two) = (dir.join("lake-1"), dir.join("lake-2"));
    let summary = demo(&scenario, &one, "1");
    demo(&scenario, &two, "2");
    let (flows, edges) = tables(&one);
    assert_eq!(flows.len() as u64, summary["records"].as_u64().unwrap(), "every output record, once");
    let keys: std::collections::BTreeSet<_> = flows.iter().map(|r| (r.flow_id, r.end_ns, r.open)).collect();
    assert_eq!(keys.len(), flows.len(), "no record twice");
    assert!(!edges.is_empty());
    let counted = flows.iter().filter(|r| r.counted).count() as u64;
    assert_eq!(counted, edges.iter().map(|e| e.connections).sum::<u64>(), "a connection counts once");
    same(&tables(&two), &(flows.clone(), edges.clone()), "1 and 2 workers write the same rows");

    // The same input again into the same lake: every row is already stored.
    demo(&scenario, &two, "2");
    same(&tables(&two), &(flows, edges), "a re-run adds and loses nothing");
}

/// Equal tables, or a panic naming the counts and the first rows that differ.
fn same(got: &(Vec<FlowRow>, Vec<EdgeRow>), want: &(Vec<FlowRow>, Vec<EdgeRow>), what: &str) {
    fn first<T: PartialEq + std::fmt::Debug>(table: &str, got: &[T], want: &[T], what: &str) {
        if got != want {
            let i = got.iter().zip(want).position(|(a, b)| a != b).unwrap_or(got.len().min(want.len()));
            panic!(
                "{what}: {table} has {} rows, want {}; first difference at {i}:\n got  {:?}\n want {:?}",
                got.len(),
                want.len(),
                got.get(i),
                want.get(i)
            );
        }
    }
    first("flows", &got.0, &want.0, what);
    first("edges", &got.1, &want.1, what);
}

/// `flowmap serve --lake` over the lake a demo wrote: the map's API answers from the job's own
/// tables, edges and events (new dependencies) alike.
#[test]
fn serve_reads_the_lake_the_job_wrote() {
    use std::io::{BufRead, BufReader, Read, Write};
    let dir = scratch("serve");
    let scenario = scenario(&dir);
    let lake = dir.join("lake");
    let summary = demo(&scenario, &lake, "2");
    assert_eq!(summary["misattributed"].as_u64(), Some(0));
    /// Kills the server however the test ends.
    struct Killed(std::process::Child);
    impl Drop for Killed {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = Killed(
        Command::new(env!("CARGO_BIN_EXE_flowmap"))
            .args(["serve", "--lake", lake.to_str().unwrap(), "--addr", "127.0.0.1:0"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut line = String::new();
    BufReader::new(child.0.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let url = line.trim().rsplit(' ').next().unwrap().trim_start_matches("http://").to_string();
    let get = |path: &str| -> serde_json::Value {
        let mut stream = std::net::TcpStream::connect(&url).unwrap();
        write!(stream, "GET {path} HTTP/1.0\r\nHost: {url}\r\n\r\n").unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        let (head, body) = response.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"), "{path}: {head}");
        serde_json::from_str(body).unwrap()
    };
    let meta = get("/api/meta");
    let (from, to) = (meta["extent"]["from"].as_str().unwrap(), meta["extent"]["to"].as_str().unwrap());
    let graph = get(&format!("/api/graph?from={from}&to={to}&group=2"));
    let events = get(&format!("/api/events?from={from}&to={to}"));
    drop(child);
    let (flows, edges) = tables(&lake);
    let lake_edges: std::collections::BTreeSet<_> =
        edges.iter().filter(|e| e.connections > 0).map(|e| (e.client.clone(), e.server.clone())).collect();
    assert!(!flows.is_empty());
    assert!(graph["edges"].as_array().unwrap().len() > 10, "{graph}");
    assert!(lake_edges.len() > 10);
    let listed = events["events"].as_array().map_or(0, Vec::len);
    assert!(listed > 0, "the lake's events table is served: {events}");
}
