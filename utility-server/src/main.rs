//! `utility-server`: a thin main over the `utility_server` library.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use utility_server::batch::Period;
use utility_server::lanes::LaneValidator;
use utility_server::{Application, Settings, Store, billing, telemetry};

/// The SEER utility server: bills, forecasts and anomaly scores on encrypted readings.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// TOML settings file; environment variables prefixed `SEER_UTILITY__` override it
    /// (e.g. `SEER_UTILITY__SERVER__PORT=0`).
    #[arg(long, value_name = "FILE", global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve gRPC (the default).
    Serve,
    /// Bill one packing group for a closed month: evaluate the billing circuit over the
    /// group's closing lanes with the key authority's Galois keys, ask the key authority to
    /// release the bills, store them, and print the run's report as JSON.
    Bill {
        /// The month, YYYY-MM.
        #[arg(long)]
        period: Period,
        /// The packing group.
        #[arg(long, default_value_t = 0)]
        group: u32,
        /// The key authority's URL.
        #[arg(long)]
        key_authority: String,
        /// The environment variable holding the utility's token (from the key authority).
        #[arg(long, default_value = "SEER_UTILITY_TOKEN")]
        token_env: String,
    },
    /// Print the released bills of a month as JSON (meter id, period, amount in paise and
    /// rupees, closing sequence, energy per slab).
    Bills {
        /// The month, YYYY-MM.
        #[arg(long)]
        period: Period,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let settings = Settings::load(cli.config.as_deref())?;
    telemetry::init(&settings.log.filter)?;
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let application = Application::build(settings).await?;
            // The one line on stdout, for whoever started us on port 0.
            seer_service::announce(application.local_addr())?;
            application.run_until_stopped().await
        }
        Command::Bill {
            period,
            group,
            key_authority,
            token_env,
        } => {
            let token = std::env::var(&token_env)
                .with_context(|| format!("the utility token is expected in ${token_env}"))?;
            let store = Store::connect(&settings.database.url).await?;
            let billing_set = settings.ckks.billing()?;
            let analytics_set = settings.ckks.analytics()?;
            let tariff = settings.tariff.clone();
            let lanes = tokio::task::spawn_blocking(move || {
                LaneValidator::new(billing_set, analytics_set, &tariff)
            })
            .await
            .context("building the CKKS contexts")??;
            let report = billing::bill_group(&store, &lanes, &key_authority, &token, period, group)
                .await
                .context("billing run")?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(())
        }
        Command::Bills { period } => {
            let store = Store::connect(&settings.database.url).await?;
            let bills = store.bills(period).await?;
            println!("{}", serde_json::to_string_pretty(&bills)?);
            Ok(())
        }
    }
}
