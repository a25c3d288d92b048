//! The stored forecaster and its plain-Rust forward pass (the oracle of the encrypted circuit).
//!
//! # Model
//!
//! To forecast the hour at position `τ` of a home's hourly series `y` (kWh) with horizon `h`
//! (1: one step ahead; 24: day ahead — every input is at least `h` hours old):
//!
//! - a fixed **linear forecast** `L(p) = Σ_j a_j · y(p − lag_j) + b` with lags `h … h+23` and
//!   168, fitted by ridge regression on the training period before the network is trained;
//! - a 4-step **LSTM cell with quadratic gates**: step `k = 0 … 3` covers hour
//!   `s_k = τ − h − 3 + k` and reads `x_k = [y(s_k), y(s_k + h − 24), y(s_k + h − 168),
//!   L(s_k + h)]`, normalised as `(x − μ) / σ`; every gate unit applies its own learned
//!   quadratic `q(z) = a·z² + b·z + c` to `z = W x + U h + β`:
//!   `i, f, g, o = q(z_i), q(z_f), q(z_g), q(z_o)`, `c_k = f ⊙ c_{k−1} + i ⊙ g`,
//!   `h_k = o ⊙ c_k` (no activation on the cell, `h_{−1} = c_{−1} = 0`);
//! - the **read-out** `ŷ(τ) = L(τ) + σ · (w · h_3 + β_out)`: the network corrects the linear
//!   forecast (a skip input).
//!
//! Relative to `τ` every input is a right shift of the series: `y` by `h+3−k`, `27−k` and
//! `171−k` hours and `L` by `3−k` hours, so positions `τ ≥ HISTORY = 171` have a forecast and
//! one slot-parallel evaluation forecasts them all (see [`crate::circuit`]).
//!
//! # Depth
//!
//! With `a` folded into the weights (completing the square, `q(z) = ±z̃² + c'` with
//! `z̃ = √|a|·(z + b/2a)` linear in the inputs, or a second form `v = a·z + b` and
//! `q(z) = z · v + c`: one product after the linear level) a step costs 4 levels:
//! the linear forms, the gate product, `i·g` (and `f·c`), `o·c`; the read-out weights fold
//! into the last output gate and the linear forecast costs one level: `1 + 4·4 = 17`.

use std::ops::Range;

use serde::{Deserialize, Serialize};

use crate::error::ForecastError;

/// Version of the JSON layout.
pub const FORMAT_VERSION: u32 = 1;
/// Time steps of the cell.
pub const STEPS: usize = 4;
/// Inputs per step: the load, the load a day and a week before the next hour, the linear
/// forecast of the next hour.
pub const INPUTS: usize = 4;
/// Hidden units of the committed models.
pub const HIDDEN: usize = 8;
/// The longest horizon a model may have (all inputs must be `h` hours old; the day-before
/// input `y(s_k + h − 24)` requires `h ≤ 24`).
pub const MAX_HORIZON: usize = 24;
/// The longest lag of the linear forecast.
pub const MAX_LAG: usize = 168;
/// Positions before this one have no forecast: the largest shift the inputs use
/// (`168 + STEPS − 1`).
pub const HISTORY: usize = MAX_LAG + STEPS - 1;
/// Names of the step inputs, in order.
pub const INPUT_NAMES: [&str; INPUTS] = [
    "load at the step's hour",
    "load 24 h before the step's next hour",
    "load 168 h before the step's next hour",
    "linear forecast of the step's next hour",
];

/// Lags of the linear forecast for horizon `h`: `h … h+23` and 168.
pub fn default_lags(horizon: usize) -> Vec<usize> {
    let mut lags: Vec<usize> = (horizon..horizon + 24).collect();
    if !lags.contains(&MAX_LAG) {
        lags.push(MAX_LAG);
    }
    lags
}

/// Right shifts (hours before the target) of step `k`'s inputs: the load, the day and week
/// loads (shifts of the series) and the linear forecast (a shift of `L`).
pub fn input_shifts(horizon: usize, k: usize) -> [usize; INPUTS] {
    let back = STEPS - 1 - k;
    [horizon + back, 24 + back, MAX_LAG + back, back]
}

/// A learned quadratic activation `q(z) = a·z² + b·z + c`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Quadratic {
    /// Coefficient of `z²`.
    pub a: f64,
    /// Coefficient of `z`.
    pub b: f64,
    /// Constant.
    pub c: f64,
}

impl Quadratic {
    /// `q(z)`, evaluated as `z·(a·z + b) + c` (the encrypted circuit's form).
    pub fn eval(&self, z: f64) -> f64 {
        z * (self.a * z + self.b) + self.c
    }
}

/// One gate: `q_j(W_j · x + U_j · h + β_j)` for each hidden unit `j`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Gate {
    /// Input weights, `hidden × INPUTS` (on normalised inputs).
    pub w: Vec<[f64; INPUTS]>,
    /// Recurrent weights, `hidden × hidden`.
    pub u: Vec<Vec<f64>>,
    /// Biases, one per unit.
    pub bias: Vec<f64>,
    /// The activation of each unit.
    pub activation: Vec<Quadratic>,
}

impl Gate {
    /// The pre-activation of unit `j`.
    pub fn pre_activation(&self, j: usize, x: &[f64; INPUTS], h: &[f64]) -> f64 {
        let mut z = self.bias[j];
        for (w, x) in self.w[j].iter().zip(x) {
            z += w * x;
        }
        for (u, h) in self.u[j].iter().zip(h) {
            z += u * h;
        }
        z
    }

    fn check(&self, name: &str, hidden: usize) -> Result<(), ForecastError> {
        let bad = |what: &str| {
            Err(ForecastError::InvalidModel {
                reason: format!("gate {name}: {what}"),
            })
        };
        if self.w.len() != hidden
            || self.u.len() != hidden
            || self.bias.len() != hidden
            || self.activation.len() != hidden
        {
            return bad(&format!(
                "expected {hidden} units in w, u, bias and activation"
            ));
        }
        if self.u.iter().any(|row| row.len() != hidden) {
            return bad(&format!("recurrent weights must be {hidden} × {hidden}"));
        }
        let values = self
            .w
            .iter()
            .flatten()
            .chain(self.u.iter().flatten())
            .chain(&self.bias)
            .chain(self.activation.iter().flat_map(|q| [&q.a, &q.b, &q.c]));
        if values.into_iter().any(|v| !v.is_finite()) {
            return bad("a parameter is not finite");
        }
        Ok(())
    }
}

/// The four gates, in the order of the cell equations.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Gates {
    /// Input gate `i`.
    pub input: Gate,
    /// Forget gate `f`.
    pub forget: Gate,
    /// Cell candidate `g`.
    pub cell: Gate,
    /// Output gate `o`.
    pub output: Gate,
}

impl Gates {
    /// The gates with their names.
    pub fn named(&self) -> [(&'static str, &Gate); 4] {
        [
            ("input", &self.input),
            ("forget", &self.forget),
            ("cell", &self.cell),
            ("output", &self.output),
        ]
    }
}

/// The fixed linear forecast `L(p) = Σ_j a_j · y(p − lag_j) + b`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LinearForecast {
    /// Lags, hours.
    pub lags: Vec<usize>,
    /// One coefficient per lag.
    pub coefficients: Vec<f64>,
    /// Intercept, kWh.
    pub intercept: f64,
    /// The ridge penalty it was fitted with (on the coefficients, not the intercept).
    pub ridge_lambda: f64,
}

impl LinearForecast {
    /// Ridge regression of `y(p)` on `y(p − lag)` over the targets `p ∈ targets`, by the
    /// normal equations (Cholesky).
    pub fn fit(
        series: &[f64],
        lags: &[usize],
        targets: Range<usize>,
        lambda: f64,
    ) -> Result<Self, ForecastError> {
        Self::fit_to(series, series, lags, targets, lambda)
    }

    /// As [`fit`](Self::fit) with regressors from `inputs` (e.g. the noisy analytics lane)
    /// and responses from `responses` (the true readings), aligned position by position.
    #[allow(clippy::needless_range_loop)] // index arithmetic of the normal equations
    pub fn fit_to(
        series: &[f64],
        responses: &[f64],
        lags: &[usize],
        targets: Range<usize>,
        lambda: f64,
    ) -> Result<Self, ForecastError> {
        let max_lag = lags.iter().copied().max().unwrap_or(0);
        if lags.is_empty()
            || targets.start < max_lag
            || targets.end > series.len()
            || targets.end > responses.len()
        {
            return Err(ForecastError::InvalidTraining {
                reason: format!(
                    "ridge fit: targets {targets:?} need lags up to {max_lag} within {} values",
                    series.len()
                ),
            });
        }
        let d = lags.len() + 1;
        let mut a = vec![vec![0.0; d]; d];
        let mut rhs = vec![0.0; d];
        let mut row = vec![0.0; d];
        for p in targets {
            for (r, lag) in row.iter_mut().zip(lags) {
                *r = series[p - lag];
            }
            row[d - 1] = 1.0;
            for i in 0..d {
                rhs[i] += row[i] * responses[p];
                for j in 0..=i {
                    a[i][j] += row[i] * row[j];
                }
            }
        }
        for i in 0..d {
            for j in 0..i {
                a[j][i] = a[i][j];
            }
            if i + 1 < d {
                a[i][i] += lambda;
            }
        }
        let w = solve_spd(a, rhs).ok_or_else(|| ForecastError::InvalidTraining {
            reason: "ridge fit: the normal equations are singular".into(),
        })?;
        Ok(Self {
            lags: lags.to_vec(),
            coefficients: w[..d - 1].to_vec(),
            intercept: w[d - 1],
            ridge_lambda: lambda,
        })
    }

    /// `L(p)`; needs `p ≥ max lag` and `p − min lag < series.len()`.
    pub fn at(&self, series: &[f64], p: usize) -> f64 {
        self.lags
            .iter()
            .zip(&self.coefficients)
            .fold(self.intercept, |acc, (lag, a)| acc + a * series[p - lag])
    }
}

/// Solves `A x = b` for a symmetric positive-definite `A` (Cholesky).
#[allow(clippy::needless_range_loop)] // index arithmetic of the factorisation
fn solve_spd(mut a: Vec<Vec<f64>>, mut b: Vec<f64>) -> Option<Vec<f64>> {
    let n = b.len();
    for j in 0..n {
        let mut d = a[j][j];
        for k in 0..j {
            d -= a[j][k] * a[j][k];
        }
        if d <= 0.0 || !d.is_finite() {
            return None;
        }
        let d = d.sqrt();
        a[j][j] = d;
        for i in j + 1..n {
            let mut s = a[i][j];
            for k in 0..j {
                s -= a[i][k] * a[j][k];
            }
            a[i][j] = s / d;
        }
    }
    for i in 0..n {
        let mut s = b[i];
        for k in 0..i {
            s -= a[i][k] * b[k];
        }
        b[i] = s / a[i][i];
    }
    for i in (0..n).rev() {
        let mut s = b[i];
        for k in i + 1..n {
            s -= a[k][i] * b[k];
        }
        b[i] = s / a[i][i];
    }
    Some(b)
}

/// Input normalisation `(x − mean) / std`, applied to every step input.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Normalization {
    /// Mean of the training loads, kWh.
    pub mean: f64,
    /// Standard deviation of the training loads, kWh (also the output scale).
    pub std: f64,
}

/// The read-out `ŷ = L(τ) + std · (weights · h + bias)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Readout {
    /// One weight per hidden unit.
    pub weights: Vec<f64>,
    /// Bias (in normalised units).
    pub bias: f64,
}

/// What the model is, for people reading the file (checked against the parameters on load).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Architecture {
    /// The cell type.
    pub cell: String,
    /// Time steps.
    pub steps: usize,
    /// Hidden units.
    pub hidden: usize,
    /// Hours between the newest input and the forecast hour.
    pub horizon: usize,
    /// The step inputs.
    pub inputs: Vec<String>,
    /// The activation polynomials.
    pub activation: String,
    /// The output.
    pub output: String,
    /// Multiplicative depth of the encrypted circuit.
    pub circuit_depth: u32,
    /// The CKKS parameter set the circuit is evaluated at.
    pub parameter_set: String,
}

/// Accuracy figures recorded at training time (kWh, mean absolute error).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// On the training targets.
    pub train_mae: f64,
    /// On the validation slice (the epoch was chosen on it).
    pub validation_mae: f64,
    /// On the test period, clean data (reported, never used for a choice).
    pub test_mae: f64,
    /// The linear forecast alone on the test period.
    pub test_linear_mae: f64,
}

/// Provenance of a trained model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelMeta {
    /// The data set.
    pub data: String,
    /// Training targets: first and last hour.
    pub train: [String; 2],
    /// Validation targets: first and last hour.
    pub validation: [String; 2],
    /// Test targets: first and last hour.
    pub test: [String; 2],
    /// ε per 15-minute reading of the analytics lane the inputs were noised with (`None`:
    /// trained on clean readings).
    pub epsilon: Option<f64>,
    /// The lane's clamp bound per 15-minute reading, Wh (with `epsilon`).
    pub sensitivity_wh: Option<i64>,
    /// Seed of initialisation, batching and noise.
    pub seed: u64,
    /// Epochs run.
    pub epochs: usize,
    /// The epoch whose weights were kept (lowest validation MAE), 1-based.
    pub best_epoch: usize,
    /// Mini-batch size.
    pub batch_size: usize,
    /// Adam's learning rate (cosine-annealed to zero).
    pub learning_rate: f64,
    /// The training loss.
    pub loss: String,
    /// The trainer.
    pub trainer: String,
    /// Accuracy.
    pub metrics: Metrics,
}

/// A forecaster: everything the forward pass and the circuit need, and its provenance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ForecastModel {
    /// [`FORMAT_VERSION`].
    pub format_version: u32,
    /// Description (checked).
    pub architecture: Architecture,
    /// Input normalisation.
    pub normalization: Normalization,
    /// The fixed linear forecast.
    pub linear: LinearForecast,
    /// The cell.
    pub gates: Gates,
    /// The read-out.
    pub readout: Readout,
    /// Provenance.
    pub meta: ModelMeta,
}

/// Forecasts of consecutive positions of a series.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesForecast {
    /// The position of `values[0]`.
    pub first: usize,
    /// Forecasts (kWh) of positions `first, first + 1, …`.
    pub values: Vec<f64>,
}

impl SeriesForecast {
    /// The forecast of position `p`, if there is one.
    pub fn get(&self, p: usize) -> Option<f64> {
        p.checked_sub(self.first)
            .and_then(|i| self.values.get(i))
            .copied()
    }

    /// Positions covered.
    pub fn positions(&self) -> Range<usize> {
        self.first..self.first + self.values.len()
    }
}

/// The raw step inputs of the forecast of position `target` for a linear forecast and horizon
/// (see [`ForecastModel::step_inputs`]).
pub fn step_inputs(
    linear: &LinearForecast,
    horizon: usize,
    series: &[f64],
    target: usize,
) -> Option<[[f64; INPUTS]; STEPS]> {
    if target < HISTORY || target >= series.len() + horizon {
        return None;
    }
    let mut x = [[0.0; INPUTS]; STEPS];
    for (k, xk) in x.iter_mut().enumerate() {
        let [load, day, week, lin] = input_shifts(horizon, k);
        *xk = [
            series[target - load],
            series[target - day],
            series[target - week],
            linear.at(series, target - lin),
        ];
    }
    Some(x)
}

/// The forecasts of every position of `series` with enough history, plus the `horizon`
/// positions after its end: positions `HISTORY .. series.len() + horizon` (empty when the
/// series is shorter than [`HISTORY`]).
pub fn forecast_series(model: &ForecastModel, series: &[f64]) -> SeriesForecast {
    let end = series.len() + model.horizon();
    let values = (HISTORY..end.max(HISTORY))
        .filter_map(|p| model.forecast_at(series, p))
        .collect();
    SeriesForecast {
        first: HISTORY,
        values,
    }
}

impl ForecastModel {
    /// The number of hidden units.
    pub fn hidden(&self) -> usize {
        self.readout.weights.len()
    }

    /// The horizon in hours.
    pub fn horizon(&self) -> usize {
        self.architecture.horizon
    }

    /// Levels the encrypted circuit consumes: one for the linear forecast, four per step.
    pub const fn circuit_depth() -> u32 {
        1 + 4 * STEPS as u32
    }

    /// The raw (unnormalised) inputs of the steps forecasting position `target`, or `None`
    /// when `target < HISTORY` or an input would lie past the end of the series.
    pub fn step_inputs(&self, series: &[f64], target: usize) -> Option<[[f64; INPUTS]; STEPS]> {
        step_inputs(&self.linear, self.horizon(), series, target)
    }

    /// The forward pass on raw step inputs; the linear forecast of the target is the last
    /// step's fourth input.
    pub fn forward(&self, x: &[[f64; INPUTS]; STEPS]) -> f64 {
        let n = self.hidden();
        let Normalization { mean, std } = self.normalization;
        let mut h = vec![0.0; n];
        let mut c = vec![0.0; n];
        for xk in x {
            let xn = xk.map(|v| (v - mean) / std);
            let mut next_h = vec![0.0; n];
            for j in 0..n {
                let act = |g: &Gate| g.activation[j].eval(g.pre_activation(j, &xn, &h));
                let (i, f, g, o) = (
                    act(&self.gates.input),
                    act(&self.gates.forget),
                    act(&self.gates.cell),
                    act(&self.gates.output),
                );
                c[j] = f * c[j] + i * g;
                next_h[j] = o * c[j];
            }
            h = next_h;
        }
        let net = self
            .readout
            .weights
            .iter()
            .zip(&h)
            .fold(self.readout.bias, |acc, (w, h)| acc + w * h);
        x[STEPS - 1][INPUTS - 1] + std * net
    }

    /// The forecast of position `target` of `series` (see [`step_inputs`](Self::step_inputs)).
    pub fn forecast_at(&self, series: &[f64], target: usize) -> Option<f64> {
        self.step_inputs(series, target).map(|x| self.forward(&x))
    }

    /// Checks dimensions, finiteness and that the description matches the parameters.
    pub fn validate(&self) -> Result<(), ForecastError> {
        let bad = |reason: String| Err(ForecastError::InvalidModel { reason });
        if self.format_version != FORMAT_VERSION {
            return bad(format!(
                "format version {} (this build reads {FORMAT_VERSION})",
                self.format_version
            ));
        }
        let n = self.hidden();
        if n == 0 {
            return bad("no hidden units".into());
        }
        let arch = &self.architecture;
        if arch.steps != STEPS {
            return bad(format!(
                "{} steps (this build evaluates {STEPS})",
                arch.steps
            ));
        }
        if arch.hidden != n {
            return bad(format!(
                "architecture says {} hidden units, the read-out has {n}",
                arch.hidden
            ));
        }
        if !(1..=MAX_HORIZON).contains(&arch.horizon) {
            return bad(format!(
                "horizon {} is not in 1..={MAX_HORIZON}",
                arch.horizon
            ));
        }
        if arch.circuit_depth != Self::circuit_depth() {
            return bad(format!(
                "architecture says depth {}, the circuit has {}",
                arch.circuit_depth,
                Self::circuit_depth()
            ));
        }
        for (name, gate) in self.gates.named() {
            gate.check(name, n)?;
        }
        let Normalization { mean, std } = self.normalization;
        if !(mean.is_finite() && std.is_finite() && std > 0.0) {
            return bad(format!("normalisation mean {mean}, std {std}"));
        }
        if !self.readout.bias.is_finite() || self.readout.weights.iter().any(|w| !w.is_finite()) {
            return bad("read-out is not finite".into());
        }
        let lin = &self.linear;
        if lin.lags.is_empty() || lin.lags.len() != lin.coefficients.len() {
            return bad("linear forecast: one coefficient per lag is needed".into());
        }
        if let Some(lag) = lin
            .lags
            .iter()
            .find(|l| **l < arch.horizon || **l > MAX_LAG)
        {
            return bad(format!(
                "linear forecast: lag {lag} outside {}..={MAX_LAG}",
                arch.horizon
            ));
        }
        let mut sorted = lin.lags.clone();
        sorted.sort_unstable();
        sorted.dedup();
        if sorted.len() != lin.lags.len() {
            return bad("linear forecast: duplicate lag".into());
        }
        if !lin.intercept.is_finite() || lin.coefficients.iter().any(|a| !a.is_finite()) {
            return bad("linear forecast is not finite".into());
        }
        Ok(())
    }

    /// Parses and validates a model file.
    pub fn from_json(json: &str) -> Result<Self, ForecastError> {
        let model: Self = serde_json::from_str(json)?;
        model.validate()?;
        Ok(model)
    }

    /// Reads and validates a model file.
    pub fn load(path: impl AsRef<std::path::Path>) -> Result<Self, ForecastError> {
        let path = path.as_ref();
        let json = std::fs::read_to_string(path).map_err(|e| ForecastError::InvalidModel {
            reason: format!("{}: {e}", path.display()),
        })?;
        Self::from_json(&json).map_err(|e| ForecastError::InvalidModel {
            reason: format!("{}: {e}", path.display()),
        })
    }

    /// The JSON form (pretty-printed, exact f64 round trip).
    pub fn to_json(&self) -> Result<String, ForecastError> {
        let mut s = serde_json::to_string_pretty(self)?;
        s.push('\n');
        Ok(s)
    }
}

/// Mean absolute error of forecasts against a series over `targets`.
pub fn mae(forecast: impl Fn(usize) -> f64, series: &[f64], targets: Range<usize>) -> f64 {
    let n = targets.len().max(1) as f64;
    targets
        .map(|p| (forecast(p) - series[p]).abs())
        .sum::<f64>()
        / n
}

/// The plaintext anchors on one split.
pub mod anchors {
    use super::{LinearForecast, Range};
    use crate::error::ForecastError;

    /// Persistence: `ŷ(τ) = y(τ − 1)`.
    pub fn persistence(series: &[f64], p: usize) -> f64 {
        series[p - 1]
    }

    /// Seasonal naive: `ŷ(τ) = y(τ − 24)`.
    pub fn seasonal_day(series: &[f64], p: usize) -> f64 {
        series[p - 24]
    }

    /// Ridge regression on lags 1–24, fitted on `train` targets.
    pub fn ridge_day(series: &[f64], train: Range<usize>) -> Result<LinearForecast, ForecastError> {
        let lags: Vec<usize> = (1..=24).collect();
        LinearForecast::fit(series, &lags, train, 1e-3)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ridge_recovers_a_linear_process() {
        use rand::{RngExt, SeedableRng};
        // y(t) = 0.5 y(t−1) + 0.2 y(t−24) + 0.3 + i.i.d. uniform noise.
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let mut y = vec![1.0; 24];
        for t in 24..2000 {
            let noise: f64 = rng.random::<f64>() - 0.5;
            y.push(0.5 * y[t - 1] + 0.2 * y[t - 24] + 0.3 + 0.1 * noise);
        }
        let fit = LinearForecast::fit(&y, &[1, 24], 24..2000, 0.0).unwrap();
        assert!((fit.coefficients[0] - 0.5).abs() < 0.05, "{fit:?}");
        assert!((fit.coefficients[1] - 0.2).abs() < 0.05, "{fit:?}");
        // Predictions match the direct dot product.
        let p = 1500;
        let direct =
            fit.intercept + fit.coefficients[0] * y[p - 1] + fit.coefficients[1] * y[p - 24];
        assert!((fit.at(&y, p) - direct).abs() < 1e-12);
    }

    #[test]
    fn shifts_cover_history() {
        for h in [1, 24] {
            for k in 0..STEPS {
                let s = input_shifts(h, k);
                assert!(s.iter().all(|v| *v <= HISTORY));
                assert!(s[0] >= h && s[1] >= h && s[2] >= h);
            }
        }
        assert_eq!(default_lags(1).len(), 25);
        assert_eq!(default_lags(24), (24..48).chain([168]).collect::<Vec<_>>());
    }
}
