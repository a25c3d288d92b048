//! Recording every batch's receipt with the key authority over `seer.v1.Receipts`.
//!
//! The key authority decrypts a bill only for the billing lane whose digest the meter itself
//! recorded, under its household token, as its batch with the highest sequence of the period
//! (see `release.proto`). So for every batch it builds, the meter records a
//! [`Receipt`](crate::batch::Receipt) — meter id, sequence, period, BLAKE3 of the billing lane's
//! bytes, packing group and position, and whether the batch closes its period — and a batch
//! leaves the outbox only when both the utility server and the key authority hold it (see
//! [`crate::queue`]).
//!
//! The recorder runs beside the uploader: it walks the queued batches whose receipts are not
//! acknowledged yet **in sequence order, one call at a time** (so the key authority sees each
//! meter's receipts in order), and new ones as the producer commits them. The receipt is read
//! back from the outbox (its digest checked against the stored lane), never rebuilt, so every
//! resend is byte-identical.
//!
//! - `ReceiptAck { duplicate }`: recorded ([`StateStore::acknowledge_receipt`]); a duplicate
//!   (the key authority had it: an ack lost, or a crash before it was processed) is fine.
//! - ALREADY_EXISTS: the key authority holds a *different* digest under this sequence. That
//!   cannot be fixed by retrying and must not be papered over: [`Error::ReceiptConflict`].
//! - Transient failures (UNAVAILABLE, a dropped connection, a deadline, …): reconnect and
//!   retry with the uploader's [`Backoff`]; only consecutive failures without progress count
//!   towards the retry limit.
//! - Any other refusal (authentication, a malformed receipt) is final.
//!
//! Every call carries `authorization: Bearer <token>` and a deadline of
//! [`RECORD_TIMEOUT`].

use std::sync::Arc;
use std::time::Duration;

use seer_proto::WithMessageLimits as _;
use seer_proto::v1::ReceiptRequest;
use seer_proto::v1::receipts_client::ReceiptsClient;
use tokio::sync::watch;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::Event;
use crate::batch::Receipt;
use crate::error::Error;
use crate::grpc::{Auth, BearerToken, connect};
use crate::identity::DeviceIdentity;
use crate::queue::StateStore;
use crate::signing::signatures_for;
use crate::tokens::TokenSource;
use crate::upload::{Backoff, ProducerStatus};

/// The deadline of one `Receipts.Record` call.
pub const RECORD_TIMEOUT: Duration = Duration::from_secs(30);

/// The recorder's settings.
#[derive(Clone, Debug)]
pub struct ReceiptConfig {
    /// The key authority, e.g. `http://127.0.0.1:50052`.
    pub url: String,
    /// The household's token, sent on every call (without `tokens`).
    pub token: Option<BearerToken>,
    /// The meter's key-authority-audience tokens, renewed with its device key.
    pub tokens: Option<Arc<TokenSource>>,
    /// The meter's identity: every receipt is sent with its signature (see
    /// [`crate::signing`]); the key authority refuses unsigned receipts.
    pub identity: Option<Arc<DeviceIdentity>>,
    /// The meter.
    pub meter_id: String,
    /// Delays between attempts.
    pub backoff: Backoff,
    /// Consecutive failed attempts (without any receipt recorded in between) before giving up.
    pub max_attempts: u32,
}

/// What the recorder did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReceiptReport {
    /// Receipts acknowledged (duplicates included).
    pub recorded: u64,
    /// Acks marked duplicate (the key authority had the receipt already).
    pub duplicates: u64,
    /// Failed attempts that were retried.
    pub reconnects: u32,
}

/// The wire form of `receipt` for `meter_id`.
pub fn to_wire(meter_id: &str, receipt: &Receipt) -> ReceiptRequest {
    ReceiptRequest {
        meter_id: meter_id.to_owned(),
        sequence: receipt.sequence,
        period: receipt.period.to_string(),
        billing_lane_blake3: receipt.billing_lane_blake3.to_vec(),
        billing_group: receipt.billing_group,
        billing_position: receipt.billing_position,
        closes_period: receipt.closes_period,
        signature: Vec::new(),
    }
}

type Client = ReceiptsClient<InterceptedService<Channel, Auth>>;

/// Records receipts until the producer has finished and every queued batch's receipt is
/// acknowledged; see the [module docs](self).
///
/// # Errors
/// [`Error::ReceiptConflict`], another final refusal, a local state error, or
/// [`Error::RetriesExhausted`].
pub async fn record_receipts(
    store: Arc<StateStore>,
    config: &ReceiptConfig,
    mut producer: watch::Receiver<ProducerStatus>,
    observer: &(dyn Fn(&Event) + Send + Sync),
) -> Result<ReceiptReport, Error> {
    let mut report = ReceiptReport::default();
    let mut failures = 0_u32;
    let mut client: Option<Client> = None;
    loop {
        // Read the producer's status before the outbox: a batch committed after this read
        // marks the status changed, so the wait below cannot miss it.
        let status = *producer.borrow_and_update();
        let pending = store.pending_receipts().await?;
        if pending.is_empty() {
            if status.finished || producer.changed().await.is_err() {
                return Ok(report);
            }
            continue;
        }
        for sequence in pending {
            let batch = store
                .batch(sequence)
                .await?
                .ok_or_else(|| Error::CorruptState {
                    reason: format!("batch {sequence} left the outbox before its receipt"),
                })?;
            let receipt = batch.receipt();
            let mut wire = to_wire(&config.meter_id, &receipt);
            if let Some(identity) = &config.identity {
                let stored = store.signatures(sequence).await?;
                wire.signature = signatures_for(identity, &batch, stored)?.receipt;
            }
            match record_one(&mut client, config, wire).await {
                Ok(duplicate) => {
                    store.acknowledge_receipt(sequence).await?;
                    failures = 0;
                    report.recorded += 1;
                    if duplicate {
                        report.duplicates += 1;
                    }
                    observer(&Event::ReceiptRecorded {
                        sequence,
                        duplicate,
                    });
                }
                Err(e) if e.is_transient() => {
                    client = None;
                    failures += 1;
                    if failures >= config.max_attempts.max(1) {
                        return Err(Error::RetriesExhausted {
                            attempts: failures,
                            last: Box::new(e),
                        });
                    }
                    let delay = config.backoff.delay(failures);
                    tracing::warn!(
                        error = %e, sequence, attempt = failures, ?delay,
                        "recording a receipt failed, retrying"
                    );
                    observer(&Event::Reconnecting {
                        attempt: failures,
                        delay,
                        error: e.to_string(),
                    });
                    report.reconnects += 1;
                    tokio::time::sleep(delay).await;
                    // Re-read the pending receipts and start again from the lowest.
                    break;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// One `Receipts.Record` call (connecting first if needed); `Ok(duplicate)`.
async fn record_one(
    client: &mut Option<Client>,
    config: &ReceiptConfig,
    receipt: ReceiptRequest,
) -> Result<bool, Error> {
    let token = match &config.tokens {
        Some(tokens) => Some(tokens.token().await?),
        None => None,
    };
    let c = match client {
        Some(c) => c,
        None => {
            let channel = connect(&config.url).await?;
            client.insert(
                // Renewed tokens go on each request; a configured one on the channel.
                ReceiptsClient::with_interceptor(
                    channel,
                    Auth(
                        config
                            .tokens
                            .is_none()
                            .then(|| config.token.clone())
                            .flatten(),
                    ),
                )
                .with_seer_limits(),
            )
        }
    };
    let sequence = receipt.sequence;
    let mut request = tonic::Request::new(receipt);
    if let Some(token) = &token {
        token.apply(&mut request);
    }
    request.set_timeout(RECORD_TIMEOUT);
    match c.record(request).await {
        Ok(ack) => Ok(ack.into_inner().duplicate),
        Err(status) if status.code() == tonic::Code::AlreadyExists => Err(Error::ReceiptConflict {
            meter: config.meter_id.clone(),
            sequence,
            message: status.message().to_owned(),
        }),
        Err(status) => Err(Error::rpc("Receipts.Record", &status)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wire_form_carries_every_field() {
        let receipt = Receipt {
            sequence: 12,
            period: "2024-01".parse().unwrap(),
            billing_lane_blake3: [7; 32],
            billing_group: 3,
            billing_position: 1023,
            closes_period: true,
        };
        assert_eq!(
            to_wire("m-1", &receipt),
            ReceiptRequest {
                meter_id: "m-1".into(),
                sequence: 12,
                period: "2024-01".into(),
                billing_lane_blake3: vec![7; 32],
                billing_group: 3,
                billing_position: 1023,
                closes_period: true,
                signature: Vec::new(),
            }
        );
    }
}
