//! The `group_total_releases` table: one row per released (noise group, hour).

use sqlx::{AnyConnection, Row as _};

use crate::release::ReleaseError;

/// One released hour, as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredHour {
    /// The hour's start, RFC 3339 in UTC.
    pub hour_start: String,
    /// Whole Wh in the hour, with noise.
    pub total_wh: i64,
    /// Whole Wh per interval, with noise.
    pub interval_wh: Vec<i64>,
    /// The fewest meters present in an interval of the hour.
    pub min_present: u32,
    /// ε per reading.
    pub epsilon: f64,
    /// Δ, Wh per reading.
    pub sensitivity_wh: i64,
    /// The audit entry that granted it.
    pub audit_seq: u64,
}

fn corrupt(what: &str) -> ReleaseError {
    ReleaseError::Database(sqlx::Error::Decode(
        format!("malformed group_total_releases row: {what}").into(),
    ))
}

/// The stored release of `group`'s hour starting at `hour_start`, if any.
pub(super) async fn released(
    conn: &mut AnyConnection,
    group: u32,
    hour_start: &str,
) -> Result<Option<StoredHour>, ReleaseError> {
    let row = sqlx::query(
        "SELECT hour_start, total_wh, interval_wh, min_present, epsilon, sensitivity_wh, \
         audit_seq FROM group_total_releases WHERE noise_group = $1 AND hour_start = $2",
    )
    .bind(i64::from(group))
    .bind(hour_start.to_owned())
    .fetch_optional(conn)
    .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let interval_text: String = row.try_get(2)?;
    let interval_wh = if interval_text.is_empty() {
        Vec::new()
    } else {
        interval_text
            .split(',')
            .map(|v| v.parse::<i64>().map_err(|_| corrupt("interval_wh")))
            .collect::<Result<_, _>>()?
    };
    Ok(Some(StoredHour {
        hour_start: row.try_get(0)?,
        total_wh: row.try_get(1)?,
        interval_wh,
        min_present: u32::try_from(row.try_get::<i64, _>(3)?)
            .map_err(|_| corrupt("min_present"))?,
        epsilon: row.try_get(4)?,
        sensitivity_wh: row.try_get(5)?,
        audit_seq: u64::try_from(row.try_get::<i64, _>(6)?).map_err(|_| corrupt("audit_seq"))?,
    }))
}

/// Records `hour` of `group` as released (inside the release's transaction).
pub(super) async fn insert(
    conn: &mut AnyConnection,
    group: u32,
    hour: &StoredHour,
    released_at_us: i64,
) -> Result<(), ReleaseError> {
    let interval_text = hour
        .interval_wh
        .iter()
        .map(i64::to_string)
        .collect::<Vec<_>>()
        .join(",");
    sqlx::query(
        "INSERT INTO group_total_releases (noise_group, hour_start, total_wh, interval_wh, \
         min_present, epsilon, sensitivity_wh, audit_seq, released_at_us) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(i64::from(group))
    .bind(hour.hour_start.clone())
    .bind(hour.total_wh)
    .bind(interval_text)
    .bind(i64::from(hour.min_present))
    .bind(hour.epsilon)
    .bind(hour.sensitivity_wh)
    .bind(i64::try_from(hour.audit_seq).map_err(|_| corrupt("audit_seq"))?)
    .bind(released_at_us)
    .execute(conn)
    .await?;
    Ok(())
}
