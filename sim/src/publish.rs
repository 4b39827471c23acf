//! What the job sees: every host's exporter batches (through its skewed clock), the address
//! manager's assignment feed, and the transport's faults. Ground truth is produced beside it
//! and never travels with the batches.

use std::collections::HashMap;
use std::net::IpAddr;

use flowmap_schema::{self as wire, Assignment, Direction, ExporterBatch, Flow, Ownership, SCHEMA_VERSION};
use serde::{Deserialize, Serialize};

use crate::rng::Rng;
use crate::scenario::Scenario;
use crate::world::{Server, World, MS, SEC, T0};

/// The id of the address manager's feed.
pub const IPAM_FEED: &str = "ipam";

/// One message as the transport delivers it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// The message key: the exporter id.
    pub key: String,
    /// True time of arrival at the job, ns.
    pub arrival: u64,
    /// The encoded batch (or garbage, for injected faults).
    pub payload: Vec<u8>,
}

/// What happened to a flow record on its way to the job.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fate {
    /// Its batch was delivered.
    Delivered,
    /// Its batch was lost in transit.
    Lost,
    /// The exporter wrote an invalid address into it (the job must reject it).
    Corrupted,
}

/// The truth about one flow record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TruthFlow {
    /// Flow id as the job computes it.
    pub id: u64,
    /// The workload that really held the remote address when the flow started; `None` for
    /// addresses outside the fleet.
    pub remote: Option<String>,
    /// The workload on the local end.
    pub local: String,
    /// Whether the remote address is outside the fleet.
    pub external: bool,
    /// What happened to the record in transit.
    pub fate: Fate,
}

/// A simulated run: what the job reads, and the truth to score it by.
#[derive(Clone, Debug)]
pub struct Simulation {
    /// Deliveries in arrival order.
    pub deliveries: Vec<Delivery>,
    /// The exporters (and feeds) the job should expect.
    pub roster: Vec<String>,
    /// One entry per flow record the exporters produced.
    pub truth: Vec<TruthFlow>,
}

struct Record {
    flow: Flow,
    truth: TruthFlow,
}

/// One side's view of a connection.
struct Ends {
    remote_ip: IpAddr,
    local_port: u16,
    remote_port: u16,
    direction: Direction,
    sent: u64,
    received: u64,
}

fn bytes(ip: IpAddr) -> Vec<u8> {
    wire::ip_to_bytes(ip)
}

fn skewed(t: u64, skew: i64) -> u64 {
    t.saturating_add_signed(skew)
}

/// Turns a fleet into deliveries and truth.
pub fn publish(s: &Scenario, world: &World) -> Simulation {
    let mut rng = Rng::new(s.seed ^ 0x005e_ed0f_fa17);
    let window = s.window_ms * MS;
    let slack = s.skew_max_ms * MS + window;
    let base = T0 - slack;
    let last = T0 + s.duration_s * SEC + slack;
    let windows = (last - base).div_ceil(window);

    // Flow records per host, each with its truth.
    let mut per_host: Vec<Vec<Record>> = (0..world.hosts.len()).map(|_| Vec::new()).collect();
    for c in &world.connections {
        let client = &world.pods[c.client];
        let (remote, external) = match c.server {
            Server::Pod(p) => (Some(world.pods[p].name.to_string()), false),
            Server::Lb(l) => (Some(world.lbs[l].name.to_string()), false),
            Server::External => (None, true),
        };
        // The client's record, then the server's (when the server is a pod with an exporter).
        let srtt = rng.range(50, 5_000) as u32;
        let retransmits = rng.range(0, 3) as u32;
        let mut side = |pod: &crate::world::Pod, ends: Ends, remote: Option<String>, external: bool| {
            let skew = world.hosts[pod.host].skew;
            let flow = Flow {
                local_ip: bytes(pod.ip),
                local_port: u32::from(ends.local_port),
                remote_ip: bytes(ends.remote_ip),
                remote_port: u32::from(ends.remote_port),
                direction: ends.direction as i32,
                start_ns: skewed(c.start, skew),
                end_ns: skewed(c.end, skew),
                bytes_sent: ends.sent,
                bytes_received: ends.received,
                segments_sent: ends.sent / 1400 + 2,
                segments_received: ends.received / 1400 + 2,
                retransmits: if ends.direction == Direction::Client { retransmits } else { 0 },
                srtt_us: srtt,
                local_workload: pod.name.to_string(),
                open: false,
                ..Default::default()
            };
            let id = wire::flow_id(&world.hosts[pod.host].id, &flow);
            let truth = TruthFlow { id, remote, local: pod.name.to_string(), external, fate: Fate::Delivered };
            per_host[pod.host].push(Record { flow, truth });
        };
        let client_side = Ends {
            remote_ip: c.server_ip,
            local_port: c.client_port,
            remote_port: c.server_port,
            direction: Direction::Client,
            sent: c.bytes_up,
            received: c.bytes_down,
        };
        side(client, client_side, remote, external);
        if let Server::Pod(p) = c.server {
            let server_side = Ends {
                remote_ip: client.ip,
                local_port: c.server_port,
                remote_port: c.client_port,
                direction: Direction::Server,
                sent: c.bytes_down,
                received: c.bytes_up,
            };
            side(&world.pods[p], server_side, Some(client.name.to_string()), false);
        }
    }
    let mut pods_on_host: Vec<Vec<usize>> = vec![Vec::new(); world.hosts.len()];
    for (i, p) in world.pods.iter().enumerate() {
        pods_on_host[p.host].push(i);
    }

    let mut deliveries: Vec<Delivery> = Vec::new();
    let mut truth: Vec<TruthFlow> = Vec::new();
    for (h, host) in world.hosts.iter().enumerate() {
        let mut by_window: Vec<Vec<Record>> = (0..windows).map(|_| Vec::new()).collect();
        for record in per_host[h].drain(..) {
            let k = ((record.flow.end_ns - base) / window).min(windows - 1);
            by_window[k as usize].push(record);
        }
        let delay = rng.range(s.delay_min_ms * MS, s.delay_max_ms * MS + 1);
        let mut arrival = 0u64;
        for (k, records) in by_window.into_iter().enumerate() {
            let from = base + k as u64 * window;
            let to = from + window;
            let heartbeats = pods_on_host[h]
                .iter()
                .map(|&p| &world.pods[p])
                .filter_map(|p| {
                    let (lo, hi) = (skewed(p.start, host.skew).max(from), skewed(p.end, host.skew).min(to));
                    (lo < hi).then(|| Ownership {
                        ip: bytes(p.ip),
                        workload: p.name.to_string(),
                        from_ns: lo,
                        to_ns: hi,
                        port: 0,
                    })
                })
                .collect();
            let lost = rng.chance(s.loss);
            let mut flows = Vec::with_capacity(records.len());
            for mut record in records {
                record.truth.fate = if lost { Fate::Lost } else { Fate::Delivered };
                if !lost && rng.chance(s.bad_record) {
                    record.flow.remote_ip.push(0); // 5 or 17 bytes: not an address
                    record.truth.fate = Fate::Corrupted;
                    // The id of the record as published, so a dead-lettered copy can be named.
                    record.truth.id = flowmap_schema::flow_id(&host.id, &record.flow);
                }
                flows.push(record.flow);
                truth.push(record.truth);
            }
            let batch = ExporterBatch {
                schema_version: SCHEMA_VERSION,
                exporter_id: host.id.clone(),
                seq: k as u64,
                window_from_ns: from,
                window_to_ns: to,
                flows,
                heartbeats,
                assignments: Vec::new(),
                incarnation: 0,
            };
            let published = to.saturating_add_signed(-host.skew);
            arrival = arrival.max(published + delay + rng.range(0, s.jitter_ms * MS + 1));
            deliver(s, &mut rng, &mut deliveries, &host.id, arrival, wire::encode_batch(&batch), lost);
        }
    }

    ipam_feed(s, world, &mut rng, &mut deliveries);
    if s.corrupt > 0.0 {
        rogue_batches(&mut deliveries, base, last);
    }
    deliveries.sort_by_key(|d| d.arrival);
    let mut roster: Vec<String> = world.hosts.iter().map(|h| h.id.clone()).collect();
    roster.push(IPAM_FEED.to_string());
    Simulation { deliveries, roster, truth }
}

/// Adds one batch's deliveries: none if lost, plus a duplicate or a truncated copy by chance.
fn deliver(
    s: &Scenario,
    rng: &mut Rng,
    out: &mut Vec<Delivery>,
    key: &str,
    arrival: u64,
    payload: Vec<u8>,
    lost: bool,
) {
    if lost {
        return;
    }
    if rng.chance(s.corrupt) {
        // A truncated copy, cut inside a field so that it is detectably corrupt (a cut on a
        // field boundary would be a valid, shorter batch: that is what the transport's own
        // checksums are for, not the job).
        let mut cut = rng.range(1, payload.len().max(2) as u64) as usize;
        while cut > 0 && flowmap_schema::view_batch(&payload[..cut]).is_ok() {
            cut -= 1;
        }
        if cut > 0 {
            out.push(Delivery {
                key: key.to_string(),
                arrival: arrival.saturating_sub(1),
                payload: payload[..cut].to_vec(),
            });
        }
    }
    if rng.chance(s.duplicate) {
        let again = arrival + rng.range(0, 30 * SEC);
        out.push(Delivery { key: key.to_string(), arrival: again, payload: payload.clone() });
    }
    out.push(Delivery { key: key.to_string(), arrival, payload });
}

/// The address manager publishes every assignment and release, pods and load balancers alike.
fn ipam_feed(s: &Scenario, world: &World, rng: &mut Rng, out: &mut Vec<Delivery>) {
    let window = s.window_ms * MS;
    let horizon = T0 + s.duration_s * SEC + window;
    let mut events: Vec<(u64, IpAddr, String)> = Vec::new();
    for p in &world.pods {
        events.push((p.start, p.ip, p.name.to_string()));
        events.push((p.end, p.ip, String::new()));
    }
    for l in &world.lbs {
        events.push((l.start, l.ip, l.name.to_string()));
        events.push((l.end, l.ip, String::new()));
    }
    events.retain(|e| e.0 < horizon);
    events.sort_by_key(|e| (e.0, !e.2.is_empty()));
    let Some(first) = events.first().map(|e| e.0) else { return };
    let base = first - first % window;
    let mut grouped: HashMap<u64, Vec<Assignment>> = HashMap::new();
    for (at, ip, workload) in events {
        grouped.entry((at - base) / window).or_default().push(Assignment { ip: bytes(ip), workload, at_ns: at });
    }
    let windows = (horizon - base).div_ceil(window);
    let mut arrival = 0;
    for k in 0..windows {
        let from = base + k * window;
        let batch = ExporterBatch {
            schema_version: SCHEMA_VERSION,
            exporter_id: IPAM_FEED.to_string(),
            seq: k,
            window_from_ns: from,
            window_to_ns: from + window,
            flows: Vec::new(),
            heartbeats: Vec::new(),
            assignments: grouped.remove(&k).unwrap_or_default(),
            incarnation: 0,
        };
        arrival = (from + window + s.ipam_delay_ms * MS).max(arrival);
        out.push(Delivery { key: IPAM_FEED.to_string(), arrival, payload: wire::encode_batch(&batch) });
    }
    let _ = rng;
}

/// Bad input a real job meets: garbage bytes, an unknown schema version, a batch from the
/// future. None of it carries flows of the truth.
fn rogue_batches(out: &mut Vec<Delivery>, base: u64, last: u64) {
    let mid = base + (last - base) / 2;
    let mut future = ExporterBatch {
        schema_version: SCHEMA_VERSION,
        exporter_id: "rogue".into(),
        seq: 0,
        window_from_ns: last + 3600 * SEC,
        window_to_ns: last + 3610 * SEC,
        ..Default::default()
    };
    out.push(Delivery { key: "rogue".into(), arrival: mid, payload: wire::encode_batch(&future) });
    future.schema_version = 9;
    future.window_from_ns = mid;
    future.window_to_ns = mid + SEC;
    out.push(Delivery { key: "rogue".into(), arrival: mid + 1, payload: wire::encode_batch(&future) });
    out.push(Delivery { key: "rogue".into(), arrival: mid + 2, payload: b"\xff\xff\xff\xffnot a batch".to_vec() });
}
