//! Coalescing of heartbeats: consecutive per-window heartbeats of one (IP, workload) from one
//! exporter become one longer claim.
//!
//! Why: an exporter reports every local IP in every batch window, so a stable IP costs the
//! ownership arrangement one claim (and one retraction) per window. Merging up to
//! `max_windows` abutting heartbeats into one claim divides that work, and the arrangement's
//! size, by up to that factor (measured: 3-minute claims instead of 1-minute ones doubled the
//! core-lookup throughput).
//!
//! Time contract: a run of heartbeats is held until it ends (the exporter's next in-order batch
//! does not continue it) or reaches `max_windows`, then emitted at the batch time of its
//! *first* window, which is no later than any instant it describes. The source keeps its
//! capabilities at or below the earliest first-window time of the runs it holds
//! ([`Coalescer::earliest`]), so an emitted claim is never behind the frontier: this is what
//! makes holding them safe, and it costs a frontier lag of at most `max_windows` windows.
//! The runs depend only on each exporter's own batch sequence, so the output does not depend
//! on how exporters interleave. Late batches are not coalesced (their claims go straight out).

use std::collections::HashMap;

use flowmap_operators::{Claim, EvidenceKind, Ip, Time, Workload};

#[derive(Debug)]
struct Run {
    claim: Claim,
    /// Batch time of the run's first window: when it will be emitted.
    since: Time,
    windows: u32,
    /// Sequence number of the batch that last extended the run.
    last_seq: u64,
}

/// The runs held for one exporter.
#[derive(Debug, Default)]
struct ExporterRuns {
    runs: foldhash::HashMap<Ip, Run>,
    /// The least `since` of `runs` (`Time::MAX` when empty).
    earliest: Time,
}

/// Heartbeat runs held by one source.
#[derive(Debug)]
pub struct Coalescer {
    max_windows: u32,
    exporters: HashMap<Workload, ExporterRuns>,
}

impl Coalescer {
    /// Merges up to `max_windows` windows per claim (1 turns coalescing off).
    pub fn new(max_windows: u32) -> Self {
        Coalescer { max_windows: max_windows.max(1), exporters: HashMap::new() }
    }

    /// The earliest time a held run will be emitted at, if any is held.
    pub fn earliest(&self) -> Option<Time> {
        self.exporters.values().map(|e| e.earliest).min().filter(|t| *t != Time::MAX)
    }

    /// Takes the claims of an in-order batch `seq` of `exporter` at batch time `at`: heartbeats
    /// extend or start runs; other claims, and runs that end or fill up, go to `emit` with the
    /// time to emit them at.
    pub fn batch(
        &mut self,
        exporter: &Workload,
        seq: u64,
        at: Time,
        claims: Vec<(Ip, Claim)>,
        emit: &mut impl FnMut(Time, Ip, Claim),
    ) {
        if self.max_windows == 1 {
            for (ip, claim) in claims {
                emit(at, ip, claim);
            }
            return;
        }
        let held = self.exporters.entry(exporter.clone()).or_default();
        let runs = &mut held.runs;
        for (ip, claim) in claims {
            if claim.kind != EvidenceKind::Heartbeat {
                emit(at, ip, claim);
                continue;
            }
            // One heartbeat per IP per batch is the norm; a second one for the same IP (another
            // workload, or a split range) ends the run and starts a new one.
            if let Some(run) = runs.get_mut(&ip) {
                let continues = run.claim.workload == claim.workload
                    && run.claim.to == claim.from
                    && run.windows < self.max_windows
                    && run.last_seq + 1 == seq;
                if continues {
                    run.claim.to = claim.to;
                    run.windows += 1;
                    run.last_seq = seq;
                    continue;
                }
            }
            if let Some(done) = runs.insert(ip, Run { claim, since: at, windows: 1, last_seq: seq }) {
                emit(done.since, ip, done.claim);
            }
        }
        // Runs this batch did not continue have ended.
        let mut earliest = Time::MAX;
        runs.retain(|ip, run| {
            if run.last_seq == seq {
                earliest = earliest.min(run.since);
                true
            } else {
                emit(run.since, *ip, run.claim.clone());
                false
            }
        });
        held.earliest = earliest;
        if held.runs.is_empty() {
            self.exporters.remove(exporter);
        }
    }

    /// Emits every held run (the input has ended).
    pub fn flush(&mut self, emit: &mut impl FnMut(Time, Ip, Claim)) {
        for (_, held) in self.exporters.drain() {
            for (ip, run) in held.runs {
                emit(run.since, ip, run.claim);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hb(from: Time, to: Time, who: &str) -> Claim {
        Claim { kind: EvidenceKind::Heartbeat, from, to, workload: Workload::new(who) }
    }

    fn run(c: &mut Coalescer, e: &str, seq: u64, claims: Vec<(Ip, Claim)>) -> Vec<(Time, Time, Time, String)> {
        let mut out = Vec::new();
        let at = claims.first().map(|(_, c)| c.from).unwrap_or(seq * 10);
        c.batch(&Workload::new(e), seq, at, claims, &mut |t, _, cl| {
            out.push((t, cl.from, cl.to, cl.workload.to_string()))
        });
        out
    }

    #[test]
    fn abutting_windows_merge_up_to_the_limit() {
        let ip = Ip::v4([10, 0, 0, 1]);
        let mut c = Coalescer::new(3);
        assert!(run(&mut c, "e", 0, vec![(ip, hb(0, 10, "a"))]).is_empty());
        assert_eq!(c.earliest(), Some(0));
        assert!(run(&mut c, "e", 1, vec![(ip, hb(10, 20, "a"))]).is_empty());
        assert!(run(&mut c, "e", 2, vec![(ip, hb(20, 30, "a"))]).is_empty());
        // The fourth window does not fit: the full run goes out at its first window's time.
        assert_eq!(run(&mut c, "e", 3, vec![(ip, hb(30, 40, "a"))]), vec![(0, 0, 30, "a".into())]);
        assert_eq!(c.earliest(), Some(30));
        let mut out = Vec::new();
        c.flush(&mut |t, _, cl| out.push((t, cl.from, cl.to)));
        assert_eq!(out, vec![(30, 30, 40)]);
        assert_eq!(c.earliest(), None);
    }

    #[test]
    fn gaps_owner_changes_and_silence_end_runs() {
        let ip = Ip::v4([10, 0, 0, 1]);
        let mut c = Coalescer::new(10);
        run(&mut c, "e", 0, vec![(ip, hb(0, 10, "a"))]);
        // A lost batch (seq 1): the next run does not continue across it.
        assert_eq!(run(&mut c, "e", 2, vec![(ip, hb(20, 30, "a"))]), vec![(0, 0, 10, "a".into())]);
        // Another owner.
        assert_eq!(run(&mut c, "e", 3, vec![(ip, hb(30, 40, "b"))]), vec![(20, 20, 30, "a".into())]);
        // The IP is not reported in the next batch: the run ended.
        assert_eq!(run(&mut c, "e", 4, vec![]), vec![(30, 30, 40, "b".into())]);
        assert_eq!(c.earliest(), None);
    }

    #[test]
    fn other_claims_and_the_off_switch_pass_through() {
        let ip = Ip::v4([10, 0, 0, 1]);
        let mut c = Coalescer::new(5);
        let flow = Claim { kind: EvidenceKind::Flow, ..hb(1, 2, "a") };
        assert_eq!(run(&mut c, "e", 0, vec![(ip, flow)]).len(), 1);
        let mut off = Coalescer::new(1);
        assert_eq!(run(&mut off, "e", 0, vec![(ip, hb(0, 10, "a"))]).len(), 1);
        assert_eq!(off.earliest(), None);
    }

    #[test]
    fn exporters_are_independent() {
        let ip = Ip::v4([10, 0, 0, 1]);
        let mut c = Coalescer::new(5);
        run(&mut c, "e1", 0, vec![(ip, hb(0, 10, "a"))]);
        run(&mut c, "e2", 0, vec![(ip, hb(0, 10, "a"))]);
        assert!(run(&mut c, "e1", 1, vec![(ip, hb(10, 20, "a"))]).is_empty());
        assert_eq!(run(&mut c, "e2", 1, vec![]), vec![(0, 0, 10, "a".into())]);
    }
}
