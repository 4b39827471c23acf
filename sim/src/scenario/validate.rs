//! The checks a scenario must pass before anything is generated, each failure naming its
//! setting. The limits are those of the address plan (pods in 10.2.0.0/16, nodes in
//! 10.1.0.0/16, load balancers in 10.200.0.0/24, NAT addresses in 10.201.0.0/24; listener
//! ports below the ephemeral range) and of what the generator can do in reasonable time.

use super::Scenario;

/// A scenario that cannot be simulated.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ScenarioError {
    /// A probability or fraction outside [0, 1] (or not a number).
    #[error("invalid scenario setting `{field}` = {value}: must be a fraction between 0 and 1")]
    NotAFraction {
        /// The setting.
        field: &'static str,
        /// Its value.
        value: f64,
    },
    /// A value outside its allowed range (or not a number).
    #[error("invalid scenario setting `{field}` = {value}: must be between {min} and {max}")]
    OutOfRange {
        /// The setting.
        field: &'static str,
        /// Its value.
        value: f64,
        /// Least allowed.
        min: f64,
        /// Most allowed.
        max: f64,
    },
    /// A value that must not exceed another setting's.
    #[error("invalid scenario setting `{field}` = {value}: must not exceed `{limit_field}` = {limit}")]
    Exceeds {
        /// The setting.
        field: &'static str,
        /// Its value.
        value: f64,
        /// The setting that bounds it.
        limit_field: &'static str,
        /// That setting's value (or the bound derived from it).
        limit: f64,
    },
    /// The fractions of connections sent to each kind of destination add up to more than 1.
    #[error(
        "invalid scenario setting `external_fraction`: external + lb + stale_dns + host_network + nat + refused \
         fractions add up to {sum}, more than 1"
    )]
    DestinationsExceedOne {
        /// Their sum.
        sum: f64,
    },
}

impl ScenarioError {
    /// The setting at fault.
    pub fn field(&self) -> &'static str {
        match self {
            ScenarioError::NotAFraction { field, .. }
            | ScenarioError::OutOfRange { field, .. }
            | ScenarioError::Exceeds { field, .. } => field,
            ScenarioError::DestinationsExceedOne { .. } => "external_fraction",
        }
    }
}

/// Largest number of hosts (node addresses 10.1.0.1 up).
const MAX_HOSTS: usize = 60_000;
/// Most pod slots plus spare addresses (the 10.2.0.0/16 pool).
const MAX_POOL: usize = 60_000;
/// Most hostNetwork workloads per host (ports 9100 up, below the sidecar port).
const MAX_HOST_NETWORK: usize = 64;
/// Most ports per NAT address (ports 30000 up, below the ephemeral range).
const MAX_NAT_PORTS: usize = 2_000;

fn range(field: &'static str, value: f64, min: f64, max: f64) -> Result<(), ScenarioError> {
    // Written so that NaN fails.
    if value >= min && value <= max {
        Ok(())
    } else {
        Err(ScenarioError::OutOfRange { field, value, min, max })
    }
}

fn count(field: &'static str, value: usize, min: usize, max: usize) -> Result<(), ScenarioError> {
    range(field, value as f64, min as f64, max as f64)
}

fn at_most(field: &'static str, value: f64, limit_field: &'static str, limit: f64) -> Result<(), ScenarioError> {
    if value <= limit {
        Ok(())
    } else {
        Err(ScenarioError::Exceeds { field, value, limit_field, limit })
    }
}

/// Checks every setting of `s`.
pub(super) fn check(s: &Scenario) -> Result<(), ScenarioError> {
    let fractions = [
        ("ipv6_fraction", s.ipv6_fraction),
        ("long_flow_fraction", s.long_flow_fraction),
        ("external_fraction", s.external_fraction),
        ("lb_fraction", s.lb_fraction),
        ("stale_dns_fraction", s.stale_dns_fraction),
        ("host_network_fraction", s.host_network_fraction),
        ("sidecar_fraction", s.sidecar_fraction),
        ("sidecar_call_fraction", s.sidecar_call_fraction),
        ("nat_fraction", s.nat_fraction),
        ("refused_fraction", s.refused_fraction),
        ("loss", s.loss),
        ("duplicate", s.duplicate),
        ("corrupt", s.corrupt),
        ("bad_record", s.bad_record),
        ("ipam_loss", s.ipam_loss),
    ];
    for (field, value) in fractions {
        if !(0.0..=1.0).contains(&value) {
            return Err(ScenarioError::NotAFraction { field, value });
        }
    }
    let sum = s.external_fraction
        + s.lb_fraction
        + s.stale_dns_fraction
        + s.host_network_fraction
        + s.nat_fraction
        + s.refused_fraction;
    if sum > 1.0 {
        return Err(ScenarioError::DestinationsExceedOne { sum });
    }
    range("duration_s", s.duration_s as f64, 1.0, 7.0 * 24.0 * 3600.0)?;
    count("hosts", s.hosts, 1, MAX_HOSTS)?;
    count("services", s.services, 2, 1_000)?;
    count("replicas_max", s.replicas_max, 1, 1_000)?;
    count("replicas_min", s.replicas_min, 1, 1_000)?;
    at_most("replicas_min", s.replicas_min as f64, "replicas_max", s.replicas_max as f64)?;
    at_most(
        "services",
        (s.services * s.replicas_max + s.ip_pool_slack) as f64,
        "the pod address pool (10.2.0.0/16)",
        MAX_POOL as f64,
    )?;
    range("pod_lifetime_mean_s", s.pod_lifetime_mean_s, 1.0, 1e9)?;
    range("lb_move_mean_s", s.lb_move_mean_s, 1.0, 1e9)?;
    range("nat_move_mean_s", s.nat_move_mean_s, 1.0, 1e9)?;
    range("flows_per_pod_per_s", s.flows_per_pod_per_s, f64::MIN_POSITIVE, 10_000.0)?;
    range("host_network_flows_per_s", s.host_network_flows_per_s, 0.0, 10_000.0)?;
    count("host_network_services", s.host_network_services, 0, MAX_HOST_NETWORK)?;
    count("load_balancers", s.load_balancers, 0, 250)?;
    count("nat_addresses", s.nat_addresses, 0, 250)?;
    count("nat_ports", s.nat_ports, 1, MAX_NAT_PORTS)?;
    range("window_ms", s.window_ms as f64, 1.0, 60_000.0)?;
    at_most("delay_min_ms", s.delay_min_ms as f64, "delay_max_ms", s.delay_max_ms as f64)?;
    range("delay_max_ms", s.delay_max_ms as f64, 0.0, 3_600_000.0)?;
    range("skew_max_ms", s.skew_max_ms as f64, 0.0, 3_600_000.0)?;
    range("ipam_late_start_ms", s.ipam_late_start_ms as f64, 0.0, 1000.0 * s.duration_s as f64)?;
    count("ipam_silences", s.ipam_silences, 0, 100)?;
    if s.ipam_silences > 0 {
        range("ipam_silence_ms", s.ipam_silence_ms as f64, s.window_ms as f64, 24.0 * 3_600_000.0)?;
        // The outages, one after the other, must fit in the run.
        at_most(
            "ipam_silence_ms",
            (s.ipam_silences as u64 * s.ipam_silence_ms) as f64,
            "duration_s",
            1000.0 * s.duration_s as f64,
        )?;
    }
    range("exporter_downtime_max_ms", s.exporter_downtime_max_ms as f64, 0.0, 3_600_000.0)?;
    at_most("duplicated_exporter_ids", (2 * s.duplicated_exporter_ids) as f64, "hosts", s.hosts as f64)?;
    // Restarts and shared ids fall on distinct hosts.
    at_most(
        "exporter_restarts",
        s.exporter_restarts as f64,
        "hosts - 2 x duplicated_exporter_ids",
        (s.hosts - 2 * s.duplicated_exporter_ids) as f64,
    )?;
    Ok(())
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
        type Change = Box<dyn Fn(&mut Scenario)>;
        let cases: Vec<(&str, Change)> = vec![
            ("loss", Box::new(|s| s.loss = 1.5)),
            ("ipam_loss", Box::new(|s| s.ipam_loss = -0.1)),
            ("sidecar_fraction", Box::new(|s| s.sidecar_fraction = f64::NAN)),
            ("replicas_min", Box::new(|s| s.replicas_min = 9)),
            ("window_ms", Box::new(|s| s.window_ms = 0)),
            ("external_fraction", Box::new(|s| s.nat_fraction = 0.9)),
            ("nat_move_mean_s", Box::new(|s| s.nat_move_mean_s = 0.5)),
            ("flows_per_pod_per_s", Box::new(|s| s.flows_per_pod_per_s = 0.0)),
            ("host_network_services", Box::new(|s| s.host_network_services = 65)),
            ("nat_ports", Box::new(|s| s.nat_ports = 0)),
            ("exporter_restarts", Box::new(|s| s.exporter_restarts = s.hosts + 1)),
            ("exporter_restarts", Box::new(|s| s.exporter_restarts = s.hosts - 1)),
            ("duplicated_exporter_ids", Box::new(|s| s.duplicated_exporter_ids = s.hosts / 2 + 1)),
            (
                "ipam_silence_ms",
                Box::new(|s| {
                    s.ipam_silences = 1;
                    s.ipam_silence_ms = s.window_ms - 1;
                }),
            ),
            (
                "ipam_silence_ms",
                Box::new(|s| {
                    s.ipam_silences = 4;
                    s.ipam_silence_ms = s.duration_s * 1000 / 3;
                }),
            ),
            ("ipam_late_start_ms", Box::new(|s| s.ipam_late_start_ms = s.duration_s * 1000 + 1)),
            ("pod_lifetime_mean_s", Box::new(|s| s.pod_lifetime_mean_s = f64::INFINITY)),
        ];
        for (field, change) in cases {
            let mut s = Scenario::adversarial();
            change(&mut s);
            let err = s.validate().unwrap_err();
            assert_eq!(err.field(), field, "{err}");
            assert!(err.to_string().contains(field), "the message names the setting: {err}");
        }
    }

    #[test]
    fn edges_are_accepted() {
        let mut s = Scenario::steady();
        s.hosts = 3;
        s.duplicated_exporter_ids = 1;
        s.exporter_restarts = 1;
        s.loss = 1.0;
        s.external_fraction = 1.0;
        s.lb_fraction = 0.0;
        s.host_network_fraction = 0.0;
        s.nat_fraction = 0.0;
        s.host_network_services = 0;
        s.nat_addresses = 0;
        s.load_balancers = 0;
        s.validate().unwrap();
    }
}
