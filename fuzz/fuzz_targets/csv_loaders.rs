//! The CSV loaders: `seer_core`'s `timestamp,kwh` and UCI loaders (strict and lenient, with
//! and without a fixed resolution and UTC offset), the resampling every program applies to
//! what they load, and `seer anomaly`'s own CSV reader.
//!
//! Input: one option byte, then the file. Oracles beyond "no panic": a load that succeeds
//! reports `data_rows == readings + missing_rows + skipped` and resampling conserves the
//! total energy of complete intervals.
#![no_main]

use libfuzzer_sys::fuzz_target;
use seer_fuzz::csv::run;

fuzz_target!(|data: &[u8]| run(data));
