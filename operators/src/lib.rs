//! Custom differential/timely operators of the flowmap attribution job, and the interval logic
//! they share.
//!
//! Ownership evidence ("IP X was workload W during [t1, t2)") is kept as a differential
//! arrangement keyed by IP, whose values are [`Claim`]s. The arrangement can serve any number of
//! readers; [`Attribute`] is the one that matters: it holds each flow only until the
//! arrangement's frontier passes the flow's lookup time, then decides its remote workload with
//! [`ranges::decide`].
//!
//! # Layout
//! - [`types`]: the records (IPs, workloads, claims, flows, verdicts).
//! - [`ranges`]: per-IP range sets (merge, conflict) and the attribution rule; pure functions.
//! - [`retention`]: the [`Expire`] operator that bounds the arrangement's memory.
//! - [`assignments`]: the [`AssignmentClaims`] operator turning IPAM events into claims.
//! - [`attribute`]: the [`Attribute`] operator, the frontier-driven lookup.
#![deny(missing_docs)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod assignments;
pub mod attribute;
pub mod ranges;
pub mod retention;
pub mod types;

pub use assignments::{AssignmentClaims, AssignmentEvent};
pub use attribute::{Attribute, AttributeParams, OwnershipTrace};
pub use retention::{round_up, Expire};
pub use types::*;
