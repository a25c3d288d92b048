//! What the loaders share: options, the load report, row triage and CSV plumbing.

use std::io::{self, BufRead, Read};
use std::path::{Path, PathBuf};

use chrono::{FixedOffset, NaiveDateTime};

use super::calendar;
use super::interval::Interval;
use super::series::EnergySeries;
use crate::error::{Error, RowProblem, snippet};

/// What a loader does with a malformed or implausible row.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Strictness {
    /// The first bad row aborts the load with [`Error::Csv`] naming its line (the default).
    #[default]
    Strict,
    /// Bad rows are skipped and listed in [`LoadReport::skipped`]; once more than
    /// `max_skipped` rows have been skipped the load aborts with
    /// [`Error::TooManyInvalidRows`], so a file in the wrong format does not load as empty.
    SkipInvalid {
        /// The most rows that may be skipped.
        max_skipped: usize,
    },
}

/// Options shared by the loaders. Build with [`LoadOptions::default`] and the `with_*` methods.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LoadOptions {
    strictness: Strictness,
    max_average_power_kw: f64,
    resolution: Option<Interval>,
    utc_offset: Option<FixedOffset>,
}

impl LoadOptions {
    /// The default plausibility limit: 100 kW average over any reading.
    ///
    /// That is above any household connection (a 100 A three-phase supply at 415 V is about
    /// 72 kVA; the UCI household peaks at 11.1 kW) yet low enough to catch the usual unit
    /// mistake, watt-hours written as kilowatt-hours (×1000), for all but near-idle readings.
    pub const DEFAULT_MAX_AVERAGE_POWER_KW: f64 = 100.0;

    /// Sets what happens to bad rows (default [`Strictness::Strict`]).
    #[must_use]
    pub fn with_strictness(mut self, strictness: Strictness) -> Self {
        self.strictness = strictness;
        self
    }

    /// Sets the plausibility limit: a reading whose energy implies a higher average power over
    /// its interval is a bad row ([`RowProblem::Implausible`]). Must be finite and positive.
    pub fn try_with_max_average_power_kw(mut self, kw: f64) -> Result<Self, Error> {
        if !(kw.is_finite() && kw > 0.0) {
            return Err(Error::InvalidOption {
                option: "max_average_power_kw",
                reason: format!("{kw} is not a finite positive power in kW"),
            });
        }
        self.max_average_power_kw = kw;
        Ok(self)
    }

    /// Sets the reading interval instead of inferring it (`timestamp,kwh` files). The UCI
    /// loader accepts only [`Interval::MINUTE`] here.
    #[must_use]
    pub fn with_resolution(mut self, resolution: Interval) -> Self {
        self.resolution = Some(resolution);
        self
    }

    /// Sets the UTC offset of the resulting series. Timestamps that carry an offset are
    /// converted to it; timestamps without one are taken to be in it already. Without this
    /// option a `timestamp,kwh` series takes its first row's offset (or none).
    #[must_use]
    pub fn with_utc_offset(mut self, offset: FixedOffset) -> Self {
        self.utc_offset = Some(offset);
        self
    }

    /// What happens to bad rows.
    pub fn strictness(&self) -> Strictness {
        self.strictness
    }

    /// The plausibility limit in kW.
    pub fn max_average_power_kw(&self) -> f64 {
        self.max_average_power_kw
    }

    /// The explicit reading interval, if set.
    pub fn resolution(&self) -> Option<Interval> {
        self.resolution
    }

    /// The explicit UTC offset, if set.
    pub fn utc_offset(&self) -> Option<FixedOffset> {
        self.utc_offset
    }
}

impl Default for LoadOptions {
    /// Strict, 100 kW limit, interval inferred, offset from the data.
    fn default() -> Self {
        Self {
            strictness: Strictness::Strict,
            max_average_power_kw: Self::DEFAULT_MAX_AVERAGE_POWER_KW,
            resolution: None,
            utc_offset: None,
        }
    }
}

/// A row a lenient load skipped.
#[derive(Clone, Debug, PartialEq)]
pub struct SkippedRow {
    /// The 1-based line where the row starts.
    pub line: u64,
    /// What was wrong with it.
    pub problem: RowProblem,
}

/// What a load read, kept and dropped.
///
/// `data_rows == readings + missing_rows + skipped.len()`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LoadReport {
    /// Rows after the header (blank lines are not rows).
    pub data_rows: u64,
    /// Readings in the resulting series.
    pub readings: usize,
    /// Well-formed rows whose energy field held a missing-value marker (`?` or empty): their
    /// slot is a gap in the series.
    pub missing_rows: u64,
    /// Rows skipped under [`Strictness::SkipInvalid`], in the order met.
    pub skipped: Vec<SkippedRow>,
}

/// A loaded series with its report.
#[derive(Clone, Debug, PartialEq)]
pub struct Loaded {
    /// The readings.
    pub series: EnergySeries,
    /// What was read, kept and dropped.
    pub report: LoadReport,
}

/// Applies the strictness to bad rows.
pub(crate) struct Triage<'a> {
    path: &'a Path,
    strictness: Strictness,
    skipped: Vec<SkippedRow>,
}

impl<'a> Triage<'a> {
    pub(crate) fn new(path: &'a Path, strictness: Strictness) -> Self {
        Self {
            path,
            strictness,
            skipped: Vec::new(),
        }
    }

    /// Aborts (strict, or over the limit) or records the bad row.
    pub(crate) fn reject(&mut self, line: u64, problem: RowProblem) -> Result<(), Error> {
        match self.strictness {
            Strictness::Strict => Err(Error::Csv {
                path: self.path.to_path_buf(),
                line,
                problem,
            }),
            Strictness::SkipInvalid { max_skipped } if self.skipped.len() >= max_skipped => {
                Err(Error::TooManyInvalidRows {
                    path: self.path.to_path_buf(),
                    limit: max_skipped,
                    line,
                    problem,
                })
            }
            Strictness::SkipInvalid { .. } => {
                tracing::debug!(path = %self.path.display(), line, %problem, "skipping invalid row");
                self.skipped.push(SkippedRow { line, problem });
                Ok(())
            }
        }
    }

    pub(crate) fn into_skipped(self) -> Vec<SkippedRow> {
        self.skipped
    }
}

/// Checks that timestamps are strictly increasing.
#[derive(Default)]
pub(crate) struct Order {
    previous: Option<NaiveDateTime>,
}

impl Order {
    /// The problem with `t` following the last accepted timestamp, if any.
    pub(crate) fn check(&self, t: NaiveDateTime) -> Result<(), RowProblem> {
        match self.previous {
            Some(p) if p == t => Err(RowProblem::Duplicate { timestamp: t }),
            Some(p) if p > t => Err(RowProblem::OutOfOrder {
                timestamp: t,
                previous: p,
            }),
            _ => Ok(()),
        }
    }

    /// Records `t` as the last accepted timestamp.
    pub(crate) fn accept(&mut self, t: NaiveDateTime) {
        self.previous = Some(t);
    }
}

/// The range and grid checks every reading's start must pass.
pub(crate) fn check_start(t: NaiveDateTime, resolution: Interval) -> Result<(), RowProblem> {
    if !calendar::is_supported(t) {
        return Err(RowProblem::OutOfRange { timestamp: t });
    }
    if !resolution.is_aligned(t) {
        return Err(RowProblem::Misaligned {
            timestamp: t,
            interval: resolution,
        });
    }
    Ok(())
}

/// The plausibility check: `kwh` over `resolution` must not exceed `limit_kw` on average.
pub(crate) fn check_power(
    column: &'static str,
    value: f64,
    kwh: f64,
    resolution: Interval,
    limit_kw: f64,
) -> Result<(), RowProblem> {
    let average_kw = kwh * 3_600.0 / f64::from(resolution.as_secs());
    if average_kw > limit_kw {
        return Err(RowProblem::Implausible {
            column,
            value,
            average_kw,
            limit_kw,
        });
    }
    Ok(())
}

/// Whether a field is a missing-value marker: empty or `?`.
pub(crate) fn is_missing(field: &[u8]) -> bool {
    field.is_empty() || field == b"?"
}

/// Parses a finite, non-negative decimal number (`-0` reads as `0`).
pub(crate) fn parse_quantity(field: &[u8], column: &'static str) -> Result<f64, RowProblem> {
    let value = std::str::from_utf8(field)
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|v| v.is_finite())
        .ok_or_else(|| RowProblem::BadNumber {
            column,
            value: snippet(field),
        })?;
    if value < 0.0 {
        return Err(RowProblem::Negative { column, value });
    }
    Ok(value + 0.0)
}

/// The longest header line read before giving up on finding its end.
const MAX_HEADER_BYTES: u64 = 64 * 1024;

/// Reads the first line (without its line end and a UTF-8 byte-order mark).
pub(crate) fn read_header_line<R: BufRead>(reader: &mut R, path: &Path) -> Result<String, Error> {
    let mut line = Vec::new();
    reader
        .by_ref()
        .take(MAX_HEADER_BYTES)
        .read_until(b'\n', &mut line)
        .map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
    let line = line.strip_prefix(b"\xef\xbb\xbf").unwrap_or(&line);
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    Ok(String::from_utf8_lossy(line).into_owned())
}

/// A CSV reader over the rows after the header (blank lines skipped).
///
/// Records end at `\n` only: with csv's default CRLF terminator a record after a `\r\n` line
/// end is positioned on the previous line, which would put every reported line number one
/// short. The `\r` of a CRLF line end thus stays in the last field; callers trim each field
/// with `trim_ascii` (cheaper than csv's own trimming, which copies the record).
pub(crate) fn csv_reader<R: Read>(reader: R, delimiter: u8) -> csv::Reader<R> {
    csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .terminator(csv::Terminator::Any(b'\n'))
        .delimiter(delimiter)
        .buffer_capacity(64 * 1024)
        .from_reader(reader)
}

/// Converts a CSV reader failure (in practice an I/O error) into [`Error::Io`].
pub(crate) fn csv_failure(path: &Path, err: csv::Error) -> Error {
    let source = match err.into_kind() {
        csv::ErrorKind::Io(source) => source,
        other => io::Error::new(io::ErrorKind::InvalidData, format!("{other:?}")),
    };
    Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Opens a file for streaming, naming it in the error.
pub(crate) fn open(path: &Path) -> Result<io::BufReader<std::fs::File>, Error> {
    std::fs::File::open(path)
        .map(|f| io::BufReader::with_capacity(256 * 1024, f))
        .map_err(|source| Error::Io {
            path: PathBuf::from(path),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_validate() {
        let o = LoadOptions::default();
        assert_eq!(o.strictness(), Strictness::Strict);
        assert_eq!(o.max_average_power_kw(), 100.0);
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(
                o.try_with_max_average_power_kw(bad).is_err(),
                "{bad} accepted"
            );
        }
        assert_eq!(
            o.try_with_max_average_power_kw(20.0)
                .map(|o| o.max_average_power_kw())
                .ok(),
            Some(20.0)
        );
    }

    #[test]
    fn quantities() {
        assert_eq!(parse_quantity(b"4.216", "x").ok(), Some(4.216));
        assert_eq!(parse_quantity(b"1e-3", "x").ok(), Some(0.001));
        assert!(parse_quantity(b"-0.0", "x").is_ok_and(|v| v.is_sign_positive()));
        for bad in [&b"NaN"[..], b"inf", b"1,5", b"4.2x", b"", b"\xff"] {
            assert!(
                matches!(parse_quantity(bad, "x"), Err(RowProblem::BadNumber { .. })),
                "{bad:?}"
            );
        }
        assert_eq!(
            parse_quantity(b"-1.5", "x"),
            Err(RowProblem::Negative {
                column: "x",
                value: -1.5
            })
        );
    }

    #[test]
    fn triage_limits_skips() {
        let path = Path::new("f.csv");
        let problem = RowProblem::ColumnCount {
            expected: 2,
            found: 1,
        };
        let mut strict = Triage::new(path, Strictness::Strict);
        assert!(matches!(
            strict.reject(3, problem.clone()),
            Err(Error::Csv { line: 3, .. })
        ));
        let mut lenient = Triage::new(path, Strictness::SkipInvalid { max_skipped: 1 });
        assert!(lenient.reject(3, problem.clone()).is_ok());
        assert!(matches!(
            lenient.reject(4, problem),
            Err(Error::TooManyInvalidRows {
                limit: 1,
                line: 4,
                ..
            })
        ));
        assert_eq!(lenient.into_skipped().len(), 1);
    }

    #[test]
    fn header_line_strips_bom_and_crlf() {
        let mut input: &[u8] = b"\xef\xbb\xbftimestamp,kwh\r\nrest";
        let header = read_header_line(&mut input, Path::new("f"));
        assert_eq!(header.ok().as_deref(), Some("timestamp,kwh"));
        assert_eq!(input, b"rest");
    }
}
