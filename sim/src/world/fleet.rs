//! Who exists, and when: hosts and their node addresses, hostNetwork workloads, services, pods
//! (driven by an event queue so that the address pools hand out addresses exactly as a real
//! allocator would, first freed first reused), load-balancer tenures and NAT port tenures.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::net::IpAddr;
use std::sync::Arc;

use super::{
    v4, v6, Host, HostService, LbTenure, NatTenure, Pod, Service, World, HOST_NETWORK_PORT, MS, NAT_PORT, SEC, T0,
};
use crate::rng::Rng;
use crate::scenario::Checked;

/// How long before the start load balancers and NAT ports have held their addresses.
const HISTORY: u64 = 600 * SEC;
/// Least tenure of a load balancer or NAT port.
const MIN_TENURE: u64 = 10 * SEC;

/// Everything but the connections.
pub(super) fn build(s: &Checked, rng: &mut Rng, horizon: u64) -> World {
    let hosts: Vec<Host> = (0..s.hosts)
        .map(|i| {
            let skew = rng.range(0, 2 * s.skew_max_ms * MS + 1) as i64 - (s.skew_max_ms * MS) as i64;
            Host { name: Arc::from(format!("host-{i:04}")), skew, ip: v4([10, 1], i + 1) }
        })
        .collect();
    let host_services = (0..s.hosts)
        .flat_map(|h| {
            (0..s.host_network_services).map(move |j| HostService {
                name: Arc::from(format!("hostnet-{j}/host-{h:04}")),
                host: h,
                port: HOST_NETWORK_PORT + j as u16,
            })
        })
        .collect();
    let services = services(s, rng);
    let pods = pods(s, rng, &services, hosts.len(), horizon);
    let lbs = lbs(s, rng, horizon);
    let nats = nats(s, rng, hosts.len(), horizon);
    World { hosts, services, host_services, pods, lbs, nats, connections: Vec::new() }
}

fn services(s: &Checked, rng: &mut Rng) -> Vec<Service> {
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
    services
}

fn pods(s: &Checked, rng: &mut Rng, services: &[Service], hosts: usize, horizon: u64) -> Vec<Pod> {
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
                let end = t + lifetime(rng);
                let name: Arc<str> = Arc::from(format!("svc-{svc:02}/pod-{counter:05}"));
                let sidecar = rng.chance(s.sidecar_fraction).then(|| Arc::from(format!("{name}/sidecar")));
                pods.push(Pod { name, service: svc, host: rng.index(hosts), ip, start: t, end, sidecar });
                pod_slot.push(idx);
                events.push(Reverse((end, 0, pods.len() - 1)));
            }
            Some(&(_, free_at)) => events.push(Reverse((free_at, 1, idx))),
            None => events.push(Reverse((t + SEC, 1, idx))),
        }
    }
    pods
}

/// Tenures of one address (or port) passing from one workload to the next.
fn tenures(rng: &mut Rng, mean_s: f64, gap: u64, horizon: u64) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut t = T0 - HISTORY;
    while t < horizon {
        let end = t + (rng.exp(mean_s) * SEC as f64) as u64 + MIN_TENURE;
        out.push((t, end));
        t = end + gap;
    }
    out
}

fn lbs(s: &Checked, rng: &mut Rng, horizon: u64) -> Vec<LbTenure> {
    let mut lbs = Vec::new();
    for k in 0..s.load_balancers {
        let ip = v4([10, 200], k + 1);
        for (generation, (start, end)) in
            tenures(rng, s.lb_move_mean_s, s.reuse_delay_ms * MS, horizon).into_iter().enumerate()
        {
            lbs.push(LbTenure { name: Arc::from(format!("lb-{k:02}/gen-{generation:03}")), ip, start, end });
        }
    }
    lbs
}

fn nats(s: &Checked, rng: &mut Rng, hosts: usize, horizon: u64) -> Vec<NatTenure> {
    let mut nats = Vec::new();
    for k in 0..s.nat_addresses {
        let ip = v4([10, 201], k + 1);
        let host = rng.index(hosts);
        for j in 0..s.nat_ports {
            let port = NAT_PORT + j as u16;
            let gap = s.reuse_delay_ms * MS;
            for (generation, (start, end)) in tenures(rng, s.nat_move_mean_s, gap, horizon).into_iter().enumerate() {
                let name = Arc::from(format!("nat-{k:02}/port-{j}/gen-{generation:03}"));
                nats.push(NatTenure { name, ip, port, host, start, end });
            }
        }
    }
    nats
}
