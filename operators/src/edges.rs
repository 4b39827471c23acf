//! `edge_updates`: from flow records with verdicts to updates of dependency edges.
//!
//! An edge is (time bucket, client, server, server port): who called whom on what port, with
//! how many connections, bytes each way, segments, retransmits, failed connects, how sure (the
//! two-sided verification of its connections) and a round-trip-time sketch ([`Measures`]).
//! Client and server are workload names, `external:<prefix>` for addresses outside the fleet
//! (grouped by a prefix length, so the number of edges stays bounded), or
//! `unattributed:<reason>` for an end left unattributed.
//!
//! A connection counts once: only the records of the end the lookup chose (`Check::counts`;
//! when both ends reported it, one of them), and its connection, failed connect and
//! verification only at its first record. Bytes, segments and retransmits are deltas: a slice
//! carries its counters so far, so each record adds what grew since the previous record of the
//! same connection. A connection counts in the bucket of its start, a delta in the bucket of its
//! record's end.
//!
//! Time contract: updates go out at the time of the record they come from; nothing is held. The
//! operator keeps, per connection with several records, the counters of its latest record, and
//! forgets them `retention` after that record (by the input frontier).
//!
//! ```
//! use flowmap_operators::edges::{EdgeParams, EdgeUpdates};
//! use flowmap_operators::records::VerdictPiece;
//! use timely::dataflow::operators::{Capture, ToStream, capture::Extract};
//!
//! let params = EdgeParams { bucket: 60_000_000_000, v4_prefix: 24, v6_prefix: 48, retention: 900_000_000_000 };
//! let out = timely::example(move |scope| {
//!     Vec::<VerdictPiece>::new().to_stream(scope).edge_updates(params).capture()
//! });
//! assert!(out.extract().is_empty());
//! ```

use std::collections::{BTreeMap, HashMap};

use differential_dataflow::difference::{IsZero, Monoid, Semigroup};
use serde::{Deserialize, Serialize};
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::Stream;

use crate::records::{direction, Verdict, VerdictPiece, Verification};
use crate::sketch::RttSketch;
use crate::types::{Ip, Reason, Time};

/// Settings of the edges.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EdgeParams {
    /// Bucket length, ns (edges are per bucket of connection start / record end).
    pub bucket: Time,
    /// External IPv4 addresses are grouped by this prefix length.
    pub v4_prefix: u8,
    /// External IPv6 addresses are grouped by this prefix length.
    pub v6_prefix: u8,
    /// How long the counters of a connection's latest record are kept for the next one's delta.
    pub retention: Time,
}

/// An edge: who called whom on what port, in one time bucket.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct EdgeKey {
    /// Start of the bucket, ns.
    pub bucket: Time,
    /// The client end's node (see the module docs).
    pub client: String,
    /// The server end's node.
    pub server: String,
    /// The server's port.
    pub server_port: u16,
}

/// What an edge carries; also the difference type of the edge collection (updates add up).
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Measures {
    /// Connections started.
    pub connections: u64,
    /// Payload bytes from client to server.
    pub bytes_client_to_server: u64,
    /// Payload bytes from server to client.
    pub bytes_server_to_client: u64,
    /// Segments, both ways.
    pub segments: u64,
    /// Retransmitted segments.
    pub retransmits: u64,
    /// Connections that never established (refused, timed out).
    pub failed_connects: u64,
    /// Connections whose other end's record names the remote workload (`agree`, `peer_only`).
    pub verified: u64,
    /// Connections whose two ends disagree.
    pub disagreements: u64,
    /// Connections seen by one end only.
    pub one_sided: u64,
    /// Smoothed round-trip times of the records, microseconds.
    pub rtt: RttSketch,
}

impl IsZero for Measures {
    fn is_zero(&self) -> bool {
        self.connections == 0
            && self.bytes_client_to_server == 0
            && self.bytes_server_to_client == 0
            && self.segments == 0
            && self.retransmits == 0
            && self.failed_connects == 0
            && self.verified == 0
            && self.disagreements == 0
            && self.one_sided == 0
            && self.rtt.is_empty()
    }
}

impl Semigroup for Measures {
    fn plus_equals(&mut self, o: &Self) {
        self.connections += o.connections;
        self.bytes_client_to_server += o.bytes_client_to_server;
        self.bytes_server_to_client += o.bytes_server_to_client;
        self.segments += o.segments;
        self.retransmits += o.retransmits;
        self.failed_connects += o.failed_connects;
        self.verified += o.verified;
        self.disagreements += o.disagreements;
        self.one_sided += o.one_sided;
        self.rtt.merge(&o.rtt);
    }
}

impl Monoid for Measures {
    fn zero() -> Self {
        Measures::default()
    }
}

/// The node name of an address outside the fleet: `external:<address>/<prefix>`.
pub fn external_node(ip: Ip, params: &EdgeParams) -> String {
    let addr = ip.to_addr();
    let (bits, width) = match addr {
        std::net::IpAddr::V4(_) => (u32::from(params.v4_prefix.min(32)), 32),
        std::net::IpAddr::V6(_) => (u32::from(params.v6_prefix.min(128)), 128),
    };
    let keep = 128 - width + bits;
    let mask = if keep == 0 { 0 } else { u128::MAX << (128 - keep) };
    format!("external:{}/{bits}", Ip(ip.0 & mask).to_addr())
}

/// The node name of an end left unattributed for `reason`.
pub fn unattributed_node(reason: &str) -> String {
    format!("unattributed:{reason}")
}

/// Counters of a record.
#[derive(Clone, Copy, Debug, Default)]
struct Counters {
    sent: u64,
    received: u64,
    segments: u64,
    retransmits: u64,
}

/// Extension trait on a stream of verdict pieces.
pub trait EdgeUpdates<'scope> {
    /// The edge updates of the records (see the module docs), as differential updates.
    fn edge_updates(self, params: EdgeParams) -> Stream<'scope, Time, Vec<(EdgeKey, Time, Measures)>>;
}

impl<'scope> EdgeUpdates<'scope> for Stream<'scope, Time, Vec<VerdictPiece>> {
    fn edge_updates(self, params: EdgeParams) -> Stream<'scope, Time, Vec<(EdgeKey, Time, Measures)>> {
        self.unary_frontier(Pipeline, "EdgeUpdates", move |_cap, _info| {
            let mut last: HashMap<u64, (Counters, Time)> = HashMap::new();
            let mut forget: BTreeMap<Time, Vec<u64>> = BTreeMap::new();
            move |(input, frontier), output| {
                input.for_each_stamp(|cap, data| {
                    let Some(&time) = cap.least() else { return };
                    let mut session = output.session(&cap);
                    for piece in data.flat_map(|batch| batch.iter()) {
                        for (i, (row, verdict)) in piece.iter().enumerate() {
                            let check = piece.check(i);
                            if !check.counts {
                                continue;
                            }
                            let Ok(f) = flowmap_schema::view::parse_flow(piece.flows.message(row)) else { continue };
                            let now = Counters {
                                sent: f.bytes_sent,
                                received: f.bytes_received,
                                segments: f.segments_sent.saturating_add(f.segments_received),
                                retransmits: u64::from(f.retransmits),
                            };
                            let before = if row.one_of_several() {
                                let before = last.get(&row.id).map(|(c, _)| *c).unwrap_or_default();
                                if f.open {
                                    last.insert(row.id, (now, time));
                                    forget.entry(time.saturating_add(params.retention)).or_default().push(row.id);
                                } else {
                                    last.remove(&row.id);
                                }
                                before
                            } else {
                                Counters::default()
                            };
                            let local = if f.local_workload.is_empty() {
                                unattributed_node("no_local_workload")
                            } else {
                                f.local_workload.to_string()
                            };
                            let remote = match verdict {
                                Verdict::Attributed { name, .. } => piece.names.get(*name).to_string(),
                                Verdict::Unattributed(Reason::External) => external_node(row.remote, &params),
                                Verdict::Unattributed(reason) => unattributed_node(reason.name()),
                            };
                            let local_is_client = match row.direction {
                                direction::CLIENT => true,
                                direction::SERVER => false,
                                // Unknown: the end on the higher port is the client.
                                _ => f.local_port >= f.remote_port,
                            };
                            let (client, server, server_port, c2s, s2c) = if local_is_client {
                                (
                                    local,
                                    remote,
                                    row.remote_port,
                                    (now.sent, before.sent),
                                    (now.received, before.received),
                                )
                            } else {
                                (
                                    remote,
                                    local,
                                    f.local_port as u16,
                                    (now.received, before.received),
                                    (now.sent, before.sent),
                                )
                            };
                            let delta = Measures {
                                bytes_client_to_server: c2s.0.saturating_sub(c2s.1),
                                bytes_server_to_client: s2c.0.saturating_sub(s2c.1),
                                segments: now.segments.saturating_sub(before.segments),
                                retransmits: now.retransmits.saturating_sub(before.retransmits),
                                rtt: {
                                    let mut s = RttSketch::default();
                                    if f.srtt_us > 0 {
                                        s.add(f64::from(f.srtt_us), 1);
                                    }
                                    s
                                },
                                ..Default::default()
                            };
                            let bucket = |t: Time| t - t % params.bucket.max(1);
                            if check.first {
                                let started = Measures {
                                    connections: 1,
                                    failed_connects: u64::from(f.connect_error != 0),
                                    verified: u64::from(matches!(
                                        check.verification,
                                        Verification::Agree | Verification::PeerOnly
                                    )),
                                    disagreements: u64::from(check.verification == Verification::Disagree),
                                    one_sided: u64::from(check.verification == Verification::OneSided),
                                    ..Default::default()
                                };
                                let key = EdgeKey {
                                    bucket: bucket(f.start_ns),
                                    client: client.clone(),
                                    server: server.clone(),
                                    server_port,
                                };
                                session.give((key, time, started));
                            }
                            if !delta.is_zero() {
                                let key = EdgeKey { bucket: bucket(f.end_ns), client, server, server_port };
                                session.give((key, time, delta));
                            }
                        }
                    }
                });
                // Forget connections whose latest record is older than the retention.
                while let Some(entry) = forget.first_entry() {
                    if frontier.less_equal(entry.key()) {
                        break;
                    }
                    let (due, ids) = entry.remove_entry();
                    for id in ids {
                        if last.get(&id).is_some_and(|(_, t)| t.saturating_add(params.retention) <= due) {
                            last.remove(&id);
                        }
                    }
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn external_nodes_group_by_prefix() {
        let p = EdgeParams { bucket: 1, v4_prefix: 24, v6_prefix: 48, retention: 1 };
        assert_eq!(external_node(Ip::v4([198, 51, 100, 77]), &p), "external:198.51.100.0/24");
        let v6 = Ip::from_addr("2001:db8:1:2:3::9".parse().unwrap());
        assert_eq!(external_node(v6, &p), "external:2001:db8:1::/48");
        let p0 = EdgeParams { v4_prefix: 0, ..p };
        assert_eq!(external_node(Ip::v4([198, 51, 100, 77]), &p0), "external:0.0.0.0/0");
    }

    #[test]
    fn measures_add_up() {
        let mut a = Measures { connections: 1, bytes_client_to_server: 10, ..Default::default() };
        a.rtt.add(100.0, 1);
        let mut b = Measures { connections: 2, one_sided: 1, ..Default::default() };
        b.rtt.add(200.0, 2);
        a.plus_equals(&b);
        assert_eq!((a.connections, a.bytes_client_to_server, a.one_sided, a.rtt.count()), (3, 10, 1, 3));
        assert!(!a.is_zero() && Measures::zero().is_zero());
    }
}
