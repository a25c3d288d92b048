//! Homomorphic computations, one module per computation, each beside its plaintext twin.
//!
//! - [`billing`]: the tiered (slab × time-of-use) bill over the billing lane, packed many
//!   homes per ciphertext.
//! - [`isolation`]: several meters' inputs summed into one ciphertext, each restricted to its
//!   own slot block inside the circuit (what keeps meters apart without decrypting an input).

pub mod billing;
pub mod isolation;
