//! The token verifier (raw tokens; claims and headers of the fuzzer's choosing signed with a
//! fixture key, so that claim validation behind the signature is reached), meter
//! certificates (parsing, canonical re-encoding, authority signatures), device-key
//! signatures, public-key PEM parsing, and the audit chain's canonical entry encoding and
//! head signature. Input: one mode byte, then the bytes for that mode.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| seer_fuzz::auth::run(data));
