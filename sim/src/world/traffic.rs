//! The connections: every pod's app and every hostNetwork workload opens connections at its
//! rate (a Poisson process), each to a destination drawn from the scenario's mix.
//!
//! A pod's app calls, by the scenario's fractions: an external address, a load balancer, a
//! stale address from a DNS cache (whoever holds it now answers; nobody: timed out), a
//! hostNetwork listener on some node, a workload on a NAT (address, port), a port nothing
//! listens on (refused) of a dependency's, a node's or a NAT address, or else a serving pod of
//! one of its service's dependencies: its app port, or its sidecar's port. IPv6 services have no load
//! balancers, nodes or NAT to call (those calls go to a dependency instead). A hostNetwork
//! workload calls serving pods of IPv4 services (a node agent scraping them). So connections
//! come out of shared addresses from hostNetwork workloads (node addresses) and from the apps of
//! pods with a sidecar; sidecars and NAT workloads only accept connections.
//!
//! Long-lived connections (1 to 8 minutes) are also opened during the 8 minutes before the
//! simulation starts, so that the exporters, which start with the simulation, find some of
//! them already open.

use std::collections::hash_map::{Entry, HashMap};
use std::net::{IpAddr, Ipv6Addr};

use super::owners::{NatIndex, OwnerIndex};
use super::{
    v4, Connection, End, Outcome, Pod, World, APP_PORT, CLOSED_PORT, MS, NAT_PORT, SEC, SIDECAR_PORT, T0, TLS_PORT,
};
use crate::rng::Rng;
use crate::scenario::Checked;
use crate::truth::EndKind;

/// Shortest and longest long-lived connection.
const LONG_FLOW: (u64, u64) = (60 * SEC, 480 * SEC);
/// How long a stale DNS answer lingers after its pod ended.
const STALE_DNS_TTL: u64 = 30 * SEC;
/// Ephemeral ports, as Linux hands them out.
const EPHEMERAL: (u64, u64) = (32_768, 61_000);
/// How long a closed connection's 4-tuple stays unusable (TIME_WAIT on the client).
const TIME_WAIT: u64 = 60 * SEC;
/// Ephemeral ports tried before a connection is given up (the 4-tuple is in use).
const PORT_TRIES: usize = 8;

/// A connection's 4-tuple: client address and port, server address and port.
type FourTuple = (IpAddr, u16, IpAddr, u16);

/// Who opens connections, and from where.
struct Client {
    end: End,
    ip: IpAddr,
    /// The calling service (its dependencies are the usual destinations); `None` for a
    /// hostNetwork workload.
    service: Option<usize>,
    ipv6: bool,
    /// When it may start connections: from its start plus the ready delay.
    start: u64,
    /// Until when (its end minus the drain time, or the horizon).
    until: u64,
    /// When it ends (connections end with it).
    end_at: u64,
}

/// A chosen destination.
struct Target {
    server: End,
    kind: EndKind,
    ip: IpAddr,
    port: u16,
    outcome: Outcome,
    /// When the server stops (connections end with it).
    end_at: u64,
}

struct Traffic<'a> {
    s: &'a Checked,
    world: &'a World,
    owners: OwnerIndex,
    nat: NatIndex,
    /// Pods of each service.
    by_service: Vec<Vec<usize>>,
    /// Services with IPv4 pods (what hostNetwork workloads call).
    v4_services: Vec<usize>,
    /// NAT addresses, in index order.
    nat_ips: Vec<IpAddr>,
    horizon: u64,
    candidates: Vec<usize>,
    /// Per 4-tuple, the span `[first start, last end + TIME_WAIT)` of the connections that used
    /// it: a new connection takes another port rather than overlap it (the kernel never has
    /// two connections with one 4-tuple, and TIME_WAIT keeps it from reuse for a while).
    tuples: HashMap<FourTuple, (u64, u64)>,
    out: Vec<Connection>,
}

/// Generates the connections of a fleet (everything but `connections` must be built).
pub(super) fn generate(s: &Checked, rng: &mut Rng, world: &World, horizon: u64) -> Vec<Connection> {
    let mut by_service: Vec<Vec<usize>> = vec![Vec::new(); world.services.len()];
    for (i, p) in world.pods.iter().enumerate() {
        by_service[p.service].push(i);
    }
    let mut nat_ips: Vec<IpAddr> = world.nats.iter().map(|n| n.ip).collect();
    nat_ips.dedup();
    let mut t = Traffic {
        s,
        world,
        owners: OwnerIndex::new(&world.pods, &world.lbs),
        nat: NatIndex::new(&world.nats),
        v4_services: (0..world.services.len()).filter(|&i| !world.services[i].ipv6).collect(),
        by_service,
        nat_ips,
        horizon,
        candidates: Vec::new(),
        tuples: HashMap::new(),
        out: Vec::new(),
    };
    let ready = s.ready_delay_ms * MS;
    let drain = s.drain_ms * MS;
    for (i, pod) in world.pods.iter().enumerate() {
        let client = Client {
            end: End::App(i),
            ip: pod.ip,
            service: Some(pod.service),
            ipv6: pod.ip.is_ipv6(),
            start: pod.start + ready,
            until: pod.end.saturating_sub(drain).min(horizon),
            end_at: pod.end,
        };
        t.client(rng, &client, s.flows_per_pod_per_s);
    }
    for (i, hs) in world.host_services.iter().enumerate() {
        let client = Client {
            end: End::HostNet(i),
            ip: world.hosts[hs.host].ip,
            service: None,
            ipv6: false,
            start: 0,
            until: horizon,
            end_at: u64::MAX,
        };
        t.client(rng, &client, s.host_network_flows_per_s);
    }
    t.out
}

impl Traffic<'_> {
    /// All connections of one client: long-lived ones before the start, then its traffic.
    fn client(&mut self, rng: &mut Rng, c: &Client, rate: f64) {
        if rate <= 0.0 {
            return;
        }
        let long_rate = rate * self.s.long_flow_fraction;
        if long_rate > 0.0 {
            let mut t = c.start.max(T0 - LONG_FLOW.1) as f64;
            let stop = c.until.min(T0);
            loop {
                t += rng.exp(1.0 / long_rate) * SEC as f64;
                if t as u64 >= stop {
                    break;
                }
                self.connect(rng, c, t as u64, true);
            }
        }
        let mut t = c.start.max(T0 + self.s.ready_delay_ms * MS) as f64;
        loop {
            t += rng.exp(1.0 / rate) * SEC as f64;
            if t as u64 >= c.until {
                break;
            }
            let long = rng.chance(self.s.long_flow_fraction);
            self.connect(rng, c, t as u64, long);
        }
    }

    fn connect(&mut self, rng: &mut Rng, c: &Client, start: u64, long: bool) {
        let target = match c.service {
            Some(svc) => self.pick_for_app(rng, c, svc, start),
            None => self.pick_pod(rng, None, start),
        };
        let Some(target) = target else { return };
        let established = target.outcome == Outcome::Established;
        let end = if !established {
            start
        } else {
            let duration = if long {
                rng.range(LONG_FLOW.0, LONG_FLOW.1)
            } else {
                (rng.log_uniform(1e-3, 2.0) * SEC as f64) as u64
            };
            (start + duration.max(1)).min(c.end_at).min(target.end_at).min(self.horizon)
        };
        if established && end <= start {
            return;
        }
        let (bytes_up, bytes_down) =
            if established { (rng.log_uniform(64.0, 1e6) as u64, rng.log_uniform(64.0, 1e7) as u64) } else { (0, 0) };
        let Some(client_port) = self.ephemeral_port(rng, c.ip, &target, start, end) else { return };
        self.out.push(Connection {
            client: c.end,
            client_ip: c.ip,
            client_port,
            server: target.server,
            server_kind: target.kind,
            server_ip: target.ip,
            server_port: target.port,
            start,
            end,
            bytes_up,
            bytes_down,
            outcome: target.outcome,
        });
    }

    /// An ephemeral port whose 4-tuple with the target is free over `[start, end]` (and its
    /// TIME_WAIT after an established connection); `None` after [`PORT_TRIES`] tries.
    fn ephemeral_port(&mut self, rng: &mut Rng, ip: IpAddr, target: &Target, start: u64, end: u64) -> Option<u16> {
        let until = if target.outcome == Outcome::Established { end + TIME_WAIT } else { end + 1 };
        for _ in 0..PORT_TRIES {
            let port = rng.range(EPHEMERAL.0, EPHEMERAL.1) as u16;
            match self.tuples.entry((ip, port, target.ip, target.port)) {
                Entry::Vacant(v) => {
                    v.insert((start, until));
                    return Some(port);
                }
                Entry::Occupied(mut o) => {
                    let (first, last) = *o.get();
                    if until <= first || last <= start {
                        o.insert((first.min(start), last.max(until)));
                        return Some(port);
                    }
                }
            }
        }
        None
    }

    /// A destination for a pod's app, by the scenario's mix (see the module docs).
    fn pick_for_app(&mut self, rng: &mut Rng, c: &Client, svc: usize, start: u64) -> Option<Target> {
        let (s, world) = (self.s, self.world);
        let deps = &world.services[svc].deps;
        // One draw picks the destination class: [external, lb, stale, host_net, nat, refused],
        // or none of them (a dependency).
        let fractions = [
            s.external_fraction,
            s.lb_fraction,
            s.stale_dns_fraction,
            s.host_network_fraction,
            s.nat_fraction,
            s.refused_fraction,
        ];
        let mut r = rng.unit();
        let class = fractions.iter().position(|&f| {
            let hit = r < f;
            r -= f;
            hit
        });
        let is = |i: usize| class == Some(i);
        if is(0) || deps.is_empty() {
            let ip = if c.ipv6 { v6_external(rng) } else { v4([198, 51], 100 * 256 + rng.index(256)) };
            return Some(Target {
                server: End::External,
                kind: EndKind::External,
                ip,
                port: TLS_PORT,
                outcome: Outcome::Established,
                end_at: u64::MAX,
            });
        }
        let (lb, stale, host_net, nat, refused) = (is(1), is(2), is(3), is(4), is(5));
        let v4_only = !c.ipv6;
        if lb && v4_only && s.load_balancers > 0 {
            let ip = v4([10, 200], rng.index(s.load_balancers) + 1);
            let ready = s.ready_delay_ms * MS;
            return match self.owners.owner_at(ip, start) {
                Some(End::Lb(l)) if self.world.lbs[l].start + ready <= start => {
                    let end_at = self.world.lbs[l].end;
                    let kind = EndKind::LoadBalancer;
                    Some(Target { server: End::Lb(l), kind, ip, port: TLS_PORT, outcome: Outcome::Established, end_at })
                }
                _ => None,
            };
        }
        if stale {
            let dep = deps[rng.index(deps.len())];
            return self.stale_dns(rng, c, dep, start);
        }
        if host_net && v4_only && !self.world.host_services.is_empty() {
            let i = rng.index(self.world.host_services.len());
            let hs = &self.world.host_services[i];
            return Some(Target {
                server: End::HostNet(i),
                kind: EndKind::HostNetwork,
                ip: self.world.hosts[hs.host].ip,
                port: hs.port,
                outcome: Outcome::Established,
                end_at: u64::MAX,
            });
        }
        if nat && v4_only && !self.nat_ips.is_empty() {
            let ip = self.nat_ips[rng.index(self.nat_ips.len())];
            let port = NAT_PORT + rng.index(s.nat_ports) as u16;
            let Some(End::Nat(n)) = self.nat.holder_at(ip, port, start) else { return None };
            let end_at = world.nats[n].end;
            return Some(Target {
                server: End::Nat(n),
                kind: EndKind::Nat,
                ip,
                port,
                outcome: Outcome::Established,
                end_at,
            });
        }
        let dep = deps[rng.index(deps.len())];
        if refused {
            return self.refused(rng, c, dep, start);
        }
        self.pick_pod(rng, Some(dep), start)
    }

    /// A refused attempt (111): to a port nothing listens on, of a dependency's pod address,
    /// or (IPv4 clients, one time in three each) of a node address or a NAT address. On an address of its own the pod is the remote end (its
    /// kernel refused); on a shared address nobody is.
    fn refused(&mut self, rng: &mut Rng, c: &Client, dep: usize, start: u64) -> Option<Target> {
        let world = self.world;
        let refused = |server, kind, ip, port| Target { server, kind, ip, port, outcome: Outcome::Refused, end_at: 0 };
        let choice = if c.ipv6 { 0 } else { rng.index(3) };
        if choice == 1 && !world.hosts.is_empty() {
            let host = &world.hosts[rng.index(world.hosts.len())];
            return Some(refused(End::Nobody, EndKind::HostNetwork, host.ip, CLOSED_PORT + dep as u16));
        }
        if choice == 2 && !self.nat_ips.is_empty() {
            // The first port after the NAT workloads' ports: never assigned.
            let ip = self.nat_ips[rng.index(self.nat_ips.len())];
            return Some(refused(End::Nobody, EndKind::Nat, ip, NAT_PORT + self.s.nat_ports as u16));
        }
        let p = self.serving_pod_of(rng, dep, start)?;
        let pod = &world.pods[p];
        let server = if pod.sidecar.is_none() { End::App(p) } else { End::Nobody };
        Some(refused(server, world.kind(End::App(p)), pod.ip, CLOSED_PORT + dep as u16))
    }

    /// A stale DNS answer: the address of a pod of `dep` that ended in the last
    /// [`STALE_DNS_TTL`]. Whoever holds the address now answers on its own app port (a client
    /// that follows the port in the answer); when nobody holds it, the attempt times out.
    fn stale_dns(&mut self, rng: &mut Rng, c: &Client, dep: usize, start: u64) -> Option<Target> {
        let pods = &self.world.pods;
        self.candidates.clear();
        self.candidates.extend(
            self.by_service[dep]
                .iter()
                .copied()
                .filter(|&p| pods[p].end <= start && pods[p].end + STALE_DNS_TTL > start),
        );
        if self.candidates.is_empty() {
            return None;
        }
        let ip = pods[self.candidates[rng.index(self.candidates.len())]].ip;
        match self.owners.owner_at(ip, start) {
            Some(End::App(p)) if End::App(p) != c.end => Some(Target {
                server: End::App(p),
                kind: self.world.kind(End::App(p)),
                ip,
                port: pods[p].app_port(),
                outcome: Outcome::Established,
                end_at: pods[p].end,
            }),
            Some(_) => None, // the client's own address: it would not call itself
            None => Some(Target {
                server: End::Nobody,
                kind: EndKind::Vacant,
                ip,
                port: APP_PORT + dep as u16,
                outcome: Outcome::TimedOut,
                end_at: 0,
            }),
        }
    }

    fn serving_pod_of(&mut self, rng: &mut Rng, svc: usize, start: u64) -> Option<usize> {
        let (ready, drain) = (self.s.ready_delay_ms * MS, self.s.drain_ms * MS);
        let pods = &self.world.pods;
        let serving = |p: &Pod| p.start + ready <= start && start + drain < p.end;
        self.candidates.clear();
        self.candidates.extend(self.by_service[svc].iter().copied().filter(|&p| serving(&pods[p])));
        (!self.candidates.is_empty()).then(|| self.candidates[rng.index(self.candidates.len())])
    }

    /// A serving pod of `svc` (of any IPv4 service when `None`): its app port, or its
    /// sidecar's port by `sidecar_call_fraction` when it has one.
    fn pick_pod(&mut self, rng: &mut Rng, svc: Option<usize>, start: u64) -> Option<Target> {
        let svc = match svc {
            Some(svc) => svc,
            None if self.v4_services.is_empty() => return None,
            None => self.v4_services[rng.index(self.v4_services.len())],
        };
        let p = self.serving_pod_of(rng, svc, start)?;
        let pod = &self.world.pods[p];
        let (server, port) = match &pod.sidecar {
            Some(_) if rng.chance(self.s.sidecar_call_fraction) => (End::Sidecar(p), SIDECAR_PORT),
            _ => (End::App(p), pod.app_port()),
        };
        Some(Target {
            server,
            kind: self.world.kind(server),
            ip: pod.ip,
            port,
            outcome: Outcome::Established,
            end_at: pod.end,
        })
    }
}

fn v6_external(rng: &mut Rng) -> IpAddr {
    IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, rng.range(1, 0xffff) as u16))
}
