//! The utility's side of encrypted anomaly detection (kind `anomaly`; the policy is the header
//! of `analytics.proto`):
//!
//! 1. [`fetch_deep_keys`]: the key authority's deep key set (relinearization and Galois keys
//!    of N32768_L19, streamed in chunks by `seer.v1.Keys`), checked against the rotation steps
//!    the registered computation needs;
//! 2. [`score`]: the registered computation ([`RegisteredAnomaly::evaluate`]) over the sum of
//!    the meters' hour planes, off the async runtime; its encrypted outputs serialized;
//! 3. [`request_release`]: the inputs and the result streamed to `Analytics.Release` with the
//!    utility's token; the key authority re-executes, compares and releases per day;
//! 4. [`AnomalyScores`]: the released days stored in `anomaly_scores`.
//!
//! The utility never decrypts anything: it stores what the key authority released.
//!
//! Today `seer anomaly` drives these steps for a CSV. A scoring job over meters' streamed
//! uploads would use the same four functions: meters encrypt and receipt their hour planes
//! per window (`meter_client::anomaly`), the utility stores them like batches, and a job
//! groups homes with disjoint blocks per request.

use std::sync::Arc;
use std::time::Duration;

use seer_anomaly::circuit::EncryptedValue;
use seer_anomaly::release::RegisteredAnomaly;
use seer_ckks::{Ciphertext, CkksContext, Evaluator, GaloisKeys, RelinKeys};
use seer_proto::WithMessageLimits as _;
use seer_proto::v1::analytics_client::AnalyticsClient;
use seer_proto::v1::analytics_release_chunk::Part;
use seer_proto::v1::keys_client::KeysClient;
use seer_proto::v1::{
    AnalyticsMeterInput, AnalyticsReleaseChunk, AnalyticsReleaseHeader, AnalyticsReleaseResponse,
    CiphertextChunk, GetKeyRequest, KeyKind, ListKeySetsRequest,
};
use serde::Serialize;
use sqlx::AnyPool;
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};

use crate::billing::MAX_EVALUATION_KEY_BYTES;
use crate::store::Store;

/// Size of one streamed ciphertext chunk.
pub const CHUNK_BYTES: usize = 1 << 20;

/// Errors of the anomaly job.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AnomalyJobError {
    /// The key authority could not be reached.
    #[error("connecting to the key authority at {url}: {source}")]
    Connect {
        /// Its URL.
        url: String,
        /// Why.
        source: tonic::transport::Error,
    },
    /// The deep keys are missing, inconsistent or lack a rotation step.
    #[error("fetching the deep evaluation keys: {0}")]
    Keys(String),
    /// The encrypted computation failed.
    #[error("evaluating the anomaly computation: {0}")]
    Circuit(String),
    /// The key authority refused the request as a whole.
    #[error("the key authority answered {code:?}: {message}")]
    Release {
        /// The status code.
        code: tonic::Code,
        /// Its message.
        message: String,
    },
    /// The token is not a valid header value.
    #[error("the utility token is not a valid authorization header")]
    Token,
    /// The store failed.
    #[error("anomaly store: {0}")]
    Store(String),
}

/// Connects to the key authority.
///
/// # Errors
/// [`AnomalyJobError::Connect`].
pub async fn connect(url: &str) -> Result<Channel, AnomalyJobError> {
    let err = |source| AnomalyJobError::Connect {
        url: url.to_owned(),
        source,
    };
    Endpoint::from_shared(url.to_owned())
        .map_err(err)?
        .connect_timeout(Duration::from_secs(10))
        .connect()
        .await
        .map_err(err)
}

async fn fetch_object(
    client: &mut KeysClient<Channel>,
    id: &str,
    kind: KeyKind,
    expected: u64,
) -> Result<Vec<u8>, AnomalyJobError> {
    if expected == 0 || expected > MAX_EVALUATION_KEY_BYTES {
        return Err(AnomalyJobError::Keys(format!(
            "the key set {id} announces {expected} bytes of {kind:?} keys"
        )));
    }
    let mut stream = client
        .get_key(GetKeyRequest {
            parameter_set_id: id.to_owned(),
            kind: kind as i32,
        })
        .await
        .map_err(|s| AnomalyJobError::Keys(s.message().to_owned()))?
        .into_inner();
    let mut bytes = Vec::with_capacity(usize::try_from(expected).unwrap_or(0));
    while let Some(chunk) = stream
        .message()
        .await
        .map_err(|s| AnomalyJobError::Keys(s.message().to_owned()))?
    {
        if chunk.total_bytes != expected
            || chunk.offset != bytes.len() as u64
            || bytes.len() as u64 + chunk.data.len() as u64 > expected
        {
            return Err(AnomalyJobError::Keys(format!(
                "inconsistent chunk of the {kind:?} keys of {id}"
            )));
        }
        bytes.extend_from_slice(&chunk.data);
    }
    if bytes.len() as u64 != expected {
        return Err(AnomalyJobError::Keys(format!(
            "the {kind:?} keys of {id} ended after {} of {expected} bytes",
            bytes.len()
        )));
    }
    Ok(bytes)
}

/// Fetches the deep key set of `ctx`'s parameter set and builds the evaluator, checking that
/// the Galois keys support `steps`. Returns the evaluator and the bytes fetched.
///
/// # Errors
/// [`AnomalyJobError::Keys`].
#[tracing::instrument(skip_all, fields(parameter_set = ctx.parameter_set_id()))]
pub async fn fetch_deep_keys(
    channel: Channel,
    ctx: &CkksContext,
    steps: &[i64],
) -> Result<(Evaluator, u64), AnomalyJobError> {
    let id = ctx.parameter_set_id().to_owned();
    let mut client = KeysClient::new(channel).with_seer_limits();
    let info = client
        .list_key_sets(ListKeySetsRequest {})
        .await
        .map_err(|s| AnomalyJobError::Keys(s.message().to_owned()))?
        .into_inner()
        .key_sets
        .into_iter()
        .find(|s| s.parameter_set_id == id)
        .ok_or_else(|| {
            AnomalyJobError::Keys(format!(
                "the key authority holds no key set for {id} (is analytics enabled?)"
            ))
        })?;
    let relin = fetch_object(&mut client, &id, KeyKind::Relin, info.relin_keys_bytes).await?;
    let galois = fetch_object(&mut client, &id, KeyKind::Galois, info.galois_keys_bytes).await?;
    let total = (relin.len() + galois.len()) as u64;
    let ctx = ctx.clone();
    let steps = steps.to_vec();
    let span = tracing::Span::current();
    let evaluator = tokio::task::spawn_blocking(move || {
        let _entered = span.enter();
        let relin = RelinKeys::from_bytes(&ctx, &relin)
            .map_err(|e| AnomalyJobError::Keys(format!("relinearization keys: {e}")))?;
        let galois = GaloisKeys::from_bytes(&ctx, &galois)
            .map_err(|e| AnomalyJobError::Keys(format!("Galois keys: {e}")))?;
        if let Some(step) = steps.iter().find(|s| !galois.supports(**s, ctx.slots())) {
            return Err(AnomalyJobError::Keys(format!(
                "the deep Galois keys lack the rotation step {step}"
            )));
        }
        Ok(Evaluator::new(&ctx, Some(relin), Some(galois)))
    })
    .await
    .map_err(|e| AnomalyJobError::Keys(format!("parsing task: {e}")))??;
    tracing::info!(bytes = total, "deep evaluation keys fetched");
    Ok((evaluator, total))
}

/// Evaluates `computation` on the sum of the meters' serialized hour planes
/// (`meters[m][h]`) and serializes its encrypted outputs, in order. Blocking and CPU-heavy:
/// call it off the async runtime.
///
/// # Errors
/// [`AnomalyJobError::Circuit`] when an input does not parse or the evaluation fails.
pub fn score(
    computation: &RegisteredAnomaly,
    evaluator: &Evaluator,
    meters: &[Vec<Vec<u8>>],
) -> Result<Vec<Vec<u8>>, AnomalyJobError> {
    let _span = tracing::info_span!("anomaly.score", meters = meters.len()).entered();
    let ctx = evaluator.context();
    let circuit = |e: String| AnomalyJobError::Circuit(e);
    let n = computation.inputs_per_meter();
    let mut sums = Vec::with_capacity(n);
    for h in 0..n {
        let parts: Vec<Ciphertext> = meters
            .iter()
            .map(|m| {
                m.get(h)
                    .ok_or_else(|| circuit(format!("a meter lacks input {h}")))
                    .and_then(|b| {
                        Ciphertext::from_bytes(ctx, b).map_err(|e| circuit(e.to_string()))
                    })
            })
            .collect::<Result<_, _>>()?;
        sums.push(if parts.len() == 1 {
            parts
                .into_iter()
                .next()
                .ok_or_else(|| circuit("no meter".into()))?
        } else {
            evaluator
                .add_many(&parts)
                .map_err(|e| circuit(e.to_string()))?
        });
    }
    let outputs = computation
        .evaluate(evaluator, &sums)
        .map_err(|e| circuit(e.to_string()))?;
    outputs
        .into_iter()
        .filter_map(|o| match o {
            EncryptedValue::Encrypted(ct) => {
                Some(ct.to_bytes(ctx).map_err(|e| circuit(e.to_string())))
            }
            EncryptedValue::Public(_) => None,
        })
        .collect()
}

/// One meter's part of a release request.
#[derive(Clone)]
pub struct MeterPlanes {
    /// The meter.
    pub meter_id: String,
    /// The receipt's input id.
    pub input_id: String,
    /// The serialized hour planes.
    pub planes: Vec<Vec<u8>>,
}

impl std::fmt::Debug for MeterPlanes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeterPlanes")
            .field("meter_id", &self.meter_id)
            .field("input_id", &self.input_id)
            .field("planes", &self.planes.len())
            .finish()
    }
}

fn chunks(
    bytes: Arc<Vec<u8>>,
    meter_index: u32,
    index: u32,
    input: bool,
) -> impl Iterator<Item = AnalyticsReleaseChunk> {
    let total = bytes.len();
    (0..total.div_ceil(CHUNK_BYTES).max(1)).map(move |i| {
        let start = i * CHUNK_BYTES;
        let end = (start + CHUNK_BYTES).min(total);
        let chunk = CiphertextChunk {
            meter_index,
            index,
            total_bytes: total as u64,
            offset: start as u64,
            data: bytes[start..end].to_vec(),
        };
        AnalyticsReleaseChunk {
            part: Some(if input {
                Part::Input(chunk)
            } else {
                Part::Result(chunk)
            }),
        }
    })
}

/// Streams a release request for `kind` (model `model_blake3`) to the key authority behind
/// `channel` with the utility's `token`.
///
/// # Errors
/// [`AnomalyJobError::Token`] for a malformed token, [`AnomalyJobError::Release`] when the
/// key authority refuses the request as a whole.
pub async fn request_release(
    channel: Channel,
    token: &str,
    kind: &str,
    model_blake3: &str,
    meters: Vec<MeterPlanes>,
    result: Vec<Vec<u8>>,
) -> Result<AnalyticsReleaseResponse, AnomalyJobError> {
    let bearer: MetadataValue<_> = format!("Bearer {token}")
        .parse()
        .map_err(|_| AnomalyJobError::Token)?;
    let mut client =
        AnalyticsClient::with_interceptor(channel, move |mut request: tonic::Request<()>| {
            request
                .metadata_mut()
                .insert("authorization", bearer.clone());
            Ok(request)
        })
        .with_seer_limits();
    let header = AnalyticsReleaseChunk {
        part: Some(Part::Header(AnalyticsReleaseHeader {
            kind: kind.to_owned(),
            model_blake3: model_blake3.to_owned(),
            meters: meters
                .iter()
                .map(|m| AnalyticsMeterInput {
                    meter_id: m.meter_id.clone(),
                    input_id: m.input_id.clone(),
                })
                .collect(),
            result_count: result.len() as u32,
        })),
    };
    let inputs: Vec<(u32, u32, Arc<Vec<u8>>)> = meters
        .into_iter()
        .enumerate()
        .flat_map(|(m, planes)| {
            planes
                .planes
                .into_iter()
                .enumerate()
                .map(move |(k, bytes)| (m as u32, k as u32, Arc::new(bytes)))
        })
        .collect();
    let results: Vec<(u32, Arc<Vec<u8>>)> = result
        .into_iter()
        .enumerate()
        .map(|(k, b)| (k as u32, Arc::new(b)))
        .collect();
    let stream = std::iter::once(header)
        .chain(
            inputs
                .into_iter()
                .flat_map(|(m, k, bytes)| chunks(bytes, m, k, true)),
        )
        .chain(
            results
                .into_iter()
                .flat_map(|(k, bytes)| chunks(bytes, 0, k, false)),
        );
    client
        .release(tokio_stream::iter(stream))
        .await
        .map(tonic::Response::into_inner)
        .map_err(|s| AnomalyJobError::Release {
            code: s.code(),
            message: s.message().to_owned(),
        })
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
    /// Opens the store at `url` (migrating it through [`Store::connect`] first).
    ///
    /// # Errors
    /// [`AnomalyJobError::Store`].
    pub async fn connect(url: &str) -> Result<Self, AnomalyJobError> {
        let store = Store::connect(url)
            .await
            .map_err(|e| AnomalyJobError::Store(e.to_string()))?;
        store.close().await;
        sqlx::any::install_default_drivers();
        let pool = sqlx::any::AnyPoolOptions::new()
            .max_connections(1)
            .connect(url)
            .await
            .map_err(|e| AnomalyJobError::Store(e.to_string()))?;
        Ok(Self { pool })
    }

    /// Stores released days of `model_blake3` (audit entry `audit_seq`, lane `lane`).
    ///
    /// # Errors
    /// [`AnomalyJobError::Store`].
    pub async fn record(
        &self,
        model_blake3: &str,
        response: &AnalyticsReleaseResponse,
    ) -> Result<usize, AnomalyJobError> {
        let db = |e: sqlx::Error| AnomalyJobError::Store(e.to_string());
        let mut tx = self.pool.begin().await.map_err(db)?;
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
                    .map_err(|e| AnomalyJobError::Store(e.to_string()))?;
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
                .await
                .map_err(db)?;
                stored += 1;
            }
        }
        tx.commit().await.map_err(db)?;
        Ok(stored)
    }

    /// Number of stored days of `meter_id` and how many are flagged.
    ///
    /// # Errors
    /// [`AnomalyJobError::Store`].
    pub async fn count(&self, meter_id: &str) -> Result<(i64, i64), AnomalyJobError> {
        let row: (i64, Option<i64>) =
            sqlx::query_as("SELECT COUNT(*), SUM(flagged) FROM anomaly_scores WHERE meter_id = $1")
                .bind(meter_id.to_owned())
                .fetch_one(&self.pool)
                .await
                .map_err(|e| AnomalyJobError::Store(e.to_string()))?;
        Ok((row.0, row.1.unwrap_or(0)))
    }
}

/// The digest a release request names a model by: BLAKE3 (hex) of the model file's bytes.
#[must_use]
pub fn model_digest(model_file: &[u8]) -> String {
    blake3::hash(model_file).to_hex().to_string()
}
