//! Ciphertext and key frames as the programs load them (see `seer_fuzz::ckks`). Input: one
//! mode byte (object kind, whether to repair the frame's checksum and lengths, which
//! parameter set), then the frame.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(init: {
    // Contexts are built once, outside the timed inputs.
    seer_fuzz::ckks::small_context();
    seer_fuzz::ckks::billing_context();
}, |data: &[u8]| seer_fuzz::ckks::run(data));
