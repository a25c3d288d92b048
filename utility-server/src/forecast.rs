//! What the key authority releases for kind `forecast` (per hour: the forecast energy, rounded
//! to 0.001 kWh) and the `forecasts` table that keeps it for the dashboards. The steps of a
//! release are shared with `anomaly` ([`crate::analytics`]); [`evaluate`] is the forecaster's
//! evaluation (`seer_forecast::circuit`) over the meters' summed hourly series.
//!
//! Which hours leave depends on the lane (`seer_forecast::release`): on the exact lane only
//! the hours after each meter's series (its block reserves the model's horizon), on the
//! analytics lane the backtest over the series too.

use seer_anomaly::circuit::EncryptedValue;
use seer_ckks::Evaluator;
use seer_forecast::release::RegisteredForecast;
use seer_proto::v1::AnalyticsReleaseResponse;
use serde::Serialize;
use sqlx::AnyPool;

use crate::analytics::{JobError, evaluate_sum, results_pool};

/// Evaluates the forecaster on the sum of the meters' serialized hourly series (`meters[m][0]`,
/// blocks disjoint) and serializes its output. Blocking and CPU-heavy (about 17 levels of
/// work at n = 32768).
///
/// # Errors
/// [`JobError::Circuit`] when an input does not parse or the evaluation fails.
pub fn evaluate(
    computation: &RegisteredForecast,
    evaluator: &Evaluator,
    meters: &[Vec<Vec<u8>>],
) -> Result<Vec<Vec<u8>>, JobError> {
    let _span = tracing::info_span!("forecast.evaluate", meters = meters.len()).entered();
    evaluate_sum(
        evaluator,
        computation.inputs_per_meter(),
        meters,
        |ev, sums| {
            computation
                .evaluate(ev, sums)
                .map(|ct| vec![EncryptedValue::Encrypted(ct)])
        },
    )
}

/// A released forecast hour, as stored and printed.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HourForecast {
    /// The meter.
    pub meter_id: String,
    /// The hour, `YYYY-MM-DDTHH:00`.
    pub hour: String,
    /// The forecast energy, kWh (rounded to 0.001 by the key authority).
    pub kwh: f64,
}

/// The released hours of a response, meter by meter, in hour order.
#[must_use]
pub fn hour_forecasts(response: &AnalyticsReleaseResponse) -> Vec<HourForecast> {
    response
        .meters
        .iter()
        .filter(|m| m.granted)
        .flat_map(|m| {
            m.forecasts.iter().map(|f| HourForecast {
                meter_id: m.meter_id.clone(),
                hour: f.hour.clone(),
                kwh: f.kwh,
            })
        })
        .collect()
}

/// The forecast of the total load of the homes in one hour.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HourTotal {
    /// The hour, `YYYY-MM-DDTHH:00`.
    pub hour: String,
    /// Homes with a released forecast for the hour.
    pub homes: i64,
    /// The sum of their forecasts, kWh.
    pub kwh: f64,
}

/// The `forecasts` table of the utility's store.
#[derive(Debug, Clone)]
pub struct ForecastStore {
    pool: AnyPool,
}

impl ForecastStore {
    /// Opens the store at `url` (migrating it first).
    ///
    /// # Errors
    /// [`JobError::Store`], [`JobError::Record`].
    pub async fn connect(url: &str) -> Result<Self, JobError> {
        Ok(Self {
            pool: results_pool(url).await?,
        })
    }

    /// Stores the released hours of `response` for the model `model_blake3`, in one
    /// transaction; returns how many.
    ///
    /// # Errors
    /// [`JobError::Record`] (nothing stored), e.g. for an hour stored already for the model.
    pub async fn record(
        &self,
        model_blake3: &str,
        response: &AnalyticsReleaseResponse,
    ) -> Result<usize, JobError> {
        let mut tx = self.pool.begin().await?;
        let mut stored = 0;
        let now = chrono::Utc::now().timestamp_micros();
        for meter in response.meters.iter().filter(|m| m.granted) {
            for f in &meter.forecasts {
                sqlx::query(
                    "INSERT INTO forecasts (meter_id, hour, model_blake3, kwh, lane, epsilon, \
                     audit_seq, released_at_us) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                )
                .bind(meter.meter_id.clone())
                .bind(f.hour.clone())
                .bind(model_blake3.to_owned())
                .bind(f.kwh)
                .bind(meter.lane.clone())
                .bind(meter.epsilon)
                .bind(i64::try_from(meter.audit_sequence).unwrap_or(i64::MAX))
                .bind(now)
                .execute(&mut *tx)
                .await?;
                stored += 1;
            }
        }
        tx.commit().await?;
        Ok(stored)
    }

    /// The forecast of the sum over all homes by the model `model_blake3`: per hour, the sum
    /// of the homes' released forecasts (the slot-wise sum of their output ciphertexts,
    /// `seer_forecast::circuit::sum_homes`, computed after release so that each home's
    /// forecast is released once), in hour order.
    ///
    /// # Errors
    /// [`JobError::Record`].
    pub async fn totals(&self, model_blake3: &str) -> Result<Vec<HourTotal>, JobError> {
        let rows: Vec<(String, i64, f64)> = sqlx::query_as(
            "SELECT hour, COUNT(*), SUM(kwh) FROM forecasts WHERE model_blake3 = $1 \
             GROUP BY hour ORDER BY hour",
        )
        .bind(model_blake3.to_owned())
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(hour, homes, kwh)| HourTotal {
                hour,
                homes,
                kwh: seer_forecast::release::round_kwh(kwh),
            })
            .collect())
    }

    /// The stored forecasts of `meter_id` by the model `model_blake3`, in hour order.
    ///
    /// # Errors
    /// [`JobError::Record`].
    pub async fn forecasts(
        &self,
        meter_id: &str,
        model_blake3: &str,
    ) -> Result<Vec<HourForecast>, JobError> {
        let rows: Vec<(String, f64)> = sqlx::query_as(
            "SELECT hour, kwh FROM forecasts WHERE meter_id = $1 AND model_blake3 = $2 \
             ORDER BY hour",
        )
        .bind(meter_id.to_owned())
        .bind(model_blake3.to_owned())
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(hour, kwh)| HourForecast {
                meter_id: meter_id.to_owned(),
                hour,
                kwh,
            })
            .collect())
    }
}
