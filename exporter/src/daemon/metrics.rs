//! Prometheus metrics on a loopback address: a tiny HTTP server on its own thread that
//! answers every request with the text exposition format. Counters are monotone
//! (`flowmap_exporter_<name>_total`); the queue is two counters (queued, delivered) rather
//! than a gauge; own CPU and memory come from `/proc/self`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// The exporter's counters, shared with the metrics thread.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Flows reported (closed flows and open slices).
    pub flows: AtomicU64,
    /// Open-flow slices among them.
    pub open_slices: AtomicU64,
    /// Batches built.
    pub batches: AtomicU64,
    /// Heartbeats sent.
    pub heartbeats: AtomicU64,
    /// Events lost in the kernel (ring buffer full), as the kernel counts them.
    pub ringbuf_drops: AtomicU64,
    /// Open connections the kernel could not track (its map was full).
    pub open_map_full: AtomicU64,
    /// Batches the sink refused or failed.
    pub sink_errors: AtomicU64,
    /// Records queued for Kafka.
    pub queue_sent: AtomicU64,
    /// Records Kafka acknowledged.
    pub queue_delivered: AtomicU64,
    /// Records the queue dropped (full) or that failed delivery.
    pub queue_dropped: AtomicU64,
    /// Configuration reloads (SIGHUP).
    pub reloads: AtomicU64,
}

fn proc_self() -> (f64, u64) {
    // utime and stime are fields 14 and 15 of /proc/self/stat, after the command in parens.
    let ticks = 100.0; // USER_HZ on Linux
    let cpu = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let rest = s.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some((f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?) / ticks)
        })
        .unwrap_or(0.0);
    let rss = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse::<u64>().ok())
        .unwrap_or(0)
        * 1024;
    (cpu, rss)
}

impl Metrics {
    /// The text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut counter = |name: &str, help: &str, v: &AtomicU64| {
            out.push_str(&format!(
                "# HELP flowmap_exporter_{name}_total {help}\n# TYPE flowmap_exporter_{name}_total counter\nflowmap_exporter_{name}_total {}\n",
                v.load(Ordering::Relaxed)
            ));
        };
        counter("flows", "Flows reported (closed flows and open slices).", &self.flows);
        counter("open_slices", "Slices of open connections reported.", &self.open_slices);
        counter("batches", "Batches built.", &self.batches);
        counter("heartbeats", "Ownership heartbeats sent.", &self.heartbeats);
        counter(
            "ringbuf_drops",
            "Flow events lost in the kernel because the ring buffer was full.",
            &self.ringbuf_drops,
        );
        counter("open_map_full", "Connections the kernel could not track (open map full).", &self.open_map_full);
        counter("sink_errors", "Batches the sink refused or failed to write.", &self.sink_errors);
        counter("queue_sent", "Records queued for Kafka.", &self.queue_sent);
        counter("queue_delivered", "Records Kafka acknowledged.", &self.queue_delivered);
        counter("queue_dropped", "Records dropped (queue full) or failed.", &self.queue_dropped);
        counter("reloads", "Configuration reloads.", &self.reloads);
        let (cpu, rss) = proc_self();
        out.push_str(&format!(
            "# HELP flowmap_exporter_cpu_seconds_total User and system CPU of the exporter process.\n# TYPE flowmap_exporter_cpu_seconds_total counter\nflowmap_exporter_cpu_seconds_total {cpu}\n"
        ));
        out.push_str(&format!(
            "# HELP flowmap_exporter_resident_memory_bytes Resident memory of the exporter process.\n# TYPE flowmap_exporter_resident_memory_bytes gauge\nflowmap_exporter_resident_memory_bytes {rss}\n"
        ));
        out
    }
}

/// Serves `metrics` on `addr` (loopback) on a thread; returns the bound address.
pub fn serve(addr: SocketAddr, metrics: Arc<Metrics>) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)?;
    let bound = listener.local_addr()?;
    std::thread::Builder::new().name("metrics".into()).spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let _ = stream.set_read_timeout(Some(std::time::Duration::from_secs(2)));
            let mut buf = [0u8; 1024];
            let _ = stream.read(&mut buf);
            let body = metrics.render();
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes()).and_then(|()| stream.write_all(body.as_bytes()));
        }
    })?;
    Ok(bound)
}
