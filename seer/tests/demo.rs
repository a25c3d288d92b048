//! The engine demonstration on the committed UCI sample, against an independent plaintext
//! oracle that parses the CSV by hand.

use std::collections::BTreeMap;
use std::path::PathBuf;

use seer::{DemoOptions, run_demo};
use seer_ckks::ParameterSet;

fn sample() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../data/samples/uci-householdpower-sample.csv")
}

/// Per-day kWh over complete 15-minute intervals, computed directly from the CSV text.
fn oracle(month_prefix: &str) -> BTreeMap<String, f64> {
    let text = std::fs::read_to_string(sample()).unwrap();
    let mut slots: BTreeMap<(String, u32), (u32, f64)> = BTreeMap::new();
    for line in text.lines().skip(1) {
        let fields: Vec<&str> = line.split(',').collect();
        let (date, time) = fields[0].split_once(' ').unwrap();
        if !date.starts_with(month_prefix) {
            continue;
        }
        let h: u32 = time[0..2].parse().unwrap();
        let m: u32 = time[3..5].parse().unwrap();
        let kw: f64 = fields[1].parse().unwrap();
        let e = slots
            .entry((date.to_string(), (h * 60 + m) / 15))
            .or_default();
        e.0 += 1;
        e.1 += kw / 60.0;
    }
    let mut days = BTreeMap::new();
    for ((date, _), (count, kwh)) in slots {
        if count == 15 {
            *days.entry(date).or_insert(0.0) += kwh;
        }
    }
    days
}

#[test]
fn demo_totals_match_plaintext_oracle() {
    let report = run_demo(&DemoOptions {
        data: sample(),
        month: Some("2007-01".parse().unwrap()),
        params: ParameterSet::N8192_L2_SEC128,
    })
    .unwrap();
    let want = oracle("2007-01");
    assert_eq!(report.days.len(), want.len());
    for day in &report.days {
        let expected = want[&day.date.to_string()];
        assert!(
            (day.plain_kwh - expected).abs() < 1e-9,
            "{}: {} vs {}",
            day.date,
            day.plain_kwh,
            expected
        );
        assert!(
            (day.decrypted_kwh - expected).abs() < 1e-4,
            "{}: {} vs {}",
            day.date,
            day.decrypted_kwh,
            expected
        );
    }
    let month: f64 = want.values().sum();
    assert!((report.month_decrypted_kwh - month).abs() < 1e-4);
    assert!(report.max_abs_error_kwh < 1e-4);
    // 2007-01-30 starts at 21:07 in the sample: only its complete intervals from 21:15 count.
    assert_eq!(report.days[0].intervals, 11);
    assert_eq!(report.days[1].intervals, 96);
}

#[test]
fn missing_month_and_missing_file_are_clear_errors() {
    let err = run_demo(&DemoOptions {
        data: sample(),
        month: Some("2009-05".parse().unwrap()),
        params: ParameterSet::N8192_L2_SEC128,
    })
    .unwrap_err();
    assert!(
        format!("{err:#}").contains("2009-05 is not in the data"),
        "{err:#}"
    );
    let err = run_demo(&DemoOptions {
        data: PathBuf::from("/nonexistent/householdpower.csv"),
        month: None,
        params: ParameterSet::N8192_L2_SEC128,
    })
    .unwrap_err();
    assert!(
        format!("{err:#}").contains("scripts/fetch-data.sh"),
        "{err:#}"
    );
}
