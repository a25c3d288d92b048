//! Revoked tokens: an operator revokes a token by its id (`jti`) with
//! `key-authority revoke-token`, and the key authority's gate refuses it from then on.
//!
//! Household tokens live an hour and meters renew them with their device keys (a revoked meter
//! gets no new one: [`crate::enrolment`]); utility, auditor and admin tokens live up to
//! [`seer_auth::MAX_TOKEN_LIFETIME`], so a leaked one must be stoppable before it expires.
//!
//! - **Record.** `revoked_tokens` (token id, its expiry, when revoked) in the audit log's
//!   database, written in the same transaction as a granted `revoke-token` audit entry whose
//!   `period` is the token id: the revocation is evidence like every other state change.
//! - **Enforce.** [`RevocableVerifier`] is the gate's authenticator: the token verifier, then
//!   the revoked set. The set lives in memory (the gate decides before a body is read, with
//!   no database round trip) and is reloaded from the table every [`REFRESH_INTERVAL`], so a
//!   revocation made by the command-line tool (another process) takes effect within that
//!   interval; one made through [`RevokedTokens::revoke`] in this process at once. A reload
//!   that fails keeps the last set and is logged; the server does not start without one.
//! - **Forget.** Rows of tokens expired for more than the verifier's leeway are not loaded
//!   (they are refused as expired anyway); they stay in the table as the record.

use std::collections::HashSet;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chrono::Utc;
use seer_auth::{Caller, TokenVerifier};
use seer_service::gate::{Authenticate, Rejected};
use sqlx::Row as _;
use tonic::Status;
use tonic::metadata::MetadataMap;

use crate::audit::{AuditLog, Decision, NewEntry, RequestKind};
use crate::enrolment::EnrolmentError;

/// Audit request kind of a token revocation.
pub const REVOKE_TOKEN: &str = "revoke-token";
/// How often the revoked set is reloaded from the database.
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(2);
/// Longest token id accepted (the verifier refuses longer ones).
const MAX_TOKEN_ID_LEN: usize = 128;

/// The revoked token ids, kept in memory and reloaded from `revoked_tokens`; see the
/// [module docs](self).
#[derive(Debug, Clone)]
pub struct RevokedTokens {
    log: Arc<AuditLog>,
    ids: Arc<RwLock<Ids>>,
}

/// The revoked ids: as last loaded, and those revoked through this handle since (kept apart so
/// that a reload which read the table just before such a revocation committed cannot drop it).
#[derive(Debug, Default)]
struct Ids {
    loaded: HashSet<String>,
    revoked_here: HashSet<String>,
}

fn micros(at: SystemTime) -> i64 {
    at.duration_since(UNIX_EPOCH)
        .ok()
        .and_then(|d| i64::try_from(d.as_micros()).ok())
        .unwrap_or(i64::MAX)
}

impl RevokedTokens {
    /// The set recorded in `log`'s database.
    ///
    /// # Errors
    /// [`EnrolmentError::Database`] when it cannot be read.
    pub async fn load(log: Arc<AuditLog>) -> Result<Self, EnrolmentError> {
        let revoked = Self {
            log,
            ids: Arc::default(),
        };
        revoked.refresh().await?;
        Ok(revoked)
    }

    /// Reloads the set from the database; returns how many tokens it holds.
    ///
    /// # Errors
    /// [`EnrolmentError::Database`] (the set is left as it was).
    pub async fn refresh(&self) -> Result<usize, EnrolmentError> {
        let leeway = i64::try_from(seer_auth::DEFAULT_LEEWAY.as_micros()).unwrap_or(i64::MAX);
        let horizon = micros(SystemTime::now()).saturating_sub(leeway);
        let rows = sqlx::query("SELECT token_id FROM revoked_tokens WHERE expires_at_us > $1")
            .bind(horizon)
            .fetch_all(self.log.pool())
            .await?;
        let ids = rows
            .iter()
            .map(|row| row.try_get::<String, _>("token_id"))
            .collect::<Result<HashSet<_>, _>>()?;
        let count = ids.len();
        self.ids
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .loaded = ids;
        Ok(count)
    }

    /// Whether the token with id `token_id` is revoked.
    #[must_use]
    pub fn is_revoked(&self, token_id: &str) -> bool {
        let ids = self
            .ids
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        ids.loaded.contains(token_id) || ids.revoked_here.contains(token_id)
    }

    /// Revokes the token `token_id`, which expires at `expires_at` (audit entry
    /// `revoke-token`, in the same transaction). Returns false when it was revoked already
    /// (nothing written).
    ///
    /// # Errors
    /// [`EnrolmentError::InvalidArgument`] for an empty or over-long id; the database or the
    /// audit log failing (nothing recorded).
    pub async fn revoke(
        &self,
        token_id: &str,
        expires_at: SystemTime,
    ) -> Result<bool, EnrolmentError> {
        if token_id.is_empty()
            || token_id.len() > MAX_TOKEN_ID_LEN
            || token_id.chars().any(char::is_control)
        {
            return Err(EnrolmentError::InvalidArgument(format!(
                "a token id has 1 to {MAX_TOKEN_ID_LEN} printable characters"
            )));
        }
        let mut tx = self.log.begin_append().await?;
        let existing: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM revoked_tokens WHERE token_id = $1")
                .bind(token_id.to_owned())
                .fetch_one(&mut *tx.connection())
                .await?;
        if existing > 0 {
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO revoked_tokens (token_id, expires_at_us, revoked_at_us) \
             VALUES ($1, $2, $3)",
        )
        .bind(token_id.to_owned())
        .bind(micros(expires_at))
        .bind(Utc::now().timestamp_micros())
        .execute(&mut *tx.connection())
        .await?;
        tx.append(
            NewEntry::new(RequestKind::try_new(REVOKE_TOKEN)?, Decision::Granted)
                .period(token_id.to_owned()),
        )
        .await?;
        tx.commit().await?;
        self.ids
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .revoked_here
            .insert(token_id.to_owned());
        tracing::info!(token_id, "token revoked");
        Ok(true)
    }

    /// Reloads the set every [`REFRESH_INTERVAL`] until the returned task is aborted.
    #[must_use]
    pub fn spawn_refresher(&self) -> tokio::task::JoinHandle<()> {
        let revoked = self.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(REFRESH_INTERVAL);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                if let Err(error) = revoked.refresh().await {
                    tracing::error!(%error, "reloading revoked tokens failed; the last set stays");
                }
            }
        })
    }
}

/// The gate's authenticator: the token verifier, then the revoked set.
#[derive(Debug, Clone)]
pub struct RevocableVerifier {
    verifier: Arc<TokenVerifier>,
    revoked: RevokedTokens,
}

impl RevocableVerifier {
    /// Verifies with `verifier` and refuses what `revoked` holds.
    #[must_use]
    pub fn new(verifier: Arc<TokenVerifier>, revoked: RevokedTokens) -> Self {
        Self { verifier, revoked }
    }
}

impl Authenticate for RevocableVerifier {
    fn authenticate(&self, metadata: &MetadataMap) -> Result<Caller, Rejected> {
        let caller = self.verifier.authenticate(metadata)?;
        if self.revoked.is_revoked(caller.token_id()) {
            return Err(Rejected {
                class: seer_service::gate::class::REVOKED_TOKEN,
                status: Status::unauthenticated(
                    "the token was revoked; ask the key authority's operator for a new one",
                ),
            });
        }
        Ok(caller)
    }
}
