//! Distributed discrete Laplace noise: each meter of a group adds a share, so that the group's
//! summed lane carries one full discrete Laplace draw (Ács and Castelluccia, "I have a DREAM!
//! (DiffeRentially privatE smArt Metering)", Information Hiding 2011, in its discrete form).
//!
//! # The construction
//!
//! The discrete Laplace distribution of scale b ([`DiscreteLaplace`]) is the difference of two
//! independent geometric variables with P(G = g) = (1 − q)·q^g, q = e^{−1/b}. A geometric
//! variable is infinitely divisible: it is the sum of k independent negative binomial (Pólya)
//! variables of shape 1/k, P(X = x) = Γ(x + 1/k) / (x! Γ(1/k)) · (1 − q)^{1/k} · q^x, and more
//! generally Pólya(r₁) + Pólya(r₂) = Pólya(r₁ + r₂). So if each of k meters adds
//! Pólya(1/k) − Pólya(1/k) to its reading, the sum over the k meters carries exactly one
//! discrete Laplace draw of scale b: the group's total is ε-DP (b = Δ/ε, readings clamped to
//! 0 ..= Δ) while its error does not grow with the group, unlike independent local noise,
//! whose sum over n meters has √n times the standard deviation of one draw.
//!
//! A group of n meters tolerates t meters that are absent or collude (colluders know, and can
//! subtract, their own shares): shares are sized for k = n − t honest contributions, so the
//! honest meters' shares sum to Pólya(r) − Pólya(r) with r = (honest meters)/k ≥ 1, at least
//! one full draw. When fewer than k meters contribute at all, the key authority adds the
//! missing Pólya((k − present)/k) − Pólya((k − present)/k) itself before it releases
//! ([`SharePlan::top_up`]), so the released total always carries at least the full noise from
//! parties outside any coalition of the tolerated size.
//!
//! # Exactness and floating point
//!
//! The full-draw scale b is the exact rational of [`DiscreteLaplace::for_mechanism`]. A Pólya
//! share is drawn as a Poisson variable whose mean is a Gamma(r, q/(1 − q)) variable (the
//! negative binomial's Gamma–Poisson mixture), with `rand_distr`'s Gamma (Marsaglia–Tsang)
//! and Poisson (PTRS) samplers, which work in `f64`. Integer-only exact sampling, as
//! [`DiscreteLaplace::sample`] does, is not known for fractional shapes.
//!
//! The risk Mironov described ("On Significance of the Least Significant Bits for
//! Differential Privacy", CCS 2012) is a floating-point noise **value** added to a reading: its
//! porous set of representable results reveals the reading. It does not arise here: every
//! share is an integer (a Poisson count) added to an integer reading, so each output is an
//! integer and the support of the noise is all of ℤ, as for the exact distribution. What the
//! floating point changes is the probabilities: each sampler's pmf differs from the exact one
//! by its rounding error, relatively of the order of 2⁻⁵⁰ per operation for the few dozen
//! operations of a draw. The privacy loss of the released total is then ε plus a term of that
//! order (a δ of about 2⁻⁴⁰ in (ε, δ)-DP, far below anything measurable); the statistical
//! tests in `seer-core/tests/dp.rs` compare the summed shares with the exact pmf.
//!
//! Randomness comes from the caller's [`rand::CryptoRng`] (the meter's ChaCha generator
//! seeded by the operating system).

use rand::{CryptoRng, Rng};
use rand_distr::{Distribution as _, Gamma, Poisson};

use crate::dp::{DiscreteLaplace, Epsilon};
use crate::error::Error;
use crate::units::Wh;

/// The largest group a plan accepts: 10⁷ meters (shapes down to 10⁻⁷ stay well inside `f64`).
pub const MAX_GROUP_SIZE: u32 = 10_000_000;

/// The difference of two independent Pólya (negative binomial) variables of shape `r` with
/// success ratio `q = e^{−1/b}`: a share of discrete Laplace noise of scale b (`r = 1` is the
/// full discrete Laplace distribution).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PolyaDifference {
    /// The shape r > 0.
    shape: f64,
    /// The Gamma mixing distribution's scale q / (1 − q).
    gamma_scale: f64,
}

impl PolyaDifference {
    /// Shape `shape` of the discrete Laplace distribution `full` (whose shape is 1).
    ///
    /// # Errors
    /// [`Error::InvalidOption`] when `shape` is not positive and finite.
    pub fn try_new(full: &DiscreteLaplace, shape: f64) -> Result<Self, Error> {
        if !(shape.is_finite() && shape > 0.0) {
            return Err(Error::InvalidOption {
                option: "noise share shape",
                reason: format!("{shape} is not a positive number"),
            });
        }
        Ok(Self {
            shape,
            gamma_scale: gamma_scale(full),
        })
    }

    /// The shape r.
    #[must_use]
    pub const fn shape(&self) -> f64 {
        self.shape
    }

    /// The variance, 2·r·q / (1 − q)² (each Pólya variable has r·q/(1 − q)²).
    #[must_use]
    pub fn variance(&self) -> f64 {
        // q/(1−q)² = θ(1 + θ) with θ = q/(1 − q).
        2.0 * self.shape * self.gamma_scale * (1.0 + self.gamma_scale)
    }

    /// Draws one share: Pólya(r) − Pólya(r), each a Poisson count with a Gamma-distributed
    /// mean (see the module documentation on floating point).
    pub fn sample<R: CryptoRng + ?Sized>(&self, rng: &mut R) -> i64 {
        polya(rng, self.shape, self.gamma_scale) - polya(rng, self.shape, self.gamma_scale)
    }
}

/// The Gamma mixing scale θ = q/(1 − q) of `full`'s geometric halves, q = e^{−1/b}:
/// 1 / (e^{1/b} − 1), with expm1 accurate for large b.
fn gamma_scale(full: &DiscreteLaplace) -> f64 {
    let (t, s) = full.rational_scale();
    1.0 / (s as f64 / t as f64).exp_m1()
}

/// One Pólya(r) variable with Gamma scale θ = q/(1 − q): Poisson(Gamma(r, θ)).
fn polya<R: Rng + ?Sized>(rng: &mut R, shape: f64, gamma_scale: f64) -> i64 {
    // Both parameters are positive and finite (checked by the constructor), so neither
    // distribution can be refused; a refusal would be a bug, and 0 the safe answer.
    let Ok(gamma) = Gamma::new(shape, gamma_scale) else {
        return 0;
    };
    let mean: f64 = gamma.sample(rng);
    if mean <= 0.0 || !mean.is_finite() {
        // A Gamma draw of a tiny shape underflows to 0: its Poisson count is 0.
        return 0;
    }
    let Ok(poisson) = Poisson::new(mean.min(Poisson::<f64>::MAX_LAMBDA)) else {
        return 0;
    };
    let count: f64 = poisson.sample(rng);
    // Counts are whole numbers below 2⁶³ for every mean a plan can produce (the noise
    // scale is at most 2⁴⁴); the cast saturates in any case.
    count as i64
}

/// How a group's noise is shared: the group's size, how many meters may be absent or collude,
/// and the mechanism (clamp Δ and ε per reading) whose one full draw the group's total
/// carries.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SharePlan {
    group_size: u32,
    tolerated: u32,
    sensitivity: Wh,
    epsilon: Epsilon,
    full: DiscreteLaplace,
}

impl SharePlan {
    /// A plan for a group of `group_size` meters of which at most `tolerated` may be absent or
    /// collude, readings clamped to `0 ..= sensitivity`, ε per reading.
    ///
    /// # Errors
    /// [`Error::InvalidOption`] for an empty or oversized group, a tolerance that leaves no
    /// honest meter, or a sensitivity outside the sampler's range.
    pub fn try_new(
        group_size: u32,
        tolerated: u32,
        sensitivity: Wh,
        epsilon: Epsilon,
    ) -> Result<Self, Error> {
        if !(1..=MAX_GROUP_SIZE).contains(&group_size) {
            return Err(Error::InvalidOption {
                option: "group size",
                reason: format!("{group_size} is outside 1 ..= {MAX_GROUP_SIZE}"),
            });
        }
        if tolerated >= group_size {
            return Err(Error::InvalidOption {
                option: "tolerated absent or colluding meters",
                reason: format!(
                    "{tolerated} of {group_size} leaves no honest meter to carry the noise"
                ),
            });
        }
        let full = DiscreteLaplace::for_mechanism(sensitivity, epsilon)?;
        Ok(Self {
            group_size,
            tolerated,
            sensitivity,
            epsilon,
            full,
        })
    }

    /// The group's size n.
    #[must_use]
    pub const fn group_size(&self) -> u32 {
        self.group_size
    }

    /// The number t of meters that may be absent or collude.
    #[must_use]
    pub const fn tolerated(&self) -> u32 {
        self.tolerated
    }

    /// The clamp Δ.
    #[must_use]
    pub const fn sensitivity(&self) -> Wh {
        self.sensitivity
    }

    /// ε per reading (of the group's total, for one meter's reading).
    #[must_use]
    pub const fn epsilon(&self) -> Epsilon {
        self.epsilon
    }

    /// The honest contributions k = n − t the shares are sized for.
    #[must_use]
    pub const fn honest_floor(&self) -> u32 {
        self.group_size - self.tolerated
    }

    /// The full draw the group's total carries: discrete Laplace of scale Δ/ε.
    #[must_use]
    pub const fn full_noise(&self) -> &DiscreteLaplace {
        &self.full
    }

    /// One meter's share: Pólya(1/k) − Pólya(1/k).
    #[must_use]
    pub fn share(&self) -> PolyaDifference {
        self.polya(1)
    }

    /// What `count` shares sum to: Pólya(count/k) − Pólya(count/k); `None` for 0.
    #[must_use]
    pub fn shares(&self, count: u32) -> Option<PolyaDifference> {
        (count > 0).then(|| self.polya(count))
    }

    /// Pólya(count/k) − Pólya(count/k) for `count ≥ 1` (a positive, finite shape).
    fn polya(&self, count: u32) -> PolyaDifference {
        PolyaDifference {
            shape: f64::from(count) / f64::from(self.honest_floor()),
            gamma_scale: gamma_scale(&self.full),
        }
    }

    /// The fewest meters that must be present in a slot before the key authority releases it:
    /// ⌈k/2⌉. The key authority knows its own top-up, so what it could learn by subtracting it
    /// is the present meters' readings under present/k of a draw; the floor keeps that at
    /// least half a draw, and makes a plan that overstates the group (so that too few are
    /// ever present) a refusal rather than a thin release.
    #[must_use]
    pub const fn presence_floor(&self) -> u32 {
        self.honest_floor().div_ceil(2)
    }

    /// The key authority's top-up when only `present` meters' shares are in the sum: the
    /// shares of the k − present missing ones, so that the released total carries at least
    /// one full draw; `None` when at least k meters are present.
    #[must_use]
    pub fn top_up(&self, present: u32) -> Option<PolyaDifference> {
        self.shares(self.honest_floor().saturating_sub(present))
    }

    /// The variance of the noise in a released total of `present` meters' readings, with the
    /// key authority's top-up: max(present, k)/k full draws.
    #[must_use]
    pub fn released_variance(&self, present: u32) -> f64 {
        let draws = f64::from(present.max(self.honest_floor())) / f64::from(self.honest_floor());
        draws * self.full.variance()
    }

    /// Adds one share to each of `readings` (clamped to `0 ..= Δ` first, as the local
    /// mechanism does) and returns the noised values.
    pub fn noise_readings<R: CryptoRng + ?Sized>(&self, readings: &[Wh], rng: &mut R) -> Vec<i64> {
        let share = self.share();
        readings
            .iter()
            .map(|w| w.get().min(self.sensitivity.get()) + share.sample(rng))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    fn plan(n: u32, t: u32, delta: i64, eps: f64) -> SharePlan {
        SharePlan::try_new(
            n,
            t,
            Wh::try_new(delta).expect("wh"),
            Epsilon::try_new(eps).expect("eps"),
        )
        .expect("plan")
    }

    #[test]
    fn plans_refuse_what_cannot_carry_noise() {
        let wh = Wh::try_new(100).expect("wh");
        let eps = Epsilon::try_new(1.0).expect("eps");
        assert!(SharePlan::try_new(0, 0, wh, eps).is_err());
        assert!(SharePlan::try_new(10, 10, wh, eps).is_err());
        assert!(SharePlan::try_new(MAX_GROUP_SIZE + 1, 0, wh, eps).is_err());
        assert!(SharePlan::try_new(10, 0, Wh::ZERO, eps).is_err());
        let full = DiscreteLaplace::for_mechanism(wh, eps).expect("dl");
        assert!(PolyaDifference::try_new(&full, 0.0).is_err());
        assert!(PolyaDifference::try_new(&full, f64::NAN).is_err());
    }

    #[test]
    fn shares_add_up_to_one_draw_and_top_ups_fill_the_gap() {
        let p = plan(100, 10, 3_600, 1.0);
        assert_eq!(p.honest_floor(), 90);
        assert!((p.share().shape() - 1.0 / 90.0).abs() < 1e-15);
        assert!(p.shares(0).is_none());
        assert!((p.shares(90).expect("shares").shape() - 1.0).abs() < 1e-15);
        // 90 or more present: nothing to add; 60 present: the 30 missing shares.
        assert!(p.top_up(90).is_none());
        assert!(p.top_up(100).is_none());
        assert!((p.top_up(60).expect("top-up").shape() - 30.0 / 90.0).abs() < 1e-15);
        assert!((p.top_up(0).expect("top-up").shape() - 1.0).abs() < 1e-15);
        // Variances: the full draw's at k, more with more meters present.
        let full = p.full_noise().variance();
        assert!((p.shares(90).expect("shares").variance() / full - 1.0).abs() < 1e-9);
        assert!((p.released_variance(40) / full - 1.0).abs() < 1e-12);
        assert!((p.released_variance(100) / full - 100.0 / 90.0).abs() < 1e-12);
    }

    #[test]
    fn noised_readings_are_clamped_and_centred() {
        let p = plan(4, 0, 500, 2.0);
        let mut rng = StdRng::seed_from_u64(7);
        let readings: Vec<Wh> = [0, 250, 500, 9_000]
            .iter()
            .map(|w| Wh::try_new(*w).expect("wh"))
            .collect();
        let rounds = 20_000;
        let mut sums = [0_i64; 4];
        for _ in 0..rounds {
            for (s, v) in sums.iter_mut().zip(p.noise_readings(&readings, &mut rng)) {
                *s += v;
            }
        }
        // One share has variance full/4; the mean over 20,000 is within 5 standard errors.
        let se = (p.full_noise().variance() / 4.0 / f64::from(rounds)).sqrt();
        for (sum, want) in sums.iter().zip([0.0, 250.0, 500.0, 500.0]) {
            let mean = *sum as f64 / f64::from(rounds);
            assert!((mean - want).abs() < 5.0 * se, "{mean} vs {want} ± {se}");
        }
    }
}
