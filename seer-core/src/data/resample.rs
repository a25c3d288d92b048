//! Resampling a series into coarser fixed intervals, with an explicit rule for gaps.
//!
//! Energy per interval is the sum of the energies of the readings inside it; readings never
//! straddle an interval because every [`Interval`] divides a day and the target interval must
//! be a whole multiple of the series' resolution.
//!
//! # The gap rule
//!
//! Each output interval records how many of its slots had a reading (`observed`) out of how
//! many it has (`expected`), and the exact sum of what was observed (`measured`). Its reported
//! `energy` then follows the [`GapPolicy`]:
//!
//! - **complete** (`observed == expected`): `energy = measured`, exactly — resampling conserves
//!   energy exactly on complete intervals because energies are integer joules;
//! - **partial with coverage ≥ the policy's `min_coverage`**: `energy` is `measured` scaled up by
//!   `expected / observed` (rounded to the nearest joule, halves up) and the interval is marked
//!   estimated ([`IntervalEnergy::is_estimated`]);
//! - **otherwise** (including no readings at all): `energy` is `None`, the interval is missing.
//!
//! The default policy, [`GapPolicy::COMPLETE_ONLY`], scales nothing: a partial interval is
//! missing. That is the right default for the billing lane, where invented energy would be
//! billed; the analytics lane may opt into [`GapPolicy::try_scale_up`] (e.g. 0.8, so a
//! 15-minute interval needs 12 of its 15 minutes) and see which intervals are estimates.
//! Resample from the finest series you have: resampling an already estimated series again
//! would count its estimates as measurements.

use chrono::{FixedOffset, NaiveDateTime};

use super::interval::Interval;
use super::series::{EnergySeries, Reading, SeriesView};
use crate::error::Error;
use crate::units::Joules;

/// How resampling treats intervals with missing readings; see the [module docs](self).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GapPolicy {
    min_coverage: f64,
}

impl GapPolicy {
    /// Only complete intervals get an energy; partial ones are missing.
    pub const COMPLETE_ONLY: Self = Self { min_coverage: 1.0 };

    /// Partial intervals whose coverage (observed / expected slots) is at least
    /// `min_coverage` get their measured energy scaled up to the full interval; coverage
    /// must be in `(0, 1]` (1 is the same as [`GapPolicy::COMPLETE_ONLY`]).
    pub fn try_scale_up(min_coverage: f64) -> Result<Self, Error> {
        if min_coverage > 0.0 && min_coverage <= 1.0 {
            Ok(Self { min_coverage })
        } else {
            Err(Error::InvalidOption {
                option: "min_coverage",
                reason: format!("{min_coverage} is not in (0, 1]"),
            })
        }
    }

    /// The least coverage an interval needs to get an energy.
    pub fn min_coverage(self) -> f64 {
        self.min_coverage
    }
}

impl Default for GapPolicy {
    /// [`GapPolicy::COMPLETE_ONLY`].
    fn default() -> Self {
        Self::COMPLETE_ONLY
    }
}

/// The energy of one output interval and how much of it was measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IntervalEnergy {
    /// The start of the interval (on the interval's grid).
    pub start: NaiveDateTime,
    /// The number of slots of the input resolution that had a reading.
    pub observed: u32,
    /// The number of slots of the input resolution in the interval.
    pub expected: u32,
    /// The exact sum of the readings present.
    pub measured: Joules,
    /// The energy reported under the gap policy; `None` if the interval is missing.
    pub energy: Option<Joules>,
}

impl IntervalEnergy {
    /// `observed / expected`, in `0.0 ..= 1.0`.
    pub fn coverage(&self) -> f64 {
        f64::from(self.observed) / f64::from(self.expected)
    }

    /// Whether every slot had a reading (then `energy == Some(measured)`).
    pub fn is_complete(&self) -> bool {
        self.observed == self.expected
    }

    /// Whether the energy was scaled up from a partial interval.
    pub fn is_estimated(&self) -> bool {
        self.energy.is_some() && !self.is_complete()
    }

    /// Whether the interval has no energy under the gap policy.
    pub fn is_missing(&self) -> bool {
        self.energy.is_none()
    }
}

/// The result of resampling: every interval from the one containing the view's start to the
/// one containing its end, including missing ones.
#[derive(Clone, Debug, PartialEq)]
pub struct Resampled {
    interval: Interval,
    utc_offset: Option<FixedOffset>,
    policy: GapPolicy,
    intervals: Vec<IntervalEnergy>,
}

impl Resampled {
    /// The output interval.
    pub fn interval(&self) -> Interval {
        self.interval
    }

    /// The fixed UTC offset of the timestamps, if known.
    pub fn utc_offset(&self) -> Option<FixedOffset> {
        self.utc_offset
    }

    /// The gap policy applied.
    pub fn policy(&self) -> GapPolicy {
        self.policy
    }

    /// All intervals, ordered by start, without holes.
    pub fn intervals(&self) -> &[IntervalEnergy] {
        &self.intervals
    }

    /// Consumes the result, returning its intervals.
    pub fn into_intervals(self) -> Vec<IntervalEnergy> {
        self.intervals
    }

    /// The number of complete intervals.
    pub fn complete_count(&self) -> usize {
        self.intervals.iter().filter(|i| i.is_complete()).count()
    }

    /// The number of estimated (scaled-up) intervals.
    pub fn estimated_count(&self) -> usize {
        self.intervals.iter().filter(|i| i.is_estimated()).count()
    }

    /// The number of missing intervals.
    pub fn missing_count(&self) -> usize {
        self.intervals.iter().filter(|i| i.is_missing()).count()
    }

    /// The sum of the reported energies (complete and estimated intervals).
    pub fn total(&self) -> Joules {
        let sum: i128 = self
            .intervals
            .iter()
            .filter_map(|i| i.energy)
            .map(|e| i128::from(e.get()))
            .sum();
        i64::try_from(sum)
            .ok()
            .and_then(|j| Joules::try_new(j).ok())
            .unwrap_or(Joules::MAX)
    }

    /// The intervals that have an energy (complete and estimated) as a series at the output
    /// interval; missing intervals are gaps in it.
    pub fn to_series(&self) -> EnergySeries {
        let readings = self
            .intervals
            .iter()
            .filter_map(|i| {
                i.energy.map(|energy| Reading {
                    start: i.start,
                    energy,
                })
            })
            .collect();
        EnergySeries::new_unchecked(self.interval, self.utc_offset, readings)
    }
}

/// The most intervals one resampling produces: about 114 years of 15-minute intervals, 7.6
/// years of minutes (the UCI data set is 2.1 million minutes), at most about 200 MB.
pub const MAX_RESAMPLED_INTERVALS: u64 = 4_000_000;

/// Implements [`SeriesView::resample`].
pub(crate) fn resample(
    view: &SeriesView<'_>,
    interval: Interval,
    policy: GapPolicy,
) -> Result<Resampled, Error> {
    let resolution = view.resolution();
    if !resolution.divides(interval) {
        return Err(Error::IncompatibleInterval {
            from: resolution,
            to: interval,
        });
    }
    let expected = interval.as_secs() / resolution.as_secs();
    let step = interval.as_time_delta();
    let readings = view.readings();
    let mut next = 0;
    let mut start = interval.floor(view.from());
    // Bounded before anything is allocated (found by fuzzing the CSV loaders).
    let span = view.to().signed_duration_since(start).num_seconds().max(0) as u64;
    let count = span.div_ceil(u64::from(interval.as_secs()));
    if count > MAX_RESAMPLED_INTERVALS {
        return Err(Error::TooManyIntervals {
            interval,
            intervals: count,
            limit: MAX_RESAMPLED_INTERVALS,
        });
    }
    let mut intervals = Vec::with_capacity(count as usize);
    while start < view.to() {
        let end = start.checked_add_signed(step).unwrap_or(NaiveDateTime::MAX);
        let first = next;
        while next < readings.len() && readings[next].start < end {
            next += 1;
        }
        let inside = &readings[first..next];
        // At most 86 400 readings of at most Joules::MAX each: no i128 overflow.
        let sum: i128 = inside.iter().map(|r| i128::from(r.energy.get())).sum();
        let measured = joules(sum)?;
        // `inside.len()` ≤ `expected` ≤ 86 400 because readings are on the grid and distinct.
        let observed = u32::try_from(inside.len()).unwrap_or(u32::MAX);
        let energy = if observed == expected {
            Some(measured)
        } else if observed > 0 && f64::from(observed) / f64::from(expected) >= policy.min_coverage {
            let (o, e) = (i128::from(observed), i128::from(expected));
            Some(joules((sum * e * 2 + o) / (2 * o))?)
        } else {
            None
        };
        intervals.push(IntervalEnergy {
            start,
            observed,
            expected,
            measured,
            energy,
        });
        if end == NaiveDateTime::MAX {
            break;
        }
        start = end;
    }
    Ok(Resampled {
        interval,
        utc_offset: view.utc_offset(),
        policy,
        intervals,
    })
}

fn joules(sum: i128) -> Result<Joules, Error> {
    i64::try_from(sum)
        .map_err(|_| Error::InvalidQuantity {
            unit: "J",
            value: sum.to_string(),
            reason: "interval energy above the 1 TWh limit",
        })
        .and_then(Joules::try_new)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeDelta;

    fn t(s: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M").expect("valid test input")
    }

    fn j(v: i64) -> Joules {
        Joules::try_new(v).expect("valid test input")
    }

    /// Minute readings from `start`; `None` entries are gaps.
    fn series(start: &str, energies: &[Option<i64>]) -> EnergySeries {
        let readings = energies
            .iter()
            .enumerate()
            .filter_map(|(i, e)| {
                e.map(|e| Reading {
                    start: t(start) + TimeDelta::minutes(i as i64),
                    energy: j(e),
                })
            })
            .collect();
        EnergySeries::new_unchecked(Interval::MINUTE, None, readings)
    }

    #[test]
    fn policy_validates() {
        assert!(GapPolicy::try_scale_up(0.0).is_err());
        assert!(GapPolicy::try_scale_up(1.01).is_err());
        assert!(GapPolicy::try_scale_up(f64::NAN).is_err());
        assert_eq!(
            GapPolicy::try_scale_up(1.0).ok(),
            Some(GapPolicy::COMPLETE_ONLY)
        );
        assert_eq!(GapPolicy::default(), GapPolicy::COMPLETE_ONLY);
    }

    #[test]
    fn complete_partial_and_missing_intervals() {
        // 00:10 .. 00:45: 00:00-00:15 has 5 of 15 minutes; 00:15-00:30 is complete;
        // 00:30-00:45 lacks 00:31 and 00:32 (13 of 15).
        let mut energies: Vec<Option<i64>> = (0..35).map(|i| Some(100 + i)).collect();
        energies[21] = None;
        energies[22] = None;
        let s = series("2007-01-31 00:10", &energies);

        let strict = s.resample(Interval::FIFTEEN_MINUTES, GapPolicy::COMPLETE_ONLY);
        let strict = strict
            .map(Resampled::into_intervals)
            .expect("valid test input");
        assert_eq!(strict.len(), 3);
        assert_eq!(
            (strict[0].observed, strict[0].expected, strict[0].energy),
            (5, 15, None)
        );
        // Minutes 00:15..00:29 are energies[5..20] = 105..=119: sum 1680.
        assert_eq!(strict[1].energy, Some(j(1680)));
        assert!(strict[1].is_complete());
        assert_eq!(strict[2].observed, 13);
        assert!(strict[2].is_missing());

        let lenient = s
            .resample(
                Interval::FIFTEEN_MINUTES,
                GapPolicy::try_scale_up(0.8).expect("valid test input"),
            )
            .map(Resampled::into_intervals)
            .expect("valid test input");
        assert!(lenient[0].is_missing()); // 5/15 < 0.8
        // energies[20..35] without 21, 22: 120 + 123..=134 = 120 + 1542 = 1662; × 15/13.
        assert_eq!(lenient[2].measured, j(1662));
        assert_eq!(lenient[2].energy, Some(j(1918))); // 1662 × 15 / 13 = 1917.69
        assert!(lenient[2].is_estimated());
    }

    #[test]
    fn exactly_at_threshold_is_estimated() {
        // 12 of 15 minutes = 0.8 coverage, at the threshold.
        let energies: Vec<Option<i64>> = (0..15).map(|i| (i < 12).then_some(10)).collect();
        let s = series("2007-01-31 00:00", &energies);
        let r = s
            .resample(
                Interval::FIFTEEN_MINUTES,
                GapPolicy::try_scale_up(0.8).expect("valid test input"),
            )
            .map(Resampled::into_intervals)
            .expect("valid test input");
        // The view ends at 00:12, so there is one interval.
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].energy, Some(j(150)));
    }

    #[test]
    fn interior_empty_intervals_are_reported() {
        let mut energies = vec![Some(1); 15];
        energies.extend(vec![None; 30]);
        energies.extend(vec![Some(2); 15]);
        let s = series("2007-01-31 00:00", &energies);
        let r = s.resample(Interval::FIFTEEN_MINUTES, GapPolicy::COMPLETE_ONLY);
        let r = r.expect("valid test input");
        let summary: Vec<_> = r
            .intervals()
            .iter()
            .map(|i| (i.observed, i.energy))
            .collect();
        assert_eq!(
            summary,
            [(15, Some(j(15))), (0, None), (0, None), (15, Some(j(30)))]
        );
        assert_eq!(
            (r.complete_count(), r.missing_count(), r.estimated_count()),
            (2, 2, 0)
        );
        assert_eq!(r.total(), j(45));
        let coarse = r.to_series();
        assert_eq!(coarse.resolution(), Interval::FIFTEEN_MINUTES);
        assert_eq!(coarse.len(), 2);
    }

    #[test]
    fn rejects_incompatible_interval() {
        let s = EnergySeries::new_unchecked(Interval::FIFTEEN_MINUTES, None, Vec::new());
        let err = s.resample(
            Interval::try_from_minutes(20).expect("valid test input"),
            GapPolicy::COMPLETE_ONLY,
        );
        assert!(matches!(err, Err(Error::IncompatibleInterval { .. })));
        assert!(
            s.resample(Interval::MINUTE, GapPolicy::COMPLETE_ONLY)
                .is_err()
        );
    }

    /// Found by the `csv_loaders` fuzz target: two readings centuries apart made resampling
    /// allocate an interval for every quarter hour between them (seconds of work and
    /// gigabytes); such a span is refused before anything is allocated.
    #[test]
    fn a_span_beyond_the_interval_limit_is_refused() {
        let reading = |s: &str| Reading {
            start: t(s),
            energy: j(1),
        };
        let s = EnergySeries::new_unchecked(
            Interval::MINUTE,
            None,
            vec![reading("1000-01-01 00:00"), reading("9000-01-01 00:00")],
        );
        let err = s.resample(Interval::FIFTEEN_MINUTES, GapPolicy::COMPLETE_ONLY);
        assert!(
            matches!(err, Err(Error::TooManyIntervals { intervals, limit, .. })
                if intervals > limit && limit == MAX_RESAMPLED_INTERVALS),
            "{err:?}"
        );
        // Just inside the limit: 4 million minutes resample to as many intervals.
        let minutes = i64::try_from(MAX_RESAMPLED_INTERVALS).expect("small") - 1;
        let end = t("2000-01-01 00:00") + TimeDelta::minutes(minutes);
        let s = EnergySeries::new_unchecked(
            Interval::MINUTE,
            None,
            vec![
                reading("2000-01-01 00:00"),
                Reading {
                    start: end,
                    energy: j(1),
                },
            ],
        );
        let r = s
            .resample(Interval::MINUTE, GapPolicy::COMPLETE_ONLY)
            .expect("within the limit");
        assert_eq!(r.intervals().len() as u64, MAX_RESAMPLED_INTERVALS);
        assert_eq!(r.total(), j(2));
    }

    #[test]
    fn empty_view_has_no_intervals() {
        let s = EnergySeries::new_unchecked(Interval::MINUTE, None, Vec::new());
        let r = s.resample(Interval::HOUR, GapPolicy::COMPLETE_ONLY);
        assert_eq!(r.map(|r| r.intervals().len()).ok(), Some(0));
    }
}
