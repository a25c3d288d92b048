//! What the meter's analytics uploads (`anomaly`, `forecast`) share: recording the input
//! receipt with the key authority before the ciphertexts leave, and uploading them to the
//! utility server.

use seer_proto::WithMessageLimits as _;
use seer_proto::v1::analytics_ingest_client::AnalyticsIngestClient;
use seer_proto::v1::analytics_input_chunk::Part;
use seer_proto::v1::analytics_receipts_client::AnalyticsReceiptsClient;
use seer_proto::v1::{
    AnalyticsInputAck, AnalyticsInputChunk, AnalyticsInputData, AnalyticsInputHeader,
    AnalyticsReceiptRequest,
};

use crate::error::Error;
use crate::grpc::{Auth, BearerToken, connect};

/// Records `receipt` with the key authority at `url` under the meter's household token.
/// Returns whether it had been recorded before.
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
