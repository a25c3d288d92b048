//! SEAL's serialization format, parsed and checked in safe Rust before SEAL sees a byte.
//!
//! SEAL 4.0's loaders trust the sizes they read. Fuzzing found two consequences (the
//! reproducers are in `fuzz/crashes/`):
//! - a ciphertext that declares **zero polynomials** but carries one polynomial's worth of
//!   data is taken for a *seeded* ciphertext: SEAL resizes its buffer to the declared size
//!   (zero) and then expands the seed into the second polynomial — a write past the end of the
//!   buffer (SIGSEGV in `DynArray::load_members`'s `memset`). Any meter could send one.
//! - a key-switching key frame that declares 2⁶⁴ − 1 keys makes SEAL `reserve` that many, and
//!   the C++ exception escapes the C API and aborts the process.
//!
//! So SEER never hands SEAL bytes it has not parsed itself. [`check`] walks SEAL's grammar
//! for the expected object — every header (magic, size, version 4.0, compression), every
//! count (polynomials, degree, primes, key dimensions), every parameter id against the
//! context's modulus chain, the seeded form only where SEAL writes it, the Galois elements
//! against the declared rotation steps — requires that every byte is consumed, and returns
//! the bytes in SEAL's *uncompressed* form: zstd payloads are decompressed first (by the zstd
//! library inside SEAL's build, through a bounded stream in `ffi`: at most the object's size
//! limit comes out, and the frame's window is capped), so SEAL parses exactly the bytes
//! checked here, never a stream it decompresses itself. SEAL then applies its own validation
//! (coefficient ranges, scale) as before.
//!
//! The grammar (all integers little-endian; `header` is SEAL's 16-byte `SEALHeader`: magic
//! `0xA15E`, header size 16, version major 4, minor 0, compression, reserved 0, total size):
//!
//! ```text
//! ciphertext := header parms_id[32] ntt[1] size u64 degree u64 primes u64 scale f64
//!               correction u64 dynarray [prng]
//! dynarray   := header count u64 count × u64
//! prng       := header type[1] seed[64]          (only when count = degree × primes)
//! public key := ciphertext                        (at the key level)
//! secret key := header parms_id[32] coeff_count u64 scale f64 dynarray
//! kswitch    := header parms_id[32] dim1 u64 (dim2 u64 dim2 × ciphertext)*dim1
//! ```

use std::borrow::Cow;

use zeroize::Zeroize;

use crate::context::CkksContext;
use crate::error::CkksError;
use crate::ffi::{self, COMPR_NONE, COMPR_ZSTD, Inflate, ParmsId};
use crate::serialize::ObjectKind;

/// SEAL's header magic.
const SEAL_MAGIC: u16 = 0xA15E;
/// SEAL's header length.
const SEAL_HEADER_LEN: usize = 16;
/// The SEAL version this build links and the only one it reads (SEAL would also accept the
/// older 3.x layouts, which take other code paths).
const SEAL_VERSION: (u8, u8) = (4, 0);
/// `prng_type::blake2xb` and `prng_type::shake256`.
const PRNG_TYPES: [u8; 2] = [1, 2];
const PRNG_SEED_LEN: usize = 64;
/// CKKS ciphertexts always have two polynomials once relinearized, and SEER never serializes
/// any other kind; keys are two-polynomial ciphertexts too.
const POLYS: u64 = 2;

/// Bytes in SEAL's uncompressed serialization that [`check`] has parsed in full against a
/// context. The only input the `ffi` loaders accept.
pub(crate) struct Checked<'a> {
    bytes: Cow<'a, [u8]>,
    /// Secret-key material: a decompressed copy is wiped when dropped.
    secret: bool,
}

impl Checked<'_> {
    /// The checked bytes (SEAL's uncompressed form).
    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }
}

impl Drop for Checked<'_> {
    fn drop(&mut self) {
        if self.secret
            && let Cow::Owned(bytes) = &mut self.bytes
        {
            bytes.zeroize();
        }
    }
}

/// Checks `payload` (a SEAL serialization, compressed or not) as an object of `kind` under
/// `ctx`, decompressing at most `limit` bytes. `galois_steps` are the normalized rotation
/// steps a Galois-key frame declares (ignored for other kinds).
pub(crate) fn check<'a>(
    ctx: &CkksContext,
    kind: ObjectKind,
    galois_steps: &[i32],
    payload: &'a [u8],
    limit: usize,
) -> Result<Checked<'a>, CkksError> {
    let name = kind.name();
    let secret = kind == ObjectKind::SecretKey;
    let mut outer = Cursor::new(payload, name);
    let header = outer.header("SEAL header")?;
    if header.size != payload.len() as u64 {
        return Err(outer.bad(format!(
            "SEAL header declares {} bytes, payload has {}",
            header.size,
            payload.len()
        )));
    }
    let (body, decompressed) = match header.compression {
        COMPR_NONE => (Cow::Borrowed(outer.rest()), false),
        COMPR_ZSTD => (
            Cow::Owned(inflate(name, outer.rest(), limit, secret)?),
            true,
        ),
        other => {
            return Err(outer.bad(format!("unsupported SEAL compression mode {other}")));
        }
    };
    // From here on an error must not leak a decompressed secret key either.
    let mut body = Wiped {
        bytes: body,
        secret,
    };
    let shape = Shape::new(ctx);
    let mut r = Cursor::new(&body.bytes, name);
    match kind {
        ObjectKind::Ciphertext => shape.ciphertext(&mut r, Placement::Data, false)?,
        ObjectKind::PublicKey => shape.ciphertext(&mut r, Placement::Key, true)?,
        ObjectKind::SecretKey => shape.secret_key(&mut r)?,
        ObjectKind::RelinKeys => shape.kswitch_keys(&mut r, &KeySlots::Relin)?,
        ObjectKind::GaloisKeys => {
            let slots = shape.galois_slots(galois_steps)?;
            shape.kswitch_keys(&mut r, &KeySlots::Galois(slots))?;
        }
    }
    r.finish()?;
    if !decompressed {
        return Ok(Checked {
            bytes: Cow::Borrowed(payload),
            secret,
        });
    }
    let body = std::mem::take(&mut body.bytes);
    let mut out = Vec::with_capacity(SEAL_HEADER_LEN + body.len());
    write_header(&mut out, COMPR_NONE, (SEAL_HEADER_LEN + body.len()) as u64);
    out.extend_from_slice(&body);
    if let Cow::Owned(mut b) = body
        && secret
    {
        b.zeroize();
    }
    Ok(Checked {
        bytes: Cow::Owned(out),
        secret,
    })
}

/// A decompressed body that is wiped on drop when it holds a secret key.
struct Wiped<'a> {
    bytes: Cow<'a, [u8]>,
    secret: bool,
}

impl Drop for Wiped<'_> {
    fn drop(&mut self) {
        if self.secret
            && let Cow::Owned(bytes) = &mut self.bytes
        {
            bytes.zeroize();
        }
    }
}

/// Writes a SEAL header (version 4.0).
fn write_header(out: &mut Vec<u8>, compression: u8, size: u64) {
    out.extend_from_slice(&SEAL_MAGIC.to_le_bytes());
    out.push(SEAL_HEADER_LEN as u8);
    out.push(SEAL_VERSION.0);
    out.push(SEAL_VERSION.1);
    out.push(compression);
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&size.to_le_bytes());
}

/// Decompresses one zstd frame of at most `limit` bytes that spans all of `compressed`.
fn inflate(
    kind: &'static str,
    compressed: &[u8],
    limit: usize,
    secret: bool,
) -> Result<Vec<u8>, CkksError> {
    let bad = |reason: String| CkksError::Malformed { kind, reason };
    ffi::zstd_decompress(compressed, limit, secret).map_err(|error| match error {
        Inflate::TooLarge(size) => CkksError::TooLarge { kind, size, limit },
        Inflate::Corrupt(name) => bad(format!("zstd data: {name}")),
        Inflate::Truncated => bad("zstd data ends inside its frame".into()),
        Inflate::Trailing(n) => bad(format!("{n} bytes follow the zstd frame")),
    })
}

/// One parsed SEAL header.
struct Header {
    compression: u8,
    size: u64,
}

/// A bounds-checked reader over SEAL bytes.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
    kind: &'static str,
}

impl<'a> Cursor<'a> {
    fn new(bytes: &'a [u8], kind: &'static str) -> Self {
        Self {
            bytes,
            pos: 0,
            kind,
        }
    }

    fn bad(&self, reason: String) -> CkksError {
        CkksError::Malformed {
            kind: self.kind,
            reason,
        }
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], CkksError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|e| *e <= self.bytes.len())
            .ok_or_else(|| {
                self.bad(format!(
                    "SEAL data ends inside {what} (byte {} of {}, {n} needed)",
                    self.pos,
                    self.bytes.len()
                ))
            })?;
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], CkksError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N, what)?);
        Ok(a)
    }

    fn u8(&mut self, what: &str) -> Result<u8, CkksError> {
        Ok(self.take(1, what)?[0])
    }

    fn u64(&mut self, what: &str) -> Result<u64, CkksError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    fn f64(&mut self, what: &str) -> Result<f64, CkksError> {
        Ok(f64::from_le_bytes(self.array(what)?))
    }

    fn parms_id(&mut self) -> Result<ParmsId, CkksError> {
        let mut id = [0u64; 4];
        for word in &mut id {
            *word = self.u64("parameter id")?;
        }
        Ok(id)
    }

    fn rest(&mut self) -> &'a [u8] {
        let s = &self.bytes[self.pos..];
        self.pos = self.bytes.len();
        s
    }

    fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    /// Reads and checks a SEAL header (any compression mode; callers check it).
    fn header(&mut self, what: &str) -> Result<Header, CkksError> {
        let start = self.pos;
        let magic = u16::from_le_bytes(self.array(what)?);
        let [header_len, major, minor, compression] = self.array(what)?;
        let reserved = u16::from_le_bytes(self.array(what)?);
        let size = self.u64(what)?;
        if magic != SEAL_MAGIC || usize::from(header_len) != SEAL_HEADER_LEN {
            return Err(self.bad(format!("{what} at byte {start} is not a SEAL header")));
        }
        if (major, minor) != SEAL_VERSION {
            return Err(self.bad(format!(
                "{what} is SEAL {major}.{minor}; only {}.{} is read",
                SEAL_VERSION.0, SEAL_VERSION.1
            )));
        }
        if reserved != 0 {
            return Err(self.bad(format!("{what} has reserved bits set")));
        }
        Ok(Header { compression, size })
    }

    /// Reads the header of an object nested in a larger one: uncompressed, and its declared
    /// size must be exactly what `body_len` says follows.
    fn nested_header(&mut self, what: &str, body_len: u64) -> Result<(), CkksError> {
        let header = self.header(what)?;
        if header.compression != COMPR_NONE {
            return Err(self.bad(format!("{what} is compressed inside a SEAL object")));
        }
        let expected = body_len.checked_add(SEAL_HEADER_LEN as u64);
        if expected != Some(header.size) {
            return Err(self.bad(format!(
                "{what} declares {} bytes, its contents take {}",
                header.size,
                expected.map_or_else(|| "more than 2^64".to_string(), |e| e.to_string())
            )));
        }
        Ok(())
    }

    fn finish(&self) -> Result<(), CkksError> {
        if self.pos != self.bytes.len() {
            return Err(self.bad(format!(
                "{} bytes of SEAL data follow the object",
                self.bytes.len() - self.pos
            )));
        }
        Ok(())
    }
}

/// Which levels of the modulus chain an object may be at.
#[derive(Clone, Copy)]
enum Placement {
    /// A data level (ciphertexts).
    Data,
    /// The key level, with the special prime (keys).
    Key,
}

/// Which key-switching keys a frame must hold.
enum KeySlots {
    /// Relinearization keys: one key, at index 0 (for three-polynomial products).
    Relin,
    /// Galois keys: exactly these indices (SEAL's `(galois_elt - 1) / 2`), sorted.
    Galois(Vec<usize>),
}

/// What the context says objects must look like.
struct Shape<'c> {
    ctx: &'c CkksContext,
    degree: u64,
}

impl<'c> Shape<'c> {
    fn new(ctx: &'c CkksContext) -> Self {
        Self {
            ctx,
            degree: ctx.parameter_set().degree() as u64,
        }
    }

    /// The number of primes at the level `id` names, where `placement` allows it.
    fn primes_at(
        &self,
        r: &Cursor<'_>,
        id: &ParmsId,
        placement: Placement,
    ) -> Result<u64, CkksError> {
        match placement {
            Placement::Key if *id == self.ctx.inner.key_parms_id => {
                Ok(self.ctx.inner.primes.len() as u64)
            }
            Placement::Data => match self.ctx.level_of(id) {
                Ok(level) => Ok(u64::from(level.0) + 1),
                Err(_) => {
                    Err(r.bad("parameter id is not a data level of this parameter set".to_string()))
                }
            },
            Placement::Key => {
                Err(r.bad("parameter id is not the key level of this parameter set".to_string()))
            }
        }
    }

    /// One ciphertext (or public key, or one key-switching key), with its header.
    fn ciphertext(
        &self,
        r: &mut Cursor<'_>,
        placement: Placement,
        seeded_allowed: bool,
    ) -> Result<(), CkksError> {
        let id = r.parms_id()?;
        let primes = self.primes_at(r, &id, placement)?;
        let ntt = r.u8("NTT flag")?;
        let size = r.u64("polynomial count")?;
        let degree = r.u64("polynomial degree")?;
        let declared_primes = r.u64("prime count")?;
        let scale = r.f64("scale")?;
        let correction = r.u64("correction factor")?;
        if ntt != 1 {
            return Err(r.bad(format!("NTT flag {ntt}, CKKS data is in NTT form (1)")));
        }
        if size != POLYS {
            return Err(r.bad(format!("{size} polynomials, expected {POLYS}")));
        }
        if degree != self.degree {
            return Err(r.bad(format!(
                "degree {degree}, the parameter set's is {}",
                self.degree
            )));
        }
        if declared_primes != primes {
            return Err(r.bad(format!("{declared_primes} primes, its level has {primes}")));
        }
        if !(scale.is_finite() && scale >= 1.0) {
            return Err(r.bad(format!("scale {scale:e} is invalid")));
        }
        if correction != 1 {
            return Err(r.bad(format!("correction factor {correction}, CKKS uses 1")));
        }
        // Both products are small: degree ≤ 2^17 and primes ≤ 64.
        let one_poly = self.degree * primes;
        let count = self.dynarray(r, |count| {
            count == POLYS * one_poly || (seeded_allowed && count == one_poly)
        })?;
        if count == one_poly {
            // Seeded form: the second polynomial is a PRNG seed.
            r.nested_header("PRNG seed header", 1 + PRNG_SEED_LEN as u64)?;
            let prng = r.u8("PRNG type")?;
            if !PRNG_TYPES.contains(&prng) {
                return Err(r.bad(format!("unknown PRNG type {prng}")));
            }
            r.take(PRNG_SEED_LEN, "PRNG seed")?;
        }
        Ok(())
    }

    /// A `DynArray<u64>` whose element count `valid` accepts; returns the count.
    fn dynarray(&self, r: &mut Cursor<'_>, valid: impl Fn(u64) -> bool) -> Result<u64, CkksError> {
        // The header comes first, but its size is checked against the count after it.
        let at = r.pos;
        let header = r.header("coefficient array header")?;
        let count = r.u64("coefficient count")?;
        if !valid(count) {
            return Err(r.bad(format!(
                "coefficient array of {count} words at byte {at} does not fit the object"
            )));
        }
        let data_len = count
            .checked_mul(8)
            .filter(|len| *len <= r.remaining() as u64)
            .ok_or_else(|| r.bad(format!("SEAL data ends inside {count} coefficients")))?;
        if header.compression != COMPR_NONE {
            return Err(r.bad("coefficient array is compressed inside a SEAL object".into()));
        }
        if header.size != SEAL_HEADER_LEN as u64 + 8 + data_len {
            return Err(r.bad(format!(
                "coefficient array declares {} bytes, its {count} words take {}",
                header.size,
                SEAL_HEADER_LEN as u64 + 8 + data_len
            )));
        }
        r.take(data_len as usize, "coefficients")?;
        Ok(count)
    }

    /// A secret key: an NTT-form plaintext at the key level.
    fn secret_key(&self, r: &mut Cursor<'_>) -> Result<(), CkksError> {
        let id = r.parms_id()?;
        let primes = self.primes_at(r, &id, Placement::Key)?;
        let coeffs = r.u64("coefficient count")?;
        let scale = r.f64("scale")?;
        let expected = self.degree * primes;
        if coeffs != expected {
            return Err(r.bad(format!("{coeffs} coefficients, expected {expected}")));
        }
        if !scale.is_finite() {
            return Err(r.bad("scale is not finite".into()));
        }
        self.dynarray(r, |count| count == expected)?;
        Ok(())
    }

    /// Relinearization or Galois keys: key-level ciphertexts, `levels + 1` per slot.
    fn kswitch_keys(&self, r: &mut Cursor<'_>, slots: &KeySlots) -> Result<(), CkksError> {
        let id = r.parms_id()?;
        let primes = self.primes_at(r, &id, Placement::Key)?;
        // One key per prime of the top data level (all primes but the special one).
        let per_slot = primes - 1;
        let dim1 = r.u64("key slot count")?;
        let expected_dim1 = match slots {
            KeySlots::Relin => 1,
            // SEAL sizes the table to the degree: one slot per odd Galois element below 2n.
            KeySlots::Galois(_) => self.degree,
        };
        if dim1 != expected_dim1 {
            return Err(r.bad(format!("{dim1} key slots, expected {expected_dim1}")));
        }
        for slot in 0..dim1 as usize {
            let used = match slots {
                KeySlots::Relin => true,
                KeySlots::Galois(indices) => indices.binary_search(&slot).is_ok(),
            };
            let dim2 = r.u64("keys in a slot")?;
            let expected = if used { per_slot } else { 0 };
            if dim2 != expected {
                return Err(r.bad(format!(
                    "slot {slot} holds {dim2} keys, expected {expected}"
                )));
            }
            for _ in 0..dim2 {
                // Each key is a whole SEAL object: its header declares the bytes it spans.
                let at = r.pos;
                let header = r.header("key header")?;
                if header.compression != COMPR_NONE {
                    return Err(r.bad("a key inside key-switching keys is compressed".into()));
                }
                self.ciphertext(r, Placement::Key, true)?;
                let spanned = (r.pos - at) as u64;
                if header.size != spanned {
                    return Err(r.bad(format!(
                        "key at byte {at} declares {} bytes, spans {spanned}",
                        header.size
                    )));
                }
            }
        }
        Ok(())
    }

    /// SEAL's key-slot indices for normalized left-rotation steps (`3^step mod 2n`, then
    /// `(elt - 1) / 2`), sorted and unique.
    fn galois_slots(&self, steps: &[i32]) -> Result<Vec<usize>, CkksError> {
        let m = 2 * self.degree;
        let half = self.degree / 2;
        let mut slots = Vec::with_capacity(steps.len());
        for &step in steps {
            let step = u64::try_from(step)
                .ok()
                .filter(|s| (1..half).contains(s))
                .ok_or_else(|| CkksError::Malformed {
                    kind: ObjectKind::GaloisKeys.name(),
                    reason: format!("rotation step {step} is out of range"),
                })?;
            let mut elt = 1u64;
            for _ in 0..step {
                elt = (elt * 3) % m;
            }
            slots.push(((elt - 1) / 2) as usize);
        }
        slots.sort_unstable();
        slots.dedup();
        Ok(slots)
    }
}
