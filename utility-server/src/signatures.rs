//! Meters' signatures, checked at ingest: the batch's integrity and origin.
//!
//! Every `UploadBatch` and every analytics input header carries the meter's Ed25519 signature
//! (its device key, enrolled at the key authority) and the key authority's
//! [`MeterCertificate`] binding the meter id to that key. The utility checks the certificate
//! with the key authority's published public key — the same Ed25519 key whose PEM verifies
//! its JWTs (`auth.jwt_public_key_file`) — and that it names the batch's meter, then verifies
//! the signature over the canonical statement **rebuilt from the received fields and the
//! BLAKE3 of the received lanes** ([`BatchStatement`], [`AnalyticsReceiptStatement`]). This,
//! not the frame's unkeyed checksum, is a batch's integrity: a lane altered on the way (its
//! checksum recomputed) fails here, before anything is stored, so the meter's real batch is
//! still stored when it arrives. The signature and the certificate are stored with what they
//! cover, as proof of what the utility received.
//!
//! The utility cannot see revocations (the key authority keeps them); it refuses certificates
//! dated in the future. A revoked meter's receipts are refused by the key authority, so
//! nothing it uploads afterwards is ever released.

use seer_auth::AuthError;
use seer_auth::device::{
    AnalyticsReceiptStatement, AuthorityPublicKey, BatchStatement, DevicePublicKey,
    MeterCertificate,
};
use seer_proto::v1::{AnalyticsInputHeader, UploadBatch};

/// How far in the future a certificate's issued-at may lie (clock skew).
pub const CERTIFICATE_CLOCK_SKEW_SECONDS: i64 = 300;

/// Why a meter's signature is refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SignatureError {
    /// No signature or no certificate was sent.
    #[error(
        "the {what} carries no meter signature or certificate (meters sign since enrolment: \
         `meter-client enrol`)"
    )]
    Missing {
        /// `batch` or `input`.
        what: &'static str,
    },
    /// The certificate is malformed, not the key authority's, or for another meter.
    #[error("meter certificate refused: {0}")]
    Certificate(AuthError),
    /// The certificate is dated in the future.
    #[error("meter certificate refused: issued in the future ({issued_at})")]
    FutureCertificate {
        /// Its issued-at, Unix seconds.
        issued_at: i64,
    },
    /// The signature does not verify over what was received.
    #[error("the meter's signature does not verify over the {what} as received: {source}")]
    Signature {
        /// `batch` or `input`.
        what: &'static str,
        /// Why.
        source: AuthError,
    },
}

/// Checks meters' certificates and signatures with the key authority's public key.
#[derive(Debug, Clone)]
pub struct MeterSignatures {
    authority: AuthorityPublicKey,
}

impl MeterSignatures {
    /// Checks with `authority`.
    #[must_use]
    pub fn new(authority: AuthorityPublicKey) -> Self {
        Self { authority }
    }

    /// Checks with the key in a public key PEM (what `key-authority jwt-public-key` prints).
    ///
    /// # Errors
    /// When the PEM is not an Ed25519 public key.
    pub fn from_public_key_pem(pem: &str) -> Result<Self, AuthError> {
        Ok(Self::new(AuthorityPublicKey::from_public_key_pem(pem)?))
    }

    /// The device key `certificate` certifies for `meter_id`.
    fn device_key(
        &self,
        meter_id: &str,
        certificate: &[u8],
    ) -> Result<DevicePublicKey, SignatureError> {
        let certificate =
            MeterCertificate::try_from_bytes(certificate).map_err(SignatureError::Certificate)?;
        let key = certificate
            .verify(&self.authority, meter_id)
            .map_err(SignatureError::Certificate)?;
        let issued_at = certificate.body().issued_at;
        if issued_at > chrono::Utc::now().timestamp() + CERTIFICATE_CLOCK_SKEW_SECONDS {
            return Err(SignatureError::FutureCertificate { issued_at });
        }
        Ok(key)
    }

    /// Checks `wire`'s certificate and its signature over the [`BatchStatement`] of the
    /// received fields and lanes.
    ///
    /// # Errors
    /// [`SignatureError`] naming what is wrong.
    pub fn check_batch(&self, wire: &UploadBatch) -> Result<(), SignatureError> {
        if wire.signature.is_empty() || wire.meter_certificate.is_empty() {
            return Err(SignatureError::Missing { what: "batch" });
        }
        let key = self.device_key(&wire.meter_id, &wire.meter_certificate)?;
        key.verify(&batch_statement(wire), &wire.signature)
            .map_err(|source| SignatureError::Signature {
                what: "batch",
                source,
            })
    }

    /// Checks `header`'s certificate and its signature over the
    /// [`AnalyticsReceiptStatement`] of the header and the BLAKE3 of the received inputs.
    ///
    /// # Errors
    /// [`SignatureError`] naming what is wrong.
    pub fn check_input(
        &self,
        header: &AnalyticsInputHeader,
        input_blake3: Vec<[u8; 32]>,
    ) -> Result<(), SignatureError> {
        if header.signature.is_empty() || header.meter_certificate.is_empty() {
            return Err(SignatureError::Missing { what: "input" });
        }
        let key = self.device_key(&header.meter_id, &header.meter_certificate)?;
        key.verify(&input_statement(header, input_blake3), &header.signature)
            .map_err(|source| SignatureError::Signature {
                what: "input",
                source,
            })
    }
}

/// The batch statement of a received batch: its fields as sent, its lanes by BLAKE3.
#[must_use]
pub fn batch_statement(wire: &UploadBatch) -> BatchStatement {
    seer_proto::statements::batch_statement(wire, *blake3::hash(&wire.billing_lane).as_bytes())
}

/// The analytics receipt statement of a received input header and inputs.
#[must_use]
pub fn input_statement(
    header: &AnalyticsInputHeader,
    input_blake3: Vec<[u8; 32]>,
) -> AnalyticsReceiptStatement {
    AnalyticsReceiptStatement {
        kind: header.kind.clone(),
        meter_id: header.meter_id.clone(),
        input_id: header.input_id.clone(),
        model_blake3: header.model_blake3.clone(),
        slot_offset: header.slot_offset,
        slot_count: header.slot_count,
        first_period: header.first_period.clone(),
        group: header.group,
        input_blake3,
        lane: header.lane.clone(),
        epsilon: header.epsilon,
        readings_per_day: header.readings_per_day,
    }
}

#[cfg(test)]
mod tests {
    use seer_auth::device::{DeviceKey, MeterCertificateBody};

    use super::*;

    fn signed(authority: &seer_auth::JwtSigningKey) -> UploadBatch {
        let device = DeviceKey::generate().expect("key");
        let certificate = MeterCertificate::issue(
            authority,
            MeterCertificateBody {
                meter_id: "M-1".into(),
                device_public_key: device.public_key().to_bytes(),
                issued_at: 1_700_000_000,
            },
        );
        let mut wire = UploadBatch {
            meter_id: "M-1".into(),
            sequence: 3,
            period: "2024-01".into(),
            start: "2024-01-08T00:00:00+00:00".into(),
            end: "2024-01-15T00:00:00+00:00".into(),
            readings: 672,
            billing_lane: vec![1; 100],
            billing_position: 4,
            billing_group: 0,
            analytics_lane: vec![2; 100],
            epsilon_spent: 33.6,
            signature: Vec::new(),
            meter_certificate: certificate.to_bytes(),
            noise_plan: None,
        };
        wire.signature = device.sign(&batch_statement(&wire)).to_vec();
        wire
    }

    #[test]
    fn a_signed_batch_verifies_and_any_change_is_refused() {
        let authority = seer_auth::JwtSigningKey::generate().expect("key");
        let signatures = MeterSignatures::new(AuthorityPublicKey::new(authority.verifying_key()));
        let wire = signed(&authority);
        signatures.check_batch(&wire).expect("verifies");
        let changes: [fn(&mut UploadBatch); 7] = [
            |w| w.billing_lane[7] ^= 1,
            |w| w.analytics_lane[0] ^= 1,
            |w| w.sequence = 4,
            |w| w.period = "2024-02".into(),
            |w| w.billing_position = 5,
            |w| w.epsilon_spent = 0.0,
            |w| w.end = "2024-01-15T00:15:00+00:00".into(),
        ];
        for change in &changes {
            let mut altered = wire.clone();
            change(&mut altered);
            assert!(matches!(
                signatures.check_batch(&altered),
                Err(SignatureError::Signature { .. })
            ));
        }
        // Another meter's id: the certificate names M-1.
        let mut other = wire.clone();
        other.meter_id = "M-2".into();
        assert!(matches!(
            signatures.check_batch(&other),
            Err(SignatureError::Certificate(_))
        ));
        // Unsigned, or a certificate from another key authority.
        let mut unsigned = wire.clone();
        unsigned.signature.clear();
        assert!(matches!(
            signatures.check_batch(&unsigned),
            Err(SignatureError::Missing { .. })
        ));
        let stranger = seer_auth::JwtSigningKey::generate().expect("key");
        let foreign = MeterSignatures::new(AuthorityPublicKey::new(stranger.verifying_key()));
        assert!(matches!(
            foreign.check_batch(&wire),
            Err(SignatureError::Certificate(_))
        ));
    }
}
