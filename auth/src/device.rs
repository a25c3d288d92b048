//! Meter identity: each meter's Ed25519 device key, the statements it signs, and the key
//! authority's certificate binding a meter id to its device public key.
//!
//! A bearer token that reaches the utility must not let the utility speak for the meter, so
//! everything a meter asserts about its data — a billing receipt, an upload batch, an
//! analytics receipt, its enrolment — is a *statement* signed with the meter's device key,
//! which never leaves the meter's state directory. The key authority enrols the device key
//! (against a one-time code) and signs a [`MeterCertificate`] with its own Ed25519 key (the one
//! that signs JWTs and the audit head), so that the utility can check a batch's signature with
//! the key authority's published public key alone.
//!
//! # Encodings
//!
//! Every statement is encoded canonically: a domain tag ending in NUL (distinct per statement,
//! so a signature for one can never be taken for another, nor for a JWT or the audit head),
//! then its fields in a fixed order, each string and byte string prefixed by its length (u32,
//! big-endian), integers big-endian at fixed width, `f64` as its IEEE-754 bits, booleans as one
//! byte, lists prefixed by their count. Two different statements never share an encoding.

use std::path::Path;

use ed25519_dalek::Signer as _;
use ed25519_dalek::pkcs8::DecodePublicKey as _;

use crate::key_file::{self, KeyOrigin};
use crate::{AuthError, key_id_of, verify_signature};

/// Length of an Ed25519 signature in bytes.
pub const SIGNATURE_LEN: usize = ed25519_dalek::SIGNATURE_LENGTH;

/// Domain tag of [`BillingReceiptStatement`].
pub const BILLING_RECEIPT_TAG: &[u8] = b"SEER-BILLING-RECEIPT-v1\0";
/// Domain tag of [`BatchStatement`].
pub const BATCH_TAG: &[u8] = b"SEER-BATCH-v1\0";
/// Domain tag of [`AnalyticsReceiptStatement`].
pub const ANALYTICS_RECEIPT_TAG: &[u8] = b"SEER-ANALYTICS-RECEIPT-v1\0";
/// Domain tag of [`EnrolmentStatement`].
pub const ENROL_TAG: &[u8] = b"SEER-ENROL-v1\0";
/// Domain tag of [`TokenRenewalStatement`].
pub const RENEW_TAG: &[u8] = b"SEER-RENEW-TOKEN-v1\0";
/// Domain tag of [`MeterCertificate`]s (signed by the key authority).
pub const METER_CERT_TAG: &[u8] = b"SEER-METER-CERT-v1\0";

/// Builds a canonical encoding (see the module documentation).
struct Encoder(Vec<u8>);

impl Encoder {
    fn new(tag: &[u8]) -> Self {
        let mut bytes = Vec::with_capacity(256);
        bytes.extend_from_slice(tag);
        Self(bytes)
    }

    fn bytes(mut self, value: &[u8]) -> Self {
        // Lengths beyond u32 cannot occur (every field is bounded far below 4 GiB by the
        // message limits); saturating keeps the encoding total and distinct anyway.
        let len = u32::try_from(value.len()).unwrap_or(u32::MAX);
        self.0.extend_from_slice(&len.to_be_bytes());
        self.0.extend_from_slice(value);
        self
    }

    fn str(self, value: &str) -> Self {
        self.bytes(value.as_bytes())
    }

    fn u32(mut self, value: u32) -> Self {
        self.0.extend_from_slice(&value.to_be_bytes());
        self
    }

    fn u64(mut self, value: u64) -> Self {
        self.0.extend_from_slice(&value.to_be_bytes());
        self
    }

    fn i64(mut self, value: i64) -> Self {
        self.0.extend_from_slice(&value.to_be_bytes());
        self
    }

    fn f64(self, value: f64) -> Self {
        self.u64(value.to_bits())
    }

    fn bool(mut self, value: bool) -> Self {
        self.0.push(u8::from(value));
        self
    }

    fn digest(mut self, value: &[u8; 32]) -> Self {
        self.0.extend_from_slice(value);
        self
    }

    fn digests(self, values: &[[u8; 32]]) -> Self {
        let count = u32::try_from(values.len()).unwrap_or(u32::MAX);
        values.iter().fold(self.u32(count), Self::digest)
    }

    fn finish(self) -> Vec<u8> {
        self.0
    }
}

/// Something a meter (or the key authority) signs: a canonical, domain-tagged encoding.
pub trait Statement {
    /// The statement's domain tag (ends in NUL).
    const TAG: &'static [u8];
    /// A short human name, used in error messages (`billing receipt`, `batch`, ...).
    const NAME: &'static str;
    /// The canonical encoding, starting with [`Self::TAG`].
    fn encode(&self) -> Vec<u8>;
}

/// A meter's receipt for one batch's billing lane, sent to the key authority: the statement
/// that binds the lane (by its BLAKE3) to the meter, its sequence, period and billing position.
#[derive(Debug, Clone, PartialEq)]
pub struct BillingReceiptStatement {
    /// The meter.
    pub meter_id: String,
    /// The batch's sequence.
    pub sequence: u64,
    /// The billing period, `YYYY-MM`.
    pub period: String,
    /// The billing parameter set's id.
    pub params_id: String,
    /// BLAKE3 of the billing lane's serialized ciphertext.
    pub billing_lane_blake3: [u8; 32],
    /// The billing packing group.
    pub billing_group: u32,
    /// The position in the group.
    pub billing_position: u32,
    /// True on the meter's last batch of the period.
    pub closes_period: bool,
}

impl Statement for BillingReceiptStatement {
    const TAG: &'static [u8] = BILLING_RECEIPT_TAG;
    const NAME: &'static str = "billing receipt";

    fn encode(&self) -> Vec<u8> {
        Encoder::new(Self::TAG)
            .str(&self.meter_id)
            .u64(self.sequence)
            .str(&self.period)
            .str(&self.params_id)
            .digest(&self.billing_lane_blake3)
            .u32(self.billing_group)
            .u32(self.billing_position)
            .bool(self.closes_period)
            .finish()
    }
}

/// One upload batch as the meter built it: every field the utility stores or a release depends
/// on, with the lanes by their BLAKE3.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchStatement {
    /// The meter.
    pub meter_id: String,
    /// The batch's sequence.
    pub sequence: u64,
    /// The billing period, `YYYY-MM`.
    pub period: String,
    /// Start of the first reading, RFC 3339 as sent.
    pub start: String,
    /// End (exclusive) of the last reading, RFC 3339 as sent.
    pub end: String,
    /// Number of readings.
    pub readings: u32,
    /// BLAKE3 of the billing lane as sent.
    pub billing_lane_blake3: [u8; 32],
    /// BLAKE3 of the analytics lane as sent.
    pub analytics_lane_blake3: [u8; 32],
    /// The billing packing group.
    pub billing_group: u32,
    /// The position in the group.
    pub billing_position: u32,
    /// ε spent on the analytics lane.
    pub epsilon_spent: f64,
    /// The distributed-noise plan of the analytics lane; `None` for a lane without noise
    /// shares (batches signed before plans existed encode, and verify, exactly as before).
    pub noise: Option<NoisePlanStatement>,
}

/// The distributed-noise plan a meter signs with each batch (`seer.v1.NoisePlan`): how its
/// analytics lane's noise shares are sized and which slots of which window they cover. The
/// noise group is the batch's billing group.
#[derive(Debug, Clone, PartialEq)]
pub struct NoisePlanStatement {
    /// Meters in the noise group the shares are sized for (n).
    pub group_size: u32,
    /// Meters that may be absent or collude (t): shares are sized for n − t.
    pub tolerated: u32,
    /// The clamp Δ, Wh per reading.
    pub sensitivity_wh: i64,
    /// ε per reading of the group's released total.
    pub epsilon: f64,
    /// The start of the window slot 0 stands for, RFC 3339 as sent.
    pub window_start: String,
    /// Seconds per reading interval (one slot).
    pub interval_seconds: u32,
    /// Intervals in the window.
    pub window_slots: u32,
    /// The first slot of the batch's span.
    pub first_slot: u32,
    /// Slots in the batch's span (each carries a share, with or without a reading).
    pub slot_count: u32,
}

impl Statement for BatchStatement {
    const TAG: &'static [u8] = BATCH_TAG;
    const NAME: &'static str = "batch";

    fn encode(&self) -> Vec<u8> {
        let encoder = Encoder::new(Self::TAG)
            .str(&self.meter_id)
            .u64(self.sequence)
            .str(&self.period)
            .str(&self.start)
            .str(&self.end)
            .u32(self.readings)
            .digest(&self.billing_lane_blake3)
            .digest(&self.analytics_lane_blake3)
            .u32(self.billing_group)
            .u32(self.billing_position)
            .f64(self.epsilon_spent);
        // Appended only when present, after a marker byte: a batch without a plan encodes as
        // it always did, and one with a plan is longer than any without.
        match &self.noise {
            None => encoder.finish(),
            Some(plan) => encoder
                .bool(true)
                .u32(plan.group_size)
                .u32(plan.tolerated)
                .i64(plan.sensitivity_wh)
                .f64(plan.epsilon)
                .str(&plan.window_start)
                .u32(plan.interval_seconds)
                .u32(plan.window_slots)
                .u32(plan.first_slot)
                .u32(plan.slot_count)
                .finish(),
        }
    }
}

/// A meter's receipt for the inputs of one deep analytics computation.
#[derive(Debug, Clone, PartialEq)]
pub struct AnalyticsReceiptStatement {
    /// The computation kind (`anomaly`, `forecast`).
    pub kind: String,
    /// The meter.
    pub meter_id: String,
    /// The meter's name for the inputs.
    pub input_id: String,
    /// BLAKE3 (hex) of the registered model file the inputs are for; empty when the receipt
    /// does not name one.
    pub model_blake3: String,
    /// First slot of the meter's block.
    pub slot_offset: u32,
    /// Number of slots.
    pub slot_count: u32,
    /// The period of the block's first slot, as sent.
    pub first_period: String,
    /// The evaluation group of the block.
    pub group: u32,
    /// BLAKE3 of each input ciphertext, in input order.
    pub input_blake3: Vec<[u8; 32]>,
    /// `exact` or `analytics`.
    pub lane: String,
    /// ε per reading (analytics lane; 0 on the exact lane).
    pub epsilon: f64,
    /// Readings noised per day (analytics lane; 0 on the exact lane).
    pub readings_per_day: u32,
}

impl Statement for AnalyticsReceiptStatement {
    const TAG: &'static [u8] = ANALYTICS_RECEIPT_TAG;
    const NAME: &'static str = "analytics receipt";

    fn encode(&self) -> Vec<u8> {
        Encoder::new(Self::TAG)
            .str(&self.kind)
            .str(&self.meter_id)
            .str(&self.input_id)
            .str(&self.model_blake3)
            .u32(self.slot_offset)
            .u32(self.slot_count)
            .str(&self.first_period)
            .u32(self.group)
            .digests(&self.input_blake3)
            .str(&self.lane)
            .f64(self.epsilon)
            .u32(self.readings_per_day)
            .finish()
    }
}

/// Proof of possession sent with an enrolment: the device key signs the meter id and its own
/// public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnrolmentStatement {
    /// The meter enrolling.
    pub meter_id: String,
    /// The device public key being enrolled.
    pub device_public_key: [u8; 32],
}

impl Statement for EnrolmentStatement {
    const TAG: &'static [u8] = ENROL_TAG;
    const NAME: &'static str = "enrolment";

    fn encode(&self) -> Vec<u8> {
        Encoder::new(Self::TAG)
            .str(&self.meter_id)
            .bytes(&self.device_public_key)
            .finish()
    }
}

/// A meter's request for a fresh household token: its id and the time it asked (Unix
/// seconds), which the key authority checks is recent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRenewalStatement {
    /// The meter.
    pub meter_id: String,
    /// When the meter asked, Unix seconds.
    pub issued_at: i64,
    /// The audience the token is for (one service).
    pub audience: String,
}

impl Statement for TokenRenewalStatement {
    const TAG: &'static [u8] = RENEW_TAG;
    const NAME: &'static str = "token renewal";

    fn encode(&self) -> Vec<u8> {
        Encoder::new(Self::TAG)
            .str(&self.meter_id)
            .i64(self.issued_at)
            .str(&self.audience)
            .finish()
    }
}

/// A meter's Ed25519 device key. It never leaves the meter's state directory: a PKCS#8 PEM
/// file of mode 0600 (refused when group or others may read or write it). The secret zeroizes
/// on drop; `Debug` prints `[REDACTED]`; the type is neither `Clone` nor serializable.
pub struct DeviceKey {
    signing: ed25519_dalek::SigningKey,
}

impl std::fmt::Debug for DeviceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceKey")
            .field("public", &key_id_of(&self.signing.verifying_key()))
            .field("secret", &"[REDACTED]")
            .finish()
    }
}

impl DeviceKey {
    /// A fresh key from the operating system's CSPRNG.
    ///
    /// # Errors
    /// When the random number generator fails.
    pub fn generate() -> Result<Self, AuthError> {
        Ok(Self {
            signing: key_file::generate()?,
        })
    }

    /// Loads the key from `path`, or generates one and writes it there (mode 0600, atomically;
    /// an existing key is never replaced).
    ///
    /// # Errors
    /// When the file cannot be read or created, has loose permissions, or does not hold a
    /// PKCS#8 PEM Ed25519 private key.
    pub fn load_or_generate(path: &Path) -> Result<(Self, KeyOrigin), AuthError> {
        let (signing, origin) = key_file::load_or_generate(path)?;
        Ok((Self { signing }, origin))
    }

    /// Loads the key from an existing file.
    ///
    /// # Errors
    /// When the file is missing or unreadable, has loose permissions, or does not hold a
    /// PKCS#8 PEM Ed25519 private key.
    pub fn load(path: &Path) -> Result<Self, AuthError> {
        Ok(Self {
            signing: key_file::load(path)?,
        })
    }

    /// The public half.
    #[must_use]
    pub fn public_key(&self) -> DevicePublicKey {
        DevicePublicKey(self.signing.verifying_key())
    }

    /// Signs a statement (its canonical, domain-tagged encoding).
    #[must_use]
    pub fn sign<S: Statement>(&self, statement: &S) -> [u8; SIGNATURE_LEN] {
        self.signing.sign(&statement.encode()).to_bytes()
    }
}

/// A meter's device public key.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct DevicePublicKey(ed25519_dalek::VerifyingKey);

impl std::fmt::Debug for DevicePublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DevicePublicKey({})", hex::encode(self.0.as_bytes()))
    }
}

impl DevicePublicKey {
    /// Parses the raw 32-byte key.
    ///
    /// # Errors
    /// [`AuthError::InvalidPublicKey`] when the bytes are not 32 long or not a curve point.
    pub fn try_from_bytes(bytes: &[u8]) -> Result<Self, AuthError> {
        let raw: [u8; 32] = bytes.try_into().map_err(|_| AuthError::InvalidPublicKey)?;
        ed25519_dalek::VerifyingKey::from_bytes(&raw)
            .map(Self)
            .map_err(|_| AuthError::InvalidPublicKey)
    }

    /// The raw 32 bytes.
    #[must_use]
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// A short public identifier (hex of the first 8 bytes of the key's SHA-256).
    #[must_use]
    pub fn key_id(&self) -> String {
        key_id_of(&self.0)
    }

    /// Verifies `signature` over `statement` (strict Ed25519 verification).
    ///
    /// # Errors
    /// [`AuthError::MalformedSignature`] when the signature is not 64 bytes,
    /// [`AuthError::BadSignature`] when it does not verify.
    pub fn verify<S: Statement>(&self, statement: &S, signature: &[u8]) -> Result<(), AuthError> {
        verify_statement(&self.0, statement, signature, "device")
    }
}

fn verify_statement<S: Statement>(
    key: &ed25519_dalek::VerifyingKey,
    statement: &S,
    signature: &[u8],
    signer: &'static str,
) -> Result<(), AuthError> {
    let raw: [u8; SIGNATURE_LEN] =
        signature
            .try_into()
            .map_err(|_| AuthError::MalformedSignature {
                statement: S::NAME,
                len: signature.len(),
            })?;
    let signature = ed25519_dalek::Signature::from_bytes(&raw);
    if verify_signature(key, &statement.encode(), &signature) {
        Ok(())
    } else {
        Err(AuthError::BadSignature {
            statement: S::NAME,
            signer,
        })
    }
}

/// The key authority's public key as meters' certificates are checked with it: the Ed25519 key
/// that signs JWTs, loaded from its published SubjectPublicKeyInfo PEM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthorityPublicKey(ed25519_dalek::VerifyingKey);

impl AuthorityPublicKey {
    /// Parses the key authority's public key PEM (`-----BEGIN PUBLIC KEY-----`).
    ///
    /// # Errors
    /// [`AuthError::InvalidPublicKey`] when the PEM is not an Ed25519 public key.
    pub fn from_public_key_pem(pem: &str) -> Result<Self, AuthError> {
        ed25519_dalek::VerifyingKey::from_public_key_pem(pem)
            .map(Self)
            .map_err(|_| AuthError::InvalidPublicKey)
    }

    /// Wraps a verifying key.
    #[must_use]
    pub fn new(key: ed25519_dalek::VerifyingKey) -> Self {
        Self(key)
    }
}

/// The claims of a [`MeterCertificate`]: which device key speaks for which meter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeterCertificateBody {
    /// The meter.
    pub meter_id: String,
    /// Its enrolled device public key.
    pub device_public_key: [u8; 32],
    /// When the key authority issued the certificate, Unix seconds.
    pub issued_at: i64,
}

impl Statement for MeterCertificateBody {
    const TAG: &'static [u8] = METER_CERT_TAG;
    const NAME: &'static str = "meter certificate";

    fn encode(&self) -> Vec<u8> {
        Encoder::new(Self::TAG)
            .str(&self.meter_id)
            .bytes(&self.device_public_key)
            .i64(self.issued_at)
            .finish()
    }
}

/// The key authority's signed binding of a meter id to a device public key. Its wire form is
/// the body's canonical encoding followed by the 64-byte signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeterCertificate {
    body: MeterCertificateBody,
    signature: [u8; SIGNATURE_LEN],
}

/// Largest certificate accepted on the wire, in bytes (a meter id is at most
/// [`crate::MAX_METER_ID_LEN`] bytes).
pub const MAX_CERTIFICATE_LEN: usize = 1024;

impl MeterCertificate {
    /// Issues a certificate with the key authority's signing key.
    #[cfg(feature = "issuer")]
    #[must_use]
    pub fn issue(key: &crate::JwtSigningKey, body: MeterCertificateBody) -> Self {
        let signature = key.sign(&body.encode()).to_bytes();
        Self { body, signature }
    }

    /// The claims (not yet verified unless obtained from [`Self::verify`]).
    #[must_use]
    pub fn body(&self) -> &MeterCertificateBody {
        &self.body
    }

    /// The wire form: the body's encoding, then the signature.
    #[must_use]
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = self.body.encode();
        bytes.extend_from_slice(&self.signature);
        bytes
    }

    /// Parses the wire form (the signature is not checked: see [`Self::verify`]).
    ///
    /// # Errors
    /// [`AuthError::MalformedCertificate`] naming what is wrong.
    pub fn try_from_bytes(bytes: &[u8]) -> Result<Self, AuthError> {
        if bytes.len() > MAX_CERTIFICATE_LEN {
            return Err(AuthError::MalformedCertificate("too large"));
        }
        let rest = bytes
            .strip_prefix(METER_CERT_TAG)
            .ok_or(AuthError::MalformedCertificate("wrong domain tag"))?;
        let (meter_id, rest) = take_field(rest)?;
        let meter_id = std::str::from_utf8(meter_id)
            .map_err(|_| AuthError::MalformedCertificate("meter id is not UTF-8"))?
            .to_owned();
        let (key, rest) = take_field(rest)?;
        let device_public_key: [u8; 32] = key
            .try_into()
            .map_err(|_| AuthError::MalformedCertificate("device key is not 32 bytes"))?;
        let (issued_at, rest) = rest
            .split_first_chunk::<8>()
            .ok_or(AuthError::MalformedCertificate("truncated"))?;
        let signature: [u8; SIGNATURE_LEN] = rest
            .try_into()
            .map_err(|_| AuthError::MalformedCertificate("signature is not 64 bytes"))?;
        Ok(Self {
            body: MeterCertificateBody {
                meter_id,
                device_public_key,
                issued_at: i64::from_be_bytes(*issued_at),
            },
            signature,
        })
    }

    /// Checks the key authority's signature and that the certificate names `meter_id`;
    /// returns the certified device key.
    ///
    /// # Errors
    /// [`AuthError::BadSignature`] when the key authority did not sign it,
    /// [`AuthError::CertificateMeterMismatch`] when it names another meter,
    /// [`AuthError::InvalidPublicKey`] when the certified key is not a curve point.
    pub fn verify(
        &self,
        authority: &AuthorityPublicKey,
        meter_id: &str,
    ) -> Result<DevicePublicKey, AuthError> {
        verify_statement(&authority.0, &self.body, &self.signature, "key authority")?;
        if self.body.meter_id != meter_id {
            return Err(AuthError::CertificateMeterMismatch {
                certified: self.body.meter_id.clone(),
                presented: meter_id.to_owned(),
            });
        }
        DevicePublicKey::try_from_bytes(&self.body.device_public_key)
    }
}

/// Splits a u32-length-prefixed field off the front of `bytes`.
fn take_field(bytes: &[u8]) -> Result<(&[u8], &[u8]), AuthError> {
    let (len, rest) = bytes
        .split_first_chunk::<4>()
        .ok_or(AuthError::MalformedCertificate("truncated"))?;
    let len = u32::from_be_bytes(*len) as usize;
    if rest.len() < len {
        return Err(AuthError::MalformedCertificate("truncated"));
    }
    Ok(rest.split_at(len))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;
    use crate::JwtSigningKey;

    fn receipt() -> BillingReceiptStatement {
        BillingReceiptStatement {
            meter_id: "M-0001".into(),
            sequence: 7,
            period: "2026-11".into(),
            params_id: "billing-n8192".into(),
            billing_lane_blake3: [1; 32],
            billing_group: 2,
            billing_position: 3,
            closes_period: false,
        }
    }

    fn batch() -> BatchStatement {
        BatchStatement {
            meter_id: "M-0001".into(),
            sequence: 7,
            period: "2026-11".into(),
            start: "2026-11-01T00:00:00+00:00".into(),
            end: "2026-11-02T00:00:00+00:00".into(),
            readings: 96,
            billing_lane_blake3: [1; 32],
            analytics_lane_blake3: [2; 32],
            billing_group: 2,
            billing_position: 3,
            epsilon_spent: 9.6,
            noise: None,
        }
    }

    fn plan() -> NoisePlanStatement {
        NoisePlanStatement {
            group_size: 100,
            tolerated: 10,
            sensitivity_wh: 3_450,
            epsilon: 1.0,
            window_start: "2026-11-01T00:00:00+00:00".into(),
            interval_seconds: 900,
            window_slots: 96,
            first_slot: 0,
            slot_count: 96,
        }
    }

    fn analytics() -> AnalyticsReceiptStatement {
        AnalyticsReceiptStatement {
            kind: "forecast".into(),
            meter_id: "M-0001".into(),
            input_id: "2026-11-01".into(),
            model_blake3: "ab".repeat(32),
            slot_offset: 24,
            slot_count: 24,
            first_period: "2026-11-01T00:00".into(),
            group: 0,
            input_blake3: vec![[3; 32], [4; 32]],
            lane: "analytics".into(),
            epsilon: 0.5,
            readings_per_day: 96,
        }
    }

    /// Every variant of `base` with one field changed encodes differently from `base` and
    /// from each other, and a signature over `base` verifies for none of them.
    fn assert_fields_bound<S: Statement>(base: &S, variants: &[S]) {
        let key = DeviceKey::generate().expect("key");
        let signature = key.sign(base);
        key.public_key().verify(base, &signature).expect("verifies");
        let mut encodings = vec![base.encode()];
        for variant in variants {
            let encoding = variant.encode();
            assert!(
                !encodings.contains(&encoding),
                "{} encodings collide",
                S::NAME
            );
            encodings.push(encoding);
            assert!(matches!(
                key.public_key().verify(variant, &signature),
                Err(AuthError::BadSignature { .. })
            ));
        }
    }

    #[test]
    fn every_billing_receipt_field_is_signed() {
        let base = receipt();
        let with = |f: &dyn Fn(&mut BillingReceiptStatement)| {
            let mut s = base.clone();
            f(&mut s);
            s
        };
        assert_fields_bound(
            &base,
            &[
                with(&|s| s.meter_id = "M-0002".into()),
                with(&|s| s.sequence = 8),
                with(&|s| s.period = "2026-12".into()),
                with(&|s| s.params_id = "other".into()),
                with(&|s| s.billing_lane_blake3[31] ^= 1),
                with(&|s| s.billing_group = 1),
                with(&|s| s.billing_position = 4),
                with(&|s| s.closes_period = true),
            ],
        );
    }

    #[test]
    fn every_batch_field_is_signed() {
        let base = batch();
        let with = |f: &dyn Fn(&mut BatchStatement)| {
            let mut s = base.clone();
            f(&mut s);
            s
        };
        assert_fields_bound(
            &base,
            &[
                with(&|s| s.meter_id = "M-0002".into()),
                with(&|s| s.sequence = 8),
                with(&|s| s.period = "2026-12".into()),
                with(&|s| s.start = "2026-11-01T00:15:00+00:00".into()),
                with(&|s| s.end = "2026-11-02T00:15:00+00:00".into()),
                with(&|s| s.readings = 95),
                with(&|s| s.billing_lane_blake3[0] ^= 1),
                with(&|s| s.analytics_lane_blake3[0] ^= 1),
                with(&|s| s.billing_group = 1),
                with(&|s| s.billing_position = 4),
                with(&|s| s.epsilon_spent = 9.7),
                with(&|s| s.noise = Some(plan())),
            ],
        );
    }

    #[test]
    fn every_noise_plan_field_is_signed() {
        let base = BatchStatement {
            noise: Some(plan()),
            ..batch()
        };
        let with = |f: &dyn Fn(&mut NoisePlanStatement)| {
            let mut s = base.clone();
            if let Some(plan) = s.noise.as_mut() {
                f(plan);
            }
            s
        };
        assert_fields_bound(
            &base,
            &[
                with(&|p| p.group_size = 101),
                with(&|p| p.tolerated = 11),
                with(&|p| p.sensitivity_wh = 3_451),
                with(&|p| p.epsilon = 1.5),
                with(&|p| p.window_start = "2026-11-02T00:00:00+00:00".into()),
                with(&|p| p.interval_seconds = 1_800),
                with(&|p| p.window_slots = 48),
                with(&|p| p.first_slot = 1),
                with(&|p| p.slot_count = 95),
            ],
        );
        // A batch without a plan encodes exactly as before plans existed.
        let old = batch().encode();
        assert!(base.encode().starts_with(&old));
        assert!(base.encode().len() > old.len());
    }

    #[test]
    fn every_analytics_receipt_field_is_signed() {
        let base = analytics();
        let with = |f: &dyn Fn(&mut AnalyticsReceiptStatement)| {
            let mut s = base.clone();
            f(&mut s);
            s
        };
        assert_fields_bound(
            &base,
            &[
                with(&|s| s.kind = "anomaly".into()),
                with(&|s| s.meter_id = "M-0002".into()),
                with(&|s| s.input_id = "2026-11-02".into()),
                with(&|s| s.model_blake3 = "cd".repeat(32)),
                with(&|s| s.slot_offset = 0),
                with(&|s| s.slot_count = 23),
                with(&|s| s.first_period = "2026-11-01T01:00".into()),
                with(&|s| s.group = 1),
                with(&|s| s.input_blake3[1][0] ^= 1),
                with(&|s| s.input_blake3.truncate(1)),
                with(&|s| s.lane = "exact".into()),
                with(&|s| s.epsilon = 1.0),
                with(&|s| s.readings_per_day = 24),
            ],
        );
    }

    #[test]
    fn enrolment_and_renewal_fields_are_signed() {
        let base = EnrolmentStatement {
            meter_id: "M-0001".into(),
            device_public_key: [5; 32],
        };
        assert_fields_bound(
            &base,
            &[
                EnrolmentStatement {
                    meter_id: "M-0002".into(),
                    ..base.clone()
                },
                EnrolmentStatement {
                    device_public_key: [6; 32],
                    ..base.clone()
                },
            ],
        );
        let base = TokenRenewalStatement {
            meter_id: "M-0001".into(),
            issued_at: 1_700_000_000,
            audience: "seer-utility-server".into(),
        };
        assert_fields_bound(
            &base,
            &[
                TokenRenewalStatement {
                    meter_id: "M-0002".into(),
                    ..base.clone()
                },
                TokenRenewalStatement {
                    issued_at: 1_700_000_001,
                    ..base.clone()
                },
                TokenRenewalStatement {
                    audience: "seer-key-authority".into(),
                    ..base.clone()
                },
            ],
        );
    }

    #[test]
    fn length_prefixes_keep_adjacent_strings_apart() {
        let a = BatchStatement {
            start: "ab".into(),
            end: "c".into(),
            ..batch()
        };
        let b = BatchStatement {
            start: "a".into(),
            end: "bc".into(),
            ..batch()
        };
        assert_ne!(a.encode(), b.encode());
    }

    #[test]
    fn tags_are_distinct_and_separate_statements() {
        let tags = [
            BILLING_RECEIPT_TAG,
            BATCH_TAG,
            ANALYTICS_RECEIPT_TAG,
            ENROL_TAG,
            RENEW_TAG,
            METER_CERT_TAG,
        ];
        for (i, a) in tags.iter().enumerate() {
            assert_eq!(a.last(), Some(&0));
            for b in &tags[i + 1..] {
                assert!(!a.starts_with(b) && !b.starts_with(a));
            }
        }
        assert!(receipt().encode().starts_with(BILLING_RECEIPT_TAG));
        assert!(batch().encode().starts_with(BATCH_TAG));
        assert!(analytics().encode().starts_with(ANALYTICS_RECEIPT_TAG));
    }

    #[test]
    fn wrong_key_or_malformed_signature_is_refused() {
        let key = DeviceKey::generate().expect("key");
        let other = DeviceKey::generate().expect("key");
        let signature = key.sign(&receipt());
        assert!(matches!(
            other.public_key().verify(&receipt(), &signature),
            Err(AuthError::BadSignature { .. })
        ));
        assert!(matches!(
            key.public_key().verify(&receipt(), &signature[..63]),
            Err(AuthError::MalformedSignature { len: 63, .. })
        ));
        assert!(matches!(
            key.public_key().verify(&receipt(), &[]),
            Err(AuthError::MalformedSignature { len: 0, .. })
        ));
    }

    #[test]
    fn public_key_round_trips() {
        let key = DeviceKey::generate().expect("key");
        let public = key.public_key();
        assert_eq!(
            DevicePublicKey::try_from_bytes(&public.to_bytes()).expect("parses"),
            public
        );
        assert!(DevicePublicKey::try_from_bytes(&[0; 31]).is_err());
    }

    #[test]
    fn debug_shows_no_secret() {
        let key = DeviceKey::generate().expect("key");
        let debug = format!("{key:?}");
        assert!(debug.contains("[REDACTED]"));
        assert!(!debug.contains(&hex::encode(key.signing.to_bytes())));
    }

    #[test]
    fn device_key_file_is_private_and_reloads() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("device-key.pem");
        let (key, origin) = DeviceKey::load_or_generate(&path).expect("generate");
        assert_eq!(origin, KeyOrigin::Generated);
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let (again, origin) = DeviceKey::load_or_generate(&path).expect("load");
        assert_eq!(origin, KeyOrigin::Loaded);
        assert_eq!(again.public_key(), key.public_key());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).expect("chmod");
        assert!(matches!(
            DeviceKey::load(&path),
            Err(AuthError::KeyFilePermissions { mode: 0o640, .. })
        ));
    }

    #[test]
    fn certificates_round_trip_and_verify_with_the_published_pem() {
        let authority = JwtSigningKey::generate().expect("key");
        let public =
            AuthorityPublicKey::from_public_key_pem(&authority.public_key_pem().expect("pem"))
                .expect("parses");
        let device = DeviceKey::generate().expect("key");
        let body = MeterCertificateBody {
            meter_id: "M-0001".into(),
            device_public_key: device.public_key().to_bytes(),
            issued_at: 1_700_000_000,
        };
        let certificate = MeterCertificate::issue(&authority, body.clone());
        let parsed = MeterCertificate::try_from_bytes(&certificate.to_bytes()).expect("parses");
        assert_eq!(parsed, certificate);
        assert_eq!(
            parsed.verify(&public, "M-0001").expect("verifies"),
            device.public_key()
        );
        assert!(matches!(
            parsed.verify(&public, "M-0002"),
            Err(AuthError::CertificateMeterMismatch { .. })
        ));
        let stranger = JwtSigningKey::generate().expect("key");
        assert!(matches!(
            parsed.verify(&AuthorityPublicKey::new(stranger.verifying_key()), "M-0001"),
            Err(AuthError::BadSignature { .. })
        ));
        // A certificate with another body under the same signature is refused.
        let mut forged = certificate.to_bytes();
        let meter_at = METER_CERT_TAG.len() + 4;
        forged[meter_at + 5] = b'2';
        let forged = MeterCertificate::try_from_bytes(&forged).expect("parses");
        assert!(forged.verify(&public, "M-0002").is_err());
        // Truncations, a wrong tag and extra bytes are malformed.
        let bytes = certificate.to_bytes();
        for cut in [0, 5, METER_CERT_TAG.len() + 2, bytes.len() - 1] {
            assert!(MeterCertificate::try_from_bytes(&bytes[..cut]).is_err());
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(MeterCertificate::try_from_bytes(&longer).is_err());
        let mut wrong_tag = bytes;
        wrong_tag[5] ^= 1;
        assert!(matches!(
            MeterCertificate::try_from_bytes(&wrong_tag),
            Err(AuthError::MalformedCertificate("wrong domain tag"))
        ));
        // A device's signature over the certificate body is not the authority's.
        let self_signed = MeterCertificate {
            body: body.clone(),
            signature: device.sign(&body),
        };
        assert!(self_signed.verify(&public, "M-0001").is_err());
    }
}
