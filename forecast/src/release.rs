//! The registered `forecast` computation, exactly as both the utility (which evaluates it) and
//! the key authority (which re-executes, decrypts and releases it) run it.
//!
//! # Layout of a release
//!
//! One slot per hour. Each meter writes its hourly series as **one ciphertext**, in a block of
//! slots `offset .. offset + count` (zero elsewhere), and reserves the model's horizon after
//! its series: `count = series hours + horizon`, the reserved slots zero. Several meters'
//! blocks, disjoint, are summed into one ciphertext and evaluated once ([`crate::circuit`]).
//! The output at a block position `p` depends only on positions `p − 171 … p − horizon` of
//! the same block (the rotations wrap the previous block's tail into the first
//! [`HISTORY`] positions, which are therefore never released), so position `p ≥ HISTORY`
//! holds the forecast of the block's hour `p`.
//!
//! # What is released ([`RegisteredForecast::released_positions`])
//!
//! - **Analytics lane** (clamped, Laplace-noised readings): every position from [`HISTORY`]
//!   on — the one-step (or day-ahead) backtest over the series and the forecasts past its
//!   end. All of it is post-processing of ε-DP data.
//! - **Exact lane**: only the last `horizon` positions, the forecasts of the hours after the
//!   series. Backtest forecasts of an exact series are close to an invertible linear function
//!   of it (the model's linear part is an autoregression), so releasing them for every hour
//!   would leak the series; the forecast of the future is what the utility needs.
//!
//! Each released value is the forecast energy rounded to [`FORECAST_QUANTUM`] kWh and clipped
//! at zero (post-processing).
//!
//! # Streamed operation ([`RegisteredForecast::day_window`], [`RegisteredForecast::block`])
//!
//! A meter uploads one series per forecast day `D`, chosen so that what leaves lies in `D`
//! and consecutive days never ask for the same hour twice (the key authority releases a
//! (kind, meter, hour) once):
//!
//! - exact lane: the [`EXACT_WINDOW_DAYS`] whole days before `D`; released: the `horizon`
//!   hours from `D 00:00` (all of `D` for the day-ahead model, sent before `D` starts);
//! - analytics lane: the `HISTORY + 24 − horizon` hours ending with `D`'s last reading hour
//!   the model needs; released: the 24 hours of `D` (the backtest, sent after `D`).
//!
//! Home `i` of a deployment writes its block at a fixed place: group `i / k`, offset
//! `(i mod k) × count`, where `k` ≤ [`HOMES_PER_RELEASE`] blocks fit one ciphertext; the
//! utility evaluates a group's inputs of one day together.

use std::ops::Range;

use chrono::{NaiveDate, NaiveDateTime, TimeDelta};

use seer_ckks::{Ciphertext, Evaluator};

use crate::circuit::{ROTATION_STEPS, evaluate};
use crate::error::ForecastError;
use crate::model::{ForecastModel, HISTORY};

/// Days of exact history a meter uploads per forecast day (at least the model's [`HISTORY`]
/// hours).
pub const EXACT_WINDOW_DAYS: usize = 8;

/// Most homes one release evaluates together: the key authority's limit of meters per
/// release request (`key_authority::analytics::MAX_METERS_PER_REQUEST`).
pub const HOMES_PER_RELEASE: usize = 8;

const _: () = assert!(EXACT_WINDOW_DAYS * 24 >= HISTORY);

/// The series a meter uploads for one forecast day (see the [module docs](self)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DayWindow {
    /// The start of the series' first hour.
    pub first_hour: NaiveDateTime,
    /// Hours in the series (the block adds the model's horizon).
    pub hours: usize,
}

impl DayWindow {
    /// The start of the hour after the series' last.
    #[must_use]
    pub fn end(&self) -> NaiveDateTime {
        self.first_hour + TimeDelta::hours(self.hours as i64)
    }

    /// The hour of block position `p`.
    #[must_use]
    pub fn hour(&self, p: usize) -> NaiveDateTime {
        self.first_hour + TimeDelta::hours(p as i64)
    }
}

/// Released forecasts are rounded to multiples of this (kWh), i.e. to the watt-hour.
pub const FORECAST_QUANTUM: f64 = 0.001;

/// Half-width of the input range in training standard deviations of the model's inputs
/// (see [`RegisteredForecast::input_range`]).
pub const INPUT_RANGE_STDS: f64 = 12.0;

/// The lane a model forecasts from (exact hourly energy, or the analytics lane at ε per
/// 15-minute reading): the one lane type of SEER.
pub use seer_core::Lane;

/// Readings per day of the analytics lane the ε models were trained on (15-minute readings).
pub const READINGS_PER_DAY: u32 = 96;

/// The model of the registered computation.
#[derive(Clone, Debug)]
pub struct RegisteredForecast {
    model: ForecastModel,
}

impl RegisteredForecast {
    /// The computation for `model`.
    ///
    /// # Errors
    /// [`ForecastError::InvalidModel`] for an invalid model.
    pub fn try_new(model: ForecastModel) -> Result<Self, ForecastError> {
        model.validate()?;
        Ok(Self { model })
    }

    /// The model.
    #[must_use]
    pub fn model(&self) -> &ForecastModel {
        &self.model
    }

    /// The lane the model was trained on (its metadata's ε).
    #[must_use]
    pub fn lane(&self) -> Lane {
        match self.model.meta.epsilon {
            Some(epsilon) => Lane::Analytics {
                epsilon,
                sensitivity_wh: self.model.meta.sensitivity_wh,
                readings_per_day: Some(READINGS_PER_DAY),
            },
            None => Lane::Exact,
        }
    }

    /// Inputs per meter: its hourly series.
    #[must_use]
    pub fn inputs_per_meter(&self) -> usize {
        1
    }

    /// Positions at the start of a block that only serve as history.
    #[must_use]
    pub fn history(&self) -> usize {
        HISTORY
    }

    /// Levels the input needs.
    #[must_use]
    pub fn depth(&self) -> u32 {
        ForecastModel::circuit_depth()
    }

    /// Rotation steps the computation needs Galois keys for.
    #[must_use]
    pub fn galois_steps(&self) -> Vec<i64> {
        ROTATION_STEPS.to_vec()
    }

    /// The range every hour value of a block must lie in; the meter clamps to it. The
    /// quadratic gates are exact polynomials, accurate only near the data the model was
    /// trained on, so the range is the training inputs' mean ± [`INPUT_RANGE_STDS`] standard
    /// deviations (on the exact lane, from zero up: energy is not negative). It contains
    /// every hour of the UCI household on each lane and the zero slots a block reserves.
    #[must_use]
    pub fn input_range(&self) -> (f64, f64) {
        let (mean, std) = (self.model.normalization.mean, self.model.normalization.std);
        let hi = mean + INPUT_RANGE_STDS * std;
        match self.lane() {
            Lane::Exact => (0.0, hi),
            Lane::Analytics { .. } => ((mean - INPUT_RANGE_STDS * std).min(0.0), hi),
        }
    }

    /// The block positions released for a block of `count` hours on `lane` (see the
    /// [module docs](self)); empty when the block is too short.
    #[must_use]
    pub fn released_positions(&self, lane: Lane, count: usize) -> Range<usize> {
        let horizon = self.model.horizon();
        if count < HISTORY + horizon {
            return count..count;
        }
        match lane {
            Lane::Exact => count - horizon..count,
            Lane::Analytics { .. } => HISTORY..count,
        }
    }

    /// The series a meter uploads to forecast `day` on the model's lane: what is released from
    /// it lies in `day` (every hour of it on the analytics lane and for the day-ahead model;
    /// the first `horizon` hours for a shorter horizon on the exact lane).
    #[must_use]
    pub fn day_window(&self, day: NaiveDate) -> DayWindow {
        let midnight = day.and_time(chrono::NaiveTime::MIN);
        let hours = self.window_hours();
        let first_hour = match self.lane() {
            Lane::Exact => midnight - TimeDelta::hours(hours as i64),
            Lane::Analytics { .. } => midnight - TimeDelta::hours(HISTORY as i64),
        };
        DayWindow { first_hour, hours }
    }

    fn window_hours(&self) -> usize {
        match self.lane() {
            Lane::Exact => EXACT_WINDOW_DAYS * 24,
            Lane::Analytics { .. } => HISTORY + 24 - self.model.horizon().min(24),
        }
    }

    /// Slots of a day's block: the [`day_window`](Self::day_window) series and the horizon.
    #[must_use]
    pub fn block_len(&self) -> usize {
        self.window_hours() + self.model.horizon()
    }

    /// Blocks of one evaluation group: as many as fit `slots`, at most
    /// [`HOMES_PER_RELEASE`].
    #[must_use]
    pub fn homes_per_group(&self, slots: usize) -> usize {
        (slots / self.block_len()).clamp(1, HOMES_PER_RELEASE)
    }

    /// Where home `home_index` writes its daily block in a ciphertext of `slots` slots:
    /// (group, first slot).
    #[must_use]
    pub fn block(&self, home_index: u64, slots: usize) -> (u64, usize) {
        let per_group = self.homes_per_group(slots) as u64;
        let position = usize::try_from(home_index % per_group).unwrap_or(0);
        (home_index / per_group, position * self.block_len())
    }

    /// Evaluates the forecaster on the (summed) hourly series. Blocking and CPU-heavy.
    ///
    /// # Errors
    /// When the input is malformed or an operation fails.
    pub fn evaluate(
        &self,
        evaluator: &Evaluator,
        inputs: &[Ciphertext],
    ) -> Result<Ciphertext, ForecastError> {
        let [series] = inputs else {
            return Err(ForecastError::InvalidInput {
                reason: format!(
                    "the forecaster takes 1 input per meter, not {}",
                    inputs.len()
                ),
            });
        };
        evaluate(evaluator, &self.model, series)
    }

    /// The released value of one output slot: the forecast rounded to [`FORECAST_QUANTUM`]
    /// and clipped at zero; `None` for a non-finite slot.
    #[must_use]
    pub fn release_value(&self, slot_value: f64) -> Option<f64> {
        slot_value
            .is_finite()
            .then(|| round_kwh(slot_value.max(0.0)))
    }
}

/// `kwh` rounded to [`FORECAST_QUANTUM`], without representation noise.
#[must_use]
pub fn round_kwh(kwh: f64) -> f64 {
    ((kwh / FORECAST_QUANTUM).round() * FORECAST_QUANTUM * 1e9).round() / 1e9
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registered(path: &str) -> RegisteredForecast {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        RegisteredForecast::try_new(ForecastModel::load(dir.join(path)).expect("model"))
            .expect("valid")
    }

    #[test]
    fn released_positions_follow_the_lane() {
        let exact = registered("models/uci-lstm.json");
        assert_eq!(exact.lane(), Lane::Exact);
        assert_eq!(exact.released_positions(Lane::Exact, 400), 399..400);
        assert_eq!(
            exact.released_positions(Lane::analytics(1.0), 400),
            HISTORY..400
        );
        assert!(exact.released_positions(Lane::Exact, HISTORY).is_empty());
        let day = registered("models/uci-lstm-day-ahead.json");
        assert_eq!(day.released_positions(Lane::Exact, 400), 376..400);
        let noisy = registered("models/uci-lstm-eps1.json");
        assert_eq!(noisy.lane().as_str(), "analytics");
        assert_eq!(noisy.lane().epsilon(), 1.0);
    }

    #[test]
    fn daily_windows_release_hours_of_their_day_once() {
        let day: NaiveDate = "2010-03-10".parse().expect("date");
        let midnight = day.and_time(chrono::NaiveTime::MIN);
        for (path, released_hours) in [
            ("models/uci-lstm-day-ahead.json", 24),
            ("models/uci-lstm-eps1.json", 24),
            ("models/uci-lstm.json", 1),
        ] {
            let r = registered(path);
            let hours_of = |d: NaiveDate| {
                let w = r.day_window(d);
                let count = w.hours + r.model().horizon();
                assert_eq!(count, r.block_len(), "{path}");
                r.released_positions(r.lane(), count)
                    .map(|p| w.hour(p))
                    .collect::<Vec<_>>()
            };
            let hours = hours_of(day);
            assert_eq!(hours.len(), released_hours, "{path}");
            // Consecutive hours from the day's midnight, all within the day.
            for (j, h) in hours.iter().enumerate() {
                assert_eq!(*h, midnight + TimeDelta::hours(j as i64), "{path}");
            }
            let next = hours_of(day.succ_opt().expect("next day"));
            assert!(next.iter().all(|h| !hours.contains(h)), "{path}");
            // The series never includes an hour it is released for on the exact lane.
            let w = r.day_window(day);
            if r.lane() == Lane::Exact {
                assert_eq!(w.end(), midnight, "{path}");
            } else {
                assert!(w.end() <= midnight + TimeDelta::hours(24), "{path}");
            }
        }
    }

    #[test]
    fn homes_get_disjoint_blocks_within_a_group() {
        let r = registered("models/uci-lstm-day-ahead.json");
        assert_eq!(r.block_len(), 8 * 24 + 24);
        let slots = 16_384;
        assert_eq!(r.homes_per_group(slots), HOMES_PER_RELEASE);
        let blocks: Vec<(u64, usize)> = (0..17).map(|i| r.block(i, slots)).collect();
        assert_eq!(blocks[0], (0, 0));
        assert_eq!(blocks[7], (0, 7 * 216));
        assert_eq!(blocks[8], (1, 0));
        assert_eq!(blocks[16], (2, 0));
        for (i, a) in blocks.iter().enumerate() {
            assert!(a.1 + r.block_len() <= slots);
            for b in &blocks[i + 1..] {
                assert!(a.0 != b.0 || a.1.abs_diff(b.1) >= r.block_len());
            }
        }
        // A ciphertext too small for eight blocks holds fewer.
        assert_eq!(r.homes_per_group(3 * 216 + 5), 3);
    }

    #[test]
    fn input_range_covers_the_data_and_reserved_slots() {
        let exact = registered("models/uci-lstm.json");
        let (lo, hi) = exact.input_range();
        assert_eq!(lo, 0.0);
        // The UCI household's largest hour is 6.56 kWh; mean + 12σ = 12.1 kWh.
        assert!(hi > 10.0 && hi < 13.0, "{hi}");
        let (lo, hi) = registered("models/uci-lstm-eps1.json").input_range();
        assert!(lo < -50.0 && hi > 50.0, "{lo} {hi}");
    }

    #[test]
    fn values_are_rounded_and_clipped() {
        let r = registered("models/uci-lstm.json");
        assert_eq!(r.release_value(1.23449), Some(1.234));
        assert_eq!(r.release_value(1.2345001), Some(1.235));
        assert_eq!(r.release_value(-0.2), Some(0.0));
        assert_eq!(r.release_value(f64::NAN), None);
        assert_eq!(round_kwh(0.1 + 0.2), 0.3);
    }
}
