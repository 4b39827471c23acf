//! Rows to grouped edges: one pass over a range's edge rows that maps every name to its node
//! (once per distinct name), applies the filters, and sums each (client node, server node) pair.
//!
//! Besides the sums, each edge learns how much of its traffic may be missing an end: the
//! connections from one of its client workloads, on one of its ports, to an *unattributed*
//! server, and those from an unattributed client to one of its server workloads on one of its
//! ports (counted once per edge, workload and port, with their reasons). Those connections went
//! somewhere, possibly to this edge's other end: flowmap would not say, and the map shows it.
//! They are taken from every row in the range and ports, whatever the workload search says.
//!
//! RTT sketches are only collected here; merging them costs more than everything else, so
//! [`Aggregate::rtt`] merges those of the edges actually returned.

use std::collections::BTreeMap;

use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};

use crate::filter::NameMatch;
use crate::group::NodeKind;
use crate::query::View;
use crate::row::{EdgeRow, Endpoint, EventKind, EventRow};
use crate::source::EdgeRows;
use flowmap_schema::sketch::RttSketch;

/// Per-name facts, computed once per distinct name.
struct NameInfo<'a> {
    node: u32,
    matched: NameMatch,
    /// The reason, for an unattributed end.
    unattributed: Option<&'a str>,
    /// Whether a kept row has used it (for the node's member count).
    counted: bool,
}

/// A node being summed.
#[derive(Debug)]
pub(crate) struct NodeAcc {
    pub kind: NodeKind,
    pub name: String,
    /// Distinct raw names with a kept row.
    pub members: u64,
}

/// The sums of one edge.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Sums {
    pub connections: u64,
    pub bytes_client_to_server: u64,
    pub bytes_server_to_client: u64,
    pub segments: u64,
    pub retransmits: u64,
    pub failed_connects: u64,
    pub verified: u64,
    pub disagreements: u64,
    pub one_sided: u64,
}

impl Sums {
    fn add(&mut self, r: &EdgeRow) {
        self.connections = self.connections.saturating_add(r.connections);
        self.bytes_client_to_server = self.bytes_client_to_server.saturating_add(r.bytes_client_to_server);
        self.bytes_server_to_client = self.bytes_server_to_client.saturating_add(r.bytes_server_to_client);
        self.segments = self.segments.saturating_add(r.segments);
        self.retransmits = self.retransmits.saturating_add(r.retransmits);
        self.failed_connects = self.failed_connects.saturating_add(r.failed_connects);
        self.verified = self.verified.saturating_add(r.verified);
        self.disagreements = self.disagreements.saturating_add(r.disagreements);
        self.one_sided = self.one_sided.saturating_add(r.one_sided);
    }

    /// Bytes both ways.
    pub fn bytes(&self) -> u64 {
        self.bytes_client_to_server.saturating_add(self.bytes_server_to_client)
    }
}

/// An edge being summed.
#[derive(Debug)]
pub(crate) struct EdgeAcc<'a> {
    pub client: u32,
    pub server: u32,
    pub sums: Sums,
    /// Connections per server port.
    pub ports: HashMap<u16, u64>,
    pub protocols: Vec<&'a str>,
    /// Sketches of the rows that had one.
    sketches: Vec<&'a RttSketch>,
    /// (p50, p90, p99, weight) of every row with an RTT (for when some row has no sketch).
    rtt_rows: Vec<RowRtt>,
    rows_without_sketch: u64,
    /// Connections on this edge's client workloads and ports whose server went unattributed, and
    /// on its server workloads and ports whose client did.
    pub unattributed: u64,
    pub unattributed_reasons: BTreeMap<&'a str, u64>,
    /// Events in the range on this edge, by kind ([`EventKind::ALL`] order).
    pub events: [u64; 3],
}

/// A row's RTT quantiles (p50, p90, p99, from its columns or else its sketch) and weight (its
/// connections, at least 1).
type RowRtt = (Option<f64>, Option<f64>, Option<f64>, u64);

/// The merged RTT of an edge.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct MergedRtt {
    pub p50_us: Option<f64>,
    pub p90_us: Option<f64>,
    pub p99_us: Option<f64>,
    /// Samples in the merged sketch (`None` when approximated from rows).
    pub samples: Option<u64>,
    /// `sketch` (every row with an RTT had a sketch), `rows` (connection-weighted mean of the
    /// rows' quantiles: an approximation) or `none`.
    pub method: &'static str,
}

/// Connections with an unattributed end, by (workload name, port), with reasons.
type Unattributed<'a> = HashMap<(u32, u16), (u64, BTreeMap<&'a str, u64>)>;

/// A range's rows, grouped and filtered.
pub(crate) struct Aggregate<'a> {
    names: HashMap<&'a str, u32>,
    /// The same, by the name's address and length: the sources share one allocation per
    /// distinct name, so most rows are found here without hashing their text.
    by_address: HashMap<(usize, usize), u32>,
    infos: Vec<NameInfo<'a>>,
    node_ids: HashMap<(NodeKind, String), u32>,
    pub nodes: Vec<NodeAcc>,
    pub edges: Vec<EdgeAcc<'a>>,
    edge_ids: HashMap<(u32, u32), u32>,
    /// Rows read (in range) and kept (after the filters).
    pub rows_in_range: u64,
    pub rows_kept: u64,
    /// Kept rows whose RTT sketch was unreadable (their quantile columns were used).
    pub rows_unreadable_sketch: u64,
}

impl<'a> Aggregate<'a> {
    /// Groups and sums `rows` as `view` says, and marks the edges `events` name.
    pub fn new(view: &View, rows: &'a EdgeRows, events: &'a [EventRow]) -> Self {
        let mut agg = Aggregate {
            names: HashMap::new(),
            by_address: HashMap::new(),
            infos: Vec::new(),
            node_ids: HashMap::new(),
            nodes: Vec::new(),
            edges: Vec::new(),
            edge_ids: HashMap::new(),
            rows_in_range: 0,
            rows_kept: 0,
            rows_unreadable_sketch: 0,
        };
        let has_positive = !view.filter.positive.is_empty();
        // Connections with an unattributed end, whatever the search says.
        let (mut to_unattributed, mut from_unattributed): (Unattributed<'a>, Unattributed<'a>) =
            (HashMap::new(), HashMap::new());
        for r in rows.iter().filter(|r| view.ports.contains(r.server_port)) {
            let (c_un, s_un) = (is_unattributed(&r.client), is_unattributed(&r.server));
            if s_un && !c_un {
                let c = agg.intern(view, &r.client);
                let e = to_unattributed.entry((c, r.server_port)).or_default();
                e.0 += r.connections;
                *e.1.entry(reason(&r.server)).or_default() += r.connections;
            } else if c_un && !s_un {
                let s = agg.intern(view, &r.server);
                let e = from_unattributed.entry((s, r.server_port)).or_default();
                e.0 += r.connections;
                *e.1.entry(reason(&r.client)).or_default() += r.connections;
            }
        }
        let mut shares_seen: HashSet<(u32, u32, u16, bool)> = HashSet::new();
        for r in rows.iter() {
            agg.rows_in_range += 1;
            if !view.ports.contains(r.server_port) {
                continue;
            }
            let (c, s) = (agg.intern(view, &r.client), agg.intern(view, &r.server));
            let (ci, si) = (&agg.infos[c as usize], &agg.infos[s as usize]);
            if !NameMatch::keeps(ci.matched, si.matched, has_positive) {
                continue;
            }
            agg.rows_kept += 1;
            let both_attributed = ci.unattributed.is_none() && si.unattributed.is_none();
            let e = agg.edge(ci.node, si.node);
            for n in [c, s] {
                let info = &mut agg.infos[n as usize];
                if !info.counted {
                    info.counted = true;
                    agg.nodes[info.node as usize].members += 1;
                }
            }
            let edge = &mut agg.edges[e as usize];
            edge.sums.add(r);
            *edge.ports.entry(r.server_port).or_default() += r.connections;
            if !edge.protocols.contains(&&*r.protocol) {
                edge.protocols.push(&r.protocol);
            }
            agg.rows_unreadable_sketch += u64::from(r.rtt_sketch.is_unreadable());
            let sketch = r.rtt_sketch.get();
            match sketch {
                Some(sketch) => edge.sketches.push(sketch),
                None if r.rtt_p50_us.is_some() || r.rtt_p99_us.is_some() => edge.rows_without_sketch += 1,
                None => {}
            }
            if sketch.is_some() || r.rtt_p50_us.is_some() || r.rtt_p99_us.is_some() {
                let q = |v: Option<f64>, k: f64| v.or_else(|| sketch.and_then(|s| s.quantile(k)));
                edge.rtt_rows.push((
                    q(r.rtt_p50_us, 0.5),
                    q(r.rtt_p90_us, 0.9),
                    q(r.rtt_p99_us, 0.99),
                    r.connections.max(1),
                ));
            }
            if both_attributed {
                let shares = [
                    (to_unattributed.get(&(c, r.server_port)), c, false),
                    (from_unattributed.get(&(s, r.server_port)), s, true),
                ];
                for (share, name, server_side) in shares {
                    if let Some((n, reasons)) = share {
                        if shares_seen.insert((e, name, r.server_port, server_side)) {
                            edge.unattributed += n;
                            for (reason, k) in reasons {
                                *edge.unattributed_reasons.entry(reason).or_default() += k;
                            }
                        }
                    }
                }
            }
        }
        for ev in events.iter().filter(|ev| rows.range().contains(ev.at_ns) && view.ports.contains(ev.server_port)) {
            let (c, s) = (agg.intern(view, &ev.client), agg.intern(view, &ev.server));
            let (cn, sn) = (agg.infos[c as usize].node, agg.infos[s as usize].node);
            let k = EventKind::ALL.iter().position(|k| *k == ev.kind);
            if let (Some(&e), Some(k)) = (agg.edge_ids.get(&(cn, sn)), k) {
                agg.edges[e as usize].events[k] += 1;
            }
        }
        agg
    }

    /// The index of a raw name, computing its node and filter match the first time.
    fn intern(&mut self, view: &View, name: &'a str) -> u32 {
        let address = (name.as_ptr() as usize, name.len());
        if let Some(&i) = self.by_address.get(&address) {
            return i;
        }
        if let Some(&i) = self.names.get(name) {
            self.by_address.insert(address, i);
            return i;
        }
        let (kind, node_name) = view.grouping.node(name);
        let matched = view.filter.classify(&[name, &node_name]);
        let node = match self.node_ids.get(&(kind, node_name.to_string())) {
            Some(&n) => n,
            None => {
                let n = self.nodes.len() as u32;
                self.node_ids.insert((kind, node_name.to_string()), n);
                self.nodes.push(NodeAcc { kind, name: node_name.into_owned(), members: 0 });
                n
            }
        };
        let unattributed = match Endpoint::parse(name) {
            Endpoint::Unattributed(reason) => Some(reason),
            _ => None,
        };
        let i = self.infos.len() as u32;
        self.infos.push(NameInfo { node, matched, unattributed, counted: false });
        self.names.insert(name, i);
        self.by_address.insert(address, i);
        i
    }

    fn edge(&mut self, client: u32, server: u32) -> u32 {
        if let Some(&e) = self.edge_ids.get(&(client, server)) {
            return e;
        }
        let e = self.edges.len() as u32;
        self.edge_ids.insert((client, server), e);
        self.edges.push(EdgeAcc {
            client,
            server,
            sums: Sums::default(),
            ports: HashMap::new(),
            protocols: Vec::new(),
            sketches: Vec::new(),
            rtt_rows: Vec::new(),
            rows_without_sketch: 0,
            unattributed: 0,
            unattributed_reasons: BTreeMap::new(),
            events: [0; 3],
        });
        e
    }

    /// The node index of a node name, if the view has it.
    pub fn node_named(&self, name: &str) -> Option<u32> {
        self.nodes.iter().position(|n| n.name == name).map(|i| i as u32)
    }

    /// Merges the RTT of edge `e`.
    pub fn rtt(&self, e: usize) -> MergedRtt {
        let edge = &self.edges[e];
        if edge.rows_without_sketch == 0 {
            if let Some(merged) = merge_all(&edge.sketches) {
                return MergedRtt {
                    p50_us: merged.quantile(0.5),
                    p90_us: merged.quantile(0.9),
                    p99_us: merged.quantile(0.99),
                    samples: Some(merged.count()),
                    method: "sketch",
                };
            }
        }
        if edge.rtt_rows.is_empty() {
            return MergedRtt { p50_us: None, p90_us: None, p99_us: None, samples: None, method: "none" };
        }
        // Summed in value order, so that the result does not depend on the order the source
        // handed the rows over in (files of a lake, pushes of the job): f64 addition is not
        // associative.
        let mean = |pick: fn(&RowRtt) -> Option<f64>| {
            let mut terms: Vec<(f64, u64)> = edge.rtt_rows.iter().filter_map(|r| pick(r).map(|v| (v, r.3))).collect();
            terms.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            let (sum, weight) = terms.iter().fold((0.0, 0.0), |(s, w), (v, k)| (s + v * *k as f64, w + *k as f64));
            (weight > 0.0).then(|| sum / weight)
        };
        MergedRtt { p50_us: mean(|r| r.0), p90_us: mean(|r| r.1), p99_us: mean(|r| r.2), samples: None, method: "rows" }
    }
}

/// Merges sketches pairwise, as a balanced tree: a merge costs the size of both sketches, so
/// merging `n` small sketches one by one into a growing one costs `n` times the final size
/// (the API's slowest part at coarse group levels, where an edge has thousands of rows), while
/// the tree costs the total size per level, `log n` levels.
fn merge_all(sketches: &[&RttSketch]) -> Option<RttSketch> {
    let mut level: Vec<RttSketch> = sketches
        .chunks(2)
        .map(|pair| {
            let mut m = pair[0].clone();
            if let Some(b) = pair.get(1) {
                m.merge(b);
            }
            m
        })
        .collect();
    while level.len() > 1 {
        let mut next = Vec::with_capacity(level.len().div_ceil(2));
        let mut it = level.into_iter();
        while let Some(mut a) = it.next() {
            if let Some(b) = it.next() {
                a.merge(&b);
            }
            next.push(a);
        }
        level = next;
    }
    level.pop()
}

fn is_unattributed(name: &str) -> bool {
    name.starts_with(Endpoint::UNATTRIBUTED)
}

fn reason(name: &str) -> &str {
    name.strip_prefix(Endpoint::UNATTRIBUTED).unwrap_or(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tree_merges_equal_one_by_one_merges() {
        let sketches: Vec<RttSketch> = (0..9u64)
            .map(|i| {
                let mut s = RttSketch::default();
                s.add(100.0 * (i + 1) as f64, i + 1);
                s.add(7.0, 1);
                s
            })
            .collect();
        for n in [0, 1, 2, 3, 8, 9] {
            let refs: Vec<&RttSketch> = sketches[..n].iter().collect();
            let one_by_one = refs.split_first().map(|(first, rest)| {
                let mut m = (*first).clone();
                rest.iter().for_each(|s| m.merge(s));
                m
            });
            assert_eq!(merge_all(&refs), one_by_one, "{n} sketches");
        }
    }
}
