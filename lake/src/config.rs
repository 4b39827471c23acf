//! Settings of the lake, in two stages: [`LakeConfig`] is what a TOML table (or flags) says,
//! [`LakeSettings`] is what was checked once and cannot hold an invalid value.
//!
//! ```toml
//! location = "s3://flowlake/prod"          # or a local directory: "/var/lib/flowmap/lake"
//! endpoint = "http://127.0.0.1:19500"      # S3 only: a compatible service (moto, MinIO, ...)
//! region = "us-east-1"                     # S3 only
//! cell = "60s"                             # time bound: a cell of dataflow time is written once the input passes it
//! max_rows_per_file = 500000               # size bound: rows per data file (and what a partition holds in memory)
//! compression = "snappy"                   # snappy | gzip | none
//! ```
//!
//! S3 credentials come from the environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, ...;
//! `object_store`'s `AmazonS3Builder::from_env`), never from this file.

use std::num::{NonZeroU64, NonZeroUsize};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::error::ConfigError;
use crate::layout::NANOS_PER_SEC;

/// The lake settings as written (TOML, `deny_unknown_fields`); [`LakeConfig::validate`] checks them.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LakeConfig {
    /// A local directory (created if missing), or `s3://BUCKET[/PREFIX]`.
    pub location: String,
    /// S3 only: the endpoint of an S3-compatible service (`http://` is allowed for it).
    #[serde(default)]
    pub endpoint: Option<String>,
    /// S3 only: the region.
    #[serde(default = "default_region")]
    pub region: String,
    /// The cell length: rows are written once the input frontier passes the end of their cell of
    /// dataflow time. A whole number of seconds, at least 1 s. Keep it across restarts.
    #[serde(default = "default_cell", with = "humantime_serde")]
    pub cell: Duration,
    /// The most rows in one data file (a cell's rows of one partition are split in parts of this
    /// size, in a deterministic order). At least 1.
    #[serde(default = "default_max_rows")]
    pub max_rows_per_file: usize,
    /// The Parquet compression codec.
    #[serde(default)]
    pub compression: Compression,
}

fn default_region() -> String {
    "us-east-1".to_string()
}

const fn default_cell() -> Duration {
    Duration::from_secs(60)
}

const fn default_max_rows() -> usize {
    500_000
}

/// The Parquet compression codec of data files.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// Snappy: fast, read by every Parquet reader.
    #[default]
    Snappy,
    /// Gzip (zlib): smaller, slower.
    Gzip,
    /// No compression.
    None,
}

/// Where the lake is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    /// A local directory.
    Local(PathBuf),
    /// An S3 bucket (or an S3-compatible service).
    S3 {
        /// The bucket.
        bucket: String,
        /// The key prefix of the lake inside the bucket (no leading or trailing `/`; may be empty).
        prefix: String,
        /// The endpoint of a compatible service (`None`: AWS).
        endpoint: Option<String>,
        /// The region.
        region: String,
    },
}

impl Location {
    /// The location as given (`s3://bucket/prefix` or the directory).
    pub fn url(&self) -> String {
        match self {
            Location::Local(dir) => dir.display().to_string(),
            Location::S3 { bucket, prefix, .. } if prefix.is_empty() => format!("s3://{bucket}"),
            Location::S3 { bucket, prefix, .. } => format!("s3://{bucket}/{prefix}"),
        }
    }
}

/// Checked lake settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LakeSettings {
    location: Location,
    cell_ns: NonZeroU64,
    max_rows_per_file: NonZeroUsize,
    compression: Compression,
}

impl LakeConfig {
    /// The settings of a TOML document.
    ///
    /// # Errors
    /// [`ConfigError::Parse`] for TOML of another shape (unknown keys included).
    pub fn from_toml(text: &str) -> Result<LakeConfig, ConfigError> {
        Ok(toml::from_str(text)?)
    }

    /// Default settings for a location (what `flowmap replay --lake DIR` uses).
    pub fn at(location: &str) -> LakeConfig {
        LakeConfig {
            location: location.to_string(),
            endpoint: None,
            region: default_region(),
            cell: default_cell(),
            max_rows_per_file: default_max_rows(),
            compression: Compression::default(),
        }
    }

    /// Checks every setting.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the setting: an empty location, an `s3://` URL without a
    /// bucket, an endpoint given for a local directory or not `http(s)://`, a cell that is not a
    /// whole number of seconds of at least 1 s, `max_rows_per_file = 0`.
    pub fn validate(&self) -> Result<LakeSettings, ConfigError> {
        let invalid = |field, problem: String| ConfigError::Invalid { field, problem };
        let location = if let Some(rest) = self.location.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(invalid("location", format!("{:?} names no bucket", self.location)));
            }
            let prefix = prefix.trim_matches('/');
            if prefix.split('/').any(|s| s == "." || s == "..") {
                return Err(invalid("location", format!("{:?}: no . or .. in the prefix", self.location)));
            }
            if let Some(e) = &self.endpoint {
                if !(e.starts_with("http://") || e.starts_with("https://")) {
                    return Err(invalid("endpoint", format!("{e:?} is not an http:// or https:// URL")));
                }
            }
            if self.region.is_empty() {
                return Err(invalid("region", "empty".into()));
            }
            Location::S3 {
                bucket: bucket.to_string(),
                prefix: prefix.to_string(),
                endpoint: self.endpoint.clone(),
                region: self.region.clone(),
            }
        } else if self.location.contains("://") {
            return Err(invalid("location", format!("{:?}: only s3:// URLs and local directories", self.location)));
        } else if self.location.is_empty() {
            return Err(invalid("location", "empty".into()));
        } else {
            if self.endpoint.is_some() {
                return Err(invalid("endpoint", "only for an s3:// location".into()));
            }
            Location::Local(PathBuf::from(&self.location))
        };
        if self.cell.subsec_nanos() != 0 || self.cell.as_secs() == 0 {
            return Err(invalid("cell", format!("{:?} is not a whole number of seconds >= 1 s", self.cell)));
        }
        let cell_ns = self
            .cell
            .as_secs()
            .checked_mul(NANOS_PER_SEC)
            .and_then(NonZeroU64::new)
            .ok_or_else(|| invalid("cell", format!("{:?} is too long", self.cell)))?;
        let max_rows_per_file =
            NonZeroUsize::new(self.max_rows_per_file).ok_or_else(|| invalid("max_rows_per_file", "0".into()))?;
        Ok(LakeSettings { location, cell_ns, max_rows_per_file, compression: self.compression })
    }
}

impl LakeSettings {
    /// Reads and checks a TOML file.
    ///
    /// # Errors
    /// [`ConfigError`]: unreadable, malformed, or invalid (see [`LakeConfig::validate`]).
    pub fn load(path: &Path) -> Result<LakeSettings, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.display().to_string(), source })?;
        LakeConfig::from_toml(&text)?.validate()
    }

    /// Where the lake is.
    pub fn location(&self) -> &Location {
        &self.location
    }

    /// The cell length, ns.
    pub fn cell_ns(&self) -> u64 {
        self.cell_ns.get()
    }

    /// The most rows per data file.
    pub fn max_rows_per_file(&self) -> usize {
        self.max_rows_per_file.get()
    }

    /// The compression codec.
    pub fn compression(&self) -> Compression {
        self.compression
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_file_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("lake.toml");
        let s = LakeSettings::load(&path).unwrap();
        assert_eq!(s.location(), &Location::Local(PathBuf::from("/var/lib/flowmap/lake")));
        assert_eq!(s.cell_ns(), 60 * NANOS_PER_SEC);
        assert_eq!(s.max_rows_per_file(), 500_000);
        assert_eq!(s.compression(), Compression::Snappy);
    }

    #[test]
    fn s3_locations() {
        let mut c = LakeConfig::at("s3://flows/a/b/");
        c.endpoint = Some("http://127.0.0.1:19500".into());
        let s = c.validate().unwrap();
        assert_eq!(
            s.location(),
            &Location::S3 {
                bucket: "flows".into(),
                prefix: "a/b".into(),
                endpoint: Some("http://127.0.0.1:19500".into()),
                region: "us-east-1".into()
            }
        );
        assert_eq!(s.location().url(), "s3://flows/a/b");
        let s = LakeConfig::at("s3://flows").validate().unwrap();
        assert!(matches!(s.location(), Location::S3 { prefix, endpoint: None, .. } if prefix.is_empty()));
    }

    #[test]
    fn invalid_settings_name_the_field() {
        let field = |c: LakeConfig| match c.validate() {
            Err(ConfigError::Invalid { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        assert_eq!(field(LakeConfig::at("")), "location");
        assert_eq!(field(LakeConfig::at("s3://")), "location");
        assert_eq!(field(LakeConfig::at("s3://b/../x")), "location");
        assert_eq!(field(LakeConfig::at("gs://b")), "location");
        let mut c = LakeConfig::at("/tmp/x");
        c.endpoint = Some("http://h".into());
        assert_eq!(field(c), "endpoint");
        let mut c = LakeConfig::at("s3://b");
        c.endpoint = Some("h:9000".into());
        assert_eq!(field(c), "endpoint");
        let mut c = LakeConfig::at("/tmp/x");
        c.cell = Duration::from_millis(1500);
        assert_eq!(field(c), "cell");
        let mut c = LakeConfig::at("/tmp/x");
        c.cell = Duration::ZERO;
        assert_eq!(field(c), "cell");
        let mut c = LakeConfig::at("/tmp/x");
        c.cell = Duration::from_secs(u64::MAX / 2);
        assert_eq!(field(c), "cell");
        let mut c = LakeConfig::at("/tmp/x");
        c.max_rows_per_file = 0;
        assert_eq!(field(c), "max_rows_per_file");
    }

    #[test]
    fn unknown_keys_are_refused() {
        assert!(matches!(LakeConfig::from_toml("location = \"/x\"\ncel = \"60s\""), Err(ConfigError::Parse(_))));
        let c = LakeConfig::from_toml("location = \"/x\"\ncell = \"10s\"\ncompression = \"none\"").unwrap();
        let s = c.validate().unwrap();
        assert_eq!((s.cell_ns(), s.compression()), (10 * NANOS_PER_SEC, Compression::None));
    }
}
