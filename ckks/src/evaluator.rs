//! Homomorphic operations with automatic level and scale management.
//!
//! Every ciphertext produced here sits at the canonical scale of its level when its inputs
//! did (see [`crate::params`]). Operands at different levels are aligned by bringing the
//! higher one down: a plain modulus switch when its scale already matches, otherwise a
//! multiplication by the constant 1 encoded at the exact correcting scale followed by a
//! rescale, which costs no level of the result. Every operation checks its level budget and
//! keys before calling SEAL and fails with [`CkksError`] instead.

use std::ops::Deref;

use crate::context::{Ciphertext, CkksContext, Level, Plaintext, scales_close};
use crate::error::CkksError;
use crate::ffi::RawCiphertext;
use crate::keys::{GaloisKeys, RelinKeys, normalize_step, steps_for_sum};

/// Smallest scale accepted for the constant used in a scale correction; below it the
/// correction itself would lose precision.
const MIN_CORRECTION_SCALE: f64 = (1u64 << 20) as f64;

/// A borrowed operand or an adjusted copy of it.
enum Operand<'a> {
    Borrowed(&'a Ciphertext),
    Owned(Ciphertext),
}

impl Deref for Operand<'_> {
    type Target = Ciphertext;
    fn deref(&self) -> &Ciphertext {
        match self {
            Operand::Borrowed(c) => c,
            Operand::Owned(c) => c,
        }
    }
}

/// Evaluates homomorphic operations. Holds only public evaluation keys: it cannot decrypt.
pub struct Evaluator {
    ctx: CkksContext,
    relin: Option<RelinKeys>,
    galois: Option<GaloisKeys>,
}

impl std::fmt::Debug for Evaluator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Evaluator")
            .field("context", &self.ctx)
            .field("relin", &self.relin.is_some())
            .field("galois", &self.galois)
            .finish()
    }
}

impl Evaluator {
    /// An evaluator with optional relinearization and Galois keys (multiplications need the
    /// first, rotations the second).
    pub fn new(ctx: &CkksContext, relin: Option<RelinKeys>, galois: Option<GaloisKeys>) -> Self {
        Self {
            ctx: ctx.clone(),
            relin,
            galois,
        }
    }

    /// The context.
    pub fn context(&self) -> &CkksContext {
        &self.ctx
    }

    /// The Galois keys, if any.
    pub fn galois_keys(&self) -> Option<&GaloisKeys> {
        self.galois.as_ref()
    }

    fn wrap(&self, raw: RawCiphertext, level: Level) -> Ciphertext {
        Ciphertext { raw, level }
    }

    /// Sets the scale of `ct` to the canonical one of its level when they differ by
    /// floating-point rounding only.
    fn snap_canonical(&self, ct: &mut Ciphertext) -> Result<(), CkksError> {
        let canonical = self.ctx.canonical_scale(ct.level)?;
        let scale = ct.raw.scale()?;
        if scale != canonical && scales_close(scale, canonical) {
            ct.raw.set_scale(canonical)?;
        }
        Ok(())
    }

    fn check_level(&self, ct: &Ciphertext, needed: u32) -> Result<(), CkksError> {
        if ct.level.0 < needed {
            return Err(CkksError::LevelExhausted {
                needed,
                available: ct.level.0,
            });
        }
        Ok(())
    }

    /// Switches `ct` down to `level` without changing its scale (no precision cost).
    pub fn mod_switch_to(&self, ct: &Ciphertext, level: Level) -> Result<Ciphertext, CkksError> {
        if level > ct.level {
            return Err(CkksError::LevelTooHigh {
                from: ct.level.0,
                to: level.0,
            });
        }
        if level == ct.level {
            return ct.try_clone();
        }
        let info = self.ctx.level_info(level)?;
        let raw = self
            .ctx
            .inner
            .evaluator
            .mod_switch_to(&ct.raw, &info.parms_id)?;
        Ok(self.wrap(raw, level))
    }

    /// Rescales `ct` to the next level (for results of
    /// [`multiply_without_rescale`](Self::multiply_without_rescale)).
    pub fn rescale(&self, ct: &Ciphertext) -> Result<Ciphertext, CkksError> {
        self.check_level(ct, 1)?;
        let raw = self.ctx.inner.evaluator.rescale_to_next(&ct.raw)?;
        let mut out = self.wrap(raw, Level(ct.level.0 - 1));
        self.snap_canonical(&mut out)?;
        Ok(out)
    }

    /// Brings `ct` to `level` with exactly `scale`: a modulus switch if the scales already
    /// agree, otherwise a multiplication by 1 at the correcting scale and a rescale (which
    /// needs `level < ct.level()`).
    pub fn adjust_to(
        &self,
        ct: &Ciphertext,
        level: Level,
        scale: f64,
    ) -> Result<Ciphertext, CkksError> {
        self.adjust(ct, level, scale).map(|op| match op {
            Operand::Owned(c) => Ok(c),
            Operand::Borrowed(c) => c.try_clone(),
        })?
    }

    fn adjust<'a>(
        &self,
        ct: &'a Ciphertext,
        level: Level,
        scale: f64,
    ) -> Result<Operand<'a>, CkksError> {
        let current = ct.raw.scale()?;
        if level > ct.level {
            return Err(CkksError::LevelTooHigh {
                from: ct.level.0,
                to: level.0,
            });
        }
        if scales_close(current, scale) {
            if level == ct.level && current == scale {
                return Ok(Operand::Borrowed(ct));
            }
            let mut out = self.mod_switch_to(ct, level)?;
            out.raw.set_scale(scale)?;
            return Ok(Operand::Owned(out));
        }
        if level >= ct.level {
            return Err(CkksError::ScaleMismatch {
                level: level.0,
                left_log2: current.log2(),
                right_log2: scale.log2(),
            });
        }
        // Down to level + 1, multiply by 1 encoded at `scale · q / current`, rescale.
        let above = Level(level.0 + 1);
        let staged = if ct.level > above {
            Operand::Owned(self.mod_switch_to(ct, above)?)
        } else {
            Operand::Borrowed(ct)
        };
        let info = self.ctx.level_info(above)?;
        let q = info.rescale_prime.unwrap_or(1) as f64;
        let correction = scale * q / current;
        // The constant must be precise (≥ 2^20) and the product must fit the modulus.
        if correction < MIN_CORRECTION_SCALE
            || (current * correction).log2() >= (info.modulus_bits - 1) as f64
        {
            return Err(CkksError::ScaleMismatch {
                level: level.0,
                left_log2: current.log2(),
                right_log2: scale.log2(),
            });
        }
        let one = self.ctx.encode_scalar_raw(1.0, above, correction)?;
        let ev = &self.ctx.inner.evaluator;
        let product = ev.multiply_plain(&staged.raw, &one)?;
        let mut out = self.wrap(ev.rescale_to_next(&product)?, level);
        out.raw.set_scale(scale)?;
        Ok(Operand::Owned(out))
    }

    /// Aligns two operands for addition: same level and same scale.
    fn align<'a>(
        &self,
        a: &'a Ciphertext,
        b: &'a Ciphertext,
    ) -> Result<(Operand<'a>, Operand<'a>), CkksError> {
        let (sa, sb) = (a.raw.scale()?, b.raw.scale()?);
        if a.level == b.level {
            if sa == sb {
                return Ok((Operand::Borrowed(a), Operand::Borrowed(b)));
            }
            if scales_close(sa, sb) {
                return Ok((Operand::Borrowed(a), self.adjust(b, a.level, sa)?));
            }
            // Both move one level down to the canonical scale there.
            if a.level.0 == 0 {
                return Err(CkksError::ScaleMismatch {
                    level: 0,
                    left_log2: sa.log2(),
                    right_log2: sb.log2(),
                });
            }
            let target = Level(a.level.0 - 1);
            let scale = self.ctx.canonical_scale(target)?;
            return Ok((
                self.adjust(a, target, scale)?,
                self.adjust(b, target, scale)?,
            ));
        }
        if a.level < b.level {
            Ok((Operand::Borrowed(a), self.adjust(b, a.level, sa)?))
        } else {
            Ok((self.adjust(a, b.level, sb)?, Operand::Borrowed(b)))
        }
    }

    /// `a + b`.
    pub fn add(&self, a: &Ciphertext, b: &Ciphertext) -> Result<Ciphertext, CkksError> {
        let (x, y) = self.align(a, b)?;
        let raw = self.ctx.inner.evaluator.add(&x.raw, &y.raw)?;
        Ok(self.wrap(raw, x.level))
    }

    /// `acc += b` (in place when no alignment of `acc` is needed).
    pub fn add_assign(&self, acc: &mut Ciphertext, b: &Ciphertext) -> Result<(), CkksError> {
        let (sa, sb) = (acc.raw.scale()?, b.raw.scale()?);
        if acc.level <= b.level && (sa == sb || scales_close(sa, sb)) {
            let y = self.adjust(b, acc.level, sa)?;
            return Ok(self.ctx.inner.evaluator.add_inplace(&mut acc.raw, &y.raw)?);
        }
        *acc = self.add(acc, b)?;
        Ok(())
    }

    /// Sum of many ciphertexts (aligned to the lowest level among them).
    pub fn add_many(&self, cts: &[Ciphertext]) -> Result<Ciphertext, CkksError> {
        let Some(lowest) = cts.iter().min_by_key(|c| c.level) else {
            return Err(CkksError::InvalidParameters {
                reason: "sum of an empty list of ciphertexts".into(),
            });
        };
        let mut acc = lowest.try_clone()?;
        let mut skipped = false;
        for ct in cts {
            if !skipped && std::ptr::eq(ct, lowest) {
                skipped = true;
                continue;
            }
            self.add_assign(&mut acc, ct)?;
        }
        Ok(acc)
    }

    /// `a - b`.
    pub fn sub(&self, a: &Ciphertext, b: &Ciphertext) -> Result<Ciphertext, CkksError> {
        let (x, y) = self.align(a, b)?;
        let raw = self.ctx.inner.evaluator.sub(&x.raw, &y.raw)?;
        Ok(self.wrap(raw, x.level))
    }

    /// `-a`.
    pub fn negate(&self, a: &Ciphertext) -> Result<Ciphertext, CkksError> {
        let raw = self.ctx.inner.evaluator.negate(&a.raw)?;
        Ok(self.wrap(raw, a.level))
    }

    /// `a + p` slot-wise for a plaintext vector (encoded at `a`'s level and scale).
    pub fn add_plain(&self, a: &Ciphertext, values: &[f64]) -> Result<Ciphertext, CkksError> {
        let pt = self.ctx.encode_at(values, a.level, a.raw.scale()?)?;
        Ok(self.wrap(
            self.ctx.inner.evaluator.add_plain(&a.raw, &pt.raw)?,
            a.level,
        ))
    }

    /// `a - p` slot-wise for a plaintext vector.
    pub fn sub_plain(&self, a: &Ciphertext, values: &[f64]) -> Result<Ciphertext, CkksError> {
        let pt = self.ctx.encode_at(values, a.level, a.raw.scale()?)?;
        Ok(self.wrap(
            self.ctx.inner.evaluator.sub_plain(&a.raw, &pt.raw)?,
            a.level,
        ))
    }

    /// `a + c` in every slot.
    pub fn add_scalar(&self, a: &Ciphertext, c: f64) -> Result<Ciphertext, CkksError> {
        let pt = self.ctx.encode_scalar_raw(c, a.level, a.raw.scale()?)?;
        Ok(self.wrap(self.ctx.inner.evaluator.add_plain(&a.raw, &pt)?, a.level))
    }

    /// `a - c` in every slot.
    pub fn sub_scalar(&self, a: &Ciphertext, c: f64) -> Result<Ciphertext, CkksError> {
        self.add_scalar(a, -c)
    }

    fn relin(&self) -> Result<&RelinKeys, CkksError> {
        self.relin.as_ref().ok_or(CkksError::MissingRelinKeys)
    }

    /// Aligns levels for a product whose rescaled result should be canonical.
    fn align_for_product<'a>(
        &self,
        a: &'a Ciphertext,
        b: &'a Ciphertext,
    ) -> Result<(Operand<'a>, Operand<'a>), CkksError> {
        if a.level == b.level {
            return Ok((Operand::Borrowed(a), Operand::Borrowed(b)));
        }
        let (low, high, swapped) = if a.level < b.level {
            (a, b, false)
        } else {
            (b, a, true)
        };
        let t = low.level;
        let target = match (t.0.checked_sub(1), self.ctx.level_info(t)?.rescale_prime) {
            (Some(below), Some(q)) => {
                self.ctx.canonical_scale(Level(below))? * q as f64 / low.raw.scale()?
            }
            _ => high.raw.scale()?,
        };
        let high = self.adjust(high, t, target)?;
        Ok(if swapped {
            (high, Operand::Borrowed(low))
        } else {
            (Operand::Borrowed(low), high)
        })
    }

    /// `a · b`, relinearized, not rescaled: the result keeps the operands' (common) level
    /// and has scale `scale(a) · scale(b)`. Rescale it with [`rescale`](Self::rescale).
    pub fn multiply_without_rescale(
        &self,
        a: &Ciphertext,
        b: &Ciphertext,
    ) -> Result<Ciphertext, CkksError> {
        let relin = self.relin()?;
        let (x, y) = self.align_for_product(a, b)?;
        let ev = &self.ctx.inner.evaluator;
        let mut raw = if std::ptr::eq(a, b) {
            ev.square(&x.raw)?
        } else {
            ev.multiply(&x.raw, &y.raw)?
        };
        ev.relinearize_inplace(&mut raw, &relin.raw)?;
        Ok(self.wrap(raw, x.level))
    }

    /// `a · b`, relinearized and rescaled (one level).
    pub fn multiply(&self, a: &Ciphertext, b: &Ciphertext) -> Result<Ciphertext, CkksError> {
        self.check_level(a, 1)?;
        self.check_level(b, 1)?;
        let product = self.multiply_without_rescale(a, b)?;
        self.rescale(&product)
    }

    /// `a²`, relinearized and rescaled (one level).
    pub fn square(&self, a: &Ciphertext) -> Result<Ciphertext, CkksError> {
        self.multiply(a, a)
    }

    /// The plaintext scale that makes `a · p` land on the canonical scale one level down.
    fn product_scale(&self, a: &Ciphertext) -> Result<f64, CkksError> {
        self.check_level(a, 1)?;
        let q = self.ctx.level_info(a.level)?.rescale_prime.unwrap_or(1) as f64;
        Ok(self.ctx.canonical_scale(Level(a.level.0 - 1))? * q / a.raw.scale()?)
    }

    /// `a · p` slot-wise for a plaintext vector, rescaled (one level).
    pub fn multiply_plain(&self, a: &Ciphertext, values: &[f64]) -> Result<Ciphertext, CkksError> {
        let scale = self.product_scale(a)?;
        if values.iter().all(|v| *v == 0.0) {
            return Err(CkksError::TransparentResult);
        }
        let pt = self.ctx.encode_at(values, a.level, scale)?;
        let ev = &self.ctx.inner.evaluator;
        let product = ev.multiply_plain(&a.raw, &pt.raw)?;
        let mut out = self.wrap(ev.rescale_to_next(&product)?, Level(a.level.0 - 1));
        self.snap_canonical(&mut out)?;
        Ok(out)
    }

    /// `a · p` slot-wise for a plaintext vector, **not** rescaled: the result keeps `a`'s
    /// level, with the scale that a later [`rescale`](Self::rescale) brings to the canonical
    /// scale one level down. Products of ciphertexts of one level and scale all get the same
    /// scale, so they can be summed first and rescaled once (one rescale for many products).
    pub fn multiply_plain_without_rescale(
        &self,
        a: &Ciphertext,
        values: &[f64],
    ) -> Result<Ciphertext, CkksError> {
        let scale = self.product_scale(a)?;
        if values.iter().all(|v| *v == 0.0) {
            return Err(CkksError::TransparentResult);
        }
        let pt = self.ctx.encode_at(values, a.level, scale)?;
        let product = self.ctx.inner.evaluator.multiply_plain(&a.raw, &pt.raw)?;
        Ok(self.wrap(product, a.level))
    }

    /// Encodes `values` as the plaintext operand of
    /// [`multiply_plaintext_without_rescale`](Self::multiply_plaintext_without_rescale) with
    /// ciphertexts of `like`'s level and scale (every fresh ciphertext of a parameter set
    /// shares them), so that a circuit can encode its constant weights once and reuse them.
    ///
    /// # Errors
    /// When `like` has no level to spend, the values are all zero or too large.
    pub fn encode_operand(
        &self,
        values: &[f64],
        like: &Ciphertext,
    ) -> Result<Plaintext, CkksError> {
        let scale = self.product_scale(like)?;
        if values.iter().all(|v| *v == 0.0) {
            return Err(CkksError::TransparentResult);
        }
        self.ctx.encode_at(values, like.level, scale)
    }

    /// `a · p` slot-wise for a plaintext from [`encode_operand`](Self::encode_operand),
    /// **not** rescaled (as [`multiply_plain_without_rescale`](Self::multiply_plain_without_rescale),
    /// without encoding the operand again).
    ///
    /// # Errors
    /// [`CkksError::ScaleMismatch`] when `p` was encoded for another level or scale.
    pub fn multiply_plaintext_without_rescale(
        &self,
        a: &Ciphertext,
        p: &Plaintext,
    ) -> Result<Ciphertext, CkksError> {
        let expected = self.product_scale(a)?;
        let got = p.scale()?;
        if p.level() != a.level || (got / expected - 1.0).abs() > 1e-9 {
            return Err(CkksError::ScaleMismatch {
                level: a.level.0,
                left_log2: expected.log2(),
                right_log2: got.log2(),
            });
        }
        let product = self.ctx.inner.evaluator.multiply_plain(&a.raw, &p.raw)?;
        Ok(self.wrap(product, a.level))
    }

    /// `a · c` in every slot, rescaled (one level).
    pub fn multiply_scalar(&self, a: &Ciphertext, c: f64) -> Result<Ciphertext, CkksError> {
        let scale = self.product_scale(a)?;
        if c == 0.0 {
            return Err(CkksError::TransparentResult);
        }
        let pt = self.ctx.encode_scalar_raw(c, a.level, scale)?;
        let ev = &self.ctx.inner.evaluator;
        let product = ev.multiply_plain(&a.raw, &pt)?;
        let mut out = self.wrap(ev.rescale_to_next(&product)?, Level(a.level.0 - 1));
        self.snap_canonical(&mut out)?;
        Ok(out)
    }

    /// Rotates the slots left by `steps` (negative: right). Needs the Galois key for it.
    pub fn rotate(&self, a: &Ciphertext, steps: i64) -> Result<Ciphertext, CkksError> {
        let slots = self.ctx.slots();
        let step = normalize_step(steps, slots)?;
        if step == 0 {
            return a.try_clone();
        }
        let keys = match &self.galois {
            Some(k) if k.steps().binary_search(&step).is_ok() => k,
            _ => {
                return Err(CkksError::MissingGaloisKeys {
                    steps: vec![steps as i32],
                });
            }
        };
        let raw = self.ctx.inner.evaluator.rotate(&a.raw, step, &keys.raw)?;
        Ok(self.wrap(raw, a.level))
    }

    /// Sums `count` consecutive slots (a power of two): slot `i` of the result holds
    /// `Σ_{j<count} a[i+j]` (cyclically), so slot 0 holds the sum of slots `0..count`.
    /// Needs Galois keys for [`steps_for_sum`]`(count)`; costs no level.
    pub fn sum_slots(&self, a: &Ciphertext, count: usize) -> Result<Ciphertext, CkksError> {
        let slots = self.ctx.slots();
        if count == 0 || count > slots || !count.is_power_of_two() {
            return Err(CkksError::InvalidSlotCount { count, slots });
        }
        let steps = steps_for_sum(count);
        let missing: Vec<i32> = steps
            .iter()
            .copied()
            .filter(|s| {
                self.galois
                    .as_ref()
                    .is_none_or(|k| k.steps().binary_search(s).is_err())
            })
            .collect();
        if !missing.is_empty() {
            return Err(CkksError::MissingGaloisKeys { steps: missing });
        }
        let mut acc = a.try_clone()?;
        for step in steps.iter().rev() {
            let rotated = self.rotate(&acc, *step as i64)?;
            self.ctx
                .inner
                .evaluator
                .add_inplace(&mut acc.raw, &rotated.raw)?;
        }
        Ok(acc)
    }

    /// Inner product of the encrypted vector with a plaintext vector: slot 0 of the result
    /// holds `Σ a[i]·w[i]`. One level; needs Galois keys for the sum over
    /// `w.len().next_power_of_two()` slots.
    pub fn inner_product(&self, a: &Ciphertext, weights: &[f64]) -> Result<Ciphertext, CkksError> {
        let product = self.multiply_plain(a, weights)?;
        self.sum_slots(&product, weights.len().next_power_of_two())
    }
}
