//! Receipts are recorded only when the meter's enrolled device key signed them, and every
//! recorded receipt is an audit entry.
//!
//! A bearer token proves only that someone holds it — and every meter sends tokens to the
//! utility. So `Receipts.Record` and `AnalyticsReceipts.Record` rebuild the canonical statement
//! from the request (`seer_auth::device::BillingReceiptStatement`, with the key authority's
//! own billing parameter set id; `AnalyticsReceiptStatement`, lane, ε and readings per day
//! included) and verify the request's signature against the device key enrolled for the
//! request's meter (`meter_keys`, see [`crate::enrolment`]), read inside the audit append
//! transaction. Unsigned, badly signed, unenrolled and revoked are refused
//! (`PERMISSION_DENIED`, [`ReleaseError::Unsigned`]); a utility holding a meter's token, any
//! batch it received and any signature it saw cannot make a receipt for another sequence,
//! period, position, closing flag, lane or ε, nor one for another meter.
//!
//! One transaction, under the audit head's lock: the signature check, the store's own checks
//! (a different receipt under the same sequence or input id, a released period, a position
//! bound to another meter), the receipt row with the signature (hex) and a granted `receipt`
//! or `analytics-receipt` audit entry whose input digest is the SHA-256 of the signed
//! statement — so each receipt a release depends on is in the hash chain, and an auditor can
//! check the row's statement and signature against it. Every refusal is an entry too (written
//! in the same transaction, which has written nothing else). An identical resend is a
//! duplicate: verified, acknowledged, no new entry.

use std::sync::Arc;

use seer_auth::device::{AnalyticsReceiptStatement, BillingReceiptStatement, Statement};

use crate::analytics::{AnalyticsReceipt, Recorded};
use crate::audit::{AuditLog, Decision, InputDigest, NewEntry, RequestKind};
use crate::auth::Caller;
use crate::enrolment::{EnrolmentError, device_key};
use crate::release::{Receipt, RecordOutcome, ReleaseError};

/// Audit request kind of billing receipts.
pub const RECEIPT_KIND: &str = "receipt";
/// Audit request kind of analytics receipts.
pub const ANALYTICS_RECEIPT_KIND: &str = "analytics-receipt";

/// Records signed receipts into the audit log's database; see the [module docs](self).
#[derive(Debug, Clone)]
pub struct SignedReceipts {
    log: Arc<AuditLog>,
}

/// What one receipt is, for its audit entry.
struct Subject<'a> {
    kind: &'static str,
    meter_id: &'a str,
    period: String,
}

impl SignedReceipts {
    /// A recorder over `log`'s database.
    #[must_use]
    pub fn new(log: Arc<AuditLog>) -> Self {
        Self { log }
    }

    /// Records a billing receipt signed by its meter; `statement` is the request rebuilt
    /// canonically.
    ///
    /// # Errors
    /// [`ReleaseError::Unsigned`] (audited), the store's refusals (audited), storage and
    /// audit failures (nothing recorded).
    pub async fn record_billing(
        &self,
        caller: &Caller,
        receipt: &Receipt,
        statement: &BillingReceiptStatement,
        signature: &[u8],
    ) -> Result<RecordOutcome, ReleaseError> {
        let subject = Subject {
            kind: RECEIPT_KIND,
            meter_id: &receipt.meter_id,
            period: receipt.period.to_string(),
        };
        let mut tx = self.log.begin_append().await?;
        let entry = entry(caller, &subject, statement)?;
        let result =
            match signer_refusal(tx.connection(), &receipt.meter_id, statement, signature).await? {
                Some(reason) => Err(ReleaseError::Unsigned(reason)),
                None => crate::release::record_in(tx.connection(), receipt, Some(signature))
                    .await
                    .map(|outcome| (outcome, outcome == RecordOutcome::Recorded)),
            };
        finish(tx, entry, result).await
    }

    /// Records an analytics receipt signed by its meter; `statement` is the request rebuilt
    /// canonically.
    ///
    /// # Errors
    /// As [`Self::record_billing`].
    pub async fn record_analytics(
        &self,
        caller: &Caller,
        receipt: &AnalyticsReceipt,
        statement: &AnalyticsReceiptStatement,
        signature: &[u8],
    ) -> Result<Recorded, ReleaseError> {
        let subject = Subject {
            kind: ANALYTICS_RECEIPT_KIND,
            meter_id: &receipt.meter_id,
            period: crate::analytics::receipt_period(&receipt.kind, &receipt.input_id),
        };
        let mut tx = self.log.begin_append().await?;
        let entry = entry(caller, &subject, statement)?;
        let result =
            match signer_refusal(tx.connection(), &receipt.meter_id, statement, signature).await? {
                Some(reason) => Err(ReleaseError::Unsigned(reason)),
                None => crate::analytics::record_in(tx.connection(), receipt, statement, signature)
                    .await
                    .map(|outcome| (outcome, outcome == Recorded::New)),
            };
        finish(tx, entry, result).await
    }
}

impl SignedReceipts {
    /// Logs a receipt request refused before its statement was looked at (no valid token, a
    /// token of another role, audience or meter): `kind` is [`RECEIPT_KIND`] or
    /// [`ANALYTICS_RECEIPT_KIND`], `meter_id` the request's (untrusted: stored sanitized).
    ///
    /// # Errors
    /// The audit log cannot be written.
    pub async fn refuse(
        &self,
        kind: &'static str,
        caller: Option<&Caller>,
        meter_id: &str,
        reason: &str,
    ) -> Result<(), ReleaseError> {
        let mut entry =
            NewEntry::new(RequestKind::try_new(kind)?, Decision::refused(reason)).meter(meter_id);
        if let Some(caller) = caller {
            entry = entry.caller(caller);
        }
        self.log.append(entry).await?;
        Ok(())
    }
}

fn entry<S: Statement>(
    caller: &Caller,
    subject: &Subject<'_>,
    statement: &S,
) -> Result<NewEntry, ReleaseError> {
    Ok(
        NewEntry::new(RequestKind::try_new(subject.kind)?, Decision::Granted)
            .caller(caller)
            .meter(subject.meter_id)
            .period(subject.period.clone())
            .input(InputDigest::sha256(&statement.encode())),
    )
}

/// Appends the receipt's entry (granted when a row was written, refused with the reason when
/// refused; nothing for a duplicate) and commits.
async fn finish<T>(
    mut tx: crate::audit::AppendTx<'_>,
    entry: NewEntry,
    result: Result<(T, bool), ReleaseError>,
) -> Result<T, ReleaseError> {
    match result {
        Ok((outcome, written)) => {
            if written {
                tx.append(entry).await?;
                tx.commit().await?;
            }
            Ok(outcome)
        }
        Err(
            refusal @ (ReleaseError::Unsigned(_)
            | ReleaseError::AlreadyExists(_)
            | ReleaseError::FailedPrecondition(_)
            | ReleaseError::InvalidArgument(_)),
        ) => {
            // Every refusal is found before the transaction writes anything.
            tx.append(NewEntry {
                decision: Decision::refused(refusal.to_string()),
                ..entry
            })
            .await?;
            tx.commit().await?;
            tracing::info!(reason = %refusal, "receipt refused");
            Err(refusal)
        }
        Err(other) => Err(other),
    }
}

/// Why `signature` is not the enrolled, unrevoked device key's signature over `statement`
/// (None: it is).
async fn signer_refusal<S: Statement>(
    conn: &mut sqlx::AnyConnection,
    meter_id: &str,
    statement: &S,
    signature: &[u8],
) -> Result<Option<String>, ReleaseError> {
    if signature.is_empty() {
        return Ok(Some(format!(
            "the {} is not signed: meters sign their receipts with their enrolled device key \
             (`meter-client enrol`)",
            S::NAME
        )));
    }
    match device_key(conn, meter_id).await {
        Ok(key) => Ok(key
            .verify(statement, signature)
            .err()
            .map(|error| format!("{error} (meter {meter_id}'s enrolled key)"))),
        Err(error @ (EnrolmentError::NotEnrolled { .. } | EnrolmentError::Revoked { .. })) => {
            Ok(Some(error.to_string()))
        }
        Err(EnrolmentError::Database(error)) => Err(ReleaseError::Database(error)),
        Err(other) => Err(ReleaseError::Engine(other.to_string())),
    }
}
