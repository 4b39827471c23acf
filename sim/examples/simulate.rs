//! Measures how long the simulator takes to build and publish a scenario, and shows what it
//! produced (release build):
//! `cargo run --release -p flowmap-sim --example simulate -- [steady|adversarial|FILE.toml] [runs]`.
//! Prints the fastest of `runs` (default 3) wall-clock runs, the summary of one run, its
//! records by the kind of their remote end and by hazard, and what the old method (the
//! scorer's baseline) makes of it.

use std::collections::BTreeMap;
use std::time::Instant;

use flowmap_sim::{Condition, Scenario};

fn main() {
    let mut args = std::env::args().skip(1);
    let name = args.next().unwrap_or_else(|| "adversarial".into());
    let runs: usize = args.next().and_then(|r| r.parse().ok()).unwrap_or(3).max(1);
    let scenario = match Scenario::builtin(&name) {
        Some(s) => s,
        None => match std::fs::read_to_string(&name)
            .map_err(|e| e.to_string())
            .and_then(|text| toml::from_str::<Scenario>(&text).map_err(|e| e.to_string()))
        {
            Ok(s) => s,
            Err(e) => {
                eprintln!("{name}: not a built-in scenario (steady, adversarial) nor a scenario file: {e}");
                std::process::exit(2);
            }
        },
    };
    let mut best = f64::INFINITY;
    let mut last = None;
    for _ in 0..runs {
        let started = Instant::now();
        let sim = match flowmap_sim::simulate(&scenario) {
            Ok(sim) => sim,
            Err(e) => {
                eprintln!("{e}");
                std::process::exit(1);
            }
        };
        best = best.min(started.elapsed().as_secs_f64());
        last = Some(sim);
    }
    let Some(sim) = last else { return };
    println!(
        "scenario {}: {} records, {} deliveries, {} roster entries; fastest of {runs} runs {:.3}s",
        scenario.name,
        sim.truth.len(),
        sim.deliveries.len(),
        sim.roster.len(),
        best
    );
    println!("{:#?}", sim.summary);
    let mut by_kind: BTreeMap<&str, u64> = BTreeMap::new();
    let mut by_condition: BTreeMap<&str, u64> = BTreeMap::new();
    for t in &sim.truth {
        *by_kind.entry(t.remote_kind.name()).or_default() += 1;
        for c in t.conditions.iter() {
            *by_condition.entry(Condition::name(c)).or_default() += 1;
        }
    }
    println!("records by remote kind: {by_kind:?}");
    println!("records by hazard: {by_condition:?}");
    let baseline = flowmap_sim::score(&sim.truth, &[], &sim.deliveries);
    println!(
        "baseline (IPAM map as it arrives): attributed {}, correct {}, misattributed {} {:?}",
        baseline.baseline_attributed,
        baseline.baseline_correct,
        baseline.baseline_misattributed,
        baseline.baseline_misattributed_by_kind
    );
}
