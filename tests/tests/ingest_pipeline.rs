//! The pipeline across three separate processes: the key authority issues tokens and serves
//! the public key, the utility server verifies the tokens with the key authority's published
//! JWT key, and `meter-client run` encrypts a synthetic home's days, streams them and records
//! their receipts. Checked over real gRPC: the cursor, exactly-once delivery on a rerun, the
//! refusals (another meter's token, no token), and a month's bill released by the key
//! authority against the plaintext tariff on the same readings.

use std::process::Output;

use chrono::NaiveDate;
use seer_core::data::Period;
use seer_core::tariff::Tariff;
use seer_tests::deployment::issue_token;
use seer_tests::oracle::{monthly_bills, readings};
use seer_tests::{Deployment, DeploymentOptions, MeterRun};

const SOURCE: &str = "synthetic:7:3";

fn deploy() -> Deployment {
    Deployment::start(&DeploymentOptions::default()).expect("the deployment starts")
}

/// The synthetic home's days from 2024-01-01 until `until`, one batch per day.
fn meter(deployment: &Deployment, token: Option<&str>, state: &str, until: &str) -> MeterRun {
    let run = deployment
        .meter("M-0003", SOURCE)
        .state(deployment.dir().join(state))
        .args(["--from", "2024-01-01", "--until", until])
        .args(["--batch-days", "1", "--max-attempts", "3"]);
    match token {
        Some(token) => run.token(token),
        None => run,
    }
}

fn assert_success(output: &Output) {
    assert!(
        output.status.success(),
        "meter-client failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test]
async fn a_meter_streams_its_days_exactly_once_across_three_processes() {
    let deployment = deploy();
    let household = deployment
        .token("household", Some("M-0003"))
        .expect("token");
    let utility = deployment.token("utility", None).expect("token");

    // Three days, one batch per day.
    let run = meter(&deployment, Some(&household), "meter", "2024-01-04");
    assert_success(&run.output().expect("runs"));
    assert_eq!(
        deployment.cursor("M-0003", &utility).await.expect("cursor"),
        3
    );
    // The household may read its own cursor, not another meter's.
    assert_eq!(
        deployment
            .cursor("M-0003", &household)
            .await
            .expect("own cursor"),
        3
    );
    let denied = deployment.cursor("M-0004", &household).await.unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied);

    // Rerun with the same state and two more days: only the new days are sent.
    let rerun = meter(&deployment, Some(&household), "meter", "2024-01-06");
    assert_success(&rerun.output().expect("runs"));
    assert_eq!(
        deployment.cursor("M-0003", &utility).await.expect("cursor"),
        5
    );
}

#[tokio::test]
async fn tokens_for_another_meter_or_none_are_refused() {
    let deployment = deploy();
    let other = deployment
        .token("household", Some("M-0009"))
        .expect("token");
    let utility = deployment.token("utility", None).expect("token");

    // Unenrolled meters (an enrolled one renews its own tokens with its device key): the
    // configured token is all they have.
    let wrong = meter(&deployment, Some(&other), "wrong", "2024-01-02")
        .unenrolled()
        .output()
        .expect("runs");
    assert!(
        !wrong.status.success(),
        "a token for M-0009 must not upload for M-0003"
    );
    let stderr = String::from_utf8_lossy(&wrong.stderr).to_lowercase();
    assert!(
        stderr.contains("permission") || stderr.contains("denied"),
        "{stderr}"
    );

    let none = meter(&deployment, None, "none", "2024-01-02")
        .unenrolled()
        .output()
        .expect("runs");
    assert!(!none.status.success(), "no token must not upload");

    // Nothing was stored for M-0003.
    assert_eq!(
        deployment.cursor("M-0003", &utility).await.expect("cursor"),
        0
    );
    // A forged token (signed by another key authority) is refused outright.
    let other_ka = tempfile::tempdir().expect("temp dir");
    let forged = issue_token(other_ka.path(), "utility", None).expect("token");
    let status = deployment.cursor("M-0003", &forged).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
}

/// The plaintext oracle: the synthetic home's January bill in paise, from the same readings
/// (whole Wh) through the exact tariff.
fn january_bill_paise() -> i64 {
    let from = NaiveDate::from_ymd_opt(2024, 1, 1);
    let until = NaiveDate::from_ymd_opt(2024, 2, 1);
    let stream = readings(SOURCE, from, until).expect("readings");
    let bills = monthly_bills(&Tariff::bescom(), stream.readings()).expect("bills");
    bills[&Period::try_new(2024, 1).expect("month")].paise
}

#[tokio::test]
async fn a_closed_month_is_billed_by_the_key_authority_to_the_paisa() {
    let deployment = deploy();
    let household = deployment
        .token("household", Some("M-0003"))
        .expect("token");
    let utility = deployment.token("utility", None).expect("token");

    // The whole of January: 31 daily batches, the last one closes the month.
    let run = meter(&deployment, Some(&household), "meter", "2024-02-01");
    assert_success(&run.output().expect("runs"));
    assert_eq!(
        deployment.cursor("M-0003", &utility).await.expect("cursor"),
        31
    );

    let report = deployment.bill("2024-01", 0, &utility).expect("bill");
    assert_eq!(report["closing_homes"], 1, "{report}");
    assert_eq!(
        report["refused"].as_array().map(Vec::len),
        Some(0),
        "{report}"
    );
    let released = &report["released"][0];
    assert_eq!(released["meter_id"], "M-0003");
    assert_eq!(released["period"], "2024-01");
    assert_eq!(released["amount_paise"], january_bill_paise(), "{report}");
    assert_eq!(released["closing_sequence"], 31);

    // Stored: `bills` prints the same bill.
    let output = deployment
        .utility_cli(&["bills", "--period", "2024-01"], &utility)
        .expect("runs");
    assert!(output.status.success());
    let bills: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json bills");
    assert_eq!(bills[0]["amount_paise"], january_bill_paise());

    // The billing job run again (as after a lost answer): the key authority answers from its
    // releases — the same bill under the same audit entry — and releases nothing anew.
    let first_entry = released["audit_sequence"].clone();
    let again = deployment.bill("2024-01", 0, &utility).expect("bill");
    assert_eq!(
        again["refused"].as_array().map(Vec::len),
        Some(0),
        "{again}"
    );
    assert_eq!(
        again["released"].as_array().map(Vec::len),
        Some(1),
        "{again}"
    );
    assert_eq!(again["released"][0]["amount_paise"], january_bill_paise());
    assert_eq!(
        again["released"][0]["audit_sequence"], first_entry,
        "{again}"
    );

    // A household token cannot ask for releases.
    let error = deployment
        .bill("2024-01", 0, &household)
        .expect_err("a household token must not obtain releases");
    assert!(format!("{error:#}").contains("failed"), "{error:#}");
}
