//! `edge_buckets`: sums edge updates per (bucket, client, server, port) and emits each bucket
//! once it is complete.
//!
//! Time contract: updates are exchanged by edge (so each edge is summed by one worker) and held,
//! under the least capability of their bucket, until the input frontier passes the bucket's end
//! plus `allowance`; then the bucket's sums go out, one row per edge, at that capability's time
//! (its `emitted_at`). An update at a time past its bucket's end plus `allowance` (a late
//! record) is summed apart, per its time, and goes out as a delta once the frontier passes that
//! time: what a bucket's first row holds never depends on when a late update happened to arrive. The
//! rows of one emission are sorted by edge, so the output is the same whatever order the updates
//! arrived in. State: the open buckets only.

use std::collections::{BTreeMap, HashMap};

use differential_dataflow::difference::Semigroup;
use flowmap_operators::edges::{EdgeKey, Measures};
use flowmap_operators::Time;
use flowmap_schema as wire;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::Capability;
use timely::dataflow::Stream;

/// The output row of one edge of one bucket.
pub fn edge_row(key: &EdgeKey, bucket_len: Time, emitted_at: Time, m: &Measures) -> wire::Edge {
    let q = |q: f64| m.rtt.quantile(q).unwrap_or(0.0);
    wire::Edge {
        schema_version: wire::SCHEMA_VERSION,
        bucket_start_ns: key.bucket,
        bucket_s: (bucket_len / 1_000_000_000) as u32,
        client: key.client.clone(),
        server: key.server.clone(),
        server_port: u32::from(key.server_port),
        protocol: "tcp".into(),
        emitted_at_ns: emitted_at,
        connections: m.connections,
        bytes_client_to_server: m.bytes_client_to_server,
        bytes_server_to_client: m.bytes_server_to_client,
        segments: m.segments,
        retransmits: m.retransmits,
        failed_connects: m.failed_connects,
        verified: m.verified,
        disagreements: m.disagreements,
        one_sided: m.one_sided,
        rtt_p50_us: q(0.5),
        rtt_p90_us: q(0.9),
        rtt_p99_us: q(0.99),
        rtt_sketch: m.rtt.to_bytes(),
    }
}

fn hash_key(k: &EdgeKey) -> u64 {
    // FNV-1a over the parts: the same in every process.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in k.client.bytes().chain([0]).chain(k.server.bytes()).chain(k.server_port.to_le_bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Extension trait on a stream of edge updates.
pub trait EdgeBuckets<'scope> {
    /// Sums and emits per bucket (see the module docs); `bucket_len` and `allowance` in ns.
    fn edge_buckets(self, bucket_len: Time, allowance: Time) -> Stream<'scope, Time, Vec<wire::Edge>>;
}

type Pending = (Capability<Time>, HashMap<(String, String, u16), Measures>);

impl<'scope> EdgeBuckets<'scope> for Stream<'scope, Time, Vec<(EdgeKey, Time, Measures)>> {
    fn edge_buckets(self, bucket_len: Time, allowance: Time) -> Stream<'scope, Time, Vec<wire::Edge>> {
        let exchange = Exchange::new(|(k, _, _): &(EdgeKey, Time, Measures)| hash_key(k));
        self.unary_frontier(exchange, "EdgeBuckets", move |_cap, _info| {
            // Open sums by (bucket, late time): `None` collects a bucket's on-time updates (at
            // times up to its end plus the allowance), `Some(t)` the late updates at time `t`.
            // Keeping them apart makes what goes out, and when, independent of arrival order.
            let mut open: BTreeMap<(Time, Option<Time>), Pending> = BTreeMap::new();
            move |(input, frontier), output| {
                let port = output.output_index();
                input.for_each_stamp(|cap, data| {
                    let Some(cap) = cap.retain_least(port) else { return };
                    let at = *cap.time();
                    for batch in data {
                        for (key, _time, m) in batch.drain(..) {
                            let complete = key.bucket.saturating_add(bucket_len).saturating_add(allowance);
                            let class = (at > complete).then_some(at);
                            let (held, sums) =
                                open.entry((key.bucket, class)).or_insert_with(|| (cap.clone(), HashMap::new()));
                            if cap.time() < held.time() {
                                *held = cap.clone();
                            }
                            let EdgeKey { client, server, server_port, .. } = key;
                            match sums.get_mut(&(client.clone(), server.clone(), server_port)) {
                                Some(sum) => sum.plus_equals(&m),
                                None => {
                                    sums.insert((client, server, server_port), m);
                                }
                            }
                        }
                    }
                });
                // Emit every sum whose bucket end (plus the allowance) and whose held updates
                // the frontier has passed.
                let ready: Vec<(Time, Option<Time>)> = open
                    .iter()
                    .filter(|((bucket, _), (cap, _))| {
                        let complete = bucket.saturating_add(bucket_len).saturating_add(allowance);
                        !frontier.less_equal(&complete) && !frontier.less_equal(cap.time())
                    })
                    .map(|(k, _)| *k)
                    .collect();
                for class in ready {
                    let Some((cap, sums)) = open.remove(&class) else { continue };
                    let mut rows: Vec<_> = sums.into_iter().collect();
                    rows.sort_unstable_by(|a, b| a.0.cmp(&b.0));
                    let at = *cap.time();
                    let mut session = output.session(&cap);
                    for ((client, server, server_port), m) in rows {
                        let key = EdgeKey { bucket: class.0, client, server, server_port };
                        session.give(edge_row(&key, bucket_len, at, &m));
                    }
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use timely::dataflow::operators::capture::Event;
    use timely::dataflow::operators::{Capture, Concat, ToStream};

    const S: Time = 1_000_000_000;

    type Update = (EdgeKey, Time, Measures);

    /// Moves each update to the dataflow time it carries (timely 0.32 has no `delay`).
    fn at_own_time<'s>(stream: Stream<'s, Time, Vec<Update>>) -> Stream<'s, Time, Vec<Update>> {
        use timely::dataflow::channels::pact::Pipeline;
        use timely::dataflow::operators::generic::operator::Operator;
        stream.unary(Pipeline, "AtOwnTime", |_, _| {
            move |input, output| {
                input.for_each(|cap, data| {
                    for update in data.drain(..) {
                        output.session(&cap.delayed(&update.1, 0)).give(update);
                    }
                });
            }
        })
    }

    fn key(bucket: Time, client: &str) -> EdgeKey {
        EdgeKey { bucket, client: client.into(), server: "db".into(), server_port: 5432 }
    }

    /// Exact output: a bucket's updates summed and emitted once complete, at the least time of
    /// its updates; a late update for an emitted bucket goes out as a delta at its own time.
    #[test]
    fn buckets_are_summed_and_emitted_once_complete() {
        let one = Measures { connections: 1, bytes_client_to_server: 10, ..Default::default() };
        let updates = vec![
            (key(0, "a"), 5 * S, one.clone()),
            (key(0, "a"), 7 * S, one.clone()),
            (key(0, "b"), 9 * S, one.clone()),
            (key(60 * S, "a"), 61 * S, one.clone()),
        ];
        let out = timely::example(move |scope| {
            let late = at_own_time(vec![(key(0, "a"), 300 * S, one.clone())].to_stream(scope));
            at_own_time(updates.to_stream(scope)).concat(late).edge_buckets(60 * S, 3 * S).capture()
        });
        let mut rows: Vec<(Time, u64, String, u64, u64)> = out
            .try_iter()
            .filter_map(|event| match event {
                Event::Messages(t, rows) => Some((*t.expect_singleton(), rows)),
                Event::Progress(_) => None,
            })
            .flat_map(|(t, rows)| {
                rows.into_iter().map(move |r| (t, r.bucket_start_ns, r.client, r.connections, r.emitted_at_ns))
            })
            .collect();
        rows.sort();
        assert_eq!(
            rows,
            vec![
                (5 * S, 0, "a".into(), 2, 5 * S),
                (5 * S, 0, "b".into(), 1, 5 * S),
                (61 * S, 60 * S, "a".into(), 1, 61 * S),
                (300 * S, 0, "a".into(), 1, 300 * S),
            ]
        );
    }
}
