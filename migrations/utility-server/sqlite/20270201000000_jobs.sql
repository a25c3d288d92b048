-- Jobs and workers (utility_server::jobs, store/jobs.rs). Kept in step between sqlite/ and
-- postgres/ (identical here: no binary columns).

-- One row per unit of scheduled work: a billing job per (period, group) at month close, a
-- daily job per (day, group, model). `utility-server schedule` creates them (idempotently: the
-- key names the work); `utility-server worker` processes claim them with a lease
-- (PostgreSQL: `FOR UPDATE SKIP LOCKED`; SQLite: the write lock), renew the lease while they
-- work, and finish them. A job whose lease expires (its worker died) is claimed again by
-- another worker; the key authority's once-only, idempotent releases make the retry safe.
CREATE TABLE jobs (
    -- `bill/YYYY-MM/G` or `daily/YYYY-MM-DD/G/MODEL_BLAKE3`.
    job_key TEXT NOT NULL PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('bill', 'daily')),
    -- YYYY-MM for a billing job, YYYY-MM-DD (the day the meters prepared) for a daily job.
    period TEXT NOT NULL,
    billing_group BIGINT NOT NULL CHECK (billing_group >= 0),
    -- The daily model's BLAKE3 (hex); NULL for billing.
    model_blake3 TEXT,
    state TEXT NOT NULL CHECK (state IN ('pending', 'running', 'done', 'failed')),
    -- Attempts started (claims), including those whose worker died.
    attempts BIGINT NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    max_attempts BIGINT NOT NULL CHECK (max_attempts >= 1),
    -- A pending job is not claimed before this instant (back-off after a failed attempt).
    not_before_us BIGINT NOT NULL,
    -- The worker holding the lease (`NAME#ATTEMPT`) and when the lease ends unless renewed.
    lease_owner TEXT,
    lease_expires_us BIGINT,
    created_us BIGINT NOT NULL,
    updated_us BIGINT NOT NULL,
    finished_us BIGINT,
    -- The last failed attempt's error, and the finished job's summary (JSON).
    last_error TEXT,
    result TEXT
);

-- Workers look for the oldest claimable job.
CREATE INDEX jobs_claim ON jobs (state, not_before_us, created_us);

-- One row per attempt: who claimed the job, when, and how the attempt ended (`done`,
-- `failed`, `retry`, or NULL while running — or forever, when its worker died and the lease
-- expired: `utility-server jobs` shows those as lost leases).
CREATE TABLE job_attempts (
    job_key TEXT NOT NULL REFERENCES jobs (job_key),
    attempt BIGINT NOT NULL CHECK (attempt >= 1),
    worker TEXT NOT NULL,
    started_us BIGINT NOT NULL,
    finished_us BIGINT,
    outcome TEXT,
    detail TEXT,
    PRIMARY KEY (job_key, attempt)
);
