//! The inbox tables of the state database (`mqtt_inbox`, `mqtt_counters`): each sample is
//! committed here before its MQTT message is acknowledged.

use chrono::{NaiveDateTime, Utc};
use sqlx::{Row as _, SqlitePool};

use super::payload::{Register, Sample};
use crate::error::Error;

const TIME_FORMAT: &str = "%Y-%m-%dT%H:%M:%S";

/// What storing a sample did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stored {
    /// A new sample, committed.
    New,
    /// The same (topic, time) was stored already: a redelivery (counted). `same_register` is
    /// false when the stored register differs (the first one is kept, and a warning logged).
    Duplicate {
        /// Whether the stored register equals this one.
        same_register: bool,
    },
}

/// What the inbox of a topic holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InboxCounts {
    /// Samples stored.
    pub samples: u64,
    /// Messages refused as malformed.
    pub malformed: u64,
    /// Redeliveries of stored samples.
    pub duplicates: u64,
    /// The latest sample's time.
    pub latest: Option<NaiveDateTime>,
}

/// Stores `sample` of `topic` and commits.
///
/// # Errors
/// A database error.
pub async fn store(pool: &SqlitePool, topic: &str, sample: &Sample) -> Result<Stored, Error> {
    let mut tx = pool
        .begin()
        .await
        .map_err(Error::db("starting the inbox transaction"))?;
    let time = sample.time.format(TIME_FORMAT).to_string();
    let inserted = sqlx::query(
        "INSERT INTO mqtt_inbox (topic, message_time, register_cwh, received_at) \
         VALUES (?, ?, ?, ?) ON CONFLICT (topic, message_time) DO NOTHING",
    )
    .bind(topic)
    .bind(&time)
    .bind(sample.register.units())
    .bind(Utc::now().to_rfc3339())
    .execute(&mut *tx)
    .await
    .map_err(Error::db("storing an mqtt sample"))?
    .rows_affected();
    let outcome = if inserted == 1 {
        Stored::New
    } else {
        let stored: i64 =
            sqlx::query("SELECT register_cwh FROM mqtt_inbox WHERE topic = ? AND message_time = ?")
                .bind(topic)
                .bind(&time)
                .fetch_one(&mut *tx)
                .await
                .map_err(Error::db("reading a stored mqtt sample"))?
                .get(0);
        bump(&mut tx, topic, Counter::Duplicates).await?;
        Stored::Duplicate {
            same_register: stored == sample.register.units(),
        }
    };
    tx.commit()
        .await
        .map_err(Error::db("committing an mqtt sample"))?;
    Ok(outcome)
}

/// Counts a malformed message of `topic` and commits.
///
/// # Errors
/// A database error.
pub async fn count_malformed(pool: &SqlitePool, topic: &str) -> Result<(), Error> {
    let mut tx = pool
        .begin()
        .await
        .map_err(Error::db("starting the inbox transaction"))?;
    bump(&mut tx, topic, Counter::Malformed).await?;
    tx.commit()
        .await
        .map_err(Error::db("counting a malformed mqtt message"))
}

/// Which counter [`bump`] raises.
#[derive(Clone, Copy)]
enum Counter {
    Malformed,
    Duplicates,
}

async fn bump(
    tx: &mut sqlx::Transaction<'static, sqlx::Sqlite>,
    topic: &str,
    counter: Counter,
) -> Result<(), Error> {
    let sql = match counter {
        Counter::Malformed => {
            "INSERT INTO mqtt_counters (topic, malformed) VALUES (?, 1) \
             ON CONFLICT (topic) DO UPDATE SET malformed = malformed + 1"
        }
        Counter::Duplicates => {
            "INSERT INTO mqtt_counters (topic, duplicates) VALUES (?, 1) \
             ON CONFLICT (topic) DO UPDATE SET duplicates = duplicates + 1"
        }
    };
    sqlx::query(sql)
        .bind(topic)
        .execute(&mut **tx)
        .await
        .map_err(Error::db("counting mqtt messages"))?;
    Ok(())
}

/// The samples of `topic` at or after `since` (all without it), in time order.
///
/// # Errors
/// A database error, or a stored row that does not parse ([`Error::CorruptState`]).
pub async fn samples(
    pool: &SqlitePool,
    topic: &str,
    since: Option<NaiveDateTime>,
) -> Result<Vec<Sample>, Error> {
    let since = since
        .map(|t| t.format(TIME_FORMAT).to_string())
        .unwrap_or_default();
    let rows = sqlx::query(
        "SELECT message_time, register_cwh FROM mqtt_inbox \
         WHERE topic = ? AND message_time >= ? ORDER BY message_time",
    )
    .bind(topic)
    .bind(since)
    .fetch_all(pool)
    .await
    .map_err(Error::db("reading the mqtt inbox"))?;
    rows.iter()
        .map(|row| {
            let time: String = row.get(0);
            let units: i64 = row.get(1);
            let corrupt = |what: &str| Error::CorruptState {
                reason: format!("mqtt_inbox row at {time:?}: {what}"),
            };
            Ok(Sample {
                time: NaiveDateTime::parse_from_str(&time, TIME_FORMAT)
                    .map_err(|_| corrupt("bad time"))?,
                register: Register::try_from_units(units).map_err(|_| corrupt("bad register"))?,
            })
        })
        .collect()
}

/// The counts of `topic`'s inbox.
///
/// # Errors
/// A database error.
pub async fn counts(pool: &SqlitePool, topic: &str) -> Result<InboxCounts, Error> {
    let row = sqlx::query(
        "SELECT COUNT(*), MAX(message_time), \
         (SELECT malformed FROM mqtt_counters WHERE topic = ?1), \
         (SELECT duplicates FROM mqtt_counters WHERE topic = ?1) \
         FROM mqtt_inbox WHERE topic = ?1",
    )
    .bind(topic)
    .fetch_one(pool)
    .await
    .map_err(Error::db("counting the mqtt inbox"))?;
    let latest: Option<String> = row.get(1);
    Ok(InboxCounts {
        samples: u64::try_from(row.get::<i64, _>(0)).unwrap_or(0),
        malformed: u64::try_from(row.get::<Option<i64>, _>(2).unwrap_or(0)).unwrap_or(0),
        duplicates: u64::try_from(row.get::<Option<i64>, _>(3).unwrap_or(0)).unwrap_or(0),
        latest: latest.and_then(|t| NaiveDateTime::parse_from_str(&t, TIME_FORMAT).ok()),
    })
}
