//! The registered `anomaly` computation, exactly as both the utility (which evaluates it) and
//! the key authority (which re-executes, decrypts and releases it) run it.
//!
//! - [`RegisteredAnomaly::evaluate`]: the forest scorer and the rolling z-score on the same 24
//!   hour planes, as one ordered list of outputs: the path-length sum, the per-feature
//!   isolation credits, the z-score's residual and variance. Outputs the model makes public
//!   (a constant credit) are [`EncryptedValue::Public`]; the others are ciphertexts, which
//!   the key authority compares byte for byte with the utility's, in this order.
//! - [`RegisteredAnomaly::release_slot`]: what leaves the key authority for one day (slot)
//!   from the decrypted outputs: the score rounded to [`SCORE_QUANTUM`], the flag, the z-score
//!   rounded likewise and, for flagged days only, the explanation (the leading features with
//!   their rounded excess share, and their hours). Path sums, credits, residuals and
//!   variances never leave.
//!
//! A slot's outputs depend only on the slot and the seven before it (the forest's previous
//! week) or the `window` before it (the z-score), so in a block of consecutive days of one
//! home the first [`HISTORY_DAYS`] slots get no forest release and the first `window` no
//! z-score.

use seer_ckks::{Ciphertext, Evaluator};
use serde::{Deserialize, Serialize};

use crate::circuit::{EncryptedScorer, EncryptedValue, ROTATION_STEPS};
use crate::error::AnomalyError;
use crate::features::{HISTORY_DAYS, HOURS};
use crate::model::AnomalyModel;
use crate::zscore::{ZScoreCircuit, zscore_from_parts};

/// Released scores and z-scores are rounded to multiples of this.
pub const SCORE_QUANTUM: f64 = 0.001;

/// The z-score window the key authority and the utility use unless configured otherwise.
pub const DEFAULT_ZSCORE_WINDOW: usize = 32;

/// `x` rounded to a multiple of `quantum`.
#[must_use]
pub fn round_to(x: f64, quantum: f64) -> f64 {
    let r = (x / quantum).round() * quantum;
    // Kill representation noise such as 0.30000000000000004.
    (r * 1e9).round() / 1e9
}

/// One feature of a released explanation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReleasedFeature {
    /// The feature's name.
    pub name: String,
    /// Its excess share of isolating splits over a training day, rounded to 0.001.
    pub excess: f64,
}

/// What is released for one day.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SlotRelease {
    /// The score, rounded to [`SCORE_QUANTUM`].
    pub score: f64,
    /// `score ≥ flag threshold` (on the unrounded score).
    pub flagged: bool,
    /// The rolling z-score of the daily total, rounded; `None` without a full window of
    /// history in the block or for a flat window.
    pub zscore: Option<f64>,
    /// Flagged days only: the leading features.
    pub explanation: Vec<ReleasedFeature>,
    /// Flagged days only: the hours the leading features use.
    pub explanation_hours: Vec<u32>,
}

/// The model and the z-score window of the registered computation.
#[derive(Clone, Debug)]
pub struct RegisteredAnomaly {
    model: AnomalyModel,
    zscore: ZScoreCircuit,
}

impl RegisteredAnomaly {
    /// The computation for `model` with a z-score over `zscore_window` days (a power of two).
    ///
    /// # Errors
    /// [`AnomalyError::InvalidModel`] for an invalid model or window.
    pub fn try_new(model: AnomalyModel, zscore_window: usize) -> Result<Self, AnomalyError> {
        model.validate()?;
        Ok(Self {
            model,
            zscore: ZScoreCircuit::try_new(zscore_window)?,
        })
    }

    /// The model.
    #[must_use]
    pub fn model(&self) -> &AnomalyModel {
        &self.model
    }

    /// The z-score window in days.
    #[must_use]
    pub fn zscore_window(&self) -> usize {
        self.zscore.window()
    }

    /// Inputs per meter: the 24 hour planes.
    #[must_use]
    pub fn inputs_per_meter(&self) -> usize {
        HOURS
    }

    /// Slots at the start of a block that only serve as history (no forest release).
    #[must_use]
    pub fn history(&self) -> usize {
        HISTORY_DAYS
    }

    /// Levels the inputs need.
    #[must_use]
    pub fn depth(&self) -> u32 {
        self.model.circuit_depth().max(ZScoreCircuit::DEPTH)
    }

    /// Rotation steps the computation needs Galois keys for.
    #[must_use]
    pub fn galois_steps(&self) -> Vec<i64> {
        let mut steps: Vec<i64> = ROTATION_STEPS
            .iter()
            .copied()
            .chain(self.zscore.rotation_steps())
            .collect();
        steps.sort_unstable();
        steps.dedup();
        steps
    }

    /// The range every hour value lies in (the meter clamps to it on both lanes).
    #[must_use]
    pub fn hour_range(&self) -> (f64, f64) {
        self.model.hour_range
    }

    /// Evaluates the computation on 24 hour planes: `[path_sum, credit_0 … credit_{F−1},
    /// residual, variance]`. Blocking and CPU-heavy.
    ///
    /// # Errors
    /// When the inputs are malformed or an operation fails.
    pub fn evaluate(
        &self,
        evaluator: &Evaluator,
        planes: &[Ciphertext],
    ) -> Result<Vec<EncryptedValue>, AnomalyError> {
        let scorer = EncryptedScorer::try_new(&self.model, evaluator)?;
        let scores = scorer.score(planes)?;
        let z = self.zscore.evaluate(evaluator, planes)?;
        let mut out = Vec::with_capacity(self.output_count());
        out.push(EncryptedValue::Encrypted(scores.path_sum));
        out.extend(scores.isolation_credit);
        out.push(EncryptedValue::Encrypted(z.residual));
        out.push(EncryptedValue::Encrypted(z.variance));
        Ok(out)
    }

    /// Number of outputs of [`RegisteredAnomaly::evaluate`].
    #[must_use]
    pub fn output_count(&self) -> usize {
        self.model.features.len() + 3
    }

    /// The release of slot `slot` from the decrypted outputs (`outputs[k][slot]`, public
    /// outputs filled with their constant), where the slot is the `position`-th of its block.
    /// `None` for a history position (`position < HISTORY_DAYS`).
    #[must_use]
    pub fn release_slot(
        &self,
        outputs: &[Vec<f64>],
        slot: usize,
        position: usize,
    ) -> Option<SlotRelease> {
        if position < HISTORY_DAYS || outputs.len() != self.output_count() {
            return None;
        }
        let f = self.model.features.len();
        let at = |k: usize| outputs[k].get(slot).copied().unwrap_or(f64::NAN);
        let raw = self.model.score_from_path_sum(at(0));
        let flagged = raw >= self.model.flag_threshold;
        let zscore = (position >= self.zscore.window())
            .then(|| zscore_from_parts(at(f + 1), at(f + 2)))
            .flatten()
            .map(|z| round_to(z, SCORE_QUANTUM));
        let (explanation, explanation_hours) = if flagged {
            let credits: Vec<f64> = (1..=f).map(at).collect();
            let e = self.model.explain(&credits);
            let top = e.features.first().map_or(0.0, |x| x.1);
            let leading = e
                .features
                .iter()
                .filter(|(_, x)| *x > 0.0 && *x >= top / 2.0)
                .map(|(name, x)| ReleasedFeature {
                    name: name.clone(),
                    excess: round_to(*x, SCORE_QUANTUM),
                })
                .collect();
            (leading, e.hours.iter().map(|h| *h as u32).collect())
        } else {
            (Vec::new(), Vec::new())
        };
        Some(SlotRelease {
            score: round_to(raw, SCORE_QUANTUM),
            flagged,
            zscore,
            explanation,
            explanation_hours,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding() {
        assert_eq!(round_to(0.12345, 0.001), 0.123);
        assert_eq!(round_to(0.1235001, 0.001), 0.124);
        assert_eq!(round_to(-2.0004, 0.001), -2.0);
    }
}
