//! The durable local state and outbound queue: one SQLite file, `state.db`, in the meter's
//! `--state` directory.
//!
//! # Why SQLite
//!
//! The state that must survive a crash is small and relational — the lane state (sequence,
//! Wh register, slab accumulator, privacy accountant), the pinned public keys and the queued
//! batches — and the invariant that matters is that a batch and the state that produced it
//! change **together**. SQLite gives exactly that as one transaction, with its journal doing
//! the fsync ordering that an append-only directory of files would have to reimplement
//! (write, fsync, rename, fsync the directory, and a separate mechanism to make the state
//! update and the file appear atomically). It is embedded (nothing to run), and the
//! workspace already builds it through `sqlx`. The database runs in WAL mode with
//! `synchronous = FULL`, so a committed transaction survives power loss.
//!
//! # The crash-safety argument
//!
//! - **Build, commit, then send.** [`StateStore::commit_batch`] inserts the fully built batch
//!   (both ciphertexts serialized, sequence assigned) and advances the lane state in one
//!   transaction, guarded by the expected sequence. Nothing is sent before that commit.
//! - A crash **before the commit** loses only in-memory work: no byte of the batch left the
//!   meter, the ε it charged and the slab split it made were never persisted, and the restart
//!   rebuilds the batch from the same readings with the same sequence (and fresh noise, which
//!   is fine: the first draws were never released, and no draw is ever used twice).
//! - A crash **after the commit** (before sending, or after sending but before the ack was
//!   processed) leaves the batch in the outbox: the restart sends the **same bytes** with the
//!   same sequence. The utility server acknowledges a resend of a stored sequence with equal
//!   content as a duplicate, so nothing is stored twice; the ε was charged once, in the
//!   committed state.
//! - A batch leaves the outbox only when **both** the utility server and the key authority
//!   hold it: the utility's ack ([`StateStore::acknowledge`], or its cursor showing the
//!   sequence stored) raises `acked_through`, the key authority's ack of the batch's receipt
//!   ([`StateStore::acknowledge_receipt`]) sets `receipt_acked_at`, and whichever comes second
//!   deletes the row, in the same transaction that records it. Sequences come from the lane
//!   state, which only the committing transaction advances: they start at 1 and have no gaps.
//! - **Receipts are part of the queued batch.** The receipt's digest (BLAKE3 of the billing
//!   lane) is written in the committing transaction, so a crash can never leave a batch
//!   without its receipt, and every resend of the receipt — after a lost ack, a crash or a
//!   restart — carries the same digest (it is checked against the stored lane before each
//!   use). A crash after the utility's ack but before the receipt's leaves the row queued
//!   with its receipt pending: the restart records it (the key authority acknowledges an
//!   identical resend as a duplicate) and only then removes the row. A crash after the
//!   receipt's ack but before the utility's is the symmetric case.
//! - Rows queued by a version that predates receipts hold per-batch (not period-to-date)
//!   billing lanes and no receipt: they are refused ([`Error::CorruptState`]) rather than sent
//!   under the new semantics.
//! - Each batch row carries a BLAKE3 digest of its content (its noise plan included, when it
//!   has one), checked before it is sent, so a damaged file is reported instead of uploaded.
//!   The plan is stored as its `seer.v1.NoisePlan` encoding; rows queued before plans existed
//!   have none and read back without one, their digests unchanged.
//! - The household's privacy ledger ([`crate::privacy`]) is written in the transaction that
//!   commits the charge (the batch with its lane state, or forecast-lane draws with their
//!   accountants), so it never shows a charge that was not committed, nor misses one.
//! - Each batch's readings (whole Wh, and what its analytics lane carried for each) are written
//!   to table `readings` in the transaction that commits the batch, so the household's
//!   dashboard and Green Button export ([`crate::dashboard`]) show exactly what was queued.
//!   The rows stay after the batch leaves the outbox.
//! - One process at a time: the directory is locked (`state.lock`) while a store is open.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::str::FromStr as _;
use std::time::Duration;

use chrono::{FixedOffset, NaiveDate, NaiveDateTime, Utc};
use prost::Message as _;
use seer_core::data::Period;
use seer_core::dp::{Epsilon, NoisyWh, PrivacyAccountant};
use seer_core::tariff::{CellEnergy, Tariff};
use seer_core::units::Wh;
use sqlx::migrate::Migrator;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{Row as _, Sqlite, Transaction};

use crate::batch::{
    BuiltBatch, LaneState, QueuedReading, SealedBatch, register_from, register_remainder,
};
use crate::error::Error;
use crate::privacy::{LedgerEntry, PrivacyLane};
use crate::signing::BatchSignatures;

static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// The database file inside the state directory.
pub const DATABASE_FILE: &str = "state.db";
/// The lock file inside the state directory.
pub const LOCK_FILE: &str = "state.lock";

const TIME_FORMAT: &str = "%Y-%m-%dT%H:%M:%S";

/// Who a state directory belongs to: checked on every start, so one directory never mixes two
/// meters, two billing blocks or two tariffs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The meter's id.
    pub meter_id: String,
    /// The meter's home number in the deployment (its billing block).
    pub home_index: u64,
    /// BLAKE3 of the tariff's canonical JSON form (slab splits depend on it).
    pub tariff_blake3: String,
}

impl Identity {
    /// The identity of `meter_id` at `home_index` billed under `tariff`.
    pub fn new(meter_id: impl Into<String>, home_index: u64, tariff: &Tariff) -> Self {
        let canonical = serde_json::to_vec(tariff).unwrap_or_default();
        Self {
            meter_id: meter_id.into(),
            home_index,
            tariff_blake3: blake3::hash(&canonical).to_hex().to_string(),
        }
    }
}

/// A public key pinned on first use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PinnedKey {
    /// The parameter-set id.
    pub parameter_set_id: String,
    /// BLAKE3 of the key object, hex.
    pub public_key_blake3: String,
    /// The key object's size in bytes.
    pub public_key_bytes: u64,
}

/// Whether a key was pinned now or matched an earlier pin.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PinOutcome {
    /// First use: the digest is now pinned.
    Pinned,
    /// The digest equals the pinned one.
    Matched,
}

/// What `meter-client info` shows about a state directory.
#[derive(Clone, Debug, PartialEq)]
pub struct StateSummary {
    /// The identity, once the client has run.
    pub identity: Option<Identity>,
    /// Pinned public keys.
    pub pinned_keys: Vec<PinnedKey>,
    /// Batches built so far (the last sequence assigned).
    pub batches_built: u64,
    /// The highest sequence the utility server acknowledged.
    pub acked_through: u64,
    /// Batches in the outbox.
    pub queued: u64,
    /// Bytes of ciphertext in the outbox.
    pub queued_bytes: u64,
    /// Queued batches whose receipts the key authority has not acknowledged yet.
    pub receipts_pending: u64,
    /// The start of the last reading queued.
    pub last_reading: Option<NaiveDateTime>,
    /// The privacy accountant.
    pub accountant: Option<PrivacyAccountant>,
}

/// The meter's durable state and outbox; see the [module docs](self).
#[derive(Debug)]
pub struct StateStore {
    pool: SqlitePool,
    dir: PathBuf,
    _lock: File,
}

impl StateStore {
    /// Opens (creating if needed) the state in `dir`, locks the directory and applies the
    /// schema.
    ///
    /// # Errors
    /// When the directory cannot be created or is locked by another process, or the database
    /// cannot be opened or migrated.
    pub async fn open(dir: &Path) -> Result<Self, Error> {
        let dir_error = |reason: String| Error::StateDirectory {
            path: dir.to_path_buf(),
            reason,
        };
        std::fs::create_dir_all(dir).map_err(|e| dir_error(format!("cannot create: {e}")))?;
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(LOCK_FILE))
            .map_err(|e| dir_error(format!("cannot open {LOCK_FILE}: {e}")))?;
        lock.try_lock().map_err(|e| {
            dir_error(format!(
                "cannot lock {LOCK_FILE} ({e}): another meter-client is using this directory"
            ))
        })?;
        // The state holds plaintext readings and totals: the file is created private (0600),
        // and SQLite gives its -wal and -shm files the same mode.
        #[cfg(unix)]
        {
            use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
            let path = dir.join(DATABASE_FILE);
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(&path)
                .and_then(|_| {
                    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                })
                .map_err(|e| dir_error(format!("cannot create {DATABASE_FILE}: {e}")))?;
        }
        let options = SqliteConnectOptions::new()
            .filename(dir.join(DATABASE_FILE))
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(2)
            .connect_with(options)
            .await
            .map_err(Error::db("opening the database"))?;
        MIGRATOR.run(&pool).await?;
        Ok(Self {
            pool,
            dir: dir.to_path_buf(),
            _lock: lock,
        })
    }

    /// The state directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The database, for the modules that keep their own tables in the state file (the live
    /// source's inbox, [`crate::mqtt::inbox`]).
    pub(crate) fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Closes the database (waits for the connections to finish).
    pub async fn close(self) {
        self.pool.close().await;
    }

    /// The recorded identity, if any.
    ///
    /// # Errors
    /// A database error.
    pub async fn identity(&self) -> Result<Option<Identity>, Error> {
        let row = sqlx::query("SELECT meter_id, home_index, tariff_blake3 FROM identity")
            .fetch_optional(&self.pool)
            .await
            .map_err(Error::db("reading the identity"))?;
        row.map(|row| {
            Ok(Identity {
                meter_id: row
                    .try_get("meter_id")
                    .map_err(Error::db("reading the identity"))?,
                home_index: get_u64(&row, "home_index")?,
                tariff_blake3: row
                    .try_get("tariff_blake3")
                    .map_err(Error::db("reading the identity"))?,
            })
        })
        .transpose()
    }

    /// Records `configured` on first use; afterwards refuses any difference.
    ///
    /// # Errors
    /// [`Error::StateMismatch`] naming the differing field; a database error.
    pub async fn ensure_identity(&self, configured: &Identity) -> Result<(), Error> {
        if let Some(stored) = self.identity().await? {
            let mismatch = |field, stored: String, configured: String| {
                Err(Error::StateMismatch {
                    field,
                    stored,
                    configured,
                })
            };
            if stored.meter_id != configured.meter_id {
                return mismatch("meter id", stored.meter_id, configured.meter_id.clone());
            }
            if stored.home_index != configured.home_index {
                return mismatch(
                    "home index",
                    stored.home_index.to_string(),
                    configured.home_index.to_string(),
                );
            }
            if stored.tariff_blake3 != configured.tariff_blake3 {
                return mismatch(
                    "tariff",
                    format!("blake3 {}", stored.tariff_blake3),
                    format!("blake3 {}", configured.tariff_blake3),
                );
            }
            return Ok(());
        }
        sqlx::query(
            "INSERT INTO identity (id, meter_id, home_index, tariff_blake3, created_at) \
             VALUES (1, ?, ?, ?, ?)",
        )
        .bind(&configured.meter_id)
        .bind(to_i64(configured.home_index)?)
        .bind(&configured.tariff_blake3)
        .bind(now())
        .execute(&self.pool)
        .await
        .map_err(Error::db("recording the identity"))?;
        Ok(())
    }

    /// Pins `key` on first use for its parameter set, or checks it against the pin.
    ///
    /// # Errors
    /// [`Error::PublicKeyChanged`] when the digest differs from the pinned one.
    pub async fn pin_public_key(&self, key: &PinnedKey) -> Result<PinOutcome, Error> {
        let pinned: Option<String> = sqlx::query_scalar(
            "SELECT public_key_blake3 FROM pinned_keys WHERE parameter_set_id = ?",
        )
        .bind(&key.parameter_set_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(Error::db("reading the pinned key"))?;
        match pinned {
            Some(p) if p == key.public_key_blake3 => Ok(PinOutcome::Matched),
            Some(p) => Err(Error::PublicKeyChanged {
                parameter_set: key.parameter_set_id.clone(),
                pinned: p,
                served: key.public_key_blake3.clone(),
            }),
            None => {
                sqlx::query(
                    "INSERT INTO pinned_keys \
                     (parameter_set_id, public_key_blake3, public_key_bytes, pinned_at) \
                     VALUES (?, ?, ?, ?)",
                )
                .bind(&key.parameter_set_id)
                .bind(&key.public_key_blake3)
                .bind(to_i64(key.public_key_bytes)?)
                .bind(now())
                .execute(&self.pool)
                .await
                .map_err(Error::db("pinning the public key"))?;
                Ok(PinOutcome::Pinned)
            }
        }
    }

    /// The pinned keys.
    ///
    /// # Errors
    /// A database error.
    pub async fn pinned_keys(&self) -> Result<Vec<PinnedKey>, Error> {
        let rows = sqlx::query(
            "SELECT parameter_set_id, public_key_blake3, public_key_bytes FROM pinned_keys \
             ORDER BY parameter_set_id",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(Error::db("reading the pinned keys"))?;
        rows.iter()
            .map(|row| {
                Ok(PinnedKey {
                    parameter_set_id: row
                        .try_get("parameter_set_id")
                        .map_err(Error::db("reading the pinned keys"))?,
                    public_key_blake3: row
                        .try_get("public_key_blake3")
                        .map_err(Error::db("reading the pinned keys"))?,
                    public_key_bytes: get_u64(row, "public_key_bytes")?,
                })
            })
            .collect()
    }

    /// The lane state after the last committed batch, for `tariff` (whose shape the stored
    /// period cells must have).
    ///
    /// # Errors
    /// A database error or an inconsistent stored state.
    pub async fn lane_state(&self, tariff: &Tariff) -> Result<LaneState, Error> {
        let row = sqlx::query(
            "SELECT next_sequence, last_reading, register_remainder_j, period, period_cells, \
             accountant FROM lane_state WHERE id = 1",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(Error::db("reading the lane state"))?;
        let corrupt = |what: &str, e: &dyn std::fmt::Display| Error::CorruptState {
            reason: format!("lane state {what}: {e}"),
        };
        let get_text = |col: &str| -> Result<Option<String>, Error> {
            row.try_get(col).map_err(|e| corrupt(col, &e))
        };
        let last_reading = get_text("last_reading")?
            .map(|t| parse_time(&t))
            .transpose()?;
        let period = get_text("period")?
            .map(|p| Period::from_str(&p).map_err(|e| corrupt("period", &e)))
            .transpose()?;
        let period_cells = get_text("period_cells")?
            .map(|json| -> Result<CellEnergy, Error> {
                let raw: Vec<i64> =
                    serde_json::from_str(&json).map_err(|e| corrupt("period cells", &e))?;
                let cells = raw
                    .into_iter()
                    .map(Wh::try_new)
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(CellEnergy::try_from_cells(tariff, cells)?)
            })
            .transpose()?;
        let accountant = get_text("accountant")?
            .map(|json| {
                serde_json::from_str::<PrivacyAccountant>(&json)
                    .map_err(|e| corrupt("accountant", &e))
            })
            .transpose()?;
        let remainder: i64 = row
            .try_get("register_remainder_j")
            .map_err(|e| corrupt("register", &e))?;
        Ok(LaneState {
            next_sequence: get_u64(&row, "next_sequence")?,
            last_reading,
            register: register_from(remainder)?,
            period,
            period_cells,
            accountant,
        })
    }

    /// Commits `built`'s batch to the outbox (with its noise plan), its lane state and its
    /// privacy-ledger entries, in one transaction. The stored lane state's next sequence must
    /// be the batch's sequence (so two writers cannot both commit), and the new lane state's
    /// must follow it.
    ///
    /// # Errors
    /// [`Error::CorruptState`] if the sequences do not line up; a database error (nothing is
    /// committed then).
    pub async fn commit_batch(&self, built: &BuiltBatch) -> Result<(), Error> {
        self.commit_batch_signed(built, None).await
    }

    /// [`Self::commit_batch`], storing the meter's `signatures` over the batch with it (see
    /// [`crate::signing`]).
    ///
    /// # Errors
    /// As [`Self::commit_batch`].
    pub async fn commit_batch_signed(
        &self,
        built: &BuiltBatch,
        signatures: Option<&BatchSignatures>,
    ) -> Result<(), Error> {
        let (batch, next) = (&built.batch, &built.next);
        if next.next_sequence != batch.sequence + 1 {
            return Err(Error::CorruptState {
                reason: format!(
                    "batch {} would be followed by sequence {}",
                    batch.sequence, next.next_sequence
                ),
            });
        }
        let cells = next
            .period_cells
            .as_ref()
            .map(|c| serde_json::to_string(&c.cells().iter().map(|w| w.get()).collect::<Vec<_>>()))
            .transpose()
            .map_err(|e| Error::CorruptState {
                reason: format!("cannot serialize period cells: {e}"),
            })?;
        let accountant = next
            .accountant
            .as_ref()
            .map(serde_json::to_string)
            .transpose()
            .map_err(|e| Error::CorruptState {
                reason: format!("cannot serialize the accountant: {e}"),
            })?;
        let mut tx = self.begin().await?;
        let updated = sqlx::query(
            "UPDATE lane_state SET next_sequence = ?, last_reading = ?, \
             register_remainder_j = ?, period = ?, period_cells = ?, accountant = ? \
             WHERE id = 1 AND next_sequence = ?",
        )
        .bind(to_i64(next.next_sequence)?)
        .bind(next.last_reading.map(format_time))
        .bind(register_remainder(&next.register))
        .bind(next.period.map(|p| p.to_string()))
        .bind(cells)
        .bind(accountant)
        .bind(to_i64(batch.sequence)?)
        .execute(&mut *tx)
        .await
        .map_err(Error::db("advancing the lane state"))?;
        if updated.rows_affected() != 1 {
            return Err(Error::CorruptState {
                reason: format!(
                    "the lane state is not at sequence {} (another writer?)",
                    batch.sequence
                ),
            });
        }
        sqlx::query(
            "INSERT INTO outbox (sequence, period, start_at, end_at, utc_offset_s, readings, \
             billing_group, billing_position, billing_lane, analytics_lane, epsilon_spent, \
             digest, queued_at, receipt_blake3, batch_signature, receipt_signature, noise_plan) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(to_i64(batch.sequence)?)
        .bind(batch.period.to_string())
        .bind(format_time(batch.start))
        .bind(format_time(batch.end))
        .bind(i64::from(batch.utc_offset.local_minus_utc()))
        .bind(i64::from(batch.readings))
        .bind(i64::from(batch.billing_group))
        .bind(i64::from(batch.billing_position))
        .bind(batch.billing_lane.clone())
        .bind(batch.analytics_lane.clone())
        .bind(batch.epsilon_spent)
        .bind(batch.digest())
        .bind(now())
        .bind(batch.billing_lane_blake3().to_vec())
        .bind(signatures.map(|s| s.batch.clone()))
        .bind(signatures.map(|s| s.receipt.clone()))
        .bind(
            batch
                .noise
                .as_ref()
                .map(|plan| seer_proto::statements::noise_plan_wire(plan).encode_to_vec()),
        )
        .execute(&mut *tx)
        .await
        .map_err(Error::db("queueing the batch"))?;
        record_ledger(&mut tx, &built.ledger).await?;
        record_readings(&mut tx, &built.readings).await?;
        tx.commit()
            .await
            .map_err(Error::db("committing the batch"))?;
        Ok(())
    }

    /// The queued batch with `sequence`, if it is still queued; its digest is checked.
    ///
    /// # Errors
    /// [`Error::CorruptState`] when the row does not match its digest; a database error.
    pub async fn batch(&self, sequence: u64) -> Result<Option<SealedBatch>, Error> {
        let row = sqlx::query("SELECT * FROM outbox WHERE sequence = ?")
            .bind(to_i64(sequence)?)
            .fetch_optional(&self.pool)
            .await
            .map_err(Error::db("reading a queued batch"))?;
        row.map(|row| batch_from_row(&row)).transpose()
    }

    /// The meter's stored signatures over the queued batch `sequence` (None: not queued, or
    /// queued unsigned).
    ///
    /// # Errors
    /// A database error.
    pub async fn signatures(&self, sequence: u64) -> Result<Option<BatchSignatures>, Error> {
        let row: Option<SignatureColumns> = sqlx::query_as(
            "SELECT batch_signature, receipt_signature FROM outbox WHERE sequence = ?",
        )
        .bind(to_i64(sequence)?)
        .fetch_optional(&self.pool)
        .await
        .map_err(Error::db("reading a batch's signatures"))?;
        Ok(match row {
            Some((Some(batch), Some(receipt))) => Some(BatchSignatures { batch, receipt }),
            _ => None,
        })
    }

    /// The sequences in the outbox, ascending.
    ///
    /// # Errors
    /// A database error.
    pub async fn queued_sequences(&self) -> Result<Vec<u64>, Error> {
        let seqs: Vec<i64> = sqlx::query_scalar("SELECT sequence FROM outbox ORDER BY sequence")
            .fetch_all(&self.pool)
            .await
            .map_err(Error::db("listing the outbox"))?;
        seqs.into_iter()
            .map(|s| {
                u64::try_from(s).map_err(|_| Error::CorruptState {
                    reason: format!("negative sequence {s}"),
                })
            })
            .collect()
    }

    /// The number of batches in the outbox.
    ///
    /// # Errors
    /// A database error.
    pub async fn queued_count(&self) -> Result<u64, Error> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM outbox")
            .fetch_one(&self.pool)
            .await
            .map_err(Error::db("counting the outbox"))?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Records that the utility server holds every sequence up to `through`: raises
    /// `acked_through` and removes from the outbox the batches whose receipts were
    /// acknowledged too (the others stay until their receipt is). Returns how many queued
    /// batches this newly marked as held by the utility server.
    ///
    /// # Errors
    /// [`Error::CorruptState`] if `through` is beyond the last sequence built; a database
    /// error.
    pub async fn acknowledge(&self, through: u64) -> Result<u64, Error> {
        if through == 0 {
            return Ok(0);
        }
        let mut tx = self.begin().await?;
        let (built, acked): (i64, i64) =
            sqlx::query_as("SELECT next_sequence - 1, acked_through FROM lane_state WHERE id = 1")
                .fetch_one(&mut *tx)
                .await
                .map_err(Error::db("reading the lane state"))?;
        let through = to_i64(through)?;
        if through > built {
            return Err(Error::CorruptState {
                reason: format!(
                    "acknowledgement of {through}, but only {built} batches were built"
                ),
            });
        }
        let newly: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE sequence > ? AND sequence <= ?")
                .bind(acked)
                .bind(through)
                .fetch_one(&mut *tx)
                .await
                .map_err(Error::db("reading the outbox"))?;
        sqlx::query("DELETE FROM outbox WHERE sequence <= ? AND receipt_acked_at IS NOT NULL")
            .bind(through)
            .execute(&mut *tx)
            .await
            .map_err(Error::db("removing acknowledged batches"))?;
        sqlx::query("UPDATE lane_state SET acked_through = MAX(acked_through, ?) WHERE id = 1")
            .bind(through)
            .execute(&mut *tx)
            .await
            .map_err(Error::db("recording the acknowledgement"))?;
        tx.commit()
            .await
            .map_err(Error::db("committing the acknowledgement"))?;
        Ok(u64::try_from(newly).unwrap_or(0))
    }

    /// Records that the key authority holds the receipt of queued batch `sequence`; removes
    /// the batch if the utility server holds it too. Idempotent.
    ///
    /// # Errors
    /// [`Error::CorruptState`] if the batch is not queued; a database error.
    pub async fn acknowledge_receipt(&self, sequence: u64) -> Result<(), Error> {
        let sequence = to_i64(sequence)?;
        let mut tx = self.begin().await?;
        let marked = sqlx::query(
            "UPDATE outbox SET receipt_acked_at = COALESCE(receipt_acked_at, ?) \
             WHERE sequence = ?",
        )
        .bind(now())
        .bind(sequence)
        .execute(&mut *tx)
        .await
        .map_err(Error::db("recording the receipt's acknowledgement"))?
        .rows_affected();
        if marked != 1 {
            return Err(Error::CorruptState {
                reason: format!("receipt of batch {sequence} acknowledged, but it is not queued"),
            });
        }
        sqlx::query(
            "DELETE FROM outbox WHERE sequence = ? \
             AND sequence <= (SELECT acked_through FROM lane_state WHERE id = 1)",
        )
        .bind(sequence)
        .execute(&mut *tx)
        .await
        .map_err(Error::db("removing an acknowledged batch"))?;
        tx.commit()
            .await
            .map_err(Error::db("committing the receipt's acknowledgement"))?;
        Ok(())
    }

    /// The queued batches whose receipts the key authority has not acknowledged yet,
    /// ascending.
    ///
    /// # Errors
    /// A database error.
    pub async fn pending_receipts(&self) -> Result<Vec<u64>, Error> {
        let seqs: Vec<i64> = sqlx::query_scalar(
            "SELECT sequence FROM outbox WHERE receipt_acked_at IS NULL ORDER BY sequence",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(Error::db("listing pending receipts"))?;
        seqs.into_iter()
            .map(|s| {
                u64::try_from(s).map_err(|_| Error::CorruptState {
                    reason: format!("negative sequence {s}"),
                })
            })
            .collect()
    }

    /// The last sequence built (0 before the first batch).
    ///
    /// # Errors
    /// A database error.
    pub async fn built_through(&self) -> Result<u64, Error> {
        let n: i64 = sqlx::query_scalar("SELECT next_sequence - 1 FROM lane_state WHERE id = 1")
            .fetch_one(&self.pool)
            .await
            .map_err(Error::db("reading the lane state"))?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// The highest sequence acknowledged so far.
    ///
    /// # Errors
    /// A database error.
    pub async fn acked_through(&self) -> Result<u64, Error> {
        let n: i64 = sqlx::query_scalar("SELECT acked_through FROM lane_state WHERE id = 1")
            .fetch_one(&self.pool)
            .await
            .map_err(Error::db("reading the lane state"))?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// A summary for `meter-client info` (no tariff needed: the cells are not decoded).
    ///
    /// # Errors
    /// A database error or an inconsistent stored state.
    pub async fn summary(&self) -> Result<StateSummary, Error> {
        let row = sqlx::query(
            "SELECT next_sequence, acked_through, last_reading, accountant, \
             (SELECT COUNT(*) FROM outbox) AS queued, \
             (SELECT COUNT(*) FROM outbox WHERE receipt_acked_at IS NULL) AS receipts_pending, \
             (SELECT COALESCE(SUM(LENGTH(billing_lane) + LENGTH(analytics_lane)), 0) \
              FROM outbox) AS queued_bytes \
             FROM lane_state WHERE id = 1",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(Error::db("reading the lane state"))?;
        let last: Option<String> = row
            .try_get("last_reading")
            .map_err(Error::db("reading the lane state"))?;
        let accountant: Option<String> = row
            .try_get("accountant")
            .map_err(Error::db("reading the lane state"))?;
        Ok(StateSummary {
            identity: self.identity().await?,
            pinned_keys: self.pinned_keys().await?,
            batches_built: get_u64(&row, "next_sequence")?.saturating_sub(1),
            acked_through: get_u64(&row, "acked_through")?,
            queued: get_u64(&row, "queued")?,
            queued_bytes: get_u64(&row, "queued_bytes")?,
            receipts_pending: get_u64(&row, "receipts_pending")?,
            last_reading: last.map(|t| parse_time(&t)).transpose()?,
            accountant: accountant
                .map(|json| {
                    serde_json::from_str(&json).map_err(|e| Error::CorruptState {
                        reason: format!("accountant: {e}"),
                    })
                })
                .transpose()?,
        })
    }

    /// The forecast lane's stored draws of `mechanism` for readings starting in
    /// `[from, until)`, by reading start.
    ///
    /// # Errors
    /// A database error or a malformed stored timestamp.
    pub async fn forecast_draws(
        &self,
        mechanism: &str,
        from: NaiveDateTime,
        until: NaiveDateTime,
    ) -> Result<BTreeMap<NaiveDateTime, NoisyWh>, Error> {
        let rows = sqlx::query(
            "SELECT start_at, noisy_wh FROM forecast_lane_draws \
             WHERE mechanism = ? AND start_at >= ? AND start_at < ?",
        )
        .bind(mechanism)
        .bind(format_time(from))
        .bind(format_time(until))
        .fetch_all(&self.pool)
        .await
        .map_err(Error::db("reading the forecast lane"))?;
        rows.iter()
            .map(|row| {
                let start: String = row
                    .try_get("start_at")
                    .map_err(Error::db("reading the forecast lane"))?;
                let wh: i64 = row
                    .try_get("noisy_wh")
                    .map_err(Error::db("reading the forecast lane"))?;
                Ok((parse_time(&start)?, NoisyWh::new(wh)))
            })
            .collect()
    }

    /// The forecast lane's accountants, one per calendar month charged so far, by the month's
    /// first day.
    ///
    /// # Errors
    /// A database error or an invalid stored accountant.
    pub async fn forecast_accountants(
        &self,
    ) -> Result<BTreeMap<NaiveDate, PrivacyAccountant>, Error> {
        let rows = sqlx::query("SELECT accountant FROM forecast_lane_budget")
            .fetch_all(&self.pool)
            .await
            .map_err(Error::db("reading the forecast lane's budget"))?;
        rows.iter()
            .map(|row| {
                let json: String = row
                    .try_get("accountant")
                    .map_err(Error::db("reading the forecast lane's budget"))?;
                let a: PrivacyAccountant =
                    serde_json::from_str(&json).map_err(|e| Error::CorruptState {
                        reason: format!("forecast lane accountant: {e}"),
                    })?;
                Ok((a.period_start(), a))
            })
            .collect()
    }

    /// Stores new forecast-lane `draws` of `mechanism`, the `accountants` they were charged
    /// to and their privacy-ledger entries (`ledger`), in one transaction: a draw is never
    /// stored without its charge, nor a charge without its draw.
    ///
    /// # Errors
    /// [`Error::CorruptState`] if a reading already has a draw of `mechanism` (a reading is
    /// noised once); a database error (nothing is committed then).
    pub async fn commit_forecast_draws(
        &self,
        mechanism: &str,
        draws: &[(NaiveDateTime, NoisyWh)],
        accountants: &[PrivacyAccountant],
        ledger: &[LedgerEntry],
    ) -> Result<(), Error> {
        let mut tx = self.begin().await?;
        for (start, wh) in draws {
            let inserted = sqlx::query(
                "INSERT INTO forecast_lane_draws (mechanism, start_at, noisy_wh) \
                 VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
            )
            .bind(mechanism)
            .bind(format_time(*start))
            .bind(wh.get())
            .execute(&mut *tx)
            .await
            .map_err(Error::db("storing the forecast lane"))?;
            if inserted.rows_affected() != 1 {
                return Err(Error::CorruptState {
                    reason: format!(
                        "the reading at {start} already has a forecast-lane draw ({mechanism})"
                    ),
                });
            }
        }
        for a in accountants {
            let json = serde_json::to_string(a).map_err(|e| Error::CorruptState {
                reason: format!("cannot serialize the accountant: {e}"),
            })?;
            sqlx::query(
                "INSERT INTO forecast_lane_budget (period_start, accountant) VALUES (?, ?) \
                 ON CONFLICT (period_start) DO UPDATE SET accountant = excluded.accountant",
            )
            .bind(a.period_start().to_string())
            .bind(json)
            .execute(&mut *tx)
            .await
            .map_err(Error::db("storing the forecast lane's budget"))?;
        }
        record_ledger(&mut tx, ledger).await?;
        tx.commit()
            .await
            .map_err(Error::db("committing the forecast lane"))
    }

    /// The privacy ledger: every (lane, day, ε per reading) with its readings, by lane, day
    /// and ε (see [`crate::privacy`]).
    ///
    /// # Errors
    /// A database error or an invalid stored row.
    pub async fn privacy_ledger(&self) -> Result<Vec<LedgerEntry>, Error> {
        let rows = sqlx::query(
            "SELECT lane, day, epsilon_per_reading, readings FROM privacy_ledger \
             ORDER BY lane, day, epsilon_per_reading",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(Error::db("reading the privacy ledger"))?;
        rows.iter()
            .map(|row| {
                let read = Error::db("reading the privacy ledger");
                let lane: String = row.try_get("lane").map_err(read)?;
                let day: String = row
                    .try_get("day")
                    .map_err(Error::db("reading the privacy ledger"))?;
                let epsilon: f64 = row
                    .try_get("epsilon_per_reading")
                    .map_err(Error::db("reading the privacy ledger"))?;
                Ok(LedgerEntry {
                    lane: PrivacyLane::try_from_name(&lane)?,
                    date: NaiveDate::from_str(&day).map_err(|e| Error::CorruptState {
                        reason: format!("privacy ledger day {day:?}: {e}"),
                    })?,
                    epsilon_per_reading: Epsilon::try_new(epsilon)?,
                    readings: get_u64(row, "readings")?,
                })
            })
            .collect()
    }

    /// A write transaction. `BEGIN IMMEDIATE` takes the write lock up front (waiting up to
    /// the busy timeout): a deferred transaction that reads first and then writes would fail
    /// at once with `SQLITE_BUSY` when another connection is writing.
    async fn begin(&self) -> Result<Transaction<'static, Sqlite>, Error> {
        self.pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(Error::db("starting a transaction"))
    }
}

/// Adds `entries` to the privacy ledger inside `tx`.
async fn record_ledger(
    tx: &mut Transaction<'static, Sqlite>,
    entries: &[LedgerEntry],
) -> Result<(), Error> {
    for e in entries {
        sqlx::query(
            "INSERT INTO privacy_ledger (lane, day, epsilon_per_reading, readings) \
             VALUES (?, ?, ?, ?) ON CONFLICT (lane, day, epsilon_per_reading) \
             DO UPDATE SET readings = readings + excluded.readings",
        )
        .bind(e.lane.as_str())
        .bind(e.date.to_string())
        .bind(e.epsilon_per_reading.get())
        .bind(to_i64(e.readings)?)
        .execute(&mut **tx)
        .await
        .map_err(Error::db("recording the privacy ledger"))?;
    }
    Ok(())
}

/// Stores a committed batch's readings (table `readings`) in its transaction.
async fn record_readings(
    tx: &mut Transaction<'static, Sqlite>,
    readings: &[QueuedReading],
) -> Result<(), Error> {
    for r in readings {
        sqlx::query(
            "INSERT INTO readings (start_at, interval_s, wh, analytics_wh, sequence) \
             VALUES (?, ?, ?, ?, ?)",
        )
        .bind(format_time(r.start))
        .bind(i64::from(r.interval_s))
        .bind(r.energy.get())
        .bind(r.analytics)
        .bind(to_i64(r.sequence)?)
        .execute(&mut **tx)
        .await
        .map_err(Error::db("storing the batch's readings"))?;
    }
    Ok(())
}

fn batch_from_row(row: &SqliteRow) -> Result<SealedBatch, Error> {
    let read = Error::db("reading a queued batch");
    let text = |col: &str| -> Result<String, Error> {
        row.try_get(col)
            .map_err(Error::db("reading a queued batch"))
    };
    let u32_of = |col: &str| -> Result<u32, Error> {
        u32::try_from(get_u64(row, col)?).map_err(|_| Error::CorruptState {
            reason: format!("outbox column {col} out of range"),
        })
    };
    let period_text = text("period")?;
    let batch = SealedBatch {
        sequence: get_u64(row, "sequence")?,
        period: Period::from_str(&period_text).map_err(|e| Error::CorruptState {
            reason: format!("outbox period {period_text:?}: {e}"),
        })?,
        start: parse_time(&text("start_at")?)?,
        end: parse_time(&text("end_at")?)?,
        utc_offset: {
            let secs: i64 = row
                .try_get("utc_offset_s")
                .map_err(Error::db("reading a queued batch"))?;
            i32::try_from(secs)
                .ok()
                .and_then(FixedOffset::east_opt)
                .ok_or_else(|| Error::CorruptState {
                    reason: format!("outbox utc offset {secs} s is out of range"),
                })?
        },
        readings: u32_of("readings")?,
        billing_group: u32_of("billing_group")?,
        billing_position: u32_of("billing_position")?,
        billing_lane: row
            .try_get("billing_lane")
            .map_err(Error::db("reading a queued batch"))?,
        analytics_lane: row
            .try_get("analytics_lane")
            .map_err(Error::db("reading a queued batch"))?,
        epsilon_spent: row.try_get("epsilon_spent").map_err(read)?,
        noise: row
            .try_get::<Option<Vec<u8>>, _>("noise_plan")
            .map_err(Error::db("reading a queued batch"))?
            .map(|bytes| {
                seer_proto::v1::NoisePlan::decode(bytes.as_slice())
                    .map(|plan| seer_proto::statements::noise_plan_statement(&plan))
                    .map_err(|e| Error::CorruptState {
                        reason: format!("queued noise plan: {e}"),
                    })
            })
            .transpose()?,
    };
    let stored = text("digest")?;
    if batch.digest() != stored {
        return Err(Error::CorruptState {
            reason: format!(
                "queued batch {} does not match its digest (the state file is damaged)",
                batch.sequence
            ),
        });
    }
    let receipt: Option<Vec<u8>> = row
        .try_get("receipt_blake3")
        .map_err(Error::db("reading a queued batch"))?;
    match receipt {
        None => Err(Error::CorruptState {
            reason: format!(
                "queued batch {} was built by an earlier meter-client without receipts (its \
                 billing lane is not period-to-date); drain the queue with that version first",
                batch.sequence
            ),
        }),
        Some(r) if r.as_slice() != batch.billing_lane_blake3().as_slice() => {
            Err(Error::CorruptState {
                reason: format!(
                    "queued batch {}'s billing lane does not match its receipt (the state file \
                     is damaged)",
                    batch.sequence
                ),
            })
        }
        Some(_) => Ok(batch),
    }
}

fn get_u64(row: &SqliteRow, col: &str) -> Result<u64, Error> {
    let v: i64 = row.try_get(col).map_err(Error::db("reading a row"))?;
    u64::try_from(v).map_err(|_| Error::CorruptState {
        reason: format!("column {col} holds the negative value {v}"),
    })
}

fn to_i64(v: u64) -> Result<i64, Error> {
    i64::try_from(v).map_err(|_| Error::CorruptState {
        reason: format!("{v} does not fit the database's integers"),
    })
}

fn now() -> String {
    Utc::now().to_rfc3339()
}

fn format_time(t: NaiveDateTime) -> String {
    t.format(TIME_FORMAT).to_string()
}

fn parse_time(text: &str) -> Result<NaiveDateTime, Error> {
    NaiveDateTime::parse_from_str(text, TIME_FORMAT).map_err(|e| Error::CorruptState {
        reason: format!("timestamp {text:?}: {e}"),
    })
}

/// The outbox's signature columns (batch, receipt): NULL on rows queued before signing.
type SignatureColumns = (Option<Vec<u8>>, Option<Vec<u8>>);

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(sequence: u64) -> SealedBatch {
        let at = |d: u32| {
            chrono::NaiveDate::from_ymd_opt(2024, 1, d)
                .unwrap()
                .and_hms_opt(0, 0, 0)
                .unwrap()
        };
        let day = u32::try_from(sequence).unwrap();
        SealedBatch {
            sequence,
            period: "2024-01".parse().unwrap(),
            start: at(day),
            end: at(day + 1),
            utc_offset: FixedOffset::east_opt(0).unwrap(),
            readings: 96,
            billing_group: 0,
            billing_position: 5,
            billing_lane: vec![u8::try_from(sequence).unwrap(); 64],
            analytics_lane: vec![9; 64],
            epsilon_spent: 4.8,
            noise: None,
        }
    }

    fn built(batch: SealedBatch) -> BuiltBatch {
        BuiltBatch {
            next: LaneState {
                next_sequence: batch.sequence + 1,
                ..LaneState::default()
            },
            batch,
            ledger: Vec::new(),
            readings: Vec::new(),
        }
    }

    async fn store_with(batches: u64) -> (tempfile::TempDir, StateStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path()).await.unwrap();
        for seq in 1..=batches {
            store.commit_batch(&built(batch(seq))).await.unwrap();
        }
        (dir, store)
    }

    fn plan() -> seer_auth::device::NoisePlanStatement {
        seer_auth::device::NoisePlanStatement {
            group_size: 40,
            tolerated: 4,
            sensitivity_wh: 3_450,
            epsilon: 0.05,
            window_start: "2024-01-01T00:00:00+00:00".into(),
            interval_seconds: 900,
            window_slots: 96,
            first_slot: 8,
            slot_count: 88,
        }
    }

    /// The digest as computed before noise plans existed.
    fn digest_before_plans(b: &SealedBatch) -> String {
        let mut h = blake3::Hasher::new();
        h.update(b.period.to_string().as_bytes());
        h.update(b.start.to_string().as_bytes());
        h.update(b.end.to_string().as_bytes());
        h.update(&b.utc_offset.local_minus_utc().to_le_bytes());
        h.update(&b.readings.to_le_bytes());
        h.update(&b.billing_group.to_le_bytes());
        h.update(&b.billing_position.to_le_bytes());
        h.update(&(b.billing_lane.len() as u64).to_le_bytes());
        h.update(&b.billing_lane);
        h.update(&(b.analytics_lane.len() as u64).to_le_bytes());
        h.update(&b.analytics_lane);
        h.update(&b.epsilon_spent.to_le_bytes());
        h.finalize().to_hex().to_string()
    }

    #[tokio::test]
    async fn noise_plans_round_trip_and_old_rows_read_back_without_one() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path()).await.unwrap();
        // A batch of an older meter-client: no plan, and its digest is the old one.
        let old = batch(1);
        assert_eq!(old.digest(), digest_before_plans(&old));
        store.commit_batch(&built(old.clone())).await.unwrap();
        let with_plan = SealedBatch {
            noise: Some(plan()),
            ..batch(2)
        };
        // The plan is part of the digest, every field of it.
        assert_ne!(with_plan.digest(), digest_before_plans(&with_plan));
        let mut other = with_plan.clone();
        if let Some(p) = other.noise.as_mut() {
            p.first_slot += 1;
        }
        assert_ne!(other.digest(), with_plan.digest());
        store.commit_batch(&built(with_plan.clone())).await.unwrap();
        assert_eq!(store.batch(1).await.unwrap().unwrap(), old);
        assert_eq!(store.batch(2).await.unwrap().unwrap(), with_plan);
        // A row whose plan was removed or altered no longer matches its digest.
        sqlx::query("UPDATE outbox SET noise_plan = NULL WHERE sequence = 2")
            .execute(&store.pool)
            .await
            .unwrap();
        let err = store.batch(2).await.unwrap_err();
        assert!(err.to_string().contains("digest"), "{err}");
        sqlx::query("UPDATE outbox SET noise_plan = x'ff' WHERE sequence = 2")
            .execute(&store.pool)
            .await
            .unwrap();
        let err = store.batch(2).await.unwrap_err();
        assert!(matches!(err, Error::CorruptState { .. }), "{err}");
        store.close().await;
    }

    #[tokio::test]
    async fn the_ledger_is_written_with_the_batch_and_adds_up_per_day() {
        use crate::privacy::{LedgerEntry, PrivacyLane};
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path()).await.unwrap();
        let eps = Epsilon::try_new(0.05).unwrap();
        let day = |d: u32| NaiveDate::from_ymd_opt(2024, 1, d).unwrap();
        let mut b1 = built(batch(1));
        b1.ledger = LedgerEntry::per_day(
            PrivacyLane::Analytics,
            eps,
            std::iter::repeat_n(day(1), 40).chain(std::iter::repeat_n(day(2), 96)),
        );
        store.commit_batch(&b1).await.unwrap();
        let mut b2 = built(batch(2));
        b2.ledger = LedgerEntry::per_day(PrivacyLane::Analytics, eps, [day(2)]);
        store.commit_batch(&b2).await.unwrap();
        // A batch that cannot be committed (its sequence is stale) writes no ledger entry.
        assert!(store.commit_batch(&b2).await.is_err());
        let ledger = store.privacy_ledger().await.unwrap();
        assert_eq!(
            ledger
                .iter()
                .map(|e| (e.lane, e.date, e.readings))
                .collect::<Vec<_>>(),
            vec![
                (PrivacyLane::Analytics, day(1), 40),
                (PrivacyLane::Analytics, day(2), 97)
            ]
        );
        store.close().await;
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn the_state_database_is_private() {
        use std::os::unix::fs::PermissionsExt as _;
        let (dir, _store) = store_with(1).await;
        for name in [DATABASE_FILE.to_owned(), format!("{DATABASE_FILE}-wal")] {
            let path = dir.path().join(&name);
            if path.exists() {
                let mode = std::fs::metadata(&path).unwrap().permissions().mode();
                assert_eq!(mode & 0o777, 0o600, "{name}");
            }
        }
        assert!(dir.path().join(DATABASE_FILE).exists());
    }

    #[tokio::test]
    async fn a_batch_leaves_only_when_both_the_upload_and_the_receipt_are_acked() {
        let (_dir, store) = store_with(3).await;
        assert_eq!(store.pending_receipts().await.unwrap(), vec![1, 2, 3]);
        // The utility holds 1 and 2: they stay until their receipts are acked.
        assert_eq!(store.acknowledge(2).await.unwrap(), 2);
        assert_eq!(store.queued_sequences().await.unwrap(), vec![1, 2, 3]);
        store.acknowledge_receipt(1).await.unwrap();
        assert_eq!(store.queued_sequences().await.unwrap(), vec![2, 3]);
        // Receipt 3 first: batch 3 stays until the utility holds it too.
        store.acknowledge_receipt(3).await.unwrap();
        assert_eq!(store.queued_sequences().await.unwrap(), vec![2, 3]);
        assert_eq!(store.pending_receipts().await.unwrap(), vec![2]);
        assert_eq!(store.summary().await.unwrap().receipts_pending, 1);
        // Only batch 3 is newly held; re-acknowledging is harmless.
        assert_eq!(store.acknowledge(3).await.unwrap(), 1);
        assert_eq!(store.acknowledge(3).await.unwrap(), 0);
        assert_eq!(store.queued_sequences().await.unwrap(), vec![2]);
        store.acknowledge_receipt(2).await.unwrap();
        assert!(store.queued_sequences().await.unwrap().is_empty());
        let s = store.summary().await.unwrap();
        assert_eq!((s.queued, s.receipts_pending, s.acked_through), (0, 0, 3));
        // A receipt ack for a batch no longer queued is an inconsistency, not a no-op.
        let err = store.acknowledge_receipt(2).await.unwrap_err();
        assert!(matches!(err, Error::CorruptState { .. }), "{err}");
        store.close().await;
    }

    #[tokio::test]
    async fn the_receipt_is_stored_with_the_batch_and_checked_before_use() {
        let (_dir, store) = store_with(1).await;
        let stored: Vec<u8> =
            sqlx::query_scalar("SELECT receipt_blake3 FROM outbox WHERE sequence = 1")
                .fetch_one(&store.pool)
                .await
                .unwrap();
        assert_eq!(stored, blake3::hash(&[1; 64]).as_bytes().to_vec());
        assert_eq!(store.batch(1).await.unwrap().unwrap(), batch(1));

        // A damaged receipt digest is refused, not sent.
        sqlx::query("UPDATE outbox SET receipt_blake3 = zeroblob(32)")
            .execute(&store.pool)
            .await
            .unwrap();
        let err = store.batch(1).await.unwrap_err();
        assert!(err.to_string().contains("receipt"), "{err}");

        // A row queued before receipts existed (per-batch lane) is refused with the reason.
        sqlx::query("UPDATE outbox SET receipt_blake3 = NULL")
            .execute(&store.pool)
            .await
            .unwrap();
        let err = store.batch(1).await.unwrap_err();
        assert!(err.to_string().contains("earlier meter-client"), "{err}");
        store.close().await;
    }
}
