//! The crate's error type.

/// Everything that can go wrong in `seer-anomaly`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AnomalyError {
    /// A day profile has the wrong number of values or a non-finite value.
    #[error("invalid day profile: {reason}")]
    InvalidDay {
        /// What is wrong with it.
        reason: String,
    },

    /// Training data or options cannot produce a model.
    #[error("invalid training input: {reason}")]
    InvalidTraining {
        /// What is wrong with it.
        reason: String,
    },

    /// A model (from a file or built in code) is inconsistent.
    #[error("invalid model: {reason}")]
    InvalidModel {
        /// What is wrong with it.
        reason: String,
    },

    /// The encrypted input does not match what the scorer expects.
    #[error("invalid encrypted input: {reason}")]
    InvalidInput {
        /// What is wrong with it.
        reason: String,
    },

    /// The model needs more levels than the ciphertexts have.
    #[error("the circuit needs {needed} levels but the input has {available}")]
    DepthExceeded {
        /// Levels the circuit consumes.
        needed: u32,
        /// Levels the input ciphertexts have.
        available: u32,
    },

    /// A homomorphic operation failed.
    #[error(transparent)]
    Ckks(#[from] seer_ckks::CkksError),

    /// A model file is not valid JSON of the expected shape.
    #[error("model json")]
    Json(#[from] serde_json::Error),
}
