//! A deterministic fleet of edge deltas (the job's `Edge` messages), written to a lake with the
//! lake crate's own writer, and an independent reference computation of the graph over them.
//!
//! The fleet: `svc-00` .. `svc-05`, each with pods (`svc-03/pod-001`), a host-network workload
//! (`hostnet-1/host-0001`), two external prefixes and two unattributed reasons; 30 one-minute
//! buckets from 11:45 to 12:15 UTC (two hour partitions), several deltas per edge and bucket, a
//! mix of verified and one-sided connections, RTT sketches on most rows, quantile columns only on
//! some, and one row whose sketch bytes are not a sketch.

use std::collections::BTreeMap;
use std::path::Path;

use flowmap_schema::edges::{Edge, Event, EventKind};
use flowmap_schema::sketch::RttSketch;

/// 2026-11-29T11:45:00Z, ns.
pub const START_NS: u64 = 1_795_952_700_000_000_000;
/// One bucket, ns.
pub const MINUTE_NS: u64 = 60_000_000_000;
/// Buckets in the fixture.
pub const BUCKETS: u64 = 30;

/// The fixture's job rows, its events, and the raw RTT samples behind each row's sketch.
pub struct Fixture {
    /// The job's edge deltas.
    pub edges: Vec<Edge>,
    /// The job's events.
    pub events: Vec<Event>,
    /// Per row index: the RTT samples its sketch was built from (empty without a sketch).
    pub samples: Vec<Vec<f64>>,
}

/// A small deterministic generator (SplitMix64).
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

fn workloads() -> Vec<String> {
    let mut out = Vec::new();
    for s in 0..6 {
        for p in 0..(2 + s % 3) {
            out.push(format!("svc-{s:02}/pod-{p:03}"));
        }
    }
    out.push("hostnet-1/host-0001".into());
    out
}

/// The fixture (the same every time).
pub fn fixture() -> Fixture {
    let mut rng = Rng::new(7);
    let names = workloads();
    let specials =
        ["external:203.0.113.0/24", "external:198.51.100.0/24", "unattributed:near_boundary", "unattributed:no_owner"];
    // A fixed set of edge keys: (client, server, port).
    let mut keys: Vec<(String, String, u32)> = Vec::new();
    for (i, client) in names.iter().enumerate() {
        for k in 0..3 {
            let server = &names[(i * 7 + k * 5 + 3) % names.len()];
            if server != client {
                keys.push((client.clone(), server.clone(), [5432, 443, 8080][k % 3]));
            }
        }
        if i % 3 == 0 {
            keys.push((client.clone(), specials[i % 2].to_owned(), 443));
        }
        if i % 4 == 1 {
            keys.push((client.clone(), specials[2 + i % 2].to_owned(), 5432));
        }
    }
    keys.push((specials[3].to_owned(), names[1].clone(), 8080));
    let mut edges = Vec::new();
    let mut samples = Vec::new();
    for b in 0..BUCKETS {
        let bucket = START_NS + b * MINUTE_NS;
        for (k, (client, server, port)) in keys.iter().enumerate() {
            if rng.below(5) == 0 {
                continue; // not every edge in every bucket
            }
            let deltas = 1 + rng.below(3);
            for d in 0..deltas {
                let connections = 1 + rng.below(20);
                let verified = match k % 3 {
                    0 => connections,
                    1 => 0,
                    _ => rng.below(connections + 1),
                };
                let disagreements = if k % 11 == 5 { rng.below(2).min(connections - verified) } else { 0 };
                let one_sided = connections - verified - disagreements;
                let n_rtt = if k % 7 == 6 { 0 } else { 1 + rng.below(8) };
                let rtts: Vec<f64> = (0..n_rtt).map(|_| 50.0 + rng.below(40_000) as f64 / (1 + k % 5) as f64).collect();
                let mut sketch = RttSketch::default();
                rtts.iter().for_each(|v| sketch.add(*v, 1));
                let exact = |q: f64| quantile(&rtts, q).unwrap_or(0.0);
                let quantiles_only = k % 13 == 4; // rows with quantile columns and no sketch
                edges.push(Edge {
                    schema_version: 1,
                    bucket_start_ns: bucket,
                    bucket_s: 60,
                    client: client.clone(),
                    server: server.clone(),
                    server_port: *port,
                    protocol: "tcp".into(),
                    emitted_at_ns: bucket + MINUTE_NS + d * 15_000_000_000,
                    connections,
                    bytes_client_to_server: connections * (200 + rng.below(50_000)) * (1 + (k % 4) as u64 * 10),
                    bytes_server_to_client: connections * (100 + rng.below(200_000)),
                    segments: connections * (4 + rng.below(100)),
                    retransmits: if k % 6 == 2 { rng.below(9) } else { 0 },
                    failed_connects: if k % 9 == 3 { rng.below(3) } else { 0 },
                    verified,
                    disagreements,
                    one_sided,
                    rtt_p50_us: exact(0.5),
                    rtt_p90_us: exact(0.9),
                    rtt_p99_us: exact(0.99),
                    rtt_sketch: if quantiles_only { Vec::new() } else { sketch.to_bytes() },
                });
                samples.push(if quantiles_only { Vec::new() } else { rtts });
            }
        }
    }
    // One row whose sketch is not a sketch (a truncated bucket): kept, counted.
    if let Some((i, e)) = edges.iter_mut().enumerate().find(|(_, e)| !e.rtt_sketch.is_empty()) {
        e.rtt_sketch = vec![0x01];
        samples[i] = Vec::new();
    }
    let kinds = [EventKind::NewDependency, EventKind::PolicyViolation, EventKind::Disagreement];
    let events = (0..12u64)
        .map(|i| {
            let (client, server, port) = &keys[(i as usize * 5) % keys.len()];
            Event {
                schema_version: 1,
                kind: kinds[i as usize % 3] as i32,
                at_ns: START_NS + i * 2 * MINUTE_NS + 5_000_000_000,
                client: client.clone(),
                server: server.clone(),
                server_port: *port,
                detail: format!("fixture event {i}"),
                ..Event::default()
            }
        })
        .collect();
    Fixture { edges, events, samples }
}

/// The `q` quantile of `values` as DDSketch defines rank (the value of rank floor(q (n - 1))).
pub fn quantile(values: &[f64], q: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    Some(v[(q * (v.len() - 1) as f64).floor() as usize])
}

/// The job's row as the lake crate's row.
pub fn lake_row(e: &Edge) -> flowmap_lake::EdgeRow {
    let q = |v: f64| (v > 0.0).then_some(v);
    flowmap_lake::EdgeRow {
        bucket_start_ns: e.bucket_start_ns,
        bucket_s: e.bucket_s,
        client: e.client.clone(),
        server: e.server.clone(),
        server_port: u16::try_from(e.server_port).expect("fixture ports fit"),
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
    }
}

/// Writes `edges` to a lake at `dir` with the lake crate's writer, the way the job does: rows
/// pushed at their dataflow time (`emitted_at`), the frontier advanced, then finished.
pub fn write_lake(dir: &Path, edges: &[Edge]) -> anyhow::Result<()> {
    // The lake runs its own tokio runtime: write from a thread of our own, so that async tests
    // and examples can call this too.
    std::thread::scope(|scope| scope.spawn(|| write_lake_now(dir, edges)).join())
        .map_err(|_| anyhow::anyhow!("the lake writer's thread panicked"))?
}

fn write_lake_now(dir: &Path, edges: &[Edge]) -> anyhow::Result<()> {
    let settings = flowmap_lake::LakeConfig::at(&dir.to_string_lossy()).validate()?;
    let lake = flowmap_lake::Lake::open(&settings)?;
    let mut writer = lake.writer::<flowmap_lake::EdgeRow>(0, 1)?;
    let mut by_time: BTreeMap<u64, Vec<flowmap_lake::EdgeRow>> = BTreeMap::new();
    for e in edges {
        by_time.entry(e.emitted_at_ns).or_default().push(lake_row(e));
    }
    for (time, rows) in by_time {
        writer.push(time, rows)?;
        writer.advance(Some(time))?;
    }
    writer.advance(None)?;
    let stats = writer.finish()?;
    anyhow::ensure!(
        stats.rows_written == edges.len() as u64,
        "lake wrote {} of {} rows",
        stats.rows_written,
        edges.len()
    );
    Ok(())
}

/// The node a raw name is drawn in at group `level` (the grouping rule, written again here from
/// its description, without the library's code): the first `level` `/`-separated segments
/// (`fleet` at 0); external and unattributed ends keep their names from `split` on and are
/// `external:*` / `unattributed:*` below it.
pub fn node_of(name: &str, level: usize, split: usize) -> String {
    for kind in ["external:", "unattributed:"] {
        if name.starts_with(kind) {
            return if level >= split { name.to_owned() } else { format!("{kind}*") };
        }
    }
    if level == 0 {
        return "fleet".into();
    }
    name.split('/').take(level).collect::<Vec<_>>().join("/")
}

/// An edge of the reference graph.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RefEdge {
    pub connections: u64,
    pub bytes: u64,
    pub verified: u64,
    pub one_sided: u64,
    pub disagreements: u64,
    pub retransmits: u64,
    pub failed_connects: u64,
    /// The RTT samples of its rows, when every row with an RTT had a sketch.
    pub samples: Option<Vec<f64>>,
}

/// The reference graph for `[from, to)` at `level`, with an optional substring that a client or
/// server name (or its node) must contain, and a port: (source, target) -> sums.
pub fn reference(
    fixture: &Fixture,
    from: u64,
    to: u64,
    level: usize,
    search: Option<&str>,
    port: Option<u32>,
) -> BTreeMap<(String, String), RefEdge> {
    let mut out: BTreeMap<(String, String), RefEdge> = BTreeMap::new();
    let mut broken: std::collections::BTreeSet<(String, String)> = Default::default();
    for (i, e) in fixture.edges.iter().enumerate() {
        if e.bucket_start_ns < from || e.bucket_start_ns >= to || port.is_some_and(|p| p != e.server_port) {
            continue;
        }
        let (c, s) = (node_of(&e.client, level, 2), node_of(&e.server, level, 2));
        if let Some(word) = search {
            let hit = |raw: &str, node: &str| raw.to_lowercase().contains(word) || node.to_lowercase().contains(word);
            if !hit(&e.client, &c) && !hit(&e.server, &s) {
                continue;
            }
        }
        let key = (c, s);
        let r = out.entry(key.clone()).or_default();
        r.connections += e.connections;
        r.bytes += e.bytes_client_to_server + e.bytes_server_to_client;
        r.verified += e.verified;
        r.one_sided += e.one_sided;
        r.disagreements += e.disagreements;
        r.retransmits += e.retransmits;
        r.failed_connects += e.failed_connects;
        let has_rtt = e.rtt_p50_us > 0.0 || !e.rtt_sketch.is_empty();
        if has_rtt && fixture.samples[i].is_empty() {
            broken.insert(key.clone());
        }
        r.samples.get_or_insert_with(Vec::new).extend(&fixture.samples[i]);
    }
    for key in broken {
        if let Some(r) = out.get_mut(&key) {
            r.samples = None;
        }
    }
    out
}
