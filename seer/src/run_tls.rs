//! Mutual TLS for `seer run`: a fresh deployment CA in the work directory (`pki/`), the key
//! authority's server certificate, the utility's certificate (server and client), a
//! certificate per meter naming its meter id, and the fingerprints the key authority prints
//! (`key-authority fingerprints`), which the utility (JWT key) and the meters (CKKS public
//! key) pin. Nothing for the operator to do: `scripts/run.sh` stays one command.

use std::path::Path;

use anyhow::{Context as _, Result};
use seer_tls::{Fingerprints, LocalPki, PartyKind};

/// The run's PKI.
#[derive(Debug)]
pub(crate) struct RunPki {
    pki: LocalPki,
}

impl RunPki {
    /// Creates the CA in `workdir/pki`.
    pub(crate) fn create(workdir: &Path) -> Result<Self> {
        let pki = LocalPki::open_or_create(&workdir.join("pki"), "seer run")
            .context("creating the run's deployment CA")?;
        Ok(Self { pki })
    }

    /// The key authority's `server.tls` settings.
    pub(crate) fn key_authority_env(&self) -> Result<Vec<(String, String)>> {
        Ok(self
            .pki
            .server("key-authority")
            .context("issuing the key authority's certificate")?
            .server_env("SEER_KEY_AUTHORITY__"))
    }

    /// The utility's `server.tls` settings (also its client identity) and its JWT key pin.
    pub(crate) fn utility_env(&self, fingerprints: &Fingerprints) -> Result<Vec<(String, String)>> {
        let mut env = self
            .pki
            .utility()
            .context("issuing the utility's certificate")?
            .server_env("SEER_UTILITY__");
        env.push((
            "SEER_UTILITY__AUTH__JWT_PUBLIC_KEY_SHA256".into(),
            fingerprints.jwt_public_key_sha256.clone(),
        ));
        Ok(env)
    }

    /// An auditor's client certificate (naming `name`), as the `SEER_TLS_*` variables
    /// `seer audit` reads.
    pub(crate) fn auditor_env(&self, name: &str) -> Result<Vec<(String, String)>> {
        Ok(self
            .pki
            .client(PartyKind::Auditor, name)
            .with_context(|| format!("issuing auditor {name}'s certificate"))?
            .client_env())
    }

    /// A meter's client certificate (naming `meter_id`) and the public key pins.
    pub(crate) fn meter_env(
        &self,
        meter_id: &str,
        fingerprints: &Fingerprints,
    ) -> Result<Vec<(String, String)>> {
        let mut env = self
            .pki
            .client(PartyKind::Meter, meter_id)
            .with_context(|| format!("issuing meter {meter_id}'s certificate"))?
            .client_env();
        env.push((
            "SEER_METER_PUBLIC_KEY_PINS".into(),
            fingerprints.public_key_pins.join(","),
        ));
        Ok(env)
    }
}

/// What `key-authority fingerprints` prints, with at least one CKKS public key pin (the
/// launcher's meters pin every key set they encrypt under).
///
/// # Errors
/// When the output does not parse or names no public key.
pub(crate) fn parse_fingerprints(output: &str) -> Result<Fingerprints> {
    let fingerprints = Fingerprints::parse(output)?;
    anyhow::ensure!(
        !fingerprints.public_key_pins.is_empty(),
        "key-authority fingerprints printed no public key pin"
    );
    Ok(fingerprints)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_parse_and_certificates_name_their_meter() {
        let hex = "0f".repeat(32);
        let f = parse_fingerprints(&format!(
            "jwt-public-key-sha256 {hex}\npublic-key-pin N8192_L2_SEC128={hex}\n"
        ))
        .expect("parses");
        assert_eq!(f.public_key_pins, vec![format!("N8192_L2_SEC128={hex}")]);
        assert!(parse_fingerprints(&format!("jwt-public-key-sha256 {hex}\n")).is_err());

        let dir = tempfile::tempdir().expect("dir");
        let pki = RunPki::create(dir.path()).expect("pki");
        let env = pki.meter_env("uci-2007", &f).expect("env");
        let cert = &env
            .iter()
            .find(|(k, _)| k == seer_tls::ENV_CERT_FILE)
            .expect("cert")
            .1;
        let pem = std::fs::read_to_string(cert).expect("cert written");
        assert!(pem.contains("BEGIN CERTIFICATE"));
        assert!(
            env.iter()
                .any(|(k, v)| k == "SEER_METER_PUBLIC_KEY_PINS" && v.contains(&hex))
        );
    }
}
