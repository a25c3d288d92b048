//! Every engine operation against plaintext arithmetic on random vectors.
//!
//! Error bound: after at most one multiplication at a 40-bit scale, every slot is within
//! 1e-6 · max(1, ‖expected‖∞) of the plaintext result (the bound); deeper circuits
//! state their own bound.
//!
//! # Absolute noise model (n = 8192, 40-bit scale)
//!
//! CKKS error is *absolute*: it does not shrink with the result. A vector bound relative to
//! `‖expected‖∞` is fine, but a one-slot result that cancels (an inner product of ~1 built
//! from terms of ~1e4) must be bounded by the noise that went into it, not by itself.
//! With the scales exact (canonical scales follow SEAL's own order of operations), the
//! model is:
//!
//! * a freshly encrypted slot carries absolute error `≤ EPS_FRESH`, whatever its magnitude;
//!   a rescale (plus the encoding of a plaintext operand) adds at most `EPS_FRESH` per slot;
//! * each rotation (one key switch) adds at most `EPS_ROT` to a slot. It is dominated by a
//!   deterministic, key-dependent bias on a few slots — slot 0 among them — so it does not
//!   average out over ciphertexts (p99 of all slots 1.6e-8, max 1.7e-6);
//! * `sum_slots(k)` (`log2 k` rotations over `k` slots), by the triangle inequality:
//!   `≤ k·EPS_FRESH + log2(k)·EPS_ROT` (see [`sum_bound`]);
//! * `inner_product(a, w)` (multiply_plain, rescale, then `sum_slots(k)`, `k` = `w.len()`
//!   rounded up to a power of two): the fresh error is weighted, `Σ w_i·e_i ≤ ‖w‖₁·EPS_FRESH`,
//!   so `≤ (‖w‖₁ + k)·EPS_FRESH + log2(k)·EPS_ROT` (see [`inner_product_bound`]).
//!
//! Calibration (`N8192_L2_SEC128`, 13 key sets, values up to 1e4): fresh slots max 1.44e-8
//! over ~3.4M samples (median 6.1e-10, rms 1.24e-9, same at |a| ≤ 1, 100, 1e4); fresh +
//! multiply_plain + rescale max 1.85e-8; one rotation max 1.66e-6 (0.54e-6..1.66e-6 per
//! key set); `sum_slots(128)` slot 0 max 1.95e-6, `sum_slots(4096)` max 2.83e-6; inner
//! product of 100 values and weights in [-100, 100] max 4.5e-6 (≤ 8.5e-10·‖w‖₁). The
//! constants keep a ≥ 4× margin over those maxima; the resulting bounds (~6e-5 for a sum of
//! 128 slots, ~4e-4 for a 100-term inner product) still fail a dropped slot, a wrong
//! rotation or a scale error (errors of order |a_i| ≈ 50 in a sum, |a_i·w_i| ≈ 2500 in an
//! inner product) by about six orders of magnitude.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests and benches fail loudly"
)]

mod common;

use common::{assert_abs, assert_close, n8192, n16384};
use proptest::prelude::*;
use seer_ckks::*;

const TOL: f64 = 1e-6;

/// Absolute error bound of a fresh slot, and of what one rescale adds to a slot: 4.2× the
/// worst measured fresh error (1.44e-8), ~50× its rms.
const EPS_FRESH: f64 = 6e-8;

/// Absolute error one rotation (key switch) adds to a slot: 4.8× the worst measured
/// (1.66e-6 over 13 key sets).
const EPS_ROT: f64 = 8e-6;

/// Absolute error bound of `sum_slots(k)` on a fresh ciphertext (see the module docs).
fn sum_bound(k: usize) -> f64 {
    k as f64 * EPS_FRESH + f64::from(k.trailing_zeros()) * EPS_ROT
}

/// Absolute error bound of `inner_product(fresh, w)` in slot 0 (see the module docs).
fn inner_product_bound(w: &[f64]) -> f64 {
    let k = w.len().next_power_of_two();
    let l1: f64 = w.iter().map(|x| x.abs()).sum();
    (l1 + k as f64) * EPS_FRESH + f64::from(k.trailing_zeros()) * EPS_ROT
}

fn vec_strategy(len: usize) -> impl Strategy<Value = Vec<f64>> {
    prop::collection::vec(-100.0f64..100.0, len)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, .. ProptestConfig::default() })]

    #[test]
    fn encrypt_decrypt(a in vec_strategy(64)) {
        let f = n8192();
        assert_abs(&f.decrypt(&f.encrypt(&a), 64), &a, EPS_FRESH);
    }

    #[test]
    fn add_sub_negate(a in vec_strategy(64), b in vec_strategy(64)) {
        let f = n8192();
        let (ca, cb) = (f.encrypt(&a), f.encrypt(&b));
        let ev = &f.evaluator;
        let sum: Vec<f64> = a.iter().zip(&b).map(|(x, y)| x + y).collect();
        let diff: Vec<f64> = a.iter().zip(&b).map(|(x, y)| x - y).collect();
        let neg: Vec<f64> = a.iter().map(|x| -x).collect();
        assert_close(&f.decrypt(&ev.add(&ca, &cb).unwrap(), 64), &sum, TOL);
        assert_close(&f.decrypt(&ev.sub(&ca, &cb).unwrap(), 64), &diff, TOL);
        assert_close(&f.decrypt(&ev.negate(&ca).unwrap(), 64), &neg, TOL);
        let mut acc = ca.try_clone().unwrap();
        ev.add_assign(&mut acc, &cb).unwrap();
        assert_close(&f.decrypt(&acc, 64), &sum, TOL);
    }

    #[test]
    fn plain_and_scalar_ops(a in vec_strategy(64), b in vec_strategy(64), c in -50.0f64..50.0) {
        prop_assume!(c != 0.0);
        let f = n8192();
        let ca = f.encrypt(&a);
        let ev = &f.evaluator;
        let map = |g: &dyn Fn(f64, f64) -> f64| a.iter().zip(&b).map(|(x, y)| g(*x, *y)).collect::<Vec<_>>();
        assert_close(&f.decrypt(&ev.add_plain(&ca, &b).unwrap(), 64), &map(&|x, y| x + y), TOL);
        assert_close(&f.decrypt(&ev.sub_plain(&ca, &b).unwrap(), 64), &map(&|x, y| x - y), TOL);
        assert_close(&f.decrypt(&ev.add_scalar(&ca, c).unwrap(), 64), &map(&|x, _| x + c), TOL);
        assert_close(&f.decrypt(&ev.sub_scalar(&ca, c).unwrap(), 64), &map(&|x, _| x - c), TOL);
        let prod = ev.multiply_plain(&ca, &b).unwrap();
        prop_assert_eq!(prod.level(), Level(1));
        assert_close(&f.decrypt(&prod, 64), &map(&|x, y| x * y), TOL);
        let scaled = ev.multiply_scalar(&ca, c).unwrap();
        assert_close(&f.decrypt(&scaled, 64), &map(&|x, _| x * c), TOL);
    }

    /// Σ aᵢ·pᵢ with the plaintext products summed before one rescale equals the plaintext sum
    /// of products, lands on the canonical scale one level down, and a zero plaintext is
    /// refused (the product would be transparent).
    #[test]
    fn plain_products_summed_before_one_rescale(
        a in vec_strategy(64), b in vec_strategy(64), c in vec_strategy(64), d in vec_strategy(64)
    ) {
        let f = n8192();
        let ev = &f.evaluator;
        let (ca, cc) = (f.encrypt(&a), f.encrypt(&c));
        let mut acc = ev.multiply_plain_without_rescale(&ca, &b).unwrap();
        prop_assert_eq!(acc.level(), Level(2));
        ev.add_assign(&mut acc, &ev.multiply_plain_without_rescale(&cc, &d).unwrap()).unwrap();
        let out = ev.rescale(&acc).unwrap();
        prop_assert_eq!(out.level(), Level(1));
        prop_assert_eq!(out.scale().unwrap(), f.ctx.canonical_scale(Level(1)).unwrap());
        let want: Vec<f64> = (0..64).map(|i| a[i] * b[i] + c[i] * d[i]).collect();
        assert_close(&f.decrypt(&out, 64), &want, TOL);
        prop_assert!(matches!(
            ev.multiply_plain_without_rescale(&ca, &[0.0; 8]),
            Err(CkksError::TransparentResult)
        ));
        // An operand encoded once gives the very same ciphertext as encoding it per product,
        // and is refused for a ciphertext of another level.
        let operand = ev.encode_operand(&b, &ca).unwrap();
        let reused = ev.multiply_plaintext_without_rescale(&ca, &operand).unwrap();
        let fresh = ev.multiply_plain_without_rescale(&ca, &b).unwrap();
        prop_assert_eq!(
            reused.to_bytes_uncompressed(&f.ctx).unwrap(),
            fresh.to_bytes_uncompressed(&f.ctx).unwrap()
        );
        let refused = matches!(
            ev.multiply_plaintext_without_rescale(&out, &operand),
            Err(CkksError::ScaleMismatch { .. })
        );
        prop_assert!(refused);
    }

    #[test]
    fn multiply_relinearize_rescale(a in vec_strategy(64), b in vec_strategy(64)) {
        let f = n8192();
        let (ca, cb) = (f.encrypt(&a), f.encrypt(&b));
        let ev = &f.evaluator;
        let want: Vec<f64> = a.iter().zip(&b).map(|(x, y)| x * y).collect();
        let prod = ev.multiply(&ca, &cb).unwrap();
        prop_assert_eq!(prod.level(), Level(1));
        // The result sits exactly on the next level's canonical scale.
        prop_assert_eq!(prod.scale().unwrap(), f.ctx.canonical_scale(Level(1)).unwrap());
        assert_close(&f.decrypt(&prod, 64), &want, TOL);
        // Manual path: multiply without rescale, then rescale.
        let raw = ev.multiply_without_rescale(&ca, &cb).unwrap();
        prop_assert_eq!(raw.level(), Level(2));
        assert_close(&f.decrypt(&ev.rescale(&raw).unwrap(), 64), &want, TOL);
        let sq: Vec<f64> = a.iter().map(|x| x * x).collect();
        assert_close(&f.decrypt(&ev.square(&ca).unwrap(), 64), &sq, TOL);
    }

    #[test]
    fn operands_at_different_levels_are_aligned(a in vec_strategy(64), b in vec_strategy(64), c in vec_strategy(64)) {
        let f = n8192();
        let ev = &f.evaluator;
        let (ca, cb, cc) = (f.encrypt(&a), f.encrypt(&b), f.encrypt(&c));
        let ab = ev.multiply(&ca, &cb).unwrap(); // level 1
        // level 1 + level 2, both orders
        let want: Vec<f64> = (0..64).map(|i| a[i] * b[i] + c[i]).collect();
        assert_close(&f.decrypt(&ev.add(&ab, &cc).unwrap(), 64), &want, TOL);
        assert_close(&f.decrypt(&ev.add(&cc, &ab).unwrap(), 64), &want, TOL);
        let want_sub: Vec<f64> = (0..64).map(|i| c[i] - a[i] * b[i]).collect();
        assert_close(&f.decrypt(&ev.sub(&cc, &ab).unwrap(), 64), &want_sub, TOL);
        // level 1 × level 2 lands on the canonical scale of level 0
        let abc = ev.multiply(&ab, &cc).unwrap();
        prop_assert_eq!(abc.level(), Level(0));
        prop_assert_eq!(abc.scale().unwrap(), f.ctx.canonical_scale(Level(0)).unwrap());
        let want3: Vec<f64> = (0..64).map(|i| a[i] * b[i] * c[i]).collect();
        // Two multiplications on values up to 100: 1e-6 of a norm up to 1e6.
        assert_close(&f.decrypt(&abc, 64), &want3, TOL);
        // mod switch keeps values
        let low = ev.mod_switch_to(&cc, Level(0)).unwrap();
        prop_assert_eq!(low.level(), Level(0));
        assert_close(&f.decrypt(&low, 64), &c, TOL);
    }

    #[test]
    fn rotations(a in vec_strategy(4096)) {
        let f = n8192();
        let ev = &f.evaluator;
        let ca = f.encrypt(&a);
        for step in [1i64, 3, -1, 1024] {
            let rotated = f.decrypt(&ev.rotate(&ca, step).unwrap(), 4096);
            let want: Vec<f64> = (0..4096).map(|i| a[(i as i64 + step).rem_euclid(4096) as usize]).collect();
            assert_abs(&rotated, &want, EPS_FRESH + EPS_ROT);
        }
    }

    #[test]
    fn sum_and_inner_product(a in vec_strategy(100), w in vec_strategy(100)) {
        let f = n8192();
        let ev = &f.evaluator;
        let ca = f.encrypt(&a);
        let total: f64 = a.iter().sum();
        // Absolute bounds: the sum and the dot product may cancel to ~0 while their noise
        // comes from terms of ~1e2..1e4 (see the module docs).
        let got = f.decrypt(&ev.sum_slots(&ca, 128).unwrap(), 1)[0];
        assert_abs(&[got], &[total], sum_bound(128));
        let full = f.decrypt(&ev.sum_slots(&ca, 4096).unwrap(), 4096);
        assert_abs(&full, &vec![total; 4096], sum_bound(4096));
        let dot: f64 = a.iter().zip(&w).map(|(x, y)| x * y).sum();
        let got = f.decrypt(&ev.inner_product(&ca, &w).unwrap(), 1)[0];
        assert_abs(&[got], &[dot], inner_product_bound(&w));
    }

    #[test]
    fn polynomials_match_horner(x in prop::collection::vec(-1.0f64..1.0, 64),
                                coeffs in prop::collection::vec(-1.0f64..1.0, 2..16)) {
        prop_assume!(*coeffs.last().unwrap() != 0.0);
        let f = n16384();
        let p = Polynomial::try_new(coeffs).unwrap();
        let cx = f.encrypt(&x);
        let out = f.evaluator.evaluate_polynomial(&cx, &p).unwrap();
        // Exactly the planned depth, which is ⌈log2(d+1)⌉.
        prop_assert_eq!(out.level().0, f.ctx.top_level().0 - p.depth());
        prop_assert_eq!(p.depth(), ((p.degree() + 1) as f64).log2().ceil() as u32);
        let want: Vec<f64> = x.iter().map(|v| p.evaluate(*v)).collect();
        assert_close(&f.decrypt(&out, 64), &want, 1e-5);
    }
}

#[test]
fn level_budget_is_enforced_before_seal() {
    let f = n8192();
    let ev = &f.evaluator;
    let a = f.encrypt(&[1.5; 8]);
    let l1 = ev.multiply(&a, &a).unwrap();
    let l0 = ev.multiply(&l1, &l1).unwrap();
    assert_eq!(l0.level(), Level(0));
    let err = ev.multiply(&l0, &l0).unwrap_err();
    assert_eq!(
        err,
        CkksError::LevelExhausted {
            needed: 1,
            available: 0
        }
    );
    assert_eq!(err.to_string(), "needs 1 levels, ciphertext has 0");
    assert!(matches!(
        ev.multiply_plain(&l0, &[2.0]),
        Err(CkksError::LevelExhausted { .. })
    ));
    assert!(matches!(
        ev.rescale(&l0),
        Err(CkksError::LevelExhausted { .. })
    ));
    // A degree-7 polynomial needs 3 levels; a fresh n=8192 ciphertext has 2.
    let p = Polynomial::try_new(vec![0.1; 8]).unwrap();
    let err = ev.evaluate_polynomial(&a, &p).unwrap_err();
    assert_eq!(
        err,
        CkksError::LevelExhausted {
            needed: 3,
            available: 2
        }
    );
    assert_eq!(err.to_string(), "needs 3 levels, ciphertext has 2");
    assert!(matches!(
        ev.mod_switch_to(&l1, Level(2)),
        Err(CkksError::LevelTooHigh { .. })
    ));
}

#[test]
fn missing_keys_and_bad_arguments_are_clear_errors() {
    let f = n8192();
    let a = f.encrypt(&[1.0; 8]);
    let bare = Evaluator::new(&f.ctx, None, None);
    assert_eq!(
        bare.multiply(&a, &a).unwrap_err(),
        CkksError::MissingRelinKeys
    );
    assert_eq!(
        bare.rotate(&a, 1).unwrap_err(),
        CkksError::MissingGaloisKeys { steps: vec![1] }
    );
    assert_eq!(
        f.evaluator.rotate(&a, 5).unwrap_err(),
        CkksError::MissingGaloisKeys { steps: vec![5] }
    );
    assert!(matches!(
        f.evaluator.rotate(&a, 4096),
        Err(CkksError::InvalidRotation { .. })
    ));
    assert!(matches!(
        f.evaluator.sum_slots(&a, 3),
        Err(CkksError::InvalidSlotCount { .. })
    ));
    assert!(
        matches!(bare.sum_slots(&a, 8), Err(CkksError::MissingGaloisKeys { steps }) if steps == vec![1, 2, 4])
    );
    assert_eq!(
        f.evaluator.multiply_plain(&a, &[0.0; 8]).unwrap_err(),
        CkksError::TransparentResult
    );
    assert_eq!(
        f.evaluator.multiply_scalar(&a, 0.0).unwrap_err(),
        CkksError::TransparentResult
    );
    assert!(matches!(
        f.evaluator.add_plain(&a, &[f64::NAN]),
        Err(CkksError::NonFiniteValue { .. })
    ));
    // Rotating by 0 is the identity and needs no key.
    let same = bare.rotate(&a, 0).unwrap();
    assert_close(&f.decrypt(&same, 8), &[1.0; 8], TOL);
}

#[test]
fn foreign_ciphertexts_are_refused() {
    let small = n8192();
    let big = n16384();
    let a = small.encrypt(&[1.0; 4]);
    // Decrypting or evaluating with another parameter set fails cleanly.
    assert!(big.decryptor.decrypt_values(&a).is_err());
    let b = big.encrypt(&[1.0; 4]);
    assert!(small.evaluator.add(&b, &b).is_err());
}

#[test]
fn keys_from_a_stored_secret_key_work() {
    let f = n8192();
    let sk = f.keygen.secret_key().unwrap();
    let bytes = sk.to_bytes(&f.ctx).unwrap();
    let restored = SecretKey::from_bytes(&f.ctx, &bytes).unwrap();
    assert_eq!(format!("{restored:?}"), "SecretKey([REDACTED])");
    let keygen = KeyGenerator::from_secret_key(&f.ctx, &restored).unwrap();
    // A new public key of the same secret key decrypts under the original decryptor.
    let enc = Encryptor::new(&f.ctx, &keygen.public_key().unwrap()).unwrap();
    let ct = enc.encrypt_values(&[3.25, -1.5]).unwrap();
    assert_close(&f.decrypt(&ct, 2), &[3.25, -1.5], TOL);
}
