//! The two payload formats a live source reads, parsed into one [`Sample`]: a time and the
//! cumulative import register.
//!
//! - **Tasmota** (`tele/<topic>/SENSOR`, sent every `TelePeriod`, 300 s by default; see
//!   <https://tasmota.github.io/docs/JSON-Status-Responses/> and the energy monitoring page
//!   <https://tasmota.github.io/docs/Power-Monitoring-Calibration/>):
//!   `{"Time":"2026-01-05T10:15:00","ENERGY":{"TotalStartTime":"…","Total":123.456,
//!   "Yesterday":…,"Today":…,"Power":…}}`. `Time` is the device's local time without an
//!   offset; `ENERGY.Total` is the import register in kWh with `EnergyRes` decimals (3 by
//!   default, at most 5). A multi-channel device's array `Total` is refused.
//! - **DSMR reader** (dsmr-reader's "MQTT: JSON telegram", default topic `dsmr/json`; see
//!   <https://dsmr-reader.readthedocs.io/en/v5/reference/mqtt.html>): `{"timestamp":
//!   "2026-01-05T10:15:00+01:00", "electricity_delivered_1": 1234.567,
//!   "electricity_delivered_2": 2345.678, …}` — the P1 telegram's tariff 1 and tariff 2 import
//!   registers (OBIS 1-0:1.8.1 and 1-0:1.8.2) in kWh with 3 decimals, as numbers or numeric
//!   strings. The register SEER bills is their sum (the tariff bands are SEER's own). The
//!   timestamp may carry an offset (RFC 3339) or none; its wall-clock part is kept.
//!
//! Registers are kept exactly, in integer units of 0.01 Wh ([`Register`]): a decimal kWh value
//! with at most 5 decimals converts without rounding, and 0.01 Wh is 36 J, so register
//! differences become whole joules.

use chrono::{DateTime, NaiveDateTime, Timelike as _};
use serde_json::Value;

/// A cumulative energy register in units of 0.01 Wh (36 J).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Register(i64);

/// 0.01 Wh in joules.
pub const JOULES_PER_UNIT: i64 = 36;

/// The most decimals of a kWh register kept exactly (0.01 Wh).
pub const MAX_DECIMALS: usize = 5;

impl Register {
    /// A register of `units` × 0.01 Wh.
    ///
    /// # Errors
    /// When `units` is negative.
    pub fn try_from_units(units: i64) -> Result<Self, Malformed> {
        if units < 0 {
            return Err(Malformed::Register {
                field: "register",
                reason: "negative".into(),
            });
        }
        Ok(Self(units))
    }

    /// The register in units of 0.01 Wh.
    pub const fn units(self) -> i64 {
        self.0
    }

    /// Parses a decimal kWh value (`123.456`) exactly.
    ///
    /// # Errors
    /// When it is not a plain non-negative decimal with at most [`MAX_DECIMALS`] decimals,
    /// or is implausibly large (over 10¹² kWh).
    pub fn try_from_kwh_text(field: &'static str, text: &str) -> Result<Self, Malformed> {
        let bad = |reason: &str| Malformed::Register {
            field,
            reason: format!("{text:?}: {reason}"),
        };
        let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
        if whole.is_empty() || !whole.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad("not a non-negative decimal number of kWh"));
        }
        if !fraction.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad("not a non-negative decimal number of kWh"));
        }
        if fraction.len() > MAX_DECIMALS {
            return Err(bad("more than 5 decimals (0.01 Wh)"));
        }
        if whole.len() > 12 {
            return Err(bad("implausibly large"));
        }
        let whole: i64 = whole.parse().map_err(|_| bad("implausibly large"))?;
        let mut fraction_units: i64 = 0;
        for (i, digit) in fraction.bytes().enumerate() {
            let place = 10_i64.pow(u32::try_from(MAX_DECIMALS - 1 - i).unwrap_or(0));
            fraction_units += i64::from(digit - b'0') * place;
        }
        Ok(Self(whole * 100_000 + fraction_units))
    }

    /// Parses a JSON number or numeric string of kWh (see [`Register::try_from_kwh_text`]).
    ///
    /// # Errors
    /// As [`Register::try_from_kwh_text`], or when the value is neither.
    pub fn try_from_json(field: &'static str, value: Option<&Value>) -> Result<Self, Malformed> {
        match value {
            // serde_json prints a float as its shortest round-trip form: `123.456`.
            Some(Value::Number(n)) => Self::try_from_kwh_text(field, &n.to_string()),
            Some(Value::String(s)) => Self::try_from_kwh_text(field, s.trim()),
            Some(other) => Err(Malformed::Register {
                field,
                reason: format!("expected a number of kWh, found {other}"),
            }),
            None => Err(Malformed::Missing { field }),
        }
    }

    /// `self + other`.
    ///
    /// # Errors
    /// On overflow.
    fn try_add(self, other: Self) -> Result<Self, Malformed> {
        self.0
            .checked_add(other.0)
            .map(Self)
            .ok_or_else(|| Malformed::Register {
                field: "register",
                reason: "overflow".into(),
            })
    }
}

/// One payload's content: when, and the import register then.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sample {
    /// The payload's time (the meter's wall-clock time, to the second).
    pub time: NaiveDateTime,
    /// The cumulative import register.
    pub register: Register,
}

/// Which payload format a source's topic carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Format {
    /// Tasmota's `tele/<topic>/SENSOR` energy JSON.
    Tasmota,
    /// dsmr-reader's JSON telegram.
    Dsmr,
}

impl Format {
    /// The format's name on the command line.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Tasmota => "tasmota",
            Self::Dsmr => "dsmr",
        }
    }

    /// Parses one payload.
    ///
    /// # Errors
    /// [`Malformed`], with the reason.
    pub fn parse(self, payload: &[u8]) -> Result<Sample, Malformed> {
        let value: Value =
            serde_json::from_slice(payload).map_err(|e| Malformed::Json(e.to_string()))?;
        if !value.is_object() {
            return Err(Malformed::Json("not a JSON object".into()));
        }
        match self {
            Self::Tasmota => {
                let time = parse_time("Time", value.get("Time"))?;
                let energy = value
                    .get("ENERGY")
                    .ok_or(Malformed::Missing { field: "ENERGY" })?;
                let register = Register::try_from_json("ENERGY.Total", energy.get("Total"))?;
                Ok(Sample { time, register })
            }
            Self::Dsmr => {
                let time = parse_time("timestamp", value.get("timestamp"))?;
                let t1 = Register::try_from_json(
                    "electricity_delivered_1",
                    value.get("electricity_delivered_1"),
                )?;
                let t2 = Register::try_from_json(
                    "electricity_delivered_2",
                    value.get("electricity_delivered_2"),
                )?;
                Ok(Sample {
                    time,
                    register: t1.try_add(t2)?,
                })
            }
        }
    }
}

impl std::str::FromStr for Format {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "tasmota" => Ok(Self::Tasmota),
            "dsmr" => Ok(Self::Dsmr),
            other => Err(format!(
                "unknown format {other:?}: expected tasmota or dsmr"
            )),
        }
    }
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a payload was refused (it is logged with its topic, acknowledged and counted).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Malformed {
    /// Not JSON, or not an object.
    #[error("not a JSON object: {0}")]
    Json(String),
    /// A required field is absent.
    #[error("no {field} field")]
    Missing {
        /// The field.
        field: &'static str,
    },
    /// The time field does not parse.
    #[error("{field}: {reason}")]
    Time {
        /// The field.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// A register field is not a plain non-negative decimal of kWh.
    #[error("{field}: {reason}")]
    Register {
        /// The field.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// The time lies too far ahead of the meter's clock (it would close windows early).
    #[error("time {time} is in the future")]
    Future {
        /// The payload's time.
        time: NaiveDateTime,
    },
}

/// `YYYY-MM-DDTHH:MM:SS`, optionally with an RFC 3339 offset (whose wall-clock part is kept)
/// or fractional seconds (dropped).
fn parse_time(field: &'static str, value: Option<&Value>) -> Result<NaiveDateTime, Malformed> {
    let text = match value {
        Some(Value::String(s)) => s.trim(),
        Some(other) => {
            return Err(Malformed::Time {
                field,
                reason: format!("expected a string, found {other}"),
            });
        }
        None => return Err(Malformed::Missing { field }),
    };
    let time = DateTime::parse_from_rfc3339(text)
        .map(|t| t.naive_local())
        .or_else(|_| NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f"))
        .map_err(|e| Malformed::Time {
            field,
            reason: format!("{text:?}: {e}"),
        })?;
    time.with_nanosecond(0).ok_or_else(|| Malformed::Time {
        field,
        reason: format!("{text:?}: out of range"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn time(text: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S").unwrap()
    }

    #[test]
    fn tasmota_sensor_payloads_parse_exactly() {
        let payload = br#"{"Time":"2026-01-05T10:15:00","ENERGY":{"TotalStartTime":"2025-12-01T00:00:00","Total":123.456,"Yesterday":1.2,"Today":0.5,"Power":230}}"#;
        let sample = Format::Tasmota.parse(payload).unwrap();
        assert_eq!(sample.time, time("2026-01-05T10:15:00"));
        assert_eq!(sample.register.units(), 12_345_600);
        // Five decimals (EnergyRes 5) stay exact; 0.1 + 0.2 style binary noise cannot creep in.
        let payload = br#"{"Time":"2026-01-05T10:15:00","ENERGY":{"Total":0.30001}}"#;
        assert_eq!(
            Format::Tasmota.parse(payload).unwrap().register.units(),
            30_001
        );
    }

    #[test]
    fn dsmr_payloads_sum_both_tariff_registers() {
        let payload = br#"{"id": 7, "timestamp": "2026-01-05T10:15:00+01:00", "electricity_delivered_1": "1234.567", "electricity_returned_1": 0, "electricity_delivered_2": 2345.678}"#;
        let sample = Format::Dsmr.parse(payload).unwrap();
        assert_eq!(sample.time, time("2026-01-05T10:15:00"));
        assert_eq!(sample.register.units(), 123_456_700 + 234_567_800);
        let zulu = br#"{"timestamp": "2026-01-05T09:15:00Z", "electricity_delivered_1": 1, "electricity_delivered_2": 2}"#;
        let sample = Format::Dsmr.parse(zulu).unwrap();
        assert_eq!(sample.time, time("2026-01-05T09:15:00"));
        assert_eq!(sample.register.units(), 300_000);
    }

    #[test]
    fn malformed_payloads_say_why() {
        let cases: [(Format, &[u8], &str); 9] = [
            (Format::Tasmota, b"not json", "JSON"),
            (Format::Tasmota, b"[1]", "JSON"),
            (Format::Tasmota, br#"{"ENERGY":{"Total":1}}"#, "Time"),
            (
                Format::Tasmota,
                br#"{"Time":"yesterday","ENERGY":{"Total":1}}"#,
                "Time",
            ),
            (
                Format::Tasmota,
                br#"{"Time":"2026-01-05T10:15:00"}"#,
                "ENERGY",
            ),
            (
                Format::Tasmota,
                br#"{"Time":"2026-01-05T10:15:00","ENERGY":{"Total":-1.5}}"#,
                "ENERGY.Total",
            ),
            (
                Format::Tasmota,
                br#"{"Time":"2026-01-05T10:15:00","ENERGY":{"Total":[1.0,2.0]}}"#,
                "ENERGY.Total",
            ),
            (
                Format::Tasmota,
                br#"{"Time":"2026-01-05T10:15:00","ENERGY":{"Total":1.1234567}}"#,
                "decimals",
            ),
            (
                Format::Dsmr,
                br#"{"timestamp":"2026-01-05T10:15:00","electricity_delivered_1":1}"#,
                "electricity_delivered_2",
            ),
        ];
        for (format, payload, expected) in cases {
            let err = format.parse(payload).unwrap_err().to_string();
            assert!(
                err.contains(expected),
                "{}: {err}",
                String::from_utf8_lossy(payload)
            );
        }
    }

    #[test]
    fn decimal_registers_convert_without_rounding() {
        let r = |t| Register::try_from_kwh_text("x", t).map(Register::units);
        assert_eq!(r("0"), Ok(0));
        assert_eq!(r("1"), Ok(100_000));
        assert_eq!(r("1."), Ok(100_000));
        assert_eq!(r("0.001"), Ok(100));
        assert_eq!(r("99999.99999"), Ok(9_999_999_999));
        assert!(r("1e3").is_err());
        assert!(r(".5").is_err());
        assert!(r("1.2.3").is_err());
        assert!(r("+1").is_err());
        assert!(r("1234567890123").is_err());
    }
}
