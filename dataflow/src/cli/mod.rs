//! The `flowmap` command line: argument types and one module per subcommand.
//!
//! Worker and process counts come only from timely's own flags (`-w`, `-n`, `-p`, `-h`),
//! which every subcommand that runs the dataflow accepts (`--help` is long-only for that
//! reason: `-h` is timely's hostfile).

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::{Args, Parser, Subcommand};

use crate::config::JobConfig;

#[cfg(feature = "sim")]
pub mod bench;
pub mod capture;
#[cfg(feature = "sim")]
pub mod demo;
#[cfg(feature = "sim")]
pub mod files;
pub mod kafka;
pub mod outputs;
pub mod serve;

/// flowmap: which workload was on each end of every TCP flow.
#[derive(Debug, Parser)]
#[command(name = "flowmap", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Simulate a fleet, attribute its flows and score the result, all in this process.
    #[cfg(feature = "sim")]
    #[command(disable_help_flag = true)]
    Demo(demo::DemoArgs),
    /// Simulate a fleet; write its deliveries and ground truth to a directory, or publish
    /// the batches to Kafka and the truth to a file.
    #[cfg(feature = "sim")]
    Simulate(files::SimulateArgs),
    /// Run the job on Kafka: input topic(s) to an output topic, committing as it delivers.
    #[command(disable_help_flag = true)]
    Collect(kafka::CollectArgs),
    /// Capture Kafka topics to a directory, for replay.
    Capture(capture::CaptureArgs),
    /// Run the job over a capture (or a Kafka topic up to its current end), as fast as possible.
    #[command(disable_help_flag = true)]
    Replay(capture::ReplayArgs),
    /// Attribute the flows of a delivery log (from `simulate`) and write JSON lines.
    #[cfg(feature = "sim")]
    #[command(disable_help_flag = true)]
    Attribute(files::AttributeArgs),
    /// Score attributed flows against ground truth, with the old method as a baseline.
    #[cfg(feature = "sim")]
    Score(files::ScoreArgs),
    /// Serve the dependency map of a lake (HTTP: the page, a JSON and CSV API, metrics).
    Serve(serve::ServeArgs),
    /// Measure attribution throughput on the core-lookup data set.
    #[cfg(feature = "sim")]
    #[command(disable_help_flag = true)]
    Bench(bench::BenchArgs),
}

/// Runs the parsed command.
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        #[cfg(feature = "sim")]
        Command::Demo(args) => demo::run(args),
        #[cfg(feature = "sim")]
        Command::Simulate(args) => files::simulate(args),
        Command::Collect(args) => kafka::collect(args),
        Command::Capture(args) => capture::capture(args),
        Command::Replay(args) => capture::replay(args),
        Command::Serve(args) => serve::run(args),
        #[cfg(feature = "sim")]
        Command::Attribute(args) => files::attribute(args),
        #[cfg(feature = "sim")]
        Command::Score(args) => files::score(args),
        #[cfg(feature = "sim")]
        Command::Bench(args) => bench::run(args),
    }
}

/// The flags of the commands that run the dataflow and report on it.
#[derive(Debug, Clone, Args)]
pub struct RunFlags {
    /// Print one JSON object as the last line of stdout.
    #[arg(long)]
    pub json: bool,
    /// Print the time spent in each operator (from timely's log) to stderr.
    #[arg(long)]
    pub profile: bool,
    /// timely's cluster flags.
    #[command(flatten)]
    pub timely: TimelyArgs,
}

/// timely's cluster flags.
#[derive(Debug, Clone, Args)]
pub struct TimelyArgs {
    /// Worker threads per process.
    #[arg(short = 'w', long = "workers", default_value_t = 2)]
    pub workers: usize,
    /// Number of processes in the cluster.
    #[arg(short = 'n', long = "processes", default_value_t = 1)]
    pub processes: usize,
    /// This process's index in the cluster.
    #[arg(short = 'p', long = "process", default_value_t = 0)]
    pub process: usize,
    /// Hostfile: one `host:port` per line, one line per process.
    #[arg(short = 'h', long = "hostfile")]
    pub hostfile: Option<PathBuf>,
    /// Print help.
    #[arg(long = "help", action = clap::ArgAction::Help)]
    pub help: Option<bool>,
}

impl TimelyArgs {
    /// The timely configuration these flags describe, for a command whose input and output
    /// live in this process (the in-memory commands: each process would see only its own
    /// workers' share of the output, so they run on one process, with any number of workers).
    pub fn single_process_config(&self) -> Result<timely::Config> {
        if self.processes > 1 || self.hostfile.is_some() {
            bail!(
                "this command runs in one process (its input and output are in memory); use -w for more workers. \
                 Multi-process (-n/-p/-h) runs are for jobs whose input and output are shared, such as a Kafka topic"
            );
        }
        self.config()
    }

    /// The timely configuration these flags describe.
    pub fn config(&self) -> Result<timely::Config> {
        if self.workers == 0 {
            bail!("-w/--workers must be at least 1");
        }
        if self.processes == 0 || self.process >= self.processes {
            bail!("-p/--process must be below -n/--processes ({} given, {} processes)", self.process, self.processes);
        }
        let mut args = vec![
            "-w".to_string(),
            self.workers.to_string(),
            "-n".to_string(),
            self.processes.to_string(),
            "-p".to_string(),
            self.process.to_string(),
        ];
        if let Some(hostfile) = &self.hostfile {
            args.push("-h".to_string());
            args.push(hostfile.display().to_string());
        }
        timely::Config::from_args(args.into_iter()).map_err(|e| anyhow::anyhow!("timely configuration: {e}"))
    }
}

/// Loads the job configuration, or the default.
pub fn job_config(path: Option<&PathBuf>) -> Result<JobConfig> {
    match path {
        Some(path) => Ok(JobConfig::load(path)?),
        None => Ok(JobConfig::default()),
    }
}

/// A built-in scenario by name, or a TOML file.
#[cfg(feature = "sim")]
pub fn scenario(name: &str, seed: Option<u64>) -> Result<flowmap_sim::Scenario> {
    use anyhow::Context;
    use flowmap_sim::Scenario;
    let mut scenario = match Scenario::builtin(name) {
        Some(s) => s,
        None => {
            let text = std::fs::read_to_string(name).with_context(|| {
                format!("{name:?} is neither a built-in scenario (steady, adversarial) nor a readable file")
            })?;
            toml::from_str(&text).with_context(|| format!("invalid scenario file {name}"))?
        }
    };
    if let Some(seed) = seed {
        scenario.seed = seed;
    }
    scenario.validate()?;
    Ok(scenario)
}

/// Peak resident set size of this process (VmHWM), in bytes, where the kernel reports it.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// The scorer's view of an output record.
#[cfg(feature = "sim")]
pub fn verdict(r: &crate::output::OutputRecord) -> flowmap_sim::Verdict {
    flowmap_sim::Verdict {
        id: r.flow_id,
        end_ns: r.end_ns,
        open: r.open,
        remote: r.remote_workload.clone(),
        reason: r.reason.clone(),
        evidence: r.evidence.clone(),
    }
}

/// Prints the time per operator of a profiled run to stderr.
#[cfg(feature = "sim")]
pub fn print_profile(report: &crate::run::RunReport) {
    eprintln!("time per operator (all workers):");
    for (name, d) in &report.operator_times.entries {
        eprintln!("  {:>9.3}s  {name}", d.as_secs_f64());
    }
}
