//! The meter's identity: its Ed25519 device key and the key authority's certificate for it,
//! both kept in the state directory.
//!
//! `meter-client enrol` creates the device key (`device-key.pem`, PKCS#8 PEM, mode 0600;
//! an existing key is reused, so an enrolment interrupted after the key was written resumes
//! with the same key), sends it with the one-time code and a proof of possession to the key
//! authority (`seer.v1.Enrolment.Enrol`) and stores the returned certificate
//! (`meter-certificate.bin`, written to a temporary file and renamed into place). Asking again
//! with the same key and code returns the same certificate, so a crash between the key
//! authority's answer and the certificate's write is repaired by running the command again.
//!
//! The device key never leaves the state directory. What the meter asserts about its data is
//! signed with it (see `seer_auth::device`); the certificate lets the utility check those
//! signatures with the key authority's public key alone.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use seer_auth::KeyOrigin;
use seer_auth::device::{DeviceKey, EnrolmentStatement, MeterCertificate, Statement};
use seer_proto::WithMessageLimits as _;
use seer_proto::v1::EnrolRequest;
use seer_proto::v1::enrolment_client::EnrolmentClient;

use crate::error::Error;
use crate::grpc::connect;

/// The device key's file name in the state directory.
pub const DEVICE_KEY_FILE: &str = "device-key.pem";
/// The certificate's file name in the state directory.
pub const CERTIFICATE_FILE: &str = "meter-certificate.bin";

/// A meter's device key and the key authority's certificate binding it to the meter id.
#[derive(Debug)]
pub struct DeviceIdentity {
    key: DeviceKey,
    certificate: MeterCertificate,
}

impl DeviceIdentity {
    /// Loads the identity of `meter_id` from `state_dir`.
    ///
    /// # Errors
    /// [`Error::NotEnrolled`] (naming the `enrol` command) when the key or the certificate is
    /// missing; [`Error::Identity`] when the key file is unsafe or malformed, the certificate
    /// malformed, or either belongs to another meter or key.
    pub fn load(state_dir: &Path, meter_id: &str) -> Result<Self, Error> {
        let not_enrolled = |missing| Error::NotEnrolled {
            meter_id: meter_id.to_owned(),
            state_dir: state_dir.to_path_buf(),
            missing,
        };
        let key_path = state_dir.join(DEVICE_KEY_FILE);
        let certificate_path = state_dir.join(CERTIFICATE_FILE);
        if !key_path.exists() {
            return Err(not_enrolled(DEVICE_KEY_FILE));
        }
        let bytes = match fs::read(&certificate_path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(not_enrolled(CERTIFICATE_FILE));
            }
            Err(e) => {
                return Err(Error::File {
                    path: certificate_path,
                    reason: e.to_string(),
                });
            }
        };
        let key = DeviceKey::load(&key_path)?;
        let certificate = MeterCertificate::try_from_bytes(&bytes)?;
        Self::try_new(key, certificate, meter_id)
    }

    fn try_new(
        key: DeviceKey,
        certificate: MeterCertificate,
        meter_id: &str,
    ) -> Result<Self, Error> {
        let body = certificate.body();
        if body.meter_id != meter_id {
            return Err(seer_auth::AuthError::CertificateMeterMismatch {
                certified: body.meter_id.clone(),
                presented: meter_id.to_owned(),
            }
            .into());
        }
        if body.device_public_key != key.public_key().to_bytes() {
            return Err(Error::InvalidSetting {
                setting: "meter certificate",
                reason: "the certificate is for another device key than the state directory's"
                    .into(),
            });
        }
        Ok(Self { key, certificate })
    }

    /// The meter id the certificate names.
    #[must_use]
    pub fn meter_id(&self) -> &str {
        &self.certificate.body().meter_id
    }

    /// The certificate.
    #[must_use]
    pub fn certificate(&self) -> &MeterCertificate {
        &self.certificate
    }

    /// The device public key.
    #[must_use]
    pub fn public_key(&self) -> seer_auth::device::DevicePublicKey {
        self.key.public_key()
    }

    /// Signs a statement with the device key.
    #[must_use]
    pub fn sign<S: Statement>(&self, statement: &S) -> Vec<u8> {
        self.key.sign(statement).to_vec()
    }
}

/// Enrols `meter_id` with the key authority at `key_authority_url` using the one-time `code`,
/// creating (or reusing) the device key in `state_dir` and storing the certificate there.
///
/// # Errors
/// The key file cannot be created or read, the key authority cannot be reached or refuses
/// (an unknown, used or expired code: PERMISSION_DENIED), or its certificate does not certify
/// this key for this meter.
pub async fn enrol(
    meter_id: &str,
    code: &str,
    key_authority_url: &str,
    state_dir: &Path,
) -> Result<DeviceIdentity, Error> {
    fs::create_dir_all(state_dir).map_err(|e| Error::StateDirectory {
        path: state_dir.to_path_buf(),
        reason: e.to_string(),
    })?;
    let (key, origin) = DeviceKey::load_or_generate(&state_dir.join(DEVICE_KEY_FILE))?;
    if origin == KeyOrigin::Generated {
        tracing::info!(key = %key.public_key().key_id(), "generated the device key");
    }
    let public = key.public_key().to_bytes();
    let signature = key
        .sign(&EnrolmentStatement {
            meter_id: meter_id.to_owned(),
            device_public_key: public,
        })
        .to_vec();
    let channel = connect(key_authority_url).await?;
    let mut client = EnrolmentClient::new(channel).with_seer_limits();
    let response = client
        .enrol(EnrolRequest {
            meter_id: meter_id.to_owned(),
            code: code.to_owned(),
            device_public_key: public.to_vec(),
            signature,
        })
        .await
        .map_err(|status| Error::rpc("Enrolment.Enrol", &status))?
        .into_inner();
    let certificate = MeterCertificate::try_from_bytes(&response.meter_certificate)?;
    let identity = DeviceIdentity::try_new(key, certificate, meter_id)?;
    write_atomically(
        &state_dir.join(CERTIFICATE_FILE),
        &response.meter_certificate,
    )?;
    Ok(identity)
}

/// Writes `bytes` to `path` through a synced temporary file renamed into place.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let io = |path: &Path| {
        let path: PathBuf = path.to_path_buf();
        move |e: std::io::Error| Error::File {
            path,
            reason: e.to_string(),
        }
    };
    let temporary = path.with_extension("tmp");
    let mut file = fs::File::create(&temporary).map_err(io(&temporary))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(io(&temporary))?;
    fs::rename(&temporary, path).map_err(io(path))?;
    if let Some(dir) = path.parent() {
        fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io(dir))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_directory_without_identity_names_the_enrol_command() {
        let dir = tempfile::tempdir().expect("dir");
        let error = DeviceIdentity::load(dir.path(), "M-0001").expect_err("not enrolled");
        assert!(matches!(
            error,
            Error::NotEnrolled {
                missing: DEVICE_KEY_FILE,
                ..
            }
        ));
        assert!(error.to_string().contains("meter-client enrol"), "{error}");
        DeviceKey::load_or_generate(&dir.path().join(DEVICE_KEY_FILE)).expect("key");
        let error = DeviceIdentity::load(dir.path(), "M-0001").expect_err("no certificate");
        assert!(matches!(
            error,
            Error::NotEnrolled {
                missing: CERTIFICATE_FILE,
                ..
            }
        ));
    }
}
