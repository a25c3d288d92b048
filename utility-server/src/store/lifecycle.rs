//! The store's storage lifecycle: pruning the billing lanes released bills no longer need
//! ([`Store::prune_billing_lanes`]) and what the store occupies ([`Store::storage_report`]).
//!
//! # Retention of billing lanes
//!
//! A batch's billing lane is read only by the billing job, and only until the bill of its
//! (meter, period) is released: the key authority releases a bill once, and the billing job
//! leaves out meters whose lanes are gone ([`Store::closing_batches`],
//! [`Store::group_batches`]). So once a bill was released longer ago than the retention
//! (`[storage] billing_lane_retention_days`), the prune sets the billing lanes of every batch
//! of that (meter, period) to NULL. The batch row stays — its content digest, the billing
//! lane's BLAKE3, the meter's signature and certificate and the analytics lane are the
//! evidence of what the meter sent — and so does the bill. The bill is stamped
//! (`bills.lanes_pruned_at_us`) in the same transaction, so each run visits only bills it
//! has not pruned yet.
//!
//! The prune works in transactions of [`PRUNE_CHUNK`] bills. On PostgreSQL each takes an
//! advisory lock ([`PRUNE_LOCK`]), so prunes started on several replicas at once take turns
//! and count every lane once.
//!
//! Space: SQLite puts the freed pages on its free list, and the next batches reuse them (one
//! file). PostgreSQL frees the lanes' TOAST chunks for reuse *within the month's partition*
//! only, and an old month receives no more batches, so its file would not shrink: a month
//! left without any billing lane ([`PruneReport::months_fully_pruned`]) can be rewritten
//! with `VACUUM FULL` of its partition alone ([`Store::compact_months`], `utility-server
//! prune --compact`), which returns the space to the operating system while locking only
//! that old month.

use std::time::Duration;

use serde::Serialize;
use sqlx::Row as _;

use super::partitions::{partition_name, partition_period};
use super::{Backend, Store, StoreError, from_db, period_from_db, query_error};
use crate::batch::Period;

/// Bills pruned per transaction.
pub const PRUNE_CHUNK: u32 = 256;

/// The key of the PostgreSQL advisory lock each prune transaction takes: "SEERPRUN".
pub const PRUNE_LOCK: i64 = 0x5345_4552_5052_554E;

/// What [`Store::prune_billing_lanes`] did (or, in a dry run, would do).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PruneReport {
    /// Nothing was changed: the counts say what a prune would do now.
    pub dry_run: bool,
    /// Bills released before this instant (µs since the Unix epoch) were pruned.
    pub cutoff_us: i64,
    /// Released bills whose (meter, period) was pruned (in a dry run: would be).
    pub home_months: u64,
    /// Billing lanes set to NULL.
    pub lanes_pruned: u64,
    /// Their ciphertext bytes.
    pub bytes_freed: u64,
    /// The periods of those lanes, oldest first.
    pub months: Vec<String>,
    /// Of those periods, the ones no billing lane is left in (a dry run does not know).
    pub months_fully_pruned: Vec<String>,
}

/// The bytes of one table (with its indexes and, in PostgreSQL, its TOAST data).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TableBytes {
    /// The table, or the partition (`batches_p2027_01`).
    pub name: String,
    /// Bytes on disk.
    pub bytes: u64,
}

/// What the store occupies ([`Store::storage_report`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StorageReport {
    /// `sqlite` or `postgres`.
    pub backend: String,
    /// The whole database: `pg_database_size`, or SQLite's `page_count * page_size` (the
    /// WAL file not counted).
    pub database_bytes: u64,
    /// Per table (and per partition of `batches`), largest first: PostgreSQL's
    /// `pg_total_relation_size`, SQLite's `dbstat` pages of the table and its indexes.
    pub tables: Vec<TableBytes>,
    /// `batches` with its partitions, indexes and TOAST data.
    pub batch_bytes: u64,
    /// Stored batches.
    pub batches: u64,
    /// Meters with batches.
    pub meters: u64,
    /// Periods with batches.
    pub periods: u64,
    /// Distinct (meter, period) with batches.
    pub home_months: u64,
    /// The billing lanes' ciphertext bytes (pruned lanes count 0).
    pub billing_lane_bytes: u64,
    /// The analytics lanes' ciphertext bytes.
    pub analytics_lane_bytes: u64,
    /// Batches whose billing lane was pruned.
    pub pruned_lanes: u64,
    /// `batch_bytes / home_months` (0 without batches).
    pub batch_bytes_per_home_month: f64,
    /// `database_bytes / home_months` (0 without batches).
    pub database_bytes_per_home_month: f64,
}

fn to_u64(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

impl Store {
    /// Prunes the billing lanes of every (meter, period) whose bill was released more than
    /// `retention` ago (see the [module documentation](self)).
    ///
    /// # Errors
    /// When the database fails; the chunks committed before stay pruned.
    #[tracing::instrument(name = "store.prune_billing_lanes", skip(self))]
    pub async fn prune_billing_lanes(
        &self,
        retention: Duration,
    ) -> Result<PruneReport, StoreError> {
        self.prune_billing_lanes_before(cutoff(retention), false)
            .await
    }

    /// What [`Store::prune_billing_lanes`] would prune now, changing nothing.
    ///
    /// # Errors
    /// When the database fails.
    pub async fn plan_billing_lane_prune(
        &self,
        retention: Duration,
    ) -> Result<PruneReport, StoreError> {
        self.prune_billing_lanes_before(cutoff(retention), true)
            .await
    }

    /// Prunes (or, with `dry_run`, counts) the billing lanes of every (meter, period) whose
    /// bill was released before `cutoff_us` (µs since the Unix epoch) and not pruned yet.
    ///
    /// # Errors
    /// When the database fails; the chunks committed before stay pruned.
    pub async fn prune_billing_lanes_before(
        &self,
        cutoff_us: i64,
        dry_run: bool,
    ) -> Result<PruneReport, StoreError> {
        let mut report = PruneReport {
            dry_run,
            cutoff_us,
            home_months: 0,
            lanes_pruned: 0,
            bytes_freed: 0,
            months: Vec::new(),
            months_fully_pruned: Vec::new(),
        };
        let mut months = std::collections::BTreeSet::new();
        let (mut after_meter, mut after_period) = (String::new(), String::new());
        let now = chrono::Utc::now().timestamp_micros();
        loop {
            let mut tx = self.begin_write().await?;
            if self.backend == Backend::Postgres {
                sqlx::query("SELECT pg_advisory_xact_lock($1)")
                    .bind(PRUNE_LOCK)
                    .execute(&mut *tx)
                    .await
                    .map_err(query_error("taking the prune lock"))?;
            }
            // Meter ids are never empty: ('', '') precedes every bill.
            let keys = sqlx::query(
                "SELECT meter_id, period FROM bills \
                 WHERE lanes_pruned_at_us IS NULL AND released_at_us < $1 \
                 AND (meter_id > $2 OR (meter_id = $2 AND period > $3)) \
                 ORDER BY meter_id, period LIMIT $4",
            )
            .bind(cutoff_us)
            .bind(after_meter.as_str())
            .bind(after_period.as_str())
            .bind(i64::from(PRUNE_CHUNK))
            .fetch_all(&mut *tx)
            .await
            .map_err(query_error("reading the bills to prune"))?;
            if keys.is_empty() {
                tx.rollback()
                    .await
                    .map_err(query_error("ending the prune transaction"))?;
                break;
            }
            let read = query_error("reading a bill to prune");
            for key in &keys {
                let meter: String = key.try_get("meter_id").map_err(read)?;
                let period: String = key.try_get("period").map_err(read)?;
                let row = sqlx::query(
                    "SELECT CAST(COUNT(*) AS BIGINT) AS lanes, \
                     CAST(COALESCE(SUM(length(billing_lane)), 0) AS BIGINT) AS bytes \
                     FROM batches WHERE meter_id = $1 AND period = $2 \
                     AND billing_lane IS NOT NULL",
                )
                .bind(meter.as_str())
                .bind(period.as_str())
                .fetch_one(&mut *tx)
                .await
                .map_err(query_error("measuring the lanes to prune"))?;
                let lanes = to_u64(row.try_get("lanes").map_err(read)?);
                let bytes = to_u64(row.try_get("bytes").map_err(read)?);
                if !dry_run {
                    sqlx::query(
                        "UPDATE batches SET billing_lane = NULL \
                         WHERE meter_id = $1 AND period = $2 AND billing_lane IS NOT NULL",
                    )
                    .bind(meter.as_str())
                    .bind(period.as_str())
                    .execute(&mut *tx)
                    .await
                    .map_err(query_error("pruning billing lanes"))?;
                    sqlx::query(
                        "UPDATE bills SET lanes_pruned_at_us = $3 \
                         WHERE meter_id = $1 AND period = $2",
                    )
                    .bind(meter.as_str())
                    .bind(period.as_str())
                    .bind(now)
                    .execute(&mut *tx)
                    .await
                    .map_err(query_error("stamping a pruned bill"))?;
                }
                report.home_months += 1;
                report.lanes_pruned += lanes;
                report.bytes_freed += bytes;
                if lanes > 0 {
                    months.insert(period.clone());
                }
                (after_meter, after_period) = (meter, period);
            }
            if dry_run {
                tx.rollback()
                    .await
                    .map_err(query_error("ending the prune transaction"))?;
            } else {
                tx.commit()
                    .await
                    .map_err(query_error("committing pruned lanes"))?;
            }
        }
        report.months = months.into_iter().collect();
        if !dry_run {
            for month in &report.months {
                let left: i64 = sqlx::query_scalar(
                    "SELECT CAST(CASE WHEN EXISTS (SELECT 1 FROM batches \
                     WHERE period = $1 AND billing_lane IS NOT NULL) THEN 1 ELSE 0 END \
                     AS BIGINT)",
                )
                .bind(month.as_str())
                .fetch_one(&self.pool)
                .await
                .map_err(query_error("looking for lanes left in a month"))?;
                if left == 0 {
                    report.months_fully_pruned.push(month.clone());
                }
            }
        }
        tracing::info!(
            dry_run,
            home_months = report.home_months,
            lanes = report.lanes_pruned,
            bytes = report.bytes_freed,
            "pruned billing lanes"
        );
        Ok(report)
    }

    /// Rewrites the `batches` partitions of `months` (PostgreSQL: `VACUUM FULL` of each
    /// partition alone, which returns the space of pruned lanes to the operating system and
    /// locks only that month while it runs) and returns the partitions rewritten. SQLite
    /// reuses freed pages for new batches: nothing to do there (empty answer).
    ///
    /// # Errors
    /// When the database fails.
    pub async fn compact_months(&self, months: &[Period]) -> Result<Vec<String>, StoreError> {
        if self.backend != Backend::Postgres {
            return Ok(Vec::new());
        }
        let existing = self.batch_partitions().await?;
        let mut compacted = Vec::new();
        for &month in months {
            let name = partition_name(month);
            if !existing.contains(&name) {
                continue;
            }
            tracing::info!(partition = %name, "rewriting a pruned month");
            // The name is made of digits and `_` (a validated Period).
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!("VACUUM FULL {name}")))
                .execute(&self.pool)
                .await
                .map_err(query_error("rewriting a pruned month"))?;
            compacted.push(name);
        }
        Ok(compacted)
    }

    /// What the store occupies: bytes per table and partition, batches, meters, periods,
    /// (meter, period) pairs and the bytes per home-month. Reads every batch row's lane
    /// lengths (not the lanes): seconds on a large store.
    ///
    /// # Errors
    /// When the database fails.
    pub async fn storage_report(&self) -> Result<StorageReport, StoreError> {
        let read = query_error("reading the storage report");
        let (database_bytes, mut tables) = match self.backend {
            Backend::Postgres => {
                let total: i64 = sqlx::query_scalar(
                    "SELECT CAST(pg_database_size(current_database()) AS BIGINT)",
                )
                .fetch_one(&self.pool)
                .await
                .map_err(read)?;
                let rows = sqlx::query(
                    "SELECT CAST(c.relname AS TEXT) AS name, \
                     CAST(pg_total_relation_size(c.oid) AS BIGINT) AS bytes \
                     FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                     WHERE n.nspname = current_schema() AND c.relkind = 'r'",
                )
                .fetch_all(&self.pool)
                .await
                .map_err(read)?;
                (to_u64(total), table_bytes(&rows)?)
            }
            Backend::Sqlite => {
                let pages: i64 = sqlx::query_scalar("PRAGMA page_count")
                    .fetch_one(&self.pool)
                    .await
                    .map_err(read)?;
                let page_size: i64 = sqlx::query_scalar("PRAGMA page_size")
                    .fetch_one(&self.pool)
                    .await
                    .map_err(read)?;
                // Indexes count with their table.
                let rows = sqlx::query(
                    "SELECT COALESCE(m.tbl_name, d.name) AS name, \
                     CAST(SUM(d.pgsize) AS BIGINT) AS bytes \
                     FROM dbstat d LEFT JOIN sqlite_master m ON m.name = d.name \
                     GROUP BY COALESCE(m.tbl_name, d.name)",
                )
                .fetch_all(&self.pool)
                .await;
                let tables = match rows {
                    Ok(rows) => table_bytes(&rows)?,
                    Err(error) => {
                        tracing::warn!(%error, "no dbstat: no bytes per table");
                        Vec::new()
                    }
                };
                (to_u64(pages.saturating_mul(page_size)), tables)
            }
        };
        tables.sort_by(|a, b| b.bytes.cmp(&a.bytes).then_with(|| a.name.cmp(&b.name)));
        let batch_bytes = tables
            .iter()
            .filter(|t| t.name == "batches" || partition_period(&t.name).is_some())
            .map(|t| t.bytes)
            .sum();
        let row = sqlx::query(
            "SELECT CAST(COUNT(*) AS BIGINT) AS batches, \
             CAST(COALESCE(SUM(length(billing_lane)), 0) AS BIGINT) AS billing, \
             CAST(COALESCE(SUM(length(analytics_lane)), 0) AS BIGINT) AS analytics, \
             CAST(COALESCE(SUM(CASE WHEN billing_lane IS NULL THEN 1 ELSE 0 END), 0) AS BIGINT) \
             AS pruned, \
             CAST(COUNT(DISTINCT meter_id) AS BIGINT) AS meters, \
             CAST(COUNT(DISTINCT period) AS BIGINT) AS periods FROM batches",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(read)?;
        let home_months: i64 = sqlx::query_scalar(
            "SELECT CAST(COUNT(*) AS BIGINT) FROM \
             (SELECT DISTINCT meter_id, period FROM batches) AS home_months",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(read)?;
        let home_months = to_u64(home_months);
        let per_home_month = |bytes: u64| {
            if home_months == 0 {
                0.0
            } else {
                bytes as f64 / home_months as f64
            }
        };
        Ok(StorageReport {
            backend: match self.backend {
                Backend::Sqlite => "sqlite",
                Backend::Postgres => "postgres",
            }
            .to_owned(),
            database_bytes,
            batch_bytes,
            batches: from_db("batches", "count", row.try_get("batches").map_err(read)?)?,
            meters: from_db("batches", "meters", row.try_get("meters").map_err(read)?)?,
            periods: from_db("batches", "periods", row.try_get("periods").map_err(read)?)?,
            home_months,
            billing_lane_bytes: to_u64(row.try_get("billing").map_err(read)?),
            analytics_lane_bytes: to_u64(row.try_get("analytics").map_err(read)?),
            pruned_lanes: to_u64(row.try_get("pruned").map_err(read)?),
            batch_bytes_per_home_month: per_home_month(batch_bytes),
            database_bytes_per_home_month: per_home_month(database_bytes),
            tables,
        })
    }
}

/// Now minus `retention`, in µs since the Unix epoch.
fn cutoff(retention: Duration) -> i64 {
    let retention = i64::try_from(retention.as_micros()).unwrap_or(i64::MAX);
    chrono::Utc::now()
        .timestamp_micros()
        .saturating_sub(retention)
}

fn table_bytes(rows: &[sqlx::any::AnyRow]) -> Result<Vec<TableBytes>, StoreError> {
    let read = query_error("reading the bytes of a table");
    rows.iter()
        .map(|row| {
            Ok(TableBytes {
                name: row.try_get("name").map_err(read)?,
                bytes: to_u64(
                    row.try_get::<Option<i64>, _>("bytes")
                        .map_err(read)?
                        .unwrap_or(0),
                ),
            })
        })
        .collect()
}

/// The months of a [`PruneReport`] as periods (for [`Store::compact_months`]).
///
/// # Errors
/// When a month is not `YYYY-MM` (never, for a report of this store).
pub fn report_periods(months: &[String]) -> Result<Vec<Period>, StoreError> {
    months
        .iter()
        .map(|m| period_from_db("batches", m.clone()))
        .collect()
}
