//! Release of deep analytics computations (`seer.v1.AnalyticsReceipts`, `seer.v1.Analytics`;
//! the policy and the privacy cost of each release are the header of `analytics.proto`).
//!
//! Three kinds are registered, each a [`Computation`] in the [`DeepEngine`]'s registry sharing
//! the checks, the re-execution, the comparison, the audit and the once-per-period rule; each
//! runs at its own parameter set and the engine holds an evaluator per set:
//! `anomaly` ([`AnomalyComputation`]: one slot per day, the 24 hour planes of each meter) and
//! `forecast` ([`ForecastComputation`]: one slot per hour, each meter's hourly series as one
//! ciphertext; on the exact lane only the forecasts past the series' end leave, on the
//! analytics lane the backtest too, see `seer_forecast::release`), both [`SlotComputation`]s
//! on the deep `N32768` set, evaluated on isolated sums; and `daily`
//! ([`DailyComputation`], `seer_daily`): one `N4096_L1` ciphertext holds up to 4 meters'
//! 512-slot blocks (16 rows × 32 columns) of one day; the circuit is one rotation and one
//! plaintext product per row, with the weights zero outside each meter's block (block
//! isolation folded into the circuit, so no `isolated_sums`, depth 1). A `daily` release is
//! per meter-day, not per slot: the next day's 24 hourly forecasts (rounded to 0.001 kWh,
//! never negative) and the day's anomaly score (rounded to 0.001), its flag and, for a
//! flagged day, the features that drove it in terms of hours and the home's usual level
//! ([`DailyReleased`]); `seer_daily::DailyModel::release` refuses implausible outputs (a
//! presence code other than 0–3, a forecast beyond the model's limit, a feature output that
//! is no bin's weight).
//!
//! - **Daily key set** (always): `N4096_L1` with relinearization keys and the Galois keys of
//!   every row step of the block (`seer_daily::circuit::all_galois_steps`, 15 keys; about
//!   0.5 s to generate on the first start, 0.2 s to load after). Daily models
//!   ([`AnalyticsSettings::daily_models`]) are registered whether or not the deep set is
//!   enabled; the default path is relative to the working directory and skipped with a
//!   warning when absent, a configured one that is missing fails the start.
//! - **`daily` receipts**: `first_period` the day the meter prepared (`YYYY-MM-DD`: the
//!   anomaly part is of that day, the forecast of the next), `slot_count` 512, `slot_offset` a
//!   multiple of 512 below 2048, one input digest, the exact lane at ε 0.
//! - **`daily` release**: 1 to 4 meters with distinct blocks, the same per-meter checks as
//!   below; the utility sends exactly one result ciphertext (`result_count` 1), byte-identical
//!   to `seer_daily::circuit::evaluate` over the meters in request order; the period is the
//!   day, released at most once per (daily, meter, day) (one `analytics_releases` row:
//!   `value_milli` the score in thousandths, 0 without the anomaly part). An exact retry
//!   (same meter, day, input id, model and input ciphertexts) is answered from the copy
//!   stored with the grant (`daily_release_copies`; a `daily.retry` entry, nothing
//!   decrypted), so a worker that lost the answer loses no home-day (see `retry`).
//!
//! - **Deep key set** (opt-in, [`AnalyticsSettings::enabled`]; `anomaly` and `forecast`
//!   receipts are refused while it is off): one N32768_L19 key set with
//!   relinearization keys and the Galois keys for the union of the registered computations'
//!   rotation steps (by default `−1, −2, …, −128`, which also covers the forecaster). Off by
//!   default, so that a default key authority starts as fast as before (key generation at
//!   n = 32768 takes about 12 s plus 2 s and 86 MB per Galois key). `seer.v1.Keys` serves it
//!   to the utility in chunks like every key set.
//! - **Registry** ([`DeepEngine`]): the model files configured in
//!   [`AnalyticsSettings::anomaly_models`], [`AnalyticsSettings::forecast_models`] and
//!   [`AnalyticsSettings::daily_models`], each
//!   registered under the BLAKE3 of its bytes; a
//!   request naming another digest is refused.
//! - **Input receipts** ([`AnalyticsReceiptsService`]): a meter records, under its household
//!   token and signed with its device key ([`crate::signed_receipts`]), the BLAKE3 of each
//!   input ciphertext, the slot block it wrote, the period of the block's first slot
//!   ([`SlotPeriod`]: a date, or an hour), its lane and the ε it spent, the model and the
//!   evaluation group; the row keeps every field of the signed statement.
//! - **Release** ([`AnalyticsReleaser::release`], [`AnalyticsService`]): per meter, in order
//!   (the first failing check is the refusal reason in the audit log): a valid meter id named
//!   once; a receipt under the named input id, bound to the audit chain (the granted
//!   `analytics-receipt` entry's digest is the SHA-256 of the statement rebuilt from the row,
//!   [`AnalyticsStore::bound_receipt`]); inputs on the lane the model scores (an
//!   analytics-lane model never releases scores of exact readings, nor the reverse); as many inputs as the computation takes, each
//!   hashing to the receipt's digest; a block inside the slots, longer than its history and
//!   disjoint from every earlier accepted block of the request; no period the block would
//!   release released already; each input a ciphertext of the deep parameter set with enough
//!   levels. Nothing is decrypted in these checks. **Any meter refused: the whole request is
//!   refused** (the other meters `withheld`), so the utility's result is always compared with
//!   a re-execution over exactly the inputs it sent. The computation is then re-executed with
//!   the key authority's own keys over every meter's inputs, **isolated inside the circuit**
//!   (`seer_core::circuits::isolation`: each meter's inputs multiplied by its block's
//!   indicator before they are summed when the depth leaves a level; otherwise one meter per
//!   request), and each of its output ciphertexts must be byte-identical (BLAKE3) to the
//!   utility's, otherwise every input is refused. Only the key authority's own outputs are
//!   decrypted ([`crate::outputs`]); validity is judged on them
//!   ([`Computation::check_released`]), and only [`Released`] values leave: for `anomaly` the
//!   score rounded to 0.001, the flag, the rounded z-score, and explanations for flagged days
//!   only; for `forecast` the hour's forecast rounded to 0.001 kWh, clipped at zero. One
//!   audit entry per (meter, request) is committed, together with one `analytics_releases`
//!   row per released period, before the answer leaves; a period is released at most once
//!   per (kind, meter).
//!
//! Requests refused as a whole (no valid token, a role other than `utility`, an unknown kind
//! or model, a malformed stream) get one audit entry before the gRPC error.
//!
//! - **Group forecast** ([`GroupForecastReleaser`], `Analytics.ReleaseGroupForecast`; the
//!   rule, its plaintext twin and the once-only release are `group_forecast`'s
//!   documentation): each granted `daily` forecast is also stored (same transaction) under the
//!   group its meter signed in the receipt, and a group's day is released as the exact sum of
//!   at least [`GROUP_FORECAST_FLOOR`] homes' released hours, once per (group, day, model).
//!   With [`AnalyticsSettings::daily_release_home_forecasts`] off, the `Release` response
//!   carries no home's forecast hours: the utility gets group totals only.
//!
//! # Storage (schema in `migrations/key-authority/`)
//!
//! ```text
//! analytics_receipts(kind, meter_id, input_id, slot_offset, slot_count, first_period,
//!     input_digests (hex, comma-separated), lane, epsilon, readings_per_day, recorded_at_us)
//!     PRIMARY KEY (kind, meter_id, input_id)
//! analytics_releases(kind, meter_id, period, input_id, model_blake3, value_milli, flagged,
//!     audit_seq, released_at_us)  PRIMARY KEY (kind, meter_id, period)
//! daily_group_forecasts(meter_id, day (the forecast's), eval_group, model_blake3,
//!     hours_milli (24, comma-separated), audit_seq (the `daily` grant), recorded_at_us)
//!     PRIMARY KEY (meter_id, day, model_blake3)
//! daily_group_forecast_releases(eval_group, day, model_blake3, homes, hours_milli, audit_seq,
//!     released_at_us)  PRIMARY KEY (eval_group, day, model_blake3)
//! ```

mod engine;
mod group_forecast;
mod policy;
mod retry;
pub(crate) mod service;
mod store;

use std::path::PathBuf;

use seer_ckks::ParameterSet;
use serde::{Deserialize, Serialize};

pub use engine::{
    AnomalyComputation, Computation, DailyComputation, DailyReleased, DeepEngine,
    ForecastComputation, MeterBlock, MeterCheck, MeterPeriods, Released, SlotBlock,
    SlotComputation, SlotPeriod, check_daily_block,
};
pub use group_forecast::{
    GROUP_FORECAST_FLOOR, GroupForecastDecision, GroupForecastQuery, GroupForecastRefusal,
    GroupForecastReleaser, HoursMilli, check_request as check_group_forecast_request, group_total,
    plaintext_twin as group_forecast_twin, to_milli,
};
pub use policy::{
    AnalyticsDecisions, AnalyticsMeterInput, AnalyticsOutcome, AnalyticsReleaser, AnalyticsRequest,
    MAX_METERS_PER_REQUEST, ReleasedPeriod,
};
pub use service::{
    ANALYTICS_CALLERS, AnalyticsReceiptsService, AnalyticsService, analytics_statement,
};
pub use store::{AnalyticsReceipt, AnalyticsStore, InputLane, Recorded, receipt_period};
pub(crate) use store::{first_unbound_receipt, record_in};

/// Rotation steps of the default deep key set: the anomaly scorer's `−1, −2, −4`, the
/// z-score's up to a 32-day window and the forecaster's up to `−128`.
pub const DEFAULT_DEEP_GALOIS_STEPS: [i64; 8] = [-1, -2, -4, -8, -16, -32, -64, -128];

/// The deep analytics configuration (`[analytics]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnalyticsSettings {
    /// Holds the deep key set and serves the analytics release. Off by default.
    pub enabled: bool,
    /// The deep parameter set (N32768_L19).
    pub parameter_set: String,
    /// Its Galois steps: the union of what the registered computations need.
    pub galois_steps: Vec<i64>,
    /// Registered anomaly model files (JSON, `seer-anomaly`); each is registered under the
    /// BLAKE3 of its bytes.
    pub anomaly_models: Vec<PathBuf>,
    /// Registered forecast model files (JSON, `seer-forecast`); each is registered under the
    /// BLAKE3 of its bytes.
    pub forecast_models: Vec<PathBuf>,
    /// Registered daily model files (JSON, `seer-daily`), each under the BLAKE3 of its bytes;
    /// registered whether or not the deep set is enabled (the daily lane has its own `N4096`
    /// key set, always held). Relative paths are relative to the working directory: a
    /// missing file is skipped with a warning while this is the default, and fails the start
    /// otherwise.
    #[serde(default = "default_daily_models")]
    pub daily_models: Vec<PathBuf>,
    /// Whether a granted `daily` meter-day's forecast hours are put in the `Release` response
    /// (default `true`). Off: only the anomaly part leaves per home; the hours are stored for
    /// the group's aggregate (`Analytics.ReleaseGroupForecast`) alone, so the utility is given
    /// group totals without any home's forecast.
    #[serde(default = "default_true")]
    pub daily_release_home_forecasts: bool,
    /// Window of the rolling z-score released beside the forest score, days (power of two).
    pub zscore_window: usize,
}

/// The default of [`AnalyticsSettings::daily_release_home_forecasts`].
fn default_true() -> bool {
    true
}

/// The default of [`AnalyticsSettings::daily_models`]: the shipped model.
fn default_daily_models() -> Vec<PathBuf> {
    vec![PathBuf::from("daily/models/uci-daily.json")]
}

impl Default for AnalyticsSettings {
    fn default() -> Self {
        Self {
            enabled: false,
            parameter_set: ParameterSet::N32768_L19_SEC128.id(),
            galois_steps: DEFAULT_DEEP_GALOIS_STEPS.to_vec(),
            anomaly_models: vec![PathBuf::from("anomaly/models/uci-exact.json")],
            forecast_models: [
                "uci-lstm.json",
                "uci-lstm-day-ahead.json",
                "uci-lstm-eps1.json",
                "uci-lstm-eps5.json",
            ]
            .iter()
            .map(|f| PathBuf::from("forecast/models").join(f))
            .collect(),
            daily_models: default_daily_models(),
            daily_release_home_forecasts: true,
            zscore_window: seer_anomaly::release::DEFAULT_ZSCORE_WINDOW,
        }
    }
}

impl AnalyticsSettings {
    /// The key sets to open: `configured`, plus the daily lane's `N4096_L1` set with the
    /// Galois keys of every row of its block ([`seer_daily::circuit::all_galois_steps`],
    /// always: generating it takes well under a second), plus the deep key set when analytics
    /// is enabled (steps merged into a configured set of the same parameter set).
    #[must_use]
    pub fn key_set_specs(
        &self,
        configured: &[crate::keys::KeySetSpec],
    ) -> Vec<crate::keys::KeySetSpec> {
        let mut specs = configured.to_vec();
        merge_spec(
            &mut specs,
            &seer_daily::PARAMETERS.id(),
            &seer_daily::circuit::all_galois_steps(),
        );
        if self.enabled {
            merge_spec(&mut specs, &self.parameter_set, &self.galois_steps);
        }
        specs
    }
}

/// Adds `steps` to the spec of `parameter_set` in `specs`, or a spec with them.
fn merge_spec(specs: &mut Vec<crate::keys::KeySetSpec>, parameter_set: &str, steps: &[i64]) {
    match specs.iter_mut().find(|s| s.parameter_set == parameter_set) {
        Some(spec) => {
            for step in steps {
                if !spec.galois_steps.contains(step) {
                    spec.galois_steps.push(*step);
                }
            }
        }
        None => specs.push(crate::keys::KeySetSpec {
            parameter_set: parameter_set.to_owned(),
            galois_steps: steps.to_vec(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::KeySetSpec;

    #[test]
    fn the_deep_key_set_is_opt_in_and_the_daily_set_always_held() {
        let configured = vec![KeySetSpec {
            parameter_set: ParameterSet::N8192_L2_SEC128.id(),
            galois_steps: vec![1],
        }];
        let daily = KeySetSpec {
            parameter_set: ParameterSet::N4096_L1_SEC128.id(),
            galois_steps: seer_daily::circuit::all_galois_steps(),
        };
        let off = AnalyticsSettings::default();
        assert!(!off.enabled);
        assert_eq!(
            off.key_set_specs(&configured),
            vec![configured[0].clone(), daily.clone()]
        );
        let on = AnalyticsSettings {
            enabled: true,
            ..AnalyticsSettings::default()
        };
        let specs = on.key_set_specs(&configured);
        assert_eq!(specs.len(), 3);
        assert_eq!(specs[1], daily);
        assert_eq!(specs[2].parameter_set, ParameterSet::N32768_L19_SEC128.id());
        assert_eq!(specs[2].galois_steps, DEFAULT_DEEP_GALOIS_STEPS.to_vec());
        // Merged into existing sets of the same parameter sets.
        let mut with_deep = configured.clone();
        with_deep.push(KeySetSpec {
            parameter_set: ParameterSet::N32768_L19_SEC128.id(),
            galois_steps: vec![-1, 5],
        });
        with_deep.push(KeySetSpec {
            parameter_set: ParameterSet::N4096_L1_SEC128.id(),
            galois_steps: vec![7],
        });
        let merged = on.key_set_specs(&with_deep);
        assert_eq!(merged.len(), 3);
        assert_eq!(merged[1].galois_steps.len(), 9);
        assert_eq!(merged[2].galois_steps.len(), 16);
    }

    #[test]
    fn slot_periods_name_days_and_hours_in_sortable_form() {
        assert_eq!(SlotPeriod::of_kind("anomaly"), Some(SlotPeriod::Day));
        assert_eq!(SlotPeriod::of_kind("forecast"), Some(SlotPeriod::Hour));
        assert_eq!(SlotPeriod::of_kind("daily"), Some(SlotPeriod::Day));
        assert_eq!(SlotPeriod::of_kind("bill"), None);
        let day = SlotPeriod::Day.parse("2010-12-31").unwrap();
        assert_eq!(SlotPeriod::Day.label(day, 1), "2011-01-01");
        assert!(SlotPeriod::Day.parse("2010-12-31T00:00").is_err());
        let hour = SlotPeriod::Hour.parse("2010-12-31T22:00").unwrap();
        assert_eq!(SlotPeriod::Hour.format(hour), "2010-12-31T22:00");
        let labels: Vec<String> = (0..4).map(|p| SlotPeriod::Hour.label(hour, p)).collect();
        assert_eq!(
            labels,
            [
                "2010-12-31T22:00",
                "2010-12-31T23:00",
                "2011-01-01T00:00",
                "2011-01-01T01:00"
            ]
        );
        // The once-per-period check compares wire forms as text: they sort chronologically.
        assert!(labels.windows(2).all(|w| w[0] < w[1]));
        assert!(SlotPeriod::Hour.parse("2010-12-31T22:30").is_err());
        assert!(SlotPeriod::Hour.parse("2010-12-31").is_err());
    }

    #[test]
    fn blocks_overlap() {
        let a = SlotBlock {
            offset: 0,
            count: 10,
        };
        assert!(a.overlaps(&SlotBlock {
            offset: 9,
            count: 1
        }));
        assert!(!a.overlaps(&SlotBlock {
            offset: 10,
            count: 5
        }));
        assert!(
            SlotBlock {
                offset: 5,
                count: 10
            }
            .overlaps(&a)
        );
    }
}
