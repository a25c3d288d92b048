//! The web listener: an axum router served over HTTP/1.1 and HTTP/2, through TLS with the
//! deployment's server certificate, or in plaintext on a loopback address only.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use crate::WebError;

/// How long a browser may take to complete its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The certificate a web listener presents: the deployment's server certificate and its key
/// (the same files as the gRPC server's `cert_file` and `key_file`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebTls {
    /// The server's certificate chain (PEM).
    pub cert_file: PathBuf,
    /// The server's private key (PKCS#8 PEM, mode 0600).
    pub key_file: PathBuf,
}

impl From<&seer_tls::TlsFiles> for WebTls {
    fn from(files: &seer_tls::TlsFiles) -> Self {
        Self {
            cert_file: files.cert_file.clone(),
            key_file: files.key_file.clone(),
        }
    }
}

/// A bound web listener, not yet serving.
pub struct WebListener {
    listener: TcpListener,
    address: SocketAddr,
    tls: Option<TlsAcceptor>,
}

impl std::fmt::Debug for WebListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebListener")
            .field("address", &self.address)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl WebListener {
    /// Binds `address` (port 0: the operating system chooses). With `tls` the listener speaks
    /// HTTPS with that certificate; without it only a loopback address is accepted.
    ///
    /// # Errors
    /// [`WebError::PlaintextNotLoopback`], [`WebError::Tls`] when the certificate or key does
    /// not load (or the key file is readable by others), [`WebError::Bind`].
    pub async fn bind(address: SocketAddr, tls: Option<&WebTls>) -> Result<Self, WebError> {
        let tls = match tls {
            Some(tls) => Some(TlsAcceptor::from(Arc::new(
                seer_tls::server::web_server_config(&tls.cert_file, &tls.key_file)?,
            ))),
            None if address.ip().is_loopback() => None,
            None => return Err(WebError::PlaintextNotLoopback { address }),
        };
        let listener = TcpListener::bind(address)
            .await
            .map_err(|source| WebError::Bind { address, source })?;
        let address = listener
            .local_addr()
            .map_err(|source| WebError::Bind { address, source })?;
        Ok(Self {
            listener,
            address,
            tls,
        })
    }

    /// The bound address (with the port the operating system chose).
    #[must_use]
    pub fn local_addr(&self) -> SocketAddr {
        self.address
    }

    /// Whether the listener speaks HTTPS.
    #[must_use]
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The base URL of the listener (`https://127.0.0.1:PORT` or `http://...`).
    #[must_use]
    pub fn url(&self) -> String {
        let scheme = if self.is_tls() { "https" } else { "http" };
        format!("{scheme}://{}", self.address)
    }

    /// Serves `router` until `shutdown` completes; then stops accepting and closes the open
    /// connections (live-update streams never end by themselves).
    ///
    /// # Errors
    /// [`WebError::Accept`] when the listening socket fails.
    pub async fn serve(
        self,
        router: Router,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), WebError> {
        let Self { listener, tls, .. } = self;
        let mut connections = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            let (stream, peer) = tokio::select! {
                () = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    // A connection that failed before it was accepted (reset, too many open
                    // files) is that connection's problem, not the listener's.
                    Err(error) if is_transient(&error) => {
                        tracing::warn!(%error, "web: accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                    Err(error) => return Err(WebError::Accept(error)),
                },
                Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            };
            let _ = stream.set_nodelay(true);
            let service = TowerToHyperService::new(router.clone());
            let tls = tls.clone();
            connections.spawn(async move {
                let builder = Builder::new(TokioExecutor::new());
                let result = match tls {
                    Some(acceptor) => {
                        match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await
                        {
                            Ok(Ok(stream)) => {
                                builder
                                    .serve_connection_with_upgrades(TokioIo::new(stream), service)
                                    .await
                            }
                            Ok(Err(error)) => {
                                tracing::debug!(%peer, %error, "web: TLS handshake failed");
                                return;
                            }
                            Err(_) => {
                                tracing::debug!(%peer, "web: TLS handshake timed out");
                                return;
                            }
                        }
                    }
                    None => {
                        builder
                            .serve_connection_with_upgrades(TokioIo::new(stream), service)
                            .await
                    }
                };
                if let Err(error) = result {
                    tracing::debug!(%peer, %error, "web: connection ended with an error");
                }
            });
        }
        connections.abort_all();
        Ok(())
    }
}

fn is_transient(error: &std::io::Error) -> bool {
    use std::io::ErrorKind;
    matches!(
        error.kind(),
        ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset | ErrorKind::Interrupted
    ) || error.raw_os_error() == Some(24) // EMFILE
}
