//! Shared fixtures: keys are expensive, so each test binary generates them once per
//! parameter set (like tfhe-rs's key cache) and shares them between tests.
#![allow(dead_code)]

use std::sync::OnceLock;

use seer_ckks::*;

pub struct Fixture {
    pub ctx: CkksContext,
    pub keygen: KeyGenerator,
    pub encryptor: Encryptor,
    pub decryptor: Decryptor,
    pub evaluator: Evaluator,
}

fn build(set: ParameterSet, extra_steps: &[i64]) -> Fixture {
    let ctx = CkksContext::new(set).expect("context");
    let keygen = KeyGenerator::new(&ctx).expect("keygen");
    let public = keygen.public_key().expect("public key");
    let encryptor = Encryptor::new(&ctx, &public).expect("encryptor");
    let decryptor = Decryptor::new(&ctx, &keygen.secret_key().expect("sk")).expect("decryptor");
    let mut steps: Vec<i64> = steps_for_sum(ctx.slots())
        .into_iter()
        .map(i64::from)
        .collect();
    steps.extend_from_slice(extra_steps);
    let galois = keygen.galois_keys(&steps).expect("galois keys");
    let evaluator = Evaluator::new(
        &ctx,
        Some(keygen.relin_keys().expect("relin")),
        Some(galois),
    );
    Fixture {
        ctx,
        keygen,
        encryptor,
        decryptor,
        evaluator,
    }
}

/// n = 8192 (2 levels) with Galois keys for every power-of-two step, -1 and 3.
pub fn n8192() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| build(ParameterSet::N8192_L2_SEC128, &[-1, 3]))
}

/// n = 16384 (7 levels), for deeper circuits.
pub fn n16384() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| build(ParameterSet::N16384_L7_SEC128, &[]))
}

impl Fixture {
    pub fn encrypt(&self, values: &[f64]) -> Ciphertext {
        self.encryptor.encrypt_values(values).expect("encrypt")
    }

    pub fn decrypt(&self, ct: &Ciphertext, len: usize) -> Vec<f64> {
        let mut v = self.decryptor.decrypt_values(ct).expect("decrypt");
        v.truncate(len);
        v
    }
}

/// Asserts `|got - want| ≤ tol · max(1, ‖want‖∞)` slot by slot.
pub fn assert_close(got: &[f64], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len());
    let norm = want.iter().fold(1.0f64, |m, w| m.max(w.abs()));
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= tol * norm,
            "slot {i}: got {g}, want {w}, error {:e} > {:e}",
            (g - w).abs(),
            tol * norm
        );
    }
}

/// Asserts `|got - want| ≤ bound` slot by slot: an absolute bound, for results whose
/// CKKS error does not scale with the result (sums, inner products, fresh encryptions).
pub fn assert_abs(got: &[f64], want: &[f64], bound: f64) {
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= bound,
            "slot {i}: got {g}, want {w}, error {:e} > absolute bound {bound:e}",
            (g - w).abs()
        );
    }
}
