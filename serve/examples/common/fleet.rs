//! A synthetic fleet's edge deltas, as the job emits them (`flowmap_schema::edges::Edge`), for
//! the examples: `workloads` workloads named `svc-XXX/pod-YYYY` (20 pods a service), `edges`
//! distinct (client, server, port) keys, some to external prefixes and unattributed ends, each
//! key in every one-minute bucket with a random share verified, an RTT sketch per row, and a
//! handful of change events. Deterministic for a seed.

#![allow(dead_code)] // each example uses part of it

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use flowmap_schema::edges::{Edge, Event, EventKind};
use flowmap_schema::sketch::RttSketch;

/// SplitMix64.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// The fleet's rows and events.
pub struct Fleet {
    pub edges: Vec<Edge>,
    pub events: Vec<Event>,
}

/// `buckets` one-minute buckets from `start_ns`.
pub fn fleet(workloads: usize, keys: usize, buckets: u64, start_ns: u64, seed: u64) -> Fleet {
    let mut rng = Rng::new(seed);
    let names: Vec<String> = (0..workloads).map(|i| format!("svc-{:03}/pod-{:04}", i / 20, i)).collect();
    let specials = [
        "external:203.0.113.0/24",
        "external:198.51.100.0/24",
        "external:192.0.2.0/24",
        "unattributed:near_boundary",
        "unattributed:no_owner",
        "unattributed:shared_ip",
    ];
    let ports = [443u32, 5432, 8080, 6379, 9092, 3306];
    let mut seen = HashSet::new();
    let mut list: Vec<(String, String, u32, u64)> = Vec::with_capacity(keys);
    while list.len() < keys {
        let c = rng.below(workloads as u64) as usize;
        // Calls stay mostly within a few "neighbouring" services, like a real fleet's.
        let server = if rng.below(50) == 0 {
            specials[rng.below(specials.len() as u64) as usize].to_owned()
        } else {
            let svc = (c / 20 + rng.below(4) as usize * 7) % workloads.div_ceil(20);
            let s = (svc * 20 + rng.below(20) as usize).min(workloads - 1);
            if s == c {
                continue;
            }
            names[s].clone()
        };
        let port = ports[rng.below(ports.len() as u64) as usize];
        if seen.insert((c, server.clone(), port)) {
            let weight = 1 + rng.below(1000) * rng.below(1000) / 100;
            list.push((names[c].clone(), server, port, weight));
        }
    }
    let mut edges = Vec::with_capacity(keys * buckets as usize);
    for b in 0..buckets {
        let bucket = start_ns + b * 60_000_000_000;
        for (k, (client, server, port, weight)) in list.iter().enumerate() {
            let connections = 1 + rng.below(*weight);
            let verified = match k % 4 {
                0 | 1 => connections,
                2 => rng.below(connections + 1),
                _ => 0,
            };
            let mut sketch = RttSketch::default();
            for _ in 0..(1 + rng.below(6)) {
                sketch.add(80.0 + rng.below(30_000) as f64, 1);
            }
            edges.push(Edge {
                schema_version: 1,
                bucket_start_ns: bucket,
                bucket_s: 60,
                client: client.clone(),
                server: server.clone(),
                server_port: *port,
                protocol: "tcp".into(),
                emitted_at_ns: bucket + 60_000_000_000,
                connections,
                bytes_client_to_server: connections * (500 + rng.below(40_000)),
                bytes_server_to_client: connections * (500 + rng.below(400_000)),
                segments: connections * (6 + rng.below(200)),
                retransmits: if k % 17 == 0 { rng.below(20) } else { 0 },
                failed_connects: if k % 23 == 0 { rng.below(4) } else { 0 },
                verified,
                disagreements: 0,
                one_sided: connections - verified,
                rtt_p50_us: sketch.quantile(0.5).unwrap_or(0.0),
                rtt_p90_us: sketch.quantile(0.9).unwrap_or(0.0),
                rtt_p99_us: sketch.quantile(0.99).unwrap_or(0.0),
                rtt_sketch: sketch.to_bytes(),
            });
        }
    }
    let kinds = [EventKind::NewDependency, EventKind::PolicyViolation, EventKind::Disagreement];
    let events = (0..30u64)
        .map(|i| {
            let (client, server, port, _) = &list[rng.below(list.len() as u64) as usize];
            Event {
                schema_version: 1,
                kind: kinds[(i % 3) as usize] as i32,
                at_ns: start_ns + rng.below(buckets * 60_000_000_000),
                client: client.clone(),
                server: server.clone(),
                server_port: *port,
                detail: match i % 3 {
                    0 => "first seen in the lookback".into(),
                    1 => format!("policy: {client} may not call {server}:{port}"),
                    _ => "the server's own record names another workload".into(),
                },
                ..Event::default()
            }
        })
        .collect();
    Fleet { edges, events }
}

/// Writes `edges` to a lake at `dir` with the lake crate's writer (rows pushed at their dataflow
/// time, then finished).
pub fn write_lake(dir: &Path, edges: &[Edge]) -> anyhow::Result<u64> {
    // The lake runs its own tokio runtime: write from a thread of our own, so that async tests
    // and examples can call this too.
    std::thread::scope(|scope| scope.spawn(|| write_lake_now(dir, edges)).join())
        .map_err(|_| anyhow::anyhow!("the lake writer's thread panicked"))?
}

fn write_lake_now(dir: &Path, edges: &[Edge]) -> anyhow::Result<u64> {
    let settings = flowmap_lake::LakeConfig::at(&dir.to_string_lossy()).validate()?;
    let lake = flowmap_lake::Lake::open(&settings)?;
    let mut writer = lake.writer::<flowmap_lake::EdgeRow>(0, 1)?;
    let mut by_time: BTreeMap<u64, Vec<flowmap_lake::EdgeRow>> = BTreeMap::new();
    for e in edges {
        let q = |v: f64| (v > 0.0).then_some(v);
        by_time.entry(e.emitted_at_ns).or_default().push(flowmap_lake::EdgeRow {
            bucket_start_ns: e.bucket_start_ns,
            bucket_s: e.bucket_s,
            client: e.client.clone(),
            server: e.server.clone(),
            server_port: u16::try_from(e.server_port)?,
            protocol: e.protocol.clone(),
            emitted_at_ns: e.emitted_at_ns,
            connections: e.connections,
            bytes_client_to_server: e.bytes_client_to_server,
            bytes_server_to_client: e.bytes_server_to_client,
            segments: e.segments,
            retransmits: e.retransmits,
            failed_connects: e.failed_connects,
            verified: e.verified,
            disagreements: e.disagreements,
            one_sided: e.one_sided,
            rtt_p50_us: q(e.rtt_p50_us),
            rtt_p90_us: q(e.rtt_p90_us),
            rtt_p99_us: q(e.rtt_p99_us),
            rtt_sketch: (!e.rtt_sketch.is_empty()).then(|| e.rtt_sketch.clone()),
        });
    }
    for (time, rows) in by_time {
        writer.push(time, rows)?;
        writer.advance(Some(time))?;
    }
    let stats = writer.finish()?;
    Ok(stats.rows_written)
}
