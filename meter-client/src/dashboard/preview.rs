//! The ε control's preview: what the utility's analytics would receive of this home's readings
//! at another ε, drawn fresh on this machine and never sent or stored.
//!
//! Each reading is clamped to Δ and one full discrete Laplace draw of scale Δ/ε is added (the
//! noise a released interval total carries for it: [`seer_core::dp`]), with the same exact
//! sampler and an OS-seeded CSPRNG. The budget line divides what is left of the month's
//! analytics budget by ε: how many more readings the accountant would let through at that ε.

use rand::CryptoRng;
use seer_core::dp::{DiscreteLaplace, Epsilon, PrivacyAccountant};
use seer_core::units::Wh;
use serde::Serialize;

use crate::batch::QueuedReading;
use crate::error::Error;

/// Smallest and largest ε the control offers.
pub const EPSILON_RANGE: (f64, f64) = (0.001, 10.0);

/// One previewed reading.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PreviewPoint {
    /// The interval's start, `YYYY-MM-DDTHH:MM`.
    pub start: String,
    /// The reading in Wh.
    pub wh: i64,
    /// What the analytics would receive: min(wh, Δ) plus a fresh draw.
    pub noisy_wh: i64,
}

/// The preview at one ε.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Preview {
    /// ε per reading.
    pub epsilon: f64,
    /// The noise scale Δ/ε in Wh.
    pub scale_wh: f64,
    /// The mean absolute noise of this preview's draws, in Wh.
    pub mean_abs_noise_wh: f64,
    /// Readings the month's remaining analytics budget allows at this ε.
    pub readings_left: u64,
    /// ε left this month.
    pub epsilon_left: f64,
    /// The previewed readings.
    pub points: Vec<PreviewPoint>,
}

/// Draws a preview of `readings` at `epsilon` with clamp `sensitivity`; `budget` is the
/// month's accountant (None: nothing spent yet, `monthly_budget` left).
///
/// # Errors
/// An ε outside [`EPSILON_RANGE`] or a sensitivity the sampler refuses.
pub fn preview<R: CryptoRng + ?Sized>(
    readings: &[QueuedReading],
    sensitivity: Wh,
    epsilon: f64,
    budget: Option<&PrivacyAccountant>,
    monthly_budget: Epsilon,
    rng: &mut R,
) -> Result<Preview, Error> {
    if !(EPSILON_RANGE.0..=EPSILON_RANGE.1).contains(&epsilon) {
        return Err(Error::InvalidSetting {
            setting: "epsilon",
            reason: format!(
                "{epsilon} is outside {} ..= {}",
                EPSILON_RANGE.0, EPSILON_RANGE.1
            ),
        });
    }
    let eps = Epsilon::try_new(epsilon)?;
    let laplace = DiscreteLaplace::for_mechanism(sensitivity, eps)?;
    let mut abs_sum = 0.0;
    let points: Vec<PreviewPoint> = readings
        .iter()
        .map(|r| {
            let clamped = r.energy.get().min(sensitivity.get());
            let noise = laplace.sample(rng);
            abs_sum += noise.unsigned_abs() as f64;
            PreviewPoint {
                start: r.start.format("%Y-%m-%dT%H:%M").to_string(),
                wh: r.energy.get(),
                noisy_wh: clamped.saturating_add(noise),
            }
        })
        .collect();
    let epsilon_left = budget.map_or(monthly_budget.get(), PrivacyAccountant::remaining);
    // Whole readings: floor(left / ε), never counting a partial one.
    let readings_left = (epsilon_left / epsilon).floor().max(0.0) as u64;
    Ok(Preview {
        epsilon,
        scale_wh: laplace.scale(),
        mean_abs_noise_wh: if points.is_empty() {
            0.0
        } else {
            abs_sum / points.len() as f64
        },
        readings_left,
        epsilon_left,
        points,
    })
}

#[cfg(test)]
mod tests {
    use chrono::{NaiveDate, TimeDelta};
    use rand::SeedableRng as _;
    use seer_core::dp::NoiseRng;

    use super::*;

    fn readings(n: i64) -> Vec<QueuedReading> {
        let t0 = NaiveDate::from_ymd_opt(2010, 1, 1)
            .unwrap()
            .and_hms_opt(0, 0, 0)
            .unwrap();
        (0..n)
            .map(|i| QueuedReading {
                start: t0 + TimeDelta::minutes(15 * i),
                energy: Wh::try_new(200).unwrap(),
                interval_s: 900,
                analytics: None,
                sequence: 1,
            })
            .collect()
    }

    #[test]
    fn mean_absolute_noise_matches_the_laplace_scale() {
        // Δ = 3450 Wh, ε = 0.5: b = 6900 Wh; E|X| of the discrete Laplace of parameter b is
        // 2e^{-1/b}/(1 - e^{-2/b}) = b within 1e-4 relative. 20 000 draws: the standard error
        // of the mean |X| is b/√20000 ≈ 0.7 %, so 3 % is over four standard errors.
        let mut rng = NoiseRng::seed_from_u64(7);
        let budget = Epsilon::try_new(100.0).unwrap();
        let p = preview(
            &readings(20_000),
            Wh::try_new(3450).unwrap(),
            0.5,
            None,
            budget,
            &mut rng,
        )
        .unwrap();
        assert!((p.scale_wh - 6900.0).abs() < 1e-9);
        let rel = (p.mean_abs_noise_wh - 6900.0).abs() / 6900.0;
        assert!(rel < 0.03, "mean |noise| {} vs 6900", p.mean_abs_noise_wh);
        // Clamp then noise: every noisy value is 200 + its draw, and the draws differ.
        assert!(p.points.iter().any(|q| q.noisy_wh != 200));
        // 100 / 0.5 readings left.
        assert_eq!(p.readings_left, 200);
    }

    #[test]
    fn a_larger_epsilon_previews_less_noise_and_more_readings() {
        let mut rng = NoiseRng::seed_from_u64(8);
        let budget = Epsilon::try_new(10.0).unwrap();
        let r = readings(4000);
        let delta = Wh::try_new(3450).unwrap();
        let lo = preview(&r, delta, 0.1, None, budget, &mut rng).unwrap();
        let hi = preview(&r, delta, 1.0, None, budget, &mut rng).unwrap();
        assert!(hi.mean_abs_noise_wh < lo.mean_abs_noise_wh / 5.0);
        assert_eq!(lo.readings_left, 100);
        assert_eq!(hi.readings_left, 10);
    }

    #[test]
    fn refuses_epsilon_out_of_range() {
        let mut rng = NoiseRng::seed_from_u64(9);
        let budget = Epsilon::try_new(1.0).unwrap();
        let delta = Wh::try_new(3450).unwrap();
        for eps in [0.0, -1.0, f64::NAN, 11.0] {
            assert!(preview(&readings(1), delta, eps, None, budget, &mut rng).is_err());
        }
    }
}
