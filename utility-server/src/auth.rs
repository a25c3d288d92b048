//! Who may act for which meter.
//!
//! Every call carries `authorization: Bearer <jwt>`. An interceptor verifies the token and
//! puts the caller's typed identity into the request's extensions; handlers read it with
//! [`principal`] and ask a [`MeterAuthorization`] whether it may act for the meter the call
//! names. The verifying interceptor belongs to the shared runtime and is wired by the lead:
//! `key-authority`'s `Caller`/`Identity` is moving into `seer-service`. Until then the utility
//! reads its own minimal [`Principal`], and [`Authenticator`] is the seam where the verifier
//! plugs in ([`crate::Application::with_authenticator`]). Without one, no call carries a
//! principal and every ingest call is refused as unauthenticated — the server fails closed.

use std::sync::Arc;

use crate::batch::MeterId;

/// The authenticated caller, as far as ingest needs to know it (mirrors the token roles).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Principal {
    /// A household, bound to one meter.
    Household {
        /// The meter the token is bound to.
        meter_id: MeterId,
    },
    /// The utility's own tools and jobs.
    Utility,
    /// An auditor.
    Auditor,
    /// An administrator.
    Admin,
}

/// What a call wants to do for a meter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MeterAction {
    /// Upload the meter's batches (`Ingest.Upload`) or analytics inputs
    /// (`AnalyticsIngest.UploadInput`).
    Upload,
    /// Read where ingest stands for the meter (`Ingest.GetCursor`).
    ReadCursor,
    /// Read the meter's released bills (`Bills.ListBills`, `Bills.GetUsageSummary`).
    ReadBills,
}

impl std::fmt::Display for MeterAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            MeterAction::Upload => "upload data",
            MeterAction::ReadCursor => "read the ingest cursor",
            MeterAction::ReadBills => "read the bills",
        })
    }
}

/// Why a call may not act for a meter.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthzError {
    /// The call carries no (valid) credentials.
    #[error("the call is not authenticated")]
    Unauthenticated,
    /// The caller is known but not entitled.
    #[error("{who} may not {action} for meter {meter_id}")]
    PermissionDenied {
        /// The caller, in words (`household of meter M`, `auditor`, ...).
        who: String,
        /// What was attempted.
        action: MeterAction,
        /// The meter named by the call.
        meter_id: MeterId,
    },
}

/// Decides whether a caller may act for a meter.
pub trait MeterAuthorization: Send + Sync + std::fmt::Debug + 'static {
    /// `Ok` when `principal` may perform `action` for `meter_id`.
    ///
    /// # Errors
    /// [`AuthzError::Unauthenticated`] without a principal, [`AuthzError::PermissionDenied`]
    /// when the principal is not entitled.
    fn authorize(
        &self,
        principal: Option<&Principal>,
        meter_id: &MeterId,
        action: MeterAction,
    ) -> Result<(), AuthzError>;
}

/// The ingest rule: a household may upload and read the cursor of its own meter only; the
/// utility and administrators may read any meter's cursor but upload for none (batches come
/// from meters); auditors may do neither; a call without a principal is unauthenticated.
/// Nobody reads bills under this rule: that is [`BillsPolicy`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IngestPolicy;

impl MeterAuthorization for IngestPolicy {
    fn authorize(
        &self,
        principal: Option<&Principal>,
        meter_id: &MeterId,
        action: MeterAction,
    ) -> Result<(), AuthzError> {
        let principal = principal.ok_or(AuthzError::Unauthenticated)?;
        let allowed = match (principal, action) {
            (
                Principal::Household { meter_id: own },
                MeterAction::Upload | MeterAction::ReadCursor,
            ) => own == meter_id,
            (_, MeterAction::ReadBills) => false,
            (Principal::Utility | Principal::Admin, MeterAction::ReadCursor) => true,
            (Principal::Utility | Principal::Admin, MeterAction::Upload) => false,
            (Principal::Auditor, _) => false,
        };
        decide(allowed, principal, meter_id, action)
    }
}

/// The bills rule: a household may read its own meter's bills only; the utility and
/// administrators may read any meter's; auditors none (they read the key authority's audit
/// log, not bills); a call without a principal is unauthenticated.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BillsPolicy;

impl MeterAuthorization for BillsPolicy {
    fn authorize(
        &self,
        principal: Option<&Principal>,
        meter_id: &MeterId,
        action: MeterAction,
    ) -> Result<(), AuthzError> {
        let principal = principal.ok_or(AuthzError::Unauthenticated)?;
        let allowed = match (principal, action) {
            (Principal::Household { meter_id: own }, MeterAction::ReadBills) => own == meter_id,
            (Principal::Utility | Principal::Admin, MeterAction::ReadBills) => true,
            (_, MeterAction::Upload | MeterAction::ReadCursor) | (Principal::Auditor, _) => false,
        };
        decide(allowed, principal, meter_id, action)
    }
}

/// `Ok` when a policy allowed the call, otherwise the permission error naming who asked what.
fn decide(
    allowed: bool,
    principal: &Principal,
    meter_id: &MeterId,
    action: MeterAction,
) -> Result<(), AuthzError> {
    if allowed {
        Ok(())
    } else {
        Err(AuthzError::PermissionDenied {
            who: describe(principal),
            action,
            meter_id: meter_id.clone(),
        })
    }
}

fn describe(principal: &Principal) -> String {
    match principal {
        Principal::Household { meter_id } => format!("the household of meter {meter_id}"),
        Principal::Utility => "the utility".into(),
        Principal::Auditor => "an auditor".into(),
        Principal::Admin => "an administrator".into(),
    }
}

/// The principal an authenticating interceptor left in the request's extensions, if any.
#[must_use]
pub fn principal(extensions: &tonic::Extensions) -> Option<&Principal> {
    extensions.get::<Principal>()
}

/// Turns a call's metadata into its principal. The JWT verifier is plugged in here (see the
/// [module documentation](self)).
pub trait Authenticator: Send + Sync + 'static {
    /// The principal of a call: `Ok(None)` when it carries no credentials (the handler then
    /// refuses it as unauthenticated).
    ///
    /// # Errors
    /// A `tonic::Status` (normally UNAUTHENTICATED) when credentials are present but invalid.
    fn authenticate(
        &self,
        metadata: &tonic::metadata::MetadataMap,
    ) -> Result<Option<Principal>, tonic::Status>;
}

/// Authenticates nobody: every call arrives without a principal.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoAuthenticator;

impl Authenticator for NoAuthenticator {
    fn authenticate(
        &self,
        _metadata: &tonic::metadata::MetadataMap,
    ) -> Result<Option<Principal>, tonic::Status> {
        Ok(None)
    }
}

/// Authenticates with the key authority's JWTs (`authorization: Bearer <jwt>`, EdDSA with the
/// key authority's public key, audience `seer-utility-server`).
#[derive(Debug)]
pub struct JwtAuthenticator {
    verifier: seer_auth::TokenVerifier,
}

impl JwtAuthenticator {
    /// A verifier for tokens signed by the key whose public half is `pem` (what
    /// `key-authority jwt-public-key` prints).
    ///
    /// # Errors
    /// When `pem` is not an Ed25519 public key.
    pub fn from_public_key_pem(pem: &str) -> Result<Self, seer_auth::AuthError> {
        let policy = seer_auth::TokenPolicy::for_audience(seer_auth::AUDIENCE_UTILITY_SERVER);
        Ok(Self {
            verifier: seer_auth::TokenVerifier::from_public_key_pem(pem, &policy)?,
        })
    }
}

impl Authenticator for JwtAuthenticator {
    fn authenticate(
        &self,
        metadata: &tonic::metadata::MetadataMap,
    ) -> Result<Option<Principal>, tonic::Status> {
        let caller = match seer_auth::authenticate(&self.verifier, metadata) {
            Ok(caller) => caller,
            Err(seer_auth::TokenRejection::Missing) => return Ok(None),
            Err(rejection) => {
                return Err(seer_auth::AuthError::from(rejection).into());
            }
        };
        let principal = match caller.identity() {
            seer_auth::Identity::Household { meter_id } => Principal::Household {
                meter_id: MeterId::try_new(meter_id).map_err(|_| {
                    tonic::Status::unauthenticated("the token's meter id is not a valid meter id")
                })?,
            },
            seer_auth::Identity::Utility => Principal::Utility,
            seer_auth::Identity::Auditor => Principal::Auditor,
            seer_auth::Identity::Admin => Principal::Admin,
        };
        tracing::debug!(subject = caller.subject(), "authenticated");
        Ok(Some(principal))
    }
}

/// A tonic interceptor that runs an [`Authenticator`] and stores the principal it finds in
/// the request's extensions.
#[derive(Clone)]
pub struct AuthInterceptor {
    authenticator: Arc<dyn Authenticator>,
}

impl std::fmt::Debug for AuthInterceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthInterceptor").finish_non_exhaustive()
    }
}

impl AuthInterceptor {
    /// An interceptor over `authenticator`.
    #[must_use]
    pub fn new(authenticator: Arc<dyn Authenticator>) -> Self {
        Self { authenticator }
    }
}

impl tonic::service::Interceptor for AuthInterceptor {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(principal) = self.authenticator.authenticate(request.metadata())? {
            check_certificate(&request, &principal)?;
            request.extensions_mut().insert(principal);
        }
        Ok(request)
    }
}

/// On a mutual-TLS connection, checks that the client certificate names the party the token
/// speaks for (a household token only with its own meter's certificate; see
/// [`seer_auth::peer`]).
///
/// # Errors
/// `UNAUTHENTICATED` when the certificate names another party.
fn check_certificate<T>(
    request: &tonic::Request<T>,
    principal: &Principal,
) -> Result<(), tonic::Status> {
    let identity = match principal {
        Principal::Household { meter_id } => seer_auth::Identity::Household {
            meter_id: meter_id.as_str().to_owned(),
        },
        Principal::Utility => seer_auth::Identity::Utility,
        Principal::Auditor => seer_auth::Identity::Auditor,
        Principal::Admin => seer_auth::Identity::Admin,
    };
    seer_auth::peer::check_peer_certificate(request, &identity)
        .map_err(|rejection| seer_auth::AuthError::from(rejection).into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meter(id: &str) -> MeterId {
        MeterId::try_new(id).expect("valid meter id")
    }

    #[test]
    fn the_ingest_rule() {
        let m1 = meter("m1");
        let own = Principal::Household {
            meter_id: meter("m1"),
        };
        let other = Principal::Household {
            meter_id: meter("m2"),
        };
        let policy = IngestPolicy;
        let decide =
            |principal: Option<&Principal>, action| policy.authorize(principal, &m1, action);
        use MeterAction::{ReadCursor, Upload};
        for action in [Upload, ReadCursor] {
            assert_eq!(decide(None, action), Err(AuthzError::Unauthenticated));
            assert_eq!(decide(Some(&own), action), Ok(()));
            assert!(matches!(
                decide(Some(&other), action),
                Err(AuthzError::PermissionDenied { .. })
            ));
            assert!(decide(Some(&Principal::Auditor), action).is_err());
        }
        for staff in [Principal::Utility, Principal::Admin] {
            assert_eq!(decide(Some(&staff), ReadCursor), Ok(()));
            assert!(decide(Some(&staff), Upload).is_err());
        }
        let message = decide(Some(&other), Upload)
            .expect_err("another household")
            .to_string();
        assert_eq!(
            message,
            "the household of meter m2 may not upload data for meter m1"
        );
        for principal in [&own, &Principal::Utility, &Principal::Admin] {
            assert!(decide(Some(principal), MeterAction::ReadBills).is_err());
        }
    }

    #[test]
    fn the_bills_rule() {
        let m1 = meter("m1");
        let own = Principal::Household {
            meter_id: meter("m1"),
        };
        let other = Principal::Household {
            meter_id: meter("m2"),
        };
        let decide = |principal: Option<&Principal>| {
            BillsPolicy.authorize(principal, &m1, MeterAction::ReadBills)
        };
        assert_eq!(decide(None), Err(AuthzError::Unauthenticated));
        assert_eq!(decide(Some(&own)), Ok(()));
        assert_eq!(decide(Some(&Principal::Utility)), Ok(()));
        assert_eq!(decide(Some(&Principal::Admin)), Ok(()));
        assert_eq!(
            decide(Some(&other))
                .expect_err("another household")
                .to_string(),
            "the household of meter m2 may not read the bills for meter m1"
        );
        assert!(matches!(
            decide(Some(&Principal::Auditor)),
            Err(AuthzError::PermissionDenied { .. })
        ));
        // The bills policy grants nothing but reading bills.
        for action in [MeterAction::Upload, MeterAction::ReadCursor] {
            assert!(BillsPolicy.authorize(Some(&own), &m1, action).is_err());
        }
    }
}
