//! The SEER utility server. It will ingest households' encrypted readings, run the
//! homomorphic billing, forecasting and anomaly computations, and ask the key authority to
//! release their results; for now it serves only `seer.v1.Node`, health and reflection.
//!
//! The binary in `main.rs` is thin: it loads [`Settings`], starts the telemetry, builds an
//! [`Application`] and runs it until SIGINT or SIGTERM. Tests build the same [`Application`]
//! on port 0.

pub mod settings;
pub mod startup;

pub use seer_service::telemetry;
pub use settings::Settings;
pub use startup::Application;
