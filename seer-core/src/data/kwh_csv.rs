//! Plain `timestamp,kwh` files: the interchange format for interval meter data.
//!
//! ```text
//! timestamp,kwh
//! 2007-01-31T00:00:00+01:00,0.328
//! 2007-01-31T00:15:00+01:00,0.301
//! ```
//!
//! - **Header** required: exactly `timestamp,kwh` (case-insensitive; a UTF-8 BOM is ignored).
//! - **Timestamps**: ISO 8601 / RFC 3339 style, `YYYY-MM-DD`, then `T` or a space and
//!   `HH:MM[:SS[.fraction]]`, optionally followed by `Z` or an offset `±HH:MM`, `±HHMM` or
//!   `±HH`. A bare date means midnight. Either every row has an offset or none does. Rows with
//!   an offset are converted to one fixed offset — [`LoadOptions::with_utc_offset`] if given,
//!   else the first row's — so the series has no daylight-saving jumps; rows without one are
//!   local time already (and the series' offset is the option's, or unknown).
//! - **Energy**: `kwh` is the energy used during the interval that **starts** at the
//!   timestamp (interval-beginning labelling, like the UCI data and [`Reading`]). A `?` or an
//!   empty field marks a missing reading. Values are rounded to the nearest joule (exact for up
//!   to five decimals).
//! - **Interval**: every row covers the same interval: [`LoadOptions::with_resolution`], or,
//!   if not set, the most common spacing between consecutive rows (the shorter on a tie),
//!   which must divide a day. Rows further apart than the interval leave gaps. Every timestamp
//!   must be on the interval's grid (anchored at midnight).
//! - **Plausibility**: negative values are refused, and so is any value whose average power
//!   over the interval exceeds the options' limit (100 kW by default, i.e. 25 kWh per 15 min,
//!   1.67 kWh per minute).
//! - **Order**: timestamps strictly increase; a duplicate or earlier timestamp is a bad row.
//!
//! Bad rows are reported with their 1-based line (the header is line 1) and handled by the
//! options' [`Strictness`](super::Strictness). The file is streamed; with an explicit interval
//! each row is checked as it is read, so a strict load stops at the first bad line. Without
//! one, the parsed rows (about 40 bytes each) are kept until the interval is inferred, and the
//! grid and power checks run after the others.

use std::collections::HashMap;
use std::io::{self, BufRead, Write};
use std::path::{Path, PathBuf};

use chrono::{FixedOffset, NaiveDate, NaiveDateTime, NaiveTime, TimeDelta};

use super::interval::Interval;
use super::load::{
    LoadOptions, LoadReport, Loaded, Order, Triage, check_power, check_start, csv_failure,
    csv_reader, is_missing, open, parse_quantity, read_header_line,
};
use super::series::{EnergySeries, Reading};
use crate::error::{Error, RowProblem, snippet};
use crate::units::{Joules, Kwh};

const COLUMN: &str = "kwh";
const TIMESTAMP_FORMAT: &str = "ISO 8601 like 2007-01-31T00:15:00, optionally with Z or ±HH:MM";

/// A row that passed the checks that need no interval.
struct Row {
    line: u64,
    start: NaiveDateTime,
    kwh: Option<f64>,
}

/// Loads a `timestamp,kwh` file, streaming it; see the [module docs](self) for the format.
pub fn load_kwh_csv(path: impl AsRef<Path>, options: &LoadOptions) -> Result<Loaded, Error> {
    let path = path.as_ref();
    load_kwh_csv_from_reader(open(path)?, path, options)
}

/// [`load_kwh_csv`] from any buffered reader; `path` names the source in errors.
pub fn load_kwh_csv_from_reader<R: BufRead>(
    mut reader: R,
    path: impl Into<PathBuf>,
    options: &LoadOptions,
) -> Result<Loaded, Error> {
    let path = path.into();
    let header = read_header_line(&mut reader, &path)?;
    let names: Vec<&str> = header
        .split(',')
        .map(|name| name.trim().trim_matches('"'))
        .collect();
    if !matches!(names.as_slice(), [t, k] if t.eq_ignore_ascii_case("timestamp") && k.eq_ignore_ascii_case(COLUMN))
    {
        return Err(Error::Header {
            path,
            expected: "timestamp,kwh".into(),
            found: snippet(header.as_bytes()),
        });
    }

    let mut csv = csv_reader(reader, b',');
    let mut record = csv::ByteRecord::new();
    let mut triage = Triage::new(&path, options.strictness());
    let mut order = Order::default();
    let mut report = LoadReport::default();
    // The first accepted row's offset decides whether rows carry offsets.
    let mut first_offset: Option<Option<FixedOffset>> = None;
    let mut rows = Vec::new();
    let mut readings = Vec::new();

    while csv
        .read_byte_record(&mut record)
        .map_err(|e| csv_failure(&path, e))?
    {
        report.data_rows += 1;
        // The header was read before the CSV reader started: its line 1 is the file's line 2.
        let line = record.position().map_or(0, |p| p.line()) + 1;
        let parsed = parse_row(&record, first_offset, options).and_then(|parsed| {
            order.check(parsed.0)?;
            Ok(parsed)
        });
        let (start, kwh, offset) = match parsed {
            Ok(parsed) => parsed,
            Err(problem) => {
                triage.reject(line, problem)?;
                continue;
            }
        };
        let row = Row { line, start, kwh };
        // With a known interval, finish the row now so errors come in line order.
        if let Some(resolution) = options.resolution() {
            match finish(&row, resolution, options) {
                Ok(energy) => keep(&row, energy, &mut readings, &mut report),
                Err(problem) => {
                    triage.reject(line, problem)?;
                    continue;
                }
            }
        } else {
            rows.push(row);
        }
        first_offset.get_or_insert(offset);
        order.accept(start);
    }

    let resolution = match options.resolution() {
        Some(resolution) => resolution,
        None => {
            let resolution =
                infer_resolution(&rows).map_err(|reason| Error::UnknownResolution {
                    path: path.clone(),
                    reason,
                })?;
            tracing::debug!(path = %path.display(), %resolution, "inferred reading interval");
            for row in &rows {
                match finish(row, resolution, options) {
                    Ok(energy) => keep(row, energy, &mut readings, &mut report),
                    Err(problem) => triage.reject(row.line, problem)?,
                }
            }
            resolution
        }
    };
    report.readings = readings.len();
    report.skipped = triage.into_skipped();
    let utc_offset = options.utc_offset().or(first_offset.flatten());
    tracing::info!(
        path = %path.display(),
        %resolution,
        rows = report.data_rows,
        readings = report.readings,
        missing = report.missing_rows,
        skipped = report.skipped.len(),
        "loaded timestamp,kwh file"
    );
    Ok(Loaded {
        series: EnergySeries::new_unchecked(resolution, utc_offset, readings),
        report,
    })
}

/// A row's start (in the series' offset), energy (`None` if missing) and own offset.
type Parsed = (NaiveDateTime, Option<f64>, Option<FixedOffset>);

/// The checks that need no interval: columns, timestamp, offset, number.
fn parse_row(
    record: &csv::ByteRecord,
    first_offset: Option<Option<FixedOffset>>,
    options: &LoadOptions,
) -> Result<Parsed, RowProblem> {
    if record.len() != 2 {
        return Err(RowProblem::ColumnCount {
            expected: 2,
            found: record.len(),
        });
    }
    let ts_field = record.get(0).unwrap_or_default().trim_ascii();
    let (naive, offset) = std::str::from_utf8(ts_field)
        .ok()
        .and_then(parse_timestamp)
        .ok_or_else(|| RowProblem::BadTimestamp {
            value: snippet(ts_field),
            expected: TIMESTAMP_FORMAT,
        })?;
    if let Some(first) = first_offset
        && first.is_some() != offset.is_some()
    {
        return Err(RowProblem::OffsetPresence { found: offset });
    }
    // Convert to the series' offset: the option's, else the first offset-bearing row's.
    let start = match (
        offset,
        options.utc_offset().or(first_offset.flatten()).or(offset),
    ) {
        (Some(from), Some(to)) => naive
            .checked_sub_signed(TimeDelta::seconds(i64::from(from.local_minus_utc())))
            .and_then(|utc| {
                utc.checked_add_signed(TimeDelta::seconds(i64::from(to.local_minus_utc())))
            })
            .ok_or(RowProblem::OutOfRange { timestamp: naive })?,
        _ => naive,
    };
    let kwh_field = record.get(1).unwrap_or_default().trim_ascii();
    let kwh = if is_missing(kwh_field) {
        None
    } else {
        Some(parse_quantity(kwh_field, COLUMN)?)
    };
    Ok((start, kwh, offset))
}

/// The checks that need the interval; the reading's energy (`None` if missing).
fn finish(
    row: &Row,
    resolution: Interval,
    options: &LoadOptions,
) -> Result<Option<Joules>, RowProblem> {
    check_start(row.start, resolution)?;
    let Some(kwh) = row.kwh else {
        return Ok(None);
    };
    check_power(COLUMN, kwh, kwh, resolution, options.max_average_power_kw())?;
    // Within the power limit the value is far below Kwh::MAX; the fallback cannot trigger.
    let energy = Kwh::try_new(kwh).map_err(|_| RowProblem::Implausible {
        column: COLUMN,
        value: kwh,
        average_kw: f64::INFINITY,
        limit_kw: options.max_average_power_kw(),
    })?;
    Ok(Some(energy.round_to_joules()))
}

fn keep(row: &Row, energy: Option<Joules>, readings: &mut Vec<Reading>, report: &mut LoadReport) {
    match energy {
        Some(energy) => readings.push(Reading {
            start: row.start,
            energy,
        }),
        None => report.missing_rows += 1,
    }
}

/// The most common spacing between consecutive rows (the shorter on a tie).
fn infer_resolution(rows: &[Row]) -> Result<Interval, String> {
    let mut counts: HashMap<i64, usize> = HashMap::new();
    for pair in rows.windows(2) {
        let span = pair[1].start - pair[0].start;
        // Sub-second spacings count as their own (invalid) value.
        let key = if span.subsec_nanos() == 0 {
            span.num_seconds()
        } else {
            -1
        };
        *counts.entry(key).or_default() += 1;
    }
    let (secs, _) = counts
        .into_iter()
        .max_by(|(a_secs, a_n), (b_secs, b_n)| a_n.cmp(b_n).then(b_secs.cmp(a_secs)))
        .ok_or_else(|| {
            "fewer than two rows; set the interval with LoadOptions::with_resolution".to_string()
        })?;
    u32::try_from(secs)
        .ok()
        .and_then(|s| Interval::try_from_secs(s).ok())
        .ok_or_else(|| {
            format!(
                "the most common spacing between rows, {secs} s, is not a whole number of \
                 seconds dividing a day; set the interval with LoadOptions::with_resolution"
            )
        })
}

/// Parses an ISO 8601 timestamp with an optional offset.
fn parse_timestamp(s: &str) -> Option<(NaiveDateTime, Option<FixedOffset>)> {
    let (body, offset) = if let Some(body) = s.strip_suffix(['Z', 'z']) {
        (body, Some(FixedOffset::east_opt(0)?))
    } else {
        // An offset sign can only appear after the date (whose own '-' are in its 10 bytes).
        match s.get(10..).and_then(|time| time.find(['+', '-'])) {
            Some(i) => {
                let (body, offset) = s.split_at(10 + i);
                (body, Some(parse_offset(offset)?))
            }
            None => (s, None),
        }
    };
    let naive = if body.len() == 10 {
        NaiveDate::parse_from_str(body, "%Y-%m-%d")
            .ok()?
            .and_time(NaiveTime::MIN)
    } else {
        [
            "%Y-%m-%dT%H:%M:%S%.f",
            "%Y-%m-%d %H:%M:%S%.f",
            "%Y-%m-%dT%H:%M",
            "%Y-%m-%d %H:%M",
        ]
        .iter()
        .find_map(|fmt| NaiveDateTime::parse_from_str(body, fmt).ok())?
    };
    Some((naive, offset))
}

/// `±HH:MM`, `±HHMM` or `±HH`.
fn parse_offset(s: &str) -> Option<FixedOffset> {
    let sign = match s.as_bytes().first()? {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let rest = s.get(1..)?;
    let (h, m) = match rest.len() {
        2 => (rest, "00"),
        4 => (rest.get(..2)?, rest.get(2..)?),
        5 if rest.as_bytes().get(2) == Some(&b':') => (rest.get(..2)?, rest.get(3..)?),
        _ => return None,
    };
    if !(h.bytes().all(|b| b.is_ascii_digit()) && m.bytes().all(|b| b.is_ascii_digit())) {
        return None;
    }
    let (h, m): (i32, i32) = (h.parse().ok()?, m.parse().ok()?);
    if m >= 60 {
        return None;
    }
    FixedOffset::east_opt(sign * (h * 3_600 + m * 60))
}

/// Writes a series as a `timestamp,kwh` file that [`load_kwh_csv`] reads back to the same
/// readings (for energies below 10¹⁵ J).
///
/// Timestamps are `YYYY-MM-DDTHH:MM:SS`, with the series' offset (`+01:00`) when it has one;
/// energies are the shortest decimal that reads back to the same `f64` kWh. Gaps are left
/// out, so a series with gaps should be written with its resolution known to the reader
/// ([`LoadOptions::with_resolution`]) if the gaps could mislead inference.
pub fn write_kwh_csv<W: Write>(series: &EnergySeries, writer: W) -> io::Result<()> {
    let mut out = io::BufWriter::new(writer);
    writeln!(out, "timestamp,kwh")?;
    for r in series.readings() {
        let kwh = r.energy.to_kwh().get();
        match series.utc_offset() {
            Some(offset) => writeln!(out, "{}{offset},{kwh}", r.start.format("%Y-%m-%dT%H:%M:%S"))?,
            None => writeln!(out, "{},{kwh}", r.start.format("%Y-%m-%dT%H:%M:%S"))?,
        }
    }
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Strictness;
    use proptest::prelude::*;

    fn load(text: &str, options: &LoadOptions) -> Result<Loaded, Error> {
        load_kwh_csv_from_reader(text.as_bytes(), "test.csv", options)
    }

    fn strict(text: &str) -> Result<Loaded, Error> {
        load(text, &LoadOptions::default())
    }

    fn t(s: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").expect("valid test input")
    }

    fn failure(text: &str) -> Option<(u64, RowProblem)> {
        match strict(text) {
            Err(Error::Csv { line, problem, .. }) => Some((line, problem)),
            _ => None,
        }
    }

    #[test]
    fn timestamps_and_offsets() {
        let off = |h: i32, m: i32| FixedOffset::east_opt(h * 3600 + m * 60);
        let cases = [
            ("2007-01-31T00:15:00", t("2007-01-31 00:15:00"), None),
            ("2007-01-31 00:15:00", t("2007-01-31 00:15:00"), None),
            ("2007-01-31T00:15", t("2007-01-31 00:15:00"), None),
            ("2007-01-31", t("2007-01-31 00:00:00"), None),
            ("2007-01-31T00:15:00Z", t("2007-01-31 00:15:00"), off(0, 0)),
            (
                "2007-01-31T00:15:00+05:30",
                t("2007-01-31 00:15:00"),
                off(5, 30),
            ),
            (
                "2007-01-31T00:15:00-0330",
                t("2007-01-31 00:15:00"),
                off(-3, -30),
            ),
            (
                "2007-01-31T00:15:00+01",
                t("2007-01-31 00:15:00"),
                off(1, 0),
            ),
            (
                "2007-01-31T00:15:00.000+01:00",
                t("2007-01-31 00:15:00"),
                off(1, 0),
            ),
        ];
        for (text, naive, offset) in cases {
            assert_eq!(parse_timestamp(text), Some((naive, offset)), "{text}");
        }
        for bad in [
            "",
            "2007-01-31T25:00:00",
            "2007-02-30T00:00:00",
            "31/01/2007 00:00",
            "2007-01-31T00:15:00+5",
            "2007-01-31T00:15:00+05:60",
            "2007-01-31T00:15:00+24:00",
            "2007-01-31T00:15:00 +01:00",
            "2007-01-31T00:15:00ZZ",
            "2007-01-31é",
        ] {
            assert_eq!(parse_timestamp(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn loads_and_infers_interval() {
        let loaded = strict(
            "timestamp,kwh\n\
             2007-01-31T00:00:00,0.25\n\
             2007-01-31T00:15:00,0.5\n\
             2007-01-31T00:45:00,?\n\
             2007-01-31T01:00:00,1\n",
        );
        let Loaded { series, report } = loaded.expect("loads");
        assert_eq!(series.resolution(), Interval::FIFTEEN_MINUTES);
        assert_eq!(series.utc_offset(), None);
        let got: Vec<_> = series
            .readings()
            .iter()
            .map(|r| (r.start, r.energy.get()))
            .collect();
        assert_eq!(
            got,
            [
                (t("2007-01-31 00:00:00"), 900_000),
                (t("2007-01-31 00:15:00"), 1_800_000),
                (t("2007-01-31 01:00:00"), 3_600_000),
            ]
        );
        assert_eq!(
            (report.data_rows, report.missing_rows, report.readings),
            (4, 1, 3)
        );
    }

    #[test]
    fn offsets_are_normalised_to_one() {
        // A daylight-saving change: +01:00 then +02:00, the same instants one hour apart.
        let text = "timestamp,kwh\n\
                    2007-03-25T01:00:00+01:00,1\n\
                    2007-03-25T03:00:00+02:00,2\n";
        let loaded = load(
            text,
            &LoadOptions::default().with_resolution(Interval::HOUR),
        );
        let Loaded { series, .. } = loaded.expect("loads");
        assert_eq!(series.utc_offset(), FixedOffset::east_opt(3600));
        let starts: Vec<_> = series.readings().iter().map(|r| r.start).collect();
        assert_eq!(starts, [t("2007-03-25 01:00:00"), t("2007-03-25 02:00:00")]);

        let ist = FixedOffset::east_opt(19_800).expect("valid offset");
        let text = "timestamp,kwh\n2007-01-31T00:00:00Z,1\n2007-01-31T00:30:00Z,1\n";
        let loaded = load(text, &LoadOptions::default().with_utc_offset(ist));
        let starts: Vec<_> = loaded
            .map(|l| l.series.readings().iter().map(|r| r.start).collect())
            .expect("valid test input");
        assert_eq!(starts, [t("2007-01-31 05:30:00"), t("2007-01-31 06:00:00")]);

        let mixed = "timestamp,kwh\n2007-01-31T00:00:00Z,1\n2007-01-31T00:30:00,1\n";
        assert!(matches!(
            failure(mixed),
            Some((3, RowProblem::OffsetPresence { found: None }))
        ));
    }

    #[test]
    fn header_is_required() {
        for bad in [
            "",
            "time,kwh\n",
            "timestamp,kwh,extra\n",
            "2007-01-31T00:00:00,1\n",
        ] {
            assert!(matches!(strict(bad), Err(Error::Header { .. })), "{bad:?}");
        }
        let ok = strict("\u{feff}Timestamp , KWH\r\n2007-01-31,1\r\n2007-02-01,2\r\n");
        assert_eq!(ok.as_ref().map(|l| l.series.len()).ok(), Some(2));
        let quoted = load(
            "\"timestamp\",\"kwh\"\n\"2007-01-31T00:00\",\"0.5\"\n",
            &LoadOptions::default().with_resolution(Interval::FIFTEEN_MINUTES),
        );
        let quoted = quoted.map(|l| l.series.total().get());
        assert_eq!(quoted.ok(), Some(1_800_000), "quoted names and fields");
        assert_eq!(ok.map(|l| l.series.resolution()).ok(), Some(Interval::DAY));
    }

    /// Recognises the expected problem.
    type Check = fn(&RowProblem) -> bool;

    #[test]
    fn strict_errors_name_line_and_problem() {
        let head = "timestamp,kwh\n2007-01-31T00:00:00,0.1\n2007-01-31T00:15:00,0.1\n";
        let cases: [(&str, Check); 8] = [
            ("2007-01-31T00:30:00,0.1,3\n", |p| {
                matches!(
                    p,
                    RowProblem::ColumnCount {
                        expected: 2,
                        found: 3
                    }
                )
            }),
            ("2007-01-31T24:30:00,0.1\n", |p| {
                matches!(p, RowProblem::BadTimestamp { .. })
            }),
            ("2007-01-31T00:30:00,abc\n", |p| {
                matches!(p, RowProblem::BadNumber { .. })
            }),
            ("2007-01-31T00:30:00,NaN\n", |p| {
                matches!(p, RowProblem::BadNumber { .. })
            }),
            ("2007-01-31T00:30:00,-0.1\n", |p| {
                matches!(p, RowProblem::Negative { .. })
            }),
            ("2007-01-31T00:15:00,0.1\n", |p| {
                matches!(p, RowProblem::Duplicate { .. })
            }),
            ("2007-01-31T00:10:00,0.1\n", |p| {
                matches!(p, RowProblem::OutOfOrder { .. })
            }),
            // 30 kWh in 15 minutes is 120 kW on average.
            (
                "2007-01-31T00:30:00,30\n",
                |p| matches!(p, RowProblem::Implausible { average_kw, .. } if (*average_kw - 120.0).abs() < 1e-9),
            ),
        ];
        for (bad, is_expected) in cases {
            let found = failure(&format!("{head}{bad}"));
            assert!(
                found
                    .as_ref()
                    .is_some_and(|(line, p)| *line == 4 && is_expected(p)),
                "{bad:?} gave {found:?}"
            );
        }
        // Spacings 15, 15, 16, 14, 15 min: 15 min is inferred and 00:46 is off its grid.
        let misaligned = format!(
            "{head}2007-01-31T00:30:00,0.1\n2007-01-31T00:46:00,0.1\n\
             2007-01-31T01:00:00,0.1\n2007-01-31T01:15:00,0.1\n"
        );
        assert!(matches!(
            failure(&misaligned),
            Some((5, RowProblem::Misaligned { .. }))
        ));
    }

    #[test]
    fn explicit_interval_checks_in_line_order() {
        let text = "timestamp,kwh\n2007-01-31T00:07:00,0.1\n2007-01-31T00:00:00,0.1\n";
        let o = LoadOptions::default().with_resolution(Interval::FIFTEEN_MINUTES);
        assert!(matches!(
            load(text, &o),
            Err(Error::Csv {
                line: 2,
                problem: RowProblem::Misaligned { .. },
                ..
            })
        ));
    }

    #[test]
    fn interval_inference() {
        assert!(matches!(
            strict("timestamp,kwh\n2007-01-31T00:00:00,1\n"),
            Err(Error::UnknownResolution { .. })
        ));
        assert!(matches!(
            strict("timestamp,kwh\n2007-01-31T00:00:00,1\n2007-01-31T00:07:00,1\n"),
            Err(Error::UnknownResolution { .. })
        ));
        // 15 min twice, 1 h once: 15 min wins.
        let text = "timestamp,kwh\n\
                    2007-01-31T00:00:00,1\n2007-01-31T00:15:00,1\n\
                    2007-01-31T00:30:00,1\n2007-01-31T01:30:00,1\n";
        assert_eq!(
            strict(text).map(|l| l.series.resolution()).ok(),
            Some(Interval::FIFTEEN_MINUTES)
        );
        let o = LoadOptions::default().with_resolution(Interval::DAY);
        assert!(load("timestamp,kwh\n", &o).is_ok_and(|l| l.series.is_empty()));
    }

    #[test]
    fn lenient_load_reports_skips() {
        let text = "timestamp,kwh\n\
                    2007-01-31T00:00:00,0.1\n\
                    2007-01-31T00:15:00,-1\n\
                    2007-01-31T00:15:00,0.2\n\
                    2007-01-31T00:15:00,0.3\n\
                    2007-01-31T00:30:00,99\n\
                    2007-01-31T00:45:00,0.4\n";
        let o = LoadOptions::default().with_strictness(Strictness::SkipInvalid { max_skipped: 5 });
        let loaded = load(text, &o);
        let Loaded { series, report } = loaded.expect("loads");
        let skipped: Vec<u64> = report.skipped.iter().map(|s| s.line).collect();
        assert_eq!(skipped, [3, 5, 6]);
        assert_eq!(series.len(), 3);
        assert_eq!(series.total().get(), (1 + 2 + 4) * 360_000);
    }

    #[test]
    fn write_then_load_round_trips() {
        let text = "timestamp,kwh\n\
                    2007-01-31T00:00:00+05:30,0.123\n\
                    2007-01-31T00:15:00+05:30,0\n\
                    2007-01-31T00:30:00+05:30,1.5\n";
        let loaded = strict(text).map(|l| l.series);
        let series = loaded.expect("loads");
        let mut out = Vec::new();
        assert!(write_kwh_csv(&series, &mut out).is_ok());
        let written = String::from_utf8_lossy(&out);
        assert_eq!(written, text);
        assert_eq!(strict(&written).map(|l| l.series).ok(), Some(series));
    }

    proptest! {
        #[test]
        fn round_trip_any_series(
            start_slot in 0i64..100_000,
            steps in proptest::collection::vec((1i64..4, 0i64..90_000_000), 2..50),
            offset_minutes in proptest::option::of(-720i32..=720),
        ) {
            let base = t("2020-01-01 00:00:00") + TimeDelta::minutes(start_slot * 15);
            let mut at = base;
            let mut readings = Vec::new();
            for (gap, joules) in steps {
                readings.push(Reading { start: at, energy: Joules::try_new(joules).expect("valid test input") });
                at += TimeDelta::minutes(15 * gap);
            }
            let offset = offset_minutes.and_then(|m| FixedOffset::east_opt(m * 60));
            let series = EnergySeries::try_new(Interval::FIFTEEN_MINUTES, offset, readings)
                .expect("valid series");
            let mut out = Vec::new();
            prop_assert!(write_kwh_csv(&series, &mut out).is_ok());
            let options = LoadOptions::default().with_resolution(Interval::FIFTEEN_MINUTES);
            let back = load_kwh_csv_from_reader(out.as_slice(), "rt", &options).map(|l| l.series);
            prop_assert_eq!(back.ok(), Some(series));
        }
    }
}
