//! Battery what-if: a home battery dispatched greedily against the time-of-use bands of a
//! tariff, and the month's bill with and without it.
//!
//! # The dispatch rule
//!
//! Given a [`Battery`] (capacity, power, round-trip efficiency) and one month of a home's own
//! interval readings, [`what_if`] walks the readings in order with the battery empty at the
//! start:
//! - in an interval of the **cheapest** band (the lowest `rate_percent`), the battery charges
//!   from the grid as much as its power allows in that interval and as fits in its capacity;
//! - in an interval of the **dearest** band (the highest `rate_percent`), it discharges as much
//!   as its power allows, what it holds and **no more than the home uses** in that interval:
//!   it never exports;
//! - in any other interval it idles.
//!
//! When every band has the same rate (a tariff without time-of-use bands), nothing moves: a
//! battery cannot lower a slab-only bill, it can only add its losses.
//!
//! # Losses and exactness
//!
//! The round-trip efficiency `η` (whole percent) is charged entirely on the way in: `c` Wh
//! drawn from the grid store `c × η / 100` Wh. The state of charge is kept in integer
//! hundredths of a Wh, so every step is exact and
//! `charged = discharged + losses + left in the battery`, to the hundredth of a Wh.
//! Both bills come from [`Tariff::bill`] (the same exact plaintext bill the encrypted one is
//! checked against) over the grid import series, so the slab a kWh falls in follows the
//! period's running total with the battery's extra import included.

use chrono::NaiveDateTime;

use crate::data::{Interval, Period};
use crate::error::Error;
use crate::tariff::{Bill, ExactAmount, Tariff};
use crate::units::Wh;

/// Hundredths of a Wh per Wh: the battery's internal unit.
const CENTI: i64 = 100;

/// A home battery: usable capacity, charge/discharge power and round-trip efficiency.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Battery {
    capacity: Wh,
    power_w: u32,
    efficiency_percent: u32,
}

impl Battery {
    /// A battery of `capacity` usable energy, `power_w` W charge and discharge power and a
    /// round-trip efficiency of `efficiency_percent` (1–100).
    ///
    /// # Errors
    /// [`Error::InvalidOption`] for a zero capacity or power, a capacity above 10 MWh, a power
    /// above 10 MW or an efficiency outside 1–100 %.
    pub fn try_new(capacity: Wh, power_w: u32, efficiency_percent: u32) -> Result<Self, Error> {
        let refuse = |option, reason: &str| {
            Err(Error::InvalidOption {
                option,
                reason: reason.to_owned(),
            })
        };
        if capacity.get() <= 0 || capacity.get() > 10_000_000 {
            return refuse("battery capacity", "must be above 0 and at most 10 MWh");
        }
        if power_w == 0 || power_w > 10_000_000 {
            return refuse("battery power", "must be above 0 and at most 10 MW");
        }
        if !(1..=100).contains(&efficiency_percent) {
            return refuse(
                "battery efficiency",
                "the round-trip efficiency must be 1–100 %",
            );
        }
        Ok(Self {
            capacity,
            power_w,
            efficiency_percent,
        })
    }

    /// Its usable capacity.
    pub fn capacity(&self) -> Wh {
        self.capacity
    }

    /// Its power in W.
    pub fn power_w(&self) -> u32 {
        self.power_w
    }

    /// Its round-trip efficiency in whole percent.
    pub fn efficiency_percent(&self) -> u32 {
        self.efficiency_percent
    }

    /// The most energy it can move in one interval of `interval` (whole Wh, rounded down).
    pub fn energy_per_interval(&self, interval: Interval) -> Wh {
        let wh = i64::from(self.power_w) * i64::from(interval.as_secs()) / 3600;
        Wh::try_new(wh).unwrap_or(Wh::MAX)
    }
}

/// What [`what_if`] found for one month.
#[derive(Clone, Debug, PartialEq)]
pub struct WhatIf {
    /// The billing period.
    pub period: Period,
    /// The bill of the readings as they are.
    pub without: Bill,
    /// The bill of the grid import with the battery.
    pub with: Bill,
    /// The home's grid import with the battery, interval by interval (start, Wh).
    pub import: Vec<(NaiveDateTime, Wh)>,
    /// Energy drawn from the grid to charge the battery.
    pub charged: Wh,
    /// Energy the battery supplied to the home (the kWh shifted from the dearest band).
    pub discharged: Wh,
    /// Conversion losses, in hundredths of a Wh.
    pub losses_centiwh: i64,
    /// Energy left in the battery after the last reading, in hundredths of a Wh.
    pub left_centiwh: i64,
}

impl WhatIf {
    /// `without − with`: what the battery saves (negative when it costs more).
    pub fn saving(&self) -> ExactAmount {
        ExactAmount::from_units(self.without.amount().units() - self.with.amount().units())
    }

    /// The losses in kWh.
    pub fn losses_kwh(&self) -> f64 {
        self.losses_centiwh as f64 / 100_000.0
    }
}

/// Dispatches `battery` greedily over `readings` (start, Wh; strictly increasing starts, one
/// interval of `interval` each, all in one calendar month) under `tariff`; see the
/// [module documentation](self).
///
/// # Errors
/// No readings, readings spanning two months or out of order, or a bill beyond the tariff's
/// range.
pub fn what_if(
    tariff: &Tariff,
    battery: &Battery,
    interval: Interval,
    readings: &[(NaiveDateTime, Wh)],
) -> Result<WhatIf, Error> {
    let first = readings.first().ok_or_else(|| Error::InvalidOption {
        option: "readings",
        reason: "the battery what-if needs at least one reading".to_owned(),
    })?;
    let period = Period::containing(first.0.date())?;
    if let Some((t, _)) = readings
        .iter()
        .find(|(t, _)| Period::containing(t.date()).ok() != Some(period))
    {
        return Err(Error::InvalidOption {
            option: "readings",
            reason: format!("reading at {t} is outside the billing period {period}"),
        });
    }
    let rates: Vec<i64> = tariff.bands().iter().map(|b| b.rate_percent).collect();
    let (cheap, dear) = match (rates.iter().min(), rates.iter().max()) {
        (Some(lo), Some(hi)) if lo < hi => (*lo, *hi),
        _ => (0, 0),
    };
    let dispatch = cheap < dear;
    let step = battery.energy_per_interval(interval).get();
    let eta = i64::from(battery.efficiency_percent);
    let capacity = battery.capacity.get() * CENTI;
    let (mut soc, mut charged, mut discharged) = (0_i64, 0_i64, 0_i64);
    let mut import = Vec::with_capacity(readings.len());
    for &(start, load) in readings {
        let rate = rates
            .get(tariff.band_at(start.time()))
            .copied()
            .unwrap_or(100);
        let grid = if dispatch && rate == cheap {
            // Whole Wh drawn such that the stored energy still fits.
            let room = (capacity - soc) / eta;
            let c = step.min(room).max(0);
            soc += c * eta;
            charged += c;
            load.get() + c
        } else if dispatch && rate == dear {
            let d = step.min(soc / CENTI).min(load.get()).max(0);
            soc -= d * CENTI;
            discharged += d;
            load.get() - d
        } else {
            load.get()
        };
        import.push((start, Wh::try_new(grid)?));
    }
    let without = tariff.bill(readings.iter().copied())?;
    let with = tariff.bill(import.iter().copied())?;
    let losses_centiwh = charged * CENTI - discharged * CENTI - soc;
    Ok(WhatIf {
        period,
        without,
        with,
        import,
        charged: Wh::try_new(charged)?,
        discharged: Wh::try_new(discharged)?,
        losses_centiwh,
        left_centiwh: soc,
    })
}

#[cfg(test)]
mod tests {
    use chrono::{NaiveDate, TimeDelta};

    use super::*;
    use crate::tariff::{BandConfig, SlabConfig, TariffConfig};

    /// One slab threshold at `first_slab_kwh` (₹4 then ₹8 per kWh), off-peak 00–06 at 50 %,
    /// peak 18–22 at 150 %, the rest standard at 100 %.
    fn tou_tariff(first_slab_kwh: f64) -> Tariff {
        Tariff::try_new(TariffConfig {
            name: "test ToU".into(),
            slabs: vec![
                SlabConfig {
                    up_to_kwh: Some(first_slab_kwh),
                    rate_paise: 400,
                },
                SlabConfig {
                    up_to_kwh: None,
                    rate_paise: 800,
                },
            ],
            bands: vec![
                BandConfig {
                    name: "off-peak".into(),
                    hours: vec!["00:00-06:00".into()],
                    rate_percent: 50,
                },
                BandConfig {
                    name: "peak".into(),
                    hours: vec!["18:00-22:00".into()],
                    rate_percent: 150,
                },
            ],
        })
        .unwrap()
    }

    /// Two days of 1 kWh every hour from 2010-01-01.
    fn two_days() -> Vec<(NaiveDateTime, Wh)> {
        let start = NaiveDate::from_ymd_opt(2010, 1, 1)
            .unwrap()
            .and_hms_opt(0, 0, 0)
            .unwrap();
        (0..48)
            .map(|h| (start + TimeDelta::hours(h), Wh::try_new(1000).unwrap()))
            .collect()
    }

    fn battery_2kwh() -> Battery {
        Battery::try_new(Wh::try_new(2000).unwrap(), 1000, 80).unwrap()
    }

    fn paise(amount: ExactAmount) -> i128 {
        assert_eq!(amount.units() % ExactAmount::UNITS_PER_PAISA, 0);
        amount.units() / ExactAmount::UNITS_PER_PAISA
    }

    #[test]
    fn two_days_by_hand() {
        // Per day: off-peak 00–06 charges 1000 + 1000 + 500 Wh (2 kWh stored at 80 %), peak
        // 18–20 discharges 1000 + 1000 Wh. Without: 48 kWh, ₹4 × (12 × 0.5 + 28 + 8 × 1.5) =
        // ₹184. With: off-peak 17 kWh, standard 28, peak 4: ₹4 × (8.5 + 28 + 6) = ₹170.
        let r = what_if(
            &tou_tariff(100.0),
            &battery_2kwh(),
            Interval::HOUR,
            &two_days(),
        )
        .unwrap();
        assert_eq!(paise(r.without.amount()), 18_400);
        assert_eq!(paise(r.with.amount()), 17_000);
        assert_eq!(paise(r.saving()), 1_400);
        assert_eq!(r.charged.get(), 5_000);
        assert_eq!(r.discharged.get(), 4_000);
        assert_eq!(r.losses_centiwh, 100_000);
        assert_eq!(r.left_centiwh, 0);
        assert!((r.losses_kwh() - 1.0).abs() < 1e-12);
        // Hour 2 charges only the 500 Wh that still fit; hour 20 has nothing left.
        assert_eq!(r.import[2].1.get(), 1_500);
        assert_eq!(r.import[3].1.get(), 1_000);
        assert_eq!(r.import[18].1.get(), 0);
        assert_eq!(r.import[20].1.get(), 1_000);
        assert_eq!(r.period.to_string(), "2010-01");
    }

    #[test]
    fn battery_losses_push_the_last_reading_into_the_next_slab() {
        // Threshold 48.5 kWh: without the battery 48 kWh stay in slab 1 (₹184); with it 49 kWh,
        // the last reading (day 2, 23:00, standard) splits 500 Wh at ₹4 and 500 Wh at ₹8:
        // ₹170 + 0.5 × ₹4 = ₹172.
        let r = what_if(
            &tou_tariff(48.5),
            &battery_2kwh(),
            Interval::HOUR,
            &two_days(),
        )
        .unwrap();
        assert_eq!(paise(r.without.amount()), 18_400);
        assert_eq!(paise(r.with.amount()), 17_200);
        assert_eq!(paise(r.saving()), 1_200);
        assert_eq!(r.with.energy().get(), 49_000);
    }

    #[test]
    fn never_exports_and_balances_energy() {
        // Small peak loads: the battery supplies at most the load.
        let mut readings = two_days();
        for (t, wh) in &mut readings {
            if (18..22).contains(&chrono::Timelike::hour(t)) {
                *wh = Wh::try_new(300).unwrap();
            }
        }
        let b = Battery::try_new(Wh::try_new(5000).unwrap(), 3000, 90).unwrap();
        let r = what_if(&tou_tariff(100.0), &b, Interval::HOUR, &readings).unwrap();
        assert!(r.import.iter().all(|(_, wh)| wh.get() >= 0));
        for ((t, with), (_, load)) in r.import.iter().zip(&readings) {
            if (18..22).contains(&chrono::Timelike::hour(t)) {
                assert!(with.get() <= load.get());
            }
        }
        // 4 peak hours × 300 Wh per day.
        assert_eq!(r.discharged.get(), 2 * 1200);
        assert_eq!(
            r.charged.get() * 100,
            r.discharged.get() * 100 + r.losses_centiwh + r.left_centiwh
        );
    }

    #[test]
    fn slab_only_tariff_moves_nothing() {
        let r = what_if(
            &Tariff::bescom(),
            &battery_2kwh(),
            Interval::HOUR,
            &two_days(),
        )
        .unwrap();
        assert_eq!(r.charged, Wh::ZERO);
        assert_eq!(r.with, r.without);
        assert_eq!(paise(r.saving()), 0);
    }

    #[test]
    fn refuses_bad_input() {
        assert!(Battery::try_new(Wh::ZERO, 1000, 80).is_err());
        assert!(Battery::try_new(Wh::try_new(1000).unwrap(), 0, 80).is_err());
        assert!(Battery::try_new(Wh::try_new(1000).unwrap(), 1000, 0).is_err());
        assert!(Battery::try_new(Wh::try_new(1000).unwrap(), 1000, 101).is_err());
        let t = tou_tariff(100.0);
        assert!(what_if(&t, &battery_2kwh(), Interval::HOUR, &[]).is_err());
        let mut two_months = two_days();
        two_months[47].0 = NaiveDate::from_ymd_opt(2010, 2, 1)
            .unwrap()
            .and_hms_opt(0, 0, 0)
            .unwrap();
        assert!(what_if(&t, &battery_2kwh(), Interval::HOUR, &two_months).is_err());
        let mut unordered = two_days();
        unordered.swap(3, 4);
        assert!(what_if(&t, &battery_2kwh(), Interval::HOUR, &unordered).is_err());
    }
}
