//! What the meter's analytics uploads (`anomaly`, `forecast`) share: recording the input
//! receipt with the key authority before the ciphertexts leave.

use seer_proto::WithMessageLimits as _;
use seer_proto::v1::AnalyticsReceiptRequest;
use seer_proto::v1::analytics_receipts_client::AnalyticsReceiptsClient;

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
