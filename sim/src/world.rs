//! The simulated fleet in true time: pods and load balancers holding addresses, and the
//! connections between them. This is the ground truth; what the job sees is derived from it
//! in [`crate::publish`], through skewed clocks and a faulty transport.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use crate::rng::Rng;
use crate::scenario::Scenario;

/// Start of simulated time: 2026-01-01T00:00:00Z, in ns since the epoch.
pub const T0: u64 = 1_767_225_600_000_000_000;
/// One millisecond in ns.
pub const MS: u64 = 1_000_000;
/// One second in ns.
pub const SEC: u64 = 1_000_000_000;

/// A host: one exporter, one clock.
#[derive(Clone, Debug)]
pub struct Host {
    /// Exporter id.
    pub id: String,
    /// Clock error: the host reports `true time + skew`.
    pub skew: i64,
}

/// A pod: one workload instance with one address for its whole life.
#[derive(Clone, Debug)]
pub struct Pod {
    /// Workload name (unique).
    pub name: Arc<str>,
    /// Service index.
    pub service: usize,
    /// Host index.
    pub host: usize,
    /// Address.
    pub ip: IpAddr,
    /// Start, true time.
    pub start: u64,
    /// End, true time.
    pub end: u64,
}

/// A load balancer's tenure of an address.
#[derive(Clone, Debug)]
pub struct LbTenure {
    /// Workload name.
    pub name: Arc<str>,
    /// Address.
    pub ip: IpAddr,
    /// Start.
    pub start: u64,
    /// End.
    pub end: u64,
}

/// The server side of a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Server {
    /// A pod (index).
    Pod(usize),
    /// A load balancer tenure (index).
    Lb(usize),
    /// Outside the fleet.
    External,
}

/// One TCP connection, in true time.
#[derive(Clone, Debug)]
pub struct Connection {
    /// Client pod index.
    pub client: usize,
    /// Client port.
    pub client_port: u16,
    /// Server.
    pub server: Server,
    /// Server address.
    pub server_ip: IpAddr,
    /// Server port.
    pub server_port: u16,
    /// Established.
    pub start: u64,
    /// Closed.
    pub end: u64,
    /// Bytes client to server.
    pub bytes_up: u64,
    /// Bytes server to client.
    pub bytes_down: u64,
}

/// The whole true fleet.
#[derive(Clone, Debug, Default)]
pub struct World {
    /// Hosts.
    pub hosts: Vec<Host>,
    /// Pods, in start order.
    pub pods: Vec<Pod>,
    /// Load-balancer tenures.
    pub lbs: Vec<LbTenure>,
    /// Connections.
    pub connections: Vec<Connection>,
}

struct Service {
    ipv6: bool,
    deps: Vec<usize>,
}

fn v4(base: [u8; 2], i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(base[0], base[1], (i >> 8) as u8, (i & 0xff) as u8))
}

fn v6(prefix: u16, i: usize) -> IpAddr {
    IpAddr::V6(Ipv6Addr::new(0xfd00, prefix, 0, 0, 0, 0, (i >> 16) as u16, (i & 0xffff) as u16))
}

/// Generates the fleet of a (validated) scenario.
pub fn generate(s: &Scenario) -> World {
    let mut rng = Rng::new(s.seed);
    let horizon = T0 + s.duration_s * SEC;
    let hosts: Vec<Host> = (0..s.hosts)
        .map(|i| {
            let skew = rng.range(0, 2 * s.skew_max_ms * MS + 1) as i64 - (s.skew_max_ms * MS) as i64;
            Host { id: format!("host-{i:04}"), skew }
        })
        .collect();

    let mut services: Vec<Service> =
        (0..s.services).map(|_| Service { ipv6: rng.chance(s.ipv6_fraction), deps: Vec::new() }).collect();
    for i in 0..services.len() {
        let same: Vec<usize> =
            (0..services.len()).filter(|&j| j != i && services[j].ipv6 == services[i].ipv6).collect();
        if !same.is_empty() {
            for _ in 0..rng.range(1, 4) {
                let dep = same[rng.index(same.len())];
                if !services[i].deps.contains(&dep) {
                    services[i].deps.push(dep);
                }
            }
        }
    }

    // Pod slots and the address pools, driven by an event queue in time order so that the
    // pools hand out addresses exactly as a real allocator would (first freed, first reused).
    let mut slots: Vec<usize> = Vec::new();
    for (svc, _) in services.iter().enumerate() {
        for _ in 0..rng.range(s.replicas_min as u64, s.replicas_max as u64 + 1) {
            slots.push(svc);
        }
    }
    let family_slots = |v6: bool| slots.iter().filter(|&&svc| services[svc].ipv6 == v6).count();
    let mut pools: [VecDeque<(IpAddr, u64)>; 2] = [
        (1..=family_slots(false) + s.ip_pool_slack).map(|i| (v4([10, 2], i), 0)).collect(),
        (1..=family_slots(true) + s.ip_pool_slack).map(|i| (v6(2, i), 0)).collect(),
    ];
    let lifetime = |rng: &mut Rng| (rng.exp(s.pod_lifetime_mean_s) * SEC as f64) as u64 + 2 * SEC;
    // (time, kind, index): kind 0 = pod end (frees first), 1 = slot start.
    let mut events: BinaryHeap<Reverse<(u64, u8, usize)>> = BinaryHeap::new();
    for slot in 0..slots.len() {
        let prewarm = (rng.unit() * s.pod_lifetime_mean_s * SEC as f64) as u64;
        events.push(Reverse((T0 - prewarm, 1, slot)));
    }
    let mut pods: Vec<Pod> = Vec::new();
    let mut pod_slot: Vec<usize> = Vec::new();
    let mut counter = 0usize;
    while let Some(Reverse((t, kind, idx))) = events.pop() {
        if kind == 0 {
            let pod = &pods[idx];
            let family = usize::from(pod.ip.is_ipv6());
            pools[family].push_back((pod.ip, t + s.reuse_delay_ms * MS));
            if t < horizon {
                let restart = rng.range(0, s.restart_delay_max_ms * MS + 1);
                events.push(Reverse((t + restart, 1, pod_slot[idx])));
            }
            continue;
        }
        let svc = slots[idx];
        let pool = &mut pools[usize::from(services[svc].ipv6)];
        match pool.front() {
            Some(&(ip, free_at)) if free_at <= t => {
                pool.pop_front();
                counter += 1;
                let end = t + lifetime(&mut rng);
                pods.push(Pod {
                    name: Arc::from(format!("svc-{svc:02}/pod-{counter:05}")),
                    service: svc,
                    host: rng.index(hosts.len()),
                    ip,
                    start: t,
                    end,
                });
                pod_slot.push(idx);
                events.push(Reverse((end, 0, pods.len() - 1)));
            }
            Some(&(_, free_at)) => events.push(Reverse((free_at, 1, idx))),
            None => events.push(Reverse((t + SEC, 1, idx))),
        }
    }

    // Load balancers: each address passes from one LB instance to the next.
    let mut lbs: Vec<LbTenure> = Vec::new();
    for k in 0..s.load_balancers {
        let ip = v4([10, 200], k + 1);
        let mut t = T0 - 600 * SEC;
        let mut generation = 0;
        while t < horizon {
            let end = t + (rng.exp(s.lb_move_mean_s) * SEC as f64) as u64 + 10 * SEC;
            lbs.push(LbTenure { name: Arc::from(format!("lb-{k:02}/gen-{generation:03}")), ip, start: t, end });
            generation += 1;
            t = end + s.reuse_delay_ms * MS;
        }
    }

    let connections = traffic(s, &mut rng, &services, &pods, &lbs, horizon);
    World { hosts, pods, lbs, connections }
}

/// Who holds each address over time (pods and load balancers), for truth look-ups.
pub struct OwnerIndex {
    by_ip: HashMap<IpAddr, Vec<(u64, u64, Server)>>,
}

impl OwnerIndex {
    /// Indexes the pods and load balancers of a fleet.
    pub fn new(pods: &[Pod], lbs: &[LbTenure]) -> Self {
        let mut by_ip: HashMap<IpAddr, Vec<(u64, u64, Server)>> = HashMap::new();
        for (i, p) in pods.iter().enumerate() {
            by_ip.entry(p.ip).or_default().push((p.start, p.end, Server::Pod(i)));
        }
        for (i, l) in lbs.iter().enumerate() {
            by_ip.entry(l.ip).or_default().push((l.start, l.end, Server::Lb(i)));
        }
        for tenures in by_ip.values_mut() {
            tenures.sort_by_key(|t| t.0);
        }
        OwnerIndex { by_ip }
    }

    /// The holder of `ip` at true time `t`.
    pub fn owner_at(&self, ip: IpAddr, t: u64) -> Option<Server> {
        let tenures = self.by_ip.get(&ip)?;
        let i = tenures.partition_point(|x| x.0 <= t);
        let (start, end, who) = *tenures.get(i.checked_sub(1)?)?;
        (start <= t && t < end).then_some(who)
    }
}

fn traffic(
    s: &Scenario,
    rng: &mut Rng,
    services: &[Service],
    pods: &[Pod],
    lbs: &[LbTenure],
    horizon: u64,
) -> Vec<Connection> {
    let owners = OwnerIndex::new(pods, lbs);
    let mut by_service: Vec<Vec<usize>> = vec![Vec::new(); services.len()];
    for (i, p) in pods.iter().enumerate() {
        by_service[p.service].push(i);
    }
    let (ready, drain) = (s.ready_delay_ms * MS, s.drain_ms * MS);
    let serving = |p: &Pod, t: u64| p.start + ready <= t && t + drain < p.end;
    let mut out = Vec::new();
    let mut candidates: Vec<usize> = Vec::new();
    for (ci, client) in pods.iter().enumerate() {
        let svc = &services[client.service];
        let from = client.start.max(T0) + ready;
        let until = client.end.saturating_sub(drain).min(horizon);
        let mut t = from as f64;
        loop {
            t += rng.exp(1.0 / s.flows_per_pod_per_s) * SEC as f64;
            let start = t as u64;
            if start >= until {
                break;
            }
            let r = rng.unit();
            let (server, server_ip, server_port) = if r < s.external_fraction || svc.deps.is_empty() {
                let ip = if svc.ipv6 { v6_external(rng) } else { v4([198, 51], 100 * 256 + rng.index(256)) };
                (Server::External, ip, 443)
            } else if r < s.external_fraction + s.lb_fraction && !svc.ipv6 && !lbs.is_empty() {
                let ip = v4([10, 200], rng.index(s.load_balancers) + 1);
                match owners.owner_at(ip, start) {
                    Some(Server::Lb(l)) if lbs[l].start + ready <= start && start + drain < lbs[l].end => {
                        (Server::Lb(l), ip, 443)
                    }
                    _ => continue,
                }
            } else if r < s.external_fraction + s.lb_fraction + s.stale_dns_fraction {
                // A stale DNS answer: the address of a pod of a dependency that has ended.
                let dep = svc.deps[rng.index(svc.deps.len())];
                candidates.clear();
                candidates.extend(
                    by_service[dep].iter().copied().filter(|&p| pods[p].end <= start && pods[p].end + 30 * SEC > start),
                );
                if candidates.is_empty() {
                    continue;
                }
                let ip = pods[candidates[rng.index(candidates.len())]].ip;
                match owners.owner_at(ip, start) {
                    Some(Server::Pod(p)) if p != ci => (Server::Pod(p), ip, 8000 + pods[p].service as u16),
                    _ => continue, // nobody there: connection refused, no flow
                }
            } else {
                let dep = svc.deps[rng.index(svc.deps.len())];
                candidates.clear();
                candidates.extend(by_service[dep].iter().copied().filter(|&p| serving(&pods[p], start)));
                if candidates.is_empty() {
                    continue;
                }
                let p = candidates[rng.index(candidates.len())];
                (Server::Pod(p), pods[p].ip, 8000 + dep as u16)
            };
            let duration = if rng.chance(s.long_flow_fraction) {
                rng.range(60 * SEC, 480 * SEC)
            } else {
                (rng.log_uniform(1e-3, 2.0) * SEC as f64) as u64
            };
            let mut end = (start + duration.max(1)).min(client.end).min(horizon);
            match server {
                Server::Pod(p) => end = end.min(pods[p].end),
                Server::Lb(l) => end = end.min(lbs[l].end),
                Server::External => {}
            }
            if end <= start {
                continue;
            }
            out.push(Connection {
                client: ci,
                client_port: rng.range(32_768, 61_000) as u16,
                server,
                server_ip,
                server_port,
                start,
                end,
                bytes_up: rng.log_uniform(64.0, 1e6) as u64,
                bytes_down: rng.log_uniform(64.0, 1e7) as u64,
            });
        }
    }
    out
}

fn v6_external(rng: &mut Rng) -> IpAddr {
    IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, rng.range(1, 0xffff) as u16))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_never_held_twice_at_once() {
        let world = generate(&Scenario::adversarial());
        let mut by_ip: HashMap<IpAddr, Vec<(u64, u64)>> = HashMap::new();
        for p in &world.pods {
            by_ip.entry(p.ip).or_default().push((p.start, p.end));
        }
        for l in &world.lbs {
            by_ip.entry(l.ip).or_default().push((l.start, l.end));
        }
        let mut reused_fast = 0;
        for tenures in by_ip.values_mut() {
            tenures.sort();
            for w in tenures.windows(2) {
                assert!(w[0].1 <= w[1].0, "overlapping tenures {w:?}");
                if w[1].0 - w[0].1 < 5 * SEC {
                    reused_fast += 1;
                }
            }
        }
        assert!(reused_fast > 10, "adversarial reuses addresses within seconds ({reused_fast})");
        assert!(!world.connections.is_empty());
    }

    #[test]
    fn connections_stay_inside_both_lifetimes() {
        let world = generate(&Scenario::steady());
        for c in &world.connections {
            let client = &world.pods[c.client];
            assert!(client.start <= c.start && c.end <= client.end);
            if let Server::Pod(p) = c.server {
                assert!(world.pods[p].start <= c.start && c.end <= world.pods[p].end);
                assert_eq!(world.pods[p].ip, c.server_ip);
            }
        }
    }

    #[test]
    fn same_seed_same_world() {
        let a = generate(&Scenario::steady());
        let b = generate(&Scenario::steady());
        assert_eq!(a.connections.len(), b.connections.len());
        assert_eq!(a.pods.len(), b.pods.len());
    }
}
