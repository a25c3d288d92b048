//! Encrypted load forecasting: an LSTM whose gates are learned quadratics, evaluated
//! slot-parallel on CKKS ciphertexts of a home's hourly analytics lane.
//!
//! - [`model`]: the stored model (a fixed ridge forecast, the quadratic-gate LSTM cell, the
//!   read-out, normalisation and metadata), its plain-Rust forward pass — the oracle of the
//!   encrypted circuit — and the anchors (persistence, seasonal naive, ridge);
//! - [`data`]: the UCI household as hourly and quarter-hourly series, the train / validation /
//!   test split and the analytics lane's noise;
//! - [`circuit`]: the encrypted forecaster (utility side; no secret key), its rotation steps
//!   and depth, the decoding of released slots and the sum over homes;
//! - [`release`]: the registered `forecast` computation the utility evaluates and the key
//!   authority re-executes and releases (what leaves, per lane);
//! - `train` (feature `tch`): Adam on absolute error with libtorch, exporting a model.
//!
//! The evaluation (`examples/evaluate.rs`) prints the anchors and the model's MAE on 2010,
//! clean and on the analytics lane at ε = 1 and ε = 5, and with `--encrypted` the encrypted
//! path's agreement with its twin and its throughput. Training: `scripts/train-forecast.sh`.

pub mod circuit;
pub mod data;
pub mod error;
pub mod model;
pub mod release;
#[cfg(feature = "tch")]
pub mod train;

pub use error::ForecastError;
pub use model::{ForecastModel, forecast_series};
