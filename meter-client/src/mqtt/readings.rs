//! Register samples → interval readings; see the [rules](super#from-registers-to-readings).

use std::collections::BTreeMap;

use chrono::{NaiveDateTime, TimeDelta};
use seer_core::data::Interval;
use seer_core::units::Joules;

use super::payload::{JOULES_PER_UNIT, Register, Sample};
use crate::error::Error;
use crate::source::MeterReading;

/// What [`derive`] made of a run of samples.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Derived {
    /// The readings, in time order.
    pub readings: Vec<MeterReading>,
    /// Intervals skipped because a quarter hour had no sample (a gap).
    pub gap_intervals: usize,
    /// Intervals skipped because the register went down (a reset or a replaced meter).
    pub resets: Vec<NaiveDateTime>,
}

/// The interval readings of `samples` (any order) on `interval`'s grid: the register at each
/// boundary `b` is the first sample of `[b, b + interval)`, and the reading of `[b, b +
/// interval)` is the difference of the registers at its two boundaries. An interval without
/// both is a gap (skipped); one whose difference is negative is a reset (skipped, never
/// negative energy).
///
/// # Errors
/// When a time cannot be placed on the grid (out of the supported calendar).
pub fn derive(samples: &[Sample], interval: Interval) -> Result<Derived, Error> {
    let mut boundaries: BTreeMap<NaiveDateTime, (NaiveDateTime, Register)> = BTreeMap::new();
    for s in samples {
        let b = floor(s.time, interval);
        boundaries
            .entry(b)
            .and_modify(|first| {
                if s.time < first.0 {
                    *first = (s.time, s.register);
                }
            })
            .or_insert((s.time, s.register));
    }
    let step = interval.as_time_delta();
    let mut out = Derived::default();
    let mut previous: Option<(NaiveDateTime, Register)> = None;
    for (&b, &(_, register)) in &boundaries {
        if let Some((p, before)) = previous {
            if p + step == b {
                let units = register.units() - before.units();
                if units < 0 {
                    tracing::warn!(
                        interval_start = %p,
                        before = before.units(),
                        after = register.units(),
                        "the register went down (reset or replaced meter): the interval is \
                         skipped and counting restarts from the new register"
                    );
                    out.resets.push(p);
                } else {
                    let energy = Joules::try_new(units.saturating_mul(JOULES_PER_UNIT))?;
                    out.readings.push(MeterReading { start: p, energy });
                }
            } else {
                let missing = (b - p).num_seconds() / step.num_seconds().max(1);
                out.gap_intervals += usize::try_from(missing).unwrap_or(0);
            }
        }
        previous = Some((b, register));
    }
    Ok(out)
}

/// The start of the interval of `interval`'s grid (anchored at midnight) holding `t`.
pub fn floor(t: NaiveDateTime, interval: Interval) -> NaiveDateTime {
    let secs = i64::from(interval.as_secs()).max(1);
    let midnight = t.date().and_time(chrono::NaiveTime::MIN);
    let since = (t - midnight).num_seconds();
    midnight + TimeDelta::seconds(since - since.rem_euclid(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S").unwrap()
    }

    fn sample(time: &str, units: i64) -> Sample {
        Sample {
            time: at(time),
            register: Register::try_from_units(units).unwrap(),
        }
    }

    const Q: Interval = Interval::FIFTEEN_MINUTES;

    #[test]
    fn readings_are_register_differences_at_quarter_hours() {
        let samples = [
            sample("2026-01-05 10:15:00", 1_000),
            sample("2026-01-05 10:05:00", 400),
            sample("2026-01-05 10:00:00", 100),
            // Not the first of its quarter: ignored for the boundary.
            sample("2026-01-05 10:20:00", 1_500),
            sample("2026-01-05 10:30:00", 1_800),
        ];
        let d = derive(&samples, Q).unwrap();
        let got: Vec<_> = d
            .readings
            .iter()
            .map(|r| (r.start, r.energy.get()))
            .collect();
        assert_eq!(
            got,
            vec![
                (at("2026-01-05 10:00:00"), 900 * 36),
                (at("2026-01-05 10:15:00"), 800 * 36),
            ]
        );
        assert_eq!(d.gap_intervals, 0);
        assert!(d.resets.is_empty());
    }

    #[test]
    fn gaps_and_resets_are_skipped_never_negative() {
        let samples = [
            sample("2026-01-05 10:00:00", 100),
            sample("2026-01-05 10:15:00", 200),
            // 10:30 and 10:45 have no sample: intervals 10:15, 10:30 and 10:45 are a gap.
            sample("2026-01-05 11:00:00", 900),
            // Reset: 11:00 → 11:15 goes down and is skipped; counting restarts.
            sample("2026-01-05 11:15:00", 5),
            sample("2026-01-05 11:30:00", 25),
        ];
        let d = derive(&samples, Q).unwrap();
        let got: Vec<_> = d
            .readings
            .iter()
            .map(|r| (r.start, r.energy.get()))
            .collect();
        assert_eq!(
            got,
            vec![
                (at("2026-01-05 10:00:00"), 100 * 36),
                (at("2026-01-05 11:15:00"), 20 * 36),
            ]
        );
        assert_eq!(d.gap_intervals, 3);
        assert_eq!(d.resets, vec![at("2026-01-05 11:00:00")]);
    }

    #[test]
    fn floor_is_anchored_at_midnight() {
        assert_eq!(
            floor(at("2026-01-31 23:59:59"), Q),
            at("2026-01-31 23:45:00")
        );
        assert_eq!(
            floor(at("2026-02-01 00:00:00"), Q),
            at("2026-02-01 00:00:00")
        );
    }
}
