//! The `timestamp,kwh` loader against the committed samples.
//!
//! Expected values were computed independently with Python from the sample files, reading each
//! `kwh` as `round(float(kwh) * 1000)` Wh (every value has three decimals, so 1 Wh = 3600 J is
//! exact), e.g. `python3 -c "print(sum(round(float(l.split(',')[1])*1000) for l in
//! open('kwh-15min-sample.csv').readlines()[1:]))"` → 69807.

mod common;

use chrono::FixedOffset;
use common::{at, sample};
use seer_core::Error;
use seer_core::data::{
    GapPolicy, Interval, LoadOptions, Strictness, load_kwh_csv, load_kwh_csv_from_reader, load_uci,
    write_kwh_csv,
};
use seer_core::error::RowProblem;
use seer_core::units::Joules;

const WH: i64 = Joules::PER_WH;

#[test]
fn fifteen_minute_sample() {
    let loaded =
        load_kwh_csv(sample("kwh-15min-sample.csv"), &LoadOptions::default()).expect("loads");
    let s = &loaded.series;
    assert_eq!(s.resolution(), Interval::FIFTEEN_MINUTES);
    assert_eq!(s.utc_offset(), FixedOffset::east_opt(3_600));
    assert_eq!(s.len(), 192);
    assert_eq!(s.readings()[0].start, at("2007-01-31 00:00"));
    assert_eq!(s.readings()[0].energy.get(), 210 * WH); // 0.210 kWh
    assert_eq!(s.total().get(), 69_807 * WH);

    let hourly = s
        .resample(Interval::HOUR, GapPolicy::COMPLETE_ONLY)
        .expect("resample");
    assert_eq!(hourly.intervals().len(), 48);
    assert_eq!(hourly.complete_count(), 48);
    assert_eq!(hourly.total(), s.total());
    let six_pm = hourly
        .intervals()
        .iter()
        .find(|i| i.start == at("2007-01-31 18:00"))
        .and_then(|i| i.energy);
    assert_eq!(six_pm.map(|e| e.get()), Some(3_029 * WH));

    let days: Vec<_> = s.days().map(|(_, v)| v.total().get()).collect();
    assert_eq!(days, [39_397 * WH, 30_410 * WH]);
}

#[test]
fn fifteen_minute_sample_agrees_with_the_uci_minutes() {
    // The 15-minute sample was derived from the UCI sample, each interval rounded to a Wh:
    // day totals agree to within 96 × 0.5 Wh.
    let quarters =
        load_kwh_csv(sample("kwh-15min-sample.csv"), &LoadOptions::default()).expect("loads");
    let minutes = load_uci(
        sample("uci-householdpower-sample.csv"),
        &LoadOptions::default(),
    )
    .expect("loads");
    let from_minutes: Vec<_> = minutes
        .series
        .days()
        .filter(|(_, v)| v.is_complete())
        .map(|(d, v)| (d, v.total().get()))
        .collect();
    let from_quarters: Vec<_> = quarters
        .series
        .days()
        .map(|(d, v)| (d, v.total().get()))
        .collect();
    assert_eq!(from_minutes.len(), 2);
    for ((d1, a), (d2, b)) in from_minutes.iter().zip(&from_quarters) {
        assert_eq!(d1, d2);
        assert!((a - b).abs() <= 48 * WH, "{d1}: {a} vs {b}");
    }
    let resampled = minutes
        .series
        .resample(Interval::FIFTEEN_MINUTES, GapPolicy::COMPLETE_ONLY)
        .expect("resample");
    for q in quarters.series.readings() {
        let same = resampled.intervals().iter().find(|i| i.start == q.start);
        let exact = same.and_then(|i| i.energy).expect("interval present");
        assert_eq!(
            exact.round_to_wh().get() * WH,
            q.energy.get(),
            "{}",
            q.start
        );
    }
}

#[test]
fn hourly_ist_sample_with_gaps() {
    let loaded =
        load_kwh_csv(sample("kwh-hourly-ist-sample.csv"), &LoadOptions::default()).expect("loads");
    let s = &loaded.series;
    assert_eq!(s.resolution(), Interval::HOUR);
    assert_eq!(s.utc_offset(), FixedOffset::east_opt(19_800));
    assert_eq!(loaded.report.data_rows, 25);
    assert_eq!(loaded.report.missing_rows, 2); // 03:00 '?', 04:00 empty
    assert_eq!(s.len(), 23); // and 10:00 has no row at all

    let days: Vec<_> = s
        .days()
        .map(|(d, v)| (d.to_string(), v.len(), v.expected_len()))
        .collect();
    assert_eq!(
        days,
        [
            ("2024-03-01".to_string(), 21, 24),
            ("2024-03-02".to_string(), 2, 24)
        ]
    );

    let strict = s
        .resample(Interval::DAY, GapPolicy::COMPLETE_ONLY)
        .expect("resample");
    assert_eq!(strict.missing_count(), 2);
    let first = strict.intervals()[0];
    assert_eq!(first.measured.get(), 27_589 * WH);

    let lenient = s
        .resample(Interval::DAY, GapPolicy::try_scale_up(0.8).expect("policy"))
        .expect("resample");
    let first = lenient.intervals()[0];
    assert!(first.is_estimated());
    // round(27 589 Wh × 3600 × 24 / 21)
    assert_eq!(first.energy.map(|e| e.get()), Some(113_509_029));
    assert!(lenient.intervals()[1].is_missing()); // 2 of 24 hours
}

#[test]
fn declared_offset_converts_timestamps() {
    let utc = FixedOffset::east_opt(0).expect("offset");
    // 2024-03-01T00:00:00+05:30 is 2024-02-29 18:30 UTC: off the hourly grid.
    for options in [
        LoadOptions::default().with_utc_offset(utc),
        LoadOptions::default()
            .with_utc_offset(utc)
            .with_resolution(Interval::HOUR),
    ] {
        let err = load_kwh_csv(sample("kwh-hourly-ist-sample.csv"), &options).expect_err("grid");
        assert!(
            matches!(
                err,
                Error::Csv {
                    line: 2,
                    problem: RowProblem::Misaligned { .. },
                    ..
                }
            ),
            "{err}"
        );
    }
    // +04:30 keeps the hourly grid: 00:00+05:30 is 23:00+04:30 the day before.
    let gulf = FixedOffset::east_opt(4 * 3_600 + 1_800).expect("offset");
    let shifted = load_kwh_csv(
        sample("kwh-hourly-ist-sample.csv"),
        &LoadOptions::default().with_utc_offset(gulf),
    )
    .expect("on the hourly grid");
    assert_eq!(shifted.series.utc_offset(), Some(gulf));
    assert_eq!(shifted.series.resolution(), Interval::HOUR);
    assert_eq!(shifted.series.readings()[0].start, at("2024-02-29 23:00"));
    assert_eq!(shifted.series.len(), 23);
}

#[test]
fn malformed_sample_strict() {
    let err = load_kwh_csv(sample("kwh-malformed.csv"), &LoadOptions::default()).expect_err("bad");
    assert!(
        matches!(
            err,
            Error::Csv {
                line: 5,
                problem: RowProblem::Negative { .. },
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string()
            .ends_with("kwh-malformed.csv:5: negative kwh: -0.02"),
        "{err}"
    );
}

#[test]
fn malformed_sample_lenient() {
    let options =
        LoadOptions::default().with_strictness(Strictness::SkipInvalid { max_skipped: 20 });
    let loaded = load_kwh_csv(sample("kwh-malformed.csv"), &options).expect("lenient load");
    let skipped: Vec<_> = loaded
        .report
        .skipped
        .iter()
        .map(|s| (s.line, s.problem.clone()))
        .collect();
    let lines: Vec<u64> = skipped.iter().map(|(l, _)| *l).collect();
    assert_eq!(lines, [5, 6, 7, 9, 10, 11, 12, 13, 14]);
    let kinds: Vec<&str> = skipped
        .iter()
        .map(|(_, p)| match p {
            RowProblem::Negative { .. } => "negative",
            RowProblem::ColumnCount { .. } => "columns",
            RowProblem::BadNumber { .. } => "number",
            RowProblem::Duplicate { .. } => "duplicate",
            RowProblem::OutOfOrder { .. } => "order",
            RowProblem::BadTimestamp { .. } => "timestamp",
            RowProblem::OffsetPresence { .. } => "offset",
            RowProblem::Implausible { .. } => "implausible",
            RowProblem::Misaligned { .. } => "misaligned",
            _ => "other",
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "negative",
            "columns",
            "number",
            "duplicate",
            "order",
            "timestamp",
            "offset",
            "implausible",
            "misaligned"
        ]
    );
    assert_eq!(loaded.series.resolution(), Interval::FIFTEEN_MINUTES);
    assert_eq!(loaded.series.len(), 6);
    // 0.412 + 0.398 + 0.405 + 0.377 + 0.362 + 0.371 kWh
    assert_eq!(loaded.series.total().get(), 2_325 * WH);
}

#[test]
fn bad_header_sample() {
    let err = load_kwh_csv(sample("kwh-bad-header.csv"), &LoadOptions::default()).expect_err("bad");
    let text = err.to_string();
    assert!(matches!(err, Error::Header { .. }), "{text}");
    assert!(
        text.contains("expected \"timestamp,kwh\", found \"time,energy_kwh\""),
        "{text}"
    );
}

#[test]
fn write_round_trips_the_sample() {
    let loaded =
        load_kwh_csv(sample("kwh-15min-sample.csv"), &LoadOptions::default()).expect("loads");
    let mut out = Vec::new();
    write_kwh_csv(&loaded.series, &mut out).expect("write");
    let original = std::fs::read_to_string(sample("kwh-15min-sample.csv")).expect("read");
    let text = String::from_utf8(out).expect("utf-8");
    // Same rows; the writer prints the shortest decimal (0.21 rather than 0.210).
    assert_eq!(text.lines().count(), original.lines().count());
    assert!(
        text.starts_with("timestamp,kwh\n2007-01-31T00:00:00+01:00,0.21\n"),
        "{text}"
    );
    let again = load_kwh_csv_from_reader(text.as_bytes(), "written", &LoadOptions::default())
        .expect("reloads");
    assert_eq!(again.series, loaded.series);
}

#[test]
fn write_to_a_file_and_load_it() {
    let minutes = load_uci(
        sample("uci-householdpower-sample.csv"),
        &LoadOptions::default(),
    )
    .expect("loads");
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("minutes.csv");
    let file = std::fs::File::create(&path).expect("create");
    write_kwh_csv(&minutes.series, file).expect("write");
    let back = load_kwh_csv(&path, &LoadOptions::default()).expect("loads");
    assert_eq!(back.series, minutes.series);
}
