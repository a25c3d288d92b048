//! Homomorphic computations, one module per computation, each beside its plaintext twin.
//!
//! - [`billing`]: the tiered (slab × time-of-use) bill over the billing lane, packed many
//!   homes per ciphertext.

pub mod billing;
