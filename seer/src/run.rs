//! `seer run`: the key authority, the utility server and one meter client per home as separate
//! processes, a month replayed by every meter, the bills released, and each compared with its
//! plaintext twin; then each billing group's hourly totals of the noised analytics lane
//! released, and compared with the plaintext hourly sums.
//!
//! The phases, each timed:
//! 1. **plan**: the homes and their plaintext bills ([`crate::plan`]);
//! 2. **key authority**: `key-authority serve` on port 0 with mutual TLS (a fresh deployment CA
//!    in `pki/`, a certificate per process: [`crate::run_tls`]; it generates its keys on first
//!    start), then its JWT public key (`key-authority jwt-public-key`) and the fingerprints
//!    the others pin (`key-authority fingerprints`);
//! 3. **utility server**: `utility-server serve` on port 0, verifying tokens with that key
//!    (pinned by its SHA-256);
//! 4. **tokens and enrolment**: a utility token (`key-authority issue-token`), and each meter
//!    enrolled (`key-authority enrolment-code`, then `meter-client enrol` into its state
//!    directory): meters sign their batches and receipts with their device keys and renew
//!    their own one-hour, single-audience tokens with them;
//! 5. **meters**: `meter-client run` per home, `--jobs` at a time, each with its own state
//!    directory and home index, and its analytics lane's noise group sized truthfully (the
//!    homes of its billing group in this run, a tenth of them tolerated); their progress
//!    lines are relayed;
//! 6. **billing**: `utility-server bill` for each packing group, with the utility token: the
//!    key authority checks each closing lane against its meter's receipt, runs the billing
//!    circuit and releases the bills;
//! 7. **group totals**: `utility-server group-totals --per-interval` for each billing group
//!    and each batch window of the period (the meters' calendar grid), with the utility token:
//!    the key authority sums the group's noised analytics lanes and releases the hourly
//!    totals, or withholds an hour with too few meters present (not an error: a group of
//!    fewer than three homes withholds everything); the released hours are compared with the
//!    plaintext hourly sums of the same readings clamped to Δ ([`crate::group_totals`]);
//! 8. **shutdown**: SIGTERM to both servers.
//!
//! On an error or an interruption (SIGINT, SIGTERM) the servers are stopped the same way
//! before the launcher exits. Only the three programs' command lines and gRPC are used: the
//! launcher holds no secret key.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context as _, Result, anyhow, bail};
use meter_client::cli::RunSummary;
use seer_ckks::CkksContext;
use seer_core::circuits::billing::{self, BillingLayout};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::process::Command;

use crate::plan::{Home, Plan, PlanOptions, plan};
use crate::process::{Binaries, Server, log_tail, output};
use crate::report::{
    BytesReport, GroupTotalsSummary, HomeReport, Phase, RunReport, ServerExit, TOLERANCE_PAISE,
};

/// The marker file that makes a directory a `seer run` work directory (which a later run may
/// empty).
pub const WORKDIR_MARKER: &str = ".seer-run";

/// Everything `seer run` needs.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// The homes.
    pub plan: PlanOptions,
    /// The work directory: emptied if a previous run made it, refused if it holds anything
    /// else.
    pub workdir: PathBuf,
    /// Where the programs are (default: beside the running executable).
    pub bin_dir: Option<PathBuf>,
    /// The meters' `--batch-days` (default: meter-client's).
    pub batch_days: Option<u32>,
    /// The meters' `--replay-speed` (default: as fast as possible).
    pub replay_speed: Option<f64>,
    /// Meter clients running at once.
    pub jobs: usize,
    /// Leave the programs and their dashboards up after the bills are released (until SIGINT
    /// or SIGTERM), printing the addresses and a token for each role.
    pub keep_running: bool,
}

/// What a newcomer needs to look at a deployment `seer run --keep-running` left up.
#[derive(Clone, Debug)]
pub struct Access {
    /// The utility dashboard's base URL.
    pub utility_dashboard: String,
    /// The household dashboard's URL (with its access key), when it started.
    pub household_dashboard: Option<String>,
    /// The meter whose dashboard that is.
    pub household_meter: String,
    /// The deployment CA a browser must trust (or accept the certificate's warning).
    pub ca_file: PathBuf,
    /// One token per role for the utility dashboard's login: utility, admin, auditor and the
    /// household of [`Access::household_meter`].
    pub tokens: Vec<(String, String)>,
    /// The key authority's gRPC URL (for `seer audit`).
    pub key_authority: String,
    /// The files `seer audit verify|serve` takes: the key authority's JWT public key and its
    /// SHA-256 pin.
    pub audit_public_key: PathBuf,
    /// The pin of [`Access::audit_public_key`].
    pub audit_public_key_sha256: String,
    /// The auditor's client certificate, as the environment `seer audit` reads.
    pub auditor_env: Vec<(String, String)>,
}

/// Writes a progress line to stderr.
fn progress(line: impl AsRef<str>) {
    eprintln!("seer: {}", line.as_ref());
}

/// Runs the whole job; see the [module documentation](self).
///
/// # Errors
/// When a program is missing or fails, a step cannot be carried out, or the launcher is
/// interrupted. Refused or differing bills are not errors here: they are in the report
/// ([`RunReport::all_match`]).
pub async fn run(options: &RunOptions) -> Result<RunReport> {
    run_and_then(options, |_, _| Ok(())).await
}

/// [`run`], calling `ready` with the report (and, with [`RunOptions::keep_running`], the
/// deployment's addresses and tokens) while the servers are still up; with
/// [`RunOptions::keep_running`] the servers then stay up until SIGINT or SIGTERM.
///
/// # Errors
/// As [`run`], and what `ready` returns.
pub async fn run_and_then(
    options: &RunOptions,
    ready: impl FnOnce(&RunReport, Option<&Access>) -> Result<()>,
) -> Result<RunReport> {
    let binaries = Binaries::locate(options.bin_dir.clone())?;
    if options.jobs == 0 {
        bail!("--jobs must be at least 1");
    }
    let workdir = prepare_workdir(&options.workdir, WORKDIR_MARKER, "seer run", "--workdir")?;
    let mut servers = Servers::default();
    let mut access = None;
    let outcome = tokio::select! {
        outcome = phases(options, &binaries, &workdir, &mut servers, &mut access) => outcome,
        signal = interrupted() => Err(anyhow!("interrupted by {signal}")),
    };
    let mut household = None;
    if let (Ok(report), true) = (&outcome, options.keep_running) {
        if let Some(access) = access.as_mut() {
            household = start_household_dashboard(&binaries, &workdir, access).await;
        }
        ready(report, access.as_ref())?;
        let signal = interrupted().await;
        progress(format!("{signal}: stopping"));
    } else if let Ok(report) = &outcome {
        ready(report, None)?;
    }
    if let Some(mut child) = household {
        let _ = child.kill().await;
    }
    let t = Instant::now();
    let exits = servers.stop_all().await;
    let mut report = outcome?;
    report.phases.push(Phase {
        name: "shutdown".into(),
        millis: t.elapsed().as_secs_f64() * 1e3,
    });
    report.servers = exits;
    Ok(report)
}

/// The running servers, stopped in reverse order of start.
#[derive(Default)]
struct Servers {
    running: Vec<Server>,
}

impl Servers {
    async fn stop_all(&mut self) -> Vec<ServerExit> {
        let mut exits = Vec::new();
        while let Some(mut server) = self.running.pop() {
            let (clean, status) = match server.stop().await {
                Ok(status) => (status.success(), status.to_string()),
                Err(e) => (false, format!("{e:#}")),
            };
            progress(format!("{} stopped ({status})", server.name()));
            exits.push(ServerExit {
                name: server.name().to_owned(),
                clean,
                status,
                log: server.log().display().to_string(),
            });
        }
        exits
    }
}

async fn interrupted() -> String {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "SIGINT".to_owned(),
        _ = term.recv() => "SIGTERM".to_owned(),
    }
}

/// Creates `dir` fresh for `command` (`seer run`, `seer fleet`): an existing directory is
/// emptied only if a previous run of that command made it (it holds the file `marker`; `flag`
/// names the option to choose another).
pub(crate) fn prepare_workdir(
    dir: &Path,
    marker: &str,
    command: &str,
    flag: &str,
) -> Result<PathBuf> {
    if dir.exists() {
        let empty = std::fs::read_dir(dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .next()
            .is_none();
        if !empty {
            if !dir.join(marker).is_file() {
                bail!(
                    "{} exists and was not made by `{command}` (it has no {marker} file): \
                     choose another {flag}",
                    dir.display()
                );
            }
            std::fs::remove_dir_all(dir)
                .with_context(|| format!("emptying the previous run's {}", dir.display()))?;
        }
    }
    for sub in ["", "key-authority", "utility", "meters", "logs"] {
        std::fs::create_dir_all(dir.join(sub))
            .with_context(|| format!("creating {}", dir.join(sub).display()))?;
    }
    std::fs::write(
        dir.join(marker),
        format!("made by `{command}`; the next run empties this directory\n"),
    )?;
    dir.canonicalize()
        .with_context(|| format!("resolving {}", dir.display()))
}

fn elapsed(phases: &mut Vec<Phase>, name: &str, since: Instant) {
    phases.push(Phase {
        name: name.to_owned(),
        millis: since.elapsed().as_secs_f64() * 1e3,
    });
}

fn key_authority_env(workdir: &Path) -> Vec<(String, String)> {
    let d = workdir.join("key-authority");
    let d = d.display();
    vec![
        ("SEER_KEY_AUTHORITY__SERVER__PORT".into(), "0".into()),
        ("SEER_KEY_AUTHORITY__KEYS__DIR".into(), format!("{d}/keys")),
        (
            "SEER_KEY_AUTHORITY__AUTH__SIGNING_KEY_FILE".into(),
            format!("{d}/jwt-signing-key.pem"),
        ),
        (
            "SEER_KEY_AUTHORITY__AUDIT__DATABASE_URL".into(),
            format!("sqlite:{d}/audit.db"),
        ),
    ]
}

/// Where the utility server writes its dashboard's address.
fn dashboard_address_file(workdir: &Path) -> PathBuf {
    workdir.join("utility/dashboard-address")
}

/// The utility dashboard's URL, once the utility server has written it.
async fn read_dashboard_address(workdir: &Path) -> Result<String> {
    let file = dashboard_address_file(workdir);
    for _ in 0..100 {
        if let Ok(text) = std::fs::read_to_string(&file) {
            let text = text.trim();
            if !text.is_empty() {
                return Ok(if text.contains("://") {
                    text.to_owned()
                } else {
                    format!("https://{text}")
                });
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    bail!(
        "the utility server wrote no dashboard address to {} (see logs/utility-server.log)",
        file.display()
    )
}

/// `meter-client dashboard` on the household's state directory; its URL goes into `access`.
/// A failure is reported and leaves the rest up.
async fn start_household_dashboard(
    binaries: &Binaries,
    workdir: &Path,
    access: &mut Access,
) -> Option<tokio::process::Child> {
    let state = meter_state(workdir, &access.household_meter);
    let log = workdir.join("logs/household-dashboard.log");
    let mut child = match Command::new(binaries.path("meter-client"))
        .arg("dashboard")
        .arg("--state")
        .arg(&state)
        .args(["--listen", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
    {
        Ok(child) => child,
        Err(error) => {
            progress(format!("the household dashboard did not start: {error}"));
            return None;
        }
    };
    let stderr = child.stderr.take()?;
    let mut lines = BufReader::new(stderr).lines();
    let mut log_file = tokio::fs::File::create(&log).await.ok();
    let found = tokio::time::timeout(std::time::Duration::from_secs(20), async {
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(file) = log_file.as_mut() {
                let _ = file.write_all(format!("{line}\n").as_bytes()).await;
            }
            if let Some(url) = line
                .split_whitespace()
                .find(|word| word.starts_with("http://") || word.starts_with("https://"))
            {
                return Some(url.to_owned());
            }
        }
        None
    })
    .await
    .ok()
    .flatten();
    // Keep relaying its log after the address.
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(file) = log_file.as_mut() {
                let _ = file.write_all(format!("{line}\n").as_bytes()).await;
            }
        }
    });
    match found {
        Some(url) => access.household_dashboard = Some(url),
        None => progress(format!(
            "the household dashboard printed no address (see {})",
            log.display()
        )),
    }
    Some(child)
}

fn utility_env(workdir: &Path) -> Vec<(String, String)> {
    let address_file = dashboard_address_file(workdir);
    let d = workdir.join("utility");
    let d = d.display();
    vec![
        (
            "SEER_UTILITY__DASHBOARD__ADDRESS_FILE".into(),
            address_file.display().to_string(),
        ),
        ("SEER_UTILITY__SERVER__PORT".into(), "0".into()),
        (
            "SEER_UTILITY__DATABASE__URL".into(),
            format!("sqlite://{d}/utility.db"),
        ),
        (
            "SEER_UTILITY__AUTH__JWT_PUBLIC_KEY_FILE".into(),
            format!("{d}/key-authority-jwt.pem"),
        ),
    ]
}

async fn phases(
    options: &RunOptions,
    binaries: &Binaries,
    workdir: &Path,
    servers: &mut Servers,
    access: &mut Option<Access>,
) -> Result<RunReport> {
    let mut phases = Vec::new();

    // 1. The homes and their plaintext bills.
    let t = Instant::now();
    let plan_options = options.plan.clone();
    progress(format!(
        "planning {} UCI and {} synthetic home(s) for {}",
        plan_options.uci_homes, plan_options.synthetic_homes, plan_options.period
    ));
    let plan = tokio::task::spawn_blocking(move || plan(&plan_options)).await??;
    for home in &plan.homes {
        progress(format!(
            "home {} ({}): {}, {} readings, plaintext bill {}",
            home.index,
            home.meter_id,
            home.label(plan.period),
            home.readings,
            crate::report::rupees(home.plaintext.total().get())
        ));
    }
    let layout = {
        let tariff = plan.tariff.clone();
        tokio::task::spawn_blocking(move || {
            let ctx = CkksContext::new(billing::PARAMETER_SET)?;
            anyhow::Ok(BillingLayout::try_new(&tariff, &ctx)?)
        })
        .await??
    };
    let groups: BTreeSet<u64> = plan
        .homes
        .iter()
        .map(|h| layout.locate(h.index as usize).group as u64)
        .collect();
    // Each meter's noise group is its billing group: sized by the homes this run puts in it,
    // not by the layout's capacity, so that the group's shares add up to a full draw.
    let noise_groups: Vec<u32> = plan
        .homes
        .iter()
        .map(|h| {
            let group = layout.locate(h.index as usize).group;
            let homes = plan
                .homes
                .iter()
                .filter(|o| layout.locate(o.index as usize).group == group)
                .count();
            u32::try_from(homes).unwrap_or(u32::MAX)
        })
        .collect();
    elapsed(&mut phases, "plan and plaintext bills", t);

    // 2. The key authority.
    let t = Instant::now();
    // Mutual TLS on every hop: a fresh CA for the run, a certificate per process.
    let pki = crate::run_tls::RunPki::create(workdir)?;
    let mut ka_env = key_authority_env(workdir);
    ka_env.extend(pki.key_authority_env()?);
    progress("starting the key authority (it generates its keys on first start)");
    let authority = Server::start(
        binaries,
        "key-authority",
        &ka_env,
        &workdir.join("logs/key-authority.log"),
    )
    .await?;
    let ka_url = authority.https_url();
    servers.running.push(authority);
    progress(format!("key authority listening at {ka_url}"));
    let pem = output(binaries, "key-authority", &["jwt-public-key"], &ka_env).await?;
    // The fingerprints the utility and the meters pin (from the key authority's own files).
    let fingerprints = crate::run_tls::parse_fingerprints(
        &output(binaries, "key-authority", &["fingerprints"], &ka_env).await?,
    )?;
    let mut ut_env = utility_env(workdir);
    ut_env.extend(pki.utility_env(&fingerprints)?);
    std::fs::write(workdir.join("utility/key-authority-jwt.pem"), pem)
        .context("writing the key authority's JWT public key")?;
    elapsed(&mut phases, "key authority start", t);

    // 3. The utility server.
    let t = Instant::now();
    let utility = Server::start(
        binaries,
        "utility-server",
        &ut_env,
        &workdir.join("logs/utility-server.log"),
    )
    .await?;
    let utility_url = utility.https_url();
    servers.running.push(utility);
    progress(format!("utility server listening at {utility_url}"));
    elapsed(&mut phases, "utility server start", t);

    // 4. Tokens.
    let t = Instant::now();
    let issue = |role: &'static str, meter: Option<String>| {
        let ka_env = ka_env.clone();
        async move {
            let mut args = vec!["issue-token", "--role", role, "--lifetime", "1d"];
            if let Some(meter) = &meter {
                args.extend(["--meter-id", meter.as_str()]);
            }
            let token = output(binaries, "key-authority", &args, &ka_env).await?;
            anyhow::Ok(token.trim().to_owned())
        }
    };
    let utility_token = issue("utility", None).await?;
    let mut meter_envs = Vec::with_capacity(plan.homes.len());
    for home in &plan.homes {
        let env = pki.meter_env(&home.meter_id, &fingerprints)?;
        enrol_meter(binaries, &ka_env, &ka_url, workdir, &home.meter_id, &env).await?;
        meter_envs.push(env);
    }
    progress(format!(
        "utility token issued, {} meters enrolled",
        plan.homes.len()
    ));
    elapsed(&mut phases, "tokens and enrolment", t);

    // 5. The meters.
    let t = Instant::now();
    progress(format!(
        "replaying {} as fast as possible on {} meter client(s), {} at a time",
        plan.period,
        plan.homes.len(),
        options.jobs.min(plan.homes.len())
    ));
    let summaries = run_meters(
        options,
        binaries,
        workdir,
        &plan,
        &meter_envs,
        &noise_groups,
        &ka_url,
        &utility_url,
    )
    .await?;
    elapsed(&mut phases, "meters (replay, encrypt, upload)", t);

    // 6. Billing, one packing group at a time.
    let t = Instant::now();
    let mut released = Vec::new();
    let mut refused = Vec::new();
    for group in &groups {
        progress(format!(
            "billing {} group {group} at the key authority",
            plan.period
        ));
        let mut env = ut_env.clone();
        env.push(("SEER_UTILITY_TOKEN".into(), utility_token.clone()));
        env.push(("SEER_UTILITY__LOG__FILTER".into(), "warn".into()));
        let period = plan.period.to_string();
        let group_text = group.to_string();
        let json = output(
            binaries,
            "utility-server",
            &[
                "bill",
                "--period",
                &period,
                "--group",
                &group_text,
                "--key-authority",
                &ka_url,
            ],
            &env,
        )
        .await?;
        let value: serde_json::Value =
            serde_json::from_str(&json).context("parsing `utility-server bill`'s report")?;
        released.extend(value["released"].as_array().cloned().unwrap_or_default());
        refused.extend(value["refused"].as_array().cloned().unwrap_or_default());
    }
    elapsed(&mut phases, "billing (release at the key authority)", t);

    // 7. Group totals, one window of one billing group at a time.
    let t = Instant::now();
    let mut env = ut_env.clone();
    env.push(("SEER_UTILITY_TOKEN".into(), utility_token.clone()));
    env.push(("SEER_UTILITY__LOG__FILTER".into(), "warn".into()));
    let batch_days = options
        .batch_days
        .unwrap_or(meter_client::cli::DEFAULT_BATCH_DAYS);
    let mut group_totals = Vec::with_capacity(groups.len());
    for group in &groups {
        let homes: Vec<&Home> = plan
            .homes
            .iter()
            .filter(|h| layout.locate(h.index as usize).group as u64 == *group)
            .collect();
        let Some(offset) = homes.first().map(|h| h.utc_offset) else {
            continue;
        };
        let windows = crate::group_totals::windows(plan.period, batch_days, offset)?;
        progress(format!(
            "releasing group {group}'s hourly totals of {} windows at the key authority",
            windows.len()
        ));
        let group_text = group.to_string();
        let mut reports = Vec::with_capacity(windows.len());
        for window in &windows {
            let json = output(
                binaries,
                "utility-server",
                &[
                    "group-totals",
                    "--group",
                    &group_text,
                    "--window",
                    window,
                    "--per-interval",
                    "--key-authority",
                    &ka_url,
                ],
                &env,
            )
            .await?;
            reports.push(
                serde_json::from_str(&json)
                    .context("parsing `utility-server group-totals`'s report")?,
            );
        }
        let summary = crate::group_totals::summarize(*group, &homes, &reports);
        progress(format!(
            "group {group}: {} of {} hours released, {} withheld",
            summary.released, summary.hours, summary.withheld
        ));
        group_totals.push(summary);
    }
    elapsed(
        &mut phases,
        "group totals (release at the key authority)",
        t,
    );

    if options.keep_running {
        let mut tokens = Vec::new();
        for role in ["utility", "admin", "auditor"] {
            tokens.push((role.to_owned(), issue(role, None).await?));
        }
        let household_meter = plan
            .homes
            .first()
            .map(|h| h.meter_id.clone())
            .context("a run has at least one home")?;
        let household = output(
            binaries,
            "key-authority",
            &[
                "issue-token",
                "--role",
                "household",
                "--meter-id",
                &household_meter,
                "--audience",
                seer_auth::AUDIENCE_UTILITY_SERVER,
                "--lifetime",
                "1h",
            ],
            &ka_env,
        )
        .await?;
        tokens.push((
            format!("household {household_meter}"),
            household.trim().to_owned(),
        ));
        *access = Some(Access {
            utility_dashboard: read_dashboard_address(workdir).await?,
            household_dashboard: None,
            household_meter,
            ca_file: workdir.join("pki/ca.pem"),
            tokens,
            key_authority: ka_url.clone(),
            audit_public_key: workdir.join("utility/key-authority-jwt.pem"),
            audit_public_key_sha256: fingerprints.jwt_public_key_sha256.clone(),
            auditor_env: pki.auditor_env("auditor")?,
        });
    }

    Ok(build_report(
        &plan,
        &layout,
        &summaries,
        &released,
        &refused,
        &groups,
        group_totals,
        options,
        workdir,
        phases,
    ))
}

#[expect(
    clippy::too_many_arguments,
    reason = "one call site; the pieces of the report"
)]
fn build_report(
    plan: &Plan,
    layout: &BillingLayout,
    summaries: &[RunSummary],
    released: &[serde_json::Value],
    refused: &[serde_json::Value],
    groups: &BTreeSet<u64>,
    group_totals: Vec<GroupTotalsSummary>,
    options: &RunOptions,
    workdir: &Path,
    phases: Vec<Phase>,
) -> RunReport {
    let slab_labels = plan
        .tariff
        .slabs()
        .iter()
        .map(|s| match s.to {
            Some(to) => format!(
                "{}–{}",
                s.from.get() as f64 / 1000.0,
                to.get() as f64 / 1000.0
            ),
            None => format!(">{}", s.from.get() as f64 / 1000.0),
        })
        .collect();
    let mut bytes = BytesReport {
        batch_days: options
            .batch_days
            .unwrap_or(meter_client::cli::DEFAULT_BATCH_DAYS),
        ..BytesReport::default()
    };
    let homes = plan
        .homes
        .iter()
        .zip(summaries)
        .map(|(home, summary)| {
            bytes.readings += summary.readings as u64;
            bytes.batches += summary.batches;
            bytes.billing_bytes += summary.billing_bytes;
            bytes.analytics_bytes += summary.analytics_bytes;
            home_report(plan, home, summary, released, refused)
        })
        .collect();
    RunReport {
        period: plan.period.to_string(),
        tariff: plan.tariff.name().to_owned(),
        slab_labels,
        homes,
        bytes,
        groups: groups.iter().copied().collect(),
        homes_per_group: layout.capacity() as u64,
        group_totals,
        phases,
        servers: Vec::new(),
        workdir: workdir.display().to_string(),
    }
}

fn home_report(
    plan: &Plan,
    home: &Home,
    summary: &RunSummary,
    released: &[serde_json::Value],
    refused: &[serde_json::Value],
) -> HomeReport {
    let plaintext_paise = home.plaintext.total().get();
    let plaintext_wh_per_slab: Vec<i64> = (0..plan.tariff.slab_count())
        .map(|s| home.plaintext.cells().slab_total(s).get())
        .collect();
    let bill = released
        .iter()
        .find(|b| b["meter_id"].as_str() == Some(home.meter_id.as_str()));
    let released_paise = bill.and_then(|b| b["amount_paise"].as_i64());
    // Energy per slab, when the release reports it (`kwh_per_slab: [{label, wh}]`).
    let released_wh_per_slab = bill.and_then(|b| {
        b["kwh_per_slab"]
            .as_array()?
            .iter()
            .map(|s| s["wh"].as_i64())
            .collect::<Option<Vec<_>>>()
    });
    let refused = refused
        .iter()
        .find(|r| r["meter_id"].as_str() == Some(home.meter_id.as_str()))
        .map(|r| r["reason"].as_str().unwrap_or("no reason given").to_owned());
    let difference_paise = released_paise.map(|r| r - plaintext_paise);
    HomeReport {
        index: home.index,
        meter_id: home.meter_id.clone(),
        label: home.label(plan.period),
        source: home.spec.to_string(),
        replay_as: home.replay_as.map(|m| m.to_string()),
        readings: summary.readings,
        skipped_intervals: summary.skipped_intervals,
        batches: summary.batches,
        billing_bytes: summary.billing_bytes,
        analytics_bytes: summary.analytics_bytes,
        plaintext_paise,
        slabs_match: released_wh_per_slab
            .as_ref()
            .map(|r| *r == plaintext_wh_per_slab),
        plaintext_wh_per_slab,
        released_paise,
        released_wh_per_slab,
        refused,
        difference_paise,
        matches: difference_paise.is_some_and(|d| (d as f64).abs() <= TOLERANCE_PAISE),
    }
}

/// Runs one meter client per home, `jobs` at a time, each told the size of its noise group
/// (`noise_groups`, per home: the homes of its billing group in this run, a tenth of them
/// tolerated absent or colluding); returns their summaries in home order.
#[expect(
    clippy::too_many_arguments,
    reason = "one call site; the pieces of the meters' command lines"
)]
async fn run_meters(
    options: &RunOptions,
    binaries: &Binaries,
    workdir: &Path,
    plan: &Plan,
    envs: &[MeterEnv],
    noise_groups: &[u32],
    ka_url: &str,
    utility_url: &str,
) -> Result<Vec<RunSummary>> {
    let permits = Arc::new(tokio::sync::Semaphore::new(options.jobs));
    let mut tasks = tokio::task::JoinSet::new();
    for ((home, env), &group_size) in plan.homes.iter().zip(envs).zip(noise_groups) {
        let mut args: Vec<String> = vec![
            "run".into(),
            "--meter-id".into(),
            home.meter_id.clone(),
            "--source".into(),
            home.spec.to_string(),
            "--key-authority".into(),
            ka_url.to_owned(),
            "--utility".into(),
            utility_url.to_owned(),
            "--state".into(),
            meter_state(workdir, &home.meter_id).display().to_string(),
            "--home-index".into(),
            home.index.to_string(),
            "--noise-group-size".into(),
            group_size.to_string(),
            "--noise-tolerated".into(),
            (group_size / 10).to_string(),
            "--json".into(),
        ];
        if let Some(from) = home.range.from {
            args.extend(["--from".into(), from.to_string()]);
        }
        if let Some(until) = home.range.until {
            args.extend(["--until".into(), until.to_string()]);
        }
        if let Some(target) = home.replay_as {
            args.extend(["--replay-as".into(), target.to_string()]);
        }
        if let Some(days) = options.batch_days {
            args.extend(["--batch-days".into(), days.to_string()]);
        }
        if let Some(speed) = options.replay_speed {
            args.extend(["--replay-speed".into(), speed.to_string()]);
        }
        let meter = MeterJob {
            path: binaries.path("meter-client"),
            args,
            env: env.clone(),
            meter_id: home.meter_id.clone(),
            log: workdir.join("logs").join(format!("{}.log", home.meter_id)),
        };
        let permits = Arc::clone(&permits);
        let index = home.index;
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await?;
            meter.run().await.map(|s| (index, s))
        });
    }
    let mut summaries = Vec::with_capacity(plan.homes.len());
    let mut first_error = None;
    while let Some(joined) = tasks.join_next().await {
        match joined.map_err(anyhow::Error::from).and_then(|r| r) {
            Ok(done) => summaries.push(done),
            Err(e) => {
                if first_error.is_none() {
                    first_error = Some(e);
                    // One failed meter fails the run: stop the others.
                    tasks.abort_all();
                }
            }
        }
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    summaries.sort_by_key(|(index, _)| *index);
    Ok(summaries.into_iter().map(|(_, s)| s).collect())
}

/// A meter's state directory.
fn meter_state(workdir: &Path, meter_id: &str) -> PathBuf {
    workdir.join("meters").join(meter_id)
}

/// Enrols `meter_id` as an operator and a household do: a one-time code from
/// `key-authority enrolment-code`, then `meter-client enrol` (which creates the device key
/// in the meter's state directory and stores the key authority's certificate there).
async fn enrol_meter(
    binaries: &Binaries,
    ka_env: &[(String, String)],
    ka_url: &str,
    workdir: &Path,
    meter_id: &str,
    meter_env: &[(String, String)],
) -> Result<()> {
    let code = output(
        binaries,
        "key-authority",
        &["enrolment-code", "--meter-id", meter_id],
        ka_env,
    )
    .await?;
    let state = meter_state(workdir, meter_id).display().to_string();
    output(
        binaries,
        "meter-client",
        &[
            "enrol",
            "--meter-id",
            meter_id,
            "--code",
            code.trim(),
            "--key-authority",
            ka_url,
            "--state",
            &state,
        ],
        meter_env,
    )
    .await?;
    Ok(())
}

/// A meter's environment: its certificate and the key pins (`run_tls`).
type MeterEnv = Vec<(String, String)>;

/// One `meter-client run`.
struct MeterJob {
    path: PathBuf,
    args: Vec<String>,
    /// Its certificate and key pins (mutual TLS, see `run_tls`).
    env: Vec<(String, String)>,
    meter_id: String,
    log: PathBuf,
}

impl MeterJob {
    async fn run(self) -> Result<RunSummary> {
        progress(format!("[{}] meter client started", self.meter_id));
        let mut child = Command::new(&self.path)
            .args(&self.args)
            .env_remove("SEER_METER_TOKEN")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", self.path.display()))?;
        let stdout = child.stdout.take().context("stdout is piped")?;
        let stderr = child.stderr.take().context("stderr is piped")?;
        // Progress on stderr: every line to the meter's log, batch lines relayed.
        let meter_id = self.meter_id.clone();
        let log_path = self.log.clone();
        let relay = tokio::spawn(async move {
            let mut log = tokio::fs::File::create(&log_path).await.ok();
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(log) = log.as_mut() {
                    let _ = log.write_all(format!("{line}\n").as_bytes()).await;
                }
                if line.starts_with("queued batch")
                    || line.starts_with("sent batch")
                    || line.starts_with("retrying")
                    || line.starts_with("source:")
                {
                    progress(format!("[{meter_id}] {line}"));
                }
            }
            if let Some(mut log) = log {
                let _ = log.flush().await;
            }
        });
        let mut out = String::new();
        let mut lines = BufReader::new(stdout).lines();
        while let Some(line) = lines.next_line().await? {
            out.push_str(&line);
            out.push('\n');
        }
        let status = child.wait().await?;
        let _ = relay.await;
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
        progress(format!(
            "[{}] done: {} readings in {} batches, {} acknowledged, {} receipts recorded",
            self.meter_id,
            summary.readings,
            summary.batches,
            summary.acknowledged,
            summary.receipts
        ));
        Ok(summary)
    }
}
