//! Energy time series: readings on a fixed grid, with borrowed views by range, day and month.

use chrono::{FixedOffset, NaiveDate, NaiveDateTime, NaiveTime, TimeDelta};

use super::calendar::{self, Period};
use super::interval::Interval;
use super::resample::{GapPolicy, Resampled};
use crate::error::{Error, RowProblem};
use crate::units::Joules;

/// The energy used during one slot of a series' grid.
///
/// The reading covers `start .. start + resolution` (the series' [`Interval`]); its timestamp
/// marks the **start** of that slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Reading {
    /// The start of the slot, in the series' local time.
    pub start: NaiveDateTime,
    /// The energy used during the slot.
    pub energy: Joules,
}

/// The readings of one meter at a fixed resolution, ordered by time, possibly with gaps.
///
/// Invariants (checked by [`EnergySeries::try_new`], kept by every other constructor):
/// - every reading starts on the resolution's grid (anchored at midnight);
/// - starts are strictly increasing (no duplicates);
/// - starts lie in the years 1 to 9999.
///
/// A slot with no reading is missing. Timestamps are local wall-clock times of the meter; when
/// they derive from timestamps with a UTC offset, [`EnergySeries::utc_offset`] says which
/// (one fixed offset for the whole series, so every day has exactly 24 hours). `None` means the
/// offset is unknown, as for the UCI data set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnergySeries {
    resolution: Interval,
    utc_offset: Option<FixedOffset>,
    readings: Vec<Reading>,
}

impl EnergySeries {
    /// A series from readings, validating the invariants above.
    pub fn try_new(
        resolution: Interval,
        utc_offset: Option<FixedOffset>,
        readings: Vec<Reading>,
    ) -> Result<Self, Error> {
        let mut previous: Option<NaiveDateTime> = None;
        for (index, r) in readings.iter().enumerate() {
            let problem = if !calendar::is_supported(r.start) {
                Some(RowProblem::OutOfRange { timestamp: r.start })
            } else if !resolution.is_aligned(r.start) {
                Some(RowProblem::Misaligned {
                    timestamp: r.start,
                    interval: resolution,
                })
            } else {
                match previous {
                    Some(p) if p == r.start => Some(RowProblem::Duplicate { timestamp: r.start }),
                    Some(p) if p > r.start => Some(RowProblem::OutOfOrder {
                        timestamp: r.start,
                        previous: p,
                    }),
                    _ => None,
                }
            };
            if let Some(problem) = problem {
                return Err(Error::InvalidSeries { index, problem });
            }
            previous = Some(r.start);
        }
        Ok(Self::new_unchecked(resolution, utc_offset, readings))
    }

    /// A series whose invariants the caller (inside this crate) guarantees.
    pub(crate) fn new_unchecked(
        resolution: Interval,
        utc_offset: Option<FixedOffset>,
        readings: Vec<Reading>,
    ) -> Self {
        debug_assert!(readings.windows(2).all(|w| w[0].start < w[1].start));
        debug_assert!(readings.iter().all(|r| resolution.is_aligned(r.start)));
        Self {
            resolution,
            utc_offset,
            readings,
        }
    }

    /// The length of each reading's slot.
    pub fn resolution(&self) -> Interval {
        self.resolution
    }

    /// The fixed UTC offset of the timestamps, if known.
    pub fn utc_offset(&self) -> Option<FixedOffset> {
        self.utc_offset
    }

    /// The readings, ordered by start.
    pub fn readings(&self) -> &[Reading] {
        &self.readings
    }

    /// Consumes the series, returning its readings.
    pub fn into_readings(self) -> Vec<Reading> {
        self.readings
    }

    /// The number of readings present.
    pub fn len(&self) -> usize {
        self.readings.len()
    }

    /// Whether there are no readings.
    pub fn is_empty(&self) -> bool {
        self.readings.is_empty()
    }

    /// The whole series as a view from the first reading's start to the last reading's end.
    ///
    /// For an empty series, the view is the empty range at 1970-01-01 00:00.
    pub fn view(&self) -> SeriesView<'_> {
        let (from, to) = match (self.readings.first(), self.readings.last()) {
            (Some(first), Some(last)) => (
                first.start,
                last.start
                    .checked_add_signed(self.resolution.as_time_delta())
                    .unwrap_or(NaiveDateTime::MAX),
            ),
            _ => (NaiveDateTime::default(), NaiveDateTime::default()),
        };
        SeriesView {
            resolution: self.resolution,
            utc_offset: self.utc_offset,
            from,
            to,
            readings: &self.readings,
        }
    }

    /// The sum of all readings.
    pub fn total(&self) -> Joules {
        self.view().total()
    }

    /// The readings in `from .. to` as a view with that nominal range (see
    /// [`SeriesView::slice`]).
    pub fn slice(&self, from: NaiveDateTime, to: NaiveDateTime) -> SeriesView<'_> {
        self.view().slice(from, to)
    }

    /// Every calendar day from the first reading's to the last reading's (see
    /// [`SeriesView::days`]).
    pub fn days(&self) -> Days<'_> {
        self.view().days()
    }

    /// Every calendar month from the first reading's to the last reading's (see
    /// [`SeriesView::months`]).
    pub fn months(&self) -> Months<'_> {
        self.view().months()
    }

    /// Sums the readings into `interval` slots (see [`SeriesView::resample`]).
    pub fn resample(&self, interval: Interval, policy: GapPolicy) -> Result<Resampled, Error> {
        self.view().resample(interval, policy)
    }
}

/// A borrowed part of an [`EnergySeries`]: the readings in a nominal range `from .. to`.
///
/// The nominal range is what the view is *about* (a calendar day, a billing month); the
/// readings are those of the series that start inside it, so [`SeriesView::coverage`] tells how
/// much of the range is actually measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SeriesView<'a> {
    resolution: Interval,
    utc_offset: Option<FixedOffset>,
    from: NaiveDateTime,
    to: NaiveDateTime,
    readings: &'a [Reading],
}

impl<'a> SeriesView<'a> {
    /// The length of each reading's slot.
    pub fn resolution(&self) -> Interval {
        self.resolution
    }

    /// The fixed UTC offset of the timestamps, if known.
    pub fn utc_offset(&self) -> Option<FixedOffset> {
        self.utc_offset
    }

    /// The inclusive start of the nominal range.
    pub fn from(&self) -> NaiveDateTime {
        self.from
    }

    /// The exclusive end of the nominal range.
    pub fn to(&self) -> NaiveDateTime {
        self.to
    }

    /// The readings in the range, ordered by start.
    pub fn readings(&self) -> &'a [Reading] {
        self.readings
    }

    /// The number of readings present.
    pub fn len(&self) -> usize {
        self.readings.len()
    }

    /// Whether there are no readings.
    pub fn is_empty(&self) -> bool {
        self.readings.is_empty()
    }

    /// The number of grid slots that start inside the nominal range: the readings a complete
    /// range would have.
    pub fn expected_len(&self) -> u64 {
        let step = i64::from(self.resolution.as_secs());
        let mut first = self.resolution.floor(self.from);
        if first < self.from {
            match first.checked_add_signed(self.resolution.as_time_delta()) {
                Some(next) => first = next,
                None => return 0,
            }
        }
        if first >= self.to {
            return 0;
        }
        let span = self.to - first;
        let mut secs = span.num_seconds();
        if span.subsec_nanos() > 0 {
            secs += 1;
        }
        u64::try_from((secs + step - 1) / step).unwrap_or(0)
    }

    /// The fraction of expected slots that have a reading, in `0.0 ..= 1.0` (0 for an empty
    /// range).
    pub fn coverage(&self) -> f64 {
        match self.expected_len() {
            0 => 0.0,
            expected => self.len() as f64 / expected as f64,
        }
    }

    /// Whether every slot of a non-empty nominal range has a reading.
    pub fn is_complete(&self) -> bool {
        let expected = self.expected_len();
        expected > 0 && self.len() as u64 == expected
    }

    /// The sum of the readings in the view.
    pub fn total(&self) -> Joules {
        // Each reading is at most Joules::MAX; the i128 sum cannot overflow, and a total above
        // Joules::MAX (impossible for any loaded data) saturates.
        let sum: i128 = self
            .readings
            .iter()
            .map(|r| i128::from(r.energy.get()))
            .sum();
        i64::try_from(sum)
            .ok()
            .and_then(|j| Joules::try_new(j).ok())
            .unwrap_or(Joules::MAX)
    }

    /// The readings of this view that start in `from .. to`, as a view whose nominal range is
    /// exactly `from .. to` (not clipped to this view's range). An inverted range is empty.
    pub fn slice(&self, from: NaiveDateTime, to: NaiveDateTime) -> SeriesView<'a> {
        let to = to.max(from);
        let lo = self.readings.partition_point(|r| r.start < from);
        let hi = self.readings.partition_point(|r| r.start < to);
        SeriesView {
            resolution: self.resolution,
            utc_offset: self.utc_offset,
            from,
            to,
            readings: &self.readings[lo..hi.max(lo)],
        }
    }

    /// Every calendar day that overlaps the nominal range, each as a view of the whole day
    /// (`00:00` to the next `00:00`) holding this view's readings on that day. Days without
    /// readings are included, with an empty view.
    pub fn days(&self) -> Days<'a> {
        let range = self
            .last_instant()
            .map(|last| (self.from.date(), last.date()));
        Days {
            view: *self,
            next: range.map(|(first, _)| first),
            last: range.map_or(NaiveDate::MIN, |(_, last)| last),
        }
    }

    /// Every calendar month that overlaps the nominal range (billing periods), each as a view of
    /// the whole month holding this view's readings in it. Months without readings are
    /// included, with an empty view.
    pub fn months(&self) -> Months<'a> {
        let range = self.last_instant().and_then(|last| {
            let first = Period::containing(self.from.date()).ok()?;
            let last = Period::containing(last.date()).ok()?;
            Some((first, last))
        });
        Months {
            view: *self,
            next: range.map(|(first, _)| first),
            last: range.map(|(_, last)| last),
        }
    }

    /// The last instant inside the nominal range, or `None` if it is empty.
    fn last_instant(&self) -> Option<NaiveDateTime> {
        if self.to <= self.from {
            return None;
        }
        self.to.checked_sub_signed(TimeDelta::nanoseconds(1))
    }

    /// Sums the readings into `interval` slots; see [`Resampled`] and [`GapPolicy`].
    pub fn resample(&self, interval: Interval, policy: GapPolicy) -> Result<Resampled, Error> {
        super::resample::resample(self, interval, policy)
    }

    /// Copies the view's readings into an owned series.
    pub fn to_series(&self) -> EnergySeries {
        EnergySeries::new_unchecked(self.resolution, self.utc_offset, self.readings.to_vec())
    }
}

/// Iterator over calendar days, from [`SeriesView::days`].
#[derive(Clone, Debug)]
pub struct Days<'a> {
    view: SeriesView<'a>,
    next: Option<NaiveDate>,
    last: NaiveDate,
}

impl<'a> Iterator for Days<'a> {
    type Item = (NaiveDate, SeriesView<'a>);

    fn next(&mut self) -> Option<Self::Item> {
        let day = self.next.filter(|d| *d <= self.last)?;
        let tomorrow = day.succ_opt();
        self.next = tomorrow;
        let start = day.and_time(NaiveTime::MIN);
        let end = tomorrow.map_or(NaiveDateTime::MAX, |d| d.and_time(NaiveTime::MIN));
        Some((day, self.view.slice(start, end)))
    }
}

/// Iterator over calendar months, from [`SeriesView::months`].
#[derive(Clone, Debug)]
pub struct Months<'a> {
    view: SeriesView<'a>,
    next: Option<Period>,
    last: Option<Period>,
}

impl<'a> Iterator for Months<'a> {
    type Item = (Period, SeriesView<'a>);

    fn next(&mut self) -> Option<Self::Item> {
        let month = self.next.filter(|m| Some(*m) <= self.last)?;
        self.next = month.next();
        Some((month, self.view.slice(month.start(), month.end())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M").expect("valid test input")
    }

    fn j(v: i64) -> Joules {
        Joules::try_new(v).expect("valid test input")
    }

    fn minutes(start: &str, energies: &[i64]) -> Vec<Reading> {
        energies
            .iter()
            .enumerate()
            .map(|(i, &e)| Reading {
                start: t(start) + TimeDelta::minutes(i as i64),
                energy: j(e),
            })
            .collect()
    }

    #[test]
    fn try_new_checks_invariants() {
        let ok = EnergySeries::try_new(
            Interval::MINUTE,
            None,
            minutes("2007-01-31 23:58", &[1, 2, 3]),
        );
        assert_eq!(ok.map(|s| s.len()).ok(), Some(3));

        let mut dup = minutes("2007-01-31 23:58", &[1, 2]);
        dup[1].start = dup[0].start;
        let err = EnergySeries::try_new(Interval::MINUTE, None, dup).err();
        assert!(matches!(
            err,
            Some(Error::InvalidSeries {
                index: 1,
                problem: RowProblem::Duplicate { .. }
            })
        ));

        let mut back = minutes("2007-01-31 23:58", &[1, 2, 3]);
        back.swap(1, 2);
        let err = EnergySeries::try_new(Interval::MINUTE, None, back).err();
        assert!(matches!(
            err,
            Some(Error::InvalidSeries {
                index: 2,
                problem: RowProblem::OutOfOrder { .. }
            })
        ));

        let err = EnergySeries::try_new(
            Interval::FIFTEEN_MINUTES,
            None,
            minutes("2007-01-31 23:50", &[1]),
        )
        .err();
        assert!(matches!(
            err,
            Some(Error::InvalidSeries {
                index: 0,
                problem: RowProblem::Misaligned { .. }
            })
        ));

        let ancient = vec![Reading {
            start: NaiveDate::from_ymd_opt(0, 1, 1)
                .expect("valid test input")
                .and_time(NaiveTime::MIN),
            energy: j(1),
        }];
        let err = EnergySeries::try_new(Interval::MINUTE, None, ancient).err();
        assert!(matches!(
            err,
            Some(Error::InvalidSeries {
                index: 0,
                problem: RowProblem::OutOfRange { .. }
            })
        ));
    }

    #[test]
    fn views_days_and_months() {
        // 23:58 .. 00:03 across the January/February boundary, with 00:01 missing.
        let mut readings = minutes("2007-01-31 23:58", &[1, 2, 3, 4, 5, 6]);
        readings.remove(3);
        let s = EnergySeries::try_new(Interval::MINUTE, None, readings).expect("valid series");
        let whole = s.view();
        assert_eq!(
            (whole.from(), whole.to()),
            (t("2007-01-31 23:58"), t("2007-02-01 00:04"))
        );
        assert_eq!(whole.expected_len(), 6);
        assert_eq!(whole.len(), 5);
        assert!(!whole.is_complete());
        assert_eq!(s.total(), j(1 + 2 + 3 + 5 + 6));

        let days: Vec<_> = s
            .days()
            .map(|(d, v)| (d.to_string(), v.len(), v.expected_len(), v.total()))
            .collect();
        assert_eq!(
            days,
            [
                ("2007-01-31".to_string(), 2, 1440, j(3)),
                ("2007-02-01".to_string(), 3, 1440, j(3 + 5 + 6)),
            ]
        );
        let months: Vec<_> = s
            .months()
            .map(|(m, v)| (m.to_string(), v.len(), v.expected_len()))
            .collect();
        assert_eq!(
            months,
            [
                ("2007-01".to_string(), 2, 31 * 1440),
                ("2007-02".to_string(), 3, 28 * 1440)
            ]
        );

        let part = s.slice(t("2007-02-01 00:00"), t("2007-02-01 00:02"));
        assert_eq!(part.len(), 1);
        assert_eq!(part.expected_len(), 2);
        assert!((part.coverage() - 0.5).abs() < 1e-12);
        assert!(
            s.slice(t("2007-02-01 00:02"), t("2007-02-01 00:00"))
                .is_empty()
        );
        assert_eq!(part.to_series().readings(), &s.readings()[2..3]);
    }

    #[test]
    fn expected_len_rounds_to_grid() {
        let s = EnergySeries::new_unchecked(Interval::FIFTEEN_MINUTES, None, Vec::new());
        let v = s.slice(t("2007-01-31 00:01"), t("2007-01-31 01:00"));
        assert_eq!(v.expected_len(), 3); // 00:15, 00:30, 00:45
        let v = s.slice(t("2007-01-31 00:00"), t("2007-01-31 00:01"));
        assert_eq!(v.expected_len(), 1);
        assert_eq!(v.coverage(), 0.0);
    }

    #[test]
    fn empty_series() {
        let s = EnergySeries::new_unchecked(Interval::MINUTE, None, Vec::new());
        assert!(s.is_empty());
        assert_eq!(s.total(), Joules::ZERO);
        assert_eq!(s.days().count(), 0);
        assert_eq!(s.months().count(), 0);
        assert_eq!(s.view().expected_len(), 0);
        assert!(!s.view().is_complete());
    }
}
