//! Reading `authorization: Bearer <jwt>` from gRPC metadata, and the tonic interceptor that
//! puts the verified [`Caller`] into the request's extensions.

use std::sync::Arc;

use tonic::metadata::MetadataMap;
use tonic::service::Interceptor;
use tonic::{Request, Status};

use super::{AuthError, Caller, Role, TokenRejection, TokenVerifier};

/// What [`AuthInterceptor`] does with a request whose token is missing or invalid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFailure {
    /// Answer `UNAUTHENTICATED` at once; the handler never runs.
    Reject,
    /// Let the request through with an [`Unauthenticated`] extension instead of a [`Caller`],
    /// so that the handler can record the refusal (the key authority logs every refused
    /// release request) before refusing with [`caller`] or [`authorize`].
    Record,
}

/// Put into a request's extensions by an [`OnFailure::Record`] interceptor when the token was
/// not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unauthenticated(pub TokenRejection);

/// Verifies the bearer token of every request, checks that the connection's client
/// certificate (on a TLS server) names the party the token speaks for
/// ([`crate::peer::check_peer_certificate`]), and inserts the [`Caller`] into its extensions.
///
/// ```ignore
/// let auth = AuthInterceptor::new(Arc::new(verifier), OnFailure::Reject);
/// router.add_service(AuditServer::with_interceptor(audit_service, auth))
/// ```
#[derive(Debug, Clone)]
pub struct AuthInterceptor {
    verifier: Arc<TokenVerifier>,
    on_failure: OnFailure,
}

impl AuthInterceptor {
    /// An interceptor verifying with `verifier`.
    #[must_use]
    pub fn new(verifier: Arc<TokenVerifier>, on_failure: OnFailure) -> Self {
        Self {
            verifier,
            on_failure,
        }
    }
}

impl Interceptor for AuthInterceptor {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let authenticated = authenticate(&self.verifier, request.metadata()).and_then(|caller| {
            crate::peer::check_peer_certificate(&request, caller.identity())?;
            Ok(caller)
        });
        match authenticated {
            Ok(caller) => {
                tracing::debug!(subject = caller.subject(), role = %caller.role(), "authenticated");
                request.extensions_mut().insert(caller);
                Ok(request)
            }
            Err(rejection) => match self.on_failure {
                OnFailure::Reject => Err(AuthError::from(rejection).into()),
                OnFailure::Record => {
                    request.extensions_mut().insert(Unauthenticated(rejection));
                    Ok(request)
                }
            },
        }
    }
}

/// Reads `authorization: Bearer <jwt>` from `metadata` and verifies the token.
///
/// # Errors
/// [`TokenRejection::Missing`] without the header, [`TokenRejection::MalformedHeader`] when it
/// is not `Bearer <token>`, or whatever [`TokenVerifier::verify`] rejects.
pub fn authenticate(
    verifier: &TokenVerifier,
    metadata: &MetadataMap,
) -> Result<Caller, TokenRejection> {
    let mut values = metadata.get_all("authorization").iter();
    let value = values.next().ok_or(TokenRejection::Missing)?;
    if values.next().is_some() {
        return Err(TokenRejection::MalformedHeader);
    }
    let value = value
        .to_str()
        .map_err(|_| TokenRejection::MalformedHeader)?;
    let (scheme, token) = value
        .split_once(' ')
        .ok_or(TokenRejection::MalformedHeader)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() || token.contains(' ') {
        return Err(TokenRejection::MalformedHeader);
    }
    verifier.verify(token)
}

/// The authenticated caller of `request`, as put there by [`AuthInterceptor`].
///
/// # Errors
/// [`AuthError::Unauthenticated`] with the recorded rejection, or with
/// [`TokenRejection::Missing`] when no interceptor authenticated the request.
pub fn caller<T>(request: &Request<T>) -> Result<Caller, AuthError> {
    if let Some(caller) = request.extensions().get::<Caller>() {
        return Ok(caller.clone());
    }
    match request.extensions().get::<Unauthenticated>() {
        Some(Unauthenticated(rejection)) => Err(rejection.clone().into()),
        None => Err(TokenRejection::Missing.into()),
    }
}

/// The authenticated caller of `request` if its role is one of `allowed`.
///
/// # Errors
/// [`AuthError::Unauthenticated`] as [`caller`]; [`AuthError::PermissionDenied`] for another
/// role.
pub fn authorize<T>(request: &Request<T>, allowed: &[Role]) -> Result<Caller, AuthError> {
    let caller = caller(request)?;
    caller.require_role(allowed)?;
    Ok(caller)
}
