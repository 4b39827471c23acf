//! `/api/edges.csv`: the graph's edges as CSV for a spreadsheet, one row per edge, in the graph's
//! order, with the same numbers as the JSON (shares as fractions, reasons and ports as
//! `name=count` lists separated by `;`).

use crate::graph::Graph;

/// The CSV's columns.
pub const COLUMNS: &[&str] = &[
    "source",
    "target",
    "connections",
    "bytes_client_to_server",
    "bytes_server_to_client",
    "bytes",
    "segments",
    "retransmits",
    "failed_connects",
    "verified",
    "disagreements",
    "one_sided",
    "rtt_p50_us",
    "rtt_p90_us",
    "rtt_p99_us",
    "rtt_method",
    "certainty",
    "verified_share",
    "unattributed_share",
    "unattributed_reasons",
    "ports",
    "new_dependencies",
    "policy_violations",
];

fn opt(v: Option<f64>) -> String {
    v.map(|x| x.to_string()).unwrap_or_default()
}

/// The edges of `graph` as CSV (a header line, then one line per edge).
///
/// # Errors
/// A [`csv::Error`] only if writing to memory fails (it does not).
pub fn edges_csv(graph: &Graph) -> Result<Vec<u8>, csv::Error> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(COLUMNS)?;
    for e in &graph.edges {
        let reasons: Vec<String> = e.certainty.unattributed_reasons.iter().map(|(r, n)| format!("{r}={n}")).collect();
        let ports: Vec<String> = e.ports.iter().map(|p| format!("{}={}", p.port, p.connections)).collect();
        w.write_record([
            e.source.clone(),
            e.target.clone(),
            e.connections.to_string(),
            e.bytes_client_to_server.to_string(),
            e.bytes_server_to_client.to_string(),
            e.bytes.to_string(),
            e.segments.to_string(),
            e.retransmits.to_string(),
            e.failed_connects.to_string(),
            e.verified.to_string(),
            e.disagreements.to_string(),
            e.one_sided.to_string(),
            opt(e.rtt.p50_us),
            opt(e.rtt.p90_us),
            opt(e.rtt.p99_us),
            e.rtt.method.to_owned(),
            e.certainty.class.to_owned(),
            opt(e.certainty.verified_share),
            opt(e.certainty.unattributed_share),
            reasons.join(";"),
            ports.join(";"),
            e.events.new_dependency.to_string(),
            e.events.policy_violation.to_string(),
        ])?;
    }
    w.into_inner().map_err(|e| e.into_error().into())
}
