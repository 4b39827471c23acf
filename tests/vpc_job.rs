//! Cloud flow log rows attributed by the job (`flowmap attribute --vpc-flow-logs`): both ends
//! from the exporters' evidence, one owner over each row's whole interval; the same with 1 and
//! 2 workers.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;

use flowmap_schema::{encode_batch, ExporterBatch, Ownership, SCHEMA_VERSION};
use flowmap_sim::Delivery;
use serde_json::Value;

const S: u64 = 1_000_000_000;
/// 2026-01-01T00:00:00Z, in seconds.
const T0_S: u64 = 1_767_225_600;

fn ip(s: &str) -> Vec<u8> {
    flowmap_schema::ip_to_bytes(s.parse().unwrap())
}

/// host-a's batches, ten-second windows over ten minutes: `web` holds 10.1.0.5 throughout,
/// `db-old` holds 10.1.0.9 until 300 s, `db-new` from then on.
fn deliveries() -> Vec<Delivery> {
    (0..60u64)
        .map(|k| {
            let (from, to) = ((T0_S + 10 * k) * S, (T0_S + 10 * (k + 1)) * S);
            let db = if k < 30 { "db-old" } else { "db-new" };
            let hb = |addr: &str, workload: &str| Ownership {
                ip: ip(addr),
                workload: workload.into(),
                from_ns: from,
                to_ns: to,
                port: 0,
            };
            let batch = ExporterBatch {
                schema_version: SCHEMA_VERSION,
                exporter_id: "host-a".into(),
                seq: k,
                window_from_ns: from,
                window_to_ns: to,
                incarnation: 1,
                heartbeats: vec![
                    hb("10.1.0.5", "web"),
                    hb("10.1.0.9", db),
                    // A TCP listener's claim, scoped to its port.
                    Ownership { port: 5432, ..hb("10.1.0.20", "pg") },
                ],
                ..Default::default()
            };
            Delivery { key: "host-a".into(), arrival: to, payload: encode_batch(&batch) }
        })
        .collect()
}

const HEADER: &[&str] = &[
    "version",
    "account-id",
    "interface-id",
    "srcaddr",
    "dstaddr",
    "srcport",
    "dstport",
    "protocol",
    "packets",
    "bytes",
    "start",
    "end",
    "action",
    "log-status",
];

fn row(src: &str, dst: &str, from: u64, to: u64) -> Vec<String> {
    row_proto(src, dst, from, to, "6")
}

fn row_proto(src: &str, dst: &str, from: u64, to: u64, protocol: &str) -> Vec<String> {
    let (from, to) = ((T0_S + from).to_string(), (T0_S + to).to_string());
    ["2", "123456789012", "eni-1", src, dst, "40000", "5432", protocol, "10", "1000", &from, &to, "ACCEPT", "OK"]
        .map(str::to_string)
        .to_vec()
}

fn write_logs(dir: &Path) {
    let rows = vec![
        row("10.1.0.5", "10.1.0.9", 60, 119),     // line 2: web -> db-old
        row("10.1.0.5", "10.1.0.9", 240, 359),    // line 3: across the change at 300 s
        row("10.1.0.5", "10.1.0.9", 360, 419),    // line 4: web -> db-new
        row("10.1.0.5", "198.51.100.7", 60, 119), // line 5: an external destination
        row("10.1.0.77", "10.1.0.5", 60, 119),    // line 6: nobody holds the source
        [
            "2",
            "123456789012",
            "eni-1",
            "-",
            "-",
            "-",
            "-",
            "-",
            "-",
            "-",
            &(T0_S + 60).to_string(),
            &(T0_S + 119).to_string(),
            "-",
            "NODATA",
        ]
        .map(str::to_string)
        .to_vec(), // line 7
        row("10.1.0.5", "10.1.0.9", 119, 60),     // line 8: end before start: covers its start
        row("10.1.0.5", "10.1.0.20", 60, 119),    // line 9: TCP to the listener's port
        row_proto("10.1.0.5", "10.1.0.20", 60, 119, "17"), // line 10: UDP to the same port number
    ];
    let logs = dir.join("AWSLogs/123456789012/vpcflowlogs/us-east-1/2026/01/01");
    std::fs::create_dir_all(&logs).unwrap();
    let file = std::fs::File::create(logs.join("a.log.gz")).unwrap();
    flowmap_vpc::write::write_text(file, HEADER, &rows).unwrap();
    // A second file with a malformed line between two good ones.
    let text = format!(
        "{}\n{}\nnot a flow log line\n{}\n",
        HEADER.join(" "),
        row("10.1.0.5", "10.1.0.9", 60, 119).join(" "),
        row("10.1.0.5", "10.1.0.9", 360, 419).join(" ")
    );
    std::fs::write(logs.join("b.log"), text).unwrap();
}

fn run(dir: &Path, workers: &str) -> (Vec<Value>, String) {
    let out = dir.join(format!("vpc-{workers}.jsonl"));
    let output = Command::new(env!("CARGO_BIN_EXE_flowmap"))
        .args(["attribute", "--input"])
        .arg(dir)
        .arg("--out")
        .arg(dir.join("flows.jsonl"))
        .arg("--vpc-flow-logs")
        .arg(dir.join("AWSLogs"))
        .arg("--vpc-out")
        .arg(&out)
        .args(["-w", workers])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "{stderr}");
    let rows = std::fs::read_to_string(&out).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    (rows, stderr)
}

/// (file, line) -> (source end, destination end), each a workload or `!reason`.
fn ends(rows: &[Value]) -> Vec<(String, u64, String, String)> {
    let said = |e: &Value| match e["workload"].as_str() {
        Some(w) => w.to_string(),
        None => format!("!{}", e["reason"].as_str().unwrap()),
    };
    let mut out: Vec<_> = rows
        .iter()
        .map(|r| {
            let file = r["key"].as_str().unwrap().rsplit('/').next().unwrap().to_string();
            (file, r["line"].as_u64().unwrap(), said(&r["src"]), said(&r["dst"]))
        })
        .collect();
    out.sort();
    out
}

#[test]
fn flow_log_rows_get_both_ends_from_the_exporters_evidence() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    flowmap_sim::io::write_deliveries(&dir.join("deliveries.fmd"), &deliveries()).unwrap();
    std::fs::write(dir.join("roster.txt"), "host-a\n").unwrap();
    write_logs(dir);
    let (one, stderr) = run(dir, "1");
    let s = |a: &str, b: &str| (a.to_string(), b.to_string());
    let want: Vec<(String, u64, String, String)> = [
        ("a.log.gz", 2, s("web", "db-old")),
        ("a.log.gz", 3, s("web", "!interval_not_covered")),
        ("a.log.gz", 4, s("web", "db-new")),
        ("a.log.gz", 5, s("web", "!external")),
        ("a.log.gz", 6, s("!no_owner", "web")),
        ("a.log.gz", 7, s("!no_address", "!no_address")),
        ("a.log.gz", 8, s("web", "db-old")),
        ("a.log.gz", 9, s("web", "pg")),
        ("a.log.gz", 10, s("web", "!shared_ip")),
        ("b.log", 2, s("web", "db-old")),
        ("b.log", 4, s("web", "db-new")),
    ]
    .into_iter()
    .map(|(f, l, (a, b))| (f.to_string(), l, a, b))
    .collect();
    assert_eq!(ends(&one), want);
    assert!(stderr.contains("1 malformed lines"), "{stderr}");
    assert!(stderr.contains("b.log:3"), "the dead letter names its file and line: {stderr}");
    let (two, _) = run(dir, "2");
    assert_eq!(one, two, "the same rows, byte for byte, with 2 workers");
    // Evidence and ids: the attributed ends say what they rest on; ids are distinct.
    assert!(one.iter().filter(|r| r["src"]["workload"] == "web").all(|r| r["src"]["evidence"] == "heartbeat"));
    let mut ids: Vec<u64> = one.iter().map(|r| r["record_id"].as_u64().unwrap()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 11);
}
