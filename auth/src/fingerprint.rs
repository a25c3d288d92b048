//! The fingerprint of the key authority's JWT verification key, for pinning it in
//! configuration: SHA-256 of the key's SubjectPublicKeyInfo DER, in lowercase hex — what
//! `openssl pkey -pubin -in ka.pem -outform DER | sha256sum` prints, and what
//! `key-authority fingerprints` prints as `jwt-public-key-sha256`.
//!
//! The utility server (`auth.jwt_public_key_sha256`) and `seer audit verify`
//! (`--public-key-sha256`) accept the key file only when it has the configured fingerprint, so
//! a verification key swapped on disk or on the way is refused rather than trusted.

use ed25519_dalek::pkcs8::{DecodePublicKey as _, EncodePublicKey as _};
use sha2::{Digest as _, Sha256};

use crate::AuthError;

/// The fingerprint of the Ed25519 public key in `pem` (`-----BEGIN PUBLIC KEY-----`).
///
/// # Errors
/// [`AuthError::InvalidPublicKey`] when `pem` is not an Ed25519 public key.
pub fn public_key_fingerprint(pem: &str) -> Result<String, AuthError> {
    let key = ed25519_dalek::VerifyingKey::from_public_key_pem(pem)
        .map_err(|_| AuthError::InvalidPublicKey)?;
    let der = key
        .to_public_key_der()
        .map_err(|_| AuthError::InvalidPublicKey)?;
    Ok(hex::encode(Sha256::digest(der.as_bytes())))
}

/// Checks that the public key in `pem` has the fingerprint `expected` (hex, any case).
///
/// # Errors
/// [`AuthError::InvalidPublicKey`] when `pem` is not an Ed25519 public key;
/// [`AuthError::FingerprintMismatch`] when the fingerprints differ.
pub fn check_public_key_fingerprint(pem: &str, expected: &str) -> Result<(), AuthError> {
    let actual = public_key_fingerprint(pem)?;
    let expected = expected.trim().to_ascii_lowercase();
    if actual == expected {
        Ok(())
    } else {
        Err(AuthError::FingerprintMismatch { expected, actual })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fingerprint_is_sha256_of_the_spki_der() {
        let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
        let pem = key
            .verifying_key()
            .to_public_key_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
            .expect("pem");
        // The SPKI DER of an Ed25519 key: a fixed 12-byte prefix (RFC 8410) and the key.
        let mut der = vec![
            0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
        ];
        der.extend_from_slice(key.verifying_key().as_bytes());
        let expected = hex::encode(Sha256::digest(&der));
        assert_eq!(public_key_fingerprint(&pem).expect("fingerprint"), expected);
        check_public_key_fingerprint(&pem, &expected.to_ascii_uppercase()).expect("matches");
        let other = ed25519_dalek::SigningKey::from_bytes(&[8; 32])
            .verifying_key()
            .to_public_key_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
            .expect("pem");
        let error = check_public_key_fingerprint(&other, &expected).expect_err("another key");
        assert!(matches!(error, AuthError::FingerprintMismatch { .. }));
        assert!(
            error.to_string().contains("key-authority fingerprints"),
            "{error}"
        );
        assert!(public_key_fingerprint("not a key").is_err());
    }
}
