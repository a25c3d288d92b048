//! What the meter signs about its batches, and when.
//!
//! A batch is signed **when it is built**, with the device key enrolled at the key authority
//! ([`crate::identity`]): the [`BatchStatement`] (every field of the `UploadBatch` the utility
//! stores, the lanes by their BLAKE3) and the [`BillingReceiptStatement`] (what the key
//! authority releases a bill against: meter, sequence, period, billing parameter set, the
//! billing lane's BLAKE3, group and position, and whether the batch closes its period). Both
//! signatures are written to the outbox in the transaction that queues the batch
//! ([`StateStore::commit_batch_signed`](crate::queue::StateStore::commit_batch_signed)), and
//! every resend carries the stored bytes.
//!
//! Before a batch leaves, its stored signatures are checked against the statements rebuilt
//! from the stored fields with the meter's own public key ([`signatures_for`]): a damaged row
//! is refused, not sent. A row queued before meters signed (or while the meter was not yet
//! enrolled) has none: it is signed then, from its stored fields — Ed25519 is deterministic,
//! so these are exactly the bytes signing at build time would have stored.

use seer_auth::device::{BatchStatement, BillingReceiptStatement};
use seer_core::circuits::billing;

use crate::batch::{Receipt, SealedBatch};
use crate::error::Error;
use crate::identity::DeviceIdentity;
use crate::upload::wire_time;

/// The meter's two signatures over one batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchSignatures {
    /// Over the [`BatchStatement`], sent to the utility with the batch.
    pub batch: Vec<u8>,
    /// Over the [`BillingReceiptStatement`], sent to the key authority with the receipt.
    pub receipt: Vec<u8>,
}

/// The batch statement of `batch` as `meter_id` sends it (times as on the wire).
#[must_use]
pub fn batch_statement(meter_id: &str, batch: &SealedBatch) -> BatchStatement {
    BatchStatement {
        meter_id: meter_id.to_owned(),
        sequence: batch.sequence,
        period: batch.period.to_string(),
        start: wire_time(batch.start, batch.utc_offset),
        end: wire_time(batch.end, batch.utc_offset),
        readings: batch.readings,
        billing_lane_blake3: batch.billing_lane_blake3(),
        analytics_lane_blake3: *blake3::hash(&batch.analytics_lane).as_bytes(),
        billing_group: batch.billing_group,
        billing_position: batch.billing_position,
        epsilon_spent: batch.epsilon_spent,
        noise: batch.noise.clone(),
    }
}

/// The billing receipt statement of `receipt` for `meter_id`, under the billing circuit's
/// parameter set.
#[must_use]
pub fn receipt_statement(meter_id: &str, receipt: &Receipt) -> BillingReceiptStatement {
    BillingReceiptStatement {
        meter_id: meter_id.to_owned(),
        sequence: receipt.sequence,
        period: receipt.period.to_string(),
        params_id: billing::PARAMETER_SET.id(),
        billing_lane_blake3: receipt.billing_lane_blake3,
        billing_group: receipt.billing_group,
        billing_position: receipt.billing_position,
        closes_period: receipt.closes_period,
    }
}

/// Signs `batch` with the meter's device key.
#[must_use]
pub fn sign_batch(identity: &DeviceIdentity, batch: &SealedBatch) -> BatchSignatures {
    let meter_id = identity.meter_id();
    BatchSignatures {
        batch: identity.sign(&batch_statement(meter_id, batch)),
        receipt: identity.sign(&receipt_statement(meter_id, &batch.receipt())),
    }
}

/// The signatures to send with `batch`: the stored ones, checked against the statements
/// rebuilt from the stored fields, or (for a row queued unsigned) fresh ones.
///
/// # Errors
/// [`Error::CorruptState`] when a stored signature does not verify with the meter's key.
pub fn signatures_for(
    identity: &DeviceIdentity,
    batch: &SealedBatch,
    stored: Option<BatchSignatures>,
) -> Result<BatchSignatures, Error> {
    let Some(stored) = stored else {
        tracing::info!(
            sequence = batch.sequence,
            "signing a batch queued before the meter signed its batches"
        );
        return Ok(sign_batch(identity, batch));
    };
    let meter_id = identity.meter_id();
    let public = identity.public_key();
    public
        .verify(&batch_statement(meter_id, batch), &stored.batch)
        .and_then(|()| {
            public.verify(
                &receipt_statement(meter_id, &batch.receipt()),
                &stored.receipt,
            )
        })
        .map_err(|e| Error::CorruptState {
            reason: format!(
                "queued batch {}'s stored signature does not verify ({e}): the state file is \
                 damaged or belongs to another device key",
                batch.sequence
            ),
        })?;
    Ok(stored)
}
