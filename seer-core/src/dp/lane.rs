//! The analytics lane: clamped readings plus noise, charged to a budget — local discrete
//! Laplace noise per reading ([`LaplaceMechanism::analytics_lane`]), or one meter's shares of
//! its group's distributed noise ([`LaplaceMechanism::shared_lane`]).

use std::fmt;

use chrono::NaiveDate;
use rand::rngs::{StdRng, SysRng};
use rand::{CryptoRng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::dp::accountant::mul_up;
use crate::dp::{DiscreteLaplace, Epsilon, PrivacyAccountant, SharePlan};
use crate::error::Error;
use crate::units::Wh;

/// A noisy energy in whole watt-hours: an analytics-lane reading.
///
/// Unlike [`Wh`] it may be negative: noise is added to readings near zero too, and is not
/// clamped away afterwards (see [`LaplaceMechanism`]).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct NoisyWh(i64);

impl NoisyWh {
    /// A noisy watt-hour count (any `i64`; it is an output, not a measurement).
    pub const fn new(wh: i64) -> Self {
        Self(wh)
    }

    /// The number of watt-hours.
    pub const fn get(self) -> i64 {
        self.0
    }
}

impl From<NoisyWh> for i64 {
    fn from(wh: NoisyWh) -> Self {
        wh.0
    }
}

impl fmt::Display for NoisyWh {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} Wh", self.0)
    }
}

/// The ε-DP randomiser of one reading: clamp to `0 ..= sensitivity`, add discrete Laplace
/// noise of scale `sensitivity / ε`.
///
/// # Guarantee
///
/// For a reading x (integer Wh), the output is M(x) = min(x, Δ) + Z with Δ the sensitivity and
/// Z ~ [`DiscreteLaplace`] of scale b = Δ/ε. Any two readings x, x′ have clamped values
/// differing by at most Δ, so for every output z
///
/// P(M(x) = z) / P(M(x′) = z) = e^{(|z − min(x′,Δ)| − |z − min(x,Δ)|)/b} ≤ e^{Δ/b} = e^ε:
///
/// each reading is ε-locally-differentially-private against **any** change of its value (the
/// clamp is what makes every pair of readings neighbours). The bound is for the exact binary
/// value of ε; the only departure from pure ε-DP is the sampler's truncation at
/// [`MAX_NOISE`](super::MAX_NOISE), an event of probability below 2^−370000.
///
/// Choose Δ as the largest energy a reading can plausibly hold (e.g. a 15-minute reading at a
/// 10 kW connection: 2500 Wh); larger readings are clamped to Δ, which biases them downwards
/// but keeps the guarantee. A smaller Δ means less noise for the same ε.
///
/// # Why noise is not clamped afterwards
///
/// Clamping noisy values to ≥ 0 would be harmless for privacy (post-processing) but biased:
/// the noise has mean 0, so sums and averages of noisy readings are unbiased estimates of the
/// true ones, with the noise of n readings growing only like √n; clamped noise has a positive
/// mean near zero readings, and that bias grows like n. Forecasting and anomaly detection
/// aggregate readings, so the lane keeps negative values.
///
/// # Composition
///
/// Releasing n readings, all randomised independently, is ε-DP for a change in any **one**
/// reading (each reading is used once: parallel composition), and n·ε-DP for a change in
/// **all** of them (sequential composition), which is what hides a household's daily routine.
/// [`LaplaceMechanism::analytics_lane`] charges n·ε, the conservative figure: e.g. at ε = 0.05
/// per 15-minute reading, a day (96 readings) costs 4.8 and a 30-day month 144. Everything
/// computed from the lane afterwards (encrypted forecasts, anomaly scores) is post-processing
/// and spends nothing more.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LaplaceMechanism {
    sensitivity: Wh,
    epsilon: Epsilon,
    noise: DiscreteLaplace,
}

impl LaplaceMechanism {
    /// The mechanism for readings clamped to `0 ..= sensitivity`, ε-DP per reading.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidOption`] if `sensitivity` is outside
    /// 1 ..= [`MAX_SENSITIVITY_WH`](super::MAX_SENSITIVITY_WH) Wh.
    pub fn try_new(sensitivity: Wh, epsilon: Epsilon) -> Result<Self, Error> {
        Ok(Self {
            sensitivity,
            epsilon,
            noise: DiscreteLaplace::for_mechanism(sensitivity, epsilon)?,
        })
    }

    /// The clamp bound Δ, in Wh.
    pub const fn sensitivity(&self) -> Wh {
        self.sensitivity
    }

    /// The per-reading ε.
    pub const fn epsilon(&self) -> Epsilon {
        self.epsilon
    }

    /// The noise distribution (scale Δ/ε).
    pub const fn noise(&self) -> &DiscreteLaplace {
        &self.noise
    }

    /// The reading clamped to `0 ..= sensitivity`.
    pub fn clamp(&self, reading: Wh) -> Wh {
        reading.min(self.sensitivity)
    }

    /// Builds the analytics lane of one batch: each reading clamped and noised independently.
    ///
    /// The batch is charged `readings.len() · ε` (see [Composition](Self#composition)) to the
    /// accountant's period containing `date`, before any noise is drawn; if the charge is
    /// refused nothing is released and the RNG is untouched. A batch must not straddle two
    /// budget periods: split it at the boundary. An empty batch charges nothing.
    ///
    /// # Errors
    ///
    /// [`Error::BudgetExhausted`] or [`Error::PeriodRegression`] from the accountant.
    pub fn analytics_lane<R: CryptoRng + ?Sized>(
        &self,
        readings: &[Wh],
        date: NaiveDate,
        accountant: &mut PrivacyAccountant,
        rng: &mut R,
    ) -> Result<AnalyticsLane, Error> {
        if readings.is_empty() {
            return Ok(AnalyticsLane {
                readings: Vec::new(),
                epsilon_spent: 0.0,
                clamped: 0,
            });
        }
        accountant.try_spend_at(date, self.epsilon, readings.len())?;
        let mut clamped = 0;
        let noisy = readings
            .iter()
            .map(|&reading| {
                let x = self.clamp(reading);
                if x != reading {
                    clamped += 1;
                }
                // x ≤ MAX_SENSITIVITY_WH and |noise| ≤ MAX_NOISE = 2^62: no overflow.
                NoisyWh(x.get() + self.noise.sample(rng))
            })
            .collect();
        Ok(AnalyticsLane {
            readings: noisy,
            epsilon_spent: mul_up(self.epsilon.get(), readings.len()),
            clamped,
        })
    }

    /// Builds one meter's analytics lane under distributed noise: the slots of a batch's
    /// **span** (`span[j]`: the reading of the span's j-th interval, `None` for an interval
    /// without one), each clamped to `0 ..= sensitivity` (0 without a reading) plus one fresh
    /// share of `plan` ([`SharePlan::share`]), every slot its own share, readings or not.
    ///
    /// # Guarantee
    ///
    /// A share is Pólya(1/k) − Pólya(1/k) with k = n − t (see [`SharePlan`]): one meter's lane
    /// alone carries only 1/k of a draw and is **not** ε-DP by itself. What is ε-DP is the
    /// group's total of a slot once the key authority has summed the group's lanes and topped up
    /// the missing shares: it carries at least one full discrete Laplace draw of scale Δ/ε from
    /// meters outside any coalition of t, and each reading is a term of exactly one released
    /// total. So the batch is charged exactly as [`analytics_lane`](Self::analytics_lane)
    /// charges: ε per reading, `readings · ε` (slots without a reading release nothing about
    /// the home and cost nothing), before any share is drawn; if the charge is refused nothing
    /// is drawn and the generator is untouched. An empty span charges nothing.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidOption`] when `plan`'s clamp or ε is not this mechanism's;
    /// [`Error::BudgetExhausted`] or [`Error::PeriodRegression`] from the accountant.
    pub fn shared_lane<R: CryptoRng + ?Sized>(
        &self,
        plan: &SharePlan,
        span: &[Option<Wh>],
        date: NaiveDate,
        accountant: &mut PrivacyAccountant,
        rng: &mut R,
    ) -> Result<AnalyticsLane, Error> {
        if plan.sensitivity() != self.sensitivity || plan.epsilon() != self.epsilon {
            return Err(Error::InvalidOption {
                option: "noise share plan",
                reason: format!(
                    "the plan's clamp {} and ε {} are not the mechanism's ({} and {})",
                    plan.sensitivity(),
                    plan.epsilon(),
                    self.sensitivity,
                    self.epsilon
                ),
            });
        }
        if span.is_empty() {
            return Ok(AnalyticsLane {
                readings: Vec::new(),
                epsilon_spent: 0.0,
                clamped: 0,
            });
        }
        let readings = span.iter().flatten().count();
        accountant.try_spend_at(date, self.epsilon, readings)?;
        let share = plan.share();
        let mut clamped = 0;
        let noisy = span
            .iter()
            .map(|slot| {
                let x = slot.map_or(Wh::ZERO, |reading| {
                    let x = self.clamp(reading);
                    if x != reading {
                        clamped += 1;
                    }
                    x
                });
                // x ≤ MAX_SENSITIVITY_WH; a share is a difference of two Poisson counts far
                // below 2⁶² (saturating in any case).
                NoisyWh(x.get().saturating_add(share.sample(rng)))
            })
            .collect();
        Ok(AnalyticsLane {
            readings: noisy,
            epsilon_spent: mul_up(self.epsilon.get(), readings),
            clamped,
        })
    }
}

/// One batch's analytics lane, as built by [`LaplaceMechanism::analytics_lane`] (a value per
/// reading) or [`LaplaceMechanism::shared_lane`] (a value per slot of the batch's span).
#[derive(Clone, Debug, PartialEq)]
pub struct AnalyticsLane {
    readings: Vec<NoisyWh>,
    epsilon_spent: f64,
    clamped: usize,
}

impl AnalyticsLane {
    /// The noisy values in order: one per reading for a local lane, one per slot of the span
    /// (a share alone where the slot has no reading) for a shared lane.
    pub fn readings(&self) -> &[NoisyWh] {
        &self.readings
    }

    /// The noisy values, by value.
    pub fn into_readings(self) -> Vec<NoisyWh> {
        self.readings
    }

    /// The ε this batch was charged: n·ε for n readings (not slots), rounded up (the
    /// accountant's sum is rounded up again when it is added).
    pub const fn epsilon_spent(&self) -> f64 {
        self.epsilon_spent
    }

    /// How many readings were above the sensitivity and clamped to it. Local diagnostics for
    /// choosing the sensitivity: this count depends on the exact readings, so it must stay on
    /// the meter.
    pub const fn clamped(&self) -> usize {
        self.clamped
    }
}

/// The production generator for noise: [`StdRng`] (ChaCha12 in rand 0.10, a CSPRNG), seeded
/// from the operating system.
pub type NoiseRng = StdRng;

/// A [`NoiseRng`] seeded with 256 bits from the operating system's generator.
///
/// # Errors
///
/// [`Error::EntropyUnavailable`] if the operating system cannot provide randomness.
pub fn os_seeded_rng() -> Result<NoiseRng, Error> {
    StdRng::try_from_rng(&mut SysRng).map_err(|source| Error::EntropyUnavailable { source })
}

/// A [`LaplaceMechanism`] bundled with its noise generator: what a meter client holds.
///
/// [`AnalyticsNoise::from_os_entropy`] is the production constructor;
/// [`AnalyticsNoise::with_rng`] injects a generator (a seeded one in tests). Its `Debug`
/// output omits the generator's state.
pub struct AnalyticsNoise<R = NoiseRng> {
    mechanism: LaplaceMechanism,
    rng: R,
}

impl AnalyticsNoise<NoiseRng> {
    /// The mechanism with a fresh [`os_seeded_rng`].
    ///
    /// # Errors
    ///
    /// [`Error::EntropyUnavailable`] if the operating system cannot provide randomness.
    pub fn from_os_entropy(mechanism: LaplaceMechanism) -> Result<Self, Error> {
        Ok(Self {
            mechanism,
            rng: os_seeded_rng()?,
        })
    }
}

impl<R: CryptoRng> AnalyticsNoise<R> {
    /// The mechanism with the given cryptographically secure generator.
    pub const fn with_rng(mechanism: LaplaceMechanism, rng: R) -> Self {
        Self { mechanism, rng }
    }

    /// The mechanism.
    pub const fn mechanism(&self) -> &LaplaceMechanism {
        &self.mechanism
    }

    /// [`LaplaceMechanism::analytics_lane`] with this generator.
    ///
    /// # Errors
    ///
    /// [`Error::BudgetExhausted`] or [`Error::PeriodRegression`] from the accountant.
    pub fn analytics_lane(
        &mut self,
        readings: &[Wh],
        date: NaiveDate,
        accountant: &mut PrivacyAccountant,
    ) -> Result<AnalyticsLane, Error> {
        self.mechanism
            .analytics_lane(readings, date, accountant, &mut self.rng)
    }

    /// [`LaplaceMechanism::shared_lane`] with this generator: one fresh share of `plan` per
    /// slot of `span`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidOption`] for a plan of another clamp or ε; [`Error::BudgetExhausted`]
    /// or [`Error::PeriodRegression`] from the accountant.
    pub fn shared_lane(
        &mut self,
        plan: &SharePlan,
        span: &[Option<Wh>],
        date: NaiveDate,
        accountant: &mut PrivacyAccountant,
    ) -> Result<AnalyticsLane, Error> {
        self.mechanism
            .shared_lane(plan, span, date, accountant, &mut self.rng)
    }
}

impl<R> fmt::Debug for AnalyticsNoise<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AnalyticsNoise")
            .field("mechanism", &self.mechanism)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use crate::dp::BudgetPeriod;

    use super::*;

    fn wh(v: i64) -> Wh {
        Wh::try_new(v).expect("wh")
    }

    fn day() -> NaiveDate {
        NaiveDate::from_ymd_opt(2024, 3, 5).expect("date")
    }

    #[test]
    fn shared_lanes_charge_readings_not_slots_and_refuse_before_drawing() {
        let eps = Epsilon::try_new(0.5).expect("ε");
        let mechanism = LaplaceMechanism::try_new(wh(1_000), eps).expect("mechanism");
        let plan = SharePlan::try_new(4, 0, wh(1_000), eps).expect("plan");
        let mut rng = StdRng::seed_from_u64(1);
        let mut budget = PrivacyAccountant::new(
            "m",
            BudgetPeriod::Month,
            Epsilon::try_new(1.5).expect("budget"),
            day(),
        );
        // Three slots, two readings (one above the clamp): charged 2 · 0.5.
        let span = [Some(wh(300)), None, Some(wh(5_000))];
        let lane = mechanism
            .shared_lane(&plan, &span, day(), &mut budget, &mut rng)
            .expect("lane");
        assert_eq!(lane.readings().len(), 3);
        assert_eq!(lane.epsilon_spent(), 1.0);
        assert_eq!(lane.clamped(), 1);
        assert_eq!(budget.spent(), 1.0);
        // Two more readings would take the month to 2.0 > 1.5: refused, nothing drawn: the
        // generator goes on exactly as a twin that never saw the refused call.
        let before = budget.clone();
        let refused = mechanism.shared_lane(
            &plan,
            &[Some(wh(1)), Some(wh(1))],
            day(),
            &mut budget,
            &mut rng,
        );
        assert!(matches!(refused, Err(Error::BudgetExhausted { .. })));
        assert_eq!(budget, before);
        let roomy = || {
            PrivacyAccountant::new(
                "m",
                BudgetPeriod::Month,
                Epsilon::try_new(100.0).expect("budget"),
                day(),
            )
        };
        let mut twin = StdRng::seed_from_u64(1);
        let first = mechanism
            .shared_lane(&plan, &span, day(), &mut roomy(), &mut twin)
            .expect("twin");
        assert_eq!(first, lane);
        let next = mechanism
            .shared_lane(&plan, &span, day(), &mut roomy(), &mut rng)
            .expect("next");
        let twin_next = mechanism
            .shared_lane(&plan, &span, day(), &mut roomy(), &mut twin)
            .expect("twin next");
        assert_eq!(next, twin_next);
        // A plan of another ε or clamp is refused.
        let other = SharePlan::try_new(4, 0, wh(999), eps).expect("plan");
        assert!(matches!(
            mechanism.shared_lane(&other, &span, day(), &mut budget, &mut rng),
            Err(Error::InvalidOption { .. })
        ));
    }

    #[test]
    fn shared_lane_slots_are_clamped_readings_plus_centred_shares() {
        let eps = Epsilon::try_new(1.0).expect("ε");
        let mechanism = LaplaceMechanism::try_new(wh(500), eps).expect("mechanism");
        let plan = SharePlan::try_new(10, 2, wh(500), eps).expect("plan");
        let mut noise = AnalyticsNoise::with_rng(mechanism, StdRng::seed_from_u64(2));
        let span = [Some(wh(100)), None, Some(wh(900))];
        let rounds = 20_000;
        let mut budget = PrivacyAccountant::new(
            "m",
            BudgetPeriod::Month,
            Epsilon::try_new(1e6).expect("budget"),
            day(),
        );
        let mut sums = [0.0_f64; 3];
        for _ in 0..rounds {
            let lane = noise
                .shared_lane(&plan, &span, day(), &mut budget)
                .expect("lane");
            for (s, v) in sums.iter_mut().zip(lane.readings()) {
                *s += v.get() as f64;
            }
        }
        // Each slot's mean is its clamped reading within 5 standard errors of one share.
        let se = (plan.share().variance() / f64::from(rounds)).sqrt();
        for (sum, want) in sums.iter().zip([100.0, 0.0, 500.0]) {
            let mean = sum / f64::from(rounds);
            assert!((mean - want).abs() < 5.0 * se, "{mean} vs {want} ± {se}");
        }
    }
}
