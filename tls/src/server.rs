//! The servers' TLS: a rustls configuration that requires a client certificate of the
//! deployment CA which the CA's revocation list (when configured) does not list, and an
//! acceptor that re-reads the list when its file changes.
//!
//! tonic's own `ServerTlsConfig` takes a CA and an identity but no revocation list, so servers
//! build the rustls configuration here (webpki's client verifier with the list, end-entity
//! certificates checked) and accept TLS themselves; tonic still sees the peer's certificates
//! ([`crate::request_party`]) through its `TlsConnectInfo`.
//!
//! A list that is configured must exist and parse when the server starts (a deleted list would
//! silently un-revoke every certificate). While serving, [`ServerTls::acceptor`] looks at the
//! file's modification time, inode and length on each connection and rebuilds the
//! configuration when any changed (`seer pki revoke` replaces the file by a rename);
//! a list that no longer reads keeps the last good configuration and logs an error.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;

use crate::TlsError;
use crate::files::{read_private, read_public};
use crate::{TlsFiles, crl};

/// How long a client may take to complete its handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Established TLS connections, for tonic's `serve_with_incoming`.
pub type Incoming = ReceiverStream<Result<TlsStream<TcpStream>, std::io::Error>>;

/// The server side of mutual TLS, with the revocation list reloaded when it changes.
#[derive(Debug)]
pub struct ServerTls {
    files: TlsFiles,
    state: Mutex<State>,
}

struct State {
    acceptor: TlsAcceptor,
    crl_version: Option<Version>,
    revoked: usize,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("crl_version", &self.crl_version)
            .field("revoked", &self.revoked)
            .finish_non_exhaustive()
    }
}

fn invalid(what: &Path, reason: impl std::fmt::Display) -> TlsError {
    TlsError::Invalid {
        what: what.display().to_string(),
        reason: reason.to_string(),
    }
}

/// What tells a changed file: its modification time, and (for file systems with coarse
/// times, and replacements within one tick) its inode and length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Version {
    modified: Option<SystemTime>,
    inode: u64,
    len: u64,
}

fn version(path: &Path) -> Option<Version> {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata(path).ok().map(|m| Version {
        modified: m.modified().ok(),
        inode: m.ino(),
        len: m.len(),
    })
}

/// The rustls server configuration of `files`, and how many certificates its revocation list
/// holds.
///
/// # Errors
/// When a file cannot be read, is too open or does not parse, or the list is not a CRL.
pub fn server_config(files: &TlsFiles) -> Result<(rustls::ServerConfig, usize), TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let ca_pem = read_public(&files.ca_file)?;
    let mut roots = RootCertStore::empty();
    for certificate in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        let certificate = certificate.map_err(|e| invalid(&files.ca_file, e))?;
        roots
            .add(certificate)
            .map_err(|e| invalid(&files.ca_file, e))?;
    }
    if roots.is_empty() {
        return Err(invalid(&files.ca_file, "holds no PEM CERTIFICATE"));
    }
    let mut builder =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider));
    let mut revoked = 0;
    if let Some(crl_file) = &files.crl_file {
        // Parsed with x509-parser first: a clear error (and the count) for a wrong file.
        revoked = crl::read_list(crl_file)?.revoked.len();
        let pem = read_public(crl_file)?;
        let lists = CertificateRevocationListDer::pem_slice_iter(pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| invalid(crl_file, e))?;
        builder = builder.with_crls(lists).only_check_end_entity_revocation();
    }
    let verifier = builder
        .build()
        .map_err(|e| invalid(&files.ca_file, format!("client verifier: {e}")))?;
    let cert_pem = read_public(&files.cert_file)?;
    let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(&files.cert_file, e))?;
    if chain.is_empty() {
        return Err(invalid(&files.cert_file, "holds no PEM CERTIFICATE"));
    }
    let key_pem = read_private(&files.key_file)?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| invalid(&files.key_file, e))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid(&files.cert_file, e))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| invalid(&files.cert_file, e))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok((config, revoked))
}

/// The rustls configuration of a web listener (dashboards, the auditor's view): the
/// server's certificate chain and key from `cert_file` and `key_file`, no client certificate
/// asked for (browsers hold none; their users log in with a token instead), ALPN `h2` and
/// `http/1.1`.
///
/// # Errors
/// When a file cannot be read, the key file is group- or world-accessible, or either does not
/// parse.
pub fn web_server_config(
    cert_file: &Path,
    key_file: &Path,
) -> Result<rustls::ServerConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cert_pem = read_public(cert_file)?;
    let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(cert_file, e))?;
    if chain.is_empty() {
        return Err(invalid(cert_file, "holds no PEM CERTIFICATE"));
    }
    let key_pem = read_private(key_file)?;
    let key =
        PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| invalid(key_file, e))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid(cert_file, e))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| invalid(cert_file, e))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

impl ServerTls {
    /// Loads `files` (and the revocation list they name).
    ///
    /// # Errors
    /// As [`server_config`].
    pub fn new(files: &TlsFiles) -> Result<Self, TlsError> {
        let crl_version = files.crl_file.as_deref().and_then(version);
        let (config, revoked) = server_config(files)?;
        Ok(Self {
            files: files.clone(),
            state: Mutex::new(State {
                acceptor: TlsAcceptor::from(Arc::new(config)),
                crl_version,
                revoked,
            }),
        })
    }

    /// The files served.
    #[must_use]
    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// Certificates the revocation list in force holds.
    #[must_use]
    pub fn revoked(&self) -> usize {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .revoked
    }

    /// The acceptor for the next connection: the configuration rebuilt first when the
    /// revocation list's file changed since it was last read.
    #[must_use]
    pub fn acceptor(&self) -> TlsAcceptor {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(crl_file) = &self.files.crl_file {
            let now = version(crl_file);
            if now != state.crl_version {
                match server_config(&self.files) {
                    Ok((config, revoked)) => {
                        tracing::info!(
                            file = %crl_file.display(),
                            revoked,
                            "certificate revocation list reloaded"
                        );
                        *state = State {
                            acceptor: TlsAcceptor::from(Arc::new(config)),
                            crl_version: now,
                            revoked,
                        };
                    }
                    Err(error) => {
                        // Not retried until the file changes again; the last list stays.
                        state.crl_version = now;
                        tracing::error!(
                            file = %crl_file.display(),
                            %error,
                            "the certificate revocation list no longer reads; the last one \
                             stays in force"
                        );
                    }
                }
            }
        }
        state.acceptor.clone()
    }
}

impl ServerTls {
    /// Accepts connections on `listener` and completes their handshakes, each on its own task
    /// within [`HANDSHAKE_TIMEOUT`] (a refused or slow handshake is logged and dropped, and
    /// holds up no other). Returns the established connections and the accepting task, which
    /// ends when the stream is dropped (abort it to stop accepting at once).
    #[must_use]
    pub fn incoming(
        self: &Arc<Self>,
        listener: TcpListener,
    ) -> (Incoming, tokio::task::JoinHandle<()>) {
        let (sender, receiver) = tokio::sync::mpsc::channel(64);
        let tls = Arc::clone(self);
        let task = tokio::spawn(async move {
            while !sender.is_closed() {
                let (tcp, peer) = match listener.accept().await {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // Out of file descriptors and the like: back off, keep serving.
                        tracing::warn!(%error, "accepting a connection failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = tcp.set_nodelay(true);
                let acceptor = tls.acceptor();
                let sender = sender.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => {
                            let _ = sender.send(Ok(stream)).await;
                        }
                        Ok(Err(error)) => {
                            tracing::info!(%peer, %error, "TLS handshake refused");
                        }
                        Err(_) => tracing::info!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        (ReceiverStream::new(receiver), task)
    }
}
