//! What the key authority released for the `daily` computation: `daily_forecasts` (the next
//! day's hours per meter, whole milli-kWh) and `daily_anomalies` (the day's score in
//! thousandths, the flag and a flagged day's explanation as JSON). Written by
//! [`Store::record_daily_release`] in one transaction with the decisions on the inputs the
//! release answers, so a crash leaves both or neither.

use chrono::Utc;
use serde::Serialize;
use sqlx::Row as _;
use sqlx::any::AnyRow;

use super::{
    InputHeader, InputStatus, Store, StoreError, decide_input, from_db, query_error, to_db,
};

/// One released forecast hour.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DailyForecast {
    /// The meter.
    pub meter_id: String,
    /// The forecast hour, `YYYY-MM-DDTHH:00`.
    pub hour: String,
    /// BLAKE3 (hex) of the model file.
    pub model_blake3: String,
    /// The forecast energy, milli-kWh (the key authority rounds to 0.001 kWh).
    pub kwh_milli: i64,
    /// The day whose input produced it (the forecast is of the next day).
    pub input_day: String,
    /// The input's evaluation group.
    pub group: u32,
    /// The audit entry that granted it.
    pub audit_seq: u64,
}

/// One released anomaly result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DailyAnomaly {
    /// The meter.
    pub meter_id: String,
    /// The day scored, `YYYY-MM-DD`.
    pub day: String,
    /// BLAKE3 (hex) of the model file.
    pub model_blake3: String,
    /// The score in thousandths (the key authority rounds to 0.001).
    pub score_milli: i64,
    /// Whether the score reached the model's threshold.
    pub flagged: bool,
    /// Flagged days only: the explanation as JSON.
    pub explanation: Option<String>,
    /// The input's evaluation group.
    pub group: u32,
    /// The audit entry that granted it.
    pub audit_seq: u64,
}

/// The sum of the released forecasts of one evaluation group in one hour.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GroupHourTotal {
    /// The evaluation group.
    pub group: u32,
    /// The hour, `YYYY-MM-DDTHH:00`.
    pub hour: String,
    /// Homes with a released forecast for the hour.
    pub homes: u64,
    /// The sum of their forecasts, milli-kWh.
    pub kwh_milli: i64,
}

/// One hour of a group's forecast total as the key authority released it
/// (`Analytics.ReleaseGroupForecast`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GroupForecastHour {
    /// The evaluation group.
    pub group: u32,
    /// The hour, `YYYY-MM-DDTHH:00`.
    pub hour: String,
    /// BLAKE3 (hex) of the model file.
    pub model_blake3: String,
    /// The released total, milli-kWh.
    pub kwh_milli: i64,
    /// The homes it sums.
    pub homes: u64,
    /// The day whose inputs produced it (the hour is of the next day).
    pub input_day: String,
    /// The key authority's audit entry that granted it.
    pub audit_seq: u64,
}

/// Which stored results to read: the inputs of one day (`YYYY-MM-DD`, the day the meters
/// prepared; their forecasts are of the next day) and one model, each `None` for all.
#[derive(Clone, Copy, Debug, Default)]
pub struct DailyFilter<'a> {
    /// The input day.
    pub input_day: Option<&'a str>,
    /// The model's BLAKE3 (hex).
    pub model_blake3: Option<&'a str>,
}

fn small(table: &'static str, column: &str, value: i64) -> Result<u32, StoreError> {
    u32::try_from(from_db(table, column, value)?).map_err(|_| StoreError::Corrupt {
        table,
        reason: format!("{column} {value} out of range"),
    })
}

impl Store {
    /// Stores one release's forecasts and anomaly results and, in the same transaction, the
    /// decisions on the inputs it answers. A row stored before (the same meter, hour or day
    /// and model) is kept as it is. Returns the forecast hours and anomaly days stored.
    ///
    /// # Errors
    /// When the database fails; nothing is stored then.
    #[tracing::instrument(
        name = "store.record_daily_release",
        skip_all,
        fields(decisions = decisions.len(), forecasts = forecasts.len(), anomalies = anomalies.len())
    )]
    pub async fn record_daily_release(
        &self,
        decisions: &[(InputHeader, InputStatus)],
        forecasts: &[DailyForecast],
        anomalies: &[DailyAnomaly],
    ) -> Result<(usize, usize), StoreError> {
        let now = Utc::now().timestamp_micros();
        let mut tx = self.begin_write().await?;
        for (header, status) in decisions {
            decide_input(&mut tx, header, status).await?;
        }
        let mut hours = 0;
        for f in forecasts {
            let done = sqlx::query(
                "INSERT INTO daily_forecasts (meter_id, hour, model_blake3, kwh_milli, \
                 input_day, input_group, audit_seq, released_at_us) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                 ON CONFLICT (meter_id, hour, model_blake3) DO NOTHING",
            )
            .bind(f.meter_id.as_str())
            .bind(f.hour.as_str())
            .bind(f.model_blake3.as_str())
            .bind(f.kwh_milli)
            .bind(f.input_day.as_str())
            .bind(i64::from(f.group))
            .bind(to_db(f.audit_seq))
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(query_error("storing a daily forecast"))?;
            hours += usize::try_from(done.rows_affected()).unwrap_or(0);
        }
        let mut days = 0;
        for a in anomalies {
            let done = sqlx::query(
                "INSERT INTO daily_anomalies (meter_id, day, model_blake3, score_milli, \
                 flagged, explanation, input_group, audit_seq, released_at_us) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
                 ON CONFLICT (meter_id, day, model_blake3) DO NOTHING",
            )
            .bind(a.meter_id.as_str())
            .bind(a.day.as_str())
            .bind(a.model_blake3.as_str())
            .bind(a.score_milli)
            .bind(i64::from(a.flagged))
            .bind(a.explanation.as_deref())
            .bind(i64::from(a.group))
            .bind(to_db(a.audit_seq))
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(query_error("storing a daily anomaly result"))?;
            days += usize::try_from(done.rows_affected()).unwrap_or(0);
        }
        tx.commit()
            .await
            .map_err(query_error("committing a daily release"))?;
        self.changed("daily");
        Ok((hours, days))
    }

    /// The stored forecasts matching `filter`, in (input day, group, meter, hour) order.
    ///
    /// # Errors
    /// When the database fails or a row is corrupt.
    pub async fn daily_forecasts(
        &self,
        filter: DailyFilter<'_>,
    ) -> Result<Vec<DailyForecast>, StoreError> {
        let rows = sqlx::query(
            "SELECT meter_id, hour, model_blake3, kwh_milli, input_day, input_group, audit_seq \
             FROM daily_forecasts WHERE ($1 = '' OR input_day = $1) \
             AND ($2 = '' OR model_blake3 = $2) \
             ORDER BY input_day, input_group, meter_id, hour",
        )
        .bind(filter.input_day.unwrap_or(""))
        .bind(filter.model_blake3.unwrap_or(""))
        .fetch_all(&self.pool)
        .await
        .map_err(query_error("listing daily forecasts"))?;
        rows.iter().map(forecast_from_row).collect()
    }

    /// One meter's stored forecasts of the hours in `[from_day, to_day)` (`YYYY-MM-DD`), in
    /// (hour, model) order: a range of the table's primary key, whatever the fleet's size.
    ///
    /// # Errors
    /// When the database fails or a row is corrupt.
    pub async fn meter_daily_forecasts(
        &self,
        meter_id: &str,
        from_day: &str,
        to_day: &str,
    ) -> Result<Vec<DailyForecast>, StoreError> {
        let rows = sqlx::query(
            "SELECT meter_id, hour, model_blake3, kwh_milli, input_day, input_group, audit_seq \
             FROM daily_forecasts WHERE meter_id = $1 AND hour >= $2 AND hour < $3 \
             ORDER BY hour, model_blake3",
        )
        .bind(meter_id)
        .bind(from_day)
        .bind(to_day)
        .fetch_all(&self.pool)
        .await
        .map_err(query_error("listing a meter's daily forecasts"))?;
        rows.iter().map(forecast_from_row).collect()
    }

    /// One meter's stored anomaly results of the days in `[from_day, to_day)`, in (day, model)
    /// order (a primary-key range).
    ///
    /// # Errors
    /// When the database fails or a row is corrupt.
    pub async fn meter_daily_anomalies(
        &self,
        meter_id: &str,
        from_day: &str,
        to_day: &str,
    ) -> Result<Vec<DailyAnomaly>, StoreError> {
        let rows = sqlx::query(
            "SELECT meter_id, day, model_blake3, score_milli, flagged, explanation, \
             input_group, audit_seq FROM daily_anomalies \
             WHERE meter_id = $1 AND day >= $2 AND day < $3 ORDER BY day, model_blake3",
        )
        .bind(meter_id)
        .bind(from_day)
        .bind(to_day)
        .fetch_all(&self.pool)
        .await
        .map_err(query_error("listing a meter's daily anomaly results"))?;
        rows.iter().map(anomaly_from_row).collect()
    }

    /// The stored anomaly results matching `filter` (the input day is the day scored), in
    /// (day, meter) order.
    ///
    /// # Errors
    /// When the database fails or a row is corrupt.
    pub async fn daily_anomalies(
        &self,
        filter: DailyFilter<'_>,
    ) -> Result<Vec<DailyAnomaly>, StoreError> {
        let rows = sqlx::query(
            "SELECT meter_id, day, model_blake3, score_milli, flagged, explanation, \
             input_group, audit_seq FROM daily_anomalies WHERE ($1 = '' OR day = $1) \
             AND ($2 = '' OR model_blake3 = $2) ORDER BY day, meter_id, model_blake3",
        )
        .bind(filter.input_day.unwrap_or(""))
        .bind(filter.model_blake3.unwrap_or(""))
        .fetch_all(&self.pool)
        .await
        .map_err(query_error("listing daily anomaly results"))?;
        rows.iter().map(anomaly_from_row).collect()
    }

    /// Per evaluation group and hour, the sum of the stored forecasts matching `filter`, in
    /// (group, hour) order.
    ///
    /// # Errors
    /// When the database fails or a row is corrupt.
    pub async fn daily_forecast_totals(
        &self,
        filter: DailyFilter<'_>,
    ) -> Result<Vec<GroupHourTotal>, StoreError> {
        let rows: Vec<(i64, String, i64, i64)> = sqlx::query_as(
            "SELECT input_group, hour, COUNT(*), CAST(SUM(kwh_milli) AS BIGINT) FROM daily_forecasts \
             WHERE ($1 = '' OR input_day = $1) AND ($2 = '' OR model_blake3 = $2) \
             GROUP BY input_group, hour ORDER BY input_group, hour",
        )
        .bind(filter.input_day.unwrap_or(""))
        .bind(filter.model_blake3.unwrap_or(""))
        .fetch_all(&self.pool)
        .await
        .map_err(query_error("summing daily forecasts per group"))?;
        rows.into_iter()
            .map(|(group, hour, homes, kwh_milli)| {
                Ok(GroupHourTotal {
                    group: small("daily_forecasts", "input_group", group)?,
                    hour,
                    homes: from_db("daily_forecasts", "count", homes)?,
                    kwh_milli,
                })
            })
            .collect()
    }
    /// Whether a released group forecast is stored for (group, input day, model).
    ///
    /// # Errors
    /// When the database fails.
    pub async fn has_daily_group_forecast(
        &self,
        group: u32,
        input_day: &str,
        model_blake3: &str,
    ) -> Result<bool, StoreError> {
        let count: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM daily_group_forecasts WHERE input_group = $1 \
             AND input_day = $2 AND model_blake3 = $3",
        )
        .bind(i64::from(group))
        .bind(input_day)
        .bind(model_blake3)
        .fetch_one(&self.pool)
        .await
        .map_err(query_error("looking up a daily group forecast"))?;
        Ok(count > 0)
    }

    /// Stores a released group forecast's hours (one transaction; hours stored before are
    /// kept as they are). Returns the hours stored.
    ///
    /// # Errors
    /// When the database fails; nothing is stored then.
    #[tracing::instrument(name = "store.record_daily_group_forecast", skip_all, fields(hours = hours.len()))]
    pub async fn record_daily_group_forecast(
        &self,
        hours: &[GroupForecastHour],
    ) -> Result<usize, StoreError> {
        let now = Utc::now().timestamp_micros();
        let mut tx = self.begin_write().await?;
        let mut stored = 0;
        for h in hours {
            let done = sqlx::query(
                "INSERT INTO daily_group_forecasts (input_group, hour, model_blake3, kwh_milli, \
                 homes, input_day, audit_seq, released_at_us) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                 ON CONFLICT (input_group, hour, model_blake3) DO NOTHING",
            )
            .bind(i64::from(h.group))
            .bind(h.hour.as_str())
            .bind(h.model_blake3.as_str())
            .bind(h.kwh_milli)
            .bind(to_db(h.homes))
            .bind(h.input_day.as_str())
            .bind(to_db(h.audit_seq))
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(query_error("storing a daily group forecast"))?;
            stored += usize::try_from(done.rows_affected()).unwrap_or(0);
        }
        tx.commit()
            .await
            .map_err(query_error("committing a daily group forecast"))?;
        if stored > 0 {
            self.changed("group-forecast");
        }
        Ok(stored)
    }

    /// The released group forecasts matching `filter`, in (input day, group, hour) order.
    ///
    /// # Errors
    /// When the database fails or a row is corrupt.
    pub async fn daily_group_forecasts(
        &self,
        filter: DailyFilter<'_>,
    ) -> Result<Vec<GroupForecastHour>, StoreError> {
        const TABLE: &str = "daily_group_forecasts";
        let rows = sqlx::query(
            "SELECT input_group, hour, model_blake3, kwh_milli, homes, input_day, audit_seq \
             FROM daily_group_forecasts WHERE ($1 = '' OR input_day = $1) \
             AND ($2 = '' OR model_blake3 = $2) \
             ORDER BY input_day, input_group, model_blake3, hour",
        )
        .bind(filter.input_day.unwrap_or(""))
        .bind(filter.model_blake3.unwrap_or(""))
        .fetch_all(&self.pool)
        .await
        .map_err(query_error("listing daily group forecasts"))?;
        let get = query_error("reading a daily group forecast");
        rows.iter()
            .map(|row| {
                Ok(GroupForecastHour {
                    group: small(
                        TABLE,
                        "input_group",
                        row.try_get("input_group").map_err(get)?,
                    )?,
                    hour: row.try_get("hour").map_err(get)?,
                    model_blake3: row.try_get("model_blake3").map_err(get)?,
                    kwh_milli: row.try_get("kwh_milli").map_err(get)?,
                    homes: from_db(TABLE, "homes", row.try_get("homes").map_err(get)?)?,
                    input_day: row.try_get("input_day").map_err(get)?,
                    audit_seq: from_db(TABLE, "audit_seq", row.try_get("audit_seq").map_err(get)?)?,
                })
            })
            .collect()
    }
}

fn forecast_from_row(row: &AnyRow) -> Result<DailyForecast, StoreError> {
    let get = query_error("reading a daily forecast");
    Ok(DailyForecast {
        meter_id: row.try_get("meter_id").map_err(get)?,
        hour: row.try_get("hour").map_err(get)?,
        model_blake3: row.try_get("model_blake3").map_err(get)?,
        kwh_milli: row.try_get("kwh_milli").map_err(get)?,
        input_day: row.try_get("input_day").map_err(get)?,
        group: small(
            "daily_forecasts",
            "input_group",
            row.try_get("input_group").map_err(get)?,
        )?,
        audit_seq: from_db(
            "daily_forecasts",
            "audit_seq",
            row.try_get("audit_seq").map_err(get)?,
        )?,
    })
}

fn anomaly_from_row(row: &AnyRow) -> Result<DailyAnomaly, StoreError> {
    let get = query_error("reading a daily anomaly result");
    let flagged: i64 = row.try_get("flagged").map_err(get)?;
    Ok(DailyAnomaly {
        meter_id: row.try_get("meter_id").map_err(get)?,
        day: row.try_get("day").map_err(get)?,
        model_blake3: row.try_get("model_blake3").map_err(get)?,
        score_milli: row.try_get("score_milli").map_err(get)?,
        flagged: flagged != 0,
        explanation: row.try_get("explanation").map_err(get)?,
        group: small(
            "daily_anomalies",
            "input_group",
            row.try_get("input_group").map_err(get)?,
        )?,
        audit_seq: from_db(
            "daily_anomalies",
            "audit_seq",
            row.try_get("audit_seq").map_err(get)?,
        )?,
    })
}
