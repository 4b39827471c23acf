//! The dependency policy: which edges are allowed (`configs/policy.toml`). An edge no rule
//! allows is a `policy_violation` event.
//!
//! ```toml
//! # Every rule allows edges whose client and server names match its globs (`*` matches any
//! # run of characters, `/` included), on the listed ports (any port when none is listed).
//! [[allow]]
//! client = "svc-0*"
//! server = "svc-1*"
//! ports = [8010, 8011]
//! ```

use std::path::Path;

use globset::{Glob, GlobMatcher};
use serde::Deserialize;

/// The policy file as written.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPolicy {
    /// The rules; an edge is allowed if any rule allows it.
    #[serde(default)]
    pub allow: Vec<RawRule>,
}

/// One rule as written.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    /// Glob on the client node's name.
    pub client: String,
    /// Glob on the server node's name.
    pub server: String,
    /// Allowed server ports (empty: any).
    #[serde(default)]
    pub ports: Vec<u16>,
}

/// A policy that failed to load.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The file could not be read.
    #[error("cannot read policy {path}")]
    Read {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Not valid TOML for the policy.
    #[error("invalid policy {path}")]
    Parse {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: Box<toml::de::Error>,
    },
    /// A glob that does not parse.
    #[error("invalid policy {path}: rule {rule}")]
    Glob {
        /// The file.
        path: String,
        /// The rule's index (from 0).
        rule: usize,
        /// The cause.
        #[source]
        source: globset::Error,
    },
}

#[derive(Clone, Debug)]
struct Rule {
    client: GlobMatcher,
    server: GlobMatcher,
    ports: Vec<u16>,
}

/// A validated policy.
#[derive(Clone, Debug)]
pub struct Policy {
    rules: Vec<Rule>,
}

impl Policy {
    /// Loads and validates a policy file.
    ///
    /// # Errors
    /// An unreadable file, invalid TOML, unknown fields, or a bad glob.
    pub fn load(path: &Path) -> Result<Self, PolicyError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read { path: name.clone(), source })?;
        Self::parse(&text, &name)
    }

    /// Parses and validates policy text (`origin` names it in errors).
    ///
    /// # Errors
    /// Invalid TOML, unknown fields, or a bad glob.
    pub fn parse(text: &str, origin: &str) -> Result<Self, PolicyError> {
        let raw: RawPolicy = toml::from_str(text)
            .map_err(|source| PolicyError::Parse { path: origin.to_string(), source: Box::new(source) })?;
        let glob = |rule: usize, g: &str| {
            Glob::new(g).map(|g| g.compile_matcher()).map_err(|source| PolicyError::Glob {
                path: origin.to_string(),
                rule,
                source,
            })
        };
        let rules = raw
            .allow
            .iter()
            .enumerate()
            .map(|(i, r)| Ok(Rule { client: glob(i, &r.client)?, server: glob(i, &r.server)?, ports: r.ports.clone() }))
            .collect::<Result<_, PolicyError>>()?;
        Ok(Policy { rules })
    }

    /// Whether the policy allows an edge.
    pub fn allows(&self, client: &str, server: &str, port: u16) -> bool {
        self.rules.iter().any(|r| {
            r.client.is_match(client) && r.server.is_match(server) && (r.ports.is_empty() || r.ports.contains(&port))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::chain;

    #[test]
    fn rules_match_names_and_ports() {
        let p = Policy::parse(
            "[[allow]]\nclient = \"svc-0*\"\nserver = \"svc-1*\"\nports = [8010]\n[[allow]]\nclient = \"*\"\nserver = \"external:*\"\n",
            "t",
        )
        .unwrap();
        assert!(p.allows("svc-01/pod-1", "svc-10/pod-2", 8010));
        assert!(!p.allows("svc-01/pod-1", "svc-10/pod-2", 8011), "port not listed");
        assert!(!p.allows("svc-21/pod-1", "svc-10/pod-2", 8010), "client not matched");
        assert!(p.allows("anything", "external:198.51.100.0/24", 443));
    }

    #[test]
    fn bad_policies_are_named_errors() {
        assert!(chain(&Policy::parse("[[allow]]\nclient = \"a\"\n", "t").unwrap_err()).contains("server"));
        assert!(
            Policy::parse("[[allow]]\nclient = \"a\"\nserver = \"b\"\nport = [1]\n", "t").is_err(),
            "unknown field"
        );
        let err = chain(&Policy::parse("[[allow]]\nclient = \"a[\"\nserver = \"b\"\n", "t").unwrap_err());
        assert!(err.contains("rule 0"), "{err}");
    }
}
