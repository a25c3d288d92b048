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

// ---------------------------------------------------------------------------------------
// Hostile SEAL payloads with valid frames (as a meter that recomputes the checksum sends
// them): each is refused by SEER's own parse of SEAL's format (`CkksError::Malformed`,
// `TooLarge`) before SEAL sees a byte. Before that parse existed, the first two crashed the
// process (SIGSEGV in SEAL's loader; an uncaught C++ exception through the C API).

/// Splits a SEER frame into what precedes the payload length and the payload.
fn split_frame(frame: &[u8]) -> (&[u8], &[u8]) {
    // "SEER" 4 | version 2 | kind 1 | flags 1 | id_len 1 | id | meta_len 4 | meta | len 8
    let id_len = frame[8] as usize;
    let meta_len_at = 9 + id_len;
    let meta_len = u32::from_le_bytes(frame[meta_len_at..meta_len_at + 4].try_into().unwrap());
    let len_at = meta_len_at + 4 + meta_len as usize;
    (&frame[..len_at], &frame[len_at + 8..frame.len() - 32])
}

/// A frame with `prefix` (from [`split_frame`]) around `payload`, checksum recomputed.
fn reframe(prefix: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut out = prefix.to_vec();
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(payload);
    let hash = blake3::hash(&out);
    out.extend_from_slice(hash.as_bytes());
    out
}

/// SEAL's 16-byte header, version 4.0.
fn seal_header(compression: u8, size: u64) -> Vec<u8> {
    let mut h = vec![0x5E, 0xA1, 16, 4, 0, compression, 0, 0];
    h.extend_from_slice(&size.to_le_bytes());
    h
}

/// `body` as an uncompressed SEAL payload.
fn uncompressed(body: &[u8]) -> Vec<u8> {
    let mut p = seal_header(0, 16 + body.len() as u64);
    p.extend_from_slice(body);
    p
}

/// `body` as a zstd-compressed SEAL payload.
fn compressed(body: &[u8]) -> Vec<u8> {
    let z = ruzstd::encoding::compress_to_vec(body, ruzstd::encoding::CompressionLevel::Fastest);
    let mut p = seal_header(2, 16 + z.len() as u64);
    p.extend_from_slice(&z);
    p
}

/// The body (after SEAL's header) of a payload, decompressed if need be.
fn body_of(payload: &[u8]) -> Vec<u8> {
    match payload[5] {
        0 => payload[16..].to_vec(),
        _ => {
            let mut out = Vec::new();
            std::io::Read::read_to_end(
                &mut ruzstd::decoding::StreamingDecoder::new(&payload[16..]).unwrap(),
                &mut out,
            )
            .unwrap();
            out
        }
    }
}

// Offsets in an uncompressed ciphertext body: parms_id 0..32 | ntt 32 | size 33..41 |
// degree 41..49 | primes 49..57 | scale 57..65 | correction 65..73 | array header 73..89 |
// count 89..97 | coefficients 97..
const CT_SIZE: usize = 33;
const CT_DEGREE: usize = 41;
const CT_PRIMES: usize = 49;
const CT_SCALE: usize = 57;
const CT_CORRECTION: usize = 65;
const CT_ARRAY: usize = 73;
const CT_COUNT: usize = 89;
const CT_DATA: usize = 97;

fn put_u64(body: &mut [u8], at: usize, value: u64) {
    body[at..at + 8].copy_from_slice(&value.to_le_bytes());
}

fn assert_refused_by_parse(result: Result<impl std::fmt::Debug, CkksError>, what: &str) {
    match result {
        Err(CkksError::Malformed { .. } | CkksError::TooLarge { .. }) => {}
        other => panic!("{what}: expected a parse refusal, got {other:?}"),
    }
}

/// The fuzzer's reproducer (`fuzz/crashes/ckks_frames-ciphertext-load-segv`: mode byte 0x18 =
/// billing parameter set, frame repaired, ciphertext): a ciphertext of zero polynomials whose
/// coefficient array holds one polynomial, which SEAL took for the seeded form and expanded
/// past the end of its buffer.
#[test]
fn the_fuzzers_ciphertext_crash_is_refused() {
    let f = n8192();
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../fuzz/crashes/ckks_frames-ciphertext-load-segv"
    );
    let input = std::fs::read(path).expect("the committed reproducer");
    assert_eq!(input[0], 0x18, "mode: billing set, repaired, ciphertext");
    let (prefix, payload) = split_frame(&input[1..]);
    let frame = reframe(prefix, payload);
    match Ciphertext::from_bytes(&f.ctx, &frame) {
        Err(CkksError::Malformed { reason, .. }) => {
            assert!(reason.contains("0 polynomials"), "{reason}")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// The same attack built from a real ciphertext, in both payload forms: size 0, the first
/// polynomial's coefficients, a PRNG seed.
#[test]
fn a_ciphertext_of_zero_polynomials_carrying_a_seed_is_refused() {
    let f = n8192();
    let ct = f.encrypt(&[1.5; 16]);
    let frame = ct.to_bytes_uncompressed(&f.ctx).unwrap();
    let (prefix, payload) = split_frame(&frame);
    let body = body_of(payload);
    let one_poly = 8192 * 3;
    let mut crafted = body[..CT_DATA + 8 * one_poly].to_vec();
    put_u64(&mut crafted, CT_SIZE, 0);
    put_u64(&mut crafted, CT_COUNT, one_poly as u64);
    put_u64(&mut crafted, CT_ARRAY + 8, (16 + 8 + 8 * one_poly) as u64);
    crafted.extend_from_slice(&seal_header(0, 16 + 1 + 64));
    crafted.push(1); // blake2xb
    crafted.extend_from_slice(&[0x42; 64]);
    for payload in [uncompressed(&crafted), compressed(&crafted)] {
        assert_refused_by_parse(
            Ciphertext::from_bytes(&f.ctx, &reframe(prefix, &payload)),
            "zero polynomials with a seed",
        );
    }
    // The untouched body in either form still loads and decrypts (the checks refuse only lies).
    for payload in [uncompressed(&body), compressed(&body)] {
        let back = Ciphertext::from_bytes(&f.ctx, &reframe(prefix, &payload)).unwrap();
        assert_close(&f.decrypt(&back, 16), &[1.5; 16], 1e-6);
    }
}

/// Every size, count and header field of a ciphertext's SEAL bytes, changed one at a time
/// (checksum recomputed): each is refused by SEER's parse, not left to SEAL.
#[test]
fn every_lie_in_a_ciphertexts_seal_bytes_is_refused() {
    let f = n8192();
    let frame = f.encrypt(&[2.0; 8]).to_bytes_uncompressed(&f.ctx).unwrap();
    let (prefix, payload) = split_frame(&frame);
    let body = body_of(payload);
    let words = (body.len() - CT_DATA) / 8;
    type Mutation = Box<dyn Fn(&mut Vec<u8>)>;
    let cases: Vec<(&str, Mutation)> = vec![
        ("unknown parameter id", Box::new(|b| b[0] ^= 1)),
        ("not in NTT form", Box::new(|b| b[32] = 0)),
        ("one polynomial", Box::new(|b| put_u64(b, CT_SIZE, 1))),
        ("three polynomials", Box::new(|b| put_u64(b, CT_SIZE, 3))),
        (
            "2^64 - 1 polynomials",
            Box::new(|b| put_u64(b, CT_SIZE, u64::MAX)),
        ),
        ("half the degree", Box::new(|b| put_u64(b, CT_DEGREE, 4096))),
        ("one prime fewer", Box::new(|b| put_u64(b, CT_PRIMES, 2))),
        ("one prime more", Box::new(|b| put_u64(b, CT_PRIMES, 4))),
        (
            "NaN scale",
            Box::new(|b| put_u64(b, CT_SCALE, f64::NAN.to_bits())),
        ),
        (
            "correction factor 2",
            Box::new(|b| put_u64(b, CT_CORRECTION, 2)),
        ),
        (
            "a word more declared",
            Box::new(move |b| put_u64(b, CT_COUNT, words as u64 + 1)),
        ),
        (
            "a word fewer",
            Box::new(move |b| {
                put_u64(b, CT_COUNT, words as u64 - 1);
                put_u64(b, CT_ARRAY + 8, (16 + 8 + 8 * (words - 1)) as u64);
                b.truncate(b.len() - 8);
            }),
        ),
        ("2^61 words", Box::new(|b| put_u64(b, CT_COUNT, 1 << 61))),
        ("array header size", Box::new(|b| b[CT_ARRAY + 8] ^= 8)),
        ("array compressed", Box::new(|b| b[CT_ARRAY + 5] = 2)),
        (
            "array from SEAL 3.4",
            Box::new(|b| {
                b[CT_ARRAY + 3] = 3;
                b[CT_ARRAY + 4] = 4;
            }),
        ),
        ("array magic", Box::new(|b| b[CT_ARRAY] ^= 0xFF)),
        ("reserved bits", Box::new(|b| b[CT_ARRAY + 6] = 1)),
        ("trailing word", Box::new(|b| b.extend_from_slice(&[0; 8]))),
        ("truncated", Box::new(|b| b.truncate(b.len() - 1))),
    ];
    for (what, mutate) in &cases {
        let mut b = body.clone();
        mutate(&mut b);
        assert_refused_by_parse(
            Ciphertext::from_bytes(&f.ctx, &reframe(prefix, &uncompressed(&b))),
            what,
        );
    }
    // The outer header: another version, trailing bytes after the zstd frame.
    let mut old = uncompressed(&body);
    old[3] = 3;
    old[4] = 4;
    assert_refused_by_parse(
        Ciphertext::from_bytes(&f.ctx, &reframe(prefix, &old)),
        "SEAL 3.4",
    );
    let mut trailing = compressed(&body);
    trailing.extend_from_slice(&[0; 4]);
    let size = trailing.len() as u64;
    trailing[8..16].copy_from_slice(&size.to_le_bytes());
    assert_refused_by_parse(
        Ciphertext::from_bytes(&f.ctx, &reframe(prefix, &trailing)),
        "bytes after the zstd frame",
    );
    let mut cut = compressed(&body);
    cut.truncate(cut.len() - 10);
    let size = cut.len() as u64;
    cut[8..16].copy_from_slice(&size.to_le_bytes());
    assert_refused_by_parse(
        Ciphertext::from_bytes(&f.ctx, &reframe(prefix, &cut)),
        "a zstd frame cut short",
    );
    let mut garbled = compressed(&body);
    let at = garbled.len() / 2;
    garbled[at..at + 16].fill(0xFF);
    assert!(
        Ciphertext::from_bytes(&f.ctx, &reframe(prefix, &garbled)).is_err(),
        "garbled zstd data"
    );
}

/// A few kilobytes that inflate to megabytes: refused once the object's size limit is
/// passed, without inflating the rest.
#[test]
fn a_zstd_bomb_is_refused_at_the_size_limit() {
    let f = n8192();
    let frame = f.encrypt(&[1.0]).to_bytes(&f.ctx).unwrap();
    let (prefix, _) = split_frame(&frame);
    let bomb = compressed(&vec![0u8; 64 << 20]);
    assert!(bomb.len() < 64 << 10, "{} bytes", bomb.len());
    match Ciphertext::from_bytes(&f.ctx, &reframe(prefix, &bomb)) {
        Err(CkksError::TooLarge { size, limit, .. }) => {
            assert_eq!(size, limit + 1);
            assert_eq!(limit, Ciphertext::max_serialized_len(&f.ctx));
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
}

/// Key-switching keys: a slot count of 2^64 - 1 (SEAL reserved it and aborted the process),
/// keys for other rotations than the frame declares, a relinearization key set with a second
/// slot, and the fuzzer's reproducer (`ckks_frames-galois-keys-load-logic-error`).
#[test]
fn lies_in_key_switching_keys_are_refused() {
    let f = n8192();
    let galois = f.keygen.galois_keys(&[1, 2]).unwrap().to_bytes(&f.ctx);
    let (prefix, payload) = split_frame(&galois);
    let body = body_of(payload);
    // parms_id 0..32 | slot count 32..40 | keys in slot 0 40..48 | ...
    let mut huge = body.clone();
    put_u64(&mut huge, 32, u64::MAX);
    assert_refused_by_parse(
        GaloisKeys::from_bytes(&f.ctx, &reframe(prefix, &uncompressed(&huge))),
        "2^64 - 1 key slots",
    );
    // The same keys declared as steps 1 and 3: the key slots do not match the steps.
    let steps_3 = GaloisKeys::from_bytes(
        &f.ctx,
        &f.keygen.galois_keys(&[1, 3]).unwrap().to_bytes(&f.ctx),
    )
    .unwrap()
    .to_bytes(&f.ctx);
    let (prefix_3, _) = split_frame(&steps_3);
    assert_refused_by_parse(
        GaloisKeys::from_bytes(&f.ctx, &reframe(prefix_3, &uncompressed(&body))),
        "keys for steps 1 and 2 labelled 1 and 3",
    );
    // The honest keys load from either form.
    GaloisKeys::from_bytes(&f.ctx, &reframe(prefix, &uncompressed(&body))).unwrap();

    let relin = f.keygen.relin_keys().unwrap().to_bytes(&f.ctx);
    let (prefix_r, payload_r) = split_frame(&relin);
    let mut two_slots = body_of(payload_r);
    put_u64(&mut two_slots, 32, 2);
    assert_refused_by_parse(
        RelinKeys::from_bytes(&f.ctx, &reframe(prefix_r, &uncompressed(&two_slots))),
        "relinearization keys with two slots",
    );

    // The fuzzer's input: mode 0x0b = the smallest parameter set, repaired, Galois keys.
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../fuzz/crashes/ckks_frames-galois-keys-load-logic-error"
    );
    let input = std::fs::read(path).expect("the committed reproducer");
    assert_eq!(input[0], 0x0b);
    let small = CkksContext::new(
        ParameterSetBuilder::new(4096)
            .first_bits(36)
            .scale_bits(30)
            .special_bits(40)
            .levels(1)
            .build()
            .unwrap(),
    )
    .unwrap();
    let (prefix, payload) = split_frame(&input[1..]);
    assert_refused_by_parse(
        GaloisKeys::from_bytes(&small, &reframe(prefix, payload)),
        "the fuzzer's Galois-key frame",
    );
}

/// Public and secret keys: the key level only, and the secret key's coefficient count.
#[test]
fn lies_in_public_and_secret_keys_are_refused() {
    let f = n8192();
    let public = f.keygen.public_key().unwrap().to_bytes(&f.ctx);
    let (prefix, payload) = split_frame(&public);
    let body = body_of(payload);
    // A public key at a data level: the ciphertext's parameter id in its place.
    let ct = f.encrypt(&[1.0]).to_bytes_uncompressed(&f.ctx).unwrap();
    let mut data_level = body.clone();
    data_level[..32].copy_from_slice(&body_of(split_frame(&ct).1)[..32]);
    assert_refused_by_parse(
        PublicKey::from_bytes(&f.ctx, &reframe(prefix, &uncompressed(&data_level))),
        "public key at a data level",
    );
    PublicKey::from_bytes(&f.ctx, &reframe(prefix, &uncompressed(&body))).unwrap();

    let secret = f.keygen.secret_key().unwrap().to_bytes(&f.ctx).unwrap();
    let (prefix_s, payload_s) = split_frame(&secret);
    assert_eq!(payload_s[5], 0, "secret keys are written uncompressed");
    // parms_id 0..32 | coefficient count 32..40 | scale 40..48 | array ...
    let mut fewer = body_of(payload_s);
    put_u64(&mut fewer, 32, 8192);
    assert_refused_by_parse(
        SecretKey::from_bytes(&f.ctx, &reframe(prefix_s, &uncompressed(&fewer))),
        "secret key of one prime's coefficients",
    );
    // A zstd secret key (as earlier builds wrote them) still loads.
    let old = reframe(prefix_s, &compressed(&body_of(payload_s)));
    SecretKey::from_bytes(&f.ctx, &old).unwrap();
}
