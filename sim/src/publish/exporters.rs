//! Each host's exporter over the run: its id (two hosts share one when the scenario duplicates
//! an id; those hosts do not also restart), its incarnations (a restart stops one and, after some downtime, starts the next with
//! a new random incarnation and `seq` from 0), and the batch windows of each incarnation.
//!
//! Like the real exporter, an incarnation's windows start when it starts and follow its batch
//! interval; a stopping incarnation publishes a last, shorter window ending when it stops (a
//! graceful stop), with slices of the connections open then. All times here are on the host's
//! clock.

use std::sync::Arc;

use crate::rng::Rng;
use crate::scenario::Checked;
use crate::world::{World, MS, SEC, T0};

/// The batch grid of a run: every exporter's first window starts at `base` (host clock), and
/// exporters keep publishing until their windows pass `last`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Timing {
    /// Batch interval, ns.
    pub window: u64,
    /// Start of the exporters' first windows.
    pub base: u64,
    /// Windows are published until one ends at or after this.
    pub last: u64,
    /// End of the simulated traffic (true time).
    pub horizon: u64,
}

impl Timing {
    pub(crate) fn new(s: &Checked) -> Self {
        let window = s.window_ms * MS;
        let slack = s.skew_max_ms * MS + window;
        let horizon = T0 + s.duration_s * SEC;
        Timing { window, base: T0 - slack, last: horizon + slack, horizon }
    }
}

/// One run of an exporter.
#[derive(Clone, Debug)]
pub(crate) struct Incarnation {
    /// Its random, non-zero id.
    pub id: u64,
    /// When it started: its first window starts here (host clock).
    pub up: u64,
    /// When it stopped (its last window ends here); `None`: it runs to the end.
    pub down: Option<u64>,
}

impl Incarnation {
    /// End of its last window: `down`, or the first window end at or after `last`.
    pub fn stop(&self, t: &Timing) -> u64 {
        self.down.unwrap_or_else(|| self.up + self.windows(t) * t.window)
    }

    /// How many windows it publishes.
    pub fn windows(&self, t: &Timing) -> u64 {
        match self.down {
            Some(down) => (down - self.up).div_ceil(t.window),
            None => t.last.saturating_sub(self.up).div_ceil(t.window).max(1),
        }
    }

    /// Window `k`: `[from, to)`.
    pub fn window(&self, k: u64, t: &Timing) -> (u64, u64) {
        let from = self.up + k * t.window;
        let to = from + t.window;
        (from, self.down.map_or(to, |d| to.min(d)))
    }
}

/// A host's exporter over the run.
#[derive(Clone, Debug)]
pub(crate) struct ExporterPlan {
    /// The exporter id its batches carry.
    pub id: Arc<str>,
    /// Whether another host's exporter has the same id.
    pub duplicated: bool,
    /// The host's clock error, ns.
    pub skew: i64,
    /// Its runs, in time order, not overlapping.
    pub incarnations: Vec<Incarnation>,
}

impl ExporterPlan {
    /// When the first incarnation started (host clock).
    pub fn first_up(&self) -> u64 {
        self.incarnations[0].up
    }

    /// The incarnation running at host time `t`.
    pub fn running_at(&self, t: u64, timing: &Timing) -> Option<usize> {
        self.incarnations.iter().position(|inc| inc.up <= t && t < inc.stop(timing))
    }

    /// Whether the exporter stopped and started again around a connection open on `[s, e]`
    /// (host clock): a stop at or before `e`, and the next start after `s`.
    pub fn restarted_during(&self, s: u64, e: u64) -> bool {
        self.incarnations.windows(2).any(|w| w[0].down.is_some_and(|down| down <= e) && s < w[1].up)
    }
}

/// A host clock reading of true time `t`.
pub(crate) fn skewed(t: u64, skew: i64) -> u64 {
    t.saturating_add_signed(skew)
}

/// Plans every host's exporter: ids (with the duplicated pairs), incarnations and restarts.
pub(crate) fn plan(s: &Checked, world: &World, rng: &mut Rng, timing: &Timing) -> Vec<ExporterPlan> {
    let mut plans: Vec<ExporterPlan> = world
        .hosts
        .iter()
        .map(|h| ExporterPlan {
            id: Arc::clone(&h.name),
            duplicated: false,
            skew: h.skew,
            incarnations: vec![Incarnation { id: incarnation_id(rng), up: timing.base, down: None }],
        })
        .collect();
    // Distinct hosts for each fault: the first pairs share ids, the next hosts restart.
    let mut order: Vec<usize> = (0..plans.len()).collect();
    shuffle(rng, &mut order);
    let pairs = s.duplicated_exporter_ids;
    for pair in order.chunks_exact(2).take(pairs) {
        let id = Arc::clone(&plans[pair[0]].id);
        plans[pair[1]].id = id;
        plans[pair[0]].duplicated = true;
        plans[pair[1]].duplicated = true;
    }
    for &h in order.iter().skip(2 * pairs).take(s.exporter_restarts) {
        let at = T0 + rng.range(0, s.duration_s * SEC);
        let downtime = rng.range(0, s.exporter_downtime_max_ms * MS + 1);
        let plan = &mut plans[h];
        let skew = plan.skew;
        plan.incarnations[0].down = Some(skewed(at, skew));
        plan.incarnations.push(Incarnation { id: incarnation_id(rng), up: skewed(at + downtime, skew), down: None });
    }
    plans
}

/// A random, non-zero incarnation id.
pub(crate) fn incarnation_id(rng: &mut Rng) -> u64 {
    rng.next_u64().max(1)
}

fn shuffle(rng: &mut Rng, v: &mut [usize]) {
    for i in (1..v.len()).rev() {
        v.swap(i, rng.index(i + 1));
    }
}
