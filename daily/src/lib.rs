//! The daily lane: fleet-grade encrypted analytics at one small ciphertext per meter per day.
//!
//! A meter holds its own plaintext, so it prepares what the registered circuit needs before it
//! encrypts: once a day, after midnight, it lays out the **day-ahead forecast inputs** (per
//! hour of tomorrow, lagged loads of that hour and the home's usual level) and the **anomaly
//! features** of the day that ended (each a one-hot bin of a ratio to the home's own usual
//! level) in one block of [`layout::BLOCK`] slots of one `N4096_L1` ciphertext (about 86 kB
//! compressed, 0.9 kB per 15-minute reading). The utility evaluates the registered `daily` computation
//! ([`circuit`]): per row of the block one rotation and one plaintext product whose weights
//! are zero outside the meter's own block, so each output slot is a dot product of one column
//! of one meter's block with the model's weights — the hour's forecast, or one feature's
//! histogram outlier score. One level, no relinearization keys, 15 Galois keys (a few MB).
//! The key authority re-executes it byte for byte, decrypts only the output and releases per
//! home-day the forecast of the next day rounded to 0.001 kWh and the anomaly score, its flag
//! and, for flagged days, an explanation in terms of hours and the home's usual level
//! ([`release`]).
//!
//! What the model is (`models/uci-daily.json`, trained by `examples/evaluate.rs`):
//!
//! - **Day-ahead forecast**: an hour-of-day-specific linear model. For each hour `c` of
//!   tomorrow the meter writes 13 inputs in kWh (the usual level, the same hour 1, 2 and 7
//!   days back, yesterday's neighbourhood of the hour, its last hour, its mean and evening
//!   mean, the 28-day, same-weekday and 7-day profiles of the hour, weekend indicators scaled
//!   to the home); one weight vector per hour, fitted by ridge then IRLS towards absolute
//!   error ([`train`]). On the UCI household, 2010: MAE 0.419 kWh per hour against 0.446 for
//!   the hour-of-day linear anchor on lags 1–24 and 168 (0.440 in the protocol).
//! - **Anomaly score**: a histogram outlier score (HBOS) over 4 features of the day, each a
//!   ratio to the home's own usual (28 trailing days): hour-to-hour variation, the heaviest
//!   hour, the night (01:00–05:00) energy and the night against the day's heaviest other hour;
//!   16 bins each at training quantiles; flag at the 95th percentile of training scores.
//!   On 2010 with injected anomalies (5 seeds pooled): ROC-AUC 0.970, F1 0.795.
//!
//! Modules:
//!
//! - [`layout`]: the block (16 rows × 32 columns) and what each column holds;
//! - [`history`]: a home's hourly energy day by day, as the meter keeps it, gaps included,
//!   and when a day is usable;
//! - [`features`]: the forecast inputs and anomaly features, relative to the home's usual,
//!   computed by one code path for the meter and for training;
//! - [`model`]: the stored model (the forecaster, the detector's bins and weights, the
//!   release rules), the meter's preparation, the plaintext twin;
//! - [`train`]: training from a home's days (pure Rust, deterministic, well under a second
//!   on three years);
//! - [`circuit`]: the encrypted evaluation (utility and key authority; no secret key);
//! - [`release`]: what leaves the key authority for one home-day.
//!
//! Measured (`--encrypted`, 256 UCI home-days, one core, a shared machine): encrypt
//! 1.5–1.8 ms per home-day, evaluate 12–15 ms per home-day (a ciphertext of 4 homes / 4),
//! decrypt 0.15 ms per ciphertext; a ciphertext is 86 kB compressed (896 B per 15-minute
//! reading), 131 kB uncompressed (1 367 B); 15 Galois keys 2.1 MB; max |encrypted − twin|
//! 2.5e-4 before rounding (key switching at n = 4096), and every released value that differs
//! after rounding (27 of 6 656) lies within that error of a rounding boundary.

pub mod circuit;
pub mod error;
pub mod features;
pub mod history;
pub mod layout;
pub mod model;
pub mod release;
pub mod train;

pub use error::DailyError;
pub use model::DailyModel;
pub use train::{TrainOptions, train};

/// The CKKS parameter set of the daily lane.
pub const PARAMETERS: seer_ckks::ParameterSet = seer_ckks::ParameterSet::N4096_L1_SEC128;
