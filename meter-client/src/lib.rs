//! The SEER meter client, run by each household: it reads the meter, builds the two lanes of
//! every batch, encrypts them under the key authority's public key, keeps them in a durable
//! local queue, records each batch's receipt with the key authority and streams the batches to
//! the utility server.
//!
//! ```text
//! source ──► readings (15 min) ──► batch window (a week) ──► billing lane  (period-to-date exact
//!  uci: / csv: / synthetic:                                  │               Wh per tariff cell, at
//!                                                            │               the home's block)
//!                                                            └► analytics lane (clamped + this home's
//!                                                                              share of its group's
//!                                                                              noise, ε charged)
//!        ──► encrypt both (public key, pinned) ──► commit to SQLite outbox + lane state + receipt
//!        ──┬► Receipts.Record (key authority, in order) ──► receipt ack ──┐
//!          └► Ingest.Upload (in order, resumable from GetCursor) ──► ack ─┴► both: remove
//! ```
//!
//! - [`source`]: the UCI minute file, `timestamp,kwh` files and the [`synthetic`] generator,
//!   brought to a 15-minute grid (incomplete intervals are skipped, never invented);
//! - [`mqtt`]: a live meter on an MQTT broker (Tasmota, DSMR reader), each message committed
//!   to the state before it is acknowledged, its windows batched as they complete;
//! - [`batch`]: windows (cut at month ends), the billing and analytics lanes (the latter with
//!   distributed noise shares and a signed noise plan), encryption;
//! - [`privacy`]: the household's privacy ledger, per day and lane (`meter-client privacy`);
//! - [`queue`]: the SQLite state and outbox, and the crash-safety argument;
//! - [`grpc`]: connections, the bearer token, fetching and pinning the public key;
//! - [`upload`]: the resumable upload with retries;
//! - [`receipts`]: recording each batch's receipt with the key authority;
//! - [`app`]: one run of all of the above, [`cli`]: the command line;
//! - [`anomaly`] and [`forecast`]: the encrypted inputs of the deep analytics kinds (hour
//!   planes per day; the hourly series) with their receipts and uploads ([`analytics`]);
//!   [`forecast_upload`]: `meter-client forecast`, one series per forecast day at the home's
//!   fixed block, kept in the state directory until it is sent;
//! - [`daily`]: `meter-client daily`, the daily lane (`seer-daily`): per day one `N4096`
//!   ciphertext with the next day's forecast inputs and the day's anomaly features at the
//!   home's block, kept in the state directory until it is sent.
//!
//! - [`dashboard`]: `meter-client dashboard`, the household's own web page on loopback
//!   (readings as batched, the analytics lane as sent, an ε preview drawn locally, a battery
//!   what-if), behind a random access key; [`espi`]: its Green Button export.
//!
//! The client never holds a secret key: it is built without `seer-ckks/secret-key`.

pub mod analytics;
pub mod anomaly;
pub mod app;
pub mod batch;
pub mod cli;
pub mod daily;
pub mod dashboard;
pub mod error;
pub mod espi;
pub mod forecast;
pub mod forecast_lane;
pub mod forecast_upload;
pub mod grpc;
pub mod identity;
pub mod mqtt;
pub mod pins;
pub mod privacy;
pub mod queue;
pub mod receipts;
pub mod signing;
pub mod source;
pub mod synthetic;
pub mod tokens;
pub mod upload;

use std::time::Duration;

use chrono::NaiveDateTime;
use seer_core::data::Interval;

pub use app::{RunReport, Settings, run, run_with_noise};
pub use cli::{Cli, Command, execute};
pub use error::Error;

/// The software version of this binary (its crate version).
pub const SOFTWARE_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Progress of a run, reported to an observer (the binary prints them to stderr).
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// The public key was fetched and pinned (first use) or matched the pin.
    KeyPinned {
        /// The parameter set.
        parameter_set: String,
        /// BLAKE3 of the key, hex.
        blake3: String,
        /// Whether this run pinned it.
        first_use: bool,
    },
    /// The source was loaded.
    SourceLoaded {
        /// Readings in range.
        readings: usize,
        /// Intervals skipped for missing readings.
        skipped_intervals: usize,
        /// The readings' interval.
        interval: Interval,
    },
    /// A batch was built and committed to the outbox.
    Queued {
        /// Its sequence.
        sequence: u64,
        /// Its first reading's start.
        start: NaiveDateTime,
        /// Its readings.
        readings: u32,
        /// Billing-lane ciphertext bytes.
        billing_bytes: usize,
        /// Analytics-lane ciphertext bytes.
        analytics_bytes: usize,
        /// ε charged.
        epsilon_spent: f64,
    },
    /// The utility server acknowledged a batch.
    Acknowledged {
        /// Its sequence.
        sequence: u64,
        /// Whether the server had it already.
        duplicate: bool,
    },
    /// The key authority acknowledged a batch's receipt.
    ReceiptRecorded {
        /// The batch's sequence.
        sequence: u64,
        /// Whether the key authority had it already.
        duplicate: bool,
    },
    /// A call failed transiently; the client retries after `delay`.
    Reconnecting {
        /// Consecutive failures so far.
        attempt: u32,
        /// The wait before the next attempt.
        delay: Duration,
        /// The failure.
        error: String,
    },
}
