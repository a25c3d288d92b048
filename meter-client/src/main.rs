//! `meter-client`: a thin main over the `meter_client` library.

use std::io::IsTerminal as _;

use clap::Parser as _;
use meter_client::{Cli, run};
use tracing_subscriber::EnvFilter;

fn main() -> anyhow::Result<()> {
    // Logs go to stderr (filtered by RUST_LOG, `warn` by default); stdout is the command's output.
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let cli = Cli::parse();
    run(&cli, &mut std::io::stdout().lock())
}
