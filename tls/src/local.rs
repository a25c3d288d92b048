//! A deployment's PKI directory, as `seer pki`, `seer run` and the end-to-end tests use it:
//! the CA made once, and a certificate per party issued on first request and reused after.

use std::path::{Path, PathBuf};

use crate::pki::{CA_CERT_FILE, CertificateRequest, DeploymentCa};
use crate::{Party, PartyKind, TlsError, TlsFiles};

/// A PKI directory with its CA loaded.
#[derive(Debug)]
pub struct LocalPki {
    dir: PathBuf,
    ca: DeploymentCa,
}

impl LocalPki {
    /// Opens the PKI in `dir`, creating its CA (named after `deployment`) when `dir` holds none.
    ///
    /// # Errors
    /// When the CA cannot be created, written or loaded.
    pub fn open_or_create(dir: &Path, deployment: &str) -> Result<Self, TlsError> {
        if !dir.join(CA_CERT_FILE).exists() {
            DeploymentCa::generate(deployment)?.save(dir)?;
        }
        let ca = DeploymentCa::load(dir)?;
        ca.ensure_revocation_list(dir)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            ca,
        })
    }

    /// The PKI directory.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The CA certificate file.
    #[must_use]
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join(CA_CERT_FILE)
    }

    /// The CA's certificate revocation list (written, empty, when the PKI is opened).
    #[must_use]
    pub fn crl_file(&self) -> PathBuf {
        self.dir.join(crate::crl::CRL_FILE)
    }

    /// Revokes the certificate of `files` (see [`DeploymentCa::revoke`]).
    ///
    /// # Errors
    /// As [`DeploymentCa::revoke`].
    pub fn revoke(&self, files: &TlsFiles) -> Result<crate::crl::Revocation, TlsError> {
        let pem = crate::files::read_public(&files.cert_file)?;
        self.ca.revoke(&self.dir, &pem, &files.cert_file)
    }

    /// The files of `request`'s certificate: issued and written when missing, reused when
    /// both files exist.
    ///
    /// # Errors
    /// When issuing or writing fails.
    pub fn certificate(&self, request: &CertificateRequest) -> Result<TlsFiles, TlsError> {
        let stem = request.file_stem();
        let files = TlsFiles {
            ca_file: self.ca_file(),
            cert_file: self.dir.join(format!("{stem}.pem")),
            key_file: self.dir.join(format!("{stem}-key.pem")),
            crl_file: Some(self.crl_file()),
        };
        if !(files.cert_file.exists() && files.key_file.exists()) {
            self.ca.issue(request)?.write(&self.dir, &stem)?;
        }
        Ok(files)
    }

    /// A server certificate for `name` on the loopback names.
    ///
    /// # Errors
    /// As [`LocalPki::certificate`].
    pub fn server(&self, name: &str) -> Result<TlsFiles, TlsError> {
        self.certificate(&CertificateRequest::server(name, &[])?)
    }

    /// The utility's certificate (client and loopback server names).
    ///
    /// # Errors
    /// As [`LocalPki::certificate`].
    pub fn utility(&self) -> Result<TlsFiles, TlsError> {
        self.certificate(&CertificateRequest::utility("utility", &[])?)
    }

    /// A client certificate naming `kind` `name` (a meter's names its meter id).
    ///
    /// # Errors
    /// As [`LocalPki::certificate`].
    pub fn client(&self, kind: PartyKind, name: &str) -> Result<TlsFiles, TlsError> {
        self.certificate(&CertificateRequest::client(Party::try_new(kind, name)?))
    }
}

impl TlsFiles {
    /// The environment a client program reads its identity from ([`crate::ENV_CA_FILE`], ...).
    #[must_use]
    pub fn client_env(&self) -> Vec<(String, String)> {
        vec![
            (
                crate::ENV_CA_FILE.to_owned(),
                self.ca_file.display().to_string(),
            ),
            (
                crate::ENV_CERT_FILE.to_owned(),
                self.cert_file.display().to_string(),
            ),
            (
                crate::ENV_KEY_FILE.to_owned(),
                self.key_file.display().to_string(),
            ),
        ]
    }

    /// The environment a server reads its `server.tls` settings from, for the settings prefix
    /// `prefix` (e.g. `SEER_UTILITY__`).
    #[must_use]
    pub fn server_env(&self, prefix: &str) -> Vec<(String, String)> {
        vec![
            (
                format!("{prefix}SERVER__TLS__CA_FILE"),
                self.ca_file.display().to_string(),
            ),
            (
                format!("{prefix}SERVER__TLS__CERT_FILE"),
                self.cert_file.display().to_string(),
            ),
            (
                format!("{prefix}SERVER__TLS__KEY_FILE"),
                self.key_file.display().to_string(),
            ),
        ]
        .into_iter()
        .chain(self.crl_file.iter().map(|crl| {
            (
                format!("{prefix}SERVER__TLS__CRL_FILE"),
                crl.display().to_string(),
            )
        }))
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificates_are_issued_once_and_reused() {
        let dir = tempfile::tempdir().expect("dir");
        let pki = LocalPki::open_or_create(&dir.path().join("pki"), "t").expect("pki");
        let first = pki.client(PartyKind::Meter, "M:1").expect("issued");
        let pem = std::fs::read(&first.cert_file).expect("written");
        let again = pki.client(PartyKind::Meter, "M:1").expect("reused");
        assert_eq!(first, again);
        assert_eq!(std::fs::read(&again.cert_file).expect("still there"), pem);
        assert!(first.cert_file.ends_with("meter-M_1.pem"));
        // Reopening keeps the CA.
        let ca = std::fs::read(pki.ca_file()).expect("CA");
        let reopened = LocalPki::open_or_create(pki.dir(), "t").expect("reopened");
        assert_eq!(std::fs::read(reopened.ca_file()).expect("CA"), ca);
        let env = first.server_env("SEER_UTILITY__");
        assert_eq!(env[1].0, "SEER_UTILITY__SERVER__TLS__CERT_FILE");
    }
}
