//! The utility dashboard's reads (see `crate::dashboard`): one aggregating query per view,
//! over what the utility itself stores — released bills and their cells, the batches' receive
//! times and declared ε, released daily results, released group totals and group forecasts.
//! Nothing here decrypts or reads a ciphertext column; the covering indexes of
//! `migrations/utility-server/*/20270101000000_dashboard.sql` keep the batch reads off the
//! rows (whose ciphertexts come first and are large).
//!
//! Also the bill refusals the billing job records ([`Store::record_bill_refusal`]) and the
//! cheap [change counter](Store::dashboard_change_counter) the dashboard polls to notice
//! writes by other processes (the `utility-server bill` job writes the same database).

use chrono::Utc;
use sqlx::Row as _;

use super::{Store, StoreError, from_db, period_from_db, query_error};
use crate::batch::{MeterId, Period};

/// A column of the homes table the rows can be ordered by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HomeSort {
    /// The meter id.
    Meter,
    /// The energy of one tariff cell (index in the tariff's cell order).
    Cell(usize),
    /// The energy over all cells.
    TotalWh,
    /// The bill's amount.
    Amount,
    /// When the meter's last batch was received.
    LastBatch,
    /// ε spent in the period.
    Epsilon,
    /// Flagged anomaly days in the period.
    Anomalies,
}

impl HomeSort {
    /// The key as it appears in URLs (`meter`, `cell2`, `kwh`, `amount`, `last_batch`,
    /// `epsilon`, `anomalies`).
    #[must_use]
    pub fn key(self) -> String {
        match self {
            Self::Meter => "meter".into(),
            Self::Cell(cell) => format!("cell{cell}"),
            Self::TotalWh => "kwh".into(),
            Self::Amount => "amount".into(),
            Self::LastBatch => "last_batch".into(),
            Self::Epsilon => "epsilon".into(),
            Self::Anomalies => "anomalies".into(),
        }
    }

    /// Parses [`key`](Self::key); `None` for an unknown key or a cell at or past `cells`.
    #[must_use]
    pub fn parse(key: &str, cells: usize) -> Option<Self> {
        Some(match key {
            "meter" => Self::Meter,
            "kwh" => Self::TotalWh,
            "amount" => Self::Amount,
            "last_batch" => Self::LastBatch,
            "epsilon" => Self::Epsilon,
            "anomalies" => Self::Anomalies,
            other => {
                let cell: usize = other.strip_prefix("cell")?.parse().ok()?;
                if cell >= cells {
                    return None;
                }
                Self::Cell(cell)
            }
        })
    }

    /// The SQL expression ordered by: only fixed text and a number, never caller text.
    fn sql(self) -> String {
        match self {
            Self::Meter => "h.meter_id".into(),
            Self::Cell(cell) => format!("cell{cell}"),
            Self::TotalWh => "total_wh".into(),
            Self::Amount => "amount_paise".into(),
            Self::LastBatch => "last_batch_us".into(),
            Self::Epsilon => "epsilon".into(),
            Self::Anomalies => "anomalies".into(),
        }
    }
}

/// Which homes rows to read.
#[derive(Debug, Clone)]
pub struct HomesQuery<'a> {
    /// The billing period (bills, ε and anomalies are of this month).
    pub period: Period,
    /// How many tariff cells the rows carry (the tariff's cell count).
    pub cells: usize,
    /// The order.
    pub sort: HomeSort,
    /// Descending instead of ascending (ties: by meter, ascending).
    pub descending: bool,
    /// Rows skipped.
    pub offset: u64,
    /// At most this many rows (`None`: all).
    pub limit: Option<u64>,
    /// Only this meter's row (a household's view).
    pub meter: Option<&'a MeterId>,
}

/// One home's row of the dashboard's homes table.
#[derive(Debug, Clone, PartialEq)]
pub struct HomeRow {
    /// The meter.
    pub meter_id: String,
    /// Whole Wh per tariff cell of the period's released bill (`None` per cell without a bill).
    pub cell_wh: Vec<Option<u64>>,
    /// The bill's energy over all cells (`None` without a bill).
    pub total_wh: Option<u64>,
    /// The bill's amount in paise (`None` without a bill).
    pub amount_paise: Option<i64>,
    /// When the meter's last batch (any period) was received, µs since the Unix epoch.
    pub last_batch_us: Option<i64>,
    /// Batches stored for the period.
    pub batches: u64,
    /// ε the period's batches declare spent on their analytics lanes, summed.
    pub epsilon: f64,
    /// Flagged days of the period (`daily_anomalies`).
    pub anomalies: u64,
}

/// The overview's counts for one period.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OverviewCounts {
    /// Meters that have stored a batch.
    pub homes: u64,
    /// Batches stored, all periods.
    pub batches: u64,
    /// Bills released for the period.
    pub bills_released: u64,
    /// Bill refusals recorded for the period (distinct homes).
    pub bills_refused: u64,
    /// Energy of the period's released bills, whole Wh.
    pub billed_wh: u64,
    /// Amount of the period's released bills, paise.
    pub billed_paise: i64,
    /// Flagged anomaly days in the period.
    pub anomalies_flagged: u64,
}

/// One hour of a group: the released forecast total and the released actual total.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupHour {
    /// The group (evaluation group of the forecasts, noise group of the totals: the same
    /// billing group).
    pub group: u32,
    /// The hour, `YYYY-MM-DDTHH` (the forecasts' local hour; the totals' UTC hour).
    pub hour: String,
    /// The released forecast total, milli-kWh (`daily_group_forecasts`).
    pub forecast_milli_kwh: Option<i64>,
    /// Homes in the forecast total.
    pub forecast_homes: Option<u64>,
    /// The released actual total, whole Wh with its noise (`group_totals`).
    pub actual_wh: Option<i64>,
}

/// One flagged day.
#[derive(Debug, Clone, PartialEq)]
pub struct FlaggedDay {
    /// The meter.
    pub meter_id: String,
    /// The day, `YYYY-MM-DD`.
    pub day: String,
    /// The score.
    pub score: f64,
    /// The explanation as stored (JSON), if any.
    pub explanation: Option<String>,
    /// Which table: `daily` (`daily_anomalies`) or `deep` (`anomaly_scores`).
    pub source: &'static str,
}

/// One bill refusal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BillRefusal {
    /// The meter.
    pub meter_id: String,
    /// The period.
    pub period: Period,
    /// The key authority's reason.
    pub reason: String,
    /// When the billing job heard it, µs since the Unix epoch.
    pub refused_at_us: i64,
}

/// Batches received in one hour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HourCount {
    /// Start of the hour, hours since the Unix epoch.
    pub hour: i64,
    /// Batches received in it.
    pub batches: u64,
    /// Distinct meters that sent them.
    pub meters: u64,
}

fn read(doing: &'static str) -> impl Fn(sqlx::Error) -> StoreError + Copy {
    query_error(doing)
}

fn count(table: &'static str, value: Option<i64>) -> Result<u64, StoreError> {
    from_db(table, "count", value.unwrap_or(0))
}

fn group_of(table: &'static str, value: i64) -> Result<u32, StoreError> {
    u32::try_from(value).map_err(|_| StoreError::Corrupt {
        table,
        reason: format!("group {value} out of range"),
    })
}

/// `[start, end)` of a month's days as text (`YYYY-MM-01` ≤ day < `YYYY-MM-99`... the next
/// month's first day), for range scans of `YYYY-MM-DD` columns.
fn day_range(period: Period) -> (String, String) {
    let start = period.first_day().format("%Y-%m-%d").to_string();
    let end = period.end_day().format("%Y-%m-%d").to_string();
    (start, end)
}

impl Store {
    /// The latest period with a released bill, else with a stored batch, else `None`.
    ///
    /// # Errors
    /// When the database fails or the period is unreadable.
    pub async fn dashboard_latest_period(&self) -> Result<Option<Period>, StoreError> {
        let text: Option<String> = sqlx::query_scalar(
            "SELECT COALESCE((SELECT MAX(period) FROM bills), (SELECT MAX(period) FROM batches))",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(read("finding the latest period"))?;
        text.map(|t| period_from_db("bills", t)).transpose()
    }

    /// The overview's counts for `period`, in one query.
    ///
    /// # Errors
    /// When the database fails.
    pub async fn dashboard_overview(&self, period: Period) -> Result<OverviewCounts, StoreError> {
        let (start, end) = day_range(period);
        let row = sqlx::query(
            "SELECT \
             (SELECT CAST(COUNT(*) AS BIGINT) FROM meters) AS homes, \
             (SELECT CAST(COALESCE(SUM(last_sequence), 0) AS BIGINT) FROM meters) AS batches, \
             (SELECT CAST(COUNT(*) AS BIGINT) FROM bills WHERE period = $1) AS released, \
             (SELECT CAST(COUNT(DISTINCT r.meter_id) AS BIGINT) FROM bill_refusals r \
              WHERE r.period = $1 AND NOT EXISTS (SELECT 1 FROM bills b \
              WHERE b.meter_id = r.meter_id AND b.period = r.period)) AS refused, \
             (SELECT CAST(COALESCE(SUM(wh), 0) AS BIGINT) FROM bill_cells WHERE period = $1) \
              AS billed_wh, \
             (SELECT CAST(COALESCE(SUM(amount_paise), 0) AS BIGINT) FROM bills WHERE period = $1) \
              AS billed_paise, \
             (SELECT CAST(COUNT(*) AS BIGINT) FROM daily_anomalies \
              WHERE day >= $2 AND day < $3 AND flagged = 1) AS flagged",
        )
        .bind(period.to_string())
        .bind(start)
        .bind(end)
        .fetch_one(&self.pool)
        .await
        .map_err(read("counting the overview"))?;
        let get = read("reading the overview");
        let n = |column: &'static str| -> Result<u64, StoreError> {
            count(
                "overview",
                row.try_get::<Option<i64>, _>(column).map_err(get)?,
            )
        };
        Ok(OverviewCounts {
            homes: n("homes")?,
            batches: n("batches")?,
            bills_released: n("released")?,
            bills_refused: n("refused")?,
            billed_wh: n("billed_wh")?,
            billed_paise: row
                .try_get::<Option<i64>, _>("billed_paise")
                .map_err(get)?
                .unwrap_or(0),
            anomalies_flagged: n("flagged")?,
        })
    }

    /// How many homes the homes table has (one with `meter`: 0 or 1).
    ///
    /// # Errors
    /// When the database fails.
    pub async fn dashboard_home_count(&self, meter: Option<&MeterId>) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar(
            "SELECT CAST(COUNT(*) AS BIGINT) FROM meters WHERE ($1 = '' OR meter_id = $1)",
        )
        .bind(meter.map_or("", MeterId::as_str))
        .fetch_one(&self.pool)
        .await
        .map_err(read("counting homes"))?;
        from_db("meters", "count", n)
    }

    /// One page of the homes table, aggregated and ordered in SQL (one query, whatever the
    /// number of homes: no query per home).
    ///
    /// # Errors
    /// When the database fails or a row is unreadable.
    #[tracing::instrument(name = "store.dashboard_homes", skip_all, fields(period = %query.period))]
    pub async fn dashboard_homes(
        &self,
        query: &HomesQuery<'_>,
    ) -> Result<Vec<HomeRow>, StoreError> {
        let (start, end) = day_range(query.period);
        // The cell columns, pivoted; only numbers are formatted into the text.
        let cells: String = (0..query.cells)
            .map(|cell| {
                format!(
                    ", (SELECT CAST(c.wh AS BIGINT) FROM bill_cells c WHERE c.meter_id = h.meter_id \
                     AND c.period = $1 AND c.cell = {cell}) AS cell{cell}"
                )
            })
            .collect();
        let direction = if query.descending { "DESC" } else { "ASC" };
        // NULLs (homes without a bill) last in either direction.
        let order = query.sort.sql();
        let sql = format!(
            "SELECT * FROM (SELECT h.meter_id, b.amount_paise, \
             (SELECT CAST(SUM(c.wh) AS BIGINT) FROM bill_cells c \
              WHERE c.meter_id = h.meter_id AND c.period = $1) AS total_wh, \
             (SELECT MAX(x.received_at_us) FROM batches x WHERE x.meter_id = h.meter_id) \
              AS last_batch_us, \
             COALESCE(e.epsilon, 0.0) AS epsilon, COALESCE(e.batches, 0) AS batches, \
             (SELECT CAST(COUNT(*) AS BIGINT) FROM daily_anomalies a WHERE a.meter_id = h.meter_id \
              AND a.day >= $2 AND a.day < $3 AND a.flagged = 1) AS anomalies{cells} \
             FROM meters h \
             LEFT JOIN bills b ON b.meter_id = h.meter_id AND b.period = $1 \
             LEFT JOIN (SELECT meter_id, \
                CAST(SUM(epsilon_spent) AS DOUBLE PRECISION) AS epsilon, \
                CAST(COUNT(*) AS BIGINT) AS batches \
                FROM batches WHERE period = $1 GROUP BY meter_id) e ON e.meter_id = h.meter_id \
             WHERE ($4 = '' OR h.meter_id = $4)) h \
             ORDER BY ({order}) IS NULL, {order} {direction}, h.meter_id ASC \
             LIMIT $5 OFFSET $6"
        );
        let limit = query
            .limit
            .map_or(i64::MAX, |l| i64::try_from(l).unwrap_or(i64::MAX));
        let offset = i64::try_from(query.offset).unwrap_or(i64::MAX);
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(query.period.to_string())
            .bind(start)
            .bind(end)
            .bind(query.meter.map_or("", MeterId::as_str))
            .bind(limit)
            .bind(offset)
            .fetch_all(&self.pool)
            .await
            .map_err(read("reading the homes table"))?;
        let get = read("reading a homes row");
        rows.iter()
            .map(|row| {
                let wh = |column: &str| -> Result<Option<u64>, StoreError> {
                    row.try_get::<Option<i64>, _>(column)
                        .map_err(get)?
                        .map(|v| from_db("bill_cells", "wh", v))
                        .transpose()
                };
                Ok(HomeRow {
                    meter_id: row.try_get("meter_id").map_err(get)?,
                    cell_wh: (0..query.cells)
                        .map(|cell| wh(&format!("cell{cell}")))
                        .collect::<Result<_, _>>()?,
                    total_wh: wh("total_wh")?,
                    amount_paise: row.try_get("amount_paise").map_err(get)?,
                    last_batch_us: row.try_get("last_batch_us").map_err(get)?,
                    batches: count("batches", row.try_get("batches").map_err(get)?)?,
                    epsilon: row.try_get("epsilon").map_err(get)?,
                    anomalies: count("daily_anomalies", row.try_get("anomalies").map_err(get)?)?,
                })
            })
            .collect()
    }

    /// Per group and hour of `day` (`YYYY-MM-DD`), the released group forecast total and the
    /// released actual total, in (group, hour) order. Hours are matched by their text
    /// `YYYY-MM-DDTHH`: the forecasts' hours are the meters' local time, the totals' UTC, so
    /// the two line up for meters on UTC. With several forecast models for a group, the
    /// latest released is shown.
    ///
    /// # Errors
    /// When the database fails or a row is unreadable.
    pub async fn dashboard_group_hours(&self, day: &str) -> Result<Vec<GroupHour>, StoreError> {
        // 'T' < 'U': every `DAYTHH...` text lies in [DAYT, DAYU).
        let from = format!("{day}T");
        let to = format!("{day}U");
        let rows = sqlx::query(
            "SELECT 'f' AS kind, f.input_group AS grp, SUBSTR(f.hour, 1, 13) AS hour, \
             f.kwh_milli AS value, f.homes AS homes FROM daily_group_forecasts f \
             WHERE f.hour >= $1 AND f.hour < $2 AND f.audit_seq = (SELECT MAX(g.audit_seq) \
             FROM daily_group_forecasts g WHERE g.input_group = f.input_group AND g.hour = f.hour) \
             UNION ALL \
             SELECT 'a' AS kind, t.billing_group AS grp, SUBSTR(t.hour_start, 1, 13) AS hour, \
             t.total_wh AS value, CAST(t.min_present AS BIGINT) AS homes FROM group_totals t \
             WHERE t.hour_start >= $1 AND t.hour_start < $2 \
             ORDER BY grp, hour, kind",
        )
        .bind(from)
        .bind(to)
        .fetch_all(&self.pool)
        .await
        .map_err(read("reading the groups' hours"))?;
        let get = read("reading a group hour");
        let mut hours: Vec<GroupHour> = Vec::new();
        for row in &rows {
            let kind: String = row.try_get("kind").map_err(get)?;
            let group = group_of("daily_group_forecasts", row.try_get("grp").map_err(get)?)?;
            let hour: String = row.try_get("hour").map_err(get)?;
            let value: i64 = row.try_get("value").map_err(get)?;
            let homes: i64 = row.try_get("homes").map_err(get)?;
            let entry = match hours.last_mut() {
                Some(last) if last.group == group && last.hour == hour => last,
                _ => {
                    hours.push(GroupHour {
                        group,
                        hour,
                        forecast_milli_kwh: None,
                        forecast_homes: None,
                        actual_wh: None,
                    });
                    let last = hours.len() - 1;
                    &mut hours[last]
                }
            };
            if kind == "f" {
                entry.forecast_milli_kwh = Some(value);
                entry.forecast_homes = Some(from_db("daily_group_forecasts", "homes", homes)?);
            } else {
                entry.actual_wh = Some(value);
            }
        }
        Ok(hours)
    }

    /// The latest day with a released group forecast or a released group total
    /// (`YYYY-MM-DD`), if any.
    ///
    /// # Errors
    /// When the database fails.
    pub async fn dashboard_latest_group_day(&self) -> Result<Option<String>, StoreError> {
        let day: Option<String> = sqlx::query_scalar(
            "SELECT MAX(d) FROM (SELECT SUBSTR(MAX(hour), 1, 10) AS d FROM daily_group_forecasts \
             UNION ALL SELECT SUBSTR(MAX(hour_start), 1, 10) AS d FROM group_totals) days",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(read("finding the latest group day"))?;
        Ok(day)
    }

    /// Flagged days (daily and deep anomaly tables), newest first, at most `limit`; only
    /// `meter`'s when given; only `period`'s days when given.
    ///
    /// # Errors
    /// When the database fails or a row is unreadable.
    pub async fn dashboard_flagged_days(
        &self,
        meter: Option<&MeterId>,
        period: Option<Period>,
        limit: u32,
    ) -> Result<Vec<FlaggedDay>, StoreError> {
        let (start, end) = period.map_or_else(|| (String::new(), "~".into()), day_range);
        let rows = sqlx::query(
            "SELECT 'daily' AS source, meter_id, day, CAST(score_milli AS DOUBLE PRECISION) / 1000.0 \
             AS score, explanation FROM daily_anomalies \
             WHERE flagged = 1 AND ($1 = '' OR meter_id = $1) AND day >= $2 AND day < $3 \
             UNION ALL \
             SELECT 'deep' AS source, meter_id, day, score, explanation FROM anomaly_scores \
             WHERE flagged = 1 AND ($1 = '' OR meter_id = $1) AND day >= $2 AND day < $3 \
             ORDER BY day DESC, meter_id ASC, source ASC LIMIT $4",
        )
        .bind(meter.map_or("", MeterId::as_str))
        .bind(start)
        .bind(end)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(read("reading flagged days"))?;
        let get = read("reading a flagged day");
        rows.iter()
            .map(|row| {
                let source: String = row.try_get("source").map_err(get)?;
                Ok(FlaggedDay {
                    meter_id: row.try_get("meter_id").map_err(get)?,
                    day: row.try_get("day").map_err(get)?,
                    score: row.try_get("score").map_err(get)?,
                    explanation: row.try_get("explanation").map_err(get)?,
                    source: if source == "deep" { "deep" } else { "daily" },
                })
            })
            .collect()
    }

    /// Batches received per hour since `since_us` (µs since the Unix epoch), oldest first
    /// (hours without batches left out).
    ///
    /// # Errors
    /// When the database fails.
    pub async fn dashboard_batches_per_hour(
        &self,
        since_us: i64,
    ) -> Result<Vec<HourCount>, StoreError> {
        let rows: Vec<(i64, i64, i64)> = sqlx::query_as(
            "SELECT CAST(received_at_us / 3600000000 AS BIGINT) AS hour, \
             CAST(COUNT(*) AS BIGINT), CAST(COUNT(DISTINCT meter_id) AS BIGINT) \
             FROM batches WHERE received_at_us >= $1 \
             GROUP BY CAST(received_at_us / 3600000000 AS BIGINT) ORDER BY hour",
        )
        .bind(since_us)
        .fetch_all(&self.pool)
        .await
        .map_err(read("counting batches per hour"))?;
        rows.into_iter()
            .map(|(hour, batches, meters)| {
                Ok(HourCount {
                    hour,
                    batches: from_db("batches", "count", batches)?,
                    meters: from_db("batches", "count", meters)?,
                })
            })
            .collect()
    }

    /// `meter_id`'s latest released next-day forecast (`daily_forecasts`: the latest input
    /// day, the model released last for it): `(hour YYYY-MM-DDTHH:00, milli-kWh)` in hour
    /// order; empty when none was released.
    ///
    /// # Errors
    /// When the database fails.
    pub async fn dashboard_home_forecast(
        &self,
        meter_id: &MeterId,
    ) -> Result<Vec<(String, i64)>, StoreError> {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT f.hour, f.kwh_milli FROM daily_forecasts f \
             JOIN (SELECT input_day, model_blake3 FROM daily_forecasts WHERE meter_id = $1 \
                   ORDER BY input_day DESC, audit_seq DESC LIMIT 1) latest \
             ON f.input_day = latest.input_day AND f.model_blake3 = latest.model_blake3 \
             WHERE f.meter_id = $1 ORDER BY f.hour",
        )
        .bind(meter_id.as_str())
        .fetch_all(&self.pool)
        .await
        .map_err(read("reading a home's forecast"))?;
        Ok(rows)
    }

    /// Records that the key authority refused `meter_id`'s bill for `period`.
    ///
    /// # Errors
    /// When the database fails.
    pub async fn record_bill_refusal(
        &self,
        meter_id: &str,
        period: Period,
        reason: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO bill_refusals (meter_id, period, reason, refused_at_us) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(meter_id)
        .bind(period.to_string())
        .bind(reason)
        .bind(Utc::now().timestamp_micros())
        .execute(&self.pool)
        .await
        .map_err(query_error("recording a bill refusal"))?;
        self.changed("bill");
        Ok(())
    }

    /// The bill refusals of `period`, newest first, at most `limit`.
    ///
    /// # Errors
    /// When the database fails or a row is unreadable.
    pub async fn bill_refusals(
        &self,
        period: Period,
        limit: u32,
    ) -> Result<Vec<BillRefusal>, StoreError> {
        let rows: Vec<(String, String, String, i64)> = sqlx::query_as(
            "SELECT meter_id, period, reason, refused_at_us FROM bill_refusals \
             WHERE period = $1 ORDER BY refused_at_us DESC, meter_id LIMIT $2",
        )
        .bind(period.to_string())
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(read("reading bill refusals"))?;
        rows.into_iter()
            .map(|(meter_id, period, reason, refused_at_us)| {
                Ok(BillRefusal {
                    meter_id,
                    period: period_from_db("bill_refusals", period)?,
                    reason,
                    refused_at_us,
                })
            })
            .collect()
    }

    /// A number that changes whenever a batch, a bill or bill refusal, a daily release, a
    /// group forecast or a group total is stored — by this process or another one writing the
    /// same database. Cheap: counts over small tables and the meters' cursors.
    ///
    /// # Errors
    /// When the database fails.
    pub async fn dashboard_change_counter(&self) -> Result<i64, StoreError> {
        let row: (i64, i64, i64, i64, i64, i64, i64) = sqlx::query_as(
            "SELECT \
             (SELECT CAST(COALESCE(SUM(last_sequence), 0) AS BIGINT) FROM meters), \
             (SELECT CAST(COUNT(*) AS BIGINT) FROM bills), \
             (SELECT CAST(COUNT(*) AS BIGINT) FROM bill_refusals), \
             (SELECT CAST(COUNT(*) AS BIGINT) FROM daily_anomalies), \
             (SELECT CAST(COUNT(*) AS BIGINT) FROM daily_group_forecasts), \
             (SELECT CAST(COUNT(*) AS BIGINT) FROM group_totals), \
             (SELECT CAST(COALESCE(MAX(updated_us), 0) AS BIGINT) FROM jobs)",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(read("reading the change counter"))?;
        // A sum of monotone counts (and of the jobs' last change, a time that only grows): it
        // only grows, so any change shows.
        Ok(row
            .0
            .wrapping_add(row.1)
            .wrapping_add(row.2)
            .wrapping_add(row.3)
            .wrapping_add(row.4)
            .wrapping_add(row.5)
            .wrapping_add(row.6))
    }
}
