//! The exporter's settings: a raw serde form (`configs/exporter.toml`), validated into
//! [`ExporterConfig`]. Flags override the file; SIGHUP re-reads the file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use flowmap_kafka::ProducerSettings;
use serde::{Deserialize, Serialize};

/// The settings file as written.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawExporterConfig {
    /// Identity of this exporter in its batches (default: the host name).
    pub exporter_id: Option<String>,
    /// How often a batch is emitted.
    #[serde(default, with = "humantime_serde::option")]
    pub batch_interval: Option<Duration>,
    /// Where batches go: `stdout` (JSON lines), `file:PATH` (JSON lines), or
    /// `kafka://HOST:PORT/TOPIC` (Protobuf batches keyed by exporter id).
    pub sink: Option<String>,
    /// The host's own workload: flows of sockets in the host's network namespace that
    /// nothing more specific attributes, and heartbeats for the host's own addresses.
    pub host_workload: Option<String>,
    /// A file whose first line is the host's workload (used when `host_workload` is unset).
    pub identity_file: Option<PathBuf>,
    /// cgroup rules, first match wins: `{ pattern = "/system.slice/nginx*", workload = "web" }`.
    #[serde(default)]
    pub cgroup_rules: Vec<CgroupRule>,
    /// The local control socket for `flowmap-exporter assign/unassign`.
    pub control_socket: Option<PathBuf>,
    /// Prometheus metrics on this address (loopback only); `"off"` disables.
    pub metrics: Option<String>,
    /// Ring buffer size in bytes (a power of two, a multiple of the page size).
    pub ringbuf_bytes: Option<u32>,
    /// Kafka producer settings (queue bounds and policy; the default policy drops, counted).
    pub producer: Option<ProducerSettings>,
    /// A bpffs directory where the open-connection map is pinned, so a restarted exporter
    /// keeps the start and direction of the connections its previous run saw (default
    /// `/sys/fs/bpf/flowmap`); `"off"` disables. When pinning is not possible the exporter
    /// says so (log and metric) and reports such connections with an unobserved start.
    pub pin_dir: Option<String>,
    /// How long a local IP stays *shared* after the last sign that sockets on it belong to
    /// more than one workload (default 10m). A shared IP gets no whole-IP heartbeat, and the
    /// flows on it claim only their port.
    #[serde(default, with = "humantime_serde::option")]
    pub shared_ip_hold: Option<Duration>,
}

/// One cgroup rule: a cgroup v2 path pattern (`*` matches any run of characters) and the
/// workload of the sockets created in matching cgroups.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CgroupRule {
    /// Path below the cgroup2 mount, starting with `/`.
    pub pattern: String,
    /// The workload.
    pub workload: String,
}

/// Where batches go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SinkSpec {
    /// JSON lines on stdout.
    Stdout,
    /// JSON lines appended to a file.
    File(PathBuf),
    /// Protobuf batches to a Kafka topic.
    Kafka {
        /// Bootstrap brokers.
        brokers: String,
        /// Topic.
        topic: String,
    },
}

impl std::str::FromStr for SinkSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "stdout" {
            return Ok(SinkSpec::Stdout);
        }
        if let Some(path) = s.strip_prefix("file:") {
            if path.is_empty() {
                return Err("file: needs a path (file:/var/log/flows.jsonl)".into());
            }
            return Ok(SinkSpec::File(PathBuf::from(path)));
        }
        if let Some(rest) = s.strip_prefix("kafka://") {
            let (brokers, topic) = rest.split_once('/').ok_or("kafka:// needs a topic (kafka://HOST:PORT/TOPIC)")?;
            if brokers.is_empty() || topic.is_empty() || topic.contains('/') {
                return Err(format!("bad Kafka sink '{s}' (kafka://HOST:PORT/TOPIC)"));
            }
            return Ok(SinkSpec::Kafka { brokers: brokers.into(), topic: topic.into() });
        }
        Err(format!("unknown sink '{s}': stdout, file:PATH or kafka://HOST:PORT/TOPIC"))
    }
}

/// A validated configuration.
#[derive(Clone, Debug)]
pub struct ExporterConfig {
    /// Exporter id.
    pub exporter_id: String,
    /// Batch interval.
    pub batch_interval: Duration,
    /// Sink.
    pub sink: SinkSpec,
    /// Host workload, if any.
    pub host_workload: Option<String>,
    /// cgroup rules.
    pub cgroup_rules: Vec<CgroupRule>,
    /// Control socket path.
    pub control_socket: PathBuf,
    /// Metrics address, if on.
    pub metrics: Option<SocketAddr>,
    /// Ring buffer bytes.
    pub ringbuf_bytes: u32,
    /// Kafka producer settings.
    pub producer: ProducerSettings,
    /// Where the open-connection map is pinned, if anywhere.
    pub pin_dir: Option<PathBuf>,
    /// How long an IP stays shared after the last reason.
    pub shared_ip_hold: Duration,
}

/// A configuration that cannot work.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Not valid TOML for this schema.
    #[error("invalid config {path}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: Box<toml::de::Error>,
    },
    /// A setting out of range.
    #[error("invalid setting `{field}`: {why}")]
    Invalid {
        /// The setting.
        field: &'static str,
        /// What is wrong.
        why: String,
    },
}

impl RawExporterConfig {
    /// Reads a TOML file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse { path: path.into(), source: Box::new(source) })
    }

    /// Validates, filling defaults.
    pub fn validate(self) -> Result<ExporterConfig, ConfigError> {
        let invalid = |field, why: String| ConfigError::Invalid { field, why };
        let exporter_id = match self.exporter_id {
            Some(id) if id.trim().is_empty() => return Err(invalid("exporter_id", "must not be empty".into())),
            Some(id) => id,
            None => hostname().ok_or_else(|| invalid("exporter_id", "unset and the host name is unreadable".into()))?,
        };
        let batch_interval = self.batch_interval.unwrap_or(Duration::from_secs(10));
        if batch_interval < Duration::from_millis(100) || batch_interval > Duration::from_secs(60) {
            return Err(invalid("batch_interval", format!("{batch_interval:?}: must be between 100ms and 60s")));
        }
        let sink = self.sink.as_deref().unwrap_or("stdout").parse().map_err(|why| invalid("sink", why))?;
        let host_workload = match (self.host_workload, &self.identity_file) {
            (Some(w), _) => Some(w),
            (None, Some(path)) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| invalid("identity_file", format!("{}: {e}", path.display())))?;
                let first = text.lines().next().unwrap_or("").trim().to_string();
                if first.is_empty() {
                    return Err(invalid("identity_file", format!("{} is empty", path.display())));
                }
                Some(first)
            }
            (None, None) => None,
        };
        if host_workload.as_deref().is_some_and(|w| w.trim().is_empty()) {
            return Err(invalid("host_workload", "must not be empty".into()));
        }
        for rule in &self.cgroup_rules {
            if !rule.pattern.starts_with('/') || rule.workload.trim().is_empty() {
                return Err(invalid(
                    "cgroup_rules",
                    format!("{rule:?}: the pattern starts with / and the workload is named"),
                ));
            }
        }
        let metrics = match self.metrics.as_deref() {
            Some("off") => None,
            Some(addr) => Some(addr.parse::<SocketAddr>().map_err(|e| invalid("metrics", format!("{addr}: {e}")))?),
            None => Some(SocketAddr::from(([127, 0, 0, 1], 9464))),
        };
        if metrics.is_some_and(|a| !a.ip().is_loopback()) {
            return Err(invalid("metrics", "must listen on a loopback address".into()));
        }
        let producer = self.producer.unwrap_or_else(|| ProducerSettings {
            when_full: flowmap_kafka::FullPolicy::Drop,
            max_message_bytes: DEFAULT_MAX_BATCH_BYTES,
            ..ProducerSettings::default()
        });
        producer.validate().map_err(|e| invalid("producer", e.to_string()))?;
        let pin_dir = match self.pin_dir.as_deref() {
            Some("off") => None,
            Some(dir) if !dir.starts_with('/') => {
                return Err(invalid("pin_dir", format!("{dir}: an absolute path on bpffs, or \"off\"")))
            }
            Some(dir) => Some(PathBuf::from(dir)),
            None => Some(PathBuf::from(DEFAULT_PIN_DIR)),
        };
        let shared_ip_hold = self.shared_ip_hold.unwrap_or(Duration::from_secs(600));
        if shared_ip_hold < batch_interval {
            return Err(invalid(
                "shared_ip_hold",
                format!("{shared_ip_hold:?}: must be at least the batch interval ({batch_interval:?})"),
            ));
        }
        Ok(ExporterConfig {
            exporter_id,
            batch_interval,
            sink,
            host_workload,
            cgroup_rules: self.cgroup_rules,
            control_socket: self.control_socket.unwrap_or_else(|| PathBuf::from("/run/flowmap/exporter.sock")),
            metrics,
            ringbuf_bytes: self.ringbuf_bytes.unwrap_or(1 << 22),
            producer,
            pin_dir,
            shared_ip_hold,
        })
    }
}

/// The largest batch the exporter's producer accepts by default (16 MiB): one batch holds a
/// whole window, and librdkafka's own default (1 MB) is about 15,000 flows.
pub const DEFAULT_MAX_BATCH_BYTES: usize = 16 << 20;

/// Where the open-connection map is pinned by default.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/flowmap";

fn hostname() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = name.trim();
    (!name.is_empty()).then(|| name.to_string())
}

/// Whether `path` matches `pattern`, where `*` matches any run of characters.
pub fn glob_match(pattern: &str, path: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == path;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !path.starts_with(first) || !path[first.len()..].ends_with(last) || path.len() < first.len() + last.len() {
        return false;
    }
    let mut rest = &path[first.len()..path.len() - last.len()];
    for middle in &parts[1..parts.len() - 1] {
        match rest.find(middle) {
            Some(i) => rest = &rest[i + middle.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sinks_parse() {
        assert_eq!("stdout".parse(), Ok(SinkSpec::Stdout));
        assert_eq!("file:/tmp/x".parse(), Ok(SinkSpec::File("/tmp/x".into())));
        assert_eq!(
            "kafka://127.0.0.1:9092/flows".parse(),
            Ok(SinkSpec::Kafka { brokers: "127.0.0.1:9092".into(), topic: "flows".into() })
        );
        for bad in ["kafka://h:1", "kafka:///t", "file:", "nope"] {
            assert!(bad.parse::<SinkSpec>().is_err(), "{bad}");
        }
    }

    #[test]
    fn defaults_and_validation() {
        let c = RawExporterConfig { exporter_id: Some("h1".into()), ..Default::default() }.validate().unwrap();
        assert_eq!(c.batch_interval, Duration::from_secs(10));
        assert_eq!(c.sink, SinkSpec::Stdout);
        assert_eq!(c.producer.when_full, flowmap_kafka::FullPolicy::Drop, "the exporter never blocks");
        let bad = |raw: RawExporterConfig, field: &str| {
            let err = raw.validate().unwrap_err().to_string();
            assert!(err.contains(field), "{err}");
        };
        bad(
            RawExporterConfig { batch_interval: Some(Duration::from_millis(5)), ..Default::default() },
            "batch_interval",
        );
        bad(RawExporterConfig { metrics: Some("0.0.0.0:9464".into()), ..Default::default() }, "loopback");
        bad(RawExporterConfig { sink: Some("kafka://x".into()), ..Default::default() }, "sink");
        let rule = CgroupRule { pattern: "nope".into(), workload: "w".into() };
        bad(RawExporterConfig { cgroup_rules: vec![rule], ..Default::default() }, "cgroup_rules");
        bad(RawExporterConfig { identity_file: Some("/nonexistent".into()), ..Default::default() }, "identity_file");
        bad(RawExporterConfig { pin_dir: Some("relative".into()), ..Default::default() }, "pin_dir");
        bad(
            RawExporterConfig {
                batch_interval: Some(Duration::from_secs(10)),
                shared_ip_hold: Some(Duration::from_secs(5)),
                ..Default::default()
            },
            "shared_ip_hold",
        );
        let off =
            RawExporterConfig { exporter_id: Some("h".into()), pin_dir: Some("off".into()), ..Default::default() };
        assert_eq!(off.validate().unwrap().pin_dir, None);
        assert_eq!(c.pin_dir.as_deref(), Some(Path::new(DEFAULT_PIN_DIR)));
        assert_eq!(c.shared_ip_hold, Duration::from_secs(600));
        assert!(toml::from_str::<RawExporterConfig>("sinkk = \"stdout\"").is_err());
    }

    /// The shipped file (also the .deb's /etc/flowmap/exporter.toml) loads and validates.
    #[test]
    fn shipped_config_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/exporter.toml");
        let c = RawExporterConfig::load(&path).unwrap().validate().unwrap();
        assert_eq!(c.batch_interval, Duration::from_secs(10));
        assert_eq!(c.producer.when_full, flowmap_kafka::FullPolicy::Drop);
        assert_eq!(c.producer.max_message_bytes, DEFAULT_MAX_BATCH_BYTES);
        assert_eq!(c.metrics, Some(SocketAddr::from(([127, 0, 0, 1], 9464))));
    }

    #[test]
    fn globs() {
        assert!(glob_match("/system.slice/nginx*", "/system.slice/nginx.service"));
        assert!(glob_match("/kubepods/*/pod*/*", "/kubepods/burstable/pod12/abc"));
        assert!(glob_match("/a", "/a"));
        assert!(!glob_match("/a", "/ab"));
        assert!(!glob_match("/x*y", "/xy/z"));
        assert!(glob_match("*", "/anything"));
        assert!(!glob_match("/ab*ba", "/aba"), "prefix and suffix may not overlap");
    }
}
