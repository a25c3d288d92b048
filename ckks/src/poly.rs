//! Polynomial evaluation with minimal multiplicative depth (baby-step/giant-step).
//!
//! `p(x) = Σ c_i x^i` is split recursively at "giant" powers `x^(k·2^j)`:
//! `p = q + x^G · r`, down to "baby" leaves of degree `< k` evaluated as `Σ c_i · x^i` from a
//! table of powers computed with depth `⌈log2 i⌉`. Every split is planned without
//! ciphertexts first (same code, a depth-counting backend), for each baby-step size
//! `k ∈ {2, 4, 8, ...}`; the plan with the smallest depth, then the fewest
//! ciphertext–ciphertext products, is executed. With `k = 2` the depth is exactly
//! `⌈log2(d + 1)⌉` for degree `d` (the optimum, scalar multiplications included), so the
//! chosen plan is always depth-optimal, and larger `k` (Paterson–Stockmeyer-like savings in
//! products) is used whenever it does not cost depth.

use std::cell::Cell;

use crate::context::{Ciphertext, Level};
use crate::error::CkksError;
use crate::evaluator::Evaluator;

/// A real polynomial in the power basis.
#[derive(Debug, Clone, PartialEq)]
pub struct Polynomial {
    coeffs: Vec<f64>,
}

impl Polynomial {
    /// `coeffs[i]` is the coefficient of `x^i`. Trailing zeros are dropped; the result must
    /// have degree at least 1 and finite coefficients.
    pub fn try_new(mut coeffs: Vec<f64>) -> Result<Self, CkksError> {
        if let Some(bad) = coeffs.iter().find(|c| !c.is_finite()) {
            return Err(CkksError::InvalidPolynomial {
                reason: format!("coefficient {bad} is not finite"),
            });
        }
        while coeffs.last() == Some(&0.0) {
            coeffs.pop();
        }
        if coeffs.len() < 2 {
            return Err(CkksError::InvalidPolynomial {
                reason: "degree must be at least 1 (a constant needs no ciphertext)".into(),
            });
        }
        Ok(Self { coeffs })
    }

    /// The degree.
    pub fn degree(&self) -> usize {
        self.coeffs.len() - 1
    }

    /// The coefficients, lowest degree first.
    pub fn coefficients(&self) -> &[f64] {
        &self.coeffs
    }

    /// The plaintext twin: Horner's rule.
    pub fn evaluate(&self, x: f64) -> f64 {
        self.coeffs.iter().rev().fold(0.0, |acc, c| acc * x + c)
    }

    /// Levels consumed by [`Evaluator::evaluate_polynomial`] on a ciphertext at its
    /// canonical scale: `⌈log2(degree + 1)⌉`.
    pub fn depth(&self) -> u32 {
        best_plan(&self.coeffs).depth
    }

    /// Ciphertext–ciphertext products the chosen plan performs.
    pub fn products(&self) -> u32 {
        best_plan(&self.coeffs).products
    }
}

/// The operations a plan needs; implemented on ciphertexts and on depth counters.
trait Backend {
    type V;
    fn mul(&self, a: &Self::V, b: &Self::V) -> Result<Self::V, CkksError>;
    fn mul_scalar(&self, a: &Self::V, c: f64) -> Result<Self::V, CkksError>;
    fn add(&self, a: &Self::V, b: &Self::V) -> Result<Self::V, CkksError>;
    fn add_scalar(&self, a: &Self::V, c: f64) -> Result<Self::V, CkksError>;
}

struct DepthBackend {
    products: Cell<u32>,
}

impl Backend for DepthBackend {
    type V = u32;
    fn mul(&self, a: &u32, b: &u32) -> Result<u32, CkksError> {
        self.products.set(self.products.get() + 1);
        Ok(a.max(b) + 1)
    }
    fn mul_scalar(&self, a: &u32, _c: f64) -> Result<u32, CkksError> {
        Ok(a + 1)
    }
    fn add(&self, a: &u32, b: &u32) -> Result<u32, CkksError> {
        Ok(*a.max(b))
    }
    fn add_scalar(&self, a: &u32, _c: f64) -> Result<u32, CkksError> {
        Ok(*a)
    }
}

impl Backend for Evaluator {
    type V = Ciphertext;
    fn mul(&self, a: &Ciphertext, b: &Ciphertext) -> Result<Ciphertext, CkksError> {
        self.multiply(a, b)
    }
    fn mul_scalar(&self, a: &Ciphertext, c: f64) -> Result<Ciphertext, CkksError> {
        self.multiply_scalar(a, c)
    }
    fn add(&self, a: &Ciphertext, b: &Ciphertext) -> Result<Ciphertext, CkksError> {
        Evaluator::add(self, a, b)
    }
    fn add_scalar(&self, a: &Ciphertext, c: f64) -> Result<Ciphertext, CkksError> {
        Evaluator::add_scalar(self, a, c)
    }
}

enum Term<V> {
    Zero,
    Const(f64),
    Val(V),
}

struct Planner<'b, B: Backend> {
    backend: &'b B,
    baby: usize,
    powers: Vec<Option<B::V>>,
}

impl<B: Backend> Planner<'_, B> {
    /// Computes `x^i` (memoized) with depth `⌈log2 i⌉`.
    fn ensure_power(&mut self, i: usize) -> Result<(), CkksError> {
        if self.powers.len() <= i {
            self.powers.resize_with(i + 1, || None);
        }
        if self.powers[i].is_none() {
            let value = if i.is_power_of_two() {
                self.ensure_power(i / 2)?;
                let half = self.power(i / 2)?;
                self.backend.mul(half, half)?
            } else {
                let high = 1usize << (usize::BITS - 1 - i.leading_zeros());
                self.ensure_power(high)?;
                self.ensure_power(i - high)?;
                self.backend.mul(self.power(high)?, self.power(i - high)?)?
            };
            self.powers[i] = Some(value);
        }
        Ok(())
    }

    fn power(&self, i: usize) -> Result<&B::V, CkksError> {
        self.powers
            .get(i)
            .and_then(Option::as_ref)
            .ok_or_else(internal)
    }

    fn add_terms(&self, a: Term<B::V>, b: Term<B::V>) -> Result<Term<B::V>, CkksError> {
        Ok(match (a, b) {
            (Term::Zero, t) | (t, Term::Zero) => t,
            (Term::Const(x), Term::Const(y)) => Term::Const(x + y),
            (Term::Const(c), Term::Val(v)) | (Term::Val(v), Term::Const(c)) => {
                Term::Val(self.backend.add_scalar(&v, c)?)
            }
            (Term::Val(x), Term::Val(y)) => Term::Val(self.backend.add(&x, &y)?),
        })
    }

    fn eval(&mut self, coeffs: &[f64]) -> Result<Term<B::V>, CkksError> {
        if coeffs.len() <= self.baby {
            let mut acc = match coeffs.first() {
                Some(c) if *c != 0.0 => Term::Const(*c),
                _ => Term::Zero,
            };
            for (i, c) in coeffs.iter().enumerate().skip(1) {
                if *c == 0.0 {
                    continue;
                }
                self.ensure_power(i)?;
                let term = self.backend.mul_scalar(self.power(i)?, *c)?;
                acc = self.add_terms(acc, Term::Val(term))?;
            }
            return Ok(acc);
        }
        // Largest giant step G = baby · 2^j with G < len.
        let mut giant = self.baby;
        while giant * 2 < coeffs.len() {
            giant *= 2;
        }
        let low = self.eval(&coeffs[..giant])?;
        let high = self.eval(&coeffs[giant..])?;
        let high = match high {
            Term::Zero => Term::Zero,
            Term::Const(c) => {
                self.ensure_power(giant)?;
                Term::Val(self.backend.mul_scalar(self.power(giant)?, c)?)
            }
            Term::Val(v) => {
                self.ensure_power(giant)?;
                Term::Val(self.backend.mul(self.power(giant)?, &v)?)
            }
        };
        self.add_terms(low, high)
    }
}

fn internal() -> CkksError {
    CkksError::InvalidPolynomial {
        reason: "internal error: power table".into(),
    }
}

struct Plan {
    baby: usize,
    depth: u32,
    products: u32,
}

fn best_plan(coeffs: &[f64]) -> Plan {
    let mut best: Option<Plan> = None;
    let mut baby = 2;
    while baby <= coeffs.len().next_power_of_two().max(2) {
        let backend = DepthBackend {
            products: Cell::new(0),
        };
        let mut planner = Planner {
            backend: &backend,
            baby,
            powers: vec![None, Some(0)],
        };
        if let Ok(Term::Val(depth)) = planner.eval(coeffs) {
            let plan = Plan {
                baby,
                depth,
                products: backend.products.get(),
            };
            if best
                .as_ref()
                .is_none_or(|b| (plan.depth, plan.products) < (b.depth, b.products))
            {
                best = Some(plan);
            }
        }
        baby *= 2;
    }
    best.unwrap_or(Plan {
        baby: 2,
        depth: 0,
        products: 0,
    })
}

impl Evaluator {
    /// Evaluates `p(x)` slot-wise. Consumes [`Polynomial::depth`] levels (one more if `x`
    /// is not at its level's canonical scale); fails with
    /// [`CkksError::LevelExhausted`] before any work if `x` has fewer.
    pub fn evaluate_polynomial(
        &self,
        x: &Ciphertext,
        p: &Polynomial,
    ) -> Result<Ciphertext, CkksError> {
        let plan = best_plan(&p.coeffs);
        let canonical = self.context().canonical_scale(x.level())?;
        let needs_adjust = !crate::context::scales_close(x.scale()?, canonical);
        let needed = plan.depth + u32::from(needs_adjust);
        if x.level().0 < needed {
            return Err(CkksError::LevelExhausted {
                needed,
                available: x.level().0,
            });
        }
        let start = if needs_adjust {
            let level = Level(x.level().0 - 1);
            self.adjust_to(x, level, self.context().canonical_scale(level)?)?
        } else {
            x.try_clone()?
        };
        let mut planner = Planner {
            backend: self,
            baby: plan.baby,
            powers: vec![None, Some(start)],
        };
        match planner.eval(&p.coeffs)? {
            Term::Val(v) => Ok(v),
            _ => Err(internal()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn planned_depth_is_optimal() {
        for degree in 1..=64usize {
            let p = Polynomial::try_new(vec![0.5; degree + 1]).unwrap();
            let optimal = (degree as f64 + 1.0).log2().ceil() as u32;
            assert_eq!(p.depth(), optimal, "degree {degree}");
        }
    }

    #[test]
    fn larger_baby_steps_save_products() {
        // Degree 15 with k = 2 needs more products than the chosen plan.
        let p = Polynomial::try_new(vec![0.1; 16]).unwrap();
        let backend = DepthBackend {
            products: Cell::new(0),
        };
        let mut planner = Planner {
            backend: &backend,
            baby: 2,
            powers: vec![None, Some(0)],
        };
        planner.eval(p.coefficients()).unwrap();
        assert!(p.products() <= backend.products.get());
    }

    #[test]
    fn rejects_constant_and_non_finite() {
        assert!(Polynomial::try_new(vec![1.0]).is_err());
        assert!(Polynomial::try_new(vec![1.0, 0.0, 0.0]).is_err());
        assert!(Polynomial::try_new(vec![1.0, f64::INFINITY]).is_err());
        assert_eq!(
            Polynomial::try_new(vec![1.0, 2.0, 0.0]).unwrap().degree(),
            1
        );
    }

    #[test]
    fn horner_matches_naive() {
        let p = Polynomial::try_new(vec![1.0, -2.0, 0.5, 3.0]).unwrap();
        let x: f64 = 0.7;
        let naive = 1.0 - 2.0 * x + 0.5 * x * x + 3.0 * x.powi(3);
        assert!((p.evaluate(x) - naive).abs() < 1e-12);
    }
}
