//! The SEER key authority. It will hold the only CKKS secret key, release only registered
//! final results under its policy and keep the audit log; for now it serves only
//! `seer.v1.Node`, health and reflection.
//!
//! The binary in `main.rs` is thin: it loads [`Settings`], starts the telemetry, builds an
//! [`Application`] and runs it until SIGINT or SIGTERM. Tests build the same [`Application`]
//! on port 0.

pub mod audit;
/// Authentication: SEER's JWT roles (the `seer-auth` crate, with token issuing).
pub use seer_auth as auth;
pub mod keys;
pub mod keys_api;
pub mod settings;
pub mod startup;

pub use seer_service::telemetry;
pub use settings::Settings;
pub use startup::Application;
