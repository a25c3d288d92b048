//! The stored `daily` model: the hour-of-day linear day-ahead forecaster and the histogram
//! outlier detector, as one weight matrix over the block ([`crate::layout`]), the meter's
//! preparation of its input, the plaintext twin of the circuit and the release rules.
//!
//! **Forecaster.** Output column `c < 24` is tomorrow's hour `c`:
//! `Σ_r W[r][c]·x[r][c]` with the inputs of [`ForecastRow`] (energies in kWh, all proportional
//! to the home's size), one weight vector per hour of the day, fitted by [`crate::train`].
//!
//! **Detector.** Output column `24 + f` is feature `f`'s histogram outlier score (HBOS,
//! Goldstein & Dengel 2012): the meter writes a one-hot over 16 bins of the feature's value
//! and `W[bin][24 + f] = −ln` of the bin's smoothed training frequency. Every bin weight is
//! positive and bin weights of one feature are at least [`MIN_BIN_GAP`] apart, so a decrypted
//! output names its bin unambiguously (and a zero output means the feature is absent). The
//! day's score is the sum over features; it is flagged at or above the 95th percentile of the
//! training days' scores.
//!
//! **Release** ([`DailyModel::release`]) checks that every output is one the model can produce
//! from an honest block, up to CKKS error (≲ 1e-5 here; tolerance [`OUTPUT_TOLERANCE`]), and
//! refuses the meter-day otherwise.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use seer_core::Refusal;

use crate::error::DailyError;
use crate::features::{AnomalyInput, ForecastInput, anomaly_values, forecast_inputs};
use crate::history::HomeHistory;
use crate::layout::{
    ANOMALY_COLUMNS, BLOCK, COLUMNS, FORECAST_COLUMNS, MAX_ANOMALY_FEATURES, PRESENCE_COLUMN, ROWS,
    decode_presence, slot,
};
use crate::release::{AnomalyRelease, DailyRelease, ExplanationItem, QUANTUM, round_to};

/// The model file's format tag.
pub const FORMAT: &str = "seer-daily/1";
/// Bins of every anomaly feature (one per input row).
pub const BINS: usize = ROWS;
/// Smallest distance between two bin weights of one feature.
pub const MIN_BIN_GAP: f64 = 0.025;
/// How far a decrypted output may lie from a value the model can produce (CKKS error is
/// below 1e-4 at `N4096_L1` for these weights; an output farther than this from every
/// possible value comes from a block no honest meter writes).
pub const OUTPUT_TOLERANCE: f64 = 0.01;
/// Explanation items of a flagged day, at most.
pub const MAX_EXPLANATION: usize = 3;

/// One meter-day's block as the meter encrypts it ([`BLOCK`] values, row-major).
#[derive(Clone, Debug, PartialEq)]
pub struct DailyInput {
    /// The day whose readings were prepared.
    pub day: NaiveDate,
    values: Vec<f64>,
}

impl DailyInput {
    /// An input from its [`BLOCK`] values.
    ///
    /// # Errors
    /// [`DailyError::InvalidInput`] for another length or a non-finite value.
    pub fn try_new(day: NaiveDate, values: Vec<f64>) -> Result<Self, DailyError> {
        if values.len() != BLOCK {
            return Err(DailyError::InvalidInput {
                reason: format!("{} values; a block has {BLOCK}", values.len()),
            });
        }
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            return Err(DailyError::InvalidInput {
                reason: format!("slot {i} is not finite"),
            });
        }
        Ok(Self { day, values })
    }

    /// The block's values, row-major.
    #[must_use]
    pub fn values(&self) -> &[f64] {
        &self.values
    }

    /// Whether the meter filled the forecast part (row 0 of the presence column).
    #[must_use]
    pub fn has_forecast(&self) -> bool {
        self.values[slot(0, PRESENCE_COLUMN)] == 1.0
    }

    /// Whether the meter filled the anomaly part (row 1 of the presence column).
    #[must_use]
    pub fn has_anomaly(&self) -> bool {
        self.values[slot(1, PRESENCE_COLUMN)] == 1.0
    }
}

/// One forecast input row: its name and definition.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ForecastRow {
    /// A short name (`lag_1d`).
    pub name: String,
    /// What the meter writes in the row.
    pub input: ForecastInput,
}

/// One anomaly feature: definition, bins and what is typical.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AnomalyFeature {
    /// A short name (`night_energy`).
    pub name: String,
    /// What the meter computes.
    pub input: AnomalyInput,
    /// The hours (0–23, ascending) it looks at.
    pub hours: Vec<u32>,
    /// The 15 inner bin edges, ascending: bin `b` holds values in `[edges[b−1], edges[b])`
    /// (bin 0 from 0, bin 15 open above).
    pub edges: Vec<f64>,
    /// Training days per bin.
    pub counts: Vec<u64>,
    /// The feature's output on a median training day (the typical contribution).
    pub typical_output: f64,
}

impl AnomalyFeature {
    /// The bin of `value`.
    #[must_use]
    pub fn bin(&self, value: f64) -> usize {
        self.edges.partition_point(|e| *e <= value)
    }

    /// The range of bin `bin`, as multiples of the usual: `(low, high)`, `high` infinite for
    /// the top bin.
    #[must_use]
    pub fn bin_range(&self, bin: usize) -> (f64, f64) {
        let low = if bin == 0 { 0.0 } else { self.edges[bin - 1] };
        let high = self.edges.get(bin).copied().unwrap_or(f64::INFINITY);
        (low, high)
    }
}

/// The forecast half of the model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ForecastSpec {
    /// The input rows (at most [`ROWS`]; rows past them are zero).
    pub rows: Vec<ForecastRow>,
    /// The ridge penalty (relative to the mean diagonal of the normal equations).
    pub ridge: f64,
    /// Iteratively reweighted least-squares rounds towards absolute error (0: plain ridge).
    pub l1_rounds: u32,
    /// A decrypted forecast beyond ± this (kWh; 4 × the largest training hour) is refused.
    pub limit_kwh: f64,
}

/// The anomaly half of the model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AnomalySpec {
    /// The features (at most [`MAX_ANOMALY_FEATURES`]), in column order.
    pub features: Vec<AnomalyFeature>,
    /// The training quantiles the inner bin edges sit at.
    pub bin_quantiles: Vec<f64>,
    /// The additive smoothing `α` of the bin frequencies `(count + α) / (n + 16α)`.
    pub alpha: f64,
    /// Edges are rounded to this many significant digits (readable explanations).
    pub edge_digits: u32,
    /// The training quantile of scores the flag threshold sits at.
    pub threshold_quantile: f64,
    /// Flagged when the (unrounded) score is at least this.
    pub flag_threshold: f64,
}

/// Figures of the training run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainingSummary {
    /// Target days of the forecaster.
    pub forecast_days: usize,
    /// Days the detector was fitted on.
    pub anomaly_days: usize,
    /// In-sample MAE of the forecaster, kWh per hour.
    pub forecast_mae_kwh: f64,
    /// The largest training hour, kWh.
    pub max_hourly_kwh: f64,
    /// Median training score.
    pub median_score: f64,
}

/// The model file (`daily/models/*.json`), registered by the BLAKE3 of its bytes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DailyModel {
    /// [`FORMAT`].
    pub format: String,
    /// The model's name (`uci-daily`).
    pub name: String,
    /// Its version (bumped when the features or training change).
    pub version: u32,
    /// Where the training data come from.
    pub data: String,
    /// First and last training day.
    pub training_period: (NaiveDate, NaiveDate),
    /// Days of history a preparation looks back on (the context).
    pub history_days: u32,
    /// Fewest usable context days for a part to be prepared.
    pub min_history_days: u32,
    /// The forecaster.
    pub forecast: ForecastSpec,
    /// The detector.
    pub anomaly: AnomalySpec,
    /// `W[r][c]`, [`ROWS`] × [`COLUMNS`].
    pub weights: Vec<Vec<f64>>,
    /// Training figures.
    pub training: TrainingSummary,
    /// Held-out figures recorded by the evaluation (name → value), with its protocol.
    pub evaluation: BTreeMap<String, f64>,
    /// How [`DailyModel::evaluation`] was measured (command and protocol).
    pub evaluation_protocol: String,
}

fn invalid(reason: impl Into<String>) -> DailyError {
    DailyError::InvalidModel {
        reason: reason.into(),
    }
}

impl DailyModel {
    /// Parses and validates a model file.
    ///
    /// # Errors
    /// [`DailyError::InvalidModel`].
    pub fn from_json(json: &str) -> Result<Self, DailyError> {
        let model: Self = serde_json::from_str(json).map_err(|e| DailyError::InvalidModel {
            reason: e.to_string(),
        })?;
        model.validate()?;
        Ok(model)
    }

    /// The model as JSON (exact f64 round trips, deterministic: the same model gives the same
    /// bytes).
    ///
    /// # Errors
    /// [`DailyError::InvalidModel`] when it cannot be serialized.
    pub fn to_json(&self) -> Result<String, DailyError> {
        let mut s = serde_json::to_string_pretty(self).map_err(|e| DailyError::InvalidModel {
            reason: e.to_string(),
        })?;
        s.push('\n');
        Ok(s)
    }

    /// Checks the model's shape and values.
    ///
    /// # Errors
    /// [`DailyError::InvalidModel`].
    pub fn validate(&self) -> Result<(), DailyError> {
        if self.format != FORMAT {
            return Err(invalid(format!(
                "format {:?}; expected {FORMAT:?}",
                self.format
            )));
        }
        if self.weights.len() != ROWS || self.weights.iter().any(|r| r.len() != COLUMNS) {
            return Err(invalid(format!("the weights must be {ROWS} × {COLUMNS}")));
        }
        if self.weights.iter().flatten().any(|w| !w.is_finite()) {
            return Err(invalid("a weight is not finite"));
        }
        if self.history_days == 0
            || self.history_days > 366
            || self.min_history_days == 0
            || self.min_history_days > self.history_days
        {
            return Err(invalid("history_days / min_history_days out of range"));
        }
        let rows = self.forecast.rows.len();
        if rows > ROWS {
            return Err(invalid(format!("{rows} forecast rows; at most {ROWS}")));
        }
        for row in &self.forecast.rows {
            match row.input {
                ForecastInput::Lag { days } | ForecastInput::RecentProfile { days }
                    if days == 0 || days > self.history_days =>
                {
                    return Err(invalid(format!("row {}: {days} days back", row.name)));
                }
                _ => {}
            }
        }
        for r in rows..ROWS {
            if self.weights[r][FORECAST_COLUMNS].iter().any(|w| *w != 0.0) {
                return Err(invalid(format!("forecast weights in unused row {r}")));
            }
        }
        if !(self.forecast.limit_kwh.is_finite() && self.forecast.limit_kwh > 0.0) {
            return Err(invalid("the forecast limit must be positive"));
        }
        let features = &self.anomaly.features;
        if features.len() > MAX_ANOMALY_FEATURES {
            return Err(invalid(format!(
                "{} anomaly features; at most {MAX_ANOMALY_FEATURES}",
                features.len()
            )));
        }
        for (f, feature) in features.iter().enumerate() {
            let name = &feature.name;
            if feature.edges.len() != BINS - 1
                || feature.edges.iter().any(|e| !e.is_finite())
                || feature.edges.windows(2).any(|w| w[0] > w[1])
            {
                return Err(invalid(format!(
                    "{name}: {} ascending finite edges expected",
                    BINS - 1
                )));
            }
            if feature.hours.is_empty()
                || feature.hours.iter().any(|h| *h > 23)
                || feature.hours.windows(2).any(|w| w[0] >= w[1])
            {
                return Err(invalid(format!(
                    "{name}: hours must be ascending within 0–23"
                )));
            }
            let column = ANOMALY_COLUMNS.start + f;
            let mut w: Vec<f64> = (0..BINS).map(|b| self.weights[b][column]).collect();
            if w.iter().any(|w| *w <= OUTPUT_TOLERANCE * 2.0) {
                return Err(invalid(format!("{name}: bin weights must be positive")));
            }
            w.sort_by(f64::total_cmp);
            if w.windows(2).any(|p| p[1] - p[0] < MIN_BIN_GAP * 0.999) {
                return Err(invalid(format!(
                    "{name}: bin weights closer than {MIN_BIN_GAP}"
                )));
            }
        }
        for column in ANOMALY_COLUMNS.skip(features.len()) {
            if (0..ROWS).any(|r| self.weights[r][column] != 0.0) {
                return Err(invalid(format!(
                    "weights in unused anomaly column {column}"
                )));
            }
        }
        let presence: Vec<f64> = (0..ROWS)
            .map(|r| self.weights[r][PRESENCE_COLUMN])
            .collect();
        if presence[0] != 1.0 || presence[1] != 2.0 || presence[2..].iter().any(|w| *w != 0.0) {
            return Err(invalid(
                "the presence column must weigh rows 0 and 1 by 1 and 2",
            ));
        }
        if !self.anomaly.flag_threshold.is_finite() {
            return Err(invalid("the flag threshold is not finite"));
        }
        Ok(())
    }

    /// `W[r][c]`: the weight of input row `r` in output column `c`.
    #[must_use]
    pub fn weight(&self, row: usize, column: usize) -> f64 {
        self.weights[row][column]
    }

    /// The forecast inputs `x[r][c]` for the day after `day` (rows of
    /// [`ForecastSpec::rows`]), or `None` without enough usable history.
    #[must_use]
    pub fn forecast_inputs(&self, history: &HomeHistory, day: NaiveDate) -> Option<Vec<[f64; 24]>> {
        let rows: Vec<ForecastInput> = self.forecast.rows.iter().map(|r| r.input).collect();
        forecast_inputs(
            &rows,
            history,
            day,
            self.history_days,
            self.min_history_days,
        )
    }

    /// The anomaly feature values of `day` (ratios to the home's usual), or `None` when the
    /// day is not usable or lacks history.
    #[must_use]
    pub fn anomaly_values(&self, history: &HomeHistory, day: NaiveDate) -> Option<Vec<f64>> {
        let defs: Vec<(AnomalyInput, &[u32])> = self
            .anomaly
            .features
            .iter()
            .map(|f| (f.input, f.hours.as_slice()))
            .collect();
        anomaly_values(
            &defs,
            history,
            day,
            self.history_days,
            self.min_history_days,
        )
    }

    /// The meter's preparation: the block for `day` from its history (forecast part for
    /// `day + 1`, anomaly part for `day`, presence flags).
    ///
    /// The forecast part needs `min_history_days` usable days among the `history_days` days
    /// ending on `day` (`day` itself may be missing: its lags are replaced by the usual); the
    /// anomaly part needs `day` usable and as many usable days among the `history_days` before
    /// it. A part that cannot be prepared is left at zero with its presence flag clear.
    ///
    /// # Errors
    /// [`DailyError::NotEnoughHistory`] when neither part can be prepared.
    pub fn prepare(&self, history: &HomeHistory, day: NaiveDate) -> Result<DailyInput, DailyError> {
        let mut values = vec![0.0; BLOCK];
        let forecast = self.forecast_inputs(history, day);
        if let Some(rows) = &forecast {
            for (r, x) in rows.iter().enumerate() {
                for (c, v) in x.iter().enumerate() {
                    values[slot(r, c)] = *v;
                }
            }
            values[slot(0, PRESENCE_COLUMN)] = 1.0;
        }
        let anomaly = self.anomaly_values(history, day);
        if let Some(features) = &anomaly {
            for (f, (v, feature)) in features.iter().zip(&self.anomaly.features).enumerate() {
                values[slot(feature.bin(*v), ANOMALY_COLUMNS.start + f)] = 1.0;
            }
            values[slot(1, PRESENCE_COLUMN)] = 1.0;
        }
        if forecast.is_none() && anomaly.is_none() {
            return Err(DailyError::NotEnoughHistory {
                day,
                reason: format!(
                    "fewer than {} usable days among the {} before it",
                    self.min_history_days, self.history_days
                ),
            });
        }
        DailyInput::try_new(day, values)
    }

    /// The plaintext twin of the circuit: output column `c` = `Σ_r W[r][c]·x[r][c]`.
    #[must_use]
    pub fn evaluate_plain(&self, input: &DailyInput) -> [f64; COLUMNS] {
        let mut out = [0.0; COLUMNS];
        for (c, o) in out.iter_mut().enumerate() {
            for r in 0..ROWS {
                *o += self.weight(r, c) * input.values()[crate::layout::slot(r, c)];
            }
        }
        out
    }

    /// The unrounded anomaly score of decrypted outputs (the sum of the feature outputs).
    #[must_use]
    pub fn anomaly_score(&self, outputs: &[f64]) -> f64 {
        ANOMALY_COLUMNS
            .take(self.anomaly.features.len())
            .filter_map(|c| outputs.get(c))
            .sum()
    }

    /// The bin whose weight `output` is (within [`OUTPUT_TOLERANCE`]) for feature `f`.
    fn bin_of_output(&self, f: usize, output: f64) -> Option<usize> {
        let column = ANOMALY_COLUMNS.start + f;
        (0..BINS).find(|b| (self.weights[*b][column] - output).abs() <= OUTPUT_TOLERANCE)
    }

    /// What leaves for one home-day from the block's decrypted outputs (row 0, [`COLUMNS`]
    /// values): forecasts rounded and clipped, the score, the flag, the explanation for a
    /// flagged day.
    ///
    /// # Errors
    /// [`Refusal::ImplausibleOutput`] when the outputs are implausible: not [`COLUMNS`] finite
    /// values, a presence code other than 0–3, a forecast beyond ± [`ForecastSpec::limit_kwh`],
    /// a feature output that is no bin's weight (a block that is not one-hot), a part the meter
    /// said it left empty that is not (near) zero. The key authority refuses the meter-day; the
    /// reason names the output but never its decrypted value (it goes into the audit log and
    /// the utility's response).
    pub fn release(&self, day: NaiveDate, outputs: &[f64]) -> Result<DailyRelease, Refusal> {
        let implausible = |reason: String| Refusal::ImplausibleOutput { reason };
        if outputs.len() != COLUMNS {
            return Err(implausible(format!(
                "{} outputs; expected {COLUMNS}",
                outputs.len()
            )));
        }
        if let Some(c) = outputs.iter().position(|v| !v.is_finite()) {
            return Err(implausible(format!("output {c} is not finite")));
        }
        let (has_forecast, has_anomaly) = decode_presence(outputs[PRESENCE_COLUMN])
            .ok_or_else(|| implausible("the presence code is not 0–3".to_owned()))?;
        let empty = |columns: std::ops::Range<usize>, what: &str| -> Result<(), Refusal> {
            match columns
                .clone()
                .find(|c| outputs[*c].abs() > OUTPUT_TOLERANCE)
            {
                Some(c) => Err(implausible(format!("output {c} is not zero in the {what}"))),
                None => Ok(()),
            }
        };
        let forecast = if has_forecast {
            let limit = self.forecast.limit_kwh;
            let mut hours = Vec::with_capacity(FORECAST_COLUMNS.len());
            for c in FORECAST_COLUMNS {
                let v = outputs[c];
                if v.abs() > limit {
                    return Err(implausible(format!(
                        "forecast hour {c} is beyond ±{limit:.3} kWh"
                    )));
                }
                let r = round_to(v, QUANTUM);
                hours.push(if r > 0.0 { r } else { 0.0 });
            }
            Some(hours)
        } else {
            empty(FORECAST_COLUMNS, "absent forecast part")?;
            None
        };
        let n = self.anomaly.features.len();
        empty(
            ANOMALY_COLUMNS.start + n..ANOMALY_COLUMNS.end,
            "unused anomaly columns",
        )?;
        let anomaly = if has_anomaly {
            let mut bins = Vec::with_capacity(n);
            for f in 0..n {
                let v = outputs[ANOMALY_COLUMNS.start + f];
                let bin = self.bin_of_output(f, v).ok_or_else(|| {
                    implausible(format!(
                        "feature {} output is no bin's weight (not one-hot)",
                        self.anomaly.features[f].name
                    ))
                })?;
                bins.push(bin);
            }
            let score = self.anomaly_score(outputs);
            let flagged = score >= self.anomaly.flag_threshold;
            let explanation = if flagged {
                self.explain(&bins, outputs)
            } else {
                Vec::new()
            };
            Some(AnomalyRelease {
                score: round_to(score, QUANTUM),
                flagged,
                explanation,
            })
        } else {
            empty(
                ANOMALY_COLUMNS.start..ANOMALY_COLUMNS.start + n,
                "absent anomaly part",
            )?;
            None
        };
        Ok(DailyRelease {
            day,
            forecast,
            anomaly,
        })
    }

    /// The features that lifted the score most above their typical output (at most
    /// [`MAX_EXPLANATION`], only those above it), with their bins as ranges of the usual.
    fn explain(&self, bins: &[usize], outputs: &[f64]) -> Vec<ExplanationItem> {
        let mut excess: Vec<(usize, f64)> = self
            .anomaly
            .features
            .iter()
            .enumerate()
            .map(|(f, feature)| {
                (
                    f,
                    outputs[ANOMALY_COLUMNS.start + f] - feature.typical_output,
                )
            })
            .filter(|(_, e)| *e > OUTPUT_TOLERANCE)
            .collect();
        excess.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        excess
            .into_iter()
            .take(MAX_EXPLANATION)
            .map(|(f, _)| {
                let feature = &self.anomaly.features[f];
                let (low, high) = feature.bin_range(bins[f]);
                ExplanationItem {
                    feature: feature.name.clone(),
                    hours: feature.hours.clone(),
                    usual_low: low,
                    usual_high: high,
                    text: sentence(feature, low, high),
                }
            })
            .collect()
    }

    /// The anomaly flag threshold (from training days only).
    #[must_use]
    pub fn flag_threshold(&self) -> f64 {
        self.anomaly.flag_threshold
    }
}

/// `01:00–05:00` for hours 1–4; `the day` for all 24; comma-separated runs otherwise.
pub fn hours_text(hours: &[u32]) -> String {
    if hours.len() == 24 {
        return "the day".to_owned();
    }
    let mut runs: Vec<(u32, u32)> = Vec::new();
    for &h in hours {
        match runs.last_mut() {
            Some((_, end)) if *end == h => *end = h + 1,
            _ => runs.push((h, h + 1)),
        }
    }
    runs.iter()
        .map(|(a, b)| format!("{a:02}:00–{:02}:00", b % 24))
        .collect::<Vec<_>>()
        .join(", ")
}

fn times(x: f64) -> String {
    let s = format!("{x:.2}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    format!("{s}×")
}

fn range_text(low: f64, high: f64) -> String {
    if low <= 0.0 {
        format!("less than {}", times(high))
    } else if high.is_infinite() {
        format!("more than {}", times(low))
    } else {
        format!("{}–{}", times(low).trim_end_matches('×'), times(high))
    }
}

/// The sentence shown to people for a feature in bin `[low, high)`.
fn sentence(feature: &AnomalyFeature, low: f64, high: f64) -> String {
    let when = hours_text(&feature.hours);
    let range = range_text(low, high);
    match feature.input {
        AnomalyInput::Energy if feature.hours.len() == 24 => {
            format!("the day's total was {range} usual")
        }
        AnomalyInput::Energy => format!("{when} used {range} its usual energy"),
        AnomalyInput::Peak => {
            format!("the most unusual hour of {when} stood {range} as high as it usually does")
        }
        AnomalyInput::Variation => {
            format!("the load changed hour to hour {range} as much as usual over {when}")
        }
        AnomalyInput::Share => format!("{when} took {range} its usual share of the day"),
        AnomalyInput::Contrast => {
            format!("{when}, against the day's heaviest other hour, was {range} its usual")
        }
        AnomalyInput::HourRatio => {
            format!("an hour of {when} used {range} that hour's usual energy")
        }
        AnomalyInput::MaxHour => {
            format!("the heaviest hour of {when} used {range} its usual heaviest hour")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::{TrainOptions, train};
    use chrono::Days;

    /// Deterministic synthetic days: a daily profile with weekly and pseudo-random variation.
    pub(crate) fn synthetic_days(n: u64) -> Vec<(NaiveDate, [f64; 24])> {
        let start = NaiveDate::from_ymd_opt(2009, 1, 1).unwrap();
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 11) as f64 / (1u64 << 53) as f64
        };
        (0..n)
            .map(|i| {
                let day = start + Days::new(i);
                let mut h = [0.0; 24];
                for (k, v) in h.iter_mut().enumerate() {
                    let base = 0.3 + 0.8 * (-(k as f64 - 19.0).powi(2) / 8.0).exp();
                    *v = base * (0.7 + 0.6 * next()) * if i % 7 >= 5 { 1.2 } else { 1.0 };
                }
                (day, h)
            })
            .collect()
    }

    fn model() -> DailyModel {
        train(&synthetic_days(240), &TrainOptions::default()).unwrap()
    }

    fn day(i: u64) -> NaiveDate {
        NaiveDate::from_ymd_opt(2009, 1, 1).unwrap() + Days::new(i)
    }

    #[test]
    fn training_is_deterministic_and_round_trips() {
        let a = model();
        let b = model();
        assert_eq!(a.to_json().unwrap(), b.to_json().unwrap());
        let back = DailyModel::from_json(&a.to_json().unwrap()).unwrap();
        assert_eq!(back, a);
        assert!(a.flag_threshold() > 0.0);
        let mut broken = a.clone();
        broken.weights[3][PRESENCE_COLUMN] = 1.0;
        assert!(broken.validate().is_err());
        let mut broken = a;
        broken.weights[2][ANOMALY_COLUMNS.start] = broken.weights[3][ANOMALY_COLUMNS.start];
        assert!(broken.validate().is_err(), "bins too close");
    }

    #[test]
    fn prepare_with_gaps_and_without_history() {
        let m = model();
        let days = synthetic_days(60);
        // Every third day missing in the last month: still ≥ 7 usable days.
        let gappy: Vec<_> = days
            .iter()
            .enumerate()
            .filter(|(i, _)| *i < 30 || i % 3 != 0)
            .map(|(_, d)| *d)
            .collect();
        let h = HomeHistory::from_hourly_days(&gappy).unwrap();
        let missing = day(57);
        assert!(h.day(missing).is_none());
        let input = m.prepare(&h, missing).unwrap();
        assert!(
            input.has_forecast(),
            "the eve's gap is bridged by the usual"
        );
        assert!(!input.has_anomaly(), "a missing day has no anomaly part");
        let input = m.prepare(&h, day(58)).unwrap();
        assert!(input.has_forecast() && input.has_anomaly());
        // One-hot per feature.
        for f in 0..m.anomaly.features.len() {
            let ones: f64 = (0..ROWS)
                .map(|r| input.values()[slot(r, ANOMALY_COLUMNS.start + f)])
                .sum();
            assert_eq!(ones, 1.0);
        }
        // Too little history: six days only.
        let h = HomeHistory::from_hourly_days(&days[..6]).unwrap();
        assert!(matches!(
            m.prepare(&h, day(5)),
            Err(DailyError::NotEnoughHistory { .. })
        ));
        // Seven days: the forecast part (context ends on the day), not the anomaly part.
        let h = HomeHistory::from_hourly_days(&days[..7]).unwrap();
        let input = m.prepare(&h, day(6)).unwrap();
        assert!(input.has_forecast() && !input.has_anomaly());
    }

    #[test]
    fn release_checks_presence_and_tampering() {
        let m = model();
        let days = synthetic_days(60);
        let h = HomeHistory::from_hourly_days(&days).unwrap();
        let input = m.prepare(&h, day(50)).unwrap();
        let out = m.evaluate_plain(&input);
        let r = m.release(day(50), &out).unwrap();
        let f = r.forecast.as_ref().unwrap();
        assert_eq!(f.len(), 24);
        assert!(f.iter().all(|v| *v >= 0.0 && round_to(*v, QUANTUM) == *v));
        let a = r.anomaly.as_ref().unwrap();
        assert_eq!(a.explanation.is_empty(), !a.flagged);
        // Small CKKS-like noise changes nothing beyond rounding.
        let noisy: Vec<f64> = out.iter().map(|v| v + 3e-6).collect();
        assert!(m.release(day(50), &noisy).is_ok());
        // A non-one-hot block: half in two bins.
        let mut values = input.values().to_vec();
        let c = ANOMALY_COLUMNS.start;
        for r in 0..ROWS {
            values[slot(r, c)] = 0.0;
        }
        values[slot(0, c)] = 0.5;
        values[slot(7, c)] = 0.5;
        let bad = DailyInput::try_new(day(50), values).unwrap();
        let err = m
            .release(day(50), &m.evaluate_plain(&bad))
            .unwrap_err()
            .to_string();
        assert!(err.contains("not one-hot"), "{err}");
        assert!(
            !err.contains("0.5"),
            "the refusal names no decrypted value: {err}"
        );
        // Bad presence codes, absent parts that are not empty, implausible forecasts.
        let mut o = out;
        o[PRESENCE_COLUMN] = 1.5;
        assert!(m.release(day(50), &o).is_err());
        let mut o = out;
        o[PRESENCE_COLUMN] = 2.0;
        assert!(
            m.release(day(50), &o)
                .unwrap_err()
                .to_string()
                .contains("absent forecast")
        );
        let mut o = out;
        o[3] = 10.0 * m.forecast.limit_kwh;
        assert!(m.release(day(50), &o).is_err());
        let mut o = out;
        o[5] = f64::NAN;
        assert!(m.release(day(50), &o).is_err());
        assert!(m.release(day(50), &out[..31]).is_err());
        let mut o = [0.0; COLUMNS];
        o[PRESENCE_COLUMN] = 0.0;
        let none = m.release(day(50), &o).unwrap();
        assert!(none.forecast.is_none() && none.anomaly.is_none());
    }

    #[test]
    fn flagged_days_are_explained() {
        let m = model();
        let mut days = synthetic_days(60);
        // A stuck register from 02:00: every hour the same.
        let v = days[50].1[2];
        for h in 2..24 {
            days[50].1[h] = v;
        }
        let h = HomeHistory::from_hourly_days(&days).unwrap();
        let out = m.evaluate_plain(&m.prepare(&h, day(50)).unwrap());
        let r = m.release(day(50), &out).unwrap();
        let a = r.anomaly.unwrap();
        assert!(a.flagged, "score {} vs {}", a.score, m.flag_threshold());
        assert!(!a.explanation.is_empty() && a.explanation.len() <= MAX_EXPLANATION);
        let names: Vec<&str> = a.explanation.iter().map(|e| e.feature.as_str()).collect();
        assert!(names.contains(&"variation"), "{names:?}");
        for e in &a.explanation {
            assert!(e.usual_low < e.usual_high && !e.text.is_empty());
        }
    }

    #[test]
    fn hours_read_well() {
        assert_eq!(hours_text(&[1, 2, 3, 4]), "01:00–05:00");
        assert_eq!(hours_text(&(0..24).collect::<Vec<_>>()), "the day");
        assert_eq!(hours_text(&[22, 23]), "22:00–00:00");
        assert_eq!(range_text(2.5, 3.1), "2.5–3.1×");
        assert_eq!(range_text(0.0, 0.2), "less than 0.2×");
        assert_eq!(range_text(4.8, f64::INFINITY), "more than 4.8×");
    }
}
