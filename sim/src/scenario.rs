//! Scenario settings: the fleet, its churn, its traffic and the faults of its transport.
//!
//! Two built-in scenarios, `steady` and `adversarial`, and any TOML file with the same fields
//! (see `configs/scenarios/`). Durations are plain integers with their unit in the name.

use serde::{Deserialize, Serialize};

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
    /// Hosts, each running one exporter.
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
    /// Fraction of connections that are long-lived (1 to 8 minutes).
    pub long_flow_fraction: f64,
    /// Fraction of connections to addresses outside the fleet.
    pub external_fraction: f64,
    /// Fraction of connections through a load balancer (IPv4 services).
    pub lb_fraction: f64,
    /// Fraction of connections to a stale address from a DNS cache (a pod that has ended; the
    /// connection reaches whoever holds the address now).
    pub stale_dns_fraction: f64,
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
}

/// A scenario that cannot be simulated.
#[derive(Debug, thiserror::Error)]
#[error("invalid scenario setting `{field}`: {why}")]
pub struct ScenarioError {
    /// The setting.
    pub field: &'static str,
    /// What is wrong.
    pub why: String,
}

impl Scenario {
    /// No faults: modest churn, small delays, synchronized clocks.
    pub fn steady() -> Self {
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
        }
    }

    /// The faults of a real fleet: IP reuse within seconds, delays of minutes, lost and
    /// duplicated batches, reordering, clock skew inside the guard band, stale DNS, bad input.
    pub fn adversarial() -> Self {
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
            skew_max_ms: 500,
            delay_min_ms: 500,
            delay_max_ms: 180_000,
            jitter_ms: 5_000,
            ipam_delay_ms: 30_000,
            loss: 0.02,
            duplicate: 0.02,
            corrupt: 0.005,
            bad_record: 0.001,
            ..Scenario::steady()
        }
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
    pub fn validate(&self) -> Result<(), ScenarioError> {
        let bad = |field, why: &str| Err(ScenarioError { field, why: why.to_string() });
        let fractions = [
            ("ipv6_fraction", self.ipv6_fraction),
            ("long_flow_fraction", self.long_flow_fraction),
            ("external_fraction", self.external_fraction),
            ("lb_fraction", self.lb_fraction),
            ("stale_dns_fraction", self.stale_dns_fraction),
            ("loss", self.loss),
            ("duplicate", self.duplicate),
            ("corrupt", self.corrupt),
            ("bad_record", self.bad_record),
        ];
        for (field, value) in fractions {
            if !(0.0..=1.0).contains(&value) {
                return bad(field, "must be between 0 and 1");
            }
        }
        if self.external_fraction + self.lb_fraction + self.stale_dns_fraction > 1.0 {
            return bad("external_fraction", "external + lb + stale_dns fractions exceed 1");
        }
        if self.duration_s == 0 || self.duration_s > 7 * 24 * 3600 {
            return bad("duration_s", "must be between 1 s and a week");
        }
        if self.hosts == 0 || self.hosts > 100_000 {
            return bad("hosts", "must be between 1 and 100000");
        }
        if self.services < 2 {
            return bad("services", "must be at least 2 (services call each other)");
        }
        if self.replicas_min == 0 || self.replicas_min > self.replicas_max || self.replicas_max > 1_000 {
            return bad("replicas_min", "need 1 <= replicas_min <= replicas_max <= 1000");
        }
        if self.services * self.replicas_max + self.ip_pool_slack > 60_000 {
            return bad("services", "more pod slots than the 10.2.0.0/16 pool holds");
        }
        if self.pod_lifetime_mean_s.is_nan()
            || self.lb_move_mean_s.is_nan()
            || self.pod_lifetime_mean_s < 1.0
            || self.lb_move_mean_s < 1.0
        {
            return bad("pod_lifetime_mean_s", "lifetimes must be at least 1 s");
        }
        if !(self.flows_per_pod_per_s > 0.0 && self.flows_per_pod_per_s <= 10_000.0) {
            return bad("flows_per_pod_per_s", "must be in (0, 10000]");
        }
        if self.window_ms == 0 || self.window_ms > 60_000 {
            return bad("window_ms", "must be between 1 ms and 60 s");
        }
        if self.delay_min_ms > self.delay_max_ms {
            return bad("delay_min_ms", "must not exceed delay_max_ms");
        }
        if self.load_balancers > 250 {
            return bad("load_balancers", "at most 250");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins_are_valid() {
        for name in ["steady", "adversarial"] {
            Scenario::builtin(name).unwrap().validate().unwrap();
        }
        assert!(Scenario::builtin("nope").is_none());
    }

    #[test]
    fn invalid_settings_are_named() {
        let mut s = Scenario::steady();
        s.loss = 1.5;
        assert_eq!(s.validate().unwrap_err().field, "loss");
        let mut s = Scenario::steady();
        s.replicas_min = 9;
        assert_eq!(s.validate().unwrap_err().field, "replicas_min");
        let mut s = Scenario::steady();
        s.window_ms = 0;
        assert_eq!(s.validate().unwrap_err().field, "window_ms");
    }
}
