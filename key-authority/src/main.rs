//! `key-authority`: a thin main over the `key_authority` library.

use std::path::PathBuf;

use clap::Parser;
use key_authority::{Application, Settings, telemetry};

/// The SEER key authority: holds the CKKS secret key and releases registered results.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// TOML settings file; environment variables prefixed `SEER_KEY_AUTHORITY__` override it
    /// (e.g. `SEER_KEY_AUTHORITY__SERVER__PORT=0`).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let settings = Settings::load(cli.config.as_deref())?;
    telemetry::init(&settings.log.filter)?;
    let application = Application::build(settings).await?;

    // The one line on stdout, for whoever started us on port 0.
    seer_service::announce(application.local_addr())?;
    application.run_until_stopped().await
}
