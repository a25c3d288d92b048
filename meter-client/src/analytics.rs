//! What the meter's analytics uploads (`anomaly`, `forecast`) share: signing the input
//! receipt with the device key ([`sign_receipt`]), recording it with the key authority before
//! the ciphertexts leave, and uploading them to the utility server under a header carrying
//! the same signature and the meter's certificate ([`signed_header`]).
//!
//! The signature covers the [`AnalyticsReceiptStatement`]: kind, meter, input id, model,
//! slot block, first period, group, every input's BLAKE3, and the lane with its ε and
//! readings per day. The key authority records the receipt only when the enrolled key signed
//! it, and the utility stores the inputs only when the header's signature verifies over the
//! inputs it received: an input relabelled to another lane or ε fails at both.

use seer_proto::WithMessageLimits as _;
use seer_proto::v1::analytics_ingest_client::AnalyticsIngestClient;
use seer_proto::v1::analytics_input_chunk::Part;
use seer_proto::v1::analytics_receipts_client::AnalyticsReceiptsClient;
use seer_proto::v1::{
    AnalyticsInputAck, AnalyticsInputChunk, AnalyticsInputData, AnalyticsInputHeader,
    AnalyticsReceiptRequest,
};

use seer_auth::device::AnalyticsReceiptStatement;

use crate::error::Error;
use crate::grpc::{Auth, BearerToken, connect};
use crate::identity::DeviceIdentity;

/// The canonical statement of `receipt` (its digests must be 32 bytes each).
///
/// # Errors
/// [`Error::InvalidSetting`] when a digest is not 32 bytes.
pub fn receipt_statement(
    receipt: &AnalyticsReceiptRequest,
) -> Result<AnalyticsReceiptStatement, Error> {
    let input_blake3 = receipt
        .input_blake3
        .iter()
        .map(|d| <[u8; 32]>::try_from(d.as_slice()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| Error::InvalidSetting {
            setting: "analytics receipt",
            reason: "an input digest is not 32 bytes".into(),
        })?;
    Ok(AnalyticsReceiptStatement {
        kind: receipt.kind.clone(),
        meter_id: receipt.meter_id.clone(),
        input_id: receipt.input_id.clone(),
        model_blake3: receipt.model_blake3.clone(),
        slot_offset: receipt.slot_offset,
        slot_count: receipt.slot_count,
        first_period: receipt.first_period.clone(),
        group: receipt.group,
        input_blake3,
        lane: receipt.lane.clone(),
        epsilon: receipt.epsilon,
        readings_per_day: receipt.readings_per_day,
    })
}

/// Names the model (`model_blake3`, hex; empty: none) and evaluation `group` in `receipt`
/// and signs it with the meter's device key (Ed25519 is deterministic: signing a stored
/// receipt again gives the same bytes).
///
/// # Errors
/// [`Error::InvalidSetting`] when the receipt is for another meter or a digest is malformed.
pub fn sign_receipt(
    identity: &DeviceIdentity,
    receipt: &mut AnalyticsReceiptRequest,
    model_blake3: &str,
    group: u32,
) -> Result<(), Error> {
    if receipt.meter_id != identity.meter_id() {
        return Err(Error::InvalidSetting {
            setting: "analytics receipt",
            reason: format!(
                "the receipt is for meter {}, the device key for {}",
                receipt.meter_id,
                identity.meter_id()
            ),
        });
    }
    model_blake3.clone_into(&mut receipt.model_blake3);
    receipt.group = group;
    receipt.signature = identity.sign(&receipt_statement(receipt)?);
    Ok(())
}

/// The upload header of a signed `receipt`'s inputs: the receipt's facts, its signature and
/// the meter's certificate.
#[must_use]
pub fn signed_header(
    identity: &DeviceIdentity,
    receipt: &AnalyticsReceiptRequest,
) -> AnalyticsInputHeader {
    AnalyticsInputHeader {
        kind: receipt.kind.clone(),
        meter_id: receipt.meter_id.clone(),
        input_id: receipt.input_id.clone(),
        model_blake3: receipt.model_blake3.clone(),
        slot_offset: receipt.slot_offset,
        slot_count: receipt.slot_count,
        first_period: receipt.first_period.clone(),
        group: receipt.group,
        inputs: u32::try_from(receipt.input_blake3.len()).unwrap_or(u32::MAX),
        lane: receipt.lane.clone(),
        epsilon: receipt.epsilon,
        readings_per_day: receipt.readings_per_day,
        signature: receipt.signature.clone(),
        meter_certificate: identity.certificate().to_bytes(),
    }
}

/// Records `receipt` (signed with [`sign_receipt`]: the key authority refuses unsigned
/// receipts) with the key authority at `url` under the meter's household token for the key
/// authority. Returns whether it had been recorded before.
///
/// # Errors
/// Connection and call failures.
pub async fn record_receipt(
    url: &str,
    token: BearerToken,
    receipt: AnalyticsReceiptRequest,
) -> Result<bool, Error> {
    let channel = connect(url).await?;
    let mut client =
        AnalyticsReceiptsClient::with_interceptor(channel, Auth(Some(token))).with_seer_limits();
    let ack = client
        .record(receipt)
        .await
        .map_err(|s| Error::rpc("AnalyticsReceipts.Record", &s))?
        .into_inner();
    Ok(ack.duplicate)
}

/// Size of one uploaded chunk of an input ciphertext.
pub const INPUT_CHUNK_BYTES: usize = 1 << 20;

/// Uploads one meter's input ciphertexts of one computation to the utility server at `url`
/// (`AnalyticsIngest.UploadInput`: the header, then each ciphertext in
/// [`INPUT_CHUNK_BYTES`] chunks). Record the receipt with the key authority first.
///
/// # Errors
/// Connection and call failures (a refused upload names the problem).
pub async fn upload_input(
    url: &str,
    token: BearerToken,
    header: AnalyticsInputHeader,
    inputs: &[Vec<u8>],
) -> Result<AnalyticsInputAck, Error> {
    let channel = connect(url).await?;
    let mut client =
        AnalyticsIngestClient::with_interceptor(channel, Auth(Some(token))).with_seer_limits();
    let mut messages = vec![AnalyticsInputChunk {
        part: Some(Part::Header(header)),
    }];
    for (index, bytes) in inputs.iter().enumerate() {
        let total = bytes.len() as u64;
        for (i, chunk) in bytes.chunks(INPUT_CHUNK_BYTES).enumerate() {
            messages.push(AnalyticsInputChunk {
                part: Some(Part::Data(AnalyticsInputData {
                    index: index as u32,
                    total_bytes: total,
                    offset: (i * INPUT_CHUNK_BYTES) as u64,
                    data: chunk.to_vec(),
                })),
            });
        }
    }
    Ok(client
        .upload_input(tokio_stream::iter(messages))
        .await
        .map_err(|s| Error::rpc("AnalyticsIngest.UploadInput", &s))?
        .into_inner())
}
