//! `seer fleet`: a fleet of processes on one PostgreSQL server driven through a month and
//! measured.
//!
//! The phases, each timed:
//! 1. **databases**: a fresh utility database and a fresh audit database on
//!    `--database-url`'s server (named `seer_fleet_<unix time>_<pid>_{utility,audit}`; the
//!    command drops only these, and only without `--keep-databases`);
//! 2. **key authorities**: K `key-authority serve` on one key directory, one JWT signing key
//!    and the one audit database, each on its own port with its own anchor file; the first
//!    starts alone (it generates the keys), then the others;
//! 3. **utility replicas**: R stateless `utility-server serve` on the utility database, each
//!    on its own port; the first starts alone (it migrates the database);
//! 4. **enrolment**: one-time codes (`key-authority enrolment-code --meters-file`, or one
//!    process per meter where that option is missing), then each meter enrolled in this
//!    process (`meter_client::identity::enrol` under the meter's own client certificate);
//! 5. **ingest**: one `meter-client run --json` per synthetic home, `--concurrency` at a time,
//!    meter i talking to replica i mod R and key authority i mod K; a progress bar on stderr;
//!    W `utility-server worker` processes are already up (and, with
//!    `--kill-workers-every`, SIGKILLed at random and restarted) while the homes upload;
//! 6. **billing**: `utility-server schedule --period P`, then the workers run the jobs until
//!    `utility-server jobs` shows none pending or running (without the job commands:
//!    `utility-server bill` per group, W at a time); with `--kill-workers-every`, the worker
//!    of each job seen running on its first attempt is also SIGKILLed once (the `jobs` table
//!    polled every 20 ms), so the lease-expiry path is exercised, not only idle workers;
//! 7. **daily** (with `--daily-model`): one `meter-client daily --day D` per home (the day's
//!    forecast inputs and anomaly features prepared from its own readings, encrypted under
//!    the daily key, receipt at its key authority, upload to its replica), then
//!    `utility-server schedule --day D --daily-model M` and the workers' daily jobs per
//!    (day, group), the chaos still on;
//! 8. **checks**: every home's bill equals its plaintext twin (its own synthetic readings
//!    through the meter's Wh register and [`Tariff::bill`]), one `bills` row and one granted
//!    `bill` audit entry per home, the audit chain verified from the public key alone
//!    ([`crate::audit::verify_collecting`]), every job done; with the daily lane, every home's
//!    24 released forecast hours and anomaly score within one quantum (0.001) of the
//!    plaintext model on the same readings and one granted `daily` entry per home.
//!
//! Meters run as processes, as on households' devices: each its own `meter-client` with its own
//! state, device key and connections (its queue database is dropped once it has finished, so a
//! large fleet does not keep ~3 MB of freed pages per home). Driving the meter library inside
//! this process instead is possible (`seer_tls::inherit_client_identity` carries a meter's
//! certificate into the tasks the library spawns) and would take each home's process start and
//! public-key fetch out of the meters' share of the figures; it is not done.
//!
//! **Acknowledgement latency** of a batch: from the meter's `queued batch N` line (the batch
//! built, encrypted and committed to its outbox) to its `sent batch N` line (the utility's
//! acknowledgement), both timed here as the lines arrive on the meter's stderr. **Peak RSS**:
//! the largest `VmHWM` of `/proc/PID/status` seen per process kind, sampled every 250 ms
//! (and, for the servers, just before they are stopped).

use std::collections::{BTreeMap, HashMap};
use std::io::IsTerminal as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail, ensure};
use chrono::{NaiveDate, TimeDelta};
use meter_client::cli::RunSummary;
use meter_client::source::{DateRange, MonthShift, SourceSpec, open};
use seer_ckks::CkksContext;
use seer_core::circuits::billing::{self, BillingLayout};
use seer_core::data::Period;
use seer_core::tariff::{Tariff, WhRegister};
use seer_daily::DailyModel;
use seer_daily::release::{DailyRelease, QUANTUM};
use seer_tls::{LocalPki, PartyKind, TlsFiles};
use serde::Serialize;
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::process::{Child, Command};

use crate::process::{Binaries, START_TIMEOUT, STOP_TIMEOUT, log_tail, output};
use crate::report::TOLERANCE_PAISE;

/// The marker file that makes a directory a `seer fleet` work directory (which a later run
/// may empty).
pub const WORKDIR_MARKER: &str = ".seer-fleet";

/// Everything `seer fleet` needs.
#[derive(Clone, Debug)]
pub struct FleetOptions {
    /// Synthetic homes.
    pub homes: usize,
    /// Utility ingest replicas.
    pub replicas: usize,
    /// Utility job workers.
    pub workers: usize,
    /// Key authorities.
    pub key_authorities: usize,
    /// The billing period.
    pub period: Period,
    /// The work directory (emptied if a previous fleet run made it).
    pub workdir: PathBuf,
    /// The PostgreSQL server, `postgres://user@host:port` (no database).
    pub database_url: String,
    /// Homes in flight at once.
    pub concurrency: usize,
    /// The meters' `--batch-days`.
    pub batch_days: u32,
    /// Chaos: SIGKILL a random worker about every this many seconds, and restart it.
    pub kill_workers_every: Option<f64>,
    /// Homes per billing group (home i gets deployment index `(i / g) * capacity + i % g`);
    /// default: the layout's capacity (groups filled).
    pub group_size: Option<usize>,
    /// The synthetic population's seed.
    pub seed: u64,
    /// The workers' lease.
    pub lease_seconds: u64,
    /// Leave the two databases in place (their names are in the report).
    pub keep_databases: bool,
    /// Where the programs are (default: beside the running executable).
    pub bin_dir: Option<PathBuf>,
    /// With a registered daily model file: after the bills, a day of the daily lane (every
    /// home's forecast of the next day and anomaly score, as jobs per (day, group)).
    pub daily_model: Option<PathBuf>,
    /// The daily lane's day (default: the period's last day).
    pub daily_day: Option<NaiveDate>,
}

/// A timed phase.
#[derive(Clone, Debug, Serialize)]
pub struct FleetPhase {
    /// What it did.
    pub name: String,
    /// Wall time, seconds.
    pub seconds: f64,
}

/// Percentiles of the batches' acknowledgement latency, milliseconds.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Latency {
    /// Batches measured.
    pub batches: usize,
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Largest.
    pub max_ms: f64,
}

/// What a fleet run did and measured.
#[derive(Clone, Debug, Serialize)]
pub struct FleetReport {
    /// The billing period.
    pub period: String,
    /// Homes, replicas, workers, key authorities, concurrency.
    pub homes: usize,
    /// Utility ingest replicas.
    pub replicas: usize,
    /// Workers.
    pub workers: usize,
    /// Key authorities.
    pub key_authorities: usize,
    /// Homes in flight at once.
    pub concurrency: usize,
    /// Homes per billing group and the groups used.
    pub group_size: usize,
    /// The billing groups.
    pub groups: Vec<u64>,
    /// The utility database (name).
    pub utility_database: String,
    /// The audit database (name).
    pub audit_database: String,
    /// Whether the databases were left in place.
    pub databases_kept: bool,
    /// How billing ran: `jobs` (schedule + workers) or `bill` (one command per group).
    pub billing_mode: String,
    /// How codes were made: `bulk` (`--meters-file`) or `per-meter`.
    pub enrolment_mode: String,
    /// The phases.
    pub phases: Vec<FleetPhase>,
    /// Readings sent by all meters.
    pub readings: u64,
    /// Batches acknowledged.
    pub batches: u64,
    /// Ingest batches per second (acknowledged batches / ingest phase).
    pub ingest_batches_per_second: f64,
    /// Acknowledgement latency per batch.
    pub ack_latency: Latency,
    /// Bills released (rows of the utility's `bills` for the period).
    pub bills_released: usize,
    /// Bills released per second of the billing phase.
    pub bills_per_second: f64,
    /// Homes whose bill equals the plaintext one (within ₹0.005).
    pub bills_matching: usize,
    /// Granted `bill` entries in the audit log for the period.
    pub bill_grants: usize,
    /// Audit entries verified from the public key.
    pub audit_entries_verified: u64,
    /// The jobs' final counts (`utility-server jobs`), when billing ran as jobs.
    pub job_counts: Option<serde_json::Value>,
    /// Jobs finished per key authority (`key-authority-K`), from the workers' attempt lines:
    /// how the jobs spread over the pool.
    pub jobs_done_per_key_authority: BTreeMap<String, u64>,
    /// Workers SIGKILLed (and restarted).
    pub worker_kills: u64,
    /// Of those, workers killed while running a job's first attempt (each job at most once).
    pub worker_kills_mid_job: u64,
    /// Peak RSS per process kind, KiB.
    pub peak_rss_kib: BTreeMap<String, u64>,
    /// Bytes the utility database occupies (`utility-server storage`'s `database_bytes`, or
    /// the sum of PostgreSQL's relation sizes).
    pub stored_bytes: u64,
    /// Where the figure comes from.
    pub stored_bytes_source: String,
    /// Stored bytes (the whole utility database) per home-month.
    pub stored_bytes_per_home_month: f64,
    /// The `batches` table (partitions, indexes, TOAST) per home-month.
    pub batch_bytes_per_home_month: f64,
    /// The storage report, as printed or queried.
    pub storage: serde_json::Value,
    /// Ciphertext bytes the meters sent (billing + analytics lanes).
    pub sent_bytes: u64,
    /// Sent bytes per reading.
    pub sent_bytes_per_reading: f64,
    /// The daily lane's day, with `--daily-model`.
    pub daily: Option<DailyFleetReport>,
    /// Every mismatch found; empty when the run is correct.
    pub problems: Vec<String>,
    /// The work directory.
    pub workdir: String,
}

/// A day of the daily lane across the fleet: uploads, jobs, releases checked against the
/// plaintext model.
#[derive(Clone, Debug, Serialize)]
pub struct DailyFleetReport {
    /// The day whose inputs the meters prepared (forecasts are of the next day).
    pub day: NaiveDate,
    /// The model's BLAKE3 (hex).
    pub model_blake3: String,
    /// Days the meters sent (one per home).
    pub uploads: usize,
    /// Wall time of the uploads (a `meter-client daily` process per home), seconds.
    pub upload_seconds: f64,
    /// Mean ciphertext bytes per upload.
    pub bytes_per_upload: f64,
    /// Wall time of the daily jobs (schedule to the last job done), seconds.
    pub jobs_seconds: f64,
    /// Home-days with a released anomaly score (rows of `daily_anomalies` for the day).
    pub home_days_released: usize,
    /// Released home-days per second of the jobs phase.
    pub home_days_per_second: f64,
    /// Forecast hours released (rows of `daily_forecasts` for the day).
    pub forecast_hours_released: usize,
    /// Home-days whose every released value is within one quantum of the plaintext model.
    pub home_days_matching: usize,
    /// The largest |released − plaintext| over every value, kWh (or score units).
    pub max_abs_diff: f64,
    /// Home-days flagged as anomalous.
    pub flagged: usize,
    /// Granted `daily` audit entries for the day.
    pub grants: usize,
    /// Granted group forecast totals (`daily-group-forecast` audit entries).
    pub group_totals_granted: usize,
}

impl FleetReport {
    /// Whether every check passed.
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }

    /// The human summary.
    pub fn summary(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "seer fleet {}: {} homes, {} replicas, {} workers, {} key authorities, {} at a time",
            self.period,
            self.homes,
            self.replicas,
            self.workers,
            self.key_authorities,
            self.concurrency
        );
        for p in &self.phases {
            let _ = writeln!(s, "  {:<46} {:>9.1} s", p.name, p.seconds);
        }
        let l = &self.ack_latency;
        let _ = writeln!(
            s,
            "  ingest: {} batches, {:.1} batches/s, ack latency p50 {:.0} ms, p90 {:.0} ms, p99 {:.0} ms",
            self.batches, self.ingest_batches_per_second, l.p50_ms, l.p90_ms, l.p99_ms
        );
        let _ = writeln!(
            s,
            "  billing ({}): {} bills, {:.2} bills/s, {} match the plaintext, {} grants, {} worker kills ({} mid-job)",
            self.billing_mode,
            self.bills_released,
            self.bills_per_second,
            self.bills_matching,
            self.bill_grants,
            self.worker_kills,
            self.worker_kills_mid_job
        );
        if !self.jobs_done_per_key_authority.is_empty() {
            let spread: Vec<String> = self
                .jobs_done_per_key_authority
                .iter()
                .map(|(k, n)| format!("{k} {n}"))
                .collect();
            let _ = writeln!(s, "  jobs done per key authority: {}", spread.join(", "));
        }
        let _ = writeln!(
            s,
            "  stored {} B ({}), {:.0} B per home-month ({:.0} B of batches); sent {:.0} B per reading",
            self.stored_bytes,
            self.stored_bytes_source,
            self.stored_bytes_per_home_month,
            self.batch_bytes_per_home_month,
            self.sent_bytes_per_reading
        );
        if let Some(d) = &self.daily {
            let _ = writeln!(
                s,
                "  daily {}: {} uploads ({:.0} B each) in {:.1} s; {} home-days released in {:.1} s ({:.1}/s), {} match the plaintext model (max |diff| {:.4}), {} flagged, {} grants, {} group totals",
                d.day,
                d.uploads,
                d.bytes_per_upload,
                d.upload_seconds,
                d.home_days_released,
                d.jobs_seconds,
                d.home_days_per_second,
                d.home_days_matching,
                d.max_abs_diff,
                d.flagged,
                d.grants,
                d.group_totals_granted
            );
        }
        let rss: Vec<String> = self
            .peak_rss_kib
            .iter()
            .map(|(k, v)| format!("{k} {:.0} MiB", *v as f64 / 1024.0))
            .collect();
        let _ = writeln!(s, "  peak RSS: {}", rss.join(", "));
        let _ = writeln!(
            s,
            "  audit: {} entries verified from the public key",
            self.audit_entries_verified
        );
        if self.problems.is_empty() {
            let _ = writeln!(s, "  all checks passed");
        } else {
            for p in self.problems.iter().take(20) {
                let _ = writeln!(s, "  PROBLEM: {p}");
            }
            if self.problems.len() > 20 {
                let _ = writeln!(s, "  ... and {} more", self.problems.len() - 20);
            }
        }
        s
    }
}

fn progress(line: impl AsRef<str>) {
    eprintln!("seer fleet: {}", line.as_ref());
}

/// A fleet home: its meter, its deployment index, its plaintext bill.
#[derive(Clone, Debug)]
struct FleetHome {
    ordinal: usize,
    meter_id: String,
    index: u64,
    group: u64,
    synthetic: u32,
    plaintext_paise: i64,
}

/// Peak `VmHWM` per process kind, sampled from the registered processes.
#[derive(Clone, Default)]
struct Peaks {
    inner: Arc<Mutex<PeaksInner>>,
}

#[derive(Default)]
struct PeaksInner {
    pids: HashMap<u32, &'static str>,
    peaks: BTreeMap<String, u64>,
}

/// `VmHWM` of `/proc/PID/status` (`self` for this process), KiB.
fn vm_hwm_kib(pid: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

impl Peaks {
    fn lock(&self) -> std::sync::MutexGuard<'_, PeaksInner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn register(&self, kind: &'static str, pid: u32) {
        self.lock().pids.insert(pid, kind);
    }

    /// Samples `pid` once more and forgets it.
    fn unregister(&self, pid: u32) {
        self.sample_one(pid);
        self.lock().pids.remove(&pid);
    }

    fn sample_one(&self, pid: u32) {
        let kind = self.lock().pids.get(&pid).copied();
        if let (Some(kind), Some(kib)) = (kind, vm_hwm_kib(&pid.to_string())) {
            let mut inner = self.lock();
            let peak = inner.peaks.entry(kind.to_owned()).or_insert(0);
            *peak = (*peak).max(kib);
        }
    }

    fn sample_all(&self) {
        let pids: Vec<u32> = self.lock().pids.keys().copied().collect();
        for pid in pids {
            self.sample_one(pid);
        }
        if let Some(kib) = vm_hwm_kib("self") {
            let mut inner = self.lock();
            let peak = inner.peaks.entry("seer fleet".to_owned()).or_insert(0);
            *peak = (*peak).max(kib);
        }
    }

    fn snapshot(&self) -> BTreeMap<String, u64> {
        self.sample_all();
        self.lock().peaks.clone()
    }
}

/// A long-running child: a server or a worker.
struct Proc {
    kind: &'static str,
    name: String,
    child: Child,
    pid: u32,
    address: Option<SocketAddr>,
    log: PathBuf,
}

impl Proc {
    fn https_url(&self) -> String {
        self.address
            .map(|a| format!("https://{a}"))
            .unwrap_or_default()
    }

    /// SIGTERM, then SIGKILL after [`STOP_TIMEOUT`].
    async fn stop(&mut self, peaks: &Peaks) -> String {
        peaks.unregister(self.pid);
        if let Ok(Some(status)) = self.child.try_wait() {
            return status.to_string();
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status()
            .await;
        match tokio::time::timeout(STOP_TIMEOUT, self.child.wait()).await {
            Ok(Ok(status)) => status.to_string(),
            _ => {
                let _ = self.child.kill().await;
                "killed after the stop timeout".to_owned()
            }
        }
    }
}

/// Starts `binary serve` with `envs` and waits for its `listening on` line.
async fn start_server(
    binaries: &Binaries,
    binary: &'static str,
    name: String,
    envs: &[(String, String)],
    log: PathBuf,
    peaks: &Peaks,
) -> Result<Proc> {
    let path = binaries.path(binary);
    let log_file =
        std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
    let mut child = Command::new(&path)
        .arg("serve")
        .envs(envs.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log_file))
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", path.display()))?;
    let pid = child.id().context("the child has no id")?;
    peaks.register(binary, pid);
    let stdout = child.stdout.take().context("stdout is piped")?;
    let mut lines = BufReader::new(stdout).lines();
    let first = tokio::time::timeout(START_TIMEOUT, lines.next_line()).await;
    let address = match first {
        Ok(Ok(Some(line))) => line
            .trim_end()
            .strip_prefix("listening on ")
            .and_then(|a| a.parse::<SocketAddr>().ok())
            .with_context(|| format!("{name} announced {line:?}")),
        Ok(Ok(None)) => Err(anyhow!("{name} exited without announcing its address")),
        Ok(Err(e)) => Err(anyhow::Error::new(e).context(format!("reading {name}'s stdout"))),
        Err(_) => Err(anyhow!("{name} did not announce its address in time")),
    };
    match address {
        Ok(address) => {
            tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
            Ok(Proc {
                kind: binary,
                name,
                child,
                pid,
                address: Some(address),
                log,
            })
        }
        Err(e) => {
            let _ = child.kill().await;
            Err(e.context(format!(
                "the end of {}:\n{}",
                log.display(),
                log_tail(&log, 20)
            )))
        }
    }
}

/// A small deterministic generator for the chaos schedule (SplitMix64).
struct Chaos(u64);

impl Chaos {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1_u64 << 53) as f64
    }
}

/// The server's base URL without a database, and `name` appended.
fn database_url(base: &str, name: &str) -> String {
    format!("{}/{name}", base.trim_end_matches('/'))
}

async fn admin_pool(base: &str) -> Result<sqlx::PgPool> {
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(&database_url(base, "postgres"))
        .await
        .with_context(|| format!("connecting to {base}/postgres"))
}

/// Runs the fleet; see the [module documentation](self).
///
/// # Errors
/// When a program is missing or fails, or a step cannot be carried out. Mismatches are not
/// errors here: they are in [`FleetReport::problems`].
pub async fn fleet(options: &FleetOptions) -> Result<FleetReport> {
    ensure!(options.homes > 0, "--homes must be at least 1");
    ensure!(
        options.replicas > 0 && options.workers > 0 && options.key_authorities > 0,
        "--replicas, --workers and --key-authorities must be at least 1"
    );
    ensure!(options.concurrency > 0, "--concurrency must be at least 1");
    let binaries = Binaries::locate(options.bin_dir.clone())?;
    let workdir =
        crate::run::prepare_workdir(&options.workdir, WORKDIR_MARKER, "seer fleet", "--work-dir")?;
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let prefix = format!("seer_fleet_{stamp}_{}", std::process::id());
    let utility_db = format!("{prefix}_utility");
    let audit_db = format!("{prefix}_audit");
    let admin = admin_pool(&options.database_url).await?;
    for name in [&utility_db, &audit_db] {
        // The names are ours (a prefix, a time and a process id): nothing to inject.
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&admin)
            .await
            .with_context(|| format!("creating database {name}"))?;
    }
    progress(format!("created databases {utility_db} and {audit_db}"));
    let peaks = Peaks::default();
    let mut fleet = Fleet {
        options,
        binaries,
        workdir,
        utility_db,
        audit_db,
        peaks,
        servers: Vec::new(),
        workers: Arc::new(tokio::sync::Mutex::new(Vec::new())),
    };
    let sampler = {
        let peaks = fleet.peaks.clone();
        tokio::spawn(async move {
            loop {
                peaks.sample_all();
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        })
    };
    let outcome = fleet.phases().await;
    sampler.abort();
    fleet.stop_all().await;
    if !options.keep_databases {
        for name in [&fleet.utility_db, &fleet.audit_db] {
            if let Err(e) = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
            )))
            .execute(&admin)
            .await
            {
                progress(format!("could not drop {name}: {e}"));
            }
        }
    }
    admin.close().await;
    let mut report = outcome?;
    report.peak_rss_kib = fleet.peaks.snapshot();
    report.databases_kept = options.keep_databases;
    Ok(report)
}

struct Fleet<'a> {
    options: &'a FleetOptions,
    binaries: Binaries,
    workdir: PathBuf,
    utility_db: String,
    audit_db: String,
    peaks: Peaks,
    servers: Vec<Proc>,
    workers: Arc<tokio::sync::Mutex<Vec<Proc>>>,
}

/// What the workers need to be (re)started.
#[derive(Clone)]
struct WorkerSpec {
    path: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    logs: PathBuf,
}

impl WorkerSpec {
    async fn start(&self, i: usize, generation: u32, peaks: &Peaks) -> Result<Proc> {
        let name = format!("worker-{i}");
        let log = self.logs.join(format!("{name}.{generation}.log"));
        let log_file =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let mut child = Command::new(&self.path)
            .args(&self.args)
            .args(["--name", &name])
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log_file))
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", self.path.display()))?;
        let pid = child.id().context("the worker has no id")?;
        peaks.register("utility-server worker", pid);
        // Its job lines to a file of its own.
        let stdout = child.stdout.take().context("stdout is piped")?;
        let jobs_log = self.logs.join(format!("{name}.jobs.jsonl"));
        tokio::spawn(async move {
            let mut file = tokio::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&jobs_log)
                .await
                .ok();
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(f) = file.as_mut() {
                    let _ = f.write_all(format!("{line}\n").as_bytes()).await;
                }
            }
        });
        Ok(Proc {
            kind: "utility-server worker",
            name,
            child,
            pid,
            address: None,
            log,
        })
    }
}

impl Fleet<'_> {
    async fn stop_all(&mut self) {
        let mut workers = self.workers.lock().await;
        while let Some(mut w) = workers.pop() {
            let status = w.stop(&self.peaks).await;
            progress(format!(
                "{} stopped ({status}; log {})",
                w.name,
                w.log.display()
            ));
        }
        while let Some(mut s) = self.servers.pop() {
            let status = s.stop(&self.peaks).await;
            progress(format!(
                "{} ({}) stopped ({status}; log {})",
                s.name,
                s.kind,
                s.log.display()
            ));
        }
    }

    fn utility_url_db(&self) -> String {
        database_url(&self.options.database_url, &self.utility_db)
    }

    #[expect(clippy::too_many_lines, reason = "the phases in order, each short")]
    async fn phases(&mut self) -> Result<FleetReport> {
        let options = self.options;
        let workdir = self.workdir.clone();
        let mut phases = Vec::new();
        let mut problems = Vec::new();
        let mut timed = |name: &str, t: Instant| {
            phases.push(FleetPhase {
                name: name.to_owned(),
                seconds: t.elapsed().as_secs_f64(),
            });
        };

        // 0. The homes and their plaintext bills.
        let t = Instant::now();
        let (homes, group_size, capacity, groups) = plan_homes(options).await?;
        let daily = match &options.daily_model {
            Some(path) => Some(DailyPlan::load(
                path,
                options
                    .daily_day
                    .unwrap_or(options.period.end_day() - TimeDelta::days(1)),
            )?),
            None => None,
        };
        progress(format!(
            "{} homes in {} billing group(s) of up to {group_size}, plaintext bills computed",
            homes.len(),
            groups.len()
        ));
        timed("plan and plaintext bills", t);

        // 1. Key authorities.
        let t = Instant::now();
        let pki = LocalPki::open_or_create(&workdir.join("pki"), "seer fleet")
            .context("creating the fleet's deployment CA")?;
        let ka_dir = workdir.join("key-authority");
        let mut ka_env: Vec<(String, String)> = vec![
            ("SEER_KEY_AUTHORITY__SERVER__PORT".into(), "0".into()),
            (
                "SEER_KEY_AUTHORITY__KEYS__DIR".into(),
                ka_dir.join("keys").display().to_string(),
            ),
            (
                "SEER_KEY_AUTHORITY__AUTH__SIGNING_KEY_FILE".into(),
                ka_dir.join("jwt-signing-key.pem").display().to_string(),
            ),
            (
                "SEER_KEY_AUTHORITY__AUDIT__DATABASE_URL".into(),
                database_url(&options.database_url, &self.audit_db),
            ),
            ("SEER_KEY_AUTHORITY__LOG__FILTER".into(), "warn".into()),
        ];
        if let Some(plan) = &daily {
            // Registered by its absolute path (the key authorities' working directory is
            // this process's).
            ka_env.push((
                "SEER_KEY_AUTHORITY__ANALYTICS__DAILY_MODELS".into(),
                format!("[{:?}]", plan.path.display().to_string()),
            ));
        }
        ka_env.extend(
            pki.server("key-authority")
                .context("issuing the key authority's certificate")?
                .server_env("SEER_KEY_AUTHORITY__"),
        );
        let ka_env_of = |k: usize| {
            let mut env = ka_env.clone();
            env.push((
                "SEER_KEY_AUTHORITY__AUDIT__ANCHOR_FILE".into(),
                ka_dir
                    .join(format!("audit-anchor-{k}"))
                    .display()
                    .to_string(),
            ));
            env
        };
        progress("starting key authority 0 (it generates the keys)");
        let first = start_server(
            &self.binaries,
            "key-authority",
            "key-authority-0".into(),
            &ka_env_of(0),
            workdir.join("logs/key-authority-0.log"),
            &self.peaks,
        )
        .await?;
        self.servers.push(first);
        let envs: Vec<_> = (1..options.key_authorities).map(ka_env_of).collect();
        // The others join an existing deployment (its signing key exists): each anchors the
        // shared log's head in its own anchor file first (`init-audit`, the deliberate start).
        for env in &envs {
            output(&self.binaries, "key-authority", &["init-audit"], env).await?;
        }
        let rest = futures_join(envs.iter().enumerate().map(|(k, env)| {
            let k = k + 1;
            start_server(
                &self.binaries,
                "key-authority",
                format!("key-authority-{k}"),
                env,
                workdir.join(format!("logs/key-authority-{k}.log")),
                &self.peaks,
            )
        }))
        .await?;
        self.servers.extend(rest);
        let ka_urls: Vec<String> = self
            .servers
            .iter()
            .filter(|s| s.kind == "key-authority")
            .map(Proc::https_url)
            .collect();
        progress(format!("key authorities at {}", ka_urls.join(", ")));
        let ka_env0 = ka_env_of(0);
        let pem = output(
            &self.binaries,
            "key-authority",
            &["jwt-public-key"],
            &ka_env0,
        )
        .await?;
        let fingerprints = seer_tls::Fingerprints::parse(
            &output(&self.binaries, "key-authority", &["fingerprints"], &ka_env0).await?,
        )?;
        ensure!(
            !fingerprints.public_key_pins.is_empty(),
            "key-authority fingerprints printed no public key pin"
        );
        let jwt_pem_file = workdir.join("utility/key-authority-jwt.pem");
        std::fs::write(&jwt_pem_file, &pem).context("writing the JWT public key")?;
        timed("key authorities start", t);

        // 2. Utility replicas.
        let t = Instant::now();
        let mut ut_env: Vec<(String, String)> = vec![
            ("SEER_UTILITY__SERVER__PORT".into(), "0".into()),
            ("SEER_UTILITY__DATABASE__URL".into(), self.utility_url_db()),
            (
                "SEER_UTILITY__AUTH__JWT_PUBLIC_KEY_FILE".into(),
                jwt_pem_file.display().to_string(),
            ),
            (
                "SEER_UTILITY__AUTH__JWT_PUBLIC_KEY_SHA256".into(),
                fingerprints.jwt_public_key_sha256.clone(),
            ),
            ("SEER_UTILITY__LOG__FILTER".into(), "warn".into()),
        ];
        ut_env.extend(
            pki.utility()
                .context("issuing the utility's certificate")?
                .server_env("SEER_UTILITY__"),
        );
        let ut_env_of = |r: usize| {
            let mut env = ut_env.clone();
            env.push((
                "SEER_UTILITY__DASHBOARD__ADDRESS_FILE".into(),
                workdir
                    .join(format!("utility/dashboard-address-{r}"))
                    .display()
                    .to_string(),
            ));
            env
        };
        let first = start_server(
            &self.binaries,
            "utility-server",
            "utility-0".into(),
            &ut_env_of(0),
            workdir.join("logs/utility-0.log"),
            &self.peaks,
        )
        .await?;
        self.servers.push(first);
        let envs: Vec<_> = (1..options.replicas).map(ut_env_of).collect();
        let rest = futures_join(envs.iter().enumerate().map(|(r, env)| {
            let r = r + 1;
            start_server(
                &self.binaries,
                "utility-server",
                format!("utility-{r}"),
                env,
                workdir.join(format!("logs/utility-{r}.log")),
                &self.peaks,
            )
        }))
        .await?;
        self.servers.extend(rest);
        let ut_urls: Vec<String> = self
            .servers
            .iter()
            .filter(|s| s.kind == "utility-server")
            .map(Proc::https_url)
            .collect();
        progress(format!("utility replicas at {}", ut_urls.join(", ")));
        timed("utility replicas start", t);

        // 3. Tokens and enrolment.
        let t = Instant::now();
        let issue = |role: &'static str| {
            let env = ka_env0.clone();
            let binaries = self.binaries.clone();
            async move {
                let token = output(
                    &binaries,
                    "key-authority",
                    &["issue-token", "--role", role, "--lifetime", "1d"],
                    &env,
                )
                .await?;
                anyhow::Ok(token.trim().to_owned())
            }
        };
        let utility_token = issue("utility").await?;
        let auditor_token = issue("auditor").await?;
        let mut cli_env = ut_env.clone();
        cli_env.push(("SEER_UTILITY_TOKEN".into(), utility_token.clone()));
        let (codes, enrolment_mode) = enrolment_codes(
            &self.binaries,
            &ka_env0,
            &homes,
            &workdir,
            options.concurrency,
        )
        .await?;
        let mut meter_files = Vec::with_capacity(homes.len());
        for home in &homes {
            meter_files.push(
                pki.client(PartyKind::Meter, &home.meter_id)
                    .with_context(|| format!("issuing meter {}'s certificate", home.meter_id))?,
            );
        }
        enrol_all(
            &homes,
            &codes,
            &meter_files,
            &ka_urls,
            &workdir,
            options.concurrency,
        )
        .await?;
        progress(format!(
            "{} meters enrolled ({enrolment_mode} codes)",
            homes.len()
        ));
        timed("tokens and enrolment", t);

        // 4. Workers (up during the ingest, for the chaos), then the ingest.
        let jobs_mode = supports(&self.binaries, "utility-server", &["schedule", "--help"]).await
            && supports(&self.binaries, "utility-server", &["worker", "--help"]).await;
        let billing_mode = if jobs_mode { "jobs" } else { "bill" };
        ensure!(
            jobs_mode || daily.is_none(),
            "--daily-model needs utility-server's schedule and worker commands"
        );
        let mut chaos = None;
        let mut killer: Option<Arc<Killer>> = None;
        if jobs_mode {
            let mut args = vec!["worker".to_owned()];
            for url in &ka_urls {
                args.extend(["--key-authority".to_owned(), url.clone()]);
            }
            args.extend([
                "--token-env".into(),
                "SEER_UTILITY_TOKEN".into(),
                "--lease-seconds".into(),
                options.lease_seconds.to_string(),
                "--key-cache".into(),
                workdir.join("utility/key-cache").display().to_string(),
            ]);
            if let Some(plan) = &daily {
                args.extend(["--daily-model".into(), plan.path.display().to_string()]);
            }
            let spec = WorkerSpec {
                path: self.binaries.path("utility-server"),
                args,
                env: cli_env.clone(),
                logs: workdir.join("logs"),
            };
            {
                let mut workers = self.workers.lock().await;
                for i in 0..options.workers {
                    workers.push(spec.start(i, 0, &self.peaks).await?);
                }
            }
            progress(format!("{} workers started", options.workers));
            if let Some(every) = options.kill_workers_every {
                let k = Arc::new(Killer {
                    spec,
                    workers: Arc::clone(&self.workers),
                    peaks: self.peaks.clone(),
                    generation: std::sync::atomic::AtomicU32::new(0),
                    kills: AtomicU64::new(0),
                    mid_job: AtomicU64::new(0),
                });
                chaos = Some(spawn_chaos(every, Arc::clone(&k)));
                killer = Some(k);
            }
        }

        let t = Instant::now();
        let meters = Meters {
            binaries: &self.binaries,
            options,
            homes: &homes,
            files: &meter_files,
            pins: fingerprints.public_key_pins.join(","),
            ka_urls: &ka_urls,
            ut_urls: &ut_urls,
            workdir: &workdir,
        };
        let ingest = ingest(&meters, &self.peaks).await?;
        let ingest_seconds = t.elapsed().as_secs_f64();
        timed("ingest (encrypt, upload, receipts)", t);

        // 5. Billing.
        let t = Instant::now();
        let period = options.period.to_string();
        let mut job_counts = None;
        if jobs_mode {
            let scheduled = output(
                &self.binaries,
                "utility-server",
                &["schedule", "--period", &period],
                &cli_env,
            )
            .await?;
            progress(format!("scheduled: {}", scheduled.trim()));
            let utility_db = self.utility_url_db();
            let counts = wait_for_jobs(
                &self.binaries,
                &cli_env,
                killer.as_deref().map(|k| (k, utility_db.as_str())),
            )
            .await;
            if daily.is_none()
                && let Some((task, stop)) = chaos.take()
            {
                let _ = stop.send(true);
                let _ = task.await;
            }
            let counts = counts?;
            job_counts = Some(counts);
        } else {
            bill_groups(
                &self.binaries,
                &cli_env,
                &period,
                &groups,
                &ka_urls,
                options.workers,
            )
            .await?;
        }
        let billing_seconds = t.elapsed().as_secs_f64();
        timed("billing (jobs at the key authorities)", t);

        // 6. A day of the daily lane: each meter sends its day, the workers run the jobs per
        // (day, group) — with the chaos still on.
        let mut daily_timings = None;
        if let Some(plan) = &daily {
            let utility_db = self.utility_url_db();
            let outcome = async {
                let t = Instant::now();
                let (uploads, bytes) = daily_uploads(&meters, plan, capacity).await?;
                let upload_seconds = t.elapsed().as_secs_f64();
                timed("daily uploads (prepare, encrypt, sign, send)", t);
                let t = Instant::now();
                let day = plan.day.to_string();
                let model = plan.path.display().to_string();
                let scheduled = output(
                    &self.binaries,
                    "utility-server",
                    &["schedule", "--day", &day, "--daily-model", &model],
                    &cli_env,
                )
                .await?;
                progress(format!("scheduled: {}", scheduled.trim()));
                let counts = wait_for_jobs(
                    &self.binaries,
                    &cli_env,
                    killer.as_deref().map(|k| (k, utility_db.as_str())),
                )
                .await?;
                let jobs_seconds = t.elapsed().as_secs_f64();
                timed("daily jobs (forecasts and anomaly scores)", t);
                anyhow::Ok((counts, (uploads, bytes, upload_seconds, jobs_seconds)))
            }
            .await;
            if let Some((task, stop)) = chaos.take() {
                let _ = stop.send(true);
                let _ = task.await;
            }
            let (counts, timings) = outcome?;
            job_counts = Some(counts);
            daily_timings = Some(timings);
        }
        let (worker_kills, worker_kills_mid_job) = killer.as_ref().map_or((0, 0), |k| {
            (
                k.kills.load(Ordering::Relaxed),
                k.mid_job.load(Ordering::Relaxed),
            )
        });

        // 7. Checks.
        let t = Instant::now();
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(2)
            .connect(&self.utility_url_db())
            .await
            .context("connecting to the utility database")?;
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT meter_id, amount_paise FROM bills WHERE period = $1")
                .bind(&period)
                .fetch_all(&pool)
                .await
                .context("reading the released bills")?;
        let mut released: HashMap<String, Vec<i64>> = HashMap::new();
        for (meter, amount) in &rows {
            released.entry(meter.clone()).or_default().push(*amount);
        }
        let mut bills_matching = 0;
        for home in &homes {
            match released.get(&home.meter_id).map(Vec::as_slice) {
                Some([amount]) => {
                    if ((amount - home.plaintext_paise) as f64).abs() <= TOLERANCE_PAISE {
                        bills_matching += 1;
                    } else {
                        problems.push(format!(
                            "{}: released {amount} paise, plaintext {} paise",
                            home.meter_id, home.plaintext_paise
                        ));
                    }
                }
                Some(many) => problems.push(format!(
                    "{}: {} bills released for {period}",
                    home.meter_id,
                    many.len()
                )),
                None => problems.push(format!("{}: no bill released", home.meter_id)),
            }
        }
        if rows.len() != homes.len() {
            problems.push(format!(
                "{} bills stored for {period}, {} homes",
                rows.len(),
                homes.len()
            ));
        }
        // The audit chain from the public key alone, as an auditor.
        let auditor = pki
            .client(PartyKind::Auditor, "fleet-auditor")
            .context("issuing the auditor's certificate")?;
        let mut entries = Vec::new();
        let target = crate::audit::AuditTarget {
            key_authority: ka_urls[ka_urls.len() - 1].clone(),
            token: auditor_token,
        };
        let verified = seer_tls::with_client_identity(
            &auditor,
            crate::audit::verify_collecting(&target, &pem, None, &mut entries),
        )
        .await?;
        let audit_entries_verified = match verified {
            Ok(v) => v.entries_checked,
            Err(e) => {
                problems.push(format!("the audit log does not verify: {e:#}"));
                0
            }
        };
        let mut grants: HashMap<String, usize> = HashMap::new();
        for e in &entries {
            if e.kind == "bill"
                && e.decision == seer_proto::v1::AuditDecision::Granted as i32
                && e.period.as_deref() == Some(period.as_str())
                && let Some(m) = &e.meter_id
            {
                *grants.entry(m.clone()).or_default() += 1;
            }
        }
        for home in &homes {
            let n = grants.get(&home.meter_id).copied().unwrap_or(0);
            if n != 1 {
                problems.push(format!(
                    "{}: {n} granted bill entries in the audit log",
                    home.meter_id
                ));
            }
        }
        let bill_grants = grants.values().sum();
        if let Some(counts) = &job_counts {
            let c = &counts["counts"];
            let n = |k: &str| c[k].as_u64().unwrap_or(0);
            if n("pending") + n("running") + n("failed") != 0 || n("done") == 0 {
                problems.push(format!("jobs not all done: {c}"));
            }
            if let Some(jobs) = counts["jobs"].as_array() {
                for job in jobs {
                    if job["state"].as_str() != Some("done") {
                        problems.push(format!("job {} is {}", job["key"], job["state"]));
                    }
                }
            }
        }
        let daily_report = match (&daily, daily_timings) {
            (Some(plan), Some((uploads, bytes, upload_seconds, jobs_seconds))) => {
                let checked = check_daily(&pool, &homes, options.seed, plan, &entries).await?;
                problems.extend(checked.problems);
                Some(DailyFleetReport {
                    day: plan.day,
                    model_blake3: plan.blake3.clone(),
                    uploads,
                    upload_seconds,
                    bytes_per_upload: bytes / (uploads as f64).max(1.0),
                    jobs_seconds,
                    home_days_released: checked.home_days,
                    home_days_per_second: checked.home_days as f64 / jobs_seconds.max(1e-9),
                    forecast_hours_released: checked.forecast_hours,
                    home_days_matching: checked.matching,
                    max_abs_diff: checked.max_abs_diff,
                    flagged: checked.flagged,
                    grants: checked.grants,
                    group_totals_granted: checked.group_totals,
                })
            }
            _ => None,
        };
        let jobs_done_per_key_authority = jobs_per_key_authority(&workdir.join("logs"), &ka_urls);
        let (storage, stored_bytes, stored_bytes_source) =
            storage(&self.binaries, &cli_env, &pool).await;
        pool.close().await;
        timed("checks", t);

        let latency = ingest.latency();
        let readings = ingest.summaries.iter().map(|s| s.readings as u64).sum();
        let sent_bytes = ingest
            .summaries
            .iter()
            .map(|s| s.billing_bytes + s.analytics_bytes)
            .sum();
        let batches = ingest.summaries.iter().map(|s| s.acknowledged).sum();
        Ok(FleetReport {
            period,
            homes: homes.len(),
            replicas: options.replicas,
            workers: options.workers,
            key_authorities: options.key_authorities,
            concurrency: options.concurrency,
            group_size,
            groups,
            utility_database: self.utility_db.clone(),
            audit_database: self.audit_db.clone(),
            databases_kept: options.keep_databases,
            billing_mode: billing_mode.into(),
            enrolment_mode,
            phases,
            readings,
            batches,
            ingest_batches_per_second: batches as f64 / ingest_seconds.max(1e-9),
            ack_latency: latency,
            bills_released: rows.len(),
            bills_per_second: rows.len() as f64 / billing_seconds.max(1e-9),
            bills_matching,
            bill_grants,
            audit_entries_verified,
            job_counts,
            jobs_done_per_key_authority,
            worker_kills,
            worker_kills_mid_job,
            peak_rss_kib: BTreeMap::new(),
            stored_bytes,
            stored_bytes_source,
            stored_bytes_per_home_month: storage["database_bytes_per_home_month"]
                .as_f64()
                .unwrap_or(stored_bytes as f64 / homes.len() as f64),
            batch_bytes_per_home_month: storage["batch_bytes_per_home_month"]
                .as_f64()
                .or_else(|| {
                    storage["tables"].as_object().map(|t| {
                        t.iter()
                            .filter(|(name, _)| name.starts_with("batches"))
                            .filter_map(|(_, b)| b.as_u64())
                            .sum::<u64>() as f64
                            / homes.len() as f64
                    })
                })
                .unwrap_or(0.0),
            storage,
            sent_bytes,
            sent_bytes_per_reading: sent_bytes as f64 / (readings as f64).max(1.0),
            daily: daily_report,
            problems,
            workdir: workdir.display().to_string(),
        })
    }
}

/// Awaits all of `futures` concurrently; the first error fails the lot.
async fn futures_join<T>(
    futures: impl Iterator<Item = impl Future<Output = Result<T>>>,
) -> Result<Vec<T>> {
    let futures: Vec<_> = futures.map(Box::pin).collect();
    let mut out = Vec::with_capacity(futures.len());
    // Started together: each future is polled from the same task.
    let results = futures_all(futures).await;
    for r in results {
        out.push(r?);
    }
    Ok(out)
}

async fn futures_all<F: Future + Unpin>(mut futures: Vec<F>) -> Vec<F::Output> {
    let mut results: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, r) in futures.iter_mut().zip(results.iter_mut()) {
            if r.is_none() {
                match std::pin::Pin::new(&mut *f).poll(cx) {
                    std::task::Poll::Ready(v) => *r = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    results.into_iter().flatten().collect()
}

/// The homes: meter ids, deployment indices (groups of `group_size`), plaintext bills.
/// Also returns the homes per group and the layout's capacity (a group's span of deployment
/// indices).
async fn plan_homes(options: &FleetOptions) -> Result<(Vec<FleetHome>, usize, usize, Vec<u64>)> {
    let options = options.clone();
    tokio::task::spawn_blocking(move || {
        let tariff = Tariff::bescom();
        let ctx = CkksContext::new(billing::PARAMETER_SET)?;
        let layout = BillingLayout::try_new(&tariff, &ctx)?;
        let capacity = layout.capacity();
        let group_size = options.group_size.unwrap_or(capacity);
        ensure!(
            (1..=capacity).contains(&group_size),
            "--group-size must be 1 ..= {capacity} (the billing layout's capacity)"
        );
        let range = DateRange {
            from: Some(options.period.first_day()),
            until: Some(options.period.end().date()),
            shift: MonthShift::NONE,
        };
        let mut homes = Vec::with_capacity(options.homes);
        let mut groups = std::collections::BTreeSet::new();
        for i in 0..options.homes {
            let index = ((i / group_size) * capacity + i % group_size) as u64;
            let synthetic = u32::try_from(i).context("too many homes")?;
            let spec = SourceSpec::Synthetic {
                seed: options.seed,
                home: synthetic,
            };
            let stream = open(&spec)?.select(range)?;
            let mut register = WhRegister::new();
            let bill = tariff
                .bill(
                    stream
                        .readings()
                        .iter()
                        .map(|r| (r.start, register.advance(r.energy))),
                )
                .context("computing a plaintext bill")?;
            let group = layout.locate(index as usize).group as u64;
            groups.insert(group);
            homes.push(FleetHome {
                ordinal: i,
                meter_id: format!("F-{i:05}"),
                index,
                group,
                synthetic,
                plaintext_paise: bill.total().get(),
            });
        }
        Ok((homes, group_size, capacity, groups.into_iter().collect()))
    })
    .await?
}

/// Whether `binary args` succeeds (a subcommand's `--help`: whether it exists).
async fn supports(binaries: &Binaries, binary: &str, args: &[&str]) -> bool {
    Command::new(binaries.path(binary))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await
        .is_ok_and(|s| s.success())
}

/// One-time enrolment codes per meter id: `enrolment-code --meters-file` when the key
/// authority has it, else one process per meter (`concurrency` at a time).
async fn enrolment_codes(
    binaries: &Binaries,
    ka_env: &[(String, String)],
    homes: &[FleetHome],
    workdir: &Path,
    concurrency: usize,
) -> Result<(HashMap<String, String>, String)> {
    if supports(binaries, "key-authority", &["enrolment-code", "--help"]).await {
        let help = Command::new(binaries.path("key-authority"))
            .args(["enrolment-code", "--help"])
            .output()
            .await?;
        if String::from_utf8_lossy(&help.stdout).contains("--meters-file") {
            let file = workdir.join("meters.txt");
            let ids: Vec<&str> = homes.iter().map(|h| h.meter_id.as_str()).collect();
            std::fs::write(&file, format!("{}\n", ids.join("\n")))?;
            let file = file.display().to_string();
            let text = output(
                binaries,
                "key-authority",
                &["enrolment-code", "--meters-file", &file],
                ka_env,
            )
            .await?;
            let codes: HashMap<String, String> = text
                .lines()
                .filter_map(|l| {
                    let mut parts = l.split_whitespace();
                    Some((parts.next()?.to_owned(), parts.next()?.to_owned()))
                })
                .collect();
            ensure!(
                homes.iter().all(|h| codes.contains_key(&h.meter_id)),
                "key-authority enrolment-code --meters-file did not print a code for every meter"
            );
            return Ok((codes, "bulk".into()));
        }
    }
    let permits = Arc::new(tokio::sync::Semaphore::new(concurrency));
    let mut tasks = tokio::task::JoinSet::new();
    for home in homes {
        let permits = Arc::clone(&permits);
        let binaries = binaries.clone();
        let env = ka_env.to_vec();
        let id = home.meter_id.clone();
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await?;
            let code = output(
                &binaries,
                "key-authority",
                &["enrolment-code", "--meter-id", &id],
                &env,
            )
            .await?;
            anyhow::Ok((id, code.trim().to_owned()))
        });
    }
    let mut codes = HashMap::new();
    while let Some(joined) = tasks.join_next().await {
        let (id, code) = joined??;
        codes.insert(id, code);
    }
    Ok((codes, "per-meter".into()))
}

/// Enrols every meter in this process, each under its own client certificate, meter i at key
/// authority i mod K.
async fn enrol_all(
    homes: &[FleetHome],
    codes: &HashMap<String, String>,
    files: &[TlsFiles],
    ka_urls: &[String],
    workdir: &Path,
    concurrency: usize,
) -> Result<()> {
    let permits = Arc::new(tokio::sync::Semaphore::new(concurrency));
    let mut tasks = tokio::task::JoinSet::new();
    for (home, files) in homes.iter().zip(files) {
        let permits = Arc::clone(&permits);
        let id = home.meter_id.clone();
        let code = codes
            .get(&id)
            .with_context(|| format!("no enrolment code for {id}"))?
            .clone();
        let url = ka_urls[home.ordinal % ka_urls.len()].clone();
        let state = workdir.join("meters").join(&id);
        let files = files.clone();
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await?;
            seer_tls::with_client_identity(
                &files,
                meter_client::identity::enrol(&id, &code, &url, &state),
            )
            .await?
            .with_context(|| format!("enrolling meter {id}"))?;
            anyhow::Ok(())
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined??;
    }
    Ok(())
}

/// What the ingest produced.
struct Ingest {
    summaries: Vec<RunSummary>,
    latencies_ms: Vec<f64>,
}

impl Ingest {
    fn latency(&self) -> Latency {
        let mut v = self.latencies_ms.clone();
        v.sort_by(f64::total_cmp);
        let pick = |q: f64| {
            if v.is_empty() {
                0.0
            } else {
                let i = ((v.len() as f64 - 1.0) * q).round() as usize;
                v[i.min(v.len() - 1)]
            }
        };
        Latency {
            batches: v.len(),
            p50_ms: pick(0.5),
            p90_ms: pick(0.9),
            p99_ms: pick(0.99),
            max_ms: v.last().copied().unwrap_or(0.0),
        }
    }
}

/// Progress counters shared by the meters' tasks and the bar.
#[derive(Default)]
struct Counters {
    homes_done: AtomicU64,
    /// Batches acknowledged (ingest) or days sent (the daily lane).
    counted: AtomicU64,
}

/// What every meter process of the fleet shares: the programs, the homes with their
/// certificates, the key pins and the servers (meter i talks to key authority i mod K and
/// replica i mod R).
struct Meters<'a> {
    binaries: &'a Binaries,
    options: &'a FleetOptions,
    homes: &'a [FleetHome],
    files: &'a [TlsFiles],
    pins: String,
    ka_urls: &'a [String],
    ut_urls: &'a [String],
    workdir: &'a Path,
}

impl Meters<'_> {
    /// The meter's state directory (its device key, pinned keys, queue).
    fn state(&self, home: &FleetHome) -> PathBuf {
        self.workdir.join("meters").join(&home.meter_id)
    }

    /// The key authority and the utility replica the meter talks to.
    fn servers(&self, home: &FleetHome) -> (String, String) {
        (
            self.ka_urls[home.ordinal % self.ka_urls.len()].clone(),
            self.ut_urls[home.ordinal % self.ut_urls.len()].clone(),
        )
    }

    /// The meter's environment: its client certificate and the public-key pins.
    fn env(&self, files: &TlsFiles) -> Vec<(String, String)> {
        let mut env = files.client_env();
        env.push(("SEER_METER_PUBLIC_KEY_PINS".into(), self.pins.clone()));
        env
    }
}

/// Runs one meter process per home, `concurrency` at a time, with the progress bar.
async fn ingest(meters: &Meters<'_>, peaks: &Peaks) -> Result<Ingest> {
    let Meters {
        binaries,
        options,
        homes,
        workdir,
        ..
    } = *meters;
    let counters = Arc::new(Counters::default());
    let total = homes.len() as u64;
    let bar = spawn_bar(Arc::clone(&counters), total, "batches acknowledged");
    // Homes per group in this run: each meter's noise group.
    let mut per_group: HashMap<u64, u32> = HashMap::new();
    for h in homes {
        *per_group.entry(h.group).or_default() += 1;
    }
    let permits = Arc::new(tokio::sync::Semaphore::new(options.concurrency));
    let mut tasks = tokio::task::JoinSet::new();
    for (home, files) in homes.iter().zip(meters.files) {
        let group_size = per_group.get(&home.group).copied().unwrap_or(1);
        let (ka_url, ut_url) = meters.servers(home);
        let mut args: Vec<String> = vec![
            "run".into(),
            "--meter-id".into(),
            home.meter_id.clone(),
            "--source".into(),
            format!("synthetic:{}:{}", options.seed, home.synthetic),
            "--from".into(),
            options.period.first_day().to_string(),
            "--until".into(),
            options.period.end().date().to_string(),
            "--key-authority".into(),
            ka_url,
            "--utility".into(),
            ut_url,
            "--state".into(),
            meters.state(home).display().to_string(),
            "--home-index".into(),
            home.index.to_string(),
            "--noise-group-size".into(),
            group_size.to_string(),
            "--noise-tolerated".into(),
            (group_size / 10).to_string(),
            "--batch-days".into(),
            options.batch_days.to_string(),
            "--json".into(),
        ];
        args.shrink_to_fit();
        let meter = MeterProcess {
            path: binaries.path("meter-client"),
            args,
            env: meters.env(files),
            meter_id: home.meter_id.clone(),
            log: workdir.join("logs").join(format!("{}.log", home.meter_id)),
        };
        let permits = Arc::clone(&permits);
        let counters = Arc::clone(&counters);
        let peaks = peaks.clone();
        let ordinal = home.ordinal;
        let state_dir = meters.state(home);
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await?;
            let done = meter.run(&counters, &peaks).await;
            if done.is_ok() {
                // The meter's queue database (its acknowledged batches' pages stay in the file)
                // is never read again: a 10,000-home run would otherwise keep ~31 GB of it.
                for name in ["state.db", "state.db-wal", "state.db-shm"] {
                    let _ = tokio::fs::remove_file(state_dir.join(name)).await;
                }
            }
            counters.homes_done.fetch_add(1, Ordering::Relaxed);
            done.map(|d| (ordinal, d))
        });
    }
    let mut done = join_meters(tasks, bar).await?;
    done.sort_by_key(|(ordinal, _)| *ordinal);
    let mut latencies_ms = Vec::new();
    let mut summaries = Vec::with_capacity(done.len());
    for (_, (summary, lat)) in done {
        latencies_ms.extend(lat);
        summaries.push(summary);
    }
    Ok(Ingest {
        summaries,
        latencies_ms,
    })
}

/// Awaits the meters' tasks; the first error aborts the others and is returned. Stops the
/// progress bar either way.
async fn join_meters<T: 'static>(
    mut tasks: tokio::task::JoinSet<Result<T>>,
    bar: tokio::task::JoinHandle<()>,
) -> Result<Vec<T>> {
    let mut done = Vec::with_capacity(tasks.len());
    let mut first_error = None;
    while let Some(joined) = tasks.join_next().await {
        match joined.map_err(anyhow::Error::from).and_then(|r| r) {
            Ok(d) => done.push(d),
            Err(e) => {
                if first_error.is_none() {
                    first_error = Some(e);
                    tasks.abort_all();
                }
            }
        }
    }
    bar.abort();
    let _ = bar.await;
    eprintln!();
    match first_error {
        Some(e) => Err(e),
        None => Ok(done),
    }
}

/// The progress bar on stderr: homes done, batches acknowledged, rate, ETA. Redrawn in place
/// (`\r`) on a terminal, a line every 10 s otherwise.
fn spawn_bar(
    counters: Arc<Counters>,
    total: u64,
    unit: &'static str,
) -> tokio::task::JoinHandle<()> {
    let terminal = std::io::stderr().is_terminal();
    let start = Instant::now();
    tokio::spawn(async move {
        let mut last_line = Instant::now();
        loop {
            tokio::time::sleep(Duration::from_millis(250)).await;
            let homes = counters.homes_done.load(Ordering::Relaxed);
            let batches = counters.counted.load(Ordering::Relaxed);
            let secs = start.elapsed().as_secs_f64();
            let rate = batches as f64 / secs.max(1e-9);
            let eta = if homes == 0 {
                "?".to_owned()
            } else {
                let left = secs / homes as f64 * (total - homes.min(total)) as f64;
                format!("{left:.0} s")
            };
            let width = 30_usize;
            let filled = (homes as usize * width)
                .checked_div(total as usize)
                .unwrap_or(0);
            let line = format!(
                "[{}{}] {homes}/{total} homes, {batches} {unit}, {rate:.1}/s, ETA {eta}",
                "#".repeat(filled.min(width)),
                "-".repeat(width - filled.min(width)),
            );
            if terminal {
                eprint!("\r\x1b[K{line}");
            } else if last_line.elapsed() >= Duration::from_secs(10) {
                eprintln!("seer fleet: {line}");
                last_line = Instant::now();
            }
        }
    })
}

/// One `meter-client run`.
struct MeterProcess {
    path: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    meter_id: String,
    log: PathBuf,
}

impl MeterProcess {
    /// Runs it; returns its summary and its batches' acknowledgement latencies (ms).
    async fn run(self, counters: &Counters, peaks: &Peaks) -> Result<(RunSummary, Vec<f64>)> {
        let mut child = Command::new(&self.path)
            .args(&self.args)
            .env_remove("SEER_METER_TOKEN")
            .env("RUST_LOG", "warn")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", self.path.display()))?;
        let pid = child.id().context("the meter has no id")?;
        peaks.register("meter-client", pid);
        let stdout = child.stdout.take().context("stdout is piped")?;
        let stderr = child.stderr.take().context("stderr is piped")?;
        let mut log = tokio::fs::File::create(&self.log).await.ok();
        let mut err_lines = BufReader::new(stderr).lines();
        let mut out_lines = BufReader::new(stdout).lines();
        let mut out = String::new();
        let mut queued: HashMap<u64, Instant> = HashMap::new();
        let mut latencies = Vec::new();
        let (mut err_open, mut out_open) = (true, true);
        while err_open || out_open {
            tokio::select! {
                line = err_lines.next_line(), if err_open => match line {
                    Ok(Some(line)) => {
                        if let Some(log) = log.as_mut() {
                            let _ = log.write_all(format!("{line}\n").as_bytes()).await;
                        }
                        if let Some(seq) = batch_number(&line, "queued batch ") {
                            queued.insert(seq, Instant::now());
                        } else if let Some(seq) = batch_number(&line, "sent batch ") {
                            counters.counted.fetch_add(1, Ordering::Relaxed);
                            if let Some(t) = queued.remove(&seq) {
                                latencies.push(t.elapsed().as_secs_f64() * 1e3);
                            }
                        }
                    }
                    _ => err_open = false,
                },
                line = out_lines.next_line(), if out_open => match line {
                    Ok(Some(line)) => {
                        out.push_str(&line);
                        out.push('\n');
                    }
                    _ => out_open = false,
                },
            }
        }
        peaks.unregister(pid);
        let status = child.wait().await?;
        if let Some(mut log) = log {
            let _ = log.flush().await;
        }
        if !status.success() {
            bail!(
                "meter client {} failed ({status}); the end of {}:\n{}",
                self.meter_id,
                self.log.display(),
                log_tail(&self.log, 15)
            );
        }
        let summary: RunSummary = serde_json::from_str(out.trim()).with_context(|| {
            format!(
                "meter client {} printed no JSON summary: {out:?}",
                self.meter_id
            )
        })?;
        Ok((summary, latencies))
    }
}

/// `N` of a line `PREFIX N...`.
fn batch_number(line: &str, prefix: &str) -> Option<u64> {
    let rest = line.strip_prefix(prefix)?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Kills and restarts workers (the chaos of `--kill-workers-every`).
struct Killer {
    spec: WorkerSpec,
    workers: Arc<tokio::sync::Mutex<Vec<Proc>>>,
    peaks: Peaks,
    generation: std::sync::atomic::AtomicU32,
    kills: AtomicU64,
    mid_job: AtomicU64,
}

impl Killer {
    /// SIGKILLs worker `i` and starts a fresh one in its place.
    async fn kill(&self, i: usize, why: &str) {
        let mut workers = self.workers.lock().await;
        let Some(w) = workers.get_mut(i) else {
            return;
        };
        self.peaks.unregister(w.pid);
        let _ = w.child.start_kill();
        let _ = w.child.wait().await;
        self.kills.fetch_add(1, Ordering::Relaxed);
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        match self.spec.start(i, generation, &self.peaks).await {
            Ok(fresh) => {
                progress(format!(
                    "chaos: {} SIGKILLed ({why}) and restarted",
                    fresh.name
                ));
                *w = fresh;
            }
            Err(e) => progress(format!("chaos: restarting worker-{i} failed: {e:#}")),
        }
    }
}

/// SIGKILLs a random worker about every `every` seconds (uniform in 0.5–1.5 × `every`) and
/// restarts it at once, until told to stop.
fn spawn_chaos(
    every: f64,
    killer: Arc<Killer>,
) -> (
    tokio::task::JoinHandle<()>,
    tokio::sync::watch::Sender<bool>,
) {
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(7);
    let task = tokio::spawn(async move {
        let mut rng = Chaos(seed);
        loop {
            let wait = Duration::from_secs_f64(every.max(0.05) * (0.5 + rng.unit()));
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                _ = stopped.changed() => return,
            }
            let n = killer.workers.lock().await.len();
            if n > 0 {
                killer
                    .kill((rng.next() % n as u64) as usize, "at random")
                    .await;
            }
        }
    });
    (task, stop)
}

/// The worker index of a lease owner `worker-I#ATTEMPT`.
fn lease_worker(owner: &str) -> Option<usize> {
    owner
        .split('#')
        .next()?
        .strip_prefix("worker-")?
        .parse()
        .ok()
}

/// Polls `utility-server jobs` until nothing is pending or running; returns its last report.
/// With `killer`, each job seen running on its first attempt has its worker SIGKILLed once
/// (a job interrupted mid-run: its lease must expire and another worker finish it); the
/// running jobs are then looked up in the utility's `jobs` table every 20 ms (`database`),
/// so that short jobs are caught too.
async fn wait_for_jobs(
    binaries: &Binaries,
    env: &[(String, String)],
    killer: Option<(&Killer, &str)>,
) -> Result<serde_json::Value> {
    let start = Instant::now();
    let mut last_report = Instant::now();
    let mut interrupted = std::collections::HashSet::new();
    let pool = match killer {
        Some((_, url)) => sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .connect(url)
            .await
            .ok(),
        None => None,
    };
    let outcome = loop {
        let text = output(binaries, "utility-server", &["jobs"], env).await?;
        let value: serde_json::Value =
            serde_json::from_str(&text).context("parsing `utility-server jobs`")?;
        let c = &value["counts"];
        let n = |k: &str| c[k].as_u64().unwrap_or(0);
        if n("pending") + n("running") == 0 {
            break value;
        }
        if last_report.elapsed() >= Duration::from_secs(5) {
            progress(format!(
                "jobs: {} pending, {} running, {} done, {} failed ({:.0} s)",
                n("pending"),
                n("running"),
                n("done"),
                n("failed"),
                start.elapsed().as_secs_f64()
            ));
            last_report = Instant::now();
        }
        ensure!(
            start.elapsed() < Duration::from_secs(6 * 3600),
            "the jobs did not finish in 6 hours"
        );
        let until = Instant::now() + Duration::from_millis(500);
        while Instant::now() < until {
            if let (Some((killer, _)), Some(pool)) = (killer, &pool) {
                let running: Vec<(String, Option<String>)> = sqlx::query_as(
                    "SELECT job_key, lease_owner FROM jobs WHERE state = 'running' \
                     AND attempts = 1",
                )
                .fetch_all(pool)
                .await
                .unwrap_or_default();
                for (key, owner) in running {
                    if !interrupted.contains(&key)
                        && let Some(i) = owner.as_deref().and_then(lease_worker)
                    {
                        interrupted.insert(key.clone());
                        killer.mid_job.fetch_add(1, Ordering::Relaxed);
                        killer.kill(i, &format!("mid-job, {key}")).await;
                    }
                }
            }
            let poll = if killer.is_some() { 20 } else { 500 };
            tokio::time::sleep(Duration::from_millis(poll)).await;
        }
    };
    if let Some(pool) = pool {
        pool.close().await;
    }
    Ok(outcome)
}

/// Without the job commands: `utility-server bill` per group, `parallel` at a time, group g
/// at key authority g mod K.
async fn bill_groups(
    binaries: &Binaries,
    env: &[(String, String)],
    period: &str,
    groups: &[u64],
    ka_urls: &[String],
    parallel: usize,
) -> Result<()> {
    let permits = Arc::new(tokio::sync::Semaphore::new(parallel.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    for (n, group) in groups.iter().enumerate() {
        let permits = Arc::clone(&permits);
        let binaries = binaries.clone();
        let env = env.to_vec();
        let period = period.to_owned();
        let group = group.to_string();
        let url = ka_urls[n % ka_urls.len()].clone();
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await?;
            progress(format!("billing group {group} at {url}"));
            output(
                &binaries,
                "utility-server",
                &[
                    "bill",
                    "--period",
                    &period,
                    "--group",
                    &group,
                    "--key-authority",
                    &url,
                ],
                &env,
            )
            .await
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined??;
    }
    Ok(())
}

/// Jobs done per key authority, from the workers' attempt lines (`worker-I.jobs.jsonl` in
/// `logs`: each `done` attempt names the key authority that answered it).
fn jobs_per_key_authority(logs: &Path, ka_urls: &[String]) -> BTreeMap<String, u64> {
    let mut done = BTreeMap::new();
    let Ok(dir) = std::fs::read_dir(logs) else {
        return done;
    };
    for entry in dir.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !(name.starts_with("worker-") && name.ends_with(".jobs.jsonl")) {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(entry.path()) else {
            continue;
        };
        for line in text.lines() {
            let Ok(attempt) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            if attempt["outcome"] != "done" {
                continue;
            }
            let url = attempt["detail"]["key_authority"]
                .as_str()
                .unwrap_or_default();
            let member = ka_urls
                .iter()
                .position(|u| u == url)
                .map_or_else(|| "unknown".to_owned(), |k| format!("key-authority-{k}"));
            *done.entry(member).or_default() += 1;
        }
    }
    done
}

/// The daily lane's part of a run: the model (by its absolute path, as the key authorities
/// register it) and the day.
#[derive(Clone)]
struct DailyPlan {
    path: PathBuf,
    model: DailyModel,
    blake3: String,
    day: NaiveDate,
}

impl DailyPlan {
    fn load(path: &Path, day: NaiveDate) -> Result<Self> {
        let path = path
            .canonicalize()
            .with_context(|| format!("the daily model {}", path.display()))?;
        let bytes = std::fs::read(&path)
            .with_context(|| format!("reading the daily model {}", path.display()))?;
        let lane = meter_client::daily::DailyLane::try_new(
            &bytes,
            0,
            meter_client::daily::DEFAULT_GROUP_SIZE,
        )
        .with_context(|| format!("the daily model {}", path.display()))?;
        Ok(Self {
            model: lane.model().clone(),
            blake3: lane.model_blake3().to_owned(),
            path,
            day,
        })
    }

    /// The plaintext twin of what the key authority must release for synthetic home `home`:
    /// the model on the readings of the day's window, read from the same generator as the
    /// meter's (`synthetic:SEED:HOME`).
    fn twin(&self, seed: u64, home: u32) -> Result<DailyRelease> {
        let source = open(&SourceSpec::Synthetic { seed, home })?;
        let (start, end) = meter_client::daily::window(self.day);
        let (history, _, _) = crate::daily::history_of(
            &source,
            DateRange {
                from: Some(start.date()),
                until: Some(end.date()),
                shift: MonthShift::NONE,
            },
        )?;
        let input = self
            .model
            .prepare(&history, self.day)
            .with_context(|| format!("the plaintext model cannot prepare {}", self.day))?;
        self.model
            .release(self.day, &self.model.evaluate_plain(&input))
            .map_err(|e| anyhow!("the plaintext model refuses its own day {}: {e}", self.day))
    }
}

/// A `meter-client daily --day D` per home, `concurrency` at a time, with the progress bar:
/// each meter prepares the day from its own readings, encrypts it under the daily key, records
/// its signed receipt at its key authority and sends it to its replica. Returns the days sent
/// and their ciphertext bytes.
async fn daily_uploads(
    meters: &Meters<'_>,
    plan: &DailyPlan,
    capacity: usize,
) -> Result<(usize, f64)> {
    let counters = Arc::new(Counters::default());
    let bar = spawn_bar(
        Arc::clone(&counters),
        meters.homes.len() as u64,
        "days sent",
    );
    let permits = Arc::new(tokio::sync::Semaphore::new(meters.options.concurrency));
    let mut tasks = tokio::task::JoinSet::new();
    for (home, files) in meters.homes.iter().zip(meters.files) {
        let (ka_url, ut_url) = meters.servers(home);
        let args: Vec<String> = vec![
            "daily".into(),
            "--meter-id".into(),
            home.meter_id.clone(),
            "--source".into(),
            format!("synthetic:{}:{}", meters.options.seed, home.synthetic),
            "--home-index".into(),
            home.index.to_string(),
            // The deployment indices of a group span the layout's capacity.
            "--group-size".into(),
            capacity.to_string(),
            "--day".into(),
            plan.day.to_string(),
            "--model".into(),
            plan.path.display().to_string(),
            "--utility".into(),
            ut_url,
            "--key-authority".into(),
            ka_url,
            "--state".into(),
            meters.state(home).display().to_string(),
        ];
        let env = meters.env(files);
        let path = meters.binaries.path("meter-client");
        let id = home.meter_id.clone();
        let log = meters.workdir.join("logs").join(format!("{id}.daily.log"));
        let permits = Arc::clone(&permits);
        let counters = Arc::clone(&counters);
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await?;
            let out = Command::new(&path)
                .args(&args)
                .env_remove("SEER_METER_TOKEN")
                .env("RUST_LOG", "warn")
                .envs(env)
                .stdin(Stdio::null())
                .kill_on_drop(true)
                .output()
                .await
                .with_context(|| format!("starting {}", path.display()))?;
            tokio::fs::write(&log, &out.stderr)
                .await
                .with_context(|| format!("writing {}", log.display()))?;
            ensure!(
                out.status.success(),
                "meter-client daily for {id} failed ({}); the end of {}:\n{}",
                out.status,
                log.display(),
                log_tail(&log, 15)
            );
            let summary: serde_json::Value = serde_json::from_slice(&out.stdout)
                .with_context(|| format!("meter-client daily for {id} printed no JSON"))?;
            let sent = summary["sent"].as_array().map_or(0, Vec::len);
            let bytes = summary["bytes_per_upload"].as_f64().unwrap_or(0.0) * sent as f64;
            counters.homes_done.fetch_add(1, Ordering::Relaxed);
            counters.counted.fetch_add(sent as u64, Ordering::Relaxed);
            anyhow::Ok((sent, bytes))
        });
    }
    let done = join_meters(tasks, bar).await?;
    Ok(done
        .into_iter()
        .fold((0, 0.0), |(n, b), (sent, bytes)| (n + sent, b + bytes)))
}

/// What the daily checks found.
struct DailyChecked {
    home_days: usize,
    forecast_hours: usize,
    matching: usize,
    max_abs_diff: f64,
    flagged: usize,
    grants: usize,
    group_totals: usize,
    problems: Vec<String>,
}

/// The day's releases against their plaintext twins: every home's 24 forecast hours and its
/// anomaly score within one quantum of the plaintext model on the same readings, stored once
/// at the utility, and exactly one granted `daily` audit entry per home for the day.
async fn check_daily(
    pool: &sqlx::PgPool,
    homes: &[FleetHome],
    seed: u64,
    plan: &DailyPlan,
    entries: &[seer_proto::v1::AuditEntry],
) -> Result<DailyChecked> {
    let day = plan.day.to_string();
    let forecasts: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT meter_id, hour, kwh_milli FROM daily_forecasts \
         WHERE input_day = $1 AND model_blake3 = $2 ORDER BY meter_id, hour",
    )
    .bind(&day)
    .bind(&plan.blake3)
    .fetch_all(pool)
    .await
    .context("reading the released forecasts")?;
    let anomalies: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT meter_id, score_milli, flagged FROM daily_anomalies \
         WHERE day = $1 AND model_blake3 = $2",
    )
    .bind(&day)
    .bind(&plan.blake3)
    .fetch_all(pool)
    .await
    .context("reading the released anomaly scores")?;
    let mut hours: HashMap<&str, Vec<f64>> = HashMap::new();
    for (meter, _, milli) in &forecasts {
        hours
            .entry(meter.as_str())
            .or_default()
            .push(*milli as f64 / 1000.0);
    }
    let mut scores: HashMap<&str, Vec<(f64, bool)>> = HashMap::new();
    for (meter, milli, flagged) in &anomalies {
        scores
            .entry(meter.as_str())
            .or_default()
            .push((*milli as f64 / 1000.0, *flagged != 0));
    }
    // A `daily` grant names the days it released (`FIRST..LAST`); a group total names its
    // group, the forecast day (the next) and the model.
    let covers = |period: &str| {
        period.split_once("..").is_some_and(|(first, last)| {
            first.parse::<NaiveDate>().is_ok_and(|f| f <= plan.day)
                && last.parse::<NaiveDate>().is_ok_and(|l| plan.day <= l)
        })
    };
    let group_total = format!(
        " day {} model {}",
        plan.day + TimeDelta::days(1),
        plan.blake3
    );
    let mut grants: HashMap<&str, usize> = HashMap::new();
    let mut group_totals = 0;
    for e in entries {
        if e.decision != seer_proto::v1::AuditDecision::Granted as i32 {
            continue;
        }
        let period = e.period.as_deref().unwrap_or_default();
        match (e.kind.as_str(), &e.meter_id) {
            ("daily", Some(m)) if covers(period) => *grants.entry(m.as_str()).or_default() += 1,
            ("daily-group-forecast", _) if period.ends_with(&group_total) => group_totals += 1,
            _ => {}
        }
    }
    let twins = {
        let synthetic: Vec<u32> = homes.iter().map(|h| h.synthetic).collect();
        let plan = plan.clone();
        tokio::task::spawn_blocking(move || {
            synthetic
                .into_iter()
                .map(|h| plan.twin(seed, h))
                .collect::<Vec<_>>()
        })
        .await?
    };
    let mut checked = DailyChecked {
        home_days: anomalies.len(),
        forecast_hours: forecasts.len(),
        matching: 0,
        max_abs_diff: 0.0,
        flagged: anomalies.iter().filter(|a| a.2 != 0).count(),
        grants: grants.values().sum(),
        group_totals,
        problems: Vec::new(),
    };
    // One quantum, and the float noise of comparing two rounded values.
    let tolerance = QUANTUM + 1e-9;
    for (home, twin) in homes.iter().zip(twins) {
        let id = home.meter_id.as_str();
        let twin = match twin {
            Ok(t) => t,
            Err(e) => {
                checked.problems.push(format!("{id} {day}: {e:#}"));
                continue;
            }
        };
        let mut ok = true;
        let released = hours.get(id).map_or(&[][..], Vec::as_slice);
        let expected = twin.forecast.as_deref().unwrap_or_default();
        if released.len() == expected.len() {
            for (r, e) in released.iter().zip(expected) {
                checked.max_abs_diff = checked.max_abs_diff.max((r - e).abs());
                ok &= (r - e).abs() <= tolerance;
            }
        } else {
            ok = false;
            checked.problems.push(format!(
                "{id} {day}: {} forecast hours released, the plaintext model has {}",
                released.len(),
                expected.len()
            ));
        }
        match (scores.get(id).map(Vec::as_slice), &twin.anomaly) {
            (Some([(score, _)]), Some(a)) => {
                checked.max_abs_diff = checked.max_abs_diff.max((score - a.score).abs());
                ok &= (score - a.score).abs() <= tolerance;
            }
            (None, None) => {}
            (got, want) => {
                ok = false;
                checked.problems.push(format!(
                    "{id} {day}: {} anomaly scores released, the plaintext model has {}",
                    got.map_or(0, <[_]>::len),
                    usize::from(want.is_some())
                ));
            }
        }
        if ok {
            checked.matching += 1;
        } else {
            checked.problems.push(format!(
                "{id} {day}: released {released:?} / {:?}, plaintext {expected:?} / {:?}",
                scores.get(id),
                twin.anomaly.as_ref().map(|a| a.score)
            ));
        }
        let n = grants.get(id).copied().unwrap_or(0);
        if n != 1 {
            checked
                .problems
                .push(format!("{id}: {n} granted daily entries for {day}"));
        }
    }
    Ok(checked)
}

/// The utility's stored bytes: `utility-server storage` when it exists, else the sum of
/// PostgreSQL's `pg_total_relation_size` over the public tables.
async fn storage(
    binaries: &Binaries,
    env: &[(String, String)],
    pool: &sqlx::PgPool,
) -> (serde_json::Value, u64, String) {
    match output(binaries, "utility-server", &["storage"], env).await {
        Ok(text) => match serde_json::from_str::<serde_json::Value>(&text) {
            Ok(value) => {
                let total = value["database_bytes"].as_u64().unwrap_or(0);
                return (value, total, "utility-server storage".into());
            }
            Err(e) => progress(format!("`utility-server storage` printed no JSON: {e}")),
        },
        Err(e) => progress(format!("`utility-server storage` failed: {e:#}")),
    }
    let rows: Result<Vec<(String, i64)>, _> = sqlx::query_as(
        "SELECT c.relname::TEXT, pg_total_relation_size(c.oid)::BIGINT FROM pg_class c \
         JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = 'public' AND c.relkind = 'r' ORDER BY 2 DESC",
    )
    .fetch_all(pool)
    .await;
    match rows {
        Ok(rows) => {
            let total = rows.iter().map(|(_, b)| *b as u64).sum();
            let tables: serde_json::Map<String, serde_json::Value> = rows
                .into_iter()
                .map(|(t, b)| (t, serde_json::Value::from(b)))
                .collect();
            (
                serde_json::json!({ "tables": tables, "total_bytes": total }),
                total,
                "pg_total_relation_size".into(),
            )
        }
        Err(e) => (
            serde_json::json!({ "error": e.to_string() }),
            0,
            "unavailable".into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_lines_and_percentiles() {
        assert_eq!(
            batch_number("queued batch 12: 2024-03-01", "queued batch "),
            Some(12)
        );
        assert_eq!(batch_number("sent batch 3", "sent batch "), Some(3));
        assert_eq!(
            batch_number("sent batch 3 (server had it)", "queued batch "),
            None
        );
        let ingest = Ingest {
            summaries: Vec::new(),
            latencies_ms: (1..=100).map(f64::from).collect(),
        };
        let l = ingest.latency();
        assert_eq!(l.batches, 100);
        assert_eq!(l.p50_ms, 51.0);
        assert_eq!(l.p99_ms, 99.0);
        assert_eq!(l.max_ms, 100.0);
    }

    #[test]
    fn lease_owners_name_workers() {
        assert_eq!(lease_worker("worker-2#3"), Some(2));
        assert_eq!(lease_worker("host-1234#1"), None);
    }

    #[test]
    fn vm_hwm_of_this_process_is_read() {
        assert!(vm_hwm_kib("self").is_some_and(|k| k > 0));
    }

    #[test]
    fn database_urls_append_the_name() {
        assert_eq!(
            database_url("postgres://postgres@127.0.0.1:5432/", "x"),
            "postgres://postgres@127.0.0.1:5432/x"
        );
    }
}
