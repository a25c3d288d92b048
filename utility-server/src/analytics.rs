//! The utility's side of the deep analytics release (kinds `anomaly` and `forecast`; the
//! policy is the header of `analytics.proto`), shared by both kinds:
//!
//! 1. [`fetch_deep_keys`]: the key authority's deep key set (relinearization and Galois keys
//!    of N32768_L19, streamed in chunks by `seer.v1.Keys`), checked against the rotation steps
//!    the registered computation needs;
//! 2. [`evaluate_sum`]: the registered computation over the meters' inputs (their blocks
//!    disjoint), each isolated to its block inside the circuit
//!    (`seer_core::circuits::isolation`), off the async runtime; its encrypted outputs
//!    serialized;
//! 3. [`request_release`]: the inputs and the result streamed to `Analytics.Release` with the
//!    utility's token; the key authority re-executes, compares and releases per period.
//!
//! What is released is stored by kind: [`crate::anomaly::AnomalyScores`] (per day) and
//! [`crate::forecast::ForecastStore`] (per hour). The utility never decrypts anything.

use std::sync::Arc;

use seer_anomaly::circuit::EncryptedValue;
use seer_ckks::{Ciphertext, CkksContext, Evaluator, GaloisKeys, RelinKeys};
use seer_proto::WithMessageLimits as _;
use seer_proto::v1::analytics_client::AnalyticsClient;
use seer_proto::v1::analytics_release_chunk::Part;
use seer_proto::v1::keys_client::KeysClient;
use seer_proto::v1::{
    AnalyticsMeterInput, AnalyticsReleaseChunk, AnalyticsReleaseHeader, AnalyticsReleaseResponse,
    CiphertextChunk, KeyKind, ListKeySetsRequest,
};
use sqlx::AnyPool;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;

use crate::key_authority::fetch_key_object;
pub use crate::key_authority::{JobError, connect};
use crate::store::Store;

/// Size of one streamed ciphertext chunk.
pub const CHUNK_BYTES: usize = 1 << 20;

/// Fetches the deep key set of `ctx`'s parameter set and builds the evaluator, checking that
/// the Galois keys support `steps`. Returns the evaluator and the bytes fetched.
///
/// # Errors
/// [`JobError::Keys`].
#[tracing::instrument(skip_all, fields(parameter_set = ctx.parameter_set_id()))]
pub async fn fetch_deep_keys(
    channel: Channel,
    ctx: &CkksContext,
    steps: &[i64],
) -> Result<(Evaluator, u64), JobError> {
    let id = ctx.parameter_set_id().to_owned();
    let mut client = KeysClient::new(channel).with_seer_limits();
    let info = client
        .list_key_sets(ListKeySetsRequest {})
        .await
        .map_err(|s| JobError::Keys(s.message().to_owned()))?
        .into_inner()
        .key_sets
        .into_iter()
        .find(|s| s.parameter_set_id == id)
        .ok_or_else(|| {
            JobError::Keys(format!(
                "the key authority holds no key set for {id} (is analytics enabled?)"
            ))
        })?;
    let relin = fetch_key_object(&mut client, &id, KeyKind::Relin, info.relin_keys_bytes).await?;
    let galois =
        fetch_key_object(&mut client, &id, KeyKind::Galois, info.galois_keys_bytes).await?;
    let total = (relin.len() + galois.len()) as u64;
    let ctx = ctx.clone();
    let steps = steps.to_vec();
    let span = tracing::Span::current();
    let evaluator = tokio::task::spawn_blocking(move || {
        let _entered = span.enter();
        let relin = RelinKeys::from_bytes(&ctx, &relin)
            .map_err(|e| JobError::Keys(format!("relinearization keys: {e}")))?;
        let galois = GaloisKeys::from_bytes(&ctx, &galois)
            .map_err(|e| JobError::Keys(format!("Galois keys: {e}")))?;
        if let Some(step) = steps.iter().find(|s| !galois.supports(**s, ctx.slots())) {
            return Err(JobError::Keys(format!(
                "the deep Galois keys lack the rotation step {step}"
            )));
        }
        Ok(Evaluator::new(&ctx, Some(relin), Some(galois)))
    })
    .await
    .map_err(|e| JobError::Keys(format!("parsing task: {e}")))??;
    tracing::info!(bytes = total, "deep evaluation keys fetched");
    Ok((evaluator, total))
}

/// One meter's inputs to a deep computation: its slot block and its serialized input
/// ciphertexts, in order.
pub type BlockInputs = (std::ops::Range<usize>, Vec<Vec<u8>>);

/// Evaluates a registered computation of `depth` levels taking `inputs_per_meter` ciphertexts
/// per meter on the meters' serialized inputs (`meters[m]`: block and inputs, blocks
/// disjoint), each meter isolated to its block inside the circuit exactly as the key
/// authority's re-execution does (`seer_core::circuits::isolation::isolated_sums`), and
/// serializes its encrypted outputs, in order: what the key authority re-executes and compares
/// byte for byte. Blocking and CPU-heavy: call it off the async runtime.
///
/// # Errors
/// [`JobError::Circuit`] when an input does not parse, the meters cannot be isolated as asked
/// (several meters for a computation with no level to spare), or the evaluation fails.
pub fn evaluate_sum<E>(
    evaluator: &Evaluator,
    inputs_per_meter: usize,
    depth: u32,
    meters: &[BlockInputs],
    evaluate: impl FnOnce(&Evaluator, &[Ciphertext]) -> Result<Vec<EncryptedValue>, E>,
) -> Result<Vec<Vec<u8>>, JobError>
where
    E: std::fmt::Display,
{
    let ctx = evaluator.context();
    let circuit = |e: String| JobError::Circuit(e);
    let parsed: Vec<(std::ops::Range<usize>, Vec<Ciphertext>)> = meters
        .iter()
        .map(|(block, inputs)| {
            inputs
                .iter()
                .map(|b| Ciphertext::from_bytes(ctx, b).map_err(|e| circuit(e.to_string())))
                .collect::<Result<Vec<_>, _>>()
                .map(|cts| (block.clone(), cts))
        })
        .collect::<Result<_, _>>()?;
    let sums = seer_core::circuits::isolation::isolated_sums(
        evaluator,
        inputs_per_meter,
        depth,
        parsed
            .iter()
            .map(|(block, cts)| (block.clone(), cts.as_slice())),
    )
    .map_err(|e| circuit(e.to_string()))?;
    let outputs = evaluate(evaluator, &sums).map_err(|e| circuit(e.to_string()))?;
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
pub struct MeterInputs {
    /// The meter.
    pub meter_id: String,
    /// The receipt's input id.
    pub input_id: String,
    /// The serialized input ciphertexts, in order (anomaly: the 24 hour planes; forecast:
    /// the hourly series).
    pub inputs: Vec<Vec<u8>>,
}

impl std::fmt::Debug for MeterInputs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeterInputs")
            .field("meter_id", &self.meter_id)
            .field("input_id", &self.input_id)
            .field("inputs", &self.inputs.len())
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
/// [`JobError::Token`] for a malformed token, [`JobError::Release`] when the
/// key authority refuses the request as a whole.
pub async fn request_release(
    channel: Channel,
    token: &str,
    kind: &str,
    model_blake3: &str,
    meters: Vec<MeterInputs>,
    result: Vec<Vec<u8>>,
) -> Result<AnalyticsReleaseResponse, JobError> {
    let bearer: MetadataValue<_> = format!("Bearer {token}")
        .parse()
        .map_err(|_| JobError::Token)?;
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
        .flat_map(|(m, meter)| {
            meter
                .inputs
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
        .map_err(|s| JobError::Release {
            code: s.code(),
            message: s.message().to_owned(),
        })
}

/// A pool on the utility's store at `url` for the tables of released analytics results
/// (migrated through [`Store::connect`] first).
///
/// # Errors
/// [`JobError::Store`], [`JobError::Record`].
pub async fn results_pool(url: &str) -> Result<AnyPool, JobError> {
    let store = Store::connect(url).await?;
    store.close().await;
    sqlx::any::install_default_drivers();
    Ok(sqlx::any::AnyPoolOptions::new()
        .max_connections(1)
        .connect(url)
        .await?)
}

/// The digest a release request names a model by: BLAKE3 (hex) of the model file's bytes.
#[must_use]
pub fn model_digest(model_file: &[u8]) -> String {
    blake3::hash(model_file).to_hex().to_string()
}
