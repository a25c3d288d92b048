//! The `ckks_frames` target's body: every engine object as the programs load it from the
//! wire or from disk (`Ciphertext`, `PublicKey`, `RelinKeys`, `GaloisKeys`, `SecretKey`
//! `::from_bytes`), under the smallest parameter set and under the billing set the meters'
//! lanes use.
//!
//! A frame carries a BLAKE3 checksum and SEAL's payload header declares its size, so random
//! mutations almost never get past the checksum. Half the modes therefore *repair* the frame
//! first ([`repair_frame`]): the lengths, SEAL's declared size and the checksum are rewritten
//! to match the mutated bytes, as an attacker who recomputes the checksum would, and the
//! mutation reaches SEER's parse of SEAL's format (`seer_ckks`'s `seal_format`) and, where it
//! passes, SEAL's own loader.

use std::borrow::Cow;
use std::sync::OnceLock;

use seer_ckks::{
    Ciphertext, CkksContext, Evaluator, GaloisKeys, ParameterSet, ParameterSetBuilder, PublicKey,
    RelinKeys, SecretKey,
};

/// The smallest parameter set the engine accepts at 128-bit security with one level:
/// n = 4096, log q = 36 + 30 + 40 = 106 ≤ 109.
pub fn small_parameter_set() -> ParameterSet {
    ParameterSetBuilder::new(4096)
        .first_bits(36)
        .scale_bits(30)
        .special_bits(40)
        .levels(1)
        .build()
        .expect("the fuzzing parameter set is valid")
}

/// The context of [`small_parameter_set`], built once.
pub fn small_context() -> &'static CkksContext {
    static CTX: OnceLock<CkksContext> = OnceLock::new();
    CTX.get_or_init(|| CkksContext::new(small_parameter_set()).expect("small context"))
}

/// The billing lanes' context (`N8192_L2_SEC128`), built once.
pub fn billing_context() -> &'static CkksContext {
    static CTX: OnceLock<CkksContext> = OnceLock::new();
    CTX.get_or_init(|| CkksContext::new(ParameterSet::N8192_L2_SEC128).expect("billing context"))
}

const SEAL_HEADER_LEN: usize = 16;
const CHECKSUM_LEN: usize = 32;

/// Rewrites a (mutated) frame so that its structure is consistent: the payload takes every
/// byte between its length field and the checksum, SEAL's header declares the payload's size,
/// and the BLAKE3 checksum covers the body. Bytes too short to hold a frame are returned as
/// they are.
pub fn repair_frame(bytes: &[u8]) -> Cow<'_, [u8]> {
    // "SEER" 4 | version 2 | kind 1 | flags 1 | id_len 1 | id | meta_len 4 | meta | len 8
    let Some(&id_len) = bytes.get(8) else {
        return Cow::Borrowed(bytes);
    };
    let meta_len_at = 9 + usize::from(id_len);
    let Some(meta_len) = bytes.get(meta_len_at..meta_len_at + 4) else {
        return Cow::Borrowed(bytes);
    };
    let meta_len = u32::from_le_bytes(meta_len.try_into().expect("4 bytes")) as usize;
    let payload_len_at = meta_len_at + 4 + meta_len;
    let payload_at = payload_len_at + 8;
    if bytes.len() < payload_at + CHECKSUM_LEN {
        return Cow::Borrowed(bytes);
    }
    let mut out = bytes[..bytes.len() - CHECKSUM_LEN].to_vec();
    let payload_len = out.len() - payload_at;
    out[payload_len_at..payload_at].copy_from_slice(&(payload_len as u64).to_le_bytes());
    if payload_len >= SEAL_HEADER_LEN {
        out[payload_at + 8..payload_at + 16].copy_from_slice(&(payload_len as u64).to_le_bytes());
    }
    let checksum = blake3::hash(&out);
    out.extend_from_slice(checksum.as_bytes());
    Cow::Owned(out)
}

/// Loads `data[1..]` as the object and under the context chosen by `data[0]`.
pub fn run(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let ctx = if mode & 0x10 != 0 {
        billing_context()
    } else {
        small_context()
    };
    let bytes = if mode & 0x08 != 0 {
        repair_frame(rest)
    } else {
        Cow::Borrowed(rest)
    };
    match mode & 0x07 {
        1 => {
            if let Ok(key) = PublicKey::from_bytes(ctx, &bytes) {
                // A loaded key serializes to a frame that loads again.
                PublicKey::from_bytes(ctx, &key.to_bytes(ctx)).expect("public key round trip");
            }
        }
        2 => {
            if let Ok(keys) = RelinKeys::from_bytes(ctx, &bytes) {
                RelinKeys::from_bytes(ctx, &keys.to_bytes(ctx)).expect("relin keys round trip");
            }
        }
        3 => {
            if let Ok(keys) = GaloisKeys::from_bytes(ctx, &bytes) {
                let again = GaloisKeys::from_bytes(ctx, &keys.to_bytes(ctx))
                    .expect("galois keys round trip");
                assert_eq!(keys.steps(), again.steps());
            }
        }
        4 => {
            let _ = SecretKey::from_bytes(ctx, &bytes);
        }
        _ => ciphertext(ctx, &bytes),
    }
}

fn ciphertext(ctx: &CkksContext, bytes: &[u8]) {
    let Ok(ct) = Ciphertext::from_bytes(ctx, bytes) else {
        return;
    };
    // What loads is a usable ciphertext: it re-serializes (both forms) to frames that load
    // to the same level, and SEAL can compute on it.
    for frame in [ct.to_bytes(ctx), ct.to_bytes_uncompressed(ctx)] {
        let frame = frame.expect("a loaded ciphertext serializes");
        let again = Ciphertext::from_bytes(ctx, &frame).expect("ciphertext round trip");
        assert_eq!(again.level(), ct.level());
    }
    let evaluator = Evaluator::new(ctx, None, None);
    let sum = evaluator.add(&ct, &ct).expect("a loaded ciphertext adds");
    assert_eq!(sum.level(), ct.level());
}
