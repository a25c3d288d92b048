//! Certificate revocation: the deployment CA's certificate revocation list (CRL).
//!
//! A meter's device key is revoked at the key authority (`key-authority revoke-meter`); its
//! TLS certificate is revoked here, so that it no longer completes a handshake with the
//! utility or the key authority. The PKI directory holds the CA's signed list, `crl.pem`
//! ([`CRL_FILE`]); [`DeploymentCa::revoke`] adds a certificate's serial number to it and signs
//! a new list with the next CRL number. Servers configured with the list (`server.tls.crl_file`)
//! refuse a listed client certificate in the handshake and re-read the file when it changes
//! ([`crate::server`]). The list is the record: it is parsed back (with `x509-parser`) to add
//! an entry, so no other state is kept.

use std::path::{Path, PathBuf};

use rcgen::{
    CertificateRevocationListParams, KeyIdMethod, RevocationReason, RevokedCertParams, SerialNumber,
};
use time::{Duration, OffsetDateTime};

use crate::TlsError;
use crate::files::{read_public, replace_public};
use crate::pki::DeploymentCa;

/// The revocation list's file name in a PKI directory.
pub const CRL_FILE: &str = "crl.pem";
/// How long a list is declared valid (`nextUpdate`); servers do not enforce it (the list is
/// replaced when a certificate is revoked, not on a schedule).
const CRL_VALIDITY: Duration = Duration::days(365);

/// One revoked certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevokedSerial {
    /// The certificate's serial number (big-endian bytes).
    pub serial: Vec<u8>,
    /// When it was revoked.
    pub revoked_at: OffsetDateTime,
}

/// A revocation list read back from its file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevocationList {
    /// The list's CRL number (0 for the first list).
    pub number: u64,
    /// The revoked certificates.
    pub revoked: Vec<RevokedSerial>,
}

/// What [`DeploymentCa::revoke`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    /// The list written.
    pub file: PathBuf,
    /// The revoked certificate's serial number.
    pub serial: Vec<u8>,
    /// False when the certificate was listed already (the list is unchanged).
    pub added: bool,
    /// Certificates the list now holds.
    pub listed: usize,
}

fn invalid(what: &Path, reason: impl Into<String>) -> TlsError {
    TlsError::Invalid {
        what: what.display().to_string(),
        reason: reason.into(),
    }
}

/// The serial number of the certificate in `pem` (its first certificate).
///
/// # Errors
/// [`TlsError::Invalid`] when `pem` holds no parsable certificate.
pub fn certificate_serial(pem: &str, what: &Path) -> Result<Vec<u8>, TlsError> {
    let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .map_err(|e| invalid(what, format!("not a PEM certificate: {e}")))?;
    let certificate = block
        .parse_x509()
        .map_err(|e| invalid(what, format!("not an X.509 certificate: {e}")))?;
    Ok(certificate.raw_serial().to_vec())
}

/// Reads the revocation list in `path`.
///
/// # Errors
/// When the file cannot be read or holds no parsable CRL.
pub fn read_list(path: &Path) -> Result<RevocationList, TlsError> {
    let pem = read_public(path)?;
    let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .map_err(|e| invalid(path, format!("not a PEM revocation list: {e}")))?;
    if block.label != "X509 CRL" {
        return Err(invalid(
            path,
            format!("holds a PEM {:?}, not an X509 CRL", block.label),
        ));
    }
    let (_, crl) = x509_parser::parse_x509_crl(&block.contents)
        .map_err(|e| invalid(path, format!("not a revocation list: {e}")))?;
    let number = crl
        .crl_number()
        .and_then(|n| u64::try_from(n).ok())
        .unwrap_or(0);
    let revoked = crl
        .iter_revoked_certificates()
        .map(|r| RevokedSerial {
            serial: r.raw_serial().to_vec(),
            revoked_at: OffsetDateTime::from_unix_timestamp(r.revocation_date.timestamp())
                .unwrap_or(OffsetDateTime::UNIX_EPOCH),
        })
        .collect();
    Ok(RevocationList { number, revoked })
}

impl DeploymentCa {
    /// Signs a revocation list numbered `number` listing `revoked`.
    fn sign_list(&self, number: u64, revoked: &[RevokedSerial]) -> Result<String, TlsError> {
        let now = OffsetDateTime::now_utc();
        let params = CertificateRevocationListParams {
            this_update: now,
            next_update: now + CRL_VALIDITY,
            crl_number: SerialNumber::from(number),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|r| RevokedCertParams {
                    serial_number: SerialNumber::from_slice(&r.serial),
                    revocation_time: r.revoked_at,
                    reason_code: Some(RevocationReason::Unspecified),
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        Ok(params.signed_by(self.issuer())?.pem()?)
    }

    /// Writes an empty revocation list into `dir` unless one exists; returns its path.
    ///
    /// # Errors
    /// When signing or writing fails.
    pub fn ensure_revocation_list(&self, dir: &Path) -> Result<PathBuf, TlsError> {
        let path = dir.join(CRL_FILE);
        if !path.exists() {
            replace_public(&path, self.sign_list(0, &[])?.as_bytes())?;
        }
        Ok(path)
    }

    /// Revokes the certificate in `certificate_pem`: adds its serial number to the list in
    /// `dir` (created when missing) and signs the list anew with the next CRL number. A
    /// certificate listed already leaves the list as it is.
    ///
    /// # Errors
    /// When the certificate was not issued by this CA, the existing list is not this CA's or
    /// cannot be read, or signing or writing fails.
    pub fn revoke(
        &self,
        dir: &Path,
        certificate_pem: &str,
        what: &Path,
    ) -> Result<Revocation, TlsError> {
        let serial = self.issued_serial(certificate_pem, what)?;
        let path = self.ensure_revocation_list(dir)?;
        let mut list = read_list(&path)?;
        let added = !list.revoked.iter().any(|r| r.serial == serial);
        if added {
            list.revoked.push(RevokedSerial {
                serial: serial.clone(),
                revoked_at: OffsetDateTime::now_utc(),
            });
            replace_public(
                &path,
                self.sign_list(list.number + 1, &list.revoked)?.as_bytes(),
            )?;
        }
        Ok(Revocation {
            file: path,
            serial,
            added,
            listed: list.revoked.len(),
        })
    }

    /// The serial number of `certificate_pem`, which must have been signed by this CA.
    fn issued_serial(&self, certificate_pem: &str, what: &Path) -> Result<Vec<u8>, TlsError> {
        let parse = |pem: &str| -> Result<Vec<u8>, TlsError> {
            let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes())
                .map_err(|e| invalid(what, format!("not a PEM certificate: {e}")))?;
            Ok(block.contents)
        };
        let leaf_der = parse(certificate_pem)?;
        let ca_der = parse(self.certificate_pem())?;
        let (_, leaf) = x509_parser::parse_x509_certificate(&leaf_der)
            .map_err(|e| invalid(what, format!("not an X.509 certificate: {e}")))?;
        let (_, ca) = x509_parser::parse_x509_certificate(&ca_der)
            .map_err(|e| invalid(what, format!("the CA certificate does not parse: {e}")))?;
        // Names are not unique across deployments (`seer pki init` names every CA after its
        // deployment, "seer" by default): the signature decides.
        leaf.verify_signature(Some(ca.public_key())).map_err(|_| {
            invalid(
                what,
                format!(
                    "was not issued by this deployment's CA ({}); it names {} as issuer",
                    ca.subject(),
                    leaf.issuer()
                ),
            )
        })?;
        Ok(leaf.raw_serial().to_vec())
    }
}
