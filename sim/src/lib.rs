//! The fleet simulator and the scorer.
//!
//! [`simulate`] builds a fleet in true time ([`world`]), then what the attribution job would
//! read from it: exporter batches through skewed clocks and a faulty transport, and an
//! address manager's assignment feed ([`publish`]). The ground truth is produced beside the
//! deliveries and never travels with them. [`score`](score::score) compares the job's
//! verdicts with it and runs the old method as a baseline.
//!
//! # Layout
//! - [`scenario`]: the settings, with the `steady` and `adversarial` presets.
//! - [`rng`]: the seedable generator (reproducible fleets).
//! - [`world`]: pods, address pools with reuse, load balancers, connections.
//! - [`publish`]: batches, faults, deliveries and truth.
//! - [`score`]: verdicts against truth, and the baseline.
//! - [`io`]: delivery logs and truth files.
//! - [`lookup`]: the plain "flows against ownership ranges" data set of the peer benchmark.
#![deny(missing_docs)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod io;
pub mod lookup;
pub mod publish;
pub mod rng;
pub mod scenario;
pub mod score;
pub mod world;

pub use publish::{Delivery, Fate, Simulation, TruthFlow, IPAM_FEED};
pub use scenario::{Scenario, ScenarioError};
pub use score::{account_dead_letters, score, Score, Verdict};

/// Simulates a scenario: validates it, builds the fleet and publishes it.
pub fn simulate(scenario: &Scenario) -> Result<Simulation, ScenarioError> {
    scenario.validate()?;
    let world = world::generate(scenario);
    Ok(publish::publish(scenario, &world))
}
