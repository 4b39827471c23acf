//! Serves the map of a lake directory, as `flowmap serve --lake DIR` will:
//!
//! ```sh
//! cargo run --release -p flowmap-serve --example serve_lake -- --lake /tmp/lake
//! # no lake at hand: write a synthetic one first (300 workloads, 1,500 edges, 30 minutes)
//! cargo run --release -p flowmap-serve --example serve_lake -- --lake /tmp/maplake --sample
//! ```
//!
//! Then open the printed URL. Ctrl-C stops it.

#[path = "common/fleet.rs"]
mod fleet;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use flowmap_serve::{serve, LakeSource, ServeConfig, ServeOptions};

#[derive(Parser)]
struct Args {
    /// The lake's root directory (its `edges/` table is read).
    #[arg(long)]
    lake: PathBuf,
    /// Where to listen.
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: std::net::SocketAddr,
    /// Allow a non-loopback address (the map has no authentication).
    #[arg(long)]
    allow_remote: bool,
    /// The map's settings (serve/serve.toml documents them).
    #[arg(long)]
    config: Option<PathBuf>,
    /// First write a synthetic fleet's edges into the lake (ending now).
    #[arg(long)]
    sample: bool,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).init();
    let args = Args::parse();
    if args.sample {
        std::fs::create_dir_all(&args.lake)?;
        let minute = 60_000_000_000u64;
        let start = (flowmap_serve::time::now_ns() / minute - 30) * minute;
        let fleet = fleet::fleet(300, 1_500, 30, start, 11);
        let rows = fleet::write_lake(&args.lake, &fleet.edges).context("writing the sample lake")?;
        println!("wrote {rows} edge rows to {}", args.lake.display());
    }
    let config = match &args.config {
        Some(path) => ServeConfig::from_file(path)?,
        None => ServeConfig::default(),
    };
    let source = Arc::new(LakeSource::open(&args.lake, config.lake_options())?);
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder()?;
    let options = ServeOptions { addr: args.addr, allow_remote: args.allow_remote };
    let server = serve(options, config, source, metrics, std::future::pending())?;
    println!("the map of {} is at {}", args.lake.display(), server.url());
    server.wait()?;
    Ok(())
}
