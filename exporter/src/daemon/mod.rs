//! The exporter daemon: load the probe, then every batch interval turn the flows the kernel
//! reported (closed, and still open) into one `ExporterBatch` with local workloads and
//! ownership heartbeats, and send it to the sink.
//!
//! The main loop owns everything that changes state (the probe's maps, the attribution
//! tables, the batcher); the control socket and the metrics listener are threads. Signals only
//! set flags: SIGHUP re-reads the config file (cgroup rules, host identity) between two
//! batches, so no flow is lost; SIGTERM and SIGINT end the loop after one last batch up to that
//! moment, and the sink is flushed.
//!
//! At start the daemon chooses a random incarnation (in every batch; `seq` restarts at 0),
//! reuses the open-connection map a previous run pinned (when it can), and seeds the map from
//! the kernel's sockets, so connections older than the exporter are reported while they live.
//! Every batch it scans the sockets again, for the listening sockets (port-scoped heartbeats on
//! shared IPs, the direction of seeded connections).
//!
//! # Layout
//! - [`config`]: settings (`configs/exporter.toml`), validated.
//! - [`local`]: local workload attribution.
//! - [`shared`]: which local IPs are shared; flow scopes and heartbeats.
//! - [`batch`]: building batches with the window promise.
//! - [`departed`]: connections whose local address left the host.
//! - [`nat`]: ports of the host's addresses forwarded elsewhere (conntrack).
//! - [`sink`]: stdout, file, Kafka.
//! - [`control`]: the assign/unassign socket.
//! - [`metrics`]: Prometheus metrics on loopback.
//! - `ifaddrs`: the host's addresses.

pub mod batch;
pub mod config;
pub mod control;
pub mod departed;
mod ifaddrs;
pub mod local;
pub mod metrics;
pub mod nat;
pub mod shared;
pub mod sink;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::loader::{load, FlowProbe, LoadError, LoaderConfig, PinOutcome};
use crate::sockets::{Listener, SocketScan};
use batch::{BatchInput, Batcher};
use config::{ExporterConfig, RawExporterConfig};
use control::Request;
use local::{Attributor, CgroupIndex};
use metrics::{Metrics, ProcessMetrics};
use shared::SharedIps;
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
    /// The control socket could not be bound.
    #[error("{what}")]
    Bind {
        /// What.
        what: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The metrics listener could not start.
    #[error(transparent)]
    Metrics(#[from] metrics::MetricsError),
    /// No random incarnation could be drawn.
    #[error("reading /dev/urandom for the incarnation")]
    Random(#[source] std::io::Error),
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

/// Runs the socket iterator: seeds the open map, sets the direction of what it seeded, and
/// returns the listeners (the previous ones when the scan fails, which is counted).
fn scan(probe: &mut FlowProbe, metrics: &Metrics, previous: Vec<Listener>) -> (Vec<Listener>, usize) {
    let scan: SocketScan = match probe.attachment.scan_sockets() {
        Ok(scan) => scan,
        Err(e) => {
            metrics.kernel_read_errors.increment(1);
            tracing::warn!(error = %e, "socket scan failed: keeping the previous listeners");
            return (previous, 0);
        }
    };
    metrics.undecodable_iterator.increment(scan.decode_errors);
    for conn in &scan.seeded {
        let direction = scan.direction_of(conn);
        if direction != crate::events::Direction::Unknown {
            if let Err(e) = probe.open_flows.set_direction(conn.cookie, direction) {
                metrics.kernel_read_errors.increment(1);
                tracing::warn!(error = %e, "setting the direction of a seeded connection failed");
            }
        }
    }
    metrics.listeners.set(scan.listeners.len() as f64);
    (scan.listeners, scan.seeded.len())
}

/// Runs the daemon until `signals.stop` is set. `reload_from` is the file SIGHUP re-reads
/// (flags given on the command line keep overriding it: `overrides` is applied after).
pub fn run(
    config: ExporterConfig,
    reload_from: Option<PathBuf>,
    overrides: impl Fn(&mut RawExporterConfig),
    signals: Signals,
) -> Result<(), DaemonError> {
    if let Some(addr) = config.metrics {
        metrics::serve(addr)?;
        tracing::info!(%addr, "metrics");
    }
    let metrics = Metrics::register();
    let process = ProcessMetrics::new();
    let incarnation = batch::random_incarnation().map_err(DaemonError::Random)?;
    let mut probe = load(&LoaderConfig {
        ringbuf_bytes: config.ringbuf_bytes,
        pin_dir: config.pin_dir.clone(),
        ..LoaderConfig::default()
    })?;
    match &probe.pin {
        PinOutcome::Unavailable(why) => tracing::warn!(
            reason = %why,
            "the open-connection map is not pinned: connections open across a restart will be reported with an unobserved start"
        ),
        outcome => tracing::info!(pin = outcome.label(), dir = ?config.pin_dir, "open-connection map"),
    }
    metrics.started(incarnation, &probe.pin);
    let mut sink = Sink::open(&config.sink, &config.producer)?;
    let requests = control::serve(&config.control_socket).map_err(|source| DaemonError::Bind {
        what: format!("control socket {}", config.control_socket.display()),
        source,
    })?;
    let mut attributor = Attributor::new(
        config.cgroup_rules.clone(),
        config.host_workload.clone(),
        host_netns(),
        CgroupIndex::new(local::cgroup2_mount().unwrap_or_else(|| "/sys/fs/cgroup".into())),
    );
    let mut shared = SharedIps::new(config.shared_ip_hold.as_nanos() as u64);
    let json_lines = !matches!(config.sink, config::SinkSpec::Kafka { .. });
    // Seed before the first window starts, so every seeded connection starts inside a window.
    let (mut listeners, seeded) = scan(&mut probe, &metrics, Vec::new());
    metrics.seeded_at_start.increment(seeded as u64);
    let mut batcher = Batcher::new(config.exporter_id.clone(), incarnation, batch::boot_hash(), now_ns(), json_lines);
    let mut closed = Vec::new();
    let mut next = Instant::now() + config.batch_interval;
    let mut conntrack_warned = false;
    tracing::info!(
        exporter = %config.exporter_id,
        incarnation = %format!("{incarnation:016x}"),
        seeded,
        interval = ?config.batch_interval,
        sink = ?config.sink,
        "exporting"
    );
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
        // The producer's counters move between batches (deliveries): copied at every wake-up.
        if let Some(p) = sink.producer_stats() {
            metrics.producer(&p);
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
        // Scan first (what it seeds starts now, inside this window); then the window ends, and
        // everything the kernel has reported so far is read, so nothing that ended before the
        // window's end can come later.
        let scanned = scan(&mut probe, &metrics, std::mem::take(&mut listeners));
        listeners = scanned.0;
        metrics.seeded.increment(scanned.1 as u64);
        let to = now_ns();
        probe.events.read_available(&mut closed);
        let open = match probe.open_flows.snapshot() {
            Ok(snapshot) => {
                metrics.undecodable_open_map.increment(snapshot.decode_errors);
                snapshot.flows
            }
            Err(e) => {
                metrics.kernel_read_errors.increment(1);
                tracing::warn!(error = %e, "open-connection snapshot failed: this batch has no open slices");
                Vec::new()
            }
        };
        let addresses = ifaddrs::host_addresses()
            .inspect_err(
                |e| tracing::warn!(error = %e, "reading the host's addresses failed: no host heartbeats this batch"),
            )
            .ok();
        let nat = match nat::read_nat(addresses.as_deref().unwrap_or(&[])) {
            Ok(nat) => Some(nat),
            Err(e) => {
                if !conntrack_warned {
                    conntrack_warned = true;
                    tracing::warn!(
                        error = %e,
                        "the conntrack table cannot be read: ports forwarded by destination NAT are unknown, so no \
                         host address is claimed as a whole (readable as root or with CAP_DAC_READ_SEARCH)"
                    );
                }
                None
            }
        };
        let input = BatchInput {
            to,
            closed: std::mem::take(&mut closed),
            open: &open,
            listeners: &listeners,
            host_addresses: addresses.as_deref(),
            nat: nat.as_ref(),
        };
        let built = batcher.build(input, &mut attributor, &mut shared);
        metrics.shared_ips.set(shared.expire(to) as f64);
        let open_slices = built.batch.flows.iter().filter(|f| f.open).count() as u64;
        let port_beats = built.batch.heartbeats.iter().filter(|h| h.port != 0).count() as u64;
        metrics.batches.increment(1);
        metrics.flows_closed.increment(built.batch.flows.len() as u64 - open_slices);
        metrics.flows_open.increment(open_slices);
        metrics.heartbeats_ip.increment(built.batch.heartbeats.len() as u64 - port_beats);
        metrics.heartbeats_port.increment(port_beats);
        match sink.send(&built) {
            Ok(()) => {}
            Err(SinkError::Closed) => return Ok(()),
            Err(e) => {
                metrics.sink_errors.increment(1);
                tracing::warn!(error = %e, "batch not delivered to the sink");
            }
        }
        if let Ok(c) = probe.counters.read() {
            metrics.ringbuf_drops.absolute(c.ringbuf_drops);
            metrics.open_map_full.absolute(c.open_map_full);
            metrics.stale_records.absolute(c.refresh_stale);
        }
        metrics.undecodable_ringbuf.absolute(probe.events.decode_errors());
        process.collect();
        if stopping {
            break;
        }
    }
    let closed = sink.close(Duration::from_secs(10));
    if let Some(p) = sink.producer_stats() {
        metrics.producer(&p);
    }
    closed?;
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
                    attributor.by_port.insert((*ip, *p), Arc::from(workload.as_str()));
                }
                None => {
                    probe.assignments.assign_addr(*ip, id).map_err(|e| e.to_string())?;
                    attributor.by_ip.insert(*ip, Arc::from(workload.as_str()));
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
            metrics.reloads.increment(1);
            tracing::info!("configuration reloaded");
        }
        Err(e) => tracing::error!(error = %format!("{e:#}"), "reload refused: keeping the running configuration"),
    }
}
