//! Tariffs, the exact plaintext bill, and the meter's side of the billing lane.
//!
//! # The tariff model
//!
//! A [`Tariff`] has
//! - **slabs**: consecutive ranges of the energy used *in the billing period so far*, each with
//!   a rate in whole paise per kWh. Thresholds are in kWh per billing period and must be whole
//!   watt-hours; the last slab is unbounded. Energy is charged at the rate of the slab the
//!   period's running total is in when it is used (a reading that crosses a threshold is split
//!   exactly, to the watt-hour);
//! - optional **time-of-use bands**: named sets of daily time ranges (`"HH:MM-HH:MM"`, minute
//!   resolution, wrapping past midnight allowed) with a **multiplicative** adjustment in whole
//!   percent of the slab rate (`rate_percent = 120` charges 120 % of the slab rate, `80` gives
//!   a 20 % rebate). Bands must not overlap. Time not covered by any band belongs to the
//!   implicit band [`STANDARD_BAND`] at 100 %; when the bands partition the whole day there is
//!   no implicit band. Bands do not move the slab thresholds: the slab is always chosen by the
//!   period's running total over all bands, and the band only scales that slab's rate.
//!
//! Every (slab, band) pair is a **cell**; cell `slab × band_count + band` is the order used
//! everywhere ([`CellEnergy`], the homomorphic layout in
//! [`circuits::billing`](crate::circuits::billing)). Explicit bands keep their configuration
//! order; the implicit standard band, if any, comes last.
//!
//! The default tariff is the BESCOM domestic slab tariff of the design brief:
//! 0–50 kWh at ₹4.15, 50–100 at ₹5.60, 100–200 at ₹7.15 and above 200 at ₹8.20 per kWh, no
//! time-of-use bands. In TOML (the form [`Tariff`] serializes to and deserializes from; unknown
//! fields are rejected and every rule below is checked on deserialization):
//!
//! ```toml
//! name = "BESCOM domestic"
//!
//! [[slabs]]
//! up_to_kwh = 50
//! rate_paise = 415
//!
//! [[slabs]]
//! up_to_kwh = 100
//! rate_paise = 560
//!
//! [[slabs]]
//! up_to_kwh = 200
//! rate_paise = 715
//!
//! [[slabs]]            # the last slab has no upper threshold
//! rate_paise = 820
//!
//! [[bands]]            # optional
//! name = "peak"
//! hours = ["06:00-10:00", "18:00-22:00"]
//! rate_percent = 120
//! ```
//!
//! # Exact amounts and rounding
//!
//! With integer Wh, integer paise per kWh and integer percent, the charge for `e` Wh in a cell
//! is `e × rate_paise × rate_percent / (1000 × 100)` paise, an exact multiple of 10⁻⁵ paisa.
//! [`ExactAmount`] holds amounts as integers in that unit, so the plaintext bill is exact
//! integer arithmetic. The bill is rounded **once, on the period total**, to the nearest paisa
//! with halves rounded up ([`ExactAmount::round_to_paise`]); slabs and bands are never rounded
//! individually.
//!
//! # The meter's side of the billing lane
//!
//! The billing lane carries exact energy. A meter that measures in joules (the data layer's
//! unit) turns its readings into whole watt-hours with a [`WhRegister`], which carries the
//! sub-Wh remainder from reading to reading like an electromechanical register, so nothing is
//! lost or invented. A [`SlabAccumulator`] knows the period's running consumption and the
//! public tariff; it splits each reading's Wh into the slab(s) it falls in and the band of the
//! reading's start time and accumulates a batch (e.g. a day) of per-cell Wh totals, which the
//! meter encrypts ([`circuits::billing`](crate::circuits::billing)). The sum of a period's
//! batches is the whole-period split, so the server only needs to add them.
//!
//! A reading belongs entirely to the band in force at its **start** (at minute resolution).
//! Meters whose readings can cross a band boundary (hourly readings with a boundary at :30)
//! should read at a finer interval; [`Tariff::boundaries_aligned_to`] checks this.

use std::fmt;

use chrono::{NaiveDateTime, NaiveTime, Timelike};
use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::units::{Joules, Kwh, Wh};

/// The name of the implicit band covering the time no configured band covers (100 % rate).
pub const STANDARD_BAND: &str = "standard";

/// The most slabs a tariff may have.
pub const MAX_SLABS: usize = 32;
/// The most time-of-use bands a tariff may have (the implicit standard band included).
pub const MAX_BANDS: usize = 16;
/// The highest accepted slab rate: ₹1000 per kWh.
pub const MAX_RATE_PAISE: i64 = 100_000;
/// The highest accepted band adjustment: 1000 %.
pub const MAX_RATE_PERCENT: i64 = 1_000;

const MINUTES_PER_DAY: u32 = 24 * 60;
const PERCENT: i128 = 100;
const JOULES_PER_WH: i64 = 3_600;

// ---------------------------------------------------------------------------------------------
// Money
// ---------------------------------------------------------------------------------------------

/// A whole number of paise (₹0.01), the unit of released bills. Displays as rupees, `₹1509.00`.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Paise(i64);

impl Paise {
    /// Zero paise.
    pub const ZERO: Self = Self(0);

    /// `paise` paise.
    pub const fn new(paise: i64) -> Self {
        Self(paise)
    }

    /// The number of paise.
    pub const fn get(self) -> i64 {
        self.0
    }

    /// The amount in rupees (exact for any realistic bill: below 2⁵³ paise).
    pub fn to_rupees(self) -> f64 {
        self.0 as f64 / 100.0
    }
}

impl fmt::Display for Paise {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        write!(f, "{sign}₹{}.{:02}", abs / 100, abs % 100)
    }
}

/// An exact amount of money in units of 10⁻⁵ paisa (10⁻⁷ rupee), the quantum of
/// `Wh × paise/kWh × percent`. See the [module documentation](self#exact-amounts-and-rounding).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ExactAmount(i128);

impl ExactAmount {
    /// Units per paisa.
    pub const UNITS_PER_PAISA: i128 = 100_000;
    /// Units per rupee.
    pub const UNITS_PER_RUPEE: i128 = 100 * Self::UNITS_PER_PAISA;
    /// Nothing.
    pub const ZERO: Self = Self(0);

    /// An amount of `units` × 10⁻⁵ paisa.
    pub const fn from_units(units: i128) -> Self {
        Self(units)
    }

    /// The amount in units of 10⁻⁵ paisa.
    pub const fn units(self) -> i128 {
        self.0
    }

    /// The nearest whole paisa, halves rounded up (towards +∞). This is the bill's rounding
    /// rule; it is applied once, to the period total.
    pub fn round_to_paise(self) -> Paise {
        let rounded = (self.0 + Self::UNITS_PER_PAISA / 2).div_euclid(Self::UNITS_PER_PAISA);
        // Bounded: a tariff's amounts stay far below i64::MAX paise (Wh::MAX × MAX_RATE_PAISE
        // × MAX_RATE_PERCENT units = 10^22 units = 10^17 paise).
        Paise(i64::try_from(rounded).unwrap_or(i64::MAX))
    }

    /// The amount in rupees as `f64` (rounded to the nearest `f64`).
    pub fn to_rupees(self) -> f64 {
        self.0 as f64 / Self::UNITS_PER_RUPEE as f64
    }
}

impl fmt::Display for ExactAmount {
    /// Rupees with all seven exact decimals, e.g. `₹1509.0000000`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        let per = Self::UNITS_PER_RUPEE as u128;
        write!(f, "{sign}₹{}.{:07}", abs / per, abs % per)
    }
}

// ---------------------------------------------------------------------------------------------
// Tariff
// ---------------------------------------------------------------------------------------------

/// One slab: energy of the period's running total in `from .. to` is charged at `rate_paise`
/// per kWh (before any band adjustment).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slab {
    /// The inclusive lower threshold (the previous slab's upper one; 0 for the first slab).
    pub from: Wh,
    /// The exclusive upper threshold; `None` for the last, unbounded slab.
    pub to: Option<Wh>,
    /// The rate in whole paise per kWh.
    pub rate_paise: i64,
}

/// A daily time range `from .. to` in minutes since midnight; wraps past midnight when
/// `to <= from` (e.g. 22:00–06:00). `to` may be 1440 (24:00).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DailyRange {
    from: u32,
    to: u32,
}

impl DailyRange {
    /// Parses `"HH:MM-HH:MM"` (the end may be `24:00`; the two ends must differ).
    pub fn parse(text: &str) -> Result<Self, String> {
        let (from, to) = text
            .split_once('-')
            .ok_or_else(|| format!("{text:?} is not of the form \"HH:MM-HH:MM\""))?;
        let from = parse_minute(from.trim(), false).ok_or_else(|| {
            format!("bad start time in {text:?}: expected HH:MM from 00:00 to 23:59")
        })?;
        let to = parse_minute(to.trim(), true).ok_or_else(|| {
            format!("bad end time in {text:?}: expected HH:MM from 00:00 to 24:00")
        })?;
        if from == to % MINUTES_PER_DAY {
            return Err(format!(
                "{text:?} is empty or the whole day: a band covering the whole day needs no range"
            ));
        }
        Ok(Self { from, to })
    }

    /// The start, in minutes since midnight.
    pub fn from_minute(self) -> u32 {
        self.from
    }

    /// The end, in minutes since midnight (up to 1440).
    pub fn to_minute(self) -> u32 {
        self.to
    }

    /// The minutes of the day this range covers, in order starting at `from`.
    fn minutes(self) -> impl Iterator<Item = u32> {
        let len = (self.to + MINUTES_PER_DAY - self.from) % MINUTES_PER_DAY;
        let len = if len == 0 { MINUTES_PER_DAY } else { len };
        (0..len).map(move |i| (self.from + i) % MINUTES_PER_DAY)
    }
}

impl fmt::Display for DailyRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:02}:{:02}-{:02}:{:02}",
            self.from / 60,
            self.from % 60,
            self.to / 60,
            self.to % 60
        )
    }
}

fn parse_minute(text: &str, allow_24: bool) -> Option<u32> {
    let (h, m) = text.split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    let h: u32 = h.parse().ok()?;
    let m: u32 = m.parse().ok()?;
    match (h, m) {
        (24, 0) if allow_24 => Some(MINUTES_PER_DAY),
        (0..=23, 0..=59) => Some(h * 60 + m),
        _ => None,
    }
}

/// A time-of-use band: when it applies and its multiplicative rate adjustment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Band {
    /// Its name (unique within the tariff).
    pub name: String,
    /// The daily ranges it covers (empty only for the implicit [`STANDARD_BAND`], which covers
    /// whatever the others leave).
    pub hours: Vec<DailyRange>,
    /// The rate as a whole percentage of the slab rate.
    pub rate_percent: i64,
}

/// A validated tariff: slabs and time-of-use bands. See the [module documentation](self).
///
/// Deserializes (e.g. from TOML) through the same validation as [`Tariff::try_new`]; unknown
/// fields are rejected.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "TariffConfig", into = "TariffConfig")]
pub struct Tariff {
    name: String,
    slabs: Vec<Slab>,
    /// Configured bands, then the implicit standard band if the configured ones leave gaps.
    bands: Vec<Band>,
    /// Whether the last band is the implicit standard band.
    implicit_standard: bool,
    /// The band index of each minute of the day.
    band_of_minute: Vec<u8>,
}

/// The serialized form of a [`Tariff`] (what a TOML file holds).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TariffConfig {
    /// A human-readable name.
    #[serde(default = "default_name")]
    pub name: String,
    /// The slabs in increasing order.
    pub slabs: Vec<SlabConfig>,
    /// Time-of-use bands (none by default).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bands: Vec<BandConfig>,
}

fn default_name() -> String {
    "unnamed tariff".to_owned()
}

/// The serialized form of one slab.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlabConfig {
    /// The upper threshold in kWh per billing period (a whole number of Wh); absent for the
    /// last slab.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub up_to_kwh: Option<f64>,
    /// The rate in whole paise per kWh.
    pub rate_paise: i64,
}

/// The serialized form of one time-of-use band.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BandConfig {
    /// The band's name.
    pub name: String,
    /// Daily ranges `"HH:MM-HH:MM"`.
    pub hours: Vec<String>,
    /// The rate as a whole percentage of the slab rate.
    pub rate_percent: i64,
}

fn tariff_error(location: impl Into<String>, reason: impl Into<String>) -> Error {
    Error::InvalidTariff {
        location: location.into(),
        reason: reason.into(),
    }
}

impl TryFrom<TariffConfig> for Tariff {
    type Error = Error;

    fn try_from(config: TariffConfig) -> Result<Self, Error> {
        if config.name.trim().is_empty() {
            return Err(tariff_error("name", "must not be empty"));
        }
        let n = config.slabs.len();
        if n == 0 {
            return Err(tariff_error("slabs", "a tariff needs at least one slab"));
        }
        if n > MAX_SLABS {
            return Err(tariff_error(
                "slabs",
                format!("{n} slabs, at most {MAX_SLABS} are supported"),
            ));
        }
        let mut slabs = Vec::with_capacity(n);
        let mut from = Wh::ZERO;
        for (i, s) in config.slabs.iter().enumerate() {
            let at = |field: &str| format!("slabs[{i}].{field}");
            check_rate(s.rate_paise, &at("rate_paise"))?;
            let last = i + 1 == n;
            let to = match (s.up_to_kwh, last) {
                (Some(_), true) => {
                    return Err(tariff_error(
                        at("up_to_kwh"),
                        "the last slab is unbounded and must not have an upper threshold",
                    ));
                }
                (None, false) => {
                    return Err(tariff_error(
                        at("up_to_kwh"),
                        "missing: every slab but the last needs an upper threshold",
                    ));
                }
                (None, true) => None,
                (Some(kwh), false) => {
                    let wh = threshold_wh(kwh).map_err(|r| tariff_error(at("up_to_kwh"), r))?;
                    if wh <= from {
                        return Err(tariff_error(
                            at("up_to_kwh"),
                            format!(
                                "thresholds must increase: {} kWh is not above {} kWh",
                                kwh,
                                from.to_kwh().get()
                            ),
                        ));
                    }
                    Some(wh)
                }
            };
            slabs.push(Slab {
                from,
                to,
                rate_paise: s.rate_paise,
            });
            if let Some(to) = to {
                from = to;
            }
        }

        // Bands.
        if config.bands.len() >= MAX_BANDS {
            return Err(tariff_error(
                "bands",
                format!(
                    "{} bands, at most {} are supported (one is kept for the implicit \
                     standard band)",
                    config.bands.len(),
                    MAX_BANDS - 1
                ),
            ));
        }
        const FREE: u8 = u8::MAX;
        let mut band_of_minute = vec![FREE; MINUTES_PER_DAY as usize];
        let mut bands = Vec::with_capacity(config.bands.len() + 1);
        for (b, band) in config.bands.iter().enumerate() {
            let at = |field: &str| format!("bands[{b}].{field}");
            let name = band.name.trim();
            if name.is_empty() {
                return Err(tariff_error(at("name"), "must not be empty"));
            }
            if name == STANDARD_BAND {
                return Err(tariff_error(
                    at("name"),
                    format!("{STANDARD_BAND:?} is reserved for the time no band covers"),
                ));
            }
            if bands.iter().any(|other: &Band| other.name == name) {
                return Err(tariff_error(at("name"), format!("duplicate band {name:?}")));
            }
            if !(0..=MAX_RATE_PERCENT).contains(&band.rate_percent) {
                return Err(tariff_error(
                    at("rate_percent"),
                    format!("{} is outside 0 to {MAX_RATE_PERCENT}", band.rate_percent),
                ));
            }
            if band.hours.is_empty() {
                return Err(tariff_error(at("hours"), "a band needs at least one range"));
            }
            let mut hours = Vec::with_capacity(band.hours.len());
            for (r, text) in band.hours.iter().enumerate() {
                let location = format!("bands[{b}].hours[{r}]");
                let range = DailyRange::parse(text).map_err(|e| tariff_error(&location, e))?;
                for minute in range.minutes() {
                    let slot = &mut band_of_minute[minute as usize];
                    if *slot != FREE {
                        let other = config
                            .bands
                            .get(*slot as usize)
                            .map_or(name, |o| o.name.as_str());
                        return Err(tariff_error(
                            location,
                            format!(
                                "{range} overlaps band {other:?} at {:02}:{:02}",
                                minute / 60,
                                minute % 60
                            ),
                        ));
                    }
                    *slot = b as u8;
                }
                hours.push(range);
            }
            bands.push(Band {
                name: name.to_owned(),
                hours,
                rate_percent: band.rate_percent,
            });
        }
        let implicit_standard = band_of_minute.contains(&FREE);
        if implicit_standard {
            let standard = bands.len() as u8;
            for slot in band_of_minute.iter_mut().filter(|s| **s == FREE) {
                *slot = standard;
            }
            bands.push(Band {
                name: STANDARD_BAND.to_owned(),
                hours: Vec::new(),
                rate_percent: 100,
            });
        }
        Ok(Self {
            name: config.name.trim().to_owned(),
            slabs,
            bands,
            implicit_standard,
            band_of_minute,
        })
    }
}

fn check_rate(rate: i64, location: &str) -> Result<(), Error> {
    if !(0..=MAX_RATE_PAISE).contains(&rate) {
        return Err(tariff_error(
            location,
            format!("{rate} paise per kWh is outside 0 to {MAX_RATE_PAISE}"),
        ));
    }
    Ok(())
}

/// A threshold in kWh as whole Wh: positive, finite, at most [`Kwh::MAX`], a whole number of
/// watt-hours.
fn threshold_wh(kwh: f64) -> Result<Wh, String> {
    if !kwh.is_finite() || kwh <= 0.0 {
        return Err(format!("{kwh} kWh is not a positive finite energy"));
    }
    if kwh > Kwh::MAX.get() {
        return Err(format!("{kwh} kWh is above the 1 TWh limit"));
    }
    let wh = kwh * 1_000.0;
    let whole = wh.round();
    if (wh - whole).abs() > 1e-6 * whole.max(1.0) {
        return Err(format!("{kwh} kWh is not a whole number of watt-hours"));
    }
    Wh::try_new(whole as i64).map_err(|e| e.to_string())
}

impl From<Tariff> for TariffConfig {
    fn from(t: Tariff) -> Self {
        let slabs = t
            .slabs
            .iter()
            .map(|s| SlabConfig {
                up_to_kwh: s.to.map(|to| to.to_kwh().get()),
                rate_paise: s.rate_paise,
            })
            .collect();
        let explicit = t.bands.len() - usize::from(t.implicit_standard);
        let bands = t.bands[..explicit]
            .iter()
            .map(|b| BandConfig {
                name: b.name.clone(),
                hours: b.hours.iter().map(ToString::to_string).collect(),
                rate_percent: b.rate_percent,
            })
            .collect();
        Self {
            name: t.name,
            slabs,
            bands,
        }
    }
}

impl Default for Tariff {
    /// [`Tariff::bescom`].
    fn default() -> Self {
        Self::bescom()
    }
}

impl Tariff {
    /// Validates a tariff configuration (the same checks as deserialization).
    pub fn try_new(config: TariffConfig) -> Result<Self, Error> {
        Self::try_from(config)
    }

    /// The BESCOM domestic slabs of the design brief: 0–50 kWh at ₹4.15, 50–100 at ₹5.60,
    /// 100–200 at ₹7.15, above 200 at ₹8.20 per kWh; no time-of-use bands.
    pub fn bescom() -> Self {
        let slab = |up_to_kwh: Option<f64>, rate_paise| SlabConfig {
            up_to_kwh,
            rate_paise,
        };
        let config = TariffConfig {
            name: "BESCOM domestic".to_owned(),
            slabs: vec![
                slab(Some(50.0), 415),
                slab(Some(100.0), 560),
                slab(Some(200.0), 715),
                slab(None, 820),
            ],
            bands: Vec::new(),
        };
        // A valid constant configuration; the unit tests check it validates.
        Self::try_from(config).unwrap_or_else(|e| unreachable!("the BESCOM tariff is valid: {e}"))
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The slabs, in increasing order.
    pub fn slabs(&self) -> &[Slab] {
        &self.slabs
    }

    /// The bands in cell order: the configured ones, then [`STANDARD_BAND`] if they leave
    /// time uncovered. A tariff without configured bands has the one standard band.
    pub fn bands(&self) -> &[Band] {
        &self.bands
    }

    /// The number of slabs.
    pub fn slab_count(&self) -> usize {
        self.slabs.len()
    }

    /// The number of bands (see [`Tariff::bands`]).
    pub fn band_count(&self) -> usize {
        self.bands.len()
    }

    /// The number of (slab, band) cells.
    pub fn cell_count(&self) -> usize {
        self.slab_count() * self.band_count()
    }

    /// The index of the band in force at `time` (minute resolution).
    pub fn band_at(&self, time: NaiveTime) -> usize {
        let minute = time.hour() * 60 + time.minute();
        self.band_of_minute[minute as usize] as usize
    }

    /// Whether every band boundary lies on the grid of `interval_minutes` (anchored at
    /// midnight), so that no reading of that length starting on the grid crosses a boundary.
    pub fn boundaries_aligned_to(&self, interval_minutes: u32) -> bool {
        interval_minutes > 0
            && (0..MINUTES_PER_DAY as usize).all(|m| {
                m.is_multiple_of(interval_minutes as usize)
                    || self.band_of_minute[m] == self.band_of_minute[m - 1]
            })
    }

    /// The charge for one Wh in `cell`, in [`ExactAmount`] units (`rate_paise × rate_percent`).
    ///
    /// # Panics
    /// If `cell >= cell_count()`.
    pub fn cell_units_per_wh(&self, cell: usize) -> i128 {
        let (slab, band) = (cell / self.band_count(), cell % self.band_count());
        i128::from(self.slabs[slab].rate_paise) * i128::from(self.bands[band].rate_percent)
    }

    /// The rate of `cell` in rupees per kWh (`rate_paise × rate_percent / 10⁴`, rounded to the
    /// nearest `f64`): what the homomorphic circuit multiplies by.
    ///
    /// # Panics
    /// If `cell >= cell_count()`.
    pub fn cell_rate_rupees_per_kwh(&self, cell: usize) -> f64 {
        self.cell_units_per_wh(cell) as f64 / 10_000.0
    }

    /// The greatest common divisor of the non-zero per-Wh cell charges: every bill under this
    /// tariff is a whole multiple of it. `ExactAmount::ZERO` when every rate is zero.
    pub fn amount_quantum(&self) -> ExactAmount {
        let g = (0..self.cell_count())
            .map(|c| self.cell_units_per_wh(c))
            .fold(0, gcd);
        ExactAmount(g)
    }

    /// Splits `energy` Wh used when the period's running total was `consumed` into slabs:
    /// the `(slab index, Wh)` pieces, in slab order, only non-empty ones. The pieces add up to
    /// `energy` exactly.
    pub fn split_into_slabs(&self, consumed: Wh, energy: Wh) -> Vec<(usize, Wh)> {
        let start = consumed.get();
        let end = start.saturating_add(energy.get());
        let mut pieces = Vec::new();
        for (i, slab) in self.slabs.iter().enumerate() {
            let lo = slab.from.get().max(start);
            let hi = slab.to.map_or(end, |to| to.get().min(end));
            if hi > lo {
                // 0 < hi - lo <= energy, which is a valid Wh.
                pieces.push((i, Wh::try_new(hi - lo).unwrap_or(Wh::ZERO)));
            }
        }
        pieces
    }

    /// The slab-only amount for a period total, straight from the slab formula
    /// `Σ_s rate_s × |[0, total) ∩ slab_s|`, at 100 % (ignoring bands). For a tariff without
    /// bands this is the bill; it does not go through [`SlabAccumulator`].
    pub fn slab_amount_for_total(&self, total: Wh) -> ExactAmount {
        let units = self
            .split_into_slabs(Wh::ZERO, total)
            .into_iter()
            .map(|(s, wh)| i128::from(wh.get()) * i128::from(self.slabs[s].rate_paise) * PERCENT)
            .sum();
        ExactAmount(units)
    }

    /// The exact bill for a period's cell totals.
    pub fn bill_cells(&self, cells: &CellEnergy) -> Result<Bill, Error> {
        self.check_shape(cells)?;
        let units = cells
            .wh
            .iter()
            .enumerate()
            .map(|(c, wh)| i128::from(wh.get()) * self.cell_units_per_wh(c))
            .sum();
        Ok(Bill {
            cells: cells.clone(),
            amount: ExactAmount(units),
        })
    }

    /// The exact bill for a whole billing period's readings: `(start, Wh)` pairs with strictly
    /// increasing start times, the first reading being the first of the period. This is the
    /// plaintext oracle the homomorphic bill is checked against.
    pub fn bill<I>(&self, readings: I) -> Result<Bill, Error>
    where
        I: IntoIterator<Item = (NaiveDateTime, Wh)>,
    {
        let mut acc = SlabAccumulator::new(self);
        for (start, energy) in readings {
            acc.push(start, energy)?;
        }
        self.bill_cells(&acc.take_batch())
    }

    pub(crate) fn check_shape(&self, cells: &CellEnergy) -> Result<(), Error> {
        if cells.slabs != self.slab_count() || cells.bands != self.band_count() {
            return Err(Error::CellShapeMismatch {
                expected_slabs: self.slab_count(),
                expected_bands: self.band_count(),
                found_slabs: cells.slabs,
                found_bands: cells.bands,
            });
        }
        Ok(())
    }
}

fn gcd(a: i128, b: i128) -> i128 {
    let (mut a, mut b) = (a.abs(), b.abs());
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

// ---------------------------------------------------------------------------------------------
// Cells, bills
// ---------------------------------------------------------------------------------------------

/// Whole watt-hours per (slab, band) cell of one tariff, in cell order
/// (`slab × band_count + band`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CellEnergy {
    slabs: usize,
    bands: usize,
    wh: Vec<Wh>,
}

impl CellEnergy {
    /// All cells zero, shaped for `tariff`.
    pub fn zeros(tariff: &Tariff) -> Self {
        Self {
            slabs: tariff.slab_count(),
            bands: tariff.band_count(),
            wh: vec![Wh::ZERO; tariff.cell_count()],
        }
    }

    /// Cells from values in cell order, shaped for `tariff`.
    pub fn try_from_cells(tariff: &Tariff, cells: Vec<Wh>) -> Result<Self, Error> {
        if cells.len() != tariff.cell_count() {
            return Err(Error::CellShapeMismatch {
                expected_slabs: tariff.slab_count(),
                expected_bands: tariff.band_count(),
                found_slabs: cells.len(),
                found_bands: 1,
            });
        }
        Ok(Self {
            slabs: tariff.slab_count(),
            bands: tariff.band_count(),
            wh: cells,
        })
    }

    /// The cells in cell order.
    pub fn cells(&self) -> &[Wh] {
        &self.wh
    }

    /// The number of slabs.
    pub fn slab_count(&self) -> usize {
        self.slabs
    }

    /// The number of bands.
    pub fn band_count(&self) -> usize {
        self.bands
    }

    /// The energy in one cell.
    ///
    /// # Panics
    /// If `slab` or `band` is out of range.
    pub fn get(&self, slab: usize, band: usize) -> Wh {
        assert!(slab < self.slabs && band < self.bands, "cell out of range");
        self.wh[slab * self.bands + band]
    }

    /// The energy in one slab over all bands.
    pub fn slab_total(&self, slab: usize) -> Wh {
        let sum = (0..self.bands).map(|b| self.get(slab, b).get()).sum();
        Wh::try_new(sum).unwrap_or(Wh::MAX)
    }

    /// The energy in one band over all slabs.
    pub fn band_total(&self, band: usize) -> Wh {
        let sum = (0..self.slabs).map(|s| self.get(s, band).get()).sum();
        Wh::try_new(sum).unwrap_or(Wh::MAX)
    }

    /// The total energy.
    pub fn total(&self) -> Wh {
        let sum = self.wh.iter().map(|w| w.get()).sum();
        // Every push checks the running total against Wh::MAX.
        Wh::try_new(sum).unwrap_or(Wh::MAX)
    }

    /// Whether every cell is zero.
    pub fn is_zero(&self) -> bool {
        self.wh.iter().all(|w| *w == Wh::ZERO)
    }

    /// Adds another batch of the same shape cell by cell.
    pub fn try_add(&mut self, other: &Self) -> Result<(), Error> {
        if (self.slabs, self.bands) != (other.slabs, other.bands) {
            return Err(Error::CellShapeMismatch {
                expected_slabs: self.slabs,
                expected_bands: self.bands,
                found_slabs: other.slabs,
                found_bands: other.bands,
            });
        }
        for (a, b) in self.wh.iter_mut().zip(&other.wh) {
            *a = Wh::try_new(a.get() + b.get())?;
        }
        Ok(())
    }

    fn add_to(&mut self, cell: usize, energy: Wh) -> Result<(), Error> {
        self.wh[cell] = Wh::try_new(self.wh[cell].get() + energy.get())?;
        Ok(())
    }
}

/// An exact bill: the period's energy per cell and the exact amount.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bill {
    cells: CellEnergy,
    amount: ExactAmount,
}

impl Bill {
    /// The energy per cell.
    pub fn cells(&self) -> &CellEnergy {
        &self.cells
    }

    /// The exact amount before rounding.
    pub fn amount(&self) -> ExactAmount {
        self.amount
    }

    /// The amount rounded to the paisa (halves up): what the customer pays.
    pub fn total(&self) -> Paise {
        self.amount.round_to_paise()
    }

    /// The energy per slab over all bands, in kWh.
    pub fn kwh_per_slab(&self) -> Vec<Kwh> {
        (0..self.cells.slab_count())
            .map(|s| self.cells.slab_total(s).to_kwh())
            .collect()
    }

    /// The period's total energy.
    pub fn energy(&self) -> Wh {
        self.cells.total()
    }
}

// ---------------------------------------------------------------------------------------------
// The meter side
// ---------------------------------------------------------------------------------------------

/// Turns exact joule readings into whole watt-hours, carrying the remainder.
///
/// After any sequence of readings, `Σ returned Wh × 3600 + remainder = Σ joules` with
/// `0 <= remainder < 3600`: the register never loses or invents energy, and its output lags the
/// truth by less than 1 Wh. Start one register per meter, not per period: the remainder carries
/// across periods.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WhRegister {
    remainder: i64,
}

impl WhRegister {
    /// A register with no remainder.
    pub fn new() -> Self {
        Self::default()
    }

    /// A register resumed with a persisted remainder (`0 ..= 3599` J).
    pub fn resume(remainder: Joules) -> Result<Self, Error> {
        let r = remainder.get();
        if r >= JOULES_PER_WH {
            return Err(Error::InvalidQuantity {
                unit: "J",
                value: r.to_string(),
                reason: "a register remainder is below 3600 J",
            });
        }
        Ok(Self { remainder: r })
    }

    /// Feeds one reading; returns the whole Wh it completes.
    pub fn advance(&mut self, energy: Joules) -> Wh {
        // Joules are at most 3.6e15, so the sum cannot overflow.
        let total = self.remainder + energy.get();
        self.remainder = total % JOULES_PER_WH;
        Wh::try_new(total / JOULES_PER_WH).unwrap_or(Wh::MAX)
    }

    /// The energy read but not yet returned (below 1 Wh).
    pub fn remainder(&self) -> Joules {
        Joules::try_new(self.remainder).unwrap_or_default()
    }
}

/// The meter's billing-lane encoder for one billing period: splits each reading's Wh into the
/// slab(s) the period's running total puts it in and the band of its start time, and
/// accumulates per-cell totals for the current batch.
///
/// Start a new accumulator at the start of each billing period ([`SlabAccumulator::new`]), or
/// resume one after a restart from the persisted running total
/// ([`SlabAccumulator::resume`]). Call [`SlabAccumulator::take_batch`] at each batch close
/// (e.g. midnight): the batches of a period add up to the whole-period split, and
/// [`SlabAccumulator::period_cells`] is that running sum.
#[derive(Clone, Debug)]
pub struct SlabAccumulator {
    tariff: Tariff,
    consumed: Wh,
    last: Option<NaiveDateTime>,
    batch: CellEnergy,
    period: CellEnergy,
}

impl SlabAccumulator {
    /// An accumulator at the start of a billing period (nothing consumed yet).
    pub fn new(tariff: &Tariff) -> Self {
        Self {
            tariff: tariff.clone(),
            consumed: Wh::ZERO,
            last: None,
            batch: CellEnergy::zeros(tariff),
            period: CellEnergy::zeros(tariff),
        }
    }

    /// An accumulator resumed in the middle of a period: `period` is the period's cells so far
    /// (the sum of the batches already taken) and `last` the start of the last reading pushed.
    pub fn resume(
        tariff: &Tariff,
        period: CellEnergy,
        last: Option<NaiveDateTime>,
    ) -> Result<Self, Error> {
        tariff.check_shape(&period)?;
        Ok(Self {
            tariff: tariff.clone(),
            consumed: period.total(),
            last,
            batch: CellEnergy::zeros(tariff),
            period,
        })
    }

    /// The tariff.
    pub fn tariff(&self) -> &Tariff {
        &self.tariff
    }

    /// The period's running total.
    pub fn consumed(&self) -> Wh {
        self.consumed
    }

    /// The start of the last reading pushed.
    pub fn last_reading(&self) -> Option<NaiveDateTime> {
        self.last
    }

    /// Adds one reading of `energy` Wh that started at `start` (strictly after the previous
    /// reading's start).
    pub fn push(&mut self, start: NaiveDateTime, energy: Wh) -> Result<(), Error> {
        if let Some(previous) = self.last
            && start <= previous
        {
            return Err(Error::ReadingOutOfOrder {
                timestamp: start,
                previous,
            });
        }
        let consumed = self
            .consumed
            .checked_add(energy)
            .ok_or_else(|| Error::InvalidQuantity {
                unit: "Wh",
                value: format!("{} + {}", self.consumed.get(), energy.get()),
                reason: "the period's total is above the 1 TWh limit",
            })?;
        let band = self.tariff.band_at(start.time());
        let bands = self.tariff.band_count();
        for (slab, wh) in self.tariff.split_into_slabs(self.consumed, energy) {
            self.batch.add_to(slab * bands + band, wh)?;
            self.period.add_to(slab * bands + band, wh)?;
        }
        self.consumed = consumed;
        self.last = Some(start);
        Ok(())
    }

    /// The current batch's cells (since the last [`SlabAccumulator::take_batch`]).
    pub fn batch(&self) -> &CellEnergy {
        &self.batch
    }

    /// The period's cells so far (all batches, the current one included).
    pub fn period_cells(&self) -> &CellEnergy {
        &self.period
    }

    /// Closes the current batch: returns its cells and starts an empty one. The running total
    /// carries on.
    pub fn take_batch(&mut self) -> CellEnergy {
        std::mem::replace(&mut self.batch, CellEnergy::zeros(&self.tariff))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M").unwrap()
    }

    fn wh(v: i64) -> Wh {
        Wh::try_new(v).unwrap()
    }

    #[test]
    fn bescom_is_valid_and_round_trips_through_its_config() {
        let t = Tariff::bescom();
        assert_eq!(t.slab_count(), 4);
        assert_eq!(t.band_count(), 1);
        assert_eq!(t.bands()[0].name, STANDARD_BAND);
        let back = Tariff::try_new(TariffConfig::from(t.clone())).unwrap();
        assert_eq!(back, t);
    }

    #[test]
    fn paise_and_amounts_display_and_round_half_up() {
        assert_eq!(Paise::new(150_900).to_string(), "₹1509.00");
        assert_eq!(Paise::new(-5).to_string(), "-₹0.05");
        // 0.5 paisa rounds up, 0.49999 down.
        assert_eq!(
            ExactAmount::from_units(50_000).round_to_paise(),
            Paise::new(1)
        );
        assert_eq!(
            ExactAmount::from_units(49_999).round_to_paise(),
            Paise::new(0)
        );
        assert_eq!(
            ExactAmount::from_units(150_000).round_to_paise(),
            Paise::new(2)
        );
        assert_eq!(
            ExactAmount::from_units(15_090_000_000).to_string(),
            "₹1509.0000000"
        );
    }

    #[test]
    fn split_straddles_thresholds_exactly() {
        let t = Tariff::bescom();
        // 49.9 kWh used; 300.2 kWh more crosses three thresholds.
        let pieces = t.split_into_slabs(wh(49_900), wh(300_200));
        assert_eq!(
            pieces,
            vec![
                (0, wh(100)),
                (1, wh(50_000)),
                (2, wh(100_000)),
                (3, wh(150_100))
            ]
        );
        assert!(t.split_into_slabs(wh(10), Wh::ZERO).is_empty());
    }

    #[test]
    fn daily_ranges_parse_and_reject() {
        let r = DailyRange::parse("22:00-06:00").unwrap();
        assert_eq!(r.minutes().count(), 8 * 60);
        assert!(
            DailyRange::parse("00:00-24:00")
                .unwrap_err()
                .contains("whole day")
        );
        for bad in [
            "6:00-10:00",
            "06:00",
            "06:60-07:00",
            "24:00-01:00",
            "10:00-10:00",
        ] {
            assert!(DailyRange::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(r.to_string(), "22:00-06:00");
    }

    #[test]
    fn register_carries_the_remainder() {
        let mut r = WhRegister::new();
        let j = |v| Joules::try_new(v).unwrap();
        assert_eq!(r.advance(j(3_000)), Wh::ZERO);
        assert_eq!(r.advance(j(3_000)), wh(1));
        assert_eq!(r.remainder(), j(2_400));
        assert!(WhRegister::resume(j(3_600)).is_err());
    }

    #[test]
    fn accumulator_rejects_out_of_order_readings() {
        let mut acc = SlabAccumulator::new(&Tariff::bescom());
        acc.push(at("2024-01-01 10:00"), wh(5)).unwrap();
        let err = acc.push(at("2024-01-01 10:00"), wh(5)).unwrap_err();
        assert!(matches!(err, Error::ReadingOutOfOrder { .. }), "{err}");
        assert_eq!(acc.consumed(), wh(5));
    }
}
