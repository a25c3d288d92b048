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

/// Most intervals a fuzzed series is resampled into. The library accepts up to
/// `MAX_RESAMPLED_INTERVALS` (4 million, about 200 MB: a unit test covers that bound); two
/// fuzzed timestamps years apart reach it, and resampling every such input made this target
/// run at about a thousand inputs a second with 240 MB resident. Wider spans are loaded and
/// checked as above but not resampled here: the loop does the same work for each interval,
/// so short spans exercise every branch of it.
const FUZZ_MAX_INTERVALS: i64 = 20_000;

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
    let readings = loaded.series.readings();
    let (Some(first), Some(last)) = (readings.first(), readings.last()) else {
        return;
    };
    let span = last.start.signed_duration_since(first.start);
    // The exact sum (`EnergySeries::total` saturates at `Joules::MAX`).
    let total: i128 = readings.iter().map(|r| i128::from(r.energy.get())).sum();
    for interval in [Interval::FIFTEEN_MINUTES, Interval::HOUR] {
        if span.num_seconds() / i64::from(interval.as_secs()) >= FUZZ_MAX_INTERVALS {
            continue;
        }
        let Ok(resampled) = loaded.series.resample(interval, GapPolicy::COMPLETE_ONLY) else {
            continue;
        };
        // Every reading falls in exactly one interval: the measured sums conserve the energy,
        // and complete intervals report exactly what was measured.
        let measured: i128 = resampled
            .intervals()
            .iter()
            .map(|i| i128::from(i.measured.get()))
            .sum();
        assert_eq!(measured, total, "resampling lost energy");
        for i in resampled.intervals() {
            assert!(i.observed <= i.expected);
            if i.is_complete() {
                assert_eq!(i.energy, Some(i.measured));
            }
        }
        let _ = resampled.total();
        let _ = resampled.to_series();
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
