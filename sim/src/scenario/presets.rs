//! The built-in scenarios. `configs/scenarios/steady.toml` and `adversarial.toml` hold the same
//! values (a test compares them field by field).

use super::Scenario;

/// No faults: modest churn, small delays, synchronized clocks, nothing lost, nothing restarted.
///
/// It still has what every fleet has, none of it a fault: shared addresses (2 hostNetwork
/// workloads per node, a sidecar in 20% of the pods, one NAT address with 4 ports), connections
/// open across batch windows (open slices) and long-lived connections older than the exporters
/// (reported with `start_unobserved`). Every exporter states the proper scope for them.
pub fn steady() -> Scenario {
    Scenario {
        name: "steady".into(),
        seed: 1,
        duration_s: 600,
        hosts: 24,
        services: 30,
        replicas_min: 2,
        replicas_max: 6,
        ipv6_fraction: 0.2,
        pod_lifetime_mean_s: 300.0,
        restart_delay_max_ms: 3_000,
        ip_pool_slack: 16,
        reuse_delay_ms: 30_000,
        ready_delay_ms: 5_000,
        drain_ms: 5_000,
        load_balancers: 4,
        lb_move_mean_s: 300.0,
        flows_per_pod_per_s: 2.0,
        long_flow_fraction: 0.02,
        external_fraction: 0.05,
        lb_fraction: 0.1,
        stale_dns_fraction: 0.0,
        host_network_services: 2,
        host_network_flows_per_s: 0.2,
        host_network_fraction: 0.02,
        sidecar_fraction: 0.2,
        sidecar_call_fraction: 0.2,
        nat_addresses: 1,
        nat_ports: 4,
        nat_move_mean_s: 600.0,
        nat_fraction: 0.02,
        refused_fraction: 0.0,
        window_ms: 10_000,
        skew_max_ms: 0,
        delay_min_ms: 100,
        delay_max_ms: 1_000,
        jitter_ms: 200,
        ipam_delay_ms: 500,
        loss: 0.0,
        duplicate: 0.0,
        corrupt: 0.0,
        bad_record: 0.0,
        ipam_loss: 0.0,
        ipam_late_start_ms: 0,
        ipam_silences: 0,
        ipam_silence_ms: 0,
        exporter_restarts: 0,
        exporter_downtime_max_ms: 0,
        duplicated_exporter_ids: 0,
    }
}

/// The faults of a real fleet, over 10 simulated minutes, 24 hosts and 30 services:
///
/// - **Address churn**: pods live 60 s on average and their addresses are reused after 1 s
///   (two spare addresses per pool), load balancers move every 60 s on average.
/// - **Transport**: exporter delays from 0.5 s to 3 min plus up to 5 s of jitter (so
///   exporters are reordered against each other), 2% of batches lost, 2% duplicated, 0.5%
///   also delivered truncated, 0.1% of records with an invalid address; clock skew up to
///   +-500 ms (inside the job's 2 s guard band); garbage, future and unknown-version batches.
/// - **Stale DNS**: 5% of connections go to the address of a pod that ended in the last 30 s;
///   they reach whoever holds it now, or time out (110) when nobody does.
/// - **Shared addresses**: 3 hostNetwork workloads per node (typical node daemons), each
///   connecting out every 2 s on average (0.5/s) and receiving 3% of the IPv4 services'
///   connections; a sidecar in 30% of the pods (a mesh being rolled out), receiving 20% of the
///   connections to those pods on its own port; 2 NAT addresses with 4 ports each, whose
///   workloads change every 2 minutes on average, receiving 3% of the connections.
/// - **Failed connects**: 0.5% of connections refused (111) on a port nothing listens on.
/// - **Assignment feed**: 2% of its batches lost (the same rate as the exporters'); it reaches
///   the transport 90 s late (its first batches arrive behind every exporter's progress); one
///   3-minute outage, during which the load balancers change hands about three times each,
///   after which it restates the current assignments as a new incarnation.
/// - **Exporters**: 4 of the 24 exporters restart once (a rolling upgrade reaching a sixth of
///   the hosts in 10 minutes), each down for up to 20 s; one pair of hosts shares an exporter
///   id (a cloned machine image).
pub fn adversarial() -> Scenario {
    Scenario {
        name: "adversarial".into(),
        seed: 2,
        pod_lifetime_mean_s: 60.0,
        restart_delay_max_ms: 1_000,
        ip_pool_slack: 2,
        reuse_delay_ms: 1_000,
        ready_delay_ms: 500,
        drain_ms: 0,
        lb_move_mean_s: 60.0,
        stale_dns_fraction: 0.05,
        host_network_services: 3,
        host_network_flows_per_s: 0.5,
        host_network_fraction: 0.03,
        sidecar_fraction: 0.3,
        sidecar_call_fraction: 0.2,
        nat_addresses: 2,
        nat_ports: 4,
        nat_move_mean_s: 120.0,
        nat_fraction: 0.03,
        refused_fraction: 0.005,
        skew_max_ms: 500,
        delay_min_ms: 500,
        delay_max_ms: 180_000,
        jitter_ms: 5_000,
        ipam_delay_ms: 30_000,
        loss: 0.02,
        duplicate: 0.02,
        corrupt: 0.005,
        bad_record: 0.001,
        ipam_loss: 0.02,
        ipam_late_start_ms: 90_000,
        ipam_silences: 1,
        ipam_silence_ms: 180_000,
        exporter_restarts: 4,
        exporter_downtime_max_ms: 20_000,
        duplicated_exporter_ids: 1,
        ..steady()
    }
}
