//! The deep analytics inputs meters upload (`seer.v1.AnalyticsIngest`): `analytics_inputs`,
//! one row per (kind, meter, input id) with the receipt's facts and where the job stands, and
//! `analytics_input_ciphertexts`, the ciphertexts in order. Stored exactly once: an identical
//! resend is a duplicate, different inputs under a stored id a conflict (compared by a BLAKE3
//! content digest, as batches are).

use chrono::Utc;
use sqlx::Row as _;

use super::{Store, StoreError, from_db, query_error, to_db};

/// One meter's uploaded inputs of one computation.
#[derive(Clone, PartialEq, Eq)]
pub struct AnalyticsInput {
    /// Where they lie and what they are for.
    pub header: InputHeader,
    /// The serialized input ciphertexts, in order.
    pub ciphertexts: Vec<Vec<u8>>,
}

impl std::fmt::Debug for AnalyticsInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AnalyticsInput")
            .field("header", &self.header)
            .field("ciphertexts", &self.ciphertexts.len())
            .finish()
    }
}

/// The facts of an upload (the receipt's, plus the evaluation group).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InputHeader {
    /// `forecast` or `anomaly`.
    pub kind: String,
    /// The meter.
    pub meter_id: String,
    /// The receipt's input id.
    pub input_id: String,
    /// BLAKE3 (hex) of the model file.
    pub model_blake3: String,
    /// First slot of the block.
    pub slot_offset: u32,
    /// Slots in the block.
    pub slot_count: u32,
    /// The period of the block's first slot.
    pub first_period: String,
    /// The evaluation group.
    pub group: u32,
}

impl InputHeader {
    /// Slots `slot_offset .. slot_offset + slot_count`.
    #[must_use]
    pub fn block(&self) -> std::ops::Range<u64> {
        u64::from(self.slot_offset)..u64::from(self.slot_offset) + u64::from(self.slot_count)
    }
}

impl AnalyticsInput {
    /// BLAKE3 (hex) of the header and the ciphertexts: equal for a resend only.
    #[must_use]
    pub fn digest(&self) -> String {
        let h = &self.header;
        let mut hasher = blake3::Hasher::new();
        for field in [
            h.kind.as_str(),
            h.meter_id.as_str(),
            h.input_id.as_str(),
            h.model_blake3.as_str(),
            h.first_period.as_str(),
        ] {
            hasher.update(&(field.len() as u64).to_le_bytes());
            hasher.update(field.as_bytes());
        }
        for n in [h.slot_offset, h.slot_count, h.group] {
            hasher.update(&n.to_le_bytes());
        }
        for ct in &self.ciphertexts {
            hasher.update(blake3::hash(ct).as_bytes());
        }
        hasher.finalize().to_hex().to_string()
    }
}

/// What [`Store::insert_analytics_input`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputOutcome {
    /// Stored.
    Stored,
    /// The same inputs were stored before (a resend).
    Duplicate,
    /// Different inputs are stored under the same (kind, meter, input id).
    Conflict,
}

/// Where an input stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InputStatus {
    /// Not yet decided.
    Pending,
    /// Released by the key authority under the audit entry.
    Released {
        /// The audit entry.
        audit_seq: u64,
    },
    /// Refused by the key authority (or found unusable by the job), with the reason.
    Refused {
        /// Why.
        reason: String,
        /// The audit entry, when the key authority decided.
        audit_seq: Option<u64>,
    },
}

/// A stored input's facts and status (its ciphertexts are read separately).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredInput {
    /// The facts.
    pub header: InputHeader,
    /// Input ciphertexts.
    pub inputs: u32,
    /// Where it stands.
    pub status: InputStatus,
}

const INPUT_COLUMNS: &str = "kind, meter_id, input_id, model_blake3, slot_offset, slot_count, \
     first_period, input_group, inputs, status, reason, audit_seq";

fn stored_input(row: &sqlx::any::AnyRow) -> Result<StoredInput, StoreError> {
    let get = |e| query_error("reading an analytics input")(e);
    let int = |column: &'static str| -> Result<u64, StoreError> {
        from_db(
            "analytics_inputs",
            column,
            row.try_get::<i64, _>(column).map_err(get)?,
        )
    };
    let small = |column: &'static str| -> Result<u32, StoreError> {
        u32::try_from(int(column)?).map_err(|_| StoreError::Corrupt {
            table: "analytics_inputs",
            reason: format!("{column} out of range"),
        })
    };
    let status: String = row.try_get("status").map_err(get)?;
    let audit_seq: Option<i64> = row.try_get("audit_seq").map_err(get)?;
    let audit_seq = audit_seq
        .map(|s| from_db("analytics_inputs", "audit_seq", s))
        .transpose()?;
    let status = match (status.as_str(), audit_seq) {
        ("pending", _) => InputStatus::Pending,
        ("released", Some(audit_seq)) => InputStatus::Released { audit_seq },
        ("refused", audit_seq) => InputStatus::Refused {
            reason: row
                .try_get::<Option<String>, _>("reason")
                .map_err(get)?
                .unwrap_or_default(),
            audit_seq,
        },
        (other, _) => {
            return Err(StoreError::Corrupt {
                table: "analytics_inputs",
                reason: format!("status {other:?}"),
            });
        }
    };
    Ok(StoredInput {
        header: InputHeader {
            kind: row.try_get("kind").map_err(get)?,
            meter_id: row.try_get("meter_id").map_err(get)?,
            input_id: row.try_get("input_id").map_err(get)?,
            model_blake3: row.try_get("model_blake3").map_err(get)?,
            slot_offset: small("slot_offset")?,
            slot_count: small("slot_count")?,
            first_period: row.try_get("first_period").map_err(get)?,
            group: small("input_group")?,
        },
        inputs: small("inputs")?,
        status,
    })
}

impl Store {
    /// Stores `input` exactly once per (kind, meter, input id), in one transaction.
    ///
    /// # Errors
    /// When the database fails; nothing is stored then.
    #[tracing::instrument(
        name = "store.insert_analytics_input",
        skip_all,
        fields(kind = %input.header.kind, meter_id = %input.header.meter_id)
    )]
    pub async fn insert_analytics_input(
        &self,
        input: &AnalyticsInput,
    ) -> Result<InputOutcome, StoreError> {
        self.insert_analytics_input_signed(input, &[], &[]).await
    }

    /// [`Self::insert_analytics_input`], keeping the meter's `signature` and certificate (as
    /// received and verified; empty: none) with the stored input.
    ///
    /// # Errors
    /// As [`Self::insert_analytics_input`].
    pub async fn insert_analytics_input_signed(
        &self,
        input: &AnalyticsInput,
        signature: &[u8],
        meter_certificate: &[u8],
    ) -> Result<InputOutcome, StoreError> {
        let h = &input.header;
        let digest = input.digest();
        let mut tx = self.begin_write().await?;
        let stored: Option<String> = sqlx::query_scalar(
            "SELECT content_digest FROM analytics_inputs WHERE kind = $1 AND meter_id = $2 \
             AND input_id = $3",
        )
        .bind(h.kind.as_str())
        .bind(h.meter_id.as_str())
        .bind(h.input_id.as_str())
        .fetch_optional(&mut *tx)
        .await
        .map_err(query_error("reading a stored input's digest"))?;
        if let Some(stored) = stored {
            tx.rollback()
                .await
                .map_err(query_error("ending the transaction"))?;
            return Ok(if stored == digest {
                InputOutcome::Duplicate
            } else {
                InputOutcome::Conflict
            });
        }
        sqlx::query(
            "INSERT INTO analytics_inputs (kind, meter_id, input_id, model_blake3, slot_offset, \
             slot_count, first_period, input_group, inputs, content_digest, received_at_us, \
             signature, meter_certificate) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
        )
        .bind(h.kind.as_str())
        .bind(h.meter_id.as_str())
        .bind(h.input_id.as_str())
        .bind(h.model_blake3.as_str())
        .bind(i64::from(h.slot_offset))
        .bind(i64::from(h.slot_count))
        .bind(h.first_period.as_str())
        .bind(i64::from(h.group))
        .bind(to_db(input.ciphertexts.len() as u64))
        .bind(digest)
        .bind(Utc::now().timestamp_micros())
        .bind((!signature.is_empty()).then_some(signature))
        .bind((!meter_certificate.is_empty()).then_some(meter_certificate))
        .execute(&mut *tx)
        .await
        .map_err(query_error("storing an analytics input"))?;
        for (position, ct) in input.ciphertexts.iter().enumerate() {
            sqlx::query(
                "INSERT INTO analytics_input_ciphertexts (kind, meter_id, input_id, position, \
                 ciphertext) VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(h.kind.as_str())
            .bind(h.meter_id.as_str())
            .bind(h.input_id.as_str())
            .bind(to_db(position as u64))
            .bind(ct.as_slice())
            .execute(&mut *tx)
            .await
            .map_err(query_error("storing an input ciphertext"))?;
        }
        tx.commit()
            .await
            .map_err(query_error("committing an analytics input"))?;
        Ok(InputOutcome::Stored)
    }

    /// The inputs of `kind` for the model `model_blake3` with `status` (`pending`,
    /// `released`, `refused`, or `None` for all), in (first period, group, offset, meter)
    /// order.
    ///
    /// # Errors
    /// When the database fails or a row is corrupt.
    pub async fn analytics_inputs(
        &self,
        kind: &str,
        model_blake3: &str,
        status: Option<&str>,
    ) -> Result<Vec<StoredInput>, StoreError> {
        let sql = format!(
            "SELECT {INPUT_COLUMNS} FROM analytics_inputs WHERE kind = $1 AND model_blake3 = $2 \
             AND ($3 = '' OR status = $3) \
             ORDER BY first_period, input_group, slot_offset, meter_id, input_id"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(kind)
            .bind(model_blake3)
            .bind(status.unwrap_or(""))
            .fetch_all(&self.pool)
            .await
            .map_err(query_error("listing analytics inputs"))?;
        rows.iter().map(stored_input).collect()
    }

    /// The ciphertexts of one stored input, in order.
    ///
    /// # Errors
    /// When the database fails or the input has none.
    pub async fn analytics_input_ciphertexts(
        &self,
        header: &InputHeader,
    ) -> Result<Vec<Vec<u8>>, StoreError> {
        let cts: Vec<Vec<u8>> = sqlx::query_scalar(
            "SELECT ciphertext FROM analytics_input_ciphertexts WHERE kind = $1 AND \
             meter_id = $2 AND input_id = $3 ORDER BY position",
        )
        .bind(header.kind.as_str())
        .bind(header.meter_id.as_str())
        .bind(header.input_id.as_str())
        .fetch_all(&self.pool)
        .await
        .map_err(query_error("reading input ciphertexts"))?;
        if cts.is_empty() {
            return Err(StoreError::Corrupt {
                table: "analytics_input_ciphertexts",
                reason: format!(
                    "no ciphertext for {} {} {}",
                    header.kind, header.meter_id, header.input_id
                ),
            });
        }
        Ok(cts)
    }

    /// Records the decision on a pending input (a decided input keeps its first decision).
    ///
    /// # Errors
    /// When the database fails.
    pub async fn decide_analytics_input(
        &self,
        header: &InputHeader,
        status: &InputStatus,
    ) -> Result<(), StoreError> {
        let mut conn = self
            .pool
            .acquire()
            .await
            .map_err(query_error("acquiring a connection"))?;
        decide_input(&mut conn, header, status).await
    }
}

/// Records the decision on a pending input on `conn` (inside the caller's transaction, e.g.
/// with the results it released).
///
/// # Errors
/// When the database fails.
pub async fn decide_input(
    conn: &mut sqlx::AnyConnection,
    header: &InputHeader,
    status: &InputStatus,
) -> Result<(), StoreError> {
    let (name, reason, audit_seq) = match status {
        InputStatus::Pending => return Ok(()),
        InputStatus::Released { audit_seq } => ("released", None, Some(*audit_seq)),
        InputStatus::Refused { reason, audit_seq } => ("refused", Some(reason.clone()), *audit_seq),
    };
    sqlx::query(
        "UPDATE analytics_inputs SET status = $4, reason = $5, audit_seq = $6, \
         decided_at_us = $7 WHERE kind = $1 AND meter_id = $2 AND input_id = $3 \
         AND status = 'pending'",
    )
    .bind(header.kind.as_str())
    .bind(header.meter_id.as_str())
    .bind(header.input_id.as_str())
    .bind(name)
    .bind(reason)
    .bind(audit_seq.map(to_db))
    .bind(Utc::now().timestamp_micros())
    .execute(conn)
    .await
    .map_err(query_error("recording an input's decision"))?;
    Ok(())
}
