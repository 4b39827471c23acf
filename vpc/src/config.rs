//! The ingester's settings: a TOML file (`configs/vpc.toml` is the example) read in two stages,
//! [`RawConfig`] as written (serde, unknown keys rejected, durations with units), then
//! [`Settings`], checked once, whose values are all usable.
//!
//! Runtime knobs (backfill range, stop conditions, progress display) are not here: they are
//! arguments of [`crate::ingest`]'s entry points.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// SQS's limit on in-flight messages of a standard queue (received, not deleted, still
/// invisible).
pub const SQS_IN_FLIGHT_LIMIT: u32 = 120_000;
/// SQS's longest visibility timeout.
pub const SQS_MAX_VISIBILITY: Duration = Duration::from_secs(12 * 3600);
/// SQS's longest long-poll wait.
pub const SQS_MAX_WAIT: Duration = Duration::from_secs(20);

/// The configuration file as written.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Where the flow log files are.
    pub store: RawStore,
    /// The queue of S3 event notifications (needed by the queue mode, not by backfill).
    #[serde(default)]
    pub queue: Option<RawQueue>,
    /// How files are grouped.
    #[serde(default)]
    pub mouthful: RawMouthful,
    /// The record of processed objects.
    pub state: RawState,
}

/// Object storage.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStore {
    /// `s3` or `local`.
    pub kind: StoreKind,
    /// S3: the endpoint URL (an S3-compatible service; default: AWS for the region).
    #[serde(default)]
    pub endpoint: Option<String>,
    /// S3: the region.
    #[serde(default)]
    pub region: Option<String>,
    /// S3: allow a plain-HTTP endpoint (a local test service).
    #[serde(default)]
    pub allow_http: bool,
    /// Local: the directory whose subdirectories are the buckets.
    #[serde(default)]
    pub root: Option<PathBuf>,
}

/// The kind of object store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// Amazon S3 or a compatible service. Credentials come from the environment
    /// (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, web identity,
    /// instance metadata), as `object_store` reads them.
    S3,
    /// A local directory.
    Local,
}

/// The SQS queue.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawQueue {
    /// The queue URL.
    pub url: String,
    /// The SQS endpoint URL (a compatible service; default: AWS for the region).
    #[serde(default)]
    pub endpoint: Option<String>,
    /// The region.
    pub region: String,
    /// Most messages received and not yet deleted (SQS allows about 120,000 per standard queue;
    /// keep room for other consumers).
    pub max_in_flight: u32,
    /// Long-poll wait of one receive call (at most 20 s).
    #[serde(with = "humantime_serde")]
    pub receive_wait: Duration,
    /// Visibility timeout asked for every received message, and by every extension.
    #[serde(with = "humantime_serde")]
    pub visibility_timeout: Duration,
    /// Extend a message's visibility when less than this is left of it.
    #[serde(with = "humantime_serde")]
    pub extend_before: Duration,
    /// Receive calls in flight at once (1 to 16; each takes up to 10 messages).
    #[serde(default = "default_receivers")]
    pub receivers: u32,
}

const fn default_receivers() -> u32 {
    4
}

/// Grouping of files into mouthfuls.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMouthful {
    /// Most bytes (as stored, compressed) of one mouthful; a larger file is a mouthful alone.
    pub max_bytes: u64,
    /// Most files of one mouthful.
    pub max_files: usize,
    /// Longest a file waits for its mouthful to fill before the mouthful goes anyway.
    #[serde(with = "humantime_serde")]
    pub max_wait: Duration,
    /// Most records of one batch handed to the sink.
    pub batch_records: usize,
}

impl Default for RawMouthful {
    fn default() -> Self {
        RawMouthful {
            max_bytes: 256 * 1024 * 1024,
            max_files: 100,
            max_wait: Duration::from_secs(5),
            batch_records: 8192,
        }
    }
}

/// The record of processed objects (bucket, key, ETag), so that a restart skips them.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawState {
    /// The state file (JSON lines; created if missing).
    pub path: PathBuf,
    /// How long an entry is kept: at least the queue's visibility timeout (a message whose
    /// object was recorded but not deleted comes back within it after a crash); longer also
    /// skips duplicate notifications and repeated backfills. Memory: 30 to 60 bytes per object (a
    /// 128-bit hash and a timestamp in a hash map).
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
}

/// Why a configuration is unusable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Not valid TOML for this structure.
    #[error("parsing the configuration: {0}")]
    Parse(#[from] toml::de::Error),
    /// A value is out of range or inconsistent.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// Where the files are, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreSettings {
    /// S3 or compatible.
    S3 {
        /// Endpoint override.
        endpoint: Option<String>,
        /// Region.
        region: String,
        /// Plain HTTP allowed.
        allow_http: bool,
    },
    /// Local directory of buckets.
    Local {
        /// The root directory.
        root: PathBuf,
    },
}

/// The queue, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueSettings {
    /// Queue URL.
    pub url: String,
    /// Endpoint override.
    pub endpoint: Option<String>,
    /// Region.
    pub region: String,
    /// 1 to [`SQS_IN_FLIGHT_LIMIT`].
    pub max_in_flight: u32,
    /// At most [`SQS_MAX_WAIT`], whole seconds.
    pub receive_wait: Duration,
    /// 1 s to [`SQS_MAX_VISIBILITY`], whole seconds.
    pub visibility_timeout: Duration,
    /// Less than `visibility_timeout`.
    pub extend_before: Duration,
    /// 1 to 16.
    pub receivers: u32,
}

/// Settings, checked: every value is usable as it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// Where the files are.
    pub store: StoreSettings,
    /// The queue (absent: backfill only).
    pub queue: Option<QueueSettings>,
    /// Most bytes of a mouthful (at least 1).
    pub max_bytes: u64,
    /// Most files of a mouthful (at least 1).
    pub max_files: usize,
    /// Longest wait of a partial mouthful.
    pub max_wait: Duration,
    /// Most records per batch (at least 1).
    pub batch_records: usize,
    /// State file.
    pub state_path: PathBuf,
    /// State retention.
    pub state_retention: Duration,
    /// How often the ingester polls the sink and its timers when nothing else happens.
    pub poll: Duration,
}

fn invalid(msg: impl Into<String>) -> ConfigError {
    ConfigError::Invalid(msg.into())
}

impl Settings {
    /// Reads and checks a configuration file.
    ///
    /// # Errors
    /// [`ConfigError`] when the file cannot be read, parsed or is inconsistent.
    pub fn load(path: &Path) -> Result<Settings, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        Settings::from_toml(&text)
    }

    /// Parses and checks a configuration.
    ///
    /// # Errors
    /// [`ConfigError::Parse`] or [`ConfigError::Invalid`].
    pub fn from_toml(text: &str) -> Result<Settings, ConfigError> {
        Settings::check(toml::from_str(text)?)
    }

    /// Checks a raw configuration.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the first bad value.
    pub fn check(raw: RawConfig) -> Result<Settings, ConfigError> {
        let store = match raw.store.kind {
            StoreKind::S3 => {
                if raw.store.root.is_some() {
                    return Err(invalid("store.root is for kind = \"local\""));
                }
                let region = raw.store.region.ok_or_else(|| invalid("store.region is required for S3"))?;
                StoreSettings::S3 { endpoint: raw.store.endpoint, region, allow_http: raw.store.allow_http }
            }
            StoreKind::Local => {
                if raw.store.endpoint.is_some() || raw.store.region.is_some() || raw.store.allow_http {
                    return Err(invalid("store.endpoint, region and allow_http are for kind = \"s3\""));
                }
                StoreSettings::Local { root: raw.store.root.ok_or_else(|| invalid("store.root is required"))? }
            }
        };
        let queue = match raw.queue {
            None => None,
            Some(q) => {
                if q.max_in_flight == 0 || q.max_in_flight > SQS_IN_FLIGHT_LIMIT {
                    return Err(invalid(format!("queue.max_in_flight must be 1 to {SQS_IN_FLIGHT_LIMIT}")));
                }
                if q.receive_wait > SQS_MAX_WAIT || q.receive_wait.subsec_nanos() != 0 {
                    return Err(invalid("queue.receive_wait must be whole seconds, at most 20 s"));
                }
                if q.visibility_timeout < Duration::from_secs(1)
                    || q.visibility_timeout > SQS_MAX_VISIBILITY
                    || q.visibility_timeout.subsec_nanos() != 0
                {
                    return Err(invalid("queue.visibility_timeout must be whole seconds, 1 s to 12 h"));
                }
                if !(1..=16).contains(&q.receivers) {
                    return Err(invalid("queue.receivers must be 1 to 16"));
                }
                if q.extend_before >= q.visibility_timeout || q.extend_before.is_zero() {
                    return Err(invalid("queue.extend_before must be above 0 and below visibility_timeout"));
                }
                Some(QueueSettings {
                    url: q.url,
                    endpoint: q.endpoint,
                    region: q.region,
                    max_in_flight: q.max_in_flight,
                    receive_wait: q.receive_wait,
                    visibility_timeout: q.visibility_timeout,
                    extend_before: q.extend_before,
                    receivers: q.receivers,
                })
            }
        };
        let m = raw.mouthful;
        if m.max_bytes == 0 || m.max_files == 0 || m.batch_records == 0 {
            return Err(invalid("mouthful.max_bytes, max_files and batch_records must be at least 1"));
        }
        if raw.state.retention.is_zero() {
            return Err(invalid("state.retention must be above 0"));
        }
        if let Some(q) = &queue {
            // A message whose object was recorded but not yet deleted comes back within its
            // visibility timeout after a crash: the record must still be there.
            if raw.state.retention < q.visibility_timeout {
                return Err(invalid("state.retention must be at least queue.visibility_timeout"));
            }
        }
        Ok(Settings {
            store,
            queue,
            max_bytes: m.max_bytes,
            max_files: m.max_files,
            max_wait: m.max_wait,
            batch_records: m.batch_records,
            state_path: raw.state.path,
            state_retention: raw.state.retention,
            poll: Duration::from_millis(100),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
        [store]
        kind = "local"
        root = "/tmp/x"
        [state]
        path = "/tmp/state.jsonl"
        retention = "1d"
    "#;

    #[test]
    fn the_example_file_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/vpc.toml");
        let s = Settings::load(&path).unwrap();
        let q = s.queue.as_ref().unwrap();
        assert!(q.max_in_flight <= SQS_IN_FLIGHT_LIMIT);
        assert!(matches!(s.store, StoreSettings::S3 { .. }));
    }

    #[test]
    fn defaults_and_local_store() {
        let s = Settings::from_toml(BASE).unwrap();
        assert_eq!(s.store, StoreSettings::Local { root: "/tmp/x".into() });
        assert_eq!(s.queue, None);
        assert_eq!(s.max_files, 100);
        assert_eq!(s.state_retention, Duration::from_secs(86400));
    }

    #[test]
    fn bad_values_are_rejected() {
        let queue = |extra: &str| {
            format!(
                "{BASE}\n[queue]\nurl = \"http://q\"\nregion = \"us-east-1\"\nreceive_wait = \"1s\"\n\
                 visibility_timeout = \"30s\"\nextend_before = \"10s\"\n{extra}"
            )
        };
        assert!(Settings::from_toml(&queue("max_in_flight = 10")).is_ok());
        for (extra, why) in [
            ("max_in_flight = 0", "zero in flight"),
            ("max_in_flight = 120001", "above SQS's limit"),
            ("max_in_flight = 1\nsurprise = 1", "unknown key"),
            ("max_in_flight = 1\nreceivers = 0", "no receiver"),
            ("max_in_flight = 1\nreceivers = 17", "too many receivers"),
        ] {
            assert!(Settings::from_toml(&queue(extra)).is_err(), "{why}");
        }
        let bad_extend = queue("max_in_flight = 1").replace("extend_before = \"10s\"", "extend_before = \"30s\"");
        assert!(Settings::from_toml(&bad_extend).is_err());
        let bad_wait = queue("max_in_flight = 1").replace("receive_wait = \"1s\"", "receive_wait = \"21s\"");
        let short_state = queue("max_in_flight = 1").replace("retention = \"1d\"", "retention = \"29s\"");
        assert!(Settings::from_toml(&short_state).is_err(), "state kept shorter than the visibility timeout");
        assert!(Settings::from_toml(&bad_wait).is_err());
        let no_unit = queue("max_in_flight = 1").replace("\"30s\"", "30");
        assert!(Settings::from_toml(&no_unit).is_err(), "durations carry their unit");
        assert!(Settings::from_toml(&BASE.replace("kind = \"local\"", "kind = \"s3\"")).is_err(), "S3 with a root");
        assert!(Settings::from_toml(&format!(
            "{BASE}\n[mouthful]\nmax_bytes = 0\nmax_files = 1\nmax_wait = \"1s\"\nbatch_records = 1"
        ))
        .is_err());
    }
}
