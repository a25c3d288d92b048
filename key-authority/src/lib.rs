//! The SEER key authority. It holds the only CKKS secret key, publishes the public key
//! material (`seer.v1.Keys`), records the meters' batch receipts (`seer.v1.Receipts`), releases
//! only registered final results under its policy (`seer.v1.Release`: bills, see [`release`])
//! and keeps the audit log (`seer.v1.Audit`); it enrols meters' device keys and renews their
//! household tokens (`seer.v1.Enrolment`, see [`enrolment`]), beside `seer.v1.Node`, health and reflection.
//!
//! The binary in `main.rs` is thin: it loads [`Settings`], starts the telemetry, builds an
//! [`Application`] and runs it until SIGINT or SIGTERM. Tests build the same [`Application`]
//! on port 0.

pub mod analytics;
pub mod audit;
/// Authentication: SEER's JWT roles (the `seer-auth` crate, with token issuing).
pub use seer_auth as auth;
pub mod enrolment;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod gate;
pub mod group_totals;
pub mod keys;
pub mod keys_api;
pub mod outputs;
pub mod release;
pub mod revocation;
pub mod settings;
pub mod signed_receipts;
pub mod startup;

pub use seer_service::telemetry;
pub use settings::Settings;
pub use startup::Application;
