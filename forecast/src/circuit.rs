//! The encrypted forecaster: the model's forward pass on a CKKS ciphertext of a home's hourly
//! series, one forecast position per slot.
//!
//! # Layout
//!
//! The input is **one ciphertext per home**, the hourly analytics lane as the meter sends it:
//! slot `t` holds the (noisy) energy of hour `t` of the home's series, `t < n`, and the slots
//! after the series are zero. Slot `τ` of the output holds the forecast of hour `τ`
//! ([`ForecastModel::forecast_at`]): every input of that forecast is a right shift of the
//! series by at least the model's horizon `h`, so the output is meaningful for
//! `HISTORY ≤ τ < n + h`. One evaluation at `N32768_L19_SEC128` (16,384 slots) thus yields
//!
//! - the **one-step-ahead forecast of every hour** of a series of up to `16,384 − h` hours
//!   (the 2010 test period with its 171 hours of history is one ciphertext), including the
//!   next hour after its end (slot `n`) — the backtest the dashboard plots against the
//!   actual readings;
//! - with a **day-ahead model** (horizon 24, its own weights, `uci-lstm-day-ahead.json`):
//!   the forecasts of the 24 hours after the series' end, in slots `n … n + 23` (and the
//!   day-ahead backtest in the earlier slots). Recursively feeding one-step forecasts back
//!   would need a decryption (or 24 × 17 levels) per hour; a direct 24-hour-ahead model needs
//!   neither: it is the same circuit with every input at least 24 hours old.
//!
//! # Rotations
//!
//! The series is shifted right by every lag the model reads (`h … h+23`, `24 … 27`,
//! `168 … 171` hours) with rotations by the steps in [`ROTATION_STEPS`] only: each shift is
//! reached from the nearest shift already computed with the fewest steps (31 rotations for
//! the one-step model), then the linear forecast is shifted by 1, 2 and 3 hours. Slots
//! `τ < HISTORY` receive wrapped-around values: their output is meaningless and
//! [`forecasts_from_slots`] drops it.
//!
//! # Circuit (plaintext twin: [`ForecastModel::forward`])
//!
//! Scalar plaintext weights only, each hidden unit of each gate its own ciphertext:
//!
//! 1. `L = Σ_j a_j · y_{lag_j} + b` (one level), shifted by `3 − k` for step `k`;
//! 2. per step and gate unit, the activation `q(z) = a·z² + b·z + c` of
//!    `z = W x + U h + β` (normalisation folded into the weights; the inputs first brought
//!    down to the previous hidden state's level, so later steps run on smaller moduli) with
//!    the quadratic coefficient folded into the weights — one level for the linear form, one
//!    for the product: completing the square, `q = sign(a)·z̃² + c − b²/4a` with the single
//!    linear form `z̃ = √|a|·(z + b/2a)`; or, where `|b²/4a|` is large (`a` near zero, when
//!    the square would cancel large terms), `q = z · v + c` with the second form
//!    `v = a·z + b`;
//! 3. `c = f · c + i · g` and `h = o · c` — one level each.
//!
//! The read-out weights `σ·w_j` fold into the last step's output-gate polynomials, so the
//! output is `L + Σ_j o'_j · c_j + σ·β_out` with no extra level. Depth
//! [`ForecastModel::circuit_depth`] = 1 + 4·4 = **17** of the parameter set's 19; the input is
//! switched down to exactly 17 levels first so that every operation runs on the smallest
//! modulus that suffices. No decryption happens inside: the output ciphertext goes to the key
//! authority, which releases the forecasts.
//!
//! # Sum over homes
//!
//! Homes' series are separate ciphertexts aligned on the same hours (slot `t` = the same hour
//! for every home), so the forecast of the total load is the slot-wise sum of the homes'
//! output ciphertexts ([`sum_homes`]): additions only, no rotation, no level. (Homes packed
//! into blocks of one ciphertext would need rotations by the block size, which is outside
//! the allowed steps; release the per-home forecasts and sum them instead.)

use std::collections::BTreeMap;

use seer_ckks::{Ciphertext, Evaluator, Level, ParameterSet};

use crate::error::ForecastError;
use crate::model::{ForecastModel, Gate, HISTORY, INPUTS, STEPS, SeriesForecast, input_shifts};

/// Rotation steps (right by 1, 8, 32 and 128 slots) the circuit needs Galois keys for.
pub const ROTATION_STEPS: [i64; 4] = [-1, -8, -32, -128];

/// The parameter set the circuit is designed for (19 levels, 16,384 slots).
pub const PARAMETER_SET: ParameterSet = ParameterSet::N32768_L19_SEC128;

/// The longest series (hours) one ciphertext of `slots` slots can hold for this model: the
/// `horizon` slots after it receive the forecasts past its end.
pub fn max_series_len(model: &ForecastModel, slots: usize) -> usize {
    slots.saturating_sub(model.horizon())
}

/// A per-slot value that is either a public constant or a ciphertext.
enum Value {
    Const(f64),
    Ct(Ciphertext),
}

impl Value {
    fn add(self, ev: &Evaluator, other: Value) -> Result<Value, ForecastError> {
        Ok(match (self, other) {
            (Value::Const(a), Value::Const(b)) => Value::Const(a + b),
            (Value::Const(c), Value::Ct(x)) | (Value::Ct(x), Value::Const(c)) => {
                if c == 0.0 {
                    Value::Ct(x)
                } else {
                    Value::Ct(ev.add_scalar(&x, c)?)
                }
            }
            (Value::Ct(mut a), Value::Ct(b)) => {
                ev.add_assign(&mut a, &b)?;
                Value::Ct(a)
            }
        })
    }

    fn square(&self, ev: &Evaluator) -> Result<Value, ForecastError> {
        Ok(match self {
            Value::Const(a) => Value::Const(a * a),
            Value::Ct(x) => Value::Ct(ev.multiply(x, x)?),
        })
    }

    fn negate(self, ev: &Evaluator) -> Result<Value, ForecastError> {
        Ok(match self {
            Value::Const(a) => Value::Const(-a),
            Value::Ct(x) => Value::Ct(ev.negate(&x)?),
        })
    }

    fn mul(&self, ev: &Evaluator, other: &Value) -> Result<Value, ForecastError> {
        Ok(match (self, other) {
            (Value::Const(a), Value::Const(b)) => Value::Const(a * b),
            (Value::Const(c), Value::Ct(x)) | (Value::Ct(x), Value::Const(c)) => {
                if *c == 0.0 {
                    Value::Const(0.0)
                } else {
                    Value::Ct(ev.multiply_scalar(x, *c)?)
                }
            }
            (Value::Ct(a), Value::Ct(b)) => Value::Ct(ev.multiply(a, b)?),
        })
    }
}

/// How a gate polynomial `a·z² + b·z + c` is folded into the weights.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Fold {
    /// `sign(a)·(root·(z + shift))² + c − a·shift²` with `root = √|a|`, `shift = b / 2a`.
    Square { root: f64, shift: f64 },
    /// `z·(a·z + b) + c` (for `a` near zero, where completing the square would cancel large
    /// terms).
    Product,
}

/// The largest `|a|·shift²` (the constant cancelled by completing the square) accepted: above
/// it the square's CKKS error, which grows with its magnitude, is no longer negligible next to
/// the 1e-3 kWh the forecasts must keep.
const MAX_SQUARE_OFFSET: f64 = 64.0;

fn fold(a: f64, b: f64) -> Fold {
    if a == 0.0 {
        return Fold::Product;
    }
    let shift = b / (2.0 * a);
    if (a * shift * shift).abs() > MAX_SQUARE_OFFSET {
        return Fold::Product;
    }
    Fold::Square {
        root: a.abs().sqrt(),
        shift,
    }
}

/// `Σ weight · value + constant`, skipping zero weights (one level for the ciphertext terms).
fn linear(ev: &Evaluator, terms: &[(&Value, f64)], constant: f64) -> Result<Value, ForecastError> {
    let mut acc = Value::Const(constant);
    for (value, weight) in terms {
        if *weight == 0.0 {
            continue;
        }
        let term = value.mul(ev, &Value::Const(*weight))?;
        acc = acc.add(ev, term)?;
    }
    Ok(acc)
}

/// Right shifts of a ciphertext built from the steps of [`ROTATION_STEPS`].
struct Shifts {
    cache: BTreeMap<usize, Ciphertext>,
}

impl Shifts {
    fn new(base: Ciphertext) -> Self {
        Self {
            cache: BTreeMap::from([(0, base)]),
        }
    }

    /// Rotations needed to go from shift `from` to `to` (greedy in the allowed steps).
    fn cost(from: usize, to: usize) -> usize {
        let mut d = to - from;
        let mut n = 0;
        for step in ROTATION_STEPS
            .iter()
            .rev()
            .map(|s| s.unsigned_abs() as usize)
        {
            n += d / step;
            d %= step;
        }
        n
    }

    fn get(&mut self, ev: &Evaluator, shift: usize) -> Result<&Ciphertext, ForecastError> {
        if !self.cache.contains_key(&shift) {
            let from = self
                .cache
                .range(..shift)
                .map(|(p, _)| *p)
                .min_by_key(|p| (Self::cost(*p, shift), shift - p))
                .unwrap_or(0);
            let mut at = from;
            let mut ct = self.cache[&from].try_clone()?;
            for step in ROTATION_STEPS.iter().rev() {
                let size = step.unsigned_abs() as usize;
                while shift - at >= size {
                    ct = ev.rotate(&ct, *step)?;
                    at += size;
                    self.cache.insert(at, ct.try_clone()?);
                }
            }
        }
        Ok(&self.cache[&shift])
    }
}

/// Evaluates the model on the encrypted hourly series of one home; slot `τ` of the result
/// holds the forecast of hour `τ` (meaningful for `HISTORY ≤ τ < n + horizon`, see the
/// [module docs](self)). Needs relinearization keys and Galois keys for [`ROTATION_STEPS`].
pub fn evaluate(
    ev: &Evaluator,
    model: &ForecastModel,
    series: &Ciphertext,
) -> Result<Ciphertext, ForecastError> {
    model.validate()?;
    let depth = ForecastModel::circuit_depth();
    if series.level().0 < depth {
        return Err(ForecastError::DepthExceeded {
            needed: depth,
            available: series.level().0,
        });
    }
    let _span = tracing::debug_span!("forecast_circuit", depth, hidden = model.hidden()).entered();
    let h = model.horizon();
    let n = model.hidden();
    let (mean, std) = (model.normalization.mean, model.normalization.std);

    // Inputs: shifts of the series, the linear forecast and its shifts.
    let mut y = Shifts::new(ev.mod_switch_to(series, Level(depth))?);
    let mut lin_terms = Vec::with_capacity(model.linear.lags.len());
    for (lag, a) in model.linear.lags.iter().zip(&model.linear.coefficients) {
        lin_terms.push((Value::Ct(y.get(ev, *lag)?.try_clone()?), *a));
    }
    let refs: Vec<(&Value, f64)> = lin_terms.iter().map(|(v, a)| (v, *a)).collect();
    let l_value = linear(ev, &refs, model.linear.intercept)?;
    drop(lin_terms);
    let Value::Ct(l_ct) = l_value else {
        return Err(ForecastError::InvalidModel {
            reason: "the linear forecast has no non-zero coefficient".into(),
        });
    };
    let mut l = Shifts::new(l_ct);

    let mut hidden: Vec<Value> = (0..n).map(|_| Value::Const(0.0)).collect();
    let mut cell: Vec<Value> = (0..n).map(|_| Value::Const(0.0)).collect();
    for k in 0..STEPS {
        let _step = tracing::trace_span!("step", k).entered();
        let shifts = input_shifts(h, k);
        // The inputs are brought down to the hidden state's level first, so that the step's
        // linear forms run on the smallest modulus (and add without further alignment).
        let target = hidden
            .iter()
            .filter_map(|v| match v {
                Value::Ct(ct) => Some(ct.level()),
                Value::Const(_) => None,
            })
            .min();
        let x: Vec<Value> = (0..INPUTS)
            .map(|i| {
                let ct = if i == INPUTS - 1 {
                    l.get(ev, shifts[i])?
                } else {
                    y.get(ev, shifts[i])?
                };
                Ok(Value::Ct(match target {
                    Some(level) if level < ct.level() => {
                        ev.adjust_to(ct, level, ev.context().canonical_scale(level)?)?
                    }
                    _ => ct.try_clone()?,
                }))
            })
            .collect::<Result<_, ForecastError>>()?;
        let last = k == STEPS - 1;
        // Gate unit j as `z · v + c` with normalisation (and, for the last output gate, the
        // read-out weight `scale`) folded into the weights.
        let gate = |g: &Gate, j: usize, scale: f64| -> Result<Value, ForecastError> {
            let q = g.activation[j];
            let wx: Vec<f64> = g.w[j].iter().map(|w| w / std).collect();
            let beta = g.bias[j] - mean * wx.iter().sum::<f64>();
            let mut terms: Vec<(&Value, f64)> = x.iter().zip(&wx).map(|(v, w)| (v, *w)).collect();
            terms.extend(hidden.iter().zip(&g.u[j]).map(|(v, u)| (v, *u)));
            let (a, b, c) = (q.a * scale, q.b * scale, q.c * scale);
            match fold(a, b) {
                Fold::Square { root, shift } => {
                    // s·q(z) = ±(√|a|·(z + shift))² + c − a·shift²: one form, one square.
                    let scaled: Vec<(&Value, f64)> =
                        terms.iter().map(|(v, w)| (*v, w * root)).collect();
                    let zt = linear(ev, &scaled, (beta + shift) * root)?;
                    let sq = zt.square(ev)?;
                    let sq = if a < 0.0 { sq.negate(ev)? } else { sq };
                    sq.add(ev, Value::Const(c - a * shift * shift))
                }
                Fold::Product => {
                    // z · (a·z + b) + c: two forms, one product.
                    let z = linear(ev, &terms, beta)?;
                    let scaled: Vec<(&Value, f64)> =
                        terms.iter().map(|(v, w)| (*v, w * a)).collect();
                    let v = linear(ev, &scaled, a * beta + b)?;
                    z.mul(ev, &v)?.add(ev, Value::Const(c))
                }
            }
        };
        let mut next_hidden = Vec::with_capacity(n);
        let mut next_cell = Vec::with_capacity(n);
        for (j, previous) in cell.iter().enumerate() {
            let i_g = gate(&model.gates.input, j, 1.0)?;
            let g_g = gate(&model.gates.cell, j, 1.0)?;
            let mut c = i_g.mul(ev, &g_g)?;
            if k > 0 {
                let f_g = gate(&model.gates.forget, j, 1.0)?;
                c = f_g.mul(ev, previous)?.add(ev, c)?;
            }
            let scale = if last {
                std * model.readout.weights[j]
            } else {
                1.0
            };
            let o_g = gate(&model.gates.output, j, scale)?;
            next_hidden.push(o_g.mul(ev, &c)?);
            next_cell.push(c);
        }
        hidden = next_hidden;
        cell = next_cell;
    }
    drop(cell);
    // ŷ = L + Σ_j o'_j c_j + σ·β_out.
    let mut out = Value::Ct(l.get(ev, 0)?.try_clone()?);
    for v in hidden {
        out = out.add(ev, v)?;
    }
    match out.add(ev, Value::Const(std * model.readout.bias))? {
        Value::Ct(ct) => Ok(ct),
        Value::Const(_) => Err(ForecastError::InvalidModel {
            reason: "the forecast does not depend on the series".into(),
        }),
    }
}

/// The forecasts in the decrypted output slots of a series of `series_len` hours: positions
/// `HISTORY .. series_len + horizon`, the same as [`crate::forecast_series`] returns.
pub fn forecasts_from_slots(
    model: &ForecastModel,
    slots: &[f64],
    series_len: usize,
) -> Result<SeriesForecast, ForecastError> {
    let end = series_len + model.horizon();
    if end > slots.len() {
        return Err(ForecastError::InvalidInput {
            reason: format!(
                "a series of {series_len} hours needs {end} slots, the output has {}",
                slots.len()
            ),
        });
    }
    Ok(SeriesForecast {
        first: HISTORY,
        values: slots.get(HISTORY..end).unwrap_or(&[]).to_vec(),
    })
}

/// The forecast of the total load of several homes whose series are aligned on the same
/// hours: the slot-wise sum of their output ciphertexts (no level, no rotation).
pub fn sum_homes(ev: &Evaluator, outputs: &[Ciphertext]) -> Result<Ciphertext, ForecastError> {
    if outputs.is_empty() {
        return Err(ForecastError::InvalidInput {
            reason: "no homes to sum".into(),
        });
    }
    Ok(ev.add_many(outputs)?)
}

/// Checks that a series fits one ciphertext of `slots` slots and has a forecastable position.
pub fn check_series_len(
    model: &ForecastModel,
    series_len: usize,
    slots: usize,
) -> Result<(), ForecastError> {
    let max = max_series_len(model, slots);
    if series_len > max || series_len + model.horizon() <= HISTORY {
        return Err(ForecastError::InvalidSeries {
            reason: format!(
                "{series_len} hours: one ciphertext forecasts series of {}..={max} hours",
                HISTORY + 1 - model.horizon()
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folded_gates_equal_the_polynomial() {
        for (a, b, c) in [
            (0.3, 1.2, 0.0),
            (-0.07, 0.25, 0.5),
            (1e-4, 0.3, 0.5),
            (0.0, 0.25, 0.5),
        ] {
            for scale in [1.0, -0.4] {
                let (sa, sb, sc) = (a * scale, b * scale, c * scale);
                for z in [-3.0, -0.5, 0.0, 0.7, 2.5] {
                    let want = scale * (a * z * z + b * z + c);
                    let got = match fold(sa, sb) {
                        Fold::Square { root, shift } => {
                            let zt = root * (z + shift);
                            sa.signum() * zt * zt + sc - sa * shift * shift
                        }
                        Fold::Product => z * (sa * z + sb) + sc,
                    };
                    assert!(
                        (got - want).abs() < 1e-9,
                        "{a} {b} {c} {scale} {z}: {got} vs {want}"
                    );
                }
            }
        }
        assert_eq!(fold(1e-4, 0.3), Fold::Product);
        assert!(matches!(fold(-0.07, 0.25), Fold::Square { .. }));
    }

    #[test]
    fn shifts_use_few_rotations() {
        assert_eq!(Shifts::cost(0, 168), 3);
        assert_eq!(Shifts::cost(27, 28), 1);
        assert_eq!(Shifts::cost(0, 27), 6);
    }
}
