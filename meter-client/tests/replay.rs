//! `--replay-as`: a month of readings re-dated by whole months, checked against the same
//! readings loaded without re-dating; days that do not exist in the new month are refused.

use chrono::{Datelike as _, NaiveDate, NaiveDateTime};
use clap::Parser as _;
use meter_client::Command;
use meter_client::cli::{Cli, DEFAULT_BATCH_DAYS, RunArgs};
use meter_client::source::{DateRange, MonthShift, SourceSpec, load};
use seer_core::data::Period;

fn sample() -> SourceSpec {
    SourceSpec::Uci(
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../data/samples/uci-householdpower-sample.csv"),
    )
}

fn date(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).expect("valid date")
}

fn month(text: &str) -> Period {
    text.parse().expect("valid month")
}

fn run_args(extra: &[&str]) -> RunArgs {
    let mut argv = vec![
        "meter-client",
        "run",
        "--meter-id",
        "m-1",
        "--key-authority",
        "http://127.0.0.1:1",
        "--state",
        "/tmp/unused",
        "--token-env",
        "SEER_REPLAY_TEST_TOKEN_THAT_IS_NOT_SET",
    ];
    argv.extend_from_slice(extra);
    match Cli::try_parse_from(argv).expect("valid arguments").command {
        Command::Run(args) => *args,
        Command::Forecast(_)
        | Command::Daily(_)
        | Command::Info(_)
        | Command::Enrol(_)
        | Command::Dashboard(_)
        | Command::Privacy(_) => {
            unreachable!("a run was parsed")
        }
    }
}

#[test]
fn a_replayed_month_has_the_same_readings_shifted_by_whole_years() {
    let range = DateRange {
        from: Some(date(2007, 1, 1)),
        until: Some(date(2007, 2, 1)),
        shift: MonthShift::NONE,
    };
    let original = load(&sample(), range).expect("loads");
    let replayed = load(
        &sample(),
        range
            .try_replay_as(month("2010-01"))
            .expect("from is given"),
    )
    .expect("loads replayed");
    assert!(!original.readings().is_empty());
    assert_eq!(replayed.readings().len(), original.readings().len());
    assert_eq!(replayed.skipped_intervals(), original.skipped_intervals());
    for (r, o) in replayed.readings().iter().zip(original.readings()) {
        assert_eq!(r.energy, o.energy);
        assert_eq!(r.start.time(), o.start.time());
        assert_eq!(
            (r.start.year(), r.start.month(), r.start.day()),
            (o.start.year() + 3, o.start.month(), o.start.day()),
            "{} replayed as {}",
            o.start,
            r.start
        );
    }
    // The sample's January: 2007-01-30 from 21:15 and the whole 31st, now in 2010.
    let first: NaiveDateTime = "2010-01-30T21:15:00".parse().expect("timestamp");
    assert_eq!(replayed.readings()[0].start, first);
    let last: NaiveDateTime = "2010-01-31T23:45:00".parse().expect("timestamp");
    assert_eq!(replayed.readings().last().map(|r| r.start), Some(last));
}

#[test]
fn month_shifts_cross_years_both_ways() {
    assert_eq!(
        MonthShift::between(month("2007-01"), month("2010-01")),
        MonthShift::months(36)
    );
    assert_eq!(
        MonthShift::between(month("2010-02"), month("2009-11")),
        MonthShift::months(-3)
    );
    let t: NaiveDateTime = "2010-01-15T06:30:00".parse().expect("timestamp");
    let earlier = MonthShift::months(-1).apply(t).expect("exists");
    assert_eq!(
        earlier,
        "2009-12-15T06:30:00".parse::<NaiveDateTime>().unwrap()
    );
    let later = MonthShift::months(11).apply(t).expect("exists");
    assert_eq!(
        later,
        "2010-12-15T06:30:00".parse::<NaiveDateTime>().unwrap()
    );
    assert_eq!(MonthShift::NONE.apply(t).expect("identity"), t);
    // Out of the supported years.
    MonthShift::months(12 * 10_000).apply(t).unwrap_err();
}

#[test]
fn days_missing_from_the_new_month_are_refused_not_moved() {
    // 29 February 2024 into 2025, a common year.
    let leap = DateRange {
        from: Some(date(2024, 2, 29)),
        until: Some(date(2024, 3, 1)),
        shift: MonthShift::NONE,
    };
    let err = load(
        &SourceSpec::Synthetic { seed: 1, home: 0 },
        leap.try_replay_as(month("2025-02")).expect("from is given"),
    )
    .unwrap_err();
    assert!(err.to_string().contains("no day 29"), "{err}");
    // Ending the range before it is accepted: the 28th into 2025-02-28.
    let stream = load(
        &SourceSpec::Synthetic { seed: 1, home: 0 },
        DateRange {
            from: Some(date(2024, 2, 28)),
            until: Some(date(2024, 2, 29)),
            shift: MonthShift::NONE,
        }
        .try_replay_as(month("2025-02"))
        .expect("from is given"),
    )
    .expect("the 28th exists");
    assert_eq!(stream.readings().len(), 96);
    assert!(
        stream
            .readings()
            .iter()
            .all(|r| r.start.date() == date(2025, 2, 28))
    );
    // The 31st of January three months on: April has 30 days.
    let err = load(
        &SourceSpec::Synthetic { seed: 1, home: 0 },
        DateRange {
            from: Some(date(2024, 1, 31)),
            until: Some(date(2024, 2, 1)),
            shift: MonthShift::NONE,
        }
        .try_replay_as(month("2024-04"))
        .expect("from is given"),
    )
    .unwrap_err();
    assert!(err.to_string().contains("no day 31"), "{err}");
}

#[test]
fn the_command_line_validates_replay_as() {
    let settings = run_args(&[
        "--source",
        "synthetic:1:0",
        "--from",
        "2008-01-01",
        "--until",
        "2008-02-01",
        "--replay-as",
        "2010-01",
    ])
    .to_settings()
    .expect("valid");
    assert_eq!(settings.range.shift, MonthShift::months(24));
    assert_eq!(settings.range.from, Some(date(2008, 1, 1)));
    assert_eq!(settings.batch_days, DEFAULT_BATCH_DAYS);
    assert_eq!(DEFAULT_BATCH_DAYS, 7);

    // Without --from there is no month to replay.
    let err = run_args(&["--source", "synthetic:1:0", "--replay-as", "2010-01"])
        .to_settings()
        .unwrap_err();
    assert!(err.to_string().contains("--from"), "{err}");

    // Not a month.
    let argv = [
        "meter-client",
        "run",
        "--meter-id",
        "m",
        "--key-authority",
        "http://x",
        "--state",
        "/tmp/x",
        "--source",
        "synthetic:1:0",
        "--replay-as",
        "2010-13",
    ];
    Cli::try_parse_from(argv).unwrap_err();

    // Without --replay-as the dates are the source's.
    let settings = run_args(&["--source", "synthetic:1:0", "--from", "2008-01-01"])
        .to_settings()
        .expect("valid");
    assert_eq!(settings.range.shift, MonthShift::NONE);
}
