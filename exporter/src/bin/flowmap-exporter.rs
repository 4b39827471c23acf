//! `flowmap-exporter`: the host daemon (see `flowmap_exporter::daemon`), and its
//! `assign`/`unassign` control commands.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use flowmap_exporter::daemon::config::RawExporterConfig;
use flowmap_exporter::daemon::control::{request, Request};
use flowmap_exporter::daemon::{self, Signals};

/// Captures every TCP flow of this host with eBPF and publishes batches with local workloads
/// and ownership heartbeats.
#[derive(Debug, Parser)]
#[command(name = "flowmap-exporter", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Attribute a local address (or address and port) to a workload, in a running exporter.
    Assign(AssignArgs),
    /// Remove such an assignment.
    Unassign(AssignArgs),
}

#[derive(Debug, Args)]
struct RunArgs {
    /// Settings file (TOML; see configs/exporter.toml). Default: /etc/flowmap/exporter.toml
    /// when it exists.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Where batches go: stdout, file:PATH or kafka://HOST:PORT/TOPIC.
    #[arg(long)]
    sink: Option<String>,
    /// Batch interval (default 10s).
    #[arg(long, value_parser = humantime::parse_duration)]
    batch_interval: Option<Duration>,
    /// Exporter id (default: the host name).
    #[arg(long)]
    exporter_id: Option<String>,
    /// The host's own workload.
    #[arg(long)]
    host_workload: Option<String>,
    /// Metrics address on loopback, or `off`.
    #[arg(long)]
    metrics: Option<String>,
    /// Control socket path (default /run/flowmap/exporter.sock).
    #[arg(long, global = true)]
    control_socket: Option<PathBuf>,
    /// bpffs directory for the pinned open-connection map (default /sys/fs/bpf/flowmap), or
    /// `off`.
    #[arg(long)]
    pin_dir: Option<String>,
}

#[derive(Debug, Args)]
struct AssignArgs {
    /// The local address.
    #[arg(long)]
    ip: std::net::IpAddr,
    /// A port, for an IPv4 address shared by several workloads.
    #[arg(long)]
    port: Option<u16>,
    /// The workload (assign only).
    #[arg(long)]
    workload: Option<String>,
}

const DEFAULT_CONFIG: &str = "/etc/flowmap/exporter.toml";

fn main() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("FLOWMAP_LOG").unwrap_or_else(|_| "info".into());
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    if let Err(e) = run(Cli::parse()) {
        eprintln!("flowmap-exporter: error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    let socket = |raw: &RawExporterConfig| {
        cli.run
            .control_socket
            .clone()
            .or(raw.control_socket.clone())
            .unwrap_or_else(|| "/run/flowmap/exporter.sock".into())
    };
    let config_path = cli.run.config.clone().or_else(|| {
        let default = PathBuf::from(DEFAULT_CONFIG);
        default.exists().then_some(default)
    });
    let file = match &config_path {
        Some(p) => RawExporterConfig::load(p)?,
        None => RawExporterConfig::default(),
    };
    match cli.command {
        Some(Command::Assign(a)) => {
            let workload = a.workload.context("assign needs --workload")?;
            let answer = request(&socket(&file), &Request::Assign { ip: a.ip, port: a.port, workload })
                .map_err(anyhow::Error::msg)?;
            println!("{answer}");
            Ok(())
        }
        Some(Command::Unassign(a)) => {
            let answer =
                request(&socket(&file), &Request::Unassign { ip: a.ip, port: a.port }).map_err(anyhow::Error::msg)?;
            println!("{answer}");
            Ok(())
        }
        None => {
            let flags = cli.run;
            let overrides = move |raw: &mut RawExporterConfig| {
                if flags.sink.is_some() {
                    raw.sink.clone_from(&flags.sink);
                }
                if flags.batch_interval.is_some() {
                    raw.batch_interval = flags.batch_interval;
                }
                if flags.exporter_id.is_some() {
                    raw.exporter_id.clone_from(&flags.exporter_id);
                }
                if flags.host_workload.is_some() {
                    raw.host_workload.clone_from(&flags.host_workload);
                }
                if flags.metrics.is_some() {
                    raw.metrics.clone_from(&flags.metrics);
                }
                if flags.control_socket.is_some() {
                    raw.control_socket.clone_from(&flags.control_socket);
                }
                if flags.pin_dir.is_some() {
                    raw.pin_dir.clone_from(&flags.pin_dir);
                }
            };
            let mut raw = file;
            overrides(&mut raw);
            let config = raw.validate()?;
            let signals = Signals::default();
            for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
                signal_hook::flag::register(sig, Arc::clone(&signals.stop)).context("installing signal handlers")?;
            }
            signal_hook::flag::register(signal_hook::consts::SIGHUP, Arc::clone(&signals.reload))
                .context("installing signal handlers")?;
            daemon::run(config, config_path, overrides, signals)?;
            Ok(())
        }
    }
}
