//! What the job sees: every host's exporter batches (through its skewed clock, its restarts and
//! its id, which two hosts may share), the address manager's assignment feed with its faults,
//! and the transport's faults. Ground truth is produced beside it and never travels with the
//! batches.
//!
//! # Layout
//! - `exporters`: each host's exporter id, incarnations and batch windows.
//! - `records`: connections into flow records (slices, final records, unobserved starts,
//!   failed attempts), each with its truth.
//! - `batches`: records and heartbeats into batches, through delays and transport faults.
//! - `ipam`: the assignment feed and its faults.

use std::collections::HashSet;

use serde::Serialize;

use crate::rng::Rng;
use crate::scenario::Checked;
use crate::world::World;

pub(crate) mod batches;
pub(crate) mod exporters;
pub(crate) mod ipam;
pub(crate) mod records;

pub use crate::truth::{Fate, TruthFlow};

/// The id (and message key) of the address manager's feed.
pub const IPAM_FEED: &str = "ipam";

/// One message as the transport delivers it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// The message key: the exporter id.
    pub key: String,
    /// True time of arrival at the job, ns.
    pub arrival: u64,
    /// The encoded batch (or garbage, for injected faults).
    pub payload: Vec<u8>,
}

/// What a simulation produced, counted (for reports; the truth has the details).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// Connections (and failed attempts) in the fleet.
    pub connections: u64,
    /// Of those, attempts that never established (refused or timed out).
    pub failed_connects: u64,
    /// Flow records the exporters produced (one truth entry each).
    pub records: u64,
    /// Of those, open slices.
    pub open_slices: u64,
    /// Of those, records with `start_unobserved`.
    pub unobserved_starts: u64,
    /// Connection sides no exporter reported: begun after their exporter first started, and
    /// ended while it was down.
    pub sides_unseen: u64,
    /// Connection sides reported open but without a final record (they closed while their
    /// exporter was down).
    pub finals_unseen: u64,
    /// Exporter batches published (including lost ones).
    pub batches: u64,
    /// Of those, lost in transit.
    pub batches_lost: u64,
    /// Exporter restarts (new incarnations).
    pub exporter_restarts: u64,
    /// Exporter ids shared by two hosts.
    pub duplicated_exporter_ids: u64,
    /// Assignment-feed batches lost.
    pub ipam_batches_lost: u64,
    /// Assignment-feed batches delivered late (held back by its late start).
    pub ipam_late_batches: u64,
    /// Assignment-feed windows never published (outages).
    pub ipam_silent_windows: u64,
}

/// A simulated run: what the job reads, and the truth to score it by.
#[derive(Clone, Debug)]
pub struct Simulation {
    /// Deliveries in arrival order.
    pub deliveries: Vec<Delivery>,
    /// The sources the job should expect from the start: every exporter id (once, even when
    /// two hosts share it), and the assignment feed unless it starts late (a job cannot know
    /// of a source before it shows up).
    pub roster: Vec<String>,
    /// One entry per flow record the exporters produced.
    pub truth: Vec<TruthFlow>,
    /// Counts of what was produced.
    pub summary: Summary,
}

/// Turns a fleet into deliveries and truth.
pub fn publish(s: &Checked, world: &World) -> Simulation {
    let mut rng = Rng::new(s.seed ^ 0x005e_ed0f_fa17);
    let timing = exporters::Timing::new(s);
    let plans = exporters::plan(s, world, &mut rng.fork(1), &timing);
    let ipam = ipam::IpamPlan::new(s, world, &mut rng.fork(2), &timing);
    let mut summary = Summary {
        exporter_restarts: plans.iter().map(|p| p.incarnations.len() as u64 - 1).sum(),
        duplicated_exporter_ids: plans.iter().filter(|p| p.duplicated).count() as u64 / 2,
        ..Summary::default()
    };
    let mut records = records::empty(&plans, &timing);
    records::emit_all(world, &plans, &ipam, &timing, &mut rng.fork(3), &mut records, &mut summary);

    let mut deliveries = Vec::new();
    let mut truth = Vec::with_capacity(summary.records as usize);
    let mut transport = rng.fork(4);
    batches::publish_hosts(
        s,
        world,
        &plans,
        records,
        &timing,
        &mut transport,
        &mut deliveries,
        &mut truth,
        &mut summary,
    );
    ipam.publish(&mut deliveries, &mut summary);
    if s.corrupt > 0.0 {
        batches::rogue_batches(&mut deliveries, timing.base, timing.last);
    }
    deliveries.sort_by_key(|d| d.arrival);

    let mut listed: HashSet<&str> = HashSet::with_capacity(plans.len());
    let mut roster: Vec<String> = Vec::with_capacity(plans.len() + 1);
    for p in &plans {
        if listed.insert(&p.id) {
            roster.push(p.id.to_string());
        }
    }
    if s.ipam_late_start_ms == 0 {
        roster.push(IPAM_FEED.to_string());
    }
    Simulation { deliveries, roster, truth, summary }
}

#[cfg(test)]
mod tests;
