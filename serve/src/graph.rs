//! What the API returns for a view: the graph (nodes and the top edges, with their measures and
//! certainty), one node's callers and callees, one edge's time series, and the events.
//!
//! Certainty of an edge, from its connections (`verified` + `disagreements` + `one_sided` are the
//! job's account of them):
//! - `unattributed`: one of its ends is an unattributed node;
//! - `partial`: some connections on its client workloads and ports went to an unattributed server
//!   (or came from an unattributed client to its server workloads): `unattributed_share` of
//!   them, with the reasons;
//! - `verified`: more than half its connections were verified by both ends;
//! - `one_sided`: none was;
//! - `mixed`: some, but not most, were.
//!
//! Disagreements are counted on every edge (and are events of their own).

use std::cmp::Reverse;
use std::collections::BTreeMap;

use serde::Serialize;

use foldhash::HashMap;

use crate::aggregate::{Aggregate, EdgeAcc, MergedRtt, Sums};
use crate::filter::NameMatch;
use crate::group::NodeKind;
use crate::query::{EventsQuery, GraphQuery, NodeQuery, Rank, SeriesQuery, View};
use crate::row::{EventKind, EventRow};
use crate::source::EdgeRows;
use crate::time::{format_time, TimeRange};

/// A time range as the API writes it: RFC 3339 and ms since the epoch (JavaScript's numbers
/// cannot hold ns).
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct RangeOut {
    /// The start, RFC 3339.
    pub from: String,
    /// The end (excluded), RFC 3339.
    pub to: String,
    /// The start, ms since the epoch.
    pub from_ms: u64,
    /// The end, ms since the epoch.
    pub to_ms: u64,
}

impl From<TimeRange> for RangeOut {
    fn from(r: TimeRange) -> Self {
        RangeOut {
            from: format_time(r.from_ns()),
            to: format_time(r.to_ns()),
            from_ms: r.from_ns() / 1_000_000,
            to_ms: r.to_ns() / 1_000_000,
        }
    }
}

/// A node of the map.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Node {
    /// The node's name at this grouping (unique in a response).
    pub id: String,
    /// Workload, external or unattributed.
    pub kind: NodeKind,
    /// Distinct raw names grouped in it (with traffic in the view).
    pub members: u64,
    /// Connections it received, over the view's edges (before `limit`).
    pub connections_in: u64,
    /// Connections it made.
    pub connections_out: u64,
    /// Bytes on the edges it is the server of (both ways).
    pub bytes_in: u64,
    /// Bytes on the edges it is the client of (both ways).
    pub bytes_out: u64,
}

/// How sure an edge is.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Certainty {
    /// `verified`, `mixed`, `one_sided`, `partial` or `unattributed` (see the module docs).
    pub class: &'static str,
    /// Verified connections / connections (`None` without connections).
    pub verified_share: Option<f64>,
    /// One-sided connections / connections.
    pub one_sided_share: Option<f64>,
    /// Connections whose ends disagree / connections.
    pub disagreement_share: Option<f64>,
    /// Connections possibly of this edge whose other end went unattributed, over those plus
    /// this edge's connections.
    pub unattributed_share: Option<f64>,
    /// Those connections.
    pub unattributed_connections: u64,
    /// Those connections, by reason.
    pub unattributed_reasons: BTreeMap<String, u64>,
}

/// RTT quantiles of an edge, microseconds.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Rtt {
    /// Median.
    pub p50_us: Option<f64>,
    /// 90th percentile.
    pub p90_us: Option<f64>,
    /// 99th percentile.
    pub p99_us: Option<f64>,
    /// Samples in the merged sketch.
    pub samples: Option<u64>,
    /// `sketch` (merged sketches: exact to the sketch's 1%), `rows` (some rows had no sketch:
    /// connection-weighted mean of the rows' quantiles, an approximation) or `none`.
    pub method: &'static str,
}

/// Connections on one server port.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct PortCount {
    /// The port.
    pub port: u16,
    /// Connections to it.
    pub connections: u64,
}

/// Events on an edge in the range, by kind.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct EventCounts {
    /// New dependencies.
    pub new_dependency: u64,
    /// Policy violations.
    pub policy_violation: u64,
    /// Verification disagreements.
    pub disagreement: u64,
    /// Events of a kind this version does not know.
    pub unspecified: u64,
}

/// An edge of the map: a client node calling a server node.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Edge {
    /// `<source>-><target>`, unique in a response.
    pub id: String,
    /// The client node's id.
    pub source: String,
    /// The server node's id.
    pub target: String,
    /// Connections.
    pub connections: u64,
    /// Payload bytes from client to server.
    pub bytes_client_to_server: u64,
    /// Payload bytes from server to client.
    pub bytes_server_to_client: u64,
    /// Both.
    pub bytes: u64,
    /// Segments, both ways.
    pub segments: u64,
    /// Retransmitted segments.
    pub retransmits: u64,
    /// Connections that never established.
    pub failed_connects: u64,
    /// Connections verified by both ends.
    pub verified: u64,
    /// Connections whose ends disagree.
    pub disagreements: u64,
    /// Connections seen from one end.
    pub one_sided: u64,
    /// RTT quantiles.
    pub rtt: Rtt,
    /// The busiest server ports (at most 8), by connections.
    pub ports: Vec<PortCount>,
    /// Distinct server ports.
    pub ports_total: usize,
    /// Protocols seen.
    pub protocols: Vec<String>,
    /// How sure the edge is.
    pub certainty: Certainty,
    /// Events on it in the range.
    pub events: EventCounts,
}

/// Counts before `limit`.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Totals {
    /// Nodes of the edges that pass every filter.
    pub nodes: usize,
    /// Edges that pass every filter.
    pub edges: usize,
    /// Edge rows in the range.
    pub rows_in_range: u64,
    /// Edge rows after the port and workload filters.
    pub rows_kept: u64,
    /// Connections on the edges that pass every filter.
    pub connections: u64,
    /// Bytes on them.
    pub bytes: u64,
}

/// `/api/graph`.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Graph {
    /// The range.
    pub range: RangeOut,
    /// The grouping (a level or a name).
    pub group: String,
    /// The nodes of the returned edges, by id.
    pub nodes: Vec<Node>,
    /// The top edges, best first.
    pub edges: Vec<Edge>,
    /// Counts before `limit`.
    pub totals: Totals,
    /// Whether `limit` left edges out.
    pub truncated: bool,
    /// The limit applied.
    pub limit: usize,
    /// Rows of the view whose RTT sketch was unreadable (their quantile columns were used).
    pub rows_unreadable_sketch: u64,
}

/// `/api/node`.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct NodeDetail {
    /// The range.
    pub range: RangeOut,
    /// The grouping.
    pub group: String,
    /// The node.
    pub node: Node,
    /// Edges into it, by bytes.
    pub callers: Vec<Edge>,
    /// Edges out of it, by bytes.
    pub callees: Vec<Edge>,
}

/// One step of a series.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Point {
    /// The step's start, ms since the epoch.
    pub t_ms: u64,
    /// Connections.
    pub connections: u64,
    /// Bytes both ways.
    pub bytes: u64,
    /// Failed connects.
    pub failed_connects: u64,
    /// Retransmits.
    pub retransmits: u64,
}

/// `/api/series`.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Series {
    /// The range.
    pub range: RangeOut,
    /// The client node.
    pub source: String,
    /// The server node.
    pub target: String,
    /// The step, seconds.
    pub step_s: u64,
    /// Every step of the range, zeros included.
    pub points: Vec<Point>,
}

/// One event as the API writes it.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct EventOut {
    /// When, RFC 3339.
    pub at: String,
    /// When, ms since the epoch.
    pub at_ms: u64,
    /// What.
    pub kind: EventKind,
    /// The client.
    pub client: String,
    /// The server.
    pub server: String,
    /// The server port.
    pub server_port: u16,
    /// The job's detail.
    pub detail: String,
}

/// `/api/events`.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Events {
    /// The range.
    pub range: RangeOut,
    /// Events in the range that pass the filters, by kind (before `limit`).
    pub counts: EventCounts,
    /// The newest events first, at most `limit`.
    pub events: Vec<EventOut>,
    /// Whether `limit` left events out.
    pub truncated: bool,
}

fn share(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| part as f64 / whole as f64)
}

fn certainty(agg: &Aggregate<'_>, e: usize) -> Certainty {
    let edge = &agg.edges[e];
    let s = &edge.sums;
    let special = [edge.client, edge.server].iter().any(|&n| agg.nodes[n as usize].kind == NodeKind::Unattributed);
    let class = if special {
        "unattributed"
    } else if edge.unattributed > 0 {
        "partial"
    } else if s.verified.saturating_mul(2) > s.connections {
        "verified"
    } else if s.verified == 0 {
        "one_sided"
    } else {
        "mixed"
    };
    Certainty {
        class,
        verified_share: share(s.verified, s.connections),
        one_sided_share: share(s.one_sided, s.connections),
        disagreement_share: share(s.disagreements, s.connections),
        unattributed_share: share(edge.unattributed, edge.unattributed + s.connections),
        unattributed_connections: edge.unattributed,
        unattributed_reasons: edge.unattributed_reasons.iter().map(|(r, n)| (r.to_string(), *n)).collect(),
    }
}

fn edge_out(agg: &Aggregate<'_>, e: usize) -> Edge {
    let rtt = agg.rtt(e);
    let certainty = certainty(agg, e);
    let edge = &agg.edges[e];
    let (source, target) = (agg.nodes[edge.client as usize].name.clone(), agg.nodes[edge.server as usize].name.clone());
    let s: Sums = edge.sums;
    let mut ports: Vec<PortCount> =
        edge.ports.iter().map(|(&port, &connections)| PortCount { port, connections }).collect();
    ports.sort_by_key(|p| (Reverse(p.connections), p.port));
    let ports_total = ports.len();
    ports.truncate(8);
    let MergedRtt { p50_us, p90_us, p99_us, samples, method } = rtt;
    let [new_dependency, policy_violation, disagreement] = edge.events;
    Edge {
        id: format!("{source}->{target}"),
        source,
        target,
        connections: s.connections,
        bytes_client_to_server: s.bytes_client_to_server,
        bytes_server_to_client: s.bytes_server_to_client,
        bytes: s.bytes(),
        segments: s.segments,
        retransmits: s.retransmits,
        failed_connects: s.failed_connects,
        verified: s.verified,
        disagreements: s.disagreements,
        one_sided: s.one_sided,
        rtt: Rtt { p50_us, p90_us, p99_us, samples, method },
        ports,
        ports_total,
        protocols: edge.protocols.iter().map(|p| p.to_string()).collect(),
        certainty,
        events: EventCounts { new_dependency, policy_violation, disagreement, unspecified: 0 },
    }
}

/// The edges that pass `min_bytes`, ranked (best first; ties by connections, then names).
fn ranked(agg: &Aggregate<'_>, view: &View, rank: Rank) -> Vec<usize> {
    let mut kept: Vec<usize> = (0..agg.edges.len()).filter(|&e| agg.edges[e].sums.bytes() >= view.min_bytes).collect();
    let key = |e: usize| {
        let s = &agg.edges[e].sums;
        match rank {
            Rank::Bytes => s.bytes(),
            Rank::Connections => s.connections,
            Rank::FailedConnects => s.failed_connects,
            Rank::Retransmits => s.retransmits,
            Rank::Disagreements => s.disagreements,
        }
    };
    let name = |e: usize, end: fn(&EdgeAcc<'_>) -> u32| &agg.nodes[end(&agg.edges[e]) as usize].name;
    kept.sort_by(|&a, &b| {
        key(b)
            .cmp(&key(a))
            .then(agg.edges[b].sums.connections.cmp(&agg.edges[a].sums.connections))
            .then_with(|| name(a, |x| x.client).cmp(name(b, |x| x.client)))
            .then_with(|| name(a, |x| x.server).cmp(name(b, |x| x.server)))
    });
    kept
}

/// Node measures over the edges `kept`.
fn nodes_of(agg: &Aggregate<'_>, kept: &[usize]) -> Vec<Node> {
    let mut nodes: BTreeMap<u32, Node> = BTreeMap::new();
    for &e in kept {
        let edge = &agg.edges[e];
        for n in [edge.client, edge.server] {
            nodes.entry(n).or_insert_with(|| {
                let acc = &agg.nodes[n as usize];
                Node {
                    id: acc.name.clone(),
                    kind: acc.kind,
                    members: acc.members,
                    connections_in: 0,
                    connections_out: 0,
                    bytes_in: 0,
                    bytes_out: 0,
                }
            });
        }
        let s = &edge.sums;
        if let Some(c) = nodes.get_mut(&edge.client) {
            c.connections_out += s.connections;
            c.bytes_out += s.bytes();
        }
        if let Some(t) = nodes.get_mut(&edge.server) {
            t.connections_in += s.connections;
            t.bytes_in += s.bytes();
        }
    }
    let mut out: Vec<Node> = nodes.into_values().collect();
    out.sort_by(|a, b| a.id.cmp(&b.id));
    out
}

/// `/api/graph`: the view's nodes and top edges.
pub fn graph(q: &GraphQuery, rows: &EdgeRows, events: &[EventRow]) -> Graph {
    let agg = Aggregate::new(&q.view, rows, events);
    let kept = ranked(&agg, &q.view, q.rank);
    let all_nodes = nodes_of(&agg, &kept);
    let totals = Totals {
        nodes: all_nodes.len(),
        edges: kept.len(),
        rows_in_range: agg.rows_in_range,
        rows_kept: agg.rows_kept,
        connections: kept.iter().map(|&e| agg.edges[e].sums.connections).sum(),
        bytes: kept.iter().map(|&e| agg.edges[e].sums.bytes()).sum(),
    };
    let shown = &kept[..kept.len().min(q.limit)];
    let shown_nodes: std::collections::BTreeSet<&str> = shown
        .iter()
        .flat_map(|&e| [agg.edges[e].client, agg.edges[e].server])
        .map(|n| agg.nodes[n as usize].name.as_str())
        .collect();
    let nodes = all_nodes.into_iter().filter(|n| shown_nodes.contains(n.id.as_str())).collect();
    let edges = shown.iter().map(|&e| edge_out(&agg, e)).collect();
    Graph {
        range: rows.range().into(),
        group: q.view.grouping.label(),
        nodes,
        edges,
        truncated: kept.len() > q.limit,
        totals,
        limit: q.limit,
        rows_unreadable_sketch: agg.rows_unreadable_sketch,
    }
}

/// `/api/node`: a node's callers and callees; `None` when the view has no such node.
pub fn node(q: &NodeQuery, rows: &EdgeRows, events: &[EventRow]) -> Option<NodeDetail> {
    let agg = Aggregate::new(&q.view, rows, events);
    let id = agg.node_named(&q.id)?;
    let kept: Vec<usize> = ranked(&agg, &q.view, Rank::Bytes)
        .into_iter()
        .filter(|&e| agg.edges[e].client == id || agg.edges[e].server == id)
        .collect();
    let node = nodes_of(&agg, &kept).into_iter().find(|n| n.id == q.id)?;
    let (mut callers, mut callees) = (Vec::new(), Vec::new());
    for e in kept {
        let (client, server) = (agg.edges[e].client, agg.edges[e].server);
        let out = edge_out(&agg, e);
        if server == id {
            callers.push(out.clone());
        }
        if client == id {
            callees.push(out);
        }
    }
    Some(NodeDetail { range: rows.range().into(), group: q.view.grouping.label(), node, callers, callees })
}

/// `/api/series`: one edge's measures per step (zeros where it had no rows).
pub fn series(q: &SeriesQuery, rows: &EdgeRows) -> Series {
    let range = rows.range();
    let steps = range.len_ns().div_ceil(q.step_ns);
    let mut points: Vec<Point> = (0..steps)
        .map(|i| Point {
            t_ms: (range.from_ns() + i * q.step_ns) / 1_000_000,
            connections: 0,
            bytes: 0,
            failed_connects: 0,
            retransmits: 0,
        })
        .collect();
    let view = &q.view;
    let has_positive = !view.filter.positive.is_empty();
    // Per distinct name: (is the source node, is the target node, search match).
    let mut memo: HashMap<&str, (bool, bool, NameMatch)> = HashMap::default();
    for r in rows.iter().filter(|r| view.ports.contains(r.server_port)) {
        let (is_source, _, cm) = series_name(&mut memo, &r.client, q);
        let (_, is_target, sm) = series_name(&mut memo, &r.server, q);
        if !(is_source && is_target && NameMatch::keeps(cm, sm, has_positive)) {
            continue;
        }
        let i = ((r.bucket_start_ns - range.from_ns()) / q.step_ns) as usize;
        if let Some(p) = points.get_mut(i) {
            p.connections += r.connections;
            p.bytes += r.bytes();
            p.failed_connects += r.failed_connects;
            p.retransmits += r.retransmits;
        }
    }
    Series {
        range: range.into(),
        source: q.source.clone(),
        target: q.target.clone(),
        step_s: q.step_ns / 1_000_000_000,
        points,
    }
}

/// What a name is to a series: (in the source node, in the target node, search match).
fn series_name<'r>(
    memo: &mut HashMap<&'r str, (bool, bool, NameMatch)>,
    name: &'r str,
    q: &SeriesQuery,
) -> (bool, bool, NameMatch) {
    if let Some(v) = memo.get(name) {
        return *v;
    }
    let (_, node) = q.view.grouping.node(name);
    let v = (node == q.source.as_str(), node == q.target.as_str(), q.view.filter.classify(&[name, &node]));
    memo.insert(name, v);
    v
}

/// `/api/events`: the range's events that pass the filters, newest first.
pub fn events(q: &EventsQuery, events: &[EventRow]) -> Events {
    let has_positive = !q.filter.positive.is_empty();
    let mut kept: Vec<&EventRow> = events
        .iter()
        .filter(|e| q.range.contains(e.at_ns) && q.ports.contains(e.server_port))
        .filter(|e| q.kinds.is_empty() || q.kinds.contains(&e.kind))
        .filter(|e| NameMatch::keeps(q.filter.classify(&[&e.client]), q.filter.classify(&[&e.server]), has_positive))
        .collect();
    kept.sort_by(|a, b| {
        b.at_ns.cmp(&a.at_ns).then_with(|| a.client.cmp(&b.client)).then_with(|| a.server.cmp(&b.server))
    });
    let mut counts = EventCounts::default();
    for e in &kept {
        match e.kind {
            EventKind::NewDependency => counts.new_dependency += 1,
            EventKind::PolicyViolation => counts.policy_violation += 1,
            EventKind::Disagreement => counts.disagreement += 1,
            EventKind::Unspecified => counts.unspecified += 1,
        }
    }
    let truncated = kept.len() > q.limit;
    let events = kept
        .into_iter()
        .take(q.limit)
        .map(|e| EventOut {
            at: format_time(e.at_ns),
            at_ms: e.at_ns / 1_000_000,
            kind: e.kind,
            client: e.client.to_string(),
            server: e.server.to_string(),
            server_port: e.server_port,
            detail: e.detail.to_string(),
        })
        .collect();
    Events { range: q.range.into(), counts, events, truncated }
}
