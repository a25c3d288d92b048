//! The SEER domain: data loading now; tariffs, lanes, models and circuits next.

pub mod data;
pub mod error;
pub mod units;

pub use error::Error;
