use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;

use flowmap_schema::{decode_batch, ip_from_bytes, Direction, ExporterBatch, Flow, Scope, WorkloadSource};

use super::*;
use crate::rng::Rng;
use crate::scenario::Scenario;
use crate::truth::{Condition, EndKind, RecordKey};
use crate::world::{v4, Connection, End, Host, Outcome, Pod, Service, MS, SEC, SIDECAR_PORT, T0};

/// Batch windows `(seq, from, to)` by (exporter id, incarnation).
type Runs = BTreeMap<(String, u64), Vec<(u64, u64, u64)>>;
/// Records `(incarnation, start, unobserved, window start)` by (exporter id, connection id).
type ByConnection<'a> = HashMap<(&'a str, u64), Vec<(u64, u64, bool, u64)>>;
/// A 4-tuple as the wire has it: local address and port, remote address and port.
type Tuple = (Vec<u8>, u32, Vec<u8>, u32);

/// Every decodable batch, once (by exporter id, incarnation and seq), in arrival order.
fn batches(sim: &Simulation) -> Vec<ExporterBatch> {
    let mut seen = HashSet::new();
    sim.deliveries
        .iter()
        .filter_map(|d| decode_batch(&d.payload).ok())
        .filter(|b| b.exporter_id != "rogue" && seen.insert((b.exporter_id.clone(), b.incarnation, b.seq)))
        .collect()
}

fn simulate(s: Scenario) -> (World, Simulation) {
    let checked = s.validate().unwrap();
    let world = crate::world::generate(&checked);
    let sim = publish(&checked, &world);
    (world, sim)
}

/// The adversarial fleet with a perfect transport (nothing lost, duplicated or corrupted), so
/// that what the exporters produced can be read back whole.
fn adversarial_exporters() -> Scenario {
    Scenario { loss: 0.0, duplicate: 0.0, corrupt: 0.0, bad_record: 0.0, ipam_loss: 0.0, ..Scenario::adversarial() }
}

/// One host, two pods alone on their addresses (client `a`, server `b`), and the given
/// connections between them; steady settings (10 s windows, no skew, no faults): the first
/// window is [T0 - 10 s, T0).
fn two_pods(connections: Vec<Connection>) -> (Checked, World) {
    let pod = |name: &str, i: usize| Pod {
        name: Arc::from(name),
        service: i,
        host: 0,
        ip: v4([10, 2], i + 1),
        start: T0 - 600 * SEC,
        end: T0 + 900 * SEC,
        sidecar: None,
    };
    let world = World {
        hosts: vec![Host { name: Arc::from("host-0000"), skew: 0, ip: v4([10, 1], 1) }],
        services: vec![Service { ipv6: false, deps: vec![1] }, Service { ipv6: false, deps: vec![] }],
        pods: vec![pod("a", 0), pod("b", 1)],
        connections,
        ..World::default()
    };
    (Scenario::steady().validate().unwrap(), world)
}

fn a_to_b(start: u64, end: u64, outcome: Outcome) -> Connection {
    Connection {
        client: End::App(0),
        client_ip: v4([10, 2], 1),
        client_port: 40_000,
        server: End::App(1),
        server_kind: EndKind::Pod,
        server_ip: v4([10, 2], 2),
        server_port: 8001,
        start,
        end,
        bytes_up: 1_000,
        bytes_down: 9_000,
        outcome,
    }
}

/// The flow records of one exporter, with the window of their batch.
fn flows_of(sim: &Simulation, exporter: &str) -> Vec<(u64, u64, Flow)> {
    batches(sim)
        .into_iter()
        .filter(|b| b.exporter_id == exporter)
        .flat_map(|b| {
            let (from, to) = (b.window_from_ns, b.window_to_ns);
            b.flows.into_iter().map(move |f| (from, to, f))
        })
        .collect()
}

#[test]
fn a_connection_spanning_three_windows_yields_two_slices_and_a_final_record() {
    let (s, world) = two_pods(vec![a_to_b(T0 + 5 * SEC, T0 + 25 * SEC, Outcome::Established)]);
    let sim = publish(&s, &world);
    let flows = flows_of(&sim, "host-0000");
    assert_eq!(flows.len(), 6, "three records for each side");
    for direction in [Direction::Client, Direction::Server] {
        let side: Vec<&(u64, u64, Flow)> = flows.iter().filter(|(_, _, f)| f.direction == direction as i32).collect();
        let ends: Vec<(u64, bool)> = side.iter().map(|(_, _, f)| (f.end_ns, f.open)).collect();
        assert_eq!(ends, vec![(T0 + 10 * SEC, true), (T0 + 20 * SEC, true), (T0 + 25 * SEC, false)]);
        let ids: HashSet<u64> = side.iter().map(|(_, _, f)| flowmap_schema::flow_id("host-0000", f)).collect();
        assert_eq!(ids.len(), 1, "one flow id for the slices and the final record");
        for (from, to, f) in &side {
            assert_eq!(f.start_ns, T0 + 5 * SEC);
            assert!(!f.start_unobserved);
            assert!(*from <= f.end_ns && (f.end_ns < *to || f.open && f.end_ns == *to), "inside its window");
        }
        let sent: Vec<u64> = side.iter().map(|(_, _, f)| f.bytes_sent).collect();
        assert!(sent[0] < sent[1] && sent[1] < sent[2], "counters so far grow: {sent:?}");
        assert_eq!(sent[2], if direction == Direction::Client { 1_000 } else { 9_000 });
    }
    // One truth entry per record, keyed as the job keys its output.
    assert_eq!(sim.truth.len(), 6);
    let keys: HashSet<RecordKey> = sim.truth.iter().map(TruthFlow::key).collect();
    for (_, _, f) in &flows {
        let key = RecordKey { id: flowmap_schema::flow_id("host-0000", f), end_ns: f.end_ns, open: f.open };
        assert!(keys.contains(&key));
    }
    let client = sim.truth.iter().find(|t| &*t.local == "a").unwrap();
    assert_eq!((client.remote.as_deref(), client.remote_kind), (Some("b"), EndKind::Pod));
    assert_eq!((sim.summary.records, sim.summary.open_slices), (6, 4));
}

#[test]
fn connections_older_than_the_exporter_are_reported_with_an_unobserved_start() {
    let (s, world) = two_pods(vec![a_to_b(T0 - 100 * SEC, T0 + 15 * SEC, Outcome::Established)]);
    let sim = publish(&s, &world);
    let first_window = T0 - 10 * SEC;
    let flows = flows_of(&sim, "host-0000");
    assert_eq!(flows.len(), 6, "slices at T0 and T0 + 10 s, the close at T0 + 15 s, for each side");
    for (_, _, f) in &flows {
        assert!(f.start_unobserved);
        assert_eq!(f.start_ns, first_window, "start = when the exporter first saw it");
        assert_eq!(f.direction, Direction::Unspecified as i32);
        assert!(f.connection_id != 0);
    }
    assert!(sim.truth.iter().all(|t| t.conditions.has(Condition::Preexisting)));
    assert_eq!(sim.summary.unobserved_starts, 6);
}

#[test]
fn a_failed_connect_is_one_client_record_with_its_error() {
    let (s, world) = two_pods(vec![
        a_to_b(T0 + 5 * SEC, T0 + 5 * SEC, Outcome::Refused),
        a_to_b(T0 + 7 * SEC, T0 + 7 * SEC, Outcome::TimedOut),
    ]);
    let sim = publish(&s, &world);
    let flows = flows_of(&sim, "host-0000");
    let errors: Vec<(u32, u64, u64, bool, i32)> =
        flows.iter().map(|(_, _, f)| (f.connect_error, f.start_ns, f.end_ns, f.open, f.direction)).collect();
    let client = Direction::Client as i32;
    assert_eq!(
        errors,
        vec![(111, T0 + 5 * SEC, T0 + 5 * SEC, false, client), (110, T0 + 7 * SEC, T0 + 7 * SEC, false, client)]
    );
    assert!(sim.truth.iter().all(|t| t.conditions.has(Condition::FailedConnect)));
    assert_eq!(sim.summary.failed_connects, 2);
}

#[test]
fn heartbeats_claim_whole_addresses_only_when_unshared() {
    let (world, sim) = simulate(Scenario::adversarial());
    let nodes: HashSet<IpAddr> = world.hosts.iter().map(|h| h.ip).collect();
    let pods: HashMap<&str, &Pod> = world.pods.iter().map(|p| (&*p.name, p)).collect();
    let sidecars: HashMap<&str, &Pod> =
        world.pods.iter().filter_map(|p| p.sidecar.as_deref().map(|name| (name, p))).collect();
    let host_net: HashMap<&str, (IpAddr, u16)> =
        world.host_services.iter().map(|h| (&*h.name, (world.hosts[h.host].ip, h.port))).collect();
    let nat: HashMap<&str, (IpAddr, u16)> = world.nats.iter().map(|n| (&*n.name, (n.ip, n.port))).collect();
    let mut by_kind: BTreeMap<&str, usize> = BTreeMap::new();
    for b in batches(&sim).iter().filter(|b| b.exporter_id != IPAM_FEED) {
        for h in &b.heartbeats {
            let ip = ip_from_bytes(&h.ip).unwrap();
            let port = h.port as u16;
            assert!(b.window_from_ns <= h.from_ns && h.from_ns < h.to_ns && h.to_ns <= b.window_to_ns);
            let kind = if let Some(p) = pods.get(h.workload.as_str()) {
                assert_eq!(ip, p.ip);
                if p.sidecar.is_none() {
                    assert_eq!(port, 0, "a pod alone on its address claims all of it");
                    "pod"
                } else {
                    assert_eq!(port, p.app_port(), "an app sharing its address claims its port");
                    "app"
                }
            } else if let Some(p) = sidecars.get(h.workload.as_str()) {
                assert_eq!((ip, port), (p.ip, SIDECAR_PORT));
                "sidecar"
            } else if let Some(&slot) = host_net.get(h.workload.as_str()) {
                assert_eq!((ip, port), slot, "a hostNetwork listener claims its port of the node address");
                "host_network"
            } else {
                assert_eq!(Some(&(ip, port)), nat.get(h.workload.as_str()), "{h:?}");
                "nat"
            };
            assert!(!(nodes.contains(&ip) && port == 0), "no whole-IP heartbeat for a node address");
            *by_kind.entry(kind).or_default() += 1;
        }
    }
    assert_eq!(by_kind.len(), 5, "every kind of claim: {by_kind:?}");
}

#[test]
fn flows_state_the_scope_and_source_of_their_local_workload() {
    let (world, sim) = simulate(adversarial_exporters());
    let mut kinds: HashMap<&str, End> = HashMap::new();
    for (i, p) in world.pods.iter().enumerate() {
        kinds.insert(&p.name, End::App(i));
        if let Some(s) = &p.sidecar {
            kinds.insert(s, End::Sidecar(i));
        }
    }
    for (i, h) in world.host_services.iter().enumerate() {
        kinds.insert(&h.name, End::HostNet(i));
    }
    for (i, n) in world.nats.iter().enumerate() {
        kinds.insert(&n.name, End::Nat(i));
    }
    let mut seen: HashSet<(i32, i32)> = HashSet::new();
    for b in batches(&sim) {
        for f in &b.flows {
            let end = kinds[f.local_workload.as_str()];
            let (scope, source) = world.local_scope(end).unwrap();
            assert_eq!((f.local_scope, f.local_source), (scope as i32, source as i32), "{}", f.local_workload);
            if f.local_scope == Scope::Ip as i32 {
                assert_eq!(world.kind(end), EndKind::Pod, "SCOPE_IP only for an address of its own");
            }
            seen.insert((f.local_scope, f.local_source));
        }
    }
    let expected: HashSet<(i32, i32)> = [
        (Scope::Ip, WorkloadSource::IpAssignment),
        (Scope::Port, WorkloadSource::CgroupRule),
        (Scope::Port, WorkloadSource::PortAssignment),
    ]
    .into_iter()
    .map(|(s, w)| (s as i32, w as i32))
    .collect();
    assert_eq!(seen, expected);
}

#[test]
fn restarted_exporters_start_a_new_incarnation_from_seq_0() {
    let (_, sim) = simulate(adversarial_exporters());
    let mut runs: Runs = BTreeMap::new();
    for b in batches(&sim).iter().filter(|b| b.exporter_id != IPAM_FEED) {
        runs.entry((b.exporter_id.clone(), b.incarnation)).or_default().push((b.seq, b.window_from_ns, b.window_to_ns));
        assert_ne!(b.incarnation, 0, "every batch states its incarnation");
    }
    let mut by_id: BTreeMap<&str, Vec<(u64, u64)>> = BTreeMap::new();
    for ((id, _), windows) in &mut runs {
        windows.sort();
        assert_eq!(windows[0].0, 0, "seq starts at 0 in every incarnation");
        for (i, w) in windows.windows(2).enumerate() {
            assert_eq!(w[1].0, i as u64 + 1, "seq without gaps");
            assert_eq!(w[0].2, w[1].1, "contiguous windows");
        }
        by_id.entry(id).or_default().push((windows[0].1, windows.last().unwrap().2));
    }
    let (mut restarted, mut duplicated) = (0, 0);
    for spans in by_id.values_mut().filter(|s| s.len() > 1) {
        assert_eq!(spans.len(), 2);
        spans.sort();
        if spans[0].1 <= spans[1].0 {
            restarted += 1; // one after the other
        } else {
            duplicated += 1; // both live at once: two hosts with one id
        }
    }
    assert_eq!((restarted, duplicated), (4, 1));
    assert_eq!(sim.summary.exporter_restarts, 4);
    assert_eq!(sim.summary.duplicated_exporter_ids, 1);
    assert_eq!(sim.roster.len(), 23, "24 hosts, one id shared, the late assignment feed not expected");
}

#[test]
fn connections_keep_their_id_and_start_across_a_restart() {
    let (_, sim) = simulate(adversarial_exporters());
    let all = batches(&sim);
    // (exporter, connection id) -> (incarnation, start, unobserved)
    let mut seen: ByConnection<'_> = HashMap::new();
    let mut first_window: HashMap<(&str, u64), u64> = HashMap::new();
    for b in &all {
        let first = first_window.entry((b.exporter_id.as_str(), b.incarnation)).or_insert(u64::MAX);
        *first = (*first).min(b.window_from_ns);
        for f in &b.flows {
            seen.entry((b.exporter_id.as_str(), f.connection_id)).or_default().push((
                b.incarnation,
                f.start_ns,
                f.start_unobserved,
                b.window_from_ns,
            ));
        }
    }
    let (mut across, mut began_while_down) = (0, 0);
    for records in seen.values() {
        let incarnations: HashSet<u64> = records.iter().map(|r| r.0).collect();
        let starts: HashSet<(u64, bool)> = records.iter().map(|r| (r.1, r.2)).collect();
        if incarnations.len() > 1 {
            across += 1;
            assert_eq!(starts.len(), 1, "one start across the restart: {records:?}");
        }
    }
    for ((exporter, _), records) in &seen {
        for &(incarnation, start, unobserved, _) in records {
            let up = first_window[&(*exporter, incarnation)];
            if unobserved {
                assert_eq!(start, up, "an unobserved start is when the exporter came up");
                if up > T0 {
                    began_while_down += 1;
                }
            } else {
                assert!(start >= up || records.iter().any(|r| r.0 != incarnation), "an observed start");
            }
        }
    }
    assert!(across > 10, "connections open across restarts: {across}");
    assert!(began_while_down > 0, "connections that began while an exporter was down");
    let restart_records = sim.truth.iter().filter(|t| t.conditions.has(Condition::ExporterRestart)).count();
    assert!(restart_records >= across);
}

#[test]
fn every_record_has_truth_and_every_truth_entry_a_record() {
    let (_, sim) = simulate(Scenario::adversarial());
    let mut truth: HashMap<RecordKey, &TruthFlow> = HashMap::new();
    for t in &sim.truth {
        assert!(truth.insert(t.key(), t).is_none(), "record keys are unique: {t:?}");
    }
    let mut delivered: HashSet<RecordKey> = HashSet::new();
    for b in batches(&sim).iter().filter(|b| b.exporter_id != IPAM_FEED) {
        let ids = flowmap_schema::FlowIdHasher::new(&b.exporter_id);
        for f in &b.flows {
            let key = RecordKey { id: ids.connection(f.connection_id), end_ns: f.end_ns, open: f.open };
            let t = truth.get(&key).unwrap_or_else(|| panic!("no truth for {f:?}"));
            assert_eq!(t.incarnation, b.incarnation);
            assert_eq!(t.local.as_ref(), f.local_workload);
            let corrupt = ip_from_bytes(&f.remote_ip).is_none();
            assert_eq!(t.fate, if corrupt { Fate::Corrupted } else { Fate::Delivered });
            delivered.insert(key);
        }
    }
    for t in &sim.truth {
        assert_eq!(delivered.contains(&t.key()), t.fate != Fate::Lost, "{t:?}");
    }
    assert_eq!(sim.summary.records, sim.truth.len() as u64);
    assert!(sim.truth.iter().any(|t| t.fate == Fate::Lost) && sim.truth.iter().any(|t| t.fate == Fate::Corrupted));
}

#[test]
fn every_flow_record_keeps_its_windows_promise() {
    let (_, sim) = simulate(Scenario::adversarial());
    for b in batches(&sim) {
        for f in &b.flows {
            assert!(f.start_ns <= f.end_ns);
            if f.open {
                assert_eq!(f.end_ns, b.window_to_ns, "a slice ends at its window's end");
            } else {
                assert!(b.window_from_ns <= f.end_ns && f.end_ns < b.window_to_ns, "closed inside its window");
            }
            if f.connect_error != 0 {
                assert_eq!((f.start_ns, f.open), (f.end_ns, false));
            }
        }
        for a in &b.assignments {
            assert!(b.window_from_ns <= a.at_ns && a.at_ns < b.window_to_ns);
        }
    }
}

#[test]
fn both_ends_of_a_connection_mirror_each_other() {
    let (_, sim) = simulate(Scenario::steady());
    // Server records by 4-tuple: (start, end) of each connection that used it.
    let mut by_tuple: HashMap<Tuple, Vec<(u64, u64)>> = HashMap::new();
    let all = batches(&sim);
    for f in all.iter().flat_map(|b| &b.flows).filter(|f| f.direction == Direction::Server as i32 && !f.open) {
        let key = (f.local_ip.clone(), f.local_port, f.remote_ip.clone(), f.remote_port);
        by_tuple.entry(key).or_default().push((f.start_ns, f.end_ns));
    }
    for spans in by_tuple.values_mut() {
        spans.sort();
        for w in spans.windows(2) {
            assert!(w[0].1 + 60 * SEC <= w[1].0, "a 4-tuple is reused only after TIME_WAIT: {w:?}");
        }
    }
    let mut mirrored = 0;
    for f in all.iter().flat_map(|b| &b.flows).filter(|f| f.direction == Direction::Client as i32 && !f.open) {
        let key = (f.remote_ip.clone(), f.remote_port, f.local_ip.clone(), f.local_port);
        if let Some(spans) = by_tuple.get(&key) {
            assert!(spans.contains(&(f.start_ns, f.end_ns)), "no skew in steady: the same start and end");
            mirrored += 1;
        }
    }
    assert!(mirrored > 100_000, "{mirrored}");
}

#[test]
fn the_same_scenario_gives_the_same_simulation() {
    let (_, a) = simulate(Scenario::adversarial());
    let (_, b) = simulate(Scenario::adversarial());
    assert_eq!(a.deliveries, b.deliveries);
    assert_eq!(a.truth, b.truth);
    assert_eq!(a.roster, b.roster);
}

#[test]
fn steady_is_fault_free() {
    let (_, sim) = simulate(Scenario::steady());
    let s = &sim.summary;
    assert_eq!(
        (s.failed_connects, s.batches_lost, s.exporter_restarts, s.duplicated_exporter_ids, s.sides_unseen),
        (0, 0, 0, 0, 0)
    );
    assert_eq!((s.ipam_batches_lost, s.ipam_late_batches, s.ipam_silent_windows), (0, 0, 0));
    assert!(s.open_slices > 10_000 && s.unobserved_starts > 1_000, "{s:?}");
    assert!(sim.truth.iter().all(|t| t.fate == Fate::Delivered));
    let conditions: HashSet<Condition> = sim.truth.iter().flat_map(|t| t.conditions.iter()).collect();
    assert_eq!(conditions, [Condition::Preexisting].into_iter().collect());
    assert!(sim.roster.iter().any(|r| r == IPAM_FEED));
}

/// The assignment feed's batches, by incarnation, in seq order.
fn ipam_runs(sim: &Simulation) -> Vec<Vec<ExporterBatch>> {
    let mut runs: Vec<(u64, Vec<ExporterBatch>)> = Vec::new();
    for b in batches(sim).into_iter().filter(|b| b.exporter_id == IPAM_FEED) {
        match runs.iter_mut().find(|(inc, _)| *inc == b.incarnation) {
            Some((_, run)) => run.push(b),
            None => runs.push((b.incarnation, vec![b])),
        }
    }
    runs.into_iter()
        .map(|(_, mut run)| {
            run.sort_by_key(|b| b.seq);
            run
        })
        .collect()
}

#[test]
fn ipam_loss_cuts_the_feeds_seq() {
    let (_, sim) = simulate(Scenario { ipam_loss: 0.3, ..Scenario::steady() });
    let runs = ipam_runs(&sim);
    assert_eq!(runs.len(), 1);
    let window = 10_000 * MS;
    let mut gaps = 0;
    for w in runs[0].windows(2) {
        let missing = w[1].seq - w[0].seq - 1;
        assert_eq!(w[1].window_from_ns - w[0].window_to_ns, missing * window, "windows skip what seq skips");
        gaps += missing;
    }
    // Lost at the start and at the end (the feed's last window covers the end of the run).
    let leading = runs[0][0].seq;
    let last = runs[0].last().unwrap().window_to_ns;
    let trailing = (T0 + 610 * SEC).saturating_sub(last).div_ceil(window);
    assert_eq!(leading + gaps + trailing, sim.summary.ipam_batches_lost);
    assert!(gaps > 20, "{gaps}");
}

#[test]
fn a_silent_feed_comes_back_as_a_new_incarnation_restating_its_assignments() {
    let (world, sim) = simulate(Scenario { ipam_silences: 1, ipam_silence_ms: 120_000, ..Scenario::steady() });
    let runs = ipam_runs(&sim);
    assert_eq!(runs.len(), 2);
    let (before, after) = (runs[0].last().unwrap(), &runs[1][0]);
    assert_eq!(after.seq, 0);
    assert_eq!(after.window_from_ns - before.window_to_ns, 12 * 10_000 * MS, "12 windows never published");
    let restated: Vec<_> = after.assignments.iter().filter(|a| a.at_ns == after.window_from_ns).collect();
    let held = world
        .pods
        .iter()
        .filter(|p| p.sidecar.is_none())
        .map(|p| (p.start, p.end))
        .chain(world.lbs.iter().map(|l| (l.start, l.end)))
        .filter(|&(start, end)| start < after.window_from_ns && after.window_from_ns < end)
        .count();
    assert_eq!(restated.len(), held, "every current assignment restated");
    assert_eq!(sim.summary.ipam_silent_windows, 12);
}

#[test]
fn a_late_feed_arrives_behind_the_exporters_and_is_not_expected() {
    let late = 60_000 * MS;
    let (_, sim) = simulate(Scenario { ipam_late_start_ms: 60_000, ..Scenario::steady() });
    let first = sim.deliveries.iter().position(|d| d.key == IPAM_FEED).unwrap();
    assert!(sim.deliveries[first].arrival >= T0 + late);
    let exporter_progress = sim.deliveries[..first]
        .iter()
        .filter_map(|d| decode_batch(&d.payload).ok())
        .map(|b| b.window_to_ns)
        .max()
        .unwrap();
    let feed_first = decode_batch(&sim.deliveries[first].payload).unwrap();
    assert!(feed_first.window_to_ns < exporter_progress, "its first batch is behind the others' promises");
    assert!(!sim.roster.iter().any(|r| r == IPAM_FEED));
    assert!(sim.summary.ipam_late_batches > 60);
}

#[test]
fn assignment_faults_mark_the_load_balancer_flows_they_touch() {
    let (_, sim) = simulate(Scenario::adversarial());
    let mut lb = 0;
    let mut touched = 0;
    for t in &sim.truth {
        if t.conditions.has(Condition::IpamFault) {
            assert_eq!(t.remote_kind, EndKind::LoadBalancer);
            touched += 1;
        }
        lb += u64::from(t.remote_kind == EndKind::LoadBalancer);
    }
    assert!(touched > 1_000 && touched < lb, "{touched} of {lb}");
}

#[test]
fn a_duplicated_exporter_id_gives_distinct_flow_ids() {
    let (_, sim) = simulate(adversarial_exporters());
    let duplicated: Vec<&TruthFlow> = sim.truth.iter().filter(|t| t.conditions.has(Condition::DuplicatedId)).collect();
    let incarnations: HashSet<u64> = duplicated.iter().map(|t| t.incarnation).collect();
    assert_eq!(incarnations.len(), 2, "two live incarnations of one id");
    assert!(duplicated.len() > 1_000);
}

#[test]
fn records_around_a_restart() {
    use super::exporters::{ExporterPlan, Incarnation, Timing};
    let conn = |start: u64, end: u64| a_to_b(T0 + start * SEC, T0 + end * SEC, Outcome::Established);
    // The exporter stops at T0 + 12 s and is back at T0 + 20 s.
    let (s, world) = two_pods(vec![conn(5, 35), conn(14, 25), conn(13, 18), conn(8, 16)]);
    let timing = Timing::new(&s);
    let plans = vec![ExporterPlan {
        id: Arc::from("host-0000"),
        duplicated: false,
        skew: 0,
        incarnations: vec![
            Incarnation { id: 1, up: T0 - 10 * SEC, down: Some(T0 + 12 * SEC) },
            Incarnation { id: 2, up: T0 + 20 * SEC, down: None },
        ],
    }];
    let ipam = super::ipam::IpamPlan::new(&s, &world, &mut Rng::new(1), &timing);
    let mut out = records::empty(&plans, &timing);
    let mut summary = Summary::default();
    records::emit_all(&world, &plans, &ipam, &timing, &mut Rng::new(1), &mut out, &mut summary);
    // (incarnation, start, end, open, unobserved) of the client side of each connection.
    let mut client: Vec<(u64, u64, u64, bool, bool)> = Vec::new();
    for (inc, windows) in out[0].iter().enumerate() {
        for (k, records) in windows.iter().enumerate() {
            let (from, to) = plans[0].incarnations[inc].window(k as u64, &timing);
            for r in records.iter().filter(|r| r.flow.local_workload == "a") {
                let f = &r.flow;
                assert!(from <= f.end_ns && f.end_ns <= to);
                assert_eq!(r.truth.incarnation, inc as u64 + 1);
                assert!(r.truth.conditions.has(Condition::ExporterRestart), "every one of these spans the restart");
                client.push((
                    inc as u64 + 1,
                    (f.start_ns - T0) / SEC,
                    (f.end_ns - T0) / SEC,
                    f.open,
                    f.start_unobserved,
                ));
            }
        }
    }
    client.sort();
    assert_eq!(
        client,
        vec![
            (1, 5, 10, true, false), // open across the restart: slices up to the stop ...
            (1, 5, 12, true, false), // ... the last one at the stop (a short last window)
            (1, 8, 10, true, false), // closed while the exporter was down: no final record
            (1, 8, 12, true, false),
            (2, 5, 30, true, false),  // ... and after it, with the same start
            (2, 5, 35, false, false), // and its final record
            (2, 20, 25, false, true), // began while down: start = when the exporter came back
        ]
    );
    // The connection that began and ended while the exporter was down has no record.
    assert_eq!((summary.sides_unseen, summary.finals_unseen), (2, 2), "both sides of each");
    let ids: HashSet<u64> =
        out[0].iter().flatten().flatten().filter(|r| r.truth.local.as_ref() == "a").map(|r| r.truth.id).collect();
    assert_eq!(ids.len(), 3, "one flow id per connection seen, across incarnations");
}

/// Claims as a job reads them: per (address, port) (port 0: the whole address), the ranges
/// `[from, to)` (an exporter's clock) and the workload.
type ClaimIndex = HashMap<(IpAddr, u32), Vec<(u64, u64, String)>>;

/// Whatever evidence names someone unambiguously for a record names the true remote end: the
/// exporters' heartbeats (the exact (address, port), or the whole address when nothing claims a
/// port of it), the whole-address claims of `SCOPE_IP` flows, the other end's own record of the
/// connection (mirrored 4-tuple, start within the band), and the address manager's
/// assignments. A sound job can therefore never be led to a wrong owner by this data.
#[test]
fn published_evidence_never_contradicts_the_truth() {
    evidence_agrees_with_truth(Scenario::steady());
    evidence_agrees_with_truth(adversarial_exporters());
}

fn evidence_agrees_with_truth(scenario: Scenario) {
    let band = 2 * SEC;
    let (_, sim) = simulate(scenario);
    let all = batches(&sim);
    let truth: HashMap<RecordKey, &TruthFlow> = sim.truth.iter().map(|t| (t.key(), t)).collect();
    let mut claims: ClaimIndex = HashMap::new();
    let mut ports_claimed: HashMap<IpAddr, Vec<(u64, u64)>> = HashMap::new();
    let mut ends: HashMap<Tuple, Vec<(u64, String)>> = HashMap::new();
    // (at, workload, incarnation), and how far each incarnation of the feed vouched.
    let mut assignments: HashMap<IpAddr, Vec<(u64, String, u64)>> = HashMap::new();
    let mut vouched: HashMap<u64, u64> = HashMap::new();
    for b in &all {
        for h in &b.heartbeats {
            let ip = ip_from_bytes(&h.ip).unwrap();
            claims.entry((ip, h.port)).or_default().push((h.from_ns, h.to_ns, h.workload.clone()));
            if h.port != 0 {
                ports_claimed.entry(ip).or_default().push((h.from_ns, h.to_ns));
            }
        }
        for f in &b.flows {
            let tuple = (f.local_ip.clone(), f.local_port, f.remote_ip.clone(), f.remote_port);
            ends.entry(tuple).or_default().push((f.start_ns, f.local_workload.clone()));
            if f.local_scope == Scope::Ip as i32 {
                let ip = ip_from_bytes(&f.local_ip).unwrap();
                claims.entry((ip, 0)).or_default().push((f.start_ns, f.end_ns + 1, f.local_workload.clone()));
            }
        }
        for a in &b.assignments {
            let entry = (a.at_ns, a.workload.clone(), b.incarnation);
            assignments.entry(ip_from_bytes(&a.ip).unwrap()).or_default().push(entry);
        }
        if b.exporter_id == IPAM_FEED {
            let until = vouched.entry(b.incarnation).or_default();
            *until = (*until).max(b.window_to_ns);
        }
    }
    for list in assignments.values_mut() {
        list.sort();
    }
    for list in claims.values_mut() {
        list.sort();
    }
    // The workloads whose claims overlap [lo, hi), and whether the claims cover all of it.
    let overlapping = |list: Option<&Vec<(u64, u64, String)>>, lo: u64, hi: u64| -> (HashSet<String>, bool) {
        let mut covered = lo;
        let mut names = HashSet::new();
        for (from, to, workload) in list.into_iter().flatten().filter(|(from, to, _)| *from < hi && lo < *to) {
            names.insert(workload.clone());
            if *from <= covered {
                covered = covered.max(*to);
            }
        }
        (names, covered >= hi)
    };
    let (mut checked, mut by_peer, mut by_assignment) = (0, 0, 0);
    for b in all.iter().filter(|b| b.exporter_id != IPAM_FEED) {
        let ids = flowmap_schema::FlowIdHasher::new(&b.exporter_id);
        for f in &b.flows {
            let t = truth[&RecordKey { id: ids.connection(f.connection_id), end_ns: f.end_ns, open: f.open }];
            let ip = ip_from_bytes(&f.remote_ip).unwrap();
            let (lo, hi) = (f.start_ns.saturating_sub(band), f.start_ns + band);
            let (mut named, mut covered) = overlapping(claims.get(&(ip, f.remote_port)), lo, hi);
            let shared = ports_claimed.get(&ip).into_iter().flatten().any(|&(from, to)| from < hi && lo < to);
            if named.is_empty() && !shared {
                (named, covered) = overlapping(claims.get(&(ip, 0)), lo, hi);
            }
            if named.len() == 1 && covered {
                assert_eq!(t.remote.as_deref(), named.iter().next().map(String::as_str), "{f:?}");
                checked += 1;
            }
            let mirrored = (f.remote_ip.clone(), f.remote_port, f.local_ip.clone(), f.local_port);
            for (start, workload) in ends.get(&mirrored).into_iter().flatten() {
                if start.abs_diff(f.start_ns) <= band && !f.start_unobserved {
                    assert_eq!(t.remote.as_deref(), Some(workload.as_str()), "peer of {f:?}");
                    by_peer += 1;
                }
            }
            // The address manager: the last statement before the band, unchanged through it,
            // by an incarnation of the feed that vouched past the band (an outage cuts it; this
            // transport loses nothing).
            if let Some(list) = assignments.get(&ip) {
                let before = list.partition_point(|a| a.0 <= lo);
                let within = list.partition_point(|a| a.0 < hi);
                if let Some((_, workload, incarnation)) = before.checked_sub(1).map(|i| &list[i]) {
                    let steady = list[before..within].iter().all(|a| a.1 == *workload);
                    if steady && !workload.is_empty() && vouched[incarnation] >= hi {
                        assert_eq!(t.remote.as_deref(), Some(workload.as_str()), "assignment for {f:?}");
                        by_assignment += 1;
                    }
                }
            }
        }
    }
    assert!(checked > 200_000 && by_peer > 100_000 && by_assignment > 100_000, "{checked} {by_peer} {by_assignment}");
}
