//! The SEER utility server: ingests households' encrypted batches exactly once per (meter,
//! sequence) into its store; the homomorphic billing, forecasting and anomaly jobs and the
//! releases they ask the key authority for build on it.
//!
//! - [`batch`]: the wire batch checked into a [`Batch`](batch::Batch), with its content
//!   digest and its distributed-noise plan, if any;
//! - [`lanes`]: both lanes parsed as ciphertexts of the configured parameter sets;
//! - [`store`]: the ciphertext store (SQLite by default, PostgreSQL), its migrations, the
//!   ingest cursor, the billing job's reads and [usage summaries](store::Store::usage_summary);
//! - [`auth`]: who may act for which meter;
//! - [`ingest`]: the `seer.v1.Ingest` service;
//! - [`analytics_ingest`]: the `seer.v1.AnalyticsIngest` service (meters' inputs of the deep
//!   analytics computations, stored until a job evaluates them);
//! - [`billing`]: the billing job (the packed billing circuit evaluated here, the bills
//!   released by the key authority with the month's energy per tariff cell, stored);
//! - [`bills`]: the `seer.v1.Bills` service over the stored bills;
//! - [`household`]: `seer.v1.HomeResults`, one home's released daily forecasts and anomaly
//!   results for its own dashboard;
//! - [`key_authority`]: the jobs' client side of the key authority (their one error type,
//!   connecting, chunked evaluation keys);
//! - [`analytics`]: the deep analytics release shared by [`anomaly`] (daily scores) and
//!   [`forecast`] (hourly load forecasts): deep keys, the evaluation over the meters' summed
//!   inputs, the streamed release request, and the tables of what was released;
//! - [`daily`]: the daily lane's job (one small `N4096_L1` ciphertext per meter-day, four
//!   meters per release request, Galois keys cached on disk by digest) and its stored
//!   forecasts and anomaly results;
//! - [`group_totals`]: the distributed-noise job: a noise group's batches of one window
//!   (their analytics lanes carrying shares of one discrete Laplace draw, under the plan
//!   each meter signed) streamed to the key authority, which releases the group's hourly
//!   totals; the released hours are stored;
//! - [`dashboard`]: the utility dashboard, server-rendered pages on their own listener over
//!   what the store holds (released results, counts and times), live through server-sent
//!   events.
//!
//! The utility never holds a secret key: this crate is built without `seer-ckks`'s
//! `secret-key` feature.
//!
//! The binary in `main.rs` is thin: it loads [`Settings`], starts the telemetry, builds an
//! [`Application`] and runs it until SIGINT or SIGTERM. Tests build the same [`Application`]
//! on port 0.

pub mod analytics;
pub mod analytics_ingest;
pub mod anomaly;
pub mod auth;
pub mod batch;
pub mod billing;
pub mod bills;
pub mod daily;
pub mod dashboard;
pub mod forecast;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod gate;
pub mod group_totals;
pub mod household;
pub mod ingest;
pub mod jobs;
pub mod key_authority;
pub mod lanes;
pub mod settings;
pub mod signatures;
pub mod startup;
pub mod statements;
pub mod store;

pub use seer_service::telemetry;
pub use settings::Settings;
pub use startup::Application;
pub use store::{Store, UsageSummary};

/// The usage summary of `meter_id` in `period` (counts, times and ε only; nothing is
/// decrypted): see [`Store::usage_summary`].
///
/// # Errors
/// When the store fails.
pub async fn usage_summary(
    store: &Store,
    meter_id: &batch::MeterId,
    period: batch::Period,
) -> Result<UsageSummary, store::StoreError> {
    store.usage_summary(meter_id, period).await
}
