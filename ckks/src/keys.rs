//! Keys, encryption and decryption.
//!
//! The secret key, the key generator and the decryptor exist only with the `secret-key`
//! feature, which only the key authority (and tests) enable: a crate built without it cannot
//! even name a secret key. Public, relinearization and Galois keys are generated with SEAL's
//! seeded form (half the size on the wire) and kept in that compact form for serialization.

use std::sync::Arc;

use crate::context::{Ciphertext, CkksContext, Plaintext};
use crate::error::CkksError;
use crate::ffi::{RawEncryptor, RawKSwitchKeys, RawPublicKey};
use crate::seal_format;
use crate::serialize::{self, ObjectKind};

/// Normalizes a rotation step to the equivalent left rotation in `1..slots`.
pub(crate) fn normalize_step(step: i64, slots: usize) -> Result<i32, CkksError> {
    let slots_i = slots as i64;
    if step <= -slots_i || step >= slots_i {
        return Err(CkksError::InvalidRotation { step, slots });
    }
    Ok(step.rem_euclid(slots_i) as i32)
}

/// The public key: meters encrypt with it.
pub struct PublicKey {
    pub(crate) raw: RawPublicKey,
    compact: Arc<Vec<u8>>,
    id: String,
}

impl PublicKey {
    /// Serializes the key (SEER frame around SEAL's compact seeded form).
    pub fn to_bytes(&self, ctx: &CkksContext) -> Vec<u8> {
        serialize::write(ctx, ObjectKind::PublicKey, &[], &self.compact)
    }

    /// Loads and validates a public key for `ctx`.
    pub fn from_bytes(ctx: &CkksContext, bytes: &[u8]) -> Result<Self, CkksError> {
        let limit = serialize::size_limit(ctx, ObjectKind::PublicKey, 0);
        let frame = serialize::read(ctx, ObjectKind::PublicKey, bytes, limit)?;
        let checked = seal_format::check(ctx, ObjectKind::PublicKey, &[], frame.payload, limit)?;
        let raw = RawPublicKey::load(&ctx.inner.raw, &checked)?;
        Ok(Self {
            raw,
            compact: Arc::new(frame.payload.to_vec()),
            id: ctx.parameter_set_id().to_string(),
        })
    }
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublicKey")
            .field("parameter_set", &self.id)
            .finish()
    }
}

/// Relinearization keys (needed by every ciphertext–ciphertext multiplication).
pub struct RelinKeys {
    pub(crate) raw: RawKSwitchKeys,
    compact: Arc<Vec<u8>>,
}

impl RelinKeys {
    /// Serializes the keys.
    pub fn to_bytes(&self, ctx: &CkksContext) -> Vec<u8> {
        serialize::write(ctx, ObjectKind::RelinKeys, &[], &self.compact)
    }

    /// Loads and validates relinearization keys for `ctx`.
    pub fn from_bytes(ctx: &CkksContext, bytes: &[u8]) -> Result<Self, CkksError> {
        let limit = serialize::size_limit(ctx, ObjectKind::RelinKeys, 0);
        let frame = serialize::read(ctx, ObjectKind::RelinKeys, bytes, limit)?;
        let checked = seal_format::check(ctx, ObjectKind::RelinKeys, &[], frame.payload, limit)?;
        let raw = RawKSwitchKeys::load(&ctx.inner.raw, &checked)?;
        Ok(Self {
            raw,
            compact: Arc::new(frame.payload.to_vec()),
        })
    }

    /// Size of the serialized keys in bytes.
    pub fn serialized_len(&self) -> usize {
        self.compact.len()
    }
}

impl std::fmt::Debug for RelinKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelinKeys")
            .field("bytes", &self.compact.len())
            .finish()
    }
}

/// Galois keys for an explicit list of rotation steps.
pub struct GaloisKeys {
    pub(crate) raw: RawKSwitchKeys,
    compact: Arc<Vec<u8>>,
    /// Normalized (left, `1..slots`) steps, sorted.
    steps: Vec<i32>,
}

impl GaloisKeys {
    /// The rotation steps these keys support, as left rotations in `1..slots`.
    pub fn steps(&self) -> &[i32] {
        &self.steps
    }

    /// Whether a rotation by `step` (negative: right) is supported.
    pub fn supports(&self, step: i64, slots: usize) -> bool {
        match normalize_step(step, slots) {
            Ok(0) => true,
            Ok(s) => self.steps.binary_search(&s).is_ok(),
            Err(_) => false,
        }
    }

    /// Serializes the keys with their step list.
    pub fn to_bytes(&self, ctx: &CkksContext) -> Vec<u8> {
        serialize::write(
            ctx,
            ObjectKind::GaloisKeys,
            &serialize::steps_to_meta(&self.steps),
            &self.compact,
        )
    }

    /// Loads and validates Galois keys for `ctx`.
    pub fn from_bytes(ctx: &CkksContext, bytes: &[u8]) -> Result<Self, CkksError> {
        let steps_claimed = serialize::peek_galois_step_count(bytes).min(ctx.slots());
        let limit = serialize::size_limit(ctx, ObjectKind::GaloisKeys, steps_claimed);
        let frame = serialize::read(ctx, ObjectKind::GaloisKeys, bytes, limit)?;
        let steps = serialize::steps_from_meta(frame.meta)?;
        let mut normalized = Vec::with_capacity(steps.len());
        for s in &steps {
            normalized.push(normalize_step(*s as i64, ctx.slots())?);
        }
        let sorted_unique = normalized.windows(2).all(|w| w[0] < w[1]) && !normalized.contains(&0);
        if !sorted_unique || normalized != steps {
            return Err(CkksError::Malformed {
                kind: ObjectKind::GaloisKeys.name(),
                reason: "step list is not sorted, unique and normalized".into(),
            });
        }
        let checked = seal_format::check(
            ctx,
            ObjectKind::GaloisKeys,
            &normalized,
            frame.payload,
            limit,
        )?;
        let raw = RawKSwitchKeys::load(&ctx.inner.raw, &checked)?;
        Ok(Self {
            raw,
            compact: Arc::new(frame.payload.to_vec()),
            steps: normalized,
        })
    }

    /// Size of the serialized keys in bytes.
    pub fn serialized_len(&self) -> usize {
        self.compact.len()
    }
}

impl std::fmt::Debug for GaloisKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GaloisKeys")
            .field("steps", &self.steps)
            .field("bytes", &self.compact.len())
            .finish()
    }
}

/// Rotation steps needed to sum `count` consecutive slots (`count` a power of two).
pub fn steps_for_sum(count: usize) -> Vec<i32> {
    let mut steps = Vec::new();
    let mut k = 1;
    while k < count {
        steps.push(k as i32);
        k *= 2;
    }
    steps
}

/// Public-key encryption (what a meter does).
pub struct Encryptor {
    ctx: CkksContext,
    raw: RawEncryptor,
}

impl Encryptor {
    /// An encryptor for `public_key`.
    pub fn new(ctx: &CkksContext, public_key: &PublicKey) -> Result<Self, CkksError> {
        if public_key.id != ctx.parameter_set_id() {
            return Err(ctx.foreign());
        }
        Ok(Self {
            ctx: ctx.clone(),
            raw: RawEncryptor::new(&ctx.inner.raw, &public_key.raw)?,
        })
    }

    /// Encrypts an encoded plaintext.
    pub fn encrypt(&self, plain: &Plaintext) -> Result<Ciphertext, CkksError> {
        let raw = self.raw.encrypt(&plain.raw)?;
        self.ctx.wrap(raw)
    }

    /// Encodes (top level, canonical scale) and encrypts up to `slots()` values.
    pub fn encrypt_values(&self, values: &[f64]) -> Result<Ciphertext, CkksError> {
        self.encrypt(&self.ctx.encode(values)?)
    }
}

#[cfg(any(test, feature = "secret-key"))]
pub use secret::{Decryptor, KeyGenerator, SecretKey};

#[cfg(any(test, feature = "secret-key"))]
mod secret {
    use super::*;
    use crate::ffi::{FfiError, RawContext, RawDecryptor, RawKeyGenerator, RawSecretKey};
    use zeroize::Zeroizing;

    /// The CKKS secret key. Its material lives in SEAL memory that SEAL overwrites on
    /// destruction; its serialized form is returned in a buffer zeroized on drop. It has no
    /// `Clone`, and `Debug` prints nothing of it.
    pub struct SecretKey {
        pub(crate) raw: RawSecretKey,
        id: String,
    }

    impl SecretKey {
        /// Serializes the key into a zeroize-on-drop buffer. Store it only in a file with
        /// mode 0600.
        pub fn to_bytes(&self, ctx: &CkksContext) -> Result<Zeroizing<Vec<u8>>, CkksError> {
            let payload = Zeroizing::new(self.raw.save()?);
            Ok(Zeroizing::new(serialize::write(
                ctx,
                ObjectKind::SecretKey,
                &[],
                &payload,
            )))
        }

        /// Loads and validates a secret key for `ctx`.
        pub fn from_bytes(ctx: &CkksContext, bytes: &[u8]) -> Result<Self, CkksError> {
            let limit = serialize::size_limit(ctx, ObjectKind::SecretKey, 0);
            let frame = serialize::read(ctx, ObjectKind::SecretKey, bytes, limit)?;
            let checked =
                seal_format::check(ctx, ObjectKind::SecretKey, &[], frame.payload, limit)?;
            Ok(Self {
                raw: RawSecretKey::load(&ctx.inner.raw, &checked)?,
                id: ctx.parameter_set_id().to_string(),
            })
        }
    }

    impl std::fmt::Debug for SecretKey {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("SecretKey([REDACTED])")
        }
    }

    /// Generates keys. Holds a copy of the secret key.
    pub struct KeyGenerator {
        ctx: CkksContext,
        raw: RawKeyGenerator,
    }

    impl std::fmt::Debug for KeyGenerator {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("KeyGenerator([REDACTED])")
        }
    }

    impl KeyGenerator {
        /// A generator with a fresh secret key (SEAL's CSPRNG).
        pub fn new(ctx: &CkksContext) -> Result<Self, CkksError> {
            Ok(Self {
                ctx: ctx.clone(),
                raw: RawKeyGenerator::new(&ctx.inner.raw)?,
            })
        }

        /// A generator for an existing secret key (to derive more evaluation keys).
        pub fn from_secret_key(ctx: &CkksContext, secret: &SecretKey) -> Result<Self, CkksError> {
            if secret.id != ctx.parameter_set_id() {
                return Err(ctx.foreign());
            }
            Ok(Self {
                ctx: ctx.clone(),
                raw: RawKeyGenerator::from_secret_key(&ctx.inner.raw, &secret.raw)?,
            })
        }

        /// Loads SEAL's serialization of a key this generator made through the same checks
        /// as keys from a file or the network.
        fn reload<T>(
            &self,
            kind: ObjectKind,
            steps: &[i32],
            compact: &[u8],
            load: impl FnOnce(&RawContext, &seal_format::Checked<'_>) -> Result<T, FfiError>,
        ) -> Result<T, CkksError> {
            let limit = serialize::size_limit(&self.ctx, kind, steps.len());
            let checked = seal_format::check(&self.ctx, kind, steps, compact, limit)?;
            Ok(load(&self.ctx.inner.raw, &checked)?)
        }

        /// The secret key.
        pub fn secret_key(&self) -> Result<SecretKey, CkksError> {
            Ok(SecretKey {
                raw: self.raw.secret_key()?,
                id: self.ctx.parameter_set_id().to_string(),
            })
        }

        /// A new public key.
        pub fn public_key(&self) -> Result<PublicKey, CkksError> {
            let compact = self.raw.public_key(true)?.save()?;
            let raw = self.reload(ObjectKind::PublicKey, &[], &compact, RawPublicKey::load)?;
            Ok(PublicKey {
                raw,
                compact: Arc::new(compact),
                id: self.ctx.parameter_set_id().to_string(),
            })
        }

        /// New relinearization keys.
        pub fn relin_keys(&self) -> Result<RelinKeys, CkksError> {
            let compact = self.raw.relin_keys(true)?.save()?;
            let raw = self.reload(ObjectKind::RelinKeys, &[], &compact, RawKSwitchKeys::load)?;
            Ok(RelinKeys {
                raw,
                compact: Arc::new(compact),
            })
        }

        /// New Galois keys for the given rotation steps (negative: right rotations). Only
        /// generate what a computation uses: each key is as large as the relinearization keys.
        pub fn galois_keys(&self, steps: &[i64]) -> Result<GaloisKeys, CkksError> {
            let slots = self.ctx.slots();
            let mut normalized = steps
                .iter()
                .map(|s| normalize_step(*s, slots))
                .collect::<Result<Vec<_>, _>>()?;
            normalized.retain(|s| *s != 0);
            normalized.sort_unstable();
            normalized.dedup();
            if normalized.is_empty() {
                return Err(CkksError::InvalidRotation { step: 0, slots });
            }
            let compact = self.raw.galois_keys(&normalized, true)?.save()?;
            let raw = self.reload(
                ObjectKind::GaloisKeys,
                &normalized,
                &compact,
                RawKSwitchKeys::load,
            )?;
            Ok(GaloisKeys {
                raw,
                compact: Arc::new(compact),
                steps: normalized,
            })
        }
    }

    /// Decryption (key authority only).
    pub struct Decryptor {
        ctx: CkksContext,
        raw: RawDecryptor,
    }

    impl std::fmt::Debug for Decryptor {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("Decryptor([REDACTED])")
        }
    }

    impl Decryptor {
        /// A decryptor for `secret`.
        pub fn new(ctx: &CkksContext, secret: &SecretKey) -> Result<Self, CkksError> {
            if secret.id != ctx.parameter_set_id() {
                return Err(ctx.foreign());
            }
            Ok(Self {
                ctx: ctx.clone(),
                raw: RawDecryptor::new(&ctx.inner.raw, &secret.raw)?,
            })
        }

        /// Decrypts to a plaintext.
        pub fn decrypt(&self, ct: &Ciphertext) -> Result<Plaintext, CkksError> {
            // Validates that the ciphertext belongs to this context.
            self.ctx.level_of(&ct.raw.parms_id()?)?;
            let raw = self.raw.decrypt(&ct.raw)?;
            Ok(Plaintext::from_raw(raw, ct.level))
        }

        /// Decrypts and decodes all slots.
        pub fn decrypt_values(&self, ct: &Ciphertext) -> Result<Vec<f64>, CkksError> {
            self.ctx.decode(&self.decrypt(ct)?)
        }
    }
}
