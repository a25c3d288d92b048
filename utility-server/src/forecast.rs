//! What the key authority releases for kind `forecast` (per hour: the forecast energy, rounded
//! to 0.001 kWh) and the `forecasts` table that keeps it for the dashboards. The steps of a
//! release are shared with `anomaly` ([`crate::analytics`]); [`evaluate`] is the forecaster's
//! evaluation (`seer_forecast::circuit`) over the meters' summed hourly series.
//!
//! Which hours leave depends on the lane (`seer_forecast::release`): on the exact lane only
//! the hours after each meter's series (its block reserves the model's horizon), on the
//! analytics lane the backtest over the series too.
//!
//! [`run_pending`] is the utility's forecasting job over what meters uploaded
//! ([`crate::analytics_ingest`]): the pending inputs of one model packed into releases of at
//! most [`HOMES_PER_RELEASE`] meters with disjoint blocks, each evaluated once and released;
//! the released hours stored, every input marked released or refused with the key
//! authority's reason.

use std::path::Path;
use std::time::Instant;

use seer_anomaly::circuit::EncryptedValue;
use seer_ckks::{CkksContext, Evaluator};
use seer_forecast::ForecastModel;
use seer_forecast::release::{HOMES_PER_RELEASE, RegisteredForecast};
use seer_proto::v1::AnalyticsReleaseResponse;
use serde::Serialize;
use sqlx::AnyPool;

use crate::analytics::{
    BlockInputs, JobError, MeterInputs, connect, evaluate_sum, fetch_deep_keys, model_digest,
    request_release, results_pool,
};
use crate::store::{InputHeader, InputStatus, Store, StoredInput, decide_input};

/// Evaluates the forecaster on the meters' serialized hourly series (`meters[m]`: block and
/// series, blocks disjoint, each isolated to its block inside the circuit) and serializes its
/// output. Blocking and CPU-heavy (about 18 levels of work at n = 32768).
///
/// # Errors
/// [`JobError::Circuit`] when an input does not parse or the evaluation fails.
pub fn evaluate(
    computation: &RegisteredForecast,
    evaluator: &Evaluator,
    meters: &[BlockInputs],
) -> Result<Vec<Vec<u8>>, JobError> {
    let _span = tracing::info_span!("forecast.evaluate", meters = meters.len()).entered();
    evaluate_sum(
        evaluator,
        computation.inputs_per_meter(),
        computation.depth(),
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
        self.record_deciding(model_blake3, response, &[]).await
    }

    /// [`record`](Self::record), and in the same transaction the decisions on the uploaded
    /// inputs the response answers: a crash leaves either both or neither.
    ///
    /// # Errors
    /// As [`record`](Self::record); [`JobError::Store`] when a decision cannot be written.
    pub async fn record_deciding(
        &self,
        model_blake3: &str,
        response: &AnalyticsReleaseResponse,
        decisions: &[(InputHeader, InputStatus)],
    ) -> Result<usize, JobError> {
        let mut tx = self.pool.begin().await?;
        for (header, status) in decisions {
            decide_input(&mut tx, header, status).await?;
        }
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

/// Where one uploaded input stands, as listed.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct InputListing {
    /// The meter.
    pub meter_id: String,
    /// The input id.
    pub input_id: String,
    /// The block's first hour.
    pub first_period: String,
    /// The evaluation group.
    pub group: u32,
    /// First slot of the block.
    pub slot_offset: u32,
    /// Slots of the block.
    pub slot_count: u32,
    /// `pending`, `released` or `refused`.
    pub status: &'static str,
    /// The key authority's reason, for a refused input.
    pub reason: Option<String>,
}

/// What `utility-server forecasts` prints for a model.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ForecastListing {
    /// BLAKE3 of the model file.
    pub model_blake3: String,
    /// The stored forecasts, meter by meter, in hour order.
    pub forecasts: Vec<HourForecast>,
    /// The forecast of the total over homes, per hour.
    pub totals: Vec<HourTotal>,
    /// Every input uploaded for the model, with its status.
    pub inputs: Vec<InputListing>,
}

/// The stored forecasts, totals and inputs of the model file `model_path` (the store at
/// `database_url`, which `store` has open).
///
/// # Errors
/// [`JobError::Circuit`] for an unreadable model file; store failures.
pub async fn listing(
    store: &Store,
    database_url: &str,
    model_path: &Path,
) -> Result<ForecastListing, JobError> {
    let bytes = tokio::fs::read(model_path).await.map_err(|e| {
        JobError::Circuit(format!("reading the model {}: {e}", model_path.display()))
    })?;
    let digest = model_digest(&bytes);
    let stored = store.analytics_inputs("forecast", &digest, None).await?;
    let results = ForecastStore::connect(database_url).await?;
    let mut meters: Vec<&str> = stored.iter().map(|i| i.header.meter_id.as_str()).collect();
    meters.sort_unstable();
    meters.dedup();
    let mut forecasts = Vec::new();
    for meter in meters {
        forecasts.extend(results.forecasts(meter, &digest).await?);
    }
    let inputs = stored
        .into_iter()
        .map(|i| {
            let (status, reason) = match i.status {
                InputStatus::Pending => ("pending", None),
                InputStatus::Released { .. } => ("released", None),
                InputStatus::Refused { reason, .. } => ("refused", Some(reason)),
            };
            InputListing {
                meter_id: i.header.meter_id,
                input_id: i.header.input_id,
                first_period: i.header.first_period,
                group: i.header.group,
                slot_offset: i.header.slot_offset,
                slot_count: i.header.slot_count,
                status,
                reason,
            }
        })
        .collect();
    Ok(ForecastListing {
        totals: results.totals(&digest).await?,
        model_blake3: digest,
        forecasts,
        inputs,
    })
}

/// An input the key authority refused in a run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RefusedInput {
    /// The meter.
    pub meter_id: String,
    /// The input id.
    pub input_id: String,
    /// The key authority's reason.
    pub reason: String,
}

/// What the key authority's answer for one meter (granted or refused; a withheld meter stays
/// pending and is not decided) records on its input, and, when refused, the refusal a run
/// reports. Shared by the `forecast` and `daily` jobs.
#[must_use]
pub fn answered_input(
    header: &InputHeader,
    answer: &seer_proto::v1::AnalyticsMeterRelease,
) -> (InputStatus, Option<RefusedInput>) {
    if answer.granted {
        (
            InputStatus::Released {
                audit_seq: answer.audit_sequence,
            },
            None,
        )
    } else {
        (
            InputStatus::Refused {
                reason: answer.refusal.clone(),
                audit_seq: Some(answer.audit_sequence).filter(|s| *s > 0),
            },
            Some(RefusedInput {
                meter_id: header.meter_id.clone(),
                input_id: header.input_id.clone(),
                reason: answer.refusal.clone(),
            }),
        )
    }
}

/// What one [`run_pending`] did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ForecastRunReport {
    /// BLAKE3 of the model file.
    pub model_blake3: String,
    /// Pending inputs found.
    pub pending: usize,
    /// Release requests made (one evaluation each).
    pub requests: usize,
    /// Inputs released.
    pub released: usize,
    /// Inputs refused, with the reasons.
    pub refused: Vec<RefusedInput>,
    /// Forecast hours stored.
    pub hours_stored: usize,
    /// Bytes of deep evaluation keys fetched.
    pub key_bytes: u64,
    /// Seconds spent evaluating, all requests together.
    pub evaluation_seconds: f64,
    /// Seconds spent waiting for the key authority's releases.
    pub release_seconds: f64,
    /// Whether every request's result was byte-identical to the key authority's
    /// re-execution.
    pub all_verified: bool,
}

/// Packs `inputs` (in the store's order) into release requests: first fit, at most
/// [`HOMES_PER_RELEASE`] per request, one input per meter, blocks disjoint.
#[must_use]
pub fn pack(inputs: Vec<StoredInput>) -> Vec<Vec<StoredInput>> {
    let mut requests: Vec<Vec<StoredInput>> = Vec::new();
    for input in inputs {
        let block = input.header.block();
        let fits = |request: &Vec<StoredInput>| {
            request.len() < HOMES_PER_RELEASE
                && request.iter().all(|other| {
                    let b = other.header.block();
                    other.header.meter_id != input.header.meter_id
                        && (b.end <= block.start || block.end <= b.start)
                })
        };
        match requests.iter_mut().find(|r| fits(r)) {
            Some(request) => request.push(input),
            None => requests.push(vec![input]),
        }
    }
    requests
}

/// The utility's forecasting job: evaluates every pending `forecast` input uploaded for the
/// model file `model_path`, asks the key authority at `key_authority` (with the utility's
/// `token`) for each release, stores the released hours (in the store at `database_url`,
/// which `store` has open) and marks each input released or refused.
///
/// # Errors
/// [`JobError`] when the model, the store, the keys or a whole request fails; inputs of
/// requests not answered stay pending, so that a rerun takes them up.
#[tracing::instrument(skip_all, fields(model = %model_path.display()))]
pub async fn run_pending(
    store: &Store,
    database_url: &str,
    key_authority: &str,
    token: &str,
    model_path: &Path,
) -> Result<ForecastRunReport, JobError> {
    let model_err =
        |e: String| JobError::Circuit(format!("the model {}: {e}", model_path.display()));
    let bytes = tokio::fs::read(model_path)
        .await
        .map_err(|e| model_err(e.to_string()))?;
    let digest = model_digest(&bytes);
    let text = std::str::from_utf8(&bytes).map_err(|e| model_err(e.to_string()))?;
    let model = ForecastModel::from_json(text).map_err(|e| model_err(e.to_string()))?;
    let computation = RegisteredForecast::try_new(model).map_err(|e| model_err(e.to_string()))?;
    let pending = store
        .analytics_inputs("forecast", &digest, Some("pending"))
        .await?;
    let mut report = ForecastRunReport {
        model_blake3: digest.clone(),
        pending: pending.len(),
        all_verified: true,
        ..ForecastRunReport::default()
    };
    if pending.is_empty() {
        tracing::info!("no pending forecast inputs");
        return Ok(report);
    }
    let requests = pack(pending);
    tracing::info!(
        inputs = report.pending,
        requests = requests.len(),
        "forecasting pending inputs"
    );
    let ctx =
        tokio::task::spawn_blocking(|| CkksContext::new(seer_forecast::circuit::PARAMETER_SET))
            .await
            .map_err(|e| JobError::Circuit(e.to_string()))?
            .map_err(|e| JobError::Circuit(e.to_string()))?;
    let channel = connect(key_authority).await?;
    let (evaluator, key_bytes) =
        fetch_deep_keys(channel.clone(), &ctx, &computation.galois_steps()).await?;
    report.key_bytes = key_bytes;
    let results = ForecastStore::connect(database_url).await?;
    let mut evaluator = Some(evaluator);
    let planned = requests.len();
    let mut queue: std::collections::VecDeque<Vec<StoredInput>> = requests.into();
    let mut r = 0;
    while let Some(request) = queue.pop_front() {
        r += 1;
        let mut meters = Vec::with_capacity(request.len());
        for input in &request {
            meters.push(MeterInputs {
                meter_id: input.header.meter_id.clone(),
                input_id: input.header.input_id.clone(),
                inputs: store.analytics_input_ciphertexts(&input.header).await?,
            });
        }
        let inputs: Vec<BlockInputs> = request
            .iter()
            .zip(&meters)
            .map(|(input, m)| {
                let block = input.header.block();
                (
                    usize::try_from(block.start).unwrap_or(usize::MAX)
                        ..usize::try_from(block.end).unwrap_or(usize::MAX),
                    m.inputs.clone(),
                )
            })
            .collect();
        let (comp, ev) = (
            computation.clone(),
            evaluator
                .take()
                .ok_or_else(|| JobError::Circuit("no evaluator".into()))?,
        );
        let started = Instant::now();
        let span = tracing::Span::current();
        let (ev, result) = tokio::task::spawn_blocking(move || {
            let _entered = span.enter();
            let result = evaluate(&comp, &ev, &inputs);
            (ev, result)
        })
        .await
        .map_err(|e| JobError::Circuit(e.to_string()))?;
        evaluator = Some(ev);
        let result = result?;
        let evaluated = started.elapsed().as_secs_f64();
        report.evaluation_seconds += evaluated;
        let started = Instant::now();
        let response =
            request_release(channel.clone(), token, "forecast", &digest, meters, result).await?;
        report.release_seconds += started.elapsed().as_secs_f64();
        report.requests += 1;
        let mut decisions = Vec::with_capacity(request.len());
        let mut withheld = Vec::new();
        for input in &request {
            let Some(answer) = response
                .meters
                .iter()
                .find(|m| m.meter_id == input.header.meter_id)
            else {
                continue;
            };
            if answer.withheld {
                // Refused only because another input of the request was: asked for again
                // below, without the refused ones; it stays pending meanwhile.
                withheld.push(input.clone());
                continue;
            }
            let (status, refusal) = answered_input(&input.header, answer);
            match refusal {
                None => report.released += 1,
                Some(refusal) => report.refused.push(refusal),
            }
            decisions.push((input.header.clone(), status));
        }
        report.hours_stored += results
            .record_deciding(&digest, &response, &decisions)
            .await?;
        if withheld.is_empty() {
            report.all_verified &= response.result_verified;
        } else if decisions.is_empty() {
            return Err(JobError::Release {
                code: tonic::Code::Internal,
                message: "the key authority withheld inputs without refusing any".into(),
            });
        } else {
            tracing::info!(
                withheld = withheld.len(),
                "inputs withheld for refused ones: asking again without them"
            );
            queue.push_back(withheld);
        }
        tracing::info!(
            request = r,
            planned,
            meters = request.len(),
            evaluation_s = evaluated,
            verified = response.result_verified,
            "forecast release answered"
        );
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(meter: &str, day: &str, group: u32, offset: u32) -> StoredInput {
        StoredInput {
            header: InputHeader {
                kind: "forecast".into(),
                meter_id: meter.into(),
                input_id: day.into(),
                model_blake3: "ab".repeat(32),
                slot_offset: offset,
                slot_count: 216,
                first_period: format!("{day}T00:00"),
                group,
            },
            inputs: 1,
            status: InputStatus::Pending,
        }
    }

    fn ids(requests: &[Vec<StoredInput>]) -> Vec<Vec<String>> {
        requests
            .iter()
            .map(|r| {
                r.iter()
                    .map(|i| format!("{}/{}", i.header.meter_id, i.header.input_id))
                    .collect()
            })
            .collect()
    }

    #[test]
    fn requests_hold_disjoint_blocks_one_per_meter_at_most_eight() {
        // Two days of a group of two, a meter writing across two blocks, and a second group
        // (at the offset of group 0's first block): first fit keeps every request valid for
        // the key authority, blocks of different groups never meet.
        let inputs = vec![
            input("a", "d1", 0, 0),
            input("b", "d1", 0, 216),
            input("x", "d1", 0, 100),
            input("a", "d2", 0, 0),
            input("b", "d2", 0, 216),
            input("c", "d1", 1, 0),
        ];
        let requests = pack(inputs);
        assert_eq!(
            ids(&requests),
            vec![
                vec!["a/d1", "b/d1"],
                vec!["x/d1"],
                vec!["a/d2", "b/d2"],
                vec!["c/d1"],
            ]
        );
        for request in &requests {
            for (i, a) in request.iter().enumerate() {
                for b in &request[i + 1..] {
                    let (x, y) = (a.header.block(), b.header.block());
                    assert!(x.end <= y.start || y.end <= x.start);
                    assert_ne!(a.header.meter_id, b.header.meter_id);
                }
            }
        }
        // Twenty disjoint homes: eight, eight, four.
        let many: Vec<StoredInput> = (0..20)
            .map(|i| input(&format!("m{i:02}"), "d1", 0, i * 216))
            .collect();
        let sizes: Vec<usize> = pack(many).iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![8, 8, 4]);
    }
}
