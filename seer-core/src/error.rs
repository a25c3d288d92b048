//! The crate's error type.
//!
//! [`Error`] is the one error enum of `seer-core`. It is `#[non_exhaustive]`: later layers
//! (tariffs, lanes, circuits) add variants, so match on the variants you handle and keep a
//! wildcard arm. Variants carry structured fields rather than preformatted strings, so callers
//! can react to them and log them as `tracing` fields; the `Display` messages are lowercase
//! without a trailing period.
//!
//! Problems with one row of an input file are described by [`RowProblem`], which
//! [`Error::Csv`] wraps together with the file and the 1-based line number.

use std::fmt;
use std::path::PathBuf;

use chrono::{FixedOffset, NaiveDate, NaiveDateTime};

use crate::data::Interval;

/// Everything that can go wrong in `seer-core`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading a file (or the reader standing for it) failed.
    #[error("failed to read {}", path.display())]
    Io {
        /// The file, or the label given for a reader.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },

    /// One row of a CSV input is malformed or implausible.
    #[error("{}:{line}: {problem}", path.display())]
    Csv {
        /// The file, or the label given for a reader.
        path: PathBuf,
        /// The 1-based line number where the row starts (the header is line 1).
        line: u64,
        /// What is wrong with the row.
        problem: RowProblem,
    },

    /// The first line of a CSV input is not the header the format requires.
    #[error("unexpected header in {}: expected {expected:?}, found {found:?}", path.display())]
    Header {
        /// The file, or the label given for a reader.
        path: PathBuf,
        /// The header (or the list of accepted headers) the format requires.
        expected: String,
        /// What the first line held (shortened if long).
        found: String,
    },

    /// A lenient load met more invalid rows than its `max_skipped` allows.
    #[error(
        "too many invalid rows in {}: more than {limit} skipped, last at line {line}: {problem}",
        path.display()
    )]
    TooManyInvalidRows {
        /// The file, or the label given for a reader.
        path: PathBuf,
        /// The configured maximum number of skipped rows.
        limit: usize,
        /// The line of the row that went over the limit.
        line: u64,
        /// What was wrong with that row.
        problem: RowProblem,
    },

    /// The reading interval of a `timestamp,kwh` file could not be inferred.
    #[error("cannot infer the reading interval of {}: {reason}", path.display())]
    UnknownResolution {
        /// The file, or the label given for a reader.
        path: PathBuf,
        /// Why inference failed; setting the interval explicitly avoids it.
        reason: String,
    },

    /// A loader or computation option is out of range.
    #[error("invalid option {option}: {reason}")]
    InvalidOption {
        /// The option's name.
        option: &'static str,
        /// Why the value is refused.
        reason: String,
    },

    /// A physical quantity (an energy) is negative, not finite or absurdly large.
    #[error("invalid {unit} value {value}: {reason}")]
    InvalidQuantity {
        /// The unit symbol, e.g. `"kWh"`.
        unit: &'static str,
        /// The refused value as text.
        value: String,
        /// Why it is refused.
        reason: &'static str,
    },

    /// A resampling interval is not a positive whole number of seconds dividing a day.
    #[error("invalid interval of {seconds} s: {reason}")]
    InvalidInterval {
        /// The refused length in seconds.
        seconds: i64,
        /// Why it is refused.
        reason: &'static str,
    },

    /// A calendar month is out of the supported range.
    #[error("invalid calendar month {year}-{month:02}")]
    InvalidMonth {
        /// The year.
        year: i32,
        /// The month number (valid ones are 1 to 12).
        month: u32,
    },

    /// A billing period's text is not `YYYY-MM` (see [`Period`](crate::Period)).
    #[error("period {period:?} is not YYYY-MM")]
    InvalidPeriod {
        /// The refused text (at most 32 characters of it).
        period: String,
    },

    /// A day's text is not `YYYY-MM-DD` (see [`parse_day`](crate::vocab::parse_day)).
    #[error("{day:?} is not a day: a day is written YYYY-MM-DD")]
    InvalidDay {
        /// The refused text (at most 32 characters of it).
        day: String,
    },

    /// An hour's text is not `YYYY-MM-DDTHH:00` (see
    /// [`SlotPeriod`](crate::registered::SlotPeriod)).
    #[error("{hour:?} is not an hour: an hour is written YYYY-MM-DDTHH:00")]
    InvalidHour {
        /// The refused text (at most 32 characters of it).
        hour: String,
    },

    /// A meter id breaks the rule of [`MeterId`](crate::MeterId).
    #[error("meter id {meter_id:?} is invalid: {reason}")]
    InvalidMeterId {
        /// The refused id (at most 80 characters of it).
        meter_id: String,
        /// Which part of the rule it breaks.
        reason: &'static str,
    },

    /// A lane's wire form (name, ε, readings per day) is not a lane (see
    /// [`Lane`](crate::Lane)).
    #[error("{reason}")]
    InvalidLane {
        /// Why it is refused.
        reason: String,
    },

    /// Readings handed to a series constructor violate its invariants.
    #[error("invalid series: reading {index}: {problem}")]
    InvalidSeries {
        /// The 0-based index of the offending reading.
        index: usize,
        /// What is wrong with it.
        problem: RowProblem,
    },

    /// A series cannot be resampled into the requested interval.
    #[error(
        "cannot resample a {from} series into {to} intervals: {to} is not a whole multiple of {from}"
    )]
    IncompatibleInterval {
        /// The series' resolution.
        from: Interval,
        /// The requested interval.
        to: Interval,
    },

    /// Resampling would produce more intervals than
    /// [`MAX_RESAMPLED_INTERVALS`](crate::data::MAX_RESAMPLED_INTERVALS): the readings span
    /// far more time than any meter's data (a few readings centuries apart would otherwise
    /// allocate gigabytes of empty intervals).
    #[error(
        "resampling into {interval} intervals would make {intervals} of them (at most {limit})"
    )]
    TooManyIntervals {
        /// The requested interval.
        interval: Interval,
        /// How many intervals the readings span.
        intervals: u64,
        /// The limit.
        limit: u64,
    },

    // --- Differential privacy (`dp`): the analytics lane's noise and privacy budgets. ---
    /// A privacy-loss parameter ε is not a positive finite number within the accepted range.
    #[error("invalid epsilon {value}: {reason}")]
    InvalidEpsilon {
        /// The refused value.
        value: f64,
        /// Why it is refused.
        reason: &'static str,
    },

    /// A release would take a meter's spent ε past its budget for the period; nothing was
    /// released or charged.
    #[error(
        "privacy budget exhausted for meter {meter}: spent {spent}, requested {requested}, \
         budget {budget} for the period starting {period_start}"
    )]
    BudgetExhausted {
        /// The meter.
        meter: String,
        /// The first day of the budget period.
        period_start: NaiveDate,
        /// The ε already spent in the period.
        spent: f64,
        /// The ε the refused release would cost.
        requested: f64,
        /// The budget per period.
        budget: f64,
    },

    /// A privacy budget was asked to charge a period before its current one.
    #[error(
        "privacy budget period of meter {meter} cannot go back from the period starting \
         {current} to {requested}"
    )]
    PeriodRegression {
        /// The meter.
        meter: String,
        /// The first day of the current budget period.
        current: NaiveDate,
        /// The date asked for.
        requested: NaiveDate,
    },

    /// A persisted privacy-budget state is inconsistent.
    #[error("invalid privacy budget state for meter {meter}: {reason}")]
    InvalidPrivacyState {
        /// The meter the state names.
        meter: String,
        /// What is wrong with it.
        reason: String,
    },

    /// The operating system's random number generator failed.
    #[error("operating system randomness unavailable")]
    EntropyUnavailable {
        /// The underlying error.
        #[source]
        source: rand::rngs::SysError,
    },
    // --- end of differential privacy ---

    // --- Tariffs and billing (`tariff`, `circuits::billing`). ---
    /// A tariff configuration is invalid.
    #[error("invalid tariff: {location}: {reason}")]
    InvalidTariff {
        /// Where in the configuration, e.g. `slabs[2].up_to_kwh`.
        location: String,
        /// What is wrong.
        reason: String,
    },

    /// A reading handed to the billing lane does not start after the previous one.
    #[error("reading at {timestamp} does not start after the previous reading at {previous}")]
    ReadingOutOfOrder {
        /// The refused reading's start.
        timestamp: NaiveDateTime,
        /// The previous reading's start.
        previous: NaiveDateTime,
    },

    /// Per-cell energies shaped for one tariff met a tariff (or energies) of another shape.
    #[error(
        "cell shape mismatch: expected {expected_slabs} slabs × {expected_bands} bands, found \
         {found_slabs} × {found_bands}"
    )]
    CellShapeMismatch {
        /// Slabs expected.
        expected_slabs: usize,
        /// Bands expected.
        expected_bands: usize,
        /// Slabs found (for a flat list: its length).
        found_slabs: usize,
        /// Bands found (for a flat list: 1).
        found_bands: usize,
    },

    /// A home's position is outside its packing group.
    #[error("home position {position} is outside a packing group of {capacity} homes")]
    HomeOutsideGroup {
        /// The refused position.
        position: usize,
        /// The number of homes a group holds.
        capacity: usize,
    },

    /// A billing layout does not fit the CKKS parameters, or a ciphertext or slot vector does
    /// not fit the layout.
    #[error("billing layout mismatch: {reason}")]
    BillingLayout {
        /// What does not fit.
        reason: String,
    },

    /// A batch's charge or a decrypted bill is outside the range the billing circuit can
    /// represent (a wrong key, a corrupted ciphertext or an implausible consumption).
    #[error("bill out of range for home position {position}: {value} rupees, limit {limit}")]
    BillOutOfRange {
        /// The home's position in its group.
        position: usize,
        /// The value in rupees.
        value: f64,
        /// The largest magnitude accepted.
        limit: f64,
    },

    /// A slot block is empty or does not fit the ciphertext's slots.
    #[error("slot block {start}..{end} is empty or outside {slots} slots")]
    InvalidSlotBlock {
        /// First slot.
        start: usize,
        /// End (exclusive).
        end: usize,
        /// Slots per ciphertext.
        slots: usize,
    },

    /// Several meters' inputs cannot be combined in one evaluation as asked.
    #[error("meter isolation: {reason}")]
    Isolation {
        /// Why.
        reason: String,
    },

    /// A decrypted tariff cell of the billing circuit's output is no plausible whole number
    /// of Wh (a meter encrypted something else, or the key is wrong). Names no value.
    #[error("cell {cell} of home position {position} {problem}")]
    ImplausibleCell {
        /// The home's position in its group.
        position: usize,
        /// The cell, in the tariff's cell order.
        cell: usize,
        /// What is wrong with it.
        problem: &'static str,
    },

    /// The CKKS engine refused an operation.
    #[error("ckks: {0}")]
    Ckks(#[from] seer_ckks::CkksError),
    // --- end of tariffs and billing ---
}

/// What is wrong with one row of an input (or one reading handed to a series).
///
/// Values copied from the input are shortened to a few dozen characters.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum RowProblem {
    /// The row has the wrong number of fields.
    ColumnCount {
        /// The number of fields the format has.
        expected: usize,
        /// The number of fields the row has.
        found: usize,
    },
    /// A timestamp does not parse or names a date that does not exist.
    BadTimestamp {
        /// The text found.
        value: String,
        /// The accepted format(s), for the message.
        expected: &'static str,
    },
    /// A numeric field does not parse as a finite number.
    BadNumber {
        /// The column's name.
        column: &'static str,
        /// The text found.
        value: String,
    },
    /// A quantity that cannot be negative is.
    Negative {
        /// The column's name.
        column: &'static str,
        /// The value found.
        value: f64,
    },
    /// An energy implies an average power above the configured limit over its interval.
    Implausible {
        /// The column's name.
        column: &'static str,
        /// The value found, in the column's unit.
        value: f64,
        /// The average power it implies, in kW.
        average_kw: f64,
        /// The configured limit, in kW.
        limit_kw: f64,
    },
    /// The row repeats the previous row's timestamp.
    Duplicate {
        /// The repeated timestamp.
        timestamp: NaiveDateTime,
    },
    /// The row's timestamp is earlier than the previous row's.
    OutOfOrder {
        /// This row's timestamp.
        timestamp: NaiveDateTime,
        /// The previous accepted row's timestamp.
        previous: NaiveDateTime,
    },
    /// The timestamp is not on the grid of the series' reading interval.
    Misaligned {
        /// The timestamp.
        timestamp: NaiveDateTime,
        /// The reading interval whose grid (anchored at midnight) it misses.
        interval: Interval,
    },
    /// Some timestamps carry a UTC offset and others do not.
    OffsetPresence {
        /// The offset this row carries, if any.
        found: Option<FixedOffset>,
    },
    /// The timestamp is outside the supported years 1 to 9999.
    OutOfRange {
        /// The timestamp.
        timestamp: NaiveDateTime,
    },
}

impl fmt::Display for RowProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ColumnCount { expected, found } => {
                write!(f, "wrong column count: expected {expected}, found {found}")
            }
            Self::BadTimestamp { value, expected } => {
                write!(f, "bad timestamp {value:?}: expected {expected}")
            }
            Self::BadNumber { column, value } => {
                write!(
                    f,
                    "bad number in {column}: {value:?} is not a finite decimal number"
                )
            }
            Self::Negative { column, value } => write!(f, "negative {column}: {value}"),
            Self::Implausible {
                column,
                value,
                average_kw,
                limit_kw,
            } => write!(
                f,
                "implausible {column} {value}: an average of {average_kw:.1} kW over the \
                 reading, above the {limit_kw} kW limit"
            ),
            Self::Duplicate { timestamp } => write!(f, "duplicate timestamp {timestamp}"),
            Self::OutOfOrder {
                timestamp,
                previous,
            } => write!(
                f,
                "timestamp {timestamp} is earlier than the previous row's {previous}"
            ),
            Self::Misaligned {
                timestamp,
                interval,
            } => write!(
                f,
                "timestamp {timestamp} is not aligned to the {interval} grid (anchored at midnight)"
            ),
            Self::OffsetPresence {
                found: Some(offset),
            } => write!(
                f,
                "timestamp has utc offset {offset} but the first row's has none"
            ),
            Self::OffsetPresence { found: None } => {
                write!(f, "timestamp has no utc offset but the first row's has one")
            }
            Self::OutOfRange { timestamp } => {
                write!(f, "timestamp {timestamp} is outside the years 1 to 9999")
            }
        }
    }
}

/// The longest input snippet copied into an error.
const SNIPPET_CHARS: usize = 40;

/// Copies at most [`SNIPPET_CHARS`] characters of `bytes` (lossily decoded) for an error.
pub(crate) fn snippet(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut chars = text.chars();
    let mut out: String = chars.by_ref().take(SNIPPET_CHARS).collect();
    if chars.next().is_some() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_error_names_file_line_and_problem() {
        let err = Error::Csv {
            path: PathBuf::from("data/x.csv"),
            line: 7,
            problem: RowProblem::ColumnCount {
                expected: 8,
                found: 7,
            },
        };
        assert_eq!(
            err.to_string(),
            "data/x.csv:7: wrong column count: expected 8, found 7"
        );
    }

    #[test]
    fn io_error_keeps_its_source() {
        let err = Error::Io {
            path: PathBuf::from("missing.csv"),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "gone"),
        };
        assert_eq!(err.to_string(), "failed to read missing.csv");
        let source = std::error::Error::source(&err).map(ToString::to_string);
        assert_eq!(source.as_deref(), Some("gone"));
    }

    #[test]
    fn messages_are_lowercase_without_trailing_period() {
        let problems = [
            RowProblem::BadNumber {
                column: "kwh",
                value: "x".into(),
            },
            RowProblem::Negative {
                column: "kwh",
                value: -1.0,
            },
            RowProblem::OffsetPresence { found: None },
        ];
        for p in problems {
            let text = p.to_string();
            assert!(text.starts_with(|c: char| c.is_lowercase()), "{text}");
            assert!(!text.ends_with('.'), "{text}");
        }
    }

    #[test]
    fn snippet_shortens_long_and_invalid_input() {
        assert_eq!(snippet(b"abc"), "abc");
        let long = snippet(&[b'x'; 100]);
        assert_eq!(long.chars().count(), SNIPPET_CHARS + 1);
        assert!(long.ends_with('…'));
        assert_eq!(snippet(&[0xff, b'a']), "\u{fffd}a");
    }
}
