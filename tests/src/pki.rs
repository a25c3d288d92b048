//! The end-to-end tests' deployment PKI: one CA per test process (in a temporary directory
//! that lives as long as the process), with a certificate per party issued on first use, so
//! that every [`crate::Deployment`] runs mutual TLS on every hop.
//!
//! The test process itself calls the servers too. Its default client identity (what
//! `seer_tls::endpoint` uses for `https://` URLs) is the utility's certificate, installed by
//! [`install_test_client`]; calls made as a meter or an auditor use [`files`] of that party
//! explicitly (a household token is accepted only with its own meter's certificate).

use std::sync::{Mutex, OnceLock};

use anyhow::Context as _;
use seer_tls::{LocalPki, PartyKind, TlsFiles};

/// The key authority's server certificate name.
pub const KEY_AUTHORITY: &str = "key-authority";

struct TestPki {
    // Never dropped: statics live as long as the process, and so does the directory.
    _dir: tempfile::TempDir,
    pki: LocalPki,
}

/// The process's PKI, created on first use.
///
/// # Errors
/// When the CA cannot be created.
pub fn test_pki() -> anyhow::Result<&'static LocalPki> {
    static PKI: OnceLock<TestPki> = OnceLock::new();
    if let Some(pki) = PKI.get() {
        return Ok(&pki.pki);
    }
    let dir = tempfile::tempdir().context("creating the test PKI's directory")?;
    let pki = LocalPki::open_or_create(&dir.path().join("pki"), "seer-tests")
        .context("creating the test CA")?;
    // Another thread may have won the race; its PKI is as good as ours.
    let _ = PKI.set(TestPki { _dir: dir, pki });
    Ok(&PKI.get().context("the test PKI is set")?.pki)
}

/// The certificate files of `kind` `name` (the key authority's server certificate for
/// [`PartyKind::Server`], the utility's for [`PartyKind::Utility`]).
///
/// # Errors
/// When the certificate cannot be issued.
pub fn files(kind: PartyKind, name: &str) -> anyhow::Result<TlsFiles> {
    // Tests run on parallel threads: one issues a certificate while the others wait for it.
    static ISSUING: Mutex<()> = Mutex::new(());
    let _issuing = ISSUING
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let pki = test_pki()?;
    Ok(match kind {
        PartyKind::Server => pki.server(name)?,
        PartyKind::Utility => pki.utility()?,
        _ => pki.client(kind, name)?,
    })
}

/// Installs the utility's certificate as the test process's default client identity.
///
/// # Errors
/// When it cannot be issued or loaded.
pub fn install_test_client() -> anyhow::Result<()> {
    seer_tls::install_client_identity(&files(PartyKind::Utility, "utility")?)
        .context("installing the test process's client identity")
}

pub use seer_tls::Fingerprints;

/// Runs `key-authority fingerprints` with the key authority's environment `env`: the
/// fingerprints the other parties pin.
///
/// # Errors
/// When the command fails or prints something else.
pub fn key_authority_fingerprints(env: &[(String, String)]) -> anyhow::Result<Fingerprints> {
    let output = std::process::Command::new(crate::bin_path("key-authority")?)
        .arg("fingerprints")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .context("running key-authority fingerprints")?;
    anyhow::ensure!(
        output.status.success(),
        "key-authority fingerprints failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(Fingerprints::parse(&String::from_utf8_lossy(
        &output.stdout,
    ))?)
}

/// The key authority's `server.tls` environment.
///
/// # Errors
/// When the certificate cannot be issued.
pub fn authority_tls_env() -> anyhow::Result<Vec<(String, String)>> {
    Ok(files(PartyKind::Server, KEY_AUTHORITY)?.server_env("SEER_KEY_AUTHORITY__"))
}

/// The utility's `server.tls` environment (its server and client certificate).
///
/// # Errors
/// When the certificate cannot be issued.
pub fn utility_tls_env() -> anyhow::Result<Vec<(String, String)>> {
    Ok(files(PartyKind::Utility, "utility")?.server_env("SEER_UTILITY__"))
}

/// A meter's environment: its certificate (naming `meter_id`) and the public key pins.
///
/// # Errors
/// When the certificate cannot be issued.
pub fn meter_env(meter_id: &str, pins: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    let mut env = files(PartyKind::Meter, meter_id)?.client_env();
    env.push(("SEER_METER_PUBLIC_KEY_PINS".to_owned(), pins.join(",")));
    Ok(env)
}

/// An auditor's client environment (`seer audit`).
///
/// # Errors
/// When the certificate cannot be issued.
pub fn auditor_env(name: &str) -> anyhow::Result<Vec<(String, String)>> {
    Ok(files(PartyKind::Auditor, name)?.client_env())
}

/// The certificate of the party `token` speaks for (read from its claims, unverified): a
/// household's meter, the utility, an auditor, an operator for admin tokens. A test sends a
/// token from its own party's connection, as that party would; the servers verify both.
///
/// # Errors
/// When the token's claims cannot be read or the certificate cannot be issued.
pub fn files_for_token(token: &str) -> anyhow::Result<TlsFiles> {
    use base64::Engine as _;
    let claims = token.split('.').nth(1).context("a JWT has three parts")?;
    let claims = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(claims.trim_end_matches('='))
        .context("the JWT claims are not base64url")?;
    let claims: serde_json::Value =
        serde_json::from_slice(&claims).context("the JWT claims are not JSON")?;
    match (claims["role"].as_str(), claims["meter_id"].as_str()) {
        (Some("household"), Some(meter)) => files(PartyKind::Meter, meter),
        (Some("utility"), _) => files(PartyKind::Utility, "utility"),
        (Some("auditor"), _) => files(PartyKind::Auditor, "auditor"),
        (Some("admin"), _) => files(PartyKind::Operator, "operator"),
        (role, _) => anyhow::bail!("a token of role {role:?}"),
    }
}
