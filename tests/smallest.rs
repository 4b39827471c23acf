//! The smallest inputs of the issues "Never the wrong owner" and "Nothing lost", as tests with
//! the right values: hand-made batches through the real job, in memory with 1 and 2 workers,
//! from a delivery log through `flowmap attribute`, and through Kafka (`flowmap collect` on a
//! real broker).
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use flowmap::config::JobConfig;
use flowmap::output::OutputRecord;
use flowmap_kafka::{ClientSettings, Producer, ProducerSettings, Record};
use flowmap_schema::{encode_batch, Assignment, Direction, ExporterBatch, Flow, Ownership, Scope, SCHEMA_VERSION};
use flowmap_sim::Delivery;

const S: u64 = 1_000_000_000;
/// 2026-01-01T00:00:00Z.
const T0: u64 = 1_767_225_600 * S;

fn ip(s: &str) -> Vec<u8> {
    flowmap_schema::ip_to_bytes(s.parse().unwrap())
}

fn batch(exporter: &str, incarnation: u64, seq: u64, from: u64, to: u64) -> ExporterBatch {
    ExporterBatch {
        schema_version: SCHEMA_VERSION,
        exporter_id: exporter.into(),
        seq,
        window_from_ns: from,
        window_to_ns: to,
        incarnation,
        ..Default::default()
    }
}

#[allow(clippy::too_many_arguments)]
fn flow(local: (&str, u32), remote: (&str, u32), dir: Direction, start: u64, end: u64, workload: &str) -> Flow {
    Flow {
        local_ip: ip(local.0),
        local_port: local.1,
        remote_ip: ip(remote.0),
        remote_port: remote.1,
        direction: dir as i32,
        start_ns: start,
        end_ns: end,
        local_workload: workload.into(),
        ..Default::default()
    }
}

fn delivery(b: &ExporterBatch, arrival: u64) -> Delivery {
    Delivery { key: b.exporter_id.clone(), arrival, payload: encode_batch(b) }
}

/// Output records by (exporter, remote port), from every way of running the job; asserts they
/// agree, and returns them.
fn everywhere(name: &str, deliveries: &[Delivery], roster: &[&str], partitions: i32) -> Vec<OutputRecord> {
    let roster: Vec<String> = roster.iter().map(|s| s.to_string()).collect();
    let one = common::records(&common::attribute(deliveries.to_vec(), roster.clone(), 1, JobConfig::default()));
    let two = common::records(&common::attribute(deliveries.to_vec(), roster.clone(), 2, JobConfig::default()));
    assert_eq!(one, two, "{name}: 1 and 2 workers");
    let from_file = through_file(name, deliveries, &roster);
    assert_eq!(one, from_file, "{name}: from a delivery log");
    if let Some(kafka) = through_kafka(name, deliveries, partitions) {
        assert_eq!(one, kafka, "{name}: through Kafka");
    }
    one
}

/// The in-memory job with edges and verification on, over `deliveries`, on `workers` workers.
fn with_edges(deliveries: &[Delivery], roster: &[String], workers: usize) -> flowmap::run::RunReport {
    let timely = if workers == 1 { timely::Config::thread() } else { timely::Config::process(workers) };
    let options = flowmap::run::RunOptions {
        edges: true,
        sample_every: Duration::ZERO,
        ..flowmap::run::RunOptions::new(flowmap::run::OutputMode::Collect)
    };
    let (deliveries, roster) = (std::sync::Arc::new(deliveries.to_vec()), std::sync::Arc::new(roster.to_vec()));
    flowmap::memory::run_deliveries(timely, JobConfig::default(), deliveries, roster, options).unwrap()
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("flowmap-smallest-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `flowmap attribute` over a delivery log.
fn through_file(name: &str, deliveries: &[Delivery], roster: &[String]) -> Vec<OutputRecord> {
    let dir = scratch(name);
    flowmap_sim::io::write_deliveries(&dir.join("deliveries.fmd"), deliveries).unwrap();
    std::fs::write(dir.join("roster.txt"), roster.join("\n") + "\n").unwrap();
    let out = dir.join("out.jsonl");
    let status = Command::new(env!("CARGO_BIN_EXE_flowmap"))
        .args(["attribute", "--input"])
        .arg(&dir)
        .arg("--out")
        .arg(&out)
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    read_jsonl(&out)
}

fn read_jsonl(path: &Path) -> Vec<OutputRecord> {
    let mut records: Vec<OutputRecord> = std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    records.sort_by_key(OutputRecord::key);
    records
}

/// Produces the deliveries, in order, to a new topic of `partitions` partitions (keyed by
/// exporter id), runs `flowmap collect -w 2` until idle, and reads the output topic. `None`
/// when no broker is configured (`FLOWMAP_TEST_BROKERS`; `scripts/test` always sets it).
fn through_kafka(name: &str, deliveries: &[Delivery], partitions: i32) -> Option<Vec<OutputRecord>> {
    let brokers = std::env::var("FLOWMAP_TEST_BROKERS").ok()?;
    let client = ClientSettings::new(&brokers);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    let (input, output) = (format!("in-{name}-{nanos}"), format!("out-{name}-{nanos}"));
    flowmap_kafka::admin::ensure_topics(&client, &[(&input, partitions)], Duration::from_secs(30)).unwrap();
    let producer = Producer::new(&client, &ProducerSettings::default()).unwrap();
    for d in deliveries {
        let record =
            Record { topic: &input, key: d.key.as_bytes(), payload: &d.payload, timestamp_ms: None, headers: &[] };
        producer.send(&record).unwrap();
    }
    let stats = producer.flush(Duration::from_secs(60)).unwrap();
    assert_eq!(stats.failed, 0);
    let status = Command::new(env!("CARGO_BIN_EXE_flowmap"))
        .args(["collect", "--brokers", &brokers, "--input-topic", &input, "--output-topic", &output])
        .args(["--group", &format!("g-{name}-{nanos}"), "--until-idle", "2s", "-w", "2"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "{name}: collect");
    let (mut records, unreadable) = flowmap::cli::kafka::read_output(&client, &output).unwrap();
    assert_eq!(unreadable, 0);
    records.sort_by_key(OutputRecord::key);
    Some(records)
}

fn by_remote_port(records: &[OutputRecord]) -> BTreeMap<(String, u16), (Option<String>, Option<String>)> {
    records
        .iter()
        .map(|r| ((r.exporter.clone(), r.remote_port), (r.remote_workload.clone(), r.reason.clone())))
        .collect()
}

/// Kind 1: host-a reports a server-side flow on 10.200.0.1:8080 whose local workload `web` it
/// knew through a per-(IP, port) assignment (a database with no workload listens on port 5432
/// of the same address); host-b connects to 10.200.0.1:5432. Before the fix: `web`, evidence
/// `flow`. Right: unattributed (`shared_ip`): web's evidence covers its port, not the address.
/// With and without host-a's record of the database's side, and with the old exporter's
/// unstated scope as with a stated port scope.
#[test]
fn regression_a_port_assignment_lends_no_identity_to_the_address() {
    for (variant, with_db_side, scope) in
        [("bare", false, Scope::Unspecified), ("db-side", true, Scope::Unspecified), ("port-scope", false, Scope::Port)]
    {
        let mut a = batch("host-a", 7, 0, T0, T0 + 20 * S);
        let mut web = flow(("10.200.0.1", 8080), ("10.200.0.3", 50_000), Direction::Server, T0 + S, T0 + 19 * S, "web");
        web.local_scope = scope as i32;
        a.flows.push(web);
        if with_db_side {
            a.flows.push(flow(
                ("10.200.0.1", 5432),
                ("10.200.0.2", 40_001),
                Direction::Server,
                T0 + 5 * S,
                T0 + 6 * S,
                "",
            ));
        }
        let mut b = batch("host-b", 9, 0, T0, T0 + 20 * S);
        b.flows.push(flow(("10.200.0.2", 40_001), ("10.200.0.1", 5432), Direction::Client, T0 + 5 * S, T0 + 6 * S, ""));
        let deliveries = [delivery(&a, T0 + 21 * S), delivery(&b, T0 + 21 * S)];
        let records = everywhere(&format!("kind1-{variant}"), &deliveries, &["host-a", "host-b"], 2);
        let v = by_remote_port(&records);
        assert_eq!(v[&("host-b".into(), 5432)], (None, Some("shared_ip".into())), "{variant}: {records:?}");
    }
}

/// Kind 2: the assignment source `ipam` and an exporter `a` publish 10 s windows [0, 10) to
/// [40, 50) into one partition, interleaved. ipam's seq 0 assigns 10.9.0.1 to lb-old at 3 s; its
/// seq 1, assigning lb-new at 15 s, is lost. `a`'s flow to 10.9.0.1:443 at 25 s was attributed
/// to lb-old (evidence `assignment`). Right: unattributed (`source_gap`), and one lost batch
/// counted. A flow at 6 s, inside ipam's promise, is still lb-old's.
#[test]
fn regression_an_assignment_ends_where_its_source_vouched() {
    let mut deliveries = Vec::new();
    for k in 0..5u64 {
        let (from, to) = (T0 + k * 10 * S, T0 + (k + 1) * 10 * S);
        let mut ipam = batch("ipam", 1, k, from, to);
        if k == 0 {
            ipam.assignments.push(Assignment { ip: ip("10.9.0.1"), workload: "lb-old".into(), at_ns: T0 + 3 * S });
        }
        if k != 1 {
            deliveries.push(delivery(&ipam, to + S)); // seq 1 is lost
        }
        let mut a = batch("a", 2, k, from, to);
        if k == 0 {
            a.flows.push(flow(("10.1.0.1", 40_001), ("10.9.0.1", 443), Direction::Client, T0 + 6 * S, T0 + 7 * S, ""));
        }
        if k == 2 {
            a.flows.push(flow(
                ("10.1.0.1", 40_000),
                ("10.9.0.1", 443),
                Direction::Client,
                T0 + 25 * S,
                T0 + 26 * S,
                "",
            ));
        }
        deliveries.push(delivery(&a, to + S));
    }
    let records = everywhere("kind2", &deliveries, &["ipam", "a"], 1);
    let by_start: BTreeMap<u64, (Option<String>, Option<String>)> =
        records.iter().map(|r| (r.start_ns - T0, (r.remote_workload.clone(), r.reason.clone()))).collect();
    assert_eq!(by_start[&(25 * S)], (None, Some("source_gap".into())));
    assert_eq!(by_start[&(6 * S)], (Some("lb-old".into()), None));
    let report = common::attribute(deliveries, vec!["ipam".into(), "a".into()], 1, JobConfig::default());
    assert_eq!(report.ingest.lost_batches, 1);
}

/// "Nothing lost", 1: host-a seq 0 (one flow), host-b seq 0 (a heartbeat for that flow's
/// remote over [T0, T0+30 s)), then host-a again after a restart, seq 0, window
/// [T0+12 s, T0+22 s), one flow. Before the fix: one flow out, `duplicate_batches: 1`. Right:
/// both flows, attributed alike, one restart counted, nothing dropped as a duplicate; also when
/// the exporter does not state its incarnation.
#[test]
fn regression_a_restarted_exporter_loses_nothing() {
    for (variant, first, second) in [("incarnations", 0xaaaa, 0xbbbb), ("unstated", 0, 0)] {
        let mut a1 = batch("host-a", first, 0, T0, T0 + 10 * S);
        a1.flows.push(flow(
            ("10.2.0.1", 40_000),
            ("10.2.0.9", 80),
            Direction::Client,
            T0 + 3 * S,
            T0 + 4 * S,
            "client",
        ));
        // host-b heartbeats the flows' remote over [T0, T0+30 s), in three windows.
        let b: Vec<ExporterBatch> = (0..3u64)
            .map(|k| {
                let (from, to) = (T0 + k * 10 * S, T0 + (k + 1) * 10 * S);
                let mut b = batch("host-b", 5, k, from, to);
                b.heartbeats.push(Ownership {
                    ip: ip("10.2.0.9"),
                    workload: "server".into(),
                    from_ns: from,
                    to_ns: to,
                    port: 0,
                });
                b
            })
            .collect();
        let mut a2 = batch("host-a", second, 0, T0 + 12 * S, T0 + 22 * S);
        a2.flows.push(flow(
            ("10.2.0.1", 40_001),
            ("10.2.0.9", 80),
            Direction::Client,
            T0 + 15 * S,
            T0 + 16 * S,
            "client",
        ));
        let deliveries = [
            delivery(&b[0], T0 + 10 * S),
            delivery(&a1, T0 + 11 * S),
            delivery(&b[1], T0 + 20 * S),
            delivery(&a2, T0 + 23 * S),
            delivery(&b[2], T0 + 30 * S),
        ];
        let records = everywhere(&format!("restart-{variant}"), &deliveries, &["host-a", "host-b"], 2);
        assert_eq!(records.len(), 2, "{variant}: both flows: {records:?}");
        for r in &records {
            assert_eq!(r.remote_workload.as_deref(), Some("server"), "{variant}: {r:?}");
        }
        let report =
            common::attribute(deliveries.to_vec(), vec!["host-a".into(), "host-b".into()], 1, JobConfig::default());
        assert_eq!((report.ingest.exporter_restarts, report.ingest.duplicate_batches), (1, 0), "{variant}");
    }
}

/// "Nothing lost", 4: an open connection's slices and its final record are told apart in the
/// output (`open`, `end_ns`), share the flow id, and carry one verdict, although the evidence
/// about the connection's start has expired by the final record.
#[test]
fn slices_and_the_final_record_are_told_apart_and_agree() {
    let retention = JobConfig::default().retention();
    let mut deliveries = Vec::new();
    let window = 60 * S;
    let windows = retention / window + 3;
    let mut server = batch("host-s", 1, 0, T0, T0 + window);
    server.heartbeats.push(Ownership {
        ip: ip("10.2.0.9"),
        workload: "db".into(),
        from_ns: T0,
        to_ns: T0 + window,
        port: 0,
    });
    deliveries.push(delivery(&server, T0 + window));
    for k in 0..windows {
        let (from, to) = (T0 + k * window, T0 + (k + 1) * window);
        let mut client = batch("host-c", 1, k, from, to);
        let last = k + 1 == windows;
        let mut f = flow(
            ("10.2.0.1", 40_000),
            ("10.2.0.9", 5432),
            Direction::Client,
            T0 + 5 * S,
            if last { to - S } else { to },
            "app",
        );
        f.open = !last;
        f.connection_id = 77;
        f.bytes_sent = k * 100;
        client.flows.push(f);
        deliveries.push(delivery(&client, to));
        if k > 0 {
            // The server's exporter keeps reporting, without the address (it moved away).
            deliveries.push(delivery(&batch("host-s", 1, k, from, to), to));
        }
    }
    let records = everywhere("slices", &deliveries, &["host-s", "host-c"], 2);
    assert_eq!(records.len() as u64, windows);
    let ids: std::collections::BTreeSet<u64> = records.iter().map(|r| r.flow_id).collect();
    assert_eq!(ids.len(), 1, "one flow id");
    assert_eq!(records.iter().filter(|r| !r.open).count(), 1, "one final record");
    for r in &records {
        assert_eq!(r.remote_workload.as_deref(), Some("db"), "every record carries the first verdict: {r:?}");
    }
}

/// "Nothing lost", 5: two hosts sharing an exporter id interleave two incarnations: both are
/// used, and the conflict is counted.
#[test]
fn two_hosts_sharing_an_exporter_id_are_counted_and_both_used() {
    let mut deliveries = Vec::new();
    for k in 0..3u64 {
        let (from, to) = (T0 + k * 10 * S, T0 + (k + 1) * 10 * S);
        for (inc, port) in [(1u64, 40_000u32), (2, 50_000)] {
            let mut b = batch("localhost", inc, k, from, to);
            b.flows.push(flow(("10.2.0.1", port), ("10.2.0.9", 80), Direction::Client, from + S, from + 2 * S, ""));
            deliveries.push(delivery(&b, to));
        }
    }
    let records = everywhere("shared-id", &deliveries, &["localhost"], 1);
    assert_eq!(records.len(), 6, "every batch of both hosts is used");
    let report = common::attribute(deliveries, vec!["localhost".into()], 1, JobConfig::default());
    assert!(report.ingest.exporter_id_conflicts >= 1, "{:?}", report.ingest);
    assert_eq!(report.ingest.duplicate_batches, 0);
}

/// Two-sided verification catches a wrong claim: a misconfigured host (a clone still holding
/// the database's address, say) reports the database's side of a connection as its own workload
/// `impostor`, while the database's host reports it as `db`. The two records of the other end
/// disagree (a 10 s connection: its lifetime proves the records are of it): the client's record
/// is never attributed to `impostor` (nor to `db`: the evidence
/// contradicts itself), the disagreement is counted once and emitted as an event naming both
/// sides. (A wrong heartbeat for the address instead conflicts with the database's own claims:
/// `conflict`, never the wrong owner; `tests` of the rule cover that.)
#[test]
fn a_planted_wrong_claim_is_reported_as_a_disagreement() {
    let mut client = batch("host-a", 1, 0, T0, T0 + 20 * S);
    client.flows.push(flow(
        ("10.0.0.1", 40_001),
        ("10.0.0.2", 5432),
        Direction::Client,
        T0 + 5 * S,
        T0 + 15 * S,
        "app",
    ));
    let mut server = batch("host-b", 1, 0, T0, T0 + 20 * S);
    server.flows.push(flow(("10.0.0.2", 5432), ("10.0.0.1", 40_001), Direction::Server, T0 + 5 * S, T0 + 15 * S, "db"));
    let mut wrong = batch("host-x", 1, 0, T0, T0 + 20 * S);
    wrong.flows.push(flow(
        ("10.0.0.2", 5432),
        ("10.0.0.1", 40_001),
        Direction::Server,
        T0 + 5 * S,
        T0 + 15 * S,
        "impostor",
    ));
    let deliveries =
        vec![delivery(&client, T0 + 20 * S), delivery(&server, T0 + 20 * S), delivery(&wrong, T0 + 20 * S)];
    let roster: Vec<String> = ["host-a", "host-b", "host-x"].iter().map(|s| s.to_string()).collect();
    for workers in [1, 2] {
        let report = with_edges(&deliveries, &roster, workers);
        let records: Vec<OutputRecord> = report.flows.iter().map(OutputRecord::from).collect();
        let of_client: Vec<_> = records.iter().filter(|r| r.exporter == "host-a").collect();
        assert_eq!(of_client.len(), 1);
        assert_eq!(of_client[0].remote_workload, None, "{workers} workers: {:?}", of_client[0]);
        let disagreements: Vec<_> =
            report.events.iter().filter(|e| e.kind == flowmap_schema::EventKind::Disagreement as i32).collect();
        assert_eq!(report.counts.verified_disagree, 1, "{workers} workers: one connection, counted once");
        assert_eq!(disagreements.len(), 1, "{workers} workers: one event");
        let e = disagreements[0];
        assert_eq!((e.peer_workload.as_str(), e.claims_workload.as_str()), ("db", "impostor"));
    }
}

/// Edges count a connection once and its bytes once, however many records it has: an
/// external connection (decided without a lookup) reported as three open slices and a final
/// record makes one connection with the final record's bytes (regression: every slice counted
/// the connection again).
#[test]
fn a_connection_with_several_records_counts_once_in_the_edges() {
    let window = 10 * S;
    let mut deliveries = Vec::new();
    for k in 0..4u64 {
        let (from, to) = (T0 + k * window, T0 + (k + 1) * window);
        let mut b = batch("host-a", 1, k, from, to);
        let last = k == 3;
        let mut f = flow(
            ("10.0.0.1", 40_001),
            ("198.51.100.7", 443),
            Direction::Client,
            T0 + S,
            if last { to - S } else { to },
            "app",
        );
        f.open = !last;
        f.connection_id = 9;
        f.bytes_sent = (k + 1) * 1000;
        f.bytes_received = (k + 1) * 10;
        b.flows.push(f);
        deliveries.push(delivery(&b, to));
    }
    let roster = vec!["host-a".to_string()];
    for workers in [1, 2] {
        let report = with_edges(&deliveries, &roster, workers);
        assert_eq!(report.flows.len(), 4);
        let sum = |f: fn(&flowmap_schema::Edge) -> u64| report.edges.iter().map(f).sum::<u64>();
        assert_eq!(sum(|e| e.connections), 1, "{workers} workers: {:?}", report.edges);
        assert_eq!(sum(|e| e.bytes_client_to_server), 4000);
        assert_eq!(sum(|e| e.bytes_server_to_client), 40);
        assert!(report.edges.iter().all(|e| e.server == "external:198.51.100.0/24"));
        assert_eq!(report.counts.one_sided, 1, "counted once in the two-sided counts too");
    }
}

/// Found by a fresh user ("Never the wrong owner"): a peer record contradicted by the claims
/// decides nothing. 1: `clone` reports the server side of a connection to 10.72.0.1:5432 as
/// `impostor` while `dbhost` heartbeats the whole address as `db`: the client's flow is a
/// `conflict`. 2: a client reuses its 4-tuple at 15.5 s, after 10.74.0.1 moved from `old` to
/// `new` at 15 s; `old`'s record of the earlier connection must not name the later one's server.
#[test]
fn regression_a_contradicted_peer_record_never_names_the_remote() {
    let window = 10 * S;
    let mut deliveries = Vec::new();
    for k in 0..6u64 {
        let (from, to) = (T0 + k * window, T0 + (k + 1) * window);
        let mut db = batch("dbhost", 1, k, from, to);
        db.heartbeats.push(Ownership { ip: ip("10.72.0.1"), workload: "db".into(), from_ns: from, to_ns: to, port: 0 });
        let mut clone = batch("clone", 1, k, from, to);
        let mut old = batch("oldhost", 1, k, from, to);
        let mut new = batch("newhost", 1, k, from, to);
        let mut cli = batch("cli", 1, k, from, to);
        let owner_from = |b: &mut ExporterBatch, f: u64, t: u64, who: &str| {
            if f < t {
                b.heartbeats.push(Ownership {
                    ip: ip("10.74.0.1"),
                    workload: who.into(),
                    from_ns: f,
                    to_ns: t,
                    port: 0,
                });
            }
        };
        owner_from(&mut old, from, to.min(T0 + 15 * S), "old");
        owner_from(&mut new, from.max(T0 + 15 * S), to, "new");
        if k == 1 {
            let start = T0 + 15 * S;
            clone.flows.push(flow(
                ("10.72.0.1", 5432),
                ("10.1.0.1", 40_001),
                Direction::Server,
                start,
                start + S,
                "impostor",
            ));
            cli.flows.push(flow(
                ("10.1.0.1", 40_001),
                ("10.72.0.1", 5432),
                Direction::Client,
                start,
                start + S,
                "client-x",
            ));
            let (a, b) = (T0 + 14 * S, T0 + 15 * S + S / 2);
            old.flows.push(flow(("10.74.0.1", 80), ("10.1.0.1", 40_002), Direction::Server, a, a + 2 * S / 5, "old"));
            let mut first =
                flow(("10.1.0.1", 40_002), ("10.74.0.1", 80), Direction::Client, a, a + 2 * S / 5, "client-x");
            first.connection_id = 1;
            let mut second = flow(("10.1.0.1", 40_002), ("10.74.0.1", 80), Direction::Client, b, b + S / 2, "client-x");
            second.connection_id = 2;
            cli.flows.extend([first, second]);
        }
        for b in [db, clone, old, new, cli] {
            deliveries.push(delivery(&b, to));
        }
    }
    let records = everywhere("peer-contradicted", &deliveries, &["dbhost", "clone", "oldhost", "newhost", "cli"], 2);
    let from_cli: Vec<_> = records.iter().filter(|r| r.exporter == "cli").collect();
    assert_eq!(from_cli.len(), 3);
    for r in &from_cli {
        assert!(r.remote_workload.is_none(), "{r:?}");
    }
    let by_port = |p: u16| from_cli.iter().filter(|r| r.remote_port == p).map(|r| r.reason.clone()).collect::<Vec<_>>();
    assert_eq!(by_port(5432), vec![Some("conflict".to_string())]);
    assert!(by_port(80).iter().all(|r| r.as_deref() == Some("near_boundary")), "{:?}", by_port(80));
}

/// Issue "Never the wrong owner", found by a fresh user: a client reuses its 4-tuple to
/// 10.75.0.1:443 within the guard band across an owner change. `old` (no exporter) served the
/// first connection, `new` (known only from its own server-side flow records, no heartbeats)
/// the second. `new`'s record could be either's, so it names the remote of neither: (a) the
/// second connection was reported in the same batch, (b) its batch was lost (so nothing shows
/// that the record is not the first connection's: the client's run does not reach it).
#[test]
fn regression_a_reused_4_tuple_never_borrows_the_next_connections_peer() {
    let window = 10 * S;
    for (case, first, lost) in
        [("same-batch", T0 + 14 * S + 6 * S / 10, None), ("lost-batch", T0 + 19 * S + 6 * S / 10, Some(2))]
    {
        let second = first + 6 * S / 10;
        let mut deliveries = Vec::new();
        for k in 0..6u64 {
            let (from, to) = (T0 + k * window, T0 + (k + 1) * window);
            let mut new = batch("newhost", 1, k, from, to);
            let mut cli = batch("cli", 1, k, from, to);
            // A heartbeat of the client's own address, so the client's batches are not empty.
            cli.heartbeats.push(Ownership {
                ip: ip("10.1.0.1"),
                workload: "client-x".into(),
                from_ns: from,
                to_ns: to,
                port: 0,
            });
            for (start, end, id) in [(first, first + 3 * S / 10, 1), (second, second + 4 * S / 10, 2)] {
                if (from..to).contains(&start) {
                    let mut f =
                        flow(("10.1.0.1", 40_003), ("10.75.0.1", 443), Direction::Client, start, end, "client-x");
                    f.connection_id = id;
                    cli.flows.push(f);
                }
            }
            let served = second + S / 20;
            if (from..to).contains(&served) {
                new.flows.push(flow(
                    ("10.75.0.1", 443),
                    ("10.1.0.1", 40_003),
                    Direction::Server,
                    served,
                    second + 4 * S / 10,
                    "new",
                ));
            }
            deliveries.push(delivery(&new, to));
            if lost != Some(k) {
                deliveries.push(delivery(&cli, to));
            }
        }
        let records = everywhere(case, &deliveries, &["newhost", "cli"], 2);
        let from_cli: Vec<_> = records.iter().filter(|r| r.exporter == "cli" && r.remote_port == 443).collect();
        let firsts: Vec<_> = from_cli.iter().filter(|r| r.start_ns == first).collect();
        assert_eq!(firsts.len(), 1, "{case}: {from_cli:?}");
        assert!(firsts[0].remote_workload.is_none(), "{case}: the first connection is not new's: {:?}", firsts[0]);
        if lost.is_none() {
            // Nor provably the second's: with clocks up to the guard band (2 s) apart, `new`'s
            // record could be either connection's, so neither is attributed from it.
            let seconds: Vec<_> = from_cli.iter().filter(|r| r.start_ns == second).collect();
            assert_eq!(seconds[0].reason.as_deref(), Some("no_owner"), "{case}: {:?}", seconds[0]);
        }
    }
}

/// Found by a fresh user: the client's address moves to another (unmonitored) host at 15 s,
/// which reuses the 4-tuple at 15.5 s to 10.76.0.1:80, whose owner changed from `old` (no
/// exporter) to `new` at about 15 s. `new`'s record of the second connection is not the first
/// one's peer: the client's exporter held its address only until 15 s, so it cannot show that
/// nobody else used the 4-tuple. (Before: the first connection was attributed to `new`.)
#[test]
fn regression_a_4_tuple_reused_by_the_next_holder_of_the_client_address_borrows_nothing() {
    let window = 10 * S;
    let mut deliveries = Vec::new();
    for k in 0..6u64 {
        let (from, to) = (T0 + k * window, T0 + (k + 1) * window);
        let mut cli = batch("cli", 1, k, from, to);
        let held_to = to.min(T0 + 15 * S);
        if from < held_to {
            cli.heartbeats.push(Ownership {
                ip: ip("10.1.0.9"),
                workload: "c-old".into(),
                from_ns: from,
                to_ns: held_to,
                port: 0,
            });
        }
        let mut new = batch("newsrv", 1, k, from, to);
        if k == 1 {
            let (first, second) = (T0 + 14 * S, T0 + 15 * S + S / 2);
            cli.flows.push(flow(
                ("10.1.0.9", 40_001),
                ("10.76.0.1", 80),
                Direction::Client,
                first,
                first + 2 * S / 5,
                "c-old",
            ));
            new.flows.push(flow(
                ("10.76.0.1", 80),
                ("10.1.0.9", 40_001),
                Direction::Server,
                second,
                second + 2 * S / 5,
                "new",
            ));
        }
        deliveries.push(delivery(&cli, to));
        deliveries.push(delivery(&new, to));
    }
    let records = everywhere("client-address-moved", &deliveries, &["cli", "newsrv"], 2);
    let from_cli: Vec<_> = records.iter().filter(|r| r.exporter == "cli").collect();
    assert_eq!(from_cli.len(), 1);
    assert_eq!(from_cli[0].remote_workload, None, "{:?}", from_cli[0]);
}

/// Found by a fresh user: another exporter run names the client's 4-tuple with the client's
/// start and keeps it open to 30 s (another exporter id, or a clone sharing the id with another
/// incarnation). Read as the client's own record, it stretched the client's 0.5 s connection
/// over `newsrv`'s record of a later connection of the 4-tuple (1.9 s later, within the guard
/// band), which then passed the lifetime proof: the client's flow got `new`, whose address
/// `old` (no exporter) held until 12 s. A flow's own records are its connection's (its flow
/// id, from its exporter id and connection id).
#[test]
fn regression_another_exporters_record_of_the_same_4_tuple_never_stretches_a_flow() {
    for (case, other, incarnation) in [("other-id", "cli2", 1), ("clone", "cli", 9)] {
        let window = 10 * S;
        let mut deliveries = Vec::new();
        let (first, later) = (T0 + 11 * S, T0 + 12 * S + 9 * S / 10);
        for k in 0..5u64 {
            let (from, to) = (T0 + k * window, T0 + (k + 1) * window);
            let mut cli = batch("cli", 1, k, from, to);
            let mut rival = batch(other, incarnation, k, from, to);
            let mut new = batch("newsrv", 1, k, from, to);
            let tuple = (("10.1.0.9", 40_001), ("10.76.0.1", 80));
            if k == 1 {
                let mut f = flow(tuple.0, tuple.1, Direction::Client, first, first + S / 2, "c-old");
                f.connection_id = 5;
                cli.flows.push(f);
            }
            if (1..=2).contains(&k) {
                let mut f = flow(tuple.0, tuple.1, Direction::Client, first, (to - 1).min(T0 + 30 * S), "c-old");
                f.open = k == 1;
                // Its own connection id (a clone runs on another boot: another id).
                f.connection_id = 6;
                rival.flows.push(f);
            }
            if k >= 1 {
                let mut f = flow(tuple.1, tuple.0, Direction::Server, later, to - 1, "new");
                f.open = k < 4;
                new.flows.push(f);
            }
            deliveries.extend([delivery(&cli, to), delivery(&rival, to), delivery(&new, to)]);
        }
        let records = everywhere(case, &deliveries, &["cli", other, "newsrv"], 2);
        let client: Vec<_> = records
            .iter()
            .filter(|r| r.exporter == "cli" && r.start_ns == first && r.end_ns == first + S / 2)
            .collect();
        assert_eq!(client.len(), 1, "{case}: {records:?}");
        assert_eq!(client[0].remote_workload, None, "{case}: {:?}", client[0]);
    }
}
