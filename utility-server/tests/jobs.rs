//! The job table under workers: exclusive claims across replicas (separate connection pools on
//! one database), lease expiry and takeover with the old lease fenced off, back-off and the
//! attempt limit, idempotent scheduling. Each test runs on SQLite and on PostgreSQL (see
//! `seer_service::testing` for how PostgreSQL is found).
#![allow(clippy::expect_used, clippy::panic, reason = "tests")]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use seer_service::testing::{PostgresDatabase, postgres_admin_url};
use utility_server::Store;
use utility_server::store::{AttemptEnd, JobSpec, JobState, Scheduled};

enum Db {
    Sqlite(tempfile::TempDir),
    Postgres(PostgresDatabase),
}

impl Db {
    fn url(&self) -> String {
        match self {
            Self::Sqlite(dir) => format!("sqlite://{}/jobs.db", dir.path().display()),
            Self::Postgres(db) => db.url().to_owned(),
        }
    }
}

async fn databases() -> Vec<Db> {
    let mut dbs = vec![Db::Sqlite(tempfile::tempdir().expect("tempdir"))];
    if let Some(admin) = postgres_admin_url("jobs").await {
        dbs.push(Db::Postgres(
            PostgresDatabase::create(&admin, "seer_utility_jobs").await,
        ));
    }
    dbs
}

fn bill(period: &str, group: u32) -> JobSpec {
    JobSpec::bill(period.parse().expect("period"), group)
}

fn done() -> AttemptEnd {
    AttemptEnd::Done {
        result: serde_json::json!({"ok": true}),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn claims_are_exclusive_across_replicas() {
    for db in databases().await {
        let url = db.url();
        // Three replicas: three stores (pools) on one database.
        let mut stores = Vec::new();
        for _ in 0..3 {
            stores.push(Arc::new(Store::connect(&url).await.expect("store")));
        }
        let jobs = 24u32;
        for group in 0..jobs {
            let outcome = stores[0]
                .schedule_job(&bill("2027-01", group), 3, false)
                .await
                .expect("schedule");
            assert_eq!(outcome, Scheduled::Created);
        }
        // Six workers, two per replica, claim until nothing is left.
        let mut tasks = Vec::new();
        for worker in 0..6 {
            let store = Arc::clone(&stores[worker % 3]);
            tasks.push(tokio::spawn(async move {
                let name = format!("w{worker}");
                let mut claimed = Vec::new();
                while let Some(job) = store
                    .claim_job(&name, Duration::from_secs(60), &[])
                    .await
                    .expect("claim")
                {
                    assert_eq!(job.lease, format!("{name}#1"));
                    let state = store.finish_attempt(&job, &done()).await.expect("finish");
                    assert_eq!(state, Some(JobState::Done));
                    claimed.push(job.job.key);
                }
                claimed
            }));
        }
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        for task in tasks {
            for key in task.await.expect("worker") {
                *seen.entry(key).or_default() += 1;
            }
        }
        assert_eq!(seen.len(), jobs as usize, "every job claimed");
        assert!(
            seen.values().all(|&n| n == 1),
            "no job claimed twice: {seen:?}"
        );
        let counts = stores[1].job_counts().await.expect("counts");
        assert_eq!(counts[&JobState::Done], u64::from(jobs));
        assert_eq!(counts[&JobState::Pending], 0);
        assert_eq!(counts[&JobState::Running], 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_lease_is_taken_over_and_the_old_worker_is_fenced_off() {
    for db in databases().await {
        let url = db.url();
        let (a, b) = (
            Store::connect(&url).await.expect("store"),
            Store::connect(&url).await.expect("store"),
        );
        a.schedule_job(&bill("2027-01", 7), 5, false)
            .await
            .expect("schedule");
        let lease = Duration::from_millis(200);
        let first = a
            .claim_job("dies", lease, &[])
            .await
            .expect("claim")
            .expect("a job");
        // While the lease holds, nobody else gets the job; renewing keeps it.
        assert!(
            b.claim_job("other", lease, &[])
                .await
                .expect("claim")
                .is_none()
        );
        assert!(a.renew_lease(&first, lease).await.expect("renew"));
        tokio::time::sleep(lease + Duration::from_millis(100)).await;
        // The worker "died": its lease expired, another worker takes the job over.
        let second = b
            .claim_job("other", lease * 50, &[])
            .await
            .expect("claim")
            .expect("the expired job");
        assert_eq!(second.job.key, first.job.key);
        assert_eq!(second.job.attempts, 2);
        assert_eq!(second.lease, "other#2");
        // The first worker's lease no longer counts: it can neither renew nor finish.
        assert!(!a.renew_lease(&first, lease).await.expect("renew"));
        assert_eq!(
            a.finish_attempt(&first, &done()).await.expect("finish"),
            None
        );
        assert_eq!(
            b.finish_attempt(&second, &done()).await.expect("finish"),
            Some(JobState::Done)
        );
        let history = b.job_attempts(&first.job.key).await.expect("attempts");
        assert_eq!(history.len(), 2);
        assert_eq!(history[0].worker, "dies");
        assert_eq!(
            history[0].outcome, None,
            "the dead worker's attempt never ended"
        );
        assert_eq!(history[1].outcome.as_deref(), Some("done"));
        let job = &b.jobs(None).await.expect("jobs")[0];
        assert_eq!(job.state, JobState::Done);
        assert_eq!(job.result, Some(serde_json::json!({"ok": true})));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_attempts_back_off_then_the_job_fails_until_retried() {
    for db in databases().await {
        let store = Store::connect(&db.url()).await.expect("store");
        store
            .schedule_job(&bill("2027-02", 0), 2, false)
            .await
            .expect("schedule");
        let lease = Duration::from_secs(60);
        let first = store
            .claim_job("w", lease, &[])
            .await
            .expect("claim")
            .expect("job");
        let fail = |backoff| AttemptEnd::Failed {
            error: "the key authority answered Unavailable".into(),
            backoff,
        };
        assert_eq!(
            store
                .finish_attempt(&first, &fail(Duration::from_secs(3600)))
                .await
                .expect("fail"),
            Some(JobState::Pending)
        );
        // Backing off: not claimable for an hour.
        assert!(
            store
                .claim_job("w", lease, &[])
                .await
                .expect("claim")
                .is_none()
        );
        let pending = &store.jobs(Some(JobState::Pending)).await.expect("jobs")[0];
        assert_eq!(
            pending.last_error.as_deref(),
            Some("the key authority answered Unavailable")
        );

        store
            .schedule_job(&bill("2027-02", 1), 2, false)
            .await
            .expect("schedule");
        let one = store
            .claim_job("w", lease, &[])
            .await
            .expect("claim")
            .expect("job");
        assert_eq!(one.job.spec.group, 1);
        store
            .finish_attempt(&one, &fail(Duration::ZERO))
            .await
            .expect("fail");
        let two = store
            .claim_job("w", lease, &[])
            .await
            .expect("claim")
            .expect("job");
        assert_eq!((two.job.spec.group, two.job.attempts), (1, 2));
        // The last attempt fails the job for good.
        assert_eq!(
            store
                .finish_attempt(&two, &fail(Duration::ZERO))
                .await
                .expect("fail"),
            Some(JobState::Failed)
        );
        assert!(
            store
                .claim_job("w", lease, &[])
                .await
                .expect("claim")
                .is_none()
        );
        let key = two.job.key.clone();
        assert!(store.retry_failed_job(&key, 2).await.expect("retry"));
        assert!(
            !store
                .retry_failed_job(&key, 2)
                .await
                .expect("not failed now")
        );
        let again = store
            .claim_job("w", lease, &[])
            .await
            .expect("claim")
            .expect("job");
        // Attempt numbers keep counting: the history keeps every attempt.
        assert_eq!(
            (again.job.key.as_str(), again.job.attempts),
            (key.as_str(), 3)
        );
        assert_eq!(again.job.max_attempts, 4);
        assert_eq!(store.job_attempts(&key).await.expect("history").len(), 3);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_that_expires_on_the_last_attempt_fails_the_job() {
    for db in databases().await {
        let store = Store::connect(&db.url()).await.expect("store");
        store
            .schedule_job(&bill("2027-03", 0), 1, false)
            .await
            .expect("schedule");
        let lease = Duration::from_millis(50);
        let claimed = store.claim_job("w", lease, &[]).await.expect("claim");
        assert!(claimed.is_some());
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert!(
            store
                .claim_job("w2", lease, &[])
                .await
                .expect("claim")
                .is_none()
        );
        let job = &store.jobs(None).await.expect("jobs")[0];
        assert_eq!(job.state, JobState::Failed);
        assert!(
            job.last_error
                .as_deref()
                .is_some_and(|e| e.contains("lease")),
            "{job:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduling_is_idempotent_and_reopens_finished_work() {
    for db in databases().await {
        let store = Store::connect(&db.url()).await.expect("store");
        let spec = bill("2027-04", 3);
        assert_eq!(spec.key(), "bill/2027-04/3");
        assert_eq!(
            store.schedule_job(&spec, 4, true).await.expect("schedule"),
            Scheduled::Created
        );
        // Pending or running work is never reopened.
        assert_eq!(
            store.schedule_job(&spec, 4, true).await.expect("schedule"),
            Scheduled::Existing
        );
        let claimed = store
            .claim_job("w", Duration::from_secs(60), &[])
            .await
            .expect("claim")
            .expect("job");
        assert_eq!(
            store.schedule_job(&spec, 4, true).await.expect("schedule"),
            Scheduled::Existing
        );
        store
            .finish_attempt(&claimed, &done())
            .await
            .expect("finish");
        assert_eq!(
            store.schedule_job(&spec, 4, false).await.expect("schedule"),
            Scheduled::Existing
        );
        assert_eq!(
            store.schedule_job(&spec, 4, true).await.expect("schedule"),
            Scheduled::Reopened
        );
        let job = &store.jobs(None).await.expect("jobs")[0];
        assert_eq!(
            (job.state, job.attempts, job.max_attempts),
            (JobState::Pending, 1, 5)
        );
        let again = store
            .claim_job("w", Duration::from_secs(60), &[])
            .await
            .expect("claim")
            .expect("the reopened job");
        assert_eq!(again.job.attempts, 2);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daily_jobs_go_only_to_workers_holding_their_model() {
    for db in databases().await {
        let store = Store::connect(&db.url()).await.expect("store");
        let day = chrono::NaiveDate::from_ymd_opt(2027, 1, 5).expect("day");
        let spec = JobSpec::daily(day, 2, "abc123");
        assert_eq!(spec.key(), "daily/2027-01-05/2/abc123");
        store.schedule_job(&spec, 3, false).await.expect("schedule");
        let lease = Duration::from_secs(60);
        assert!(
            store
                .claim_job("w", lease, &[])
                .await
                .expect("claim")
                .is_none()
        );
        assert!(
            store
                .claim_job("w", lease, &["other".into()])
                .await
                .expect("claim")
                .is_none()
        );
        let claimed = store
            .claim_job("w", lease, &["other".into(), "abc123".into()])
            .await
            .expect("claim")
            .expect("its model");
        assert_eq!(claimed.job.spec, spec);
    }
}
