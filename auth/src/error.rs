//! The errors of [`crate::auth`] and their one mapping onto [`tonic::Status`].

use std::path::PathBuf;

use super::Role;

/// Why a bearer token was not accepted.
///
/// The [`std::fmt::Display`] text of each variant is what a client is told: it names the
/// problem with the token, never anything about the server's keys or internals.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenRejection {
    /// The request carried no `authorization` metadata.
    #[error("missing bearer token (send `authorization: Bearer <jwt>`)")]
    Missing,
    /// The `authorization` metadata is not `Bearer <token>` in visible ASCII.
    #[error("malformed authorization header (expected `Bearer <jwt>`)")]
    MalformedHeader,
    /// The token is longer than [`super::MAX_TOKEN_LEN`] bytes.
    #[error("token too large")]
    TooLarge,
    /// The token is not three base64url parts with JSON header and claims.
    #[error("malformed token")]
    Malformed,
    /// The header names another algorithm than EdDSA (including `none` and HS256).
    #[error("token algorithm not accepted (only EdDSA is)")]
    AlgorithmNotAccepted,
    /// The header carries `crit` extensions this server does not understand.
    #[error("token header has unsupported critical extensions")]
    UnsupportedCriticalHeader,
    /// The signature does not verify with this key authority's key.
    #[error("token signature invalid")]
    BadSignature,
    /// A required claim is absent.
    #[error("token lacks the required `{0}` claim")]
    MissingClaim(String),
    /// A claim has the wrong type or an unusable value.
    #[error("token claim `{claim}` is invalid: {reason}")]
    InvalidClaim {
        /// The claim's name.
        claim: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// `exp` is in the past (beyond the leeway).
    #[error("token expired")]
    Expired,
    /// `nbf` or `iat` is in the future (beyond the leeway).
    #[error("token not yet valid")]
    NotYetValid,
    /// `iss` is not this key authority.
    #[error("token issuer not accepted")]
    WrongIssuer,
    /// `aud` does not name this service.
    #[error("token audience not accepted")]
    WrongAudience,
    /// The connection's client certificate does not name the party the token speaks for: a
    /// household token needs its own meter's certificate; utility, auditor and admin tokens a
    /// utility, auditor or operator certificate (see [`crate::peer`]).
    #[error("the client certificate ({certificate}) does not belong to the token's {token}")]
    CertificateMismatch {
        /// What the certificate names (or why it names nothing).
        certificate: String,
        /// Whom the token speaks for.
        token: String,
    },
}

/// Errors of token issuing, verification, key handling and authorization.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// The caller presented no usable token.
    #[error("unauthenticated: {0}")]
    Unauthenticated(#[from] TokenRejection),
    /// The caller is authenticated but its role may not make this call.
    #[error("role {role} may not call this (allowed: {allowed})")]
    PermissionDenied {
        /// The caller's role.
        role: Role,
        /// The roles that may.
        allowed: String,
    },
    /// A household caller named a meter its token is not bound to.
    #[error("household token for meter {bound} may not act for meter {requested}")]
    WrongMeter {
        /// The meter the token is bound to.
        bound: String,
        /// The meter the request named.
        requested: String,
    },
    /// The signing key file is readable or writable by group or others.
    #[error(
        "signing key file {path} has mode {mode:04o}, readable or writable by group or others; \
         refusing to use it (run `chmod 600 {path}` after checking who may have read it)"
    )]
    KeyFilePermissions {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The signing key file is not a regular file (a directory, a device, a FIFO, ...).
    #[error("signing key path {path} is not a regular file")]
    KeyFileNotRegular {
        /// The path.
        path: PathBuf,
    },
    /// Reading or writing the signing key file failed.
    #[error("{action} signing key file {path}")]
    KeyFileIo {
        /// What was being done ("reading", "creating", ...).
        action: &'static str,
        /// The key file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The signing key file does not hold a PKCS#8 Ed25519 private key in PEM.
    #[error("signing key file {path} does not hold a PKCS#8 PEM Ed25519 private key")]
    KeyFileFormat {
        /// The key file.
        path: PathBuf,
    },
    /// The operating system's random number generator failed.
    #[error("the operating system's random number generator failed: {0}")]
    Random(String),
    /// A public key could not be parsed.
    #[error("invalid Ed25519 public key")]
    InvalidPublicKey,
    /// A public key does not have the fingerprint the configuration pins.
    #[error(
        "the key authority's public key has fingerprint sha256 {actual}, but the configuration \
         pins {expected}; the key was not used. Compare with `key-authority fingerprints` on \
         the key authority itself: if they differ the key file is not the key authority's; \
         after a deliberate key change, configure the new fingerprint"
    )]
    FingerprintMismatch {
        /// The configured fingerprint (hex).
        expected: String,
        /// The key's fingerprint (hex).
        actual: String,
    },
    /// A token request is invalid (e.g. a household without a meter id, a zero lifetime).
    #[error("invalid token request: {0}")]
    InvalidRequest(String),
    /// A device signature is not 64 bytes.
    #[error("malformed {statement} signature (expected 64 bytes, got {len})")]
    MalformedSignature {
        /// The statement the signature was for.
        statement: &'static str,
        /// Its length.
        len: usize,
    },
    /// A signature does not verify over the statement with the key it must come from.
    #[error("{statement} signature does not verify with the {signer} key")]
    BadSignature {
        /// The statement the signature was for.
        statement: &'static str,
        /// Whose key was expected to have signed it (`device`, `key authority`).
        signer: &'static str,
    },
    /// A meter certificate's bytes are not a certificate.
    #[error("malformed meter certificate: {0}")]
    MalformedCertificate(&'static str),
    /// A meter certificate names another meter than the one it is presented for.
    #[error("meter certificate is for meter {certified}, not {presented}")]
    CertificateMeterMismatch {
        /// The meter the certificate names.
        certified: String,
        /// The meter it was presented for.
        presented: String,
    },
    /// Encoding or signing a token failed.
    #[error("signing a token failed")]
    Signing(#[source] jsonwebtoken::errors::Error),
}

impl From<AuthError> for tonic::Status {
    /// The one place authentication and authorization errors become gRPC statuses: token
    /// problems are `UNAUTHENTICATED` with the rejection's (internals-free) text, role and
    /// meter problems `PERMISSION_DENIED`; anything else is logged and reported as `INTERNAL`
    /// without detail.
    fn from(error: AuthError) -> Self {
        match error {
            AuthError::Unauthenticated(rejection) => {
                tracing::info!(%rejection, "request not authenticated");
                tonic::Status::unauthenticated(rejection.to_string())
            }
            AuthError::PermissionDenied { .. } | AuthError::WrongMeter { .. } => {
                tracing::info!(error = %error, "request not authorized");
                tonic::Status::permission_denied(error.to_string())
            }
            other => {
                tracing::error!(error = %other, "authentication machinery failed");
                tonic::Status::internal("internal error")
            }
        }
    }
}
