//! What leaves the key authority for one home-day of the `daily` computation, derived from the
//! decrypted outputs of the meter's block ([`crate::model::DailyModel::release`]).

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

/// Released forecasts and scores are rounded to multiples of this.
pub const QUANTUM: f64 = 0.001;

/// `x` rounded to a multiple of `quantum`.
#[must_use]
pub fn round_to(x: f64, quantum: f64) -> f64 {
    let r = (x / quantum).round() * quantum;
    // Kill representation noise such as 0.30000000000000004.
    (r * 1e9).round() / 1e9
}

/// One home-day's release.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DailyRelease {
    /// The day whose readings the meter prepared (its anomaly features are of this day; its
    /// forecast is of the next day).
    pub day: NaiveDate,
    /// The next day's 24 hourly forecasts, kWh, rounded to [`QUANTUM`], never negative; `None`
    /// when the meter could not prepare the forecast part.
    pub forecast: Option<Vec<f64>>,
    /// The day's anomaly score; `None` when the meter could not prepare the anomaly part.
    pub anomaly: Option<AnomalyRelease>,
}

/// A day's anomaly release.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AnomalyRelease {
    /// The score, rounded to [`QUANTUM`].
    pub score: f64,
    /// `score ≥` the model's threshold (on the unrounded score).
    pub flagged: bool,
    /// Flagged days only: what drove the score, most important first (at most three).
    pub explanation: Vec<ExplanationItem>,
}

/// One reason a day was flagged, in terms a person can act on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExplanationItem {
    /// The feature's name (`night_load`).
    pub feature: String,
    /// The hours (0–23) the feature looks at.
    pub hours: Vec<u32>,
    /// The range the day's value fell in, as a multiple of the home's usual level (the bin's
    /// edges; `f64::INFINITY` for an open upper end).
    pub usual_low: f64,
    /// Upper end of that range.
    pub usual_high: f64,
    /// The sentence shown to people, e.g. "01:00–05:00 used 2.5–3.1× its usual energy".
    pub text: String,
}
