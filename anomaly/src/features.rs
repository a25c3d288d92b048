//! Daily load profiles and the features the forest splits on.
//!
//! # Features whose splits are linear forms
//!
//! Every feature is a ratio `num / den` of a numerator — a **linear form** of a [`DayRecord`]
//! (the day's 24 hourly energies, per-hour sums over the previous seven days, a constant),
//! optionally plus weighted **squares** of ±1 combinations of the day's hours — and a linear
//! denominator. A split "feature > t" with `den > 0` is then the test `num − t·den > 0`, which
//! needs no division under encryption: sums of hour planes are additions (and, for the previous
//! week, rotations), a square is one ciphertext product, and `num − t·den`, scaled into the step
//! polynomial's domain, is a few plaintext-scalar multiplications (one level; two with
//! squares). Every split of the forest, hard or smooth, plaintext or encrypted, is decided on
//! that form; the ratio is only used to place thresholds during training.
//!
//! The default set ([`FeatureSet::daily`]) is
//!
//! | feature | numerator | denominator | catches |
//! |---|---|---|---|
//! | `total` | Σ x_h | 1 | theft, spikes (and holidays: the main false alarms) |
//! | `night_share` | Σ x_h over 01:00–05:00 | Σ x_h | load moved to the night, stuck meters |
//! | `week_ratio` | 7 · Σ x_h | Σ over the previous 7 days | theft and spikes against the home's own level |
//! | `evening_night_contrast` | Σ x_h over 17:00–22:00 − Σ x_h over 01:00–05:00 | Σ x_h | stuck meters (a flat profile), load shifts |
//! | `step_energy` | Σ_h (x_{h+1} − x_h)² | 1 | spikes (two large steps), stuck meters (none) |
//!
//! `step_energy` is the stuck-meter indicator of the issue in a form that costs one product
//! per hour pair; it is also what finds spikes, which barely move the daily total. Ablations
//! ([`FeatureSet::named`]): `linear` (without `step_energy`: no squares, one level less),
//! `bands` (total, week ratio and four band shares), `spread` (the default plus the variance
//! `Σ x_h² − (Σ x_h)²/24`).
//!
//! # Bounds
//!
//! The smooth and encrypted scorers divide `num − t·den` by a bound on its magnitude, so that
//! the step polynomial only ever sees arguments in `[−1, 1]`. The bound comes from the
//! per-hour range of the model (on the exact lane the meter clamps each hour to the
//! connection's capacity before encrypting, see [`DayProfile::clamped`]; on the analytics lane
//! the range is widened for the noise): see [`FeatureDef::normalizer`].

use serde::{Deserialize, Serialize};

use crate::error::AnomalyError;

/// Hours in a day.
pub const HOURS: usize = 24;
/// Days of history each record needs (the previous week).
pub const HISTORY_DAYS: usize = 7;

/// One day's energy per hour in kWh (local time; index 0 is 00:00–01:00).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct DayProfile {
    hours: [f64; HOURS],
}

impl DayProfile {
    /// A profile from 24 hourly energies in kWh (finite; negative values are allowed because
    /// the analytics lane's noise can make them negative).
    pub fn try_new(hours: [f64; HOURS]) -> Result<Self, AnomalyError> {
        if let Some(h) = hours.iter().position(|v| !v.is_finite()) {
            return Err(AnomalyError::InvalidDay {
                reason: format!("hour {h} is not finite"),
            });
        }
        Ok(Self { hours })
    }

    /// A profile from 24 hourly or 96 quarter-hourly energies in kWh (quarter hours are summed
    /// into hours).
    pub fn try_from_slots(values: &[f64]) -> Result<Self, AnomalyError> {
        if values.is_empty() || !values.len().is_multiple_of(HOURS) || values.len() > 60 * HOURS {
            return Err(AnomalyError::InvalidDay {
                reason: format!(
                    "{} values: expected 24 hourly or a multiple of 24 sub-hourly values",
                    values.len()
                ),
            });
        }
        let per_hour = values.len() / HOURS;
        let mut hours = [0.0; HOURS];
        for (h, chunk) in values.chunks(per_hour).enumerate() {
            hours[h] = chunk.iter().sum();
        }
        Self::try_new(hours)
    }

    /// The hourly energies in kWh.
    pub fn hours(&self) -> &[f64; HOURS] {
        &self.hours
    }

    /// The day's total in kWh.
    pub fn total(&self) -> f64 {
        self.hours.iter().sum()
    }

    /// Each hour clamped to `0 ..= cap_kwh`: what a meter encrypts for the exact anomaly lane
    /// (an hour above the connection's capacity is impossible, and the bound keeps every
    /// split argument inside the step polynomial's domain).
    pub fn clamped(&self, cap_kwh: f64) -> Self {
        let mut hours = self.hours;
        for v in &mut hours {
            *v = v.clamp(0.0, cap_kwh);
        }
        Self { hours }
    }
}

/// A day together with the context its features need.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DayRecord {
    /// The day's profile.
    pub day: DayProfile,
    /// Per hour of the day, the energy of that hour summed over the previous seven days, kWh.
    pub prev_week: [f64; HOURS],
}

impl DayRecord {
    /// Records for `days[7..]`, each with the seven days before it; the first seven days only
    /// serve as history.
    pub fn from_days(days: &[DayProfile]) -> Vec<DayRecord> {
        (HISTORY_DAYS..days.len())
            .map(|i| {
                let mut prev_week = [0.0; HOURS];
                for d in &days[i - HISTORY_DAYS..i] {
                    for (w, x) in prev_week.iter_mut().zip(d.hours()) {
                        *w += x;
                    }
                }
                DayRecord {
                    day: days[i],
                    prev_week,
                }
            })
            .collect()
    }

    /// The previous seven days' total, kWh.
    pub fn prev_week_total(&self) -> f64 {
        self.prev_week.iter().sum()
    }
}

/// A linear form of a [`DayRecord`]: `Σ hours[h]·x_h + Σ prev_week[h]·W_h + constant`, with
/// `W_h` hour `h` summed over the previous seven days.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Form {
    /// Weight of each hour of the day.
    pub hours: [f64; HOURS],
    /// Weight of each hour of the previous week (summed over its seven days).
    pub prev_week: [f64; HOURS],
    /// The constant term.
    pub constant: f64,
}

impl Form {
    /// The constant form `c`.
    pub fn constant(c: f64) -> Self {
        Self {
            hours: [0.0; HOURS],
            prev_week: [0.0; HOURS],
            constant: c,
        }
    }

    /// `weight · Σ x_h` over the hours in `from..to` (`to` may exceed 24 to wrap past
    /// midnight).
    pub fn hour_sum(from: usize, to: usize, weight: f64) -> Self {
        let mut hours = [0.0; HOURS];
        for h in from..to {
            hours[h % HOURS] = weight;
        }
        Self {
            hours,
            prev_week: [0.0; HOURS],
            constant: 0.0,
        }
    }

    /// `weight · Σ W_h` over the hours in `from..to` of the previous week (`to` may exceed 24).
    pub fn prev_week_sum(from: usize, to: usize, weight: f64) -> Self {
        let mut prev_week = [0.0; HOURS];
        for h in from..to {
            prev_week[h % HOURS] = weight;
        }
        Self {
            hours: [0.0; HOURS],
            prev_week,
            constant: 0.0,
        }
    }

    /// The form's value on a record.
    pub fn eval(&self, r: &DayRecord) -> f64 {
        let mut acc = self.constant;
        for (w, x) in self.hours.iter().zip(r.day.hours()) {
            acc += w * x;
        }
        for (w, x) in self.prev_week.iter().zip(&r.prev_week) {
            acc += w * x;
        }
        acc
    }

    /// Whether the form is a constant (no hour and no history term).
    pub fn is_constant(&self) -> bool {
        self.hours.iter().chain(&self.prev_week).all(|w| *w == 0.0)
    }

    /// The least and greatest value of the form when every hour lies in `lo ..= hi` (so each
    /// `W_h` lies in `7·lo ..= 7·hi`).
    pub fn range(&self, lo: f64, hi: f64) -> (f64, f64) {
        let week = HISTORY_DAYS as f64;
        let terms = self.hours.iter().map(|w| (w * lo, w * hi)).chain(
            self.prev_week
                .iter()
                .map(|w| (w * week * lo, w * week * hi)),
        );
        let (mut min, mut max) = (self.constant, self.constant);
        for (a, b) in terms {
            min += a.min(b);
            max += a.max(b);
        }
        (min, max)
    }
}

/// One feature: `numerator / denominator`, split as `numerator − t·denominator > 0`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FeatureDef {
    /// A short name (`night_share`).
    pub name: String,
    /// The numerator.
    pub numerator: Form,
    /// The denominator (positive on plausible days; the constant 1 for plain features).
    pub denominator: Form,
    /// The hours the feature looks at, for explanations.
    pub hours: Vec<usize>,
    /// Squares added to the numerator: `Σ weight · (Σ_h form[h]·x_h)²` (one ciphertext product
    /// and one more level under encryption). Each form's weights must be −1, 0 or 1, so that it
    /// is built from the hour planes by additions alone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub squares: Vec<SquareTerm>,
}

/// A weighted square of a linear combination of the day's hours.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SquareTerm {
    /// The weight of the square.
    pub weight: f64,
    /// The combination's coefficient of each hour (−1, 0 or 1).
    pub form: [f64; HOURS],
}

impl SquareTerm {
    /// `(Σ form[h]·x_h)` on a day.
    pub fn inner(&self, day: &DayProfile) -> f64 {
        self.form.iter().zip(day.hours()).map(|(w, x)| w * x).sum()
    }

    /// The largest value of the inner combination's square over hours in `lo ..= hi`.
    pub fn max_square(&self, lo: f64, hi: f64) -> f64 {
        let (mut min, mut max) = (0.0, 0.0);
        for w in &self.form {
            min += (w * lo).min(w * hi);
            max += (w * lo).max(w * hi);
        }
        f64::max(min * min, max * max)
    }
}

impl FeatureDef {
    /// The numerator: its linear form plus its squares.
    pub fn numerator_value(&self, r: &DayRecord) -> f64 {
        self.numerator.eval(r)
            + self
                .squares
                .iter()
                .map(|s| s.weight * s.inner(&r.day).powi(2))
                .sum::<f64>()
    }

    /// The feature's value: the ratio, or the numerator beyond ±1e9 when the denominator is
    /// not positive (only noisy analytics-lane days can have that). Used to place thresholds
    /// in training; splits use [`FeatureDef::margin`].
    pub fn value(&self, r: &DayRecord) -> f64 {
        let num = self.numerator_value(r);
        let den = self.denominator.eval(r);
        if den > 1e-9 {
            num / den
        } else if num >= 0.0 {
            1e9
        } else {
            -1e9
        }
    }

    /// The split's linear form `num − t·den`: positive means "right" (feature above `t`).
    pub fn margin(&self, r: &DayRecord, t: f64) -> f64 {
        self.numerator_value(r) - t * self.denominator.eval(r)
    }

    /// A bound on `|num − t·den|` over every record whose hours lie in `lo ..= hi`: the
    /// divisor that brings the split argument into `[−1, 1]`.
    pub fn normalizer(&self, t: f64, lo: f64, hi: f64) -> f64 {
        let (mut n_lo, mut n_hi) = self.numerator.range(lo, hi);
        for sq in &self.squares {
            let m = sq.weight * sq.max_square(lo, hi);
            if m < 0.0 {
                n_lo += m;
            } else {
                n_hi += m;
            }
        }
        let (d_lo, d_hi) = self.denominator.range(lo, hi);
        let corners = [
            n_lo - t * d_lo,
            n_lo - t * d_hi,
            n_hi - t * d_lo,
            n_hi - t * d_hi,
        ];
        corners
            .iter()
            .fold(f64::MIN_POSITIVE, |m, c| m.max(c.abs()))
    }
}

/// The features of a model, in order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FeatureSet {
    /// The features.
    pub features: Vec<FeatureDef>,
}

impl FeatureSet {
    /// The default daily feature set (see the [module docs](self)).
    pub fn daily() -> Self {
        Self::named("daily").unwrap_or(Self {
            features: Vec::new(),
        })
    }

    /// A named set: `daily` (the default), `linear`, `bands` or `spread` (see the
    /// [module docs](self)).
    pub fn named(name: &str) -> Option<Self> {
        let total = || Form::hour_sum(0, HOURS, 1.0);
        let linear =
            |name: &str, numerator: Form, denominator: Form, hours: Vec<usize>| FeatureDef {
                name: name.into(),
                numerator,
                denominator,
                hours,
                squares: Vec::new(),
            };
        let share = |name: &str, from: usize, to: usize| {
            linear(
                name,
                Form::hour_sum(from, to, 1.0),
                total(),
                (from..to).map(|h| h % HOURS).collect(),
            )
        };
        let total_f = linear("total", total(), Form::constant(1.0), (0..HOURS).collect());
        let night = share("night_share", 1, 5);
        let week = linear(
            "week_ratio",
            Form::hour_sum(0, HOURS, HISTORY_DAYS as f64),
            Form::prev_week_sum(0, HOURS, 1.0),
            (0..HOURS).collect(),
        );
        let mut contrast_num = Form::hour_sum(17, 22, 1.0);
        for h in 1..5 {
            contrast_num.hours[h] = -1.0;
        }
        let contrast = linear(
            "evening_night_contrast",
            contrast_num,
            total(),
            (1..5).chain(17..22).collect(),
        );
        let step_energy = FeatureDef {
            name: "step_energy".into(),
            numerator: Form::constant(0.0),
            denominator: Form::constant(1.0),
            hours: (0..HOURS).collect(),
            squares: (0..HOURS - 1)
                .map(|h| {
                    let mut form = [0.0; HOURS];
                    form[h + 1] = 1.0;
                    form[h] = -1.0;
                    SquareTerm { weight: 1.0, form }
                })
                .collect(),
        };
        let spread = FeatureDef {
            name: "spread".into(),
            numerator: Form::constant(0.0),
            denominator: Form::constant(1.0),
            hours: (0..HOURS).collect(),
            squares: (0..HOURS)
                .map(|h| {
                    let mut form = [0.0; HOURS];
                    form[h] = 1.0;
                    SquareTerm { weight: 1.0, form }
                })
                .chain(std::iter::once(SquareTerm {
                    weight: -1.0 / HOURS as f64,
                    form: [1.0; HOURS],
                }))
                .collect(),
        };
        let features = match name {
            "daily" => vec![total_f, night, week, contrast, step_energy],
            "linear" => vec![total_f, night, week, contrast],
            "spread" => vec![total_f, night, week, contrast, step_energy, spread],
            "bands" => vec![
                total_f,
                night,
                share("morning_share", 6, 10),
                share("midday_share", 10, 17),
                share("evening_share", 17, 22),
                week,
            ],
            _ => return None,
        };
        Some(Self { features })
    }

    /// Number of features.
    pub fn len(&self) -> usize {
        self.features.len()
    }

    /// Whether there are no features.
    pub fn is_empty(&self) -> bool {
        self.features.is_empty()
    }

    /// The feature values of a record (ratios; see [`FeatureDef::value`]).
    pub fn values(&self, r: &DayRecord) -> Vec<f64> {
        self.features.iter().map(|f| f.value(r)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(f: impl Fn(usize) -> f64) -> DayProfile {
        let mut h = [0.0; HOURS];
        for (i, v) in h.iter_mut().enumerate() {
            *v = f(i);
        }
        DayProfile::try_new(h).unwrap()
    }

    #[test]
    fn quarter_hours_sum_into_hours() {
        let q: Vec<f64> = (0..96).map(|i| i as f64).collect();
        let d = DayProfile::try_from_slots(&q).unwrap();
        assert_eq!(d.hours()[0], 0.0 + 1.0 + 2.0 + 3.0);
        assert_eq!(d.hours()[23], 92.0 + 93.0 + 94.0 + 95.0);
        assert!(DayProfile::try_from_slots(&[1.0; 23]).is_err());
        assert!(DayProfile::try_new([f64::NAN; HOURS]).is_err());
    }

    #[test]
    fn records_carry_the_previous_week() {
        let days: Vec<DayProfile> = (0..10).map(|d| day(|_| d as f64)).collect();
        let recs = DayRecord::from_days(&days);
        assert_eq!(recs.len(), 3);
        // Day 7's history is days 0..7, each with total 24·d.
        assert_eq!(recs[0].prev_week_total(), 24.0 * (0..7).sum::<i32>() as f64);
        assert_eq!(recs[0].prev_week[5], (0..7).sum::<i32>() as f64);
        assert_eq!(recs[2].day, days[9]);
    }

    #[test]
    fn split_forms_agree_with_ratios() {
        let fs = FeatureSet::daily();
        let r = DayRecord {
            day: day(|h| if (1..5).contains(&h) { 2.0 } else { 0.5 }),
            prev_week: [7.0 * 20.0 / 24.0; HOURS],
        };
        let total = 4.0 * 2.0 + 20.0 * 0.5;
        let v = fs.values(&r);
        assert!((v[0] - total).abs() < 1e-12);
        assert!((v[1] - 8.0 / total).abs() < 1e-12);
        assert!((v[2] - total / 20.0).abs() < 1e-12);
        // Evening (0.5 × 5) minus night (2 × 4), over the total.
        assert!((v[3] - (2.5 - 8.0) / total).abs() < 1e-12);
        // Two steps of 1.5 kWh.
        assert!((v[4] - 2.0 * 1.5 * 1.5).abs() < 1e-12);
        for (f, value) in fs.features.iter().zip(&v) {
            for t in [value - 0.01, value + 0.01] {
                assert_eq!(f.margin(&r, t) > 0.0, *value > t, "{}", f.name);
            }
        }
    }

    #[test]
    fn normalizer_bounds_every_capped_day() {
        let mut fs = FeatureSet::named("spread").unwrap();
        fs.features
            .extend(FeatureSet::named("bands").unwrap().features);
        let cap = 3.0;
        let days = [
            day(|_| 0.0),
            day(|_| cap),
            day(|h| if h < 5 { cap } else { 0.0 }),
            day(|h| if h % 2 == 0 { cap } else { 0.0 }),
        ];
        for f in &fs.features {
            for t in [0.0, 0.3, 1.0, 2.5, 60.0, 300.0] {
                let n = f.normalizer(t, 0.0, cap);
                for d in &days {
                    for w in [0.0, 7.0 * cap] {
                        let r = DayRecord {
                            day: *d,
                            prev_week: [w; HOURS],
                        };
                        assert!(f.margin(&r, t).abs() <= n + 1e-9, "{} t={t}", f.name);
                    }
                }
            }
        }
    }
}
