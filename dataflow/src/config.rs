//! Configuration of the attribution job: a raw serde form, validated into [`JobConfig`].
//!
//! Durations carry their unit (`"2s"`, `"15m"`). Unknown fields are errors, so a typo does
//! not silently fall back to a default.

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::cidr::Cidr;

/// The settings file as written (see `configs/job.toml`).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawJobConfig {
    /// Clock-skew guard band: an owner must hold the remote IP for this long on both sides of
    /// the flow's start. Set it above the largest clock difference between two hosts.
    #[serde(with = "humantime_serde", default = "defaults::guard")]
    pub guard: Duration,
    /// How long ownership evidence is kept after it ends. Flows reported later than this after
    /// they started are left unattributed (`evidence_expired`).
    #[serde(with = "humantime_serde", default = "defaults::retention")]
    pub retention: Duration,
    /// Granularity of dataflow timestamps. Coarser ticks mean fewer progress messages and a
    /// little more latency; they never change a verdict's correctness.
    #[serde(with = "humantime_serde", default = "defaults::tick")]
    pub tick: Duration,
    /// The longest batch window accepted; longer batches are rejected.
    #[serde(with = "humantime_serde", default = "defaults::max_window")]
    pub max_window: Duration,
    /// How far ahead of the receiver's clock a batch window may start before the batch is
    /// rejected as "from the future".
    #[serde(with = "humantime_serde", default = "defaults::max_future")]
    pub max_future: Duration,
    /// Address blocks of the fleet; remote IPs outside them are `external`.
    #[serde(default = "defaults::fleet_cidrs")]
    pub fleet_cidrs: Vec<Cidr>,
    /// Flows looked up per operator activation, at most.
    #[serde(default = "defaults::fuel")]
    pub fuel: usize,
    /// Live Kafka input only: an exporter (or a partition) silent for this long (wall clock)
    /// stops holding the event-time frontier back; its later batches are late (counted, and
    /// attributed only where that is still safe). Replays never use it: they are deterministic.
    #[serde(with = "humantime_serde", default = "defaults::idle_timeout")]
    pub idle_timeout: Duration,
    /// Kafka input only: on restart, how much input before the committed offsets (in event
    /// time) is re-read to rebuild the ownership state. Keep it at least `retention`.
    #[serde(with = "humantime_serde", default = "defaults::rebuild_window")]
    pub rebuild_window: Duration,
    /// Dependency edges and change events.
    #[serde(default)]
    pub edges: RawEdgesConfig,
}

/// The `[edges]` section: dependency edges and change events.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawEdgesConfig {
    /// Length of an edge's time bucket.
    #[serde(with = "humantime_serde", default = "defaults::bucket")]
    pub bucket: Duration,
    /// External IPv4 addresses are grouped by this prefix length into one node.
    #[serde(default = "defaults::v4_prefix")]
    pub external_v4_prefix: u8,
    /// External IPv6 addresses are grouped by this prefix length into one node.
    #[serde(default = "defaults::v6_prefix")]
    pub external_v6_prefix: u8,
    /// An edge (client, server, port) not seen for this long is a `new_dependency` again.
    #[serde(with = "humantime_serde", default = "defaults::lookback")]
    pub new_dependency_lookback: Duration,
}

impl Default for RawEdgesConfig {
    fn default() -> Self {
        RawEdgesConfig {
            bucket: defaults::bucket(),
            external_v4_prefix: defaults::v4_prefix(),
            external_v6_prefix: defaults::v6_prefix(),
            new_dependency_lookback: defaults::lookback(),
        }
    }
}

/// Validated edge settings (see [`RawEdgesConfig`]), in nanoseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EdgesConfig {
    bucket: u64,
    v4_prefix: u8,
    v6_prefix: u8,
    lookback: u64,
}

impl EdgesConfig {
    /// Bucket length, ns (at least a second, whole seconds).
    pub fn bucket(&self) -> u64 {
        self.bucket
    }
    /// Prefix length grouping external IPv4 addresses (0 to 32).
    pub fn v4_prefix(&self) -> u8 {
        self.v4_prefix
    }
    /// Prefix length grouping external IPv6 addresses (0 to 128).
    pub fn v6_prefix(&self) -> u8 {
        self.v6_prefix
    }
    /// The new-dependency lookback, ns (at least a bucket).
    pub fn lookback(&self) -> u64 {
        self.lookback
    }
}

mod defaults {
    use super::*;
    pub fn guard() -> Duration {
        Duration::from_secs(2)
    }
    pub fn retention() -> Duration {
        Duration::from_secs(15 * 60)
    }
    pub fn tick() -> Duration {
        Duration::from_millis(500)
    }
    pub fn max_window() -> Duration {
        Duration::from_secs(60)
    }
    pub fn max_future() -> Duration {
        Duration::from_secs(5 * 60)
    }
    pub fn fleet_cidrs() -> Vec<Cidr> {
        ["10.0.0.0/8", "fd00::/8"].iter().filter_map(|c| c.parse().ok()).collect()
    }
    pub const fn fuel() -> usize {
        1 << 20
    }
    pub fn idle_timeout() -> Duration {
        Duration::from_secs(60)
    }
    pub fn rebuild_window() -> Duration {
        Duration::from_secs(15 * 60)
    }
    pub fn bucket() -> Duration {
        Duration::from_secs(60)
    }
    pub const fn v4_prefix() -> u8 {
        24
    }
    pub const fn v6_prefix() -> u8 {
        48
    }
    pub fn lookback() -> Duration {
        Duration::from_secs(7 * 24 * 3600)
    }
}

impl Default for RawJobConfig {
    fn default() -> Self {
        RawJobConfig {
            guard: defaults::guard(),
            retention: defaults::retention(),
            tick: defaults::tick(),
            max_window: defaults::max_window(),
            max_future: defaults::max_future(),
            fleet_cidrs: defaults::fleet_cidrs(),
            fuel: defaults::fuel(),
            idle_timeout: defaults::idle_timeout(),
            rebuild_window: defaults::rebuild_window(),
            edges: RawEdgesConfig::default(),
        }
    }
}

/// A configuration that failed to load or validate.
#[derive(Debug, thiserror::Error)]
pub enum JobConfigError {
    /// The file could not be read.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema.
    #[error("invalid config {path}")]
    Parse {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: Box<toml::de::Error>,
    },
    /// A setting is out of range.
    #[error("invalid setting `{field}`: {why}")]
    Invalid {
        /// The setting.
        field: &'static str,
        /// What is wrong.
        why: String,
    },
}

/// A validated job configuration, in nanoseconds. Its fields are read through methods, so a
/// value that passed validation cannot be changed into one that would not (a zero tick, a
/// retention shorter than the guard band); change a [`RawJobConfig`] and validate it again.
#[derive(Clone, Debug)]
pub struct JobConfig {
    guard: u64,
    retention: u64,
    tick: u64,
    max_window: u64,
    max_future: u64,
    fleet_cidrs: Vec<Cidr>,
    fuel: usize,
    idle_timeout: Duration,
    rebuild_window: u64,
    edges: EdgesConfig,
}

impl JobConfig {
    /// Edge settings.
    pub fn edges(&self) -> &EdgesConfig {
        &self.edges
    }
    /// Clock-skew guard band, ns: an owner must hold `[t - guard, t + guard]` alone.
    pub fn guard(&self) -> u64 {
        self.guard
    }
    /// How long evidence is kept after it ends, ns.
    pub fn retention(&self) -> u64 {
        self.retention
    }
    /// Timestamp granularity, ns (at least 1).
    pub fn tick(&self) -> u64 {
        self.tick
    }
    /// Longest accepted batch window, ns.
    pub fn max_window(&self) -> u64 {
        self.max_window
    }
    /// Largest accepted lead of a window start over the receiver's clock, ns.
    pub fn max_future(&self) -> u64 {
        self.max_future
    }
    /// Fleet address blocks.
    pub fn fleet_cidrs(&self) -> &[Cidr] {
        &self.fleet_cidrs
    }
    /// Flow records looked up per operator activation, at most (at least 1).
    pub fn fuel(&self) -> usize {
        self.fuel
    }
    /// Wall-clock silence after which a live exporter stops holding the frontier.
    pub fn idle_timeout(&self) -> Duration {
        self.idle_timeout
    }
    /// Event time re-read before the committed offsets on restart, ns.
    pub fn rebuild_window(&self) -> u64 {
        self.rebuild_window
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl TryFrom<RawJobConfig> for JobConfig {
    type Error = JobConfigError;

    fn try_from(raw: RawJobConfig) -> Result<Self, JobConfigError> {
        let invalid = |field, why: &str| JobConfigError::Invalid { field, why: why.to_string() };
        if raw.tick.is_zero() {
            return Err(invalid("tick", "must be positive"));
        }
        if raw.max_window.is_zero() {
            return Err(invalid("max_window", "must be positive"));
        }
        if raw.retention <= raw.guard * 2 + raw.max_window {
            return Err(invalid(
                "retention",
                "must exceed 2 x guard + max_window, or no flow could be looked up in time",
            ));
        }
        if raw.fleet_cidrs.is_empty() {
            return Err(invalid("fleet_cidrs", "must name at least one block (every remote would be external)"));
        }
        if raw.fuel == 0 {
            return Err(invalid("fuel", "must be positive"));
        }
        if raw.idle_timeout.is_zero() {
            return Err(invalid("idle_timeout", "must be positive"));
        }
        let e = &raw.edges;
        if e.bucket < Duration::from_secs(1)
            || e.bucket.subsec_nanos() != 0
            || e.bucket > Duration::from_secs(24 * 3600)
        {
            return Err(invalid("edges.bucket", "must be whole seconds, between 1 s and 24 h"));
        }
        if e.external_v4_prefix > 32 {
            return Err(invalid("edges.external_v4_prefix", "must be at most 32"));
        }
        if e.external_v6_prefix > 128 {
            return Err(invalid("edges.external_v6_prefix", "must be at most 128"));
        }
        if e.new_dependency_lookback < e.bucket {
            return Err(invalid("edges.new_dependency_lookback", "must be at least one bucket"));
        }
        Ok(JobConfig {
            guard: nanos(raw.guard),
            retention: nanos(raw.retention),
            tick: nanos(raw.tick),
            max_window: nanos(raw.max_window),
            max_future: nanos(raw.max_future),
            fleet_cidrs: raw.fleet_cidrs,
            fuel: raw.fuel,
            idle_timeout: raw.idle_timeout,
            rebuild_window: nanos(raw.rebuild_window),
            edges: EdgesConfig {
                bucket: nanos(raw.edges.bucket),
                v4_prefix: raw.edges.external_v4_prefix,
                v6_prefix: raw.edges.external_v6_prefix,
                lookback: nanos(raw.edges.new_dependency_lookback),
            },
        })
    }
}

impl JobConfig {
    /// Loads and validates a TOML file.
    pub fn load(path: &Path) -> Result<Self, JobConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| JobConfigError::Read { path: path.display().to_string(), source })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses and validates TOML text (`origin` names it in errors).
    pub fn parse(text: &str, origin: &str) -> Result<Self, JobConfigError> {
        let raw: RawJobConfig = toml::from_str(text)
            .map_err(|source| JobConfigError::Parse { path: origin.to_string(), source: Box::new(source) })?;
        raw.try_into()
    }

    /// Whether a remote address belongs to the fleet.
    pub fn in_fleet(&self, ip: flowmap_operators::Ip) -> bool {
        self.fleet_cidrs.iter().any(|c| c.contains(ip))
    }
}

impl Default for JobConfig {
    fn default() -> Self {
        // The defaults are valid by construction; the test below proves it.
        RawJobConfig::default().try_into().unwrap_or_else(|e| unreachable!("default config invalid: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::chain;

    #[test]
    fn defaults_are_valid() {
        let c: JobConfig = RawJobConfig::default().try_into().unwrap();
        assert_eq!(c.guard, 2_000_000_000);
    }

    #[test]
    fn parses_durations_and_rejects_unknown_fields() {
        let c = JobConfig::parse("guard = \"3s\"\nretention = \"20m\"\nfleet_cidrs = [\"10.0.0.0/8\"]", "t").unwrap();
        assert_eq!(c.guard, 3_000_000_000);
        assert_eq!(c.retention, 1_200_000_000_000);
        let err = chain(&JobConfig::parse("gaurd = \"3s\"", "t").unwrap_err());
        assert!(err.contains("gaurd"), "{err}");
        let err = chain(&JobConfig::parse("fleet_cidrs = [\"10.0.0.1/8\"]", "t").unwrap_err());
        assert!(err.contains("host bits"), "{err}");
    }

    #[test]
    fn rejects_out_of_range() {
        for (text, field) in [
            ("tick = \"0s\"", "tick"),
            ("retention = \"10s\"", "retention"),
            ("fleet_cidrs = []", "fleet_cidrs"),
            ("fuel = 0", "fuel"),
            ("idle_timeout = \"0s\"", "idle_timeout"),
            ("[edges]\nbucket = \"500ms\"", "edges.bucket"),
            ("[edges]\nexternal_v4_prefix = 33", "edges.external_v4_prefix"),
        ] {
            let err = chain(&JobConfig::parse(text, "t").unwrap_err());
            assert!(err.contains(field), "{text}: {err}");
        }
    }
}
