//! The exporter daemon: load the probe, then every batch interval turn the flows the kernel
//! reported (closed, and still open) into one `ExporterBatch` with local workloads and
//! ownership heartbeats, and send it to the sink.
//!
//! The main loop owns everything that changes state (the probe's maps, the attribution
//! tables, the batcher); the control socket and the metrics server are threads that talk to
//! it through a channel and atomics. Signals only set flags: SIGHUP re-reads the config file
//! (cgroup rules, host identity) between two batches, so no flow is lost; SIGTERM and SIGINT
//! end the loop after one last batch up to that moment, and the sink is flushed.
//!
//! # Layout
//! - [`config`]: settings (`configs/exporter.toml`), validated.
//! - [`local`]: local workload attribution and heartbeat claims.
//! - [`batch`]: building batches with the window promise.
//! - [`sink`]: stdout, file, Kafka.
//! - [`control`]: the assign/unassign socket.
//! - [`metrics`]: Prometheus counters on loopback.
//! - `ifaddrs`: the host's addresses.

pub mod batch;
pub mod config;
pub mod control;
mod ifaddrs;
pub mod local;
pub mod metrics;
pub mod sink;

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::loader::{load, LoadError, LoaderConfig};
use batch::Batcher;
use config::{ExporterConfig, RawExporterConfig};
use control::Request;
use local::{Attributor, CgroupIndex};
use metrics::Metrics;
use sink::{Sink, SinkError};

/// What stops the daemon from starting or running.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The probe could not be loaded (privileges, BTF, kernel feature: the message says).
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The sink could not be opened, or its reader went away.
    #[error(transparent)]
    Sink(#[from] SinkError),
    /// The control socket or the metrics address could not be bound.
    #[error("{what}")]
    Bind {
        /// What.
        what: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Reading from the kernel failed.
    #[error("reading flows from the kernel: {0}")]
    Kernel(String),
}

/// Flags the signal handlers set.
#[derive(Clone, Debug, Default)]
pub struct Signals {
    /// Stop after one last batch.
    pub stop: Arc<AtomicBool>,
    /// Re-read the configuration file.
    pub reload: Arc<AtomicBool>,
}

/// The longest the daemon sleeps between two reads of the ring buffer.
const POLL_EVERY: Duration = Duration::from_millis(50);

fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

fn host_netns() -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self/ns/net").ok().map(|m| m.ino() as u32)
}

/// Runs the daemon until `signals.stop` is set. `reload_from` is the file SIGHUP re-reads
/// (flags given on the command line keep overriding it: `overrides` is applied after).
pub fn run(
    config: ExporterConfig,
    reload_from: Option<PathBuf>,
    overrides: impl Fn(&mut RawExporterConfig),
    signals: Signals,
    metrics: Arc<Metrics>,
) -> Result<(), DaemonError> {
    let mut probe = load(&LoaderConfig { ringbuf_bytes: config.ringbuf_bytes, ..LoaderConfig::default() })?;
    let mut sink = Sink::open(&config.sink, &config.producer)?;
    let requests = control::serve(&config.control_socket).map_err(|source| DaemonError::Bind {
        what: format!("control socket {}", config.control_socket.display()),
        source,
    })?;
    if let Some(addr) = config.metrics {
        let bound = metrics::serve(addr, Arc::clone(&metrics))
            .map_err(|source| DaemonError::Bind { what: format!("metrics on {addr}"), source })?;
        tracing::info!(%bound, "metrics");
    }
    let mut attributor = Attributor::new(
        config.cgroup_rules.clone(),
        config.host_workload.clone(),
        host_netns(),
        CgroupIndex::new(local::cgroup2_mount().unwrap_or_else(|| "/sys/fs/cgroup".into())),
    );
    let json_lines = !matches!(config.sink, config::SinkSpec::Kafka { .. });
    let mut batcher = Batcher::new(config.exporter_id.clone(), now_ns(), json_lines);
    let mut closed = Vec::new();
    let mut next = Instant::now() + config.batch_interval;
    tracing::info!(exporter = %config.exporter_id, interval = ?config.batch_interval, sink = ?config.sink, "exporting");
    loop {
        let stopping = signals.stop.load(Ordering::Relaxed);
        // Read the ring buffer in gulps, every POLL_EVERY at most, instead of waking up for
        // every event: under a connection storm a wake-up per flow costs more than the flow.
        // (The ring buffer holds far more than POLL_EVERY's worth of events; drops are counted.)
        let wait = next.saturating_duration_since(Instant::now()).min(POLL_EVERY);
        if !stopping {
            std::thread::sleep(wait);
            probe.events.read_available(&mut closed);
        }
        while let Ok((request, reply)) = requests.try_recv() {
            let _ = reply.send(apply(&mut probe, &mut attributor, &request));
        }
        if signals.reload.swap(false, Ordering::Relaxed) {
            reload(&reload_from, &overrides, &mut attributor, &config, &metrics);
        }
        if !stopping && Instant::now() < next {
            continue;
        }
        next += config.batch_interval;
        // The window ends now; then everything the kernel has reported so far is read, so
        // nothing that ended before the window's end can come later.
        let to = now_ns();
        probe.events.read_available(&mut closed);
        let open = match probe.open_flows.snapshot() {
            Ok(snapshot) => snapshot.flows,
            Err(e) => {
                tracing::warn!(error = %e, "open-connection snapshot failed: this batch has no open slices");
                Vec::new()
            }
        };
        let addresses: Vec<IpAddr> = ifaddrs::host_addresses().unwrap_or_default();
        let built = batcher.build(to, std::mem::take(&mut closed), &open, &mut attributor, &addresses);
        metrics.batches.fetch_add(1, Ordering::Relaxed);
        metrics.flows.fetch_add(built.batch.flows.len() as u64, Ordering::Relaxed);
        metrics.open_slices.fetch_add(built.batch.flows.iter().filter(|f| f.open).count() as u64, Ordering::Relaxed);
        metrics.heartbeats.fetch_add(built.batch.heartbeats.len() as u64, Ordering::Relaxed);
        match sink.send(&built) {
            Ok(()) => {}
            Err(SinkError::Closed) => return Ok(()),
            Err(e) => {
                let n = metrics.sink_errors.fetch_add(1, Ordering::Relaxed) + 1;
                if n.is_power_of_two() {
                    tracing::warn!(error = %e, total = n, "batch not delivered to the sink");
                }
            }
        }
        if let Ok(c) = probe.counters.read() {
            metrics.ringbuf_drops.store(c.ringbuf_drops, Ordering::Relaxed);
            metrics.open_map_full.store(c.open_map_full, Ordering::Relaxed);
        }
        if let Some(p) = sink.producer_stats() {
            metrics.queue_sent.store(p.sent, Ordering::Relaxed);
            metrics.queue_delivered.store(p.delivered, Ordering::Relaxed);
            metrics.queue_dropped.store(p.dropped + p.failed, Ordering::Relaxed);
        }
        if stopping {
            break;
        }
    }
    sink.close(Duration::from_secs(10))?;
    let _ = std::fs::remove_file(&config.control_socket);
    tracing::info!("stopped after the last batch");
    Ok(())
}

/// Applies one control request to the kernel maps and the heartbeat tables.
fn apply(
    probe: &mut crate::loader::FlowProbe,
    attributor: &mut Attributor,
    request: &Request,
) -> Result<String, String> {
    match request {
        Request::Assign { ip, port, workload } => {
            let id = attributor.names.id(workload);
            match port {
                Some(p) => {
                    probe.assignments.assign_port(*ip, *p, id).map_err(|e| e.to_string())?;
                    attributor.by_port.insert((*ip, *p), workload.clone());
                }
                None => {
                    probe.assignments.assign_addr(*ip, id).map_err(|e| e.to_string())?;
                    attributor.by_ip.insert(*ip, workload.clone());
                }
            }
            Ok("ok".into())
        }
        Request::Unassign { ip, port } => {
            let removed = match port {
                Some(p) => {
                    attributor.by_port.remove(&(*ip, *p));
                    probe.assignments.unassign_port(*ip, *p).map_err(|e| e.to_string())?
                }
                None => {
                    attributor.by_ip.remove(ip);
                    probe.assignments.unassign_addr(*ip).map_err(|e| e.to_string())?
                }
            };
            Ok(if removed { "ok".into() } else { "ok (none)".into() })
        }
    }
}

fn reload(
    path: &Option<PathBuf>,
    overrides: &impl Fn(&mut RawExporterConfig),
    attributor: &mut Attributor,
    running: &ExporterConfig,
    metrics: &Metrics,
) {
    let raw = match path {
        Some(p) => RawExporterConfig::load(p),
        None => Ok(RawExporterConfig::default()),
    };
    let validated = raw.and_then(|mut raw| {
        overrides(&mut raw);
        raw.validate()
    });
    match validated {
        Ok(new) => {
            if new.sink != running.sink
                || new.batch_interval != running.batch_interval
                || new.exporter_id != running.exporter_id
            {
                tracing::warn!("sink, batch interval and exporter id change only on restart");
            }
            attributor.reconfigure(new.cgroup_rules, new.host_workload);
            metrics.reloads.fetch_add(1, Ordering::Relaxed);
            tracing::info!("configuration reloaded");
        }
        Err(e) => tracing::error!(error = %format!("{e:#}"), "reload refused: keeping the running configuration"),
    }
}
