//! The errors of [`crate::release`] and their one mapping onto [`tonic::Status`].

use crate::audit::AuditError;

/// Errors of receipts and releases.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReleaseError {
    /// A request field is malformed.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A different receipt is already recorded under the same (meter, sequence).
    #[error("{0}")]
    AlreadyExists(String),
    /// A receipt the meter's enrolled, unrevoked device key did not sign (unsigned, badly
    /// signed, an unenrolled or a revoked meter): the reason.
    #[error("receipt refused: {0}")]
    Unsigned(String),
    /// The request conflicts with what is recorded (e.g. a receipt after the bill's release).
    #[error("{0}")]
    FailedPrecondition(String),
    /// The database could not be read or written (nothing was recorded or released).
    #[error("the key authority's database failed")]
    Database(#[source] sqlx::Error),
    /// The audit log could not be written (nothing was released).
    #[error(transparent)]
    Audit(#[from] AuditError),
    /// The billing configuration is unusable (startup).
    #[error("billing release configuration: {0}")]
    Config(String),
    /// The homomorphic evaluation or decryption machinery failed.
    #[error("billing engine: {0}")]
    Engine(String),
}

impl From<seer_core::Error> for ReleaseError {
    /// A request field that is no word of the shared vocabulary (a period, a day, a lane, a
    /// meter id): the message as the field's parser wrote it.
    fn from(error: seer_core::Error) -> Self {
        ReleaseError::InvalidArgument(error.to_string())
    }
}

impl From<sqlx::Error> for ReleaseError {
    fn from(error: sqlx::Error) -> Self {
        ReleaseError::Database(error)
    }
}

impl From<ReleaseError> for tonic::Status {
    /// Client errors carry their message; storage failures are logged with their cause and
    /// answered `UNAVAILABLE` without detail; anything else is `INTERNAL`.
    fn from(error: ReleaseError) -> Self {
        match error {
            ReleaseError::InvalidArgument(_) => tonic::Status::invalid_argument(error.to_string()),
            ReleaseError::AlreadyExists(message) => tonic::Status::already_exists(message),
            ReleaseError::Unsigned(_) => tonic::Status::permission_denied(error.to_string()),
            ReleaseError::FailedPrecondition(message) => {
                tonic::Status::failed_precondition(message)
            }
            ReleaseError::Database(source) => {
                tracing::error!(error = %source, "key-authority database unavailable");
                tonic::Status::unavailable("database unavailable")
            }
            ReleaseError::Audit(audit) => audit.into(),
            other => {
                tracing::error!(error = %other, "release failure");
                tonic::Status::internal("internal error")
            }
        }
    }
}
