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
    /// The anchor file could not be read or written.
    #[error("audit anchor file {path}")]
    AnchorIo {
        /// The anchor file.
        path: std::path::PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Another key-authority process holds this anchor file: every member of a key-authority
    /// pool keeps its own anchor (`audit.anchor_file`), because two processes rewriting one
    /// file could move it backwards.
    #[error(
        "audit anchor file {path} is in use by another key-authority process: give each pool \
         member its own `audit.anchor_file` (and adopt it with `key-authority init-audit`)"
    )]
    AnchorInUse {
        /// The anchor file.
        path: std::path::PathBuf,
    },
    /// The anchor file is malformed, names another key, or its signature does not verify.
    #[error("audit anchor file {path} is invalid: {detail}")]
    AnchorInvalid {
        /// The anchor file.
        path: std::path::PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// Appends are refused: an integrity check (head, anchor or chain) failed earlier in this
    /// process. An operator must investigate, repair the log and restart the key authority.
    #[error(
        "the audit log is halted after an integrity failure ({reason}); no entry is appended \
         and nothing is released until an operator repairs the log and restarts the key authority"
    )]
    Halted {
        /// The failure that halted the log.
        reason: String,
    },
    /// Start-up refused: the log is missing, rolled back or damaged (see [`StartupProblem`]).
    #[error("refusing to start with this audit log: {problem}")]
    StartRefused {
        /// What is wrong.
        problem: StartupProblem,
    },
}

/// Why the key authority refused to start with its audit log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StartupProblem {
    /// The log is empty but an anchor (or key material from an earlier start) exists: the
    /// database was deleted or replaced.
    #[error(
        "the audit log is empty, but {evidence}: the log was deleted or replaced. Restore it \
         from a backup; to start a new log deliberately, move the anchor file away and run \
         `key-authority init-audit`"
    )]
    LogMissing {
        /// What shows that a log existed (the anchor's sequence, or the key material).
        evidence: String,
        /// The anchored sequence, when an anchor exists.
        anchor_sequence: Option<u64>,
    },
    /// The log's head is behind the anchor: the database was rolled back or truncated.
    #[error(
        "the audit log ends at sequence {head_sequence}, but the anchor records sequence \
         {anchor_sequence}: the log was rolled back or truncated. Restore the latest database"
    )]
    RolledBack {
        /// The anchored sequence.
        anchor_sequence: u64,
        /// The database head's sequence.
        head_sequence: u64,
    },
    /// The anchored entry is missing or has another hash: the chain was rewritten.
    #[error(
        "the anchored entry {sequence} has hash {found}, the anchor records {anchored}: the \
         log was rewritten or replaced"
    )]
    AnchorMismatch {
        /// The anchored sequence.
        sequence: u64,
        /// The anchored hash.
        anchored: String,
        /// The hash found (or `missing`).
        found: String,
    },
    /// The log has entries but no anchor exists.
    #[error(
        "the audit log has {head_sequence} entries but there is no anchor file: check the log \
         (`seer audit verify`) and adopt it with `key-authority init-audit`"
    )]
    AnchorMissing {
        /// The database head's sequence.
        head_sequence: u64,
    },
    /// The full verification found damage.
    #[error("the audit log is damaged: {problem}")]
    Damaged {
        /// The first problem, in words.
        problem: String,
    },
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
            AuditError::Halted { .. } => {
                tracing::error!(error = %error, "audit log halted");
                tonic::Status::failed_precondition(
                    "the audit log is halted after an integrity failure; nothing is released",
                )
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
