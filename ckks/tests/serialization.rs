//! Serialization round trips, and corrupted, truncated, mismatched or oversized input.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests and benches fail loudly"
)]

mod common;

use common::{assert_close, n8192, n16384};
use rand::{RngExt, SeedableRng, rngs::StdRng};
use seer_ckks::*;

#[test]
fn round_trips_preserve_values_and_keys() {
    let f = n8192();
    let a = f.encrypt(&[1.25, -2.5, 1000.0]);
    let prod = f.evaluator.multiply(&a, &a).unwrap();
    for ct in [&a, &prod] {
        let bytes = ct.to_bytes(&f.ctx).unwrap();
        let back = Ciphertext::from_bytes(&f.ctx, &bytes).unwrap();
        assert_eq!(back.level(), ct.level());
        assert_eq!(back.scale().unwrap(), ct.scale().unwrap());
        assert_close(&f.decrypt(&back, 3), &f.decrypt(ct, 3), 1e-9);
    }
    // Keys: public key encrypts, relin and galois keys evaluate after a round trip.
    let pk =
        PublicKey::from_bytes(&f.ctx, &f.keygen.public_key().unwrap().to_bytes(&f.ctx)).unwrap();
    let rk = f.keygen.relin_keys().unwrap();
    let rk_bytes = rk.to_bytes(&f.ctx);
    let gk = f.keygen.galois_keys(&[1, -2]).unwrap();
    assert_eq!(gk.steps(), &[1, 4094]);
    let gk_bytes = gk.to_bytes(&f.ctx);
    let ev = Evaluator::new(
        &f.ctx,
        Some(RelinKeys::from_bytes(&f.ctx, &rk_bytes).unwrap()),
        Some(GaloisKeys::from_bytes(&f.ctx, &gk_bytes).unwrap()),
    );
    let ct = Encryptor::new(&f.ctx, &pk)
        .unwrap()
        .encrypt_values(&[1.0, 2.0, 3.0])
        .unwrap();
    let sq = ev.multiply(&ct, &ct).unwrap();
    assert_close(&f.decrypt(&sq, 3), &[1.0, 4.0, 9.0], 1e-6);
    let rot = f.decrypt(&ev.rotate(&ct, -2).unwrap(), 4096);
    assert_close(&rot[2..5], &[1.0, 2.0, 3.0], 1e-6);
    // Seeded (compact) key serialization: relin keys are about half the expanded size.
    let expanded = 2 * 8192 * 4 * 8 * 3; // 3 decomposition parts × 2 polys × n × 4 primes × 8 B
    assert!(
        rk_bytes.len() < expanded * 6 / 10,
        "{} bytes",
        rk_bytes.len()
    );
}

#[test]
fn uncompressed_ciphertexts_load_to_the_same_object() {
    let f = n8192();
    let a = f.encrypt(&[3.5, -0.25, 4096.0]);
    let prod = f.evaluator.multiply(&a, &a).unwrap();
    for ct in [&a, &prod] {
        let compressed = ct.to_bytes(&f.ctx).unwrap();
        let plain = ct.to_bytes_uncompressed(&f.ctx).unwrap();
        assert!(
            plain.len() > compressed.len(),
            "{} vs {}",
            plain.len(),
            compressed.len()
        );
        let back = Ciphertext::from_bytes(&f.ctx, &plain).unwrap();
        assert_eq!(back.level(), ct.level());
        // The same SEAL object: its compressed serialization is byte-identical.
        assert_eq!(back.to_bytes(&f.ctx).unwrap(), compressed);
        assert_close(&f.decrypt(&back, 3), &f.decrypt(ct, 3), 1e-9);
        // A flipped byte in the uncompressed body is caught like in the compressed form.
        let mut bad = plain.clone();
        let mid = bad.len() / 2;
        bad[mid] ^= 0x40;
        assert!(matches!(
            Ciphertext::from_bytes(&f.ctx, &bad),
            Err(CkksError::ChecksumMismatch { .. })
        ));
    }
}

#[test]
fn wrong_kind_parameter_set_and_version_are_refused() {
    let f = n8192();
    let big = n16384();
    let ct_bytes = f.encrypt(&[1.0]).to_bytes(&f.ctx).unwrap();
    assert!(matches!(
        PublicKey::from_bytes(&f.ctx, &ct_bytes),
        Err(CkksError::WrongKind {
            expected: "public key",
            found: "ciphertext"
        })
    ));
    let err = Ciphertext::from_bytes(&big.ctx, &ct_bytes).unwrap_err();
    assert!(
        matches!(err, CkksError::ParameterSetMismatch { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("ckks1-n8192-q60-s40x2-p60"));
    let mut v2 = ct_bytes.clone();
    v2[4] = 2;
    assert!(matches!(
        Ciphertext::from_bytes(&f.ctx, &v2),
        Err(CkksError::UnsupportedVersion {
            found: 2,
            supported: 1,
            ..
        })
    ));
    let mut not_seer = ct_bytes.clone();
    not_seer[0] = b'X';
    assert!(matches!(
        Ciphertext::from_bytes(&f.ctx, &not_seer),
        Err(CkksError::Malformed { .. })
    ));
    assert!(matches!(
        Ciphertext::from_bytes_with_limit(&f.ctx, &ct_bytes, 1000),
        Err(CkksError::TooLarge { limit: 1000, .. })
    ));
    let mut oversized = ct_bytes.clone();
    oversized.resize(Ciphertext::max_serialized_len(&f.ctx) + 1, 0);
    assert!(matches!(
        Ciphertext::from_bytes(&f.ctx, &oversized),
        Err(CkksError::TooLarge { .. })
    ));
    assert!(Ciphertext::from_bytes(&f.ctx, &[]).is_err());
}

#[test]
fn every_truncation_is_an_error() {
    let f = n8192();
    let bytes = f.encrypt(&[4.0; 16]).to_bytes(&f.ctx).unwrap();
    // Every prefix length in the header, then a sample through the payload.
    let lens = (0..64)
        .chain((64..bytes.len()).step_by(997))
        .chain([bytes.len() - 1]);
    for len in lens {
        assert!(
            Ciphertext::from_bytes(&f.ctx, &bytes[..len]).is_err(),
            "prefix of {len} bytes accepted"
        );
    }
    let mut extended = bytes.clone();
    extended.push(0);
    assert!(Ciphertext::from_bytes(&f.ctx, &extended).is_err());
}

/// Random mutations (bit flips, byte overwrites, insertions, deletions): the checksum or a
/// header check rejects every one of them, and nothing crashes.
#[test]
fn fuzzed_mutations_are_errors() {
    let f = n8192();
    let ct_bytes = f.encrypt(&[1.0; 32]).to_bytes(&f.ctx).unwrap();
    let gk_bytes = f.keygen.galois_keys(&[1]).unwrap().to_bytes(&f.ctx);
    let mut rng = StdRng::seed_from_u64(0x5EE8);
    for i in 0..2000 {
        let (original, is_ct) = if i % 4 == 0 {
            (&gk_bytes, false)
        } else {
            (&ct_bytes, true)
        };
        let mut m = original.clone();
        for _ in 0..rng.random_range(1..4) {
            let pos = rng.random_range(0..m.len());
            match rng.random_range(0..4) {
                0 => m[pos] ^= 1 << rng.random_range(0..8),
                1 => m[pos] = rng.random(),
                2 => m.insert(pos, rng.random()),
                _ => {
                    m.remove(pos);
                }
            }
        }
        if &m == original {
            continue;
        }
        let result = if is_ct {
            Ciphertext::from_bytes(&f.ctx, &m).map(|_| ())
        } else {
            GaloisKeys::from_bytes(&f.ctx, &m).map(|_| ())
        };
        assert!(result.is_err(), "mutation {i} accepted");
    }
}

/// The same mutations inside the SEAL payload with a *valid* checksum (as a malicious
/// sender would craft them) reach SEAL's own validation: it must answer with an error or
/// a valid ciphertext, never crash.
#[test]
fn crafted_payloads_with_valid_checksums_do_not_crash() {
    let f = n8192();
    let bytes = f.encrypt(&[1.0; 32]).to_bytes(&f.ctx).unwrap();
    // Frame layout: "SEER" 4 | version 2 | kind 1 | flags 1 | id_len 1 | id | meta_len 4 | payload_len 8
    let id_len = bytes[8] as usize;
    let payload_start = 9 + id_len + 4 + 8;
    let payload_end = bytes.len() - 32;
    let mut rng = StdRng::seed_from_u64(7);
    let mut errors = 0;
    for _ in 0..300 {
        let mut m = bytes.clone();
        for _ in 0..rng.random_range(1..8) {
            // Bias towards SEAL's header and the first polynomial's metadata.
            let pos = if rng.random_bool(0.5) {
                payload_start + rng.random_range(0..64)
            } else {
                rng.random_range(payload_start..payload_end)
            };
            m[pos] = rng.random();
        }
        let body_end = m.len() - 32;
        let hash = blake3::hash(&m[..body_end]);
        m[body_end..].copy_from_slice(hash.as_bytes());
        if Ciphertext::from_bytes(&f.ctx, &m).is_err() {
            errors += 1;
        }
    }
    // Most crafted payloads break zstd framing or SEAL's metadata.
    assert!(errors > 0);
}

#[test]
fn secret_key_bytes_are_checked_too() {
    let f = n8192();
    let bytes = f.keygen.secret_key().unwrap().to_bytes(&f.ctx).unwrap();
    let mut bad = bytes.to_vec();
    let mid = bad.len() / 2;
    bad[mid] ^= 0x40;
    assert!(matches!(
        SecretKey::from_bytes(&f.ctx, &bad),
        Err(CkksError::ChecksumMismatch { .. })
    ));
    assert!(SecretKey::from_bytes(&f.ctx, &bytes).is_ok());
}
