//! Distributed noise end to end, across separate processes: eight synthetic homes of one noise
//! group (`meter-client run`) stream a week in one seven-day window, three of them going
//! offline after four days; the utility's `group-totals` job forwards the group's batches to
//! the key authority, which releases the group's hourly totals. Checked against the plaintext
//! sums of the same synthetic readings: each interval's error follows the discrete Laplace
//! distribution of scale Δ/ε (Kolmogorov–Smirnov against its closed-form CDF; the key
//! authority tops up the absent homes' shares), a second run releases nothing new, and each
//! home's privacy accountant (`meter-client privacy`) shows what it spent per day.

use chrono::{NaiveDate, TimeDelta};
use meter_client::synthetic::SyntheticHome;
use seer_tests::{Deployment, DeploymentOptions};

const SEED: u64 = 11;
const HOMES: u32 = 8;
const DELTA_WH: i64 = 3_450;
const EPSILON: f64 = 1.0;
const WINDOW: &str = "2024-01-01T00:00:00+00:00";

/// Home `home`'s last day (exclusive): homes 5-7 stop after four days.
fn until(home: u32) -> &'static str {
    if home < 5 { "2024-01-08" } else { "2024-01-05" }
}

fn group_totals(deployment: &Deployment, token: &str) -> serde_json::Value {
    let output = deployment
        .utility_cli(
            &[
                "group-totals",
                "--group",
                "0",
                "--window",
                WINDOW,
                "--per-interval",
                "--key-authority",
                &deployment.authority().uri(),
            ],
            token,
        )
        .expect("utility-server runs");
    assert!(
        output.status.success(),
        "group-totals failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "the report is not JSON ({e}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

#[test]
fn a_groups_week_is_released_hourly_with_one_draw_per_interval() {
    let deployment =
        Deployment::start(&DeploymentOptions::default()).expect("the deployment starts");
    let utility = deployment.token("utility", None).expect("token");
    for home in 0..HOMES {
        let meter = format!("M-{home:04}");
        let token = deployment
            .household_token(&meter, "seer-utility-server")
            .expect("token");
        deployment
            .meter(&meter, &format!("synthetic:{SEED}:{home}"))
            .token(&token)
            .args(["--from", "2024-01-01", "--until", until(home)])
            .args(["--batch-days", "7", "--max-attempts", "3"])
            .args(["--noise-group-size", "8", "--noise-tolerated", "0"])
            .args(["--epsilon", "1", "--sensitivity-wh", "3450"])
            .run()
            .expect("the meter streams its days");
    }

    let report = group_totals(&deployment, &utility);
    let hours = report["hours"].as_array().expect("hours");
    assert_eq!(hours.len(), 7 * 24, "{report}");
    // The truth: the clamped readings of the homes present in each interval.
    let first = NaiveDate::from_ymd_opt(2024, 1, 1)
        .expect("date")
        .and_hms_opt(0, 0, 0)
        .expect("midnight");
    let homes: Vec<SyntheticHome> = (0..HOMES).map(|h| SyntheticHome::new(SEED, h)).collect();
    let mut errors = Vec::new();
    let mut released = Vec::new();
    for (h, hour) in hours.iter().enumerate() {
        assert_eq!(hour["status"], "released", "hour {h}: {hour}");
        let intervals = hour["interval_wh"].as_array().expect("intervals");
        assert_eq!(intervals.len(), 4);
        let mut total = 0;
        for (q, value) in intervals.iter().enumerate() {
            let start = first + TimeDelta::minutes(15 * (4 * h + q) as i64);
            let present = if start.date() < NaiveDate::from_ymd_opt(2024, 1, 5).expect("date") {
                HOMES
            } else {
                5
            };
            let truth: i64 = homes[..present as usize]
                .iter()
                .map(|home| home.energy_at(start).get().min(DELTA_WH))
                .sum();
            let value = value.as_i64().expect("whole Wh");
            errors.push(value - truth);
            total += value;
        }
        assert_eq!(hour["total_wh"].as_i64(), Some(total), "hour {h}");
        released.push(total);
    }
    // 672 interval totals, each with one draw of scale Δ/ε = 3,450 Wh: KS below its 0.1 %
    // critical value.
    let n = errors.len() as f64;
    let full = seer_core::dp::DiscreteLaplace::for_mechanism(
        seer_core::units::Wh::try_new(DELTA_WH).expect("wh"),
        seer_core::dp::Epsilon::try_new(EPSILON).expect("eps"),
    )
    .expect("noise");
    let d = full.ks_distance(&mut errors);
    eprintln!(
        "KS {d:.4} over {n} intervals (critical {:.4})",
        1.95 / n.sqrt()
    );
    assert!(d < 1.95 / n.sqrt(), "KS {d}");

    // A second run: every hour already released, the same values, nothing new drawn.
    let again = group_totals(&deployment, &utility);
    let hours = again["hours"].as_array().expect("hours");
    for (h, hour) in hours.iter().enumerate() {
        assert_eq!(hour["status"], "already_released", "hour {h}: {hour}");
        assert_eq!(hour["total_wh"].as_i64(), Some(released[h]), "hour {h}");
    }

    // Each home's accountant: ε per reading, and per day readings × ε.
    for home in [0_u32, 6] {
        let meter = format!("M-{home:04}");
        let output = std::process::Command::new(seer_tests::bin_path("meter-client").expect("bin"))
            .args(["privacy", "--state"])
            .arg(deployment.dir().join(format!("meter-{meter}")))
            .output()
            .expect("meter-client privacy runs");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let privacy: serde_json::Value =
            serde_json::from_slice(&output.stdout).expect("privacy JSON");
        let lanes = privacy["lanes"].as_array().expect("lanes");
        let analytics = lanes
            .iter()
            .find(|lane| lane["lane"] == "analytics")
            .unwrap_or_else(|| panic!("no analytics lane: {privacy}"));
        assert_eq!(analytics["epsilon_per_reading"].as_f64(), Some(EPSILON));
        let days = analytics["days"].as_array().expect("days");
        // Every day streamed, 96 readings each, ε spent = readings × ε per reading.
        let expected_days = if home < 5 { 7 } else { 4 };
        assert_eq!(days.len(), expected_days, "{meter}: {privacy}");
        for (d, day) in days.iter().enumerate() {
            let date = NaiveDate::from_ymd_opt(2024, 1, 1 + d as u32).expect("date");
            assert_eq!(day["date"], date.to_string());
            assert_eq!(day["readings"].as_u64(), Some(96));
            assert!((day["epsilon"].as_f64().expect("ε") - 96.0 * EPSILON).abs() < 1e-9);
        }
        let month = &analytics["month"];
        let spent = month["spent"].as_f64().expect("spent");
        assert!(
            (spent - 96.0 * EPSILON * expected_days as f64).abs() < 1e-6,
            "{meter}: {month}"
        );
    }
}
