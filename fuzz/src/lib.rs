//! SEER's fuzzing harness: the bodies of the libFuzzer targets in `fuzz_targets/` and the
//! seed generator (`src/bin/seeds.rs`). Each target feeds untrusted bytes to the decoders the
//! programs run on what they receive or load; see SECURITY.md ("Fuzzing") for the targets,
//! the commands and the counts.

pub mod auth;
pub mod ckks;
pub mod csv;
#[cfg(feature = "programs")]
pub mod rpc;
