//! The crate's error type.

/// Everything that can go wrong in `seer-daily`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DailyError {
    /// A model (from a file or built in code) is inconsistent.
    #[error("invalid daily model: {reason}")]
    InvalidModel {
        /// What is wrong with it.
        reason: String,
    },
    /// Training data or options cannot produce a model.
    #[error("invalid training input: {reason}")]
    InvalidTraining {
        /// What is wrong with it.
        reason: String,
    },
    /// The meter's history cannot produce the day's input (too few days seen, the day absent).
    #[error("no daily input for {day}: {reason}")]
    NotEnoughHistory {
        /// The day.
        day: chrono::NaiveDate,
        /// What is missing.
        reason: String,
    },
    /// A reading the history cannot hold (non-finite, negative, not on a quarter hour).
    #[error("invalid reading: {reason}")]
    InvalidReading {
        /// What is wrong with it.
        reason: String,
    },
    /// A block index or ciphertext the circuit cannot take.
    #[error("invalid encrypted input: {reason}")]
    InvalidInput {
        /// What is wrong with it.
        reason: String,
    },
    /// The homomorphic evaluation failed.
    #[error("CKKS: {0}")]
    Ckks(#[from] seer_ckks::CkksError),
}
