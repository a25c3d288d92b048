//! Exact sampling of the discrete Laplace distribution with integer arithmetic only.
//!
//! The algorithms are those of Canonne, Kamath and Steinke, "The Discrete Gaussian for
//! Differential Privacy" (NeurIPS 2020, arXiv:2004.00010): Algorithm 1 for Bernoulli(e^{−γ})
//! with rational γ, and Algorithm 2 for the discrete Laplace distribution with rational scale
//! t/s. OpenDP samples the same way. No floating-point number is involved in sampling; every
//! random choice is a uniform integer drawn by rejection (so unbiased), or a Bernoulli trial
//! with a rational probability built from one.

use rand::{CryptoRng, Rng};

use crate::dp::Epsilon;
use crate::error::Error;
use crate::units::Wh;

/// The largest accepted sensitivity: 10 MWh per reading, far above any household reading
/// (a 15-minute reading of 10 MWh is an average of 40 MW).
pub const MAX_SENSITIVITY_WH: i64 = 10_000_000;

/// The largest accepted scale t/s: 2⁴⁴ (about 1.8 × 10¹³). Larger scales are refused so that the
/// truncation at [`MAX_NOISE`] stays negligible (see [`DiscreteLaplace`]).
const MAX_SCALE_LOG2: u32 = 44;

/// The largest noise magnitude returned: 2⁶².
///
/// A sample with |Z| > 2⁶² is rejected and drawn again, so the sampler returns the discrete
/// Laplace distribution conditioned on |Z| ≤ 2⁶². At the largest accepted scale (2⁴⁴) the
/// conditioning event has probability below 2⁴⁶ · e^{−2¹⁸} < 2^−370000: the output distribution
/// differs from the exact one by less than that in total variation.
pub const MAX_NOISE: i64 = 1 << 62;

/// The discrete Laplace distribution (two-sided geometric) on the integers with scale
/// b = t/s, sampled exactly:
///
/// P(Z = z) = (1 − e^{−1/b}) / (1 + e^{−1/b}) · e^{−|z|/b}  for every integer z.
///
/// Its mean is 0 and its variance 2·e^{−1/b} / (1 − e^{−1/b})² ([`DiscreteLaplace::variance`]).
///
/// # Exactness
///
/// [`DiscreteLaplace::sample`] runs Canonne–Kamath–Steinke's Algorithm 2 on the exact rational
/// scale t/s (t, s positive integers, in lowest terms):
///
/// 1. draw U uniform in {0, …, t − 1} and accept it with probability e^{−U/t} (otherwise start
///    again), then draw V ≥ 0 with P(V ≥ v) = e^{−v} (count successes of Bernoulli(e^{−1})
///    until the first failure). X = U + t·V has P(X = x) ∝ e^{−x/t}: geometric.
/// 2. Y = ⌊X / s⌋ is then geometric with P(Y = y) ∝ e^{−y·s/t} = e^{−y/b}.
/// 3. Draw a fair sign bit; reject (sign = −, Y = 0), which would count 0 twice. The result
///    ±Y has P(Z = z) ∝ e^{−|z|/b}.
///
/// Bernoulli(e^{−γ}) for rational γ = n/d ∈ [0, 1] is Algorithm 1: with K = 1, repeat
/// "draw A ~ Bernoulli(γ/K); stop if A = 0, else K += 1", and answer "K is odd", which has
/// probability Σ_k (−γ)^k / k! = e^{−γ}. Bernoulli(γ/K) = Bernoulli(n/d) ∧ Bernoulli(1/K),
/// two independent trials, so no product can overflow. Bernoulli(p/q) is "a uniform integer in
/// {0, …, q − 1} is below p", and uniform integers come from masking CSPRNG words and
/// rejecting values ≥ q: each accepted value is exactly uniform.
///
/// Every quantity is an integer below 2¹²⁸ (t < 2⁹⁶ for every [`Epsilon`] and sensitivity), so
/// the only departure from the exact distribution is the truncation at [`MAX_NOISE`],
/// described there. Running time is random (expected a few dozen CSPRNG words per sample) and
/// depends on the sampled noise, never on the reading it is added to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiscreteLaplace {
    /// Numerator of the scale.
    t: u128,
    /// Denominator of the scale.
    s: u128,
}

impl DiscreteLaplace {
    /// The distribution with scale `numerator / denominator`.
    ///
    /// Both must be positive and the scale at most 2⁴⁴; the fraction is reduced to lowest
    /// terms.
    pub fn try_from_rational_scale(numerator: u128, denominator: u128) -> Result<Self, Error> {
        if numerator == 0 || denominator == 0 {
            return Err(Error::InvalidOption {
                option: "discrete laplace scale",
                reason: format!(
                    "{numerator}/{denominator}: numerator and denominator must be positive"
                ),
            });
        }
        if numerator / denominator >= 1 << MAX_SCALE_LOG2 {
            return Err(Error::InvalidOption {
                option: "discrete laplace scale",
                reason: format!("{numerator}/{denominator} is above 2^{MAX_SCALE_LOG2}"),
            });
        }
        let g = gcd(numerator, denominator);
        Ok(Self {
            t: numerator / g,
            s: denominator / g,
        })
    }

    /// The noise distribution of the ε-DP mechanism for readings in `0 ..= sensitivity`:
    /// scale b = sensitivity / ε, computed exactly from ε's binary value
    /// (ε = m·2^e exactly, so b = sensitivity·2^{−e} / m).
    ///
    /// `sensitivity` must be within 1 Wh ..= [`MAX_SENSITIVITY_WH`] Wh.
    pub fn for_mechanism(sensitivity: Wh, epsilon: Epsilon) -> Result<Self, Error> {
        let delta = sensitivity.get();
        if !(1..=MAX_SENSITIVITY_WH).contains(&delta) {
            return Err(Error::InvalidOption {
                option: "sensitivity",
                reason: format!(
                    "{sensitivity} is outside 1 ..= {MAX_SENSITIVITY_WH} Wh: readings are clamped \
                     to 0 ..= sensitivity before noise"
                ),
            });
        }
        let (mantissa, exponent) = epsilon.to_dyadic();
        // ε ≥ 1e-6 > 2^-20 and mantissa < 2^53 give exponent ≥ -72; ε ≤ 1e6 < 2^20 gives
        // mantissa · 2^exponent < 2^20. So t < 2^24 · 2^72 = 2^96 and s < 2^53.
        let (t, s) = if exponent < 0 {
            (
                u128::from(delta.unsigned_abs()) << exponent.unsigned_abs(),
                u128::from(mantissa),
            )
        } else {
            (
                u128::from(delta.unsigned_abs()),
                u128::from(mantissa) << exponent.unsigned_abs(),
            )
        };
        Self::try_from_rational_scale(t, s)
    }

    /// The scale b = t/s as `(t, s)` in lowest terms.
    pub const fn rational_scale(&self) -> (u128, u128) {
        (self.t, self.s)
    }

    /// The scale b = t/s (rounded to `f64`).
    pub fn scale(&self) -> f64 {
        self.t as f64 / self.s as f64
    }

    /// The exact probability P(Z = k) (rounded to `f64`).
    pub fn pmf(&self, k: i64) -> f64 {
        let inv_b = self.s as f64 / self.t as f64;
        // (1 − q) / (1 + q) · q^|k| with q = e^{−1/b}; expm1 keeps 1 − q accurate for large b.
        let one_minus_q = -(-inv_b).exp_m1();
        let q = (-inv_b).exp();
        one_minus_q / (1.0 + q) * (-(k.unsigned_abs() as f64) * inv_b).exp()
    }

    /// The cumulative probability P(Z ≤ k) (rounded to `f64`): q^{−k}/(1 + q) for k < 0 and
    /// 1 − q^{k+1}/(1 + q) for k ≥ 0, with q = e^{−1/b}.
    pub fn cdf(&self, k: i64) -> f64 {
        let inv_b = self.s as f64 / self.t as f64;
        let q = (-inv_b).exp();
        if k < 0 {
            (-(k.unsigned_abs() as f64) * inv_b).exp() / (1.0 + q)
        } else {
            1.0 - (-(k as f64 + 1.0) * inv_b).exp() / (1.0 + q)
        }
    }

    /// The Kolmogorov–Smirnov distance between the empirical distribution of `samples`
    /// (sorted in place) and this one: the largest gap between the two CDFs, taken on both
    /// sides of each step. Under the distribution, D exceeds 1.95/√n with probability below
    /// 0.1 % (conservatively, for a discrete law).
    pub fn ks_distance(&self, samples: &mut [i64]) -> f64 {
        samples.sort_unstable();
        let n = samples.len() as f64;
        let mut worst: f64 = 0.0;
        let mut i = 0;
        while i < samples.len() {
            let value = samples[i];
            let below = i as f64 / n;
            while i < samples.len() && samples[i] == value {
                i += 1;
            }
            worst = worst
                .max((i as f64 / n - self.cdf(value)).abs())
                .max((below - self.cdf(value.saturating_sub(1))).abs());
        }
        worst
    }

    /// The exact variance 2·e^{−1/b} / (1 − e^{−1/b})² (rounded to `f64`).
    pub fn variance(&self) -> f64 {
        let inv_b = self.s as f64 / self.t as f64;
        let one_minus_q = -(-inv_b).exp_m1();
        2.0 * (-inv_b).exp() / (one_minus_q * one_minus_q)
    }

    /// Draws one sample (CKS20 Algorithm 2; see the type's documentation).
    pub fn sample<R: CryptoRng + ?Sized>(&self, rng: &mut R) -> i64 {
        loop {
            // 1. X = U + t·V with P(X = x) ∝ e^{-x/t}.
            let u = uniform_below(rng, self.t);
            if !bernoulli_exp_minus(rng, u, self.t) {
                continue;
            }
            let mut v: u128 = 0;
            while bernoulli_exp_minus(rng, 1, 1) {
                v += 1;
            }
            // Overflow needs V ≥ 2^32, probability e^{-2^32}; it is treated like truncation.
            let Some(x) = self.t.checked_mul(v).and_then(|tv| tv.checked_add(u)) else {
                continue;
            };
            // 2. Y = ⌊X / s⌋ with P(Y = y) ∝ e^{-y s/t}.
            let y = x / self.s;
            // 3. A fair sign; −0 is rejected so that 0 is not counted twice.
            let negative = rng.next_u32() & 1 == 1;
            if negative && y == 0 {
                continue;
            }
            let Ok(magnitude) = i64::try_from(y) else {
                continue;
            };
            if magnitude > MAX_NOISE {
                continue;
            }
            return if negative { -magnitude } else { magnitude };
        }
    }
}

/// Euclid's algorithm.
fn gcd(mut a: u128, mut b: u128) -> u128 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// A uniform integer in `0 .. n` (`n ≥ 1`), exactly: CSPRNG bits masked to the bit length of
/// `n − 1`, values ≥ `n` rejected (fewer than two draws on average).
pub(crate) fn uniform_below<R: Rng + ?Sized>(rng: &mut R, n: u128) -> u128 {
    debug_assert!(n >= 1);
    if n <= 1 {
        return 0;
    }
    let bits = 128 - (n - 1).leading_zeros();
    let mask = if bits == 128 {
        u128::MAX
    } else {
        (1_u128 << bits) - 1
    };
    loop {
        let low = u128::from(rng.next_u64());
        let word = if bits > 64 {
            (u128::from(rng.next_u64()) << 64) | low
        } else {
            low
        };
        let x = word & mask;
        if x < n {
            return x;
        }
    }
}

/// Bernoulli(p / q) for `0 ≤ p ≤ q`, `q ≥ 1`, exactly.
pub(crate) fn bernoulli_ratio<R: Rng + ?Sized>(rng: &mut R, p: u128, q: u128) -> bool {
    uniform_below(rng, q) < p
}

/// Bernoulli(e^{−n/d}) for `n ≥ 0`, `d ≥ 1`, exactly (CKS20 Algorithm 1, with the integer part
/// of n/d handled as that many Bernoulli(e^{−1}) trials that must all succeed).
pub(crate) fn bernoulli_exp_minus<R: Rng + ?Sized>(rng: &mut R, n: u128, d: u128) -> bool {
    debug_assert!(d >= 1);
    let whole = n / d;
    let mut i = 0;
    while i < whole {
        if !bernoulli_exp_minus_fraction(rng, 1, 1) {
            return false;
        }
        i += 1;
    }
    bernoulli_exp_minus_fraction(rng, n % d, d)
}

/// Bernoulli(e^{−γ}) for γ = n/d ∈ [0, 1].
fn bernoulli_exp_minus_fraction<R: Rng + ?Sized>(rng: &mut R, n: u128, d: u128) -> bool {
    debug_assert!(n <= d);
    let mut k: u64 = 1;
    // A ~ Bernoulli(γ/k) = Bernoulli(1/k) ∧ Bernoulli(n/d).
    while bernoulli_ratio(rng, 1, u128::from(k)) && bernoulli_ratio(rng, n, d) {
        k += 1;
    }
    k % 2 == 1
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    fn rng() -> StdRng {
        StdRng::seed_from_u64(0x5EE2)
    }

    /// Asserts that `hits` successes in `n` trials are within 5 standard errors of `p`.
    fn assert_frequency(hits: u64, n: u64, p: f64, what: &str) {
        let freq = hits as f64 / n as f64;
        let se = (p * (1.0 - p) / n as f64).sqrt().max(1.0 / n as f64);
        assert!(
            (freq - p).abs() <= 5.0 * se,
            "{what}: frequency {freq}, expected {p} ± {}",
            5.0 * se
        );
    }

    #[test]
    fn uniform_below_covers_range_evenly() {
        let mut rng = rng();
        let mut counts = [0_u64; 7];
        let n = 70_000;
        for _ in 0..n {
            counts[uniform_below(&mut rng, 7) as usize] += 1;
        }
        for c in counts {
            assert_frequency(c, n, 1.0 / 7.0, "uniform_below(7)");
        }
        assert_eq!(uniform_below(&mut rng, 1), 0);
        // Wide ranges use two words and stay below the bound.
        let big = (1_u128 << 100) + 12_345;
        for _ in 0..1000 {
            assert!(uniform_below(&mut rng, big) < big);
        }
        assert!(uniform_below(&mut rng, u128::MAX) < u128::MAX);
    }

    #[test]
    fn bernoulli_exp_matches_exp() {
        let mut rng = rng();
        let n = 100_000_u64;
        for (num, den) in [(0, 1), (3, 10), (1, 1), (5, 2), (7, 3), (1, 1000)] {
            let p = (-(num as f64) / den as f64).exp();
            let hits = (0..n)
                .filter(|_| bernoulli_exp_minus(&mut rng, num, den))
                .count() as u64;
            if num == 0 {
                assert_eq!(hits, n);
            }
            assert_frequency(hits, n, p, &format!("exp(-{num}/{den})"));
        }
    }

    #[test]
    fn bernoulli_ratio_extremes() {
        let mut rng = rng();
        assert!((0..100).all(|_| bernoulli_ratio(&mut rng, 5, 5)));
        assert!((0..100).all(|_| !bernoulli_ratio(&mut rng, 0, 5)));
    }

    #[test]
    fn scale_is_exact_and_reduced() {
        let eps = |v| Epsilon::try_new(v).expect("valid");
        let wh = |v| Wh::try_new(v).expect("valid");
        // 1000 Wh / 0.5 = 2000 exactly.
        let d = DiscreteLaplace::for_mechanism(wh(1000), eps(0.5)).expect("valid");
        assert_eq!(d.rational_scale(), (2000, 1));
        // 3 Wh / 6 = 1/2.
        let d = DiscreteLaplace::for_mechanism(wh(3), eps(6.0)).expect("valid");
        assert_eq!(d.rational_scale(), (1, 2));
        // 0.1 is not dyadic: the scale is the exact quotient by its binary value.
        let d = DiscreteLaplace::for_mechanism(wh(5000), eps(0.1)).expect("valid");
        let (t, s) = d.rational_scale();
        assert_eq!(gcd(t, s), 1);
        assert!((d.scale() - 50_000.0).abs() < 1e-9);
        // Extremes fit.
        DiscreteLaplace::for_mechanism(wh(MAX_SENSITIVITY_WH), Epsilon::MIN)
            .expect("largest scale");
        DiscreteLaplace::for_mechanism(wh(1), Epsilon::MAX).expect("smallest scale");
        assert!(DiscreteLaplace::for_mechanism(Wh::ZERO, eps(1.0)).is_err());
        assert!(DiscreteLaplace::for_mechanism(wh(MAX_SENSITIVITY_WH + 1), eps(1.0)).is_err());
        assert!(DiscreteLaplace::try_from_rational_scale(0, 1).is_err());
        assert!(DiscreteLaplace::try_from_rational_scale(1, 0).is_err());
        assert!(DiscreteLaplace::try_from_rational_scale(1 << 44, 1).is_err());
    }

    #[test]
    fn extreme_scales_sample() {
        let mut rng = rng();
        let tiny = DiscreteLaplace::for_mechanism(Wh::try_new(1).expect("valid"), Epsilon::MAX)
            .expect("valid");
        assert!((0..1000).all(|_| tiny.sample(&mut rng) == 0));
        let huge = DiscreteLaplace::for_mechanism(
            Wh::try_new(MAX_SENSITIVITY_WH).expect("valid"),
            Epsilon::MIN,
        )
        .expect("valid");
        let b = huge.scale();
        for _ in 0..100 {
            assert!((huge.sample(&mut rng).unsigned_abs() as f64) < 60.0 * b);
        }
    }

    #[test]
    fn pmf_sums_to_one_and_variance_matches() {
        for (t, s) in [(1, 2), (1, 1), (4, 1), (7, 3), (100, 1)] {
            let d = DiscreteLaplace::try_from_rational_scale(t, s).expect("valid");
            let bound = (80.0 * d.scale()).ceil() as i64 + 10;
            let total: f64 = (-bound..=bound).map(|k| d.pmf(k)).sum();
            let var: f64 = (-bound..=bound).map(|k| (k * k) as f64 * d.pmf(k)).sum();
            assert!((total - 1.0).abs() < 1e-9, "{t}/{s}: {total}");
            assert!((var / d.variance() - 1.0).abs() < 1e-9, "{t}/{s}");
        }
    }

    #[test]
    fn cdf_is_the_running_sum_of_the_pmf() {
        for (t, s) in [(1, 2), (4, 1), (7, 3), (1_000, 1)] {
            let d = DiscreteLaplace::try_from_rational_scale(t, s).expect("valid");
            let bound = (40.0 * d.scale()).ceil() as i64 + 10;
            let mut running = 0.0;
            for k in -bound..=bound {
                running += d.pmf(k);
                assert!((d.cdf(k) - running).abs() < 1e-9, "{t}/{s} at {k}");
            }
        }
    }

    #[test]
    fn ks_distance_accepts_the_distribution_and_rejects_another() {
        use rand::SeedableRng as _;
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        let d = DiscreteLaplace::try_from_rational_scale(50, 1).expect("valid");
        let wide = DiscreteLaplace::try_from_rational_scale(60, 1).expect("valid");
        let n = 4_000;
        let limit = 1.95 / f64::from(n).sqrt();
        let mut own: Vec<i64> = (0..n).map(|_| d.sample(&mut rng)).collect();
        let mut other: Vec<i64> = (0..n).map(|_| wide.sample(&mut rng)).collect();
        assert!(d.ks_distance(&mut own) < limit);
        assert!(d.ks_distance(&mut other) > limit);
        // Sorted in place; a constant sample is as far as can be from a spread law.
        assert!(own.windows(2).all(|w| w[0] <= w[1]));
        assert!(d.ks_distance(&mut [0; 100]) > 0.4);
    }
}
