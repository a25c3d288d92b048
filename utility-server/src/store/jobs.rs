//! The job table: scheduled work claimed by workers with leases (see [`crate::jobs`]).
//!
//! A job is a row of `jobs` named by what it does (`bill/2027-01/3`,
//! `daily/2027-01-05/3/MODEL`), so scheduling the same work twice creates nothing new.
//! Workers claim the oldest claimable job — pending and past its back-off, or running with an
//! expired lease (its worker died) — in one statement: on PostgreSQL the candidate row is
//! locked with `FOR UPDATE SKIP LOCKED`, so concurrent workers on other machines each take a
//! different job without waiting on one another; on SQLite the claim runs under the
//! database's write lock. Each claim bumps `attempts` and names its lease `WORKER#ATTEMPT`:
//! renewing, finishing or failing a job requires that very lease (a fencing token), so a
//! worker whose lease expired and was taken over can no longer change the job's state.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::Utc;
use serde::Serialize;
use sqlx::Row as _;
use sqlx::any::AnyRow;

use super::{Backend, Store, StoreError, from_db, query_error, to_db};
use crate::batch::Period;

/// What a job does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JobKind {
    /// Bill one packing group for one closed month.
    Bill,
    /// Release one evaluation group's daily lanes of one day under one model.
    Daily,
}

impl JobKind {
    /// The kind as stored.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Bill => "bill",
            Self::Daily => "daily",
        }
    }

    fn parse(text: &str) -> Result<Self, StoreError> {
        match text {
            "bill" => Ok(Self::Bill),
            "daily" => Ok(Self::Daily),
            other => Err(corrupt(format!("job kind {other:?}"))),
        }
    }
}

/// Where a job stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Waiting for a worker (possibly after a failed attempt, until its back-off ends).
    Pending,
    /// A worker holds its lease.
    Running,
    /// Finished.
    Done,
    /// Gave up after its last attempt (`utility-server jobs --retry KEY` makes it pending
    /// again).
    Failed,
}

impl JobState {
    /// The state as stored.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Running => "running",
            Self::Done => "done",
            Self::Failed => "failed",
        }
    }

    /// Every state, in lifecycle order.
    pub const ALL: [Self; 4] = [Self::Pending, Self::Running, Self::Done, Self::Failed];

    fn parse(text: &str) -> Result<Self, StoreError> {
        Self::ALL
            .into_iter()
            .find(|s| s.as_str() == text)
            .ok_or_else(|| corrupt(format!("job state {text:?}")))
    }
}

/// The work a job names.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct JobSpec {
    /// What it does.
    pub kind: JobKind,
    /// `YYYY-MM` (billing) or `YYYY-MM-DD` (daily: the day the meters prepared).
    pub period: String,
    /// The packing (billing) or evaluation (daily) group.
    pub group: u32,
    /// The daily model's BLAKE3 (hex); `None` for billing.
    pub model_blake3: Option<String>,
}

impl JobSpec {
    /// The billing job of `group` for `period`.
    #[must_use]
    pub fn bill(period: Period, group: u32) -> Self {
        Self {
            kind: JobKind::Bill,
            period: period.to_string(),
            group,
            model_blake3: None,
        }
    }

    /// The daily job of `group` for the inputs prepared on `day` under the model
    /// `model_blake3`.
    #[must_use]
    pub fn daily(day: chrono::NaiveDate, group: u32, model_blake3: &str) -> Self {
        Self {
            kind: JobKind::Daily,
            period: day.format("%Y-%m-%d").to_string(),
            group,
            model_blake3: Some(model_blake3.to_owned()),
        }
    }

    /// The job's key: its kind, period, group (and model).
    #[must_use]
    pub fn key(&self) -> String {
        match &self.model_blake3 {
            Some(model) => format!(
                "{}/{}/{}/{model}",
                self.kind.as_str(),
                self.period,
                self.group
            ),
            None => format!("{}/{}/{}", self.kind.as_str(), self.period, self.group),
        }
    }
}

/// A stored job.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct JobRow {
    /// Its key ([`JobSpec::key`]).
    pub key: String,
    /// The work.
    #[serde(flatten)]
    pub spec: JobSpec,
    /// Where it stands.
    pub state: JobState,
    /// Attempts started so far (a claim is an attempt, whether or not its worker lived).
    pub attempts: u64,
    /// Attempts allowed before the job fails.
    pub max_attempts: u64,
    /// Not claimed before this instant (µs since the epoch).
    pub not_before_us: i64,
    /// The lease holder (`WORKER#ATTEMPT`), while running or after its worker died.
    pub lease_owner: Option<String>,
    /// When the lease ends unless renewed (µs since the epoch).
    pub lease_expires_us: Option<i64>,
    /// When it was first scheduled (µs since the epoch).
    pub created_us: i64,
    /// Its last change (µs since the epoch).
    pub updated_us: i64,
    /// When it finished (µs since the epoch).
    pub finished_us: Option<i64>,
    /// The last failed attempt's error.
    pub last_error: Option<String>,
    /// The finished job's summary (JSON).
    pub result: Option<serde_json::Value>,
}

/// One attempt of a job.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct JobAttempt {
    /// The attempt's number (1-based).
    pub attempt: u64,
    /// The worker that claimed it.
    pub worker: String,
    /// When it was claimed (µs since the epoch).
    pub started_us: i64,
    /// When it ended (µs since the epoch); `None` while running, or when its worker died.
    pub finished_us: Option<i64>,
    /// `done`, `retry`, `failed`; `None` while running or when its worker died.
    pub outcome: Option<String>,
    /// The error of a failed attempt.
    pub detail: Option<String>,
}

/// A job this worker holds the lease of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claimed {
    /// The job as claimed (its `attempts` is this attempt's number).
    pub job: JobRow,
    /// The lease (`WORKER#ATTEMPT`): every later change of the job must present it.
    pub lease: String,
}

/// What [`Store::schedule_job`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheduled {
    /// A new job.
    Created,
    /// A finished (or failed) job was made pending again.
    Reopened,
    /// The job exists and was left as it is.
    Existing,
}

/// How an attempt ended.
#[derive(Clone, Debug, PartialEq)]
pub enum AttemptEnd {
    /// The job is done; `result` is its summary.
    Done {
        /// The summary (JSON).
        result: serde_json::Value,
    },
    /// The attempt failed: pending again after `backoff`, unless it was the last attempt
    /// (then failed).
    Failed {
        /// What went wrong.
        error: String,
        /// The back-off before the next attempt.
        backoff: Duration,
    },
}

const JOB_COLUMNS: &str = "job_key, kind, period, billing_group, model_blake3, state, attempts, \
     max_attempts, not_before_us, lease_owner, lease_expires_us, created_us, updated_us, \
     finished_us, last_error, result";

fn corrupt(reason: String) -> StoreError {
    StoreError::Corrupt {
        table: "jobs",
        reason,
    }
}

fn now_us() -> i64 {
    Utc::now().timestamp_micros()
}

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

fn job_from_row(row: &AnyRow) -> Result<JobRow, StoreError> {
    let read = query_error("reading a job");
    let group: i64 = row.try_get("billing_group").map_err(read)?;
    let attempts: i64 = row.try_get("attempts").map_err(read)?;
    let max_attempts: i64 = row.try_get("max_attempts").map_err(read)?;
    let result: Option<String> = row.try_get("result").map_err(read)?;
    let kind: String = row.try_get("kind").map_err(read)?;
    let state: String = row.try_get("state").map_err(read)?;
    Ok(JobRow {
        key: row.try_get("job_key").map_err(read)?,
        spec: JobSpec {
            kind: JobKind::parse(&kind)?,
            period: row.try_get("period").map_err(read)?,
            group: u32::try_from(group).map_err(|_| corrupt(format!("group {group}")))?,
            model_blake3: row.try_get("model_blake3").map_err(read)?,
        },
        state: JobState::parse(&state)?,
        attempts: from_db("jobs", "attempts", attempts)?,
        max_attempts: from_db("jobs", "max_attempts", max_attempts)?,
        not_before_us: row.try_get("not_before_us").map_err(read)?,
        lease_owner: row.try_get("lease_owner").map_err(read)?,
        lease_expires_us: row.try_get("lease_expires_us").map_err(read)?,
        created_us: row.try_get("created_us").map_err(read)?,
        updated_us: row.try_get("updated_us").map_err(read)?,
        finished_us: row.try_get("finished_us").map_err(read)?,
        last_error: row.try_get("last_error").map_err(read)?,
        result: result
            .map(|text| serde_json::from_str(&text))
            .transpose()
            .map_err(|e| corrupt(format!("result: {e}")))?,
    })
}

impl Store {
    /// Schedules `spec` (allowing `max_attempts` attempts). An existing job is left alone,
    /// unless `reopen` and it is done or failed: then it is pending again with `max_attempts`
    /// more attempts (attempt numbers keep counting, so its history stays whole; the scheduler reopens a billing job when homes of its group closed their month after
    /// it ran).
    ///
    /// # Errors
    /// When the database fails.
    pub async fn schedule_job(
        &self,
        spec: &JobSpec,
        max_attempts: u32,
        reopen: bool,
    ) -> Result<Scheduled, StoreError> {
        let now = now_us();
        let key = spec.key();
        let inserted = sqlx::query(
            "INSERT INTO jobs (job_key, kind, period, billing_group, model_blake3, state, \
             attempts, max_attempts, not_before_us, created_us, updated_us) \
             VALUES ($1, $2, $3, $4, $5, 'pending', 0, $6, $7, $7, $7) \
             ON CONFLICT (job_key) DO NOTHING",
        )
        .bind(&key)
        .bind(spec.kind.as_str())
        .bind(&spec.period)
        .bind(i64::from(spec.group))
        .bind(spec.model_blake3.clone())
        .bind(i64::from(max_attempts.max(1)))
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(query_error("scheduling a job"))?
        .rows_affected();
        if inserted == 1 {
            self.changed("job");
            return Ok(Scheduled::Created);
        }
        if !reopen {
            return Ok(Scheduled::Existing);
        }
        let reopened = sqlx::query(
            "UPDATE jobs SET state = 'pending', max_attempts = attempts + $2, \
             not_before_us = $3, lease_owner = NULL, lease_expires_us = NULL, \
             finished_us = NULL, last_error = NULL, updated_us = $3 \
             WHERE job_key = $1 AND state IN ('done', 'failed')",
        )
        .bind(&key)
        .bind(i64::from(max_attempts.max(1)))
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(query_error("reopening a job"))?
        .rows_affected();
        if reopened == 1 {
            self.changed("job");
            Ok(Scheduled::Reopened)
        } else {
            Ok(Scheduled::Existing)
        }
    }

    /// Claims the oldest claimable job for `worker` with a lease of `lease`: a pending job
    /// past its back-off, or a running one whose lease expired (its worker died), that still
    /// has attempts left. Daily jobs are claimed only for the models in `daily_models`
    /// (BLAKE3 hex) — a worker runs only the models it holds. Jobs whose lease expired on
    /// their last attempt are marked failed first.
    ///
    /// # Errors
    /// When the database fails.
    #[tracing::instrument(name = "jobs.claim", skip_all, fields(worker))]
    pub async fn claim_job(
        &self,
        worker: &str,
        lease: Duration,
        daily_models: &[String],
    ) -> Result<Option<Claimed>, StoreError> {
        let now = now_us();
        let mut tx = self.begin_write().await?;
        let expired = sqlx::query(
            "UPDATE jobs SET state = 'failed', updated_us = $1, finished_us = $1, \
             last_error = 'the lease of its last attempt expired (its worker stopped)' \
             WHERE state = 'running' AND lease_expires_us < $1 AND attempts >= max_attempts",
        )
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(query_error("failing jobs out of attempts"))?
        .rows_affected();
        // Daily jobs of the worker's models only: $4, $5, ... name them.
        let models = if daily_models.is_empty() {
            "kind = 'bill'".to_owned()
        } else {
            let list: Vec<String> = (0..daily_models.len())
                .map(|i| format!("${}", i + 4))
                .collect();
            format!("(kind = 'bill' OR model_blake3 IN ({}))", list.join(", "))
        };
        let candidates = format!(
            "SELECT job_key FROM jobs WHERE ((state = 'pending' AND not_before_us <= $1) \
             OR (state = 'running' AND lease_expires_us < $1)) AND attempts < max_attempts \
             AND {models} ORDER BY created_us, job_key LIMIT 1"
        );
        let sql = match self.backend {
            // Concurrent workers skip each other's candidate instead of queueing behind it.
            Backend::Postgres => format!(
                "UPDATE jobs SET state = 'running', attempts = attempts + 1, \
                 lease_owner = $2 || '#' || CAST(attempts + 1 AS TEXT), \
                 lease_expires_us = $3, updated_us = $1 \
                 WHERE job_key = ({candidates} FOR UPDATE SKIP LOCKED) RETURNING {JOB_COLUMNS}"
            ),
            Backend::Sqlite => format!(
                "UPDATE jobs SET state = 'running', attempts = attempts + 1, \
                 lease_owner = $2 || '#' || CAST(attempts + 1 AS TEXT), \
                 lease_expires_us = $3, updated_us = $1 \
                 WHERE job_key = ({candidates}) RETURNING {JOB_COLUMNS}"
            ),
        };
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(now)
            .bind(worker)
            .bind(now.saturating_add(micros(lease)));
        for model in daily_models {
            query = query.bind(model.as_str());
        }
        let row = query
            .fetch_optional(&mut *tx)
            .await
            .map_err(query_error("claiming a job"))?;
        let claimed = match row {
            None => None,
            Some(row) => {
                let job = job_from_row(&row)?;
                let lease = job
                    .lease_owner
                    .clone()
                    .ok_or_else(|| corrupt("a claimed job without a lease".into()))?;
                sqlx::query(
                    "INSERT INTO job_attempts (job_key, attempt, worker, started_us) \
                     VALUES ($1, $2, $3, $4)",
                )
                .bind(&job.key)
                .bind(to_db(job.attempts))
                .bind(worker)
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(query_error("recording a job attempt"))?;
                Some(Claimed { job, lease })
            }
        };
        tx.commit()
            .await
            .map_err(query_error("committing a job claim"))?;
        if expired > 0 || claimed.is_some() {
            self.changed("job");
        }
        Ok(claimed)
    }

    /// Extends the lease of `claimed` to `lease` from now. `false` when the lease is no longer
    /// this worker's (it expired and another worker claimed the job, or the job was finished):
    /// the worker must stop working on it.
    ///
    /// # Errors
    /// When the database fails.
    pub async fn renew_lease(
        &self,
        claimed: &Claimed,
        lease: Duration,
    ) -> Result<bool, StoreError> {
        let now = now_us();
        let renewed = sqlx::query(
            "UPDATE jobs SET lease_expires_us = $3, updated_us = $2 \
             WHERE job_key = $1 AND state = 'running' AND lease_owner = $4",
        )
        .bind(&claimed.job.key)
        .bind(now)
        .bind(now.saturating_add(micros(lease)))
        .bind(&claimed.lease)
        .execute(&self.pool)
        .await
        .map_err(query_error("renewing a job's lease"))?
        .rows_affected();
        Ok(renewed == 1)
    }

    /// Ends the attempt of `claimed` (see [`AttemptEnd`]). Returns the job's new state, or
    /// `None` when the lease is no longer this worker's (nothing is changed then).
    ///
    /// # Errors
    /// When the database fails.
    pub async fn finish_attempt(
        &self,
        claimed: &Claimed,
        end: &AttemptEnd,
    ) -> Result<Option<JobState>, StoreError> {
        let now = now_us();
        let (state, outcome, error, result, not_before) = match end {
            AttemptEnd::Done { result } => {
                (JobState::Done, "done", None, Some(result.to_string()), now)
            }
            AttemptEnd::Failed { error, backoff } => {
                let last = claimed.job.attempts >= claimed.job.max_attempts;
                (
                    if last {
                        JobState::Failed
                    } else {
                        JobState::Pending
                    },
                    if last { "failed" } else { "retry" },
                    Some(error.clone()),
                    None,
                    now.saturating_add(micros(*backoff)),
                )
            }
        };
        let finished = matches!(state, JobState::Done | JobState::Failed).then_some(now);
        let mut tx = self.begin_write().await?;
        let updated = sqlx::query(
            "UPDATE jobs SET state = $3, updated_us = $2, finished_us = $4, \
             last_error = COALESCE($5, last_error), result = COALESCE($6, result), \
             not_before_us = $7, lease_expires_us = NULL \
             WHERE job_key = $1 AND state = 'running' AND lease_owner = $8",
        )
        .bind(&claimed.job.key)
        .bind(now)
        .bind(state.as_str())
        .bind(finished)
        .bind(error.clone())
        .bind(result)
        .bind(not_before)
        .bind(&claimed.lease)
        .execute(&mut *tx)
        .await
        .map_err(query_error("finishing a job"))?
        .rows_affected();
        if updated != 1 {
            return Ok(None);
        }
        sqlx::query(
            "UPDATE job_attempts SET finished_us = $3, outcome = $4, detail = $5 \
             WHERE job_key = $1 AND attempt = $2",
        )
        .bind(&claimed.job.key)
        .bind(to_db(claimed.job.attempts))
        .bind(now)
        .bind(outcome)
        .bind(error)
        .execute(&mut *tx)
        .await
        .map_err(query_error("recording how a job attempt ended"))?;
        tx.commit()
            .await
            .map_err(query_error("committing a job's end"))?;
        self.changed("job");
        Ok(Some(state))
    }

    /// Makes a failed job pending again with `more_attempts` more attempts. `false` when
    /// `key` names no failed job.
    ///
    /// # Errors
    /// When the database fails.
    pub async fn retry_failed_job(
        &self,
        key: &str,
        more_attempts: u32,
    ) -> Result<bool, StoreError> {
        let now = now_us();
        let updated = sqlx::query(
            "UPDATE jobs SET state = 'pending', max_attempts = attempts + $3, \
             not_before_us = $2, lease_owner = NULL, lease_expires_us = NULL, \
             finished_us = NULL, updated_us = $2 \
             WHERE job_key = $1 AND state = 'failed'",
        )
        .bind(key)
        .bind(now)
        .bind(i64::from(more_attempts.max(1)))
        .execute(&self.pool)
        .await
        .map_err(query_error("retrying a failed job"))?
        .rows_affected();
        if updated == 1 {
            self.changed("job");
        }
        Ok(updated == 1)
    }

    /// The jobs, oldest first; only those in `state` when given.
    ///
    /// # Errors
    /// When the database fails or a row is unreadable.
    pub async fn jobs(&self, state: Option<JobState>) -> Result<Vec<JobRow>, StoreError> {
        let sql = format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE ($1 = '' OR state = $1) \
             ORDER BY created_us, job_key"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(state.map_or("", JobState::as_str))
            .fetch_all(&self.pool)
            .await
            .map_err(query_error("listing jobs"))?;
        rows.iter().map(job_from_row).collect()
    }

    /// The number of jobs in each state (every state present, 0 when none).
    ///
    /// # Errors
    /// When the database fails.
    pub async fn job_counts(&self) -> Result<BTreeMap<JobState, u64>, StoreError> {
        let rows = sqlx::query("SELECT state, COUNT(*) AS n FROM jobs GROUP BY state")
            .fetch_all(&self.pool)
            .await
            .map_err(query_error("counting jobs"))?;
        let mut counts: BTreeMap<JobState, u64> =
            JobState::ALL.into_iter().map(|s| (s, 0)).collect();
        for row in &rows {
            let read = query_error("counting jobs");
            let state: String = row.try_get("state").map_err(read)?;
            let n: i64 = row.try_get("n").map_err(read)?;
            counts.insert(JobState::parse(&state)?, from_db("jobs", "count", n)?);
        }
        Ok(counts)
    }

    /// The attempts of job `key`, in order.
    ///
    /// # Errors
    /// When the database fails or a row is unreadable.
    pub async fn job_attempts(&self, key: &str) -> Result<Vec<JobAttempt>, StoreError> {
        let rows = sqlx::query(
            "SELECT attempt, worker, started_us, finished_us, outcome, detail \
             FROM job_attempts WHERE job_key = $1 ORDER BY attempt",
        )
        .bind(key)
        .fetch_all(&self.pool)
        .await
        .map_err(query_error("listing a job's attempts"))?;
        rows.iter()
            .map(|row| {
                let read = query_error("reading a job attempt");
                let attempt: i64 = row.try_get("attempt").map_err(read)?;
                Ok(JobAttempt {
                    attempt: from_db("job_attempts", "attempt", attempt)?,
                    worker: row.try_get("worker").map_err(read)?,
                    started_us: row.try_get("started_us").map_err(read)?,
                    finished_us: row.try_get("finished_us").map_err(read)?,
                    outcome: row.try_get("outcome").map_err(read)?,
                    detail: row.try_get("detail").map_err(read)?,
                })
            })
            .collect()
    }

    /// The billing groups with batches in `period`, ascending.
    ///
    /// # Errors
    /// When the database fails.
    pub async fn period_billing_groups(&self, period: Period) -> Result<Vec<u32>, StoreError> {
        let rows: Vec<i64> = sqlx::query_scalar(
            "SELECT DISTINCT billing_group FROM batches WHERE period = $1 ORDER BY billing_group",
        )
        .bind(period.to_string())
        .fetch_all(&self.pool)
        .await
        .map_err(query_error("listing a period's billing groups"))?;
        rows.into_iter()
            .map(|g| u32::try_from(g).map_err(|_| corrupt(format!("billing group {g}"))))
            .collect()
    }

    /// The periods with batches and no billing job yet, ascending.
    ///
    /// # Errors
    /// When the database fails or a stored period is invalid.
    pub async fn unscheduled_periods(&self) -> Result<Vec<Period>, StoreError> {
        let rows: Vec<String> = sqlx::query_scalar(
            "SELECT DISTINCT b.period FROM batches b WHERE NOT EXISTS \
             (SELECT 1 FROM jobs j WHERE j.kind = 'bill' AND j.period = b.period) \
             ORDER BY b.period",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(query_error("listing unscheduled periods"))?;
        rows.iter()
            .map(|p| p.parse().map_err(|_| corrupt(format!("period {p:?}"))))
            .collect()
    }

    /// The meters of (`period`, `group`) with a stored bill.
    ///
    /// # Errors
    /// When the database fails.
    pub async fn billed_meters(
        &self,
        period: Period,
        group: u32,
    ) -> Result<std::collections::BTreeSet<String>, StoreError> {
        let rows: Vec<String> = sqlx::query_scalar(
            "SELECT DISTINCT b.meter_id FROM bills b JOIN batches x \
             ON x.meter_id = b.meter_id AND x.period = b.period \
             WHERE b.period = $1 AND x.billing_group = $2",
        )
        .bind(period.to_string())
        .bind(i64::from(group))
        .fetch_all(&self.pool)
        .await
        .map_err(query_error("listing billed meters"))?;
        Ok(rows.into_iter().collect())
    }

    /// The meters of (`period`, `group`) with batches and no stored bill.
    ///
    /// # Errors
    /// When the database fails.
    pub async fn unbilled_meters(&self, period: Period, group: u32) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(DISTINCT x.meter_id) FROM batches x WHERE x.period = $1 \
             AND x.billing_group = $2 AND NOT EXISTS \
             (SELECT 1 FROM bills b WHERE b.meter_id = x.meter_id AND b.period = x.period)",
        )
        .bind(period.to_string())
        .bind(i64::from(group))
        .fetch_one(&self.pool)
        .await
        .map_err(query_error("counting unbilled meters"))?;
        from_db("batches", "count", n)
    }

    /// The (day, group) pairs with pending `daily` inputs of the model `model_blake3`.
    ///
    /// # Errors
    /// When the database fails or a row is unreadable.
    pub async fn pending_daily_groups(
        &self,
        model_blake3: &str,
    ) -> Result<Vec<(String, u32)>, StoreError> {
        let rows = sqlx::query(
            "SELECT DISTINCT first_period, input_group FROM analytics_inputs \
             WHERE kind = 'daily' AND model_blake3 = $1 AND status = 'pending' \
             ORDER BY first_period, input_group",
        )
        .bind(model_blake3)
        .fetch_all(&self.pool)
        .await
        .map_err(query_error("listing pending daily groups"))?;
        rows.iter()
            .map(|row| {
                let read = query_error("listing pending daily groups");
                let day: String = row.try_get("first_period").map_err(read)?;
                let group: i64 = row.try_get("input_group").map_err(read)?;
                Ok((
                    day,
                    u32::try_from(group).map_err(|_| corrupt(format!("group {group}")))?,
                ))
            })
            .collect()
    }
}
