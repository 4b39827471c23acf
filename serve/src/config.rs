//! The map server's settings (`serve/serve.toml` documents every one): read from TOML into
//! [`RawConfig`], then validated once into [`ServeConfig`], which cannot hold an invalid value
//! (regexes compiled, limits positive, the default grouping known).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use regex::Regex;
use serde::Deserialize;

use crate::group::{Grouping, NamedGrouping, Rule, MAX_LEVEL};
use crate::source::LakeOptions;

/// The settings as written.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// The range shown when a request names none: this long, ending at the end of the data.
    #[serde(default = "defaults::range", with = "humantime_serde")]
    pub default_range: Duration,
    /// The grouping when a request names none: a level (`"1"`) or a named grouping.
    #[serde(default = "defaults::group")]
    pub default_group: String,
    /// Edges returned when a request names no `limit` (the top edges first).
    #[serde(default = "defaults::limit")]
    pub default_limit: usize,
    /// The largest `limit` a request may ask for.
    #[serde(default = "defaults::max_limit")]
    pub max_limit: usize,
    /// The longest range a request may ask for.
    #[serde(default = "defaults::max_range", with = "humantime_serde")]
    pub max_range: Duration,
    /// Heavy requests (graph, node, series, CSV) computed at once; more wait.
    #[serde(default = "defaults::max_concurrent")]
    pub max_concurrent: usize,
    /// From this group level on, `external:` and `unattributed:` ends keep their prefix or reason;
    /// below it they are one `external:*` and one `unattributed:*` node.
    #[serde(default = "defaults::special_split_level")]
    pub special_split_level: u8,
    /// Decoded lake rows kept in memory (least recently used files go first).
    #[serde(default = "defaults::lake_cache_rows")]
    pub lake_cache_rows: usize,
    /// Named groupings, offered besides the levels.
    #[serde(default)]
    pub grouping: Vec<RawGrouping>,
}

/// A named grouping as written.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGrouping {
    /// The name requests use (`group=<name>`): letters, digits, `-` and `_`, not all digits.
    pub name: String,
    /// The level for names no rule matches.
    #[serde(default = "defaults::group_level")]
    pub fallback_level: u8,
    /// The rules, first match wins.
    #[serde(default)]
    pub rule: Vec<RawRule>,
}

/// A rule as written: exactly one of `prefix` and `regex`, and the group.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    /// Names starting with this.
    pub prefix: Option<String>,
    /// Names this regex matches (searched; anchor with `^`).
    pub regex: Option<String>,
    /// The group; for a regex, `$1` or `$name` are replaced by its captures.
    pub group: String,
}

mod defaults {
    use std::time::Duration;
    pub(super) const fn range() -> Duration {
        Duration::from_secs(3600)
    }
    pub(super) fn group() -> String {
        "1".into()
    }
    pub(super) const fn limit() -> usize {
        500
    }
    pub(super) const fn max_limit() -> usize {
        20_000
    }
    pub(super) const fn max_range() -> Duration {
        Duration::from_secs(31 * 24 * 3600)
    }
    pub(super) const fn max_concurrent() -> usize {
        2
    }
    pub(super) const fn special_split_level() -> u8 {
        2
    }
    pub(super) const fn lake_cache_rows() -> usize {
        5_000_000
    }
    pub(super) const fn group_level() -> u8 {
        1
    }
}

impl Default for RawConfig {
    fn default() -> Self {
        RawConfig {
            default_range: defaults::range(),
            default_group: defaults::group(),
            default_limit: defaults::limit(),
            max_limit: defaults::max_limit(),
            max_range: defaults::max_range(),
            max_concurrent: defaults::max_concurrent(),
            special_split_level: defaults::special_split_level(),
            lake_cache_rows: defaults::lake_cache_rows(),
            grouping: Vec::new(),
        }
    }
}

/// A setting that is not valid; the message names it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML for these settings.
    #[error("invalid settings")]
    Parse(#[source] toml::de::Error),
    /// A value out of range or inconsistent.
    #[error("{field}: {problem}")]
    Invalid {
        /// The setting.
        field: String,
        /// What is wrong.
        problem: String,
    },
}

fn invalid(field: impl Into<String>, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { field: field.into(), problem: problem.into() }
}

/// Validated settings.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    default_range: Duration,
    default_group: Grouping,
    default_limit: usize,
    max_limit: usize,
    max_range: Duration,
    max_concurrent: usize,
    special_split_level: u8,
    lake_cache_rows: usize,
    groupings: Vec<Arc<NamedGrouping>>,
}

impl ServeConfig {
    /// Reads and validates a TOML file.
    ///
    /// # Errors
    /// [`ConfigError`] naming the file or the setting.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.display().to_string(), source })?;
        Self::from_toml(&text)
    }

    /// Reads and validates TOML text.
    ///
    /// # Errors
    /// [`ConfigError`] naming the setting.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        Self::validate(toml::from_str(text).map_err(ConfigError::Parse)?)
    }

    /// Validates raw settings.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the setting.
    pub fn validate(raw: RawConfig) -> Result<Self, ConfigError> {
        if raw.default_range.is_zero() {
            return Err(invalid("default_range", "must be positive"));
        }
        if raw.max_range < raw.default_range {
            return Err(invalid("max_range", "must be at least default_range"));
        }
        if raw.max_limit == 0 || raw.default_limit == 0 || raw.default_limit > raw.max_limit {
            return Err(invalid("default_limit", "must be positive and at most max_limit (which must be positive)"));
        }
        if raw.max_concurrent == 0 {
            return Err(invalid("max_concurrent", "must be positive"));
        }
        if raw.special_split_level > MAX_LEVEL {
            return Err(invalid("special_split_level", format!("must be at most {MAX_LEVEL}")));
        }
        let mut groupings: Vec<Arc<NamedGrouping>> = Vec::new();
        for (i, g) in raw.grouping.into_iter().enumerate() {
            let field = format!("grouping[{i}]");
            let name_ok = !g.name.is_empty()
                && g.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                && !g.name.chars().all(|c| c.is_ascii_digit());
            if !name_ok {
                return Err(invalid(format!("{field}.name"), "letters, digits, - and _, not all digits"));
            }
            if groupings.iter().any(|o| o.name == g.name) {
                return Err(invalid(format!("{field}.name"), format!("{:?} is used twice", g.name)));
            }
            if g.fallback_level > MAX_LEVEL {
                return Err(invalid(format!("{field}.fallback_level"), format!("must be at most {MAX_LEVEL}")));
            }
            let mut rules = Vec::new();
            for (j, r) in g.rule.into_iter().enumerate() {
                let field = format!("{field}.rule[{j}]");
                if r.group.is_empty() || r.group.contains(':') {
                    return Err(invalid(format!("{field}.group"), "must be non-empty and without ':'"));
                }
                rules.push(match (r.prefix, r.regex) {
                    (Some(prefix), None) => Rule::Prefix { prefix, group: r.group },
                    (None, Some(regex)) => Rule::Regex {
                        regex: Regex::new(&regex).map_err(|e| invalid(format!("{field}.regex"), e.to_string()))?,
                        group: r.group,
                    },
                    _ => return Err(invalid(field, "give exactly one of prefix and regex")),
                });
            }
            groupings.push(Arc::new(NamedGrouping { name: g.name, rules, fallback_level: g.fallback_level }));
        }
        let mut config = ServeConfig {
            default_range: raw.default_range,
            default_group: Grouping::level(1, raw.special_split_level),
            default_limit: raw.default_limit,
            max_limit: raw.max_limit,
            max_range: raw.max_range,
            max_concurrent: raw.max_concurrent,
            special_split_level: raw.special_split_level,
            lake_cache_rows: raw.lake_cache_rows,
            groupings,
        };
        config.default_group =
            config.grouping(&raw.default_group).map_err(|e| invalid("default_group", e.to_string()))?;
        Ok(config)
    }

    /// The grouping a request names: a level or a named grouping.
    ///
    /// # Errors
    /// [`UnknownGroup`] for anything else.
    pub fn grouping(&self, text: &str) -> Result<Grouping, UnknownGroup> {
        if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
            return match text.parse::<u8>() {
                Ok(level) if level <= MAX_LEVEL => Ok(Grouping::level(level, self.special_split_level)),
                _ => Err(self.unknown(text)),
            };
        }
        self.groupings
            .iter()
            .find(|g| g.name == text)
            .map(|g| Grouping::named(g.clone(), self.special_split_level))
            .ok_or_else(|| self.unknown(text))
    }

    fn unknown(&self, text: &str) -> UnknownGroup {
        UnknownGroup { given: text.to_owned(), named: self.groupings.iter().map(|g| g.name.clone()).collect() }
    }

    /// The default range's length.
    pub fn default_range(&self) -> Duration {
        self.default_range
    }
    /// The default grouping.
    pub fn default_group(&self) -> &Grouping {
        &self.default_group
    }
    /// The default edge limit.
    pub fn default_limit(&self) -> usize {
        self.default_limit
    }
    /// The largest edge limit.
    pub fn max_limit(&self) -> usize {
        self.max_limit
    }
    /// The longest range.
    pub fn max_range(&self) -> Duration {
        self.max_range
    }
    /// Heavy requests computed at once.
    pub fn max_concurrent(&self) -> usize {
        self.max_concurrent
    }
    /// The named groupings' names.
    pub fn grouping_names(&self) -> impl Iterator<Item = &str> {
        self.groupings.iter().map(|g| g.name.as_str())
    }
    /// The lake source's options.
    pub fn lake_options(&self) -> LakeOptions {
        LakeOptions::new(self.lake_cache_rows)
    }
}

impl Default for ServeConfig {
    fn default() -> Self {
        // The defaults are valid (checked by a test).
        Self::validate(RawConfig::default()).unwrap_or_else(|_| unreachable!("the default settings are valid"))
    }
}

/// A grouping that is neither a level nor a named grouping.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown group {given:?}: use a level 0 to {MAX_LEVEL}{}", named_list(named))]
pub struct UnknownGroup {
    /// What the request said.
    pub given: String,
    /// The named groupings there are.
    pub named: Vec<String>,
}

fn named_list(named: &[String]) -> String {
    if named.is_empty() {
        String::new()
    } else {
        format!(" or one of {}", named.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        let c = ServeConfig::default();
        assert_eq!(c.default_group().label(), "1");
        assert_eq!(c.default_limit(), 500);
    }

    #[test]
    fn the_documented_file_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("serve.toml");
        let c = ServeConfig::from_file(&path).expect("serve/serve.toml is valid");
        assert!(c.grouping_names().count() >= 1, "it documents a named grouping");
    }

    #[test]
    fn groups_are_levels_or_names() {
        let c = ServeConfig::from_toml(
            "[[grouping]]\nname = \"team\"\n[[grouping.rule]]\nprefix = \"svc-0\"\ngroup = \"a\"\n",
        )
        .expect("valid");
        assert_eq!(c.grouping("0").map(|g| g.label()), Ok("0".into()));
        assert_eq!(c.grouping("16").map(|g| g.label()), Ok("16".into()));
        assert_eq!(c.grouping("team").map(|g| g.label()), Ok("team".into()));
        let e = c.grouping("17").expect_err("too deep");
        assert_eq!(e.to_string(), "unknown group \"17\": use a level 0 to 16 or one of team");
        assert!(c.grouping("").is_err() && c.grouping("-1").is_err() && c.grouping("teams").is_err());
    }

    #[test]
    fn bad_settings_name_the_field() {
        let err = |text: &str| ServeConfig::from_toml(text).expect_err(text).to_string();
        assert_eq!(
            err("default_limit = 0"),
            "default_limit: must be positive and at most max_limit (which must be positive)"
        );
        assert_eq!(err("default_group = \"nope\""), "default_group: unknown group \"nope\": use a level 0 to 16");
        assert_eq!(err("max_concurrent = 0"), "max_concurrent: must be positive");
        assert_eq!(err("default_range = \"0s\""), "default_range: must be positive");
        assert!(err("max_range = \"1m\"").starts_with("max_range"));
        assert!(err("[[grouping]]\nname = \"12\"").starts_with("grouping[0].name"));
        assert!(err("[[grouping]]\nname = \"a\"\n[[grouping]]\nname = \"a\"").contains("used twice"));
        assert!(err("[[grouping]]\nname = \"a\"\n[[grouping.rule]]\nregex = \"(\"\ngroup = \"x\"")
            .starts_with("grouping[0].rule[0].regex"));
        assert!(err("[[grouping]]\nname = \"a\"\n[[grouping.rule]]\ngroup = \"x\"").contains("exactly one"));
        assert!(err("[[grouping]]\nname = \"a\"\n[[grouping.rule]]\nprefix = \"p\"\ngroup = \"x:y\"").contains("':'"));
        assert_eq!(err("colour = \"blue\""), "invalid settings");
    }
}
