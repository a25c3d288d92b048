//! SEER's deployment PKI and mutual TLS.
//!
//! Every hop of a SEER deployment (meter → utility, meter → key authority, utility → key
//! authority, auditor → key authority) runs over TLS 1.3 with a certificate on both sides, all
//! chaining to one deployment CA:
//!
//! - [`pki`]: the deployment CA (ECDSA P-256, made with `rcgen`), server certificates (DNS and
//!   IP subject alternative names) and party certificates whose URI SAN names the party
//!   (`urn:seer:meter:<id>`, `urn:seer:utility:<name>`, `urn:seer:auditor:<name>`,
//!   `urn:seer:operator:<name>`); private keys written 0600 and zeroized in memory.
//! - [`identity`]: the [`Party`] a certificate names, read from the peer's certificate of a
//!   request, so that a server can bind the certificate to the bearer token it carries.
//! - [`config`]: the certificate, key and CA files a program is configured with
//!   ([`TlsFiles`]), turned into tonic's server and client TLS configurations; servers require
//!   a client certificate of the deployment CA; [`endpoint`] gives clients an `https://`
//!   endpoint with the process's client identity.
//! - [`crl`]: the CA's certificate revocation list (`seer pki revoke`), and [`server`]: the
//!   servers' rustls configuration that refuses listed client certificates, re-reading the
//!   list when it changes.
//! - [`fingerprints`]: the key authority's public keys as a deployment pins them.
//!
//! One crypto provider in the workspace: `ring` (see ARCHITECTURE.md).

mod error;
mod files;

pub mod config;
pub mod crl;
pub mod fingerprints;
pub mod identity;
pub mod local;
pub mod pki;
pub mod server;

pub use config::{
    ENV_CA_FILE, ENV_CERT_FILE, ENV_KEY_FILE, TlsFiles, endpoint, inherit_client_identity,
    install_client_identity, with_client_identity,
};
pub use error::TlsError;
pub use fingerprints::Fingerprints;
pub use identity::{Party, PartyKind, request_party};
pub use local::LocalPki;
pub use pki::{CertificateRequest, DeploymentCa, IssuedCertificate};
pub use server::ServerTls;
