//! Energy quantities that must not be confused with each other.
//!
//! - [`Wh`]: integer watt-hours, the unit of the billing lane.
//! - [`Kwh`]: kilowatt-hours as `f64`, the unit of tariffs, forecasts and the `timestamp,kwh`
//!   file format.
//! - [`Joules`]: integer joules (watt-seconds), the exact quantum the data layer accumulates in.
//!   A one-minute UCI reading of `P` kW with three decimals is exactly `P × 60 000` J, so
//!   sums over any set of readings are exact integers; 1 Wh = 3 600 J.
//!
//! All three are non-negative (consumption, not net metering) and bounded: every constructor
//! (`try_new`, `TryFrom`, serde deserialisation) rejects negative, non-finite and absurd values,
//! so a value of these types is always valid. The bound is 1 TWh (10¹² Wh) in each unit, far
//! beyond any meter's lifetime consumption, so conversions between the units never overflow.
//!
//! Rounding: [`Kwh::round_to_wh`], [`Kwh::round_to_joules`] and [`Joules::round_to_wh`] round to
//! the nearest integer, halves upwards (away from zero; the values are non-negative). The
//! conversions to [`Kwh`] divide and are exact up to `f64` rounding.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::Error;

const WH_PER_KWH: i64 = 1_000;
const JOULES_PER_WH: i64 = 3_600;
const JOULES_PER_KWH: i64 = 3_600_000;

/// An energy in whole watt-hours, `0 ..= Wh::MAX`.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(try_from = "i64", into = "i64")]
pub struct Wh(i64);

impl Wh {
    /// Zero watt-hours.
    pub const ZERO: Self = Self(0);
    /// The largest accepted value: 1 TWh (10¹² Wh).
    pub const MAX: Self = Self(1_000_000_000_000);

    /// Validates a watt-hour count: rejects negative values and values above [`Wh::MAX`].
    pub fn try_new(wh: i64) -> Result<Self, Error> {
        if wh < 0 {
            return Err(invalid("Wh", wh, "energy cannot be negative"));
        }
        if wh > Self::MAX.0 {
            return Err(invalid("Wh", wh, "above the 1 TWh limit"));
        }
        Ok(Self(wh))
    }

    /// The number of watt-hours.
    pub const fn get(self) -> i64 {
        self.0
    }

    /// The same energy in kilowatt-hours (exact up to `f64` rounding).
    pub fn to_kwh(self) -> Kwh {
        // Both bounds are the same energy, so the quotient is in range.
        Kwh(self.0 as f64 / WH_PER_KWH as f64)
    }

    /// The same energy in joules (exact).
    pub const fn to_joules(self) -> Joules {
        Joules(self.0 * JOULES_PER_WH)
    }

    /// Adds two energies; `None` if the sum exceeds [`Wh::MAX`].
    pub fn checked_add(self, other: Self) -> Option<Self> {
        Self::try_new(self.0.checked_add(other.0)?).ok()
    }
}

impl TryFrom<i64> for Wh {
    type Error = Error;
    fn try_from(wh: i64) -> Result<Self, Error> {
        Self::try_new(wh)
    }
}

impl From<Wh> for i64 {
    fn from(wh: Wh) -> Self {
        wh.0
    }
}

impl fmt::Display for Wh {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} Wh", self.0)
    }
}

/// An energy in kilowatt-hours, finite and within `0.0 ..= Kwh::MAX`.
///
/// `-0.0` is accepted and stored as `0.0`.
#[derive(Clone, Copy, Debug, Default, PartialEq, PartialOrd, Serialize, Deserialize)]
#[serde(try_from = "f64", into = "f64")]
pub struct Kwh(f64);

impl Kwh {
    /// Zero kilowatt-hours.
    pub const ZERO: Self = Self(0.0);
    /// The largest accepted value: 1 TWh (10⁹ kWh).
    pub const MAX: Self = Self(1e9);

    /// Validates a kilowatt-hour value: rejects NaN, infinities, negative values and values
    /// above [`Kwh::MAX`].
    pub fn try_new(kwh: f64) -> Result<Self, Error> {
        if kwh.is_nan() {
            return Err(invalid("kWh", kwh, "not a number"));
        }
        if kwh < 0.0 {
            return Err(invalid("kWh", kwh, "energy cannot be negative"));
        }
        if kwh > Self::MAX.0 {
            // Also catches +∞.
            return Err(invalid("kWh", kwh, "above the 1 TWh limit"));
        }
        // `-0.0 < 0.0` is false; adding 0.0 turns -0.0 into +0.0.
        Ok(Self(kwh + 0.0))
    }

    /// The number of kilowatt-hours.
    pub const fn get(self) -> f64 {
        self.0
    }

    /// The nearest whole number of watt-hours; halves (after the `f64` multiplication by 1000)
    /// round up.
    pub fn round_to_wh(self) -> Wh {
        // In range: 0 ≤ self ≤ 1e9, so the product is within 0 ..= 1e12 = Wh::MAX, exactly
        // representable, and the cast is exact.
        Wh((self.0 * WH_PER_KWH as f64).round() as i64)
    }

    /// The nearest whole number of joules; halves (after the `f64` multiplication by 3.6e6)
    /// round up. Exact for any value with at most five decimals.
    pub fn round_to_joules(self) -> Joules {
        // 1e9 kWh = 3.6e15 J < 2^53, so the product and the cast are exact integers in range.
        Joules((self.0 * JOULES_PER_KWH as f64).round() as i64)
    }
}

impl TryFrom<f64> for Kwh {
    type Error = Error;
    fn try_from(kwh: f64) -> Result<Self, Error> {
        Self::try_new(kwh)
    }
}

impl From<Kwh> for f64 {
    fn from(kwh: Kwh) -> Self {
        kwh.0
    }
}

impl From<Wh> for Kwh {
    fn from(wh: Wh) -> Self {
        wh.to_kwh()
    }
}

impl fmt::Display for Kwh {
    /// Prints `"<value> kWh"`; a precision (`{:.3}`) applies to the number.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match f.precision() {
            Some(precision) => write!(f, "{:.*} kWh", precision, self.0),
            None => write!(f, "{} kWh", self.0),
        }
    }
}

/// An energy in whole joules (watt-seconds), `0 ..= Joules::MAX`.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(try_from = "i64", into = "i64")]
pub struct Joules(i64);

impl Joules {
    /// Zero joules.
    pub const ZERO: Self = Self(0);
    /// The largest accepted value: 1 TWh (3.6 × 10¹⁵ J).
    pub const MAX: Self = Self(3_600_000_000_000_000);
    /// Joules in one watt-hour.
    pub const PER_WH: i64 = JOULES_PER_WH;
    /// Joules in one kilowatt-hour.
    pub const PER_KWH: i64 = JOULES_PER_KWH;

    /// Validates a joule count: rejects negative values and values above [`Joules::MAX`].
    pub fn try_new(joules: i64) -> Result<Self, Error> {
        if joules < 0 {
            return Err(invalid("J", joules, "energy cannot be negative"));
        }
        if joules > Self::MAX.0 {
            return Err(invalid("J", joules, "above the 1 TWh limit"));
        }
        Ok(Self(joules))
    }

    /// The number of joules.
    pub const fn get(self) -> i64 {
        self.0
    }

    /// The nearest whole number of watt-hours; 1800 J and above round up.
    pub const fn round_to_wh(self) -> Wh {
        // Non-negative, so adding half a unit then truncating rounds halves up; no overflow as
        // MAX + 1800 is far below i64::MAX.
        Wh((self.0 + JOULES_PER_WH / 2) / JOULES_PER_WH)
    }

    /// The same energy in kilowatt-hours (exact up to `f64` rounding; below 10¹⁵ J,
    /// [`Kwh::round_to_joules`] gives the original value back).
    pub fn to_kwh(self) -> Kwh {
        Kwh(self.0 as f64 / JOULES_PER_KWH as f64)
    }

    /// Adds two energies; `None` if the sum exceeds [`Joules::MAX`].
    pub fn checked_add(self, other: Self) -> Option<Self> {
        Self::try_new(self.0.checked_add(other.0)?).ok()
    }
}

impl TryFrom<i64> for Joules {
    type Error = Error;
    fn try_from(joules: i64) -> Result<Self, Error> {
        Self::try_new(joules)
    }
}

impl From<Joules> for i64 {
    fn from(joules: Joules) -> Self {
        joules.0
    }
}

impl From<Wh> for Joules {
    fn from(wh: Wh) -> Self {
        wh.to_joules()
    }
}

impl fmt::Display for Joules {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} J", self.0)
    }
}

fn invalid(unit: &'static str, value: impl fmt::Display, reason: &'static str) -> Error {
    Error::InvalidQuantity {
        unit,
        value: value.to_string(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn wh_rejects_negative_and_absurd() {
        assert_eq!(Wh::try_new(0).map(Wh::get).ok(), Some(0));
        assert_eq!(Wh::try_new(1_000_000_000_000).ok(), Some(Wh::MAX));
        assert!(Wh::try_new(-1).is_err());
        assert!(Wh::try_new(1_000_000_000_001).is_err());
        assert!(Wh::try_new(i64::MIN).is_err());
        let msg = Wh::try_new(-5).map_err(|e| e.to_string()).err();
        assert_eq!(
            msg.as_deref(),
            Some("invalid Wh value -5: energy cannot be negative")
        );
    }

    #[test]
    fn kwh_rejects_nan_infinite_negative_and_absurd() {
        for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -1e-9, 1e9 + 1.0] {
            assert!(Kwh::try_new(bad).is_err(), "{bad} accepted");
        }
        assert_eq!(Kwh::try_new(1e9).ok(), Some(Kwh::MAX));
        let zero = Kwh::try_new(-0.0).map(Kwh::get).expect("valid test input");
        assert!(zero == 0.0 && zero.is_sign_positive());
    }

    #[test]
    fn kwh_rounds_to_nearest_wh_halves_up() {
        let wh = |kwh: f64| Kwh::try_new(kwh).map(|k| k.round_to_wh().get()).ok();
        assert_eq!(wh(0.0), Some(0));
        assert_eq!(wh(0.0004), Some(0));
        assert_eq!(wh(0.0005), Some(1)); // 0.0005 × 1000 = 0.5 exactly in f64
        assert_eq!(wh(0.0015), Some(2));
        assert_eq!(wh(1.2344), Some(1234));
        assert_eq!(wh(1.2346), Some(1235));
        assert_eq!(wh(1e9), Some(1_000_000_000_000));
    }

    #[test]
    fn joules_conversions() {
        // A UCI minute of 4.216 kW: 4216 W × 60 s.
        let j = Kwh::try_new(4.216 / 60.0).map(Kwh::round_to_joules).ok();
        assert_eq!(j.map(Joules::get), Some(252_960));
        let j = Joules::try_new(252_960).expect("valid test input");
        assert_eq!(j.round_to_wh(), Wh(70)); // 70.27 Wh
        assert_eq!(Joules(1_799).round_to_wh(), Wh(0));
        assert_eq!(Joules(1_800).round_to_wh(), Wh(1));
        assert_eq!(Joules::MAX.round_to_wh(), Wh::MAX);
        assert_eq!(Wh::MAX.to_joules(), Joules::MAX);
        assert!((j.to_kwh().get() - 0.070_266_666_666).abs() < 1e-12);
        assert!(Joules::try_new(-1).is_err());
        assert!(Joules::try_new(Joules::MAX.get() + 1).is_err());
        assert_eq!(Joules::MAX.checked_add(Joules(1)), None);
        assert_eq!(Joules(2).checked_add(Joules(3)), Some(Joules(5)));
    }

    #[test]
    fn display() {
        assert_eq!(Wh(1234).to_string(), "1234 Wh");
        assert_eq!(Joules(5).to_string(), "5 J");
        assert_eq!(Kwh(1.5).to_string(), "1.5 kWh");
        assert_eq!(format!("{:.3}", Kwh(1.23456)), "1.235 kWh");
    }

    #[test]
    fn serde_validates() {
        assert_eq!(serde_json::from_str::<Wh>("42").ok(), Some(Wh(42)));
        assert!(serde_json::from_str::<Wh>("-1").is_err());
        assert_eq!(serde_json::from_str::<Kwh>("0.25").ok(), Some(Kwh(0.25)));
        assert!(serde_json::from_str::<Kwh>("-0.25").is_err());
        assert!(serde_json::from_str::<Joules>("-3").is_err());
        assert_eq!(serde_json::to_string(&Wh(7)).ok().as_deref(), Some("7"));
        assert_eq!(
            serde_json::to_string(&Kwh(0.5)).ok().as_deref(),
            Some("0.5")
        );
    }

    proptest! {
        #[test]
        fn wh_kwh_round_trip(wh in 0..=Wh::MAX.get()) {
            let wh = Wh(wh);
            prop_assert_eq!(wh.to_kwh().round_to_wh(), wh);
            prop_assert_eq!(Kwh::from(wh).round_to_joules(), wh.to_joules());
            prop_assert_eq!(wh.to_joules().round_to_wh(), wh);
        }

        #[test]
        fn joules_kwh_round_trip(j in 0..=1_000_000_000_000_000_i64) {
            let j = Joules(j);
            prop_assert_eq!(j.to_kwh().round_to_joules(), j);
        }

        #[test]
        fn kwh_rounding_is_nearest(kwh in 0.0..=Kwh::MAX.get()) {
            let wh = Kwh(kwh).round_to_wh().get() as f64;
            prop_assert!((wh - kwh * 1000.0).abs() <= 0.5);
        }
    }
}
