//! The CKKS context: parameters, SEAL context, level chain, canonical scales, encoding.

use std::sync::Arc;

use sealy::{CKKSEncryptionParametersBuilder, DegreeType, Modulus};

use crate::error::CkksError;
use crate::ffi::{ParmsId, RawCiphertext, RawContext, RawEncoder, RawEvaluator, RawPlaintext};
use crate::params::{ParameterSet, max_log_q_128};
use crate::seal_format;
use crate::serialize::{self, ObjectKind};

/// A rescale level: the number of rescales a ciphertext can still undergo
/// (`0` = the last level, only `q0` left).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Level(pub u32);

impl std::fmt::Display for Level {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "level {}", self.0)
    }
}

/// Relative tolerance under which two scales are the same scale up to floating-point
/// rounding; such scales are snapped together (a relabelling error below 1e-9 relative).
pub(crate) const SCALE_SNAP_TOLERANCE: f64 = 1e-9;

pub(crate) fn scales_close(a: f64, b: f64) -> bool {
    (a - b).abs() <= SCALE_SNAP_TOLERANCE * a.abs().max(b.abs())
}

pub(crate) struct LevelInfo {
    pub parms_id: ParmsId,
    /// The prime removed by rescaling from this level (`None` at level 0).
    pub rescale_prime: Option<u64>,
    /// Canonical scale at this level.
    pub scale: f64,
    /// Bits of the modulus at this level.
    pub modulus_bits: u32,
}

pub(crate) struct ContextInner {
    pub params: ParameterSet,
    pub id: String,
    pub primes: Vec<u64>,
    /// The key level's parameter id (all primes, the special one included).
    pub key_parms_id: ParmsId,
    pub raw: RawContext,
    pub encoder: RawEncoder,
    pub evaluator: RawEvaluator,
    pub slots: usize,
    /// Indexed by level.
    pub levels: Vec<LevelInfo>,
}

/// A CKKS context for one [`ParameterSet`]: cheap to clone (shared), `Send + Sync`.
#[derive(Clone)]
pub struct CkksContext {
    pub(crate) inner: Arc<ContextInner>,
}

impl std::fmt::Debug for CkksContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CkksContext")
            .field("parameter_set", &self.inner.id)
            .finish()
    }
}

impl CkksContext {
    /// Builds the context: validates the set against the 128-bit bound, creates the SEAL
    /// context with SEAL's own TC128 check enabled, and precomputes the level chain.
    pub fn new(params: ParameterSet) -> Result<Self, CkksError> {
        params.validate()?;
        let primes = params.primes()?;
        let degree = DegreeType::try_from(params.degree() as u64).map_err(|e| {
            CkksError::InvalidParameters {
                reason: format!("degree {}: {e}", params.degree()),
            }
        })?;
        let moduli = primes
            .iter()
            .map(|p| Modulus::new(*p))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| CkksError::InvalidParameters {
                reason: format!("modulus: {e}"),
            })?;
        let seal_params = CKKSEncryptionParametersBuilder::new()
            .set_poly_modulus_degree(degree)
            .set_coefficient_modulus(moduli)
            .build()
            .map_err(|e| CkksError::InvalidParameters {
                reason: format!("encryption parameters: {e}"),
            })?;
        // 128 = seal::sec_level_type::tc128: SEAL re-checks the HE-standard bound itself.
        let raw = RawContext::new(&seal_params, 128)?;
        if let Some(reason) = raw.parameter_error()? {
            return Err(CkksError::InvalidParameters {
                reason: format!("seal rejected the parameters: {reason}"),
            });
        }
        let chain = raw.chain()?;
        let levels_count = params.levels() as usize;
        // chain[0] is the key level (with the special prime); chain[1] the top data level.
        if chain.len() != levels_count + 2 {
            return Err(CkksError::InvalidParameters {
                reason: format!(
                    "seal built a chain of {} levels, expected {}",
                    chain.len(),
                    levels_count + 2
                ),
            });
        }
        let key_bits = chain[0].total_bits;
        if max_log_q_128(params.degree()).is_some_and(|max| key_bits > max) {
            return Err(CkksError::InsecureParameters {
                degree: params.degree(),
                total_bits: key_bits,
                max_bits: max_log_q_128(params.degree()).unwrap_or(0),
            });
        }
        let scales = params.canonical_scales(&primes);
        let mut levels: Vec<LevelInfo> = Vec::with_capacity(levels_count + 1);
        for level in 0..=levels_count {
            // The data level with chain index `level` sits at position `levels_count + 1 - level`.
            let entry = &chain[levels_count + 1 - level];
            debug_assert_eq!(entry.chain_index as usize, level);
            levels.push(LevelInfo {
                parms_id: entry.parms_id,
                rescale_prime: (level > 0).then(|| primes[level]),
                scale: scales[level],
                modulus_bits: entry.total_bits,
            });
        }
        let encoder = RawEncoder::new(&raw)?;
        let evaluator = RawEvaluator::new(&raw)?;
        let slots = encoder.slot_count()?;
        Ok(Self {
            inner: Arc::new(ContextInner {
                id: params.id(),
                params,
                primes,
                key_parms_id: chain[0].parms_id,
                raw,
                encoder,
                evaluator,
                slots,
                levels,
            }),
        })
    }

    /// The parameter set.
    pub fn parameter_set(&self) -> ParameterSet {
        self.inner.params
    }

    /// The parameter-set id carried by serialized objects.
    pub fn parameter_set_id(&self) -> &str {
        &self.inner.id
    }

    /// The coefficient-modulus primes `[q0, ..., qL, p]`.
    pub fn primes(&self) -> &[u64] {
        &self.inner.primes
    }

    /// Number of slots per ciphertext.
    pub fn slots(&self) -> usize {
        self.inner.slots
    }

    /// The level of a fresh ciphertext.
    pub fn top_level(&self) -> Level {
        Level(self.inner.params.levels())
    }

    /// The canonical scale at `level` (the scale fresh encryptions and products land on).
    pub fn canonical_scale(&self, level: Level) -> Result<f64, CkksError> {
        Ok(self.level_info(level)?.scale)
    }

    pub(crate) fn level_info(&self, level: Level) -> Result<&LevelInfo, CkksError> {
        self.inner
            .levels
            .get(level.0 as usize)
            .ok_or(CkksError::LevelTooHigh {
                from: self.inner.params.levels(),
                to: level.0,
            })
    }

    pub(crate) fn level_of(&self, parms_id: &ParmsId) -> Result<Level, CkksError> {
        self.inner
            .levels
            .iter()
            .position(|l| &l.parms_id == parms_id)
            .map(|i| Level(i as u32))
            .ok_or_else(|| self.foreign())
    }

    pub(crate) fn foreign(&self) -> CkksError {
        CkksError::ForeignObject {
            expected: self.inner.id.clone(),
        }
    }

    fn check_values(&self, values: &[f64], scale: f64, level: Level) -> Result<(), CkksError> {
        if values.len() > self.inner.slots {
            return Err(CkksError::TooManyValues {
                given: values.len(),
                slots: self.inner.slots,
            });
        }
        let bits = self.level_info(level)?.modulus_bits;
        // Encoded coefficients must stay below q/2 at this level; SEAL checks this too, we
        // check first to give the value back in the error.
        let limit = 2f64.powi(bits as i32 - 1) / scale / (self.inner.params.degree() as f64).sqrt();
        for (slot, value) in values.iter().enumerate() {
            if !value.is_finite() {
                return Err(CkksError::NonFiniteValue {
                    slot,
                    value: *value,
                });
            }
            if value.abs() > limit {
                return Err(CkksError::ValueTooLarge {
                    value: *value,
                    scale_log2: scale.log2(),
                    limit,
                });
            }
        }
        Ok(())
    }

    /// Encodes up to `slots()` real values at `level` and `scale`; unused slots are zero.
    pub fn encode_at(
        &self,
        values: &[f64],
        level: Level,
        scale: f64,
    ) -> Result<Plaintext, CkksError> {
        if !(scale.is_finite() && scale >= 1.0) {
            return Err(CkksError::InvalidParameters {
                reason: format!("scale {scale} must be finite and at least 1"),
            });
        }
        self.check_values(values, scale, level)?;
        let info = self.level_info(level)?;
        let raw = self.inner.encoder.encode(values, &info.parms_id, scale)?;
        Ok(Plaintext { raw, level })
    }

    /// Encodes values at the top level and canonical scale (what encryption uses).
    pub fn encode(&self, values: &[f64]) -> Result<Plaintext, CkksError> {
        let level = self.top_level();
        self.encode_at(values, level, self.canonical_scale(level)?)
    }

    pub(crate) fn encode_scalar_raw(
        &self,
        value: f64,
        level: Level,
        scale: f64,
    ) -> Result<RawPlaintext, CkksError> {
        self.check_values(&[value], scale, level)?;
        let info = self.level_info(level)?;
        Ok(self
            .inner
            .encoder
            .encode_scalar(value, &info.parms_id, scale)?)
    }

    /// Decodes all slots of a plaintext.
    pub fn decode(&self, plain: &Plaintext) -> Result<Vec<f64>, CkksError> {
        Ok(self.inner.encoder.decode(&plain.raw)?)
    }

    /// Wraps a SEAL ciphertext produced by this crate, reading its level.
    pub(crate) fn wrap(&self, raw: RawCiphertext) -> Result<Ciphertext, CkksError> {
        let level = self.level_of(&raw.parms_id()?)?;
        Ok(Ciphertext { raw, level })
    }
}

/// An encoded (unencrypted) CKKS plaintext.
pub struct Plaintext {
    pub(crate) raw: RawPlaintext,
    level: Level,
}

impl Plaintext {
    #[cfg(any(test, feature = "secret-key"))]
    pub(crate) fn from_raw(raw: RawPlaintext, level: Level) -> Self {
        Self { raw, level }
    }

    /// The level it is encoded at.
    pub fn level(&self) -> Level {
        self.level
    }

    /// The scale it is encoded at.
    pub fn scale(&self) -> Result<f64, CkksError> {
        Ok(self.raw.scale()?)
    }
}

impl std::fmt::Debug for Plaintext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plaintext")
            .field("level", &self.level)
            .finish()
    }
}

/// A CKKS ciphertext with its level. Its scale is read from SEAL.
pub struct Ciphertext {
    pub(crate) raw: RawCiphertext,
    pub(crate) level: Level,
}

impl Ciphertext {
    /// Remaining rescale levels.
    pub fn level(&self) -> Level {
        self.level
    }

    /// The CKKS scale.
    pub fn scale(&self) -> Result<f64, CkksError> {
        Ok(self.raw.scale()?)
    }

    /// A deep copy (fallible: it allocates in SEAL).
    pub fn try_clone(&self) -> Result<Self, CkksError> {
        Ok(Self {
            raw: self.raw.try_clone()?,
            level: self.level,
        })
    }
}

impl Ciphertext {
    /// Serializes the ciphertext (SEER frame around SEAL's zstd-compressed form).
    pub fn to_bytes(&self, ctx: &CkksContext) -> Result<Vec<u8>, CkksError> {
        let payload = self.raw.save()?;
        Ok(serialize::write(ctx, ObjectKind::Ciphertext, &[], &payload))
    }

    /// Serializes the ciphertext without compression (SEER frame around SEAL's plain form).
    ///
    /// About 15 % larger than [`to_bytes`](Self::to_bytes) (the residues are close to
    /// uniform, so zstd gains little), but [`from_bytes`](Self::from_bytes) then loads it with
    /// a copy and SEAL's validation instead of a decompression: the form for objects that are
    /// parsed again and again on a hot path, such as the billing lanes the utility and the key
    /// authority both evaluate. Both forms load through the same `from_bytes`.
    pub fn to_bytes_uncompressed(&self, ctx: &CkksContext) -> Result<Vec<u8>, CkksError> {
        let payload = self.raw.save_uncompressed()?;
        Ok(serialize::write(ctx, ObjectKind::Ciphertext, &[], &payload))
    }

    /// Size limit applied by [`from_bytes`](Self::from_bytes): the largest valid ciphertext
    /// under `ctx`, plus framing.
    pub fn max_serialized_len(ctx: &CkksContext) -> usize {
        serialize::size_limit(ctx, ObjectKind::Ciphertext, 0)
    }

    /// Loads and validates a ciphertext: frame checks, SEAL's validation, then two
    /// polynomials, NTT form, not transparent, a level of `ctx`, and a sane scale.
    pub fn from_bytes(ctx: &CkksContext, bytes: &[u8]) -> Result<Self, CkksError> {
        Self::from_bytes_with_limit(ctx, bytes, Self::max_serialized_len(ctx))
    }

    /// As [`from_bytes`](Self::from_bytes) with a caller-chosen size limit.
    pub fn from_bytes_with_limit(
        ctx: &CkksContext,
        bytes: &[u8],
        limit: usize,
    ) -> Result<Self, CkksError> {
        let kind = ObjectKind::Ciphertext.name();
        let frame = serialize::read(ctx, ObjectKind::Ciphertext, bytes, limit)?;
        let checked = seal_format::check(ctx, ObjectKind::Ciphertext, &[], frame.payload, limit)?;
        let raw = RawCiphertext::load(&ctx.inner.raw, &checked)?;
        let malformed = |reason: String| CkksError::Malformed { kind, reason };
        let size = raw.size()?;
        if size != 2 {
            return Err(malformed(format!("{size} polynomials, expected 2")));
        }
        if !raw.is_ntt_form()? {
            return Err(malformed("not in NTT form".into()));
        }
        if raw.is_transparent()? {
            return Err(malformed(
                "transparent ciphertext (it hides nothing)".into(),
            ));
        }
        let level = ctx.level_of(&raw.parms_id()?)?;
        let scale = raw.scale()?;
        let bits = ctx.level_info(level)?.modulus_bits;
        if !(scale.is_finite() && scale >= 1.0 && scale.log2() < bits as f64) {
            return Err(malformed(format!("scale {scale:e} is invalid at {level}")));
        }
        Ok(Self { raw, level })
    }
}

impl std::fmt::Debug for Ciphertext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ciphertext")
            .field("level", &self.level)
            .field("scale_log2", &self.raw.scale().map(f64::log2).ok())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_matches_parameters() {
        let ctx = CkksContext::new(ParameterSet::N8192_L2_SEC128).unwrap();
        assert_eq!(ctx.slots(), 4096);
        assert_eq!(ctx.top_level(), Level(2));
        assert_eq!(ctx.inner.levels.len(), 3);
        assert_eq!(ctx.inner.levels[0].rescale_prime, None);
        assert_eq!(ctx.inner.levels[2].rescale_prime, Some(ctx.primes()[2]));
        assert_eq!(ctx.canonical_scale(Level(2)).unwrap(), 2f64.powi(40));
        assert!(ctx.canonical_scale(Level(3)).is_err());
        assert!(ctx.inner.levels[2].modulus_bits > ctx.inner.levels[0].modulus_bits);
    }

    #[test]
    fn encode_decode_round_trip() {
        let ctx = CkksContext::new(ParameterSet::N8192_L2_SEC128).unwrap();
        let values: Vec<f64> = (0..ctx.slots())
            .map(|i| (i as f64 * 0.37).sin() * 100.0)
            .collect();
        for level in 0..=2 {
            let level = Level(level);
            let pt = ctx.encode_at(&values, level, 2f64.powi(30)).unwrap();
            assert_eq!(pt.level(), level);
            let back = ctx.decode(&pt).unwrap();
            for (a, b) in values.iter().zip(&back) {
                assert!((a - b).abs() < 1e-6, "{a} vs {b}");
            }
        }
    }

    #[test]
    fn bad_values_are_refused() {
        let ctx = CkksContext::new(ParameterSet::N8192_L2_SEC128).unwrap();
        assert!(matches!(
            ctx.encode(&vec![0.0; 4097]),
            Err(CkksError::TooManyValues {
                given: 4097,
                slots: 4096
            })
        ));
        assert!(matches!(
            ctx.encode(&[1.0, f64::NAN]),
            Err(CkksError::NonFiniteValue { slot: 1, .. })
        ));
        assert!(matches!(
            ctx.encode_at(&[1e30], Level(0), 2f64.powi(40)),
            Err(CkksError::ValueTooLarge { .. })
        ));
        assert!(ctx.encode_at(&[1.0], Level(0), f64::NAN).is_err());
    }
}
