//! Fixed time intervals anchored at midnight.

use std::fmt;
use std::str::FromStr;

use chrono::{NaiveDateTime, NaiveTime, TimeDelta, Timelike};
use serde::{Deserialize, Serialize};

use crate::error::Error;

const SECONDS_PER_DAY: u32 = 86_400;

/// A fixed length of time that divides a day evenly: 1 s up to 1 day.
///
/// An interval defines a grid of slots anchored at midnight (`00:00`, `00:15`, `00:30`, … for
/// [`Interval::FIFTEEN_MINUTES`]). Because every interval divides a day, the grid is the same
/// every day and each slot of a finer interval lies inside exactly one slot of any coarser
/// interval that is a whole multiple of it; resampling relies on this.
///
/// Textual form (`Display`, `FromStr`, serde): `"30 s"`, `"15 min"`, `"1 h"`, `"1 d"`; parsing
/// also accepts the short unit `m` and no space (`"15m"`, `"1h"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Interval {
    secs: u32,
}

impl Interval {
    /// One second.
    pub const SECOND: Self = Self { secs: 1 };
    /// One minute, the resolution of the UCI data set.
    pub const MINUTE: Self = Self { secs: 60 };
    /// Fifteen minutes, the usual smart-meter reading interval.
    pub const FIFTEEN_MINUTES: Self = Self { secs: 900 };
    /// Thirty minutes.
    pub const HALF_HOUR: Self = Self { secs: 1_800 };
    /// One hour.
    pub const HOUR: Self = Self { secs: 3_600 };
    /// One day.
    pub const DAY: Self = Self {
        secs: SECONDS_PER_DAY,
    };

    /// An interval of `secs` seconds; it must be positive and divide 86 400.
    pub fn try_from_secs(secs: u32) -> Result<Self, Error> {
        if secs == 0 {
            return Err(Error::InvalidInterval {
                seconds: 0,
                reason: "must be positive",
            });
        }
        if secs > SECONDS_PER_DAY || !SECONDS_PER_DAY.is_multiple_of(secs) {
            return Err(Error::InvalidInterval {
                seconds: i64::from(secs),
                reason: "must divide a day (86400 s) evenly",
            });
        }
        Ok(Self { secs })
    }

    /// An interval of `minutes` minutes; it must be positive and divide 1 440.
    pub fn try_from_minutes(minutes: u32) -> Result<Self, Error> {
        let secs = minutes.checked_mul(60).ok_or(Error::InvalidInterval {
            seconds: i64::from(minutes) * 60,
            reason: "must divide a day (86400 s) evenly",
        })?;
        Self::try_from_secs(secs)
    }

    /// The length in seconds.
    pub const fn as_secs(self) -> u32 {
        self.secs
    }

    /// The length as a chrono duration.
    pub fn as_time_delta(self) -> TimeDelta {
        TimeDelta::seconds(i64::from(self.secs))
    }

    /// The number of slots in a day.
    pub const fn per_day(self) -> u32 {
        SECONDS_PER_DAY / self.secs
    }

    /// Whether `coarser` is a whole multiple of `self`, so that each `self` slot lies in
    /// exactly one `coarser` slot.
    pub const fn divides(self, coarser: Self) -> bool {
        coarser.secs.is_multiple_of(self.secs)
    }

    /// The start of the slot containing `t` (sub-second parts are dropped).
    pub fn floor(self, t: NaiveDateTime) -> NaiveDateTime {
        let secs = t.time().num_seconds_from_midnight();
        let start = secs - secs % self.secs;
        // `start` < 86 400, so the time always exists.
        let time =
            NaiveTime::from_num_seconds_from_midnight_opt(start, 0).unwrap_or(NaiveTime::MIN);
        t.date().and_time(time)
    }

    /// Whether `t` is the start of a slot (no sub-second part, on the grid).
    pub fn is_aligned(self, t: NaiveDateTime) -> bool {
        t.nanosecond() == 0
            && t.time()
                .num_seconds_from_midnight()
                .is_multiple_of(self.secs)
    }
}

impl fmt::Display for Interval {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.secs {
            SECONDS_PER_DAY => write!(f, "1 d"),
            s if s % 3_600 == 0 => write!(f, "{} h", s / 3_600),
            s if s % 60 == 0 => write!(f, "{} min", s / 60),
            s => write!(f, "{s} s"),
        }
    }
}

impl FromStr for Interval {
    type Err = Error;

    /// Parses `"<n> <unit>"` or `"<n><unit>"` with unit `s`, `m`/`min`, `h` or `d`.
    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = || Error::InvalidOption {
            option: "interval",
            reason: format!("{s:?} is not an interval like \"15 min\", \"1 h\" or \"30 s\""),
        };
        let s_trim = s.trim();
        let digits_end = s_trim
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(s_trim.len());
        let (number, unit) = s_trim.split_at(digits_end);
        let n: u32 = number.parse().map_err(|_| bad())?;
        let scale = match unit.trim() {
            "s" | "sec" => 1,
            "m" | "min" => 60,
            "h" => 3_600,
            "d" => SECONDS_PER_DAY,
            _ => return Err(bad()),
        };
        let secs = n.checked_mul(scale).ok_or_else(bad)?;
        Self::try_from_secs(secs)
    }
}

impl TryFrom<String> for Interval {
    type Error = Error;
    fn try_from(s: String) -> Result<Self, Error> {
        s.parse()
    }
}

impl From<Interval> for String {
    fn from(i: Interval) -> Self {
        i.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;
    use proptest::prelude::*;

    fn at(h: u32, m: u32, s: u32) -> NaiveDateTime {
        NaiveDate::from_ymd_opt(2007, 1, 31)
            .and_then(|d| d.and_hms_opt(h, m, s))
            .expect("valid test input")
    }

    #[test]
    fn constructors_validate() {
        assert_eq!(
            Interval::try_from_minutes(15).ok(),
            Some(Interval::FIFTEEN_MINUTES)
        );
        assert_eq!(Interval::try_from_secs(86_400).ok(), Some(Interval::DAY));
        assert!(Interval::try_from_secs(0).is_err());
        assert!(Interval::try_from_secs(7).is_err()); // 86400 is not divisible by 7
        assert!(Interval::try_from_minutes(7).is_err());
        assert!(Interval::try_from_secs(172_800).is_err());
        assert!(Interval::try_from_minutes(u32::MAX).is_err());
    }

    #[test]
    fn display_and_parse() {
        for (i, text) in [
            (Interval::SECOND, "1 s"),
            (Interval::MINUTE, "1 min"),
            (Interval::FIFTEEN_MINUTES, "15 min"),
            (Interval::HOUR, "1 h"),
            (Interval::DAY, "1 d"),
        ] {
            assert_eq!(i.to_string(), text);
            assert_eq!(text.parse::<Interval>().ok(), Some(i));
        }
        assert_eq!(
            "15m".parse::<Interval>().ok(),
            Some(Interval::FIFTEEN_MINUTES)
        );
        assert_eq!(
            "2h".parse::<Interval>().map(Interval::as_secs).ok(),
            Some(7_200)
        );
        assert_eq!(
            "90 s"
                .parse::<Interval>()
                .map(|i| i.to_string())
                .ok()
                .as_deref(),
            Some("90 s")
        );
        for bad in ["", "15", "m", "-1 h", "1.5 h", "7 min", "2 d", "1 week"] {
            assert!(bad.parse::<Interval>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn floor_and_alignment() {
        let q = Interval::FIFTEEN_MINUTES;
        assert_eq!(q.floor(at(17, 24, 0)), at(17, 15, 0));
        assert_eq!(q.floor(at(17, 15, 0)), at(17, 15, 0));
        assert_eq!(Interval::DAY.floor(at(23, 59, 59)), at(0, 0, 0));
        assert!(q.is_aligned(at(0, 45, 0)));
        assert!(!q.is_aligned(at(0, 45, 1)));
        assert!(Interval::MINUTE.divides(Interval::HOUR));
        assert!(
            !Interval::FIFTEEN_MINUTES
                .divides(Interval::try_from_minutes(20).expect("valid test input"))
        );
        assert_eq!(Interval::FIFTEEN_MINUTES.per_day(), 96);
    }

    #[test]
    fn serde_uses_text() {
        let json = serde_json::to_string(&Interval::HOUR).expect("valid test input");
        assert_eq!(json, "\"1 h\"");
        assert_eq!(
            serde_json::from_str::<Interval>("\"15 min\"").ok(),
            Some(Interval::FIFTEEN_MINUTES)
        );
        assert!(serde_json::from_str::<Interval>("\"7 min\"").is_err());
    }

    proptest! {
        #[test]
        fn floor_is_aligned_and_contains(secs in 0u32..86_400, idx in 0usize..8) {
            let divisors = [1u32, 60, 300, 900, 1_800, 3_600, 21_600, 86_400];
            let i = Interval::try_from_secs(divisors[idx]).expect("valid test input");
            let t = at(0, 0, 0) + TimeDelta::seconds(i64::from(secs));
            let f = i.floor(t);
            prop_assert!(i.is_aligned(f));
            prop_assert!(f <= t && t < f + i.as_time_delta());
        }
    }
}
