//! `flowmap simulate`, `flowmap attribute` and `flowmap score`: the demo's three stages, run
//! apart over files.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;

use super::TimelyArgs;
use crate::memory::run_deliveries;
use crate::output::OutputRecord;
use crate::run::OutputMode;

/// Arguments of `flowmap simulate`.
#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// `steady`, `adversarial`, or a scenario TOML file.
    #[arg(long, default_value = "adversarial")]
    pub scenario: String,
    /// Override the scenario's seed.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Directory for `deliveries.fmd`, `truth.jsonl` and `roster.txt`.
    #[arg(long)]
    pub out: PathBuf,
}

/// Arguments of `flowmap attribute`.
#[derive(Debug, Args)]
pub struct AttributeArgs {
    /// A directory written by `flowmap simulate`.
    #[arg(long)]
    pub input: PathBuf,
    /// Output file (JSON lines); stdout if absent.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Job settings (TOML).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// timely's cluster flags.
    #[command(flatten)]
    pub timely: TimelyArgs,
}

/// Arguments of `flowmap score`.
#[derive(Debug, Args)]
pub struct ScoreArgs {
    /// `truth.jsonl` written by `flowmap simulate`.
    #[arg(long)]
    pub truth: PathBuf,
    /// Attributed flows (JSON lines) written by `flowmap attribute`.
    #[arg(long)]
    pub input: PathBuf,
    /// The delivery log, to run the baseline on (defaults to `deliveries.fmd` beside the truth).
    #[arg(long)]
    pub deliveries: Option<PathBuf>,
    /// Print one JSON object as the last line of stdout.
    #[arg(long)]
    pub json: bool,
}

/// `flowmap simulate`.
pub fn simulate(args: SimulateArgs) -> Result<()> {
    let scenario = super::scenario(&args.scenario, args.seed)?;
    std::fs::create_dir_all(&args.out).with_context(|| format!("cannot create {}", args.out.display()))?;
    let sim = flowmap_sim::simulate(&scenario)?;
    flowmap_sim::io::write_deliveries(&args.out.join("deliveries.fmd"), &sim.deliveries)?;
    flowmap_sim::io::write_truth(&args.out.join("truth.jsonl"), &sim.truth)?;
    std::fs::write(args.out.join("roster.txt"), sim.roster.join("\n") + "\n")?;
    eprintln!(
        "wrote {} deliveries and truth for {} flow records to {}",
        sim.deliveries.len(),
        sim.truth.len(),
        args.out.display()
    );
    Ok(())
}

/// `flowmap attribute`.
pub fn attribute(args: AttributeArgs) -> Result<()> {
    let job = super::job_config(args.config.as_ref())?;
    let timely = args.timely.single_process_config()?;
    let deliveries = Arc::new(flowmap_sim::io::read_deliveries(&args.input.join("deliveries.fmd"))?);
    let roster_path = args.input.join("roster.txt");
    let roster: Arc<Vec<String>> = Arc::new(
        std::fs::read_to_string(&roster_path)
            .with_context(|| format!("cannot read {}", roster_path.display()))?
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_string)
            .collect(),
    );
    let report = run_deliveries(timely, job, deliveries, roster, OutputMode::Collect, Duration::from_millis(200), false)?;
    let mut records: Vec<OutputRecord> = report.flows.iter().map(OutputRecord::from).collect();
    records.sort_by_key(|r| r.flow_id);
    let sink: Box<dyn Write> = match &args.out {
        Some(path) => Box::new(File::create(path).with_context(|| format!("cannot create {}", path.display()))?),
        None => Box::new(std::io::stdout().lock()),
    };
    let mut out = BufWriter::new(sink);
    for r in &records {
        serde_json::to_writer(&mut out, r)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    eprintln!(
        "attributed {} flows in {:.2}s; ingest {:?}",
        report.output,
        report.elapsed.as_secs_f64(),
        report.ingest
    );
    Ok(())
}

/// `flowmap score`.
pub fn score(args: ScoreArgs) -> Result<()> {
    let truth = flowmap_sim::io::read_truth(&args.truth)?;
    let deliveries_path = args.deliveries.clone().unwrap_or_else(|| args.truth.with_file_name("deliveries.fmd"));
    let deliveries = flowmap_sim::io::read_deliveries(&deliveries_path)?;
    let reader = BufReader::new(File::open(&args.input).with_context(|| format!("cannot open {}", args.input.display()))?);
    let mut verdicts = Vec::new();
    for (n, line) in reader.lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let record: OutputRecord = serde_json::from_str(&line)
            .with_context(|| format!("{}: line {} is not an output record", args.input.display(), n + 1))?;
        verdicts.push(record.verdict());
    }
    let score = flowmap_sim::score(&truth, &verdicts, &deliveries);
    println!(
        "flows {}  attributed {}  unattributed {}  misattributed {}  missing {}  baseline misattributed {}",
        score.flows, score.attributed, score.unattributed, score.misattributed, score.missing, score.baseline_misattributed
    );
    if args.json {
        println!("{}", serde_json::to_string(&score)?);
    }
    Ok(())
}
