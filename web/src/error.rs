//! The crate's error type.

use std::net::SocketAddr;

/// What can go wrong serving web pages.
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    /// The listening socket could not be bound.
    #[error("binding the web listener to {address}: {source}")]
    Bind {
        /// The address asked for.
        address: SocketAddr,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// Plaintext HTTP was asked for on an address other people can reach.
    #[error(
        "refusing to serve web pages without TLS on {address}: configure a certificate and key \
         (the deployment's server certificate) or listen on a loopback address"
    )]
    PlaintextNotLoopback {
        /// The address asked for.
        address: SocketAddr,
    },
    /// The certificate or key could not be loaded.
    #[error("loading the web listener's TLS certificate: {0}")]
    Tls(#[from] seer_tls::TlsError),
    /// Accepting connections failed.
    #[error("accepting web connections: {0}")]
    Accept(std::io::Error),
}
