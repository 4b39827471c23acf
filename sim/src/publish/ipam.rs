//! The address manager's assignment feed, and its faults.
//!
//! It publishes, one batch per window on its own (true) clock, an assignment when a pod or a
//! load balancer gets an address and a release when it gives it up. It publishes only what it
//! can vouch for as a whole address: pods alone on their address and load balancers (a pod
//! whose address is shared with a sidecar, node addresses and NAT addresses are known only
//! from the exporters' port-scoped evidence). Its faults, all in the feed's own `seq` and
//! incarnation, as the schema describes them:
//! - **lost** batches: a gap in `seq`;
//! - a **late start**: nothing reaches the transport before `ipam_late_start_ms`, so its
//!   first batches arrive together, behind everyone else's progress;
//! - **silences**: the feed stops publishing for `ipam_silence_ms`, then comes back as a new
//!   incarnation (`seq` from 0) whose first batch restates every current assignment (at the
//!   window's start); what changed while it was away is never published.
//!
//! [`IpamPlan::affects`] tells which flows to a load balancer those faults touch (the truth's
//! `ipam_fault`): those whose vouching assignment is separated from the flow's start by a lost
//! or silent window, or that start before the feed's late batches arrived.

use std::net::IpAddr;
use std::sync::Arc;

use flowmap_schema::{self as wire, Assignment, ExporterBatch, SCHEMA_VERSION};

use super::exporters::{incarnation_id, Timing};
use super::{Delivery, Summary, IPAM_FEED};
use crate::rng::Rng;
use crate::scenario::Checked;
use crate::world::{World, MS, T0};

/// An address held by a workload the feed publishes: `[start, end)`, true time.
struct Tenure {
    start: u64,
    end: u64,
    ip: IpAddr,
    workload: Arc<str>,
}

/// The feed over the run: its windows and which of them are lost, silent or late.
pub(crate) struct IpamPlan {
    tenures: Vec<Tenure>,
    base: u64,
    window: u64,
    /// Per window: lost in transit.
    lost: Vec<bool>,
    /// Per window: never published (an outage).
    silent: Vec<bool>,
    /// Per window: delivered late (held back by the late start).
    late: Vec<bool>,
    /// Prefix counts of lost or silent windows, and of late ones.
    broken_before: Vec<u32>,
    late_before: Vec<u32>,
    /// The outages, as window ranges `[first, resumed)`, in order.
    silences: Vec<(usize, usize)>,
    /// Incarnation ids: the first, then one per outage.
    incarnations: Vec<u64>,
    /// Nothing is delivered before this (true time).
    hold_until: u64,
    delay: u64,
}

impl IpamPlan {
    /// Plans the feed of `world`: its windows and faults.
    pub(crate) fn new(s: &Checked, world: &World, rng: &mut Rng, timing: &Timing) -> Self {
        let mut tenures: Vec<Tenure> = world
            .pods
            .iter()
            .filter(|p| p.sidecar.is_none())
            .map(|p| Tenure { start: p.start, end: p.end, ip: p.ip, workload: Arc::clone(&p.name) })
            .collect();
        tenures.extend(world.lbs.iter().map(|l| Tenure {
            start: l.start,
            end: l.end,
            ip: l.ip,
            workload: Arc::clone(&l.name),
        }));
        let window = timing.window;
        let end = timing.horizon + window;
        let first = tenures.iter().map(|t| t.start).min().unwrap_or(T0).min(T0);
        let base = first - first % window;
        let windows = (end - base).div_ceil(window) as usize;
        let mut silent = vec![false; windows];
        let mut silences = Vec::new();
        if s.ipam_silences > 0 {
            // One outage in each equal part of the run, placed at random inside it.
            let run = timing.horizon - T0;
            let part = run / s.ipam_silences as u64;
            let length = s.ipam_silence_ms * MS;
            let span = length.div_ceil(window) as usize;
            for i in 0..s.ipam_silences as u64 {
                let at = T0 + i * part + rng.range(0, part.saturating_sub(length) + 1);
                let first = ((at - base) / window) as usize;
                let resumed = (first + span).min(windows);
                silent[first..resumed].iter_mut().for_each(|w| *w = true);
                silences.push((first, resumed));
            }
        }
        let lost: Vec<bool> = (0..windows).map(|k| !silent[k] && rng.chance(s.ipam_loss)).collect();
        let delay = s.ipam_delay_ms * MS;
        let hold_until = if s.ipam_late_start_ms > 0 { T0 + s.ipam_late_start_ms * MS } else { 0 };
        let late: Vec<bool> =
            (0..windows).map(|k| !silent[k] && base + (k as u64 + 1) * window + delay < hold_until).collect();
        let prefix = |flags: &dyn Fn(usize) -> bool| {
            let mut counts = Vec::with_capacity(windows + 1);
            counts.push(0u32);
            for k in 0..windows {
                counts.push(counts[k] + u32::from(flags(k)));
            }
            counts
        };
        let broken_before = prefix(&|k| lost[k] || silent[k]);
        let late_before = prefix(&|k| late[k]);
        let incarnations = (0..=silences.len()).map(|_| incarnation_id(rng)).collect();
        IpamPlan {
            tenures,
            base,
            window,
            lost,
            silent,
            late,
            broken_before,
            late_before,
            silences,
            incarnations,
            hold_until,
            delay,
        }
    }

    fn window_of(&self, t: u64) -> usize {
        (((t.max(self.base) - self.base) / self.window) as usize).min(self.lost.len() - 1)
    }

    /// Whether the feed's faults touch a flow starting at `start` (true time) to a load
    /// balancer whose tenure began at `assigned_at`: the assignment was never published, or a
    /// lost or silent window lies between its last statement (the assignment, or a restatement
    /// after an outage) and the flow's start window, or the flow starts before late batches
    /// between them arrived.
    pub(crate) fn affects(&self, assigned_at: u64, start: u64) -> bool {
        let (ka, kt) = (self.window_of(assigned_at), self.window_of(start));
        let mut vouch = (!self.silent[ka]).then_some(ka);
        for &(_, resumed) in &self.silences {
            if ka < resumed && resumed <= kt {
                vouch = Some(resumed);
            }
        }
        let Some(v) = vouch else { return true };
        let broken = self.broken_before[kt + 1] > self.broken_before[v];
        let late = start < self.hold_until && self.late_before[kt + 1] > self.late_before[v];
        broken || late
    }

    /// Publishes the feed into `out`.
    pub(crate) fn publish(&self, out: &mut Vec<Delivery>, summary: &mut Summary) {
        let windows = self.lost.len();
        let mut by_window: Vec<Vec<Assignment>> = (0..windows).map(|_| Vec::new()).collect();
        let mut events: Vec<(u64, bool, &Tenure)> = Vec::with_capacity(2 * self.tenures.len());
        for t in &self.tenures {
            events.push((t.start, true, t));
            events.push((t.end, false, t));
        }
        // Releases before assignments at the same instant.
        events.sort_by_key(|e| (e.0, e.1));
        let end = self.base + windows as u64 * self.window;
        for (at, assigned, t) in events {
            if at >= end {
                continue;
            }
            let workload = if assigned { t.workload.to_string() } else { String::new() };
            by_window[self.window_of(at)].push(Assignment { ip: wire::ip_to_bytes(t.ip), workload, at_ns: at });
        }
        let (mut incarnation, mut seq, mut arrival) = (0usize, 0u64, 0u64);
        for (k, assignments) in by_window.into_iter().enumerate() {
            if self.silent[k] {
                summary.ipam_silent_windows += 1;
                continue;
            }
            let from = self.base + k as u64 * self.window;
            let mut restated = Vec::new();
            if self.silences.iter().any(|&(_, resumed)| resumed == k) {
                incarnation += 1;
                seq = 0;
                restated.extend(self.tenures.iter().filter(|t| t.start < from && from < t.end).map(|t| Assignment {
                    ip: wire::ip_to_bytes(t.ip),
                    workload: t.workload.to_string(),
                    at_ns: from,
                }));
            }
            restated.extend(assignments);
            let batch = ExporterBatch {
                schema_version: SCHEMA_VERSION,
                exporter_id: IPAM_FEED.to_string(),
                seq,
                window_from_ns: from,
                window_to_ns: from + self.window,
                flows: Vec::new(),
                heartbeats: Vec::new(),
                assignments: restated,
                incarnation: self.incarnations[incarnation],
            };
            seq += 1;
            if self.lost[k] {
                summary.ipam_batches_lost += 1;
                continue;
            }
            summary.ipam_late_batches += u64::from(self.late[k]);
            arrival = arrival.max(from + self.window + self.delay).max(self.hold_until);
            out.push(Delivery { key: IPAM_FEED.to_string(), arrival, payload: wire::encode_batch(&batch) });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ten 10-ns windows from 0: window 3 lost, windows 5 and 6 silent (back at 7), windows 0
    /// and 1 delivered late (nothing arrives before 25).
    fn plan() -> IpamPlan {
        let windows = 10;
        let flags = |set: &[usize]| (0..windows).map(|k| set.contains(&k)).collect::<Vec<bool>>();
        let (lost, silent, late) = (flags(&[3]), flags(&[5, 6]), flags(&[0, 1]));
        let prefix = |f: &[bool]| {
            let mut c = vec![0u32];
            for &x in f {
                c.push(c.last().copied().unwrap_or(0) + u32::from(x));
            }
            c
        };
        let broken: Vec<bool> = lost.iter().zip(&silent).map(|(a, b)| *a || *b).collect();
        IpamPlan {
            tenures: Vec::new(),
            base: 0,
            window: 10,
            broken_before: prefix(&broken),
            late_before: prefix(&late),
            lost,
            silent,
            late,
            silences: vec![(5, 7)],
            incarnations: vec![1, 2],
            hold_until: 25,
            delay: 0,
        }
    }

    #[test]
    fn faults_touch_the_flows_between_an_assignment_and_their_start() {
        let p = plan();
        let cases = [
            // (assigned at, flow start, touched)
            (22, 28, false), // both in window 2, after the late batches arrived
            (2, 24, true),   // the assignment came in a late batch, not there by the flow's start
            (12, 18, true),
            (2, 28, false), // the late batches had arrived by the flow's start
            (12, 29, false),
            (22, 35, true),  // window 3 lost between them
            (41, 44, false), // after the loss
            (41, 63, true),  // window 5 silent between them
            (41, 78, false), // restated when the feed came back (window 7)
            (55, 62, true),  // assigned while silent, flow before the restatement
            (55, 88, false), // restated at window 7
            (30, 31, true),  // assigned in the lost window
            (95, 99, false),
        ];
        for (at, start, touched) in cases {
            assert_eq!(p.affects(at, start), touched, "assigned at {at}, flow at {start}");
        }
    }
}
