//! Interval queries (the ends of cloud flow log rows) through the `Attribute` operator: the
//! same index and rule as flows, one owner over the whole interval.

use flowmap_operators::records::*;
use flowmap_operators::*;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::{capture::Extract, Capture, ToStream};

const S: Time = 1_000_000_000;

fn query(record: u64, end: u8, ip: Ip, from: Time, to: Time) -> IntervalQuery {
    IntervalQuery { record, end, ip, port: 443, from, to }
}

/// What each query's verdict says, by (record, end).
fn answers(queries: Vec<(Time, IntervalQuery)>, workers: usize) -> Vec<(u64, u8, Result<String, String>)> {
    let db = Ip::v4([10, 0, 0, 7]);
    let mut evidence = EvidencePiece::new(db.worker(workers));
    let old = evidence.names.push("db-old");
    let new = evidence.names.push("db-new");
    evidence.claims.push(ClaimIn { ip: db, port: 0, kind: EvidenceKind::Heartbeat, from: 0, to: 300 * S, name: old });
    evidence.claims.push(ClaimIn {
        ip: db,
        port: 0,
        kind: EvidenceKind::Heartbeat,
        from: 300 * S,
        to: 900 * S,
        name: new,
    });
    let params = AttributeParams {
        index: IndexParams { guard: 2 * S, retention: 1_200 * S, peer_horizon: 70 * S },
        fuel: 1_000,
        names: true,
    };
    let config = timely::Config::process(workers);
    let results = timely::execute(config, move |worker| {
        let index = worker.index();
        let evidence = evidence.clone();
        let queries = queries.clone();
        worker.dataflow::<Time, _, _>(move |scope| {
            // Worker 0 brings everything; the exchanges route it.
            let (evidence, queries) = if index == 0 { (vec![evidence], queries) } else { (Vec::new(), Vec::new()) };
            let evidence = evidence.to_stream(scope);
            let intervals = queries
                .into_iter()
                .map(|(at, q)| (IntervalPiece { worker: q.ip.worker(workers) as u32, queries: vec![q] }, at))
                .collect::<Vec<_>>()
                .to_stream(scope)
                .unary::<timely::container::CapacityContainerBuilder<Vec<IntervalPiece>>, _, _, _>(
                    Pipeline,
                    "At",
                    |_, _| {
                        move |input, output| {
                            input.for_each(|cap, data: &mut Vec<(IntervalPiece, Time)>| {
                                for (piece, at) in data.drain(..) {
                                    let port = output.output_index();
                                    output.session(&cap.delayed(&at, port)).give(piece);
                                }
                            })
                        }
                    },
                );
            let flows = Vec::<FlowPiece>::new().to_stream(scope);
            let (_, answers) = flows.attribute_with_intervals(evidence, intervals, params, StateProbe::default());
            answers.capture()
        })
    })
    .expect("timely runs");
    let mut out = Vec::new();
    for captured in results.join() {
        for (_, pieces) in captured.expect("worker").extract() {
            for a in pieces {
                for (q, v) in a.queries.iter().zip(&a.verdicts) {
                    let said = match v {
                        IntervalVerdict::Attributed { .. } => Ok(a.workload(v).unwrap_or_default().to_string()),
                        IntervalVerdict::Unattributed(r) => Err(r.name().to_string()),
                        IntervalVerdict::NotCovered => Err("not_covered".to_string()),
                    };
                    out.push((q.record, q.end, said));
                }
            }
        }
    }
    out.sort();
    out
}

#[test]
fn both_ends_need_one_owner_for_the_whole_interval() {
    let db = Ip::v4([10, 0, 0, 7]);
    let nobody = Ip::v4([10, 0, 9, 9]);
    let queries = vec![
        // A row for [60 s, 119 s], looked up at 130 s: db-old all along; its other end unknown.
        (130 * S, query(1, IntervalQuery::SOURCE, db, 60 * S, 119 * S)),
        (130 * S, query(1, IntervalQuery::DESTINATION, nobody, 60 * S, 119 * S)),
        // A row across the change at 300 s: neither owner held all of it.
        (400 * S, query(2, IntervalQuery::DESTINATION, db, 240 * S, 359 * S)),
        // After the change, looked up late (ten minutes after its end): db-new.
        (1_000 * S, query(3, IntervalQuery::DESTINATION, db, 360 * S, 419 * S)),
    ];
    let want = vec![
        (1, IntervalQuery::SOURCE, Ok("db-old".to_string())),
        (1, IntervalQuery::DESTINATION, Err("no_owner".to_string())),
        (2, IntervalQuery::DESTINATION, Err("not_covered".to_string())),
        (3, IntervalQuery::DESTINATION, Ok("db-new".to_string())),
    ];
    assert_eq!(answers(queries.clone(), 1), want);
    assert_eq!(answers(queries, 2), want, "the same with two workers");
}

#[test]
fn a_row_looked_up_past_the_retention_is_expired() {
    // Its band starts at 358 s; the retention (1,200 s) ends at 1,558 s.
    let db = Ip::v4([10, 0, 0, 7]);
    let queries = vec![(1_600 * S, query(4, IntervalQuery::DESTINATION, db, 360 * S, 419 * S))];
    assert_eq!(answers(queries, 1), vec![(4, IntervalQuery::DESTINATION, Err("evidence_expired".to_string()))]);
}
