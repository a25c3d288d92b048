//! `utility-server`: a thin main over the `utility_server` library.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use utility_server::batch::Period;
use utility_server::lanes::LaneValidator;
use utility_server::{
    Application, Settings, Store, billing, daily, forecast, group_totals, key_authority, telemetry,
};

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
    /// Forecast every pending upload for a registered model: pack the meters' inputs into
    /// releases of disjoint blocks, evaluate the encrypted forecaster once per release with
    /// the key authority's deep keys, ask the key authority to release, store the released
    /// hours and print the run's report as JSON.
    Forecast {
        /// The model file (registered with the key authority; its BLAKE3 names it).
        #[arg(long)]
        model: PathBuf,
        /// The key authority's URL.
        #[arg(long)]
        key_authority: String,
        /// The environment variable holding the utility's token (from the key authority).
        #[arg(long, default_value = "SEER_UTILITY_TOKEN")]
        token_env: String,
    },
    /// Release every pending daily upload (kind `daily`, one N4096 ciphertext per meter-day)
    /// for a registered model: pack them four meters with distinct blocks to a request,
    /// evaluate the daily circuit once per request with the key authority's Galois keys
    /// (cached on disk by digest), ask the key authority to release, store the released
    /// forecasts and anomaly results, then ask for and store each completed group-day's
    /// forecast total, and print the run's report as JSON.
    Daily {
        /// The model file (registered with the key authority; its BLAKE3 names it).
        #[arg(long)]
        model: PathBuf,
        /// The key authority's URL.
        #[arg(long)]
        key_authority: String,
        /// Only the uploads for this day (YYYY-MM-DD, the day the meters prepared).
        #[arg(long)]
        day: Option<chrono::NaiveDate>,
        /// Where the key authority's Galois keys are kept between runs.
        #[arg(long, default_value = "var/utility-server/key-cache")]
        key_cache: PathBuf,
        /// The environment variable holding the utility's token (from the key authority).
        #[arg(long, default_value = "SEER_UTILITY_TOKEN")]
        token_env: String,
    },
    /// Print the stored daily results as JSON: forecasts per meter and hour, anomaly scores
    /// per meter and day, the group forecast totals the key authority released
    /// (`group_forecasts`) and, not a release, the utility's own per-group sums of the
    /// per-home forecasts it holds (`home_forecast_sums`).
    DailyResults {
        /// Only the results of the uploads for this day (YYYY-MM-DD; their forecasts are of
        /// the next day, their anomaly scores of this day).
        #[arg(long)]
        day: Option<chrono::NaiveDate>,
        /// Only the results of this model file.
        #[arg(long)]
        model: Option<PathBuf>,
    },
    /// Ask the key authority to release a noise group's hourly totals of one window (the sum
    /// of the group's analytics lanes, each carrying a share of the group's noise), store the
    /// released hours and print the run's report as JSON; with `--pending`, every window that
    /// has ended and has hours not yet released (an array of reports).
    GroupTotals {
        /// The noise group (the meters' billing group).
        #[arg(long, required_unless_present = "pending", conflicts_with = "pending")]
        group: Option<u32>,
        /// The window's start, RFC 3339 (as in the meters' plans, or the same instant in
        /// another offset).
        #[arg(
            long,
            value_name = "START",
            value_parser = parse_window,
            required_unless_present = "pending",
            conflicts_with = "pending"
        )]
        window: Option<chrono::DateTime<chrono::Utc>>,
        /// Also release each reading interval's total (no further privacy cost).
        #[arg(long)]
        per_interval: bool,
        /// Run every pending (group, window) instead of one.
        #[arg(long)]
        pending: bool,
        /// The key authority's URL.
        #[arg(long)]
        key_authority: String,
        /// The environment variable holding the utility's token (from the key authority).
        #[arg(long, default_value = "SEER_UTILITY_TOKEN")]
        token_env: String,
    },
    /// Print the stored forecasts of a model as JSON: per meter and hour, the total over
    /// homes per hour, and where each uploaded input stands.
    Forecasts {
        /// The model file.
        #[arg(long)]
        model: PathBuf,
    },
    /// Print the released bills of a month as JSON (meter id, period, amount in paise and
    /// rupees, closing sequence, energy per slab).
    Bills {
        /// The month, YYYY-MM.
        #[arg(long)]
        period: Period,
    },
    /// Write the monthly statement (PDF) of every home of a billing group whose bill of the
    /// month was released, as `DIR/statement-METER-PERIOD.pdf` (mode 0600), and print what
    /// was written as JSON.
    Statements {
        /// The month, YYYY-MM.
        #[arg(long)]
        period: Period,
        /// The billing group.
        #[arg(long)]
        group: u32,
        /// The directory to write into (created if missing).
        #[arg(long)]
        out: PathBuf,
    },
    /// Print the settings in effect (defaults, then `--config`, then `SEER_UTILITY__*`
    /// variables) as TOML, database passwords redacted.
    PrintSettings,
}

/// `--window`: an RFC 3339 instant.
fn parse_window(text: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    group_totals::parse_window_start(text).map_err(|e| format!("not an RFC 3339 instant: {e}"))
}

/// The utility's token from the environment variable `name`.
fn utility_token(name: &str) -> anyhow::Result<String> {
    std::env::var(name).with_context(|| format!("the utility token is expected in ${name}"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let settings = Settings::load(cli.config.as_deref())?;
    telemetry::init_with(&settings.log)?;
    // The utility calls the key authority with the certificate it serves with (it names the
    // utility); without `server.tls` the SEER_TLS_* variables may name one.
    if let Some(tls) = &settings.server.tls {
        seer_tls::install_client_identity(tls)
            .context("loading the utility's TLS certificate for calls to the key authority")?;
    }
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
            let token = utility_token(&token_env)?;
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
        Command::Forecast {
            model,
            key_authority,
            token_env,
        } => {
            let token = utility_token(&token_env)?;
            let store = Store::connect(&settings.database.url).await?;
            let report = forecast::run_pending(
                &store,
                &settings.database.url,
                &key_authority,
                &token,
                &model,
            )
            .await
            .context("forecasting run")?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(())
        }
        Command::GroupTotals {
            group,
            window,
            per_interval,
            pending,
            key_authority: url,
            token_env,
        } => {
            let token = utility_token(&token_env)?;
            let store = Store::connect(&settings.database.url).await?;
            let channel = key_authority::connect(&url).await?;
            let json = if pending {
                let reports = group_totals::run_pending(
                    &store,
                    channel,
                    &token,
                    per_interval,
                    chrono::Utc::now(),
                )
                .await
                .context("group totals run")?;
                serde_json::to_string_pretty(&reports)?
            } else {
                let (Some(group), Some(window)) = (group, window) else {
                    anyhow::bail!("--group and --window are required without --pending");
                };
                let report =
                    group_totals::run(&store, channel, &token, group, window, per_interval)
                        .await
                        .context("group totals run")?;
                serde_json::to_string_pretty(&report)?
            };
            println!("{json}");
            Ok(())
        }
        Command::Daily {
            model,
            key_authority,
            day,
            key_cache,
            token_env,
        } => {
            let job = daily::DailyJob {
                model_path: model,
                key_authority,
                token: utility_token(&token_env)?,
                day,
                key_cache,
            };
            let store = Store::connect(&settings.database.url).await?;
            let report = daily::run_pending(&store, &job)
                .await
                .context("daily run")?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(())
        }
        Command::DailyResults { day, model } => {
            let store = Store::connect(&settings.database.url).await?;
            let digest = match model {
                Some(path) => {
                    let bytes = std::fs::read(&path)
                        .with_context(|| format!("reading the model {}", path.display()))?;
                    Some(utility_server::analytics::model_digest(&bytes))
                }
                None => None,
            };
            let results = daily::results(&store, day, digest.as_deref())
                .await
                .context("listing the daily results")?;
            println!("{}", serde_json::to_string_pretty(&results)?);
            Ok(())
        }
        Command::Forecasts { model } => {
            let store = Store::connect(&settings.database.url).await?;
            let listing = forecast::listing(&store, &settings.database.url, &model)
                .await
                .context("listing the forecasts")?;
            println!("{}", serde_json::to_string_pretty(&listing)?);
            Ok(())
        }
        Command::PrintSettings => {
            print!("{}", seer_service::to_redacted_toml(&settings)?);
            Ok(())
        }
        Command::Statements { period, group, out } => {
            let store = Store::connect(&settings.database.url).await?;
            let report = utility_server::statements::group_statements(
                &store,
                &settings.tariff,
                period,
                group,
                &out,
            )
            .await
            .with_context(|| format!("writing group {group}'s statements for {period}"))?;
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
