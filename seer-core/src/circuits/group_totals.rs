//! Group totals of the noised lane: the registered computation of distributed noise, beside
//! its plaintext twin and its release rule.
//!
//! Every meter of a group encrypts its window's readings (clamped to Δ, each plus its noise
//! share of [`SharePlan`]) at the same slots: reading i of the window in slot i. The circuit
//! is the homomorphic sum of the group's lanes, in the order given (both the utility and the
//! key authority sort inputs by meter id, so the sum is byte-identical between them). It
//! combines no meter with another's slots: the sum of slot i is the group's total of
//! reading i, which is exactly what is released, so no masking is needed (each meter's
//! reading i is a term of the released total i, and of nothing else).
//!
//! [`release`] turns the decrypted sum into released totals: each slot is rounded to whole Wh
//! (the lanes hold whole Wh; a slot further than [`MAX_ROUNDING_WH`] from a whole number is
//! refused, naming the slot but no value), the key authority's top-up for missing shares is
//! added ([`SharePlan::top_up`]), and the quarter-hours are summed into hours. What is released
//! then carries at least one full discrete Laplace draw of scale Δ/ε per quarter-hour from
//! parties outside any coalition of the tolerated size: each home's reading is ε-DP in it.

use rand::CryptoRng;
use seer_ckks::{Ciphertext, Evaluator};

use crate::dp::SharePlan;
use crate::error::Error;

/// The furthest a decrypted slot may be from a whole number of Wh: CKKS's error on a sum of
/// even 10⁵ fresh lanes at the billing scale is below 10⁻³ Wh, so a slot further away holds
/// something other than whole Wh (a meter encrypted fractions, or the key is wrong).
pub const MAX_ROUNDING_WH: f64 = 0.25;

/// The circuit: the sum of `lanes` in the order given.
///
/// # Errors
/// When `lanes` is empty or the lanes do not share a parameter set and level.
pub fn evaluate(evaluator: &Evaluator, lanes: &[Ciphertext]) -> Result<Ciphertext, Error> {
    if lanes.is_empty() {
        return Err(Error::Isolation {
            reason: "a group total needs at least one lane".into(),
        });
    }
    Ok(evaluator.add_many(lanes)?)
}

/// The plaintext twin of [`evaluate`]: the slot-wise sum of the lanes' values (whole Wh),
/// over `readings` slots.
#[must_use]
pub fn plaintext_twin(lanes: &[Vec<i64>], readings: usize) -> Vec<i64> {
    let mut sum = vec![0_i64; readings];
    for lane in lanes {
        for (s, v) in sum.iter_mut().zip(lane) {
            *s += v;
        }
    }
    sum
}

/// A group's released totals of one window.
#[derive(Clone, Debug, PartialEq)]
pub struct ReleasedTotals {
    /// Whole Wh per reading interval (a quarter-hour for 15-minute lanes), with the noise.
    pub per_reading: Vec<i64>,
    /// Whole Wh per hour: the sums of `readings_per_hour` consecutive values of
    /// [`ReleasedTotals::per_reading`].
    pub per_hour: Vec<i64>,
    /// Meters whose lanes are in the sum.
    pub present: u32,
    /// The shape of the key authority's top-up (missing shares over the honest floor), 0 when
    /// none was needed.
    pub top_up_shape: f64,
}

/// The release rule: rounds the first `readings` decrypted slots of a group's summed lane to
/// whole Wh, adds the key authority's top-up for `present` meters out of `plan`'s group, and
/// sums them into hours of `readings_per_hour` readings.
///
/// # Errors
/// [`Error::Isolation`] when `present` exceeds the group, the window is not a whole number of
/// hours or longer than the decrypted slots, or a slot is not within [`MAX_ROUNDING_WH`] of a
/// whole number of Wh.
pub fn release<R: CryptoRng + ?Sized>(
    decrypted: &[f64],
    readings: usize,
    readings_per_hour: usize,
    plan: &SharePlan,
    present: u32,
    rng: &mut R,
) -> Result<ReleasedTotals, Error> {
    let refuse = |reason: String| Err(Error::Isolation { reason });
    if present == 0 || present > plan.group_size() {
        return refuse(format!(
            "{present} meters present in a group of {}",
            plan.group_size()
        ));
    }
    if readings_per_hour == 0 || readings == 0 || !readings.is_multiple_of(readings_per_hour) {
        return refuse(format!(
            "a window of {readings} readings is not whole hours of {readings_per_hour}"
        ));
    }
    if readings > decrypted.len() {
        return refuse(format!(
            "a window of {readings} readings exceeds the {} slots",
            decrypted.len()
        ));
    }
    let top_up = plan.top_up(present);
    let mut per_reading = Vec::with_capacity(readings);
    for (slot, value) in decrypted[..readings].iter().enumerate() {
        let whole = value.round();
        if !whole.is_finite() || (value - whole).abs() > MAX_ROUNDING_WH || whole.abs() > 2e15 {
            return refuse(format!("slot {slot} of the summed lane is not whole Wh"));
        }
        // |whole| ≤ 2·10¹⁵ < 2⁵³: the conversion is exact.
        let wh = whole as i64;
        per_reading.push(wh + top_up.map_or(0, |t| t.sample(rng)));
    }
    let per_hour = per_reading
        .chunks(readings_per_hour)
        .map(|hour| hour.iter().sum())
        .collect();
    Ok(ReleasedTotals {
        per_reading,
        per_hour,
        present,
        top_up_shape: top_up.map_or(0.0, |t| t.shape()),
    })
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;
    use seer_ckks::{CkksContext, Decryptor, Encryptor, KeyGenerator, ParameterSet};

    use super::*;
    use crate::dp::Epsilon;
    use crate::units::Wh;

    fn plan(n: u32, t: u32) -> SharePlan {
        SharePlan::try_new(
            n,
            t,
            Wh::try_new(3_623).expect("wh"),
            Epsilon::try_new(1.0).expect("eps"),
        )
        .expect("plan")
    }

    #[test]
    fn the_encrypted_sum_equals_its_plaintext_twin_and_releases_whole_hours() {
        let ctx = CkksContext::new(ParameterSet::N8192_L2_SEC128).expect("context");
        let keygen = KeyGenerator::new(&ctx).expect("keys");
        let encryptor = Encryptor::new(&ctx, &keygen.public_key().expect("pk")).expect("enc");
        let decryptor = Decryptor::new(&ctx, &keygen.secret_key().expect("sk")).expect("dec");
        let evaluator = Evaluator::new(&ctx, None, None);
        let plan = plan(12, 2);
        let mut rng = StdRng::seed_from_u64(16);
        // A day of 96 quarter-hours for 12 homes: readings up to 4 kWh (some above Δ, clamped
        // by the share plan), each with its share.
        let readings: usize = 96;
        let lanes: Vec<Vec<i64>> = (0..12)
            .map(|home: i64| {
                let day: Vec<Wh> = (0..readings as i64)
                    .map(|q| Wh::try_new((home * 37 + q * 53) % 4_000).expect("wh"))
                    .collect();
                plan.noise_readings(&day, &mut rng)
            })
            .collect();
        let cts: Vec<Ciphertext> = lanes
            .iter()
            .map(|lane| {
                let values: Vec<f64> = lane.iter().map(|v| *v as f64).collect();
                encryptor.encrypt_values(&values).expect("encrypt")
            })
            .collect();
        let sum = evaluate(&evaluator, &cts).expect("sum");
        let decrypted = decryptor.decrypt_values(&sum).expect("decrypt");
        let twin = plaintext_twin(&lanes, readings);
        // All 12 present (≥ the honest floor of 10): no top-up, so the release is the twin.
        let released = release(&decrypted, readings, 4, &plan, 12, &mut rng).expect("release");
        assert_eq!(released.per_reading, twin);
        assert_eq!(released.top_up_shape, 0.0);
        assert_eq!(released.per_hour.len(), 24);
        for (h, total) in released.per_hour.iter().enumerate() {
            assert_eq!(
                *total,
                twin[4 * h..4 * h + 4].iter().sum::<i64>(),
                "hour {h}"
            );
        }
        // Only 6 present: the top-up (4 shares of 10) moves the totals off the twin's.
        let partial = release(&decrypted, readings, 4, &plan, 6, &mut rng).expect("release");
        assert!((partial.top_up_shape - 0.4).abs() < 1e-12);
        assert_ne!(partial.per_reading, twin);
    }

    #[test]
    fn what_is_not_whole_wh_or_not_whole_hours_is_refused() {
        let plan = plan(4, 0);
        let mut rng = StdRng::seed_from_u64(1);
        let ok = vec![10.0, 20.000_1, -3.0, 4.0];
        assert!(release(&ok, 4, 4, &plan, 4, &mut rng).is_ok());
        let fractional = vec![10.0, 20.5, -3.0, 4.0];
        let error = release(&fractional, 4, 4, &plan, 4, &mut rng)
            .expect_err("a half Wh")
            .to_string();
        assert!(error.contains("slot 1"), "{error}");
        assert!(!error.contains("20.5"), "the value is not named: {error}");
        assert!(release(&[f64::NAN; 4], 4, 4, &plan, 4, &mut rng).is_err());
        assert!(release(&ok, 3, 4, &plan, 4, &mut rng).is_err());
        assert!(release(&ok, 8, 4, &plan, 4, &mut rng).is_err());
        assert!(release(&ok, 4, 4, &plan, 5, &mut rng).is_err());
        assert!(release(&ok, 4, 4, &plan, 0, &mut rng).is_err());
        assert!(
            evaluate(
                &Evaluator::new(
                    &CkksContext::new(ParameterSet::N8192_L2_SEC128).expect("ctx"),
                    None,
                    None
                ),
                &[]
            )
            .is_err()
        );
    }
}
