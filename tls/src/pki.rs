//! The deployment PKI: one CA per deployment, and the certificates it issues.
//!
//! Keys are ECDSA P-256: rustls, webpki and PostgreSQL's OpenSSL all verify it, and it is
//! cheap to generate (a deployment's whole PKI, CA and a certificate per process, is made in
//! milliseconds, so every test deployment gets its own). The CA's certificate may sign end-entity
//! certificates only (path length 0). Leaf certificates carry:
//! - server certificates: DNS and IP subject alternative names (default `localhost`,
//!   `127.0.0.1`, `::1`) and the `serverAuth` key purpose;
//! - party certificates: the party's `urn:seer:` URI ([`Party`]) and `clientAuth`; the
//!   utility's also its server names and `serverAuth`, since it serves meters and calls the
//!   key authority with one identity.
//!
//! On disk (`DIR`): `ca.pem` and `ca-key.pem`, and per certificate `<stem>.pem` and
//! `<stem>-key.pem`; private keys are mode 0600 and never replaced silently.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType,
};
use time::{Duration, OffsetDateTime};
use zeroize::Zeroizing;

use crate::TlsError;
use crate::files::{read_private, read_public, write_new};
use crate::identity::{Party, PartyKind};

/// The CA certificate's file name in a PKI directory.
pub const CA_CERT_FILE: &str = "ca.pem";
/// The CA key's file name in a PKI directory.
pub const CA_KEY_FILE: &str = "ca-key.pem";

/// How long the CA certificate is valid.
const CA_VALIDITY: Duration = Duration::days(3650);
/// How long an issued certificate is valid.
const LEAF_VALIDITY: Duration = Duration::days(825);
/// Allowance for clocks that are slightly behind.
const BACKDATE: Duration = Duration::minutes(5);

/// The names a server certificate carries when none are given.
#[must_use]
pub fn default_server_names() -> Vec<String> {
    vec![
        "localhost".to_owned(),
        Ipv4Addr::LOCALHOST.to_string(),
        Ipv6Addr::LOCALHOST.to_string(),
    ]
}

/// A deployment's certificate authority: its certificate and signing key.
pub struct DeploymentCa {
    issuer: Issuer<'static, KeyPair>,
    certificate_pem: String,
}

impl fmt::Debug for DeploymentCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeploymentCa")
            .field("key", &"[REDACTED]")
            .finish_non_exhaustive()
    }
}

impl DeploymentCa {
    /// A new CA named `SEER deployment CA (<deployment>)`.
    ///
    /// # Errors
    /// When key or certificate generation fails.
    pub fn generate(deployment: &str) -> Result<Self, TlsError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::default();
        let now = OffsetDateTime::now_utc();
        params.not_before = now - BACKDATE;
        params.not_after = now + CA_VALIDITY;
        params.distinguished_name.push(
            DnType::CommonName,
            format!("SEER deployment CA ({deployment})"),
        );
        params
            .distinguished_name
            .push(DnType::OrganizationName, "SEER");
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let certificate = params.self_signed(&key)?;
        Ok(Self {
            certificate_pem: certificate.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// Loads the CA of the PKI directory `dir` (`ca.pem`, `ca-key.pem` of mode 0600).
    ///
    /// # Errors
    /// When a file is missing, too open or malformed.
    pub fn load(dir: &Path) -> Result<Self, TlsError> {
        let certificate_pem = read_public(&dir.join(CA_CERT_FILE))?;
        let key_pem = read_private(&dir.join(CA_KEY_FILE))?;
        let key = KeyPair::from_pem(&key_pem).map_err(|e| TlsError::Invalid {
            what: dir.join(CA_KEY_FILE).display().to_string(),
            reason: e.to_string(),
        })?;
        let issuer =
            Issuer::from_ca_cert_pem(&certificate_pem, key).map_err(|e| TlsError::Invalid {
                what: dir.join(CA_CERT_FILE).display().to_string(),
                reason: e.to_string(),
            })?;
        Ok(Self {
            issuer,
            certificate_pem,
        })
    }

    /// Writes `ca.pem` (0644) and `ca-key.pem` (0600) into `dir` (created 0700 if missing);
    /// refuses to replace an existing CA.
    ///
    /// # Errors
    /// When a file exists or cannot be written.
    pub fn save(&self, dir: &Path) -> Result<(), TlsError> {
        create_private_dir(dir)?;
        let key_pem = Zeroizing::new(self.issuer.key().serialize_pem());
        write_new(&dir.join(CA_KEY_FILE), key_pem.as_bytes(), 0o600)?;
        write_new(
            &dir.join(CA_CERT_FILE),
            self.certificate_pem.as_bytes(),
            0o644,
        )
    }

    /// The CA's issuer (certificate parameters and signing key), for the revocation list.
    pub(crate) fn issuer(&self) -> &Issuer<'static, KeyPair> {
        &self.issuer
    }

    /// The CA certificate (PEM): the trust root every party is configured with.
    #[must_use]
    pub fn certificate_pem(&self) -> &str {
        &self.certificate_pem
    }

    /// Issues a certificate for `request` with a fresh key.
    ///
    /// # Errors
    /// When a name is not a valid DNS name or generation fails.
    pub fn issue(&self, request: &CertificateRequest) -> Result<IssuedCertificate, TlsError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::default();
        let now = OffsetDateTime::now_utc();
        params.not_before = now - BACKDATE;
        params.not_after = now + LEAF_VALIDITY;
        params
            .distinguished_name
            .push(DnType::CommonName, request.party.uri());
        params
            .distinguished_name
            .push(DnType::OrganizationName, "SEER");
        params.is_ca = IsCa::ExplicitNoCa;
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.subject_alt_names.push(SanType::URI(
            request.party.uri().try_into().map_err(TlsError::Generate)?,
        ));
        for name in &request.server_names {
            params.subject_alt_names.push(match name.parse::<IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(name.clone().try_into().map_err(|_| {
                    TlsError::InvalidName {
                        kind: "DNS",
                        name: name.clone(),
                        reason: "not a DNS name or IP address",
                    }
                })?),
            });
        }
        if !request.server_names.is_empty() {
            params
                .extended_key_usages
                .push(ExtendedKeyUsagePurpose::ServerAuth);
        }
        if request.party.kind() != PartyKind::Server {
            params
                .extended_key_usages
                .push(ExtendedKeyUsagePurpose::ClientAuth);
        }
        let certificate = params.signed_by(&key, &self.issuer)?;
        Ok(IssuedCertificate {
            party: request.party.clone(),
            certificate_pem: certificate.pem(),
            key_pem: Zeroizing::new(key.serialize_pem()),
        })
    }
}

/// What to put into a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateRequest {
    party: Party,
    server_names: Vec<String>,
}

impl CertificateRequest {
    /// A server certificate for `name` with DNS/IP subject alternative names `names` (the
    /// loopback names when empty); `serverAuth` only.
    ///
    /// # Errors
    /// When `name` is not a valid party name.
    pub fn server(name: &str, names: &[String]) -> Result<Self, TlsError> {
        Ok(Self {
            party: Party::try_new(PartyKind::Server, name)?,
            server_names: names_or_default(names),
        })
    }

    /// A client certificate naming `party` (`clientAuth`).
    #[must_use]
    pub fn client(party: Party) -> Self {
        Self {
            party,
            server_names: Vec::new(),
        }
    }

    /// The utility's certificate: it names the utility `name` and serves as its server
    /// certificate too (`names`, the loopback names when empty).
    ///
    /// # Errors
    /// When `name` is not a valid party name.
    pub fn utility(name: &str, names: &[String]) -> Result<Self, TlsError> {
        Ok(Self {
            party: Party::try_new(PartyKind::Utility, name)?,
            server_names: names_or_default(names),
        })
    }

    /// The party the certificate names.
    #[must_use]
    pub fn party(&self) -> &Party {
        &self.party
    }

    /// The file stem of the certificate in a PKI directory: `<kind>-<name>`, with `:` replaced
    /// by `_`.
    #[must_use]
    pub fn file_stem(&self) -> String {
        format!(
            "{}-{}",
            self.party.kind(),
            self.party.name().replace(':', "_")
        )
    }
}

fn names_or_default(names: &[String]) -> Vec<String> {
    if names.is_empty() {
        default_server_names()
    } else {
        names.to_vec()
    }
}

/// An issued certificate and its private key (zeroized on drop; `Debug` does not print it).
pub struct IssuedCertificate {
    party: Party,
    certificate_pem: String,
    key_pem: Zeroizing<String>,
}

impl fmt::Debug for IssuedCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedCertificate")
            .field("party", &self.party)
            .field("key_pem", &"[REDACTED]")
            .finish_non_exhaustive()
    }
}

/// Where an issued certificate was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrittenCertificate {
    /// The certificate (PEM, 0644).
    pub cert_file: PathBuf,
    /// The private key (PKCS#8 PEM, 0600).
    pub key_file: PathBuf,
}

impl IssuedCertificate {
    /// The party the certificate names.
    #[must_use]
    pub fn party(&self) -> &Party {
        &self.party
    }

    /// The certificate (PEM).
    #[must_use]
    pub fn certificate_pem(&self) -> &str {
        &self.certificate_pem
    }

    /// The private key (PKCS#8 PEM).
    #[must_use]
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// Writes `<stem>.pem` (0644) and `<stem>-key.pem` (0600) into `dir` (created 0700 if
    /// missing); refuses to replace either.
    ///
    /// # Errors
    /// When a file exists or cannot be written.
    pub fn write(&self, dir: &Path, stem: &str) -> Result<WrittenCertificate, TlsError> {
        create_private_dir(dir)?;
        let written = WrittenCertificate {
            cert_file: dir.join(format!("{stem}.pem")),
            key_file: dir.join(format!("{stem}-key.pem")),
        };
        write_new(&written.key_file, self.key_pem.as_bytes(), 0o600)?;
        write_new(&written.cert_file, self.certificate_pem.as_bytes(), 0o644)?;
        Ok(written)
    }
}

/// Creates `dir` (mode 0700) when it does not exist.
fn create_private_dir(dir: &Path) -> Result<(), TlsError> {
    use std::os::unix::fs::DirBuilderExt as _;
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| TlsError::Io {
            action: "creating",
            path: dir.to_path_buf(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use x509_parser::prelude::{FromDer as _, X509Certificate};

    use super::*;

    fn der(pem: &str) -> Vec<u8> {
        let (_, pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).expect("PEM");
        pem.contents
    }

    #[test]
    fn issued_certificates_chain_to_the_ca_and_name_their_party() {
        let ca = DeploymentCa::generate("test").expect("CA");
        let ca_der = der(ca.certificate_pem());
        let (_, ca_cert) = X509Certificate::from_der(&ca_der).expect("CA parses");
        assert!(ca_cert.is_ca());
        ca_cert.verify_signature(None).expect("self-signed");

        let meter = ca
            .issue(&CertificateRequest::client(
                Party::meter("M-1").expect("id"),
            ))
            .expect("meter certificate");
        let meter_der = der(meter.certificate_pem());
        let (_, leaf) = X509Certificate::from_der(&meter_der).expect("leaf parses");
        leaf.verify_signature(Some(ca_cert.public_key()))
            .expect("signed by the CA");
        assert_eq!(leaf.issuer(), ca_cert.subject());
        assert!(!leaf.is_ca());
        assert_eq!(
            Party::from_certificate_der(&meter_der).expect("party"),
            Party::meter("M-1").expect("id")
        );

        // Another CA's signature does not verify under this CA.
        let stranger = DeploymentCa::generate("other").expect("CA");
        let stranger_der = der(stranger.certificate_pem());
        let (_, stranger_cert) = X509Certificate::from_der(&stranger_der).expect("parses");
        assert!(
            leaf.verify_signature(Some(stranger_cert.public_key()))
                .is_err()
        );

        // A server certificate carries the loopback names and a server party.
        let server = ca
            .issue(&CertificateRequest::server("key-authority", &[]).expect("request"))
            .expect("server certificate");
        let server_der = der(server.certificate_pem());
        let (_, server_cert) = X509Certificate::from_der(&server_der).expect("parses");
        let san = server_cert
            .subject_alternative_name()
            .expect("SAN parses")
            .expect("SAN present");
        let names: Vec<String> = san
            .value
            .general_names
            .iter()
            .map(ToString::to_string)
            .collect();
        assert!(names.iter().any(|n| n.contains("localhost")), "{names:?}");
        assert!(
            san.value
                .general_names
                .iter()
                .any(|n| matches!(n, x509_parser::prelude::GeneralName::IPAddress(ip) if *ip == [127, 0, 0, 1])),
            "{names:?}"
        );
        assert_eq!(
            Party::from_certificate_der(&server_der)
                .expect("party")
                .kind(),
            PartyKind::Server
        );
        // A certificate without a party (the CA's own) names none.
        assert!(Party::from_certificate_der(&ca_der).is_err());
    }

    #[test]
    fn files_are_private_never_replaced_and_the_ca_loads_back() {
        let dir = tempfile::tempdir().expect("dir");
        let pki = dir.path().join("pki");
        let ca = DeploymentCa::generate("test").expect("CA");
        ca.save(&pki).expect("saved");
        let mode = |p: &Path| std::fs::metadata(p).expect("exists").permissions().mode() & 0o777;
        assert_eq!(mode(&pki.join(CA_KEY_FILE)), 0o600);
        assert_eq!(mode(&pki.join(CA_CERT_FILE)), 0o644);
        assert_eq!(mode(&pki), 0o700);
        assert!(matches!(ca.save(&pki), Err(TlsError::Exists { .. })));

        let loaded = DeploymentCa::load(&pki).expect("loads");
        let request = CertificateRequest::utility("utility", &[]).expect("request");
        let issued = loaded.issue(&request).expect("issued");
        let written = issued.write(&pki, &request.file_stem()).expect("written");
        assert_eq!(mode(&written.key_file), 0o600);
        assert_eq!(mode(&written.cert_file), 0o644);
        assert!(issued.write(&pki, &request.file_stem()).is_err());
        assert!(!format!("{issued:?}").contains("PRIVATE"));

        // The loaded CA signs what the saved certificate verifies.
        let ca_der = der(ca.certificate_pem());
        let (_, ca_cert) = X509Certificate::from_der(&ca_der).expect("parses");
        let leaf_der = der(issued.certificate_pem());
        let (_, leaf) = X509Certificate::from_der(&leaf_der).expect("parses");
        leaf.verify_signature(Some(ca_cert.public_key()))
            .expect("signed by the saved CA");

        // A CA key readable by others is refused.
        std::fs::set_permissions(
            pki.join(CA_KEY_FILE),
            std::fs::Permissions::from_mode(0o644),
        )
        .expect("chmod");
        assert!(matches!(
            DeploymentCa::load(&pki),
            Err(TlsError::KeyFilePermissions { .. })
        ));
    }
}
