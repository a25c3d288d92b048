//! The ciphertext store: meters, their batches and their ingest cursors, in an embedded
//! SQLite file (the default) or PostgreSQL, through sqlx's `Any` driver.
//!
//! # Schema
//!
//! The ingest tables (see `migrations/utility-server/`):
//! - `meters (meter_id, first_seen_us, last_sequence)`: one row per meter that has stored a
//!   batch; `last_sequence` is the ingest cursor, the highest sequence stored (sequences have
//!   no gaps, so it is also the number of batches);
//! - `batches`, keyed by `(meter_id, sequence)`: the batch's period, interval (UTC
//!   microseconds and the offset the meter stated), reading count, billing group and
//!   position, both lanes' ciphertext bytes, ε, the BLAKE3 content digest and when it was
//!   received; the billing lane is NULL once pruned ([`Store::prune_billing_lanes`]), and
//!   PostgreSQL partitions the table by month ([`partitions`]);
//!
//! and the billing job's: `bills`, one per (meter, period) the key authority released (paise,
//! closing sequence, audit entry), and `bill_cells`, the bill's energy per tariff cell in
//! whole Wh with the cell's label, written in the bill's transaction; the deep analytics
//! inputs meters upload (`analytics_inputs`, `analytics_input_ciphertexts`: see
//! [`Store::insert_analytics_input`]); and for distributed noise, each batch's noise plan
//! (nullable columns of `batches`: the plan field by field as signed and its window start in
//! UTC, which with the billing group selects a noise group's batches of one window), the
//! text of `start` and `end` and the billing lane's BLAKE3, so that a batch can be sent on
//! exactly as its meter signed it ([`Store::window_batches`]), and `group_totals`, the hours
//! of a noise group the key authority released ([`Store::record_group_total`],
//! [`Store::group_totals`]).
//!
//! The two backends need different SQL for one column type — ciphertexts are `BLOB` in
//! SQLite and `BYTEA` in PostgreSQL, neither of which the other knows (and sqlx's `Any`
//! driver refuses to decode a SQLite column declared `BYTEA`); storing them as hex text would
//! double the largest data the utility keeps. So each backend has its own migration
//! directory, `migrations/utility-server/{sqlite,postgres}`, kept in step: the same versions,
//! the same tables, columns and constraints.
//!
//! # Exactly once, atomically
//!
//! [`Store::insert_batch`] runs in one transaction that first takes the meter's write lock —
//! `BEGIN IMMEDIATE` in SQLite (the database's single write lock, waited for up to the busy
//! timeout); in PostgreSQL the meter row's lock, taken by an `UPDATE` of that row (concurrent
//! inserts of a new meter queue on its primary key) — then reads the cursor, and either
//! stores `last + 1` together with the advanced cursor and commits, or stores nothing. Two
//! uploads of one (meter, sequence) therefore serialize: the second sees the first's batch
//! and is answered as a duplicate or a conflict by comparing digests. In SQLite the primary
//! key on `(meter_id, sequence)` backs this up; PostgreSQL's `batches` is partitioned by
//! month ([`partitions`]) and its primary key must include the partition key, so it is
//! `(meter_id, sequence, period)` and the meter's cursor row alone keeps a sequence from being
//! stored twice (in two months) — every writer of `batches` goes through this function. A
//! crash before the commit leaves neither the batch
//! nor the advanced cursor (SQLite's WAL and PostgreSQL's transactions are atomic), and a
//! commit is durable when it returns (SQLite runs with `synchronous = FULL`), so an
//! acknowledged batch is never lost.

use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::migrate::Migrator;
use sqlx::{Any, AnyPool, Row as _, Transaction};

use crate::batch::{Batch, BatchNoisePlan, MeterId, Period, utc_from_micros, utc_rfc3339};

mod analytics_inputs;
mod daily;
mod dashboard;
mod group_totals;
mod jobs;
mod lifecycle;
#[cfg(test)]
mod lifecycle_tests;
pub mod partitions;
#[cfg(test)]
mod tests;

pub use analytics_inputs::{
    AnalyticsInput, InputHeader, InputOutcome, InputStatus, StoredInput, decide_input,
};
pub use daily::{DailyAnomaly, DailyFilter, DailyForecast, GroupForecastHour, GroupHourTotal};
pub use dashboard::{
    BillRefusal, FlaggedDay, GroupHour, HomeRow, HomeSort, HomesQuery, HourCount, OverviewCounts,
};
pub use group_totals::{
    GroupTotal, GroupWindow, MAX_WINDOW_PAGE_SIZE, PlanCount, RecordOutcome, WindowBatch,
};
pub use jobs::{AttemptEnd, Claimed, JobAttempt, JobKind, JobRow, JobSpec, JobState, Scheduled};
pub use lifecycle::{
    PRUNE_CHUNK, PRUNE_LOCK, PruneReport, StorageReport, TableBytes, report_periods,
};

/// SQLite's schema, embedded at build time.
static SQLITE_MIGRATOR: Migrator = sqlx::migrate!("../migrations/utility-server/sqlite");
/// PostgreSQL's schema, embedded at build time.
static POSTGRES_MIGRATOR: Migrator = sqlx::migrate!("../migrations/utility-server/postgres");

/// How long a SQLite connection waits for another writer before giving up.
pub const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Most batches one [`Store::group_batches`] page returns.
pub const MAX_PAGE_SIZE: u32 = 1024;

pub use seer_service::db::{Backend, redact_url};

/// The backend a database URL names.
///
/// # Errors
/// [`StoreError::UnsupportedUrl`] for other schemes.
pub fn backend_of(url: &str) -> Result<Backend, StoreError> {
    Backend::of_url(url).ok_or_else(|| StoreError::UnsupportedUrl {
        url: redact_url(url),
    })
}

/// What went wrong in the store. Messages may name the (redacted) URL; the gRPC layer logs
/// them and never sends them.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Neither `sqlite:` nor `postgres://`.
    #[error("unsupported database url {url:?}: expected sqlite:PATH or postgres://...")]
    UnsupportedUrl {
        /// The URL, password redacted.
        url: String,
    },
    /// The SQLite file's directory could not be created.
    #[error("cannot create the database directory {}", path.display())]
    CreateDirectory {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The database could not be opened.
    #[error("cannot open the database {url}")]
    Connect {
        /// The URL, password redacted.
        url: String,
        /// Why.
        source: sqlx::Error,
    },
    /// The schema migrations failed.
    #[error("cannot migrate the database schema")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A query failed.
    #[error("database error while {doing}")]
    Query {
        /// What the store was doing.
        doing: &'static str,
        /// Why.
        source: sqlx::Error,
    },
    /// A stored row holds a value this build cannot read (a damaged or foreign database).
    #[error("corrupt row in {table}: {reason}")]
    Corrupt {
        /// The table.
        table: &'static str,
        /// What is wrong.
        reason: String,
    },
}

fn query_error(doing: &'static str) -> impl Fn(sqlx::Error) -> StoreError + Copy {
    move |source| StoreError::Query { doing, source }
}

/// What [`Store::insert_batch`] did with a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InsertOutcome {
    /// Stored: it was `last + 1`; the cursor is now its sequence.
    Inserted,
    /// Not stored again: the same (meter, sequence) with the same content is already stored.
    Duplicate {
        /// The meter's cursor.
        last: u64,
    },
    /// Refused: the (meter, sequence) is already stored with different content.
    Conflict {
        /// The meter's cursor.
        last: u64,
    },
    /// Refused: the sequence skips ahead; the next sequence must be `expected`.
    Gap {
        /// `last + 1`.
        expected: u64,
    },
}

/// One batch's billing lane, for the billing job.
#[derive(Clone, PartialEq, Eq)]
pub struct GroupBatch {
    /// The meter.
    pub meter_id: MeterId,
    /// The batch's sequence.
    pub sequence: u64,
    /// The meter's position in the group.
    pub billing_position: u32,
    /// The billing lane's serialized ciphertext.
    pub billing_lane: Vec<u8>,
}

impl std::fmt::Debug for GroupBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupBatch")
            .field("meter_id", &self.meter_id)
            .field("sequence", &self.sequence)
            .field("billing_position", &self.billing_position)
            .field("billing_lane_bytes", &self.billing_lane.len())
            .finish()
    }
}

/// The energy of one tariff cell of a released bill.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlabEnergy {
    /// The cell's label (`0-50 kWh`, `50-100 kWh peak`).
    pub label: String,
    /// Whole Wh.
    pub wh: u64,
}

impl serde::Serialize for SlabEnergy {
    /// `{"label": …, "wh": 12345, "kwh": "12.345"}`.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct as _;
        let mut out = s.serialize_struct("SlabEnergy", 3)?;
        out.serialize_field("label", &self.label)?;
        out.serialize_field("wh", &self.wh)?;
        out.serialize_field("kwh", &format_kwh(self.wh))?;
        out.end()
    }
}

/// Whole Wh as kWh with three decimals (`12345` → `"12.345"`).
#[must_use]
pub fn format_kwh(wh: u64) -> String {
    format!("{}.{:03}", wh / 1000, wh % 1000)
}

/// Paise as rupees with two decimals (`123456` → `"1234.56"`, `-5` → `"-0.05"`).
#[must_use]
pub fn format_rupees(paise: i64) -> String {
    let sign = if paise < 0 { "-" } else { "" };
    let abs = paise.unsigned_abs();
    format!("{sign}{}.{:02}", abs / 100, abs % 100)
}

/// A bill released by the key authority, as the utility stores it.
///
/// Serializes (the `bill` and `bills` commands' JSON) as `meter_id`, `period`,
/// `amount_paise`, `amount_rupees` (`"1234.56"`), `closing_sequence`, `audit_sequence`,
/// `released_at_us` and `kwh_per_slab` (`[{"label", "wh", "kwh"}]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredBill {
    /// The meter.
    pub meter_id: MeterId,
    /// The period.
    pub period: Period,
    /// The amount in paise.
    pub amount_paise: i64,
    /// The closing batch the bill was computed from.
    pub closing_sequence: u64,
    /// The key authority's audit entry that granted the release.
    pub audit_sequence: u64,
    /// When it was released (µs since the Unix epoch).
    pub released_at_us: i64,
    /// The month's energy per tariff cell, in the tariff's cell order (empty for bills
    /// released before cells were).
    pub slabs: Vec<SlabEnergy>,
}

impl StoredBill {
    /// The bill's energy over all cells, in Wh.
    #[must_use]
    pub fn total_wh(&self) -> u64 {
        self.slabs.iter().map(|s| s.wh).sum()
    }
}

impl serde::Serialize for StoredBill {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct as _;
        let mut out = s.serialize_struct("StoredBill", 8)?;
        out.serialize_field("meter_id", self.meter_id.as_str())?;
        out.serialize_field("period", &self.period.to_string())?;
        out.serialize_field("amount_paise", &self.amount_paise)?;
        out.serialize_field("amount_rupees", &format_rupees(self.amount_paise))?;
        out.serialize_field("closing_sequence", &self.closing_sequence)?;
        out.serialize_field("audit_sequence", &self.audit_sequence)?;
        out.serialize_field("released_at_us", &self.released_at_us)?;
        out.serialize_field("kwh_per_slab", &self.slabs)?;
        out.end()
    }
}

/// One period of a meter's released bills (see [`Store::billed_usage`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BilledPeriod {
    /// The period.
    pub period: Period,
    /// The energy over all cells, in Wh.
    pub total_wh: u64,
    /// The bill in paise.
    pub amount_paise: i64,
}

/// Where a [`Store::group_batches`] page starts: after this (meter, sequence).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct BatchKey {
    /// The meter.
    pub meter_id: MeterId,
    /// The sequence.
    pub sequence: u64,
}

/// What the utility knows of one meter's use in one period without decrypting anything:
/// counts and times only.
#[derive(Debug, Clone, PartialEq)]
pub struct UsageSummary {
    /// The meter.
    pub meter_id: MeterId,
    /// The period.
    pub period: Period,
    /// Batches stored.
    pub batches: u64,
    /// Readings in those batches.
    pub readings: u64,
    /// Start of the earliest batch (`None` without batches).
    pub first_start: Option<DateTime<Utc>>,
    /// End of the latest batch (`None` without batches).
    pub last_end: Option<DateTime<Utc>>,
    /// ε spent on the analytics lanes of those batches, summed.
    pub epsilon_spent: f64,
}

/// How [`Store::insert_batch_then`] ends its transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Finish {
    Commit,
    /// Drop the transaction after every statement ran, as a crash before the commit would.
    #[cfg(test)]
    Abandon,
}

/// How many change notifications a slow subscriber may fall behind (it then hears that it
/// lagged, which means "something changed" all the same).
const CHANGE_BACKLOG: usize = 64;

/// The store. Cheap to clone (a shared connection pool and change feed).
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// What this process stored (`batch`, `bill`, `daily`, `group-forecast`,
    /// `group-totals`): the dashboard's live updates ([`Store::subscribe_changes`]).
    changes: tokio::sync::broadcast::Sender<&'static str>,
    /// The months whose `batches` partition exists (PostgreSQL; see [`partitions`]).
    partitions: partitions::KnownPartitions,
}

impl Store {
    /// Opens the store at `url`, creating the SQLite file (and its directories) when missing,
    /// and applies the schema migrations. SQLite runs in WAL mode (readers never wait for
    /// the writer) with `synchronous = FULL` (a commit survives power loss) and a busy timeout
    /// of [`SQLITE_BUSY_TIMEOUT`].
    ///
    /// # Errors
    /// When the URL is not supported or the database cannot be opened or migrated.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let backend = backend_of(url)?;
        sqlx::any::install_default_drivers();
        let url = match backend {
            Backend::Sqlite => prepare_sqlite_url(url)?,
            Backend::Postgres => url.to_owned(),
        };
        let pool = AnyPoolOptions::new()
            .max_connections(match backend {
                Backend::Sqlite => 4,
                Backend::Postgres => 8,
            })
            .acquire_timeout(Duration::from_secs(30))
            .after_connect(|conn, _meta| {
                Box::pin(async move {
                    if conn.backend_name() == "SQLite" {
                        let busy =
                            format!("PRAGMA busy_timeout = {}", SQLITE_BUSY_TIMEOUT.as_millis());
                        sqlx::raw_sql(sqlx::AssertSqlSafe(busy))
                            .execute(&mut *conn)
                            .await?;
                        sqlx::raw_sql("PRAGMA synchronous = FULL")
                            .execute(&mut *conn)
                            .await?;
                    }
                    Ok(())
                })
            })
            .connect(&url)
            .await
            .map_err(|source| StoreError::Connect {
                url: redact_url(&url),
                source,
            })?;
        match backend {
            Backend::Sqlite => {
                // The journal mode is a property of the file: set once, it stays.
                let mode: String = sqlx::query_scalar("PRAGMA journal_mode = WAL")
                    .fetch_one(&pool)
                    .await
                    .map_err(query_error("switching to WAL mode"))?;
                if !mode.eq_ignore_ascii_case("wal") {
                    tracing::warn!(%mode, "the database refused WAL mode");
                }
                SQLITE_MIGRATOR.run(&pool).await?;
            }
            Backend::Postgres => POSTGRES_MIGRATOR.run(&pool).await?,
        }
        let (changes, _) = tokio::sync::broadcast::channel(CHANGE_BACKLOG);
        Ok(Self {
            pool,
            backend,
            changes,
            partitions: partitions::KnownPartitions::default(),
        })
    }

    /// Which database holds the store.
    #[must_use]
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The writes of this process from now on, by kind (`batch`, `bill`, `daily`,
    /// `group-forecast`, `group-totals`), sent after their transaction committed. Writes by
    /// other processes on the same database are not seen here
    /// ([`Store::dashboard_change_counter`] notices them).
    #[must_use]
    pub fn subscribe_changes(&self) -> tokio::sync::broadcast::Receiver<&'static str> {
        self.changes.subscribe()
    }

    /// Tells the subscribers that `what` was stored.
    fn changed(&self, what: &'static str) {
        // Nobody listening: nothing to tell.
        let _ = self.changes.send(what);
    }

    /// Closes the connections; later calls fail.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Stores `batch` if it is its meter's next sequence (see the
    /// [module documentation](self#exactly-once-atomically)); otherwise reports what it is.
    ///
    /// # Errors
    /// When the database fails; nothing is stored then.
    #[tracing::instrument(
        name = "store.insert_batch",
        skip_all,
        fields(meter_id = %batch.meter_id(), sequence = batch.sequence())
    )]
    pub async fn insert_batch(&self, batch: &Batch) -> Result<InsertOutcome, StoreError> {
        self.insert_batch_then(batch, Finish::Commit).await
    }

    async fn begin_write(&self) -> Result<Transaction<'static, Any>, StoreError> {
        let begin = match self.backend {
            // Take the write lock now, where the busy timeout applies, rather than upgrading a
            // read transaction later (which fails at once when another writer got there).
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await,
            Backend::Postgres => self.pool.begin().await,
        };
        begin.map_err(query_error("beginning a transaction"))
    }

    async fn insert_batch_then(
        &self,
        batch: &Batch,
        finish: Finish,
    ) -> Result<InsertOutcome, StoreError> {
        let meter = batch.meter_id().as_str();
        let sequence = to_db(batch.sequence());
        let now = Utc::now().timestamp_micros();
        // Before the transaction, in one of its own: see `partitions`.
        self.ensure_partition(batch.period()).await?;
        let mut tx = self.begin_write().await?;

        sqlx::query(
            "INSERT INTO meters (meter_id, first_seen_us, last_sequence) VALUES ($1, $2, 0) \
             ON CONFLICT (meter_id) DO NOTHING",
        )
        .bind(meter)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(query_error("registering the meter"))?;
        // A no-op write: in PostgreSQL it locks the meter's row until the commit, so that
        // concurrent inserts for the meter queue here and then read the cursor it leaves.
        let last: i64 = sqlx::query_scalar(
            "UPDATE meters SET last_sequence = last_sequence WHERE meter_id = $1 \
             RETURNING last_sequence",
        )
        .bind(meter)
        .fetch_one(&mut *tx)
        .await
        .map_err(query_error("locking the meter's cursor"))?;
        let last = from_db("meters", "last_sequence", last)?;

        let outcome = if batch.sequence() == last + 1 {
            let plan = batch.noise_plan();
            let wire = plan.map(BatchNoisePlan::wire);
            sqlx::query(
                "INSERT INTO batches (meter_id, sequence, period, start_us, end_us, \
                 utc_offset_s, readings, billing_group, billing_position, billing_lane, \
                 analytics_lane, epsilon_spent, content_digest, received_at_us, signature, \
                 meter_certificate, start_text, end_text, billing_lane_blake3, \
                 noise_group_size, noise_tolerated, noise_sensitivity_wh, noise_epsilon, \
                 noise_window_start, noise_window_utc, noise_interval_s, noise_window_slots, \
                 noise_first_slot, noise_slot_count) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, \
                 $17, $18, $19, $20, $21, $22, $23, $24, $25, $26, $27, $28, $29)",
            )
            .bind(meter)
            .bind(sequence)
            .bind(batch.period().to_string())
            .bind(batch.start_micros())
            .bind(batch.end_micros())
            .bind(i64::from(batch.utc_offset_seconds()))
            .bind(i64::from(batch.readings()))
            .bind(i64::from(batch.billing_group()))
            .bind(i64::from(batch.billing_position()))
            .bind(batch.billing_lane())
            .bind(batch.analytics_lane())
            .bind(batch.epsilon_spent())
            .bind(batch.digest().to_hex())
            .bind(now)
            .bind((!batch.signature().is_empty()).then_some(batch.signature()))
            .bind((!batch.meter_certificate().is_empty()).then_some(batch.meter_certificate()))
            .bind(batch.start_as_sent())
            .bind(batch.end_as_sent())
            .bind(blake3::hash(batch.billing_lane()).as_bytes().to_vec())
            .bind(wire.map(|p| i64::from(p.group_size)))
            .bind(wire.map(|p| i64::from(p.tolerated)))
            .bind(wire.map(|p| p.sensitivity_wh))
            .bind(wire.map(|p| p.epsilon))
            .bind(wire.map(|p| p.window_start.clone()))
            .bind(plan.map(|p| utc_rfc3339(p.window_start_utc())))
            .bind(wire.map(|p| i64::from(p.interval_seconds)))
            .bind(wire.map(|p| i64::from(p.window_slots)))
            .bind(wire.map(|p| i64::from(p.first_slot)))
            .bind(wire.map(|p| i64::from(p.slot_count)))
            .execute(&mut *tx)
            .await
            .map_err(|source| {
                if partitions::is_missing_partition(&source) {
                    // Dropped behind this process's back: created again on the next try.
                    self.partitions.forget(batch.period());
                }
                StoreError::Query {
                    doing: "storing the batch",
                    source,
                }
            })?;
            sqlx::query("UPDATE meters SET last_sequence = $2 WHERE meter_id = $1")
                .bind(meter)
                .bind(sequence)
                .execute(&mut *tx)
                .await
                .map_err(query_error("advancing the meter's cursor"))?;
            match finish {
                Finish::Commit => {
                    tx.commit()
                        .await
                        .map_err(query_error("committing the batch"))?;
                    self.changed("batch");
                }
                #[cfg(test)]
                Finish::Abandon => drop(tx),
            }
            return Ok(InsertOutcome::Inserted);
        } else if batch.sequence() <= last {
            let stored: Option<String> = sqlx::query_scalar(
                "SELECT content_digest FROM batches WHERE meter_id = $1 AND sequence = $2",
            )
            .bind(meter)
            .bind(sequence)
            .fetch_optional(&mut *tx)
            .await
            .map_err(query_error("reading the stored batch's digest"))?;
            match stored {
                Some(digest) if digest == batch.digest().to_hex() => {
                    InsertOutcome::Duplicate { last }
                }
                Some(_) => InsertOutcome::Conflict { last },
                None => {
                    return Err(StoreError::Corrupt {
                        table: "batches",
                        reason: format!(
                            "meter {meter} has cursor {last} but no batch {}",
                            batch.sequence()
                        ),
                    });
                }
            }
        } else {
            InsertOutcome::Gap { expected: last + 1 }
        };
        // Nothing to keep (not even a new meter row).
        tx.rollback()
            .await
            .map_err(query_error("ending the transaction"))?;
        Ok(outcome)
    }

    /// The highest sequence stored for `meter_id`, 0 when none.
    ///
    /// # Errors
    /// When the database fails.
    pub async fn last_sequence(&self, meter_id: &MeterId) -> Result<u64, StoreError> {
        let last: Option<i64> =
            sqlx::query_scalar("SELECT last_sequence FROM meters WHERE meter_id = $1")
                .bind(meter_id.as_str())
                .fetch_optional(&self.pool)
                .await
                .map_err(query_error("reading the meter's cursor"))?;
        last.map_or(Ok(0), |last| from_db("meters", "last_sequence", last))
    }

    /// One page of the billing lanes of `group` in `period`, ordered by (meter, sequence),
    /// starting after `after` (from the start when `None`); at most `limit` batches (capped
    /// at [`MAX_PAGE_SIZE`]); batches whose lane was pruned ([`Store::prune_billing_lanes`])
    /// are left out. The billing job feeds them to a
    /// [`GroupAccumulator`](seer_core::circuits::billing::GroupAccumulator) page by page, so
    /// memory stays bounded however many homes the group has. An empty page is the end.
    ///
    /// # Errors
    /// When the database fails or a row is unreadable.
    pub async fn group_batches(
        &self,
        period: Period,
        group: u32,
        after: Option<&BatchKey>,
        limit: u32,
    ) -> Result<Vec<GroupBatch>, StoreError> {
        let limit = i64::from(limit.clamp(1, MAX_PAGE_SIZE));
        let (after_meter, after_sequence) =
            after.map_or(("", 0), |key| (key.meter_id.as_str(), to_db(key.sequence)));
        // Meter ids are never empty, so ("", 0) precedes every row.
        let rows = sqlx::query(
            "SELECT meter_id, sequence, billing_position, billing_lane FROM batches \
             WHERE period = $1 AND billing_group = $2 AND billing_lane IS NOT NULL \
             AND (meter_id > $3 OR (meter_id = $3 AND sequence > $4)) \
             ORDER BY meter_id, sequence LIMIT $5",
        )
        .bind(period.to_string())
        .bind(i64::from(group))
        .bind(after_meter)
        .bind(after_sequence)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(query_error("reading a billing group's batches"))?;
        rows.iter().map(group_batch_from_row).collect()
    }

    /// The meters of billing group `group` with batches in `period`, by meter id.
    ///
    /// # Errors
    /// When the database fails or a stored meter id is invalid.
    pub async fn group_meters(
        &self,
        period: Period,
        group: u32,
    ) -> Result<Vec<MeterId>, StoreError> {
        let rows = sqlx::query(
            "SELECT DISTINCT meter_id FROM batches WHERE period = $1 AND billing_group = $2 \
             ORDER BY meter_id",
        )
        .bind(period.to_string())
        .bind(i64::from(group))
        .fetch_all(&self.pool)
        .await
        .map_err(query_error("reading a billing group's meters"))?;
        rows.iter()
            .map(|row| {
                let id: String = row
                    .try_get("meter_id")
                    .map_err(query_error("reading a meter id"))?;
                MeterId::try_new(id.as_str()).map_err(|_| StoreError::Corrupt {
                    table: "batches",
                    reason: format!("meter id {id:?}"),
                })
            })
            .collect()
    }

    /// The closing billing lanes of `group` in `period`: for each meter of the group with
    /// batches in the period, its highest-sequence batch of the period, if that batch ends
    /// where the period ends (the first instant of the next month, in the UTC offset the meter
    /// stated). Period-to-date lanes make that one batch the home's whole month; meters whose
    /// month is not closed yet are left out, and so are those whose closing lane was pruned
    /// ([`Store::prune_billing_lanes`]: their bill was released long ago and is never computed
    /// again). Ordered by meter.
    ///
    /// # Errors
    /// When the database fails or a row is unreadable.
    pub async fn closing_batches(
        &self,
        period: Period,
        group: u32,
    ) -> Result<Vec<GroupBatch>, StoreError> {
        let rows = sqlx::query(
            "SELECT b.meter_id, b.sequence, b.billing_position, b.billing_lane, b.end_us, \
             b.utc_offset_s FROM batches b \
             WHERE b.period = $1 AND b.billing_group = $2 AND b.billing_lane IS NOT NULL \
             AND b.sequence = \
             (SELECT MAX(b2.sequence) FROM batches b2 \
              WHERE b2.meter_id = b.meter_id AND b2.period = b.period) \
             ORDER BY b.meter_id",
        )
        .bind(period.to_string())
        .bind(i64::from(group))
        .fetch_all(&self.pool)
        .await
        .map_err(query_error("reading a billing group's closing batches"))?;
        let read = query_error("reading a billing group's closing batches");
        let mut closing = Vec::with_capacity(rows.len());
        for row in &rows {
            let end_us: i64 = row.try_get("end_us").map_err(read)?;
            let offset_s: i64 = row.try_get("utc_offset_s").map_err(read)?;
            let local_end = period
                .end_day()
                .and_hms_opt(0, 0, 0)
                .map(|t| t.and_utc().timestamp_micros());
            if local_end.is_some_and(|end| end - offset_s * 1_000_000 == end_us) {
                closing.push(group_batch_from_row(row)?);
            }
        }
        Ok(closing)
    }

    /// Records a bill the key authority released, with its cells, in one transaction
    /// (idempotent: a bill already recorded for the meter and period is kept, cells and all).
    ///
    /// # Errors
    /// When the database fails; nothing is recorded then.
    pub async fn record_bill(&self, bill: &StoredBill) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        let inserted = sqlx::query(
            "INSERT INTO bills (meter_id, period, amount_paise, closing_sequence, audit_sequence, \
             released_at_us) VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (meter_id, period) DO NOTHING",
        )
        .bind(bill.meter_id.as_str())
        .bind(bill.period.to_string())
        .bind(bill.amount_paise)
        .bind(to_db(bill.closing_sequence))
        .bind(to_db(bill.audit_sequence))
        .bind(bill.released_at_us)
        .execute(&mut *tx)
        .await
        .map_err(query_error("recording a released bill"))?
        .rows_affected();
        if inserted == 1 {
            for (cell, slab) in bill.slabs.iter().enumerate() {
                sqlx::query(
                    "INSERT INTO bill_cells (meter_id, period, cell, label, wh) \
                     VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(bill.meter_id.as_str())
                .bind(bill.period.to_string())
                .bind(to_db(cell as u64))
                .bind(slab.label.as_str())
                .bind(to_db(slab.wh))
                .execute(&mut *tx)
                .await
                .map_err(query_error("recording a released bill's cells"))?;
            }
        }
        tx.commit()
            .await
            .map_err(query_error("committing a released bill"))?;
        if inserted == 1 {
            self.changed("bill");
        }
        Ok(())
    }

    /// The released bills of `period`, by meter, with their cells.
    ///
    /// # Errors
    /// When the database fails or a row is unreadable.
    pub async fn bills(&self, period: Period) -> Result<Vec<StoredBill>, StoreError> {
        let rows = sqlx::query(
            "SELECT meter_id, period, amount_paise, closing_sequence, audit_sequence, \
             released_at_us FROM bills WHERE period = $1 ORDER BY meter_id",
        )
        .bind(period.to_string())
        .fetch_all(&self.pool)
        .await
        .map_err(query_error("reading released bills"))?;
        let cells = sqlx::query(
            "SELECT meter_id, period, cell, label, wh FROM bill_cells WHERE period = $1 \
             ORDER BY meter_id, cell",
        )
        .bind(period.to_string())
        .fetch_all(&self.pool)
        .await
        .map_err(query_error("reading released bills' cells"))?;
        bills_with_cells(&rows, &cells)
    }

    /// The released bills of `meter_id`, oldest period first (only `period`'s when given),
    /// with their cells.
    ///
    /// # Errors
    /// When the database fails or a row is unreadable.
    pub async fn meter_bills(
        &self,
        meter_id: &MeterId,
        period: Option<Period>,
    ) -> Result<Vec<StoredBill>, StoreError> {
        // '' matches no period: `$2 = ''` selects them all.
        let period = period.map(|p| p.to_string()).unwrap_or_default();
        let rows = sqlx::query(
            "SELECT meter_id, period, amount_paise, closing_sequence, audit_sequence, \
             released_at_us FROM bills WHERE meter_id = $1 AND ($2 = '' OR period = $2) \
             ORDER BY period",
        )
        .bind(meter_id.as_str())
        .bind(period.clone())
        .fetch_all(&self.pool)
        .await
        .map_err(query_error("reading a meter's bills"))?;
        let cells = sqlx::query(
            "SELECT meter_id, period, cell, label, wh FROM bill_cells \
             WHERE meter_id = $1 AND ($2 = '' OR period = $2) ORDER BY period, cell",
        )
        .bind(meter_id.as_str())
        .bind(period)
        .fetch_all(&self.pool)
        .await
        .map_err(query_error("reading a meter's bills' cells"))?;
        bills_with_cells(&rows, &cells)
    }

    /// Per period, the total energy and the amount of `meter_id`'s released bills, oldest
    /// first.
    ///
    /// # Errors
    /// When the database fails or a row is unreadable.
    pub async fn billed_usage(&self, meter_id: &MeterId) -> Result<Vec<BilledPeriod>, StoreError> {
        let rows = sqlx::query(
            "SELECT b.period, b.amount_paise, \
             CAST(COALESCE((SELECT SUM(c.wh) FROM bill_cells c \
                  WHERE c.meter_id = b.meter_id AND c.period = b.period), 0) AS BIGINT) \
             AS total_wh FROM bills b WHERE b.meter_id = $1 ORDER BY b.period",
        )
        .bind(meter_id.as_str())
        .fetch_all(&self.pool)
        .await
        .map_err(query_error("summarizing a meter's bills"))?;
        let read = query_error("reading a meter's bill summary");
        rows.iter()
            .map(|row| {
                Ok(BilledPeriod {
                    period: period_from_db("bills", row.try_get("period").map_err(read)?)?,
                    total_wh: from_db("bill_cells", "wh", row.try_get("total_wh").map_err(read)?)?,
                    amount_paise: row.try_get("amount_paise").map_err(read)?,
                })
            })
            .collect()
    }

    /// The usage summary of `meter_id` in `period`: batch and reading counts, the first start
    /// and last end, and the ε spent — never a decrypted value.
    ///
    /// # Errors
    /// When the database fails or a row is unreadable.
    pub async fn usage_summary(
        &self,
        meter_id: &MeterId,
        period: Period,
    ) -> Result<UsageSummary, StoreError> {
        let row = sqlx::query(
            "SELECT CAST(COUNT(*) AS BIGINT) AS batches, \
             CAST(COALESCE(SUM(readings), 0) AS BIGINT) AS readings, \
             MIN(start_us) AS first_start_us, MAX(end_us) AS last_end_us, \
             CAST(COALESCE(SUM(epsilon_spent), 0) AS DOUBLE PRECISION) AS epsilon_spent \
             FROM batches WHERE meter_id = $1 AND period = $2",
        )
        .bind(meter_id.as_str())
        .bind(period.to_string())
        .fetch_one(&self.pool)
        .await
        .map_err(query_error("summarizing a meter's usage"))?;
        let get_i64 = |column: &'static str| -> Result<Option<i64>, StoreError> {
            row.try_get::<Option<i64>, _>(column)
                .map_err(query_error("reading a usage summary"))
        };
        let instant = |column: &'static str| -> Result<Option<DateTime<Utc>>, StoreError> {
            get_i64(column)?
                .map(|micros| {
                    utc_from_micros(micros).ok_or_else(|| StoreError::Corrupt {
                        table: "batches",
                        reason: format!("{column} {micros} is out of range"),
                    })
                })
                .transpose()
        };
        Ok(UsageSummary {
            meter_id: meter_id.clone(),
            period,
            batches: from_db("batches", "count", get_i64("batches")?.unwrap_or(0))?,
            readings: from_db("batches", "readings", get_i64("readings")?.unwrap_or(0))?,
            first_start: instant("first_start_us")?,
            last_end: instant("last_end_us")?,
            epsilon_spent: row
                .try_get::<Option<f64>, _>("epsilon_spent")
                .map_err(query_error("reading a usage summary"))?
                .unwrap_or(0.0),
        })
    }
}

fn period_from_db(table: &'static str, text: String) -> Result<Period, StoreError> {
    text.parse().map_err(|_| StoreError::Corrupt {
        table,
        reason: format!("period {text:?} is not YYYY-MM"),
    })
}

/// Bills from `bills` rows, each with its rows of `cells` (both selected by the same filter).
fn bills_with_cells(rows: &[AnyRow], cells: &[AnyRow]) -> Result<Vec<StoredBill>, StoreError> {
    let read = query_error("reading released bills");
    let mut by_bill: std::collections::HashMap<(String, String), Vec<SlabEnergy>> =
        std::collections::HashMap::new();
    for row in cells {
        let key = (
            row.try_get::<String, _>("meter_id").map_err(read)?,
            row.try_get::<String, _>("period").map_err(read)?,
        );
        // Ordered by cell: the vector's order is the tariff's cell order.
        by_bill.entry(key).or_default().push(SlabEnergy {
            label: row.try_get("label").map_err(read)?,
            wh: from_db("bill_cells", "wh", row.try_get("wh").map_err(read)?)?,
        });
    }
    rows.iter()
        .map(|row| {
            let meter_id: String = row.try_get("meter_id").map_err(read)?;
            let period: String = row.try_get("period").map_err(read)?;
            let slabs = by_bill
                .remove(&(meter_id.clone(), period.clone()))
                .unwrap_or_default();
            Ok(StoredBill {
                meter_id: MeterId::try_new(meter_id).map_err(|e| StoreError::Corrupt {
                    table: "bills",
                    reason: e.to_string(),
                })?,
                period: period_from_db("bills", period)?,
                amount_paise: row.try_get("amount_paise").map_err(read)?,
                closing_sequence: from_db(
                    "bills",
                    "closing_sequence",
                    row.try_get("closing_sequence").map_err(read)?,
                )?,
                audit_sequence: from_db(
                    "bills",
                    "audit_sequence",
                    row.try_get("audit_sequence").map_err(read)?,
                )?,
                released_at_us: row.try_get("released_at_us").map_err(read)?,
                slabs,
            })
        })
        .collect()
}

fn group_batch_from_row(row: &AnyRow) -> Result<GroupBatch, StoreError> {
    let read = query_error("reading a billing group's batches");
    let meter_id: String = row.try_get("meter_id").map_err(read)?;
    let sequence: i64 = row.try_get("sequence").map_err(read)?;
    let position: i64 = row.try_get("billing_position").map_err(read)?;
    let billing_lane: Vec<u8> = row.try_get("billing_lane").map_err(read)?;
    Ok(GroupBatch {
        meter_id: MeterId::try_new(meter_id).map_err(|e| StoreError::Corrupt {
            table: "batches",
            reason: e.to_string(),
        })?,
        sequence: from_db("batches", "sequence", sequence)?,
        billing_position: u32::try_from(position).map_err(|_| StoreError::Corrupt {
            table: "batches",
            reason: format!("billing_position {position} is out of range"),
        })?,
        billing_lane,
    })
}

/// Sequences are at most `i64::MAX` ([`crate::batch::MAX_SEQUENCE`]).
fn to_db(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn from_db(table: &'static str, column: &str, value: i64) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| StoreError::Corrupt {
        table,
        reason: format!("{column} {value} is negative"),
    })
}

/// [`seer_service::db::prepare_sqlite_url`], with this crate's error.
fn prepare_sqlite_url(url: &str) -> Result<String, StoreError> {
    seer_service::db::prepare_sqlite_url(url).map_err(|e| StoreError::CreateDirectory {
        path: e.path,
        source: e.source,
    })
}
