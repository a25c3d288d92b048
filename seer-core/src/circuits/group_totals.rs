//! Group totals of the noised lane: the registered aggregate of distributed noise, beside its
//! plaintext twin and its release rule.
//!
//! Every meter of a noise group encrypts its window's readings (clamped to Δ, each slot of its
//! batch's span plus its noise share of [`SharePlan`]) at the same slots: interval i of the
//! window in slot i. A meter's batches of one window cover disjoint spans, so the sum of all
//! the group's batches of a window holds, in slot i, the group's total of interval i plus one
//! share per meter whose span covers slot i (its **presence** in the slot). The circuit is the
//! homomorphic sum of the lanes, in the order given (the key authority sorts its inputs by
//! meter id and sequence), followed by the key authority's **top-up** added under encryption:
//! per slot, the shares of the k − present meters missing from the slot (nothing where at
//! least k are present), drawn fresh for this one decryption and never stored. Only that
//! topped-up ciphertext is decrypted, so no value the key authority ever sees carries less than
//! its floor of noise, and what is released carries at least one full draw of scale Δ/ε per
//! interval from parties outside any tolerated coalition: each home's reading is ε-DP in it.
//! The circuit combines no meter with another's slots: meter m's reading i is a term of the
//! released total i, and of nothing else, so no masking is needed.
//!
//! The release rule ([`releasable_hours`], [`released_hours`]) releases an hour only when every
//! interval of it had at least [`SharePlan::presence_floor`] meters present, rounds each slot
//! to whole Wh (the lanes hold whole Wh; a slot further than [`MAX_ROUNDING_WH`] from a whole
//! number is refused, naming the slot but no value) and sums the intervals into the hour.

use rand::CryptoRng;
use seer_ckks::{Ciphertext, Evaluator};

use crate::dp::SharePlan;
use crate::error::Error;

/// The furthest a decrypted slot may be from a whole number of Wh: CKKS's error on a sum of
/// even 10⁵ fresh lanes at the billing scale is below 10⁻³ Wh, so a slot further away holds
/// something other than whole Wh (a meter encrypted fractions, or the key is wrong).
pub const MAX_ROUNDING_WH: f64 = 0.25;

/// The fewest meters present in a slot for its hour to be released, whatever the plan: a plan
/// for a group of one or two (whose floor would be one meter) never makes a total out of a
/// single lane.
pub const MIN_PRESENT: u32 = 3;

/// The circuit's first step: the sum of `lanes` in the order given.
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

/// The circuit's second step: `sum` restricted to the slots of the `releasable` hours (each
/// slot multiplied by its 0/1 indicator, one level) plus the top-up `values` (whole Wh per
/// slot, from [`top_up`]) added under encryption. Slots of withheld hours, and slots past the
/// window, are zero in what is decrypted: a withheld hour's slot may hold fewer meters than
/// the floor (one meter's reading under 1/k of a draw), which nobody, the key authority
/// included, may see.
///
/// # Errors
/// When the flags do not describe whole hours within the slots, no hour is releasable, or the
/// values do not fit the slots.
pub fn released_total(
    evaluator: &Evaluator,
    sum: &Ciphertext,
    releasable: &[bool],
    slots_per_hour: usize,
    values: &[i64],
) -> Result<Ciphertext, Error> {
    let mask = release_mask(releasable, slots_per_hour, evaluator.context().slots())?;
    let kept = evaluator.multiply_plain(sum, &mask)?;
    // |value| ≤ MAX_NOISE-scale counts, far below 2⁵³: the conversion is exact.
    let plain: Vec<f64> = values.iter().map(|v| *v as f64).collect();
    Ok(evaluator.add_plain(&kept, &plain)?)
}

/// The 0/1 indicator of the slots of the `releasable` hours, over `slots` slots.
fn release_mask(
    releasable: &[bool],
    slots_per_hour: usize,
    slots: usize,
) -> Result<Vec<f64>, Error> {
    let window = releasable.len().saturating_mul(slots_per_hour);
    if slots_per_hour == 0 || window > slots || !releasable.iter().any(|r| *r) {
        return Err(Error::Isolation {
            reason: format!(
                "{} hours of {slots_per_hour} slots, none releasable or beyond {slots} slots",
                releasable.len()
            ),
        });
    }
    let mut mask = vec![0.0; slots];
    for (slot, m) in mask.iter_mut().enumerate().take(window) {
        if releasable[slot / slots_per_hour] {
            *m = 1.0;
        }
    }
    Ok(mask)
}

/// The plaintext twin of [`evaluate`] followed by [`released_total`]: the slot-wise sum of the
/// lanes' values (whole Wh), zero outside the `releasable` hours, plus the top-up, over
/// `slots` slots.
#[must_use]
pub fn plaintext_twin(
    lanes: &[Vec<i64>],
    releasable: &[bool],
    slots_per_hour: usize,
    top_up: &[i64],
    slots: usize,
) -> Vec<i64> {
    let mut sum = vec![0_i64; slots];
    for lane in lanes {
        for (s, v) in sum.iter_mut().zip(lane) {
            *s += v;
        }
    }
    for (slot, s) in sum.iter_mut().enumerate() {
        let hour = slot.checked_div(slots_per_hour).unwrap_or(usize::MAX);
        if !releasable.get(hour).copied().unwrap_or(false) {
            *s = 0;
        }
    }
    for (s, v) in sum.iter_mut().zip(top_up) {
        *s += v;
    }
    sum
}

/// Checks the window's shape: `presence.len()` slots, a whole number of hours of
/// `slots_per_hour`.
fn check_window(presence: &[u32], slots_per_hour: usize) -> Result<(), Error> {
    if slots_per_hour == 0 || presence.is_empty() || !presence.len().is_multiple_of(slots_per_hour)
    {
        return Err(Error::Isolation {
            reason: format!(
                "a window of {} slots is not whole hours of {slots_per_hour}",
                presence.len()
            ),
        });
    }
    Ok(())
}

/// Which hours of a window may be released: those whose every slot had at least the plan's
/// [`SharePlan::presence_floor`] and [`MIN_PRESENT`] meters present (`presence[i]`: meters
/// whose span covers slot i).
///
/// # Errors
/// When the window is not whole hours.
pub fn releasable_hours(
    plan: &SharePlan,
    presence: &[u32],
    slots_per_hour: usize,
) -> Result<Vec<bool>, Error> {
    check_window(presence, slots_per_hour)?;
    let floor = plan.presence_floor().max(MIN_PRESENT);
    Ok(presence
        .chunks(slots_per_hour)
        .map(|hour| hour.iter().all(|p| *p >= floor))
        .collect())
}

/// The key authority's top-up for a window: for each slot of a `releasable` hour, one draw of
/// the shares of the meters missing below k ([`SharePlan::top_up`]); zero elsewhere (slots of
/// withheld hours are never released, so they need none).
///
/// # Errors
/// When the window is not whole hours or `releasable` does not have one entry per hour.
pub fn top_up<R: CryptoRng + ?Sized>(
    plan: &SharePlan,
    presence: &[u32],
    releasable: &[bool],
    slots_per_hour: usize,
    rng: &mut R,
) -> Result<Vec<i64>, Error> {
    check_window(presence, slots_per_hour)?;
    if releasable.len() != presence.len() / slots_per_hour {
        return Err(Error::Isolation {
            reason: format!(
                "{} hour flags for a window of {} hours",
                releasable.len(),
                presence.len() / slots_per_hour
            ),
        });
    }
    Ok(presence
        .iter()
        .enumerate()
        .map(|(slot, present)| {
            if releasable[slot / slots_per_hour] {
                plan.top_up(*present).map_or(0, |t| t.sample(rng))
            } else {
                0
            }
        })
        .collect())
}

/// One released hour of a group's totals.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HourTotal {
    /// Whole Wh per reading interval, with the noise.
    pub per_interval: Vec<i64>,
    /// Their sum: the hour's whole Wh.
    pub total: i64,
    /// The fewest meters present in any interval of the hour.
    pub min_present: u32,
}

/// The release rule over a decrypted, topped-up window: for each hour, `Some` totals when it
/// is `releasable`, `None` otherwise. Each released slot is rounded to whole Wh.
///
/// # Errors
/// [`Error::Isolation`] when the window is not whole hours or longer than the decrypted
/// slots, or a released slot is not within [`MAX_ROUNDING_WH`] of a whole number of Wh (the
/// reason names the slot, not its value).
pub fn released_hours(
    decrypted: &[f64],
    presence: &[u32],
    releasable: &[bool],
    slots_per_hour: usize,
) -> Result<Vec<Option<HourTotal>>, Error> {
    check_window(presence, slots_per_hour)?;
    let refuse = |reason: String| Err(Error::Isolation { reason });
    if presence.len() > decrypted.len() {
        return refuse(format!(
            "a window of {} slots exceeds the {} slots",
            presence.len(),
            decrypted.len()
        ));
    }
    let mut hours = Vec::with_capacity(releasable.len());
    for (h, release) in releasable.iter().enumerate() {
        if !release {
            hours.push(None);
            continue;
        }
        let slots = h * slots_per_hour..(h + 1) * slots_per_hour;
        let mut per_interval = Vec::with_capacity(slots_per_hour);
        for slot in slots.clone() {
            let value = decrypted[slot];
            let whole = value.round();
            if !whole.is_finite() || (value - whole).abs() > MAX_ROUNDING_WH || whole.abs() > 2e15 {
                return refuse(format!("slot {slot} of the summed lane is not whole Wh"));
            }
            // |whole| ≤ 2·10¹⁵ < 2⁵³: the conversion is exact.
            per_interval.push(whole as i64);
        }
        hours.push(Some(HourTotal {
            total: per_interval.iter().sum(),
            per_interval,
            min_present: presence[slots].iter().copied().min().unwrap_or(0),
        }));
    }
    Ok(hours)
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
            Wh::try_new(3_450).expect("wh"),
            Epsilon::try_new(1.0).expect("eps"),
        )
        .expect("plan")
    }

    #[test]
    fn the_encrypted_total_equals_its_plaintext_twin_hour_by_hour() {
        let ctx = CkksContext::new(ParameterSet::N8192_L2_SEC128).expect("context");
        let keygen = KeyGenerator::new(&ctx).expect("keys");
        let encryptor = Encryptor::new(&ctx, &keygen.public_key().expect("pk")).expect("enc");
        let decryptor = Decryptor::new(&ctx, &keygen.secret_key().expect("sk")).expect("dec");
        let evaluator = Evaluator::new(&ctx, None, None);
        // 12 homes, k = 10, floor 5. A day of 96 quarter-hours; homes 0..=6 cover the whole
        // day, homes 7..=11 only its first 12 hours (they went offline at noon).
        let plan = plan(12, 2);
        assert_eq!(plan.presence_floor(), 5);
        let mut rng = StdRng::seed_from_u64(16);
        let slots: usize = 96;
        let span = |home: usize| if home < 7 { slots } else { 48 };
        let lanes: Vec<Vec<i64>> = (0..12)
            .map(|home: usize| {
                let day: Vec<Wh> = (0..span(home))
                    .map(|q| Wh::try_new(((home * 37 + q * 53) % 4_000) as i64).expect("wh"))
                    .collect();
                plan.noise_readings(&day, &mut rng)
            })
            .collect();
        let mut presence = vec![0_u32; slots];
        for home in 0..12 {
            for p in &mut presence[..span(home)] {
                *p += 1;
            }
        }
        let releasable = releasable_hours(&plan, &presence, 4).expect("hours");
        assert!(releasable.iter().all(|r| *r), "7 present ≥ the floor of 5");
        let top_up = top_up(&plan, &presence, &releasable, 4, &mut rng).expect("top-up");
        // 12 present in the morning (≥ k: no top-up), 7 in the afternoon (3 shares added).
        assert!(top_up[..48].iter().all(|v| *v == 0));
        assert!(top_up[48..].iter().any(|v| *v != 0));

        let cts: Vec<Ciphertext> = lanes
            .iter()
            .map(|lane| {
                let values: Vec<f64> = lane.iter().map(|v| *v as f64).collect();
                encryptor.encrypt_values(&values).expect("encrypt")
            })
            .collect();
        let sum = evaluate(&evaluator, &cts).expect("sum");
        let topped = released_total(&evaluator, &sum, &releasable, 4, &top_up).expect("top-up");
        let decrypted = decryptor.decrypt_values(&topped).expect("decrypt");
        let twin = plaintext_twin(&lanes, &releasable, 4, &top_up, slots);
        let hours = released_hours(&decrypted, &presence, &releasable, 4).expect("release");
        assert_eq!(hours.len(), 24);
        for (h, hour) in hours.iter().enumerate() {
            let hour = hour.as_ref().expect("released");
            assert_eq!(hour.per_interval, twin[4 * h..4 * h + 4], "hour {h}");
            assert_eq!(hour.total, twin[4 * h..4 * h + 4].iter().sum::<i64>());
            assert_eq!(hour.min_present, if h < 12 { 12 } else { 7 });
        }
    }

    #[test]
    fn withheld_hours_and_slots_past_the_window_decrypt_to_zero() {
        let ctx = CkksContext::new(ParameterSet::N8192_L2_SEC128).expect("context");
        let keygen = KeyGenerator::new(&ctx).expect("keys");
        let encryptor = Encryptor::new(&ctx, &keygen.public_key().expect("pk")).expect("enc");
        let decryptor = Decryptor::new(&ctx, &keygen.secret_key().expect("sk")).expect("dec");
        let evaluator = Evaluator::new(&ctx, None, None);
        // Two hours of four slots; the second withheld. The lane also writes past the window.
        let mut values = vec![0.0; ctx.slots()];
        for (slot, v) in values.iter_mut().enumerate().take(12) {
            *v = 1_000.0 + slot as f64;
        }
        let lane = encryptor.encrypt_values(&values).expect("encrypt");
        let releasable = [true, false];
        let top_up = [5, -5, 0, 7, 0, 0, 0, 0];
        let total = released_total(&evaluator, &lane, &releasable, 4, &top_up).expect("total");
        let decrypted = decryptor.decrypt_values(&total).expect("decrypt");
        let twin = plaintext_twin(
            &[values.iter().map(|v| *v as i64).collect()],
            &releasable,
            4,
            &top_up,
            ctx.slots(),
        );
        for (slot, (d, t)) in decrypted.iter().zip(&twin).enumerate() {
            assert!(
                (d - *t as f64).abs() < MAX_ROUNDING_WH,
                "slot {slot}: {d} vs {t}"
            );
        }
        assert_eq!(&twin[..4], &[1_005, 996, 1_002, 1_010]);
        assert!(twin[4..].iter().all(|v| *v == 0));
        assert!(released_total(&evaluator, &lane, &[false, false], 4, &top_up).is_err());
    }

    #[test]
    fn hours_below_the_presence_floor_are_withheld_and_get_no_top_up() {
        let plan = plan(12, 2);
        // Hour 0: 5 present everywhere (the floor); hour 1: one slot with 4.
        let presence = [5, 5, 5, 5, 9, 4, 9, 9];
        let releasable = releasable_hours(&plan, &presence, 4).expect("hours");
        assert_eq!(releasable, [true, false]);
        // A plan for a group of two has a floor of one meter; three are needed all the same.
        let pair = super::tests::plan(2, 0);
        assert_eq!(pair.presence_floor(), 1);
        assert_eq!(
            releasable_hours(&pair, &[3, 3, 2, 3], 4).expect("hours"),
            [false]
        );
        let mut rng = StdRng::seed_from_u64(3);
        let top_up = top_up(&plan, &presence, &releasable, 4, &mut rng).expect("top-up");
        assert!(top_up[4..].iter().all(|v| *v == 0));
        let decrypted = [1.0, 2.0, 3.0, 4.0, 0.3, 0.7, 5.5, 1.0];
        let hours = released_hours(&decrypted, &presence, &releasable, 4).expect("release");
        assert_eq!(hours[0].as_ref().expect("hour 0").total, 10);
        assert_eq!(
            hours[1], None,
            "withheld: its fractional slot is never looked at"
        );
    }

    #[test]
    fn what_is_not_whole_wh_or_not_whole_hours_is_refused() {
        let plan = plan(6, 0);
        let presence = [6_u32; 4];
        let all = [true];
        let ok = [10.0, 20.000_1, -3.0, 4.0];
        assert!(released_hours(&ok, &presence, &all, 4).is_ok());
        let fractional = [10.0, 20.5, -3.0, 4.0];
        let error = released_hours(&fractional, &presence, &all, 4)
            .expect_err("a half Wh")
            .to_string();
        assert!(error.contains("slot 1"), "{error}");
        assert!(!error.contains("20.5"), "the value is not named: {error}");
        assert!(released_hours(&[f64::NAN; 4], &presence, &all, 4).is_err());
        assert!(released_hours(&ok, &presence[..3], &all, 4).is_err());
        assert!(released_hours(&ok[..2], &presence, &all, 4).is_err());
        assert!(releasable_hours(&plan, &presence, 0).is_err());
        let mut rng = StdRng::seed_from_u64(1);
        assert!(top_up(&plan, &presence, &[true, true], 4, &mut rng).is_err());
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
