//! Monthly partitions of `batches` on PostgreSQL.
//!
//! Since migration `20270202000000_batch_partitions`, PostgreSQL's `batches` is partitioned
//! by `LIST (period)`: one partition `batches_pYYYY_MM` per billing month (SQLite keeps one
//! table). Every read of the store names its period by equality, so the planner reads one
//! partition, and a month is the unit of billing, of retention and of compaction.
//!
//! There is no default partition: a batch of a month without a partition would be refused by
//! PostgreSQL. So [`Store::ensure_partition`] runs before every insert; it answers from a
//! cache shared by the clones of the [`Store`] (one per process) and otherwise, in a short
//! transaction of its own under a transaction-level advisory lock ([`PARTITION_LOCK`]),
//! creates the month's partition if it is missing — and the next month's, so that the
//! creation (which takes an `ACCESS EXCLUSIVE` lock on `batches` for a moment) normally
//! happens a month ahead rather than at midnight of the month's first day. Replicas racing
//! for the same new month queue on the advisory lock; the first creates the partitions, the
//! others find them (`to_regclass`) and create nothing. Without the lock two concurrent
//! `CREATE TABLE IF NOT EXISTS` of one name may fail with a unique violation in the catalog.
//!
//! The insert itself never runs inside this transaction, so a replica that waits for the
//! partition lock holds no lock any insert waits for.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};

use sqlx::Row as _;

use super::{Backend, Store, StoreError, query_error};
use crate::batch::Period;

/// The key of the PostgreSQL advisory lock partition creation takes (`pg_advisory_xact_lock`):
/// "SEERPART" in ASCII.
pub const PARTITION_LOCK: i64 = 0x5345_4552_5041_5254;

/// The name of the partition of `batches` holding `period` (`batches_p2027_01`).
#[must_use]
pub fn partition_name(period: Period) -> String {
    format!("batches_p{:04}_{:02}", period.year(), period.month())
}

/// The period a partition name names, `None` for other names.
#[must_use]
pub fn partition_period(name: &str) -> Option<Period> {
    let rest = name.strip_prefix("batches_p")?;
    let (year, month) = rest.split_once('_')?;
    if year.len() != 4 || month.len() != 2 {
        return None;
    }
    Period::try_new(year.parse().ok()?, month.parse().ok()?).ok()
}

/// The months whose partitions this process knows to exist (shared by a store's clones).
#[derive(Debug, Default, Clone)]
pub(super) struct KnownPartitions(Arc<Mutex<HashSet<Period>>>);

impl KnownPartitions {
    fn contains(&self, period: Period) -> bool {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(&period)
    }

    fn insert(&self, period: Period) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(period);
    }

    /// Forgets `period` (its partition turned out to be missing: created again next time).
    pub(super) fn forget(&self, period: Period) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&period);
    }
}

/// Whether `error` is PostgreSQL's refusal of a row no partition accepts.
pub(super) fn is_missing_partition(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(e) => {
            e.code().as_deref() == Some("23514") && e.message().contains("no partition")
        }
        _ => false,
    }
}

impl Store {
    /// Makes sure `batches` has the partition of `period` (and of the month after), creating
    /// them if missing; a no-op on SQLite and for months this process already saw (see the
    /// [module documentation](self)). Safe when several replicas race for the same month.
    ///
    /// # Errors
    /// When the database fails.
    pub async fn ensure_partition(&self, period: Period) -> Result<(), StoreError> {
        let months: Vec<Period> = std::iter::once(period).chain(period.next()).collect();
        // The next month too: its partition is then made a month ahead, every month.
        if self.backend != Backend::Postgres || months.iter().all(|&m| self.partitions.contains(m))
        {
            return Ok(());
        }
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(query_error("beginning a partition transaction"))?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(PARTITION_LOCK)
            .execute(&mut *tx)
            .await
            .map_err(query_error("taking the partition lock"))?;
        for &month in &months {
            let name = partition_name(month);
            let exists: bool =
                sqlx::query_scalar("SELECT to_regclass(CAST($1 AS TEXT)) IS NOT NULL")
                    .bind(name.as_str())
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(query_error("looking for a partition"))?;
            if !exists {
                tracing::info!(partition = %name, "creating the partition of a new month");
                // The name and the value are made of digits, `_` and `-` (a validated Period).
                let create = format!(
                    "CREATE TABLE IF NOT EXISTS {name} PARTITION OF batches \
                     FOR VALUES IN ('{month}')"
                );
                sqlx::raw_sql(sqlx::AssertSqlSafe(create))
                    .execute(&mut *tx)
                    .await
                    .map_err(query_error("creating a partition"))?;
            }
        }
        tx.commit()
            .await
            .map_err(query_error("committing a partition"))?;
        for month in months {
            self.partitions.insert(month);
        }
        Ok(())
    }

    /// The partitions of `batches` (PostgreSQL; empty on SQLite), oldest month first.
    ///
    /// # Errors
    /// When the database fails.
    pub async fn batch_partitions(&self) -> Result<Vec<String>, StoreError> {
        if self.backend != Backend::Postgres {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(
            "SELECT CAST(c.relname AS TEXT) AS name FROM pg_inherits i \
             JOIN pg_class c ON c.oid = i.inhrelid \
             WHERE i.inhparent = to_regclass('batches') ORDER BY 1",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(query_error("listing the partitions"))?;
        rows.iter()
            .map(|row| {
                row.try_get::<String, _>("name")
                    .map_err(query_error("reading a partition name"))
            })
            .collect()
    }
}
