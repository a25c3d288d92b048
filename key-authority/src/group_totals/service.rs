//! `seer.v1.GroupTotals` over the [`GroupTotalsReleaser`]; the wire conversions of the service.

use seer_proto::v1;
use seer_proto::v1::group_totals_request::Item;
use seer_proto::v1::group_totals_server::GroupTotals;
use tonic::{Request, Response, Status, Streaming};

use super::policy::{GroupTotalsHeader, GroupTotalsInput, GroupTotalsReleaser, HourStatus};
use crate::auth::{Caller, Role, authorize};
use crate::release::ReleaseError;

/// The roles that may ask for group totals.
pub const GROUP_TOTALS_CALLERS: &[Role] = &[Role::Utility];

/// Serves `seer.v1.GroupTotals` (behind an [`OnFailure::Record`](crate::auth::OnFailure)
/// interceptor, so that requests without a valid token are logged before being refused).
#[derive(Debug, Clone)]
pub struct GroupTotalsService {
    releaser: GroupTotalsReleaser,
}

impl GroupTotalsService {
    /// A service applying `releaser`'s policy.
    #[must_use]
    pub fn new(releaser: GroupTotalsReleaser) -> Self {
        Self { releaser }
    }
}

impl GroupTotalsService {
    /// Logs the refusal of the whole request, then returns the gRPC error.
    async fn refuse(
        &self,
        caller: Option<&Caller>,
        group: Option<u32>,
        status: Status,
    ) -> Result<Response<v1::GroupTotalsResponse>, Status> {
        self.releaser
            .refuse_request(caller, group, status.message())
            .await
            .map_err(Status::from)?;
        Err(status)
    }
}

#[tonic::async_trait]
impl GroupTotals for GroupTotalsService {
    #[tracing::instrument(name = "GroupTotals.Release", skip_all, fields(subject, group))]
    async fn release(
        &self,
        request: Request<Streaming<v1::GroupTotalsRequest>>,
    ) -> Result<Response<v1::GroupTotalsResponse>, Status> {
        let authorized = authorize(&request, GROUP_TOTALS_CALLERS);
        let authenticated = request.extensions().get::<Caller>().cloned();
        let caller = match authorized {
            Ok(caller) => caller,
            Err(refusal) => {
                return self
                    .refuse(authenticated.as_ref(), None, refusal.into())
                    .await;
            }
        };
        tracing::Span::current().record("subject", caller.subject());
        let mut stream = request.into_inner();
        let header = match stream.message().await {
            Ok(Some(v1::GroupTotalsRequest {
                item: Some(Item::Header(header)),
            })) => header,
            Ok(_) => {
                return self
                    .refuse(
                        Some(&caller),
                        None,
                        Status::invalid_argument("the first message must be the header"),
                    )
                    .await;
            }
            Err(status) => return self.refuse(Some(&caller), None, status).await,
        };
        let group = header.group;
        tracing::Span::current().record("group", group);
        let Some(plan) = header.plan.as_ref() else {
            return self
                .refuse(
                    Some(&caller),
                    Some(group),
                    Status::invalid_argument("the header names no plan"),
                )
                .await;
        };
        let mut acc = match self.releaser.begin(GroupTotalsHeader {
            group,
            plan: seer_proto::statements::noise_plan_statement(plan),
            per_interval: header.per_interval,
        }) {
            Ok(acc) => acc,
            Err(error) => {
                return self
                    .refuse(Some(&caller), Some(group), Status::from(error))
                    .await;
            }
        };
        loop {
            match stream.message().await {
                Ok(None) => break,
                Ok(Some(v1::GroupTotalsRequest {
                    item: Some(Item::Input(input)),
                })) => {
                    let input = GroupTotalsInput {
                        batch: input.batch.unwrap_or_default(),
                        billing_lane_blake3: input.billing_lane_blake3,
                    };
                    if let Err(error) = self.releaser.add(&mut acc, input).await {
                        let status = Status::from(error);
                        return self.refuse(Some(&caller), Some(group), status).await;
                    }
                }
                Ok(Some(_)) => {
                    return self
                        .refuse(
                            Some(&caller),
                            Some(group),
                            Status::invalid_argument("a second header, or an empty message"),
                        )
                        .await;
                }
                Err(status) => return self.refuse(Some(&caller), Some(group), status).await,
            }
        }
        let decision = self
            .releaser
            .finish(&caller, acc)
            .await
            .map_err(|error: ReleaseError| Status::from(error))?;
        Ok(Response::new(v1::GroupTotalsResponse {
            group: decision.group,
            window_start: decision.window_start,
            hours: decision
                .hours
                .into_iter()
                .map(|hour| {
                    let values = hour.values.unwrap_or_else(|| super::StoredHour {
                        hour_start: hour.start.clone(),
                        total_wh: 0,
                        interval_wh: Vec::new(),
                        min_present: hour.min_present,
                        epsilon: decision.epsilon,
                        sensitivity_wh: 0,
                        audit_seq: 0,
                    });
                    v1::GroupHour {
                        start: hour.start,
                        status: match hour.status {
                            HourStatus::Released => v1::GroupHourStatus::Released,
                            HourStatus::AlreadyReleased => v1::GroupHourStatus::AlreadyReleased,
                            HourStatus::TooFewPresent => v1::GroupHourStatus::TooFewPresent,
                        }
                        .into(),
                        total_wh: values.total_wh,
                        interval_wh: values.interval_wh,
                        min_present: hour.min_present,
                        epsilon: values.epsilon,
                        noise_scale_wh: decision.noise_scale_wh,
                    }
                })
                .collect(),
            refused: decision
                .refused
                .into_iter()
                .map(|r| v1::GroupInputRefusal {
                    meter_id: r.meter_id,
                    sequence: r.sequence,
                    reason: r.reason,
                })
                .collect(),
            accepted: decision.accepted,
            audit_seq: decision.audit_seq,
        }))
    }
}
