//! The ownership state stays bounded on an endless stream: retention retracts old evidence.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use flowmap::config::{JobConfig, RawJobConfig};
use flowmap_sim::Scenario;

fn long(duration_s: u64) -> Scenario {
    Scenario { duration_s, ..small_adversarial(3) }
}

#[test]
fn state_is_flat_as_the_stream_grows() {
    let raw = RawJobConfig { retention: std::time::Duration::from_secs(5 * 60), ..RawJobConfig::default() };
    let job = JobConfig::try_from(raw).unwrap();
    let peak = |minutes: u64| {
        let sim = flowmap_sim::simulate(&long(minutes * 60)).unwrap();
        let report = attribute_paced(sim.deliveries, sim.roster, 1, job.clone(), 4);
        assert!(report.state_samples.len() > 10, "sampled every step");
        let s = report.peak_state;
        s.claims + s.conns + s.assignments + s.memo
    };
    let (short, long) = (peak(30), peak(90));
    eprintln!("peak ownership records: 30 min {short}, 90 min {long}");
    assert!(short > 0);
    // Three times the stream, about the same state (not three times it).
    assert!((long as f64) < 1.5 * short as f64, "state grew with the stream: {short} -> {long}");
}
