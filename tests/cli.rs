//! The `flowmap` binary, as a user runs it: every subcommand, its JSON summaries, its errors.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn flowmap(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_flowmap")).args(args).output().expect("flowmap runs")
}

fn ok(args: &[&str]) -> String {
    let out = flowmap(args);
    assert!(out.status.success(), "flowmap {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

fn last_json(stdout: &str) -> serde_json::Value {
    let line = stdout.lines().last().expect("output");
    serde_json::from_str(line).unwrap_or_else(|e| panic!("last line is not JSON ({e}): {line}"))
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("flowmap-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn repo(path: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path).display().to_string()
}

#[test]
fn demo_json_summary_has_the_promised_fields() {
    let scenario = repo("configs/scenarios/long.toml");
    // A shorter run of the small fleet, through a scenario file and a config file.
    let dir = scratch("demo");
    let text = std::fs::read_to_string(&scenario)
        .unwrap()
        .replace("duration_s = 10800", "duration_s = 300")
        .replace("ipam_silences = 3", "ipam_silences = 0");
    let file = dir.join("short.toml");
    std::fs::write(&file, text).unwrap();
    let out =
        ok(&["demo", "--scenario", file.to_str().unwrap(), "--config", &repo("configs/job.toml"), "--json", "-w", "2"]);
    let summary = last_json(&out);
    for key in
        ["flows", "attributed", "unattributed", "misattributed", "baseline_misattributed", "flows_per_sec", "workers"]
    {
        assert!(summary.get(key).is_some(), "missing {key}: {summary}");
    }
    assert_eq!(summary["misattributed"], 0);
    assert_eq!(summary["workers"], 2);
    assert!(summary["flows"].as_u64().unwrap() > 1_000);
    assert!(out.contains("flowmap demo"), "a readable summary comes first");
}

#[test]
fn simulate_attribute_score_round_trip_is_deterministic() {
    let dir = scratch("files");
    let sim = dir.join("sim");
    let scenario = repo("configs/scenarios/long.toml");
    let text = std::fs::read_to_string(&scenario)
        .unwrap()
        .replace("duration_s = 10800", "duration_s = 240")
        .replace("ipam_silences = 3", "ipam_silences = 0")
        .replace("corrupt = 0.0\n", "corrupt = 0.01\n")
        .replace("bad_record = 0.0\n", "bad_record = 0.01\n");
    let file = dir.join("s.toml");
    std::fs::write(&file, text).unwrap();
    ok(&["simulate", "--scenario", file.to_str().unwrap(), "--out", sim.to_str().unwrap()]);
    let (one, two) = (dir.join("one.jsonl"), dir.join("two.jsonl"));
    ok(&["attribute", "--input", sim.to_str().unwrap(), "--out", one.to_str().unwrap(), "-w", "1"]);
    ok(&["attribute", "--input", sim.to_str().unwrap(), "--out", two.to_str().unwrap(), "-w", "2"]);
    let (a, b) = (std::fs::read(&one).unwrap(), std::fs::read(&two).unwrap());
    assert!(!a.is_empty());
    assert_eq!(a, b, "1 and 2 workers write byte-identical output");
    let score = last_json(&ok(&[
        "score",
        "--truth",
        sim.join("truth.jsonl").to_str().unwrap(),
        "--input",
        one.to_str().unwrap(),
        "--json",
    ]));
    for key in ["flows", "attributed", "unattributed", "misattributed", "baseline_misattributed", "missing"] {
        assert!(score.get(key).is_some(), "missing {key}: {score}");
    }
    assert_eq!(score["misattributed"], 0);
    assert_eq!(score["missing"], 0);
    // Found by a fresh user: from files, the refused (corrupted) records counted as unaccounted.
    // `attribute --dead-letters` keeps the refused batches and `score --dead-letters` accounts
    // for them, as the Kafka path does with the dead-letter topic.
    assert!(score["unaccounted"].as_u64().unwrap() > 0, "this scenario corrupts records: {score}");
    let dead = dir.join("dead.fmd");
    let three = dir.join("three.jsonl");
    let args = ["attribute", "--input", sim.to_str().unwrap(), "--out", three.to_str().unwrap()];
    ok(&[&args[..], &["--dead-letters", dead.to_str().unwrap(), "-w", "2"]].concat());
    assert_eq!(std::fs::read(&three).unwrap(), a, "dead letters change nothing in the output");
    let truth = sim.join("truth.jsonl");
    let args = ["score", "--truth", truth.to_str().unwrap(), "--input", one.to_str().unwrap(), "--json"];
    let accounted = last_json(&ok(&[&args[..], &["--dead-letters", dead.to_str().unwrap()]].concat()));
    assert_eq!(accounted["unaccounted"], 0, "{accounted}");
    assert_eq!(accounted["dead_lettered"], score["unaccounted"], "{accounted}");
    // Records carry plain integers and string addresses.
    let first: serde_json::Value =
        serde_json::from_str(std::str::from_utf8(&a).unwrap().lines().next().unwrap()).unwrap();
    assert!(first["bytes_sent"].is_u64() && first["remote_ip"].is_string() && first["flow_id"].is_u64());
}

#[test]
fn bench_reports_throughput_and_state() {
    let out = ok(&["bench", "--flows", "20000", "--ips", "500", "--exporters", "10", "-w", "2", "--json"]);
    let summary = last_json(&out);
    for key in ["workers", "flows", "flows_per_sec", "flows_per_sec_per_worker", "peak_rss_bytes", "state_bytes_per_ip"]
    {
        assert!(summary.get(key).is_some(), "missing {key}: {summary}");
    }
    assert_eq!(summary["flows"], 20_000);
    assert_eq!(summary["attributed"], summary["expected_attributed"]);
    assert!(summary["flows_per_sec"].as_f64().unwrap() > 0.0);
}

#[test]
fn bench_exports_the_peer_data_set() {
    let dir = scratch("export");
    ok(&["bench", "--flows", "1000", "--ips", "50", "--exporters", "5", "--export", dir.to_str().unwrap()]);
    let flows = std::fs::read_to_string(dir.join("flows.csv")).unwrap();
    assert_eq!(flows.lines().count(), 1_001);
    let ranges = std::fs::read_to_string(dir.join("ranges.csv")).unwrap();
    assert_eq!(ranges.lines().count(), 50 * 12 + 1);
}

#[test]
fn bad_arguments_and_files_are_clear_errors() {
    let cases: &[(&[&str], &str)] = &[
        (&["demo", "--scenario", "nope"], "neither a built-in scenario"),
        (&["demo", "-w", "0"], "at least 1"),
        (&["demo", "--config", "/nonexistent.toml"], "cannot read"),
        (&["attribute", "--input", "/nonexistent"], "/nonexistent"),
        (&["bench", "--flows", "0"], "must be positive"),
        (&["demo", "-n", "2", "-p", "1"], "runs in one process"),
        (&["collect", "--brokers", "nohost", "--input-topic", "a", "--output-topic", "b"], "not HOST:PORT"),
        (&["collect", "--brokers", "h:1", "--input-topic", "a", "--output-topic", "b", "-w", "0"], "at least 1"),
        (&["simulate", "--brokers", "h:1"], "--topic"),
        (&["score", "--truth", "/nonexistent", "--brokers", "h:1"], "--topic"),
        (&["replay", "--from", "/nonexistent", "--out", "/tmp/x"], "/nonexistent/manifest.json"),
        (&["replay", "--out", "/tmp/x"], "--from"),
        (&["replay", "--from", "/nonexistent", "--out", "/tmp/x", "-n", "2"], "runs in one process"),
        (&["capture", "--brokers", "h:1", "--out", "/tmp/x"], "--topic"),
    ];
    for (args, expect) in cases {
        let out = flowmap(args);
        assert!(!out.status.success(), "{args:?} should fail");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expect), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
    }
    let dir = scratch("badcfg");
    let cfg = dir.join("bad.toml");
    std::fs::write(&cfg, "guard = \"2s\"\nretention = \"1s\"\n").unwrap();
    let out = flowmap(&["demo", "--config", cfg.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("retention"));
    let log = dir.join("deliveries.fmd");
    std::fs::write(&log, b"FMD1\x05\x00").unwrap();
    std::fs::write(dir.join("roster.txt"), "a\n").unwrap();
    let out = flowmap(&["attribute", "--input", dir.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("truncated"));
    // A damaged capture: a bad manifest, then a partition file cut short.
    let cap = dir.join("capture");
    std::fs::create_dir_all(cap.join("flows")).unwrap();
    std::fs::write(cap.join("manifest.json"), "{}").unwrap();
    let out = flowmap(&["replay", "--from", cap.to_str().unwrap(), "--out", dir.join("o").to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a capture manifest"));
    let manifest = r#"{"format":"flowmap-capture/1","topics":[{"name":"flows","partitions":1,"messages":1}],"from_ms":null,"to_ms":null}"#;
    std::fs::write(cap.join("manifest.json"), manifest).unwrap();
    std::fs::write(cap.join("flows/0.fmc"), b"FMC1\x01\x00").unwrap();
    let out = flowmap(&["replay", "--from", cap.to_str().unwrap(), "--out", dir.join("o").to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("damaged") && err.contains("truncated"), "{err}");
}

#[test]
fn every_file_in_configs_loads() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs");
    flowmap::config::JobConfig::load(&root.join("job.toml")).expect("job.toml");
    let mut scenarios = 0;
    for entry in std::fs::read_dir(root.join("scenarios")).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let scenario: flowmap_sim::Scenario =
            toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        scenario.validate().unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        if let Some(builtin) = flowmap_sim::Scenario::builtin(&scenario.name) {
            assert_eq!(builtin, scenario, "{} matches the built-in", path.display());
        }
        scenarios += 1;
    }
    assert!(scenarios >= 3);
}

#[test]
fn a_closed_output_pipe_is_not_an_error() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let dir = scratch("pipe");
    ok(&["simulate", "--scenario", "steady", "--seed", "4", "--out", dir.to_str().unwrap()]);
    let mut child = Command::new(env!("CARGO_BIN_EXE_flowmap"))
        .args(["attribute", "--input", dir.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut first).unwrap();
    assert!(first.contains("flow_id"));
    // The reader is gone; flowmap must notice the closed pipe and exit quietly.
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("error"));
}
