//! Receipts and releases in the key authority's database (see the
//! [module documentation](super#storage)).

use chrono::Utc;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, AnyPool, Row as _};

use super::ReleaseError;
use crate::audit::{AuditLog, InputDigest, RequestKind};

/// A billing period, `YYYY-MM` (year 1000–9999, month 01–12): the one period type,
/// [`seer_core::Period`], read with its one parser (`text.parse::<Period>()`).
pub use seer_core::Period;

/// One batch's receipt, as a meter records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Receipt {
    /// The meter.
    pub meter_id: String,
    /// The batch's sequence (≥ 1).
    pub sequence: u64,
    /// The billing period.
    pub period: Period,
    /// BLAKE3 of the batch's serialized billing-lane ciphertext.
    pub billing_digest: [u8; 32],
    /// The packing group the lane was encoded for.
    pub billing_group: u32,
    /// The position in the group.
    pub billing_position: u32,
    /// Whether the batch is the meter's last of the period.
    pub closes_period: bool,
}

/// What recording a receipt did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordOutcome {
    /// The receipt was recorded now.
    Recorded,
    /// This exact receipt had been recorded before; nothing changed.
    Duplicate,
}

/// A recorded release.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Released {
    /// The receipt whose input was released.
    pub receipt_sequence: u64,
    /// The amount (paise for bills).
    pub amount: i64,
    /// The audit entry that granted it.
    pub audit_sequence: u64,
    /// The released energy per tariff cell in whole Wh (bills; empty for releases recorded
    /// before cells were released).
    pub cell_wh: Vec<u64>,
}

/// A meter's registered billing position, bound by its first receipt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Registration {
    /// The packing group.
    pub billing_group: u32,
    /// The position in the group.
    pub billing_position: u32,
    /// The receipt (batch sequence) that bound it.
    pub first_sequence: u64,
}

/// Receipts and releases, in the audit log's database.
#[derive(Clone, Debug)]
pub struct ReceiptStore {
    pool: AnyPool,
}

fn to_db(value: u64, what: &str) -> Result<i64, ReleaseError> {
    i64::try_from(value).map_err(|_| ReleaseError::InvalidArgument(format!("{what} out of range")))
}

fn from_db(value: i64, what: &str) -> Result<u64, ReleaseError> {
    u64::try_from(value).map_err(|_| {
        ReleaseError::Database(sqlx::Error::Decode(
            format!("negative {what} {value} in the database").into(),
        ))
    })
}

impl ReceiptStore {
    /// The store in `log`'s database (its migrations created the tables).
    #[must_use]
    pub fn new(log: &AuditLog) -> Self {
        Self {
            pool: log.pool().clone(),
        }
    }

    /// The meter's receipt with the highest sequence in `period`, if any.
    ///
    /// # Errors
    /// [`ReleaseError::Database`] when the database fails.
    pub async fn last_receipt(
        &self,
        meter_id: &str,
        period: &Period,
    ) -> Result<Option<Receipt>, ReleaseError> {
        let mut conn = self.pool.acquire().await?;
        last_receipt(&mut conn, meter_id, period).await
    }

    /// Whether `receipt` is the one the audit chain recorded: a granted `receipt` entry for
    /// its meter and period whose digest is the SHA-256 of its statement under `params_id`.
    /// A row inserted or altered in the database outside the key authority has none.
    ///
    /// # Errors
    /// [`ReleaseError::Database`] when the database fails.
    pub async fn in_chain(&self, receipt: &Receipt, params_id: &str) -> Result<bool, ReleaseError> {
        let statement = super::service::billing_statement(receipt, params_id);
        let digest = InputDigest::sha256(&seer_auth::device::Statement::encode(&statement));
        let kind = RequestKind::try_new(crate::signed_receipts::RECEIPT_KIND)?;
        let mut conn = self.pool.acquire().await?;
        Ok(crate::audit::granted_in_chain(
            &mut conn,
            &kind,
            &receipt.meter_id,
            &receipt.period.to_string(),
            &digest,
        )
        .await?)
    }

    /// The meter's registered billing position, if it recorded a receipt.
    ///
    /// # Errors
    /// [`ReleaseError::Database`] when the database fails.
    pub async fn registration(&self, meter_id: &str) -> Result<Option<Registration>, ReleaseError> {
        let mut conn = self.pool.acquire().await?;
        registration(&mut conn, meter_id).await
    }

    /// The release of (`kind`, meter, period), if it happened.
    ///
    /// # Errors
    /// [`ReleaseError::Database`] when the database fails.
    pub async fn released(
        &self,
        kind: &RequestKind,
        meter_id: &str,
        period: &Period,
    ) -> Result<Option<Released>, ReleaseError> {
        let mut conn = self.pool.acquire().await?;
        released(&mut conn, kind, meter_id, period).await
    }
}

/// Records `receipt` inside the caller's transaction (which holds the audit head's lock and
/// appends the receipt's audit entry), storing the meter's `signature` with a new receipt:
/// idempotent on an identical receipt; a different receipt under the same (meter, sequence)
/// is [`ReleaseError::AlreadyExists`]; a receipt for a (meter, period) whose bill was released
/// is [`ReleaseError::FailedPrecondition`]. The meter's first receipt binds its (group,
/// position) in the registry; a later receipt claiming another position is
/// [`ReleaseError::FailedPrecondition`], and a (group, position) already bound to another
/// meter is [`ReleaseError::AlreadyExists`]. There is no way to record a receipt without its
/// audit entry: releases require the entry.
pub(crate) async fn record_in(
    conn: &mut AnyConnection,
    receipt: &Receipt,
    signature: Option<&[u8]>,
) -> Result<RecordOutcome, ReleaseError> {
    if receipt.sequence == 0 {
        return Err(ReleaseError::InvalidArgument(
            "sequence must be at least 1".into(),
        ));
    }
    let sequence = to_db(receipt.sequence, "sequence")?;
    let existing = sqlx::query(
        "SELECT meter_id, sequence, period, billing_digest, billing_group, \
             billing_position, closes_period FROM receipts WHERE meter_id = $1 AND sequence = $2",
    )
    .bind(receipt.meter_id.clone())
    .bind(sequence)
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(row) = existing {
        let stored = receipt_from_row(&row)?;
        return if stored == *receipt {
            Ok(RecordOutcome::Duplicate)
        } else {
            Err(ReleaseError::AlreadyExists(format!(
                "meter {} already recorded a different receipt under sequence {} \
                     (period {}, digest {})",
                receipt.meter_id,
                receipt.sequence,
                stored.period,
                hex::encode(stored.billing_digest)
            )))
        };
    }
    if let Some(released) = released(
        &mut *conn,
        &RequestKind::BILL,
        &receipt.meter_id,
        &receipt.period,
    )
    .await?
    {
        return Err(ReleaseError::FailedPrecondition(format!(
            "the bill of meter {} for {} was already released (audit entry {}); \
                 no receipt can be added to that period",
            receipt.meter_id, receipt.period, released.audit_sequence
        )));
    }
    bind_position(&mut *conn, receipt).await?;
    sqlx::query(
        "INSERT INTO receipts (meter_id, sequence, period, billing_digest, billing_group, \
             billing_position, closes_period, recorded_at_us, signature) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(receipt.meter_id.clone())
    .bind(sequence)
    .bind(receipt.period.to_string())
    .bind(hex::encode(receipt.billing_digest))
    .bind(i64::from(receipt.billing_group))
    .bind(i64::from(receipt.billing_position))
    .bind(i64::from(receipt.closes_period))
    .bind(Utc::now().timestamp_micros())
    .bind(signature.map(hex::encode))
    .execute(&mut *conn)
    .await?;
    Ok(RecordOutcome::Recorded)
}

/// Receipt rows read per page by [`first_unbound_receipt`].
const VERIFY_PAGE: i64 = 1_000;

/// The first billing receipt row (in meter, period, sequence order) that the audit chain did
/// not record: no granted `receipt` entry for its meter and period has the SHA-256 of the
/// statement rebuilt from it under `params_id` (inserted or altered outside the key
/// authority), or it does not parse. Returns its meter, period and sequence. Rows recorded
/// before meters signed receipts (no signature) are skipped: no release can use them. One
/// indexed query per row, on one connection; for `Audit.Verify`.
///
/// # Errors
/// When the database fails.
pub(crate) async fn first_unbound_receipt(
    pool: &AnyPool,
    params_id: &str,
) -> Result<Option<(String, String, i64)>, sqlx::Error> {
    let kind = RequestKind::try_new(crate::signed_receipts::RECEIPT_KIND)
        .map_err(|e| sqlx::Error::Protocol(e.to_string()))?;
    let mut conn = pool.acquire().await?;
    let mut after = (String::new(), String::new(), 0_i64);
    loop {
        let rows = sqlx::query(
            "SELECT meter_id, sequence, period, billing_digest, billing_group, billing_position, \
             closes_period FROM receipts WHERE signature IS NOT NULL AND (meter_id > $1 OR \
             (meter_id = $1 AND (period > $2 OR (period = $2 AND sequence > $3)))) \
             ORDER BY meter_id, period, sequence LIMIT $4",
        )
        .bind(after.0.clone())
        .bind(after.1.clone())
        .bind(after.2)
        .bind(VERIFY_PAGE)
        .fetch_all(&mut *conn)
        .await?;
        for row in &rows {
            let key: (String, String, i64) = (row.try_get(0)?, row.try_get(2)?, row.try_get(1)?);
            let bound = match receipt_from_row(row) {
                Ok(receipt) => {
                    let statement = super::service::billing_statement(&receipt, params_id);
                    let digest =
                        InputDigest::sha256(&seer_auth::device::Statement::encode(&statement));
                    crate::audit::granted_in_chain(&mut conn, &kind, &key.0, &key.1, &digest)
                        .await?
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

fn receipt_from_row(row: &AnyRow) -> Result<Receipt, ReleaseError> {
    let period: String = row.try_get(2)?;
    let digest: String = row.try_get(3)?;
    let corrupt = |what: &str| {
        ReleaseError::Database(sqlx::Error::Decode(
            format!("malformed receipt row: {what}").into(),
        ))
    };
    let mut billing_digest = [0_u8; 32];
    hex::decode_to_slice(&digest, &mut billing_digest).map_err(|_| corrupt("digest"))?;
    Ok(Receipt {
        meter_id: row.try_get(0)?,
        sequence: from_db(row.try_get(1)?, "sequence")?,
        period: period.parse().map_err(|_| corrupt("period"))?,
        billing_digest,
        billing_group: u32::try_from(row.try_get::<i64, _>(4)?).map_err(|_| corrupt("group"))?,
        billing_position: u32::try_from(row.try_get::<i64, _>(5)?)
            .map_err(|_| corrupt("position"))?,
        closes_period: row.try_get::<i64, _>(6)? != 0,
    })
}

/// The meter's receipt with the highest sequence in `period`, read through `conn`.
pub(super) async fn last_receipt(
    conn: &mut AnyConnection,
    meter_id: &str,
    period: &Period,
) -> Result<Option<Receipt>, ReleaseError> {
    let row = sqlx::query(
        "SELECT meter_id, sequence, period, billing_digest, billing_group, billing_position, \
         closes_period FROM receipts WHERE meter_id = $1 AND period = $2 \
         ORDER BY sequence DESC LIMIT 1",
    )
    .bind(meter_id.to_owned())
    .bind(period.to_string())
    .fetch_optional(conn)
    .await?;
    row.as_ref().map(receipt_from_row).transpose()
}

/// The meter's registered billing position, read through `conn`.
pub(super) async fn registration(
    conn: &mut AnyConnection,
    meter_id: &str,
) -> Result<Option<Registration>, ReleaseError> {
    let row = sqlx::query(
        "SELECT billing_group, billing_position, first_sequence FROM billing_positions \
         WHERE meter_id = $1",
    )
    .bind(meter_id.to_owned())
    .fetch_optional(conn)
    .await?;
    let corrupt = |what: &str| {
        ReleaseError::Database(sqlx::Error::Decode(
            format!("malformed billing position row: {what}").into(),
        ))
    };
    row.map(|row| {
        Ok(Registration {
            billing_group: u32::try_from(row.try_get::<i64, _>(0)?)
                .map_err(|_| corrupt("group"))?,
            billing_position: u32::try_from(row.try_get::<i64, _>(1)?)
                .map_err(|_| corrupt("position"))?,
            first_sequence: from_db(row.try_get(2)?, "first sequence")?,
        })
    })
    .transpose()
}

/// Binds the receipt's meter to its (group, position) if it has no binding yet, or checks
/// that the receipt claims the bound one (inside the receipt's transaction, under the head
/// lock, so two meters never race to one position).
async fn bind_position(conn: &mut AnyConnection, receipt: &Receipt) -> Result<(), ReleaseError> {
    let (group, position) = (receipt.billing_group, receipt.billing_position);
    if let Some(bound) = registration(conn, &receipt.meter_id).await? {
        if (bound.billing_group, bound.billing_position) == (group, position) {
            return Ok(());
        }
        return Err(ReleaseError::FailedPrecondition(format!(
            "meter {} is registered at billing group {} position {} (bound by its receipt {}); \
             a receipt claiming group {group} position {position} is refused",
            receipt.meter_id, bound.billing_group, bound.billing_position, bound.first_sequence
        )));
    }
    let holder: Option<String> = sqlx::query_scalar(
        "SELECT meter_id FROM billing_positions WHERE billing_group = $1 AND billing_position = $2",
    )
    .bind(i64::from(group))
    .bind(i64::from(position))
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(other) = holder {
        return Err(ReleaseError::AlreadyExists(format!(
            "billing group {group} position {position} is already bound to meter {other}"
        )));
    }
    sqlx::query(
        "INSERT INTO billing_positions (meter_id, billing_group, billing_position, \
         first_sequence, bound_at_us) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(receipt.meter_id.clone())
    .bind(i64::from(group))
    .bind(i64::from(position))
    .bind(to_db(receipt.sequence, "sequence")?)
    .bind(Utc::now().timestamp_micros())
    .execute(conn)
    .await?;
    Ok(())
}

fn cells_to_db(cells: &[u64]) -> Option<String> {
    (!cells.is_empty()).then(|| {
        cells
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(",")
    })
}

fn cells_from_db(text: Option<String>) -> Result<Vec<u64>, ReleaseError> {
    let Some(text) = text.filter(|t| !t.is_empty()) else {
        return Ok(Vec::new());
    };
    text.split(',')
        .map(|cell| {
            cell.parse().map_err(|_| {
                ReleaseError::Database(sqlx::Error::Decode("malformed release row: cell_wh".into()))
            })
        })
        .collect()
}

/// The release of (`kind`, meter, period), read through `conn`. A granted entry in the audit
/// chain counts too when its `releases` row is missing (deleted): the chain is the record, so
/// a deleted row never allows a second release (the returned record then has no amount).
pub(super) async fn released(
    conn: &mut AnyConnection,
    kind: &RequestKind,
    meter_id: &str,
    period: &Period,
) -> Result<Option<Released>, ReleaseError> {
    if let Some(audit_sequence) =
        crate::audit::released_in_chain(conn, kind, meter_id, &period.to_string()).await?
        && released_row(conn, kind, meter_id, period).await?.is_none()
    {
        tracing::error!(%kind, meter_id, %period, audit_sequence, "release row missing for a granted entry");
        return Ok(Some(Released {
            receipt_sequence: 0,
            amount: 0,
            audit_sequence,
            cell_wh: Vec::new(),
        }));
    }
    released_row(conn, kind, meter_id, period).await
}

async fn released_row(
    conn: &mut AnyConnection,
    kind: &RequestKind,
    meter_id: &str,
    period: &Period,
) -> Result<Option<Released>, ReleaseError> {
    let row = sqlx::query(
        "SELECT receipt_sequence, amount, audit_seq, cell_wh FROM releases \
         WHERE kind = $1 AND meter_id = $2 AND period = $3",
    )
    .bind(kind.as_str().to_owned())
    .bind(meter_id.to_owned())
    .bind(period.to_string())
    .fetch_optional(conn)
    .await?;
    row.map(|row| {
        Ok(Released {
            receipt_sequence: from_db(row.try_get(0)?, "receipt sequence")?,
            amount: row.try_get(1)?,
            audit_sequence: from_db(row.try_get(2)?, "audit sequence")?,
            cell_wh: cells_from_db(row.try_get(3)?)?,
        })
    })
    .transpose()
}

/// Records a release through `conn` (inside the transaction that appends its audit entry).
pub(super) async fn insert_release(
    conn: &mut AnyConnection,
    kind: &RequestKind,
    meter_id: &str,
    period: &Period,
    released: &Released,
) -> Result<(), ReleaseError> {
    sqlx::query(
        "INSERT INTO releases (kind, meter_id, period, receipt_sequence, amount, audit_seq, \
         released_at_us, cell_wh) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(kind.as_str().to_owned())
    .bind(meter_id.to_owned())
    .bind(period.to_string())
    .bind(to_db(released.receipt_sequence, "receipt sequence")?)
    .bind(released.amount)
    .bind(to_db(released.audit_sequence, "audit sequence")?)
    .bind(Utc::now().timestamp_micros())
    .bind(cells_to_db(&released.cell_wh))
    .execute(conn)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_round_trip_through_their_text_column() {
        for cells in [vec![], vec![0], vec![50_000, 50_000, 12_345, 0]] {
            assert_eq!(cells_from_db(cells_to_db(&cells)).expect("parses"), cells);
        }
        assert!(cells_from_db(Some("1,x".into())).is_err());
        assert!(cells_from_db(Some("1,-2".into())).is_err());
    }

    #[test]
    fn periods_are_year_and_month() {
        for good in ["2007-01", "2026-12", "1999-09"] {
            assert_eq!(good.parse::<Period>().expect("valid").to_string(), good);
        }
        for bad in [
            "",
            "2007-1",
            "2007-00",
            "2007-13",
            "07-01",
            "2007/01",
            "0999-01",
            "2007-01x",
            "２００７-01",
        ] {
            assert!(bad.parse::<Period>().is_err(), "{bad:?}");
        }
    }
}
