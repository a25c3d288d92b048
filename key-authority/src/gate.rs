//! Who may call which of the key authority's methods, decided by the gate in front of the
//! server before a request body is read ([`seer_service::gate`]); refusals go to the audit
//! log through the [`RefusalThrottle`](crate::audit::RefusalThrottle).
//!
//! The handlers still check what only the request body says (a household's meter, a
//! release's inputs). A method added to the server but not to this table needs a valid
//! token of any role.

use seer_proto::v1::analytics_receipts_server::AnalyticsReceiptsServer;
use seer_proto::v1::analytics_server::AnalyticsServer;
use seer_proto::v1::audit_server::AuditServer;
use seer_proto::v1::enrolment_server::EnrolmentServer;
use seer_proto::v1::group_totals_server::GroupTotalsServer;
use seer_proto::v1::keys_server::KeysServer;
use seer_proto::v1::receipts_server::ReceiptsServer;
use seer_proto::v1::release_server::ReleaseServer;
use seer_service::gate::{Access, AccessTable};
use tonic::server::NamedService;

use crate::analytics::{ANALYTICS_CALLERS, AnalyticsReceiptsService, AnalyticsService};
use crate::audit::{AUDIT_READERS, AuditService};
use crate::enrolment::EnrolmentService;
use crate::group_totals::{GROUP_TOTALS_CALLERS, GroupTotalsService};
use crate::keys_api::KeysApi;
use crate::release::{RECEIPT_WRITERS, RELEASE_CALLERS, ReceiptsService, ReleaseService};

fn service<S: NamedService>() -> String {
    format!("/{}/", S::NAME)
}

/// The key authority's access table: public keys and enrolment (a one-time code, a device
/// signature) without a token; receipts for households; releases for the utility; the audit
/// log for auditors and administrators.
#[must_use]
pub fn access_table() -> AccessTable {
    AccessTable::default()
        .with(&service::<KeysServer<KeysApi>>(), Access::Public)
        .with(
            &service::<EnrolmentServer<EnrolmentService>>(),
            Access::Public,
        )
        .with(
            &service::<AuditServer<AuditService>>(),
            Access::Roles(AUDIT_READERS),
        )
        .with(
            &service::<ReceiptsServer<ReceiptsService>>(),
            Access::Roles(RECEIPT_WRITERS),
        )
        .with(
            &service::<ReleaseServer<ReleaseService>>(),
            Access::Roles(RELEASE_CALLERS),
        )
        .with(
            &service::<GroupTotalsServer<GroupTotalsService>>(),
            Access::Roles(GROUP_TOTALS_CALLERS),
        )
        .with(
            &service::<AnalyticsReceiptsServer<AnalyticsReceiptsService>>(),
            Access::Roles(RECEIPT_WRITERS),
        )
        .with(
            &service::<AnalyticsServer<AnalyticsService>>(),
            Access::Roles(ANALYTICS_CALLERS),
        )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Role;

    #[test]
    fn each_method_has_the_roles_its_handler_admits() {
        let table = access_table();
        assert_eq!(
            table.access("/seer.v1.Release/ReleaseBills"),
            Access::Roles(&[Role::Utility])
        );
        assert_eq!(
            table.access("/seer.v1.GroupTotals/Release"),
            Access::Roles(&[Role::Utility])
        );
        assert_eq!(
            table.access("/seer.v1.Analytics/Release"),
            Access::Roles(&[Role::Utility])
        );
        assert_eq!(
            table.access("/seer.v1.Receipts/Record"),
            Access::Roles(&[Role::Household])
        );
        assert_eq!(
            table.access("/seer.v1.Audit/Verify"),
            Access::Roles(&[Role::Auditor, Role::Admin])
        );
        for public in [
            "/seer.v1.Keys/GetKey",
            "/seer.v1.Enrolment/Enrol",
            "/seer.v1.Enrolment/RenewToken",
            "/seer.v1.Node/GetInfo",
            "/grpc.health.v1.Health/Check",
        ] {
            assert_eq!(table.access(public), Access::Public, "{public}");
        }
    }
}
