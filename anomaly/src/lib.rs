//! Anomaly detection on encrypted daily load profiles: an Isolation Forest whose every
//! comparison is a smooth polynomial step, evaluated slot-parallel on CKKS ciphertexts.
//!
//! - [`features`]: day profiles and features whose splits are linear forms of the readings;
//! - [`forest`]: Isolation Forest training on a shared threshold grid, `c(n)`, scores;
//! - [`step`]: the composite polynomial step;
//! - [`model`]: the stored model (features, grid, forest, step, threshold, lane, metadata), the
//!   hard plaintext scorer and the smooth plaintext twin of the circuit, explanations;
//! - [`circuit`]: the encrypted scorer (utility side; no secret key);
//! - [`inject`]: the labelled anomaly injector; [`metrics`]: ROC-AUC, F1; [`zscore`]: the
//!   rolling z-score detector, plaintext and encrypted;
//! - [`release`]: the registered `anomaly` computation as the utility evaluates it and the key
//!   authority re-executes and releases it (rounded score, flag, z-score, explanations).
//!
//! The evaluation (`examples/evaluate.rs`) trains on the UCI household's 2006–2009 days,
//! injects labelled anomalies into its 2010 days and reports detection quality for the hard
//! forest, the released smooth model, the z-score and the analytics lane, and, with
//! `--encrypted N`, the encrypted path's agreement with its twin and its throughput.

pub mod circuit;
pub mod error;
pub mod features;
pub mod forest;
pub mod inject;
pub mod metrics;
pub mod model;
pub mod release;
pub mod step;
pub mod zscore;

pub use error::AnomalyError;
pub use model::AnomalyModel;
