//! Logging: `tracing` events as text on stderr, so that stdout carries only the
//! machine-readable `listening on ADDRESS` line.

use std::io::IsTerminal as _;

use anyhow::Context as _;
use tracing_subscriber::EnvFilter;

/// Installs the global `tracing` subscriber writing to stderr, filtered by `filter`
/// (an `EnvFilter` directive such as `info`); colours only when stderr is a terminal.
///
/// # Errors
/// When `filter` is invalid or a global subscriber is already installed.
pub fn init(filter: &str) -> anyhow::Result<()> {
    let filter =
        EnvFilter::try_new(filter).with_context(|| format!("invalid log filter {filter:?}"))?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init()
        .map_err(|error| anyhow::anyhow!(error))
        .context("installing the tracing subscriber")
}
