//! Change events: new dependencies and policy violations from the emitted edges, and the
//! disagreements the two-sided verification found.
//!
//! Time contract (`change_events`): edge rows are exchanged by (client, server, port) and held
//! until the input frontier passes their time, then looked at in (bucket, edge) order, so the
//! events are the same whatever order rows arrived in; events go out at the rows' time. State:
//! per (client, server, port) the last bucket it was seen in (and reported against the policy),
//! dropped once the lookback has passed without it, so the state is bounded by the distinct
//! edges of one lookback.

use std::collections::{BTreeMap, HashMap};

use flowmap_operators::records::{Verdict, VerdictPiece};
use flowmap_operators::Time;
use flowmap_schema as wire;
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::Capability;
use timely::dataflow::Stream;

use super::policy::Policy;

fn event(kind: wire::EventKind, at: Time, e: &wire::Edge, detail: String) -> wire::Event {
    wire::Event {
        schema_version: wire::SCHEMA_VERSION,
        kind: kind as i32,
        at_ns: at,
        client: e.client.clone(),
        server: e.server.clone(),
        server_port: e.server_port,
        detail,
        ..Default::default()
    }
}

/// Whether a node names a workload or an external block (not an unattributed end).
fn known(node: &str) -> bool {
    !node.starts_with("unattributed:")
}

/// Extension trait on a stream of edge rows.
pub trait ChangeEvents<'scope> {
    /// New dependencies (not seen within `lookback` ns) and policy violations (see the module
    /// docs).
    fn change_events(self, lookback: Time, policy: Option<Policy>) -> Stream<'scope, Time, Vec<wire::Event>>;
}

#[derive(Clone, Copy)]
struct Seen {
    /// The latest bucket the edge was seen in.
    last: Time,
    /// The latest bucket a violation was reported for.
    violated: Option<Time>,
}

impl<'scope> ChangeEvents<'scope> for Stream<'scope, Time, Vec<wire::Edge>> {
    fn change_events(self, lookback: Time, policy: Option<Policy>) -> Stream<'scope, Time, Vec<wire::Event>> {
        let exchange = Exchange::new(|e: &wire::Edge| {
            let mut h: u64 = 0xcbf2_9ce4_8422_2325;
            for b in e.client.bytes().chain([0]).chain(e.server.bytes()).chain(e.server_port.to_le_bytes()) {
                h ^= u64::from(b);
                h = h.wrapping_mul(0x0000_0100_0000_01b3);
            }
            h
        });
        self.unary_frontier(exchange, "ChangeEvents", move |_cap, _info| {
            let mut held: BTreeMap<Time, (Capability<Time>, Vec<wire::Edge>)> = BTreeMap::new();
            let mut seen: HashMap<(String, String, u32), Seen> = HashMap::new();
            let mut next_sweep: Time = 0;
            move |(input, frontier), output| {
                let port = output.output_index();
                input.for_each_stamp(|cap, data| {
                    let Some(cap) = cap.retain_least(port) else { return };
                    let entry = held.entry(*cap.time()).or_insert_with(|| (cap, Vec::new()));
                    for batch in data {
                        entry.1.append(batch);
                    }
                });
                while let Some(entry) = held.first_entry() {
                    if frontier.less_equal(entry.key()) {
                        break;
                    }
                    let (cap, mut rows) = entry.remove();
                    rows.sort_by(|a, b| {
                        (a.bucket_start_ns, &a.client, &a.server, a.server_port).cmp(&(
                            b.bucket_start_ns,
                            &b.client,
                            &b.server,
                            b.server_port,
                        ))
                    });
                    let mut session = output.session(&cap);
                    for row in rows {
                        if row.connections == 0 && row.failed_connects == 0
                            || !known(&row.client)
                            || !known(&row.server)
                        {
                            continue;
                        }
                        let key = (row.client.clone(), row.server.clone(), row.server_port);
                        let bucket = row.bucket_start_ns;
                        let s = seen.entry(key).or_insert(Seen { last: 0, violated: None });
                        let new = s.last == 0 || bucket >= s.last.saturating_add(lookback);
                        if new {
                            let detail = if s.last == 0 {
                                "first seen".to_string()
                            } else {
                                format!("not seen for {} s", (bucket - s.last) / 1_000_000_000)
                            };
                            session.give(event(wire::EventKind::NewDependency, bucket, &row, detail));
                        }
                        if let Some(p) = &policy {
                            let due = s.violated.is_none_or(|v| bucket >= v.saturating_add(lookback));
                            if due && !p.allows(&row.client, &row.server, row.server_port as u16) {
                                s.violated = Some(bucket);
                                session.give(event(
                                    wire::EventKind::PolicyViolation,
                                    bucket,
                                    &row,
                                    "no policy rule allows this edge".to_string(),
                                ));
                            }
                        }
                        s.last = s.last.max(bucket);
                    }
                    // Forget edges not seen for a lookback (by event time).
                    let now = *cap.time();
                    if now >= next_sweep {
                        seen.retain(|_, s| s.last.saturating_add(lookback) > now);
                        next_sweep = now.saturating_add(lookback / 16);
                    }
                }
            }
        })
    }
}

/// The disagreements of the verdict pieces, as events at the pieces' times.
pub fn disagreement_events<'scope>(
    verdicts: &Stream<'scope, Time, Vec<VerdictPiece>>,
) -> Stream<'scope, Time, Vec<wire::Event>> {
    verdicts.clone().unary(Pipeline, "Disagreements", |_, _| {
        move |input, output| {
            input.for_each_stamp(|cap, data| {
                let mut session = output.session(&cap);
                for piece in data.flat_map(|b| b.iter()) {
                    for d in &piece.disagreements {
                        let Some(row) = piece.flows.rows.get(d.row as usize) else { continue };
                        let f = flowmap_schema::view::parse_flow(piece.flows.message(row)).unwrap_or_default();
                        let remote = match piece.verdicts.get(d.row as usize) {
                            Some(Verdict::Attributed { name, .. }) => piece.names.get(*name).to_string(),
                            _ => String::new(),
                        };
                        let (peer, claims) = (piece.names.get(d.peer), piece.names.get(d.claims));
                        let evidence = crate::output::wire_evidence(d.evidence);
                        session.give(wire::Event {
                            schema_version: wire::SCHEMA_VERSION,
                            kind: wire::EventKind::Disagreement as i32,
                            at_ns: f.start_ns,
                            client: f.local_workload.to_string(),
                            server: remote,
                            server_port: f.remote_port,
                            detail: format!(
                                "the other end's own record of this connection names {peer:?}; the claims about its address name {claims:?} ({})",
                                d.evidence.name()
                            ),
                            flow_id: row.id,
                            exporter_id: piece.flows.reporter(row).map(|r| r.exporter.clone()).unwrap_or_default(),
                            peer_workload: peer.to_string(),
                            claims_workload: claims.to_string(),
                            claims_evidence: evidence as i32,
                        });
                    }
                }
            });
        }
    })
}
