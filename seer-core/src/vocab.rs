//! The one vocabulary of SEER: the words the meter, the utility and the key authority share,
//! each with one type, one parser and one text form.
//!
//! - [`MeterId`]: a meter's id (1 to [`MAX_METER_ID_LEN`] bytes of ASCII letters, digits,
//!   `-`, `_`, `.`, `:`).
//! - [`Period`]: a billing period, one calendar month, written `YYYY-MM` (defined in
//!   [`crate::data::calendar`], re-exported here); [`parse_day`] / [`format_day`]: a day,
//!   written `YYYY-MM-DD`.
//! - [`Lane`]: exact readings or the noised analytics lane (ε per reading, and the clamp bound
//!   and readings per day where known), named `exact` / `analytics` on the wire, in receipts
//!   and in the databases.
//! - [`SlotBlock`]: the slots `offset .. offset + count` one meter writes in a ciphertext
//!   shared by several meters.
//!
//! The registered computations' trait and its typed refusal are in [`crate::registered`].

use std::fmt;
use std::ops::Range;
use std::str::FromStr;

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

pub use crate::data::calendar::Period;
use crate::error::Error;

/// The longest meter id, in bytes.
pub const MAX_METER_ID_LEN: usize = 64;

/// At most this many characters of a refused value are echoed back in messages.
const ECHO_LIMIT: usize = 80;

fn echo(value: &str, limit: usize) -> String {
    value.chars().take(limit).collect()
}

/// A meter id: 1 to [`MAX_METER_ID_LEN`] bytes of ASCII letters, digits, `-`, `_`, `.`, `:`
/// (the rule the key authority applies to household tokens, and the utility to batches).
/// Serialized as the plain string.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct MeterId(String);

impl MeterId {
    /// Checks and wraps a meter id.
    ///
    /// # Errors
    /// [`Error::InvalidMeterId`] when the id breaks the rule above.
    pub fn try_new(meter_id: impl Into<String>) -> Result<Self, Error> {
        let meter_id = meter_id.into();
        match Self::check(&meter_id) {
            Ok(()) => Ok(Self(meter_id)),
            Err(reason) => Err(Error::InvalidMeterId {
                meter_id: echo(&meter_id, ECHO_LIMIT),
                reason,
            }),
        }
    }

    /// Checks a meter id without wrapping it: `Err` with the part of the rule it breaks.
    ///
    /// # Errors
    /// The short reason (`empty`, `longer than 64 bytes`, or the allowed characters).
    pub fn check(meter_id: &str) -> Result<(), &'static str> {
        if meter_id.is_empty() {
            return Err("empty");
        }
        if meter_id.len() > MAX_METER_ID_LEN {
            return Err("longer than 64 bytes");
        }
        if !meter_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
        {
            return Err("only ASCII letters, digits, '-', '_', '.' and ':' are allowed");
        }
        Ok(())
    }

    /// The id.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The id, unwrapped.
    #[must_use]
    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for MeterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for MeterId {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        Self::try_new(s)
    }
}

impl TryFrom<String> for MeterId {
    type Error = Error;

    fn try_from(s: String) -> Result<Self, Error> {
        Self::try_new(s)
    }
}

impl From<MeterId> for String {
    fn from(id: MeterId) -> Self {
        id.0
    }
}

impl AsRef<str> for MeterId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// Parses a day written `YYYY-MM-DD` (exactly: four-digit year, two-digit month and day,
/// nothing around it) — the one parser of day strings (daily-lane days, anomaly days, budget
/// days).
///
/// # Errors
/// [`Error::InvalidDay`] for anything else.
pub fn parse_day(text: &str) -> Result<NaiveDate, Error> {
    let bytes = text.as_bytes();
    let shaped = bytes.len() == 10
        && bytes[4] == b'-'
        && bytes[7] == b'-'
        && bytes
            .iter()
            .enumerate()
            .all(|(i, b)| i == 4 || i == 7 || b.is_ascii_digit());
    shaped
        .then(|| NaiveDate::parse_from_str(text, "%Y-%m-%d").ok())
        .flatten()
        .ok_or_else(|| Error::InvalidDay {
            day: echo(text, 32),
        })
}

/// The text form of a day, `YYYY-MM-DD` (the inverse of [`parse_day`] for years 1000–9999).
#[must_use]
pub fn format_day(day: NaiveDate) -> String {
    day.format("%Y-%m-%d").to_string()
}

/// Which lane a meter's readings travel on: exact, or clamped and noised on the meter for
/// differential privacy.
///
/// The one type of the idea in SEER: the meter's choice of lane for anomaly and forecast
/// inputs, the lane a model was trained on (`seer_anomaly`, `seer_forecast`), and the lane a
/// receipt records at the key authority. The fields the analytics lane does not always know
/// (the clamp bound, the readings per day) are `Option`s; the wire and the databases carry
/// the name ([`Lane::as_str`]), ε and the readings per day.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Lane {
    /// Exact readings (clamped to a model's range): no ε spent, no DP guarantee.
    Exact,
    /// Readings clamped to `0 ..= Δ` and noised with discrete Laplace noise of scale Δ/ε on
    /// the meter (`crate::dp`): everything released from them is ε-DP per reading by
    /// post-processing.
    Analytics {
        /// ε per reading.
        epsilon: f64,
        /// The clamp bound Δ of a reading, in Wh, where known.
        sensitivity_wh: Option<i64>,
        /// Readings noised per day, where known (96 for 15-minute readings, 24 for hourly).
        readings_per_day: Option<u32>,
    },
}

impl Lane {
    /// The name of the exact lane.
    pub const EXACT: &'static str = "exact";
    /// The name of the analytics lane.
    pub const ANALYTICS: &'static str = "analytics";

    /// The analytics lane at `epsilon` per reading, nothing else known.
    #[must_use]
    pub const fn analytics(epsilon: f64) -> Self {
        Lane::Analytics {
            epsilon,
            sensitivity_wh: None,
            readings_per_day: None,
        }
    }

    /// The lane of its wire form: `exact` (ε and readings ignored, as receipts of the exact
    /// lane carry 0), or `analytics` with a positive finite ε and a positive number of readings
    /// per day.
    ///
    /// # Errors
    /// [`Error::InvalidLane`] for an unknown name or an analytics lane without a positive ε and
    /// readings per day.
    pub fn try_new(name: &str, epsilon: f64, readings_per_day: u32) -> Result<Self, Error> {
        match name {
            Self::EXACT => Ok(Lane::Exact),
            Self::ANALYTICS if epsilon.is_finite() && epsilon > 0.0 && readings_per_day > 0 => {
                Ok(Lane::Analytics {
                    epsilon,
                    sensitivity_wh: None,
                    readings_per_day: Some(readings_per_day),
                })
            }
            Self::ANALYTICS => Err(Error::InvalidLane {
                reason: "the analytics lane needs a positive ε and readings_per_day".into(),
            }),
            other => Err(Error::InvalidLane {
                reason: format!("lane {:?} is neither exact nor analytics", echo(other, 32)),
            }),
        }
    }

    /// `exact` or `analytics`: the name on the wire, in receipts and in the databases.
    #[must_use]
    pub const fn as_str(&self) -> &'static str {
        match self {
            Lane::Exact => Self::EXACT,
            Lane::Analytics { .. } => Self::ANALYTICS,
        }
    }

    /// Whether this is the exact lane.
    #[must_use]
    pub const fn is_exact(&self) -> bool {
        matches!(self, Lane::Exact)
    }

    /// ε per reading (0 on the exact lane).
    #[must_use]
    pub const fn epsilon(&self) -> f64 {
        match self {
            Lane::Exact => 0.0,
            Lane::Analytics { epsilon, .. } => *epsilon,
        }
    }

    /// Readings noised per day (0 on the exact lane or where unknown), as receipts carry it.
    #[must_use]
    pub fn readings_per_day(&self) -> u32 {
        match self {
            Lane::Exact => 0,
            Lane::Analytics {
                readings_per_day, ..
            } => readings_per_day.unwrap_or(0),
        }
    }

    /// The clamp bound Δ of a reading in Wh, where known (never on the exact lane).
    #[must_use]
    pub const fn sensitivity_wh(&self) -> Option<i64> {
        match self {
            Lane::Exact => None,
            Lane::Analytics { sensitivity_wh, .. } => *sensitivity_wh,
        }
    }

    /// Whether two lanes are the same lane by name (`exact` / `analytics`), whatever their
    /// parameters: the check a registered computation applies to its inputs' lane.
    #[must_use]
    pub fn same_name(&self, other: &Lane) -> bool {
        self.as_str() == other.as_str()
    }
}

impl fmt::Display for Lane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The slots one meter writes in a ciphertext shared by several meters:
/// `offset .. offset + count`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SlotBlock {
    /// First slot.
    pub offset: usize,
    /// Number of slots.
    pub count: usize,
}

impl SlotBlock {
    /// The block `offset .. offset + count`.
    #[must_use]
    pub const fn new(offset: usize, count: usize) -> Self {
        Self { offset, count }
    }

    /// The end (exclusive); saturates rather than overflows.
    #[must_use]
    pub const fn end(&self) -> usize {
        self.offset.saturating_add(self.count)
    }

    /// The slots as a range.
    #[must_use]
    pub const fn range(&self) -> Range<usize> {
        self.offset..self.end()
    }

    /// Whether the block holds no slot.
    #[must_use]
    pub const fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Whether two blocks share a slot.
    #[must_use]
    pub const fn overlaps(&self, other: &SlotBlock) -> bool {
        self.offset < other.end() && other.offset < self.end()
    }

    /// Whether `slot` is in the block.
    #[must_use]
    pub const fn contains(&self, slot: usize) -> bool {
        self.offset <= slot && slot < self.end()
    }

    /// Whether the block lies within `slots` slots and is not empty.
    #[must_use]
    pub const fn fits(&self, slots: usize) -> bool {
        match self.offset.checked_add(self.count) {
            Some(end) => self.count > 0 && end <= slots,
            None => false,
        }
    }

    /// The indicator of the block in `slots` slots: 1 inside, 0 outside (what block isolation
    /// multiplies a meter's input by).
    ///
    /// # Errors
    /// [`Error::InvalidSlotBlock`] for an empty block or one beyond `slots`.
    pub fn indicator(&self, slots: usize) -> Result<Vec<f64>, Error> {
        if !self.fits(slots) {
            return Err(Error::InvalidSlotBlock {
                start: self.offset,
                end: self.end(),
                slots,
            });
        }
        let mut mask = vec![0.0; slots];
        mask[self.range()].fill(1.0);
        Ok(mask)
    }
}

impl From<Range<usize>> for SlotBlock {
    fn from(range: Range<usize>) -> Self {
        Self {
            offset: range.start,
            count: range.end.saturating_sub(range.start),
        }
    }
}

impl fmt::Display for SlotBlock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}..{}", self.offset, self.end())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meter_ids_follow_one_rule() {
        for good in ["m1", "meter-00_7.a:b", &"x".repeat(64)] {
            assert_eq!(
                MeterId::try_new(good)
                    .map(|m| m.to_string())
                    .ok()
                    .as_deref(),
                Some(good)
            );
        }
        for (bad, reason) in [
            ("", "empty"),
            (&"x".repeat(65) as &str, "longer than 64 bytes"),
            (
                "a b",
                "only ASCII letters, digits, '-', '_', '.' and ':' are allowed",
            ),
            (
                "é",
                "only ASCII letters, digits, '-', '_', '.' and ':' are allowed",
            ),
        ] {
            match MeterId::try_new(bad) {
                Err(Error::InvalidMeterId { reason: r, .. }) => assert_eq!(r, reason, "{bad:?}"),
                other => panic!("{bad:?}: {other:?}"),
            }
        }
        let json = serde_json::to_string(&MeterId::try_new("m-1").unwrap()).unwrap();
        assert_eq!(json, "\"m-1\"");
        assert!(serde_json::from_str::<MeterId>("\"a b\"").is_err());
    }

    #[test]
    fn days_have_one_form() {
        let day = parse_day("2010-12-31").unwrap();
        assert_eq!(day, NaiveDate::from_ymd_opt(2010, 12, 31).unwrap());
        assert_eq!(format_day(day), "2010-12-31");
        for bad in [
            "2010-12-32",
            "2010-2-01",
            "2010-12-31T00:00",
            "",
            " 2010-12-31",
            "+010-12-31",
            "2010-13-01",
            "2010/12/31",
        ] {
            assert!(
                matches!(parse_day(bad), Err(Error::InvalidDay { .. })),
                "{bad:?} accepted"
            );
        }
    }

    #[test]
    fn lanes_parse_from_the_wire() {
        assert_eq!(Lane::try_new("exact", 0.0, 0).unwrap(), Lane::Exact);
        let lane = Lane::try_new("analytics", 0.5, 96).unwrap();
        assert_eq!(lane.as_str(), "analytics");
        assert_eq!(lane.epsilon(), 0.5);
        assert_eq!(lane.readings_per_day(), 96);
        assert!(lane.same_name(&Lane::analytics(2.0)));
        assert!(!lane.same_name(&Lane::Exact));
        for (name, eps, readings) in [
            ("analytics", 0.0, 96),
            ("analytics", f64::NAN, 96),
            ("analytics", 1.0, 0),
            ("noisy", 1.0, 96),
        ] {
            assert!(Lane::try_new(name, eps, readings).is_err());
        }
        assert_eq!(
            Lane::try_new("noisy", 1.0, 1).unwrap_err().to_string(),
            "lane \"noisy\" is neither exact nor analytics"
        );
    }

    #[test]
    fn slot_blocks() {
        let a = SlotBlock::new(10, 5);
        assert_eq!(a.end(), 15);
        assert_eq!(a.to_string(), "10..15");
        assert!(a.overlaps(&SlotBlock::new(14, 1)));
        assert!(!a.overlaps(&SlotBlock::new(15, 3)));
        assert!(!a.overlaps(&SlotBlock::new(0, 10)));
        assert!(a.contains(10) && a.contains(14) && !a.contains(15) && !a.contains(9));
        assert_eq!(SlotBlock::from(3..7), SlotBlock::new(3, 4));
        let mask = SlotBlock::new(1, 2).indicator(4).unwrap();
        assert_eq!(mask, vec![0.0, 1.0, 1.0, 0.0]);
        assert!(SlotBlock::new(3, 2).indicator(4).is_err());
        assert!(SlotBlock::new(0, 0).indicator(4).is_err());
        assert!(!SlotBlock::new(usize::MAX, 2).fits(usize::MAX));
    }
}
