//! Homomorphic computations, one module per computation, each beside its plaintext twin.
//!
//! - [`billing`]: the tiered (slab × time-of-use) bill over the billing lane, packed many
//!   homes per ciphertext.
//! - [`group_totals`]: a group's summed noised lane (distributed noise shares), released as
//!   whole-Wh totals per reading and per hour with the key authority's top-up.
//! - [`isolation`]: several meters' inputs summed into one ciphertext, each restricted to its
//!   own slot block inside the circuit (what keeps meters apart without decrypting an input).

pub mod billing;
pub mod group_totals;
pub mod isolation;
