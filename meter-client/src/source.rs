//! Where readings come from: the UCI minute file, a `timestamp,kwh` file, or a synthetic home.
//!
//! Every source becomes a [`ReadingStream`]: one meter's readings in time order on one grid,
//! 15 minutes for any source whose interval divides 15 minutes (the UCI minute data, 5-minute
//! files, 15-minute files), otherwise the least common multiple of the source's interval and
//! 15 minutes (30 minutes for a 10-minute file, the source's own interval for hourly files).
//!
//! Finer sources are summed into that grid with seer-core's
//! [`GapPolicy::COMPLETE_ONLY`]: an interval with any missing minute is **skipped**, not
//! estimated — nothing is invented, because the billing lane bills what it carries. Skipped
//! intervals are counted in [`ReadingStream::skipped_intervals`]; they are simply absent from
//! the batches (their analytics slots hold zero and are neither noised nor charged ε, and the
//! batch's `readings` count says how many readings it holds).
//!
//! Loading is strict: a malformed or implausible row stops the client with seer-core's error,
//! which names the file and the 1-based line.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use chrono::{FixedOffset, NaiveDate, NaiveDateTime, NaiveTime};
use seer_core::data::{GapPolicy, Interval, LoadOptions, load_kwh_csv, load_uci};
use seer_core::units::Joules;

use crate::error::Error;
use crate::synthetic::SyntheticHome;

/// The grid every source is brought to when its interval allows.
pub const TARGET_INTERVAL: Interval = Interval::FIFTEEN_MINUTES;

/// The first day a synthetic source generates when no `from` date is given.
pub const SYNTHETIC_DEFAULT_FROM: NaiveDate = match NaiveDate::from_ymd_opt(2024, 1, 1) {
    Some(d) => d,
    None => NaiveDate::MIN,
};

/// A `--source` specification.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SourceSpec {
    /// `uci:FILE`: the UCI household power data set (minute readings).
    Uci(PathBuf),
    /// `csv:FILE`: a `timestamp,kwh` file, any interval dividing a day.
    Csv(PathBuf),
    /// `synthetic:SEED:HOME`: home number `HOME` of the synthetic population `SEED`.
    Synthetic {
        /// The population's seed.
        seed: u64,
        /// The home's number in the population.
        home: u32,
    },
}

impl FromStr for SourceSpec {
    type Err = Error;

    fn from_str(spec: &str) -> Result<Self, Error> {
        let invalid = |reason: &str| Error::InvalidSource {
            spec: spec.to_owned(),
            reason: reason.to_owned(),
        };
        let (kind, rest) = spec
            .split_once(':')
            .ok_or_else(|| invalid("expected uci:FILE, csv:FILE or synthetic:SEED:HOME"))?;
        match kind {
            "uci" | "csv" if rest.is_empty() => Err(invalid("the file name is empty")),
            "uci" => Ok(Self::Uci(PathBuf::from(rest))),
            "csv" => Ok(Self::Csv(PathBuf::from(rest))),
            "synthetic" => {
                let (seed, home) = rest
                    .split_once(':')
                    .ok_or_else(|| invalid("expected synthetic:SEED:HOME"))?;
                let seed = seed
                    .parse()
                    .map_err(|_| invalid("SEED is not an unsigned 64-bit integer"))?;
                let home = home
                    .parse()
                    .map_err(|_| invalid("HOME is not an unsigned 32-bit integer"))?;
                Ok(Self::Synthetic { seed, home })
            }
            _ => Err(invalid(
                "unknown kind: expected uci:FILE, csv:FILE or synthetic:SEED:HOME",
            )),
        }
    }
}

impl fmt::Display for SourceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Uci(path) => write!(f, "uci:{}", path.display()),
            Self::Csv(path) => write!(f, "csv:{}", path.display()),
            Self::Synthetic { seed, home } => write!(f, "synthetic:{seed}:{home}"),
        }
    }
}

/// The dates to read: readings starting on or after `from` and before `until` (either bound
/// optional). A synthetic source needs a finite range: it defaults to
/// [`SYNTHETIC_DEFAULT_FROM`] and one calendar month after `from`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DateRange {
    /// The first day read.
    pub from: Option<NaiveDate>,
    /// The first day not read.
    pub until: Option<NaiveDate>,
}

impl DateRange {
    fn contains(&self, t: NaiveDateTime) -> bool {
        self.from.is_none_or(|d| t.date() >= d) && self.until.is_none_or(|d| t.date() < d)
    }
}

/// One reading of the meter: the energy used in the interval starting at `start`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MeterReading {
    /// The start of the interval (local wall-clock time of the meter).
    pub start: NaiveDateTime,
    /// The energy used, exactly as measured (integer joules).
    pub energy: Joules,
}

/// A source's readings on the client's grid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadingStream {
    interval: Interval,
    utc_offset: Option<FixedOffset>,
    readings: Vec<MeterReading>,
    skipped_intervals: usize,
}

impl ReadingStream {
    /// A stream from readings already on `interval`'s grid, strictly increasing.
    ///
    /// # Errors
    /// [`Error::InvalidSetting`] if a reading is off the grid or out of order.
    pub fn try_new(interval: Interval, readings: Vec<MeterReading>) -> Result<Self, Error> {
        for (i, r) in readings.iter().enumerate() {
            if !interval.is_aligned(r.start) {
                return Err(Error::InvalidSetting {
                    setting: "readings",
                    reason: format!("reading {i} at {} is not on the {interval} grid", r.start),
                });
            }
            if i > 0 && readings[i - 1].start >= r.start {
                return Err(Error::InvalidSetting {
                    setting: "readings",
                    reason: format!("reading {i} at {} is out of order", r.start),
                });
            }
        }
        Ok(Self {
            interval,
            utc_offset: None,
            readings,
            skipped_intervals: 0,
        })
    }

    /// The interval of every reading.
    pub fn interval(&self) -> Interval {
        self.interval
    }

    /// The UTC offset of the wall-clock times, if the source states it.
    pub fn utc_offset(&self) -> Option<FixedOffset> {
        self.utc_offset
    }

    /// The readings, in time order.
    pub fn readings(&self) -> &[MeterReading] {
        &self.readings
    }

    /// Intervals of the range that had missing source readings and were skipped.
    pub fn skipped_intervals(&self) -> usize {
        self.skipped_intervals
    }
}

/// The grid a source of `resolution` is brought to: 15 minutes if `resolution` divides it,
/// else the least common multiple of the two.
///
/// # Errors
/// When that multiple does not divide a day.
pub fn target_interval(resolution: Interval) -> Result<Interval, Error> {
    let (a, b) = (
        u64::from(resolution.as_secs()),
        u64::from(TARGET_INTERVAL.as_secs()),
    );
    let gcd = {
        let (mut x, mut y) = (a, b);
        while y != 0 {
            (x, y) = (y, x % y);
        }
        x
    };
    let lcm = a / gcd * b;
    let secs = u32::try_from(lcm).map_err(|_| Error::InvalidSetting {
        setting: "source interval",
        reason: format!("{resolution} cannot be combined with 15-minute intervals"),
    })?;
    Ok(Interval::try_from_secs(secs)?)
}

/// Loads `spec` over `range`. Blocking (reads and parses the whole file): call it from a
/// blocking task in async code.
///
/// # Errors
/// A malformed or implausible row ([`seer_core::Error::Csv`] with the file and line), an
/// unreadable file, an interval that cannot be brought to the grid.
pub fn load(spec: &SourceSpec, range: DateRange) -> Result<ReadingStream, Error> {
    let loaded = match spec {
        SourceSpec::Synthetic { seed, home } => {
            let from = range.from.unwrap_or(SYNTHETIC_DEFAULT_FROM);
            let until = match range.until {
                Some(until) => until,
                None => from
                    .checked_add_months(chrono::Months::new(1))
                    .ok_or_else(|| Error::InvalidSetting {
                        setting: "from",
                        reason: format!("{from} is too late for a month of synthetic data"),
                    })?,
            };
            let readings = SyntheticHome::new(*seed, *home).readings(from, until);
            return ReadingStream::try_new(TARGET_INTERVAL, readings);
        }
        SourceSpec::Uci(path) => load_uci(path, &LoadOptions::default())?,
        SourceSpec::Csv(path) => load_kwh_csv(path, &LoadOptions::default())?,
    };
    let series = &loaded.series;
    let interval = target_interval(series.resolution())?;
    let view = {
        let first = series.readings().first().map(|r| r.start);
        let last = series.readings().last().map(|r| r.start);
        let from = range
            .from
            .map(|d| d.and_time(NaiveTime::MIN))
            .or(first)
            .unwrap_or_default();
        let until = range
            .until
            .map(|d| d.and_time(NaiveTime::MIN))
            .or_else(|| last.map(|t| t + series.resolution().as_time_delta()))
            .unwrap_or_default();
        series.slice(from, until)
    };
    let resampled = view.resample(interval, GapPolicy::COMPLETE_ONLY)?;
    let mut skipped = 0;
    let readings = resampled
        .intervals()
        .iter()
        .filter(|i| range.contains(i.start))
        .filter_map(|i| match i.energy {
            Some(energy) if i.is_complete() => Some(MeterReading {
                start: i.start,
                energy,
            }),
            _ => {
                skipped += 1;
                None
            }
        })
        .collect();
    let mut stream = ReadingStream::try_new(interval, readings)?;
    stream.skipped_intervals = skipped;
    stream.utc_offset = series.utc_offset();
    tracing::info!(
        source = %spec,
        interval = %interval,
        readings = stream.readings.len(),
        skipped_intervals = skipped,
        "source loaded"
    );
    Ok(stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_and_print() {
        for text in ["uci:data/x.csv", "csv:/tmp/a b.csv", "synthetic:42:7"] {
            let spec: SourceSpec = text.parse().unwrap();
            assert_eq!(spec.to_string(), text);
        }
        assert_eq!(
            "synthetic:1:2".parse::<SourceSpec>().unwrap(),
            SourceSpec::Synthetic { seed: 1, home: 2 }
        );
        for bad in [
            "x",
            "uci:",
            "ftp:x",
            "synthetic:1",
            "synthetic:a:1",
            "synthetic:1:-1",
        ] {
            let err = bad.parse::<SourceSpec>().unwrap_err();
            assert!(matches!(err, Error::InvalidSource { .. }), "{bad}: {err}");
        }
    }

    #[test]
    fn target_interval_is_fifteen_minutes_or_a_common_multiple() {
        let m = |n| Interval::try_from_minutes(n).unwrap();
        assert_eq!(target_interval(Interval::MINUTE).unwrap(), m(15));
        assert_eq!(target_interval(m(5)).unwrap(), m(15));
        assert_eq!(target_interval(m(15)).unwrap(), m(15));
        assert_eq!(target_interval(m(10)).unwrap(), m(30));
        assert_eq!(target_interval(Interval::HOUR).unwrap(), Interval::HOUR);
    }

    fn sample(name: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../data/samples")
            .join(name)
    }

    #[test]
    fn uci_minutes_become_complete_quarter_hours() {
        let stream = load(
            &SourceSpec::Uci(sample("uci-householdpower-sample.csv")),
            DateRange::default(),
        )
        .unwrap();
        assert_eq!(stream.interval(), TARGET_INTERVAL);
        assert!(!stream.readings().is_empty());
        // The sample starts at 21:07: the 21:00 quarter hour is partial and skipped.
        let first = stream.readings()[0].start;
        assert_eq!(first.time(), NaiveTime::from_hms_opt(21, 15, 0).unwrap());
        assert!(stream.skipped_intervals() >= 1);
    }

    #[test]
    fn hourly_csv_keeps_its_interval() {
        let stream = load(
            &SourceSpec::Csv(sample("kwh-hourly-ist-sample.csv")),
            DateRange::default(),
        )
        .unwrap();
        assert_eq!(stream.interval(), Interval::HOUR);
    }

    #[test]
    fn malformed_rows_are_reported_with_their_line() {
        let err = load(
            &SourceSpec::Csv(sample("kwh-malformed.csv")),
            DateRange::default(),
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("kwh-malformed.csv:"), "{text}");
        assert!(matches!(
            err,
            Error::Core(seer_core::Error::Csv { line, .. }) if line > 1
        ));
    }

    #[test]
    fn range_limits_the_readings() {
        let range = DateRange {
            from: NaiveDate::from_ymd_opt(2024, 2, 28),
            until: NaiveDate::from_ymd_opt(2024, 3, 2),
        };
        let stream = load(&SourceSpec::Synthetic { seed: 1, home: 0 }, range).unwrap();
        assert_eq!(stream.readings().len(), 3 * 96);
        let default = load(
            &SourceSpec::Synthetic { seed: 1, home: 0 },
            DateRange::default(),
        )
        .unwrap();
        assert_eq!(default.readings().len(), 31 * 96);
    }
}
