//! The errors of [`crate::audit`] and their one mapping onto [`tonic::Status`].

/// Errors of the audit log.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// The database URL is neither `sqlite:` nor `postgres://` / `postgresql://`.
    #[error("unsupported audit database url (expected sqlite:PATH or postgres://...): {url}")]
    UnsupportedUrl {
        /// The URL, without any password.
        url: String,
    },
    /// The database could not be opened or reached.
    #[error("opening the audit database {url}")]
    Connect {
        /// The URL, without any password.
        url: String,
        /// The underlying error.
        #[source]
        source: sqlx::Error,
    },
    /// Creating the directory of the SQLite file failed.
    #[error("creating the directory of the audit database {path}")]
    CreateDirectory {
        /// The directory.
        path: std::path::PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Applying the schema migrations failed.
    #[error("migrating the audit database")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// An entry could not be written (nothing was recorded; the caller must not answer).
    #[error("writing to the audit log failed")]
    Write(#[source] sqlx::Error),
    /// The log could not be read.
    #[error("reading the audit log failed")]
    Read(#[source] sqlx::Error),
    /// The head row is missing: the schema was damaged.
    #[error("the audit log's head row is missing")]
    HeadMissing,
    /// Appending refused: the stored head does not match the chain (signature or last entry),
    /// so the log has been tampered with or damaged. Run a verification and investigate.
    #[error("the audit log's head does not match its chain ({detail}); refusing to append")]
    ChainBroken {
        /// What mismatched.
        detail: String,
    },
    /// A stored row cannot be read back.
    #[error("audit log entry {sequence} is malformed: {detail}")]
    Corrupt {
        /// The row's stored sequence number.
        sequence: i64,
        /// What is wrong.
        detail: String,
    },
    /// A request kind name is not acceptable.
    #[error("invalid request kind {kind:?} (1 to 64 of a-z, 0-9, '_', '-', '.')")]
    InvalidKind {
        /// The rejected name.
        kind: String,
    },
    /// A listing query is invalid.
    #[error("invalid audit query: {0}")]
    InvalidQuery(String),
    /// The log has reached the largest sequence number the database can store.
    #[error("the audit log is full")]
    Full,
}

impl From<AuditError> for tonic::Status {
    /// The one place audit errors become gRPC statuses: invalid queries are
    /// `INVALID_ARGUMENT` with their message; storage failures are logged with their cause and
    /// reported as `UNAVAILABLE` or `INTERNAL` without detail.
    fn from(error: AuditError) -> Self {
        match error {
            AuditError::InvalidQuery(_) | AuditError::InvalidKind { .. } => {
                tonic::Status::invalid_argument(error.to_string())
            }
            AuditError::Connect { .. } | AuditError::Read(_) | AuditError::Write(_) => {
                tracing::error!(error = %error, cause = ?std::error::Error::source(&error), "audit log unavailable");
                tonic::Status::unavailable("audit log unavailable")
            }
            other => {
                tracing::error!(error = %other, "audit log failure");
                tonic::Status::internal("internal error")
            }
        }
    }
}
