//! The release policy for analytics kinds (see the [module documentation](super)).

use std::collections::HashSet;
use std::ops::Range;
use std::sync::Arc;

use sha2::Digest as _;
use tracing::Instrument as _;

use super::engine::{Computation, DeepEngine, MeterBlock, Released};
use super::group_forecast::{self, GroupForecastReleaser, HomeForecast};
use super::retry::{self, DailyCopy, RetryKey};
use super::store::{self, AnalyticsStore, InputLane, ReleaseRow};
use crate::audit::{AuditEntry, AuditLog, Decision, InputDigest, NewEntry, RequestKind};
use crate::auth::{Caller, validate_meter_id};
use crate::release::ReleaseError;

/// Most meters one request may name (each brings 24 ciphertexts of up to ~10 MB); a
/// computation may allow fewer ([`Computation::max_meters`]: 4 for `daily`, one per block of
/// its ciphertext).
pub const MAX_METERS_PER_REQUEST: usize = 8;

// Meters place their daily forecast blocks for groups of this many homes.
const _: () = assert!(MAX_METERS_PER_REQUEST == seer_forecast::release::HOMES_PER_RELEASE);

/// One meter's inputs in a request.
#[derive(Clone, PartialEq, Eq)]
pub struct AnalyticsMeterInput {
    /// The meter.
    pub meter_id: String,
    /// The receipt's input id.
    pub input_id: String,
    /// The serialized input ciphertexts, in order.
    pub inputs: Vec<Vec<u8>>,
}

impl std::fmt::Debug for AnalyticsMeterInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AnalyticsMeterInput")
            .field("meter_id", &self.meter_id)
            .field("input_id", &self.input_id)
            .field("inputs", &self.inputs.len())
            .finish()
    }
}

/// A release request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnalyticsRequest {
    /// The kind (`anomaly`, `forecast`, `daily`).
    pub kind: String,
    /// BLAKE3 (hex) of the model file.
    pub model_blake3: String,
    /// The meters.
    pub meters: Vec<AnalyticsMeterInput>,
    /// The utility's output ciphertexts.
    pub result: Vec<Vec<u8>>,
}

/// One released period (a day for `anomaly` and `daily`, an hour for `forecast`).
#[derive(Clone, Debug, PartialEq)]
pub struct ReleasedPeriod {
    /// The period, in its wire form (`YYYY-MM-DD` or `YYYY-MM-DDTHH:00`; for `daily` the day
    /// the meter prepared).
    pub period: String,
    /// What was released.
    pub release: Released,
}

/// One meter's outcome.
#[derive(Clone, Debug, PartialEq)]
pub struct AnalyticsOutcome {
    /// The meter, as named.
    pub meter_id: String,
    /// The released periods, or the refusal reason (as in the audit log).
    pub decision: Result<Vec<ReleasedPeriod>, String>,
    /// The audit entry.
    pub audit_sequence: u64,
    /// The lane of the meter's inputs (when its receipt was found).
    pub lane: Option<InputLane>,
    /// True when the meter's inputs passed every check but the request was refused as a
    /// whole because another meter's were: resubmitting without those may release it.
    pub withheld: bool,
}

/// The decisions on one request.
#[derive(Clone, Debug, PartialEq)]
pub struct AnalyticsDecisions {
    /// One outcome per meter, in order.
    pub outcomes: Vec<AnalyticsOutcome>,
    /// Whether the utility's result was byte-identical to the re-execution.
    pub result_verified: bool,
    /// The model's flag threshold (kinds that flag).
    pub flag_threshold: Option<f64>,
}

/// Applies the analytics release policy.
#[derive(Debug, Clone)]
pub struct AnalyticsReleaser {
    audit: Arc<AuditLog>,
    store: AnalyticsStore,
    engine: Arc<DeepEngine>,
    /// [`super::AnalyticsSettings::daily_release_home_forecasts`].
    daily_home_forecasts: bool,
}

/// A meter whose inputs passed the checks before the circuit.
struct Candidate {
    index: usize,
    meter: MeterBlock,
    /// The periods of the block (one per slot, or one per block for `daily`).
    periods: Vec<String>,
    /// The indices into `periods` whose values may leave.
    released: Range<usize>,
}

/// What the checks before the circuit found for one meter.
enum Checked {
    /// Passed: the candidate (index unset) and its lane.
    Passed(Candidate, InputLane),
    /// An exact retry of a released `daily` home-day: the period, its stored copy, the lane.
    Retry(String, DailyCopy, InputLane),
    /// Refused, with the reason.
    Refused(String),
}

fn request_kind(kind: &str) -> RequestKind {
    RequestKind::try_new(kind.to_owned()).unwrap_or(RequestKind::ANOMALY)
}

/// SHA-256 over the meter's inputs (the audit entry's input digest).
fn inputs_digest(inputs: &[Vec<u8>]) -> InputDigest {
    let mut hasher = sha2::Sha256::new();
    for input in inputs {
        hasher.update(blake3::hash(input).as_bytes());
    }
    InputDigest(hasher.finalize().into())
}

fn period_range<'a>(mut periods: impl Iterator<Item = &'a String>) -> Option<String> {
    let first = periods.next()?;
    Some(format!("{first}..{}", periods.last().unwrap_or(first)))
}

impl AnalyticsReleaser {
    /// A releaser over `audit`'s database with `engine`.
    #[must_use]
    pub fn new(audit: Arc<AuditLog>, engine: Arc<DeepEngine>) -> Self {
        Self {
            store: AnalyticsStore::new(&audit),
            audit,
            engine,
            daily_home_forecasts: true,
        }
    }

    /// Whether granted `daily` forecasts leave per home
    /// ([`super::AnalyticsSettings::daily_release_home_forecasts`]; `true` by default). Off:
    /// the outcomes carry no forecast hours (the anomaly part still leaves); the hours are
    /// stored for the group's aggregate only.
    #[must_use]
    pub fn with_daily_home_forecasts(mut self, release: bool) -> Self {
        self.daily_home_forecasts = release;
        self
    }

    /// The group-forecast aggregate over the same database and registry
    /// (`Analytics.ReleaseGroupForecast`).
    #[must_use]
    pub fn group_forecasts(&self) -> GroupForecastReleaser {
        GroupForecastReleaser::new(Arc::clone(&self.audit), Arc::clone(&self.engine))
    }

    /// The receipts store.
    #[must_use]
    pub fn store(&self) -> &AnalyticsStore {
        &self.store
    }

    /// Records the refusal of a whole request (one audit entry).
    ///
    /// # Errors
    /// [`ReleaseError::Audit`] when the log cannot be written.
    pub async fn refuse_request(
        &self,
        caller: Option<&Caller>,
        kind: &str,
        meters: &[String],
        reason: &str,
    ) -> Result<AuditEntry, ReleaseError> {
        let scope = format!("request for {} meters", meters.len());
        let mut entry = NewEntry::request_refused(request_kind(kind), reason, &scope, caller);
        if let [meter] = meters {
            entry = entry.meter(meter.clone());
        }
        Ok(self.audit.append(entry).await?)
    }

    /// Decides `request` for `caller` (authorized as a utility): checks, re-execution,
    /// comparison, decryption, audit entries and release records (one transaction), then the
    /// outcomes.
    ///
    /// # Errors
    /// [`ReleaseError::InvalidArgument`] / `FailedPrecondition` for a request refused as a
    /// whole (logged first); audit or database failures (nothing released).
    #[tracing::instrument(name = "release.analytics", skip_all, fields(
        subject = caller.subject(), kind = %request.kind, meters = request.meters.len()))]
    pub async fn release(
        &self,
        caller: &Caller,
        request: AnalyticsRequest,
    ) -> Result<AnalyticsDecisions, ReleaseError> {
        let names: Vec<String> = request.meters.iter().map(|m| m.meter_id.clone()).collect();
        let refuse_all = |error: ReleaseError| async {
            self.refuse_request(Some(caller), &request.kind, &names, &error.to_string())
                .await?;
            Err::<AnalyticsDecisions, _>(error)
        };
        let Some(computation) = self
            .engine
            .computation(&request.kind, &request.model_blake3)
        else {
            return refuse_all(ReleaseError::FailedPrecondition(format!(
                "no registered {:?} computation for model {:?}",
                request.kind.chars().take(32).collect::<String>(),
                request.model_blake3.chars().take(64).collect::<String>()
            )))
            .await;
        };
        let max_meters = computation.max_meters().min(MAX_METERS_PER_REQUEST);
        if request.meters.is_empty() || request.meters.len() > max_meters {
            return refuse_all(ReleaseError::InvalidArgument(format!(
                "a {} request names 1 to {max_meters} meters, not {}",
                computation.kind(),
                request.meters.len()
            )))
            .await;
        }
        let kind = RequestKind::from(computation.kind());

        // Checks before the circuit (receipts, lanes, digests, blocks, periods); nothing is
        // decrypted here or anywhere but the key authority's own outputs.
        let mut refusals: Vec<Option<String>> = vec![None; request.meters.len()];
        let mut lanes: Vec<Option<InputLane>> = vec![None; request.meters.len()];
        let mut candidates: Vec<Candidate> = Vec::new();
        let mut retries: Vec<Option<(String, DailyCopy)>> = vec![None; request.meters.len()];
        let mut seen = HashSet::new();
        for (index, meter) in request.meters.iter().enumerate() {
            match self
                .check_meter(
                    computation.as_ref(),
                    &request.model_blake3,
                    meter,
                    &mut seen,
                    &candidates,
                )
                .await?
            {
                Checked::Passed(candidate, lane) => {
                    lanes[index] = Some(lane);
                    candidates.push(Candidate { index, ..candidate });
                }
                Checked::Retry(period, copy, lane) => {
                    lanes[index] = Some(lane);
                    retries[index] = Some((period, copy));
                }
                Checked::Refused(reason) => refusals[index] = Some(reason),
            }
        }
        // An exact retry of a `daily` release whose answer was lost: answered from the copies.
        if retries.iter().any(Option::is_some) {
            let flag_threshold = computation.flag_threshold();
            return self
                .answer_retries(caller, &request, &kind, retries, refusals, lanes)
                .await
                .map(|outcomes| AnalyticsDecisions {
                    result_verified: outcomes.iter().all(|o| o.decision.is_ok()),
                    outcomes,
                    flag_threshold,
                });
        }

        // Parsing, re-execution over every meter (isolated inside the circuit), comparison,
        // decryption of the key authority's own outputs: off the runtime, and only when every
        // meter passed, so that the utility's result is always compared with a re-execution
        // over exactly the inputs it sent.
        let mut granted: Vec<Option<Vec<(usize, Released)>>> = vec![None; request.meters.len()];
        let mut result_verified = false;
        if refusals.iter().all(Option::is_none) {
            let engine = Arc::clone(&self.engine);
            let computation = Arc::clone(&computation);
            let inputs: Vec<(Vec<Vec<u8>>, MeterBlock)> = candidates
                .iter()
                .map(|c| (request.meters[c.index].inputs.clone(), c.meter))
                .collect();
            let result = request.result.clone();
            let span = tracing::info_span!("release.analytics.circuit", meters = inputs.len());
            type Decided =
                Result<(Vec<Result<Vec<(usize, Released)>, String>>, bool), Vec<Option<String>>>;
            let decided: Result<Decided, String> = tokio::task::spawn_blocking(move || {
                span.in_scope(|| {
                    let mut parsed = Vec::with_capacity(inputs.len());
                    let mut failures = Vec::with_capacity(inputs.len());
                    for (bytes, meter) in inputs {
                        match engine.check_inputs(computation.as_ref(), &bytes) {
                            Ok(cts) => {
                                parsed.push((cts, meter));
                                failures.push(None);
                            }
                            Err(reason) => failures.push(Some(reason)),
                        }
                    }
                    if failures.iter().any(Option::is_some) {
                        return Ok(Err(failures));
                    }
                    let decision = engine.decide(computation.as_ref(), &parsed, &result)?;
                    Ok(Ok((decision.meters, decision.result_verified)))
                })
            })
            .await
            .map_err(|e| ReleaseError::Engine(format!("analytics task: {e}")))?;
            match decided {
                Ok(Ok((meters, verified))) => {
                    result_verified = verified;
                    for (c, outcome) in candidates.iter().zip(meters) {
                        match outcome {
                            Ok(days) => granted[c.index] = Some(days),
                            Err(reason) => refusals[c.index] = Some(reason),
                        }
                    }
                }
                Ok(Err(failures)) => {
                    for (c, failure) in candidates.iter().zip(failures) {
                        refusals[c.index] = failure;
                    }
                }
                Err(error) => {
                    tracing::error!(%error, "analytics circuit failed");
                    for c in &candidates {
                        refusals[c.index] = Some("the registered computation failed".into());
                    }
                }
            }
        }
        let refused_meters: Vec<&str> = request
            .meters
            .iter()
            .zip(&refusals)
            .filter(|(_, r)| r.is_some())
            .map(|(m, _)| m.meter_id.as_str())
            .collect();
        let mut withheld = vec![false; request.meters.len()];
        if !refused_meters.is_empty() && !result_verified {
            let named = refused_meters.join(", ");
            for (index, refusal) in refusals.iter_mut().enumerate() {
                if refusal.is_none() {
                    withheld[index] = true;
                    *refusal = Some(format!(
                        "withheld: the request holds refused inputs (meters {named}), so nothing \
                         of it is evaluated or released; resubmit without them"
                    ));
                }
            }
        }

        // Decisions: audit entries and release rows, one transaction, before answering.
        let mut tx = self.audit.begin_append().await?;
        let mut outcomes = Vec::with_capacity(request.meters.len());
        for (index, meter) in request.meters.iter().enumerate() {
            let candidate = candidates.iter().find(|c| c.index == index);
            let mut decision: Result<Vec<ReleasedPeriod>, String> =
                match (&refusals[index], granted[index].take(), candidate) {
                    (Some(reason), _, _) => Err(reason.clone()),
                    (None, Some(values), Some(c)) => Ok(values
                        .into_iter()
                        .filter(|(position, _)| c.released.contains(position))
                        .map(|(position, release)| ReleasedPeriod {
                            period: c.periods[position].clone(),
                            release,
                        })
                        .collect()),
                    _ => Err("nothing was computed for this meter".into()),
                };
            if let Ok(released) = &decision {
                let periods: Vec<String> = released.iter().map(|d| d.period.clone()).collect();
                if let Some((period, seq)) =
                    store::first_released(tx.connection(), kind.as_str(), &meter.meter_id, &periods)
                        .await?
                {
                    // Released meanwhile by a concurrent request (another worker, possibly
                    // through another key authority of the pool): an exact `daily` retry of it
                    // is answered from the stored copy, as if it had come after.
                    let copy = if kind == RequestKind::DAILY {
                        retry::exact_copy(
                            tx.connection(),
                            RetryKey {
                                meter_id: &meter.meter_id,
                                period: &period,
                                input_id: &meter.input_id,
                                model_blake3: &request.model_blake3,
                                input_digest: &inputs_digest(&meter.inputs),
                            },
                        )
                        .await?
                    } else {
                        None
                    };
                    if let Some(copy) = copy {
                        tx.append(
                            NewEntry::new(retry::retry_kind(), Decision::Granted)
                                .caller(caller)
                                .meter(meter.meter_id.clone())
                                .period(format!("{period}..{period}"))
                                .input(inputs_digest(&meter.inputs)),
                        )
                        .await?;
                        outcomes.push(AnalyticsOutcome {
                            meter_id: meter.meter_id.clone(),
                            decision: Ok(vec![ReleasedPeriod {
                                period,
                                release: Released::Daily(copy.released),
                            }]),
                            audit_sequence: copy.audit_sequence,
                            lane: lanes[index],
                            withheld: false,
                        });
                        continue;
                    }
                    decision = Err(format!(
                        "the {kind} of meter {} for {period} was already released (audit entry \
                         {seq})",
                        meter.meter_id
                    ));
                } else if released.is_empty() {
                    decision = Err("the block holds no releasable period".into());
                }
            }
            let period = match &decision {
                Ok(released) => period_range(released.iter().map(|d| &d.period)),
                Err(_) => {
                    candidate.and_then(|c| period_range(c.periods[c.released.clone()].iter()))
                }
            };
            let mut entry = NewEntry::new(
                kind.clone(),
                match &decision {
                    Ok(_) => Decision::Granted,
                    Err(reason) => Decision::refused(reason.clone()),
                },
            )
            .caller(caller)
            .meter(meter.meter_id.clone())
            .input(inputs_digest(&meter.inputs));
            if let Some(period) = period {
                entry = entry.period(period);
            }
            let entry = tx.append(entry).await?;
            if let Ok(released) = &decision {
                for d in released {
                    store::insert_release(
                        tx.connection(),
                        &ReleaseRow {
                            kind: kind.as_str(),
                            meter_id: &meter.meter_id,
                            period: &d.period,
                            input_id: &meter.input_id,
                            model_blake3: &request.model_blake3,
                            value: d.release.value(),
                            flagged: d.release.flagged(),
                            audit_sequence: entry.sequence,
                        },
                    )
                    .await?;
                    if let Released::Daily(daily) = &d.release {
                        retry::store_copy(
                            tx.connection(),
                            RetryKey {
                                meter_id: &meter.meter_id,
                                period: &d.period,
                                input_id: &meter.input_id,
                                model_blake3: &request.model_blake3,
                                input_digest: &inputs_digest(&meter.inputs),
                            },
                            daily,
                            entry.sequence,
                        )
                        .await?;
                        self.record_home_forecast(
                            tx.connection(),
                            meter,
                            &request.model_blake3,
                            &daily.release,
                            entry.sequence,
                        )
                        .await?;
                    }
                }
            }
            outcomes.push(AnalyticsOutcome {
                meter_id: meter.meter_id.clone(),
                decision,
                audit_sequence: entry.sequence,
                lane: lanes[index],
                withheld: withheld[index],
            });
        }
        tx.commit()
            .instrument(tracing::debug_span!("release.commit"))
            .await?;
        self.strip_home_forecasts(&mut outcomes);
        let granted = outcomes.iter().filter(|o| o.decision.is_ok()).count();
        tracing::info!(
            granted,
            refused = outcomes.len() - granted,
            result_verified,
            "analytics decided"
        );
        Ok(AnalyticsDecisions {
            outcomes,
            result_verified,
            flag_threshold: computation.flag_threshold(),
        })
    }

    /// Without `analytics.daily_release_home_forecasts`, a `daily` answer carries no home
    /// forecast (it is kept only for the group's aggregate).
    fn strip_home_forecasts(&self, outcomes: &mut [AnalyticsOutcome]) {
        if self.daily_home_forecasts {
            return;
        }
        for released in outcomes.iter_mut().filter_map(|o| o.decision.as_mut().ok()) {
            for d in released.iter_mut() {
                if let Released::Daily(daily) = &mut d.release {
                    daily.release.forecast = None;
                }
            }
        }
    }

    /// Answers a request holding exact retries (see [`super::retry`]): each retried meter
    /// from its stored copy (a `daily.retry` entry; the outcome names the granting entry),
    /// nothing evaluated or decrypted. The request's other meters are refused (as checked) or
    /// withheld: the utility resubmits them without the retried ones.
    async fn answer_retries(
        &self,
        caller: &Caller,
        request: &AnalyticsRequest,
        kind: &RequestKind,
        retries: Vec<Option<(String, DailyCopy)>>,
        refusals: Vec<Option<String>>,
        lanes: Vec<Option<InputLane>>,
    ) -> Result<Vec<AnalyticsOutcome>, ReleaseError> {
        let retried: Vec<&str> = request
            .meters
            .iter()
            .zip(&retries)
            .filter(|(_, r)| r.is_some())
            .map(|(m, _)| m.meter_id.as_str())
            .collect();
        let named = retried.join(", ");
        let mut tx = self.audit.begin_append().await?;
        let mut outcomes = Vec::with_capacity(request.meters.len());
        for (((meter, retry), refusal), lane) in
            request.meters.iter().zip(retries).zip(refusals).zip(lanes)
        {
            let digest = inputs_digest(&meter.inputs);
            let outcome = match (retry, refusal) {
                (Some((period, copy)), _) => {
                    tx.append(
                        NewEntry::new(retry::retry_kind(), Decision::Granted)
                            .caller(caller)
                            .meter(meter.meter_id.clone())
                            .period(format!("{period}..{period}"))
                            .input(digest),
                    )
                    .await?;
                    AnalyticsOutcome {
                        meter_id: meter.meter_id.clone(),
                        decision: Ok(vec![ReleasedPeriod {
                            period,
                            release: Released::Daily(copy.released),
                        }]),
                        audit_sequence: copy.audit_sequence,
                        lane,
                        withheld: false,
                    }
                }
                (None, refusal) => {
                    let withheld = refusal.is_none();
                    let reason = refusal.unwrap_or_else(|| {
                        format!(
                            "withheld: the request mixes retried meters ({named}) with new \
                             ones, so nothing new of it is evaluated or released; resubmit \
                             without them"
                        )
                    });
                    let entry = tx
                        .append(
                            NewEntry::new(kind.clone(), Decision::refused(reason.clone()))
                                .caller(caller)
                                .meter(meter.meter_id.clone())
                                .input(digest),
                        )
                        .await?;
                    AnalyticsOutcome {
                        meter_id: meter.meter_id.clone(),
                        decision: Err(reason),
                        audit_sequence: entry.sequence,
                        lane,
                        withheld,
                    }
                }
            };
            outcomes.push(outcome);
        }
        tx.commit().await?;
        self.strip_home_forecasts(&mut outcomes);
        tracing::info!(
            retried = retried.len(),
            others = outcomes.len() - retried.len(),
            "daily retries answered from the stored releases"
        );
        Ok(outcomes)
    }

    /// Stores a granted `daily` meter-day's forecast for its group's aggregate (in the release
    /// transaction), under the group the meter signed in the receipt the release bound.
    async fn record_home_forecast(
        &self,
        conn: &mut sqlx::AnyConnection,
        meter: &AnalyticsMeterInput,
        model_blake3: &str,
        release: &seer_daily::release::DailyRelease,
        audit_sequence: u64,
    ) -> Result<(), ReleaseError> {
        let Some(hours) = release.forecast.as_deref() else {
            return Ok(());
        };
        let (Some(hours), Some(day)) = (group_forecast::to_milli(hours), release.day.succ_opt())
        else {
            return Err(ReleaseError::Engine(format!(
                "the daily forecast of meter {} is not 24 finite hours",
                meter.meter_id
            )));
        };
        let Some(group) =
            group_forecast::receipt_group(&mut *conn, &meter.meter_id, &meter.input_id).await?
        else {
            // A bound receipt always has its group; nothing to aggregate otherwise.
            tracing::warn!(meter_id = %meter.meter_id, "daily receipt without a group");
            return Ok(());
        };
        group_forecast::record_home(
            conn,
            &HomeForecast {
                meter_id: &meter.meter_id,
                day,
                group,
                model_blake3,
                hours,
                audit_sequence,
            },
        )
        .await
    }

    /// The checks before decryption for one meter: `Ok` with its candidate (index unset) and
    /// lane, or the refusal reason.
    async fn check_meter<'r>(
        &self,
        computation: &dyn Computation,
        model_blake3: &str,
        meter: &'r AnalyticsMeterInput,
        seen: &mut HashSet<&'r str>,
        accepted: &[Candidate],
    ) -> Result<Checked, ReleaseError> {
        Ok(
            match self
                .check_meter_inner(computation, model_blake3, meter, seen, accepted)
                .await?
            {
                Ok(Ok((candidate, lane))) => Checked::Passed(candidate, lane),
                Ok(Err((period, copy, lane))) => Checked::Retry(period, copy, lane),
                Err(reason) => Checked::Refused(reason),
            },
        )
    }

    /// The checks of [`check_meter`](Self::check_meter): `Ok(Ok(..))` passed,
    /// `Ok(Err(..))` an exact `daily` retry, `Err(reason)` refused.
    async fn check_meter_inner<'r>(
        &self,
        computation: &dyn Computation,
        model_blake3: &str,
        meter: &'r AnalyticsMeterInput,
        seen: &mut HashSet<&'r str>,
        accepted: &[Candidate],
    ) -> Result<
        Result<Result<(Candidate, InputLane), (String, DailyCopy, InputLane)>, String>,
        ReleaseError,
    > {
        let id = meter.meter_id.as_str();
        if let Err(reason) = validate_meter_id(id) {
            return Ok(Err(format!("invalid meter id: {reason}")));
        }
        if !seen.insert(id) {
            return Ok(Err(format!(
                "meter {id} appears more than once in the request"
            )));
        }
        let kind = computation.kind();
        // The row counts only as the audit chain recorded it (see `bound_receipt`): a row
        // inserted or altered in the database outside the key authority releases nothing.
        let receipt = match self
            .store
            .bound_receipt(kind.as_str(), id, &meter.input_id)
            .await?
        {
            Ok(receipt) => receipt,
            Err(reason) => return Ok(Err(reason)),
        };
        if let Err(reason) = computation.check_lane(&receipt.lane) {
            return Ok(Err(reason.into()));
        }
        let n = computation.inputs_per_meter();
        if meter.inputs.len() != n || receipt.input_digests.len() != n {
            return Ok(Err(format!(
                "{} inputs sent and {} in the receipt; the computation takes {n}",
                meter.inputs.len(),
                receipt.input_digests.len()
            )));
        }
        if let Some(k) = meter
            .inputs
            .iter()
            .zip(&receipt.input_digests)
            .position(|(input, digest)| blake3::hash(input).as_bytes() != digest)
        {
            return Ok(Err(format!(
                "input {k} does not match the receipt (BLAKE3 differs)"
            )));
        }
        let block = receipt.block;
        let slots = self
            .engine
            .kind_slots()
            .get(kind.as_str())
            .copied()
            .unwrap_or(0);
        if block.end() > slots {
            return Ok(Err(format!(
                "the block {}..{} does not fit the {slots} slots",
                block.offset,
                block.end(),
            )));
        }
        if let Err(reason) = computation.check_block(&block) {
            return Ok(Err(reason.into()));
        }
        if let Some(other) = accepted.iter().find(|c| c.meter.block.overlaps(&block)) {
            return Ok(Err(format!(
                "the block {}..{} overlaps the block of meter {} in this request",
                block.offset,
                block.end(),
                other.index
            )));
        }
        let meter_block = MeterBlock {
            block,
            first_period: receipt.first_period,
        };
        let periods = computation.periods(&receipt.lane, &meter_block, receipt.slot_period);
        if periods.released.is_empty() || periods.released.end > periods.periods.len() {
            return Ok(Err(format!(
                "the block {}..{} holds no releasable period",
                block.offset,
                block.end()
            )));
        }
        if let Some((period, seq)) = self
            .store
            .first_released(
                kind.as_str(),
                id,
                &periods.periods[periods.released.clone()],
            )
            .await?
        {
            // An exact retry of a released `daily` home-day is answered from its copy.
            if kind == seer_core::registered::ComputationKind::Daily {
                let mut conn = self.audit.pool().acquire().await?;
                if let Some(copy) = retry::exact_copy(
                    &mut conn,
                    RetryKey {
                        meter_id: id,
                        period: &period,
                        input_id: &meter.input_id,
                        model_blake3,
                        input_digest: &inputs_digest(&meter.inputs),
                    },
                )
                .await?
                {
                    return Ok(Ok(Err((period, copy, receipt.lane))));
                }
            }
            return Ok(Err(format!(
                "the {kind} of meter {id} for {period} was already released (audit entry {seq})"
            )));
        }
        Ok(Ok(Ok((
            Candidate {
                index: 0,
                meter: meter_block,
                periods: periods.periods,
                released: periods.released,
            },
            receipt.lane,
        ))))
    }
}
