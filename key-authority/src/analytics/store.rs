//! Analytics input receipts and released periods in the key authority's database (see the
//! [module documentation](super#storage)).

use chrono::{NaiveDateTime, Utc};
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, AnyPool, Row as _};

use seer_auth::device::{AnalyticsReceiptStatement, Statement};

use super::engine::{SlotBlock, SlotPeriod};
use crate::audit::{AuditLog, InputDigest, RequestKind, granted_in_chain};
use crate::release::ReleaseError;
use crate::signed_receipts::ANALYTICS_RECEIPT_KIND;

/// The audit entry `period` of an analytics receipt: `kind:input_id`.
#[must_use]
pub fn receipt_period(kind: &str, input_id: &str) -> String {
    format!("{kind}:{input_id}")
}

/// Which lane a meter's inputs come from: the one lane type, [`seer_core::Lane`] (parsed from
/// the wire and the database by [`seer_core::Lane::try_new`]).
pub use seer_core::Lane as InputLane;

/// The receipt of one meter's inputs for one computation.
#[derive(Clone, Debug, PartialEq)]
pub struct AnalyticsReceipt {
    /// The computation kind.
    pub kind: String,
    /// The meter.
    pub meter_id: String,
    /// The meter's name for the upload.
    pub input_id: String,
    /// The slots written.
    pub block: SlotBlock,
    /// How long each slot lasts (from the kind).
    pub slot_period: SlotPeriod,
    /// The start of the block's first slot.
    pub first_period: NaiveDateTime,
    /// BLAKE3 of each input, in order.
    pub input_digests: Vec<[u8; 32]>,
    /// The lane.
    pub lane: InputLane,
}

impl AnalyticsReceipt {
    /// The period (wire form) of the `position`-th slot of the block.
    #[must_use]
    pub fn period(&self, position: usize) -> String {
        self.slot_period.label(self.first_period, position)
    }
}

/// What recording an analytics receipt did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recorded {
    /// Recorded now.
    New,
    /// The identical receipt was there already.
    Duplicate,
}

/// Receipts and releases of analytics kinds, in the audit log's database.
#[derive(Clone, Debug)]
pub struct AnalyticsStore {
    pool: AnyPool,
}

fn to_db(value: usize) -> Result<i64, ReleaseError> {
    i64::try_from(value).map_err(|_| ReleaseError::InvalidArgument("value out of range".into()))
}

fn decode(what: &str) -> impl FnOnce(String) -> ReleaseError + '_ {
    move |detail| {
        ReleaseError::Database(sqlx::Error::Decode(
            format!("analytics_receipts.{what}: {detail}").into(),
        ))
    }
}

fn receipt_from_row(row: &AnyRow) -> Result<AnalyticsReceipt, ReleaseError> {
    let offset: i64 = row.try_get("slot_offset")?;
    let count: i64 = row.try_get("slot_count")?;
    let kind: String = row.try_get("kind")?;
    let first_period: String = row.try_get("first_period")?;
    let slot_period = SlotPeriod::of_kind(&kind)
        .ok_or_else(|| decode("kind")(format!("{kind:?} has no slots")))?;
    let digests: String = row.try_get("input_digests")?;
    let lane: String = row.try_get("lane")?;
    let epsilon: f64 = row.try_get("epsilon")?;
    let readings: i64 = row.try_get("readings_per_day")?;
    let input_digests = digests
        .split(',')
        .map(|d| {
            let mut out = [0_u8; 32];
            hex::decode_to_slice(d, &mut out).map(|()| out)
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| decode("input_digests")(e.to_string()))?;
    Ok(AnalyticsReceipt {
        kind,
        meter_id: row.try_get("meter_id")?,
        input_id: row.try_get("input_id")?,
        block: SlotBlock {
            offset: usize::try_from(offset).map_err(|e| decode("slot_offset")(e.to_string()))?,
            count: usize::try_from(count).map_err(|e| decode("slot_count")(e.to_string()))?,
        },
        slot_period,
        first_period: slot_period
            .parse(&first_period)
            .map_err(|e| decode("first_period")(e.to_string()))?,
        input_digests,
        lane: InputLane::try_new(
            &lane,
            epsilon,
            u32::try_from(readings).map_err(|e| decode("readings_per_day")(e.to_string()))?,
        )
        .map_err(|e| decode("lane")(e.to_string()))?,
    })
}

impl AnalyticsStore {
    /// The store in `log`'s database.
    #[must_use]
    pub fn new(log: &AuditLog) -> Self {
        Self {
            pool: log.pool().clone(),
        }
    }

    /// The receipt of (kind, meter, input id), as its row says.
    ///
    /// # Errors
    /// [`ReleaseError::Database`].
    pub async fn receipt(
        &self,
        kind: &str,
        meter_id: &str,
        input_id: &str,
    ) -> Result<Option<AnalyticsReceipt>, ReleaseError> {
        let mut conn = self.pool.acquire().await?;
        Ok(receipt_in(&mut conn, kind, meter_id, input_id)
            .await?
            .map(|stored| stored.receipt))
    }

    /// The receipt of (kind, meter, input id) if the audit chain recorded it: a granted
    /// `analytics-receipt` entry for its meter and `kind:input_id` whose digest is the SHA-256
    /// of the statement rebuilt from the row (what the meter signed). `Ok(Err(reason))` for a
    /// row that is missing, or that was inserted or altered outside the key authority (or
    /// recorded before statements were kept).
    ///
    /// # Errors
    /// [`ReleaseError::Database`].
    pub async fn bound_receipt(
        &self,
        kind: &str,
        meter_id: &str,
        input_id: &str,
    ) -> Result<Result<AnalyticsReceipt, String>, ReleaseError> {
        let mut conn = self.pool.acquire().await?;
        let Some(stored) = receipt_in(&mut conn, kind, meter_id, input_id).await? else {
            return Ok(Err(format!(
                "no {kind} receipt of meter {meter_id} for input {:?}",
                input_id.chars().take(64).collect::<String>()
            )));
        };
        let Some(statement) = stored.statement else {
            return Ok(Err(format!(
                "the {kind} receipt of meter {meter_id} was recorded before receipts kept their \
                 signed statement; the meter must send its inputs again"
            )));
        };
        let digest = InputDigest::sha256(&Statement::encode(&statement));
        let entry_kind = RequestKind::try_new(ANALYTICS_RECEIPT_KIND)?;
        let period = receipt_period(kind, input_id);
        if granted_in_chain(&mut conn, &entry_kind, meter_id, &period, &digest).await? {
            Ok(Ok(stored.receipt))
        } else {
            tracing::error!(
                kind,
                meter_id,
                "analytics receipt row without its granted audit entry"
            );
            Ok(Err(format!(
                "the {kind} receipt of meter {meter_id} is not the one the audit chain recorded \
                 (no granted analytics-receipt entry has its statement's digest)"
            )))
        }
    }

    /// The first of `periods` (wire forms of one kind, which sort chronologically) already
    /// released for (kind, meter), with its audit entry.
    ///
    /// # Errors
    /// [`ReleaseError::Database`].
    pub async fn first_released(
        &self,
        kind: &str,
        meter_id: &str,
        periods: &[String],
    ) -> Result<Option<(String, u64)>, ReleaseError> {
        let mut conn = self.pool.acquire().await?;
        first_released(&mut conn, kind, meter_id, periods).await
    }
}

/// Records `receipt`, signed by its meter as `statement` (the request rebuilt canonically)
/// with `signature`, inside the caller's transaction (which holds the audit head's lock and
/// has checked the signature). Idempotent on an identical receipt; a different receipt under
/// the same (kind, meter, input id) is [`ReleaseError::AlreadyExists`].
///
/// Every field of the statement is kept (the period, ε and readings per day as signed), so
/// that [`AnalyticsStore::bound_receipt`] can rebuild it from the row.
pub(crate) async fn record_in(
    conn: &mut AnyConnection,
    receipt: &AnalyticsReceipt,
    statement: &AnalyticsReceiptStatement,
    signature: &[u8],
) -> Result<Recorded, ReleaseError> {
    if let Some(stored) = receipt_in(
        &mut *conn,
        &receipt.kind,
        &receipt.meter_id,
        &receipt.input_id,
    )
    .await?
    {
        return if stored.receipt == *receipt && stored.statement.as_ref() == Some(statement) {
            Ok(Recorded::Duplicate)
        } else {
            Err(ReleaseError::AlreadyExists(format!(
                "meter {} already recorded a different {} receipt under input id {:?}",
                receipt.meter_id, receipt.kind, receipt.input_id
            )))
        };
    }
    sqlx::query(
        "INSERT INTO analytics_receipts (kind, meter_id, input_id, slot_offset, slot_count, \
             first_period, input_digests, lane, epsilon, readings_per_day, recorded_at_us, \
             signature, model_blake3, eval_group) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
    )
    .bind(receipt.kind.clone())
    .bind(receipt.meter_id.clone())
    .bind(receipt.input_id.clone())
    .bind(to_db(receipt.block.offset)?)
    .bind(to_db(receipt.block.count)?)
    .bind(statement.first_period.clone())
    .bind(
        receipt
            .input_digests
            .iter()
            .map(hex::encode)
            .collect::<Vec<_>>()
            .join(","),
    )
    .bind(receipt.lane.as_str().to_owned())
    .bind(statement.epsilon)
    .bind(i64::from(statement.readings_per_day))
    .bind(Utc::now().timestamp_micros())
    .bind(hex::encode(signature))
    .bind(statement.model_blake3.clone())
    .bind(i64::from(statement.group))
    .execute(&mut *conn)
    .await?;
    Ok(Recorded::New)
}

/// A receipt row, with the statement rebuilt from it (`None` for rows recorded before the
/// statement's every field was kept).
struct StoredReceipt {
    receipt: AnalyticsReceipt,
    statement: Option<AnalyticsReceiptStatement>,
}

/// The statement the row's meter signed, rebuilt from its columns.
fn statement_from_row(
    row: &AnyRow,
    receipt: &AnalyticsReceipt,
) -> Result<Option<AnalyticsReceiptStatement>, ReleaseError> {
    let model_blake3: Option<String> = row.try_get("model_blake3")?;
    let group: Option<i64> = row.try_get("eval_group")?;
    let (Some(model_blake3), Some(group)) = (model_blake3, group) else {
        return Ok(None);
    };
    let to_u32 = |what: &'static str, value: i64| {
        u32::try_from(value).map_err(|e| decode(what)(e.to_string()))
    };
    let offset: i64 = row.try_get("slot_offset")?;
    let count: i64 = row.try_get("slot_count")?;
    let readings: i64 = row.try_get("readings_per_day")?;
    Ok(Some(AnalyticsReceiptStatement {
        kind: receipt.kind.clone(),
        meter_id: receipt.meter_id.clone(),
        input_id: receipt.input_id.clone(),
        model_blake3,
        slot_offset: to_u32("slot_offset", offset)?,
        slot_count: to_u32("slot_count", count)?,
        first_period: row.try_get("first_period")?,
        group: to_u32("eval_group", group)?,
        input_blake3: receipt.input_digests.clone(),
        lane: receipt.lane.as_str().to_owned(),
        epsilon: row.try_get("epsilon")?,
        readings_per_day: to_u32("readings_per_day", readings)?,
    }))
}

async fn receipt_in(
    conn: &mut AnyConnection,
    kind: &str,
    meter_id: &str,
    input_id: &str,
) -> Result<Option<StoredReceipt>, ReleaseError> {
    sqlx::query(
        "SELECT kind, meter_id, input_id, slot_offset, slot_count, first_period, input_digests, \
         lane, epsilon, readings_per_day, model_blake3, eval_group FROM analytics_receipts \
         WHERE kind = $1 AND meter_id = $2 AND input_id = $3",
    )
    .bind(kind.to_owned())
    .bind(meter_id.to_owned())
    .bind(input_id.to_owned())
    .fetch_optional(conn)
    .await?
    .map(|row| {
        let receipt = receipt_from_row(&row)?;
        let statement = statement_from_row(&row, &receipt)?;
        Ok(StoredReceipt { receipt, statement })
    })
    .transpose()
}

/// Receipt rows read per page by [`first_unbound_receipt`].
const VERIFY_PAGE: i64 = 1_000;

/// The first analytics receipt row (in kind, meter, input id order) that the audit chain did
/// not record (see [`AnalyticsStore::bound_receipt`]), or that does not parse: its kind, meter
/// and input id. Rows recorded before receipts kept their whole statement (no model digest or
/// group) are skipped: no release can use them. One indexed query per row; for `Audit.Verify`.
///
/// # Errors
/// When the database fails.
pub(crate) async fn first_unbound_receipt(
    pool: &AnyPool,
) -> Result<Option<(String, String, String)>, sqlx::Error> {
    let entry_kind = RequestKind::try_new(ANALYTICS_RECEIPT_KIND)
        .map_err(|e| sqlx::Error::Protocol(e.to_string()))?;
    let mut conn = pool.acquire().await?;
    let mut after = (String::new(), String::new(), String::new());
    loop {
        let rows = sqlx::query(
            "SELECT kind, meter_id, input_id, slot_offset, slot_count, first_period, \
             input_digests, lane, epsilon, readings_per_day, model_blake3, eval_group \
             FROM analytics_receipts WHERE kind > $1 OR (kind = $1 AND (meter_id > $2 OR \
             (meter_id = $2 AND input_id > $3))) ORDER BY kind, meter_id, input_id LIMIT $4",
        )
        .bind(after.0.clone())
        .bind(after.1.clone())
        .bind(after.2.clone())
        .bind(VERIFY_PAGE)
        .fetch_all(&mut *conn)
        .await?;
        for row in &rows {
            let key: (String, String, String) = (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
            let statement =
                receipt_from_row(row).and_then(|receipt| statement_from_row(row, &receipt));
            let bound = match statement {
                Ok(None) => true,
                Ok(Some(statement)) => {
                    let digest = InputDigest::sha256(&Statement::encode(&statement));
                    let period = receipt_period(&key.0, &key.2);
                    granted_in_chain(&mut conn, &entry_kind, &key.1, &period, &digest).await?
                }
                Err(_) => false,
            };
            if !bound {
                return Ok(Some(key));
            }
            after = key;
        }
        if (rows.len() as i64) < VERIFY_PAGE {
            return Ok(None);
        }
    }
}

/// The first period in the span of `periods` (wire forms of one kind, which sort
/// chronologically) already released for (kind, meter), with its audit entry.
///
/// The audit chain is the record: a granted entry whose period range (`first..last`) covers a
/// requested period counts even when its `analytics_releases` rows are missing (deleted), so
/// deleting release rows never allows a second release.
pub(super) async fn first_released(
    conn: &mut AnyConnection,
    kind: &str,
    meter_id: &str,
    periods: &[String],
) -> Result<Option<(String, u64)>, ReleaseError> {
    let in_rows = first_released_row(conn, kind, meter_id, periods).await?;
    let in_chain = first_granted_in_chain(conn, kind, meter_id, periods).await?;
    if let Some((period, sequence)) = &in_chain
        && in_rows
            .as_ref()
            .is_none_or(|(row_period, _)| period < row_period)
    {
        tracing::error!(
            kind,
            meter_id,
            period,
            audit_sequence = sequence,
            "analytics release rows missing for a granted entry"
        );
    }
    Ok(match (in_rows, in_chain) {
        (Some(row), Some(chain)) => Some(if chain.0 < row.0 { chain } else { row }),
        (row, chain) => row.or(chain),
    })
}

/// The first of `periods` covered by a granted audit entry of (kind, meter): analytics
/// entries carry their released span as `first..last` (or one period).
async fn first_granted_in_chain(
    conn: &mut AnyConnection,
    kind: &str,
    meter_id: &str,
    periods: &[String],
) -> Result<Option<(String, u64)>, ReleaseError> {
    if periods.is_empty() {
        return Ok(None);
    }
    let rows = sqlx::query(
        "SELECT seq, period FROM audit_entries WHERE request_kind = $1 AND meter_id = $2 \
         AND decision = 'granted' AND period IS NOT NULL ORDER BY seq",
    )
    .bind(kind.to_owned())
    .bind(meter_id.to_owned())
    .fetch_all(conn)
    .await?;
    let mut first: Option<(String, u64)> = None;
    for row in rows {
        let seq: i64 = row.try_get("seq")?;
        let span: String = row.try_get("period")?;
        let (from, to) = span.split_once("..").unwrap_or((&span, &span));
        let covered = periods
            .iter()
            .filter(|p| from <= p.as_str() && p.as_str() <= to)
            .min();
        if let Some(period) = covered
            && first.as_ref().is_none_or(|(f, _)| period < f)
        {
            let seq = u64::try_from(seq).map_err(|e| decode("seq")(e.to_string()))?;
            first = Some((period.clone(), seq));
        }
    }
    Ok(first)
}

/// The first of `periods` with an `analytics_releases` row for (kind, meter).
async fn first_released_row(
    conn: &mut AnyConnection,
    kind: &str,
    meter_id: &str,
    periods: &[String],
) -> Result<Option<(String, u64)>, ReleaseError> {
    let (Some(first), Some(last)) = (periods.iter().min(), periods.iter().max()) else {
        return Ok(None);
    };
    let row = sqlx::query(
        "SELECT period, audit_seq FROM analytics_releases WHERE kind = $1 AND meter_id = $2 \
         AND period >= $3 AND period <= $4 ORDER BY period LIMIT 1",
    )
    .bind(kind.to_owned())
    .bind(meter_id.to_owned())
    .bind(first.clone())
    .bind(last.clone())
    .fetch_optional(conn)
    .await?;
    match row {
        None => Ok(None),
        Some(row) => {
            let period: String = row.try_get("period")?;
            let seq: i64 = row.try_get("audit_seq")?;
            Ok(Some((
                period,
                u64::try_from(seq).map_err(|e| decode("audit_seq")(e.to_string()))?,
            )))
        }
    }
}

/// One released period's row.
pub(super) struct ReleaseRow<'a> {
    pub kind: &'a str,
    pub meter_id: &'a str,
    pub period: &'a str,
    pub input_id: &'a str,
    pub model_blake3: &'a str,
    /// The released score or forecast kWh (stored in thousandths).
    pub value: f64,
    pub flagged: bool,
    pub audit_sequence: u64,
}

/// Inserts one released period (in the release transaction).
pub(super) async fn insert_release(
    conn: &mut AnyConnection,
    row: &ReleaseRow<'_>,
) -> Result<(), ReleaseError> {
    sqlx::query(
        "INSERT INTO analytics_releases (kind, meter_id, period, input_id, model_blake3, \
         value_milli, flagged, audit_seq, released_at_us) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(row.kind.to_owned())
    .bind(row.meter_id.to_owned())
    .bind(row.period.to_owned())
    .bind(row.input_id.to_owned())
    .bind(row.model_blake3.to_owned())
    .bind((row.value * 1000.0).round() as i64)
    .bind(i64::from(row.flagged))
    .bind(i64::try_from(row.audit_sequence).unwrap_or(i64::MAX))
    .bind(Utc::now().timestamp_micros())
    .execute(conn)
    .await?;
    Ok(())
}
