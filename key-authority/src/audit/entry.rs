//! Audit entries, their canonical encoding and their hashes.

use std::borrow::Cow;
use std::fmt;

use chrono::{DateTime, Utc};
use sha2::{Digest as _, Sha256};

use super::AuditError;
use crate::auth::{Caller, Role};

use crate::auth::audit_chain::{self, EntryFields};
pub use crate::auth::audit_chain::{ENTRY_HASH_TAG, HEAD_SIGNATURE_TAG};

/// Longest meter id, period or subject stored; longer values are truncated (see
/// [`NewEntry`]).
pub const MAX_FIELD_LEN: usize = 256;
/// Longest refusal reason stored.
pub const MAX_REASON_LEN: usize = 2048;

/// A SHA-256 entry hash.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct EntryHash(pub [u8; 32]);

impl EntryHash {
    /// The "previous hash" of the first entry, and the hash of the empty log's head.
    pub const ZERO: EntryHash = EntryHash([0; 32]);

    /// Parses 64 hex digits.
    ///
    /// # Errors
    /// A short reason when `text` is not 64 hex digits.
    pub fn from_hex(text: &str) -> Result<Self, String> {
        parse_hex32(text).map(Self)
    }

    /// The 32 bytes.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for EntryHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for EntryHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EntryHash({self})")
    }
}

/// The SHA-256 digest of the input a request names (e.g. the serialized ciphertext of a
/// bill), so that an auditor can tell which computation output was released.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct InputDigest(pub [u8; 32]);

impl InputDigest {
    /// The SHA-256 of `input`.
    #[must_use]
    pub fn sha256(input: &[u8]) -> Self {
        Self(Sha256::digest(input).into())
    }

    /// Parses 64 hex digits.
    ///
    /// # Errors
    /// A short reason when `text` is not 64 hex digits.
    pub fn from_hex(text: &str) -> Result<Self, String> {
        parse_hex32(text).map(Self)
    }

    /// The 32 bytes.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for InputDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for InputDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "InputDigest({self})")
    }
}

fn parse_hex32(text: &str) -> Result<[u8; 32], String> {
    // Lowercase only: one stored form per value.
    if text.len() != 64 || !text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(format!("{text:?} is not 64 lowercase hex digits"));
    }
    let mut bytes = [0_u8; 32];
    hex::decode_to_slice(text, &mut bytes).map_err(|e| e.to_string())?;
    Ok(bytes)
}

/// What a request asked for: `bill`, `forecast`, `anomaly`, ... (1 to 64 characters of
/// `a-z`, `0-9`, `_`, `-`, `.`).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct RequestKind(Cow<'static, str>);

impl RequestKind {
    /// Release of a monthly bill.
    pub const BILL: RequestKind = RequestKind(Cow::Borrowed("bill"));
    /// Release of a forecast.
    pub const FORECAST: RequestKind = RequestKind(Cow::Borrowed("forecast"));
    /// Release of an anomaly score.
    pub const ANOMALY: RequestKind = RequestKind(Cow::Borrowed("anomaly"));
    /// Release of one home-day of the daily lane (next-day forecast and anomaly score).
    pub const DAILY: RequestKind = RequestKind(Cow::Borrowed("daily"));
    /// Release of a group's total of the daily lane's forecasts for one day
    /// (`Analytics.ReleaseGroupForecast`).
    pub const DAILY_GROUP_FORECAST: RequestKind =
        RequestKind(Cow::Borrowed("daily-group-forecast"));

    /// A kind with the given name.
    ///
    /// # Errors
    /// [`AuditError::InvalidKind`] when the name is empty, too long or has other characters.
    pub fn try_new(name: impl Into<String>) -> Result<Self, AuditError> {
        let name = name.into();
        let valid = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'.'));
        if valid {
            Ok(Self(Cow::Owned(name)))
        } else {
            Err(AuditError::InvalidKind { kind: name })
        }
    }

    /// The name.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RequestKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RequestKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RequestKind({:?})", self.as_str())
    }
}

/// What the key authority decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The result was released.
    Granted,
    /// The request was refused, for this reason.
    Refused {
        /// Why, in words (no secrets: auditors read it).
        reason: String,
    },
}

impl Decision {
    /// A refusal for `reason`.
    #[must_use]
    pub fn refused(reason: impl Into<String>) -> Self {
        Decision::Refused {
            reason: reason.into(),
        }
    }

    /// `granted` or `refused`, as stored.
    #[must_use]
    pub fn as_str(&self) -> &'static str {
        match self {
            Decision::Granted => "granted",
            Decision::Refused { .. } => "refused",
        }
    }

    /// The refusal reason; `None` when granted.
    #[must_use]
    pub fn reason(&self) -> Option<&str> {
        match self {
            Decision::Granted => None,
            Decision::Refused { reason } => Some(reason),
        }
    }
}

/// Who made a request, as recorded: the verified token's subject and role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryCaller {
    /// The token's subject.
    pub subject: String,
    /// The token's role.
    pub role: Role,
}

impl From<&Caller> for EntryCaller {
    fn from(caller: &Caller) -> Self {
        Self {
            subject: caller.subject().to_owned(),
            role: caller.role(),
        }
    }
}

/// A request to record, as given to [`super::AuditLog::append`].
///
/// The string fields may hold whatever a (possibly hostile) client sent, so that a refusal can
/// always be recorded: before storing, control characters are escaped (`\u{1b}`), and values
/// longer than [`MAX_FIELD_LEN`] bytes (reasons: [`MAX_REASON_LEN`]) are cut at a character
/// boundary and marked `…[truncated N bytes]`. What is stored (and hashed) is the result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEntry {
    /// The authenticated caller; `None` when the request had no valid token.
    pub caller: Option<EntryCaller>,
    /// What was asked for.
    pub kind: RequestKind,
    /// The meter the request named, if any.
    pub meter_id: Option<String>,
    /// The period (or window, or day) the request named, if any.
    pub period: Option<String>,
    /// The digest of the input the request named, if any.
    pub input_digest: Option<InputDigest>,
    /// Granted or refused (with the reason).
    pub decision: Decision,
}

impl NewEntry {
    /// An entry for `kind` with `decision`, every other field empty.
    #[must_use]
    pub fn new(kind: RequestKind, decision: Decision) -> Self {
        Self {
            caller: None,
            kind,
            meter_id: None,
            period: None,
            input_digest: None,
            decision,
        }
    }

    /// The entry of a request refused as a whole, before any input was considered (no valid
    /// token, a role that may not ask, a malformed request): `reason (scope)`, where `scope`
    /// says what the request named, and the caller when it was authenticated.
    #[must_use]
    pub fn request_refused(
        kind: RequestKind,
        reason: &str,
        scope: &str,
        caller: Option<&Caller>,
    ) -> Self {
        let entry = Self::new(kind, Decision::refused(format!("{reason} ({scope})")));
        match caller {
            Some(caller) => entry.caller(caller),
            None => entry,
        }
    }

    /// Sets the caller.
    #[must_use]
    pub fn caller(mut self, caller: &Caller) -> Self {
        self.caller = Some(caller.into());
        self
    }

    /// Sets the meter id.
    #[must_use]
    pub fn meter(mut self, meter_id: impl Into<String>) -> Self {
        self.meter_id = Some(meter_id.into());
        self
    }

    /// Sets the period.
    #[must_use]
    pub fn period(mut self, period: impl Into<String>) -> Self {
        self.period = Some(period.into());
        self
    }

    /// Sets the input digest.
    #[must_use]
    pub fn input(mut self, digest: InputDigest) -> Self {
        self.input_digest = Some(digest);
        self
    }

    /// The entry with every string made storable (see the type's documentation).
    pub(super) fn sanitized(self) -> Self {
        Self {
            caller: self.caller.map(|caller| EntryCaller {
                subject: storable(&caller.subject, MAX_FIELD_LEN),
                role: caller.role,
            }),
            kind: self.kind,
            meter_id: self.meter_id.map(|m| storable(&m, MAX_FIELD_LEN)),
            period: self.period.map(|p| storable(&p, MAX_FIELD_LEN)),
            input_digest: self.input_digest,
            decision: match self.decision {
                Decision::Granted => Decision::Granted,
                Decision::Refused { reason } => Decision::Refused {
                    reason: storable(&reason, MAX_REASON_LEN),
                },
            },
        }
    }
}

/// Escapes control characters (NUL among them, which PostgreSQL's TEXT cannot hold) and cuts
/// `value` to at most `max` bytes plus a truncation marker.
fn storable(value: &str, max: usize) -> String {
    let mut escaped = String::with_capacity(value.len().min(max));
    for c in value.chars() {
        if c.is_control() {
            escaped.push_str(&c.escape_unicode().to_string());
        } else {
            escaped.push(c);
        }
    }
    if escaped.len() <= max {
        return escaped;
    }
    let mut cut = max;
    while !escaped.is_char_boundary(cut) {
        cut -= 1;
    }
    let dropped = escaped.len() - cut;
    escaped.truncate(cut);
    escaped.push_str(&format!("…[truncated {dropped} bytes]"));
    escaped
}

/// One entry of the log, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    /// Position in the log: 1, 2, 3, ... without gaps.
    pub sequence: u64,
    /// When it was appended (microsecond precision, UTC).
    pub recorded_at: DateTime<Utc>,
    /// The authenticated caller; `None` when the request had no valid token.
    pub caller: Option<EntryCaller>,
    /// What was asked for.
    pub kind: RequestKind,
    /// The meter the request named, if any.
    pub meter_id: Option<String>,
    /// The period the request named, if any.
    pub period: Option<String>,
    /// The digest of the input the request named, if any.
    pub input_digest: Option<InputDigest>,
    /// Granted or refused.
    pub decision: Decision,
    /// The previous entry's hash ([`EntryHash::ZERO`] for the first).
    pub previous_hash: EntryHash,
    /// This entry's hash, as stored.
    pub entry_hash: EntryHash,
}

impl AuditEntry {
    /// The canonical encoding of the entry's content and previous hash (everything but
    /// `entry_hash`); see the module documentation for the layout.
    #[must_use]
    pub fn canonical_encoding(&self) -> Vec<u8> {
        self.fields().canonical_encoding()
    }

    /// The hashed fields, as the shared chain definition ([`audit_chain`]) takes them.
    fn fields(&self) -> EntryFields<'_> {
        EntryFields {
            sequence: self.sequence,
            recorded_at_micros: self.recorded_at.timestamp_micros(),
            caller: self
                .caller
                .as_ref()
                .map(|c| (c.subject.as_str(), c.role.as_str())),
            kind: self.kind.as_str(),
            meter_id: self.meter_id.as_deref(),
            period: self.period.as_deref(),
            input_digest: self.input_digest.as_ref().map(InputDigest::as_bytes),
            refusal: self.decision.reason(),
            previous_hash: self.previous_hash.as_bytes(),
        }
    }

    /// SHA-256 of [`Self::canonical_encoding`]: what `entry_hash` must be.
    #[must_use]
    pub fn compute_hash(&self) -> EntryHash {
        EntryHash(self.fields().hash())
    }
}

/// The message the head signature covers: [`HEAD_SIGNATURE_TAG`], the last sequence (u64
/// big-endian) and the last entry hash (32 bytes).
#[must_use]
pub fn head_message(sequence: u64, hash: &EntryHash) -> Vec<u8> {
    audit_chain::head_message(sequence, hash.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> AuditEntry {
        AuditEntry {
            sequence: 7,
            recorded_at: DateTime::from_timestamp_micros(1_700_000_000_123_456).expect("valid"),
            caller: Some(EntryCaller {
                subject: "utility".into(),
                role: Role::Utility,
            }),
            kind: RequestKind::BILL,
            meter_id: Some("M-1".into()),
            period: Some("2007-01".into()),
            input_digest: Some(InputDigest::sha256(b"ciphertext")),
            decision: Decision::Granted,
            previous_hash: EntryHash([9; 32]),
            entry_hash: EntryHash::ZERO,
        }
    }

    #[test]
    fn every_field_changes_the_hash() {
        let base = entry();
        let hash = base.compute_hash();
        let variants: Vec<fn(&mut AuditEntry)> = vec![
            |e| e.sequence += 1,
            |e| e.recorded_at += chrono::Duration::microseconds(1),
            |e| e.caller = None,
            |e| e.caller.as_mut().expect("set").subject.push('x'),
            |e| e.caller.as_mut().expect("set").role = Role::Admin,
            |e| e.kind = RequestKind::FORECAST,
            |e| e.meter_id = None,
            |e| e.meter_id = Some("M-2".into()),
            |e| e.period = Some("2007-02".into()),
            |e| e.input_digest = None,
            |e| e.decision = Decision::refused(""),
            |e| e.previous_hash = EntryHash::ZERO,
        ];
        for (i, change) in variants.iter().enumerate() {
            let mut changed = base.clone();
            change(&mut changed);
            assert_ne!(changed.compute_hash(), hash, "variant {i}");
        }
        // The stored hash itself is not part of the hashed content.
        let mut same = base.clone();
        same.entry_hash = EntryHash([1; 32]);
        assert_eq!(same.compute_hash(), hash);
    }

    #[test]
    fn the_encoding_is_unambiguous_across_field_boundaries() {
        // Moving characters between adjacent strings must change the encoding.
        let mut a = entry();
        a.meter_id = Some("M-1".into());
        a.period = Some("2007-01".into());
        let mut b = entry();
        b.meter_id = Some("M-12".into());
        b.period = Some("007-01".into());
        assert_ne!(a.canonical_encoding(), b.canonical_encoding());
        // An absent value differs from an empty one.
        let mut c = entry();
        c.period = None;
        let mut d = entry();
        d.period = Some(String::new());
        assert_ne!(c.canonical_encoding(), d.canonical_encoding());
    }

    #[test]
    fn storable_escapes_controls_and_truncates_on_char_boundaries() {
        assert_eq!(storable("M\0-1\n", 64), "M\\u{0}-1\\u{a}");
        let long = "é".repeat(200); // 400 bytes
        let cut = storable(&long, MAX_FIELD_LEN);
        assert!(cut.starts_with(&"é".repeat(128)));
        assert!(cut.ends_with("…[truncated 144 bytes]"), "{cut}");
    }

    #[test]
    fn kinds_are_validated() {
        assert_eq!(
            RequestKind::try_new("bill").expect("valid"),
            RequestKind::BILL
        );
        for bad in ["", "Bill", "bill ", "b/ill", &"x".repeat(65)] {
            assert!(RequestKind::try_new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn hashes_parse_only_lowercase_hex() {
        let hash = EntryHash([0xab; 32]);
        assert_eq!(
            EntryHash::from_hex(&hash.to_string()).expect("parses"),
            hash
        );
        assert!(EntryHash::from_hex(&hash.to_string().to_uppercase()).is_err());
        assert!(EntryHash::from_hex("ab").is_err());
    }
}
