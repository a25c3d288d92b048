//! `seer fleet` end to end on PostgreSQL: 3 utility ingest replicas, 3 job workers and 2 key
//! authorities (one key directory, one audit chain) bill 24 synthetic homes in 2 billing
//! groups of 12 for a month, while the workers are SIGKILLed at random (during the ingest and
//! the billing jobs, and each job's worker once mid-run) and restarted.
//!
//! Checked independently of the command's own checks, straight from the two databases it
//! leaves in place (`--keep-databases`; dropped at the end): every home has exactly one bill
//! for the month, equal to the plaintext tariff of the same synthetic readings computed here
//! (the meter's generator, its Wh register, seer-core's exact tariff); the audit log holds
//! exactly one granted `bill` entry per home and month; no job is lost (every billing job
//! `done`, one per group); the audit chain's stored hashes recompute from its rows with the
//! shared definition (`seer_auth::audit_chain`) and link without gaps. After the bills, a
//! day of the daily lane (`--daily-model`, the chaos still on): every home's 24 released
//! forecast hours and its anomaly score are within one quantum (0.001) of the plaintext model
//! on the same readings (`DailyModel::prepare` → `evaluate_plain` → `release`, computed
//! here), stored once, with one granted `daily` audit entry per home and every daily job
//! `done`.
//!
//! Needs PostgreSQL at `SEER_TEST_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432`)
//! and the binaries built (`cargo build --release -p seer -p key-authority -p utility-server
//! -p meter-client`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use chrono::{NaiveDate, TimeDelta};
use meter_client::synthetic::SyntheticHome;
use seer_core::tariff::{Tariff, WhRegister};
use seer_daily::DailyModel;
use seer_daily::history::HomeHistory;
use seer_daily::release::{DailyRelease, QUANTUM};
use seer_tests::bin_path;
use serde_json::Value;
use sqlx::Row as _;

const HOMES: u32 = 24;
const GROUP_SIZE: u32 = 12;
const SEED: u64 = 11;
const PERIOD: &str = "2024-03";
/// The daily lane's day (its forecasts are of the next day).
const DAY: &str = "2024-03-31";

fn server_url() -> String {
    std::env::var("SEER_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned())
}

/// The plaintext bill of synthetic home `home` for March 2024, paise.
fn plaintext_paise(home: u32) -> i64 {
    let first = NaiveDate::from_ymd_opt(2024, 3, 1).expect("a date");
    let until = NaiveDate::from_ymd_opt(2024, 4, 1).expect("a date");
    let mut register = WhRegister::new();
    Tariff::bescom()
        .bill(
            SyntheticHome::new(SEED, home)
                .readings(first, until)
                .iter()
                .map(|r| (r.start, register.advance(r.energy))),
        )
        .expect("a bill")
        .total()
        .get()
}

fn daily_model_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../daily/models/uci-daily.json")
}

/// The plaintext twin of synthetic home `home`'s daily release for [`DAY`]: the model on the
/// day and the 28 days before it, read from the meter's generator.
fn daily_twin(model: &DailyModel, home: u32) -> DailyRelease {
    let day: NaiveDate = DAY.parse().expect("a date");
    let mut history = HomeHistory::new();
    for r in
        SyntheticHome::new(SEED, home).readings(day - TimeDelta::days(28), day + TimeDelta::days(1))
    {
        history
            .add(r.start, 15, r.energy.to_kwh().get())
            .expect("a valid reading");
    }
    let input = model
        .prepare(&history, day)
        .expect("the model prepares the day");
    model
        .release(day, &model.evaluate_plain(&input))
        .expect("a plausible release")
}

/// Rows of (meter id, thousandths) as each meter's values, in row order.
fn per_meter(rows: &[sqlx::postgres::PgRow]) -> BTreeMap<String, Vec<f64>> {
    let mut values: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for row in rows {
        values
            .entry(row.get(0))
            .or_default()
            .push(row.get::<i64, _>(1) as f64 / 1000.0);
    }
    values
}

/// Drops the fleet's databases when the test ends, passed or failed.
struct DropDatabases(Vec<String>);

impl Drop for DropDatabases {
    fn drop(&mut self) {
        let names = std::mem::take(&mut self.0);
        // A runtime of its own on a thread of its own: this may run while the test's
        // runtime unwinds.
        let _ = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async {
                let Ok(pool) = sqlx::PgPool::connect(&format!("{}/postgres", server_url())).await
                else {
                    return;
                };
                for name in names {
                    // The names come from the command's report (its own prefix, a time and a
                    // process id).
                    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
                    )))
                    .execute(&pool)
                    .await;
                }
                pool.close().await;
            });
        })
        .join();
    }
}

fn hex32(text: &str) -> [u8; 32] {
    let bytes = hex_decode(text);
    bytes.try_into().expect("32 bytes")
}

fn hex_decode(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex"))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fleet_bills_every_home_once_while_workers_are_killed() {
    let work = tempfile::tempdir().expect("a work directory");
    let output = Command::new(bin_path("seer").expect("the seer binary"))
        .args(["fleet", "--json", "--keep-databases"])
        .args(["--homes", &HOMES.to_string()])
        .args(["--group-size", &GROUP_SIZE.to_string()])
        .args([
            "--replicas",
            "3",
            "--workers",
            "3",
            "--key-authorities",
            "2",
        ])
        .args(["--concurrency", "4", "--period", PERIOD])
        .args(["--seed", &SEED.to_string()])
        .args(["--kill-workers-every", "0.7", "--lease-seconds", "3"])
        .args(["--database-url", &server_url()])
        .arg("--daily-model")
        .arg(daily_model_path())
        .args(["--daily-day", DAY])
        .arg("--work-dir")
        .arg(work.path().join("fleet"))
        .output()
        .expect("seer fleet runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let report: Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("seer fleet printed no JSON report ({e}); stderr:\n{stderr}"));
    let utility_db = report["utility_database"]
        .as_str()
        .expect("named")
        .to_owned();
    let audit_db = report["audit_database"].as_str().expect("named").to_owned();
    let _cleanup = DropDatabases(vec![utility_db.clone(), audit_db.clone()]);
    assert!(
        output.status.success(),
        "seer fleet failed: {:?}\n{stderr}",
        report["problems"]
    );
    assert!(
        report["worker_kills_mid_job"].as_u64().unwrap_or(0) >= 1,
        "no worker was killed during a job: {stderr}"
    );

    // The utility's bills: one per home, each its plaintext tariff.
    let utility = sqlx::PgPool::connect(&format!("{}/{utility_db}", server_url()))
        .await
        .expect("the utility database");
    let rows = sqlx::query("SELECT meter_id, period, amount_paise FROM bills")
        .fetch_all(&utility)
        .await
        .expect("bills");
    let mut bills: BTreeMap<String, Vec<(String, i64)>> = BTreeMap::new();
    for row in &rows {
        bills
            .entry(row.get::<String, _>(0))
            .or_default()
            .push((row.get(1), row.get(2)));
    }
    assert_eq!(bills.len(), HOMES as usize, "homes with a bill: {bills:?}");
    for home in 0..HOMES {
        let meter = format!("F-{home:05}");
        let released = bills
            .get(&meter)
            .unwrap_or_else(|| panic!("{meter}: no bill"));
        assert_eq!(released.len(), 1, "{meter}: {released:?}");
        let (period, amount) = &released[0];
        assert_eq!(period, PERIOD);
        assert_eq!(*amount, plaintext_paise(home), "{meter}'s bill");
    }
    // No job lost: one billing job and one daily job per group, all done.
    let jobs = sqlx::query("SELECT job_key, kind, state, attempts FROM jobs")
        .fetch_all(&utility)
        .await
        .expect("jobs");
    for kind in ["bill", "daily"] {
        let of_kind: Vec<(String, String)> = jobs
            .iter()
            .filter(|r| r.get::<String, _>(1) == kind)
            .map(|r| (r.get(0), r.get(2)))
            .collect();
        assert_eq!(
            of_kind.len(),
            (HOMES / GROUP_SIZE) as usize,
            "one {kind} job per group: {of_kind:?}"
        );
        assert!(
            of_kind.iter().all(|(_, state)| state == "done"),
            "{of_kind:?}"
        );
    }
    // A job whose worker was killed mid-run was finished by a later attempt.
    let retried = jobs
        .iter()
        .filter(|r| r.get::<String, _>(1) == "bill" && r.get::<i64, _>(3) >= 2)
        .count();
    assert!(retried >= 1, "no billing job needed a second attempt");

    // The daily lane: each home's released hours and score against the plaintext model.
    let model = DailyModel::from_json(
        &std::fs::read_to_string(daily_model_path()).expect("the daily model"),
    )
    .expect("a valid model");
    let forecasts = sqlx::query(
        "SELECT meter_id, kwh_milli FROM daily_forecasts WHERE input_day = $1 \
         ORDER BY meter_id, hour",
    )
    .bind(DAY)
    .fetch_all(&utility)
    .await
    .expect("daily forecasts");
    let hours = per_meter(&forecasts);
    let anomalies = sqlx::query("SELECT meter_id, score_milli FROM daily_anomalies WHERE day = $1")
        .bind(DAY)
        .fetch_all(&utility)
        .await
        .expect("daily anomalies");
    let scores = per_meter(&anomalies);
    assert_eq!(
        hours.len(),
        HOMES as usize,
        "homes with forecasts: {hours:?}"
    );
    assert_eq!(
        scores.len(),
        HOMES as usize,
        "homes with scores: {scores:?}"
    );
    for home in 0..HOMES {
        let meter = format!("F-{home:05}");
        let twin = daily_twin(&model, home);
        let expected = twin.forecast.expect("the plaintext model forecasts");
        let released = &hours[&meter];
        assert_eq!(released.len(), 24, "{meter}: {released:?}");
        for (hour, (r, e)) in released.iter().zip(&expected).enumerate() {
            assert!(
                (r - e).abs() <= QUANTUM + 1e-9,
                "{meter} hour {hour}: released {r}, plaintext {e}"
            );
        }
        let score = twin.anomaly.expect("the plaintext model scores").score;
        let released = &scores[&meter];
        assert_eq!(released.len(), 1, "{meter}: {released:?}");
        assert!(
            (released[0] - score).abs() <= QUANTUM + 1e-9,
            "{meter}: released score {}, plaintext {score}",
            released[0]
        );
    }
    utility.close().await;

    // The audit log: one granted bill per home, and the chain recomputes and links.
    let audit = sqlx::PgPool::connect(&format!("{}/{audit_db}", server_url()))
        .await
        .expect("the audit database");
    let entries = sqlx::query(
        "SELECT seq, recorded_at_us, caller_subject, caller_role, request_kind, meter_id, \
         period, input_digest, decision, reason, prev_hash, entry_hash FROM audit_entries \
         ORDER BY seq",
    )
    .fetch_all(&audit)
    .await
    .expect("audit entries");
    audit.close().await;
    let mut grants: BTreeMap<String, usize> = BTreeMap::new();
    let mut daily_grants: BTreeMap<String, usize> = BTreeMap::new();
    let mut previous = [0_u8; 32];
    for (i, row) in entries.iter().enumerate() {
        let seq: i64 = row.get(0);
        assert_eq!(seq, i as i64 + 1, "sequences run 1, 2, ... without gaps");
        let subject: Option<String> = row.get(2);
        let role: Option<String> = row.get(3);
        let kind: String = row.get(4);
        let meter: Option<String> = row.get(5);
        let period: Option<String> = row.get(6);
        let digest: Option<String> = row.get(7);
        let decision: String = row.get(8);
        let reason: Option<String> = row.get(9);
        let prev = hex32(&row.get::<String, _>(10));
        assert_eq!(prev, previous, "entry {seq} names its predecessor's hash");
        let digest = digest.as_deref().map(hex32);
        let fields = seer_auth::audit_chain::EntryFields {
            sequence: seq as u64,
            recorded_at_micros: row.get(1),
            caller: subject.as_deref().zip(role.as_deref()),
            kind: &kind,
            meter_id: meter.as_deref(),
            period: period.as_deref(),
            input_digest: digest.as_ref(),
            refusal: if decision == "granted" {
                None
            } else {
                Some(reason.as_deref().unwrap_or_default())
            },
            previous_hash: &prev,
        };
        let hash = hex32(&row.get::<String, _>(11));
        assert_eq!(fields.hash(), hash, "entry {seq}'s hash recomputes");
        previous = hash;
        if kind == "bill" && decision == "granted" && period.as_deref() == Some(PERIOD) {
            *grants
                .entry(meter.clone().expect("a bill names its meter"))
                .or_default() += 1;
        }
        // A daily grant names the days it released, FIRST..LAST: here the one day.
        if kind == "daily" && decision == "granted" && period == Some(format!("{DAY}..{DAY}")) {
            *daily_grants
                .entry(meter.expect("a daily release names its meter"))
                .or_default() += 1;
        }
    }
    assert_eq!(grants.len(), HOMES as usize, "{grants:?}");
    assert!(grants.values().all(|&n| n == 1), "{grants:?}");
    assert_eq!(daily_grants.len(), HOMES as usize, "{daily_grants:?}");
    assert!(daily_grants.values().all(|&n| n == 1), "{daily_grants:?}");
}
