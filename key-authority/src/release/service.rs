//! `seer.v1.Receipts` and `seer.v1.Release` over the [`ReceiptStore`] and the
//! [`BillReleaser`]. Wire conversions of these services live here (their domain types belong
//! to the key authority).

use seer_proto::v1;
use seer_proto::v1::receipts_server::Receipts;
use seer_proto::v1::release_server::Release;
use tonic::{Request, Response, Status};

use std::sync::Arc;

use seer_auth::device::BillingReceiptStatement;

use super::ReleaseError;
use super::policy::{BillInput, BillReleaser, BillRequest};
use super::store::{Period, Receipt, RecordOutcome};
use crate::audit::AuditLog;
use crate::auth::{Caller, Role, authorize};
use crate::signed_receipts::{RECEIPT_KIND, SignedReceipts};
use seer_core::MeterId;

/// The roles that may record receipts (for their own meter only).
pub const RECEIPT_WRITERS: &[Role] = &[Role::Household];
/// The roles that may ask for releases.
pub const RELEASE_CALLERS: &[Role] = &[Role::Utility];

/// Serves `seer.v1.Receipts` (behind an [`OnFailure::Record`](crate::auth::OnFailure)
/// interceptor: unauthenticated requests are logged before they are refused): only receipts signed by the meter's enrolled device key are recorded (see
/// [`crate::signed_receipts`]).
#[derive(Debug, Clone)]
pub struct ReceiptsService {
    recorder: SignedReceipts,
    capacity: usize,
    params_id: String,
}

impl ReceiptsService {
    /// A service recording into `log`'s database; positions must lie below `capacity` (the
    /// billing layout's homes per group); `params_id` is the billing parameter set the
    /// receipts' statements name.
    #[must_use]
    pub fn new(log: Arc<AuditLog>, capacity: usize, params_id: &str) -> Self {
        Self {
            recorder: SignedReceipts::new(log),
            capacity,
            params_id: params_id.to_owned(),
        }
    }
}

/// The canonical statement the meter signed for `receipt` under `params_id`.
#[must_use]
pub fn billing_statement(receipt: &Receipt, params_id: &str) -> BillingReceiptStatement {
    BillingReceiptStatement {
        meter_id: receipt.meter_id.clone(),
        sequence: receipt.sequence,
        period: receipt.period.to_string(),
        params_id: params_id.to_owned(),
        billing_lane_blake3: receipt.billing_digest,
        billing_group: receipt.billing_group,
        billing_position: receipt.billing_position,
        closes_period: receipt.closes_period,
    }
}

pub(crate) fn receipt_from_wire(
    request: v1::ReceiptRequest,
    capacity: usize,
) -> Result<Receipt, Status> {
    MeterId::check(&request.meter_id)
        .map_err(|reason| Status::invalid_argument(format!("meter_id: {reason}")))?;
    if request.sequence == 0 || i64::try_from(request.sequence).is_err() {
        return Err(Status::invalid_argument(
            "sequence must be at least 1 (and fit a signed 64-bit integer)",
        ));
    }
    let period = request
        .period
        .parse::<Period>()
        .map_err(|e| Status::from(ReleaseError::from(e)))?;
    let billing_digest: [u8; 32] = request
        .billing_lane_blake3
        .as_slice()
        .try_into()
        .map_err(|_| Status::invalid_argument("billing_lane_blake3 must be 32 bytes"))?;
    if request.billing_position as usize >= capacity {
        return Err(Status::invalid_argument(format!(
            "billing_position {} is outside the layout's {capacity} homes per group",
            request.billing_position
        )));
    }
    Ok(Receipt {
        meter_id: request.meter_id,
        sequence: request.sequence,
        period,
        billing_digest,
        billing_group: request.billing_group,
        billing_position: request.billing_position,
        closes_period: request.closes_period,
    })
}

#[tonic::async_trait]
impl Receipts for ReceiptsService {
    #[tracing::instrument(name = "Receipts.Record", skip_all, fields(subject, meter, sequence))]
    async fn record(
        &self,
        request: Request<v1::ReceiptRequest>,
    ) -> Result<Response<v1::ReceiptAck>, Status> {
        // Behind an `OnFailure::Record` interceptor: a request without a valid token (a
        // utility presenting a meter's utility-audience token, say) is logged, then refused.
        let authenticated = request.extensions().get::<Caller>().cloned();
        let authorized = authorize(&request, RECEIPT_WRITERS);
        let span = tracing::Span::current();
        let message = request.into_inner();
        let caller = match authorized.and_then(|caller| {
            caller.check_household_meter(&message.meter_id)?;
            Ok(caller)
        }) {
            Ok(caller) => caller,
            Err(refusal) => {
                self.recorder
                    .refuse(
                        RECEIPT_KIND,
                        authenticated.as_ref(),
                        &message.meter_id,
                        &refusal.to_string(),
                    )
                    .await?;
                return Err(refusal.into());
            }
        };
        span.record("subject", caller.subject());
        span.record("meter", message.meter_id.as_str());
        span.record("sequence", message.sequence);
        let signature = message.signature.clone();
        let receipt = receipt_from_wire(message, self.capacity)?;
        let statement = billing_statement(&receipt, &self.params_id);
        let outcome = self
            .recorder
            .record_billing(&caller, &receipt, &statement, &signature)
            .await?;
        Ok(Response::new(v1::ReceiptAck {
            duplicate: outcome == RecordOutcome::Duplicate,
        }))
    }
}

/// Serves `seer.v1.Release` (behind an [`OnFailure::Record`](crate::auth::OnFailure)
/// interceptor, so that requests without a valid token are logged before being refused).
#[derive(Debug, Clone)]
pub struct ReleaseService {
    releaser: BillReleaser,
}

impl ReleaseService {
    /// A service applying `releaser`'s policy.
    #[must_use]
    pub fn new(releaser: BillReleaser) -> Self {
        Self { releaser }
    }
}

pub(crate) fn bill_request_from_wire(request: v1::ReleaseBillsRequest) -> BillRequest {
    BillRequest {
        period: request.period,
        billing_group: request.billing_group,
        inputs: request
            .inputs
            .into_iter()
            .map(|input| BillInput {
                meter_id: input.meter_id,
                sequence: input.sequence,
                billing_lane: input.billing_lane,
            })
            .collect(),
        result: request.result,
        cells: request.cells,
    }
}

#[tonic::async_trait]
impl Release for ReleaseService {
    #[tracing::instrument(name = "Release.ReleaseBills", skip_all, fields(subject))]
    async fn release_bills(
        &self,
        request: Request<v1::ReleaseBillsRequest>,
    ) -> Result<Response<v1::ReleaseBillsResponse>, Status> {
        let authorized = authorize(&request, RELEASE_CALLERS);
        let authenticated = request.extensions().get::<Caller>().cloned();
        let message = bill_request_from_wire(request.into_inner());
        let caller = match authorized {
            Ok(caller) => caller,
            Err(refusal) => {
                // Logged before refusing; if even that fails, the answer is UNAVAILABLE.
                self.releaser
                    .refuse_request(authenticated.as_ref(), &message, &refusal.to_string())
                    .await
                    .map_err(Status::from)?;
                return Err(refusal.into());
            }
        };
        tracing::Span::current().record("subject", caller.subject());
        let decisions = self
            .releaser
            .release_bills(&caller, message)
            .await
            .map_err(|error: ReleaseError| Status::from(error))?;
        Ok(Response::new(v1::ReleaseBillsResponse {
            bills: decisions
                .outcomes
                .into_iter()
                .map(|outcome| {
                    let (granted, amount_paise, cell_wh, refusal) = match outcome.decision {
                        Ok(bill) => (true, bill.amount.get(), bill.cell_wh, String::new()),
                        Err(reason) => (false, 0, Vec::new(), reason),
                    };
                    v1::BillRelease {
                        meter_id: outcome.meter_id,
                        granted,
                        amount_paise,
                        refusal,
                        audit_sequence: outcome.audit_sequence,
                        cell_wh,
                        withheld: outcome.withheld,
                        already_released: outcome.already_released,
                    }
                })
                .collect(),
            result_verified: decisions.result_verified,
        }))
    }
}
