//! Grouping: which node of the map a workload name is drawn in.
//!
//! Workload names are hierarchical (`svc-03/pod-00123`, `ns/deployment/pod`). Group level `n`
//! keeps the first `n` segments of a name split on `/` (level 0 puts every workload in one node,
//! `fleet`); a named grouping from the config file maps names by prefix or regex first, and falls
//! back to a level for names no rule matches. `external:<prefix>` and `unattributed:<reason>`
//! ends are nodes of their own kind: below the config's `special_split_level` they are grouped
//! into one `external:*` and one `unattributed:*` node, from it on they keep their prefix or
//! reason. Their names contain a `:`, which no workload group name can be confused with.

use std::borrow::Cow;
use std::sync::Arc;

use regex::Regex;
use serde::Serialize;

use crate::row::Endpoint;

/// The deepest level a request may ask for (deeper is the same as full names).
pub const MAX_LEVEL: u8 = 16;
/// The node of every workload at level 0.
pub const FLEET: &str = "fleet";
/// The node of every external end below the split level.
pub const ALL_EXTERNAL: &str = "external:*";
/// The node of every unattributed end below the split level.
pub const ALL_UNATTRIBUTED: &str = "unattributed:*";

/// A node's kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeKind {
    /// Workloads of the fleet.
    Workload,
    /// Addresses outside the fleet.
    External,
    /// Ends flowmap would not name.
    Unattributed,
}

/// One rule of a named grouping.
#[derive(Clone, Debug)]
pub enum Rule {
    /// Names that start with `prefix` go to `group`.
    Prefix {
        /// The prefix.
        prefix: String,
        /// The group.
        group: String,
    },
    /// Names the regex matches go to `group`, with `$1`/`$name` replaced by the captures.
    Regex {
        /// The regex (searched, not anchored, unless it says `^`).
        regex: Regex,
        /// The group, a replacement template.
        group: String,
    },
}

impl Rule {
    fn apply<'a>(&self, name: &'a str) -> Option<Cow<'a, str>> {
        match self {
            Rule::Prefix { prefix, group } => name.starts_with(prefix.as_str()).then(|| Cow::Owned(group.clone())),
            Rule::Regex { regex, group } => regex.captures(name).map(|c| {
                let mut out = String::new();
                c.expand(group, &mut out);
                Cow::Owned(out)
            }),
        }
    }
}

/// A named grouping from the config file: rules tried in order, then a level.
#[derive(Clone, Debug)]
pub struct NamedGrouping {
    /// The name requests use (`group=<name>`).
    pub name: String,
    /// The rules, first match wins.
    pub rules: Vec<Rule>,
    /// The level for names no rule matches, and for external and unattributed ends.
    pub fallback_level: u8,
}

/// How names are grouped for one request.
#[derive(Clone, Debug)]
pub struct Grouping {
    spec: Spec,
    split_level: u8,
}

#[derive(Clone, Debug)]
enum Spec {
    Level(u8),
    Named(Arc<NamedGrouping>),
}

impl Grouping {
    /// Group by the first `level` segments (at most [`MAX_LEVEL`]).
    pub fn level(level: u8, split_level: u8) -> Self {
        Grouping { spec: Spec::Level(level.min(MAX_LEVEL)), split_level }
    }

    /// Group by a named grouping.
    pub fn named(grouping: Arc<NamedGrouping>, split_level: u8) -> Self {
        Grouping { spec: Spec::Named(grouping), split_level }
    }

    /// How the grouping is written in a request: the level, or the name.
    pub fn label(&self) -> String {
        match &self.spec {
            Spec::Level(l) => l.to_string(),
            Spec::Named(g) => g.name.clone(),
        }
    }

    fn base_level(&self) -> u8 {
        match &self.spec {
            Spec::Level(l) => *l,
            Spec::Named(g) => g.fallback_level,
        }
    }

    /// The node `name` is drawn in: its kind and the node's name.
    pub fn node<'a>(&self, name: &'a str) -> (NodeKind, Cow<'a, str>) {
        let split = self.base_level() >= self.split_level;
        match Endpoint::parse(name) {
            Endpoint::External(_) if split => (NodeKind::External, Cow::Borrowed(name)),
            Endpoint::External(_) => (NodeKind::External, Cow::Borrowed(ALL_EXTERNAL)),
            Endpoint::Unattributed(_) if split => (NodeKind::Unattributed, Cow::Borrowed(name)),
            Endpoint::Unattributed(_) => (NodeKind::Unattributed, Cow::Borrowed(ALL_UNATTRIBUTED)),
            Endpoint::Workload(w) => {
                if let Spec::Named(g) = &self.spec {
                    if let Some(group) = g.rules.iter().find_map(|r| r.apply(w)) {
                        return (NodeKind::Workload, group);
                    }
                }
                (NodeKind::Workload, prefix_segments(w, self.base_level()))
            }
        }
    }
}

/// The first `level` `/`-separated segments of `name` (all of them if it has fewer; [`FLEET`] at
/// level 0).
fn prefix_segments(name: &str, level: u8) -> Cow<'_, str> {
    if level == 0 {
        return Cow::Borrowed(FLEET);
    }
    match name.match_indices('/').nth(usize::from(level) - 1) {
        Some((i, _)) => Cow::Borrowed(&name[..i]),
        None => Cow::Borrowed(name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(g: &Grouping, name: &str) -> (NodeKind, String) {
        let (kind, n) = g.node(name);
        (kind, n.into_owned())
    }

    #[test]
    fn levels_keep_leading_segments() {
        let w = |n: &str| (NodeKind::Workload, n.to_owned());
        assert_eq!(node(&Grouping::level(0, 2), "ns/deploy/pod-1"), w("fleet"));
        assert_eq!(node(&Grouping::level(1, 2), "ns/deploy/pod-1"), w("ns"));
        assert_eq!(node(&Grouping::level(2, 2), "ns/deploy/pod-1"), w("ns/deploy"));
        assert_eq!(node(&Grouping::level(3, 2), "ns/deploy/pod-1"), w("ns/deploy/pod-1"));
        assert_eq!(node(&Grouping::level(MAX_LEVEL, 2), "ns/deploy/pod-1"), w("ns/deploy/pod-1"));
        assert_eq!(node(&Grouping::level(1, 2), "lonely"), w("lonely"));
        assert_eq!(node(&Grouping::level(1, 2), "/odd"), w(""), "an empty first segment is its own group");
    }

    #[test]
    fn special_ends_split_from_the_split_level() {
        let g1 = Grouping::level(1, 2);
        assert_eq!(node(&g1, "external:203.0.113.0/24"), (NodeKind::External, ALL_EXTERNAL.to_owned()));
        assert_eq!(node(&g1, "unattributed:no_owner"), (NodeKind::Unattributed, ALL_UNATTRIBUTED.to_owned()));
        let g2 = Grouping::level(2, 2);
        assert_eq!(node(&g2, "external:203.0.113.0/24"), (NodeKind::External, "external:203.0.113.0/24".into()));
        assert_eq!(node(&g2, "unattributed:no_owner"), (NodeKind::Unattributed, "unattributed:no_owner".into()));
    }

    #[test]
    fn named_groupings_try_rules_then_fall_back() {
        let g = Grouping::named(
            Arc::new(NamedGrouping {
                name: "team".into(),
                rules: vec![
                    Rule::Prefix { prefix: "svc-0".into(), group: "team-a".into() },
                    Rule::Regex {
                        regex: Regex::new(r"^(?P<ns>[^/]+)/(?P<app>[a-z]+)-[0-9]+").expect("valid"),
                        group: "$ns/$app".into(),
                    },
                ],
                fallback_level: 1,
            }),
            2,
        );
        assert_eq!(node(&g, "svc-03/pod-1"), (NodeKind::Workload, "team-a".into()));
        assert_eq!(node(&g, "shop/cart-42/pod-9"), (NodeKind::Workload, "shop/cart".into()));
        assert_eq!(node(&g, "hostnet-2/0007"), (NodeKind::Workload, "hostnet-2".into()));
        assert_eq!(node(&g, "external:198.51.100.0/24"), (NodeKind::External, ALL_EXTERNAL.into()));
        assert_eq!(g.label(), "team");
    }
}
