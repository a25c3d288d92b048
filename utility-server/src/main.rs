//! `utility-server`: a thin main over the `utility_server` library.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use utility_server::batch::Period;
use utility_server::lanes::LaneValidator;
use utility_server::store::JobState;
use utility_server::{
    Application, Settings, Store, billing, daily, forecast, group_totals, jobs, key_authority,
    telemetry,
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
    /// Prune the billing lanes of every (meter, month) whose bill was released more than
    /// `[storage] billing_lane_retention_days` ago (batch rows, digests and signatures stay)
    /// and print what was pruned as JSON.
    Prune {
        /// Change nothing: print what would be pruned.
        #[arg(long)]
        dry_run: bool,
        /// PostgreSQL: rewrite each month left without billing lanes (`VACUUM FULL` of its
        /// partition), returning the space to the operating system.
        #[arg(long, conflicts_with = "dry_run")]
        compact: bool,
        /// PostgreSQL: also rewrite this month's partition (YYYY-MM, repeatable), e.g. one
        /// pruned by an earlier run, or one a few unbilled homes keep lanes in.
        #[arg(long, value_name = "PERIOD", conflicts_with = "dry_run")]
        compact_month: Vec<Period>,
    },
    /// Print what the store occupies as JSON: bytes per table and partition, batches,
    /// meters, months, and bytes per home-month.
    Storage,
    /// Schedule jobs for the workers (idempotent: a job's key names its work) and print what
    /// was created as JSON: `--period` a billing job per packing group with batches in the
    /// month; `--day` with `--daily-model` a daily job per evaluation group with pending
    /// inputs of that day; `--due` every ended month and every pending daily day.
    Schedule {
        /// The month to bill, YYYY-MM.
        #[arg(long, conflicts_with_all = ["day", "due"])]
        period: Option<Period>,
        /// The day whose daily inputs to release, YYYY-MM-DD (with `--daily-model`).
        #[arg(long, requires = "daily_model", conflicts_with = "due")]
        day: Option<chrono::NaiveDate>,
        /// Everything due: every month that has ended, and (with `--daily-model`) every day
        /// with pending daily inputs.
        #[arg(long)]
        due: bool,
        /// A registered daily model file (repeatable with `--due`).
        #[arg(long)]
        daily_model: Vec<PathBuf>,
        /// Attempts a job gets before it fails.
        #[arg(long, default_value_t = utility_server::jobs::DEFAULT_MAX_ATTEMPTS)]
        max_attempts: u32,
    },
    /// Run scheduled jobs: claim the oldest claimable job with a lease, renew it while
    /// working, finish it, repeat. Any number of workers may run against one database; a
    /// worker that dies loses its lease and another finishes its job. Prints one JSON line
    /// per attempt.
    Worker {
        /// A key authority's URL; repeat for every member of the pool (each attempt starts at
        /// the next one and moves on when one is unreachable).
        #[arg(long, required = true)]
        key_authority: Vec<String>,
        /// A registered daily model file this worker runs the daily jobs of (repeatable).
        #[arg(long)]
        daily_model: Vec<PathBuf>,
        /// Seconds a claim holds without renewal (renewed every third of it).
        #[arg(long, default_value_t = 30)]
        lease_seconds: u64,
        /// Seconds between looks for work when idle.
        #[arg(long, default_value_t = 1.0)]
        poll_seconds: f64,
        /// Stop when no job is claimable.
        #[arg(long)]
        exit_when_idle: bool,
        /// The worker's name in leases (default: host name and process id).
        #[arg(long)]
        name: Option<String>,
        /// Where the key authority's daily Galois keys are kept between runs.
        #[arg(long, default_value = "var/utility-server/key-cache")]
        key_cache: PathBuf,
        /// The environment variable holding the utility's token (from the key authority).
        #[arg(long, default_value = "SEER_UTILITY_TOKEN")]
        token_env: String,
    },
    /// Print the job table as JSON: counts per state, and each job with its attempts (which
    /// worker, when, how each ended; an attempt without an end is a lease its worker lost).
    Jobs {
        /// Only jobs in this state: pending, running, done, failed.
        #[arg(long)]
        state: Option<String>,
        /// Make a failed job pending again (with as many more attempts as a new job gets).
        #[arg(long, value_name = "KEY")]
        retry: Option<String>,
    },
}

/// `--window`: an RFC 3339 instant.
fn parse_window(text: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    group_totals::parse_window_start(text).map_err(|e| format!("not an RFC 3339 instant: {e}"))
}

/// The CKKS contexts of both lanes and the billing layout, from the settings (built off the
/// async runtime).
async fn lane_validator(settings: &Settings) -> anyhow::Result<LaneValidator> {
    let billing_set = settings.ckks.billing()?;
    let analytics_set = settings.ckks.analytics()?;
    let tariff = settings.tariff.clone();
    tokio::task::spawn_blocking(move || LaneValidator::new(billing_set, analytics_set, &tariff))
        .await
        .context("building the CKKS contexts")?
}

/// The daily model files named on the command line, each with its digest.
fn load_models(paths: Vec<PathBuf>) -> anyhow::Result<Vec<jobs::WorkerModel>> {
    paths
        .into_iter()
        .map(|path| {
            jobs::WorkerModel::load(path.clone())
                .with_context(|| format!("reading the model {}", path.display()))
        })
        .collect()
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
            let lanes = lane_validator(&settings).await?;
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
                group: None,
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
        Command::Prune {
            dry_run,
            compact,
            compact_month,
        } => {
            let store = Store::connect(&settings.database.url).await?;
            let retention = settings.storage.billing_lane_retention();
            let report = if dry_run {
                store.plan_billing_lane_prune(retention).await?
            } else {
                store.prune_billing_lanes(retention).await?
            };
            let mut months = compact_month;
            if compact {
                months.extend(utility_server::store::report_periods(
                    &report.months_fully_pruned,
                )?);
            }
            months.sort_unstable();
            months.dedup();
            let compacted = store.compact_months(&months).await?;
            let mut json = serde_json::to_value(&report)?;
            json["retention_days"] = settings.storage.billing_lane_retention_days.into();
            json["partitions_compacted"] = compacted.into();
            println!("{}", serde_json::to_string_pretty(&json)?);
            Ok(())
        }
        Command::Storage => {
            let store = Store::connect(&settings.database.url).await?;
            let report = store.storage_report().await?;
            println!("{}", serde_json::to_string_pretty(&report)?);
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
        Command::Schedule {
            period,
            day,
            due,
            daily_model,
            max_attempts,
        } => {
            let store = Store::connect(&settings.database.url).await?;
            let models = load_models(daily_model)?;
            let report = if let Some(period) = period {
                jobs::schedule_period(&store, period, max_attempts).await?
            } else if let Some(day) = day {
                let mut report = jobs::ScheduleReport::default();
                for model in &models {
                    let part = jobs::schedule_daily(&store, &model.blake3, Some(day), max_attempts)
                        .await?;
                    report.created.extend(part.created);
                    report.reopened.extend(part.reopened);
                    report.existing += part.existing;
                }
                report
            } else if due {
                let digests: Vec<String> = models.iter().map(|m| m.blake3.clone()).collect();
                let today = chrono::Utc::now().date_naive();
                jobs::schedule_due(&store, today, &digests, max_attempts).await?
            } else {
                anyhow::bail!("say what to schedule: --period, --day with --daily-model, or --due");
            };
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(())
        }
        Command::Worker {
            key_authority,
            daily_model,
            lease_seconds,
            poll_seconds,
            exit_when_idle,
            name,
            key_cache,
            token_env,
        } => {
            let token = utility_token(&token_env)?;
            let store = Store::connect(&settings.database.url).await?;
            let lanes = lane_validator(&settings).await?;
            let daily_models = load_models(daily_model)?;
            anyhow::ensure!(lease_seconds >= 3, "--lease-seconds must be at least 3");
            let config = jobs::WorkerConfig {
                name: name.unwrap_or_else(jobs::default_worker_name),
                key_authorities: key_authority,
                token,
                lease: std::time::Duration::from_secs(lease_seconds),
                poll: std::time::Duration::from_secs_f64(poll_seconds.clamp(0.01, 3600.0)),
                exit_when_idle,
                max_backoff: std::time::Duration::from_secs(60),
                daily_models,
                key_cache,
            };
            tracing::info!(worker = %config.name, key_authorities = ?config.key_authorities, "worker started");
            let report = jobs::run_worker(&store, &lanes, &config, shutdown_signal(), |attempt| {
                if let Ok(line) = serde_json::to_string(attempt) {
                    println!("{line}");
                }
            })
            .await
            .context("the worker's store")?;
            tracing::info!(?report, "worker stopped");
            Ok(())
        }
        Command::Jobs { state, retry } => {
            let store = Store::connect(&settings.database.url).await?;
            if let Some(key) = retry {
                anyhow::ensure!(
                    store
                        .retry_failed_job(&key, jobs::DEFAULT_MAX_ATTEMPTS)
                        .await?,
                    "no failed job {key:?} (see `utility-server jobs --state failed`)"
                );
            }
            let state = state
                .map(|s| {
                    JobState::ALL
                        .into_iter()
                        .find(|k| k.as_str() == s)
                        .with_context(|| format!("--state {s:?}: pending, running, done or failed"))
                })
                .transpose()?;
            let view = jobs::view(&store, state).await?;
            println!("{}", serde_json::to_string_pretty(&view)?);
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

/// Resolves on SIGINT or SIGTERM (a worker stops between jobs, or abandons the one in hand and
/// leaves its lease to expire).
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
