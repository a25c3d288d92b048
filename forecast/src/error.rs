//! The crate's error type.

/// Everything that can go wrong in `seer-forecast`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ForecastError {
    /// A model (from a file or built in code) is inconsistent.
    #[error("invalid model: {reason}")]
    InvalidModel {
        /// What is wrong with it.
        reason: String,
    },

    /// A series is too short, too long or holds a non-finite value.
    #[error("invalid series: {reason}")]
    InvalidSeries {
        /// What is wrong with it.
        reason: String,
    },

    /// Training data or options cannot produce a model.
    #[error("invalid training input: {reason}")]
    InvalidTraining {
        /// What is wrong with it.
        reason: String,
    },

    /// The encrypted input does not fit the circuit.
    #[error("invalid encrypted input: {reason}")]
    InvalidInput {
        /// What is wrong with it.
        reason: String,
    },

    /// The circuit needs more levels than the input ciphertext has.
    #[error("the circuit needs {needed} levels but the input has {available}")]
    DepthExceeded {
        /// Levels the circuit consumes.
        needed: u32,
        /// Levels the input ciphertext has.
        available: u32,
    },

    /// Loading or shaping meter data failed.
    #[error(transparent)]
    Data(#[from] seer_core::Error),

    /// A homomorphic operation failed.
    #[error(transparent)]
    Ckks(#[from] seer_ckks::CkksError),

    /// A model file is not valid JSON of the expected shape.
    #[error("model json: {0}")]
    Json(#[from] serde_json::Error),

    /// libtorch failed during training.
    #[cfg(feature = "tch")]
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
}
