//! The SEER domain: data loading, tariffs, differential privacy, homomorphic circuits, and the
//! one vocabulary the meter, the utility and the key authority share ([`vocab`]: [`MeterId`],
//! [`Period`], [`Lane`], [`SlotBlock`]; [`registered`]: the registered-computation trait and
//! its typed [`Refusal`]).

pub mod battery;
pub mod circuits;
pub mod data;
pub mod dp;
pub mod error;
pub mod registered;
pub mod tariff;
pub mod units;
pub mod vocab;

pub use error::Error;
pub use registered::{ComputationKind, Refusal, RegisteredComputation, SlotComputation};
pub use vocab::{Lane, MeterId, Period, SlotBlock, format_day, parse_day};
