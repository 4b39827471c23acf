//! flowmap's Kafka plumbing, shared by the exporter, the simulator and the job.
//!
//! Why a crate of its own: every producer in the system has the same obligations (batches keyed
//! so one exporter's stay in order, idempotence, compression, delivery reports checked, a
//! bounded queue with a counted policy when the broker is away), and they are easy to get
//! subtly wrong in three places. Everything librdkafka-specific that is not consuming lives
//! here; consumers are the job's own business (`dataflow/src/kafka`).
//!
//! # Layout
//! - [`config`]: typed, validated client and producer settings (serde), and the one place
//!   where they become librdkafka properties.
//! - [`producer`]: [`Producer`], a bounded, counted producer with per-send delivery tickets,
//!   recreated after a fatal error.
//! - `unacked`: the records not yet acknowledged, which a recreated producer resends.
//! - [`admin`]: creating topics (idempotent) and reading their partition counts.
#![deny(missing_docs)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod admin;
pub mod config;
pub mod producer;
mod unacked;

pub use config::{ClientSettings, Compression, ConfigError, FullPolicy, ProducerSettings};
pub use producer::{Producer, ProducerError, ProducerStats, Record, SendError, Ticket};
pub use rdkafka;
