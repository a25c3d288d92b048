//! Who may call which of the utility server's methods, decided by the gate in front of the
//! server before a request body is read ([`seer_service::gate`]), with the program's
//! [`Authenticator`] (the key authority's JWTs, or what a test plugs in).
//!
//! Uploads (`Ingest.Upload`, `AnalyticsIngest.UploadInput`: the large streaming bodies) are
//! admitted for households only; every other method needs a valid token, and its handler
//! decides with the meter the request names ([`crate::auth::IngestPolicy`],
//! [`crate::auth::BillsPolicy`]).

use std::sync::Arc;

use seer_auth::{Caller, Identity, Role};
use seer_service::gate::{Access, AccessTable, Authenticate, Rejected, class};
use tonic::metadata::MetadataMap;

use crate::auth::{Authenticator, Principal};

/// Households only.
const UPLOADERS: &[Role] = &[Role::Household];

/// Who may read a home's released daily results (`seer.v1.HomeResults`): the household (its
/// own meter, checked by the handler), utility and admin; never an auditor.
const HOME_READERS: &[Role] = &[Role::Household, Role::Utility, Role::Admin];

/// The utility server's access table.
#[must_use]
pub fn access_table() -> AccessTable {
    AccessTable::default()
        .with("/seer.v1.Ingest/Upload", Access::Roles(UPLOADERS))
        .with(
            "/seer.v1.AnalyticsIngest/UploadInput",
            Access::Roles(UPLOADERS),
        )
        .with(
            "/seer.v1.HomeResults/DailyForecasts",
            Access::Roles(HOME_READERS),
        )
        .with(
            "/seer.v1.HomeResults/DailyAnomalies",
            Access::Roles(HOME_READERS),
        )
}

/// The gate's view of an [`Authenticator`]: its principal as a [`Caller`] (subject
/// `household:<meter>` or the role's name).
pub struct GateAuthenticator(pub Arc<dyn Authenticator>);

impl std::fmt::Debug for GateAuthenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GateAuthenticator").finish_non_exhaustive()
    }
}

impl Authenticate for GateAuthenticator {
    fn authenticate(&self, metadata: &MetadataMap) -> Result<Caller, Rejected> {
        let identity = match self.0.authenticate(metadata) {
            Ok(Some(Principal::Household { meter_id })) => Identity::Household {
                meter_id: meter_id.to_string(),
            },
            Ok(Some(Principal::Utility)) => Identity::Utility,
            Ok(Some(Principal::Auditor)) => Identity::Auditor,
            Ok(Some(Principal::Admin)) => Identity::Admin,
            Ok(None) => {
                return Err(Rejected {
                    class: class::MISSING_TOKEN,
                    status: tonic::Status::unauthenticated("the call is not authenticated"),
                });
            }
            Err(status) => {
                return Err(Rejected {
                    class: class::INVALID_TOKEN,
                    status,
                });
            }
        };
        Ok(Caller::new(identity.default_subject(), identity))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uploads_are_for_households_and_the_rest_needs_a_token() {
        let table = access_table();
        assert_eq!(
            table.access("/seer.v1.Ingest/Upload"),
            Access::Roles(UPLOADERS)
        );
        assert_eq!(
            table.access("/seer.v1.AnalyticsIngest/UploadInput"),
            Access::Roles(UPLOADERS)
        );
        assert_eq!(
            table.access("/seer.v1.Bills/ListBills"),
            Access::Roles(seer_service::gate::ANY_ROLE)
        );
        assert_eq!(table.access("/seer.v1.Node/GetInfo"), Access::Public);
        assert_eq!(
            table.access("/seer.v1.HomeResults/DailyAnomalies"),
            Access::Roles(HOME_READERS)
        );
    }
}
