//! The in-memory feed: pre-generated deliveries (from the simulator or a delivery log), split
//! into a fixed number of lanes by the hash of their key, as Kafka splits a topic into
//! partitions, and the lanes between workers (lane `l` to worker `l % workers`), as the Kafka
//! job does. Because the lanes do not depend on the number of workers, every worker count
//! reads the same lanes in the same per-lane order and decides the same.

use std::sync::{Arc, Mutex};

use flowmap_sim::Delivery;

use crate::config::JobConfig;
use crate::feed::{Feed, FeedStatus, Lane, Message, Outcome};
use crate::run::{run, RunError, RunOptions, RunReport};

/// Lanes of the in-memory feed (the number of partitions of a topic it stands in for).
pub const LANES: u32 = 8;

/// The lane of the messages of `key` (FNV-1a of the key, modulo [`LANES`]).
pub fn lane_of(key: &str) -> u32 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in key.as_bytes() {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (hash % u64::from(LANES)) as u32
}

/// Whether worker `index` of `peers` reads `lane`.
fn reads(lane: u32, index: usize, peers: usize) -> bool {
    lane as usize % peers.max(1) == index
}

/// One worker's view of a shared list of deliveries.
pub struct MemoryFeed {
    deliveries: Arc<Vec<Delivery>>,
    pos: usize,
    index: usize,
    peers: usize,
    roster: Vec<String>,
    pace: usize,
    dead_letters: Option<DeadLetters>,
}

/// The deliveries a run refused in whole or in part (the file-run counterpart of the Kafka
/// job's dead-letter topic), shared by the workers.
pub type DeadLetters = Arc<Mutex<Vec<Delivery>>>;

impl MemoryFeed {
    /// The share of worker `index` of `peers`, expecting the exporters of `roster` it reads.
    pub fn new(deliveries: Arc<Vec<Delivery>>, roster: &[String], index: usize, peers: usize) -> Self {
        let roster = roster.to_vec();
        MemoryFeed { deliveries, pos: 0, index, peers, roster, pace: usize::MAX, dead_letters: None }
    }

    /// Keeps every delivery refused in whole or in part (`Outcome::Rejected`, `Outcome::Partial`)
    /// in `into`.
    pub fn with_dead_letters(mut self, into: DeadLetters) -> Self {
        self.dead_letters = Some(into);
        self
    }

    /// Hands out at most `pace` deliveries per poll, so that a run ingests its input over many
    /// steps the way a live stream arrives, instead of in a few large gulps.
    pub fn with_pace(mut self, pace: usize) -> Self {
        self.pace = pace.max(1);
        self
    }
}

impl Feed for MemoryFeed {
    /// The worker's lanes, each expecting its share of the roster.
    fn lanes(&self) -> Vec<Lane> {
        (0..LANES)
            .filter(|&l| reads(l, self.index, self.peers))
            .map(|id| Lane { id, roster: self.roster.iter().filter(|k| lane_of(k) == id).cloned().collect() })
            .collect()
    }

    fn poll(&mut self, max: usize, deliver: &mut dyn FnMut(&Message<'_>) -> Outcome) -> FeedStatus {
        let mut given = 0;
        while given < max.min(self.pace) {
            let Some(d) = self.deliveries.get(self.pos) else { return FeedStatus::Done };
            self.pos += 1;
            let lane = lane_of(&d.key);
            if reads(lane, self.index, self.peers) {
                let outcome =
                    deliver(&Message { lane, key: &d.key, payload: &d.payload, arrival: d.arrival, rebuild: false });
                if let (Some(dead), Outcome::Partial { .. } | Outcome::Rejected { .. }) = (&self.dead_letters, outcome)
                {
                    dead.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(d.clone());
                }
                given += 1;
            }
        }
        if self.pos < self.deliveries.len() {
            FeedStatus::Ready
        } else {
            FeedStatus::Done
        }
    }
}

/// Runs the job over pre-generated deliveries, each worker reading its share.
///
/// # Errors
/// As [`run`].
pub fn run_deliveries(
    timely: timely::Config,
    job: JobConfig,
    deliveries: Arc<Vec<Delivery>>,
    roster: Arc<Vec<String>>,
    options: RunOptions,
) -> Result<RunReport, RunError> {
    run(timely, job, move |index, peers| MemoryFeed::new(Arc::clone(&deliveries), &roster, index, peers), options)
}

/// As [`run_deliveries`], keeping the refused deliveries in `dead_letters`.
///
/// # Errors
/// As [`run`].
pub fn run_deliveries_with_dead_letters(
    timely: timely::Config,
    job: JobConfig,
    deliveries: Arc<Vec<Delivery>>,
    roster: Arc<Vec<String>>,
    options: RunOptions,
    dead_letters: DeadLetters,
) -> Result<RunReport, RunError> {
    let make = move |index, peers| {
        MemoryFeed::new(Arc::clone(&deliveries), &roster, index, peers).with_dead_letters(Arc::clone(&dead_letters))
    };
    run(timely, job, make, options)
}
