//! `flowmap serve` (the dependency map of a lake) and the map's live side for `demo` and
//! `collect` (`--serve ADDR`: the job's own edges and events, through an in-memory source).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Args;
use flowmap_operators::Time;
use flowmap_schema as wire;
use flowmap_serve::{serve, LakeSource, MemoryOptions, MemorySource, ServeConfig, ServeOptions, Serving};
use metrics_exporter_prometheus::PrometheusBuilder;

use crate::sink::{Sink, SinkError};

/// Arguments of `flowmap serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The lake's root directory (its `edges` and `events` tables are read).
    #[arg(long)]
    pub lake: PathBuf,
    /// Where to listen (a loopback address unless `--allow-remote`).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub addr: SocketAddr,
    /// The map's settings (serve/serve.toml documents them).
    #[command(flatten)]
    pub map: MapArgs,
}

/// The map's settings, shared by `serve`, `demo --serve` and `collect --serve`.
#[derive(Debug, Clone, Default, Args)]
pub struct MapArgs {
    /// Allow a non-loopback address (the map has no authentication: only behind something that
    /// has).
    #[arg(long)]
    pub allow_remote: bool,
    /// The map's settings (TOML, see serve/serve.toml: groupings, limits, cache).
    #[arg(long)]
    pub map_config: Option<PathBuf>,
}

impl MapArgs {
    fn config(&self) -> Result<ServeConfig> {
        Ok(match &self.map_config {
            Some(path) => ServeConfig::from_file(path)?,
            None => ServeConfig::default(),
        })
    }

    /// Starts the map server over `source`, with the process's metrics at `/metrics`.
    ///
    /// # Errors
    /// Bad settings, an address in use or not loopback, or a metrics recorder already
    /// installed (`collect --metrics` with `--serve`).
    pub fn start(&self, addr: SocketAddr, source: Arc<dyn flowmap_serve::EdgeSource>) -> Result<Serving> {
        let config = self.config()?;
        let metrics = PrometheusBuilder::new().install_recorder().context("installing the metrics recorder")?;
        let options = ServeOptions { addr, allow_remote: self.allow_remote };
        Ok(serve(options, config, source, metrics, std::future::pending())?)
    }
}

/// `flowmap serve`: the map of a lake, until killed.
pub fn run(args: ServeArgs) -> Result<()> {
    let config = args.map.config()?;
    let source = Arc::new(
        LakeSource::open(&args.lake, config.lake_options())
            .with_context(|| format!("opening the lake at {}", args.lake.display()))?,
    );
    let server = args.map.start(args.addr, source)?;
    println!("the map of {} is at {}", args.lake.display(), server.url());
    server.wait()?;
    Ok(())
}

/// A new in-memory source for the map (six hours of edges behind the newest).
pub fn memory_source() -> Arc<MemorySource> {
    Arc::new(MemorySource::new(MemoryOptions::default()))
}

/// Hands the job's edges to the map's in-memory source (delivered at once: the map is a view,
/// not a store the job commits against).
pub struct MapEdges(pub Arc<MemorySource>);

impl Sink<wire::Edge> for MapEdges {
    fn write(&mut self, _time: Time, edge: &wire::Edge) -> Result<(), SinkError> {
        self.0.push_edges(vec![edge.into()]);
        Ok(())
    }
    fn advance(&mut self, frontier: Option<Time>) -> Result<(), SinkError> {
        if let Some(f) = frontier {
            self.0.set_frontier(f);
        }
        Ok(())
    }
    fn undelivered(&mut self) -> Result<Option<Time>, SinkError> {
        Ok(None)
    }
    fn finish(&mut self) -> Result<(), SinkError> {
        Ok(())
    }
}

/// Hands the job's change events to the map's in-memory source.
pub struct MapEvents(pub Arc<MemorySource>);

impl Sink<wire::Event> for MapEvents {
    fn write(&mut self, _time: Time, event: &wire::Event) -> Result<(), SinkError> {
        self.0.push_events(vec![event.into()]);
        Ok(())
    }
    fn undelivered(&mut self) -> Result<Option<Time>, SinkError> {
        Ok(None)
    }
    fn finish(&mut self) -> Result<(), SinkError> {
        Ok(())
    }
}
