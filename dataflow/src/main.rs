//! The `flowmap` binary: parses the command line, sets up logging, runs the subcommand.

use clap::Parser;
use flowmap::cli::{run, Cli};

fn main() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("FLOWMAP_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let cli = Cli::parse();
    if let Err(err) = run(cli) {
        eprintln!("flowmap: error: {err:#}");
        std::process::exit(1);
    }
}
