//! The in-memory feed: pre-generated deliveries (from the simulator or a delivery log), split
//! between workers by the hash of their key, as Kafka would split them between partitions.

use std::sync::Arc;
use std::time::Duration;

use flowmap_sim::Delivery;

use crate::config::JobConfig;
use crate::feed::{Feed, FeedStatus, Lane, Message, Outcome};
use crate::run::{run, OutputMode, RunError, RunReport};

/// Which worker reads the messages of `key` (FNV-1a of the key, modulo the workers).
pub fn worker_of(key: &str, peers: usize) -> usize {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in key.as_bytes() {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (hash % peers.max(1) as u64) as usize
}

/// One worker's view of a shared list of deliveries.
pub struct MemoryFeed {
    deliveries: Arc<Vec<Delivery>>,
    pos: usize,
    index: usize,
    peers: usize,
    roster: Vec<String>,
    pace: usize,
}

impl MemoryFeed {
    /// The share of worker `index` of `peers`, expecting the exporters of `roster` it reads.
    pub fn new(deliveries: Arc<Vec<Delivery>>, roster: &[String], index: usize, peers: usize) -> Self {
        let roster = roster.iter().filter(|id| worker_of(id, peers) == index).cloned().collect();
        MemoryFeed { deliveries, pos: 0, index, peers, roster, pace: usize::MAX }
    }

    /// Hands out at most `pace` deliveries per poll, so that a run ingests its input over many
    /// steps the way a live stream arrives, instead of in a few large gulps.
    pub fn with_pace(mut self, pace: usize) -> Self {
        self.pace = pace.max(1);
        self
    }
}

impl Feed for MemoryFeed {
    /// One lane per worker (its share of the keys), expecting the worker's share of the roster.
    fn lanes(&self) -> Vec<Lane> {
        vec![Lane { id: self.index as u32, roster: self.roster.clone() }]
    }

    fn poll(&mut self, max: usize, deliver: &mut dyn FnMut(&Message<'_>) -> Outcome) -> FeedStatus {
        let mut given = 0;
        while given < max.min(self.pace) {
            let Some(d) = self.deliveries.get(self.pos) else { return FeedStatus::Done };
            self.pos += 1;
            if worker_of(&d.key, self.peers) == self.index {
                let lane = self.index as u32;
                deliver(&Message { lane, key: &d.key, payload: &d.payload, arrival: d.arrival, rebuild: false });
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
pub fn run_deliveries(
    timely: timely::Config,
    job: JobConfig,
    deliveries: Arc<Vec<Delivery>>,
    roster: Arc<Vec<String>>,
    mode: OutputMode,
    sample_every: Duration,
    profile: bool,
) -> Result<RunReport, RunError> {
    run(
        timely,
        job,
        move |index, peers| MemoryFeed::new(Arc::clone(&deliveries), &roster, index, peers),
        mode,
        sample_every,
        profile,
    )
}
