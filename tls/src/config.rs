//! The TLS files a program is configured with, and tonic's server and client configurations
//! made from them.
//!
//! Servers (`utility-server`, `key-authority`) read [`TlsFiles`] from their settings
//! (`[server.tls]`: `ca_file`, `cert_file`, `key_file`, optionally `crl_file`) and then require
//! TLS 1.2+ with a client certificate chaining to the deployment CA on every connection: a
//! plaintext (h2c) client, a client without a certificate, with another CA's or with a revoked
//! one is refused in the handshake ([`crate::server`]).
//!
//! Clients call [`endpoint`] with the server's URL: an `https://` URL gets the process's client
//! identity — the one [`install_client_identity`] installed (the utility's jobs install the
//! utility's own certificate from its settings), otherwise the files named by
//! [`ENV_CA_FILE`], [`ENV_CERT_FILE`] and [`ENV_KEY_FILE`] (`meter-client`, `seer audit`);
//! [`with_client_identity`] overrides it for one task.
//! The server is verified against the deployment CA only, never the system's roots.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity, ServerTlsConfig};

use crate::TlsError;
use crate::files::{read_private, read_public};

/// The environment variable naming a client's CA certificate file.
pub const ENV_CA_FILE: &str = "SEER_TLS_CA_FILE";
/// The environment variable naming a client's certificate file.
pub const ENV_CERT_FILE: &str = "SEER_TLS_CERT_FILE";
/// The environment variable naming a client's private key file.
pub const ENV_KEY_FILE: &str = "SEER_TLS_KEY_FILE";

/// A program's certificate, its private key and the deployment CA it trusts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// The deployment CA's certificate (PEM): peers must chain to it.
    pub ca_file: PathBuf,
    /// The program's certificate (PEM, issued by the deployment CA).
    pub cert_file: PathBuf,
    /// The program's private key (PKCS#8 PEM, mode 0600).
    pub key_file: PathBuf,
    /// Servers: the deployment CA's certificate revocation list (PEM, `crl.pem` of the PKI
    /// directory; `seer pki revoke` adds to it). A listed client certificate is refused in the
    /// handshake; the file is re-read when it changes ([`crate::server`]). Clients ignore it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crl_file: Option<PathBuf>,
}

impl TlsFiles {
    /// The files named by [`ENV_CA_FILE`], [`ENV_CERT_FILE`] and [`ENV_KEY_FILE`]: `None` when
    /// none is set.
    ///
    /// # Errors
    /// [`TlsError::Incomplete`] when only some are set.
    pub fn from_env() -> Result<Option<Self>, TlsError> {
        let var = |name| std::env::var_os(name).filter(|v| !v.is_empty());
        match (var(ENV_CA_FILE), var(ENV_CERT_FILE), var(ENV_KEY_FILE)) {
            (None, None, None) => Ok(None),
            (Some(ca), Some(cert), Some(key)) => Ok(Some(Self {
                ca_file: ca.into(),
                cert_file: cert.into(),
                key_file: key.into(),
                crl_file: None,
            })),
            _ => Err(TlsError::Incomplete(format!(
                "set all of {ENV_CA_FILE}, {ENV_CERT_FILE} and {ENV_KEY_FILE}, or none"
            ))),
        }
    }

    fn identity(&self) -> Result<(Identity, Certificate), TlsError> {
        let ca = read_public(&self.ca_file)?;
        let cert = read_public(&self.cert_file)?;
        let key = read_private(&self.key_file)?;
        for (what, text, marker) in [
            (&self.ca_file, ca.as_str(), "CERTIFICATE"),
            (&self.cert_file, cert.as_str(), "CERTIFICATE"),
            (&self.key_file, key.as_str(), "PRIVATE KEY"),
        ] {
            if !text.contains(&format!("-----BEGIN {marker}"))
                && !text.contains(&format!(" {marker}-----"))
            {
                return Err(TlsError::Invalid {
                    what: what.display().to_string(),
                    reason: format!("holds no PEM {marker}"),
                });
            }
        }
        // tonic keeps its own copy of the key PEM for the life of the configuration.
        Ok((
            Identity::from_pem(cert.as_bytes(), key.as_bytes()),
            Certificate::from_pem(ca.as_bytes()),
        ))
    }

    /// The server configuration: this certificate, and a client certificate chaining to the
    /// CA required on every connection.
    ///
    /// # Errors
    /// When a file cannot be read, is too open or holds no PEM.
    pub fn server_config(&self) -> Result<ServerTlsConfig, TlsError> {
        let (identity, ca) = self.identity()?;
        Ok(ServerTlsConfig::new()
            .identity(identity)
            .client_ca_root(ca)
            .client_auth_optional(false)
            .timeout(Duration::from_secs(10)))
    }

    /// The client configuration: this certificate as the client's, servers verified against
    /// the CA only.
    ///
    /// # Errors
    /// When a file cannot be read, is too open or holds no PEM.
    pub fn client_config(&self) -> Result<ClientTlsConfig, TlsError> {
        let (identity, ca) = self.identity()?;
        Ok(ClientTlsConfig::new()
            .ca_certificate(ca)
            .identity(identity)
            .timeout(Duration::from_secs(10)))
    }

    /// An endpoint for `url` with this client identity (`https://` URLs only).
    ///
    /// # Errors
    /// As [`TlsFiles::client_config`]; [`TlsError::Endpoint`] for a malformed URL.
    pub fn endpoint(&self, url: &str) -> Result<Endpoint, TlsError> {
        endpoint_with(url, Some(&self.client_config()?))
    }
}

static CLIENT_IDENTITY: OnceLock<ClientTlsConfig> = OnceLock::new();

tokio::task_local! {
    /// The client identity of the current task, when [`with_client_identity`] set one.
    static SCOPED_IDENTITY: ClientTlsConfig;
}

/// Runs `future` with `files` as the client identity of every [`endpoint`] it makes (instead
/// of the process's): for a program, or a test, that speaks as several parties. Channels made
/// inside keep the identity after `future` ends.
///
/// # Errors
/// As [`TlsFiles::client_config`].
pub async fn with_client_identity<F: std::future::Future>(
    files: &TlsFiles,
    future: F,
) -> Result<F::Output, TlsError> {
    let config = files.client_config()?;
    Ok(SCOPED_IDENTITY.scope(config, future).await)
}

/// Wraps `future` so that it runs with the client identity of the task that calls this (the
/// one [`with_client_identity`] set, if any). `tokio::spawn`ed futures do not inherit
/// task-locals: a program speaking as several parties wraps what it spawns with this, so the
/// spawned task's endpoints keep its party's certificate.
pub fn inherit_client_identity<F: std::future::Future>(
    future: F,
) -> impl std::future::Future<Output = F::Output> {
    let config = SCOPED_IDENTITY.try_with(ClientTlsConfig::clone).ok();
    async move {
        match config {
            Some(config) => SCOPED_IDENTITY.scope(config, future).await,
            None => future.await,
        }
    }
}

/// Installs `files` as this process's client identity for [`endpoint`] (the first
/// installation wins; later ones are ignored).
///
/// # Errors
/// As [`TlsFiles::client_config`].
pub fn install_client_identity(files: &TlsFiles) -> Result<(), TlsError> {
    let config = files.client_config()?;
    let _ = CLIENT_IDENTITY.set(config);
    Ok(())
}

/// The process's client identity: installed, or from the environment.
fn client_identity(url: &str) -> Result<ClientTlsConfig, TlsError> {
    if let Ok(config) = SCOPED_IDENTITY.try_with(ClientTlsConfig::clone) {
        return Ok(config);
    }
    if let Some(config) = CLIENT_IDENTITY.get() {
        return Ok(config.clone());
    }
    let files = TlsFiles::from_env()?.ok_or_else(|| TlsError::NoClientIdentity {
        url: url.to_owned(),
        ca: ENV_CA_FILE,
        cert: ENV_CERT_FILE,
        key: ENV_KEY_FILE,
    })?;
    install_client_identity(&files)?;
    CLIENT_IDENTITY.get().cloned().ok_or(TlsError::Incomplete(
        "the client identity could not be installed".into(),
    ))
}

/// An endpoint for `url`: `https://` with the process's client identity (see the module
/// docs), `http://` in plaintext to a loopback host only (a SEER server configured with TLS
/// refuses it; a server elsewhere must not receive a bearer token in the clear).
///
/// # Errors
/// [`TlsError::Endpoint`] for a malformed URL or an `http://` URL whose host is not loopback;
/// for `https://` without a configured identity [`TlsError::NoClientIdentity`], or the
/// identity's own errors.
pub fn endpoint(url: &str) -> Result<Endpoint, TlsError> {
    if url.starts_with("https://") {
        endpoint_with(url, Some(&client_identity(url)?))
    } else {
        let endpoint = endpoint_with(url, None)?;
        let host = endpoint.uri().host().unwrap_or_default();
        if !is_loopback_host(host) {
            return Err(TlsError::Endpoint {
                url: url.to_owned(),
                reason: format!(
                    "plaintext to {host} would send the bearer token and the ciphertexts in the \
                     clear; use https:// (mutual TLS, with {ENV_CA_FILE}, {ENV_CERT_FILE} and \
                     {ENV_KEY_FILE}), or a loopback address for a local server"
                ),
            });
        }
        Ok(endpoint)
    }
}

/// Whether `host` (a URL's host: a name, an IPv4 address or a bracketed IPv6 address) is
/// this machine's loopback: `localhost` or a loopback address.
#[must_use]
pub fn is_loopback_host(host: &str) -> bool {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    bare.eq_ignore_ascii_case("localhost")
        || bare
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// An endpoint for `url` with `tls` (or none).
///
/// # Errors
/// [`TlsError::Endpoint`] for a malformed URL or a TLS configuration tonic refuses.
pub fn endpoint_with(url: &str, tls: Option<&ClientTlsConfig>) -> Result<Endpoint, TlsError> {
    let bad = |reason: String| TlsError::Endpoint {
        url: url.to_owned(),
        reason,
    };
    let endpoint = Endpoint::from_shared(url.to_owned()).map_err(|e| bad(e.to_string()))?;
    match tls {
        Some(tls) => endpoint
            .tls_config(tls.clone())
            .map_err(|e| bad(e.to_string())),
        None => Ok(endpoint),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plaintext_urls_only_to_loopback() {
        for ok in [
            "http://127.0.0.1:7000",
            "http://localhost:7000",
            "http://[::1]:7000",
        ] {
            assert!(endpoint(ok).is_ok(), "{ok}");
        }
        for refused in [
            "http://10.0.0.7:7000",
            "http://utility.example:7000",
            "http://[2001:db8::1]:7000",
            "http://localhost.example:7000",
        ] {
            let error = endpoint(refused).expect_err(refused).to_string();
            assert!(error.contains("https://"), "{error}");
        }
    }
}
