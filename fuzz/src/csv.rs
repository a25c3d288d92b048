//! The `csv_loaders` target's body (see `fuzz_targets/csv_loaders.rs`).

use chrono::FixedOffset;
use seer_core::data::{
    GapPolicy, Interval, LoadOptions, Loaded, Strictness, load_kwh_csv_from_reader,
    load_uci_from_reader,
};

/// Loads `data[1..]` with the loader and options chosen by `data[0]`.
pub fn run(data: &[u8]) {
    let Some((&option, file)) = data.split_first() else {
        return;
    };
    let mut options = LoadOptions::default();
    if option & 0x04 != 0 {
        options = options.with_strictness(Strictness::SkipInvalid {
            max_skipped: usize::from(option >> 6) * 8,
        });
    }
    if option & 0x08 != 0 {
        options = options.with_resolution(if option & 0x10 != 0 {
            Interval::MINUTE
        } else {
            Interval::FIFTEEN_MINUTES
        });
    }
    if option & 0x20 != 0 {
        if let Some(offset) = FixedOffset::east_opt(19_800) {
            options = options.with_utc_offset(offset);
        }
    }
    match option & 0x03 {
        0 => check(load_kwh_csv_from_reader(file, "fuzz.csv", &options)),
        1 => check(load_uci_from_reader(file, "fuzz.csv", &options)),
        _ => anomaly_csv(file),
    }
}

fn check(loaded: Result<Loaded, seer_core::Error>) {
    let Ok(loaded) = loaded else {
        return;
    };
    let report = &loaded.report;
    assert_eq!(
        report.data_rows,
        report.readings as u64 + report.missing_rows + report.skipped.len() as u64,
        "a load's report must account for every row"
    );
    assert_eq!(report.readings, loaded.series.len());
    for interval in [Interval::FIFTEEN_MINUTES, Interval::HOUR] {
        if let Ok(resampled) = loaded.series.resample(interval, GapPolicy::COMPLETE_ONLY) {
            let _ = resampled.total();
            let _ = resampled.to_series();
        }
    }
}

#[cfg(feature = "programs")]
fn anomaly_csv(file: &[u8]) {
    if let Ok(text) = std::str::from_utf8(file) {
        let _ = seer::anomaly::parse_csv(text, "fuzz.csv");
    }
}

#[cfg(not(feature = "programs"))]
fn anomaly_csv(_file: &[u8]) {}
