//! The key authority's audit chain as anyone can check it: the canonical encoding and hash of
//! an entry, and the messages its head and anchor signatures cover. Pure and secret-free, so
//! that the key authority (which writes and signs the chain) and auditors (who verify it with
//! the public key alone, e.g. `seer audit verify`) share one definition.
//!
//! The entry hash is SHA-256 over, in order (integers big-endian, `str` = u32 byte length then
//! UTF-8 bytes, `opt` = byte 0 for absent or byte 1 then the value):
//!
//! ```text
//! "SEER-AUDIT-ENTRY-v1\0"   seq u64   recorded_at i64 (µs)   caller opt(str subject, str role)
//! request_kind str   meter_id opt(str)   period opt(str)   input_digest opt(32 bytes)
//! decision: byte 1 (granted) | byte 2 then str reason (refused)   prev_hash 32 bytes
//! ```
//!
//! The head signature is Ed25519 over `"SEER-AUDIT-HEAD-v1\0" || last_seq u64 || last_hash`;
//! the key authority's own anchor file is signed over `"SEER-AUDIT-ANCHOR-v1\0" || seq u64 ||
//! hash`. The tags keep these signatures apart from each other and from the JWTs.

use sha2::{Digest as _, Sha256};

pub mod aggregate;
pub use aggregate::{AGGREGATE_KIND, RefusalAggregate};

/// Domain-separation tag that starts every entry's hashed encoding.
pub const ENTRY_HASH_TAG: &[u8] = b"SEER-AUDIT-ENTRY-v1\0";
/// Domain-separation tag that starts the signed head message.
pub const HEAD_SIGNATURE_TAG: &[u8] = b"SEER-AUDIT-HEAD-v1\0";
/// Domain-separation tag of the key authority's anchor-file signature.
pub const ANCHOR_SIGNATURE_TAG: &[u8] = b"SEER-AUDIT-ANCHOR-v1\0";

/// The hashed fields of one entry, borrowed from wherever they are held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryFields<'a> {
    /// Position in the log (1, 2, ...).
    pub sequence: u64,
    /// When it was appended, microseconds since the Unix epoch.
    pub recorded_at_micros: i64,
    /// The caller's subject and role name, when authenticated.
    pub caller: Option<(&'a str, &'a str)>,
    /// The request kind.
    pub kind: &'a str,
    /// The meter named, if any.
    pub meter_id: Option<&'a str>,
    /// The period named, if any.
    pub period: Option<&'a str>,
    /// The input digest, if any.
    pub input_digest: Option<&'a [u8; 32]>,
    /// `None` for granted; the reason for refused.
    pub refusal: Option<&'a str>,
    /// The previous entry's hash (zeros for the first).
    pub previous_hash: &'a [u8; 32],
}

impl EntryFields<'_> {
    /// The canonical encoding (see the module documentation).
    #[must_use]
    pub fn canonical_encoding(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(ENTRY_HASH_TAG);
        out.extend_from_slice(&self.sequence.to_be_bytes());
        out.extend_from_slice(&self.recorded_at_micros.to_be_bytes());
        match self.caller {
            None => out.push(0),
            Some((subject, role)) => {
                out.push(1);
                put_str(&mut out, subject);
                put_str(&mut out, role);
            }
        }
        put_str(&mut out, self.kind);
        put_opt_str(&mut out, self.meter_id);
        put_opt_str(&mut out, self.period);
        match self.input_digest {
            None => out.push(0),
            Some(digest) => {
                out.push(1);
                out.extend_from_slice(digest);
            }
        }
        match self.refusal {
            None => out.push(1),
            Some(reason) => {
                out.push(2);
                put_str(&mut out, reason);
            }
        }
        out.extend_from_slice(self.previous_hash);
        out
    }

    /// SHA-256 of [`Self::canonical_encoding`].
    #[must_use]
    pub fn hash(&self) -> [u8; 32] {
        Sha256::digest(self.canonical_encoding()).into()
    }
}

fn put_str(out: &mut Vec<u8>, value: &str) {
    // Stored strings are bounded far below 4 GiB; saturating keeps the encoding total.
    let len = u32::try_from(value.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(value.as_bytes());
}

fn put_opt_str(out: &mut Vec<u8>, value: Option<&str>) {
    match value {
        None => out.push(0),
        Some(value) => {
            out.push(1);
            put_str(out, value);
        }
    }
}

fn tagged(tag: &[u8], sequence: u64, hash: &[u8; 32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(tag.len() + 8 + 32);
    out.extend_from_slice(tag);
    out.extend_from_slice(&sequence.to_be_bytes());
    out.extend_from_slice(hash);
    out
}

/// The message the head signature covers.
#[must_use]
pub fn head_message(sequence: u64, hash: &[u8; 32]) -> Vec<u8> {
    tagged(HEAD_SIGNATURE_TAG, sequence, hash)
}

/// The message the key authority's anchor-file signature covers.
#[must_use]
pub fn anchor_message(sequence: u64, hash: &[u8; 32]) -> Vec<u8> {
    tagged(ANCHOR_SIGNATURE_TAG, sequence, hash)
}

/// Whether `signature` (64 bytes) is `key`'s signature of the head (`sequence`, `hash`).
#[must_use]
pub fn head_signature_valid(
    key: &ed25519_dalek::VerifyingKey,
    sequence: u64,
    hash: &[u8; 32],
    signature: &[u8],
) -> bool {
    let Ok(bytes) = <[u8; 64]>::try_from(signature) else {
        return false;
    };
    crate::verify_signature(
        key,
        &head_message(sequence, hash),
        &ed25519_dalek::Signature::from_bytes(&bytes),
    )
}
