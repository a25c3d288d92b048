//! The SEER utility server. It will ingest households' encrypted readings, run the
//! homomorphic billing, forecasting and anomaly computations, and ask the key authority to
//! release their results; for now it serves only `seer.v1.Node`, health and reflection.
//!
//! The binary in `main.rs` is thin: it loads [`Settings`], starts [`telemetry`], builds an
//! [`Application`] and runs it until SIGINT or SIGTERM. Tests build the same [`Application`]
//! on port 0.

pub mod node;
pub mod settings;
pub mod startup;
pub mod telemetry;

pub use settings::Settings;
pub use startup::Application;
