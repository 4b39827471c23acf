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
        // A closed pipe (`flowmap attribute ... | head`) is the reader's choice, not an error.
        let broken_pipe = err.chain().any(|e| {
            e.downcast_ref::<std::io::Error>()
                .map(std::io::Error::kind)
                .or_else(|| e.downcast_ref::<serde_json::Error>().and_then(serde_json::Error::io_error_kind))
                == Some(std::io::ErrorKind::BrokenPipe)
        });
        if broken_pipe {
            std::process::exit(0);
        }
        eprintln!("flowmap: error: {err:#}");
        std::process::exit(1);
    }
}
