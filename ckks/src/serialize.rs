//! The wire format of every serialized engine object.
//!
//! ```text
//! "SEER" | format u16 | kind u8 | flags u8 | id_len u8 | parameter-set id | meta_len u32 |
//! meta | payload_len u64 | payload (SEAL's own serialization, zstd-compressed) | blake3 (32)
//! ```
//! All integers are little-endian. Reading checks, in order and before SEAL sees a byte:
//! the total size against a limit, the magic, the format version, the object kind, the
//! parameter-set id, every length and the BLAKE3 checksum over everything before it. The
//! payload is then parsed in full by [`seal_format`](crate::seal_format) (every header,
//! count and level of SEAL's own format, decompressed there), and only then does SEAL load
//! it and validate it against the context (coefficient ranges, scale).

use crate::context::CkksContext;
use crate::error::CkksError;

const MAGIC: &[u8; 4] = b"SEER";
/// The format version written by this build (and the only one it reads).
pub const FORMAT_VERSION: u16 = 1;
const CHECKSUM_LEN: usize = 32;

/// What a serialized object is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ObjectKind {
    Ciphertext = 1,
    PublicKey = 2,
    RelinKeys = 3,
    GaloisKeys = 4,
    SecretKey = 5,
}

impl ObjectKind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Ciphertext => "ciphertext",
            Self::PublicKey => "public key",
            Self::RelinKeys => "relinearization keys",
            Self::GaloisKeys => "galois keys",
            Self::SecretKey => "secret key",
        }
    }

    fn from_byte(b: u8) -> Option<Self> {
        Some(match b {
            1 => Self::Ciphertext,
            2 => Self::PublicKey,
            3 => Self::RelinKeys,
            4 => Self::GaloisKeys,
            5 => Self::SecretKey,
            _ => return None,
        })
    }
}

/// Upper bound on the serialized size of an object of `kind` under `ctx`, with `meta_items`
/// Galois steps: SEAL's uncompressed size of the largest valid object plus framing.
pub(crate) fn size_limit(ctx: &CkksContext, kind: ObjectKind, galois_steps: usize) -> usize {
    let n = ctx.parameter_set().degree();
    let data_primes = ctx.parameter_set().levels() as usize + 1;
    let key_primes = data_primes + 1;
    let poly = |primes: usize| n * primes * 8;
    // One key-switching key: `data_primes` decomposition components of 2 polynomials each.
    let kswitch = data_primes * 2 * poly(key_primes);
    let body = match kind {
        // Fresh ciphertexts have 2 polynomials; 3 only before relinearization.
        ObjectKind::Ciphertext => 3 * poly(data_primes),
        ObjectKind::PublicKey => 2 * poly(key_primes),
        ObjectKind::SecretKey => poly(key_primes),
        ObjectKind::RelinKeys => kswitch,
        ObjectKind::GaloisKeys => galois_steps.max(1) * kswitch,
    };
    // zstd's worst-case expansion is tiny; 1% plus 64 KiB covers it and all headers.
    body + body / 100 + 65_536
}

/// Frames a SEAL payload.
pub(crate) fn write(ctx: &CkksContext, kind: ObjectKind, meta: &[u8], payload: &[u8]) -> Vec<u8> {
    let id = ctx.parameter_set_id().as_bytes();
    let mut out = Vec::with_capacity(
        4 + 2 + 3 + id.len() + 4 + meta.len() + 8 + payload.len() + CHECKSUM_LEN,
    );
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.push(kind as u8);
    out.push(0); // flags, reserved
    // Ids are short ASCII strings built by `ParameterSet::id` (well under 255 bytes).
    out.push(id.len().min(255) as u8);
    out.extend_from_slice(&id[..id.len().min(255)]);
    out.extend_from_slice(&(meta.len() as u32).to_le_bytes());
    out.extend_from_slice(meta);
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(payload);
    let hash = blake3::hash(&out);
    out.extend_from_slice(hash.as_bytes());
    out
}

/// A parsed, checked frame.
pub(crate) struct Frame<'a> {
    pub meta: &'a [u8],
    pub payload: &'a [u8],
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    kind: &'static str,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], CkksError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|e| *e <= self.bytes.len())
            .ok_or_else(|| CkksError::Malformed {
                kind: self.kind,
                reason: format!("truncated while reading {what} at byte {}", self.pos),
            })?;
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn u8(&mut self, what: &str) -> Result<u8, CkksError> {
        Ok(self.take(1, what)?[0])
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], CkksError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N, what)?);
        Ok(a)
    }
}

/// Parses and checks a frame (everything but the payload, which [`seal_format::check`](crate::seal_format::check) parses).
pub(crate) fn read<'a>(
    ctx: &CkksContext,
    expected: ObjectKind,
    bytes: &'a [u8],
    limit: usize,
) -> Result<Frame<'a>, CkksError> {
    let kind = expected.name();
    if bytes.len() > limit {
        return Err(CkksError::TooLarge {
            kind,
            size: bytes.len(),
            limit,
        });
    }
    let mut r = Reader {
        bytes,
        pos: 0,
        kind,
    };
    if r.take(4, "magic")? != MAGIC {
        return Err(CkksError::Malformed {
            kind,
            reason: "not a SEER object (bad magic)".into(),
        });
    }
    let version = u16::from_le_bytes(r.array("format version")?);
    if version != FORMAT_VERSION {
        return Err(CkksError::UnsupportedVersion {
            kind,
            found: version,
            supported: FORMAT_VERSION,
        });
    }
    let found_kind = r.u8("object kind")?;
    match ObjectKind::from_byte(found_kind) {
        Some(k) if k == expected => {}
        Some(k) => {
            return Err(CkksError::WrongKind {
                expected: kind,
                found: k.name(),
            });
        }
        None => {
            return Err(CkksError::Malformed {
                kind,
                reason: format!("unknown object kind {found_kind}"),
            });
        }
    }
    let flags = r.u8("flags")?;
    if flags != 0 {
        return Err(CkksError::Malformed {
            kind,
            reason: format!("unknown flags {flags:#04x}"),
        });
    }
    let id_len = r.u8("parameter-set id length")? as usize;
    let id = r.take(id_len, "parameter-set id")?;
    if id != ctx.parameter_set_id().as_bytes() {
        return Err(CkksError::ParameterSetMismatch {
            kind,
            expected: ctx.parameter_set_id().to_string(),
            found: String::from_utf8_lossy(id).into_owned(),
        });
    }
    let meta_len = u32::from_le_bytes(r.array("metadata length")?) as usize;
    let meta = r.take(meta_len, "metadata")?;
    let payload_len = u64::from_le_bytes(r.array("payload length")?);
    let payload_len = usize::try_from(payload_len).map_err(|_| CkksError::Malformed {
        kind,
        reason: "payload length overflows".into(),
    })?;
    let payload = r.take(payload_len, "payload")?;
    let body_end = r.pos;
    let checksum = r.take(CHECKSUM_LEN, "checksum")?;
    if r.pos != bytes.len() {
        return Err(CkksError::Malformed {
            kind,
            reason: format!("{} trailing bytes", bytes.len() - r.pos),
        });
    }
    if blake3::hash(&bytes[..body_end]).as_bytes() != checksum {
        return Err(CkksError::ChecksumMismatch { kind });
    }
    Ok(Frame { meta, payload })
}

/// Encodes Galois steps as metadata.
pub(crate) fn steps_to_meta(steps: &[i32]) -> Vec<u8> {
    steps.iter().flat_map(|s| s.to_le_bytes()).collect()
}

/// Decodes Galois steps from metadata.
pub(crate) fn steps_from_meta(meta: &[u8]) -> Result<Vec<i32>, CkksError> {
    if !meta.len().is_multiple_of(4) {
        return Err(CkksError::Malformed {
            kind: ObjectKind::GaloisKeys.name(),
            reason: "step list length is not a multiple of 4".into(),
        });
    }
    Ok(meta
        .chunks_exact(4)
        .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

/// Counts the steps in Galois-key bytes without loading them (to size the limit).
pub(crate) fn peek_galois_step_count(bytes: &[u8]) -> usize {
    // magic 4 + version 2 + kind 1 + flags 1 = 8, then id_len.
    let Some(&id_len) = bytes.get(8) else {
        return 0;
    };
    let start = 9 + id_len as usize;
    match bytes.get(start..start + 4) {
        Some(l) => u32::from_le_bytes([l[0], l[1], l[2], l[3]]) as usize / 4,
        None => 0,
    }
}
