//! Named, versioned CKKS parameter sets, checked against the HE-standard 128-bit bound.
//!
//! A parameter set fixes the ring degree `n`, the coefficient-modulus chain and the default
//! scale. The chain is `[q0, q1, ..., qL, p]`: `q0` (`first_bits`) holds the final result,
//! `q1..qL` (`scale_bits` each) are dropped one per rescale, and `p` (`special_bits`) is the
//! key-switching prime. The primes are chosen deterministically by this module (algorithm
//! version 1, part of every id), not by SEAL's defaults: each rescale prime is the prime
//! `≡ 1 (mod 2n)` closest to `s_l² / Δ`, where `s_l` is the canonical scale at level `l` and
//! `Δ = 2^scale_bits`. The canonical scales `s_{l-1} = s_l² / q_l` then stay within about
//! one part in a million of `Δ` at every level, so a product of two fresh ciphertexts, or of a
//! ciphertext and a plaintext encoded at the canonical scale, lands exactly on the next
//! level's canonical scale (the "flexible" scaling of OpenFHE), and additions never need a
//! scale correction.
//!
//! Precision note: a rotation (key switch) adds an error of about 7e-7 in absolute slot units
//! at n = 8192, nearly the same in every slot and for every ciphertext under one key (measured
//! by decrypting rotated encryptions of zero). It comes from SEAL's key switching, whose RNS
//! digits are not centred: the digit of the 60-bit `q0` times the key's error, divided by the
//! 60-bit special prime, is O(1) per coefficient. It scales with `q0 / p`; we keep `q0` at 60
//! bits because it bounds the magnitude of final results (see
//! [`ParameterSet::max_result_magnitude`]).

use crate::error::CkksError;

/// Largest `log2(q)` (including the special prime) for 128-bit classical security with a
/// ternary secret, from the Homomorphic Encryption Standard (Albrecht et al. 2018, table 1),
/// which is also SEAL's `CoeffModulus::MaxBitCount(n, sec_level_type::tc128)`.
pub fn max_log_q_128(degree: usize) -> Option<u32> {
    match degree {
        1024 => Some(27),
        2048 => Some(54),
        4096 => Some(109),
        8192 => Some(218),
        16384 => Some(438),
        32768 => Some(881),
        _ => None,
    }
}

/// The version of the prime-selection algorithm; bump it if [`ParameterSet::primes`] changes.
pub const PRIME_ALGORITHM_VERSION: u32 = 1;

/// A CKKS parameter set. Use a named constant or [`ParameterSetBuilder`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ParameterSet {
    degree: usize,
    first_bits: u32,
    scale_bits: u32,
    levels: u32,
    special_bits: u32,
}

impl ParameterSet {
    /// n = 4096, 1 rescale level at a 29-bit scale, log q = 39 + 30 + 40 = 109 ≤ 109:
    /// 128-bit secure (the prime nearest 2^29 that is ≡ 1 mod 2n has 30 bits, so the first
    /// prime has 39). The daily lane's set (`seer-daily`): one plaintext product per result,
    /// results below 2^9 in magnitude, a fresh ciphertext of about 131 kB (86 kB compressed).
    pub const N4096_L1_SEC128: ParameterSet = ParameterSet::raw(4096, 39, 29, 1, 40);
    /// n = 8192, 2 rescale levels at a 40-bit scale, log q = 200 ≤ 218: 128-bit secure.
    pub const N8192_L2_SEC128: ParameterSet = ParameterSet::raw(8192, 60, 40, 2, 60);
    /// n = 16384, 7 rescale levels at a 40-bit scale, log q = 400 ≤ 438: 128-bit secure.
    pub const N16384_L7_SEC128: ParameterSet = ParameterSet::raw(16384, 60, 40, 7, 60);
    /// n = 32768, 19 rescale levels at a 40-bit scale, log q = 880 ≤ 881: 128-bit secure.
    pub const N32768_L19_SEC128: ParameterSet = ParameterSet::raw(32768, 60, 40, 19, 60);

    /// The named sets, smallest first.
    pub const NAMED: [ParameterSet; 4] = [
        Self::N4096_L1_SEC128,
        Self::N8192_L2_SEC128,
        Self::N16384_L7_SEC128,
        Self::N32768_L19_SEC128,
    ];

    const fn raw(
        degree: usize,
        first_bits: u32,
        scale_bits: u32,
        levels: u32,
        special_bits: u32,
    ) -> Self {
        Self {
            degree,
            first_bits,
            scale_bits,
            levels,
            special_bits,
        }
    }

    /// The stable identifier carried by every serialized object made under this set,
    /// e.g. `ckks1-n8192-q60-s40x2-p60`.
    pub fn id(&self) -> String {
        format!(
            "ckks{}-n{}-q{}-s{}x{}-p{}",
            PRIME_ALGORITHM_VERSION,
            self.degree,
            self.first_bits,
            self.scale_bits,
            self.levels,
            self.special_bits
        )
    }

    /// Looks a set up by its [`id`](Self::id) (any valid id, not only the named sets).
    pub fn try_from_id(id: &str) -> Result<Self, CkksError> {
        let bad = || CkksError::InvalidParameters {
            reason: format!("unknown parameter-set id {id:?}"),
        };
        let rest = id
            .strip_prefix(&format!("ckks{PRIME_ALGORITHM_VERSION}-n"))
            .ok_or_else(bad)?;
        let mut parts = rest.split('-');
        let degree = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
        let first_bits = parts
            .next()
            .and_then(|p| p.strip_prefix('q'))
            .and_then(|p| p.parse().ok())
            .ok_or_else(bad)?;
        let (scale_bits, levels) = parts
            .next()
            .and_then(|p| p.strip_prefix('s'))
            .and_then(|p| p.split_once('x'))
            .and_then(|(s, l)| Some((s.parse().ok()?, l.parse().ok()?)))
            .ok_or_else(bad)?;
        let special_bits = parts
            .next()
            .and_then(|p| p.strip_prefix('p'))
            .and_then(|p| p.parse().ok())
            .ok_or_else(bad)?;
        if parts.next().is_some() {
            return Err(bad());
        }
        let set = Self::raw(degree, first_bits, scale_bits, levels, special_bits);
        set.validate()?;
        Ok(set)
    }

    /// Ring degree `n`.
    pub fn degree(&self) -> usize {
        self.degree
    }

    /// Number of slots (`n / 2`).
    pub fn slots(&self) -> usize {
        self.degree / 2
    }

    /// Number of rescale levels of a fresh ciphertext.
    pub fn levels(&self) -> u32 {
        self.levels
    }

    /// Bits of the default scale `Δ`.
    pub fn scale_bits(&self) -> u32 {
        self.scale_bits
    }

    /// Bits of the first prime `q0`, which holds final results.
    pub fn first_bits(&self) -> u32 {
        self.first_bits
    }

    /// Bits of the special (key-switching) prime.
    pub fn special_bits(&self) -> u32 {
        self.special_bits
    }

    /// The nominal `log2(q)` in bits: first + levels × scale + special.
    pub fn nominal_log_q(&self) -> u32 {
        self.first_bits + self.levels * self.scale_bits + self.special_bits
    }

    /// Largest absolute slot value a result may have at level 0 with the canonical scale
    /// (about `2^(first_bits - scale_bits - 1)`), beyond which it wraps around `q0`.
    pub fn max_result_magnitude(&self) -> f64 {
        2f64.powi(self.first_bits as i32 - self.scale_bits as i32 - 1)
    }

    /// Checks the set: a supported degree, sane bit sizes, and the 128-bit bound.
    pub fn validate(&self) -> Result<(), CkksError> {
        let invalid = |reason: String| Err(CkksError::InvalidParameters { reason });
        let Some(max_bits) = max_log_q_128(self.degree) else {
            return invalid(format!(
                "ring degree {} is not one of 1024, 2048, 4096, 8192, 16384, 32768",
                self.degree
            ));
        };
        if !(20..=60).contains(&self.scale_bits) {
            return invalid(format!(
                "scale of {} bits is outside 20..=60",
                self.scale_bits
            ));
        }
        if !(self.scale_bits..=60).contains(&self.first_bits) {
            return invalid(format!(
                "first prime of {} bits must be between the scale ({} bits) and 60 bits",
                self.first_bits, self.scale_bits
            ));
        }
        if !(self.first_bits..=60).contains(&self.special_bits) {
            return invalid(format!(
                "special prime of {} bits must be between the first prime ({} bits) and 60 bits",
                self.special_bits, self.first_bits
            ));
        }
        if self.levels == 0 || self.levels > 60 {
            return invalid(format!("{} levels is outside 1..=60", self.levels));
        }
        let total = self.nominal_log_q();
        if total > max_bits {
            return Err(CkksError::InsecureParameters {
                degree: self.degree,
                total_bits: total,
                max_bits,
            });
        }
        Ok(())
    }

    /// The coefficient-modulus primes `[q0, q1, ..., qL, p]` (see the module docs).
    pub fn primes(&self) -> Result<Vec<u64>, CkksError> {
        self.validate()?;
        let two_n = 2 * self.degree as u64;
        let mut used: Vec<u64> = Vec::new();
        // q0 and p: the largest primes ≡ 1 (mod 2n) below 2^bits, distinct.
        let special = largest_prime_below(self.special_bits, two_n, &used)?;
        used.push(special);
        let first = largest_prime_below(self.first_bits, two_n, &used)?;
        used.push(first);
        let delta = 2f64.powi(self.scale_bits as i32);
        let mut scale = delta;
        let mut middle = Vec::with_capacity(self.levels as usize);
        for _ in 0..self.levels {
            let target = scale * scale / delta;
            let q = closest_prime(target, two_n, &used).ok_or_else(|| {
                CkksError::InvalidParameters {
                    reason: format!("no prime ≡ 1 mod {two_n} near {target:e}"),
                }
            })?;
            used.push(q);
            middle.push(q);
            scale = scale * scale / q as f64;
        }
        // `middle` is in rescale order (q_L first); the chain lists q1..qL.
        middle.reverse();
        let mut primes = Vec::with_capacity(self.levels as usize + 2);
        primes.push(first);
        primes.extend(middle);
        primes.push(special);
        // SEAL bounds the bit length of the primes' product, and a rescale prime near 2^s may
        // lie just above it: check what SEAL will check, with the primes actually chosen.
        let log2_q: f64 = primes.iter().map(|p| (*p as f64).log2()).sum();
        let total_bits = log2_q.floor() as u32 + 1;
        let max_bits = max_log_q_128(self.degree).unwrap_or(0);
        if total_bits > max_bits {
            return Err(CkksError::InsecureParameters {
                degree: self.degree,
                total_bits,
                max_bits,
            });
        }
        Ok(primes)
    }

    /// Canonical scale at each level `0..=levels` (index = level), given the primes.
    pub(crate) fn canonical_scales(&self, primes: &[u64]) -> Vec<f64> {
        let levels = self.levels as usize;
        let mut scales = vec![0.0; levels + 1];
        scales[levels] = 2f64.powi(self.scale_bits as i32);
        for l in (1..=levels).rev() {
            // Same operation order as SEAL's multiply then rescale_to_next.
            scales[l - 1] = scales[l] * scales[l] / primes[l] as f64;
        }
        scales
    }
}

impl std::fmt::Display for ParameterSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.id())
    }
}

/// Builds a custom [`ParameterSet`]; [`build`](Self::build) refuses insecure or invalid ones.
#[derive(Debug, Clone)]
pub struct ParameterSetBuilder {
    set: ParameterSet,
}

impl ParameterSetBuilder {
    /// Starts from ring degree `n` with a 60-bit first and special prime, a 40-bit scale and
    /// one level.
    pub fn new(degree: usize) -> Self {
        Self {
            set: ParameterSet::raw(degree, 60, 40, 1, 60),
        }
    }

    /// Number of rescale levels.
    pub fn levels(mut self, levels: u32) -> Self {
        self.set.levels = levels;
        self
    }

    /// Bits of the scale and of each rescale prime.
    pub fn scale_bits(mut self, bits: u32) -> Self {
        self.set.scale_bits = bits;
        self
    }

    /// Bits of the first prime (the precision left for final results).
    pub fn first_bits(mut self, bits: u32) -> Self {
        self.set.first_bits = bits;
        self
    }

    /// Bits of the special key-switching prime.
    pub fn special_bits(mut self, bits: u32) -> Self {
        self.set.special_bits = bits;
        self
    }

    /// Validates and returns the set.
    pub fn build(self) -> Result<ParameterSet, CkksError> {
        self.set.validate()?;
        Ok(self.set)
    }
}

fn mul_mod(a: u64, b: u64, m: u64) -> u64 {
    ((a as u128 * b as u128) % m as u128) as u64
}

fn pow_mod(mut base: u64, mut exp: u64, m: u64) -> u64 {
    let mut acc = 1u64 % m;
    base %= m;
    while exp > 0 {
        if exp & 1 == 1 {
            acc = mul_mod(acc, base, m);
        }
        base = mul_mod(base, base, m);
        exp >>= 1;
    }
    acc
}

/// Deterministic Miller–Rabin for all 64-bit integers (the first 12 primes as witnesses).
pub(crate) fn is_prime(n: u64) -> bool {
    const WITNESSES: [u64; 12] = [2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37];
    if n < 2 {
        return false;
    }
    for p in WITNESSES {
        if n.is_multiple_of(p) {
            return n == p;
        }
    }
    let mut d = n - 1;
    let mut r = 0;
    while d.is_multiple_of(2) {
        d /= 2;
        r += 1;
    }
    'witness: for a in WITNESSES {
        let mut x = pow_mod(a, d, n);
        if x == 1 || x == n - 1 {
            continue;
        }
        for _ in 1..r {
            x = mul_mod(x, x, n);
            if x == n - 1 {
                continue 'witness;
            }
        }
        return false;
    }
    true
}

fn largest_prime_below(bits: u32, two_n: u64, used: &[u64]) -> Result<u64, CkksError> {
    let top = 1u64 << bits;
    // Largest candidate ≡ 1 (mod 2n) below 2^bits.
    let mut candidate = top - (top - 1) % two_n;
    if candidate >= top {
        candidate -= two_n;
    }
    while candidate > top / 2 {
        if is_prime(candidate) && !used.contains(&candidate) {
            return Ok(candidate);
        }
        candidate -= two_n;
    }
    Err(CkksError::InvalidParameters {
        reason: format!("no {bits}-bit prime ≡ 1 mod {two_n}"),
    })
}

fn closest_prime(target: f64, two_n: u64, used: &[u64]) -> Option<u64> {
    let t = target.round() as u64;
    // Nearest candidate ≡ 1 (mod 2n) at or below the target, then search outwards.
    let base = t - (t.wrapping_sub(1)) % two_n;
    for k in 0..100_000u64 {
        let below = base.checked_sub(k * two_n)?;
        let above = base + (k + 1) * two_n;
        let (near, far) = if t.abs_diff(below) <= above.abs_diff(t) {
            (below, above)
        } else {
            (above, below)
        };
        for c in [near, far] {
            if is_prime(c) && !used.contains(&c) {
                return Some(c);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn miller_rabin_agrees_with_trial_division() {
        fn trial(n: u64) -> bool {
            n >= 2
                && (2..)
                    .take_while(|d| d * d <= n)
                    .all(|d| !n.is_multiple_of(d))
        }
        for n in 0..5000 {
            assert_eq!(is_prime(n), trial(n), "n = {n}");
        }
        // Known primes and a Carmichael number.
        assert!(is_prime((1u64 << 61) - 1)); // Mersenne prime M61
        assert!(!is_prime(561));
        assert!(!is_prime(3_215_031_751)); // strong pseudoprime to bases 2, 3, 5, 7
    }

    #[test]
    fn named_sets_are_secure_and_their_primes_fit() {
        for set in ParameterSet::NAMED {
            set.validate().unwrap();
            let primes = set.primes().unwrap();
            assert_eq!(primes.len(), set.levels() as usize + 2);
            let two_n = 2 * set.degree() as u64;
            let mut sorted = primes.clone();
            sorted.sort_unstable();
            sorted.dedup();
            assert_eq!(sorted.len(), primes.len(), "primes must be distinct");
            let mut log_q = 0.0;
            for p in &primes {
                assert!(is_prime(*p));
                assert_eq!(p % two_n, 1);
                log_q += (*p as f64).log2();
            }
            // SEAL's bound is on the bit length of the product.
            let bits = log_q.floor() as u32 + 1;
            assert!(
                bits <= max_log_q_128(set.degree()).unwrap(),
                "{set}: {log_q}"
            );
            // And SEAL accepts the set.
            crate::CkksContext::new(set).unwrap();
            // Canonical scales stay close to 2^scale_bits at every level.
            for s in set.canonical_scales(&primes) {
                assert!(
                    (s.log2() - f64::from(set.scale_bits())).abs() < 1e-4,
                    "{set}: scale 2^{}",
                    s.log2()
                );
            }
        }
    }

    #[test]
    fn insecure_and_invalid_sets_are_refused() {
        let err = ParameterSetBuilder::new(8192)
            .levels(3)
            .build()
            .unwrap_err();
        assert!(matches!(
            err,
            CkksError::InsecureParameters {
                total_bits: 240,
                max_bits: 218,
                ..
            }
        ));
        assert!(err.to_string().contains("240"));
        assert!(ParameterSetBuilder::new(32768).levels(20).build().is_err());
        assert!(ParameterSetBuilder::new(16384).levels(8).build().is_err());
        assert!(ParameterSetBuilder::new(16384).levels(7).build().is_ok());
        assert!(ParameterSetBuilder::new(10000).build().is_err());
        assert!(
            ParameterSetBuilder::new(8192)
                .scale_bits(61)
                .build()
                .is_err()
        );
        assert!(ParameterSetBuilder::new(8192).levels(0).build().is_err());
    }

    #[test]
    fn ids_round_trip() {
        for set in ParameterSet::NAMED {
            assert_eq!(ParameterSet::try_from_id(&set.id()).unwrap(), set);
        }
        assert_eq!(
            ParameterSet::N8192_L2_SEC128.id(),
            "ckks1-n8192-q60-s40x2-p60"
        );
        assert!(ParameterSet::try_from_id("ckks1-n8192-q60-s40x3-p60").is_err()); // insecure
        assert!(ParameterSet::try_from_id("garbage").is_err());
        assert!(ParameterSet::try_from_id("ckks1-n8192-q60-s40x2-p60-x").is_err());
    }
}
