//! The daily lane end to end, across separate processes: a fleet of homes (100 by default,
//! `SEER_DAILY_HOMES` to change it) streams a week of daily uploads — each home one `N4096`
//! ciphertext per day holding its day-ahead forecast inputs and its anomaly features — to the
//! utility server (`meter-client daily`, real gRPC, each meter enrolled with its own device
//! key); the utility's `daily` job packs them four homes per ciphertext, evaluates the
//! registered circuit and asks the key authority, which re-executes it byte for byte and
//! releases every home-day's forecast of the next day and anomaly score.
//!
//! Checked against independent oracles: every released value equals the plaintext model
//! (`DailyModel::prepare` → `evaluate_plain` → `release`) on the same readings, every home-day
//! is released exactly once (a second job run releases nothing), the audit log holds one grant
//! per home-day, and anomalies of each kind injected into some homes' days are flagged, with an
//! explanation naming hours. After the homes, the job asks for each billing group's forecast
//! total (`Analytics.ReleaseGroupForecast`): each released total is exactly the sum of its
//! homes' released hours and within one 0.001 kWh quantum per home of the sum of their
//! plaintext twins; a rerun asks for and releases nothing new (one grant per group-day).
//!
//! `SEER_DAILY_HOMES=1000 cargo test --release -p seer-tests --test daily_fleet -- --nocapture`
//! is the measured fleet run of BENCHMARKS.md ("Daily lane: a fleet run").

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use chrono::{NaiveDate, TimeDelta};
use meter_client::synthetic::SyntheticHome;
use rand::SeedableRng;
use rand::rngs::StdRng;
use seer_anomaly::inject::{AnomalyKind, inject_day};
use seer_daily::DailyModel;
use seer_daily::history::HomeHistory;
use seer_tests::audit::{audit_entries, grants};
use seer_tests::{Deployment, DeploymentOptions, bin_path};
use serde_json::Value;

const SEED: u64 = 23;
/// The first day of history.
const FIRST: (i32, u32, u32) = (2024, 1, 1);
/// The streamed week: its first day (after four weeks of history).
const WEEK: (i32, u32, u32) = (2024, 1, 29);
const DAYS: i64 = 7;
/// Homes per billing group (the daily lane's group, whose forecast total the key authority
/// releases): 100 homes make two full groups and one of 2, below the floor of 3.
const GROUP_SIZE: u32 = 49;

fn date((y, m, d): (i32, u32, u32)) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).expect("a valid date")
}

fn homes() -> u32 {
    std::env::var("SEER_DAILY_HOMES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100)
}

fn model_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../daily/models/uci-daily.json")
}

/// The anomaly injected into `home`'s week, if any: every tenth home, the kinds in turn, on
/// a day of the week that moves with the home.
fn injected(home: u32) -> Option<(NaiveDate, AnomalyKind)> {
    (home % 10 == 3).then(|| {
        let kind = AnomalyKind::ALL[(home / 10) as usize % AnomalyKind::ALL.len()];
        let day = date(WEEK) + TimeDelta::days(2 + i64::from(home / 10) % (DAYS - 2));
        (day, kind)
    })
}

/// `home`'s quarter-hour readings (kWh) from the first day of history to the week's end, with
/// its injected anomaly applied.
fn readings(home: u32) -> BTreeMap<NaiveDate, Vec<f64>> {
    let synthetic = SyntheticHome::new(SEED, home);
    let last = date(WEEK) + TimeDelta::days(DAYS);
    let mut days = BTreeMap::new();
    let mut day = date(FIRST);
    while day < last {
        let values: Vec<f64> = (0..96)
            .map(|q| {
                let start =
                    day.and_hms_opt(0, 0, 0).expect("midnight") + TimeDelta::minutes(15 * q);
                synthetic.energy_at(start).get() as f64 / 1000.0
            })
            .collect();
        days.insert(day, values);
        day += TimeDelta::days(1);
    }
    if let Some((day, kind)) = injected(home) {
        let mut rng = StdRng::seed_from_u64(u64::from(home));
        let values = days.get_mut(&day).expect("the injected day");
        inject_day(values, kind, &mut rng);
        // Whole Wh, as a meter reads them.
        for v in values.iter_mut() {
            *v = (*v * 1000.0).round() / 1000.0;
        }
    }
    days
}

/// The readings as the `timestamp,kwh` file the meter reads.
fn write_csv(path: &Path, days: &BTreeMap<NaiveDate, Vec<f64>>) {
    let mut text = String::from("timestamp,kwh\n");
    for (day, values) in days {
        for (q, v) in values.iter().enumerate() {
            let start =
                day.and_hms_opt(0, 0, 0).expect("midnight") + TimeDelta::minutes(15 * q as i64);
            text.push_str(&format!("{},{v:.3}\n", start.format("%Y-%m-%dT%H:%M:%S")));
        }
    }
    std::fs::write(path, text).expect("writing the readings");
}

/// The plaintext oracle: what the key authority must release for `home` on `day`.
fn expected(
    model: &DailyModel,
    days: &BTreeMap<NaiveDate, Vec<f64>>,
    day: NaiveDate,
) -> seer_daily::release::DailyRelease {
    let mut history = HomeHistory::new();
    for (d, values) in days.range(..=day) {
        for (q, v) in values.iter().enumerate() {
            let start =
                d.and_hms_opt(0, 0, 0).expect("midnight") + TimeDelta::minutes(15 * q as i64);
            history.add(start, 15, *v).expect("a valid reading");
        }
    }
    let input = model
        .prepare(&history, day)
        .expect("the oracle prepares the day");
    let outputs = model.evaluate_plain(&input);
    model.release(day, &outputs).expect("a plausible release")
}

fn meter_daily(deployment: &Deployment, home: u32, csv: &Path) -> Value {
    let id = format!("home-{home:04}");
    let token = deployment.token("household", Some(&id)).expect("token");
    let state = deployment.dir().join(&id);
    deployment.enrol_into(&id, &state).expect("enrolled");
    let last = date(WEEK) + TimeDelta::days(DAYS - 1);
    let output = Command::new(bin_path("meter-client").expect("meter-client"))
        .args(["daily", "--meter-id", &id])
        .args(["--source", &format!("csv:{}", csv.display())])
        .args(["--home-index", &home.to_string()])
        .args(["--group-size", &GROUP_SIZE.to_string()])
        .args(["--from", &date(WEEK).to_string()])
        .args(["--through", &last.to_string()])
        .args(["--model", &model_path().display().to_string()])
        .args(["--utility", &deployment.utility().uri()])
        .args(["--key-authority", &deployment.authority().uri()])
        .args(["--state", &state.display().to_string()])
        .env("SEER_METER_TOKEN", token)
        .envs(deployment.meter_env(&id).expect("the meter's certificate"))
        .env("RUST_LOG", "warn")
        .output()
        .expect("meter-client runs");
    assert!(
        output.status.success(),
        "meter-client daily for {id}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "meter-client daily printed no JSON ({e}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

fn utility_json(deployment: &Deployment, args: &[&str], token: &str) -> Value {
    let output = deployment
        .utility_cli(args, token)
        .expect("utility-server runs");
    assert!(
        output.status.success(),
        "utility-server {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "utility-server {args:?} printed no JSON ({e}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fleet_streams_a_week_and_every_home_day_is_released_as_the_plaintext_model() {
    let homes = homes();
    let model_text = std::fs::read_to_string(model_path()).expect("the daily model");
    let model = DailyModel::from_json(&model_text).expect("a valid model");
    let model_arg = model_path().display().to_string();
    // The key authority registers the model by its absolute path (the default path is
    // relative to the repository root, and the test runs in tests/).
    let deployment = Deployment::start_with_authority_env(
        &DeploymentOptions::default(),
        &[(
            "SEER_KEY_AUTHORITY__ANALYTICS__DAILY_MODELS".to_owned(),
            format!("[{:?}]", model_arg),
        )],
    )
    .expect("the deployment starts");
    let utility = deployment.token("utility", None).expect("token");
    let key_cache = deployment.dir().join("key-cache").display().to_string();

    // The meters: readings, then one `meter-client daily` per home for the week.
    let started = Instant::now();
    let mut fleet = BTreeMap::new();
    let mut bytes = 0u64;
    let mut readings_sent = 0u64;
    for home in 0..homes {
        let days = readings(home);
        let csv = deployment.dir().join(format!("home-{home:04}.csv"));
        write_csv(&csv, &days);
        let summary = meter_daily(&deployment, home, &csv);
        let sent = summary["sent"].as_array().expect("sent days");
        assert_eq!(sent.len(), DAYS as usize, "home {home}: {summary}");
        for day in sent {
            bytes += day["bytes"].as_u64().expect("bytes");
            readings_sent += day["readings"].as_u64().expect("readings");
        }
        fleet.insert(home, days);
        if (home + 1) % 25 == 0 {
            eprintln!(
                "{} of {homes} homes streamed their week ({:.1} s)",
                home + 1,
                started.elapsed().as_secs_f64()
            );
        }
    }
    let meters_s = started.elapsed().as_secs_f64();

    // The utility's job: every home-day released, nothing refused.
    let started = Instant::now();
    let report = utility_json(
        &deployment,
        &[
            "daily",
            "--model",
            &model_arg,
            "--key-authority",
            &deployment.authority().uri(),
            "--key-cache",
            &key_cache,
        ],
        &utility,
    );
    let job_s = started.elapsed().as_secs_f64();
    let home_days = u64::from(homes) * DAYS as u64;
    // Groups of `GROUP_SIZE` homes (`home / GROUP_SIZE`, the meters' billing groups); a group
    // of at least three homes has its total released for each day, a smaller one (the partial
    // last group of a fleet of 100) is refused.
    let group_sizes: BTreeMap<u32, u32> = (0..homes).fold(BTreeMap::new(), |mut m, h| {
        *m.entry(h / GROUP_SIZE).or_default() += 1;
        m
    });
    let releasable = group_sizes.values().filter(|n| **n >= 3).count() as u64;
    assert_eq!(
        report["group_forecasts_released"].as_u64(),
        Some(releasable * DAYS as u64),
        "{report}"
    );
    assert_eq!(
        report["group_forecasts_refused"].as_array().map(Vec::len),
        Some((group_sizes.len() as u64 - releasable) as usize * DAYS as usize),
        "{report}"
    );
    assert_eq!(report["released"].as_u64(), Some(home_days), "{report}");
    assert_eq!(
        report["refused"].as_array().map(Vec::len),
        Some(0),
        "{report}"
    );
    assert_eq!(report["all_verified"].as_bool(), Some(true), "{report}");
    eprintln!(
        "fleet: {homes} homes × {DAYS} days; meters {meters_s:.1} s; job {job_s:.1} s; \
         uplink {:.0} B per reading; job report {report}",
        bytes as f64 / readings_sent as f64
    );

    // A second run releases nothing new.
    let again = utility_json(
        &deployment,
        &[
            "daily",
            "--model",
            &model_arg,
            "--key-authority",
            &deployment.authority().uri(),
            "--key-cache",
            &key_cache,
        ],
        &utility,
    );
    assert_eq!(again["released"].as_u64(), Some(0), "{again}");
    assert_eq!(
        again["group_forecasts_released"].as_u64(),
        Some(0),
        "{again}"
    );
    assert_eq!(
        again["group_forecasts_refused"].as_array().map(Vec::len),
        Some(0),
        "{again}"
    );

    // Every released value is the plaintext model's.
    let results = utility_json(&deployment, &["daily-results"], &utility);
    let forecasts = results["forecasts"].as_array().expect("forecasts");
    let anomalies = results["anomalies"].as_array().expect("anomalies");
    assert_eq!(
        forecasts.len() as u64,
        home_days * 24,
        "one forecast per hour"
    );
    assert_eq!(anomalies.len() as u64, home_days, "one score per home-day");
    let mut released_forecast: BTreeMap<(String, String), f64> = BTreeMap::new();
    for f in forecasts {
        released_forecast.insert(
            (
                f["meter_id"].as_str().expect("meter").to_owned(),
                f["hour"].as_str().expect("hour").to_owned(),
            ),
            f["kwh"].as_f64().expect("kwh"),
        );
    }
    let mut released_anomaly: BTreeMap<(String, String), &Value> = BTreeMap::new();
    for a in anomalies {
        released_anomaly.insert(
            (
                a["meter_id"].as_str().expect("meter").to_owned(),
                a["day"].as_str().expect("day").to_owned(),
            ),
            a,
        );
    }
    let mut worst = 0.0f64;
    // The plaintext twin's forecast per (meter, hour), for the group totals below.
    let mut twin_forecast: BTreeMap<(String, String), f64> = BTreeMap::new();
    let mut flagged_by_kind: BTreeMap<&str, (u32, u32)> = BTreeMap::new();
    let mut false_alarms = 0u32;
    for (home, days) in &fleet {
        let id = format!("home-{home:04}");
        for k in 0..DAYS {
            let day = date(WEEK) + TimeDelta::days(k);
            let want = expected(&model, days, day);
            let forecast = want
                .forecast
                .as_ref()
                .expect("four weeks of history: a forecast");
            for (h, kwh) in forecast.iter().enumerate() {
                let hour = format!("{}T{h:02}:00", day + TimeDelta::days(1));
                twin_forecast.insert((id.clone(), hour.clone()), *kwh);
                let got = released_forecast
                    .get(&(id.clone(), hour.clone()))
                    .unwrap_or_else(|| panic!("{id} {hour} released"));
                // Rounded to 0.001 on both sides: equal, or one quantum apart where the
                // encrypted value sits within CKKS's error of a rounding boundary.
                worst = worst.max((got - kwh).abs());
                assert!(
                    (got - kwh).abs() <= 0.001 + 1e-9,
                    "{id} {hour}: {got} vs {kwh}"
                );
            }
            let anomaly = want.anomaly.as_ref().expect("the day is complete: a score");
            let got = released_anomaly
                .get(&(id.clone(), day.to_string()))
                .unwrap_or_else(|| panic!("{id} {day} scored"));
            let score = got["score"].as_f64().expect("score");
            assert!(
                (score - anomaly.score).abs() <= 0.001 + 1e-9,
                "{id} {day}: {score} vs {}",
                anomaly.score
            );
            let flagged = got["flagged"].as_bool().expect("flag");
            if (anomaly.score - model.flag_threshold()).abs() > 0.002 {
                assert_eq!(flagged, anomaly.flagged, "{id} {day}");
            }
            match injected(*home) {
                Some((d, kind)) if d == day => {
                    let entry = flagged_by_kind.entry(kind.name()).or_default();
                    entry.1 += 1;
                    if flagged {
                        entry.0 += 1;
                        let explanation = got["explanation"]["features"]
                            .as_array()
                            .expect("a flagged day's explanation");
                        assert!(
                            !explanation.is_empty()
                                && explanation.iter().all(|e| {
                                    e["text"].as_str().is_some_and(|t| !t.is_empty())
                                        && !e["hours"].as_array().is_none_or(Vec::is_empty)
                                }),
                            "{id} {day}: a flagged day's explanation names hours: {got}"
                        );
                    }
                }
                _ => false_alarms += u32::from(flagged),
            }
        }
    }
    eprintln!(
        "largest |released − plaintext| {worst:.4} kWh; flagged/injected by kind \
         {flagged_by_kind:?}; false alarms {false_alarms} of {} clean home-days",
        home_days
            - flagged_by_kind
                .values()
                .map(|(_, n)| u64::from(*n))
                .sum::<u64>()
    );
    for kind in AnomalyKind::ALL {
        let (found, injected) = flagged_by_kind
            .get(kind.name())
            .copied()
            .unwrap_or_default();
        assert!(injected > 0, "the fleet injects {}", kind.name());
        assert!(found > 0, "no injected {} day was flagged", kind.name());
    }

    // Each group's released forecast total: exactly the sum of its homes' released hours,
    // and within one quantum per home of the sum of their plaintext twins.
    let group_rows = results["group_forecasts"]
        .as_array()
        .expect("group forecasts");
    assert_eq!(
        group_rows.len() as u64,
        releasable * DAYS as u64 * 24,
        "24 hours per released group-day"
    );
    let milli = |kwh: f64| (kwh * 1000.0).round() as i64;
    let mut worst_group = 0i64;
    for row in group_rows {
        let group = row["group"].as_u64().expect("group") as u32;
        let hour = row["hour"].as_str().expect("hour");
        let total = row["kwh_milli"].as_i64().expect("milli-kWh");
        let members: Vec<u32> = (0..homes).filter(|h| h / GROUP_SIZE == group).collect();
        assert_eq!(row["homes"].as_u64(), Some(members.len() as u64), "{row}");
        let released_sum: i64 = members
            .iter()
            .map(|h| {
                milli(
                    *released_forecast
                        .get(&(format!("home-{h:04}"), hour.to_owned()))
                        .unwrap_or_else(|| panic!("home {h} {hour} released")),
                )
            })
            .sum();
        assert_eq!(total, released_sum, "group {group} {hour}: {row}");
        let twin_sum: i64 = members
            .iter()
            .map(|h| milli(twin_forecast[&(format!("home-{h:04}"), hour.to_owned())]))
            .sum();
        worst_group = worst_group.max((total - twin_sum).abs());
        assert!(
            (total - twin_sum).abs() <= members.len() as i64,
            "group {group} {hour}: released {total}, plaintext twins {twin_sum} milli-kWh"
        );
    }
    eprintln!(
        "group forecasts: {} group-days released; largest |total − twin sum| {worst_group} \
         milli-kWh",
        releasable * DAYS as u64
    );

    // One grant per home-day and per group-day in the key authority's audit log (the second
    // run added none).
    let audit = audit_entries(&deployment.dir().join("ka/audit.db"))
        .await
        .expect("the audit log");
    assert_eq!(grants(&audit, "daily") as u64, home_days);
    assert_eq!(
        grants(&audit, "daily-group-forecast") as u64,
        releasable * DAYS as u64
    );
}
