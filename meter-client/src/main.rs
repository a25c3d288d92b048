//! `meter-client`: a thin main over the `meter_client` library.

use std::io::IsTerminal as _;

use clap::Parser as _;
use meter_client::{Cli, execute};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Logs go to stderr (filtered by RUST_LOG, `warn` by default); stdout is the command's
    // result, progress lines go to stderr.
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let cli = Cli::parse();
    let mut out = std::io::stdout();
    execute(&cli, &mut out, Box::new(std::io::stderr())).await
}
