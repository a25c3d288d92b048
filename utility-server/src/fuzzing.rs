//! Entry points for the fuzzing harness (`fuzz/`, feature `fuzzing`; never enabled by the
//! program): the validation each handler runs on a decoded request before it reaches the
//! database, callable without a database or a network. Each function is the handler's own
//! code path, not a copy of it.

use seer_proto::v1::AnalyticsInputChunk;
use tonic::{Request, Status};

use crate::batch::MeterId;
use crate::bills::BillsError;

/// `AnalyticsIngest.UploadInput`: the chunks after the header, reassembled as the handler does
/// (`count` ciphertexts announced by the header).
///
/// # Errors
/// The `INVALID_ARGUMENT` status the handler would answer.
pub async fn analytics_input_chunks(
    chunks: &mut (impl tokio_stream::Stream<Item = Result<AnalyticsInputChunk, Status>> + Unpin),
    count: usize,
) -> Result<Vec<Vec<u8>>, Status> {
    crate::analytics_ingest::receive_ciphertexts(chunks, count).await
}

/// `Bills.ListBills` and `Bills.GetUsageSummary`: the meter a request names, once the caller
/// in the request's extensions (a [`crate::auth::Principal`], as the interceptor puts it) may read it.
///
/// # Errors
/// The handler's refusal.
pub fn bills_meter<T>(request: &Request<T>, meter_id: &str) -> Result<MeterId, BillsError> {
    crate::bills::authorize(request, meter_id)
}
