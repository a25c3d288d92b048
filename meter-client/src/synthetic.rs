//! A deterministic synthetic household, for demos and load tests with many homes.
//!
//! # The model
//!
//! Every value is a pure function of `(seed, home, timestamp)`: the same home gives the same
//! reading for the same quarter hour whatever range is generated, on every platform and every
//! version of this crate (the generator is SplitMix64's mixing function, written out here, not
//! a library RNG whose stream may change). Energy is in whole Wh per 15 minutes.
//!
//! Each home draws, from `(seed, home)` alone, a **size** factor in `0.5 ..= 1.5` and small
//! shifts of its routine. A quarter hour's expected energy is
//!
//! ```text
//! size × day_factor × ( base                                   25–45 Wh, always on
//!                     + morning · bump(t; ~07:00 weekdays, ~08:30 weekends, σ = 1 h)
//!                     + evening · bump(t; ~19:30, σ = 1.5 h)
//!                     + weekend daytime load 10:00–17:00 (40 % of `morning`, weekends only) )
//! ```
//!
//! with `bump` a Gaussian of peak 1, `morning` 150–250 Wh and `evening` 200–350 Wh per quarter
//! hour, and `day_factor` in `0.85 ..= 1.15` drawn per home and day. Each reading is then
//! multiplied by an independent factor in `0.75 ..= 1.25` (noise) and rounded to the Wh. A home
//! of size 1 uses about 9–10 kWh a day, some 290 kWh a month: every BESCOM slab is reached.

use chrono::{Datelike, NaiveDate, NaiveDateTime, TimeDelta, Timelike, Weekday};

use crate::source::MeterReading;
use seer_core::units::{Joules, Wh};

/// Quarter hours per day.
const SLOTS_PER_DAY: i64 = 96;

/// SplitMix64's finalizer: a bijective mix of 64 bits.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A uniform number in `[0, 1)` keyed by `(seed, home, stream, index)`.
fn unit(seed: u64, home: u32, stream: u64, index: i64) -> f64 {
    let h = mix(seed ^ mix(u64::from(home) ^ mix(stream ^ mix(index as u64))));
    (h >> 11) as f64 / (1_u64 << 53) as f64
}

/// A uniform number in `lo ..= hi` keyed like [`unit`].
fn between(lo: f64, hi: f64, seed: u64, home: u32, stream: u64, index: i64) -> f64 {
    lo + (hi - lo) * unit(seed, home, stream, index)
}

fn bump(hour: f64, centre: f64, sigma: f64) -> f64 {
    let d = (hour - centre) / sigma;
    (-0.5 * d * d).exp()
}

/// One synthetic home: see the [module documentation](self).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SyntheticHome {
    seed: u64,
    home: u32,
    size: f64,
    base: f64,
    morning: f64,
    evening: f64,
    morning_centre: f64,
    evening_centre: f64,
}

impl SyntheticHome {
    /// Home number `home` of the population generated from `seed`.
    pub fn new(seed: u64, home: u32) -> Self {
        let p = |stream, lo, hi| between(lo, hi, seed, home, stream, -1);
        Self {
            seed,
            home,
            size: p(1, 0.5, 1.5),
            base: p(2, 25.0, 45.0),
            morning: p(3, 150.0, 250.0),
            evening: p(4, 200.0, 350.0),
            morning_centre: p(5, 6.5, 7.5),
            evening_centre: p(6, 19.0, 20.0),
        }
    }

    /// The energy of the quarter hour starting at `start` (which should lie on the 15-minute
    /// grid; other times are evaluated as given).
    pub fn energy_at(&self, start: NaiveDateTime) -> Wh {
        let hour = f64::from(start.hour()) + f64::from(start.minute()) / 60.0;
        let weekend = matches!(start.weekday(), Weekday::Sat | Weekday::Sun);
        let day = i64::from(start.date().num_days_from_ce());
        let morning_centre = self.morning_centre + if weekend { 1.5 } else { 0.0 };
        let daytime = if weekend && (10.0..17.0).contains(&hour) {
            0.4 * self.morning
        } else {
            0.0
        };
        let expected = self.base
            + self.morning * bump(hour, morning_centre, 1.0)
            + self.evening * bump(hour, self.evening_centre, 1.5)
            + daytime;
        let day_factor = between(0.85, 1.15, self.seed, self.home, 7, day);
        let slot = day * SLOTS_PER_DAY + i64::from(start.hour() * 4 + start.minute() / 15);
        let noise = between(0.75, 1.25, self.seed, self.home, 8, slot);
        let wh = (self.size * day_factor * expected * noise).round();
        // At most 1.5 × 1.15 × 1.25 × ~750 Wh: far inside Wh's range.
        Wh::try_new(wh as i64).unwrap_or(Wh::ZERO)
    }

    /// The readings of every quarter hour from `from` (inclusive) to `until` (exclusive).
    pub fn readings(&self, from: NaiveDate, until: NaiveDate) -> Vec<MeterReading> {
        let mut out = Vec::new();
        let end = until.and_time(chrono::NaiveTime::MIN);
        let mut t = from.and_time(chrono::NaiveTime::MIN);
        while t < end {
            out.push(MeterReading {
                start: t,
                energy: Joules::from(self.energy_at(t)),
            });
            t += TimeDelta::minutes(15);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap()
    }

    #[test]
    fn readings_do_not_depend_on_the_range_generated() {
        let home = SyntheticHome::new(42, 7);
        let month = home.readings(date(2024, 3, 1), date(2024, 4, 1));
        let day = home.readings(date(2024, 3, 15), date(2024, 3, 16));
        assert_eq!(month.len(), 31 * 96);
        let offset = 14 * 96;
        assert_eq!(&month[offset..offset + 96], &day[..]);
    }

    #[test]
    fn homes_and_seeds_differ() {
        let t = date(2024, 3, 4).and_hms_opt(19, 30, 0).unwrap();
        let a = SyntheticHome::new(1, 0).energy_at(t);
        let b = SyntheticHome::new(1, 1).energy_at(t);
        let c = SyntheticHome::new(2, 0).energy_at(t);
        assert!(a != b || a != c);
    }

    #[test]
    fn a_month_reaches_plausible_totals_with_peaks() {
        for home in 0..20 {
            let h = SyntheticHome::new(9, home);
            let readings = h.readings(date(2024, 3, 1), date(2024, 4, 1));
            let kwh: f64 = readings.iter().map(|r| r.energy.get() as f64).sum::<f64>() / 3.6e6;
            assert!((80.0..700.0).contains(&kwh), "home {home}: {kwh} kWh");
            // Evening peak above the night-time base on a weekday.
            let night = h.energy_at(date(2024, 3, 5).and_hms_opt(3, 0, 0).unwrap());
            let evening = h.energy_at(date(2024, 3, 5).and_hms_opt(19, 30, 0).unwrap());
            assert!(evening.get() > 2 * night.get(), "{evening} vs {night}");
        }
    }

    #[test]
    fn known_values_are_stable() {
        // Pins the model: changing it changes every synthetic demo's bills.
        let h = SyntheticHome::new(0, 0);
        let t = date(2024, 1, 1).and_hms_opt(0, 0, 0).unwrap();
        assert_eq!(h.energy_at(t).get(), 14);
        let evening = date(2024, 7, 6).and_hms_opt(19, 30, 0).unwrap();
        assert_eq!(h.energy_at(evening).get(), 152);
    }
}
