//! Cloud flow logs (AWS VPC Flow Logs) in the job: both ends of every row attributed from the
//! same ownership index as the exporters' flows.
//!
//! ```text
//! rows ─ VpcQueries (two interval queries per row, at the row's lookup time) ─ Attribute ─ answers
//!   answers ─ exchange by row ─ VpcJoin (both ends of a row) ─ VpcFlowRecord
//! ```
//!
//! Why intervals: a flow log row has no local end and aggregates the packets of up to ten
//! minutes, so each address is attributed only if one workload held it over the row's whole
//! interval, guard band included ([`flowmap_operators::rule::decide_over`]); an owner that held
//! the start but not the rest is `VPC_REASON_INTERVAL_NOT_COVERED`. An address outside the
//! fleet blocks is `external`, a row without an address for an end (`-`: NODATA and SKIPDATA
//! rows) `VPC_REASON_NO_ADDRESS`. Port-scoped claims (a TCP listener's, a socket's) count only
//! for TCP rows; other protocols are looked up by address alone.
//!
//! Time contract: a row's lookup time is its interval's end plus the guard band, rounded up to
//! the tick (as a flow's is its start plus the guard band): by then the exporters have promised
//! everything about the band. Rows are read before the run ([`VpcRows::load_dir`]: a batch
//! run over files), so their queries enter at exactly that time; the index keeps evidence for
//! the retention, so a row must be looked up within the retention of its start
//! (`evidence_expired` otherwise). Flow log files arrive about ten minutes after their
//! interval: a live reader must keep the retention above that (see the README).

mod load;
mod ops;

pub use load::{LoadStats, VpcLoadError, VpcRows};
pub use ops::{vpc_join, vpc_queries};

use flowmap_schema as wire;

/// What becomes of one end of a row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndPlan {
    /// Looked up in the index: this address and port.
    Query(flowmap_operators::Ip, u16),
    /// Outside the fleet blocks: `external`.
    External,
    /// No address (or no interval to look it up over): already says why.
    Decided,
}

/// Counts of attributed VPC rows' ends.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct VpcCounts {
    /// Rows output.
    pub rows: u64,
    /// Ends attributed to a workload.
    pub ends_attributed: u64,
    /// Ends unattributed, by reason name (the `Reason`s, `interval_not_covered`, `no_address`).
    pub ends_unattributed: std::collections::BTreeMap<String, u64>,
}

impl VpcCounts {
    /// Counts one output row.
    pub fn count(&mut self, record: &wire::VpcFlowRecord) {
        self.rows += 1;
        for end in [&record.src, &record.dst].into_iter().flatten() {
            if !end.workload.is_empty() {
                self.ends_attributed += 1;
            } else {
                *self.ends_unattributed.entry(end_reason(end)).or_default() += 1;
            }
        }
    }

    /// Whether nothing was counted (no rows).
    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Adds another worker's counts.
    pub fn add(&mut self, o: &VpcCounts) {
        self.rows += o.rows;
        self.ends_attributed += o.ends_attributed;
        for (k, v) in &o.ends_unattributed {
            *self.ends_unattributed.entry(k.clone()).or_default() += v;
        }
    }
}

/// snake_case of a Protobuf enum value's Rust name (`IntervalNotCovered` -> `interval_not_covered`).
fn snake(v: impl std::fmt::Debug) -> String {
    let mut out = String::new();
    for (i, c) in format!("{v:?}").chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

/// The snake_case reason of an unattributed end.
pub fn end_reason(end: &wire::VpcEnd) -> String {
    match wire::VpcReason::try_from(end.vpc_reason) {
        Ok(r) if r != wire::VpcReason::Unspecified => return snake(r),
        _ => {}
    }
    match wire::Reason::try_from(end.reason) {
        Ok(r) if r != wire::Reason::Unspecified => snake(r),
        _ => "unspecified".to_string(),
    }
}

/// One attributed row as a JSON object (the `--vpc-out` lines): the row's id, source, interval,
/// action and status, and per end its address, which field it came from, and the workload with
/// its evidence or the reason.
pub fn row_json(r: &wire::VpcFlowRecord) -> serde_json::Value {
    let end = |e: &Option<wire::VpcEnd>| {
        let Some(e) = e else { return serde_json::Value::Null };
        let ip = flowmap_schema::ip_from_bytes(&e.ip).map(|a| a.to_string());
        let field = wire::VpcAddressField::try_from(e.address_field).map(snake).unwrap_or_default();
        if e.workload.is_empty() {
            serde_json::json!({ "ip": ip, "address_field": field, "workload": null, "reason": end_reason(e) })
        } else {
            let evidence = wire::Evidence::try_from(e.evidence).map(snake).unwrap_or_default();
            serde_json::json!({ "ip": ip, "address_field": field, "workload": e.workload, "evidence": evidence })
        }
    };
    serde_json::json!({
        "record_id": r.record_id,
        "key": r.key,
        "line": r.line,
        "start_s": r.start_s,
        "end_s": r.end_s,
        "srcport": r.srcport,
        "dstport": r.dstport,
        "protocol": r.protocol,
        "action": wire::VpcAction::try_from(r.action).map(snake).unwrap_or_default(),
        "log_status": wire::VpcLogStatus::try_from(r.log_status).map(snake).unwrap_or_default(),
        "src": end(&r.src),
        "dst": end(&r.dst),
    })
}
