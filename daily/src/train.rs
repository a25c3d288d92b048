//! Training a [`DailyModel`] from a home's days (pure Rust, deterministic, seconds on years).
//!
//! - **Forecaster**: for each hour `c` of the day, a ridge regression of the target day's
//!   hour `c` on the inputs `x[·][c]` the meter would prepare the evening before (same code,
//!   [`crate::features`]), solved by the normal equations (a 16 × 16 system per hour), then
//!   optionally a few rounds of iteratively reweighted least squares towards the absolute
//!   error (the day-ahead MAE is what is judged).
//! - **Detector**: per feature, 15 inner bin edges at training quantiles (fine in the tails,
//!   so the rare values get bins of their own), rounded to 2 significant digits; bin weight
//!   `−ln((count + α) / (n + 16α))`, then spread so that no two bins of a feature are closer
//!   than [`MIN_BIN_GAP`]; the flag threshold at the 95th percentile of the training days'
//!   scores. Training days only, never labels.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use crate::error::DailyError;
use crate::features::{AnomalyInput, ForecastInput, anomaly_values, forecast_inputs};
use crate::layout::{ANOMALY_COLUMNS, COLUMNS, MAX_ANOMALY_FEATURES, PRESENCE_COLUMN, ROWS};
use crate::model::{
    AnomalyFeature, AnomalySpec, BINS, DailyModel, FORMAT, ForecastRow, ForecastSpec, MIN_BIN_GAP,
    TrainingSummary,
};

/// An anomaly feature to train: name, definition and hours.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FeatureSpec {
    /// A short name (`night_energy`).
    pub name: String,
    /// What the meter computes.
    pub input: AnomalyInput,
    /// The hours it looks at (ascending, 0–23).
    pub hours: Vec<u32>,
}

impl FeatureSpec {
    /// A feature over `hours`.
    #[must_use]
    pub fn new(name: &str, input: AnomalyInput, hours: std::ops::Range<u32>) -> Self {
        Self {
            name: name.to_owned(),
            input,
            hours: hours.collect(),
        }
    }
}

/// What to train.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainOptions {
    /// The model's name.
    pub name: String,
    /// Its version.
    pub version: u32,
    /// Where the data come from (recorded in the model).
    pub data: String,
    /// Context days.
    pub history_days: u32,
    /// Fewest usable context days.
    pub min_history_days: u32,
    /// The forecast input rows.
    pub forecast_rows: Vec<ForecastRow>,
    /// Ridge penalty relative to the mean diagonal of `XᵀX`.
    pub ridge: f64,
    /// IRLS rounds towards absolute error (0: plain ridge).
    pub l1_rounds: u32,
    /// The anomaly features (at most 7).
    pub features: Vec<FeatureSpec>,
    /// The 15 quantiles of the inner bin edges.
    pub bin_quantiles: Vec<f64>,
    /// Additive smoothing of bin frequencies.
    pub alpha: f64,
    /// Significant digits of the bin edges.
    pub edge_digits: u32,
    /// Training-score quantile of the flag threshold.
    pub threshold_quantile: f64,
}

fn row(name: &str, input: ForecastInput) -> ForecastRow {
    ForecastRow {
        name: name.to_owned(),
        input,
    }
}

impl Default for TrainOptions {
    fn default() -> Self {
        use AnomalyInput as A;
        use ForecastInput as F;
        Self {
            name: "daily".to_owned(),
            version: 1,
            data: String::new(),
            history_days: 28,
            min_history_days: 7,
            forecast_rows: vec![
                row("level", F::Level),
                row("lag_1d", F::Lag { days: 1 }),
                row("lag_7d", F::Lag { days: 7 }),
                row("lag_1d_neighbourhood", F::LagNeighbourhood),
                row("last_hour", F::LastHour),
                row("day_mean", F::DayMean),
                row("evening_mean", F::EveningMean),
                row("profile_28d", F::Profile),
                row("weekday_profile", F::WeekdayProfile),
                row("profile_7d", F::RecentProfile { days: 7 }),
                row("weekend_level", F::WeekendLevel),
                row("weekend_profile", F::WeekendProfile),
                row("lag_2d", F::Lag { days: 2 }),
            ],
            ridge: 1e-3,
            l1_rounds: 8,
            features: vec![
                FeatureSpec::new("variation", A::Variation, 0..24),
                FeatureSpec::new("heaviest_hour", A::MaxHour, 0..24),
                FeatureSpec::new("night_energy", A::Energy, 1..5),
                FeatureSpec::new("night_contrast", A::Contrast, 1..5),
            ],
            bin_quantiles: vec![
                0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.98, 0.99, 0.995,
                0.998,
            ],
            alpha: 0.5,
            edge_digits: 2,
            threshold_quantile: 0.95,
        }
    }
}

fn bad(reason: impl Into<String>) -> DailyError {
    DailyError::InvalidTraining {
        reason: reason.into(),
    }
}

/// The `q`-quantile of sorted values (linear interpolation).
fn quantile(sorted: &[f64], q: f64) -> f64 {
    let pos = q.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let (i, frac) = (pos.floor() as usize, pos.fract());
    match sorted.get(i + 1) {
        Some(next) => sorted[i] + frac * (next - sorted[i]),
        None => sorted[i],
    }
}

fn round_significant(x: f64, digits: u32) -> f64 {
    if x == 0.0 || !x.is_finite() {
        return x;
    }
    let magnitude = x.abs().log10().floor() as i32;
    let factor = 10f64.powi(digits as i32 - 1 - magnitude);
    let r = (x * factor).round() / factor;
    // Kill representation noise (0.30000000000000004).
    format!("{r:.12}").parse().unwrap_or(r)
}

/// Solves `A x = b` (Gaussian elimination with partial pivoting); `None` if singular.
pub(crate) fn solve(mut a: Vec<Vec<f64>>, mut b: Vec<f64>) -> Option<Vec<f64>> {
    let n = b.len();
    for col in 0..n {
        let pivot = (col..n).max_by(|i, j| a[*i][col].abs().total_cmp(&a[*j][col].abs()))?;
        if a[pivot][col].abs() < 1e-12 {
            return None;
        }
        a.swap(col, pivot);
        b.swap(col, pivot);
        for r in col + 1..n {
            let f = a[r][col] / a[col][col];
            if f != 0.0 {
                let (upper, lower) = a.split_at_mut(r);
                for (x, p) in lower[0][col..n].iter_mut().zip(&upper[col][col..n]) {
                    *x -= f * p;
                }
                b[r] -= f * b[col];
            }
        }
    }
    let mut x = vec![0.0; n];
    for r in (0..n).rev() {
        let s: f64 = (r + 1..n).map(|k| a[r][k] * x[k]).sum();
        x[r] = (b[r] - s) / a[r][r];
    }
    Some(x)
}

/// Weighted ridge: `argmin Σ wᵢ (yᵢ − xᵢ·β)² + λ·mean(diag XᵀWX)·|β|²`.
pub(crate) fn ridge(xs: &[Vec<f64>], ys: &[f64], weights: &[f64], lambda: f64) -> Option<Vec<f64>> {
    let k = xs.first()?.len();
    let mut a = vec![vec![0.0; k]; k];
    let mut b = vec![0.0; k];
    for ((x, y), w) in xs.iter().zip(ys).zip(weights) {
        for i in 0..k {
            b[i] += w * x[i] * y;
            for j in i..k {
                a[i][j] += w * x[i] * x[j];
            }
        }
    }
    let mean_diag = (0..k).map(|i| a[i][i]).sum::<f64>() / k as f64;
    for i in 0..k {
        a[i][i] += lambda * mean_diag.max(1e-12);
        let (upper, lower) = a.split_at_mut(i);
        for (j, row) in upper.iter().enumerate() {
            lower[0][j] = row[i];
        }
    }
    solve(a, b)
}

/// A linear least-squares fit `y ≈ x·β`: ridge (penalty `lambda` relative to the mean
/// diagonal of `XᵀX`), then `rounds` of iteratively reweighted least squares towards the
/// absolute error. `None` for no data or a singular system. (The forecaster's fit, public for
/// the evaluation's anchors.)
#[must_use]
pub fn fit(xs: &[Vec<f64>], ys: &[f64], lambda: f64, rounds: u32) -> Option<Vec<f64>> {
    let mut w = vec![1.0; ys.len()];
    let mut beta = ridge(xs, ys, &w, lambda)?;
    for _ in 0..rounds {
        for ((wi, x), y) in w.iter_mut().zip(xs).zip(ys) {
            let r = y - x.iter().zip(&beta).map(|(a, b)| a * b).sum::<f64>();
            *wi = 1.0 / r.abs().max(0.05);
        }
        beta = ridge(xs, ys, &w, lambda)?;
    }
    Some(beta)
}

/// The bin weights of counts, spread to at least [`MIN_BIN_GAP`] apart (ties keep bin order).
fn bin_weights(counts: &[u64], n: usize, alpha: f64) -> Vec<f64> {
    let total = n as f64 + BINS as f64 * alpha;
    let raw: Vec<f64> = counts
        .iter()
        .map(|c| -((*c as f64 + alpha) / total).ln())
        .collect();
    let mut order: Vec<usize> = (0..raw.len()).collect();
    order.sort_by(|a, b| raw[*a].total_cmp(&raw[*b]).then(a.cmp(b)));
    let mut out = raw.clone();
    let mut previous = f64::NEG_INFINITY;
    for i in order {
        out[i] = raw[i].max(previous + MIN_BIN_GAP);
        previous = out[i];
    }
    out
}

/// Trains the `daily` model on a home's days (in date order, gaps allowed).
///
/// # Errors
/// [`DailyError::InvalidTraining`] for days out of order, negative or non-finite energies,
/// bad options, too few days to fit, or a singular system.
pub fn train(
    days: &[(NaiveDate, [f64; 24])],
    options: &TrainOptions,
) -> Result<DailyModel, DailyError> {
    if days.windows(2).any(|w| w[0].0 >= w[1].0) {
        return Err(bad("days must be in strictly increasing order"));
    }
    if days
        .iter()
        .any(|(_, h)| h.iter().any(|v| !v.is_finite() || *v < 0.0))
    {
        return Err(bad("an hour is negative or not finite"));
    }
    if options.forecast_rows.len() > ROWS || options.forecast_rows.is_empty() {
        return Err(bad(format!("1 ..= {ROWS} forecast rows")));
    }
    if options.features.len() > MAX_ANOMALY_FEATURES {
        return Err(bad(format!("at most {MAX_ANOMALY_FEATURES} features")));
    }
    if options.bin_quantiles.len() != BINS - 1
        || options.bin_quantiles.windows(2).any(|w| w[0] >= w[1])
    {
        return Err(bad(format!("{} ascending bin quantiles", BINS - 1)));
    }
    let (first, last) = match (days.first(), days.last()) {
        (Some(f), Some(l)) => (f.0, l.0),
        _ => return Err(bad("no days")),
    };
    let src: BTreeMap<NaiveDate, [f64; 24]> = days.iter().copied().collect();
    let (span, min) = (options.history_days, options.min_history_days);

    // Forecaster: one example per usable target day whose eve has a context.
    let inputs: Vec<ForecastInput> = options.forecast_rows.iter().map(|r| r.input).collect();
    let mut examples: Vec<(Vec<[f64; 24]>, [f64; 24])> = Vec::new();
    for (day, target) in days {
        let Some(eve) = day.pred_opt() else { continue };
        if let Some(x) = forecast_inputs(&inputs, &src, eve, span, min) {
            examples.push((x, *target));
        }
    }
    if examples.len() < 4 * ROWS {
        return Err(bad(format!("{} forecast examples", examples.len())));
    }
    let mut weights = vec![vec![0.0; COLUMNS]; ROWS];
    let mut abs_error = 0.0;
    for c in 0..24 {
        let xs: Vec<Vec<f64>> = examples
            .iter()
            .map(|(x, _)| x.iter().map(|r| r[c]).collect())
            .collect();
        let ys: Vec<f64> = examples.iter().map(|(_, t)| t[c]).collect();
        let beta = fit(&xs, &ys, options.ridge, options.l1_rounds)
            .ok_or_else(|| bad(format!("singular system at hour {c}")))?;
        for (r, b) in beta.iter().enumerate() {
            weights[r][c] = *b;
        }
        abs_error += xs
            .iter()
            .zip(&ys)
            .map(|(x, y)| {
                let f: f64 = x.iter().zip(&beta).map(|(a, b)| a * b).sum();
                (f.max(0.0) - y).abs()
            })
            .sum::<f64>();
    }
    let forecast_mae = abs_error / (24 * examples.len()) as f64;
    let max_hourly = days
        .iter()
        .flat_map(|(_, h)| h.iter().copied())
        .fold(0.0, f64::max);

    // Detector.
    let defs: Vec<(AnomalyInput, &[u32])> = options
        .features
        .iter()
        .map(|f| (f.input, f.hours.as_slice()))
        .collect();
    let values: Vec<Vec<f64>> = days
        .iter()
        .filter_map(|(d, _)| anomaly_values(&defs, &src, *d, span, min))
        .collect();
    let n = values.len();
    if n < 10 * BINS {
        return Err(bad(format!("{n} days with a context for the detector")));
    }
    let mut features = Vec::with_capacity(options.features.len());
    let mut outputs = vec![0.0; n];
    for (f, spec) in options.features.iter().enumerate() {
        let mut sorted: Vec<f64> = values.iter().map(|v| v[f]).collect();
        sorted.sort_by(f64::total_cmp);
        let edges: Vec<f64> = options
            .bin_quantiles
            .iter()
            .map(|q| round_significant(quantile(&sorted, *q), options.edge_digits))
            .collect();
        let mut feature = AnomalyFeature {
            name: spec.name.clone(),
            input: spec.input,
            hours: spec.hours.clone(),
            edges,
            counts: vec![0; BINS],
            typical_output: 0.0,
        };
        let bins: Vec<usize> = values.iter().map(|v| feature.bin(v[f])).collect();
        for b in &bins {
            feature.counts[*b] += 1;
        }
        let w = bin_weights(&feature.counts, n, options.alpha);
        let column = ANOMALY_COLUMNS.start + f;
        for (b, wb) in w.iter().enumerate() {
            weights[b][column] = *wb;
        }
        let mut out: Vec<f64> = bins.iter().map(|b| w[*b]).collect();
        for (o, v) in outputs.iter_mut().zip(&out) {
            *o += v;
        }
        out.sort_by(f64::total_cmp);
        feature.typical_output = out[(out.len() - 1) / 2];
        features.push(feature);
    }
    outputs.sort_by(f64::total_cmp);
    let flag_threshold = quantile(&outputs, options.threshold_quantile);
    weights[0][PRESENCE_COLUMN] = 1.0;
    weights[1][PRESENCE_COLUMN] = 2.0;

    let model = DailyModel {
        format: FORMAT.to_owned(),
        name: options.name.clone(),
        version: options.version,
        data: options.data.clone(),
        training_period: (first, last),
        history_days: span,
        min_history_days: min,
        forecast: ForecastSpec {
            rows: options.forecast_rows.clone(),
            ridge: options.ridge,
            l1_rounds: options.l1_rounds,
            limit_kwh: 4.0 * max_hourly.max(0.25),
        },
        anomaly: AnomalySpec {
            features,
            bin_quantiles: options.bin_quantiles.clone(),
            alpha: options.alpha,
            edge_digits: options.edge_digits,
            threshold_quantile: options.threshold_quantile,
            flag_threshold,
        },
        weights,
        training: TrainingSummary {
            forecast_days: examples.len(),
            anomaly_days: n,
            forecast_mae_kwh: forecast_mae,
            max_hourly_kwh: max_hourly,
            median_score: quantile(&outputs, 0.5),
        },
        evaluation: BTreeMap::new(),
        evaluation_protocol: String::new(),
    };
    model.validate()?;
    Ok(model)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn solve_and_ridge() {
        let x = solve(vec![vec![2.0, 1.0], vec![1.0, 3.0]], vec![3.0, 5.0]).unwrap();
        assert!((x[0] - 0.8).abs() < 1e-12 && (x[1] - 1.4).abs() < 1e-12);
        assert!(solve(vec![vec![1.0, 2.0], vec![2.0, 4.0]], vec![1.0, 2.0]).is_none());
        let xs: Vec<Vec<f64>> = (0..50).map(|i| vec![1.0, f64::from(i)]).collect();
        let ys: Vec<f64> = (0..50).map(|i| 2.0 + 0.5 * f64::from(i)).collect();
        let b = fit(&xs, &ys, 0.0, 3).unwrap();
        assert!(
            (b[0] - 2.0).abs() < 1e-6 && (b[1] - 0.5).abs() < 1e-6,
            "{b:?}"
        );
    }

    #[test]
    fn bin_weights_are_positive_and_apart() {
        let w = bin_weights(
            &[10, 10, 10, 0, 0, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 20],
            100,
            0.5,
        );
        let mut s = w.clone();
        s.sort_by(f64::total_cmp);
        assert!(s[0] > 0.0);
        assert!(s.windows(2).all(|p| p[1] - p[0] >= MIN_BIN_GAP - 1e-12));
        assert!(w[15] < w[0], "the fullest bin weighs least");
    }

    #[test]
    fn significant_rounding() {
        assert_eq!(round_significant(0.123_456, 2), 0.12);
        assert_eq!(round_significant(3.149, 2), 3.1);
        assert_eq!(round_significant(25.6, 2), 26.0);
    }
}
