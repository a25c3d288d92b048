//! The second detector: a rolling z-score of daily totals, plaintext and encrypted.
//!
//! A day's score is `|T − μ| / σ` with μ and σ the mean and (population) standard deviation of
//! the previous `window` days' totals. Under encryption ([`ZScoreCircuit`]) it needs only the
//! day totals (additions of the hour planes), rotation sums over the window and two levels: the
//! circuit outputs `r = T − μ` and `v = mean(T²) − μ²` per slot, and the key authority releases
//! `|r| / √v` after decryption (so it sees `r` and `v`, two numbers about the home's recent
//! totals, where the forest shows it only a path-length sum). It is the cheap companion of the
//! forest: it catches theft and large spikes (totals far from the home's recent level) but not
//! shape changes at a constant total (load moved to the night, most stuck meters).

use seer_ckks::{Ciphertext, Evaluator, Level};

use crate::error::AnomalyError;
use crate::features::HOURS;

/// Rolling z-scores of `totals`; `None` for the first `window` days and for flat windows.
pub fn rolling_zscore(totals: &[f64], window: usize) -> Vec<Option<f64>> {
    (0..totals.len())
        .map(|i| {
            if window < 2 || i < window {
                return None;
            }
            let w = &totals[i - window..i];
            let mean = w.iter().sum::<f64>() / window as f64;
            let var = w.iter().map(|t| (t - mean).powi(2)).sum::<f64>() / window as f64;
            (var > 0.0).then(|| (totals[i] - mean).abs() / var.sqrt())
        })
        .collect()
}

/// The z-score from decrypted `r = T − μ` and `v = σ²` (what the key authority computes).
pub fn zscore_from_parts(residual: f64, variance: f64) -> Option<f64> {
    (variance > 1e-9).then(|| residual.abs() / variance.sqrt())
}

/// The encrypted rolling z-score over a power-of-two window, on the forest's hour planes
/// (slot `i` is day `i`; the first `window` slots of a home's block are history).
#[derive(Clone, Copy, Debug)]
pub struct ZScoreCircuit {
    window: usize,
}

/// The encrypted parts of the z-score, per slot.
#[derive(Debug)]
pub struct EncryptedZScore {
    /// `T − μ`.
    pub residual: Ciphertext,
    /// `mean(T²) − μ²` over the window.
    pub variance: Ciphertext,
}

impl ZScoreCircuit {
    /// Levels the circuit consumes.
    pub const DEPTH: u32 = 2;

    /// A circuit for a window of `window` days (a power of two, at least 2).
    pub fn try_new(window: usize) -> Result<Self, AnomalyError> {
        if window < 2 || !window.is_power_of_two() {
            return Err(AnomalyError::InvalidModel {
                reason: format!("z-score window {window} must be a power of two ≥ 2"),
            });
        }
        Ok(Self { window })
    }

    /// The window in days.
    pub fn window(&self) -> usize {
        self.window
    }

    /// Rotation steps it needs Galois keys for: −1, −2, …, −window/2.
    pub fn rotation_steps(&self) -> Vec<i64> {
        let mut steps = vec![-1];
        let mut k = 2;
        while k < self.window {
            steps.push(-(k as i64));
            k *= 2;
        }
        steps
    }

    /// `Σ_{k=1..window} x(i − k)` in every slot `i`.
    fn window_sum(&self, ev: &Evaluator, x: &Ciphertext) -> Result<Ciphertext, AnomalyError> {
        let mut acc = ev.rotate(x, -1)?;
        let mut k = 1;
        while k < self.window {
            acc = ev.add(&acc, &ev.rotate(&acc, -(k as i64))?)?;
            k *= 2;
        }
        Ok(acc)
    }

    /// Evaluates the circuit on 24 hour planes (switched down to the two levels it needs).
    pub fn evaluate(
        &self,
        ev: &Evaluator,
        planes: &[Ciphertext],
    ) -> Result<EncryptedZScore, AnomalyError> {
        if planes.len() != HOURS {
            return Err(AnomalyError::InvalidInput {
                reason: format!("{} hour planes, expected {HOURS}", planes.len()),
            });
        }
        let level = planes
            .iter()
            .map(Ciphertext::level)
            .min()
            .unwrap_or(Level(0));
        if level.0 < Self::DEPTH {
            return Err(AnomalyError::DepthExceeded {
                needed: Self::DEPTH,
                available: level.0,
            });
        }
        let start = Level(Self::DEPTH);
        let planes: Vec<Ciphertext> = planes
            .iter()
            .map(|p| ev.mod_switch_to(p, start))
            .collect::<Result<_, _>>()?;
        let total = ev.add_many(&planes)?;
        let inv = 1.0 / self.window as f64;
        let mean = ev.multiply_scalar(&self.window_sum(ev, &total)?, inv)?;
        let residual = ev.sub(&total, &mean)?;
        let squares = ev.multiply(&total, &total)?;
        let mean_square = ev.multiply_scalar(&self.window_sum(ev, &squares)?, inv)?;
        let variance = ev.sub(&mean_square, &ev.multiply(&mean, &mean)?)?;
        Ok(EncryptedZScore { residual, variance })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zscore_by_hand() {
        // Window [1, 3]: mean 2, σ 1; day 2 (value 5) has z = 3.
        let z = rolling_zscore(&[1.0, 3.0, 5.0, 3.0], 2);
        assert_eq!(z[0], None);
        assert_eq!(z[1], None);
        assert_eq!(z[2], Some(3.0));
        // Window [3, 5]: mean 4, σ 1; |3 − 4| = 1.
        assert_eq!(z[3], Some(1.0));
        assert_eq!(rolling_zscore(&[2.0, 2.0, 9.0], 2)[2], None);
        // The key authority's formula on the same parts: r = 3, v = 1.
        assert_eq!(zscore_from_parts(3.0, 1.0), Some(3.0));
        assert_eq!(zscore_from_parts(3.0, 0.0), None);
    }

    #[test]
    fn circuit_shape() {
        assert!(ZScoreCircuit::try_new(28).is_err());
        assert!(ZScoreCircuit::try_new(1).is_err());
        let c = ZScoreCircuit::try_new(32).unwrap();
        assert_eq!(c.rotation_steps(), vec![-1, -2, -4, -8, -16]);
        assert_eq!(c.window(), 32);
    }
}
