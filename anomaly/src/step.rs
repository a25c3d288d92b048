//! The smooth step that replaces every comparison: a composite of odd polynomials.
//!
//! A split `z > 0` (with `z` normalized into `[−1, 1]`, see
//! [`FeatureDef::normalizer`](crate::features::FeatureDef::normalizer)) becomes
//! `s(z) = (1 + P(z)) / 2` with `P = g ∘ g ∘ … ∘ g`, where
//!
//! `g(x) = (45x − 85x³ + 91x⁵ − 35x⁷) / 16`
//!
//! is the odd degree-7 polynomial with `g(1) = 1`, `g′ ≥ 0` on `[−1, 1]` (so `g` maps
//! `[−1, 1]` monotonically onto itself and compositions never leave it) and the steepest
//! possible slope at 0 among polynomials with `g′(x) = a(1 − x²)(1 − bx²)²` (`a = 45/16`,
//! `b = 7/3`; Cheon et al.'s `f₃` is the case `b = 1`, slope 35/16). Each stage costs 3 levels
//! (`⌈log2 8⌉`) and multiplies the slope at 0 by 2.81: `k` stages give slope `2.81^k`, i.e. the
//! step rises from 0.05 to 0.95 over `|z| ≲ 1.4 / 2.81^k`.
//!
//! The factor 1/2 is folded into the last stage's coefficients and the 1/2 added afterwards
//! is free, so the step costs exactly `3k` levels. The plaintext twin ([`StepApprox::eval`])
//! runs the same stages in the same order in `f64`.

use serde::{Deserialize, Serialize};

use crate::error::AnomalyError;

/// The coefficients of `g` (lowest degree first).
pub const G7: [f64; 8] = [
    0.0,
    45.0 / 16.0,
    0.0,
    -85.0 / 16.0,
    0.0,
    91.0 / 16.0,
    0.0,
    -35.0 / 16.0,
];

/// The coefficients of the degree-15 stage: the odd polynomial with `g(1) = 1`,
/// `g′(x) = a(1 − x²)·q(x²)²` (so monotone on `[−1, 1]`) and the steepest slope at 0 among
/// those, `a = 5.383` (found by minimizing `∫₀¹ (1 − x²) q(x²)² dx` with `q(0) = 1`: a 4 × 4
/// linear system, solved exactly). Four levels; the sum of its coefficients' magnitudes is
/// 4072, which bounds how much it amplifies CKKS noise.
pub const G15: [f64; 16] = [
    0.0,
    5.383_300_781_25,
    0.0,
    -41.271_972_656_25,
    0.0,
    215.547_363_281_25,
    0.0,
    -652.346_191_406_25,
    0.0,
    1_158.872_558_593_75,
    0.0,
    -1_192.108_886_718_75,
    0.0,
    656.696_777_343_75,
    0.0,
    -149.772_949_218_75,
];

/// A smooth step `s(z) = (1 + P(z)) / 2` with `P` a composite of polynomial stages.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepApprox {
    /// The stages, applied first to last, each as coefficients lowest degree first.
    pub stages: Vec<Vec<f64>>,
}

impl StepApprox {
    /// `k` stages of [`G7`].
    pub fn g7(k: usize) -> Result<Self, AnomalyError> {
        if k == 0 {
            return Err(AnomalyError::InvalidModel {
                reason: "a step needs at least one stage".into(),
            });
        }
        Ok(Self {
            stages: vec![G7.to_vec(); k],
        })
    }

    /// `k ≥ 1` stages of [`G7`] (`k = 0` is taken as 1).
    pub fn g7_stages(k: usize) -> Self {
        Self {
            stages: vec![G7.to_vec(); k.max(1)],
        }
    }

    /// Stages from a spec like `g15,g15,g7`.
    pub fn from_spec(spec: &str) -> Result<Self, AnomalyError> {
        let stages = spec
            .split(',')
            .map(|name| match name.trim() {
                "g7" => Ok(G7.to_vec()),
                "g15" => Ok(G15.to_vec()),
                other => Err(AnomalyError::InvalidModel {
                    reason: format!("unknown step stage {other:?} (g7 or g15)"),
                }),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let step = Self { stages };
        step.validate()?;
        Ok(step)
    }

    /// Checks the stages: at least one, each of degree ≥ 1 with finite coefficients.
    pub fn validate(&self) -> Result<(), AnomalyError> {
        if self.stages.is_empty() {
            return Err(AnomalyError::InvalidModel {
                reason: "a step needs at least one stage".into(),
            });
        }
        for stage in &self.stages {
            seer_ckks::Polynomial::try_new(stage.clone()).map_err(|e| {
                AnomalyError::InvalidModel {
                    reason: format!("step stage: {e}"),
                }
            })?;
        }
        Ok(())
    }

    /// The stages as they are evaluated: the last one scaled by 1/2 (add 1/2 afterwards).
    pub fn circuit_stages(&self) -> Result<Vec<seer_ckks::Polynomial>, AnomalyError> {
        self.validate()?;
        let last = self.stages.len() - 1;
        self.stages
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let coeffs = if i == last {
                    s.iter().map(|c| c * 0.5).collect()
                } else {
                    s.clone()
                };
                Ok(seer_ckks::Polynomial::try_new(coeffs)?)
            })
            .collect()
    }

    /// Levels the step consumes under encryption.
    pub fn depth(&self) -> u32 {
        self.stages
            .iter()
            .map(|s| ((s.len() as f64).log2().ceil()) as u32)
            .sum()
    }

    /// The plaintext twin: the stages in `f64`, the last one halved, plus 1/2.
    pub fn eval(&self, z: f64) -> f64 {
        let last = self.stages.len().saturating_sub(1);
        let mut x = z;
        for (i, stage) in self.stages.iter().enumerate() {
            let scale = if i == last { 0.5 } else { 1.0 };
            x = stage.iter().rev().fold(0.0, |acc, c| acc * x + c * scale);
        }
        x + 0.5
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn g7_is_a_monotone_self_map_of_the_unit_interval() {
        let g = |x: f64| G7.iter().rev().fold(0.0, |acc, c| acc * x + c);
        assert!((g(1.0) - 1.0).abs() < 1e-15);
        assert!((g(-1.0) + 1.0).abs() < 1e-15);
        let mut prev = g(-1.0);
        for i in 1..=2000 {
            let x = -1.0 + i as f64 / 1000.0;
            let y = g(x);
            assert!(y >= prev - 1e-15, "not monotone at {x}");
            assert!(y.abs() <= 1.0 + 1e-12);
            prev = y;
        }
        // Slope 45/16 at 0.
        assert!(((g(1e-6) - g(-1e-6)) / 2e-6 - 45.0 / 16.0).abs() < 1e-6);
    }

    #[test]
    fn g15_is_a_monotone_self_map_with_its_stated_slope() {
        let g = |x: f64| G15.iter().rev().fold(0.0, |acc, c| acc * x + c);
        assert!((g(1.0) - 1.0).abs() < 1e-9);
        let mut prev = g(-1.0);
        for i in 1..=4000 {
            let x = -1.0 + i as f64 / 2000.0;
            let y = g(x);
            assert!(y >= prev - 1e-9, "not monotone at {x}");
            assert!(y.abs() <= 1.0 + 1e-9);
            prev = y;
        }
        assert!(((g(1e-6) - g(-1e-6)) / 2e-6 - 5.383_300_781_25).abs() < 1e-5);
        let s = StepApprox::from_spec("g15, g7").unwrap();
        assert_eq!(s.depth(), 7);
        assert_eq!(s.stages[0], G15.to_vec());
        assert!(StepApprox::from_spec("g9").is_err());
    }

    #[test]
    fn step_is_a_step() {
        let s = StepApprox::g7(3).unwrap();
        assert_eq!(s.depth(), 9);
        assert!((s.eval(0.0) - 0.5).abs() < 1e-15);
        for i in 0..=1000 {
            let z = i as f64 / 1000.0;
            let (up, down) = (s.eval(z), s.eval(-z));
            assert!((up + down - 1.0).abs() < 1e-12, "odd around 1/2");
            assert!((-1e-12..=1.0 + 1e-12).contains(&up));
            if z >= 0.3 {
                assert!(up > 0.99, "s({z}) = {up}");
            }
        }
    }

    #[test]
    fn circuit_stages_fold_the_half() {
        let s = StepApprox::g7(2).unwrap();
        let stages = s.circuit_stages().unwrap();
        for z in [-0.7, -0.05, 0.0, 0.02, 0.4, 1.0] {
            let p = stages.iter().fold(z, |x, p| p.evaluate(x));
            assert!((p + 0.5 - s.eval(z)).abs() < 1e-14);
        }
        assert!(StepApprox::g7(0).is_err());
    }
}
