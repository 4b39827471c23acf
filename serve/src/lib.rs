//! flowmap's dependency map: who talks to whom in the fleet, how much, how fast, and how sure
//! flowmap is of each edge, as a web page and an HTTP API served from the `flowmap` binary.
//!
//! The caller picks a source of edge rows (the job's live rows, [`MemorySource`], which the job
//! updates through an `Arc`; or the lake's Parquet tables, [`LakeSource`]) and calls [`serve`],
//! which runs an axum server on a thread of its own and returns once it listens:
//!
//! ```no_run
//! use std::sync::Arc;
//! use flowmap_serve::{serve, MemoryOptions, MemorySource, ServeConfig, ServeOptions};
//!
//! let source = Arc::new(MemorySource::new(MemoryOptions::default()));
//! let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
//! let handle = recorder.handle();
//! let options = ServeOptions::loopback("127.0.0.1:8080".parse().unwrap());
//! let server = serve(options, ServeConfig::default(), source.clone(), handle, std::future::pending()).unwrap();
//! println!("the map is at {}", server.url());
//! // ... the job calls source.push_edges(rows), source.push_events(events) as it emits them ...
//! server.stop().unwrap();
//! ```
//!
//! Routes (parameters in [`query`]): `/` (the page), `/api/graph`, `/api/edges.csv`,
//! `/api/node`, `/api/series`, `/api/events`, `/api/meta`, `/metrics`, `/healthz`.
//!
//! # Layout
//! - [`row`]: the rows (edge deltas, events), the contract with the job and the lake.
//! - [`source`]: the [`EdgeSource`] trait; the in-memory and lake sources.
//! - [`time`], [`filter`], [`query`]: reading and validating request parameters.
//! - [`group`]: which node a name is drawn in (levels, named groupings).
//! - `aggregate`: rows to grouped, filtered edges with their unattributed shares.
//! - [`graph`]: the API's answers (graph, node, series, events) and edge certainty.
//! - [`export`]: the CSV.
//! - [`config`]: the settings file (`serve/serve.toml`).
//! - `http`, `assets`, [`server`]: the routes, the embedded page, the server's thread.
#![deny(missing_docs)]

mod aggregate;
mod assets;
pub mod config;
pub mod export;
pub mod filter;
pub mod graph;
pub mod group;
mod http;
pub mod query;
pub mod row;
pub mod server;
pub mod source;
pub mod time;

pub use config::{ConfigError, RawConfig, ServeConfig};
pub use flowmap_schema::sketch::{RttSketch, SketchError};
pub use row::{EdgeRow, Endpoint, EventKind, EventRow, RowSketch};
pub use server::{serve, ServeError, ServeOptions, Serving};
pub use source::{EdgeRows, EdgeSource, Health, LakeOptions, LakeSource, MemoryOptions, MemorySource, SourceError};
pub use time::TimeRange;
