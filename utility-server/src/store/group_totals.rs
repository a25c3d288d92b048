//! Distributed noise in the store: a noise group's batches of one window, read back as their
//! meters signed them, and the group's hours the key authority released.
//!
//! A noise group is a billing group; a window is named by its start in UTC
//! ([`utc_rfc3339`]), stored beside the plan's own text in `batches.noise_window_utc`. The
//! job ([`crate::group_totals`]) reads a window's plans ([`Store::window_plans`]) and its
//! batches page by page ([`Store::window_batches`]: each page holds analytics lanes, never
//! billing lanes, whose BLAKE3 was stored at ingest), and records each released hour once
//! ([`Store::record_group_total`]).

use chrono::{DateTime, FixedOffset, Utc};
use seer_proto::v1::{NoisePlan, UploadBatch};
use sqlx::Row as _;
use sqlx::any::AnyRow;

use super::{BatchKey, Store, StoreError, from_db, query_error, to_db};
use crate::batch::{MeterId, utc_from_micros, utc_rfc3339};

/// Most batches one [`Store::window_batches`] page returns: each carries an analytics lane
/// (a few hundred kilobytes at n = 8192), so a page stays within a few tens of megabytes.
pub const MAX_WINDOW_PAGE_SIZE: u32 = 64;

/// A stored batch of a noise window, rebuilt as its meter sent it, except that its billing
/// lane is left empty and given by its BLAKE3 (which the meter's signature covers).
#[derive(Clone, PartialEq)]
pub struct WindowBatch {
    /// The batch as sent, `billing_lane` empty.
    pub batch: UploadBatch,
    /// BLAKE3 of the billing lane as received.
    pub billing_lane_blake3: [u8; 32],
}

impl WindowBatch {
    /// Where the next page starts.
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] when the stored meter id is not one (never for a row the
    /// store wrote).
    pub fn key(&self) -> Result<BatchKey, StoreError> {
        Ok(BatchKey {
            meter_id: meter_id(&self.batch.meter_id)?,
            sequence: self.batch.sequence,
        })
    }
}

impl std::fmt::Debug for WindowBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WindowBatch")
            .field("meter_id", &self.batch.meter_id)
            .field("sequence", &self.batch.sequence)
            .field("noise_plan", &self.batch.noise_plan)
            .field("analytics_lane_bytes", &self.batch.analytics_lane.len())
            .field(
                "billing_lane_blake3",
                &blake3::Hash::from_bytes(self.billing_lane_blake3).to_hex(),
            )
            .finish_non_exhaustive()
    }
}

/// One plan of a window and how many stored batches carry it.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanCount {
    /// The plan as signed, with `first_slot` and `slot_count` zero (they are the batches'
    /// own spans).
    pub plan: NoisePlan,
    /// Batches that carry it.
    pub batches: u64,
    /// Meters among them.
    pub meters: u64,
}

/// A (noise group, window) with plan-carrying batches (see [`Store::pending_group_windows`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupWindow {
    /// The noise group.
    pub group: u32,
    /// The window's start, UTC.
    pub window_start: DateTime<Utc>,
    /// Hours in the window (the longest window its batches' plans describe).
    pub hours: u32,
    /// Hours of the window already released.
    pub released: u32,
}

/// One released hour of a noise group, as stored.
///
/// Serializes (the `group-totals` command's JSON) with `hour_start` as RFC 3339 text.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct GroupTotal {
    /// The noise group.
    pub billing_group: u32,
    /// Start of the hour.
    #[serde(serialize_with = "serialize_instant")]
    pub hour_start: DateTime<Utc>,
    /// Whole Wh in the hour, with noise.
    pub total_wh: i64,
    /// Whole Wh per interval of the hour, with noise (empty unless asked for).
    pub interval_wh: Vec<i64>,
    /// The fewest meters present in an interval of the hour.
    pub min_present: u32,
    /// ε per reading of each home in the hour's total.
    pub epsilon: f64,
    /// The scale Δ/ε of each interval's discrete Laplace draw, Wh.
    pub noise_scale_wh: f64,
    /// The key authority's audit entry of the request that released it (for an hour first
    /// seen as already released, the entry of the request that returned it).
    pub audit_seq: u64,
    /// When the utility recorded it (µs since the Unix epoch).
    pub released_at_us: i64,
}

fn serialize_instant<S: serde::Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&utc_rfc3339(*t))
}

impl GroupTotal {
    /// Whether `other` states the same release: the same hour and values (ε and the scale
    /// bit for bit), whatever the audit entry and the time it was recorded. Interval totals
    /// only one side has are not a difference (they are released only when asked for).
    #[must_use]
    pub fn same_release(&self, other: &Self) -> bool {
        self.billing_group == other.billing_group
            && self.hour_start == other.hour_start
            && self.total_wh == other.total_wh
            && (self.interval_wh.is_empty()
                || other.interval_wh.is_empty()
                || self.interval_wh == other.interval_wh)
            && self.min_present == other.min_present
            && self.epsilon.to_bits() == other.epsilon.to_bits()
            && self.noise_scale_wh.to_bits() == other.noise_scale_wh.to_bits()
    }
}

/// What [`Store::record_group_total`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum RecordOutcome {
    /// Stored: the hour was not recorded before.
    Inserted,
    /// Already recorded with the same values; nothing changed.
    Unchanged,
    /// Already recorded without interval totals, which this release has: they were added.
    IntervalsAdded,
    /// Already recorded with other values, which are kept: the stored row.
    Conflict(Box<GroupTotal>),
}

impl Store {
    /// The plans the batches of `group`'s window starting at `window_start` carry, each with
    /// its batch and meter counts; most batches first (ties in the plans' field order).
    ///
    /// # Errors
    /// When the database fails or a row is unreadable.
    pub async fn window_plans(
        &self,
        group: u32,
        window_start: DateTime<Utc>,
    ) -> Result<Vec<PlanCount>, StoreError> {
        let rows = sqlx::query(
            "SELECT noise_group_size, noise_tolerated, noise_sensitivity_wh, noise_epsilon, \
             noise_window_start, noise_interval_s, noise_window_slots, \
             CAST(COUNT(*) AS BIGINT) AS batches, \
             CAST(COUNT(DISTINCT meter_id) AS BIGINT) AS meters \
             FROM batches WHERE billing_group = $1 AND noise_window_utc = $2 \
             GROUP BY noise_group_size, noise_tolerated, noise_sensitivity_wh, noise_epsilon, \
             noise_window_start, noise_interval_s, noise_window_slots",
        )
        .bind(i64::from(group))
        .bind(utc_rfc3339(window_start))
        .fetch_all(&self.pool)
        .await
        .map_err(query_error("reading a noise window's plans"))?;
        let read = query_error("reading a noise window's plans");
        let mut plans = rows
            .iter()
            .map(|row| {
                Ok(PlanCount {
                    plan: NoisePlan {
                        group_size: u32_column(row, "batches", "noise_group_size")?,
                        tolerated: u32_column(row, "batches", "noise_tolerated")?,
                        sensitivity_wh: row.try_get("noise_sensitivity_wh").map_err(read)?,
                        epsilon: row.try_get("noise_epsilon").map_err(read)?,
                        window_start: row.try_get("noise_window_start").map_err(read)?,
                        interval_seconds: u32_column(row, "batches", "noise_interval_s")?,
                        window_slots: u32_column(row, "batches", "noise_window_slots")?,
                        first_slot: 0,
                        slot_count: 0,
                    },
                    batches: from_db("batches", "count", row.try_get("batches").map_err(read)?)?,
                    meters: from_db("batches", "count", row.try_get("meters").map_err(read)?)?,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        plans.sort_by(|a, b| {
            b.batches
                .cmp(&a.batches)
                .then_with(|| compare_plans(&a.plan, &b.plan))
        });
        Ok(plans)
    }

    /// One page of the batches of `group`'s window starting at `window_start` (whatever
    /// their plan), ordered by (meter, sequence), starting after `after` (from the start when
    /// `None`); at most `limit` batches (capped at [`MAX_WINDOW_PAGE_SIZE`]). Each is rebuilt
    /// as its meter sent it, its billing lane replaced by the lane's BLAKE3 (the lane itself
    /// is not read). An empty page is the end.
    ///
    /// # Errors
    /// When the database fails or a row is unreadable.
    pub async fn window_batches(
        &self,
        group: u32,
        window_start: DateTime<Utc>,
        after: Option<&BatchKey>,
        limit: u32,
    ) -> Result<Vec<WindowBatch>, StoreError> {
        let limit = i64::from(limit.clamp(1, MAX_WINDOW_PAGE_SIZE));
        let (after_meter, after_sequence) =
            after.map_or(("", 0), |key| (key.meter_id.as_str(), to_db(key.sequence)));
        // Meter ids are never empty, so ("", 0) precedes every row.
        let rows = sqlx::query(
            "SELECT meter_id, sequence, period, start_us, end_us, utc_offset_s, start_text, \
             end_text, readings, billing_group, billing_position, analytics_lane, epsilon_spent, \
             signature, meter_certificate, billing_lane_blake3, noise_group_size, \
             noise_tolerated, noise_sensitivity_wh, noise_epsilon, noise_window_start, \
             noise_interval_s, noise_window_slots, noise_first_slot, noise_slot_count \
             FROM batches WHERE billing_group = $1 AND noise_window_utc = $2 \
             AND (meter_id > $3 OR (meter_id = $3 AND sequence > $4)) \
             ORDER BY meter_id, sequence LIMIT $5",
        )
        .bind(i64::from(group))
        .bind(utc_rfc3339(window_start))
        .bind(after_meter)
        .bind(after_sequence)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(query_error("reading a noise window's batches"))?;
        rows.iter().map(window_batch_from_row).collect()
    }

    /// The (noise group, window) pairs with plan-carrying batches whose windows ended by
    /// `ended_by` and which have hours not yet released, by group and window.
    ///
    /// # Errors
    /// When the database fails or a row is unreadable.
    pub async fn pending_group_windows(
        &self,
        ended_by: DateTime<Utc>,
    ) -> Result<Vec<GroupWindow>, StoreError> {
        let rows = sqlx::query(
            "SELECT billing_group, noise_window_utc, \
             CAST(MAX(noise_window_slots * noise_interval_s) AS BIGINT) AS seconds \
             FROM batches WHERE noise_window_utc IS NOT NULL \
             GROUP BY billing_group, noise_window_utc ORDER BY billing_group, noise_window_utc",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(query_error("listing the noise windows"))?;
        let read = query_error("listing the noise windows");
        let mut pending = Vec::new();
        for row in &rows {
            let group = u32_column(row, "batches", "billing_group")?;
            let window_text: String = row.try_get("noise_window_utc").map_err(read)?;
            let window_start = utc_instant("batches", &window_text)?;
            let seconds: i64 = row.try_get("seconds").map_err(read)?;
            let hours = u32::try_from(seconds / 3600).map_err(|_| StoreError::Corrupt {
                table: "batches",
                reason: format!("a window of {seconds} s"),
            })?;
            let window_end = window_start + chrono::TimeDelta::seconds(seconds);
            if window_end > ended_by {
                continue;
            }
            let released: i64 = sqlx::query_scalar(
                "SELECT CAST(COUNT(*) AS BIGINT) FROM group_totals \
                 WHERE billing_group = $1 AND hour_start >= $2 AND hour_start < $3",
            )
            .bind(i64::from(group))
            .bind(window_text)
            .bind(utc_rfc3339(window_end))
            .fetch_one(&self.pool)
            .await
            .map_err(query_error("counting a noise window's released hours"))?;
            let released = u32::try_from(released).unwrap_or(u32::MAX);
            if released < hours {
                pending.push(GroupWindow {
                    group,
                    window_start,
                    hours,
                    released,
                });
            }
        }
        Ok(pending)
    }

    /// Records one released hour, once: an hour already recorded keeps its row (its interval
    /// totals are added when it had none and `total` has them, summing to its total), and
    /// the outcome says whether `total` states the same release.
    ///
    /// # Errors
    /// When the database fails; nothing is recorded then.
    pub async fn record_group_total(
        &self,
        total: &GroupTotal,
    ) -> Result<RecordOutcome, StoreError> {
        let mut tx = self.begin_write().await?;
        let hour = utc_rfc3339(total.hour_start);
        let inserted = sqlx::query(
            "INSERT INTO group_totals (billing_group, hour_start, total_wh, interval_wh, \
             min_present, epsilon, noise_scale_wh, audit_seq, released_at_us) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
             ON CONFLICT (billing_group, hour_start) DO NOTHING",
        )
        .bind(i64::from(total.billing_group))
        .bind(hour.clone())
        .bind(total.total_wh)
        .bind(interval_text(&total.interval_wh))
        .bind(i64::from(total.min_present))
        .bind(total.epsilon)
        .bind(total.noise_scale_wh)
        .bind(to_db(total.audit_seq))
        .bind(total.released_at_us)
        .execute(&mut *tx)
        .await
        .map_err(query_error("recording a released group hour"))?
        .rows_affected();
        let outcome = if inserted == 1 {
            RecordOutcome::Inserted
        } else {
            let row = sqlx::query(
                "SELECT billing_group, hour_start, total_wh, interval_wh, min_present, epsilon, \
                 noise_scale_wh, audit_seq, released_at_us FROM group_totals \
                 WHERE billing_group = $1 AND hour_start = $2",
            )
            .bind(i64::from(total.billing_group))
            .bind(hour.clone())
            .fetch_one(&mut *tx)
            .await
            .map_err(query_error("reading a recorded group hour"))?;
            let stored = group_total_from_row(&row)?;
            if !stored.same_release(total) {
                RecordOutcome::Conflict(Box::new(stored))
            } else if stored.interval_wh.is_empty()
                && !total.interval_wh.is_empty()
                && total.interval_wh.iter().sum::<i64>() == stored.total_wh
            {
                sqlx::query(
                    "UPDATE group_totals SET interval_wh = $3 \
                     WHERE billing_group = $1 AND hour_start = $2",
                )
                .bind(i64::from(total.billing_group))
                .bind(hour)
                .bind(interval_text(&total.interval_wh))
                .execute(&mut *tx)
                .await
                .map_err(query_error("adding a group hour's interval totals"))?;
                RecordOutcome::IntervalsAdded
            } else {
                RecordOutcome::Unchanged
            }
        };
        tx.commit()
            .await
            .map_err(query_error("committing a released group hour"))?;
        if outcome != RecordOutcome::Unchanged {
            self.changed("group-totals");
        }
        Ok(outcome)
    }

    /// The released hours of `group` starting in `[from, to)`, oldest first.
    ///
    /// # Errors
    /// When the database fails or a row is unreadable.
    pub async fn group_totals(
        &self,
        group: u32,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<GroupTotal>, StoreError> {
        let rows = sqlx::query(
            "SELECT billing_group, hour_start, total_wh, interval_wh, min_present, epsilon, \
             noise_scale_wh, audit_seq, released_at_us FROM group_totals \
             WHERE billing_group = $1 AND hour_start >= $2 AND hour_start < $3 \
             ORDER BY hour_start",
        )
        .bind(i64::from(group))
        .bind(utc_rfc3339(from))
        .bind(utc_rfc3339(to))
        .fetch_all(&self.pool)
        .await
        .map_err(query_error("reading a noise group's released hours"))?;
        rows.iter().map(group_total_from_row).collect()
    }
}

/// The plans' field order, for a deterministic choice among equally common plans.
fn compare_plans(a: &NoisePlan, b: &NoisePlan) -> std::cmp::Ordering {
    (a.group_size, a.tolerated, a.sensitivity_wh)
        .cmp(&(b.group_size, b.tolerated, b.sensitivity_wh))
        .then_with(|| a.epsilon.total_cmp(&b.epsilon))
        .then_with(|| {
            (&a.window_start, a.interval_seconds, a.window_slots).cmp(&(
                &b.window_start,
                b.interval_seconds,
                b.window_slots,
            ))
        })
}

/// Interval totals as stored: comma-separated whole Wh, empty for none.
fn interval_text(values: &[i64]) -> String {
    values
        .iter()
        .map(i64::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

fn parse_intervals(text: &str) -> Result<Vec<i64>, StoreError> {
    if text.is_empty() {
        return Ok(Vec::new());
    }
    text.split(',')
        .map(|v| {
            v.parse().map_err(|_| StoreError::Corrupt {
                table: "group_totals",
                reason: format!("interval_wh {text:?} is not comma-separated integers"),
            })
        })
        .collect()
}

fn meter_id(text: &str) -> Result<MeterId, StoreError> {
    MeterId::try_new(text).map_err(|e| StoreError::Corrupt {
        table: "batches",
        reason: e.to_string(),
    })
}

fn utc_instant(table: &'static str, text: &str) -> Result<DateTime<Utc>, StoreError> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| StoreError::Corrupt {
            table,
            reason: format!("{text:?} is not an RFC 3339 instant"),
        })
}

fn u32_column(row: &AnyRow, table: &'static str, column: &'static str) -> Result<u32, StoreError> {
    let value: i64 = row
        .try_get(column)
        .map_err(query_error("reading a stored integer"))?;
    u32::try_from(value).map_err(|_| StoreError::Corrupt {
        table,
        reason: format!("{column} {value} is out of range"),
    })
}

fn group_total_from_row(row: &AnyRow) -> Result<GroupTotal, StoreError> {
    let read = query_error("reading a released group hour");
    let hour: String = row.try_get("hour_start").map_err(read)?;
    let interval: String = row.try_get("interval_wh").map_err(read)?;
    Ok(GroupTotal {
        billing_group: u32_column(row, "group_totals", "billing_group")?,
        hour_start: utc_instant("group_totals", &hour)?,
        total_wh: row.try_get("total_wh").map_err(read)?,
        interval_wh: parse_intervals(&interval)?,
        min_present: u32_column(row, "group_totals", "min_present")?,
        epsilon: row.try_get("epsilon").map_err(read)?,
        noise_scale_wh: row.try_get("noise_scale_wh").map_err(read)?,
        audit_seq: from_db(
            "group_totals",
            "audit_seq",
            row.try_get("audit_seq").map_err(read)?,
        )?,
        released_at_us: row.try_get("released_at_us").map_err(read)?,
    })
}

/// `start` or `end` as sent; for rows stored before the text was kept, the instant in the
/// offset the meter stated, as meters write it.
fn instant_text(
    row: &AnyRow,
    text_column: &'static str,
    micros_column: &'static str,
) -> Result<String, StoreError> {
    let read = query_error("reading a noise window's batches");
    if let Some(text) = row
        .try_get::<Option<String>, _>(text_column)
        .map_err(read)?
    {
        return Ok(text);
    }
    let micros: i64 = row.try_get(micros_column).map_err(read)?;
    let offset_s: i64 = row.try_get("utc_offset_s").map_err(read)?;
    let offset = i32::try_from(offset_s).ok().and_then(FixedOffset::east_opt);
    match (utc_from_micros(micros), offset) {
        (Some(instant), Some(offset)) => Ok(instant.with_timezone(&offset).to_rfc3339()),
        _ => Err(StoreError::Corrupt {
            table: "batches",
            reason: format!("{micros_column} {micros} at offset {offset_s} s is out of range"),
        }),
    }
}

fn window_batch_from_row(row: &AnyRow) -> Result<WindowBatch, StoreError> {
    let read = query_error("reading a noise window's batches");
    let meter: String = row.try_get("meter_id").map_err(read)?;
    let sequence: i64 = row.try_get("sequence").map_err(read)?;
    let digest: Option<Vec<u8>> = row.try_get("billing_lane_blake3").map_err(read)?;
    let billing_lane_blake3: [u8; 32] = digest
        .as_deref()
        .and_then(|d| d.try_into().ok())
        .ok_or_else(|| StoreError::Corrupt {
            table: "batches",
            reason: format!("batch {sequence} of meter {meter} has no billing lane digest"),
        })?;
    let plan = NoisePlan {
        group_size: u32_column(row, "batches", "noise_group_size")?,
        tolerated: u32_column(row, "batches", "noise_tolerated")?,
        sensitivity_wh: row.try_get("noise_sensitivity_wh").map_err(read)?,
        epsilon: row.try_get("noise_epsilon").map_err(read)?,
        window_start: row.try_get("noise_window_start").map_err(read)?,
        interval_seconds: u32_column(row, "batches", "noise_interval_s")?,
        window_slots: u32_column(row, "batches", "noise_window_slots")?,
        first_slot: u32_column(row, "batches", "noise_first_slot")?,
        slot_count: u32_column(row, "batches", "noise_slot_count")?,
    };
    let batch = UploadBatch {
        meter_id: meter_id(&meter)?.to_string(),
        sequence: from_db("batches", "sequence", sequence)?,
        period: row.try_get("period").map_err(read)?,
        start: instant_text(row, "start_text", "start_us")?,
        end: instant_text(row, "end_text", "end_us")?,
        readings: u32_column(row, "batches", "readings")?,
        billing_lane: Vec::new(),
        billing_position: u32_column(row, "batches", "billing_position")?,
        billing_group: u32_column(row, "batches", "billing_group")?,
        analytics_lane: row.try_get("analytics_lane").map_err(read)?,
        epsilon_spent: row.try_get("epsilon_spent").map_err(read)?,
        signature: row
            .try_get::<Option<Vec<u8>>, _>("signature")
            .map_err(read)?
            .unwrap_or_default(),
        meter_certificate: row
            .try_get::<Option<Vec<u8>>, _>("meter_certificate")
            .map_err(read)?
            .unwrap_or_default(),
        noise_plan: Some(plan),
    };
    Ok(WindowBatch {
        batch,
        billing_lane_blake3,
    })
}
