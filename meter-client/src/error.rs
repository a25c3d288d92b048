//! The crate's error type.

use std::path::PathBuf;

/// Everything that can go wrong in the meter client.
///
/// `#[non_exhaustive]`: match the variants you handle and keep a wildcard arm. Messages are
/// lowercase without a trailing period; the layers below are kept as sources.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The domain layer refused something: a malformed input row (with its file and 1-based
    /// line), an invalid tariff or privacy parameter, an exhausted privacy budget, ...
    #[error(transparent)]
    Core(#[from] seer_core::Error),

    /// The CKKS engine refused an operation (a malformed public key, an encoding problem).
    #[error("ckks: {0}")]
    Ckks(#[from] seer_ckks::CkksError),

    /// A `--source` specification does not parse.
    #[error("invalid source {spec:?}: {reason}")]
    InvalidSource {
        /// The text given.
        spec: String,
        /// What is wrong with it.
        reason: String,
    },

    /// The daily lane refused something: an invalid model file, a reading its history cannot
    /// hold, a block outside the ciphertext (a day without enough history is a skip, not an
    /// error: see [`crate::daily`]).
    #[error(transparent)]
    Daily(#[from] seer_daily::DailyError),

    /// A setting is out of range or inconsistent with another.
    #[error("invalid setting {setting}: {reason}")]
    InvalidSetting {
        /// The setting's name.
        setting: &'static str,
        /// Why it is refused.
        reason: String,
    },

    /// A file other than a data source (the tariff file) could not be read or parsed.
    #[error("cannot read {}: {reason}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },

    /// The state directory could not be created, locked or opened.
    #[error("state directory {}: {reason}", path.display())]
    StateDirectory {
        /// The directory.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },

    /// A query on the local state database failed.
    #[error("state database: {action} failed")]
    Database {
        /// What the client was doing.
        action: &'static str,
        /// The database error.
        #[source]
        source: sqlx::Error,
    },

    /// The state database's schema could not be applied.
    #[error("state database: schema migration failed")]
    Migrate(#[from] sqlx::migrate::MigrateError),

    /// The MQTT broker of a live source refused the subscription or the session (a lost
    /// connection is not an error: the client reconnects).
    #[error("mqtt broker {broker}: {reason}")]
    Mqtt {
        /// The broker, `HOST:PORT`.
        broker: String,
        /// What went wrong.
        reason: String,
    },

    /// The local state is inconsistent (a damaged file or a bug); nothing was sent from it.
    #[error("corrupt local state: {reason}")]
    CorruptState {
        /// What is inconsistent.
        reason: String,
    },

    /// The state directory was created for another meter configuration.
    #[error(
        "the state directory belongs to {field} {stored}, but {configured} was configured: \
         use that {field} again or a fresh --state directory for the new one"
    )]
    StateMismatch {
        /// Which setting differs (`meter id`, `home index`, `tariff`).
        field: &'static str,
        /// The value recorded in the state.
        stored: String,
        /// The configured value.
        configured: String,
    },

    /// The key authority now serves a public key other than the one pinned on first use.
    #[error(
        "the key authority's public key for {parameter_set} changed: pinned blake3 {pinned}, \
         now served {served}; nothing was encrypted under the new key. If the key authority's \
         operator confirms a deliberate key rotation, start again with a fresh --state \
         directory; otherwise treat the key authority (or the network path to it) as \
         compromised"
    )]
    PublicKeyChanged {
        /// The parameter-set id.
        parameter_set: String,
        /// The BLAKE3 digest pinned (hex).
        pinned: String,
        /// The BLAKE3 digest of the key now served (hex).
        served: String,
    },

    /// No public key fingerprint is configured for the parameter set.
    #[error(
        "no fingerprint is configured for the key authority's public key of {parameter_set} \
         (it serves blake3 {served}); the meter accepts only a pinned key: ask the key \
         authority's operator for `key-authority fingerprints` and pass \
         --public-key-pin {parameter_set}=<blake3> after checking it out of band"
    )]
    PublicKeyNotPinned {
        /// The parameter-set id.
        parameter_set: String,
        /// The BLAKE3 digest of the key served (hex).
        served: String,
    },

    /// The key authority serves a public key other than the configured fingerprint.
    #[error(
        "the key authority serves a public key for {parameter_set} with blake3 {served}, but \
         the configuration pins {configured}; nothing was encrypted. Check the pin against \
         `key-authority fingerprints` on the key authority itself: if they differ, the key \
         served is not the key authority's (treat the network path or the server as \
         compromised); after a deliberate key rotation, configure the new fingerprint"
    )]
    PublicKeyPinMismatch {
        /// The parameter-set id.
        parameter_set: String,
        /// The configured digests (hex).
        configured: String,
        /// The BLAKE3 digest of the key served (hex).
        served: String,
    },

    /// The key authority's answer is unusable (no key set, inconsistent chunks, a digest that
    /// does not match its own listing).
    #[error("key authority: {reason}")]
    KeyAuthority {
        /// What is wrong.
        reason: String,
    },

    /// The bearer token is missing or cannot be sent as a header.
    #[error("bearer token: {reason}")]
    Token {
        /// What is wrong.
        reason: String,
    },

    /// A server could not be reached.
    #[error("cannot connect to {url}")]
    Connect {
        /// The server's URL.
        url: String,
        /// The transport error.
        #[source]
        source: tonic::transport::Error,
    },

    /// The device key or the meter certificate could not be created, read or checked.
    #[error("meter identity: {0}")]
    Identity(#[from] seer_auth::AuthError),

    /// The state directory holds no device key or no certificate: the meter was never
    /// enrolled.
    #[error(
        "meter {meter_id} is not enrolled in state directory {} ({missing} missing): run \
         `meter-client enrol --meter-id {meter_id} --code CODE --key-authority URL --state {}` \
         with a code from `key-authority enrolment-code`",
        state_dir.display(),
        state_dir.display()
    )]
    NotEnrolled {
        /// The meter.
        meter_id: String,
        /// The state directory.
        state_dir: PathBuf,
        /// The file that is missing.
        missing: &'static str,
    },

    /// A gRPC call failed.
    #[error("{method} failed: {code:?}: {message}")]
    Rpc {
        /// The method, e.g. `Ingest.Upload`.
        method: &'static str,
        /// The status code.
        code: tonic::Code,
        /// The status message.
        message: String,
    },

    /// The utility server's cursor contradicts the local queue: it has lost batches this
    /// meter already removed, or holds sequences this meter never produced.
    #[error(
        "the utility server's cursor for meter {meter} is {server_last}, but {reason}; refusing \
         to upload until an operator reconciles the server with this meter's state"
    )]
    CursorMismatch {
        /// The meter.
        meter: String,
        /// The server's last stored sequence.
        server_last: u64,
        /// What the meter knows that contradicts it.
        reason: String,
    },

    /// The key authority holds a different receipt (billing-lane digest) under one of this
    /// meter's sequences: another state directory or program has recorded batches as this
    /// meter, or the key authority's records are damaged. Retrying cannot fix it.
    #[error(
        "the key authority holds a different receipt for batch {sequence} of meter {meter} \
         ({message}); the batch stays queued: refusing to continue until an operator \
         reconciles the key authority's receipts with this meter's state"
    )]
    ReceiptConflict {
        /// The meter.
        meter: String,
        /// The batch's sequence.
        sequence: u64,
        /// The key authority's message.
        message: String,
    },

    /// A call (key fetch, upload, receipt) kept failing with transient errors past the retry limit.
    #[error("gave up after {attempts} consecutive failed attempts")]
    RetriesExhausted {
        /// The attempts made.
        attempts: u32,
        /// The last failure.
        #[source]
        last: Box<Error>,
    },

    /// A blocking task (encryption, loading a source) panicked or was cancelled.
    #[error("background task failed")]
    Join(#[from] tokio::task::JoinError),
}

impl Error {
    /// A database error while doing `action`.
    pub(crate) fn db(action: &'static str) -> impl FnOnce(sqlx::Error) -> Self {
        move |source| Self::Database { action, source }
    }

    /// A failed call of `method`.
    pub(crate) fn rpc(method: &'static str, status: &tonic::Status) -> Self {
        Self::Rpc {
            method,
            code: status.code(),
            message: status.message().to_owned(),
        }
    }

    /// Whether retrying later (after reconnecting and re-reading the server's cursor) may
    /// succeed: connection failures and transient gRPC codes. Refusals of content (invalid
    /// argument, already exists), authentication failures and local errors are final.
    pub fn is_transient(&self) -> bool {
        use tonic::Code;
        match self {
            Self::Connect { .. } => true,
            Self::Rpc { code, .. } => matches!(
                code,
                Code::Unavailable
                    | Code::Unknown
                    | Code::Internal
                    | Code::Cancelled
                    | Code::DeadlineExceeded
                    | Code::Aborted
                    | Code::ResourceExhausted
                    // A gap: re-reading the cursor resynchronizes (or reveals a real mismatch).
                    | Code::FailedPrecondition
            ),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_errors_are_classified() {
        let unavailable = Error::rpc("Ingest.Upload", &tonic::Status::unavailable("gone"));
        assert!(unavailable.is_transient());
        let exists = Error::rpc("Ingest.Upload", &tonic::Status::already_exists("differs"));
        assert!(!exists.is_transient());
        let auth = Error::rpc("Ingest.Upload", &tonic::Status::unauthenticated("no"));
        assert!(!auth.is_transient());
        assert!(!Error::CorruptState { reason: "x".into() }.is_transient());
        let conflict = Error::ReceiptConflict {
            meter: "m".into(),
            sequence: 4,
            message: "differs".into(),
        };
        assert!(!conflict.is_transient());
        assert!(conflict.to_string().contains("batch 4"), "{conflict}");
    }

    #[test]
    fn messages_are_lowercase_without_trailing_period() {
        let errors = [
            Error::InvalidSource {
                spec: "x".into(),
                reason: "unknown kind".into(),
            },
            Error::PublicKeyChanged {
                parameter_set: "p".into(),
                pinned: "a".into(),
                served: "b".into(),
            },
            Error::StateMismatch {
                field: "meter id",
                stored: "a".into(),
                configured: "b".into(),
            },
            Error::ReceiptConflict {
                meter: "m".into(),
                sequence: 1,
                message: "x".into(),
            },
        ];
        for e in errors {
            let text = e.to_string();
            assert!(text.starts_with(|c: char| c.is_lowercase()), "{text}");
            assert!(!text.ends_with('.'), "{text}");
        }
    }
}
