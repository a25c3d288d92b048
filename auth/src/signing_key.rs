//! The key authority's Ed25519 signing key: generated on first start, kept in a PKCS#8 PEM file
//! of mode 0600, held in memory in types that zeroize on drop, never printed.

use std::path::Path;

use ed25519_dalek::Signer as _;
use ed25519_dalek::pkcs8::{EncodePrivateKey as _, EncodePublicKey as _};

use crate::key_file::{self, KeyOrigin};
use crate::{AuthError, key_id_of};

/// The key authority's Ed25519 signing key: it signs JWTs (EdDSA) and the audit log's head.
///
/// The secret lives in an [`ed25519_dalek::SigningKey`] and in `jsonwebtoken`'s
/// [`jsonwebtoken::EncodingKey`] (its PKCS#8 form); both zeroize their bytes on drop. The type
/// implements neither `Clone` nor `Serialize`, and its `Debug` output shows only the public
/// key id. Share it with `Arc`.
pub struct JwtSigningKey {
    signing: ed25519_dalek::SigningKey,
    encoding: jsonwebtoken::EncodingKey,
    key_id: String,
}

impl std::fmt::Debug for JwtSigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtSigningKey")
            .field("key_id", &self.key_id)
            .field("secret", &"[REDACTED]")
            .finish()
    }
}

impl JwtSigningKey {
    /// Generates a fresh key from the operating system's CSPRNG.
    ///
    /// # Errors
    /// When the random number generator fails.
    pub fn generate() -> Result<Self, AuthError> {
        Self::from_signing_key(key_file::generate()?)
    }

    fn from_signing_key(signing: ed25519_dalek::SigningKey) -> Result<Self, AuthError> {
        let der = signing.to_pkcs8_der().map_err(|_| {
            AuthError::InvalidRequest("encoding the signing key as PKCS#8 failed".into())
        })?;
        let encoding = jsonwebtoken::EncodingKey::from_ed_der(der.as_bytes());
        let key_id = key_id_of(&signing.verifying_key());
        Ok(Self {
            signing,
            encoding,
            key_id,
        })
    }

    /// Loads the key from `path`, or, when the file does not exist, generates one and writes it
    /// there (mode 0600, created atomically: a crash never leaves a half-written key file).
    ///
    /// An existing file must be a regular file that neither group nor others may read or write;
    /// otherwise this refuses with [`AuthError::KeyFilePermissions`], whose message says which
    /// `chmod` to run.
    ///
    /// # Errors
    /// When the file cannot be read or created, has loose permissions, or does not hold a
    /// PKCS#8 PEM Ed25519 private key.
    pub fn load_or_generate(path: &Path) -> Result<(Self, KeyOrigin), AuthError> {
        let (signing, origin) = key_file::load_or_generate(path)?;
        let key = Self::from_signing_key(signing)?;
        if origin == KeyOrigin::Generated {
            tracing::info!(path = %path.display(), key_id = %key.key_id, "generated a new signing key");
        }
        Ok((key, origin))
    }

    /// Loads the key from an existing file (see [`Self::load_or_generate`] for the checks).
    ///
    /// # Errors
    /// When the file is missing or unreadable, has loose permissions, or does not hold a
    /// PKCS#8 PEM Ed25519 private key.
    pub fn load(path: &Path) -> Result<Self, AuthError> {
        Self::from_signing_key(key_file::load(path)?)
    }

    /// The public half.
    #[must_use]
    pub fn verifying_key(&self) -> ed25519_dalek::VerifyingKey {
        self.signing.verifying_key()
    }

    /// The public key as a SubjectPublicKeyInfo PEM (`-----BEGIN PUBLIC KEY-----`), the form
    /// other services load with [`super::TokenVerifier::from_public_key_pem`].
    ///
    /// # Errors
    /// Never in practice (encoding a valid key); reported rather than panicking.
    pub fn public_key_pem(&self) -> Result<String, AuthError> {
        self.verifying_key()
            .to_public_key_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
            .map_err(|_| AuthError::InvalidPublicKey)
    }

    /// A short public identifier of this key: hex of the first 8 bytes of the SHA-256 of the
    /// raw public key. Carried as the JWT `kid` header and recorded with the audit head.
    #[must_use]
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// Signs `message` with Ed25519. Callers must prefix their messages with a domain
    /// separation tag so that a signature for one purpose can never be taken for another (JWT
    /// signing inputs start with the base64url of `{"`, which no tag does).
    #[must_use]
    pub fn sign(&self, message: &[u8]) -> ed25519_dalek::Signature {
        self.signing.sign(message)
    }

    pub(super) fn encoding_key(&self) -> &jsonwebtoken::EncodingKey {
        &self.encoding
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify_signature;

    fn assert_zeroize_on_drop<T: zeroize::ZeroizeOnDrop>() {}

    #[test]
    fn secret_holders_zeroize_on_drop() {
        assert_zeroize_on_drop::<ed25519_dalek::SigningKey>();
        assert_zeroize_on_drop::<jsonwebtoken::EncodingKey>();
    }

    #[test]
    fn debug_shows_no_secret() {
        let key = JwtSigningKey::generate().expect("key");
        let debug = format!("{key:?}");
        assert!(debug.contains(key.key_id()));
        assert!(debug.contains("REDACTED"));
        let secret_hex = hex::encode(key.signing.to_bytes());
        assert!(!debug.contains(&secret_hex));
    }

    #[test]
    fn signatures_verify_only_for_their_message_and_key() {
        let key = JwtSigningKey::generate().expect("key");
        let other = JwtSigningKey::generate().expect("key");
        let signature = key.sign(b"SEER-TEST\0message");
        assert!(verify_signature(
            &key.verifying_key(),
            b"SEER-TEST\0message",
            &signature
        ));
        assert!(!verify_signature(
            &key.verifying_key(),
            b"SEER-TEST\0other",
            &signature
        ));
        assert!(!verify_signature(
            &other.verifying_key(),
            b"SEER-TEST\0message",
            &signature
        ));
    }
}
