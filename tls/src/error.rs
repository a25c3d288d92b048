//! The one error type of `seer-tls`.

use std::path::PathBuf;

/// Errors of the PKI, of reading certificates and keys, and of TLS configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// Reading or writing a file failed.
    #[error("{action} {path}")]
    Io {
        /// What was being done ("reading", "creating", ...).
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A private key file is readable or writable by group or others.
    #[error(
        "private key file {path} has mode {mode:04o}, readable or writable by group or others; \
         refusing to use it (run `chmod 600 {path}` after checking who may have read it)"
    )]
    KeyFilePermissions {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A file that would be written exists already (certificates and keys are never replaced
    /// silently).
    #[error("{path} exists already; remove it first to issue a new one")]
    Exists {
        /// The file.
        path: PathBuf,
    },
    /// Generating a key or a certificate failed.
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    /// A certificate or key is not what it should be.
    #[error("invalid certificate or key {what}: {reason}")]
    Invalid {
        /// What was parsed.
        what: String,
        /// Why it was refused.
        reason: String,
    },
    /// A party name (meter id, utility, auditor or server name) is not acceptable.
    #[error("invalid {kind} name {name:?}: {reason}")]
    InvalidName {
        /// The kind of party.
        kind: &'static str,
        /// The name given.
        name: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// A peer certificate names no SEER party, or more than one.
    #[error("the peer certificate {0}")]
    NoParty(&'static str),
    /// `key-authority fingerprints`'s output is not what it prints.
    #[error("key-authority fingerprints: {0}")]
    Fingerprints(String),
    /// Only some of the TLS settings are given.
    #[error("incomplete TLS configuration: {0}")]
    Incomplete(String),
    /// An `https://` URL but no client identity is configured.
    #[error(
        "{url} needs TLS but no client certificate is configured: set {ca}, {cert} and {key} \
         (`seer pki issue` makes them)"
    )]
    NoClientIdentity {
        /// The URL.
        url: String,
        /// The CA variable.
        ca: &'static str,
        /// The certificate variable.
        cert: &'static str,
        /// The key variable.
        key: &'static str,
    },
    /// A server URL is malformed or tonic refused the TLS configuration.
    #[error("{url}: {reason}")]
    Endpoint {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
}
