//! The core-lookup data set shared with the peer benchmark: N IPs, each passed between a
//! series of workloads (ownership ranges with short gaps), and M flows whose remote IP and
//! start time must be looked up against those ranges.
//!
//! The same data is handed to flowmap as a stream of exporter batches (each IP's exporter
//! reports its ranges as per-window heartbeats; flows are reported in the window they end) and
//! to the peers as two plain tables (`ranges`, `flows`), so both answer the same question.

use flowmap_schema::{self as wire, Direction, ExporterBatch, Flow, Ownership, SCHEMA_VERSION};

use crate::publish::Delivery;
use crate::rng::Rng;
use crate::world::{MS, SEC, T0};

/// Size of the data set.
#[derive(Clone, Copy, Debug)]
pub struct LookupSpec {
    /// Distinct IPs (IPv4, 10.64.0.0/10).
    pub ips: usize,
    /// Ownership ranges per IP.
    pub ranges_per_ip: usize,
    /// Flows.
    pub flows: usize,
    /// Exporters the IPs are spread over.
    pub exporters: usize,
    /// Batch window, ms.
    pub window_ms: u64,
    /// Seed.
    pub seed: u64,
}

/// One ownership range, as the peers see it.
#[derive(Clone, Copy, Debug)]
pub struct Range {
    /// IPv4 address as an integer.
    pub ip: u32,
    /// Start, ns.
    pub from: u64,
    /// End (exclusive), ns.
    pub to: u64,
    /// Workload id (name `w<id>`).
    pub workload: u32,
}

/// The data set in both forms.
pub struct LookupData {
    /// Batches for flowmap, in arrival order.
    pub deliveries: Vec<Delivery>,
    /// Exporter ids.
    pub roster: Vec<String>,
    /// Ranges (for the peers).
    pub ranges: Vec<Range>,
    /// Flows: (remote IP as an integer, start ns) (for the peers).
    pub flows: Vec<(u32, u64)>,
    /// How many flows start inside some range (the expected number of attributions with a
    /// zero guard band).
    pub expected_inside: u64,
}

fn ip_of(i: usize) -> u32 {
    (10u32 << 24) | (64 << 16) | i as u32
}

/// Generates the data set.
pub fn generate(spec: &LookupSpec) -> LookupData {
    let mut rng = Rng::new(spec.seed);
    let window = spec.window_ms.max(1) * MS;
    // Each IP: ranges of 200-300 s with 1-5 s gaps, from T0.
    let mut ranges: Vec<Range> = Vec::with_capacity(spec.ips * spec.ranges_per_ip);
    let mut horizon = T0;
    for i in 0..spec.ips {
        let mut t = T0 + rng.range(0, 5 * SEC);
        for k in 0..spec.ranges_per_ip {
            let len = rng.range(200 * SEC, 300 * SEC);
            ranges.push(Range { ip: ip_of(i), from: t, to: t + len, workload: (i * spec.ranges_per_ip + k) as u32 });
            t += len + rng.range(SEC, 5 * SEC);
        }
        horizon = horizon.max(t);
    }
    let span = spec.ranges_per_ip as u64 * 200 * SEC;
    let windows = ((horizon - T0) / window + 2) as usize;
    let exporters = spec.exporters.max(1);

    // Flows, bucketed by (reporting exporter, window of their end).
    let mut flows: Vec<(u32, u64)> = Vec::with_capacity(spec.flows);
    let mut buckets: Vec<Vec<Flow>> = (0..exporters * windows).map(|_| Vec::new()).collect();
    let mut expected_inside = 0;
    for n in 0..spec.flows {
        let remote = rng.index(spec.ips);
        let start = T0 + rng.range(0, span);
        let end = start + rng.range(MS, 500 * MS);
        let per_ip = &ranges[remote * spec.ranges_per_ip..(remote + 1) * spec.ranges_per_ip];
        if per_ip.iter().any(|r| r.from <= start && start < r.to) {
            expected_inside += 1;
        }
        flows.push((ip_of(remote), start));
        let client = rng.index(spec.ips);
        let exporter = client % exporters;
        let w = ((end - T0) / window) as usize;
        buckets[exporter * windows + w].push(Flow {
            local_ip: ip_of(client).to_be_bytes().to_vec(),
            local_port: 32_768 + (n % 28_000) as u32,
            remote_ip: ip_of(remote).to_be_bytes().to_vec(),
            remote_port: 443,
            direction: Direction::Client as i32,
            start_ns: start,
            end_ns: end,
            bytes_sent: 1_000,
            bytes_received: 10_000,
            ..Default::default()
        });
    }

    let mut deliveries = Vec::with_capacity(exporters * windows);
    let roster: Vec<String> = (0..exporters).map(|e| format!("exporter-{e:05}")).collect();
    for w in 0..windows {
        let from = T0 + w as u64 * window;
        let to = from + window;
        for (e, id) in roster.iter().enumerate() {
            let mut heartbeats = Vec::new();
            for i in (e..spec.ips).step_by(exporters) {
                for r in &ranges[i * spec.ranges_per_ip..(i + 1) * spec.ranges_per_ip] {
                    let (lo, hi) = (r.from.max(from), r.to.min(to));
                    if lo < hi {
                        heartbeats.push(Ownership {
                            ip: r.ip.to_be_bytes().to_vec(),
                            workload: format!("w{}", r.workload),
                            from_ns: lo,
                            to_ns: hi,
                            port: 0,
                        });
                    }
                }
            }
            let batch = ExporterBatch {
                schema_version: SCHEMA_VERSION,
                exporter_id: id.clone(),
                seq: w as u64,
                window_from_ns: from,
                window_to_ns: to,
                flows: std::mem::take(&mut buckets[e * windows + w]),
                heartbeats,
                assignments: Vec::new(),
                incarnation: 0,
            };
            deliveries.push(Delivery { key: id.clone(), arrival: to, payload: wire::encode_batch(&batch) });
        }
    }
    LookupData { deliveries, roster, ranges, flows, expected_inside }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_and_promise() {
        let spec = LookupSpec { ips: 50, ranges_per_ip: 3, flows: 2_000, exporters: 4, window_ms: 60_000, seed: 1 };
        let data = generate(&spec);
        assert_eq!(data.ranges.len(), 150);
        assert_eq!(data.flows.len(), 2_000);
        assert!(data.expected_inside > 1_500, "most flows fall inside a range");
        let mut flows = 0;
        for d in &data.deliveries {
            let b = wire::decode_batch(&d.payload).unwrap();
            for f in &b.flows {
                assert!(f.end_ns < b.window_to_ns && f.end_ns >= b.window_from_ns);
            }
            flows += b.flows.len();
        }
        assert_eq!(flows, 2_000);
    }
}
