//! `seer.v1.Bills`: the bills the key authority released, with the month's energy per tariff
//! cell, read back from the store.
//!
//! Who may read what is [`BillsPolicy`]: a household token its own meter only, utility and
//! admin tokens any meter, auditor tokens none (`PERMISSION_DENIED`); without a principal the
//! call is `UNAUTHENTICATED`. Nothing here decrypts: bills and cells are final results the key
//! authority released (rounded to the paisa and to whole Wh). Every error becomes a
//! [`Status`] in one place, [`BillsError`]'s conversion; database failures are logged and
//! answered without detail.

use seer_proto::v1::bills_server::Bills;
use seer_proto::v1::{
    GetUsageSummaryRequest, GetUsageSummaryResponse, ListBillsRequest, ListBillsResponse,
    PeriodUsage, SlabEnergy as WireSlab, StoredBill as WireBill,
};
use tonic::{Request, Response, Status};

use crate::auth::{self, AuthzError, BillsPolicy, MeterAction, MeterAuthorization as _};
use crate::batch::{BatchError, MeterId, Period};
use crate::store::{Store, StoreError, StoredBill, format_kwh};

/// Everything a bills call can fail with; converted to a [`Status`] by `From`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BillsError {
    /// Not authenticated, or not entitled to read the meter's bills.
    #[error(transparent)]
    Authorization(#[from] AuthzError),
    /// The meter id is malformed.
    #[error("{0}")]
    InvalidMeterId(BatchError),
    /// The period is not `YYYY-MM`.
    #[error("period {0:?} is not YYYY-MM")]
    InvalidPeriod(String),
    /// The database failed (logged; the client learns only that the store is unavailable).
    #[error("the store is unavailable")]
    Store(#[source] StoreError),
}

impl From<BillsError> for Status {
    fn from(error: BillsError) -> Self {
        match &error {
            BillsError::Authorization(AuthzError::Unauthenticated) => {
                Status::unauthenticated(error.to_string())
            }
            BillsError::Authorization(_) => Status::permission_denied(error.to_string()),
            BillsError::InvalidMeterId(_) | BillsError::InvalidPeriod(_) => {
                Status::invalid_argument(error.to_string())
            }
            BillsError::Store(source) => {
                tracing::error!(error = %source, "bills store failure");
                Status::unavailable(error.to_string())
            }
        }
    }
}

/// Serves `seer.v1.Bills` from the store.
#[derive(Debug, Clone)]
pub struct BillsService {
    store: Store,
}

impl BillsService {
    /// A service reading `store`.
    #[must_use]
    pub fn new(store: Store) -> Self {
        Self { store }
    }
}

/// The meter a request names, once the caller may read its bills.
pub(crate) fn authorize<T>(request: &Request<T>, meter_id: &str) -> Result<MeterId, BillsError> {
    let principal = auth::principal(request.extensions());
    // Unauthenticated calls learn nothing, not even whether the meter id is well formed.
    if principal.is_none() {
        return Err(AuthzError::Unauthenticated.into());
    }
    let meter_id = MeterId::try_new(meter_id).map_err(|e| BillsError::InvalidMeterId(e.into()))?;
    BillsPolicy.authorize(principal, &meter_id, MeterAction::ReadBills)?;
    Ok(meter_id)
}

fn bill_to_wire(bill: StoredBill) -> WireBill {
    WireBill {
        meter_id: bill.meter_id.as_str().to_owned(),
        period: bill.period.to_string(),
        amount_paise: bill.amount_paise,
        closing_sequence: bill.closing_sequence,
        audit_sequence: bill.audit_sequence,
        released_at_us: bill.released_at_us,
        slabs: bill
            .slabs
            .into_iter()
            .map(|slab| WireSlab {
                label: slab.label,
                wh: slab.wh,
            })
            .collect(),
    }
}

#[tonic::async_trait]
impl Bills for BillsService {
    #[tracing::instrument(name = "Bills.ListBills", skip_all, fields(meter, period))]
    async fn list_bills(
        &self,
        request: Request<ListBillsRequest>,
    ) -> Result<Response<ListBillsResponse>, Status> {
        let meter_id = authorize(&request, &request.get_ref().meter_id)?;
        let span = tracing::Span::current();
        span.record("meter", meter_id.as_str());
        let period = match request.into_inner().period {
            Some(text) => {
                span.record("period", text.as_str());
                Some(
                    text.parse::<Period>()
                        .map_err(|_| BillsError::InvalidPeriod(text.chars().take(32).collect()))?,
                )
            }
            None => None,
        };
        let bills = self
            .store
            .meter_bills(&meter_id, period)
            .await
            .map_err(BillsError::Store)?;
        Ok(Response::new(ListBillsResponse {
            bills: bills.into_iter().map(bill_to_wire).collect(),
        }))
    }

    #[tracing::instrument(name = "Bills.GetUsageSummary", skip_all, fields(meter))]
    async fn get_usage_summary(
        &self,
        request: Request<GetUsageSummaryRequest>,
    ) -> Result<Response<GetUsageSummaryResponse>, Status> {
        let meter_id = authorize(&request, &request.get_ref().meter_id)?;
        tracing::Span::current().record("meter", meter_id.as_str());
        let periods = self
            .store
            .billed_usage(&meter_id)
            .await
            .map_err(BillsError::Store)?;
        Ok(Response::new(GetUsageSummaryResponse {
            meter_id: meter_id.as_str().to_owned(),
            periods: periods
                .into_iter()
                .map(|usage| PeriodUsage {
                    period: usage.period.to_string(),
                    total_wh: usage.total_wh,
                    total_kwh: format_kwh(usage.total_wh),
                    amount_paise: usage.amount_paise,
                })
                .collect(),
        }))
    }
}
