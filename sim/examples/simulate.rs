//! Measures how long the simulator takes to build and publish a scenario (release build):
//! `cargo run --release -p flowmap-sim --example simulate -- [steady|adversarial|FILE.toml] [runs]`.
//! Prints the fastest of `runs` (default 3) wall-clock runs and what one run produced.

use std::time::Instant;

fn main() {
    let mut args = std::env::args().skip(1);
    let name = args.next().unwrap_or_else(|| "adversarial".into());
    let runs: usize = args.next().and_then(|r| r.parse().ok()).unwrap_or(3).max(1);
    let Some(scenario) = flowmap_sim::Scenario::builtin(&name) else {
        eprintln!("unknown scenario {name:?}: steady or adversarial");
        std::process::exit(2);
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
    if let Some(sim) = last {
        println!(
            "scenario {name}: {} records, {} deliveries, {} roster entries; fastest of {runs} runs {:.3}s",
            sim.truth.len(),
            sim.deliveries.len(),
            sim.roster.len(),
            best
        );
        println!("{:#?}", sim.summary);
    }
}
