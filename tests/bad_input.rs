//! Bad input never panics, never stalls the frontier, and is always counted.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use flowmap::config::JobConfig;
use flowmap_schema::{encode_batch, ExporterBatch, Flow, Ownership, SCHEMA_VERSION};
use flowmap_sim::world::{SEC, T0};
use flowmap_sim::Delivery;

fn batch(exporter: &str, seq: u64, from: u64, flows: Vec<Flow>, heartbeats: Vec<Ownership>) -> ExporterBatch {
    ExporterBatch {
        schema_version: SCHEMA_VERSION,
        exporter_id: exporter.into(),
        seq,
        window_from_ns: from,
        window_to_ns: from + 10 * SEC,
        flows,
        heartbeats,
        assignments: vec![],
        incarnation: 0,
    }
}

fn flow(local: [u8; 4], remote: Vec<u8>, start: u64) -> Flow {
    Flow {
        local_ip: local.to_vec(),
        local_port: 40_000,
        remote_ip: remote,
        remote_port: 443,
        direction: 1,
        start_ns: start,
        end_ns: start + SEC,
        local_workload: "client".into(),
        ..Default::default()
    }
}

fn hb(ip: [u8; 4], workload: &str, from: u64, to: u64) -> Ownership {
    Ownership { ip: ip.to_vec(), workload: workload.into(), from_ns: from, to_ns: to, port: 0 }
}

fn deliver(key: &str, arrival: u64, payload: Vec<u8>) -> Delivery {
    Delivery { key: key.into(), arrival, payload }
}

/// Two exporters: "a" owns 10.0.0.2 throughout and reports a flow from "b"; "b" reports flows.
/// Bad deliveries are mixed in; the good flows must still be attributed.
#[test]
fn bad_batches_and_records_are_counted_and_the_rest_flows() {
    let server = [10, 0, 0, 2];
    let mut deliveries = Vec::new();
    for k in 0..6u64 {
        let from = T0 + k * 10 * SEC;
        let a = batch("a", k, from, vec![], vec![hb(server, "server", from, from + 10 * SEC)]);
        let mut flows = vec![flow([10, 0, 0, 1], server.to_vec(), from + 4 * SEC)];
        flows.push(flow([10, 0, 0, 1], vec![10, 0, 0], from + 4 * SEC)); // 3-byte address
        flows.push(flow([10, 0, 0, 1], vec![1; 17], from + 4 * SEC)); // 17-byte address
        let mut reversed = flow([10, 0, 0, 1], server.to_vec(), from + 5 * SEC);
        reversed.end_ns = reversed.start_ns - 1; // ends before it starts
        flows.push(reversed);
        let b = batch("b", k, from, flows, vec![hb([10, 0, 0, 1], "client", from, from + 10 * SEC)]);
        let arrival = from + 11 * SEC;
        deliveries.push(deliver("a", arrival, encode_batch(&a)));
        let bytes = encode_batch(&b);
        deliveries.push(deliver("b", arrival, bytes[..bytes.len() - 1].to_vec())); // truncated copy
        deliveries.push(deliver("b", arrival, bytes));
    }
    // Garbage, an unknown version, and a batch from the future, from a known exporter.
    deliveries.push(deliver("a", T0 + 70 * SEC, b"\x0a\xff\xff\xff\xff\x0f".to_vec()));
    let mut v9 = batch("a", 6, T0 + 60 * SEC, vec![], vec![]);
    v9.schema_version = 9;
    deliveries.push(deliver("a", T0 + 70 * SEC, encode_batch(&v9)));
    let future = batch("a", 7, T0 + 10_000 * SEC, vec![], vec![]);
    deliveries.push(deliver("a", T0 + 70 * SEC, encode_batch(&future)));
    // An impossible window.
    let mut reversed_window = batch("b", 8, T0 + 60 * SEC, vec![], vec![]);
    reversed_window.window_to_ns = reversed_window.window_from_ns - 1;
    deliveries.push(deliver("b", T0 + 70 * SEC, encode_batch(&reversed_window)));

    for workers in [1, 2] {
        let report = attribute(deliveries.clone(), vec!["a".into(), "b".into()], workers, JobConfig::default());
        let ingest = &report.ingest;
        assert_eq!(ingest.rejected_malformed, 7, "6 truncated copies and the garbage: {ingest:?}");
        assert_eq!(ingest.rejected_version, 1);
        assert_eq!(ingest.rejected_future, 1);
        assert_eq!(ingest.rejected_window, 1);
        assert_eq!(ingest.rejected_address, 12, "two bad addresses in each of 6 batches");
        assert_eq!(ingest.rejected_time, 6);
        assert_eq!(report.output, 6, "the six good flows come out");
        let attributed: Vec<_> = records(&report).into_iter().filter_map(|r| r.remote_workload).collect();
        // The last window's flow has no heartbeat after its guard band, so it may wait for more
        // evidence: at the end of input the frontier closes and it is decided with what exists.
        assert!(attributed.len() >= 5 && attributed.iter().all(|w| w == "server"), "{attributed:?}");
    }
}

/// A roster exporter that never reports holds the frontier back, but the job still finishes
/// and decides every flow when the input ends; nothing stalls forever.
#[test]
fn silent_exporter_does_not_stall_the_end_of_input() {
    let from = T0;
    let b = batch("b", 0, from, vec![flow([10, 0, 0, 1], vec![10, 0, 0, 2], from + SEC)], vec![]);
    let deliveries = vec![deliver("b", from + 11 * SEC, encode_batch(&b))];
    let report = attribute(deliveries, vec!["b".into(), "silent".into()], 2, JobConfig::default());
    assert_eq!(report.output, 1);
    let r = &records(&report)[0];
    assert_eq!(r.reason.as_deref(), Some("no_owner"));
}

/// Flows to addresses outside the fleet are decided at once, and marked external.
#[test]
fn external_addresses_are_not_looked_up() {
    let from = T0;
    let b = batch("b", 0, from, vec![flow([10, 0, 0, 1], vec![8, 8, 8, 8], from + SEC)], vec![]);
    let report = attribute(vec![deliver("b", from, encode_batch(&b))], vec!["b".into()], 1, JobConfig::default());
    assert_eq!(records(&report)[0].reason.as_deref(), Some("external"));
}
