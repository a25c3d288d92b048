//! The SEER domain: data loading now; tariffs, lanes, models and circuits next.

pub mod circuits;
pub mod data;
pub mod dp;
pub mod error;
pub mod tariff;
pub mod units;

pub use error::Error;
