use flowmap_schema::{encode_batch, Assignment, ExporterBatch, Flow, Ownership, SCHEMA_VERSION};

use super::*;

const S: u64 = 1_000_000_000;

fn batch() -> ExporterBatch {
    ExporterBatch {
        schema_version: SCHEMA_VERSION,
        exporter_id: "host".into(),
        seq: 3,
        window_from_ns: 100 * S,
        window_to_ns: 110 * S,
        ..Default::default()
    }
}

fn flow(local: &str, start: u64, end: u64) -> Flow {
    Flow {
        local_ip: vec![10, 0, 0, 1],
        remote_ip: vec![10, 0, 0, 2],
        local_port: 1,
        remote_port: 2,
        start_ns: start,
        end_ns: end,
        local_workload: local.into(),
        ..Default::default()
    }
}

fn decode(b: &ExporterBatch) -> (Option<DecodedBatch>, IngestStats) {
    let mut stats = IngestStats::default();
    let out =
        decode_batch("host", &encode_batch(b), 100 * S, &JobConfig::default(), &mut Interner::default(), &mut stats)
            .ok();
    (out, stats)
}

#[test]
fn heartbeats_are_clipped_to_the_window() {
    let mut b = batch();
    b.heartbeats.push(Ownership {
        ip: vec![10, 0, 0, 1],
        workload: "w".into(),
        from_ns: 50 * S,
        to_ns: 200 * S,
        port: 0,
    });
    let (out, _) = decode(&b);
    let claims = out.unwrap().evidence.claims;
    assert_eq!(claims.len(), 1);
    assert_eq!((claims[0].1.from, claims[0].1.to), (100 * S, 110 * S));
}

#[test]
fn flow_claims_merge_and_yield_to_heartbeats() {
    let mut b = batch();
    // Two overlapping flows of "a" merge into one claim; a disjoint one stays separate.
    b.flows = vec![flow("a", 101 * S, 103 * S), flow("a", 102 * S, 104 * S), flow("a", 106 * S, 107 * S)];
    let (out, _) = decode(&b);
    let mut ranges: Vec<_> = out.unwrap().evidence.claims.iter().map(|(_, c)| (c.kind, c.from / S, c.to / S)).collect();
    ranges.sort();
    assert_eq!(ranges, vec![(EvidenceKind::Flow, 101, 104), (EvidenceKind::Flow, 106, 107)]);
    // A heartbeat of the same workload covering them makes them redundant.
    b.heartbeats.push(Ownership {
        ip: vec![10, 0, 0, 1],
        workload: "a".into(),
        from_ns: 100 * S,
        to_ns: 110 * S,
        port: 0,
    });
    let (out, _) = decode(&b);
    let claims = out.unwrap().evidence.claims;
    assert_eq!(claims.len(), 1);
    assert_eq!(claims[0].1.kind, EvidenceKind::Heartbeat);
    // A flow with no local workload gives no claim but is still reported.
    b.flows = vec![flow("", 101 * S, 103 * S)];
    b.heartbeats.clear();
    let (out, _) = decode(&b);
    let out = out.unwrap();
    assert!(out.evidence.claims.is_empty());
    assert_eq!(out.flows.len(), 1);
    assert_eq!(out.flows[0].local_workload, None);
}

#[test]
fn bad_records_are_counted_not_fatal() {
    let mut b = batch();
    let mut bad_ip = flow("a", 101 * S, 102 * S);
    bad_ip.remote_ip = vec![1, 2, 3];
    let mut bad_port = flow("a", 101 * S, 102 * S);
    bad_port.local_port = 70_000;
    let late_end = flow("a", 101 * S, 111 * S); // ends after the window: breaks the promise
    b.flows = vec![bad_ip, bad_port, late_end, flow("a", 101 * S, 102 * S)];
    b.heartbeats.push(Ownership {
        ip: vec![10, 0, 0, 1],
        workload: "w".into(),
        from_ns: 105 * S,
        to_ns: 104 * S,
        port: 0,
    });
    b.assignments.push(Assignment { ip: vec![10, 0, 0, 9], workload: "lb".into(), at_ns: 120 * S });
    b.assignments.push(Assignment { ip: vec![], workload: "lb".into(), at_ns: 101 * S });
    let (out, stats) = decode(&b);
    let out = out.unwrap();
    assert_eq!(out.flows.len(), 1);
    assert_eq!(out.rejected_address, 3, "bad IP, bad port, empty assignment address");
    assert_eq!(out.rejected_time, 3, "late end, reversed heartbeat, assignment outside the window");
    assert_eq!(stats.rejected(), 0, "record rejections are counted by the caller, after dedup");
}

#[test]
fn whole_batch_rejections() {
    let mut b = batch();
    b.window_to_ns = b.window_from_ns;
    assert_eq!(decode(&b).1.rejected_window, 1);
    let mut b = batch();
    b.window_to_ns = b.window_from_ns + 61 * S;
    assert_eq!(decode(&b).1.rejected_window, 1, "longer than max_window");
    let mut b = batch();
    b.exporter_id.clear();
    assert_eq!(decode(&b).1.rejected_window, 1, "no exporter id");
    let mut b = batch();
    b.window_from_ns = 1_000 * S;
    b.window_to_ns = 1_001 * S;
    assert_eq!(decode(&b).1.rejected_future, 1);
    let mut stats = IngestStats::default();
    let config = JobConfig::default();
    assert!(decode_batch("host", b"\xff", 0, &config, &mut Interner::default(), &mut stats).is_err());
    assert_eq!(stats.rejected_malformed, 1);
}

#[test]
fn addresses_of_both_families() {
    assert_eq!(ip(&[10, 1, 2, 3]), Some(Ip::v4([10, 1, 2, 3])));
    let v6: std::net::IpAddr = "fd00::7".parse().unwrap();
    assert_eq!(ip(&flowmap_schema::ip_to_bytes(v6)), Some(Ip::from_addr(v6)));
    assert_eq!(ip(&[1; 5]), None);
    assert_eq!(Ip::v4([10, 1, 2, 3]).to_string(), "10.1.2.3");
}
