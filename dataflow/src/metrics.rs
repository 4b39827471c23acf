//! The job's metrics, through the `metrics` facade (the exporter uses the same), served by
//! `metrics-exporter-prometheus`'s own HTTP listener at `/metrics`.
//!
//! Each worker copies its own monotone totals with `absolute` every report period (100 ms),
//! labelled `worker`; Prometheus sums them. Nothing is emitted per record. Without a listener no
//! recorder is installed and every call is a no-op, so a run without `--metrics` pays nothing.
//!
//! Names: `flowmap_<what>_total` for counters, `flowmap_<what>_<unit>` for gauges.

use std::net::SocketAddr;

use flowmap_operators::index::IndexSize;
use metrics::{counter, gauge};
use metrics_exporter_prometheus::PrometheusBuilder;

use crate::admission::IngestStats;
use crate::run::Counts;

/// Why the metrics listener could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot serve metrics on {addr}")]
pub struct MetricsError {
    /// The address.
    pub addr: SocketAddr,
    /// The cause.
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

/// Installs the Prometheus recorder with its HTTP listener on `addr` (a thread of its own).
///
/// # Errors
/// [`MetricsError`]: the address is in use, or a recorder is already installed.
pub fn serve(addr: SocketAddr) -> Result<(), MetricsError> {
    PrometheusBuilder::new().with_http_listener(addr).install().map_err(|e| MetricsError { addr, source: Box::new(e) })
}

/// Publishes one worker's totals so far.
pub fn publish(worker: usize, counts: &Counts, ingest: &IngestStats, state: &IndexSize, delivered_ns: Option<u64>) {
    let w = worker.to_string();
    let c = |name: &'static str, value: u64| counter!(name, "worker" => w.clone()).absolute(value);
    c("flowmap_flows_output_total", counts.output);
    c("flowmap_flows_attributed_total", counts.attributed);
    c("flowmap_edge_rows_total", counts.edges);
    c("flowmap_change_events_total", counts.events);
    c("flowmap_batches_total", ingest.batches);
    c("flowmap_batch_flows_total", ingest.flows);
    c("flowmap_batches_lost_total", ingest.lost_batches);
    c("flowmap_batches_duplicate_total", ingest.duplicate_batches);
    c("flowmap_batches_late_total", ingest.late_batches);
    c("flowmap_exporter_restarts_total", ingest.exporter_restarts);
    c("flowmap_exporter_id_conflicts_total", ingest.exporter_id_conflicts);
    let rejected = ingest.rejected_malformed
        + ingest.rejected_version
        + ingest.rejected_window
        + ingest.rejected_future
        + ingest.rejected_address
        + ingest.rejected_time
        + ingest.rejected_name
        + ingest.rejected_unrostered;
    c("flowmap_batches_rejected_total", rejected);
    for (result, value) in [
        ("agree", counts.verified_agree),
        ("disagree", counts.verified_disagree),
        ("peer_only", counts.verified_peer_only),
        ("one_sided", counts.one_sided),
    ] {
        counter!("flowmap_connections_checked_total", "worker" => w.clone(), "result" => result).absolute(value);
    }
    for (reason, value) in flowmap_operators::Reason::ALL.iter().zip(counts.unattributed) {
        counter!("flowmap_flows_unattributed_total", "worker" => w.clone(), "reason" => reason.name()).absolute(value);
    }
    gauge!("flowmap_ownership_state_bytes", "worker" => w.clone()).set(state.bytes as f64);
    gauge!("flowmap_ownership_addresses", "worker" => w.clone()).set(state.ips as f64);
    if let Some(ns) = delivered_ns {
        gauge!("flowmap_delivered_frontier_seconds", "worker" => w).set(ns as f64 / 1e9);
    }
}

/// Publishes one lake writer's counters so far.
pub fn publish_lake(worker: usize, table: &'static str, stats: &flowmap_lake::WriterStats) {
    let w = worker.to_string();
    counter!("flowmap_lake_rows_written_total", "worker" => w.clone(), "table" => table).absolute(stats.rows_written);
    counter!("flowmap_lake_files_written_total", "worker" => w.clone(), "table" => table).absolute(stats.files_written);
    counter!("flowmap_lake_bytes_written_total", "worker" => w.clone(), "table" => table).absolute(stats.bytes_written);
    counter!("flowmap_lake_duplicates_total", "worker" => w, "table" => table).absolute(stats.duplicates);
}
