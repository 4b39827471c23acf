//! The core of the flowmap attribution job: the rule, the ownership index it reads, and the
//! timely operator that applies it in event time.
//!
//! Ownership evidence ("address X, or its port P, was workload W during [t1, t2)", from
//! heartbeats, flows' local ends, connection records and address managers' assignments) goes to
//! the worker that owns the address; [`Attribute`] holds each flow until the evidence about the
//! guard band around its start is complete, then decides its remote end with
//! [`rule::decide`] against that worker's [`index::Index`].
//!
//! # Layout
//! - [`types`]: addresses, times, evidence kinds, reasons.
//! - [`records`]: the containers exchanged between workers (evidence, flows, verdicts).
//! - [`rule`]: the attribution rule over the evidence near one instant; pure functions.
//! - [`index`]: one worker's ownership index (claims, connection records, assignments, expiry).
//! - [`attribute`]: the [`Attribute`] operator, the frontier-driven lookup.
//! - [`sketch`]: a mergeable quantile sketch of round-trip times (re-exported from the schema,
//!   whose `Edge.rtt_sketch` carries its bytes).
//! - [`edges`]: dependency edges from verdicts (the [`edges::EdgeUpdates`] operator).
#![deny(missing_docs)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod attribute;
pub mod edges;
pub mod index;
pub mod records;
pub mod rule;
pub use flowmap_schema::sketch;
pub mod types;

pub use attribute::{Attribute, AttributeParams, StateProbe};
pub use index::{Index, IndexParams, IndexSize};
pub use types::*;
