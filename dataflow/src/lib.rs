//! flowmap: attributes both ends of every TCP flow in a fleet to the workloads that owned the
//! IPs when the flow started, or leaves an end unattributed with a reason. Never guesses.
//!
//! Entry points: the binary `flowmap` (`src/main.rs`, subcommands in [`cli`]) and [`run::run`],
//! which runs the dataflow of [`pipeline`] on timely workers over any [`feed::Feed`].
//!
//! # Layout
//! - [`config`]: the job's typed, validated settings (`configs/job.toml`).
//! - [`cidr`]: fleet address blocks.
//! - [`feed`]: the input interface ([`feed::Feed`], lanes, messages, outcomes, errors).
//! - [`admission`]: from a raw message to routed pieces: validation, per-exporter progress
//!   (incarnations, gaps, duplicates), assignment sources' runs; no timely needed.
//! - [`source`]: the batch source operator over a [`feed::Feed`].
//! - [`pipeline`]: the attribution dataflow.
//! - [`edges`]: dependency edges and change events from the verdicts.
//! - [`run`]: workers, output collection, statistics.
//! - [`sink`]: delivering output and tracking the delivered frontier.
//! - [`profile`]: per-operator time from timely's log (`--profile`).
//! - `memory`: the in-memory feed over pre-generated deliveries (feature `sim`).
//! - [`capture`]: captured topics on disk, and the replay feed.
//! - [`kafka`]: the job on Kafka (committing feed, acknowledged sink, topic reader).
//! - [`output`]: the JSON output record.
//! - [`cli`]: the subcommands (`demo`, `simulate`, `attribute`, `score`, `bench`).
#![deny(missing_docs)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod admission;
pub mod capture;
pub mod cidr;
pub mod cli;
pub mod config;
pub mod edges;
pub mod feed;
pub mod kafka;
pub mod lake;
#[cfg(feature = "sim")]
pub mod memory;
pub mod metrics;
pub mod output;
pub mod pipeline;
pub mod profile;
pub mod run;
pub mod sink;
pub mod source;
#[cfg(test)]
mod test_util;
pub mod vpc;
