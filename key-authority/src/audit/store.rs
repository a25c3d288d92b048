//! The audit log in the key authority's database (SQLite or PostgreSQL through sqlx's `Any`
//! driver): connecting and migrating, appending, listing and verifying.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::migrate::Migrator;
use sqlx::{AnyPool, Row as _};

use super::AuditError;
use super::anchor::AnchorFile;
use super::entry::{
    AuditEntry, Decision, EntryCaller, EntryHash, InputDigest, NewEntry, RequestKind, head_message,
};
use super::error::StartupProblem;
use super::verify::{Anchor, ChainProblem, ChainWalker, ProblemKind, SignedHead, VerifyReport};
use crate::auth::{JwtSigningKey, Role};

/// The schema, embedded at build time from `migrations/key-authority/`.
static MIGRATOR: Migrator = sqlx::migrate!("../migrations/key-authority");

/// Entries returned by a listing when it asks for none in particular.
pub const DEFAULT_PAGE_SIZE: u32 = 100;
/// Most entries one listing returns.
pub const MAX_PAGE_SIZE: u32 = 1000;
/// Rows read per query while verifying.
const VERIFY_BATCH: i64 = 1000;

/// `SELECT <every entry column> FROM audit_entries <rest>`, as one static string.
macro_rules! select_entries {
    ($rest:literal) => {
        concat!(
            "SELECT seq, recorded_at_us, caller_subject, caller_role, request_kind, meter_id, ",
            "period, input_digest, decision, reason, prev_hash, entry_hash FROM audit_entries ",
            $rest
        )
    };
}

pub use seer_service::db::{Backend, redact_url};

/// The backend a database URL names.
///
/// # Errors
/// [`AuditError::UnsupportedUrl`] for other schemes.
pub fn backend_of(url: &str) -> Result<Backend, AuditError> {
    Backend::of_url(url).ok_or_else(|| AuditError::UnsupportedUrl {
        url: redact_url(url),
    })
}

/// A listing query: filters (combined with AND) and a page.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListQuery {
    /// Only entries naming this meter.
    pub meter_id: Option<String>,
    /// Only entries of this kind.
    pub kind: Option<RequestKind>,
    /// Only entries recorded at or after this instant.
    pub from: Option<DateTime<Utc>>,
    /// Only entries recorded strictly before this instant.
    pub to: Option<DateTime<Utc>>,
    /// Only entries with a greater sequence (0: from the start).
    pub after_sequence: u64,
    /// Most entries to return: 0 means [`DEFAULT_PAGE_SIZE`]; at most [`MAX_PAGE_SIZE`].
    pub limit: u32,
}

/// One page of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryPage {
    /// The entries, in increasing sequence order.
    pub entries: Vec<AuditEntry>,
    /// When more entries may match: the `after_sequence` of the next page.
    pub next_after_sequence: Option<u64>,
}

/// The append-only, hash-chained audit log. Share it with `Arc`.
///
/// See the [module documentation](super) for the schema, the hash encoding and what each check
/// protects against.
pub struct AuditLog {
    pool: AnyPool,
    backend: Backend,
    key: Arc<JwtSigningKey>,
    /// Serializes this process's appends (the head row lock serializes across processes).
    append_lock: tokio::sync::Mutex<()>,
    /// Why appends are refused, once an integrity check failed (see [`AuditLog::halted`]).
    halt: std::sync::Mutex<Option<String>>,
    /// The anchor file and the last anchored head, for a log opened with
    /// [`AuditLog::open_anchored`].
    anchor: std::sync::Mutex<Option<AnchorState>>,
    /// Whether verification cross-checks the release tables against the chain (the key
    /// authority's log, where releases are written only with their granted entries).
    releases_bound: std::sync::atomic::AtomicBool,
}

/// The key authority's anchor file and the head it last recorded there.
struct AnchorState {
    /// Held while the log is open (released by [`AuditLog::close`]): no other process
    /// rewrites this anchor.
    lock: Option<super::anchor::AnchorLock>,
    file: AnchorFile,
    anchored: Anchor,
}

/// What [`AuditLog::open_anchored`] may do with an empty log and no anchor file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmptyLog {
    /// Initialize it: a brand-new deployment (no key material existed before this start), or
    /// the operator's explicit `key-authority init-audit`.
    Initialize,
    /// Refuse: key material exists, so a log existed and must not be silently recreated.
    Refuse {
        /// What exists, in words (e.g. "the signing key file ... exists").
        evidence: &'static str,
    },
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("backend", &self.backend)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl AuditLog {
    /// Opens the log at `url`, creating the SQLite file (and its directory) when missing,
    /// applies the schema migrations, and signs the empty log's head with `key` on first use.
    ///
    /// `url` is `sqlite:PATH` (`sqlite:///absolute/path.db`, `sqlite:relative.db`; opened
    /// read-write-create unless it has a `mode=` parameter) or `postgres://...`. SQLite runs
    /// in WAL mode with `synchronous = FULL`, so a committed append survives power loss.
    ///
    /// # Errors
    /// When the URL is not supported, the database cannot be opened or migrated, or the head
    /// cannot be signed.
    pub async fn connect(url: &str, key: Arc<JwtSigningKey>) -> Result<Self, AuditError> {
        let backend = backend_of(url)?;
        sqlx::any::install_default_drivers();
        let url = match backend {
            Backend::Sqlite => prepare_sqlite_url(url)?,
            Backend::Postgres => url.to_owned(),
        };
        let connect_error = |source| AuditError::Connect {
            url: redact_url(&url),
            source,
        };
        let pool = AnyPoolOptions::new()
            .max_connections(match backend {
                Backend::Sqlite => 4,
                Backend::Postgres => 8,
            })
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(|conn, _meta| {
                Box::pin(async move {
                    if conn.backend_name() == "SQLite" {
                        // FULL: the WAL is synced at every commit (NORMAL would lose the last
                        // commits on power loss).
                        sqlx::query("PRAGMA synchronous = FULL")
                            .execute(&mut *conn)
                            .await?;
                    }
                    Ok(())
                })
            })
            .connect(&url)
            .await
            .map_err(connect_error)?;
        if backend == Backend::Sqlite {
            // WAL lets auditors verify while the key authority appends. A read-only database
            // may refuse to switch; the log then works in rollback-journal mode.
            if let Err(error) = sqlx::query("PRAGMA journal_mode = WAL")
                .execute(&pool)
                .await
            {
                tracing::warn!(%error, "could not switch the audit database to WAL mode");
            }
        }
        MIGRATOR.run(&pool).await?;
        let log = Self {
            pool,
            backend,
            key,
            append_lock: tokio::sync::Mutex::new(()),
            halt: std::sync::Mutex::new(None),
            anchor: std::sync::Mutex::new(None),
            releases_bound: std::sync::atomic::AtomicBool::new(false),
        };
        log.sign_empty_head().await?;
        Ok(log)
    }

    /// Opens the log as the key authority's evidence: [`AuditLog::connect`], then the start-up
    /// checks against the anchor file `anchor` (see [`super::anchor`]):
    ///
    /// - an empty log with an anchor past sequence 0 is [`StartupProblem::LogMissing`]; an
    ///   empty log without an anchor is initialized only when `empty` is
    ///   [`EmptyLog::Initialize`], else [`StartupProblem::LogMissing`] too;
    /// - a log with entries but no anchor is [`StartupProblem::AnchorMissing`] (the operator
    ///   adopts it with `key-authority init-audit`, see [`AuditLog::init_audit`]);
    /// - a head behind the anchor is [`StartupProblem::RolledBack`]; the anchored entry missing
    ///   or with another hash is [`StartupProblem::AnchorMismatch`];
    /// - then the full verification (chain, head, anchor, releases) must pass, else
    ///   [`StartupProblem::Damaged`].
    ///
    /// A database head ahead of the anchor (a crash between a commit and the anchor write) is
    /// accepted and the anchor is brought forward. Afterwards every committed append rewrites
    /// the anchor, and Verify also cross-checks the release tables against the chain.
    ///
    /// # Errors
    /// [`AuditError::StartRefused`] as above; the errors of [`AuditLog::connect`] and of
    /// reading or writing the anchor file.
    #[tracing::instrument(name = "audit.open", skip_all, fields(anchor = %anchor.display()))]
    pub async fn open_anchored(
        url: &str,
        key: Arc<JwtSigningKey>,
        anchor: &std::path::Path,
        empty: EmptyLog,
    ) -> Result<Self, AuditError> {
        let file = AnchorFile::new(anchor);
        let lock = file.lock()?;
        let log = Self::connect(url, key).await?;
        let refuse = |problem| Err(AuditError::StartRefused { problem });
        let anchored = file.read(&log.verifying_key())?;
        let head = log.head().await?;
        let anchored = match anchored {
            None if head.sequence == 0 => match empty {
                EmptyLog::Initialize => {
                    let start = Anchor {
                        sequence: 0,
                        entry_hash: EntryHash::ZERO,
                    };
                    file.write(&start, &log.key)?;
                    tracing::info!(anchor = %file.path().display(), "new audit log initialized");
                    start
                }
                EmptyLog::Refuse { evidence } => {
                    return refuse(StartupProblem::LogMissing {
                        evidence: format!("{evidence} and there is no anchor file"),
                        anchor_sequence: None,
                    });
                }
            },
            None => {
                return refuse(StartupProblem::AnchorMissing {
                    head_sequence: head.sequence,
                });
            }
            Some(anchored) if head.sequence == 0 && anchored.sequence > 0 => {
                return refuse(StartupProblem::LogMissing {
                    evidence: format!(
                        "the anchor file {} records sequence {}",
                        file.path().display(),
                        anchored.sequence
                    ),
                    anchor_sequence: Some(anchored.sequence),
                });
            }
            Some(anchored) if head.sequence < anchored.sequence => {
                return refuse(StartupProblem::RolledBack {
                    anchor_sequence: anchored.sequence,
                    head_sequence: head.sequence,
                });
            }
            Some(anchored) => {
                let found = log.hash_at(anchored.sequence).await?;
                if found != Some(anchored.entry_hash) {
                    return refuse(StartupProblem::AnchorMismatch {
                        sequence: anchored.sequence,
                        anchored: anchored.entry_hash.to_string(),
                        found: found.map_or_else(|| "missing".to_owned(), |h| h.to_string()),
                    });
                }
                anchored
            }
        };
        log.set_anchor(lock, file, anchored);
        let report = log.verify(Some(anchored)).await?;
        if let Some(problem) = report.problem {
            return refuse(StartupProblem::Damaged {
                problem: problem.to_string(),
            });
        }
        if let Some(head) = report.head
            && head.sequence > anchored.sequence
        {
            tracing::warn!(
                anchored = anchored.sequence,
                head = head.sequence,
                "the audit log is ahead of its anchor (a crash after a commit); anchor updated"
            );
            log.record_anchor(head.anchor());
        }
        Ok(log)
    }

    /// `key-authority init-audit`: the operator's explicit start of a log. Opens the log at
    /// `url`; with no anchor file, verifies the log (empty for a new deployment) and anchors
    /// its current head; with an anchor file, only checks the log against it as a start would
    /// ([`AuditLog::open_anchored`]). Returns the anchored head.
    ///
    /// A deleted or rolled-back log is never adopted while its anchor exists: the operator
    /// must move the anchor file away first, deliberately.
    ///
    /// # Errors
    /// [`AuditError::StartRefused`] when the log is damaged or does not match the anchor.
    pub async fn init_audit(
        url: &str,
        key: Arc<JwtSigningKey>,
        anchor: &std::path::Path,
    ) -> Result<Anchor, AuditError> {
        let file = AnchorFile::new(anchor);
        let log = if file.read(&key.verifying_key())?.is_some() {
            Self::open_anchored(url, key, anchor, EmptyLog::Initialize).await?
        } else {
            let log = Self::connect(url, key).await?;
            log.bind_releases(true);
            let report = log.verify(None).await?;
            if let Some(problem) = report.problem {
                return Err(AuditError::StartRefused {
                    problem: StartupProblem::Damaged {
                        problem: problem.to_string(),
                    },
                });
            }
            let lock = file.lock()?;
            let head = log.head().await?.anchor();
            file.write(&head, &log.key)?;
            log.set_anchor(lock, file, head);
            log
        };
        let head = log.head().await?.anchor();
        log.close().await;
        Ok(head)
    }

    /// Why appends are refused, when an integrity check failed in this process: the head or
    /// the anchor did not match the chain at an append, or a verification found damage. Once
    /// set, it stays until the process restarts (after the operator repaired the log).
    #[must_use]
    pub fn halted(&self) -> Option<String> {
        self.halt
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn halt(&self, reason: &str) {
        let mut halt = self
            .halt
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if halt.is_none() {
            tracing::error!(reason, "audit log halted: no more appends or releases");
            *halt = Some(reason.to_owned());
        }
    }

    fn set_anchor(&self, lock: super::anchor::AnchorLock, file: AnchorFile, anchored: Anchor) {
        self.bind_releases(true);
        *self
            .anchor
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(AnchorState {
            lock: Some(lock),
            file,
            anchored,
        });
    }

    /// Makes verification cross-check the release tables against the chain (see
    /// [`AuditLog::verify`]). [`AuditLog::open_anchored`] turns it on: in the key authority,
    /// every granted `bill`, `forecast`, `anomaly` or `daily` entry is written with its release rows.
    pub fn bind_releases(&self, on: bool) {
        self.releases_bound
            .store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// The head last written to the anchor file, for an anchored log.
    #[must_use]
    pub fn anchored(&self) -> Option<Anchor> {
        self.anchor
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
            .map(|state| state.anchored)
    }

    /// Records `head` (just committed) in the anchor file, when the log has one. A failed
    /// write is logged, not returned: the entry is durable, and a database ahead of its anchor
    /// is accepted at the next start.
    fn record_anchor(&self, head: Anchor) {
        let mut state = self
            .anchor
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(state) = state.as_mut() else {
            return;
        };
        if head.sequence <= state.anchored.sequence {
            return;
        }
        if let Err(error) = state.file.write(&head, &self.key) {
            tracing::error!(%error, sequence = head.sequence, "could not update the audit anchor");
        }
        state.anchored = head;
    }

    /// The stored hash of entry `sequence` (`Some(ZERO)` for 0), `None` when it is missing or
    /// unreadable.
    async fn hash_at(&self, sequence: u64) -> Result<Option<EntryHash>, AuditError> {
        if sequence == 0 {
            return Ok(Some(EntryHash::ZERO));
        }
        let hash: Option<String> =
            sqlx::query_scalar("SELECT entry_hash FROM audit_entries WHERE seq = $1")
                .bind(sequence_to_db(sequence)?)
                .fetch_optional(&self.pool)
                .await
                .map_err(AuditError::Read)?;
        Ok(hash.and_then(|h| EntryHash::from_hex(&h).ok()))
    }

    /// Whether the chain holds a granted entry of `kind` for (`meter_id`, `period`): the
    /// release record that survives the deletion of a `releases` row. Returns the entry's
    /// sequence. Reads through `connection` when given (e.g. inside the release transaction).
    ///
    /// # Errors
    /// [`AuditError::Read`] when the log cannot be read.
    pub async fn released_in_chain(
        &self,
        kind: &RequestKind,
        meter_id: &str,
        period: &str,
    ) -> Result<Option<u64>, AuditError> {
        let mut connection = self.pool.acquire().await.map_err(AuditError::Read)?;
        released_in_chain(&mut connection, kind, meter_id, period)
            .await
            .map_err(AuditError::Read)
    }

    /// Which database holds the log.
    #[must_use]
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The public key that verifies the head's signature.
    #[must_use]
    pub fn verifying_key(&self) -> ed25519_dalek::VerifyingKey {
        self.key.verifying_key()
    }

    /// The connection pool (the key authority's database: the receipts live beside the log).
    pub(crate) fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Closes the connections (later calls fail) and releases the anchor file's lock.
    pub async fn close(&self) {
        self.pool.close().await;
        if let Some(state) = self
            .anchor
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_mut()
        {
            state.lock = None;
        }
    }

    async fn sign_empty_head(&self) -> Result<(), AuditError> {
        let head = self.head().await?;
        if head.sequence == 0 && head.signature.is_none() {
            let signature = self.key.sign(&head_message(0, &EntryHash::ZERO));
            sqlx::query(
                "UPDATE audit_head SET key_id = $1, signature = $2 \
                 WHERE id = 1 AND last_seq = 0 AND signature IS NULL",
            )
            .bind(self.key.key_id().to_owned())
            .bind(hex::encode(signature.to_bytes()))
            .execute(&self.pool)
            .await
            .map_err(AuditError::Write)?;
        }
        Ok(())
    }

    /// The stored head.
    ///
    /// # Errors
    /// When the log cannot be read or the head row is missing or malformed.
    pub async fn head(&self) -> Result<SignedHead, AuditError> {
        let row = sqlx::query(
            "SELECT last_seq, last_hash, key_id, signature FROM audit_head WHERE id = 1",
        )
        .fetch_optional(&self.pool)
        .await
        .map_err(AuditError::Read)?
        .ok_or(AuditError::HeadMissing)?;
        head_from_row(&row)
    }

    /// Appends `entry` and returns it as stored, once the transaction that writes it (and
    /// the new signed head) has committed: when this returns `Ok`, the entry is durable.
    ///
    /// The entry's strings are made storable first (see [`NewEntry`]); the timestamp is the
    /// current time, or the previous entry's if the clock went back, so time never decreases
    /// along the chain.
    ///
    /// # Errors
    /// [`AuditError::Write`] when the database cannot be written (nothing is recorded, and
    /// the caller must not release anything), [`AuditError::ChainBroken`] when the stored
    /// head no longer matches the chain (the log was tampered with: appends stop until an
    /// operator investigates), [`AuditError::HeadMissing`] when the schema was damaged.
    #[tracing::instrument(name = "audit.append", skip_all, fields(kind = %entry.kind))]
    pub async fn append(&self, entry: NewEntry) -> Result<AuditEntry, AuditError> {
        let mut tx = self.begin_append().await?;
        let stored = tx.append(entry).await?;
        tx.commit().await?;
        Ok(stored)
    }

    /// Opens an append transaction: takes this process's append lock and the head row lock
    /// (which queues appenders in other processes too) and checks the head's signature and
    /// that the last entry still hashes to it. Entries appended through the returned
    /// [`AppendTx`], and whatever else is written through [`AppendTx::connection`], commit
    /// together in [`AppendTx::commit`]; dropping it rolls everything back.
    ///
    /// The release path writes its audit entries and its release records in one such
    /// transaction, so an entry says "granted" exactly when the release is recorded.
    ///
    /// # Errors
    /// As [`AuditLog::append`].
    pub(crate) async fn begin_append(&self) -> Result<AppendTx<'_>, AuditError> {
        if let Some(reason) = self.halted() {
            return Err(AuditError::Halted { reason });
        }
        match self.begin_append_checked().await {
            Err(AuditError::ChainBroken { detail }) => {
                self.halt(&detail);
                Err(AuditError::ChainBroken { detail })
            }
            other => other,
        }
    }

    async fn begin_append_checked(&self) -> Result<AppendTx<'_>, AuditError> {
        let guard = self.append_lock.lock().await;
        let mut tx = self.pool.begin().await.map_err(AuditError::Write)?;

        // A no-op write to the head row first: it takes the row lock (PostgreSQL) or the
        // write lock (SQLite) before anything is read, so concurrent appends queue here.
        let head_row = sqlx::query(
            "UPDATE audit_head SET last_seq = last_seq WHERE id = 1 \
             RETURNING last_seq, last_hash, key_id, signature",
        )
        .fetch_optional(&mut *tx)
        .await
        .map_err(AuditError::Write)?
        .ok_or(AuditError::HeadMissing)?;
        let head = head_from_row(&head_row)?;
        head.check_signature(&self.key.verifying_key())
            .map_err(|detail| AuditError::ChainBroken { detail })?;

        let last_recorded_at = if head.sequence == 0 {
            None
        } else {
            let last = sqlx::query(select_entries!("WHERE seq = $1"))
                .bind(sequence_to_db(head.sequence)?)
                .fetch_optional(&mut *tx)
                .await
                .map_err(AuditError::Write)?
                .ok_or_else(|| AuditError::ChainBroken {
                    detail: format!("the head's entry {} is missing", head.sequence),
                })?;
            let last = StoredRow::from_row(&last)
                .and_then(|row| row.to_entry())
                .map_err(|detail| AuditError::ChainBroken { detail })?;
            if last.entry_hash != head.entry_hash || last.compute_hash() != last.entry_hash {
                return Err(AuditError::ChainBroken {
                    detail: format!("entry {} does not match the signed head", head.sequence),
                });
            }
            Some(last.recorded_at)
        };
        if let Some(anchored) = self.anchored() {
            if head.sequence < anchored.sequence {
                return Err(AuditError::ChainBroken {
                    detail: format!(
                        "the head (sequence {}) is behind the anchor (sequence {}): the log was \
                         rolled back",
                        head.sequence, anchored.sequence
                    ),
                });
            }
            let found = if head.sequence == anchored.sequence {
                Some(head.entry_hash.to_string())
            } else {
                sqlx::query_scalar("SELECT entry_hash FROM audit_entries WHERE seq = $1")
                    .bind(sequence_to_db(anchored.sequence)?)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(AuditError::Write)?
            };
            if anchored.sequence > 0 && found != Some(anchored.entry_hash.to_string()) {
                return Err(AuditError::ChainBroken {
                    detail: format!(
                        "the anchored entry {} is missing or has another hash: the log was \
                         rewritten",
                        anchored.sequence
                    ),
                });
            }
        }
        Ok(AppendTx {
            log: self,
            _guard: guard,
            tx,
            last_sequence: head.sequence,
            last_hash: head.entry_hash,
            last_recorded_at,
        })
    }

    /// Lists entries matching `query`, in increasing sequence order.
    ///
    /// # Errors
    /// [`AuditError::InvalidQuery`] for a page size over [`MAX_PAGE_SIZE`] or a sequence out
    /// of range; [`AuditError::Read`] when the log cannot be read; [`AuditError::Corrupt`]
    /// when a matching row cannot be read back.
    pub async fn list(&self, query: &ListQuery) -> Result<EntryPage, AuditError> {
        let limit = match query.limit {
            0 => DEFAULT_PAGE_SIZE,
            n if n <= MAX_PAGE_SIZE => n,
            n => {
                return Err(AuditError::InvalidQuery(format!(
                    "page size {n} exceeds {MAX_PAGE_SIZE}"
                )));
            }
        };
        let after = i64::try_from(query.after_sequence)
            .map_err(|_| AuditError::InvalidQuery("after_sequence out of range".into()))?;
        let rows = sqlx::query(select_entries!(
            "WHERE seq > $1 \
             AND ($2 IS NULL OR meter_id = $2) \
             AND ($3 IS NULL OR request_kind = $3) \
             AND ($4 IS NULL OR recorded_at_us >= $4) \
             AND ($5 IS NULL OR recorded_at_us < $5) \
             ORDER BY seq LIMIT $6"
        ))
        .bind(after)
        .bind(query.meter_id.clone())
        .bind(query.kind.as_ref().map(|k| k.as_str().to_owned()))
        .bind(query.from.map(|t| t.timestamp_micros()))
        .bind(query.to.map(|t| t.timestamp_micros()))
        .bind(i64::from(limit) + 1)
        .fetch_all(&self.pool)
        .await
        .map_err(AuditError::Read)?;
        let more = rows.len() > limit as usize;
        let mut entries = Vec::with_capacity(rows.len().min(limit as usize));
        for row in rows.iter().take(limit as usize) {
            let stored = StoredRow::from_row(row).map_err(|detail| AuditError::Corrupt {
                sequence: row.try_get::<i64, _>(0).unwrap_or(-1),
                detail,
            })?;
            let entry = stored.to_entry().map_err(|detail| AuditError::Corrupt {
                sequence: stored.seq,
                detail,
            })?;
            entries.push(entry);
        }
        let next_after_sequence = if more {
            entries.last().map(|e| e.sequence)
        } else {
            None
        };
        Ok(EntryPage {
            entries,
            next_after_sequence,
        })
    }

    /// Walks the whole chain and checks the signed head (and `anchor`, a head an auditor kept
    /// from an earlier verification), reporting the first problem.
    ///
    /// Damage is reported in the [`VerifyReport`], not as an error.
    ///
    /// # Errors
    /// Only when the log cannot be read.
    #[tracing::instrument(name = "audit.verify", skip_all)]
    pub async fn verify(&self, anchor: Option<Anchor>) -> Result<VerifyReport, AuditError> {
        let head_before = self.head_if_present().await?;
        let mut walker = ChainWalker::new(head_before, anchor);
        let mut after: i64 = 0;
        while !walker.stopped() {
            let rows = sqlx::query(select_entries!("WHERE seq > $1 ORDER BY seq LIMIT $2"))
                .bind(after)
                .bind(VERIFY_BATCH)
                .fetch_all(&self.pool)
                .await
                .map_err(AuditError::Read)?;
            if rows.is_empty() {
                break;
            }
            for row in &rows {
                walker.push(&StoredRow::from_row(row).unwrap_or_else(StoredRow::unreadable));
                if walker.stopped() {
                    break;
                }
            }
            after = sequence_to_db(walker.last_sequence())?;
            if (rows.len() as i64) < VERIFY_BATCH {
                break;
            }
        }
        let head_after = self.head_if_present().await?;
        let mut report = walker.finish(head_after, &self.key.verifying_key());
        if report.problem.is_none()
            && let Some(anchored) = self.anchored()
        {
            let found = self.hash_at(anchored.sequence).await?;
            if found != Some(anchored.entry_hash) {
                report.problem = Some(ChainProblem {
                    row: 0,
                    sequence: None,
                    kind: ProblemKind::AnchorMismatch {
                        anchor: anchored,
                        found,
                    },
                });
            }
        }
        if report.problem.is_none()
            && self
                .releases_bound
                .load(std::sync::atomic::Ordering::Relaxed)
        {
            report.problem = self.check_releases().await?;
            if report.problem.is_none() {
                report.problem = self.check_receipts().await?;
            }
        }
        if let Some(problem) = &report.problem {
            self.halt(&problem.to_string());
        }
        Ok(report)
    }

    /// The first release row without its granted entry, or granted release entry without its
    /// rows (see [`ProblemKind::ReleaseNotInChain`], [`ProblemKind::ReleaseMissing`]).
    async fn check_releases(&self) -> Result<Option<ChainProblem>, AuditError> {
        let problem = |kind| ChainProblem {
            row: 0,
            sequence: None,
            kind,
        };
        for (table, period_matches) in [
            ("releases", "e.period = r.period"),
            // An analytics entry names the range of the periods it released.
            ("analytics_releases", "e.period IS NOT NULL"),
        ] {
            let sql = format!(
                "SELECT r.kind, r.meter_id, r.period, r.audit_seq FROM {table} r \
                 WHERE NOT EXISTS (SELECT 1 FROM audit_entries e WHERE e.seq = r.audit_seq \
                 AND e.decision = 'granted' AND e.request_kind = r.kind \
                 AND e.meter_id = r.meter_id AND {period_matches}) \
                 ORDER BY r.audit_seq LIMIT 1"
            );
            let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                .fetch_optional(&self.pool)
                .await
                .map_err(AuditError::Read)?;
            if let Some(row) = row {
                let read = |e: sqlx::Error| AuditError::Read(e);
                return Ok(Some(problem(ProblemKind::ReleaseNotInChain {
                    table: table.to_owned(),
                    kind: row.try_get(0).map_err(read)?,
                    meter_id: row.try_get(1).map_err(read)?,
                    period: row.try_get(2).map_err(read)?,
                    audit_sequence: row.try_get(3).map_err(read)?,
                })));
            }
        }
        // Group totals: a row's entry names its group (the group's released hours carry no
        // meter); the hour lies in the entry's window.
        let sql = "SELECT 'group-totals', 'group ' || CAST(r.noise_group AS TEXT), \
                   r.hour_start, r.audit_seq FROM group_total_releases r \
                   WHERE NOT EXISTS (SELECT 1 FROM audit_entries e WHERE e.seq = r.audit_seq \
                   AND e.decision = 'granted' AND e.request_kind = 'group-totals' \
                   AND e.period LIKE 'group ' || CAST(r.noise_group AS TEXT) || ' window %') \
                   ORDER BY r.audit_seq LIMIT 1";
        let row = sqlx::query(sql)
            .fetch_optional(&self.pool)
            .await
            .map_err(AuditError::Read)?;
        if let Some(row) = row {
            let read = |e: sqlx::Error| AuditError::Read(e);
            return Ok(Some(problem(ProblemKind::ReleaseNotInChain {
                table: "group_total_releases".to_owned(),
                kind: row.try_get(0).map_err(read)?,
                meter_id: row.try_get(1).map_err(read)?,
                period: row.try_get(2).map_err(read)?,
                audit_sequence: row.try_get(3).map_err(read)?,
            })));
        }
        // Daily group forecasts: a released total's entry names its group, day and model; a
        // home's stored forecast names the granted `daily` entry of its meter.
        for sql in [
            "SELECT 'daily-group-forecast', 'group ' || CAST(r.eval_group AS TEXT), \
             r.day || ' model ' || r.model_blake3, r.audit_seq \
             FROM daily_group_forecast_releases r \
             WHERE NOT EXISTS (SELECT 1 FROM audit_entries e WHERE e.seq = r.audit_seq \
             AND e.decision = 'granted' AND e.request_kind = 'daily-group-forecast' \
             AND e.period = 'group ' || CAST(r.eval_group AS TEXT) || ' day ' || r.day \
             || ' model ' || r.model_blake3) ORDER BY r.audit_seq LIMIT 1",
            "SELECT 'daily', r.meter_id, r.day, r.audit_seq FROM daily_group_forecasts r \
             WHERE NOT EXISTS (SELECT 1 FROM audit_entries e WHERE e.seq = r.audit_seq \
             AND e.decision = 'granted' AND e.request_kind = 'daily' \
             AND e.meter_id = r.meter_id) ORDER BY r.audit_seq LIMIT 1",
            // A copy kept for exact retries names the granted `daily` entry of its meter
            // with the same input digest.
            "SELECT 'daily', r.meter_id, r.period, r.audit_seq FROM daily_release_copies r \
             WHERE NOT EXISTS (SELECT 1 FROM audit_entries e WHERE e.seq = r.audit_seq \
             AND e.decision = 'granted' AND e.request_kind = 'daily' \
             AND e.meter_id = r.meter_id AND e.input_digest = r.input_digest) \
             ORDER BY r.audit_seq LIMIT 1",
        ] {
            let row = sqlx::query(sql)
                .fetch_optional(&self.pool)
                .await
                .map_err(AuditError::Read)?;
            if let Some(row) = row {
                let read = |e: sqlx::Error| AuditError::Read(e);
                let kind: String = row.try_get(0).map_err(read)?;
                return Ok(Some(problem(ProblemKind::ReleaseNotInChain {
                    table: if sql.contains("daily_release_copies") {
                        "daily_release_copies"
                    } else if kind == "daily" {
                        "daily_group_forecasts"
                    } else {
                        "daily_group_forecast_releases"
                    }
                    .to_owned(),
                    kind,
                    meter_id: row.try_get(1).map_err(read)?,
                    period: row.try_get(2).map_err(read)?,
                    audit_sequence: row.try_get(3).map_err(read)?,
                })));
            }
        }
        for (table, kinds, period_matches) in [
            ("releases", "('bill')", "AND r.period = e.period"),
            ("analytics_releases", "('forecast', 'anomaly', 'daily')", ""),
        ] {
            let sql = format!(
                "SELECT e.seq, e.request_kind, e.meter_id, e.period FROM audit_entries e \
                 WHERE e.decision = 'granted' AND e.request_kind IN {kinds} \
                 AND NOT EXISTS (SELECT 1 FROM {table} r WHERE r.audit_seq = e.seq \
                 AND r.kind = e.request_kind AND r.meter_id = e.meter_id {period_matches}) \
                 ORDER BY e.seq LIMIT 1"
            );
            let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                .fetch_optional(&self.pool)
                .await
                .map_err(AuditError::Read)?;
            if let Some(row) = row {
                let read = |e: sqlx::Error| AuditError::Read(e);
                let sequence: i64 = row.try_get(0).map_err(read)?;
                let sequence = u64::try_from(sequence).unwrap_or(0);
                return Ok(Some(ChainProblem {
                    row: sequence,
                    sequence: Some(sequence),
                    kind: ProblemKind::ReleaseMissing {
                        table: table.to_owned(),
                        kind: row.try_get(1).map_err(read)?,
                        meter_id: row.try_get(2).map_err(read)?,
                        period: row.try_get(3).map_err(read)?,
                    },
                }));
            }
        }
        for (table, kind) in [
            ("group_total_releases", "group-totals"),
            ("daily_group_forecast_releases", "daily-group-forecast"),
        ] {
            let sql = format!(
                "SELECT e.seq, e.request_kind, e.meter_id, e.period FROM audit_entries e \
                 WHERE e.decision = 'granted' AND e.request_kind = '{kind}' \
                 AND NOT EXISTS (SELECT 1 FROM {table} r WHERE r.audit_seq = e.seq) \
                 ORDER BY e.seq LIMIT 1"
            );
            let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                .fetch_optional(&self.pool)
                .await
                .map_err(AuditError::Read)?;
            if let Some(row) = row {
                let read = |e: sqlx::Error| AuditError::Read(e);
                let sequence: i64 = row.try_get(0).map_err(read)?;
                let sequence = u64::try_from(sequence).unwrap_or(0);
                return Ok(Some(ChainProblem {
                    row: sequence,
                    sequence: Some(sequence),
                    kind: ProblemKind::ReleaseMissing {
                        table: table.to_owned(),
                        kind: row.try_get(1).map_err(read)?,
                        meter_id: row.try_get(2).map_err(read)?,
                        period: row.try_get(3).map_err(read)?,
                    },
                }));
            }
        }
        Ok(None)
    }

    /// The first receipt row (billing, then analytics) that the chain did not record (see
    /// [`ProblemKind::ReceiptNotInChain`]).
    async fn check_receipts(&self) -> Result<Option<ChainProblem>, AuditError> {
        let problem = |table: &str, meter_id: String, subject: String| ChainProblem {
            row: 0,
            sequence: None,
            kind: ProblemKind::ReceiptNotInChain {
                table: table.to_owned(),
                meter_id,
                subject,
            },
        };
        // The billing statement names the billing circuit's parameter set (what
        // `Receipts.Record` rebuilds it with).
        let params_id = seer_core::circuits::billing::PARAMETER_SET.id();
        if let Some((meter, period, sequence)) =
            crate::release::first_unbound_receipt(&self.pool, &params_id)
                .await
                .map_err(AuditError::Read)?
        {
            return Ok(Some(problem(
                "receipts",
                meter,
                format!("{period}#{sequence}"),
            )));
        }
        if let Some((kind, meter, input_id)) = crate::analytics::first_unbound_receipt(&self.pool)
            .await
            .map_err(AuditError::Read)?
        {
            return Ok(Some(problem(
                "analytics_receipts",
                meter,
                crate::analytics::receipt_period(&kind, &input_id),
            )));
        }
        Ok(None)
    }

    async fn head_if_present(&self) -> Result<Option<SignedHead>, AuditError> {
        match self.head().await {
            Ok(head) => Ok(Some(head)),
            Err(AuditError::HeadMissing | AuditError::Corrupt { .. }) => Ok(None),
            Err(other) => Err(other),
        }
    }
}

/// An open append transaction of the [`AuditLog`] (see [`AuditLog::begin_append`]): holds
/// the append locks until it is committed or dropped (dropping rolls back).
pub(crate) struct AppendTx<'a> {
    log: &'a AuditLog,
    _guard: tokio::sync::MutexGuard<'a, ()>,
    tx: sqlx::Transaction<'static, sqlx::Any>,
    last_sequence: u64,
    last_hash: EntryHash,
    last_recorded_at: Option<DateTime<Utc>>,
}

impl AppendTx<'_> {
    /// The transaction's connection, for writes that must commit with the entries.
    pub(crate) fn connection(&mut self) -> &mut sqlx::AnyConnection {
        &mut self.tx
    }

    /// Appends `entry` after the transaction's last entry and re-signs the head (both
    /// uncommitted until [`AppendTx::commit`]); returns the entry as it will be stored.
    ///
    /// # Errors
    /// [`AuditError::Write`] when the database refuses the writes.
    pub(crate) async fn append(&mut self, entry: NewEntry) -> Result<AuditEntry, AuditError> {
        let entry = entry.sanitized();
        let now =
            DateTime::from_timestamp_micros(Utc::now().timestamp_micros()).unwrap_or_else(Utc::now);
        let recorded_at = self.last_recorded_at.map_or(now, |last| now.max(last));
        let sequence = self.last_sequence.checked_add(1).ok_or(AuditError::Full)?;
        let mut stored = AuditEntry {
            sequence,
            recorded_at,
            caller: entry.caller,
            kind: entry.kind,
            meter_id: entry.meter_id,
            period: entry.period,
            input_digest: entry.input_digest,
            decision: entry.decision,
            previous_hash: self.last_hash,
            entry_hash: EntryHash::ZERO,
        };
        stored.entry_hash = stored.compute_hash();

        sqlx::query(
            "INSERT INTO audit_entries (seq, recorded_at_us, caller_subject, caller_role, \
             request_kind, meter_id, period, input_digest, decision, reason, prev_hash, \
             entry_hash) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .bind(sequence_to_db(stored.sequence)?)
        .bind(stored.recorded_at.timestamp_micros())
        .bind(stored.caller.as_ref().map(|c| c.subject.clone()))
        .bind(stored.caller.as_ref().map(|c| c.role.as_str().to_owned()))
        .bind(stored.kind.as_str().to_owned())
        .bind(stored.meter_id.clone())
        .bind(stored.period.clone())
        .bind(stored.input_digest.map(|d| d.to_string()))
        .bind(stored.decision.as_str().to_owned())
        .bind(stored.decision.reason().map(str::to_owned))
        .bind(stored.previous_hash.to_string())
        .bind(stored.entry_hash.to_string())
        .execute(&mut *self.tx)
        .await
        .map_err(AuditError::Write)?;

        let signature = self
            .log
            .key
            .sign(&head_message(sequence, &stored.entry_hash));
        let updated = sqlx::query(
            "UPDATE audit_head SET last_seq = $1, last_hash = $2, key_id = $3, signature = $4 \
             WHERE id = 1",
        )
        .bind(sequence_to_db(sequence)?)
        .bind(stored.entry_hash.to_string())
        .bind(self.log.key.key_id().to_owned())
        .bind(hex::encode(signature.to_bytes()))
        .execute(&mut *self.tx)
        .await
        .map_err(AuditError::Write)?;
        if updated.rows_affected() != 1 {
            return Err(AuditError::HeadMissing);
        }
        self.last_sequence = sequence;
        self.last_hash = stored.entry_hash;
        self.last_recorded_at = Some(recorded_at);
        Ok(stored)
    }

    /// Commits the entries (and the other writes): when this returns `Ok`, they are durable.
    ///
    /// # Errors
    /// [`AuditError::Write`] when the commit fails (nothing was recorded).
    pub(crate) async fn commit(self) -> Result<(), AuditError> {
        let sequence = self.last_sequence;
        let head = Anchor {
            sequence,
            entry_hash: self.last_hash,
        };
        let log = self.log;
        self.tx.commit().await.map_err(AuditError::Write)?;
        tracing::debug!(sequence, "audit entries committed");
        log.record_anchor(head);
        Ok(())
    }
}

fn sequence_to_db(sequence: u64) -> Result<i64, AuditError> {
    i64::try_from(sequence).map_err(|_| AuditError::Full)
}

fn head_from_row(row: &AnyRow) -> Result<SignedHead, AuditError> {
    let corrupt = |detail: String| AuditError::Corrupt {
        sequence: 0,
        detail: format!("head: {detail}"),
    };
    let sequence: i64 = row.try_get(0).map_err(|e| corrupt(e.to_string()))?;
    let hash: String = row.try_get(1).map_err(|e| corrupt(e.to_string()))?;
    Ok(SignedHead {
        sequence: u64::try_from(sequence).map_err(|_| corrupt("negative sequence".into()))?,
        entry_hash: EntryHash::from_hex(&hash).map_err(corrupt)?,
        key_id: row.try_get(2).map_err(|e| corrupt(e.to_string()))?,
        signature: row.try_get(3).map_err(|e| corrupt(e.to_string()))?,
    })
}

/// One row of `audit_entries` exactly as stored (before any interpretation), so that
/// verification can report malformed values as damage rather than fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct StoredRow {
    pub(super) seq: i64,
    recorded_at_us: i64,
    caller_subject: Option<String>,
    caller_role: Option<String>,
    request_kind: String,
    meter_id: Option<String>,
    period: Option<String>,
    input_digest: Option<String>,
    decision: String,
    reason: Option<String>,
    prev_hash: String,
    entry_hash: String,
    unreadable: Option<String>,
}

impl StoredRow {
    fn from_row(row: &AnyRow) -> Result<Self, String> {
        fn get<T>(row: &AnyRow, index: usize, name: &str) -> Result<T, String>
        where
            T: for<'r> sqlx::Decode<'r, sqlx::Any> + sqlx::Type<sqlx::Any>,
        {
            row.try_get(index)
                .map_err(|e| format!("column {name} cannot be read: {e}"))
        }
        Ok(Self {
            seq: get(row, 0, "seq")?,
            recorded_at_us: get(row, 1, "recorded_at_us")?,
            caller_subject: get(row, 2, "caller_subject")?,
            caller_role: get(row, 3, "caller_role")?,
            request_kind: get(row, 4, "request_kind")?,
            meter_id: get(row, 5, "meter_id")?,
            period: get(row, 6, "period")?,
            input_digest: get(row, 7, "input_digest")?,
            decision: get(row, 8, "decision")?,
            reason: get(row, 9, "reason")?,
            prev_hash: get(row, 10, "prev_hash")?,
            entry_hash: get(row, 11, "entry_hash")?,
            unreadable: None,
        })
    }

    /// A placeholder for a row whose columns could not even be decoded.
    fn unreadable(detail: String) -> Self {
        Self {
            seq: -1,
            recorded_at_us: 0,
            caller_subject: None,
            caller_role: None,
            request_kind: String::new(),
            meter_id: None,
            period: None,
            input_digest: None,
            decision: String::new(),
            reason: None,
            prev_hash: String::new(),
            entry_hash: String::new(),
            unreadable: Some(detail),
        }
    }

    /// Interprets the row; `Err` says what is malformed.
    pub(super) fn to_entry(&self) -> Result<AuditEntry, String> {
        if let Some(detail) = &self.unreadable {
            return Err(detail.clone());
        }
        let sequence =
            u64::try_from(self.seq).map_err(|_| format!("negative sequence {}", self.seq))?;
        let recorded_at = DateTime::from_timestamp_micros(self.recorded_at_us)
            .ok_or_else(|| format!("timestamp {} out of range", self.recorded_at_us))?;
        let caller = match (&self.caller_subject, &self.caller_role) {
            (None, None) => None,
            (Some(subject), Some(role)) => Some(EntryCaller {
                subject: subject.clone(),
                role: role
                    .parse::<Role>()
                    .map_err(|_| format!("unknown caller role {role:?}"))?,
            }),
            _ => return Err("caller subject and role must be both set or both empty".into()),
        };
        let kind = RequestKind::try_new(self.request_kind.clone())
            .map_err(|_| format!("invalid request kind {:?}", self.request_kind))?;
        let input_digest = self
            .input_digest
            .as_deref()
            .map(InputDigest::from_hex)
            .transpose()
            .map_err(|e| format!("input digest: {e}"))?;
        let decision = match (self.decision.as_str(), &self.reason) {
            ("granted", None) => Decision::Granted,
            ("refused", Some(reason)) => Decision::Refused {
                reason: reason.clone(),
            },
            (decision, reason) => {
                return Err(format!(
                    "decision {decision:?} with {} reason",
                    if reason.is_some() { "a" } else { "no" }
                ));
            }
        };
        Ok(AuditEntry {
            sequence,
            recorded_at,
            caller,
            kind,
            meter_id: self.meter_id.clone(),
            period: self.period.clone(),
            input_digest,
            decision,
            previous_hash: EntryHash::from_hex(&self.prev_hash)
                .map_err(|e| format!("previous hash: {e}"))?,
            entry_hash: EntryHash::from_hex(&self.entry_hash)
                .map_err(|e| format!("entry hash: {e}"))?,
        })
    }
}

/// [`seer_service::db::prepare_sqlite_url`], with this crate's error.
fn prepare_sqlite_url(url: &str) -> Result<String, AuditError> {
    seer_service::db::prepare_sqlite_url(url).map_err(|e| AuditError::CreateDirectory {
        path: e.path,
        source: e.source,
    })
}

/// See [`AuditLog::released_in_chain`]: the sequence of the granted entry of `kind` for
/// (`meter_id`, `period`), read through `connection`.
///
/// # Errors
/// When the query fails.
pub async fn released_in_chain(
    connection: &mut sqlx::AnyConnection,
    kind: &RequestKind,
    meter_id: &str,
    period: &str,
) -> Result<Option<u64>, sqlx::Error> {
    let sequence: Option<i64> = sqlx::query_scalar(
        "SELECT MIN(seq) FROM audit_entries WHERE request_kind = $1 AND meter_id = $2 \
         AND period = $3 AND decision = 'granted'",
    )
    .bind(kind.as_str().to_owned())
    .bind(meter_id.to_owned())
    .bind(period.to_owned())
    .fetch_one(connection)
    .await?;
    Ok(sequence.and_then(|s| u64::try_from(s).ok()))
}

/// Whether the chain holds a granted entry of `kind` for (`meter_id`, `period`) whose input
/// digest is `digest`: how a receipt row is bound to the chain (its entry's digest is the
/// SHA-256 of the statement the meter signed), read through `connection`.
///
/// # Errors
/// When the query fails.
pub async fn granted_in_chain(
    connection: &mut sqlx::AnyConnection,
    kind: &RequestKind,
    meter_id: &str,
    period: &str,
    digest: &InputDigest,
) -> Result<bool, sqlx::Error> {
    let found: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM audit_entries WHERE meter_id = $1 AND request_kind = $2 \
         AND period = $3 AND input_digest = $4 AND decision = 'granted'",
    )
    .bind(meter_id.to_owned())
    .bind(kind.as_str().to_owned())
    .bind(period.to_owned())
    .bind(digest.to_string())
    .fetch_one(connection)
    .await?;
    Ok(found > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact_url("postgres://seer:hunter2@db:5432/ka?sslmode=require"),
            "postgres://seer:***@db:5432/ka?sslmode=require"
        );
        assert_eq!(redact_url("postgres://seer@db/ka"), "postgres://seer@db/ka");
        assert_eq!(redact_url("sqlite:ka.db"), "sqlite:ka.db");
    }

    #[test]
    fn backends_follow_the_scheme() {
        assert_eq!(backend_of("sqlite:a.db").expect("ok"), Backend::Sqlite);
        assert_eq!(
            backend_of("postgresql://x/y").expect("ok"),
            Backend::Postgres
        );
        assert!(backend_of("mysql://x/y").is_err());
        assert!(backend_of("a.db").is_err());
    }

    #[test]
    fn sqlite_urls_open_read_write_create() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sub").join("audit.db");
        let url = format!("sqlite://{}", path.display());
        assert_eq!(
            prepare_sqlite_url(&url).expect("ok"),
            format!("{url}?mode=rwc")
        );
        assert!(path.parent().expect("parent").is_dir());
        assert_eq!(
            prepare_sqlite_url(&format!("{url}?mode=ro")).expect("ok"),
            format!("{url}?mode=ro")
        );
        assert_eq!(
            prepare_sqlite_url(&format!("{url}?cache=private")).expect("ok"),
            format!("{url}?cache=private&mode=rwc")
        );
        assert_eq!(
            prepare_sqlite_url("sqlite::memory:").expect("ok"),
            "sqlite::memory:"
        );
    }
}
