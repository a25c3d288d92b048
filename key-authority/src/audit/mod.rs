//! The key authority's audit log: every release request, granted or refused (with the
//! reason), in an append-only, hash-chained log in the key authority's database, with a head
//! signed by the key authority's Ed25519 key. Auditors list and verify it over gRPC
//! ([`AuditService`], `seer.v1.Audit`).
//!
//! # Storage
//!
//! [`AuditLog::connect`] takes `sqlite:PATH` (the default: an embedded file, created with its
//! directory when missing; WAL mode with `synchronous = FULL`) or `postgres://...`, through
//! sqlx's `Any` driver, and applies the migrations in `migrations/key-authority/`. One
//! migration directory serves both backends: the schema uses only portable SQL (BIGINT
//! integers, TEXT hex for hashes and digests, microseconds since the epoch for instants), so
//! both run the same, checksummed history.
//!
//! ```text
//! audit_entries(seq BIGINT PK, recorded_at_us BIGINT, caller_subject TEXT NULL,
//!               caller_role TEXT NULL, request_kind TEXT, meter_id TEXT NULL,
//!               period TEXT NULL, input_digest TEXT NULL, decision TEXT,
//!               reason TEXT NULL, prev_hash TEXT, entry_hash TEXT)
//! audit_head(id = 1, last_seq BIGINT, last_hash TEXT, key_id TEXT, signature TEXT)
//! ```
//!
//! [`AuditLog::append`] runs one transaction: lock the head row (a no-op `UPDATE ...
//! RETURNING`, which queues concurrent appenders in this and other processes), check the
//! head's signature and that the last entry still hashes to the head, insert the entry with
//! `seq = head + 1` and `prev_hash = head hash`, update and re-sign the head, commit. It
//! returns only after the commit, so an `Ok` entry is durable; any failure is an error and
//! nothing is recorded, and the release path must then answer nothing.
//!
//! # The entry hash
//!
//! `entry_hash = SHA-256(encoding)`, where the encoding is, in order (integers big-endian,
//! `str` = u32 byte length then UTF-8 bytes, `opt` = byte 0 for absent or byte 1 then the
//! value):
//!
//! ```text
//! "SEER-AUDIT-ENTRY-v1\0"                  domain tag (20 bytes)
//! seq                                       u64
//! recorded_at                               i64, microseconds since the Unix epoch
//! caller                                    opt(str subject, str role)
//! request_kind                              str
//! meter_id                                  opt(str)
//! period                                    opt(str)
//! input_digest                              opt(32 bytes)
//! decision                                  byte 1 (granted) | byte 2 then str reason (refused)
//! prev_hash                                 32 bytes (zeros for seq 1)
//! ```
//!
//! Every field has a fixed position and every variable-length value a length prefix, so two
//! different entries never share an encoding. The head signature is Ed25519 over
//! `"SEER-AUDIT-HEAD-v1\0" || last_seq (u64) || last_hash (32 bytes)`; the tags keep these
//! signatures apart from the JWTs the same key signs.
//!
//! # What each check protects against
//!
//! [`AuditLog::verify`] walks the rows in sequence order and reports the first problem with
//! its row position ([`ChainProblem`]):
//!
//! - **a field altered** (decision, meter, reason, ...): the row's content no longer hashes to
//!   its `entry_hash` ([`ProblemKind::EntryHashMismatch`]);
//! - **an altered row whose hash was recomputed**, **rows reordered** (sequence numbers
//!   swapped), **a row inserted** in the middle with renumbering: the next row's `prev_hash` (or
//!   the moved row's own) no longer names its predecessor ([`ProblemKind::PreviousHashMismatch`]);
//! - **a row deleted from the middle**: the sequence jumps ([`ProblemKind::SequenceGap`]);
//! - **the last rows deleted**: the chain is self-consistent, but the head (written in the same
//!   transaction as every append) names a later sequence ([`ProblemKind::Truncated`]);
//! - **rows added after the last one** outside the key authority: they lie past the head
//!   ([`ProblemKind::EntriesBeyondHead`]);
//! - **the chain rewritten from some row on and the head updated to match**, by someone with
//!   write access to the database but without the signing key: the head's signature does not
//!   verify ([`ProblemKind::HeadSignatureInvalid`]) or the head's hash is not the entry's
//!   ([`ProblemKind::HeadHashMismatch`]). The unsigned head table alone guards against
//!   accidental or naive truncation; the signature is what stops a deliberate rewrite.
//! - **the whole database rolled back** to an older, consistent state (an old backup restored,
//!   with its old signed head): nothing inside the database can tell. Auditors keep the head a
//!   verification returned and pass it as the next verification's [`Anchor`]; the log must
//!   still contain that entry with that hash ([`ProblemKind::AnchorMismatch`]).
//!
//! Not covered: an attacker holding the signing key can rewrite everything consistently
//! (anchors held by auditors still catch changes to entries they have seen). A new signing key
//! (a lost key file regenerated) makes the existing head fail verification by design; the key
//! must be kept (and backed up) with the database.
//!
//! Append checks the head too: once the head no longer matches the chain, appends fail with
//! [`AuditError::ChainBroken`], and the log is *halted*: every later append fails with
//! [`AuditError::Halted`] (so nothing is released) until the process restarts after repair.
//! A verification that finds damage halts the log the same way.
//!
//! # Refusals
//!
//! Calls refused before their body is read (no valid token, a role that may not call the
//! method, a caller over its in-flight bound) are written through [`RefusalThrottle`]: an
//! authenticated refusal as its own entry up to a bound per window, everything else counted
//! into one `refusals.aggregate` entry per window (see [`throttle`]). Verification checks every
//! aggregate entry (`seer_auth::audit_chain::RefusalAggregate::check_entry`).
//!
//! # The key authority's anchor
//!
//! The key authority opens its log with [`AuditLog::open_anchored`]: a signed anchor file
//! outside the database ([`anchor`]) records the last committed head, rewritten after every
//! commit, and the start is refused ([`StartupProblem`]) when the log is missing, behind the
//! anchor (rolled back), no longer holds the anchored entry, or fails verification. An anchored
//! log also checks the anchor at every append, and its verification cross-checks the release
//! tables against the chain ([`ProblemKind::ReleaseMissing`],
//! [`ProblemKind::ReleaseNotInChain`]) and each signed receipt row against the entry that
//! recorded it ([`ProblemKind::ReceiptNotInChain`]: the statement rebuilt from the row must
//! have the entry's digest). `key-authority init-audit` ([`AuditLog::init_audit`])
//! is the operator's explicit start of a new log (or adoption of a log without an anchor).

pub mod anchor;
mod entry;
mod error;
pub(crate) mod service;
mod store;
pub mod throttle;
mod verify;

pub use anchor::{ANCHOR_SIGNATURE_TAG, AnchorFile, AnchorLock};
pub use entry::{
    AuditEntry, Decision, ENTRY_HASH_TAG, EntryCaller, EntryHash, HEAD_SIGNATURE_TAG, InputDigest,
    MAX_FIELD_LEN, MAX_REASON_LEN, NewEntry, RequestKind, head_message,
};
pub use error::{AuditError, StartupProblem};
pub use service::{AUDIT_READERS, AuditService, entry_to_wire, report_to_wire};
pub(crate) use store::AppendTx;
pub use store::{
    AuditLog, Backend, DEFAULT_PAGE_SIZE, EmptyLog, EntryPage, ListQuery, MAX_PAGE_SIZE,
    granted_in_chain, released_in_chain,
};
pub use throttle::{RefusalSettings, RefusalThrottle};
pub use verify::{Anchor, ChainProblem, ProblemKind, SignedHead, VerifyReport};
