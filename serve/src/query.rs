//! Request parameters: read from the query string ([`Params`]), validated into what each endpoint
//! computes ([`View`], [`GraphQuery`], [`NodeQuery`], [`SeriesQuery`], [`EventsQuery`]). Every
//! problem is a [`BadRequest`] whose message names the parameter; unknown parameters, and
//! parameters an endpoint does not use, are refused too (a typo is not silently ignored).
//!
//! | parameter | endpoints | form |
//! | --- | --- | --- |
//! | `from`, `to` | all | RFC 3339, ns since the epoch, `now`, `now-15m`; default: the last `default_range` of the data |
//! | `group` | graph, node, series, csv | a level `0`..`16` or a named grouping |
//! | `filter` | all | the workload search ([`Filter`]) |
//! | `port` | all | `443`, `8000-8999`, or a comma-separated list |
//! | `min_bytes` | graph, node, csv | `1048576`, `10MB`, `1.5GiB`: edges with fewer bytes (both ways) are left out |
//! | `limit` | graph, csv, events | the top edges (events) returned, 1 to `max_limit` |
//! | `rank` | graph, csv | what "top" means: `bytes` (default), `connections`, `failed_connects`, `retransmits`, `disagreements` |
//! | `id` | node | the node |
//! | `source`, `target` | series | the edge's client and server nodes |
//! | `step` | series | the series' step (humantime, at least 1s; default: a minute, coarser for long ranges) |
//! | `kind` | events | comma-separated event kinds |

use std::time::Duration;

use serde::Deserialize;

use crate::config::ServeConfig;
use crate::filter::{parse_bytes, Filter, Ports};
use crate::group::Grouping;
use crate::row::EventKind;
use crate::time::{parse_time, TimeRange};

/// A request the API refuses, with a message for the caller (a 400).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadRequest(pub String);

fn bad(param: &str, message: impl std::fmt::Display) -> BadRequest {
    BadRequest(format!("{param}: {message}"))
}

/// The query string as given: every parameter any endpoint reads.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct Params {
    pub from: Option<String>,
    pub to: Option<String>,
    pub group: Option<String>,
    pub filter: Option<String>,
    pub port: Option<String>,
    pub min_bytes: Option<String>,
    pub limit: Option<String>,
    pub rank: Option<String>,
    pub id: Option<String>,
    pub source: Option<String>,
    pub target: Option<String>,
    pub step: Option<String>,
    pub kind: Option<String>,
}

impl Params {
    /// Reads a query string (`None`: no query).
    ///
    /// # Errors
    /// [`BadRequest`] naming an unknown or repeated parameter.
    pub fn parse(query: Option<&str>) -> Result<Self, BadRequest> {
        serde_urlencoded::from_str(query.unwrap_or("")).map_err(|e| BadRequest(format!("query: {e}")))
    }

    fn given(&self) -> [(&'static str, bool); 13] {
        [
            ("from", self.from.is_some()),
            ("to", self.to.is_some()),
            ("group", self.group.is_some()),
            ("filter", self.filter.is_some()),
            ("port", self.port.is_some()),
            ("min_bytes", self.min_bytes.is_some()),
            ("limit", self.limit.is_some()),
            ("rank", self.rank.is_some()),
            ("id", self.id.is_some()),
            ("source", self.source.is_some()),
            ("target", self.target.is_some()),
            ("step", self.step.is_some()),
            ("kind", self.kind.is_some()),
        ]
    }

    /// Refuses parameters `endpoint` does not use.
    fn only(&self, endpoint: &str, allowed: &[&str]) -> Result<(), BadRequest> {
        match self.given().into_iter().find(|(name, given)| *given && !allowed.contains(name)) {
            Some((name, _)) => Err(bad(name, format!("not a parameter of {endpoint}"))),
            None => Ok(()),
        }
    }
}

/// What every map request shares: the range, the grouping and the filters.
#[derive(Clone, Debug)]
pub struct View {
    /// The time range.
    pub range: TimeRange,
    /// How names are grouped.
    pub grouping: Grouping,
    /// The workload search.
    pub filter: Filter,
    /// The server ports.
    pub ports: Ports,
    /// Edges with fewer bytes (both ways, after grouping) are left out.
    pub min_bytes: u64,
}

/// What ranks edges for `limit`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rank {
    /// Bytes both ways.
    Bytes,
    /// Connections.
    Connections,
    /// Failed connects.
    FailedConnects,
    /// Retransmits.
    Retransmits,
    /// Disagreements.
    Disagreements,
}

/// `/api/graph` and `/api/edges.csv`.
#[derive(Clone, Debug)]
pub struct GraphQuery {
    /// Range, grouping, filters.
    pub view: View,
    /// The most edges returned.
    pub limit: usize,
    /// What ranks them.
    pub rank: Rank,
}

/// `/api/node`.
#[derive(Clone, Debug)]
pub struct NodeQuery {
    /// Range, grouping, filters.
    pub view: View,
    /// The node.
    pub id: String,
}

/// `/api/series`.
#[derive(Clone, Debug)]
pub struct SeriesQuery {
    /// Range, grouping, filters.
    pub view: View,
    /// The edge's client node.
    pub source: String,
    /// The edge's server node.
    pub target: String,
    /// The step, ns.
    pub step_ns: u64,
}

/// `/api/events`.
#[derive(Clone, Debug)]
pub struct EventsQuery {
    /// The time range.
    pub range: TimeRange,
    /// The kinds shown (all when empty).
    pub kinds: Vec<EventKind>,
    /// The workload search, on the events' client and server names.
    pub filter: Filter,
    /// The server ports.
    pub ports: Ports,
    /// The most events returned (the newest first).
    pub limit: usize,
}

/// What parameters are read against: the settings, the wall clock and the data's extent.
#[derive(Clone, Copy, Debug)]
pub struct Context<'a> {
    /// The settings.
    pub config: &'a ServeConfig,
    /// The wall clock, ns (for `now`).
    pub now_ns: u64,
    /// The end of the data, ns, if there is data (the default range ends there).
    pub data_end_ns: Option<u64>,
}

fn duration_ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl Context<'_> {
    fn range(&self, p: &Params) -> Result<TimeRange, BadRequest> {
        let time = |name: &str, v: &Option<String>| {
            v.as_deref().map(|t| parse_time(t, self.now_ns).map_err(|e| bad(name, e))).transpose()
        };
        let (from, to) = (time("from", &p.from)?, time("to", &p.to)?);
        let default = duration_ns(self.config.default_range());
        let to = match (to, from) {
            (Some(to), _) => to,
            // The default span must end within the times a request may name (found by a
            // fresh user: a `from` at the last instant gave a `to` past it).
            (None, Some(from)) => match from.checked_add(default).filter(|&t| t <= i64::MAX as u64) {
                Some(to) => to,
                None => return Err(bad("from", "from plus the default range passes the year 2262; give `to`")),
            },
            (None, None) => self.data_end_ns.unwrap_or(self.now_ns),
        };
        let from = from.unwrap_or_else(|| to.saturating_sub(default));
        let range = TimeRange::new(from, to).map_err(|e| bad("to", e))?;
        let max = self.config.max_range();
        if range.len_ns() > duration_ns(max) {
            return Err(bad(
                "from",
                format!("the range is longer than max_range ({})", humantime::format_duration(max)),
            ));
        }
        Ok(range)
    }

    fn view(&self, p: &Params) -> Result<View, BadRequest> {
        let grouping = match p.group.as_deref() {
            None | Some("") => self.config.default_group().clone(),
            Some(g) => self.config.grouping(g).map_err(|e| bad("group", e))?,
        };
        Ok(View {
            range: self.range(p)?,
            grouping,
            filter: Filter::parse(p.filter.as_deref().unwrap_or("")).map_err(|e| bad("filter", e))?,
            ports: Ports::parse(p.port.as_deref().unwrap_or("")).map_err(|e| bad("port", e))?,
            min_bytes: match p.min_bytes.as_deref() {
                None | Some("") => 0,
                Some(b) => parse_bytes(b).map_err(|e| bad("min_bytes", e))?,
            },
        })
    }

    fn limit(&self, p: &Params) -> Result<usize, BadRequest> {
        let max = self.config.max_limit();
        match p.limit.as_deref() {
            None | Some("") => Ok(self.config.default_limit()),
            Some(l) => match l.trim().parse::<usize>() {
                Ok(n) if (1..=max).contains(&n) => Ok(n),
                _ => Err(bad("limit", format!("{l:?} is not a number from 1 to {max}"))),
            },
        }
    }

    /// `/api/graph` and `/api/edges.csv`.
    ///
    /// # Errors
    /// [`BadRequest`] naming the parameter.
    pub fn graph(&self, endpoint: &str, p: &Params) -> Result<GraphQuery, BadRequest> {
        p.only(endpoint, &["from", "to", "group", "filter", "port", "min_bytes", "limit", "rank"])?;
        let rank = match p.rank.as_deref() {
            None | Some("") | Some("bytes") => Rank::Bytes,
            Some("connections") => Rank::Connections,
            Some("failed_connects") => Rank::FailedConnects,
            Some("retransmits") => Rank::Retransmits,
            Some("disagreements") => Rank::Disagreements,
            Some(r) => {
                return Err(bad(
                    "rank",
                    format!("{r:?}: use bytes, connections, failed_connects, retransmits or disagreements"),
                ))
            }
        };
        Ok(GraphQuery { view: self.view(p)?, limit: self.limit(p)?, rank })
    }

    /// `/api/node`.
    ///
    /// # Errors
    /// [`BadRequest`] naming the parameter (`id` is required).
    pub fn node(&self, p: &Params) -> Result<NodeQuery, BadRequest> {
        p.only("/api/node", &["from", "to", "group", "filter", "port", "min_bytes", "id"])?;
        let id = p.id.clone().filter(|i| !i.is_empty()).ok_or_else(|| bad("id", "required: the node's id"))?;
        Ok(NodeQuery { view: self.view(p)?, id })
    }

    /// `/api/series`.
    ///
    /// # Errors
    /// [`BadRequest`] naming the parameter (`source` and `target` are required).
    pub fn series(&self, p: &Params) -> Result<SeriesQuery, BadRequest> {
        p.only("/api/series", &["from", "to", "group", "filter", "port", "source", "target", "step"])?;
        let need = |name: &str, v: &Option<String>| {
            v.clone().filter(|s| !s.is_empty()).ok_or_else(|| bad(name, "required: the edge's end"))
        };
        let (source, target) = (need("source", &p.source)?, need("target", &p.target)?);
        let view = self.view(p)?;
        const MAX_POINTS: u64 = 2_000;
        let step_ns = match p.step.as_deref() {
            None | Some("") => {
                // A minute, or coarser (whole minutes) to keep the series under 720 points.
                let minute = 60_000_000_000u64;
                view.range.len_ns().div_ceil(720).div_ceil(minute).max(1) * minute
            }
            Some(s) => {
                let d = humantime::parse_duration(s).map_err(|e| bad("step", format!("{s:?}: {e}")))?;
                if d < Duration::from_secs(1) {
                    return Err(bad("step", "must be at least 1s"));
                }
                duration_ns(d)
            }
        };
        if view.range.len_ns().div_ceil(step_ns) > MAX_POINTS {
            return Err(bad("step", format!("the range would have more than {MAX_POINTS} points; use a larger step")));
        }
        Ok(SeriesQuery { view, source, target, step_ns })
    }

    /// `/api/events`.
    ///
    /// # Errors
    /// [`BadRequest`] naming the parameter.
    pub fn events(&self, p: &Params) -> Result<EventsQuery, BadRequest> {
        p.only("/api/events", &["from", "to", "filter", "port", "kind", "limit"])?;
        let mut kinds = Vec::new();
        for k in p.kind.as_deref().unwrap_or("").split(',').map(str::trim).filter(|k| !k.is_empty()) {
            kinds.push(k.parse::<EventKind>().map_err(|e| bad("kind", e))?);
        }
        Ok(EventsQuery {
            range: self.range(p)?,
            kinds,
            filter: Filter::parse(p.filter.as_deref().unwrap_or("")).map_err(|e| bad("filter", e))?,
            ports: Ports::parse(p.port.as_deref().unwrap_or("")).map_err(|e| bad("port", e))?,
            limit: self.limit(p)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_795_953_600_000_000_000;
    const MIN: u64 = 60_000_000_000;

    fn ctx(config: &ServeConfig) -> Context<'_> {
        Context { config, now_ns: NOW, data_end_ns: Some(NOW - 10 * MIN) }
    }

    fn graph(query: &str) -> Result<GraphQuery, BadRequest> {
        let config = ServeConfig::default();
        ctx(&config).graph("/api/graph", &Params::parse(Some(query))?)
    }

    #[test]
    fn defaults_end_at_the_data() {
        let q = graph("").expect("valid");
        assert_eq!((q.view.range.from_ns(), q.view.range.to_ns()), (NOW - 70 * MIN, NOW - 10 * MIN));
        assert_eq!((q.limit, q.rank, q.view.min_bytes), (500, Rank::Bytes, 0));
        let q = graph("from=now-5m").expect("valid");
        assert_eq!((q.view.range.from_ns(), q.view.range.to_ns()), (NOW - 5 * MIN, NOW + 55 * MIN));
        let config = ServeConfig::default();
        let empty = Context { config: &config, now_ns: NOW, data_end_ns: None };
        let q = empty.graph("/api/graph", &Params::default()).expect("valid");
        assert_eq!(q.view.range.to_ns(), NOW, "no data: the range ends now");
    }

    #[test]
    fn every_parameter_is_read() {
        let q = graph("from=2026-11-29T11:00:00Z&to=now&group=2&filter=web+-canary&port=443,8000-8999&min_bytes=1MB&limit=20&rank=connections")
            .expect("valid");
        assert_eq!(q.view.range.from_ns(), NOW - 60 * MIN);
        assert_eq!(q.view.grouping.label(), "2");
        assert_eq!(q.view.filter.negative, vec!["canary".to_owned()]);
        assert!(q.view.ports.contains(8080) && !q.view.ports.contains(80));
        assert_eq!((q.view.min_bytes, q.limit, q.rank), (1_000_000, 20, Rank::Connections));
    }

    #[test]
    fn bad_parameters_name_themselves() {
        let err = |q: &str| graph(q).expect_err(q).0;
        assert!(err("from=yesterday").starts_with("from: cannot read \"yesterday\""));
        assert!(err("from=now&to=now-1h").starts_with("to: empty time range"));
        assert!(err("from=2026-01-01T00:00:00Z&to=2026-11-01T00:00:00Z").starts_with("from: the range is longer"));
        assert!(err("from=2262-04-11T23:47:16.854775807Z").starts_with("from: from plus the default range passes"));
        assert!(err("group=99").starts_with("group: unknown group"));
        assert!(err("filter=client:").starts_with("filter:"));
        assert!(err("port=http").starts_with("port:"));
        assert!(err("min_bytes=lots").starts_with("min_bytes:"));
        assert!(err("limit=0").starts_with("limit:"));
        assert!(err("limit=20001").starts_with("limit:"));
        assert!(err("rank=size").starts_with("rank:"));
        assert_eq!(err("id=x"), "id: not a parameter of /api/graph");
        assert!(err("form=now").starts_with("query: unknown field `form`"), "{}", err("form=now"));
        assert!(err("from=now&from=now").starts_with("query:"), "repeated");
    }

    #[test]
    fn series_steps_default_to_minutes_and_are_bounded() {
        let config = ServeConfig::default();
        let c = ctx(&config);
        let p = |q: &str| Params::parse(Some(q)).expect("parses");
        let s = c.series(&p("source=a&target=b")).expect("valid");
        assert_eq!(s.step_ns, MIN);
        let s = c.series(&p("source=a&target=b&from=now-24h&to=now")).expect("valid");
        assert_eq!(s.step_ns, 2 * MIN, "24 h in at most 720 points");
        assert!(c.series(&p("source=a")).expect_err("no target").0.starts_with("target: required"));
        assert!(c.series(&p("source=a&target=b&step=10ms")).is_err());
        assert!(c.series(&p("source=a&target=b&from=now-24h&to=now&step=1s")).is_err());
        assert!(c.node(&p("")).expect_err("no id").0.starts_with("id: required"));
        let e = c.events(&p("kind=new_dependency,disagreement&limit=5")).expect("valid");
        assert_eq!(e.kinds, vec![EventKind::NewDependency, EventKind::Disagreement]);
        assert!(c.events(&p("kind=boom")).expect_err("unknown kind").0.starts_with("kind: unknown event kind"));
        assert!(c.events(&p("group=1")).is_err(), "events are not grouped");
    }
}
