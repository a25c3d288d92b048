//! The utility server killed with SIGKILL again and again while two meters upload, and
//! restarted each time on the same port and the same SQLite file. The meters retry until they
//! are done; then what the crashed deployment stored (every batch's sequence, period, interval
//! and packing slot, and each meter's cursor) and the bills it obtains must be identical to an
//! uninterrupted reference deployment's, and the bills equal to the plaintext tariff.
//!
//! The kills come at random moments (a seeded generator; the seed is printed, and
//! `SEER_CRASH_SEED=N` replays it): after a random number of new batches was acknowledged since
//! the last restart, plus a random delay. How much was stored at each kill is read from the
//! SQLite file while the server is dead, so that "the kill landed during ingest" is a fact,
//! not a guess.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::Path;
use std::process::{Child, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use chrono::NaiveDate;
use seer_core::data::Period;
use seer_core::tariff::Tariff;
use seer_tests::oracle::{monthly_bills, readings};
use seer_tests::rng::SplitMix64;
use seer_tests::{Deployment, DeploymentOptions, free_port, runtime};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};

/// Two homes of one packing group (a synthetic source's home index is its HOME).
const HOMES: [(&str, &str); 2] = [("CR-0000", "synthetic:23:0"), ("CR-0001", "synthetic:23:1")];
const FROM: &str = "2024-01-01";
const UNTIL: &str = "2024-03-01";
const PERIODS: [&str; 2] = ["2024-01", "2024-02"];
/// Daily batches: 31 + 29 per home.
const BATCHES_PER_HOME: i64 = 60;
/// At least this many kills must land while batches are still missing from the store.
const MIN_KILLS_DURING_INGEST: usize = 10;
/// No more kills than this (the test's length stays bounded).
const MAX_KILLS: usize = 24;

/// One stored batch, without its ciphertexts (fresh randomness in every run) and digests.
type BatchRow = (String, i64, String, i64, i64, i64, i64, i64, i64);

/// What a utility server's SQLite store holds.
#[derive(Debug, PartialEq, Eq)]
struct Stored {
    batches: Vec<BatchRow>,
    cursors: Vec<(String, i64)>,
}

impl Stored {
    /// Reads the store read-only (safe while the server is dead or alive).
    fn read(runtime: &tokio::runtime::Runtime, file: &Path) -> Self {
        runtime.block_on(async {
            let options = SqliteConnectOptions::new()
                .filename(file)
                .read_only(true)
                .busy_timeout(Duration::from_secs(30));
            let pool = SqlitePoolOptions::new()
                .max_connections(1)
                .connect_with(options)
                .await
                .expect("open the utility's store read-only");
            let batches = sqlx::query_as(
                "SELECT meter_id, sequence, period, start_us, end_us, utc_offset_s, readings, \
                 billing_group, billing_position FROM batches ORDER BY meter_id, sequence",
            )
            .fetch_all(&pool)
            .await
            .expect("read the batches");
            let cursors =
                sqlx::query_as("SELECT meter_id, last_sequence FROM meters ORDER BY meter_id")
                    .fetch_all(&pool)
                    .await
                    .expect("read the cursors");
            pool.close().await;
            Self { batches, cursors }
        })
    }

    fn count(&self) -> usize {
        self.batches.len()
    }
}

/// Starts both meters, their stderr in files of the deployment's directory.
fn start_meters(deployment: &Deployment, extra: &[&str]) -> Vec<(String, Child)> {
    HOMES
        .iter()
        .map(|(meter, source)| {
            let token = deployment
                .token("household", Some(meter))
                .expect("household token");
            let log = File::create(deployment.dir().join(format!("{meter}.stderr")))
                .expect("meter log file");
            let child = deployment
                .meter(meter, source)
                .token(&token)
                .args(["--from", FROM, "--until", UNTIL, "--batch-days", "1"])
                .args(extra.iter().copied())
                .command()
                .expect("meter-client is built")
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("meter-client starts");
            ((*meter).to_owned(), child)
        })
        .collect()
}

/// What the meters' progress lines (stderr) tell about their run.
#[derive(Debug, Default)]
struct MeterLogs {
    /// Batches the server acknowledged as already stored: stored, but the acknowledgement died
    /// with the server, so sent again.
    duplicates: usize,
    /// Reconnection attempts.
    retries: usize,
    /// Of those, after an upload stream that was open broke (the others: no server to connect
    /// to yet).
    broken_streams: usize,
}

/// Waits for the meters and requires success; what their logs say.
fn check_meters_succeeded(deployment: &Deployment, meters: Vec<(String, Child)>) -> MeterLogs {
    let mut logs = MeterLogs::default();
    for (meter, mut child) in meters {
        let status = child.wait().expect("meter-client runs");
        let log = std::fs::read_to_string(deployment.dir().join(format!("{meter}.stderr")))
            .unwrap_or_default();
        assert!(status.success(), "meter {meter} failed ({status}):\n{log}");
        logs.duplicates += log.matches("server had it already").count();
        for line in log.lines().filter(|l| l.contains("retrying in")) {
            logs.retries += 1;
            if line.contains("Upload failed") {
                logs.broken_streams += 1;
            }
        }
    }
    logs
}

/// Bills both periods; (meter, period) → paise, each checked to be released.
fn bills(deployment: &Deployment) -> BTreeMap<(String, String), i64> {
    let token = deployment.token("utility", None).expect("utility token");
    let mut out = BTreeMap::new();
    for period in PERIODS {
        let report = deployment.bill(period, 0, &token).expect("bill");
        assert_eq!(
            report["refused"].as_array().map(Vec::len),
            Some(0),
            "{report}"
        );
        for bill in report["released"].as_array().expect("released") {
            out.insert(
                (
                    bill["meter_id"].as_str().expect("meter").to_owned(),
                    period.to_owned(),
                ),
                bill["amount_paise"].as_i64().expect("paise"),
            );
        }
    }
    out
}

/// The plaintext tariff's bills of both homes.
fn oracle() -> BTreeMap<(String, String), i64> {
    let from = NaiveDate::parse_from_str(FROM, "%Y-%m-%d").ok();
    let until = NaiveDate::parse_from_str(UNTIL, "%Y-%m-%d").ok();
    let mut out = BTreeMap::new();
    for (meter, source) in HOMES {
        let stream = readings(source, from, until).expect("readings");
        let bills = monthly_bills(&Tariff::bescom(), stream.readings()).expect("bills");
        for period in PERIODS {
            let month: Period = period.parse().expect("month");
            out.insert((meter.to_owned(), period.to_owned()), bills[&month].paise);
        }
    }
    out
}

/// One kill of the utility server.
#[derive(Debug)]
struct Kill {
    /// Batches in the store when it died.
    stored: usize,
    /// Meter clients still running when it died.
    meters_running: usize,
}

#[test]
fn sigkills_of_the_utility_server_during_ingest_lose_and_duplicate_nothing() {
    let runtime = runtime().expect("runtime");
    let started = Instant::now();
    let total = BATCHES_PER_HOME as usize * HOMES.len();

    // The reference: the same meters, never interrupted.
    let reference = Deployment::start(&DeploymentOptions::default()).expect("reference starts");
    let meters = start_meters(&reference, &["--max-attempts", "10"]);
    let logs = check_meters_succeeded(&reference, meters);
    assert_eq!(logs.duplicates, 0, "nothing is resent without a crash");
    let reference_stored = Stored::read(
        &runtime,
        &reference.utility_sqlite_file().expect("a SQLite store"),
    );
    assert_eq!(reference_stored.count(), total);
    let reference_bills = bills(&reference);
    drop(reference);
    let reference_time = started.elapsed();

    // The crashed deployment: a fixed port, so the meters find the server again.
    let crashed = Instant::now();
    let seed = SplitMix64::seed_from_env("SEER_CRASH_SEED");
    let mut rng = SplitMix64::new(seed);
    let port = free_port().expect("a free port");
    let mut deployment = Deployment::start(&DeploymentOptions {
        utility_port: Some(port),
        ..DeploymentOptions::default()
    })
    .expect("deployment starts");
    let store = deployment.utility_sqlite_file().expect("a SQLite store");
    let utility = deployment.token("utility", None).expect("utility token");
    // Two days of readings per second: about 30 s of batches per meter, uploaded as they come.
    // At most two batches queued per meter, so no backlog builds up while the server is down
    // (however slow its restart) to rush past the next kill; enough retries to outlast every
    // outage.
    let mut meters = start_meters(
        &deployment,
        &[
            "--replay-speed",
            "172800",
            "--max-queued",
            "2",
            "--max-attempts",
            "60",
        ],
    );

    let mut kills: Vec<Kill> = Vec::new();
    let mut restarts = Duration::ZERO;
    let mut baseline = 0_u64;
    let mut wait_for = rng.in_range(2, 6);
    loop {
        let running = meters
            .iter_mut()
            .filter_map(|(_, child)| {
                child
                    .try_wait()
                    .expect("poll the meter")
                    .is_none()
                    .then_some(())
            })
            .count();
        if running == 0 {
            break;
        }
        if kills.len() < MAX_KILLS {
            let acknowledged: Result<u64, _> = HOMES
                .iter()
                .map(|(meter, _)| runtime.block_on(deployment.cursor(meter, &utility)))
                .sum();
            if let Ok(acknowledged) = acknowledged
                && acknowledged >= baseline + wait_for
            {
                // A random moment, not just the instant an acknowledgement was seen.
                thread::sleep(Duration::from_millis(rng.in_range(0, 100)));
                deployment.utility_mut().kill().expect("SIGKILL");
                let at_kill = Stored::read(&runtime, &store);
                kills.push(Kill {
                    stored: at_kill.count(),
                    meters_running: running,
                });
                eprintln!(
                    "kill {}: {} of {total} batches stored, {running} meters running",
                    kills.len(),
                    at_kill.count()
                );
                thread::sleep(Duration::from_millis(rng.in_range(0, 400)));
                let restart = Instant::now();
                deployment
                    .restart_utility()
                    .expect("the utility server restarts on its store");
                restarts += restart.elapsed();
                assert_eq!(deployment.utility().address().port(), port);
                baseline = at_kill.count() as u64;
                wait_for = rng.in_range(2, 6);
            }
        }
        thread::sleep(Duration::from_millis(20));
    }
    let logs = check_meters_succeeded(&deployment, meters);
    let ingest = crashed.elapsed();

    let during_ingest = kills
        .iter()
        .filter(|k| k.stored < total && k.meters_running > 0)
        .count();
    eprintln!(
        "seed {seed}: {} kills, {during_ingest} with batches still missing from the store \
         (stored at each kill: {:?}; restarts took {:.2?} on average); the meters reconnected \
         {} times, {} of them after an open upload stream broke, and were told {} times that a \
         resent batch was already stored",
        kills.len(),
        kills.iter().map(|k| k.stored).collect::<Vec<_>>(),
        restarts / u32::try_from(kills.len().max(1)).unwrap_or(1),
        logs.retries,
        logs.broken_streams,
        logs.duplicates
    );
    assert!(
        during_ingest >= MIN_KILLS_DURING_INGEST,
        "only {during_ingest} of {} kills landed during ingest (seed {seed})",
        kills.len()
    );

    // Everything arrived exactly once: the same rows and cursors as the reference.
    let stored = Stored::read(&runtime, &store);
    assert_eq!(
        stored.cursors,
        HOMES
            .iter()
            .map(|(meter, _)| ((*meter).to_owned(), BATCHES_PER_HOME))
            .collect::<Vec<_>>()
    );
    assert_eq!(stored, reference_stored, "seed {seed}");
    for (meter, _) in HOMES {
        assert_eq!(
            runtime
                .block_on(deployment.cursor(meter, &utility))
                .expect("cursor"),
            BATCHES_PER_HOME as u64
        );
    }

    // And the bills: released, identical to the reference's and to the plaintext tariff.
    let crashed_bills = bills(&deployment);
    assert_eq!(crashed_bills, reference_bills, "seed {seed}");
    assert_eq!(crashed_bills, oracle(), "seed {seed}");
    eprintln!(
        "bills {crashed_bills:?}; reference run {reference_time:.1?}, crashed ingest \
         {ingest:.1?}, total {:.1?}",
        started.elapsed()
    );
}
