//! Jobs and workers: the utility's scheduled work as rows of a job table in its database,
//! claimed by any number of `utility-server worker` processes with leases.
//!
//! - **Scheduling** ([`schedule_period`], [`schedule_daily`], [`schedule_due`]; the command
//!   `utility-server schedule`): a billing job per (period, packing group) with batches in the
//!   period, at month close; a daily job per (day, evaluation group, model) with pending daily
//!   inputs. A job's key names its work, so scheduling again creates nothing; a billing job
//!   that finished while homes of its group were still unbilled (a late meter) is reopened.
//! - **Workers** ([`run_worker`]; `utility-server worker`): claim the oldest claimable job
//!   ([`Store::claim_job`]: `FOR UPDATE SKIP LOCKED` on PostgreSQL), renew its lease every
//!   third of the lease while working, and end the attempt as done (with a JSON summary) or
//!   failed (pending again after an exponential back-off, failed for good after the last
//!   attempt). A worker that dies stops renewing: once its lease expires, another worker
//!   claims the job and runs it again. A worker that finds its lease gone (it stalled past
//!   the lease and another took over) abandons the job at once.
//! - **Why a rerun is safe**: the billing job of a retried attempt leaves out the homes whose
//!   bill is already stored, and the key authority releases each (bill, meter, period) once
//!   across its pool, answering a repeated request for a released bill from its releases
//!   (`already_released`, then `bill.retry`) — so a bill released to a dead worker is stored by
//!   the next, exactly as first released. Daily inputs stay `pending` until their release is
//!   stored; the key authority answers an exact repeat from what it released.
//! - **Key authorities**: a worker knows every key authority of the pool; jobs start at a
//!   member chosen by their key (so they spread over the pool), each further attempt at the
//!   next one ([`first_key_authority`]), and an attempt moves on when a member cannot be
//!   reached, so a key authority that is down costs one connection timeout, not the job.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use chrono::NaiveDate;
use serde::Serialize;
use tracing::Instrument as _;

use crate::batch::Period;
use crate::billing;
use crate::daily::{self, DailyJob};
use crate::key_authority::JobError;
use crate::lanes::LaneValidator;
use crate::store::{
    AttemptEnd, Claimed, JobKind, JobRow, JobSpec, JobState, Scheduled, Store, StoreError,
};

/// Attempts a scheduled job gets before it fails (a killed worker's attempt counts).
pub const DEFAULT_MAX_ATTEMPTS: u32 = 8;

/// What a scheduling run did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ScheduleReport {
    /// Jobs created.
    pub created: Vec<String>,
    /// Finished jobs made pending again (homes still unbilled).
    pub reopened: Vec<String>,
    /// Jobs that existed already and were left alone.
    pub existing: usize,
}

impl ScheduleReport {
    fn note(&mut self, key: String, outcome: Scheduled) {
        match outcome {
            Scheduled::Created => self.created.push(key),
            Scheduled::Reopened => self.reopened.push(key),
            Scheduled::Existing => self.existing += 1,
        }
    }
}

/// Schedules the billing jobs of `period`: one per packing group with batches in it. A done
/// or failed job of a group that still has unbilled homes is reopened.
///
/// # Errors
/// When the store fails.
pub async fn schedule_period(
    store: &Store,
    period: Period,
    max_attempts: u32,
) -> Result<ScheduleReport, StoreError> {
    let mut report = ScheduleReport::default();
    for group in store.period_billing_groups(period).await? {
        let spec = JobSpec::bill(period, group);
        let reopen = store.unbilled_meters(period, group).await? > 0;
        let outcome = store.schedule_job(&spec, max_attempts, reopen).await?;
        report.note(spec.key(), outcome);
    }
    Ok(report)
}

/// Schedules the daily jobs of the model whose BLAKE3 is `model_blake3`: one per (day,
/// evaluation group) with pending inputs (of `day` only, when given). A finished job whose
/// (day, group) has pending inputs again (uploads that came after it ran) is reopened.
///
/// # Errors
/// When the store fails or a stored day is not a date.
pub async fn schedule_daily(
    store: &Store,
    model_blake3: &str,
    day: Option<NaiveDate>,
    max_attempts: u32,
) -> Result<ScheduleReport, StoreError> {
    let mut report = ScheduleReport::default();
    for (input_day, group) in store.pending_daily_groups(model_blake3).await? {
        let parsed: NaiveDate = input_day.parse().map_err(|_| StoreError::Corrupt {
            table: "analytics_inputs",
            reason: format!("day {input_day:?}"),
        })?;
        if day.is_some_and(|d| d != parsed) {
            continue;
        }
        let spec = JobSpec::daily(parsed, group, model_blake3);
        let outcome = store.schedule_job(&spec, max_attempts, true).await?;
        report.note(spec.key(), outcome);
    }
    Ok(report)
}

/// Schedules everything due at `today`: the billing jobs of every period that has ended
/// (its last day before `today`) and has batches — reopening groups with unbilled homes —,
/// and the daily jobs of every model in `daily_models` (BLAKE3 hex) with pending inputs.
///
/// # Errors
/// When the store fails.
pub async fn schedule_due(
    store: &Store,
    today: NaiveDate,
    daily_models: &[String],
    max_attempts: u32,
) -> Result<ScheduleReport, StoreError> {
    let mut report = ScheduleReport::default();
    let mut periods = store.unscheduled_periods().await?;
    // Periods already scheduled may have groups that gained homes since.
    for job in store.jobs(None).await? {
        if job.spec.kind == JobKind::Bill
            && let Ok(period) = job.spec.period.parse::<Period>()
            && !periods.contains(&period)
        {
            periods.push(period);
        }
    }
    periods.sort();
    for period in periods {
        if period.end_day() > today {
            continue;
        }
        let part = schedule_period(store, period, max_attempts).await?;
        report.created.extend(part.created);
        report.reopened.extend(part.reopened);
        report.existing += part.existing;
    }
    for model in daily_models {
        let part = schedule_daily(store, model, None, max_attempts).await?;
        report.created.extend(part.created);
        report.reopened.extend(part.reopened);
        report.existing += part.existing;
    }
    Ok(report)
}

/// A daily model a worker can run: its file and the BLAKE3 that names it.
#[derive(Clone, Debug)]
pub struct WorkerModel {
    /// The model file.
    pub path: PathBuf,
    /// BLAKE3 (hex) of its bytes.
    pub blake3: String,
}

impl WorkerModel {
    /// Reads the model file at `path` and names it by its digest.
    ///
    /// # Errors
    /// When the file cannot be read.
    pub fn load(path: PathBuf) -> std::io::Result<Self> {
        let bytes = std::fs::read(&path)?;
        Ok(Self {
            blake3: crate::analytics::model_digest(&bytes),
            path,
        })
    }
}

/// What a worker needs besides the store.
#[derive(Clone)]
pub struct WorkerConfig {
    /// The worker's name in leases and attempts (unique per process: e.g. host and pid).
    pub name: String,
    /// Every key authority of the pool (at least one).
    pub key_authorities: Vec<String>,
    /// The utility's token for the key authorities.
    pub token: String,
    /// How long a claim holds without renewal; renewed every third of it.
    pub lease: Duration,
    /// How long an idle worker waits before looking for work again.
    pub poll: Duration,
    /// Stop when no job is claimable (instead of waiting for more).
    pub exit_when_idle: bool,
    /// Attempts after which a failing job's back-off stops growing (seconds double from 1).
    pub max_backoff: Duration,
    /// The daily models this worker runs (daily jobs of other models are left to others).
    pub daily_models: Vec<WorkerModel>,
    /// Where the daily job keeps the key authority's Galois keys.
    pub key_cache: PathBuf,
}

impl std::fmt::Debug for WorkerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerConfig")
            .field("name", &self.name)
            .field("key_authorities", &self.key_authorities)
            .field("token", &"[REDACTED]")
            .field("lease", &self.lease)
            .field("poll", &self.poll)
            .field("exit_when_idle", &self.exit_when_idle)
            .field("daily_models", &self.daily_models)
            .field("key_cache", &self.key_cache)
            .finish()
    }
}

/// How one attempt ended, as a worker reports it.
#[derive(Clone, Debug, Serialize)]
pub struct AttemptReport {
    /// The job.
    pub job: String,
    /// The attempt's number.
    pub attempt: u64,
    /// `done`, `retry`, `failed`, or `lease-lost` (another worker took the job over).
    pub outcome: &'static str,
    /// The job's summary (done) or the error (otherwise).
    pub detail: serde_json::Value,
    /// Wall-clock time of the attempt, ms.
    pub ms: f64,
}

/// What a worker did before it stopped.
#[derive(Clone, Debug, Default, Serialize)]
pub struct WorkerReport {
    /// Attempts run.
    pub attempts: usize,
    /// Jobs finished.
    pub done: usize,
    /// Attempts that failed.
    pub failed: usize,
    /// Attempts abandoned because the lease was lost.
    pub lease_lost: usize,
}

/// Runs a worker until `shutdown` resolves (between jobs, or at once while idle; a job in
/// progress is abandoned and its lease left to expire) or, with
/// [`WorkerConfig::exit_when_idle`], until nothing is claimable. `on_attempt` is told of
/// every attempt as it ends.
///
/// # Errors
/// When the store fails (claiming, renewing, finishing); a failing job is not an error of
/// the worker (it is retried, then fails).
pub async fn run_worker(
    store: &Store,
    lanes: &LaneValidator,
    config: &WorkerConfig,
    shutdown: impl Future<Output = ()>,
    on_attempt: impl Fn(&AttemptReport),
) -> Result<WorkerReport, StoreError> {
    let models: Vec<String> = config
        .daily_models
        .iter()
        .map(|m| m.blake3.clone())
        .collect();
    let mut report = WorkerReport::default();
    tokio::pin!(shutdown);
    loop {
        let claimed = tokio::select! {
            () = &mut shutdown => break,
            claimed = store.claim_job(&config.name, config.lease, &models) => claimed?,
        };
        let Some(claimed) = claimed else {
            if config.exit_when_idle {
                break;
            }
            tokio::select! {
                () = &mut shutdown => break,
                () = tokio::time::sleep(config.poll) => continue,
            }
        };
        let span = tracing::info_span!(
            "job",
            key = %claimed.job.key,
            attempt = claimed.job.attempts,
            worker = %config.name
        );
        let attempt = tokio::select! {
            () = &mut shutdown => {
                tracing::info!(job = %claimed.job.key, "stopping: the job's lease is left to expire");
                break;
            }
            attempt = run_attempt(store, lanes, config, &claimed).instrument(span) => attempt?,
        };
        report.attempts += 1;
        match attempt.outcome {
            "done" => report.done += 1,
            "lease-lost" => report.lease_lost += 1,
            _ => report.failed += 1,
        }
        on_attempt(&attempt);
    }
    Ok(report)
}

/// Runs one claimed attempt with its lease renewed alongside; ends it in the store.
async fn run_attempt(
    store: &Store,
    lanes: &LaneValidator,
    config: &WorkerConfig,
    claimed: &Claimed,
) -> Result<AttemptReport, StoreError> {
    let started = std::time::Instant::now();
    tracing::info!("job claimed");
    let renew = async {
        loop {
            tokio::time::sleep(config.lease / 3).await;
            match store.renew_lease(claimed, config.lease).await {
                Ok(true) => {}
                Ok(false) => return Ok(()),
                Err(error) => {
                    // The database is unreachable: the lease cannot be kept, so stop work
                    // that another worker may be about to take over.
                    return Err(error);
                }
            }
        }
    };
    let outcome = tokio::select! {
        result = run_job(store, lanes, config, &claimed.job) => Some(result),
        renewal = renew => {
            if let Err(error) = renewal {
                tracing::warn!(%error, "the lease could not be renewed: abandoning the job");
                return Err(error);
            }
            None
        }
    };
    let ms = started.elapsed().as_secs_f64() * 1e3;
    let mut attempt = AttemptReport {
        job: claimed.job.key.clone(),
        attempt: claimed.job.attempts,
        outcome: "lease-lost",
        detail: serde_json::Value::Null,
        ms,
    };
    let Some(result) = outcome else {
        tracing::warn!("the lease was taken over: abandoning the job");
        return Ok(attempt);
    };
    let end = match result {
        Ok(summary) => AttemptEnd::Done { result: summary },
        Err(error) => {
            let backoff = backoff(claimed.job.attempts, config.max_backoff);
            tracing::warn!(error = %format!("{error:#}"), ?backoff, "job attempt failed");
            AttemptEnd::Failed {
                error: error.to_string(),
                backoff,
            }
        }
    };
    match store.finish_attempt(claimed, &end).await? {
        None => {
            tracing::warn!("the lease was taken over before the attempt ended");
        }
        Some(state) => {
            attempt.outcome = match (&end, state) {
                (AttemptEnd::Done { .. }, _) => "done",
                (_, JobState::Failed) => "failed",
                _ => "retry",
            };
            attempt.detail = match end {
                AttemptEnd::Done { result } => result,
                AttemptEnd::Failed { error, .. } => serde_json::Value::String(error),
            };
            tracing::info!(outcome = attempt.outcome, ms, "job attempt ended");
        }
    }
    Ok(attempt)
}

/// The back-off after failed attempt `attempt`: 1 s, 2 s, 4 s, … up to `max`.
fn backoff(attempt: u64, max: Duration) -> Duration {
    let exponent = u32::try_from(attempt.saturating_sub(1).min(16)).unwrap_or(16);
    Duration::from_secs(1u64 << exponent).min(max)
}

/// Whether `error` says the key authority could not be reached (another may be).
fn unreachable(error: &JobError) -> bool {
    match error {
        JobError::Connect { .. } => true,
        JobError::Release { code, .. } => matches!(
            code,
            tonic::Code::Unavailable | tonic::Code::Cancelled | tonic::Code::Unknown
        ),
        JobError::Keys(message) => message.contains("Unavailable") || message.contains("transport"),
        _ => false,
    }
}

/// The key authority (an index below `count`) attempt `attempt` of the job `key` starts at:
/// jobs spread over the pool by their key, and each further attempt moves to the next member.
#[must_use]
pub fn first_key_authority(key: &str, attempt: u64, count: usize) -> usize {
    let hash = blake3::hash(key.as_bytes());
    let mut first = [0_u8; 8];
    first.copy_from_slice(&hash.as_bytes()[..8]);
    let spread = u64::from_le_bytes(first).wrapping_add(attempt);
    usize::try_from(spread % u64::try_from(count.max(1)).unwrap_or(1)).unwrap_or(0)
}

/// Runs the work of `job` once, trying the key authorities in turn from
/// [`first_key_authority`].
async fn run_job(
    store: &Store,
    lanes: &LaneValidator,
    config: &WorkerConfig,
    job: &JobRow,
) -> Result<serde_json::Value, JobError> {
    let count = config.key_authorities.len().max(1);
    let first = first_key_authority(&job.key, job.attempts, count);
    let mut last_error = None;
    for offset in 0..count {
        let key_authority = &config.key_authorities[(first + offset) % count];
        match run_job_at(store, lanes, config, job, key_authority).await {
            Err(error) if unreachable(&error) && offset + 1 < count => {
                tracing::warn!(%key_authority, %error, "key authority unreachable: trying the next");
                last_error = Some(error);
            }
            other => return other,
        }
    }
    Err(last_error.unwrap_or_else(|| JobError::Release {
        code: tonic::Code::FailedPrecondition,
        message: "no key authority is configured".into(),
    }))
}

async fn run_job_at(
    store: &Store,
    lanes: &LaneValidator,
    config: &WorkerConfig,
    job: &JobRow,
    key_authority: &str,
) -> Result<serde_json::Value, JobError> {
    let to_json = |value: serde_json::Result<serde_json::Value>| {
        value.map_err(|e| JobError::Circuit(format!("the job's summary: {e}")))
    };
    match job.spec.kind {
        JobKind::Bill => {
            let period: Period = job.spec.period.parse().map_err(|_| {
                JobError::Circuit(format!("the job's period {:?}", job.spec.period))
            })?;
            let report = billing::bill_group_with(
                store,
                lanes,
                key_authority,
                &config.token,
                period,
                job.spec.group,
                true,
            )
            .await?;
            to_json(Ok(serde_json::json!({
                "key_authority": key_authority,
                "closing_homes": report.closing_homes,
                "already_stored": report.already_stored,
                "released": report.released.len(),
                "released_before": report.released_before,
                "refused": report.refused,
                "requests": report.requests,
                "result_verified": report.result_verified,
                "circuit_ms": report.circuit_time.as_secs_f64() * 1e3,
                "release_ms": report.release_time.as_secs_f64() * 1e3,
            })))
        }
        JobKind::Daily => {
            let model = job
                .spec
                .model_blake3
                .as_deref()
                .and_then(|digest| config.daily_models.iter().find(|m| m.blake3 == digest))
                .ok_or_else(|| {
                    JobError::Circuit("this worker does not hold the job's model".into())
                })?;
            let day: NaiveDate =
                job.spec.period.parse().map_err(|_| {
                    JobError::Circuit(format!("the job's day {:?}", job.spec.period))
                })?;
            let daily_job = DailyJob {
                model_path: model.path.clone(),
                key_authority: key_authority.to_owned(),
                token: config.token.clone(),
                day: Some(day),
                group: Some(job.spec.group),
                key_cache: config.key_cache.clone(),
            };
            let report = daily::run_pending(store, &daily_job).await?;
            let mut value = to_json(serde_json::to_value(&report))?;
            if let Some(object) = value.as_object_mut() {
                object.insert("key_authority".into(), key_authority.into());
            }
            Ok(value)
        }
    }
}

/// The job table as `utility-server jobs` prints it.
#[derive(Clone, Debug, Serialize)]
pub struct JobsView {
    /// Jobs per state.
    pub counts: BTreeMap<JobState, u64>,
    /// The jobs, oldest first, with their attempts.
    pub jobs: Vec<JobView>,
}

/// One job with its attempts.
#[derive(Clone, Debug, Serialize)]
pub struct JobView {
    /// The job.
    #[serde(flatten)]
    pub job: JobRow,
    /// Its attempts, in order (a `null` outcome on an attempt before the last: its worker
    /// died and the lease expired).
    pub history: Vec<crate::store::JobAttempt>,
}

/// Reads the job table (only the jobs in `state`, when given) with every job's attempts.
///
/// # Errors
/// When the store fails.
pub async fn view(store: &Store, state: Option<JobState>) -> Result<JobsView, StoreError> {
    let counts = store.job_counts().await?;
    let mut jobs = Vec::new();
    for job in store.jobs(state).await? {
        let history = store.job_attempts(&job.key).await?;
        jobs.push(JobView { job, history });
    }
    Ok(JobsView { counts, jobs })
}

/// A default worker name: the host name and the process id.
#[must_use]
pub fn default_worker_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "worker".into());
    format!("{host}:{}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let cap = Duration::from_secs(60);
        assert_eq!(backoff(1, cap), Duration::from_secs(1));
        assert_eq!(backoff(2, cap), Duration::from_secs(2));
        assert_eq!(backoff(5, cap), Duration::from_secs(16));
        assert_eq!(backoff(7, cap), Duration::from_secs(60));
        assert_eq!(backoff(u64::MAX, cap), Duration::from_secs(60));
    }

    #[test]
    fn jobs_spread_over_the_pool_and_retries_move_on() {
        let count = 3;
        let mut used = [0_usize; 3];
        for group in 0..30 {
            let key = format!("bill/2027-01/{group}");
            let first = first_key_authority(&key, 1, count);
            used[first] += 1;
            assert_eq!(first_key_authority(&key, 2, count), (first + 1) % count);
        }
        assert!(
            used.iter().all(|&n| n > 0),
            "every member gets jobs: {used:?}"
        );
        assert_eq!(first_key_authority("any", 7, 1), 0);
    }

    #[test]
    fn an_unreachable_key_authority_is_told_from_a_refusal() {
        assert!(unreachable(&JobError::Release {
            code: tonic::Code::Unavailable,
            message: "connection refused".into(),
        }));
        assert!(!unreachable(&JobError::Release {
            code: tonic::Code::PermissionDenied,
            message: "not a utility".into(),
        }));
        assert!(!unreachable(&JobError::Circuit("bad lane".into())));
    }
}
