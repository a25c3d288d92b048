//! Meter identity at the key authority: one-time enrolment codes, the meter → device key
//! registry, the signed [`MeterCertificate`]s, short-lived single-audience household tokens
//! (`seer.v1.Enrolment`), and revocation.
//!
//! # Enrolment
//!
//! The operator issues a code with `key-authority enrolment-code --meter-id M` (random 128
//! bits, printed once; only its SHA-256 is stored, with an expiry). The meter calls
//! `Enrolment.Enrol` with the code, its device public key and a proof of possession (its
//! signature over the [`EnrolmentStatement`]); no token is needed. Everything happens in one
//! audit append transaction ([`AuditLog`]): the code is checked (known, for this meter, not
//! expired, not used by another key), the binding written, the code marked used and an
//! `enrol` entry appended, all committed together; a refusal appends a refused entry with
//! its reason. A repeated call with the same key after the code was used returns the same
//! certificate (Ed25519 is deterministic and the issued-at is stored), so a meter that crashed
//! after enrolling recovers its binding; another key under a used code is refused.
//!
//! # Tokens
//!
//! `Enrolment.RenewToken` issues a household token for one audience (the key authority or
//! the utility server, never both) valid for [`HOUSEHOLD_TOKEN_LIFETIME`], to an enrolled,
//! unrevoked meter whose device key signed a [`TokenRenewalStatement`] dated within
//! [`RENEWAL_CLOCK_SKEW`] of the key authority's clock. Refusals are logged.
//!
//! # Revocation
//!
//! `key-authority revoke-meter --meter-id M` marks the binding revoked (audit entry
//! `revoke-meter`): the meter gets no token and records no receipt until a new code enrols a
//! key again.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chrono::Utc;
use seer_auth::device::{
    DevicePublicKey, EnrolmentStatement, MeterCertificate, MeterCertificateBody, Statement as _,
    TokenRenewalStatement,
};
use seer_auth::{
    AUDIENCE_KEY_AUTHORITY, AUDIENCE_UTILITY_SERVER, AuthError, Identity, JwtSigningKey,
    TokenIssuer, TokenRequest, validate_meter_id,
};
use seer_proto::v1;
use seer_proto::v1::enrolment_server::Enrolment;
use sha2::{Digest as _, Sha256};
use sqlx::{AnyConnection, Row as _};
use tonic::{Request, Response, Status};
use zeroize::Zeroizing;

use crate::audit::{
    AuditError, AuditLog, Decision, InputDigest, NewEntry, RefusalThrottle, RequestKind,
};

/// How long a household token from `RenewToken` is valid.
pub const HOUSEHOLD_TOKEN_LIFETIME: Duration = Duration::from_secs(3600);
/// How far a renewal statement's time may be from the key authority's clock.
pub const RENEWAL_CLOCK_SKEW: Duration = Duration::from_secs(300);
/// Default lifetime of an enrolment code.
pub const DEFAULT_CODE_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// Audit request kind of enrolments.
const ENROL: &str = "enrol";
/// Audit request kind of issued enrolment codes.
const ENROLMENT_CODE: &str = "enrolment-code";
/// Audit request kind of revocations.
const REVOKE_METER: &str = "revoke-meter";
/// Audit request kind of refused token renewals.
const RENEW_TOKEN: &str = "renew-token";
/// The RPCs whose refusals are throttled.
const ENROL_METHOD: &str = "/seer.v1.Enrolment/Enrol";
const RENEW_METHOD: &str = "/seer.v1.Enrolment/RenewToken";
/// Refusal classes (in `refusals.aggregate` entries) of refused enrolments and renewals.
const REFUSED_ENROLMENT: &str = "refused.enrolment";
const REFUSED_RENEWAL: &str = "refused.renewal";

/// Errors of enrolment, renewal and revocation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EnrolmentError {
    /// A request field is malformed.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The request was refused (bad, used or expired code, bad proof, stale renewal, ...).
    #[error("{0}")]
    Refused(String),
    /// The meter has no enrolled device key.
    #[error(
        "meter {meter_id} is not enrolled (run `meter-client enrol` with a code from `key-authority enrolment-code`)"
    )]
    NotEnrolled {
        /// The meter.
        meter_id: String,
    },
    /// The meter's device key was revoked.
    #[error("meter {meter_id} is revoked")]
    Revoked {
        /// The meter.
        meter_id: String,
    },
    /// The key authority's database failed (nothing was recorded).
    #[error("the key authority's database failed")]
    Database(#[from] sqlx::Error),
    /// The audit log could not be written (nothing was recorded).
    #[error(transparent)]
    Audit(#[from] AuditError),
    /// Signing or issuing failed.
    #[error(transparent)]
    Auth(#[from] AuthError),
}

impl From<EnrolmentError> for Status {
    /// Refusals are `PERMISSION_DENIED` with their reason; storage failures `UNAVAILABLE`
    /// without detail; the rest `INTERNAL`.
    fn from(error: EnrolmentError) -> Self {
        match error {
            EnrolmentError::InvalidArgument(_) => Status::invalid_argument(error.to_string()),
            EnrolmentError::Refused(_)
            | EnrolmentError::NotEnrolled { .. }
            | EnrolmentError::Revoked { .. } => Status::permission_denied(error.to_string()),
            EnrolmentError::Database(source) => {
                tracing::error!(error = %source, "key-authority database unavailable");
                Status::unavailable("database unavailable")
            }
            EnrolmentError::Audit(audit) => audit.into(),
            EnrolmentError::Auth(auth) => auth.into(),
        }
    }
}

/// A freshly issued enrolment code: the code itself (shown once, never stored) and its expiry.
pub struct EnrolmentCode {
    /// The code: 32 lowercase hex digits (128 random bits).
    pub code: Zeroizing<String>,
    /// When it expires.
    pub expires_at: chrono::DateTime<Utc>,
}

impl std::fmt::Debug for EnrolmentCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnrolmentCode")
            .field("code", &"[REDACTED]")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// An enrolment request as the meter sent it.
#[derive(Debug, Clone)]
pub struct EnrolRequest {
    /// The meter.
    pub meter_id: String,
    /// The one-time code.
    pub code: String,
    /// The device public key (32 bytes).
    pub device_public_key: Vec<u8>,
    /// Proof of possession: the device key's signature over the [`EnrolmentStatement`].
    pub signature: Vec<u8>,
}

/// Meters per transaction in [`EnrolmentStore::issue_codes`].
pub const ISSUE_BATCH: usize = 500;

fn code_hash(code: &str) -> String {
    hex::encode(Sha256::digest(code.as_bytes()))
}

fn kind(name: &'static str) -> Result<RequestKind, EnrolmentError> {
    Ok(RequestKind::try_new(name)?)
}

/// The registry of meters' device keys and enrolment codes, in the audit log's database.
#[derive(Debug, Clone)]
pub struct EnrolmentStore {
    log: Arc<AuditLog>,
    key: Arc<JwtSigningKey>,
    /// Where refusals of network calls go (throttled); `None` writes each one (the admin
    /// commands, which only an operator runs).
    refusals: Option<RefusalThrottle>,
}

impl EnrolmentStore {
    /// The registry in `log`'s database (its migrations created the tables); certificates
    /// are signed with `key`.
    #[must_use]
    pub fn new(log: Arc<AuditLog>, key: Arc<JwtSigningKey>) -> Self {
        Self {
            log,
            key,
            refusals: None,
        }
    }

    /// Writes refused enrolments and renewals through `refusals`: each is its own entry (meter,
    /// reason, statement digest) while the window admits one, and is counted in the window's
    /// aggregate beyond that, so a flood of refused calls adds a bounded number of entries.
    #[must_use]
    pub fn with_refusals(mut self, refusals: RefusalThrottle) -> Self {
        self.refusals = Some(refusals);
        self
    }

    /// The audit log.
    #[must_use]
    pub fn log(&self) -> &Arc<AuditLog> {
        &self.log
    }

    /// Issues a one-time code for `meter_id`, valid for `lifetime`; stores its SHA-256 and
    /// appends an `enrolment-code` audit entry in the same transaction.
    ///
    /// # Errors
    /// An invalid meter id or lifetime, a random number generator failure, or the database or
    /// audit log failing (nothing is stored).
    pub async fn issue_code(
        &self,
        meter_id: &str,
        lifetime: Duration,
    ) -> Result<EnrolmentCode, EnrolmentError> {
        let mut codes = self.issue_codes(&[meter_id.to_owned()], lifetime).await?;
        codes
            .pop()
            .map(|(_, code)| code)
            .ok_or_else(|| EnrolmentError::InvalidArgument("no code was issued".into()))
    }

    /// Issues one one-time code per meter of `meter_ids` (in order), each valid for
    /// `lifetime`: the bulk form of [`EnrolmentStore::issue_code`] with the same rows and the
    /// same `enrolment-code` audit entry per meter, written in transactions of
    /// [`ISSUE_BATCH`] meters (one head lock per batch instead of one per meter). Every meter
    /// id is checked before anything is written; a meter named twice is refused.
    ///
    /// A failure part-way leaves the earlier batches issued (durable, audited); their codes
    /// are lost with the error, and issuing again simply adds new codes (an unused code only
    /// expires).
    ///
    /// # Errors
    /// As [`EnrolmentStore::issue_code`]; [`EnrolmentError::InvalidArgument`] for an invalid
    /// or repeated meter id.
    pub async fn issue_codes(
        &self,
        meter_ids: &[String],
        lifetime: Duration,
    ) -> Result<Vec<(String, EnrolmentCode)>, EnrolmentError> {
        let mut seen = std::collections::HashSet::with_capacity(meter_ids.len());
        for meter_id in meter_ids {
            validate_meter_id(meter_id).map_err(|reason| {
                EnrolmentError::InvalidArgument(format!("meter id {meter_id:?}: {reason}"))
            })?;
            if !seen.insert(meter_id.as_str()) {
                return Err(EnrolmentError::InvalidArgument(format!(
                    "meter id {meter_id} is named twice"
                )));
            }
        }
        let lifetime = chrono::Duration::from_std(lifetime)
            .ok()
            .filter(|l| *l > chrono::Duration::zero())
            .ok_or_else(|| EnrolmentError::InvalidArgument("lifetime out of range".into()))?;
        let mut issued = Vec::with_capacity(meter_ids.len());
        for batch in meter_ids.chunks(ISSUE_BATCH) {
            let mut tx = self.log.begin_append().await?;
            let mut codes = Vec::with_capacity(batch.len());
            for meter_id in batch {
                let mut raw = Zeroizing::new([0_u8; 16]);
                getrandom::fill(raw.as_mut_slice())
                    .map_err(|e| EnrolmentError::Auth(AuthError::Random(e.to_string())))?;
                let code = Zeroizing::new(hex::encode(raw.as_slice()));
                let hash = code_hash(&code);
                let now = Utc::now();
                let expires_at = now + lifetime;
                sqlx::query(
                    "INSERT INTO enrolment_codes (code_sha256, meter_id, created_at_us, \
                     expires_at_us) VALUES ($1, $2, $3, $4)",
                )
                .bind(hash.clone())
                .bind(meter_id.clone())
                .bind(now.timestamp_micros())
                .bind(expires_at.timestamp_micros())
                .execute(&mut *tx.connection())
                .await?;
                tx.append(
                    NewEntry::new(kind(ENROLMENT_CODE)?, Decision::Granted)
                        .meter(meter_id.as_str())
                        .input(InputDigest::sha256(hash.as_bytes())),
                )
                .await?;
                codes.push((meter_id.clone(), EnrolmentCode { code, expires_at }));
            }
            tx.commit().await?;
            issued.extend(codes);
        }
        Ok(issued)
    }

    /// Revokes `meter_id`'s device key (audit entry `revoke-meter`, in the same transaction).
    /// Returns false (and logs a refusal) when the meter has no unrevoked key.
    ///
    /// # Errors
    /// The database or the audit log failing.
    pub async fn revoke(&self, meter_id: &str) -> Result<bool, EnrolmentError> {
        let mut tx = self.log.begin_append().await?;
        let updated = sqlx::query(
            "UPDATE meter_keys SET revoked_at_us = $1 WHERE meter_id = $2 \
             AND revoked_at_us IS NULL",
        )
        .bind(Utc::now().timestamp_micros())
        .bind(meter_id.to_owned())
        .execute(&mut *tx.connection())
        .await?
        .rows_affected();
        let decision = if updated == 1 {
            Decision::Granted
        } else {
            Decision::refused("meter has no unrevoked device key")
        };
        tx.append(NewEntry::new(kind(REVOKE_METER)?, decision).meter(meter_id))
            .await?;
        tx.commit().await?;
        Ok(updated == 1)
    }

    /// Issues a one-time code for `meter_id` and enrols `device` with it, with the proof of
    /// possession made by `device` itself: `key-authority enrolment-code` and
    /// `meter-client enrol` in one step, for provisioning where one party holds the device
    /// key (a meter's factory, and the test suites). Both steps are audited as usual.
    ///
    /// # Errors
    /// As [`EnrolmentStore::issue_code`] and [`EnrolmentStore::enrol`].
    pub async fn enrol_device(
        &self,
        meter_id: &str,
        device: &seer_auth::device::DeviceKey,
    ) -> Result<MeterCertificate, EnrolmentError> {
        let code = self.issue_code(meter_id, Duration::from_secs(600)).await?;
        let device_public_key = device.public_key().to_bytes();
        let signature = device
            .sign(&EnrolmentStatement {
                meter_id: meter_id.to_owned(),
                device_public_key,
            })
            .to_vec();
        self.enrol(&EnrolRequest {
            meter_id: meter_id.to_owned(),
            code: code.code.to_string(),
            device_public_key: device_public_key.to_vec(),
            signature,
        })
        .await
    }

    /// Enrols the request's device key (see the module documentation) and returns the
    /// certificate.
    ///
    /// # Errors
    /// [`EnrolmentError::Refused`] (logged) for an unknown, used, expired or foreign code or a
    /// bad proof; [`EnrolmentError::InvalidArgument`] for malformed fields; storage failures.
    pub async fn enrol(&self, request: &EnrolRequest) -> Result<MeterCertificate, EnrolmentError> {
        self.enrol_over(request, None).await
    }

    /// [`EnrolmentStore::enrol`] on a connection whose client certificate is refused for
    /// `certificate_refusal` (see [`seer_auth::peer::peer_meter_refusal`]): then the enrolment
    /// is refused and logged like any other refusal, and the code stays unused.
    ///
    /// # Errors
    /// As [`EnrolmentStore::enrol`].
    pub async fn enrol_over(
        &self,
        request: &EnrolRequest,
        certificate_refusal: Option<String>,
    ) -> Result<MeterCertificate, EnrolmentError> {
        validate_meter_id(&request.meter_id)
            .map_err(|reason| EnrolmentError::InvalidArgument(format!("meter_id: {reason}")))?;
        let device = DevicePublicKey::try_from_bytes(&request.device_public_key).map_err(|_| {
            EnrolmentError::InvalidArgument("device_public_key is not an Ed25519 key".into())
        })?;
        let statement = EnrolmentStatement {
            meter_id: request.meter_id.clone(),
            device_public_key: device.to_bytes(),
        };
        let digest = InputDigest::sha256(&statement.encode());
        let key_hex = hex::encode(device.to_bytes());
        let mut tx = self.log.begin_append().await?;
        let refusal = match (
            certificate_refusal,
            device.verify(&statement, &request.signature),
        ) {
            (Some(reason), _) => Some(reason),
            (None, Err(error)) => Some(format!("proof of possession refused: {error}")),
            (None, Ok(())) => {
                check_code(tx.connection(), &request.meter_id, &request.code, &key_hex).await?
            }
        };
        let entry = NewEntry::new(kind(ENROL)?, Decision::Granted)
            .meter(request.meter_id.as_str())
            .input(digest);
        if let Some(reason) = refusal {
            // Nothing changed: the refusal is its own entry (or counted), outside the
            // transaction.
            drop(tx);
            self.record_refusal(
                ENROL_METHOD,
                &request.meter_id,
                NewEntry {
                    decision: Decision::refused(reason.clone()),
                    ..entry
                },
            )
            .await?;
            tracing::info!(meter = %request.meter_id, %reason, "enrolment refused");
            return Err(EnrolmentError::Refused(reason));
        }
        // A repeated enrolment of the same key keeps its certificate.
        let existing = sqlx::query(
            "SELECT device_public_key, certificate_issued_at, revoked_at_us FROM meter_keys \
             WHERE meter_id = $1",
        )
        .bind(request.meter_id.clone())
        .fetch_optional(&mut *tx.connection())
        .await?;
        let issued_at = match existing {
            Some(row)
                if row.try_get::<String, _>(0)? == key_hex
                    && row.try_get::<Option<i64>, _>(2)?.is_none() =>
            {
                row.try_get::<i64, _>(1)?
            }
            _ => {
                let now = Utc::now();
                sqlx::query(
                    "INSERT INTO meter_keys (meter_id, device_public_key, certificate_issued_at, \
                     enrolled_at_us, revoked_at_us) VALUES ($1, $2, $3, $4, NULL) \
                     ON CONFLICT (meter_id) DO UPDATE SET device_public_key = excluded.device_public_key, \
                     certificate_issued_at = excluded.certificate_issued_at, \
                     enrolled_at_us = excluded.enrolled_at_us, revoked_at_us = NULL",
                )
                .bind(request.meter_id.clone())
                .bind(key_hex.clone())
                .bind(now.timestamp())
                .bind(now.timestamp_micros())
                .execute(&mut *tx.connection())
                .await?;
                now.timestamp()
            }
        };
        sqlx::query(
            "UPDATE enrolment_codes SET used_at_us = $1, used_by_key = $2 \
             WHERE code_sha256 = $3 AND used_at_us IS NULL",
        )
        .bind(Utc::now().timestamp_micros())
        .bind(key_hex)
        .bind(code_hash(&request.code))
        .execute(&mut *tx.connection())
        .await?;
        tx.append(entry).await?;
        tx.commit().await?;
        tracing::info!(meter = %request.meter_id, key = %device.key_id(), "meter enrolled");
        Ok(MeterCertificate::issue(
            &self.key,
            MeterCertificateBody {
                meter_id: request.meter_id.clone(),
                device_public_key: device.to_bytes(),
                issued_at,
            },
        ))
    }

    /// The meter's enrolled, unrevoked device key.
    ///
    /// # Errors
    /// [`EnrolmentError::NotEnrolled`], [`EnrolmentError::Revoked`], or the database failing.
    pub async fn device_key(&self, meter_id: &str) -> Result<DevicePublicKey, EnrolmentError> {
        let mut conn = self.log.pool().acquire().await?;
        device_key(&mut conn, meter_id).await
    }

    /// Appends a refused entry of `kind` for `meter_id` (a refusal outside a transaction of
    /// this store, e.g. a token renewal).
    async fn refuse(
        &self,
        kind_name: &'static str,
        meter_id: &str,
        digest: Option<InputDigest>,
        reason: &str,
    ) -> Result<(), EnrolmentError> {
        let mut entry = NewEntry::new(kind(kind_name)?, Decision::refused(reason)).meter(meter_id);
        if let Some(digest) = digest {
            entry = entry.input(digest);
        }
        if kind_name == RENEW_TOKEN {
            // A network call: throttled like the gate's refusals.
            return self.record_refusal(RENEW_METHOD, meter_id, entry).await;
        }
        // An operator's command (revocation): always its own entry.
        self.log.append(entry).await?;
        Ok(())
    }

    /// Writes a refused call's `entry` through the throttle (or directly without one).
    async fn record_refusal(
        &self,
        method: &'static str,
        meter_id: &str,
        entry: NewEntry,
    ) -> Result<(), EnrolmentError> {
        match &self.refusals {
            Some(refusals) => {
                let class = if method == RENEW_METHOD {
                    REFUSED_RENEWAL
                } else {
                    REFUSED_ENROLMENT
                };
                refusals
                    .record_entry(class, &format!("meter:{meter_id}"), method, entry)
                    .await?;
            }
            None => {
                self.log.append(entry).await?;
            }
        }
        Ok(())
    }
}

/// Why the code does not enrol `key_hex` for `meter_id` (None: it does).
async fn check_code(
    conn: &mut AnyConnection,
    meter_id: &str,
    code: &str,
    key_hex: &str,
) -> Result<Option<String>, EnrolmentError> {
    let row = sqlx::query(
        "SELECT meter_id, expires_at_us, used_at_us, used_by_key FROM enrolment_codes \
         WHERE code_sha256 = $1",
    )
    .bind(code_hash(code))
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = row else {
        return Ok(Some("unknown enrolment code".into()));
    };
    let code_meter: String = row.try_get(0)?;
    let expires_at_us: i64 = row.try_get(1)?;
    let used_at_us: Option<i64> = row.try_get(2)?;
    let used_by: Option<String> = row.try_get(3)?;
    if code_meter != meter_id {
        return Ok(Some(
            "the enrolment code was issued for another meter".into(),
        ));
    }
    if used_at_us.is_some() {
        if used_by.as_deref() != Some(key_hex) {
            return Ok(Some(
                "the enrolment code was already used by another device key".into(),
            ));
        }
        // Same key again: granted only while that binding stands.
        return Ok(match device_key(conn, meter_id).await {
            Ok(current) if hex::encode(current.to_bytes()) == key_hex => None,
            Ok(_) => Some("the enrolment code was used and its binding replaced".into()),
            Err(EnrolmentError::Revoked { .. }) => Some("the meter is revoked".into()),
            Err(EnrolmentError::NotEnrolled { .. }) => {
                Some("the enrolment code was used and its binding is gone".into())
            }
            Err(other) => return Err(other),
        });
    }
    if Utc::now().timestamp_micros() > expires_at_us {
        return Ok(Some("the enrolment code has expired".into()));
    }
    Ok(None)
}

/// The meter's enrolled, unrevoked device key, read on `conn` (inside a caller's transaction
/// when it must be consistent with its writes).
///
/// # Errors
/// [`EnrolmentError::NotEnrolled`], [`EnrolmentError::Revoked`], or the database failing.
pub(crate) async fn device_key(
    conn: &mut AnyConnection,
    meter_id: &str,
) -> Result<DevicePublicKey, EnrolmentError> {
    let row =
        sqlx::query("SELECT device_public_key, revoked_at_us FROM meter_keys WHERE meter_id = $1")
            .bind(meter_id.to_owned())
            .fetch_optional(&mut *conn)
            .await?;
    let Some(row) = row else {
        return Err(EnrolmentError::NotEnrolled {
            meter_id: meter_id.to_owned(),
        });
    };
    if row.try_get::<Option<i64>, _>(1)?.is_some() {
        return Err(EnrolmentError::Revoked {
            meter_id: meter_id.to_owned(),
        });
    }
    let text: String = row.try_get(0)?;
    let bytes = hex::decode(&text).map_err(|_| {
        EnrolmentError::Database(sqlx::Error::Decode(
            format!("stored device key of meter {meter_id} is not hex").into(),
        ))
    })?;
    DevicePublicKey::try_from_bytes(&bytes).map_err(|_| {
        EnrolmentError::Database(sqlx::Error::Decode(
            format!("stored device key of meter {meter_id} is not an Ed25519 key").into(),
        ))
    })
}

/// Serves `seer.v1.Enrolment` (no interceptor: the code, or the device key, authenticates).
#[derive(Debug, Clone)]
pub struct EnrolmentService {
    store: EnrolmentStore,
    issuer: TokenIssuer,
}

impl EnrolmentService {
    /// A service over `store`, issuing tokens with `issuer`.
    #[must_use]
    pub fn new(store: EnrolmentStore, issuer: TokenIssuer) -> Self {
        Self { store, issuer }
    }

    async fn renew(
        &self,
        request: v1::RenewTokenRequest,
        certificate_refusal: Option<String>,
    ) -> Result<v1::RenewTokenResponse, EnrolmentError> {
        validate_meter_id(&request.meter_id)
            .map_err(|reason| EnrolmentError::InvalidArgument(format!("meter_id: {reason}")))?;
        if request.audience != AUDIENCE_KEY_AUTHORITY && request.audience != AUDIENCE_UTILITY_SERVER
        {
            return Err(EnrolmentError::InvalidArgument(format!(
                "audience must be {AUDIENCE_KEY_AUTHORITY} or {AUDIENCE_UTILITY_SERVER}"
            )));
        }
        let statement = TokenRenewalStatement {
            meter_id: request.meter_id.clone(),
            issued_at: request.issued_at,
            audience: request.audience.clone(),
        };
        let digest = InputDigest::sha256(&statement.encode());
        let refusal = if certificate_refusal.is_some() {
            certificate_refusal
        } else {
            match self.store.device_key(&request.meter_id).await {
                Ok(key) => match key.verify(&statement, &request.signature) {
                    Ok(()) => {
                        let now = SystemTime::now()
                            .duration_since(UNIX_EPOCH)
                            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
                        let skew = i64::try_from(RENEWAL_CLOCK_SKEW.as_secs()).unwrap_or(i64::MAX);
                        (request.issued_at.abs_diff(now) > skew.unsigned_abs()).then(|| {
                            format!(
                                "renewal dated {} is more than {skew} s from the key authority's clock",
                                request.issued_at
                            )
                        })
                    }
                    Err(error) => Some(error.to_string()),
                },
                Err(
                    error @ (EnrolmentError::NotEnrolled { .. } | EnrolmentError::Revoked { .. }),
                ) => Some(error.to_string()),
                Err(other) => return Err(other),
            }
        };
        if let Some(reason) = refusal {
            self.store
                .refuse(RENEW_TOKEN, &request.meter_id, Some(digest), &reason)
                .await?;
            return Err(EnrolmentError::Refused(reason));
        }
        let token = self.issuer.issue(&TokenRequest {
            identity: Identity::try_new(seer_auth::Role::Household, Some(request.meter_id))?,
            subject: None,
            audience: vec![request.audience],
            lifetime: HOUSEHOLD_TOKEN_LIFETIME,
        })?;
        let expires_at = token
            .expires_at
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        Ok(v1::RenewTokenResponse {
            token: token.token,
            expires_at,
        })
    }
}

#[tonic::async_trait]
impl Enrolment for EnrolmentService {
    #[tracing::instrument(name = "Enrolment.Enrol", skip_all, fields(meter))]
    async fn enrol(
        &self,
        request: Request<v1::EnrolRequest>,
    ) -> Result<Response<v1::EnrolResponse>, Status> {
        let certificate_refusal =
            seer_auth::peer::peer_meter_refusal(&request, &request.get_ref().meter_id);
        let message = request.into_inner();
        tracing::Span::current().record("meter", message.meter_id.as_str());
        let certificate = self
            .store
            .enrol_over(
                &EnrolRequest {
                    meter_id: message.meter_id,
                    code: message.code,
                    device_public_key: message.device_public_key,
                    signature: message.signature,
                },
                certificate_refusal,
            )
            .await?;
        Ok(Response::new(v1::EnrolResponse {
            meter_certificate: certificate.to_bytes(),
        }))
    }

    #[tracing::instrument(name = "Enrolment.RenewToken", skip_all, fields(meter, audience))]
    async fn renew_token(
        &self,
        request: Request<v1::RenewTokenRequest>,
    ) -> Result<Response<v1::RenewTokenResponse>, Status> {
        let certificate_refusal =
            seer_auth::peer::peer_meter_refusal(&request, &request.get_ref().meter_id);
        let message = request.into_inner();
        let span = tracing::Span::current();
        span.record("meter", message.meter_id.as_str());
        span.record("audience", message.audience.as_str());
        Ok(Response::new(
            self.renew(message, certificate_refusal).await?,
        ))
    }
}
