//! Helpers shared by the integration tests.

#![allow(dead_code, reason = "each test binary uses a different subset")]

use std::path::PathBuf;

use chrono::NaiveDateTime;

/// A committed sample under `data/samples/`.
pub fn sample(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../data/samples")
        .join(name)
}

/// Parses `YYYY-MM-DD HH:MM`.
pub fn at(s: &str) -> NaiveDateTime {
    NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M").expect("test timestamp")
}
