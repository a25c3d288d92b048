//! What the key authority releases for kind `anomaly` (per day: score, flag, z-score, and a
//! flagged day's explanation) and the `anomaly_scores` table that keeps it. The steps of a
//! release are shared with `forecast` ([`crate::analytics`]); [`score`] is the anomaly
//! computation's evaluation.
//!
//! Today `seer anomaly` drives these steps for a CSV. A scoring job over meters' streamed
//! uploads would use the same steps: meters encrypt and receipt their hour planes per window
//! (`meter_client::anomaly`), the utility stores them like batches, and a job groups homes
//! with disjoint blocks per request.

use seer_anomaly::release::RegisteredAnomaly;
use seer_ckks::Evaluator;
use seer_proto::v1::AnalyticsReleaseResponse;
use serde::Serialize;
use sqlx::AnyPool;

use crate::analytics::{BlockInputs, JobError, evaluate_sum, results_pool};

/// Evaluates the anomaly computation on the meters' serialized hour planes (`meters[m]`: block
/// and planes, each meter isolated to its block inside the circuit) and serializes its
/// encrypted outputs, in order. Blocking and CPU-heavy.
///
/// # Errors
/// [`JobError::Circuit`] when an input does not parse or the evaluation fails.
pub fn score(
    computation: &RegisteredAnomaly,
    evaluator: &Evaluator,
    meters: &[BlockInputs],
) -> Result<Vec<Vec<u8>>, JobError> {
    let _span = tracing::info_span!("anomaly.score", meters = meters.len()).entered();
    evaluate_sum(
        evaluator,
        computation.inputs_per_meter(),
        computation.depth(),
        meters,
        |ev, sums| computation.evaluate(ev, sums),
    )
}

/// A released day, as stored and printed.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DayScore {
    /// The meter.
    pub meter_id: String,
    /// The day, YYYY-MM-DD.
    pub day: String,
    /// The score (rounded to 0.001 by the key authority).
    pub score: f64,
    /// Whether it is flagged.
    pub flag: bool,
    /// The rolling z-score of the daily total, when defined.
    pub zscore: Option<f64>,
    /// Flagged days only: why.
    pub explanation: Option<DayExplanation>,
}

/// The explanation of a flagged day.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct DayExplanation {
    /// The leading features and their excess isolation share.
    pub features: Vec<(String, f64)>,
    /// The hours they use.
    pub hours: Vec<u32>,
}

/// The released days of a response.
#[must_use]
pub fn day_scores(response: &AnalyticsReleaseResponse) -> Vec<DayScore> {
    response
        .meters
        .iter()
        .filter(|m| m.granted)
        .flat_map(|m| {
            m.days.iter().map(|d| DayScore {
                meter_id: m.meter_id.clone(),
                day: d.day.clone(),
                score: d.score,
                flag: d.flagged,
                zscore: d.has_zscore.then_some(d.zscore),
                explanation: d.flagged.then(|| DayExplanation {
                    features: d
                        .explanation
                        .iter()
                        .map(|f| (f.name.clone(), f.excess))
                        .collect(),
                    hours: d.explanation_hours.clone(),
                }),
            })
        })
        .collect()
}

/// The `anomaly_scores` table of the utility's store.
#[derive(Debug, Clone)]
pub struct AnomalyScores {
    pool: AnyPool,
}

impl AnomalyScores {
    /// Opens the store at `url` (migrating it through [`Store::connect`](crate::Store::connect) first).
    ///
    /// # Errors
    /// [`JobError::Store`], [`JobError::Record`].
    pub async fn connect(url: &str) -> Result<Self, JobError> {
        Ok(Self {
            pool: results_pool(url).await?,
        })
    }

    /// Stores released days of `model_blake3` (audit entry `audit_seq`, lane `lane`).
    ///
    /// # Errors
    /// [`JobError::Store`], [`JobError::Record`].
    pub async fn record(
        &self,
        model_blake3: &str,
        response: &AnalyticsReleaseResponse,
    ) -> Result<usize, JobError> {
        let mut tx = self.pool.begin().await?;
        let mut stored = 0;
        for meter in response.meters.iter().filter(|m| m.granted) {
            let scores = day_scores(&AnalyticsReleaseResponse {
                meters: vec![meter.clone()],
                result_verified: response.result_verified,
                flag_threshold: response.flag_threshold,
            });
            for d in scores {
                let explanation = d
                    .explanation
                    .as_ref()
                    .map(serde_json::to_string)
                    .transpose()
                    .map_err(|e| JobError::Record(sqlx::Error::Encode(Box::new(e))))?;
                sqlx::query(
                    "INSERT INTO anomaly_scores (meter_id, day, model_blake3, score, flagged, \
                     zscore, explanation, lane, audit_seq, released_at_us) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                )
                .bind(d.meter_id)
                .bind(d.day)
                .bind(model_blake3.to_owned())
                .bind(d.score)
                .bind(i64::from(d.flag))
                .bind(d.zscore)
                .bind(explanation)
                .bind(meter.lane.clone())
                .bind(i64::try_from(meter.audit_sequence).unwrap_or(i64::MAX))
                .bind(chrono::Utc::now().timestamp_micros())
                .execute(&mut *tx)
                .await?;
                stored += 1;
            }
        }
        tx.commit().await?;
        Ok(stored)
    }

    /// Number of stored days of `meter_id` and how many are flagged.
    ///
    /// # Errors
    /// [`JobError::Store`], [`JobError::Record`].
    pub async fn count(&self, meter_id: &str) -> Result<(i64, i64), JobError> {
        let row: (i64, Option<i64>) =
            sqlx::query_as("SELECT COUNT(*), SUM(flagged) FROM anomaly_scores WHERE meter_id = $1")
                .bind(meter_id.to_owned())
                .fetch_one(&self.pool)
                .await?;
        Ok((row.0, row.1.unwrap_or(0)))
    }
}
