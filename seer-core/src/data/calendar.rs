//! Calendar months (billing periods, [`Period`]) and the supported range of dates.

use std::fmt;
use std::str::FromStr;

use chrono::{Datelike, NaiveDate, NaiveDateTime, NaiveTime};
use serde::{Deserialize, Serialize};

use crate::error::Error;

/// The first supported year. Timestamps are limited to four-digit years so that every
/// supported month and day has a successor that chrono can represent.
pub const MIN_YEAR: i32 = 1;
/// The last supported year.
pub const MAX_YEAR: i32 = 9999;
/// The first year a [`Period`] may be written in (its text form, `YYYY-MM`, has four digits
/// without a leading zero, so that the text order is the time order and no period has two
/// spellings). Earlier months exist for calendar arithmetic on data but are never parsed.
pub const MIN_TEXT_YEAR: i32 = 1000;

/// Whether `t` lies in the supported years [`MIN_YEAR`] to [`MAX_YEAR`].
pub(crate) fn is_supported(t: NaiveDateTime) -> bool {
    (MIN_YEAR..=MAX_YEAR).contains(&t.year())
}

/// A calendar month such as 2007-01, the unit of billing periods: the one period type of the
/// meter, the utility and the key authority.
///
/// The month runs from midnight on its first day ([`Period::start`]) to midnight on the
/// first day of the next month ([`Period::end`], exclusive), in whatever local time the
/// series it is applied to is expressed in. Textual form: `"2007-01"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Period {
    year: i32,
    month: u32,
}

impl Period {
    /// A month; `year` must be within [`MIN_YEAR`]..=[`MAX_YEAR`] and `month` within 1..=12.
    pub fn try_new(year: i32, month: u32) -> Result<Self, Error> {
        if (MIN_YEAR..=MAX_YEAR).contains(&year) && (1..=12).contains(&month) {
            Ok(Self { year, month })
        } else {
            Err(Error::InvalidMonth { year, month })
        }
    }

    /// The month containing `date`.
    pub fn containing(date: NaiveDate) -> Result<Self, Error> {
        Self::try_new(date.year(), date.month())
    }

    /// The year.
    pub const fn year(self) -> i32 {
        self.year
    }

    /// The month number, 1 to 12.
    pub const fn month(self) -> u32 {
        self.month
    }

    /// The first day of the month.
    pub fn first_day(self) -> NaiveDate {
        // Always Some: the year and month were validated on construction.
        NaiveDate::from_ymd_opt(self.year, self.month, 1).unwrap_or(NaiveDate::MIN)
    }

    /// Midnight at the start of the month.
    pub fn start(self) -> NaiveDateTime {
        self.first_day().and_time(NaiveTime::MIN)
    }

    /// Midnight at the start of the next month (exclusive end of this one).
    pub fn end(self) -> NaiveDateTime {
        let (year, month) = if self.month == 12 {
            (self.year + 1, 1)
        } else {
            (self.year, self.month + 1)
        };
        // Always Some: year ≤ 10000 is within chrono's range.
        NaiveDate::from_ymd_opt(year, month, 1)
            .unwrap_or(NaiveDate::MAX)
            .and_time(NaiveTime::MIN)
    }

    /// The first day after the month (the date of [`end`](Self::end)).
    pub fn end_day(self) -> NaiveDate {
        self.end().date()
    }

    /// The next month, or `None` after 9999-12.
    pub fn next(self) -> Option<Self> {
        if self.month == 12 {
            Self::try_new(self.year + 1, 1).ok()
        } else {
            Self::try_new(self.year, self.month + 1).ok()
        }
    }

    /// The number of days in the month (28 to 31).
    pub fn num_days(self) -> u32 {
        // Whole days between two midnights; at most 31.
        u32::try_from((self.end() - self.start()).num_days()).unwrap_or(0)
    }

    /// Whether `t` falls within the month.
    pub fn contains(self, t: NaiveDateTime) -> bool {
        t.year() == self.year && t.month() == self.month
    }
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

impl FromStr for Period {
    type Err = Error;

    /// Parses `"YYYY-MM"`: exactly four ASCII digits, `-`, two ASCII digits, a year of
    /// [`MIN_TEXT_YEAR`] to [`MAX_YEAR`] and a month of 01 to 12 (nothing around it). This is
    /// the one parser of billing periods: the utility's batches, the key authority's receipts
    /// and releases, and the command line all read periods through it.
    ///
    /// # Errors
    /// [`Error::InvalidPeriod`] for anything else.
    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = || Error::InvalidPeriod {
            period: s.chars().take(32).collect(),
        };
        let bytes = s.as_bytes();
        if bytes.len() != 7
            || bytes[4] != b'-'
            || !bytes[..4].iter().chain(&bytes[5..]).all(u8::is_ascii_digit)
        {
            return Err(bad());
        }
        let year: i32 = s[..4].parse().map_err(|_| bad())?;
        let month: u32 = s[5..].parse().map_err(|_| bad())?;
        if year < MIN_TEXT_YEAR {
            return Err(bad());
        }
        Self::try_new(year, month).map_err(|_| bad())
    }
}

impl TryFrom<String> for Period {
    type Error = Error;
    fn try_from(s: String) -> Result<Self, Error> {
        s.parse()
    }
}

impl From<Period> for String {
    fn from(m: Period) -> Self {
        m.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ym(year: i32, month: u32) -> Period {
        Period::try_new(year, month).expect("valid test input")
    }

    #[test]
    fn validates() {
        assert!(Period::try_new(2007, 0).is_err());
        assert!(Period::try_new(2007, 13).is_err());
        assert!(Period::try_new(0, 1).is_err());
        assert!(Period::try_new(10_000, 1).is_err());
        assert!(Period::try_new(9999, 12).is_ok());
    }

    #[test]
    fn bounds_and_lengths() {
        let jan = ym(2007, 1);
        assert_eq!(jan.to_string(), "2007-01");
        assert_eq!(jan.num_days(), 31);
        assert_eq!(ym(2008, 2).num_days(), 29);
        assert_eq!(ym(2007, 2).num_days(), 28);
        assert_eq!(ym(2006, 12).next(), Some(ym(2007, 1)));
        assert_eq!(ym(9999, 12).next(), None);
        assert_eq!(ym(9999, 12).num_days(), 31);
        assert_eq!(jan.end(), ym(2007, 2).start());
        let t = NaiveDate::from_ymd_opt(2007, 1, 31)
            .and_then(|d| d.and_hms_opt(23, 59, 0))
            .expect("valid test input");
        assert!(jan.contains(t));
        assert!(!ym(2007, 2).contains(t));
        assert_eq!(Period::containing(t.date()).ok(), Some(jan));
    }

    #[test]
    fn parses() {
        assert_eq!("2010-11".parse::<Period>().ok(), Some(ym(2010, 11)));
        for bad in [
            "2010-13",
            "2010-1",
            "10-11",
            "2010/11",
            "",
            "2010-11-01",
            "0999-12",
            "2010-00",
            " 2010-11",
            "+201-11",
            "2010-+1",
            "２010-11",
        ] {
            assert!(bad.parse::<Period>().is_err(), "{bad:?} accepted");
        }
        for good in ["1000-01", "2007-12", "9999-12"] {
            assert_eq!(
                good.parse::<Period>()
                    .map(|p| p.to_string())
                    .ok()
                    .as_deref(),
                Some(good)
            );
        }
    }
}
