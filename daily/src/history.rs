//! A home's hourly energy, day by day, as its meter keeps it (gaps included).
//!
//! Readings of 15 or 60 minutes are kept in their local day, in the slot of their start. A
//! day is **usable** ([`HomeHistory::day`] returns its 24 hourly energies) when every one of
//! its 24 local hours is usable:
//!
//! - an hour with its 60-minute reading is that reading;
//! - an hour with at least 3 of its 4 quarter-hour readings is their sum scaled by `4 / count`
//!   (one missing quarter hour is taken as the mean of the hour's other three);
//! - any other hour (two or more quarter hours missing, nothing at all) makes the day
//!   unusable: the model is not shown a day it would have to invent.
//!
//! A reading whose slot is already taken (the same start twice, a quarter hour inside an
//! hour that already has its hourly reading, or the reverse) is refused, so the repeated hour
//! of an autumn clock change is refused rather than double counted, and the spring change day
//! lacks an hour and is unusable. Both lose one day a year each, no more.
//!
//! The meter's preparation ([`crate::model::DailyModel::prepare`]) looks back 28 days at most,
//! so a meter calls [`HomeHistory::prune_before`] with the day 28 days back once a day.

use std::collections::BTreeMap;

use chrono::{NaiveDate, NaiveDateTime, Timelike};

use crate::error::DailyError;

/// Quarter hours in a day.
const QUARTERS: usize = 96;

/// A day's readings as received.
#[derive(Clone, Debug)]
struct DaySlots {
    quarters: [f64; QUARTERS],
    /// Bit `q` set: quarter hour `q` has a reading.
    quarter_mask: u128,
    hours: [f64; 24],
    /// Bit `h` set: hour `h` has a 60-minute reading.
    hour_mask: u32,
}

impl Default for DaySlots {
    fn default() -> Self {
        Self {
            quarters: [0.0; QUARTERS],
            quarter_mask: 0,
            hours: [0.0; 24],
            hour_mask: 0,
        }
    }
}

impl DaySlots {
    fn quarters_of_hour(&self, hour: usize) -> u128 {
        self.quarter_mask & (0b1111u128 << (4 * hour))
    }

    fn hour(&self, hour: usize) -> Option<f64> {
        if self.hour_mask & (1 << hour) != 0 {
            return Some(self.hours[hour]);
        }
        let mask = self.quarters_of_hour(hour);
        let count = mask.count_ones();
        if count < 3 {
            return None;
        }
        let sum: f64 = (0..4)
            .filter(|q| mask & (1u128 << (4 * hour + q)) != 0)
            .map(|q| self.quarters[4 * hour + q])
            .sum();
        Some(sum * 4.0 / f64::from(count))
    }
}

/// A home's readings summed into local hours, per day.
#[derive(Clone, Debug, Default)]
pub struct HomeHistory {
    days: BTreeMap<NaiveDate, DaySlots>,
}

impl HomeHistory {
    /// An empty history.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// A history of whole days of hourly energies (tests, tools and training).
    ///
    /// # Errors
    /// [`DailyError::InvalidReading`] as [`HomeHistory::add`].
    pub fn from_hourly_days<'a>(
        days: impl IntoIterator<Item = &'a (NaiveDate, [f64; 24])>,
    ) -> Result<Self, DailyError> {
        let mut history = Self::new();
        for (day, hours) in days {
            for (h, kwh) in hours.iter().enumerate() {
                let start = day.and_hms_opt(h as u32, 0, 0).unwrap_or_default();
                history.add(start, 60, *kwh)?;
            }
        }
        Ok(history)
    }

    /// Adds one reading: `kwh` over the interval of `minutes` (15 or 60) starting at `start`
    /// (local time, on a whole interval).
    ///
    /// # Errors
    /// [`DailyError::InvalidReading`] for a non-finite or negative value, another interval
    /// length, a start off the interval grid or a slot that already has a reading.
    pub fn add(&mut self, start: NaiveDateTime, minutes: u32, kwh: f64) -> Result<(), DailyError> {
        let refuse = |reason: String| Err(DailyError::InvalidReading { reason });
        if !kwh.is_finite() || kwh < 0.0 {
            return refuse(format!("{kwh} kWh at {start}"));
        }
        if minutes != 15 && minutes != 60 {
            return refuse(format!("a {minutes}-minute reading; 15 or 60 expected"));
        }
        let time = start.time();
        if time.second() != 0 || time.nanosecond() != 0 || !time.minute().is_multiple_of(minutes) {
            return refuse(format!("{start} is not on the {minutes}-minute grid"));
        }
        let hour = time.hour() as usize;
        let slots = self.days.entry(start.date()).or_default();
        if minutes == 60 {
            if slots.hour_mask & (1 << hour) != 0 || slots.quarters_of_hour(hour) != 0 {
                return refuse(format!("{start}: the hour already has a reading"));
            }
            slots.hours[hour] = kwh;
            slots.hour_mask |= 1 << hour;
        } else {
            let q = 4 * hour + (time.minute() / 15) as usize;
            if slots.hour_mask & (1 << hour) != 0 || slots.quarter_mask & (1u128 << q) != 0 {
                return refuse(format!("{start}: the quarter hour already has a reading"));
            }
            slots.quarters[q] = kwh;
            slots.quarter_mask |= 1u128 << q;
        }
        Ok(())
    }

    /// The day's 24 hourly energies (kWh) when the day is complete enough to use (see the
    /// module docs for the rule and how short gaps are filled); `None` otherwise.
    #[must_use]
    pub fn day(&self, day: NaiveDate) -> Option<[f64; 24]> {
        let slots = self.days.get(&day)?;
        let mut out = [0.0; 24];
        for (h, o) in out.iter_mut().enumerate() {
            *o = slots.hour(h)?;
        }
        Some(out)
    }

    /// Every day holding at least one reading, in order.
    #[must_use]
    pub fn days(&self) -> Vec<NaiveDate> {
        self.days.keys().copied().collect()
    }

    /// Drops the days before `day` (a meter keeps only what the model looks back on).
    pub fn prune_before(&mut self, day: NaiveDate) {
        self.days = self.days.split_off(&day);
    }
}

/// Where the model's features read a home's usable days from (a meter's [`HomeHistory`], or
/// the training days): one code path for the meter and for training.
pub(crate) trait DaySource {
    /// The day's hourly energies when usable.
    fn usable(&self, day: NaiveDate) -> Option<[f64; 24]>;
}

impl DaySource for HomeHistory {
    fn usable(&self, day: NaiveDate) -> Option<[f64; 24]> {
        self.day(day)
    }
}

impl DaySource for BTreeMap<NaiveDate, [f64; 24]> {
    fn usable(&self, day: NaiveDate) -> Option<[f64; 24]> {
        self.get(&day).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(d: u32, h: u32, m: u32) -> NaiveDateTime {
        NaiveDate::from_ymd_opt(2010, 1, d)
            .unwrap()
            .and_hms_opt(h, m, 0)
            .unwrap()
    }

    fn full_day(history: &mut HomeHistory, d: u32) {
        for h in 0..24 {
            for q in 0..4 {
                history.add(at(d, h, 15 * q), 15, 0.1).unwrap();
            }
        }
    }

    #[test]
    fn quarter_hours_sum_into_hours() {
        let mut h = HomeHistory::new();
        full_day(&mut h, 1);
        let day = h.day(at(1, 0, 0).date()).unwrap();
        assert!(day.iter().all(|v| (v - 0.4).abs() < 1e-12));
        assert_eq!(h.days(), vec![at(1, 0, 0).date()]);
    }

    #[test]
    fn one_missing_quarter_is_scaled_two_make_the_day_unusable() {
        let mut h = HomeHistory::new();
        for hour in 0..24 {
            for q in 0..4 {
                if hour == 5 && q == 2 {
                    continue;
                }
                let kwh = if hour == 5 { 0.3 } else { 0.1 };
                h.add(at(2, hour, 15 * q), 15, kwh).unwrap();
            }
        }
        let day = h.day(at(2, 0, 0).date()).unwrap();
        assert!((day[5] - 1.2).abs() < 1e-12, "{}", day[5]);
        assert!((day[4] - 0.4).abs() < 1e-12);

        let mut h = HomeHistory::new();
        for hour in 0..24 {
            for q in 0..4 {
                if hour == 7 && q >= 2 {
                    continue;
                }
                h.add(at(3, hour, 15 * q), 15, 0.1).unwrap();
            }
        }
        assert_eq!(h.day(at(3, 0, 0).date()), None);
        assert_eq!(h.days().len(), 1);
    }

    #[test]
    fn hourly_readings_and_mixed_hours() {
        let mut h = HomeHistory::new();
        for hour in 0..24 {
            if hour % 2 == 0 {
                h.add(at(4, hour, 0), 60, 1.0).unwrap();
            } else {
                for q in 0..4 {
                    h.add(at(4, hour, 15 * q), 15, 0.25).unwrap();
                }
            }
        }
        assert_eq!(h.day(at(4, 0, 0).date()), Some([1.0; 24]));
        // A missing hour makes the day unusable.
        let mut h = HomeHistory::new();
        for hour in 0..23 {
            h.add(at(5, hour, 0), 60, 1.0).unwrap();
        }
        assert_eq!(h.day(at(5, 0, 0).date()), None);
    }

    #[test]
    fn bad_readings_are_refused() {
        let mut h = HomeHistory::new();
        assert!(h.add(at(1, 0, 0), 15, -0.1).is_err());
        assert!(h.add(at(1, 0, 0), 15, f64::NAN).is_err());
        assert!(h.add(at(1, 0, 0), 30, 0.1).is_err());
        assert!(h.add(at(1, 0, 10), 15, 0.1).is_err());
        assert!(h.add(at(1, 0, 15), 60, 0.1).is_err());
        h.add(at(1, 0, 15), 15, 0.1).unwrap();
        assert!(h.add(at(1, 0, 15), 15, 0.1).is_err(), "duplicate");
        assert!(h.add(at(1, 0, 0), 60, 0.4).is_err(), "hour over a quarter");
        h.add(at(1, 1, 0), 60, 0.4).unwrap();
        assert!(
            h.add(at(1, 1, 30), 15, 0.1).is_err(),
            "quarter inside an hour"
        );
        assert!(h.add(at(1, 1, 0), 60, 0.4).is_err(), "duplicate hour");
    }

    #[test]
    fn prune_drops_earlier_days() {
        let mut h = HomeHistory::new();
        for d in 1..=5 {
            full_day(&mut h, d);
        }
        h.prune_before(at(3, 0, 0).date());
        assert_eq!(h.days().first(), Some(&at(3, 0, 0).date()));
        assert_eq!(h.days().len(), 3);
        assert_eq!(h.day(at(2, 0, 0).date()), None);
    }
}
