//! Client and producer settings: serde structs with validation, and the single function that
//! turns them into librdkafka properties ([`ClientSettings::client_config`]).

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::ClientConfig;
use serde::{Deserialize, Serialize};

/// A setting that cannot work.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// No bootstrap address.
    #[error("no brokers given (expected HOST:PORT[,HOST:PORT...])")]
    NoBrokers,
    /// A bootstrap address without a port.
    #[error("broker address '{0}' is not HOST:PORT")]
    BadBroker(String),
    /// A bound that must be positive is zero.
    #[error("{0} must be greater than zero")]
    Zero(&'static str),
    /// A passthrough option that flowmap sets itself, for a reason.
    #[error("option '{0}' is managed by flowmap and cannot be overridden")]
    Managed(String),
}

/// Where the brokers are, and librdkafka options passed through untouched.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientSettings {
    /// Bootstrap addresses, `HOST:PORT[,HOST:PORT...]`.
    pub brokers: String,
    /// Client id reported to the brokers.
    #[serde(default = "default_client_id")]
    pub client_id: String,
    /// Extra librdkafka properties (for TLS, SASL, tuning). Properties flowmap manages itself
    /// are refused (see [`MANAGED`]).
    #[serde(default)]
    pub options: BTreeMap<String, String>,
}

fn default_client_id() -> String {
    "flowmap".to_string()
}

/// Properties flowmap sets itself, because its guarantees depend on them.
pub const MANAGED: &[&str] = &[
    "bootstrap.servers",
    "enable.idempotence",
    "enable.auto.commit",
    "enable.auto.offset.store",
    "queue.buffering.max.messages",
    "queue.buffering.max.kbytes",
    "message.max.bytes",
];

impl ClientSettings {
    /// Settings for `brokers` with defaults elsewhere.
    pub fn new(brokers: &str) -> Self {
        ClientSettings { brokers: brokers.to_string(), client_id: default_client_id(), options: BTreeMap::new() }
    }

    /// Checks the addresses and the passthrough options.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut any = false;
        for b in self.brokers.split(',').map(str::trim).filter(|b| !b.is_empty()) {
            any = true;
            let port = b.rsplit_once(':').map(|(_, p)| p);
            if !port.is_some_and(|p| p.parse::<u16>().is_ok_and(|p| p > 0)) {
                return Err(ConfigError::BadBroker(b.to_string()));
            }
        }
        if !any {
            return Err(ConfigError::NoBrokers);
        }
        if let Some(key) = self.options.keys().find(|k| MANAGED.contains(&k.as_str())) {
            return Err(ConfigError::Managed(key.clone()));
        }
        Ok(())
    }

    /// The librdkafka configuration: the only place settings become properties.
    pub fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers).set("client.id", &self.client_id);
        for (k, v) in &self.options {
            c.set(k, v);
        }
        c
    }
}

/// Payload compression.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// None.
    None,
    /// LZ4: cheap, and built into librdkafka.
    #[default]
    Lz4,
    /// gzip (zlib).
    Gzip,
}

impl Compression {
    fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Lz4 => "lz4",
            Compression::Gzip => "gzip",
        }
    }
}

/// What a send does when the in-memory queue is full (the broker is away or slow).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "policy", deny_unknown_fields)]
pub enum FullPolicy {
    /// Wait for room, up to `max_wait`, then fail the send. Waits are counted. For the
    /// simulator and the job, where back-pressure is right.
    Block {
        /// Longest wait for one send.
        #[serde(with = "humantime_serde")]
        max_wait: Duration,
    },
    /// Refuse the record at once, and count it. For the exporter, which must never stall its
    /// kernel ring buffer.
    Drop,
}

impl Default for FullPolicy {
    fn default() -> Self {
        FullPolicy::Block { max_wait: Duration::from_secs(60) }
    }
}

/// Producer settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProducerSettings {
    /// Most records waiting in memory for delivery.
    pub queue_max_messages: usize,
    /// Most bytes waiting in memory for delivery, in KiB.
    pub queue_max_kbytes: usize,
    /// The largest record (key, payload and headers, before compression) librdkafka accepts,
    /// in bytes (`message.max.bytes`; the broker has its own limit on what it stores).
    pub max_message_bytes: usize,
    /// Payload compression.
    pub compression: Compression,
    /// How long a record may wait to fill a larger request.
    #[serde(with = "humantime_serde")]
    pub linger: Duration,
    /// How long librdkafka keeps retrying a record before its delivery fails (and is counted).
    #[serde(with = "humantime_serde")]
    pub message_timeout: Duration,
    /// What a send does when the queue is full.
    pub when_full: FullPolicy,
}

impl Default for ProducerSettings {
    fn default() -> Self {
        ProducerSettings {
            queue_max_messages: 100_000,
            queue_max_kbytes: 256 * 1024,
            max_message_bytes: 1_000_000,
            compression: Compression::Lz4,
            linger: Duration::from_millis(5),
            message_timeout: Duration::from_secs(300),
            when_full: FullPolicy::default(),
        }
    }
}

impl ProducerSettings {
    /// Checks the bounds.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.queue_max_messages == 0 {
            return Err(ConfigError::Zero("queue_max_messages"));
        }
        if self.queue_max_kbytes == 0 {
            return Err(ConfigError::Zero("queue_max_kbytes"));
        }
        if self.max_message_bytes == 0 {
            return Err(ConfigError::Zero("max_message_bytes"));
        }
        if self.message_timeout.is_zero() {
            return Err(ConfigError::Zero("message_timeout"));
        }
        Ok(())
    }

    /// Adds the producer properties to a client configuration.
    pub(crate) fn apply(&self, c: &mut ClientConfig) {
        c.set("enable.idempotence", "true")
            .set("acks", "all")
            .set("compression.type", self.compression.name())
            .set("queue.buffering.max.messages", self.queue_max_messages.to_string())
            .set("queue.buffering.max.kbytes", self.queue_max_kbytes.to_string())
            .set("message.max.bytes", self.max_message_bytes.to_string())
            .set("linger.ms", self.linger.as_millis().to_string())
            .set("message.timeout.ms", self.message_timeout.as_millis().max(1).to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn brokers_are_checked() {
        assert_eq!(ClientSettings::new("").validate(), Err(ConfigError::NoBrokers));
        assert_eq!(ClientSettings::new("host").validate(), Err(ConfigError::BadBroker("host".into())));
        assert_eq!(ClientSettings::new("h:0").validate(), Err(ConfigError::BadBroker("h:0".into())));
        assert!(ClientSettings::new("127.0.0.1:9092, [::1]:9093").validate().is_ok());
        let mut s = ClientSettings::new("h:1");
        s.options.insert("enable.idempotence".into(), "false".into());
        assert_eq!(s.validate(), Err(ConfigError::Managed("enable.idempotence".into())));
    }

    #[test]
    fn producer_settings_parse_and_validate() {
        let s: ProducerSettings = toml::from_str(
            "queue_max_messages = 10\ncompression = \"gzip\"\nmessage_timeout = \"30s\"\nwhen_full = { policy = \"drop\" }",
        )
        .unwrap();
        assert_eq!(s.queue_max_messages, 10);
        assert_eq!(s.when_full, FullPolicy::Drop);
        assert_eq!(s.message_timeout, Duration::from_secs(30));
        assert!(s.validate().is_ok());
        let zero = ProducerSettings { queue_max_messages: 0, ..ProducerSettings::default() };
        assert_eq!(zero.validate(), Err(ConfigError::Zero("queue_max_messages")));
        assert!(toml::from_str::<ProducerSettings>("queue = 1").is_err(), "unknown fields are refused");
    }
}
