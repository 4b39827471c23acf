//! The exporter's metrics, through the `metrics` facade, served by
//! `metrics-exporter-prometheus`'s own HTTP listener on a loopback address, with the process's
//! CPU and memory from `metrics-process`.
//!
//! Names follow `flowmap_exporter_<name>_<unit>_total` for counters; labels take a few fixed
//! values only. Nothing is emitted per record: the daemon adds each batch's totals once per
//! batch, and copies the kernel's and the producer's own monotone totals with `absolute`. A
//! queue is two counters (queued, delivered), not a gauge. Without a listener (`metrics =
//! "off"`) no recorder is installed and every handle is a no-op.
//!
//! Restarts: a counter lives as long as its process, so each process exports
//! `flowmap_exporter_starts_total` = 1 and `flowmap_exporter_incarnation_info{incarnation}` = 1
//! (the id in its batches); Prometheus' `resets()` and `changes()` count the restarts.

use std::net::SocketAddr;

use metrics::{counter, describe_counter, describe_gauge, gauge, Counter, Gauge};
use metrics_exporter_prometheus::PrometheusBuilder;

use crate::loader::PinOutcome;

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
pub fn serve(addr: SocketAddr) -> Result<(), MetricsError> {
    PrometheusBuilder::new().with_http_listener(addr).install().map_err(|e| MetricsError { addr, source: Box::new(e) })
}

/// Handles on every metric the daemon updates.
#[derive(Debug)]
pub struct Metrics {
    /// Closed flows reported.
    pub flows_closed: Counter,
    /// Slices of open connections reported.
    pub flows_open: Counter,
    /// Batches built.
    pub batches: Counter,
    /// Whole-IP heartbeats sent.
    pub heartbeats_ip: Counter,
    /// Port-scoped heartbeats sent.
    pub heartbeats_port: Counter,
    /// Close events lost in the kernel (ring buffer full), the kernel's total.
    pub ringbuf_drops: Counter,
    /// Connections the kernel could not track as open (open map full), the kernel's total.
    pub open_map_full: Counter,
    /// Open records removed because their socket was gone, the kernel's total.
    pub stale_records: Counter,
    /// Connections seeded from the kernel's sockets (older than the exporter, or missed).
    pub seeded: Counter,
    /// Of which seeded at start.
    pub seeded_at_start: Counter,
    /// Records that did not decode (ABI mismatch), by where they came from.
    pub undecodable_ringbuf: Counter,
    /// See [`Metrics::undecodable_ringbuf`].
    pub undecodable_open_map: Counter,
    /// See [`Metrics::undecodable_ringbuf`].
    pub undecodable_iterator: Counter,
    /// Failures reading the kernel's state (snapshot or socket scan).
    pub kernel_read_errors: Counter,
    /// Batches the sink refused or failed.
    pub sink_errors: Counter,
    /// Records queued for Kafka.
    pub queue_sent: Counter,
    /// Records Kafka acknowledged.
    pub queue_delivered: Counter,
    /// Records refused because the producer's queue was full.
    pub queue_dropped: Counter,
    /// Records whose delivery failed for good.
    pub queue_failed: Counter,
    /// Producers recreated after a fatal error.
    pub producer_recreations: Counter,
    /// Records resent by a recreated producer.
    pub producer_resent: Counter,
    /// Configuration reloads (SIGHUP).
    pub reloads: Counter,
    /// Local IPs currently shared (no whole-IP claims on them).
    pub shared_ips: Gauge,
    /// Listening sockets seen by the last scan.
    pub listeners: Gauge,
}

impl Metrics {
    /// Registers (and describes) every metric with the installed recorder, if any.
    pub fn register() -> Self {
        let c = |name: &'static str, help: &'static str| {
            describe_counter!(name, help);
            counter!(name)
        };
        describe_counter!(
            "flowmap_exporter_reported_flows_total",
            "Flow records reported: closed flows and slices of open connections."
        );
        describe_counter!(
            "flowmap_exporter_sent_heartbeats_total",
            "Ownership heartbeats sent, by scope (ip: whole IP, port: one port of a shared IP)."
        );
        describe_counter!(
            "flowmap_exporter_undecodable_records_total",
            "Kernel records that did not decode (ABI mismatch), by source."
        );
        describe_gauge!(
            "flowmap_exporter_shared_ips",
            "Local IPs currently shared by several workloads (no whole-IP claims)."
        );
        describe_gauge!("flowmap_exporter_listening_sockets", "Listening TCP sockets seen by the last socket scan.");
        Metrics {
            flows_closed: counter!("flowmap_exporter_reported_flows_total", "kind" => "closed"),
            flows_open: counter!("flowmap_exporter_reported_flows_total", "kind" => "open_slice"),
            batches: c("flowmap_exporter_built_batches_total", "Batches built (one per batch interval)."),
            heartbeats_ip: counter!("flowmap_exporter_sent_heartbeats_total", "scope" => "ip"),
            heartbeats_port: counter!("flowmap_exporter_sent_heartbeats_total", "scope" => "port"),
            ringbuf_drops: c(
                "flowmap_exporter_ringbuf_dropped_events_total",
                "Close events lost in the kernel: the ring buffer was full.",
            ),
            open_map_full: c(
                "flowmap_exporter_open_map_full_events_total",
                "Connections the kernel could not track as open: its map was full.",
            ),
            stale_records: c(
                "flowmap_exporter_stale_open_records_total",
                "Open-connection records removed because their socket was gone (it closed while no exporter ran).",
            ),
            seeded: c(
                "flowmap_exporter_seeded_connections_total",
                "Connections seeded from the kernel's sockets (the exporter did not see them start).",
            ),
            seeded_at_start: c(
                "flowmap_exporter_seeded_at_start_connections_total",
                "Connections seeded by the first socket scan, at start.",
            ),
            undecodable_ringbuf: counter!("flowmap_exporter_undecodable_records_total", "source" => "ringbuf"),
            undecodable_open_map: counter!("flowmap_exporter_undecodable_records_total", "source" => "open_map"),
            undecodable_iterator: counter!("flowmap_exporter_undecodable_records_total", "source" => "iterator"),
            kernel_read_errors: c(
                "flowmap_exporter_kernel_read_errors_total",
                "Failed reads of the kernel's state (open snapshot or socket scan); the batch went without it.",
            ),
            sink_errors: c(
                "flowmap_exporter_sink_failed_batches_total",
                "Batches the sink refused or failed to write.",
            ),
            queue_sent: c("flowmap_exporter_producer_queued_records_total", "Records queued for Kafka."),
            queue_delivered: c("flowmap_exporter_producer_delivered_records_total", "Records Kafka acknowledged."),
            queue_dropped: c(
                "flowmap_exporter_producer_dropped_records_total",
                "Records refused because the producer's queue was full.",
            ),
            queue_failed: c(
                "flowmap_exporter_producer_failed_records_total",
                "Records whose delivery failed for good.",
            ),
            producer_recreations: c(
                "flowmap_exporter_producer_recreations_total",
                "Kafka producers recreated after a fatal error.",
            ),
            producer_resent: c(
                "flowmap_exporter_producer_resent_records_total",
                "Unacknowledged records resent by a recreated producer.",
            ),
            reloads: c("flowmap_exporter_config_reloads_total", "Configuration reloads (SIGHUP)."),
            shared_ips: gauge!("flowmap_exporter_shared_ips"),
            listeners: gauge!("flowmap_exporter_listening_sockets"),
        }
    }

    /// Copies the producer's own monotone totals.
    pub fn producer(&self, p: &flowmap_kafka::ProducerStats) {
        self.queue_sent.absolute(p.sent);
        self.queue_delivered.absolute(p.delivered);
        self.queue_dropped.absolute(p.dropped);
        self.queue_failed.absolute(p.failed);
        self.producer_recreations.absolute(p.recreations);
        self.producer_resent.absolute(p.resent);
    }

    /// Records this start: once per process.
    pub fn started(&self, incarnation: u64, pin: &PinOutcome) {
        describe_counter!(
            "flowmap_exporter_starts_total",
            "Starts of this process (1): Prometheus' resets() counts restarts."
        );
        counter!("flowmap_exporter_starts_total").increment(1);
        describe_gauge!("flowmap_exporter_incarnation_info", "The incarnation this process puts in its batches.");
        gauge!("flowmap_exporter_incarnation_info", "incarnation" => format!("{incarnation:016x}")).set(1.0);
        describe_counter!(
            "flowmap_exporter_open_map_pins_total",
            "What became of the open-connection map's pin at start: created, reused, unavailable (connections of the previous run then have an unobserved start), off."
        );
        counter!("flowmap_exporter_open_map_pins_total", "outcome" => pin.label()).increment(1);
    }
}

/// The process's CPU time, memory, threads and file descriptors
/// (`flowmap_exporter_process_*`), refreshed on demand. The CPU time is a gauge in seconds with
/// the kernel's tick precision (the crate's counter form truncates it to whole seconds).
pub struct ProcessMetrics(metrics_process::Collector);

impl std::fmt::Debug for ProcessMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessMetrics").finish_non_exhaustive()
    }
}

impl ProcessMetrics {
    /// Describes the process metrics.
    pub fn new() -> Self {
        let collector = metrics_process::Collector::new("flowmap_exporter_");
        collector.describe();
        ProcessMetrics(collector)
    }

    /// Reads `/proc/self` once (a few reads; called once per batch).
    pub fn collect(&self) {
        self.0.collect();
    }
}

impl Default for ProcessMetrics {
    fn default() -> Self {
        Self::new()
    }
}
