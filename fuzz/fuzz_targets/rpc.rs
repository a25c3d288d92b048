//! Every RPC's decode-and-handle path (see `seer_fuzz::rpc`). Input: one selector byte, then
//! the protobuf message, or for streaming RPCs the gRPC-framed request body.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(init: {
    seer_fuzz::ckks::billing_context();
}, |data: &[u8]| seer_fuzz::rpc::run(data));
