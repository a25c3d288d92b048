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
//!
//! # Replaying a month as another
//!
//! A [`DateRange`] may carry a [`MonthShift`]: every reading read is re-dated by whole
//! calendar months, keeping its day of the month and its time of day (`--replay-as`; e.g. the
//! UCI household's January 2008 replayed as January 2010, so that several of its Januaries
//! share one billing period). The range's `from` and `until` select the source's own dates;
//! the shift applies after. Weekdays are not kept. A reading whose day does not exist in its
//! new month (the 29th of February into a common year, the 31st into a 30-day month) is
//! refused, never moved to another day: end the range before it.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use chrono::{Datelike as _, FixedOffset, NaiveDate, NaiveDateTime, NaiveTime};
use seer_core::data::{
    EnergySeries, GapPolicy, Interval, LoadOptions, Period, load_kwh_csv, load_uci,
};
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
    /// `mqtt://HOST[:PORT]`: a live meter on an MQTT broker ([`crate::mqtt`]); its topic and
    /// format come from `--mqtt-topic` and `--mqtt-format`. It has nothing to [`open`]: its
    /// readings arrive over time.
    Mqtt(crate::mqtt::MqttSource),
}

impl FromStr for SourceSpec {
    type Err = Error;

    fn from_str(spec: &str) -> Result<Self, Error> {
        let invalid = |reason: &str| Error::InvalidSource {
            spec: spec.to_owned(),
            reason: reason.to_owned(),
        };
        if spec.starts_with("mqtt://") || spec.starts_with("mqtts://") {
            return crate::mqtt::MqttSource::try_from_url(spec).map(Self::Mqtt);
        }
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
            Self::Mqtt(source) => source.fmt(f),
        }
    }
}

/// The dates to read: readings starting on or after `from` and before `until` (either bound
/// optional). A synthetic source needs a finite range: it defaults to
/// [`SYNTHETIC_DEFAULT_FROM`] and one calendar month after `from`. The readings read are then
/// re-dated by `shift` (see [the module docs](self#replaying-a-month-as-another)).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DateRange {
    /// The first day read (a date of the source).
    pub from: Option<NaiveDate>,
    /// The first day not read (a date of the source).
    pub until: Option<NaiveDate>,
    /// The re-dating applied to what is read; [`MonthShift::NONE`] keeps the source's dates.
    pub shift: MonthShift,
}

impl DateRange {
    fn contains(&self, t: NaiveDateTime) -> bool {
        self.from.is_none_or(|d| t.date() >= d) && self.until.is_none_or(|d| t.date() < d)
    }

    /// This range with its readings re-dated so that the month of `from` becomes `target`
    /// (`--replay-as`).
    ///
    /// # Errors
    /// [`Error::InvalidSetting`] when the range has no `from` date.
    pub fn try_replay_as(self, target: Period) -> Result<Self, Error> {
        let from = self.from.ok_or_else(|| Error::InvalidSetting {
            setting: "replay as",
            reason: "--replay-as needs --from (the first day of the month to replay)".into(),
        })?;
        Ok(Self {
            shift: MonthShift::between(Period::containing(from)?, target),
            ..self
        })
    }
}

/// A re-dating by whole calendar months: the day of the month and the time of day are kept.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MonthShift(i32);

impl MonthShift {
    /// No re-dating.
    pub const NONE: Self = Self(0);

    /// A shift by `months` calendar months (negative: earlier).
    pub const fn months(months: i32) -> Self {
        Self(months)
    }

    /// The shift that takes month `from` to month `to`.
    pub fn between(from: Period, to: Period) -> Self {
        let index = |m: Period| m.year() * 12 + m.month() as i32 - 1;
        Self(index(to) - index(from))
    }

    /// The number of months.
    pub const fn get(self) -> i32 {
        self.0
    }

    /// Whether this is [`MonthShift::NONE`].
    pub const fn is_none(self) -> bool {
        self.0 == 0
    }

    /// The month `month` becomes.
    ///
    /// # Errors
    /// [`Error::InvalidSetting`] when it falls outside the supported years.
    pub fn apply_to_month(self, month: Period) -> Result<Period, Error> {
        let index = i64::from(month.year()) * 12 + i64::from(month.month()) - 1 + i64::from(self.0);
        let out_of_range = || Error::InvalidSetting {
            setting: "replay as",
            reason: format!("{month} shifted by {} months is out of range", self.0),
        };
        let year = i32::try_from(index.div_euclid(12)).map_err(|_| out_of_range())?;
        let number = u32::try_from(index.rem_euclid(12) + 1).map_err(|_| out_of_range())?;
        Period::try_new(year, number).map_err(|_| out_of_range())
    }

    /// `t` re-dated: the same day of the month and time of day, in the shifted month.
    ///
    /// # Errors
    /// [`Error::InvalidSetting`] when that day does not exist in the shifted month (e.g. the
    /// 29th of February of a common year) or the month is out of range.
    pub fn apply(self, t: NaiveDateTime) -> Result<NaiveDateTime, Error> {
        if self.is_none() {
            return Ok(t);
        }
        let month = self.apply_to_month(Period::containing(t.date())?)?;
        NaiveDate::from_ymd_opt(month.year(), month.month(), t.day())
            .map(|d| d.and_time(t.time()))
            .ok_or_else(|| Error::InvalidSetting {
                setting: "replay as",
                reason: format!(
                    "the reading at {t} cannot be replayed in {month}, which has no day {}: \
                     end the range before it (--until)",
                    t.day()
                ),
            })
    }
}

impl fmt::Display for MonthShift {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:+} months", self.0)
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

/// Loads `spec` over `range`: [`open`] then [`OpenedSource::select`]. Blocking (reads and
/// parses the whole file): call it from a blocking task in async code.
///
/// # Errors
/// A malformed or implausible row ([`seer_core::Error::Csv`] with the file and line), an
/// unreadable file, an interval that cannot be brought to the grid, a reading that cannot be
/// re-dated by the range's shift.
pub fn load(spec: &SourceSpec, range: DateRange) -> Result<ReadingStream, Error> {
    let stream = open(spec)?.select(range)?;
    tracing::info!(
        source = %spec,
        interval = %stream.interval,
        readings = stream.readings.len(),
        skipped_intervals = stream.skipped_intervals,
        shift = %range.shift,
        "source loaded"
    );
    Ok(stream)
}

/// A source read into memory (files parsed), from which date ranges are selected. Reading a
/// large file once and selecting several ranges from it gives exactly what [`load`] gives for
/// each range.
#[derive(Clone, Debug)]
pub enum OpenedSource {
    /// A file's readings, at the file's own resolution.
    Series(EnergySeries),
    /// A synthetic home (generated on selection).
    Synthetic(SyntheticHome),
}

/// Reads `spec`'s file (nothing for a synthetic source). Blocking.
///
/// # Errors
/// As [`load`].
pub fn open(spec: &SourceSpec) -> Result<OpenedSource, Error> {
    Ok(match spec {
        SourceSpec::Synthetic { seed, home } => {
            OpenedSource::Synthetic(SyntheticHome::new(*seed, *home))
        }
        SourceSpec::Uci(path) => {
            OpenedSource::Series(load_uci(path, &LoadOptions::default())?.series)
        }
        SourceSpec::Csv(path) => {
            OpenedSource::Series(load_kwh_csv(path, &LoadOptions::default())?.series)
        }
        SourceSpec::Mqtt(_) => {
            return Err(Error::InvalidSource {
                spec: spec.to_string(),
                reason: "a live source has no file to read: only `run` reads it".into(),
            });
        }
    })
}

impl OpenedSource {
    /// The readings of `range` on the client's grid, re-dated by its shift.
    ///
    /// # Errors
    /// As [`load`].
    pub fn select(&self, range: DateRange) -> Result<ReadingStream, Error> {
        let series = match self {
            Self::Synthetic(home) => {
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
                let readings = redate(home.readings(from, until), range.shift)?;
                return ReadingStream::try_new(TARGET_INTERVAL, readings);
            }
            Self::Series(series) => series,
        };
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
        let mut stream = ReadingStream::try_new(interval, redate(readings, range.shift)?)?;
        stream.skipped_intervals = skipped;
        stream.utc_offset = series.utc_offset();
        Ok(stream)
    }
}

/// Re-dates every reading by `shift` (order is kept: see [`MonthShift::apply`]).
fn redate(mut readings: Vec<MeterReading>, shift: MonthShift) -> Result<Vec<MeterReading>, Error> {
    if !shift.is_none() {
        for r in &mut readings {
            r.start = shift.apply(r.start)?;
        }
    }
    Ok(readings)
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
            shift: MonthShift::NONE,
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
