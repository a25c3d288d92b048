//! The utility's side of the daily lane (`seer-daily`): each meter uploads once a day one
//! `N4096_L1` ciphertext holding its block of [`BLOCK`] slots (block `home mod 4`, group the
//! home's billing group; kind `daily`, stored by [`crate::analytics_ingest`]), and
//! [`run_pending`] releases what the registered `daily` computation makes of them:
//!
//! 1. the model's pending inputs (optionally of one day) are packed by [`pack`] into release
//!    requests of at most [`METERS_PER_REQUEST`] meters, one input per meter and distinct
//!    blocks, a (day, group) together where possible;
//! 2. the key authority's `N4096_L1` Galois keys are fetched once over `seer.v1.Keys` and
//!    kept on disk under their BLAKE3 digest ([`load_or_fetch_galois_keys`]): a later run
//!    loads them after checking size, digest and rotation steps, and fetches only when the key
//!    authority's key set changed;
//! 3. each request is evaluated once off the async runtime — exactly
//!    `seer_daily::circuit::evaluate` over the meters' ciphertexts, each at its block, in the
//!    header's order, serialized with `Ciphertext::to_bytes`, which is what the key authority
//!    re-executes and compares byte for byte — and streamed to `Analytics.Release` with the
//!    inputs;
//! 4. the released forecasts (`daily_forecasts`) and anomaly results (`daily_anomalies`) are
//!    stored with the decision on every input of the request (released, or refused with the
//!    key authority's reason) in one transaction ([`Store::record_daily_release`]). Inputs
//!    withheld because another meter of their request was refused stay pending and are asked
//!    for again, without the refused ones, in the same run;
//! 5. for each (group, day) of the inputs the run decided with at least one
//!    released, once no input of that group-day is pending (withheld ones included) and no
//!    total is stored, the group's forecast total for the next day is asked for
//!    (`Analytics.ReleaseGroupForecast`: the key authority sums the forecasts it released for
//!    the homes whose receipts name the group, at least three homes, once per group-day) and
//!    stored (`daily_group_forecasts`, [`Store::record_daily_group_forecast`]); a refusal (too
//!    few homes) is reported and nothing stored. A rerun that decides nothing asks nothing.
//!
//! The utility never decrypts anything: it holds only the key authority's public Galois keys.

use std::collections::{BTreeSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use chrono::NaiveDate;
use seer_ckks::{Ciphertext, CkksContext, Evaluator, GaloisKeys};
use seer_daily::DailyModel;
use seer_daily::layout::{BLOCK, BLOCKS_PER_CIPHERTEXT};
use seer_proto::WithMessageLimits as _;
use seer_proto::v1::analytics_client::AnalyticsClient;
use seer_proto::v1::keys_client::KeysClient;
use seer_proto::v1::{
    AnalyticsMeterRelease, GroupForecastRequest, GroupForecastResponse, KeyKind, ListKeySetsRequest,
};
use serde::Serialize;
use tonic::transport::Channel;
use tracing::Instrument as _;

use crate::analytics::{MeterInputs, model_digest, request_release};
pub use crate::forecast::RefusedInput;
use crate::forecast::answered_input;
use crate::key_authority::{JobError, connect, fetch_key_object};
use crate::store::{
    DailyAnomaly, DailyFilter, DailyForecast, GroupForecastHour, GroupHourTotal, InputHeader,
    Store, StoredInput,
};

/// The kind of the computation on the wire and in the store.
pub const KIND: &str = "daily";

/// Most meters in one release request: one per block of the ciphertext.
pub const METERS_PER_REQUEST: usize = BLOCKS_PER_CIPHERTEXT;

/// What one run is asked to do (everything but the store).
#[derive(Clone)]
pub struct DailyJob {
    /// The model file (registered with the key authority; the BLAKE3 of its bytes names it).
    pub model_path: PathBuf,
    /// The key authority's URL.
    pub key_authority: String,
    /// The utility's token for the key authority.
    pub token: String,
    /// Only the inputs of this day (the day the meters prepared); `None`: every pending one.
    pub day: Option<NaiveDate>,
    /// Only the inputs of this evaluation group (a worker's job: one (day, group)); `None`:
    /// every group.
    pub group: Option<u32>,
    /// Where the key authority's Galois keys are kept between runs.
    pub key_cache: PathBuf,
}

impl std::fmt::Debug for DailyJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DailyJob")
            .field("model_path", &self.model_path)
            .field("key_authority", &self.key_authority)
            .field("token", &"[REDACTED]")
            .field("day", &self.day)
            .field("group", &self.group)
            .field("key_cache", &self.key_cache)
            .finish()
    }
}

/// A group forecast total the key authority refused in a run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RefusedGroupForecast {
    /// The evaluation group.
    pub group: u32,
    /// The day the meters prepared (the total asked for is of the next day).
    pub input_day: String,
    /// The homes the key authority holds for it so far.
    pub homes: u32,
    /// The key authority's reason.
    pub reason: String,
}

/// Where the run's Galois keys came from.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct KeyStats {
    /// The key set's parameter set id.
    pub parameter_set: String,
    /// BLAKE3 (hex) of the serialized Galois keys.
    pub galois_blake3: String,
    /// Bytes fetched from the key authority in this run (0 when the cache served them).
    pub bytes_fetched: u64,
    /// Bytes loaded from the cache in this run (0 when they were fetched).
    pub bytes_cached: u64,
    /// The cache file.
    pub cache_file: Option<PathBuf>,
}

/// What one [`run_pending`] did (printed as JSON by `utility-server daily`).
#[derive(Clone, Debug, Default, Serialize)]
pub struct DailyReport {
    /// BLAKE3 (hex) of the model file.
    pub model_blake3: String,
    /// The day asked for, if one was.
    pub day: Option<String>,
    /// Pending inputs found.
    pub inputs: usize,
    /// Release requests made (one evaluation each), retries included.
    pub requests: usize,
    /// Requests that asked again for inputs withheld in an earlier one.
    pub retries: usize,
    /// Inputs released.
    pub released: usize,
    /// Inputs refused, with the reasons.
    pub refused: Vec<RefusedInput>,
    /// Forecast hours stored.
    pub forecast_hours_stored: usize,
    /// Anomaly days stored.
    pub anomaly_days_stored: usize,
    /// Group forecast totals released and stored (`ReleaseGroupForecast`), one per group-day.
    pub group_forecasts_released: usize,
    /// Group forecast totals refused (too few homes so far), with the reasons.
    pub group_forecasts_refused: Vec<RefusedGroupForecast>,
    /// Median evaluation time per home-day (a request's time over its meters), ms.
    pub evaluate_ms_per_home_day_median: f64,
    /// Median time of a release request (streaming, re-execution, answer), ms.
    pub release_ms_per_request_median: f64,
    /// The Galois keys.
    pub keys: KeyStats,
    /// Whether every answered request's result was byte-identical to the key authority's
    /// re-execution.
    pub all_verified: bool,
    /// Wall-clock time of the run, ms.
    pub total_ms: f64,
}

/// The block (0..[`BLOCKS_PER_CIPHERTEXT`]) an input's slot offset names.
#[must_use]
pub fn block_of(header: &InputHeader) -> usize {
    header.slot_offset as usize / BLOCK
}

fn compatible(a: &[StoredInput], b: &[StoredInput]) -> bool {
    a.len() + b.len() <= METERS_PER_REQUEST
        && a.iter().all(|x| {
            b.iter().all(|y| {
                x.header.meter_id != y.header.meter_id && block_of(&x.header) != block_of(&y.header)
            })
        })
}

/// Packs `inputs` into release requests: at most [`METERS_PER_REQUEST`] per request, one
/// input per meter, distinct blocks. First fit within each (day, evaluation group) in the
/// given order (the store's: day, group, offset, meter), so a full group of one day makes one
/// request; then the inputs of the groups left partial (absent meters) fill requests first
/// fit, in the same order, a request of the same day before one of another day, so that the
/// fleet's requests stay nearly full.
#[must_use]
pub fn pack(inputs: Vec<StoredInput>) -> Vec<Vec<StoredInput>> {
    let mut requests: Vec<Vec<StoredInput>> = Vec::new();
    for input in inputs {
        let key = (&input.header.first_period, input.header.group);
        let slot = requests.iter_mut().find(|r| {
            (&r[0].header.first_period, r[0].header.group) == key
                && compatible(r, std::slice::from_ref(&input))
        });
        match slot {
            Some(request) => request.push(input),
            None => requests.push(vec![input]),
        }
    }
    let (mut packed, partial): (Vec<_>, Vec<_>) = requests
        .into_iter()
        .partition(|r| r.len() == METERS_PER_REQUEST);
    let mut filled: Vec<Vec<StoredInput>> = Vec::new();
    for input in partial.into_iter().flatten() {
        let one = std::slice::from_ref(&input);
        let day = &input.header.first_period;
        let same_day = filled
            .iter()
            .position(|r| &r[0].header.first_period == day && compatible(r, one));
        match same_day.or_else(|| filled.iter().position(|r| compatible(r, one))) {
            Some(i) => filled[i].push(input),
            None => filled.push(vec![input]),
        }
    }
    packed.extend(filled);
    // Day order, as the store listed them (stable: full groups before mixed requests).
    packed.sort_by(|a, b| {
        (&a[0].header.first_period, a[0].header.group)
            .cmp(&(&b[0].header.first_period, b[0].header.group))
    });
    packed
}

/// Evaluates the registered `daily` computation over the meters' serialized inputs, each with
/// its block, in request order, and serializes the one output: exactly what the key authority
/// re-executes and compares. Blocking and CPU-bound (at most 15 rotations and 16 plaintext
/// products per meter at n = 4096).
///
/// # Errors
/// [`JobError::Circuit`] when an input does not parse or the evaluation fails.
pub fn evaluate(
    model: &DailyModel,
    evaluator: &Evaluator,
    meters: &[(usize, &[u8])],
) -> Result<Vec<u8>, JobError> {
    let _span = tracing::info_span!("daily.evaluate", meters = meters.len()).entered();
    let ctx = evaluator.context();
    let circuit = |e: String| JobError::Circuit(e);
    let parsed = meters
        .iter()
        .map(|(block, bytes)| {
            Ciphertext::from_bytes(ctx, bytes)
                .map(|ct| (*block, ct))
                .map_err(|e| circuit(format!("the input at block {block}: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let refs: Vec<(usize, &Ciphertext)> = parsed.iter().map(|(b, ct)| (*b, ct)).collect();
    // The weight plaintexts, encoded once per block for the model and reused by every request
    // (byte for byte the output of `seer_daily::circuit::evaluate`, which the key authority
    // compares).
    static PREPARED: seer_daily::circuit::CircuitCache = seer_daily::circuit::CircuitCache::new();
    let output = PREPARED
        .get(model)
        .evaluate(evaluator, &refs)
        .map_err(|e| circuit(e.to_string()))?;
    output.to_bytes(ctx).map_err(|e| circuit(e.to_string()))
}

fn is_hex_digest(text: &str) -> bool {
    text.len() == 64 && text.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f'))
}

/// Loads `file` as Galois keys of `ctx` supporting `steps` when its size is `expected`, its
/// BLAKE3 is the digest its name carries and it parses; `None` (after removing it) otherwise.
fn load_cached(
    ctx: &CkksContext,
    file: &Path,
    expected: u64,
    steps: &[i64],
) -> Option<(GaloisKeys, String)> {
    let digest = file.file_stem()?.to_str()?.to_owned();
    let check = || -> Result<GaloisKeys, String> {
        if !is_hex_digest(&digest) {
            return Err("not named by a digest".into());
        }
        let bytes = std::fs::read(file).map_err(|e| e.to_string())?;
        if bytes.len() as u64 != expected {
            return Err(format!(
                "{} bytes; the key authority announces {expected}",
                bytes.len()
            ));
        }
        if blake3::hash(&bytes).to_hex().as_str() != digest {
            return Err("its BLAKE3 is not the digest it is named by".into());
        }
        let keys = GaloisKeys::from_bytes(ctx, &bytes).map_err(|e| e.to_string())?;
        if let Some(step) = steps.iter().find(|s| !keys.supports(**s, ctx.slots())) {
            return Err(format!("they lack the rotation step {step}"));
        }
        Ok(keys)
    };
    match check() {
        Ok(keys) => Some((keys, digest)),
        Err(why) => {
            tracing::warn!(file = %file.display(), %why, "discarding cached Galois keys");
            if let Err(e) = std::fs::remove_file(file) {
                tracing::warn!(file = %file.display(), error = %e, "cannot remove the cache file");
            }
            None
        }
    }
}

/// Writes `bytes` to `file` through a temporary file in the same directory, so that a reader
/// sees the whole file or none.
fn write_atomically(file: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let dir = file.parent().unwrap_or_else(|| Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = file.with_extension(format!("tmp{}", std::process::id()));
    let mut out = std::fs::File::create(&tmp)?;
    out.write_all(bytes)?;
    out.sync_all()?;
    drop(out);
    std::fs::rename(&tmp, file)
}

/// The key authority's Galois keys of `ctx`'s parameter set, supporting `steps`: from the
/// cache under `cache_dir` when it holds them, fetched (and then cached) otherwise.
///
/// The cache keeps `PARAMETER_SET/PUBLIC_KEY_BLAKE3/GALOIS_BLAKE3.galois`: the key set is
/// named by its public key's digest (as the key authority announces it), the file by its own
/// digest. A file is used only when its size is the size the key authority announces now,
/// its BLAKE3 is its name and it parses with every step; otherwise it is removed and the keys
/// are fetched again. A cache that cannot be written costs a fetch next time, nothing more.
///
/// # Errors
/// [`JobError::Keys`] when the key authority holds no such key set or its keys cannot be
/// fetched, parsed, or lack a step.
#[tracing::instrument(skip_all, fields(parameter_set = ctx.parameter_set_id()))]
pub async fn load_or_fetch_galois_keys(
    channel: Channel,
    ctx: &CkksContext,
    steps: &[i64],
    cache_dir: &Path,
) -> Result<(GaloisKeys, KeyStats), JobError> {
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
                "the key authority holds no key set for {id} (the daily lane's)"
            ))
        })?;
    let expected = info.galois_keys_bytes;
    let mut stats = KeyStats {
        parameter_set: id.clone(),
        ..KeyStats::default()
    };
    let set_dir = is_hex_digest(&info.public_key_blake3)
        .then(|| cache_dir.join(&id).join(&info.public_key_blake3));
    if let Some(dir) = set_dir.clone() {
        let (ctx, steps) = (ctx.clone(), steps.to_vec());
        let span = tracing::Span::current();
        let cached = tokio::task::spawn_blocking(move || {
            let _entered = span.enter();
            let files = std::fs::read_dir(&dir).ok()?;
            files
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "galois"))
                .find_map(|file| {
                    load_cached(&ctx, &file, expected, &steps).map(|(keys, d)| (keys, d, file))
                })
        })
        .await
        .map_err(|e| JobError::Keys(format!("reading the key cache: {e}")))?;
        if let Some((keys, digest, file)) = cached {
            tracing::info!(file = %file.display(), bytes = expected, "Galois keys loaded from the cache");
            stats.galois_blake3 = digest;
            stats.bytes_cached = expected;
            stats.cache_file = Some(file);
            return Ok((keys, stats));
        }
    } else {
        tracing::warn!("the key set announces no public key digest: Galois keys are not cached");
    }
    let bytes = fetch_key_object(&mut client, &id, KeyKind::Galois, expected).await?;
    let digest = blake3::hash(&bytes).to_hex().to_string();
    let (ctx, steps) = (ctx.clone(), steps.to_vec());
    let file = set_dir.map(|dir| dir.join(format!("{digest}.galois")));
    let span = tracing::Span::current();
    let (keys, written) = tokio::task::spawn_blocking(move || {
        let _entered = span.enter();
        let keys = GaloisKeys::from_bytes(&ctx, &bytes)
            .map_err(|e| JobError::Keys(format!("Galois keys: {e}")))?;
        if let Some(step) = steps.iter().find(|s| !keys.supports(**s, ctx.slots())) {
            return Err(JobError::Keys(format!(
                "the Galois keys of {} lack the rotation step {step}",
                ctx.parameter_set_id()
            )));
        }
        let written = file.filter(|file| match write_atomically(file, &bytes) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(file = %file.display(), error = %e, "cannot cache the Galois keys");
                false
            }
        });
        Ok((keys, written))
    })
    .await
    .map_err(|e| JobError::Keys(format!("parsing task: {e}")))??;
    tracing::info!(
        bytes = expected,
        cached = written.is_some(),
        "Galois keys fetched"
    );
    stats.galois_blake3 = digest;
    stats.bytes_fetched = expected;
    stats.cache_file = written;
    Ok((keys, stats))
}

fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len().is_multiple_of(2) {
        f64::midpoint(values[mid - 1], values[mid])
    } else {
        values[mid]
    }
}

fn milli(value: f64) -> i64 {
    // Rounded values of at most a few thousand: far inside i64.
    #[expect(clippy::cast_possible_truncation, reason = "a rounded, bounded value")]
    let m = (value * 1000.0).round() as i64;
    m
}

/// A flagged day's explanation as stored (JSON).
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct StoredExplanation {
    /// What drove the score, most important first.
    pub features: Vec<ExplanationFeature>,
    /// The hours the leading features use, when the key authority names them apart.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hours: Vec<u32>,
}

/// One feature of a stored explanation.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct ExplanationFeature {
    /// The feature's name.
    pub name: String,
    /// Its outlier score (share of the day's score), rounded to 0.001.
    pub excess: f64,
    /// The sentence shown to people.
    pub text: String,
    /// The range the day's value fell in, as a multiple of the home's usual level.
    pub usual_low: f64,
    /// Its upper end; `None` for an open upper end.
    pub usual_high: Option<f64>,
    /// The hours (0–23) the feature looks at.
    pub hours: Vec<u32>,
}

/// The rows one granted meter's answer stores.
fn released_rows(
    model_blake3: &str,
    header: &InputHeader,
    answer: &AnalyticsMeterRelease,
) -> Result<(Vec<DailyForecast>, Vec<DailyAnomaly>), JobError> {
    let forecasts = answer
        .forecasts
        .iter()
        .map(|f| DailyForecast {
            meter_id: header.meter_id.clone(),
            hour: f.hour.clone(),
            model_blake3: model_blake3.to_owned(),
            kwh_milli: milli(f.kwh),
            input_day: header.first_period.clone(),
            group: header.group,
            audit_seq: answer.audit_sequence,
        })
        .collect();
    let anomalies = answer
        .days
        .iter()
        .map(|d| {
            let explanation = (d.flagged || !d.explanation.is_empty())
                .then(|| {
                    serde_json::to_string(&StoredExplanation {
                        features: d
                            .explanation
                            .iter()
                            .map(|f| ExplanationFeature {
                                name: f.name.clone(),
                                excess: f.excess,
                                text: f.text.clone(),
                                usual_low: f.usual_low,
                                usual_high: f.usual_high.is_finite().then_some(f.usual_high),
                                hours: f.hours.clone(),
                            })
                            .collect(),
                        hours: d.explanation_hours.clone(),
                    })
                })
                .transpose()
                .map_err(|e| JobError::Record(sqlx::Error::Encode(Box::new(e))))?;
            Ok(DailyAnomaly {
                meter_id: header.meter_id.clone(),
                day: d.day.clone(),
                model_blake3: model_blake3.to_owned(),
                score_milli: milli(d.score),
                flagged: d.flagged,
                explanation,
                group: header.group,
                audit_seq: answer.audit_sequence,
            })
        })
        .collect::<Result<_, JobError>>()?;
    Ok((forecasts, anomalies))
}

/// The utility's daily job: releases every pending `daily` input uploaded for the model at
/// `job.model_path` (of `job.day` only, when given) through the key authority, stores what it
/// releases and decides every input (see the [module documentation](self)).
///
/// # Errors
/// [`JobError`] when the model, the store, the keys or a whole request fails; the inputs of
/// requests not answered stay pending, so that a rerun takes them up.
#[tracing::instrument(skip_all, fields(model = %job.model_path.display(), day = ?job.day, group = ?job.group))]
pub async fn run_pending(store: &Store, job: &DailyJob) -> Result<DailyReport, JobError> {
    let started = Instant::now();
    let model_err =
        |e: String| JobError::Circuit(format!("the model {}: {e}", job.model_path.display()));
    let bytes = tokio::fs::read(&job.model_path)
        .await
        .map_err(|e| model_err(e.to_string()))?;
    let digest = model_digest(&bytes);
    let text = std::str::from_utf8(&bytes).map_err(|e| model_err(e.to_string()))?;
    let model = Arc::new(DailyModel::from_json(text).map_err(|e| model_err(e.to_string()))?);
    let day = job.day.map(|d| d.format("%Y-%m-%d").to_string());
    let pending: Vec<StoredInput> = store
        .analytics_inputs(KIND, &digest, Some("pending"))
        .await?
        .into_iter()
        .filter(|i| day.as_ref().is_none_or(|d| &i.header.first_period == d))
        .filter(|i| job.group.is_none_or(|g| i.header.group == g))
        .collect();
    let mut report = DailyReport {
        model_blake3: digest.clone(),
        day,
        inputs: pending.len(),
        all_verified: true,
        ..DailyReport::default()
    };
    if pending.is_empty() {
        tracing::info!("no pending daily inputs");
        report.total_ms = started.elapsed().as_secs_f64() * 1e3;
        return Ok(report);
    }
    let requests = pack(pending);
    tracing::info!(
        inputs = report.inputs,
        requests = requests.len(),
        "releasing pending daily inputs"
    );
    let ctx = tokio::task::spawn_blocking(|| CkksContext::new(seer_daily::PARAMETERS))
        .await
        .map_err(|e| JobError::Circuit(e.to_string()))?
        .map_err(|e| JobError::Circuit(e.to_string()))?;
    let channel = connect(&job.key_authority).await?;
    let steps = seer_daily::circuit::galois_steps(&model);
    let (galois, keys) =
        load_or_fetch_galois_keys(channel.clone(), &ctx, &steps, &job.key_cache).await?;
    report.keys = keys;
    let evaluator = Arc::new(Evaluator::new(&ctx, None, Some(galois)));
    let mut evaluate_ms = Vec::new();
    let mut release_ms = Vec::new();
    let mut queue: VecDeque<(Vec<StoredInput>, bool)> =
        requests.into_iter().map(|r| (r, false)).collect();
    let mut released_groups: BTreeSet<(u32, String)> = BTreeSet::new();
    while let Some((request, retry)) = queue.pop_front() {
        let span = tracing::info_span!(
            "daily.request",
            meters = request.len(),
            day = %request[0].header.first_period,
            retry
        );
        let outcome = release_one(
            store,
            job,
            &channel,
            &digest,
            (Arc::clone(&model), Arc::clone(&evaluator)),
            &request,
        )
        .instrument(span)
        .await?;
        report.requests += 1;
        report.retries += usize::from(retry);
        let per_home = outcome.evaluate_ms / request.len() as f64;
        evaluate_ms.extend(std::iter::repeat_n(per_home, request.len()));
        release_ms.push(outcome.release_ms);
        report.released += outcome.released;
        released_groups.extend(outcome.released_groups.iter().cloned());
        report.refused.extend(outcome.refused.iter().cloned());
        report.forecast_hours_stored += outcome.hours;
        report.anomaly_days_stored += outcome.days;
        if outcome.withheld.is_empty() {
            report.all_verified &= outcome.verified;
        } else if outcome.refused.is_empty() && outcome.released == 0 {
            return Err(JobError::Release {
                code: tonic::Code::Internal,
                message: "the key authority withheld inputs without refusing any".into(),
            });
        } else {
            // Withheld for refused inputs, or for inputs the key authority answered from an
            // earlier release (an exact retry): asked for again without them.
            tracing::info!(
                withheld = outcome.withheld.len(),
                "inputs withheld for refused or retried ones: asking again without them"
            );
            queue.push_back((outcome.withheld, true));
        }
    }
    report.evaluate_ms_per_home_day_median = median(&mut evaluate_ms);
    report.release_ms_per_request_median = median(&mut release_ms);
    release_group_forecasts(store, job, &channel, &digest, released_groups, &mut report)
        .instrument(tracing::info_span!("daily.group_forecasts"))
        .await?;
    report.total_ms = started.elapsed().as_secs_f64() * 1e3;
    Ok(report)
}

/// Step 5 of the [module documentation](self): asks for and stores the forecast total of each
/// (group, input day) in `groups` that has no pending input left and no stored total.
async fn release_group_forecasts(
    store: &Store,
    job: &DailyJob,
    channel: &Channel,
    digest: &str,
    groups: BTreeSet<(u32, String)>,
    report: &mut DailyReport,
) -> Result<(), JobError> {
    if groups.is_empty() {
        return Ok(());
    }
    let pending: BTreeSet<(u32, String)> = store
        .analytics_inputs(KIND, digest, Some("pending"))
        .await?
        .into_iter()
        .map(|i| (i.header.group, i.header.first_period))
        .collect();
    for (group, input_day) in groups {
        if pending.contains(&(group, input_day.clone())) {
            tracing::info!(group, %input_day, "inputs still pending: the group total waits");
            continue;
        }
        if store
            .has_daily_group_forecast(group, &input_day, digest)
            .await?
        {
            continue;
        }
        let day: NaiveDate = input_day
            .parse()
            .map_err(|e| JobError::Circuit(format!("the stored input day {input_day:?}: {e}")))?;
        let Some(next) = day.succ_opt() else {
            continue;
        };
        let answer =
            request_group_forecast(channel.clone(), &job.token, group, next, digest).await?;
        if answer.granted {
            let hours: Vec<GroupForecastHour> = answer
                .hours
                .iter()
                .map(|h| GroupForecastHour {
                    group,
                    hour: h.hour.clone(),
                    model_blake3: digest.to_owned(),
                    kwh_milli: milli(h.kwh),
                    homes: u64::from(answer.homes),
                    input_day: input_day.clone(),
                    audit_seq: answer.audit_sequence,
                })
                .collect();
            store.record_daily_group_forecast(&hours).await?;
            report.group_forecasts_released += 1;
            tracing::info!(
                group,
                %input_day,
                homes = answer.homes,
                already_released = answer.already_released,
                "group forecast released"
            );
        } else {
            tracing::info!(group, %input_day, homes = answer.homes, reason = %answer.refusal, "group forecast refused");
            report.group_forecasts_refused.push(RefusedGroupForecast {
                group,
                input_day,
                homes: answer.homes,
                reason: answer.refusal,
            });
        }
    }
    Ok(())
}

/// Asks the key authority for `group`'s forecast total of `day` (the forecast's day) under the
/// model `model_blake3`.
///
/// # Errors
/// [`JobError::Token`] for a token that is no header value; [`JobError::Release`] when the
/// key authority refuses the request as a whole or cannot be reached.
pub async fn request_group_forecast(
    channel: Channel,
    token: &str,
    group: u32,
    day: NaiveDate,
    model_blake3: &str,
) -> Result<GroupForecastResponse, JobError> {
    let bearer: tonic::metadata::MetadataValue<_> = format!("Bearer {token}")
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
    client
        .release_group_forecast(GroupForecastRequest {
            group,
            day: day.format("%Y-%m-%d").to_string(),
            model_blake3: model_blake3.to_owned(),
        })
        .await
        .map(tonic::Response::into_inner)
        .map_err(|s| JobError::Release {
            code: s.code(),
            message: s.message().to_owned(),
        })
}

/// What one answered request did.
struct RequestOutcome {
    evaluate_ms: f64,
    release_ms: f64,
    released: usize,
    /// (group, input day) of each released input.
    released_groups: Vec<(u32, String)>,
    refused: Vec<RefusedInput>,
    withheld: Vec<StoredInput>,
    hours: usize,
    days: usize,
    verified: bool,
}

/// Evaluates, releases and records one request.
async fn release_one(
    store: &Store,
    job: &DailyJob,
    channel: &Channel,
    digest: &str,
    (model, evaluator): (Arc<DailyModel>, Arc<Evaluator>),
    request: &[StoredInput],
) -> Result<RequestOutcome, JobError> {
    let mut meters = Vec::with_capacity(request.len());
    for input in request {
        meters.push(MeterInputs {
            meter_id: input.header.meter_id.clone(),
            input_id: input.header.input_id.clone(),
            inputs: store.analytics_input_ciphertexts(&input.header).await?,
        });
    }
    let blocks: Vec<(usize, Vec<u8>)> = request
        .iter()
        .zip(&meters)
        .map(|(input, m)| (block_of(&input.header), m.inputs[0].clone()))
        .collect();
    let started = Instant::now();
    let span = tracing::Span::current();
    let result = tokio::task::spawn_blocking(move || {
        let _entered = span.enter();
        let refs: Vec<(usize, &[u8])> = blocks.iter().map(|(b, ct)| (*b, ct.as_slice())).collect();
        evaluate(&model, &evaluator, &refs)
    })
    .await
    .map_err(|e| JobError::Circuit(format!("evaluation task: {e}")))??;
    {
        let evaluate_ms = started.elapsed().as_secs_f64() * 1e3;
        let started = Instant::now();
        let response = request_release(
            channel.clone(),
            &job.token,
            KIND,
            digest,
            meters,
            vec![result],
        )
        .await?;
        let release_ms = started.elapsed().as_secs_f64() * 1e3;
        let mut outcome = RequestOutcome {
            evaluate_ms,
            release_ms,
            released: 0,
            released_groups: Vec::new(),
            refused: Vec::new(),
            withheld: Vec::new(),
            hours: 0,
            days: 0,
            verified: response.result_verified,
        };
        let mut decisions = Vec::with_capacity(request.len());
        let (mut forecasts, mut anomalies) = (Vec::new(), Vec::new());
        for input in request {
            let Some(answer) = response
                .meters
                .iter()
                .find(|m| m.meter_id == input.header.meter_id)
            else {
                tracing::warn!(meter_id = %input.header.meter_id, "no answer for a meter: it stays pending");
                continue;
            };
            if answer.withheld {
                outcome.withheld.push(input.clone());
                continue;
            }
            let (status, refusal) = answered_input(&input.header, answer);
            match refusal {
                None => {
                    outcome.released += 1;
                    outcome
                        .released_groups
                        .push((input.header.group, input.header.first_period.clone()));
                    let (f, a) = released_rows(digest, &input.header, answer)?;
                    forecasts.extend(f);
                    anomalies.extend(a);
                }
                Some(refusal) => outcome.refused.push(refusal),
            }
            decisions.push((input.header.clone(), status));
        }
        let (hours, days) = store
            .record_daily_release(&decisions, &forecasts, &anomalies)
            .await?;
        outcome.hours = hours;
        outcome.days = days;
        tracing::info!(
            released = outcome.released,
            refused = outcome.refused.len(),
            withheld = outcome.withheld.len(),
            evaluate_ms,
            release_ms,
            verified = outcome.verified,
            "daily release answered"
        );
        Ok(outcome)
    }
}

/// A stored forecast hour, as `utility-server daily-results` prints it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ForecastRow {
    /// The stored row.
    #[serde(flatten)]
    pub stored: DailyForecast,
    /// The forecast energy, kWh.
    pub kwh: f64,
}

/// A stored anomaly result, as printed.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AnomalyRow {
    /// The meter.
    pub meter_id: String,
    /// The day scored.
    pub day: String,
    /// BLAKE3 (hex) of the model file.
    pub model_blake3: String,
    /// The score.
    pub score: f64,
    /// Whether it is flagged.
    pub flagged: bool,
    /// Flagged days: the explanation.
    pub explanation: Option<StoredExplanation>,
    /// The evaluation group.
    pub group: u32,
    /// The audit entry that granted it.
    pub audit_seq: u64,
}

/// The utility's own sum, per evaluation group and hour, of the per-home forecasts it holds
/// (not a release: empty when the key authority releases no home's forecast, and partial when
/// some homes' are missing). The released totals are [`GroupForecastRow`]s.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GroupTotalRow {
    /// The stored sum.
    #[serde(flatten)]
    pub stored: GroupHourTotal,
    /// The sum, kWh.
    pub kwh: f64,
}

/// One hour of a group's forecast total as the key authority released it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GroupForecastRow {
    /// The stored row.
    #[serde(flatten)]
    pub stored: GroupForecastHour,
    /// The total, kWh.
    pub kwh: f64,
}

/// What `utility-server daily-results` prints.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DailyResults {
    /// The input day asked for, if one was (forecasts are of the next day).
    pub day: Option<String>,
    /// The model asked for, if one was.
    pub model_blake3: Option<String>,
    /// The stored forecasts, in (input day, group, meter, hour) order.
    pub forecasts: Vec<ForecastRow>,
    /// The stored anomaly results, in (day, meter) order.
    pub anomalies: Vec<AnomalyRow>,
    /// The group forecast totals the key authority released (`ReleaseGroupForecast`: at
    /// least three homes, once per group-day), in (input day, group, hour) order.
    pub group_forecasts: Vec<GroupForecastRow>,
    /// Not a release: per evaluation group and hour, the utility's own sum of the per-home
    /// forecasts above (see [`GroupTotalRow`]).
    pub home_forecast_sums: Vec<GroupTotalRow>,
}

#[expect(clippy::cast_precision_loss, reason = "milli-kWh of a few homes")]
fn from_milli(milli: i64) -> f64 {
    milli as f64 / 1000.0
}

/// The stored daily results of the inputs of `day` (all days when `None`) of the model
/// `model_blake3` (all models when `None`).
///
/// # Errors
/// [`JobError::Store`]; [`JobError::Circuit`] for a stored explanation that is not the JSON
/// this job writes.
pub async fn results(
    store: &Store,
    day: Option<NaiveDate>,
    model_blake3: Option<&str>,
) -> Result<DailyResults, JobError> {
    let day = day.map(|d| d.format("%Y-%m-%d").to_string());
    let filter = DailyFilter {
        input_day: day.as_deref(),
        model_blake3,
    };
    let forecasts = store
        .daily_forecasts(filter)
        .await?
        .into_iter()
        .map(|stored| ForecastRow {
            kwh: from_milli(stored.kwh_milli),
            stored,
        })
        .collect();
    let anomalies = store
        .daily_anomalies(filter)
        .await?
        .into_iter()
        .map(|a| {
            let explanation = a
                .explanation
                .as_deref()
                .map(serde_json::from_str)
                .transpose()
                .map_err(|e| {
                    JobError::Circuit(format!(
                        "the stored explanation of {} {}: {e}",
                        a.meter_id, a.day
                    ))
                })?;
            Ok(AnomalyRow {
                score: from_milli(a.score_milli),
                meter_id: a.meter_id,
                day: a.day,
                model_blake3: a.model_blake3,
                flagged: a.flagged,
                explanation,
                group: a.group,
                audit_seq: a.audit_seq,
            })
        })
        .collect::<Result<_, JobError>>()?;
    let home_forecast_sums = store
        .daily_forecast_totals(filter)
        .await?
        .into_iter()
        .map(|stored| GroupTotalRow {
            kwh: from_milli(stored.kwh_milli),
            stored,
        })
        .collect();
    let group_forecasts = store
        .daily_group_forecasts(filter)
        .await?
        .into_iter()
        .map(|stored| GroupForecastRow {
            kwh: from_milli(stored.kwh_milli),
            stored,
        })
        .collect();
    Ok(DailyResults {
        day,
        model_blake3: model_blake3.map(str::to_owned),
        forecasts,
        anomalies,
        group_forecasts,
        home_forecast_sums,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::InputStatus;

    fn input(meter: &str, day: &str, group: u32, block: u32) -> StoredInput {
        StoredInput {
            header: InputHeader {
                kind: KIND.into(),
                meter_id: meter.into(),
                input_id: format!("daily-{day}"),
                model_blake3: "ab".repeat(32),
                slot_offset: block * 512,
                slot_count: 512,
                first_period: day.into(),
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
                    .map(|i| {
                        format!(
                            "{}@{}#{}",
                            i.header.meter_id,
                            &i.header.first_period[8..],
                            block_of(&i.header)
                        )
                    })
                    .collect()
            })
            .collect()
    }

    fn assert_valid(requests: &[Vec<StoredInput>]) {
        for request in requests {
            assert!(!request.is_empty() && request.len() <= METERS_PER_REQUEST);
            for (i, a) in request.iter().enumerate() {
                for b in &request[i + 1..] {
                    assert_ne!(block_of(&a.header), block_of(&b.header), "{request:?}");
                    assert_ne!(a.header.meter_id, b.header.meter_id, "{request:?}");
                }
            }
        }
    }

    #[test]
    fn a_full_group_of_a_day_is_one_request() {
        let inputs: Vec<StoredInput> = (0..3)
            .flat_map(|g| (0..4).map(move |b| input(&format!("g{g}b{b}"), "2024-03-12", g, b)))
            .collect();
        let requests = pack(inputs);
        assert_valid(&requests);
        assert_eq!(requests.len(), 3);
        for (g, request) in requests.iter().enumerate() {
            assert!(request.iter().all(|i| i.header.group == g as u32));
        }
    }

    #[test]
    fn partial_groups_share_requests_of_the_same_day_first() {
        // Day 12: group 0 has blocks 0 and 1, group 1 blocks 2 and 3, group 2 block 0;
        // day 13: group 0 block 3 (fits day 12's group 2 only by crossing days).
        let inputs = vec![
            input("a", "2024-03-12", 0, 0),
            input("b", "2024-03-12", 0, 1),
            input("c", "2024-03-12", 1, 2),
            input("d", "2024-03-12", 1, 3),
            input("e", "2024-03-12", 2, 0),
            input("a", "2024-03-13", 0, 3),
        ];
        let requests = pack(inputs);
        assert_valid(&requests);
        assert_eq!(
            ids(&requests),
            vec![
                vec!["a@12#0", "b@12#1", "c@12#2", "d@12#3"],
                vec!["e@12#0", "a@13#3"],
            ]
        );
    }

    #[test]
    fn one_input_per_meter_and_block_per_request() {
        // Two meters claim block 1 of group 0 (one of them wrongly), and one meter uploads
        // two days: no request holds a block or a meter twice.
        let inputs = vec![
            input("a", "2024-03-12", 0, 0),
            input("b", "2024-03-12", 0, 1),
            input("x", "2024-03-12", 0, 1),
            input("a", "2024-03-13", 0, 0),
            input("b", "2024-03-13", 0, 1),
        ];
        let requests = pack(inputs);
        assert_valid(&requests);
        assert_eq!(
            ids(&requests),
            vec![
                vec!["a@12#0", "b@12#1"],
                vec!["x@12#1", "a@13#0"],
                vec!["b@13#1"],
            ]
        );
        assert!(pack(Vec::new()).is_empty());
    }

    #[test]
    fn many_homes_pack_four_to_a_request() {
        let inputs: Vec<StoredInput> = (0..1000u32)
            .map(|h| input(&format!("h{h:04}"), "2024-03-12", h / 4, h % 4))
            .collect();
        let requests = pack(inputs);
        assert_valid(&requests);
        assert_eq!(requests.len(), 250);
        // A fleet with every third home absent still fills most requests.
        let sparse: Vec<StoredInput> = (0..1200u32)
            .filter(|h| h % 3 != 0)
            .map(|h| input(&format!("h{h:04}"), "2024-03-12", h / 4, h % 4))
            .collect();
        let n = sparse.len();
        let requests = pack(sparse);
        assert_valid(&requests);
        assert_eq!(requests.iter().map(Vec::len).sum::<usize>(), n);
        assert!(
            requests.len() <= n.div_ceil(4) + n / 40,
            "{} requests for {n}",
            requests.len()
        );
    }

    #[test]
    fn medians() {
        assert!((median(&mut [3.0, 1.0, 2.0]) - 2.0).abs() < 1e-12);
        assert!((median(&mut [4.0, 1.0, 2.0, 3.0]) - 2.5).abs() < 1e-12);
        assert!(median(&mut []).abs() < 1e-12);
        assert_eq!(milli(0.1234), 123);
        assert_eq!(milli(2.0006), 2001);
    }
}
