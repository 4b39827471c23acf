use std::collections::HashMap;

use super::*;
use crate::scenario::Scenario;

fn world(s: Scenario) -> World {
    generate(&s.validate().unwrap())
}

#[test]
fn addresses_and_ports_are_never_held_twice_at_once() {
    let world = world(Scenario::adversarial());
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
    let mut by_slot: HashMap<(IpAddr, u16), Vec<(u64, u64)>> = HashMap::new();
    for n in &world.nats {
        by_slot.entry((n.ip, n.port)).or_default().push((n.start, n.end));
    }
    assert_eq!(by_slot.len(), 2 * 4, "2 NAT addresses with 4 ports each");
    for tenures in by_slot.values_mut() {
        tenures.sort();
        assert!(tenures.len() > 1, "NAT ports change hands");
        for w in tenures.windows(2) {
            assert!(w[0].1 <= w[1].0, "overlapping NAT tenures {w:?}");
        }
    }
    // Node, pod, load-balancer and NAT addresses are disjoint.
    let nodes: Vec<IpAddr> = world.hosts.iter().map(|h| h.ip).collect();
    let mut all: Vec<IpAddr> = nodes.clone();
    all.extend(by_ip.keys());
    all.extend(by_slot.keys().map(|k| k.0));
    all.sort();
    all.dedup();
    assert_eq!(all.len(), nodes.len() + by_ip.len() + 2);
}

#[test]
fn connections_stay_inside_both_lifetimes() {
    for s in [Scenario::steady(), Scenario::adversarial()] {
        let world = world(s);
        for c in &world.connections {
            assert!(c.start <= c.end);
            if let End::App(p) = c.client {
                let client = &world.pods[p];
                assert!(client.start <= c.start && c.end <= client.end);
                assert_eq!(client.ip, c.client_ip);
            }
            match c.server {
                End::App(p) | End::Sidecar(p) => {
                    let pod = &world.pods[p];
                    assert!(pod.start <= c.start && c.end <= pod.end);
                    assert_eq!(pod.ip, c.server_ip);
                }
                End::Lb(l) => assert!(world.lbs[l].start <= c.start && c.end <= world.lbs[l].end),
                End::Nat(n) => {
                    let nat = &world.nats[n];
                    assert!(nat.start <= c.start && c.end <= nat.end);
                    assert_eq!((nat.ip, nat.port), (c.server_ip, c.server_port));
                }
                End::HostNet(i) => {
                    let hs = &world.host_services[i];
                    assert_eq!((world.hosts[hs.host].ip, hs.port), (c.server_ip, c.server_port));
                }
                End::External | End::Nobody => {}
            }
        }
    }
}

#[test]
fn the_server_end_is_who_listens_on_the_port() {
    let world = world(Scenario::adversarial());
    let mut seen: HashMap<EndKind, usize> = HashMap::new();
    for c in &world.connections {
        *seen.entry(c.server_kind).or_default() += 1;
        match (c.server, c.outcome) {
            (End::App(p), Outcome::Established) => {
                assert_eq!(c.server_port, world.pods[p].app_port());
                assert_eq!(c.server_kind, world.kind(End::App(p)));
            }
            (End::Sidecar(p), Outcome::Established) => {
                assert_eq!(c.server_port, SIDECAR_PORT);
                assert!(world.pods[p].sidecar.is_some());
                assert_eq!(c.server_kind, EndKind::SharedNetns);
            }
            // A refused port of a pod alone on its address: the pod's kernel answered.
            (End::App(p), Outcome::Refused) => {
                assert!(world.pods[p].sidecar.is_none());
                assert_eq!(c.server_port, CLOSED_PORT + world.pods[p].service as u16);
            }
            // Nobody on a refused port of a shared address, or on a vacant one.
            (End::Nobody, Outcome::Refused) => {
                assert!(matches!(c.server_kind, EndKind::SharedNetns | EndKind::HostNetwork | EndKind::Nat))
            }
            (End::Nobody, Outcome::TimedOut) => {
                assert_eq!(c.server_kind, EndKind::Vacant);
                assert_eq!(OwnerIndex::new(&world.pods, &world.lbs).owner_at(c.server_ip, c.start), None);
            }
            (_, Outcome::Established) => {}
            other => panic!("unexpected {other:?}"),
        }
        if c.outcome != Outcome::Established {
            assert_eq!((c.start, c.bytes_up, c.bytes_down), (c.end, 0, 0), "a failed attempt has no duration");
        }
    }
    for kind in EndKind::ALL {
        assert!(seen.get(&kind).copied().unwrap_or(0) > 0, "adversarial connects to {kind:?} addresses: {seen:?}");
    }
}

#[test]
fn shared_addresses_and_connections_from_them() {
    let world = world(Scenario::adversarial());
    let with_sidecar = world.pods.iter().filter(|p| p.sidecar.is_some()).count();
    let share = with_sidecar as f64 / world.pods.len() as f64;
    assert!((0.2..0.4).contains(&share), "about 30% of the pods have a sidecar: {share}");
    assert_eq!(world.host_services.len(), 24 * 3);
    let mut ports: Vec<(usize, u16)> = world.host_services.iter().map(|h| (h.host, h.port)).collect();
    ports.sort();
    ports.dedup();
    assert_eq!(ports.len(), world.host_services.len(), "one hostNetwork workload per (node, port)");
    let from_nodes = world.connections.iter().filter(|c| matches!(c.client, End::HostNet(_))).count();
    let from_shared_pods =
        world.connections.iter().filter(|c| matches!(c.client, End::App(p) if world.pods[p].sidecar.is_some())).count();
    assert!(from_nodes > 1_000 && from_shared_pods > 1_000, "{from_nodes} {from_shared_pods}");
    for c in world.connections.iter().filter(|c| matches!(c.client, End::HostNet(_))) {
        assert!(c.client_port >= 32_768, "out of an ephemeral port");
        assert_eq!(world.kind(c.client), EndKind::HostNetwork);
    }
}

#[test]
fn long_connections_open_before_the_start() {
    let world = world(Scenario::steady());
    let open_at_start = world.connections.iter().filter(|c| c.start < T0 && c.end > T0).count();
    assert!(open_at_start > 100, "{open_at_start}");
    assert!(world.connections.iter().all(|c| c.start >= T0 - 480 * SEC));
}

#[test]
fn same_seed_same_world() {
    let (a, b) = (world(Scenario::adversarial()), world(Scenario::adversarial()));
    assert_eq!(format!("{:?}", a.connections), format!("{:?}", b.connections));
    assert_eq!(format!("{:?}", a.pods), format!("{:?}", b.pods));
    let mut other = Scenario::adversarial();
    other.seed = 3;
    assert_ne!(format!("{:?}", world(other).connections), format!("{:?}", a.connections));
}

#[test]
fn local_scopes_follow_sharing() {
    let world = world(Scenario::adversarial());
    for (i, p) in world.pods.iter().enumerate() {
        let (scope, source) = world.local_scope(End::App(i)).unwrap();
        if p.sidecar.is_none() {
            assert_eq!((scope, source), (Scope::Ip, WorkloadSource::IpAssignment));
        } else {
            assert_eq!((scope, source), (Scope::Port, WorkloadSource::CgroupRule));
            assert_eq!(world.local_scope(End::Sidecar(i)), Some((Scope::Port, WorkloadSource::CgroupRule)));
        }
    }
    assert_eq!(world.local_scope(End::HostNet(0)), Some((Scope::Port, WorkloadSource::CgroupRule)));
    assert_eq!(world.local_scope(End::Nat(0)), Some((Scope::Port, WorkloadSource::PortAssignment)));
    assert_eq!(world.local_scope(End::Lb(0)), None);
}

/// Regression: the destination class was drawn as a series of "r < fraction" tests that kept
/// subtracting, so an IPv6 client that drew the (IPv4-only) load-balancer class matched every
/// later class too and made stale-DNS calls, timing out, with a stale-DNS fraction of 0.
#[test]
fn destination_classes_are_drawn_once() {
    let s = Scenario { ipv6_fraction: 1.0, lb_fraction: 0.5, stale_dns_fraction: 0.0, ..Scenario::steady() };
    let world = world(s);
    assert!(world.pods.iter().all(|p| p.ip.is_ipv6()));
    let mut kinds: HashMap<EndKind, usize> = HashMap::new();
    for c in world.connections.iter().filter(|c| matches!(c.client, End::App(_))) {
        assert_eq!(c.outcome, Outcome::Established, "{c:?}");
        *kinds.entry(c.server_kind).or_default() += 1;
    }
    let calls: usize = kinds.values().sum();
    let external = kinds.get(&EndKind::External).copied().unwrap_or(0) as f64 / calls as f64;
    assert!((0.03..0.07).contains(&external), "5% external: {kinds:?}");
    assert!(!kinds.contains_key(&EndKind::LoadBalancer) && !kinds.contains_key(&EndKind::Vacant), "{kinds:?}");
}
