//! The dashboard's read-only view of the meter's state database.
//!
//! `meter-client run` holds the state directory's lock while it runs, and the dashboard must
//! show its batches as they arrive, so the dashboard never opens a [`StateStore`]: it opens
//! `state.db` **read-only** (WAL mode lets it read beside the writer), runs no migration and
//! writes nothing. It reads the `readings` table (written with each batch), the lane state's
//! privacy accountant and the privacy ledger.
//!
//! [`StateStore`]: crate::queue::StateStore

use std::path::Path;
use std::time::Duration;

use chrono::{NaiveDate, NaiveDateTime};
use seer_core::dp::PrivacyAccountant;
use seer_core::units::Wh;
use sqlx::Row as _;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};

use crate::batch::QueuedReading;
use crate::error::Error;
use crate::queue::DATABASE_FILE;

const TIME_FORMAT: &str = "%Y-%m-%dT%H:%M:%S";

/// A read-only connection to a meter's state database.
#[derive(Debug, Clone)]
pub struct StateReader {
    pool: SqlitePool,
}

/// One day of the privacy ledger, all lanes together.
#[derive(Clone, Debug, PartialEq)]
pub struct LedgerDay {
    /// The day.
    pub day: NaiveDate,
    /// The lane (`analytics` or `forecast`).
    pub lane: String,
    /// Readings released.
    pub readings: i64,
    /// ε per reading.
    pub epsilon_per_reading: f64,
}

impl StateReader {
    /// Opens `dir/state.db` read-only.
    ///
    /// # Errors
    /// [`Error::StateDirectory`] when there is no state database (the meter never ran).
    pub async fn open(dir: &Path) -> Result<Self, Error> {
        let path = dir.join(DATABASE_FILE);
        if !path.is_file() {
            return Err(Error::StateDirectory {
                path: dir.to_path_buf(),
                reason: format!("no {DATABASE_FILE}: run `meter-client run` first"),
            });
        }
        let options = SqliteConnectOptions::new()
            .filename(&path)
            .read_only(true)
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .map_err(Error::db("opening the state database read-only"))?;
        Ok(Self { pool })
    }

    /// The readings whose start lies in `[from, to)`, in time order.
    ///
    /// # Errors
    /// A database error, or a row that does not parse.
    pub async fn readings(
        &self,
        from: NaiveDateTime,
        to: NaiveDateTime,
    ) -> Result<Vec<QueuedReading>, Error> {
        let rows = sqlx::query(
            "SELECT start_at, interval_s, wh, analytics_wh, sequence FROM readings \
             WHERE start_at >= ? AND start_at < ? ORDER BY start_at",
        )
        .bind(from.format(TIME_FORMAT).to_string())
        .bind(to.format(TIME_FORMAT).to_string())
        .fetch_all(&self.pool)
        .await
        .map_err(Error::db("reading the stored readings"))?;
        rows.iter()
            .map(|row| {
                let corrupt = |what: &str| Error::CorruptState {
                    reason: format!("readings row: {what}"),
                };
                let start: String = row.try_get("start_at").map_err(|_| corrupt("start"))?;
                let interval: i64 = row.try_get("interval_s").map_err(|_| corrupt("interval"))?;
                let wh: i64 = row.try_get("wh").map_err(|_| corrupt("wh"))?;
                let sequence: i64 = row.try_get("sequence").map_err(|_| corrupt("sequence"))?;
                Ok(QueuedReading {
                    start: NaiveDateTime::parse_from_str(&start, TIME_FORMAT)
                        .map_err(|_| corrupt("start"))?,
                    energy: Wh::try_new(wh)?,
                    interval_s: u32::try_from(interval).map_err(|_| corrupt("interval"))?,
                    analytics: row
                        .try_get("analytics_wh")
                        .map_err(|_| corrupt("analytics"))?,
                    sequence: u64::try_from(sequence).map_err(|_| corrupt("sequence"))?,
                })
            })
            .collect()
    }

    /// The start of the last stored reading and the last batch that stored one (the
    /// dashboard's change marker).
    ///
    /// # Errors
    /// A database error.
    pub async fn latest(&self) -> Result<Option<(NaiveDateTime, u64)>, Error> {
        let row: Option<(String, i64)> = sqlx::query_as(
            "SELECT start_at, sequence FROM readings ORDER BY start_at DESC LIMIT 1",
        )
        .fetch_optional(&self.pool)
        .await
        .map_err(Error::db("reading the latest reading"))?;
        Ok(row.and_then(|(t, s)| {
            Some((
                NaiveDateTime::parse_from_str(&t, TIME_FORMAT).ok()?,
                u64::try_from(s).ok()?,
            ))
        }))
    }

    /// The analytics lane's privacy accountant after the last committed batch.
    ///
    /// # Errors
    /// A database error or an accountant that does not parse.
    pub async fn accountant(&self) -> Result<Option<PrivacyAccountant>, Error> {
        let json: Option<Option<String>> =
            sqlx::query_scalar("SELECT accountant FROM lane_state WHERE id = 1")
                .fetch_optional(&self.pool)
                .await
                .map_err(Error::db("reading the privacy accountant"))?;
        json.flatten()
            .map(|j| {
                serde_json::from_str(&j).map_err(|e| Error::CorruptState {
                    reason: format!("lane state accountant: {e}"),
                })
            })
            .transpose()
    }

    /// The meter id recorded in the state, if the meter has run.
    ///
    /// # Errors
    /// A database error.
    pub async fn meter_id(&self) -> Result<Option<String>, Error> {
        sqlx::query_scalar("SELECT meter_id FROM identity WHERE id = 1")
            .fetch_optional(&self.pool)
            .await
            .map_err(Error::db("reading the identity"))
    }

    /// The privacy ledger's days in `[from, to)`.
    ///
    /// # Errors
    /// A database error.
    pub async fn ledger(&self, from: NaiveDate, to: NaiveDate) -> Result<Vec<LedgerDay>, Error> {
        let rows: Vec<(String, String, i64, f64)> = sqlx::query_as(
            "SELECT day, lane, readings, epsilon_per_reading FROM privacy_ledger \
             WHERE day >= ? AND day < ? ORDER BY day, lane",
        )
        .bind(from.to_string())
        .bind(to.to_string())
        .fetch_all(&self.pool)
        .await
        .map_err(Error::db("reading the privacy ledger"))?;
        rows.into_iter()
            .map(|(day, lane, readings, epsilon_per_reading)| {
                Ok(LedgerDay {
                    day: day.parse().map_err(|_| Error::CorruptState {
                        reason: format!("privacy ledger day {day:?}"),
                    })?,
                    lane,
                    readings,
                    epsilon_per_reading,
                })
            })
            .collect()
    }
}
