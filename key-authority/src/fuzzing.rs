//! Entry points for the fuzzing harness (`fuzz/`, feature `fuzzing`; never enabled by the
//! program): the validation each handler runs on a decoded request before it reaches the
//! database, the release policy or the decryptor, callable without a database or a network.
//! Each function is the handler's own code path, not a copy of it.

use seer_proto::v1;
use tonic::{Status, Streaming};

use crate::analytics::{AnalyticsReceipt, AnalyticsRequest};
use crate::audit::{Anchor, ListQuery};
use crate::release::{BillRequest, Receipt};

/// `Receipts.Record`: the receipt as the handler checks it (`capacity`: homes per group).
///
/// # Errors
/// The `INVALID_ARGUMENT` status the handler would answer.
pub fn receipt(request: v1::ReceiptRequest, capacity: usize) -> Result<Receipt, Status> {
    crate::release::service::receipt_from_wire(request, capacity)
}

/// `Release.ReleaseBills`: the request as the release policy receives it.
#[must_use]
pub fn bill_request(request: v1::ReleaseBillsRequest) -> BillRequest {
    crate::release::service::bill_request_from_wire(request)
}

/// `AnalyticsReceipts.Record`: the receipt as the handler checks it (`slots` of the deep set
/// for `anomaly` and `forecast`; `daily` at its own 2048 slots).
///
/// # Errors
/// The `INVALID_ARGUMENT` status the handler would answer.
pub fn analytics_receipt(
    request: v1::AnalyticsReceiptRequest,
    slots: usize,
) -> Result<AnalyticsReceipt, Status> {
    let kinds = [
        ("anomaly".to_owned(), slots),
        ("forecast".to_owned(), slots),
        ("daily".to_owned(), seer_daily::layout::SLOTS),
    ]
    .into_iter()
    .collect();
    crate::analytics::service::receipt_from_wire(request, &kinds)
}

/// `Analytics.Release`: the rest of the stream after its header, reassembled as the handler
/// does (`limit`: bytes per ciphertext).
///
/// # Errors
/// The refusal reason the handler would log and answer.
pub async fn analytics_release(
    header: v1::AnalyticsReleaseHeader,
    stream: &mut Streaming<v1::AnalyticsReleaseChunk>,
    limit: usize,
) -> Result<AnalyticsRequest, String> {
    crate::analytics::service::read_request(header, stream, limit).await
}

/// `Analytics.ReleaseGroupForecast`: the request's fields as the handler checks them before
/// the database (the model's registration aside).
///
/// # Errors
/// The `INVALID_ARGUMENT` reason the handler would log and answer.
pub fn group_forecast_request(
    request: &v1::GroupForecastRequest,
) -> Result<crate::analytics::GroupForecastQuery, String> {
    crate::analytics::check_group_forecast_request(
        request.group,
        &request.day,
        &request.model_blake3,
    )
}

/// `Audit.ListEntries`: the query as the handler builds it.
///
/// # Errors
/// The `INVALID_ARGUMENT` status the handler would answer.
pub fn audit_list_query(request: v1::ListAuditEntriesRequest) -> Result<ListQuery, Status> {
    crate::audit::service::list_query_from_wire(request)
}

/// `Audit.Verify`: the auditor's anchor as the handler reads it.
///
/// # Errors
/// The `INVALID_ARGUMENT` status the handler would answer.
pub fn audit_anchor(anchor: &v1::AuditAnchor) -> Result<Anchor, Status> {
    crate::audit::service::anchor_from_wire(anchor)
}
