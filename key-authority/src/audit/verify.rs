//! Verification of the chain and its signed head: the report types and the walk over stored
//! rows (pure, so that it can be tested without a database).

use std::fmt;

use super::entry::{AuditEntry, EntryHash, head_message};
use super::store::StoredRow;
use crate::auth::audit_chain::{AGGREGATE_KIND, RefusalAggregate};
use crate::auth::verify_signature;

/// A (sequence, entry hash) pair: a head that an auditor saw earlier and expects to still be
/// part of the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Anchor {
    /// The entry's sequence number (0 names the empty log).
    pub sequence: u64,
    /// The entry's hash ([`EntryHash::ZERO`] for the empty log).
    pub entry_hash: EntryHash,
}

/// The chain head as stored: the last sequence and hash and their signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedHead {
    /// The last entry's sequence (0 for the empty log).
    pub sequence: u64,
    /// The last entry's hash ([`EntryHash::ZERO`] for the empty log).
    pub entry_hash: EntryHash,
    /// Id of the key that signed the head (see [`crate::auth::key_id_of`]), as stored.
    pub key_id: Option<String>,
    /// The Ed25519 signature over [`head_message`], hex, as stored.
    pub signature: Option<String>,
}

impl SignedHead {
    /// The head as an anchor.
    #[must_use]
    pub fn anchor(&self) -> Anchor {
        Anchor {
            sequence: self.sequence,
            entry_hash: self.entry_hash,
        }
    }

    /// Checks the signature with `key`; `Err` says why it does not verify.
    ///
    /// # Errors
    /// A description of the problem.
    pub fn check_signature(&self, key: &ed25519_dalek::VerifyingKey) -> Result<(), String> {
        let Some(signature) = &self.signature else {
            return Err("the head is not signed".into());
        };
        let expected_id = crate::auth::key_id_of(key);
        if self.key_id.as_deref() != Some(expected_id.as_str()) {
            return Err(format!(
                "the head names signing key {:?}, this key authority's key is {expected_id}",
                self.key_id.as_deref().unwrap_or("(none)")
            ));
        }
        let mut bytes = [0_u8; 64];
        hex::decode_to_slice(signature, &mut bytes)
            .map_err(|_| "the head signature is not 128 hex digits".to_owned())?;
        let signature = ed25519_dalek::Signature::from_bytes(&bytes);
        if verify_signature(
            key,
            &head_message(self.sequence, &self.entry_hash),
            &signature,
        ) {
            Ok(())
        } else {
            Err(format!(
                "the signature does not cover sequence {} with hash {}",
                self.sequence, self.entry_hash
            ))
        }
    }
}

/// What a verification found wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProblemKind {
    /// A stored value cannot be read back.
    MalformedRow {
        /// What is wrong.
        detail: String,
    },
    /// Sequence numbers are not consecutive (an entry deleted, or entries renumbered).
    SequenceGap {
        /// The sequence this row should have.
        expected: u64,
        /// The sequence it has.
        found: u64,
    },
    /// The row's previous hash is not the previous row's hash.
    PreviousHashMismatch {
        /// The previous row's hash (what the row should name).
        expected: EntryHash,
        /// What the row names.
        stored: EntryHash,
    },
    /// The row's hash does not match its content.
    EntryHashMismatch {
        /// The hash of the row's content.
        computed: EntryHash,
        /// The hash stored with it.
        stored: EntryHash,
    },
    /// The head row is missing.
    HeadMissing,
    /// The head's signature is missing or does not verify.
    HeadSignatureInvalid {
        /// Why.
        detail: String,
    },
    /// The entry at the head's sequence has another hash than the head.
    HeadHashMismatch {
        /// The head's sequence.
        sequence: u64,
        /// The hash the head records.
        head: EntryHash,
        /// The hash of the entry at that sequence.
        entry: EntryHash,
    },
    /// The log ends before the head's sequence.
    Truncated {
        /// The head's sequence.
        head_sequence: u64,
        /// The last sequence present (0 for none).
        last_sequence: u64,
    },
    /// Entries exist past the head's sequence.
    EntriesBeyondHead {
        /// The head's sequence.
        head_sequence: u64,
        /// The first sequence past it.
        sequence: u64,
    },
    /// The anchor's entry is missing or has another hash.
    AnchorMismatch {
        /// What the anchor says.
        anchor: Anchor,
        /// The hash found at the anchor's sequence, if the entry exists.
        found: Option<EntryHash>,
    },
    /// A release row names no granted entry of its kind, meter and period at its
    /// `audit_seq`: it was inserted or altered outside the key authority.
    ReleaseNotInChain {
        /// `releases`, `analytics_releases`, `group_total_releases`, `daily_group_forecasts`,
        /// `daily_group_forecast_releases` or `daily_release_copies`.
        table: String,
        /// The row's kind.
        kind: String,
        /// The row's meter.
        meter_id: String,
        /// The row's period.
        period: String,
        /// The audit sequence the row names.
        audit_sequence: i64,
    },
    /// A receipt row is not the one its granted audit entry recorded (no granted receipt
    /// entry of its meter has the SHA-256 of the statement rebuilt from it): it was inserted
    /// or altered outside the key authority, and no release will use it.
    ReceiptNotInChain {
        /// `receipts` or `analytics_receipts`.
        table: String,
        /// The row's meter.
        meter_id: String,
        /// What the row is for: `PERIOD#SEQUENCE` (billing) or `KIND:INPUT_ID` (analytics).
        subject: String,
    },
    /// A granted release entry has no release row: the row was deleted (and the result could
    /// be released a second time if the policy trusted the table alone).
    ReleaseMissing {
        /// `releases`, `analytics_releases`, `group_total_releases`, `daily_group_forecasts` or
        /// `daily_group_forecast_releases`.
        table: String,
        /// The entry's kind.
        kind: String,
        /// The entry's meter.
        meter_id: Option<String>,
        /// The entry's period.
        period: Option<String>,
    },
}

impl fmt::Display for ProblemKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProblemKind::MalformedRow { detail } => write!(f, "malformed row: {detail}"),
            ProblemKind::SequenceGap { expected, found } => write!(
                f,
                "expected sequence {expected}, found {found}: entries were deleted or renumbered"
            ),
            ProblemKind::PreviousHashMismatch { expected, stored } => write!(
                f,
                "previous hash is {stored}, but the preceding entry's hash is {expected}: the \
                 preceding entry was altered, deleted or moved, or this entry was inserted"
            ),
            ProblemKind::EntryHashMismatch { computed, stored } => write!(
                f,
                "stored hash is {stored}, but the entry's fields hash to {computed}: a field \
                 was altered"
            ),
            ProblemKind::HeadMissing => write!(f, "the signed head row is missing"),
            ProblemKind::HeadSignatureInvalid { detail } => {
                write!(f, "head signature invalid: {detail}")
            }
            ProblemKind::HeadHashMismatch {
                sequence,
                head,
                entry,
            } => write!(
                f,
                "the signed head records hash {head} for sequence {sequence}, but that entry's \
                 hash is {entry}: the chain was rewritten"
            ),
            ProblemKind::Truncated {
                head_sequence,
                last_sequence,
            } => write!(
                f,
                "the log ends at sequence {last_sequence}, but its signed head names sequence \
                 {head_sequence}: entries {}..={head_sequence} were deleted",
                last_sequence + 1
            ),
            ProblemKind::EntriesBeyondHead {
                head_sequence,
                sequence,
            } => write!(
                f,
                "entry {sequence} lies past the signed head (sequence {head_sequence}): it was \
                 inserted outside the key authority"
            ),
            ProblemKind::AnchorMismatch { anchor, found } => match found {
                Some(found) => write!(
                    f,
                    "the anchor names hash {} for sequence {}, the log has {found}: the log was \
                     rewritten or rolled back",
                    anchor.entry_hash, anchor.sequence
                ),
                None => write!(
                    f,
                    "the anchor's entry {} is no longer in the log: the log was truncated or \
                     rolled back",
                    anchor.sequence
                ),
            },
            ProblemKind::ReleaseNotInChain {
                table,
                kind,
                meter_id,
                period,
                audit_sequence,
            } => write!(
                f,
                "{table} row ({kind}, {meter_id}, {period}) names audit entry {audit_sequence}, \
                 which is not a granted {kind} entry for that meter and period: the row was \
                 inserted or altered outside the key authority"
            ),
            ProblemKind::ReceiptNotInChain {
                table,
                meter_id,
                subject,
            } => write!(
                f,
                "{table} row of meter {meter_id} ({subject}) is not the receipt its audit entry \
                 recorded (no granted entry has its signed statement's digest): the row was \
                 inserted or altered outside the key authority"
            ),
            ProblemKind::ReleaseMissing {
                table,
                kind,
                meter_id,
                period,
            } => write!(
                f,
                "the granted {kind} entry for meter {} and period {} has no {table} row: the \
                 release record was deleted",
                meter_id.as_deref().unwrap_or("(none)"),
                period.as_deref().unwrap_or("(none)")
            ),
        }
    }
}

/// The first problem a verification found, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainProblem {
    /// 1-based position of the offending row in sequence order; for a deleted tail, the
    /// position the first missing row would have; 0 for problems of the head or the anchor.
    pub row: u64,
    /// The offending row's stored sequence, when there is a row.
    pub sequence: Option<u64>,
    /// What is wrong.
    pub kind: ProblemKind,
}

impl fmt::Display for ChainProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.row, self.sequence) {
            (0, _) => write!(f, "{}", self.kind),
            (row, Some(sequence)) => write!(f, "row {row} (sequence {sequence}): {}", self.kind),
            (row, None) => write!(f, "row {row}: {}", self.kind),
        }
    }
}

/// The result of [`super::AuditLog::verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// How many rows were read and checked.
    pub entries_checked: u64,
    /// The stored head, when present.
    pub head: Option<SignedHead>,
    /// The first problem; `None` when the log is intact.
    pub problem: Option<ChainProblem>,
}

impl VerifyReport {
    /// True when no problem was found.
    #[must_use]
    pub fn is_intact(&self) -> bool {
        self.problem.is_none()
    }
}

/// Walks rows in sequence order, stopping at the first problem.
pub(super) struct ChainWalker {
    rows: u64,
    previous: EntryHash,
    last_sequence: u64,
    head: Option<SignedHead>,
    hash_at_head: Option<EntryHash>,
    anchor: Option<Anchor>,
    hash_at_anchor: Option<EntryHash>,
    problem: Option<ChainProblem>,
}

impl ChainWalker {
    /// A walker checking against `head` (read before the walk) and `anchor`.
    pub(super) fn new(head: Option<SignedHead>, anchor: Option<Anchor>) -> Self {
        Self {
            rows: 0,
            previous: EntryHash::ZERO,
            last_sequence: 0,
            head,
            hash_at_head: None,
            anchor,
            hash_at_anchor: None,
            problem: None,
        }
    }

    /// The last sequence walked (0 before any).
    pub(super) fn last_sequence(&self) -> u64 {
        self.last_sequence
    }

    /// Whether the walk already stopped at a problem.
    pub(super) fn stopped(&self) -> bool {
        self.problem.is_some()
    }

    /// Checks the next row.
    pub(super) fn push(&mut self, row: &StoredRow) {
        if self.problem.is_some() {
            return;
        }
        self.rows += 1;
        if let Err(kind) = self.check(row) {
            self.problem = Some(ChainProblem {
                row: self.rows,
                sequence: u64::try_from(row.seq).ok(),
                kind,
            });
        }
    }

    fn check(&mut self, row: &StoredRow) -> Result<(), ProblemKind> {
        let entry: AuditEntry = row
            .to_entry()
            .map_err(|detail| ProblemKind::MalformedRow { detail })?;
        let expected = self.last_sequence + 1;
        if entry.sequence != expected {
            return Err(ProblemKind::SequenceGap {
                expected,
                found: entry.sequence,
            });
        }
        if entry.previous_hash != self.previous {
            return Err(ProblemKind::PreviousHashMismatch {
                expected: self.previous,
                stored: entry.previous_hash,
            });
        }
        let computed = entry.compute_hash();
        if computed != entry.entry_hash {
            return Err(ProblemKind::EntryHashMismatch {
                computed,
                stored: entry.entry_hash,
            });
        }
        if entry.kind.as_str() == AGGREGATE_KIND {
            RefusalAggregate::check_entry(
                entry.recorded_at.timestamp_micros(),
                entry.caller.is_some(),
                entry.meter_id.is_some() || entry.period.is_some() || entry.input_digest.is_some(),
                entry.decision.reason(),
            )
            .map_err(|detail| ProblemKind::MalformedRow {
                detail: format!("refusal aggregate: {detail}"),
            })?;
        }
        if self
            .head
            .as_ref()
            .is_some_and(|h| h.sequence == entry.sequence)
        {
            self.hash_at_head = Some(entry.entry_hash);
        }
        if self.anchor.is_some_and(|a| a.sequence == entry.sequence) {
            self.hash_at_anchor = Some(entry.entry_hash);
        }
        self.previous = entry.entry_hash;
        self.last_sequence = entry.sequence;
        Ok(())
    }

    /// Finishes the walk: checks the head read before the walk (`self.head`), the head read
    /// after it (`head_after`, to tell rows appended meanwhile from rows inserted outside the
    /// log), and the anchor.
    pub(super) fn finish(
        self,
        head_after: Option<SignedHead>,
        key: &ed25519_dalek::VerifyingKey,
    ) -> VerifyReport {
        let entries_checked = self.rows;
        let report = |problem: Option<ChainProblem>| VerifyReport {
            entries_checked,
            head: head_after.clone().or_else(|| self.head.clone()),
            problem,
        };
        if self.problem.is_some() {
            return report(self.problem.clone());
        }
        let at_head = |kind| {
            Some(ChainProblem {
                row: 0,
                sequence: None,
                kind,
            })
        };
        let (Some(head), Some(after)) = (&self.head, &head_after) else {
            return report(at_head(ProblemKind::HeadMissing));
        };
        for checked in [head, after] {
            if let Err(detail) = checked.check_signature(key) {
                return report(at_head(ProblemKind::HeadSignatureInvalid { detail }));
            }
        }
        // Rows up to the first head existed before the walk began and are never deleted by
        // the key authority: all of them must have been seen.
        if self.last_sequence < head.sequence {
            return report(Some(ChainProblem {
                row: self.last_sequence + 1,
                sequence: None,
                kind: ProblemKind::Truncated {
                    head_sequence: head.sequence,
                    last_sequence: self.last_sequence,
                },
            }));
        }
        if head.sequence > 0 && self.hash_at_head != Some(head.entry_hash) {
            return report(Some(ChainProblem {
                row: head.sequence,
                sequence: Some(head.sequence),
                kind: ProblemKind::HeadHashMismatch {
                    sequence: head.sequence,
                    head: head.entry_hash,
                    entry: self.hash_at_head.unwrap_or(EntryHash::ZERO),
                },
            }));
        }
        // Rows past the second head were not appended by the key authority (appends update
        // the head in the same transaction).
        if self.last_sequence > after.sequence {
            return report(Some(ChainProblem {
                row: after.sequence + 1,
                sequence: Some(after.sequence + 1),
                kind: ProblemKind::EntriesBeyondHead {
                    head_sequence: after.sequence,
                    sequence: after.sequence + 1,
                },
            }));
        }
        if let Some(anchor) = self.anchor {
            let intact = if anchor.sequence == 0 {
                anchor.entry_hash == EntryHash::ZERO
            } else {
                self.hash_at_anchor == Some(anchor.entry_hash)
            };
            if !intact {
                return report(at_head(ProblemKind::AnchorMismatch {
                    anchor,
                    found: self.hash_at_anchor,
                }));
            }
        }
        report(None)
    }
}
