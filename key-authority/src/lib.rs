//! The SEER key authority. It will hold the only CKKS secret key and release (decrypt) only
//! the results of registered computations, logging every request; for now it serves only
//! `seer.v1.Node`, health and reflection.
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
