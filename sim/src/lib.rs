//! The fleet simulator and the scorer.
//!
//! [`simulate`] builds a fleet in true time ([`world`]), then what the attribution job would
//! read from it: exporter batches through skewed clocks, restarting exporters and a faulty
//! transport, and an address manager's assignment feed with its own faults ([`publish`]). The
//! ground truth, one entry per flow record naming both ends ([`truth`]), is produced beside
//! the deliveries and never travels with them. [`score`](score::score) compares the job's
//! verdicts with it, record by record and by kind of remote end and hazard, and runs the old
//! method as a baseline.
//!
//! # Layout
//! - [`scenario`]: the settings, with the `steady` and `adversarial` presets and validation.
//! - [`rng`]: the seedable generator (reproducible fleets).
//! - [`world`]: hosts, pods (some with sidecars), hostNetwork workloads, load balancers, NAT
//!   ports, address pools with reuse, connections.
//! - [`publish`]: exporters (incarnations, restarts, a duplicated id), records (open slices,
//!   unobserved starts, failed connects), batches, the assignment feed and its faults,
//!   deliveries.
//! - [`truth`]: what really happened to each record.
//! - [`score`](mod@score): verdicts against truth, and the baseline.
//! - [`io`]: delivery logs and truth files, read and written as streams.
//! - [`lookup`]: the plain "flows against ownership ranges" data set of the peer benchmark.
#![deny(missing_docs)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod io;
pub mod lookup;
pub mod publish;
pub mod rng;
pub mod scenario;
pub mod score;
pub mod truth;
pub mod world;

pub use publish::{Delivery, Simulation, Summary, IPAM_FEED};
pub use scenario::{Checked, Scenario, ScenarioError};
pub use score::{account_dead_letters, score, Score, Tally, Verdict};
pub use truth::{Condition, Conditions, EndKind, Fate, RecordKey, TruthFlow};

/// Simulates a scenario: validates it, builds the fleet and publishes it. The same scenario
/// (and seed) always gives the same simulation.
///
/// # Errors
/// [`ScenarioError`] when a setting is invalid.
pub fn simulate(scenario: &Scenario) -> Result<Simulation, ScenarioError> {
    let checked = scenario.validate()?;
    let world = world::generate(&checked);
    Ok(publish::publish(&checked, &world))
}
