//! The engine's error type.

use crate::ffi::FfiError;

/// Everything that can go wrong in the CKKS engine. Checked conditions (levels, scales,
/// sizes, keys) are reported *before* SEAL is called; [`CkksError::Seal`] is the backstop
/// for what SEAL itself refuses.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum CkksError {
    /// The parameters exceed the 128-bit security bound of the HE standard.
    #[error(
        "insecure parameters: log2(q) = {total_bits} bits exceeds the 128-bit bound of {max_bits} bits for n = {degree}"
    )]
    InsecureParameters {
        /// Ring degree.
        degree: usize,
        /// Requested total modulus size.
        total_bits: u32,
        /// The bound for this degree.
        max_bits: u32,
    },
    /// The parameters are malformed (unsupported degree, bit sizes out of range, ...).
    #[error("invalid parameters: {reason}")]
    InvalidParameters {
        /// What is wrong.
        reason: String,
    },
    /// A computation needs more rescale levels than the ciphertext has left.
    #[error("needs {needed} levels, ciphertext has {available}")]
    LevelExhausted {
        /// Levels the computation consumes.
        needed: u32,
        /// Levels left in the operand.
        available: u32,
    },
    /// A requested level is above the operand's level (levels only go down).
    #[error("cannot raise a ciphertext from level {from} to level {to}")]
    LevelTooHigh {
        /// Current level.
        from: u32,
        /// Requested level.
        to: u32,
    },
    /// Two scales cannot be reconciled without a level the operands do not have.
    #[error(
        "scale mismatch at level {level}: 2^{left_log2:.4} vs 2^{right_log2:.4} cannot be aligned"
    )]
    ScaleMismatch {
        /// Level of the operands.
        level: u32,
        /// log2 of the first scale.
        left_log2: f64,
        /// log2 of the second scale.
        right_log2: f64,
    },
    /// More values than slots.
    #[error("{given} values do not fit in {slots} slots")]
    TooManyValues {
        /// Number of values given.
        given: usize,
        /// Slots available.
        slots: usize,
    },
    /// A NaN or infinite input value.
    #[error("value at slot {slot} is not finite ({value})")]
    NonFiniteValue {
        /// Offending slot.
        slot: usize,
        /// Offending value.
        value: f64,
    },
    /// A value too large for the scale and modulus at its level.
    #[error(
        "value {value:e} is too large to encode at scale 2^{scale_log2:.1} (limit about {limit:e})"
    )]
    ValueTooLarge {
        /// Offending value.
        value: f64,
        /// log2 of the encoding scale.
        scale_log2: f64,
        /// Approximate largest encodable magnitude.
        limit: f64,
    },
    /// A rotation was requested without its Galois key.
    #[error("no galois keys for rotation steps {steps:?}: generate keys for these steps")]
    MissingGaloisKeys {
        /// Steps without keys.
        steps: Vec<i32>,
    },
    /// A ciphertext multiplication without relinearization keys.
    #[error("ciphertext multiplication needs relinearization keys; build the evaluator with them")]
    MissingRelinKeys,
    /// A rotation step outside `(-slots, slots)`.
    #[error("rotation by {step} is invalid for {slots} slots")]
    InvalidRotation {
        /// Requested step.
        step: i64,
        /// Slot count.
        slots: usize,
    },
    /// A slot count for summation that is not a power of two within the slot count.
    #[error("cannot sum {count} slots: the count must be a power of two from 1 to {slots}")]
    InvalidSlotCount {
        /// Requested count.
        count: usize,
        /// Slot count.
        slots: usize,
    },
    /// A polynomial the evaluator cannot handle.
    #[error("invalid polynomial: {reason}")]
    InvalidPolynomial {
        /// What is wrong.
        reason: String,
    },
    /// An object from another context or parameter set.
    #[error("object does not belong to parameter set {expected}")]
    ForeignObject {
        /// The context's parameter set.
        expected: String,
    },
    /// The result would be transparent (e.g. multiplication by an all-zero plaintext).
    #[error(
        "result would be a transparent ciphertext (e.g. multiplication by all zeros) and is refused"
    )]
    TransparentResult,
    /// Serialized bytes are malformed.
    #[error("malformed {kind}: {reason}")]
    Malformed {
        /// Object kind.
        kind: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// Serialized bytes exceed the size limit.
    #[error("{kind} of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Object kind.
        kind: &'static str,
        /// Size given.
        size: usize,
        /// Limit.
        limit: usize,
    },
    /// Serialized bytes of another kind than expected.
    #[error("expected a serialized {expected}, found a {found}")]
    WrongKind {
        /// Kind expected.
        expected: &'static str,
        /// Kind found.
        found: &'static str,
    },
    /// Serialized bytes made under another parameter set.
    #[error("{kind} was made for parameter set {found}, expected {expected}")]
    ParameterSetMismatch {
        /// Object kind.
        kind: &'static str,
        /// This context's set.
        expected: String,
        /// The set named in the bytes.
        found: String,
    },
    /// Serialized bytes of an unsupported format version.
    #[error("{kind} has format version {found}, this build reads version {supported}")]
    UnsupportedVersion {
        /// Object kind.
        kind: &'static str,
        /// Version found.
        found: u16,
        /// Version supported.
        supported: u16,
    },
    /// Serialized bytes whose checksum does not match (corruption).
    #[error("{kind} is corrupted: checksum mismatch")]
    ChecksumMismatch {
        /// Object kind.
        kind: &'static str,
    },
    /// SEAL refused an operation.
    #[error("seal: {0}")]
    Seal(#[from] FfiError),
}
