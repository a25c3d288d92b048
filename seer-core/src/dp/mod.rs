//! Local differential privacy for the analytics lane.
//!
//! Each meter sends two lanes (DESIGN.md, "Two lanes"): exact integer Wh for billing, and an
//! analytics lane of readings with noise added **on the meter**, so that forecasts and anomaly
//! scores computed from it are ε-DP by post-processing. This module is that noise and its
//! bookkeeping:
//!
//! - [`Epsilon`]: a validated privacy-loss parameter.
//! - [`DiscreteLaplace`]: the two-sided geometric distribution over the integers with an exact
//!   rational scale, sampled exactly with integer arithmetic (Canonne–Kamath–Steinke 2020), as
//!   OpenDP and Google's differential-privacy library do. Floating-point inverse-CDF Laplace
//!   noise is not used: its rounding artifacts reveal the true value (Mironov, "On Significance
//!   of the Least Significant Bits for Differential Privacy", CCS 2012).
//! - [`LaplaceMechanism`]: clamp a reading to `0 ..= sensitivity` Wh, add noise of scale
//!   sensitivity/ε; each reading is ε-DP against any change of its value. Its
//!   [`analytics_lane`](LaplaceMechanism::analytics_lane) noises a batch and charges it.
//! - [`PrivacyAccountant`]: one meter's ε spent per day or month under sequential composition,
//!   refusing releases past the budget ([`Error::BudgetExhausted`](crate::Error::BudgetExhausted));
//!   serialisable, so the meter can persist it.
//! - [`SharePlan`]: distributed noise for a group's total (DREAM): each meter adds a
//!   [`PolyaDifference`] share so that the summed lane of the group carries exactly one
//!   discrete Laplace draw, whatever the group's size; the key authority tops up missing
//!   shares.
//! - [`AnalyticsNoise`]: a mechanism with its CSPRNG — [`NoiseRng`] (ChaCha12) seeded from the
//!   operating system in production, any [`rand::CryptoRng`] injected in tests.
//!
//! ```
//! use chrono::NaiveDate;
//! use seer_core::dp::{AnalyticsNoise, BudgetPeriod, Epsilon, LaplaceMechanism, PrivacyAccountant};
//! use seer_core::units::Wh;
//!
//! let day = NaiveDate::from_ymd_opt(2007, 1, 31).unwrap();
//! // Readings of up to 2.5 kWh (15 minutes at 10 kW), ε = 0.05 per reading.
//! let mechanism = LaplaceMechanism::try_new(Wh::try_new(2_500)?, Epsilon::try_new(0.05)?)?;
//! let mut noise = AnalyticsNoise::from_os_entropy(mechanism)?;
//! // A day's budget of 4.8: one 15-minute reading every quarter hour at ε = 0.05 (96 × 0.05).
//! let mut budget =
//!     PrivacyAccountant::new("meter-7", BudgetPeriod::Day, Epsilon::try_new(4.8)?, day);
//!
//! let readings = [210, 301, 290, 305].map(Wh::try_new);
//! let readings: Vec<Wh> = readings.into_iter().collect::<Result<_, _>>()?;
//! let lane = noise.analytics_lane(&readings, day, &mut budget)?;
//! assert_eq!(lane.readings().len(), 4);
//! assert_eq!(lane.epsilon_spent(), 0.2);
//!
//! // The day's other 92 readings fit; a 97th does not: refused, nothing released or charged.
//! noise.analytics_lane(&vec![Wh::ZERO; 92], day, &mut budget)?;
//! let refused = noise.analytics_lane(&[Wh::ZERO], day, &mut budget);
//! assert!(matches!(refused, Err(seer_core::Error::BudgetExhausted { .. })));
//! // The next day has a fresh budget.
//! noise.analytics_lane(&[Wh::ZERO], day.succ_opt().unwrap(), &mut budget)?;
//! # Ok::<(), seer_core::Error>(())
//! ```
//!
//! # Guarantees in one place
//!
//! - One reading: ε-DP against any change of the reading (after clamping, every two readings
//!   differ by at most the sensitivity), for the exact binary value of ε.
//! - A batch or period of n readings: ε-DP for a change of one reading, n·ε-DP for a change of
//!   all of them (sequential composition); the accountant charges n·ε. At 15-minute readings a
//!   day is 96·ε and a 30-day month 2880·ε.
//! - Budget periods compose too: the loss over k periods is at most k times the budget (each
//!   budget with a relative rounding slack of [`BUDGET_SLACK`] = 2⁻⁴⁰).
//! - Everything computed from the lane (under encryption or not) is post-processing.
//! - Exactness: the noise is the exact discrete Laplace distribution conditioned on
//!   |noise| ≤ 2⁶², which differs from it by less than 2^−370000 in total variation.
//! - Randomness: only [`rand::CryptoRng`] generators are accepted.

mod accountant;
pub mod defaults;
mod distributed;
mod epsilon;
mod lane;
mod sampler;

pub use accountant::{BUDGET_SLACK, BudgetPeriod, PrivacyAccountant};
pub use defaults::{DEFAULT_EPSILON_PER_READING, DEFAULT_SENSITIVITY_WH};
pub use distributed::{MAX_GROUP_SIZE, PolyaDifference, SharePlan};
pub use epsilon::Epsilon;
pub use lane::{AnalyticsLane, AnalyticsNoise, LaplaceMechanism, NoiseRng, NoisyWh, os_seeded_rng};
pub use sampler::{DiscreteLaplace, MAX_NOISE, MAX_SENSITIVITY_WH};
