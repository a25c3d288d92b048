//! A group's day-ahead forecast total as its own registered aggregate
//! (`seer.v1.Analytics.ReleaseGroupForecast`; the wire contract is in `analytics.proto`).
//!
//! **Stored for the aggregate.** When the key authority grants a `daily` meter-day whose
//! release holds a forecast, the same transaction that appends the `daily` audit entry stores
//! the 24 released hours in whole thousandths of kWh (as released, after rounding to
//! [`seer_daily::release::QUANTUM`]) in `daily_group_forecasts`, under the forecast's day, the
//! model and the meter's group **as the meter signed it** in its receipt
//! (`analytics_receipts.eval_group`, a row [`super::AnalyticsStore::bound_receipt`] has just
//! bound to the audit chain): the utility names meters and input ids, never a group. With
//! `analytics.daily_release_home_forecasts = false` ([`super::AnalyticsSettings`]) the hours
//! are stored but not put in the `Release` response, so the utility can be given group totals
//! without any home's forecast.
//!
//! **The rule** ([`group_total`], with its plaintext twin [`plaintext_twin`]): the homes are
//! every home stored for (group, day, model) whose row names a granted `daily` entry of its
//! meter; fewer than [`GROUP_FORECAST_FLOOR`] and the request is refused (an audited refusal,
//! nothing stored: it may be asked again when more homes are released); otherwise each hour's
//! total is the exact integer sum of the homes' thousandths.
//!
//! **Once per (group, day, model).** The first granted total is stored
//! (`daily_group_forecast_releases`, one row with the homes, the 24 totals and the audit entry)
//! with one granted `daily-group-forecast` entry (period `group G day D model M`), in one
//! transaction under the audit log's append lock, before the answer leaves. Every later request
//! for the same (group, day, model) is answered from that row with `already_released` and
//! appends nothing: a revision after more homes arrive is never made, because the difference
//! of two totals over home sets differing by one home would be that home's forecast. A granted
//! entry whose row is missing (deleted outside the key authority) refuses the request rather
//! than release a second, possibly different, total.
//!
//! What the floor does not do: a utility that holds back all but three of a group's homes (by
//! not asking for the others' release before asking for the total) gets the total of those
//! three; what it learns is a sum of at least three homes, once.

use std::sync::Arc;

use chrono::{NaiveDate, Utc};
use sha2::Digest as _;
use sqlx::{AnyConnection, Row as _};
use tracing::Instrument as _;

use super::engine::DeepEngine;
use crate::audit::{AuditLog, Decision, InputDigest, NewEntry, RequestKind};
use crate::auth::Caller;
use crate::release::ReleaseError;

/// The fewest homes a group's forecast total sums.
pub const GROUP_FORECAST_FLOOR: usize = 3;

/// Hours in a day's forecast.
pub const HOURS: usize = 24;

/// A day's 24 hourly values, whole thousandths of kWh.
pub type HoursMilli = [i64; HOURS];

/// Why a group's total is not released (a decision, not an error: it is audited and
/// answered).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GroupForecastRefusal {
    /// Fewer homes than the floor.
    TooFewHomes {
        /// Homes stored for the group and day.
        homes: usize,
        /// [`GROUP_FORECAST_FLOOR`].
        floor: usize,
    },
    /// A sum does not fit 64 bits (values no released forecast can have).
    Overflow,
    /// The total was granted before (audit entry `sequence`) but its stored row is missing.
    RowMissing {
        /// The granted entry.
        sequence: u64,
    },
}

impl std::fmt::Display for GroupForecastRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GroupForecastRefusal::TooFewHomes { homes, floor } => write!(
                f,
                "{homes} home(s) with a released forecast; a group total needs at least {floor}"
            ),
            GroupForecastRefusal::Overflow => write!(f, "the total does not fit 64 bits"),
            GroupForecastRefusal::RowMissing { sequence } => write!(
                f,
                "the total was granted by audit entry {sequence} but its release row is missing \
                 (deleted outside the key authority); it is not released again"
            ),
        }
    }
}

/// 24 released forecasts (kWh, multiples of 0.001) in whole thousandths; `None` unless there
/// are 24 finite values.
#[must_use]
pub fn to_milli(kwh: &[f64]) -> Option<HoursMilli> {
    if kwh.len() != HOURS || kwh.iter().any(|v| !v.is_finite() || v.abs() > 1e12) {
        return None;
    }
    let mut out = [0_i64; HOURS];
    for (o, v) in out.iter_mut().zip(kwh) {
        // Bounded above: far inside i64.
        #[expect(clippy::cast_possible_truncation, reason = "a bounded, rounded value")]
        let milli = (v * 1000.0).round() as i64;
        *o = milli;
    }
    Some(out)
}

/// The release rule: the exact per-hour sum of `homes` (each a home's released hours in
/// thousandths), refused below [`GROUP_FORECAST_FLOOR`] homes.
///
/// # Errors
/// [`GroupForecastRefusal::TooFewHomes`], [`GroupForecastRefusal::Overflow`].
pub fn group_total(homes: &[HoursMilli]) -> Result<HoursMilli, GroupForecastRefusal> {
    if homes.len() < GROUP_FORECAST_FLOOR {
        return Err(GroupForecastRefusal::TooFewHomes {
            homes: homes.len(),
            floor: GROUP_FORECAST_FLOOR,
        });
    }
    let mut total = [0_i64; HOURS];
    for home in homes {
        for (t, v) in total.iter_mut().zip(home) {
            *t = t.checked_add(*v).ok_or(GroupForecastRefusal::Overflow)?;
        }
    }
    Ok(total)
}

/// The plaintext twin of a group's total: the same rule over the homes' plaintext releases
/// (`DailyModel::evaluate_plain` → `DailyModel::release`, no encryption); a release without a
/// forecast part is no home of the total, as at the key authority.
///
/// # Errors
/// As [`group_total`].
pub fn plaintext_twin(
    releases: &[seer_daily::release::DailyRelease],
) -> Result<HoursMilli, GroupForecastRefusal> {
    let homes: Vec<HoursMilli> = releases
        .iter()
        .filter_map(|r| r.forecast.as_deref().and_then(to_milli))
        .collect();
    group_total(&homes)
}

/// A checked request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupForecastQuery {
    /// The group (the billing group the meters signed).
    pub group: u32,
    /// The forecast's day.
    pub day: NaiveDate,
    /// BLAKE3 (lowercase hex) of the model file.
    pub model_blake3: String,
}

impl GroupForecastQuery {
    /// The audit entries' period (and the scope of a refusal): `group G day D model M`.
    #[must_use]
    pub fn scope(&self) -> String {
        format!(
            "group {} day {} model {}",
            self.group, self.day, self.model_blake3
        )
    }
}

/// Checks the request's fields (the model's registration is checked by the releaser): `day`
/// is `YYYY-MM-DD`, `model_blake3` 64 lowercase hex digits.
///
/// # Errors
/// The reason, for an `INVALID_ARGUMENT` answer.
pub fn check_request(
    group: u32,
    day: &str,
    model_blake3: &str,
) -> Result<GroupForecastQuery, String> {
    // Only the canonical form (`02024-1-30` would parse to the same date).
    let parsed = NaiveDate::parse_from_str(day, "%Y-%m-%d")
        .ok()
        .filter(|d| d.to_string() == day)
        .ok_or_else(|| {
            format!(
                "day {:?} is not a date YYYY-MM-DD",
                day.chars().take(32).collect::<String>()
            )
        })?;
    if model_blake3.len() != 64
        || !model_blake3
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        return Err("model_blake3 must be 64 lowercase hex digits".into());
    }
    Ok(GroupForecastQuery {
        group,
        day: parsed,
        model_blake3: model_blake3.to_owned(),
    })
}

/// The hour labels of `day` (`YYYY-MM-DDTHH:00`), as the per-home forecasts name them.
#[must_use]
pub fn hour_labels(day: NaiveDate) -> Vec<String> {
    (0..HOURS).map(|h| format!("{day}T{h:02}:00")).collect()
}

/// The answer to one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupForecastDecision {
    /// The request.
    pub query: GroupForecastQuery,
    /// The totals (released now or before), or the refusal.
    pub decision: Result<HoursMilli, GroupForecastRefusal>,
    /// Released by an earlier request: the stored values.
    pub already_released: bool,
    /// Homes summed (refused: homes stored so far).
    pub homes: u32,
    /// The audit entry that granted the totals, or recorded the refusal.
    pub audit_sequence: u64,
}

/// Applies the group-forecast rule over the key authority's stored home forecasts.
#[derive(Clone, Debug)]
pub struct GroupForecastReleaser {
    audit: Arc<AuditLog>,
    engine: Arc<DeepEngine>,
}

fn encode(hours: &HoursMilli) -> String {
    hours
        .iter()
        .map(i64::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

fn corrupt(table: &str, what: &str) -> ReleaseError {
    ReleaseError::Database(sqlx::Error::Decode(
        format!("malformed {table} row: {what}").into(),
    ))
}

fn decode(table: &str, text: &str) -> Result<HoursMilli, ReleaseError> {
    let values = text
        .split(',')
        .map(|v| v.parse::<i64>().map_err(|_| corrupt(table, "hours_milli")))
        .collect::<Result<Vec<_>, _>>()?;
    HoursMilli::try_from(values).map_err(|_| corrupt(table, "hours_milli: not 24 values"))
}

fn to_u64(table: &str, what: &str, value: i64) -> Result<u64, ReleaseError> {
    u64::try_from(value).map_err(|_| corrupt(table, what))
}

/// The group (its billing group) the meter signed in the `daily` receipt of `input_id` (the row the
/// release has bound to the audit chain), read in the release's transaction.
pub(super) async fn receipt_group(
    conn: &mut AnyConnection,
    meter_id: &str,
    input_id: &str,
) -> Result<Option<u32>, ReleaseError> {
    let group: Option<Option<i64>> = sqlx::query_scalar(
        "SELECT eval_group FROM analytics_receipts WHERE kind = 'daily' AND meter_id = $1 \
         AND input_id = $2",
    )
    .bind(meter_id.to_owned())
    .bind(input_id.to_owned())
    .fetch_optional(conn)
    .await?;
    group
        .flatten()
        .map(|g| u32::try_from(g).map_err(|_| corrupt("analytics_receipts", "eval_group")))
        .transpose()
}

/// One granted home-day's forecast, as stored for the aggregate.
pub(super) struct HomeForecast<'a> {
    pub meter_id: &'a str,
    /// The forecast's day.
    pub day: NaiveDate,
    pub group: u32,
    pub model_blake3: &'a str,
    pub hours: HoursMilli,
    /// The granted `daily` entry.
    pub audit_sequence: u64,
}

/// Stores `home` (in the release's transaction).
pub(super) async fn record_home(
    conn: &mut AnyConnection,
    home: &HomeForecast<'_>,
) -> Result<(), ReleaseError> {
    sqlx::query(
        "INSERT INTO daily_group_forecasts (meter_id, day, eval_group, model_blake3, \
         hours_milli, audit_seq, recorded_at_us) VALUES ($1, $2, $3, $4, $5, $6, $7) \
         ON CONFLICT (meter_id, day, model_blake3) DO NOTHING",
    )
    .bind(home.meter_id.to_owned())
    .bind(home.day.to_string())
    .bind(i64::from(home.group))
    .bind(home.model_blake3.to_owned())
    .bind(encode(&home.hours))
    .bind(i64::try_from(home.audit_sequence).unwrap_or(i64::MAX))
    .bind(Utc::now().timestamp_micros())
    .execute(conn)
    .await?;
    Ok(())
}

/// A stored release.
struct StoredRelease {
    homes: u32,
    hours: HoursMilli,
    audit_sequence: u64,
}

async fn stored_release(
    conn: &mut AnyConnection,
    query: &GroupForecastQuery,
) -> Result<Option<StoredRelease>, ReleaseError> {
    const TABLE: &str = "daily_group_forecast_releases";
    let row = sqlx::query(
        "SELECT homes, hours_milli, audit_seq FROM daily_group_forecast_releases \
         WHERE eval_group = $1 AND day = $2 AND model_blake3 = $3",
    )
    .bind(i64::from(query.group))
    .bind(query.day.to_string())
    .bind(query.model_blake3.clone())
    .fetch_optional(conn)
    .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let homes: i64 = row.try_get(0)?;
    let text: String = row.try_get(1)?;
    let sequence: i64 = row.try_get(2)?;
    Ok(Some(StoredRelease {
        homes: u32::try_from(homes).map_err(|_| corrupt(TABLE, "homes"))?,
        hours: decode(TABLE, &text)?,
        audit_sequence: to_u64(TABLE, "audit_seq", sequence)?,
    }))
}

/// The homes stored for the query, in meter order, that name a granted `daily` entry of
/// their meter (a row inserted outside the key authority is left out, and logged).
async fn stored_homes(
    conn: &mut AnyConnection,
    query: &GroupForecastQuery,
) -> Result<Vec<(String, HoursMilli)>, ReleaseError> {
    const TABLE: &str = "daily_group_forecasts";
    let rows = sqlx::query(
        "SELECT meter_id, hours_milli, audit_seq FROM daily_group_forecasts \
         WHERE eval_group = $1 AND day = $2 AND model_blake3 = $3 ORDER BY meter_id",
    )
    .bind(i64::from(query.group))
    .bind(query.day.to_string())
    .bind(query.model_blake3.clone())
    .fetch_all(&mut *conn)
    .await?;
    let mut homes = Vec::with_capacity(rows.len());
    for row in rows {
        let meter: String = row.try_get(0)?;
        let text: String = row.try_get(1)?;
        let sequence: i64 = row.try_get(2)?;
        let granted: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM audit_entries WHERE seq = $1 AND meter_id = $2 \
             AND request_kind = 'daily' AND decision = 'granted'",
        )
        .bind(sequence)
        .bind(meter.clone())
        .fetch_one(&mut *conn)
        .await?;
        if granted == 0 {
            tracing::error!(
                meter_id = %meter,
                audit_seq = sequence,
                "daily_group_forecasts row without its granted daily entry: left out"
            );
            continue;
        }
        homes.push((meter, decode(TABLE, &text)?));
    }
    Ok(homes)
}

/// The first granted `daily-group-forecast` entry for the query's scope.
async fn granted_entry(conn: &mut AnyConnection, scope: &str) -> Result<Option<u64>, ReleaseError> {
    let sequence: Option<i64> = sqlx::query_scalar(
        "SELECT MIN(seq) FROM audit_entries WHERE request_kind = $1 AND period = $2 \
         AND decision = 'granted'",
    )
    .bind(RequestKind::DAILY_GROUP_FORECAST.as_str().to_owned())
    .bind(scope.to_owned())
    .fetch_one(conn)
    .await?;
    Ok(sequence.and_then(|s| u64::try_from(s).ok()))
}

/// SHA-256 over the summed homes (meter id and hours, in meter order): the audit entry's
/// input digest.
fn homes_digest(homes: &[(String, HoursMilli)]) -> InputDigest {
    let mut hasher = sha2::Sha256::new();
    for (meter, hours) in homes {
        hasher.update((meter.len() as u64).to_le_bytes());
        hasher.update(meter.as_bytes());
        for v in hours {
            hasher.update(v.to_le_bytes());
        }
    }
    InputDigest(hasher.finalize().into())
}

impl GroupForecastReleaser {
    /// A releaser over `audit`'s database; `engine` says which `daily` models are registered.
    #[must_use]
    pub fn new(audit: Arc<AuditLog>, engine: Arc<DeepEngine>) -> Self {
        Self { audit, engine }
    }

    /// Records the refusal of a request before its rule was applied (no valid token, a role
    /// that may not ask, a malformed request, an unregistered model): one audit entry.
    ///
    /// # Errors
    /// [`ReleaseError::Audit`] when the log cannot be written.
    pub async fn refuse_request(
        &self,
        caller: Option<&Caller>,
        scope: &str,
        reason: &str,
    ) -> Result<u64, ReleaseError> {
        let entry = NewEntry::request_refused(
            RequestKind::DAILY_GROUP_FORECAST,
            reason,
            &scope.chars().take(160).collect::<String>(),
            caller,
        );
        Ok(self.audit.append(entry).await?.sequence)
    }

    /// Decides `query` for `caller` (authorized as a utility): the stored release, or the
    /// rule over the stored homes with its audit entry and release row (one transaction).
    ///
    /// # Errors
    /// [`ReleaseError::FailedPrecondition`] (logged first) when the model is not a registered
    /// `daily` model; audit or database failures (nothing released).
    #[tracing::instrument(name = "release.daily_group_forecast", skip_all, fields(
        subject = caller.subject(), group = query.group, day = %query.day))]
    pub async fn release(
        &self,
        caller: &Caller,
        query: GroupForecastQuery,
    ) -> Result<GroupForecastDecision, ReleaseError> {
        let scope = query.scope();
        if self
            .engine
            .computation(RequestKind::DAILY.as_str(), &query.model_blake3)
            .is_none()
        {
            let reason = format!("{} is not a registered daily model", query.model_blake3);
            self.refuse_request(Some(caller), &scope, &reason).await?;
            return Err(ReleaseError::FailedPrecondition(reason));
        }
        let mut tx = self.audit.begin_append().await?;
        if let Some(stored) = stored_release(tx.connection(), &query).await? {
            // Answered from the row: no new entry, no new total.
            drop(tx);
            tracing::info!(
                audit_seq = stored.audit_sequence,
                "group forecast already released"
            );
            return Ok(GroupForecastDecision {
                query,
                decision: Ok(stored.hours),
                already_released: true,
                homes: stored.homes,
                audit_sequence: stored.audit_sequence,
            });
        }
        let homes = stored_homes(tx.connection(), &query).await?;
        let count = u32::try_from(homes.len()).unwrap_or(u32::MAX);
        let decision = match granted_entry(tx.connection(), &scope).await? {
            Some(sequence) => {
                tracing::error!(
                    audit_seq = sequence,
                    "a granted group forecast without its release row"
                );
                Err(GroupForecastRefusal::RowMissing { sequence })
            }
            None => {
                let values: Vec<HoursMilli> = homes.iter().map(|(_, h)| *h).collect();
                group_total(&values)
            }
        };
        let entry = NewEntry::new(
            RequestKind::DAILY_GROUP_FORECAST,
            match &decision {
                Ok(_) => Decision::Granted,
                Err(refusal) => Decision::refused(refusal.to_string()),
            },
        )
        .caller(caller)
        .period(scope)
        .input(homes_digest(&homes));
        let entry = tx.append(entry).await?;
        if let Ok(total) = &decision {
            sqlx::query(
                "INSERT INTO daily_group_forecast_releases (eval_group, day, model_blake3, \
                 homes, hours_milli, audit_seq, released_at_us) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(i64::from(query.group))
            .bind(query.day.to_string())
            .bind(query.model_blake3.clone())
            .bind(i64::from(count))
            .bind(encode(total))
            .bind(i64::try_from(entry.sequence).unwrap_or(i64::MAX))
            .bind(Utc::now().timestamp_micros())
            .execute(tx.connection())
            .await?;
        }
        tx.commit()
            .instrument(tracing::debug_span!("group_forecast.commit"))
            .await?;
        tracing::info!(
            homes = count,
            granted = decision.is_ok(),
            "group forecast decided"
        );
        Ok(GroupForecastDecision {
            query,
            decision,
            already_released: false,
            homes: count,
            audit_sequence: entry.sequence,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn home(base: i64) -> HoursMilli {
        std::array::from_fn(|h| base + h as i64)
    }

    #[test]
    fn below_the_floor_is_refused_and_the_total_is_the_exact_sum() {
        assert_eq!(
            group_total(&[home(1), home(2)]),
            Err(GroupForecastRefusal::TooFewHomes { homes: 2, floor: 3 })
        );
        assert!(group_total(&[]).is_err());
        let total = group_total(&[home(100), home(2000), home(30_000)]).expect("three homes");
        for (h, t) in total.iter().enumerate() {
            // By hand: 100 + 2000 + 30000 + 3h.
            assert_eq!(*t, 32_100 + 3 * h as i64);
        }
        let mut big = home(0);
        big[5] = i64::MAX;
        assert_eq!(
            group_total(&[big, home(1), home(1)]),
            Err(GroupForecastRefusal::Overflow)
        );
    }

    #[test]
    fn released_kwh_become_whole_thousandths() {
        let kwh: Vec<f64> = (0..24).map(|h| 0.001 * f64::from(h) + 0.1).collect();
        let milli = to_milli(&kwh).expect("24 values");
        assert_eq!(milli[0], 100);
        assert_eq!(milli[23], 123);
        assert!(to_milli(&kwh[..23]).is_none());
        let mut nan = kwh.clone();
        nan[3] = f64::NAN;
        assert!(to_milli(&nan).is_none());
    }

    #[test]
    fn the_twin_sums_the_homes_with_a_forecast() {
        let day = NaiveDate::from_ymd_opt(2024, 3, 12).expect("day");
        let release = |base: f64| seer_daily::release::DailyRelease {
            day,
            forecast: Some((0..24).map(|h| base + 0.001 * f64::from(h)).collect()),
            anomaly: None,
        };
        let none = seer_daily::release::DailyRelease {
            day,
            forecast: None,
            anomaly: None,
        };
        // Two homes with a forecast and one without: below the floor.
        assert_eq!(
            plaintext_twin(&[release(0.5), release(0.25), none.clone()]),
            Err(GroupForecastRefusal::TooFewHomes { homes: 2, floor: 3 })
        );
        let total = plaintext_twin(&[release(0.5), release(0.25), none, release(1.0)])
            .expect("three homes");
        assert_eq!(total[0], 1750);
        assert_eq!(total[23], 1750 + 3 * 23);
    }

    #[test]
    fn requests_name_a_day_and_a_digest() {
        let digest = "ab".repeat(32);
        let query = check_request(7, "2024-03-13", &digest).expect("valid");
        assert_eq!(
            query.scope(),
            format!("group 7 day 2024-03-13 model {digest}")
        );
        assert!(check_request(7, "2024-3-13", &digest).is_err());
        assert!(check_request(7, "2024-03-13T00:00", &digest).is_err());
        assert!(check_request(7, "2024-02-30", &digest).is_err());
        assert!(check_request(7, "02024-3-13", &digest).is_err());
        assert!(check_request(7, "2024-03-13", &"AB".repeat(32)).is_err());
        assert!(check_request(7, "2024-03-13", "abcd").is_err());
        let labels = hour_labels(query.day);
        assert_eq!(labels.len(), 24);
        assert_eq!(labels[0], "2024-03-13T00:00");
        assert_eq!(labels[23], "2024-03-13T23:00");
    }
}
