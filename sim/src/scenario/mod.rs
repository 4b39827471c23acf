//! Scenario settings: the fleet, its churn, its traffic, its shared addresses and the faults of
//! its exporters, its address manager and its transport.
//!
//! Two built-in scenarios, `steady` and `adversarial` ([`presets`]), and any TOML file with the
//! same fields (see `configs/scenarios/`, kept identical to the built-ins by a test). Settings
//! are parsed raw ([`Scenario`]: every field required, unknown fields refused) and checked once
//! ([`Scenario::validate`]) into a [`Checked`] scenario, the only form the generator takes.
//! Durations are plain integers with their unit in the name.
//!
//! # Layout
//! - [`Scenario`]: the raw settings.
//! - [`presets`]: `steady` and `adversarial`, with the rates of their hazards explained.
//! - [`validate`]: the checks, and [`ScenarioError`], which names the setting at fault.

use std::ops::Deref;

use serde::{Deserialize, Serialize};

pub mod presets;
pub mod validate;

pub use validate::ScenarioError;

/// Everything that shapes a simulated fleet.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Name shown in reports.
    pub name: String,
    /// Seed of the generator: the same scenario and seed give the same fleet.
    pub seed: u64,
    /// Simulated time during which flows start, seconds.
    pub duration_s: u64,
    /// Hosts, each with one node address and one exporter.
    pub hosts: usize,
    /// Services; each has `replicas_min..=replicas_max` pod slots.
    pub services: usize,
    /// Fewest replicas of a service.
    pub replicas_min: usize,
    /// Most replicas of a service.
    pub replicas_max: usize,
    /// Fraction of services whose pods have IPv6 addresses (the rest IPv4).
    pub ipv6_fraction: f64,
    /// Mean pod lifetime, seconds (exponential).
    pub pod_lifetime_mean_s: f64,
    /// Longest pause before a replacement pod starts, milliseconds.
    pub restart_delay_max_ms: u64,
    /// Free addresses in each pool beyond one per pod slot (fewer means faster reuse).
    pub ip_pool_slack: usize,
    /// How long a released pod address stays unused before it can be handed out again, ms.
    pub reuse_delay_ms: u64,
    /// How long after start a pod begins receiving connections, ms.
    pub ready_delay_ms: u64,
    /// How long before it ends a pod stops receiving new connections, ms.
    pub drain_ms: u64,
    /// Load-balancer addresses (IPv4), known only from assignment events.
    pub load_balancers: usize,
    /// Mean time a load balancer keeps its address before it moves to a new one, seconds.
    pub lb_move_mean_s: f64,
    /// New connections per pod per second.
    pub flows_per_pod_per_s: f64,
    /// Fraction of connections that are long-lived (1 to 8 minutes). Long-lived connections
    /// also open before the simulation starts, so exporters find some already open.
    pub long_flow_fraction: f64,
    /// Fraction of connections to addresses outside the fleet.
    pub external_fraction: f64,
    /// Fraction of connections through a load balancer (IPv4 services).
    pub lb_fraction: f64,
    /// Fraction of connections to a stale address from a DNS cache (a pod that has ended; the
    /// connection reaches whoever holds the address now, or times out when nobody does).
    pub stale_dns_fraction: f64,
    /// hostNetwork workloads per host: each listens on its own port of the node's address
    /// (which the host and all of them share) and connects out from ephemeral ports.
    pub host_network_services: usize,
    /// New outbound connections per hostNetwork workload per second (to pods).
    pub host_network_flows_per_s: f64,
    /// Fraction of connections (IPv4 services) to a hostNetwork listener on some node.
    pub host_network_fraction: f64,
    /// Fraction of pods with a sidecar container in their network namespace (the pod address
    /// is then shared: the app and the sidecar each listen on their own port).
    pub sidecar_fraction: f64,
    /// Of the connections to a pod with a sidecar, the fraction addressed to the sidecar's port.
    pub sidecar_call_fraction: f64,
    /// Shared NAT addresses (IPv4), each on a gateway host whose exporter knows its workloads
    /// by per-(IP, port) assignments.
    pub nat_addresses: usize,
    /// Ports (one workload each at a time) per NAT address.
    pub nat_ports: usize,
    /// Mean time a workload keeps its NAT port before another workload gets it, seconds.
    pub nat_move_mean_s: f64,
    /// Fraction of connections (IPv4 services) to a NAT (address, port).
    pub nat_fraction: f64,
    /// Fraction of connections refused (111): addressed to a dependency's address on a port
    /// nothing listens on (a stale port in a client's configuration).
    pub refused_fraction: f64,
    /// Exporter batch interval, ms.
    pub window_ms: u64,
    /// Largest absolute clock error of a host, ms.
    pub skew_max_ms: u64,
    /// Least per-exporter delivery delay, ms.
    pub delay_min_ms: u64,
    /// Largest per-exporter delivery delay, ms.
    pub delay_max_ms: u64,
    /// Extra random delay per batch, up to this, ms.
    pub jitter_ms: u64,
    /// Delivery delay of the assignment-event feed, ms.
    pub ipam_delay_ms: u64,
    /// Probability that a batch is lost in transit.
    pub loss: f64,
    /// Probability that a batch is delivered twice.
    pub duplicate: f64,
    /// Probability that a truncated copy of a batch is delivered besides it.
    pub corrupt: f64,
    /// Probability that a flow record carries an invalid address (the exporter's bug).
    pub bad_record: f64,
    /// Probability that an assignment-feed batch is lost (a gap in the feed's `seq`).
    pub ipam_loss: f64,
    /// The assignment feed reaches the transport this long after the simulation starts: its
    /// first batches arrive together, behind the other sources' progress (0: on time). A feed
    /// that starts late is not on the job's roster of expected sources.
    pub ipam_late_start_ms: u64,
    /// Outages of the assignment feed: it stops publishing, and comes back as a new
    /// incarnation whose first batch restates every current assignment; what changed while it
    /// was away is never published.
    pub ipam_silences: usize,
    /// Length of each assignment-feed outage, ms.
    pub ipam_silence_ms: u64,
    /// Exporters that restart once during the run (distinct hosts, none of them sharing an
    /// id): the new run has a new incarnation and numbers its batches from 0.
    pub exporter_restarts: usize,
    /// Longest time a restarting exporter stays down, ms (uniform from 0).
    pub exporter_downtime_max_ms: u64,
    /// Pairs of hosts whose exporters share one id (a cloned image): two live incarnations of
    /// one exporter id.
    pub duplicated_exporter_ids: usize,
}

/// A scenario whose settings passed [`Scenario::validate`]: the generator takes only this.
#[derive(Clone, Debug, PartialEq)]
pub struct Checked(Scenario);

impl Deref for Checked {
    type Target = Scenario;

    fn deref(&self) -> &Scenario {
        &self.0
    }
}

impl Checked {
    /// The settings.
    pub fn scenario(&self) -> &Scenario {
        &self.0
    }
}

impl Scenario {
    /// No faults: modest churn, small delays, synchronized clocks; shared addresses, open
    /// slices and connections older than the exporters, as any fleet has (see [`presets`]).
    pub fn steady() -> Self {
        presets::steady()
    }

    /// The faults of a real fleet, at the rates documented in [`presets::adversarial`].
    pub fn adversarial() -> Self {
        presets::adversarial()
    }

    /// A built-in scenario by name.
    pub fn builtin(name: &str) -> Option<Self> {
        match name {
            "steady" => Some(Self::steady()),
            "adversarial" => Some(Self::adversarial()),
            _ => None,
        }
    }

    /// Checks every setting.
    ///
    /// # Errors
    /// [`ScenarioError`] naming the first setting that is out of range or inconsistent.
    pub fn validate(&self) -> Result<Checked, ScenarioError> {
        validate::check(self)?;
        Ok(Checked(self.clone()))
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    /// The files in `configs/scenarios/` parse, validate, and equal the built-ins they name
    /// (the same check as the job's `every_file_in_configs_loads`, here so that the simulator
    /// crate keeps them in step on its own).
    #[test]
    fn scenario_files_match_the_builtins() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/scenarios");
        let mut builtins = 0;
        let mut files = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            let scenario: Scenario = toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            scenario.validate().unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            if let Some(builtin) = Scenario::builtin(&scenario.name) {
                assert_eq!(builtin, scenario, "{} matches the built-in", path.display());
                builtins += 1;
            }
            files += 1;
        }
        assert_eq!(builtins, 2, "steady.toml and adversarial.toml");
        assert!(files >= 3);
    }

    #[test]
    fn unknown_and_missing_fields_are_refused() {
        let text = toml::to_string(&Scenario::steady()).unwrap();
        let extra = format!("{text}\nbogus = 1\n");
        assert!(toml::from_str::<Scenario>(&extra).unwrap_err().to_string().contains("bogus"));
        let missing: String = text.lines().filter(|l| !l.starts_with("nat_ports")).map(|l| format!("{l}\n")).collect();
        assert!(toml::from_str::<Scenario>(&missing).unwrap_err().to_string().contains("nat_ports"));
    }
}
