//! SEER's CKKS engine: safe Rust over Microsoft SEAL 4.0.
//!
//! `sealy` builds and links SEAL; this crate adds what SEER needs and `sealy` lacks —
//! rescaling, rotations, levels and scales, automatic operand alignment, polynomial
//! evaluation, a level budget checked before SEAL is called, and a versioned, checksummed,
//! size-limited serialization — with every `unsafe` line in the private `ffi` module.
//!
//! ```no_run
//! # #[cfg(feature = "secret-key")]
//! # fn demo() -> Result<(), seer_ckks::CkksError> {
//! use seer_ckks::*;
//! let ctx = CkksContext::new(ParameterSet::N8192_L2_SEC128)?;
//! let keygen = KeyGenerator::new(&ctx)?;
//! let encryptor = Encryptor::new(&ctx, &keygen.public_key()?)?;
//! let evaluator = Evaluator::new(&ctx, Some(keygen.relin_keys()?), Some(keygen.galois_keys(&[1, 2])?));
//! let a = encryptor.encrypt_values(&[1.0, 2.0, 3.0, 4.0])?;
//! let total = evaluator.sum_slots(&evaluator.multiply(&a, &a)?, 4)?; // 1 + 4 + 9 + 16
//! let decryptor = Decryptor::new(&ctx, &keygen.secret_key()?)?;
//! assert!((decryptor.decrypt_values(&total)?[0] - 30.0).abs() < 1e-6);
//! # Ok(()) }
//! ```
//!
//! Features: `secret-key` enables [`SecretKey`], [`KeyGenerator`] and [`Decryptor`]. Only
//! the key authority enables it; the meter client and the utility server are built without
//! it and so cannot hold or use a secret key.

mod context;
mod error;
mod evaluator;
mod ffi;
mod keys;
mod params;
mod poly;
mod seal_format;
mod serialize;

pub use context::{Ciphertext, CkksContext, Level, Plaintext};
pub use error::CkksError;
pub use evaluator::Evaluator;
pub use ffi::FfiError;
#[cfg(any(test, feature = "secret-key"))]
pub use keys::{Decryptor, KeyGenerator, SecretKey};
pub use keys::{Encryptor, GaloisKeys, PublicKey, RelinKeys, steps_for_sum};
pub use params::{PRIME_ALGORITHM_VERSION, ParameterSet, ParameterSetBuilder, max_log_q_128};
pub use poly::Polynomial;
pub use serialize::FORMAT_VERSION;
